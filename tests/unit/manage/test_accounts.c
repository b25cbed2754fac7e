/* tests/unit/manage/test_accounts.c - the tenant and user rules of
 * src/manage/accounts.c through include/keygate/accounts.h, against a real
 * SQLite store in a temporary directory with a fixed secret and clock: what
 * a valid account is, the tenant fence, disabling, roles, and the audit
 * entry every change leaves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "keygate/accounts.h"
#include "keygate/audit.h"
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keys.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW INT64_C(1800000000)

static int
setup(void **state)
{
    static const unsigned char bytes[KG_SECRET_BYTES] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

    *state = kg_fx_store_new("accounts", bytes, "key_admin1");
    return 0;
}

static int
teardown(void **state)
{
    kg_fx_store_free(*state);
    return 0;
}

static void
make_tenant(struct kg_fx_store *fx, const char *name)
{
    struct kg_tenant_rec t;
    struct kg_err err = {{0}};

    if (kg_accounts_tenant_create(&fx->kc, NULL, &(struct kg_tenant_new){.name = name}, NOW, &t,
                                  &err) != KG_OK)
        fail_msg("tenant %s should be created: %s", name, err.msg);
}

static void
make_user(struct kg_fx_store *fx, const struct kg_user_new *req, struct kg_user_rec *u)
{
    struct kg_err err = {{0}};

    if (kg_accounts_user_create(&fx->kc, NULL, req, NULL, NOW, u, NULL, NULL, &err) != KG_OK)
        fail_msg("user should be created: %s", err.msg);
}

/* The last audit entry, which a change must have just written. */
static bool
last_cb(const struct kg_audit_entry *e, void *ctx)
{
    *(struct kg_audit_entry *)ctx = *e;
    return true;
}

static struct kg_audit_entry
last_entry(struct kg_fx_store *fx)
{
    struct kg_audit_entry e;

    memset(&e, 0, sizeof(e));
    assert_int_equal(kg_audit_list(&fx->kc, NULL, NULL, NULL, last_cb, &e, NULL, NULL), KG_OK);
    return e;
}

static int
entries(struct kg_fx_store *fx)
{
    int64_t seq = 0;
    char hash[KG_AUDIT_HASH_HEX];

    assert_int_equal(kg_store_audit_head(fx->store, &seq, hash, NULL), KG_OK);
    return (int)seq;
}

/* ---- tenants ---- */

static void
test_a_tenant_is_created_once_with_a_valid_name_and_audited(void **state)
{
    struct kg_fx_store *fx = *state;
    static const char *const bad[] = {
        "", "acme corp", "acme/x", "t\xc3\xa9",
        ("0123456789012345678901234567890123456789012345678901234567890"
         "1234")};
    struct kg_tenant_rec t;
    struct kg_audit_entry e;
    struct kg_err err = {{0}};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kg_accounts_tenant_create(
                             &fx->kc, NULL, &(struct kg_tenant_new){.name = bad[i]}, NOW, &t, &err),
                         KG_EINVAL);
    assert_int_equal(
        kg_accounts_tenant_create(&fx->kc, NULL,
                                  &(struct kg_tenant_new){.name = "acme", .display_name = "A\nB"},
                                  NOW, &t, &err),
        KG_EINVAL);
    assert_non_null(strstr(err.msg, "display_name"));
    assert_int_equal(entries(fx), 0);
    assert_int_equal(kg_accounts_tenant_create(&fx->kc, NULL,
                                               &(struct kg_tenant_new){.name = "acme-eu.prod_1",
                                                                       .display_name = "Acme EU"},
                                               NOW, &t, &err),
                     KG_OK);
    assert_string_equal(t.display_name, "Acme EU");
    e = last_entry(fx);
    assert_string_equal(e.action, "tenant.create");
    assert_string_equal(e.object, "acme-eu.prod_1");
    assert_string_equal(e.tenant, "acme-eu.prod_1");
    assert_string_equal(e.actor, "key_admin1");
    assert_int_equal(kg_accounts_tenant_create(&fx->kc, NULL,
                                               &(struct kg_tenant_new){.name = "acme-eu.prod_1"},
                                               NOW, &t, &err),
                     KG_ECONFLICT);
}

