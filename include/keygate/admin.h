/* keygate/admin.h - the admin listener (admin_listen, default 127.0.0.1:8081).
 *
 * Unauthenticated health for containers and orchestrators: GET /livez (200
 * while the process runs) and GET /readyz (200 once the store is open and
 * keys are loaded, 503 while starting or draining). Everything else answers
 * a JSON 404. Driven by loop 0.
 */
#ifndef KEYGATE_ADMIN_H
#define KEYGATE_ADMIN_H

#include <sys/socket.h>
#include <microhttpd.h>
#include "keygate/loop.h"
#include "keygate/status.h"

enum kg_status kg_admin_new_daemon(struct kg_loop *loop, const struct sockaddr_storage *addr,
                                   struct MHD_Daemon **out, struct kg_err *err);

#endif
