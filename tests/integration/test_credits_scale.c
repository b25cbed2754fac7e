/* integration/test_credits_scale.c - CTest: integration_test_credits_scale.
 *
 * A key's credits across three keygate instances on one PostgreSQL store
 * (issue 15, item 3), as behind a load balancer: a private server
 * (tests/helpers/pgserver.c), one secret_file, three instances on loopback
 * ports, a key with 100 credits. Two worlds, one database each:
 * - credits_mode shared (the default): an instance learns at its next
 *   flush what the others spent (the flush reads the totals back) and
 *   refuses past the limit from then on; under parallel load through all
 *   three the accepted count is within the bound docs/scale-out.md states;
 * - credits_mode strict: under the same load the accepted count never
 *   passes 100, and is at least the stated floor (a broken reservation must
 *   not deny everything).
 * In both, the credits stored equal the 2xx answers: nothing lost, nothing
 * doubled. Load is bounded in time and talks to 127.0.0.1 only.
 *
 * Skipped (77) when PostgreSQL is not installed, failed then with
 * KEYGATE_REQUIRE_POSTGRES=1 (CI).
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
#include <time.h>
#include <unistd.h>

#include "helpers/cluster.h"
#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/pgserver.h"
#include "helpers/upstream.h"

#define N 3
#define LIMIT 100
#define THREADS 4 /* clients per instance */
#define LOAD_MS 3000

struct world {
    struct kt_cluster c;
    char db[32];
};

static struct kt_pg *pg;
static atomic_long last_other; /* the last answer neither 200 nor 429 */
static struct world W;
static int dbs;

