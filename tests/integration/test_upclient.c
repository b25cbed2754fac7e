/* integration/test_upclient.c - CTest: integration_test_upclient.
 *
 * Issue 13: the native upstream client (upstream_client native) against an
 * upstream of the tests' own that misbehaves on demand (helpers/rawup.h):
 *
 * - every malformed or ambiguous answer is a 502 with the bad-gateway JSON,
 *   and its connection is never reused: the next request gets a fresh one
 *   and a correct answer;
 * - framing: HEAD, 204 and 304 carry no body (the connection is reused
 *   right after), bytes after an answer, a close before Content-Length
 *   ends (the client connection is aborted, not answered twice), an answer
 *   before the request's body went, a chunked answer with trailers;
 * - the pool: bytes nobody asked for on an idle connection, the keep-alive
 *   close race (GET sent once more on a fresh connection, POST never), no
 *   cross-talk between two clients with different keys when the upstream
 *   sends a second, unrequested answer, upstream_keepalive_requests;
 * - request writing: the strict parser upstream sees exactly what libcurl
 *   (upstream_client curl, a second daemon) sends for the same request:
 *   Content-Length, chunked and empty bodies; a client that gives up
 *   mid-body gets its upstream connection closed.
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
#include "helpers/rawup.h"

#define BAD_GATEWAY "{\"detail\": \"Upstream is unavailable.\"}"

static struct {
    struct kt_rawup *up;
    struct kt_daemon *gw;   /* upstream_client native, one loop */
    struct kt_daemon *curl; /* upstream_client curl, the same upstream */
    struct kt_key a, b, ca; /* a, b on gw; ca on curl */
} W;

/* Freed by each test's teardown: an assertion may leave them set. */
static struct kt_http_resp R, R2;
static struct kt_rawup_seen S, S2;
static struct kt_raw_result RAW;
static char *BUF;

static int
free_slots(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    kt_http_resp_cleanup(&R2);
    kt_rawup_seen_cleanup(&S);
    kt_rawup_seen_cleanup(&S2);
    kt_raw_result_cleanup(&RAW);
    free(BUF);
    BUF = NULL;
    kt_rawup_reset(W.up);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.gw);
    kt_daemon_free(W.curl);
    kt_rawup_stop(W.up);
    kt_key_cleanup(&W.a);
    kt_key_cleanup(&W.b);
    kt_key_cleanup(&W.ca);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

static int
setup(void **state)
{
    char cfg[512];

    kt_http_global_init();
    W.up = kt_rawup_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\nupstream_client native\nworkers 1\nupstream_timeout 5s\n"
             "max_header_bytes 4k\n",
             kt_rawup_url(W.up));
    W.gw = kt_daemon_new(cfg);
    if (W.gw == NULL || !kt_daemon_create_key(W.gw, "a", NULL, NULL, &W.a) ||
        !kt_daemon_create_key(W.gw, "b", NULL, NULL, &W.b) || !kt_daemon_start(W.gw))
        goto fail;
    snprintf(cfg, sizeof(cfg), "upstream %s\nupstream_client curl\nworkers 1\n",
             kt_rawup_url(W.up));
    W.curl = kt_daemon_new(cfg);
    if (W.curl == NULL || !kt_daemon_create_key(W.curl, "a", NULL, NULL, &W.ca) ||
        !kt_daemon_start(W.curl))
        goto fail;
    return 0;
fail:
    teardown(state);
    return -1;
}

/* The connection number in a default answer's body ("conn=C ..."), 0 if none. */
static size_t
conn_of(const struct kt_http_resp *r)
{
    size_t c = 0;

    if (r->body == NULL || sscanf(r->body, "conn=%zu", &c) != 1)
        return 0;
    return c;
}

/* GET path with key through gw; the answer must be the upstream's default
 * one, for this key; returns the connection that carried it. */
static size_t
get_ok(const char *path, const struct kt_key *key)
{
    char want[256];
    size_t c;

    kt_http_resp_cleanup(&R);
    assert_true(kt_http_get_key(kt_daemon_url(W.gw, path), key->key, NULL, &R));
    if (R.status != 200)
        fail_msg("GET %s: status %ld, body %s", path, R.status, R.body != NULL ? R.body : "");
    snprintf(want, sizeof(want), "key=%s target=%s", key->id, path);
    if (strstr(R.body, want) == NULL)
        fail_msg("GET %s: answer %s is not this request's (%s)", path, R.body, want);
    c = conn_of(&R);
    assert_true(c > 0);
    return c;
}

