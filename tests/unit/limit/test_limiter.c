/* tests/unit/limit/test_limiter.c - src/limit/limiter.c through keygate/limiter.h.
 *
 * Key and tier buckets composed, the bounded table, and several threads
 * taking from one key at once against the real clock (the bound checked is
 * burst + elapsed * rate, which no scheduling can make flaky). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "keygate/limiter.h"

#define S 1000000LL

static struct kg_gcra
rate(int64_t count, int64_t period_s, int64_t burst)
{
    struct kg_gcra g;
    struct kg_err err = {{0}};

    assert_int_equal(kg_gcra_init(&g, count, period_s, burst, &err), KG_OK);
    return g;
}

static struct kg_limiter *
local(size_t buckets)
{
    struct kg_limiter *lim = NULL;
    struct kg_err err = {{0}};

    assert_int_equal(kg_limiter_new_local(buckets, &lim, &err), KG_OK);
    return lim;
}

static int
take_n(struct kg_limiter *lim, const struct kg_limit_req *rq, int64_t now, int n)
{
    struct kg_limit_verdict v;
    int ok = 0;

    for (int i = 0; i < n; i++) {
        kg_limiter_check(lim, rq, now, true, &v);
        ok += v.allowed;
    }
    return ok;
}

static void
test_a_key_limit_allows_its_burst_and_tells_how_long_to_wait(void **state)
{
    struct kg_limiter *lim = local(64);
    struct kg_gcra g = rate(5, 1, 5);
    struct kg_limit_req rq = {.key_id = "key_a", .key_rate = &g, .user_id = "usr_a"};
    struct kg_limit_verdict v;

    (void)state;
    assert_int_equal(take_n(lim, &rq, 100 * S, 5), 5);
    kg_limiter_check(lim, &rq, 100 * S, true, &v);
    assert_false(v.allowed);
    assert_true(v.has_key);
    assert_false(v.has_tier);
    assert_int_equal(v.binding, KG_LIMIT_KEY);
    assert_int_equal(v.retry_after_us, 200000);
    kg_limiter_free(lim);
}

static void
test_no_limit_at_all_allows_everything(void **state)
{
    struct kg_limiter *lim = local(64);
    struct kg_limit_req rq = {.key_id = "key_a", .user_id = "usr_a"};

    (void)state;
    assert_int_equal(take_n(lim, &rq, 0, 1000), 1000);
    kg_limiter_free(lim);
}

static void
test_two_keys_of_one_user_share_the_tier_bucket(void **state)
{
    struct kg_limiter *lim = local(64);
    struct kg_gcra tier = rate(6, 60, 6);
    struct kg_limit_req a = {.key_id = "key_a", .user_id = "usr_1", .tier_rate = &tier};
    struct kg_limit_req b = {.key_id = "key_b", .user_id = "usr_1", .tier_rate = &tier};
    struct kg_limit_req other = {.key_id = "key_c", .user_id = "usr_2", .tier_rate = &tier};

    (void)state;
    assert_int_equal(take_n(lim, &a, S, 4), 4);
    assert_int_equal(take_n(lim, &b, S, 4), 2);
    assert_int_equal(take_n(lim, &other, S, 10), 6);
    kg_limiter_free(lim);
}

static void
test_the_stricter_of_key_and_tier_decides_and_a_refusal_spends_neither(void **state)
{
    struct kg_limiter *lim = local(64);
    struct kg_gcra key = rate(10, 1, 10), tier = rate(3, 60, 3);
    struct kg_limit_req rq = {
        .key_id = "key_a", .key_rate = &key, .user_id = "usr_1", .tier_rate = &tier};
    struct kg_limit_verdict v;

    (void)state;
    assert_int_equal(take_n(lim, &rq, S, 3), 3);
    kg_limiter_check(lim, &rq, S, true, &v);
    assert_false(v.allowed);
    assert_int_equal(v.binding, KG_LIMIT_USER);
    assert_int_equal(v.retry_after_us, 20 * S);
    /* The refused request was given back to the key: 7 left, not 6. */
    assert_true(v.key.allowed);
    assert_int_equal(v.key.remaining, 7);
    /* A key stricter than its tier decides the other way round. */
    {
        struct kg_gcra k2 = rate(1, 60, 1), t2 = rate(100, 1, 100);
        struct kg_limit_req r2 = {
            .key_id = "key_b", .key_rate = &k2, .user_id = "usr_2", .tier_rate = &t2};

        assert_int_equal(take_n(lim, &r2, S, 5), 1);
        kg_limiter_check(lim, &r2, S, false, &v);
        assert_false(v.allowed);
        assert_int_equal(v.binding, KG_LIMIT_KEY);
        assert_int_equal(v.tier.remaining, 99); /* only one reached the tier */
    }
    kg_limiter_free(lim);
}

