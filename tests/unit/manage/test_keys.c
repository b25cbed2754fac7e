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

#include "keygate/accounts.h"
#include "keygate/audit.h"
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keyfmt.h"
#include "keygate/keys.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW INT64_C(1800000000) /* 2027-01-15T08:00:00Z */
#define DAY INT64_C(86400)

static int
setup(void **state)
{
    static const unsigned char bytes[KG_SECRET_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

    *state = kg_fx_store_new("keys", bytes, "cli:tester");
    return 0;
}

static int
teardown(void **state)
{
    kg_fx_store_free(*state);
    return 0;
}

/* Creates a key that must succeed; returns it (caller frees) and fills rec. */
static char *
make(struct kg_fx_store *fx, const struct kg_key_new *req, int64_t now, struct kg_key_rec *rec)
{
    struct kg_err err = {{0}};
    char *key = NULL;

    if (kg_keys_create(&fx->kc, NULL, req, now, rec, &key, &err) != KG_OK)
        fail_msg("create should succeed: %s", err.msg);
    assert_non_null(key);
    return key;
}

/* Creates, and drops the full key at once. */
static void
make_id(struct kg_fx_store *fx, const char *name, int64_t now, const char *expires,
        char id[KG_ID_MAX])
{
    struct kg_key_rec rec;
    char *key = make(fx, &(struct kg_key_new){.name = name, .expires = expires}, now, &rec);

    kg_keys_key_free(key);
    memcpy(id, rec.id, KG_ID_MAX);
}

/* Expects create to fail with st and err words containing want; nothing stored. */
static void
refuse(struct kg_fx_store *fx, const struct kg_key_new *req, enum kg_status st, const char *want)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = (char *)"untouched";

    assert_int_equal(kg_keys_create(&fx->kc, NULL, req, NOW, &rec, &key, &err), st);
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
stored_keys(struct kg_fx_store *fx)
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
    struct kg_fx_store *fx = *state;
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

    assert_int_equal(kg_keys_get(&fx->kc, NULL, rec.id, &got, NULL), KG_OK);
    assert_memory_equal(got.digest, hunt.digest, KG_DIGEST_BYTES);
    /* The display parts are the key's own first and last characters. */
    assert_int_equal(strncmp(key, got.prefix, strlen(got.prefix)), 0);
    assert_string_equal(key + len - 4, got.last4);
    kg_keys_key_free(key);
}

static void
test_created_record_has_the_documented_defaults(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec rec, got;
    char *key = make(fx, &(struct kg_key_new){.name = "defaults"}, NOW, &rec);

    kg_keys_key_free(key);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, rec.id, &got, NULL), KG_OK);
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
    struct kg_fx_store *fx = *state;
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
    struct kg_fx_store *fx = *state;
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
    struct kg_fx_store *fx = *state;
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
    struct kg_fx_store *fx = *state;
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
test_create_stores_a_rate_and_burst_and_refuses_bad_ones(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec rec, got;
    char *key;

    refuse(fx, &(struct kg_key_new){.name = "r", .rate = "5/d"}, KG_EINVAL, "rate");
    refuse(fx, &(struct kg_key_new){.name = "r", .rate = "0/s"}, KG_EINVAL, "rate");
    refuse(fx, &(struct kg_key_new){.name = "r", .rate = "5/s", .rate_burst = -1}, KG_EINVAL,
           "rate_burst");
    assert_int_equal(stored_keys(fx), 0);
    key = make(fx, &(struct kg_key_new){.name = "r", .rate = "5/s", .rate_burst = 5}, NOW, &rec);
    kg_keys_key_free(key);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, rec.id, &got, NULL), KG_OK);
    assert_string_equal(got.rate, "5/s");
    assert_int_equal(got.rate_burst, 5);
    key = make(fx, &(struct kg_key_new){.name = "d"}, NOW, &rec);
    kg_keys_key_free(key);
    assert_string_equal(rec.rate, "");
    assert_int_equal(rec.rate_burst, 0);
}

