/* keygate/upresp.h - reads one upstream HTTP/1.1 response off a byte stream.
 *
 * The native upstream client's parser (proxy/upclient.c feeds it what the
 * socket gives). keygate checks the raw head itself first, because llhttp
 * 8.1 still accepts obs-fold and a "\r\n\rX" end of head: every CR is
 * followed by LF, no bare LF, no obs-fold, no control byte or NUL, no space
 * before a colon, a status line "HTTP/1.x NNN reason". Then the framing of
 * RFC 9112 section 6.3, strictly: one Content-Length of digits only, or one
 * Transfer-Encoding of exactly "chunked", never both; 101 is refused; 1xx
 * interim answers are skipped. llhttp then frames the body (chunk sizes and
 * extensions included). Anything ambiguous makes the state KG_UPRESP_BAD,
 * for which the gateway answers 502 and closes the connection. Pure: no
 * I/O, no clock; one thread at a time per parser.
 */
#ifndef KEYGATE_UPRESP_H
#define KEYGATE_UPRESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keygate/status.h"

struct kg_upresp;

enum kg_upresp_state {
    KG_UPRESP_HEAD = 0, /* reading the status line and headers */
    KG_UPRESP_BODY,     /* the final head is in: body bytes go to on_body */
    KG_UPRESP_DONE,     /* the response is complete */
    KG_UPRESP_BAD,      /* malformed or ambiguous: kg_upresp_error() says why */
};

/* What a parser tells its user, with the ctx given to kg_upresp_feed().
 * Either may return false to stop with KG_UPRESP_BAD (out of room). */
struct kg_upresp_cb {
    /* One header line of the final response, "Name: value\r\n" as received. */
    bool (*header)(void *ctx, const char *line, size_t len);
    /* Decoded body bytes (chunk framing removed). */
    bool (*body)(void *ctx, const char *p, size_t len);
};

/* A parser whose head (status line and headers, each response) may not
 * exceed max_head bytes. NULL when out of memory. */
struct kg_upresp *kg_upresp_new(size_t max_head);
void kg_upresp_free(struct kg_upresp *r);

/* Ready for the response to a new request; no_body: it answers HEAD, so
 * whatever its headers say, no body follows. Keeps the allocations. */
void kg_upresp_reset(struct kg_upresp *r, bool no_body);

/* Feeds len bytes. Returns how many were used: fewer than len only once
 * the state is DONE (what is left belongs to no request of ours) or BAD. */
size_t kg_upresp_feed(struct kg_upresp *r, const char *p, size_t len, const struct kg_upresp_cb *cb,
                      void *ctx);

/* The peer closed: a body delimited by the close ends (DONE), anything
 * else unfinished is BAD. */
void kg_upresp_eof(struct kg_upresp *r, const struct kg_upresp_cb *cb, void *ctx);

enum kg_upresp_state kg_upresp_state(const struct kg_upresp *r);
/* Once the head is in (state BODY or DONE): */
unsigned kg_upresp_status(const struct kg_upresp *r);
/* Its Content-Length, -1 when it has none. */
int64_t kg_upresp_content_length(const struct kg_upresp *r);
/* Once DONE: the connection may carry another request (HTTP/1.1 and no
 * "Connection: close", body not delimited by the close). */
bool kg_upresp_keep_alive(const struct kg_upresp *r);
/* Why the state is BAD, for the debug log; "" otherwise. */
const char *kg_upresp_error(const struct kg_upresp *r);

#endif
