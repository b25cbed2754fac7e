/* tests/unit/manage/test_signup.c - src/manage/signup.c through keygate/signup.h,
 * against a real SQLite store in a temporary directory with a fixed
 * secret: the password rule, the account a signup makes (tenant, role and
 * tier from the config, username = e-mail, a first key with the role's
 * power), one audited transaction, and the failures an edge maps to 400,
 * 409 and 503. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "keygate/audit.h"
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keys.h"
#include "keygate/signup.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW INT64_C(1800000000)

static int
setup(void **state)
{
    static const unsigned char bytes[KG_SECRET_BYTES] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

    /* Signup sets its own actor; the caller's must not leak into the audit. */
    *state = kg_fx_store_new("signup", bytes, "somebody-else");
    return 0;
}

static int
teardown(void **state)
{
    kg_fx_store_free(*state);
    return 0;
}

static void
refused(const struct kg_signup_req *req, const char *field)
{
    struct kg_err err = {{0}};

    assert_int_equal(kg_signup_check(req, &err), KG_EINVAL);
    if (strncmp(err.msg, field, strlen(field)) != 0)
        fail_msg("expected words starting with \"%s\", got \"%s\"", field, err.msg);
}

static void
test_the_password_needs_twelve_characters_and_at_most_1024_bytes(void **state)
{
    struct kg_err err = {{0}};
    char longpw[KG_PASSWORD_MAX + 2];

    (void)state;
    refused(&(struct kg_signup_req){.email = "a@b.co", .password = "short1"}, "password");
    refused(&(struct kg_signup_req){.email = "a@b.co", .password = "abcdefghijk"}, "password");
    refused(&(struct kg_signup_req){.email = "a@b.co", .password = NULL}, "password");
    /* Eleven characters (22 bytes): counted as characters, not bytes. */
    refused(&(struct kg_signup_req){.email = "a@b.co",
                                    .password = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
                                                "\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                "\xc3\xa9\xc3\xa9\xc3\xa9"
                                                "\xc3\xa9"},
            "password");
    memset(longpw, 'a', sizeof(longpw) - 1);
    longpw[0] = '1';
    longpw[sizeof(longpw) - 1] = '\0';
    refused(&(struct kg_signup_req){.email = "a@b.co", .password = longpw}, "password");
    assert_int_equal(
        kg_signup_check(&(struct kg_signup_req){.email = "a@b.co", .password = "SecurePass123!"},
                        &err),
        KG_OK);
    assert_int_equal(
        kg_signup_check(&(struct kg_signup_req){.email = "a@b.co",
                                                .password = "\xc3\xa9t\xc3\xa9 \xc3\xa0 Paris 9"},
                        &err),
        KG_OK);
    /* Length is the rule: twelve of one kind, the boundary, is enough. */
    assert_int_equal(
        kg_signup_check(&(struct kg_signup_req){.email = "a@b.co", .password = "aaaaaaaaaaaa"},
                        &err),
        KG_OK);
    assert_int_equal(
        kg_signup_check(
            &(struct kg_signup_req){.email = "a@b.co", .password = "correct horse battery"}, &err),
        KG_OK);
}

static void
test_the_email_and_names_follow_the_accounts_rules(void **state)
{
    (void)state;
    refused(&(struct kg_signup_req){.email = NULL, .password = "SecurePass123!"}, "email");
    refused(&(struct kg_signup_req){.email = "no-at-sign", .password = "SecurePass123!"}, "email");
    refused(&(struct kg_signup_req){.email = "a@@b.co", .password = "SecurePass123!"}, "email");
    refused(&(struct kg_signup_req){.email = "a@b.co",
                                    .password = "SecurePass123!",
                                    .first_name = "line\nbreak"},
            "first_name");
}

static bool
find_signup_entry(const struct kg_audit_entry *e, void *ctx)
{
    if (strcmp(e->action, "signup") == 0) {
        *(struct kg_audit_entry *)ctx = *e;
        return false;
    }
    return true;
}

