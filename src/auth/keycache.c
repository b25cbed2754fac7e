/* auth/keycache.c - in-memory digest -> key cache, kept current by deltas.
 * Owns the entries (built from store records with their owner's role,
 * tier and credits) and the per-key and per-user stat records; the index
 * they live in, its lock-free reads and deferred freeing are
 * auth/keyindex.c. Does not decide anything (that is auth/decide.c) and
 * does not know the key format; the credit arithmetic is limit/quota.c,
 * the charge and the checks here only find the meters. A full load streams every key once (at
 * start, or when the change log was trimmed past this cache's position);
 * after that, kg_keycache_sync() applies the change log rows since the last
 * one applied, each by reading its key, user or tenant's keys again. Keys
 * revoked, or of disabled users or tenants, are left out. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "keygate/ipallow.h"
#include "keygate/keycache.h"
#include "keygate/keyindex.h"
#include "keygate/scope.h"
#include "keygate/timeutil.h"

#include "auth/keycache_int.h"

/* An owner record and what it is shared by (see struct kg_keyowner): the
 * user's slot holds one reference to its current record, each entry one.
 * The last one dropped frees it, on whichever thread that happens. */
struct owner_block {
    struct kg_keyowner o;
    _Atomic long refs;
    struct kg_keycache *kc; /* where its entries go back to */
    const char *vec[];      /* the split role (nrole + 1), then the strings */
};

/* An interned comma list (a key's scopes, or scopes within a role): one
 * copy per distinct list, shared by every entry with that list. Counted by
 * entries; one no entry holds is freed by the writer (reap_sets), so the
 * table is only ever changed under load_mu. */
struct scopeset {
    _Atomic long refs;
    struct kg_keycache *kc;
    struct scopeset *next; /* hash chain */
    uint64_t hash;
    const char *text; /* the list as given */
    size_t n;
    const char *vec[]; /* n + 1, then the text, then its split copy */
};

/* What the index holds: the entry first, then its interned effective
 * scopes (NULL when they are the key's own list or the owner's role), its
 * id and the load that made it; every other string is shared. A key with
 * a rate of its own has the longer block, with the rate. */
struct ent_block {
    struct kg_keyent ent;
    struct scopeset *eff;
    char id[KG_ID_MAX];
    uint32_t epoch;
};

struct ent_rated {
    struct ent_block b;
    struct kg_gcra rate;
};

static const size_t ent_size[ENT_KINDS] = {sizeof(struct ent_block), sizeof(struct ent_rated)};

/* A dropped entry's block, waiting to be reused. */
struct ent_free {
    struct ent_free *next;
};

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KG_ASAN 1
#endif
#elif defined(__SANITIZE_ADDRESS__)
#define KG_ASAN 1
#endif
#ifdef KG_ASAN
#include <sanitizer/asan_interface.h>
/* A dropped entry is poisoned (but its link), so ASan still catches a read
 * of an entry after the index let it go, as it would with free(). */
#define ENT_POISON(p, size)                                                                        \
    ASAN_POISON_MEMORY_REGION((char *)(p) + sizeof(struct ent_free),                               \
                              (size) - sizeof(struct ent_free))
#define ENT_UNPOISON(p, size) ASAN_UNPOISON_MEMORY_REGION((p), (size))
#else
#define ENT_POISON(p, size) ((void)(p), (void)(size))
#define ENT_UNPOISON(p, size) ((void)(p), (void)(size))
#endif

static void
owner_unref(const struct kg_keyowner *o)
{
    struct owner_block *ob = (struct owner_block *)(void *)o;

    if (atomic_fetch_sub_explicit(&ob->refs, 1, memory_order_acq_rel) == 1)
        free(ob);
}

static struct scopeset *
set_of(const char *const *vec)
{
    return (struct scopeset *)(void *)((char *)(void *)vec - offsetof(struct scopeset, vec));
}

static void
set_unref(struct scopeset *set)
{
    if (atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) == 1)
        atomic_fetch_add_explicit(&set->kc->sets_dead, 1, memory_order_relaxed);
}

/* The index's drop: any thread, once no reader can hold e. */
static void
ent_drop(struct kg_keyent *e)
{
    struct ent_block *eb = (struct ent_block *)(void *)e;
    struct kg_keycache *kc = ((const struct owner_block *)(const void *)e->owner)->kc;
    struct ent_free *f = (struct ent_free *)(void *)eb, *head;
    int kind = e->has_rate ? 1 : 0;

    set_unref(set_of(e->scopes));
    if (eb->eff != NULL)
        set_unref(eb->eff);
    owner_unref(e->owner);
    head = atomic_load_explicit(&kc->ent_free[kind], memory_order_relaxed);
    do {
        f->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&kc->ent_free[kind], &head, f,
                                                    memory_order_release, memory_order_relaxed));
    ENT_POISON(f, ent_size[kind]);
}

static uint64_t
str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s != '\0')
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static void
arena_free(struct arena *a)
{
    while (a->chunks != NULL) {
        struct arena_chunk *c = a->chunks;

        a->chunks = c->next;
        free(c);
    }
}

