/* tests/integration/test_quota.c - per-key credits and per-route costs on
 * running daemons in front of a stub upstream.
 *
 * A key made with --credits N may spend N credits; a request costs the
 * units of the first `cost` rule that matches it (1 without one) and is
 * charged only when the upstream answers 2xx. Past the credits the answer
 * is 429 quota_exceeded in the active error style. Credits are charged in
 * memory and written once a second as deltas: a clean restart and a
 * SIGKILL after a flush continue from the stored total without charging
 * anything twice. What the store holds is read after a stopping flush
 * (SIGTERM writes every counter before the exit), never by polling until a
 * growing counter happens to equal the number wanted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define DETAIL_QUOTA "{\"detail\": \"Quota exceeded.\"}"
#define ERROR_QUOTA "{\"error\": {\"type\": \"quota_exceeded\", \"message\": \"Quota exceeded\"}}"

/* The flush runs once a second: ten seconds leaves room on a loaded,
 * sanitised build. */
#define FLUSH_WAIT_MS 10000

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;  /* detail style, cost POST /v1/expensive* 2 */
    struct kt_daemon *gwe; /* error style */
    struct kt_daemon *gwx; /* upstream on a refused port: every answer 502 */
    struct kt_daemon *gwc; /* cost GET /v1/priced* 3, tier metered with a quota */
    struct kt_key three;   /* gw: --credits 3 */
    struct kt_key pricey;  /* gw: --credits 5 */
    struct kt_key lasting; /* gw: --credits 5, for restarts */
    struct kt_key three_e; /* gwe: --credits 3 */
    struct kt_key one_x;   /* gwx: --credits 1 */
    struct kt_key rated;   /* gw: --credits 1 --rate 10/min --burst 10 */
    struct kt_key payer;   /* gwc: --credits 100, of user payer (--credits 100, tier metered) */
    char payer_user[64];   /* gwc: the user id of payer */
};

static struct world W;

static bool
credit_key(struct kt_daemon *d, const char *name, const char *credits, struct kt_key *out)
{
    return kt_daemon_key_cli(d,
                             (const char *const[]){"keys", "create", "--name", name, "--credits",
                                                   credits, "--json", NULL},
                             out);
}

static int
setup(void **state)
{
    char cfg[512];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg), "upstream %s\ncost POST /v1/expensive* 2\n", kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\nerror_style error\n", kt_upstream_url(W.up));
    W.gwe = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream http://127.0.0.1:%d\nupstream_connect_timeout 2s\n",
             kt_daemon_free_port());
    W.gwx = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg),
             "upstream %s\ncost GET /v1/priced* 3\ntier metered rate 1000/min quota 1000/month\n",
             kt_upstream_url(W.up));
    W.gwc = kt_daemon_new(cfg);
    if (W.gw == NULL || W.gwe == NULL || W.gwx == NULL || W.gwc == NULL)
        return -1;
    {
        json_t *u = kt_daemon_cli_json(
            W.gwc, (const char *const[]){"users", "create", "--username", "payer", "--tier",
                                         "metered", "--credits", "100", "--json", NULL});
        const char *id = json_string_value(json_object_get(u, "id"));

        if (id == NULL) {
            json_decref(u);
            return -1;
        }
        snprintf(W.payer_user, sizeof(W.payer_user), "%s", id);
        json_decref(u);
    }
    if (!kt_daemon_key_cli(W.gwc,
                           (const char *const[]){"keys", "create", "--name", "payer", "--user",
                                                 "payer", "--credits", "100", "--json", NULL},
                           &W.payer))
        return -1;
    if (!credit_key(W.gw, "three", "3", &W.three) || !credit_key(W.gw, "pricey", "5", &W.pricey) ||
        !credit_key(W.gw, "lasting", "5", &W.lasting) ||
        !credit_key(W.gwe, "three", "3", &W.three_e) || !credit_key(W.gwx, "one", "1", &W.one_x) ||
        !kt_daemon_key_cli(W.gw,
                           (const char *const[]){"keys", "create", "--name", "rated", "--credits",
                                                 "1", "--rate", "10/min", "--burst", "10", "--json",
                                                 NULL},
                           &W.rated))
        return -1;
    return kt_daemon_start(W.gw) && kt_daemon_start(W.gwe) && kt_daemon_start(W.gwx) &&
                   kt_daemon_start(W.gwc)
               ? 0
               : -1;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.gw);
    kt_daemon_free(W.gwe);
    kt_daemon_free(W.gwx);
    kt_daemon_free(W.gwc);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.three);
    kt_key_cleanup(&W.pricey);
    kt_key_cleanup(&W.lasting);
    kt_key_cleanup(&W.three_e);
    kt_key_cleanup(&W.one_x);
    kt_key_cleanup(&W.rated);
    kt_key_cleanup(&W.payer);
    kt_http_global_cleanup();
    return 0;
}

