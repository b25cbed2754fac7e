/* tests/unit/manage/test_keys.c - the key lifecycle core against a real
 * SQLite store in a temporary directory, with a fixed secret and a clock
 * the tests set. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keyfmt.h"
#include "keygate/keys.h"
#include "keygate/store.h"

#define NOW INT64_C(1800000000) /* 2027-01-15T08:00:00Z */
#define DAY INT64_C(86400)

struct fixture {
    char dir[64];
    char db[128];
    struct kg_store *store;
    struct kg_secret *secret;
    struct kg_config *cfg;
    struct kg_keys_ctx kc;
};

static int
setup(void **state)
{
    static const unsigned char bytes[KG_SECRET_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    struct fixture *fx = calloc(1, sizeof(*fx));
    struct kg_err err = {{0}};

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/kg_test_keys_XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->db, sizeof(fx->db), "%s/keys.db", fx->dir);
    if (kg_store_open(fx->db, &fx->store, &err) != KG_OK)
        fail_msg("store should open in a fresh directory: %s", err.msg);
    assert_int_equal(kg_digest_secret_from_bytes(bytes, &fx->secret), KG_OK);
    assert_int_equal(kg_config_defaults(&fx->cfg), KG_OK);
    fx->kc = (struct kg_keys_ctx){fx->store, fx->secret, fx->cfg};
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    char path[160];

    kg_store_close(fx->store);
    kg_digest_secret_free(fx->secret);
    kg_config_free(fx->cfg);
    for (const char *const *sfx = (const char *const[]){"", "-wal", "-shm", "-journal", NULL};
         *sfx != NULL; sfx++) {
        snprintf(path, sizeof(path), "%s%s", fx->db, *sfx);
        unlink(path);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* Creates a key that must succeed; returns it (caller frees) and fills rec. */
static char *
make(struct fixture *fx, const struct kg_key_new *req, int64_t now, struct kg_key_rec *rec)
{
    struct kg_err err = {{0}};
    char *key = NULL;

    if (kg_keys_create(&fx->kc, req, now, rec, &key, &err) != KG_OK)
        fail_msg("create should succeed: %s", err.msg);
    assert_non_null(key);
    return key;
}

/* Creates, and drops the full key at once. */
static void
make_id(struct fixture *fx, const char *name, int64_t now, const char *expires, char id[KG_ID_MAX])
{
    struct kg_key_rec rec;
    char *key = make(fx, &(struct kg_key_new){.name = name, .expires = expires}, now, &rec);

    kg_keys_key_free(key);
    memcpy(id, rec.id, KG_ID_MAX);
}

/* Expects create to fail with st and err words containing want; nothing stored. */
static void
refuse(struct fixture *fx, const struct kg_key_new *req, enum kg_status st, const char *want)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = (char *)"untouched";

    assert_int_equal(kg_keys_create(&fx->kc, req, NOW, &rec, &key, &err), st);
    assert_null(key);
    if (strstr(err.msg, want) == NULL)
        fail_msg("error should mention \"%s\", got \"%s\"", want, err.msg);
    /* The pre-check edges use must agree with create. */
    assert_int_equal(kg_keys_check_new(req, NOW, NULL), st);
}

static bool
count_cb(const struct kg_key_rec *rec, void *ctx)
{
    (void)rec;
    (*(int *)ctx)++;
    return true;
}

static int
stored_keys(struct fixture *fx)
{
    int n = 0;

    assert_int_equal(kg_store_key_each(fx->store, count_cb, &n, NULL), KG_OK);
    return n;
}

struct digest_hunt {
    unsigned char digest[KG_DIGEST_BYTES];
    char id[KG_ID_MAX];
    int matches;
};

static bool
digest_cb(const struct kg_key_rec *rec, void *ctx)
{
    struct digest_hunt *h = ctx;

    if (kg_digest_equal(rec->digest, h->digest)) {
        h->matches++;
        memcpy(h->id, rec->id, KG_ID_MAX);
    }
    return true;
}

static void
test_created_key_is_well_formed_and_its_digest_finds_the_record(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec rec, got;
    struct digest_hunt hunt = {.matches = 0};
    char *key = make(fx, &(struct kg_key_new){.name = "ci deploy"}, NOW, &rec);
    size_t len = strlen(key);

    assert_true(kg_keyfmt_check(key, len));
    assert_int_equal(strncmp(key, fx->cfg->key_prefix, strlen(fx->cfg->key_prefix)), 0);
    kg_digest_compute(fx->secret, key, len, hunt.digest);
    assert_int_equal(kg_store_key_each(fx->store, digest_cb, &hunt, NULL), KG_OK);
    assert_int_equal(hunt.matches, 1);
    assert_string_equal(hunt.id, rec.id);

    assert_int_equal(kg_keys_get(&fx->kc, rec.id, &got, NULL), KG_OK);
    assert_memory_equal(got.digest, hunt.digest, KG_DIGEST_BYTES);
    /* The display parts are the key's own first and last characters. */
    assert_int_equal(strncmp(key, got.prefix, strlen(got.prefix)), 0);
    assert_string_equal(key + len - 4, got.last4);
    kg_keys_key_free(key);
}

static void
test_created_record_has_the_documented_defaults(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec rec, got;
    char *key = make(fx, &(struct kg_key_new){.name = "defaults"}, NOW, &rec);

    kg_keys_key_free(key);
    assert_int_equal(kg_keys_get(&fx->kc, rec.id, &got, NULL), KG_OK);
    assert_int_equal(strncmp(got.id, "key_", 4), 0);
    assert_string_equal(got.name, "defaults");
    assert_string_equal(got.tenant, "default");
    assert_string_equal(got.scopes, "");
    assert_int_equal(got.created_at, NOW);
    assert_int_equal(got.expires_at, 0);
    assert_int_equal(got.revoked_at, 0);
    assert_int_equal(got.last_used_at, 0);
    assert_int_equal(got.quota_limit, -1);
    assert_string_equal(got.metadata, "{}");
    assert_string_equal(got.rotated_to, "");
}

static void
test_two_creates_give_different_keys_and_ids(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec a, b;
    char *ka = make(fx, &(struct kg_key_new){.name = "same"}, NOW, &a);
    char *kb = make(fx, &(struct kg_key_new){.name = "same"}, NOW, &b);

    assert_true(strcmp(ka, kb) != 0);
    assert_string_not_equal(a.id, b.id);
    kg_keys_key_free(ka);
    kg_keys_key_free(kb);
}

static void
test_create_refuses_a_missing_empty_or_overlong_name(void **state)
{
    struct fixture *fx = *state;
    char name[KG_NAME_MAX + 1];
    struct kg_key_rec rec;
    char *key;

    refuse(fx, &(struct kg_key_new){.name = NULL}, KG_EINVAL, "name");
    refuse(fx, &(struct kg_key_new){.name = ""}, KG_EINVAL, "name");
    memset(name, 'n', sizeof(name) - 1);
    name[KG_NAME_MAX] = '\0'; /* 129 bytes */
    refuse(fx, &(struct kg_key_new){.name = name}, KG_EINVAL, "name must be 1 to 128 bytes");
    assert_int_equal(stored_keys(fx), 0);

    name[KG_NAME_MAX - 1] = '\0'; /* exactly 128 is fine */
    key = make(fx, &(struct kg_key_new){.name = name}, NOW, &rec);
    kg_keys_key_free(key);
    assert_string_equal(rec.name, name);
}

static void
test_create_refuses_control_characters_and_broken_utf8_in_the_name(void **state)
{
    struct fixture *fx = *state;
    static const char *const bad[] = {
        "line\nbreak", "tab\there", "bell\a", "esc\x1b[31m",  "del\x7f",
        "c1\xc2\x85",  "cut\xc3",   "\xff",   "over\xc0\xaf", "surrogate\xed\xa0\x80",
    };
    struct kg_key_rec rec;
    char *key;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        refuse(fx, &(struct kg_key_new){.name = bad[i]}, KG_EINVAL, "name");
    assert_int_equal(stored_keys(fx), 0);
    /* Real UTF-8 text is welcome. */
    key = make(fx, &(struct kg_key_new){.name = "Schl\xc3\xbcssel \xe2\x9c\x93"}, NOW, &rec);
    kg_keys_key_free(key);
}

static void
test_create_normalises_scopes_and_refuses_a_malformed_one(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec rec;
    char *key;

    refuse(fx, &(struct kg_key_new){.name = "s", .scopes = "read:a,bad scope"}, KG_EINVAL, "scope");
    refuse(fx, &(struct kg_key_new){.name = "s", .scopes = "read:a,"}, KG_EINVAL, "scope");
    refuse(fx, &(struct kg_key_new){.name = "s", .scopes = "re*d"}, KG_EINVAL, "scope");
    assert_int_equal(stored_keys(fx), 0);
    key = make(fx, &(struct kg_key_new){.name = "s", .scopes = " read:a , write:b,read:a"}, NOW,
               &rec);
    kg_keys_key_free(key);
    assert_string_equal(rec.scopes, "read:a,write:b");
}

static void
test_create_refuses_a_bad_tenant_and_defaults_to_default(void **state)
{
    struct fixture *fx = *state;
    char tenant[KG_TENANT_MAX + 2];
    struct kg_key_rec rec;
    char *key;

    refuse(fx, &(struct kg_key_new){.name = "t", .tenant = ""}, KG_EINVAL, "tenant");
    refuse(fx, &(struct kg_key_new){.name = "t", .tenant = "acme corp"}, KG_EINVAL, "tenant");
    refuse(fx, &(struct kg_key_new){.name = "t", .tenant = "acme/x"}, KG_EINVAL, "tenant");
    memset(tenant, 't', KG_TENANT_MAX + 1);
    tenant[KG_TENANT_MAX + 1] = '\0';
    refuse(fx, &(struct kg_key_new){.name = "t", .tenant = tenant}, KG_EINVAL, "tenant");
    assert_int_equal(stored_keys(fx), 0);

    tenant[KG_TENANT_MAX] = '\0';
    key = make(fx, &(struct kg_key_new){.name = "t", .tenant = tenant}, NOW, &rec);
    kg_keys_key_free(key);
    key = make(fx, &(struct kg_key_new){.name = "t", .tenant = "acme-eu.prod_1"}, NOW, &rec);
    kg_keys_key_free(key);
    assert_string_equal(rec.tenant, "acme-eu.prod_1");
}

static void
test_create_takes_durations_and_times_and_refuses_a_past_expiry(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec rec;
    char *key;

    key = make(fx, &(struct kg_key_new){.name = "e", .expires = "30d"}, NOW, &rec);
    kg_keys_key_free(key);
    assert_int_equal(rec.expires_at, NOW + 30 * DAY);
    key = make(fx, &(struct kg_key_new){.name = "e", .expires = "2030-01-01T00:00:00Z"}, NOW, &rec);
    kg_keys_key_free(key);
    assert_int_equal(rec.expires_at, INT64_C(1893456000));

    refuse(fx, &(struct kg_key_new){.name = "e", .expires = "2020-01-01T00:00:00Z"}, KG_EINVAL,
           "past");
    refuse(fx, &(struct kg_key_new){.name = "e", .expires = "soon"}, KG_EINVAL, "expiry");
    refuse(fx, &(struct kg_key_new){.name = "e", .expires = "0d"}, KG_EINVAL, "duration");
    refuse(fx, &(struct kg_key_new){.name = "e", .expires = ""}, KG_EINVAL, "expiry");
    assert_int_equal(stored_keys(fx), 2);
}

struct seen {
    char ids[8][KG_ID_MAX];
    enum kg_key_state states[8];
    int n;
};

static bool
seen_cb(const struct kg_key_rec *rec, enum kg_key_state st, void *ctx)
{
    struct seen *s = ctx;

    assert_true(s->n < 8);
    memcpy(s->ids[s->n], rec->id, KG_ID_MAX);
    s->states[s->n++] = st;
    return true;
}

static struct seen
list_state(struct fixture *fx, const char *state, int64_t now)
{
    struct kg_keys_filter f = {.all_states = true};
    struct seen s = {.n = 0};

    if (state != NULL)
        assert_int_equal(kg_key_state_parse(state, &f.state, &f.all_states, NULL), KG_OK);
    assert_int_equal(kg_keys_list(&fx->kc, &f, now, seen_cb, &s, NULL), KG_OK);
    return s;
}

static void
test_list_filters_by_state_at_the_time_it_is_given(void **state)
{
    struct fixture *fx = *state;
    char active[KG_ID_MAX], expiring[KG_ID_MAX], revoked[KG_ID_MAX];
    struct seen s;

    make_id(fx, "active", NOW, NULL, active);
    make_id(fx, "expiring", NOW + 1, "1d", expiring);
    make_id(fx, "revoked", NOW + 2, NULL, revoked);
    assert_int_equal(kg_keys_revoke(&fx->kc, revoked, NOW + 3, NULL, NULL), KG_OK);

    s = list_state(fx, NULL, NOW + 10);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], active); /* oldest first */
    assert_string_equal(s.ids[2], revoked);
    s = list_state(fx, "all", NOW + 10);
    assert_int_equal(s.n, 3);

    s = list_state(fx, "active", NOW + 10);
    assert_int_equal(s.n, 2);
    s = list_state(fx, "expired", NOW + 10);
    assert_int_equal(s.n, 0);
    s = list_state(fx, "revoked", NOW + 10);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], revoked);
    assert_int_equal(s.states[0], KG_KEY_REVOKED);

    /* A day later the expiring key has expired; nothing else changed. */
    s = list_state(fx, "expired", NOW + 2 * DAY);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], expiring);
    assert_int_equal(s.states[0], KG_KEY_EXPIRED);
    s = list_state(fx, "active", NOW + 2 * DAY);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], active);
}

