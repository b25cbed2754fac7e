/* unit/console/test_selfservice.c - CTest: unit_console_test_selfservice.
 *
 * console/selfservice.c over a real store, without a server: every change
 * needs the session cookie and its anti-CSRF token; a cross-site request is
 * 403 whatever it holds; another user's key is 404 exactly like a missing
 * one; require_scopes refuses a key without scopes at creation; the
 * tenant's key_max_lifetime refuses a longer expiry; an expired key can be
 * regenerated and a revoked one cannot; answers holding a key are secret;
 * every key carries canary, allowed_ips and expiring (by the request's clock).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "keygate/accounts.h"
#include "keygate/keys.h"
#include "keygate/selfservice.h"
#include "unit/fixture.h"

#define PASSWORD "Correct horse 42"

struct world {
    struct kg_fx_store *fx;
    struct kg_config *cfg;
    int64_t now;
    char cookie[2][128]; /* alice, bob */
    char csrf[2][KG_SESSION_CSRF_LEN + 1];
};

static void
make_user(struct world *w, const char *name, const char *email)
{
    struct kg_user_new u = {.username = name, .email = email, .role = "read:items,write:items"};
    struct kg_user_rec rec;
    struct kg_err err = {{0}};

    assert_int_equal(
        kg_accounts_user_create(&w->fx->kc, NULL, &u, NULL, w->now, &rec, NULL, NULL, &err), KG_OK);
    assert_int_equal(
        kg_accounts_user_set_password(&w->fx->kc, NULL, rec.id, PASSWORD, w->now, &rec, &err),
        KG_OK);
}

/* One request; rq's clock and Host are filled in. Returns the parsed body. */
static json_t *
call(struct world *w, struct kg_console_req rq, struct kg_console_answer *a)
{
    struct kg_console_env env = {.store = w->fx->store, .secret = w->fx->secret, .cfg = w->cfg};

    rq.now = w->now;
    rq.now_ms = w->now * 1000;
    if (rq.host == NULL)
        rq.host = "gw.example";
    if (rq.body != NULL && rq.body_len == 0)
        rq.body_len = strlen(rq.body);
    if (rq.body != NULL && rq.content_type == NULL)
        rq.content_type = "application/json";
    kg_selfservice_handle(&env, &rq, a);
    return a->body != NULL ? json_loadb(a->body, a->body_len, 0, NULL) : NULL;
}

