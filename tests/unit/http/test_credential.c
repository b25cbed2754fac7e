/* tests/unit/http/test_credential.c - src/http/credential.c through
 * keygate/credential.h. Requests are lists of (name, value) headers fed in
 * order; the outcome is NONE, ONE (with exactly which bytes are the key) or
 * BAD. Two configs: the defaults, and one adding "credential_header
 * X-Api-Key", both loaded from files as an operator would write them. The
 * "keys" here are stand-ins: this module does not judge the key itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keygate/config.h"
#include "keygate/credential.h"
#include "unit/fixture.h"

#define KEY_A "kg_AAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjjKKK01234567"
#define KEY_B "kg_ZZZZyyyyXXXXwwwwVVVVuuuuTTTTssssRRRRqqqqPPP89abcdef"

struct fixture {
    struct kg_config *plain; /* defaults */
    struct kg_config *extra; /* credential_header X-Api-Key */
};

struct hdr {
    const char *name;
    const char *value;
};

static int
group_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    kg_fx_clear_env();
    *state = f;
    if (f == NULL || kg_fx_load_config("# defaults\n", &f->plain) != 0 ||
        kg_fx_load_config("credential_header X-Api-Key\n", &f->extra) != 0)
        return -1;
    return 0;
}

static int
group_teardown(void **state)
{
    struct fixture *f = *state;

    if (f != NULL) {
        kg_config_free(f->plain);
        kg_config_free(f->extra);
        free(f);
    }
    return 0;
}

/* Feeds n headers into c and returns the result. */
static enum kg_cred_result
feed_all(struct kg_cred *c, const struct kg_config *cfg, const struct hdr *h, size_t n)
{
    kg_credential_init(c);
    for (size_t i = 0; i < n; i++)
        kg_credential_feed(c, cfg, h[i].name, h[i].value, strlen(h[i].value));
    return kg_credential_result(c);
}

#define FEED(c, cfg, ...)                                                                          \
    feed_all((c), (cfg), (const struct hdr[]){__VA_ARGS__},                                        \
             sizeof((const struct hdr[]){__VA_ARGS__}) / sizeof(struct hdr))

static const char *
result_str(enum kg_cred_result r)
{
    return r == KG_CRED_NONE ? "NONE" : r == KG_CRED_ONE ? "ONE" : "BAD";
}

static void
assert_result(enum kg_cred_result got, enum kg_cred_result want)
{
    if (got != want)
        fail_msg("credential result should be %s, got %s", result_str(want), result_str(got));
}

/* Exactly one key, and it is want, byte for byte. */
static void
assert_one_key(const struct kg_cred *c, enum kg_cred_result r, const char *want)
{
    assert_result(r, KG_CRED_ONE);
    assert_non_null(c->key);
    assert_int_equal(c->len, strlen(want));
    assert_memory_equal(c->key, want, c->len);
}

static void
test_bearer_gives_the_key(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r = FEED(&c, f->plain, {"Authorization", "Bearer " KEY_A});

    assert_one_key(&c, r, KEY_A);
}

static void
test_apikey_gives_the_key(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r = FEED(&c, f->plain, {"Authorization", "ApiKey " KEY_A});

    assert_one_key(&c, r, KEY_A);
}

static void
test_the_scheme_is_case_insensitive(void **state)
{
    static const char *const values[] = {
        "bearer " KEY_A, "BEARER " KEY_A, "BeArEr " KEY_A,
        "apikey " KEY_A, "APIKEY " KEY_A, "aPiKeY " KEY_A,
    };
    struct fixture *f = *state;
    struct kg_cred c;

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        enum kg_cred_result r = FEED(&c, f->plain, {"Authorization", values[i]});

        assert_one_key(&c, r, KEY_A);
    }
}

static void
test_the_header_name_is_case_insensitive(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r;

    r = FEED(&c, f->plain, {"authorization", "Bearer " KEY_A});
    assert_one_key(&c, r, KEY_A);
    r = FEED(&c, f->plain, {"x-avala-api-key", KEY_A});
    assert_one_key(&c, r, KEY_A);
    r = FEED(&c, f->extra, {"X-API-KEY", KEY_A});
    assert_one_key(&c, r, KEY_A);
}

static void
test_x_avala_api_key_gives_the_key(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r = FEED(&c, f->plain, {"X-Avala-Api-Key", KEY_A});

    assert_one_key(&c, r, KEY_A);
}

static void
test_a_configured_header_gives_the_key_only_when_configured(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r;

    r = FEED(&c, f->extra, {"X-Api-Key", KEY_A});
    assert_one_key(&c, r, KEY_A);
    r = FEED(&c, f->plain, {"X-Api-Key", KEY_A});
    assert_result(r, KG_CRED_NONE);
    assert_null(c.key);
}

