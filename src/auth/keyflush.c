/* auth/keyflush.c - the key cache's write-back: once a second the daemon
 * writes the last-used times, usage counters and credits charged since the
 * previous flush, in one transaction, and marks them flushed only after
 * the commit (keygate/keycache.h, kg_keycache_flush); the same transaction
 * reads back the stored credit totals, so each instance's meters hold what
 * every instance spent as of its last flush (issue 15); and the usage of one
 * key as the store has it plus what is not flushed yet. Visits only the
 * stat records used since the last flush (the cache's dirty list). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/log.h"
#include "keygate/quota.h"
#include "keygate/timeutil.h"

#include "auth/keycache_int.h"

/* What one flush read from one stat record; marked flushed after the commit. */
struct flush_item {
    struct kg_keystat *stat;
    int64_t last_used, requests, denied_expired, denied_forbidden, denied_rate, credits;
};

/* What one flush read from one user record. */
struct user_item {
    struct kg_userstat *stat;
    int64_t credits, tier;
};

/* Reads the user deltas into uids/ud/uitems; returns how many. Caller
 * holds load_mu. */
static size_t
user_deltas(struct kg_keycache *kc, int64_t now, const char **uids, struct kg_user_usage *ud,
            struct user_item *items)
{
    size_t n = 0;

    for (size_t i = 0; i < kc->ustats_cap; i++) {
        struct kg_userstat *u = kc->ustats[i].stat;
        struct user_item it;

        if (u == NULL)
            continue;
        it.stat = u;
        it.credits = atomic_load(&u->credits.charged);
        it.tier = atomic_load(&u->tier.charged);
        memset(&ud[n], 0, sizeof(ud[n]));
        ud[n].credits = it.credits - atomic_load(&u->credits.flushed);
        ud[n].tier = it.tier - atomic_load(&u->tier.flushed);
        if (ud[n].credits == 0 && ud[n].tier == 0)
            continue;
        ud[n].credits_period_start =
            kg_quota_period_start((enum kg_quota_period)atomic_load(&u->credits.period), now);
        ud[n].tier_period_start =
            kg_quota_period_start((enum kg_quota_period)atomic_load(&u->tier.period), now);
        uids[n] = kc->ustats[i].id;
        items[n] = it;
        n++;
    }
    return n;
}

/* quota.threshold (issue 18): when meter m of subject ("key", "user",
 * "tier") id has reached 80 % or 100 % of its limit in the period holding
 * now, writes the alert not sent yet. The meter remembers what was sent
 * (this period), so a hot key costs a store call per threshold, not per
 * flush; the store remembers it across a restart. Not sent (store error):
 * tried again at the meter's next flush, which finds it still over. */
static void
meter_alerts(struct kg_store *st, struct kg_meter *m, const char *subject, const char *id,
             int64_t now)
{
    enum kg_quota_period p = (enum kg_quota_period)atomic_load(&m->period);
    int64_t limit = atomic_load(&m->limit);
    int64_t start = kg_quota_period_start(p, now);
    int64_t used;
    int level;

    if (limit <= 0)
        return;
    if (m->alerted_start != start) {
        /* A new period (the refill): its alerts are allowed again. */
        m->alerted_start = start;
        m->alerted = 0;
    }
    used = kg_quota_used(m, p, now);
    level = kg_quota_threshold(used, limit);
    for (int th = 80; th <= level; th += 20) {
        struct kg_quota_alert a = {
            .subject = subject,
            .id = id,
            .threshold = th,
            .used = used,
            .limit = limit,
            .period = kg_quota_period_name(p),
            .period_start = start,
        };
        struct kg_err err = {{0}};
        enum kg_status rc;

        if (m->alerted >= th)
            continue;
        rc = kg_store_quota_alert(st, &a, now, NULL, &err);
        if (rc == KG_EINVAL) {
            /* A store without the event outbox: asking again each flush
             * would not change its answer. */
            kg_log_debug("quota alert for %s %s: %s", subject, id, err.msg);
        } else if (rc != KG_OK) {
            kg_log_warnx("quota alert for %s %s: %s", subject, id, err.msg);
            return;
        }
        m->alerted = th;
    }
}

/* Puts a list taken by a flush back whole (its records still flagged). */
static void
relist(struct kg_keycache *kc, struct kg_keystat *list)
{
    while (list != NULL) {
        struct kg_keystat *next = list->dirty_next;
        struct kg_keystat *head = atomic_load_explicit(&kc->dirty, memory_order_relaxed);

        do {
            list->dirty_next = head;
        } while (!atomic_compare_exchange_weak_explicit(
            &kc->dirty, &head, list, memory_order_release, memory_order_relaxed));
        list = next;
    }
}