static void
test_reading_the_state_spends_nothing(void **state)
{
    struct kg_limiter *lim = local(64);
    struct kg_gcra g = rate(2, 1, 2);
    struct kg_limit_req rq = {.key_id = "key_a", .key_rate = &g, .user_id = "usr_a"};
    struct kg_limit_verdict v;

    (void)state;
    for (int i = 0; i < 10; i++) {
        kg_limiter_check(lim, &rq, S, false, &v);
        assert_true(v.allowed);
        assert_int_equal(v.key.remaining, 2); /* both would still pass */
    }
    assert_int_equal(take_n(lim, &rq, S, 10), 2);
    kg_limiter_free(lim);
}

static void
test_a_key_and_a_user_with_the_same_id_are_different_buckets(void **state)
{
    struct kg_limiter *lim = local(64);
    struct kg_gcra g = rate(1, 60, 1);
    struct kg_limit_req rq = {.key_id = "same", .key_rate = &g, .user_id = "same", .tier_rate = &g};

    (void)state;
    assert_int_equal(take_n(lim, &rq, S, 3), 1);
    kg_limiter_free(lim);
}

static void
test_a_full_table_keeps_every_busy_bucket_it_has_room_for(void **state)
{
    /* 65,536 slots for 256 keys: the chance that one 8-way set gets more than
     * 8 of them (and evicts one) is below 1e-15, so the check below is exact
     * whatever random hash key the limiter draws. */
    struct kg_limiter *lim = local(65536);
    struct kg_gcra g = rate(1, 3600, 1);
    char id[32];
    int refused = 0;

    (void)state;
    for (int i = 0; i < 256; i++) {
        struct kg_limit_req rq = {.key_id = id, .key_rate = &g};

        snprintf(id, sizeof(id), "key_%d", i);
        assert_int_equal(take_n(lim, &rq, S, 1), 1);
    }
    /* Far from full: no set overflowed, nothing was evicted. */
    for (int i = 0; i < 256; i++) {
        struct kg_limit_req rq = {.key_id = id, .key_rate = &g};

        snprintf(id, sizeof(id), "key_%d", i);
        refused += take_n(lim, &rq, 2 * S, 1) == 0;
    }
    assert_int_equal(refused, 256);
    /* Far more buckets than slots: memory stays bounded, and it still works. */
    for (int i = 0; i < 200000; i++) {
        struct kg_limit_req rq = {.key_id = id, .key_rate = &g};

        snprintf(id, sizeof(id), "many_%d", i);
        assert_int_equal(take_n(lim, &rq, 3 * S, 1), 1);
    }
    kg_limiter_free(lim);
}

/* ---- several threads on one key ---- */

#define THREADS 8
#define TAKES 20000

struct hammer {
    struct kg_limiter *lim;
    const struct kg_gcra *g;
    atomic_long allowed;
};

static int64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * S + ts.tv_nsec / 1000;
}

