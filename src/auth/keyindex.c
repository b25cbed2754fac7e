/* auth/keyindex.c - see keygate/keyindex.h. Owns the slot array, the
 * generations and the retired lists; knows nothing of what an entry means
 * beyond its digest. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/keycache.h"
#include "keygate/keyindex.h"

struct slots {
    size_t cap; /* a power of two */
    _Atomic(struct kg_keyent *) s[];
};

struct kg_keysnap {
    _Atomic long refs;
    struct kg_keyindex *ix;
    struct kg_keysnap *next; /* the generation after this one: one reference, dropped at free */
    void **retired;          /* freed with this generation */
    size_t nretired;
};

struct kg_keyindex {
    pthread_mutex_t swap_mu; /* held only for the pointer read + reference increment */
    struct kg_keysnap *cur;
    struct slots *_Atomic slots;
    _Atomic size_t n;
    size_t tombs;
    _Atomic int64_t synced_ms;
    void (*drop)(struct kg_keyent *); /* frees an entry */
    /* Retired since the last publish (writer only). */
    void **pending;
    size_t npending, pending_cap;
};

/* A removed slot: probing goes on past it. Never dereferenced. */
static struct kg_keyent tomb_ent;
#define TOMB (&tomb_ent)

static uint64_t
digest_hash(const unsigned char *d)
{
    uint64_t h;

    /* The digest is already a keyed hash: its first bytes are uniform. */
    memcpy(&h, d, sizeof(h));
    return h;
}

static struct slots *
slots_new(size_t cap)
{
    struct slots *s = calloc(1, sizeof(*s) + cap * sizeof(s->s[0]));

    if (s != NULL)
        s->cap = cap;
    return s;
}

static struct kg_keysnap *
gen_new(struct kg_keyindex *ix)
{
    struct kg_keysnap *g = calloc(1, sizeof(*g));

    if (g != NULL) {
        g->refs = 1;
        g->ix = ix;
    }
    return g;
}

enum kg_status
kg_keyindex_new(void (*drop)(struct kg_keyent *), struct kg_keyindex **out)
{
    struct kg_keyindex *ix = calloc(1, sizeof(*ix));

    *out = NULL;
    if (ix == NULL)
        return KG_ENOMEM;
    ix->cur = gen_new(ix);
    ix->slots = slots_new(16);
    if (ix->cur == NULL || ix->slots == NULL) {
        free(ix->cur);
        free(ix->slots);
        free(ix);
        return KG_ENOMEM;
    }
    ix->drop = drop;
    pthread_mutex_init(&ix->swap_mu, NULL);
    *out = ix;
    return KG_OK;
}

/* Retired entries are tagged in the low bit (they are at least 8-byte
 * aligned), to be freed through ix->drop; slot arrays are not. */
#define ENT_TAG ((uintptr_t)1)

static void
free_list(struct kg_keyindex *ix, void **list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uintptr_t p = (uintptr_t)list[i];

        if ((p & ENT_TAG) != 0)
            ix->drop((struct kg_keyent *)(p & ~ENT_TAG));
        else
            free(list[i]);
    }
    free(list);
}

void
kg_keyindex_release(const struct kg_keysnap *csnap)
{
    struct kg_keysnap *g = (struct kg_keysnap *)csnap;

    /* Freeing a generation drops its hold on the next one: a loop, not
     * recursion, since a long-held reader can leave a long chain. */
    while (g != NULL && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
        struct kg_keysnap *next = g->next;

        free_list(g->ix, g->retired, g->nretired);
        free(g);
        g = next;
    }
}

void
kg_keyindex_free(struct kg_keyindex *ix)
{
    struct slots *s;

    if (ix == NULL)
        return;
    kg_keyindex_release(ix->cur);
    free_list(ix, ix->pending, ix->npending);
    s = atomic_load(&ix->slots);
    for (size_t i = 0; i < s->cap; i++) {
        struct kg_keyent *e = atomic_load_explicit(&s->s[i], memory_order_relaxed);

        if (e != NULL && e != TOMB)
            ix->drop(e);
    }
    free(s);
    pthread_mutex_destroy(&ix->swap_mu);
    free(ix);
}

const struct kg_keysnap *
kg_keyindex_acquire(struct kg_keyindex *ix)
{
    struct kg_keysnap *g;

    pthread_mutex_lock(&ix->swap_mu);
    g = ix->cur;
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&ix->swap_mu);
    return g;
}