static void
test_list_filters_by_tenant(void **state)
{
    struct fixture *fx = *state;
    struct kg_keys_filter f = {.all_states = true, .tenant = "acme"};
    struct kg_key_rec rec;
    struct seen s = {.n = 0};

    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "a", .tenant = "acme"}, NOW, &rec));
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "b"}, NOW, &rec));
    assert_int_equal(kg_keys_list(&fx->kc, &f, NOW, seen_cb, &s, NULL), KG_OK);
    assert_int_equal(s.n, 1);
}

static void
test_revoking_twice_is_a_conflict_that_names_the_key(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char id[KG_ID_MAX], want[96];

    make_id(fx, "r", NOW, NULL, id);
    assert_int_equal(kg_keys_revoke(&fx->kc, id, NOW + 5, &rec, &err), KG_OK);
    assert_int_equal(rec.revoked_at, NOW + 5);
    assert_int_equal(kg_keys_revoke(&fx->kc, id, NOW + 6, NULL, &err), KG_ECONFLICT);
    snprintf(want, sizeof(want), "key %s is already revoked", id);
    assert_string_equal(err.msg, want);
    assert_int_equal(kg_keys_get(&fx->kc, id, &rec, NULL), KG_OK);
    assert_int_equal(rec.revoked_at, NOW + 5);
}

