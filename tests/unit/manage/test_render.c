/* tests/unit/manage/test_render.c - src/manage/render.c through
 * keygate/render.h: the members of a key as lists and `show` give it (the
 * CLI's --json and the admin API alike), the usage and still_in_use a
 * listing adds, a new key's placeholder, audit rows edited by hand
 * into bytes jansson refuses, and every jansson allocation failing in turn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "keygate/render.h"
#include "keygate/store.h"

static void
sample_key(struct kg_key_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
    snprintf(rec->id, sizeof(rec->id), "key_abc");
    snprintf(rec->name, sizeof(rec->name), "ci");
    snprintf(rec->prefix, sizeof(rec->prefix), "kg_AbCd");
    snprintf(rec->last4, sizeof(rec->last4), "wxyz");
    snprintf(rec->scopes, sizeof(rec->scopes), "read:items,write:items");
    snprintf(rec->tenant, sizeof(rec->tenant), "acme");
    snprintf(rec->metadata, sizeof(rec->metadata), "{}");
    rec->created_at = 1795453262; /* 2026-11-23T17:01:02Z */
    rec->quota_limit = -1;
}

/* Fails unless o has exactly the members names lists (NULL-terminated). */
static void
assert_members(const json_t *o, const char *const *names)
{
    size_t n = 0;

    for (; names[n] != NULL; n++) {
        if (json_object_get(o, names[n]) == NULL)
            fail_msg("missing member %s", names[n]);
    }
    assert_int_equal(json_object_size(o), n);
}

static void
test_a_listed_key_has_the_documented_members_and_no_secret(void **state)
{
    static const char *const list[] = {
        "name",   "id",         "key",        "prefix",       "last4",      "scopes",
        "tenant", "user_id",    "created_at", "last_used_at", "expires_at", "revoked_at",
        "state",  "rotated_to", "canary",     "allowed_ips",  "expiring",   NULL};
    struct kg_key_rec rec;
    json_t *o;

    (void)state;
    sample_key(&rec);
    o = kg_render_key_json(&rec, KG_KEY_ACTIVE, false, rec.created_at);
    assert_non_null(o);
    assert_members(o, list);
    assert_string_equal(json_string_value(json_object_get(o, "created_at")),
                        "2026-11-23T17:01:02Z");
    assert_true(json_is_null(json_object_get(o, "expires_at")));
    assert_true(json_is_null(json_object_get(o, "user_id")));
    assert_int_equal(json_array_size(json_object_get(o, "scopes")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "scopes"), 1)),
                        "write:items");
    /* Masked: the display prefix and the last four, never more. */
    assert_string_equal(json_string_value(json_object_get(o, "key")), "kg_AbCd\u2026wxyz");
    json_decref(o);
}

/* Issue 18: keys list and the key page mark an active key that expires
 * within 14 days; the boundary is inclusive, an expired key is not
 * "expiring". */
static void
test_expiring_marks_active_keys_within_fourteen_days(void **state)
{
    const int64_t now = 1795453262;
    struct kg_key_rec rec;

    (void)state;
    sample_key(&rec);
    assert_false(kg_render_key_expiring(&rec, KG_KEY_ACTIVE, now));
    rec.expires_at = now + 14 * 86400;
    assert_true(kg_render_key_expiring(&rec, KG_KEY_ACTIVE, now));
    rec.expires_at = now + 14 * 86400 + 1;
    assert_false(kg_render_key_expiring(&rec, KG_KEY_ACTIVE, now));
    rec.expires_at = now - 1;
    assert_false(kg_render_key_expiring(&rec, KG_KEY_EXPIRED, now));
}

/* The key object's "expiring" is judged at the clock the caller passes
 * (the admin API's request time), not the wall clock: a key that expires
 * ten days after that moment is expiring, one that expires 15 days after
 * it is not, whatever the day the test runs. */
static void
test_a_key_objects_expiring_follows_the_clock_it_is_given(void **state)
{
    const int64_t now = 1795453262;
    struct kg_key_rec rec;
    json_t *o;

    (void)state;
    sample_key(&rec);
    rec.expires_at = now + 10 * 86400;
    o = kg_render_key_json(&rec, KG_KEY_ACTIVE, false, now);
    assert_non_null(o);
    assert_true(json_is_true(json_object_get(o, "expiring")));
    json_decref(o);
    o = kg_render_key_json(&rec, KG_KEY_ACTIVE, false, now - 5 * 86400);
    assert_non_null(o);
    assert_true(json_is_false(json_object_get(o, "expiring")));
    json_decref(o);
}