static void
test_create_refuses_a_bad_tenant_and_defaults_to_default(void **state)
{
    struct kg_fx_store *fx = *state;
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
    struct kg_fx_store *fx = *state;
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
list_state(struct kg_fx_store *fx, const char *state, int64_t now)
{
    struct kg_keys_filter f = {.all_states = true};
    struct seen s = {.n = 0};

    if (state != NULL)
        assert_int_equal(kg_key_state_parse(state, &f.state, &f.all_states, NULL), KG_OK);
    assert_int_equal(kg_keys_list(&fx->kc, NULL, &f, NULL, now, seen_cb, &s, NULL, NULL), KG_OK);
    return s;
}

static void
test_list_filters_by_state_at_the_time_it_is_given(void **state)
{
    struct kg_fx_store *fx = *state;
    char active[KG_ID_MAX], expiring[KG_ID_MAX], revoked[KG_ID_MAX];
    struct seen s;

    make_id(fx, "active", NOW, NULL, active);
    make_id(fx, "expiring", NOW + 1, "1d", expiring);
    make_id(fx, "revoked", NOW + 2, NULL, revoked);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, revoked, NOW + 3, NULL, NULL), KG_OK);

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
    struct kg_fx_store *fx = *state;
    struct kg_keys_filter f = {.all_states = true, .tenant = "acme"};
    struct kg_key_rec rec;
    struct seen s = {.n = 0};

    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "a", .tenant = "acme"}, NOW, &rec));
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "b"}, NOW, &rec));
    assert_int_equal(kg_keys_list(&fx->kc, NULL, &f, NULL, NOW, seen_cb, &s, NULL, NULL), KG_OK);
    assert_int_equal(s.n, 1);
}

static void
test_revoking_twice_is_a_conflict_that_names_the_key(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char id[KG_ID_MAX], want[96];

    make_id(fx, "r", NOW, NULL, id);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, id, NOW + 5, &rec, &err), KG_OK);
    assert_int_equal(rec.revoked_at, NOW + 5);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, id, NOW + 6, NULL, &err), KG_ECONFLICT);
    snprintf(want, sizeof(want), "key %s is already revoked", id);
    assert_string_equal(err.msg, want);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, id, &rec, NULL), KG_OK);
    assert_int_equal(rec.revoked_at, NOW + 5);
}

static void
test_revoking_or_getting_an_unknown_id_is_not_found(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, "key_nope", NOW, NULL, &err), KG_ENOTFOUND);
    assert_string_equal(err.msg, "no key key_nope");
    assert_int_equal(kg_keys_get(&fx->kc, NULL, "key_nope", &rec, &err), KG_ENOTFOUND);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, "bad id\n", &rec, &err), KG_EINVAL);
}

static void
test_rotating_without_grace_revokes_the_old_key_now(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec fresh, old, got;
    struct kg_err err = {{0}};
    char id[KG_ID_MAX];
    char *key = NULL;

    make_id(fx, "rot", NOW, NULL, id);
    if (kg_keys_rotate(&fx->kc, NULL, id, 0, NOW + 100, &fresh, &old, &key, &err) != KG_OK)
        fail_msg("rotate should succeed: %s", err.msg);
    assert_true(kg_keyfmt_check(key, strlen(key)));
    kg_keys_key_free(key);
    assert_string_not_equal(fresh.id, id);
    assert_int_equal(fresh.created_at, NOW + 100);
    assert_int_equal(old.revoked_at, NOW + 100);
    assert_string_equal(old.rotated_to, fresh.id);

    assert_int_equal(kg_keys_get(&fx->kc, NULL, id, &got, NULL), KG_OK);
    assert_int_equal(got.revoked_at, NOW + 100);
    assert_string_equal(got.rotated_to, fresh.id);
    assert_int_equal(kg_key_state_of(&got, NOW + 100), KG_KEY_REVOKED);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, fresh.id, &got, NULL), KG_OK);
    assert_int_equal(kg_key_state_of(&got, NOW + 100), KG_KEY_ACTIVE);
}

static void
test_rotating_with_grace_keeps_the_old_key_working_until_the_grace_ends(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec fresh, old, got;
    struct kg_err err = {{0}};
    char id[KG_ID_MAX];
    char *key = NULL;

    make_id(fx, "grace", NOW, NULL, id);
    if (kg_keys_rotate(&fx->kc, NULL, id, 3600, NOW, &fresh, &old, &key, &err) != KG_OK)
        fail_msg("rotate should succeed: %s", err.msg);
    kg_keys_key_free(key);
    assert_int_equal(old.revoked_at, NOW + 3600);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, id, &got, NULL), KG_OK);
    assert_int_equal(got.revoked_at, NOW + 3600);
    assert_int_equal(kg_key_state_of(&got, NOW + 3599), KG_KEY_ACTIVE);
    assert_int_equal(kg_key_state_of(&got, NOW + 3600), KG_KEY_REVOKED);

    /* Rotating the same key again is refused: it already has a successor. */
    key = (char *)"untouched";
    assert_int_equal(kg_keys_rotate(&fx->kc, NULL, id, 0, NOW + 1, &fresh, NULL, &key, &err),
                     KG_ECONFLICT);
    assert_null(key);
    assert_non_null(strstr(err.msg, "already rotated"));

    /* Revoking during the grace period ends it at once. */
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, id, NOW + 10, NULL, &err), KG_OK);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, id, &got, NULL), KG_OK);
    assert_int_equal(got.revoked_at, NOW + 10);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, id, NOW + 11, NULL, &err), KG_ECONFLICT);
}

