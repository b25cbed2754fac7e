/* tests/integration/test_throttle.c - the brute-force throttle on a running
 * daemon in front of a stub upstream.
 *
 * Two daemons with `auth_throttle 5/min 6s`: gw trusts 127.0.0.1 as a proxy,
 * so each test plays its own clients through X-Forwarded-For values (the
 * throttle is per client IP, so tests cannot disturb each other); gwu trusts
 * nobody, so every request it gets is from 127.0.0.1 whatever X-Forwarded-For
 * says. gw also has `signup on`: its per-IP limit (5/min) counts the same
 * client IPs. Five failures per minute refill in 12 s each, far longer than any
 * test runs, so a slow machine cannot let an extra failure through; the
 * 6 s cool-down (2 s once: a loaded CI machine took longer than that
 * between a fifth failure and the request that should have been refused)
 * leaves the same margin for the requests made during it. The
 * admin listener throttles its own authentication with the same settings
 * and tables of its own. What counts is what docs/configuration.md says:
 * missing, invalid and expired keys are failures; 403s and 429s (a scope
 * missing, a rate limit, no credits left) are not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define DETAIL_THROTTLED "{\"detail\": \"Too many failed authentication attempts.\"}"
#define ERROR_THROTTLED                                                                            \
    "{\"error\": {\"type\": \"rate_limit_error\", \"message\": \"Too many failed "                 \
    "authentication attempts\"}}"
#define BAD_KEY "kg_0000000000000000000000000000000000000000"
#define COOLDOWN_S 6
#define COOLDOWN_DEADLINE_MS 10000
#define DETAIL_EXPIRED "{\"detail\": \"API key has expired.\"}"
#define DETAIL_NO_ADMIN "{\"detail\": \"API key is missing the required scope admin:all.\"}"
#define DETAIL_QUOTA "{\"detail\": \"Quota exceeded.\"}"
#define EXPIRY_DEADLINE_MS 15000

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;  /* trusted_proxies 127.0.0.1/32, detail style */
    struct kt_daemon *gwu; /* no trusted proxies, error style */
    struct kt_key key;     /* gw */
    struct kt_key ukey;    /* gwu */
    struct kt_key admin;   /* gw: keys:read, for the admin API */
    struct kt_key scoped;  /* gw: read:items only: 403 on /v1/forbidden */
    struct kt_key limited; /* gw: --rate 1/min --burst 1: 429 after one */
    struct kt_key broke;   /* gw: --credits 0: every request 429 quota_exceeded */
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

/* GET path on d as client (an X-Forwarded-For value, or NULL) with key
 * (NULL: no credential) into R; fails the test when no answer came. */
static long
get_path(struct kt_daemon *d, const char *path, const char *client, const char *key)
{
    char xff[128];
    const char *headers[] = {client != NULL ? xff : NULL, NULL};

    if (client != NULL)
        snprintf(xff, sizeof(xff), "X-Forwarded-For: %s", client);
    kt_http_resp_cleanup(&R);
    if (!kt_http_get_key(kt_daemon_url(d, path), key, headers, &R))
        fail_msg("GET %s as %s got no answer", path, client != NULL ? client : "the peer");
    return R.status;
}

/* GET /v1/items: see get_path(). */
static long
get(struct kt_daemon *d, const char *client, const char *key)
{
    return get_path(d, "/v1/items", client, key);
}

/* Five failures from client: three wrong keys and two without any, each 401. */
static void
fail_five_times(struct kt_daemon *d, const char *client)
{
    for (int i = 0; i < 5; i++) {
        long st = get(d, client, i % 2 == 0 ? BAD_KEY : NULL);

        if (st != 401)
            fail_msg("failure %d of client %s should be 401, got %ld", i + 1,
                     client != NULL ? client : "the peer", st);
    }
}

static int
retry_after(void)
{
    char buf[32];
    const char *v = kt_http_header_buf(&R, "Retry-After", buf, sizeof(buf));

    if (v == NULL)
        fail_msg("a throttled answer should carry Retry-After");
    return (int)strtol(v, NULL, 10);
}

static int teardown(void **state);