static void
test_a_fenced_caller_sees_and_makes_only_its_own_tenant(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_tenant_rec t;
    struct kg_err err = {{0}}, missing = {{0}};

    make_tenant(fx, "acme");
    make_tenant(fx, "globex");
    assert_int_equal(kg_accounts_tenant_get(&fx->kc, "acme", "nope", &t, &missing), KG_ENOTFOUND);
    assert_int_equal(kg_accounts_tenant_get(&fx->kc, "acme", "globex", &t, &err), KG_ENOTFOUND);
    assert_string_equal(err.msg, "no tenant globex");
    assert_int_equal(kg_accounts_tenant_get(&fx->kc, "acme", "acme", &t, &err), KG_OK);
    assert_int_equal(kg_accounts_tenant_create(&fx->kc, "acme",
                                               &(struct kg_tenant_new){.name = "initech"}, NOW, &t,
                                               &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_accounts_tenant_update(&fx->kc, "acme", "globex",
                                               &(struct kg_tenant_change){.display_name = "x"}, NOW,
                                               &t, &err),
                     KG_ENOTFOUND);
    assert_string_equal(err.msg, "no tenant globex");
}

static bool
count_tenant(const struct kg_tenant_rec *t, void *ctx)
{
    (void)t;
    (*(int *)ctx)++;
    return true;
}

static void
test_a_fenced_tenant_listing_holds_one_tenant(void **state)
{
    struct kg_fx_store *fx = *state;
    int n = 0;

    make_tenant(fx, "acme");
    make_tenant(fx, "globex");
    assert_int_equal(kg_accounts_tenant_list(&fx->kc, NULL, NULL, count_tenant, &n, NULL, NULL),
                     KG_OK);
    assert_int_equal(n, 4); /* default and signup come with the migrations */
    n = 0;
    assert_int_equal(kg_accounts_tenant_list(&fx->kc, "acme", NULL, count_tenant, &n, NULL, NULL),
                     KG_OK);
    assert_int_equal(n, 1);
}

static void
test_disabling_a_tenant_twice_conflicts_and_enabling_brings_it_back(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_tenant_change off = {.set_disabled = true, .disabled = true};
    struct kg_tenant_change on = {.set_disabled = true, .disabled = false};
    struct kg_tenant_rec t;
    struct kg_user_rec u;
    struct kg_audit_entry e;
    struct kg_err err = {{0}};

    make_tenant(fx, "acme");
    assert_int_equal(kg_accounts_tenant_update(&fx->kc, NULL, "acme", &off, NOW + 1, &t, &err),
                     KG_OK);
    assert_int_equal(t.disabled_at, NOW + 1);
    e = last_entry(fx);
    assert_string_equal(e.action, "tenant.update");
    assert_string_equal(e.details, "{\"disabled\":true}");
    assert_int_equal(kg_accounts_tenant_update(&fx->kc, NULL, "acme", &off, NOW + 2, &t, &err),
                     KG_ECONFLICT);
    assert_string_equal(err.msg, "tenant acme is already disabled");
    /* No user can be added to a disabled tenant. */
    assert_int_equal(kg_accounts_user_create(
                         &fx->kc, NULL, &(struct kg_user_new){.tenant = "acme", .username = "x"},
                         NULL, NOW, &u, NULL, NULL, &err),
                     KG_ECONFLICT);
    assert_int_equal(kg_accounts_tenant_update(&fx->kc, NULL, "acme", &on, NOW + 3, &t, &err),
                     KG_OK);
    assert_int_equal(t.disabled_at, 0);
    assert_int_equal(kg_accounts_tenant_update(&fx->kc, NULL, "acme", &(struct kg_tenant_change){0},
                                               NOW, &t, &err),
                     KG_EINVAL);
    assert_string_equal(err.msg, "nothing to change");
}

/* ---- users ---- */

static void
test_email_addresses_are_checked_and_lower_cased(void **state)
{
    static const char *const bad[] = {
        "",
        "a",
        "no-at.example",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "a@",
        "a@example",
        "a b@example.com",
        "a@exa mple.com",
        ".a@example.com",
        "a.@example.com",
        "a@.example.com",
        "a@example..com",
        "a@example.com.",
        "\xc3\xa9@example.com",
    };
    char out[KG_EMAIL_MAX];
    struct kg_err err = {{0}};

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (kg_accounts_normalise_email(bad[i], out, &err) != KG_EINVAL)
            fail_msg("email #%zu should be refused", i);
        assert_non_null(strstr(err.msg, "email"));
    }
    assert_int_equal(kg_accounts_normalise_email("Bob.O'Neil+tag@Mail.Example.COM", out, &err),
                     KG_OK);
    assert_string_equal(out, "bob.o'neil+tag@mail.example.com");
}