static void
test_rotation_carries_name_scopes_tenant_limits_metadata_and_expiry(void **state)
{
    struct kg_fx_store *fx = *state;
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

    if (kg_keys_rotate(&fx->kc, NULL, rec.id, 0, NOW, &fresh, NULL, &key, &err) != KG_OK)
        fail_msg("rotate should succeed: %s", err.msg);
    kg_keys_key_free(key);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, fresh.id, &got, NULL), KG_OK);
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
    struct kg_fx_store *fx = *state;
    struct kg_key_rec fresh;
    struct kg_err err = {{0}};
    char revoked[KG_ID_MAX], expired[KG_ID_MAX], fine[KG_ID_MAX];
    char *key = NULL;

    make_id(fx, "revoked", NOW, NULL, revoked);
    make_id(fx, "expired", NOW, "1h", expired);
    make_id(fx, "fine", NOW, NULL, fine);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, revoked, NOW, NULL, NULL), KG_OK);

    assert_int_equal(kg_keys_rotate(&fx->kc, NULL, revoked, 0, NOW + 1, &fresh, NULL, &key, &err),
                     KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "already revoked"));
    assert_int_equal(
        kg_keys_rotate(&fx->kc, NULL, expired, 0, NOW + 7200, &fresh, NULL, &key, &err),
        KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "expired"));
    assert_int_equal(kg_keys_rotate(&fx->kc, NULL, "key_nope", 0, NOW, &fresh, NULL, &key, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_keys_rotate(&fx->kc, NULL, fine, -1, NOW, &fresh, NULL, &key, &err),
                     KG_EINVAL);
    assert_non_null(strstr(err.msg, "grace"));
    assert_int_equal(kg_keys_rotate(&fx->kc, NULL, fine, INT64_MAX, NOW, &fresh, NULL, &key, &err),
                     KG_EINVAL);
    assert_null(key);
    assert_int_equal(stored_keys(fx), 3);
}

/* ---- owners, roles, fences, updates, pages and the audit trail ---- */

/* Makes a tenant and a user in it with role; fills u. */
static void
make_user(struct kg_fx_store *fx, const char *tenant, const char *username, const char *role,
          struct kg_user_rec *u)
{
    struct kg_tenant_rec t;
    struct kg_err err = {{0}};
    enum kg_status rc;

    rc = kg_accounts_tenant_create(&fx->kc, NULL, &(struct kg_tenant_new){.name = tenant}, NOW, &t,
                                   &err);
    if (rc != KG_OK && rc != KG_ECONFLICT)
        fail_msg("tenant %s should exist: %s", tenant, err.msg);
    if (kg_accounts_user_create(
            &fx->kc, NULL,
            &(struct kg_user_new){.tenant = tenant, .username = username, .role = role}, NULL, NOW,
            u, NULL, NULL, &err) != KG_OK)
        fail_msg("user %s should be created: %s", username, err.msg);
}

struct actions {
    char v[32][KG_AUDIT_ACTION_MAX];
    char actor[32][KG_AUDIT_ACTOR_MAX];
    int n;
};

static bool
action_cb(const struct kg_audit_entry *e, void *ctx)
{
    struct actions *a = ctx;

    assert_true(a->n < 32);
    memcpy(a->v[a->n], e->action, sizeof(e->action));
    memcpy(a->actor[a->n], e->actor, sizeof(e->actor));
    a->n++;
    return true;
}

static struct actions
audit_actions(struct kg_fx_store *fx)
{
    struct actions a = {.n = 0};

    assert_int_equal(kg_audit_list(&fx->kc, NULL, NULL, NULL, action_cb, &a, NULL, NULL), KG_OK);
    return a;
}

static void
test_create_for_a_user_takes_its_tenant_and_id(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_key_rec rec;

    make_user(fx, "acme", "bob", "*", &u);
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "k", .user = u.id}, NOW, &rec));
    assert_string_equal(rec.user_id, u.id);
    assert_string_equal(rec.tenant, "acme");
    /* By username within the tenant too. */
    kg_keys_key_free(
        make(fx, &(struct kg_key_new){.name = "k", .user = "bob", .tenant = "acme"}, NOW, &rec));
    assert_string_equal(rec.user_id, u.id);
}

