/* integration/test_credentials.c - CTest: integration_test_credentials.
 *
 * The real daemon, a stub upstream and the CLI: every credential style
 * reaches the upstream; every 401 body byte for byte in both error styles;
 * /health and /livez; a revocation, a rotation and an expiry made by the
 * CLI in another process bite within 1 s; keys never reach the log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define NO_CREDENTIAL "{\"detail\": \"Authentication credentials were not provided.\"}"
#define INVALID "{\"detail\": \"Invalid API key.\"}"
#define EXPIRED "{\"detail\": \"API key has expired.\"}"
#define ERR_NO_CREDENTIAL                                                                          \
    "{\"error\": {\"type\": \"authentication_error\", \"message\": \"Authentication "              \
    "credentials were not provided\"}}"
#define ERR_INVALID                                                                                \
    "{\"error\": {\"type\": \"authentication_error\", \"message\": \"Invalid API key\"}}"
#define ERR_EXPIRED                                                                                \
    "{\"error\": {\"type\": \"authentication_error\", \"message\": \"API key has expired\"}}"

/* A change by the CLI must be enforced this soon after the CLI exits. */
#define CLI_CHANGE_DEADLINE_MS 1000

#define MAX_KEYS 32

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;      /* detail style, credential_header X-Api-Key, log_level debug */
    struct kt_daemon *gw_err;  /* error_style error */
    struct kt_key full;        /* no scopes: full access */
    struct kt_key other;       /* a second valid key of gw */
    struct kt_key revoked;     /* revoked before the start */
    struct kt_key expiring;    /* made by the expiry test, expires 3 s later */
    struct kt_key to_revoke;   /* revoked by a test while gw runs */
    struct kt_key rot_now;     /* rotated without grace */
    struct kt_key rot_grace;   /* rotated with --grace 1h */
    struct kt_key fresh_now;   /* rot_now's successor */
    struct kt_key fresh_grace; /* rot_grace's successor */
    struct kt_key err_full;    /* gw_err's key */
    struct kt_key err_expiring;
    char *seen_keys[MAX_KEYS]; /* every full key made, for the log check */
    size_t nseen;
};

static struct world W;

/* The answer under test lives here, not on the stack: a failed assertion
 * longjmps out of the test, and free_slot (each test's teardown) frees it. */
static struct kt_http_resp R;

static int
free_slot(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    return 0;
}

static void
remember(const char *key)
{
    if (W.nseen < MAX_KEYS)
        W.seen_keys[W.nseen++] = strdup(key);
}

static bool
make_key(struct kt_daemon *d, const char *name, const char *scopes, const char *expires,
         struct kt_key *out)
{
    if (!kt_daemon_create_key(d, name, scopes, expires, out))
        return false;
    remember(out->key);
    return true;
}

static int teardown(void **state);

static int
setup(void **state)
{
    char cfg[512];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\n"
             "credential_header X-Api-Key\n"
             "log_level debug\n",
             kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg),
             "upstream %s\n"
             "error_style error\n"
             "log_level debug\n",
             kt_upstream_url(W.up));
    W.gw_err = kt_daemon_new(cfg);
    if (W.gw == NULL || W.gw_err == NULL)
        goto fail;
    if (!make_key(W.gw, "full", NULL, NULL, &W.full) ||
        !make_key(W.gw, "other", NULL, NULL, &W.other) ||
        !make_key(W.gw, "revoked", NULL, NULL, &W.revoked) ||
        !make_key(W.gw, "to-revoke", NULL, NULL, &W.to_revoke) ||
        !make_key(W.gw, "rot-now", "read:items", NULL, &W.rot_now) ||
        !make_key(W.gw, "rot-grace", "read:items", NULL, &W.rot_grace) ||
        !make_key(W.gw_err, "full", NULL, NULL, &W.err_full))
        goto fail;
    if (!kt_daemon_revoke_key(W.gw, W.revoked.id))
        goto fail;
    if (!kt_daemon_start(W.gw) || !kt_daemon_start(W.gw_err))
        goto fail;
    return 0;

fail:
    teardown(state);
    return -1;
}

