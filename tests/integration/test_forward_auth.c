/* tests/integration/test_forward_auth.c - mode forward_auth on a running
 * daemon: the header contracts of nginx auth_request (X-Original-*),
 * Traefik ForwardAuth (X-Forwarded-*) and Envoy ext_authz (the own path
 * under forward_auth_prefix), asked directly with curl (Traefik and Envoy
 * are not in Debian; the nginx recipe itself is test_forward_auth_nginx.c).
 *
 * Two daemons with the same routes and the same kinds of keys: one in
 * forward_auth mode, one in proxy mode in front of the stub upstream, so a
 * denial can be compared byte for byte with what proxy mode sends for the
 * same request. The brute-force throttle is off in both (many 401s are
 * asked here); one test starts a daemon of its own with it on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define ROUTE_LINES                                                                                \
    "route GET /v1/items* read:items\n"                                                            \
    "route POST /v1/items* write:items\n"                                                          \
    "route DELETE /v1/items* write:items\n"                                                        \
    "route * /v1/admin* admin:all\n"
#define ROUTES "auth_throttle off\n" ROUTE_LINES

/* The kinds of keys each daemon has. */
enum kind { K_READER, K_WRITER, K_RATED, K_CREDITS, K_CHARGED, K_NKINDS };

struct world {
    struct kt_upstream *up;
    struct kt_daemon *fa; /* mode forward_auth, forward_auth_prefix /authz */
    struct kt_daemon *px; /* mode proxy */
    struct kt_key fa_keys[K_NKINDS];
    struct kt_key px_keys[K_NKINDS];
    struct kt_daemon *scratch; /* one test's own daemon, freed by free_slots */
    struct kt_key scratch_key;
};

static struct world W;

/* What a test holds lives here: a failed assertion longjmps out of the
 * test, and free_slots (each test's teardown) frees it. */
static struct kt_http_resp R, P;

static int
free_slots(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    kt_http_resp_cleanup(&P);
    kt_daemon_free(W.scratch);
    W.scratch = NULL;
    kt_key_cleanup(&W.scratch_key);
    return 0;
}

