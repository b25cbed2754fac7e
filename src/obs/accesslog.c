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

#include <jansson.h>

#include "keygate/accesslog.h"
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

enum field {
    F_TIME,
    F_REQUEST_ID,
    F_REMOTE,
    F_METHOD,
    F_PATH,
    F_STATUS,
    F_OUTCOME,
    F_KEY_ID,
    F_TENANT,
    F_UPSTREAM_STATUS,
    F_DURATION_US,
    F_BYTES_SENT,
    NFIELDS,
};

static const char *const field_name[NFIELDS] = {
    "time",    "request_id", "remote", "method",          "path",        "status",
    "outcome", "key_id",     "tenant", "upstream_status", "duration_us", "bytes_sent",
};

/* One jansson object reused for every line: its members are made once, in
 * the order above, and their values changed in place, so a line costs no
 * hash-table insert and no allocation for a number (profiled: building a
 * fresh object per line was most of the writer's time). */
struct line {
    json_t *obj;
    json_t *val[NFIELDS];                        /* borrowed from obj */
    char scratch[3 * KG_ACCESSLOG_PATH_MAX + 1]; /* a field with bytes replaced */
    char masked[KG_ACCESSLOG_PATH_MAX];          /* the path with a key masked */
    char masked_id[KG_REQUEST_ID_MAX];           /* the request id with a key masked */
    char when[25];                               /* the last time written, and its second */
    int64_t when_s;
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
    struct line line; /* the writer's reused object */
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

static bool
line_init(struct line *l)
{
    l->obj = json_object();
    if (l->obj == NULL)
        return false;
    for (int i = 0; i < NFIELDS; i++) {
        l->val[i] = json_null();
        if (json_object_set_new(l->obj, field_name[i], l->val[i]) != 0)
            return false;
    }
    return true;
}

static void
line_cleanup(struct line *l)
{
    json_decref(l->obj);
    l->obj = NULL;
}

/* Member i becomes v (a new reference, or NULL: out of memory). */
static bool
set_new(struct line *l, int i, json_t *v)
{
    if (v == NULL || json_object_set_new(l->obj, field_name[i], v) != 0)
        return false;
    l->val[i] = v;
    return true;
}

static bool
set_null(struct line *l, int i)
{
    return json_is_null(l->val[i]) || set_new(l, i, json_null());
}

/* Member i becomes the string s (at most max bytes), each byte that is not
 * part of valid UTF-8 replaced by U+FFFD; null when s is empty. jansson
 * escapes quotes, backslashes and control characters when it dumps. */
static bool
set_str(struct line *l, int i, const char *s, size_t n)
{
    size_t o = 0, k;
    const char *v = s;
    size_t i_byte;

    if (n == 0)
        return set_null(l, i);
    for (i_byte = 0; i_byte < n; i_byte += k) {
        k = utf8_seq((const unsigned char *)s + i_byte, n - i_byte);
        if (k == 0)
            break;
    }
    if (i_byte < n) {
        /* Rare: copy with replacements (n <= KG_ACCESSLOG_PATH_MAX for every field). */
        for (size_t j = 0; j < n; j += k) {
            k = utf8_seq((const unsigned char *)s + j, n - j);
            if (k == 0) {
                memcpy(l->scratch + o, "\xEF\xBF\xBD", 3);
                o += 3;
                k = 1;
            } else {
                memcpy(l->scratch + o, s + j, k);
                o += k;
            }
        }
        v = l->scratch;
        n = o;
    }
    if (json_is_string(l->val[i]))
        return json_string_setn_nocheck(l->val[i], v, n) == 0;
    return set_new(l, i, json_stringn_nocheck(v, n));
}

static bool
set_int(struct line *l, int i, int64_t v, bool is_null)
{
    if (is_null)
        return set_null(l, i);
    if (json_is_integer(l->val[i]))
        return json_integer_set(l->val[i], (json_int_t)v) == 0;
    return set_new(l, i, json_integer((json_int_t)v));
}

/* The line's object now holds rec; false when out of memory. */
/* Wall clock minus monotonic clock, in microseconds, now. */
static int64_t
wall_offset_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - kg_time_mono_us();
}

static const size_t str_max[KG_AL_NSTR] = {
    KG_REQUEST_ID_MAX - 1, KG_CLIENTIP_MAX - 1,         KG_ACCESSLOG_METHOD_MAX - 1,
    KG_ID_MAX - 1,         KG_ACCESSLOG_TENANT_MAX - 1, KG_ACCESSLOG_PATH_MAX - 1,
};

