/* tests/unit/auth/test_roles.c - what a key's owner changes about it at
 * request time: src/auth/keycache.c loads each key's user role and skips
 * keys of disabled users and tenants; src/auth/decide.c allows a request
 * only when the key's scopes AND the role grant every scope the route
 * requires. Real parts throughout: a store in a temporary directory, users
 * and keys made by manage/, a cache reloaded from the store, configs loaded
 * from files, credentials fed through kg_credential_feed. (The key cache's
 * own mechanics are tested in test_keycache.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "keygate/accounts.h"
#include "keygate/config.h"
#include "keygate/credential.h"
#include "keygate/decide.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/keyfmt.h"
#include "keygate/keys.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW INT64_C(1800000000)

static const unsigned char test_secret[KG_SECRET_BYTES] = "keygate roles unit test secret!!";

static const char routes[] = "route GET /v1/items read:items\n"
                             "route POST /v1/items write:items\n"
                             "route GET /v1/orders read:orders\n";

struct fixture {
    char dir[64];
    char db[128];
    struct kg_store *st;
    struct kg_secret *secret;
    struct kg_config *cfg;
    struct kg_keycache *cache;
    struct kg_keys_ctx kc;
};

static void
report(void *ctx, const char *line)
{
    (void)ctx;
    print_error("config: %s\n", line);
}

static struct kg_config *
load_config(const char *text)
{
    char path[] = "/tmp/kg-roles-conf-XXXXXX";
    struct kg_config *cfg = NULL;
    int fd = mkstemp(path);
    size_t len = strlen(text);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    assert_int_equal(kg_config_load(path, report, NULL, &cfg), KG_OK);
    unlink(path);
    return cfg;
}

static int
setup(void **state)
{
    unsigned char audit_key[KG_AUDIT_KEY_BYTES];
    struct fixture *f = calloc(1, sizeof(*f));
    struct kg_err err = {{0}};

    if (f == NULL || sodium_init() < 0)
        return -1;
    unsetenv("KEYGATE_CONFIG");
    unsetenv("KEYGATE_KEY_PREFIX");
    if (kg_fx_mkdtemp(f->dir, "roles") != 0)
        return -1;
    snprintf(f->db, sizeof(f->db), "%s/keys.db", f->dir);
    if (kg_store_open(f->db, &f->st, &err) != KG_OK ||
        kg_digest_secret_from_bytes(test_secret, &f->secret) != KG_OK ||
        kg_keycache_new(NULL, &f->cache) != KG_OK)
        return -1;
    kg_digest_audit_key(f->secret, audit_key);
    kg_store_set_audit_key(f->st, audit_key);
    f->cfg = load_config(routes);
    f->kc = (struct kg_keys_ctx){
        .store = f->st, .secret = f->secret, .cfg = f->cfg, .actor = "cli:tester"};
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    kg_keycache_free(f->cache);
    kg_config_free(f->cfg);
    kg_digest_secret_free(f->secret);
    kg_store_close(f->st);
    kg_fx_rmtree(f->dir);
    free(f);
    return 0;
}

static void
reload(struct fixture *f)
{
    struct kg_err err = {{0}};

    if (kg_keycache_reload(f->cache, f->st, NOW, &err) != KG_OK)
        fail_msg("reload should succeed: %s", err.msg);
}

static void
make_user(struct fixture *f, const char *tenant, const char *name, const char *role,
          struct kg_user_rec *u)
{
    struct kg_tenant_rec t;
    struct kg_err err = {{0}};
    enum kg_status rc;

    rc = kg_accounts_tenant_create(&f->kc, NULL, &(struct kg_tenant_new){.name = tenant}, NOW, &t,
                                   &err);
    if (rc != KG_OK && rc != KG_ECONFLICT)
        fail_msg("tenant should exist: %s", err.msg);
    if (kg_accounts_user_create(
            &f->kc, NULL,
            &(struct kg_user_new){.tenant = tenant, .username = name, .role = role, .tier = "gold"},
            NULL, NOW, u, NULL, NULL, &err) != KG_OK)
        fail_msg("user should be created: %s", err.msg);
}

/* Makes a key for user u; the caller frees *key with kg_keys_key_free(). */
static char *
make_key(struct fixture *f, const struct kg_user_rec *u, const char *scopes, struct kg_key_rec *rec)
{
    struct kg_err err = {{0}};
    char *key = NULL;

    if (kg_keys_create(&f->kc, NULL,
                       &(struct kg_key_new){.name = "k", .user = u->id, .scopes = scopes}, NOW, rec,
                       &key, &err) != KG_OK)
        fail_msg("key should be created: %s", err.msg);
    return key;
}

