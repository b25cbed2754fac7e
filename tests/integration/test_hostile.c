/* integration/test_hostile.c - CTest: integration_test_hostile.
 *
 * A data-driven driver for raw, mostly malformed requests. Each case is two
 * files in tests/cases/http/: NNNN-name.req holds the exact bytes to send
 * (CRLF written out, NUL bytes and all; the text ${KEY} is replaced by a
 * valid key, so only the check under test can stop the request), and
 * NNNN-name.want what must come back (see tests/cases/http/README.md):
 *
 *   status 400            the status of each answer, in order; "none": no answer
 *   contains TEXT         TEXT appears in the raw answer bytes (repeatable)
 *   closed yes|no         whether the server must close the connection
 *   upstream N            requests the upstream must have seen (default 0
 *                         when no answer is 2xx)
 *
 * Every case is one cmocka test named after its file; adding a case is
 * adding a file. After all of them the daemon must still answer /health.
 *
 * Cases in tests/cases/admin/ (same two files, same directives except
 * "upstream") are sent to the admin listener instead, with ${KEY} the
 * platform admin key `keygate init` printed; there, the number of keys in
 * the store must not change unless an answer is 2xx (the admin API's
 * counterpart of "upstream 0": a request that slipped through would make one).
 */
#include <dirent.h>
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
#include "helpers/upstream.h"

#define MAX_STATUSES 8
#define MAX_CONTAINS 8
#define CASE_DEADLINE_MS 5000L
/* How long to watch for a close after the last expected answer: a server
 * closes right after its answer, so "closed yes" waits generously, and
 * "closed no" only needs to see that nothing happens for a while. */
#define LINGER_CLOSE_MS 1500L
#define LINGER_OPEN_MS 300L

struct want {
    int statuses[MAX_STATUSES];
    size_t nstatuses; /* 0 with "status none" */
    bool status_set;
    char *contains[MAX_CONTAINS];
    size_t ncontains;
    bool closed;
    bool closed_set;
    long upstream; /* -1: default */
};

struct hcase {
    bool admin; /* tests/cases/admin/: sent to the admin listener */
    char name[128];
    char req_path[1024];
    char want_path[1024];
};

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;
    struct kt_key key;
    char *admin_key; /* printed by `keygate init` */
};

static struct world W;

/* What a case holds lives here, not on the stack: a failed assertion
 * longjmps out of the test, and free_slots (each test's teardown) frees it. */
static struct want CW;
static struct kt_raw_result CR;
static char *CB;

static int teardown(void **state);

#define KEY_LEN 54 /* "kg_" + 43 body + 8 checksum */

/* The key `keygate init` printed: the first run of key characters that
 * starts with the prefix and has a key's length. */
static char *
key_in(const char *text)
{
    for (const char *p = strstr(text, "kg_"); p != NULL; p = strstr(p + 1, "kg_")) {
        size_t n = 3;

        while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z') ||
               (p[n] >= '0' && p[n] <= '9'))
            n++;
        if (n == KEY_LEN)
            return strndup(p, n);
    }
    return NULL;
}

static bool
make_admin_key(void)
{
    struct kt_cli_result res;

    if (!kt_daemon_cli(W.gw, &res, (const char *const[]){"init", NULL}))
        return false;
    if (res.exit_code == 0)
        W.admin_key = key_in(res.out);
    kt_cli_result_cleanup(&res);
    kt_daemon_remember_key(W.gw, W.admin_key);
    return W.admin_key != NULL;
}

static int
setup(void **state)
{
    char cfg[256];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL) {
        teardown(state);
        return -1;
    }
    snprintf(cfg, sizeof(cfg), "upstream %s\n", kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    if (W.gw == NULL || !make_admin_key() ||
        !kt_daemon_create_key(W.gw, "hostile", NULL, NULL, &W.key) || !kt_daemon_start(W.gw)) {
        teardown(state);
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.gw);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.key);
    free(W.admin_key);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

/* ---- reading a case ---- */

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    *len = 0;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = '\0';
            *len = (size_t)n;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* Replaces every ${KEY} in the request bytes with the valid key. */
