/* server/worker.c - one thread that runs blocking jobs (password hashing,
 * store writes) for the event loops. Owns the thread, its context and a
 * bounded FIFO of intrusive jobs; what a job does is its owner's business. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/worker.h"

struct kg_worker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct kg_job *head, *tail;
    size_t queued, queue_max;
    bool stopping;
    bool init_done;
    enum kg_status init_rc;
    struct kg_err init_err;
    kg_worker_init_fn init;
    kg_worker_fini_fn fini;
    void *arg;
    pthread_t thread;
    bool started;
};

static void *
worker_main(void *p)
{
    struct kg_worker *w = p;
    void *ctx = NULL;
    enum kg_status rc = KG_OK;

    if (w->init != NULL)
        rc = w->init(w->arg, &ctx, &w->init_err);
    pthread_mutex_lock(&w->mu);
    w->init_rc = rc;
    w->init_done = true;
    pthread_cond_broadcast(&w->cv);
    if (rc != KG_OK) {
        pthread_mutex_unlock(&w->mu);
        return NULL;
    }
    for (;;) {
        struct kg_job *job;

        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stopping)
            break; /* what is still queued is cancelled by kg_worker_free() */
        job = w->head;
        w->head = job->next;
        if (w->head == NULL)
            w->tail = NULL;
        w->queued--;
        pthread_mutex_unlock(&w->mu);
        job->next = NULL;
        job->run(job, ctx);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    if (w->fini != NULL)
        w->fini(ctx);
    return NULL;
}

enum kg_status
kg_worker_new(size_t queue_max, kg_worker_init_fn init, kg_worker_fini_fn fini, void *arg,
              struct kg_worker **out, struct kg_err *err)
{
    struct kg_worker *w = calloc(1, sizeof(*w));
    enum kg_status rc;
    int e;

    *out = NULL;
    if (w == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->queue_max = queue_max > 0 ? queue_max : 1;
    w->init = init;
    w->fini = fini;
    w->arg = arg;
    e = pthread_create(&w->thread, NULL, worker_main, w);
    if (e != 0) {
        kg_worker_free(w);
        return kg_err_set(err, KG_EIO, "cannot start worker thread: %s", strerror(e));
    }
    w->started = true;
    pthread_mutex_lock(&w->mu);
    while (!w->init_done)
        pthread_cond_wait(&w->cv, &w->mu);
    rc = w->init_rc;
    pthread_mutex_unlock(&w->mu);
    if (rc != KG_OK) {
        if (err != NULL)
            *err = w->init_err;
        kg_worker_free(w);
        return rc;
    }
    *out = w;
    return KG_OK;
}

enum kg_status
kg_worker_submit(struct kg_worker *w, struct kg_job *job)
{
    enum kg_status rc = KG_OK;

    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        rc = KG_EIO;
    } else if (w->queued >= w->queue_max) {
        rc = KG_ELIMIT;
    } else {
        job->next = NULL;
        if (w->tail != NULL)
            w->tail->next = job;
        else
            w->head = job;
        w->tail = job;
        w->queued++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void
kg_worker_stop(struct kg_worker *w)
{
    struct kg_job *job;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->started) {
        pthread_join(w->thread, NULL);
        w->started = false;
    }
    /* The thread is gone and submit refuses: nobody else touches the queue. */
    pthread_mutex_lock(&w->mu);
    job = w->head;
    w->head = w->tail = NULL;
    w->queued = 0;
    pthread_mutex_unlock(&w->mu);
    while (job != NULL) {
        struct kg_job *next = job->next;

        job->next = NULL;
        job->cancel(job);
        job = next;
    }
}

void
kg_worker_free(struct kg_worker *w)
{
    if (w == NULL)
        return;
    kg_worker_stop(w);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