static int
teardown(void **state)
{
    struct kt_key *keys[] = {&W.full,         &W.other,     &W.revoked,    &W.expiring,
                             &W.to_revoke,    &W.rot_now,   &W.rot_grace,  &W.err_full,
                             &W.err_expiring, &W.fresh_now, &W.fresh_grace};

    (void)state;
    kt_daemon_free(W.gw);
    kt_daemon_free(W.gw_err);
    kt_upstream_stop(W.up);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        kt_key_cleanup(keys[i]);
    for (size_t i = 0; i < W.nseen; i++)
        free(W.seen_keys[i]);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

/* GET path on d with the given header lines (NULL-terminated list, or NULL). */
static void
get(struct kt_daemon *d, const char *path, const char *const *headers, struct kt_http_resp *r)
{
    kt_http_resp_cleanup(r); /* whatever the slot held from the last request */
    assert_true(kt_http_get(kt_daemon_url(d, path), headers, r));
}

static void
header_line(char *buf, size_t len, const char *name, const char *value)
{
    snprintf(buf, len, "%s: %s", name, value);
}

/* Status, exact body, Content-Type application/json, and WWW-Authenticate on a 401. */
static void
expect_answer(const struct kt_http_resp *r, long status, const char *body)
{
    char ct[128] = "", www[256] = "";
    bool has_ct = kt_http_header_buf(r, "Content-Type", ct, sizeof(ct)) != NULL;
    bool has_www = kt_http_header_buf(r, "WWW-Authenticate", www, sizeof(www)) != NULL;

    if (r->status != status || strcmp(r->body, body) != 0)
        print_error("got %ld %s\nwanted %ld %s\n", r->status, r->body, status, body);
    assert_int_equal(r->status, status);
    assert_string_equal(r->body, body);
    assert_true(has_ct);
    assert_string_equal(ct, "application/json");
    if (status == 401) {
        assert_true(has_www);
        assert_true(strncmp(www, "Bearer", 6) == 0);
    }
}

/* The request reached the upstream as path: 200 with its echo. */
static void
expect_proxied(const struct kt_http_resp *r, const char *target)
{
    struct kt_echo e;
    char got[1024] = "";
    bool parsed = kt_echo_parse(r->body, r->body_len, &e);

    if (parsed)
        snprintf(got, sizeof(got), "%s", kt_echo_target(&e));
    kt_echo_cleanup(&e);
    if (r->status != 200)
        print_error("got %ld %s\n", r->status, r->body);
    assert_int_equal(r->status, 200);
    assert_true(parsed);
    assert_string_equal(got, target);
}

/* Polls GET /health with key until it answers want_status or deadline_ms
 * passes; leaves the last answer in r. */
static void
poll_health(struct kt_daemon *d, const char *key, long want_status, long deadline_ms,
            struct kt_http_resp *r)
{
    int64_t deadline = kt_mono_ms() + deadline_ms;
    char auth[512];
    const char *hdrs[] = {auth, NULL};

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    for (;;) {
        get(d, "/health", hdrs, r);
        if (r->status == want_status)
            return;
        if (kt_mono_ms() >= deadline) {
            if (deadline_ms > 0)
                print_error("/health still %ld %s %ld ms later, wanted %ld\n", r->status, r->body,
                            deadline_ms, want_status);
            return;
        }
        kt_sleep_ms(20);
    }
}

static void
check_style_reaches(const char *name, const char *prefix, const char *key, const char *path)
{
    char line[512];
    const char *hdrs[] = {line, NULL};
    size_t before = kt_upstream_count_prefix(W.up, path);

    snprintf(line, sizeof(line), "%s: %s%s", name, prefix, key);
    get(W.gw, path, hdrs, &R);
    expect_proxied(&R, path);
    assert_int_equal(kt_upstream_count_prefix(W.up, path), before + 1);
    kt_http_resp_cleanup(&R);
}

static void
test_bearer_key_reaches_the_upstream(void **state)
{
    (void)state;
    check_style_reaches("Authorization", "Bearer ", W.full.key, "/v1/bearer?x=1");
}

static void
test_apikey_scheme_reaches_the_upstream(void **state)
{
    (void)state;
    check_style_reaches("Authorization", "ApiKey ", W.full.key, "/v1/apikey");
}

static void
test_lower_case_schemes_and_header_names_are_accepted(void **state)
{
    (void)state;
    check_style_reaches("authorization", "bearer ", W.full.key, "/v1/lower-bearer");
    check_style_reaches("AUTHORIZATION", "APIKEY ", W.full.key, "/v1/upper-apikey");
    check_style_reaches("x-avala-api-key", "", W.full.key, "/v1/lower-avala");
}

static void
test_avala_header_reaches_the_upstream(void **state)
{
    (void)state;
    check_style_reaches("X-Avala-Api-Key", "", W.full.key, "/v1/avala");
}

static void
test_configured_credential_header_reaches_the_upstream(void **state)
{
    (void)state;
    check_style_reaches("X-Api-Key", "", W.full.key, "/v1/extra");
}

static void
test_the_same_key_in_two_different_headers_is_one_credential(void **state)
{
    char a[512], b[512];
    const char *hdrs[] = {a, b, NULL};

    (void)state;
    snprintf(a, sizeof(a), "Authorization: Bearer %s", W.full.key);
    header_line(b, sizeof(b), "X-Avala-Api-Key", W.full.key);
    get(W.gw, "/v1/same-twice", hdrs, &R);
    expect_proxied(&R, "/v1/same-twice");
    kt_http_resp_cleanup(&R);
}

/* Sends hdrs to path on gw, expects a 401 with body, and that the upstream never saw path. */
static void
check_refused(struct kt_daemon *d, const char *path, const char *const *hdrs, const char *body)
{

    get(d, path, hdrs, &R);
    expect_answer(&R, 401, body);
    assert_false(kt_upstream_saw(W.up, path));
    kt_http_resp_cleanup(&R);
}

static void
test_no_credential_is_401_not_provided(void **state)
{
    (void)state;
    check_refused(W.gw, "/v1/no-credential", NULL, NO_CREDENTIAL);
}

static void
test_another_authorization_scheme_is_no_credential(void **state)
{
    const char *hdrs[] = {"Authorization: Basic dXNlcjpwYXNz", NULL};

    (void)state;
    check_refused(W.gw, "/v1/basic-auth", hdrs, NO_CREDENTIAL);
}

static void
test_a_bad_checksum_is_401_invalid(void **state)
{
    char bad[512], line[600];
    const char *hdrs[] = {line, NULL};
    size_t n;

    (void)state;
    snprintf(bad, sizeof(bad), "%s", W.full.key);
    n = strlen(bad);
    bad[n - 1] = bad[n - 1] == 'a' ? 'b' : 'a';
    snprintf(line, sizeof(line), "Authorization: Bearer %s", bad);
    check_refused(W.gw, "/v1/bad-checksum", hdrs, INVALID);
}

static void
test_an_unknown_key_is_401_invalid(void **state)
{
    char line[512];
    const char *hdrs[] = {line, NULL};

    (void)state;
    /* Well formed, right checksum, but made by another daemon's store. */
    snprintf(line, sizeof(line), "Authorization: Bearer %s", W.err_full.key);
    check_refused(W.gw, "/v1/unknown-key", hdrs, INVALID);
}

static void
test_a_key_the_cli_just_made_works_on_its_first_request(void **state)
{
    /* The daemon polls the store every 200 ms; a miss on a well-formed key
     * asks the store first, so "create, then call at once" never sees 401. */
    (void)state;
    for (int i = 0; i < 5; i++) {
        struct kt_key k;
        char name[32];

        snprintf(name, sizeof(name), "fresh-%d", i);
        assert_true(make_key(W.gw, name, NULL, NULL, &k));
        assert_true(kt_http_get_key(kt_daemon_url(W.gw, "/health"), k.key, NULL, &R));
        if (R.status != 200)
            fail_msg("a key made by the CLI should pass at once (try %d): %ld %s", i + 1, R.status,
                     R.body != NULL ? R.body : "");
        kt_http_resp_cleanup(&R);
        kt_key_cleanup(&k);
    }
}

static void
test_garbage_in_a_credential_header_is_401_invalid(void **state)
{
    const char *const cases[][2] = {
        {"Authorization: Bearer not-a-key-at-all", "/v1/garbage-1"},
        {"Authorization: Bearer", "/v1/garbage-2"},
        {"X-Avala-Api-Key: kg_", "/v1/garbage-3"},
        {"X-Api-Key: \"quoted\"", "/v1/garbage-4"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *hdrs[] = {cases[i][0], NULL};

        check_refused(W.gw, cases[i][1], hdrs, INVALID);
    }
}

static void
test_a_revoked_key_is_401_invalid(void **state)
{
    char line[512];
    const char *hdrs[] = {line, NULL};

    (void)state;
    snprintf(line, sizeof(line), "X-Avala-Api-Key: %s", W.revoked.key);
    check_refused(W.gw, "/v1/revoked", hdrs, INVALID);
}

static void
test_two_different_keys_are_401_invalid(void **state)
{
    char a[512], b[512];
    const char *hdrs[] = {a, b, NULL};

    (void)state;
    snprintf(a, sizeof(a), "Authorization: Bearer %s", W.full.key);
    snprintf(b, sizeof(b), "X-Avala-Api-Key: %s", W.other.key);
    check_refused(W.gw, "/v1/two-keys", hdrs, INVALID);
    /* Order does not matter: never "first wins". */
    snprintf(a, sizeof(a), "X-Api-Key: %s", W.other.key);
    snprintf(b, sizeof(b), "Authorization: ApiKey %s", W.full.key);
    check_refused(W.gw, "/v1/two-keys-b", hdrs, INVALID);
}

static void
test_the_same_header_twice_is_401_invalid(void **state)
{
    char a[512], b[512];
    const char *hdrs[] = {a, b, NULL};

    (void)state;
    snprintf(a, sizeof(a), "X-Avala-Api-Key: %s", W.full.key);
    snprintf(b, sizeof(b), "X-Avala-Api-Key: %s", W.full.key);
    check_refused(W.gw, "/v1/avala-twice", hdrs, INVALID);
    snprintf(a, sizeof(a), "Authorization: Bearer %s", W.full.key);
    snprintf(b, sizeof(b), "Authorization: Bearer %s", W.full.key);
    check_refused(W.gw, "/v1/authorization-twice", hdrs, INVALID);
}

static void
test_a_key_in_the_query_string_is_not_accepted(void **state)
{
    char path[512];

    (void)state;
    snprintf(path, sizeof(path), "/v1/query-key?api_key=%s&key=%s&access_token=%s", W.full.key,
             W.full.key, W.full.key);
    check_refused(W.gw, path, NULL, NO_CREDENTIAL);
    assert_false(kt_upstream_saw(W.up, "/v1/query-key"));
}

static void
test_error_style_error_shapes_the_401s(void **state)
{
    char line[512];
    const char *hdrs[] = {line, NULL};

    (void)state;
    check_refused(W.gw_err, "/v1/err-none", NULL, ERR_NO_CREDENTIAL);
    snprintf(line, sizeof(line), "Authorization: Bearer %s", W.full.key); /* gw's, not gw_err's */
    check_refused(W.gw_err, "/v1/err-invalid", hdrs, ERR_INVALID);
    snprintf(line, sizeof(line), "Authorization: Bearer %s", W.err_full.key);
    {

        get(W.gw_err, "/v1/err-ok", hdrs, &R);
        expect_proxied(&R, "/v1/err-ok");
        kt_http_resp_cleanup(&R);
    }
}

static void
test_health_with_a_valid_key_is_200_ok_and_not_proxied(void **state)
{
    const char *const styles[] = {"Authorization: Bearer ", "Authorization: ApiKey ",
                                  "X-Avala-Api-Key: ", "X-Api-Key: "};
    char line[512];
    const char *hdrs[] = {line, NULL};

    (void)state;
    for (size_t i = 0; i < sizeof(styles) / sizeof(styles[0]); i++) {
        char ct[128] = "";

        snprintf(line, sizeof(line), "%s%s", styles[i], W.full.key);
        get(W.gw, "/health", hdrs, &R);
        assert_int_equal(R.status, 200);
        assert_string_equal(R.body, "{\"status\":\"ok\"}");
        assert_non_null(kt_http_header_buf(&R, "Content-Type", ct, sizeof(ct)));
        assert_string_equal(ct, "application/json");
        kt_http_resp_cleanup(&R);
    }
    assert_false(kt_upstream_saw(W.up, "/health"));
}

static void
test_health_without_a_valid_key_is_401(void **state)
{
    char line[512];
    const char *hdrs[] = {line, NULL};

    (void)state;
    check_refused(W.gw, "/health", NULL, NO_CREDENTIAL);
    snprintf(line, sizeof(line), "Authorization: Bearer %s", W.revoked.key);
    check_refused(W.gw, "/health", hdrs, INVALID);
    check_refused(W.gw_err, "/health", NULL, ERR_NO_CREDENTIAL);
    assert_false(kt_upstream_saw(W.up, "/health"));
}

static void
test_livez_on_the_admin_listener_needs_no_key(void **state)
{

    (void)state;
    assert_true(kt_http_get(kt_daemon_admin_url(W.gw, "/livez"), NULL, &R));
    assert_int_equal(R.status, 200);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_get(kt_daemon_admin_url(W.gw, "/readyz"), NULL, &R));
    assert_int_equal(R.status, 200);
    kt_http_resp_cleanup(&R);
    /* Not on the public listener: there it would shadow an upstream path. */
    get(W.gw, "/livez", NULL, &R);
    expect_answer(&R, 401, NO_CREDENTIAL);
    kt_http_resp_cleanup(&R);
}

static void
test_a_cli_revocation_is_enforced_within_one_second(void **state)
{
    (void)state;
    poll_health(W.gw, W.to_revoke.key, 200, 0, &R);
    assert_int_equal(R.status, 200);
    kt_http_resp_cleanup(&R);

    /* The deadline runs from the moment the CLI has exited. */
    assert_true(kt_daemon_revoke_key(W.gw, W.to_revoke.id));
    poll_health(W.gw, W.to_revoke.key, 401, CLI_CHANGE_DEADLINE_MS, &R);
    expect_answer(&R, 401, INVALID);
    kt_http_resp_cleanup(&R);
}

static void
test_a_rotation_without_grace_stops_the_old_key_and_starts_the_new(void **state)
{
    (void)state;
    assert_true(kt_daemon_rotate_key(W.gw, W.rot_now.id, NULL, &W.fresh_now));
    remember(W.fresh_now.key);
    poll_health(W.gw, W.fresh_now.key, 200, CLI_CHANGE_DEADLINE_MS, &R);
    assert_int_equal(R.status, 200);
    kt_http_resp_cleanup(&R);
    poll_health(W.gw, W.rot_now.key, 401, CLI_CHANGE_DEADLINE_MS, &R);
    expect_answer(&R, 401, INVALID);
    kt_http_resp_cleanup(&R);
}

static void
test_a_rotation_with_grace_keeps_both_keys_working(void **state)
{
    (void)state;
    assert_true(kt_daemon_rotate_key(W.gw, W.rot_grace.id, "1h", &W.fresh_grace));
    remember(W.fresh_grace.key);
    poll_health(W.gw, W.fresh_grace.key, 200, CLI_CHANGE_DEADLINE_MS, &R);
    assert_int_equal(R.status, 200);
    kt_http_resp_cleanup(&R);
    poll_health(W.gw, W.rot_grace.key, 200, 0, &R);
    assert_int_equal(R.status, 200);
    kt_http_resp_cleanup(&R);
}

static void
test_an_expired_key_is_401_expired_in_both_styles(void **state)
{
    (void)state;
    /* Made now with --expires 3s: it works at once (a key the CLI just made
     * passes on its first request), then the clock passes its expiry
     * (bounded wait) and it is refused as expired, not as invalid. */
    assert_true(make_key(W.gw, "expiring", NULL, "3s", &W.expiring));
    assert_true(make_key(W.gw_err, "expiring", NULL, "3s", &W.err_expiring));
    poll_health(W.gw, W.expiring.key, 200, 0, &R);
    if (R.status != 200)
        fail_msg("a key expiring in 3 s should work before it expires: %ld %s", R.status, R.body);
    kt_http_resp_cleanup(&R);
    poll_health(W.gw_err, W.err_expiring.key, 200, 0, &R);
    if (R.status != 200)
        fail_msg("a key expiring in 3 s should work before it expires: %ld %s", R.status, R.body);
    kt_http_resp_cleanup(&R);
    poll_health(W.gw, W.expiring.key, 401, 10000, &R);
    expect_answer(&R, 401, EXPIRED);
    kt_http_resp_cleanup(&R);
    poll_health(W.gw_err, W.err_expiring.key, 401, 10000, &R);
    expect_answer(&R, 401, ERR_EXPIRED);
    kt_http_resp_cleanup(&R);
}

static void
check_log_has_no_key(struct kt_daemon *d)
{
    char *log = kt_daemon_log(d);
    bool listening = strstr(log, "listening on") != NULL;
    size_t found = W.nseen;

    for (size_t i = 0; i < W.nseen && found == W.nseen; i++) {
        /* The whole key, or its secret part on its own. */
        if (strstr(log, W.seen_keys[i]) != NULL ||
            strstr(log, W.seen_keys[i] + strlen(W.seen_keys[i]) - 24) != NULL)
            found = i;
    }
    free(log);
    if (found < W.nseen)
        print_error("key %zu found in the log of %s\n", found, kt_daemon_dir(d));
    assert_true(listening);
    assert_int_equal(found, W.nseen);
}

static void
test_daemons_stop_cleanly_and_never_log_a_key(void **state)
{
    (void)state;
    assert_true(kt_daemon_running(W.gw));
    assert_true(kt_daemon_running(W.gw_err));
    assert_int_equal(kt_daemon_stop(W.gw), 0);
    assert_int_equal(kt_daemon_stop(W.gw_err), 0);
    check_log_has_no_key(W.gw);
    check_log_has_no_key(W.gw_err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bearer_key_reaches_the_upstream, free_slot),
        cmocka_unit_test_teardown(test_apikey_scheme_reaches_the_upstream, free_slot),
        cmocka_unit_test_teardown(test_lower_case_schemes_and_header_names_are_accepted, free_slot),
        cmocka_unit_test_teardown(test_avala_header_reaches_the_upstream, free_slot),
        cmocka_unit_test_teardown(test_configured_credential_header_reaches_the_upstream,
                                  free_slot),
        cmocka_unit_test_teardown(test_the_same_key_in_two_different_headers_is_one_credential,
                                  free_slot),
        cmocka_unit_test_teardown(test_no_credential_is_401_not_provided, free_slot),
        cmocka_unit_test_teardown(test_another_authorization_scheme_is_no_credential, free_slot),
        cmocka_unit_test_teardown(test_a_bad_checksum_is_401_invalid, free_slot),
        cmocka_unit_test_teardown(test_an_unknown_key_is_401_invalid, free_slot),
        cmocka_unit_test_teardown(test_a_key_the_cli_just_made_works_on_its_first_request,
                                  free_slot),
        cmocka_unit_test_teardown(test_garbage_in_a_credential_header_is_401_invalid, free_slot),
        cmocka_unit_test_teardown(test_a_revoked_key_is_401_invalid, free_slot),
        cmocka_unit_test_teardown(test_two_different_keys_are_401_invalid, free_slot),
        cmocka_unit_test_teardown(test_the_same_header_twice_is_401_invalid, free_slot),
        cmocka_unit_test_teardown(test_a_key_in_the_query_string_is_not_accepted, free_slot),
        cmocka_unit_test_teardown(test_error_style_error_shapes_the_401s, free_slot),
        cmocka_unit_test_teardown(test_health_with_a_valid_key_is_200_ok_and_not_proxied,
                                  free_slot),
        cmocka_unit_test_teardown(test_health_without_a_valid_key_is_401, free_slot),
        cmocka_unit_test_teardown(test_livez_on_the_admin_listener_needs_no_key, free_slot),
        cmocka_unit_test_teardown(test_a_cli_revocation_is_enforced_within_one_second, free_slot),
        cmocka_unit_test_teardown(
            test_a_rotation_without_grace_stops_the_old_key_and_starts_the_new, free_slot),
        cmocka_unit_test_teardown(test_a_rotation_with_grace_keeps_both_keys_working, free_slot),
        cmocka_unit_test_teardown(test_an_expired_key_is_401_expired_in_both_styles, free_slot),
        cmocka_unit_test_teardown(test_daemons_stop_cleanly_and_never_log_a_key, free_slot),
    };

    return cmocka_run_group_tests_name("integration_test_credentials", tests, setup, teardown);
}