/* The connection of the last request the upstream saw. */
static size_t
last_conn(void)
{
    size_t n = kt_rawup_requests(W.up), c;

    assert_true(n > 0);
    kt_rawup_seen_cleanup(&S);
    assert_true(kt_rawup_request(W.up, n - 1, &S));
    c = S.conn;
    kt_rawup_seen_cleanup(&S);
    return c;
}

/* ---- malformed answers ---- */

struct bad {
    const char *name;
    const char *bytes;
};

static const struct bad bads[] = {
    {"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"},
    {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
    {"bare LF in a header", "HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 2\r\n\r\nok"},
    {"CR LF CR X end of head", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\rXok"},
    {"control byte in a value", "HTTP/1.1 200 OK\r\nX-A: a\x01z\r\nContent-Length: 2\r\n\r\nok"},
    {"space before a colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
    {"Content-Length and Transfer-Encoding",
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: "
     "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
    {"two equal Content-Length",
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
    {"signed Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"},
    {"overflowing Content-Length",
     "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nok"},
    {"Content-Length list", "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"},
    {"gzip, chunked",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
    {"identity coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok"},
    {"bad chunk size",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"},
    {"negative chunk size",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nok\r\n0\r\n\r\n"},
    {"huge chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "fffffffffffffffffffff\r\nok\r\n0\r\n\r\n"},
    {"bad chunk extension",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"x\x01\"\r\nok\r\n0\r\n\r\n"},
    {"chunk data without CRLF",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n"},
    {"101 Switching Protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"},
    {"bad status line", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"},
    {"not HTTP", "ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"},
    {"NUL in the head", "HTTP/1.1 200 OK\r\nX-A: \0\r\nContent-Length: 2\r\n\r\nok"},
};

static void
test_each_malformed_answer_is_502_and_its_connection_is_never_reused(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        struct kt_rawup_act act = {.bytes = bads[i].bytes};
        size_t bad_conn, next;

        /* NUL in a string literal: its length is the literal's. */
        if (strcmp(bads[i].name, "NUL in the head") == 0)
            act.len = sizeof("HTTP/1.1 200 OK\r\nX-A: \0\r\nContent-Length: 2\r\n\r\nok") - 1;
        get_ok("/v1/warm", &W.a); /* a pooled connection to be reused */
        kt_rawup_push(W.up, &act);
        kt_http_resp_cleanup(&R);
        assert_true(kt_http_get_key(kt_daemon_url(W.gw, "/v1/bad"), W.a.key, NULL, &R));
        if (R.status != 502 || strcmp(R.body, BAD_GATEWAY) != 0)
            fail_msg("%s: status %ld body %s, want 502 %s", bads[i].name, R.status, R.body,
                     BAD_GATEWAY);
        bad_conn = last_conn();
        next = get_ok("/v1/after", &W.a);
        if (next == bad_conn)
            fail_msg("%s: connection %zu carried another request after its bad answer",
                     bads[i].name, bad_conn);
    }
}

static void
test_a_head_over_max_header_bytes_is_502(void **state)
{
    struct kt_rawup_act act = {0};
    size_t cap = 16384, n;

    (void)state;
    BUF = malloc(cap);
    assert_non_null(BUF);
    n = (size_t)snprintf(BUF, cap, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(BUF + n, 'a', 8000);
    n += 8000;
    n += (size_t)snprintf(BUF + n, cap - n, "\r\nContent-Length: 2\r\n\r\nok");
    act.bytes = BUF;
    act.len = n;
    kt_rawup_push(W.up, &act);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_get_key(kt_daemon_url(W.gw, "/v1/big-head"), W.a.key, NULL, &R));
    assert_int_equal(R.status, 502);
    assert_string_equal(R.body, BAD_GATEWAY);
    get_ok("/v1/after", &W.a);
}

/* ---- framing ---- */

/* Sends raw request bytes for key through gw and reads to the close. */
static void
raw(const char *method, const char *path, const char *key, const char *extra)
{
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer %s\r\n"
                     "Connection: close\r\n%s\r\n",
                     method, path, key, extra != NULL ? extra : "");

    kt_raw_result_cleanup(&RAW);
    assert_true(kt_raw_exchange(kt_daemon_port(W.gw), req, (size_t)n, 0, 0, 10000, &RAW));
}

static size_t
count(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void
test_head_204_and_304_carry_no_body_and_the_connection_goes_on(void **state)
{
    static const char *const answers[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
    };
    static const char *const methods[] = {"HEAD", "GET", "GET"};
    static const char *const status[] = {"HTTP/1.1 200 ", "HTTP/1.1 204 ", "HTTP/1.1 304 "};

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        struct kt_rawup_act act = {.bytes = answers[i]};
        size_t warm = get_ok("/v1/warm", &W.a), used;

        kt_rawup_push(W.up, &act);
        raw(methods[i], "/v1/nobody", W.a.key, NULL);
        if (strncmp(RAW.data, status[i], strlen(status[i])) != 0)
            fail_msg("%s: got %s", status[i], RAW.data);
        assert_true(RAW.closed);
        used = last_conn();
        assert_int_equal(used, warm);
        /* Framed right, so the same connection carries the next request at once. */
        assert_int_equal(get_ok("/v1/next", &W.a), warm);
    }
}

static void
test_bytes_after_an_answer_never_reach_anyone(void **state)
{
    struct kt_rawup_act act = {.bytes = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                        "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"};
    size_t c;

    (void)state;
    get_ok("/v1/warm", &W.a);
    kt_rawup_push(W.up, &act);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_get_key(kt_daemon_url(W.gw, "/v1/extra"), W.a.key, NULL, &R));
    assert_int_equal(R.status, 200);
    assert_string_equal(R.body, "ok");
    c = last_conn();
    kt_http_resp_cleanup(&R2);
    assert_true(c != get_ok("/v1/next", &W.b));
}

static void
test_a_close_before_content_length_ends_aborts_the_client_once(void **state)
{
    struct kt_rawup_act act = {.bytes = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
                               .close_after = true};

    (void)state;
    kt_rawup_push(W.up, &act);
    raw("GET", "/v1/short", W.a.key, NULL);
    assert_true(RAW.closed);
    /* One status line (the upstream's), then the connection cut short: never a 502 after it. */
    assert_int_equal(count(RAW.data, "HTTP/1.1 "), 1);
    assert_non_null(strstr(RAW.data, "HTTP/1.1 200 "));
    assert_null(strstr(RAW.data, "Upstream is unavailable"));
    get_ok("/v1/after", &W.a);
}

static void
test_an_answer_before_the_body_went_is_final(void **state)
{
    struct kt_rawup_act act = {
        .how = KT_RAWUP_EARLY,
        .bytes =
            "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!"};
    struct kt_http_req req = {.method = "POST", .generate = true, .gen_len = 8 * 1024 * 1024};
    size_t c;

    (void)state;
    get_ok("/v1/warm", &W.a);
    req.url = kt_daemon_url(W.gw, "/v1/upload"); /* after get_ok: the daemon's URL buffer */
    kt_rawup_push(W.up, &act);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_do_key(&req, W.a.key, &R));
    assert_int_equal(R.status, 413);
    assert_string_equal(R.body, "big!");
    assert_true(kt_rawup_wait_requests(W.up, 2, 5000));
    c = last_conn();
    assert_true(get_ok("/v1/after", &W.a) != c);
}

static void
test_a_chunked_answer_with_trailers_arrives_whole(void **state)
{
    struct kt_rawup_act act = {.bytes =
                                   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"};
    size_t warm;

    (void)state;
    warm = get_ok("/v1/warm", &W.a);
    kt_rawup_push(W.up, &act);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_get_key(kt_daemon_url(W.gw, "/v1/chunked"), W.a.key, NULL, &R));
    assert_int_equal(R.status, 200);
    assert_string_equal(R.body, "hello world");
    assert_int_equal(get_ok("/v1/next", &W.a), warm);
}

/* ---- the pool ---- */

static void
test_bytes_on_an_idle_connection_close_it(void **state)
{
    struct kt_rawup_act act = {.later = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected",
                               .later_ms = 100};
    size_t first;

    (void)state;
    kt_rawup_push(W.up, &act);
    first = get_ok("/v1/one", &W.a);
    kt_sleep_ms(400);
    assert_true(get_ok("/v1/two", &W.b) != first);
}

static void
test_the_close_race_retries_a_get_once_on_a_fresh_connection(void **state)
{
    struct kt_rawup_act act = {.how = KT_RAWUP_CLOSE};
    size_t warm, n0;

    (void)state;
    warm = get_ok("/v1/warm", &W.a);
    n0 = kt_rawup_requests(W.up);
    kt_rawup_push(W.up, &act);
    assert_true(get_ok("/v1/raced", &W.a) != warm);
    /* Seen twice: on the closed connection, then on the fresh one. */
    assert_int_equal(kt_rawup_requests(W.up), n0 + 2);
    assert_true(kt_rawup_request(W.up, n0, &S));
    assert_true(kt_rawup_request(W.up, n0 + 1, &S2));
    assert_int_equal(S.conn, warm);
    assert_true(S2.conn != warm);
    assert_string_equal(S.head, S2.head);
}

static void
test_the_close_race_never_retries_a_post(void **state)
{
    struct kt_rawup_act act = {.how = KT_RAWUP_CLOSE};
    struct kt_http_req req = {.method = "POST", .body = "x=1", .body_len = 3};
    size_t n0;

    (void)state;
    get_ok("/v1/warm", &W.a);
    req.url = kt_daemon_url(W.gw, "/v1/pay");
    n0 = kt_rawup_requests(W.up);
    kt_rawup_push(W.up, &act);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_do_key(&req, W.a.key, &R));
    assert_int_equal(R.status, 502);
    assert_string_equal(R.body, BAD_GATEWAY);
    kt_sleep_ms(200);
    assert_int_equal(kt_rawup_requests(W.up), n0 + 1);
    get_ok("/v1/after", &W.a);
}

static void
test_an_unrequested_second_answer_never_reaches_another_client(void **state)
{
    char own[256];
    size_t sent = kt_rawup_later_sent(W.up);

    (void)state;
    for (int round = 0; round < 6; round++) {
        struct kt_rawup_act act = {0};
        size_t ca;

        /* Rounds alternate: the stray answer in the same write as the real
         * one, or a moment after (when the connection may be idle already). */
        if (round % 2 == 0) {
            snprintf(own, sizeof(own),
                     "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfor-a!"
                     "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected");
            act.bytes = own;
        } else {
            act.later = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected";
            act.later_ms = round == 1 ? 0 : 20;
        }
        kt_rawup_push(W.up, &act);
        kt_http_resp_cleanup(&R);
        assert_true(kt_http_get_key(kt_daemon_url(W.gw, "/v1/a"), W.a.key, NULL, &R));
        assert_int_equal(R.status, 200);
        if (round % 2 == 0)
            assert_string_equal(R.body, "for-a!");
        else
            assert_non_null(strstr(R.body, W.a.id));
        ca = last_conn();
        /* The stray answer is out before b asks: one that comes after b's
         * request went would be indistinguishable from b's own answer (in
         * HTTP/1.1 as in any client of it). */
        if (act.later != NULL) {
            int64_t end = kt_mono_ms() + 5000;

            while (kt_rawup_later_sent(W.up) < sent + 1 && kt_mono_ms() < end)
                kt_sleep_ms(1);
            assert_true(kt_rawup_later_sent(W.up) == sent + 1);
            sent++;
        }
        /* b's request: its own answer, never the stray one. */
        assert_true(get_ok("/v1/b", &W.b) != ca);
    }
}

static void
test_upstream_keepalive_requests_caps_a_connection(void **state)
{
    char cfg[256];
    struct kt_daemon *d;
    struct kt_key k = {0};
    size_t conns[5];

    (void)state;
    snprintf(cfg, sizeof(cfg), "upstream %s\nworkers 1\nupstream_keepalive_requests 2\n",
             kt_rawup_url(W.up));
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "k", NULL, NULL, &k));
    assert_true(kt_daemon_start(d));
    for (size_t i = 0; i < 5; i++) {
        kt_http_resp_cleanup(&R);
        assert_true(kt_http_get_key(kt_daemon_url(d, "/v1/k"), k.key, NULL, &R));
        assert_int_equal(R.status, 200);
        conns[i] = conn_of(&R);
    }
    kt_key_cleanup(&k);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
    assert_int_equal(conns[0], conns[1]);
    assert_true(conns[2] != conns[1]);
    assert_int_equal(conns[2], conns[3]);
    assert_true(conns[4] != conns[3]);
}

/* ---- request writing ---- */

/* Sends req through gw (native, key a) and through the curl daemon (its
 * key): the strict parser must accept both and see the same bytes but the
 * key headers, which name each daemon's own key. */
static void
same_request_both_ways(struct kt_http_req *req, const char *path, const char *want_line,
                       const char *want_body, size_t want_len)
{
    size_t n0 = kt_rawup_requests(W.up);
    char *p;

    req->url = kt_daemon_url(W.gw, path);
    kt_http_resp_cleanup(&R);
    assert_true(kt_http_do_key(req, W.a.key, &R));
    assert_int_equal(R.status, 200);
    req->url = kt_daemon_url(W.curl, path);
    kt_http_resp_cleanup(&R2);
    assert_true(kt_http_do_key(req, W.ca.key, &R2));
    assert_int_equal(R2.status, 200);
    kt_rawup_seen_cleanup(&S);
    kt_rawup_seen_cleanup(&S2);
    assert_true(kt_rawup_request(W.up, n0, &S));
    assert_true(kt_rawup_request(W.up, n0 + 1, &S2));
    if (!S.strict_ok || !S2.strict_ok)
        fail_msg("strict parser: native %s / curl %s", S.why, S2.why);
    assert_true(S.complete && S2.complete);
    assert_int_equal(strncmp(S.head, want_line, strlen(want_line)), 0);
    assert_int_equal(S.body_len, want_len);
    if (want_body != NULL)
        assert_memory_equal(S.body, want_body, want_len);
    assert_int_equal(S2.body_len, S.body_len);
    assert_memory_equal(S.body, S2.body, S.body_len);
    /* The same head but for the key and user ids. */
    while ((p = strstr(S2.head, W.ca.id)) != NULL)
        memcpy(p, W.a.id, strlen(W.a.id));
    {
        char *u1 = strstr(S.head, "X-Keygate-User-Id: "),
             *u2 = strstr(S2.head, "X-Keygate-User-Id: ");

        assert_non_null(u1);
        assert_non_null(u2);
        memset(u1, '-', strcspn(u1, "\r"));
        memset(u2, '-', strcspn(u2, "\r"));
    }
    if (strcmp(S.head, S2.head) != 0)
        fail_msg("native sent:\n%s\ncurl sent:\n%s", S.head, S2.head);
}

static void
test_the_upstream_sees_what_curl_would_send(void **state)
{
    static const char *const hdrs[] = {"Host: gateway.test", "X-Request-Id: fixed-request-id-1",
                                       "X-Custom: v", NULL};
    struct kt_http_req get = {.method = "GET", .headers = hdrs};
    struct kt_http_req cl = {.method = "POST", .headers = hdrs, .body = "hello", .body_len = 5};
    struct kt_http_req chunked = {
        .method = "PUT", .headers = hdrs, .body = "hello world", .body_len = 11, .chunked = true};
    struct kt_http_req empty = {.method = "POST", .headers = hdrs, .body = "", .body_len = 0};
    struct kt_http_req big = {
        .method = "PUT", .headers = hdrs, .generate = true, .gen_len = 3 * 1024 * 1024 + 17};
    struct kt_http_req bigc = {.method = "POST",
                               .headers = hdrs,
                               .generate = true,
                               .gen_len = 1024 * 1024 + 5,
                               .chunked = true};

    (void)state;
    same_request_both_ways(&get, "/v1/w?x=1&y=%41", "GET /v1/w?x=1&y=%41 HTTP/1.1\r\n", "", 0);
    same_request_both_ways(&cl, "/v1/cl", "POST /v1/cl HTTP/1.1\r\n", "hello", 5);
    same_request_both_ways(&chunked, "/v1/ch", "PUT /v1/ch HTTP/1.1\r\n", "hello world", 11);
    assert_true(S.chunked);
    same_request_both_ways(&empty, "/v1/empty", "POST /v1/empty HTTP/1.1\r\n", "", 0);
    assert_non_null(strstr(S.head, "\r\nContent-Length: 0\r\n"));
    same_request_both_ways(&big, "/v1/big", "PUT /v1/big HTTP/1.1\r\n", NULL, 3 * 1024 * 1024 + 17);
    same_request_both_ways(&bigc, "/v1/bigc", "POST /v1/bigc HTTP/1.1\r\n", NULL, 1024 * 1024 + 5);
    assert_true(S.chunked);
}

/* The path keygate normalised and the query as received reach the upstream
 * byte for byte on both clients: libcurl gets a pre-parsed CURLU with only
 * path and query set where that sends the same bytes (lowercase escapes),
 * the URL string where curl would lowercase an escape's hex (keygate/upurl.h). */
static void
test_path_and_query_arrive_byte_identical(void **state)
{
    static const char *const hdrs[] = {"Host: gateway.test", "X-Request-Id: fixed-request-id-2",
                                       NULL};
    struct kt_http_req get = {.method = "GET", .headers = hdrs};

    (void)state;
    same_request_both_ways(&get, "/v1/a+b;c=d,e/%20%25!$'()*@:?p=%2f&&q==r&s=+%41%zz&&",
                           "GET /v1/a+b;c=d,e/%20%25!$'()*@:?p=%2f&&q==r&s=+%41%zz&& HTTP/1.1\r\n",
                           "", 0);
    same_request_both_ways(&get, "/v1/x%3B+y;z=%2C?p=%2F&&q==r&u=%C3%A9&e=",
                           "GET /v1/x%3B+y;z=%2C?p=%2F&&q==r&u=%C3%A9&e= HTTP/1.1\r\n", "", 0);
    /* pathnorm's own form: unreserved escapes decoded, the others upper-case. */
    same_request_both_ways(&get, "/v1/%7e%3b;%41?p=%2F&&=&q=%2f",
                           "GET /v1/~%3B;A?p=%2F&&=&q=%2f HTTP/1.1\r\n", "", 0);
    same_request_both_ways(&get, "/v1/q?", "GET /v1/q? HTTP/1.1\r\n", "", 0);
}

static void
test_a_client_gone_mid_body_closes_its_upstream_connection(void **state)
{
    char req[1024];
    size_t n0 = kt_rawup_requests(W.up);
    int n;

    (void)state;
    n = snprintf(req, sizeof(req),
                 "POST /v1/cut HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer %s\r\n"
                 "Content-Length: 100000\r\n\r\n%0500d",
                 W.a.key, 0);
    /* Sends the head and 500 of 100000 bytes, then closes. */
    assert_true(kt_raw_exchange(kt_daemon_port(W.gw), req, (size_t)n, 0, 0, 300, &RAW));
    assert_true(kt_rawup_wait_requests(W.up, n0 + 1, 5000));
    assert_true(kt_rawup_request(W.up, n0, &S));
    assert_false(S.complete);
    assert_true(S.strict_ok);
    assert_true(S.body_len <= 500);
    get_ok("/v1/after", &W.a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_each_malformed_answer_is_502_and_its_connection_is_never_reused, free_slots),
        cmocka_unit_test_teardown(test_a_head_over_max_header_bytes_is_502, free_slots),
        cmocka_unit_test_teardown(test_head_204_and_304_carry_no_body_and_the_connection_goes_on,
                                  free_slots),
        cmocka_unit_test_teardown(test_bytes_after_an_answer_never_reach_anyone, free_slots),
        cmocka_unit_test_teardown(test_a_close_before_content_length_ends_aborts_the_client_once,
                                  free_slots),
        cmocka_unit_test_teardown(test_an_answer_before_the_body_went_is_final, free_slots),
        cmocka_unit_test_teardown(test_a_chunked_answer_with_trailers_arrives_whole, free_slots),
        cmocka_unit_test_teardown(test_bytes_on_an_idle_connection_close_it, free_slots),
        cmocka_unit_test_teardown(test_the_close_race_retries_a_get_once_on_a_fresh_connection,
                                  free_slots),
        cmocka_unit_test_teardown(test_the_close_race_never_retries_a_post, free_slots),
        cmocka_unit_test_teardown(test_an_unrequested_second_answer_never_reaches_another_client,
                                  free_slots),
        cmocka_unit_test_teardown(test_upstream_keepalive_requests_caps_a_connection, free_slots),
        cmocka_unit_test_teardown(test_the_upstream_sees_what_curl_would_send, free_slots),
        cmocka_unit_test_teardown(test_path_and_query_arrive_byte_identical, free_slots),
        cmocka_unit_test_teardown(test_a_client_gone_mid_body_closes_its_upstream_connection,
                                  free_slots),
    };

    return cmocka_run_group_tests_name("integration_test_upclient", tests, setup, teardown);
}
