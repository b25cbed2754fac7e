/* proxy/proxy_int.h - what proxy/relay.c and proxy/upclient.c share and
 * nobody else sees: the exchange's body (its two rings, the response head,
 * the suspend/resume handshake). relay.c drives an exchange through
 * libcurl, upclient.c through keygate's own HTTP/1.1 client; both fill the
 * same fields, so the kg_relay_* calls the front end makes are the same
 * whichever client carries the exchange. One loop thread.
 */
#ifndef KEYGATE_PROXY_INT_H
#define KEYGATE_PROXY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keygate/relay.h"

/* A ring that starts small and doubles up to max: most API answers fit in
 * the first allocation, a large body grows it to the ceiling and no further. */
struct kg_ring {
    char *buf;
    size_t cap, head, len, max;
};

struct kg_upconn;

struct kg_exchange {
    struct kg_loop_transfer t; /* what the loop knows of it; CURLOPT_PRIVATE */
    struct kg_loop *loop;
    CURL *easy;
    struct kg_upurl url; /* the easy handle's own CURLU (keygate/upurl.h) */
    bool in_multi;
    char *req_lines; /* the outbound header block ("Name: value\r\n" each), taken from it */
    size_t req_lines_len;
    struct curl_slist *req_headers; /* the same as curl's list, made for the curl client only */
    struct MHD_Connection *conn;

    struct kg_ring up;
    bool has_body, up_done, read_paused;

    struct kg_ring down;
    bool write_paused;

    enum kg_relay_phase phase;
    unsigned status, fail_status;
    int64_t content_length;
    char *hdrs; /* raw response header lines of the final response, "\r\n"-separated */
    size_t hdrs_len, hdrs_cap;
    bool transfer_done;
    CURLcode result;
    int64_t started_us;              /* kg_relay_start, for keygate_upstream_duration_seconds */
    void (*mid_body_end)(void *ctx); /* the exchange ended before the client's body did */
    void *mid_body_ctx;
    bool mid_body_fired;
    int64_t down_total; /* response body bytes received */

    /* The native client (proxy/upclient.c) when it carries the exchange. */
    bool native;
    struct kg_upx *nx;
};

bool kg_ring_init(struct kg_ring *r, size_t max);
/* Room for n more bytes, growing (by doubling, up to max) if needed. */
size_t kg_ring_room(struct kg_ring *r, size_t n);
size_t kg_ring_put(struct kg_ring *r, const char *p, size_t n);
size_t kg_ring_get(struct kg_ring *r, char *p, size_t n);
/* The readable bytes as up to two spans (the second empty unless wrapped). */
void kg_ring_spans(const struct kg_ring *r, const char **a, size_t *alen, const char **b,
                   size_t *blen);
/* Drops n readable bytes. */
void kg_ring_consume(struct kg_ring *r, size_t n);

/* Resumes the client connection if it waits on the exchange. */
void kg_relay_wake(struct kg_exchange *x);
/* Appends one "Name: value\r\n" response header line (bounded by
 * KG_RELAY_MAX_RESP_HEADERS); false when it does not fit. */
bool kg_relay_add_header_line(struct kg_exchange *x, const char *p, size_t n);
/* The exchange is over: result CURLE_OK or why not; an exchange with no
 * answer yet becomes KG_RELAY_FAILED with fail_status. */
void kg_relay_finish(struct kg_exchange *x, CURLcode result, unsigned fail_status);
/* The answer arrived in full before the client's body did. */
void kg_relay_fire_mid_body_end(struct kg_exchange *x);

#endif