static bool
make_keys(struct kt_daemon *d, struct kt_key *keys)
{
    static const char *const args[K_NKINDS][14] = {
        [K_READER] = {"keys", "create", "--name", "reader", "--scopes", "read:items", "--json"},
        [K_WRITER] = {"keys", "create", "--name", "writer", "--scopes", "write:items", "--json"},
        [K_RATED] = {"keys", "create", "--name", "rated", "--scopes", "read:items", "--rate",
                     "2/min", "--burst", "2", "--json"},
        [K_CREDITS] = {"keys", "create", "--name", "credits", "--scopes", "read:items", "--credits",
                       "2", "--json"},
        [K_CHARGED] = {"keys", "create", "--name", "charged", "--credits", "5", "--json"},
    };

    for (size_t i = 0; i < K_NKINDS; i++) {
        if (!kt_daemon_key_cli(d, args[i], &keys[i]))
            return false;
    }
    return true;
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
    /* upstream names a port nobody answers: forward_auth never calls it. */
    snprintf(cfg, sizeof(cfg),
             "mode forward_auth\nforward_auth_prefix /authz\naccess_log stdout\n"
             "upstream http://127.0.0.1:9\n" ROUTES);
    W.fa = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\n" ROUTES, kt_upstream_url(W.up));
    W.px = kt_daemon_new(cfg);
    if (W.fa == NULL || W.px == NULL || !make_keys(W.fa, W.fa_keys) ||
        !make_keys(W.px, W.px_keys) || !kt_daemon_start(W.fa) || !kt_daemon_start(W.px))
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
    kt_daemon_free(W.fa);
    kt_daemon_free(W.px);
    kt_upstream_stop(W.up);
    for (size_t i = 0; i < K_NKINDS; i++) {
        kt_key_cleanup(&W.fa_keys[i]);
        kt_key_cleanup(&W.px_keys[i]);
    }
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

/* ---- small tools ---- */

/* How the question is put. */
enum contract { NGINX, TRAEFIK, ENVOY, PROXY };

struct hdrs {
    char lines[10][600];
    const char *list[11];
    size_t n;
};

static void
hdrs_add(struct hdrs *h, const char *name, const char *value)
{
    if (h->n < 10)
        snprintf(h->lines[h->n++], sizeof(h->lines[0]), "%s: %s", name, value);
}

/* Asks about METHOD TARGET with key (NULL: none) and the extra header
 * lines, the way the contract puts it; PROXY sends the request itself to
 * the proxy-mode daemon. */
static void
ask(enum contract c, const char *method, const char *target, const char *key,
    const char *const *extra, struct kt_http_resp *out)
{
    struct hdrs h = {.n = 0};
    struct kt_http_req req = {.method = "GET"};
    char bearer[256], own[1024];

    if (key != NULL) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", key);
        hdrs_add(&h, "Authorization", bearer);
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        snprintf(h.lines[h.n++], sizeof(h.lines[0]), "%s", extra[i]);
    switch (c) {
    case NGINX:
        /* nginx's auth subrequest is a GET of the auth location. */
        hdrs_add(&h, "X-Original-Method", method);
        hdrs_add(&h, "X-Original-URI", target);
        req.url = kt_daemon_url(W.fa, "/_keygate/auth");
        break;
    case TRAEFIK:
        hdrs_add(&h, "X-Forwarded-Method", method);
        hdrs_add(&h, "X-Forwarded-Uri", target);
        hdrs_add(&h, "X-Forwarded-Proto", "http");
        hdrs_add(&h, "X-Forwarded-Host", "api.example");
        req.url = kt_daemon_url(W.fa, "/");
        break;
    case ENVOY:
        snprintf(own, sizeof(own), "/authz%s", target);
        req.method = method;
        req.url = kt_daemon_url(W.fa, own);
        break;
    case PROXY:
        req.method = method;
        req.url = kt_daemon_url(W.px, target);
        break;
    }
    for (size_t i = 0; i < h.n; i++)
        h.list[i] = h.lines[i];
    h.list[h.n] = NULL;
    req.headers = h.list;
    kt_http_resp_cleanup(out);
    assert_true(kt_http_do(&req, out));
}

static const char *
fa_key(enum kind k)
{
    return W.fa_keys[k].key;
}

static const char *
px_key(enum kind k)
{
    return W.px_keys[k].key;
}

static void
expect_header(const struct kt_http_resp *r, const char *name, const char *want)
{
    char buf[512];
    const char *got = kt_http_header_buf(r, name, buf, sizeof(buf));

    if (got == NULL || strcmp(got, want) != 0)
        print_error("%s: got \"%s\", want \"%s\"\n", name, got != NULL ? got : "(none)", want);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(kt_http_header_count(r, name), 1);
}

/* 200, empty body, the identity of key k of the forward_auth daemon. */
static void
expect_allowed(const struct kt_http_resp *r, enum kind k, const char *scopes)
{
    if (r->status != 200)
        print_error("got %ld %s\n", r->status, r->body);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_len, 0);
    expect_header(r, "X-Keygate-Key-Id", W.fa_keys[k].id);
    expect_header(r, "X-Keygate-Tenant", "default");
    expect_header(r, "X-Keygate-Scopes", scopes);
    assert_int_equal(kt_http_header_count(r, "X-Keygate-User-Id"), 1);
    assert_int_equal(kt_http_header_count(r, "X-Request-Id"), 1);
}

static void
expect_no_identity(const struct kt_http_resp *r)
{
    assert_int_equal(kt_http_header_count(r, "X-Keygate-Key-Id"), 0);
    assert_int_equal(kt_http_header_count(r, "X-Keygate-Tenant"), 0);
    assert_int_equal(kt_http_header_count(r, "X-Keygate-Scopes"), 0);
    assert_int_equal(kt_http_header_count(r, "X-Keygate-User-Id"), 0);
}

/* The header lines of a response, without the status line and the ones
 * that differ between any two answers (Date; the values of X-Request-Id,
 * the RateLimit counters and Retry-After), sorted, names lower-cased. */
