/* integration/test_admin_api.c - CTest: integration_test_admin_api.
 *
 * The real daemon's admin listener over HTTP, bootstrapped the way a new
 * user does it: `keygate init` prints a platform admin key, and everything
 * else (tenants acme and globex, their admins, users and keys) is made
 * through the API with it. Every endpoint; every attempt of acme's tenant
 * admin on globex's objects (404 exactly like a missing id, never 403),
 * lists and filters that never show another tenant, tenants only for
 * platform admins; pagination until next_cursor is null; 400s naming the
 * field, 405, 409, 413, 415 and malformed JSON without a crash; a revoke,
 * a disable and a role change enforced by the same daemon's public
 * listener as soon as the admin answer arrives; and the audit trail: the
 * API's actions and refused authentications are in it, never a key, and
 * `keygate audit verify` passes until a row is edited by hand.
 *
 * Tests run in order and share one daemon; the tamper test comes last.
 * With KEYGATE_TEST_DATABASE=postgres (CTest:
 * integration_test_admin_api_postgres) its store is a PostgreSQL database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/pgserver.h"
#include "helpers/upstream.h"

#define NO_CREDENTIAL "{\"detail\": \"Authentication credentials were not provided.\"}"
#define INVALID "{\"detail\": \"Invalid API key.\"}"
#define NOT_FOUND "{\"detail\": \"Not found.\"}"
#define KEY_LEN 54 /* "kg_" + 43 body + 8 checksum */
#define MAX_KEYS 64
#define ADMIN_SCOPES "[\"keys:read\", \"keys:write\", \"users:admin\", \"tenants:admin\"]"

struct world {
    struct kt_upstream *up;
    struct kt_daemon *d;
    char *root;       /* platform admin key printed by `keygate init` */
    char *acme_admin; /* acme's tenant admin key: every admin scope, not platform */
    char *acme_admin_id;
    char *acme_admin_user; /* its user id */
    char *acme_reader;     /* acme, keys:read only */
    char *globex_admin;
    char *globex_user; /* a user of globex */
    char *globex_key;  /* a key of globex_user */
    char *globex_key_id;
    char *seen[MAX_KEYS]; /* every full key made, to check logs and the audit trail */
    size_t nseen;
};

static struct world W;

/* ---- HTTP ---- */

struct reply {
    long status;
    char *body;
    char *headers;
    json_t *json; /* the body parsed, or NULL */
    char what[160];
};

static void
reply_cleanup(struct reply *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* One request with an optional key, body and Content-Type (NULL with a
 * body: application/json). url is absolute. */
static void
request(const char *method, const char *url, const char *key, const char *body,
        const char *content_type, struct reply *r)
{
    char auth[160], ct[128];
    const char *hdrs[4];
    size_t n = 0;
    struct kt_http_req req = {.method = method, .url = url};
    struct kt_http_resp resp;

    memset(r, 0, sizeof(*r));
    snprintf(r->what, sizeof(r->what), "%s %s", method, url);
    if (key != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        hdrs[n++] = auth;
    }
    if (body != NULL) {
        snprintf(ct, sizeof(ct), "Content-Type: %s",
                 content_type != NULL ? content_type : "application/json");
        hdrs[n++] = ct;
        req.body = body;
        req.body_len = strlen(body);
    }
    hdrs[n] = NULL;
    req.headers = hdrs;
    if (!kt_http_do(&req, &resp))
        fail_msg("%s: no answer (curl %d)", r->what, resp.curl_result);
    r->status = resp.status;
    r->body = resp.body;
    r->headers = resp.headers;
    resp.body = NULL;
    resp.headers = NULL;
    kt_http_resp_cleanup(&resp);
    r->json = json_loads(r->body, 0, NULL);
}

/* An admin API call. */
static void
call(const char *method, const char *path, const char *key, const char *body, struct reply *r)
{
    request(method, kt_daemon_admin_url(W.d, path), key, body, NULL, r);
}

static void
expect(const struct reply *r, long status)
{
    if (r->status != status)
        fail_msg("%s: expected %ld, got %ld: %s", r->what, status, r->status, r->body);
}

/* expect() and a body that is exactly want. */
static void
expect_body(const struct reply *r, long status, const char *want)
{
    expect(r, status);
    if (strcmp(r->body, want) != 0)
        fail_msg("%s: expected body %s, got %s", r->what, want, r->body);
}

/* expect() and a detail message containing every one of the words. */
static void
expect_detail(const struct reply *r, long status, const char *words)
{
    const char *detail = json_string_value(json_object_get(r->json, "detail"));

    expect(r, status);
    if (detail == NULL || strstr(detail, words) == NULL)
        fail_msg("%s: expected a detail naming \"%s\", got %s", r->what, words, r->body);
}

static const char *
str(const struct reply *r, const char *name)
{
    const char *s = json_string_value(json_object_get(r->json, name));

    if (s == NULL)
        fail_msg("%s: no string member %s in %s", r->what, name, r->body);
    return s;
}

static void
remember(const char *key)
{
    if (W.nseen < MAX_KEYS)
        W.seen[W.nseen++] = strdup(key);
    kt_daemon_remember_key(W.d, key); /* and the helpers grep the logs for it */
}

/* POST /v1/keys with body as caller; returns the full key (malloc'd) and
 * its id (malloc'd, may be NULL). */
static char *
make_key(const char *caller, const char *body, char **id_out)
{
    struct reply r;
    char *key;

    call("POST", "/v1/keys", caller, body, &r);
    expect(&r, 201);
    key = strdup(str(&r, "key"));
    assert_int_equal(strlen(key), KEY_LEN);
    if (id_out != NULL)
        *id_out = strdup(str(&r, "id"));
    remember(key);
    reply_cleanup(&r);
    return key;
}

/* POST a body and return the new object's "id" (or "name"), malloc'd. */
static char *
make(const char *path, const char *body, const char *member)
{
    struct reply r;
    char *id;

    call("POST", path, W.root, body, &r);
    expect(&r, 201);
    id = strdup(str(&r, member));
    reply_cleanup(&r);
    return id;
}

/* Status of GET path on the public listener with key. */
static long
public_status(const char *method, const char *path, const char *key)
{
    struct reply r;
    long status;

    request(method, kt_daemon_url(W.d, path), key, NULL, NULL, &r);
    status = r.status;
    reply_cleanup(&r);
    return status;
}

/* The key printed by `keygate init`: the first run of key characters that
 * starts with the prefix and has a key's length. */
static char *
key_in(const char *text)
{
    for (const char *p = strstr(text, "kg_"); p != NULL; p = strstr(p + 1, "kg_")) {
        size_t n = 3;

        while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z') ||
               (p[n] >= '0' && p[n] <= '9'))
            n++;
        if (n == KEY_LEN)
            return strndup(p, n);
    }
    return NULL;
}

/* ---- setup ---- */

static int
setup(void **state)
{
    char cfg[512], body[512];
    struct kt_cli_result res;
    struct reply r;

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\n"
             "log_level debug\n"
             "route POST /v1/items* write:items\n"
             "route GET /v1/items* read:items\n",
             kt_upstream_url(W.up));
    W.d = kt_daemon_new(cfg);
    if (W.d == NULL)
        return -1;
    /* Bootstrap exactly as the README says: init on the empty database. */
    if (!kt_daemon_cli(W.d, &res, (const char *const[]){"init", NULL}))
        return -1;
    if (res.exit_code != 0) {
        fprintf(stderr, "keygate init failed (%d): %s%s\n", res.exit_code, res.out, res.err);
        kt_cli_result_cleanup(&res);
        return -1;
    }
    W.root = key_in(res.out);
    kt_cli_result_cleanup(&res);
    if (W.root == NULL) {
        fprintf(stderr, "keygate init printed no key\n");
        return -1;
    }
    remember(W.root);
    if (!kt_daemon_start(W.d))
        return -1;

    /* Two tenants, each with an admin user and an admin key. */
    free(make("/v1/tenants", "{\"name\": \"acme\", \"display_name\": \"Acme Inc.\"}", "name"));
    free(make("/v1/tenants", "{\"name\": \"globex\"}", "name"));
    W.acme_admin_user =
        make("/v1/users", "{\"tenant\": \"acme\", \"username\": \"acme-admin\"}", "id");
    snprintf(body, sizeof(body), "{\"name\": \"acme-admin\", \"user\": \"%s\", \"scopes\": %s}",
             W.acme_admin_user, ADMIN_SCOPES);
    W.acme_admin = make_key(W.root, body, &W.acme_admin_id);
    snprintf(body, sizeof(body),
             "{\"name\": \"acme-reader\", \"user\": \"%s\", \"scopes\": [\"keys:read\"]}",
             W.acme_admin_user);
    W.acme_reader = make_key(W.root, body, NULL);
    {
        char *globex_admin_user =
            make("/v1/users", "{\"tenant\": \"globex\", \"username\": \"globex-admin\"}", "id");

        snprintf(body, sizeof(body),
                 "{\"name\": \"globex-admin\", \"user\": \"%s\", \"scopes\": %s}",
                 globex_admin_user, ADMIN_SCOPES);
        W.globex_admin = make_key(W.root, body, NULL);
        free(globex_admin_user);
    }
    W.globex_user = make("/v1/users",
                         "{\"tenant\": \"globex\", \"username\": \"globex-app\","
                         " \"email\": \"App@Globex.test\"}",
                         "id");
    snprintf(body, sizeof(body), "{\"name\": \"globex-app\", \"user\": \"%s\"}", W.globex_user);
    W.globex_key = make_key(W.globex_admin, body, &W.globex_key_id);

    /* The platform admin sees the bootstrap key in the list. */
    call("GET", "/v1/keys", W.root, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.d);
    kt_upstream_stop(W.up);
    free(W.root);
    free(W.acme_admin);
    free(W.acme_admin_id);
    free(W.acme_admin_user);
    free(W.acme_reader);
    free(W.globex_admin);
    free(W.globex_user);
    free(W.globex_key);
    free(W.globex_key_id);
    for (size_t i = 0; i < W.nseen; i++)
        free(W.seen[i]);
    kt_http_global_cleanup();
    return 0;
}

