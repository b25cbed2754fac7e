/* limit/redislimit.c - the Redis limiter backend (keygate/redislimit.h):
 * the GCRA script, the leases the loops spend under one mutex, and the
 * thread that owns the connection to Redis.
 *
 * Owns the socket, the pipelined commands in flight (a FIFO: Redis answers
 * in order) and the refill queue; the lease accounting is limit/lease.c's.
 * A request loop only takes the mutex for a table lookup and a decrement;
 * everything that waits on Redis happens on this module's thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "keygate/lease.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/redislimit.h"
#include "keygate/timeutil.h"

#define INFLIGHT_MAX 4096       /* commands sent and not answered yet */
#define RETRY_US 100000LL       /* between two connection attempts while down */
#define CONNECT_MIN_US 250000LL /* a (re)connection may take at least this long */
#define READ_CHUNK 16384

/* KEYS: the key's bucket and/or the tier's. ARGV[1]: tokens wanted; then
 * per bucket its emission interval and tau (interval * burst), in
 * microseconds. Takes as many as every bucket has room for (GCRA, the TAT
 * in microseconds of Redis's clock), and returns that number and, per
 * bucket, what remains, until it is full (reset) and until one more would
 * pass (retry). A TAT more than tau + 1 s ahead is a clock that went back:
 * "empty at now", as limit/gcra.c does. %.0f: Lua's tostring would write
 * 1.7e+15 and lose the microseconds. */
static const char script[] = "local t = redis.call('TIME')\n"
                             "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
                             "local grant = tonumber(ARGV[1])\n"
                             "local tat, iv, tau = {}, {}, {}\n"
                             "for i = 1, #KEYS do\n"
                             "  iv[i] = tonumber(ARGV[2 * i])\n"
                             "  tau[i] = tonumber(ARGV[2 * i + 1])\n"
                             "  local v = tonumber(redis.call('GET', KEYS[i]) or '0')\n"
                             "  if v - now > tau[i] + 1000000 then v = now + tau[i] end\n"
                             "  if v < now then v = now end\n"
                             "  tat[i] = v\n"
                             "  local room = math.floor((now + tau[i] - v) / iv[i])\n"
                             "  if room < grant then grant = room end\n"
                             "end\n"
                             "if grant < 0 then grant = 0 end\n"
                             "local out = {grant}\n"
                             "for i = 1, #KEYS do\n"
                             "  local v = tat[i] + grant * iv[i]\n"
                             "  if grant > 0 then\n"
                             "    redis.call('SET', KEYS[i], string.format('%.0f', v), 'PX',\n"
                             "               math.floor((v - now) / 1000) + 1)\n"
                             "  end\n"
                             "  local retry = v + iv[i] - now - tau[i]\n"
                             "  if retry < 0 then retry = 0 end\n"
                             "  out[#out + 1] = math.floor((now + tau[i] - v) / iv[i])\n"
                             "  out[#out + 1] = v - now\n"
                             "  out[#out + 1] = retry\n"
                             "end\n"
                             "return out\n";

enum cmd_kind { CMD_REFILL, CMD_SETUP };

struct inflight {
    enum cmd_kind kind;
    struct kg_lease *lease; /* CMD_REFILL */
    int64_t sent_us;
};

struct redis {
    /* Fixed at creation. */
    char host[KG_REDIS_HOST_MAX];
    int port, db;
    int64_t timeout_us;
    int wakefd;
    pthread_t thread;
    bool started;

    /* Under mu: the leases, the refill queue, the commands in flight. */
    pthread_mutex_t mu;
    struct kg_lease_table *leases;
    struct kg_lease *q_head, *q_tail;
    struct inflight ring[INFLIGHT_MAX];
    size_t ring_head, ring_len;
    bool stopping;
    _Atomic bool up;

    /* The thread's own. */
    int fd;
    redisReader *reader;
    char *out;
    size_t out_len, out_off, out_cap;
    char sha[48];
    int64_t next_try_us;
    bool said_down; /* the outage is in the log already */
};

