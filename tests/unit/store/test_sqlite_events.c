/* tests/unit/store/test_sqlite_events.c - src/store/sqlite_events.c
 * through keygate/store.h: the outbox's lifecycle rows and the clock's
 * alerts, with the clock passed in (no sleeping): key.expiring once per
 * key and expiry, key.expired, key.unused, none for canaries; a delivery
 * retried then given up; events of a key held back in order. With
 * KEYGATE_TEST_DATABASE=postgres (ctest: ..._postgres) the same tests run
 * against src/store/pg_events.c, a fresh database per test on a private
 * PostgreSQL server (tests/helpers/pgserver.c), plus the claim that keeps
 * two instances from posting the same delivery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "helpers/pgserver.h"
#include "keygate/keycache.h"
#include "keygate/limiter.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define T0 1800000000 /* 2027-01-15 */
#define DAY 86400

/* Set when the tests run against PostgreSQL. */
static struct kt_pg *pg;
static int pg_dbs;

static int
setup(void **state)
{
    struct kg_fx_cache *f;
    struct kg_err err = {{0}};
    char db[32];

    *state = NULL;
    if (pg == NULL)
        return kg_fx_cache_setup(state);
    /* The cache fixture, with its store on a fresh PostgreSQL database. */
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    *state = f;
    if (kg_fx_mkdtemp(f->dir, "events") != 0)
        return -1;
    snprintf(db, sizeof(db), "events_%d", ++pg_dbs);
    if (kt_pg_createdb(pg, db, f->path, sizeof(f->path)) != 0)
        return -1;
    if (kg_store_open(f->path, &f->st, &err) != KG_OK) {
        fprintf(stderr, "kg_store_open: %s\n", err.msg);
        return -1;
    }
    if (kg_limiter_new_local(1024, &f->lim, &err) != KG_OK)
        return -1;
    return kg_keycache_new(f->lim, &f->kc) == KG_OK ? 0 : -1;
}

struct count {
    const char *type;
    size_t n;
};

static bool
count_type(const struct kg_event *ev, void *ctx)
{
    struct count *c = ctx;

    if (strcmp(ev->type, c->type) == 0)
        c->n++;
    return true;
}

static size_t
events_of(struct kg_store *st, const char *type)
{
    struct kg_event_query q = {0};
    struct count c = {.type = type};
    struct kg_err err = {{0}};

    assert_int_equal(kg_store_event_list(st, &q, count_type, &c, NULL, &err), KG_OK);
    return c.n;
}

static void
test_expiry_alerts_fire_once_with_the_clock_injected(void **state)
{
    struct kg_fx_cache *fx = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    size_t fired;

    kg_fx_key_rec(&rec, "key_soon", T0);
    rec.expires_at = T0 + 20 * DAY;
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    kg_fx_key_rec(&rec, "key_canary", T0);
    rec.expires_at = T0 + 20 * DAY;
    rec.canary = true;
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    assert_int_equal(events_of(fx->st, "key.created"), 2);

    /* 20 days out: nothing with a 14-day lead. */
    if (kg_store_alerts_scan(fx->st, T0, 14 * DAY, 0, &fired, &err) != KG_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(fired, 0);
    /* 14 days out: once, and not again. The canary gets none. */
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 6 * DAY, 14 * DAY, 0, &fired, &err), KG_OK);
    assert_int_equal(fired, 1);
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 7 * DAY, 14 * DAY, 0, &fired, &err), KG_OK);
    assert_int_equal(fired, 0);
    assert_int_equal(events_of(fx->st, "key.expiring"), 1);
    /* Expired: key.expired once. */
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 20 * DAY, 14 * DAY, 0, &fired, &err), KG_OK);
    assert_int_equal(fired, 1);
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 20 * DAY + 60, 14 * DAY, 0, &fired, &err),
                     KG_OK);
    assert_int_equal(fired, 0);
    assert_int_equal(events_of(fx->st, "key.expired"), 1);
}