static size_t
header_lines(const struct kt_http_resp *r, char lines[][512], size_t max)
{
    const char *p = r->headers;
    size_t n = 0;

    p = strstr(p, "\r\n"); /* past the status line */
    while (p != NULL && p[2] != '\r' && p[2] != '\0' && n < max) {
        const char *line = p + 2, *end = strstr(line, "\r\n");
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);

        if (len >= 512)
            len = 511;
        memcpy(lines[n], line, len);
        lines[n][len] = '\0';
        for (char *c = lines[n]; *c != '\0' && *c != ':'; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        if (strncmp(lines[n], "x-request-id:", 13) == 0)
            lines[n][13] = '\0';
        else if (strncmp(lines[n], "ratelimit:", 10) == 0)
            lines[n][10] = '\0';
        else if (strncmp(lines[n], "retry-after:", 12) == 0)
            lines[n][12] = '\0'; /* two daemons' buckets may be a second apart */
        if (strncmp(lines[n], "date:", 5) != 0)
            n++;
        p = end;
    }
    qsort(lines, n, sizeof(lines[0]), (int (*)(const void *, const void *))strcmp);
    return n;
}

/* The same status, the same body bytes and the same headers. */
static void
expect_same_answer(const struct kt_http_resp *fa, const struct kt_http_resp *px)
{
    static char a[24][512], b[24][512];
    size_t na, nb;

    if (fa->status != px->status || fa->body_len != px->body_len ||
        memcmp(fa->body, px->body, fa->body_len) != 0)
        print_error("forward_auth: %ld %s\nproxy:        %ld %s\n", fa->status, fa->body,
                    px->status, px->body);
    assert_int_equal(fa->status, px->status);
    assert_int_equal(fa->body_len, px->body_len);
    assert_memory_equal(fa->body, px->body, fa->body_len);
    na = header_lines(fa, a, 24);
    nb = header_lines(px, b, 24);
    for (size_t i = 0; i < na || i < nb; i++) {
        if (i >= na || i >= nb || strcmp(a[i], b[i]) != 0)
            print_error("header %zu: forward_auth \"%s\", proxy \"%s\"\n", i, i < na ? a[i] : "",
                        i < nb ? b[i] : "");
    }
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_string_equal(a[i], b[i]);
}

/* ---- the three contracts ---- */

static void
test_nginx_headers_name_the_original_request_and_an_allow_carries_the_identity(void **state)
{
    (void)state;
    ask(NGINX, "GET", "/v1/items/42?fields=name", fa_key(K_READER), NULL, &R);
    expect_allowed(&R, K_READER, "read:items");
    /* The question's own method (GET) does not decide: the original one does. */
    ask(NGINX, "POST", "/v1/items", fa_key(K_READER), NULL, &R);
    assert_int_equal(R.status, 403);
    expect_no_identity(&R);
    ask(NGINX, "POST", "/v1/items", fa_key(K_WRITER), NULL, &R);
    expect_allowed(&R, K_WRITER, "write:items");
}

/* The access log line (access_log stdout) of request id, or NULL by the deadline. */
static json_t *
fa_log_line(const char *id)
{
    char needle[128];
    int64_t deadline = kt_mono_ms() + 10000;

    snprintf(needle, sizeof(needle), "\"request_id\":\"%s\"", id);
    for (;;) {
        char *text = kt_daemon_log(W.fa);
        char *at = text != NULL ? strstr(text, needle) : NULL;
        json_t *o = NULL;

        if (at != NULL) {
            char *start = at, *end = strchr(at, '\n');

            while (start > text && start[-1] != '\n')
                start--;
            o = json_loadb(start, end != NULL ? (size_t)(end - start) : strlen(start), 0, NULL);
        }
        free(text);
        if (o != NULL || kt_mono_ms() >= deadline)
            return o;
        kt_sleep_ms(20);
    }
}

static void
test_an_allow_is_logged_with_200_and_the_original_method_and_path(void **state)
{
    const char *extra[] = {"X-Request-Id: fa-log-allow", NULL};
    json_t *o;

    (void)state;
    ask(NGINX, "POST", "/v1/items?x=1", fa_key(K_WRITER), extra, &R);
    expect_allowed(&R, K_WRITER, "write:items");
    o = fa_log_line("fa-log-allow");
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(o, "path")), "/v1/items");
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
    assert_true(json_is_integer(json_object_get(o, "bytes_sent")));
    assert_int_equal(json_integer_value(json_object_get(o, "bytes_sent")), 0);
    assert_string_equal(json_string_value(json_object_get(o, "outcome")), "allowed");
    json_decref(o);
}

