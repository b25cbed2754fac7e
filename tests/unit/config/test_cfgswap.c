/* tests/unit/config/test_cfgswap.c - src/config/cfgswap.c through keygate/cfgswap.h.
 *
 * A held config must stay whole after a publish and be freed by its last
 * holder (ASan's leak checker sees a config that is never freed, and a
 * read of one freed too early); readers on several threads acquiring while
 * another thread publishes must always see one complete config.
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

#include <cmocka.h>

#include "keygate/cfgswap.h"
#include "unit/fixture.h"

#define READERS 4
#define PUBLISHES 400

/* Config number n: upstream port 10000 + n and workers n % 64, so a reader
 * can tell a whole config from a mixed one. */
static struct kg_config *
numbered(int n)
{
    struct kg_config *cfg = NULL;
    char url[64];

    assert_int_equal(kg_config_defaults(&cfg), KG_OK);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", 10000 + n);
    free(cfg->upstream);
    cfg->upstream = strdup(url);
    assert_non_null(cfg->upstream);
    cfg->workers = n % 64;
    return cfg;
}

static int
number_of(const struct kg_config *cfg)
{
    int n = atoi(strrchr(cfg->upstream, ':') + 1) - 10000;

    assert_int_equal(cfg->workers, n % 64);
    return n;
}

static void
test_acquire_gives_the_current_config(void **state)
{
    struct kg_cfgswap *sw = NULL;
    const struct kg_config *a, *b;

    (void)state;
    assert_int_equal(kg_cfgswap_new(numbered(1), &sw), KG_OK);
    a = kg_cfgswap_acquire(sw);
    b = kg_cfgswap_acquire(sw);
    assert_ptr_equal(a, b);
    assert_int_equal(number_of(a), 1);
    assert_int_equal(kg_cfgswap_generation(sw), 0);
    kg_cfgswap_release(a);
    kg_cfgswap_release(b);
    kg_cfgswap_free(sw);
}

static void
test_a_held_config_outlives_the_publish_that_replaced_it(void **state)
{
    struct kg_cfgswap *sw = NULL;
    const struct kg_config *old, *cur;

    (void)state;
    assert_int_equal(kg_cfgswap_new(numbered(1), &sw), KG_OK);
    old = kg_cfgswap_acquire(sw);
    assert_int_equal(kg_cfgswap_publish(sw, numbered(2)), KG_OK);
    assert_int_equal(kg_cfgswap_generation(sw), 1);
    cur = kg_cfgswap_acquire(sw);
    assert_ptr_not_equal(old, cur);
    /* Still whole: ASan would report a read of freed memory here. */
    assert_int_equal(number_of(old), 1);
    assert_int_equal(number_of(cur), 2);
    kg_cfgswap_release(old); /* the last holder: frees config 1 */
    assert_int_equal(number_of(cur), 2);
    kg_cfgswap_release(cur);
    kg_cfgswap_free(sw);
}

static void
test_a_config_nobody_holds_is_freed_by_the_publish(void **state)
{
    struct kg_cfgswap *sw = NULL;
    const struct kg_config *cur;

    (void)state;
    assert_int_equal(kg_cfgswap_new(numbered(1), &sw), KG_OK);
    for (int i = 2; i <= 5; i++)
        assert_int_equal(kg_cfgswap_publish(sw, numbered(i)), KG_OK);
    cur = kg_cfgswap_acquire(sw);
    assert_int_equal(number_of(cur), 5);
    kg_cfgswap_release(cur);
    kg_cfgswap_free(sw); /* the leak checker fails the test if 1..4 were kept */
}

static void
test_releasing_null_and_freeing_null_do_nothing(void **state)
{
    (void)state;
    kg_cfgswap_release(NULL);
    kg_cfgswap_free(NULL);
}

struct reader {
    struct kg_cfgswap *sw;
    _Atomic int *stop;
    long reads;
    int highest;    /* highest config number seen */
    bool backwards; /* saw an older config after a newer one */
};

static void *
reader_main(void *arg)
{
    struct reader *r = arg;

    /* At least a few thousand reads even if the publisher finishes first. */
    while (!atomic_load(r->stop) || r->reads < 5000) {
        const struct kg_config *cfg = kg_cfgswap_acquire(r->sw);
        int n = atoi(strrchr(cfg->upstream, ':') + 1) - 10000;

        /* Checked without cmocka: its asserts are not for other threads. */
        if (cfg->workers != n % 64)
            r->backwards = true;
        if (n < r->highest)
            r->backwards = true;
        r->highest = n;
        kg_cfgswap_release(cfg);
        r->reads++;
    }
    return NULL;
}

static void
test_threads_acquiring_while_another_publishes_see_whole_configs_in_order(void **state)
{
    struct kg_cfgswap *sw = NULL;
    struct reader readers[READERS];
    pthread_t th[READERS];
    _Atomic int stop = 0;
    const struct kg_config *last;

    (void)state;
    assert_int_equal(kg_cfgswap_new(numbered(0), &sw), KG_OK);
    for (int i = 0; i < READERS; i++) {
        readers[i] = (struct reader){.sw = sw, .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &readers[i]), 0);
    }
    for (int n = 1; n <= PUBLISHES; n++)
        assert_int_equal(kg_cfgswap_publish(sw, numbered(n)), KG_OK);
    atomic_store(&stop, 1);
    for (int i = 0; i < READERS; i++) {
        pthread_join(th[i], NULL);
        assert_false(readers[i].backwards);
        assert_true(readers[i].reads >= 5000);
    }
    last = kg_cfgswap_acquire(sw);
    assert_int_equal(number_of(last), PUBLISHES);
    kg_cfgswap_release(last);
    assert_int_equal(kg_cfgswap_generation(sw), PUBLISHES);
    kg_cfgswap_free(sw);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_gives_the_current_config),
        cmocka_unit_test(test_a_held_config_outlives_the_publish_that_replaced_it),
        cmocka_unit_test(test_a_config_nobody_holds_is_freed_by_the_publish),
        cmocka_unit_test(test_releasing_null_and_freeing_null_do_nothing),
        cmocka_unit_test(test_threads_acquiring_while_another_publishes_see_whole_configs_in_order),
    };

    kg_fx_clear_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
