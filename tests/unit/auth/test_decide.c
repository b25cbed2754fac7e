/* tests/unit/auth/test_decide.c - src/auth/decide.c through keygate/decide.h.
 *
 * Every verdict from real parts: keys made by kg_keyfmt_generate, digests
 * by a test secret, records in a real store in a temporary directory, a
 * key cache reloaded from it, configs loaded from files with route lines,
 * credentials fed through kg_credential_feed. The clock is an argument, so
 * expiry and revocation boundaries are checked to the second. */
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

#include "keygate/config.h"
#include "keygate/credential.h"
#include "keygate/decide.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/keyfmt.h"
#include "keygate/store.h"
#include "unit/fixture.h"
#include "unit/fixture.h"

#define NOW 1800000000 /* 2027-01-15, a fixed clock */

static const unsigned char test_secret[KG_SECRET_BYTES] = "keygate decide unit test secret!";

static const char routes[] = "route GET /v1/items read:items\n"
                             "route POST /v1/items write:items\n"
                             "route * /admin* admin:all read:items\n";

enum {
    K_READER,
    K_WRITER,
    K_NOSCOPE,
    K_STAR,
    K_EXPIRING,
    K_GRACE,
    K_REVOKED,
    K_UNKNOWN,
    K_NOROLE,   /* no scopes; its user's role grants no scope (signup_role none) */
    K_READROLE, /* no scopes; its user's role is read:* */
    NKEYS
};

struct fixture {
    char dir[64];
    char dbpath[128];
    struct kg_store *st;
    struct kg_secret *secret;
    struct kg_keycache *kc;
    const struct kg_keysnap *snap;
    struct kg_config *cfg;    /* require_scopes off */
    struct kg_config *strict; /* require_scopes on */
    struct kg_config *exact;  /* route_case sensitive */
    char keys[NKEYS][KG_KEY_MAX];
};

static int
group_setup(void **state)
{
    (void)state;
    kg_fx_clear_env();
    return sodium_init() < 0 ? -1 : 0;
}

/* Generates fixture key i and stores its record (unless it is K_UNKNOWN). */
static int
add_key(struct fixture *f, int i, const char *id, const char *scopes, int64_t expires_at,
        int64_t revoked_at)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    size_t len;

    if (kg_keyfmt_generate("kg_", f->keys[i], &err) != KG_OK)
        return -1;
    if (i == K_UNKNOWN)
        return 0;
    len = strlen(f->keys[i]);
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.id, sizeof(rec.id), "%s", id);
    snprintf(rec.name, sizeof(rec.name), "%s", id);
    kg_keyfmt_display(f->keys[i], len, rec.prefix, rec.last4);
    kg_digest_compute(f->secret, f->keys[i], len, rec.digest);
    snprintf(rec.scopes, sizeof(rec.scopes), "%s", scopes);
    snprintf(rec.tenant, sizeof(rec.tenant), "acme");
    rec.created_at = NOW - 86400;
    rec.expires_at = expires_at;
    rec.revoked_at = revoked_at;
    rec.quota_limit = -1;
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK) {
        fprintf(stderr, "insert %s: %s\n", id, err.msg);
        return -1;
    }
    return 0;
}

/* Generates fixture key i (no scopes) and stores it as the first key of a
 * new user of tenant acme whose role is role. */
