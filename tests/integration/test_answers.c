/* integration/test_answers.c - CTest: integration_test_answers.
 *
 * Every answer keygate writes itself, byte for byte, through the real
 * daemon, in both error styles: two daemons with the same routes, limits
 * and kinds of keys, one in `error_style detail` (the default) and one in
 * `error_style error`. The 401s (with their WWW-Authenticate), the 403s
 * (with the scope named), the 429s of rate, credits and the brute-force
 * throttle (with Retry-After), the 400s of request hygiene and paths, the
 * admin API's 400/401/403/404/405/409/413/415, signup's 400/409/413/415/429, and the
 * bodies of /health, /livez and /readyz. 502 and 504 are pinned the same
 * way in test_proxy.c. Each case comes from its own X-Forwarded-For
 * address (trusted_proxies 127.0.0.1), so the throttle and the signup limit
 * count only what a case sends.
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

#define NSTYLES 2
#define EXPIRY_WAIT_MS 15000L

enum kind {
    K_READER,
    K_WRITER,
    K_NONE,
    K_EXPIRING,
    K_RATED,
    K_CREDITS,
    K_ADMIN,
    K_NKINDS,
    K_NOKEY
};

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw[NSTYLES]; /* [0] detail, [1] error */
    struct kt_key keys[NSTYLES][K_NKINDS];
    int next_ip;
};

static struct world W;
static struct kt_http_resp R;
static struct kt_raw_result RAW;

static const char *const style_config[NSTYLES] = {"", "error_style error\n"};

/* A key the checks above would all pass but for its own byte pattern. */
#define BAD_KEY "kg_ThisKeyWasNeverMadeByKeygateAtAllxxxxxxxxxxx0a1b2c3d"

static int
free_slot(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    kt_raw_result_cleanup(&RAW);
    return 0;
}

/* The body keygate writes for message in a style: detail adds the period;
 * error names the type. */
static void
body_for(int style, const char *type, const char *message, char *out, size_t cap)
{
    if (style == 0)
        snprintf(out, cap, "{\"detail\": \"%s.\"}", message);
    else
        snprintf(out, cap, "{\"error\": {\"type\": \"%s\", \"message\": \"%s\"}}", type, message);
}

/* Status, Content-Type and the body, byte for byte. */
static void
expect_answer(const char *what, long status, const char *body)
{
    char ct[64] = "";

    if (R.status != status || R.body == NULL || strcmp(R.body, body) != 0)
        fail_msg("%s: wanted %ld %s\ngot %ld %s", what, status, body, R.status,
                 R.body != NULL ? R.body : "(no body)");
    if (kt_http_header_buf(&R, "Content-Type", ct, sizeof(ct)) == NULL ||
        strcmp(ct, "application/json") != 0)
        fail_msg("%s: Content-Type should be application/json, got %s", what, ct);
}

static void
expect_header(const char *what, const char *name, const char *value)
{
    char got[256];

    if (kt_http_header_buf(&R, name, got, sizeof(got)) == NULL)
        fail_msg("%s: no %s header", what, name);
    if (value != NULL && strcmp(got, value) != 0)
        fail_msg("%s: %s should be \"%s\", got \"%s\"", what, name, value, got);
}

/* Retry-After present, a whole number of seconds in [lo, hi]. */
static void
expect_retry_after(const char *what, long lo, long hi)
{
    char got[32];
    char *end;
    long v;

    if (kt_http_header_buf(&R, "Retry-After", got, sizeof(got)) == NULL)
        fail_msg("%s: no Retry-After", what);
    v = strtol(got, &end, 10);
    if (*end != '\0' || v < lo || v > hi)
        fail_msg("%s: Retry-After should be %ld..%ld seconds, got \"%s\"", what, lo, hi, got);
}