/* ---- health, authentication, authorisation ---- */

static void
test_livez_and_readyz_need_no_key(void **state)
{
    struct reply r;

    (void)state;
    call("GET", "/livez", NULL, NULL, &r);
    expect_body(&r, 200, "{\"status\":\"ok\"}");
    reply_cleanup(&r);
    call("GET", "/readyz", NULL, NULL, &r);
    expect_body(&r, 200, "{\"status\":\"ready\"}");
    reply_cleanup(&r);
}

static void
test_the_key_from_keygate_init_is_a_platform_admin_key(void **state)
{
    struct reply r;

    (void)state;
    call("GET", "/v1/tenants", W.root, NULL, &r);
    expect(&r, 200);
    /* default (from the migration), acme, globex. */
    assert_true(json_array_size(json_object_get(r.json, "data")) >= 3);
    reply_cleanup(&r);
}

static void
test_admin_401s_are_the_public_bodies_byte_for_byte(void **state)
{
    struct reply r;
    char bad[KEY_LEN + 1];

    (void)state;
    call("GET", "/v1/keys", NULL, NULL, &r);
    expect_body(&r, 401, NO_CREDENTIAL);
    assert_non_null(strcasestr(r.headers, "WWW-Authenticate: Bearer"));
    reply_cleanup(&r);
    /* A well-formed key with a wrong checksum, and garbage. */
    memcpy(bad, W.acme_admin, sizeof(bad));
    bad[KEY_LEN - 1] = bad[KEY_LEN - 1] == 'a' ? 'b' : 'a';
    call("GET", "/v1/keys", bad, NULL, &r);
    expect_body(&r, 401, INVALID);
    reply_cleanup(&r);
    call("POST", "/v1/keys", "not-a-key", "{\"name\": \"x\"}", &r);
    expect_body(&r, 401, INVALID);
    reply_cleanup(&r);
}

static void
test_a_missing_admin_scope_is_403_naming_it(void **state)
{
    struct reply r;

    (void)state;
    call("GET", "/v1/keys", W.acme_reader, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
    call("POST", "/v1/keys", W.acme_reader, "{\"name\": \"x\"}", &r);
    expect_detail(&r, 403, "keys:write");
    reply_cleanup(&r);
    call("GET", "/v1/users", W.acme_reader, NULL, &r);
    expect_detail(&r, 403, "users:admin");
    reply_cleanup(&r);
}

static void
test_a_tenant_admin_cannot_touch_tenants_whatever_its_scopes(void **state)
{
    static const struct {
        const char *method, *path, *body;
    } cases[] = {
        {"GET", "/v1/tenants", NULL},
        {"GET", "/v1/tenants/acme", NULL},
        {"GET", "/v1/tenants/globex", NULL},
        {"POST", "/v1/tenants", "{\"name\": \"initech\"}"},
        {"PATCH", "/v1/tenants/acme", "{\"display_name\": \"Mine\"}"},
        {"PATCH", "/v1/tenants/globex", "{\"disabled\": true}"},
    };
    struct reply r;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        call(cases[i].method, cases[i].path, W.acme_admin, cases[i].body, &r);
        expect_detail(&r, 403, "tenants:admin");
        reply_cleanup(&r);
    }
    /* Nothing happened to globex. */
    call("GET", "/v1/tenants/globex", W.root, NULL, &r);
    expect(&r, 200);
    assert_true(json_is_null(json_object_get(r.json, "disabled_at")));
    reply_cleanup(&r);
}

