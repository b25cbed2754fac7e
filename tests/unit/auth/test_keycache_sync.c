/* tests/unit/auth/test_keycache_sync.c - kg_keycache_sync() in
 * src/auth/keycache.c with the change log of src/store/: every kind of
 * change to keys, users and tenants reaches a loaded cache as a delta
 * (no full load), the usage flush writes no change, and a log trimmed past
 * the cache's position makes it load everything again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "keygate/keycache.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW 1750000000

static void
insert(struct kg_fx_cache *f, const char *id, const char *tenant)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    kg_fx_key_rec(&rec, id, NOW - 1000);
    if (tenant != NULL)
        snprintf(rec.tenant, sizeof(rec.tenant), "%s", tenant);
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

static void
load(struct kg_fx_cache *f)
{
    struct kg_err err = {{0}};

    if (kg_keycache_reload(f->kc, f->st, NOW, &err) != KG_OK)
        fail_msg("the full load should succeed: %s", err.msg);
}

/* A sync that must be a delta: fails the test when it loaded everything. */
static void
sync_delta(struct kg_fx_cache *f, int64_t now)
{
    struct kg_err err = {{0}};
    bool full = true;

    if (kg_keycache_sync(f->kc, f->st, now, &full, &err) != KG_OK)
        fail_msg("sync should succeed: %s", err.msg);
    if (full)
        fail_msg("sync should apply the change log, not load everything");
}

/* The entry of key id as the cache has it now, copied out. */
static bool
cached(struct kg_fx_cache *f, const char *id, struct kg_keyent *copy)
{
    unsigned char d[KG_DIGEST_BYTES];
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;

    crypto_generichash(d, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL, 0);
    snap = kg_keycache_acquire(f->kc);
    ent = kg_keysnap_find(snap, d);
    if (ent != NULL && copy != NULL)
        *copy = *ent; /* the strings are only compared while the test holds nothing else */
    kg_keycache_release(snap);
    return ent != NULL;
}

static void
owner_of(struct kg_fx_cache *f, const char *key_id, struct kg_user_rec *u)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    assert_int_equal(kg_store_key_get(f->st, key_id, &rec, &err), KG_OK);
    assert_int_equal(kg_store_user_get(f->st, rec.user_id, u, &err), KG_OK);
}

static int64_t
head(struct kg_fx_cache *f)
{
    struct kg_err err = {{0}};
    int64_t last = -1, trimmed = -1;

    assert_int_equal(kg_store_change_head(f->st, &last, &trimmed, &err), KG_OK);
    return last;
}

/* The owner record of key id's current entry (valid while the entry is:
 * compared, not read, once the guard is gone). */
static const struct kg_keyowner *
entry_owner(struct kg_fx_cache *f, const char *id)
{
    struct kg_keyent e;

    assert_true(cached(f, id, &e));
    return e.owner;
}

static void
test_a_key_created_after_the_load_arrives_as_a_delta(void **state)
{
    struct kg_fx_cache *f = *state;

    insert(f, "key_a", NULL);
    load(f);
    assert_int_equal(kg_keycache_position(f->kc), head(f));
    insert(f, "key_b", NULL);
    assert_false(cached(f, "key_b", NULL));
    sync_delta(f, NOW);
    assert_true(cached(f, "key_a", NULL));
    assert_true(cached(f, "key_b", NULL));
    assert_int_equal(kg_keycache_position(f->kc), head(f));
}

static void
test_a_revocation_removes_the_key(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};

    insert(f, "key_a", NULL);
    insert(f, "key_b", NULL);
    load(f);
    assert_int_equal(kg_store_key_revoke(f->st, "key_a", NOW, &err), KG_OK);
    sync_delta(f, NOW);
    assert_false(cached(f, "key_a", NULL));
    assert_true(cached(f, "key_b", NULL));
}

static void
test_a_rotation_with_grace_keeps_the_old_key_until_its_end(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_key_rec fresh;
    struct kg_keyent e;
    struct kg_err err = {{0}};

    insert(f, "key_old", NULL);
    load(f);
    kg_fx_key_rec(&fresh, "key_new", NOW);
    snprintf(fresh.tenant, sizeof(fresh.tenant), "tenant-key_old");
    assert_int_equal(kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 3600, NOW, NULL, &err),
                     KG_OK);
    sync_delta(f, NOW);
    assert_true(cached(f, "key_new", &e));
    assert_int_equal(e.revoked_at, 0);
    /* Still answering during the grace, its end known to decide.c. */
    assert_true(cached(f, "key_old", &e));
    assert_int_equal(e.revoked_at, NOW + 3600);
}

