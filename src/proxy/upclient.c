/* proxy/upclient.c - keygate's own HTTP/1.1 client for http:// upstreams:
 * the per-loop pool of upstream connections, writing the request (head
 * built once, head and body in one writev, Content-Length or chunked),
 * reading the answer through proxy/upresp.c into the exchange's rings, the
 * one retry of the keep-alive race, and the timers (connect, whole
 * exchange, idle). The exchange itself (rings, suspend/resume, what the
 * front end sees) is proxy/relay.c's. One loop thread. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "keygate/headers.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/timeutil.h"
#include "keygate/upclient.h"
#include "keygate/upresp.h"
#include "proxy/proxy_int.h"

#define READ_MAX (64 * 1024)
#define CHUNK_MAX (64 * 1024)
#define HEAD_BUF_START 1024
#define HOST_MAX 300
#define RESOLVE_RETRY_MS 1000 /* after a failed lookup */

struct kg_uppool;

/* One upstream connection. Registered in the loop's epoll from its
 * connect to its close, with EPOLLIN (and EPOLLOUT while a write waits). */
struct kg_upconn {
    struct kg_loop_io io; /* first: the epoll tag */
    struct kg_uppool *pool;
    int fd;
    bool connecting;
    bool reused;       /* it carried a request before this one */
    unsigned requests; /* requests it carried, this one included */
    uint32_t events;   /* as registered */
    bool read_paused;  /* the down ring is full: EPOLLIN off */
    int64_t idle_since_ms;
    struct kg_upx *ux; /* the exchange it carries; NULL when idle */
    struct kg_upresp *resp;
    char *head; /* this request's head, built once; owned by the connection */
    size_t head_len, head_cap, head_off;
    /* Chunked request body: framing bytes waiting to go ("\r\n" ending the
     * last chunk, the next size line, the last-chunk) and the data bytes of
     * the current chunk still to send from the up ring. */
    char frame[32];
    size_t frame_len, frame_off;
    size_t chunk_left;
    bool last_chunk_queued;
    bool write_dead; /* a write failed: what the upstream said is read, nothing sent */
    struct kg_upconn *next, *prev; /* the pool's list of every connection */
};

/* The native side of one exchange. */
struct kg_upx {
    struct kg_exchange *x;
    struct kg_uppool *pool;
    struct kg_upconn *conn;
    char method[32];
    char *target; /* malloc'd: the request target (path and query) */
    bool chunked; /* body of unknown length */
    int64_t body_size;
    bool no_resp_body; /* HEAD */
    bool idempotent;
    bool retried, body_started, got_bytes;
    bool req_sent;  /* head and body all written */
    bool announced; /* the relay knows the response head */
    int64_t deadline_ms, connect_deadline_ms;
    int64_t connect_timeout_ms;
    unsigned keepalive_requests;
    bool queued;
    struct kg_upx *qnext, *qprev; /* waiting for a connection */
    struct kg_upx *anext, *aprev; /* every live exchange (timers) */
    bool flush;                   /* head waits for the end of the round */
    struct kg_upx *fnext;
};

/* Per loop: its extension (kg_loop_ext). */
struct kg_uppool {
    struct kg_loop_ext ext; /* first */
    struct kg_loop *loop;
    char *upstream; /* the upstream URL the address below is of */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool resolved;
    int64_t resolve_after_ms; /* when a failed lookup may be tried again */
    char host[HOST_MAX];      /* Host header */
    char *base;               /* the upstream URL's path, "" for none */
    struct kg_upconn **idle;  /* LIFO: [nidle - 1] is the most recent */
    size_t nidle, idle_cap;
    int64_t idle_timeout_ms;
    size_t nconns; /* open connections, idle ones included */
    size_t max_conns;
    struct kg_upconn *conns;
    struct kg_upx *q_head, *q_tail;
    struct kg_upx *live;
    struct kg_upx *flushq;
    int64_t next_deadline_ms; /* -1: none; may be early, never late */
};

static void conn_event(struct kg_loop_io *io, uint32_t events);
static void conn_close(struct kg_upconn *c);
static void conn_send(struct kg_upconn *c);
static void conn_read(struct kg_upconn *c);
static void upx_attach(struct kg_upx *ux, bool fresh_only);
static void pool_dispatch(struct kg_uppool *pool);

/* ---- the pool ---- */

static void
note_deadline(struct kg_uppool *pool, int64_t at)
{
    if (at >= 0 && (pool->next_deadline_ms < 0 || at < pool->next_deadline_ms))
        pool->next_deadline_ms = at;
}

