/* integration/test_signup.c - CTest: integration_test_signup.
 *
 * Signup on the public listener of the real daemon. Off by default: the
 * path is an ordinary one (401 without a key, proxied with one). On: 201
 * with exactly the Avala v2 shape and a key that works at once, 400s
 * naming email or password, 409 for an address already registered, 413 and
 * 415, the 6th request within a minute from one address answered 429 with
 * Retry-After, and no password or key anywhere in the daemon's log.
 *
 * The limit is 5 requests per minute per client address, so each test
 * sends from addresses of its own: every 127.0.0.0/8 address is loopback
 * on Linux, and a socket bound to 127.0.0.N reaches the daemon on
 * 127.0.0.1 with N's address as its peer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define SIGNUP_PATH "/api/v1/signup/"
#define NO_CREDENTIAL "{\"detail\": \"Authentication credentials were not provided.\"}"
#define MISSING_ADMIN "{\"detail\": \"API key is missing the required scope admin:all.\"}"
#define MISSING_READ "{\"detail\": \"API key is missing the required scope read:items.\"}"
#define WIDE_WARNING                                                                               \
    "signup is on and signup_role holds \"*\": every anonymous signup gets keys that pass "        \
    "every route rule (set signup_role to none or to the scopes a new account needs)"
#define KEY_LEN 54
#define MAX_SECRETS 32

struct world {
    struct kt_upstream *up;
    struct kt_daemon *off;      /* no signup directive: off */
    struct kt_daemon *on;       /* signup on, log_level debug, routes needing scopes */
    struct kt_daemon *wide;     /* signup on with signup_role *: warned about */
    struct kt_key off_key;      /* a key of `off`, made before it starts */
    char *secrets[MAX_SECRETS]; /* passwords and keys that must never be logged */
    size_t nsecrets;
};

static struct world W;

static void
secret(const char *s)
{
    if (W.nsecrets < MAX_SECRETS)
        W.secrets[W.nsecrets++] = strdup(s);
}

/* ---- a client with a chosen source address ---- */

struct answer {
    int status;
    char *raw;     /* the whole response */
    char *headers; /* status line and headers */
    char *body;
    json_t *json;
};

static void
answer_cleanup(struct answer *a)
{
    free(a->raw);
    free(a->headers);
    free(a->body);
    json_decref(a->json);
    memset(a, 0, sizeof(*a));
}

/* Sends one request from source address ip to the daemon's public
 * listener and reads the answer until the server closes (Connection:
 * close), within 30 s. content_type NULL: no Content-Type header. */