static void
test_revoking_or_getting_an_unknown_id_is_not_found(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    assert_int_equal(kg_keys_revoke(&fx->kc, "key_nope", NOW, NULL, &err), KG_ENOTFOUND);
    assert_string_equal(err.msg, "no key key_nope");
    assert_int_equal(kg_keys_get(&fx->kc, "key_nope", &rec, &err), KG_ENOTFOUND);
    assert_int_equal(kg_keys_get(&fx->kc, "bad id\n", &rec, &err), KG_EINVAL);
}

static void
test_rotating_without_grace_revokes_the_old_key_now(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec fresh, old, got;
    struct kg_err err = {{0}};
    char id[KG_ID_MAX];
    char *key = NULL;

    make_id(fx, "rot", NOW, NULL, id);
    if (kg_keys_rotate(&fx->kc, id, 0, NOW + 100, &fresh, &old, &key, &err) != KG_OK)
        fail_msg("rotate should succeed: %s", err.msg);
    assert_true(kg_keyfmt_check(key, strlen(key)));
    kg_keys_key_free(key);
    assert_string_not_equal(fresh.id, id);
    assert_int_equal(fresh.created_at, NOW + 100);
    assert_int_equal(old.revoked_at, NOW + 100);
    assert_string_equal(old.rotated_to, fresh.id);

    assert_int_equal(kg_keys_get(&fx->kc, id, &got, NULL), KG_OK);
    assert_int_equal(got.revoked_at, NOW + 100);
    assert_string_equal(got.rotated_to, fresh.id);
    assert_int_equal(kg_key_state_of(&got, NOW + 100), KG_KEY_REVOKED);
    assert_int_equal(kg_keys_get(&fx->kc, fresh.id, &got, NULL), KG_OK);
    assert_int_equal(kg_key_state_of(&got, NOW + 100), KG_KEY_ACTIVE);
}

