/* tests/unit/limit/test_quota.c - src/limit/quota.c through
 * keygate/quota.h: refill periods on the UTC calendar, what a stored count
 * and a meter have used, how long a refusal lasts, a flush's commit.
 * Pure arithmetic: the clock is passed by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "keygate/quota.h"

static void
test_refill_periods_start_at_the_utc_day_and_month(void **state)
{
    (void)state;
    /* 2027-01-15T08:00:00Z */
    assert_int_equal(kg_quota_period_start(KG_QUOTA_NONE, 1800000000), 0);
    assert_int_equal(kg_quota_period_start(KG_QUOTA_DAY, 1800000000), 1799971200);
    assert_int_equal(kg_quota_period_start(KG_QUOTA_MONTH, 1800000000), 1798761600);
    /* 2024-02-29T23:59:59Z: a leap day, then the first second of March. */
    assert_int_equal(kg_quota_period_start(KG_QUOTA_MONTH, 1709251199), 1706745600);
    assert_int_equal(kg_quota_period_start(KG_QUOTA_MONTH, 1709251200), 1709251200);
    /* 2026-12-31T12:00:00Z and the epoch. */
    assert_int_equal(kg_quota_period_start(KG_QUOTA_MONTH, 1798718400), 1796083200);
    assert_int_equal(kg_quota_period_start(KG_QUOTA_MONTH, 0), 0);
    assert_int_equal(kg_quota_period_start(KG_QUOTA_DAY, 86399), 0);
}

static void
test_a_stored_count_of_an_ended_refill_period_shows_as_nothing_used(void **state)
{
    /* 2026-11-23T12:00:00Z; the day began at 1795392000, the month at 1793491200. */
    const int64_t now = 1795435200, day = 1795392000, month = 1793491200;

    (void)state;
    assert_int_equal(kg_quota_period_start(KG_QUOTA_DAY, now), day);
    assert_int_equal(kg_quota_period_start(KG_QUOTA_MONTH, now), month);
    /* No refill: the count is the count, whatever its start. */
    assert_int_equal(kg_quota_stored_used("", 7, 0, now), 7);
    /* This period's count stands; an earlier period's is history. */
    assert_int_equal(kg_quota_stored_used("day", 7, day, now), 7);
    assert_int_equal(kg_quota_stored_used("day", 7, day - 86400, now), 0);
    assert_int_equal(kg_quota_stored_used("month", 7, month, now), 7);
    assert_int_equal(kg_quota_stored_used("month", 7, day, now), 7);
    assert_int_equal(kg_quota_stored_used("month", 7, month - 1, now), 0);
    assert_int_equal(kg_quota_stored_used(NULL, 3, 0, now), 3);
}

static void
test_a_meter_counts_the_stored_total_of_this_period_and_what_is_not_flushed(void **state)
{
    /* 2026-11-23T12:00:00Z; the day began at 1795392000. */
    const int64_t now = 1795435200, day = 1795392000;
    struct kg_meter m = {0};

    (void)state;
    atomic_store(&m.stored, 5);
    atomic_store(&m.stored_start, day);
    atomic_store(&m.charged, 3);
    atomic_store(&m.flushed, 1);
    assert_int_equal(kg_quota_used(&m, KG_QUOTA_DAY, now), 5 + 2);
    /* Yesterday's total is history; what was charged and not flushed is not. */
    assert_int_equal(kg_quota_used(&m, KG_QUOTA_DAY, now + 86400), 2);
    /* Without a refill the stored total always counts. */
    assert_int_equal(kg_quota_used(&m, KG_QUOTA_NONE, now + 86400), 7);
}

static void
test_a_commit_adds_to_this_period_or_starts_a_new_one(void **state)
{
    const int64_t day = 1795392000;
    struct kg_meter m = {0};

    (void)state;
    atomic_store(&m.stored, 5);
    atomic_store(&m.stored_start, day);
    atomic_store(&m.charged, 4);
    kg_quota_commit(&m, 4, day, 4);
    assert_int_equal(atomic_load(&m.stored), 9);
    assert_int_equal(atomic_load(&m.flushed), 4);
    assert_int_equal(kg_quota_used(&m, KG_QUOTA_DAY, day + 10), 9);
    /* The next day's first flush starts the total again. */
    atomic_store(&m.charged, 6);
    kg_quota_commit(&m, 2, day + 86400, 6);
    assert_int_equal(atomic_load(&m.stored), 2);
    assert_int_equal(atomic_load(&m.stored_start), day + 86400);
    assert_int_equal(atomic_load(&m.flushed), 6);
    /* Nothing to commit moves nothing. */
    kg_quota_commit(&m, 0, day + 2 * 86400, 9);
    assert_int_equal(atomic_load(&m.stored), 2);
    assert_int_equal(atomic_load(&m.flushed), 6);
}