static void
idle_remove(struct kg_uppool *pool, struct kg_upconn *c)
{
    for (size_t i = pool->nidle; i-- > 0;) {
        if (pool->idle[i] == c) {
            memmove(pool->idle + i, pool->idle + i + 1, (pool->nidle - i - 1) * sizeof(c));
            pool->nidle--;
            return;
        }
    }
}

static void
upx_fail(struct kg_upx *ux, CURLcode result, unsigned status)
{
    struct kg_exchange *x = ux->x;

    if (x->transfer_done)
        return;
    kg_relay_finish(x, result, status);
}

static void
live_unlink(struct kg_upx *ux)
{
    struct kg_uppool *pool = ux->pool;

    if (ux->aprev != NULL)
        ux->aprev->anext = ux->anext;
    else if (pool->live == ux)
        pool->live = ux->anext;
    if (ux->anext != NULL)
        ux->anext->aprev = ux->aprev;
    ux->anext = ux->aprev = NULL;
}

static void
queue_unlink(struct kg_upx *ux)
{
    struct kg_uppool *pool = ux->pool;

    if (!ux->queued)
        return;
    if (ux->qprev != NULL)
        ux->qprev->qnext = ux->qnext;
    else
        pool->q_head = ux->qnext;
    if (ux->qnext != NULL)
        ux->qnext->qprev = ux->qprev;
    else
        pool->q_tail = ux->qprev;
    ux->qnext = ux->qprev = NULL;
    ux->queued = false;
}

static void
flush_unlink(struct kg_upx *ux)
{
    struct kg_upx **pp = &ux->pool->flushq;

    if (!ux->flush)
        return;
    while (*pp != NULL && *pp != ux)
        pp = &(*pp)->fnext;
    if (*pp == ux)
        *pp = ux->fnext;
    ux->fnext = NULL;
    ux->flush = false;
}

/* Timers: the connect and exchange deadlines, idle connections' age. */
static void
pool_run(struct kg_loop_ext *e, int64_t now)
{
    struct kg_uppool *pool = (struct kg_uppool *)(void *)e;
    struct kg_upx *ux, *next;

    while (pool->flushq != NULL) {
        ux = pool->flushq;
        pool->flushq = ux->fnext;
        ux->fnext = NULL;
        ux->flush = false;
        if (ux->conn != NULL && !ux->conn->connecting)
            conn_send(ux->conn);
    }
    if (pool->next_deadline_ms < 0 || now < pool->next_deadline_ms)
        return;
    pool->next_deadline_ms = -1;
    while (pool->nidle > 0 && pool->idle[0]->idle_since_ms + pool->idle_timeout_ms <= now)
        conn_close(pool->idle[0]);
    if (pool->nidle > 0)
        note_deadline(pool, pool->idle[0]->idle_since_ms + pool->idle_timeout_ms);
    for (ux = pool->live; ux != NULL; ux = next) {
        next = ux->anext;
        if (ux->x->transfer_done)
            continue;
        if (now >= ux->deadline_ms ||
            (ux->conn != NULL && ux->conn->connecting && now >= ux->connect_deadline_ms)) {
            kg_log_debug("upstream exchange timed out");
            if (ux->conn != NULL)
                conn_close(ux->conn);
            queue_unlink(ux);
            upx_fail(ux, CURLE_OPERATION_TIMEDOUT, 504);
            continue;
        }
        note_deadline(pool, ux->deadline_ms);
        if (ux->conn != NULL && ux->conn->connecting)
            note_deadline(pool, ux->connect_deadline_ms);
    }
}

static int64_t
pool_deadline(struct kg_loop_ext *e)
{
    struct kg_uppool *pool = (struct kg_uppool *)(void *)e;

    if (pool->flushq != NULL)
        return kg_time_mono_ms();
    return pool->next_deadline_ms;
}

static void
pool_free(struct kg_loop_ext *e)
{
    struct kg_uppool *pool = (struct kg_uppool *)(void *)e;

    while (pool->conns != NULL)
        conn_close(pool->conns);
    free(pool->idle);
    free(pool->upstream);
    free(pool->base);
    free(pool);
}

enum resolve_result {
    RESOLVE_OK,
    RESOLVE_BAD,    /* the URL does not split (the config check keeps it from here) */
    RESOLVE_LOOKUP, /* the name did not resolve: tried again a second later */
    RESOLVE_NOMEM,  /* tried again with the next request */
};

