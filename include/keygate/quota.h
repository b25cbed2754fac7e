/* keygate/quota.h - credit and quota arithmetic, nothing else: refill
 * periods, what a running count has used in the period holding now, how
 * long a refusal lasts, and how a flush's commit moves a count.
 *
 * Pure apart from the atomics of the meter it is handed: no clock (now is
 * passed in, Unix seconds), no store, no locks. The key cache
 * (auth/keycache.c) holds the meters of every key and user and asks here;
 * the CLI and the admin API use the same rule to show a stored count.
 */
#ifndef KEYGATE_QUOTA_H
#define KEYGATE_QUOTA_H

#include <stdatomic.h>
#include <stdint.h>
#include "keygate/config.h"

/* One running count against a limit that comes back each period: a key's
 * credits, a user's own credits, or what a user used of its tier's quota.
 * charged counts what this process charged since it started, flushed how
 * much of it the store has, stored and stored_start the store's total and
 * its period start as this process last knew them (set by a reload, moved
 * by each flush after its commit: kg_quota_commit). */
struct kg_meter {
    _Atomic int64_t charged;
    _Atomic int64_t flushed;
    _Atomic int64_t stored;
    _Atomic int64_t stored_start;
    _Atomic int period; /* enum kg_quota_period */
    /* quota.threshold (issue 18): the limit, set where the period is
     * (<= 0: unlimited or none, never alerts); and, the flush's own (under
     * the key cache's load_mu, no other reader), the highest threshold
     * known sent and the period start it was sent for. */
    _Atomic int64_t limit;
    int64_t alerted_start;
    int alerted;
};

/* The start (Unix seconds) of the UTC day or month holding now; 0 for
 * KG_QUOTA_NONE. */
int64_t kg_quota_period_start(enum kg_quota_period period, int64_t now);

/* "day", "month", anything else: none. */
enum kg_quota_period kg_quota_period_of(const char *s);

/* What a stored count (quota_used with its quota_period "", "day" or
 * "month" and quota_period_start) means at now: the count of an ended
 * refill period is 0, the same rule the daemon charges by. For showing a
 * stored record. */
int64_t kg_quota_stored_used(const char *period, int64_t used, int64_t start, int64_t now);

/* What m has used in the period holding now: what the store had when this
 * process last read or wrote it (0 when that was an earlier period) plus
 * what this process charged and has not flushed. Safe against a flush
 * running meanwhile: it may count a delta twice (refuse early), never miss
 * it (overspend). */
int64_t kg_quota_used(struct kg_meter *m, enum kg_quota_period period, int64_t now);

/* Folds one limit into the wait of a refusal: when used + cost is over
 * limit, *wait becomes the seconds until the period after the one holding
 * now if that is longer, or -1 (never by itself: no refill, or a cost above
 * the limit); -1 stays. */
void kg_quota_fold_wait(int64_t used, int64_t limit, enum kg_quota_period period, int64_t cost,
                        int64_t now, int64_t *wait);

/* After a flush committed delta (read as charged_read from m->charged)
 * counted in the period starting at delta_start: mirrors what the store
 * did to its total (added, or started again in a new period), then marks
 * it flushed, in that order (see kg_quota_used). */
void kg_quota_commit(struct kg_meter *m, int64_t delta, int64_t delta_start, int64_t charged_read);

/* After a flush committed the charges up to charged_read and the store
 * answered with its total (every instance's flushed charges, issue 15) in
 * the period starting at total_start: the meter takes that total as
 * stored, then marks its charges flushed, in that order (see
 * kg_quota_used). What this process charged since charged_read stays
 * pending on top. */
void kg_quota_commit_total(struct kg_meter *m, int64_t total, int64_t total_start,
                           int64_t charged_read);

/* The highest quota.threshold used of limit reaches: 100, 80 (used * 100
 * >= 80 * limit) or 0; always 0 for a limit <= 0 (unlimited or none). */
int kg_quota_threshold(int64_t used, int64_t limit);

/* "day", "month" or "never" (the quota.threshold event's period). */
const char *kg_quota_period_name(enum kg_quota_period period);

#endif
