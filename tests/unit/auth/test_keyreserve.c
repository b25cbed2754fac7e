/* tests/unit/auth/test_keyreserve.c - credits_mode strict
 * (src/auth/keyreserve.c) over a real SQLite store in a fresh temporary
 * directory: claims come only from the blocks reserved, a claim not
 * charged goes back, a block is refilled ahead of need, a new refill
 * period drops the old block (and a claim of it cannot come back), an
 * idle block and every block at shutdown are handed back to the store,
 * and two caches (two instances) on one store together never pass the
 * limit. No clock of its own: times are passed in. */
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

#include "keygate/keycache.h"
#include "keygate/keyreserve.h"
#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "unit/fixture.h"

static int wakes;

static void
count_wake(void *arg)
{
    (void)arg;
    wakes++;
}

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

static const struct kg_keyent *
find(struct kg_keycache *kc, const char *id, const struct kg_keysnap **snap)
{
    unsigned char digest[KG_DIGEST_BYTES];
    const struct kg_keyent *ent;

    *snap = kg_keycache_acquire(kc);
    crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL, 0);
    ent = kg_keysnap_find(*snap, digest);
    if (ent == NULL)
        fail_msg("%s should be in the snapshot", id);
    return ent;
}

static void
pass(struct kg_keycache *kc, struct kg_store *st, int64_t now, int64_t mono_ms)
{
    struct kg_err err = {{0}};

    if (kg_keyreserve_pass(kc, st, now, mono_ms, &err) != KG_OK)
        fail_msg("the reserve pass should succeed: %s", err.msg);
}

static int64_t
raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int64_t v = -12345;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return v;
}

/* Claims one credit at a time until refused; returns how many passed,
 * charging each (as a 2xx would). */
static int
claim_all(struct kg_keycache *kc, const char *id, int64_t now)
{
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent = find(kc, id, &snap);
    struct kg_credit_claim c;
    int n = 0;

    while (kg_keyreserve_claim(kc, ent, NULL, 1, now, &c)) {
        kg_keycache_charge(c.stat, 1);
        kg_keyreserve_spent(&c);
        n++;
    }
    kg_keycache_release(snap);
    return n;
}

static void
test_claims_come_only_from_reserved_blocks(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    struct kg_credit_claim c, c2;
    int64_t now = kg_time_now();

    insert_key(f, "key_s", 160, ""); /* blocks of 10 */
    assert_int_equal(kg_keycache_reload(f->kc, f->st, now, &err), KG_OK);
    wakes = 0;
    kg_keyreserve_enable(f->kc, count_wake, NULL);
    assert_int_equal(kg_keyreserve_block(160), 10);
    ent = find(f->kc, "key_s", &snap);
    /* Nothing held yet: refused like an exhausted key, a refill asked. */
    assert_false(kg_keyreserve_claim(f->kc, ent, NULL, 1, now, &c));
    assert_null(c.stat);
    assert_int_equal(wakes, 1);
    assert_false(kg_keyreserve_claim(f->kc, ent, NULL, 1, now, &c));
    assert_int_equal(wakes, 1); /* queued once */
    kg_keycache_release(snap);
    pass(f->kc, f->st, now, 1000);
    assert_int_equal(raw_int(f->path, "SELECT granted FROM credit_reservations"), 10);
    ent = find(f->kc, "key_s", &snap);
    assert_true(kg_keyreserve_claim(f->kc, ent, NULL, 3, now, &c));
    assert_int_equal(c.units, 3);
    /* Not charged (a 502): back in the block. */
    kg_keyreserve_give_back(&c);
    kg_keyreserve_give_back(&c); /* idempotent */
    assert_int_equal(KG_HOLD_AMOUNT(atomic_load(&kg_keycache_stat(ent)->hold)), 10);
    /* More than the block holds is refused even though the key has 160. */
    assert_false(kg_keyreserve_claim(f->kc, ent, NULL, 11, now, &c2));
    /* Half spent: a refill is asked ahead of need, and tops it up. */
    assert_true(kg_keyreserve_claim(f->kc, ent, NULL, 5, now, &c));
    kg_keycache_charge(c.stat, 5);
    kg_keyreserve_spent(&c);
    kg_keycache_release(snap);
    pass(f->kc, f->st, now, 1100);
    assert_int_equal(raw_int(f->path, "SELECT granted FROM credit_reservations"), 20);
    /* Every credit of the key, and not one more: 160 - 5 spent. */
    for (int i = 0; i < 40; i++) {
        claim_all(f->kc, "key_s", now);
        pass(f->kc, f->st, now, 1200 + i);
    }
    assert_int_equal(
        kg_quota_used(&kg_keycache_stat(find(f->kc, "key_s", &snap))->credits, KG_QUOTA_NONE, now),
        160);
    kg_keycache_release(snap);
    assert_int_equal(raw_int(f->path, "SELECT granted FROM credit_reservations"), 160);
}

/* A new refill period drops the block of the last one: a claim of the old
 * block given back after it does not come back, and the refill asks for
 * the new period. */
