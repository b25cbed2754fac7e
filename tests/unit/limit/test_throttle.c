/* tests/unit/limit/test_throttle.c - src/limit/throttle.c through keygate/throttle.h.
 *
 * The clock is an argument, so every test steps time by hand: exact
 * boundaries, a clock that goes backwards, a table full of other clients,
 * and several threads hammering one client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>

#include "keygate/throttle.h"

#define MINUTE_MS 60000

static struct kg_throttle *
new_throttle(int64_t limit, int64_t period_ms, size_t clients)
{
    struct kg_throttle *t = NULL;
    struct kg_err err = {{0}};

    assert_int_equal(kg_throttle_new(limit, period_ms, clients, &t, &err), KG_OK);
    assert_non_null(t);
    return t;
}

static void
test_five_per_minute_allows_a_burst_of_five_then_refuses_the_sixth(void **state)
{
    struct kg_throttle *t = new_throttle(5, MINUTE_MS, 64);
    int64_t retry = 0;

    (void)state;
    for (int i = 0; i < 5; i++)
        assert_true(kg_throttle_take(t, "192.0.2.1", 1000, NULL));
    assert_false(kg_throttle_take(t, "192.0.2.1", 1000, &retry));
    /* One request comes back every period / limit = 12 s. */
    assert_int_equal(retry, 12000);
    assert_int_equal(kg_throttle_retry_after_s(retry), 12);
    kg_throttle_free(t);
}

static void
test_a_refused_request_is_not_counted(void **state)
{
    struct kg_throttle *t = new_throttle(5, MINUTE_MS, 64);
    int64_t retry = 0;

    (void)state;
    for (int i = 0; i < 5; i++)
        assert_true(kg_throttle_take(t, "a", 0, NULL));
    for (int i = 0; i < 20; i++)
        assert_false(kg_throttle_take(t, "a", 0, NULL));
    /* Had the refusals counted, the wait would have grown far past 12 s. */
    assert_false(kg_throttle_take(t, "a", 11999, &retry));
    assert_int_equal(retry, 1);
    assert_true(kg_throttle_take(t, "a", 12000, NULL));
    kg_throttle_free(t);
}

static void
test_the_boundary_is_exact_to_the_millisecond(void **state)
{
    struct kg_throttle *t = new_throttle(1, 1000, 64);
    int64_t retry = 0;

    (void)state;
    assert_true(kg_throttle_take(t, "a", 5000, NULL));
    assert_false(kg_throttle_take(t, "a", 5999, &retry));
    assert_int_equal(retry, 1);
    assert_true(kg_throttle_take(t, "a", 6000, NULL));
    kg_throttle_free(t);
}

static void
test_an_uneven_interval_rounds_the_wait_up(void **state)
{
    /* 3 per 1000 ms: one every 333.33 ms. */
    struct kg_throttle *t = new_throttle(3, 1000, 64);
    int64_t retry = 0;

    (void)state;
    for (int i = 0; i < 3; i++)
        assert_true(kg_throttle_take(t, "a", 0, NULL));
    assert_false(kg_throttle_take(t, "a", 0, &retry));
    assert_int_equal(retry, 334);
    assert_false(kg_throttle_take(t, "a", 333, NULL));
    assert_true(kg_throttle_take(t, "a", 334, NULL));
    kg_throttle_free(t);
}

static void
test_clients_are_counted_separately(void **state)
{
    struct kg_throttle *t = new_throttle(2, MINUTE_MS, 64);

    (void)state;
    assert_true(kg_throttle_take(t, "10.0.0.1", 0, NULL));
    assert_true(kg_throttle_take(t, "10.0.0.1", 0, NULL));
    assert_false(kg_throttle_take(t, "10.0.0.1", 0, NULL));
    assert_true(kg_throttle_take(t, "10.0.0.2", 0, NULL));
    assert_true(kg_throttle_take(t, "::1", 0, NULL));
    kg_throttle_free(t);
}

static void
test_peek_tells_without_counting(void **state)
{
    struct kg_throttle *t = new_throttle(2, MINUTE_MS, 64);
    int64_t retry = 0;

    (void)state;
    for (int i = 0; i < 10; i++)
        assert_true(kg_throttle_peek(t, "a", 0, NULL));
    assert_true(kg_throttle_take(t, "a", 0, NULL));
    assert_true(kg_throttle_take(t, "a", 0, NULL));
    assert_false(kg_throttle_peek(t, "a", 0, &retry));
    assert_int_equal(retry, 30000);
    kg_throttle_free(t);
}

static void
test_a_full_recovery_forgets_the_past(void **state)
{
    struct kg_throttle *t = new_throttle(5, MINUTE_MS, 64);

    (void)state;
    for (int i = 0; i < 5; i++)
        assert_true(kg_throttle_take(t, "a", 0, NULL));
    for (int i = 0; i < 5; i++)
        assert_true(kg_throttle_take(t, "a", 10 * MINUTE_MS, NULL));
    assert_false(kg_throttle_take(t, "a", 10 * MINUTE_MS, NULL));
    kg_throttle_free(t);
}

static void
test_a_clock_going_backwards_never_grants_more(void **state)
{
    struct kg_throttle *t = new_throttle(2, MINUTE_MS, 64);

    (void)state;
    assert_true(kg_throttle_take(t, "a", 100000, NULL));
    assert_true(kg_throttle_take(t, "a", 100000, NULL));
    assert_false(kg_throttle_take(t, "a", 50000, NULL));
    assert_false(kg_throttle_take(t, "a", 100000, NULL));
    kg_throttle_free(t);
}