static void
test_create_without_a_user_goes_to_the_tenant_default_user_made_on_demand(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec rec, second;
    struct kg_user_rec u;
    struct actions a;

    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "k", .tenant = "fresh"}, NOW, &rec));
    assert_int_equal(kg_accounts_user_get(&fx->kc, NULL, rec.user_id, &u, NULL), KG_OK);
    assert_string_equal(u.username, "default");
    assert_string_equal(u.tenant, "fresh");
    assert_string_equal(u.role, "*");
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "k", .tenant = "fresh"}, NOW, &second));
    assert_string_equal(second.user_id, rec.user_id);
    /* Each piece made on demand is audited, in order. */
    a = audit_actions(fx);
    assert_int_equal(a.n, 4);
    assert_string_equal(a.v[0], "tenant.create");
    assert_string_equal(a.v[1], "user.create");
    assert_string_equal(a.v[2], "key.create");
    assert_string_equal(a.v[3], "key.create");
    assert_string_equal(a.actor[0], "cli:tester");
}

static void
test_scopes_beyond_the_role_are_refused_and_a_scopeless_key_is_allowed(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = NULL;

    make_user(fx, "acme", "reader", "read:*,billing:view", &u);
    assert_int_equal(
        kg_keys_create(
            &fx->kc, NULL,
            &(struct kg_key_new){.name = "k", .user = u.id, .scopes = "read:items,write:items"},
            NOW, &rec, &key, &err),
        KG_EINVAL);
    assert_null(key);
    assert_string_equal(err.msg, "scopes exceed the user's role: write:items");
    assert_int_equal(kg_keys_create(&fx->kc, NULL,
                                    &(struct kg_key_new){.name = "k", .user = u.id, .scopes = "*"},
                                    NOW, &rec, &key, &err),
                     KG_EINVAL);
    assert_int_equal(stored_keys(fx), 0);
    kg_keys_key_free(make(
        fx, &(struct kg_key_new){.name = "k", .user = u.id, .scopes = "read:x,read:*,billing:view"},
        NOW, &rec));
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "k", .user = u.id}, NOW, &rec));
    assert_string_equal(rec.scopes, "");
}

static void
test_create_refuses_unknown_foreign_and_disabled_owners(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u, other;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = NULL;

    make_user(fx, "acme", "bob", "*", &u);
    make_user(fx, "globex", "eve", "*", &other);
    assert_int_equal(kg_keys_create(&fx->kc, NULL,
                                    &(struct kg_key_new){.name = "k", .user = "nobody"}, NOW, &rec,
                                    &key, &err),
                     KG_ENOTFOUND);
    assert_string_equal(err.msg, "no user nobody");
    /* A user id with another tenant named is refused, not moved. */
    assert_int_equal(
        kg_keys_create(&fx->kc, NULL,
                       &(struct kg_key_new){.name = "k", .user = u.id, .tenant = "globex"}, NOW,
                       &rec, &key, &err),
        KG_ENOTFOUND);
    /* With a fence, another tenant's user does not exist. */
    assert_int_equal(kg_keys_create(&fx->kc, "acme",
                                    &(struct kg_key_new){.name = "k", .user = other.id}, NOW, &rec,
                                    &key, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_keys_create(&fx->kc, "acme",
                                    &(struct kg_key_new){.name = "k", .tenant = "globex"}, NOW,
                                    &rec, &key, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_accounts_user_disable(&fx->kc, NULL, u.id, NOW, NULL, &err), KG_OK);
    assert_int_equal(kg_keys_create(&fx->kc, NULL, &(struct kg_key_new){.name = "k", .user = u.id},
                                    NOW, &rec, &key, &err),
                     KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "disabled"));
    assert_null(key);
    assert_int_equal(stored_keys(fx), 0);
}

static void
test_the_fence_makes_another_tenants_key_look_missing(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec rec, got, fresh;
    struct kg_user_rec u;
    struct kg_err err = {{0}}, missing = {{0}};
    char *key = NULL;

    make_user(fx, "acme", "bob", "*", &u);
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "k", .user = u.id}, NOW, &rec));
    assert_int_equal(kg_keys_get(&fx->kc, "globex", "key_nope", &got, &missing), KG_ENOTFOUND);

    assert_string_equal(missing.msg, "no key key_nope");
    assert_int_equal(kg_keys_get(&fx->kc, "globex", rec.id, &got, &err), KG_ENOTFOUND);
    snprintf(missing.msg, sizeof(missing.msg), "no key %s", rec.id);
    assert_string_equal(err.msg, missing.msg); /* the same words as for a missing key */
    assert_int_equal(kg_keys_revoke(&fx->kc, "globex", rec.id, NOW, NULL, &err), KG_ENOTFOUND);
    assert_int_equal(kg_keys_rotate(&fx->kc, "globex", rec.id, 0, NOW, &fresh, NULL, &key, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_keys_update(&fx->kc, "globex", rec.id, &(struct kg_key_change){.name = "x"},
                                    NOW, NULL, &err),
                     KG_ENOTFOUND);
    assert_null(key);
    /* Nothing changed, and the owner's own fence works. */
    assert_int_equal(kg_keys_get(&fx->kc, "acme", rec.id, &got, &err), KG_OK);
    assert_string_equal(got.name, "k");
    assert_int_equal(got.revoked_at, 0);
}

