/* tests/integration/test_tier_quota.c - the tier quota and per-user
 * credits on a running daemon, and counting through a kill -9 under load.
 *
 * Every key of a user draws from the user's tier quota (`tier NAME ...
 * quota N/day`) and from the user's own credits (`users create --credits
 * N`), besides its own credits; the stricter decides, a refusal (429
 * quota_exceeded) charges none of them, and only an upstream 2xx charges.
 * Counts are kept in memory and written once a second in one transaction
 * for keys and users: a SIGKILL in the middle of a load loses at most the
 * last second and never writes a charge twice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define DETAIL_QUOTA "{\"detail\": \"Quota exceeded.\"}"
/* The flush runs once a second: ten seconds leaves room on a loaded,
 * sanitised build. */
#define FLUSH_WAIT_MS 10000

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;
};

static struct world W;

static int
setup(void **state)
{
    char cfg[512];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "upstream %s\n"
             "tier gold rate 100/s burst 20 quota 5/day\n"
             "tier bulk rate 100000/s burst 100000 quota 100000000/month\n",
             kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    return W.gw != NULL && kt_daemon_start(W.gw) ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.gw);
    kt_upstream_stop(W.up);
    kt_http_global_cleanup();
    return 0;
}

static void
cli_ok(const char *const *args)
{
    struct kt_cli_result r;

    if (!kt_daemon_cli(W.gw, &r, args) || r.exit_code != 0)
        fail_msg("keygate %s %s should exit 0: %s", args[0], args[1], r.err != NULL ? r.err : "");
    kt_cli_result_cleanup(&r);
}

/* Makes a key of user (with credits when not NULL) and waits, bounded,
 * until the running daemon knows it (its reload follows the CLI's
 * change within a poll). Uses no credit: asks /health. */
static void
user_key(const char *user, const char *name, const char *credits, struct kt_key *out)
{
    const char *args[] = {"keys", "create", "--name", name, "--user",
                          user,   "--json", NULL,     NULL, NULL};

    if (credits != NULL) {
        args[6] = "--credits";
        args[7] = credits;
        args[8] = "--json";
    }
    if (!kt_daemon_key_cli(W.gw, args, out))
        fail_msg("keys create %s should succeed", name);
    {
        char auth[256];
        const char *hdrs[] = {auth, NULL};
        int64_t deadline = kt_mono_ms() + FLUSH_WAIT_MS;
        long status = 0;

        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", out->key);
        while (status != 200 && kt_mono_ms() < deadline) {
            struct kt_http_resp r;

            kt_http_get(kt_daemon_url(W.gw, "/health"), hdrs, &r);
            status = r.status;
            kt_http_resp_cleanup(&r);
            if (status != 200)
                kt_sleep_ms(20);
        }
        if (status != 200)
            fail_msg("the daemon should know key %s", name);
    }
}

/* Sends one GET of url with key; returns the status (0: no answer). Any
 * thread: url is the caller's (kt_daemon_url() shares one buffer). */
static long
get_url(const char *url, const char *key)
{
    char auth[256];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_req rq = {.url = url, .headers = hdrs};
    struct kt_http_resp r;
    long status;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    kt_http_do(&rq, &r);
    status = r.status;
    kt_http_resp_cleanup(&r);
    return status;
}

static void
one(const char *key, long want, const char *body)
{
    char auth[256];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_req rq = {.url = kt_daemon_url(W.gw, "/v1/items"), .headers = hdrs};
    struct kt_http_resp r;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    if (!kt_http_do(&rq, &r))
        fail_msg("GET should get an answer");
    if (r.status != want || (body != NULL && strcmp(r.body, body) != 0))
        fail_msg("GET should answer %ld %s, got %ld: %s", want, body != NULL ? body : "", r.status,
                 r.body != NULL ? r.body : "");
    kt_http_resp_cleanup(&r);
}

/* An integer member of the JSON that `keygate ARGS --json` prints; a
 * member of "usage" when in_usage. */
static long long
cli_int(const char *const *args, const char *member, bool in_usage)
{
    struct kt_cli_result r;
    json_error_t jerr;
    json_t *o, *v;
    long long n;

    if (!kt_daemon_cli(W.gw, &r, args) || r.exit_code != 0)
        fail_msg("keygate %s %s should exit 0: %s", args[0], args[1], r.err != NULL ? r.err : "");
    o = json_loads(r.out, 0, &jerr);
    kt_cli_result_cleanup(&r);
    if (o == NULL)
        fail_msg("keygate %s should print JSON: %s", args[0], jerr.text);
    v = json_object_get(in_usage ? json_object_get(o, "usage") : o, member);
    if (!json_is_integer(v))
        fail_msg("%s should be an integer", member);
    n = json_integer_value(v);
    json_decref(o);
    return n;
}