static void
test_rotating_with_grace_keeps_the_old_key_working_until_the_grace_ends(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec fresh, old, got;
    struct kg_err err = {{0}};
    char id[KG_ID_MAX];
    char *key = NULL;

    make_id(fx, "grace", NOW, NULL, id);
    if (kg_keys_rotate(&fx->kc, id, 3600, NOW, &fresh, &old, &key, &err) != KG_OK)
        fail_msg("rotate should succeed: %s", err.msg);
    kg_keys_key_free(key);
    assert_int_equal(old.revoked_at, NOW + 3600);
    assert_int_equal(kg_keys_get(&fx->kc, id, &got, NULL), KG_OK);
    assert_int_equal(got.revoked_at, NOW + 3600);
    assert_int_equal(kg_key_state_of(&got, NOW + 3599), KG_KEY_ACTIVE);
    assert_int_equal(kg_key_state_of(&got, NOW + 3600), KG_KEY_REVOKED);

    /* Rotating the same key again is refused: it already has a successor. */
    key = (char *)"untouched";
    assert_int_equal(kg_keys_rotate(&fx->kc, id, 0, NOW + 1, &fresh, NULL, &key, &err),
                     KG_ECONFLICT);
    assert_null(key);
    assert_non_null(strstr(err.msg, "already rotated"));

    /* Revoking during the grace period ends it at once. */
    assert_int_equal(kg_keys_revoke(&fx->kc, id, NOW + 10, NULL, &err), KG_OK);
    assert_int_equal(kg_keys_get(&fx->kc, id, &got, NULL), KG_OK);
    assert_int_equal(got.revoked_at, NOW + 10);
    assert_int_equal(kg_keys_revoke(&fx->kc, id, NOW + 11, NULL, &err), KG_ECONFLICT);
}

