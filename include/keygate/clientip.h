/* keygate/clientip.h - which address a request comes from.
 *
 * The client IP is the socket peer, unless the peer is one of the
 * trusted_proxies: then it is the right-most address of X-Forwarded-For that
 * is not itself a trusted proxy (each trusted hop appended the address it
 * received the request from, so everything left of the first untrusted
 * address may have been written by the client and is ignored). A peer that
 * is not trusted cannot move its identity with X-Forwarded-For. Used by the
 * brute-force throttle and the signup limit, so both see the same client.
 *
 * Pure functions on caller-owned memory; any thread.
 */
#ifndef KEYGATE_CLIENTIP_H
#define KEYGATE_CLIENTIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* An address, IPv4 (4 bytes) or IPv6 (16). An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is stored as the IPv4 address it maps. */
struct kg_ipaddr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t b[16];
};

/* An address block: `prefix` leading bits of addr (0..32 or 0..128). */
struct kg_cidr {
    struct kg_ipaddr addr;
    int prefix;
};

#define KG_CLIENTIP_MAX 46 /* INET6_ADDRSTRLEN: the longest text form, with its NUL */

/* Parses a numeric IPv4 or IPv6 address (no port, no brackets). Returns
 * false, writing nothing, when s is not one. */
bool kg_clientip_parse(const char *s, struct kg_ipaddr *out);

/* Parses "ADDR/PREFIX" or a bare ADDR (a block of one). Bits past the prefix
 * must be zero ("10.0.0.1/8" is refused: it is probably a typo). Returns
 * false, writing nothing, when s is not one. */
bool kg_clientip_cidr_parse(const char *s, struct kg_cidr *out);

/* Whether a lies in c. Families must match (after unmapping IPv4-mapped). */
bool kg_clientip_cidr_match(const struct kg_cidr *c, const struct kg_ipaddr *a);

/* Whether a lies in any of the n blocks of list. */
bool kg_clientip_trusted(const struct kg_cidr *list, size_t n, const struct kg_ipaddr *a);

/* Reads a socket address (AF_INET or AF_INET6); false for any other family
 * or NULL. */
bool kg_clientip_from_sockaddr(const struct sockaddr *sa, struct kg_ipaddr *out);

/* Appends one X-Forwarded-For header value to the list in dst (cap bytes,
 * NUL-terminated, "" to start), joined by ", ". When the list would not
 * fit, the LEFT-most entries are dropped: the right-most hops are the ones
 * trusted proxies added, so a client that pads its own header cannot push
 * them out and choose its address. */
void kg_clientip_xff_append(char *dst, size_t cap, const char *v);

/* The client of a request from peer with the X-Forwarded-For value xff (all
 * such headers joined by ", "; NULL or "" for none), as text into out
 * (outlen >= KG_CLIENTIP_MAX). The walk goes right to left while the
 * address at hand is trusted; an entry that is not an address stops it at
 * the last trusted hop. Brackets and a port on an entry ("[::1]:80",
 * "192.0.2.1:80") are ignored. Writes "" when peer is NULL. */
void kg_clientip_resolve(const struct kg_cidr *trusted, size_t ntrusted,
                         const struct kg_ipaddr *peer, const char *xff, char *out, size_t outlen);

/* Writes the text form of a into out (outlen >= KG_CLIENTIP_MAX). */
void kg_clientip_format(const struct kg_ipaddr *a, char *out, size_t outlen);

#endif
