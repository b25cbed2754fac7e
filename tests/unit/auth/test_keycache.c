/* tests/unit/auth/test_keycache.c - src/auth/keycache.c through
 * keygate/keycache.h, loaded from a real store in a fresh temporary
 * directory per test. Records are built by hand; the cache never sees a
 * key, so each record's digest is just a hash of its id. Snapshots that
 * outlive a reload are checked by reading them afterwards (ASan would catch
 * a use after free) and by releasing them (LeakSanitizer catches one that is
 * never freed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "keygate/keycache.h"
#include "keygate/limiter.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW 1800000000 /* 2027-01-15, a fixed clock */

static int
group_setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

/* The digest a record of this id gets: any 32 distinct bytes will do. */
static void
digest_for(const char *id, unsigned char out[KG_DIGEST_BYTES])
{
    crypto_generichash(out, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL, 0);
}

static void
make_rec(struct kg_key_rec *rec, const char *id, const char *scopes)
{
    memset(rec, 0, sizeof(*rec));
    snprintf(rec->id, sizeof(rec->id), "%s", id);
    snprintf(rec->name, sizeof(rec->name), "name of %s", id);
    snprintf(rec->prefix, sizeof(rec->prefix), "kg_AbCd");
    snprintf(rec->last4, sizeof(rec->last4), "wxyz");
    digest_for(id, rec->digest);
    snprintf(rec->scopes, sizeof(rec->scopes), "%s", scopes);
    snprintf(rec->tenant, sizeof(rec->tenant), "tenant-%s", id);
    rec->created_at = NOW - 1000;
    rec->quota_limit = -1;
    snprintf(rec->metadata, sizeof(rec->metadata), "{}");
}