static void *
hammer_run(void *arg)
{
    struct hammer *h = arg;
    struct kg_limit_req rq = {.key_id = "key_hot", .key_rate = h->g, .user_id = "usr_hot"};
    struct kg_limit_verdict v;

    for (int i = 0; i < TAKES; i++) {
        kg_limiter_check(h->lim, &rq, now_us(), true, &v);
        if (v.allowed)
            atomic_fetch_add(&h->allowed, 1);
    }
    return NULL;
}

static void
test_threads_taking_from_one_key_never_exceed_burst_plus_elapsed_rate(void **state)
{
    struct kg_gcra g = rate(1000, 1, 50);
    struct hammer h = {.lim = local(64), .g = &g};
    pthread_t th[THREADS];
    int64_t start, elapsed;
    long bound;

    (void)state;
    atomic_init(&h.allowed, 0);
    start = now_us();
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    elapsed = now_us() - start;
    /* One request per millisecond, 50 at once: every allowed request fits. */
    bound = 50 + (long)(elapsed / 1000) + 1;
    assert_true(atomic_load(&h.allowed) <= bound);
    assert_true(atomic_load(&h.allowed) >= 50);
    kg_limiter_free(h.lim);
}

/* A backend of its own, as a shared store would plug in: the composition of
 * key and tier limits must go through the table only. */
struct fake {
    int takes, spends, refunds, frees;
};

static void
fake_take(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
          int64_t now_us, bool count, struct kg_gcra_result *res)
{
    struct fake *f = impl;

    (void)id;
    f->takes++;
    f->spends += count;
    /* Keys always pass, users never do. */
    kg_gcra_peek(g, scope == KG_LIMIT_KEY ? 0 : INT64_MAX / 4, now_us, res);
}

static void
fake_refund(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
            int64_t now_us)
{
    struct fake *f = impl;

    (void)scope;
    (void)id;
    (void)g;
    (void)now_us;
    f->refunds++;
}

static void
fake_free(void *impl)
{
    ((struct fake *)impl)->frees++;
}

static void
test_another_backend_plugs_in_through_the_function_table(void **state)
{
    static const struct kg_limiter_ops ops = {
        .take = fake_take, .refund = fake_refund, .free = fake_free};
    struct fake f = {0};
    struct kg_limiter *lim = NULL;
    struct kg_gcra g = rate(5, 1, 5);
    struct kg_limit_req rq = {.key_id = "k", .key_rate = &g, .user_id = "u", .tier_rate = &g};
    struct kg_limit_verdict v;

    (void)state;
    assert_int_equal(kg_limiter_new(&ops, &f, &lim, NULL), KG_OK);
    kg_limiter_check(lim, &rq, S, true, &v);
    assert_false(v.allowed);
    assert_int_equal(v.binding, KG_LIMIT_USER);
    /* key spent, tier refused, key given back and read again */
    assert_int_equal(f.takes, 3);
    assert_int_equal(f.spends, 2);
    assert_int_equal(f.refunds, 1);
    kg_limiter_free(lim);
    assert_int_equal(f.frees, 1);
}

static void
test_the_table_size_is_checked(void **state)
{
    struct kg_limiter *lim = NULL;
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(kg_limiter_new_local(0, &lim, &err), KG_EINVAL);
    assert_null(lim);
    kg_limiter_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_key_limit_allows_its_burst_and_tells_how_long_to_wait),
        cmocka_unit_test(test_no_limit_at_all_allows_everything),
        cmocka_unit_test(test_two_keys_of_one_user_share_the_tier_bucket),
        cmocka_unit_test(test_the_stricter_of_key_and_tier_decides_and_a_refusal_spends_neither),
        cmocka_unit_test(test_reading_the_state_spends_nothing),
        cmocka_unit_test(test_a_key_and_a_user_with_the_same_id_are_different_buckets),
        cmocka_unit_test(test_a_full_table_keeps_every_busy_bucket_it_has_room_for),
        cmocka_unit_test(test_threads_taking_from_one_key_never_exceed_burst_plus_elapsed_rate),
        cmocka_unit_test(test_another_backend_plugs_in_through_the_function_table),
        cmocka_unit_test(test_the_table_size_is_checked),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
