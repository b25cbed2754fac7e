/* server/loop.c - one event loop per worker thread: epoll over the MHD
 * daemons' epoll fds, the curl multi sockets and both libraries' timers.
 * Owns the thread, the epoll set and the curl multi handle; what a request
 * does is http/front.c and proxy/relay.c, always on this thread. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keygate/accept.h"
#include "keygate/connlimit.h"
#include "keygate/log.h"
#include "keygate/loop.h"
#include "keygate/metrics.h"
#include "keygate/timeutil.h"

#define MAX_DAEMONS 4
#define EASY_POOL_MAX 256
#define ACCEPT_BATCH 64 /* per round and listener: the loop's other work goes on */
#define REAP_EVERY_MS 1000
#define SPARE_FDS 4 /* kept so requests in flight reach the upstream when accept took the rest */
#define TAG_WAKE 1u

/* One client connection (its libmicrohttpd socket_context). While armed it
 * sits on the loop's header list, oldest deadline first. */
struct kg_conn {
    struct kg_conn *prev, *next;
    MHD_socket fd;
    int64_t deadline_ms; /* monotonic: the header block must be complete by then */
    bool armed;
    bool counted; /* against its IP in rt->per_ip */
    struct sockaddr_storage peer;
};

struct kg_loop {
    struct kg_runtime *rt;
    int epfd;
    int wakefd;
    CURLM *multi;
    int64_t curl_deadline_ms; /* monotonic; -1: no curl timer */
    struct MHD_Daemon *daemons[MAX_DAEMONS];
    int daemon_fds[MAX_DAEMONS];
    size_t ndaemons;
    _Atomic bool stop;
    _Atomic bool quiesce;
    bool quiesced;
    _Atomic bool quiesce_done; /* listeners closed, their last connections handed to MHD */
    pthread_t thread;
    bool started;
    struct kg_loop_transfer *transfers; /* live upstream transfers (proxy/relay.c) */
    unsigned char *sock_state;          /* per fd: SOCK_* */
    size_t nsock_state;
    CURL *easy_pool[EASY_POOL_MAX];
    struct kg_upurl easy_url[EASY_POOL_MAX]; /* each pooled handle's own CURLU */
    size_t neasy;
    struct kg_upbase *upbase;                   /* the upstream parsed once (server/upurl.c) */
    struct kg_acceptor *acceptors[MAX_DAEMONS]; /* NULL once quiesced */
    int64_t accept_retry_ms[MAX_DAEMONS];       /* monotonic: a stalled acceptor's next try */
    bool conn_closed;                           /* a connection closed: retry stalled accepts */
    struct kg_conn *hdr_head, *hdr_tail;        /* connections still reading a header block */
    int spare[SPARE_FDS]; /* /dev/null descriptors kept for upstream sockets */
    size_t nspare;
    int64_t reaped_ms;                    /* monotonic: the last reap_dead_headers() on the timer */
    int64_t mhd_deadline_ms[MAX_DAEMONS]; /* monotonic; -1: no timer */
    bool mhd_due[MAX_DAEMONS];            /* its epoll fd reported events */
    bool resumed;                         /* a connection was resumed this round */
    _Atomic bool kicked;                  /* resumed from another thread */
    struct kg_loop_ext *ext;              /* the native upstream client's pool, or NULL */
};

/* epoll data: TAG_WAKE, a daemon tag (TAG_DAEMON + i), a listen socket
 * (TAG_LISTEN + i), or TAG_CURL | fd. */
#define TAG_DAEMON 2u
#define TAG_LISTEN (TAG_DAEMON + MAX_DAEMONS)
#define TAG_CURL (1ull << 63)
#define TAG_IO (1ull << 62) /* | the address of a struct kg_loop_io */

/* An upstream socket stays in the epoll set between transfers (with no
 * events) instead of being removed and added back for every request: two
 * epoll_ctl calls fewer per proxied request on a reused connection. The
 * kernel drops it from the set when curl closes it. */
enum { SOCK_NONE = 0, SOCK_IDLE, SOCK_WATCHED };