/* One request from a client address of its own (the next unused one). */
static void
send_as(struct kt_daemon *d, bool admin, const char *method, const char *path, enum kind k,
        int style, const char *ip, const char *content_type, const char *body)
{
    char xff[64], ct[128], fresh_ip[32];
    const char *hdrs[3] = {xff, NULL, NULL};
    struct kt_http_req req = {.method = method,
                              .url = admin ? kt_daemon_admin_url(d, path) : kt_daemon_url(d, path),
                              .headers = hdrs,
                              .body = body,
                              .body_len = body != NULL ? strlen(body) : 0};
    const char *key = k == K_NOKEY ? NULL : k == K_NKINDS ? BAD_KEY : W.keys[style][k].key;

    if (ip == NULL) {
        W.next_ip++;
        snprintf(fresh_ip, sizeof(fresh_ip), "10.9.%d.%d", W.next_ip / 250, W.next_ip % 250 + 1);
        ip = fresh_ip;
    }
    snprintf(xff, sizeof(xff), "X-Forwarded-For: %s", ip);
    if (content_type != NULL) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        hdrs[1] = ct;
    }
    kt_http_resp_cleanup(&R);
    if (!kt_http_do_key(&req, key, &R))
        fail_msg("%s %s got no answer", method, path);
}

static int teardown(void **state);

static bool
make_keys(struct kt_daemon *d, struct kt_key *keys)
{
    const char *const args[K_NKINDS][14] = {
        [K_READER] = {"keys", "create", "--name", "reader", "--scopes", "read:items", "--json"},
        [K_WRITER] = {"keys", "create", "--name", "writer", "--scopes", "write:items", "--json"},
        [K_NONE] = {"keys", "create", "--name", "scopeless", "--json"},
        [K_RATED] = {"keys", "create", "--name", "rated", "--scopes", "read:items", "--rate", "1/h",
                     "--burst", "1", "--json"},
        [K_CREDITS] = {"keys", "create", "--name", "credits", "--scopes", "read:items", "--credits",
                       "1", "--refill", "day", "--json"},
        [K_ADMIN] = {"keys", "create", "--name", "admin", "--scopes", "keys:read,keys:write",
                     "--json"},
    };

    for (int i = 0; i < K_NKINDS; i++)
        if (i != K_EXPIRING && !kt_daemon_key_cli(d, (const char *const *)args[i], &keys[i]))
            return false;
    return true;
}

static int
setup(void **state)
{
    char cfg[1024];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        goto fail;
    for (int s = 0; s < NSTYLES; s++) {
        snprintf(cfg, sizeof(cfg),
                 "upstream %s\n"
                 "require_scopes on\n"
                 "route * /v1/items* read:items\n"
                 "auth_throttle 3/min 60s\n"
                 "trusted_proxies 127.0.0.1/32\n"
                 "signup on\n"
                 "%s",
                 kt_upstream_url(W.up), style_config[s]);
        W.gw[s] = kt_daemon_new(cfg);
        if (W.gw[s] == NULL || !make_keys(W.gw[s], W.keys[s]) || !kt_daemon_start(W.gw[s]))
            goto fail;
    }
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
    kt_raw_result_cleanup(&RAW);
    for (int s = 0; s < NSTYLES; s++) {
        kt_daemon_free(W.gw[s]);
        W.gw[s] = NULL;
        for (int k = 0; k < K_NKINDS; k++)
            kt_key_cleanup(&W.keys[s][k]);
    }
    kt_upstream_stop(W.up);
    W.up = NULL;
    kt_http_global_cleanup();
    return 0;
}

/* ---- the public listener ---- */

struct pub_case {
    const char *what;
    const char *method, *path;
    enum kind key;
    long status;
    const char *type, *message;
    const char *www_authenticate; /* NULL: must be absent */
};

static void
test_denials_are_exact_in_both_styles(void **state)
{
    static const char challenge[] = "Bearer realm=\"keygate\"";
    static const char invalid[] = "Bearer realm=\"keygate\", error=\"invalid_token\"";
    static const struct pub_case cases[] = {
        {"no key", "GET", "/v1/items", K_NOKEY, 401, "authentication_error",
         "Authentication credentials were not provided", challenge},
        {"a key keygate never made", "GET", "/v1/items/1", K_NKINDS, 401, "authentication_error",
         "Invalid API key", invalid},
        {"a key without the route's scope", "GET", "/v1/items", K_WRITER, 403, "permission_error",
         "API key is missing the required scope read:items", NULL},
        {"a scope-less key under require_scopes", "POST", "/v1/items", K_NONE, 403,
         "permission_error", "API key has no scopes and scopes are required", NULL},
        {"a path no route covers", "GET", "/v1/other", K_READER, 403, "permission_error",
         "No route permits this request", NULL},
        {"/health without a key", "GET", "/health", K_NOKEY, 401, "authentication_error",
         "Authentication credentials were not provided", challenge},
        {"/health with a bad key", "GET", "/health", K_NKINDS, 401, "authentication_error",
         "Invalid API key", invalid},
    };
    char body[512];

    (void)state;
    kt_upstream_reset(W.up);
    for (int s = 0; s < NSTYLES; s++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            const struct pub_case *c = &cases[i];

            send_as(W.gw[s], false, c->method, c->path, c->key, s, NULL, NULL, NULL);
            body_for(s, c->type, c->message, body, sizeof(body));
            expect_answer(c->what, c->status, body);
            if (c->www_authenticate != NULL)
                expect_header(c->what, "WWW-Authenticate", c->www_authenticate);
            else if (kt_http_header_count(&R, "WWW-Authenticate") != 0)
                fail_msg("%s: a %ld carries no WWW-Authenticate", c->what, c->status);
        }
    }
    if (kt_upstream_count(W.up) != 0)
        fail_msg("no refused request may reach the upstream; it saw %zu", kt_upstream_count(W.up));
}

