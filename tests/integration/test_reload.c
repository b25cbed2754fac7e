/* tests/integration/test_reload.c - SIGHUP re-reads the config (CTest
 * integration_test_reload): new requests get the new routes, upstream,
 * error style and log settings while requests in flight finish under the
 * config they started with; a config with any problem is refused whole,
 * with file:line in the log; directives that need a restart are reported
 * and not applied. Real daemon, real stub upstreams, loopback only. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define WAIT_MS 10000 /* for a log line or an answer: generous, never reached when all is well */
#define CLIENTS 4
#define CAP_MS 15000 /* load clients stop by themselves after this at the latest */

/* ---- config files and the log ---- */

/* Rewrites the daemon's config file whole, in the layout tests/helpers/daemon.c
 * uses, with line 3 set to line3 (a comment when NULL) and the test's text
 * last. Written beside it and renamed, so the daemon never reads half a file. */
static void
write_conf(struct kt_daemon *d, int listen_port, const char *line3, const char *text)
{
    char tmp[512];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", kt_daemon_config_path(d));
    f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f,
            "# rewritten by tests/integration/test_reload.c\n"
            "listen 127.0.0.1:%d\n"
            "%s\n"
            "admin_listen 127.0.0.1:%d\n"
            "database \"%s/keygate.db\"\n"
            "secret_file \"%s/secret\"\n"
            "workers 2\n"
            "auth_throttle off\n"
            "%s\n",
            listen_port, line3 != NULL ? line3 : "# line 3", kt_daemon_admin_port(d),
            kt_daemon_dir(d), kt_daemon_dir(d), text);
    /* The *_curl variant keeps its client across the rewrite (helpers/daemon.c). */
    if (getenv("KEYGATE_TEST_UPSTREAM_CLIENT") != NULL && strstr(text, "upstream_client") == NULL)
        fprintf(f, "upstream_client %s\n", getenv("KEYGATE_TEST_UPSTREAM_CLIENT"));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, kt_daemon_config_path(d)), 0);
}

static void
must_see_log(struct kt_daemon *d, const char *needle, size_t n)
{
    if (!kt_daemon_wait_log(d, needle, n, WAIT_MS)) {
        char *log = kt_daemon_log(d);

        fail_msg("expected \"%s\" %zu time(s) in the daemon's log; log:\n%s", needle, n, log);
        free(log); /* not reached: fail_msg jumps */
    }
}

#define RELOADED "configuration reloaded from"

/* Rewrites the config with text and sends SIGHUP; returns when the daemon
 * says it reloaded (the publish comes before that line). */
static void
reload_with(struct kt_daemon *d, const char *text)
{
    size_t before = kt_daemon_log_count(d, RELOADED);

    write_conf(d, kt_daemon_port(d), NULL, text);
    assert_int_equal(kill(kt_daemon_pid(d), SIGHUP), 0);
    must_see_log(d, RELOADED, before + 1);
}

/* GET path with the key (NULL: none); returns the status, 0 when no answer. */
static long
get_status(struct kt_daemon *d, const char *path, const char *key, char **body)
{
    struct kt_http_resp resp;
    long status;

    kt_http_get_key(kt_daemon_url(d, path), key, NULL, &resp);
    status = resp.status;
    if (body != NULL)
        *body = resp.body != NULL ? strdup(resp.body) : NULL;
    kt_http_resp_cleanup(&resp);
    return status;
}

/* ---- (a) routes change under load, no request fails ---- */

/* Answers seen by all clients so far, for bounded waits. */
static _Atomic long seen_ok, seen_forbidden;

/* Waits (at most 10 s) until *counter is above 0. */
static void
wait_seen(_Atomic long *counter, const char *what)
{
    int64_t deadline = kt_mono_ms() + 10000;

    while (atomic_load(counter) == 0 && kt_mono_ms() < deadline)
        kt_sleep_ms(20);
    if (atomic_load(counter) == 0)
        fail_msg("no %s answer within 10 s", what);
}

struct client {
    const char *url;
    const char *key;
    _Atomic int *stop;
    long ok, forbidden, other, failed;
    bool back_to_old; /* a 200 after a 403: the old rule came back */
};