enum kg_status
kg_keycache_flush(struct kg_keycache *kc, struct kg_store *st, size_t *flushed, struct kg_err *err)
{
    return kg_keycache_flush_at(kc, st, kg_time_now(), flushed, err);
}

enum kg_status
kg_keycache_flush_at(struct kg_keycache *kc, struct kg_store *st, int64_t now, size_t *flushed,
                     struct kg_err *err)
{
    const char **ids = NULL, **uids = NULL;
    struct kg_key_usage *deltas = NULL;
    struct kg_user_usage *udeltas = NULL;
    struct kg_usage_total *ktot = NULL, *utot = NULL;
    struct flush_item *items = NULL;
    struct user_item *uitems = NULL;
    struct kg_keystat *list;
    enum kg_status rc = KG_OK;
    size_t n = 0, nu = 0, nlist = 0;

    if (flushed != NULL)
        *flushed = 0;
    pthread_mutex_lock(&kc->load_mu);
    /* Only the records used since the last flush: with a million keys a
     * pass over all of them each second would cost more than the flush. */
    list = atomic_exchange_explicit(&kc->dirty, NULL, memory_order_acquire);
    for (struct kg_keystat *s = list; s != NULL; s = s->dirty_next)
        nlist++;
    ids = malloc((nlist + 1) * sizeof(*ids));
    deltas = calloc(nlist + 1, sizeof(*deltas));
    items = malloc((nlist + 1) * sizeof(*items));
    uids = malloc((kc->nustats + 1) * sizeof(*uids));
    udeltas = calloc(kc->nustats + 1, sizeof(*udeltas));
    uitems = malloc((kc->nustats + 1) * sizeof(*uitems));
    ktot = calloc(nlist + 1, sizeof(*ktot));
    utot = calloc(kc->nustats + 1, sizeof(*utot));
    if (ids == NULL || deltas == NULL || items == NULL || uids == NULL || udeltas == NULL ||
        uitems == NULL || ktot == NULL || utot == NULL) {
        relist(kc, list);
        rc = kg_err_set(err, KG_ENOMEM, "out of memory flushing usage");
        goto cleanup;
    }
    for (struct kg_keystat *s = list; s != NULL; s = s->dirty_next) {
        struct flush_item it;
        int64_t prev_used;

        /* Off the list before the counters are read (see mark_dirty). */
        atomic_store(&s->dirty, false);
        /* Each counter is read once: what the request path adds after this
         * read belongs to the next flush, since only the value read here is
         * marked flushed. */
        it.stat = s;
        it.last_used = atomic_load(&s->last_used);
        it.requests = atomic_load(&s->requests);
        it.denied_expired = atomic_load(&s->denied_expired);
        it.denied_forbidden = atomic_load(&s->denied_forbidden);
        it.denied_rate = atomic_load(&s->denied_rate);
        it.credits = atomic_load(&s->credits.charged);
        prev_used = atomic_load(&s->last_flushed);
        deltas[n].requests = it.requests - atomic_load(&s->requests_flushed);
        deltas[n].denied_expired = it.denied_expired - atomic_load(&s->denied_expired_flushed);
        deltas[n].denied_forbidden =
            it.denied_forbidden - atomic_load(&s->denied_forbidden_flushed);
        deltas[n].denied_rate = it.denied_rate - atomic_load(&s->denied_rate_flushed);
        deltas[n].credits = it.credits - atomic_load(&s->credits.flushed);
        /* Charges made since the last flush count in the period holding
         * now: across a day or month boundary, at most one flush interval
         * of them lands in the new period. */
        deltas[n].credits_period_start =
            kg_quota_period_start((enum kg_quota_period)atomic_load(&s->credits.period), now);
        deltas[n].last_used_at = it.last_used > prev_used ? it.last_used : 0;
        if (deltas[n].last_used_at == 0 && deltas[n].requests == 0 &&
            deltas[n].denied_expired == 0 && deltas[n].denied_forbidden == 0 &&
            deltas[n].denied_rate == 0 && deltas[n].credits == 0)
            continue;
        ids[n] = ((struct stat_node *)(void *)s)->id;
        items[n] = it;
        /* A key with a limit learns what every instance spent of it, even
         * in a second it charged nothing (issue 15). */
        ktot[n].want = atomic_load(&s->credits.limit) >= 0;
        n++;
    }
    nu = user_deltas(kc, now, uids, udeltas, uitems);
    if (n == 0 && nu == 0)
        goto cleanup;
    /* Keys and users in one transaction, each count read once above and
     * marked flushed only after the commit: every charge reaches each row
     * exactly once. Not always in the same transaction, though: the keys
     * are read before the users while the request path keeps charging (key
     * first, then user and tier), so a charge made between the two reads
     * is in this transaction for the user and tier and in the next one for
     * the key. A crash in between leaves the key behind its user by the
     * charges of that moment; neither is ever charged twice. */
    rc = kg_store_usage_add_totals(st, ids, deltas, n, uids, udeltas, nu, now, ktot, utot, err);
    if (rc != KG_OK) {
        /* Listed again: the next flush retries them. */
        for (size_t i = 0; i < n; i++)
            kg_keycache_mark_dirty(items[i].stat);
        goto cleanup;
    }
    for (size_t i = 0; i < nu; i++) {
        struct kg_userstat *u = uitems[i].stat;

        /* Each stored total moves before its flushed mark: a reader in
         * between counts the delta twice (refuses early), never not at all
         * (overspends). */
        if (utot[i].known) {
            /* The store's totals, every instance's charges in them. */
            kg_quota_commit_total(&u->credits, utot[i].credits, utot[i].credits_period_start,
                                  uitems[i].credits);
            kg_quota_commit_total(&u->tier, utot[i].tier, utot[i].tier_period_start,
                                  uitems[i].tier);
            continue;
        }
        kg_quota_commit(&u->credits, udeltas[i].credits, udeltas[i].credits_period_start,
                        uitems[i].credits);
        kg_quota_commit(&u->tier, udeltas[i].tier, udeltas[i].tier_period_start, uitems[i].tier);
    }
    for (size_t i = 0; i < n; i++) {
        struct kg_keystat *s = items[i].stat;

        if (ktot[i].known)
            kg_quota_commit_total(&s->credits, ktot[i].credits, ktot[i].credits_period_start,
                                  items[i].credits);
        else
            kg_quota_commit(&s->credits, deltas[i].credits, deltas[i].credits_period_start,
                            items[i].credits);
        if (items[i].last_used > atomic_load(&s->last_flushed))
            atomic_store(&s->last_flushed, items[i].last_used);
        atomic_store(&s->requests_flushed, items[i].requests);
        atomic_store(&s->denied_expired_flushed, items[i].denied_expired);
        atomic_store(&s->denied_forbidden_flushed, items[i].denied_forbidden);
        atomic_store(&s->denied_rate_flushed, items[i].denied_rate);
    }
    /* After the commit, from what the store now has: the alerts go in
     * transactions of their own (a crash between leaves them to the next
     * flush of that key or user, still over the threshold). */
    for (size_t i = 0; i < n; i++)
        if (deltas[i].credits != 0)
            meter_alerts(st, &items[i].stat->credits, "key", ids[i], now);
    for (size_t i = 0; i < nu; i++) {
        if (udeltas[i].credits != 0)
            meter_alerts(st, &uitems[i].stat->credits, "user", uids[i], now);
        if (udeltas[i].tier != 0)
            meter_alerts(st, &uitems[i].stat->tier, "tier", uids[i], now);
    }
    if (flushed != NULL)
        *flushed = n;
cleanup:
    pthread_mutex_unlock(&kc->load_mu);
    free(ids);
    free(deltas);
    free(items);
    free(uids);
    free(udeltas);
    free(uitems);
    free(ktot);
    free(utot);
    return rc;
}

enum kg_status
kg_keycache_usage(struct kg_keycache *kc, struct kg_store *st, const char *id,
                  struct kg_key_usage *out, struct kg_err *err)
{
    struct kg_keystat *s;
    enum kg_status rc;

    pthread_mutex_lock(&kc->load_mu);
    rc = kg_store_key_usage_get(st, id, out, err);
    if (rc != KG_OK)
        goto cleanup;
    s = kg_keycache_stat_find(kc, id);
    if (s != NULL) {
        int64_t used = atomic_load(&s->last_used);

        out->requests += atomic_load(&s->requests) - atomic_load(&s->requests_flushed);
        out->denied_expired +=
            atomic_load(&s->denied_expired) - atomic_load(&s->denied_expired_flushed);
        out->denied_forbidden +=
            atomic_load(&s->denied_forbidden) - atomic_load(&s->denied_forbidden_flushed);
        out->denied_rate += atomic_load(&s->denied_rate) - atomic_load(&s->denied_rate_flushed);
        if (used > out->last_used_at)
            out->last_used_at = used;
    }
cleanup:
    pthread_mutex_unlock(&kc->load_mu);
    return rc;
}
