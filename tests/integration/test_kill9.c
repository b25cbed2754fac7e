/* integration/test_kill9.c - CTest: integration_test_kill9 (label long).
 *
 * Issue 16, item 3: kill -9 at random moments during a stream of admin
 * writes. Each round starts the daemon on the same store, a writer thread
 * sends creates, rotations and revocations through the admin API one after
 * another, and after a random 20-400 ms the daemon gets SIGKILL, whatever
 * it is doing. After the restart every change that was answered 2xx must
 * be there (a created key exists, a revoked one is revoked, a rotated one
 * names its successor: checked after each restart for that round's
 * changes, and for all of them at the end) and `keygate audit verify`
 * must pass. A change cut
 * off before its answer may or may not be there: both are fine. 100
 * rounds (KEYGATE_KILL9_ROUNDS to change), at most 300 s. Loopback only.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"

#define KEY_LEN 54
#define MAX_KEYS 4096
#define BUDGET_MS 300000 /* 80-90 s on a quiet machine; a loaded one takes longer */

enum kstate { K_ACTIVE, K_REVOKED, K_ROTATED };

struct known {
    char id[64];
    enum kstate state;
    char successor[64];
    bool dirty; /* changed since the last restart's check */
};

static struct {
    struct kt_daemon *d;
    char *root;
    struct known keys[MAX_KEYS]; /* acknowledged changes only */
    int nkeys;
    char *secrets[MAX_KEYS]; /* full keys the API returned, remembered after each round */
    int nsecrets;
} W;

struct writer {
    char base[64]; /* http://127.0.0.1:ADMINPORT */
    atomic_bool stop;
    unsigned seed;
    int acked, cut;
};

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

static long
call(const char *base, const char *method, const char *path, const char *body,
     struct kt_http_resp *r)
{
    char url[256], auth[128];
    const char *hdrs[] = {auth, "Content-Type: application/json", NULL};
    struct kt_http_req req = {.method = method,
                              .url = url,
                              .headers = hdrs,
                              .body = body,
                              .body_len = body != NULL ? strlen(body) : 0,
                              .timeout_ms = 10000};

    snprintf(url, sizeof(url), "%s%s", base, path);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.root);
    memset(r, 0, sizeof(*r));
    kt_http_do(&req, r);
    return r->status;
}

/* The id (and full key) of a 201/200 key document. */
static bool
doc_id(const char *body, char *id, size_t cap)
{
    json_t *doc = json_loads(body, 0, NULL);
    const char *v = json_string_value(json_object_get(doc, "id"));
    const char *key = json_string_value(json_object_get(doc, "key"));

    if (v != NULL)
        snprintf(id, cap, "%s", v);
    if (key != NULL && W.nsecrets < MAX_KEYS)
        W.secrets[W.nsecrets++] = strdup(key);
    json_decref(doc);
    return v != NULL;
}

/* An active acknowledged key, or -1. */
static int
pick_active(struct writer *w)
{
    for (int tries = 0; tries < 8 && W.nkeys > 0; tries++) {
        int i = (int)(rand_r(&w->seed) % (unsigned)W.nkeys);

        if (W.keys[i].state == K_ACTIVE)
            return i;
    }
    return -1;
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;

    while (!atomic_load(&w->stop) && W.nkeys < MAX_KEYS - 1) {
        struct kt_http_resp r;
        unsigned op = rand_r(&w->seed) % 4;
        int i = op == 0 ? -1 : pick_active(w);
        char path[128], body[96];

        if (i < 0) {
            snprintf(body, sizeof(body), "{\"name\": \"k%d\"}", W.nkeys);
            if (call(w->base, "POST", "/v1/keys", body, &r) == 201 &&
                doc_id(r.body, W.keys[W.nkeys].id, sizeof(W.keys[0].id))) {
                W.keys[W.nkeys].dirty = true;
                W.keys[W.nkeys++].state = K_ACTIVE;
                w->acked++;
            } else {
                w->cut++;
            }
        } else if (op == 1) {
            snprintf(path, sizeof(path), "/v1/keys/%s/revoke", W.keys[i].id);
            if (call(w->base, "POST", path, NULL, &r) == 200) {
                W.keys[i].state = K_REVOKED;
                W.keys[i].dirty = true;
                w->acked++;
            } else {
                w->cut++;
            }
        } else {
            snprintf(path, sizeof(path), "/v1/keys/%s/rotate", W.keys[i].id);
            if (call(w->base, "POST", path, NULL, &r) == 201 &&
                doc_id(r.body, W.keys[W.nkeys].id, sizeof(W.keys[0].id))) {
                W.keys[i].state = K_ROTATED;
                W.keys[i].dirty = true;
                W.keys[W.nkeys].dirty = true;
                memcpy(W.keys[i].successor, W.keys[W.nkeys].id, sizeof(W.keys[i].successor));
                W.keys[W.nkeys++].state = K_ACTIVE;
                w->acked++;
            } else {
                w->cut++;
            }
        }
        /* No answer: the daemon is gone (or going); the next round goes on. */
        if (r.status == 0) {
            kt_http_resp_cleanup(&r);
            break;
        }
        kt_http_resp_cleanup(&r);
    }
    return NULL;
}

