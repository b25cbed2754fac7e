/* keygate/ipallow.h - per-key IP allowlists, beside the key cache.
 *
 * Few keys have an allowlist, so the lists are not in the cache entries
 * (which stay small): an entry only carries a flag (KG_KEYENT_IPALLOW) and
 * the blocks live here, in a map by key id that holds only the keys that
 * have a list. Readers see an immutable snapshot of the map, taken with one
 * uncontended mutex and released with an atomic decrement; the writer (the
 * key cache, under its load mutex) notes changes and publishes a new
 * snapshot when something changed.
 *
 * A key whose entry says it has a list but that the snapshot does not hold
 * yet is refused: the check fails closed.
 *
 * Threads: kg_ipallow_permits() from any thread; note and publish from one
 * writer at a time.
 */
#ifndef KEYGATE_IPALLOW_H
#define KEYGATE_IPALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/status.h"

struct kg_ipallow;

/* An empty map. Caller owns it: kg_ipallow_free(). */
enum kg_status kg_ipallow_new(struct kg_ipallow **out);

/* Frees the map and its snapshot; no reader may be inside permits. NULL is
 * a no-op. */
void kg_ipallow_free(struct kg_ipallow *a);

/* Writer. Records key id's list ("CIDR,CIDR" as manage/ normalised it; ""
 * = none, removing it). *changed (may be NULL) says whether the map
 * differs from the last publish now. KG_ENOMEM: nothing changed. A
 * malformed block is skipped (the store only holds normalised lists). */
enum kg_status kg_ipallow_note(struct kg_ipallow *a, const char *id, const char *list,
                               bool *changed);

/* Writer. Makes what was noted visible to readers, when anything changed.
 * KG_ENOMEM: readers keep the previous snapshot (and the next publish
 * tries again). */
enum kg_status kg_ipallow_publish(struct kg_ipallow *a);

/* Whether client_ip (text, as http/clientip.c resolved it) lies in one of
 * key id's blocks. false when id has no list in the current snapshot or
 * client_ip is not an address. Any thread. */
bool kg_ipallow_permits(struct kg_ipallow *a, const char *id, const char *client_ip);

/* Number of keys with a list in the current snapshot (tests, metrics). */
size_t kg_ipallow_count(struct kg_ipallow *a);

#endif
