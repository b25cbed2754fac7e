/* keygate/upclient.h - keygate's own HTTP/1.1 client for http:// upstreams.
 *
 * Carries an exchange of proxy/relay.c (upstream_client native, the
 * default; https:// upstreams and upstream_client curl go through libcurl)
 * on the loop's own epoll, with a pool of idle connections per loop: LIFO,
 * at most upstream_keepalive of them, each closed after
 * upstream_keepalive_timeout idle or upstream_keepalive_requests requests.
 * An idle connection stays registered in epoll (no epoll_ctl per request)
 * and any event on it closes it. A connection goes back to the pool only
 * after a fully framed response (keygate/upresp.h) to a fully sent request.
 * The request head is built once per request into the connection's buffer
 * and goes out with the body bytes at hand in one writev. A request whose
 * reused connection was closed before any byte of the answer (the
 * keep-alive race) is sent once more on a fresh connection, when its method
 * is idempotent and no byte of its body went out. Everything on the loop's
 * thread; the relay calls these, nothing else does.
 */
#ifndef KEYGATE_UPCLIENT_H
#define KEYGATE_UPCLIENT_H

#include <stdbool.h>

#include "keygate/config.h"
#include "keygate/relay.h"
#include "keygate/status.h"

/* True when cfg sends its upstream requests through this client:
 * upstream_client native and an http:// upstream it can address. */
bool kg_upclient_wanted(const struct kg_config *cfg);

/* Starts x (made by kg_relay_start, its rings and headers in place): takes
 * a pooled connection, opens one, or queues x when the loop already has
 * upstream_max_connections open. An upstream that cannot be reached makes
 * x FAILED (502) rather than an error here; KG_ENOMEM or KG_EINVAL (a
 * method, target or header that cannot be written) otherwise. */
enum kg_status kg_upclient_start(struct kg_exchange *x, const struct kg_relay_req *rq,
                                 struct kg_err *err);

/* Body bytes were added to x's up ring, or the body ended: send what can be. */
void kg_upclient_send_more(struct kg_exchange *x);

/* x's down ring has room again: read from the upstream. */
void kg_upclient_recv_more(struct kg_exchange *x);

/* x goes away (done, the client gone, shutdown): its connection, if the
 * exchange still holds one, is closed, never pooled. Idempotent. */
void kg_upclient_release(struct kg_exchange *x);

#endif