static void
test_blanks_around_the_key_are_trimmed(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r;

    r = FEED(&c, f->plain, {"Authorization", "  Bearer    " KEY_A "  "});
    assert_one_key(&c, r, KEY_A);
    r = FEED(&c, f->plain, {"Authorization", "\tApiKey\t" KEY_A "\t"});
    assert_one_key(&c, r, KEY_A);
    r = FEED(&c, f->plain, {"X-Avala-Api-Key", " \t" KEY_A " \t "});
    assert_one_key(&c, r, KEY_A);
    r = FEED(&c, f->extra, {"X-Api-Key", "   " KEY_A});
    assert_one_key(&c, r, KEY_A);
}

static void
test_the_key_points_into_the_header_value(void **state)
{
    struct fixture *f = *state;
    static const char value[] = "Bearer  " KEY_A " ";
    struct kg_cred c;

    kg_credential_init(&c);
    assert_true(kg_credential_feed(&c, f->plain, "Authorization", value, strlen(value)));
    assert_ptr_equal(c.key, value + 8);
}

static void
test_two_different_keys_are_bad(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;

    assert_result(
        FEED(&c, f->plain, {"Authorization", "Bearer " KEY_A}, {"X-Avala-Api-Key", KEY_B}),
        KG_CRED_BAD);
    assert_result(FEED(&c, f->extra, {"X-Avala-Api-Key", KEY_A}, {"X-Api-Key", KEY_B}),
                  KG_CRED_BAD);
    /* A key that is a prefix of the other is still a different key. */
    assert_result(
        FEED(&c, f->plain, {"X-Avala-Api-Key", KEY_A}, {"Authorization", "Bearer " KEY_A "x"}),
        KG_CRED_BAD);
}

static void
test_the_same_key_in_two_different_headers_is_one(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r;

    r = FEED(&c, f->plain, {"Authorization", "Bearer " KEY_A}, {"X-Avala-Api-Key", KEY_A});
    assert_one_key(&c, r, KEY_A);
    r = FEED(&c, f->extra, {"X-Avala-Api-Key", " " KEY_A}, {"Authorization", "apikey " KEY_A},
             {"X-Api-Key", KEY_A " "});
    assert_one_key(&c, r, KEY_A);
}

static void
test_the_same_header_twice_is_bad_even_with_the_same_value(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;

    assert_result(
        FEED(&c, f->plain, {"Authorization", "Bearer " KEY_A}, {"Authorization", "Bearer " KEY_A}),
        KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"X-Avala-Api-Key", KEY_A}, {"x-avala-api-key", KEY_A}),
                  KG_CRED_BAD);
    assert_result(FEED(&c, f->extra, {"X-Api-Key", KEY_A}, {"X-Api-Key", KEY_A}), KG_CRED_BAD);
    assert_result(
        FEED(&c, f->plain, {"Authorization", "Bearer " KEY_A}, {"Authorization", "ApiKey " KEY_A}),
        KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"X-Avala-Api-Key", KEY_A}, {"X-Avala-Api-Key", KEY_B}),
                  KG_CRED_BAD);
}

static void
test_basic_auth_alone_is_no_credential(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;

    kg_credential_init(&c);
    assert_false(kg_credential_feed(&c, f->plain, "Authorization", "Basic dXNlcjpwYXNz", 18));
    assert_result(kg_credential_result(&c), KG_CRED_NONE);
    assert_result(FEED(&c, f->plain, {"Authorization", "Digest username=\"u\""}), KG_CRED_NONE);
    /* A scheme that merely starts with Bearer is another scheme. */
    assert_result(FEED(&c, f->plain, {"Authorization", "Bearerish " KEY_A}), KG_CRED_NONE);
}

static void
test_basic_auth_next_to_a_key_header_is_one(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;
    enum kg_cred_result r;

    r = FEED(&c, f->plain, {"Authorization", "Basic dXNlcjpwYXNz"}, {"X-Avala-Api-Key", KEY_A});
    assert_one_key(&c, r, KEY_A);
}

static void
test_basic_and_bearer_authorization_together_are_bad(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;

    assert_result(FEED(&c, f->plain, {"Authorization", "Basic dXNlcjpwYXNz"},
                       {"Authorization", "Bearer " KEY_A}),
                  KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"Authorization", "Bearer " KEY_A},
                       {"Authorization", "Basic dXNlcjpwYXNz"}),
                  KG_CRED_BAD);
}

static void
test_a_scheme_with_an_empty_token_is_bad(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;

    assert_result(FEED(&c, f->plain, {"Authorization", "Bearer"}), KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"Authorization", "Bearer "}), KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"Authorization", "Bearer \t "}), KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"Authorization", "ApiKey"}), KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"X-Avala-Api-Key", ""}), KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"X-Avala-Api-Key", "   "}), KG_CRED_BAD);
}

static void
test_a_key_with_an_inner_space_or_odd_byte_is_bad(void **state)
{
    static const char *const values[] = {
        "Bearer kg_abc def",
        "Bearer kg_abc\tdef",
        "Bearer kg_abc\x01"
        "def",
        "Bearer kg_abc\x7f"
        "def",
        "Bearer kg_caf\xC3\xA9",
    };
    struct fixture *f = *state;
    struct kg_cred c;

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        assert_result(FEED(&c, f->plain, {"Authorization", values[i]}), KG_CRED_BAD);
    assert_result(FEED(&c, f->plain, {"X-Avala-Api-Key", "kg_abc def"}), KG_CRED_BAD);
}

