/* tests/integration/test_ratelimit.c - per-key and tier rate limits on a
 * running daemon in front of a stub upstream.
 *
 * Two daemons: one answering in the detail style with standard headers,
 * one in the error style with ratelimit_headers legacy. Exact counts use
 * limits that refill slowly (per minute), so a slow machine cannot let an
 * extra request through; the 5/s key allows for the clock: any 200 beyond
 * the burst must be paid for by time that really passed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define DETAIL_429 "{\"detail\": \"Rate limit exceeded.\"}"
#define ERROR_429                                                                                  \
    "{\"error\": {\"type\": \"rate_limit_error\", \"message\": \"Rate limit exceeded\"}}"

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;       /* detail style, standard headers */
    struct kt_daemon *gwe;      /* error style, legacy headers */
    struct kt_key fast;         /* gw: --rate 5/s --burst 5 */
    struct kt_key slow;         /* gw: --rate 5/min --burst 5 */
    struct kt_key plain;        /* gw: no rate: rate_limit_default */
    struct kt_key pro_a, pro_b; /* gw: two keys of alice (tier pro), no rate of their own */
    struct kt_key strict;       /* gw: bob (tier pro), --rate 2/min --burst 2 */
    struct kt_key loose;        /* gw: carol (tier pro), --rate 100/min */
    struct kt_key e_slow;       /* gwe: --rate 5/min --burst 5 */
};

static struct world W;
static struct kt_http_resp R;

static int
free_slots(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    return 0;
}

static bool
cli_ok(struct kt_daemon *d, const char *const *args)
{
    struct kt_cli_result r;
    bool ok = kt_daemon_cli(d, &r, args) && r.exit_code == 0;

    if (!ok)
        fprintf(stderr, "cli failed: %s\n", r.err != NULL ? r.err : "");
    kt_cli_result_cleanup(&r);
    return ok;
}

static bool
make_key(struct kt_daemon *d, const char *name, const char *user, const char *rate,
         const char *burst, struct kt_key *out)
{
    const char *args[16] = {"keys", "create", "--name", name};
    size_t n = 4;

    if (user != NULL) {
        args[n++] = "--user";
        args[n++] = user;
    }
    if (rate != NULL) {
        args[n++] = "--rate";
        args[n++] = rate;
    }
    if (burst != NULL) {
        args[n++] = "--burst";
        args[n++] = burst;
    }
    args[n++] = "--json";
    args[n] = NULL;
    return kt_daemon_key_cli(d, args, out);
}

static int teardown(void **state);

static int
setup(void **state)
{
    char cfg[1024];
    const char *alice[] = {"users", "create", "--username", "alice", "--tier", "pro", NULL};
    const char *bob[] = {"users", "create", "--username", "bob", "--tier", "pro", NULL};
    const char *carol[] = {"users", "create", "--username", "carol", "--tier", "pro", NULL};

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\nrate_limit_default 3/min burst 3\ntier pro rate 4/min burst 4\n",
             kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\nerror_style error\nratelimit_headers legacy\n",
             kt_upstream_url(W.up));
    W.gwe = kt_daemon_new(cfg);
    if (W.gw == NULL || W.gwe == NULL)
        goto fail;
    if (!cli_ok(W.gw, alice) || !cli_ok(W.gw, bob) || !cli_ok(W.gw, carol) ||
        !make_key(W.gw, "fast", NULL, "5/s", "5", &W.fast) ||
        !make_key(W.gw, "slow", NULL, "5/min", "5", &W.slow) ||
        !make_key(W.gw, "plain", NULL, NULL, NULL, &W.plain) ||
        !make_key(W.gw, "pro-a", "alice", NULL, NULL, &W.pro_a) ||
        !make_key(W.gw, "pro-b", "alice", NULL, NULL, &W.pro_b) ||
        !make_key(W.gw, "strict", "bob", "2/min", "2", &W.strict) ||
        !make_key(W.gw, "loose", "carol", "100/min", NULL, &W.loose) ||
        !make_key(W.gwe, "slow", NULL, "5/min", "5", &W.e_slow))
        goto fail;
    if (!kt_daemon_start(W.gw) || !kt_daemon_start(W.gwe))
        goto fail;
    return 0;

fail:
    teardown(state);
    return -1;
}

