/* tests/integration/test_accesslog.c - access_log on a real daemon in front
 * of a stub upstream.
 *
 * Every request a test sends carries its own X-Request-Id, and the test
 * finds its line by that id: each field of an allowed request, a 401, a
 * 403, a 429, a 502 (on a second daemon logging to stdout), a 400 from
 * request hygiene and /health; the query string never in the path; a bad
 * X-Request-Id replaced by a generated one, the same in the log, upstream
 * and the response. SIGUSR1 after a rename starts a new file and leaves the
 * old one whole; lines reach the file within 2 s while traffic goes on
 * (the writer writes every 200 ms); SIGTERM loses no line. The helpers
 * check every log here for the keys the tests made (tests/helpers/daemon.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define LINE_DEADLINE_MS 10000L

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;  /* access_log DIR/access.log */
    struct kt_daemon *bad; /* upstream on a closed port, access_log stdout */
    struct kt_key items;   /* read:items */
    struct kt_key lim;     /* read:items, 1/min burst 1 */
    struct kt_key k502;    /* bad's */
    char log_path[512];
};

static struct world W;

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.gw);
    kt_daemon_free(W.bad);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.items);
    kt_key_cleanup(&W.lim);
    kt_key_cleanup(&W.k502);
    kt_http_global_cleanup();
    return 0;
}

/* A daemon with the extra config and an access log in its own directory. */
static struct kt_daemon *
daemon_with_log(const char *extra, char *log_path, size_t cap)
{
    struct kt_daemon *d = kt_daemon_new(NULL);
    char cfg[2048];

    if (d == NULL)
        return NULL;
    snprintf(log_path, cap, "%s/access.log", kt_daemon_dir(d));
    snprintf(cfg, sizeof(cfg), "access_log \"%s\"\n%s\n", log_path, extra);
    /* Kept by the helper, so a retry on new ports keeps the access log. */
    if (!kt_daemon_add_config(d, cfg)) {
        kt_daemon_free(d);
        return NULL;
    }
    return d;
}

static int
setup_world(void **state)
{
    char cfg[1024];
    const char *lim_args[] = {"keys",   "create", "--name",  "lim", "--scopes", "read:items",
                              "--rate", "1/min",  "--burst", "1",   "--json",   NULL};

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\nroute * /v1/items* read:items\n"
             "route * /v1/orders* read:orders\n",
             kt_upstream_url(W.up));
    W.gw = daemon_with_log(cfg, W.log_path, sizeof(W.log_path));
    if (W.gw == NULL)
        return -1;
    if (!kt_daemon_create_key(W.gw, "items", "read:items", NULL, &W.items) ||
        !kt_daemon_key_cli(W.gw, lim_args, &W.lim) || !kt_daemon_start(W.gw))
        return -1;
    snprintf(cfg, sizeof(cfg),
             "upstream http://127.0.0.1:%d\nupstream_connect_timeout 2s\naccess_log stdout\n",
             kt_daemon_free_port());
    W.bad = kt_daemon_new(cfg);
    if (W.bad == NULL || !kt_daemon_create_key(W.bad, "k502", NULL, NULL, &W.k502) ||
        !kt_daemon_start(W.bad))
        return -1;
    return 0;
}

/* ---- finding lines ---- */

static char *
read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf != NULL) {
        n = (long)fread(buf, 1, (size_t)n, f);
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

/* The JSON line in text whose request_id is id; NULL when none. Every line
 * starting with '{' must parse as one JSON object. */
static json_t *
line_in(const char *text, const char *id, size_t *count)
{
    json_t *found = NULL;

    *count = 0;
    for (const char *p = text; p != NULL && *p != '\0';) {
        const char *end = strchr(p, '\n');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);

        if (end == NULL)
            break; /* a line not finished yet */
        if (len > 0 && p[0] == '{') {
            json_error_t jerr;
            json_t *o = json_loadb(p, len, 0, &jerr);

            if (o == NULL)
                fail_msg("not a JSON line: %.*s (%s)", (int)len, p, jerr.text);
            if (json_is_string(json_object_get(o, "request_id")) &&
                strcmp(json_string_value(json_object_get(o, "request_id")), id) == 0) {
                (*count)++;
                if (found == NULL)
                    found = json_incref(o);
            }
            json_decref(o);
        }
        p = end + 1;
    }
    return found;
}

/* Waits (bounded) for the line of request id in the file at path, or in the
 * daemon's own log when path is NULL. */
