/* tests/integration/test_drain.c - stopping (CTest integration_test_drain):
 * SIGTERM while keep-alive clients keep sending must end in a clean exit 0,
 * never an abort, no exchange may fail (a request that never went out, the
 * connection refused or reset once the listener closed, is no exchange), and every answer given
 * during the drain is either the upstream's or keygate's 503 JSON; a slow request in flight at
 * SIGTERM still gets its 200 while /readyz says 503; shutdown_timeout bounds the wait; a second
 * signal stops at once. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define CLIENTS 16
#define CAP_MS 15000 /* clients stop by themselves after this at the latest */

static _Atomic int stop_clients;

struct client {
    const char *url;
    const char *key;
    long ok, unavailable, other;
    long refused;     /* the request never went out: the listener is closed, expected at the end */
    long broken;      /* a request went out and got no whole answer */
    int first_broken; /* its CURLcode */
};

/* 200s seen by all clients so far: the drain starts only under real load. */
static _Atomic long seen_ok;

static size_t
discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* One keep-alive client: the same easy handle, so the same connection,
 * request after request until the daemon is gone (or CAP_MS). */
static void *
client_main(void *arg)
{
    struct client *c = arg;
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    char auth[256];
    int64_t end = kt_mono_ms() + CAP_MS;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->key);
    kt_http_note_sent(auth, strlen(auth)); /* for the leak check (helpers/http.h) */
    h = curl_slist_append(h, auth);
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    while (!stop_clients && kt_mono_ms() < end) {
        long status = 0;

        CURLcode rc = curl_easy_perform(e);

        long sent = 0;

        curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &sent);
        /* Once the listener is gone: refused, or (in the instant it closes)
         * reset before a byte of the request went out. Either way keygate
         * never got the request; expected. */
        if (rc == CURLE_COULDNT_CONNECT || (rc != CURLE_OK && sent == 0)) {
            c->refused++;
            kt_sleep_ms(5);
            continue;
        }
        if (rc != CURLE_OK) {
            /* Reset, cut or empty: a drain must answer what it accepted. */
            if (c->broken++ == 0)
                c->first_broken = (int)rc;

            kt_sleep_ms(5);
            continue;
        }
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200) {
            c->ok++;
            atomic_fetch_add(&seen_ok, 1);
        } else if (status == 503)
            c->unavailable++;
        else
            c->other++;
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return NULL;
}

static void
test_sigterm_under_keepalive_load_exits_cleanly(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct client clients[CLIENTS];
    pthread_t th[CLIENTS];
    struct kt_daemon *d;
    struct kt_key key = {0};
    char cfg[256];
    long ok = 0, other = 0, broken = 0;
    int first_broken = 0;
    int64_t t0;
    int status;

    (void)state;
    assert_non_null(up);
    snprintf(cfg, sizeof(cfg), "upstream %s\nworkers 2\n", kt_upstream_url(up));
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "drain", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = (struct client){.url = kt_daemon_url(d, "/v1/fast"), .key = key.key};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &clients[i]), 0);
    }
    kt_sleep_ms(800);
    for (int64_t deadline = kt_mono_ms() + 10000;
         atomic_load(&seen_ok) == 0 && kt_mono_ms() < deadline;)
        kt_sleep_ms(20);
    assert_true(atomic_load(&seen_ok) > 0);
    t0 = kt_mono_ms();
    status = kt_daemon_stop(d);
    /* Clients kept sending through the whole drain; a drain that waits for
     * them to stop would run into its 10 s deadline. */
    {
        int64_t took = kt_mono_ms() - t0;

        stop_clients = 1;
        if (took >= 5000)
            fail_msg("the drain should end once in-flight requests are answered, took %lld ms",
                     (long long)took);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        ok += clients[i].ok;
        other += clients[i].other;
        if (broken == 0)
            first_broken = clients[i].first_broken;
        broken += clients[i].broken;
    }
    if (status != 0)
        fail_msg("keygate should exit 0 after SIGTERM under load, got %d; log:\n%s", status,
                 kt_daemon_log(d));
    assert_true(ok > 0);
    if (other != 0)
        fail_msg("every answer should be 200 or 503 during the drain, %ld were not", other);
    if (broken != 0)
        fail_msg(
            "no exchange may fail during the drain; %ld did (the first with curl error %d: %s)",
            broken, first_broken, curl_easy_strerror((CURLcode)first_broken));
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* ---- one slow request in flight at SIGTERM ---- */

struct slow_get {
    char url[256];
    const char *key;
    long status;
    double seconds;
};

static void *
slow_main(void *arg)
{
    struct slow_get *s = arg;
    struct kt_http_req req = {.url = s->url, .timeout_ms = 20000};
    struct kt_http_resp resp;

    kt_http_do_key(&req, s->key, &resp);
    s->status = resp.status;
    s->seconds = resp.seconds;
    kt_http_resp_cleanup(&resp);
    return NULL;
}

/* A daemon (extra config text, may be NULL) with one request the upstream
 * holds for hold_ms in flight: returns once the upstream holds it. */
static struct kt_daemon *
start_with_slow_request(struct kt_upstream *up, const char *extra, long hold_ms, struct kt_key *key,
                        struct slow_get *slow, pthread_t *th)
{
    struct kt_daemon *d;
    char cfg[512];
    int64_t deadline;

