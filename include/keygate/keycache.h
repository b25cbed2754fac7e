/* keygate/keycache.h - every live key in memory, indexed by digest.
 *
 * The request path decides from here and never touches the store. The
 * index (auth/keyindex.c) is updated in place, one entry at a time, and
 * read without locks: a "snapshot" is a read guard, held for as long as a
 * request needs the entries it found; every lookup sees the cache as it is
 * now, and an entry replaced or removed meanwhile is freed only after every
 * guard that could have seen it is released. The cache is loaded whole at
 * start and then kept current by the store's change log
 * (kg_keycache_sync). Per-key usage (last used, counters) lives in stat
 * records that outlive entries, so a change never loses a count; a key's
 * record is made on its first use, not at load, so a key never used costs
 * its entry only.
 *
 * Threads: acquire/release/find/touch from any thread; reload, sync and
 * flush from any thread but a request loop (they block on the store and
 * serialise on an internal mutex).
 */
#ifndef KEYGATE_KEYCACHE_H
#define KEYGATE_KEYCACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/config.h"
#include "keygate/gcra.h"
#include "keygate/quota.h"
#include "keygate/status.h"
#include "keygate/store.h"

/* What a user spent, shared by every key of the user and every snapshot. */
struct kg_userstat {
    struct kg_meter credits; /* its own credits; period set by a reload */
    /* Its tier's quota, counted only while the tier has one: the period
     * comes from the config, set by each kg_keycache_spend_allow(). */
    struct kg_meter tier;
};

/* Usage of one key, shared by every snapshot that holds the key. */
struct kg_keystat {
    _Atomic int64_t last_used;    /* Unix seconds, 0 = never */
    _Atomic int64_t last_flushed; /* last_used value already written to the store */
    /* Counters since the process started, bumped with relaxed atomics on the
     * request path; the *_flushed twins hold how much of each the store has
     * (only kg_keycache_flush writes them, after its transaction commits). */
    _Atomic int64_t requests;         /* allowed and let through (not /health) */
    _Atomic int64_t denied_expired;   /* 401: the key has expired */
    _Atomic int64_t denied_forbidden; /* 403: scope, role, no scopes or no route */
    _Atomic int64_t denied_rate;      /* 429: over the key's or its tier's rate */
    _Atomic int64_t requests_flushed;
    _Atomic int64_t denied_expired_flushed;
    _Atomic int64_t denied_forbidden_flushed;
    _Atomic int64_t denied_rate_flushed;
    /* Credits (issue 5, item 4), a meter (keygate/quota.h): the period is
     * set by a reload. */
    struct kg_meter credits;
    /* The owner's record (a key never changes owner), set by a reload:
     * kg_keycache_charge() charges it too. */
    struct kg_userstat *_Atomic user;
    /* The cache's list of records used since the last flush, so that a
     * flush visits those and not every key: set once the record is on it,
     * cleared by the flush before it reads the counters. dirty_head is the
     * cache's list (NULL: a record made outside a cache, never listed). */
    _Atomic bool dirty;
    struct kg_keystat *dirty_next;
    struct kg_keystat *_Atomic *dirty_head;
    /* credits_mode strict (issue 15, auth/keyreserve.c): the credits this
     * instance holds of its reservations and may spend, packed as
     * (epoch << KG_HOLD_BITS) | amount; a new epoch voids what is held (a
     * new period, a lease that may have lapsed), so a claim given back
     * after it is dropped. res_queued: on the cache's refill queue. The
     * res_* rest belong to the thread that reserves. */
    _Atomic uint64_t hold;
    _Atomic int64_t res_out; /* claims neither charged nor given back yet */
    _Atomic bool res_queued;
    struct kg_keystat *res_next;
    struct kg_keystat *res_held_next; /* on the list of records that ever held credits */
    bool res_listed;
    bool res_release;  /* its block was dropped for idleness: delete its row */
    int64_t res_start; /* the refill period the current epoch's credits are of */
    int64_t res_at;    /* Unix seconds of its last refill */
};

#define KG_HOLD_BITS 40
#define KG_HOLD_AMOUNT(w) ((int64_t)((w) & ((UINT64_C(1) << KG_HOLD_BITS) - 1)))
#define KG_HOLD_EPOCH(w) ((w) >> KG_HOLD_BITS)

/* What kg_keycache_count() records. */
enum kg_usage_kind {
    KG_USAGE_REQUEST,
    KG_USAGE_DENIED_EXPIRED,
    KG_USAGE_DENIED_FORBIDDEN,
    KG_USAGE_DENIED_RATE,
};

/* The owner of keys: one record per user, shared by every entry of the
 * user (its strings, its split role and its credits are not copied into
 * each key). Read-only; valid while an entry that points to it is. A
 * change to the user or its tenant makes a new record for the entries
 * built after it; the old one is freed with the last entry that holds it. */
