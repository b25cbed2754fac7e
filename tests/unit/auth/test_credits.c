/* tests/unit/auth/test_credits.c - per-key credits (issue 5, item 4): the
 * `cost` rules (kg_scope_cost over a loaded config) and the charge /
 * check / flush of src/auth/keycache.c (the arithmetic alone is
 * tests/unit/limit/test_quota.c) over the SQLite store in a fresh
 * temporary directory per test: charges are deltas added to quota_used
 * once, after the commit, and a later refill period starts them again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>

#include "keygate/config.h"
#include "keygate/keycache.h"
#include "keygate/scope.h"
#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "unit/fixture.h"

static int
group_setup(void **state)
{
    (void)state;
    kg_fx_clear_env();
    return sodium_init() < 0 ? -1 : 0;
}

static void
insert_key(struct kg_fx_cache *f, const char *id, int64_t limit, const char *period)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    kg_fx_key_rec(&rec, id, kg_time_now() - 1000);
    rec.quota_limit = limit;
    snprintf(rec.quota_period, sizeof(rec.quota_period), "%s", period);
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

static void
reload(struct kg_fx_cache *f)
{
    struct kg_err err = {{0}};

    if (kg_keycache_reload(f->kc, f->st, kg_time_now(), &err) != KG_OK)
        fail_msg("reload should succeed: %s", err.msg);
}

static void
flush_ok(struct kg_fx_cache *f)
{
    struct kg_err err = {{0}};

    if (kg_keycache_flush(f->kc, f->st, NULL, &err) != KG_OK)
        fail_msg("flush should succeed: %s", err.msg);
}

static int64_t
stored_used(struct kg_fx_cache *f, const char *id)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    if (kg_store_key_get(f->st, id, &rec, &err) != KG_OK)
        fail_msg("reading %s should succeed: %s", id, err.msg);
    return rec.quota_used;
}

/* The entry of id in the current snapshot; release the snapshot after. */
static const struct kg_keyent *
find(struct kg_fx_cache *f, const char *id, const struct kg_keysnap **snap)
{
    unsigned char digest[KG_DIGEST_BYTES];
    const struct kg_keyent *ent;

    *snap = kg_keycache_acquire(f->kc);
    crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL, 0);
    ent = kg_keysnap_find(*snap, digest);
    if (ent == NULL)
        fail_msg("%s should be in the snapshot", id);
    return ent;
}

static void
raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;

    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s should succeed: %s", sql, msg != NULL ? msg : sqlite3_errmsg(db));
    sqlite3_close(db);
}

static void
test_the_first_matching_cost_rule_wins_and_no_rule_costs_one(void **state)
{
    struct kg_config *cfg = NULL;

    (void)state;
    if (kg_fx_load_config("cost POST /v1/expensive* 2\n"
                          "cost * /v1/expensive/free 7\n"
                          "cost get /v1/free 0\n"
                          "cost * /v1/* 3\n",
                          &cfg) != 0)
        fail_msg("the cost rules should load");
    assert_int_equal(cfg->ncosts, 4);
    assert_int_equal(kg_scope_cost(cfg, "POST", "/v1/expensive/run"), 2);
    assert_int_equal(kg_scope_cost(cfg, "POST", "/v1/expensive/free"), 2);
    assert_int_equal(kg_scope_cost(cfg, "GET", "/v1/expensive/free"), 7);
    assert_int_equal(kg_scope_cost(cfg, "GET", "/v1/free"), 0);
    assert_int_equal(kg_scope_cost(cfg, "GET", "/v1/other"), 3);
    assert_int_equal(kg_scope_cost(cfg, "GET", "/v2/other"), 1);
    kg_config_free(cfg);
}

static void
test_bad_cost_lines_are_refused(void **state)
{
    const char *bad[] = {
        "cost GET /x 2.5\n", "cost GET /x -1\n",  "cost GET /x 1000000001\n",
        "cost GET x 1\n",    "cost GET /x\n",     "cost GET /x 1 2\n",
        "cost G(T /x 1\n",   "cost GET /a*b 1\n", "cost GET /x 99999999999999999999\n",
    };
    struct kg_config *cfg = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (kg_fx_load_config(bad[i], &cfg) == 0) {
            kg_config_free(cfg);
            fail_msg("\"%s\" should be refused", bad[i]);
        }
    }
}

static void
test_charges_are_checked_then_flushed_once(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    int64_t now = kg_time_now();

    insert_key(f, "key_a", 5, "");
    reload(f);
    ent = find(f, "key_a", &snap);
    assert_true(kg_keycache_credits_allow(ent, 5, now));
    assert_false(kg_keycache_credits_allow(ent, 6, now));
    kg_keycache_charge(kg_keycache_stat(ent), 3);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 3);
    assert_true(kg_keycache_credits_allow(ent, 2, now));
    assert_false(kg_keycache_credits_allow(ent, 3, now));
    kg_keycache_release(snap);

    flush_ok(f);
    assert_int_equal(stored_used(f, "key_a"), 3);
    flush_ok(f); /* nothing new: nothing written again */
    assert_int_equal(stored_used(f, "key_a"), 3);

    /* A reload with a charge not flushed yet neither loses nor doubles it. */
    ent = find(f, "key_a", &snap);
    kg_keycache_charge(kg_keycache_stat(ent), 1);
    kg_keycache_release(snap);
    reload(f);
    ent = find(f, "key_a", &snap);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 4);
    kg_keycache_release(snap);
    flush_ok(f);
    assert_int_equal(stored_used(f, "key_a"), 4);
    reload(f);
    ent = find(f, "key_a", &snap);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 4);
    assert_true(kg_keycache_credits_allow(ent, 1, now));
    assert_false(kg_keycache_credits_allow(ent, 2, now));
    kg_keycache_release(snap);
}

