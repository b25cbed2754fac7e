/* keygate/keywatch.h - a well-formed key the key cache does not know,
 * checked against the store before it is refused.
 *
 * The cache learns of keys other processes add (the CLI) by polling the
 * store every 200 ms, so a key created a moment ago would get 401 on its
 * first request. On a lookup miss the request path asks this module, which
 * looks the digest up on its own store handle and, when the key is there
 * and not revoked, reloads the cache so the request can be decided again.
 * It costs the request path nothing in steady state: at most one lookup
 * per interval across all threads (a flood of unknown keys gets one
 * indexed read per interval, never a query per request), and a thread
 * never waits for another's check (try-lock). The lookup only says yes for
 * a key the cache would hold (not revoked, user and tenant enabled), so a
 * reload happens once per key created elsewhere. It runs on the asking
 * thread and waits at most 50 ms for a usage flush or another reload that
 * holds the cache; past that it is skipped (the key then answers 401 until
 * the main thread's 200 ms poll loads it). Its cost is one cache rebuild on that loop, proportional
 * to the number of keys (docs/architecture.md). A reload that fails or
 * still does not know the key backs off for a second.
 */
#ifndef KEYGATE_KEYWATCH_H
#define KEYGATE_KEYWATCH_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/status.h"

struct kg_keywatch;

/* Opens its own handle on database. interval_ms: the least time between
 * two lookups. */
enum kg_status kg_keywatch_new(const char *database, struct kg_keycache *kc, int64_t interval_ms,
                               struct kg_keywatch **out, struct kg_err *err);

/* NULL-safe. */
void kg_keywatch_free(struct kg_keywatch *w);

/* After a miss on digest: true when the store holds the key (not revoked at
 * now) and the cache was reloaded, so a fresh snapshot knows it. False when
 * it is not there, on an error, or when another check ran too recently or
 * is running. now_ms is the monotonic clock. Any thread. */
bool kg_keywatch_recheck(struct kg_keywatch *w, const unsigned char digest[KG_DIGEST_BYTES],
                         int64_t now_ms, int64_t now);

#endif
