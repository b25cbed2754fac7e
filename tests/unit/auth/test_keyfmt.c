/* tests/unit/auth/test_keyfmt.c - src/auth/keyfmt.c through keygate/keyfmt.h.
 *
 * Generated keys are random, so the exhaustive checksum tests run on fixed
 * keys whose checksums were computed once outside keygate (Python's
 * hashlib.blake2b, digest_size=16, first 8 hex characters): the outcome is
 * the same on every run, and the vectors pin the format, because changing
 * it would invalidate every key already handed out. Keys never appear in a
 * failure message; positions and lengths do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/keyfmt.h"

/* Every character a prefix may hold; the mutation alphabet of the brief. */
static const char key_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";

/* prefix + 43 base62 body + checksum, checksum computed independently. */
static const char *const fixed_keys[] = {
    "kg_Q7zR2mXw9LpT4vKc8NdYb3HsA1b2C3d4E5f6G7h8I9jecc25ceb",
    "avk_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg2972d5be",
    "aiia_key_live_zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJb185e48f",
};

static const char *const good_prefixes[] = {
    "kg_", "avk_", "aiia_key_live_", "x", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_01234", /* 32 */
};

#define NFIXED (sizeof(fixed_keys) / sizeof(fixed_keys[0]))
#define NPREFIXES (sizeof(good_prefixes) / sizeof(good_prefixes[0]))