/* Every acknowledged change (all, or those of the last round) is in the
 * store the restarted daemon reads. */
static void
verify(int round, bool all)
{
    struct kt_cli_result res;
    char base[64];

    snprintf(base, sizeof(base), "http://127.0.0.1:%d", kt_daemon_admin_port(W.d));
    for (int i = 0; i < W.nkeys; i++) {
        struct kt_http_resp r;
        char path[128];
        json_t *doc;
        const char *state, *to;
        bool ok;

        if (!all && !W.keys[i].dirty)
            continue;
        W.keys[i].dirty = false;
        snprintf(path, sizeof(path), "/v1/keys/%s", W.keys[i].id);
        if (call(base, "GET", path, NULL, &r) != 200)
            fail_msg("round %d: acknowledged key %s lost (%ld)", round, W.keys[i].id, r.status);
        doc = json_loads(r.body, 0, NULL);
        state = json_string_value(json_object_get(doc, "state"));
        to = json_string_value(json_object_get(doc, "rotated_to"));
        switch (W.keys[i].state) {
        case K_ACTIVE:
            /* A revocation or rotation cut off before its answer may have
             * happened: present is all an acknowledged creation promises. */
            ok = true;
            break;
        case K_REVOKED:
            ok = state != NULL && strcmp(state, "revoked") == 0;
            break;
        default:
            ok = to != NULL && strcmp(to, W.keys[i].successor) == 0;
            break;
        }
        if (!ok)
            fail_msg("round %d: key %s: acknowledged state %d, store says %s", round, W.keys[i].id,
                     (int)W.keys[i].state, r.body);
        json_decref(doc);
        kt_http_resp_cleanup(&r);
    }
    assert_true(kt_daemon_cli(W.d, &res, (const char *const[]){"audit", "verify", NULL}));
    if (res.exit_code != 0)
        fail_msg("round %d: keygate audit verify: %d %s%s", round, res.exit_code, res.out, res.err);
    kt_cli_result_cleanup(&res);
}

static void
test_every_acknowledged_change_survives_kill_9(void **state)
{
    const char *env = getenv("KEYGATE_KILL9_ROUNDS");
    int rounds = env != NULL ? atoi(env) : 100;
    int64_t started = kt_mono_ms();
    unsigned seed = (unsigned)started;
    int acked = 0, cut = 0, done = 0;

    (void)state;
    fprintf(stderr, "kill -9: seed %u\n", seed);
    for (int round = 0; round < rounds; round++) {
        struct writer w = {.seed = seed + (unsigned)round};
        pthread_t t;
        long wait_ms = 20 + (long)(rand_r(&seed) % 381);

        if (kt_mono_ms() - started > BUDGET_MS)
            fail_msg("only %d of %d rounds within %d s", round, rounds, BUDGET_MS / 1000);
        assert_true(kt_daemon_start(W.d));
        if (round > 0)
            verify(round, false);
        snprintf(w.base, sizeof(w.base), "http://127.0.0.1:%d", kt_daemon_admin_port(W.d));
        assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
        kt_sleep_ms(wait_ms);
        kt_daemon_kill(W.d);
        atomic_store(&w.stop, true);
        pthread_join(t, NULL);
        acked += w.acked;
        cut += w.cut;
        done++;
        for (; W.nsecrets > 0; W.nsecrets--) {
            kt_daemon_remember_key(W.d, W.secrets[W.nsecrets - 1]);
            free(W.secrets[W.nsecrets - 1]);
        }
    }
    assert_true(kt_daemon_start(W.d));
    verify(done, true);
    fprintf(stderr,
            "kill -9: %d rounds in %.1f s, %d changes acknowledged, %d not (cut off or refused)\n",
            done, (double)(kt_mono_ms() - started) / 1000.0, acked, cut);
    assert_true(acked > rounds); /* the writer really wrote between the kills */
}

static int
setup(void **state)
{
    struct kt_cli_result res;

    (void)state;
    kt_http_global_init();
    W.d = kt_daemon_new(NULL);
    if (W.d == NULL || !kt_daemon_cli(W.d, &res, (const char *const[]){"init", NULL}))
        return -1;
    W.root = key_in(res.out);
    kt_cli_result_cleanup(&res);
    if (W.root == NULL)
        return -1;
    kt_daemon_remember_key(W.d, W.root);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.d);
    free(W.root);
    kt_http_global_cleanup();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_acknowledged_change_survives_kill_9),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