static bool
sock_state_grow(struct kg_loop *loop, curl_socket_t s)
{
    size_t n = loop->nsock_state;

    if ((size_t)s < n)
        return true;
    while (n <= (size_t)s)
        n = n == 0 ? 1024 : n * 2;
    {
        unsigned char *ns = realloc(loop->sock_state, n);

        if (ns == NULL)
            return false;
        memset(ns + loop->nsock_state, 0, n - loop->nsock_state);
        loop->sock_state = ns;
        loop->nsock_state = n;
    }
    return true;
}

/* Never returns -1: libcurl (7.88) then marks the whole multi handle dead,
 * and every transfer of this loop, now and later, would hang. */
static int
curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct kg_loop *loop = userp;
    struct epoll_event ev = {.data.u64 = TAG_CURL | (uint64_t)s};
    bool tracked;

    (void)easy;
    (void)socketp;
    if (s < 0)
        return 0;
    /* Out of memory for the state table: the socket is still watched, only
     * not kept in the set while idle (an idle one would report HUP). */
    tracked = sock_state_grow(loop, s);
    if (!tracked && what == CURL_POLL_REMOVE) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    ev.events = what == CURL_POLL_REMOVE
                    ? 0
                    : (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, s, &ev) != 0) {
        if (what == CURL_POLL_REMOVE) {
            loop->sock_state[s] = SOCK_NONE;
            return 0;
        }
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, s, &ev) != 0) {
            /* Unwatched, the transfer ends at upstream_timeout (a 504). */
            kg_log_warn("epoll add upstream socket");
            if (tracked)
                loop->sock_state[s] = SOCK_NONE;
            return 0;
        }
    }
    if (tracked)
        loop->sock_state[s] = what == CURL_POLL_REMOVE ? SOCK_IDLE : SOCK_WATCHED;
    return 0;
}

static int
curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct kg_loop *loop = userp;

    (void)multi;
    loop->curl_deadline_ms = timeout_ms < 0 ? -1 : kg_time_mono_ms() + timeout_ms;
    return 0;
}

static void refill_spares(struct kg_loop *loop);

enum kg_status
kg_loop_new(struct kg_runtime *rt, struct kg_loop **out, struct kg_err *err)
{
    struct kg_loop *loop = calloc(1, sizeof(*loop));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};

    *out = NULL;
    if (loop == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    loop->rt = rt;
    loop->curl_deadline_ms = -1;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->multi = curl_multi_init();
    refill_spares(loop);
    if (loop->epfd < 0 || loop->wakefd < 0 || loop->multi == NULL ||
        epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) != 0) {
        kg_loop_free(loop);
        return kg_err_set(err, KG_EIO, "cannot set up event loop: %s", strerror(errno));
    }
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
    {
        const struct kg_config *cfg = kg_cfgswap_acquire(rt->config);

        /* Idle upstream connections kept (curl closes the oldest past it) and
         * connections open at once; transfers beyond wait in curl's queue.
         * Both set once: restart-only (server/reload.c). */
        curl_multi_setopt(loop->multi, CURLMOPT_MAXCONNECTS, (long)cfg->upstream_keepalive);
        curl_multi_setopt(loop->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                          (long)cfg->upstream_max_connections);
        kg_cfgswap_release(cfg);
    }
    *out = loop;
    return KG_OK;
}

enum kg_status
kg_loop_add_daemon(struct kg_loop *loop, struct MHD_Daemon *d, int lfd, struct kg_err *err)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
    struct epoll_event ev = {.events = EPOLLIN};
    struct kg_acceptor *acc = NULL;
    size_t i = loop->ndaemons;
    enum kg_status rc;

    if (i == MAX_DAEMONS || info == NULL) {
        close(lfd);
        return kg_err_set(err, KG_EINVAL, "cannot drive this daemon");
    }
    rc = kg_acceptor_new(loop->rt, lfd, d, "public", true, &acc, err);
    if (rc != KG_OK) {
        close(lfd);
        return rc;
    }
    ev.data.u64 = TAG_DAEMON + i;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, info->epoll_fd, &ev) != 0) {
        kg_acceptor_free(acc);
        return kg_err_set(err, KG_EIO, "epoll add daemon: %s", strerror(errno));
    }
    ev.data.u64 = TAG_LISTEN + i;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, lfd, &ev) != 0) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, info->epoll_fd, NULL);
        kg_acceptor_free(acc);
        return kg_err_set(err, KG_EIO, "epoll add listen socket: %s", strerror(errno));
    }
    loop->acceptors[i] = acc;
    loop->daemon_fds[i] = info->epoll_fd;
    loop->daemons[i] = d;
    loop->ndaemons++;
    return KG_OK;
}

