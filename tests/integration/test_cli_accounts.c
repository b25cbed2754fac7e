/* integration/test_cli_accounts.c - CTest: integration_test_cli_accounts.
 *
 * The real `keygate` binary for the issue-4 verbs: `init` on an empty and
 * on a used database, `tenants`, `users`, `keys create --user`, `audit`
 * and `audit verify` (including a row edited by hand with raw SQL), their
 * --json shapes, one-line errors and exit codes; and the real daemon, which
 * must stop a key within a bounded time once the CLI disables its user or
 * tenant. The tests share one database (made by kt_daemon_new) and run in
 * order; with KEYGATE_TEST_DATABASE=postgres (CTest:
 * integration_test_cli_accounts_postgres) on a PostgreSQL server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/pgserver.h"
#include "helpers/upstream.h"
#include "keygate/audit.h"
#include "keygate/keyfmt.h"

/* A change by the CLI is enforced within 1 s by design; the test allows
 * far more so that a loaded machine cannot make it flaky. */
#define DISABLE_DEADLINE_MS 10000

struct world {
    struct kt_upstream *up;
    struct kt_daemon *d; /* the shared database; its daemon runs for one test */
    char actor[KG_AUDIT_ACTOR_MAX];
    char *bob_id;
    char *bob_key;
};

static struct world W;

/* The result under test lives here so a failed assertion leaks nothing:
 * every test's teardown cleans it. */
static struct kt_cli_result R;
static struct kt_http_resp H;

static int
clean_slot(void **state)
{
    (void)state;
    kt_cli_result_cleanup(&R);
    kt_http_resp_cleanup(&H);
    return 0;
}

static size_t
count_lines(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

#define RUN(...) run((const char *const[]){__VA_ARGS__, NULL})

/* Runs the CLI against the shared database into R. */
static void
run(const char *const *args)
{
    kt_cli_result_cleanup(&R);
    if (!kt_daemon_cli(W.d, &R, args))
        fail_msg("the CLI should run");
}

static void
expect_exit(int code)
{
    if (R.exit_code != code)
        fail_msg("expected exit %d, got %d: %s", code, R.exit_code, R.err);
}

/* One "keygate: " line on stderr holding want, nothing on stdout. */
static void
expect_one_error(int code, const char *want)
{
    expect_exit(code);
    if (count_lines(R.err) != 1 || strncmp(R.err, "keygate: ", 9) != 0)
        fail_msg("expected one \"keygate: \" line on stderr, got: %s", R.err);
    if (strstr(R.err, want) == NULL)
        fail_msg("stderr should mention \"%s\", got: %s", want, R.err);
    assert_string_equal(R.out, "");
}

static json_t *
out_json(void)
{
    json_error_t jerr;
    json_t *v = json_loads(R.out, 0, &jerr);

    if (v == NULL)
        fail_msg("stdout should be JSON (%s): %s", jerr.text, R.out);
    return v;
}

static const char *
str(const json_t *obj, const char *field)
{
    const char *s = json_string_value(json_object_get(obj, field));

    if (s == NULL)
        fail_msg("JSON should have a string \"%s\"", field);
    return s;
}

static int
group_setup(void **state)
{
    char cfg[256];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg), "upstream %s\nroute POST /v1/items write:items\n",
             kt_upstream_url(W.up));
    W.d = kt_daemon_new(cfg);
    if (W.d == NULL)
        return -1;
    kg_audit_cli_actor(W.actor);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    kt_cli_result_cleanup(&R);
    kt_http_resp_cleanup(&H);
    kt_daemon_free(W.d);
    kt_upstream_stop(W.up);
    free(W.bob_id);
    free(W.bob_key);
    kt_http_global_cleanup();
    return 0;
}

/* ---- init ---- */

static void
test_init_prints_a_platform_admin_key_once_then_does_nothing(void **state)
{
    json_t *obj, *scopes;
    const char *key;

    (void)state;
    RUN("init", "--json");
    expect_exit(0);
    obj = out_json();
    key = str(obj, "key");
    assert_true(kg_keyfmt_check(key, strlen(key)));
    assert_string_equal(str(obj, "name"), "admin");
    assert_string_equal(str(obj, "tenant"), "default");
    scopes = json_object_get(obj, "scopes");
    assert_int_equal(json_array_size(scopes), 4);
    assert_string_equal(json_string_value(json_array_get(scopes, 0)), "keys:read");
    assert_string_equal(json_string_value(json_array_get(scopes, 3)), "tenants:admin");
    assert_non_null(strstr(R.err, "not be shown again"));
    json_decref(obj);

    RUN("users", "show", "admin", "--json");
    expect_exit(0);
    obj = out_json();
    assert_true(json_is_true(json_object_get(obj, "platform_admin")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(obj, "role"), 0)), "*");
    json_decref(obj);

    RUN("init");
    expect_exit(0);
    assert_string_equal(R.out, "");
    assert_string_equal(R.err, "keygate: already initialised; nothing to do\n");
}

