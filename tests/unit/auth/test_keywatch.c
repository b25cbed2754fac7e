/* tests/unit/auth/test_keywatch.c - src/auth/keywatch.c through
 * keygate/keywatch.h: a key the cache does not know yet is looked up in the
 * store (rate-limited) and the cache brought up to date when it is there,
 * on the caller's thread (recheck) or on the watch's own (ask). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>

#include <sodium.h>
#include <stdbool.h>
#include <string.h>

#include "keygate/keycache.h"
#include "keygate/keywatch.h"
#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "unit/fixture.h"

/* The digest kg_fx_key_rec() gives id: BLAKE2b of the id. */
static void
digest_of(const char *id, unsigned char out[KG_DIGEST_BYTES])
{
    crypto_generichash(out, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL, 0);
}

static void
insert(struct kg_fx_cache *f, const char *id, int64_t revoked_at)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    kg_fx_key_rec(&rec, id, kg_time_now() - 1000);
    rec.revoked_at = revoked_at;
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

static bool
cached(struct kg_fx_cache *f, const unsigned char digest[KG_DIGEST_BYTES])
{
    const struct kg_keysnap *snap = kg_keycache_acquire(f->kc);
    bool found = kg_keysnap_find(snap, digest) != NULL;

    kg_keycache_release(snap);
    return found;
}

static struct kg_keywatch *
watch(struct kg_fx_cache *f)
{
    struct kg_keywatch *w = NULL;
    struct kg_err err = {{0}};

    if (kg_keywatch_new(f->path, f->kc, 10, &w, &err) != KG_OK)
        fail_msg("kg_keywatch_new should succeed: %s", err.msg);
    return w;
}

static void
test_a_key_stored_after_the_load_is_found_and_the_cache_reloaded(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_keywatch *w = watch(f);
    unsigned char d[KG_DIGEST_BYTES];

    digest_of("key_new", d);
    insert(f, "key_new", 0); /* as the CLI would, after the daemon loaded */
    assert_false(cached(f, d));
    assert_true(kg_keywatch_recheck(w, f->st, d, 1000, kg_time_now()));
    assert_true(cached(f, d));
    kg_keywatch_free(w);
}

static void
test_an_unknown_or_revoked_key_reloads_nothing(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_keywatch *w = watch(f);
    unsigned char nope[KG_DIGEST_BYTES], gone[KG_DIGEST_BYTES];

    digest_of("key_nope", nope);
    digest_of("key_gone", gone);
    insert(f, "key_gone", kg_time_now() - 10);
    assert_false(kg_keywatch_recheck(w, f->st, nope, 1000, kg_time_now()));
    assert_false(kg_keywatch_recheck(w, f->st, gone, 2000, kg_time_now()));
    assert_false(cached(f, gone));
    kg_keywatch_free(w);
}

static void
test_lookups_are_at_most_one_per_interval(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_keywatch *w = watch(f);
    unsigned char nope[KG_DIGEST_BYTES], late[KG_DIGEST_BYTES];

    digest_of("key_nope", nope);
    digest_of("key_late", late);
    assert_false(kg_keywatch_recheck(w, f->st, nope, 1000, kg_time_now()));
    insert(f, "key_late", 0);
    /* 5 ms after a lookup: not asked, even though the store has it now. */
    assert_false(kg_keywatch_recheck(w, f->st, late, 1005, kg_time_now()));
    assert_false(cached(f, late));
    /* After the 10 ms interval it is. */
    assert_true(kg_keywatch_recheck(w, f->st, late, 1010, kg_time_now()));
    assert_true(cached(f, late));
    kg_keywatch_free(w);
}

/* What a suspended request waits for: the done callback, once. */
struct answer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    bool known;
};

static void
on_done(void *arg, bool known)
{
    struct answer *a = arg;

    pthread_mutex_lock(&a->mu);
    a->calls++;
    a->known = known;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static bool
wait_answer(struct answer *a)
{
    bool known;

    pthread_mutex_lock(&a->mu);
    while (a->calls == 0)
        pthread_cond_wait(&a->cv, &a->mu);
    known = a->known;
    pthread_mutex_unlock(&a->mu);
    return known;
}

static void
test_a_question_is_answered_on_the_watch_thread_and_the_key_cached(void **state)
{
    struct kg_fx_cache *f = *state;
    struct kg_keywatch *w = watch(f);
    struct answer a = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct answer b = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    unsigned char d[KG_DIGEST_BYTES], nope[KG_DIGEST_BYTES];

    digest_of("key_async", d);
    digest_of("key_nope", nope);
    insert(f, "key_async", 0);
    assert_true(kg_keywatch_due(w, 1000));
    assert_true(kg_keywatch_ask(w, d, 1000, on_done, &a));
    /* The interval's one question is taken: a second is refused at once
     * and its done function never called. */
    assert_false(kg_keywatch_due(w, 1005));
    assert_false(kg_keywatch_ask(w, nope, 1005, on_done, &b));
    assert_true(wait_answer(&a));
    assert_true(cached(f, d));
    assert_true(kg_keywatch_ask(w, nope, 1010, on_done, &b));
    assert_false(wait_answer(&b));
    /* Stopped (what the daemon does before its loops stop): no question
     * is taken any more, so no request is left suspended. */
    kg_keywatch_stop(w);
    assert_false(kg_keywatch_ask(w, nope, 5000, on_done, &b));
    kg_keywatch_free(w);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
}

static void
test_null_is_harmless(void **state)
{
    unsigned char d[KG_DIGEST_BYTES] = {0};

    (void)state;
    assert_false(kg_keywatch_recheck(NULL, NULL, d, 0, 0));
    assert_false(kg_keywatch_due(NULL, 0));
    kg_keywatch_stop(NULL);
    assert_false(kg_keywatch_ask(NULL, d, 0, on_done, NULL));
    kg_keywatch_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_key_stored_after_the_load_is_found_and_the_cache_reloaded, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_an_unknown_or_revoked_key_reloads_nothing,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(test_lookups_are_at_most_one_per_interval,
                                        kg_fx_cache_setup, kg_fx_cache_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_question_is_answered_on_the_watch_thread_and_the_key_cached, kg_fx_cache_setup,
            kg_fx_cache_teardown),
        cmocka_unit_test(test_null_is_harmless),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