static void
test_health_and_probes_are_exact(void **state)
{
    (void)state;
    for (int s = 0; s < NSTYLES; s++) {
        send_as(W.gw[s], false, "GET", "/health", K_READER, s, NULL, NULL, NULL);
        expect_answer("/health with a key", 200, "{\"status\":\"ok\"}");
        send_as(W.gw[s], true, "GET", "/livez", K_NOKEY, s, NULL, NULL, NULL);
        expect_answer("/livez", 200, "{\"status\":\"ok\"}");
        send_as(W.gw[s], true, "GET", "/readyz", K_NOKEY, s, NULL, NULL, NULL);
        expect_answer("/readyz", 200, "{\"status\":\"ready\"}");
    }
}

static void
test_an_expired_key_is_exact_after_it_worked(void **state)
{
    const char *args[] = {"keys",       "create",    "--name", "expiring", "--scopes",
                          "read:items", "--expires", "3s",     "--json",   NULL};
    int64_t deadline;
    char body[256];

    (void)state;
    for (int s = 0; s < NSTYLES; s++) {
        /* Made now: a key the CLI just made works on its first request. */
        assert_true(kt_daemon_key_cli(W.gw[s], args, &W.keys[s][K_EXPIRING]));
        send_as(W.gw[s], false, "GET", "/v1/items", K_EXPIRING, s, NULL, NULL, NULL);
        if (R.status != 200)
            fail_msg("a key expiring in 3 s should work before it expires: %ld %s", R.status,
                     R.body);
    }
    deadline = kt_mono_ms() + EXPIRY_WAIT_MS;
    for (int s = 0; s < NSTYLES; s++) {
        do {
            send_as(W.gw[s], false, "GET", "/v1/items", K_EXPIRING, s, NULL, NULL, NULL);
            if (R.status == 200)
                kt_sleep_ms(100);
        } while (R.status == 200 && kt_mono_ms() < deadline);
        body_for(s, "authentication_error", "API key has expired", body, sizeof(body));
        expect_answer("an expired key", 401, body);
        expect_header("an expired key", "WWW-Authenticate",
                      "Bearer realm=\"keygate\", error=\"invalid_token\"");
    }
}

