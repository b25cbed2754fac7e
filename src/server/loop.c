/* server/loop.c - one event loop per worker thread: epoll over the MHD
 * daemons' epoll fds, the curl multi sockets and both libraries' timers.
 * Owns the thread, the epoll set and the curl multi handle; what a request
 * does is http/front.c and proxy/relay.c, always on this thread. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "keygate/log.h"
#include "keygate/loop.h"
#include "keygate/relay.h"
#include "keygate/timeutil.h"

#define MAX_DAEMONS 4
#define EASY_POOL_MAX 256
#define TAG_WAKE ((void *)1)

struct kg_loop {
    int index;
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
    _Atomic long conns;
    bool quiesced;
    pthread_t thread;
    bool started;
    struct kg_exchange *relays;
    CURL *easy_pool[EASY_POOL_MAX];
    size_t neasy;
};

/* Distinguishes a curl socket from a daemon fd in epoll data. */
struct sockref {
    curl_socket_t fd;
};

static int
curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct kg_loop *loop = userp;
    struct epoll_event ev = {0};
    struct sockref *ref = socketp;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, s, NULL);
        free(ref);
        curl_multi_assign(loop->multi, s, NULL);
        return 0;
    }
    if (ref == NULL) {
        ref = calloc(1, sizeof(*ref));
        if (ref == NULL)
            return -1;
        ref->fd = s;
        curl_multi_assign(loop->multi, s, ref);
        ev.events = 0;
        ev.data.ptr = ref;
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno != EEXIST) {
            kg_log_warn("epoll add upstream socket");
            return -1;
        }
    }
    ev.data.ptr = ref;
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    epoll_ctl(loop->epfd, EPOLL_CTL_MOD, s, &ev);
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
kg_loop_new(int index, struct kg_runtime *rt, struct kg_loop **out, struct kg_err *err)
{
    struct kg_loop *loop = calloc(1, sizeof(*loop));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = TAG_WAKE};

    *out = NULL;
    if (loop == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    loop->index = index;
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
    /* Daemon i is tagged as the address of its slot, never a sockref. */
    ev.data.ptr = &loop->daemons[loop->ndaemons];
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, info->epoll_fd, &ev) != 0)
        return kg_err_set(err, KG_EIO, "epoll add daemon: %s", strerror(errno));
    loop->daemon_fds[loop->ndaemons] = info->epoll_fd;
    loop->daemons[loop->ndaemons++] = d;
    return KG_OK;
}

static bool
is_daemon_tag(struct kg_loop *loop, void *p)
{
    return p >= (void *)&loop->daemons[0] && p < (void *)&loop->daemons[MAX_DAEMONS];
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

    for (size_t i = 0; i < loop->ndaemons; i++) {
        MHD_UNSIGNED_LONG_LONG mt;

        if (MHD_get_timeout(loop->daemons[i], &mt) == MHD_YES && (int64_t)mt < t)
            t = (int64_t)mt;
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
            void *p = evs[i].data.ptr;

            if (p == TAG_WAKE) {
                uint64_t v;

                if (read(loop->wakefd, &v, sizeof(v)) < 0) {
                    /* Nothing to do: the wake-up itself was the message. */
                }
            } else if (!is_daemon_tag(loop, p)) {
                struct sockref *ref = p;
                int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                            (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                            (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);

                curl_multi_socket_action(loop->multi, ref->fd, flags, &running);
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

                if (fd != MHD_INVALID_SOCKET)
                    close(fd);
            }
            loop->quiesced = true;
        }
        /* Always run MHD: it also picks up connections the relay resumed. */
        for (size_t i = 0; i < loop->ndaemons; i++)
            MHD_run(loop->daemons[i]);
        drain_curl_messages(loop);
    }
    /* MHD must not be stopped with suspended connections: wake them all and
     * let MHD finish them (the relay answers 503 to anything still waiting). */
    kg_relay_resume_all(loop);
    for (int round = 0; round < 4; round++)
        for (size_t i = 0; i < loop->ndaemons; i++)
            MHD_run(loop->daemons[i]);
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

long
kg_loop_connections(const struct kg_loop *loop)
{
    return atomic_load(&((struct kg_loop *)loop)->conns);
}

void
kg_loop_conn_delta(struct kg_loop *loop, int delta)
{
    atomic_fetch_add(&loop->conns, delta);
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

int
kg_loop_index(const struct kg_loop *loop)
{
    return loop->index;
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