enum kg_status
kg_keycache_new(struct kg_limiter *limiter, struct kg_keycache **out)
{
    struct kg_keycache *kc = calloc(1, sizeof(*kc));

    *out = NULL;
    if (kc == NULL)
        return KG_ENOMEM;
    kc->seq = -1;
    kc->stats_cap = 64;
    kc->stats = calloc(kc->stats_cap, sizeof(*kc->stats));
    kc->ustats_cap = 64;
    kc->ustats = calloc(kc->ustats_cap, sizeof(*kc->ustats));
    kc->sets_cap = 64;
    kc->sets = calloc(kc->sets_cap, sizeof(*kc->sets));
    if (kc->stats == NULL || kc->ustats == NULL || kc->sets == NULL ||
        kg_keyindex_new(ent_drop, &kc->ix) != KG_OK || kg_ipallow_new(&kc->allow) != KG_OK) {
        kg_keyindex_free(kc->ix);
        kg_ipallow_free(kc->allow);
        free(kc->stats);
        free(kc->ustats);
        free(kc->sets);
        free(kc);
        return KG_ENOMEM;
    }
    kc->limiter = limiter;
    pthread_mutex_init(&kc->load_mu, NULL);
    pthread_mutex_init(&kc->stat_mu, NULL);
    *out = kc;
    return KG_OK;
}

void
kg_keycache_free(struct kg_keycache *kc)
{
    if (kc == NULL)
        return;
    kg_keyindex_free(kc->ix);
    kg_ipallow_free(kc->allow);
    arena_free(&kc->ent_arena);
    arena_free(&kc->stat_arena);
    free(kc->stats);
    for (size_t i = 0; i < kc->ustats_cap; i++) {
        free(kc->ustats[i].id);
        free(kc->ustats[i].stat);
        if (kc->ustats[i].owner != NULL)
            owner_unref(&kc->ustats[i].owner->o);
    }
    free(kc->ustats);
    /* The entries are gone: every list is unreferenced. */
    for (size_t i = 0; i < kc->sets_cap; i++) {
        while (kc->sets[i] != NULL) {
            struct scopeset *set = kc->sets[i];

            kc->sets[i] = set->next;
            free(set);
        }
    }
    free(kc->sets);
    pthread_mutex_destroy(&kc->load_mu);
    pthread_mutex_destroy(&kc->stat_mu);
    free(kc);
}

const struct kg_keysnap *
kg_keycache_acquire(struct kg_keycache *kc)
{
    return kg_keyindex_acquire(kc->ix);
}

void
kg_keycache_release(const struct kg_keysnap *snap)
{
    kg_keyindex_release(snap);
}

/* Puts s on its cache's list of records to flush, once. After the counter
 * it follows: the fence orders the counter's update before the flag's read,
 * which the flush clears before it reads the counters, so an update is
 * either seen by the flush that clears the flag or listed again. */
void
kg_keycache_mark_dirty(struct kg_keystat *s)
{
    struct kg_keystat *head;

    if (s->dirty_head == NULL)
        return;
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->dirty, memory_order_relaxed) ||
        atomic_exchange_explicit(&s->dirty, true, memory_order_acq_rel))
        return;
    head = atomic_load_explicit(s->dirty_head, memory_order_relaxed);
    do {
        s->dirty_next = head;
    } while (!atomic_compare_exchange_weak_explicit(s->dirty_head, &head, s, memory_order_release,
                                                    memory_order_relaxed));
}