static json_t *
wait_line(const char *path, struct kt_daemon *d, const char *id, long deadline_ms)
{
    int64_t deadline = kt_mono_ms() + deadline_ms;

    for (;;) {
        char *text = path != NULL ? read_all(path) : kt_daemon_log(d);
        size_t count = 0;
        json_t *o = text != NULL ? line_in(text, id, &count) : NULL;

        free(text);
        if (o != NULL) {
            if (count != 1) {
                json_decref(o);
                fail_msg("request %s has %zu lines", id, count);
            }
            return o;
        }
        if (kt_mono_ms() >= deadline)
            return NULL;
        kt_sleep_ms(20);
    }
}

static bool
file_has_id(const char *path, const char *id)
{
    char *text = read_all(path);
    size_t count = 0;
    json_t *o = text != NULL ? line_in(text, id, &count) : NULL;

    free(text);
    json_decref(o);
    return o != NULL;
}

/* GET url with X-Request-Id rid and, when key is not NULL, the key. */
static void
get(const char *url, const char *key, const char *rid, struct kt_http_resp *r)
{
    char rh[256];
    const char *hdrs[] = {rh, NULL};

    snprintf(rh, sizeof(rh), "X-Request-Id: %s", rid);
    assert_true(kt_http_get_key(url, key, hdrs, r));
}

static const char *
sfield(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);

    if (!json_is_string(v))
        fail_msg("field %s is not a string", name);
    return json_string_value(v);
}

static long long
ifield(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);

    if (!json_is_integer(v))
        fail_msg("field %s is not an integer", name);
    return (long long)json_integer_value(v);
}

static void
assert_null_field(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);

    if (v == NULL || !json_is_null(v))
        fail_msg("field %s is not null", name);
}

static void
assert_time_ok(json_t *o)
{
    const char *t = sfield(o, "time");
    int y, mo, da, h, mi, s, ms;
    char z = 0, tail = 0;

    assert_int_equal(strlen(t), 24);
    assert_int_equal(
        sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c%c", &y, &mo, &da, &h, &mi, &s, &ms, &z, &tail), 8);
    assert_int_equal(z, 'Z');
    {
        struct tm tm = {.tm_year = y - 1900,
                        .tm_mon = mo - 1,
                        .tm_mday = da,
                        .tm_hour = h,
                        .tm_min = mi,
                        .tm_sec = s};
        long long skew = (long long)timegm(&tm) - (long long)time(NULL);

        /* The wall clock of the request's end, not of some other moment. */
        if (skew < -120 || skew > 5)
            fail_msg("time %s is %lld s away from now", t, skew);
    }
}

/* Every field the issue names is there, and nothing else. */
static void
assert_shape(json_t *o)
{
    static const char *const names[] = {"time",   "request_id",      "remote",      "method",
                                        "path",   "status",          "outcome",     "key_id",
                                        "tenant", "upstream_status", "duration_us", "bytes_sent"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (json_object_get(o, names[i]) == NULL)
            fail_msg("field %s is missing", names[i]);
    assert_int_equal(json_object_size(o), sizeof(names) / sizeof(names[0]));
    assert_time_ok(o);
    assert_string_equal(sfield(o, "remote"), "127.0.0.1");
    assert_true(ifield(o, "duration_us") >= 0);
}

/* ---- the tests ---- */

static void
test_an_allowed_request_logs_every_field_and_no_query_string(void **state)
{
    struct kt_http_resp r;
    struct kt_echo e;
    char buf[256];
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.gw, "/v1/items/42?token=hunter2&x=1"), W.items.key, "it-allowed-1", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(kt_http_header_buf(&r, "X-Request-Id", buf, sizeof(buf)), "it-allowed-1");
    assert_true(kt_echo_parse(r.body, r.body_len, &e));
    assert_string_equal(kt_echo_header(&e, "X-Request-Id"), "it-allowed-1");
    kt_echo_cleanup(&e);
    o = wait_line(W.log_path, NULL, "it-allowed-1", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_shape(o);
    assert_string_equal(sfield(o, "method"), "GET");
    assert_string_equal(sfield(o, "path"), "/v1/items/42");
    assert_int_equal(ifield(o, "status"), 200);
    assert_string_equal(sfield(o, "outcome"), "allowed");
    assert_string_equal(sfield(o, "key_id"), W.items.id);
    assert_true(strlen(sfield(o, "tenant")) > 0);
    assert_int_equal(ifield(o, "upstream_status"), 200);
    assert_int_equal(ifield(o, "bytes_sent"), (long long)r.body_len);
    json_decref(o);
    kt_http_resp_cleanup(&r);
    {
        char *text = read_all(W.log_path);

        assert_non_null(text);
        assert_null(strstr(text, "hunter2"));
        assert_null(strstr(text, "token="));
        free(text);
    }
}

static void
test_a_401_logs_no_key_and_no_upstream_status(void **state)
{
    struct kt_http_resp r;
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.gw, "/v1/items"), NULL, "it-401", &r);
    assert_int_equal(r.status, 401);
    o = wait_line(W.log_path, NULL, "it-401", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_shape(o);
    assert_string_equal(sfield(o, "path"), "/v1/items");
    assert_int_equal(ifield(o, "status"), 401);
    assert_string_equal(sfield(o, "outcome"), "unauthenticated");
    assert_null_field(o, "key_id");
    assert_null_field(o, "tenant");
    assert_null_field(o, "upstream_status");
    assert_int_equal(ifield(o, "bytes_sent"), (long long)r.body_len);
    json_decref(o);
    kt_http_resp_cleanup(&r);
}

static void
test_a_403_logs_the_key_that_was_refused(void **state)
{
    struct kt_http_resp r;
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.gw, "/v1/orders"), W.items.key, "it-403", &r);
    assert_int_equal(r.status, 403);
    o = wait_line(W.log_path, NULL, "it-403", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_shape(o);
    assert_int_equal(ifield(o, "status"), 403);
    assert_string_equal(sfield(o, "outcome"), "forbidden");
    assert_string_equal(sfield(o, "key_id"), W.items.id);
    assert_true(strlen(sfield(o, "tenant")) > 0);
    assert_null_field(o, "upstream_status");
    assert_int_equal(ifield(o, "bytes_sent"), (long long)r.body_len);
    json_decref(o);
    kt_http_resp_cleanup(&r);
}

