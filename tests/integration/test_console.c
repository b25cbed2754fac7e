/* integration/test_console.c - CTest: integration_test_console.
 *
 * The web console on the real daemon's public listener, driven the way the
 * page drives it (curl-like requests with the session cookie and the
 * anti-CSRF header): the page's security headers; passwords set by
 * `keygate users passwd` (from stdin) and by POST /v1/users/{id}/password;
 * sign-in with the same answer for a wrong password and an unknown user;
 * a key created with a 90-day expiry and a scope that works through the
 * gateway while a scope it lacks gets 403; revocation answered 401 by the
 * gateway within a second; another user's key 404; a cross-site form post
 * 403; sign-out; a disabled user's session ended and its keys shown
 * "disabled" by the admin API.
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
#include "helpers/upstream.h"

#define PASSWORD_A "Alice password 1"
#define PASSWORD_B "Bob password 22"
#define KEY_LEN 54

struct session {
    char cookie[128]; /* "keygate_console=…" */
    char csrf[80];
};

static struct {
    struct kt_upstream *up;
    struct kt_daemon *d;
    char *root; /* platform admin key from keygate init */
    char *bob_id;
    struct session alice, bob;
} W;

struct reply {
    long status;
    json_t *doc;
    char *headers;
};

static void
reply_cleanup(struct reply *r)
{
    json_decref(r->doc);
    free(r->headers);
    memset(r, 0, sizeof(*r));
}

/* A console API request; s (may be NULL) adds the cookie and, with csrf,
 * the X-CSRF-Token header; extra (may be NULL) one more header line. */
static void
console(const char *method, const char *path, const struct session *s, bool csrf, const char *extra,
        const char *body, struct reply *out)
{
    char url_path[256], cookie[160], token[128];
    const char *headers[6];
    size_t n = 0;
    struct kt_http_resp resp;

    memset(out, 0, sizeof(*out));
    snprintf(url_path, sizeof(url_path), "/console/%s", path);
    if (s != NULL) {
        snprintf(cookie, sizeof(cookie), "Cookie: %s", s->cookie);
        headers[n++] = cookie;
        if (csrf) {
            snprintf(token, sizeof(token), "X-CSRF-Token: %s", s->csrf);
            headers[n++] = token;
        }
    }
    if (body != NULL)
        headers[n++] = "Content-Type: application/json";
    if (extra != NULL)
        headers[n++] = extra;
    headers[n] = NULL;
    assert_true(kt_http_do(&(struct kt_http_req){.method = method,
                                                 .url = kt_daemon_url(W.d, url_path),
                                                 .headers = headers,
                                                 .body = body,
                                                 .body_len = body != NULL ? strlen(body) : 0},
                           &resp));
    out->status = resp.status;
    out->headers = resp.headers;
    resp.headers = NULL;
    out->doc = resp.body != NULL ? json_loads(resp.body, 0, NULL) : NULL;
    kt_http_resp_cleanup(&resp);
}

static const char *
str(const struct reply *r, const char *name)
{
    return json_string_value(json_object_get(r->doc, name));
}

static bool
sign_in(const char *login, const char *password, struct session *s, struct reply *r)
{
    char body[256], *set, *p;

    snprintf(body, sizeof(body), "{\"login\": \"%s\", \"password\": \"%s\"}", login, password);
    kt_http_note_sent(password, strlen(password));
    console("POST", "api/session", NULL, false, NULL, body, r);
    if (r->status != 200)
        return false;
    set = kt_http_header(&(struct kt_http_resp){.headers = r->headers}, "Set-Cookie");
    assert_non_null(set);
    assert_non_null(strstr(set, "HttpOnly"));
    assert_non_null(strstr(set, "SameSite=Strict"));
    assert_non_null(strstr(set, "Path=/console/"));
    p = strchr(set, ';');
    snprintf(s->cookie, sizeof(s->cookie), "%.*s", (int)(p - set), set);
    snprintf(s->csrf, sizeof(s->csrf), "%s", str(r, "csrf_token"));
    free(set);
    return true;
}

/* An admin API call with the platform admin key. */
static long
admin(const char *method, const char *path, const char *body, json_t **doc)
{
    struct kt_http_resp resp;
    long status;

    assert_true(kt_http_do_key(
        &(struct kt_http_req){.method = method,
                              .url = kt_daemon_admin_url(W.d, path),
                              .headers =
                                  (const char *const[]){"Content-Type: application/json", NULL},
                              .body = body,
                              .body_len = body != NULL ? strlen(body) : 0},
        W.root, &resp));
    status = resp.status;
    if (doc != NULL)
        *doc = resp.body != NULL ? json_loads(resp.body, 0, NULL) : NULL;
    kt_http_resp_cleanup(&resp);
    return status;
}

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