static int
group_setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static bool
is_base62(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool
is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void
generate(const char *prefix, char out[KG_KEY_MAX])
{
    struct kg_err err = {{0}};
    enum kg_status rc = kg_keyfmt_generate(prefix, out, &err);

    if (rc != KG_OK)
        fail_msg("generating with prefix \"%s\" should succeed: %s", prefix, err.msg);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_the_fixed_vectors_pass_the_check(void **state)
{
    (void)state;
    for (size_t i = 0; i < NFIXED; i++)
        assert_true(kg_keyfmt_check(fixed_keys[i], strlen(fixed_keys[i])));
}

static void
test_generated_keys_round_trip_through_check_for_several_prefixes(void **state)
{
    char key[KG_KEY_MAX];

    (void)state;
    for (size_t i = 0; i < NPREFIXES; i++) {
        for (int round = 0; round < 50; round++) {
            generate(good_prefixes[i], key);
            if (!kg_keyfmt_check(key, strlen(key)))
                fail_msg("a key generated with prefix \"%s\" should pass the check",
                         good_prefixes[i]);
        }
    }
}

static void
test_a_generated_key_is_prefix_then_43_base62_then_8_lower_hex(void **state)
{
    char key[KG_KEY_MAX];

    (void)state;
    for (size_t i = 0; i < NPREFIXES; i++) {
        size_t plen = strlen(good_prefixes[i]);

        generate(good_prefixes[i], key);
        assert_int_equal(strlen(key), plen + 43 + 8);
        assert_memory_equal(key, good_prefixes[i], plen);
        for (size_t j = plen; j < plen + 43; j++)
            if (!is_base62(key[j]))
                fail_msg("body character %zu should be base62", j - plen);
        for (size_t j = plen + 43; j < plen + 51; j++)
            if (!is_lower_hex(key[j]))
                fail_msg("checksum character %zu should be lower-case hex", j - plen - 43);
    }
}

static void
test_the_body_carries_at_least_256_bits(void **state)
{
    (void)state;
    assert_int_equal(KG_KEY_BODY_LEN, 43);
    /* 43 * log2(62) = 256.03; 42 characters would give only 250. */
    assert_true((double)KG_KEY_BODY_LEN * log2(62.0) >= 256.0);
}

static void
test_generated_keys_differ_from_each_other(void **state)
{
    enum { N = 500 };
    char *keys[N];

    (void)state;
    for (int i = 0; i < N; i++) {
        keys[i] = malloc(KG_KEY_MAX);
        assert_non_null(keys[i]);
        generate("kg_", keys[i]);
    }
    qsort(keys, N, sizeof(keys[0]), cmp_str);
    for (int i = 1; i < N; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            fail_msg("two of %d generated keys are equal", N);
    for (int i = 0; i < N; i++) {
        sodium_memzero(keys[i], KG_KEY_MAX);
        free(keys[i]);
    }
}

/* Every position of key replaced by every other character of [A-Za-z0-9_]. */
static void
assert_every_single_char_change_rejected(const char *key)
{
    size_t len = strlen(key);
    char copy[KG_KEY_MAX];
    size_t tried = 0;

    assert_true(len < sizeof(copy));
    for (size_t pos = 0; pos < len; pos++) {
        for (const char *c = key_alphabet; *c != '\0'; c++) {
            if (*c == key[pos])
                continue;
            memcpy(copy, key, len + 1);
            copy[pos] = *c;
            tried++;
            if (kg_keyfmt_check(copy, len))
                fail_msg("changing position %zu of a %zu-character key to '%c' should fail the "
                         "check",
                         pos, len, *c);
        }
    }
    /* 62 other characters at each position. */
    assert_int_equal(tried, len * 62);
}

static void
test_checksum_rejects_every_single_char_change(void **state)
{
    (void)state;
    for (size_t i = 0; i < NFIXED; i++)
        assert_every_single_char_change_rejected(fixed_keys[i]);
}

static void
test_checksum_rejects_changes_to_bytes_outside_the_alphabet(void **state)
{
    static const char others[] = "-.~+/= \t%\x01\x7f\x80\xff";
    const char *key = fixed_keys[0];
    size_t len = strlen(key);
    char copy[KG_KEY_MAX];

    (void)state;
    for (size_t pos = 0; pos < len; pos++) {
        for (const char *c = others; *c != '\0'; c++) {
            memcpy(copy, key, len + 1);
            copy[pos] = *c;
            if (kg_keyfmt_check(copy, len))
                fail_msg("byte 0x%02x at position %zu should fail the check", (unsigned char)*c,
                         pos);
        }
    }
}

static void
test_an_upper_case_checksum_is_rejected(void **state)
{
    char copy[KG_KEY_MAX];
    size_t len = strlen(fixed_keys[0]);

    (void)state;
    memcpy(copy, fixed_keys[0], len + 1);
    for (size_t i = len - 8; i < len; i++)
        if (copy[i] >= 'a' && copy[i] <= 'f')
            copy[i] = (char)(copy[i] - 'a' + 'A');
    assert_true(strcmp(copy, fixed_keys[0]) != 0);
    assert_false(kg_keyfmt_check(copy, len));
}

static void
test_truncated_keys_are_rejected(void **state)
{
    char key[KG_KEY_MAX];

    (void)state;
    for (size_t i = 0; i < NFIXED; i++) {
        size_t len = strlen(fixed_keys[i]);

        for (size_t n = 0; n < len; n++)
            if (kg_keyfmt_check(fixed_keys[i], n))
                fail_msg("the first %zu of %zu characters should fail the check", n, len);
    }
    generate("avk_", key);
    assert_false(kg_keyfmt_check(key, strlen(key) - 1));
    /* Without its prefix the tail alone is not a key. */
    assert_false(kg_keyfmt_check(key + 4, strlen(key) - 4));
}

static void
test_extended_keys_are_rejected(void **state)
{
    char buf[KG_KEY_MAX + 8];

    (void)state;
    for (size_t i = 0; i < NFIXED; i++) {
        size_t len = strlen(fixed_keys[i]);

        for (const char *c = key_alphabet; *c != '\0'; c++) {
            /* One more character at the end... */
            snprintf(buf, sizeof(buf), "%s%c", fixed_keys[i], *c);
            if (kg_keyfmt_check(buf, len + 1))
                fail_msg("a key with '%c' appended should fail the check", *c);
            /* ...or at the front, which makes the prefix one longer. */
            snprintf(buf, sizeof(buf), "%c%s", *c, fixed_keys[i]);
            if (kg_keyfmt_check(buf, len + 1))
                fail_msg("a key with '%c' prepended should fail the check", *c);
        }
    }
}

static void
test_a_key_longer_than_the_longest_prefix_allows_is_rejected(void **state)
{
    char prefix[KG_KEY_PREFIX_MAX + 1];
    char key[KG_KEY_MAX];
    char longer[KG_KEY_MAX + 1];

    (void)state;
    memset(prefix, 'p', KG_KEY_PREFIX_MAX);
    prefix[KG_KEY_PREFIX_MAX] = '\0';
    generate(prefix, key);
    assert_int_equal(strlen(key), KG_KEY_MAX - 1);
    assert_true(kg_keyfmt_check(key, strlen(key)));
    longer[0] = 'p';
    memcpy(longer + 1, key, KG_KEY_MAX);
    assert_false(kg_keyfmt_check(longer, KG_KEY_MAX));
}

static void
test_check_reads_only_len_bytes(void **state)
{
    /* The key followed by junk with no NUL nearby: only len counts. */
    char buf[KG_KEY_MAX + 16];
    size_t len = strlen(fixed_keys[1]);

    (void)state;
    memset(buf, 'Z', sizeof(buf));
    memcpy(buf, fixed_keys[1], len);
    assert_true(kg_keyfmt_check(buf, len));
    assert_false(kg_keyfmt_check(buf, len + 1));
}

static void
test_generate_rejects_bad_prefixes(void **state)
{
    static const char *const bad[] = {
        "",
        "kg-",
        "kg ",
        "kg.",
        "k/g_",
        "kg_\xC3\xA9",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ_012345", /* 33 */
    };
    char key[KG_KEY_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kg_err err = {{0}};

        if (kg_keyfmt_generate(bad[i], key, &err) != KG_EINVAL)
            fail_msg("prefix \"%s\" should be refused with KG_EINVAL", bad[i]);
        assert_true(err.msg[0] != '\0');
    }
}

static void
test_generate_accepts_a_null_err(void **state)
{
    char key[KG_KEY_MAX];

    (void)state;
    assert_int_equal(kg_keyfmt_generate("", key, NULL), KG_EINVAL);
    assert_int_equal(kg_keyfmt_generate("kg_", key, NULL), KG_OK);
}

static void
test_display_gives_prefix_with_four_body_chars_and_last4(void **state)
{
    char dprefix[KG_DPREFIX_MAX];
    char last4[5];

    (void)state;
    kg_keyfmt_display(fixed_keys[0], strlen(fixed_keys[0]), dprefix, last4);
    assert_string_equal(dprefix, "kg_Q7zR");
    assert_string_equal(last4, "5ceb");

    kg_keyfmt_display(fixed_keys[2], strlen(fixed_keys[2]), dprefix, last4);
    assert_string_equal(dprefix, "aiia_key_live_zyxw");
    assert_string_equal(last4, "e48f");
}

static void
test_display_of_a_generated_key_matches_its_text(void **state)
{
    char key[KG_KEY_MAX];
    char dprefix[KG_DPREFIX_MAX];
    char last4[5];
    size_t len;

    (void)state;
    generate("avk_", key);
    len = strlen(key);
    kg_keyfmt_display(key, len, dprefix, last4);
    assert_int_equal(strlen(dprefix), 4 + KG_KEY_SHOWN_BODY);
    assert_memory_equal(dprefix, key, 8);
    assert_int_equal(strlen(last4), 4);
    assert_memory_equal(last4, key + len - 4, 4);
}

static void
test_mask_joins_prefix_and_last4_with_an_ellipsis(void **state)
{
    char out[KG_DPREFIX_MAX + 8];
    char tiny[6];

    (void)state;
    kg_keyfmt_mask("kg_AbCd", "wxyz", out, sizeof(out));
    assert_string_equal(out, "kg_AbCd\xE2\x80\xA6wxyz");
    /* The masked form can never pass for a key. */
    assert_false(kg_keyfmt_check(out, strlen(out)));
    /* A short buffer is truncated and still terminated. */
    kg_keyfmt_mask("kg_AbCd", "wxyz", tiny, sizeof(tiny));
    assert_string_equal(tiny, "kg_Ab");
}

static void
test_new_ids_have_the_kind_prefix_and_22_base62_chars(void **state)
{
    static const char *const kinds[] = {"key", "usr", "ten"};
    char id[KG_ID_MAX];

    (void)state;
    for (size_t k = 0; k < 3; k++) {
        kg_keyfmt_new_id(kinds[k], id);
        assert_int_equal(strlen(id), 3 + 1 + 22);
        assert_memory_equal(id, kinds[k], 3);
        assert_int_equal(id[3], '_');
        for (size_t i = 4; i < 26; i++)
            if (!is_base62(id[i]))
                fail_msg("id character %zu should be base62", i);
    }
}

static void
test_new_ids_are_unique_across_many_draws(void **state)
{
    enum { N = 5000 };
    char *ids[N];

    (void)state;
    for (int i = 0; i < N; i++) {
        ids[i] = malloc(KG_ID_MAX);
        assert_non_null(ids[i]);
        kg_keyfmt_new_id("key", ids[i]);
    }
    qsort(ids, N, sizeof(ids[0]), cmp_str);
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("id %s was drawn twice in %d draws", ids[i], N);
    for (int i = 0; i < N; i++)
        free(ids[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_fixed_vectors_pass_the_check),
        cmocka_unit_test(test_generated_keys_round_trip_through_check_for_several_prefixes),
        cmocka_unit_test(test_a_generated_key_is_prefix_then_43_base62_then_8_lower_hex),
        cmocka_unit_test(test_the_body_carries_at_least_256_bits),
        cmocka_unit_test(test_generated_keys_differ_from_each_other),
        cmocka_unit_test(test_checksum_rejects_every_single_char_change),
        cmocka_unit_test(test_checksum_rejects_changes_to_bytes_outside_the_alphabet),
        cmocka_unit_test(test_an_upper_case_checksum_is_rejected),
        cmocka_unit_test(test_truncated_keys_are_rejected),
        cmocka_unit_test(test_extended_keys_are_rejected),
        cmocka_unit_test(test_a_key_longer_than_the_longest_prefix_allows_is_rejected),
        cmocka_unit_test(test_check_reads_only_len_bytes),
        cmocka_unit_test(test_generate_rejects_bad_prefixes),
        cmocka_unit_test(test_generate_accepts_a_null_err),
        cmocka_unit_test(test_display_gives_prefix_with_four_body_chars_and_last4),
        cmocka_unit_test(test_display_of_a_generated_key_matches_its_text),
        cmocka_unit_test(test_mask_joins_prefix_and_last4_with_an_ellipsis),
        cmocka_unit_test(test_new_ids_have_the_kind_prefix_and_22_base62_chars),
        cmocka_unit_test(test_new_ids_are_unique_across_many_draws),
    };

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
