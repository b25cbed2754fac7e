/* keygate/connlimit.h - open client connections per IP, shared by every
 * event loop (SO_REUSEPORT spreads one client's connections over all of
 * them, so a per-loop count would let it hold workers times the cap).
 *
 * A hash table under one mutex, keyed by the address (IPv4 as
 * IPv4-mapped IPv6) through a keyed SipHash with a random key, so nobody
 * can aim collisions at a chain. An entry lives while its IP has a
 * connection open: memory follows the number of distinct open peers.
 *
 * Thread-safe: any thread may call anything but kg_connlimit_free().
 */
#ifndef KEYGATE_CONNLIMIT_H
#define KEYGATE_CONNLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include "keygate/status.h"

struct kg_connlimit;

enum kg_status kg_connlimit_new(struct kg_connlimit **out, struct kg_err *err);
void kg_connlimit_free(struct kg_connlimit *cl);

/* Counts one more connection from sa's IP when it has fewer than max open
 * and returns true; false (nothing counted) when it already has max, when
 * sa is neither IPv4 nor IPv6, or when out of memory. */
bool kg_connlimit_take(struct kg_connlimit *cl, const struct sockaddr *sa, unsigned max);

/* Gives back one connection counted by kg_connlimit_take(). */
void kg_connlimit_release(struct kg_connlimit *cl, const struct sockaddr *sa);

/* Connections counted for sa's IP now. */
unsigned kg_connlimit_count(struct kg_connlimit *cl, const struct sockaddr *sa);

#endif