static void
test_a_narrowed_role_reaches_every_key_of_the_user(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_user_rec u;
    struct kg_keyent e;
    struct kg_err err = {{0}};

    const struct kg_keysnap *held;
    const struct kg_keyowner *before;

    insert(f, "key_a", "acme");
    insert(f, "key_b", "acme");
    load(f);
    assert_true(cached(f, "key_a", &e));
    assert_string_equal(e.owner->role_str, "*");
    /* A request holding an entry from before the change. */
    held = kg_keycache_acquire(f->kc);
    before = kg_keysnap_find(held, e.digest)->owner;
    owner_of(f, "key_a", &u);
    snprintf(u.role, sizeof(u.role), "items:read");
    assert_int_equal(kg_store_user_update(f->st, &u, NULL, &err), KG_OK);
    sync_delta(f, NOW);
    assert_true(cached(f, "key_a", &e));
    assert_string_equal(e.owner->role_str, "items:read");
    assert_false(e.owner->role_all);
    assert_true(cached(f, "key_b", &e));
    assert_string_equal(e.owner->role_str, "items:read");
    /* One record for the user, made once and shared by both keys. */
    assert_ptr_equal(entry_owner(f, "key_a"), entry_owner(f, "key_b"));
    assert_ptr_not_equal(entry_owner(f, "key_a"), before);
    /* The old record lives as long as an entry that points to it (ASan
     * sees a use after free or a leak otherwise). */
    assert_string_equal(before->role_str, "*");
    assert_true(before->role_all);
    kg_keycache_release(held);
}

static void
test_a_disabled_user_stops_its_keys_and_enabling_brings_them_back(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    insert(f, "key_a", "acme");
    insert(f, "key_other", "other");
    load(f);
    owner_of(f, "key_a", &u);
    u.disabled_at = NOW;
    assert_int_equal(kg_store_user_update(f->st, &u, NULL, &err), KG_OK);
    sync_delta(f, NOW);
    assert_false(cached(f, "key_a", NULL));
    assert_true(cached(f, "key_other", NULL));
    u.disabled_at = 0;
    assert_int_equal(kg_store_user_update(f->st, &u, NULL, &err), KG_OK);
    sync_delta(f, NOW);
    assert_true(cached(f, "key_a", NULL));
}

static void
test_a_disabled_tenant_stops_every_key_of_every_user(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    struct kg_tenant_rec t;
    struct kg_err err = {{0}};

    insert(f, "key_a", "acme");
    insert(f, "key_b", "acme");
    insert(f, "key_other", "other");
    load(f);
    assert_int_equal(kg_store_tenant_get(f->st, "acme", &t, &err), KG_OK);
    t.disabled_at = NOW;
    assert_int_equal(kg_store_tenant_update(f->st, &t, NULL, &err), KG_OK);
    sync_delta(f, NOW);
    assert_false(cached(f, "key_a", NULL));
    assert_false(cached(f, "key_b", NULL));
    assert_true(cached(f, "key_other", NULL));
    snap = kg_keycache_acquire(f->kc);
    assert_int_equal(kg_keysnap_count(snap), 1);
    kg_keycache_release(snap);
}

static void
test_a_usage_flush_writes_no_change(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    unsigned char d[KG_DIGEST_BYTES];
    const struct kg_keyent *ent;
    struct kg_err err = {{0}};
    int64_t before;
    size_t n = 0;

    insert(f, "key_a", NULL);
    load(f);
    before = head(f);
    crypto_generichash(d, KG_DIGEST_BYTES, (const unsigned char *)"key_a", 5, NULL, 0);
    snap = kg_keycache_acquire(f->kc);
    ent = kg_keysnap_find(snap, d);
    assert_non_null(ent);
    kg_keycache_touch(ent, NOW + 5);
    kg_keycache_count(ent, KG_USAGE_REQUEST);
    kg_keycache_charge(kg_keycache_stat(ent), 3);
    kg_keycache_release(snap);
    assert_int_equal(kg_keycache_flush(f->kc, f->st, &n, &err), KG_OK);
    assert_int_equal(n, 1);
    assert_int_equal(head(f), before);
}

static void
test_a_log_trimmed_past_the_position_loads_everything_again(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    int64_t last, trimmed;
    size_t n = 0;
    bool full = false;

    insert(f, "key_a", NULL);
    load(f);
    insert(f, "key_b", NULL);
    assert_int_equal(kg_store_key_revoke(f->st, "key_a", NOW, &err), KG_OK);
    /* Everything written before a time far ahead: all rows but the newest. */
    assert_int_equal(kg_store_change_trim(f->st, (int64_t)NOW * 2, &n, &err), KG_OK);
    assert_true(n > 0);
    assert_int_equal(kg_store_change_head(f->st, &last, &trimmed, &err), KG_OK);
    assert_true(trimmed > kg_keycache_position(f->kc));
    assert_int_equal(kg_keycache_sync(f->kc, f->st, NOW, &full, &err), KG_OK);
    assert_true(full);
    assert_false(cached(f, "key_a", NULL));
    assert_true(cached(f, "key_b", NULL));
    assert_int_equal(kg_keycache_position(f->kc), last);
    /* Trimming rows the cache has applied already costs it nothing. */
    insert(f, "key_c", NULL);
    sync_delta(f, NOW);
    assert_int_equal(kg_store_change_trim(f->st, (int64_t)NOW * 2, &n, &err), KG_OK);
    insert(f, "key_d", NULL);
    sync_delta(f, NOW);
    assert_true(cached(f, "key_c", NULL));
    assert_true(cached(f, "key_d", NULL));
}