static void
test_init_plain_output_ends_with_the_key_alone(void **state)
{
    struct kt_daemon *fresh = kt_daemon_new(NULL);
    char *last;

    (void)state;
    assert_non_null(fresh);
    kt_cli_result_cleanup(&R);
    assert_true(kt_daemon_cli(fresh, &R, (const char *const[]){"init", NULL}));
    kt_daemon_free(fresh);
    expect_exit(0);
    assert_non_null(strstr(R.out, "name:    admin\n"));
    assert_non_null(strstr(R.out, "scopes:  keys:read,keys:write,users:admin,tenants:admin\n"));
    R.out[strlen(R.out) - 1] = '\0';
    last = strrchr(R.out, '\n') + 1;
    assert_true(kg_keyfmt_check(last, strlen(last)));
}

/* ---- tenants ---- */

static void
test_tenants_are_created_listed_shown_and_disabled(void **state)
{
    json_t *obj, *arr;

    (void)state;
    RUN("tenants", "create", "acme", "--display-name", "Acme Inc", "--json");
    expect_exit(0);
    obj = out_json();
    assert_string_equal(str(obj, "name"), "acme");
    assert_string_equal(str(obj, "display_name"), "Acme Inc");
    assert_string_equal(str(obj, "state"), "active");
    assert_true(json_is_null(json_object_get(obj, "disabled_at")));
    json_decref(obj);

    RUN("tenants", "create", "globex");
    expect_exit(0);
    assert_non_null(strstr(R.out, "name:"));

    RUN("tenants", "list");
    expect_exit(0);
    assert_non_null(strstr(R.out, "DISPLAY NAME"));
    assert_non_null(strstr(R.out, "Acme Inc"));
    assert_non_null(strstr(R.out, "globex"));

    RUN("tenants", "list", "--json");
    expect_exit(0);
    arr = out_json();
    assert_int_equal(json_array_size(arr), 4); /* and default, signup */
    json_decref(arr);

    RUN("tenants", "update", "globex", "--disable", "--json");
    expect_exit(0);
    obj = out_json();
    assert_string_equal(str(obj, "state"), "disabled");
    json_decref(obj);
    RUN("tenants", "update", "globex", "--disable");
    expect_one_error(1, "already disabled");
    RUN("tenants", "update", "globex", "--enable");
    expect_exit(0);
    RUN("tenants", "show", "globex");
    expect_exit(0);
    assert_non_null(strstr(R.out, "active"));
}