static void
test_a_failed_flush_charges_nothing_and_the_next_charges_once(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    struct kg_err err = {{0}};

    insert_key(f, "key_a", -1, "");
    reload(f);
    ent = find(f, "key_a", &snap);
    kg_keycache_charge(kg_keycache_stat(ent), 2);
    kg_keycache_release(snap);
    raw_exec(f->path, "CREATE TRIGGER no_credits BEFORE UPDATE OF quota_used ON keys"
                      " BEGIN SELECT RAISE(ABORT, 'no'); END");
    assert_int_not_equal(kg_keycache_flush(f->kc, f->st, NULL, &err), KG_OK);
    assert_int_equal(stored_used(f, "key_a"), 0);
    raw_exec(f->path, "DROP TRIGGER no_credits");
    flush_ok(f);
    assert_int_equal(stored_used(f, "key_a"), 2);
    flush_ok(f);
    assert_int_equal(stored_used(f, "key_a"), 2);
}

static void
test_a_new_refill_period_starts_the_credits_again(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    int64_t now = kg_time_now();

    insert_key(f, "key_d", 10, "day");
    /* Used up on an earlier day: that count is history. */
    raw_exec(f->path, "UPDATE keys SET quota_used = 10, quota_period_start = 86400");
    reload(f);
    ent = find(f, "key_d", &snap);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 0);
    assert_true(kg_keycache_credits_allow(ent, 10, now));
    kg_keycache_charge(kg_keycache_stat(ent), 4);
    kg_keycache_release(snap);
    flush_ok(f);
    assert_int_equal(stored_used(f, "key_d"), 4);

    ent = find(f, "key_d", &snap);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 4);
    /* Two days on, what was stored today no longer counts. */
    assert_int_equal(
        kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now + 2 * 86400), 0);
    kg_keycache_release(snap);
}

static void
test_retry_after_of_a_quota_refusal_is_the_next_refill_or_none(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap, *snap2;
    const struct kg_keyent *daily, *once;
    /* 2026-11-23T12:00:00Z: 12 h to the next UTC day. */
    const int64_t now = 1795435200;

    insert_key(f, "key_day", 2, "day");
    insert_key(f, "key_once", 2, "");
    reload(f);
    daily = find(f, "key_day", &snap);
    once = find(f, "key_once", &snap2);
    kg_keycache_charge(kg_keycache_stat(daily), 2);
    kg_keycache_charge(kg_keycache_stat(once), 2);
    assert_false(kg_keycache_spend_allow(daily, NULL, 1, now));
    assert_int_equal(kg_keycache_spend_retry_after(daily, NULL, 1, now), 12 * 3600);
    /* Credits without a refill never come back by themselves: no Retry-After. */
    assert_false(kg_keycache_spend_allow(once, NULL, 1, now));
    assert_int_equal(kg_keycache_spend_retry_after(once, NULL, 1, now), 0);
    /* A cost above the limit never fits either. */
    assert_int_equal(kg_keycache_spend_retry_after(daily, NULL, 3, now), 0);
    /* Nothing refused: nothing to wait for. */
    assert_int_equal(kg_keycache_spend_retry_after(daily, NULL, 0, now), 0);
    kg_keycache_release(snap2);
    kg_keycache_release(snap);
}

static void
test_a_count_without_a_start_under_a_refill_is_history(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    int64_t now = kg_time_now();
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    /* What an older keygate left: a refill set without moving the start. */
    insert_key(f, "key_m", 10, "");
    raw_exec(f->path, "UPDATE keys SET quota_used = 10, quota_period = 'month'");
    reload(f);
    ent = find(f, "key_m", &snap);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 0);
    assert_true(kg_keycache_credits_allow(ent, 10, now));
    kg_keycache_charge(kg_keycache_stat(ent), 1);
    kg_keycache_release(snap);
    flush_ok(f);
    if (kg_store_key_get(f->st, "key_m", &rec, &err) != KG_OK)
        fail_msg("reading key_m should succeed: %s", err.msg);
    assert_int_equal(rec.quota_used, 1);
    /* flush_ok's clock may have passed a month boundary since now: either start. */
    assert_true(rec.quota_period_start == kg_quota_period_start(KG_QUOTA_MONTH, now) ||
                rec.quota_period_start == kg_quota_period_start(KG_QUOTA_MONTH, kg_time_now()));
}

/* An audit entry at the given time: the store moves refill periods by it.
 * Gives the store the audit key it then needs (any fixed bytes do). */