/* `keygate users passwd USER` with the password on stdin, as a script would. */
static int
passwd_from_stdin(const char *user, const char *password)
{
    char cmd[1024];
    FILE *f;

    snprintf(cmd, sizeof(cmd), "'%s' users passwd '%s' -c '%s' >/dev/null 2>&1",
             getenv("KEYGATE_BIN"), user, kt_daemon_config_path(W.d));
    f = popen(cmd, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%s\n", password);
    return pclose(f);
}

static int
setup(void **state)
{
    char cfg[1024];
    struct kt_cli_result res;
    json_t *doc = NULL;

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\n"
             "console on\n"
             "route GET /items/* read:items\n"
             "route POST /items/* write:items\n"
             "scope read:items \"Read items\"\n"
             "scope write:items \"Create and change items\"\n",
             kt_upstream_url(W.up));
    W.d = kt_daemon_new(cfg);
    if (W.d == NULL || !kt_daemon_cli(W.d, &res, (const char *const[]){"init", NULL}))
        return -1;
    W.root = key_in(res.out);
    kt_cli_result_cleanup(&res);
    if (W.root == NULL)
        return -1;
    kt_daemon_remember_key(W.d, W.root);
    if (!kt_daemon_cli(W.d, &res,
                       (const char *const[]){"users", "create", "--username", "alice", "--email",
                                             "alice@example.com", NULL}) ||
        res.exit_code != 0)
        return -1;
    kt_cli_result_cleanup(&res);
    if (passwd_from_stdin("alice", PASSWORD_A) != 0)
        return -1;
    kt_http_note_sent(PASSWORD_A, strlen(PASSWORD_A));
    kt_http_note_sent(PASSWORD_B, strlen(PASSWORD_B));
    if (!kt_daemon_start(W.d))
        return -1;
    if (admin("POST", "/v1/users", "{\"username\": \"bob\", \"email\": \"bob@example.com\"}",
              &doc) != 201)
        return -1;
    W.bob_id = strdup(json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    if (W.d != NULL) {
        assert_int_equal(kt_daemon_stop(W.d), 0);
        kt_daemon_free(W.d);
    }
    kt_upstream_stop(W.up);
    free(W.root);
    free(W.bob_id);
    kt_http_global_cleanup();
    return 0;
}

static void
test_the_page_comes_with_its_security_headers(void **state)
{
    struct kt_http_resp resp;
    char buf[128];

    (void)state;
    assert_true(kt_http_get(kt_daemon_url(W.d, "/console/"), NULL, &resp));
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.body, "<title>API keys</title>"));
    assert_string_equal(kt_http_header_buf(&resp, "Content-Security-Policy", buf, sizeof(buf)),
                        "default-src 'self'; frame-ancestors 'none'");
    assert_string_equal(kt_http_header_buf(&resp, "X-Content-Type-Options", buf, sizeof(buf)),
                        "nosniff");
    assert_string_equal(kt_http_header_buf(&resp, "Referrer-Policy", buf, sizeof(buf)),
                        "no-referrer");
    kt_http_resp_cleanup(&resp);
    assert_true(kt_http_get(kt_daemon_url(W.d, "/console/app.js"), NULL, &resp));
    assert_int_equal(resp.status, 200);
    kt_http_resp_cleanup(&resp);
    /* Never proxied: a path below the console that is nothing is ours to 404. */
    assert_true(kt_http_get(kt_daemon_url(W.d, "/console/nothing.html"), NULL, &resp));
    assert_int_equal(resp.status, 404);
    assert_int_equal(kt_upstream_count(W.up), 0);
    kt_http_resp_cleanup(&resp);
}

static void
test_passwords_from_stdin_and_the_admin_api_sign_in(void **state)
{
    struct reply r;
    char path[128];
    long st;

    (void)state;
    assert_true(sign_in("alice", PASSWORD_A, &W.alice, &r));
    reply_cleanup(&r);
    snprintf(path, sizeof(path), "/v1/users/%s/password", W.bob_id);
    assert_int_equal(admin("POST", path, "{\"password\": \"short1\"}", NULL), 400);
    st = admin("POST", path, "{\"password\": \"" PASSWORD_B "\"}", NULL);
    assert_int_equal(st, 200);
    assert_true(sign_in("bob@example.com", PASSWORD_B, &W.bob, &r));
    reply_cleanup(&r);
}

static void
test_a_wrong_password_and_an_unknown_user_get_the_same_answer(void **state)
{
    struct reply a, b;
    struct session s;

    (void)state;
    assert_false(sign_in("alice", "Not the password 9", &s, &a));
    assert_false(sign_in("nobody@example.com", "Not the password 9", &s, &b));
    assert_int_equal(a.status, 401);
    assert_int_equal(b.status, 401);
    assert_string_equal(str(&a, "detail"), str(&b, "detail"));
    assert_null(strstr(a.headers, "Set-Cookie"));
    reply_cleanup(&a);
    reply_cleanup(&b);
}