void
kg_keycache_touch(const struct kg_keyent *ent, int64_t now)
{
    struct kg_keystat *s = kg_keycache_stat(ent);
    int64_t prev;

    if (s == NULL)
        return;
    prev = atomic_load_explicit(&s->last_used, memory_order_relaxed);
    /* At most one store per key per second: most requests only read. */
    while (prev < now &&
           !atomic_compare_exchange_weak_explicit(&s->last_used, &prev, now, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
    if (prev < now)
        kg_keycache_mark_dirty(s);
}

void
kg_keycache_count(const struct kg_keyent *ent, enum kg_usage_kind kind)
{
    struct kg_keystat *s = kg_keycache_stat(ent);
    _Atomic int64_t *c;

    if (s == NULL)
        return;
    switch (kind) {
    case KG_USAGE_REQUEST:
        c = &s->requests;
        break;
    case KG_USAGE_DENIED_EXPIRED:
        c = &s->denied_expired;
        break;
    case KG_USAGE_DENIED_FORBIDDEN:
        c = &s->denied_forbidden;
        break;
    case KG_USAGE_DENIED_RATE:
        c = &s->denied_rate;
        break;
    default:
        return;
    }
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    kg_keycache_mark_dirty(s);
}

bool
kg_keycache_credits_allow(const struct kg_keyent *ent, int64_t cost, int64_t now)
{
    struct kg_keystat *s;

    /* What costs nothing spends nothing, even past a lowered limit. */
    if (ent->quota_limit < 0 || cost <= 0)
        return true;
    /* A key with credits has its record from the load; none here is out
     * of memory, and refusing is the side that spends nothing unknown. */
    s = kg_keycache_stat(ent);
    if (s == NULL)
        return false;
    return kg_quota_used(&s->credits, ent->quota_period, now) + cost <= ent->quota_limit;
}

bool
kg_keycache_spend_allow(const struct kg_keyent *ent, const struct kg_tier *tier, int64_t cost,
                        int64_t now)
{
    /* The owner's first: it also tells the owner's record the tier's
     * period, which a cost of 0 must do too. */
    if (!kg_keycache_owner_allow(ent, tier, cost, now))
        return false;
    return cost <= 0 || kg_keycache_credits_allow(ent, cost, now);
}

bool
kg_keycache_owner_allow(const struct kg_keyent *ent, const struct kg_tier *tier, int64_t cost,
                        int64_t now)
{
    const struct kg_keyowner *o = ent->owner;
    struct kg_userstat *us = o->ustat;
    enum kg_quota_period tp = KG_QUOTA_NONE;

    if (tier != NULL && tier->quota_period != KG_QUOTA_NONE)
        tp = tier->quota_period;
    if (us != NULL && atomic_load_explicit(&us->tier.period, memory_order_relaxed) != (int)tp)
        atomic_store_explicit(&us->tier.period, (int)tp, memory_order_relaxed);
    /* The tier's quota for the flush's quota.threshold alerts. */
    if (us != NULL && tp != KG_QUOTA_NONE &&
        atomic_load_explicit(&us->tier.limit, memory_order_relaxed) != tier->quota)
        atomic_store_explicit(&us->tier.limit, tier->quota, memory_order_relaxed);
    if (cost <= 0 || us == NULL)
        return true;
    if (o->has_quota && kg_quota_used(&us->credits, o->quota_period, now) + cost > o->quota_limit)
        return false;
    return tp == KG_QUOTA_NONE || kg_quota_used(&us->tier, tp, now) + cost <= tier->quota;
}

int64_t
kg_keycache_spend_retry_after(const struct kg_keyent *ent, const struct kg_tier *tier, int64_t cost,
                              int64_t now)
{
    const struct kg_keyowner *o = ent->owner;
    struct kg_userstat *us = o->ustat;
    int64_t wait = 0;

    struct kg_keystat *s = ent->quota_limit >= 0 ? kg_keycache_stat(ent) : NULL;

    if (cost <= 0)
        return 0;
    if (s != NULL)
        kg_quota_fold_wait(kg_quota_used(&s->credits, ent->quota_period, now), ent->quota_limit,
                           ent->quota_period, cost, now, &wait);
    if (us != NULL && o->has_quota)
        kg_quota_fold_wait(kg_quota_used(&us->credits, o->quota_period, now), o->quota_limit,
                           o->quota_period, cost, now, &wait);
    if (us != NULL && tier != NULL && tier->quota_period != KG_QUOTA_NONE)
        kg_quota_fold_wait(kg_quota_used(&us->tier, tier->quota_period, now), tier->quota,
                           tier->quota_period, cost, now, &wait);
    return wait > 0 ? wait : 0;
}

void
kg_keycache_charge(struct kg_keystat *stat, int64_t units)
{
    struct kg_userstat *us;

    if (stat == NULL || units <= 0)
        return;
    atomic_fetch_add_explicit(&stat->credits.charged, units, memory_order_relaxed);
    kg_keycache_mark_dirty(stat);
    us = atomic_load_explicit(&stat->user, memory_order_relaxed);
    if (us == NULL)
        return;
    atomic_fetch_add_explicit(&us->credits.charged, units, memory_order_relaxed);
    /* A tier without a quota counts nothing: a quota configured later
     * starts from what is used after it, not from the user's history. */
    if (atomic_load_explicit(&us->tier.period, memory_order_relaxed) != KG_QUOTA_NONE)
        atomic_fetch_add_explicit(&us->tier.charged, units, memory_order_relaxed);
}

/* The slot of user id (its usage record, its current owner record),
 * created on first sight; valid until the next call. Caller holds load_mu. */
static struct user_slot *
user_slot_for(struct kg_keycache *kc, const char *id)
{
    size_t mask, i;

    if ((kc->nustats + 1) * 2 > kc->ustats_cap) {
        size_t ncap = kc->ustats_cap * 2;
        struct user_slot *ns = calloc(ncap, sizeof(*ns));

        if (ns == NULL)
            return NULL;
        for (size_t j = 0; j < kc->ustats_cap; j++) {
            if (kc->ustats[j].id == NULL)
                continue;
            for (i = str_hash(kc->ustats[j].id) & (ncap - 1); ns[i].id != NULL;
                 i = (i + 1) & (ncap - 1)) {
            }
            ns[i] = kc->ustats[j];
        }
        free(kc->ustats);
        kc->ustats = ns;
        kc->ustats_cap = ncap;
    }
    mask = kc->ustats_cap - 1;
    for (i = str_hash(id) & mask; kc->ustats[i].id != NULL; i = (i + 1) & mask)
        if (strcmp(kc->ustats[i].id, id) == 0)
            return &kc->ustats[i];
    kc->ustats[i].id = strdup(id);
    kc->ustats[i].stat = calloc(1, sizeof(struct kg_userstat));
    if (kc->ustats[i].id == NULL || kc->ustats[i].stat == NULL) {
        free(kc->ustats[i].id);
        free(kc->ustats[i].stat);
        kc->ustats[i].id = NULL;
        kc->ustats[i].stat = NULL;
        return NULL;
    }
    kc->nustats++;
    return &kc->ustats[i];
}

/* len zeroed bytes aligned to align (a power of two, at most that of
 * max_align_t), living as long as the cache. Caller holds the lock that
 * guards a. */
static void *
arena_alloc(struct arena *a, size_t len, size_t align)
{
    void *p;
    size_t at = (a->used + align - 1) & ~(align - 1);

    if (len > ARENA_CHUNK)
        return NULL;
    if (a->chunks == NULL || at + len > ARENA_CHUNK) {
        struct arena_chunk *c = calloc(1, sizeof(*c));

        if (c == NULL)
            return NULL;
        c->next = a->chunks;
        a->chunks = c;
        at = 0;
    }
    p = a->chunks->mem + at;
    a->used = at + len;
    return p;
}

/* A zeroed entry block of kind (1: with a rate of its own): a dropped one
 * again, or a new one carved from the chunks. Caller holds load_mu (the
 * only taker of ent_free). */
static struct ent_block *
ent_alloc(struct kg_keycache *kc, int kind)
{
    struct ent_free *f = kc->ent_spare[kind];

    if (f == NULL)
        f = kc->ent_spare[kind] =
            atomic_exchange_explicit(&kc->ent_free[kind], NULL, memory_order_acquire);
    if (f == NULL)
        return arena_alloc(&kc->ent_arena, ent_size[kind], _Alignof(struct ent_rated));
    kc->ent_spare[kind] = f->next;
    ENT_UNPOISON(f, ent_size[kind]);
    memset(f, 0, ent_size[kind]);
    return (struct ent_block *)(void *)f;
}

/* Doubles the stat map. Only the slot array is read: the hashes are in
 * it. Caller holds stat_mu. */
static bool
stats_grow(struct kg_keycache *kc)
{
    size_t ncap = kc->stats_cap * 2, i;
    struct stat_slot *ns = calloc(ncap, sizeof(*ns));

    if (ns == NULL)
        return false;
    for (size_t j = 0; j < kc->stats_cap; j++) {
        if (kc->stats[j].node == NULL)
            continue;
        for (i = kc->stats[j].hash & (ncap - 1); ns[i].node != NULL; i = (i + 1) & (ncap - 1)) {
        }
        ns[i] = kc->stats[j];
    }
    free(kc->stats);
    kc->stats = ns;
    kc->stats_cap = ncap;
    return true;
}

/* The record for id (hash h), or NULL. Caller holds stat_mu. */
static struct stat_node *
stat_lookup(const struct kg_keycache *kc, const char *id, uint64_t h)
{
    size_t mask = kc->stats_cap - 1;

    for (size_t i = h & mask; kc->stats[i].node != NULL; i = (i + 1) & mask)
        if (kc->stats[i].hash == h && strcmp(kc->stats[i].node->id, id) == 0)
            return kc->stats[i].node;
    return NULL;
}

/* A new record for the key of ent, which has none: on the cache's flush
 * list when used, charging its owner. Complete before the caller unlocks,
 * so whoever finds it next (another first use, the writer, a flush
 * through the list) sees it whole. Caller holds stat_mu. */
static struct stat_node *
stat_add(struct kg_keycache *kc, const struct kg_keyent *ent, uint64_t h)
{
    size_t len = strlen(ent->id) + 1, mask, i;
    struct stat_node *node;

    if ((kc->nstats + 1) * 2 > kc->stats_cap && !stats_grow(kc))
        return NULL;
    node = arena_alloc(&kc->stat_arena, sizeof(*node) + len, _Alignof(struct stat_node));
    if (node == NULL)
        return NULL;
    memcpy(node->id, ent->id, len);
    node->stat.dirty_head = &kc->dirty;
    atomic_store(&node->stat.user, ent->owner->ustat);
    atomic_store(&node->stat.credits.period, (int)ent->quota_period);
    atomic_store(&node->stat.credits.limit, ent->quota_limit);
    mask = kc->stats_cap - 1;
    for (i = h & mask; kc->stats[i].node != NULL; i = (i + 1) & mask) {
    }
    kc->stats[i].hash = h;
    kc->stats[i].node = node;
    kc->nstats++;
    return node;
}

struct kg_keystat *
kg_keycache_stat(const struct kg_keyent *ent)
{
    /* The pointer is a cache of the map's answer, set once per entry. */
    struct kg_keyent *e = (struct kg_keyent *)(uintptr_t)ent;
    struct kg_keystat *s = atomic_load_explicit(&e->stat, memory_order_acquire);
    struct kg_keycache *kc;
    struct stat_node *node;
    uint64_t h;

    if (s != NULL || ent->owner == NULL)
        return s;
    /* The key's first use through this entry: its record may exist (made
     * through an earlier entry of the key, or by another thread a moment
     * ago); the map under stat_mu is what makes it exactly one. */
    kc = ((const struct owner_block *)(const void *)ent->owner)->kc;
    h = str_hash(ent->id);
    pthread_mutex_lock(&kc->stat_mu);
    node = stat_lookup(kc, ent->id, h);
    if (node == NULL)
        node = stat_add(kc, ent, h);
    pthread_mutex_unlock(&kc->stat_mu);
    if (node == NULL)
        return NULL;
    atomic_store_explicit(&e->stat, &node->stat, memory_order_release);
    return &node->stat;
}

/* Links ent (not published yet) to its key's record, updated from rec:
 * the one the key has, or a new one for a key with credits (their count
 * must be known at its first request), else none until its first use.
 * false: out of memory. Caller holds load_mu, so no flush moves the store
 * between rec's read and this: the stored total holds every flushed
 * credit. */
static bool
link_stat(struct kg_keycache *kc, struct kg_keyent *ent, const struct kg_key_rec *rec)
{
    bool credits = ent->quota_limit >= 0 || ent->quota_period != KG_QUOTA_NONE;
    uint64_t h = str_hash(ent->id);
    struct stat_node *node;
    struct kg_keystat *s;

    pthread_mutex_lock(&kc->stat_mu);
    node = stat_lookup(kc, ent->id, h);
    if (node == NULL && credits)
        node = stat_add(kc, ent, h);
    pthread_mutex_unlock(&kc->stat_mu);
    if (node == NULL)
        return !credits;
    s = &node->stat;
    if (ent->owner->ustat != NULL && atomic_load(&s->user) != ent->owner->ustat)
        atomic_store(&s->user, ent->owner->ustat);
    atomic_store(&s->credits.stored, rec->quota_used);
    atomic_store(&s->credits.stored_start, rec->quota_period_start);
    atomic_store(&s->credits.period, (int)ent->quota_period);
    atomic_store(&s->credits.limit, ent->quota_limit);
    atomic_store_explicit(&ent->stat, s, memory_order_relaxed);
    return true;
}

/* One pass over store rows: a full load or one change log row. */
struct load_ctx {
    struct kg_keycache *kc;
    int64_t now;
    enum kg_status rc;
    size_t rows; /* rows seen */
};

/* Number of entries of a comma-separated list ("" has none). */
static size_t
list_count(const char *list)
{
    size_t n = list[0] != '\0' ? 1 : 0;

    for (const char *c = list; *c != '\0'; c++)
        n += *c == ',';
    return n;
}

/* Copies list (len bytes with its NUL) to p and splits the copy into vec
 * (n entries + NULL). */
static void
split_into(char *p, const char *list, size_t len, const char **vec, size_t n)
{
    char *sc = memcpy(p, list, len);

    for (size_t i = 0; i < n; i++) {
        vec[i] = sc;
        sc = strchr(sc, ',');
        if (sc != NULL)
            *sc++ = '\0';
    }
    vec[n] = NULL;
}

/* Appends s to the comma list out (cap bytes) unless it is there already. */
static void
list_add(char *out, size_t cap, const char *s)
{
    size_t n = strlen(s), used = strlen(out);
    const char *p = out;

    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);

        if (len == n && memcmp(p, s, n) == 0)
            return;
        p = e != NULL ? e + 1 : p + len;
    }
    if (used + n + 2 > cap)
        return;
    if (used > 0)
        out[used++] = ',';
    memcpy(out + used, s, n + 1);
}

