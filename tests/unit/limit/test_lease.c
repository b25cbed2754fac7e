/* tests/unit/limit/test_lease.c - src/limit/lease.c through keygate/lease.h.
 *
 * The lease accounting of shared rate limits: the lease size, tokens spent
 * locally and refilled ahead of need, waiters served in order, the
 * denied-until cache, failures and deadlines, and a simulation of three
 * gateways sharing one GCRA bucket (the "store" is kg_gcra_take, stepped
 * by a fake clock) that checks the bound docs/scale-out.md states:
 * allowed <= burst + rate * T + 1 + N * lease. No sleeping: time is passed in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "keygate/lease.h"

#define MS 1000LL
#define S 1000000LL

static struct kg_gcra
rate(int64_t count, int64_t period_s, int64_t burst)
{
    struct kg_gcra g;
    struct kg_err err = {{0}};

    assert_int_equal(kg_gcra_init(&g, count, period_s, burst, &err), KG_OK);
    return g;
}

static struct kg_lease_table *
table(size_t entries, int64_t lease_us)
{
    struct kg_lease_table *t = NULL;
    struct kg_err err = {{0}};

    assert_int_equal(kg_lease_table_new(entries, lease_us, &t, &err), KG_OK);
    return t;
}

static int done_calls;

static void
count_done(void *arg)
{
    (void)arg;
    done_calls++;
}

static struct kg_gcra_result
state(int64_t remaining, int64_t retry_us)
{
    struct kg_gcra_result r = {.allowed = retry_us == 0,
                               .remaining = remaining,
                               .reset_us = 0,
                               .retry_after_us = retry_us};

    return r;
}

static size_t
list_len(const struct kg_limit_wait *w)
{
    size_t n = 0;

    for (; w != NULL; w = w->next)
        n++;
    return n;
}

static void
test_the_lease_is_ten_ms_worth_of_the_stricter_rate_within_one_and_the_burst(void **state_)
{
    struct kg_gcra slow = rate(10, 1, 10), fast = rate(10000, 1, 0), tiny = rate(10000, 1, 5);

    (void)state_;
    assert_int_equal(kg_lease_size(&slow, NULL, 10 * MS), 1);   /* 0.1 rounds up to 1 */
    assert_int_equal(kg_lease_size(&fast, NULL, 10 * MS), 100); /* 10 ms of 10000/s */
    assert_int_equal(kg_lease_size(&tiny, NULL, 10 * MS), 5);   /* never above the burst */
    assert_int_equal(kg_lease_size(&fast, &slow, 10 * MS), 1);  /* the stricter limit */
    assert_int_equal(kg_lease_size(NULL, &fast, 10 * MS), 100);
    assert_int_equal(kg_lease_size(&fast, NULL, 0), 0); /* exact mode */
    assert_int_equal(kg_lease_size(NULL, NULL, 10 * MS), 0);
}

static void
test_held_tokens_are_spent_here_and_refilled_when_half_are_gone(void **state_)
{
    struct kg_gcra g = rate(1000, 1, 100);
    struct kg_lease_table *t = table(64, 10 * MS); /* 10 tokens */
    struct kg_limit_req rq = {.key_id = "key_a", .key_rate = &g};
    struct kg_lease *l = kg_lease_get(t, &rq, S, true);
    struct kg_gcra_result st = state(80, 0);
    struct kg_limit_wait *done = NULL;
    struct kg_limit_verdict v;

    (void)state_;
    assert_non_null(l);
    assert_int_equal(l->size, 10);
    /* Nothing held yet: the store must be asked, and a refill is wanted. */
    assert_int_equal(kg_lease_take(l, S, true, &v), KG_LEASE_EMPTY);
    assert_true(kg_lease_wants_refill(l));
    assert_int_equal(kg_lease_ask(l), 10);
    l->inflight = true; /* asked: no second refill meanwhile */
    assert_false(kg_lease_wants_refill(l));
    l->inflight = false;
    kg_lease_granted(l, 10, &st, NULL, S, &done);
    assert_null(done);
    assert_int_equal(l->tokens, 10);
    /* Five spent here, without asking: no refill wanted until half are gone. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(kg_lease_take(l, S + i, true, &v), KG_LEASE_TOKEN);
        assert_true(v.allowed);
        assert_true(v.has_key);
        assert_false(kg_lease_wants_refill(l));
    }
    assert_int_equal(kg_lease_take(l, S + 5, true, &v), KG_LEASE_TOKEN);
    assert_int_equal(l->tokens, 5);
    /* Ahead of need: half gone, asks for what tops it up again. */
    assert_true(kg_lease_wants_refill(l));
    assert_int_equal(kg_lease_ask(l), 5);
    /* The headers count held tokens as still to come. */
    assert_int_equal(v.key.remaining, 80 + 5);
    /* Reading spends nothing. */
    assert_int_equal(kg_lease_take(l, S + 6, false, &v), KG_LEASE_TOKEN);
    assert_int_equal(l->tokens, 5);
    kg_lease_table_free(t);
}