static void
test_429s_are_exact_with_retry_after(void **state)
{
    char body[256], ip[32];

    (void)state;
    for (int s = 0; s < NSTYLES; s++) {
        /* --rate 1/h --burst 1: the second request waits about an hour. */
        send_as(W.gw[s], false, "GET", "/v1/items", K_RATED, s, NULL, NULL, NULL);
        assert_int_equal(R.status, 200);
        send_as(W.gw[s], false, "GET", "/v1/items", K_RATED, s, NULL, NULL, NULL);
        body_for(s, "rate_limit_error", "Rate limit exceeded", body, sizeof(body));
        expect_answer("rate limited", 429, body);
        expect_retry_after("rate limited", 1, 3600);

        /* --credits 1 --refill day: the first 2xx spends it until the next day. */
        send_as(W.gw[s], false, "GET", "/v1/items", K_CREDITS, s, NULL, NULL, NULL);
        assert_int_equal(R.status, 200);
        send_as(W.gw[s], false, "GET", "/v1/items", K_CREDITS, s, NULL, NULL, NULL);
        body_for(s, "quota_exceeded", "Quota exceeded", body, sizeof(body));
        expect_answer("out of credits", 429, body);
        expect_retry_after("out of credits", 1, 86400);

        /* auth_throttle 3/min 60s: three failures, then the address cools down. */
        snprintf(ip, sizeof(ip), "10.8.%d.1", s);
        for (int i = 0; i < 3; i++) {
            send_as(W.gw[s], false, "GET", "/v1/items", K_NKINDS, s, ip, NULL, NULL);
            assert_int_equal(R.status, 401);
        }
        send_as(W.gw[s], false, "GET", "/v1/items", K_READER, s, ip, NULL, NULL);
        body_for(s, "rate_limit_error", "Too many failed authentication attempts", body,
                 sizeof(body));
        expect_answer("throttled", 429, body);
        expect_retry_after("throttled", 1, 60);
        /* The admin listener keeps its own count with the same settings. */
        for (int i = 0; i < 3; i++) {
            send_as(W.gw[s], true, "GET", "/v1/keys", K_NKINDS, s, ip, NULL, NULL);
            assert_int_equal(R.status, 401);
        }
        send_as(W.gw[s], true, "GET", "/v1/keys", K_ADMIN, s, ip, NULL, NULL);
        expect_answer("throttled on the admin listener", 429, body);
        expect_retry_after("throttled on the admin listener", 1, 60);
    }
}

/* ---- request hygiene and paths: raw bytes ---- */

struct raw_case {
    const char *what;
    const char *request;
    long status;
    const char *message;
};

static void
test_hygiene_and_path_400s_are_exact(void **state)
{
    static const struct raw_case cases[] = {
        {"CL and TE",
         "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400, "Both Content-Length and Transfer-Encoding"},
        {"two Content-Lengths",
         "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
         400, "Several Content-Length headers"},
        {"gzip transfer coding",
         "POST /v1/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
         "Unsupported Transfer-Encoding"},
        {"two Host headers", "GET /v1/items HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
         "Several Host headers"},
        {"an encoded slash", "GET /v1/items%2F..%2Fadmin HTTP/1.1\r\nHost: x\r\n\r\n", 400,
         "Malformed request path"},
        {"an encoded NUL", "GET /v1/items%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400,
         "Malformed request path"},
    };
    char body[256];

    (void)state;
    for (int s = 0; s < NSTYLES; s++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            const struct raw_case *c = &cases[i];
            struct kt_raw_resp r[2];
            size_t n;

            kt_raw_result_cleanup(&RAW);
            assert_true(kt_raw_exchange(kt_daemon_port(W.gw[s]), c->request, strlen(c->request), 1,
                                        200, 5000, &RAW));
            n = kt_raw_parse(RAW.data, RAW.len, RAW.closed, r, 2);
            body_for(s, "invalid_request_error", c->message, body, sizeof(body));
            if (n != 1 || r[0].status != c->status || r[0].body_len != strlen(body) ||
                memcmp(RAW.data + r[0].body_off, body, r[0].body_len) != 0)
                fail_msg("%s: wanted one %ld %s\ngot %zu answer(s):\n%s", c->what, c->status, body,
                         n, RAW.data);
            if (memmem(RAW.data + r[0].head_off, r[0].head_len, "\r\nConnection: close", 19) ==
                NULL)
                fail_msg("%s: a 400 closes the connection:\n%s", c->what, RAW.data);
        }
    }
}

static void
test_a_header_block_over_the_limit_is_an_exact_431(void **state)
{
    static char big[17000];
    char line[17100], body[256];
    const char *hdrs[] = {line, NULL};

    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    snprintf(line, sizeof(line), "X-Filler: %s", big);
    for (int s = 0; s < NSTYLES; s++) {
        kt_http_resp_cleanup(&R);
        assert_true(kt_http_get(kt_daemon_url(W.gw[s], "/v1/items"), hdrs, &R));
        body_for(s, "invalid_request_error", "Request header fields too large", body, sizeof(body));
        expect_answer("16 KiB of headers", 431, body);
    }
}

/* ---- the admin API ---- */

struct admin_case {
    const char *what;
    const char *method, *path;
    enum kind key;
    const char *content_type, *body;
    long status;
    const char *type, *message;
};