static int
setup(void **state)
{
    char cfg[1024];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\nauth_throttle 5/min 6s\ntrusted_proxies 127.0.0.1/32\nsignup on\n"
             "route GET /v1/forbidden* admin:all\n",
             kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\nauth_throttle 5/min 6s\nerror_style error\n",
             kt_upstream_url(W.up));
    W.gwu = kt_daemon_new(cfg);
    if (W.gw == NULL || W.gwu == NULL)
        goto fail;
    if (!kt_daemon_create_key(W.gw, "good", NULL, NULL, &W.key) ||
        !kt_daemon_create_key(W.gwu, "good", NULL, NULL, &W.ukey) ||
        !kt_daemon_create_key(W.gw, "admin reader", "keys:read", NULL, &W.admin) ||
        !kt_daemon_create_key(W.gw, "scoped", "read:items", NULL, &W.scoped) ||
        !kt_daemon_key_cli(W.gw,
                           (const char *const[]){"keys", "create", "--name", "limited", "--rate",
                                                 "1/min", "--burst", "1", "--json", NULL},
                           &W.limited) ||
        !kt_daemon_key_cli(W.gw,
                           (const char *const[]){"keys", "create", "--name", "broke", "--credits",
                                                 "0", "--json", NULL},
                           &W.broke))
        goto fail;
    if (!kt_daemon_start(W.gw) || !kt_daemon_start(W.gwu))
        goto fail;
    return 0;

fail:
    teardown(state);
    return -1;
}

static int
teardown(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    kt_daemon_free(W.gw);
    kt_daemon_free(W.gwu);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.key);
    kt_key_cleanup(&W.ukey);
    kt_key_cleanup(&W.admin);
    kt_key_cleanup(&W.scoped);
    kt_key_cleanup(&W.limited);
    kt_key_cleanup(&W.broke);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

static void
test_five_bad_keys_then_even_a_valid_key_gets_429_with_retry_after(void **state)
{
    size_t seen;
    int ra;

    (void)state;
    fail_five_times(W.gw, "198.51.100.1");
    seen = kt_upstream_count(W.up);
    assert_int_equal(get(W.gw, "198.51.100.1", W.key.key), 429);
    assert_string_equal(R.body, DETAIL_THROTTLED);
    ra = retry_after();
    if (ra < COOLDOWN_S - 1 || ra > COOLDOWN_S)
        fail_msg("Retry-After should be the %d s cool-down rounded up, got %d", COOLDOWN_S, ra);
    assert_int_equal(get(W.gw, "198.51.100.1", BAD_KEY), 429);
    assert_int_equal(get(W.gw, "198.51.100.1", NULL), 429);
    assert_int_equal(kt_upstream_count(W.up), seen);
}

/* Each kind of failure reaches the threshold on its own: five requests
 * without a key, five with an invalid key, five with an expired key, each
 * from a client of its own, and that client's valid key is throttled. */
static void
test_missing_invalid_and_expired_keys_each_count_as_failures(void **state)
{
    struct kt_key expiring = {0};
    int64_t deadline;

    (void)state;
    for (int i = 0; i < 5; i++)
        assert_int_equal(get(W.gw, "198.51.100.21", NULL), 401);
    assert_int_equal(get(W.gw, "198.51.100.21", W.key.key), 429);
    assert_string_equal(R.body, DETAIL_THROTTLED);
    for (int i = 0; i < 5; i++)
        assert_int_equal(get(W.gw, "198.51.100.22", BAD_KEY), 401);
    assert_int_equal(get(W.gw, "198.51.100.22", W.key.key), 429);
    assert_string_equal(R.body, DETAIL_THROTTLED);

    /* A key that worked, then expired; its expiry is watched from another
     * client, so the expired client's count is exactly what it sends. */
    if (!kt_daemon_create_key(W.gw, "expiring", NULL, "4s", &expiring))
        fail_msg("keys create --expires 4s should succeed");
    assert_int_equal(get(W.gw, "198.51.100.23", expiring.key), 200);
    deadline = kt_mono_ms() + EXPIRY_DEADLINE_MS;
    while (get(W.gw, "198.51.100.24", expiring.key) == 200 && kt_mono_ms() < deadline)
        kt_sleep_ms(100);
    assert_int_equal(R.status, 401);
    assert_string_equal(R.body, DETAIL_EXPIRED);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(get(W.gw, "198.51.100.23", expiring.key), 401);
        assert_string_equal(R.body, DETAIL_EXPIRED);
    }
    /* Four expired: one short of the threshold, the valid key still passes
     * (and a 200 is no failure); the fifth expired one closes it. */
    assert_int_equal(get(W.gw, "198.51.100.23", W.key.key), 200);
    assert_int_equal(get(W.gw, "198.51.100.23", expiring.key), 401);
    assert_int_equal(get(W.gw, "198.51.100.23", W.key.key), 429);
    assert_string_equal(R.body, DETAIL_THROTTLED);
    kt_key_cleanup(&expiring);
}

