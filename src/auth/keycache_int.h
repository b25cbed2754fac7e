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

/* A chunk of stat records (see struct kg_keycache). */
#define ARENA_CHUNK ((size_t)1 << 20)
struct arena_chunk {
    struct arena_chunk *next;
    _Alignas(max_align_t) unsigned char mem[ARENA_CHUNK];
};

struct kg_keycache {
    struct kg_keyindex *ix;
    pthread_mutex_t load_mu;  /* serialises loads, syncs, flushes and the stat maps */
    int64_t seq;              /* the last change log row applied; -1 = never loaded */
    uint32_t epoch;           /* stamped on entries by a full load, to sweep the rest */
    struct stat_node **stats; /* open addressing by id; NULL = empty slot */
    size_t nstats, stats_cap;
    struct user_slot *ustats;         /* the same, by user id */
    struct kg_keystat *_Atomic dirty; /* records used since the last flush (a stack) */
    /* Stat records are never freed before the cache: they are carved from
     * chunks, with no allocator header or call per key. */
    struct arena_chunk *chunks;
    size_t chunk_used;
    size_t nustats, ustats_cap;
    struct scopeset **sets; /* interned lists, chained by hash */
    size_t nsets, sets_cap;
    _Atomic size_t sets_dead; /* lists whose last entry went since the last reap */
    /* Entries are carved from the chunks too (no allocator call or header
     * per key); a dropped one is pushed on ent_free from any thread, and
     * the writer takes that stack whole into ent_spare to reuse. */
    struct ent_free *_Atomic ent_free;
    struct ent_free *ent_spare;
    /* Rate-limit buckets by key id and user id, handed in by the daemon
     * (not owned): named by id, never by entry, they outlive every change. */
    struct kg_limiter *limiter;
    /* IP allowlists by key id, only for keys that have one (issue 18). */
    struct kg_ipallow *allow;
};

/* A stat record and its key id, in one allocation that lives as long as
 * the cache (entries borrow the id from here). The map's slot is only a
 * pointer to it; the hash is kept here, so growing the map never reads an
 * id again (at 1,000,000 keys that is a cache miss each). */
struct stat_node {
    struct kg_keystat stat;
    uint64_t hash;
    char id[];
};

/* Puts s on its cache's list of records to flush, once (any thread). */
void kg_keycache_mark_dirty(struct kg_keystat *s);

/* The stat record for id, or NULL when this process never loaded the key.
 * Caller holds load_mu. */
struct kg_keystat *kg_keycache_stat_find(const struct kg_keycache *kc, const char *id);

#endif