static struct kg_decision
decide(struct fixture *f, const struct kg_config *cfg, const char *key, const char *method,
       const char *path)
{
    const struct kg_keysnap *snap = kg_keycache_acquire(f->cache);
    struct kg_decision d;
    struct kg_cred cred;
    char value[KG_KEY_MAX + 16];

    snprintf(value, sizeof(value), "Bearer %s", key);
    kg_credential_init(&cred);
    kg_credential_feed(&cred, cfg, "Authorization", value, strlen(value));
    kg_decide(cfg, snap, f->secret, &cred, method, path, NOW, &d);
    /* The entry lives in the snapshot; tests only look at the verdict and
     * the missing scope, which is config memory. */
    d.key = NULL;
    kg_keycache_release(snap);
    return d;
}

static const struct kg_keyent *
find(struct fixture *f, const struct kg_keysnap *snap, const char *key)
{
    unsigned char digest[KG_DIGEST_BYTES];

    kg_digest_compute(f->secret, key, strlen(key), digest);
    return kg_keysnap_find(snap, digest);
}

static void
test_an_entry_carries_its_owner_role_tier_and_admin_flag(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u;
    struct kg_key_rec rec;
    const struct kg_keysnap *snap;
    const struct kg_keyent *ent;
    char *key;

    make_user(f, "acme", "bob", "read:*,write:items", &u);
    key = make_key(f, &u, "read:items", &rec);
    reload(f);
    snap = kg_keycache_acquire(f->cache);
    ent = find(f, snap, key);
    assert_non_null(ent);
    assert_string_equal(ent->user_id, u.id);
    assert_string_equal(ent->tier, "gold");
    assert_string_equal(ent->owner->role_str, "read:*,write:items");
    assert_int_equal(ent->owner->nrole, 2);
    assert_string_equal(ent->owner->role[0], "read:*");
    assert_string_equal(ent->owner->role[1], "write:items");
    assert_null(ent->owner->role[2]);
    assert_false(ent->owner->role_all);
    assert_false(ent->owner->platform_admin);
    kg_keycache_release(snap);
    kg_keys_key_free(key);
}

static void
test_a_key_can_do_only_what_both_its_scopes_and_the_role_allow(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u;
    struct kg_key_rec rec;
    struct kg_decision d;
    char *scoped, *bare;

    make_user(f, "acme", "reader", "read:*", &u);
    scoped = make_key(f, &u, "read:items", &rec);
    bare = make_key(f, &u, NULL, &rec);
    reload(f);

    assert_int_equal(decide(f, f->cfg, scoped, "GET", "/v1/items").verdict, KG_ALLOW);
    d = decide(f, f->cfg, scoped, "GET", "/v1/orders"); /* the role would, the key does not */
    assert_int_equal(d.verdict, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "read:orders");
    /* A scope-less key has exactly its role's power. */
    assert_int_equal(decide(f, f->cfg, bare, "GET", "/v1/orders").verdict, KG_ALLOW);
    d = decide(f, f->cfg, bare, "POST", "/v1/items");
    assert_int_equal(d.verdict, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "write:items");
    /* Paths without a route need no scope. */
    assert_int_equal(decide(f, f->cfg, bare, "GET", "/unrouted").verdict, KG_ALLOW);
    kg_keys_key_free(scoped);
    kg_keys_key_free(bare);
}

static void
test_narrowing_a_role_narrows_existing_keys_at_the_next_reload(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u;
    struct kg_key_rec rec;
    struct kg_decision d;
    char *key;

    make_user(f, "acme", "bob", "*", &u);
    key = make_key(f, &u, "read:items,write:items", &rec);
    reload(f);
    assert_int_equal(decide(f, f->cfg, key, "POST", "/v1/items").verdict, KG_ALLOW);
    assert_int_equal(kg_accounts_user_update(&f->kc, NULL, u.id,
                                             &(struct kg_user_change){.role = "read:items"}, NOW,
                                             &u, NULL),
                     KG_OK);
    reload(f);
    d = decide(f, f->cfg, key, "POST", "/v1/items");
    assert_int_equal(d.verdict, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "write:items");
    assert_int_equal(decide(f, f->cfg, key, "GET", "/v1/items").verdict, KG_ALLOW);
    kg_keys_key_free(key);
}