/* Refusals of a good key are no guesses: many 403s (scope missing) and
 * 429s (rate limit, no credits) from one client never throttle it. */
static void
test_403s_and_429s_never_count_as_failures(void **state)
{
    (void)state;
    for (int i = 0; i < 12; i++) {
        assert_int_equal(get_path(W.gw, "/v1/forbidden/x", "198.51.100.31", W.scoped.key), 403);
        assert_string_equal(R.body, DETAIL_NO_ADMIN);
    }
    assert_int_equal(get(W.gw, "198.51.100.31", W.limited.key), 200);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(get(W.gw, "198.51.100.31", W.limited.key), 429);
        assert_null(strstr(R.body, "authentication attempts"));
    }
    for (int i = 0; i < 12; i++) {
        assert_int_equal(get(W.gw, "198.51.100.31", W.broke.key), 429);
        assert_string_equal(R.body, DETAIL_QUOTA);
    }
    /* 36 refusals later the client's good key still passes, and one failure
     * short of the threshold is still not throttled. */
    assert_int_equal(get(W.gw, "198.51.100.31", W.key.key), 200);
    for (int i = 0; i < 4; i++)
        assert_int_equal(get(W.gw, "198.51.100.31", BAD_KEY), 401);
    assert_int_equal(get(W.gw, "198.51.100.31", W.scoped.key), 200);
}

static void
test_a_valid_key_from_another_client_is_untouched(void **state)
{
    (void)state;
    fail_five_times(W.gw, "198.51.100.2");
    assert_int_equal(get(W.gw, "198.51.100.2", W.key.key), 429);
    assert_int_equal(get(W.gw, "198.51.100.3", W.key.key), 200);
    /* The trusted proxy itself, with nothing forwarded, is one more client. */
    assert_int_equal(get(W.gw, NULL, W.key.key), 200);
    /* The right-most untrusted hop decides; what the client wrote left of it does not. */
    assert_int_equal(get(W.gw, "198.51.100.2, 198.51.100.3", W.key.key), 200);
    assert_int_equal(get(W.gw, "198.51.100.3, 198.51.100.2", W.key.key), 429);
}

static void
test_after_the_cool_down_the_valid_key_passes_again(void **state)
{
    int64_t start, waited;

    (void)state;
    fail_five_times(W.gw, "198.51.100.4");
    start = kt_mono_ms();
    assert_int_equal(get(W.gw, "198.51.100.4", W.key.key), 429);
    for (;;) {
        waited = kt_mono_ms() - start;
        if (get(W.gw, "198.51.100.4", W.key.key) == 200)
            break;
        assert_int_equal(R.status, 429);
        if (waited > COOLDOWN_DEADLINE_MS)
            fail_msg("the valid key should pass again within %d ms of the %d s cool-down",
                     COOLDOWN_DEADLINE_MS, COOLDOWN_S);
        kt_sleep_ms(100);
    }
    if (waited < (COOLDOWN_S - 1) * 1000)
        fail_msg("the cool-down is %d s, but the valid key passed after %lld ms", COOLDOWN_S,
                 (long long)waited);
}