static int
add_owned_key(struct fixture *f, int i, const char *id, const char *user_id, const char *role)
{
    struct kg_key_rec rec;
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    size_t len;

    if (kg_keyfmt_generate("kg_", f->keys[i], &err) != KG_OK)
        return -1;
    len = strlen(f->keys[i]);
    memset(&rec, 0, sizeof(rec));
    memset(&u, 0, sizeof(u));
    snprintf(u.id, sizeof(u.id), "%s", user_id);
    snprintf(u.tenant, sizeof(u.tenant), "acme");
    snprintf(u.username, sizeof(u.username), "%s", user_id);
    snprintf(u.role, sizeof(u.role), "%s", role);
    snprintf(u.tier, sizeof(u.tier), "default");
    u.created_at = NOW - 86400;
    snprintf(rec.id, sizeof(rec.id), "%s", id);
    snprintf(rec.name, sizeof(rec.name), "%s", id);
    kg_keyfmt_display(f->keys[i], len, rec.prefix, rec.last4);
    kg_digest_compute(f->secret, f->keys[i], len, rec.digest);
    rec.created_at = NOW - 86400;
    rec.quota_limit = -1;
    if (kg_store_user_insert(f->st, &u, &rec, NULL, &err) != KG_OK) {
        fprintf(stderr, "insert %s: %s\n", id, err.msg);
        return -1;
    }
    return 0;
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct kg_err err = {{0}};
    char strict_text[512], exact_text[512];

    if (f == NULL)
        return -1;
    *state = f;
    if (kg_fx_mkdtemp(f->dir, "decide") != 0)
        return -1;
    snprintf(f->dbpath, sizeof(f->dbpath), "%s/keys.db", f->dir);
    snprintf(strict_text, sizeof(strict_text), "require_scopes on\n%s", routes);
    snprintf(exact_text, sizeof(exact_text), "route_case sensitive\n%s", routes);
    if (kg_store_open(f->dbpath, &f->st, &err) != KG_OK ||
        kg_digest_secret_from_bytes(test_secret, &f->secret) != KG_OK ||
        kg_keycache_new(NULL, &f->kc) != KG_OK || kg_fx_load_config(routes, &f->cfg) != 0 ||
        kg_fx_load_config(strict_text, &f->strict) != 0 ||
        kg_fx_load_config(exact_text, &f->exact) != 0)
        return -1;
    if (add_key(f, K_READER, "key_reader", "read:items", 0, 0) != 0 ||
        add_key(f, K_WRITER, "key_writer", "read:items,write:items", 0, 0) != 0 ||
        add_key(f, K_NOSCOPE, "key_noscope", "", 0, 0) != 0 ||
        add_key(f, K_STAR, "key_star", "*", 0, 0) != 0 ||
        add_key(f, K_EXPIRING, "key_expiring", "read:items", NOW + 100, 0) != 0 ||
        add_key(f, K_GRACE, "key_grace", "read:items", 0, NOW + 60) != 0 ||
        add_key(f, K_REVOKED, "key_revoked", "read:items", 0, NOW - 1) != 0 ||
        add_key(f, K_UNKNOWN, "", "", 0, 0) != 0 ||
        add_owned_key(f, K_NOROLE, "key_norole", "usr_norole", "") != 0 ||
        add_owned_key(f, K_READROLE, "key_readrole", "usr_readrole", "read:*") != 0)
        return -1;
    if (kg_keycache_reload(f->kc, f->st, NOW, &err) != KG_OK) {
        fprintf(stderr, "reload: %s\n", err.msg);
        return -1;
    }
    f->snap = kg_keycache_acquire(f->kc);
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    if (f == NULL)
        return 0;
    kg_keycache_release(f->snap);
    kg_keycache_free(f->kc);
    kg_store_close(f->st);
    kg_digest_secret_free(f->secret);
    kg_config_free(f->cfg);
    kg_config_free(f->strict);
    kg_config_free(f->exact);
    sodium_memzero(f->keys, sizeof(f->keys));
    kg_fx_rmtree(f->dir);
    free(f);
    return 0;
}

/* Decides a request carrying "Authorization: Bearer <key>". */
static void
decide_key(struct fixture *f, const struct kg_config *cfg, const char *key, const char *method,
           const char *path, int64_t now, struct kg_decision *d)
{
    char value[KG_KEY_MAX + 16];
    struct kg_cred cred;

    snprintf(value, sizeof(value), "Bearer %s", key);
    kg_credential_init(&cred);
    kg_credential_feed(&cred, cfg, "Authorization", value, strlen(value));
    kg_decide(cfg, f->snap, f->secret, &cred, method, path, now, d);
    sodium_memzero(value, sizeof(value));
}

static void
assert_verdict(const struct kg_decision *d, enum kg_verdict want)
{
    if (d->verdict != want)
        fail_msg("verdict should be %s, got %s", kg_verdict_str(want), kg_verdict_str(d->verdict));
}