static void
wake(struct redis *r)
{
    uint64_t one = 1;

    if (write(r->wakefd, &one, sizeof(one)) < 0) {
        /* Already signalled: the thread wakes anyway. */
    }
}

/* Calls the done function of every answered waiter; outside mu, since a
 * request may be freed as soon as it is resumed. */
static void
finish(struct kg_limit_wait *done)
{
    while (done != NULL) {
        struct kg_limit_wait *next = done->next;

        done->next = NULL;
        done->done(done->arg);
        done = next;
    }
}

/* Queues a refill of l when it wants one. Under mu; true: wake the thread. */
static bool
queue_refill(struct redis *r, struct kg_lease *l)
{
    if (r->stopping || !atomic_load(&r->up) || !kg_lease_wants_refill(l))
        return false;
    l->queued = true;
    l->qnext = NULL;
    if (r->q_tail != NULL)
        r->q_tail->qnext = l;
    else
        r->q_head = l;
    r->q_tail = l;
    return true;
}

/* ---- the loops' side: kg_limiter_ops ---- */

static enum kg_limit_answer
redis_check(void *impl, const struct kg_limit_req *req, int64_t now_us, bool count,
            struct kg_limit_verdict *out)
{
    struct redis *r = impl;
    enum kg_limit_answer a = KG_LIMIT_DONE;
    struct kg_lease *l;
    bool kick = false;

    pthread_mutex_lock(&r->mu);
    l = kg_lease_get(r->leases, req, now_us, count);
    if (l == NULL) {
        if (count) {
            a = KG_LIMIT_DOWN; /* every lease of its set is busy: no room to wait */
        } else {
            /* Nothing known of this key here: describe a full bucket. */
            struct kg_lease fresh = {.has_key = req->key_rate != NULL,
                                     .has_tier = req->tier_rate != NULL};

            if (fresh.has_key)
                fresh.key_rate = *req->key_rate;
            if (fresh.has_tier)
                fresh.tier_rate = *req->tier_rate;
            kg_lease_take(&fresh, now_us, false, out);
        }
        pthread_mutex_unlock(&r->mu);
        return a;
    }
    switch (kg_lease_take(l, now_us, count, out)) {
    case KG_LEASE_TOKEN:
        kick = queue_refill(r, l); /* ahead of need */
        break;
    case KG_LEASE_DENIED:
        break;
    case KG_LEASE_EMPTY:
        a = atomic_load(&r->up) && !r->stopping ? KG_LIMIT_WAIT : KG_LIMIT_DOWN;
        break;
    }
    pthread_mutex_unlock(&r->mu);
    if (kick)
        wake(r);
    return a;
}