static struct kg_audit_entry
entry_at(struct kg_fx_cache *f, const char *action, const char *object, int64_t at)
{
    unsigned char audit_key[KG_AUDIT_KEY_BYTES];
    struct kg_audit_entry e;

    memset(audit_key, 7, sizeof(audit_key));
    kg_store_set_audit_key(f->st, audit_key);
    memset(&e, 0, sizeof(e));
    e.time = at;
    snprintf(e.actor, sizeof(e.actor), "test");
    snprintf(e.action, sizeof(e.action), "%s", action);
    snprintf(e.object, sizeof(e.object), "%s", object);
    snprintf(e.details, sizeof(e.details), "{}");
    return e;
}

/* What `keys update ID --credits limit --refill period` stores, at at. */
static void
update_key_at(struct kg_fx_cache *f, const char *id, int64_t limit, const char *period, int64_t at)
{
    struct kg_audit_entry e = entry_at(f, "key.update", id, at);
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    if (kg_store_key_get(f->st, id, &rec, &err) != KG_OK)
        fail_msg("reading %s should succeed: %s", id, err.msg);
    rec.quota_limit = limit;
    snprintf(rec.quota_period, sizeof(rec.quota_period), "%s", period);
    if (kg_store_key_update(f->st, &rec, &e, &err) != KG_OK)
        fail_msg("updating %s should succeed: %s", id, err.msg);
}

static void
test_credits_used_up_before_a_refill_was_set_come_back_at_the_next_period(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    int64_t day = kg_quota_period_start(KG_QUOTA_DAY, kg_time_now());
    int64_t at = day + 3600;

    insert_key(f, "key_b", 10, "");
    reload(f);
    ent = find(f, "key_b", &snap);
    kg_keycache_charge(kg_keycache_stat(ent), 10);
    kg_keycache_release(snap);
    flush_ok(f);
    update_key_at(f, "key_b", 10, "day", at);
    reload(f);
    ent = find(f, "key_b", &snap);
    /* Used up stays used up for the rest of the day the refill was set... */
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, at), 10);
    assert_false(kg_keycache_credits_allow(ent, 1, at));
    assert_false(kg_keycache_credits_allow(ent, 1, day + 86399));
    /* ...and the next UTC day the credits are whole again. */
    assert_true(kg_keycache_credits_allow(ent, 10, day + 86400));
    assert_false(kg_keycache_credits_allow(ent, 11, day + 86400));
    kg_keycache_release(snap);
    assert_int_equal(stored_used(f, "key_b"), 10);
}

static void
test_a_changed_refill_keeps_what_the_current_period_used(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    int64_t day = kg_quota_period_start(KG_QUOTA_DAY, kg_time_now());
    int64_t at = day + 3600;
    int64_t next_month = kg_quota_period_start(
        KG_QUOTA_MONTH, kg_quota_period_start(KG_QUOTA_MONTH, at) + 32 * 86400);
    char sql[160];

    /* Used up today under a daily refill, then made monthly: still used up
     * this month, whole again the next. */
    insert_key(f, "key_c", 10, "day");
    snprintf(sql, sizeof(sql), "UPDATE keys SET quota_used = 10, quota_period_start = %lld",
             (long long)day);
    raw_exec(f->path, sql);
    update_key_at(f, "key_c", 10, "month", at);
    reload(f);
    ent = find(f, "key_c", &snap);
    assert_false(kg_keycache_credits_allow(ent, 1, at));
    assert_false(kg_keycache_credits_allow(ent, 1, next_month - 1));
    assert_true(kg_keycache_credits_allow(ent, 10, next_month));
    kg_keycache_release(snap);

    /* Used up yesterday: history, whatever the new refill. */
    snprintf(sql, sizeof(sql),
             "UPDATE keys SET quota_used = 10, quota_period = 'day', quota_period_start = %lld",
             (long long)(day - 86400));
    raw_exec(f->path, sql);
    update_key_at(f, "key_c", 10, "month", at);
    reload(f);
    ent = find(f, "key_c", &snap);
    assert_true(kg_keycache_credits_allow(ent, 10, at));
    kg_keycache_release(snap);
    assert_int_equal(stored_used(f, "key_c"), 0);

    /* A refill removed keeps what today used, for good. */
    snprintf(sql, sizeof(sql),
             "UPDATE keys SET quota_used = 10, quota_period = 'day', quota_period_start = %lld",
             (long long)day);
    raw_exec(f->path, sql);
    update_key_at(f, "key_c", 10, "", at);
    reload(f);
    ent = find(f, "key_c", &snap);
    assert_false(kg_keycache_credits_allow(ent, 1, at));
    assert_false(kg_keycache_credits_allow(ent, 1, day + 40 * 86400));
    kg_keycache_release(snap);
}

/* Two keys of one user: insert_key() gives each key the default user of
 * its tenant, so the same tenant means the same owner. */
static void
insert_shared_key(struct kg_fx_cache *f, const char *id, int64_t limit)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    kg_fx_key_rec(&rec, id, kg_time_now() - 1000);
    snprintf(rec.tenant, sizeof(rec.tenant), "shared");
    rec.quota_limit = limit;
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

static struct kg_user_usage
user_used(struct kg_fx_cache *f, const char *key_id)
{
    struct kg_key_rec rec;
    struct kg_user_usage u = {0};
    struct kg_err err = {{0}};

    if (kg_store_key_get(f->st, key_id, &rec, &err) != KG_OK ||
        kg_store_user_usage_get(f->st, rec.user_id, &u, &err) != KG_OK)
        fail_msg("reading the owner of %s should succeed: %s", key_id, err.msg);
    return u;
}