static void
test_a_table_full_of_other_clients_evicts_and_stays_bounded(void **state)
{
    /* Room for 8 clients (one set): a flood of new clients must neither
     * fail nor grow the table, and the limiter keeps working afterwards. */
    struct kg_throttle *t = new_throttle(1, MINUTE_MS, 8);
    char name[32];

    (void)state;
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof(name), "198.51.100.%d/%d", i % 256, i);
        assert_true(kg_throttle_take(t, name, i, NULL));
    }
    assert_true(kg_throttle_take(t, "victim", 20000, NULL));
    assert_false(kg_throttle_take(t, "victim", 20000, NULL));
    kg_throttle_free(t);
}

static void
test_eviction_prefers_clients_that_have_recovered(void **state)
{
    /* One set of 8: 7 idle clients that recovered long ago and one busy one.
     * Newcomers must take the recovered slots, not the busy client's. */
    struct kg_throttle *t = new_throttle(1, MINUTE_MS, 8);
    char name[32];

    (void)state;
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof(name), "idle-%d", i);
        assert_true(kg_throttle_take(t, name, 0, NULL));
    }
    assert_true(kg_throttle_take(t, "busy", 10 * MINUTE_MS, NULL));
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof(name), "new-%d", i);
        assert_true(kg_throttle_take(t, name, 10 * MINUTE_MS, NULL));
    }
    assert_false(kg_throttle_take(t, "busy", 10 * MINUTE_MS, NULL));
    kg_throttle_free(t);
}

static void
test_bad_parameters_are_refused(void **state)
{
    struct kg_throttle *t = NULL;
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(kg_throttle_new(0, 1000, 8, &t, &err), KG_EINVAL);
    assert_null(t);
    assert_int_equal(kg_throttle_new(5, 0, 8, &t, &err), KG_EINVAL);
    assert_int_equal(kg_throttle_new(5, 1000, 0, &t, &err), KG_EINVAL);
    kg_throttle_free(NULL);
}

static void
test_retry_after_is_whole_seconds_rounded_up(void **state)
{
    (void)state;
    assert_int_equal(kg_throttle_retry_after_s(0), 1);
    assert_int_equal(kg_throttle_retry_after_s(1), 1);
    assert_int_equal(kg_throttle_retry_after_s(1000), 1);
    assert_int_equal(kg_throttle_retry_after_s(1001), 2);
    assert_int_equal(kg_throttle_retry_after_s(12000), 12);
}

struct hammer {
    struct kg_throttle *t;
    int allowed;
};

static void *
hammer_main(void *arg)
{
    struct hammer *h = arg;

    for (int i = 0; i < 1000; i++) {
        if (kg_throttle_take(h->t, "shared", 0, NULL))
            h->allowed++;
    }
    return NULL;
}

static void
test_threads_sharing_a_client_never_get_more_than_the_limit(void **state)
{
    struct kg_throttle *t = new_throttle(50, MINUTE_MS, 1024);
    struct hammer hs[8];
    pthread_t th[8];
    int total = 0;

    (void)state;
    for (int i = 0; i < 8; i++) {
        hs[i] = (struct hammer){.t = t};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &hs[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += hs[i].allowed;
    }
    assert_int_equal(total, 50);
    kg_throttle_free(t);
}

static void
test_the_failure_that_uses_up_the_allowance_starts_the_cool_down(void **state)
{
    struct kg_throttle *fails = new_throttle(3, 60000, 64), *cool = new_throttle(1, 2000, 64);
    int64_t retry = 0;

    (void)state;
    kg_throttle_fail(fails, cool, "192.0.2.1", 1000);
    kg_throttle_fail(fails, cool, "192.0.2.1", 1000);
    assert_false(kg_throttle_cooling(cool, "192.0.2.1", 1000, &retry));
    kg_throttle_fail(fails, cool, "192.0.2.1", 1000); /* the third of three */
    assert_true(kg_throttle_cooling(cool, "192.0.2.1", 1000, &retry));
    assert_int_equal(retry, 2000);
    /* Another client is untouched; the cool-down ends on time. */
    assert_false(kg_throttle_cooling(cool, "192.0.2.2", 1000, &retry));
    assert_false(kg_throttle_cooling(cool, "192.0.2.1", 3000, &retry));
    /* Off: nothing counts, nobody cools down. */
    kg_throttle_fail(NULL, NULL, "192.0.2.1", 1000);
    assert_false(kg_throttle_cooling(NULL, "192.0.2.1", 1000, &retry));
    kg_throttle_free(fails);
    kg_throttle_free(cool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_five_per_minute_allows_a_burst_of_five_then_refuses_the_sixth),
        cmocka_unit_test(test_a_refused_request_is_not_counted),
        cmocka_unit_test(test_the_boundary_is_exact_to_the_millisecond),
        cmocka_unit_test(test_an_uneven_interval_rounds_the_wait_up),
        cmocka_unit_test(test_clients_are_counted_separately),
        cmocka_unit_test(test_peek_tells_without_counting),
        cmocka_unit_test(test_a_full_recovery_forgets_the_past),
        cmocka_unit_test(test_a_clock_going_backwards_never_grants_more),
        cmocka_unit_test(test_a_table_full_of_other_clients_evicts_and_stays_bounded),
        cmocka_unit_test(test_eviction_prefers_clients_that_have_recovered),
        cmocka_unit_test(test_bad_parameters_are_refused),
        cmocka_unit_test(test_retry_after_is_whole_seconds_rounded_up),
        cmocka_unit_test(test_threads_sharing_a_client_never_get_more_than_the_limit),
        cmocka_unit_test(test_the_failure_that_uses_up_the_allowance_starts_the_cool_down),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