static void
test_scopeless_and_wildcard_keys_never_reach_the_admin_api(void **state)
{
    char body[256], *star, *keys_any;
    struct reply r;

    (void)state;
    /* globex_key has no scopes: full access on the public side, none here. */
    call("GET", "/v1/keys", W.globex_key, NULL, &r);
    expect_detail(&r, 403, "keys:read");
    reply_cleanup(&r);
    snprintf(body, sizeof(body), "{\"name\": \"star\", \"user\": \"%s\", \"scopes\": [\"*\"]}",
             W.globex_user);
    star = make_key(W.globex_admin, body, NULL);
    call("POST", "/v1/keys", star, "{\"name\": \"minted\"}", &r);
    expect_detail(&r, 403, "keys:write");
    reply_cleanup(&r);
    /* A resource wildcard is an explicit grant (made by the platform admin:
     * keys:* is more than globex_admin's keys:read,keys:write). */
    snprintf(body, sizeof(body),
             "{\"name\": \"keys-any\", \"user\": \"%s\", \"scopes\": [\"keys:*\"]}", W.globex_user);
    keys_any = make_key(W.root, body, NULL);
    call("GET", "/v1/keys", keys_any, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
    free(star);
    free(keys_any);
}

static void
test_a_tenant_admin_cannot_touch_the_platform_admin_or_its_keys(void **state)
{
    char body[512], path[256], *user, *admin, *root_id, *root_user;
    struct reply r;

    (void)state;
    /* A tenant admin of "default", the platform admin's own tenant. */
    user = make("/v1/users", "{\"tenant\": \"default\", \"username\": \"ops\"}", "id");
    snprintf(body, sizeof(body), "{\"name\": \"ops\", \"user\": \"%s\", \"scopes\": %s}", user,
             ADMIN_SCOPES);
    admin = make_key(W.root, body, NULL);
    call("GET", "/v1/keys?name=admin", W.root, NULL, &r);
    expect(&r, 200);
    root_id = strdup(json_string_value(
        json_object_get(json_array_get(json_object_get(r.json, "data"), 0), "id")));
    root_user = strdup(json_string_value(
        json_object_get(json_array_get(json_object_get(r.json, "data"), 0), "user_id")));
    reply_cleanup(&r);

    /* Without a user, a key would go to the default user: the platform admin. */
    call("POST", "/v1/keys", admin, "{\"name\": \"escalate\"}", &r);
    expect(&r, 404);
    reply_cleanup(&r);
    snprintf(body, sizeof(body), "{\"name\": \"escalate\", \"user\": \"%s\"}", root_user);
    call("POST", "/v1/keys", admin, body, &r);
    expect(&r, 404);
    reply_cleanup(&r);
    snprintf(path, sizeof(path), "/v1/keys/%s/rotate", root_id);
    call("POST", path, admin, "{}", &r);
    expect(&r, 404);
    reply_cleanup(&r);
    snprintf(path, sizeof(path), "/v1/keys/%s/revoke", root_id);
    call("POST", path, admin, "{}", &r);
    expect(&r, 404);
    reply_cleanup(&r);
    snprintf(path, sizeof(path), "/v1/users/%s/disable", root_user);
    call("POST", path, admin, "{}", &r);
    expect(&r, 404);
    reply_cleanup(&r);
    /* The platform admin's key still works. */
    call("GET", "/v1/tenants", W.root, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
    free(user);
    free(admin);
    free(root_id);
    free(root_user);
}

static void
test_a_tenant_admin_hands_out_no_admin_scope_it_lacks(void **state)
{
    char body[512], path[160], *writer;
    struct reply r;

    (void)state;
    snprintf(body, sizeof(body),
             "{\"name\": \"acme-writer\", \"user\": \"%s\", \"scopes\": [\"keys:read\", "
             "\"keys:write\"]}",
             W.acme_admin_user);
    writer = make_key(W.root, body, NULL);
    snprintf(body, sizeof(body),
             "{\"name\": \"grab\", \"user\": \"%s\", \"scopes\": [\"users:admin\"]}",
             W.acme_admin_user);
    call("POST", "/v1/keys", writer, body, &r);
    expect_detail(&r, 403, "users:admin");
    reply_cleanup(&r);
    /* Rotating would hand it a working copy of a key with users:admin. */
    snprintf(path, sizeof(path), "/v1/keys/%s/rotate", W.acme_admin_id);
    call("POST", path, writer, "{}", &r);
    expect_detail(&r, 403, "users:admin");
    reply_cleanup(&r);
    /* What it holds it may hand out, and public scopes follow the user's role. */
    snprintf(body, sizeof(body),
             "{\"name\": \"ok\", \"user\": \"%s\", \"scopes\": [\"keys:read\", \"read:items\"]}",
             W.acme_admin_user);
    free(make_key(writer, body, NULL));
    free(writer);
}

static void
test_post_takes_the_same_limit_fields_as_patch(void **state)
{
    char body[512];
    struct reply r;

    (void)state;
    snprintf(body, sizeof(body),
             "{\"name\": \"limited\", \"user\": \"%s\", \"rate\": \"5/s\", "
             "\"rate_burst\": 7, \"quota_limit\": 3, \"quota_period\": \"day\"}",
             W.globex_user);
    call("POST", "/v1/keys", W.root, body, &r);
    expect(&r, 201);
    remember(str(&r, "key"));
    assert_string_equal(str(&r, "rate"), "5/s");
    assert_int_equal(json_integer_value(json_object_get(r.json, "rate_burst")), 7);
    assert_int_equal(json_integer_value(json_object_get(r.json, "quota_limit")), 3);
    assert_string_equal(str(&r, "quota_period"), "day");
    reply_cleanup(&r);
    call("POST", "/v1/keys", W.root, "{\"name\": \"bad\", \"rate\": \"fast\"}", &r);
    expect(&r, 400);
    reply_cleanup(&r);
}

/* ---- keys ---- */

static void
test_a_key_made_through_the_api_works_on_the_public_listener_at_once(void **state)
{
    struct reply r;
    char *key, *id, body[256], path[128];

    (void)state;
    snprintf(body, sizeof(body),
             "{\"name\": \"ci\", \"user\": \"%s\", \"scopes\": \"read:items,write:items\","
             " \"expires\": \"30d\"}",
             W.acme_admin_user);
    call("POST", "/v1/keys", W.acme_admin, body, &r);
    expect(&r, 201);
    key = strdup(str(&r, "key"));
    id = strdup(str(&r, "id"));
    remember(key);
    assert_string_equal(str(&r, "name"), "ci");
    assert_string_equal(str(&r, "tenant"), "acme");
    assert_string_equal(str(&r, "user_id"), W.acme_admin_user);
    assert_string_equal(str(&r, "state"), "active");
    assert_non_null(json_string_value(json_object_get(r.json, "expires_at")));
    assert_int_equal(json_array_size(json_object_get(r.json, "scopes")), 2);
    assert_non_null(strcasestr(r.headers, "Cache-Control: no-store"));
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);

    /* GET shows it without the key: masked, prefix and last4 only. */
    snprintf(path, sizeof(path), "/v1/keys/%s", id);
    call("GET", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "id"), id);
    assert_null(strstr(r.body, key));
    assert_string_equal(str(&r, "last4"), key + KEY_LEN - 4);
    reply_cleanup(&r);
    free(key);
    free(id);
}

static void
test_patch_renames_narrows_and_refuses_widening(void **state)
{
    struct reply r;
    char *key, *id, body[256], path[128];

    (void)state;
    snprintf(body, sizeof(body),
             "{\"name\": \"narrow-me\", \"user\": \"%s\", \"scopes\": [\"read:items\", "
             "\"write:items\"]}",
             W.acme_admin_user);
    key = make_key(W.acme_admin, body, &id);
    snprintf(path, sizeof(path), "/v1/keys/%s", id);
    assert_int_equal(public_status("POST", "/v1/items", key), 200);

    call("PATCH", path, W.acme_admin,
         "{\"name\": \"narrowed\", \"scopes\": [\"read:items\"], \"expires\": \"7d\","
         " \"rate\": \"100/min\", \"quota_limit\": 1000, \"quota_period\": \"day\"}",
         &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "name"), "narrowed");
    assert_int_equal(json_array_size(json_object_get(r.json, "scopes")), 1);
    assert_string_equal(str(&r, "rate"), "100/min");
    assert_int_equal(json_integer_value(json_object_get(r.json, "quota_limit")), 1000);
    reply_cleanup(&r);
    /* Narrowed in the running daemon before the answer came back. */
    assert_int_equal(public_status("POST", "/v1/items", key), 403);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);

    call("PATCH", path, W.acme_admin, "{\"scopes\": [\"read:items\", \"write:items\"]}", &r);
    expect_detail(&r, 400, "scopes");
    reply_cleanup(&r);
    /* null clears back to the default. */
    call("PATCH", path, W.acme_admin, "{\"expires\": null, \"quota_limit\": null}", &r);
    expect(&r, 200);
    assert_true(json_is_null(json_object_get(r.json, "expires_at")));
    assert_true(json_is_null(json_object_get(r.json, "quota_limit")));
    reply_cleanup(&r);
    call("PATCH", path, W.acme_admin, "{}", &r);
    expect(&r, 400);
    reply_cleanup(&r);
    free(key);
    free(id);
}

static void
test_a_revoke_is_enforced_by_the_same_daemon_before_the_answer(void **state)
{
    struct reply r;
    char *key, *id, body[256], path[160];

    (void)state;
    snprintf(body, sizeof(body), "{\"name\": \"to-revoke\", \"user\": \"%s\"}", W.acme_admin_user);
    key = make_key(W.acme_admin, body, &id);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);
    snprintf(path, sizeof(path), "/v1/keys/%s/revoke", id);
    call("POST", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "state"), "revoked");
    reply_cleanup(&r);
    /* No sleep: the answer above means the public listener already refuses it. */
    {
        struct reply p;

        request("GET", kt_daemon_url(W.d, "/v1/items"), key, NULL, NULL, &p);
        expect_body(&p, 401, INVALID);
        reply_cleanup(&p);
    }
    /* Revoking twice is a conflict, with or without an (empty) body. */
    call("POST", path, W.acme_admin, NULL, &r);
    expect_detail(&r, 409, "already revoked");
    reply_cleanup(&r);
    call("POST", path, W.acme_admin, "{}", &r);
    expect(&r, 409);
    reply_cleanup(&r);
    free(key);
    free(id);
}

static void
test_rotate_returns_a_new_key_and_honours_the_grace(void **state)
{
    struct reply r;
    char *old, *id, *fresh, body[256], path[160];

    (void)state;
    snprintf(body, sizeof(body), "{\"name\": \"rotating\", \"user\": \"%s\"}", W.acme_admin_user);
    old = make_key(W.acme_admin, body, &id);
    snprintf(path, sizeof(path), "/v1/keys/%s/rotate", id);
    call("POST", path, W.acme_admin, "{\"grace\": \"1h\"}", &r);
    expect(&r, 201);
    fresh = strdup(str(&r, "key"));
    remember(fresh);
    assert_string_equal(str(&r, "name"), "rotating");
    assert_string_not_equal(str(&r, "id"), id);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "previous"), "id")), id);
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", fresh), 200);
    assert_int_equal(public_status("GET", "/v1/items", old), 200); /* grace */
    /* The old key was rotated already: rotating it again is a conflict. */
    call("POST", path, W.acme_admin, "{\"grace\": \"1h\"}", &r);
    expect(&r, 409);
    reply_cleanup(&r);
    call("POST", path, W.acme_admin, "{\"grace\": \"soon\"}", &r);
    expect_detail(&r, 400, "grace");
    reply_cleanup(&r);
    free(old);
    free(id);

    /* Without grace the old key stops before the answer. */
    snprintf(body, sizeof(body), "{\"name\": \"rotate-now\", \"user\": \"%s\"}", W.acme_admin_user);
    old = make_key(W.acme_admin, body, &id);
    snprintf(path, sizeof(path), "/v1/keys/%s/rotate", id);
    call("POST", path, W.acme_admin, NULL, &r);
    expect(&r, 201);
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", old), 401);
    free(old);
    free(id);
    free(fresh);
}