static void
send_from(const char *ip, struct kt_daemon *d, const char *method, const char *path,
          const char *content_type, const char *body, size_t len, struct answer *out)
{
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    struct timeval tv = {.tv_sec = 30};
    struct kt_raw_resp rr;
    char head[512], *req;
    size_t cap = 4096, got = 0;
    int fd, n;

    memset(out, 0, sizeof(*out));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(inet_pton(AF_INET, ip, &src.sin_addr), 1);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr), 1);
    dst.sin_port = htons((uint16_t)kt_daemon_port(d));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0)
        fail_msg("cannot connect from %s", ip);
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%sContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 method, path, content_type != NULL ? "Content-Type: " : "",
                 content_type != NULL ? content_type : "", content_type != NULL ? "\r\n" : "", len);
    assert_true(n > 0 && (size_t)n < sizeof(head));
    /* One buffer, so a small request leaves in one segment. MSG_NOSIGNAL:
     * the daemon may answer early and close while we still write. */
    req = malloc((size_t)n + len);
    assert_non_null(req);
    memcpy(req, head, (size_t)n);
    memcpy(req + n, body, len);
    for (size_t off = 0; off < (size_t)n + len;) {
        ssize_t w = send(fd, req + off, (size_t)n + len - off, MSG_NOSIGNAL);

        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(req);
    out->raw = malloc(cap);
    assert_non_null(out->raw);
    for (;;) {
        ssize_t r;

        if (got + 1024 > cap) {
            cap *= 2;
            out->raw = realloc(out->raw, cap);
            assert_non_null(out->raw);
        }
        r = read(fd, out->raw + got, cap - got - 1);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    out->raw[got] = '\0';
    if (kt_raw_parse(out->raw, got, true, &rr, 1) != 1)
        fail_msg("%s %s from %s: no complete answer: %s", method, path, ip, out->raw);
    out->status = rr.status;
    out->headers = strndup(out->raw + rr.head_off, rr.head_len);
    out->body = strndup(out->raw + rr.body_off, rr.body_len);
    out->json = json_loads(out->body, 0, NULL);
}

static void
signup_from(const char *ip, const char *body, struct answer *out)
{
    send_from(ip, W.on, "POST", SIGNUP_PATH, "application/json", body, strlen(body), out);
}

static void
expect_status(const struct answer *a, int status)
{
    if (a->status != status)
        fail_msg("expected %d, got %d: %s", status, a->status, a->body);
}

/* A 400 (or other) whose detail mentions words. */
static void
expect_detail(const struct answer *a, int status, const char *words)
{
    const char *detail = json_string_value(json_object_get(a->json, "detail"));

    expect_status(a, status);
    if (detail == NULL || strstr(detail, words) == NULL)
        fail_msg("expected a detail naming \"%s\", got %s", words, a->body);
}

static char *
header(const struct answer *a, const char *name)
{
    struct kt_http_resp fake = {.headers = a->headers};

    return kt_http_header(&fake, name);
}

/* Status of GET path on daemon d with key; its body into body (cap bytes)
 * when body is not NULL. */
static long
public_get_path(struct kt_daemon *d, const char *path, const char *key, char *body, size_t cap)
{
    char auth[160];
    const char *hdrs[2] = {auth, NULL};
    struct kt_http_resp resp;
    long status;

    snprintf(auth, sizeof(auth), "X-Avala-Api-Key: %s", key);
    assert_true(kt_http_get(kt_daemon_url(d, path), hdrs, &resp));
    status = resp.status;
    if (body != NULL)
        snprintf(body, cap, "%s", resp.body != NULL ? resp.body : "");
    kt_http_resp_cleanup(&resp);
    return status;
}

/* Status of GET /anything on daemon d with key. */
static long
public_get(struct kt_daemon *d, const char *key)
{
    return public_get_path(d, "/v1/agents", key, NULL, 0);
}

/* ---- setup ---- */

static int
setup(void **state)
{
    char cfg[512];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg), "upstream %s\n", kt_upstream_url(W.up));
    W.off = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg),
             "upstream %s\nsignup on\nlog_level debug\nroute * /admin/* admin:all\n"
             "route GET /v1/items read:items\n",
             kt_upstream_url(W.up));
    W.on = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\nsignup on\nsignup_role *\n", kt_upstream_url(W.up));
    W.wide = kt_daemon_new(cfg);
    if (W.off == NULL || W.on == NULL || W.wide == NULL)
        return -1;
    if (!kt_daemon_create_key(W.off, "app", NULL, NULL, &W.off_key))
        return -1;
    if (!kt_daemon_start(W.off) || !kt_daemon_start(W.on))
        return -1;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.off);
    kt_daemon_free(W.on);
    kt_daemon_free(W.wide);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.off_key);
    for (size_t i = 0; i < W.nsecrets; i++)
        free(W.secrets[i]);
    kt_http_global_cleanup();
    return 0;
}

/* ---- tests ---- */

static void
test_signup_is_off_by_default_and_its_path_is_an_ordinary_one(void **state)
{
    static const char body[] = "{\"email\": \"dev@acme.com\", \"password\": \"SecurePass123!\"}";
    struct answer a;
    char auth[160];
    const char *hdrs[3] = {auth, "Content-Type: application/json", NULL};
    struct kt_http_req req = {
        .method = "POST", .headers = hdrs, .body = body, .body_len = sizeof(body) - 1};
    struct kt_http_resp resp;
    struct kt_echo echo;

    (void)state;
    send_from("127.0.0.1", W.off, "POST", SIGNUP_PATH, "application/json", body, sizeof(body) - 1,
              &a);
    expect_status(&a, 401);
    assert_string_equal(a.body, NO_CREDENTIAL);
    answer_cleanup(&a);
    assert_int_equal(kt_upstream_count_prefix(W.up, SIGNUP_PATH), 0);

    /* With a key it goes to the upstream like any other path. */
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.off_key.key);
    req.url = kt_daemon_url(W.off, SIGNUP_PATH);
    assert_true(kt_http_do(&req, &resp));
    assert_int_equal(resp.status, 200);
    assert_true(kt_echo_parse(resp.body, resp.body_len, &echo));
    assert_string_equal(kt_echo_target(&echo), SIGNUP_PATH);
    kt_echo_cleanup(&echo);
    kt_http_resp_cleanup(&resp);
}

