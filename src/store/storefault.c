/* store/storefault.c - the daemon's record of whether the store takes
 * writes (keygate/storefault.h): a flag and the words of the latest
 * failure under one mutex, and the failure counter in obs/metrics.c. It
 * does not talk to the store: the main thread probes (daemon/serve.c).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/metrics.h"
#include "keygate/storefault.h"

struct kg_storefault {
    pthread_mutex_t mu;
    _Atomic bool faulted; /* read without the mutex on every /readyz */
    char reason[128];
};

struct kg_storefault *
kg_storefault_new(void)
{
    struct kg_storefault *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        free(f);
        return NULL;
    }
    return f;
}

void
kg_storefault_free(struct kg_storefault *f)
{
    if (f == NULL)
        return;
    pthread_mutex_destroy(&f->mu);
    free(f);
}

bool
kg_storefault_is_store(enum kg_status rc)
{
    return rc == KG_EIO || rc == KG_ECORRUPT;
}

void
kg_storefault_fail(struct kg_storefault *f, enum kg_status rc, const char *words)
{
    const char *tail;

    kg_metrics_store_error();
    if (f == NULL || !kg_storefault_is_store(rc))
        return;
    /* "PATH: what: SQLite's words": the words say what is wrong, the
     * path is the operator's own and already in the log. */
    tail = words != NULL ? strrchr(words, ':') : NULL;
    tail = tail != NULL ? tail + 1 : (words != NULL ? words : kg_status_str(rc));
    while (*tail == ' ')
        tail++;
    pthread_mutex_lock(&f->mu);
    snprintf(f->reason, sizeof(f->reason), "%s", *tail != '\0' ? tail : kg_status_str(rc));
    atomic_store(&f->faulted, true);
    pthread_mutex_unlock(&f->mu);
}

bool
kg_storefault_clear(struct kg_storefault *f)
{
    bool was;

    if (f == NULL || !atomic_load(&f->faulted))
        return false;
    pthread_mutex_lock(&f->mu);
    was = atomic_exchange(&f->faulted, false);
    f->reason[0] = '\0';
    pthread_mutex_unlock(&f->mu);
    return was;
}

bool
kg_storefault_active(struct kg_storefault *f, char *reason, size_t cap)
{
    bool on;

    if (f == NULL || !atomic_load(&f->faulted))
        return false;
    pthread_mutex_lock(&f->mu);
    on = atomic_load(&f->faulted);
    if (on && reason != NULL && cap > 0)
        snprintf(reason, cap, "%s", f->reason);
    pthread_mutex_unlock(&f->mu);
    return on;
}
