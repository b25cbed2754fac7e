/* tests/unit/util/test_timeutil.c - src/util/timeutil.c through
 * keygate/timeutil.h. Expected Unix times were computed once with Python's
 * calendar.timegm. Nothing here reads the clock except the checks that the
 * clocks move the right way; expiry takes "now" as an argument. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "keygate/timeutil.h"

#define NOW 1800000000 /* 2027-01-15T08:00:00Z */
#define DAY 86400

static void
assert_time(const char *s, int64_t want)
{
    struct kg_err err = {{0}};
    int64_t got = -1;
    enum kg_status rc = kg_time_parse_rfc3339(s, &got, &err);

    if (rc != KG_OK)
        fail_msg("\"%s\" should parse, got %s: %s", s, kg_status_str(rc), err.msg);
    if (got != want)
        fail_msg("\"%s\" should be %lld, got %lld", s, (long long)want, (long long)got);
}

static void
assert_bad_time(const char *s)
{
    struct kg_err err = {{0}};
    int64_t got = 12345;
    enum kg_status rc = kg_time_parse_rfc3339(s, &got, &err);

    if (rc != KG_EINVAL)
        fail_msg("\"%s\" should be refused with KG_EINVAL, got %s (%lld)", s, kg_status_str(rc),
                 (long long)got);
    assert_true(err.msg[0] != '\0');
}

static void
assert_duration(const char *s, int64_t want)
{
    struct kg_err err = {{0}};
    int64_t got = -1;
    enum kg_status rc = kg_time_parse_duration(s, &got, &err);

    if (rc != KG_OK)
        fail_msg("\"%s\" should parse, got %s: %s", s, kg_status_str(rc), err.msg);
    if (got != want)
        fail_msg("\"%s\" should be %lld s, got %lld", s, (long long)want, (long long)got);
}

static void
assert_bad_duration(const char *s)
{
    struct kg_err err = {{0}};
    int64_t got = 12345;
    enum kg_status rc = kg_time_parse_duration(s, &got, &err);

    if (rc != KG_EINVAL)
        fail_msg("duration \"%s\" should be refused with KG_EINVAL, got %s (%lld)", s,
                 kg_status_str(rc), (long long)got);
    assert_true(err.msg[0] != '\0');
}

static void
test_rfc3339_with_z_parses(void **state)
{
    (void)state;
    assert_time("2026-12-01T00:00:00Z", 1796083200);
    assert_time("2026-12-31T23:59:59Z", 1798761599);
    assert_time("2027-01-15T08:00:00Z", NOW);
    assert_time("2038-01-19T03:14:08Z", 2147483648LL); /* past 32-bit time_t */
    /* Lower-case t and z, and a space for T, as RFC 3339 5.6 allows. */
    assert_time("2027-01-15t08:00:00z", NOW);
    assert_time("2027-01-15 08:00:00Z", NOW);
}

static void
test_rfc3339_offsets_are_applied(void **state)
{
    (void)state;
    assert_time("2027-01-15T10:00:00+02:00", NOW);
    assert_time("2027-01-15T02:30:00-05:30", NOW);
    assert_time("2027-01-15T08:00:00+00:00", NOW);
    assert_time("2027-01-15T08:00:00-00:00", NOW);
    /* Across midnight and a month end. */
    assert_time("2026-12-01T01:00:00+01:00", 1796083200);
    assert_time("2026-11-30T23:00:00-01:00", 1796083200);
}

static void
test_rfc3339_fractions_are_ignored(void **state)
{
    (void)state;
    assert_time("2027-01-15T08:00:00.5Z", NOW);
    assert_time("2027-01-15T08:00:00.999999999Z", NOW);
    assert_time("2027-01-15T10:00:00.123+02:00", NOW);
}

static void
test_plain_dates_are_midnight_utc(void **state)
{
    (void)state;
    assert_time("2026-12-01", 1796083200);
    assert_time("2027-01-15", NOW - 8 * 3600);
}

static void
test_leap_days_parse_only_in_leap_years(void **state)
{
    (void)state;
    assert_time("2024-02-29", 1709164800);
    assert_time("2024-02-29T00:00:00Z", 1709164800);
    assert_time("2000-02-29T12:34:56Z", 951827696); /* divisible by 400 */
    assert_bad_time("2023-02-29");
    assert_bad_time("2100-02-29"); /* divisible by 100, not 400 */
    assert_bad_time("2026-02-29T00:00:00Z");
}

static void
test_a_leap_second_is_accepted(void **state)
{
    (void)state;
    assert_time("2016-12-31T23:59:60Z", 1483228800);
}