static void
test_a_signup_answers_201_with_the_user_and_a_key_that_works_at_once(void **state)
{
    struct answer a;
    json_t *user;
    const char *key;
    char *ct;

    (void)state;
    secret("SecurePass123!");
    signup_from("127.0.1.1", "{\"email\": \"Dev@Acme.com\", \"password\": \"SecurePass123!\"}", &a);
    expect_status(&a, 201);
    ct = header(&a, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/json");
    free(ct);
    /* Exactly the seed's shape: {"user": {uid, username, email, first_name,
     * last_name}, "api_key"}, nothing more. */
    assert_int_equal(json_object_size(a.json), 2);
    user = json_object_get(a.json, "user");
    assert_int_equal(json_object_size(user), 5);
    assert_true(strncmp(json_string_value(json_object_get(user, "uid")), "usr_", 4) == 0);
    assert_string_equal(json_string_value(json_object_get(user, "username")), "dev@acme.com");
    assert_string_equal(json_string_value(json_object_get(user, "email")), "dev@acme.com");
    assert_string_equal(json_string_value(json_object_get(user, "first_name")), "");
    assert_string_equal(json_string_value(json_object_get(user, "last_name")), "");
    key = json_string_value(json_object_get(a.json, "api_key"));
    assert_non_null(key);
    assert_int_equal(strlen(key), KEY_LEN);
    secret(key);
    kt_daemon_remember_key(W.on, key);
    /* No sleep: the key is in the daemon's cache before the answer. */
    assert_int_equal(public_get(W.on, key), 200);
    answer_cleanup(&a);

    secret("Analytical1engine");
    signup_from("127.0.1.2",
                "{\"email\": \"ada@example.org\", \"password\": \"Analytical1engine\","
                " \"first_name\": \"Ada\", \"last_name\": \"Lovelace\"}",
                &a);
    expect_status(&a, 201);
    user = json_object_get(a.json, "user");
    assert_string_equal(json_string_value(json_object_get(user, "first_name")), "Ada");
    assert_string_equal(json_string_value(json_object_get(user, "last_name")), "Lovelace");
    secret(json_string_value(json_object_get(a.json, "api_key")));
    kt_daemon_remember_key(W.on, json_string_value(json_object_get(a.json, "api_key")));
    answer_cleanup(&a);
}

/* signup_role defaults to none: the signup key passes no route that
 * requires a scope, in any letter case, and reaches only unruled paths. */
static void
test_a_signup_key_gets_403_on_every_route_that_requires_a_scope(void **state)
{
    static const char *const admin_paths[] = {"/admin/secret", "/ADMIN/secret", "/Admin/x/y"};
    struct answer a;
    char body[256], *key;

    (void)state;
    secret("Limited1password");
    signup_from("127.0.1.3",
                "{\"email\": \"anon@example.org\", \"password\": \"Limited1password\"}", &a);
    expect_status(&a, 201);
    key = strdup(json_string_value(json_object_get(a.json, "api_key")));
    answer_cleanup(&a);
    assert_non_null(key);
    secret(key);
    kt_daemon_remember_key(W.on, key);
    kt_upstream_reset(W.up);
    for (size_t i = 0; i < sizeof(admin_paths) / sizeof(admin_paths[0]); i++) {
        long st = public_get_path(W.on, admin_paths[i], key, body, sizeof(body));

        if (st != 403 || strcmp(body, MISSING_ADMIN) != 0)
            fail_msg("GET %s with a signup key should be 403 %s, got %ld %s", admin_paths[i],
                     MISSING_ADMIN, st, body);
    }
    assert_int_equal(public_get_path(W.on, "/v1/items", key, body, sizeof(body)), 403);
    assert_string_equal(body, MISSING_READ);
    assert_int_equal(kt_upstream_count(W.up), 0);
    /* No rule, no scope needed: the key itself is good. */
    assert_int_equal(public_get(W.on, key), 200);
    assert_int_equal(kt_upstream_count(W.up), 1);
    free(key);
}

/* serve -t and the daemon's start warn when signup is on with a wildcard
 * role; the safe default says nothing. */
static void
test_signup_with_a_wildcard_role_is_warned_about(void **state)
{
    struct kt_cli_result r;

    (void)state;
    assert_true(kt_daemon_cli(W.wide, &r, (const char *const[]){"serve", "-t", NULL}));
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(r.out, "configuration OK\n");
    if (r.err == NULL || strstr(r.err, "keygate: warning: ") != r.err ||
        strstr(r.err, WIDE_WARNING "\n") == NULL || strchr(r.err, '\n')[1] != '\0')
        fail_msg("serve -t should print one warning line, got: %s", r.err != NULL ? r.err : "");
    kt_cli_result_cleanup(&r);
    assert_true(kt_daemon_cli(W.on, &r, (const char *const[]){"serve", "-t", NULL}));
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(r.err != NULL ? r.err : "", "");
    kt_cli_result_cleanup(&r);
    assert_true(kt_daemon_start(W.wide));
    assert_true(kt_daemon_wait_log(W.wide, WIDE_WARNING, 1, 10000));
    assert_int_equal(kt_daemon_stop(W.wide), 0);
    assert_int_equal(kt_daemon_log_count(W.on, "signup_role holds"), 0);
}

static void
test_bad_input_is_a_400_naming_the_field(void **state)
{
    static const struct {
        const char *ip, *body, *field;
    } cases[] = {
        {"127.0.2.1", "{\"email\": \"not-an-address\", \"password\": \"SecurePass123!\"}", "email"},
        {"127.0.2.2", "{\"email\": \"a@@b.com\", \"password\": \"SecurePass123!\"}", "email"},
        {"127.0.2.3", "{\"password\": \"SecurePass123!\"}", "email"},
        {"127.0.2.4", "{\"email\": 7, \"password\": \"SecurePass123!\"}", "email"},
        {"127.0.2.5", "{\"email\": \"w1@acme.com\", \"password\": \"short1\"}", "password"},
        {"127.0.2.6", "{\"email\": \"w2@acme.com\", \"password\": \"elevenchars\"}", "password"},
        {"127.0.2.7", "{\"email\": \"w3@acme.com\", \"password\": 123456789012}", "password"},
        {"127.0.2.8", "{\"email\": \"w4@acme.com\"}", "password"},
        {"127.0.2.9",
         "{\"email\": \"w5@acme.com\", \"password\": \"SecurePass123!\", \"admin\": "
         "true}",
         "admin"},
        {"127.0.2.10", "{\"email\": ", "Malformed JSON body"},
    };
    struct answer a;

    (void)state;
    secret("short1");
    secret("onlylettershere");
    secret("1234567890123");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        signup_from(cases[i].ip, cases[i].body, &a);
        expect_detail(&a, 400, cases[i].field);
        answer_cleanup(&a);
    }
}