static int
teardown(void **state)
{
    struct kt_key *keys[] = {&W.fast,  &W.slow,   &W.plain, &W.pro_a,
                             &W.pro_b, &W.strict, &W.loose, &W.e_slow};

    (void)state;
    kt_daemon_free(W.gw);
    kt_daemon_free(W.gwe);
    kt_upstream_stop(W.up);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        kt_key_cleanup(keys[i]);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

/* GET /v1/things with key into R (cleaned first); returns the status. */
static long
get(struct kt_daemon *d, const struct kt_key *key)
{
    char auth[512];
    const char *hdrs[] = {auth, NULL};

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key->key);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_get(kt_daemon_url(d, "/v1/things"), hdrs, &R));
    return R.status;
}

static void
assert_header(const char *name, const char *want)
{
    char buf[256];
    const char *got = kt_http_header_buf(&R, name, buf, sizeof(buf));

    if (got == NULL || strcmp(got, want) != 0)
        fail_msg("%s: want \"%s\", got \"%s\"", name, want, got != NULL ? got : "(absent)");
}

static long
header_long(const char *name)
{
    char buf[64];
    const char *got = kt_http_header_buf(&R, name, buf, sizeof(buf));

    if (got == NULL)
        fail_msg("%s is missing", name);
    return strtol(got, NULL, 10);
}

static double
mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
test_a_5_per_second_key_gets_5_then_429_and_passes_again_after_retry_after(void **state)
{
    double start = mono_s(), elapsed;
    long retry;
    int extra = 0, i;

    (void)state;
    for (i = 0; i < 5; i++) {
        assert_int_equal(get(W.gw, &W.fast), 200);
        assert_header("RateLimit-Policy", "\"key\";q=5;w=1");
    }
    /* The first 5 are the burst. Anything after them passes only if time
     * refilled the bucket: at most 5 a second of what really elapsed. */
    for (i = 0; i < 100 && get(W.gw, &W.fast) == 200; i++)
        extra++;
    elapsed = mono_s() - start;
    assert_int_equal(R.status, 429);
    assert_true(extra <= (int)(elapsed * 5) + 1);
    assert_string_equal(R.body, DETAIL_429);
    retry = header_long("Retry-After");
    assert_true(retry >= 1);
    assert_header("RateLimit-Policy", "\"key\";q=5;w=1");
    assert_header("RateLimit", "\"key\";r=0;t=1");
    assert_int_equal(kt_http_header_count(&R, "X-RateLimit-Limit"), 0);
    /* Retry-After is honoured: after waiting it, the next request passes. */
    sleep((unsigned)retry);
    assert_int_equal(get(W.gw, &W.fast), 200);
}

static void
test_a_5_per_minute_key_gets_exactly_5_and_a_retry_after_of_12(void **state)
{
    (void)state;
    assert_int_equal(get(W.gw, &W.slow), 200);
    assert_header("RateLimit-Policy", "\"key\";q=5;w=60");
    assert_header("RateLimit", "\"key\";r=4;t=12");
    for (int i = 0; i < 4; i++)
        assert_int_equal(get(W.gw, &W.slow), 200);
    assert_int_equal(get(W.gw, &W.slow), 429);
    assert_string_equal(R.body, DETAIL_429);
    /* One request comes back every 12 s: the wait is to the bucket, not a window. */
    assert_true(header_long("Retry-After") >= 8 && header_long("Retry-After") <= 12);
}

static void
test_the_error_style_answers_429_with_rate_limit_error_and_legacy_headers(void **state)
{
    (void)state;
    assert_int_equal(get(W.gwe, &W.e_slow), 200);
    assert_header("RateLimit-Policy", "\"key\";q=5;w=60");
    assert_header("X-RateLimit-Limit", "5");
    assert_header("X-RateLimit-Remaining", "4");
    assert_header("X-RateLimit-Reset", "12");
    for (int i = 0; i < 4; i++)
        assert_int_equal(get(W.gwe, &W.e_slow), 200);
    assert_int_equal(get(W.gwe, &W.e_slow), 429);
    assert_string_equal(R.body, ERROR_429);
    assert_true(header_long("Retry-After") >= 8 && header_long("Retry-After") <= 12);
    assert_header("X-RateLimit-Remaining", "0");
    assert_header("Content-Type", "application/json");
}