static void
test_a_key_made_in_the_console_works_and_revocation_stops_it(void **state)
{
    struct reply r;
    struct kt_http_resp resp;
    char path[128], id[64], *key;
    int64_t t0;

    (void)state;
    if (W.alice.cookie[0] == '\0') {
        assert_true(sign_in("alice", PASSWORD_A, &W.alice, &r));
        reply_cleanup(&r);
    }
    console("POST", "api/keys", &W.alice, true, NULL,
            "{\"name\": \"ci\", \"expires\": \"90d\", \"scopes\": [\"read:items\"]}", &r);
    assert_int_equal(r.status, 201);
    assert_non_null(strstr(r.headers, "Cache-Control: no-store"));
    key = strdup(str(&r, "key"));
    kt_daemon_remember_key(W.d, key);
    snprintf(id, sizeof(id), "%s", str(&r, "id"));
    reply_cleanup(&r);
    assert_true(kt_http_get_key(kt_daemon_url(W.d, "/items/1"), key, NULL, &resp));
    assert_int_equal(resp.status, 200);
    kt_http_resp_cleanup(&resp);
    assert_true(kt_http_do_key(
        &(struct kt_http_req){
            .method = "POST", .url = kt_daemon_url(W.d, "/items/1"), .body = "{}", .body_len = 2},
        key, &resp));
    assert_int_equal(resp.status, 403);
    kt_http_resp_cleanup(&resp);

    /* Bob cannot touch it: 404, as for a key that does not exist. */
    if (W.bob.cookie[0] != '\0') {
        snprintf(path, sizeof(path), "api/keys/%s/revoke", id);
        console("POST", path, &W.bob, true, NULL, NULL, &r);
        assert_int_equal(r.status, 404);
        reply_cleanup(&r);
    }
    /* A form another site posts: refused whatever it carries. */
    snprintf(path, sizeof(path), "api/keys/%s/revoke", id);
    console("POST", path, &W.alice, true, "Origin: http://evil.example", NULL, &r);
    assert_int_equal(r.status, 403);
    reply_cleanup(&r);
    console("POST", path, &W.alice, false, NULL, NULL, &r);
    assert_int_equal(r.status, 403);
    reply_cleanup(&r);

    console("POST", path, &W.alice, true, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(&r, "state"), "revoked");
    reply_cleanup(&r);
    t0 = kt_mono_ms();
    for (;;) {
        assert_true(kt_http_get_key(kt_daemon_url(W.d, "/items/1"), key, NULL, &resp));
        if (resp.status == 401)
            break;
        kt_http_resp_cleanup(&resp);
        assert_true(kt_mono_ms() - t0 < 1000);
        kt_sleep_ms(20);
    }
    kt_http_resp_cleanup(&resp);
    free(key);
}

static void
test_sign_out_and_disabling_end_sessions(void **state)
{
    struct reply r;
    struct session s;
    char path[128];
    json_t *doc = NULL;

    (void)state;
    assert_true(sign_in("alice", PASSWORD_A, &s, &r));
    reply_cleanup(&r);
    console("DELETE", "api/session", &s, true, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    reply_cleanup(&r);
    console("GET", "api/keys", &s, false, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    reply_cleanup(&r);

    /* Bob has a key and a session; disabling him ends the session and the
     * admin API shows the key as disabled. */
    assert_true(sign_in("bob", PASSWORD_B, &s, &r));
    reply_cleanup(&r);
    console("POST", "api/keys", &s, true, NULL, "{\"name\": \"b\", \"expires\": \"never\"}", &r);
    assert_int_equal(r.status, 201);
    kt_daemon_remember_key(W.d, str(&r, "key"));
    snprintf(path, sizeof(path), "/v1/keys/%s", str(&r, "id"));
    reply_cleanup(&r);
    {
        char dis[128];

        snprintf(dis, sizeof(dis), "/v1/users/%s/disable", W.bob_id);
        assert_int_equal(admin("POST", dis, NULL, NULL), 200);
    }
    console("GET", "api/keys", &s, false, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    reply_cleanup(&r);
    assert_int_equal(admin("GET", path, NULL, &doc), 200);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "disabled");
    json_decref(doc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_page_comes_with_its_security_headers),
        cmocka_unit_test(test_passwords_from_stdin_and_the_admin_api_sign_in),
        cmocka_unit_test(test_a_wrong_password_and_an_unknown_user_get_the_same_answer),
        cmocka_unit_test(test_a_key_made_in_the_console_works_and_revocation_stops_it),
        cmocka_unit_test(test_sign_out_and_disabling_end_sessions),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
