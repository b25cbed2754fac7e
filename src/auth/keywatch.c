/* auth/keywatch.c - see keygate/keywatch.h. The watch thread is a
 * kg_worker whose context is its own store handle; the change listener a
 * thread of its own, blocked in the store's wait for a notification. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keygate/keywatch.h"
#include "keygate/log.h"
#include "keygate/timeutil.h"
#include "keygate/worker.h"

#define BACKOFF_MS 1000
/* Questions waiting for the thread; more are refused (the request gets
 * what the cache says), so a burst cannot pile up suspended requests. */
#define QUEUE_MAX 16

struct kg_keywatch {
    struct kg_keycache *kc;
    char *database;
    struct kg_worker *thread;
    int64_t interval_ms;
    _Atomic int64_t next_ms; /* no question before this (monotonic ms) */
};

struct ask {
    struct kg_job job; /* first: the worker hands this pointer back */
    struct kg_keywatch *w;
    unsigned char digest[KG_DIGEST_BYTES];
    int64_t now_ms;
    kg_keywatch_done_fn done;
    void *arg;
};

static enum kg_status
open_store(void *arg, void **ctx, struct kg_err *err)
{
    struct kg_keywatch *w = arg;
    struct kg_store *st = NULL;
    enum kg_status rc = kg_store_open(w->database, &st, err);

    *ctx = st;
    return rc;
}

static void
close_store(void *ctx)
{
    kg_store_close(ctx);
}

enum kg_status
kg_keywatch_new(const char *database, struct kg_keycache *kc, int64_t interval_ms,
                struct kg_keywatch **out, struct kg_err *err)
{
    struct kg_keywatch *w = calloc(1, sizeof(*w));
    enum kg_status rc;