/* Splits an http:// URL: authority into host (the Host header) and the
 * address, path into base. */
static enum resolve_result
pool_resolve(struct kg_uppool *pool, const char *url)
{
    const char *a = url + 7, *slash = a + strcspn(a, "/");
    char name[HOST_MAX], port[8] = "80";
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;
    size_t alen = (size_t)(slash - a);
    const char *colon, *hs = a, *he;
    bool ok;
    int gai;

    if (alen == 0 || alen >= sizeof(pool->host))
        return RESOLVE_BAD;
    memcpy(pool->host, a, alen);
    pool->host[alen] = '\0';
    if (*a == '[') {
        he = memchr(a, ']', alen);
        if (he == NULL)
            return RESOLVE_BAD;
        hs = a + 1;
        colon = he + 1 < slash && he[1] == ':' ? he + 1 : NULL;
    } else {
        colon = memchr(a, ':', alen);
        he = colon != NULL ? colon : slash;
    }
    if ((size_t)(he - hs) >= sizeof(name))
        return RESOLVE_BAD;
    memcpy(name, hs, (size_t)(he - hs));
    name[he - hs] = '\0';
    if (colon != NULL) {
        size_t pl = (size_t)(slash - colon - 1);

        if (pl == 0 || pl >= sizeof(port))
            return RESOLVE_BAD;
        memcpy(port, colon + 1, pl);
        port[pl] = '\0';
    }
    /* A name is resolved when the pool first serves this upstream, again
     * after a reload names another, and after a failed lookup (pool_get()):
     * a blocking lookup, so a numeric address is what keeps the loop from
     * ever waiting on DNS. */
    gai = getaddrinfo(name, port, &hints, &res);
    if (gai != 0 || res == NULL) {
        if (gai == EAI_MEMORY)
            return RESOLVE_NOMEM;
        kg_log_warnx("upstream %s: cannot resolve %s: %s", url, name,
                     gai != 0 ? gai_strerror(gai) : "no address");
        return RESOLVE_LOOKUP;
    }
    ok = res->ai_addrlen <= sizeof(pool->addr);
    if (ok) {
        memcpy(&pool->addr, res->ai_addr, res->ai_addrlen);
        pool->addrlen = res->ai_addrlen;
    }
    freeaddrinfo(res);
    free(pool->base);
    pool->base = strdup(slash);
    if (pool->base == NULL)
        return RESOLVE_NOMEM;
    /* The base without its trailing slashes, as the curl path sends it. */
    for (size_t n = strlen(pool->base); n > 0 && pool->base[n - 1] == '/'; n--)
        pool->base[n - 1] = '\0';
    return ok ? RESOLVE_OK : RESOLVE_BAD;
}

static struct kg_uppool *
pool_get(struct kg_loop *loop, const struct kg_config *cfg, int64_t now_ms)
{
    struct kg_uppool *pool = (struct kg_uppool *)(void *)kg_loop_ext(loop);

    if (pool == NULL) {
        pool = calloc(1, sizeof(*pool));
        if (pool == NULL)
            return NULL;
        pool->idle_cap = (size_t)cfg->upstream_keepalive;
        pool->idle = calloc(pool->idle_cap > 0 ? pool->idle_cap : 1, sizeof(*pool->idle));
        if (pool->idle == NULL) {
            free(pool);
            return NULL;
        }
        pool->ext.deadline = pool_deadline;
        pool->ext.run = pool_run;
        pool->ext.free = pool_free;
        pool->loop = loop;
        pool->max_conns = (size_t)cfg->upstream_max_connections; /* restart-only */
        pool->next_deadline_ms = -1;
        kg_loop_set_ext(loop, &pool->ext);
    }
    pool->idle_timeout_ms = cfg->upstream_keepalive_timeout_ms;
    if (pool->upstream == NULL || strcmp(pool->upstream, cfg->upstream) != 0) {
        /* A reload named another upstream: the idle connections are the old one's. */
        while (pool->nidle > 0)
            conn_close(pool->idle[0]);
        free(pool->upstream);
        pool->upstream = strdup(cfg->upstream);
        pool->resolved = false;
        pool->resolve_after_ms = 0;
    }
    /* A lookup that failed is tried again (it once stuck until a reload:
     * one failed allocation, or a name not yet in DNS when the first request
     * came, and every request got 502): at once after running out of
     * memory, a second later after a lookup failed, as the lookup blocks the
     * loop. */
    if (!pool->resolved && pool->upstream != NULL && now_ms >= pool->resolve_after_ms) {
        switch (pool_resolve(pool, pool->upstream)) {
        case RESOLVE_OK:
            pool->resolved = true;
            break;
        case RESOLVE_LOOKUP:
            pool->resolve_after_ms = now_ms + RESOLVE_RETRY_MS;
            break;
        case RESOLVE_BAD:
            pool->resolve_after_ms = INT64_MAX; /* until a reload names another */
            break;
        case RESOLVE_NOMEM:
            break;
        }
    }
    return pool;
}