static void
test_usage_shows_the_last_use_and_the_state(void **state)
{
    struct reply r;
    char *key, *id, body[256], path[160];

    (void)state;
    snprintf(body, sizeof(body), "{\"name\": \"used\", \"user\": \"%s\"}", W.acme_admin_user);
    key = make_key(W.acme_admin, body, &id);
    snprintf(path, sizeof(path), "/v1/keys/%s/usage", id);
    call("GET", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_true(json_is_null(json_object_get(r.json, "last_used_at")));
    assert_string_equal(str(&r, "state"), "active");
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);
    /* Exact to the second without waiting for the once-a-second flush. */
    call("GET", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_non_null(json_string_value(json_object_get(r.json, "last_used_at")));
    reply_cleanup(&r);
    free(key);
    free(id);
}

/* Fails unless a and b have the same members (names, not values), and the
 * same in their "usage" objects. */
static void
same_members(const char *what, json_t *a, json_t *b)
{
    const char *k;
    json_t *v;

    assert_non_null(a);
    assert_non_null(b);
    json_object_foreach(a, k, v)
    {
        if (json_object_get(b, k) == NULL)
            fail_msg("%s: the CLI has %s, the API does not", what, k);
    }
    json_object_foreach(b, k, v)
    {
        if (json_object_get(a, k) == NULL)
            fail_msg("%s: the API has %s, the CLI does not", what, k);
    }
    if (json_is_object(json_object_get(a, "usage")))
        same_members(what, json_object_get(a, "usage"), json_object_get(b, "usage"));
}

/* The element of a listing with that id, borrowed; NULL when none. */
static json_t *
with_id(json_t *list, const char *id)
{
    size_t i;
    json_t *el;

    json_array_foreach(list, i, el)
    {
        if (strcmp(json_string_value(json_object_get(el, "id")), id) == 0)
            return el;
    }
    return NULL;
}

/* docs/admin-api.md: objects have the CLI's --json shape. `keys show` and
 * `keys list` add usage, and still_in_use during a rotation's grace: so do
 * GET /v1/keys/{id} and GET /v1/keys, for the same key. */
static void
test_keys_have_the_cli_json_members_in_the_api(void **state)
{
    struct reply r, one;
    char *old, *id, *fresh_id, body[256], path[160];
    json_t *cli_show, *cli_list, *api_el, *cli_el;

    (void)state;
    snprintf(body, sizeof(body), "{\"name\": \"same-shape\", \"user\": \"%s\"}", W.acme_admin_user);
    old = make_key(W.acme_admin, body, &id);
    snprintf(path, sizeof(path), "/v1/keys/%s/rotate", id);
    call("POST", path, W.acme_admin, "{\"grace\": \"1h\"}", &r);
    expect(&r, 201);
    remember(str(&r, "key"));
    fresh_id = strdup(str(&r, "id"));
    reply_cleanup(&r);

    /* One key, as the CLI shows it and as the API shows it. */
    cli_show = kt_daemon_cli_json(W.d, (const char *const[]){"keys", "show", id, "--json", NULL});
    snprintf(path, sizeof(path), "/v1/keys/%s", id);
    call("GET", path, W.acme_admin, NULL, &one);
    expect(&one, 200);
    same_members("keys show / GET /v1/keys/{id}", cli_show, one.json);
    assert_true(json_is_object(json_object_get(one.json, "usage")));
    /* In its grace, never used since the rotation: false on both sides. */
    assert_true(json_is_false(json_object_get(cli_show, "still_in_use")));
    assert_true(json_is_false(json_object_get(one.json, "still_in_use")));

    /* The same key in both listings. */
    cli_list = kt_daemon_cli_json(
        W.d, (const char *const[]){"keys", "list", "--tenant", "acme", "--json", NULL});
    call("GET", "/v1/keys?name=same-shape&limit=100", W.acme_admin, NULL, &r);
    expect(&r, 200);
    cli_el = with_id(cli_list, id);
    api_el = with_id(json_object_get(r.json, "data"), id);
    same_members("keys list / GET /v1/keys", cli_el, api_el);
    assert_true(json_is_false(json_object_get(api_el, "still_in_use")));
    assert_true(json_is_object(json_object_get(api_el, "usage")));
    /* The successor is in no grace period: usage, no still_in_use, on both sides. */
    cli_el = with_id(cli_list, fresh_id);
    api_el = with_id(json_object_get(r.json, "data"), fresh_id);
    same_members("keys list / GET /v1/keys (successor)", cli_el, api_el);
    assert_null(json_object_get(api_el, "still_in_use"));
    assert_true(json_is_object(json_object_get(api_el, "usage")));

    reply_cleanup(&r);
    reply_cleanup(&one);
    json_decref(cli_show);
    json_decref(cli_list);
    free(old);
    free(id);
    free(fresh_id);
}

/* Collects every id of a listing, page by page. Returns the page count. */
static size_t
walk(const char *base, const char *key, size_t limit, char **ids, size_t max, size_t *nids)
{
    char path[512], cursor[256] = "";
    size_t pages = 0;

    *nids = 0;
    for (;;) {
        struct reply r;
        json_t *data, *item, *next;
        size_t i;

        snprintf(path, sizeof(path), "%s%slimit=%zu%s%s", base, strchr(base, '?') ? "&" : "?",
                 limit, cursor[0] != '\0' ? "&cursor=" : "", cursor);
        call("GET", path, key, NULL, &r);
        expect(&r, 200);
        data = json_object_get(r.json, "data");
        next = json_object_get(r.json, "next_cursor");
        assert_true(json_is_array(data));
        assert_true(json_array_size(data) <= limit);
        json_array_foreach(data, i, item)
        {
            if (*nids < max)
                ids[(*nids)++] = strdup(json_string_value(json_object_get(item, "id")));
        }
        pages++;
        if (json_is_null(next)) {
            reply_cleanup(&r);
            return pages;
        }
        assert_true(json_is_string(next));
        assert_true(strlen(json_string_value(next)) < sizeof(cursor));
        snprintf(cursor, sizeof(cursor), "%s", json_string_value(next));
        reply_cleanup(&r);
        if (pages > 50)
            fail_msg("%s: more than 50 pages", base);
    }
}

static void
test_pagination_walks_every_key_once_until_next_cursor_is_null(void **state)
{
    char *user, body[256], base[160], *ids[16];
    size_t nids = 0, pages;

    (void)state;
    user = make("/v1/users", "{\"tenant\": \"acme\", \"username\": \"pager\"}", "id");
    for (int i = 0; i < 7; i++) {
        snprintf(body, sizeof(body), "{\"name\": \"page-%d\", \"user\": \"%s\"}", i, user);
        free(make_key(W.acme_admin, body, NULL));
    }
    snprintf(base, sizeof(base), "/v1/keys?user=%s", user);
    pages = walk(base, W.acme_admin, 3, ids, 16, &nids);
    assert_int_equal(pages, 3);
    assert_int_equal(nids, 7);
    for (size_t i = 0; i < nids; i++) {
        for (size_t j = i + 1; j < nids; j++)
            assert_string_not_equal(ids[i], ids[j]);
    }
    for (size_t i = 0; i < nids; i++)
        free(ids[i]);
    /* Users and tenants page the same way. */
    pages = walk("/v1/users?tenant=acme", W.root, 1, ids, 16, &nids);
    assert_true(pages >= 2);
    for (size_t i = 0; i < nids; i++)
        free(ids[i]);
    free(user);
}

static void
test_limit_and_cursor_are_checked(void **state)
{
    static const char *const bad[] = {"/v1/keys?limit=0", "/v1/keys?limit=201",
                                      "/v1/keys?limit=ten", "/v1/keys?limit="};
    struct reply r;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        call("GET", bad[i], W.acme_admin, NULL, &r);
        expect_detail(&r, 400, "limit");
        reply_cleanup(&r);
    }
    call("GET", "/v1/keys?cursor=%22%3B--", W.acme_admin, NULL, &r);
    expect_detail(&r, 400, "cursor");
    reply_cleanup(&r);
    call("GET", "/v1/keys?colour=red", W.acme_admin, NULL, &r);
    expect_detail(&r, 400, "colour");
    reply_cleanup(&r);
    call("GET", "/v1/keys?limit=200", W.acme_admin, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
}

static void
test_key_filters_select_by_state_name_user_and_tenant(void **state)
{
    struct reply r;
    json_t *item;
    size_t i;

    (void)state;
    call("GET", "/v1/keys?state=revoked&limit=200", W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_true(json_array_size(json_object_get(r.json, "data")) >= 1);
    json_array_foreach(json_object_get(r.json, "data"), i, item)
        assert_string_equal(json_string_value(json_object_get(item, "state")), "revoked");
    reply_cleanup(&r);

    call("GET", "/v1/keys?name=to-revoke", W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "data")), 1);
    reply_cleanup(&r);

    call("GET", "/v1/keys?tenant=globex&limit=200", W.root, NULL, &r);
    expect(&r, 200);
    assert_true(json_array_size(json_object_get(r.json, "data")) >= 2);
    json_array_foreach(json_object_get(r.json, "data"), i, item)
        assert_string_equal(json_string_value(json_object_get(item, "tenant")), "globex");
    reply_cleanup(&r);

    call("GET", "/v1/keys?state=dormant", W.acme_admin, NULL, &r);
    expect_detail(&r, 400, "state");
    reply_cleanup(&r);
}

