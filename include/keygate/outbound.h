/* keygate/outbound.h - what goes upstream for an admitted request.
 *
 * The target URL (upstream + normalised path + query) and the header list
 * curl sends: the client's headers through the request filter of
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
    char *url;                  /* malloc'd */
    const char *path, *query;   /* the same apart, inside url's allocation (query NULL: none) */
    struct curl_slist *headers; /* what curl sends; the relay takes it */
    bool failed;                /* out of memory on the way */
};

/* Starts an empty request. */
void kg_outbound_init(struct kg_outbound *ob);

/* One client header, in the order received: kept or dropped. */
void kg_outbound_client_header(struct kg_outbound *ob, const struct kg_outbound_in *in,
                               const char *name, const char *value);

/* After the client's headers: the headers keygate adds and the URL.
 * KG_ENOMEM when anything could not be allocated (kg_outbound_cleanup() it). */
enum kg_status kg_outbound_finish(struct kg_outbound *ob, const struct kg_outbound_in *in);

/* Frees what the relay did not take. */
void kg_outbound_cleanup(struct kg_outbound *ob);

#endif