/* ---- connections ---- */

static bool
conn_set_events(struct kg_upconn *c, uint32_t events)
{
    if (events == c->events)
        return true;
    if (kg_loop_io_ctl(c->pool->loop, EPOLL_CTL_MOD, c->fd, events, &c->io) != 0)
        return false;
    c->events = events;
    return true;
}

static uint32_t
conn_wanted_events(const struct kg_upconn *c, bool want_out)
{
    return (c->read_paused ? 0 : EPOLLIN | EPOLLRDHUP) | (want_out ? EPOLLOUT : 0);
}

static void
conn_close(struct kg_upconn *c)
{
    struct kg_uppool *pool = c->pool;

    if (c->ux != NULL)
        c->ux->conn = NULL;
    if (c->ux == NULL)
        idle_remove(pool, c);
    close(c->fd); /* the kernel drops it from the epoll set */
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        pool->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pool->nconns--;
    kg_upresp_free(c->resp);
    free(c->head);
    free(c);
    pool_dispatch(pool);
}

static struct kg_upconn *
conn_open(struct kg_uppool *pool, const struct kg_config *cfg)
{
    struct kg_upconn *c = calloc(1, sizeof(*c));
    int one = 1;

    if (c == NULL)
        return NULL;
    c->io.fn = conn_event;
    c->pool = pool;
    c->resp = kg_upresp_new((size_t)cfg->max_header_bytes);
    c->fd = kg_loop_socket(pool->loop, pool->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->resp == NULL || c->fd < 0)
        goto fail;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&pool->addr, pool->addrlen) != 0 &&
        errno != EINPROGRESS)
        goto fail;
    c->connecting = true;
    c->events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    if (kg_loop_io_ctl(pool->loop, EPOLL_CTL_ADD, c->fd, c->events, &c->io) != 0)
        goto fail;
    c->next = pool->conns;
    if (pool->conns != NULL)
        pool->conns->prev = c;
    pool->conns = c;
    pool->nconns++;
    return c;
fail:
    kg_log_debug("upstream connect: %s", strerror(errno));
    if (c->fd >= 0)
        close(c->fd);
    kg_upresp_free(c->resp);
    free(c);
    return NULL;
}

static bool
head_put(struct kg_upconn *c, const char *p, size_t n)
{
    if (c->head_len + n > c->head_cap) {
        size_t ncap = c->head_cap == 0 ? HEAD_BUF_START : c->head_cap;
        char *nb;

        while (ncap < c->head_len + n)
            ncap *= 2;
        nb = realloc(c->head, ncap);
        if (nb == NULL)
            return false;
        c->head = nb;
        c->head_cap = ncap;
    }
    memcpy(c->head + c->head_len, p, n);
    c->head_len += n;
    return true;
}

/* The request head, into the connection's buffer (kept between requests). */
static bool
build_head(struct kg_upconn *c, struct kg_upx *ux)
{
    char len[48];
    bool ok;

    c->head_len = c->head_off = 0;
    ok = head_put(c, ux->method, strlen(ux->method)) && head_put(c, " ", 1) &&
         head_put(c, ux->target, strlen(ux->target)) && head_put(c, " HTTP/1.1\r\nHost: ", 17) &&
         head_put(c, c->pool->host, strlen(c->pool->host)) && head_put(c, "\r\n", 2);
    /* Framing where libcurl puts it (the upstream sees the same request
     * whichever client sent it): Transfer-Encoding after Host,
     * Content-Length after the rest. */
    if (ok && ux->x->has_body && ux->chunked)
        ok = head_put(c, "Transfer-Encoding: chunked\r\n", 28);
    /* The outbound block, written once and checked when it was (outbound.c). */
    if (ok && ux->x->req_lines_len > 0)
        ok = head_put(c, ux->x->req_lines, ux->x->req_lines_len);
    if (ok && !ux->chunked && (ux->x->has_body || ux->body_size == 0)) {
        int n = snprintf(len, sizeof(len), "Content-Length: %lld\r\n",
                         (long long)(ux->body_size > 0 ? ux->body_size : 0));

        ok = head_put(c, len, (size_t)n);
    }
    return ok && head_put(c, "\r\n", 2);
}

