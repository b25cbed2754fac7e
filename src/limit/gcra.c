/* limit/gcra.c - GCRA arithmetic on one theoretical arrival time.
 *
 * Everything is int64 nanoseconds internally; the clock comes in as
 * microseconds. Bounds checked in kg_gcra_init() keep every sum below
 * INT64_MAX for any clock under a century of uptime.
 */
#include <string.h>

#include "keygate/gcra.h"

/* tau = interval * burst stays below this (about 12 years), so now + tau
 * cannot overflow for a monotonic clock. */
#define TAU_MAX_NS 400000000000000000LL
#define NS_PER_US 1000LL

enum kg_status
kg_gcra_init(struct kg_gcra *g, int64_t count, int64_t period_s, int64_t burst, struct kg_err *err)
{
    int64_t period_ns, interval;

    if (count < 1 || count > KG_GCRA_COUNT_MAX)
        return kg_err_set(err, KG_EINVAL, "rate count must be 1 to %lld", KG_GCRA_COUNT_MAX);
    if (period_s < 1 || period_s > KG_GCRA_PERIOD_MAX_S)
        return kg_err_set(err, KG_EINVAL, "rate period must be 1 s to 31 days");
    if (burst < 0 || burst > KG_GCRA_COUNT_MAX)
        return kg_err_set(err, KG_EINVAL, "burst must be 0 (the count) to %lld", KG_GCRA_COUNT_MAX);
    if (burst == 0)
        burst = count;
    period_ns = period_s * 1000000000LL;
    interval = period_ns / count + (period_ns % count != 0);
    /* A burst worth more than about 12 years of the rate means "never
     * limited" either way; cutting it keeps every sum in range, and any
     * rate and burst the key store accepts stays usable. */
    if (burst > TAU_MAX_NS / interval)
        burst = TAU_MAX_NS / interval;
    g->count = count;
    g->period_s = period_s;
    g->burst = burst;
    g->interval_ns = interval;
    g->tau_ns = interval * burst;
    return KG_OK;
}

bool
kg_gcra_parse_rate(const char *rate, int64_t *count, int64_t *period_s)
{
    static const struct {
        const char *unit;
        int64_t seconds;
    } units[] = {{"s", 1}, {"min", 60}, {"h", 3600}};
    const char *p = rate;
    int64_t n = 0;

    if (rate == NULL || rate[0] < '1' || rate[0] > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > KG_GCRA_COUNT_MAX)
            return false;
    }
    if (*p != '/')
        return false;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p + 1, units[i].unit) == 0) {
            *count = n;
            *period_s = units[i].seconds;
            return true;
        }
    }
    return false;
}

static int64_t
ns_to_us_up(int64_t ns)
{
    return ns <= 0 ? 0 : (ns + NS_PER_US - 1) / NS_PER_US;
}

/* The TAT as the arithmetic sees it. A TAT more than tau ahead can only
 * come from a clock that went back. Up to KG_GCRA_CLOCK_SLACK_US that is
 * taken as a caller whose reading of the clock is a little stale (another
 * thread took from the bucket since): the bucket stays as it is, so the
 * stale reading is refused and credits nothing. Beyond it the clock stepped
 * back: the bucket becomes "empty at now" and refills from there. */
static int64_t
clamp(const struct kg_gcra *g, int64_t tat, int64_t now)
{
    return tat - now > g->tau_ns + KG_GCRA_CLOCK_SLACK_US * NS_PER_US ? now + g->tau_ns : tat;
}

static void
fill(const struct kg_gcra *g, int64_t tat, int64_t now, struct kg_gcra_result *res)
{
    int64_t base = tat > now ? tat : now;

    res->limit = g->burst;
    res->remaining = (now + g->tau_ns - base) / g->interval_ns;
    res->reset_us = ns_to_us_up(base - now);
}

static int64_t
now_ns_of(int64_t now_us)
{
    return now_us > 0 ? now_us * NS_PER_US : 0;
}

int64_t
kg_gcra_take(const struct kg_gcra *g, int64_t tat, int64_t now_us, struct kg_gcra_result *res)
{
    int64_t now = now_ns_of(now_us);
    int64_t t = clamp(g, tat, now);
    int64_t next = (t > now ? t : now) + g->interval_ns;
    bool allowed = next - now <= g->tau_ns;
    struct kg_gcra_result r;

    if (allowed)
        t = next;
    fill(g, t, now, &r);
    r.allowed = allowed;
    r.retry_after_us = allowed ? 0 : ns_to_us_up(next - now - g->tau_ns);
    if (res != NULL)
        *res = r;
    return t;
}

void
kg_gcra_peek(const struct kg_gcra *g, int64_t tat, int64_t now_us, struct kg_gcra_result *res)
{
    int64_t now = now_ns_of(now_us);
    int64_t t = clamp(g, tat, now);
    int64_t next = (t > now ? t : now) + g->interval_ns;

    fill(g, t, now, res);
    res->allowed = next - now <= g->tau_ns;
    res->retry_after_us = res->allowed ? 0 : ns_to_us_up(next - now - g->tau_ns);
}

int64_t
kg_gcra_refund(const struct kg_gcra *g, int64_t tat, int64_t now_us)
{
    int64_t now = now_ns_of(now_us);
    int64_t t = clamp(g, tat, now) - g->interval_ns;

    if (t < now)
        return tat < now ? tat : now;
    return t;
}

int64_t
kg_gcra_seconds_up(int64_t us)
{
    if (us <= 0)
        return 0;
    return (us + 999999) / 1000000;
}
