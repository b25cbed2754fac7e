/* auth/keyreserve.c - credits_mode strict (keygate/keyreserve.h): the
 * blocks of a key's credits this instance reserved in the store, claimed
 * by requests on the loops without a lock, refilled, renewed and handed
 * back by the daemon's main thread.
 *
 * A block is one 64-bit word per key (struct kg_keystat's hold): an epoch
 * and an amount. A claim takes its cost from the amount with a CAS, a
 * give-back adds it again only under the same epoch, and the reserving
 * thread voids a block by moving to the next epoch with an amount of 0.
 * So a request that claimed before a void cannot put credits of an ended
 * period or lapsed lease back. */
#include <stdatomic.h>
#include <stdlib.h>

#include "keygate/keyreserve.h"
#include "keygate/log.h"
#include "keygate/quota.h"

#include "auth/keycache_int.h"

/* How often the leases are renewed: several times per lease. */
#define RENEW_MS (KG_RESERVE_LEASE_S * 1000 / 6)
/* Renewals failing for this long: the store may let the leases lapse and
 * hand the credits to other instances, so this one stops spending them. */
#define VOID_AFTER_MS (KG_RESERVE_LEASE_S * 1000 / 2)
/* A block not used for this long goes back to the other instances. */
#define IDLE_S 10

void
kg_keyreserve_enable(struct kg_keycache *kc, void (*wake)(void *), void *arg)
{
    kc->res_wake = wake;
    kc->res_wake_arg = arg;
    atomic_store(&kc->strict, true);
}

int64_t
kg_keyreserve_block(int64_t limit)
{
    int64_t b = limit / 16;

    if (b > 1000)
        b = 1000;
    return b < 1 ? 1 : b;
}

/* Queues s for a refill, once until the refill takes it (any thread). */
static void
want_refill(struct kg_keycache *kc, struct kg_keystat *s)
{
    struct kg_keystat *head;

    if (atomic_exchange(&s->res_queued, true))
        return;
    head = atomic_load_explicit(&kc->res_queue, memory_order_relaxed);
    do {
        s->res_next = head;
    } while (!atomic_compare_exchange_weak_explicit(&kc->res_queue, &head, s, memory_order_release,
                                                    memory_order_relaxed));
    if (kc->res_wake != NULL)
        kc->res_wake(kc->res_wake_arg);
}

bool
kg_keyreserve_claim(struct kg_keycache *kc, const struct kg_keyent *ent, const struct kg_tier *tier,
                    int64_t cost, int64_t now, struct kg_credit_claim *claim)
{
    struct kg_keystat *s;
    uint64_t w;
    int64_t low;

    claim->stat = NULL;
    claim->units = 0;
    if (!kg_keycache_owner_allow(ent, tier, cost, now))
        return false;
    if (ent->quota_limit < 0 || cost <= 0)
        return true;
    /* A key with credits has its record from the load; none here is out
     * of memory, and refusing is the side that spends nothing unknown. */
    s = kg_keycache_stat(ent);
    if (s == NULL || cost > ent->quota_limit)
        return false;
    low = kg_keyreserve_block(ent->quota_limit) / 2;
    w = atomic_load(&s->hold);
    for (;;) {
        if (KG_HOLD_AMOUNT(w) < cost) {
            /* Empty (or too little): refused like an exhausted key; the
             * refill is asked for, and the block is there for the next. */
            want_refill(kc, s);
            return false;
        }
        if (atomic_compare_exchange_weak(&s->hold, &w, w - (uint64_t)cost))
            break;
    }
    atomic_fetch_add(&s->res_out, 1);
    if (KG_HOLD_AMOUNT(w) - cost <= low)
        want_refill(kc, s); /* ahead of need */
    claim->stat = s;
    claim->units = cost;
    claim->epoch = KG_HOLD_EPOCH(w);
    return true;
}

void
kg_keyreserve_spent(struct kg_credit_claim *claim)
{
    /* Counted out after the charge it follows (kg_keycache_charge), so
     * the idle check below never sees neither. */
    if (claim->stat != NULL)
        atomic_fetch_sub(&claim->stat->res_out, 1);
    claim->stat = NULL;
    claim->units = 0;
}

void
kg_keyreserve_give_back(struct kg_credit_claim *claim)
{
    struct kg_keystat *s = claim->stat;
    uint64_t w;

    if (s == NULL || claim->units <= 0)
        return;
    w = atomic_load(&s->hold);
    while (KG_HOLD_EPOCH(w) == claim->epoch &&
           !atomic_compare_exchange_weak(&s->hold, &w, w + (uint64_t)claim->units)) {
    }
    kg_keyreserve_spent(claim);
}

/* Drops what s holds: the next epoch, nothing in it. Returns the epoch. */
static uint64_t
void_hold(struct kg_keystat *s)
{
    uint64_t w = atomic_load(&s->hold);
    uint64_t next;

    do {
        next = (KG_HOLD_EPOCH(w) + 1) << KG_HOLD_BITS;
    } while (!atomic_compare_exchange_weak(&s->hold, &w, next));
    return KG_HOLD_EPOCH(next);
}

/* Adds granted credits to s's block if it is still of epoch. */
static void
add_hold(struct kg_keystat *s, uint64_t epoch, int64_t granted)
{
    uint64_t w = atomic_load(&s->hold);

    while (KG_HOLD_EPOCH(w) == epoch &&
           !atomic_compare_exchange_weak(&s->hold, &w, w + (uint64_t)granted)) {
    }
}

