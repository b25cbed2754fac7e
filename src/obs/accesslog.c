/* obs/accesslog.c - the access log's ring and writer thread.
 *
 * The ring is Dmitry Vyukov's bounded MPMC queue used with one consumer:
 * each cell carries a sequence number; a producer claims a position with
 * one CAS on head, fills the record and publishes it by storing pos + 1 in
 * the cell's sequence; the writer takes cells in order and hands them back
 * with pos + capacity. A full ring is seen by a producer as a cell whose
 * sequence lags its position: the record is dropped, never waited for. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "keygate/accesslog.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/timeutil.h"

#define WRITE_EVERY_MS 200     /* lines reach the file at most this late */
#define IDLE_WAIT_MS 50        /* the writer looks at the ring this often */
#define BUF_WRITE_AT (64 * 1024)

struct cell {
    _Atomic size_t seq;
    size_t pos; /* the position the producer claimed; read back by commit */
    struct kg_accesslog_rec rec;
};

/* Where lines go: fd < 0 is off. */
struct dest {
    int fd;
    bool own;   /* a file we opened (and may reopen) */
    char *path; /* for reopen; NULL unless own */
};

struct kg_accesslog {
    struct cell *cells;
    size_t mask;
    _Alignas(64) _Atomic size_t head; /* next position a producer claims */
    _Alignas(64) size_t tail;         /* next position the writer takes; writer only */
    _Atomic size_t written;           /* every position below this is written */
    _Atomic bool on;
    _Atomic uint64_t dropped;

    pthread_mutex_t mu; /* the fields below, between the controller and the writer */
    pthread_cond_t wake, done;
    pthread_t thread;
    bool started, stop, reopen, sync_req, has_pending;
    struct dest cur;     /* the writer's, swapped under mu */
    struct dest pending; /* set_dest()'s, until the writer takes it */

    char *buf; /* formatted lines not yet written; writer only */
    size_t len, cap;
    int64_t last_write_ms;
    bool warned;
};

/* ---- formatting ---- */