static void
test_a_grant_serves_waiters_in_order_and_holds_the_rest(void **state_)
{
    struct kg_gcra g = rate(1000, 1, 100);
    struct kg_lease_table *t = table(64, 2 * MS); /* 2 tokens */
    struct kg_limit_req rq = {.key_id = "key_b", .key_rate = &g};
    struct kg_lease *l = kg_lease_get(t, &rq, S, true);
    struct kg_limit_wait w[3];
    struct kg_limit_wait *done = NULL;
    struct kg_gcra_result st = state(50, 0);

    (void)state_;
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 3; i++)
        kg_lease_add_waiter(l, &w[i], S + 20 * MS);
    assert_true(kg_lease_wants_refill(l));
    assert_int_equal(kg_lease_ask(l), 2 + 3); /* the lease and one per waiter */
    kg_lease_granted(l, 5, &st, NULL, S, &done);
    assert_int_equal(list_len(done), 3);
    assert_ptr_equal(done, &w[0]);
    assert_ptr_equal(done->next, &w[1]);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w[i].answer, KG_LIMIT_DONE);
        assert_true(w[i].verdict.allowed);
    }
    assert_int_equal(l->tokens, 2);
    assert_null(l->waiters);
    kg_lease_table_free(t);
}

static void
test_an_exhausted_key_is_refused_here_until_the_store_would_grant_again(void **state_)
{
    struct kg_gcra g = rate(10, 1, 10);
    struct kg_lease_table *t = table(64, 10 * MS);
    struct kg_limit_req rq = {.key_id = "key_c", .key_rate = &g};
    struct kg_lease *l = kg_lease_get(t, &rq, S, true);
    struct kg_limit_wait w = {0};
    struct kg_limit_wait *done = NULL;
    struct kg_gcra_result st = state(0, 80 * MS);
    struct kg_limit_verdict v;

    (void)state_;
    kg_lease_add_waiter(l, &w, S + 20 * MS);
    kg_lease_granted(l, 0, &st, NULL, S, &done);
    /* The waiter is refused with the store's wait. */
    assert_ptr_equal(done, &w);
    assert_int_equal(w.answer, KG_LIMIT_DONE);
    assert_false(w.verdict.allowed);
    assert_int_equal(w.verdict.retry_after_us, 80 * MS);
    /* A flood meanwhile never reaches the store. */
    for (int64_t now = S; now < S + 80 * MS; now += MS) {
        assert_int_equal(kg_lease_take(l, now, true, &v), KG_LEASE_DENIED);
        assert_false(v.allowed);
        assert_false(v.key.allowed);
        assert_int_equal(v.key.remaining, 0);
        assert_true(v.key.retry_after_us > 0 && v.key.retry_after_us <= 80 * MS);
        assert_false(kg_lease_wants_refill(l));
    }
    /* Once it is over, the store is asked again. */
    assert_int_equal(kg_lease_take(l, S + 80 * MS, true, &v), KG_LEASE_EMPTY);
    kg_lease_table_free(t);
}

