/* tests/unit/auth/test_keyflush.c - per-key usage counters: kg_keycache_count()
 * and kg_keycache_flush() (src/auth/keyflush.c) over kg_store_key_usage_add()
 * and kg_store_key_usage_get() of the SQLite store, in a fresh temporary
 * directory per test. A flush or a batch is made to fail half-way with a
 * trigger (or a renamed table) set through a second connection, which is how
 * the tests see that a failed transaction counts nothing and marks nothing. */
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
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW 1800000000 /* 2027-01-15, a fixed clock */

static int
group_setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static void
insert_key(struct kg_fx_cache *f, const char *id)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    kg_fx_key_rec(&rec, id, NOW - 1000);
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

static void
reload(struct kg_fx_cache *f)
{
    struct kg_err err = {{0}};

    if (kg_keycache_reload(f->kc, f->st, NOW, &err) != KG_OK)
        fail_msg("reload should succeed: %s", err.msg);
}

/* Runs sql on a connection of its own, as another process would. */
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

static struct kg_key_usage
stored(struct kg_fx_cache *f, const char *id)
{
    struct kg_key_usage u;
    struct kg_err err = {{0}};

    if (kg_store_key_usage_get(f->st, id, &u, &err) != KG_OK)
        fail_msg("reading the usage of %s should succeed: %s", id, err.msg);
    return u;
}

/* Counts n of kind on key id, through the current snapshot. */
static void
count(struct kg_fx_cache *f, const char *id, enum kg_usage_kind kind, int n)
{
    const struct kg_keysnap *snap = kg_keycache_acquire(f->kc);
    unsigned char digest[KG_DIGEST_BYTES];
    const struct kg_keyent *ent;

    crypto_generichash(digest, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL, 0);
    ent = kg_keysnap_find(snap, digest);
    if (ent == NULL)
        fail_msg("%s should be in the snapshot", id);
    for (int i = 0; i < n; i++)
        kg_keycache_count(ent, kind);
    kg_keycache_touch(ent, NOW + 10);
    kg_keycache_release(snap);
}

static size_t
flush_ok(struct kg_fx_cache *f)
{
    struct kg_err err = {{0}};
    size_t n = 12345;

    if (kg_keycache_flush(f->kc, f->st, &n, &err) != KG_OK)
        fail_msg("flush should succeed: %s", err.msg);
    return n;
}

static void
test_a_key_never_counted_reads_as_zero(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_key_usage u;
    struct kg_err err = {{0}};

    insert_key(f, "key_a");
    u = stored(f, "key_a");
    assert_int_equal(u.requests, 0);
    assert_int_equal(u.denied_expired + u.denied_forbidden + u.denied_rate, 0);
    assert_int_equal(u.last_used_at, 0);
    assert_int_equal(kg_store_key_usage_get(f->st, "key_nope", &u, &err), KG_ENOTFOUND);
}

static void
test_flushed_deltas_add_up_to_the_counts(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_key_usage u;

    insert_key(f, "key_a");
    insert_key(f, "key_b");
    reload(f);
    count(f, "key_a", KG_USAGE_REQUEST, 5);
    count(f, "key_a", KG_USAGE_DENIED_FORBIDDEN, 2);
    count(f, "key_b", KG_USAGE_DENIED_RATE, 3);
    assert_int_equal(stored(f, "key_a").requests, 0); /* nothing written before the flush */
    assert_int_equal(flush_ok(f), 2);
    count(f, "key_a", KG_USAGE_REQUEST, 4);
    count(f, "key_a", KG_USAGE_DENIED_EXPIRED, 1);
    assert_int_equal(flush_ok(f), 1);
    /* Nothing new: nothing written, nothing counted twice. */
    assert_int_equal(flush_ok(f), 0);

    u = stored(f, "key_a");
    assert_int_equal(u.requests, 9);
    assert_int_equal(u.denied_expired, 1);
    assert_int_equal(u.denied_forbidden, 2);
    assert_int_equal(u.denied_rate, 0);
    assert_int_equal(u.last_used_at, NOW + 10);
    assert_true(u.updated_at > 0);
    u = stored(f, "key_b");
    assert_int_equal(u.requests, 0);
    assert_int_equal(u.denied_rate, 3);
}

static void
test_counts_survive_a_reload_of_the_cache(void **state)
{
    struct kg_fx_cache *f = *state;

    insert_key(f, "key_a");
    reload(f);
    count(f, "key_a", KG_USAGE_REQUEST, 3);
    reload(f);
    count(f, "key_a", KG_USAGE_REQUEST, 2);
    assert_int_equal(flush_ok(f), 1);
    assert_int_equal(stored(f, "key_a").requests, 5);
}