static void
test_a_users_credits_are_shared_by_its_keys_and_the_stricter_limit_decides(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *k1, *k2;
    int64_t now = kg_time_now();

    insert_shared_key(f, "key_1", 4);
    insert_shared_key(f, "key_2", -1);
    raw_exec(f->path, "UPDATE users SET quota_limit = 6 WHERE tenant = 'shared'");
    reload(f);
    k1 = find(f, "key_1", &snap);
    kg_keycache_release(snap); /* the snapshot is current: k1 stays valid under k2's */
    k2 = find(f, "key_2", &snap);
    assert_true(k2->owner->has_quota);
    assert_ptr_equal(k1->owner->ustat, k2->owner->ustat);
    /* key_1 is held by its own 4, key_2 by the user's 6. */
    assert_true(kg_keycache_spend_allow(k1, NULL, 4, now));
    assert_false(kg_keycache_spend_allow(k1, NULL, 5, now));
    assert_true(kg_keycache_spend_allow(k2, NULL, 6, now));
    assert_false(kg_keycache_spend_allow(k2, NULL, 7, now));
    kg_keycache_charge(kg_keycache_stat(k1), 3);
    assert_true(kg_keycache_spend_allow(k2, NULL, 3, now));
    assert_false(kg_keycache_spend_allow(k2, NULL, 4, now));
    assert_false(kg_keycache_spend_allow(k1, NULL, 2, now));
    kg_keycache_charge(kg_keycache_stat(k2), 3);
    /* The user is out: key_1's own credit left does not help it. */
    assert_false(kg_keycache_spend_allow(k1, NULL, 1, now));
    assert_true(kg_keycache_spend_allow(k1, NULL, 0, now));
    kg_keycache_release(snap);

    flush_ok(f);
    assert_int_equal(user_used(f, "key_1").credits, 6);
    assert_int_equal(stored_used(f, "key_1"), 3);
    assert_int_equal(stored_used(f, "key_2"), 3);
    flush_ok(f); /* nothing new: nothing written again */
    assert_int_equal(user_used(f, "key_2").credits, 6);
    reload(f);
    k1 = find(f, "key_1", &snap);
    assert_int_equal(kg_quota_used(&k1->owner->ustat->credits, KG_QUOTA_NONE, now), 6);
    assert_false(kg_keycache_spend_allow(k1, NULL, 1, now));
    kg_keycache_release(snap);
}

static void
test_the_tier_quota_counts_per_user_and_a_refusal_charges_nothing(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *k1, *k2;
    struct kg_config *cfg = NULL;
    const struct kg_tier *tier;
    struct kg_keycache *again = NULL;
    struct kg_err err = {{0}};
    int64_t now = kg_time_now();

    if (kg_fx_load_config("tier gold rate 100/s quota 5/day\n", &cfg) != 0)
        fail_msg("the tier should load");
    tier = kg_config_tier(cfg, "gold");
    assert_non_null(tier);
    insert_shared_key(f, "key_1", 100);
    insert_shared_key(f, "key_2", -1);
    insert_key(f, "key_other", -1, "");
    reload(f);
    k1 = find(f, "key_1", &snap);
    kg_keycache_release(snap);
    k2 = find(f, "key_2", &snap);
    assert_true(kg_keycache_spend_allow(k1, tier, 3, now));
    kg_keycache_charge(kg_keycache_stat(k1), 3);
    assert_true(kg_keycache_spend_allow(k2, tier, 2, now));
    assert_false(kg_keycache_spend_allow(k2, tier, 3, now)); /* 3 + 3 > 5 */
    kg_keycache_charge(kg_keycache_stat(k2), 2);
    assert_false(kg_keycache_spend_allow(k1, tier, 1, now));
    assert_int_equal(kg_quota_used(&k1->owner->ustat->tier, KG_QUOTA_DAY, now), 5);
    kg_keycache_release(snap);
    /* Another user of the tier has a quota of its own. */
    k1 = find(f, "key_other", &snap);
    assert_true(kg_keycache_spend_allow(k1, tier, 5, now));
    kg_keycache_release(snap);

    flush_ok(f);
    assert_int_equal(user_used(f, "key_1").tier, 5);
    assert_true(user_used(f, "key_1").tier_period_start >=
                kg_quota_period_start(KG_QUOTA_DAY, now));
    /* A new process (a restart) reads the count back: still used up. */
    assert_int_equal(kg_keycache_new(NULL, &again), KG_OK);
    assert_int_equal(kg_keycache_reload(again, f->st, now, &err), KG_OK);
    {
        unsigned char digest[KG_DIGEST_BYTES];
        const struct kg_keysnap *s2 = kg_keycache_acquire(again);
        const struct kg_keyent *e;

        crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)"key_2", 5, NULL, 0);
        e = kg_keysnap_find(s2, digest);
        assert_non_null(e);
        assert_false(kg_keycache_spend_allow(e, tier, 1, now));
        assert_true(kg_keycache_spend_allow(e, tier, 0, now));
        /* The next UTC day the quota is whole again. */
        assert_true(kg_keycache_spend_allow(e, tier, 5, now + 86400));
        /* Without the tier (or with a tier without quota) nothing limits it. */
        assert_true(kg_keycache_spend_allow(e, NULL, 1000, now));
        kg_keycache_release(s2);
    }
    kg_keycache_free(again);
    kg_config_free(cfg);
}