_Static_assert(KG_ACCESSLOG_TEXT_MAX >= KG_REQUEST_ID_MAX - 1 + KG_CLIENTIP_MAX - 1 +
                                            KG_ACCESSLOG_METHOD_MAX - 1 + KG_ID_MAX - 1 +
                                            KG_ACCESSLOG_TENANT_MAX - 1 + KG_ACCESSLOG_PATH_MAX - 1,
               "every string fits in text");

static bool alnum(unsigned char c);

/* A string cut at n (of full) in the middle of a run of letters, digits
 * and '%' hides how long the run was from the writer's masking: a run of
 * KG_ACCESSLOG_MASK_RUN bytes or more across the cut keeps its first 4
 * bytes in kept, the rest '*'. Only for strings cut, so the event loops
 * pay nothing for ordinary ones. */
static void
mask_cut(char *kept, size_t n, const char *s, size_t full)
{
    size_t a = n, b = n;

    while (a > 0 && (alnum((unsigned char)s[a - 1]) || s[a - 1] == '%'))
        a--;
    while (b < full && b - a < KG_ACCESSLOG_MASK_RUN && (alnum((unsigned char)s[b]) || s[b] == '%'))
        b++;
    if (b - a >= KG_ACCESSLOG_MASK_RUN && n > a + KG_KEY_SHOWN_BODY && b > n)
        memset(kept + a + KG_KEY_SHOWN_BODY, '*', n - a - KG_KEY_SHOWN_BODY);
}

void
kg_accesslog_rec_strings(struct kg_accesslog_rec *rec, const char *request_id, const char *remote,
                         const char *method, const char *key_id, const char *tenant,
                         const char *path, size_t path_len)
{
    const char *s[KG_AL_NSTR] = {request_id, remote, method, key_id, tenant, path};
    size_t off = 0;

    for (int i = 0; i < KG_AL_NSTR; i++) {
        size_t n = s[i] == NULL ? 0 : i == KG_AL_PATH ? path_len : strnlen(s[i], str_max[i]);

        bool cut = n > str_max[i];

        if (cut)
            n = str_max[i];
        if (n > 0)
            memcpy(rec->text + off, s[i], n);
        if (cut)
            mask_cut(rec->text + off, n, s[i], i == KG_AL_PATH ? path_len : strlen(s[i]));
        rec->len[i] = (uint16_t)n;
        off += n;
    }
}

static bool
alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Bytes of one key-body character at s (n > 0 left): a letter or a digit,
 * or %XX that decodes to one (a client may encode a key); 0 otherwise. */
static size_t
body_char(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    if (alnum(u[0]))
        return 1;
    if (u[0] == '%' && n >= 3 && hexval(u[1]) >= 0 && hexval(u[2]) >= 0 &&
        alnum((unsigned char)(hexval(u[1]) * 16 + hexval(u[2]))))
        return 3;
    return 0;
}

/* keygate never reads a key from the URL or X-Request-Id, but a client may
 * still put one there, and no log may hold a key or a fragment of one. A
 * key's body and checksum are 51 letters and digits in a row; any run of
 * KG_ACCESSLOG_MASK_RUN or more (wherever it starts or ends, whatever
 * precedes or follows it) keeps its first 4 characters and the rest of its
 * bytes become '*'. No checksum is tried: one pass, whatever the input,
 * and a long run that is not a key is masked too (the safe side). With
 * out NULL, only tells whether there is something to mask. */
static bool
mask_scan(const char *s, size_t n, char *out)
{
    bool any = false;

    for (size_t i = 0; i < n;) {
        size_t k = body_char(s + i, n - i), count = 0, keep = i;

        if (k == 0) {
            i++;
            continue;
        }
        while (i < n && (k = body_char(s + i, n - i)) > 0) {
            i += k;
            if (++count == KG_KEY_SHOWN_BODY)
                keep = i;
        }
        if (count >= KG_ACCESSLOG_MASK_RUN) {
            if (out == NULL)
                return true;
            memset(out + keep, '*', i - keep);
            any = true;
        }
    }
    return any;
}

bool
kg_accesslog_mask_keys(char *s, size_t n)
{
    return mask_scan(s, n, s);
}

/* s, or out (n bytes) holding s masked when it has a run to mask. */
static const char *
mask_keys(const char *s, size_t n, char *out)
{
    if (!mask_scan(s, n, NULL))
        return s;
    memcpy(out, s, n);
    mask_scan(out, n, out);
    return out;
}