struct kg_keyowner {
    const char *user_id;     /* "usr_…"; "" for a key without an owner */
    const char *tenant;      /* the user's tenant */
    const char *tier;        /* the user's tier */
    const char *role_str;    /* the role as stored; "*" = every scope */
    const char *const *role; /* role_str split; meaningless when role_all */
    size_t nrole;
    bool role_all;       /* the role grants every scope (it holds "*") */
    bool platform_admin; /* the user is a platform admin */
    bool has_quota;      /* the user has credits of its own */
    int64_t quota_limit; /* ... this many */
    enum kg_quota_period quota_period;
    struct kg_userstat *ustat; /* the user's credits and tier quota; NULL without an owner */
};

/* One key in a snapshot. Read-only; valid until the snapshot is released.
 * A key's power at request time is its own scopes (none = no limit of its
 * own) intersected with its owner's role; decide.c applies both. Scope
 * lists are interned: every key with the same scopes shares one copy.
 * Only what deciding and admitting need is here (about 200 bytes with the
 * id, see docs/architecture.md); the key's usage record is made on its
 * first use (kg_keycache_stat). */
struct kg_keyent {
    unsigned char digest[KG_DIGEST_BYTES];
    const char *id; /* held in the entry's own block */
    const struct kg_keyowner *owner;
    /* The owner's, for the headers sent upstream (owner->...). */
    const char *tenant;
    const char *user_id;
    const char *tier;
    const char *const *scopes; /* interned; kg_keyent_scopes_str() is the list as stored */
    /* Key scopes within the role, as sent upstream in X-Keygate-Scopes: the
     * key's own when the role is "*", the role when the key has none ("" =
     * everything), else each scope both grant. */
    const char *effective_str;
    int64_t expires_at; /* 0 = never */
    int64_t revoked_at; /* 0 = not scheduled; may be in the future (rotation grace) */
    /* The usage record, once made: read it through kg_keycache_stat(),
     * which makes it on the key's first use. */
    struct kg_keystat *_Atomic stat;
    const struct kg_gcra *rate; /* its own rate and burst, when has_rate (in the entry's block) */
    int64_t quota_limit;        /* credits it may use, -1 = unlimited */
    uint32_t nscopes;
    enum kg_quota_period quota_period; /* when the credits come back */
    bool effective_empty;              /* the key has scopes and the role grants none of them */
    bool has_rate;                     /* the key has a rate of its own (else the config default) */
    uint8_t flags;                     /* KG_KEYENT_*; in what was padding: costs no byte */
};

/* struct kg_keyent flags (issue 18). */
#define KG_KEYENT_CANARY 0x01u  /* a canary: never grants access, every use reported */
#define KG_KEYENT_IPALLOW 0x02u /* has an IP allowlist: kg_keycache_ip_permits() decides */

/* The key's scopes as stored, "a,b" ("" = no scopes). */
const char *kg_keyent_scopes_str(const struct kg_keyent *ent);

struct kg_keycache;
struct kg_keysnap;
struct kg_limiter;

/* An empty cache (its first snapshot holds no keys). Caller owns it.
 * limiter (may be NULL: none) holds the rate-limit buckets of every key and
 * user, named by id; the cache only hands it on (kg_keycache_limiter) and
 * does not free it: the caller frees it after the cache. */
enum kg_status kg_keycache_new(struct kg_limiter *limiter, struct kg_keycache **out);

/* Frees the cache and its current snapshot. Every acquired snapshot must
 * have been released first. NULL is a no-op. */
void kg_keycache_free(struct kg_keycache *kc);

/* Full load: streams every key in st (one query) and makes the cache hold
 * exactly those not revoked as of now whose owner and owner's tenant are
 * enabled, with the owner's role; entries are replaced in place (readers
 * keep answering, memory does not double) and the cache's change log
 * position becomes the log's head as read before the walk. What the daemon
 * does at start. On error what was read is kept and the position stays, so
 * the next kg_keycache_sync() loads everything again. */
enum kg_status kg_keycache_reload(struct kg_keycache *kc, struct kg_store *st, int64_t now,
                                  struct kg_err *err);

/* Brings the cache up to the store's change log: reads the rows after the
 * last one applied and applies each by reading its key, or the keys of its
 * user or tenant, again (a disabled user or tenant stops its keys like a
 * revocation). A full load instead when the cache was never loaded, when
 * the log was trimmed past its position, or when a row names a key the
 * store no longer has; *full (may be NULL) says whether that happened.
 * Blocks on the store: never on a request loop. Any other thread; it
 * serialises with loads and flushes. */
enum kg_status kg_keycache_sync(struct kg_keycache *kc, struct kg_store *st, int64_t now,
                                bool *full, struct kg_err *err);

/* The last change log seq applied (-1 before the first load). */
int64_t kg_keycache_position(struct kg_keycache *kc);

/* A read guard on the cache, held until kg_keycache_release(); entries
 * found through it stay valid until then. Never NULL. Never waits for a
 * load or sync. */