static void
test_traefik_headers_name_the_original_request_and_an_allow_carries_the_identity(void **state)
{
    (void)state;
    ask(TRAEFIK, "GET", "/v1/items/42", fa_key(K_READER), NULL, &R);
    expect_allowed(&R, K_READER, "read:items");
    ask(TRAEFIK, "DELETE", "/v1/items/42", fa_key(K_READER), NULL, &R);
    assert_int_equal(R.status, 403);
    ask(TRAEFIK, "DELETE", "/v1/items/42", fa_key(K_WRITER), NULL, &R);
    expect_allowed(&R, K_WRITER, "write:items");
    ask(TRAEFIK, "GET", "/v1/admin/users", fa_key(K_WRITER), NULL, &R);
    assert_int_equal(R.status, 403);
}

static void
test_envoy_asks_with_its_own_method_and_path_under_the_prefix(void **state)
{
    (void)state;
    ask(ENVOY, "GET", "/v1/items/42?x=1", fa_key(K_READER), NULL, &R);
    expect_allowed(&R, K_READER, "read:items");
    ask(ENVOY, "POST", "/v1/items", fa_key(K_READER), NULL, &R);
    assert_int_equal(R.status, 403);
    ask(ENVOY, "POST", "/v1/items", fa_key(K_WRITER), NULL, &R);
    expect_allowed(&R, K_WRITER, "write:items");
    /* The prefix goes only as a whole segment: /authzv1/items is not under it. */
    {
        struct kt_http_req req = {.method = "GET", .url = kt_daemon_url(W.fa, "/authzv1/admin")};

        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do_key(&req, fa_key(K_READER), &R));
        expect_allowed(&R, K_READER, "read:items"); /* /authzv1/admin: no route */
    }
    /* The prefix alone asks about "/". */
    ask(ENVOY, "GET", "", fa_key(K_READER), NULL, &R);
    expect_allowed(&R, K_READER, "read:items");
}

static void
test_an_allow_carries_the_ratelimit_headers(void **state)
{
    (void)state;
    ask(NGINX, "GET", "/v1/items/1", fa_key(K_RATED), NULL, &R);
    expect_allowed(&R, K_RATED, "read:items");
    assert_int_equal(kt_http_header_count(&R, "RateLimit-Policy"), 1);
    assert_int_equal(kt_http_header_count(&R, "RateLimit"), 1);
    ask(PROXY, "GET", "/v1/items/1", px_key(K_RATED), NULL, &P);
    assert_int_equal(P.status, 200);
    {
        char a[256], b[256];

        assert_string_equal(kt_http_header_buf(&R, "RateLimit-Policy", a, sizeof(a)),
                            kt_http_header_buf(&P, "RateLimit-Policy", b, sizeof(b)));
    }
}

/* ---- denials: what proxy mode sends ---- */

static void
test_denials_are_byte_for_byte_what_proxy_mode_sends(void **state)
{
    static const struct {
        const char *method;
        const char *target;
        int key; /* enum kind, or -1: none, -2: an invalid key */
    } cases[] = {
        {"GET", "/v1/items/1", -1},          {"GET", "/v1/items/1", -2},
        {"POST", "/v1/items", K_READER},     {"GET", "/v1/admin/users", K_READER},
        {"DELETE", "/v1/items/7", K_READER}, {"GET", "/v1/a%2Fb", K_READER},
        {"GET", "/v1/items/%00", K_READER},
    };
    static const enum contract contracts[] = {NGINX, TRAEFIK, ENVOY};
    const char *bad = "kg_thisIsNotAValidKeyAtAll0000000000000000000000000000";

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *pk = cases[i].key == -1   ? NULL
                         : cases[i].key == -2 ? bad
                                              : px_key((enum kind)cases[i].key);
        const char *fk = cases[i].key == -1   ? NULL
                         : cases[i].key == -2 ? bad
                                              : fa_key((enum kind)cases[i].key);

        ask(PROXY, cases[i].method, cases[i].target, pk, NULL, &P);
        assert_true(P.status >= 400);
        for (size_t c = 0; c < sizeof(contracts) / sizeof(contracts[0]); c++) {
            ask(contracts[c], cases[i].method, cases[i].target, fk, NULL, &R);
            expect_same_answer(&R, &P);
            expect_no_identity(&R);
        }
    }
}

