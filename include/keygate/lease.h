/* keygate/lease.h - what one gateway holds of a shared rate limit: leased
 * tokens and the "denied until" of an exhausted key.
 *
 * With `limits redis://…` the buckets live in Redis (limit/redislimit.c),
 * and a request loop must never wait for Redis. So each gateway keeps, per
 * key (its key bucket and its owner's tier bucket together), a lease: a
 * few tokens already taken from both buckets in Redis, spent locally, and
 * topped up ahead of need (when half are gone); and, when Redis said the
 * key is exhausted, the time until which every request of that key is
 * refused here without asking again. A request that finds neither waits
 * (suspended, never blocking its loop) for the refill it triggers.
 *
 * The lease size is `limits_lease` worth of the stricter rate, at least 1
 * token and at most the burst; a lease of 0 means exact mode: no token is
 * held, every request is one Redis call and takes exactly its own token.
 *
 * Pure bookkeeping, no I/O and no clock of its own (times are passed in,
 * microseconds on the caller's monotonic clock), so the accounting is
 * unit-tested by stepping time. Not thread-safe: the owner holds one lock
 * around every call. Memory is fixed at creation (a set-associative table,
 * names hashed with a random key); an entry with a refill or a waiter is
 * never evicted.
 */
#ifndef KEYGATE_LEASE_H
#define KEYGATE_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/gcra.h"
#include "keygate/limiter.h"
#include "keygate/status.h"

/* One key's lease. Fields are the owner's to read; change them only
 * through the functions below (queued/inflight/qnext excepted: the owner's
 * refill queue). */
struct kg_lease {
    uint64_t id; /* keyed hash of the key and user ids; 0 = free */
    char key_id[KG_LIMIT_ID_MAX];
    char user_id[KG_LIMIT_ID_MAX];
    bool has_key, has_tier;
    struct kg_gcra key_rate, tier_rate;
    int64_t size;            /* tokens a refill tops up to; 0 = exact mode */
    int64_t tokens;          /* held: already taken from every bucket of the key */
    int64_t denied_until_us; /* refused locally until then; 0 = not denied */
    /* The buckets as the shared store last described them, at state_us. */
    bool has_state;
    struct kg_gcra_result key_state, tier_state;
    int64_t state_us;
    /* Refills: one at a time, asked by the owner. */
    bool queued, inflight;
    int64_t asked;
    struct kg_lease *qnext;
    struct kg_limit_wait *waiters, *waiters_tail; /* FIFO, each with its deadline */
};

/* What a request found in its lease. */
enum kg_lease_take {
    KG_LEASE_TOKEN,  /* a held token was spent: allowed */
    KG_LEASE_DENIED, /* still denied: refused here, nothing asked */
    KG_LEASE_EMPTY,  /* neither: the shared store must be asked (the request waits) */
};

struct kg_lease_table;

/* A table with room for about `entries` keys (rounded up to whole sets) and
 * leases of lease_us worth of each key's rate (0: exact mode). KG_EINVAL
 * unless 1 <= entries <= 2^20 and 0 <= lease_us <= 60 s. Caller owns *out. */
enum kg_status kg_lease_table_new(size_t entries, int64_t lease_us, struct kg_lease_table **out,
                                  struct kg_err *err);

/* NULL-safe. Waiters still queued are the owner's to answer first. */
void kg_lease_table_free(struct kg_lease_table *t);

/* The tokens a refill tops a lease up to: lease_us worth of the stricter
 * of the two rates, rounded up, at least 1 and at most the smaller burst;
 * 0 when lease_us is 0. Pure. */
int64_t kg_lease_size(const struct kg_gcra *key_rate, const struct kg_gcra *tier_rate,
                      int64_t lease_us);

/* The lease of req's key, made (create) when there is none: then NULL only
 * when every entry of its set is busy with a refill. A lease whose rates
 * differ from req's starts again empty, unless a refill is under way. */
struct kg_lease *kg_lease_get(struct kg_lease_table *t, const struct kg_limit_req *req,
                              int64_t now_us, bool create);

/* One request against l at now_us. count: spend a token (TOKEN), else only
 * report. *out (may be NULL) gets the verdict for TOKEN and DENIED (and for
 * a report), without binding and retry_after_us (kg_limiter_finish()). */
enum kg_lease_take kg_lease_take(struct kg_lease *l, int64_t now_us, bool count,
                                 struct kg_limit_verdict *out);

/* Whether l wants a refill now (none asked, and a waiter or at most half
 * the lease left), and how many tokens to ask for. */
bool kg_lease_wants_refill(const struct kg_lease *l);
int64_t kg_lease_ask(const struct kg_lease *l);

/* Queues w on l (its deadline: deadline_us). */
void kg_lease_add_waiter(struct kg_lease *l, struct kg_limit_wait *w, int64_t deadline_us);

/* What the shared store answered to a refill of l: granted tokens (taken
 * from every bucket), each bucket's state after it (retry_after_us: until
 * one more token would pass), at now_us. Waiters are served in order: a
 * token each while there are any; the rest are refused when the store
 * said wait (l is then denied until now + the longest retry), and stay
 * queued for another refill when it did not (the grant was only short of
 * waiters that joined after it was asked). Those answered are appended to
 * *done (through ->next), for the owner to call outside its lock. */
void kg_lease_granted(struct kg_lease *l, int64_t granted, const struct kg_gcra_result *key_state,
                      const struct kg_gcra_result *tier_state, int64_t now_us,
                      struct kg_limit_wait **done);

/* The refill failed (the store is down or too slow): every waiter gets
 * KG_LIMIT_DOWN, appended to *done. Held tokens stay valid. */
void kg_lease_failed(struct kg_lease *l, struct kg_limit_wait **done);

/* Waiters whose deadline is at or before now_us get KG_LIMIT_DOWN,
 * appended to *done. Returns the earliest deadline left, or INT64_MAX. */
int64_t kg_lease_expire(struct kg_lease *l, int64_t now_us, struct kg_limit_wait **done);

#endif
