/* keygate/accept.h - keygate's own listen sockets and accept().
 *
 * libmicrohttpd 0.9.75 driven from an outside epoll loop stops accepting
 * for good after accept() fails with EMFILE: it drops its listen socket
 * from its epoll set (at_limit) and clears the flag only after its own
 * epoll pass, when the last connection is cleaned up, so nothing is left
 * to wake it (docs/security.md). keygate therefore opens the listen
 * sockets, accepts, and hands each connection to the library with
 * MHD_add_connection(); the daemons run with MHD_USE_NO_LISTEN_SOCKET.
 *
 * When accept() fails for want of descriptors or memory, the failure is
 * counted (keygate_accept_errors_total{reason}), logged at most once per
 * 10 s per listener, the listener is marked stalled (/readyz answers 503)
 * and the caller stops polling it and retries after
 * KG_ACCEPT_RETRY_MS or as soon as one of its connections closes.
 *
 * Threads: an acceptor belongs to the thread that runs it.
 */
#ifndef KEYGATE_ACCEPT_H
#define KEYGATE_ACCEPT_H

#include <microhttpd.h>
#include <stdbool.h>
#include <sys/socket.h>
#include "keygate/runtime.h"
#include "keygate/status.h"

#define KG_ACCEPT_RETRY_MS 100

struct kg_acceptor;

/* A non-blocking, close-on-exec TCP socket listening on addr
 * (SO_REUSEADDR, and SO_REUSEPORT when reuseport: one per loop; IPv6
 * only for an IPv6 address). Returns the socket or -1 with err set. */
int kg_accept_listen(const struct sockaddr_storage *addr, bool reuseport, int backlog,
                     struct kg_err *err);

/* An acceptor that owns lfd (closed by kg_acceptor_free) and adds what it
 * accepts to d. name ("public", "admin") is for the log. per_ip: apply
 * max_connections_per_ip through rt->per_ip (the daemon's connection
 * notifier must call kg_accept_claim_slot() when a connection starts). */
enum kg_status kg_acceptor_new(struct kg_runtime *rt, int lfd, struct MHD_Daemon *d,
                               const char *name, bool per_ip, struct kg_acceptor **out,
                               struct kg_err *err);
void kg_acceptor_free(struct kg_acceptor *acc);

int kg_acceptor_fd(const struct kg_acceptor *acc);

enum kg_accept_state {
    KG_ACCEPT_DRAINED, /* nothing more waiting */
    KG_ACCEPT_MORE,    /* stopped after batch connections: more may wait */
    KG_ACCEPT_STALLED, /* out of descriptors or memory: stop polling, retry later */
};

/* Accepts up to batch connections. Returns how it stopped; *added tells
 * whether any connection went to the daemon (it then has work). */
enum kg_accept_state kg_acceptor_run(struct kg_acceptor *acc, unsigned batch, bool *added);

/* Whether the acceptor is stalled now. */
bool kg_acceptor_stalled(const struct kg_acceptor *acc);

/* A thread of its own that accepts for acc (the admin listener, whose
 * daemon runs libmicrohttpd's internal thread with MHD_USE_ITC). Takes acc:
 * kg_accept_thread_stop() joins the thread and frees it. */
struct kg_accept_thread;
enum kg_status kg_accept_thread_start(struct kg_acceptor *acc, struct kg_accept_thread **out,
                                      struct kg_err *err);
void kg_accept_thread_stop(struct kg_accept_thread *t);

/* Called from the daemon's MHD_CONNECTION_NOTIFY_STARTED, on the thread
 * that ran kg_acceptor_run (libmicrohttpd starts an added connection
 * inside MHD_add_connection in external-poll mode): true when this
 * connection was counted against its IP, which the caller then gives back
 * with kg_connlimit_release() when it closes. */
bool kg_accept_claim_slot(void);

#endif
