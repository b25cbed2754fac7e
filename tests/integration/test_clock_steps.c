/* integration/test_clock_steps.c - CTest: integration_test_clock_steps.
 *
 * Issue 16, item 6: the wall clock stepped back and forward under the real
 * daemon. keygate runs under libfaketime (Debian's faketime, preloaded)
 * reading its offset from a file the test rewrites (FAKETIME_NO_CACHE), so
 * the wall clock (CLOCK_REALTIME) jumps while the daemon runs; the
 * monotonic clock is left alone, as NTP leaves it. What the docs promise:
 * expiry is checked per request against the wall clock (so a step forward
 * past it refuses the key with "API key has expired.", a step back lets it
 * through again); rate limits run on CLOCK_MONOTONIC (a step either way
 * neither refills nor empties a bucket, and Retry-After stays within the
 * bucket's period); credits with a daily refill start again in the next
 * UTC day and a step back never makes a refusal wait longer than a day.
 * Every answer comes at once: nothing divides by zero or waits forever.
 * Without libfaketime the test reports itself skipped (77), or fails with
 * KEYGATE_REQUIRE_FAKETIME=1. Loopback only; every wait bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define FAKETIME_LIB "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

static struct {
    struct kt_upstream *up;
    struct kt_daemon *d;
    char offset_file[512];
    struct kt_key expiring, limited, credits;
} W;

/* Sets the daemon's wall clock to real time + offset ("+2h", "-1d", "+0"). */
static void
step(const char *offset)
{
    FILE *f = fopen(W.offset_file, "w");

    assert_non_null(f);
    fprintf(f, "%s\n", offset);
    assert_int_equal(fclose(f), 0);
}

/* GET with the key: the status, and Retry-After (or -1) into *retry. */
static long
get(const struct kt_key *k, long *retry, char *body, size_t cap)
{
    struct kt_http_resp r = {0};
    char ra[32];
    long st;

    kt_http_get_key(kt_daemon_url(W.d, "/v1/items"), k->key, NULL, &r);
    st = r.status;
    if (r.seconds > 2.0)
        fail_msg("an answer took %.2f s after a clock step", r.seconds);
    if (retry != NULL)
        *retry = kt_http_header_buf(&r, "Retry-After", ra, sizeof(ra)) != NULL ? atol(ra) : -1;
    if (body != NULL)
        snprintf(body, cap, "%s", r.body != NULL ? r.body : "");
    kt_http_resp_cleanup(&r);
    return st;
}

static void
test_expiry_follows_the_wall_clock_both_ways(void **state)
{
    char body[256];

    (void)state;
    step("+0");
    assert_int_equal(get(&W.expiring, NULL, NULL, 0), 200);
    step("+2h");
    assert_int_equal(get(&W.expiring, NULL, body, sizeof(body)), 401);
    assert_string_equal(body, "{\"detail\": \"API key has expired.\"}");
    step("-30d"); /* before the key was even made */
    assert_int_equal(get(&W.expiring, NULL, NULL, 0), 200);
    step("+0");
    assert_int_equal(get(&W.expiring, NULL, NULL, 0), 200);
}

static void
test_rate_limits_ignore_wall_clock_steps(void **state)
{
    long retry;

    (void)state;
    step("+0");
    /* 2/min, burst 2: the third request at once is refused. */
    assert_int_equal(get(&W.limited, NULL, NULL, 0), 200);
    assert_int_equal(get(&W.limited, NULL, NULL, 0), 200);
    assert_int_equal(get(&W.limited, &retry, NULL, 0), 429);
    assert_true(retry >= 1 && retry <= 60);
    /* An hour forward on the wall: the monotonic bucket is still empty. */
    step("+1h");
    assert_int_equal(get(&W.limited, &retry, NULL, 0), 429);
    assert_true(retry >= 1 && retry <= 60);
    /* A day back: still refused, and never told to wait longer than the period. */
    step("-1d");
    assert_int_equal(get(&W.limited, &retry, NULL, 0), 429);
    assert_true(retry >= 1 && retry <= 60);
    step("+0");
}

/* Seconds from the daemon's wall clock (real + offset_s) to the next UTC midnight. */
static long
to_midnight(long offset_s)
{
    long now = (long)time(NULL) + offset_s;

    return 86400 - now % 86400;
}