static void
test_a_fenced_listing_walks_only_its_own_tenant(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_keys_filter all = {.all_states = true};
    struct kg_keys_filter other = {.all_states = true, .tenant = "globex"};
    struct kg_user_rec u, v;
    struct kg_key_rec rec;
    struct seen s = {.n = 0};

    make_user(fx, "acme", "bob", "*", &u);
    make_user(fx, "globex", "eve", "*", &v);
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "a", .user = u.id}, NOW, &rec));
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "g", .user = v.id}, NOW, &rec));
    assert_int_equal(kg_keys_list(&fx->kc, "acme", &all, NULL, NOW, seen_cb, &s, NULL, NULL),
                     KG_OK);
    assert_int_equal(s.n, 1);
    s.n = 0;
    assert_int_equal(kg_keys_list(&fx->kc, "acme", &other, NULL, NOW, seen_cb, &s, NULL, NULL),
                     KG_OK);
    assert_int_equal(s.n, 0);
    s.n = 0;
    assert_int_equal(kg_keys_list(&fx->kc, NULL, &other, NULL, NOW, seen_cb, &s, NULL, NULL),
                     KG_OK);
    assert_int_equal(s.n, 1);
    s.n = 0;
    all.user = u.id;
    assert_int_equal(kg_keys_list(&fx->kc, NULL, &all, NULL, NOW, seen_cb, &s, NULL, NULL), KG_OK);
    assert_int_equal(s.n, 1);
}

static void
test_listing_pages_through_every_key_once_in_order(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_keys_filter f = {.all_states = true};
    char ids[7][KG_ID_MAX], cursor[KG_CURSOR_MAX] = "";
    struct seen s;
    int total = 0;

    /* Two keys share each second, so the cursor must break ties by id. */
    for (int i = 0; i < 7; i++)
        make_id(fx, "p", NOW + i / 2, NULL, ids[i]);
    do {
        struct kg_page page = {.cursor = cursor, .limit = 3};
        char next[KG_CURSOR_MAX];

        s.n = 0;
        assert_int_equal(kg_keys_list(&fx->kc, NULL, &f, &page, NOW, seen_cb, &s, next, NULL),
                         KG_OK);
        assert_true(s.n <= 3);
        total += s.n;
        memcpy(cursor, next, sizeof(cursor));
        if (cursor[0] != '\0')
            assert_int_equal(s.n, 3);
    } while (cursor[0] != '\0');
    assert_int_equal(total, 7);
}

static void
test_a_malformed_cursor_is_refused(void **state)
{
    struct kg_fx_store *fx = *state;
    static const char *const bad[] = {"x", "12", "12.", "12.a b", "-1.key_a", "12~zz", "12;drop"};
    struct kg_err err = {{0}};
    struct seen s = {.n = 0};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kg_page page = {.cursor = bad[i], .limit = 2};

        assert_int_equal(kg_keys_list(&fx->kc, NULL, NULL, &page, NOW, seen_cb, &s, NULL, &err),
                         KG_EINVAL);
        assert_string_equal(err.msg, "cursor is malformed");
    }
}

static void
test_update_renames_changes_expiry_and_rate_and_is_audited(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec rec, got;
    struct kg_err err = {{0}};
    struct actions a;
    char id[KG_ID_MAX];

    make_id(fx, "old name", NOW, "1d", id);
    if (kg_keys_update(&fx->kc, NULL, id,
                       &(struct kg_key_change){.name = "new name",
                                               .expires = "never",
                                               .rate = "100/min",
                                               .set_rate_burst = true,
                                               .rate_burst = 20},
                       NOW, &rec, &err) != KG_OK)
        fail_msg("update should succeed: %s", err.msg);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, id, &got, NULL), KG_OK);
    assert_string_equal(got.name, "new name");
    assert_int_equal(got.expires_at, 0);
    assert_string_equal(got.rate, "100/min");
    assert_int_equal(got.rate_burst, 20);
    assert_memory_equal(&got, &rec, sizeof(rec));
    a = audit_actions(fx);
    assert_string_equal(a.v[a.n - 1], "key.update");

    assert_int_equal(kg_keys_update(&fx->kc, NULL, id, &(struct kg_key_change){.expires = "30d"},
                                    NOW, &rec, NULL),
                     KG_OK);
    assert_int_equal(rec.expires_at, NOW + 30 * DAY);
    assert_int_equal(
        kg_keys_update(&fx->kc, NULL, id, &(struct kg_key_change){.rate = ""}, NOW, &rec, NULL),
        KG_OK);
    assert_string_equal(rec.rate, "");
}

