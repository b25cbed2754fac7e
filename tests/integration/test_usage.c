/* tests/integration/test_usage.c - per-key usage counters on a running
 * daemon in front of a stub upstream.
 *
 * Requests are counted in memory and written once a second; the tests make
 * a known number of allowed and scope-denied requests, wait (bounded) until
 * `keys show --json` shows them, and compare the CLI, `keys list --json` and
 * the admin usage endpoint. A SIGKILL after a flush and a restart must
 * continue from the stored totals: nothing lost that was flushed, nothing
 * counted twice. Runs in order: each test adds to the counts of the last.
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

/* The flush runs once a second: three seconds is the bound the counters
 * promise to be at most one flush behind with room to spare. */
#define FLUSH_WAIT_MS 3000

struct world {
    struct kt_upstream *up;
    struct kt_daemon *d;
    struct kt_key admin;       /* `keygate init`: the platform admin key */
    struct kt_key user;        /* scopes read:items */
    struct kt_key short_lived; /* --expires 3s, made by the expiry test */
};

static struct world W;

static int
setup(void **state)
{
    char cfg[512];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\n"
             "route GET /v1/items* read:items\n"
             "route GET /v1/secret* admin:all\n",
             kt_upstream_url(W.up));
    W.d = kt_daemon_new(cfg);
    if (W.d == NULL)
        return -1;
    if (!kt_daemon_key_cli(W.d, (const char *const[]){"init", "--json", NULL}, &W.admin) ||
        !kt_daemon_create_key(W.d, "user", "read:items", NULL, &W.user))
        return -1;
    return kt_daemon_start(W.d) ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.d);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.admin);
    kt_key_cleanup(&W.user);
    kt_key_cleanup(&W.short_lived);
    kt_http_global_cleanup();
    return 0;
}

/* GET path on the public listener with key, n times, each answered status. */
static void
requests(const char *key, const char *path, int n, long status)
{
    for (int i = 0; i < n; i++) {
        struct kt_http_resp r;

        if (!kt_http_get_key(kt_daemon_url(W.d, path), key, NULL, &r))
            fail_msg("GET %s should get an answer", path);
        if (r.status != status)
            fail_msg("GET %s #%d should answer %ld, got %ld", path, i, status, r.status);
        kt_http_resp_cleanup(&r);
    }
}

/* One GET /v1/items with key answered 200, waited for (bounded) while the
 * daemon has not reloaded the key yet: those 401s name no key, so they
 * count nothing. */
static void
wait_until_allowed(const char *key)
{
    int64_t deadline = kt_mono_ms() + 10000;
    long status = 0;

    while (status != 200 && kt_mono_ms() < deadline) {
        struct kt_http_resp r;

        if (kt_http_get_key(kt_daemon_url(W.d, "/v1/items"), key, NULL, &r))
            status = r.status;
        kt_http_resp_cleanup(&r);
        if (status != 200)
            kt_sleep_ms(50);
    }
    assert_int_equal(status, 200);
}

static char *
cli_text(const char *const *args)
{
    struct kt_cli_result r;
    char *out;

    if (!kt_daemon_cli(W.d, &r, args) || r.exit_code != 0)
        fail_msg("%s %s should exit 0: %s", args[0], args[1], r.err != NULL ? r.err : "");
    out = strdup(r.out);
    kt_cli_result_cleanup(&r);
    return out;
}

/* The value of the "label:" line of plain `keys show` output (values are
 * aligned, so any spaces after the colon), or NULL. */
static const char *
field(const char *text, const char *label)
{
    const char *p = strstr(text, label);

    if (p == NULL)
        return NULL;
    p += strlen(label);
    while (*p == ' ')
        p++;
    return p;
}

