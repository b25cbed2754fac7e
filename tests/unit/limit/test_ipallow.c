/* tests/unit/limit/test_ipallow.c - src/limit/ipallow.c through
 * keygate/ipallow.h: the per-key IP allowlists beside the key cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "keygate/ipallow.h"
#include "keygate/keys.h"

static void
test_a_noted_list_is_invisible_until_published_and_fails_closed(void **state)
{
    struct kg_ipallow *a;
    bool changed = false;

    (void)state;
    assert_int_equal(kg_ipallow_new(&a), KG_OK);
    assert_int_equal(kg_ipallow_note(a, "key_a", "192.0.2.0/24", &changed), KG_OK);
    assert_true(changed);
    /* Not published yet: refused, never let through. */
    assert_false(kg_ipallow_permits(a, "key_a", "192.0.2.9"));
    assert_int_equal(kg_ipallow_publish(a), KG_OK);
    assert_true(kg_ipallow_permits(a, "key_a", "192.0.2.9"));
    assert_false(kg_ipallow_permits(a, "key_a", "192.0.3.9"));
    assert_false(kg_ipallow_permits(a, "key_b", "192.0.2.9"));
    assert_false(kg_ipallow_permits(a, "key_a", "not an address"));
    assert_false(kg_ipallow_permits(a, "key_a", ""));
    kg_ipallow_free(a);
}

static void
test_ipv4_ipv6_and_mapped_addresses_match_their_blocks(void **state)
{
    struct kg_ipallow *a;

    (void)state;
    assert_int_equal(kg_ipallow_new(&a), KG_OK);
    assert_int_equal(kg_ipallow_note(a, "key_a", "203.0.113.7/32,2001:db8::/32", NULL), KG_OK);
    assert_int_equal(kg_ipallow_publish(a), KG_OK);
    assert_true(kg_ipallow_permits(a, "key_a", "203.0.113.7"));
    assert_true(kg_ipallow_permits(a, "key_a", "::ffff:203.0.113.7"));
    assert_false(kg_ipallow_permits(a, "key_a", "203.0.113.8"));
    assert_true(kg_ipallow_permits(a, "key_a", "2001:db8:ffff::1"));
    assert_false(kg_ipallow_permits(a, "key_a", "2001:db9::1"));
    kg_ipallow_free(a);
}

static void
test_changing_and_removing_a_list_and_many_keys(void **state)
{
    char id[32];
    struct kg_ipallow *a;
    bool changed = true;

    (void)state;
    assert_int_equal(kg_ipallow_new(&a), KG_OK);
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "key_%04d", i);
        assert_int_equal(kg_ipallow_note(a, id, i % 2 ? "10.0.0.0/8" : "fd00::/8", NULL), KG_OK);
    }
    assert_int_equal(kg_ipallow_publish(a), KG_OK);
    assert_int_equal(kg_ipallow_count(a), 1000);
    assert_int_equal(kg_ipallow_publish(a), KG_OK);
    assert_int_equal(kg_ipallow_note(a, "key_0001", "10.0.0.0/8", &changed), KG_OK);
    assert_false(changed);
    assert_true(kg_ipallow_permits(a, "key_0001", "10.9.9.9"));
    assert_true(kg_ipallow_permits(a, "key_0998", "fd00::1"));
    assert_int_equal(kg_ipallow_note(a, "key_0001", "", &changed), KG_OK);
    assert_true(changed);
    assert_int_equal(kg_ipallow_note(a, "key_0003", "192.0.2.1/32", NULL), KG_OK);
    assert_int_equal(kg_ipallow_publish(a), KG_OK);
    assert_int_equal(kg_ipallow_count(a), 999);
    assert_false(kg_ipallow_permits(a, "key_0001", "10.9.9.9"));
    assert_false(kg_ipallow_permits(a, "key_0003", "10.9.9.9"));
    assert_true(kg_ipallow_permits(a, "key_0003", "192.0.2.1"));
    kg_ipallow_free(a);
}

/* manage/'s normaliser writes what the map reads: canonical blocks. */
static void
test_allowlists_are_normalised_and_bad_blocks_named(void **state)
{
    char out[KG_ALLOWED_IPS_MAX];
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(
        kg_keys_allowed_ips_normalise(" 192.0.2.0/24 , 2001:DB8::1,10.0.0.1", out, &err), KG_OK);
    assert_string_equal(out, "192.0.2.0/24,2001:db8::1/128,10.0.0.1/32");
    assert_int_equal(kg_keys_allowed_ips_normalise("", out, &err), KG_OK);
    assert_string_equal(out, "");
    assert_int_equal(kg_keys_allowed_ips_normalise("10.0.0.1/8", out, &err), KG_EINVAL);
    assert_string_equal(err.msg, "allowed_ips: 10.0.0.1/8 is not an address block (CIDR)");
    assert_int_equal(kg_keys_allowed_ips_normalise("10.0.0.0/8,", out, &err), KG_EINVAL);
    assert_int_equal(kg_keys_allowed_ips_normalise("example.com", out, &err), KG_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_noted_list_is_invisible_until_published_and_fails_closed),
        cmocka_unit_test(test_ipv4_ipv6_and_mapped_addresses_match_their_blocks),
        cmocka_unit_test(test_changing_and_removing_a_list_and_many_keys),
        cmocka_unit_test(test_allowlists_are_normalised_and_bad_blocks_named),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