static void
test_a_refusal_lasts_until_the_last_refusing_limit_refills(void **state)
{
    /* 2026-11-23T12:00:00Z: 12 h to the next day, the month ends on the 30th. */
    const int64_t now = 1795435200;
    int64_t wait = 0;

    (void)state;
    kg_quota_fold_wait(9, 10, KG_QUOTA_DAY, 1, now, &wait);
    assert_int_equal(wait, 0); /* it fits: no wait */
    kg_quota_fold_wait(10, 10, KG_QUOTA_DAY, 1, now, &wait);
    assert_int_equal(wait, 43200);
    kg_quota_fold_wait(10, 10, KG_QUOTA_MONTH, 1, now, &wait);
    assert_int_equal(wait, 43200 + 7 * 86400);
    kg_quota_fold_wait(10, 10, KG_QUOTA_DAY, 1, now, &wait);
    assert_int_equal(wait, 43200 + 7 * 86400); /* the longer stays */
    /* A limit without a refill, or a cost above the limit: never by itself. */
    kg_quota_fold_wait(10, 10, KG_QUOTA_NONE, 1, now, &wait);
    assert_int_equal(wait, -1);
    wait = 0;
    kg_quota_fold_wait(0, 10, KG_QUOTA_DAY, 11, now, &wait);
    assert_int_equal(wait, -1);
    kg_quota_fold_wait(10, 10, KG_QUOTA_DAY, 1, now, &wait);
    assert_int_equal(wait, -1);
}

static void
test_period_names(void **state)
{
    (void)state;
    assert_int_equal(kg_quota_period_of("day"), KG_QUOTA_DAY);
    assert_int_equal(kg_quota_period_of("month"), KG_QUOTA_MONTH);
    assert_int_equal(kg_quota_period_of(""), KG_QUOTA_NONE);
    assert_int_equal(kg_quota_period_of("week"), KG_QUOTA_NONE);
    assert_string_equal(kg_quota_period_name(KG_QUOTA_DAY), "day");
    assert_string_equal(kg_quota_period_name(KG_QUOTA_MONTH), "month");
    assert_string_equal(kg_quota_period_name(KG_QUOTA_NONE), "never");
}

/* quota.threshold: used * 100 >= 80 * limit, exactly, for any size. */
static void
test_thresholds_are_80_and_100_percent_and_unlimited_has_none(void **state)
{
    (void)state;
    assert_int_equal(kg_quota_threshold(7, 10), 0);
    assert_int_equal(kg_quota_threshold(8, 10), 80);
    assert_int_equal(kg_quota_threshold(9, 10), 80);
    assert_int_equal(kg_quota_threshold(10, 10), 100);
    assert_int_equal(kg_quota_threshold(11, 10), 100);
    assert_int_equal(kg_quota_threshold(5, 7), 0);  /* 71 % */
    assert_int_equal(kg_quota_threshold(6, 7), 80); /* 85 % */
    assert_int_equal(kg_quota_threshold(2, 3), 0);  /* 66 % */
    assert_int_equal(kg_quota_threshold(0, 1), 0);
    assert_int_equal(kg_quota_threshold(1, 1), 100);
    for (int64_t limit = 1; limit < 2000; limit++)
        for (int64_t used = limit * 3 / 4; used <= limit + 1; used++)
            assert_int_equal(kg_quota_threshold(used, limit), used >= limit              ? 100
                                                              : used * 100 >= 80 * limit ? 80
                                                                                         : 0);
    assert_int_equal(kg_quota_threshold(INT64_MAX / 5 * 4, INT64_MAX / 5 * 5), 80);
    assert_int_equal(kg_quota_threshold(INT64_MAX / 5 * 4 - 1, INT64_MAX / 5 * 5), 0);
    assert_int_equal(kg_quota_threshold(1000000, -1), 0); /* unlimited */
    assert_int_equal(kg_quota_threshold(1000000, 0), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refill_periods_start_at_the_utc_day_and_month),
        cmocka_unit_test(test_a_stored_count_of_an_ended_refill_period_shows_as_nothing_used),
        cmocka_unit_test(
            test_a_meter_counts_the_stored_total_of_this_period_and_what_is_not_flushed),
        cmocka_unit_test(test_a_commit_adds_to_this_period_or_starts_a_new_one),
        cmocka_unit_test(test_a_refusal_lasts_until_the_last_refusing_limit_refills),
        cmocka_unit_test(test_period_names),
        cmocka_unit_test(test_thresholds_are_80_and_100_percent_and_unlimited_has_none),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