/* The scopes a key with these (nscopes > 0) may really use within a role
 * that is not "*": see effective_str in keycache.h. For two wildcards the
 * narrower one is kept ("read:*" within "read:x" is "read:x"). */
static void
effective_scopes(const char *const *scopes, size_t nscopes, const struct kg_keyowner *o, char *out,
                 size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < nscopes; i++) {
        for (size_t j = 0; j < o->nrole; j++) {
            if (kg_scope_grants(o->role[j], scopes[i]))
                list_add(out, cap, scopes[i]);
            else if (kg_scope_grants(scopes[i], o->role[j]))
                list_add(out, cap, o->role[j]);
        }
    }
}

/* Frees the interned lists no entry holds any more. Caller holds load_mu
 * (the only place lists are taken or made, so none comes back meanwhile). */
static void
reap_sets(struct kg_keycache *kc)
{
    if (atomic_exchange_explicit(&kc->sets_dead, 0, memory_order_acq_rel) == 0)
        return;
    for (size_t i = 0; i < kc->sets_cap; i++) {
        struct scopeset **pp = &kc->sets[i];

        while (*pp != NULL) {
            struct scopeset *set = *pp;

            if (atomic_load_explicit(&set->refs, memory_order_acquire) == 0) {
                *pp = set->next;
                free(set);
                kc->nsets--;
            } else {
                pp = &set->next;
            }
        }
    }
}

