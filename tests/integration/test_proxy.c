/* integration/test_proxy.c - CTest: integration_test_proxy.
 *
 * The real daemon in front of a stub upstream: routes and scopes (with the
 * path tricks a rule must still catch, checked against what the upstream
 * saw), the headers that cross and the ones that must not, 64 MiB bodies
 * both ways in bounded memory, 502 and 504 in both error styles, and a slow
 * upstream that must not hold up anyone else.
 */
#include <pthread.h>
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

/* Sanitizers multiply resident memory; the RSS bound only means something without them. */
#if defined(__SANITIZE_ADDRESS__)
#define KT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_SANITIZED 1
#endif
#endif

#define BIG_BYTES (64ULL * 1024 * 1024)
#define RSS_LIMIT_KIB (48L * 1024)
#define SLOW_REQUESTS 8
#define FAST_REQUESTS 50
#define FAST_BATCH_LIMIT_MS 1000
#define KT_ID_MAX 256 /* room for any X-Request-Id a test sends or gets */

#define ROUTES                                                                                     \
    "route GET /admin* admin:all\n"                                                                \
    "route * /v1/items* read:items\n"

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;     /* routes, require_scopes off, credential_header X-Api-Key */
    struct kt_daemon *gw_req; /* routes, require_scopes on */
    struct kt_daemon *gw_fwd; /* forward_credentials on */
    struct kt_daemon *gw_big; /* only the 64 MiB bodies, for a clean peak RSS */
    long big_base_kib;        /* gw_big's peak RSS before the first big body */
    struct kt_key full, star, read_star, items, writer, admin, tenant_key;
    struct kt_key req_none, req_items;
    struct kt_key fwd_full;
    struct kt_key big_full;
    struct kt_daemon *scratch; /* a daemon one test starts and stops */
    struct kt_key scratch_key;
};

static struct world W;

/* What a test holds lives here, not on the stack: a failed assertion
 * longjmps out of the test, and free_slots (each test's teardown) frees it,
 * stopping a scratch daemon too. */
static struct kt_http_resp R;
static struct kt_echo E;

static int
free_slots(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    kt_echo_cleanup(&E);
    kt_daemon_free(W.scratch);
    W.scratch = NULL;
    kt_key_cleanup(&W.scratch_key);
    return 0;
}

static int teardown(void **state);

static int
setup(void **state)
{
    char cfg[1024];
    const char *tenant_args[] = {"keys",     "create", "--name",   "acme-reader",
                                 "--tenant", "acme",   "--scopes", "read:items,extra:thing",
                                 "--json",   NULL};

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg), "upstream %s\ncredential_header X-Api-Key\n" ROUTES,
             kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\nrequire_scopes on\n" ROUTES, kt_upstream_url(W.up));
    W.gw_req = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\ncredential_header X-Api-Key\nforward_credentials on\n",
             kt_upstream_url(W.up));
    W.gw_fwd = kt_daemon_new(cfg);
    /* gw_big also stands behind a trusted proxy (the tests' own loopback). */
    snprintf(cfg, sizeof(cfg), "upstream %s\ntrusted_proxies 127.0.0.1/32\n",
             kt_upstream_url(W.up));
    W.gw_big = kt_daemon_new(cfg);
    if (W.gw == NULL || W.gw_req == NULL || W.gw_fwd == NULL || W.gw_big == NULL)
        goto fail;
    if (!kt_daemon_create_key(W.gw, "full", NULL, NULL, &W.full) ||
        !kt_daemon_create_key(W.gw, "star", "*", NULL, &W.star) ||
        !kt_daemon_create_key(W.gw, "read-star", "read:*", NULL, &W.read_star) ||
        !kt_daemon_create_key(W.gw, "items", "read:items", NULL, &W.items) ||
        !kt_daemon_create_key(W.gw, "writer", "write:things", NULL, &W.writer) ||
        !kt_daemon_create_key(W.gw, "admin", "admin:all", NULL, &W.admin) ||
        !kt_daemon_key_cli(W.gw, tenant_args, &W.tenant_key) ||
        !kt_daemon_create_key(W.gw_req, "none", NULL, NULL, &W.req_none) ||
        !kt_daemon_create_key(W.gw_req, "items", "read:items", NULL, &W.req_items) ||
        !kt_daemon_create_key(W.gw_fwd, "full", NULL, NULL, &W.fwd_full) ||
        !kt_daemon_create_key(W.gw_big, "full", NULL, NULL, &W.big_full))
        goto fail;
    if (!kt_daemon_start(W.gw) || !kt_daemon_start(W.gw_req) || !kt_daemon_start(W.gw_fwd) ||
        !kt_daemon_start(W.gw_big))
        goto fail;
    /* gw_big's peak before any big body: one small exchange has set up
     * what every exchange shares (a worker's pool, the client). */
    if (!kt_http_get_key(kt_daemon_url(W.gw_big, "/v1/warm-up"), W.big_full.key, NULL, &R) ||
        R.status != 200)
        goto fail;
    kt_http_resp_cleanup(&R);
    W.big_base_kib = kt_daemon_peak_rss_kib(W.gw_big);
    return 0;

fail:
    teardown(state);
    return -1;
}

