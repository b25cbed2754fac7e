/* keygate/throttle.h - per-client limits keyed by a string (a client IP).
 *
 * GCRA (the "virtual scheduling" form of a token bucket): each client has a
 * theoretical arrival time; a request is allowed when it does not push that
 * time more than one period past now. "5 per 60 s" therefore allows a burst
 * of 5 and then one request every 12 s. Used for the signup limit (5/min
 * per IP) and by the brute-force throttle of failed authentications.
 *
 * Memory is fixed at creation: a set-associative table of slots. A client
 * that is not in the table takes a slot of its set that has fully recovered
 * (it would be allowed a whole burst anyway, so forgetting it changes
 * nothing) or, when every slot of the set is busy, the one whose record is
 * oldest (least restrictive). Clients are identified by a keyed SipHash of
 * their string with a random key, so nobody can aim collisions at a set.
 *
 * The clock is passed in (milliseconds, any monotonic origin), so tests step
 * time instead of sleeping. Thread-safe: any thread may call anything but
 * kg_throttle_free().
 */
#ifndef KEYGATE_THROTTLE_H
#define KEYGATE_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/status.h"

struct kg_throttle;

/* A limiter allowing `limit` requests per `period_ms` per client, with room
 * for about `clients` clients at once (rounded up to whole sets).
 * KG_EINVAL when limit, period_ms or clients is not positive. Caller owns
 * *out: kg_throttle_free(). */
enum kg_status kg_throttle_new(int64_t limit, int64_t period_ms, size_t clients,
                               struct kg_throttle **out, struct kg_err *err);

/* NULL-safe. No other thread may be using t. */
void kg_throttle_free(struct kg_throttle *t);

/* Counts one request of client at now_ms. Returns true when it is allowed.
 * When it is not, nothing is counted and *retry_after_ms (may be NULL)
 * receives how long until the next request of this client would be
 * allowed (> 0). */
bool kg_throttle_take(struct kg_throttle *t, const char *client, int64_t now_ms,
                      int64_t *retry_after_ms);

/* Whether a request of client at now_ms would be allowed, without counting
 * it (a throttle that only counts failures asks first, counts later).
 * *retry_after_ms as for kg_throttle_take(). */
bool kg_throttle_peek(struct kg_throttle *t, const char *client, int64_t now_ms,
                      int64_t *retry_after_ms);

/* The brute-force throttle of a listener is two tables: failures (the
 * allowance of failed authentications per client) and cooldown (1 per
 * cool-down, taken when the allowance runs out). Both NULL when off.
 *
 * Counts one failed authentication of client: the failure that uses up the
 * allowance, or one after it, starts the client's cool-down. */
void kg_throttle_fail(struct kg_throttle *failures, struct kg_throttle *cooldown,
                      const char *client, int64_t now_ms);

/* Whether client is in its cool-down (*retry_after_ms: until it ends), so
 * refused before any key lookup. False when cooldown is NULL. */
bool kg_throttle_cooling(struct kg_throttle *cooldown, const char *client, int64_t now_ms,
                         int64_t *retry_after_ms);

/* Retry-After header value for a wait of ms: whole seconds, rounded up, >= 1. */
int kg_throttle_retry_after_s(int64_t ms);

#endif