static long long
user_int(const char *user, const char *member)
{
    return cli_int((const char *const[]){"users", "show", user, "--json", NULL}, member, false);
}

static long long
key_int(const char *id, const char *member, bool in_usage)
{
    return cli_int((const char *const[]){"keys", "show", id, "--json", NULL}, member, in_usage);
}

static void
wait_user_int(const char *user, const char *member, long long want)
{
    int64_t deadline = kt_mono_ms() + FLUSH_WAIT_MS;
    long long n = user_int(user, member);

    while (n != want && kt_mono_ms() < deadline) {
        kt_sleep_ms(100);
        n = user_int(user, member);
    }
    if (n != want)
        fail_msg("%s of %s should reach %lld, is %lld", member, user, want, n);
}

static void
test_the_keys_of_a_user_share_its_tier_quota(void **state)
{
    struct kt_key a1, a2, b1;

    (void)state;
    cli_ok((const char *const[]){"users", "create", "--username", "alice", "--tier", "gold", NULL});
    cli_ok((const char *const[]){"users", "create", "--username", "bob", "--tier", "gold", NULL});
    user_key("alice", "a1", NULL, &a1);
    user_key("alice", "a2", "100", &a2);
    user_key("bob", "b1", NULL, &b1);
    for (int i = 0; i < 3; i++)
        one(a1.key, 200, NULL);
    one(a2.key, 200, NULL);
    one(a2.key, 200, NULL);
    /* 5 a day for alice, whichever key asks; her own key credits do not help. */
    one(a1.key, 429, DETAIL_QUOTA);
    one(a2.key, 429, DETAIL_QUOTA);
    /* Bob, in the same tier, has a quota of his own. */
    for (int i = 0; i < 5; i++)
        one(b1.key, 200, NULL);
    one(b1.key, 429, DETAIL_QUOTA);
    /* The refusals charged nothing: exactly 5 each, on the user and the keys. */
    wait_user_int("alice", "tier_quota_used", 5);
    wait_user_int("bob", "tier_quota_used", 5);
    assert_int_equal(key_int(a1.id, "quota_used", false), 3);
    assert_int_equal(key_int(a2.id, "quota_used", false), 2);
    kt_key_cleanup(&a1);
    kt_key_cleanup(&a2);
    kt_key_cleanup(&b1);
}

static void
test_user_credits_are_shared_and_the_stricter_limit_decides(void **state)
{
    struct kt_key c1, c2;

    (void)state;
    /* No tier line names "default": only credits limit carol. */
    cli_ok((const char *const[]){"users", "create", "--username", "carol", "--credits", "4", NULL});
    user_key("carol", "c1", "10", &c1);
    user_key("carol", "c2", "1", &c2);
    one(c2.key, 200, NULL);
    one(c2.key, 429, DETAIL_QUOTA); /* its own 1 is spent */
    for (int i = 0; i < 3; i++)
        one(c1.key, 200, NULL);
    one(c1.key, 429, DETAIL_QUOTA); /* carol's 4 are spent, c1 has 7 left */
    wait_user_int("carol", "quota_used", 4);
    assert_int_equal(user_int("carol", "tier_quota_used"), 0);

    /* More credits for the user: the daemon sees it at its next reload. */
    cli_ok((const char *const[]){"users", "update", "carol", "--credits", "unlimited", NULL});
    {
        int64_t deadline = kt_mono_ms() + FLUSH_WAIT_MS;
        long status = 0;

        while (status != 200 && kt_mono_ms() < deadline) {
            status = get_url(kt_daemon_url(W.gw, "/v1/items"), c1.key);
            if (status != 200)
                kt_sleep_ms(50);
        }
        assert_int_equal(status, 200);
    }
    wait_user_int("carol", "quota_used", 5);
    kt_key_cleanup(&c1);
    kt_key_cleanup(&c2);
}

/* ---- kill -9 under load ---- */

#define LOAD_THREADS 4
#define LOAD_MAX 200000

struct loader {
    pthread_t tid;
    const char *key;
    const char *url;
    atomic_bool *stop;
    int64_t *done_at; /* completion time (ms) of each 200 */
    size_t ok;
    size_t unknown; /* sent, no answer: served or not, nobody knows */
    size_t other;   /* any other status */
};

static void *
load(void *arg)
{
    struct loader *l = arg;

    while (!atomic_load(l->stop) && l->ok < LOAD_MAX) {
        long status = get_url(l->url, l->key);

        if (status == 200) {
            l->done_at[l->ok++] = kt_mono_ms();
        } else if (status == 0) {
            /* The daemon is gone: this request may have been charged. */
            l->unknown++;
            break;
        } else {
            l->other++;
        }
    }
    return NULL;
}