static void
redis_wait(void *impl, struct kg_limit_wait *w, int64_t now_us)
{
    struct redis *r = impl;
    struct kg_limit_req req;
    struct kg_lease *l;
    bool kick = false;

    kg_limiter_wait_req(w, &req);
    pthread_mutex_lock(&r->mu);
    l = kg_lease_get(r->leases, &req, now_us, true);
    w->answer = KG_LIMIT_DOWN;
    if (l != NULL) {
        /* A refill may have landed since the check. */
        switch (kg_lease_take(l, now_us, true, &w->verdict)) {
        case KG_LEASE_TOKEN:
        case KG_LEASE_DENIED:
            w->answer = KG_LIMIT_DONE;
            kg_limiter_finish(&w->verdict);
            kick = queue_refill(r, l);
            break;
        case KG_LEASE_EMPTY:
            if (!atomic_load(&r->up) || r->stopping)
                break;
            kg_lease_add_waiter(l, w, now_us + r->timeout_us);
            kick = queue_refill(r, l);
            pthread_mutex_unlock(&r->mu);
            if (kick)
                wake(r);
            return;
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (kick)
        wake(r);
    w->done(w->arg);
}

static void
take_unused(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
            int64_t now_us, bool count, struct kg_gcra_result *res)
{
    /* Never called: check answers for both limits. */
    (void)impl;
    (void)scope;
    (void)id;
    (void)count;
    kg_gcra_peek(g, 0, now_us, res);
}

static void
refund_unused(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
              int64_t now_us)
{
    (void)impl;
    (void)scope;
    (void)id;
    (void)g;
    (void)now_us;
}

/* Every lease queued or in flight gives up its refill; their waiters are
 * appended to *done as KG_LIMIT_DOWN. Under mu. */
static void
drop_all(struct redis *r, struct kg_limit_wait **done)
{
    for (struct kg_lease *l = r->q_head; l != NULL; l = l->qnext) {
        l->queued = false;
        kg_lease_failed(l, done);
    }
    r->q_head = r->q_tail = NULL;
    for (size_t i = 0; i < r->ring_len; i++) {
        struct inflight *f = &r->ring[(r->ring_head + i) % INFLIGHT_MAX];

        if (f->kind == CMD_REFILL) {
            f->lease->inflight = false;
            kg_lease_failed(f->lease, done);
        }
    }
    r->ring_head = r->ring_len = 0;
}

static void
redis_stop(void *impl)
{
    struct redis *r = impl;
    struct kg_limit_wait *done = NULL;

    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    drop_all(r, &done);
    pthread_mutex_unlock(&r->mu);
    finish(done);
    wake(r);
    if (r->started) {
        pthread_join(r->thread, NULL);
        r->started = false;
    }
}

static void
redis_free(void *impl)
{
    struct redis *r = impl;

    if (r == NULL)
        return;
    redis_stop(r);
    if (r->fd >= 0)
        close(r->fd);
    if (r->reader != NULL)
        redisReaderFree(r->reader);
    free(r->out);
    kg_lease_table_free(r->leases);
    pthread_mutex_destroy(&r->mu);
    if (r->wakefd >= 0)
        close(r->wakefd);
    kg_metrics_limiter_up(-1);
    free(r);
}

static const struct kg_limiter_ops redis_ops = {
    .take = take_unused,
    .refund = refund_unused,
    .free = redis_free,
    .check = redis_check,
    .wait = redis_wait,
    .stop = redis_stop,
};

/* ---- the thread's side: the connection ---- */

static bool
out_append(struct redis *r, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);

    if (n < 0)
        return false;
    if (r->out_len + (size_t)n > r->out_cap) {
        size_t cap = r->out_cap == 0 ? 16384 : r->out_cap;
        char *nb;

        while (cap < r->out_len + (size_t)n)
            cap *= 2;
        nb = realloc(r->out, cap);
        if (nb == NULL) {
            redisFreeCommand(cmd);
            return false;
        }
        r->out = nb;
        r->out_cap = cap;
    }
    memcpy(r->out + r->out_len, cmd, (size_t)n);
    r->out_len += (size_t)n;
    redisFreeCommand(cmd);
    return true;
}

/* Writes what the socket takes. False: the connection is broken. */
static bool
out_flush(struct redis *r)
{
    while (r->out_off < r->out_len) {
        ssize_t n = send(r->fd, r->out + r->out_off, r->out_len - r->out_off, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        r->out_off += (size_t)n;
    }
    r->out_off = r->out_len = 0;
    return true;
}

static int64_t
micros_of(const struct kg_gcra *g)
{
    return (g->interval_ns + 999) / 1000;
}

/* Formats a refill of l (EVALSHA, or EVAL to load the script again). */
static bool
format_refill(struct redis *r, struct kg_lease *l, bool eval)
{
    char nkeys[4], want[24], nums[4][24], kkey[96], ukey[96];
    const char *argv[12];
    size_t lens[12];
    int argc = 0, k = 0;

    argv[argc++] = eval ? "EVAL" : "EVALSHA";
    argv[argc++] = eval ? script : r->sha;
    snprintf(nkeys, sizeof(nkeys), "%d", (l->has_key ? 1 : 0) + (l->has_tier ? 1 : 0));
    argv[argc++] = nkeys;
    if (l->has_key) {
        snprintf(kkey, sizeof(kkey), "keygate:rl:key:%s", l->key_id);
        argv[argc++] = kkey;
    }
    if (l->has_tier) {
        snprintf(ukey, sizeof(ukey), "keygate:rl:user:%s", l->user_id);
        argv[argc++] = ukey;
    }
    snprintf(want, sizeof(want), "%lld", (long long)l->asked);
    argv[argc++] = want;
    if (l->has_key) {
        snprintf(nums[k], sizeof(nums[k]), "%lld", (long long)micros_of(&l->key_rate));
        argv[argc++] = nums[k++];
        snprintf(nums[k], sizeof(nums[k]), "%lld",
                 (long long)(micros_of(&l->key_rate) * l->key_rate.burst));
        argv[argc++] = nums[k++];
    }
    if (l->has_tier) {
        snprintf(nums[k], sizeof(nums[k]), "%lld", (long long)micros_of(&l->tier_rate));
        argv[argc++] = nums[k++];
        snprintf(nums[k], sizeof(nums[k]), "%lld",
                 (long long)(micros_of(&l->tier_rate) * l->tier_rate.burst));
        argv[argc++] = nums[k++];
    }
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return out_append(r, argc, argv, lens);
}

static void
ring_push(struct redis *r, enum cmd_kind kind, struct kg_lease *l, int64_t now_us)
{
    struct inflight *f = &r->ring[(r->ring_head + r->ring_len) % INFLIGHT_MAX];

    f->kind = kind;
    f->lease = l;
    f->sent_us = now_us;
    r->ring_len++;
}

/* Sends every queued refill there is room for. Under mu. */
static void
send_queued(struct redis *r, int64_t now_us)
{
    while (r->q_head != NULL && r->ring_len < INFLIGHT_MAX) {
        struct kg_lease *l = r->q_head;

        r->q_head = l->qnext;
        if (r->q_head == NULL)
            r->q_tail = NULL;
        l->queued = false;
        l->asked = kg_lease_ask(l);
        if (!format_refill(r, l, false)) {
            struct kg_limit_wait *done = NULL;

            kg_lease_failed(l, &done);
            /* Out of memory: answered at once rather than left waiting. */
            pthread_mutex_unlock(&r->mu);
            finish(done);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        l->inflight = true;
        ring_push(r, CMD_REFILL, l, now_us);
        kg_metrics_limiter_call();
    }
}

static void
disconnect(struct redis *r, const char *why)
{
    struct kg_limit_wait *done = NULL;

    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    if (r->reader != NULL)
        redisReaderFree(r->reader);
    r->reader = NULL;
    r->out_len = r->out_off = 0;
    pthread_mutex_lock(&r->mu);
    atomic_store(&r->up, false);
    drop_all(r, &done);
    pthread_mutex_unlock(&r->mu);
    finish(done);
    kg_metrics_limiter_up(0);
    if (why != NULL) {
        kg_metrics_limiter_error();
        if (!r->said_down)
            kg_log_warnx("limits: redis %s:%d unavailable (%s): keys with a rate limit follow "
                         "limits_on_error until it answers",
                         r->host, r->port, why);
        r->said_down = true;
    }
    r->next_try_us = kg_time_mono_us() + RETRY_US;
}

/* Waits until fd is ready for events or deadline_us. */
static bool
wait_fd(int fd, short events, int64_t deadline_us)
{
    for (;;) {
        int64_t left = deadline_us - kg_time_mono_us();
        struct pollfd p = {.fd = fd, .events = events};
        int n;

        if (left <= 0)
            return false;
        n = poll(&p, 1, (int)((left + 999) / 1000));
        if (n > 0)
            return (p.revents & (POLLERR | POLLHUP | POLLNVAL)) == 0 || (p.revents & events) != 0;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

static int
dial(struct redis *r, int64_t deadline_us, const char **why)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[8];
    int fd = -1, e = 0;
    socklen_t elen = sizeof(e);

    snprintf(port, sizeof(port), "%d", r->port);
    if (getaddrinfo(r->host, port, &hints, &ai) != 0 || ai == NULL) {
        *why = "host not found";
        return -1;
    }
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        *why = "no socket";
        goto fail;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        *why = "connection refused";
        goto fail;
    }
    if (!wait_fd(fd, POLLOUT, deadline_us) ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) != 0 || e != 0) {
        *why = e == ECONNREFUSED ? "connection refused" : "connect timed out";
        goto fail;
    }
    freeaddrinfo(ai);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return -1;
}

/* Reads one reply, waiting until deadline_us. NULL on error or timeout. */
static redisReply *
read_reply(struct redis *r, int64_t deadline_us)
{
    char buf[READ_CHUNK];
    void *reply = NULL;

    for (;;) {
        ssize_t n;

        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK)
            return NULL;
        if (reply != NULL)
            return reply;
        if (!wait_fd(r->fd, POLLIN, deadline_us))
            return NULL;
        n = recv(r->fd, buf, sizeof(buf), 0);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
            return NULL;
        if (n > 0 && redisReaderFeed(r->reader, buf, (size_t)n) != REDIS_OK)
            return NULL;
    }
}

/* Connects, selects the database and loads the script. Only the thread
 * (or kg_limiter_new_redis before it starts) calls it; while it runs the
 * backend is down, so no request waits on it. */
static bool
connect_redis(struct redis *r)
{
    int64_t budget = r->timeout_us > CONNECT_MIN_US ? r->timeout_us : CONNECT_MIN_US;
    int64_t deadline = kg_time_mono_us() + budget;
    const char *why = "connection failed";
    char db[16];
    const char *sel[2] = {"SELECT", db}, *load[3] = {"SCRIPT", "LOAD", script};
    size_t sel_len[2], load_len[3] = {6, 4, sizeof(script) - 1};
    redisReply *rep = NULL;

    r->fd = dial(r, deadline, &why);
    if (r->fd < 0)
        goto fail;
    r->reader = redisReaderCreate();
    if (r->reader == NULL)
        goto fail;
    snprintf(db, sizeof(db), "%d", r->db);
    sel_len[0] = 6;
    sel_len[1] = strlen(db);
    why = "no answer in time";
    if (!out_append(r, 2, sel, sel_len) || !out_append(r, 3, load, load_len))
        goto fail;
    while (r->out_len > 0) {
        if (!out_flush(r)) {
            why = "connection lost";
            goto fail;
        }
        if (r->out_len > 0 && !wait_fd(r->fd, POLLOUT, deadline))
            goto fail;
    }
    rep = read_reply(r, deadline);
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        why = rep != NULL ? "SELECT refused" : why;
        goto fail;
    }
    freeReplyObject(rep);
    rep = read_reply(r, deadline);
    if (rep == NULL || rep->type != REDIS_REPLY_STRING || rep->len >= sizeof(r->sha)) {
        why = rep != NULL ? "SCRIPT LOAD refused" : why;
        goto fail;
    }
    memcpy(r->sha, rep->str, rep->len);
    r->sha[rep->len] = '\0';
    freeReplyObject(rep);
    atomic_store(&r->up, true);
    kg_metrics_limiter_up(1);
    if (r->said_down)
        kg_log_info("limits: redis %s:%d answers again", r->host, r->port);
    r->said_down = false;
    return true;
fail:
    freeReplyObject(rep);
    disconnect(r, why);
    return false;
}