/* ---- the tenant fence ---- */

static void
test_another_tenants_key_is_404_exactly_like_a_missing_one(void **state)
{
    static const char *const fmts[][2] = {
        {"GET", "/v1/keys/%s"},         {"PATCH", "/v1/keys/%s"},
        {"POST", "/v1/keys/%s/revoke"}, {"POST", "/v1/keys/%s/rotate"},
        {"GET", "/v1/keys/%s/usage"},
    };
    struct reply r, missing;
    char path[160];

    (void)state;
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        const char *body = strcmp(fmts[i][0], "PATCH") == 0 ? "{\"name\": \"mine\"}" : NULL;

        snprintf(path, sizeof(path), fmts[i][1], W.globex_key_id);
        call(fmts[i][0], path, W.acme_admin, body, &r);
        snprintf(path, sizeof(path), fmts[i][1], "key_0000000000000000000000");
        call(fmts[i][0], path, W.acme_admin, body, &missing);
        expect_body(&r, 404, NOT_FOUND);
        expect_body(&missing, 404, NOT_FOUND);
        reply_cleanup(&r);
        reply_cleanup(&missing);
    }
    /* Untouched: the globex key still works, under its own name. */
    assert_int_equal(public_status("GET", "/v1/items", W.globex_key), 200);
    snprintf(path, sizeof(path), "/v1/keys/%s", W.globex_key_id);
    call("GET", path, W.root, NULL, &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "name"), "globex-app");
    assert_string_equal(str(&r, "state"), "active");
    reply_cleanup(&r);
}

static void
test_a_tenant_admin_lists_only_its_own_tenant(void **state)
{
    static const char *const lists[] = {"/v1/keys?limit=200", "/v1/users?limit=200",
                                        "/v1/audit?limit=200"};
    static const char *const other[] = {"/v1/keys?tenant=globex", "/v1/users?tenant=globex",
                                        "/v1/audit?tenant=globex"};
    char path[160];
    struct reply r;
    json_t *item;
    size_t i;

    (void)state;
    for (size_t k = 0; k < 3; k++) {
        call("GET", lists[k], W.acme_admin, NULL, &r);
        expect(&r, 200);
        assert_true(json_array_size(json_object_get(r.json, "data")) >= 1);
        json_array_foreach(json_object_get(r.json, "data"), i, item)
            assert_string_equal(json_string_value(json_object_get(item, "tenant")), "acme");
        assert_null(strstr(r.body, "globex"));
        reply_cleanup(&r);
        call("GET", other[k], W.acme_admin, NULL, &r);
        expect(&r, 200);
        assert_int_equal(json_array_size(json_object_get(r.json, "data")), 0);
        assert_true(json_is_null(json_object_get(r.json, "next_cursor")));
        reply_cleanup(&r);
    }
    snprintf(path, sizeof(path), "/v1/keys?user=%s", W.globex_user);
    call("GET", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "data")), 0);
    reply_cleanup(&r);
}

static void
test_a_tenant_admin_cannot_make_keys_or_users_in_another_tenant(void **state)
{
    struct reply r;
    char body[256];

    (void)state;
    snprintf(body, sizeof(body), "{\"name\": \"intruder\", \"user\": \"%s\"}", W.globex_user);
    call("POST", "/v1/keys", W.acme_admin, body, &r);
    expect_body(&r, 404, NOT_FOUND);
    reply_cleanup(&r);
    call("POST", "/v1/keys", W.acme_admin, "{\"name\": \"intruder\", \"tenant\": \"globex\"}", &r);
    expect_body(&r, 404, NOT_FOUND);
    reply_cleanup(&r);
    call("POST", "/v1/users", W.acme_admin, "{\"tenant\": \"globex\", \"username\": \"intruder\"}",
         &r);
    expect_body(&r, 404, NOT_FOUND);
    reply_cleanup(&r);
    /* Nor grant platform admin inside its own. */
    call("POST", "/v1/users", W.acme_admin, "{\"username\": \"wannabe\", \"platform_admin\": true}",
         &r);
    expect_detail(&r, 400, "platform_admin");
    reply_cleanup(&r);
    /* Nothing was made in globex. */
    call("GET", "/v1/keys?name=intruder", W.root, NULL, &r);
    expect(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "data")), 0);
    reply_cleanup(&r);
}

static void
test_another_tenants_user_is_404_exactly_like_a_missing_one(void **state)
{
    static const char *const fmts[][2] = {
        {"GET", "/v1/users/%s"},
        {"PATCH", "/v1/users/%s"},
        {"POST", "/v1/users/%s/disable"},
    };
    struct reply r, missing;
    char path[160];

    (void)state;
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        const char *body = strcmp(fmts[i][0], "PATCH") == 0 ? "{\"role\": \"read:*\"}" : NULL;

        snprintf(path, sizeof(path), fmts[i][1], W.globex_user);
        call(fmts[i][0], path, W.acme_admin, body, &r);
        snprintf(path, sizeof(path), fmts[i][1], "usr_0000000000000000000000");
        call(fmts[i][0], path, W.acme_admin, body, &missing);
        expect_body(&r, 404, NOT_FOUND);
        expect_body(&missing, 404, NOT_FOUND);
        reply_cleanup(&r);
        reply_cleanup(&missing);
    }
    assert_int_equal(public_status("GET", "/v1/items", W.globex_key), 200);
}

static void
test_a_platform_admin_reaches_every_tenant(void **state)
{
    struct reply r;
    char path[160];

    (void)state;
    snprintf(path, sizeof(path), "/v1/users/%s", W.globex_user);
    call("GET", path, W.root, NULL, &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "tenant"), "globex");
    assert_string_equal(str(&r, "email"), "app@globex.test");
    assert_null(strstr(r.body, "password_hash"));
    reply_cleanup(&r);
    snprintf(path, sizeof(path), "/v1/keys/%s/usage", W.globex_key_id);
    call("GET", path, W.root, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
    call("GET", "/v1/audit?tenant=globex", W.root, NULL, &r);
    expect(&r, 200);
    assert_true(json_array_size(json_object_get(r.json, "data")) >= 1);
    reply_cleanup(&r);
}

/* ---- users and tenants ---- */