static void
test_over_the_rate_limit_is_429_with_retry_after_as_in_proxy_mode(void **state)
{
    (void)state;
    /* The rated key allows 2 a minute; one was spent by the RateLimit test
     * in each daemon. */
    ask(PROXY, "GET", "/v1/items/2", px_key(K_RATED), NULL, &P);
    assert_int_equal(P.status, 200);
    ask(TRAEFIK, "GET", "/v1/items/2", fa_key(K_RATED), NULL, &R);
    expect_allowed(&R, K_RATED, "read:items");
    ask(PROXY, "GET", "/v1/items/3", px_key(K_RATED), NULL, &P);
    assert_int_equal(P.status, 429);
    ask(NGINX, "GET", "/v1/items/3", fa_key(K_RATED), NULL, &R);
    assert_int_equal(R.status, 429);
    assert_string_equal(R.body, "{\"detail\": \"Rate limit exceeded.\"}");
    assert_non_null(strstr(R.headers, "Retry-After: "));
    expect_no_identity(&R);
    expect_same_answer(&R, &P);
    /* A refusal spends nothing, and every contract meets the same bucket. */
    ask(ENVOY, "GET", "/v1/items/3", fa_key(K_RATED), NULL, &R);
    assert_int_equal(R.status, 429);
    ask(TRAEFIK, "GET", "/v1/items/3", fa_key(K_RATED), NULL, &R);
    assert_int_equal(R.status, 429);
}

static void
test_credits_are_charged_when_the_question_is_allowed(void **state)
{
    (void)state;
    /* --credits 2: nothing tells keygate what the upstream answered, so the
     * allow is the charge; the third question is quota_exceeded. */
    ask(NGINX, "GET", "/v1/items/1", fa_key(K_CREDITS), NULL, &R);
    expect_allowed(&R, K_CREDITS, "read:items");
    ask(ENVOY, "GET", "/v1/items/2", fa_key(K_CREDITS), NULL, &R);
    expect_allowed(&R, K_CREDITS, "read:items");
    ask(NGINX, "GET", "/v1/items/3", fa_key(K_CREDITS), NULL, &R);
    assert_int_equal(R.status, 429);
    assert_non_null(strstr(R.body, "uota"));
    expect_no_identity(&R);
    /* Proxy mode refuses the third the same way (it charges at the 2xx). */
    for (int i = 0; i < 3; i++)
        ask(PROXY, "GET", "/v1/items/1", px_key(K_CREDITS), NULL, &P);
    assert_int_equal(P.status, 429);
    expect_same_answer(&R, &P);
}

static void
test_a_denial_spends_no_credits(void **state)
{
    struct kt_cli_result r;
    const char *args[] = {"keys", "show", W.fa_keys[K_CHARGED].id, "--json", NULL};

    (void)state;
    /* charged: no scopes, --credits 5. A 400 and a bad method cost nothing;
     * two allows cost 2. */
    ask(NGINX, "GET", "/v1/a%2Fb", fa_key(K_CHARGED), NULL, &R);
    assert_int_equal(R.status, 400);
    ask(NGINX, "GET", "/v1/items/1", fa_key(K_CHARGED), NULL, &R);
    expect_allowed(&R, K_CHARGED, "");
    ask(TRAEFIK, "PUT", "/v1/other", fa_key(K_CHARGED), NULL, &R);
    expect_allowed(&R, K_CHARGED, "");
    /* SIGTERM flushes every counter before a clean exit: what the store
     * then holds is final, exactly the two allows. */
    assert_int_equal(kt_daemon_stop(W.fa), 0);
    assert_true(kt_daemon_cli(W.fa, &r, args));
    assert_int_equal(r.exit_code, 0);
    {
        json_t *o = json_loads(r.out, 0, NULL);

        if (!json_is_integer(json_object_get(o, "quota_used")) ||
            json_integer_value(json_object_get(o, "quota_used")) != 2)
            fail_msg("quota_used should be exactly 2 after the stopping flush: %s", r.out);
        json_decref(o);
    }
    kt_cli_result_cleanup(&r);
    assert_true(kt_daemon_start(W.fa));
}

