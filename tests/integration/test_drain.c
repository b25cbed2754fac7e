/* tests/integration/test_drain.c - stopping under load (CTest
 * integration_test_drain): SIGTERM while keep-alive clients keep sending
 * must end in a clean exit 0, never an abort, and every answer given during
 * the drain is either the upstream's or keygate's 503 JSON. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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
    long ok, unavailable, other, failed;
};

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
    h = curl_slist_append(h, auth);
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    while (!stop_clients && kt_mono_ms() < end) {
        long status = 0;

        if (curl_easy_perform(e) != CURLE_OK) {
            c->failed++; /* refused once the listener is gone: expected */
            kt_sleep_ms(5);
            continue;
        }
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200)
            c->ok++;
        else if (status == 503)
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
    long ok = 0, other = 0;
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
    }
    if (status != 0)
        fail_msg("keygate should exit 0 after SIGTERM under load, got %d; log:\n%s", status,
                 kt_daemon_log(d));
    assert_true(ok > 0);
    if (other != 0)
        fail_msg("every answer should be 200 or 503 during the drain, %ld were not", other);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_under_keepalive_load_exits_cleanly),
    };

    kt_http_global_init();
    {
        int rc = cmocka_run_group_tests(tests, NULL, NULL);

        kt_http_global_cleanup();
        return rc;
    }
}