static void
test_a_new_period_drops_the_block_and_old_claims(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    struct kg_credit_claim c, tmp;
    int64_t now = kg_time_now();
    int64_t day = kg_quota_period_start(KG_QUOTA_DAY, now);

    insert_key(f, "key_d", 160, "day");
    assert_int_equal(kg_keycache_reload(f->kc, f->st, now, &err), KG_OK);
    kg_keyreserve_enable(f->kc, NULL, NULL);
    ent = find(f->kc, "key_d", &snap);
    assert_false(kg_keyreserve_claim(f->kc, ent, NULL, 1, now, &c));
    kg_keycache_release(snap);
    pass(f->kc, f->st, now, 1000);
    ent = find(f->kc, "key_d", &snap);
    assert_true(kg_keyreserve_claim(f->kc, ent, NULL, 4, now, &c)); /* in flight over midnight */
    kg_keycache_release(snap);
    pass(f->kc, f->st, day + 86400 + 5, 2000);
    ent = find(f->kc, "key_d", &snap);
    assert_int_equal(KG_HOLD_AMOUNT(atomic_load(&kg_keycache_stat(ent)->hold)), 0);
    kg_keyreserve_give_back(&c);
    assert_int_equal(KG_HOLD_AMOUNT(atomic_load(&kg_keycache_stat(ent)->hold)), 0);
    assert_false(kg_keyreserve_claim(f->kc, ent, NULL, 1, day + 86400 + 5, &tmp));
    kg_keycache_release(snap);
    pass(f->kc, f->st, day + 86400 + 5, 2100);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM credit_reservations"
                                      " WHERE period_start < (SELECT max(period_start)"
                                      " FROM credit_reservations)"),
                     0);
    assert_int_equal(claim_all(f->kc, "key_d", day + 86400 + 5), 10);
}

/* Shutdown hands every block back; an idle block goes back by itself once
 * its charges are flushed. */
static void
test_blocks_go_back_when_idle_and_at_shutdown(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    struct kg_credit_claim c;
    int64_t now = kg_time_now();

    insert_key(f, "key_i", 160, "");
    insert_key(f, "key_j", 160, "");
    assert_int_equal(kg_keycache_reload(f->kc, f->st, now, &err), KG_OK);
    kg_keyreserve_enable(f->kc, NULL, NULL);
    for (int k = 0; k < 2; k++) {
        ent = find(f->kc, k == 0 ? "key_i" : "key_j", &snap);
        assert_false(kg_keyreserve_claim(f->kc, ent, NULL, 1, now, &c));
        kg_keycache_release(snap);
    }
    pass(f->kc, f->st, now, 1000);
    ent = find(f->kc, "key_i", &snap);
    kg_keycache_touch(ent, now);
    assert_true(kg_keyreserve_claim(f->kc, ent, NULL, 2, now, &c));
    kg_keycache_charge(c.stat, 2);
    kg_keyreserve_spent(&c);
    kg_keycache_release(snap);
    ent = find(f->kc, "key_j", &snap);
    kg_keycache_touch(ent, now + 15); /* still in use */
    kg_keycache_release(snap);
    /* 20 s later, key_i idle but its charge not flushed: kept. */
    pass(f->kc, f->st, now + 20, 2000);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM credit_reservations"), 2);
    assert_int_equal(kg_keycache_flush_at(f->kc, f->st, now + 20, NULL, &err), KG_OK);
    assert_int_equal(raw_int(f->path, "SELECT spent FROM credit_reservations"
                                      " WHERE key_id = 'key_i'"),
                     2);
    pass(f->kc, f->st, now + 21, 3000);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM credit_reservations"), 1);
    assert_int_equal(raw_int(f->path, "SELECT quota_used FROM keys WHERE id = 'key_i'"), 2);
    /* Shutdown: the rest. */
    assert_int_equal(kg_keyreserve_release(f->kc, f->st, &err), KG_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM credit_reservations"), 0);
    ent = find(f->kc, "key_j", &snap);
    assert_false(kg_keyreserve_claim(f->kc, ent, NULL, 1, now + 21, &c));
    kg_keycache_release(snap);
}

/* Two instances (two caches on one store) spend together exactly the
 * limit, never more, their blocks taking turns. */
static void
test_two_instances_together_never_pass_the_limit(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_keycache *other = NULL;
    struct kg_store *st2 = NULL;
    struct kg_err err = {{0}};
    int64_t now = kg_time_now();
    int total = 0;

    insert_key(f, "key_t", 100, "");
    assert_int_equal(kg_keycache_reload(f->kc, f->st, now, &err), KG_OK);
    /* A second handle: another instance id, as another process has. */
    assert_int_equal(kg_store_open(f->path, &st2, &err), KG_OK);
    assert_string_not_equal(kg_store_instance(f->st), kg_store_instance(st2));
    assert_int_equal(kg_keycache_new(f->lim, &other), KG_OK);
    assert_int_equal(kg_keycache_reload(other, st2, now, &err), KG_OK);
    kg_keyreserve_enable(f->kc, NULL, NULL);
    kg_keyreserve_enable(other, NULL, NULL);
    for (int i = 0; i < 60; i++) {
        total += claim_all(f->kc, "key_t", now);
        total += claim_all(other, "key_t", now);
        pass(f->kc, f->st, now, 1000 + i);
        pass(other, st2, now, 1000 + i);
        if (i % 5 == 0) {
            assert_int_equal(kg_keycache_flush_at(f->kc, f->st, now, NULL, &err), KG_OK);
            assert_int_equal(kg_keycache_flush_at(other, st2, now, NULL, &err), KG_OK);
        }
    }
    assert_int_equal(total, 100);
    assert_int_equal(kg_keycache_flush_at(f->kc, f->st, now, NULL, &err), KG_OK);
    assert_int_equal(kg_keycache_flush_at(other, st2, now, NULL, &err), KG_OK);
    assert_int_equal(raw_int(f->path, "SELECT quota_used FROM keys WHERE id = 'key_t'"), 100);
    kg_keycache_free(other);
    kg_store_close(st2);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, kg_fx_cache_setup, kg_fx_cache_teardown)
    const struct CMUnitTest tests[] = {
        T(test_claims_come_only_from_reserved_blocks),
        T(test_a_new_period_drops_the_block_and_old_claims),
        T(test_blocks_go_back_when_idle_and_at_shutdown),
        T(test_two_instances_together_never_pass_the_limit),
    };
#undef T

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