static void
test_disabling_a_user_or_tenant_makes_its_keys_invalid_and_enabling_restores_them(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec bob, eve;
    struct kg_key_rec rec;
    char *kb, *ke;

    make_user(f, "acme", "bob", "*", &bob);
    make_user(f, "globex", "eve", "*", &eve);
    kb = make_key(f, &bob, NULL, &rec);
    ke = make_key(f, &eve, NULL, &rec);
    reload(f);
    assert_int_equal(decide(f, f->cfg, kb, "GET", "/v1/items").verdict, KG_ALLOW);

    assert_int_equal(kg_accounts_user_disable(&f->kc, NULL, bob.id, NOW, NULL, NULL), KG_OK);
    reload(f);
    /* The same answer as for a revoked or unknown key. */
    assert_int_equal(decide(f, f->cfg, kb, "GET", "/v1/items").verdict, KG_DENY_INVALID);
    assert_int_equal(decide(f, f->cfg, ke, "GET", "/v1/items").verdict, KG_ALLOW);

    assert_int_equal(kg_accounts_tenant_update(
                         &f->kc, NULL, "globex",
                         &(struct kg_tenant_change){.set_disabled = true, .disabled = true}, NOW,
                         NULL, NULL),
                     KG_OK);
    reload(f);
    assert_int_equal(decide(f, f->cfg, ke, "GET", "/v1/items").verdict, KG_DENY_INVALID);

    assert_int_equal(kg_accounts_user_update(&f->kc, NULL, bob.id,
                                             &(struct kg_user_change){.set_disabled = true}, NOW,
                                             NULL, NULL),
                     KG_OK);
    assert_int_equal(kg_accounts_tenant_update(&f->kc, NULL, "globex",
                                               &(struct kg_tenant_change){.set_disabled = true},
                                               NOW, NULL, NULL),
                     KG_OK);
    reload(f);
    assert_int_equal(decide(f, f->cfg, kb, "GET", "/v1/items").verdict, KG_ALLOW);
    assert_int_equal(decide(f, f->cfg, ke, "GET", "/v1/items").verdict, KG_ALLOW);
    kg_keys_key_free(kb);
    kg_keys_key_free(ke);
}

static void
test_require_scopes_still_wants_scopes_on_the_key_itself(void **state)
{
    struct fixture *f = *state;
    struct kg_config *strict = load_config("require_scopes on\n"
                                           "route GET /v1/items read:items\n");
    struct kg_user_rec u;
    struct kg_key_rec rec;
    char *bare;

    make_user(f, "acme", "bob", "read:items", &u);
    bare = make_key(f, &u, NULL, &rec);
    reload(f);
    assert_int_equal(decide(f, strict, bare, "GET", "/v1/items").verdict, KG_DENY_NO_SCOPES);
    kg_keys_key_free(bare);
    kg_config_free(strict);
}

static void
test_grants_applies_the_same_intersection_for_admin_scopes(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec admin, narrow;
    struct kg_key_rec rec;
    const struct kg_keysnap *snap;
    const struct kg_keyent *a, *n, *bare;
    char *ka, *kn, *kb;

    make_user(f, "acme", "admin", "*", &admin);
    make_user(f, "acme", "narrow", "keys:read", &narrow);
    ka = make_key(f, &admin, "keys:read,keys:write", &rec);
    kn = make_key(f, &narrow, "keys:read", &rec);
    kb = make_key(f, &narrow, NULL, &rec);
    reload(f);
    snap = kg_keycache_acquire(f->cache);
    a = find(f, snap, ka);
    n = find(f, snap, kn);
    bare = find(f, snap, kb);
    assert_true(a->owner->role_all);
    assert_true(kg_decide_grants(a, "keys:write"));
    assert_false(kg_decide_grants(a, "users:admin"));
    assert_true(kg_decide_grants(n, "keys:read"));
    assert_false(kg_decide_grants(n, "keys:write"));
    assert_true(kg_decide_grants(bare, "keys:read"));
    assert_false(kg_decide_grants(bare, "tenants:admin"));
    kg_keycache_release(snap);
    kg_keys_key_free(ka);
    kg_keys_key_free(kn);
    kg_keys_key_free(kb);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_an_entry_carries_its_owner_role_tier_and_admin_flag),
        T(test_a_key_can_do_only_what_both_its_scopes_and_the_role_allow),
        T(test_narrowing_a_role_narrows_existing_keys_at_the_next_reload),
        T(test_disabling_a_user_or_tenant_makes_its_keys_invalid_and_enabling_restores_them),
        T(test_require_scopes_still_wants_scopes_on_the_key_itself),
        T(test_grants_applies_the_same_intersection_for_admin_scopes),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