static void
test_an_untrusted_peers_forwarded_for_does_not_escape_the_throttle(void **state)
{
    char client[32];

    (void)state;
    for (int i = 0; i < 5; i++) {
        snprintf(client, sizeof(client), "203.0.113.%d", i + 1);
        if (get(W.gwu, client, BAD_KEY) != 401)
            fail_msg("failure %d should be 401, got %ld", i + 1, R.status);
    }
    assert_int_equal(get(W.gwu, "203.0.113.99", W.ukey.key), 429);
    assert_string_equal(R.body, ERROR_THROTTLED);
    assert_true(retry_after() >= 1);
    assert_int_equal(get(W.gwu, NULL, W.ukey.key), 429);
}

/* POST a body that is not JSON to the signup path as client: every attempt
 * counts against the signup limit, good or bad, and no password is hashed. */
static long
signup(const char *client)
{
    char xff[128];
    const char *headers[] = {"Content-Type: application/json", xff, NULL};
    struct kt_http_req rq = {
        .method = "POST",
        .url = kt_daemon_url(W.gw, "/api/v1/signup/"),
        .headers = headers,
        .body = "not json",
        .body_len = 8,
    };

    snprintf(xff, sizeof(xff), "X-Forwarded-For: %s", client);
    kt_http_resp_cleanup(&R);
    if (!kt_http_do(&rq, &R))
        fail_msg("POST signup as %s got no answer", client);
    return R.status;
}

static void
test_the_signup_limit_counts_the_same_forwarded_client(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++)
        if (signup("192.0.2.10") != 400)
            fail_msg("signup attempt %d should be 400 (bad JSON), got %ld", i + 1, R.status);
    assert_int_equal(signup("192.0.2.10"), 429);
    assert_true(retry_after() >= 1);
    assert_int_equal(signup("192.0.2.11"), 400);
}

/* GET path on gw's admin listener as client (X-Forwarded-For) with key
 * (NULL: none) into R. */
static long
admin_get(const char *path, const char *client, const char *key)
{
    char xff[128];
    const char *headers[] = {xff, NULL};

    snprintf(xff, sizeof(xff), "X-Forwarded-For: %s", client);
    kt_http_resp_cleanup(&R);
    if (!kt_http_get_key(kt_daemon_admin_url(W.gw, path), key, headers, &R))
        fail_msg("GET admin %s as %s got no answer", path, client);
    return R.status;
}

static void
test_guessing_admin_keys_is_throttled_per_client_on_its_own_tables(void **state)
{
    int64_t start;
    int ra;

    (void)state;
    for (int i = 0; i < 5; i++)
        if (admin_get("/v1/keys", "198.51.100.20", i % 2 == 0 ? BAD_KEY : NULL) != 401)
            fail_msg("admin failure %d should be 401, got %ld", i + 1, R.status);
    start = kt_mono_ms();
    /* Even the right key is refused during the cool-down, before any lookup. */
    assert_int_equal(admin_get("/v1/keys", "198.51.100.20", W.admin.key), 429);
    assert_string_equal(R.body, DETAIL_THROTTLED);
    ra = retry_after();
    if (ra < COOLDOWN_S - 1 || ra > COOLDOWN_S)
        fail_msg("Retry-After should be the %d s cool-down rounded up, got %d", COOLDOWN_S, ra);
    assert_int_equal(admin_get("/v1/keys", "198.51.100.20", BAD_KEY), 429);
    /* Another client is untouched; so are the unauthenticated probes. */
    assert_int_equal(admin_get("/v1/keys", "198.51.100.21", W.admin.key), 200);
    assert_int_equal(admin_get("/livez", "198.51.100.20", NULL), 200);
    /* The proxy side keeps its own count for the same client. */
    assert_int_equal(get(W.gw, "198.51.100.20", W.key.key), 200);
    /* After the cool-down the right key passes again. */
    while (admin_get("/v1/keys", "198.51.100.20", W.admin.key) != 200) {
        assert_int_equal(R.status, 429);
        if (kt_mono_ms() - start > COOLDOWN_DEADLINE_MS)
            fail_msg("the admin key should pass again within %d ms of the %d s cool-down",
                     COOLDOWN_DEADLINE_MS, COOLDOWN_S);
        kt_sleep_ms(100);
    }
}