static int64_t
field(const redisReply *rep, size_t i)
{
    return rep->element[i]->type == REDIS_REPLY_INTEGER ? rep->element[i]->integer : -1;
}

/* A refill's reply: grant and each bucket's state, or an error. Under mu.
 * False: the reply makes no sense (the connection is dropped). */
static bool
apply_refill(struct redis *r, struct kg_lease *l, const redisReply *rep, int64_t now_us,
             struct kg_limit_wait **done)
{
    struct kg_gcra_result st[2] = {{0}};
    size_t nb = (l->has_key ? 1 : 0) + (l->has_tier ? 1 : 0);

    l->inflight = false;
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        /* Redis restarted and lost the script: EVAL loads it again. */
        if (format_refill(r, l, true)) {
            l->inflight = true;
            ring_push(r, CMD_REFILL, l, now_us);
            kg_metrics_limiter_call();
            return true;
        }
    }
    if (rep->type == REDIS_REPLY_ERROR)
        kg_metrics_limiter_error();
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 1 + 3 * nb) {
        kg_lease_failed(l, done);
        return rep->type == REDIS_REPLY_ERROR;
    }
    for (size_t i = 0; i < rep->elements; i++)
        if (field(rep, i) < 0) {
            kg_lease_failed(l, done);
            return false;
        }
    for (size_t b = 0; b < nb; b++) {
        const struct kg_gcra *g = b == 0 && l->has_key ? &l->key_rate : &l->tier_rate;

        st[b].limit = g->burst;
        st[b].remaining = field(rep, 1 + 3 * b);
        st[b].reset_us = field(rep, 2 + 3 * b);
        st[b].retry_after_us = field(rep, 3 + 3 * b);
        st[b].allowed = st[b].retry_after_us == 0;
    }
    kg_lease_granted(l, field(rep, 0), l->has_key ? &st[0] : NULL,
                     l->has_tier ? &st[l->has_key ? 1 : 0] : NULL, now_us, done);
    queue_refill(r, l); /* waiters the grant fell short of */
    return true;
}