static void
test_a_tier_without_quota_counts_nothing(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *k;
    struct kg_config *cfg = NULL;

    if (kg_fx_load_config("tier free rate 100/s\n", &cfg) != 0)
        fail_msg("the tier should load");
    insert_key(f, "key_f", -1, "");
    reload(f);
    k = find(f, "key_f", &snap);
    assert_true(kg_keycache_spend_allow(k, kg_config_tier(cfg, "free"), 7, kg_time_now()));
    kg_keycache_charge(kg_keycache_stat(k), 7);
    kg_keycache_release(snap);
    flush_ok(f);
    assert_int_equal(user_used(f, "key_f").tier, 0);
    assert_int_equal(user_used(f, "key_f").credits, 7); /* the user's own count goes on */
    kg_config_free(cfg);
}

static void
test_a_failed_flush_charges_no_user_and_the_next_charges_once(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *k;
    struct kg_config *cfg = NULL;
    struct kg_err err = {{0}};

    if (kg_fx_load_config("tier gold rate 100/s quota 50/month\n", &cfg) != 0)
        fail_msg("the tier should load");
    insert_key(f, "key_a", -1, "");
    reload(f);
    k = find(f, "key_a", &snap);
    assert_true(kg_keycache_spend_allow(k, kg_config_tier(cfg, "gold"), 2, kg_time_now()));
    kg_keycache_charge(kg_keycache_stat(k), 2);
    kg_keycache_release(snap);
    /* The user write fails after the key's: the whole batch rolls back. */
    raw_exec(f->path, "CREATE TRIGGER no_users BEFORE INSERT ON user_usage"
                      " BEGIN SELECT RAISE(ABORT, 'no'); END");
    assert_int_not_equal(kg_keycache_flush(f->kc, f->st, NULL, &err), KG_OK);
    assert_int_equal(stored_used(f, "key_a"), 0);
    assert_int_equal(user_used(f, "key_a").tier, 0);
    raw_exec(f->path, "DROP TRIGGER no_users");
    flush_ok(f);
    flush_ok(f);
    assert_int_equal(stored_used(f, "key_a"), 2);
    assert_int_equal(user_used(f, "key_a").tier, 2);
    assert_int_equal(user_used(f, "key_a").credits, 2);
    kg_config_free(cfg);
}

static void
test_a_user_who_spent_while_unlimited_gets_its_credits_at_the_next_period(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *k;
    int64_t day = kg_quota_period_start(KG_QUOTA_DAY, kg_time_now());
    int64_t at = day + 3600;
    struct kg_audit_entry e;
    struct kg_key_rec rec;
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    insert_shared_key(f, "key_1", -1);
    reload(f);
    k = find(f, "key_1", &snap);
    kg_keycache_charge(kg_keycache_stat(k), 10);
    kg_keycache_release(snap);
    flush_ok(f);
    /* users update U --credits 5 --refill day: 5 < the 10 used. */
    if (kg_store_key_get(f->st, "key_1", &rec, &err) != KG_OK ||
        kg_store_user_get(f->st, rec.user_id, &u, &err) != KG_OK)
        fail_msg("reading the owner of key_1 should succeed: %s", err.msg);
    u.has_quota = true;
    u.quota_limit = 5;
    snprintf(u.quota_period, sizeof(u.quota_period), "day");
    e = entry_at(f, "user.update", u.id, at);
    if (kg_store_user_update(f->st, &u, &e, &err) != KG_OK)
        fail_msg("updating the user should succeed: %s", err.msg);
    assert_int_equal(user_used(f, "key_1").credits_period_start, day);
    reload(f);
    k = find(f, "key_1", &snap);
    assert_false(kg_keycache_spend_allow(k, NULL, 1, at));
    assert_false(kg_keycache_spend_allow(k, NULL, 1, day + 86399));
    assert_true(kg_keycache_spend_allow(k, NULL, 5, day + 86400));
    assert_false(kg_keycache_spend_allow(k, NULL, 6, day + 86400));
    kg_keycache_release(snap);
}

static void
test_a_request_that_costs_nothing_passes_every_limit_even_past_it(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *k;
    struct kg_config *cfg = NULL;
    const struct kg_tier *tier;
    int64_t now = kg_time_now();

    if (kg_fx_load_config("tier gold rate 100/s quota 4/day\n", &cfg) != 0)
        fail_msg("the tier should load");
    tier = kg_config_tier(cfg, "gold");
    assert_non_null(tier);
    insert_shared_key(f, "key_1", 5);
    reload(f);
    k = find(f, "key_1", &snap);
    (void)kg_keycache_spend_allow(k, tier, 5, now); /* sets the period the tier counts in */
    kg_keycache_charge(kg_keycache_stat(k), 5);
    kg_keycache_release(snap);
    /* Limits lowered below what was used: the key, its user and the tier
     * (4 a day) are all past theirs. */
    raw_exec(f->path, "UPDATE keys SET quota_limit = 2");
    raw_exec(f->path, "UPDATE users SET quota_limit = 3 WHERE tenant = 'shared'");
    reload(f);
    k = find(f, "key_1", &snap);
    assert_false(kg_keycache_credits_allow(k, 1, now));
    assert_false(kg_keycache_spend_allow(k, tier, 1, now));
    assert_true(kg_keycache_credits_allow(k, 0, now));
    assert_true(kg_keycache_spend_allow(k, tier, 0, now));
    kg_keycache_release(snap);
    kg_config_free(cfg);
}

