/* auth/keycache_int.h - the key cache's record, shared by its two files:
 * auth/keycache.c (the entries, loads and syncs, the stat records) and
 * auth/keyflush.c (the once-a-second write-back of usage and credits).
 * Not a public header: nothing outside src/auth/ includes it. */
#ifndef KEYGATE_AUTH_KEYCACHE_INT_H
#define KEYGATE_AUTH_KEYCACHE_INT_H

#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#include "keygate/keycache.h"

struct owner_block;
struct scopeset;
struct ent_free;

struct user_slot {
    char *id;
    struct kg_userstat *stat;
    struct owner_block *owner; /* the user's current record, or NULL */
};

/* A chunk of entries or stat records (see struct kg_keycache). */
#define ARENA_CHUNK ((size_t)1 << 20)
struct arena_chunk {
    struct arena_chunk *next;
    _Alignas(max_align_t) unsigned char mem[ARENA_CHUNK];
};

/* Carves records from chunks: no allocator call or header per record. */
struct arena {
    struct arena_chunk *chunks;
    size_t used; /* in the first chunk */
};

/* A slot of the stat map: the id's hash beside the record, so that growing
 * the map reads the slot array only, never a record. */
struct stat_slot {
    uint64_t hash;
    struct stat_node *node; /* NULL = empty */
};

/* Entry blocks come in two sizes: with a rate of the key's own, or not. */
#define ENT_KINDS 2

struct kg_keycache {
    struct kg_keyindex *ix;
    pthread_mutex_t load_mu; /* serialises loads, syncs, flushes and the user slots */
    int64_t seq;             /* the last change log row applied; -1 = never loaded */
    uint32_t epoch;          /* stamped on entries by a full load, to sweep the rest */
    /* The stat records, by key id: made on a key's first use by whichever
     * thread admits it, so guarded by a mutex of their own that nothing
     * holds for longer than a hash lookup and insert (a map growing: one
     * pass over its slots). Records are never freed before the cache. */
    pthread_mutex_t stat_mu;
    struct stat_slot *stats; /* open addressing by id hash, at most half full */
    size_t nstats, stats_cap;
    struct arena stat_arena;
    struct user_slot *ustats;         /* by user id, under load_mu */
    struct kg_keystat *_Atomic dirty; /* records used since the last flush (a stack) */
    size_t nustats, ustats_cap;
    struct scopeset **sets; /* interned lists, chained by hash */
    size_t nsets, sets_cap;
    _Atomic size_t sets_dead; /* lists whose last entry went since the last reap */
    /* Entries are carved from chunks too (under load_mu); a dropped one is
     * pushed on ent_free from any thread, and the writer takes that stack
     * whole into ent_spare to reuse. */
    struct arena ent_arena;
    struct ent_free *_Atomic ent_free[ENT_KINDS];
    struct ent_free *ent_spare[ENT_KINDS];
    /* Rate-limit buckets by key id and user id, handed in by the daemon
     * (not owned): named by id, never by entry, they outlive every change. */
    struct kg_limiter *limiter;
    /* IP allowlists by key id, only for keys that have one (issue 18). */
    struct kg_ipallow *allow;
    /* credits_mode strict (auth/keyreserve.c): on once enabled; keys whose
     * block runs low (a stack any thread pushes on), how to wake the
     * reserving thread, and that thread's own: every record that ever held
     * credits, and its lease renewals (monotonic ms). */
    _Atomic bool strict;
    struct kg_keystat *_Atomic res_queue;
    void (*res_wake)(void *);
    void *res_wake_arg;
    struct kg_keystat *res_held;
    int64_t res_renewed_ms, res_renew_at_ms;
};

/* A stat record and its key id, in one block that lives as long as the
 * cache. */
struct stat_node {
    struct kg_keystat stat;
    char id[];
};

/* The owner's half of kg_keycache_spend_allow(): its credits and its
 * tier's quota (not the key's own credits). */
bool kg_keycache_owner_allow(const struct kg_keyent *ent, const struct kg_tier *tier, int64_t cost,
                             int64_t now);

/* The id of the key a stat record counts (it lives as long as the cache). */
static inline const char *
kg_keystat_id(const struct kg_keystat *s)
{
    return ((const struct stat_node *)(const void *)s)->id;
}

/* Puts s on its cache's list of records to flush, once (any thread). */
void kg_keycache_mark_dirty(struct kg_keystat *s);

/* The stat record for id, or NULL when no request of this process used
 * the key (and it has no credit limit). Takes stat_mu. */
struct kg_keystat *kg_keycache_stat_find(struct kg_keycache *kc, const char *id);

#endif