/* Reads what arrived and applies every complete reply. False: the
 * connection is broken. */
static bool
read_replies(struct redis *r)
{
    char buf[READ_CHUNK];

    for (;;) {
        ssize_t n = recv(r->fd, buf, sizeof(buf), 0);

        if (n == 0)
            return false;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return false;
        }
        if (redisReaderFeed(r->reader, buf, (size_t)n) != REDIS_OK)
            return false;
    }
    for (;;) {
        void *reply = NULL;
        struct kg_limit_wait *done = NULL;
        bool ok = true;

        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK)
            return false;
        if (reply == NULL)
            return true;
        pthread_mutex_lock(&r->mu);
        if (r->ring_len == 0) {
            ok = false; /* a reply nobody asked for */
        } else {
            struct inflight f = r->ring[r->ring_head];

            r->ring_head = (r->ring_head + 1) % INFLIGHT_MAX;
            r->ring_len--;
            if (f.kind == CMD_REFILL)
                ok = apply_refill(r, f.lease, reply, kg_time_mono_us(), &done);
        }
        pthread_mutex_unlock(&r->mu);
        freeReplyObject(reply);
        finish(done);
        if (!ok)
            return false;
    }
}

/* Waiters past their deadline are answered; returns the next deadline of
 * any waiter or command (the connection's), INT64_MAX for none. *late:
 * the oldest command waited longer than the timeout. Under mu. */