/* The interned copy of list, with one more reference (the caller's entry).
 * Caller holds load_mu. */
static struct scopeset *
intern(struct kg_keycache *kc, const char *list)
{
    uint64_t h = str_hash(list);
    size_t len = strlen(list) + 1, n = list_count(list);
    struct scopeset *set;
    char *p;

    for (set = kc->sets[h & (kc->sets_cap - 1)]; set != NULL; set = set->next)
        if (set->hash == h && strcmp(set->text, list) == 0) {
            atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
            return set;
        }
    if (kc->nsets >= kc->sets_cap) {
        size_t ncap = kc->sets_cap * 2;
        struct scopeset **ns = calloc(ncap, sizeof(*ns));

        if (ns == NULL)
            return NULL;
        for (size_t i = 0; i < kc->sets_cap; i++)
            while (kc->sets[i] != NULL) {
                struct scopeset *s = kc->sets[i];

                kc->sets[i] = s->next;
                s->next = ns[s->hash & (ncap - 1)];
                ns[s->hash & (ncap - 1)] = s;
            }
        free(kc->sets);
        kc->sets = ns;
        kc->sets_cap = ncap;
    }
    set = malloc(sizeof(*set) + (n + 1) * sizeof(char *) + 2 * len);
    if (set == NULL)
        return NULL;
    atomic_init(&set->refs, 1);
    set->kc = kc;
    set->hash = h;
    set->n = n;
    p = (char *)(set->vec + n + 1);
    set->text = memcpy(p, list, len);
    split_into(p + len, list, len, set->vec, n);
    set->next = kc->sets[h & (kc->sets_cap - 1)];
    kc->sets[h & (kc->sets_cap - 1)] = set;
    kc->nsets++;
    return set;
}

