/* auth/keywatch.c - see keygate/keywatch.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "keygate/keywatch.h"
#include "keygate/log.h"
#include "keygate/store.h"

#define BACKOFF_MS 1000
/* How long a loop may wait for a usage flush holding the cache. */
#define LOCK_WAIT_MS 50

struct kg_keywatch {
    pthread_mutex_t mu; /* one lookup at a time; the store handle is not shared */
    struct kg_store *st;
    struct kg_keycache *kc;
    int64_t interval_ms;
    _Atomic int64_t next_ms; /* no lookup before this (monotonic ms) */
};

enum kg_status
kg_keywatch_new(const char *database, struct kg_keycache *kc, int64_t interval_ms,
                struct kg_keywatch **out, struct kg_err *err)
{
    struct kg_keywatch *w = calloc(1, sizeof(*w));
    enum kg_status rc;

    *out = NULL;
    if (w == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    rc = kg_store_open(database, &w->st, err);
    if (rc != KG_OK) {
        free(w);
        return rc;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->kc = kc;
    w->interval_ms = interval_ms;
    *out = w;
    return KG_OK;
}

void
kg_keywatch_free(struct kg_keywatch *w)
{
    if (w == NULL)
        return;
    kg_store_close(w->st);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

bool
kg_keywatch_recheck(struct kg_keywatch *w, const unsigned char digest[KG_DIGEST_BYTES],
                    int64_t now_ms, int64_t now)
{
    struct kg_err err = {{0}};
    const struct kg_keysnap *snap;
    enum kg_status rc;
    bool known = false, reloaded = false;

    if (w == NULL || now_ms < atomic_load_explicit(&w->next_ms, memory_order_relaxed))
        return false;
    if (pthread_mutex_trylock(&w->mu) != 0)
        return false;
    if (now_ms < atomic_load_explicit(&w->next_ms, memory_order_relaxed))
        goto cleanup;
    atomic_store_explicit(&w->next_ms, now_ms + w->interval_ms, memory_order_relaxed);
    if (kg_store_key_known(w->st, digest, now, &known, &err) != KG_OK) {
        kg_log_warnx("looking up an unknown key: %s", err.msg);
        goto cleanup;
    }
    if (!known)
        goto cleanup;
    /* A loop waits at most LOCK_WAIT_MS for a flush (milliseconds); longer,
     * and the main thread's poll (200 ms) picks the key up instead. */
    rc = kg_keycache_try_reload(w->kc, w->st, now, LOCK_WAIT_MS, &err);
    if (rc != KG_OK) {
        /* Busy: the next interval may try again; failed: back off. */
        if (rc != KG_ECONFLICT)
            atomic_store_explicit(&w->next_ms, now_ms + BACKOFF_MS, memory_order_relaxed);
        kg_log_debug("not reloading keys for a key created elsewhere: %s", err.msg);
        goto cleanup;
    }
    snap = kg_keycache_acquire(w->kc);
    reloaded = kg_keysnap_find(snap, digest) != NULL;
    kg_keycache_release(snap);
    /* Stored but still left out (a disabled user or tenant): asking again at
     * once would reload for every request that key sends. */
    if (!reloaded)
        atomic_store_explicit(&w->next_ms, now_ms + BACKOFF_MS, memory_order_relaxed);
    kg_log_debug("keys reloaded for a key created by another process");
cleanup:
    pthread_mutex_unlock(&w->mu);
    return reloaded;
}