static int64_t
deadlines(struct redis *r, int64_t now_us, bool *late, struct kg_limit_wait **done)
{
    int64_t next = INT64_MAX;

    *late = false;
    if (r->ring_len > 0) {
        int64_t due = r->ring[r->ring_head].sent_us + r->timeout_us;

        *late = due <= now_us;
        next = due;
    }
    for (size_t i = 0; i < r->ring_len; i++) {
        struct inflight *f = &r->ring[(r->ring_head + i) % INFLIGHT_MAX];
        int64_t d;

        if (f->kind != CMD_REFILL)
            continue;
        d = kg_lease_expire(f->lease, now_us, done);
        if (d < next)
            next = d;
    }
    return next;
}

static void *
thread_main(void *arg)
{
    struct redis *r = arg;

    for (;;) {
        struct pollfd p[2] = {{.fd = r->wakefd, .events = POLLIN}, {.fd = -1}};
        struct kg_limit_wait *done = NULL;
        int64_t now = kg_time_mono_us(), next;
        bool late, stopping;
        int timeout_ms;

        pthread_mutex_lock(&r->mu);
        stopping = r->stopping;
        if (!stopping && r->fd >= 0)
            send_queued(r, now);
        next = deadlines(r, now, &late, &done);
        pthread_mutex_unlock(&r->mu);
        finish(done);
        if (stopping)
            break;
        if (r->fd >= 0 && late) {
            disconnect(r, "reply timed out");
            continue;
        }
        if (r->fd >= 0 && !out_flush(r)) {
            disconnect(r, "connection lost");
            continue;
        }
        if (r->fd < 0) {
            if (now >= r->next_try_us) {
                connect_redis(r);
                continue;
            }
            next = r->next_try_us;
        } else {
            p[1].fd = r->fd;
            p[1].events = (short)(POLLIN | (r->out_len > 0 ? POLLOUT : 0));
        }
        timeout_ms = next == INT64_MAX ? 1000 : (int)((next - now + 999) / 1000);
        if (timeout_ms > 1000)
            timeout_ms = 1000;
        if (poll(p, 2, timeout_ms) < 0 && errno != EINTR)
            continue;
        if (p[0].revents & POLLIN) {
            uint64_t v;

            if (read(r->wakefd, &v, sizeof(v)) < 0) {
                /* Nothing to do: the wake-up was the message. */
            }
        }
        if (r->fd >= 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP)) != 0 && !read_replies(r))
            disconnect(r, "connection lost");
    }
    return NULL;
}