/* One request with key; fails unless it is answered status (and, when
 * body is not NULL, exactly that body). */
static void
one(struct kt_daemon *d, const char *method, const char *path, const char *key, long status,
    const char *body)
{
    char auth[256];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_req rq = {.method = method, .url = kt_daemon_url(d, path), .headers = hdrs};
    struct kt_http_resp r;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    if (!kt_http_do(&rq, &r))
        fail_msg("%s %s should get an answer", method, path);
    if (r.status != status)
        fail_msg("%s %s should answer %ld, got %ld: %s", method, path, status, r.status,
                 r.body != NULL ? r.body : "");
    if (body != NULL && strcmp(r.body, body) != 0)
        fail_msg("%s %s should answer %s, got %s", method, path, body, r.body);
    kt_http_resp_cleanup(&r);
}

/* quota_used of key id as `keys show --json` has it. */
static long long
stored_used(struct kt_daemon *d, const char *id)
{
    struct kt_cli_result r;
    json_error_t jerr;
    json_t *o;
    long long used;

    if (!kt_daemon_cli(d, &r, (const char *const[]){"keys", "show", id, "--json", NULL}) ||
        r.exit_code != 0)
        fail_msg("keys show should exit 0: %s", r.err != NULL ? r.err : "");
    o = json_loads(r.out, 0, &jerr);
    kt_cli_result_cleanup(&r);
    if (o == NULL)
        fail_msg("keys show should print JSON: %s", jerr.text);
    if (!json_is_integer(json_object_get(o, "quota_used")))
        fail_msg("keys show --json should carry an integer quota_used");
    used = json_integer_value(json_object_get(o, "quota_used"));
    json_decref(o);
    return used;
}

/* Stops d (SIGTERM flushes every counter before a clean exit), checks that
 * the store then holds exactly want credits used for id, and starts d
 * again. What is read is final: no later flush can still add to it. */
static void
expect_stored_used(struct kt_daemon *d, const char *id, long long want)
{
    long long used;

    if (kt_daemon_stop(d) != 0)
        fail_msg("the daemon should stop cleanly (exit 0)");
    used = stored_used(d, id);
    if (used != want)
        fail_msg("quota_used of %s should be %lld after the stopping flush, is %lld", id, want,
                 used);
    if (!kt_daemon_start(d))
        fail_msg("the daemon should start again");
}

static void
test_three_credits_give_three_answers_then_quota_exceeded(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        one(W.gw, "GET", "/v1/items", W.three.key, 200, NULL);
    one(W.gw, "GET", "/v1/items", W.three.key, 429, DETAIL_QUOTA);
    one(W.gw, "GET", "/v1/items", W.three.key, 429, DETAIL_QUOTA);
    /* The refusals were not charged: the store ends at exactly 3. */
    expect_stored_used(W.gw, W.three.id, 3);
}

/* The RateLimit header of one GET with key, after checking its status. */
static void
ratelimit_of(const char *key, long status, char *rl, size_t rlcap)
{
    char auth[256];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_req rq = {
        .method = "GET", .url = kt_daemon_url(W.gw, "/v1/items"), .headers = hdrs};
    struct kt_http_resp r;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    if (!kt_http_do(&rq, &r))
        fail_msg("GET /v1/items should get an answer");
    assert_int_equal(r.status, status);
    assert_non_null(kt_http_header_buf(&r, "RateLimit", rl, rlcap));
    kt_http_resp_cleanup(&r);
}

static void
test_a_quota_refusal_spends_no_rate_limit_token(void **state)
{
    char first[128], rl[128];

    (void)state;
    ratelimit_of(W.rated.key, 200, first, sizeof(first));
    assert_non_null(strstr(first, "r=9"));
    /* Out of credits: refused, and the bucket stays where the 200 left it
     * (a key retrying on an empty quota must not drain its own or its
     * tier's rate). */
    for (int i = 0; i < 4; i++) {
        ratelimit_of(W.rated.key, 429, rl, sizeof(rl));
        if (strstr(rl, "r=9") == NULL)
            fail_msg("refusal %d should leave the bucket at r=9, RateLimit: %s", i + 1, rl);
    }
}

