/* keygate/worker.h - a thread for blocking jobs, off the event loops.
 *
 * The request loops must never block: an Argon2id hash takes tens of
 * milliseconds and 64 MiB, a store write waits for fsync. A loop hands such
 * a job to the worker and suspends the client connection; the job's run
 * function does the blocking part on the worker thread and ends by resuming
 * the connection (MHD_resume_connection may be called from any thread).
 *
 * Jobs are intrusive: the caller embeds a struct kg_job in its own request
 * state, which must stay alive until run or cancel has been called (a
 * suspended connection is never completed by libmicrohttpd, so request
 * state lives at least that long). The queue is bounded; the worker thread
 * has its own context (e.g. a store handle), made by an init function on
 * that thread and passed to every job.
 */
#ifndef KEYGATE_WORKER_H
#define KEYGATE_WORKER_H

#include <stddef.h>
#include "keygate/status.h"

struct kg_job;

/* Runs on the worker thread with the thread's context. */
typedef void (*kg_job_run_fn)(struct kg_job *job, void *thread_ctx);
/* Runs instead of run when the worker stops before the job's turn (on the
 * thread calling kg_worker_free()); must end the job's wait the same way,
 * e.g. with a 503 answer and a resume. */
typedef void (*kg_job_cancel_fn)(struct kg_job *job);

struct kg_job {
    kg_job_run_fn run;
    kg_job_cancel_fn cancel;
    struct kg_job *next; /* private: the queue's link */
};

/* Makes the thread's context on the worker thread: KG_OK and *thread_ctx,
 * or an error that makes kg_worker_new() fail with the same words. */
typedef enum kg_status (*kg_worker_init_fn)(void *arg, void **thread_ctx, struct kg_err *err);
/* Frees the thread's context on the worker thread when it stops. */
typedef void (*kg_worker_fini_fn)(void *thread_ctx);

struct kg_worker;

/* Starts one worker thread with a queue of at most queue_max jobs, and waits
 * until init has run on it. init and fini may be NULL (context NULL).
 * Caller owns *out: kg_worker_free(). */
enum kg_status kg_worker_new(size_t queue_max, kg_worker_init_fn init, kg_worker_fini_fn fini,
                             void *arg, struct kg_worker **out, struct kg_err *err);

/* Queues job (run and cancel set by the caller). KG_ELIMIT when the queue
 * is full, KG_EIO when the worker is stopping: the job was not taken and
 * neither function will be called. Any thread. */
enum kg_status kg_worker_submit(struct kg_worker *w, struct kg_job *job);

/* Stops taking jobs (kg_worker_submit() says KG_EIO from now on), lets the
 * running job finish, cancels the queued ones (their cancel functions run
 * on the calling thread) and joins the thread. The worker stays valid for
 * submitters that still hold it until kg_worker_free(). Idempotent; one
 * thread at a time; NULL-safe. */
void kg_worker_stop(struct kg_worker *w);

/* kg_worker_stop(), then frees. No other thread may still use w. NULL-safe. */
void kg_worker_free(struct kg_worker *w);

#endif
