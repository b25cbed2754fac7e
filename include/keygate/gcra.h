/* keygate/gcra.h - the arithmetic of one rate limit, nothing else.
 *
 * GCRA (the "virtual scheduling" form of a token bucket): a bucket is one
 * number, its theoretical arrival time (TAT). A request at `now` is allowed
 * when, after it, the TAT is at most `burst` emission intervals past now;
 * an emission interval is period / count. So "5/s burst 5" allows 5 at once
 * and then one every 200 ms, and no instant ever sees more than `burst`:
 * there are no window edges to double a burst at.
 *
 * Pure: no clock, no memory, no locks. The caller keeps the TAT (an int64,
 * nanoseconds on the caller's clock) and passes the clock in, in
 * microseconds, so a store (in-process atomics, a shared backend) only has
 * to swap one integer. A TAT of 0 is a full bucket.
 *
 * The emission interval is kept in whole nanoseconds, rounded up when
 * period / count is not exact (7/s): never more than the rate is granted,
 * and the error is below a nanosecond per request.
 *
 * Clock stepping backwards: a TAT more than a full burst ahead of now can
 * only come from a clock that went back. Up to KG_GCRA_CLOCK_SLACK_US it
 * is taken for a stale reading (a thread that read the clock before
 * another took from the bucket): nothing changes, the request is refused
 * and waits at most that long. Further back, the bucket is set to "empty
 * at now": the step grants nothing (the bucket never holds more than it
 * did) and it refills from the new now instead of staying shut for as long
 * as the clock went back. Callers should still pass a monotonic clock.
 */
#ifndef KEYGATE_GCRA_H
#define KEYGATE_GCRA_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/status.h"

#define KG_GCRA_COUNT_MAX 1000000000LL
#define KG_GCRA_PERIOD_MAX_S (31LL * 86400) /* a month */
#define KG_GCRA_CLOCK_SLACK_US 1000000LL    /* see above: stale reading vs a step back */

/* One limit: count requests per period_s seconds, burst at once.
 * Fields are read-only after kg_gcra_init(); copy it freely. */
struct kg_gcra {
    int64_t count;
    int64_t period_s;
    int64_t burst;
    int64_t interval_ns; /* emission interval, period / count rounded up */
    int64_t tau_ns;      /* interval_ns * burst: how far ahead a TAT may go */
};

/* The outcome of one request against one bucket. */
struct kg_gcra_result {
    bool allowed;
    int64_t limit;          /* burst: what a full bucket holds */
    int64_t remaining;      /* requests that would pass right after this one, >= 0 */
    int64_t reset_us;       /* until the bucket is full again */
    int64_t retry_after_us; /* denied: until one request passes (> 0); allowed: 0 */
};

/* Sets g to count per period_s with the given burst (0 = count; a burst
 * worth more than about 12 years of the rate is cut to that).
 * KG_EINVAL when count is not 1..KG_GCRA_COUNT_MAX, period_s not
 * 1..KG_GCRA_PERIOD_MAX_S, or burst not 0..KG_GCRA_COUNT_MAX. */
enum kg_status kg_gcra_init(struct kg_gcra *g, int64_t count, int64_t period_s, int64_t burst,
                            struct kg_err *err);

/* Parses "N/s", "N/min" or "N/h" (N 1..KG_GCRA_COUNT_MAX) into *count and
 * *period_s. Returns false, writing nothing, when rate is not one. */
bool kg_gcra_parse_rate(const char *rate, int64_t *count, int64_t *period_s);

/* One request at now_us against the bucket whose TAT is tat. Returns the
 * TAT to store: the new one when allowed, tat itself when denied (a denial
 * costs nothing), or the clamped one when the clock went back. res may be
 * NULL. */
int64_t kg_gcra_take(const struct kg_gcra *g, int64_t tat, int64_t now_us,
                     struct kg_gcra_result *res);

/* The bucket's state at now_us without taking anything (res->allowed tells
 * whether a request would pass). */
void kg_gcra_peek(const struct kg_gcra *g, int64_t tat, int64_t now_us, struct kg_gcra_result *res);

/* The TAT after giving back one request taken earlier (a second limit
 * refused it). Never below "full at now". */
int64_t kg_gcra_refund(const struct kg_gcra *g, int64_t tat, int64_t now_us);

/* Whole seconds for a header, rounded up, at least 1 when us > 0. */
int64_t kg_gcra_seconds_up(int64_t us);

#endif