static char *
substitute_key(const char *raw, size_t len, const char *key, size_t *out_len)
{
    static const char token[] = "${KEY}";
    size_t tlen = sizeof(token) - 1, klen = strlen(key), n = 0;
    char *out = malloc(len + 1 + (len / tlen + 1) * klen);

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len;) {
        if (i + tlen <= len && memcmp(raw + i, token, tlen) == 0) {
            memcpy(out + n, key, klen);
            n += klen;
            i += tlen;
        } else {
            out[n++] = raw[i++];
        }
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

static void
want_cleanup(struct want *w)
{
    for (size_t i = 0; i < w->ncontains; i++)
        free(w->contains[i]);
    memset(w, 0, sizeof(*w));
}

static int
free_slots(void **state)
{
    (void)state;
    want_cleanup(&CW);
    kt_raw_result_cleanup(&CR);
    free(CB);
    CB = NULL;
    return 0;
}

/* Parses a .want file; fails the test on anything it does not understand. */
static void
parse_want(const char *path, bool admin, struct want *w)
{
    size_t len;
    char *text = slurp(path, &len);
    char *save = NULL, *line;

    memset(w, 0, sizeof(*w));
    w->upstream = -1;
    if (text == NULL)
        fail_msg("%s: cannot read", path);
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        size_t n = strlen(line);
        char *arg;

        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        arg = strchr(line, ' ');
        if (arg != NULL)
            *arg++ = '\0';
        if (strcmp(line, "status") == 0 && arg != NULL) {
            w->status_set = true;
            if (strcmp(arg, "none") == 0)
                continue;
            for (char *s = strtok(arg, " "); s != NULL; s = strtok(NULL, " "))
                if (w->nstatuses < MAX_STATUSES)
                    w->statuses[w->nstatuses++] = atoi(s);
        } else if (strcmp(line, "contains") == 0 && arg != NULL && w->ncontains < MAX_CONTAINS) {
            w->contains[w->ncontains++] = strdup(arg);
        } else if (strcmp(line, "closed") == 0 && arg != NULL &&
                   (strcmp(arg, "yes") == 0 || strcmp(arg, "no") == 0)) {
            w->closed = strcmp(arg, "yes") == 0;
            w->closed_set = true;
        } else if (strcmp(line, "upstream") == 0 && arg != NULL && !admin) {
            w->upstream = atol(arg);
        } else {
            free(text);
            fail_msg("%s: cannot understand \"%s %s\"", path, line, arg != NULL ? arg : "");
        }
    }
    free(text);
    if (!w->status_set || !w->closed_set)
        fail_msg("%s: needs a status and a closed line", path);
    if (w->upstream < 0) {
        w->upstream = 0;
        for (size_t i = 0; i < w->nstatuses; i++)
            if (w->statuses[i] >= 200 && w->statuses[i] < 300)
                w->upstream = -1; /* a success may or may not be proxied: not checked */
    }
}

/* What came back, printable, for failure messages. */
static void
print_answer(const struct kt_raw_result *r)
{
    char buf[1200];
    size_t n = 0;

    for (size_t i = 0; i < r->len && n + 5 < sizeof(buf); i++) {
        unsigned char c = (unsigned char)r->data[i];

        if (c == '\n' || (c >= 0x20 && c < 0x7f))
            buf[n++] = (char)c;
        else if (c != '\r')
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\\x%02x", c);
    }
    buf[n] = '\0';
    print_error("answer (%zu bytes, %s):\n%s\n", r->len, r->closed ? "closed" : "open", buf);
}

static bool
memcontains(const char *hay, size_t hlen, const char *needle)
{
    size_t nlen = strlen(needle);

    for (size_t i = 0; i + nlen <= hlen; i++)
        if (memcmp(hay + i, needle, nlen) == 0)
            return true;
    return false;
}

/* Keys in the store, revoked ones included. */
static size_t
count_keys(void)
{
    json_t *list = kt_daemon_cli_json(
        W.gw, (const char *const[]){"keys", "list", "--state", "all", "--json", NULL});
    size_t n = json_array_size(list);

    json_decref(list);
    return n;
}