static int
teardown(void **state)
{
    struct kt_key *keys[] = {&W.full,      &W.star,     &W.read_star,  &W.items,
                             &W.writer,    &W.admin,    &W.tenant_key, &W.req_none,
                             &W.req_items, &W.fwd_full, &W.big_full};

    (void)state;
    kt_daemon_free(W.gw);
    kt_daemon_free(W.gw_req);
    kt_daemon_free(W.gw_fwd);
    kt_daemon_free(W.gw_big);
    kt_upstream_stop(W.up);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        kt_key_cleanup(keys[i]);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

/* ---- small tools ---- */

struct hdrs {
    char lines[8][600];
    const char *list[9];
    size_t n;
};

static const char *const *
hdrs_list(struct hdrs *h)
{
    for (size_t i = 0; i < h->n; i++)
        h->list[i] = h->lines[i];
    h->list[h->n] = NULL;
    return h->list;
}

static void
hdrs_add(struct hdrs *h, const char *fmt, const char *value)
{
    if (h->n < 8)
        snprintf(h->lines[h->n++], sizeof(h->lines[0]), fmt, value);
}

static void
request(struct kt_daemon *d, const char *method, const char *path, const char *key,
        struct hdrs *extra, struct kt_http_resp *r)
{
    struct hdrs none = {.n = 0};
    struct hdrs *h = extra != NULL ? extra : &none;
    struct kt_http_req req = {.method = method};

    if (key != NULL)
        hdrs_add(h, "Authorization: Bearer %s", key);
    req.url = kt_daemon_url(d, path);
    req.headers = hdrs_list(h);
    kt_http_resp_cleanup(r); /* whatever the slot held from the last request */
    assert_true(kt_http_do(&req, r));
}

/* 200 from the upstream echo; e must be cleaned up. */
static void
expect_echo(const struct kt_http_resp *r, struct kt_echo *e)
{
    kt_echo_cleanup(e);
    if (r->status != 200)
        print_error("got %ld %s\n", r->status, r->body);
    assert_int_equal(r->status, 200);
    assert_true(kt_echo_parse(r->body, r->body_len, e));
}

static void
expect_json_content_type(const struct kt_http_resp *r)
{
    char ct[128] = "";

    assert_non_null(kt_http_header_buf(r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/json");
}

/* A keygate answer: status, Content-Type and the body byte for byte. */
static void
expect_body(const struct kt_http_resp *r, long status, const char *body)
{
    if (r->status != status || r->body == NULL || strcmp(r->body, body) != 0)
        print_error("got %ld %s\nwanted %ld %s\n", r->status, r->body, status, body);
    assert_int_equal(r->status, status);
    expect_json_content_type(r);
    assert_string_equal(r->body, body);
}

/* The detail-style 403 for a missing scope, byte for byte. */
static void
expect_scope_403(const struct kt_http_resp *r, const char *scope)
{
    char body[256];

    snprintf(body, sizeof(body), "{\"detail\": \"API key is missing the required scope %s.\"}",
             scope);
    expect_body(r, 403, body);
}

static void
expect_allowed(struct kt_daemon *d, const char *method, const char *path, const char *key)
{

    request(d, method, path, key, NULL, &R);
    expect_echo(&R, &E);
    assert_string_equal(kt_echo_method(&E), method);
    assert_string_equal(kt_echo_target(&E), path);
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

/* 403 naming scope; the upstream never saw the target. */
static void
expect_forbidden(struct kt_daemon *d, const char *method, const char *path, const char *key,
                 const char *scope)
{
    size_t before = kt_upstream_count(W.up);

    request(d, method, path, key, NULL, &R);
    expect_scope_403(&R, scope);
    assert_int_equal(kt_upstream_count(W.up), before);
    kt_http_resp_cleanup(&R);
}

/* ---- routes and scopes ---- */

static void
test_a_key_without_scopes_reaches_every_route(void **state)
{
    (void)state;
    expect_allowed(W.gw, "GET", "/admin/users", W.full.key);
    expect_allowed(W.gw, "GET", "/v1/items/1", W.full.key);
    expect_allowed(W.gw, "DELETE", "/v1/items/1", W.full.key);
    expect_allowed(W.gw, "GET", "/unrouted", W.full.key);
}

static void
test_a_star_scope_grants_every_route(void **state)
{
    (void)state;
    expect_allowed(W.gw, "GET", "/admin", W.star.key);
    expect_allowed(W.gw, "POST", "/v1/items", W.star.key);
}

static void
test_a_read_star_scope_grants_read_items_but_not_admin(void **state)
{
    (void)state;
    expect_allowed(W.gw, "GET", "/v1/items/7", W.read_star.key);
    expect_allowed(W.gw, "PUT", "/v1/itemsets", W.read_star.key);
    expect_forbidden(W.gw, "GET", "/admin/x", W.read_star.key, "admin:all");
}

static void
test_a_missing_scope_is_403_naming_it(void **state)
{
    (void)state;
    expect_forbidden(W.gw, "GET", "/admin", W.items.key, "admin:all");
    expect_forbidden(W.gw, "GET", "/v1/items/1", W.writer.key, "read:items");
    expect_forbidden(W.gw, "POST", "/v1/items", W.admin.key, "read:items");
    expect_allowed(W.gw, "GET", "/admin/ok", W.admin.key);
    expect_allowed(W.gw, "GET", "/v1/items/ok", W.items.key);
    /* The admin rule is for GET only; other methods match no rule. */
    expect_allowed(W.gw, "POST", "/admin/post", W.items.key);
}

static void
test_path_tricks_meet_the_rule_and_never_reach_the_upstream(void **state)
{
    static const char *const tricks[] = {
        "//admin",
        "/x/../admin",
        "/%61dmin",
        "/%2e%2e/admin",
        "/%2E%2E/admin",
        "/./admin",
        "///admin/users",
        "/v1/../admin",
        "/admin/.",
        "/%41dmin/../admin",
        "/a/b/../../admin?x=1",
        "/%61%64%6d%69%6e",
        "/x/%2e%2e/admin",
        "/../admin",
    };
    char *seen;

    (void)state;
    kt_upstream_reset(W.up);
    for (size_t i = 0; i < sizeof(tricks) / sizeof(tricks[0]); i++) {

        request(W.gw, "GET", tricks[i], W.items.key, NULL, &R);
        if (R.status != 403)
            print_error("%s: got %ld %s\n", tricks[i], R.status, R.body);
        expect_scope_403(&R, "admin:all");
        kt_http_resp_cleanup(&R);
    }
    seen = kt_upstream_targets(W.up);
    if (kt_upstream_count(W.up) != 0)
        print_error("the upstream saw:\n%s", seen);
    assert_int_equal(kt_upstream_count(W.up), 0);
    free(seen);
}

static void
test_an_encoded_slash_or_nul_in_the_path_is_400(void **state)
{
    static const char *const bad[] = {
        "/v1/items%2Fx", "/admin%2fusers", "/v1/items/%00", "/v1/%2F..%2Fadmin", "/v1/items/%zz",
    };

    (void)state;
    kt_upstream_reset(W.up);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {

        request(W.gw, "GET", bad[i], W.full.key, NULL, &R);
        if (R.status != 400)
            print_error("%s: got %ld %s\n", bad[i], R.status, R.body);
        assert_int_equal(R.status, 400);
        expect_json_content_type(&R);
        kt_http_resp_cleanup(&R);
    }
    assert_int_equal(kt_upstream_count(W.up), 0);
}

static void
test_the_upstream_receives_the_normalised_path_with_the_query_intact(void **state)
{
    static const char *const cases[][2] = {
        {"//v1//items/./a/../b?x=1&y=%2F&z=a%20b", "/v1/items/b?x=1&y=%2F&z=a%20b"},
        {"/%7Euser/%61bc", "/~user/abc"},
        {"/a%3ab/c%2cd", "/a%3Ab/c%2Cd"},
        {"/x/y/../../z?", "/z?"},
        {"/q?a=/../admin&b=%00", "/q?a=/../admin&b=%00"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {

        request(W.gw, "GET", cases[i][0], W.full.key, NULL, &R);
        expect_echo(&R, &E);
        if (strcmp(kt_echo_target(&E), cases[i][1]) != 0)
            print_error("sent %s, upstream got %s, wanted %s\n", cases[i][0], kt_echo_target(&E),
                        cases[i][1]);
        assert_string_equal(kt_echo_target(&E), cases[i][1]);
        kt_echo_cleanup(&E);
        kt_http_resp_cleanup(&R);
    }
}

static void
test_require_scopes_refuses_scopeless_keys_and_unmatched_routes(void **state)
{

    (void)state;
    kt_upstream_reset(W.up);
    request(W.gw_req, "GET", "/v1/items/1", W.req_none.key, NULL, &R);
    expect_body(&R, 403, "{\"detail\": \"API key has no scopes and scopes are required.\"}");
    kt_http_resp_cleanup(&R);
    request(W.gw_req, "GET", "/unrouted", W.req_items.key, NULL, &R);
    expect_body(&R, 403, "{\"detail\": \"No route permits this request.\"}");
    kt_http_resp_cleanup(&R);
    assert_int_equal(kt_upstream_count(W.up), 0);
    expect_allowed(W.gw_req, "GET", "/v1/items/1", W.req_items.key);
    /* /health says whether the key is valid, whatever the routes say. */
    request(W.gw_req, "GET", "/health", W.req_items.key, NULL, &R);
    assert_int_equal(R.status, 200);
    kt_http_resp_cleanup(&R);
}

/* ---- headers ---- */

static void
test_hop_by_hop_and_connection_named_headers_are_removed(void **state)
{
    struct hdrs h = {.n = 0};
    const char *conn;

    (void)state;
    hdrs_add(&h, "Connection: keep-alive, X-Drop-Me, x-drop-too%s", "");
    hdrs_add(&h, "X-Drop-Me: %s", "1");
    hdrs_add(&h, "X-Drop-Too: %s", "2");
    hdrs_add(&h, "Keep-Alive: %s", "timeout=5");
    hdrs_add(&h, "TE: %s", "trailers");
    hdrs_add(&h, "Trailer: %s", "X-Checksum");
    hdrs_add(&h, "Proxy-Connection: %s", "keep-alive");
    request(W.gw, "GET", "/v1/hop", W.full.key, &h, &R);
    expect_echo(&R, &E);
    assert_null(kt_echo_header(&E, "X-Drop-Me"));
    assert_null(kt_echo_header(&E, "X-Drop-Too"));
    assert_null(kt_echo_header(&E, "Keep-Alive"));
    assert_null(kt_echo_header(&E, "TE"));
    assert_null(kt_echo_header(&E, "Trailer"));
    assert_null(kt_echo_header(&E, "Proxy-Connection"));
    conn = kt_echo_header(&E, "Connection");
    assert_true(conn == NULL || strcasestr(conn, "drop") == NULL);
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);

    /* A header not named in Connection still arrives. */
    memset(&h, 0, sizeof(h));
    hdrs_add(&h, "X-Keep-Me: %s", "yes");
    request(W.gw, "GET", "/v1/keep", W.full.key, &h, &R);
    expect_echo(&R, &E);
    assert_non_null(kt_echo_header(&E, "X-Keep-Me"));
    assert_string_equal(kt_echo_header(&E, "X-Keep-Me"), "yes");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_the_client_host_is_not_forwarded(void **state)
{
    struct hdrs h = {.n = 0};
    char want[64];

    (void)state;
    hdrs_add(&h, "Host: %s", "evil.example");
    request(W.gw, "GET", "/v1/host", W.full.key, &h, &R);
    expect_echo(&R, &E);
    snprintf(want, sizeof(want), "127.0.0.1:%d", kt_upstream_port(W.up));
    assert_int_equal(kt_echo_header_count(&E, "Host"), 1);
    assert_string_equal(kt_echo_header(&E, "Host"), want);
    assert_non_null(kt_echo_header(&E, "X-Forwarded-Host"));
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Host"), "evil.example");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_credential_headers_are_stripped(void **state)
{
    struct hdrs h = {.n = 0};

    (void)state;
    /* One key, in every header keygate reads it from. */
    hdrs_add(&h, "X-Avala-Api-Key: %s", W.full.key);
    hdrs_add(&h, "X-Api-Key: %s", W.full.key);
    request(W.gw, "GET", "/v1/strip", W.full.key, &h, &R);
    expect_echo(&R, &E);
    assert_null(kt_echo_header(&E, "Authorization"));
    assert_null(kt_echo_header(&E, "X-Avala-Api-Key"));
    assert_null(kt_echo_header(&E, "X-Api-Key"));
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);

    /* Authorization with a scheme that is not ours is not a credential of ours. */
    memset(&h, 0, sizeof(h));
    hdrs_add(&h, "X-Avala-Api-Key: %s", W.full.key);
    hdrs_add(&h, "Authorization: %s", "Basic dXNlcjpwYXNz");
    request(W.gw, "GET", "/v1/basic", NULL, &h, &R);
    expect_echo(&R, &E);
    assert_null(kt_echo_header(&E, "X-Avala-Api-Key"));
    assert_non_null(kt_echo_header(&E, "Authorization"));
    assert_string_equal(kt_echo_header(&E, "Authorization"), "Basic dXNlcjpwYXNz");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_credential_headers_are_kept_with_forward_credentials_on(void **state)
{
    struct hdrs h = {.n = 0};
    char want[600];

    (void)state;
    hdrs_add(&h, "X-Avala-Api-Key: %s", W.fwd_full.key);
    hdrs_add(&h, "X-Api-Key: %s", W.fwd_full.key);
    request(W.gw_fwd, "GET", "/v1/forward", W.fwd_full.key, &h, &R);
    expect_echo(&R, &E);
    snprintf(want, sizeof(want), "Bearer %s", W.fwd_full.key);
    assert_non_null(kt_echo_header(&E, "Authorization"));
    assert_string_equal(kt_echo_header(&E, "Authorization"), want);
    assert_non_null(kt_echo_header(&E, "X-Avala-Api-Key"));
    assert_string_equal(kt_echo_header(&E, "X-Avala-Api-Key"), W.fwd_full.key);
    assert_non_null(kt_echo_header(&E, "X-Api-Key"));
    assert_string_equal(kt_echo_header(&E, "X-Api-Key"), W.fwd_full.key);
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
expect_identity(const struct kt_echo *e, const char *id, const char *tenant, const char *scopes)
{
    assert_int_equal(kt_echo_header_count(e, "X-Keygate-Key-Id"), 1);
    assert_int_equal(kt_echo_header_count(e, "X-Keygate-Tenant"), 1);
    assert_true(kt_echo_header_count(e, "X-Keygate-Scopes") <= 1);
    assert_string_equal(kt_echo_header(e, "X-Keygate-Key-Id"), id);
    assert_string_equal(kt_echo_header(e, "X-Keygate-Tenant"), tenant);
    if (scopes[0] != '\0') {
        assert_non_null(kt_echo_header(e, "X-Keygate-Scopes"));
        assert_string_equal(kt_echo_header(e, "X-Keygate-Scopes"), scopes);
    } else if (kt_echo_header(e, "X-Keygate-Scopes") != NULL) {
        assert_string_equal(kt_echo_header(e, "X-Keygate-Scopes"), "");
    }
}

static void
test_forged_identity_headers_never_arrive_and_the_real_ones_do(void **state)
{
    struct hdrs h = {.n = 0};

    (void)state;
    hdrs_add(&h, "X-Keygate-Tenant: %s", "evil-corp");
    hdrs_add(&h, "X-Keygate-Key-Id: %s", "key_forged");
    hdrs_add(&h, "X-Keygate-Scopes: %s", "*");
    hdrs_add(&h, "x-keygate-whatever: %s", "1");
    request(W.gw, "GET", "/v1/items/identity", W.tenant_key.key, &h, &R);
    expect_echo(&R, &E);
    expect_identity(&E, W.tenant_key.id, "acme", "read:items,extra:thing");
    assert_null(kt_echo_header(&E, "X-Keygate-Whatever"));
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);

    request(W.gw, "GET", "/v1/identity-default", W.full.key, NULL, &R);
    expect_echo(&R, &E);
    expect_identity(&E, W.full.id, "default", "");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_forwarding_headers_are_added(void **state)
{
    struct hdrs h = {.n = 0};
    char host[64];
    const char *xff;

    (void)state;
    request(W.gw, "GET", "/v1/forwarded", W.full.key, NULL, &R);
    expect_echo(&R, &E);
    snprintf(host, sizeof(host), "127.0.0.1:%d", kt_daemon_port(W.gw));
    assert_int_equal(kt_echo_header_count(&E, "X-Forwarded-For"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-For"), "127.0.0.1");
    assert_int_equal(kt_echo_header_count(&E, "X-Forwarded-Proto"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Proto"), "http");
    assert_int_equal(kt_echo_header_count(&E, "X-Forwarded-Host"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Host"), host);
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);

    /* A client's own X-Forwarded-For is extended, never trusted as the whole chain. */
    hdrs_add(&h, "X-Forwarded-For: %s", "203.0.113.9");
    hdrs_add(&h, "X-Forwarded-Proto: %s", "https");
    request(W.gw, "GET", "/v1/forwarded-2", W.full.key, &h, &R);
    expect_echo(&R, &E);
    assert_int_equal(kt_echo_header_count(&E, "X-Forwarded-For"), 1);
    xff = kt_echo_header(&E, "X-Forwarded-For");
    assert_true(strlen(xff) >= 9 && strcmp(xff + strlen(xff) - 9, "127.0.0.1") == 0);
    assert_int_equal(kt_echo_header_count(&E, "X-Forwarded-Proto"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Proto"), "http");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_a_trusted_proxy_tells_the_scheme_and_host_the_client_used(void **state)
{
    struct hdrs h = {.n = 0};

    (void)state;
    /* A load balancer that ended TLS for api.example.com. */
    hdrs_add(&h, "X-Forwarded-Proto: %s", "https");
    hdrs_add(&h, "X-Forwarded-Host: %s", "api.example.com");
    request(W.gw_big, "GET", "/v1/behind-lb", W.big_full.key, &h, &R);
    expect_echo(&R, &E);
    assert_int_equal(kt_echo_header_count(&E, "X-Forwarded-Proto"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Proto"), "https");
    assert_int_equal(kt_echo_header_count(&E, "X-Forwarded-Host"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Host"), "api.example.com");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
    /* A proxy that appends its line: the client's own first line loses. */
    h.n = 0;
    hdrs_add(&h, "X-Forwarded-Host: %s", "evil.example");
    hdrs_add(&h, "X-Forwarded-Host: %s", "api.example.com");
    request(W.gw_big, "GET", "/v1/behind-lb-1", W.big_full.key, &h, &R);
    expect_echo(&R, &E);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Host"), "api.example.com");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
    /* Only "http" or "https" is believed. */
    h.n = 0;
    hdrs_add(&h, "X-Forwarded-Proto: %s", "gopher");
    request(W.gw_big, "GET", "/v1/behind-lb-2", W.big_full.key, &h, &R);
    expect_echo(&R, &E);
    assert_string_equal(kt_echo_header(&E, "X-Forwarded-Proto"), "http");
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_a_long_header_is_forwarded_whole(void **state)
{
    char *big = malloc(10001), *line = malloc(10100), auth[200];
    const char *list[] = {line, auth, NULL};
    struct kt_http_req req = {.method = "GET"};

    (void)state;
    memset(big, 'j', 10000);
    big[10000] = '\0';
    snprintf(line, 10100, "X-Long-Token: %s", big);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.full.key);
    req.url = kt_daemon_url(W.gw, "/v1/long-header");
    req.headers = list;
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_do(&req, &R));
    expect_echo(&R, &E);
    assert_int_equal(kt_echo_header_count(&E, "X-Long-Token"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Long-Token"), big);
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
    free(big);
    free(line);
}

static bool
is_hex32(const char *s)
{
    if (s == NULL || strlen(s) != 32)
        return false;
    for (size_t i = 0; i < 32; i++)
        if (strchr("0123456789abcdef", s[i]) == NULL)
            return false;
    return true;
}

/* Sends X-Request-Id sent (or none when NULL); checks that the upstream and
 * the client got the same id: want, or a fresh one when want is NULL. */
static void
check_request_id(const char *sent, const char *want)
{
    struct hdrs h = {.n = 0};
    const char *up_id;
    char client_id[KT_ID_MAX] = "";

    if (sent != NULL)
        hdrs_add(&h, "X-Request-Id: %s", sent);
    request(W.gw, "GET", "/v1/request-id", W.full.key, &h, &R);
    expect_echo(&R, &E);
    assert_int_equal(kt_echo_header_count(&E, "X-Request-Id"), 1);
    up_id = kt_echo_header(&E, "X-Request-Id");
    assert_non_null(kt_http_header_buf(&R, "X-Request-Id", client_id, sizeof(client_id)));
    assert_int_equal(kt_http_header_count(&R, "X-Request-Id"), 1);
    assert_string_equal(client_id, up_id);
    if (want != NULL)
        assert_string_equal(up_id, want);
    else
        assert_true(is_hex32(up_id));
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_a_sane_request_id_is_kept_and_returned(void **state)
{
    (void)state;
    check_request_id("req-2024.01_abc:42", "req-2024.01_abc:42");
}

static void
test_a_missing_or_insane_request_id_is_generated_and_returned(void **state)
{
    char longid[200];

    (void)state;
    check_request_id(NULL, NULL);
    check_request_id("has spaces in it", NULL);
    check_request_id("<script>", NULL);
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    check_request_id(longid, NULL);
}

static void
test_keygate_answers_carry_the_request_id_too(void **state)
{
    struct hdrs h = {.n = 0};
    char id[KT_ID_MAX] = "";

    (void)state;
    hdrs_add(&h, "X-Request-Id: %s", "denied-1");
    request(W.gw, "GET", "/v1/nokey", NULL, &h, &R);
    assert_int_equal(R.status, 401);
    assert_non_null(kt_http_header_buf(&R, "X-Request-Id", id, sizeof(id)));
    assert_string_equal(id, "denied-1");
    kt_http_resp_cleanup(&R);
}

/* ---- bodies ---- */

static void
upload(bool chunked)
{
    char auth[600];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_req req = {.method = "POST",
                              .generate = true,
                              .gen_len = BIG_BYTES,
                              .chunked = chunked,
                              .headers = hdrs,
                              .timeout_ms = 60000};

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.big_full.key);
    req.url = kt_daemon_url(W.gw_big, chunked ? "/v1/upload-chunked" : "/v1/upload");
    assert_true(kt_http_do(&req, &R));
    expect_echo(&R, &E);
    assert_int_equal(kt_echo_body_len(&E), (long long)BIG_BYTES);
    assert_true(kt_echo_body_hash(&E) == kt_http_pattern_hash(BIG_BYTES));
    /* The framing is keygate's own: the client's never reaches the upstream. */
    assert_true(kt_echo_header_count(&E, "Transfer-Encoding") +
                    kt_echo_header_count(&E, "Content-Length") <=
                1);
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
}

static void
test_a_64_mib_upload_with_content_length_arrives_intact(void **state)
{
    (void)state;
    upload(false);
}

static void
test_a_64_mib_chunked_upload_arrives_intact(void **state)
{
    (void)state;
    upload(true);
}

static void
test_a_64_mib_download_arrives_intact(void **state)
{
    char auth[600], path[64];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_req req = {.headers = hdrs, .discard_body = true, .timeout_ms = 60000};

    (void)state;
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.big_full.key);
    snprintf(path, sizeof(path), "/big?n=%llu", BIG_BYTES);
    req.url = kt_daemon_url(W.gw_big, path);
    assert_true(kt_http_do(&req, &R));
    assert_int_equal(R.status, 200);
    assert_int_equal(R.body_len, BIG_BYTES);
    assert_true(R.body_hash == kt_http_pattern_hash(BIG_BYTES));
    kt_http_resp_cleanup(&R);
}

/* Both builds check it. Under ASan the process carries shadow memory,
 * allocator state and a quarantine of freed blocks that say nothing about
 * keygate's buffers (measured: 23 MiB before the first big body and 45 MiB
 * after the three, against 13 and 14 MiB without ASan), so there the same
 * 48 MiB bounds what the three 64 MiB bodies added to the peak: a body held
 * whole would add 64 MiB and 8 MiB of shadow. */
static void
test_big_bodies_keep_the_peak_rss_under_48_mib(void **state)
{
    long kib = kt_daemon_peak_rss_kib(W.gw_big);

    (void)state;
    assert_true(kib > 0);
    assert_true(W.big_base_kib > 0);
    print_message("keygate peak RSS: %ld KiB before the big bodies, %ld KiB after 3 x 64 MiB\n",
                  W.big_base_kib, kib);
#ifdef KT_SANITIZED
    if (kib - W.big_base_kib >= RSS_LIMIT_KIB)
        fail_msg("under ASan the 64 MiB bodies should add under %ld KiB to the peak, added %ld",
                 RSS_LIMIT_KIB, kib - W.big_base_kib);
#else
    if (kib >= RSS_LIMIT_KIB)
        fail_msg("the peak RSS should stay under %ld KiB, was %ld", RSS_LIMIT_KIB, kib);
#endif
}

/* ---- upstream failures ---- */

/* Starts W.scratch for upstream url with extra config, with W.scratch_key. */
static void
start_scratch(const char *upstream, const char *extra)
{
    char cfg[512];

    snprintf(cfg, sizeof(cfg), "upstream %s\n%s", upstream, extra);
    W.scratch = kt_daemon_new(cfg);
    assert_non_null(W.scratch);
    assert_true(kt_daemon_create_key(W.scratch, "k", NULL, NULL, &W.scratch_key));
    assert_true(kt_daemon_start(W.scratch));
}

static void
check_failure(const char *upstream, const char *path, long status, const char *message)
{
    static const char *const styles[] = {"", "error_style error\n"};
    char extra[128], body[256];

    for (size_t i = 0; i < 2; i++) {
        snprintf(extra, sizeof(extra), "upstream_timeout 1s\nupstream_connect_timeout 1s\n%s",
                 styles[i]);
        start_scratch(upstream, extra);
        request(W.scratch, "GET", path, W.scratch_key.key, NULL, &R);
        if (i == 0)
            snprintf(body, sizeof(body), "{\"detail\": \"%s.\"}", message);
        else
            snprintf(body, sizeof(body),
                     "{\"error\": {\"type\": \"upstream_error\", \"message\": \"%s\"}}", message);
        expect_body(&R, status, body);
        /* Well inside the test's own 30 s client timeout: keygate's deadline fired. */
        assert_true(R.seconds < 10.0);
        kt_http_resp_cleanup(&R);
        assert_int_equal(kt_daemon_stop(W.scratch), 0);
        kt_daemon_free(W.scratch);
        W.scratch = NULL;
        kt_key_cleanup(&W.scratch_key);
    }
}

static void
test_a_refused_upstream_is_502_json_in_both_styles(void **state)
{
    char url[64];

    (void)state;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", kt_daemon_free_port());
    check_failure(url, "/v1/refused", 502, "Upstream is unavailable");
}

static void
test_a_hanging_upstream_is_504_json_in_both_styles(void **state)
{
    (void)state;
    check_failure(kt_upstream_url(W.up), "/hang", 504, "Upstream timed out");
}

/* ---- names and forwarding headers a client must not set (issue 11) ---- */

static const char *const underscored_ours[] = {
    "X_Keygate_Tenant", "X_Keygate_Key_Id", "X_Keygate_Scopes", "X_Forwarded_For",
    "X_Forwarded_Host", "X_Request_Id",     "X_Real_Ip",        "X_Avala_Api_Key",
};

/* Sends underscored_ours[from..from+5] and X_Custom_Thing (the helper
 * holds 8 header lines, the key being one); checks that none of ours
 * arrived and returns whether X_Custom_Thing did. */
static bool
send_underscored(struct kt_daemon *d, const char *key, const char *path, size_t from)
{
    size_t n = sizeof(underscored_ours) / sizeof(underscored_ours[0]);
    struct hdrs h = {.n = 0};
    bool custom;

    for (size_t i = from; i < n && i < from + 6; i++) {
        char fmt[64];

        snprintf(fmt, sizeof(fmt), "%s: %%s", underscored_ours[i]);
        hdrs_add(&h, fmt, "evil");
    }
    hdrs_add(&h, "X_Custom_Thing: %s", "fine");
    request(d, "GET", path, key, &h, &R);
    expect_echo(&R, &E);
    for (size_t i = from; i < n && i < from + 6; i++)
        if (kt_echo_header(&E, underscored_ours[i]) != NULL)
            fail_msg("%s reached the upstream", underscored_ours[i]);
    /* The real identity header is still the one keygate set, once. */
    assert_int_equal(kt_echo_header_count(&E, "X-Keygate-Tenant"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Keygate-Tenant"), "default");
    custom = kt_echo_header(&E, "X_Custom_Thing") != NULL;
    kt_echo_cleanup(&E);
    kt_http_resp_cleanup(&R);
    return custom;
}

static void
test_underscore_header_names_never_arrive_by_default(void **state)
{
    (void)state;
    assert_false(send_underscored(W.gw, W.full.key, "/v1/underscores", 0));
    assert_false(send_underscored(W.gw, W.full.key, "/v1/underscores", 6));
}

static void
test_underscores_in_headers_on_keeps_only_names_that_are_not_keygates(void **state)
{
    (void)state;
    start_scratch(kt_upstream_url(W.up), "underscores_in_headers on\n");
    assert_true(send_underscored(W.scratch, W.scratch_key.key, "/v1/underscores-on", 0));
    assert_true(send_underscored(W.scratch, W.scratch_key.key, "/v1/underscores-on", 6));
}

static void
test_x_real_ip_and_forwarded_from_an_untrusted_client_never_arrive(void **state)
{
    struct hdrs h = {.n = 0};

    (void)state;
    hdrs_add(&h, "X-Real-IP: %s", "203.0.113.9");
    hdrs_add(&h, "Forwarded: %s", "for=203.0.113.9;proto=https");
    hdrs_add(&h, "x-real-ip: %s", "203.0.113.10");
    request(W.gw, "GET", "/v1/real-ip", W.full.key, &h, &R);
    expect_echo(&R, &E);
    assert_null(kt_echo_header(&E, "X-Real-IP"));
    assert_null(kt_echo_header(&E, "Forwarded"));
    kt_echo_cleanup(&E);
    /* From a peer in trusted_proxies X-Real-IP is the proxy's word and
     * passes; Forwarded never does (keygate sends X-Forwarded-* instead). */
    h.n = 0;
    hdrs_add(&h, "X-Real-IP: %s", "203.0.113.9");
    hdrs_add(&h, "Forwarded: %s", "for=203.0.113.9");
    request(W.gw_big, "GET", "/v1/real-ip-trusted", W.big_full.key, &h, &R);
    expect_echo(&R, &E);
    assert_non_null(kt_echo_header(&E, "X-Real-IP"));
    assert_string_equal(kt_echo_header(&E, "X-Real-IP"), "203.0.113.9");
    assert_null(kt_echo_header(&E, "Forwarded"));
}

static void
test_trace_is_405_json_in_both_styles_and_never_proxied(void **state)
{
    static const char *const methods[] = {"TRACE", "TRACK", "trace"};
    size_t before = kt_upstream_count(W.up);
    char allow[128] = "";

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        request(W.gw, methods[i], "/v1/items/trace", W.full.key, NULL, &R);
        expect_body(&R, 405, "{\"detail\": \"Method not allowed.\"}");
        assert_non_null(kt_http_header_buf(&R, "Allow", allow, sizeof(allow)));
        assert_null(strstr(allow, "TRACE"));
        kt_http_resp_cleanup(&R);
    }
    start_scratch(kt_upstream_url(W.up), "error_style error\n");
    request(W.scratch, "TRACE", "/v1/items/trace", W.scratch_key.key, NULL, &R);
    expect_body(&R, 405,
                "{\"error\": {\"type\": \"invalid_request_error\", \"message\": \"Method not "
                "allowed\"}}");
    assert_int_equal(kt_upstream_count(W.up), before);
}

/* ---- concurrency ---- */

struct slow_batch {
    struct kt_http_req reqs[SLOW_REQUESTS];
    struct kt_http_resp resps[SLOW_REQUESTS];
    char urls[SLOW_REQUESTS][128];
    const char *hdrs[2];
    bool ok;
};

static void *
run_slow(void *arg)
{
    struct slow_batch *b = arg;

    b->ok = kt_http_do_many(b->reqs, b->resps, SLOW_REQUESTS);
    return NULL;
}

static void
test_a_slow_upstream_does_not_hold_up_other_requests(void **state)
{
    static struct slow_batch slow;
    static struct kt_http_req fast[FAST_REQUESTS];
    static struct kt_http_resp fast_r[FAST_REQUESTS];
    static char fast_urls[FAST_REQUESTS][128];
    char auth[600];
    const char *hdrs[] = {auth, NULL};
    int64_t deadline, t0, elapsed;
    size_t held_before, held_after;
    pthread_t th;
    bool fast_ok;

    (void)state;
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.full.key);
    memset(&slow, 0, sizeof(slow));
    slow.hdrs[0] = auth;
    for (int i = 0; i < SLOW_REQUESTS; i++) {
        snprintf(slow.urls[i], sizeof(slow.urls[i]), "%s", kt_daemon_url(W.gw, "/slow"));
        snprintf(slow.urls[i] + strlen(slow.urls[i]), 16, "/%d", i);
        slow.reqs[i] = (struct kt_http_req){.url = slow.urls[i], .headers = slow.hdrs};
    }
    kt_upstream_set_slow_ms(W.up, 2000);
    assert_int_equal(pthread_create(&th, NULL, run_slow, &slow), 0);

    /* The 8 slow requests are all held by the upstream before the fast batch starts. */
    deadline = kt_mono_ms() + 10000;
    while (kt_upstream_held_slow(W.up) < SLOW_REQUESTS && kt_mono_ms() < deadline)
        kt_sleep_ms(5);
    held_before = kt_upstream_held_slow(W.up);

    for (int i = 0; i < FAST_REQUESTS; i++) {
        snprintf(fast_urls[i], sizeof(fast_urls[i]), "%s", kt_daemon_url(W.gw, "/v1/fast"));
        snprintf(fast_urls[i] + strlen(fast_urls[i]), 16, "/%d", i);
        fast[i] = (struct kt_http_req){.url = fast_urls[i], .headers = hdrs};
    }
    t0 = kt_mono_ms();
    fast_ok = kt_http_do_many(fast, fast_r, FAST_REQUESTS);
    elapsed = kt_mono_ms() - t0;
    held_after = kt_upstream_held_slow(W.up);
    pthread_join(th, NULL); /* before any assertion: the thread uses the statics */

    assert_int_equal(held_before, SLOW_REQUESTS);
    /* Still held: the fast batch really ran while the slow ones waited. */
    assert_int_equal(held_after, SLOW_REQUESTS);

    print_message("%d fast requests took %lld ms with %d slow ones in flight\n", FAST_REQUESTS,
                  (long long)elapsed, SLOW_REQUESTS);
    assert_true(fast_ok);
    for (int i = 0; i < FAST_REQUESTS; i++) {
        assert_int_equal(fast_r[i].status, 200);
        kt_http_resp_cleanup(&fast_r[i]);
    }
    assert_true(slow.ok);
    for (int i = 0; i < SLOW_REQUESTS; i++) {
        assert_int_equal(slow.resps[i].status, 200);
        assert_true(slow.resps[i].seconds >= 1.9);
        kt_http_resp_cleanup(&slow.resps[i]);
    }
    assert_true(elapsed < FAST_BATCH_LIMIT_MS);
}

static void
test_every_daemon_stops_cleanly(void **state)
{
    (void)state;
    assert_int_equal(kt_daemon_stop(W.gw), 0);
    assert_int_equal(kt_daemon_stop(W.gw_req), 0);
    assert_int_equal(kt_daemon_stop(W.gw_fwd), 0);
    assert_int_equal(kt_daemon_stop(W.gw_big), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_a_key_without_scopes_reaches_every_route, free_slots),
        cmocka_unit_test_teardown(test_a_star_scope_grants_every_route, free_slots),
        cmocka_unit_test_teardown(test_a_read_star_scope_grants_read_items_but_not_admin,
                                  free_slots),
        cmocka_unit_test_teardown(test_a_missing_scope_is_403_naming_it, free_slots),
        cmocka_unit_test_teardown(test_path_tricks_meet_the_rule_and_never_reach_the_upstream,
                                  free_slots),
        cmocka_unit_test_teardown(test_an_encoded_slash_or_nul_in_the_path_is_400, free_slots),
        cmocka_unit_test_teardown(
            test_the_upstream_receives_the_normalised_path_with_the_query_intact, free_slots),
        cmocka_unit_test_teardown(test_require_scopes_refuses_scopeless_keys_and_unmatched_routes,
                                  free_slots),
        cmocka_unit_test_teardown(test_hop_by_hop_and_connection_named_headers_are_removed,
                                  free_slots),
        cmocka_unit_test_teardown(test_the_client_host_is_not_forwarded, free_slots),
        cmocka_unit_test_teardown(test_credential_headers_are_stripped, free_slots),
        cmocka_unit_test_teardown(test_underscore_header_names_never_arrive_by_default, free_slots),
        cmocka_unit_test_teardown(
            test_underscores_in_headers_on_keeps_only_names_that_are_not_keygates, free_slots),
        cmocka_unit_test_teardown(
            test_x_real_ip_and_forwarded_from_an_untrusted_client_never_arrive, free_slots),
        cmocka_unit_test_teardown(test_trace_is_405_json_in_both_styles_and_never_proxied,
                                  free_slots),
        cmocka_unit_test_teardown(test_credential_headers_are_kept_with_forward_credentials_on,
                                  free_slots),
        cmocka_unit_test_teardown(test_forged_identity_headers_never_arrive_and_the_real_ones_do,
                                  free_slots),
        cmocka_unit_test_teardown(test_forwarding_headers_are_added, free_slots),
        cmocka_unit_test_teardown(test_a_trusted_proxy_tells_the_scheme_and_host_the_client_used,
                                  free_slots),
        cmocka_unit_test_teardown(test_a_long_header_is_forwarded_whole, free_slots),
        cmocka_unit_test_teardown(test_a_sane_request_id_is_kept_and_returned, free_slots),
        cmocka_unit_test_teardown(test_a_missing_or_insane_request_id_is_generated_and_returned,
                                  free_slots),
        cmocka_unit_test_teardown(test_keygate_answers_carry_the_request_id_too, free_slots),
        cmocka_unit_test_teardown(test_a_64_mib_upload_with_content_length_arrives_intact,
                                  free_slots),
        cmocka_unit_test_teardown(test_a_64_mib_chunked_upload_arrives_intact, free_slots),
        cmocka_unit_test_teardown(test_a_64_mib_download_arrives_intact, free_slots),
        cmocka_unit_test_teardown(test_big_bodies_keep_the_peak_rss_under_48_mib, free_slots),
        cmocka_unit_test_teardown(test_a_refused_upstream_is_502_json_in_both_styles, free_slots),
        cmocka_unit_test_teardown(test_a_hanging_upstream_is_504_json_in_both_styles, free_slots),
        cmocka_unit_test_teardown(test_a_slow_upstream_does_not_hold_up_other_requests, free_slots),
        cmocka_unit_test_teardown(test_every_daemon_stops_cleanly, free_slots),
    };

    return cmocka_run_group_tests_name("integration_test_proxy", tests, setup, teardown);
}