    kt_upstream_set_slow_ms(up, hold_ms);
    snprintf(cfg, sizeof(cfg), "upstream %s\n%s", kt_upstream_url(up), extra != NULL ? extra : "");
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "slow", NULL, NULL, key));
    assert_true(kt_daemon_start(d));
    snprintf(slow->url, sizeof(slow->url), "%s", kt_daemon_url(d, "/slow/in-flight"));
    slow->key = key->key;
    assert_int_equal(pthread_create(th, NULL, slow_main, slow), 0);
    deadline = kt_mono_ms() + 10000;
    while (kt_upstream_held_slow(up) < 1 && kt_mono_ms() < deadline)
        kt_sleep_ms(10);
    assert_int_equal(kt_upstream_held_slow(up), 1);
    return d;
}

static long
readyz_status(struct kt_daemon *d)
{
    struct kt_http_req req = {.url = kt_daemon_admin_url(d, "/readyz"), .timeout_ms = 2000};
    struct kt_http_resp resp;
    long status;

    kt_http_do(&req, &resp);
    status = resp.status;
    kt_http_resp_cleanup(&resp);
    return status;
}

static void
test_a_slow_request_started_before_sigterm_completes_with_200(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_key key = {0};
    struct slow_get slow = {0};
    struct kt_daemon *d;
    pthread_t th;
    long ready = 0;
    int64_t deadline;
    int status;

    (void)state;
    assert_non_null(up);
    d = start_with_slow_request(up, NULL, 2000, &key, &slow, &th);
    assert_int_equal(kill(kt_daemon_pid(d), SIGTERM), 0);
    /* Draining: /readyz says so while the request is still held. */
    deadline = kt_mono_ms() + 5000;
    while ((ready = readyz_status(d)) != 503 && kt_mono_ms() < deadline)
        kt_sleep_ms(20);
    assert_int_equal(ready, 503);
    pthread_join(th, NULL);
    assert_int_equal(slow.status, 200);
    assert_true(slow.seconds >= 1.9);
    status = kt_daemon_wait(d, 20000);
    if (status != 0)
        fail_msg("keygate should exit 0 once the slow request is answered, got %d; log:\n%s",
                 status, kt_daemon_log(d));
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

static void
test_shutdown_timeout_bounds_the_wait_for_a_request_the_upstream_holds(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_key key = {0};
    struct slow_get slow = {0};
    struct kt_daemon *d;
    pthread_t th;
    int64_t t0, took;
    int status;

    (void)state;
    assert_non_null(up);
    d = start_with_slow_request(up, "shutdown_timeout 1s\n", 10000, &key, &slow, &th);
    t0 = kt_mono_ms();
    assert_int_equal(kill(kt_daemon_pid(d), SIGTERM), 0);
    status = kt_daemon_wait(d, 15000);
    took = kt_mono_ms() - t0;
    if (status != 0)
        fail_msg("keygate should exit 0 after shutdown_timeout, got %d; log:\n%s", status,
                 kt_daemon_log(d));
    if (took > 5000)
        fail_msg("shutdown_timeout 1s: keygate took %lld ms to exit", (long long)took);
    assert_true(kt_daemon_log_count(d, "shutdown_timeout reached with 1 request(s) in flight") > 0);
    pthread_join(th, NULL); /* answered (a 503) or cut, but not left hanging */
    assert_true(slow.seconds < 9.0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

static void
test_a_second_signal_during_the_drain_exits_at_once(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_key key = {0};
    struct slow_get slow = {0};
    struct kt_daemon *d;
    pthread_t th;
    int64_t t0, took;
    int status;

    (void)state;
    assert_non_null(up);
    /* The default shutdown_timeout (10 s) would outlast the upstream's hold. */
    d = start_with_slow_request(up, NULL, 10000, &key, &slow, &th);
    assert_int_equal(kill(kt_daemon_pid(d), SIGTERM), 0);
    assert_true(kt_daemon_wait_log(d, "draining", 1, 5000));
    t0 = kt_mono_ms();
    assert_int_equal(kill(kt_daemon_pid(d), SIGINT), 0);
    status = kt_daemon_wait(d, 15000);
    took = kt_mono_ms() - t0;
    if (status != 0)
        fail_msg("keygate should exit 0 after a second signal, got %d; log:\n%s", status,
                 kt_daemon_log(d));
    if (took > 3000)
        fail_msg("a second signal should stop keygate at once, it took %lld ms", (long long)took);
    assert_true(kt_daemon_log_count(d, "second signal") > 0);
    pthread_join(th, NULL);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_under_keepalive_load_exits_cleanly),
        cmocka_unit_test(test_a_slow_request_started_before_sigterm_completes_with_200),
        cmocka_unit_test(test_shutdown_timeout_bounds_the_wait_for_a_request_the_upstream_holds),
        cmocka_unit_test(test_a_second_signal_during_the_drain_exits_at_once),
    };

    kt_http_global_init();
    {
        int rc = cmocka_run_group_tests(tests, NULL, NULL);

        kt_http_global_cleanup();
        return rc;
    }
}