static void
test_an_unused_key_is_reported_once_per_idle_stretch(void **state)
{
    struct kg_fx_cache *fx = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    const char *ids[] = {"key_idle"};
    int64_t used = T0 + 40 * DAY;
    size_t fired;

    kg_fx_key_rec(&rec, "key_idle", T0);
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 29 * DAY, 0, 30 * DAY, &fired, &err), KG_OK);
    assert_int_equal(fired, 0);
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 30 * DAY, 0, 30 * DAY, &fired, &err), KG_OK);
    assert_int_equal(fired, 1);
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 31 * DAY, 0, 30 * DAY, &fired, &err), KG_OK);
    assert_int_equal(fired, 0);
    /* Used again, then idle again: a second report. */
    assert_int_equal(kg_store_key_touch(fx->st, ids, &used, 1, &err), KG_OK);
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 71 * DAY, 0, 30 * DAY, &fired, &err), KG_OK);
    assert_int_equal(fired, 1);
    assert_int_equal(events_of(fx->st, "key.unused"), 2);
}

static void
test_a_failed_delivery_is_retried_then_given_up_and_holds_back_its_key(void **state)
{
    struct kg_fx_cache *fx = *state;
    struct kg_event ev;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    int64_t attempts, first;
    size_t added;

    kg_fx_key_rec(&rec, "key_hook", T0);
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    assert_int_equal(kg_store_key_revoke(fx->st, "key_hook", T0 + 5, &err), KG_OK);
    assert_int_equal(
        kg_store_event_fanout(fx->st, "http://r/", "", T0 + 10, 10 * 365 * DAY, &added, &err),
        KG_OK);
    assert_int_equal(added, 2);
    /* Only ",key.revoked," for a second endpoint. */
    assert_int_equal(kg_store_event_fanout(fx->st, "http://s/", ",key.revoked,", T0 + 10,
                                           10 * 365 * DAY, &added, &err),
                     KG_OK);
    assert_int_equal(added, 1);
    assert_int_equal(kg_store_delivery_due(fx->st, "http://r/", T0 + 10, &ev, &attempts, &err),
                     KG_OK);
    assert_string_equal(ev.type, "key.created");
    first = ev.seq;
    /* Failed, retry at T0 + 20: nothing due before, and key.revoked waits. */
    assert_int_equal(kg_store_delivery_done(fx->st, first, "http://r/", false, T0 + 20, 500,
                                            "HTTP 500", T0 + 10, &err),
                     KG_OK);
    assert_int_equal(kg_store_delivery_due(fx->st, "http://r/", T0 + 15, &ev, &attempts, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_store_delivery_due(fx->st, "http://r/", T0 + 20, &ev, &attempts, &err),
                     KG_OK);
    assert_int_equal(ev.seq, first);
    assert_int_equal(attempts, 1);
    /* Given up: the next event of the key is due now. */
    assert_int_equal(kg_store_delivery_done(fx->st, first, "http://r/", false, 0, 500, "HTTP 500",
                                            T0 + 20, &err),
                     KG_OK);
    assert_int_equal(kg_store_delivery_due(fx->st, "http://r/", T0 + 20, &ev, &attempts, &err),
                     KG_OK);
    assert_string_equal(ev.type, "key.revoked");
    assert_int_equal(kg_store_event_retry(fx->st, NULL, NULL, T0 + 30, &added, &err), KG_OK);
    assert_int_equal(added, 1);
}

struct grab {
    struct kg_event ev[8];
    size_t n;
};

static bool
grab_event(const struct kg_event *ev, void *ctx)
{
    struct grab *g = ctx;

    if (g->n < 8)
        g->ev[g->n++] = *ev;
    return true;
}

/* The rows the schema's triggers write for a key's life, the same text on
 * both backends: ids, types, owner columns and the JSON data. */
static void
test_lifecycle_triggers_write_the_same_rows_on_every_backend(void **state)
{
    struct kg_fx_cache *fx = *state;
    struct kg_event_query q = {0};
    struct kg_key_rec rec, fresh;
    struct grab g = {.n = 0};
    struct kg_err err = {{0}};
    char expect[128];

    kg_fx_key_rec(&rec, "key_life", T0);
    rec.canary = true;
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    kg_fx_key_rec(&fresh, "key_next", T0);
    if (kg_store_key_rotate(fx->st, "key_life", &fresh, T0 + 3600, T0, NULL, &err) != KG_OK)
        fail_msg("%s", err.msg);
    /* Bringing the scheduled revocation forward is a revocation. */
    assert_int_equal(kg_store_key_revoke(fx->st, "key_life", T0 + 60, &err), KG_OK);
    assert_int_equal(kg_store_event_list(fx->st, &q, grab_event, &g, NULL, &err), KG_OK);
    assert_int_equal(g.n, 4);
    /* Newest first. */
    assert_string_equal(g.ev[0].type, "key.revoked");
    assert_string_equal(g.ev[0].key_id, "key_life");
    assert_string_equal(g.ev[0].data, "{}");
    assert_string_equal(g.ev[1].type, "key.rotated");
    snprintf(expect, sizeof(expect), "{\"rotated_to\":\"key_next\",\"revoked_at\":%d}", T0 + 3600);
    assert_string_equal(g.ev[1].data, expect);
    assert_string_equal(g.ev[2].type, "key.created");
    assert_string_equal(g.ev[2].key_id, "key_next");
    assert_string_equal(g.ev[2].data, "{}");
    assert_string_equal(g.ev[3].type, "key.created");
    assert_string_equal(g.ev[3].data, "{\"canary\":true}");
    assert_string_equal(g.ev[3].prefix, rec.prefix);
    assert_string_equal(g.ev[3].tenant, rec.tenant[0] != '\0' ? rec.tenant : "default");
    for (size_t i = 0; i < g.n; i++) {
        assert_int_equal(strlen(g.ev[i].id), 28);
        assert_memory_equal(g.ev[i].id, "evt_", 4);
        assert_int_equal(strspn(g.ev[i].id + 4, "0123456789abcdef"), 24);
        assert_true(g.ev[i].seq > (i + 1 < g.n ? g.ev[i + 1].seq : 0));
    }
    assert_string_not_equal(g.ev[0].id, g.ev[1].id);
}

/* An alert's JSON data as SQLite's json_object() writes it. */
static void
test_alert_data_is_the_same_json_on_every_backend(void **state)
{
    struct kg_fx_cache *fx = *state;
    struct kg_event_query q = {.type = "key.expiring"};
    struct kg_key_rec rec;
    struct grab g = {.n = 0};
    struct kg_err err = {{0}};
    size_t fired;

    kg_fx_key_rec(&rec, "key_json", T0);
    rec.expires_at = T0 + 10 * DAY; /* 2027-01-25T08:00:00Z */
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    if (kg_store_alerts_scan(fx->st, T0, 14 * DAY, 0, &fired, &err) != KG_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(fired, 1);
    assert_int_equal(kg_store_event_list(fx->st, &q, grab_event, &g, NULL, &err), KG_OK);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.ev[0].data, "{\"expires_at\":\"2027-01-25T08:00:00Z\"}");
    assert_int_equal(g.ev[0].time, T0);
    g.n = 0;
    q.type = "key.unused";
    assert_int_equal(kg_store_alerts_scan(fx->st, T0 + 5 * DAY, 0, DAY, &fired, &err), KG_OK);
    assert_int_equal(fired, 1);
    assert_int_equal(kg_store_event_list(fx->st, &q, grab_event, &g, NULL, &err), KG_OK);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.ev[0].data, "{\"last_used_at\":null}");
}