static void
test_invalid_dates_are_refused(void **state)
{
    static const char *const bad[] = {
        "2026-02-30", "2026-02-31", "2026-04-31", "2026-06-31", "2026-09-31", "2026-11-31",
        "2026-13-01", "2026-00-10", "2026-01-00", "2026-01-32", "1969-12-31",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_bad_time(bad[i]);
    assert_time("2026-01-31", 1769817600);
    assert_time("2026-04-30", 1777507200);
}

static void
test_malformed_times_are_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "2026",
        "2026-1-01",
        "26-01-01",
        "2026/01/01",
        "2026-01-01T",
        "2026-01-01X10:00:00Z",
        "2026-01-01T25:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T10:60:00Z",
        "2026-01-01T10:00:61Z",
        "2026-01-01T10:00:00",
        "2026-01-01T10:00Z",
        "2026-01-01T1:00:00Z",
        "2026-01-01T10:00:00.Z",
        "2026-01-01T10:00:00.5",
        "2026-01-01T10:00:00+2:00",
        "2026-01-01T10:00:00+0200",
        "2026-01-01T10:00:00+24:00",
        "2026-01-01T10:00:00+01:60",
        "2026-01-01T10:00:00Zjunk",
        "2026-01-01T10:00:00Z ",
        "2026-01-01 ",
        " 2026-01-01",
        "2026-01-01junk",
        "tomorrow",
        "30d",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_bad_time(bad[i]);
}

static void
test_format_writes_rfc3339_utc(void **state)
{
    char buf[KG_RFC3339_MAX];

    (void)state;
    assert_string_equal(kg_time_format(NOW, buf), "2027-01-15T08:00:00Z");
    assert_ptr_equal(kg_time_format(NOW, buf), buf);
    assert_string_equal(kg_time_format(1709164800, buf), "2024-02-29T00:00:00Z");
    assert_string_equal(kg_time_format(2147483648LL, buf), "2038-01-19T03:14:08Z");
}

static void
test_format_of_zero_is_empty(void **state)
{
    char buf[KG_RFC3339_MAX];

    (void)state;
    memset(buf, 'X', sizeof(buf));
    assert_string_equal(kg_time_format(0, buf), "");
}

static void
test_format_and_parse_round_trip(void **state)
{
    static const int64_t times[] = {
        1,   951827696,  1709164800,   1796083200,   1798761599,
        NOW, 2147483647, 2147483648LL, 4102444800LL, /* 2100-01-01 */
    };
    char buf[KG_RFC3339_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        kg_time_format(times[i], buf);
        assert_time(buf, times[i]);
    }
    /* And every second of a leap day's last minute. */
    for (int64_t t = 1709251140; t < 1709251200 + 2; t++) {
        kg_time_format(t, buf);
        assert_time(buf, t);
    }
}

/* Found by fuzzing (tests/fuzz/corpus/time/regress-year-10000): a leap
 * second or an offset carried 9999-12-31 into year 10000, which
 * kg_time_format() writes as "10000-01-01T00:00:00Z" and the parser then
 * refuses, so an expiry the API accepted did not read back. */
static void
test_times_past_year_9999_are_refused(void **state)
{
    struct kg_err err = {{0}};
    char buf[KG_RFC3339_MAX];
    int64_t t = 0;

    (void)state;
    assert_time("9999-12-31T23:59:59Z", KG_TIME_MAX);
    assert_string_equal(kg_time_format(KG_TIME_MAX, buf), "9999-12-31T23:59:59Z");
    assert_int_equal(kg_time_parse_rfc3339("9999-12-31T23:59:60Z", &t, &err), KG_EINVAL);
    assert_int_equal(kg_time_parse_rfc3339("9999-12-31T23:59:59-00:01", &t, &err), KG_EINVAL);
    assert_int_equal(kg_time_parse_expiry("9999-12-31T23:30:00-01:00", NOW, &t, &err), KG_EINVAL);
    assert_int_equal(t, 0);
}

static void
test_durations_in_every_unit(void **state)
{
    (void)state;
    assert_duration("30d", 30 * DAY);
    assert_duration("90d", 90 * DAY);
    assert_duration("365d", 365 * DAY);
    assert_duration("15m", 15 * 60);
    assert_duration("1w", 7 * DAY);
    assert_duration("2h", 7200);
    assert_duration("45s", 45);
    assert_duration("1s", 1);
    assert_duration("007d", 7 * DAY);
}