/* The slot holding digest in s, or the NULL slot ending its probe. */
static size_t
probe(const struct slots *s, const unsigned char *digest, bool *found)
{
    size_t mask = s->cap - 1;

    for (size_t i = digest_hash(digest) & mask;; i = (i + 1) & mask) {
        struct kg_keyent *e = atomic_load_explicit(&s->s[i], memory_order_acquire);

        if (e == NULL) {
            *found = false;
            return i;
        }
        if (e != TOMB && sodium_memcmp(e->digest, digest, KG_DIGEST_BYTES) == 0) {
            *found = true;
            return i;
        }
    }
}

const struct kg_keyent *
kg_keysnap_find(const struct kg_keysnap *snap, const unsigned char digest[KG_DIGEST_BYTES])
{
    /* The slot array of now, whichever generation is held: an array
     * retired since stays valid while the generation is held. */
    const struct slots *s = atomic_load_explicit(&snap->ix->slots, memory_order_acquire);
    bool found;
    size_t i = probe(s, digest, &found);

    return found ? atomic_load_explicit(&s->s[i], memory_order_acquire) : NULL;
}

size_t
kg_keysnap_count(const struct kg_keysnap *snap)
{
    return kg_keyindex_count(snap->ix);
}

int64_t
kg_keysnap_built_ms(const struct kg_keysnap *snap)
{
    return atomic_load_explicit(&snap->ix->synced_ms, memory_order_relaxed);
}

size_t
kg_keyindex_count(const struct kg_keyindex *ix)
{
    return atomic_load_explicit(&ix->n, memory_order_relaxed);
}

const struct kg_keyent *
kg_keyindex_get(const struct kg_keyindex *ix, const unsigned char digest[KG_DIGEST_BYTES])
{
    const struct slots *s = atomic_load_explicit(&ix->slots, memory_order_relaxed);
    bool found;
    size_t i = probe(s, digest, &found);

    return found ? atomic_load_explicit(&s->s[i], memory_order_relaxed) : NULL;
}

/* Room for one more retired pointer, made before anything changes: an
 * entry taken out of the table must be listed, or it could never be freed. */
static bool
retire_room(struct kg_keyindex *ix)
{
    size_t ncap;
    void **np;

    if (ix->npending < ix->pending_cap)
        return true;
    ncap = ix->pending_cap > 0 ? ix->pending_cap * 2 : 64;
    np = realloc(ix->pending, ncap * sizeof(*np));
    if (np == NULL)
        return false;
    ix->pending = np;
    ix->pending_cap = ncap;
    return true;
}

/* After retire_room(). */
static void
retire(struct kg_keyindex *ix, void *p)
{
    ix->pending[ix->npending++] = p;
}

/* Moves every entry into a fresh array at most half full; the old array is
 * retired (readers may be probing it). */
static enum kg_status
regrow(struct kg_keyindex *ix, size_t want)
{
    struct slots *old = atomic_load_explicit(&ix->slots, memory_order_relaxed), *s;
    size_t cap = 16;

    while (cap < want * 2)
        cap *= 2;
    if (!retire_room(ix))
        return KG_ENOMEM;
    s = slots_new(cap);
    if (s == NULL)
        return KG_ENOMEM;
    retire(ix, old);
    for (size_t i = 0; i < old->cap; i++) {
        struct kg_keyent *e = atomic_load_explicit(&old->s[i], memory_order_relaxed);
        size_t j;

        if (e == NULL || e == TOMB)
            continue;
        for (j = digest_hash(e->digest) & (cap - 1); s->s[j] != NULL; j = (j + 1) & (cap - 1)) {
        }
        atomic_store_explicit(&s->s[j], e, memory_order_relaxed);
    }
    ix->tombs = 0;
    atomic_store_explicit(&ix->slots, s, memory_order_release);
    return KG_OK;
}

enum kg_status
kg_keyindex_reserve(struct kg_keyindex *ix, size_t n)
{
    struct slots *s = atomic_load_explicit(&ix->slots, memory_order_relaxed);

    if ((n + ix->tombs + 1) * 4 <= s->cap * 3)
        return KG_OK;
    /* regrow() keeps the table at most half full: room for n. */
    return regrow(ix, n);
}