static void
test_no_credential_is_denied_as_not_provided(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;
    struct kg_cred cred;

    kg_credential_init(&cred);
    kg_credential_feed(&cred, f->cfg, "Accept", "*/*", 3);
    /* Basic auth is not a credential of ours. */
    kg_credential_feed(&cred, f->cfg, "Authorization", "Basic dXNlcjpwYXNz", 18);
    kg_decide(f->cfg, f->snap, f->secret, &cred, "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_NO_CREDENTIAL);
    assert_null(d.key);
    assert_null(d.route);
    assert_null(d.missing_scope);
}

static void
test_a_malformed_credential_is_invalid(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;
    struct kg_cred cred;

    kg_credential_init(&cred);
    kg_credential_feed(&cred, f->cfg, "Authorization", "Bearer", 6);
    kg_decide(f->cfg, f->snap, f->secret, &cred, "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    assert_null(d.key);

    /* Plausible as a header value, but not a keygate key at all. */
    decide_key(f, f->cfg, "not-a-key", "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    assert_null(d.key);
}

static void
test_an_ambiguous_credential_is_invalid_even_when_both_keys_are_good(void **state)
{
    struct fixture *f = *state;
    const char *a = f->keys[K_READER], *b = f->keys[K_WRITER];
    char value[KG_KEY_MAX + 16];
    struct kg_decision d;
    struct kg_cred cred;

    snprintf(value, sizeof(value), "Bearer %s", a);
    kg_credential_init(&cred);
    kg_credential_feed(&cred, f->cfg, "Authorization", value, strlen(value));
    kg_credential_feed(&cred, f->cfg, "X-Avala-Api-Key", b, strlen(b));
    kg_decide(f->cfg, f->snap, f->secret, &cred, "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    assert_null(d.key);
}

static void
test_a_key_with_one_char_changed_fails_the_checksum_before_any_lookup(void **state)
{
    struct fixture *f = *state;
    char forged[KG_KEY_MAX];
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    struct kg_decision d;
    const struct kg_keysnap *snap;
    size_t len = strlen(f->keys[K_READER]);

    memcpy(forged, f->keys[K_READER], len + 1);
    forged[5] = forged[5] == 'A' ? 'B' : 'A'; /* a body character */
    assert_false(kg_keyfmt_check(forged, len));

    /* Store the forged string's digest too: only the checksum can refuse it now. */
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.id, sizeof(rec.id), "key_forged");
    kg_digest_compute(f->secret, forged, len, rec.digest);
    rec.created_at = NOW - 10;
    rec.quota_limit = -1;
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_OK);
    assert_int_equal(kg_keycache_reload(f->kc, f->st, NOW, &err), KG_OK);
    snap = kg_keycache_acquire(f->kc);
    assert_non_null(kg_keysnap_find(snap, rec.digest));
    kg_keycache_release(f->snap);
    f->snap = snap;

    decide_key(f, f->cfg, forged, "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    assert_null(d.key);
    sodium_memzero(forged, sizeof(forged));
}

static void
test_a_well_formed_unknown_key_is_invalid(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    assert_true(kg_keyfmt_check(f->keys[K_UNKNOWN], strlen(f->keys[K_UNKNOWN])));
    decide_key(f, f->cfg, f->keys[K_UNKNOWN], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    assert_null(d.key);
}

static void
test_a_key_with_a_different_secret_is_unknown(void **state)
{
    struct fixture *f = *state;
    unsigned char other_bytes[KG_SECRET_BYTES];
    struct kg_secret *other = NULL;
    char value[KG_KEY_MAX + 16];
    struct kg_decision d;
    struct kg_cred cred;

    /* A stolen database without the pepper gives nothing to match against. */
    memcpy(other_bytes, test_secret, sizeof(other_bytes));
    other_bytes[0] ^= 1;
    assert_int_equal(kg_digest_secret_from_bytes(other_bytes, &other), KG_OK);
    snprintf(value, sizeof(value), "Bearer %s", f->keys[K_READER]);
    kg_credential_init(&cred);
    kg_credential_feed(&cred, f->cfg, "Authorization", value, strlen(value));
    kg_decide(f->cfg, f->snap, other, &cred, "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    kg_digest_secret_free(other);
}

static void
test_a_revoked_key_is_invalid(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_REVOKED], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    assert_null(d.key);
}

static void
test_a_scheduled_revocation_bites_at_its_second_without_a_reload(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_GRACE], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    decide_key(f, f->cfg, f->keys[K_GRACE], "GET", "/v1/items", NOW + 59, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_non_null(d.key);
    assert_string_equal(d.key->id, "key_grace");
    decide_key(f, f->cfg, f->keys[K_GRACE], "GET", "/v1/items", NOW + 60, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    assert_null(d.key);
    decide_key(f, f->cfg, f->keys[K_GRACE], "GET", "/v1/items", NOW + 61, &d);
    assert_verdict(&d, KG_DENY_INVALID);
}

static void
test_expiry_is_exact_to_the_second(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_EXPIRING], "GET", "/v1/items", NOW + 99, &d);
    assert_verdict(&d, KG_ALLOW);
    /* expires_at == now is expired. */
    decide_key(f, f->cfg, f->keys[K_EXPIRING], "GET", "/v1/items", NOW + 100, &d);
    assert_verdict(&d, KG_DENY_EXPIRED);
    assert_non_null(d.key);
    assert_string_equal(d.key->id, "key_expiring");
    decide_key(f, f->cfg, f->keys[K_EXPIRING], "GET", "/v1/items", NOW + 101, &d);
    assert_verdict(&d, KG_DENY_EXPIRED);
}

static void
test_expired_wins_over_a_missing_scope(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_EXPIRING], "POST", "/v1/items", NOW + 100, &d);
    assert_verdict(&d, KG_DENY_EXPIRED);
}

static void
test_revoked_wins_over_expired(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    struct kg_decision d;
    const struct kg_keysnap *snap;
    char key[KG_KEY_MAX];
    size_t len;

    assert_int_equal(kg_keyfmt_generate("kg_", key, &err), KG_OK);
    len = strlen(key);
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.id, sizeof(rec.id), "key_both");
    kg_digest_compute(f->secret, key, len, rec.digest);
    rec.created_at = NOW - 10;
    rec.expires_at = NOW + 10;
    rec.revoked_at = NOW + 20; /* in grace when loaded */
    rec.quota_limit = -1;
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_OK);
    assert_int_equal(kg_keycache_reload(f->kc, f->st, NOW, &err), KG_OK);
    snap = kg_keycache_acquire(f->kc);
    kg_keycache_release(f->snap);
    f->snap = snap;

    decide_key(f, f->cfg, key, "GET", "/other", NOW + 15, &d);
    assert_verdict(&d, KG_DENY_EXPIRED);
    decide_key(f, f->cfg, key, "GET", "/other", NOW + 20, &d);
    assert_verdict(&d, KG_DENY_INVALID);
    sodium_memzero(key, sizeof(key));
}

