/* keygate/hygiene.h - request checks libmicrohttpd 0.9.75 does not make.
 *
 * That version accepts Content-Length together with Transfer-Encoding,
 * reads bodies of unknown transfer codings until close ("chunked " with a
 * trailing blank included), takes the first of several Content-Length
 * headers, reads chunked bodies of HTTP/1.0 requests and joins obs-fold
 * lines into header names: each a request-smuggling shape once a proxy
 * sits behind it. keygate refuses them (400, connection closed) before
 * deciding anything. Pure; fed header by header. Used by both listeners.
 */
#ifndef KEYGATE_HYGIENE_H
#define KEYGATE_HYGIENE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kg_hygiene {
    int n_cl, n_te, n_host;
    bool bad_cl, bad_te, bad_name, bad_value, bad_host, folded;
    bool http10;            /* the request line said HTTP/1.0 */
    bool needs_host;        /* HTTP/1.1 (or a later 1.x): Host is required */
    int64_t content_length; /* -1 when absent */
};

void kg_hygiene_init(struct kg_hygiene *h);

/* The request line's version as libmicrohttpd reports it ("HTTP/1.1"). Not
 * calling it leaves the version-dependent checks out. */
void kg_hygiene_version(struct kg_hygiene *h, const char *version);

/* Feeds one header with its exact lengths (a value holding a NUL byte has
 * vlen > strlen(value)). */
void kg_hygiene_feed(struct kg_hygiene *h, const char *name, size_t nlen, const char *value,
                     size_t vlen);

/* kg_hygiene_feed() for a header exactly as libmicrohttpd 0.9.75 stores it,
 * name and value being the library's own pointers into its read buffer.
 * Also looks at the bytes between them: for a line read whole, the value
 * follows the name, its colon (made a NUL) and blanks in the same buffer.
 * 0.9.75 glues an obs-fold continuation line onto the NAME and moves the
 * name elsewhere, so any other layout is a folded line (h->folded). */
void kg_hygiene_feed_mhd(struct kg_hygiene *h, const char *name, size_t nlen, const char *value,
                         size_t vlen);

/* True for a Host value RFC 9110 7.2 allows: uri-host [":" port]. */
bool kg_hygiene_host_ok(const char *v, size_t len);

/* NULL when the request may go on, else why it is refused (a sentence
 * without the final period, for the 400 body). */
const char *kg_hygiene_verdict(const struct kg_hygiene *h);

/* True when the request carries a body (Content-Length > 0 or chunked). */
bool kg_hygiene_has_body(const struct kg_hygiene *h);

#endif
