/* keygate/relay.h - one request/response exchange with the upstream.
 *
 * Streams the client's body to the upstream and the upstream's answer back
 * through two bounded buffers (KG_RELAY_BUF_BYTES each), so any size of
 * body passes in constant memory. When a side has to wait (no room, no
 * data, no headers yet) the client connection is suspended; the relay
 * resumes it as soon as there is progress. All calls on the owning loop's
 * thread. Leaves through libcurl: WHERE A REQUEST LEAVES.
 */
#ifndef KEYGATE_RELAY_H
#define KEYGATE_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include "keygate/loop.h"
#include "keygate/outbound.h"
#include "keygate/status.h"

#define KG_RELAY_BUF_BYTES (256 * 1024)
#define KG_RELAY_MAX_RESP_HEADERS (64 * 1024)

struct kg_exchange;

struct kg_relay_req {
    const char *method;
    /* URL and headers (proxy/outbound.c): the relay takes the header block
     * once it has an exchange (out->lines NULL then); the URL, and the block
     * when it had none, stay the caller's (kg_outbound_cleanup). */
    struct kg_outbound *out;
    bool has_body;
    int64_t body_size; /* -1: unknown (chunked) */
    struct MHD_Connection *conn;
    const struct kg_config *cfg; /* the request's config (timeouts); borrowed */
};

enum kg_relay_phase {
    KG_RELAY_WAITING = 0, /* no response headers yet */
    KG_RELAY_HEADERS,     /* status and headers known; body streaming */
    KG_RELAY_FAILED,      /* no usable answer: see kg_relay_fail_status() */
};

/* Starts an exchange on loop. On KG_OK *out is owned by the caller (the
 * request), freed with kg_relay_free(). */
enum kg_status kg_relay_start(struct kg_loop *loop, struct kg_relay_req *rq,
                              struct kg_exchange **out, struct kg_err *err);

/* Client body: offers len bytes, returns how many were taken (0 when the
 * buffer is full: suspend and wait). */
size_t kg_relay_push_body(struct kg_exchange *x, const char *data, size_t len);
/* The client body is complete. */
void kg_relay_body_done(struct kg_exchange *x);

enum kg_relay_phase kg_relay_phase(const struct kg_exchange *x);
/* 502 (refused/unreachable/bad answer) or 504 (timed out) once FAILED. */
unsigned kg_relay_fail_status(const struct kg_exchange *x);
unsigned kg_relay_status(const struct kg_exchange *x);
/* Content-Length of the upstream answer, or -1 when not known. */
int64_t kg_relay_content_length(const struct kg_exchange *x);
/* Upstream response headers, already without hop-by-hop ones: calls cb for each. */
void kg_relay_each_header(const struct kg_exchange *x,
                          void (*cb)(void *ctx, const char *name, const char *value), void *ctx);

/* Response body: copies up to max bytes into buf. Returns the count, 0 when
 * nothing is available yet (the caller suspends through kg_relay_suspend),
 * -1 at the end of the body, -2 when the upstream failed mid-body. */
ssize_t kg_relay_pull_body(struct kg_exchange *x, char *buf, size_t max);

/* When the whole answer has already arrived: moves the body into *out
 * (malloc'd, caller frees; *len bytes) and returns true. Lets a small
 * answer go out in one buffer instead of through the streaming reader. */
bool kg_relay_take_body(struct kg_exchange *x, char **out, size_t *len);

/* Suspends the client connection until the relay makes progress. Only from
 * the MHD access handler or content reader of this request. */
void kg_relay_suspend(struct kg_exchange *x);

/* cb(ctx) is called when the upstream exchange ends (an answer in full,
 * a failure, a timeout) while the client's body has not all arrived:
 * libmicrohttpd cannot queue an answer then, so the caller answers out of
 * band. Not called once kg_relay_body_done() was. */
void kg_relay_on_mid_body_end(struct kg_exchange *x, void (*cb)(void *ctx), void *ctx);

/* The client connection the exchange belongs to. */
struct MHD_Connection *kg_relay_connection(const struct kg_exchange *x);

/* Aborts a running transfer, resumes a suspended connection and frees. NULL ok. */
void kg_relay_free(struct kg_exchange *x);

#endif