static void
insert(struct kg_fx_cache *f, const struct kg_key_rec *rec)
{
    struct kg_err err = {{0}};

    if (kg_store_key_insert(f->st, rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", rec->id, err.msg);
}

static void
insert_simple(struct kg_fx_cache *f, const char *id, const char *scopes)
{
    struct kg_key_rec rec;

    make_rec(&rec, id, scopes);
    insert(f, &rec);
}

static void
reload(struct kg_fx_cache *f, int64_t now)
{
    struct kg_err err = {{0}};

    if (kg_keycache_reload(f->kc, f->st, now, &err) != KG_OK)
        fail_msg("reload should succeed: %s", err.msg);
}

static size_t
flush(struct kg_fx_cache *f)
{
    struct kg_err err = {{0}};
    size_t n = 12345;

    if (kg_keycache_flush(f->kc, f->st, &n, &err) != KG_OK)
        fail_msg("flush should succeed: %s", err.msg);
    return n;
}

static const struct kg_keyent *
find(const struct kg_keysnap *snap, const char *id)
{
    unsigned char d[KG_DIGEST_BYTES];

    digest_for(id, d);
    return kg_keysnap_find(snap, d);
}

static int64_t
stored_last_used(struct kg_fx_cache *f, const char *id)
{
    struct kg_err err = {{0}};
    struct kg_key_rec rec;

    if (kg_store_key_get(f->st, id, &rec, &err) != KG_OK)
        fail_msg("reading %s back should succeed: %s", id, err.msg);
    return rec.last_used_at;
}

static void
test_a_new_cache_holds_no_keys(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap = kg_keycache_acquire(f->kc);

    assert_non_null(snap);
    assert_int_equal(kg_keysnap_count(snap), 0);
    assert_null(find(snap, "key_a"));
    kg_keycache_release(snap);
    assert_int_equal(flush(f), 0);
}

static void
test_reload_finds_keys_by_digest(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    struct kg_key_rec rec;

    insert_simple(f, "key_a", "read:a");
    make_rec(&rec, "key_b", "");
    rec.expires_at = NOW + 3600;
    insert(f, &rec);
    insert_simple(f, "key_c", "read:a,write:b");
    reload(f, NOW);

    snap = kg_keycache_acquire(f->kc);
    assert_int_equal(kg_keysnap_count(snap), 3);
    ent = find(snap, "key_b");
    assert_non_null(ent);
    assert_string_equal(ent->id, "key_b");
    assert_string_equal(ent->tenant, "tenant-key_b");
    assert_string_equal(kg_keyent_scopes_str(ent), "");
    assert_int_equal(ent->expires_at, NOW + 3600);
    assert_int_equal(ent->revoked_at, 0);
    assert_memory_equal(ent->digest, rec.digest, KG_DIGEST_BYTES);
    /* No usage record until the key's first use: a key never used costs
     * its entry only. */
    assert_null(atomic_load(&ent->stat));
    assert_non_null(kg_keycache_stat(ent));
    assert_ptr_equal(kg_keycache_stat(ent), atomic_load(&ent->stat));
    assert_string_equal(find(snap, "key_a")->id, "key_a");
    assert_string_equal(kg_keyent_scopes_str(find(snap, "key_c")), "read:a,write:b");
    assert_null(find(snap, "key_nope"));
    kg_keycache_release(snap);
}

/* The lookup compares every byte of the digest: one that differs from a
 * stored key's in any single byte (past the first 8, it even probes the
 * same slot) finds nothing. */
static void
test_a_digest_differing_in_any_byte_finds_no_key(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    unsigned char d[KG_DIGEST_BYTES];

    insert_simple(f, "key_a", "read:a");
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    digest_for("key_a", d);
    assert_non_null(kg_keysnap_find(snap, d));
    for (size_t i = 0; i < KG_DIGEST_BYTES; i++) {
        d[i] ^= 0x01;
        if (kg_keysnap_find(snap, d) != NULL) {
            kg_keycache_release(snap);
            fail_msg("a digest differing in byte %zu found key_a", i);
        }
        d[i] ^= 0x01;
    }
    kg_keycache_release(snap);
}

static void
test_revoked_keys_are_absent_and_scheduled_revocations_present(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    struct kg_key_rec rec;

    make_rec(&rec, "key_long_gone", "");
    rec.revoked_at = NOW - 100;
    insert(f, &rec);
    make_rec(&rec, "key_revoked_now", "");
    rec.revoked_at = NOW; /* revoked_at == now: already revoked */
    insert(f, &rec);
    make_rec(&rec, "key_in_grace", "");
    rec.revoked_at = NOW + 1;
    insert(f, &rec);
    make_rec(&rec, "key_expired", "");
    rec.expires_at = NOW - 1; /* expiry is decide.c's business: still loaded */
    insert(f, &rec);
    reload(f, NOW);

    snap = kg_keycache_acquire(f->kc);
    assert_int_equal(kg_keysnap_count(snap), 2);
    assert_null(find(snap, "key_long_gone"));
    assert_null(find(snap, "key_revoked_now"));
    assert_non_null(find(snap, "key_in_grace"));
    assert_int_equal(find(snap, "key_in_grace")->revoked_at, NOW + 1);
    assert_non_null(find(snap, "key_expired"));
    kg_keycache_release(snap);

    /* Once its grace is over, the next reload leaves it out. */
    reload(f, NOW + 1);
    snap = kg_keycache_acquire(f->kc);
    assert_int_equal(kg_keysnap_count(snap), 1);
    assert_null(find(snap, "key_in_grace"));
    kg_keycache_release(snap);
}

static void
test_a_revocation_in_the_store_is_seen_on_the_next_reload(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    struct kg_err err = {{0}};

    insert_simple(f, "key_a", "");
    reload(f, NOW);
    assert_int_equal(kg_store_key_revoke(f->st, "key_a", NOW + 5, &err), KG_OK);
    reload(f, NOW + 5);
    snap = kg_keycache_acquire(f->kc);
    assert_null(find(snap, "key_a"));
    kg_keycache_release(snap);
}

static void
test_an_entry_found_before_a_reload_stays_valid_after_it(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *old, *fresh;
    const struct kg_keyent *ent;
    struct kg_err err = {{0}};

    insert_simple(f, "key_old", "read:a,write:b");
    reload(f, NOW);
    old = kg_keycache_acquire(f->kc);
    ent = find(old, "key_old");
    assert_non_null(ent);

    assert_int_equal(kg_store_key_revoke(f->st, "key_old", NOW + 1, &err), KG_OK);
    insert_simple(f, "key_new", "");
    reload(f, NOW + 1);

    /* The entry found before still reads as it did: it is freed only when
     * every guard that could have seen it is released. */
    assert_string_equal(ent->id, "key_old");
    assert_string_equal(ent->tenant, "tenant-key_old");
    assert_int_equal(ent->nscopes, 2);
    assert_string_equal(ent->scopes[0], "read:a");
    assert_string_equal(ent->scopes[1], "write:b");
    kg_keycache_touch(ent, NOW + 1); /* its stat record outlives the entry too */
    /* A lookup made now sees the cache as it is now, through any guard. */
    assert_null(find(old, "key_old"));
    assert_non_null(find(old, "key_new"));

    fresh = kg_keycache_acquire(f->kc);
    assert_true(kg_keysnap_built_ms(fresh) >= kg_keysnap_built_ms(old));
    assert_int_equal(kg_keysnap_count(fresh), 1);
    assert_null(find(fresh, "key_old"));
    assert_non_null(find(fresh, "key_new"));

    /* Released last, the old entry is freed now (LeakSanitizer checks). */
    kg_keycache_release(old);
    assert_non_null(find(fresh, "key_new"));
    kg_keycache_release(fresh);
    assert_int_equal(flush(f), 1);
    assert_int_equal(stored_last_used(f, "key_old"), NOW + 1);
}

static void
test_several_reloads_with_a_held_guard_keep_its_entry_and_free_the_rest(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *held;
    const struct kg_keyent *ent;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char id[32];

    insert_simple(f, "key_0", "");
    reload(f, NOW);
    held = kg_keycache_acquire(f->kc);
    ent = find(held, "key_0");
    assert_non_null(ent);
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof(id), "key_%d", i);
        insert_simple(f, id, "");
        /* key_0 is replaced each time (its scopes change): every old copy
         * waits for held. */
        make_rec(&rec, "key_0", "");
        snprintf(rec.scopes, sizeof(rec.scopes), "s:%d", i);
        assert_int_equal(kg_store_key_update(f->st, &rec, NULL, &err), KG_OK);
        reload(f, NOW);
    }
    assert_string_equal(ent->id, "key_0");
    assert_string_equal(kg_keyent_scopes_str(ent), "");
    assert_int_equal(kg_keysnap_count(held), 6);
    assert_string_equal(kg_keyent_scopes_str(find(held, "key_0")), "s:5");
    kg_keycache_release(held);
}