static void
test_a_429_logs_rate_limited(void **state)
{
    struct kt_http_resp r;
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.gw, "/v1/items"), W.lim.key, "it-429-first", &r);
    assert_int_equal(r.status, 200);
    kt_http_resp_cleanup(&r);
    get(kt_daemon_url(W.gw, "/v1/items"), W.lim.key, "it-429", &r);
    assert_int_equal(r.status, 429);
    o = wait_line(W.log_path, NULL, "it-429", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_shape(o);
    assert_int_equal(ifield(o, "status"), 429);
    assert_string_equal(sfield(o, "outcome"), "rate_limited");
    assert_string_equal(sfield(o, "key_id"), W.lim.id);
    assert_null_field(o, "upstream_status");
    json_decref(o);
    kt_http_resp_cleanup(&r);
}

static void
test_a_502_logs_upstream_error_to_stdout(void **state)
{
    struct kt_http_resp r;
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.bad, "/anything?q=1"), W.k502.key, "it-502", &r);
    assert_int_equal(r.status, 502);
    o = wait_line(NULL, W.bad, "it-502", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_shape(o);
    assert_string_equal(sfield(o, "path"), "/anything");
    assert_int_equal(ifield(o, "status"), 502);
    assert_string_equal(sfield(o, "outcome"), "upstream_error");
    assert_string_equal(sfield(o, "key_id"), W.k502.id);
    assert_null_field(o, "upstream_status");
    json_decref(o);
    kt_http_resp_cleanup(&r);
}

static void
test_a_hygiene_400_is_logged_as_bad_request(void **state)
{
    static const char req[] = "GET /v1/items HTTP/1.1\r\nHost: x\r\nX-Request-Id: it-400\r\n"
                              "Content-Length: 1\r\nContent-Length: 2\r\n\r\n";
    struct kt_raw_result rr;
    json_t *o;

    (void)state;
    assert_true(kt_raw_exchange(kt_daemon_port(W.gw), req, sizeof(req) - 1, 1, 200, 10000, &rr));
    assert_non_null(strstr(rr.data, " 400 "));
    kt_raw_result_cleanup(&rr);
    o = wait_line(W.log_path, NULL, "it-400", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_shape(o);
    assert_int_equal(ifield(o, "status"), 400);
    assert_string_equal(sfield(o, "outcome"), "bad_request");
    assert_null_field(o, "key_id");
    json_decref(o);
}

static void
test_health_is_logged_without_an_outcome(void **state)
{
    struct kt_http_resp r;
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.gw, "/health"), W.items.key, "it-health", &r);
    assert_int_equal(r.status, 200);
    o = wait_line(W.log_path, NULL, "it-health", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_shape(o);
    assert_string_equal(sfield(o, "path"), "/health");
    assert_int_equal(ifield(o, "status"), 200);
    /* /health is not in keygate_requests_total, so it has no outcome. */
    assert_null_field(o, "outcome");
    assert_string_equal(sfield(o, "key_id"), W.items.id);
    json_decref(o);
    kt_http_resp_cleanup(&r);
}

