/* obs/accesslog.c - the access log's ring and writer thread.
 *
 * The ring is Dmitry Vyukov's bounded MPMC queue used with one consumer:
 * each cell carries a sequence number; a producer claims a position with
 * one CAS on head, fills the record and publishes it by storing pos + 1 in
 * the cell's sequence; the writer takes cells in order and hands them back
 * with pos + capacity. A full ring is seen by a producer as a cell whose
 * sequence lags its position: the record is dropped, never waited for.
 * What a line says and how keys in it are masked is accessfmt.c's. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keygate/accesslog.h"
#include "obs/accesslog_int.h"
#include "keygate/keyfmt.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/timeutil.h"

#define WRITE_EVERY_MS 200 /* lines reach the file at most this late */
#define IDLE_WAIT_MS 50    /* the writer looks at an empty ring this often */
#define BUSY_WAIT_MS 10    /* and lets a busy one fill this long: batches, not a spin */
#define BUF_WRITE_AT (64 * 1024)
/* A destination that takes nothing (a pipe nobody reads) is waited for in
 * POLL_MS steps; once the controller waits for the writer (a switch, the
 * exit) and it has taken nothing for STALL_GIVE_UP_MS, its lines are
 * dropped and counted. kg_accesslog_free() cancels a writer still stuck
 * after FREE_WAIT_S (a write() to a file that never returns). */
#define POLL_MS 100
#define STALL_GIVE_UP_MS 1000
#define SET_DEST_WAIT_MS 2500
#define FREE_WAIT_S 3

struct cell {
    _Atomic size_t seq;
    size_t pos; /* the position the producer claimed; read back by commit */
    struct kg_accesslog_rec rec;
};

/* Where lines go: fd < 0 is off. */
struct dest {
    int fd;
    bool own;   /* a file we opened (and may reopen) */
    bool pipe;  /* not a regular file: polled, written PIPE_BUF at a time */
    char *path; /* for reopen; NULL unless own */
};

struct kg_accesslog {
    /* NULL until the log is first turned on: an idle log costs no memory. */
    struct cell *_Atomic cells;
    size_t mask;
    _Alignas(64) _Atomic size_t head; /* next position a producer claims */
    _Alignas(64) size_t tail;         /* next position the writer takes; writer only */
    _Atomic size_t written;           /* every position below this is written */
    _Atomic bool on;
    _Atomic uint64_t dropped;

    _Atomic bool hurry; /* the controller waits for a switch or the exit */

    pthread_mutex_t mu; /* the fields below, between the controller and the writer */
    pthread_cond_t wake, done;
    pthread_t thread;
    bool started, stop, reopen, sync_req, has_pending;
    struct dest pending;              /* set_dest()'s, until the writer takes it */
    uint64_t switch_req, switch_done; /* set_dest() tickets asked for and served */

    /* Writer only; the writer never writes while holding mu. */
    struct dest cur;
    struct dest taking; /* pending, taken over, until cur is done with (kept here for
                         * kg_accesslog_free should the writer be cancelled meanwhile) */
    int64_t stalled_ms; /* when cur last refused to take anything; 0: it takes lines */

    char *buf; /* formatted lines not yet written; writer only */
    size_t len, cap;
    int64_t last_write_ms;
    bool warned;
    struct kg_al_line line; /* the writer's state between lines */
};

/* ---- destinations ---- */

static void
dest_close(struct dest *d)
{
    if (d->own && d->fd >= 0)
        close(d->fd);
    free(d->path);
    d->fd = -1;
    d->own = false;
    d->path = NULL;
}

static bool
is_pipe_like(int fd)
{
    struct stat st;

    return fstat(fd, &st) != 0 || !S_ISREG(st.st_mode);
}