static void
sign_in(struct world *w, int who, const char *login)
{
    struct kg_console_answer a;
    char body[200];
    json_t *doc;
    const char *tok;

    snprintf(body, sizeof(body), "{\"login\": \"%s\", \"password\": \"%s\"}", login, PASSWORD);
    doc =
        call(w, (struct kg_console_req){.method = "POST", .path = "api/session", .body = body}, &a);
    assert_int_equal(a.status, 200);
    tok = strstr(a.set_cookie, KG_SESSION_COOKIE "=");
    assert_non_null(tok);
    assert_non_null(strstr(a.set_cookie, "HttpOnly"));
    assert_non_null(strstr(a.set_cookie, "SameSite=Strict"));
    assert_non_null(strstr(a.set_cookie, "Path=/console/"));
    snprintf(w->cookie[who], sizeof(w->cookie[who]), "%.*s", (int)strcspn(tok, ";"), tok);
    snprintf(w->csrf[who], sizeof(w->csrf[who]), "%s",
             json_string_value(json_object_get(doc, "csrf_token")));
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

static int
setup_with(void **state, const char *conf)
{
    unsigned char bytes[KG_SECRET_BYTES];
    struct world *w = calloc(1, sizeof(*w));

    memset(bytes, 3, sizeof(bytes));
    w->fx = kg_fx_store_new("selfservice", bytes, "cli:test");
    assert_int_equal(kg_fx_load_config(conf, &w->cfg), 0);
    w->fx->kc.cfg = w->cfg;
    w->now = 1800000000;
    make_user(w, "alice", "alice@example.com");
    make_user(w, "bob", "bob@example.com");
    sign_in(w, 0, "alice");
    sign_in(w, 1, "bob@example.com");
    *state = w;
    return 0;
}

static int
setup(void **state)
{
    return setup_with(state, "console on\nscope read:items \"Read items\"\n"
                             "route GET /items/* read:items\n");
}

static int
setup_strict(void **state)
{
    return setup_with(state,
                      "console on\nrequire_scopes on\ntenant default key_max_lifetime 90d\n");
}

static int
teardown(void **state)
{
    struct world *w = *state;

    kg_config_free(w->cfg);
    kg_fx_store_free(w->fx);
    free(w);
    return 0;
}

/* POST/GET as user who, with its cookie and (with_csrf) its token. */
static json_t *
as(struct world *w, int who, bool with_csrf, const char *method, const char *target,
   const char *body, struct kg_console_answer *a)
{
    char path[256];
    const char *q = strchr(target, '?');

    snprintf(path, sizeof(path), "%.*s", (int)strcspn(target, "?"), target);
    return call(w,
                (struct kg_console_req){.method = method,
                                        .path = path,
                                        .query = q != NULL ? q + 1 : NULL,
                                        .body = body,
                                        .cookie = w->cookie[who],
                                        .csrf = with_csrf ? w->csrf[who] : NULL,
                                        .sec_fetch_site = "same-origin",
                                        .origin = "http://gw.example"},
                a);
}

/* Creates a key for who; returns its id (static buffer). */
static const char *
create(struct world *w, int who, const char *body)
{
    static char id[KG_ID_MAX];
    struct kg_console_answer a;
    json_t *doc = as(w, who, true, "POST", "api/keys", body, &a);

    assert_int_equal(a.status, 201);
    assert_true(a.body_secret);
    assert_true(json_string_length(json_object_get(doc, "key")) > 40);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    return id;
}

static void
test_changes_need_the_anti_csrf_token(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    json_t *doc;

    doc = as(w, 0, false, "POST", "api/keys", "{\"name\": \"x\"}", &a);
    assert_int_equal(a.status, 403);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    /* Another session's token is not this one's. */
    doc = call(w,
               (struct kg_console_req){.method = "POST",
                                       .path = "api/keys",
                                       .body = "{\"name\": \"x\"}",
                                       .cookie = w->cookie[0],
                                       .csrf = w->csrf[1]},
               &a);
    assert_int_equal(a.status, 403);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    /* Reading needs the cookie only; without it, 401. */
    doc = as(w, 0, false, "GET", "api/keys", NULL, &a);
    assert_int_equal(a.status, 200);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    doc = call(w, (struct kg_console_req){.method = "GET", .path = "api/keys"}, &a);
    assert_int_equal(a.status, 401);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    create(w, 0, "{\"name\": \"ok\", \"expires\": \"90d\", \"scopes\": [\"read:items\"]}");
}

static void
test_cross_site_requests_are_refused_whatever_they_hold(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    json_t *doc;

    /* A form another site posts: a cross-site fetch, a foreign Origin, "null". */
    const struct kg_console_req bad[] = {
        {.method = "POST", .path = "api/keys", .sec_fetch_site = "cross-site"},
        {.method = "POST", .path = "api/keys", .sec_fetch_site = "same-site"},
        {.method = "POST", .path = "api/keys", .origin = "http://evil.example"},
        {.method = "POST", .path = "api/keys", .origin = "null"},
        {.method = "POST", .path = "api/session", .origin = "https://gw.example"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kg_console_req rq = bad[i];

        rq.cookie = w->cookie[0];
        rq.csrf = w->csrf[0];
        rq.body = "{\"name\": \"x\"}";
        doc = call(w, rq, &a);
        assert_int_equal(a.status, 403);
        json_decref(doc);
        kg_selfservice_answer_cleanup(&a);
    }
    /* A form's own content types are refused too. */
    doc = call(w,
               (struct kg_console_req){.method = "POST",
                                       .path = "api/keys",
                                       .body = "name=x",
                                       .content_type = "application/x-www-form-urlencoded",
                                       .cookie = w->cookie[0],
                                       .csrf = w->csrf[0]},
               &a);
    assert_int_equal(a.status, 415);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

static void
test_another_users_key_is_404_like_a_missing_one(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    char path[128], missing[128];
    const char *id = create(w, 0, "{\"name\": \"alice-key\", \"scopes\": \"read:items\"}");
    json_t *doc;

    snprintf(path, sizeof(path), "api/keys/%s/revoke", id);
    doc = as(w, 1, true, "POST", path, NULL, &a);
    assert_int_equal(a.status, 404);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    snprintf(path, sizeof(path), "api/keys/%s/regenerate", id);
    doc = as(w, 1, true, "POST", path, NULL, &a);
    assert_int_equal(a.status, 404);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    snprintf(missing, sizeof(missing), "api/keys/key_doesnotexist0000000000/revoke");
    doc = as(w, 1, true, "POST", missing, NULL, &a);
    assert_int_equal(a.status, 404);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    /* Bob's listing does not hold it; Alice's does. */
    doc = as(w, 1, false, "GET", "api/keys?state=all", NULL, &a);
    assert_int_equal(a.status, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "data")), 0);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    doc = as(w, 0, false, "GET", "api/keys", NULL, &a);
    assert_int_equal(json_array_size(json_object_get(doc, "data")), 1);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

static void
test_expired_keys_regenerate_and_revoked_ones_stay_revoked(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    char path[128], id[KG_ID_MAX];
    json_t *doc;

    snprintf(id, sizeof(id), "%s", create(w, 0, "{\"name\": \"temp\", \"expires\": \"30d\"}"));
    w->now += 31 * 86400; /* expired */
    doc = as(w, 0, false, "GET", "api/keys", NULL, &a);
    assert_int_equal(json_array_size(json_object_get(doc, "data")), 0); /* active only */
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    sign_in(w, 0, "alice"); /* the session idled out meanwhile */
    doc = as(w, 0, false, "GET", "api/keys?state=expired", NULL, &a);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(doc, "data"), 0), "state")),
                        "expired");
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    snprintf(path, sizeof(path), "api/keys/%s/regenerate", id);
    doc = as(w, 0, true, "POST", path, NULL, &a);
    assert_int_equal(a.status, 201);
    assert_true(a.body_secret);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "active");
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "temp");
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    /* The old one was replaced: revoked, and so final. */
    doc = as(w, 0, true, "POST", path, NULL, &a);
    assert_int_equal(a.status, 409);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    snprintf(path, sizeof(path), "api/keys/%s/revoke", id);
    doc = as(w, 0, true, "POST", path, NULL, &a);
    assert_int_equal(a.status, 409);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