/* Leak reports: the key revoked and key.leaked written in one go; a key
 * found by its digest with canary and allowed_ips read back. */
static void
test_a_leaked_key_is_revoked_with_its_event(void **state)
{
    struct kg_fx_cache *fx = *state;
    struct kg_event_query q = {0};
    struct kg_key_rec rec, got;
    struct kg_event ev = {0};
    struct grab g = {.n = 0};
    struct kg_err err = {{0}};

    kg_fx_key_rec(&rec, "key_leak", T0);
    snprintf(rec.allowed_ips, sizeof(rec.allowed_ips), "10.0.0.0/8,2001:db8::/32");
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    if (kg_store_key_by_digest(fx->st, rec.digest, &got, &err) != KG_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(got.id, "key_leak");
    assert_string_equal(got.allowed_ips, "10.0.0.0/8,2001:db8::/32");
    assert_false(got.canary);
    got.digest[0] ^= 1;
    assert_int_equal(kg_store_key_by_digest(fx->st, got.digest, &got, &err), KG_ENOTFOUND);

    snprintf(ev.type, sizeof(ev.type), "key.leaked");
    snprintf(ev.key_id, sizeof(ev.key_id), "key_leak");
    snprintf(ev.data, sizeof(ev.data), "{\"source\":\"https://paste.example/x\"}");
    ev.time = T0 + 1;
    if (kg_store_key_leaked(fx->st, "key_leak", true, T0 + 1, &ev, NULL, &err) != KG_OK)
        fail_msg("%s", err.msg);
    assert_true(ev.seq > 0);
    assert_memory_equal(ev.id, "evt_", 4);
    assert_int_equal(kg_store_key_get(fx->st, "key_leak", &got, &err), KG_OK);
    assert_int_equal(got.revoked_at, T0 + 1);
    assert_int_equal(kg_store_event_list(fx->st, &q, grab_event, &g, NULL, &err), KG_OK);
    /* key.leaked, key.revoked (the trigger), key.created, newest first. */
    assert_int_equal(g.n, 3);
    assert_string_equal(g.ev[0].type, "key.leaked");
    assert_string_equal(g.ev[0].id, ev.id);
    assert_string_equal(g.ev[0].data, "{\"source\":\"https://paste.example/x\"}");
    assert_string_equal(g.ev[1].type, "key.revoked");
}

/* PostgreSQL only: two instances' senders (two handles) never get the same
 * delivery while one is posting it; once the claim runs out (a dead
 * sender) the other gets it. The events of one key stay in order. */
static void
test_pg_two_instances_never_claim_the_same_delivery(void **state)
{
    struct kg_fx_cache *fx = *state;
    struct kg_store *other = NULL;
    int64_t pending, delivered, failed;
    struct kg_event ev1, ev2;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    int64_t attempts;
    size_t added;

    assert_int_equal(kg_store_open(fx->path, &other, &err), KG_OK);
    kg_fx_key_rec(&rec, "key_a", T0);
    assert_int_equal(kg_store_key_insert(fx->st, &rec, &err), KG_OK);
    kg_fx_key_rec(&rec, "key_b", T0);
    assert_int_equal(kg_store_key_insert(other, &rec, &err), KG_OK);
    assert_int_equal(kg_store_key_revoke(other, "key_a", T0 + 1, &err), KG_OK);
    /* Both fan out; the deliveries are made once. */
    assert_int_equal(
        kg_store_event_fanout(fx->st, "http://r/", "", T0 + 5, 10 * 365 * DAY, &added, &err),
        KG_OK);
    assert_int_equal(added, 3);
    assert_int_equal(
        kg_store_event_fanout(other, "http://r/", "", T0 + 5, 10 * 365 * DAY, &added, &err), KG_OK);
    assert_int_equal(added, 0);

    assert_int_equal(kg_store_delivery_due(fx->st, "http://r/", T0 + 5, &ev1, &attempts, &err),
                     KG_OK);
    assert_string_equal(ev1.type, "key.created");
    assert_string_equal(ev1.key_id, "key_a");
    /* The other instance gets key_b's, never key_a's (claimed) nor the
     * revocation of key_a (it waits for key_a's creation). */
    assert_int_equal(kg_store_delivery_due(other, "http://r/", T0 + 5, &ev2, &attempts, &err),
                     KG_OK);
    assert_string_equal(ev2.key_id, "key_b");
    assert_int_equal(kg_store_delivery_due(other, "http://r/", T0 + 6, &ev2, &attempts, &err),
                     KG_ENOTFOUND);
    assert_int_equal(
        kg_store_delivery_done(other, ev2.seq, "http://r/", true, 0, 200, "", T0 + 6, &err), KG_OK);
    /* The first instance dies without an answer: ten minutes on, its claim
     * has run out and the other delivers it. */
    assert_int_equal(kg_store_delivery_due(other, "http://r/", T0 + 600, &ev2, &attempts, &err),
                     KG_OK);
    assert_int_equal(ev2.seq, ev1.seq);
    assert_int_equal(
        kg_store_delivery_done(other, ev2.seq, "http://r/", true, 0, 200, "", T0 + 601, &err),
        KG_OK);
    assert_int_equal(kg_store_delivery_due(other, "http://r/", T0 + 601, &ev2, &attempts, &err),
                     KG_OK);
    assert_string_equal(ev2.type, "key.revoked");
    /* The first instance's late answer does not reopen what was delivered. */
    assert_int_equal(kg_store_delivery_done(fx->st, ev1.seq, "http://r/", false, T0 + 700, 0,
                                            "timed out", T0 + 650, &err),
                     KG_OK);
    assert_int_equal(kg_store_event_counts(fx->st, &pending, &delivered, &failed, &err), KG_OK);
    assert_int_equal(pending, 1);
    assert_int_equal(delivered, 2);
    assert_int_equal(failed, 0);
    kg_store_close(other);
}

/* The alert scan runs every 10 s under the write lock: it must find its
 * keys by index. With a full scan of 1,000,000 keys per alert the lock was
 * held for seconds and the CLI got "database is locked". */
static void
test_the_alert_scans_conditions_use_an_index(void **state)
{
    struct kg_fx_cache *fx = *state;
    static const struct {
        const char *where, *index;
    } q[] = {
        {"expires_at > 1 AND expires_at <= 2", "keys_by_expiry"},
        {"expires_at <= 2 AND expires_at > 1", "keys_by_expiry"},
        {"coalesce(last_used_at, created_at) <= 5", "keys_by_last_use"},
    };
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        char sql[256];
        sqlite3_stmt *stmt = NULL;
        bool indexed = false;

        snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN SELECT id FROM keys WHERE %s", q[i].where);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
        while (sqlite3_step(stmt) == SQLITE_ROW) {
            const char *detail = (const char *)sqlite3_column_text(stmt, 3);

            if (detail != NULL && strstr(detail, q[i].index) != NULL)
                indexed = true;
        }
        sqlite3_finalize(stmt);
        if (!indexed)
            fail_msg("%s: not through %s", q[i].where, q[i].index);
    }
    sqlite3_close(db);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expiry_alerts_fire_once_with_the_clock_injected, setup,
                                        kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_an_unused_key_is_reported_once_per_idle_stretch, setup,
                                        kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_failed_delivery_is_retried_then_given_up_and_holds_back_its_key, setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_lifecycle_triggers_write_the_same_rows_on_every_backend, setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_alert_data_is_the_same_json_on_every_backend, setup,
                                        kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_a_leaked_key_is_revoked_with_its_event, setup,
                                        kg_fx_cache_teardown),
    };
    const struct CMUnitTest pg_only[] = {
        cmocka_unit_test_setup_teardown(test_pg_two_instances_never_claim_the_same_delivery, setup,
                                        kg_fx_cache_teardown),
    };
    const struct CMUnitTest sqlite_only[] = {
        cmocka_unit_test_setup_teardown(test_the_alert_scans_conditions_use_an_index, setup,
                                        kg_fx_cache_teardown),
    };
    const char *backend = getenv("KEYGATE_TEST_DATABASE");
    int failed;

    if (backend != NULL && strcmp(backend, "postgres") == 0) {
        int rc = kt_pg_start(&pg);

        if (rc != 0)
            return rc == KT_PG_SKIP ? KT_PG_SKIP : 1;
        failed = cmocka_run_group_tests_name("events on PostgreSQL", tests, NULL, NULL);
        failed += cmocka_run_group_tests_name("events on PostgreSQL only", pg_only, NULL, NULL);
        kt_pg_free(pg);
        return failed;
    }
    failed = cmocka_run_group_tests_name("events on SQLite", tests, NULL, NULL);
    return failed + cmocka_run_group_tests_name("events on SQLite only", sqlite_only, NULL, NULL);
}