static size_t
discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* One keep-alive client: one easy handle, so one connection, request after
 * request until told to stop (or CAP_MS). */
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
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    while (!atomic_load(c->stop) && kt_mono_ms() < end) {
        long status = 0;

        if (curl_easy_perform(e) != CURLE_OK) {
            c->failed++;
            continue;
        }
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200) {
            c->ok++;
            atomic_fetch_add(&seen_ok, 1);
            if (c->forbidden > 0)
                c->back_to_old = true;
        } else if (status == 403) {
            c->forbidden++;
            atomic_fetch_add(&seen_forbidden, 1);
        } else {
            c->other++;
        }
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return NULL;
}

static void
test_a_route_change_under_keepalive_load_fails_no_request(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct client clients[CLIENTS];
    pthread_t th[CLIENTS];
    _Atomic int stop = 0;
    struct kt_daemon *d;
    struct kt_key key = {0};
    char before[256], after[256];
    long ok = 0, forbidden = 0, other = 0, failed = 0;

    (void)state;
    assert_non_null(up);
    snprintf(before, sizeof(before), "upstream %s\nroute GET /v1/* items:read\n",
             kt_upstream_url(up));
    snprintf(after, sizeof(after), "upstream %s\nroute GET /v1/* items:write\n",
             kt_upstream_url(up));
    d = kt_daemon_new(before);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "reader", "items:read", NULL, &key));
    assert_true(kt_daemon_start(d));
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] =
            (struct client){.url = kt_daemon_url(d, "/v1/items"), .key = key.key, .stop = &stop};
        /* kt_daemon_url reuses its buffer: give each client its own copy. */
        clients[i].url = strdup(clients[i].url);
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &clients[i]), 0);
    }
    kt_sleep_ms(400);
    wait_seen(&seen_ok, "200 under the old rule");
    reload_with(d, after);
    /* Load goes on under the new rule for a while. */
    kt_sleep_ms(400);
    wait_seen(&seen_forbidden, "403 under the new rule");
    atomic_store(&stop, 1);
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        ok += clients[i].ok;
        forbidden += clients[i].forbidden;
        other += clients[i].other;
        failed += clients[i].failed;
        if (clients[i].back_to_old)
            fail_msg("client %d got a 200 (old rule) after a 403 (new rule)", i);
        free((char *)clients[i].url);
    }
    print_message("reload under load: %ld x 200 before, %ld x 403 after, %ld other, %ld failed\n",
                  ok, forbidden, other, failed);
    if (other != 0 || failed != 0)
        fail_msg("every answer should be 200 (old rule) or 403 (new rule): %ld other status(es), "
                 "%ld failed exchange(s)",
                 other, failed);
    assert_true(ok > 0);
    assert_true(forbidden > 0);
    /* A fresh connection after the reload: the new rule. */
    assert_int_equal(get_status(d, "/v1/items", key.key, NULL), 403);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* ---- (b) a new upstream for new requests; a slow one finishes on the old ---- */

struct slow_get {
    const char *url;
    const char *key;
    long status;
    char target[128];
};

static void *
slow_main(void *arg)
{
    struct slow_get *s = arg;
    struct kt_http_req req = {.url = s->url, .timeout_ms = 15000};
    struct kt_http_resp resp;
    struct kt_echo echo;

    kt_http_do_key(&req, s->key, &resp);
    s->status = resp.status;
    if (resp.body != NULL && kt_echo_parse(resp.body, resp.body_len, &echo))
        snprintf(s->target, sizeof(s->target), "%s",
                 kt_echo_target(&echo) != NULL ? kt_echo_target(&echo) : "");
    kt_echo_cleanup(&echo);
    kt_http_resp_cleanup(&resp);
    return NULL;
}