static void
test_users_are_made_read_changed_and_disabled(void **state)
{
    struct reply r;
    char *user, *key, body[256], path[160];

    (void)state;
    call("POST", "/v1/users", W.acme_admin,
         "{\"username\": \"carol\", \"email\": \"Carol@Acme.test\", \"first_name\": \"Carol\","
         " \"last_name\": \"Ng\", \"role\": [\"read:*\", \"write:items\"], \"tier\": \"gold\"}",
         &r);
    expect(&r, 201);
    user = strdup(str(&r, "id"));
    assert_string_equal(str(&r, "tenant"), "acme"); /* the fence is the default tenant */
    assert_string_equal(str(&r, "email"), "carol@acme.test");
    assert_string_equal(str(&r, "tier"), "gold");
    assert_int_equal(json_array_size(json_object_get(r.json, "role")), 2);
    assert_false(json_is_true(json_object_get(r.json, "platform_admin")));
    reply_cleanup(&r);

    /* A key of hers may not exceed her role. */
    snprintf(body, sizeof(body), "{\"name\": \"too-much\", \"user\": \"%s\", \"scopes\": \"*\"}",
             user);
    call("POST", "/v1/keys", W.acme_admin, body, &r);
    expect_detail(&r, 400, "role");
    reply_cleanup(&r);
    snprintf(body, sizeof(body), "{\"name\": \"carols\", \"user\": \"%s\"}", user);
    key = make_key(W.acme_admin, body, NULL);
    assert_int_equal(public_status("POST", "/v1/items", key), 200);

    /* Narrowing her role narrows her key before the answer. */
    snprintf(path, sizeof(path), "/v1/users/%s", user);
    call("PATCH", path, W.acme_admin, "{\"role\": \"read:*\", \"first_name\": \"Caroline\"}", &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "first_name"), "Caroline");
    reply_cleanup(&r);
    assert_int_equal(public_status("POST", "/v1/items", key), 403);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);

    call("GET", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "username"), "carol");
    reply_cleanup(&r);

    /* Disabling her stops her key before the answer; twice is a conflict. */
    snprintf(path, sizeof(path), "/v1/users/%s/disable", user);
    call("POST", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_non_null(json_string_value(json_object_get(r.json, "disabled_at")));
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", key), 401);
    call("POST", path, W.acme_admin, NULL, &r);
    expect(&r, 409);
    reply_cleanup(&r);
    free(user);
    free(key);
}

static void
test_user_credits_are_set_shown_shared_by_its_keys_and_lifted(void **state)
{
    struct reply r;
    char *user, *key, body[256], path[160];

    (void)state;
    call("POST", "/v1/users", W.acme_admin,
         "{\"username\": \"dora\", \"quota_limit\": 2, \"quota_period\": \"month\"}", &r);
    expect(&r, 201);
    user = strdup(str(&r, "id"));
    assert_int_equal(json_integer_value(json_object_get(r.json, "quota_limit")), 2);
    assert_string_equal(str(&r, "quota_period"), "month");
    reply_cleanup(&r);
    call("POST", "/v1/users", W.acme_admin, "{\"username\": \"eve\", \"quota_period\": \"day\"}",
         &r);
    expect_detail(&r, 400, "refill");
    reply_cleanup(&r);

    snprintf(body, sizeof(body), "{\"name\": \"doras\", \"user\": \"%s\"}", user);
    key = make_key(W.acme_admin, body, NULL);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);
    assert_int_equal(public_status("GET", "/v1/items", key), 429); /* her 2 are spent */

    snprintf(path, sizeof(path), "/v1/users/%s", user);
    call("GET", path, W.acme_admin, NULL, &r);
    expect(&r, 200);
    assert_true(json_is_integer(json_object_get(r.json, "quota_used")));
    assert_true(json_is_integer(json_object_get(r.json, "tier_quota_used")));
    reply_cleanup(&r);

    /* null lifts the limit before the answer. */
    call("PATCH", path, W.acme_admin, "{\"quota_limit\": null, \"quota_period\": null}", &r);
    expect(&r, 200);
    assert_true(json_is_null(json_object_get(r.json, "quota_limit")));
    assert_true(json_is_null(json_object_get(r.json, "quota_period")));
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);

    /* A refill on unlimited credits is refused as on POST, naming the member. */
    call("PATCH", path, W.acme_admin, "{\"quota_period\": \"day\"}", &r);
    expect_detail(&r, 400, "quota_period");
    reply_cleanup(&r);
    /* She spent 3 in all: credits of 1 a day from now leave today used up. */
    call("PATCH", path, W.acme_admin, "{\"quota_limit\": 1, \"quota_period\": \"day\"}", &r);
    expect(&r, 200);
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", key), 429);
    /* Unlimited again drops the refill with the limit. */
    call("PATCH", path, W.acme_admin, "{\"quota_limit\": null}", &r);
    expect(&r, 200);
    assert_true(json_is_null(json_object_get(r.json, "quota_period")));
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);
    free(user);
    free(key);
}

static void
test_duplicate_names_are_conflicts(void **state)
{
    struct reply r;

    (void)state;
    call("POST", "/v1/tenants", W.root, "{\"name\": \"acme\"}", &r);
    expect(&r, 409);
    reply_cleanup(&r);
    call("POST", "/v1/users", W.acme_admin, "{\"username\": \"acme-admin\"}", &r);
    expect(&r, 409);
    reply_cleanup(&r);
    /* E-mail addresses are unique across tenants, in any case. */
    call("POST", "/v1/users", W.acme_admin,
         "{\"username\": \"copycat\", \"email\": \"APP@globex.TEST\"}", &r);
    expect_detail(&r, 409, "email");
    reply_cleanup(&r);
}

static void
test_tenants_are_made_read_changed_and_disabled(void **state)
{
    struct reply r;
    char *user, *key, body[256];

    (void)state;
    call("POST", "/v1/tenants", W.root, "{\"name\": \"initech\", \"display_name\": \"Initech\"}",
         &r);
    expect(&r, 201);
    assert_string_equal(str(&r, "display_name"), "Initech");
    reply_cleanup(&r);
    call("GET", "/v1/tenants/initech", W.root, NULL, &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "name"), "initech");
    reply_cleanup(&r);
    call("GET", "/v1/tenants/nowhere", W.root, NULL, &r);
    expect_body(&r, 404, NOT_FOUND);
    reply_cleanup(&r);
    call("PATCH", "/v1/tenants/initech", W.root, "{\"display_name\": \"Initech LLC\"}", &r);
    expect(&r, 200);
    assert_string_equal(str(&r, "display_name"), "Initech LLC");
    reply_cleanup(&r);
    call("POST", "/v1/tenants", W.root, "{\"name\": \"bad name\"}", &r);
    expect_detail(&r, 400, "name");
    reply_cleanup(&r);

    user = make("/v1/users", "{\"tenant\": \"initech\", \"username\": \"peter\"}", "id");
    snprintf(body, sizeof(body), "{\"name\": \"peters\", \"user\": \"%s\"}", user);
    key = make_key(W.root, body, NULL);
    assert_int_equal(public_status("GET", "/v1/items", key), 200);
    call("PATCH", "/v1/tenants/initech", W.root, "{\"disabled\": true}", &r);
    expect(&r, 200);
    assert_non_null(json_string_value(json_object_get(r.json, "disabled_at")));
    reply_cleanup(&r);
    assert_int_equal(public_status("GET", "/v1/items", key), 401);
    free(user);
    free(key);
}

/* ---- malformed requests ---- */

static void
test_bad_bodies_get_400s_naming_the_field(void **state)
{
    static const struct {
        const char *body, *words;
    } cases[] = {
        {"{}", "name"},
        {"{\"name\": 5}", "name"},
        {"{\"name\": \"x\", \"bogus\": 1}", "bogus"},
        {"{\"name\": \"x\", \"scopes\": 7}", "scopes"},
        {"{\"name\": \"x\", \"scopes\": [\"bad scope\"]}", "scope"},
        {"{\"name\": \"x\", \"expires\": \"yesterday\"}", "expir"},
        {"{\"name\": \"\"}", "name"},
        {"[]", "object"},
        {"{\"name\": \"x\", \"name\": \"y\"}", "Malformed JSON body"},
        {"{\"name\": ", "Malformed JSON body"},
        {"\x01\x02\xff", "Malformed JSON body"},
    };
    struct reply r;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        call("POST", "/v1/keys", W.acme_admin, cases[i].body, &r);
        expect_detail(&r, 400, cases[i].words);
        reply_cleanup(&r);
    }
    call("POST", "/v1/keys", W.acme_admin, "{\"name\": ", &r);
    expect_body(&r, 400, "{\"detail\": \"Malformed JSON body.\"}");
    reply_cleanup(&r);
}

/* Every number an admin body carries is held to its documented range
 * (docs/admin-api.md, docs/configuration.md): the edges pass, one past them,
 * negatives, fractions, exponents and strings are 400 naming the member, and
 * a refused change leaves the object as it was. */