static void
test_update_refuses_bad_fields_empty_changes_and_revoked_keys(void **state)
{
    struct kg_fx_store *fx = *state;
    static const char *const rates[] = {"100", "0/min",    "100/day",
                                        "x/s", "100/min/", "10000000000/s"};
    struct kg_err err = {{0}};
    char id[KG_ID_MAX];

    make_id(fx, "k", NOW, NULL, id);
    assert_int_equal(kg_keys_update(&fx->kc, NULL, id, &(struct kg_key_change){0}, NOW, NULL, &err),
                     KG_EINVAL);
    assert_string_equal(err.msg, "nothing to change");
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
        assert_int_equal(kg_keys_update(&fx->kc, NULL, id,
                                        &(struct kg_key_change){.rate = rates[i]}, NOW, NULL, &err),
                         KG_EINVAL);
    assert_int_equal(
        kg_keys_update(&fx->kc, NULL, id, &(struct kg_key_change){.name = "a\nb"}, NOW, NULL, &err),
        KG_EINVAL);
    assert_int_equal(kg_keys_update(&fx->kc, NULL, id,
                                    &(struct kg_key_change){.expires = "2020-01-01"}, NOW, NULL,
                                    &err),
                     KG_EINVAL);
    assert_int_equal(
        kg_keys_update(&fx->kc, NULL, id,
                       &(struct kg_key_change){.set_rate_burst = true, .rate_burst = -1}, NOW, NULL,
                       &err),
        KG_EINVAL);
    assert_int_equal(kg_keys_update(&fx->kc, NULL, "key_nope", &(struct kg_key_change){.name = "x"},
                                    NOW, NULL, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, id, NOW, NULL, NULL), KG_OK);
    assert_int_equal(kg_keys_update(&fx->kc, NULL, id, &(struct kg_key_change){.name = "x"},
                                    NOW + 1, NULL, &err),
                     KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "revoked"));
}

static void
test_update_only_narrows_scopes_and_keeps_them_within_the_role(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_rec u;
    struct kg_key_rec rec, scopeless;
    struct kg_err err = {{0}};

    make_user(fx, "acme", "bob", "read:*,write:items", &u);
    kg_keys_key_free(
        make(fx, &(struct kg_key_new){.name = "k", .user = u.id, .scopes = "read:*,write:items"},
             NOW, &rec));
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id,
                                    &(struct kg_key_change){.scopes = "read:items,read:orders"},
                                    NOW, &rec, &err),
                     KG_OK);
    assert_string_equal(rec.scopes, "read:items,read:orders");
    /* Back to the wider set is widening. */
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id,
                                    &(struct kg_key_change){.scopes = "read:*"}, NOW, NULL, &err),
                     KG_EINVAL);
    assert_string_equal(err.msg, "scopes must narrow the key's scopes: read:*");
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id,
                                    &(struct kg_key_change){.scopes = "read:items,write:items"},
                                    NOW, NULL, &err),
                     KG_EINVAL);
    /* No scopes means every scope: never a narrowing of a scoped key. */
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id, &(struct kg_key_change){.scopes = ""},
                                    NOW, NULL, &err),
                     KG_EINVAL);
    /* A scope-less key may take any list the role allows, and no more. */
    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "all", .user = u.id}, NOW, &scopeless));
    assert_int_equal(kg_keys_update(&fx->kc, NULL, scopeless.id,
                                    &(struct kg_key_change){.scopes = "admin:all"}, NOW, NULL,
                                    &err),
                     KG_EINVAL);
    assert_string_equal(err.msg, "scopes exceed the user's role: admin:all");
    assert_int_equal(kg_keys_update(&fx->kc, NULL, scopeless.id,
                                    &(struct kg_key_change){.scopes = "write:items"}, NOW,
                                    &scopeless, &err),
                     KG_OK);
    assert_string_equal(scopeless.scopes, "write:items");
}

