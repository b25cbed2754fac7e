/* tests/unit/server/test_worker.c - src/server/worker.c through keygate/worker.h.
 *
 * Jobs run in order on the worker thread with its context; a full queue
 * refuses; stopping cancels what is still queued; a failing init fails the
 * start with its words. Waits are bounded by condition variables that the
 * jobs themselves signal, never by sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/worker.h"

struct ctx {
    int value;
    int *fini_calls;
};

static enum kg_status
init_ok(void *arg, void **thread_ctx, struct kg_err *err)
{
    struct ctx *c = calloc(1, sizeof(*c));

    (void)err;
    if (c == NULL)
        return KG_ENOMEM;
    c->value = 42;
    c->fini_calls = arg;
    *thread_ctx = c;
    return KG_OK;
}

static void
fini_ok(void *thread_ctx)
{
    struct ctx *c = thread_ctx;

    (*c->fini_calls)++;
    free(c);
}

static enum kg_status
init_fails(void *arg, void **thread_ctx, struct kg_err *err)
{
    (void)arg;
    (void)thread_ctx;
    return kg_err_set(err, KG_EIO, "cannot open the store");
}

/* A job that records its turn and can be made to wait for a gate. */
struct tjob {
    struct kg_job job;
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    bool *gate_open; /* NULL: do not wait */
    int *order;
    int *next_turn;
    int turn;
    int seen_ctx;
    bool started, ran, cancelled;
};

static void
tjob_run(struct kg_job *job, void *thread_ctx)
{
    struct tjob *t = (struct tjob *)job;

    pthread_mutex_lock(t->mu);
    t->started = true;
    pthread_cond_broadcast(t->cv);
    while (t->gate_open != NULL && !*t->gate_open)
        pthread_cond_wait(t->cv, t->mu);
    t->seen_ctx = thread_ctx != NULL ? ((struct ctx *)thread_ctx)->value : -1;
    t->turn = (*t->next_turn)++;
    t->ran = true;
    pthread_cond_broadcast(t->cv);
    pthread_mutex_unlock(t->mu);
}

static void
tjob_cancel(struct kg_job *job)
{
    ((struct tjob *)job)->cancelled = true;
}

static void
wait_ran(struct tjob *t)
{
    pthread_mutex_lock(t->mu);
    while (!t->ran)
        pthread_cond_wait(t->cv, t->mu);
    pthread_mutex_unlock(t->mu);
}

static void
test_jobs_run_in_order_with_the_thread_context(void **state)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    struct kg_worker *w = NULL;
    struct kg_err err = {{0}};
    struct tjob jobs[5];
    int next_turn = 0, fini_calls = 0;

    (void)state;
    assert_int_equal(kg_worker_new(8, init_ok, fini_ok, &fini_calls, &w, &err), KG_OK);
    for (int i = 0; i < 5; i++) {
        jobs[i] = (struct tjob){.job = {.run = tjob_run, .cancel = tjob_cancel},
                                .mu = &mu,
                                .cv = &cv,
                                .next_turn = &next_turn};
        assert_int_equal(kg_worker_submit(w, &jobs[i].job), KG_OK);
    }
    for (int i = 0; i < 5; i++) {
        wait_ran(&jobs[i]);
        assert_int_equal(jobs[i].turn, i);
        assert_int_equal(jobs[i].seen_ctx, 42);
        assert_false(jobs[i].cancelled);
    }
    kg_worker_free(w);
    assert_int_equal(fini_calls, 1);
}

static void
test_a_full_queue_refuses_and_stopping_cancels_the_queued(void **state)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    struct kg_worker *w = NULL;
    struct kg_err err = {{0}};
    struct tjob blocker, queued[2], extra;
    bool gate = false;
    int next_turn = 0;

    (void)state;
    assert_int_equal(kg_worker_new(2, NULL, NULL, NULL, &w, &err), KG_OK);
    blocker = (struct tjob){.job = {.run = tjob_run, .cancel = tjob_cancel},
                            .mu = &mu,
                            .cv = &cv,
                            .gate_open = &gate,
                            .next_turn = &next_turn};
    assert_int_equal(kg_worker_submit(w, &blocker.job), KG_OK);
    /* Wait until the worker holds the blocker (off the queue, at the gate). */
    pthread_mutex_lock(&mu);
    while (!blocker.started)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 2; i++) {
        queued[i] = (struct tjob){.job = {.run = tjob_run, .cancel = tjob_cancel},
                                  .mu = &mu,
                                  .cv = &cv,
                                  .next_turn = &next_turn};
        assert_int_equal(kg_worker_submit(w, &queued[i].job), KG_OK);
    }
    extra = (struct tjob){.job = {.run = tjob_run, .cancel = tjob_cancel}};
    assert_int_equal(kg_worker_submit(w, &extra.job), KG_ELIMIT);
    /* Stop while the blocker still waits: the two queued jobs can only be
     * cancelled, unless the worker got to them between the gate opening
     * and the stop; either way each ends exactly one way. */
    pthread_mutex_lock(&mu);
    gate = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    kg_worker_free(w);
    assert_true(blocker.ran);
    for (int i = 0; i < 2; i++)
        assert_true(queued[i].ran != queued[i].cancelled);
    assert_false(extra.ran || extra.cancelled);
}

static void
test_a_failing_init_fails_the_start_with_its_words(void **state)
{
    struct kg_worker *w = NULL;
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(kg_worker_new(4, init_fails, NULL, NULL, &w, &err), KG_EIO);
    assert_null(w);
    assert_string_equal(err.msg, "cannot open the store");
    kg_worker_free(NULL);
}

static void
test_a_stopped_worker_refuses_new_jobs_until_freed(void **state)
{
    struct kg_worker *w = NULL;
    struct kg_err err = {{0}};
    struct tjob late = {.job = {.run = tjob_run, .cancel = tjob_cancel}};

    (void)state;
    assert_int_equal(kg_worker_new(4, NULL, NULL, NULL, &w, &err), KG_OK);
    kg_worker_stop(w);
    kg_worker_stop(w);
    assert_int_equal(kg_worker_submit(w, &late.job), KG_EIO);
    kg_worker_free(w);
    assert_false(late.ran || late.cancelled);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_in_order_with_the_thread_context),
        cmocka_unit_test(test_a_full_queue_refuses_and_stopping_cancels_the_queued),
        cmocka_unit_test(test_a_failing_init_fails_the_start_with_its_words),
        cmocka_unit_test(test_a_stopped_worker_refuses_new_jobs_until_freed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
