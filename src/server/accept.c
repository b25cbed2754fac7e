/* server/accept.c - listen sockets and accept() for both listeners
 * (keygate/accept.h): the descriptor-exhaustion handling libmicrohttpd
 * 0.9.75 lacks in external-poll mode, and the per-IP connection cap. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "keygate/accept.h"
#include "keygate/connlimit.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/timeutil.h"

#define LOG_EVERY_MS 10000

struct kg_acceptor {
    struct kg_runtime *rt;
    struct MHD_Daemon *d;
    int fd;
    const char *name;
    bool per_ip;
    bool stalled;           /* from a failed accept until the queue is empty again */
    bool announced;         /* this stall was logged: its end is logged too */
    int64_t logged_ms;      /* monotonic: the last stall line; 0 = never */
    unsigned long failures; /* failed accepts since the last stall line */
};

/* Set by kg_acceptor_run around MHD_add_connection, taken by the daemon's
 * connection notifier inside that call (same thread). */
static _Thread_local bool slot_pending;

int
kg_accept_listen(const struct sockaddr_storage *addr, bool reuseport, int backlog,
                 struct kg_err *err)
{
    int one = 1;
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);

    if (fd < 0) {
        kg_err_set(err, KG_EIO, "socket: %s", strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        (addr->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)addr, len) != 0 || listen(fd, backlog) != 0) {
        kg_err_set(err, KG_EIO, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

enum kg_status
kg_acceptor_new(struct kg_runtime *rt, int lfd, struct MHD_Daemon *d, const char *name, bool per_ip,
                struct kg_acceptor **out, struct kg_err *err)
{
    struct kg_acceptor *acc = calloc(1, sizeof(*acc));

    *out = NULL;
    if (acc == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    acc->rt = rt;
    acc->d = d;
    acc->fd = lfd;
    acc->name = name;
    acc->per_ip = per_ip && rt->per_ip != NULL;
    *out = acc;
    return KG_OK;
}

static void
set_stalled(struct kg_acceptor *acc, bool on)
{
    if (acc->stalled == on)
        return;
    acc->stalled = on;
    atomic_fetch_add(&acc->rt->accept_stalled, on ? 1 : -1);
    if (!on && acc->announced) {
        kg_log_info("%s listener: accepting connections again (%lu failed accepts since the "
                    "last message)",
                    acc->name, acc->failures);
        acc->failures = 0;
        acc->announced = false;
    }
}

void
kg_acceptor_free(struct kg_acceptor *acc)
{
    if (acc == NULL)
        return;
    if (acc->stalled)
        atomic_fetch_sub(&acc->rt->accept_stalled, 1);
    if (acc->fd >= 0)
        close(acc->fd);
    free(acc);
}

int
kg_acceptor_fd(const struct kg_acceptor *acc)
{
    return acc->fd;
}

bool
kg_acceptor_stalled(const struct kg_acceptor *acc)
{
    return acc->stalled;
}

bool
kg_accept_claim_slot(void)
{
    bool was = slot_pending;

    slot_pending = false;
    return was;
}

static enum kg_accept_reason
reason_of(int e)
{
    switch (e) {
    case EMFILE:
        return KG_ACCEPT_EMFILE;
    case ENFILE:
        return KG_ACCEPT_ENFILE;
    case ENOBUFS:
    case ENOMEM:
        return KG_ACCEPT_ENOMEM;
    default:
        return KG_ACCEPT_OTHER;
    }
}

/* A failed accept that will not clear by itself on the next call. */
static void
note_failure(struct kg_acceptor *acc, int e)
{
    int64_t now = kg_time_mono_ms();

    kg_metrics_accept_error(reason_of(e));
    atomic_store(&acc->rt->accept_errno, e);
    acc->failures++;
    /* At most one line per LOG_EVERY_MS, however often it flaps. */
    if (acc->logged_ms == 0 || now - acc->logged_ms >= LOG_EVERY_MS) {
        kg_log_warnx("%s listener: cannot accept connections: %s (%lu failed accepts since the "
                     "last message); retrying every %d ms and whenever a connection closes",
                     acc->name, strerror(e), acc->failures, KG_ACCEPT_RETRY_MS);
        acc->logged_ms = now;
        acc->failures = 0;
        acc->announced = true;
    }
    set_stalled(acc, true);
}

/* Whether sa's IP may open one more connection; counts it when so. */
static bool
per_ip_admit(struct kg_acceptor *acc, const struct sockaddr *sa)
{
    const struct kg_config *cfg;
    int max;

    if (!acc->per_ip)
        return true;
    cfg = kg_cfgswap_acquire(acc->rt->config);
    max = cfg->max_connections_per_ip;
    kg_cfgswap_release(cfg);
    if (max <= 0)
        return true;
    if (kg_connlimit_take(acc->rt->per_ip, sa, (unsigned)max)) {
        slot_pending = true;
        return true;
    }
    kg_metrics_connection_refused();
    return false;
}

enum kg_accept_state
kg_acceptor_run(struct kg_acceptor *acc, unsigned batch, bool *added)
{
    *added = false;
    for (unsigned i = 0; i < batch; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int s = accept4(acc->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (s < 0) {
            int e = errno;

            if (e == EAGAIN || e == EWOULDBLOCK) {
                set_stalled(acc, false);
                return KG_ACCEPT_DRAINED;
            }
            /* The peer gave up in the queue, or a signal: try the next one. */
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM)
                continue;
            note_failure(acc, e);
            return KG_ACCEPT_STALLED;
        }
        if (!per_ip_admit(acc, (const struct sockaddr *)&peer)) {
            close(s); /* over the cap: closed at once, unanswered */
            continue;
        }
        /* libmicrohttpd closes s itself when it cannot take it. */
        if (MHD_add_connection(acc->d, s, (const struct sockaddr *)&peer, plen) == MHD_YES)
            *added = true;
        if (kg_accept_claim_slot())
            kg_connlimit_release(acc->rt->per_ip, (const struct sockaddr *)&peer);
    }
    return KG_ACCEPT_MORE;
}

/* ---- a thread that accepts (the admin listener) ---- */

struct kg_accept_thread {
    struct kg_acceptor *acc;
    int stopfd; /* eventfd: written once to stop */
    pthread_t thread;
};

static void *
accept_main(void *arg)
{
    struct kg_accept_thread *t = arg;

    for (;;) {
        bool stalled = t->acc->stalled, added;
        struct pollfd p[2] = {{.fd = t->stopfd, .events = POLLIN},
                              {.fd = t->acc->fd, .events = stalled ? 0 : POLLIN}};

        /* Stalled: the listen socket is left unpolled (it would spin) and tried on a timer. */
        if (poll(p, 2, stalled ? KG_ACCEPT_RETRY_MS : -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents != 0)
            break;
        if (stalled || p[1].revents != 0)
            kg_acceptor_run(t->acc, 64, &added);
    }
    return NULL;
}

enum kg_status
kg_accept_thread_start(struct kg_acceptor *acc, struct kg_accept_thread **out, struct kg_err *err)
{
    struct kg_accept_thread *t = calloc(1, sizeof(*t));
    int e;

    *out = NULL;
    if (t == NULL) {
        kg_acceptor_free(acc);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    t->acc = acc;
    t->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->stopfd < 0) {
        e = errno;
        goto fail;
    }
    e = pthread_create(&t->thread, NULL, accept_main, t);
    if (e != 0)
        goto fail;
    *out = t;
    return KG_OK;

fail:
    if (t->stopfd >= 0)
        close(t->stopfd);
    kg_acceptor_free(acc);
    free(t);
    return kg_err_set(err, KG_EIO, "cannot start an accept thread: %s", strerror(e));
}

void
kg_accept_thread_stop(struct kg_accept_thread *t)
{
    uint64_t one = 1;

    if (t == NULL)
        return;
    if (write(t->stopfd, &one, sizeof(one)) < 0) {
        /* An eventfd write fails only on overflow: it is readable already. */
    }
    pthread_join(t->thread, NULL);
    close(t->stopfd);
    kg_acceptor_free(t->acc);
    free(t);
}
