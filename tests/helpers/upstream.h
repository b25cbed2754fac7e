/* helpers/upstream.h - a stub upstream HTTP/1.1 server for the integration tests.
 *
 * libmicrohttpd with its own threads (one per connection) on 127.0.0.1 and
 * a port the kernel picks. What it answers:
 *
 *   /slow...      after kt_upstream_set_slow_ms() (default 2000 ms), then as below
 *   /hang...      nothing until the stub stops: for 504 tests
 *   /big?n=BYTES  200 with BYTES bytes of kt_http_pattern() (Content-Length set),
 *                 produced block by block
 *   anything else 200 application/json echo of what arrived:
 *                 {"method": "GET", "target": "/raw/path?query",
 *                  "headers": [["Name", "value"], ...],   (in arrival order)
 *                  "body_len": N, "body_hash": "16 hex digits"}  (kt_http_hash)
 *                 with status NNN (200..599) instead of 200 when the path holds
 *                 the segments /status/NNN anywhere (/v1/x/status/404/y) or the
 *                 request carries X-Test-Status: NNN; 204 and 304 with no body.
 *
 * Every request target it receives is recorded (as received, before any
 * decoding) the moment its request line is read, so a test can assert the
 * upstream NEVER saw a request a rule should have stopped. For a "refused"
 * upstream (502), use a port from kt_daemon_free_port() with no stub on it.
 * The kt_upstream_* calls are thread-safe.
 */
#ifndef KT_UPSTREAM_H
#define KT_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

struct kt_upstream;

/* Starts a stub; NULL on failure (reason on stderr). */
struct kt_upstream *kt_upstream_start(void);

/* Wakes every held /slow and /hang request, stops the server and frees it. NULL ok. */
void kt_upstream_stop(struct kt_upstream *up);

int kt_upstream_port(const struct kt_upstream *up);

/* "http://127.0.0.1:PORT" for an upstream directive. */
const char *kt_upstream_url(const struct kt_upstream *up);

void kt_upstream_set_slow_ms(struct kt_upstream *up, long ms);

/* Requests seen since the start or the last reset. */
size_t kt_upstream_count(struct kt_upstream *up);

/* Requests seen whose target starts with prefix. */
size_t kt_upstream_count_prefix(struct kt_upstream *up, const char *prefix);

/* True when any target seen contains needle (case-insensitive). */
bool kt_upstream_saw(struct kt_upstream *up, const char *needle);

/* Requests currently held in /slow, and in /hang (a /hang request stays
 * held after the client gave up on it, until the stub stops). */
size_t kt_upstream_held_slow(struct kt_upstream *up);
size_t kt_upstream_held_hang(struct kt_upstream *up);

/* Whole requests seen (their body complete), in the order they completed,
 * since the start or the last reset: how many, and the i-th (from 0) as
 * received, malloc'd, NULL when there is none:
 *   "METHOD TARGET VERSION\r\n" "Name: value\r\n"... (arrival order) "\r\n" body
 * (the body's first 64 KiB, then "[... N bytes in all]" when longer).
 * Recorded before the stub answers, so once an answer came back through
 * keygate, its request is here. */
size_t kt_upstream_request_count(struct kt_upstream *up);
char *kt_upstream_request(struct kt_upstream *up, size_t i);

/* Every target seen, one per line, malloc'd: for failure messages. */
char *kt_upstream_targets(struct kt_upstream *up);

/* Forgets the targets and requests seen so far. */
void kt_upstream_reset(struct kt_upstream *up);

/* ---- reading an echo answer (as it came back through keygate) ---- */

struct kt_echo {
    void *root; /* json_t, private */
};

/* Parses an echo body; false when it is not one. kt_echo_cleanup() either way. */
bool kt_echo_parse(const char *body, size_t len, struct kt_echo *out);

/* Borrowed from e; NULL when absent. */
const char *kt_echo_method(const struct kt_echo *e);
const char *kt_echo_target(const struct kt_echo *e);

/* First value of request header name (case-insensitive) the upstream
 * received, borrowed; NULL when it did not receive one. */
const char *kt_echo_header(const struct kt_echo *e, const char *name);

/* How many request headers called name the upstream received. */
size_t kt_echo_header_count(const struct kt_echo *e, const char *name);

/* Request body the upstream received: its length, and its kt_http_hash(). */
long long kt_echo_body_len(const struct kt_echo *e);
unsigned long long kt_echo_body_hash(const struct kt_echo *e);

void kt_echo_cleanup(struct kt_echo *e);

#endif