static void
test_the_default_rate_applies_to_a_key_without_one(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(get(W.gw, &W.plain), 200);
        assert_header("RateLimit-Policy", "\"default\";q=3;w=60");
    }
    assert_int_equal(get(W.gw, &W.plain), 429);
    assert_true(header_long("Retry-After") >= 16 && header_long("Retry-After") <= 20);
}

static void
test_two_keys_of_one_user_share_the_tier_bucket(void **state)
{
    (void)state;
    assert_int_equal(get(W.gw, &W.pro_a), 200);
    assert_header("RateLimit-Policy", "\"default\";q=3;w=60, \"tier-pro\";q=4;w=60");
    assert_int_equal(get(W.gw, &W.pro_a), 200);
    assert_int_equal(get(W.gw, &W.pro_b), 200);
    assert_int_equal(get(W.gw, &W.pro_b), 200);
    /* r is exact; t (until full) is 40 s and 60 s less the time these took. */
    {
        char buf[256];
        const char *v = kt_http_header_buf(&R, "RateLimit", buf, sizeof(buf));
        int t_key = 0, t_tier = 0;

        assert_non_null(v);
        assert_int_equal(sscanf(v, "\"default\";r=1;t=%d, \"tier-pro\";r=0;t=%d", &t_key, &t_tier),
                         2);
        assert_true(t_key >= 35 && t_key <= 40);
        assert_true(t_tier >= 55 && t_tier <= 60);
    }
    /* Each key has spent 2 of its own 3, but the user's tier is spent. */
    assert_int_equal(get(W.gw, &W.pro_a), 429);
    assert_true(header_long("Retry-After") >= 11 && header_long("Retry-After") <= 15);
    assert_int_equal(get(W.gw, &W.pro_b), 429);
}

static void
test_the_stricter_of_key_and_tier_decides(void **state)
{
    (void)state;
    /* bob's key (2/min) is stricter than his tier (4/min). */
    assert_int_equal(get(W.gw, &W.strict), 200);
    assert_int_equal(get(W.gw, &W.strict), 200);
    assert_int_equal(get(W.gw, &W.strict), 429);
    assert_true(header_long("Retry-After") >= 26 && header_long("Retry-After") <= 30);
    /* carol's key (100/min) is looser than her tier (4/min). */
    for (int i = 0; i < 4; i++)
        assert_int_equal(get(W.gw, &W.loose), 200);
    assert_int_equal(get(W.gw, &W.loose), 429);
    assert_true(header_long("Retry-After") >= 11 && header_long("Retry-After") <= 15);
    assert_header("RateLimit-Policy", "\"key\";q=100;w=60, \"tier-pro\";q=4;w=60");
}

static void
test_invalid_keys_get_no_rate_limit_headers(void **state)
{
    struct kt_key bogus = {.key = "kg_not_a_key"};

    (void)state;
    assert_int_equal(get(W.gw, &bogus), 401);
    assert_int_equal(kt_http_header_count(&R, "RateLimit"), 0);
    assert_int_equal(kt_http_header_count(&R, "RateLimit-Policy"), 0);
}

static void
test_both_daemons_stop_cleanly(void **state)
{
    (void)state;
    assert_int_equal(kt_daemon_stop(W.gw), 0);
    assert_int_equal(kt_daemon_stop(W.gwe), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_a_5_per_second_key_gets_5_then_429_and_passes_again_after_retry_after, free_slots),
        cmocka_unit_test_teardown(test_a_5_per_minute_key_gets_exactly_5_and_a_retry_after_of_12,
                                  free_slots),
        cmocka_unit_test_teardown(
            test_the_error_style_answers_429_with_rate_limit_error_and_legacy_headers, free_slots),
        cmocka_unit_test_teardown(test_the_default_rate_applies_to_a_key_without_one, free_slots),
        cmocka_unit_test_teardown(test_two_keys_of_one_user_share_the_tier_bucket, free_slots),
        cmocka_unit_test_teardown(test_the_stricter_of_key_and_tier_decides, free_slots),
        cmocka_unit_test_teardown(test_invalid_keys_get_no_rate_limit_headers, free_slots),
        cmocka_unit_test_teardown(test_both_daemons_stop_cleanly, free_slots),
    };

    return cmocka_run_group_tests_name("integration_test_ratelimit", tests, setup, teardown);
}