static void
test_a_bad_request_id_is_replaced_by_one_id_everywhere(void **state)
{
    struct kt_http_resp r;
    struct kt_echo e;
    char id[256];
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.gw, "/v1/items/rid"), W.items.key, "bad id\"with<junk>", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(kt_http_header_buf(&r, "X-Request-Id", id, sizeof(id)));
    assert_string_not_equal(id, "bad id\"with<junk>");
    assert_true(strlen(id) > 0);
    assert_true(kt_echo_parse(r.body, r.body_len, &e));
    assert_string_equal(kt_echo_header(&e, "X-Request-Id"), id);
    kt_echo_cleanup(&e);
    o = wait_line(W.log_path, NULL, id, LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_string_equal(sfield(o, "path"), "/v1/items/rid");
    json_decref(o);
    kt_http_resp_cleanup(&r);
}

static void
test_an_odd_path_is_one_valid_json_line(void **state)
{
    static const char req[] = "GET /v1/items/a%22b\\c%00\xff\xfe HTTP/1.1\r\nHost: x\r\n"
                              "X-Request-Id: it-odd\r\nConnection: close\r\n\r\n";
    struct kt_raw_result rr;
    json_t *o;

    (void)state;
    assert_true(kt_raw_exchange(kt_daemon_port(W.gw), req, sizeof(req) - 1, 1, 200, 10000, &rr));
    kt_raw_result_cleanup(&rr);
    o = wait_line(W.log_path, NULL, "it-odd", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_non_null(strstr(sfield(o, "path"), "/v1/items/a%22b\\c%00"));
    json_decref(o);
}

static void
test_a_key_sent_in_the_url_or_as_request_id_is_masked_in_the_log(void **state)
{
    char path[256], hidden[16];
    struct kt_http_resp r;
    size_t klen = strlen(W.items.key);

    (void)state;
    /* keygate never reads a key from either place; a careless client still
     * must not get it into the log. The helpers grep access.log at the end. */
    snprintf(path, sizeof(path), "/v1/items/%s", W.items.key);
    get(kt_daemon_url(W.gw, path), W.items.key, W.items.key, &r);
    assert_int_equal(r.status, 200);
    kt_http_resp_cleanup(&r);
    snprintf(hidden, sizeof(hidden), "%.12s", W.items.key + klen - 20);
    {
        char *text;
        int64_t deadline = kt_mono_ms() + LINE_DEADLINE_MS;

        /* The line's request id is masked too: find it by its path's start. */
        for (;;) {
            text = read_all(W.log_path);
            if (text != NULL && strstr(text, "\"path\":\"/v1/items/") != NULL &&
                strstr(text, "*****") != NULL)
                break;
            free(text);
            text = NULL;
            if (kt_mono_ms() >= deadline)
                break;
            kt_sleep_ms(20);
        }
        assert_non_null(text);
        assert_null(strstr(text, hidden));
        free(text);
    }
}

/* No 12 characters in a row of key past its display prefix in the file. */
static void
assert_no_key_fragment(const char *path, const char *key)
{
    char *text = read_all(path);
    size_t klen = strlen(key), keep = klen - 51 + 4; /* prefix, 4 body characters */
    char w[13];

    assert_non_null(text);
    for (size_t j = keep; j + 12 <= klen; j++) {
        memcpy(w, key + j, 12);
        w[12] = '\0';
        if (strstr(text, w) != NULL)
            fail_msg("key fragment %s in %s", w, path);
    }
    free(text);
}

static void
test_a_key_as_method_or_with_more_glued_to_it_is_masked_in_the_log(void **state)
{
    char req[1024], path[256], id[160];
    struct kt_raw_result rr;
    struct kt_http_resp r;
    int n;
    json_t *o;

    (void)state;
    /* A "method" that is a key: a 400, logged with method null. */
    n = snprintf(req, sizeof(req),
                 "%s /v1/items HTTP/1.1\r\nHost: x\r\nX-Request-Id: it-key-method\r\n\r\n",
                 W.items.key);
    assert_true(kt_raw_exchange(kt_daemon_port(W.gw), req, (size_t)n, 1, 200, 10000, &rr));
    assert_non_null(strstr(rr.data, " 400 "));
    kt_raw_result_cleanup(&rr);
    o = wait_line(W.log_path, NULL, "it-key-method", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_null_field(o, "method");
    json_decref(o);

    /* Glued to more characters, in the path and in X-Request-Id. */
    snprintf(path, sizeof(path), "/v1/items/%s_old", W.items.key);
    snprintf(id, sizeof(id), "%s0", W.items.key);
    get(kt_daemon_url(W.gw, path), W.items.key, id, &r);
    assert_int_equal(r.status, 200);
    kt_http_resp_cleanup(&r);
    get(kt_daemon_url(W.gw, "/v1/items/after-glued"), W.items.key, "it-after-glued", &r);
    kt_http_resp_cleanup(&r);
    o = wait_line(W.log_path, NULL, "it-after-glued", LINE_DEADLINE_MS);
    assert_non_null(o);
    json_decref(o);
    assert_no_key_fragment(W.log_path, W.items.key);
}

static void
test_a_head_answered_by_keygate_logs_no_body_bytes(void **state)
{
    static const char req[] = "HEAD /v1/items HTTP/1.1\r\nHost: x\r\nX-Request-Id: it-head\r\n"
                              "Connection: close\r\n\r\n";
    struct kt_raw_result rr;
    json_t *o;

    (void)state;
    assert_true(kt_raw_exchange(kt_daemon_port(W.gw), req, sizeof(req) - 1, 0, 0, 3000, &rr));
    assert_non_null(strstr(rr.data, " 401 "));
    kt_raw_result_cleanup(&rr);
    o = wait_line(W.log_path, NULL, "it-head", LINE_DEADLINE_MS);
    assert_non_null(o);
    assert_string_equal(sfield(o, "method"), "HEAD");
    assert_int_equal(ifield(o, "status"), 401);
    assert_int_equal(ifield(o, "bytes_sent"), 0);
    json_decref(o);
}

struct pacer {
    struct kt_daemon *d;
    _Atomic bool stop;
};

static void *
pace(void *arg)
{
    struct pacer *p = arg;
    char url[128];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/items", kt_daemon_port(p->d));
    while (!atomic_load(&p->stop)) {
        struct kt_http_resp r;

        kt_http_get(url, NULL, &r);
        kt_http_resp_cleanup(&r);
        kt_sleep_ms(20);
    }
    return NULL;
}

static void
test_lines_reach_the_file_within_2_s_while_traffic_goes_on(void **state)
{
    struct pacer p = {.d = W.gw};
    struct kt_http_resp r;
    pthread_t t;
    json_t *o;

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, pace, &p), 0);
    kt_sleep_ms(300);
    get(kt_daemon_url(W.gw, "/v1/items"), W.items.key, "it-flush", &r);
    kt_http_resp_cleanup(&r);
    o = wait_line(W.log_path, NULL, "it-flush", 2000);
    atomic_store(&p.stop, true);
    pthread_join(t, NULL);
    assert_non_null(o);
    json_decref(o);
}