static long
status_on(int i, const char *key)
{
    struct kt_http_resp r;
    char url[64];
    long st;

    /* Its own URL: kt_daemon_url() writes the daemon's one buffer, which
     * the other client threads of this instance would rewrite meanwhile. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/items", kt_daemon_port(W.c.d[i]));
    kt_http_get_key(url, key, NULL, &r);
    st = r.status;
    kt_http_resp_cleanup(&r);
    return st;
}

/* Three instances on a fresh database; extra: more config lines. */
static int
world_up(const char *extra)
{
    memset(&W, 0, sizeof(W));
    snprintf(W.db, sizeof(W.db), "credits_%d", ++dbs);
    return kt_cluster_up(&W.c, pg, W.db, N, extra);
}

static int
setup_shared(void **state)
{
    (void)state;
    kt_http_global_init();
    return world_up("");
}

static int
setup_strict(void **state)
{
    (void)state;
    kt_http_global_init();
    return world_up("credits_mode strict\n");
}

static int
teardown(void **state)
{
    (void)state;
    kt_cluster_down(&W.c);
    kt_http_global_cleanup();
    return 0;
}

/* A key with LIMIT credits (no refill), made with the CLI. */
static void
make_key(const char *name, struct kt_key *k)
{
    char credits[16];

    snprintf(credits, sizeof(credits), "%d", LIMIT);
    assert_true(kt_daemon_key_cli(W.c.d[0],
                                  (const char *const[]){"keys", "create", "--name", name,
                                                        "--credits", credits, "--json", NULL},
                                  k));
    for (int i = 0; i < N; i++)
        kt_daemon_remember_key(W.c.d[i], k->key);
    /* Known everywhere before the load (GET /health spends nothing): a key
     * an instance has not loaded yet is a 401, not a credit question. */
    for (int i = 0; i < N; i++) {
        long start = kt_mono_ms();
        struct kt_http_resp r;

        for (;;) {
            kt_http_get_key(kt_daemon_url(W.c.d[i], "/health"), k->key, NULL, &r);
            if (r.status == 200 || kt_mono_ms() - start > 3000)
                break;
            kt_http_resp_cleanup(&r);
            usleep(20000);
        }
        assert_int_equal(r.status, 200);
        kt_http_resp_cleanup(&r);
    }
}

static long long
stored_credits(const char *id)
{
    char sql[160];

    snprintf(sql, sizeof(sql), "SELECT quota_used FROM keys WHERE id = '%s'", id);
    return kt_pg_int(pg, W.db, sql);
}

/* The stored count once it stops moving (every instance flushes once a
 * second): equal on two reads 1.5 s apart, within 10 s. */
static long long
settled_credits(const char *id)
{
    long long a = stored_credits(id), b;

    for (int t = 0; t < 7; t++) {
        usleep(1500000);
        b = stored_credits(id);
        if (a == b)
            return b;
        a = b;
    }
    return a;
}

struct client {
    int instance;
    const char *key;
    long deadline;
    atomic_int *ok, *refused, *other;
};

static void *
client_run(void *arg)
{
    struct client *c = arg;

    while (kt_mono_ms() < c->deadline) {
        long st = status_on(c->instance, c->key);

        if (st == 200)
            atomic_fetch_add(c->ok, 1);
        else if (st == 429)
            atomic_fetch_add(c->refused, 1);
        else {
            atomic_fetch_add(c->other, 1);
            atomic_store(&last_other, st);
        }
    }
    return NULL;
}

/* THREADS clients per instance, all on key, for LOAD_MS; the 2xx count. */
static int
parallel_load(const char *key, int *refused, int *unknown)
{
    pthread_t t[N * THREADS];
    struct client c[N * THREADS];
    atomic_int ok = 0, no = 0, other = 0;
    long deadline = kt_mono_ms() + LOAD_MS;

    for (int i = 0; i < N * THREADS; i++) {
        c[i] = (struct client){.instance = i % N,
                               .key = key,
                               .deadline = deadline,
                               .ok = &ok,
                               .refused = &no,
                               .other = &other};
        assert_int_equal(pthread_create(&t[i], NULL, client_run, &c[i]), 0);
    }
    for (int i = 0; i < N * THREADS; i++)
        pthread_join(t[i], NULL);
    /* Every answer is a 200 or the exhausted key's 429. The "unanswered"
     * (status 0) seen earlier were this test's own race on the daemon's URL
     * buffer (fixed in status_on): none since; a client-side failure on a
     * loaded machine, charged or not, is still counted apart, at most 1 %. */
    *unknown = atomic_load(&other);
    if (*unknown * 100 > atomic_load(&ok) + atomic_load(&no) + *unknown || last_other > 0)
        fail_msg("%d answers were neither 200 nor 429 (the last: %ld)", *unknown,
                 atomic_load(&last_other));
    *refused = atomic_load(&no);
    return atomic_load(&ok);
}

/* Shared mode: instance B learns at its own next flush what A spent, and
 * then refuses past the limit. Before issue 15's read-back B knew only its
 * own charges and would let 99 more through. */
static void
test_shared_an_instance_learns_what_the_others_spent_at_its_next_flush(void **state)
{
    struct kt_key k = {0};
    int more = 0, extra = 0;

    (void)state;
    make_key("learnt", &k);
    for (int i = 0; i < 60; i++)
        assert_int_equal(status_on(0, k.key), 200);
    assert_int_equal(settled_credits(k.id), 60); /* A flushed */
    assert_int_equal(status_on(1, k.key), 200);
    assert_int_equal(settled_credits(k.id), 61); /* B flushed and read 61 back */
    while (more < LIMIT && status_on(1, k.key) == 200)
        more++;
    assert_int_equal(more, LIMIT - 61);
    /* C knows what was flushed when it last flushed the key: the first
     * request after its load, and one after its first flush (which may
     * have run before B's), can still pass; after that it knows. */
    while (extra < 5 && status_on(2, k.key) == 200) {
        extra++;
        settled_credits(k.id); /* C's flush, and B's */
    }
    assert_true(extra <= 2);
    assert_int_equal(settled_credits(k.id), LIMIT + extra);
    print_message("shared, sequential: B let %d through after learning, C %d past the limit\n",
                  more, extra);
    kt_key_cleanup(&k);
}

/* Shared mode under parallel load through all three: within the bound of
 * docs/scale-out.md (N x the limit, plus the requests in flight at once:
 * THREADS per instance), the whole limit usable, and the store exact. */
static void
test_shared_parallel_load_stays_within_the_stated_bound(void **state)
{
    struct kt_key k = {0};
    int ok, refused, unknown;
    long long stored;

    (void)state;
    make_key("shared-load", &k);
    ok = parallel_load(k.key, &refused, &unknown);
    stored = settled_credits(k.id);
    print_message("shared: %d accepted, %d refused, %d unanswered, %lld stored (limit %d, %d"
                  " instances)\n",
                  ok, refused, unknown, stored, LIMIT, N);
    assert_true(ok + unknown >= LIMIT);
    assert_true(stored <= N * LIMIT + N * THREADS);
    assert_true(refused > 0);
    /* Each 2xx charged once: unanswered ones only may be either. */
    assert_true(stored >= ok && stored <= ok + unknown);
    kt_key_cleanup(&k);
}

/* Strict mode under the same load: never more than the limit, at least the
 * floor docs/scale-out.md states (limit - N x 1.5 blocks: blocks of 6 for
 * 100 credits), and the store exact. */
static void
test_strict_parallel_load_never_passes_the_limit(void **state)
{
    struct kt_key k = {0};
    int ok, refused, unknown;
    long long stored;

    (void)state;
    make_key("strict-load", &k);
    ok = parallel_load(k.key, &refused, &unknown);
    stored = settled_credits(k.id);
    print_message("strict: %d accepted, %d refused, %d unanswered, %lld stored (limit %d, %d"
                  " instances)\n",
                  ok, refused, unknown, stored, LIMIT, N);
    assert_true(stored <= LIMIT);
    assert_true(ok >= LIMIT - N * 9 - unknown);
    assert_true(stored >= ok && stored <= ok + unknown);
    /* Every instance is out: the store handed out all there was. */
    for (int i = 0; i < N; i++)
        if (ok == LIMIT)
            assert_int_equal(status_on(i, k.key), 429);
    kt_key_cleanup(&k);
}

/* Strict mode, sequential: a key spent through one instance, then the
 * rest through the others: exactly the limit in all, once the first's
 * idle block went back (IDLE 10 s) - or at once when it is stopped, which
 * hands its blocks back. */
static void
test_strict_a_stopped_instance_hands_its_block_back(void **state)
{
    struct kt_key k = {0};
    int total = 0, n;
    long start;

    (void)state;
    make_key("strict-seq", &k);
    /* The first request of an instance asks for its block (429 meanwhile). */
    start = kt_mono_ms();
    while (total < 50 && kt_mono_ms() - start < 5000) {
        if (status_on(0, k.key) == 200)
            total++;
    }
    assert_int_equal(total, 50);
    assert_int_equal(kt_daemon_stop(W.c.d[0]), 0);
    start = kt_mono_ms();
    while (kt_mono_ms() - start < 5000) {
        n = 0;
        for (int i = 1; i < N; i++)
            if (status_on(i, k.key) == 200)
                n++;
        total += n;
        if (total == LIMIT)
            break;
    }
    assert_int_equal(total, LIMIT);
    assert_int_equal(settled_credits(k.id), LIMIT);
    assert_int_equal(status_on(1, k.key), 429);
    assert_int_equal(status_on(2, k.key), 429);
    kt_key_cleanup(&k);
}

int
main(void)
{
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_shared_an_instance_learns_what_the_others_spent_at_its_next_flush),
        cmocka_unit_test(test_shared_parallel_load_stays_within_the_stated_bound),
    };
    const struct CMUnitTest strict[] = {
        cmocka_unit_test(test_strict_parallel_load_never_passes_the_limit),
        cmocka_unit_test(test_strict_a_stopped_instance_hands_its_block_back),
    };
    int rc = kt_pg_start(&pg);
    int failed;

    if (rc != 0)
        return rc == KT_PG_SKIP ? KT_PG_SKIP : 1;
    failed = cmocka_run_group_tests_name("credits_mode shared", shared, setup_shared, teardown);
    failed += cmocka_run_group_tests_name("credits_mode strict", strict, setup_strict, teardown);
    kt_pg_free(pg);
    return failed;
}