static void
test_daily_credits_refill_in_the_next_utc_day_and_never_wait_past_a_day(void **state)
{
    long retry;

    (void)state;
    step("+0");
    assert_int_equal(get(&W.credits, NULL, NULL, 0), 200);
    assert_int_equal(get(&W.credits, NULL, NULL, 0), 200);
    assert_int_equal(get(&W.credits, &retry, NULL, 0), 429);
    if (retry < 1 || retry > to_midnight(0) + 2)
        fail_msg("Retry-After %ld with %ld s to midnight", retry, to_midnight(0));
    /* Tomorrow: the two credits are there again. Charges are written once a
     * second, in the period the write finds (docs/architecture.md: "charges
     * made in the last second of a period may land in the next one"), so
     * the step comes after that write. */
    kt_sleep_ms(1500);
    step("+1d");
    assert_int_equal(get(&W.credits, NULL, NULL, 0), 200);
    assert_int_equal(get(&W.credits, NULL, NULL, 0), 200);
    assert_int_equal(get(&W.credits, &retry, NULL, 0), 429);
    if (retry < 1 || retry > to_midnight(86400) + 2)
        fail_msg("Retry-After %ld tomorrow", retry);
    /* Back to today (the flush has written tomorrow's count): refused or
     * not, an answer at once, and a refusal waits at most a day. */
    kt_sleep_ms(1200);
    step("+0");
    for (int i = 0; i < 3; i++) {
        long st = get(&W.credits, &retry, NULL, 0);

        if (st == 429 && (retry < 1 || retry > 86400))
            fail_msg("Retry-After %ld after stepping back a day", retry);
        if (st != 429 && st != 200)
            fail_msg("status %ld after stepping back a day", st);
    }
    /* And years ahead: no overflow, no wait beyond a day. */
    step("+3650d");
    assert_int_equal(get(&W.credits, NULL, NULL, 0), 200);
    step("+0");
}

static int
setup(void **state)
{
    char cfg[256];

    (void)state;
    if (access(FAKETIME_LIB, R_OK) != 0) {
        const char *req = getenv("KEYGATE_REQUIRE_FAKETIME");

        if (req != NULL && strcmp(req, "1") == 0) {
            fprintf(stderr, "FAILED: %s missing (KEYGATE_REQUIRE_FAKETIME=1)\n", FAKETIME_LIB);
            exit(1);
        }
        printf("SKIPPED: clock steps: %s missing (Debian libfaketime)\n", FAKETIME_LIB);
        exit(77);
    }
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg), "upstream %s\n", kt_upstream_url(W.up));
    W.d = kt_daemon_new(cfg);
    if (W.d == NULL || !kt_daemon_create_key(W.d, "expiring", NULL, "1h", &W.expiring) ||
        !kt_daemon_key_cli(W.d,
                           (const char *const[]){"keys", "create", "--name", "limited", "--rate",
                                                 "2/min", "--burst", "2", "--json", NULL},
                           &W.limited) ||
        !kt_daemon_key_cli(W.d,
                           (const char *const[]){"keys", "create", "--name", "credits", "--credits",
                                                 "2", "--refill", "day", "--json", NULL},
                           &W.credits))
        return -1;
    snprintf(W.offset_file, sizeof(W.offset_file), "%s/faketime", kt_daemon_dir(W.d));
    step("+0");
    /* Only the daemon runs under libfaketime: the CLI above and this
     * process keep the real clock. The monotonic clock is not faked. */
    setenv("LD_PRELOAD", FAKETIME_LIB, 1);
    setenv("FAKETIME_TIMESTAMP_FILE", W.offset_file, 1);
    setenv("FAKETIME_NO_CACHE", "1", 1);
    setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1", 1);
    {
        bool ok = kt_daemon_start(W.d);

        unsetenv("LD_PRELOAD");
        unsetenv("FAKETIME_TIMESTAMP_FILE");
        unsetenv("FAKETIME_NO_CACHE");
        unsetenv("FAKETIME_DONT_FAKE_MONOTONIC");
        return ok ? 0 : -1;
    }
}

static int
teardown(void **state)
{
    (void)state;
    if (W.d != NULL && kt_daemon_stop(W.d) != 0)
        fprintf(stderr, "keygate did not stop cleanly\n");
    kt_daemon_free(W.d);
    kt_key_cleanup(&W.expiring);
    kt_key_cleanup(&W.limited);
    kt_key_cleanup(&W.credits);
    kt_upstream_stop(W.up);
    kt_http_global_cleanup();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expiry_follows_the_wall_clock_both_ways),
        cmocka_unit_test(test_rate_limits_ignore_wall_clock_steps),
        cmocka_unit_test(test_daily_credits_refill_in_the_next_utc_day_and_never_wait_past_a_day),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