static void
test_waiters_a_grant_fell_short_of_wait_for_another_refill_when_the_store_has_more(void **state_)
{
    struct kg_gcra g = rate(1000, 1, 100);
    struct kg_lease_table *t = table(64, 0);
    struct kg_limit_req rq = {.key_id = "key_d", .key_rate = &g};
    struct kg_lease *l = kg_lease_get(t, &rq, S, true);
    struct kg_limit_wait w[3];
    struct kg_limit_wait *done = NULL;
    struct kg_gcra_result st = state(90, 0);

    (void)state_;
    memset(w, 0, sizeof(w));
    kg_lease_add_waiter(l, &w[0], S + 20 * MS);
    assert_int_equal(kg_lease_ask(l), 1); /* exact mode: one per waiter */
    /* Two more joined after the refill was asked for one. */
    kg_lease_add_waiter(l, &w[1], S + 20 * MS);
    kg_lease_add_waiter(l, &w[2], S + 20 * MS);
    kg_lease_granted(l, 1, &st, NULL, S, &done);
    assert_int_equal(list_len(done), 1);
    assert_ptr_equal(done, &w[0]);
    /* The store said nothing about waiting: no refusal, another refill. */
    assert_int_equal(l->denied_until_us, 0);
    assert_int_equal(list_len(l->waiters), 2);
    assert_true(kg_lease_wants_refill(l));
    assert_int_equal(kg_lease_ask(l), 2);
    kg_lease_table_free(t);
}

static void
test_a_failure_answers_every_waiter_down_and_keeps_held_tokens(void **state_)
{
    struct kg_gcra g = rate(1000, 1, 100);
    struct kg_lease_table *t = table(64, 10 * MS);
    struct kg_limit_req rq = {.key_id = "key_e", .key_rate = &g};
    struct kg_lease *l = kg_lease_get(t, &rq, S, true);
    struct kg_limit_wait w[2];
    struct kg_limit_wait *done = NULL;
    struct kg_gcra_result st = state(50, 0);

    (void)state_;
    memset(w, 0, sizeof(w));
    kg_lease_granted(l, 3, &st, NULL, S, &done);
    l->tokens = 0; /* spent, then two requests wait */
    kg_lease_add_waiter(l, &w[0], S + 20 * MS);
    kg_lease_add_waiter(l, &w[1], S + 20 * MS);
    l->tokens = 2; /* as if a grant had been held back */
    kg_lease_failed(l, &done);
    assert_int_equal(list_len(done), 2);
    assert_int_equal(w[0].answer, KG_LIMIT_DOWN);
    assert_int_equal(w[1].answer, KG_LIMIT_DOWN);
    assert_int_equal(l->tokens, 2);
    for (struct kg_limit_wait *p = done; p != NULL;) {
        struct kg_limit_wait *next = p->next;

        p->done = count_done;
        p->done(p->arg);
        p = next;
    }
    assert_int_equal(done_calls, 2);
    done_calls = 0;
    kg_lease_table_free(t);
}

static void
test_waiters_past_their_deadline_are_answered_down(void **state_)
{
    struct kg_gcra g = rate(1000, 1, 100);
    struct kg_lease_table *t = table(64, 10 * MS);
    struct kg_limit_req rq = {.key_id = "key_f", .key_rate = &g};
    struct kg_lease *l = kg_lease_get(t, &rq, S, true);
    struct kg_limit_wait w[3];
    struct kg_limit_wait *done = NULL;

    (void)state_;
    memset(w, 0, sizeof(w));
    kg_lease_add_waiter(l, &w[0], S + 20 * MS);
    kg_lease_add_waiter(l, &w[1], S + 30 * MS);
    kg_lease_add_waiter(l, &w[2], S + 40 * MS);
    assert_int_equal(kg_lease_expire(l, S + 10 * MS, &done), S + 20 * MS);
    assert_null(done);
    assert_int_equal(kg_lease_expire(l, S + 30 * MS, &done), S + 40 * MS);
    assert_int_equal(list_len(done), 2);
    assert_int_equal(w[0].answer, KG_LIMIT_DOWN);
    assert_int_equal(w[1].answer, KG_LIMIT_DOWN);
    assert_ptr_equal(l->waiters, &w[2]);
    assert_ptr_equal(l->waiters_tail, &w[2]);
    assert_int_equal(kg_lease_expire(l, S + 40 * MS, &done), INT64_MAX);
    assert_null(l->waiters);
    kg_lease_table_free(t);
}