/* ---- what a client may not do ---- */

static void
test_forged_identity_headers_are_never_echoed_as_the_identity(void **state)
{
    static const char *const forged[] = {"X-Keygate-Key-Id: key_forged", "X-Keygate-Tenant: evil",
                                         "X-Keygate-Scopes: *", "X-Keygate-User-Id: usr_forged",
                                         NULL};

    (void)state;
    ask(NGINX, "GET", "/v1/items/1", fa_key(K_READER), forged, &R);
    expect_allowed(&R, K_READER, "read:items");
    assert_null(strstr(R.headers, "forged"));
    assert_null(strstr(R.headers, "evil"));
    ask(TRAEFIK, "GET", "/v1/items/1", NULL, forged, &R);
    assert_int_equal(R.status, 401);
    expect_no_identity(&R);
    ask(ENVOY, "GET", "/v1/items/1", "kg_nope", forged, &R);
    assert_int_equal(R.status, 401);
    expect_no_identity(&R);
}

static void
test_a_original_uri_not_in_normal_form_is_refused(void **state)
{
    /* The API behind the front proxy gets the client's raw path, so a path
     * that normalising would change is refused rather than judged as
     * something the API may not make of it. */
    static const char *const tricks[] = {
        "/v1/items/../admin/users",  "/v1/items/%2e%2e/admin/users",       "/v1//admin/users",
        "/v1/./admin/users",         "/v1/items/../../v1/admin",           "/v1/%61dmin/users",
        "/../../v1/admin/users?x=1", "/v1/admin/users#/../../../v1/items", "/v1/items\\..\\admin",
    };
    static const char *const malformed[] = {"/v1/items%2F..%2Fadmin", "/v1/items/%00", "v1/items",
                                            "/v1/items/%zz", ""};

    (void)state;
    for (size_t i = 0; i < sizeof(tricks) / sizeof(tricks[0]); i++) {
        ask(NGINX, "GET", tricks[i], fa_key(K_READER), NULL, &R);
        if (R.status != 400)
            print_error("%s: %ld\n", tricks[i], R.status);
        assert_int_equal(R.status, 400);
        expect_no_identity(&R);
        ask(TRAEFIK, "GET", tricks[i], fa_key(K_READER), NULL, &R);
        assert_int_equal(R.status, 400);
        expect_no_identity(&R);
    }
    /* The normal form itself is decided by the rules; the case of an
     * escape's hex digits does not matter. */
    ask(NGINX, "GET", "/v1/admin/users", fa_key(K_READER), NULL, &R);
    assert_int_equal(R.status, 403);
    ask(NGINX, "GET", "/v1/items/caf%c3%a9", fa_key(K_READER), NULL, &R);
    assert_int_equal(R.status, 200);
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        ask(NGINX, "GET", malformed[i], fa_key(K_READER), NULL, &R);
        if (R.status != 400)
            print_error("%s: %ld\n", malformed[i], R.status);
        assert_int_equal(R.status, 400);
        expect_no_identity(&R);
    }
}

static void
test_headers_that_disagree_or_come_alone_are_400(void **state)
{
    static const char *const cases[][5] = {
        /* nginx and Traefik headers naming different requests */
        {"X-Original-Method: GET", "X-Original-URI: /v1/items/1", "X-Forwarded-Method: GET",
         "X-Forwarded-Uri: /v1/admin/x", NULL},
        {"X-Original-Method: GET", "X-Original-URI: /v1/items/1", "X-Forwarded-Method: DELETE",
         "X-Forwarded-Uri: /v1/items/1", NULL},
        /* half a pair */
        {"X-Original-URI: /v1/items/1", NULL},
        {"X-Forwarded-Method: GET", NULL},
        /* a bad method */
        {"X-Original-Method: G(E)T", "X-Original-URI: /v1/items/1", NULL},
    };
    const char *key = fa_key(K_READER);

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kt_http_req req = {.url = kt_daemon_url(W.fa, "/"), .headers = cases[i]};

        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do_key(&req, key, &R));
        if (R.status != 400)
            print_error("case %zu: %ld %s\n", i, R.status, R.body);
        assert_int_equal(R.status, 400);
        expect_no_identity(&R);
    }
    /* Under the prefix (Envoy), a header naming another request is forged. */
    {
        const char *h[] = {"X-Original-Method: GET", "X-Original-URI: /v1/items/1", NULL};
        struct kt_http_req req = {
            .method = "DELETE", .url = kt_daemon_url(W.fa, "/authz/v1/admin/x"), .headers = h};

        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do_key(&req, key, &R));
        assert_int_equal(R.status, 400);
    }
    /* Both contracts naming the same request are fine. */
    {
        const char *h[] = {"X-Original-Method: GET", "X-Original-URI: /v1/items/1",
                           "X-Forwarded-Method: GET", "X-Forwarded-Uri: /v1/items/1", NULL};
        struct kt_http_req req = {.url = kt_daemon_url(W.fa, "/"), .headers = h};

        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do_key(&req, key, &R));
        expect_allowed(&R, K_READER, "read:items");
    }
}