/* GET path on gw (admin listener or not) with two X-Forwarded-For lines,
 * the client's own and then the one a trusted proxy appends. */
static long
get_two_lines(bool admin, const char *path, const char *first, const char *proxy_line,
              const char *key)
{
    char *x1, x2[128];
    const char *headers[] = {NULL, x2, NULL};
    size_t n = strlen(first) + 32;

    x1 = malloc(n);
    assert_non_null(x1);
    snprintf(x1, n, "X-Forwarded-For: %s", first);
    headers[0] = x1;
    snprintf(x2, sizeof(x2), "X-Forwarded-For: %s", proxy_line);
    kt_http_resp_cleanup(&R);
    if (!kt_http_get_key(admin ? kt_daemon_admin_url(W.gw, path) : kt_daemon_url(W.gw, path), key,
                         headers, &R))
        fail_msg("GET %s with two X-Forwarded-For lines got no answer", path);
    free(x1);
    return R.status;
}

static void
test_a_forged_first_forwarded_for_line_does_not_escape_the_admin_throttle(void **state)
{
    char first[64];
    int refused = 0;

    (void)state;
    /* The client varies its own line; the proxy's line names it each time. */
    for (int i = 0; i < 8; i++) {
        snprintf(first, sizeof(first), "203.0.113.%d", i + 1);
        if (get_two_lines(true, "/v1/keys", first, "198.51.100.40", BAD_KEY) == 429)
            refused++;
        else
            assert_int_equal(R.status, 401);
    }
    assert_int_equal(refused, 3);
}

static void
test_padding_forwarded_for_cannot_push_out_the_proxys_hop(void **state)
{
    char pad[2100];
    int refused = 0;

    (void)state;
    /* "1.1.1.1, ... , 203.0.113.N": nearly all keygate keeps of the header,
     * so the proxy's line no longer fits after it. The left-most entries are
     * the ones to go, never the proxy's right-most hop, or the client would
     * choose its address (the N it varies). */
    for (int i = 0; i < 8; i++) {
        size_t n = 0;

        /* 221 * 9 + 4 * 10 + 11 = 2040 bytes: fits keygate's 2048 alone,
         * not with ", 198.51.100.41" after it. */
        for (int k = 0; k < 221; k++)
            n += (size_t)snprintf(pad + n, sizeof(pad) - n, "1.1.1.1, ");
        for (int k = 0; k < 4; k++)
            n += (size_t)snprintf(pad + n, sizeof(pad) - n, "1.1.1.11, ");
        snprintf(pad + n, sizeof(pad) - n, "203.0.113.%d", i + 1);
        assert_int_equal(strlen(pad), 2040);
        if (get_two_lines(false, "/v1/items", pad, "198.51.100.41", BAD_KEY) == 429)
            refused++;
        else
            assert_int_equal(R.status, 401);
    }
    assert_int_equal(refused, 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_five_bad_keys_then_even_a_valid_key_gets_429_with_retry_after, free_slots),
        cmocka_unit_test_teardown(test_missing_invalid_and_expired_keys_each_count_as_failures,
                                  free_slots),
        cmocka_unit_test_teardown(test_403s_and_429s_never_count_as_failures, free_slots),
        cmocka_unit_test_teardown(test_a_valid_key_from_another_client_is_untouched, free_slots),
        cmocka_unit_test_teardown(test_after_the_cool_down_the_valid_key_passes_again, free_slots),
        cmocka_unit_test_teardown(
            test_an_untrusted_peers_forwarded_for_does_not_escape_the_throttle, free_slots),
        cmocka_unit_test_teardown(test_the_signup_limit_counts_the_same_forwarded_client,
                                  free_slots),
        cmocka_unit_test_teardown(
            test_guessing_admin_keys_is_throttled_per_client_on_its_own_tables, free_slots),
        cmocka_unit_test_teardown(
            test_a_forged_first_forwarded_for_line_does_not_escape_the_admin_throttle, free_slots),
        cmocka_unit_test_teardown(test_padding_forwarded_for_cannot_push_out_the_proxys_hop,
                                  free_slots),
    };

    return cmocka_run_group_tests_name("integration_test_throttle", tests, setup, teardown);
}