/* ---- quota.threshold (issue 18) ---- */

struct ev_acc {
    struct kg_event *evs;
    size_t n;
};

static bool
collect_ev(const struct kg_event *ev, void *ctx)
{
    struct ev_acc *acc = ctx;

    if (acc->n < 16)
        acc->evs[acc->n] = *ev;
    acc->n++;
    return true;
}

/* The quota.threshold events in the outbox, oldest first, one line each:
 * the data, then " key=<key id> user=<yes|no>". */
static size_t
alerts(struct kg_fx_cache *f, char *out, size_t cap)
{
    struct kg_event_query q = {.type = "quota.threshold"};
    struct kg_err err = {{0}};
    struct ev_acc acc = {calloc(16, sizeof(struct kg_event)), 0};

    assert_non_null(acc.evs);
    if (kg_store_event_list(f->st, &q, collect_ev, &acc, NULL, &err) != KG_OK)
        fail_msg("listing events should succeed: %s", err.msg);
    assert_true(acc.n <= 16);
    out[0] = '\0';
    for (size_t i = acc.n; i-- > 0;) {
        size_t len = strlen(out);

        snprintf(out + len, cap - len, "%s%s key=%s user=%s", len > 0 ? "\n" : "", acc.evs[i].data,
                 acc.evs[i].key_id, acc.evs[i].user_id[0] != '\0' ? "yes" : "no");
    }
    free(acc.evs);
    return acc.n;
}

static void
flush_at(struct kg_fx_cache *f, int64_t now)
{
    struct kg_err err = {{0}};

    if (kg_keycache_flush_at(f->kc, f->st, now, NULL, &err) != KG_OK)
        fail_msg("flush should succeed: %s", err.msg);
}

/* One allowed request counted on id (no credit charged). */
static void
count_request(struct kg_fx_cache *f, const char *id)
{
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent = find(f, id, &snap);

    kg_keycache_count(ent, KG_USAGE_REQUEST);
    kg_keycache_release(snap);
}

/* Charges units to id through the current snapshot. */
static void
charge(struct kg_fx_cache *f, const char *id, int64_t units)
{
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent = find(f, id, &snap);

    kg_keycache_charge(kg_keycache_stat(ent), units);
    kg_keycache_release(snap);
}

/* A restart: a new cache over the same store. */
static void
restart(struct kg_fx_cache *f, int64_t now)
{
    struct kg_err err = {{0}};

    kg_keycache_free(f->kc);
    f->kc = NULL;
    assert_int_equal(kg_keycache_new(f->lim, &f->kc), KG_OK);
    if (kg_keycache_reload(f->kc, f->st, now, &err) != KG_OK)
        fail_msg("reload should succeed: %s", err.msg);
}

static void
test_key_credits_alert_at_80_and_100_once_per_period_across_a_restart(void **state)
{
    struct kg_fx_cache *f = *state;
    int64_t day = kg_quota_period_start(KG_QUOTA_DAY, kg_time_now());
    int64_t t = day + 600;
    char text[8192], want[1024], stamp[KG_RFC3339_MAX];

    insert_key(f, "key_q", 10, "day");
    reload(f);
    charge(f, "key_q", 7);
    flush_at(f, t);
    assert_int_equal(alerts(f, text, sizeof(text)), 0); /* 70 %: nothing */
    charge(f, "key_q", 1);
    flush_at(f, t + 1);
    assert_int_equal(alerts(f, text, sizeof(text)), 1); /* 80 % */
    charge(f, "key_q", 1);
    flush_at(f, t + 2);
    assert_int_equal(alerts(f, text, sizeof(text)), 1); /* 90 %: 80 was sent */
    charge(f, "key_q", 1);
    flush_at(f, t + 3);
    assert_int_equal(alerts(f, text, sizeof(text)), 2); /* 100 % */
    kg_time_format(day, stamp);
    snprintf(want, sizeof(want),
             "{\"subject\":\"key\",\"threshold\":80,\"used\":8,\"limit\":10,\"period\":\"day\","
             "\"period_start\":\"%s\"} key=key_q user=yes\n"
             "{\"subject\":\"key\",\"threshold\":100,\"used\":10,\"limit\":10,\"period\":\"day\","
             "\"period_start\":\"%s\"} key=key_q user=yes",
             stamp, stamp);
    assert_string_equal(text, want);
    /* Over the limit again (a charge past it) in this process: nothing. */
    charge(f, "key_q", 1);
    flush_at(f, t + 4);
    assert_int_equal(alerts(f, text, sizeof(text)), 2);
    /* A restart in the same period: the store remembers both. */
    restart(f, t + 5);
    charge(f, "key_q", 1);
    flush_at(f, t + 6);
    assert_int_equal(alerts(f, text, sizeof(text)), 2);
    /* The next day (the refill) allows them again, from its own count. */
    charge(f, "key_q", 8);
    flush_at(f, day + 86400 + 5);
    assert_int_equal(alerts(f, text, sizeof(text)), 3);
    kg_time_format(day + 86400, stamp);
    snprintf(want, sizeof(want),
             "{\"subject\":\"key\",\"threshold\":80,\"used\":8,\"limit\":10,\"period\":\"day\","
             "\"period_start\":\"%s\"} key=key_q user=yes",
             stamp);
    assert_non_null(strstr(text, want));
}