static void
test_a_new_upstream_takes_new_requests_while_a_slow_one_finishes_on_the_old(void **state)
{
    struct kt_upstream *old_up = kt_upstream_start(), *new_up = kt_upstream_start();
    struct slow_get slow = {0};
    struct kt_daemon *d;
    struct kt_key key = {0};
    char text[256];
    char url[256];
    pthread_t th;
    int64_t deadline;

    (void)state;
    assert_non_null(old_up);
    assert_non_null(new_up);
    kt_upstream_set_slow_ms(old_up, 3000);
    snprintf(text, sizeof(text), "upstream %s\n", kt_upstream_url(old_up));
    d = kt_daemon_new(text);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "mover", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));

    snprintf(url, sizeof(url), "%s", kt_daemon_url(d, "/slow/started-before"));
    slow = (struct slow_get){.url = url, .key = key.key};
    assert_int_equal(pthread_create(&th, NULL, slow_main, &slow), 0);
    deadline = kt_mono_ms() + WAIT_MS;
    while (kt_upstream_held_slow(old_up) < 1 && kt_mono_ms() < deadline)
        kt_sleep_ms(10);
    assert_int_equal(kt_upstream_held_slow(old_up), 1);

    snprintf(text, sizeof(text), "upstream %s\n", kt_upstream_url(new_up));
    reload_with(d, text);
    assert_int_equal(get_status(d, "/v1/after", key.key, NULL), 200);
    assert_int_equal(kt_upstream_count_prefix(new_up, "/v1/after"), 1);
    assert_int_equal(kt_upstream_count_prefix(old_up, "/v1/after"), 0);

    pthread_join(th, NULL);
    assert_int_equal(slow.status, 200);
    assert_string_equal(slow.target, "/slow/started-before");
    assert_int_equal(kt_upstream_count_prefix(new_up, "/slow"), 0);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(old_up);
    kt_upstream_stop(new_up);
}

/* ---- (c) error_style ---- */

static void
test_a_reload_switches_the_error_style_of_the_401(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    char text[256], *body = NULL;

    (void)state;
    assert_non_null(up);
    snprintf(text, sizeof(text), "upstream %s\nerror_style detail\n", kt_upstream_url(up));
    d = kt_daemon_new(text);
    assert_non_null(d);
    assert_true(kt_daemon_start(d));
    assert_int_equal(get_status(d, "/v1/x", NULL, &body), 401);
    assert_non_null(body);
    assert_non_null(strstr(body, "\"detail\""));
    free(body);

    snprintf(text, sizeof(text), "upstream %s\nerror_style error\n", kt_upstream_url(up));
    reload_with(d, text);
    assert_int_equal(get_status(d, "/v1/x", NULL, &body), 401);
    assert_non_null(body);
    if (strstr(body, "\"error\"") == NULL || strstr(body, "\"detail\"") != NULL)
        fail_msg("after the reload the 401 should be in the error style, got %s", body);
    free(body);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* ---- (d) a bad config is refused whole ---- */

static void
test_an_invalid_config_is_refused_with_file_and_line_and_the_old_one_serves(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    struct kt_key key = {0};
    char text[256], want[600];

    (void)state;
    assert_non_null(up);
    snprintf(text, sizeof(text), "upstream %s\nroute GET /v1/* items:read\n", kt_upstream_url(up));
    d = kt_daemon_new(text);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "reader", "items:read", NULL, &key));
    assert_true(kt_daemon_start(d));
    assert_int_equal(get_status(d, "/v1/items", key.key, NULL), 200);

    /* A good route change, but an unknown directive on line 3: nothing applies. */
    snprintf(text, sizeof(text), "upstream %s\nroute GET /v1/* items:write\n", kt_upstream_url(up));
    write_conf(d, kt_daemon_port(d), "no_such_directive on", text);
    assert_int_equal(kill(kt_daemon_pid(d), SIGHUP), 0);
    snprintf(want, sizeof(want), "%s:3: unknown directive \"no_such_directive\"",
             kt_daemon_config_path(d));
    must_see_log(d, want, 1);
    must_see_log(d, "configuration reload refused", 1);
    assert_int_equal(kt_daemon_log_count(d, RELOADED), 0);
    /* The old rule still decides, and the daemon still serves. */
    assert_int_equal(get_status(d, "/v1/items", key.key, NULL), 200);
    assert_true(kt_daemon_running(d));

    /* Fixed, the same change goes through. */
    reload_with(d, text);
    assert_int_equal(get_status(d, "/v1/items", key.key, NULL), 403);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* ---- (e) listen needs a restart ---- */