const struct kg_keysnap *kg_keycache_acquire(struct kg_keycache *kc);
void kg_keycache_release(const struct kg_keysnap *snap);

/* The entry with this digest, or NULL. Constant-time digest comparison. */
const struct kg_keyent *kg_keysnap_find(const struct kg_keysnap *snap,
                                        const unsigned char digest[KG_DIGEST_BYTES]);
size_t kg_keysnap_count(const struct kg_keysnap *snap);
/* Monotonic time (ms) the cache was last known current with the store
 * (the last successful load or sync). */
int64_t kg_keysnap_built_ms(const struct kg_keysnap *snap);

/* The limiter the cache was made with (keygate/limiter.h): buckets are
 * named by key id and user id, never by entry, so no change resets them. */
struct kg_limiter *kg_keycache_limiter(struct kg_keycache *kc);

/* The usage record of ent's key (last used, counters, credits), made on
 * the key's first use and shared by every entry the key has afterwards; a
 * key with a credit limit has it from its load. Any thread: the first
 * call for a key takes a mutex only other first uses and the writer's
 * entry builds take, for a hash lookup and insert (never a store read or
 * a load); every later call is one atomic load. NULL only when out of
 * memory (the use is then not recorded) or for an entry not made by a
 * cache. */
struct kg_keystat *kg_keycache_stat(const struct kg_keyent *ent);

/* Whether ent, which has KG_KEYENT_IPALLOW, may be used from client_ip
 * (text): one of its blocks holds it. The lists live beside the entries
 * (keygate/ipallow.h); a list not published yet refuses. Any thread. */
bool kg_keycache_ip_permits(struct kg_keycache *kc, const struct kg_keyent *ent,
                            const char *client_ip);

/* Records a use of ent at now (kept exact to the second, written later). */
void kg_keycache_touch(const struct kg_keyent *ent, int64_t now);

/* Counts one request of ent as kind. Lock-free (one relaxed add). */
void kg_keycache_count(const struct kg_keyent *ent, enum kg_usage_kind kind);

/* Whether ent may spend cost more credits at now (always without a limit,
 * and always for a cost of 0, even past the limit). Checks, does not
 * charge: the charge comes with the upstream's 2xx (kg_keycache_charge), so
 * concurrent requests that all pass this check can overspend by at most the
 * cost of the requests in flight at once. */
bool kg_keycache_credits_allow(const struct kg_keyent *ent, int64_t cost, int64_t now);

/* Whether a request of ent costing cost fits at now in all of: the key's
 * credits, its owner's credits, and the owner's tier quota (tier may be
 * NULL: no tier limit; a tier without quota has none); a cost of 0 always
 * does. Checks, does not charge, like kg_keycache_credits_allow(); the
 * stricter limit decides and a refusal charges none of them. Also tells the
 * owner's record which period the tier quota counts in. */
bool kg_keycache_spend_allow(const struct kg_keyent *ent, const struct kg_tier *tier, int64_t cost,
                             int64_t now);

/* After kg_keycache_spend_allow() refused: the seconds until every limit
 * that refused starts a new refill period (the Retry-After of the 429), or
 * 0 when one of them never refills by itself (credits without a refill, or
 * a cost above the limit). */
int64_t kg_keycache_spend_retry_after(const struct kg_keyent *ent, const struct kg_tier *tier,
                                      int64_t cost, int64_t now);

/* Charges units credits to stat (kg_keycache_stat; NULL: nothing), and to
 * its owner's credits and tier quota (a stat record outlives snapshots, so
 * a request may keep it past releasing its snapshot). Lock-free. */
void kg_keycache_charge(struct kg_keystat *stat, int64_t units);

/* Writes the last-used time and the counter deltas of every key used or
 * counted since the previous flush to st in one transaction
 * (kg_store_key_usage_add), credits charged included (added to quota_used,
 * or starting it again in a new refill period). Deltas are marked flushed only after the commit:
 * on failure nothing is marked, so the next call retries and no count is
 * lost or written twice. *flushed (may be NULL) gets the number of keys. */
enum kg_status kg_keycache_flush(struct kg_keycache *kc, struct kg_store *st, size_t *flushed,
                                 struct kg_err *err);

/* kg_keycache_flush() at now (the tests' clock): the refill period the
 * deltas count in, and the quota.threshold alerts (80 % and 100 % of a
 * key's or user's credits or tier quota, once per period) written after
 * the commit. */
enum kg_status kg_keycache_flush_at(struct kg_keycache *kc, struct kg_store *st, int64_t now,
                                    size_t *flushed, struct kg_err *err);

/* The usage of key id as the store has it (kg_store_key_usage_get through
 * st) plus what this process counted and has not flushed yet, read under
 * the flush lock so a flush in between can neither hide nor double a count.
 * KG_ENOTFOUND: no such key in st. */
enum kg_status kg_keycache_usage(struct kg_keycache *kc, struct kg_store *st, const char *id,
                                 struct kg_key_usage *out, struct kg_err *err);

#endif