/* Writes at once when there is no body to wait for or some of it is at
 * hand; else at the end of this loop round, with whatever body came. */
static void
start_writing(struct kg_upconn *c)
{
    struct kg_upx *ux = c->ux;

    if (!ux->x->has_body || ux->x->up.len > 0 || ux->x->up_done) {
        conn_send(c);
    } else if (!ux->flush) {
        ux->flush = true;
        ux->fnext = c->pool->flushq;
        c->pool->flushq = ux;
    }
}

/* Hands conn c to ux and starts writing (at once when there is no body to
 * wait for; else at the end of this loop round, with what body came). */
static void
conn_assign(struct kg_upconn *c, struct kg_upx *ux)
{
    c->ux = ux;
    ux->conn = c;
    c->requests++;
    c->frame_len = c->frame_off = c->chunk_left = 0;
    c->last_chunk_queued = c->write_dead = false;
    ux->got_bytes = ux->req_sent = ux->body_started = false;
    kg_upresp_reset(c->resp, ux->no_resp_body);
    if (!build_head(c, ux)) {
        /* Checked at start: only out of memory gets here. */
        conn_close(c);
        upx_fail(ux, CURLE_OUT_OF_MEMORY, 502);
        return;
    }
    if (!c->connecting)
        start_writing(c);
}

/* Finds ux a connection: the most recent idle one (unless fresh_only), a
 * new one while under upstream_max_connections, or the queue. */
static void
upx_attach(struct kg_upx *ux, bool fresh_only)
{
    struct kg_uppool *pool = ux->pool;
    struct kg_upconn *c = NULL;
    int64_t now = kg_time_mono_ms();

    while (!fresh_only && pool->nidle > 0) {
        c = pool->idle[--pool->nidle];
        /* Bytes or a close that reached an idle connection before this
         * round's epoll_wait have closed it already: its EPOLLIN stays
         * registered and the loop handles those events before it runs the
         * daemons that start requests. No syscall here to look again. */
        if (c->idle_since_ms + pool->idle_timeout_ms > now)
            break;
        conn_close(c); /* too old: the upstream may be closing it right now */
        c = NULL;
    }
    if (c != NULL) {
        c->reused = true;
        conn_assign(c, ux);
        return;
    }
    if (pool->nconns >= pool->max_conns) {
        if (fresh_only && pool->nidle > 0) {
            conn_close(pool->idle[0]); /* room for the retry's fresh connection */
        } else {
            ux->queued = true;
            ux->qprev = pool->q_tail;
            if (pool->q_tail != NULL)
                pool->q_tail->qnext = ux;
            else
                pool->q_head = ux;
            pool->q_tail = ux;
            return;
        }
    }
    {
        const struct kg_config *cfg = kg_cfgswap_acquire(kg_loop_runtime(pool->loop)->config);

        c = conn_open(pool, cfg);
        kg_cfgswap_release(cfg);
    }
    if (c == NULL) {
        upx_fail(ux, CURLE_COULDNT_CONNECT, 502);
        return;
    }
    ux->connect_deadline_ms = now + ux->connect_timeout_ms;
    note_deadline(pool, ux->connect_deadline_ms);
    conn_assign(c, ux);
}

/* A connection came free: the oldest waiting exchange gets one. */
static void
pool_dispatch(struct kg_uppool *pool)
{
    while (pool->q_head != NULL && (pool->nidle > 0 || pool->nconns < pool->max_conns)) {
        struct kg_upx *ux = pool->q_head;

        queue_unlink(ux);
        upx_attach(ux, false);
    }
}

/* The exchange is over on c: back to the pool when it can carry another. */
static void
conn_done(struct kg_upconn *c, bool reusable)
{
    struct kg_uppool *pool = c->pool;
    struct kg_upx *ux = c->ux;

    flush_unlink(ux);
    if (!reusable || c->requests >= ux->keepalive_requests || pool->nidle >= pool->idle_cap ||
        c->read_paused || (c->events & EPOLLOUT) != 0 || pool->q_head != NULL) {
        if (reusable && pool->q_head != NULL && c->requests < ux->keepalive_requests &&
            !c->read_paused && (c->events & EPOLLOUT) == 0) {
            /* Someone waits: hand it over directly. */
            struct kg_upx *next = pool->q_head;

            ux->conn = NULL;
            c->ux = NULL;
            queue_unlink(next);
            c->reused = true;
            conn_assign(c, next);
            return;
        }
        conn_close(c);
        return;
    }
    ux->conn = NULL;
    c->ux = NULL;
    c->idle_since_ms = kg_time_mono_ms();
    pool->idle[pool->nidle++] = c;
    note_deadline(pool, c->idle_since_ms + pool->idle_timeout_ms);
}