static void
test_a_user_gets_the_documented_defaults_and_an_audit_entry_without_secrets(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_audit_entry e;
    const char *hash = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

    make_user(fx, &(struct kg_user_new){.email = "Ann@Example.com", .password_hash = hash}, &u);
    assert_int_equal(strncmp(u.id, "usr_", 4), 0);
    assert_string_equal(u.tenant, "default");
    assert_string_equal(u.username, "ann@example.com");
    assert_string_equal(u.email, "ann@example.com");
    assert_string_equal(u.role, "*");
    assert_string_equal(u.tier, "default");
    assert_false(u.platform_admin);
    assert_int_equal(u.created_at, NOW);
    assert_string_equal(u.password_hash, hash);
    e = last_entry(fx);
    assert_string_equal(e.action, "user.create");
    assert_string_equal(e.object, u.id);
    assert_null(strstr(e.details, "argon2"));
    assert_non_null(strstr(e.details, "\"password\":true"));
}

static void
test_user_fields_are_validated_and_name_the_field(void **state)
{
    struct kg_fx_store *fx = *state;
    static const struct {
        struct kg_user_new req;
        const char *want;
    } cases[] = {
        {{.username = NULL}, "username"},
        {{.username = ""}, "username"},
        {{.username = "a\tb"}, "username"},
        {{.username = "x", .email = "nope"}, "email"},
        {{.username = "x", .role = "read items"}, "role"},
        {{.username = "x", .tier = "gold plan"}, "tier"},
        {{.username = "x", .first_name = "\x1b[31m"}, "first_name"},
        {{.username = "x", .password_hash = "plain-text"}, "password_hash"},
        {{.username = "x", .tenant = "bad tenant"}, "tenant"},
    };
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(
            kg_accounts_user_create(&fx->kc, NULL, &cases[i].req, NULL, NOW, &u, NULL, NULL, &err),
            KG_EINVAL);
        if (strstr(err.msg, cases[i].want) == NULL)
            fail_msg("case %zu: error should name %s, got \"%s\"", i, cases[i].want, err.msg);
        assert_int_equal(kg_accounts_user_check_new(&cases[i].req, NULL), KG_EINVAL);
    }
    assert_int_equal(entries(fx), 0);
}

static void
test_creating_users_conflicts_on_username_and_email_and_needs_a_tenant(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    make_tenant(fx, "acme");
    make_user(fx, &(struct kg_user_new){.tenant = "acme", .username = "bob", .email = "b@x.io"},
              &u);
    assert_int_equal(kg_accounts_user_create(
                         &fx->kc, NULL, &(struct kg_user_new){.tenant = "acme", .username = "bob"},
                         NULL, NOW, &u, NULL, NULL, &err),
                     KG_ECONFLICT);
    /* E-mail addresses are unique across tenants, whatever their case. */
    assert_int_equal(
        kg_accounts_user_create(&fx->kc, NULL,
                                &(struct kg_user_new){.username = "robert", .email = "B@X.IO"},
                                NULL, NOW, &u, NULL, NULL, &err),
        KG_ECONFLICT);
    assert_string_equal(err.msg, "email is already in use");
    assert_int_equal(kg_accounts_user_create(
                         &fx->kc, NULL, &(struct kg_user_new){.tenant = "nowhere", .username = "x"},
                         NULL, NOW, &u, NULL, NULL, &err),
                     KG_ENOTFOUND);
    assert_string_equal(err.msg, "no tenant nowhere");
}