static void reap_dead_headers(struct kg_loop *loop);

/* Accepts on listener i; on a stall, stops polling it until the retry. */
static void
accept_on(struct kg_loop *loop, size_t i, int64_t now)
{
    struct kg_acceptor *acc = loop->acceptors[i];
    bool was = kg_acceptor_stalled(acc), added;
    enum kg_accept_state st = kg_acceptor_run(acc, ACCEPT_BATCH, &added);
    struct epoll_event ev = {.data.u64 = TAG_LISTEN + i};

    if (added)
        loop->mhd_due[i] = true;
    if (st == KG_ACCEPT_STALLED) {
        loop->accept_retry_ms[i] = now + KG_ACCEPT_RETRY_MS;
        reap_dead_headers(loop);
        if (!was) {
            ev.events = 0; /* level-triggered: polled, it would spin */
            epoll_ctl(loop->epfd, EPOLL_CTL_MOD, kg_acceptor_fd(acc), &ev);
        }
    } else if (was) {
        ev.events = EPOLLIN;
        epoll_ctl(loop->epfd, EPOLL_CTL_MOD, kg_acceptor_fd(acc), &ev);
    }
}

/* Connections the kernel completed but nobody accepted yet would be reset
 * when the listening socket closes: each is a client whose request the
 * drain would drop. They are taken in and answered like the rest first. */
static void
close_listeners(struct kg_loop *loop)
{
    for (size_t i = 0; i < loop->ndaemons; i++) {
        bool added = false;

        if (loop->acceptors[i] == NULL)
            continue;
        while (kg_acceptor_run(loop->acceptors[i], ACCEPT_BATCH, &added) == KG_ACCEPT_MORE)
            ;
        if (added)
            loop->mhd_due[i] = true;
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, kg_acceptor_fd(loop->acceptors[i]), NULL);
        kg_acceptor_free(loop->acceptors[i]);
        loop->acceptors[i] = NULL;
    }
}

/* Keeps SPARE_FDS descriptors in reserve; refilled before any accept, so
 * when descriptors come back the requests already in flight get theirs. */
static void
refill_spares(struct kg_loop *loop)
{
    while (loop->nspare < SPARE_FDS) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        if (fd < 0)
            break;
        loop->spare[loop->nspare++] = fd;
    }
}

int
kg_loop_socket(struct kg_loop *loop, int family, int type, int protocol)
{
    int s = socket(family, type | SOCK_CLOEXEC, protocol);

    /* Out of descriptors (a flood of clients took them): give up a spare. */
    if (s < 0 && (errno == EMFILE || errno == ENFILE) && loop->nspare > 0) {
        close(loop->spare[--loop->nspare]);
        s = socket(family, type | SOCK_CLOEXEC, protocol);
    }
    return s;
}

curl_socket_t
kg_loop_open_upstream_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    int s;

    (void)purpose;
    s = kg_loop_socket(clientp, a->family, a->socktype, a->protocol);
    return s < 0 ? CURL_SOCKET_BAD : s;
}

int
kg_loop_io_ctl(struct kg_loop *loop, int op, int fd, uint32_t events, struct kg_loop_io *io)
{
    struct epoll_event ev = {.events = events, .data.u64 = TAG_IO | (uint64_t)(uintptr_t)io};

    return epoll_ctl(loop->epfd, op, fd, &ev);
}

struct kg_loop_ext *
kg_loop_ext(struct kg_loop *loop)
{
    return loop->ext;
}

void
kg_loop_set_ext(struct kg_loop *loop, struct kg_loop_ext *e)
{
    loop->ext = e;
}

/* ---- client connections: the header deadline and the per-IP count ---- */

