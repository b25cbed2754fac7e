/* tests/unit/auth/test_credhdr.c - src/auth/credhdr.c through
 * keygate/credhdr.h: the header names and Authorization schemes that carry
 * a key of ours, with configs loaded from files (the defaults, and one
 * naming credential_header X-Api-Key). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "keygate/config.h"
#include "keygate/credhdr.h"
#include "unit/fixture.h"

struct fixture {
    struct kg_config *plain;
    struct kg_config *extra;
};

static int
group_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    *state = f;
    kg_fx_clear_env();
    if (f == NULL || kg_fx_load_config("# defaults\n", &f->plain) != 0 ||
        kg_fx_load_config("credential_header X-Api-Key\n", &f->extra) != 0)
        return -1;
    return 0;
}

static int
group_teardown(void **state)
{
    struct fixture *f = *state;

    kg_config_free(f->plain);
    kg_config_free(f->extra);
    free(f);
    return 0;
}

static void
test_each_credential_header_has_a_bit_of_its_own(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(kg_credhdr_bit(f->plain, "authorization"), KG_CREDHDR_AUTHORIZATION);
    assert_int_equal(kg_credhdr_bit(f->plain, "X-AVALA-API-KEY"), KG_CREDHDR_AVALA);
    assert_int_equal(kg_credhdr_bit(f->plain, "X-Api-Key"), 0);
    assert_int_equal(kg_credhdr_bit(f->extra, "x-api-key"), KG_CREDHDR_EXTRA0);
    assert_int_equal(kg_credhdr_bit(f->extra, "Cookie"), 0);
}

static void
test_only_our_schemes_make_authorization_a_credential(void **state)
{
    struct fixture *f = *state;
    const char *rest;
    size_t rlen;

    assert_true(kg_credhdr_scheme("Bearer kg_x", 11, &rest, &rlen));
    assert_int_equal(rlen, 5);
    assert_memory_equal(rest, " kg_x", 5);
    assert_true(kg_credhdr_scheme("apikey\tkg_x", 11, &rest, &rlen));
    assert_true(kg_credhdr_scheme("Bearer", 6, &rest, &rlen));
    assert_false(kg_credhdr_scheme("Bearerish x", 11, &rest, &rlen));
    assert_false(kg_credhdr_scheme("Basic dXNlcjpwYXNz", 18, &rest, &rlen));
    assert_true(kg_credhdr_is_credential(f->plain, "Authorization", "  BEARER x"));
    assert_false(kg_credhdr_is_credential(f->plain, "Authorization", "Basic dXNlcjpwYXNz"));
    assert_false(kg_credhdr_is_credential(f->plain, "Authorization", NULL));
    assert_true(kg_credhdr_is_credential(f->plain, "X-Avala-Api-Key", NULL));
    assert_true(kg_credhdr_is_credential(f->extra, "X-Api-Key", "x"));
    assert_false(kg_credhdr_is_credential(f->plain, "X-Api-Key", "x"));
}

static void
test_trim_removes_blanks_around_only(void **state)
{
    const char *in = " \ta b \t ";
    size_t len = strlen(in);
    const char *v = kg_credhdr_trim(in, &len);

    (void)state;
    assert_int_equal(len, 3);
    assert_memory_equal(v, "a b", 3);
    len = 0;
    kg_credhdr_trim("", &len);
    assert_int_equal(len, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_credential_header_has_a_bit_of_its_own),
        cmocka_unit_test(test_only_our_schemes_make_authorization_a_credential),
        cmocka_unit_test(test_trim_removes_blanks_around_only),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