static void
test_a_changed_listen_is_reported_and_not_applied(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    struct kt_key key = {0};
    char text[256], want[256], url[128];
    int other_port = kt_daemon_free_port();
    struct kt_http_req req = {.url = url, .timeout_ms = 2000};
    struct kt_http_resp resp;

    (void)state;
    assert_non_null(up);
    assert_true(other_port > 0);
    snprintf(text, sizeof(text), "upstream %s\nroute GET /v1/* items:read\n", kt_upstream_url(up));
    d = kt_daemon_new(text);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "reader", "items:read", NULL, &key));
    assert_true(kt_daemon_start(d));
    if (other_port == kt_daemon_port(d) || other_port == kt_daemon_admin_port(d))
        other_port = kt_daemon_free_port();

    /* listen moves (not applied) and the route changes (applied) in one reload. */
    snprintf(text, sizeof(text), "upstream %s\nroute GET /v1/* items:write\n", kt_upstream_url(up));
    write_conf(d, other_port, NULL, text);
    assert_int_equal(kill(kt_daemon_pid(d), SIGHUP), 0);
    snprintf(want, sizeof(want),
             "listen: changed to 127.0.0.1:%d; needs a restart, keeping "
             "127.0.0.1:%d",
             other_port, kt_daemon_port(d));
    must_see_log(d, want, 1);
    must_see_log(d, RELOADED, 1);
    /* The old port serves, under the new route... */
    assert_int_equal(get_status(d, "/v1/items", key.key, NULL), 403);
    /* ...and nothing listens on the new one. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/items", other_port);
    kt_http_do(&req, &resp);
    assert_int_equal(resp.status, 0);
    kt_http_resp_cleanup(&resp);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* ---- (f) log settings ---- */

/* Every line of the log that starts with '{' must be one JSON object with
 * string time, level and message; returns how many there were. */
