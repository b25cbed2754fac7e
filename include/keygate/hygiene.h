/* keygate/hygiene.h - request checks libmicrohttpd 0.9.75 does not make.
 *
 * That version accepts Content-Length together with Transfer-Encoding,
 * reads bodies of unknown transfer codings until close and takes the first
 * of several Content-Length headers: each a request-smuggling shape once a
 * proxy sits behind it. keygate refuses them (400, connection closed)
 * before deciding anything. Pure; fed header by header.
 */
#ifndef KEYGATE_HYGIENE_H
#define KEYGATE_HYGIENE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kg_hygiene {
    int n_cl, n_te, n_host;
    bool bad_cl, bad_te, bad_name, bad_value;
    int64_t content_length; /* -1 when absent */
};

void kg_hygiene_init(struct kg_hygiene *h);

/* Feeds one header with its exact lengths (a value holding a NUL byte has
 * vlen > strlen(value)). */
void kg_hygiene_feed(struct kg_hygiene *h, const char *name, size_t nlen, const char *value,
                     size_t vlen);

/* NULL when the request may go on, else why it is refused (a sentence
 * without the final period, for the 400 body). */
const char *kg_hygiene_verdict(const struct kg_hygiene *h);

/* True when the request carries a body (Content-Length > 0 or chunked). */
bool kg_hygiene_has_body(const struct kg_hygiene *h);

#endif