static void
test_a_key_with_the_route_scope_is_allowed(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_READER], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_non_null(d.key);
    assert_string_equal(d.key->id, "key_reader");
    assert_string_equal(d.key->tenant, "acme");
    assert_non_null(d.route);
    assert_int_equal(d.route->line, 1);
    assert_null(d.missing_scope);

    decide_key(f, f->cfg, f->keys[K_WRITER], "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_int_equal(d.route->line, 2);
}

static void
test_other_credential_styles_are_decided_the_same(void **state)
{
    struct fixture *f = *state;
    const char *key = f->keys[K_READER];
    char value[KG_KEY_MAX + 16];
    struct kg_decision d;
    struct kg_cred cred;

    kg_credential_init(&cred);
    kg_credential_feed(&cred, f->cfg, "X-Avala-Api-Key", key, strlen(key));
    kg_decide(f->cfg, f->snap, f->secret, &cred, "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);

    snprintf(value, sizeof(value), "apikey %s", key);
    kg_credential_init(&cred);
    kg_credential_feed(&cred, f->cfg, "authorization", value, strlen(value));
    kg_decide(f->cfg, f->snap, f->secret, &cred, "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
}

static void
test_a_missing_scope_is_forbidden_and_named(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_READER], "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_non_null(d.key);
    assert_string_equal(d.key->id, "key_reader");
    assert_non_null(d.route);
    assert_int_equal(d.route->line, 2);
    assert_string_equal(d.missing_scope, "write:items");

    /* A route needing two scopes names the first one missing. */
    decide_key(f, f->cfg, f->keys[K_READER], "DELETE", "/admin/users", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "admin:all");
    assert_int_equal(d.route->line, 3);
}

static void
test_a_wildcard_key_passes_every_route(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_STAR], "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    decide_key(f, f->cfg, f->keys[K_STAR], "PUT", "/admin/x", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    decide_key(f, f->strict, f->keys[K_STAR], "PUT", "/admin/x", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
}