static void
test_every_change_is_audited_with_its_actor_and_a_missing_actor_is_refused(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_keys_ctx anon = fx->kc;
    struct kg_key_rec rec, fresh;
    struct kg_err err = {{0}};
    struct actions a;
    char *key = NULL;

    kg_keys_key_free(make(fx, &(struct kg_key_new){.name = "k"}, NOW, &rec));
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id, &(struct kg_key_change){.name = "k2"},
                                    NOW, NULL, NULL),
                     KG_OK);
    assert_int_equal(kg_keys_rotate(&fx->kc, NULL, rec.id, 60, NOW, &fresh, NULL, &key, NULL),
                     KG_OK);
    kg_keys_key_free(key);
    assert_string_equal(fresh.user_id, rec.user_id);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, fresh.id, NOW, NULL, NULL), KG_OK);
    a = audit_actions(fx);
    assert_int_equal(a.n, 4);
    assert_string_equal(a.v[0], "key.create");
    assert_string_equal(a.v[1], "key.update");
    assert_string_equal(a.v[2], "key.rotate");
    assert_string_equal(a.v[3], "key.revoke");
    for (int i = 0; i < a.n; i++)
        assert_string_equal(a.actor[i], "cli:tester");

    anon.actor = NULL;
    key = NULL;
    assert_int_equal(
        kg_keys_create(&anon, NULL, &(struct kg_key_new){.name = "k"}, NOW, &rec, &key, &err),
        KG_EINVAL);
    assert_non_null(strstr(err.msg, "actor"));
    assert_int_equal(audit_actions(fx).n, 4);
}

static void
test_making_a_keys_credits_unlimited_drops_its_refill_and_a_refill_needs_credits(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_change chg = {.set_quota_limit = true, .quota_limit = -1};
    struct kg_key_rec rec, got;
    struct kg_err err = {{0}};

    kg_keys_key_free(
        make(fx,
             &(struct kg_key_new){
                 .name = "metered", .has_credits = true, .credits = 10, .refill = "day"},
             NOW, &rec));
    assert_string_equal(rec.quota_period, "day");
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id, &chg, NOW, &got, &err), KG_OK);
    assert_int_equal(got.quota_limit, -1);
    assert_string_equal(got.quota_period, "");
    assert_int_equal(kg_keys_get(&fx->kc, NULL, rec.id, &got, &err), KG_OK);
    assert_string_equal(got.quota_period, "");
    /* Now unlimited: a refill alone is refused, with create's words. */
    chg = (struct kg_key_change){.quota_period = "month"};
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id, &chg, NOW, &got, &err), KG_EINVAL);
    assert_string_equal(err.msg, "a refill needs credits (quota_period needs a quota_limit)");
    chg =
        (struct kg_key_change){.set_quota_limit = true, .quota_limit = 3, .quota_period = "month"};
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id, &chg, NOW, &got, &err), KG_OK);
    assert_int_equal(got.quota_limit, 3);
    assert_string_equal(got.quota_period, "month");
    /* The same ceiling as create and as a user's credits. */
    chg = (struct kg_key_change){.set_quota_limit = true, .quota_limit = 1000000001};
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id, &chg, NOW, &got, &err), KG_EINVAL);
    assert_string_equal(err.msg, "quota_limit must be -1 (unlimited) to 1000000000");
}

/* ---- regenerate, the state people see, the tenant's key policy ---- */

static void
test_regenerate_restores_an_expired_key_and_a_revoked_one_stays_revoked(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_key_rec fresh, old, got;
    struct kg_err err = {{0}};
    char id[KG_ID_MAX], *key = NULL;

    make_id(fx, "temp", NOW, "30d", id);
    /* An expired key: rotation refuses it, regeneration does not. */
    assert_int_equal(kg_keys_rotate(&fx->kc, NULL, id, 0, NOW + 31 * DAY, &fresh, &old, &key, &err),
                     KG_ECONFLICT);
    assert_int_equal(
        kg_keys_regenerate(&fx->kc, NULL, id, NOW + 31 * DAY, &fresh, &old, &key, &err), KG_OK);
    assert_non_null(key);
    kg_keys_key_free(key);
    key = NULL;
    assert_string_equal(fresh.name, "temp");
    /* The same 30-day lifetime, from now. */
    assert_int_equal(fresh.expires_at, NOW + 31 * DAY + 30 * DAY);
    assert_int_equal(kg_key_state_of(&fresh, NOW + 31 * DAY), KG_KEY_ACTIVE);
    assert_int_equal(kg_keys_get(&fx->kc, NULL, id, &got, &err), KG_OK);
    assert_int_equal(kg_key_state_of(&got, NOW + 31 * DAY), KG_KEY_REVOKED);
    assert_string_equal(got.rotated_to, fresh.id);
    /* Replaced, hence revoked: final. */
    assert_int_equal(
        kg_keys_regenerate(&fx->kc, NULL, id, NOW + 32 * DAY, &fresh, &old, &key, &err),
        KG_ECONFLICT);
    assert_null(key);
}

