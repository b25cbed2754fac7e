/* tests/unit/store/test_sqlite_events.c - src/store/sqlite_events.c
 * through keygate/store.h: the outbox's lifecycle rows and the clock's
 * alerts, with the clock passed in (no sleeping): key.expiring once per
 * key and expiry, key.expired, key.unused, none for canaries; a delivery
 * retried then given up; events of a key held back in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/store.h"
#include "unit/fixture.h"

#define T0 1800000000 /* 2027-01-15 */
#define DAY 86400

static int
setup(void **state)
{
    *state = NULL;
    return kg_fx_cache_setup(state);
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