/* The page's canary badge, allowlist and expiry reminder come from these. */
static void
test_keys_carry_canary_allowed_ips_and_expiring(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = NULL;
    const struct kg_key_new reqs[] = {
        {.name = "canary", .user = "alice", .canary = true},
        {.name = "office",
         .user = "alice",
         .allowed_ips = "10.0.0.0/8,2001:db8::/32",
         .expires = "10d"},
        {.name = "later", .user = "alice", .expires = "15d"},
    };
    json_t *doc, *data;

    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        assert_int_equal(kg_keys_create(&w->fx->kc, NULL, &reqs[i], w->now, &rec, &key, &err),
                         KG_OK);
        kg_keys_key_free(key);
    }
    doc = as(w, 0, false, "GET", "api/keys", NULL, &a);
    assert_int_equal(a.status, 200);
    data = json_object_get(doc, "data");
    assert_int_equal(json_array_size(data), 3);
    for (size_t i = 0; i < json_array_size(data); i++) {
        json_t *k = json_array_get(data, i), *ips = json_object_get(k, "allowed_ips");
        const char *name = json_string_value(json_object_get(k, "name"));
        bool office = strcmp(name, "office") == 0;

        assert_true(json_is_boolean(json_object_get(k, "canary")));
        assert_true(json_is_boolean(json_object_get(k, "expiring")));
        assert_true(json_is_array(ips));
        assert_int_equal(json_is_true(json_object_get(k, "canary")), strcmp(name, "canary") == 0);
        /* 10 days is within the 14; 15 days and never are not. */
        assert_int_equal(json_is_true(json_object_get(k, "expiring")), office);
        assert_int_equal(json_array_size(ips), office ? 2 : 0);
        if (office) {
            assert_string_equal(json_string_value(json_array_get(ips, 0)), "10.0.0.0/8");
            assert_string_equal(json_string_value(json_array_get(ips, 1)), "2001:db8::/32");
        }
    }
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

static void
test_sign_out_ends_the_session(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    json_t *doc;

    doc = as(w, 0, true, "DELETE", "api/session", NULL, &a);
    assert_int_equal(a.status, 200);
    assert_non_null(strstr(a.set_cookie, "Max-Age=0"));
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    doc = as(w, 0, false, "GET", "api/keys", NULL, &a);
    assert_int_equal(a.status, 401);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

static void
test_scopes_are_the_roles_with_catalogue_descriptions(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    json_t *doc = as(w, 0, false, "GET", "api/scopes", NULL, &a), *el;

    assert_int_equal(a.status, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "data")), 1);
    el = json_array_get(json_object_get(doc, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(el, "name")), "read:items");
    assert_string_equal(json_string_value(json_object_get(el, "description")), "Read items");
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

static void
test_require_scopes_and_max_lifetime_refuse_at_creation(void **state)
{
    struct world *w = *state;
    struct kg_console_answer a;
    json_t *doc;

    doc = as(w, 0, true, "POST", "api/keys", "{\"name\": \"n\", \"expires\": \"30d\"}", &a);
    assert_int_equal(a.status, 400);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    doc = as(w, 0, true, "POST", "api/keys",
             "{\"name\": \"n\", \"expires\": \"365d\", \"scopes\": [\"read:items\"]}", &a);
    assert_int_equal(a.status, 400);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    doc = as(w, 0, true, "POST", "api/keys",
             "{\"name\": \"n\", \"expires\": \"never\", \"scopes\": [\"read:items\"]}", &a);
    assert_int_equal(a.status, 400);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
    create(w, 0, "{\"name\": \"n\", \"expires\": \"90d\", \"scopes\": [\"read:items\"]}");
    doc = as(w, 0, false, "GET", "api/session", NULL, &a);
    assert_int_equal(json_integer_value(
                         json_object_get(json_object_get(doc, "policy"), "key_max_lifetime_days")),
                     90);
    json_decref(doc);
    kg_selfservice_answer_cleanup(&a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_changes_need_the_anti_csrf_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_site_requests_are_refused_whatever_they_hold,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_another_users_key_is_404_like_a_missing_one, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_keys_regenerate_and_revoked_ones_stay_revoked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_carry_canary_allowed_ips_and_expiring, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sign_out_ends_the_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scopes_are_the_roles_with_catalogue_descriptions,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_require_scopes_and_max_lifetime_refuse_at_creation,
                                        setup_strict, teardown),
    };

    kg_fx_clear_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
