/* keygate/redislimit.h - shared rate limits in Redis (`limits redis://…`).
 *
 * A limiter backend (keygate/limiter.h) whose buckets live in Redis, so N
 * gateways give a key its rate once, not N times. The GCRA step runs in
 * Redis as a Lua script (EVALSHA; reloaded after NOSCRIPT, when Redis
 * restarted), on Redis's own clock (TIME), taking from the key's bucket
 * and its owner's tier bucket in one round trip; the TAT is kept in whole
 * microseconds (the emission interval rounded up: never more than the
 * rate). Keys expire once their bucket is full again.
 *
 * A request loop never waits on Redis: each gateway spends leased tokens
 * and a cached "denied until" (keygate/lease.h); a refill is asked ahead
 * of need, and a request that finds no token waits suspended for the
 * refill it triggered, never longer than the timeout.
 *
 * One thread of its own talks to Redis over one connection it owns
 * (non-blocking socket, commands pipelined; hiredis only formats commands
 * and parses replies). A connection that fails, or a reply later than the
 * timeout, puts the backend down: every waiting request and every request
 * without a held token gets KG_LIMIT_DOWN at once (limits_on_error
 * decides), and the thread reconnects every 100 ms until Redis answers.
 */
#ifndef KEYGATE_REDISLIMIT_H
#define KEYGATE_REDISLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/limiter.h"
#include "keygate/status.h"

#define KG_REDIS_HOST_MAX 256

/* Splits "redis://host[:port][/db]" (host a name, an IPv4 address or a
 * bracketed IPv6 one; port 6379 and db 0 when left out). host (hostlen
 * bytes), port and db may be NULL to only check. False, writing nothing,
 * when url is not one. Pure; any thread. */
bool kg_redislimit_parse_url(const char *url, char *host, size_t hostlen, int *port, int *db);

/* A limiter on the Redis at url, leases of lease_us worth of each key's
 * rate (0: exact, one call per request), replies awaited at most
 * timeout_us, room for about `keys` leases. Tries to connect once before
 * it returns (a Redis not there yet is reported in the log and retried in
 * the background); KG_EINVAL for a bad url or size, KG_EIO when the thread
 * cannot start. Caller owns *out: kg_limiter_stop(), then kg_limiter_free(). */
enum kg_status kg_limiter_new_redis(const char *url, int64_t lease_us, int64_t timeout_us,
                                    size_t keys, struct kg_limiter **out, struct kg_err *err);

#endif
