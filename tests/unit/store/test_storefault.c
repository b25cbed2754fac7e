/* unit/store/test_storefault.c - tests src/store/storefault.c: what marks
 * the store faulted, the words /readyz shows, the counter, the clearing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "keygate/metrics.h"
#include "keygate/storefault.h"

static unsigned long long
store_errors(void)
{
    struct kg_metrics_gauges g = {0};
    size_t len = 0;
    char *text = kg_metrics_render(&g, &len);
    const char *p;
    unsigned long long n;

    assert_non_null(text);
    p = strstr(text, "\nkeygate_store_errors_total ");
    assert_non_null(p);
    n = strtoull(p + 28, NULL, 10);
    free(text);
    return n;
}

static void
test_a_store_failure_marks_the_store_faulted_with_sqlites_words(void **state)
{
    struct kg_storefault *f = kg_storefault_new();
    char reason[128];

    (void)state;
    kg_metrics_reset();
    assert_non_null(f);
    assert_false(kg_storefault_active(f, reason, sizeof(reason)));
    kg_storefault_fail(f, KG_EIO, "/var/lib/keygate/keygate.db: commit: database or disk is full");
    assert_true(kg_storefault_active(f, reason, sizeof(reason)));
    assert_string_equal(reason, "database or disk is full");
    assert_int_equal(store_errors(), 1);
    kg_storefault_fail(f, KG_ECORRUPT, "x.db: walk keys: database disk image is malformed");
    assert_true(kg_storefault_active(f, reason, sizeof(reason)));
    assert_string_equal(reason, "database disk image is malformed");
    assert_int_equal(store_errors(), 2);
    kg_storefault_free(f);
}

static void
test_a_refused_input_is_counted_but_is_no_store_fault(void **state)
{
    struct kg_storefault *f = kg_storefault_new();

    (void)state;
    kg_metrics_reset();
    assert_non_null(f);
    kg_storefault_fail(f, KG_EINVAL, "x.db: insert key: CHECK constraint failed");
    kg_storefault_fail(f, KG_ECONFLICT, "x.db: insert key: UNIQUE constraint failed");
    assert_false(kg_storefault_active(f, NULL, 0));
    assert_int_equal(store_errors(), 2);
    assert_false(kg_storefault_is_store(KG_ENOTFOUND));
    assert_true(kg_storefault_is_store(KG_EIO));
    kg_storefault_free(f);
}

static void
test_a_successful_write_clears_the_fault_once(void **state)
{
    struct kg_storefault *f = kg_storefault_new();

    (void)state;
    assert_non_null(f);
    assert_false(kg_storefault_clear(f));
    kg_storefault_fail(f, KG_EIO, "database is locked");
    assert_true(kg_storefault_active(f, NULL, 0));
    assert_true(kg_storefault_clear(f));
    assert_false(kg_storefault_active(f, NULL, 0));
    assert_false(kg_storefault_clear(f));
    kg_storefault_fail(f, KG_EIO, NULL);
    {
        char reason[64];

        assert_true(kg_storefault_active(f, reason, sizeof(reason)));
        assert_true(reason[0] != '\0');
    }
    kg_storefault_free(f);
}

static void
test_no_record_only_counts(void **state)
{
    (void)state;
    kg_metrics_reset();
    kg_storefault_fail(NULL, KG_EIO, "x: y: disk I/O error");
    assert_false(kg_storefault_active(NULL, NULL, 0));
    assert_false(kg_storefault_clear(NULL));
    kg_storefault_free(NULL);
    assert_int_equal(store_errors(), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_store_failure_marks_the_store_faulted_with_sqlites_words),
        cmocka_unit_test(test_a_refused_input_is_counted_but_is_no_store_fault),
        cmocka_unit_test(test_a_successful_write_clears_the_fault_once),
        cmocka_unit_test(test_no_record_only_counts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
