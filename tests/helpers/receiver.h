/* helpers/receiver.h - a webhook receiver of the tests' own, on 127.0.0.1.
 *
 * One thread accepts connections one at a time, reads one HTTP/1.1 POST
 * (headers and a Content-Length body), records its Keygate-Signature,
 * Keygate-Event-Id and body, and answers with the status the test set
 * (200 by default), or not at all for hang_ms (a timeout on keygate's
 * side). Bounded: at most 256 requests are kept. Stopped by
 * kt_receiver_stop(). */
#ifndef KT_RECEIVER_H
#define KT_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>

struct kt_receiver;

struct kt_received {
    char signature[128];
    char event_id[64];
    char *body;
    int answered; /* the status sent, 0 = none (hung) */
};

struct kt_receiver *kt_receiver_start(void);
void kt_receiver_stop(struct kt_receiver *r);
/* "http://127.0.0.1:PORT/hook" */
const char *kt_receiver_url(const struct kt_receiver *r);
/* The next n requests are answered status (then 200 again). */
void kt_receiver_fail_next(struct kt_receiver *r, int n, int status);
/* The next n requests get no answer for ms, then the connection closes. */
void kt_receiver_hang_next(struct kt_receiver *r, int n, long ms);
/* Requests received so far. */
size_t kt_receiver_count(struct kt_receiver *r);
/* A copy of request i (body malloc'd: free it). false when i is past the end. */
bool kt_receiver_get(struct kt_receiver *r, size_t i, struct kt_received *out);
/* Waits up to ms until at least n requests arrived; true when they did. */
bool kt_receiver_wait(struct kt_receiver *r, size_t n, long ms);

#endif
