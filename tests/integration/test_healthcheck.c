/* tests/integration/test_healthcheck.c - `keygate healthcheck` against the
 * real daemon (CTest integration_test_healthcheck): exit 0 while /readyz
 * answers 200, 1 with one line on stderr when the daemon is stopped, while
 * it drains, and when admin_listen is off; a wildcard admin_listen is asked
 * on loopback. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define WAIT_MS 15000 /* bounded waits: generous, since the suite also runs under ASan */

/* Runs `keygate healthcheck -c <d's config>` into r. */
static void
healthcheck(struct kt_daemon *d, struct kt_cli_result *r)
{
    static const char *const args[] = {"healthcheck", NULL};

    assert_true(kt_daemon_cli(d, r, args));
}

/* One line on stderr, starting "keygate: healthcheck: ", holding want. */
static void
assert_one_line(const struct kt_cli_result *r, const char *want)
{
    const char *nl = strchr(r->err, '\n');

    if (strncmp(r->err, "keygate: healthcheck: ", 22) != 0 || nl == NULL || nl[1] != '\0' ||
        strstr(r->err, want) == NULL)
        fail_msg("want one line \"keygate: healthcheck: …%s…\" on stderr, got \"%s\"", want,
                 r->err);
    assert_string_equal(r->out, "");
}

/* Replaces the config file of a daemon that is not started with text. */
static void
rewrite_config(struct kt_daemon *d, const char *text)
{
    FILE *f = fopen(kt_daemon_config_path(d), "w");

    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void
test_a_ready_daemon_is_healthy_and_a_stopped_one_is_not(void **state)
{
    struct kt_cli_result r = {0};
    struct kt_daemon *d = kt_daemon_new(NULL);

    (void)state;
    assert_non_null(d);
    assert_true(kt_daemon_start(d));
    healthcheck(d, &r);
    if (r.exit_code != 0)
        fail_msg("healthcheck of a ready daemon should exit 0, got %d: %s", r.exit_code, r.err);
    assert_string_equal(r.err, "");
    assert_string_equal(r.out, "");
    kt_cli_result_cleanup(&r);

    assert_int_equal(kt_daemon_stop(d), 0);
    healthcheck(d, &r);
    assert_int_equal(r.exit_code, 1);
    assert_one_line(&r, "/readyz");
    kt_cli_result_cleanup(&r);
    kt_daemon_free(d);
}

struct held {
    struct kt_daemon *d;
    const char *url;
    const char *key;
    long status;
};

/* A request that stays in flight until the stub upstream stops: it keeps
 * the daemon draining for as long as the test needs. */
static void *
held_request(void *arg)
{
    struct held *h = arg;
    struct kt_http_resp resp = {0};
    char auth[256];
    const char *headers[] = {auth, NULL};
    struct kt_http_req req = {.url = h->url, .headers = headers, .timeout_ms = 60000};

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", h->key);
    kt_http_do(&req, &resp);
    h->status = resp.status;
    kt_http_resp_cleanup(&resp);
    return NULL;
}

static long
readyz_status(struct kt_daemon *d)
{
    struct kt_http_resp resp = {0};
    long status;

    kt_http_get(kt_daemon_admin_url(d, "/readyz"), NULL, &resp);
    status = resp.status;
    kt_http_resp_cleanup(&resp);
    return status;
}

static void
test_a_draining_daemon_is_unhealthy(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_cli_result r = {0};
    struct kt_key key = {0};
    struct held h = {0};
    struct kt_daemon *d;
    char cfg[256], url[128];
    pthread_t th;
    int64_t end;

    (void)state;
    assert_non_null(up);
    snprintf(cfg, sizeof(cfg), "upstream %s\n", kt_upstream_url(up));
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "health", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    snprintf(url, sizeof(url), "%s", kt_daemon_url(d, "/hang"));
    h = (struct held){.d = d, .url = url, .key = key.key};
    assert_int_equal(pthread_create(&th, NULL, held_request, &h), 0);
    end = kt_mono_ms() + WAIT_MS;
    while (kt_upstream_held_hang(up) == 0 && kt_mono_ms() < end)
        kt_sleep_ms(10);
    assert_int_equal(kt_upstream_held_hang(up), 1);

    /* SIGTERM with a request in flight: the daemon drains (up to its 10 s
     * shutdown timeout) and /readyz says 503 all along. */
    assert_int_equal(kill(kt_daemon_pid(d), SIGTERM), 0);
    end = kt_mono_ms() + WAIT_MS;
    while (readyz_status(d) != 503 && kt_mono_ms() < end)
        kt_sleep_ms(10);
    assert_int_equal(readyz_status(d), 503);
    healthcheck(d, &r);
    assert_int_equal(r.exit_code, 1);
    assert_one_line(&r, "answered 503 (draining)");
    kt_cli_result_cleanup(&r);

    /* Releases the held request, so the drain ends by itself. */
    kt_upstream_stop(up);
    pthread_join(th, NULL);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
}

static void
test_admin_listen_off_is_unhealthy_with_a_clear_line(void **state)
{
    struct kt_cli_result r = {0};
    struct kt_daemon *d = kt_daemon_new(NULL);

    (void)state;
    assert_non_null(d);
    rewrite_config(d, "admin_listen off\n");
    healthcheck(d, &r);
    assert_int_equal(r.exit_code, 1);
    assert_one_line(&r, "admin_listen is off");
    kt_cli_result_cleanup(&r);
    kt_daemon_free(d);
}

static void
test_a_wildcard_admin_listen_is_asked_on_loopback(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_cli_result r = {0};
    struct kt_daemon *d = kt_daemon_new(NULL);
    char cfg[64];

    /* The stub answers 200 to anything and listens on 127.0.0.1 only, so
     * nothing here binds a wildcard address. */
    (void)state;
    assert_non_null(up);
    assert_non_null(d);
    snprintf(cfg, sizeof(cfg), "admin_listen 0.0.0.0:%d\n", kt_upstream_port(up));
    rewrite_config(d, cfg);
    healthcheck(d, &r);
    if (r.exit_code != 0)
        fail_msg("healthcheck should ask 127.0.0.1 for 0.0.0.0 and exit 0, got %d: %s", r.exit_code,
                 r.err);
    assert_int_equal(kt_upstream_count_prefix(up, "/readyz"), 1);
    kt_cli_result_cleanup(&r);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

static void
test_a_config_error_is_exit_1_not_2(void **state)
{
    struct kt_cli_result r = {0};
    struct kt_daemon *d = kt_daemon_new(NULL);

    /* Docker reserves exit 2 of a health command. */
    (void)state;
    assert_non_null(d);
    rewrite_config(d, "admin_listne 127.0.0.1:1\n");
    healthcheck(d, &r);
    assert_int_equal(r.exit_code, 1);
    assert_non_null(strstr(r.err, ":1: "));
    kt_cli_result_cleanup(&r);
    kt_daemon_free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_ready_daemon_is_healthy_and_a_stopped_one_is_not),
        cmocka_unit_test(test_a_draining_daemon_is_unhealthy),
        cmocka_unit_test(test_admin_listen_off_is_unhealthy_with_a_clear_line),
        cmocka_unit_test(test_a_wildcard_admin_listen_is_asked_on_loopback),
        cmocka_unit_test(test_a_config_error_is_exit_1_not_2),
    };

    kt_http_global_init();
    {
        int rc = cmocka_run_group_tests(tests, NULL, NULL);

        kt_http_global_cleanup();
        return rc;
    }
}