static void
test_sigusr1_after_a_rename_starts_a_new_file(void **state)
{
    char old[600];
    struct kt_http_resp r;
    struct stat st;
    int64_t deadline;
    json_t *o;

    (void)state;
    get(kt_daemon_url(W.gw, "/v1/items"), W.items.key, "it-before-rotate", &r);
    kt_http_resp_cleanup(&r);
    o = wait_line(W.log_path, NULL, "it-before-rotate", LINE_DEADLINE_MS);
    assert_non_null(o);
    json_decref(o);
    snprintf(old, sizeof(old), "%s.1", W.log_path);
    assert_int_equal(rename(W.log_path, old), 0);
    /* Until the daemon reopens, lines go on into the renamed file. */
    get(kt_daemon_url(W.gw, "/v1/items"), W.items.key, "it-during-rotate", &r);
    kt_http_resp_cleanup(&r);
    assert_int_equal(kill(kt_daemon_pid(W.gw), SIGUSR1), 0);
    deadline = kt_mono_ms() + LINE_DEADLINE_MS;
    while (stat(W.log_path, &st) != 0 && kt_mono_ms() < deadline)
        kt_sleep_ms(10);
    assert_int_equal(stat(W.log_path, &st), 0);
    get(kt_daemon_url(W.gw, "/v1/items"), W.items.key, "it-after-rotate", &r);
    kt_http_resp_cleanup(&r);
    o = wait_line(W.log_path, NULL, "it-after-rotate", LINE_DEADLINE_MS);
    assert_non_null(o);
    json_decref(o);
    assert_false(file_has_id(old, "it-after-rotate"));
    /* The old file is whole: what it had stays, in one piece each. */
    assert_true(file_has_id(old, "it-before-rotate"));
    assert_true(file_has_id(old, "it-allowed-1"));
    assert_true(file_has_id(old, "it-during-rotate") !=
                file_has_id(W.log_path, "it-during-rotate"));
    assert_false(file_has_id(W.log_path, "it-before-rotate"));
    assert_true(kt_daemon_running(W.gw));
}