static bool
starts(const char *s, const char *prefix)
{
    return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

static json_int_t
counter(const json_t *usage, const char *name)
{
    const json_t *v = strcmp(name, "requests") == 0
                          ? json_object_get(usage, name)
                          : json_object_get(json_object_get(usage, "denied"), name);

    if (!json_is_integer(v))
        fail_msg("usage should have an integer %s", name);
    return json_integer_value(v);
}

/* The "usage" of `keys show ID --json`, waited for (bounded) until it
 * shows the requests and forbidden counts wanted; the caller frees it. */
static json_t *
wait_show_usage(const char *id, json_int_t requests_want, json_int_t forbidden_want)
{
    int64_t deadline = kt_mono_ms() + FLUSH_WAIT_MS;

    for (;;) {
        json_t *o =
            kt_daemon_cli_json(W.d, (const char *const[]){"keys", "show", id, "--json", NULL});
        json_t *u = json_object_get(o, "usage");

        if (u == NULL)
            fail_msg("keys show --json should have a usage object");
        if ((counter(u, "requests") == requests_want &&
             counter(u, "forbidden") == forbidden_want) ||
            kt_mono_ms() > deadline) {
            json_incref(u);
            json_decref(o);
            return u;
        }
        json_decref(o);
        kt_sleep_ms(100);
    }
}

/* GET /v1/keys/ID/usage on the admin listener. */
static json_t *
admin_usage(const char *id)
{
    char path[160];
    struct kt_http_resp r;
    json_error_t jerr;
    json_t *o;

    snprintf(path, sizeof(path), "/v1/keys/%s/usage", id);
    if (!kt_http_get_key(kt_daemon_admin_url(W.d, path), W.admin.key, NULL, &r) || r.status != 200)
        fail_msg("GET %s should answer 200, got %ld: %s", path, r.status,
                 r.body != NULL ? r.body : "");
    o = json_loads(r.body, 0, &jerr);
    kt_http_resp_cleanup(&r);
    if (o == NULL)
        fail_msg("the usage endpoint should answer JSON: %s", jerr.text);
    return o;
}

static void
expect_counts(const json_t *usage, json_int_t requests_want, json_int_t forbidden_want)
{
    assert_int_equal(counter(usage, "requests"), requests_want);
    assert_int_equal(counter(usage, "forbidden"), forbidden_want);
    assert_int_equal(counter(usage, "expired"), 0);
    assert_int_equal(counter(usage, "rate_limited"), 0);
}

static void
test_allowed_and_denied_requests_are_counted_exactly(void **state)
{
    json_t *u, *list, *el;
    char *text;
    size_t i;
    bool listed = false;

    (void)state;
    u = admin_usage(W.user.id);
    expect_counts(u, 0, 0);
    assert_true(json_is_null(json_object_get(u, "last_used_at")));
    json_decref(u);

    requests(W.user.key, "/v1/items", 5, 200);
    requests(W.user.key, "/v1/secret", 3, 403);

    /* The endpoint adds what is not flushed yet: exact at once. */
    u = admin_usage(W.user.id);
    expect_counts(u, 5, 3);
    assert_true(json_is_string(json_object_get(u, "last_used_at")));
    json_decref(u);

    u = wait_show_usage(W.user.id, 5, 3);
    expect_counts(u, 5, 3);
    assert_true(json_is_string(json_object_get(u, "last_used_at")));
    json_decref(u);

    list = kt_daemon_cli_json(W.d, (const char *const[]){"keys", "list", "--json", NULL});
    json_array_foreach(list, i, el)
    {
        if (strcmp(json_string_value(json_object_get(el, "id")), W.user.id) != 0)
            continue;
        expect_counts(json_object_get(el, "usage"), 5, 3);
        listed = true;
    }
    json_decref(list);
    assert_true(listed);

    text = cli_text((const char *const[]){"keys", "show", W.user.id, NULL});
    assert_true(starts(field(text, "requests:"), "5\n"));
    assert_true(starts(field(text, "denied:"), "expired 0, forbidden 3, rate limited 0\n"));
    free(text);
}

static void
test_counts_continue_after_kill_without_counting_twice(void **state)
{
    json_t *u;

    (void)state;
    /* The previous test saw 5 and 3 stored: kill with nothing unflushed. */
    u = wait_show_usage(W.user.id, 5, 3);
    expect_counts(u, 5, 3);
    json_decref(u);
    kt_daemon_kill(W.d);
    assert_true(kt_daemon_start(W.d));

    u = admin_usage(W.user.id);
    expect_counts(u, 5, 3);
    json_decref(u);

    requests(W.user.key, "/v1/items", 4, 200);
    requests(W.user.key, "/v1/secret", 2, 403);
    u = wait_show_usage(W.user.id, 9, 5);
    expect_counts(u, 9, 5);
    json_decref(u);
    u = admin_usage(W.user.id);
    expect_counts(u, 9, 5);
    json_decref(u);
}

static void
test_show_tells_whether_a_rotated_key_is_still_in_use(void **state)
{
    struct kt_key old, fresh;
    json_t *u;
    char *text;

    (void)state;
    assert_true(kt_daemon_create_key(W.d, "rotating", "read:items", NULL, &old));
    assert_true(kt_daemon_rotate_key(W.d, old.id, "1h", &fresh));
    text = cli_text((const char *const[]){"keys", "show", old.id, NULL});
    if (!starts(field(text, "still in use:"), "no, not seen since the rotation (last seen never)"))
        fail_msg("keys show of the old key should say it is not in use:\n%s", text);
    free(text);
    u = kt_daemon_cli_json(W.d, (const char *const[]){"keys", "show", old.id, "--json", NULL});
    assert_true(json_is_false(json_object_get(u, "still_in_use")));
    json_decref(u);

    /* During the grace period the old key keeps working. */
    wait_until_allowed(old.key);
    u = wait_show_usage(old.id, 1, 0);
    assert_int_equal(counter(u, "requests"), 1);
    json_decref(u);
    text = cli_text((const char *const[]){"keys", "show", old.id, NULL});
    if (!starts(field(text, "still in use:"), "yes, last seen 20"))
        fail_msg("keys show of the old key should say it is in use:\n%s", text);
    free(text);
    u = kt_daemon_cli_json(W.d, (const char *const[]){"keys", "show", old.id, "--json", NULL});
    assert_true(json_is_true(json_object_get(u, "still_in_use")));
    json_decref(u);
    /* The successor is not in a grace period: no such line. */
    text = cli_text((const char *const[]){"keys", "show", fresh.id, NULL});
    assert_null(strstr(text, "still in use"));
    free(text);
    u = kt_daemon_cli_json(W.d, (const char *const[]){"keys", "show", fresh.id, "--json", NULL});
    assert_null(json_object_get(u, "still_in_use"));
    json_decref(u);
    kt_key_cleanup(&old);
    kt_key_cleanup(&fresh);
}

static void
test_rate_limited_requests_are_counted_apart(void **state)
{
    struct kt_key k;
    json_t *u;

    (void)state;
    /* A slow refill: no token comes back however slow the machine is. */
    assert_true(
        kt_daemon_key_cli(W.d,
                          (const char *const[]){"keys", "create", "--name", "limited", "--rate",
                                                "2/h", "--burst", "2", "--json", NULL},
                          &k));
    wait_until_allowed(k.key);
    requests(k.key, "/v1/items", 1, 200);
    requests(k.key, "/v1/items", 3, 429);
    u = admin_usage(k.id);
    assert_int_equal(counter(u, "requests"), 2);
    assert_int_equal(counter(u, "rate_limited"), 3);
    assert_int_equal(counter(u, "forbidden"), 0);
    json_decref(u);
    kt_key_cleanup(&k);
}

static void
test_expired_requests_are_counted_apart(void **state)
{
    int64_t deadline = kt_mono_ms() + 10000;
    json_int_t allowed = 0, expired = 0;
    json_t *u;

    (void)state;
    /* Made now: a key the CLI just made works on its first request. Until
     * the clock passes the expiry each request is allowed; every answer is
     * counted here as the daemon should count it. */
    assert_true(kt_daemon_create_key(W.d, "short-lived", "read:items", "3s", &W.short_lived));
    while (expired == 0 && kt_mono_ms() < deadline) {
        struct kt_http_resp r;

        if (!kt_http_get_key(kt_daemon_url(W.d, "/v1/items"), W.short_lived.key, NULL, &r))
            fail_msg("GET /v1/items should get an answer");
        if (r.status == 200)
            allowed++;
        else if (r.status == 401)
            expired++;
        else
            fail_msg("the short-lived key should get 200 or 401, got %ld", r.status);
        kt_http_resp_cleanup(&r);
        if (expired == 0)
            kt_sleep_ms(100);
    }
    assert_int_equal(expired, 1);
    if (allowed == 0)
        fail_msg("the key should have worked before it expired; its first answer was a 401");
    requests(W.short_lived.key, "/v1/items", 2, 401);
    u = admin_usage(W.short_lived.id);
    assert_int_equal(counter(u, "requests"), allowed);
    assert_int_equal(counter(u, "expired"), 3);
    assert_int_equal(counter(u, "forbidden"), 0);
    json_decref(u);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowed_and_denied_requests_are_counted_exactly),
        cmocka_unit_test(test_counts_continue_after_kill_without_counting_twice),
        cmocka_unit_test(test_show_tells_whether_a_rotated_key_is_still_in_use),
        cmocka_unit_test(test_rate_limited_requests_are_counted_apart),
        cmocka_unit_test(test_expired_requests_are_counted_apart),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