/* ---- writing ---- */

/* Queues chunk framing when the current chunk is sent; true when there is
 * anything to write. */
static void
plan_chunk(struct kg_upconn *c, struct kg_exchange *x)
{
    if (c->chunk_left > 0 || c->frame_off < c->frame_len || c->last_chunk_queued)
        return;
    c->frame_len = c->frame_off = 0;
    if (x->up.len > 0) {
        size_t n = x->up.len > CHUNK_MAX ? CHUNK_MAX : x->up.len;

        c->frame_len = (size_t)snprintf(c->frame, sizeof(c->frame), "%s%zx\r\n",
                                        c->ux->body_started ? "\r\n" : "", n);
        c->chunk_left = n;
    } else if (x->up_done) {
        c->frame_len = (size_t)snprintf(c->frame, sizeof(c->frame), "%s0\r\n\r\n",
                                        c->ux->body_started ? "\r\n" : "");
        c->last_chunk_queued = true;
    }
}

static bool
body_all_sent(const struct kg_upconn *c, const struct kg_exchange *x)
{
    if (!x->has_body)
        return true;
    if (!x->up_done || x->up.len > 0)
        return false;
    return !c->ux->chunked || (c->last_chunk_queued && c->frame_off == c->frame_len);
}

static void
conn_send(struct kg_upconn *c)
{
    struct kg_upx *ux = c->ux;
    struct kg_exchange *x;

    if (ux == NULL || c->connecting || c->write_dead || ux->req_sent)
        return;
    x = ux->x;
    flush_unlink(ux);
    for (;;) {
        struct iovec iov[4];
        int n = 0;
        size_t want = 0, hrest = c->head_len - c->head_off, frest, body = 0;
        const char *a, *b;
        size_t alen, blen;
        ssize_t w;

        if (x->has_body && ux->chunked)
            plan_chunk(c, x);
        frest = c->frame_len - c->frame_off;
        if (hrest > 0)
            iov[n++] = (struct iovec){.iov_base = c->head + c->head_off, .iov_len = hrest};
        if (frest > 0)
            iov[n++] = (struct iovec){.iov_base = c->frame + c->frame_off, .iov_len = frest};
        if (x->has_body && x->up.len > 0 && (!ux->chunked || frest == 0 || c->chunk_left > 0)) {
            size_t lim = ux->chunked ? c->chunk_left : x->up.len;

            kg_ring_spans(&x->up, &a, &alen, &b, &blen);
            if (alen > lim)
                alen = lim;
            if (blen > lim - alen)
                blen = lim - alen;
            if (alen > 0)
                iov[n++] = (struct iovec){.iov_base = (void *)a, .iov_len = alen};
            if (blen > 0)
                iov[n++] = (struct iovec){.iov_base = (void *)b, .iov_len = blen};
            body = alen + blen;
        }
        want = hrest + frest + body;
        if (want == 0)
            break;
        w = writev(c->fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_set_events(c, conn_wanted_events(c, true));
            return;
        }
        if (w < 0) {
            /* The upstream is gone or answered early and closed: what it
             * said (or its silence) decides, on the read side. */
            c->write_dead = true;
            conn_set_events(c, conn_wanted_events(c, false));
            conn_read(c);
            return;
        }
        {
            size_t done = (size_t)w, k;

            k = done < hrest ? done : hrest;
            c->head_off += k;
            done -= k;
            k = done < frest ? done : frest;
            c->frame_off += k;
            done -= k;
            if (done > 0) {
                kg_ring_consume(&x->up, done);
                ux->body_started = true;
                if (ux->chunked)
                    c->chunk_left -= done;
                kg_relay_wake(x); /* the client side may wait for room */
            }
        }
    }
    if (c->head_off == c->head_len && body_all_sent(c, x))
        ux->req_sent = true;
    conn_set_events(c, conn_wanted_events(c, false));
    if (ux->req_sent && kg_upresp_state(c->resp) == KG_UPRESP_DONE)
        conn_done(c, kg_upresp_keep_alive(c->resp));
}