static void
test_rotation_carries_name_scopes_tenant_limits_metadata_and_expiry(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec rec, fresh, got;
    struct kg_err err = {{0}};
    char *key;

    /* Limits have no create flag yet, so the old key is stored directly. */
    memset(&rec, 0, sizeof(rec));
    kg_keyfmt_new_id("key", rec.id);
    snprintf(rec.name, sizeof(rec.name), "billing");
    snprintf(rec.prefix, sizeof(rec.prefix), "kg_AbCd");
    snprintf(rec.last4, sizeof(rec.last4), "wxyz");
    memset(rec.digest, 0x5a, sizeof(rec.digest));
    snprintf(rec.scopes, sizeof(rec.scopes), "read:invoices,write:invoices");
    snprintf(rec.tenant, sizeof(rec.tenant), "acme");
    rec.created_at = NOW - DAY;
    rec.expires_at = NOW + 90 * DAY;
    rec.last_used_at = NOW - 60;
    snprintf(rec.rate, sizeof(rec.rate), "100/min");
    rec.rate_burst = 20;
    rec.quota_limit = 5000;
    snprintf(rec.quota_period, sizeof(rec.quota_period), "month");
    rec.quota_used = 42;
    snprintf(rec.metadata, sizeof(rec.metadata), "{\"team\":\"finance\"}");
    assert_int_equal(kg_store_key_insert(fx->store, &rec, NULL), KG_OK);

    if (kg_keys_rotate(&fx->kc, rec.id, 0, NOW, &fresh, NULL, &key, &err) != KG_OK)
        fail_msg("rotate should succeed: %s", err.msg);
    kg_keys_key_free(key);
    assert_int_equal(kg_keys_get(&fx->kc, fresh.id, &got, NULL), KG_OK);
    assert_string_equal(got.name, "billing");
    assert_string_equal(got.scopes, "read:invoices,write:invoices");
    assert_string_equal(got.tenant, "acme");
    assert_int_equal(got.expires_at, NOW + 90 * DAY);
    assert_string_equal(got.rate, "100/min");
    assert_int_equal(got.rate_burst, 20);
    assert_int_equal(got.quota_limit, 5000);
    assert_string_equal(got.quota_period, "month");
    assert_int_equal(got.quota_used, 42);
    assert_string_equal(got.metadata, "{\"team\":\"finance\"}");
    /* What belongs to the new key itself starts afresh. */
    assert_int_equal(got.created_at, NOW);
    assert_int_equal(got.last_used_at, 0);
    assert_int_equal(got.revoked_at, 0);
    assert_string_equal(got.rotated_to, "");
    assert_memory_not_equal(got.digest, rec.digest, KG_DIGEST_BYTES);
}

