/* keygate/limiter.h - where rate-limit state lives: per-key and per-user buckets.
 *
 * A limiter stores one GCRA theoretical arrival time (keygate/gcra.h) per
 * bucket. A bucket is named by its scope and an id: a key's own bucket by
 * the key id, a tier bucket by the owner's user id, so every key of a user
 * draws from one tier bucket and a key-cache reload (new snapshot, same
 * ids) keeps every bucket as it was.
 *
 * The storage is behind a function table so a shared backend (Redis, one
 * bucket per name, the GCRA step as a script) can replace the in-process
 * one when several gateways serve one key set; kg_limiter_check() composes
 * the key and tier limits the same way over any backend.
 *
 * The in-process backend (kg_limiter_new_local) is a fixed-size
 * set-associative table under striped mutexes: memory is bounded at
 * creation. A bucket that has fully refilled is the same as no bucket, so
 * it is the first to give up its slot; when every slot of a set is busy the
 * one closest to full is forgotten (that client gets at most a fresh burst
 * early, only when more buckets are busy at once than the table holds).
 * Names are hashed with a random key (SipHash), so nobody can aim keys at
 * one set.
 *
 * A shared backend (limit/redislimit.c) decides both limits of a request
 * at once (its `check`) and may have no answer at hand: kg_limiter_check()
 * then says KG_LIMIT_WAIT, the caller suspends the request and hands it to
 * kg_limiter_wait(), and the backend calls it back with the answer from
 * another thread; or KG_LIMIT_DOWN when the backend cannot answer at all
 * (limits_on_error decides). The in-process backend always answers at once.
 *
 * Threads: any thread may call anything but kg_limiter_free().
 */
#ifndef KEYGATE_LIMITER_H
#define KEYGATE_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/gcra.h"
#include "keygate/status.h"

enum kg_limit_scope { KG_LIMIT_KEY = 0, KG_LIMIT_USER };

/* What kg_limiter_check() could do with a request. */
enum kg_limit_answer {
    KG_LIMIT_DONE = 0, /* the verdict is there */
    KG_LIMIT_WAIT,     /* a shared backend must be asked first: kg_limiter_wait() */
    KG_LIMIT_DOWN,     /* the shared backend cannot answer now: limits_on_error decides */
};

struct kg_limit_req;
struct kg_limit_verdict;
struct kg_limit_wait;

/* A backend. Each call is atomic for its bucket: two threads taking from
 * one bucket at once both see the other's request. */
struct kg_limiter_ops {
    /* take: one request from bucket (scope, id) under g at now_us (count
     * true), or only its state (count false). Fills *res. */
    void (*take)(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
                 int64_t now_us, bool count, struct kg_gcra_result *res);
    /* Gives back one request taken earlier from the bucket. */
    void (*refund)(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
                   int64_t now_us);
    void (*free)(void *impl);
    /* Optional (NULL for per-bucket backends): both limits of one request
     * at once, as kg_limiter_check(); out is filled only for KG_LIMIT_DONE,
     * binding and retry_after_us excepted (kg_limiter_finish() does them). */
    enum kg_limit_answer (*check)(void *impl, const struct kg_limit_req *req, int64_t now_us,
                                  bool count, struct kg_limit_verdict *out);
    /* Required with check: takes w (filled by kg_limiter_wait()) and calls
     * w->done exactly once, possibly before returning. */
    void (*wait)(void *impl, struct kg_limit_wait *w, int64_t now_us);
    /* Optional: answers every waiting request (KG_LIMIT_DOWN) and takes
     * none from then on. */
    void (*stop)(void *impl);
};

struct kg_limiter;

/* A limiter over a backend; it owns impl from now on (ops->free on
 * kg_limiter_free, or at once if this fails). */
enum kg_status kg_limiter_new(const struct kg_limiter_ops *ops, void *impl, struct kg_limiter **out,
                              struct kg_err *err);

/* The in-process backend with room for about `buckets` busy buckets
 * (rounded up to whole sets; 16 bytes each). KG_EINVAL unless
 * 1 <= buckets <= 2^24. */