/* Refills s (taken off the queue) to a block and more, or voids a block of
 * an ended period first. */
static enum kg_status
refill(struct kg_keycache *kc, struct kg_store *st, struct kg_keystat *s, int64_t now,
       struct kg_err *err)
{
    int64_t limit = atomic_load(&s->credits.limit);
    enum kg_quota_period p = (enum kg_quota_period)atomic_load(&s->credits.period);
    int64_t start = kg_quota_period_start(p, now);
    int64_t block, granted = 0;
    uint64_t w, epoch;
    enum kg_status rc;

    atomic_store(&s->res_queued, false);
    if (!s->res_listed) {
        s->res_listed = true;
        s->res_held_next = kc->res_held;
        kc->res_held = s;
        s->res_start = start;
    }
    w = atomic_load(&s->hold);
    epoch = KG_HOLD_EPOCH(w);
    if (s->res_start != start) {
        epoch = void_hold(s);
        s->res_start = start;
        w = 0;
    }
    if (s->res_release) {
        /* The row of a block dropped for idleness goes first: what it
         * still counts as held is held by no one. */
        rc = kg_store_credit_release(st, kg_keystat_id(s), err);
        if (rc != KG_OK)
            return rc;
        s->res_release = false;
    }
    if (limit < 0)
        return KG_OK;
    block = kg_keyreserve_block(limit);
    if (KG_HOLD_AMOUNT(w) > block / 2)
        return KG_OK;
    rc = kg_store_credit_reserve(st, kg_keystat_id(s), block, start, now, KG_RESERVE_LEASE_S,
                                 &granted, err);
    if (rc == KG_ENOTFOUND)
        return KG_OK; /* deleted meanwhile: nothing to hold */
    if (rc == KG_OK && granted > 0) {
        add_hold(s, epoch, granted);
        s->res_at = now;
    }
    return rc;
}

enum kg_status
kg_keyreserve_pass(struct kg_keycache *kc, struct kg_store *st, int64_t now, int64_t mono_ms,
                   struct kg_err *err)
{
    struct kg_keystat *list, *next;
    enum kg_status rc = KG_OK, one;

    if (!atomic_load(&kc->strict))
        return KG_OK;
    pthread_mutex_lock(&kc->load_mu);
    if (kc->res_renewed_ms == 0)
        kc->res_renewed_ms = mono_ms;
    list = atomic_exchange_explicit(&kc->res_queue, NULL, memory_order_acquire);
    for (; list != NULL; list = next) {
        next = list->res_next;
        one = refill(kc, st, list, now, err);
        if (one != KG_OK && rc == KG_OK)
            rc = one;
        if (one != KG_OK) {
            /* Asked again at the next pass (a claim queues it too). */
            atomic_store(&list->res_queued, false);
        }
    }
    /* A new refill period: the blocks of the ended one go (the store
     * drops their rows at the key's next reservation). */
    for (struct kg_keystat *s = kc->res_held; s != NULL; s = s->res_held_next) {
        enum kg_quota_period p = (enum kg_quota_period)atomic_load(&s->credits.period);
        int64_t start = kg_quota_period_start(p, now);

        if (s->res_start != start) {
            void_hold(s);
            s->res_start = start;
        }
        /* Idle (no request for IDLE_S, no claim out, every charge
         * flushed, so its row's spent is complete): the block goes back
         * to the store. */
        if (!s->res_release && KG_HOLD_AMOUNT(atomic_load(&s->hold)) > 0 &&
            atomic_load(&s->last_used) < now - IDLE_S && s->res_at < now - IDLE_S &&
            atomic_load(&s->res_out) == 0 &&
            atomic_load(&s->credits.charged) == atomic_load(&s->credits.flushed)) {
            void_hold(s);
            s->res_release = true;
        }
        if (s->res_release && !atomic_load(&s->res_queued)) {
            one = kg_store_credit_release(st, kg_keystat_id(s), err);
            if (one == KG_OK)
                s->res_release = false;
            else if (rc == KG_OK)
                rc = one;
        }
    }
    if (kc->res_held != NULL && mono_ms >= kc->res_renew_at_ms) {
        one = kg_store_credit_renew(st, now, KG_RESERVE_LEASE_S, err);
        if (one == KG_OK) {
            kc->res_renewed_ms = mono_ms;
            kc->res_renew_at_ms = mono_ms + RENEW_MS;
        } else if (rc == KG_OK) {
            rc = one;
        }
    }
    if (kc->res_held != NULL && mono_ms - kc->res_renewed_ms > VOID_AFTER_MS) {
        /* Not renewed for half a lease: other instances may soon be handed
         * these credits. Spend none of them; refills start afresh. */
        for (struct kg_keystat *s = kc->res_held; s != NULL; s = s->res_held_next)
            void_hold(s);
        kc->res_renewed_ms = mono_ms;
        kg_log_warnx("credit reservations not renewed for %d s: their blocks are dropped",
                     VOID_AFTER_MS / 1000);
    }
    pthread_mutex_unlock(&kc->load_mu);
    return rc;
}

enum kg_status
kg_keyreserve_release(struct kg_keycache *kc, struct kg_store *st, struct kg_err *err)
{
    enum kg_status rc;

    pthread_mutex_lock(&kc->load_mu);
    for (struct kg_keystat *s = kc->res_held; s != NULL; s = s->res_held_next)
        void_hold(s);
    rc = kc->res_held != NULL ? kg_store_credit_release(st, NULL, err) : KG_OK;
    pthread_mutex_unlock(&kc->load_mu);
    return rc;
}
