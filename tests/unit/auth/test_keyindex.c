/* tests/unit/auth/test_keyindex.c - src/auth/keyindex.c when its retired
 * list cannot grow. Linked with -Wl,--wrap=realloc (tests/CMakeLists.txt)
 * so a test can make the next realloc fail: a removal, a sweep or a
 * replacement then changes nothing and loses nothing (found by
 * scripts/torture.sh admin_revoke: a removed entry used to be leaked, with
 * the owner record it held). Every entry is counted when the index drops
 * it; ASan's leak check sees the rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/keycache.h"
#include "keygate/keyindex.h"

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static int fail_reallocs; /* how many of the next reallocs fail */
static int dropped;       /* entries the index has freed */

void *
__wrap_realloc(void *p, size_t n)
{
    if (fail_reallocs > 0) {
        fail_reallocs--;
        return NULL;
    }
    return __real_realloc(p, n);
}

static void
drop(struct kg_keyent *e)
{
    dropped++;
    free(e);
}

static struct kg_keyent *
entry(unsigned char tag)
{
    struct kg_keyent *e = calloc(1, sizeof(*e));

    assert_non_null(e);
    /* The index hashes the first bytes: spread them. */
    memset(e->digest, tag, sizeof(e->digest));
    e->digest[0] = (unsigned char)(tag * 37u);
    return e;
}

static struct kg_keyindex *
index_of(int n, struct kg_keyent **ents)
{
    struct kg_keyindex *ix;

    dropped = 0;
    assert_int_equal(kg_keyindex_new(drop, &ix), KG_OK);
    for (int i = 0; i < n; i++) {
        ents[i] = entry((unsigned char)(i + 1));
        assert_int_equal(kg_keyindex_put(ix, ents[i]), KG_OK);
    }
    /* Publishing hands the retired list over: the next retirement needs a
     * new one, which is the allocation the tests make fail. */
    kg_keyindex_publish(ix, 1);
    return ix;
}

static void
test_a_removal_without_memory_changes_nothing_and_the_next_one_works(void **state)
{
    struct kg_keyent *ents[2];
    struct kg_keyindex *ix = index_of(2, ents);
    const struct kg_keysnap *reader;
    unsigned char d[KG_DIGEST_BYTES];

    (void)state;
    memcpy(d, ents[0]->digest, sizeof(d));
    fail_reallocs = 1;
    assert_int_equal(kg_keyindex_remove(ix, d), KG_ENOMEM);
    assert_int_equal(fail_reallocs, 0);
    assert_ptr_equal(kg_keyindex_get(ix, d), ents[0]);
    assert_int_equal(kg_keyindex_count(ix), 2);
    assert_int_equal(dropped, 0);

    /* Memory back: removed, and freed only once no reader holds it. */
    reader = kg_keyindex_acquire(ix);
    assert_int_equal(kg_keyindex_remove(ix, d), KG_OK);
    assert_null(kg_keyindex_get(ix, d));
    assert_int_equal(kg_keyindex_count(ix), 1);
    kg_keyindex_publish(ix, 2);
    assert_int_equal(dropped, 0);
    kg_keyindex_release(reader);
    assert_int_equal(dropped, 1);

    /* Absent: nothing to do, no allocation needed. */
    fail_reallocs = 1;
    assert_int_equal(kg_keyindex_remove(ix, d), KG_OK);
    fail_reallocs = 0;
    kg_keyindex_free(ix);
    assert_int_equal(dropped, 2);
}

static bool
keep_none(const struct kg_keyent *e, void *ctx)
{
    (void)e;
    (void)ctx;
    return false;
}

static void
test_a_sweep_without_memory_stops_and_loses_nothing(void **state)
{
    struct kg_keyent *ents[3];
    struct kg_keyindex *ix = index_of(3, ents);

    (void)state;
    fail_reallocs = 1;
    assert_int_equal(kg_keyindex_sweep(ix, keep_none, NULL), KG_ENOMEM);
    assert_int_equal(kg_keyindex_count(ix), 3);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(kg_keyindex_get(ix, ents[i]->digest), ents[i]);

    assert_int_equal(kg_keyindex_sweep(ix, keep_none, NULL), KG_OK);
    assert_int_equal(kg_keyindex_count(ix), 0);
    kg_keyindex_publish(ix, 2);
    assert_int_equal(dropped, 3);
    kg_keyindex_free(ix);
    assert_int_equal(dropped, 3);
}

static void
test_a_replacement_without_memory_keeps_the_old_entry(void **state)
{
    struct kg_keyent *ents[1], *newer;
    struct kg_keyindex *ix = index_of(1, ents);

    (void)state;
    newer = entry(1);
    fail_reallocs = 1;
    assert_int_equal(kg_keyindex_put(ix, newer), KG_ENOMEM);
    assert_int_equal(dropped, 1); /* the new one, given to the index */
    assert_ptr_equal(kg_keyindex_get(ix, ents[0]->digest), ents[0]);

    newer = entry(1);
    assert_int_equal(kg_keyindex_put(ix, newer), KG_OK);
    assert_ptr_equal(kg_keyindex_get(ix, ents[0]->digest), newer);
    assert_int_equal(kg_keyindex_count(ix), 1);
    kg_keyindex_free(ix);
    assert_int_equal(dropped, 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_removal_without_memory_changes_nothing_and_the_next_one_works),
        cmocka_unit_test(test_a_sweep_without_memory_stops_and_loses_nothing),
        cmocka_unit_test(test_a_replacement_without_memory_keeps_the_old_entry),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