/* ---- reading ---- */

static bool
on_header(void *ctx, const char *line, size_t len)
{
    struct kg_upx *ux = ctx;

    return kg_relay_add_header_line(ux->x, line, len);
}

static bool
on_body(void *ctx, const char *p, size_t len)
{
    struct kg_exchange *x = ((struct kg_upx *)ctx)->x;

    if (kg_ring_put(&x->down, p, len) != len)
        return false; /* the read was sized to the room: cannot happen */
    x->down_total += (int64_t)len;
    return true;
}

static const struct kg_upresp_cb resp_cb = {.header = on_header, .body = on_body};

/* The response head is in: the relay (and through it the front end) may use it. */
static void
announce(struct kg_upx *ux, struct kg_upresp *r)
{
    struct kg_exchange *x = ux->x;

    ux->announced = true;
    x->status = kg_upresp_status(r);
    x->content_length = kg_upresp_content_length(r);
    x->phase = KG_RELAY_HEADERS;
    kg_metrics_upstream(x->status, kg_time_mono_us() - x->started_us);
    kg_relay_wake(x);
}

/* The connection died before any byte of the answer: once more on a fresh
 * connection when that cannot do the request twice, else 502. */
static void
closed_before_answer(struct kg_upconn *c)
{
    struct kg_upx *ux = c->ux;

    if (c->reused && ux->idempotent && !ux->retried && !ux->body_started) {
        ux->retried = true;
        conn_close(c);
        kg_log_debug("upstream connection closed before the answer: retrying on a fresh one");
        upx_attach(ux, true);
        return;
    }
    conn_close(c);
    upx_fail(ux, CURLE_GOT_NOTHING, 502);
}

static void
conn_read(struct kg_upconn *c)
{
    char buf[READ_MAX];

    while (c->ux != NULL) {
        struct kg_upx *ux = c->ux;
        struct kg_exchange *x = ux->x;
        enum kg_upresp_state st;
        size_t room, used;
        ssize_t n;

        if (x->down.buf == NULL && !kg_ring_init(&x->down, KG_RELAY_BUF_BYTES)) {
            conn_close(c);
            upx_fail(ux, CURLE_OUT_OF_MEMORY, 502);
            return;
        }
        /* Grown only when full: asking for READ_MAX of room would double a
         * 16 KiB ring to 64 KiB for every answer, however small (two
         * allocations, a copy, and the heap trimmed and faulted back in). */
        room = kg_ring_room(&x->down, 1);
        if (room == 0) {
            c->read_paused = true;
            conn_set_events(c, conn_wanted_events(c, (c->events & EPOLLOUT) != 0));
            return;
        }
        n = recv(c->fd, buf, room < sizeof(buf) ? room : sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0 && !ux->got_bytes) {
            closed_before_answer(c);
            return;
        }
        if (n <= 0) {
            kg_upresp_eof(c->resp, &resp_cb, ux);
            used = 0;
        } else {
            ux->got_bytes = true;
            used = kg_upresp_feed(c->resp, buf, (size_t)n, &resp_cb, ux);
        }
        st = kg_upresp_state(c->resp);
        if (st == KG_UPRESP_BAD) {
            kg_log_debug("upstream answer refused: %s", kg_upresp_error(c->resp));
            conn_close(c);
            upx_fail(ux, CURLE_WEIRD_SERVER_REPLY, 502);
            return;
        }
        if (st != KG_UPRESP_HEAD && !ux->announced)
            announce(ux, c->resp);
        if (st == KG_UPRESP_DONE) {
            bool extra = n > 0 && used < (size_t)n;

            x->transfer_done = true;
            x->result = CURLE_OK;
            kg_relay_wake(x);
            if (!ux->req_sent) {
                /* An answer before the whole request went: final, but this
                 * connection's request stream is broken. */
                conn_close(c);
                kg_relay_fire_mid_body_end(x);
                return;
            }
            /* Bytes after the answer belong to no request: never pooled. */
            conn_done(c, !extra && n > 0 && kg_upresp_keep_alive(c->resp));
            return;
        }
        if (n <= 0)
            return; /* unreachable: EOF ends in DONE or BAD */
        kg_relay_wake(x);
    }
}

static void
conn_connected(struct kg_upconn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        struct kg_upx *ux = c->ux;

        kg_log_debug("upstream connect: %s", strerror(err != 0 ? err : errno));
        conn_close(c);
        if (ux != NULL)
            upx_fail(ux, CURLE_COULDNT_CONNECT, 502);
        return;
    }
    c->connecting = false;
    conn_set_events(c, conn_wanted_events(c, false));
    if (c->ux != NULL)
        start_writing(c);
}