static void
test_more_credits_from_keys_update_let_the_key_through_again(void **state)
{
    struct kt_cli_result r;
    int64_t deadline = kt_mono_ms() + FLUSH_WAIT_MS;
    char auth[256];
    const char *hdrs[] = {auth, NULL};
    long status = 0;

    (void)state;
    /* The previous test used the three credits up. */
    if (!kt_daemon_cli(W.gw, &r,
                       (const char *const[]){"keys", "update", W.three.id, "--credits", "4",
                                             "--refill", "month", NULL}) ||
        r.exit_code != 0)
        fail_msg("keys update --credits should exit 0: %s", r.err != NULL ? r.err : "");
    kt_cli_result_cleanup(&r);
    /* The daemon sees the change at its next reload (data_version poll). */
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.three.key);
    while (status != 200 && kt_mono_ms() < deadline) {
        struct kt_http_resp hr;

        if (kt_http_get(kt_daemon_url(W.gw, "/v1/items"), hdrs, &hr))
            status = hr.status;
        kt_http_resp_cleanup(&hr);
        if (status != 200)
            kt_sleep_ms(50);
    }
    assert_int_equal(status, 200);
    one(W.gw, "GET", "/v1/items", W.three.key, 429, DETAIL_QUOTA);
    expect_stored_used(W.gw, W.three.id, 4);
}

/* `keys update ARGS...` of id with --json into r; fails unless it exits code. */
static void
key_update(const char *id, const char *const *args, int code, struct kt_cli_result *r)
{
    const char *argv[12] = {"keys", "update", id};
    size_t n = 3;

    while (*args != NULL && n < sizeof(argv) / sizeof(argv[0]) - 2)
        argv[n++] = *args++;
    argv[n++] = "--json";
    argv[n] = NULL;
    if (!kt_daemon_cli(W.gw, r, argv) || r->exit_code != code)
        fail_msg("keys update should exit %d, got %d: %s", code, r->exit_code,
                 r->err != NULL ? r->err : "");
}

static void
test_a_refill_needs_credits_and_unlimited_credits_drop_the_refill(void **state)
{
    struct kt_cli_result r = {0};
    struct kt_key k = {0};
    json_t *o;

    (void)state;
    if (!kt_daemon_key_cli(
            W.gw, (const char *const[]){"keys", "create", "--name", "free", "--json", NULL}, &k))
        fail_msg("keys create should succeed");
    key_update(k.id, (const char *const[]){"--refill", "day", NULL}, 2, &r);
    assert_non_null(strstr(r.err, "keygate: a refill needs credits"));
    assert_non_null(strchr(r.err, '\n'));
    assert_null(strchr(strchr(r.err, '\n') + 1, '\n')); /* one line */
    kt_cli_result_cleanup(&r);
    key_update(k.id, (const char *const[]){"--credits", "2", "--refill", "day", NULL}, 0, &r);
    kt_cli_result_cleanup(&r);
    key_update(k.id, (const char *const[]){"--credits", "unlimited", NULL}, 0, &r);
    o = json_loads(r.out, 0, NULL);
    kt_cli_result_cleanup(&r);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "quota_limit")));
    assert_true(json_is_null(json_object_get(o, "quota_period")));
    json_decref(o);
    kt_key_cleanup(&k);
}

static void
test_the_error_style_answers_quota_exceeded_as_an_error_object(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        one(W.gwe, "GET", "/v1/items", W.three_e.key, 200, NULL);
    one(W.gwe, "GET", "/v1/items", W.three_e.key, 429, ERROR_QUOTA);
}

static void
test_a_cost_rule_charges_its_units_and_other_routes_one(void **state)
{
    (void)state;
    one(W.gw, "POST", "/v1/expensive/run", W.pricey.key, 200, NULL); /* 2 */
    one(W.gw, "POST", "/v1/expensive/run", W.pricey.key, 200, NULL); /* 4 */
    /* 4 + 2 would pass 5; a request costing 1 still fits. */
    one(W.gw, "POST", "/v1/expensive/run", W.pricey.key, 429, DETAIL_QUOTA);
    one(W.gw, "GET", "/v1/expensive/run", W.pricey.key, 200, NULL); /* 5: GET has no rule */
    one(W.gw, "GET", "/v1/items", W.pricey.key, 429, DETAIL_QUOTA);
    expect_stored_used(W.gw, W.pricey.id, 5);
}

static void
test_an_upstream_failure_charges_nothing(void **state)
{
    (void)state;
    /* One credit: a single charged 502 would turn the next one into 429. */
    for (int i = 0; i < 3; i++)
        one(W.gwx, "GET", "/v1/items", W.one_x.key, 502, NULL);
    /* SIGTERM flushes every counter: what the store then holds is final
     * (the key's three requests, none of them charged). */
    assert_int_equal(kt_daemon_stop(W.gwx), 0);
    assert_int_equal(stored_used(W.gwx, W.one_x.id), 0);
    {
        json_t *o = kt_daemon_cli_json(
            W.gwx, (const char *const[]){"keys", "show", W.one_x.id, "--json", NULL});

        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(o, "usage"), "requests")), 3);
        json_decref(o);
    }
}