enum kg_status kg_limiter_new_local(size_t buckets, struct kg_limiter **out, struct kg_err *err);

/* NULL-safe. No other thread may be using lim. */
void kg_limiter_free(struct kg_limiter *lim);

/* What one request is limited by. A NULL rate means no such limit. */
struct kg_limit_req {
    const char *key_id;
    const struct kg_gcra *key_rate;
    const char *user_id;
    const struct kg_gcra *tier_rate;
};

/* The answer for one request. */
struct kg_limit_verdict {
    bool allowed;
    bool has_key, has_tier;             /* which limits applied */
    struct kg_gcra_result key, tier;    /* their state after this request */
    struct kg_gcra key_rate, tier_rate; /* the limits themselves, when has_key / has_tier */
    /* The limit that decides what a client is told: the one that refused,
     * else the one with fewer requests left (the stricter). */
    enum kg_limit_scope binding;
    int64_t retry_after_us; /* refused: until the request would pass both */
};

/* Takes one request from the key's bucket and the owner's tier bucket
 * (count true) or only reads them (count false, for answers that must show
 * the headers without spending, such as a 403). Both limits must allow it;
 * a request one of them refuses costs neither. With no limit at all,
 * out->allowed is true and has_key/has_tier false. KG_LIMIT_DONE: *out is
 * the answer. KG_LIMIT_WAIT (count true, shared backend only): nothing was
 * taken; kg_limiter_wait() gets the answer. KG_LIMIT_DOWN: nothing was
 * taken and the backend cannot answer; *out says allowed with no limit. A
 * request without any limit is always KG_LIMIT_DONE. */
enum kg_limit_answer kg_limiter_check(struct kg_limiter *lim, const struct kg_limit_req *req,
                                      int64_t now_us, bool count, struct kg_limit_verdict *out);

/* Called once with the answer, on the backend's thread (or the caller's,
 * before kg_limiter_wait() returns). */
typedef void (*kg_limit_done_fn)(void *arg);

#define KG_LIMIT_ID_MAX 40 /* KG_ID_MAX: key and user ids */

/* One request waiting for a shared backend; owned by the caller (one per
 * request) and left alone between kg_limiter_wait() and done. */
struct kg_limit_wait {
    kg_limit_done_fn done;
    void *arg;
    /* The answer, from done on: KG_LIMIT_DONE with the verdict (the token
     * is taken: the verdict is this request's), or KG_LIMIT_DOWN. */
    enum kg_limit_answer answer;
    struct kg_limit_verdict verdict;
    /* The backend's: the request (copied, so no snapshot is held), its
     * deadline and its place in a queue. */
    char key_id[KG_LIMIT_ID_MAX];
    char user_id[KG_LIMIT_ID_MAX];
    bool has_key, has_tier;
    struct kg_gcra key_rate, tier_rate;
    int64_t deadline_us;
    struct kg_limit_wait *next;
};

/* After KG_LIMIT_WAIT: copies req into w (ids and rates), so the request
 * can be handed to kg_limiter_wait() once the snapshot it came from is
 * released. */
void kg_limiter_wait_init(struct kg_limit_wait *w, const struct kg_limit_req *req);

/* Asks the backend for the answer to the request w holds. done(arg) is
 * called exactly once, from another thread or before this returns: so the
 * caller suspends its request first. Never blocks; any thread. */
void kg_limiter_wait(struct kg_limiter *lim, struct kg_limit_wait *w, int64_t now_us,
                     kg_limit_done_fn done, void *arg);

/* The request w describes, pointing into w (ids and rates). */
void kg_limiter_wait_req(const struct kg_limit_wait *w, struct kg_limit_req *out);

/* Answers every waiting request (KG_LIMIT_DOWN) and waits for nothing
 * more: call it while the loops still run, like kg_keywatch_stop().
 * NULL-safe; idempotent. */
void kg_limiter_stop(struct kg_limiter *lim);

/* For backends: sets out->binding and out->retry_after_us from the key
 * and tier results and out->allowed. */
void kg_limiter_finish(struct kg_limit_verdict *out);

#endif