#define BURST 200

static void
test_sigterm_writes_every_line_before_exit(void **state)
{
    char path[512], cfg[256];
    struct kt_http_req reqs[BURST];
    struct kt_http_resp resps[BURST];
    char ids[BURST][32], hdr[BURST][48];
    const char *hdrs[BURST][2];
    struct kt_daemon *d;
    char *text;

    (void)state;
    snprintf(cfg, sizeof(cfg), "upstream %s\n", kt_upstream_url(W.up));
    d = daemon_with_log(cfg, path, sizeof(path));
    assert_non_null(d);
    assert_true(kt_daemon_start(d));
    memset(reqs, 0, sizeof(reqs));
    for (int i = 0; i < BURST; i++) {
        snprintf(ids[i], sizeof(ids[i]), "it-term-%d", i);
        snprintf(hdr[i], sizeof(hdr[i]), "X-Request-Id: it-term-%d", i);
        hdrs[i][0] = hdr[i];
        hdrs[i][1] = NULL;
        reqs[i].url = strdup(kt_daemon_url(d, "/x"));
        reqs[i].headers = hdrs[i];
    }
    assert_true(kt_http_do_many(reqs, resps, 50));
    assert_true(kt_http_do_many(reqs + 50, resps + 50, BURST - 50));
    /* At once: the lines may still be in the ring or the writer's buffer. */
    assert_int_equal(kt_daemon_stop(d), 0);
    text = read_all(path);
    assert_non_null(text);
    for (int i = 0; i < BURST; i++) {
        size_t count = 0;
        json_t *o = line_in(text, ids[i], &count);

        if (o == NULL || count != 1)
            fail_msg("%s: %zu lines after SIGTERM", ids[i], count);
        json_decref(o);
        kt_http_resp_cleanup(&resps[i]);
        free((char *)reqs[i].url);
    }
    free(text);
    kt_daemon_free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_allowed_request_logs_every_field_and_no_query_string),
        cmocka_unit_test(test_a_401_logs_no_key_and_no_upstream_status),
        cmocka_unit_test(test_a_403_logs_the_key_that_was_refused),
        cmocka_unit_test(test_a_429_logs_rate_limited),
        cmocka_unit_test(test_a_502_logs_upstream_error_to_stdout),
        cmocka_unit_test(test_a_hygiene_400_is_logged_as_bad_request),
        cmocka_unit_test(test_health_is_logged_without_an_outcome),
        cmocka_unit_test(test_a_bad_request_id_is_replaced_by_one_id_everywhere),
        cmocka_unit_test(test_an_odd_path_is_one_valid_json_line),
        cmocka_unit_test(test_a_key_sent_in_the_url_or_as_request_id_is_masked_in_the_log),
        cmocka_unit_test(test_a_key_as_method_or_with_more_glued_to_it_is_masked_in_the_log),
        cmocka_unit_test(test_a_head_answered_by_keygate_logs_no_body_bytes),
        cmocka_unit_test(test_lines_reach_the_file_within_2_s_while_traffic_goes_on),
        cmocka_unit_test(test_sigusr1_after_a_rename_starts_a_new_file),
        cmocka_unit_test(test_sigterm_writes_every_line_before_exit),
    };

    return cmocka_run_group_tests(tests, setup_world, teardown);
}