static void
test_a_changed_rate_starts_a_fresh_lease_and_tier_and_key_are_one_lease(void **state_)
{
    struct kg_gcra a = rate(1000, 1, 100), b = rate(10, 1, 10), tier = rate(500, 1, 50);
    struct kg_lease_table *t = table(64, 10 * MS);
    struct kg_limit_req rq = {.key_id = "key_g", .key_rate = &a};
    struct kg_limit_req both = {
        .key_id = "key_g", .key_rate = &a, .user_id = "usr_1", .tier_rate = &tier};
    struct kg_lease *l = kg_lease_get(t, &rq, S, true);
    struct kg_gcra_result st = state(10, 0);
    struct kg_limit_wait *done = NULL;
    uint64_t key_only;

    (void)state_;
    kg_lease_granted(l, 10, &st, NULL, S, &done);
    assert_int_equal(l->tokens, 10);
    rq.key_rate = &b;
    assert_ptr_equal(kg_lease_get(t, &rq, S, true), l);
    assert_int_equal(l->tokens, 0); /* taken under the old rate: dropped */
    assert_int_equal(l->size, 1);
    /* With a tier it is another lease (both buckets at once). Compared by
     * id: when both land in one set, the idle key-only lease (no tokens
     * left) is the one the new lease replaces, in the same entry. */
    key_only = l->id;
    assert_true(kg_lease_get(t, &both, S, true)->id != key_only);
    assert_int_equal(kg_lease_get(t, &both, S, true)->size, 5);
    assert_null(
        kg_lease_get(t, &(struct kg_limit_req){.key_id = "nope", .key_rate = &a}, S, false));
    kg_lease_table_free(t);
}

static void
test_a_lease_with_a_refill_or_a_waiter_is_never_evicted(void **state_)
{
    struct kg_gcra g = rate(1000, 1, 100);
    struct kg_lease_table *t = table(1, 10 * MS); /* one set of 8 */
    struct kg_lease *held[8];
    char ids[16][16];
    int n = 0;

    (void)state_;
    for (int i = 0; i < 8; i++) {
        struct kg_limit_req rq = {.key_id = ids[i], .key_rate = &g};

        snprintf(ids[i], sizeof(ids[i]), "key_%d", i);
        held[i] = kg_lease_get(t, &rq, S, true);
        assert_non_null(held[i]);
        held[i]->inflight = true;
    }
    for (int i = 8; i < 16; i++) {
        struct kg_limit_req rq = {.key_id = ids[i], .key_rate = &g};

        snprintf(ids[i], sizeof(ids[i]), "key_%d", i);
        if (kg_lease_get(t, &rq, S, true) != NULL)
            n++;
    }
    assert_int_equal(n, 0); /* no room, and nobody's refill lost */
    for (int i = 0; i < 8; i++)
        assert_int_equal(held[i]->inflight, true);
    held[3]->inflight = false;
    {
        struct kg_limit_req rq = {.key_id = "key_new", .key_rate = &g};

        assert_ptr_equal(kg_lease_get(t, &rq, S, true), held[3]);
    }
    kg_lease_table_free(t);
}

/* The store as the Redis script does it: as many of n as the bucket has
 * room for; *retry: until one more would pass. */
static int64_t
store_grant(const struct kg_gcra *g, int64_t *tat, int64_t n, int64_t now_us,
            struct kg_gcra_result *st)
{
    int64_t k = 0;
    struct kg_gcra_result r;

    while (k < n) {
        int64_t next = kg_gcra_take(g, *tat, now_us, &r);

        if (!r.allowed)
            break;
        *tat = next;
        k++;
    }
    kg_gcra_peek(g, *tat, now_us, st);
    return k;
}

/* Three gateways, one bucket, requests arriving every `every_us` at each:
 * a request that finds its lease empty gets its refill answered latency_us
 * later (the others go on meanwhile). */