static struct kg_conn *
conn_ctx(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci != NULL ? ci->socket_context : NULL;
}

static void
hdr_unlink(struct kg_loop *loop, struct kg_conn *c)
{
    if (!c->armed)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        loop->hdr_head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        loop->hdr_tail = c->prev;
    c->prev = c->next = NULL;
    c->armed = false;
}

/* Appends: every deadline is now + the same timeout, so the list stays in
 * order (a reload that changes the timeout bends it for one round of
 * connections at most). */
static void
hdr_arm(struct kg_loop *loop, struct kg_conn *c)
{
    const struct kg_config *cfg = kg_cfgswap_acquire(loop->rt->config);

    hdr_unlink(loop, c);
    c->deadline_ms = kg_time_mono_ms() + cfg->client_header_timeout_ms;
    kg_cfgswap_release(cfg);
    c->prev = loop->hdr_tail;
    if (loop->hdr_tail != NULL)
        loop->hdr_tail->next = c;
    else
        loop->hdr_head = c;
    loop->hdr_tail = c;
    c->armed = true;
}

void *
kg_loop_conn_open(struct kg_loop *loop, struct MHD_Connection *conn)
{
    struct kg_conn *c = calloc(1, sizeof(*c));
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ad =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    /* Taken from the acceptor even when c cannot be made: given back below. */
    bool counted = kg_accept_claim_slot();

    if (c == NULL || fd == NULL || ad == NULL || ad->client_addr == NULL) {
        if (counted && ad != NULL && ad->client_addr != NULL)
            kg_connlimit_release(loop->rt->per_ip, ad->client_addr);
        free(c);
        return NULL;
    }
    c->fd = fd->connect_fd;
    c->counted = counted;
    memcpy(&c->peer, ad->client_addr,
           ad->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                  : sizeof(struct sockaddr_in));
    hdr_arm(loop, c);
    return c;
}

/* libmicrohttpd's idle timeout of conn, in seconds. Set only when it
 * changes: with client_body_timeout equal to client_timeout (the default)
 * every request would set the same value twice, each time a mutex and a
 * move in the library's timeout list (the connection was just active, so
 * it is at the head of that list already). */
static void
conn_set_timeout(struct MHD_Connection *conn, unsigned int s)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_TIMEOUT);

    if (s != 0 && ci != NULL && ci->connection_timeout == s)
        return;
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s);
}

void
kg_loop_conn_headers_done(struct kg_loop *loop, struct MHD_Connection *conn)
{
    struct kg_conn *c = conn_ctx(conn);
    const struct kg_config *cfg;

    if (c == NULL || !c->armed)
        return;
    hdr_unlink(loop, c);
    /* From here libmicrohttpd's idle timeout is the body's progress deadline. */
    cfg = kg_cfgswap_acquire(loop->rt->config);
    conn_set_timeout(conn, (unsigned int)((cfg->client_body_timeout_ms + 999) / 1000));
    kg_cfgswap_release(cfg);
}

void
kg_loop_conn_request_done(struct kg_loop *loop, struct MHD_Connection *conn)
{
    struct kg_conn *c = conn_ctx(conn);
    const struct kg_config *cfg;

    if (c == NULL)
        return;
    cfg = kg_cfgswap_acquire(loop->rt->config);
    conn_set_timeout(conn, (unsigned int)((cfg->client_timeout_ms + 999) / 1000));
    kg_cfgswap_release(cfg);
    hdr_arm(loop, c);
}

void
kg_loop_conn_close(struct kg_loop *loop, void *ctx)
{
    struct kg_conn *c = ctx;

    loop->conn_closed = true;
    if (c == NULL)
        return;
    hdr_unlink(loop, c);
    if (c->counted)
        kg_connlimit_release(loop->rt->per_ip, (const struct sockaddr *)&c->peer);
    free(c);
}

/* Out of descriptors: frees those held by connections whose client hung up
 * before its header block was complete. libmicrohttpd (edge-triggered)
 * misses an end of stream that arrived together with the first bytes, as
 * it does for every connection that waited in the accept queue while its
 * client gave up: such a connection would keep its descriptor until the
 * header deadline. shutdown() gives the library a fresh event to close on. */