static void
test_only_platform_admins_grant_platform_admin(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    make_tenant(fx, "acme");
    assert_int_equal(
        kg_accounts_user_create(&fx->kc, "acme",
                                &(struct kg_user_new){.username = "x", .platform_admin = true},
                                NULL, NOW, &u, NULL, NULL, &err),
        KG_EINVAL);
    assert_non_null(strstr(err.msg, "platform_admin"));
    assert_int_equal(kg_accounts_user_create(&fx->kc, "acme",
                                             &(struct kg_user_new){.username = "x"}, NULL, NOW, &u,
                                             NULL, NULL, &err),
                     KG_OK);
    assert_string_equal(u.tenant, "acme"); /* the fence is the default tenant */
    assert_int_equal(kg_accounts_user_update(&fx->kc, "acme", u.id,
                                             &(struct kg_user_change){.set_platform_admin = true,
                                                                      .platform_admin = true},
                                             NOW, &u, &err),
                     KG_EINVAL);
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id,
                                             &(struct kg_user_change){.set_platform_admin = true,
                                                                      .platform_admin = true},
                                             NOW, &u, &err),
                     KG_OK);
    assert_true(u.platform_admin);
}

static void
test_users_resolve_by_id_or_username_and_hide_behind_the_fence(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec bob, eve, got;
    struct kg_err err = {{0}};

    make_tenant(fx, "acme");
    make_tenant(fx, "globex");
    make_user(fx, &(struct kg_user_new){.tenant = "acme", .username = "bob"}, &bob);
    make_user(fx, &(struct kg_user_new){.tenant = "globex", .username = "eve"}, &eve);
    assert_int_equal(kg_accounts_user_resolve(&fx->kc, NULL, NULL, bob.id, &got, &err), KG_OK);
    assert_string_equal(got.username, "bob");
    assert_int_equal(kg_accounts_user_resolve(&fx->kc, NULL, "acme", "bob", &got, &err), KG_OK);
    assert_string_equal(got.id, bob.id);
    assert_int_equal(kg_accounts_user_resolve(&fx->kc, NULL, NULL, "bob", &got, &err),
                     KG_ENOTFOUND); /* usernames are looked up in the default tenant */
    assert_int_equal(kg_accounts_user_resolve(&fx->kc, "acme", NULL, "bob", &got, &err), KG_OK);
    assert_int_equal(kg_accounts_user_resolve(&fx->kc, "acme", NULL, eve.id, &got, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_accounts_user_resolve(&fx->kc, "acme", "globex", "eve", &got, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_accounts_user_get(&fx->kc, "acme", eve.id, &got, &err), KG_ENOTFOUND);
    assert_int_equal(kg_accounts_user_update(&fx->kc, "acme", eve.id,
                                             &(struct kg_user_change){.tier = "gold"}, NOW, &got,
                                             &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_accounts_user_disable(&fx->kc, "acme", eve.id, NOW, &got, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_accounts_user_get(&fx->kc, NULL, eve.id, &got, &err), KG_OK);
    assert_int_equal(got.disabled_at, 0);
    assert_int_equal(kg_accounts_user_get(&fx->kc, NULL, "not an id\n", &got, &err), KG_ENOTFOUND);
}

static bool
count_user(const struct kg_user_rec *u, void *ctx)
{
    (void)u;
    (*(int *)ctx)++;
    return true;
}

static void
test_a_fenced_user_listing_holds_only_its_tenant(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    int n = 0;

    make_tenant(fx, "acme");
    make_tenant(fx, "globex");
    make_user(fx, &(struct kg_user_new){.tenant = "acme", .username = "bob"}, &u);
    make_user(fx, &(struct kg_user_new){.tenant = "globex", .username = "eve"}, &u);
    assert_int_equal(kg_accounts_user_list(&fx->kc, "acme", NULL, NULL, count_user, &n, NULL, NULL),
                     KG_OK);
    assert_int_equal(n, 1);
    n = 0;
    assert_int_equal(
        kg_accounts_user_list(&fx->kc, "acme", "globex", NULL, count_user, &n, NULL, NULL), KG_OK);
    assert_int_equal(n, 0);
    n = 0;
    assert_int_equal(kg_accounts_user_list(&fx->kc, NULL, NULL, NULL, count_user, &n, NULL, NULL),
                     KG_OK);
    assert_int_equal(n, 3); /* and the default tenant's default user */
}

static void
test_an_update_changes_what_it_names_and_records_the_new_values(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_audit_entry e;
    struct kg_err err = {{0}};

    make_user(fx, &(struct kg_user_new){.username = "bob", .email = "bob@x.io"}, &u);
    if (kg_accounts_user_update(
            &fx->kc, NULL, u.id,
            &(struct kg_user_change){
                .role = "read:*, write:a", .tier = "gold", .email = "", .first_name = "Bob"},
            NOW + 1, &u, &err) != KG_OK)
        fail_msg("update should succeed: %s", err.msg);
    assert_string_equal(u.role, "read:*,write:a");
    assert_string_equal(u.tier, "gold");
    assert_string_equal(u.email, "");
    assert_string_equal(u.first_name, "Bob");
    e = last_entry(fx);
    assert_string_equal(e.action, "user.update");
    assert_string_equal(e.details,
                        "{\"email\":null,\"first_name\":\"Bob\",\"role\":[\"read:*\",\"write:a\"],"
                        "\"tier\":\"gold\"}");
    assert_int_equal(
        kg_accounts_user_update(&fx->kc, NULL, u.id, &(struct kg_user_change){0}, NOW, &u, &err),
        KG_EINVAL);
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id,
                                             &(struct kg_user_change){.role = "bad role"}, NOW, &u,
                                             &err),
                     KG_EINVAL);
    assert_non_null(strstr(err.msg, "role"));
}

static void
test_disabling_a_user_is_recorded_and_twice_is_a_conflict(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_audit_entry e;
    struct kg_err err = {{0}};

    make_user(fx, &(struct kg_user_new){.username = "bob"}, &u);
    assert_int_equal(kg_accounts_user_disable(&fx->kc, NULL, u.id, NOW + 5, &u, &err), KG_OK);
    assert_int_equal(u.disabled_at, NOW + 5);
    e = last_entry(fx);
    assert_string_equal(e.action, "user.disable");
    assert_int_equal(kg_accounts_user_disable(&fx->kc, NULL, u.id, NOW + 6, &u, &err),
                     KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "already disabled"));
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id,
                                             &(struct kg_user_change){.set_disabled = true},
                                             NOW + 7, &u, &err),
                     KG_OK);
    assert_int_equal(u.disabled_at, 0);
}