/* An integer member of `show --json` output (users or keys) of id on gwc,
 * through a path of up to two names. */
static long long
shown_int(const char *what, const char *id, const char *member, const char *sub)
{
    json_t *o = kt_daemon_cli_json(W.gwc, (const char *const[]){what, "show", id, "--json", NULL});
    json_t *v;
    long long n;

    if (o == NULL)
        fail_msg("%s show %s should print JSON", what, id);
    v = json_object_get(o, member);
    if (sub != NULL)
        v = json_object_get(v, sub);
    if (!json_is_integer(v))
        fail_msg("%s show --json should carry an integer %s%s%s", what, member,
                 sub != NULL ? "." : "", sub != NULL ? sub : "");
    n = json_integer_value(v);
    json_decref(o);
    return n;
}

/* Only a 2xx from the upstream is charged, and exactly the route's cost, to
 * the key's credits, its user's credits and its user's tier quota alike:
 * the upstream's own 404s and 500s pass through to the client and cost
 * nothing. */
static void
test_only_an_upstream_2xx_is_charged_and_exactly_the_routes_cost(void **state)
{
    static const struct {
        const char *path;
        long status;
    } calls[] = {
        {"/v1/priced/status/404", 404},   {"/v1/priced/status/500", 500},
        {"/v1/priced/status/404/x", 404}, {"/v1/priced/status/503", 503},
        {"/v1/priced/status/200", 200}, /* 3: the cost rule */
        {"/v1/other/status/201", 201},  /* 1: no cost rule */
        {"/v1/priced/status/499", 499},   {"/v1/priced/status/302", 302},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++)
        one(W.gwc, "GET", calls[i].path, W.payer.key, calls[i].status, NULL);
    /* SIGTERM flushes every counter: what the store then holds is final. */
    assert_int_equal(kt_daemon_stop(W.gwc), 0);
    assert_int_equal(shown_int("keys", W.payer.id, "quota_used", NULL), 4);
    assert_int_equal(shown_int("keys", W.payer.id, "usage", "requests"), 8);
    assert_int_equal(shown_int("users", W.payer_user, "quota_used", NULL), 4);
    assert_int_equal(shown_int("users", W.payer_user, "tier_quota_used", NULL), 4);
    assert_true(kt_daemon_start(W.gwc));
}

static void
test_credits_survive_a_restart_and_a_kill_without_charging_twice(void **state)
{
    (void)state;
    one(W.gw, "GET", "/v1/items", W.lasting.key, 200, NULL);
    one(W.gw, "GET", "/v1/items", W.lasting.key, 200, NULL);
    /* Stopped, read, started: the restart continues from the stored 2. */
    expect_stored_used(W.gw, W.lasting.id, 2);
    assert_int_equal(stored_used(W.gw, W.lasting.id), 2);

    one(W.gw, "GET", "/v1/items", W.lasting.key, 200, NULL);
    /* The running daemon's own once-a-second flush: wait (bounded) for the
     * event, then kill. The exact count is checked once nothing can write
     * any more: a SIGKILL must lose nothing and the restart must not write
     * any delta again. */
    {
        int64_t deadline = kt_mono_ms() + FLUSH_WAIT_MS;

        while (stored_used(W.gw, W.lasting.id) < 3 && kt_mono_ms() < deadline)
            kt_sleep_ms(100);
    }
    kt_daemon_kill(W.gw);
    assert_true(kt_daemon_start(W.gw));
    assert_int_equal(stored_used(W.gw, W.lasting.id), 3);
    one(W.gw, "GET", "/v1/items", W.lasting.key, 200, NULL);
    one(W.gw, "GET", "/v1/items", W.lasting.key, 200, NULL);
    one(W.gw, "GET", "/v1/items", W.lasting.key, 429, DETAIL_QUOTA);
    expect_stored_used(W.gw, W.lasting.id, 5);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_credits_give_three_answers_then_quota_exceeded),
        cmocka_unit_test(test_more_credits_from_keys_update_let_the_key_through_again),
        cmocka_unit_test(test_a_refill_needs_credits_and_unlimited_credits_drop_the_refill),
        cmocka_unit_test(test_the_error_style_answers_quota_exceeded_as_an_error_object),
        cmocka_unit_test(test_a_cost_rule_charges_its_units_and_other_routes_one),
        cmocka_unit_test(test_an_upstream_failure_charges_nothing),
        cmocka_unit_test(test_only_an_upstream_2xx_is_charged_and_exactly_the_routes_cost),
        cmocka_unit_test(test_a_quota_refusal_spends_no_rate_limit_token),
        cmocka_unit_test(test_credits_survive_a_restart_and_a_kill_without_charging_twice),
    };

    return cmocka_run_group_tests_name("integration_test_quota", tests, setup, teardown);
}