static void
test_unlimited_credits_never_alert_and_a_jump_sends_80_then_100(void **state)
{
    struct kg_fx_cache *f = *state;
    int64_t t = kg_time_now();
    char text[8192];

    insert_key(f, "key_u", -1, "");
    insert_key(f, "key_j", 4, "");
    reload(f);
    charge(f, "key_u", 1000000);
    charge(f, "key_j", 5);
    flush_at(f, t);
    assert_int_equal(alerts(f, text, sizeof(text)), 2);
    assert_string_equal(
        text, "{\"subject\":\"key\",\"threshold\":80,\"used\":5,\"limit\":4,\"period\":\"never\","
              "\"period_start\":null} key=key_j user=yes\n"
              "{\"subject\":\"key\",\"threshold\":100,\"used\":5,\"limit\":4,\"period\":\"never\","
              "\"period_start\":null} key=key_j user=yes");
    /* No period: never again, even after a restart a day later. */
    restart(f, t + 86400);
    charge(f, "key_j", 1);
    flush_at(f, t + 86400);
    assert_int_equal(alerts(f, text, sizeof(text)), 2);
}

static void
test_user_credits_alert_once_per_period_naming_the_user(void **state)
{
    struct kg_fx_cache *f = *state;
    int64_t day = kg_quota_period_start(KG_QUOTA_DAY, kg_time_now());
    char text[8192], want[1024], stamp[KG_RFC3339_MAX];

    insert_shared_key(f, "key_1", -1);
    insert_shared_key(f, "key_2", -1);
    raw_exec(f->path, "UPDATE users SET quota_limit = 10, quota_period = 'day'"
                      " WHERE tenant = 'shared'");
    reload(f);
    charge(f, "key_1", 4);
    charge(f, "key_2", 4);
    flush_at(f, day + 60);
    assert_int_equal(alerts(f, text, sizeof(text)), 1);
    kg_time_format(day, stamp);
    snprintf(want, sizeof(want),
             "{\"subject\":\"user\",\"threshold\":80,\"used\":8,\"limit\":10,\"period\":\"day\","
             "\"period_start\":\"%s\"} key= user=yes",
             stamp);
    assert_string_equal(text, want);
    restart(f, day + 61);
    charge(f, "key_1", 1);
    flush_at(f, day + 62);
    assert_int_equal(alerts(f, text, sizeof(text)), 1); /* 90 %, 80 sent before the restart */
    charge(f, "key_2", 1);
    flush_at(f, day + 63);
    assert_int_equal(alerts(f, text, sizeof(text)), 2);
    assert_non_null(strstr(text, "\"subject\":\"user\",\"threshold\":100,\"used\":10"));
    charge(f, "key_2", 10);
    flush_at(f, day + 86400 + 1);
    assert_int_equal(alerts(f, text, sizeof(text)), 4); /* the next day: 80 and 100 again */
}

static void
test_the_tier_quota_alerts_once_per_period(void **state)
{
    struct kg_fx_cache *f = *state;
    int64_t day = kg_quota_period_start(KG_QUOTA_DAY, kg_time_now());
    const struct kg_keysnap *snap;
    const struct kg_keyent *k;
    struct kg_config *cfg = NULL;
    const struct kg_tier *tier;
    char text[8192];

    if (kg_fx_load_config("tier gold rate 100/s quota 5/day\n", &cfg) != 0)
        fail_msg("the tier should load");
    tier = kg_config_tier(cfg, "gold");
    assert_non_null(tier);
    insert_shared_key(f, "key_1", -1);
    reload(f);
    k = find(f, "key_1", &snap);
    assert_true(kg_keycache_spend_allow(k, tier, 4, day + 10));
    kg_keycache_charge(kg_keycache_stat(k), 4);
    kg_keycache_release(snap);
    flush_at(f, day + 10);
    assert_int_equal(alerts(f, text, sizeof(text)), 1);
    assert_non_null(strstr(text, "{\"subject\":\"tier\",\"threshold\":80,\"used\":4,\"limit\":5,"
                                 "\"period\":\"day\""));
    restart(f, day + 11);
    k = find(f, "key_1", &snap);
    assert_true(kg_keycache_spend_allow(k, tier, 1, day + 11));
    kg_keycache_charge(kg_keycache_stat(k), 1);
    flush_at(f, day + 11);
    assert_int_equal(alerts(f, text, sizeof(text)), 2);
    assert_non_null(
        strstr(text, "{\"subject\":\"tier\",\"threshold\":100,\"used\":5,\"limit\":5,"));
    /* Still the same day after another restart: nothing more. */
    kg_keycache_release(snap);
    restart(f, day + 12);
    k = find(f, "key_1", &snap);
    assert_true(kg_keycache_spend_allow(k, tier, 0, day + 12));
    kg_keycache_charge(kg_keycache_stat(k), 1);
    flush_at(f, day + 12);
    assert_int_equal(alerts(f, text, sizeof(text)), 2);
    /* The next day: 80 again. */
    assert_true(kg_keycache_spend_allow(k, tier, 4, day + 86400 + 1));
    kg_keycache_charge(kg_keycache_stat(k), 4);
    kg_keycache_release(snap);
    flush_at(f, day + 86400 + 1);
    assert_int_equal(alerts(f, text, sizeof(text)), 3);
    kg_config_free(cfg);
}

