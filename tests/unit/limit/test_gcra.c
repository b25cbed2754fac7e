/* tests/unit/limit/test_gcra.c - src/limit/gcra.c through keygate/gcra.h.
 *
 * Pure arithmetic: the test keeps the TAT and steps the clock by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "keygate/gcra.h"

#define S 1000000LL /* microseconds */

static struct kg_gcra
make(int64_t count, int64_t period_s, int64_t burst)
{
    struct kg_gcra g;
    struct kg_err err = {{0}};

    assert_int_equal(kg_gcra_init(&g, count, period_s, burst, &err), KG_OK);
    return g;
}

/* Takes n requests at now; returns how many passed. */
static int
take_n(const struct kg_gcra *g, int64_t *tat, int64_t now, int n)
{
    struct kg_gcra_result r;
    int ok = 0;

    for (int i = 0; i < n; i++) {
        *tat = kg_gcra_take(g, *tat, now, &r);
        ok += r.allowed;
    }
    return ok;
}

static void
test_a_full_bucket_allows_exactly_the_burst_then_refuses(void **state)
{
    struct kg_gcra g = make(5, 1, 5);
    struct kg_gcra_result r;
    int64_t tat = 0;

    (void)state;
    for (int i = 0; i < 5; i++) {
        tat = kg_gcra_take(&g, tat, 10 * S, &r);
        assert_true(r.allowed);
        assert_int_equal(r.limit, 5);
        assert_int_equal(r.remaining, 4 - i);
        assert_int_equal(r.retry_after_us, 0);
    }
    tat = kg_gcra_take(&g, tat, 10 * S, &r);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    /* One request comes back every 200 ms; the bucket is full after 1 s. */
    assert_int_equal(r.retry_after_us, 200000);
    assert_int_equal(r.reset_us, S);
    assert_int_equal(kg_gcra_seconds_up(r.retry_after_us), 1);
}

static void
test_a_refusal_costs_nothing(void **state)
{
    struct kg_gcra g = make(5, 1, 5);
    struct kg_gcra_result r;
    int64_t tat = 0;

    (void)state;
    assert_int_equal(take_n(&g, &tat, 10 * S, 5), 5);
    assert_int_equal(take_n(&g, &tat, 10 * S, 100), 0);
    tat = kg_gcra_take(&g, tat, 10 * S + 200000, &r);
    assert_true(r.allowed);
}

static void
test_the_boundary_is_exact_to_the_microsecond(void **state)
{
    struct kg_gcra g = make(100, 60, 1); /* one every 600 ms, no burst */
    struct kg_gcra_result r;
    int64_t tat = 0;

    (void)state;
    tat = kg_gcra_take(&g, tat, 5 * S, &r);
    assert_true(r.allowed);
    tat = kg_gcra_take(&g, tat, 5 * S + 599999, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 1);
    tat = kg_gcra_take(&g, tat, 5 * S + 600000, &r);
    assert_true(r.allowed);
}

static void
test_the_bucket_refills_one_interval_at_a_time(void **state)
{
    struct kg_gcra g = make(10, 1, 10);
    struct kg_gcra_result r;
    int64_t tat = 0;

    (void)state;
    assert_int_equal(take_n(&g, &tat, 0, 10), 10);
    kg_gcra_peek(&g, tat, 350000, &r); /* 3.5 intervals later */
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 3);
    assert_int_equal(take_n(&g, &tat, 350000, 10), 3);
    /* Long idle: never more than the burst, however long. */
    assert_int_equal(take_n(&g, &tat, 3600 * S, 100), 10);
}

static void
test_no_double_burst_at_a_window_edge(void **state)
{
    struct kg_gcra g = make(60, 60, 60);
    int64_t tat = 0, passed = 0;

    (void)state;
    /* The burst just before a minute boundary and again just after it: a fixed
     * window would allow 120 here; the bucket allows 60 plus what refilled. */
    passed += take_n(&g, &tat, 59 * S + 999000, 60);
    passed += take_n(&g, &tat, 60 * S + 1000, 60);
    assert_int_equal(passed, 60);
    /* Over any span of w seconds, at most burst + w * rate. */
    for (int64_t t = 61 * S; t <= 120 * S; t += 100000)
        passed += take_n(&g, &tat, t, 5);
    assert_true(passed <= 60 + 60 + 1);
}

static void
test_a_clock_stepping_back_grants_nothing_and_does_not_wedge(void **state)
{
    struct kg_gcra g = make(5, 1, 5);
    struct kg_gcra_result r;
    int64_t tat = 0;

    (void)state;
    assert_int_equal(take_n(&g, &tat, 10000 * S, 5), 5);
    /* The clock goes back an hour: the bucket is still empty, not full. */
    assert_int_equal(take_n(&g, &tat, 10000 * S - 3600 * S, 5), 0);
    kg_gcra_peek(&g, tat, 10000 * S - 3600 * S, &r);
    assert_false(r.allowed);
    /* And it refills from the new now, not an hour later. */
    assert_true(r.retry_after_us <= 200000);
    assert_int_equal(take_n(&g, &tat, 10000 * S - 3600 * S + S, 10), 5);
}