static void
test_a_kill_under_load_loses_at_most_a_second_and_never_charges_twice(void **state)
{
    struct kt_key d1, d2;
    struct loader ls[LOAD_THREADS];
    atomic_bool stop = false;
    size_t ok = 0, unknown = 0, recent = 0, other = 0;
    long long req1, req2, cred1, cred2, ucred, utier;
    int64_t killed_at, t0;
    char url[128];

    (void)state;
    cli_ok((const char *const[]){"users", "create", "--username", "dave", "--tier", "bulk",
                                 "--credits", "100000000", NULL});
    user_key("dave", "d1", "100000000", &d1);
    user_key("dave", "d2", NULL, &d2);
    one(d1.key, 200, NULL); /* the daemon has the keys */
    one(d2.key, 200, NULL);
    wait_user_int("dave", "quota_used", 2);

    snprintf(url, sizeof(url), "%s", kt_daemon_url(W.gw, "/v1/items"));
    for (int i = 0; i < LOAD_THREADS; i++) {
        ls[i] = (struct loader){.key = i % 2 == 0 ? d1.key : d2.key, .url = url, .stop = &stop};
        ls[i].done_at = malloc(LOAD_MAX * sizeof(*ls[i].done_at));
        assert_non_null(ls[i].done_at);
        assert_int_equal(pthread_create(&ls[i].tid, NULL, load, &ls[i]), 0);
    }
    /* Long enough for several flushes, then SIGKILL in the middle of it. */
    t0 = kt_mono_ms();
    kt_sleep_ms(3000);
    killed_at = kt_mono_ms();
    kt_daemon_kill(W.gw);
    atomic_store(&stop, true);
    for (int i = 0; i < LOAD_THREADS; i++) {
        pthread_join(ls[i].tid, NULL);
        ok += ls[i].ok;
        unknown += ls[i].unknown;
        other += ls[i].other;
        /* Served in the last 2 s before the kill: what may be lost (one
         * flush interval, plus room for a slow flush). */
        for (size_t j = 0; j < ls[i].ok; j++)
            recent += ls[i].done_at[j] >= killed_at - 2000;
        free(ls[i].done_at);
    }
    assert_int_equal(other, 0);
    assert_true(ok > 0);
    assert_true(killed_at - t0 >= 3000);
    assert_true(ok > recent); /* something was served before the last 2 s */

    /* The store as the killed daemon left it (the CLI reads the file). */
    req1 = key_int(d1.id, "requests", true);
    req2 = key_int(d2.id, "requests", true);
    cred1 = key_int(d1.id, "quota_used", false);
    cred2 = key_int(d2.id, "quota_used", false);
    ucred = user_int("dave", "quota_used");
    utier = user_int("dave", "tier_quota_used");
    print_message("load: %zu answered 200 (%zu in the last 2 s), %zu unknown; stored: requests "
                  "%lld, key credits %lld, user credits %lld, tier %lld\n",
                  ok, recent, unknown, req1 + req2 - 2, cred1 + cred2 - 2, ucred - 2, utier - 2);
    /* Keys, user and tier are written in one transaction: always equal. */
    assert_int_equal(cred1 + cred2, ucred);
    assert_int_equal(ucred, utier);
    /* Never more than was served (a request without an answer may have
     * been), never less than what was served before the last 2 s. The two
     * requests before the load count on both sides. */
    assert_true(ucred - 2 <= (long long)(ok + unknown));
    assert_true(ucred - 2 >= (long long)(ok - recent));
    assert_true(req1 + req2 - 2 <= (long long)(ok + unknown));
    assert_true(req1 + req2 - 2 >= (long long)(ok - recent));

    /* The restart goes on from the stored counts. */
    assert_true(kt_daemon_start(W.gw));
    for (int i = 0; i < 3; i++)
        one(d2.key, 200, NULL);
    wait_user_int("dave", "quota_used", ucred + 3);
    assert_int_equal(user_int("dave", "tier_quota_used"), utier + 3);
    assert_int_equal(key_int(d2.id, "quota_used", false), cred2 + 3);
    kt_key_cleanup(&d1);
    kt_key_cleanup(&d2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_keys_of_a_user_share_its_tier_quota),
        cmocka_unit_test(test_user_credits_are_shared_and_the_stricter_limit_decides),
        cmocka_unit_test(test_a_kill_under_load_loses_at_most_a_second_and_never_charges_twice),
    };

    return cmocka_run_group_tests_name("integration_test_tier_quota", tests, setup, teardown);
}