static void
test_admin_errors_are_exact_in_both_styles(void **state)
{
    static const struct admin_case cases[] = {
        {"no key", "GET", "/v1/keys", K_NOKEY, NULL, NULL, 401, "authentication_error",
         "Authentication credentials were not provided"},
        {"a key keygate never made", "GET", "/v1/keys", K_NKINDS, NULL, NULL, 401,
         "authentication_error", "Invalid API key"},
        {"a key without the admin scope", "GET", "/v1/keys", K_READER, NULL, NULL, 403,
         "permission_error", "API key is missing the required scope keys:read"},
        {"a key without keys:write", "POST", "/v1/keys", K_READER, "application/json",
         "{\"name\": \"x\"}", 403, "permission_error",
         "API key is missing the required scope keys:write"},
        {"a scope-less key under require_scopes", "GET", "/v1/keys", K_NONE, NULL, NULL, 403,
         "permission_error", "API key has no scopes and scopes are required"},
        {"an unknown path", "GET", "/v1/nothing", K_ADMIN, NULL, NULL, 404, "not_found_error",
         "Not found"},
        {"an unknown key id", "GET", "/v1/keys/key_0000000000000000000000", K_ADMIN, NULL, NULL,
         404, "not_found_error", "Not found"},
        {"a method the path has not", "DELETE", "/v1/keys", K_ADMIN, NULL, NULL, 405,
         "invalid_request_error", "Method not allowed"},
        {"an unknown query parameter", "GET", "/v1/keys?colour=red", K_ADMIN, NULL, NULL, 400,
         "invalid_request_error", "unknown query parameter: colour"},
        {"a limit out of range", "GET", "/v1/keys?limit=0", K_ADMIN, NULL, NULL, 400,
         "invalid_request_error", "limit must be a whole number from 1 to 200"},
        {"a field of the wrong type", "POST", "/v1/keys", K_ADMIN, "application/json",
         "{\"name\": 5}", 400, "invalid_request_error", "name must be a string"},
        {"a missing field", "POST", "/v1/keys", K_ADMIN, "application/json", "{}", 400,
         "invalid_request_error", "name is required"},
        {"an unknown field", "POST", "/v1/keys", K_ADMIN, "application/json",
         "{\"name\": \"x\", \"colour\": 1}", 400, "invalid_request_error", "unknown field: colour"},
        {"broken JSON", "POST", "/v1/keys", K_ADMIN, "application/json", "{\"name\": ", 400,
         "invalid_request_error", "Malformed JSON body"},
        {"a body that is not JSON", "POST", "/v1/keys", K_ADMIN, "text/plain", "name=x", 415,
         "invalid_request_error", "Content-Type must be application/json"},
    };
    char body[512];

    (void)state;
    for (int s = 0; s < NSTYLES; s++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            const struct admin_case *c = &cases[i];

            send_as(W.gw[s], true, c->method, c->path, c->key, s, NULL, c->content_type, c->body);
            body_for(s, c->type, c->message, body, sizeof(body));
            expect_answer(c->what, c->status, body);
            if (c->status == 405)
                expect_header(c->what, "Allow", "POST, GET");
        }
    }
}

static void
test_an_admin_conflict_is_an_exact_409(void **state)
{
    struct kt_key victim = {0};
    char path[128], msg[128], body[512];

    (void)state;
    for (int s = 0; s < NSTYLES; s++) {
        assert_true(kt_daemon_create_key(W.gw[s], "victim", NULL, NULL, &victim));
        snprintf(path, sizeof(path), "/v1/keys/%s/revoke", victim.id);
        send_as(W.gw[s], true, "POST", path, K_ADMIN, s, NULL, NULL, NULL);
        if (R.status != 200)
            fail_msg("a first revocation should be 200, got %ld %s", R.status, R.body);
        send_as(W.gw[s], true, "POST", path, K_ADMIN, s, NULL, NULL, NULL);
        snprintf(msg, sizeof(msg), "key %s is already revoked", victim.id);
        body_for(s, "invalid_request_error", msg, body, sizeof(body));
        kt_key_cleanup(&victim);
        expect_answer("a second revocation", 409, body);
    }
}

/* ---- signup ---- */

#define SIGNUP "/api/v1/signup/"

