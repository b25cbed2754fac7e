/* keygate/respond.h - every answer keygate writes itself, as data.
 *
 * Status, JSON body and the extra headers for verdicts and gateway errors,
 * in the active error style: `detail` ({"detail": "Invalid API key."}, the
 * Avala pages, byte for byte) or `error` ({"error": {"type": …, "message":
 * …}}, the Aivene page). Independent of libmicrohttpd so it is unit-tested
 * directly; http/front.c turns a kg_answer into a response. Any thread.
 */
#ifndef KEYGATE_RESPOND_H
#define KEYGATE_RESPOND_H

#include <stddef.h>
#include "keygate/config.h"
#include "keygate/decide.h"

#define KG_ANSWER_BODY_MAX 512

struct kg_answer {
    unsigned status;
    char body[KG_ANSWER_BODY_MAX]; /* JSON, NUL-terminated */
    size_t body_len;
    const char *www_authenticate;  /* static string or NULL */
    int retry_after_s;             /* > 0: send Retry-After */
    bool close;                    /* close the connection after answering */
};

/* The answer for a denial (verdict != KG_ALLOW). */
void kg_respond_verdict(const struct kg_config *cfg, const struct kg_decision *d,
                        struct kg_answer *out);

/* The answer for a gateway-side error: 400, 404, 413, 431, 500, 502, 503,
 * 504. message is a sentence without the final period ("Upstream timed
 * out"); detail style adds the period. */
void kg_respond_error(const struct kg_config *cfg, unsigned status, const char *message,
                      struct kg_answer *out);

/* {"status":"ok"} for GET /health. */
void kg_respond_health(struct kg_answer *out);

#endif
