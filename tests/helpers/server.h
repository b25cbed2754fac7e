/* helpers/server.h - what the tests' own servers (helpers/upstream.c,
 * helpers/rawup.c, helpers/receiver.c) share: a listening socket on
 * loopback, and their counters read under their lock. */
#ifndef KT_SERVER_H
#define KT_SERVER_H

#include <pthread.h>
#include <stddef.h>

/* A TCP socket listening on 127.0.0.1, on a port the kernel picks (put in
 * *port); -1 on failure, errno set. */
int kt_server_listen(int backlog, int *port);

/* *v read under mu: a count a server's threads keep, for the test's thread. */
size_t kt_server_count(pthread_mutex_t *mu, const size_t *v);

#endif