static void
test_a_key_of_a_disabled_user_or_tenant_shows_disabled(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_user_new un = {.username = "carol"};
    struct kg_user_rec u;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key;
    json_t *arr;

    assert_int_equal(kg_accounts_user_create(&fx->kc, NULL, &un, NULL, NOW, &u, NULL, NULL, &err),
                     KG_OK);
    key = make(fx, &(struct kg_key_new){.name = "c", .user = u.id}, NOW, &rec);
    kg_keys_key_free(key);
    assert_int_equal(kg_keys_state(&fx->kc, &rec, NOW), KG_KEY_ACTIVE);
    assert_int_equal(kg_accounts_user_disable(&fx->kc, NULL, u.id, NOW + 1, &u, &err), KG_OK);
    assert_int_equal(kg_keys_state(&fx->kc, &rec, NOW + 2), KG_KEY_DISABLED);
    assert_string_equal(kg_key_state_str(KG_KEY_DISABLED), "disabled");
    arr = json_pack("[{s:s, s:s}, {s:s, s:s}]", "user_id", u.id, "state", "active", "user_id", u.id,
                    "state", "revoked");
    kg_keys_mark_disabled(&fx->kc, arr);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "state")),
                        "disabled");
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "state")),
                        "revoked");
    json_decref(arr);
    /* A revoked key stays revoked whoever owns it. */
    rec.revoked_at = NOW;
    assert_int_equal(kg_keys_state(&fx->kc, &rec, NOW + 2), KG_KEY_REVOKED);
}

static void
test_the_tenants_key_max_lifetime_refuses_longer_keys(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_config *cfg = NULL;
    const struct kg_config *saved = fx->kc.cfg;
    struct kg_key_rec rec;
    char *key;

    assert_int_equal(kg_fx_load_config("tenant default key_max_lifetime 90d\n", &cfg), 0);
    fx->kc.cfg = cfg;
    struct kg_err err = {{0}};

    /* Only the store knows the owner's tenant: a create-time rule, not a pre-check. */
    key = NULL;
    assert_int_equal(kg_keys_create(&fx->kc, NULL, &(struct kg_key_new){.name = "forever"}, NOW,
                                    &rec, &key, &err),
                     KG_EINVAL);
    assert_non_null(strstr(err.msg, "expires is required"));
    assert_int_equal(kg_keys_create(&fx->kc, NULL,
                                    &(struct kg_key_new){.name = "long", .expires = "365d"}, NOW,
                                    &rec, &key, &err),
                     KG_EINVAL);
    assert_non_null(strstr(err.msg, "expires is later than tenant default allows"));
    assert_null(key);
    key = make(fx, &(struct kg_key_new){.name = "ok", .expires = "90d"}, NOW, &rec);
    kg_keys_key_free(key);
    fx->kc.cfg = saved;
    kg_config_free(cfg);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_created_key_is_well_formed_and_its_digest_finds_the_record),
        T(test_regenerate_restores_an_expired_key_and_a_revoked_one_stays_revoked),
        T(test_a_key_of_a_disabled_user_or_tenant_shows_disabled),
        T(test_the_tenants_key_max_lifetime_refuses_longer_keys),
        T(test_making_a_keys_credits_unlimited_drops_its_refill_and_a_refill_needs_credits),
        T(test_created_record_has_the_documented_defaults),
        T(test_two_creates_give_different_keys_and_ids),
        T(test_create_refuses_a_missing_empty_or_overlong_name),
        T(test_create_refuses_control_characters_and_broken_utf8_in_the_name),
        T(test_create_normalises_scopes_and_refuses_a_malformed_one),
        T(test_create_stores_a_rate_and_burst_and_refuses_bad_ones),
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
        T(test_create_for_a_user_takes_its_tenant_and_id),
        T(test_create_without_a_user_goes_to_the_tenant_default_user_made_on_demand),
        T(test_scopes_beyond_the_role_are_refused_and_a_scopeless_key_is_allowed),
        T(test_create_refuses_unknown_foreign_and_disabled_owners),
        T(test_the_fence_makes_another_tenants_key_look_missing),
        T(test_a_fenced_listing_walks_only_its_own_tenant),
        T(test_listing_pages_through_every_key_once_in_order),
        T(test_a_malformed_cursor_is_refused),
        T(test_update_renames_changes_expiry_and_rate_and_is_audited),
        T(test_update_refuses_bad_fields_empty_changes_and_revoked_keys),
        T(test_update_only_narrows_scopes_and_keeps_them_within_the_role),
        T(test_every_change_is_audited_with_its_actor_and_a_missing_actor_is_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