static void
test_a_user_with_a_first_key_is_made_in_one_step_within_its_role(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_key_rec key;
    struct kg_err err = {{0}};
    char *secret = NULL;
    int before;

    before = entries(fx);
    assert_int_equal(kg_accounts_user_create(
                         &fx->kc, NULL, &(struct kg_user_new){.username = "r", .role = "read:*"},
                         &(struct kg_key_new){.name = "first", .scopes = "write:x"}, NOW, &u, &key,
                         &secret, &err),
                     KG_EINVAL);
    assert_string_equal(err.msg, "scopes exceed the user's role: write:x");
    assert_null(secret);
    assert_int_equal(kg_accounts_user_resolve(&fx->kc, NULL, NULL, "r", &u, &err), KG_ENOTFOUND);
    assert_int_equal(entries(fx), before);

    assert_int_equal(kg_accounts_user_create(
                         &fx->kc, NULL, &(struct kg_user_new){.username = "r", .role = "read:*"},
                         &(struct kg_key_new){.name = "first", .scopes = "read:items"}, NOW, &u,
                         &key, &secret, &err),
                     KG_OK);
    assert_non_null(secret);
    kg_keys_key_free(secret);
    assert_string_equal(key.user_id, u.id);
    assert_string_equal(key.tenant, "default");
    assert_int_equal(entries(fx), before + 2); /* user.create, then key.create */
    assert_string_equal(last_entry(fx).action, "key.create");
}

static void
test_a_signup_is_one_audit_entry_naming_the_key(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_keys_ctx kc = fx->kc;
    struct kg_user_rec u;
    struct kg_key_rec key;
    struct kg_audit_entry e;
    char *secret = NULL;
    int before = entries(fx);

    kc.actor = KG_ACTOR_SIGNUP;
    assert_int_equal(kg_accounts_user_create(
                         &kc, NULL, &(struct kg_user_new){.email = "new@x.io", .is_signup = true},
                         &(struct kg_key_new){.name = "signup"}, NOW, &u, &key, &secret, NULL),
                     KG_OK);
    kg_keys_key_free(secret);
    assert_int_equal(entries(fx), before + 1);
    e = last_entry(fx);
    assert_string_equal(e.action, "signup");
    assert_string_equal(e.actor, "signup");
    assert_non_null(strstr(e.details, key.id));
}