static void
test_an_address_already_registered_is_a_409(void **state)
{
    struct answer a;

    (void)state;
    secret("Another1Secret");
    signup_from("127.0.3.1", "{\"email\": \"twice@acme.com\", \"password\": \"Another1Secret\"}",
                &a);
    expect_status(&a, 201);
    secret(json_string_value(json_object_get(a.json, "api_key")));
    kt_daemon_remember_key(W.on, json_string_value(json_object_get(a.json, "api_key")));
    answer_cleanup(&a);
    signup_from("127.0.3.2", "{\"email\": \"TWICE@acme.com\", \"password\": \"Another1Secret\"}",
                &a);
    expect_detail(&a, 409, "email");
    assert_null(json_object_get(a.json, "api_key"));
    answer_cleanup(&a);
}

static void
test_a_non_json_body_is_415_and_a_huge_one_413(void **state)
{
    size_t len = 70 * 1024;
    char *big = malloc(len);
    const char *hdrs[2] = {"Content-Type: application/json", NULL};
    struct kt_http_req req = {.method = "POST", .headers = hdrs};
    struct kt_http_resp resp;
    struct answer a;

    (void)state;
    send_from("127.0.4.1", W.on, "POST", SIGNUP_PATH, "application/x-www-form-urlencoded",
              "email=a%40b.com&password=x", 26, &a);
    expect_detail(&a, 415, "application/json");
    answer_cleanup(&a);
    send_from("127.0.4.2", W.on, "POST", SIGNUP_PATH, NULL, "{}", 2, &a);
    expect_status(&a, 415);
    answer_cleanup(&a);
    assert_non_null(big);
    memset(big, ' ', len);
    big[0] = '{';
    big[len - 1] = '}';
    /* Through curl, which waits for 100-continue: the 413 comes before the
     * body is sent, so no reset can race the answer. (127.0.0.1 sends no
     * other signup to this daemon.) */
    req.url = kt_daemon_url(W.on, SIGNUP_PATH);
    req.body = big;
    req.body_len = len;
    assert_true(kt_http_do(&req, &resp));
    assert_int_equal(resp.status, 413);
    kt_http_resp_cleanup(&resp);
    free(big);
}