static void
test_every_number_in_an_admin_body_is_checked_against_its_range(void **state)
{
    static const char *const burst_bad[] = {"0",     "-1",  "1000000001", "1.5",
                                            "\"5\"", "1e9", "true",       "9223372036854775807"};
    static const char *const burst_good[] = {"1", "1000000000"};
    static const char *const quota_bad[] = {"-2",    "1000000001", "0.5",
                                            "\"5\"", "1e9",        "-9223372036854775807"};
    static const char *const quota_good[] = {"-1", "0", "1", "1000000000"};
    static const char burst_err[] =
        "{\"detail\": \"rate_burst must be an integer from 1 to 1000000000.\"}";
    static const char quota_err[] =
        "{\"detail\": \"quota_limit must be an integer from -1 to 1000000000.\"}";
    struct {
        const char *method;
        char path[96];
        const char *fmt; /* the body, %s: the value */
        const char *err;
        const char *const *bad, *const *good;
        size_t nbad, ngood;
    } cases[] = {
        {"POST", "/v1/keys", "{\"name\": \"ranged\", \"rate\": \"10/s\", \"rate_burst\": %s}",
         burst_err, burst_bad, burst_good, 8, 2},
        {"POST", "/v1/keys", "{\"name\": \"ranged\", \"quota_limit\": %s}", quota_err, quota_bad,
         quota_good, 6, 4},
        {"PATCH", "", "{\"rate_burst\": %s}", burst_err, burst_bad, burst_good, 8, 2},
        {"PATCH", "", "{\"quota_limit\": %s}", quota_err, quota_bad, quota_good, 6, 4},
        {"POST", "/v1/users",
         "{\"tenant\": \"acme\", \"username\": \"ranged-%%d\", "
         "\"quota_limit\": %s}",
         quota_err, quota_bad, quota_good, 6, 4},
        {"PATCH", "", "{\"quota_limit\": %s}", quota_err, quota_bad, quota_good, 6, 4},
    };
    char *key_id = NULL, *user_id, body[256], fmt[256];
    struct reply r;
    int n = 0;

    (void)state;
    free(make_key(W.acme_admin, "{\"name\": \"ranges\", \"rate\": \"10/s\"}", &key_id));
    user_id = make("/v1/users", "{\"tenant\": \"acme\", \"username\": \"ranges\"}", "id");
    snprintf(cases[2].path, sizeof(cases[2].path), "/v1/keys/%s", key_id);
    snprintf(cases[3].path, sizeof(cases[3].path), "/v1/keys/%s", key_id);
    snprintf(cases[5].path, sizeof(cases[5].path), "/v1/users/%s", user_id);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* The user name needs a number of its own per POST. */
        for (size_t j = 0; j < cases[i].ngood + cases[i].nbad; j++) {
            bool good = j < cases[i].ngood;
            const char *v = good ? cases[i].good[j] : cases[i].bad[j - cases[i].ngood];

            snprintf(fmt, sizeof(fmt), cases[i].fmt, v);
            snprintf(body, sizeof(body), fmt, ++n);
            call(cases[i].method, cases[i].path, W.root, body, &r);
            if (good) {
                if (r.status != (strcmp(cases[i].method, "POST") == 0 ? 201 : 200))
                    fail_msg("%s %s %s should pass, got %ld %s", cases[i].method, cases[i].path,
                             body, r.status, r.body);
                if (json_string_value(json_object_get(r.json, "key")) != NULL)
                    remember(json_string_value(json_object_get(r.json, "key")));
            } else if (r.status != 400 || strcmp(r.body, cases[i].err) != 0) {
                fail_msg("%s %s %s should be 400 %s, got %ld %s", cases[i].method, cases[i].path,
                         body, cases[i].err, r.status, r.body);
            }
            reply_cleanup(&r);
        }
    }
    /* The refusals changed nothing: the last good values stand. */
    snprintf(fmt, sizeof(fmt), "/v1/keys/%s", key_id);
    call("GET", fmt, W.root, NULL, &r);
    expect(&r, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "rate_burst")), 1000000000);
    assert_int_equal(json_integer_value(json_object_get(r.json, "quota_limit")), 1000000000);
    reply_cleanup(&r);
    snprintf(fmt, sizeof(fmt), "/v1/users/%s", user_id);
    call("GET", fmt, W.root, NULL, &r);
    expect(&r, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "quota_limit")), 1000000000);
    reply_cleanup(&r);
    /* null is how rate_burst goes back to the default. */
    snprintf(fmt, sizeof(fmt), "/v1/keys/%s", key_id);
    call("PATCH", fmt, W.root, "{\"rate_burst\": null}", &r);
    expect(&r, 200);
    assert_true(json_is_null(json_object_get(r.json, "rate_burst")));
    reply_cleanup(&r);
    free(key_id);
    free(user_id);
}

static void
test_hostile_json_never_hurts_the_daemon(void **state)
{
    size_t depth = 30000;
    char *deep = malloc(depth * 2 + 1);
    struct reply r;
    char nul_body[] = "{\"name\": \"a\0b\"}";
    struct kt_http_req req = {.method = "POST", .body = nul_body, .body_len = sizeof(nul_body) - 1};
    struct kt_http_resp resp;
    char auth[160];
    const char *hdrs[3] = {auth, "Content-Type: application/json", NULL};

    (void)state;
    assert_non_null(deep);
    for (size_t i = 0; i < depth; i++) {
        deep[i] = '[';
        deep[depth + i] = ']';
    }
    deep[depth * 2] = '\0';
    call("POST", "/v1/keys", W.acme_admin, deep, &r);
    expect(&r, 400);
    reply_cleanup(&r);
    free(deep);
    /* A NUL byte inside a string. */
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.acme_admin);
    req.url = kt_daemon_admin_url(W.d, "/v1/keys");
    req.headers = hdrs;
    assert_true(kt_http_do(&req, &resp));
    assert_int_equal(resp.status, 400);
    kt_http_resp_cleanup(&resp);
    call("GET", "/livez", NULL, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
}

static void
test_a_body_over_64_kib_is_413_and_a_non_json_one_415(void **state)
{
    size_t len = 70 * 1024;
    char *big = malloc(len + 1);
    char auth[160];
    const char *hdrs[3] = {auth, "Content-Type: application/json", NULL};
    struct kt_http_req req = {.method = "POST", .headers = hdrs};
    struct kt_http_resp resp;
    struct reply r;

    (void)state;
    assert_non_null(big);
    memset(big, ' ', len);
    big[0] = '{';
    big[len - 1] = '}';
    big[len] = '\0';
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.acme_admin);
    req.url = kt_daemon_admin_url(W.d, "/v1/keys");
    req.body = big;
    req.body_len = len;
    /* With Content-Length: refused before the body is read. */
    assert_true(kt_http_do(&req, &resp));
    assert_int_equal(resp.status, 413);
    kt_http_resp_cleanup(&resp);
    /* Chunked: read, dropped past 64 KiB, then refused. */
    req.chunked = true;
    assert_true(kt_http_do(&req, &resp));
    assert_int_equal(resp.status, 413);
    kt_http_resp_cleanup(&resp);
    free(big);

    request("POST", kt_daemon_admin_url(W.d, "/v1/keys"), W.acme_admin, "name=x", "text/plain", &r);
    expect_detail(&r, 415, "application/json");
    reply_cleanup(&r);
    request("POST", kt_daemon_admin_url(W.d, "/v1/keys"), W.acme_admin, "{\"name\": \"x\"}",
            "application/x-www-form-urlencoded", &r);
    expect(&r, 415);
    reply_cleanup(&r);
    call("GET", "/livez", NULL, NULL, &r);
    expect(&r, 200);
    reply_cleanup(&r);
}

static void
test_wrong_methods_are_405_with_allow_and_unknown_paths_404(void **state)
{
    struct reply r;
    char *allow;
    struct kt_http_resp fake = {0};

    (void)state;
    call("DELETE", "/v1/keys", W.acme_admin, NULL, &r);
    expect(&r, 405);
    fake.headers = r.headers;
    allow = kt_http_header(&fake, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "GET"));
    assert_non_null(strstr(allow, "POST"));
    free(allow);
    reply_cleanup(&r);
    call("PUT", "/v1/users/usr_x", W.acme_admin, "{}", &r);
    expect(&r, 405);
    reply_cleanup(&r);
    call("GET", "/v1/nothing", W.acme_admin, NULL, &r);
    expect_body(&r, 404, NOT_FOUND);
    reply_cleanup(&r);
    call("GET", "/v1/keys/", W.acme_admin, NULL, &r);
    expect(&r, 404);
    reply_cleanup(&r);
}