static void
test_touch_and_flush_write_last_used_at_exactly(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;

    insert_simple(f, "key_a", "");
    insert_simple(f, "key_b", "");
    insert_simple(f, "key_c", "");
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    kg_keycache_touch(find(snap, "key_a"), NOW + 5);
    kg_keycache_touch(find(snap, "key_b"), NOW + 7);
    kg_keycache_touch(find(snap, "key_b"), NOW + 7);
    kg_keycache_release(snap);

    assert_int_equal(stored_last_used(f, "key_a"), 0); /* nothing written before the flush */
    assert_int_equal(flush(f), 2);
    assert_int_equal(stored_last_used(f, "key_a"), NOW + 5);
    assert_int_equal(stored_last_used(f, "key_b"), NOW + 7);
    assert_int_equal(stored_last_used(f, "key_c"), 0);

    /* Nothing new: nothing written. */
    assert_int_equal(flush(f), 0);
    assert_int_equal(stored_last_used(f, "key_a"), NOW + 5);
    assert_int_equal(stored_last_used(f, "key_b"), NOW + 7);
}

static void
test_touch_keeps_the_latest_time(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;

    insert_simple(f, "key_a", "");
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    ent = find(snap, "key_a");
    kg_keycache_touch(ent, NOW + 10);
    kg_keycache_touch(ent, NOW + 3); /* a request that started earlier finishes later */
    assert_int_equal(atomic_load(&ent->stat->last_used), NOW + 10);
    assert_int_equal(flush(f), 1);
    assert_int_equal(stored_last_used(f, "key_a"), NOW + 10);

    /* The same second again is not news; a later one is. */
    kg_keycache_touch(ent, NOW + 10);
    assert_int_equal(flush(f), 0);
    kg_keycache_touch(ent, NOW + 20);
    assert_int_equal(flush(f), 1);
    assert_int_equal(stored_last_used(f, "key_a"), NOW + 20);
    kg_keycache_release(snap);
}