enum kg_status
kg_keyindex_put(struct kg_keyindex *ix, struct kg_keyent *ent)
{
    struct slots *s = atomic_load_explicit(&ix->slots, memory_order_relaxed);
    size_t n = atomic_load_explicit(&ix->n, memory_order_relaxed), i, mask, tomb = SIZE_MAX;
    struct kg_keyent *e;

    /* At most three quarters used, tombstones included, so that a probe
     * always meets an empty slot. */
    if ((n + ix->tombs + 1) * 4 > s->cap * 3) {
        if (regrow(ix, n + 1) != KG_OK) {
            ix->drop(ent);
            return KG_ENOMEM;
        }
        s = atomic_load_explicit(&ix->slots, memory_order_relaxed);
    }
    mask = s->cap - 1;
    for (i = digest_hash(ent->digest) & mask;; i = (i + 1) & mask) {
        e = atomic_load_explicit(&s->s[i], memory_order_relaxed);
        if (e == NULL)
            break;
        if (e == TOMB) {
            if (tomb == SIZE_MAX)
                tomb = i;
            continue;
        }
        if (memcmp(e->digest, ent->digest, KG_DIGEST_BYTES) == 0) {
            if (!retire_room(ix)) {
                ix->drop(ent);
                return KG_ENOMEM;
            }
            retire(ix, (void *)((uintptr_t)e | ENT_TAG));
            atomic_store_explicit(&s->s[i], ent, memory_order_release);
            return KG_OK;
        }
    }
    if (tomb != SIZE_MAX) {
        i = tomb;
        ix->tombs--;
    }
    atomic_store_explicit(&s->s[i], ent, memory_order_release);
    atomic_store_explicit(&ix->n, n + 1, memory_order_relaxed);
    return KG_OK;
}

/* After retire_room(): the entry is freed once no reader can hold it. */
static void
remove_at(struct kg_keyindex *ix, struct slots *s, size_t i)
{
    struct kg_keyent *e = atomic_load_explicit(&s->s[i], memory_order_relaxed);

    atomic_store_explicit(&s->s[i], TOMB, memory_order_release);
    ix->tombs++;
    atomic_fetch_sub_explicit(&ix->n, 1, memory_order_relaxed);
    retire(ix, (void *)((uintptr_t)e | ENT_TAG));
}

enum kg_status
kg_keyindex_remove(struct kg_keyindex *ix, const unsigned char digest[KG_DIGEST_BYTES])
{
    struct slots *s = atomic_load_explicit(&ix->slots, memory_order_relaxed);
    bool found;
    size_t i = probe(s, digest, &found);

    if (!found)
        return KG_OK;
    if (!retire_room(ix))
        return KG_ENOMEM;
    remove_at(ix, s, i);
    return KG_OK;
}

enum kg_status
kg_keyindex_sweep(struct kg_keyindex *ix, bool (*keep)(const struct kg_keyent *, void *), void *ctx)
{
    struct slots *s = atomic_load_explicit(&ix->slots, memory_order_relaxed);

    for (size_t i = 0; i < s->cap; i++) {
        struct kg_keyent *e = atomic_load_explicit(&s->s[i], memory_order_relaxed);

        if (e != NULL && e != TOMB && !keep(e, ctx)) {
            if (!retire_room(ix))
                return KG_ENOMEM;
            remove_at(ix, s, i);
        }
    }
    return KG_OK;
}

void
kg_keyindex_publish(struct kg_keyindex *ix, int64_t synced_ms)
{
    struct kg_keysnap *old, *g;

    if (synced_ms > 0)
        atomic_store_explicit(&ix->synced_ms, synced_ms, memory_order_relaxed);
    if (ix->npending == 0)
        return;
    g = gen_new(ix);
    if (g == NULL)
        return;  /* kept pending: the next publish hands them over */
    g->refs = 2; /* the index's, and the previous generation's hold */
    pthread_mutex_lock(&ix->swap_mu);
    old = ix->cur;
    old->retired = ix->pending;
    old->nretired = ix->npending;
    old->next = g;
    ix->cur = g;
    pthread_mutex_unlock(&ix->swap_mu);
    ix->pending = NULL;
    ix->npending = ix->pending_cap = 0;
    kg_keyindex_release(old);
}