static enum kg_status
dest_open(const char *spec, struct dest *d, struct kg_err *err)
{
    d->fd = -1;
    d->own = false;
    d->pipe = false;
    d->path = NULL;
    if (spec == NULL || spec[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "access_log wants off, stdout, stderr or a file path");
    if (strcmp(spec, "off") == 0)
        return KG_OK;
    if (strcmp(spec, "stdout") == 0) {
        d->fd = STDOUT_FILENO;
        d->pipe = is_pipe_like(d->fd);
        return KG_OK;
    }
    if (strcmp(spec, "stderr") == 0) {
        d->fd = STDERR_FILENO;
        d->pipe = is_pipe_like(d->fd);
        return KG_OK;
    }
    d->path = strdup(spec);
    if (d->path == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    d->fd = open(spec, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (d->fd < 0) {
        int e = errno;

        free(d->path);
        d->path = NULL;
        return kg_err_set(err, KG_EIO, "access_log %s: %s", spec, strerror(e));
    }
    d->own = true;
    d->pipe = is_pipe_like(d->fd);
    return KG_OK;
}

/* ---- the writer ---- */

/* The lines in buf[off..len) are lost: counted as dropped. */
static void
abandon(struct kg_accesslog *al, size_t off)
{
    const char *p = al->buf + off, *end = al->buf + al->len;

    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        atomic_fetch_add_explicit(&al->dropped, 1, memory_order_relaxed);
        kg_metrics_access_log_dropped();
        p++;
    }
}

/* True when cur has taken nothing for long enough, and it matters. */
static bool
given_up(const struct kg_accesslog *al)
{
    return al->stalled_ms != 0 && atomic_load(&al->hurry) &&
           kg_time_mono_ms() - al->stalled_ms >= STALL_GIVE_UP_MS;
}

/* cur took nothing just now: true when it is time to give up on it. */
static bool
give_up(struct kg_accesslog *al)
{
    if (al->stalled_ms == 0)
        al->stalled_ms = kg_time_mono_ms();
    return given_up(al);
}

/* Cancellation (kg_accesslog_free's last resort) only here, where mu is
 * never held. */
static int
poll_out(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;

    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    r = poll(&p, 1, timeout_ms);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    return r;
}

static ssize_t
write_some(int fd, const char *b, size_t n)
{
    ssize_t r;

    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    r = write(fd, b, n);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    return r;
}

/* A pipe is written only when poll() says it has room, PIPE_BUF at a time,
 * so a reader that stalls never blocks the writer in write(). */
static void
write_out(struct kg_accesslog *al)
{
    size_t off = 0;

    while (off < al->len && al->cur.fd >= 0) {
        size_t want = al->len - off;
        ssize_t n;

        if (al->cur.pipe) {
            /* Given up already: one look, no wait, for each batch. */
            int r = poll_out(al->cur.fd, given_up(al) ? 0 : POLL_MS);

            if (r == 0 || (r < 0 && errno == EINTR)) {
                if (give_up(al))
                    break;
                continue;
            }
            if (want > PIPE_BUF)
                want = PIPE_BUF;
        }
        n = write_some(al->cur.fd, al->buf + off, want);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (give_up(al))
                break;
            continue;
        }
        if (n <= 0) {
            if (!al->warned)
                kg_log_warn("access log: write failed; lines are lost until it works again");
            al->warned = true;
            break;
        }
        al->warned = false;
        al->stalled_ms = 0;
        off += (size_t)n;
    }
    if (off < al->len && al->stalled_ms != 0) {
        if (!al->warned)
            kg_log_warn("access log: the destination took nothing for %d ms; lines are dropped",
                        STALL_GIVE_UP_MS);
        al->warned = true;
        abandon(al, off);
    }
    al->len = 0;
    al->last_write_ms = kg_time_mono_ms();
}

static bool
buf_reserve(struct kg_accesslog *al, size_t need)
{
    char *nb;
    size_t ncap;

    if (al->cap - al->len >= need)
        return true;
    ncap = al->cap * 2 > al->len + need ? al->cap * 2 : al->len + need;
    nb = realloc(al->buf, ncap);
    if (nb == NULL)
        return false;
    al->buf = nb;
    al->cap = ncap;
    return true;
}

/* One record into the buffer as a line; a line that finds no memory is lost,
 * and counted as dropped like every other lost line. */
static void
append(struct kg_accesslog *al, const struct kg_accesslog_rec *rec, int64_t wall_off_us)
{
    struct kg_al_value v[NFIELDS];

    if (!buf_reserve(al, KG_AL_LINE_MAX)) {
        atomic_fetch_add_explicit(&al->dropped, 1, memory_order_relaxed);
        kg_metrics_access_log_dropped();
        return;
    }
    kg_al_line_values(&al->line, rec, wall_off_us, v);
    al->len += kg_al_line_write(v, al->buf + al->len);
}

/* Takes every committed record; returns how many. */
static size_t
drain(struct kg_accesslog *al)
{
    size_t taken = 0;
    /* Read once per batch: a clock step shows from the next batch on. */
    int64_t wall_off_us = kg_al_wall_offset_us();

    struct cell *cells = atomic_load_explicit(&al->cells, memory_order_acquire);

    for (; cells != NULL;) {
        struct cell *c = &cells[al->tail & al->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);

        if (seq != al->tail + 1)
            break; /* empty, or the next one is still being filled */
        if (al->cur.fd >= 0)
            append(al, &c->rec, wall_off_us);
        atomic_store_explicit(&c->seq, al->tail + al->mask + 1, memory_order_release);
        al->tail++;
        taken++;
        if (al->len >= BUF_WRITE_AT)
            write_out(al);
    }
    return taken;
}

/* Writer, without mu: what the old destination is owed, then next. From
 * off, the ring's records are the new one's. */
static void
switch_to(struct kg_accesslog *al)
{
    if (al->cur.fd >= 0) {
        drain(al);
        write_out(al);
    }
    dest_close(&al->cur);
    al->cur = al->taking;
    al->taking = (struct dest){.fd = -1};
    al->warned = false;
    al->stalled_ms = 0;
}

/* Writer, without mu: the same path again (logrotate renamed the file). */
static void
reopen_file(struct kg_accesslog *al)
{
    int fd;

    if (!al->cur.own)
        return;
    fd = open(al->cur.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    drain(al);
    write_out(al);
    if (fd < 0) {
        kg_log_warn("access log: reopening %s; still writing to the old file", al->cur.path);
        return;
    }
    close(al->cur.fd);
    al->cur.fd = fd;
    al->cur.pipe = is_pipe_like(fd);
    al->warned = false;
    al->stalled_ms = 0;
}

static void
wait_ms(struct kg_accesslog *al, int64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += (time_t)(ms / 1000) + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&al->wake, &al->mu, &ts);
}

static void *
writer_main(void *arg)
{
    struct kg_accesslog *al = arg;

    /* Cancelled only inside write() and poll() (see write_out). */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_setname_np(pthread_self(), "kg-accesslog"); /* for top -H and perf */
    pthread_mutex_lock(&al->mu);
    for (;;) {
        bool stopping, syncing, reopening, switching = al->has_pending;
        uint64_t ticket = al->switch_req;
        size_t got;

        if (switching)
            al->taking = al->pending;
        al->pending = (struct dest){.fd = -1};
        al->has_pending = false;
        reopening = al->reopen;
        al->reopen = false;
        stopping = al->stop;
        syncing = al->sync_req;
        al->sync_req = false;
        pthread_mutex_unlock(&al->mu);

        /* Nothing is written under mu: a stalled destination must never
         * hold up the controlling thread. */
        if (switching)
            switch_to(al);
        if (reopening)
            reopen_file(al);
        got = drain(al);
        if (al->len > 0 &&
            (stopping || syncing || kg_time_mono_ms() - al->last_write_ms >= WRITE_EVERY_MS))
            write_out(al);
        if (al->len == 0)
            atomic_store_explicit(&al->written, al->tail, memory_order_release);

        pthread_mutex_lock(&al->mu);
        if (switching) {
            al->switch_done = ticket;
            if (!al->stop && !al->has_pending)
                atomic_store(&al->hurry, false);
        }
        pthread_cond_broadcast(&al->done);
        if (stopping && got == 0 && al->len == 0 && atomic_load(&al->head) == al->tail)
            break;
        /* Behind (an eighth of the ring in one pass): no pause until caught up. */
        if (!al->stop && !al->sync_req && !al->reopen && !al->has_pending &&
            got <= (al->mask + 1) / 8)
            wait_ms(al, got == 0 ? IDLE_WAIT_MS : BUSY_WAIT_MS);
    }
    pthread_mutex_unlock(&al->mu);
    return NULL;
}

/* ---- the controlling thread's side ---- */

/* The ring, made the first time the log is on (then kept until free). */
static bool
ring_alloc(struct kg_accesslog *al)
{
    struct cell *cells;

    if (atomic_load_explicit(&al->cells, memory_order_acquire) != NULL)
        return true;
    cells = calloc(al->mask + 1, sizeof(*cells));
    if (cells == NULL)
        return false;
    for (size_t i = 0; i <= al->mask; i++)
        atomic_init(&cells[i].seq, i);
    atomic_store_explicit(&al->cells, cells, memory_order_release);
    return true;
}

enum kg_status
kg_accesslog_new(const char *dest, size_t capacity, struct kg_accesslog **out, struct kg_err *err)
{
    struct kg_accesslog *al = NULL;
    pthread_condattr_t ca;
    size_t cap = 1;
    enum kg_status rc;

    *out = NULL;
    if (capacity == 0)
        capacity = KG_ACCESSLOG_RING_DEFAULT;
    while (cap < capacity)
        cap <<= 1;
    al = calloc(1, sizeof(*al));
    if (al == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    al->cur.fd = -1;
    al->pending.fd = -1;
    al->taking.fd = -1;
    al->mask = cap - 1;
    atomic_init(&al->cells, NULL);
    rc = dest_open(dest, &al->cur, err);
    if (rc == KG_OK && al->cur.fd >= 0 && !ring_alloc(al)) {
        dest_close(&al->cur);
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    if (rc != KG_OK) {
        free(al);
        return rc;
    }
    atomic_init(&al->on, al->cur.fd >= 0);
    pthread_mutex_init(&al->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&al->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&al->done, NULL);
    al->last_write_ms = kg_time_mono_ms();
    if (pthread_create(&al->thread, NULL, writer_main, al) != 0) {
        kg_accesslog_free(al);
        return kg_err_set(err, KG_EIO, "access log: cannot start its writer thread");
    }
    al->started = true;
    *out = al;
    return KG_OK;
}

bool
kg_accesslog_enabled(const struct kg_accesslog *al)
{
    return al != NULL && atomic_load_explicit(&al->on, memory_order_acquire);
}

struct kg_accesslog_rec *
kg_accesslog_reserve(struct kg_accesslog *al)
{
    struct cell *cells;
    size_t pos;

    if (!kg_accesslog_enabled(al))
        return NULL;
    cells = atomic_load_explicit(&al->cells, memory_order_acquire);
    if (cells == NULL)
        return NULL; /* not reached: the ring exists before the log is on */
    pos = atomic_load_explicit(&al->head, memory_order_relaxed);
    for (;;) {
        struct cell *c = &cells[pos & al->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        ptrdiff_t dif = (ptrdiff_t)(seq - pos);

        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&al->head, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                c->pos = pos;
                return &c->rec;
            }
        } else if (dif < 0) {
            /* The writer has not freed this cell yet: full. */
            atomic_fetch_add_explicit(&al->dropped, 1, memory_order_relaxed);
            kg_metrics_access_log_dropped();
            return NULL;
        } else {
            pos = atomic_load_explicit(&al->head, memory_order_relaxed);
        }
    }
}

void
kg_accesslog_commit(struct kg_accesslog *al, struct kg_accesslog_rec *rec)
{
    struct cell *c = (struct cell *)(void *)((char *)rec - offsetof(struct cell, rec));

    (void)al;
    atomic_store_explicit(&c->seq, c->pos + 1, memory_order_release);
}

void
kg_accesslog_reopen(struct kg_accesslog *al)
{
    if (al == NULL || !al->started)
        return;
    pthread_mutex_lock(&al->mu);
    al->reopen = true;
    pthread_cond_signal(&al->wake);
    pthread_mutex_unlock(&al->mu);
}

/* Under mu: waits on done at most ms. */
static void
timed_wait_done(struct kg_accesslog *al, long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&al->done, &al->mu, &ts);
}

enum kg_status
kg_accesslog_set_dest(struct kg_accesslog *al, const char *dest, struct kg_err *err)
{
    struct dest d;
    enum kg_status rc = dest_open(dest, &d, err);
    int64_t deadline = kg_time_mono_ms() + SET_DEST_WAIT_MS;
    uint64_t ticket;
    bool switched;

    if (rc != KG_OK)
        return rc;
    if (d.fd >= 0 && !ring_alloc(al)) {
        dest_close(&d);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&al->mu);
    if (al->has_pending)
        dest_close(&al->pending); /* an earlier switch the writer has not taken yet */
    al->pending = d;
    al->has_pending = true;
    ticket = ++al->switch_req;
    atomic_store(&al->hurry, true);
    /* Off at once: nothing new is taken; what is in the ring still goes out. */
    atomic_store(&al->on, d.fd >= 0);
    pthread_cond_signal(&al->wake);
    /* Usually returns once the writer switched, so a line logged after this
     * call goes to the new destination; but never waits on a stalled one
     * for long (the writer gives up on it after STALL_GIVE_UP_MS). */
    while (al->switch_done < ticket && kg_time_mono_ms() < deadline)
        timed_wait_done(al, 50);
    switched = al->switch_done >= ticket;
    pthread_mutex_unlock(&al->mu);
    if (!switched)
        kg_log_warn("access log: the old destination is stuck; switching once the writer is free");
    return KG_OK;
}

bool
kg_accesslog_sync(struct kg_accesslog *al, int64_t timeout_ms)
{
    size_t target;
    int64_t deadline = kg_time_mono_ms() + timeout_ms;
    bool ok;

    if (al == NULL || !al->started)
        return true;
    target = atomic_load(&al->head);
    pthread_mutex_lock(&al->mu);
    while (atomic_load_explicit(&al->written, memory_order_acquire) < target &&
           kg_time_mono_ms() < deadline) {
        al->sync_req = true;
        pthread_cond_signal(&al->wake);
        timed_wait_done(al, 20);
    }
    ok = atomic_load(&al->written) >= target;
    pthread_mutex_unlock(&al->mu);
    return ok;
}

uint64_t
kg_accesslog_dropped(const struct kg_accesslog *al)
{
    return al != NULL ? atomic_load(&al->dropped) : 0;
}

/* Stops the writer within about FREE_WAIT_S: a writer still stuck then (in
 * a write() that never returns) is cancelled, and what it had not written
 * is counted as dropped. False when even that failed. */
static bool
stop_writer(struct kg_accesslog *al)
{
    struct timespec ts;
    size_t lost;

    pthread_mutex_lock(&al->mu);
    al->stop = true;
    atomic_store(&al->hurry, true);
    pthread_cond_signal(&al->wake);
    pthread_mutex_unlock(&al->mu);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += FREE_WAIT_S;
    if (pthread_timedjoin_np(al->thread, NULL, &ts) == 0)
        return true;
    pthread_cancel(al->thread);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += FREE_WAIT_S;
    if (pthread_timedjoin_np(al->thread, NULL, &ts) != 0) {
        kg_log_warn("access log: the writer is stuck and could not be stopped");
        return false;
    }
    /* The thread is gone; cancelled only in write() or poll(), so mu is free. */
    lost = atomic_load(&al->head) - al->tail;
    atomic_fetch_add(&al->dropped, lost);
    for (size_t i = 0; i < lost; i++)
        kg_metrics_access_log_dropped();
    abandon(al, 0);
    al->len = 0;
    kg_log_warn("access log: the destination is stuck; lines not written are dropped");
    return true;
}

void
kg_accesslog_free(struct kg_accesslog *al)
{
    if (al == NULL)
        return;
    if (al->started && !stop_writer(al))
        return; /* the writer could not be stopped: al stays, leaked, for it */
    dest_close(&al->cur);
    dest_close(&al->pending);
    dest_close(&al->taking);
    pthread_cond_destroy(&al->wake);
    pthread_cond_destroy(&al->done);
    pthread_mutex_destroy(&al->mu);
    free(al->buf);
    free(atomic_load(&al->cells));
    free(al);
}