static void
test_rotation_refuses_revoked_expired_unknown_keys_and_negative_grace(void **state)
{
    struct fixture *fx = *state;
    struct kg_key_rec fresh;
    struct kg_err err = {{0}};
    char revoked[KG_ID_MAX], expired[KG_ID_MAX], fine[KG_ID_MAX];
    char *key = NULL;

    make_id(fx, "revoked", NOW, NULL, revoked);
    make_id(fx, "expired", NOW, "1h", expired);
    make_id(fx, "fine", NOW, NULL, fine);
    assert_int_equal(kg_keys_revoke(&fx->kc, revoked, NOW, NULL, NULL), KG_OK);

    assert_int_equal(kg_keys_rotate(&fx->kc, revoked, 0, NOW + 1, &fresh, NULL, &key, &err),
                     KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "already revoked"));
    assert_int_equal(kg_keys_rotate(&fx->kc, expired, 0, NOW + 7200, &fresh, NULL, &key, &err),
                     KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "expired"));
    assert_int_equal(kg_keys_rotate(&fx->kc, "key_nope", 0, NOW, &fresh, NULL, &key, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_keys_rotate(&fx->kc, fine, -1, NOW, &fresh, NULL, &key, &err), KG_EINVAL);
    assert_non_null(strstr(err.msg, "grace"));
    assert_int_equal(kg_keys_rotate(&fx->kc, fine, INT64_MAX, NOW, &fresh, NULL, &key, &err),
                     KG_EINVAL);
    assert_null(key);
    assert_int_equal(stored_keys(fx), 3);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_created_key_is_well_formed_and_its_digest_finds_the_record),
        T(test_created_record_has_the_documented_defaults),
        T(test_two_creates_give_different_keys_and_ids),
        T(test_create_refuses_a_missing_empty_or_overlong_name),
        T(test_create_refuses_control_characters_and_broken_utf8_in_the_name),
        T(test_create_normalises_scopes_and_refuses_a_malformed_one),
        T(test_create_refuses_a_bad_tenant_and_defaults_to_default),
        T(test_create_takes_durations_and_times_and_refuses_a_past_expiry),
        T(test_list_filters_by_state_at_the_time_it_is_given),
        T(test_list_filters_by_tenant),
        T(test_revoking_twice_is_a_conflict_that_names_the_key),
        T(test_revoking_or_getting_an_unknown_id_is_not_found),
        T(test_rotating_without_grace_revokes_the_old_key_now),
        T(test_rotating_with_grace_keeps_the_old_key_working_until_the_grace_ends),
        T(test_rotation_carries_name_scopes_tenant_limits_metadata_and_expiry),
        T(test_rotation_refuses_revoked_expired_unknown_keys_and_negative_grace),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