static void
test_a_nul_inside_the_value_is_bad(void **state)
{
    static const char value[] = "Bearer " KEY_A "\0tail";
    struct fixture *f = *state;
    struct kg_cred c;

    kg_credential_init(&c);
    assert_true(kg_credential_feed(&c, f->plain, "Authorization", value, sizeof(value) - 1));
    assert_result(kg_credential_result(&c), KG_CRED_BAD);
}

static void
test_an_absurdly_long_key_is_bad(void **state)
{
    struct fixture *f = *state;
    char value[400];
    struct kg_cred c;

    memset(value, 'k', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    assert_result(FEED(&c, f->plain, {"X-Avala-Api-Key", value}), KG_CRED_BAD);
}

static void
test_other_headers_are_not_credentials(void **state)
{
    struct fixture *f = *state;
    struct kg_cred c;

    kg_credential_init(&c);
    assert_false(kg_credential_feed(&c, f->plain, "Accept", "*/*", 3));
    assert_false(kg_credential_feed(&c, f->plain, "Proxy-Authorization", "Bearer " KEY_A,
                                    strlen("Bearer " KEY_A)));
    assert_false(kg_credential_feed(&c, f->plain, "X-Avala-Api-Keys", KEY_A, strlen(KEY_A)));
    assert_true(kg_credential_feed(&c, f->plain, "X-Avala-Api-Key", KEY_A, strlen(KEY_A)));
    assert_one_key(&c, kg_credential_result(&c), KEY_A);
}

static void
test_no_headers_at_all_is_none(void **state)
{
    struct kg_cred c;

    (void)state;
    kg_credential_init(&c);
    assert_result(kg_credential_result(&c), KG_CRED_NONE);
    assert_null(c.key);
}

static void
test_is_cred_header_knows_our_headers_and_schemes(void **state)
{
    struct fixture *f = *state;

    assert_true(kg_credential_is_cred_header(f->plain, "Authorization", "Bearer x"));
    assert_true(kg_credential_is_cred_header(f->plain, "authorization", "apikey x"));
    assert_true(kg_credential_is_cred_header(f->plain, "Authorization", "  BEARER x"));
    assert_true(kg_credential_is_cred_header(f->plain, "Authorization", "Bearer"));
    assert_false(kg_credential_is_cred_header(f->plain, "Authorization", "Basic dXNlcjpwYXNz"));
    assert_false(kg_credential_is_cred_header(f->plain, "Authorization", "Bearerish x"));
    assert_false(kg_credential_is_cred_header(f->plain, "Authorization", ""));
    assert_false(kg_credential_is_cred_header(f->plain, "Authorization", NULL));
    assert_true(kg_credential_is_cred_header(f->plain, "X-Avala-Api-Key", "anything"));
    assert_true(kg_credential_is_cred_header(f->plain, "x-avala-api-key", NULL));
    assert_false(kg_credential_is_cred_header(f->plain, "X-Api-Key", "x"));
    assert_true(kg_credential_is_cred_header(f->extra, "X-Api-Key", "x"));
    assert_true(kg_credential_is_cred_header(f->extra, "x-api-key", "x"));
    assert_false(kg_credential_is_cred_header(f->extra, "Accept", "x"));
    assert_false(kg_credential_is_cred_header(f->extra, "Cookie", "x"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bearer_gives_the_key),
        cmocka_unit_test(test_apikey_gives_the_key),
        cmocka_unit_test(test_the_scheme_is_case_insensitive),
        cmocka_unit_test(test_the_header_name_is_case_insensitive),
        cmocka_unit_test(test_x_avala_api_key_gives_the_key),
        cmocka_unit_test(test_a_configured_header_gives_the_key_only_when_configured),
        cmocka_unit_test(test_blanks_around_the_key_are_trimmed),
        cmocka_unit_test(test_the_key_points_into_the_header_value),
        cmocka_unit_test(test_two_different_keys_are_bad),
        cmocka_unit_test(test_the_same_key_in_two_different_headers_is_one),
        cmocka_unit_test(test_the_same_header_twice_is_bad_even_with_the_same_value),
        cmocka_unit_test(test_basic_auth_alone_is_no_credential),
        cmocka_unit_test(test_basic_auth_next_to_a_key_header_is_one),
        cmocka_unit_test(test_basic_and_bearer_authorization_together_are_bad),
        cmocka_unit_test(test_a_scheme_with_an_empty_token_is_bad),
        cmocka_unit_test(test_a_key_with_an_inner_space_or_odd_byte_is_bad),
        cmocka_unit_test(test_a_nul_inside_the_value_is_bad),
        cmocka_unit_test(test_an_absurdly_long_key_is_bad),
        cmocka_unit_test(test_other_headers_are_not_credentials),
        cmocka_unit_test(test_no_headers_at_all_is_none),
        cmocka_unit_test(test_is_cred_header_knows_our_headers_and_schemes),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
