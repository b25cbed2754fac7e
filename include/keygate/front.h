/* keygate/front.h - the public listener: WHERE A REQUEST ENTERS.
 *
 * A libmicrohttpd daemon per event loop (external epoll mode, SO_REUSEPORT)
 * whose access handler checks the request's framing, finds the key,
 * normalises the path, asks auth/decide.c, and then answers itself
 * (http/respond.c) or hands the exchange to proxy/relay.c.
 */
#ifndef KEYGATE_FRONT_H
#define KEYGATE_FRONT_H

#include <sys/socket.h>
#include <microhttpd.h>
#include "keygate/loop.h"
#include "keygate/status.h"

/* Resolves "host:port" (as validated by the config) into *out. */
enum kg_status kg_front_parse_addr(const char *hostport, struct sockaddr_storage *out,
                                   struct kg_err *err);

/* Creates the public daemon for loop, with no listen socket of its own:
 * the loop accepts on a socket of keygate's (kg_loop_add_daemon). */
enum kg_status kg_front_new_daemon(struct kg_loop *loop, struct MHD_Daemon **out,
                                   struct kg_err *err);

#endif