static size_t
check_json_lines(struct kt_daemon *d, size_t *debug_lines)
{
    char *log = kt_daemon_log(d), *save = NULL;
    size_t n = 0;

    *debug_lines = 0;
    for (char *line = strtok_r(log, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *o;

        if (line[0] != '{')
            continue;
        o = json_loads(line, 0, &jerr);
        if (o == NULL || !json_is_string(json_object_get(o, "time")) ||
            !json_is_string(json_object_get(o, "level")) ||
            !json_is_string(json_object_get(o, "message")))
            fail_msg("not a log object with time, level and message: %s", line);
        if (strcmp(json_string_value(json_object_get(o, "level")), "debug") == 0)
            (*debug_lines)++;
        json_decref(o);
        n++;
    }
    free(log);
    return n;
}

static void
test_log_level_and_log_format_change_on_reload(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    char text[256];
    size_t json_lines, debug_lines, text_reloads;

    (void)state;
    assert_non_null(up);
    snprintf(text, sizeof(text), "upstream %s\nlog_level info\nlog_format text\n",
             kt_upstream_url(up));
    d = kt_daemon_new(text);
    assert_non_null(d);
    assert_true(kt_daemon_start(d));
    assert_int_equal(check_json_lines(d, &debug_lines), 0);

    snprintf(text, sizeof(text), "upstream %s\nlog_level debug\nlog_format json\n",
             kt_upstream_url(up));
    reload_with(d, text);
    /* The SIGHUP's key reload logs at debug level, right after the reload. */
    must_see_log(d, "\"level\":\"debug\"", 1);
    json_lines = check_json_lines(d, &debug_lines);
    assert_true(json_lines >= 2);
    assert_true(debug_lines >= 1);
    must_see_log(d, "\"level\":\"info\",\"message\":\"SIGHUP: configuration reloaded", 1);

    text_reloads = kt_daemon_log_count(d, " info SIGHUP: configuration reloaded");
    snprintf(text, sizeof(text), "upstream %s\nlog_level info\nlog_format text\n",
             kt_upstream_url(up));
    reload_with(d, text);
    must_see_log(d, " info SIGHUP: configuration reloaded", text_reloads + 1);
    /* Back at info: the SIGHUP's key reload wrote no debug line in text.
     * Signals are handled one at a time, each reload with its key reload
     * before the next signal, so a second SIGHUP's line is the later event
     * that says the first key reload is over (no fixed sleep). */
    assert_int_equal(kill(kt_daemon_pid(d), SIGHUP), 0);
    must_see_log(d, " info SIGHUP: configuration reloaded", text_reloads + 2);
    assert_int_equal(kt_daemon_log_count(d, " debug "), 0);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* Lines of path holding needle; 0 when the file is missing. */
static size_t
file_count(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    size_t n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static void
test_access_log_moves_to_a_new_file_on_reload_and_a_bad_path_is_refused(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    char text[1024], a[512], b[512];
    int64_t deadline;

    (void)state;
    assert_non_null(up);
    snprintf(text, sizeof(text), "upstream %s\naccess_log off\n", kt_upstream_url(up));
    d = kt_daemon_new(text);
    assert_non_null(d);
    assert_true(kt_daemon_start(d));
    assert_int_equal(get_status(d, "/v1/zero", NULL, NULL), 401);
    /* off -> a -> b */
    snprintf(a, sizeof(a), "%s/access-a.log", kt_daemon_dir(d));
    snprintf(b, sizeof(b), "%s/access-b.log", kt_daemon_dir(d));
    snprintf(text, sizeof(text), "upstream %s\naccess_log \"%s\"\n", kt_upstream_url(up), a);
    reload_with(d, text);
    assert_int_equal(get_status(d, "/v1/one", NULL, NULL), 401);

    snprintf(text, sizeof(text), "upstream %s\naccess_log \"%s\"\n", kt_upstream_url(up), b);
    reload_with(d, text);
    assert_int_equal(get_status(d, "/v1/two", NULL, NULL), 401);
    deadline = kt_mono_ms() + 5000;
    while ((file_count(a, "/v1/one") != 1 || file_count(b, "/v1/two") != 1) &&
           kt_mono_ms() < deadline)
        kt_sleep_ms(50);
    /* Before the reload to the old file, after it to the new one only. */
    assert_int_equal(file_count(a, "/v1/one"), 1);
    assert_int_equal(file_count(a, "/v1/zero"), 0);
    assert_int_equal(file_count(a, "/v1/two"), 0);
    assert_int_equal(file_count(b, "/v1/two"), 1);

    /* A file that cannot be opened refuses the whole reload. */
    snprintf(text, sizeof(text), "upstream %s\naccess_log \"%s/no/such/dir/x.log\"\n",
             kt_upstream_url(up), kt_daemon_dir(d));
    write_conf(d, kt_daemon_port(d), NULL, text);
    assert_int_equal(kill(kt_daemon_pid(d), SIGHUP), 0);
    must_see_log(d, "SIGHUP: access_log: ", 1);
    assert_int_equal(get_status(d, "/v1/three", NULL, NULL), 401);
    deadline = kt_mono_ms() + 5000;
    while (file_count(b, "/v1/three") != 1 && kt_mono_ms() < deadline)
        kt_sleep_ms(50);
    assert_int_equal(file_count(b, "/v1/three"), 1);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_route_change_under_keepalive_load_fails_no_request),
        cmocka_unit_test(
            test_a_new_upstream_takes_new_requests_while_a_slow_one_finishes_on_the_old),
        cmocka_unit_test(test_a_reload_switches_the_error_style_of_the_401),
        cmocka_unit_test(
            test_an_invalid_config_is_refused_with_file_and_line_and_the_old_one_serves),
        cmocka_unit_test(test_a_changed_listen_is_reported_and_not_applied),
        cmocka_unit_test(test_log_level_and_log_format_change_on_reload),
        cmocka_unit_test(test_access_log_moves_to_a_new_file_on_reload_and_a_bad_path_is_refused),
    };

    kt_http_global_init();
    {
        int rc = cmocka_run_group_tests(tests, NULL, NULL);

        kt_http_global_cleanup();
        return rc;
    }
}