static void
test_a_key_without_scopes_has_full_access(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_NOSCOPE], "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_non_null(d.route);
    assert_null(d.missing_scope);
    decide_key(f, f->cfg, f->keys[K_NOSCOPE], "DELETE", "/admin/everything", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
}

/* The exact rule: a key without scopes sets no limit of its own, so it can
 * do what its user's role grants: everything under role "*" (the test
 * above: those keys belong to a tenant's default user), nothing a route
 * requires a scope for under an empty role (signup_role none). */
static void
test_a_key_without_scopes_is_capped_by_its_users_role(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_NOROLE], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "read:items");
    decide_key(f, f->cfg, f->keys[K_NOROLE], "DELETE", "/admin/everything", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "admin:all");
    /* No rule, no scope needed: any authenticated key passes. */
    decide_key(f, f->cfg, f->keys[K_NOROLE], "GET", "/v2/other", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_false(kg_decide_grants(d.key, "read:items"));
    assert_false(kg_decide_grants(d.key, "keys:read"));

    decide_key(f, f->cfg, f->keys[K_READROLE], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_true(kg_decide_grants(d.key, "read:anything"));
    assert_false(kg_decide_grants(d.key, "write:items"));
    decide_key(f, f->cfg, f->keys[K_READROLE], "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "write:items");
    decide_key(f, f->cfg, f->keys[K_READROLE], "GET", "/admin/x", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "admin:all");

    /* A role-"*" key without scopes keeps full access. */
    decide_key(f, f->cfg, f->keys[K_NOSCOPE], "GET", "/admin/x", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_true(kg_decide_grants(d.key, "admin:all"));
}

static void
test_routes_match_the_paths_letters_in_any_case_by_default(void **state)
{
    struct fixture *f = *state;
    static const char *const paths[] = {"/ADMIN/x", "/Admin", "/aDmIn/users", "/adMIN"};
    struct kg_decision d;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        decide_key(f, f->cfg, f->keys[K_READER], "GET", paths[i], NOW, &d);
        if (d.verdict != KG_DENY_SCOPE || d.route == NULL || d.route->line != 3)
            fail_msg("GET %s should meet the /admin* rule (line 3) and be %s, got %s", paths[i],
                     kg_verdict_str(KG_DENY_SCOPE), kg_verdict_str(d.verdict));
        assert_string_equal(d.missing_scope, "admin:all");
    }
    /* Exact patterns too: /V1/Items is /v1/items. */
    decide_key(f, f->cfg, f->keys[K_READER], "POST", "/V1/Items", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "write:items");
    /* Letters only: a different path is still different. */
    decide_key(f, f->cfg, f->keys[K_READER], "POST", "/v1/itemz", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_null(d.route);
}

static void
test_route_case_sensitive_matches_letters_exactly(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->exact, f->keys[K_READER], "GET", "/ADMIN/x", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_null(d.route);
    decide_key(f, f->exact, f->keys[K_READER], "GET", "/admin/x", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "admin:all");
}

static void
test_an_unmatched_route_is_allowed_without_require_scopes(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->cfg, f->keys[K_READER], "GET", "/v2/other", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    assert_null(d.route);
    assert_non_null(d.key);
}

static void
test_require_scopes_denies_keys_without_scopes(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->strict, f->keys[K_NOSCOPE], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_NO_SCOPES);
    assert_non_null(d.key);
    decide_key(f, f->strict, f->keys[K_NOSCOPE], "GET", "/v2/other", NOW, &d);
    assert_verdict(&d, KG_DENY_NO_SCOPES);
}

static void
test_require_scopes_denies_unmatched_routes(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->strict, f->keys[K_READER], "GET", "/v2/other", NOW, &d);
    assert_verdict(&d, KG_DENY_NO_ROUTE);
    assert_null(d.route);
    assert_non_null(d.key);
    decide_key(f, f->strict, f->keys[K_READER], "PUT", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_NO_ROUTE);
}

static void
test_require_scopes_still_allows_a_key_with_the_scope(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;

    decide_key(f, f->strict, f->keys[K_READER], "GET", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_ALLOW);
    decide_key(f, f->strict, f->keys[K_READER], "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    assert_string_equal(d.missing_scope, "write:items");
}

static void
test_decide_clears_every_field_of_a_reused_decision(void **state)
{
    struct fixture *f = *state;
    struct kg_decision d;
    struct kg_cred cred;

    decide_key(f, f->cfg, f->keys[K_READER], "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_SCOPE);
    kg_credential_init(&cred);
    kg_decide(f->cfg, f->snap, f->secret, &cred, "POST", "/v1/items", NOW, &d);
    assert_verdict(&d, KG_DENY_NO_CREDENTIAL);
    assert_null(d.key);
    assert_null(d.route);
    assert_null(d.missing_scope);
}

static void
test_verdict_names_are_short_and_distinct_where_it_matters(void **state)
{
    (void)state;
    assert_string_equal(kg_verdict_str(KG_ALLOW), "allowed");
    assert_string_equal(kg_verdict_str(KG_DENY_NO_CREDENTIAL), "no_credential");
    assert_string_equal(kg_verdict_str(KG_DENY_INVALID), "invalid");
    assert_string_equal(kg_verdict_str(KG_DENY_EXPIRED), "expired");
    assert_string_equal(kg_verdict_str(KG_DENY_SCOPE), "forbidden");
    assert_string_equal(kg_verdict_str(KG_DENY_NO_SCOPES), "forbidden");
    assert_string_equal(kg_verdict_str(KG_DENY_NO_ROUTE), "forbidden");
    assert_string_equal(kg_verdict_str(KG_DENY_RATE), "rate_limited");
    assert_string_equal(kg_verdict_str(KG_DENY_QUOTA), "quota_exceeded");
    assert_string_equal(kg_verdict_str(KG_DENY_THROTTLED), "throttled");
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_no_credential_is_denied_as_not_provided),
        T(test_a_malformed_credential_is_invalid),
        T(test_an_ambiguous_credential_is_invalid_even_when_both_keys_are_good),
        T(test_a_key_with_one_char_changed_fails_the_checksum_before_any_lookup),
        T(test_a_well_formed_unknown_key_is_invalid),
        T(test_a_key_with_a_different_secret_is_unknown),
        T(test_a_revoked_key_is_invalid),
        T(test_a_scheduled_revocation_bites_at_its_second_without_a_reload),
        T(test_expiry_is_exact_to_the_second),
        T(test_expired_wins_over_a_missing_scope),
        T(test_revoked_wins_over_expired),
        T(test_a_key_with_the_route_scope_is_allowed),
        T(test_other_credential_styles_are_decided_the_same),
        T(test_a_missing_scope_is_forbidden_and_named),
        T(test_a_wildcard_key_passes_every_route),
        T(test_a_key_without_scopes_has_full_access),
        T(test_a_key_without_scopes_is_capped_by_its_users_role),
        T(test_routes_match_the_paths_letters_in_any_case_by_default),
        T(test_route_case_sensitive_matches_letters_exactly),
        T(test_an_unmatched_route_is_allowed_without_require_scopes),
        T(test_require_scopes_denies_keys_without_scopes),
        T(test_require_scopes_denies_unmatched_routes),
        T(test_require_scopes_still_allows_a_key_with_the_scope),
        T(test_decide_clears_every_field_of_a_reused_decision),
        cmocka_unit_test(test_verdict_names_are_short_and_distinct_where_it_matters),
    };
#undef T

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