static void
test_tenant_mistakes_are_one_line_with_the_right_exit_code(void **state)
{
    static const struct {
        const char *args[8];
        int code;
        const char *want;
    } cases[] = {
        {{"tenants"}, 2, "missing command"},
        {{"tenants", "create"}, 2, "missing tenant name"},
        {{"tenants", "create", "no spaces"}, 2, "tenant may hold only"},
        {{"tenants", "create", "acme"}, 1, "tenant acme already exists"},
        {{"tenants", "show", "nowhere"}, 1, "no tenant nowhere"},
        {{"tenants", "update", "acme"}, 2, "nothing to change"},
        {{"tenants", "update", "acme", "--disable", "--enable"}, 2, "contradict"},
        {{"tenants", "update", "nowhere", "--disable"}, 1, "no tenant nowhere"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run(cases[i].args);
        expect_one_error(cases[i].code, cases[i].want);
    }
}

/* ---- users ---- */

static void
test_users_are_created_listed_shown_and_updated(void **state)
{
    json_t *obj, *arr;

    (void)state;
    RUN("users", "create", "--username", "bob", "--tenant", "acme", "--email", "Bob@Example.COM",
        "--first-name", "Bob", "--role", "read:*,write:items", "--tier", "gold", "--json");
    expect_exit(0);
    obj = out_json();
    assert_int_equal(strncmp(str(obj, "id"), "usr_", 4), 0);
    W.bob_id = strdup(str(obj, "id"));
    assert_string_equal(str(obj, "tenant"), "acme");
    assert_string_equal(str(obj, "email"), "bob@example.com");
    assert_string_equal(str(obj, "tier"), "gold");
    assert_int_equal(json_array_size(json_object_get(obj, "role")), 2);
    assert_true(json_is_false(json_object_get(obj, "platform_admin")));
    assert_true(json_is_false(json_object_get(obj, "has_password")));
    assert_null(json_object_get(obj, "password_hash"));
    json_decref(obj);

    RUN("users", "list", "--tenant", "acme", "--json");
    expect_exit(0);
    arr = out_json();
    assert_int_equal(json_array_size(arr), 1);
    json_decref(arr);
    RUN("users", "list");
    expect_exit(0);
    assert_non_null(strstr(R.out, "PLATFORM ADMIN"));
    assert_non_null(strstr(R.out, "bob@example.com"));

    RUN("users", "show", "bob", "--tenant", "acme");
    expect_exit(0);
    assert_non_null(strstr(R.out, W.bob_id));
    assert_non_null(strstr(R.out, "read:*,write:items"));
    RUN("users", "show", W.bob_id, "--json");
    expect_exit(0);

    RUN("users", "update", W.bob_id, "--last-name", "Builder", "--tier", "silver", "--json");
    expect_exit(0);
    obj = out_json();
    assert_string_equal(str(obj, "last_name"), "Builder");
    assert_string_equal(str(obj, "tier"), "silver");
    json_decref(obj);
}

static void
test_user_mistakes_are_one_line_with_the_right_exit_code(void **state)
{
    static const struct {
        const char *args[10];
        int code;
        const char *want;
    } cases[] = {
        {{"users", "create"}, 2, "--username is required"},
        {{"users", "create", "--username", "x", "--email", "not-an-address"}, 2, "email"},
        {{"users", "create", "--username", "x", "--role", "bad role"}, 2, "role"},
        {{"users", "create", "--username", "x", "--tier", "a/b"}, 2, "tier"},
        {{"users", "create", "--username", "x", "--tenant", "nowhere"}, 1, "no tenant nowhere"},
        {{"users", "create", "--username", "bob", "--tenant", "acme"}, 1, "already exists"},
        {{"users", "create", "--username", "rob", "--email", "BOB@example.com"},
         1,
         "email is already in use"},
        {{"users", "show", "nobody"}, 1, "no user nobody"},
        {{"users", "show"}, 2, "missing user"},
        {{"users", "update", "bob", "--tenant", "acme"}, 2, "nothing to change"},
        {{"users", "update", "bob", "--tenant", "acme", "--platform-admin", "maybe"},
         2,
         "yes or no"},
        {{"users", "disable", "nobody"}, 1, "no user nobody"},
        {{"users", "update", "bob", "--tenant", "acme", "--refill", "day"},
         2,
         "a refill needs credits"},
        {{"users", "update", "bob", "--tenant", "acme", "--credits", "unlimited", "--refill",
          "month"},
         2,
         "a refill needs credits"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run(cases[i].args);
        expect_one_error(cases[i].code, cases[i].want);
    }
}

static void
test_keys_for_a_user_must_fit_its_role(void **state)
{
    json_t *obj;

    (void)state;
    RUN("keys", "create", "--name", "too much", "--user", "bob", "--tenant", "acme", "--scopes",
        "read:items,admin:all");
    expect_one_error(2, "scopes exceed the user's role: admin:all");
    RUN("keys", "create", "--name", "bob key", "--user", W.bob_id, "--scopes", "write:items",
        "--json");
    expect_exit(0);
    obj = out_json();
    assert_string_equal(str(obj, "user_id"), W.bob_id);
    assert_string_equal(str(obj, "tenant"), "acme");
    W.bob_key = strdup(str(obj, "key"));
    json_decref(obj);
    RUN("keys", "list", "--user", "bob", "--tenant", "acme", "--json");
    expect_exit(0);
    obj = out_json();
    assert_int_equal(json_array_size(obj), 1);
    json_decref(obj);
}

/* ---- the daemon sees a disabled user or tenant ---- */

/* Polls POST /v1/items with key until the status is want or the deadline passes. */
static long
wait_for_status(const char *key, long want)
{
    char auth[160];
    const char *headers[] = {auth, NULL};
    int64_t deadline = kt_mono_ms() + DISABLE_DEADLINE_MS;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    for (;;) {
        struct kt_http_req req = {.method = "POST",
                                  .url = kt_daemon_url(W.d, "/v1/items"),
                                  .headers = headers,
                                  .body = "{}",
                                  .body_len = 2};

        kt_http_resp_cleanup(&H);
        assert_true(kt_http_do(&req, &H));
        if (H.status == want || kt_mono_ms() > deadline)
            return H.status;
        usleep(50 * 1000);
    }
}

/* GET path with key; the status, and (scopes_out, 256 bytes, may be NULL)
 * the X-Keygate-Scopes value the upstream received. */
static long
get_status(const char *key, const char *path, char *scopes_out)
{
    char auth[160];
    const char *headers[] = {auth, NULL};
    json_t *doc, *hdrs;
    size_t i;
    json_t *pair;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    kt_http_resp_cleanup(&H);
    assert_true(kt_http_get(kt_daemon_url(W.d, path), headers, &H));
    if (scopes_out == NULL || H.status != 200)
        return H.status;
    scopes_out[0] = '\0';
    doc = json_loads(H.body, 0, NULL);
    assert_non_null(doc);
    hdrs = json_object_get(doc, "headers");
    json_array_foreach(hdrs, i, pair)
    {
        if (strcasecmp(json_string_value(json_array_get(pair, 0)), "X-Keygate-Scopes") == 0)
            snprintf(scopes_out, 256, "%s", json_string_value(json_array_get(pair, 1)));
    }
    json_decref(doc);
    return H.status;
}

static void
test_disabling_the_user_or_tenant_stops_its_key_in_the_running_daemon(void **state)
{
    (void)state;
    assert_true(kt_daemon_start(W.d));
    assert_int_equal(wait_for_status(W.bob_key, 200), 200);

    RUN("users", "disable", "bob", "--tenant", "acme");
    expect_exit(0);
    assert_non_null(strstr(R.out, W.bob_id));
    assert_int_equal(wait_for_status(W.bob_key, 401), 401);
    assert_non_null(strstr(H.body, "Invalid API key"));

    RUN("users", "update", W.bob_id, "--enable");
    expect_exit(0);
    assert_int_equal(wait_for_status(W.bob_key, 200), 200);

    RUN("tenants", "update", "acme", "--disable");
    expect_exit(0);
    assert_int_equal(wait_for_status(W.bob_key, 401), 401);
    RUN("tenants", "update", "acme", "--enable");
    expect_exit(0);
    assert_int_equal(wait_for_status(W.bob_key, 200), 200);

    /* Narrowing the role takes write:items away from the key without touching it. */
    RUN("users", "update", W.bob_id, "--role", "read:*");
    expect_exit(0);
    assert_int_equal(wait_for_status(W.bob_key, 403), 403);
    /* Nothing of the key is left inside the role: no path is open to it. */
    assert_int_equal(get_status(W.bob_key, "/v1/elsewhere", NULL), 403);
    assert_non_null(strstr(H.body, "outside its user's role"));

    /* The upstream learns what the key may really do: its scopes within the role. */
    RUN("users", "update", W.bob_id, "--role", "*");
    expect_exit(0);
    assert_int_equal(wait_for_status(W.bob_key, 200), 200);
    {
        struct kt_key wide = {0};
        char scopes[256];

        assert_true(kt_daemon_key_cli(W.d,
                                      (const char *const[]){"keys", "create", "--name", "bob wide",
                                                            "--user", W.bob_id, "--scopes",
                                                            "write:*,read:x", "--json", NULL},
                                      &wide));
        int64_t deadline;

        RUN("users", "update", W.bob_id, "--role", "write:items,read:*");
        expect_exit(0);
        /* The key answers 200 before and after the change: wait for the
         * reload to show in what the upstream receives. */
        deadline = kt_mono_ms() + DISABLE_DEADLINE_MS;
        do {
            scopes[0] = '\0';
            /* 401 until the new key is loaded, then 200 with the old or new scopes. */
            if (get_status(wide.key, "/v1/elsewhere", scopes) == 200 &&
                strcmp(scopes, "write:items,read:x") == 0)
                break;
            usleep(50 * 1000);
        } while (kt_mono_ms() < deadline);
        kt_key_cleanup(&wide);
        assert_string_equal(scopes, "write:items,read:x");
    }
    assert_int_equal(kt_daemon_stop(W.d), 0);
}

/* ---- the audit trail ---- */

static void
test_audit_lists_every_change_with_its_actor(void **state)
{
    json_t *arr, *last;
    size_t n;

    (void)state;
    RUN("audit", "--json");
    expect_exit(0);
    arr = out_json();
    n = json_array_size(arr);
    assert_true(n >= 10);
    last = json_array_get(arr, n - 1);
    assert_string_equal(str(last, "action"), "user.update");
    assert_string_equal(str(last, "actor"), W.actor);
    assert_string_equal(str(last, "object"), W.bob_id);
    assert_string_equal(str(last, "tenant"), "acme");
    assert_true(json_is_object(json_object_get(last, "details")));
    assert_int_equal(strlen(str(last, "hash")), 64);
    assert_int_equal(json_integer_value(json_object_get(last, "seq")), (json_int_t)n);
    /* No key anywhere in the trail. */
    assert_null(strstr(R.out, W.bob_key));
    json_decref(arr);

    RUN("audit", "--json", "--limit", "2");
    expect_exit(0);
    arr = out_json();
    assert_int_equal(json_array_size(arr), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 1), "seq")),
                     (json_int_t)n);
    json_decref(arr);

    RUN("audit", "--tenant", "globex", "--json");
    expect_exit(0);
    arr = out_json();
    assert_int_equal(json_array_size(arr), 3); /* create, disable, enable */
    json_decref(arr);

    RUN("audit");
    expect_exit(0);
    assert_non_null(strstr(R.out, "SEQ"));
    assert_non_null(strstr(R.out, "tenant.create"));

    RUN("audit", "--limit", "0");
    expect_one_error(2, "--limit");
    RUN("audit", "frobnicate");
    expect_one_error(2, "unknown command");
}