/* ---- creation ---- */

bool
kg_redislimit_parse_url(const char *url, char *host, size_t hostlen, int *port, int *db)
{
    static const char scheme[] = "redis://";
    const char *h, *end, *p;
    char hbuf[KG_REDIS_HOST_MAX];
    size_t hl;
    long pn = 6379, dn = 0;

    if (url == NULL || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return false;
    h = url + sizeof(scheme) - 1;
    if (*h == '[') {
        end = strchr(h, ']');
        if (end == NULL)
            return false;
        hl = (size_t)(end - h - 1);
        h++;
        p = end + 1;
    } else {
        p = h + strcspn(h, ":/");
        hl = (size_t)(p - h);
    }
    if (hl == 0 || hl >= sizeof(hbuf))
        return false;
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = (unsigned char)h[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':'))
            return false;
    }
    memcpy(hbuf, h, hl);
    hbuf[hl] = '\0';
    if (*p == ':') {
        char *e;

        if (p[1] < '0' || p[1] > '9')
            return false;
        pn = strtol(p + 1, &e, 10);
        if (pn < 1 || pn > 65535)
            return false;
        p = e;
    }
    if (*p == '/' && p[1] != '\0') {
        char *e;

        if (p[1] < '0' || p[1] > '9')
            return false;
        dn = strtol(p + 1, &e, 10);
        if (dn < 0 || dn > 1000000 || *e != '\0')
            return false;
        p = e;
    } else if (*p == '/') {
        p++;
    }
    if (*p != '\0')
        return false;
    if (host != NULL) {
        if (hostlen <= hl)
            return false;
        memcpy(host, hbuf, hl + 1);
    }
    if (port != NULL)
        *port = (int)pn;
    if (db != NULL)
        *db = (int)dn;
    return true;
}

enum kg_status
kg_limiter_new_redis(const char *url, int64_t lease_us, int64_t timeout_us, size_t keys,
                     struct kg_limiter **out, struct kg_err *err)
{
    struct redis *r;
    enum kg_status rc;
    int e;

    *out = NULL;
    if (timeout_us < 1000)
        return kg_err_set(err, KG_EINVAL, "limits_timeout must be at least 1ms");
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    r->fd = -1;
    r->wakefd = -1;
    if (!kg_redislimit_parse_url(url, r->host, sizeof(r->host), &r->port, &r->db)) {
        free(r);
        return kg_err_set(err, KG_EINVAL, "limits wants redis://host:port/db");
    }
    r->timeout_us = timeout_us;
    pthread_mutex_init(&r->mu, NULL);
    rc = kg_lease_table_new(keys, lease_us, &r->leases, err);
    if (rc != KG_OK) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return rc;
    }
    r->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wakefd < 0) {
        redis_free(r);
        return kg_err_set(err, KG_EIO, "limits: eventfd: %s", strerror(errno));
    }
    /* A Redis that is there from the start serves the first request. */
    connect_redis(r);
    e = pthread_create(&r->thread, NULL, thread_main, r);
    if (e != 0) {
        redis_free(r);
        return kg_err_set(err, KG_EIO, "limits: cannot start the redis thread: %s", strerror(e));
    }
    r->started = true;
    return kg_limiter_new(&redis_ops, r, out, err);
}