/* ---- keygate's own endpoints ---- */

static void
test_health_is_keygates_own_only_when_asked_directly(void **state)
{
    (void)state;
    ask(PROXY, "GET", "/health", px_key(K_READER), NULL, &P);
    assert_int_equal(P.status, 200);
    {
        struct kt_http_req req = {.url = kt_daemon_url(W.fa, "/health")};

        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do_key(&req, fa_key(K_READER), &R));
        expect_same_answer(&R, &P);
        assert_string_equal(R.body, "{\"status\":\"ok\"}");
        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do(&req, &R));
        assert_int_equal(R.status, 401);
    }
    /* A question about an upstream path called /health is a question. */
    ask(NGINX, "GET", "/health", fa_key(K_READER), NULL, &R);
    expect_allowed(&R, K_READER, "read:items");
}

static void
test_the_deny_body_is_repeated_in_a_header_only_when_asked(void **state)
{
    static const char *const want[] = {"X-Keygate-Deny-Body: header", NULL};
    char buf[600];

    (void)state;
    ask(NGINX, "GET", "/v1/items/1", NULL, want, &R);
    assert_int_equal(R.status, 401);
    assert_non_null(kt_http_header_buf(&R, "X-Keygate-Deny-Body", buf, sizeof(buf)));
    assert_string_equal(buf, R.body);
    ask(NGINX, "POST", "/v1/items", fa_key(K_READER), want, &R);
    assert_int_equal(R.status, 403);
    assert_non_null(kt_http_header_buf(&R, "X-Keygate-Deny-Body", buf, sizeof(buf)));
    assert_string_equal(buf, R.body);
    ask(NGINX, "GET", "/v1/items/1", fa_key(K_READER), want, &R);
    expect_allowed(&R, K_READER, "read:items");
    assert_int_equal(kt_http_header_count(&R, "X-Keygate-Deny-Body"), 0);
    ask(NGINX, "GET", "/v1/items/1", NULL, NULL, &R);
    assert_int_equal(kt_http_header_count(&R, "X-Keygate-Deny-Body"), 0);
}

static void
test_forward_auth_never_calls_the_upstream_and_counts_its_outcomes(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_get(kt_daemon_admin_url(W.fa, "/metrics"), NULL, &R));
    assert_int_equal(R.status, 200);
    assert_null(strstr(R.body, "keygate_requests_total{outcome=\"allowed\"} 0\n"));
    assert_null(strstr(R.body, "keygate_requests_total{outcome=\"forbidden\"} 0\n"));
    assert_null(strstr(R.body, "keygate_requests_total{outcome=\"unauthenticated\"} 0\n"));
    assert_non_null(strstr(R.body, "keygate_requests_total{outcome=\"upstream_error\"} 0\n"));
}

/* Behind a proxy listed in trusted_proxies, failures count against the
 * client in X-Forwarded-For, as in proxy mode, and its cool-down is proxy
 * mode's 429 with Retry-After. */