static void
test_audit_verify_passes_then_catches_a_row_edited_by_hand(void **state)
{
    (void)state;
    RUN("audit", "verify");
    expect_exit(0);
    if (strncmp(R.out, "audit chain OK (", 16) != 0)
        fail_msg("verify should say the chain is OK, got: %s", R.out);

    /* By hand, in the daemon's own store (its SQLite file or PostgreSQL database). */
    assert_int_equal(
        kt_daemon_sql(W.d, "UPDATE audit SET actor = 'cli:somebody-else' WHERE seq = 4"), 1);

    RUN("audit", "verify");
    expect_exit(1);
    assert_string_equal(R.out, "audit chain broken at entry 4: hash does not match the entry's "
                               "contents\n");
    RUN("audit", "verify", "--json");
    expect_exit(1);
    {
        json_t *obj = out_json();

        assert_true(json_is_false(json_object_get(obj, "ok")));
        assert_int_equal(json_integer_value(json_object_get(obj, "broken_at")), 4);
        json_decref(obj);
    }
}

static void
test_every_new_command_has_help(void **state)
{
    static const char *const cmds[][3] = {
        {"init", "--help", NULL},        {"tenants", "--help", NULL},
        {"tenants", "create", "--help"}, {"tenants", "update", "--help"},
        {"users", "--help", NULL},       {"users", "create", "--help"},
        {"users", "update", "--help"},   {"users", "disable", "--help"},
        {"keys", "update", "--help"},    {"audit", "--help", NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        run(cmds[i]);
        expect_exit(0);
        assert_non_null(strstr(R.out, "usage: keygate "));
        assert_string_equal(R.err, "");
    }
}

int
main(void)
{
#define T(fn) cmocka_unit_test_teardown(fn, clean_slot)
    const struct CMUnitTest tests[] = {
        T(test_init_prints_a_platform_admin_key_once_then_does_nothing),
        T(test_init_plain_output_ends_with_the_key_alone),
        T(test_tenants_are_created_listed_shown_and_disabled),
        T(test_tenant_mistakes_are_one_line_with_the_right_exit_code),
        T(test_users_are_created_listed_shown_and_updated),
        T(test_user_mistakes_are_one_line_with_the_right_exit_code),
        T(test_keys_for_a_user_must_fit_its_role),
        T(test_disabling_the_user_or_tenant_stops_its_key_in_the_running_daemon),
        T(test_audit_lists_every_change_with_its_actor),
        T(test_audit_verify_passes_then_catches_a_row_edited_by_hand),
        T(test_every_new_command_has_help),
    };
#undef T
    /* KEYGATE_TEST_DATABASE=postgres: the same tests on a PostgreSQL store
     * (integration_test_cli_accounts_postgres). */
    int rc = kt_daemon_backend_start();

    if (rc != 0)
        return rc == KT_PG_SKIP ? KT_PG_SKIP : 1;
    rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    kt_daemon_backend_stop();
    return rc;
}