static void
test_usage_is_added_and_still_in_use_only_in_a_grace_period(void **state)
{
    struct kg_key_usage u = {.requests = 7, .denied_rate = 2, .last_used_at = 1795453262};
    struct kg_key_rec rec;
    json_t *o, *usage;

    (void)state;
    sample_key(&rec);
    o = kg_render_key_json(&rec, KG_KEY_ACTIVE, true, rec.created_at);
    assert_non_null(o);
    assert_true(kg_render_key_extras(o, &u, KG_KEY_IN_USE_NONE));
    usage = json_object_get(o, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "requests")), 7);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(usage, "denied"), "rate_limited")), 2);
    assert_string_equal(json_string_value(json_object_get(usage, "last_used_at")),
                        "2026-11-23T17:01:02Z");
    assert_null(json_object_get(o, "still_in_use"));

    assert_true(kg_render_key_extras(o, NULL, KG_KEY_IN_USE_YES));
    assert_true(json_is_true(json_object_get(o, "still_in_use")));
    assert_true(kg_render_key_extras(o, NULL, KG_KEY_IN_USE_NO));
    assert_true(json_is_false(json_object_get(o, "still_in_use")));
    assert_true(kg_render_key_extras(o, NULL, KG_KEY_IN_USE_UNKNOWN));
    assert_true(json_is_null(json_object_get(o, "still_in_use")));
    json_decref(o);
}

static void
test_a_new_key_has_an_empty_placeholder_for_the_secret(void **state)
{
    struct kg_key_rec rec;
    json_t *o;

    (void)state;
    sample_key(&rec);
    o = kg_render_new_key_json(&rec);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "key")), "");
    json_decref(o);
}

static void
test_an_audit_row_edited_into_bad_bytes_is_shown_not_lost(void **state)
{
    struct kg_audit_entry e;
    json_t *o;

    (void)state;
    memset(&e, 0, sizeof(e));
    e.seq = 3;
    snprintf(e.actor, sizeof(e.actor), "cli:\xff\xfe");
    snprintf(e.action, sizeof(e.action), "key.create");
    snprintf(e.object, sizeof(e.object), "key_abc");
    snprintf(e.details, sizeof(e.details), "not json");
    o = kg_render_audit_json(&e);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "actor")), "(not UTF-8)");
    assert_string_equal(json_string_value(json_object_get(o, "details")), "not json");
    assert_true(json_is_null(json_object_get(o, "tenant")));
    json_decref(o);
}

/* jansson's allocator for the next test: the fail_at-th allocation fails. */
static long js_count, js_fail_at;

static void *
failing_malloc(size_t n)
{
    return ++js_count == js_fail_at ? NULL : malloc(n);
}

/* For every N the Nth allocation of a key's detailed record fails: the
 * renderer returns NULL or every member, and leaks nothing (ASan and
 * Valgrind see the rest). The metadata object was once parsed first and
 * lost when a member before it failed (scripts/torture.sh admin_revoke).
 * jansson reports some allocation failures of its parser as syntax
 * errors: the metadata is then shown as its text, as a row edited by hand
 * into bad JSON is, never lost. */
static void
test_every_failed_allocation_gives_null_or_the_whole_record(void **state)
{
    struct kg_key_rec rec;
    long whole = 0;

    (void)state;
    sample_key(&rec);
    snprintf(rec.metadata, sizeof(rec.metadata), "{\"team\": [\"a\", {\"b\": 1}]}");
    snprintf(rec.rate, sizeof(rec.rate), "10/s");
    json_set_alloc_funcs(failing_malloc, free);
    for (js_fail_at = 1;; js_fail_at++) {
        json_t *o;

        js_count = 0;
        o = kg_render_key_json(&rec, KG_KEY_ACTIVE, true, rec.created_at);
        if (js_count < js_fail_at) {
            /* Nothing failed: the last N to try. */
            assert_non_null(o);
            whole = js_count;
            assert_int_equal(json_object_size(o), 23);
            assert_true(json_is_object(json_object_get(o, "metadata")));
            json_decref(o);
            break;
        }
        if (o != NULL) {
            json_t *meta = json_object_get(o, "metadata");

            assert_int_equal(json_object_size(o), 23);
            assert_true(
                json_is_object(meta) ||
                (json_is_string(meta) && strcmp(json_string_value(meta), rec.metadata) == 0));
            json_decref(o);
        }
    }
    json_set_alloc_funcs(malloc, free);
    assert_true(whole > 20);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_listed_key_has_the_documented_members_and_no_secret),
        cmocka_unit_test(test_usage_is_added_and_still_in_use_only_in_a_grace_period),
        cmocka_unit_test(test_expiring_marks_active_keys_within_fourteen_days),
        cmocka_unit_test(test_a_key_objects_expiring_follows_the_clock_it_is_given),
        cmocka_unit_test(test_a_new_key_has_an_empty_placeholder_for_the_secret),
        cmocka_unit_test(test_an_audit_row_edited_into_bad_bytes_is_shown_not_lost),
        cmocka_unit_test(test_every_failed_allocation_gives_null_or_the_whole_record),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