static void
test_the_brute_force_throttle_counts_the_client_behind_the_proxy(void **state)
{
    char ra[64];

    (void)state;
    W.scratch = kt_daemon_new("mode forward_auth\nauth_throttle 3/min 60s\n"
                              "trusted_proxies 127.0.0.1\n" ROUTE_LINES);
    assert_non_null(W.scratch);
    assert_true(kt_daemon_create_key(W.scratch, "good", NULL, NULL, &W.scratch_key));
    assert_true(kt_daemon_start(W.scratch));
    for (int i = 0; i < 4; i++) {
        struct hdrs h = {.n = 0};
        struct kt_http_req req = {.url = kt_daemon_url(W.scratch, "/")};

        hdrs_add(&h, "Authorization", "Bearer kg_guess");
        hdrs_add(&h, "X-Original-Method", "GET");
        hdrs_add(&h, "X-Original-URI", "/v1/items/1");
        hdrs_add(&h, "X-Forwarded-For", "203.0.113.7");
        for (size_t j = 0; j < h.n; j++)
            h.list[j] = h.lines[j];
        h.list[h.n] = NULL;
        req.headers = h.list;
        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do(&req, &R));
        assert_int_equal(R.status, i < 3 ? 401 : 429);
    }
    assert_string_equal(R.body, "{\"detail\": \"Too many failed authentication attempts.\"}");
    assert_non_null(kt_http_header_buf(&R, "Retry-After", ra, sizeof(ra)));
    assert_true(atoi(ra) >= 1 && atoi(ra) <= 60);
    /* Another client behind the same proxy is untouched. */
    {
        const char *h[] = {"X-Original-Method: GET", "X-Original-URI: /v1/items/1",
                           "X-Forwarded-For: 203.0.113.8", NULL};
        struct kt_http_req req = {.url = kt_daemon_url(W.scratch, "/"), .headers = h};

        kt_http_resp_cleanup(&R);
        assert_true(kt_http_do_key(&req, W.scratch_key.key, &R));
        assert_int_equal(R.status, 200);
        assert_non_null(kt_http_header_buf(&R, "X-Keygate-Key-Id", ra, sizeof(ra)));
        assert_string_equal(ra, W.scratch_key.id);
    }
}

static void
test_both_daemons_stop_cleanly(void **state)
{
    (void)state;
    assert_int_equal(kt_daemon_stop(W.fa), 0);
    assert_int_equal(kt_daemon_stop(W.px), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_nginx_headers_name_the_original_request_and_an_allow_carries_the_identity,
            free_slots),
        cmocka_unit_test_teardown(
            test_traefik_headers_name_the_original_request_and_an_allow_carries_the_identity,
            free_slots),
        cmocka_unit_test_teardown(test_envoy_asks_with_its_own_method_and_path_under_the_prefix,
                                  free_slots),
        cmocka_unit_test_teardown(test_an_allow_carries_the_ratelimit_headers, free_slots),
        cmocka_unit_test_teardown(test_an_allow_is_logged_with_200_and_the_original_method_and_path,
                                  free_slots),
        cmocka_unit_test_teardown(test_denials_are_byte_for_byte_what_proxy_mode_sends, free_slots),
        cmocka_unit_test_teardown(test_over_the_rate_limit_is_429_with_retry_after_as_in_proxy_mode,
                                  free_slots),
        cmocka_unit_test_teardown(test_credits_are_charged_when_the_question_is_allowed,
                                  free_slots),
        cmocka_unit_test_teardown(test_a_denial_spends_no_credits, free_slots),
        cmocka_unit_test_teardown(test_forged_identity_headers_are_never_echoed_as_the_identity,
                                  free_slots),
        cmocka_unit_test_teardown(test_a_original_uri_not_in_normal_form_is_refused, free_slots),
        cmocka_unit_test_teardown(test_headers_that_disagree_or_come_alone_are_400, free_slots),
        cmocka_unit_test_teardown(test_health_is_keygates_own_only_when_asked_directly, free_slots),
        cmocka_unit_test_teardown(test_the_deny_body_is_repeated_in_a_header_only_when_asked,
                                  free_slots),
        cmocka_unit_test_teardown(
            test_forward_auth_never_calls_the_upstream_and_counts_its_outcomes, free_slots),
        cmocka_unit_test_teardown(test_the_brute_force_throttle_counts_the_client_behind_the_proxy,
                                  free_slots),
        cmocka_unit_test_teardown(test_both_daemons_stop_cleanly, free_slots),
    };

    return cmocka_run_group_tests_name("integration_test_forward_auth", tests, setup, teardown);
}