static void
reap_dead_headers(struct kg_loop *loop)
{
    struct pollfd p[128];
    struct kg_conn *c = loop->hdr_head;

    while (c != NULL) {
        struct kg_conn *batch[128];
        nfds_t n = 0;

        for (; c != NULL && n < 128; c = c->next, n++) {
            p[n] = (struct pollfd){.fd = c->fd, .events = POLLRDHUP};
            batch[n] = c;
        }
        if (poll(p, n, 0) <= 0)
            continue;
        for (nfds_t k = 0; k < n; k++) {
            if ((p[k].revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0)
                continue;
            hdr_unlink(loop, batch[k]);
            shutdown(batch[k]->fd, SHUT_RDWR);
            for (size_t i = 0; i < loop->ndaemons; i++)
                loop->mhd_due[i] = true;
        }
    }
}

/* Cuts every connection whose header block is overdue: shutdown() makes
 * libmicrohttpd read EOF and close it on its next run. */
static void
expire_headers(struct kg_loop *loop, int64_t now)
{
    while (loop->hdr_head != NULL && loop->hdr_head->deadline_ms <= now) {
        struct kg_conn *c = loop->hdr_head;

        hdr_unlink(loop, c);
        /* Counted first: the client sees the cut at once and may ask
         * /metrics before this thread runs again. */
        kg_metrics_header_timeout();
        shutdown(c->fd, SHUT_RDWR);
        for (size_t i = 0; i < loop->ndaemons; i++)
            loop->mhd_due[i] = true;
    }
}

static void
drain_curl_messages(struct kg_loop *loop)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(loop->multi, &left)) != NULL) {
        struct kg_loop_transfer *t = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t != NULL)
            t->done(t, msg->data.result);
    }
}

static int
compute_timeout(struct kg_loop *loop)
{
    int64_t now = kg_time_mono_ms();
    int64_t t = 1000; /* wake at least once a second to notice stop and drain */

    if (loop->resumed)
        return 0;

    for (size_t i = 0; i < loop->ndaemons; i++) {
        MHD_UNSIGNED_LONG_LONG mt;

        loop->mhd_deadline_ms[i] = -1;
        if (MHD_get_timeout(loop->daemons[i], &mt) == MHD_YES) {
            loop->mhd_deadline_ms[i] = now + (int64_t)mt;
            if ((int64_t)mt < t)
                t = (int64_t)mt;
        }
    }
    if (loop->curl_deadline_ms >= 0) {
        int64_t ct = loop->curl_deadline_ms - now;

        if (ct < t)
            t = ct < 0 ? 0 : ct;
    }
    if (loop->ext != NULL) {
        int64_t et = loop->ext->deadline(loop->ext);

        if (et >= 0 && et - now < t)
            t = et - now < 0 ? 0 : et - now;
    }
    if (loop->hdr_head != NULL) {
        int64_t ht = loop->hdr_head->deadline_ms - now;

        if (ht < t)
            t = ht < 0 ? 0 : ht;
    }
    for (size_t i = 0; i < loop->ndaemons; i++) {
        if (loop->acceptors[i] != NULL && kg_acceptor_stalled(loop->acceptors[i])) {
            int64_t at = loop->conn_closed ? 0 : loop->accept_retry_ms[i] - now;

            if (at < t)
                t = at < 0 ? 0 : at;
        }
    }
    return (int)t;
}