void
kg_accesslog_time(int64_t time_ms, char out[25])
{
    time_t s = (time_t)(time_ms / 1000);
    int ms = (int)(time_ms % 1000);
    struct tm tm;

    gmtime_r(&s, &tm);
    if (strftime(out, 25, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
        snprintf(out, 25, "1970-01-01T00:00:00.000Z");
        return;
    }
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    /* No overlong forms, no surrogates, nothing above U+10FFFF. */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* A JSON string of s (bounded by max bytes), each byte that is not part of
 * valid UTF-8 replaced by U+FFFD; null for an empty string. jansson
 * escapes quotes, backslashes and control characters. */
static json_t *
str_or_null(const char *s, size_t max)
{
    size_t n = strnlen(s, max), o = 0;
    char stackbuf[3 * 256 + 1], *out = stackbuf;
    json_t *j;

    if (n == 0)
        return json_null();
    if (3 * n + 1 > sizeof(stackbuf)) {
        out = malloc(3 * n + 1);
        if (out == NULL)
            return NULL;
    }
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);

        if (k == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    j = json_stringn(out, o);
    if (out != stackbuf)
        free(out);
    return j;
}

static json_t *
uint_or_null(unsigned v)
{
    return v == 0 ? json_null() : json_integer((json_int_t)v);
}

static json_t *
build(const struct kg_accesslog_rec *r)
{
    char when[25];
    const char *outcome = kg_metrics_outcome_name((enum kg_outcome)r->outcome);
    json_t *o = json_object();

    if (o == NULL)
        return NULL;
    kg_accesslog_time(r->time_ms, when);
    /* json_object_set_new takes NULL values as a failure and frees nothing;
     * a failure anywhere makes the whole line fail below. */
    if (json_object_set_new(o, "time", json_string(when)) != 0 ||
        json_object_set_new(o, "request_id", str_or_null(r->request_id, sizeof(r->request_id))) ||
        json_object_set_new(o, "remote", str_or_null(r->remote, sizeof(r->remote))) ||
        json_object_set_new(o, "method", str_or_null(r->method, sizeof(r->method))) ||
        json_object_set_new(o, "path", str_or_null(r->path, sizeof(r->path))) ||
        json_object_set_new(o, "status", uint_or_null(r->status)) ||
        json_object_set_new(o, "outcome", outcome != NULL ? json_string(outcome) : json_null()) ||
        json_object_set_new(o, "key_id", str_or_null(r->key_id, sizeof(r->key_id))) ||
        json_object_set_new(o, "tenant", str_or_null(r->tenant, sizeof(r->tenant))) ||
        json_object_set_new(o, "upstream_status", uint_or_null(r->upstream_status)) ||
        json_object_set_new(o, "duration_us",
                            json_integer((json_int_t)(r->duration_us > 0 ? r->duration_us : 0))) ||
        json_object_set_new(o, "bytes_sent", r->bytes_sent >= 0
                                                 ? json_integer((json_int_t)r->bytes_sent)
                                                 : json_null())) {
        json_decref(o);
        return NULL;
    }
    return o;
}

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

char *
kg_accesslog_format(const struct kg_accesslog_rec *rec, size_t *len)
{
    json_t *o = build(rec);
    char *text = NULL, *line = NULL;
    size_t n;

    if (o == NULL)
        goto cleanup;
    text = json_dumps(o, DUMP_FLAGS);
    if (text == NULL)
        goto cleanup;
    n = strlen(text);
    line = malloc(n + 2);
    if (line == NULL)
        goto cleanup;
    memcpy(line, text, n);
    line[n] = '\n';
    line[n + 1] = '\0';
    if (len != NULL)
        *len = n + 1;

cleanup:
    free(text);
    json_decref(o);
    return line;
}

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

static enum kg_status
dest_open(const char *spec, struct dest *d, struct kg_err *err)
{
    d->fd = -1;
    d->own = false;
    d->path = NULL;
    if (spec == NULL || spec[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "access_log wants off, stdout, stderr or a file path");
    if (strcmp(spec, "off") == 0)
        return KG_OK;
    if (strcmp(spec, "stdout") == 0) {
        d->fd = STDOUT_FILENO;
        return KG_OK;
    }
    if (strcmp(spec, "stderr") == 0) {
        d->fd = STDERR_FILENO;
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
    return KG_OK;
}

/* ---- the writer ---- */

static void
write_out(struct kg_accesslog *al)
{
    size_t off = 0;

    while (off < al->len && al->cur.fd >= 0) {
        ssize_t n = write(al->cur.fd, al->buf + off, al->len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (!al->warned)
                kg_log_warn("access log: write failed; lines are lost until it works again");
            al->warned = true;
            break;
        }
        al->warned = false;
        off += (size_t)n;
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

/* One record into the buffer as a line; a line that cannot be made is lost. */
static void
append(struct kg_accesslog *al, const struct kg_accesslog_rec *rec)
{
    json_t *o = build(rec);
    size_t n;

    if (o == NULL || !buf_reserve(al, 4096))
        goto cleanup;
    n = json_dumpb(o, al->buf + al->len, al->cap - al->len - 1, DUMP_FLAGS);
    if (n + 1 > al->cap - al->len) {
        if (n == 0 || !buf_reserve(al, n + 1))
            goto cleanup;
        n = json_dumpb(o, al->buf + al->len, al->cap - al->len - 1, DUMP_FLAGS);
    }
    if (n > 0) {
        al->len += n;
        al->buf[al->len++] = '\n';
    }

cleanup:
    json_decref(o);
}

/* Takes every committed record; returns how many. */
static size_t
drain(struct kg_accesslog *al)
{
    size_t taken = 0;

    for (;;) {
        struct cell *c = &al->cells[al->tail & al->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);

        if (seq != al->tail + 1)
            break; /* empty, or the next one is still being filled */
        if (al->cur.fd >= 0)
            append(al, &c->rec);
        atomic_store_explicit(&c->seq, al->tail + al->mask + 1, memory_order_release);
        al->tail++;
        taken++;
        if (al->len >= BUF_WRITE_AT)
            write_out(al);
    }
    return taken;
}

/* Under mu: a new destination or a reopen, after what the old one is owed. */
static void
switch_dest(struct kg_accesslog *al)
{
    if (al->has_pending) {
        /* What the old destination is owed; from off, the ring's records
         * are the new one's. */
        if (al->cur.fd >= 0) {
            drain(al);
            write_out(al);
        }
        dest_close(&al->cur);
        al->cur = al->pending;
        al->pending = (struct dest){.fd = -1};
        al->has_pending = false;
        al->warned = false;
    }
    if (al->reopen) {
        al->reopen = false;
        if (al->cur.own) {
            int fd = open(al->cur.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

            drain(al);
            write_out(al);
            if (fd < 0) {
                kg_log_warn("access log: reopening %s; still writing to the old file",
                            al->cur.path);
            } else {
                close(al->cur.fd);
                al->cur.fd = fd;
                al->warned = false;
            }
        }
    }
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

    pthread_mutex_lock(&al->mu);
    for (;;) {
        bool stopping, syncing;
        size_t got;

        switch_dest(al);
        stopping = al->stop;
        syncing = al->sync_req;
        al->sync_req = false;
        pthread_mutex_unlock(&al->mu);

        got = drain(al);
        if (al->len > 0 &&
            (stopping || syncing || kg_time_mono_ms() - al->last_write_ms >= WRITE_EVERY_MS))
            write_out(al);
        if (al->len == 0)
            atomic_store_explicit(&al->written, al->tail, memory_order_release);

        pthread_mutex_lock(&al->mu);
        pthread_cond_broadcast(&al->done);
        if (stopping && got == 0 && al->len == 0 &&
            atomic_load(&al->head) == al->tail)
            break;
        if (got == 0 && !al->stop && !al->sync_req && !al->reopen && !al->has_pending)
            wait_ms(al, IDLE_WAIT_MS);
    }
    pthread_mutex_unlock(&al->mu);
    return NULL;
}

/* ---- the controlling thread's side ---- */

enum kg_status
kg_accesslog_new(const char *dest, size_t capacity, struct kg_accesslog **out,
                 struct kg_err *err)
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
    /* calloc: cells stay unbacked until used, so an idle log costs no memory. */
    al->cells = calloc(cap, sizeof(*al->cells));
    if (al->cells == NULL) {
        free(al);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    al->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        atomic_init(&al->cells[i].seq, i);
    rc = dest_open(dest, &al->cur, err);
    if (rc != KG_OK) {
        free(al->cells);
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
    return al != NULL && atomic_load_explicit(&al->on, memory_order_relaxed);
}

struct kg_accesslog_rec *
kg_accesslog_reserve(struct kg_accesslog *al)
{
    size_t pos;

    if (!kg_accesslog_enabled(al))
        return NULL;
    pos = atomic_load_explicit(&al->head, memory_order_relaxed);
    for (;;) {
        struct cell *c = &al->cells[pos & al->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        ptrdiff_t dif = (ptrdiff_t)(seq - pos);

        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&al->head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
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

enum kg_status
kg_accesslog_set_dest(struct kg_accesslog *al, const char *dest, struct kg_err *err)
{
    struct dest d;
    enum kg_status rc = dest_open(dest, &d, err);

    if (rc != KG_OK)
        return rc;
    pthread_mutex_lock(&al->mu);
    /* One switch at a time, so lines logged meanwhile go where they were meant to. */
    while (al->has_pending)
        pthread_cond_wait(&al->done, &al->mu);
    al->pending = d;
    al->has_pending = true;
    /* Off at once: nothing new is taken; what is in the ring still goes out. */
    atomic_store(&al->on, d.fd >= 0);
    pthread_cond_signal(&al->wake);
    pthread_mutex_unlock(&al->mu);
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
        struct timespec ts;

        al->sync_req = true;
        pthread_cond_signal(&al->wake);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&al->done, &al->mu, &ts);
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

void
kg_accesslog_free(struct kg_accesslog *al)
{
    if (al == NULL)
        return;
    if (al->started) {
        pthread_mutex_lock(&al->mu);
        al->stop = true;
        pthread_cond_signal(&al->wake);
        pthread_mutex_unlock(&al->mu);
        pthread_join(al->thread, NULL);
    }
    dest_close(&al->cur);
    dest_close(&al->pending);
    pthread_cond_destroy(&al->wake);
    pthread_cond_destroy(&al->done);
    pthread_mutex_destroy(&al->mu);
    free(al->buf);
    free(al->cells);
    free(al);
}