static void
test_signup_errors_are_exact_in_both_styles(void **state)
{
    char body[512], email[128], ok[256], ip[32];

    (void)state;
    for (int s = 0; s < NSTYLES; s++) {
        send_as(W.gw[s], false, "POST", SIGNUP, K_NOKEY, s, NULL, "text/plain", "x");
        body_for(s, "invalid_request_error", "Content-Type must be application/json", body,
                 sizeof(body));
        expect_answer("signup without JSON", 415, body);

        send_as(W.gw[s], false, "POST", SIGNUP, K_NOKEY, s, NULL, "application/json",
                "{\"email\": \"a@example.com\"}");
        body_for(s, "invalid_request_error", "password is required", body, sizeof(body));
        expect_answer("signup without a password", 400, body);

        snprintf(email, sizeof(email), "twice-%d@example.com", s);
        snprintf(ok, sizeof(ok), "{\"email\": \"%s\", \"password\": \"correct horse 42\"}", email);
        send_as(W.gw[s], false, "POST", SIGNUP, K_NOKEY, s, NULL, "application/json", ok);
        if (R.status != 201)
            fail_msg("a first signup should be 201, got %ld %s", R.status, R.body);
        {
            json_t *o = json_loads(R.body, 0, NULL);
            const char *key = json_string_value(json_object_get(o, "api_key"));

            /* Its key must never reach a log either. */
            if (key == NULL) {
                json_decref(o);
                fail_msg("a signup should answer with api_key: %s", R.body);
            }
            kt_daemon_remember_key(W.gw[s], key);
            json_decref(o);
        }
        send_as(W.gw[s], false, "POST", SIGNUP, K_NOKEY, s, NULL, "application/json", ok);
        body_for(s, "invalid_request_error", "email is already in use", body, sizeof(body));
        expect_answer("a second signup with the same email", 409, body);

        /* Five a minute from one address; the sixth is refused. */
        snprintf(ip, sizeof(ip), "10.7.%d.1", s);
        for (int i = 0; i < 5; i++) {
            send_as(W.gw[s], false, "POST", SIGNUP, K_NOKEY, s, ip, "application/json", "{}");
            assert_int_equal(R.status, 400);
        }
        send_as(W.gw[s], false, "POST", SIGNUP, K_NOKEY, s, ip, "application/json", "{}");
        body_for(s, "rate_limit_error", "Too many signup requests", body, sizeof(body));
        expect_answer("a sixth signup in a minute", 429, body);
    }
}

static void
test_bodies_over_64_kib_are_an_exact_413(void **state)
{
    static char big[70 * 1024];
    char body[256];

    (void)state;
    memset(big, ' ', sizeof(big) - 1);
    for (int s = 0; s < NSTYLES; s++) {
        body_for(s, "invalid_request_error", "Request body is larger than 64 KiB", body,
                 sizeof(body));
        send_as(W.gw[s], true, "POST", "/v1/keys", K_ADMIN, s, NULL, "application/json", big);
        expect_answer("70 KiB to the admin API", 413, body);
        send_as(W.gw[s], false, "POST", SIGNUP, K_NOKEY, s, NULL, "application/json", big);
        expect_answer("70 KiB to signup", 413, body);
    }
}

static void
test_the_daemons_stop_cleanly(void **state)
{
    (void)state;
    for (int s = 0; s < NSTYLES; s++)
        assert_int_equal(kt_daemon_stop(W.gw[s]), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_denials_are_exact_in_both_styles, free_slot),
        cmocka_unit_test_teardown(test_health_and_probes_are_exact, free_slot),
        cmocka_unit_test_teardown(test_429s_are_exact_with_retry_after, free_slot),
        cmocka_unit_test_teardown(test_hygiene_and_path_400s_are_exact, free_slot),
        cmocka_unit_test_teardown(test_a_header_block_over_the_limit_is_an_exact_431, free_slot),
        cmocka_unit_test_teardown(test_admin_errors_are_exact_in_both_styles, free_slot),
        cmocka_unit_test_teardown(test_an_admin_conflict_is_an_exact_409, free_slot),
        cmocka_unit_test_teardown(test_signup_errors_are_exact_in_both_styles, free_slot),
        cmocka_unit_test_teardown(test_bodies_over_64_kib_are_an_exact_413, free_slot),
        cmocka_unit_test_teardown(test_an_expired_key_is_exact_after_it_worked, free_slot),
        cmocka_unit_test_teardown(test_the_daemons_stop_cleanly, free_slot),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