static void
test_errors_follow_the_configured_error_style(void **state)
{
    struct kt_daemon *d = kt_daemon_new("error_style error\n");
    struct kt_cli_result res;
    struct reply r;
    char *key;

    (void)state;
    assert_non_null(d);
    assert_true(kt_daemon_cli(d, &res, (const char *const[]){"init", NULL}));
    assert_int_equal(res.exit_code, 0);
    key = key_in(res.out);
    kt_cli_result_cleanup(&res);
    assert_non_null(key);
    remember(key);
    assert_true(kt_daemon_start(d));
    request("GET", kt_daemon_admin_url(d, "/v1/keys"), NULL, NULL, NULL, &r);
    expect_body(&r, 401,
                "{\"error\": {\"type\": \"authentication_error\", \"message\": "
                "\"Authentication credentials were not provided\"}}");
    reply_cleanup(&r);
    request("POST", kt_daemon_admin_url(d, "/v1/keys"), key, "{\"name\": ", NULL, &r);
    expect_body(&r, 400,
                "{\"error\": {\"type\": \"invalid_request_error\", \"message\": "
                "\"Malformed JSON body\"}}");
    reply_cleanup(&r);
    request("GET", kt_daemon_admin_url(d, "/v1/keys/key_0000000000000000000000"), key, NULL, NULL,
            &r);
    expect_body(&r, 404,
                "{\"error\": {\"type\": \"not_found_error\", \"message\": \"Not found\"}}");
    reply_cleanup(&r);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
    free(key);
}

/* ---- the audit trail ---- */

static bool
has_action(const json_t *data, const char *action, const char *actor)
{
    json_t *item;
    size_t i;

    json_array_foreach(data, i, item)
    {
        const char *a = json_string_value(json_object_get(item, "action"));
        const char *who = json_string_value(json_object_get(item, "actor"));

        if (a != NULL && strcmp(a, action) == 0 &&
            (actor == NULL || (who != NULL && strcmp(who, actor) == 0)))
            return true;
    }
    return false;
}

static void
test_the_audit_trail_records_the_api_and_never_a_key(void **state)
{
    struct reply r;

    (void)state;
    /* One more refused authentication, with a key-shaped credential. */
    call("GET", "/v1/keys", "kg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA00000000", NULL, &r);
    expect(&r, 401);
    reply_cleanup(&r);
    call("GET", "/v1/audit?order=desc&limit=200", W.root, NULL, &r);
    expect(&r, 200);
    assert_true(has_action(json_object_get(r.json, "data"), "key.create", W.acme_admin_id));
    assert_true(has_action(json_object_get(r.json, "data"), "key.revoke", W.acme_admin_id));
    assert_true(has_action(json_object_get(r.json, "data"), "key.rotate", NULL));
    assert_true(has_action(json_object_get(r.json, "data"), "key.update", NULL));
    assert_true(has_action(json_object_get(r.json, "data"), "user.create", NULL));
    assert_true(has_action(json_object_get(r.json, "data"), "user.disable", NULL));
    assert_true(has_action(json_object_get(r.json, "data"), "tenant.create", NULL));
    assert_true(has_action(json_object_get(r.json, "data"), "tenant.update", NULL));
    assert_true(has_action(json_object_get(r.json, "data"), "admin.auth_failed", NULL));
    for (size_t i = 0; i < W.nseen; i++) {
        if (strstr(r.body, W.seen[i]) != NULL)
            fail_msg("a full key is in the audit trail");
    }
    reply_cleanup(&r);
    call("GET", "/v1/audit?order=sideways", W.root, NULL, &r);
    expect_detail(&r, 400, "order");
    reply_cleanup(&r);
}

static void
test_audit_verify_passes_then_finds_a_row_edited_by_hand(void **state)
{
    struct kt_cli_result res;

    (void)state;
    assert_true(kt_daemon_cli(W.d, &res, (const char *const[]){"audit", "verify", NULL}));
    if (res.exit_code != 0 || strstr(res.out, "audit chain OK") == NULL)
        fail_msg("audit verify: exit %d: %s%s", res.exit_code, res.out, res.err);
    kt_cli_result_cleanup(&res);

    /* By hand, in the daemon's own store (its SQLite file or PostgreSQL database). */
    assert_int_equal(
        kt_daemon_sql(W.d, "UPDATE audit SET details = '{\"name\":\"innocent\"}' WHERE seq = 3"),
        1);

    assert_true(kt_daemon_cli(W.d, &res, (const char *const[]){"audit", "verify", NULL}));
    assert_int_equal(res.exit_code, 1);
    if (strstr(res.out, "audit chain broken at entry 3") == NULL &&
        strstr(res.err, "audit chain broken at entry 3") == NULL)
        fail_msg("audit verify after the edit: %s%s", res.out, res.err);
    kt_cli_result_cleanup(&res);
}

static void
test_the_daemon_stops_cleanly_and_never_logs_a_key(void **state)
{
    char *log;

    (void)state;
    /* Exit 0 also means no sanitizer report in the sanitizer build. */
    assert_int_equal(kt_daemon_stop(W.d), 0);
    log = kt_daemon_log(W.d);
    assert_non_null(log);
    for (size_t i = 0; i < W.nseen; i++) {
        if (strstr(log, W.seen[i]) != NULL)
            fail_msg("a full key is in the daemon log");
    }
    free(log);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_livez_and_readyz_need_no_key),
        cmocka_unit_test(test_the_key_from_keygate_init_is_a_platform_admin_key),
        cmocka_unit_test(test_admin_401s_are_the_public_bodies_byte_for_byte),
        cmocka_unit_test(test_a_missing_admin_scope_is_403_naming_it),
        cmocka_unit_test(test_a_tenant_admin_cannot_touch_tenants_whatever_its_scopes),
        cmocka_unit_test(test_scopeless_and_wildcard_keys_never_reach_the_admin_api),
        cmocka_unit_test(test_a_tenant_admin_cannot_touch_the_platform_admin_or_its_keys),
        cmocka_unit_test(test_a_tenant_admin_hands_out_no_admin_scope_it_lacks),
        cmocka_unit_test(test_post_takes_the_same_limit_fields_as_patch),
        cmocka_unit_test(test_a_key_made_through_the_api_works_on_the_public_listener_at_once),
        cmocka_unit_test(test_patch_renames_narrows_and_refuses_widening),
        cmocka_unit_test(test_a_revoke_is_enforced_by_the_same_daemon_before_the_answer),
        cmocka_unit_test(test_rotate_returns_a_new_key_and_honours_the_grace),
        cmocka_unit_test(test_usage_shows_the_last_use_and_the_state),
        cmocka_unit_test(test_keys_have_the_cli_json_members_in_the_api),
        cmocka_unit_test(test_pagination_walks_every_key_once_until_next_cursor_is_null),
        cmocka_unit_test(test_limit_and_cursor_are_checked),
        cmocka_unit_test(test_key_filters_select_by_state_name_user_and_tenant),
        cmocka_unit_test(test_another_tenants_key_is_404_exactly_like_a_missing_one),
        cmocka_unit_test(test_a_tenant_admin_lists_only_its_own_tenant),
        cmocka_unit_test(test_a_tenant_admin_cannot_make_keys_or_users_in_another_tenant),
        cmocka_unit_test(test_another_tenants_user_is_404_exactly_like_a_missing_one),
        cmocka_unit_test(test_a_platform_admin_reaches_every_tenant),
        cmocka_unit_test(test_users_are_made_read_changed_and_disabled),
        cmocka_unit_test(test_user_credits_are_set_shown_shared_by_its_keys_and_lifted),
        cmocka_unit_test(test_duplicate_names_are_conflicts),
        cmocka_unit_test(test_tenants_are_made_read_changed_and_disabled),
        cmocka_unit_test(test_bad_bodies_get_400s_naming_the_field),
        cmocka_unit_test(test_every_number_in_an_admin_body_is_checked_against_its_range),
        cmocka_unit_test(test_hostile_json_never_hurts_the_daemon),
        cmocka_unit_test(test_a_body_over_64_kib_is_413_and_a_non_json_one_415),
        cmocka_unit_test(test_wrong_methods_are_405_with_allow_and_unknown_paths_404),
        cmocka_unit_test(test_errors_follow_the_configured_error_style),
        cmocka_unit_test(test_the_audit_trail_records_the_api_and_never_a_key),
        cmocka_unit_test(test_audit_verify_passes_then_finds_a_row_edited_by_hand),
        cmocka_unit_test(test_the_daemon_stops_cleanly_and_never_logs_a_key),
    };
    /* KEYGATE_TEST_DATABASE=postgres: the same tests on a PostgreSQL store
     * (integration_test_admin_api_postgres). */
    int rc = kt_daemon_backend_start();

    if (rc != 0)
        return rc == KT_PG_SKIP ? KT_PG_SKIP : 1;
    rc = cmocka_run_group_tests(tests, setup, teardown);
    kt_daemon_backend_stop();
    return rc;
}