static void
test_narrowing_a_role_never_edits_a_key(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_key_rec rec, got;
    struct kg_err err = {{0}};
    char *secret = NULL;

    make_user(fx, &(struct kg_user_new){.username = "bob"}, &u);
    assert_int_equal(
        kg_keys_create(&fx->kc, NULL,
                       &(struct kg_key_new){.name = "k", .user = u.id, .scopes = "read:a,write:b"},
                       NOW, &rec, &secret, &err),
        KG_OK);
    kg_keys_key_free(secret);
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id,
                                             &(struct kg_user_change){.role = "read:*"}, NOW, &u,
                                             &err),
                     KG_OK);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, rec.id, &got, &err), KG_OK);
    assert_string_equal(got.scopes,
                        "read:a,write:b"); /* the key cache intersects at request time */
}

static void
test_the_default_user_is_made_once_and_never_behind_a_fence(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_tenant_rec t;
    struct kg_user_rec a, b;
    struct kg_err err = {{0}};

    assert_int_equal(kg_accounts_default_user(&fx->kc, NULL, "fresh", NOW, &a, &err), KG_OK);
    assert_string_equal(a.username, "default");
    assert_string_equal(a.role, "*");
    assert_int_equal(kg_accounts_default_user(&fx->kc, NULL, "fresh", NOW, &b, &err), KG_OK);
    assert_string_equal(a.id, b.id);
    assert_int_equal(kg_accounts_default_user(&fx->kc, "acme", "other", NOW, &b, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_accounts_tenant_get(&fx->kc, NULL, "other", &t, &err), KG_ENOTFOUND);
}

static void
test_user_credits_are_set_changed_made_unlimited_and_audited(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_new req = {
        .username = "payer", .has_credits = true, .credits = 100, .refill = "month"};
    struct kg_user_change chg = {.set_quota_limit = true, .quota_limit = -1};
    struct kg_user_usage used;
    struct kg_audit_entry e;
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    assert_int_equal(kg_accounts_user_create(&fx->kc, NULL, &req, NULL, NOW, &u, NULL, NULL, &err),
                     KG_OK);
    assert_true(u.has_quota);
    assert_int_equal(u.quota_limit, 100);
    assert_string_equal(u.quota_period, "month");
    e = last_entry(fx);
    assert_non_null(strstr(e.details, "\"quota_limit\":100"));
    assert_non_null(strstr(e.details, "\"quota_period\":\"month\""));
    assert_int_equal(kg_accounts_user_usage(&fx->kc, NULL, &u, NOW, &used, &err), KG_OK);
    assert_int_equal(used.credits + used.tier, 0);
    /* Fenced off: as if it did not exist. */
    assert_int_equal(kg_accounts_user_usage(&fx->kc, "elsewhere", &u, NOW, &used, &err),
                     KG_ENOTFOUND);

    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW + 1, &u, &err), KG_OK);
    assert_false(u.has_quota);
    assert_string_equal(u.quota_period, ""); /* unlimited credits have nothing to refill */
    e = last_entry(fx);
    assert_string_equal(e.action, "user.update");
    assert_string_equal(e.details, "{\"quota_limit\":-1,\"quota_period\":\"\"}");
    chg = (struct kg_user_change){.set_quota_limit = true, .quota_limit = 0, .quota_period = ""};
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW + 2, &u, &err), KG_OK);
    assert_true(u.has_quota);
    assert_int_equal(u.quota_limit, 0);
    assert_string_equal(u.quota_period, "");

    chg = (struct kg_user_change){.set_quota_limit = true, .quota_limit = -2};
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW, &u, &err), KG_EINVAL);
    chg = (struct kg_user_change){.quota_period = "week"};
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW, &u, &err), KG_EINVAL);
    req = (struct kg_user_new){.username = "x", .refill = "day"};
    assert_int_equal(kg_accounts_user_check_new(&req, &err), KG_EINVAL);
    assert_string_equal(err.msg, "a refill needs credits (quota_period needs a quota_limit)");
    req = (struct kg_user_new){.username = "x", .has_credits = true, .credits = 1000000001};
    assert_int_equal(kg_accounts_user_check_new(&req, &err), KG_EINVAL);
}