static void
test_a_signup_makes_a_user_and_a_key_with_the_configured_tenant_role_and_tier(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_signup_req req = {
        .email = "Dev@Acme.COM", .password = "SecurePass123!", .first_name = "Dev"};
    struct kg_user_rec user, stored;
    struct kg_key_rec rec;
    struct kg_audit_entry entry = {0};
    struct kg_err err = {{0}};
    char *key = NULL;

    if (kg_signup_create(&fx->kc, &req, NOW, &user, &rec, &key, &err) != KG_OK)
        fail_msg("signup should succeed: %s", err.msg);
    assert_non_null(key);
    assert_string_equal(user.email, "dev@acme.com");
    assert_string_equal(user.username, "dev@acme.com");
    assert_string_equal(user.first_name, "Dev");
    assert_string_equal(user.last_name, "");
    assert_string_equal(user.tenant, "signup");
    /* The default signup_role none: a role without any scope. */
    assert_string_equal(user.role, "");
    assert_string_equal(user.tier, "default");
    assert_false(user.platform_admin);
    /* Argon2id, and it verifies the password given. */
    assert_true(strncmp(user.password_hash, "$argon2id$", 10) == 0);
    assert_int_equal(
        crypto_pwhash_str_verify(user.password_hash, req.password, strlen(req.password)), 0);
    /* The first key is the user's, without scopes: the role's power. */
    assert_string_equal(rec.user_id, user.id);
    assert_string_equal(rec.scopes, "");
    assert_int_equal(kg_store_user_get(fx->store, user.id, &stored, &err), KG_OK);
    {
        unsigned char digest[KG_DIGEST_BYTES];

        kg_digest_compute(fx->secret, key, strlen(key), digest);
        assert_true(kg_digest_equal(digest, rec.digest));
    }
    /* One audit entry by "signup", never holding the password or the key. */
    assert_int_equal(kg_store_audit_each(fx->store, find_signup_entry, &entry, &err), KG_OK);
    assert_string_equal(entry.actor, KG_ACTOR_SIGNUP);
    assert_null(strstr(entry.details, req.password));
    assert_null(strstr(entry.details, key));
    assert_null(strstr(entry.details, "argon2"));
    kg_keys_key_free(key);
}

static void
test_the_config_chooses_where_accounts_go(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_signup_req req = {.email = "eve@acme.com", .password = "SecurePass123!"};
    struct kg_user_rec user;
    struct kg_key_rec rec;
    struct kg_tenant_rec t = {.name = "free", .created_at = NOW};
    struct kg_err err = {{0}};
    char *key = NULL;

    free(fx->cfg->signup_tenant);
    free(fx->cfg->signup_role);
    free(fx->cfg->signup_tier);
    fx->cfg->signup_tenant = strdup("free");
    fx->cfg->signup_role = strdup("read:*");
    fx->cfg->signup_tier = strdup("trial");
    /* A tenant that does not exist is the operator's problem, not the client's. */
    assert_int_equal(kg_signup_create(&fx->kc, &req, NOW, &user, &rec, &key, &err), KG_ENOTFOUND);
    assert_null(key);
    assert_int_equal(kg_store_tenant_insert(fx->store, &t, NULL, &err), KG_OK);
    if (kg_signup_create(&fx->kc, &req, NOW, &user, &rec, &key, &err) != KG_OK)
        fail_msg("signup should succeed: %s", err.msg);
    assert_string_equal(user.tenant, "free");
    assert_string_equal(user.role, "read:*");
    assert_string_equal(user.tier, "trial");
    assert_string_equal(rec.tenant, "free");
    kg_keys_key_free(key);
}

static void
test_an_address_already_registered_is_a_conflict(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec user;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = NULL;

    assert_int_equal(kg_signup_create(&fx->kc,
                                      &(struct kg_signup_req){.email = "twice@acme.com",
                                                              .password = "SecurePass123!"},
                                      NOW, &user, &rec, &key, &err),
                     KG_OK);
    kg_keys_key_free(key);
    key = NULL;
    assert_int_equal(kg_signup_create(&fx->kc,
                                      &(struct kg_signup_req){.email = "TWICE@acme.com",
                                                              .password = "Different123"},
                                      NOW, &user, &rec, &key, &err),
                     KG_ECONFLICT);
    assert_null(key);
    assert_non_null(strstr(err.msg, "email"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_password_needs_twelve_characters_and_at_most_1024_bytes),
        cmocka_unit_test(test_the_email_and_names_follow_the_accounts_rules),
        cmocka_unit_test_setup_teardown(
            test_a_signup_makes_a_user_and_a_key_with_the_configured_tenant_role_and_tier, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_the_config_chooses_where_accounts_go, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_address_already_registered_is_a_conflict, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