static void
conn_event(struct kg_loop_io *io, uint32_t events)
{
    struct kg_upconn *c = (struct kg_upconn *)(void *)io;

    if (c->ux == NULL) {
        /* Idle: bytes nobody asked for, or the upstream closing it. */
        conn_close(c);
        return;
    }
    if (c->connecting) {
        conn_connected(c);
        return;
    }
    if ((events & EPOLLOUT) != 0)
        conn_send(c);
    if (c->ux != NULL && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0 &&
        !c->read_paused)
        conn_read(c);
}

/* ---- the relay's calls ---- */

bool
kg_upclient_wanted(const struct kg_config *cfg)
{
    return cfg->upstream_client == KG_UPSTREAM_NATIVE &&
           strncasecmp(cfg->upstream, "http://", 7) == 0;
}

static bool
method_idempotent(const char *m)
{
    static const char *const ok[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (strcmp(m, ok[i]) == 0)
            return true;
    return false;
}

/* The request target from the outbound URL: what follows the authority. */
static char *
target_of(const char *url)
{
    const char *p = url + 7;

    p += strcspn(p, "/");
    if (*p == '\0')
        return strdup("/");
    for (const char *q = p; *q != '\0'; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return NULL;
    return strdup(p);
}

enum kg_status
kg_upclient_start(struct kg_exchange *x, const struct kg_relay_req *rq, struct kg_err *err)
{
    const struct kg_config *cfg = rq->cfg;
    int64_t now = kg_time_mono_ms();
    struct kg_uppool *pool = pool_get(x->loop, cfg, now);
    struct kg_upx *ux;
    size_t mlen = strlen(rq->method);

    if (pool == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    if (!kg_headers_is_token(rq->method, mlen) || mlen >= sizeof(ux->method))
        return kg_err_set(err, KG_EINVAL, "method is not a token");
    if (rq->out->unsendable)
        return kg_err_set(err, KG_EINVAL, "header cannot be written upstream");
    ux = calloc(1, sizeof(*ux));
    if (ux == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    ux->target = target_of(rq->out->url);
    if (ux->target == NULL) {
        free(ux);
        return kg_err_set(err, KG_EINVAL, "request target cannot be written upstream");
    }
    memcpy(ux->method, rq->method, mlen + 1);
    ux->x = x;
    ux->pool = pool;
    ux->chunked = rq->body_size < 0;
    ux->body_size = rq->body_size;
    ux->no_resp_body = strcmp(rq->method, "HEAD") == 0;
    ux->idempotent = method_idempotent(rq->method);
    ux->deadline_ms = now + cfg->upstream_timeout_ms;
    ux->connect_timeout_ms = cfg->upstream_connect_timeout_ms;
    ux->keepalive_requests = (unsigned)cfg->upstream_keepalive_requests;
    x->nx = ux;
    ux->anext = pool->live;
    if (pool->live != NULL)
        pool->live->aprev = ux;
    pool->live = ux;
    note_deadline(pool, ux->deadline_ms);
    if (!pool->resolved) {
        kg_log_debug("upstream %s cannot be resolved", cfg->upstream);
        upx_fail(ux, CURLE_COULDNT_RESOLVE_HOST, 502);
        return KG_OK;
    }
    upx_attach(ux, false);
    return KG_OK;
}

void
kg_upclient_send_more(struct kg_exchange *x)
{
    struct kg_upx *ux = x->nx;

    if (ux != NULL && ux->conn != NULL)
        conn_send(ux->conn);
}

void
kg_upclient_recv_more(struct kg_exchange *x)
{
    struct kg_upx *ux = x->nx;
    struct kg_upconn *c = ux != NULL ? ux->conn : NULL;

    if (c == NULL || !c->read_paused || x->down.len > x->down.max / 2)
        return;
    c->read_paused = false;
    conn_set_events(c, conn_wanted_events(c, (c->events & EPOLLOUT) != 0));
}

void
kg_upclient_release(struct kg_exchange *x)
{
    struct kg_upx *ux = x->nx;

    if (ux == NULL)
        return;
    if (ux->conn != NULL)
        conn_close(ux->conn);
    queue_unlink(ux);
    flush_unlink(ux);
    live_unlink(ux);
    free(ux->target);
    free(ux);
    x->nx = NULL;
}