static void
test_usage_stats_survive_a_reload(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    struct kg_keystat *stat;

    insert_simple(f, "key_a", "");
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    ent = find(snap, "key_a");
    stat = kg_keycache_stat(ent);
    kg_keycache_touch(ent, NOW + 9);
    kg_keycache_release(snap);

    insert_simple(f, "key_b", "");
    reload(f, NOW + 10); /* the store still says never used: the touch is not flushed */
    snap = kg_keycache_acquire(f->kc);
    ent = find(snap, "key_a");
    assert_non_null(ent);
    assert_ptr_equal(ent->stat, stat);
    assert_int_equal(atomic_load(&ent->stat->last_used), NOW + 9);
    kg_keycache_release(snap);

    assert_int_equal(flush(f), 1);
    assert_int_equal(stored_last_used(f, "key_a"), NOW + 9);
    assert_int_equal(stored_last_used(f, "key_b"), 0);
}

static void
test_entries_carry_the_keys_own_rate_and_burst(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    struct kg_key_rec rec;

    make_rec(&rec, "key_r", "");
    snprintf(rec.rate, sizeof(rec.rate), "100/min");
    rec.rate_burst = 7;
    insert(f, &rec);
    make_rec(&rec, "key_nb", "");
    snprintf(rec.rate, sizeof(rec.rate), "5/s");
    insert(f, &rec);
    insert_simple(f, "key_none", "");
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    ent = find(snap, "key_r");
    assert_true(ent->has_rate);
    assert_int_equal(ent->rate->count, 100);
    assert_int_equal(ent->rate->period_s, 60);
    assert_int_equal(ent->rate->burst, 7);
    ent = find(snap, "key_nb");
    assert_true(ent->has_rate);
    assert_int_equal(ent->rate->burst, 5); /* no burst: the count */
    assert_false(find(snap, "key_none")->has_rate);
    kg_keycache_release(snap);
}

static void
test_rate_limit_state_survives_a_reload(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_limiter *lim = kg_keycache_limiter(f->kc);
    struct kg_gcra g;
    struct kg_limit_req rq = {.key_id = "key_a", .key_rate = &g};
    struct kg_limit_verdict v;

    assert_ptr_equal(lim, f->lim); /* the one it was handed */
    assert_int_equal(kg_gcra_init(&g, 1, 60, 1, NULL), KG_OK);
    insert_simple(f, "key_a", "");
    reload(f, NOW);
    kg_limiter_check(lim, &rq, 1000000, true, &v);
    assert_true(v.allowed);
    insert_simple(f, "key_b", "");
    reload(f, NOW + 1);
    /* The same buckets, by key id: the spent request is still spent. */
    assert_ptr_equal(kg_keycache_limiter(f->kc), lim);
    kg_limiter_check(lim, &rq, 2000000, true, &v);
    assert_false(v.allowed);
}

static void
test_last_used_from_the_store_is_not_written_back_and_moves_only_forward(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    struct kg_key_rec rec;

    make_rec(&rec, "key_a", "");
    rec.last_used_at = NOW - 50;
    insert(f, &rec);
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    /* Loaded, never used: no record, nothing to write. */
    assert_null(atomic_load(&find(snap, "key_a")->stat));
    kg_keycache_release(snap);
    assert_int_equal(flush(f), 0);
    assert_int_equal(stored_last_used(f, "key_a"), NOW - 50);
    /* A record starts from "never": a use earlier than the stored time
     * (another process's clock) is written but does not move it back. */
    snap = kg_keycache_acquire(f->kc);
    kg_keycache_touch(find(snap, "key_a"), NOW - 60);
    kg_keycache_release(snap);
    assert_int_equal(flush(f), 1);
    assert_int_equal(stored_last_used(f, "key_a"), NOW - 50);
    snap = kg_keycache_acquire(f->kc);
    kg_keycache_touch(find(snap, "key_a"), NOW + 5);
    kg_keycache_release(snap);
    assert_int_equal(flush(f), 1);
    assert_int_equal(stored_last_used(f, "key_a"), NOW + 5);
}