/* The key's own limit from its stored rate and burst. A rate the store
 * holds but this build cannot read (never written by manage/keys.c) falls
 * back to the default rather than refusing to load the key. */
static bool
key_rate(const struct kg_key_rec *rec, struct kg_gcra *out)
{
    int64_t count, period;

    if (rec->rate[0] == '\0' || !kg_gcra_parse_rate(rec->rate, &count, &period))
        return false;
    return kg_gcra_init(out, count, period, rec->rate_burst, NULL) == KG_OK;
}

/* Whether ob says what owner (of a key of tenant tenant) says. */
static bool
owner_same(const struct owner_block *ob, const char *tenant, const struct kg_key_owner *owner)
{
    const struct kg_keyowner *o = &ob->o;

    return strcmp(o->tenant, tenant) == 0 && strcmp(o->tier, owner->tier) == 0 &&
           strcmp(o->role_str, owner->role) == 0 && o->platform_admin == owner->platform_admin &&
           o->has_quota == owner->has_quota && o->quota_limit == owner->quota_limit &&
           o->quota_period == kg_quota_period_of(owner->quota_period);
}

/* The owner record for a key of rec's user as owner describes it, with one
 * more reference (the caller's entry): the user's current one while
 * nothing in it changed, else a new one that becomes current. Also moves
 * the user's stored totals into its usage record. Caller holds load_mu. */
static const struct kg_keyowner *
owner_for(struct kg_keycache *kc, const struct kg_key_rec *rec, const struct kg_key_owner *owner)
{
    struct user_slot *slot = user_slot_for(kc, rec->user_id);
    size_t luid, lten, ltier, lrole, nrole;
    struct owner_block *ob;
    struct kg_userstat *us;
    char *p;

    if (slot == NULL)
        return NULL;
    /* A key without an owner charges no user. */
    us = rec->user_id[0] != '\0' ? slot->stat : NULL;
    if (us != NULL) {
        /* Under load_mu, like the key's credits: no flush moves the store
         * between the read and this. */
        atomic_store(&us->credits.stored, owner->usage->credits);
        atomic_store(&us->credits.stored_start, owner->usage->credits_period_start);
        atomic_store(&us->credits.period, (int)kg_quota_period_of(owner->quota_period));
        atomic_store(&us->credits.limit, owner->has_quota ? owner->quota_limit : -1);
        atomic_store(&us->tier.stored, owner->usage->tier);
        atomic_store(&us->tier.stored_start, owner->usage->tier_period_start);
    }
    if (slot->owner != NULL && owner_same(slot->owner, rec->tenant, owner)) {
        atomic_fetch_add_explicit(&slot->owner->refs, 1, memory_order_relaxed);
        return &slot->owner->o;
    }
    luid = strlen(slot->id) + 1;
    lten = strlen(rec->tenant) + 1;
    ltier = strlen(owner->tier) + 1;
    lrole = strlen(owner->role) + 1;
    nrole = list_count(owner->role);
    ob = malloc(sizeof(*ob) + (nrole + 1) * sizeof(char *) + luid + lten + ltier + 2 * lrole);
    if (ob == NULL)
        return NULL;
    p = (char *)(ob->vec + nrole + 1);
    ob->o.user_id = memcpy(p, slot->id, luid);
    p += luid;
    ob->o.tenant = memcpy(p, rec->tenant, lten);
    p += lten;
    ob->o.tier = memcpy(p, owner->tier, ltier);
    p += ltier;
    ob->o.role_str = memcpy(p, owner->role, lrole);
    p += lrole;
    split_into(p, owner->role, lrole, ob->vec, nrole);
    ob->o.role = ob->vec;
    ob->o.nrole = nrole;
    ob->o.role_all = false;
    for (size_t i = 0; i < nrole; i++)
        ob->o.role_all = ob->o.role_all || strcmp(ob->vec[i], "*") == 0;
    ob->o.platform_admin = owner->platform_admin;
    ob->o.has_quota = owner->has_quota;
    ob->o.quota_limit = owner->quota_limit;
    ob->o.quota_period = kg_quota_period_of(owner->quota_period);
    ob->o.ustat = us;
    /* The slot's reference and the caller's. Entries built before keep
     * the old record until they are replaced. */
    atomic_init(&ob->refs, 2);
    ob->kc = kc;
    if (slot->owner != NULL)
        owner_unref(&slot->owner->o);
    slot->owner = ob;
    return &ob->o;
}

/* Records rec's IP allowlist (or its absence) beside the entries. */
static bool
note_allowlist(struct kg_keycache *kc, const struct kg_key_rec *rec)
{
    bool changed = false;

    if (kg_ipallow_note(kc->allow, rec->id, rec->allowed_ips, &changed) != KG_OK)
        return false;
    return !changed || kc->seq < 0 || kg_ipallow_publish(kc->allow) == KG_OK;
}

bool
kg_keycache_ip_permits(struct kg_keycache *kc, const struct kg_keyent *ent, const char *client_ip)
{
    return kg_ipallow_permits(kc->allow, ent->id, client_ip);
}

/* Builds the entry for rec from shared parts (the owner record, interned
 * scope lists), so that deciding never allocates and a key costs its
 * entry and little else: its usage record comes with its first use. */