static void
test_a_failed_flush_marks_nothing_and_the_next_writes_it_once(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    struct kg_key_usage u;
    size_t n = 12345;

    insert_key(f, "key_a");
    reload(f);
    count(f, "key_a", KG_USAGE_REQUEST, 7);
    raw_exec(f->path, "ALTER TABLE key_usage RENAME TO key_usage_away");
    assert_int_not_equal(kg_keycache_flush(f->kc, f->st, &n, &err), KG_OK);
    assert_int_equal(n, 0);
    raw_exec(f->path, "ALTER TABLE key_usage_away RENAME TO key_usage");
    /* The whole batch rolled back, last-used time included. */
    u = stored(f, "key_a");
    assert_int_equal(u.requests, 0);
    assert_int_equal(u.last_used_at, 0);

    count(f, "key_a", KG_USAGE_REQUEST, 1);
    assert_int_equal(flush_ok(f), 1);
    assert_int_equal(flush_ok(f), 0);
    u = stored(f, "key_a");
    assert_int_equal(u.requests, 8);
    assert_int_equal(u.last_used_at, NOW + 10);
}

static void
test_a_batch_is_one_transaction(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    const char *ids[] = {"key_a", "key_b"};
    struct kg_key_usage d[2] = {
        {.requests = 2, .last_used_at = NOW},
        {.requests = 3, .denied_forbidden = 1, .last_used_at = NOW},
    };

    insert_key(f, "key_a");
    insert_key(f, "key_b");
    raw_exec(f->path, "CREATE TRIGGER refuse_b BEFORE INSERT ON key_usage"
                      " WHEN NEW.key_id = 'key_b' BEGIN SELECT RAISE(ABORT, 'refused'); END");
    assert_int_not_equal(kg_store_key_usage_add(f->st, ids, d, 2, NOW, &err), KG_OK);
    /* key_a was written before key_b failed, and rolled back with it. */
    assert_int_equal(stored(f, "key_a").requests, 0);
    assert_int_equal(stored(f, "key_a").last_used_at, 0);

    raw_exec(f->path, "DROP TRIGGER refuse_b");
    assert_int_equal(kg_store_key_usage_add(f->st, ids, d, 2, NOW, &err), KG_OK);
    assert_int_equal(kg_store_key_usage_add(f->st, ids, d, 2, NOW + 1, &err), KG_OK);
    assert_int_equal(stored(f, "key_a").requests, 4);
    assert_int_equal(stored(f, "key_b").requests, 6);
    assert_int_equal(stored(f, "key_b").denied_forbidden, 2);
    assert_int_equal(stored(f, "key_b").updated_at, NOW + 1);
}

static void
test_unknown_ids_are_ignored_and_negative_deltas_refused(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    const char *ids[] = {"key_gone", "key_a"};
    struct kg_key_usage d[2] = {{.requests = 1}, {.requests = 1}};
    struct kg_key_usage neg = {.denied_rate = -1};

    insert_key(f, "key_a");
    assert_int_equal(kg_store_key_usage_add(f->st, ids, d, 2, NOW, &err), KG_OK);
    assert_int_equal(stored(f, "key_a").requests, 1);
    assert_int_equal(kg_store_key_usage_add(f->st, ids + 1, &neg, 1, NOW, &err), KG_EINVAL);
    assert_int_equal(stored(f, "key_a").denied_rate, 0);
}

static void
test_usage_adds_what_is_not_flushed_yet(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_err err = {{0}};
    struct kg_key_usage u;

    insert_key(f, "key_a");
    reload(f);
    count(f, "key_a", KG_USAGE_REQUEST, 2);
    assert_int_equal(flush_ok(f), 1);
    count(f, "key_a", KG_USAGE_REQUEST, 3);
    count(f, "key_a", KG_USAGE_DENIED_RATE, 1);
    assert_int_equal(kg_keycache_usage(f->kc, f->st, "key_a", &u, &err), KG_OK);
    assert_int_equal(u.requests, 5);
    assert_int_equal(u.denied_rate, 1);
    assert_int_equal(u.last_used_at, NOW + 10);
    assert_int_equal(stored(f, "key_a").requests, 2);
    assert_int_equal(kg_keycache_usage(f->kc, f->st, "key_nope", &u, &err), KG_ENOTFOUND);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, kg_fx_cache_setup, kg_fx_cache_teardown)
    const struct CMUnitTest tests[] = {
        T(test_a_key_never_counted_reads_as_zero),
        T(test_flushed_deltas_add_up_to_the_counts),
        T(test_counts_survive_a_reload_of_the_cache),
        T(test_a_failed_flush_marks_nothing_and_the_next_writes_it_once),
        T(test_a_batch_is_one_transaction),
        T(test_unknown_ids_are_ignored_and_negative_deltas_refused),
        T(test_usage_adds_what_is_not_flushed_yet),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