/* Two instances on one store (two caches; issue 15): each flush brings
 * back what every instance spent, so the second learns the first's
 * charges at its own next flush and refuses what would go past the limit,
 * instead of spending the whole limit again; a user's credits likewise. */
static void
test_a_flush_learns_what_every_instance_spent(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_keycache *other = NULL;
    struct kg_err err = {{0}};
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    unsigned char digest[KG_DIGEST_BYTES];
    int64_t now = kg_time_now();

    insert_key(f, "key_a", 100, "");
    insert_shared_key(f, "key_u", -1);
    raw_exec(f->path, "UPDATE users SET quota_limit = 50 WHERE tenant = 'shared'");
    reload(f);
    assert_int_equal(kg_keycache_new(f->lim, &other), KG_OK);
    assert_int_equal(kg_keycache_reload(other, f->st, now, &err), KG_OK);
    /* The first instance spends 60 and 30 and flushes. */
    charge(f, "key_a", 60);
    charge(f, "key_u", 30);
    flush_ok(f);
    /* The second spends 1 of each: after its flush its meters hold 61
     * and 31, what the store has. */
    snap = kg_keycache_acquire(other);
    crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)"key_a", 5, NULL, 0);
    ent = kg_keysnap_find(snap, digest);
    assert_non_null(ent);
    kg_keycache_charge(kg_keycache_stat(ent), 1);
    assert_true(kg_keycache_credits_allow(ent, 99, now)); /* not learnt yet */
    crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)"key_u", 5, NULL, 0);
    ent = kg_keysnap_find(snap, digest);
    assert_non_null(ent);
    kg_keycache_charge(kg_keycache_stat(ent), 1);
    kg_keycache_release(snap);
    assert_int_equal(kg_keycache_flush(other, f->st, NULL, &err), KG_OK);
    snap = kg_keycache_acquire(other);
    crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)"key_a", 5, NULL, 0);
    ent = kg_keysnap_find(snap, digest);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 61);
    assert_true(kg_keycache_credits_allow(ent, 39, now));
    assert_false(kg_keycache_credits_allow(ent, 40, now));
    crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)"key_u", 5, NULL, 0);
    ent = kg_keysnap_find(snap, digest);
    assert_int_equal(kg_quota_used(&ent->owner->ustat->credits, KG_QUOTA_NONE, now), 31);
    assert_true(kg_keycache_spend_allow(ent, NULL, 19, now));
    assert_false(kg_keycache_spend_allow(ent, NULL, 20, now));
    kg_keycache_release(snap);
    /* The first learns the second's charge at its next flush, even one
     * in which it charged nothing more of the key: a key with a limit
     * that it served asks for its total. */
    count_request(f, "key_a");
    flush_ok(f);
    ent = find(f, "key_a", &snap);
    assert_int_equal(kg_quota_used(&kg_keycache_stat(ent)->credits, ent->quota_period, now), 61);
    kg_keycache_release(snap);
    assert_int_equal(stored_used(f, "key_a"), 61);
    kg_keycache_free(other);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_first_matching_cost_rule_wins_and_no_rule_costs_one),
        cmocka_unit_test(test_bad_cost_lines_are_refused),
        cmocka_unit_test_setup_teardown(test_charges_are_checked_then_flushed_once,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_failed_flush_charges_nothing_and_the_next_charges_once, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_a_new_refill_period_starts_the_credits_again,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_a_count_without_a_start_under_a_refill_is_history,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_retry_after_of_a_quota_refusal_is_the_next_refill_or_none, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_credits_used_up_before_a_refill_was_set_come_back_at_the_next_period,
            kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_a_changed_refill_keeps_what_the_current_period_used,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_user_who_spent_while_unlimited_gets_its_credits_at_the_next_period,
            kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_request_that_costs_nothing_passes_every_limit_even_past_it, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_users_credits_are_shared_by_its_keys_and_the_stricter_limit_decides,
            kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_the_tier_quota_counts_per_user_and_a_refusal_charges_nothing, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_a_tier_without_quota_counts_nothing, kg_fx_cache_setup,
                                        kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_failed_flush_charges_no_user_and_the_next_charges_once, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_key_credits_alert_at_80_and_100_once_per_period_across_a_restart,
            kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_unlimited_credits_never_alert_and_a_jump_sends_80_then_100, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_user_credits_alert_once_per_period_naming_the_user,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_the_tier_quota_alerts_once_per_period,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_a_flush_learns_what_every_instance_spent,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
