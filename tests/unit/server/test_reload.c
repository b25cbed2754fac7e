/* tests/unit/server/test_reload.c - src/server/reload.c through keygate/reload.h:
 * which directives a reload keeps at their running values, and what it says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keygate/reload.h"
#include "unit/fixture.h"

#define MAX_LINES 32

struct said {
    char *lines[MAX_LINES];
    size_t n;
};

static void
collect(void *ctx, const char *line)
{
    struct said *s = ctx;

    if (s->n < MAX_LINES)
        s->lines[s->n++] = strdup(line);
}

static void
said_cleanup(struct said *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->lines[i]);
    s->n = 0;
}

static bool
said_line(const struct said *s, const char *want)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->lines[i], want) == 0)
            return true;
    }
    return false;
}

static void
test_per_request_directives_pass_through_untouched(void **state)
{
    struct kg_config *running = NULL, *next = NULL;
    struct said s = {0};
    size_t kept = 99;

    (void)state;
    assert_int_equal(kg_fx_load_config("upstream http://127.0.0.1:3000\n", &running), 0);
    assert_int_equal(kg_fx_load_config("upstream http://127.0.0.1:4000\n"
                                       "error_style error\n"
                                       "route GET /v1/* read\n"
                                       "log_level debug\n"
                                       "shutdown_timeout 2s\n",
                                       &next),
                     0);
    assert_int_equal(kg_reload_keep_startup_values(running, next, collect, &s, &kept), KG_OK);
    assert_int_equal(kept, 0);
    assert_int_equal(s.n, 0);
    assert_string_equal(next->upstream, "http://127.0.0.1:4000");
    assert_int_equal(next->error_style, KG_STYLE_ERROR);
    assert_int_equal(next->nroutes, 1);
    assert_int_equal(next->shutdown_timeout_ms, 2000);
    kg_config_free(running);
    kg_config_free(next);
}

static void
test_each_changed_startup_directive_is_named_and_keeps_its_running_value(void **state)
{
    struct kg_config *running = NULL, *next = NULL;
    struct said s = {0};
    size_t kept = 0;

    (void)state;
    assert_int_equal(kg_fx_load_config("listen 127.0.0.1:8080\n"
                                       "admin_listen 127.0.0.1:8081\n"
                                       "database /tmp/a.db\n"
                                       "workers 2\n"
                                       "client_timeout 60s\n"
                                       "signup off\n"
                                       "auth_throttle 20/min 60s\n",
                                       &running),
                     0);
    assert_int_equal(kg_fx_load_config("listen 127.0.0.1:9090\n"
                                       "admin_listen off\n"
                                       "database /tmp/b.db\n"
                                       "database_notify off\n"
                                       "workers 4\n"
                                       "client_timeout 90s\n"
                                       "signup on\n"
                                       "signup_tier trial\n"
                                       "auth_throttle off\n"
                                       "upstream http://127.0.0.1:4000\n",
                                       &next),
                     0);
    assert_int_equal(kg_reload_keep_startup_values(running, next, collect, &s, &kept), KG_OK);
    assert_int_equal(kept, 9);
    assert_int_equal(s.n, 9);
    assert_true(said_line(&s, "listen: changed to 127.0.0.1:9090; needs a restart, keeping "
                              "127.0.0.1:8080"));
    assert_true(said_line(&s, "admin_listen: changed to off; needs a restart, keeping "
                              "127.0.0.1:8081"));
    assert_true(
        said_line(&s, "database: changed to /tmp/b.db; needs a restart, keeping /tmp/a.db"));
    assert_true(said_line(&s, "database_notify: changed to off; needs a restart, keeping on"));
    assert_true(said_line(&s, "workers: changed to 4; needs a restart, keeping 2"));
    assert_true(said_line(&s, "client_timeout: changed to 90s; needs a restart, keeping 1m"));
    assert_true(said_line(&s, "signup: changed to on; needs a restart, keeping off"));
    assert_true(said_line(&s, "signup_tier: changed to trial; needs a restart, keeping default"));
    assert_true(said_line(&s, "auth_throttle: changed to off; needs a restart, keeping 20 per 1m, "
                              "cool-down 1m"));
    /* Never half-applied: the new config carries the running values... */
    assert_string_equal(next->listen, "127.0.0.1:8080");
    assert_string_equal(next->admin_listen, "127.0.0.1:8081");
    assert_string_equal(next->database, "/tmp/a.db");
    assert_true(next->database_notify);
    assert_int_equal(next->workers, 2);
    assert_int_equal(next->client_timeout_ms, 60000);
    assert_false(next->signup);
    assert_string_equal(next->signup_tier, "default");
    assert_int_equal(next->auth_throttle_count, running->auth_throttle_count);
    assert_int_equal(next->auth_throttle_window_ms, running->auth_throttle_window_ms);
    assert_int_equal(next->auth_throttle_cooldown_ms, running->auth_throttle_cooldown_ms);
    /* ...and everything else of its own. */
    assert_string_equal(next->upstream, "http://127.0.0.1:4000");
    said_cleanup(&s);
    /* A second pass finds nothing left to keep. */
    assert_int_equal(kg_reload_keep_startup_values(running, next, collect, &s, &kept), KG_OK);
    assert_int_equal(kept, 0);
    assert_int_equal(s.n, 0);
    kg_config_free(running);
    kg_config_free(next);
}

