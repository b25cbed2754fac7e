/* keygate/gate.h - ADMISSION: is this request let through, and on what terms.
 *
 * One call runs every check a request to the public listener meets, in a
 * fixed order: the brute-force throttle (before any digest), the decision
 * (auth/decide.c), the key's IP allowlist, the fresh-key store check (a well-formed key the cache
 * does not hold: the caller asks the key watch and admits again), credits
 * and quotas, the rate limits, and the usage counters. It returns the
 * verdict, what the rate-limit headers must say and the charge to make when
 * the upstream answers 2xx. Pure apart from the shared state it is handed
 * (key cache, limiter, throttle tables) and the clock it is given: no
 * libmicrohttpd, no store, no allocation; unit-tested without a server.
 * A shared limiter that has no answer at hand makes the gate say "wait"
 * (the caller suspends the request and admits it again with the answer);
 * one that is down is answered as the config's limits_on_error says: 503
 * (closed) or let through without a limit (open), for keys with a limit.
 */
#ifndef KEYGATE_GATE_H
#define KEYGATE_GATE_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/config.h"
#include "keygate/decide.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/keyreserve.h"
#include "keygate/limiter.h"
#include "keygate/metrics.h"

struct kg_throttle;
struct kg_keywatch;

/* What a request is let through or refused with. */
enum kg_gate_action {
    KG_GATE_PROXY,      /* admitted: relay it; charge charge_to cost units on a 2xx */
    KG_GATE_ALLOW,      /* admitted in mode forward_auth: answer 200 now (already charged) */
    KG_GATE_HEALTH,     /* GET /health with a valid key: 200 {"status":"ok"} */
    KG_GATE_REFUSE,     /* refused: answer d.verdict (Retry-After retry_after_s when > 0) */
    KG_GATE_RECHECK,    /* an unknown well-formed key: ask the key watch about d.digest
                           with the request suspended, then admit it again */
    KG_GATE_LIMIT_WAIT, /* the shared limiter must be asked (limits redis://): in->limit_wait
                           holds the request; suspend it, kg_limiter_wait(), then admit it
                           again with limit_waited */
};

/* The shared state admission reads and updates; borrowed. auth_failures,
 * auth_cooldown and keywatch may be NULL (throttle off, no watch). */
struct kg_gate_env {
    const struct kg_secret *secret;
    struct kg_keycache *keys;
    struct kg_limiter *limiter; /* the rate limits' buckets */
    struct kg_throttle *auth_failures;
    struct kg_throttle *auth_cooldown;
    struct kg_keywatch *keywatch;
};

struct kg_gate_in {
    const struct kg_gate_env *env;
    const struct kg_config *cfg; /* the request's */
    const struct kg_cred *cred;  /* parsed by http/credential.c */
    const char *method;          /* the method decided (forward_auth: the original one) */
    const char *path;            /* normalised */
    const char *client_ip;       /* what the throttle counts against */
    bool health;    /* GET or HEAD /health addressed to keygate: counts and spends nothing */
    bool rechecked; /* the key watch was asked already for this request */
    /* The request's record for the shared limiter, or NULL (it is then
     * never waited for: a limiter that must be asked counts as down). With
     * limit_waited, it holds this request's answer, used instead of asking. */
    struct kg_limit_wait *limit_wait;
    bool limit_waited;
    int64_t now;    /* wall clock, seconds (expiry, quota periods) */
    int64_t now_ms; /* monotonic ms (throttle, key watch) */
    int64_t now_us; /* monotonic us (rate limits) */
};

struct kg_admission {
    enum kg_gate_action action;
    /* The decision; verdict KG_DENY_THROTTLED, _QUOTA or _RATE when one of
     * those steps refused. d.key borrows from snap. */
    struct kg_decision d;
    enum kg_outcome outcome; /* what the answer counts as (PROXY: once relayed) */
    int retry_after_s;       /* > 0: the Retry-After of a refusal */
    /* Rate-limit headers: when rated, every answer carries the state in lv
     * under the key policy key_policy ("key" or "default") and tier. */
    bool rated;
    struct kg_limit_verdict lv;
    const char *key_policy;
    const char *tier;
    /* KG_GATE_PROXY: credits to charge when the upstream answers 2xx (the
     * stat record outlives the snapshot). NULL otherwise. */
    struct kg_keystat *charge_to;
    int64_t cost;
    /* credits_mode strict: the credits claimed for this request, spent
     * with its charge or given back (kg_keyreserve_give_back) when it is
     * not charged. Only KG_GATE_PROXY ever returns one held. */
    struct kg_credit_claim claim;
    /* This request's failed authentication started its IP's cool-down
     * (the caller reports throttle.tripped). A canary use is d.canary. */
    bool tripped;
    /* The snapshot d.key lives in, or NULL: kg_gate_release() it. */
    const struct kg_keysnap *snap;
};

/* Admits or refuses one request; *out is always filled. Call
 * kg_gate_release(out) once d.key is no longer used. */
void kg_gate_admit(const struct kg_gate_in *in, struct kg_admission *out);

/* Releases the snapshot an admission holds. Idempotent. */
void kg_gate_release(struct kg_admission *adm);

#endif