static void
test_a_stale_reading_from_another_thread_is_refused_and_credits_nothing(void **state)
{
    struct kg_gcra g = make(1000, 1, 10);
    struct kg_gcra_result r;
    int64_t tat = 0, before;

    (void)state;
    assert_int_equal(take_n(&g, &tat, 50 * S, 10), 10);
    before = tat;
    /* A thread that read the clock 5 ms earlier comes in last. */
    tat = kg_gcra_take(&g, tat, 50 * S - 5000, &r);
    assert_false(r.allowed);
    assert_int_equal(tat, before);
    assert_int_equal(r.retry_after_us, 5000 + 1000);
    assert_int_equal(take_n(&g, &tat, 50 * S, 10), 0);
    assert_int_equal(take_n(&g, &tat, 50 * S + 1000, 10), 1);
}

static void
test_a_refund_gives_back_one_request_and_never_more_than_full(void **state)
{
    struct kg_gcra g = make(5, 1, 5);
    int64_t tat = 0;

    (void)state;
    assert_int_equal(take_n(&g, &tat, 0, 5), 5);
    tat = kg_gcra_refund(&g, tat, 0);
    assert_int_equal(take_n(&g, &tat, 0, 5), 1);
    tat = 0;
    for (int i = 0; i < 10; i++)
        tat = kg_gcra_refund(&g, tat, 50 * S);
    assert_int_equal(take_n(&g, &tat, 50 * S, 10), 5);
}

static void
test_an_inexact_interval_rounds_against_the_client(void **state)
{
    struct kg_gcra g = make(7, 1, 7);
    int64_t tat = 0;

    (void)state;
    assert_int_equal(g.interval_ns, 142857143);
    assert_int_equal(take_n(&g, &tat, 0, 100), 7);
    assert_int_equal(take_n(&g, &tat, S, 100), 6); /* 7 intervals are a hair over 1 s */
    assert_int_equal(take_n(&g, &tat, S + 1, 100), 1);
}

static void
test_rates_parse_per_second_minute_and_hour_only(void **state)
{
    int64_t n = 0, p = 0;

    (void)state;
    assert_true(kg_gcra_parse_rate("5/s", &n, &p));
    assert_int_equal(n, 5);
    assert_int_equal(p, 1);
    assert_true(kg_gcra_parse_rate("100/min", &n, &p));
    assert_int_equal(p, 60);
    assert_true(kg_gcra_parse_rate("1000000000/h", &n, &p));
    assert_int_equal(p, 3600);
    assert_false(kg_gcra_parse_rate("0/s", &n, &p));
    assert_false(kg_gcra_parse_rate("05/s", &n, &p));
    assert_false(kg_gcra_parse_rate("1000000001/s", &n, &p));
    assert_false(kg_gcra_parse_rate("5/d", &n, &p));
    assert_false(kg_gcra_parse_rate("5/", &n, &p));
    assert_false(kg_gcra_parse_rate("5 /s", &n, &p));
    assert_false(kg_gcra_parse_rate("", &n, &p));
}

static void
test_init_refuses_out_of_range_values(void **state)
{
    struct kg_gcra g;
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(kg_gcra_init(&g, 0, 1, 0, &err), KG_EINVAL);
    assert_int_equal(kg_gcra_init(&g, 1, 0, 0, &err), KG_EINVAL);
    assert_int_equal(kg_gcra_init(&g, 1, 1, -1, &err), KG_EINVAL);
    /* Every rate and burst the key store accepts is usable: a burst of
     * centuries is cut, not refused. */
    assert_int_equal(kg_gcra_init(&g, 1, 3600, 1000000000, &err), KG_OK);
    assert_true(g.burst > 100000 && g.burst < 1000000000);
    assert_int_equal(kg_gcra_init(&g, 3, 60, 0, &err), KG_OK);
    assert_int_equal(g.burst, 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_full_bucket_allows_exactly_the_burst_then_refuses),
        cmocka_unit_test(test_a_refusal_costs_nothing),
        cmocka_unit_test(test_the_boundary_is_exact_to_the_microsecond),
        cmocka_unit_test(test_the_bucket_refills_one_interval_at_a_time),
        cmocka_unit_test(test_no_double_burst_at_a_window_edge),
        cmocka_unit_test(test_a_clock_stepping_back_grants_nothing_and_does_not_wedge),
        cmocka_unit_test(test_a_stale_reading_from_another_thread_is_refused_and_credits_nothing),
        cmocka_unit_test(test_a_refund_gives_back_one_request_and_never_more_than_full),
        cmocka_unit_test(test_an_inexact_interval_rounds_against_the_client),
        cmocka_unit_test(test_rates_parse_per_second_minute_and_hour_only),
        cmocka_unit_test(test_init_refuses_out_of_range_values),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