    *out = NULL;
    if (w == NULL || (w->database = strdup(database)) == NULL) {
        free(w);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    w->kc = kc;
    w->interval_ms = interval_ms;
    rc = kg_worker_new(QUEUE_MAX, open_store, close_store, w, &w->thread, err);
    if (rc != KG_OK) {
        free(w->database);
        free(w);
        return rc;
    }
    *out = w;
    return KG_OK;
}

void
kg_keywatch_stop(struct kg_keywatch *w)
{
    if (w != NULL)
        kg_worker_stop(w->thread);
}

void
kg_keywatch_free(struct kg_keywatch *w)
{
    if (w == NULL)
        return;
    kg_worker_free(w->thread);
    free(w->database);
    free(w);
}

bool
kg_keywatch_due(const struct kg_keywatch *w, int64_t now_ms)
{
    return w != NULL && now_ms >= atomic_load_explicit(&w->next_ms, memory_order_relaxed);
}

/* Takes the interval's one question; false when another thread has it. */
static bool
claim(struct kg_keywatch *w, int64_t now_ms)
{
    int64_t next = atomic_load_explicit(&w->next_ms, memory_order_relaxed);

    return now_ms >= next &&
           atomic_compare_exchange_strong_explicit(&w->next_ms, &next, now_ms + w->interval_ms,
                                                   memory_order_relaxed, memory_order_relaxed);
}

/* The question itself, on a thread that may block: whether the cache holds
 * digest after looking it up in st and, if stored, syncing. */
static bool
answer(struct kg_keywatch *w, struct kg_store *st, const unsigned char *digest, int64_t now_ms,
       int64_t now)
{
    struct kg_err err = {{0}};
    const struct kg_keysnap *snap;
    bool known = false, cached;

    if (kg_store_key_known(st, digest, now, &known, &err) != KG_OK) {
        kg_log_warnx("looking up an unknown key: %s", err.msg);
        atomic_store_explicit(&w->next_ms, now_ms + BACKOFF_MS, memory_order_relaxed);
        return false;
    }
    if (!known)
        return false;
    if (kg_keycache_sync(w->kc, st, now, NULL, &err) != KG_OK) {
        kg_log_warnx("applying key changes for a key created elsewhere: %s", err.msg);
        atomic_store_explicit(&w->next_ms, now_ms + BACKOFF_MS, memory_order_relaxed);
        return false;
    }
    snap = kg_keycache_acquire(w->kc);
    cached = kg_keysnap_find(snap, digest) != NULL;
    kg_keycache_release(snap);
    /* Stored but still left out (a disabled user or tenant): asking again at
     * once would sync for every request that key sends. */
    if (!cached)
        atomic_store_explicit(&w->next_ms, now_ms + BACKOFF_MS, memory_order_relaxed);
    return cached;
}

static void
ask_run(struct kg_job *job, void *thread_ctx)
{
    struct ask *a = (struct ask *)job;
    bool known =
        thread_ctx != NULL && answer(a->w, thread_ctx, a->digest, kg_time_mono_ms(), kg_time_now());

    a->done(a->arg, known);
    free(a);
}

static void
ask_cancel(struct kg_job *job)
{
    struct ask *a = (struct ask *)job;

    a->done(a->arg, false);
    free(a);
}

bool
kg_keywatch_ask(struct kg_keywatch *w, const unsigned char digest[KG_DIGEST_BYTES], int64_t now_ms,
                kg_keywatch_done_fn done, void *arg)
{
    struct ask *a;

    if (w == NULL || !claim(w, now_ms))
        return false;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return false;
    a->job.run = ask_run;
    a->job.cancel = ask_cancel;
    a->w = w;
    memcpy(a->digest, digest, KG_DIGEST_BYTES);
    a->now_ms = now_ms;
    a->done = done;
    a->arg = arg;
    if (kg_worker_submit(w->thread, &a->job) != KG_OK) {
        free(a);
        return false;
    }
    return true;
}

bool
kg_keywatch_recheck(struct kg_keywatch *w, struct kg_store *st,
                    const unsigned char digest[KG_DIGEST_BYTES], int64_t now_ms, int64_t now)
{
    if (w == NULL || st == NULL || !claim(w, now_ms))
        return false;
    return answer(w, st, digest, now_ms, now);
}

/* ---- change notifications ---- */

/* How long one wait lasts: the longest a stop waits for the thread. */
#define LISTEN_WAIT_MS 250

struct kg_keylisten {
    pthread_t thread;
    struct kg_store *st;
    kg_keylisten_wake_fn wake;
    void *arg;
    _Atomic bool stop;
};

static void *
listen_run(void *p)
{
    struct kg_keylisten *l = p;
    bool down = false;

    while (!atomic_load(&l->stop)) {
        struct kg_err err = {{0}};
        bool woke = false;

        if (kg_store_wait_change(l->st, LISTEN_WAIT_MS, &woke, &err) != KG_OK) {
            /* The main thread's poll reports the outage; wait and try
             * again (the next wait reconnects and listens again). */
            if (!down)
                kg_log_debug("change notifications paused: %s", err.msg);
            down = true;
            for (int i = 0; i < BACKOFF_MS / 50 && !atomic_load(&l->stop); i++)
                nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
            continue;
        }
        down = false;
        if (woke)
            l->wake(l->arg);
    }
    return NULL;
}

enum kg_status
kg_keylisten_new(const char *database, kg_keylisten_wake_fn wake, void *arg,
                 struct kg_keylisten **out, struct kg_err *err)
{
    struct kg_keylisten *l = calloc(1, sizeof(*l));
    enum kg_status rc;
    bool woke = false;

    *out = NULL;
    if (l == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    l->wake = wake;
    l->arg = arg;
    rc = kg_store_open(database, &l->st, err);
    /* The first wait only starts listening: it tells whether the store
     * notifies at all. */
    if (rc == KG_OK)
        rc = kg_store_wait_change(l->st, 0, &woke, err);
    if (rc == KG_EINVAL) {
        kg_store_close(l->st);
        free(l);
        return KG_OK;
    }
    if (rc == KG_OK && pthread_create(&l->thread, NULL, listen_run, l) != 0)
        rc = kg_err_set(err, KG_ENOMEM, "cannot start the change listener thread");
    if (rc != KG_OK) {
        kg_store_close(l->st);
        free(l);
        return rc;
    }
    *out = l;
    return KG_OK;
}

void
kg_keylisten_free(struct kg_keylisten *l)
{
    if (l == NULL)
        return;
    atomic_store(&l->stop, true);
    pthread_join(l->thread, NULL);
    kg_store_close(l->st);
    free(l);
}