static void
test_a_sync_before_any_load_loads_everything(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    bool full = false;

    insert(f, "key_a", NULL);
    assert_int_equal(kg_keycache_position(f->kc), -1);
    assert_int_equal(kg_keycache_sync(f->kc, f->st, NOW, &full, &err), KG_OK);
    assert_true(full);
    assert_true(cached(f, "key_a", NULL));
}

/* The entry of key id in snap (NULL: not cached). */
static const struct kg_keyent *
entry_in(const struct kg_keysnap *snap, const char *id)
{
    unsigned char d[KG_DIGEST_BYTES];

    crypto_generichash(d, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL, 0);
    return kg_keysnap_find(snap, d);
}

static void
test_a_key_first_used_through_an_entry_replaced_meanwhile_has_one_record(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *held, *now;
    const struct kg_keyent *old, *cur;
    struct kg_keystat *s;
    struct kg_key_usage u;
    struct kg_err err = {{0}};
    size_t n = 0;

    insert(f, "key_a", NULL);
    load(f);
    /* A request holds the entry; a change replaces it before either is
     * used, so the new entry is built with no record to link. */
    held = kg_keycache_acquire(f->kc);
    old = entry_in(held, "key_a");
    assert_null(atomic_load(&old->stat));
    assert_int_equal(kg_store_key_revoke(f->st, "key_a", NOW + 3600, &err), KG_OK);
    sync_delta(f, NOW);
    now = kg_keycache_acquire(f->kc);
    cur = entry_in(now, "key_a");
    assert_ptr_not_equal(cur, old);
    assert_null(atomic_load(&cur->stat));
    /* First used through the old entry, then through the new: one record. */
    kg_keycache_count(old, KG_USAGE_REQUEST);
    s = kg_keycache_stat(old);
    assert_non_null(s);
    kg_keycache_count(cur, KG_USAGE_REQUEST);
    assert_ptr_equal(kg_keycache_stat(cur), s);
    kg_keycache_release(now);
    kg_keycache_release(held);
    assert_int_equal(kg_keycache_flush(f->kc, f->st, &n, &err), KG_OK);
    assert_int_equal(n, 1);
    assert_int_equal(kg_store_key_usage_get(f->st, "key_a", &u, &err), KG_OK);
    assert_int_equal(u.requests, 2);
}

static void
test_a_key_back_after_its_user_was_disabled_keeps_its_record(void **state)
{
    struct kg_fx_cache *f = *state;
    const struct kg_keysnap *snap;
    struct kg_user_rec u;
    struct kg_keystat *s;
    struct kg_err err = {{0}};

    insert(f, "key_a", "acme");
    load(f);
    snap = kg_keycache_acquire(f->kc);
    kg_keycache_charge(kg_keycache_stat(entry_in(snap, "key_a")), 3);
    s = kg_keycache_stat(entry_in(snap, "key_a"));
    kg_keycache_release(snap);
    owner_of(f, "key_a", &u);
    u.disabled_at = NOW;
    assert_int_equal(kg_store_user_update(f->st, &u, NULL, &err), KG_OK);
    sync_delta(f, NOW);
    assert_false(cached(f, "key_a", NULL));
    u.disabled_at = 0;
    assert_int_equal(kg_store_user_update(f->st, &u, NULL, &err), KG_OK);
    sync_delta(f, NOW);
    /* The new entry is linked by the writer to the record its key had:
     * the 3 credits not flushed yet still count. */
    snap = kg_keycache_acquire(f->kc);
    assert_ptr_equal(atomic_load(&entry_in(snap, "key_a")->stat), s);
    assert_int_equal(atomic_load(&s->credits.charged), 3);
    kg_keycache_release(snap);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, kg_fx_cache_setup, kg_fx_cache_teardown)
    const struct CMUnitTest tests[] = {
        T(test_a_key_created_after_the_load_arrives_as_a_delta),
        T(test_a_revocation_removes_the_key),
        T(test_a_rotation_with_grace_keeps_the_old_key_until_its_end),
        T(test_a_narrowed_role_reaches_every_key_of_the_user),
        T(test_a_disabled_user_stops_its_keys_and_enabling_brings_them_back),
        T(test_a_disabled_tenant_stops_every_key_of_every_user),
        T(test_a_usage_flush_writes_no_change),
        T(test_a_log_trimmed_past_the_position_loads_everything_again),
        T(test_a_sync_before_any_load_loads_everything),
        T(test_a_key_first_used_through_an_entry_replaced_meanwhile_has_one_record),
        T(test_a_key_back_after_its_user_was_disabled_keeps_its_record),
    };
#undef T

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