static void *
loop_main(void *arg)
{
    struct kg_loop *loop = arg;
    struct epoll_event evs[64];
    int running;

    while (!atomic_load(&loop->stop)) {
        int n = epoll_wait(loop->epfd, evs, 64, compute_timeout(loop));

        if (n < 0 && errno != EINTR) {
            kg_log_warn("epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;

            if (tag >= TAG_DAEMON && tag < TAG_DAEMON + MAX_DAEMONS) {
                loop->mhd_due[tag - TAG_DAEMON] = true;
            } else if (tag >= TAG_LISTEN && tag < TAG_LISTEN + MAX_DAEMONS) {
                if (loop->acceptors[tag - TAG_LISTEN] != NULL)
                    accept_on(loop, tag - TAG_LISTEN, kg_time_mono_ms());
            } else if (tag == TAG_WAKE) {
                uint64_t v;

                if (read(loop->wakefd, &v, sizeof(v)) < 0) {
                    /* Nothing to do: the wake-up itself was the message. */
                }
            } else if ((tag & TAG_CURL) == 0 && (tag & TAG_IO) != 0) {
                struct kg_loop_io *io = (struct kg_loop_io *)(uintptr_t)(tag & ~TAG_IO);

                io->fn(io, evs[i].events);
            } else if ((tag & TAG_CURL) != 0) {
                curl_socket_t fd = (curl_socket_t)(tag & ~TAG_CURL);
                int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                            (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                            (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);

                /* An idle socket still reports HUP/ERR (level-triggered, even
                 * with no events asked): drop it, curl notices on reuse. */
                if ((size_t)fd < loop->nsock_state && loop->sock_state[fd] == SOCK_IDLE) {
                    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
                    loop->sock_state[fd] = SOCK_NONE;
                    continue;
                }
                curl_multi_socket_action(loop->multi, fd, flags, &running);
            }
        }
        if (loop->curl_deadline_ms >= 0 && kg_time_mono_ms() >= loop->curl_deadline_ms) {
            loop->curl_deadline_ms = -1;
            curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        drain_curl_messages(loop);
        if (loop->ext != NULL)
            loop->ext->run(loop->ext, kg_time_mono_ms());
        {
            int64_t now = kg_time_mono_ms();
            bool closed = loop->conn_closed;

            /* A stalled listener is tried again on its timer or as soon as a
             * connection of this loop closed (a descriptor came free). */
            loop->conn_closed = false;
            if (loop->nspare < SPARE_FDS)
                refill_spares(loop);
            for (size_t i = 0; i < loop->ndaemons; i++) {
                if (loop->acceptors[i] != NULL && kg_acceptor_stalled(loop->acceptors[i]) &&
                    (closed || now >= loop->accept_retry_ms[i]))
                    accept_on(loop, i, now);
            }
            expire_headers(loop, now);
            /* Once a second too: a hung-up client's descriptor comes back
             * within a second instead of at its header deadline. */
            if (loop->hdr_head != NULL && now - loop->reaped_ms >= REAP_EVERY_MS) {
                loop->reaped_ms = now;
                reap_dead_headers(loop);
            }
        }
        if (atomic_load(&loop->quiesce) && !loop->quiesced) {
            close_listeners(loop);
            loop->quiesced = true;
        }
        /* Run a daemon only when it has work: events on its epoll fd, a
         * timer due (0 also means "data already buffered"), or a connection
         * the relay resumed. Each MHD_run costs an epoll_wait of its own. */
        {
            int64_t now = kg_time_mono_ms();
            bool resumed = loop->resumed || atomic_exchange(&loop->kicked, false);

            loop->resumed = false;
            for (size_t i = 0; i < loop->ndaemons; i++) {
                if (loop->mhd_due[i] || resumed || loop->quiesced ||
                    (loop->mhd_deadline_ms[i] >= 0 && now >= loop->mhd_deadline_ms[i])) {
                    loop->mhd_due[i] = false;
                    MHD_run(loop->daemons[i]);
                }
            }
            /* What the last accept pass took in has had its MHD round. */
            if (loop->quiesced)
                atomic_store(&loop->quiesce_done, true);
        }
        drain_curl_messages(loop);
    }
    /* MHD must not be stopped with suspended connections: wake them all and
     * let MHD finish them (the relay answers 503 to anything still waiting). */
    for (int round = 0; round < 100; round++) {
        bool suspended = false;

        for (struct kg_loop_transfer *t = loop->transfers; t != NULL; t = t->next)
            t->abort(t);
        for (size_t i = 0; i < loop->ndaemons; i++)
            MHD_run(loop->daemons[i]);
        for (struct kg_loop_transfer *t = loop->transfers; t != NULL && !suspended; t = t->next)
            suspended = t->suspended;
        if (!suspended)
            break;
    }
    return NULL;
}

enum kg_status
kg_loop_start(struct kg_loop *loop, struct kg_err *err)
{
    int e = pthread_create(&loop->thread, NULL, loop_main, loop);

    if (e != 0)
        return kg_err_set(err, KG_EIO, "cannot start loop thread: %s", strerror(e));
    loop->started = true;
    return KG_OK;
}

static void
wake(struct kg_loop *loop)
{
    uint64_t one = 1;

    if (write(loop->wakefd, &one, sizeof(one)) < 0) {
        /* The counter is already non-zero: the loop will wake anyway. */
    }
}

void
kg_loop_quiesce(struct kg_loop *loop)
{
    atomic_store(&loop->quiesce, true);
    wake(loop);
}

bool
kg_loop_quiesced(struct kg_loop *loop)
{
    return !loop->started || atomic_load(&loop->quiesce_done);
}

void
kg_loop_conn_delta(struct kg_loop *loop, int delta)
{
    atomic_fetch_add(&loop->rt->connections, delta);
}

void
kg_loop_stop(struct kg_loop *loop)
{
    if (loop == NULL || !loop->started)
        return;
    atomic_store(&loop->stop, true);
    wake(loop);
    pthread_join(loop->thread, NULL);
    loop->started = false;
}

void
kg_loop_free(struct kg_loop *loop)
{
    if (loop == NULL)
        return;
    kg_loop_stop(loop);
    close_listeners(loop);
    for (size_t i = 0; i < loop->ndaemons; i++)
        MHD_stop_daemon(loop->daemons[i]);
    if (loop->ext != NULL)
        loop->ext->free(loop->ext);
    for (size_t i = 0; i < loop->neasy; i++) {
        curl_easy_cleanup(loop->easy_pool[i]);
        kg_upurl_cleanup(&loop->easy_url[i]);
    }
    kg_upbase_free(loop->upbase);
    if (loop->multi != NULL)
        curl_multi_cleanup(loop->multi);
    free(loop->sock_state);
    while (loop->nspare > 0)
        close(loop->spare[--loop->nspare]);
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    free(loop);
}

CURLM *
kg_loop_multi(struct kg_loop *loop)
{
    return loop->multi;
}

struct kg_runtime *
kg_loop_runtime(struct kg_loop *loop)
{
    return loop->rt;
}

void
kg_loop_transfer_add(struct kg_loop *loop, struct kg_loop_transfer *t)
{
    t->prev = NULL;
    t->next = loop->transfers;
    if (loop->transfers != NULL)
        loop->transfers->prev = t;
    loop->transfers = t;
}

void
kg_loop_transfer_remove(struct kg_loop *loop, struct kg_loop_transfer *t)
{
    if (t->prev != NULL)
        t->prev->next = t->next;
    else if (loop->transfers == t)
        loop->transfers = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->next = t->prev = NULL;
}

CURL *
kg_loop_easy_get(struct kg_loop *loop, struct kg_upurl *url)
{
    if (loop->neasy > 0) {
        loop->neasy--;
        *url = loop->easy_url[loop->neasy];
        return loop->easy_pool[loop->neasy];
    }
    url->u = NULL;
    url->gen = 0;
    return curl_easy_init();
}

void
kg_loop_easy_put(struct kg_loop *loop, CURL *easy, struct kg_upurl *url)
{
    if (easy == NULL || loop->neasy == EASY_POOL_MAX) {
        curl_easy_cleanup(easy);
        kg_upurl_cleanup(url);
        return;
    }
    /* Not reset: the relay sets what varies per transfer, and a reset would
     * free and rebuild what does not. */
    loop->easy_pool[loop->neasy] = easy;
    loop->easy_url[loop->neasy++] = *url;
    url->u = NULL;
}

struct kg_upbase *
kg_loop_upbase(struct kg_loop *loop)
{
    if (loop->upbase == NULL)
        loop->upbase = kg_upbase_new();
    return loop->upbase;
}

void
kg_loop_note_resume(struct kg_loop *loop)
{
    loop->resumed = true;
}

void
kg_loop_kick(struct kg_loop *loop)
{
    /* In external-poll mode libmicrohttpd has no channel of its own to
     * notice a resume from another thread: flag it and wake the loop. */
    atomic_store(&loop->kicked, true);
    wake(loop);
}
