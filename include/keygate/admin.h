/* keygate/admin.h - the admin listener (admin_listen, default 127.0.0.1:8081).
 *
 * A libmicrohttpd daemon of its own with one internal thread, not driven by
 * the request loops: admin calls block on SQLite (and the core's work), and
 * the loops must never wait for them. The thread opens its own store handle.
 *
 * Unauthenticated: GET /livez (200 while the process runs) and GET /readyz
 * (200 once the store is open and keys are loaded, 503 while starting or
 * draining). Everything under /v1/ is the admin API (docs/admin-api.md):
 * authenticated with the public side's credentials and decision code,
 * authorised by the scopes keys:read, keys:write, users:admin and
 * tenants:admin, fenced to the caller's tenant unless the caller's user is
 * a platform admin. A change that affects keys is loaded into the key
 * cache before its answer is sent.
 */
#ifndef KEYGATE_ADMIN_H
#define KEYGATE_ADMIN_H

#include <sys/socket.h>
#include "keygate/runtime.h"
#include "keygate/status.h"

struct kg_admin;

/* Opens the admin thread's store handle (rt->cfg->database, with the audit
 * key derived from rt->secret) and starts listening on addr. rt must outlive
 * the listener. Caller owns *out: kg_admin_stop(). */
enum kg_status kg_admin_start(struct kg_runtime *rt, const struct sockaddr_storage *addr,
                              struct kg_admin **out, struct kg_err *err);

/* Stops the daemon (joining its thread: a call in progress finishes first),
 * closes the store handle and frees. NULL-safe. */
void kg_admin_stop(struct kg_admin *adm);

#endif
