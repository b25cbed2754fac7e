/* keygate/loop.h - one event loop per worker thread.
 *
 * A loop owns an epoll set, a libcurl multi handle for its upstream
 * exchanges and the libmicrohttpd daemons it drives (each in external epoll
 * mode, listening with SO_REUSEPORT so the kernel spreads connections over
 * the loops). Everything a request does happens on its loop's thread: no
 * locks on the request path, and MHD suspend/resume and curl pause/unpause
 * are always called from the thread that owns them.
 */
#ifndef KEYGATE_LOOP_H
#define KEYGATE_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include "keygate/runtime.h"
#include "keygate/status.h"
#include "keygate/upurl.h"

struct kg_loop;

/* A loop with an epoll set and a curl multi handle; no thread yet. */
enum kg_status kg_loop_new(struct kg_runtime *rt, struct kg_loop **out, struct kg_err *err);

/* Adds an MHD daemon (created with MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET,
 * no internal thread) for the loop to drive, and its listen socket lfd,
 * which the loop accepts from (keygate/accept.h). The loop stops and frees
 * both in kg_loop_free(); lfd is closed even on failure. */
enum kg_status kg_loop_add_daemon(struct kg_loop *loop, struct MHD_Daemon *d, int lfd,
                                  struct kg_err *err);

/* Starts the thread. */
enum kg_status kg_loop_start(struct kg_loop *loop, struct kg_err *err);

/* Stops accepting new connections (drain); in-flight requests go on. Any thread. */
void kg_loop_quiesce(struct kg_loop *loop);

/* Whether the thread has acted on kg_loop_quiesce: its listeners closed, the
 * connections their backlogs held accepted and run once by MHD (so a request
 * that was already on the wire counts as in flight). Any thread. */
bool kg_loop_quiesced(struct kg_loop *loop);

/* Asks the thread to stop and joins it. Any other thread. */
void kg_loop_stop(struct kg_loop *loop);

/* Frees a stopped (or never started) loop; NULL is a no-op. */
void kg_loop_free(struct kg_loop *loop);

/* For the loop's own thread: */
CURLM *kg_loop_multi(struct kg_loop *loop);
struct kg_runtime *kg_loop_runtime(struct kg_loop *loop);
void kg_loop_conn_delta(struct kg_loop *loop, int delta);
/* A curl easy handle from the loop's pool (as its last transfer left it:
 * the caller sets every option that varies), or a new one; NULL when out of
 * memory. Reusing handles keeps their buffers allocated. *url gets the
 * handle's own CURLU (keygate/upurl.h), which goes back with it. */
CURL *kg_loop_easy_get(struct kg_loop *loop, struct kg_upurl *url);
/* Returns a handle (not in the multi) and its CURLU to the pool, or frees
 * them when the pool is full. */
void kg_loop_easy_put(struct kg_loop *loop, CURL *easy, struct kg_upurl *url);
/* The loop's upstream, parsed once (created on first use; NULL when out of memory). */
struct kg_upbase *kg_loop_upbase(struct kg_loop *loop);
/* Tells the loop a connection of its daemons was resumed: run them this round. */
void kg_loop_note_resume(struct kg_loop *loop);
/* The same, from any other thread (the worker): also wakes the loop. */
void kg_loop_kick(struct kg_loop *loop);
/* Client connection bookkeeping, called by the daemon's callbacks on the
 * loop's thread. kg_loop_conn_open (MHD_CONNECTION_NOTIFY_STARTED) returns
 * the connection's context (its socket_context), or NULL when out of
 * memory; it starts the client_header_timeout deadline. headers_done (the
 * first call of a request) stops it and gives the body client_body_timeout
 * of inactivity; request_done (a request answered in full) starts it again
 * for the next request; close (MHD_CONNECTION_NOTIFY_CLOSED) frees it. */
void *kg_loop_conn_open(struct kg_loop *loop, struct MHD_Connection *conn);
void kg_loop_conn_headers_done(struct kg_loop *loop, struct MHD_Connection *conn);
void kg_loop_conn_request_done(struct kg_loop *loop, struct MHD_Connection *conn);
void kg_loop_conn_close(struct kg_loop *loop, void *ctx);
/* CURLOPT_OPENSOCKETFUNCTION (clientp: the loop): socket(), falling back
 * on one of the loop's reserved descriptors when the process is out of
 * them, so requests in flight still reach the upstream. */
curl_socket_t kg_loop_open_upstream_socket(void *clientp, curlsocktype purpose,
                                           struct curl_sockaddr *a);
/* A transfer on the loop's curl multi handle, as the loop knows it: its
 * owner (proxy/relay.c) embeds one, sets its address as the easy handle's
 * CURLOPT_PRIVATE and links it with kg_loop_transfer_add() while it lives.
 * The loop calls done when curl reports the transfer finished; at shutdown
 * it calls abort on each (end it, resume its client connection) until no
 * transfer is suspended. The loop knows nothing else of a transfer. */
struct kg_loop_transfer;
typedef void (*kg_loop_transfer_done_fn)(struct kg_loop_transfer *t, CURLcode result);
typedef void (*kg_loop_transfer_abort_fn)(struct kg_loop_transfer *t);
struct kg_loop_transfer {
    kg_loop_transfer_done_fn done;
    kg_loop_transfer_abort_fn abort;
    bool suspended;                       /* its client connection waits on it */
    struct kg_loop_transfer *next, *prev; /* the loop's list */
};
void kg_loop_transfer_add(struct kg_loop *loop, struct kg_loop_transfer *t);
/* A descriptor the loop's epoll watches for a module of its own (the native
 * upstream client's connections): fn runs on the loop's thread with the
 * epoll events. The struct's address is the epoll tag: it must outlive its
 * registration. kg_loop_io_ctl() is epoll_ctl(op) on the loop's set. */
struct kg_loop_io;
typedef void (*kg_loop_io_fn)(struct kg_loop_io *io, uint32_t events);
struct kg_loop_io {
    kg_loop_io_fn fn;
};
int kg_loop_io_ctl(struct kg_loop *loop, int op, int fd, uint32_t events, struct kg_loop_io *io);
/* A per-loop extension with timers (the native upstream client's pool):
 * the loop asks deadline() (monotonic ms, -1 for none) before it waits,
 * calls run(now) after each round's events and free() in kg_loop_free().
 * One per loop; kg_loop_ext() is NULL until kg_loop_set_ext(). */
struct kg_loop_ext {
    int64_t (*deadline)(struct kg_loop_ext *e);
    void (*run)(struct kg_loop_ext *e, int64_t now_ms);
    void (*free)(struct kg_loop_ext *e);
};
struct kg_loop_ext *kg_loop_ext(struct kg_loop *loop);
void kg_loop_set_ext(struct kg_loop *loop, struct kg_loop_ext *e);
/* socket() for an upstream connection, with the reserve of
 * kg_loop_open_upstream_socket(); -1 and errno on failure. */
int kg_loop_socket(struct kg_loop *loop, int family, int type, int protocol);
/* Unlinks t; a transfer never added is left alone. */
void kg_loop_transfer_remove(struct kg_loop *loop, struct kg_loop_transfer *t);

#endif