static void
test_scopes_are_split_on_commas(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;

    insert_simple(f, "key_three", "a,b,c");
    insert_simple(f, "key_none", "");
    insert_simple(f, "key_one", "read:items");
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);

    ent = find(snap, "key_three");
    assert_int_equal(ent->nscopes, 3);
    assert_string_equal(ent->scopes[0], "a");
    assert_string_equal(ent->scopes[1], "b");
    assert_string_equal(ent->scopes[2], "c");
    assert_null(ent->scopes[3]);
    assert_string_equal(kg_keyent_scopes_str(ent),
                        "a,b,c"); /* the split leaves the original intact */

    ent = find(snap, "key_none");
    assert_int_equal(ent->nscopes, 0);
    assert_non_null(ent->scopes);
    assert_null(ent->scopes[0]);

    ent = find(snap, "key_one");
    assert_int_equal(ent->nscopes, 1);
    assert_string_equal(ent->scopes[0], "read:items");
    assert_null(ent->scopes[1]);
    kg_keycache_release(snap);
}

static void
test_many_keys_are_all_found_and_flushed(void **state)
{
    enum { N = 300 };
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    char id[32];

    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "key_%04d", i);
        insert_simple(f, id, i % 2 == 0 ? "read:a" : "");
    }
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    assert_int_equal(kg_keysnap_count(snap), N);
    for (int i = 0; i < N; i++) {
        const struct kg_keyent *ent;

        snprintf(id, sizeof(id), "key_%04d", i);
        ent = find(snap, id);
        if (ent == NULL || strcmp(ent->id, id) != 0)
            fail_msg("%s should be found by its digest", id);
        kg_keycache_touch(ent, NOW + i + 1);
    }
    kg_keycache_release(snap);
    assert_int_equal(flush(f), N);
    for (int i = 0; i < N; i += 37) {
        snprintf(id, sizeof(id), "key_%04d", i);
        assert_int_equal(stored_last_used(f, id), NOW + i + 1);
    }
    /* A second reload reuses every stat record. */
    reload(f, NOW);
    assert_int_equal(flush(f), 0);
}

static void
test_flush_accepts_a_null_count(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    struct kg_err err = {{0}};

    insert_simple(f, "key_a", "");
    reload(f, NOW);
    snap = kg_keycache_acquire(f->kc);
    kg_keycache_touch(find(snap, "key_a"), NOW + 1);
    kg_keycache_release(snap);
    assert_int_equal(kg_keycache_flush(f->kc, f->st, NULL, &err), KG_OK);
    assert_int_equal(stored_last_used(f, "key_a"), NOW + 1);
}

static void
test_free_accepts_null(void **state)
{
    (void)state;
    kg_keycache_free(NULL);
    kg_keycache_release(NULL);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, kg_fx_cache_setup, kg_fx_cache_teardown)
    const struct CMUnitTest tests[] = {
        T(test_a_new_cache_holds_no_keys),
        T(test_reload_finds_keys_by_digest),
        T(test_a_digest_differing_in_any_byte_finds_no_key),
        T(test_revoked_keys_are_absent_and_scheduled_revocations_present),
        T(test_a_revocation_in_the_store_is_seen_on_the_next_reload),
        T(test_an_entry_found_before_a_reload_stays_valid_after_it),
        T(test_several_reloads_with_a_held_guard_keep_its_entry_and_free_the_rest),
        T(test_touch_and_flush_write_last_used_at_exactly),
        T(test_touch_keeps_the_latest_time),
        T(test_usage_stats_survive_a_reload),
        T(test_entries_carry_the_keys_own_rate_and_burst),
        T(test_rate_limit_state_survives_a_reload),
        T(test_last_used_from_the_store_is_not_written_back_and_moves_only_forward),
        T(test_scopes_are_split_on_commas),
        T(test_many_keys_are_all_found_and_flushed),
        T(test_flush_accepts_a_null_count),
        cmocka_unit_test(test_free_accepts_null),
    };
#undef T

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
