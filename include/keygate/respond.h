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
#include "keygate/limiter.h"

#define KG_ANSWER_BODY_MAX 512

struct kg_answer {
    unsigned status;
    char body[KG_ANSWER_BODY_MAX]; /* JSON, NUL-terminated */
    size_t body_len;
    const char *www_authenticate; /* static string or NULL */
    int retry_after_s;            /* > 0: send Retry-After */
    bool close;                   /* close the connection after answering */
    const char *allow;            /* 405: the Allow header (static string) or NULL */
};

/* The answer for a denial (verdict != KG_ALLOW). */
void kg_respond_verdict(const struct kg_config *cfg, const struct kg_decision *d,
                        struct kg_answer *out);

/* The answer for a gateway-side error: 400, 404, 413, 431, 500, 502, 503,
 * 504. message is a sentence without the final period ("Upstream timed
 * out"); detail style adds the period. */
void kg_respond_error(const struct kg_config *cfg, unsigned status, const char *message,
                      struct kg_answer *out);

#define KG_RL_HEADERS_MAX 5
#define KG_RL_VALUE_MAX 192

/* Rate-limit headers for one response; names are static strings. */
struct kg_rl_fields {
    size_t n;
    const char *name[KG_RL_HEADERS_MAX];
    char value[KG_RL_HEADERS_MAX][KG_RL_VALUE_MAX];
};

/* The headers telling a client where it stands, per
 * draft-ietf-httpapi-ratelimit-headers (-08 onwards, structured fields):
 *   RateLimit-Policy: "key";q=5;w=1, "tier-free";q=60;w=60
 *   RateLimit: "key";r=4;t=1, "tier-free";r=9;t=6
 * one list member per limit that applied (q requests per w seconds; r left
 * now, t seconds until the bucket is full again, rounded up). key_policy
 * names the key's limit ("key" for its own rate, "default" for
 * rate_limit_default); tier the owner's tier, sent as "tier-NAME". With
 * ratelimit_headers legacy, also X-RateLimit-Limit, -Remaining and -Reset
 * (seconds) of the binding limit. out->n is 0 when no limit applied. */
void kg_respond_ratelimit_headers(const struct kg_config *cfg, const struct kg_limit_verdict *v,
                                  const char *key_policy, const char *tier,
                                  struct kg_rl_fields *out);

/* The 429 "Rate limit exceeded" for a refused verdict, with Retry-After the
 * wait until the request would pass, in whole seconds rounded up (>= 1). */
void kg_respond_rate_limited(const struct kg_config *cfg, const struct kg_limit_verdict *v,
                             struct kg_answer *out);

/* {"status":"ok"} for GET /health. */
void kg_respond_health(struct kg_answer *out);

#endif