static bool
add_entry(struct load_ctx *lc, const struct kg_key_rec *rec, const struct kg_key_owner *owner)
{
    struct kg_keycache *kc = lc->kc;
    const struct kg_keyowner *o;
    struct scopeset *set;
    struct ent_block *eb;
    struct kg_keyent *ent;
    struct kg_gcra rate;
    bool has_rate = key_rate(rec, &rate);

    set = intern(kc, rec->scopes);
    o = set != NULL ? owner_for(kc, rec, owner) : NULL;
    eb = o != NULL ? ent_alloc(kc, has_rate ? 1 : 0) : NULL;
    if (eb == NULL) {
        if (set != NULL)
            set_unref(set);
        if (o != NULL)
            owner_unref(o);
        return false;
    }
    eb->epoch = kc->epoch;
    ent = &eb->ent;
    /* Set first: ent_drop() needs both to give the block back. */
    ent->owner = o;
    ent->has_rate = has_rate;
    ent->scopes = set->vec;
    memcpy(ent->digest, rec->digest, KG_DIGEST_BYTES);
    memcpy(eb->id, rec->id, strnlen(rec->id, sizeof(eb->id) - 1));
    ent->id = eb->id;
    if (has_rate) {
        struct ent_rated *er = (struct ent_rated *)(void *)eb;

        er->rate = rate;
        ent->rate = &er->rate;
    }
    ent->tenant = o->tenant;
    ent->user_id = o->user_id;
    ent->tier = o->tier;
    ent->nscopes = (uint32_t)set->n;
    if (o->role_all) {
        ent->effective_str = set->text;
    } else if (set->n == 0) {
        ent->effective_str = o->role_str;
    } else {
        char eff[2 * KG_SCOPES_MAX];

        effective_scopes(set->vec, set->n, o, eff, sizeof(eff));
        eb->eff = intern(kc, eff);
        if (eb->eff == NULL) {
            ent_drop(ent);
            return false;
        }
        ent->effective_str = eb->eff->text;
        ent->effective_empty = eff[0] == '\0';
    }
    ent->expires_at = rec->expires_at;
    ent->revoked_at = rec->revoked_at;
    ent->flags = (uint8_t)((rec->canary ? KG_KEYENT_CANARY : 0) |
                           (rec->allowed_ips[0] != '\0' ? KG_KEYENT_IPALLOW : 0));
    /* The list before the entry, so no reader sees the flag without it;
     * the first load publishes once, at its end. */
    if (!note_allowlist(kc, rec)) {
        ent_drop(ent);
        return false;
    }
    ent->quota_limit = rec->quota_limit;
    ent->quota_period = kg_quota_period_of(rec->quota_period);
    if (!link_stat(kc, ent, rec)) {
        ent_drop(ent);
        return false;
    }
    return kg_keyindex_put(kc->ix, ent) == KG_OK;
}

static bool
load_one(const struct kg_key_rec *rec, const struct kg_key_owner *owner, void *vctx)
{
    struct load_ctx *lc = vctx;

    lc->rows++;
    /* Revoked, or a disabled owner or tenant (a revocation of every key it
     * holds): not in the cache. */
    if ((rec->revoked_at != 0 && rec->revoked_at <= lc->now) || owner->disabled) {
        /* Out of memory: the sync fails and the next one removes it. */
        if (kg_keyindex_remove(lc->kc->ix, rec->digest) != KG_OK) {
            lc->rc = KG_ENOMEM;
            return false;
        }
        return true;
    }
    if (!add_entry(lc, rec, owner)) {
        lc->rc = KG_ENOMEM;
        return false;
    }
    return true;
}

/* A full load leaves out what it did not see this time. */
static bool
seen_this_load(const struct kg_keyent *ent, void *vkc)
{
    const struct kg_keycache *kc = vkc;

    return ((const struct ent_block *)(const void *)ent)->epoch == kc->epoch;
}

/* Caller holds load_mu. Every key, streamed once; entries are replaced in
 * place, so readers keep answering and memory never doubles. */
static enum kg_status
load_all_locked(struct kg_keycache *kc, struct kg_store *st, int64_t now, struct kg_err *err)
{
    struct load_ctx lc = {.kc = kc, .now = now, .rc = KG_OK};
    int64_t last, trimmed;
    size_t count;
    enum kg_status rc;

    /* The position first: a change committed during the walk is applied
     * again by the next sync, which does no harm. */
    rc = kg_store_change_head(st, &last, &trimmed, err);
    if (rc == KG_OK)
        rc = kg_store_key_count(st, &count, err);
    if (rc != KG_OK)
        return rc;
    /* Sized once for every key, revoked ones included (a few slots too
     * many): no table grows and rehashes during the walk. */
    if (kg_keyindex_reserve(kc->ix, count) != KG_OK)
        return kg_err_set(err, KG_ENOMEM, "out of memory loading keys");
    kc->epoch++;
    rc = kg_store_key_each_owner(st, load_one, &lc, err);
    if (rc == KG_OK && lc.rc != KG_OK)
        rc = kg_err_set(err, lc.rc, "out of memory loading keys");
    if (rc == KG_OK && kg_keyindex_sweep(kc->ix, seen_this_load, kc) != KG_OK)
        rc = kg_err_set(err, KG_ENOMEM, "out of memory loading keys");
    if (rc == KG_OK)
        kc->seq = last;
    /* On failure the position stays, so the next sync loads again. */
    if (kg_ipallow_publish(kc->allow) != KG_OK && rc == KG_OK)
        rc = kg_err_set(err, KG_ENOMEM, "out of memory loading keys");
    kg_keyindex_publish(kc->ix, rc == KG_OK ? kg_time_mono_ms() : 0);
    reap_sets(kc);
    return rc;
}