static void
test_no_report_callback_still_keeps_the_running_values(void **state)
{
    struct kg_config *running = NULL, *next = NULL;

    (void)state;
    assert_int_equal(kg_fx_load_config("max_header_bytes 16k\n", &running), 0);
    assert_int_equal(kg_fx_load_config("max_header_bytes 32k\n", &next), 0);
    assert_int_equal(kg_reload_keep_startup_values(running, next, NULL, NULL, NULL), KG_OK);
    assert_int_equal(next->max_header_bytes, 16384);
    kg_config_free(running);
    kg_config_free(next);
}

static void
test_tls_on_or_off_and_its_priorities_need_a_restart_but_new_files_do_not(void **state)
{
    struct kg_config *running = NULL, *next = NULL;
    char dir[KG_FX_DIR_MAX], text[512];
    struct said s = {0};
    size_t kept = 0;

    (void)state;
    assert_int_equal(kg_fx_mkdtemp(dir, "reload-tls"), 0);
    kg_fx_tls_pair(dir, "a", 1);
    kg_fx_tls_pair(dir, "b", 2);

    /* Off -> on: stays off. */
    snprintf(text, sizeof(text), "tls_certificate %s/a.crt\ntls_key %s/a.key\n", dir, dir);
    assert_int_equal(kg_fx_load_config("", &running), 0);
    assert_int_equal(kg_fx_load_config(text, &next), 0);
    assert_int_equal(kg_reload_keep_startup_values(running, next, collect, &s, &kept), KG_OK);
    assert_int_equal(kept, 1);
    assert_true(said_line(&s, "TLS (tls_certificate, tls_key): changed to on; needs a restart, "
                              "keeping off"));
    assert_null(next->tls_certificate);
    assert_null(next->tls_key);
    said_cleanup(&s);
    kg_config_free(next);

    /* On -> other files: applied (a renewal); on -> off and new priorities: kept. */
    kg_config_free(running);
    assert_int_equal(kg_fx_load_config(text, &running), 0);
    snprintf(text, sizeof(text), "tls_certificate %s/b.crt\ntls_key %s/b.key\n", dir, dir);
    assert_int_equal(kg_fx_load_config(text, &next), 0);
    assert_int_equal(kg_reload_keep_startup_values(running, next, collect, &s, &kept), KG_OK);
    assert_int_equal(kept, 0);
    assert_non_null(strstr(next->tls_certificate, "/b.crt"));
    kg_config_free(next);
    assert_int_equal(kg_fx_load_config("tls_priorities NORMAL\n", &next), 0);
    assert_int_equal(kg_reload_keep_startup_values(running, next, collect, &s, &kept), KG_OK);
    assert_int_equal(kept, 2);
    assert_true(said_line(&s, "TLS (tls_certificate, tls_key): changed to off; needs a restart, "
                              "keeping on"));
    assert_true(said_line(&s, "tls_priorities: changed to NORMAL; needs a restart, keeping "
                              "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"));
    assert_non_null(strstr(next->tls_certificate, "/a.crt"));
    assert_non_null(strstr(next->tls_key, "/a.key"));
    assert_string_equal(next->tls_priorities, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2");
    said_cleanup(&s);
    kg_config_free(next);
    kg_config_free(running);
    kg_fx_rmtree(dir);
}

static void
test_where_limits_live_needs_a_restart_and_their_error_policy_does_not(void **state)
{
    struct kg_config *running = NULL, *next = NULL;
    struct said s = {0};
    size_t kept = 0;

    (void)state;
    assert_int_equal(kg_fx_load_config("limits local\n", &running), 0);
    assert_int_equal(kg_fx_load_config("limits redis://127.0.0.1:6379/0\nlimits_lease 0\n"
                                       "limits_timeout 50ms\nlimits_on_error open\n",
                                       &next),
                     0);
    assert_int_equal(kg_reload_keep_startup_values(running, next, collect, &s, &kept), KG_OK);
    assert_int_equal(kept, 3);
    assert_true(said_line(&s, "limits: changed to redis://127.0.0.1:6379/0; needs a restart, "
                              "keeping local"));
    assert_true(said_line(&s, "limits_timeout: changed to 50ms; needs a restart, keeping 20ms"));
    assert_string_equal(next->limits, "local");
    assert_int_equal(next->limits_lease_ms, 10);
    assert_int_equal(next->limits_timeout_ms, 20);
    /* Read per request: takes effect at once. */
    assert_int_equal(next->limits_on_error, KG_LIMITS_OPEN);
    said_cleanup(&s);
    kg_config_free(running);
    kg_config_free(next);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_request_directives_pass_through_untouched),
        cmocka_unit_test(test_each_changed_startup_directive_is_named_and_keeps_its_running_value),
        cmocka_unit_test(test_where_limits_live_needs_a_restart_and_their_error_policy_does_not),
        cmocka_unit_test(test_no_report_callback_still_keeps_the_running_values),
        cmocka_unit_test(test_tls_on_or_off_and_its_priorities_need_a_restart_but_new_files_do_not),
    };

    kg_fx_clear_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