static void
run_case(void **state)
{
    const struct hcase *c = *state;
    struct kt_raw_resp resps[MAX_STATUSES + 1];
    size_t raw_len, len = 0, nresp, before, keys_before = 0;
    char *raw;
    bool ok = true;

    parse_want(c->want_path, c->admin, &CW);
    raw = slurp(c->req_path, &raw_len);
    assert_non_null(raw);
    CB = substitute_key(raw, raw_len, c->admin ? W.admin_key : W.key.key, &len);
    free(raw);
    assert_non_null(CB);

    before = kt_upstream_count(W.up);
    if (c->admin)
        keys_before = count_keys();
    assert_true(kt_raw_exchange(
        c->admin ? kt_daemon_admin_port(W.gw) : kt_daemon_port(W.gw), CB, len, (int)CW.nstatuses,
        CW.closed ? LINGER_CLOSE_MS : LINGER_OPEN_MS, CASE_DEADLINE_MS, &CR));
    nresp = kt_raw_parse(CR.data, CR.len, CR.closed, resps, MAX_STATUSES + 1);

    if (nresp != CW.nstatuses) {
        print_error("%s: %zu answers, wanted %zu\n", c->name, nresp, CW.nstatuses);
        ok = false;
    }
    for (size_t i = 0; i < nresp && i < CW.nstatuses; i++) {
        if (resps[i].status != CW.statuses[i]) {
            print_error("%s: answer %zu is %d, wanted %d\n", c->name, i + 1, resps[i].status,
                        CW.statuses[i]);
            ok = false;
        }
    }
    for (size_t i = 0; i < CW.ncontains; i++) {
        if (!memcontains(CR.data, CR.len, CW.contains[i])) {
            print_error("%s: answer lacks \"%s\"\n", c->name, CW.contains[i]);
            ok = false;
        }
    }
    if (CR.closed != CW.closed) {
        print_error("%s: connection %s, wanted %s\n", c->name, CR.closed ? "closed" : "open",
                    CW.closed ? "closed" : "open");
        ok = false;
    }
    if (c->admin && CW.upstream == 0 && count_keys() != keys_before) {
        print_error("%s: the store's key count changed from %zu\n", c->name, keys_before);
        ok = false;
    }
    if (!c->admin && CW.upstream >= 0 && kt_upstream_count(W.up) - before != (size_t)CW.upstream) {
        char *seen = kt_upstream_targets(W.up);

        print_error("%s: the upstream saw %zu request(s), wanted %ld; all it saw:\n%s", c->name,
                    kt_upstream_count(W.up) - before, CW.upstream, seen);
        free(seen);
        ok = false;
    }
    if (!kt_daemon_running(W.gw)) {
        char *log = kt_daemon_log(W.gw);

        print_error("%s: keygate is no longer running; its log:\n%s\n", c->name, log);
        free(log);
        ok = false;
    }
    if (!ok)
        print_answer(&CR);
    assert_true(ok);
}

static void
test_the_daemon_still_answers_health_after_every_case(void **state)
{
    char auth[512];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_resp r;

    (void)state;
    assert_true(kt_daemon_running(W.gw));
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.key.key);
    assert_true(kt_http_get(kt_daemon_url(W.gw, "/health"), hdrs, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    kt_http_resp_cleanup(&r);
}

static void
test_the_daemon_stops_cleanly(void **state)
{
    (void)state;
    assert_int_equal(kt_daemon_stop(W.gw), 0);
}

static int
is_req(const struct dirent *e)
{
    size_t n = strlen(e->d_name);

    return n > 4 && strcmp(e->d_name + n - 4, ".req") == 0;
}

/* Adds one test per .req in src/tests/cases/sub; the number added, or -1. */
static int
add_cases(const char *src, const char *sub, bool admin, struct hcase *cases,
          struct CMUnitTest *tests, int room)
{
    struct dirent **names = NULL;
    char dir[400];
    int n;

    snprintf(dir, sizeof(dir), "%s/tests/cases/%s", src, sub);
    n = scandir(dir, &names, is_req, alphasort);
    if (n <= 0 || n > room) {
        fprintf(stderr, "%s: no .req cases, or more than %d\n", dir, room);
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct hcase *c = &cases[i];
        size_t len = strlen(names[i]->d_name) - 4;

        c->admin = admin;
        snprintf(c->name, sizeof(c->name), "%s%.*s", admin ? "admin/" : "", (int)len,
                 names[i]->d_name);
        snprintf(c->req_path, sizeof(c->req_path), "%s/%s", dir, names[i]->d_name);
        snprintf(c->want_path, sizeof(c->want_path), "%s/%.*s.want", dir, (int)len,
                 names[i]->d_name);
        tests[i] = (struct CMUnitTest){.name = c->name,
                                       .test_func = run_case,
                                       .teardown_func = free_slots,
                                       .initial_state = c};
        free(names[i]);
    }
    free(names);
    return n;
}

#define MAX_CASES 512

int
main(void)
{
    const char *src = getenv("KEYGATE_SOURCE_DIR");
    struct CMUnitTest *tests;
    struct hcase *cases;
    int n, ntests = 0, rc;

    if (src == NULL || src[0] == '\0') {
        fprintf(stderr, "KEYGATE_SOURCE_DIR is not set (run the tests through ctest)\n");
        return 1;
    }
    cases = calloc(MAX_CASES, sizeof(*cases));
    tests = calloc(MAX_CASES + 2, sizeof(*tests));
    if (cases == NULL || tests == NULL)
        return 1;
    n = add_cases(src, "http", false, cases, tests, MAX_CASES);
    if (n < 0)
        return 1;
    ntests = n;
    n = add_cases(src, "admin", true, cases + ntests, tests + ntests, MAX_CASES - ntests);
    if (n < 0)
        return 1;
    ntests += n;
    tests[ntests++] =
        (struct CMUnitTest)cmocka_unit_test(test_the_daemon_still_answers_health_after_every_case);
    tests[ntests++] = (struct CMUnitTest)cmocka_unit_test(test_the_daemon_stops_cleanly);
    rc =
        _cmocka_run_group_tests("integration_test_hostile", tests, (size_t)ntests, setup, teardown);
    free(tests);
    free(cases);
    return rc;
}
