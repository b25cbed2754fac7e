/* config/cfgswap.c - the running configuration as refcounted snapshots.
 *
 * A snapshot is a struct kg_config moved into a block that also holds its
 * reference count. The config is the block's first member, so a held
 * config pointer is the block's address: release needs no lookup and no
 * lock, and kg_config_free() on it frees the whole block (it frees the
 * members, then the pointer it was given, which is the block). */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "keygate/cfgswap.h"

struct cfgsnap {
    struct kg_config cfg; /* first: &snap->cfg == (void *)snap */
    _Atomic long refs;    /* holders, the swap's own reference included */
};

_Static_assert(offsetof(struct cfgsnap, cfg) == 0, "the config must start the snapshot");

struct kg_cfgswap {
    pthread_mutex_t mu; /* held only for the pointer read + ref increment, and the swap */
    struct cfgsnap *cur;
    unsigned long generation;
};

/* Moves cfg's fields into a new snapshot and frees cfg's own block (the
 * fields now belong to the snapshot). NULL when out of memory: cfg is
 * freed whole. A struct kg_config holds no pointer into itself, so a
 * struct copy moves it. */
static struct cfgsnap *
snap_new(struct kg_config *cfg)
{
    struct cfgsnap *snap = calloc(1, sizeof(*snap));

    if (snap == NULL) {
        kg_config_free(cfg);
        return NULL;
    }
    snap->cfg = *cfg;
    free(cfg);
    atomic_init(&snap->refs, 1);
    return snap;
}

enum kg_status
kg_cfgswap_new(struct kg_config *initial, struct kg_cfgswap **out)
{
    struct kg_cfgswap *sw = calloc(1, sizeof(*sw));

    *out = NULL;
    if (sw == NULL) {
        kg_config_free(initial);
        return KG_ENOMEM;
    }
    sw->cur = snap_new(initial);
    if (sw->cur == NULL) {
        free(sw);
        return KG_ENOMEM;
    }
    pthread_mutex_init(&sw->mu, NULL);
    *out = sw;
    return KG_OK;
}

void
kg_cfgswap_free(struct kg_cfgswap *sw)
{
    if (sw == NULL)
        return;
    kg_cfgswap_release(&sw->cur->cfg);
    pthread_mutex_destroy(&sw->mu);
    free(sw);
}

const struct kg_config *
kg_cfgswap_acquire(struct kg_cfgswap *sw)
{
    struct cfgsnap *snap;

    pthread_mutex_lock(&sw->mu);
    snap = sw->cur;
    /* Relaxed is enough under the mutex: publish swaps under it too, and
     * the config's fields were written before it was first published. */
    atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&sw->mu);
    return &snap->cfg;
}

void
kg_cfgswap_release(const struct kg_config *cfg)
{
    struct cfgsnap *snap = (struct cfgsnap *)(void *)(uintptr_t)cfg;

    if (snap == NULL)
        return;
    /* acq_rel: every holder's reads happen before the last one frees it. */
    if (atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) == 1)
        kg_config_free(&snap->cfg); /* frees the members, then the block itself */
}

enum kg_status
kg_cfgswap_publish(struct kg_cfgswap *sw, struct kg_config *next)
{
    struct cfgsnap *snap = snap_new(next), *old;

    if (snap == NULL)
        return KG_ENOMEM;
    pthread_mutex_lock(&sw->mu);
    old = sw->cur;
    sw->cur = snap;
    sw->generation++;
    pthread_mutex_unlock(&sw->mu);
    kg_cfgswap_release(&old->cfg); /* the swap's reference; holders keep theirs */
    return KG_OK;
}

unsigned long
kg_cfgswap_generation(struct kg_cfgswap *sw)
{
    unsigned long g;

    pthread_mutex_lock(&sw->mu);
    g = sw->generation;
    pthread_mutex_unlock(&sw->mu);
    return g;
}
