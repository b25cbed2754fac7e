/* helpers/rawup.h - an upstream of the tests' own that misbehaves on demand.
 *
 * A plain TCP server on 127.0.0.1 (a thread per connection, blocking I/O)
 * that reads each request with a strict HTTP/1.1 parser (CRLF only, token
 * method and header names, no space before a colon, no control bytes,
 * Content-Length of digits or chunked framing with hex sizes) and records
 * it exactly as it arrived, then does what the test queued for it: the
 * bytes to answer (any bytes, malformed on purpose), when (after the whole
 * request, or early, right after its head), whether to close after, and
 * bytes to send unasked on the same connection a moment later. With nothing
 * queued it answers 200 with a Content-Length body
 *   "conn=C req=R key=KEYID target=TARGET"
 * (C: the connection's number from 1, R: the request's number on it from 1,
 * KEYID: the X-Keygate-Key-Id it received), so a test can tell which
 * connection carried which request and for whom. Thread-safe.
 */
#ifndef KT_RAWUP_H
#define KT_RAWUP_H

#include <stdbool.h>
#include <stddef.h>

struct kt_rawup;

enum kt_rawup_how {
    KT_RAWUP_ANSWER = 0, /* after the whole request */
    KT_RAWUP_EARLY,      /* after the head, before reading the body (read after) */
    KT_RAWUP_CLOSE,      /* read the whole request, close without a byte */
};

struct kt_rawup_act {
    enum kt_rawup_how how;
    const char *bytes; /* the answer, copied; NULL: the default answer */
    size_t len;        /* 0: strlen(bytes) */
    bool close_after;
    const char *later; /* sent later_ms after the answer, unasked; NULL: nothing */
    long later_ms;
};

struct kt_rawup *kt_rawup_start(void);
/* Closes every connection, stops and frees. NULL ok. */
void kt_rawup_stop(struct kt_rawup *u);
/* "http://127.0.0.1:PORT" */
const char *kt_rawup_url(const struct kt_rawup *u);

/* Queues what to do with the next request that arrives (first in, first out). */
void kt_rawup_push(struct kt_rawup *u, const struct kt_rawup_act *a);

/* Connections accepted so far. */
size_t kt_rawup_connections(struct kt_rawup *u);
/* How many act.later sends are done. */
size_t kt_rawup_later_sent(struct kt_rawup *u);

/* Connections open right now. */
size_t kt_rawup_open(struct kt_rawup *u);

/* A request as the strict parser saw it. */
struct kt_rawup_seen {
    char *head; /* request line and headers as received, through the blank line */
    char *body; /* decoded body (chunk framing removed) */
    size_t body_len;
    bool chunked;
    bool complete; /* the body arrived whole (false: the peer went away mid-body) */
    bool strict_ok;
    char why[128]; /* what the strict parser refused, when !strict_ok */
    size_t conn;   /* its connection's number, from 1 */
};

/* Requests seen (whole or cut off), in the order they ended. */
size_t kt_rawup_requests(struct kt_rawup *u);
/* The i-th, copied into out (kt_rawup_seen_cleanup it); false when none. */
bool kt_rawup_request(struct kt_rawup *u, size_t i, struct kt_rawup_seen *out);
void kt_rawup_seen_cleanup(struct kt_rawup_seen *s);

/* Waits up to ms until n requests were seen; true when they were. */
bool kt_rawup_wait_requests(struct kt_rawup *u, size_t n, long ms);

/* Forgets the requests seen and the queued actions (connections stay). */
void kt_rawup_reset(struct kt_rawup *u);

#endif