static void
test_the_sixth_request_in_a_minute_from_one_address_is_429_with_retry_after(void **state)
{
    struct answer a;
    char *retry;

    (void)state;
    /* Malformed bodies: every attempt counts, and these cost no hashing. */
    for (int i = 0; i < 5; i++) {
        signup_from("127.0.5.1", "{", &a);
        expect_status(&a, 400);
        answer_cleanup(&a);
    }
    signup_from("127.0.5.1", "{\"email\": \"late@acme.com\", \"password\": \"SecurePass123!\"}",
                &a);
    expect_status(&a, 429);
    assert_string_equal(a.body, "{\"detail\": \"Too many signup requests.\"}");
    retry = header(&a, "Retry-After");
    assert_non_null(retry);
    assert_true(atoi(retry) >= 1 && atoi(retry) <= 60);
    free(retry);
    answer_cleanup(&a);
    /* Another address is not affected. */
    signup_from("127.0.5.2", "{", &a);
    expect_status(&a, 400);
    answer_cleanup(&a);
}

static void
test_other_methods_on_the_signup_path_need_a_key(void **state)
{
    struct answer a;

    (void)state;
    send_from("127.0.6.1", W.on, "GET", SIGNUP_PATH, NULL, "", 0, &a);
    expect_status(&a, 401);
    assert_string_equal(a.body, NO_CREDENTIAL);
    answer_cleanup(&a);
}

static void
test_signups_are_audited(void **state)
{
    struct kt_cli_result res;

    (void)state;
    assert_true(kt_daemon_cli(W.on, &res, (const char *const[]){"audit", "--json", NULL}));
    assert_int_equal(res.exit_code, 0);
    assert_non_null(strstr(res.out, "signup"));
    assert_non_null(strstr(res.out, "dev@acme.com"));
    for (size_t i = 0; i < W.nsecrets; i++) {
        if (strstr(res.out, W.secrets[i]) != NULL)
            fail_msg("a password or key is in the audit trail");
    }
    kt_cli_result_cleanup(&res);
    assert_true(kt_daemon_cli(W.on, &res, (const char *const[]){"audit", "verify", NULL}));
    assert_int_equal(res.exit_code, 0);
    kt_cli_result_cleanup(&res);
}

static void
test_the_daemons_stop_cleanly_and_never_log_a_password_or_key(void **state)
{
    char *log;

    (void)state;
    /* Exit 0 also means no sanitizer report in the sanitizer build. */
    assert_int_equal(kt_daemon_stop(W.off), 0);
    assert_int_equal(kt_daemon_stop(W.on), 0);
    log = kt_daemon_log(W.on);
    assert_non_null(log);
    assert_true(W.nsecrets >= 6);
    for (size_t i = 0; i < W.nsecrets; i++) {
        if (strstr(log, W.secrets[i]) != NULL)
            fail_msg("secret %zu (a password or key) is in the daemon log", i);
    }
    free(log);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signup_is_off_by_default_and_its_path_is_an_ordinary_one),
        cmocka_unit_test(test_a_signup_answers_201_with_the_user_and_a_key_that_works_at_once),
        cmocka_unit_test(test_a_signup_key_gets_403_on_every_route_that_requires_a_scope),
        cmocka_unit_test(test_signup_with_a_wildcard_role_is_warned_about),
        cmocka_unit_test(test_bad_input_is_a_400_naming_the_field),
        cmocka_unit_test(test_an_address_already_registered_is_a_409),
        cmocka_unit_test(test_a_non_json_body_is_415_and_a_huge_one_413),
        cmocka_unit_test(
            test_the_sixth_request_in_a_minute_from_one_address_is_429_with_retry_after),
        cmocka_unit_test(test_other_methods_on_the_signup_path_need_a_key),
        cmocka_unit_test(test_signups_are_audited),
        cmocka_unit_test(test_the_daemons_stop_cleanly_and_never_log_a_password_or_key),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