static void
test_a_refill_on_unlimited_credits_is_refused_by_update_as_by_create(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_new req = {.username = "free"};
    struct kg_user_change chg = {.quota_period = "day"};
    struct kg_user_rec u, got;
    struct kg_err err = {{0}};

    assert_int_equal(kg_accounts_user_create(&fx->kc, NULL, &req, NULL, NOW, &u, NULL, NULL, &err),
                     KG_OK);
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW, &got, &err),
                     KG_EINVAL);
    assert_string_equal(err.msg, "a refill needs credits (quota_period needs a quota_limit)");
    /* Unlimited and a refill in one change: the same. */
    chg =
        (struct kg_user_change){.set_quota_limit = true, .quota_limit = -1, .quota_period = "day"};
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW, &got, &err),
                     KG_EINVAL);
    assert_int_equal(kg_accounts_user_get(&fx->kc, NULL, u.id, &got, &err), KG_OK);
    assert_string_equal(got.quota_period, "");
    /* Credits and a refill together, then "never", are fine. */
    chg = (struct kg_user_change){.set_quota_limit = true, .quota_limit = 5, .quota_period = "day"};
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW, &got, &err), KG_OK);
    assert_string_equal(got.quota_period, "day");
    chg = (struct kg_user_change){.quota_period = ""};
    assert_int_equal(kg_accounts_user_update(&fx->kc, NULL, u.id, &chg, NOW, &got, &err), KG_OK);
    assert_string_equal(got.quota_period, "");
}

static void
test_a_tier_without_quota_shows_no_tier_usage(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_new req = {.username = "old", .tier = "gone"};
    struct kg_user_usage used;
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    const char *uids[1];
    struct kg_user_usage delta = {.tier = 7};

    assert_int_equal(kg_accounts_user_create(&fx->kc, NULL, &req, NULL, NOW, &u, NULL, NULL, &err),
                     KG_OK);
    /* Counted today while its tier had a quota, which the config no longer has. */
    uids[0] = u.id;
    delta.tier_period_start = NOW - NOW % 86400;
    assert_int_equal(kg_store_usage_add(fx->store, NULL, NULL, 0, uids, &delta, 1, NOW, &err),
                     KG_OK);
    assert_null(kg_config_tier(fx->cfg, "gone"));
    assert_int_equal(kg_accounts_user_usage(&fx->kc, NULL, &u, NOW, &used, &err), KG_OK);
    assert_int_equal(used.tier, 0);
    assert_int_equal(used.tier_period_start, 0);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_user_credits_are_set_changed_made_unlimited_and_audited),
        T(test_a_refill_on_unlimited_credits_is_refused_by_update_as_by_create),
        T(test_a_tier_without_quota_shows_no_tier_usage),
        T(test_a_tenant_is_created_once_with_a_valid_name_and_audited),
        T(test_a_fenced_caller_sees_and_makes_only_its_own_tenant),
        T(test_a_fenced_tenant_listing_holds_one_tenant),
        T(test_disabling_a_tenant_twice_conflicts_and_enabling_brings_it_back),
        T(test_email_addresses_are_checked_and_lower_cased),
        T(test_a_user_gets_the_documented_defaults_and_an_audit_entry_without_secrets),
        T(test_user_fields_are_validated_and_name_the_field),
        T(test_creating_users_conflicts_on_username_and_email_and_needs_a_tenant),
        T(test_only_platform_admins_grant_platform_admin),
        T(test_users_resolve_by_id_or_username_and_hide_behind_the_fence),
        T(test_a_fenced_user_listing_holds_only_its_tenant),
        T(test_an_update_changes_what_it_names_and_records_the_new_values),
        T(test_disabling_a_user_is_recorded_and_twice_is_a_conflict),
        T(test_a_user_with_a_first_key_is_made_in_one_step_within_its_role),
        T(test_a_signup_is_one_audit_entry_naming_the_key),
        T(test_narrowing_a_role_never_edits_a_key),
        T(test_the_default_user_is_made_once_and_never_behind_a_fence),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