static void
test_zero_negative_and_garbage_durations_are_refused(void **state)
{
    static const char *const bad[] = {
        "0d",   "0s",   "00m",  "-1d",   "-30d",        "+30d",   "d",
        "30",   "",     "30x",  "30D",   "30dd",        "30 d",   " 30d",
        "30d ", "1.5d", "1e3s", "0x10s", "thirty days", "30days", "P30D",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_bad_duration(bad[i]);
}

static void
test_overflowing_durations_are_refused(void **state)
{
    (void)state;
    assert_bad_duration("99999999999999999999d");
    assert_bad_duration("9223372036854775807s");
    assert_bad_duration("9223372036854775807w");
    assert_bad_duration("106751991167300d"); /* * 86400 overflows int64 */
    /* Past a century is refused; a century is fine. */
    assert_duration("36500d", 36500LL * DAY);
    assert_bad_duration("36501d");
}

static void
test_expiry_from_a_duration_counts_from_now(void **state)
{
    struct kg_err err = {{0}};
    int64_t t = 0;

    (void)state;
    assert_int_equal(kg_time_parse_expiry("30d", NOW, &t, &err), KG_OK);
    assert_int_equal(t, NOW + 30 * DAY);
    assert_int_equal(kg_time_parse_expiry("90d", NOW, &t, &err), KG_OK);
    assert_int_equal(t, NOW + 90 * DAY);
    assert_int_equal(kg_time_parse_expiry("365d", NOW, &t, &err), KG_OK);
    assert_int_equal(t, NOW + 365 * DAY);
    assert_int_equal(kg_time_parse_expiry("15m", NOW, &t, &err), KG_OK);
    assert_int_equal(t, NOW + 900);
}

static void
test_expiry_from_a_time_in_the_future_is_that_time(void **state)
{
    struct kg_err err = {{0}};
    int64_t t = 0;

    (void)state;
    assert_int_equal(kg_time_parse_expiry("2027-12-01T00:00:00Z", NOW, &t, &err), KG_OK);
    assert_int_equal(t, 1827619200);
    assert_int_equal(kg_time_parse_expiry("2027-12-01", NOW, &t, &err), KG_OK);
    assert_int_equal(t, 1827619200);
    assert_int_equal(kg_time_parse_expiry("2027-01-15T08:00:01Z", NOW, &t, &err), KG_OK);
    assert_int_equal(t, NOW + 1);
}

static void
test_expiry_in_the_past_is_refused(void **state)
{
    static const char *const past[] = {
        "2026-12-01T00:00:00Z",      "2020-01-01",
        "2027-01-15T07:59:59Z",      "2027-01-15T08:00:00Z", /* now itself is not after now */
        "2027-01-15T10:00:00+02:00",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(past) / sizeof(past[0]); i++) {
        struct kg_err err = {{0}};
        int64_t t = 12345;

        if (kg_time_parse_expiry(past[i], NOW, &t, &err) != KG_EINVAL)
            fail_msg("expiry \"%s\" should be refused as in the past", past[i]);
        assert_non_null(strstr(err.msg, "past"));
        assert_int_equal(t, 12345);
    }
}

static void
test_garbage_expiry_is_refused(void **state)
{
    static const char *const bad[] = {
        "", "0d", "-5d", "soon", "30", "2026-02-30", "30dd", "1.5d", "99999999999999999999d",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kg_err err = {{0}};
        int64_t t = 12345;

        if (kg_time_parse_expiry(bad[i], NOW, &t, &err) != KG_EINVAL)
            fail_msg("expiry \"%s\" should be refused with KG_EINVAL", bad[i]);
        assert_true(err.msg[0] != '\0');
        assert_int_equal(t, 12345);
    }
}

static void
test_clocks_move_forward(void **state)
{
    int64_t wall = kg_time_now();
    int64_t ms = kg_time_mono_ms();
    int64_t us = kg_time_mono_us();

    (void)state;
    assert_true(wall > 1700000000); /* after 2023: the clock is set */
    assert_true(kg_time_mono_ms() >= ms);
    assert_true(kg_time_mono_us() >= us);
    /* Both monotonic clocks are the same clock in different units. */
    assert_true(kg_time_mono_us() / 1000 >= ms);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3339_with_z_parses),
        cmocka_unit_test(test_rfc3339_offsets_are_applied),
        cmocka_unit_test(test_rfc3339_fractions_are_ignored),
        cmocka_unit_test(test_plain_dates_are_midnight_utc),
        cmocka_unit_test(test_leap_days_parse_only_in_leap_years),
        cmocka_unit_test(test_a_leap_second_is_accepted),
        cmocka_unit_test(test_invalid_dates_are_refused),
        cmocka_unit_test(test_malformed_times_are_refused),
        cmocka_unit_test(test_format_writes_rfc3339_utc),
        cmocka_unit_test(test_format_of_zero_is_empty),
        cmocka_unit_test(test_format_and_parse_round_trip),
        cmocka_unit_test(test_times_past_year_9999_are_refused),
        cmocka_unit_test(test_durations_in_every_unit),
        cmocka_unit_test(test_zero_negative_and_garbage_durations_are_refused),
        cmocka_unit_test(test_overflowing_durations_are_refused),
        cmocka_unit_test(test_expiry_from_a_duration_counts_from_now),
        cmocka_unit_test(test_expiry_from_a_time_in_the_future_is_that_time),
        cmocka_unit_test(test_expiry_in_the_past_is_refused),
        cmocka_unit_test(test_garbage_expiry_is_refused),
        cmocka_unit_test(test_clocks_move_forward),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