static void
simulate(int64_t lease_us, int64_t every_us, int64_t latency_us, int64_t seconds)
{
    struct kg_gcra g = rate(10, 1, 10);
    struct kg_lease_table *gw[3];
    struct kg_limit_req rq = {.key_id = "key_sim", .key_rate = &g};
    struct {
        struct kg_lease *l;
        int64_t due;
        struct kg_limit_wait w;
        bool waiting;
    } s[3];
    int64_t tat = 0, allowed = 0, end = S + seconds * S, t0 = S, l_size = 0;
    double bound;

    memset(s, 0, sizeof(s));
    for (int i = 0; i < 3; i++) {
        gw[i] = table(16, lease_us);
        s[i].l = kg_lease_get(gw[i], &rq, S, true);
        l_size = s[i].l->size;
    }
    for (int64_t now = t0; now < end; now += every_us) {
        for (int i = 0; i < 3; i++) {
            struct kg_lease *l = s[i].l;
            struct kg_limit_verdict v;
            struct kg_limit_wait *done = NULL;

            if ((l->inflight) && now >= s[i].due) {
                struct kg_gcra_result st;
                int64_t k = store_grant(&g, &tat, l->asked, now, &st);

                l->inflight = false;
                kg_lease_granted(l, k, &st, NULL, now, &done);
                if (done != NULL && done->verdict.allowed)
                    allowed++;
                if (done != NULL)
                    s[i].waiting = false;
            }
            if (!s[i].waiting) {
                switch (kg_lease_take(l, now, true, &v)) {
                case KG_LEASE_TOKEN:
                    allowed++;
                    break;
                case KG_LEASE_DENIED:
                    break;
                case KG_LEASE_EMPTY:
                    memset(&s[i].w, 0, sizeof(s[i].w));
                    kg_lease_add_waiter(l, &s[i].w, now + 20 * MS);
                    s[i].waiting = true;
                    break;
                }
            }
            if (kg_lease_wants_refill(l)) {
                l->asked = kg_lease_ask(l);
                l->inflight = true;
                s[i].due = now + latency_us;
            }
        }
    }
    bound = 10 + 10.0 * (double)(end - t0) / S;
    printf("lease %lld us (%lld tokens), a request every %lld us per gateway, store %lld us away: "
           "%lld allowed in %lld s; bound %.0f + 1 + 3 * %lld\n",
           (long long)lease_us, (long long)l_size, (long long)every_us, (long long)latency_us,
           (long long)allowed, (long long)seconds, bound, (long long)l_size);
    assert_true((double)allowed <= bound + 1 + 3.0 * (double)l_size);
    assert_true((double)allowed >= 0.9 * bound);
    for (int i = 0; i < 3; i++)
        kg_lease_table_free(gw[i]);
}

static void
test_three_gateways_together_stay_within_the_bound_and_near_it(void **state_)
{
    (void)state_;
    simulate(10 * MS, 1 * MS, 1 * MS, 5);   /* the default lease, a fast store */
    simulate(0, 1 * MS, 1 * MS, 5);         /* exact */
    simulate(200 * MS, 2 * MS, 5 * MS, 10); /* 2 tokens, a slower store */
    simulate(1000 * MS, 500, 3 * MS, 10);   /* a second's lease: 10 tokens per gateway */
}

static void
test_sizes_are_checked(void **state_)
{
    struct kg_lease_table *t = NULL;
    struct kg_err err = {{0}};

    (void)state_;
    assert_int_equal(kg_lease_table_new(0, 10 * MS, &t, &err), KG_EINVAL);
    assert_int_equal(kg_lease_table_new(16, -1, &t, &err), KG_EINVAL);
    assert_int_equal(kg_lease_table_new(16, 61 * S, &t, &err), KG_EINVAL);
    assert_null(t);
    kg_lease_table_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_the_lease_is_ten_ms_worth_of_the_stricter_rate_within_one_and_the_burst),
        cmocka_unit_test(test_held_tokens_are_spent_here_and_refilled_when_half_are_gone),
        cmocka_unit_test(test_a_grant_serves_waiters_in_order_and_holds_the_rest),
        cmocka_unit_test(test_an_exhausted_key_is_refused_here_until_the_store_would_grant_again),
        cmocka_unit_test(
            test_waiters_a_grant_fell_short_of_wait_for_another_refill_when_the_store_has_more),
        cmocka_unit_test(test_a_failure_answers_every_waiter_down_and_keeps_held_tokens),
        cmocka_unit_test(test_waiters_past_their_deadline_are_answered_down),
        cmocka_unit_test(test_a_changed_rate_starts_a_fresh_lease_and_tier_and_key_are_one_lease),
        cmocka_unit_test(test_a_lease_with_a_refill_or_a_waiter_is_never_evicted),
        cmocka_unit_test(test_three_gateways_together_stay_within_the_bound_and_near_it),
        cmocka_unit_test(test_sizes_are_checked),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
