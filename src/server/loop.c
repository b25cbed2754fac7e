/* server/loop.c - one event loop per worker thread: epoll over the MHD
 * daemons' epoll fds, the curl multi sockets and both libraries' timers.
 * Owns the thread, the epoll set and the curl multi handle; what a request
 * does is http/front.c and proxy/relay.c, always on this thread. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "keygate/log.h"
#include "keygate/loop.h"
#include "keygate/relay.h"
#include "keygate/timeutil.h"

#define MAX_DAEMONS 4
#define EASY_POOL_MAX 256
#define TAG_WAKE 1u

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
    pthread_t thread;
    bool started;
    struct kg_exchange *relays;
    unsigned char *sock_state; /* per fd: SOCK_* */
    size_t nsock_state;
    CURL *easy_pool[EASY_POOL_MAX];
    size_t neasy;
    int64_t mhd_deadline_ms[MAX_DAEMONS]; /* monotonic; -1: no timer */
    bool mhd_due[MAX_DAEMONS];            /* its epoll fd reported events */
    bool resumed;                         /* a connection was resumed this round */
    _Atomic bool kicked;                  /* resumed from another thread */
};

/* epoll data: TAG_WAKE, a daemon tag (TAG_DAEMON + i), or TAG_CURL | fd. */
#define TAG_DAEMON 2u
#define TAG_CURL (1ull << 63)

/* An upstream socket stays in the epoll set between transfers (with no
 * events) instead of being removed and added back for every request: two
 * epoll_ctl calls fewer per proxied request on a reused connection. The
 * kernel drops it from the set when curl closes it. */
enum { SOCK_NONE = 0, SOCK_IDLE, SOCK_WATCHED };

static void adopt_pending(struct MHD_Daemon *d, MHD_socket fd);

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

static int
curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct kg_loop *loop = userp;
    struct epoll_event ev = {.data.u64 = TAG_CURL | (uint64_t)s};

    (void)easy;
    (void)socketp;
    if (s < 0 || !sock_state_grow(loop, s))
        return -1;
    ev.events = what == CURL_POLL_REMOVE
                    ? 0
                    : (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, s, &ev) != 0) {
        if (what == CURL_POLL_REMOVE) {
            loop->sock_state[s] = SOCK_NONE;
            return 0;
        }
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, s, &ev) != 0) {
            kg_log_warn("epoll add upstream socket");
            return -1;
        }
    }
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
    if (loop->epfd < 0 || loop->wakefd < 0 || loop->multi == NULL ||
        epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) != 0) {
        kg_loop_free(loop);
        return kg_err_set(err, KG_EIO, "cannot set up event loop: %s", strerror(errno));
    }
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
    /* Keep enough idle upstream connections for every concurrent exchange to reuse one. */
    curl_multi_setopt(loop->multi, CURLMOPT_MAXCONNECTS, 512L);
    *out = loop;
    return KG_OK;
}

enum kg_status
kg_loop_add_daemon(struct kg_loop *loop, struct MHD_Daemon *d, struct kg_err *err)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
    struct epoll_event ev = {.events = EPOLLIN};

    if (loop->ndaemons == MAX_DAEMONS || info == NULL)
        return kg_err_set(err, KG_EINVAL, "cannot drive this daemon");
    ev.data.u64 = TAG_DAEMON + loop->ndaemons;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, info->epoll_fd, &ev) != 0)
        return kg_err_set(err, KG_EIO, "epoll add daemon: %s", strerror(errno));
    loop->daemon_fds[loop->ndaemons] = info->epoll_fd;
    loop->daemons[loop->ndaemons++] = d;
    return KG_OK;
}

static void
drain_curl_messages(struct kg_loop *loop)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(loop->multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE)
            kg_relay_on_done(msg->easy_handle, msg->data.result);
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
            } else if (tag == TAG_WAKE) {
                uint64_t v;

                if (read(loop->wakefd, &v, sizeof(v)) < 0) {
                    /* Nothing to do: the wake-up itself was the message. */
                }
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
        if (atomic_load(&loop->quiesce) && !loop->quiesced) {
            for (size_t i = 0; i < loop->ndaemons; i++) {
                MHD_socket fd = MHD_quiesce_daemon(loop->daemons[i]);

                if (fd != MHD_INVALID_SOCKET) {
                    adopt_pending(loop->daemons[i], fd);
                    close(fd);
                }
            }
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
        }
        drain_curl_messages(loop);
    }
    /* MHD must not be stopped with suspended connections: wake them all and
     * let MHD finish them (the relay answers 503 to anything still waiting). */
    for (int round = 0; round < 100; round++) {
        kg_relay_resume_all(loop);
        for (size_t i = 0; i < loop->ndaemons; i++)
            MHD_run(loop->daemons[i]);
        if (!kg_relay_any_suspended(loop))
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

/* Connections the kernel completed but nobody accepted yet would be reset
 * when the listening socket closes: each is a client whose request the
 * drain would drop. They are taken in and answered like the rest. */
static void
adopt_pending(struct MHD_Daemon *d, MHD_socket fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int c = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (c < 0)
            return;
        /* On failure the library has closed the socket itself. */
        (void)MHD_add_connection(d, c, (struct sockaddr *)&ss, len);
    }
}

void
kg_loop_quiesce(struct kg_loop *loop)
{
    atomic_store(&loop->quiesce, true);
    wake(loop);
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
    for (size_t i = 0; i < loop->ndaemons; i++)
        MHD_stop_daemon(loop->daemons[i]);
    for (size_t i = 0; i < loop->neasy; i++)
        curl_easy_cleanup(loop->easy_pool[i]);
    if (loop->multi != NULL)
        curl_multi_cleanup(loop->multi);
    free(loop->sock_state);
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

struct kg_exchange **
kg_loop_relay_list(struct kg_loop *loop)
{
    return &loop->relays;
}

CURL *
kg_loop_easy_get(struct kg_loop *loop)
{
    if (loop->neasy > 0)
        return loop->easy_pool[--loop->neasy];
    return curl_easy_init();
}

void
kg_loop_easy_put(struct kg_loop *loop, CURL *easy)
{
    if (easy == NULL)
        return;
    if (loop->neasy == EASY_POOL_MAX) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    loop->easy_pool[loop->neasy++] = easy;
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