enum kg_status
kg_keycache_reload(struct kg_keycache *kc, struct kg_store *st, int64_t now, struct kg_err *err)
{
    enum kg_status rc;

    pthread_mutex_lock(&kc->load_mu);
    rc = load_all_locked(kc, st, now, err);
    pthread_mutex_unlock(&kc->load_mu);
    return rc;
}

/* Change log rows read in one go. */
#define SYNC_BATCH 512

struct batch {
    struct kg_change *c;
    size_t n;
};

static bool
collect(const struct kg_change *c, void *vb)
{
    struct batch *b = vb;

    b->c[b->n++] = *c;
    return b->n < SYNC_BATCH;
}

/* Whether row i is repeated later in the batch: the later one reads the
 * same object again, so this one can be skipped (a user or tenant may name
 * many keys). */
static bool
repeated_later(const struct batch *b, size_t i)
{
    if (b->c[i].object == KG_CHANGE_KEY)
        return false;
    for (size_t j = i + 1; j < b->n; j++)
        if (b->c[j].object == b->c[i].object && strcmp(b->c[j].id, b->c[i].id) == 0)
            return true;
    return false;
}

/* Applies one batch of rows. *gone: a key row names a key the store no
 * longer has (deleted by hand), which only a full load removes. */
static enum kg_status
apply_batch(struct kg_keycache *kc, struct kg_store *st, const struct batch *b, int64_t now,
            bool *gone, struct kg_err *err)
{
    for (size_t i = 0; i < b->n; i++) {
        struct load_ctx lc = {.kc = kc, .now = now, .rc = KG_OK};
        enum kg_status rc;

        if (repeated_later(b, i))
            continue;
        rc = kg_store_key_each_owner_of(st, b->c[i].object, b->c[i].id, load_one, &lc, err);
        if (rc == KG_OK && lc.rc != KG_OK)
            rc = kg_err_set(err, lc.rc, "out of memory loading keys");
        if (rc != KG_OK)
            return rc;
        if (b->c[i].object == KG_CHANGE_KEY && lc.rows == 0)
            *gone = true;
    }
    return KG_OK;
}

/* Caller holds load_mu. */
static enum kg_status
sync_locked(struct kg_keycache *kc, struct kg_store *st, int64_t now, bool *full,
            struct kg_err *err)
{
    struct batch b = {0};
    enum kg_status rc = KG_OK;
    int64_t last, trimmed;
    bool gone = false;

    if (kc->seq < 0)
        goto load_all;
    b.c = malloc(SYNC_BATCH * sizeof(*b.c));
    if (b.c == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory reading changes");
    for (;;) {
        b.n = 0;
        rc = kg_store_change_each(st, kc->seq, SYNC_BATCH, collect, &b, err);
        if (rc != KG_OK)
            goto cleanup;
        /* Read after the rows: a trim past our position before or during
         * that read may have taken rows we never saw. */
        rc = kg_store_change_head(st, &last, &trimmed, err);
        if (rc != KG_OK)
            goto cleanup;
        if (trimmed > kc->seq)
            goto load_all;
        if (b.n == 0)
            break;
        rc = apply_batch(kc, st, &b, now, &gone, err);
        if (rc != KG_OK)
            goto cleanup; /* the position stays: the next sync applies the batch again */
        kc->seq = b.c[b.n - 1].seq;
        if (gone)
            goto load_all;
        if (b.n < SYNC_BATCH)
            break;
    }
    kg_keyindex_publish(kc->ix, kg_time_mono_ms());
    goto cleanup;
load_all:
    if (full != NULL)
        *full = true;
    rc = load_all_locked(kc, st, now, err);
cleanup:
    /* Whatever was applied before a failure is published too. */
    if (rc != KG_OK)
        kg_keyindex_publish(kc->ix, 0);
    reap_sets(kc);
    free(b.c);
    return rc;
}

enum kg_status
kg_keycache_sync(struct kg_keycache *kc, struct kg_store *st, int64_t now, bool *full,
                 struct kg_err *err)
{
    enum kg_status rc;

    if (full != NULL)
        *full = false;
    pthread_mutex_lock(&kc->load_mu);
    rc = sync_locked(kc, st, now, full, err);
    pthread_mutex_unlock(&kc->load_mu);
    return rc;
}

int64_t
kg_keycache_position(struct kg_keycache *kc)
{
    int64_t seq;

    pthread_mutex_lock(&kc->load_mu);
    seq = kc->seq;
    pthread_mutex_unlock(&kc->load_mu);
    return seq;
}

struct kg_keystat *
kg_keycache_stat_find(struct kg_keycache *kc, const char *id)
{
    struct stat_node *node;

    pthread_mutex_lock(&kc->stat_mu);
    node = stat_lookup(kc, id, str_hash(id));
    pthread_mutex_unlock(&kc->stat_mu);
    return node != NULL ? &node->stat : NULL;
}

const char *
kg_keyent_scopes_str(const struct kg_keyent *ent)
{
    return ent->scopes != NULL ? set_of(ent->scopes)->text : "";
}

struct kg_limiter *
kg_keycache_limiter(struct kg_keycache *kc)
{
    return kc->limiter;
}