/* wall_off_us: wall_offset_us() of about now, for records with end_mono_us. */
static bool
line_fill(struct line *l, const struct kg_accesslog_rec *r, int64_t wall_off_us)
{
    const char *outcome = kg_metrics_outcome_name((enum kg_outcome)r->outcome);
    int64_t time_ms = r->time_ms != 0 ? r->time_ms : (r->end_mono_us + wall_off_us) / 1000;
    int ms = (int)(time_ms % 1000);
    const char *str[KG_AL_NSTR];
    size_t len[KG_AL_NSTR], off = 0;

    for (int i = 0; i < KG_AL_NSTR; i++) {
        len[i] = r->len[i] < str_max[i] ? r->len[i] : str_max[i];
        str[i] = r->text + off;
        off += len[i];
    }
    /* What the client chose freely: the path and its request id. */
    str[KG_AL_PATH] = mask_keys(str[KG_AL_PATH], len[KG_AL_PATH], l->masked);
    str[KG_AL_REQUEST_ID] = mask_keys(str[KG_AL_REQUEST_ID], len[KG_AL_REQUEST_ID], l->masked_id);

    /* The date and time change once a second; the milliseconds every line. */
    if (time_ms / 1000 != l->when_s || l->when[0] == '\0') {
        kg_accesslog_time(time_ms, l->when);
        l->when_s = time_ms / 1000;
    }
    l->when[20] = (char)('0' + ms / 100);
    l->when[21] = (char)('0' + ms / 10 % 10);
    l->when[22] = (char)('0' + ms % 10);
    return set_str(l, F_TIME, l->when, 24) &&
           set_str(l, F_REQUEST_ID, str[KG_AL_REQUEST_ID], len[KG_AL_REQUEST_ID]) &&
           set_str(l, F_REMOTE, str[KG_AL_REMOTE], len[KG_AL_REMOTE]) &&
           set_str(l, F_METHOD, str[KG_AL_METHOD], len[KG_AL_METHOD]) &&
           set_str(l, F_PATH, str[KG_AL_PATH], len[KG_AL_PATH]) &&
           set_int(l, F_STATUS, r->status, r->status == 0) &&
           set_str(l, F_OUTCOME, outcome != NULL ? outcome : "",
                   outcome != NULL ? strlen(outcome) : 0) &&
           set_str(l, F_KEY_ID, str[KG_AL_KEY_ID], len[KG_AL_KEY_ID]) &&
           set_str(l, F_TENANT, str[KG_AL_TENANT], len[KG_AL_TENANT]) &&
           set_int(l, F_UPSTREAM_STATUS, r->upstream_status, r->upstream_status == 0) &&
           set_int(l, F_DURATION_US, r->duration_us > 0 ? r->duration_us : 0, false) &&
           set_int(l, F_BYTES_SENT, r->bytes_sent, r->bytes_sent < 0);
}

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

char *
kg_accesslog_format(const struct kg_accesslog_rec *rec, size_t *len)
{
    struct line *l = calloc(1, sizeof(*l));
    char *text = NULL, *out = NULL;
    size_t n;

    if (l == NULL || !line_init(l) || !line_fill(l, rec, wall_offset_us()))
        goto cleanup;
    text = json_dumps(l->obj, DUMP_FLAGS);
    if (text == NULL)
        goto cleanup;
    n = strlen(text);
    out = malloc(n + 2);
    if (out == NULL)
        goto cleanup;
    memcpy(out, text, n);
    out[n] = '\n';
    out[n + 1] = '\0';
    if (len != NULL)
        *len = n + 1;

cleanup:
    free(text);
    if (l != NULL)
        line_cleanup(l);
    free(l);
    return out;
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

/* One record into the buffer as a line; a line that cannot be made is lost. */
static void
append(struct kg_accesslog *al, const struct kg_accesslog_rec *rec, int64_t wall_off_us)
{
    size_t n;

    if (!line_fill(&al->line, rec, wall_off_us) || !buf_reserve(al, 4096))
        return;
    n = json_dumpb(al->line.obj, al->buf + al->len, al->cap - al->len - 1, DUMP_FLAGS);
    if (n + 1 > al->cap - al->len) {
        if (n == 0 || !buf_reserve(al, n + 1))
            return;
        n = json_dumpb(al->line.obj, al->buf + al->len, al->cap - al->len - 1, DUMP_FLAGS);
    }
    if (n > 0) {
        al->len += n;
        al->buf[al->len++] = '\n';
    }
}

/* Takes every committed record; returns how many. */
static size_t
drain(struct kg_accesslog *al)
{
    size_t taken = 0;
    /* Read once per batch: a clock step shows from the next batch on. */
    int64_t wall_off_us = wall_offset_us();

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
    if (!line_init(&al->line)) {
        line_cleanup(&al->line);
        free(al);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    rc = dest_open(dest, &al->cur, err);
    if (rc == KG_OK && al->cur.fd >= 0 && !ring_alloc(al)) {
        dest_close(&al->cur);
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    if (rc != KG_OK) {
        line_cleanup(&al->line);
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
    line_cleanup(&al->line);
    free(al->buf);
    free(atomic_load(&al->cells));
    free(al);
}
