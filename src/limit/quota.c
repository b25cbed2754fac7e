/* limit/quota.c - credit and quota arithmetic (keygate/quota.h): refill
 * periods on the UTC calendar, what a meter has used, how long a refusal
 * lasts, a flush's commit. */
#include <string.h>

#include "keygate/quota.h"

int64_t
kg_quota_period_start(enum kg_quota_period period, int64_t now)
{
    int64_t days, y, m, doe, yoe, era, mp;

    if (period == KG_QUOTA_NONE || now < 0)
        return 0;
    days = now / 86400;
    if (period == KG_QUOTA_DAY)
        return days * 86400;
    /* Civil date of days since 1970-01-01 (H. Hinnant's algorithm), then
     * back to the first of that month; no time zone, no libc state. */
    days += 719468;
    era = days / 146097;
    doe = days - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = yoe + era * 400;
    mp = (5 * (doe - (365 * yoe + yoe / 4 - yoe / 100)) + 2) / 153;
    m = mp < 10 ? mp + 3 : mp - 9;
    /* days_from_civil(y, m, 1): y is still the year counted from March,
     * which is what that half of the algorithm wants. */
    era = y / 400;
    yoe = y - era * 400;
    mp = m > 2 ? m - 3 : m + 9;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * mp + 2) / 5;
    return (era * 146097 + doe - 719468) * 86400;
}

enum kg_quota_period
kg_quota_period_of(const char *s)
{
    return strcmp(s, "day") == 0     ? KG_QUOTA_DAY
           : strcmp(s, "month") == 0 ? KG_QUOTA_MONTH
                                     : KG_QUOTA_NONE;
}

int64_t
kg_quota_stored_used(const char *period, int64_t used, int64_t start, int64_t now)
{
    enum kg_quota_period p = period != NULL ? kg_quota_period_of(period) : KG_QUOTA_NONE;

    return p != KG_QUOTA_NONE && start < kg_quota_period_start(p, now) ? 0 : used;
}

int64_t
kg_quota_used(struct kg_meter *m, enum kg_quota_period period, int64_t now)
{
    int64_t start = kg_quota_period_start(period, now);
    /* A flush moves stored first and flushed last, so reading them the
     * other way round (flushed, stored, charged) lets a flush in between
     * only count a delta twice (refuse early), never miss it (overspend). */
    int64_t flushed = atomic_load(&m->flushed);
    int64_t stored = atomic_load(&m->stored);
    int64_t stored_start = atomic_load(&m->stored_start);
    int64_t pending = atomic_load(&m->charged) - flushed;

    /* Stored credits of an earlier refill period are spent history. A
     * stored start of 0 is a count without a refill: it counts while there
     * is none, and under a refill only a store left by a keygate that did
     * not move the start when the refill was set has it (see the key and
     * user update SQL), which is then history too rather than used for
     * ever. */
    if (stored_start < start)
        stored = 0;
    return stored + pending;
}

/* Seconds from now to the start of the period after the one holding now. */
static int64_t
to_next_period(enum kg_quota_period p, int64_t now)
{
    int64_t start = kg_quota_period_start(p, now);
    int64_t next = p == KG_QUOTA_DAY ? start + 86400 : kg_quota_period_start(p, start + 32 * 86400);

    return next - now;
}

void
kg_quota_fold_wait(int64_t used, int64_t limit, enum kg_quota_period period, int64_t cost,
                   int64_t now, int64_t *wait)
{
    if (*wait < 0 || used + cost <= limit)
        return;
    if (period == KG_QUOTA_NONE || cost > limit) {
        *wait = -1;
        return;
    }
    if (to_next_period(period, now) > *wait)
        *wait = to_next_period(period, now);
}

void
kg_quota_commit(struct kg_meter *m, int64_t delta, int64_t delta_start, int64_t charged_read)
{
    int64_t start;

    if (delta == 0)
        return;
    start = atomic_load(&m->stored_start);
    if (start < delta_start)
        atomic_store(&m->stored, delta);
    else
        atomic_fetch_add(&m->stored, delta);
    if (start < delta_start)
        atomic_store(&m->stored_start, delta_start);
    atomic_store(&m->flushed, charged_read);
}

void
kg_quota_commit_total(struct kg_meter *m, int64_t total, int64_t total_start, int64_t charged_read)
{
    /* As in kg_quota_commit: a reader between these stores sees what it
     * saw before the flush or counts this flush's delta twice, never less. */
    atomic_store(&m->stored, total);
    atomic_store(&m->stored_start, total_start);
    atomic_store(&m->flushed, charged_read);
}

int
kg_quota_threshold(int64_t used, int64_t limit)
{
    if (limit <= 0 || used < 0)
        return 0;
    if (used >= limit)
        return 100;
    /* used * 100 >= 80 * limit, i.e. used >= ceil(4 * limit / 5), which
     * is limit - floor(limit / 5): no product to overflow. */
    return used >= limit - limit / 5 ? 80 : 0;
}

const char *
kg_quota_period_name(enum kg_quota_period period)
{
    return period == KG_QUOTA_DAY ? "day" : period == KG_QUOTA_MONTH ? "month" : "never";
}
