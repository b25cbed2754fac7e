/* keygate/outbound.h - what goes upstream for an admitted request.
 *
 * The target URL (upstream + normalised path + query) and the header lines
 * that go upstream, written once as the request head's block ("Name:
 * value\r\n" each, what the native client sends as is; curl gets them as a
 * list, kg_outbound_curl_list): the client's headers through the request filter of
 * keygate/headers.h (hop-by-hop and Connection-named, credentials, forged
 * X-Keygate-*, X-Real-IP from an untrusted peer, "_" names), then the
 * forwarding headers (X-Forwarded-For/-Proto/-Host), X-Request-Id and the
 * identity headers (X-Keygate-Key-Id/-Tenant/-User-Id/-Scopes). Built from
 * facts the front end gathered and the admission's key, without
 * libmicrohttpd: one value that proxy/relay.c consumes. Any thread.
 */
#ifndef KEYGATE_OUTBOUND_H
#define KEYGATE_OUTBOUND_H

#include <stdbool.h>

#include <curl/curl.h>
#include "keygate/config.h"
#include "keygate/keycache.h"
#include "keygate/status.h"

/* What the upstream request is made from; everything borrowed. */
struct kg_outbound_in {
    const struct kg_config *cfg;
    const char *path;  /* normalised */
    const char *query; /* after '?', or NULL */
    const char *request_id;
    const struct kg_keyent *key;      /* the admitted key: who is asking */
    const char *conn_tokens;          /* the values of every Connection header, joined */
    const char *xff;                  /* the X-Forwarded-For hops received, joined ("" none) */
    const char *peer;                 /* the socket peer's address */
    bool trusted_peer;                /* the peer is in trusted_proxies */
    bool tls;                         /* the client connected over TLS */
    const char *host;                 /* Host, or NULL */
    const char *fwd_proto, *fwd_host; /* X-Forwarded-Proto/-Host received, or NULL */
    bool has_accept;                  /* the client sent Accept */
};

struct kg_outbound {
    char *url;                /* malloc'd */
    const char *path, *query; /* the same apart, inside url's allocation (query NULL: none) */
    char *lines;              /* the header block, "Name: value\r\n" each; the relay takes it */
    size_t lines_len, lines_cap;
    bool no_accept;  /* the client sent no Accept: curl must not add its own */
    bool unsendable; /* a name that is not a token, or a value with CR or LF */
    bool failed;     /* out of memory on the way */
};

/* Starts an empty request. */
void kg_outbound_init(struct kg_outbound *ob);

/* One client header, in the order received: kept or dropped. */
void kg_outbound_client_header(struct kg_outbound *ob, const struct kg_outbound_in *in,
                               const char *name, const char *value);

/* After the client's headers: the headers keygate adds and the URL.
 * KG_ENOMEM when anything could not be allocated (kg_outbound_cleanup() it). */
enum kg_status kg_outbound_finish(struct kg_outbound *ob, const struct kg_outbound_in *in);

/* The header block as libcurl's list: "Name: value", "Name;" for an empty
 * value, then "Accept:" (when no_accept) and "Expect:", which stop curl
 * adding headers the client did not send. NULL when out of memory (or when
 * lines is empty and nothing is to be stopped, which never happens). */
struct curl_slist *kg_outbound_curl_list(const char *lines, size_t len, bool no_accept);

/* Frees what the relay did not take. */
void kg_outbound_cleanup(struct kg_outbound *ob);

#endif
