/* tests/unit/util/test_json_io.c - src/util/json_io.c through keygate/json_io.h.
 *
 * The body cap, the Content-Type rule and every way a request body can be
 * wrong, each with the exact words a client gets back; and
 * kg_json_io_attach() under every failed allocation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/json_io.h"
#include "keygate/store.h"

/* The fields of a typical endpoint. */
struct form {
    const char *name;
    bool has_name;
    bool active;
    bool has_active;
    int64_t count;
    int64_t burst; /* ranged: 1 to 1000000000 */
    char scopes[KG_SCOPES_MAX];
    bool has_scopes;
    const char *expires;
    bool expires_null;
    bool has_expires;
};

static enum kg_status
decode(const char *body, struct form *f, struct kg_err *err, json_t **root)
{
    const struct kg_jfield fields[] = {
        {.name = "name",
         .type = KG_JSTRING,
         .required = true,
         .out = &f->name,
         .present = &f->has_name},
        {.name = "active", .type = KG_JBOOL, .out = &f->active, .present = &f->has_active},
        {.name = "count", .type = KG_JINT, .out = &f->count},
        {.name = "burst", .type = KG_JINT, .out = &f->burst, .min = 1, .max = KG_JSON_COUNT_MAX},
        {.name = "scopes", .type = KG_JSCOPES, .out = f->scopes, .present = &f->has_scopes},
        {.name = "expires",
         .type = KG_JSTRING,
         .nullable = true,
         .out = &f->expires,
         .present = &f->has_expires,
         .is_null = &f->expires_null},
    };

    memset(f, 0, sizeof(*f));
    return kg_json_io_decode(body, strlen(body), fields, sizeof(fields) / sizeof(fields[0]), root,
                             err);
}

static void
expect_error(const char *body, const char *words)
{
    struct form f;
    struct kg_err err = {{0}};
    json_t *root = NULL;

    assert_int_equal(decode(body, &f, &err, &root), KG_EINVAL);
    assert_null(root);
    assert_string_equal(err.msg, words);
}

static void
test_every_field_is_filled_from_a_good_body(void **state)
{
    struct form f;
    struct kg_err err = {{0}};
    json_t *root = NULL;

    (void)state;
    assert_int_equal(decode("{\"name\": \"ci\", \"active\": true, \"count\": 7,"
                            " \"scopes\": [\"read:a\", \"write:b\"], \"expires\": \"30d\"}",
                            &f, &err, &root),
                     KG_OK);
    assert_non_null(root);
    assert_string_equal(f.name, "ci");
    assert_true(f.has_name && f.active && f.has_active);
    assert_int_equal(f.count, 7);
    assert_string_equal(f.scopes, "read:a,write:b");
    assert_string_equal(f.expires, "30d");
    assert_false(f.expires_null);
    json_decref(root);
}

static void
test_scopes_may_also_be_one_comma_separated_string(void **state)
{
    struct form f;
    struct kg_err err = {{0}};
    json_t *root = NULL;

    (void)state;
    assert_int_equal(decode("{\"name\": \"x\", \"scopes\": \"a,b\"}", &f, &err, &root), KG_OK);
    assert_string_equal(f.scopes, "a,b");
    json_decref(root);
}

static void
test_null_is_reported_for_a_nullable_field(void **state)
{
    struct form f;
    struct kg_err err = {{0}};
    json_t *root = NULL;

    (void)state;
    assert_int_equal(decode("{\"name\": \"x\", \"expires\": null}", &f, &err, &root), KG_OK);
    assert_true(f.has_expires);
    assert_true(f.expires_null);
    assert_false(f.has_active);
    json_decref(root);
}

static void
test_malformed_json_says_so(void **state)
{
    (void)state;
    expect_error("{\"name\": ", KG_JSON_MALFORMED);
    expect_error("{name: 1}", KG_JSON_MALFORMED);
    expect_error("{\"name\": \"x\"} trailing", KG_JSON_MALFORMED);
    expect_error("\xff\xfe", KG_JSON_MALFORMED);
    expect_error("{\"name\": \"a\\u0000b\"}", KG_JSON_MALFORMED);
}

static void
test_a_duplicate_member_is_malformed(void **state)
{
    (void)state;
    expect_error("{\"name\": \"a\", \"name\": \"b\"}", KG_JSON_MALFORMED);
}

static void
test_the_body_must_be_an_object(void **state)
{
    (void)state;
    expect_error("[1, 2]", "JSON body must be an object");
    expect_error("\"name\"", "JSON body must be an object");
    expect_error("null", "JSON body must be an object");
}

static void
test_an_unknown_field_is_named(void **state)
{
    (void)state;
    expect_error("{\"name\": \"x\", \"tenant_id\": \"b\"}", "unknown field: tenant_id");
    /* A name that cannot be quoted cleanly is not quoted. */
    expect_error("{\"name\": \"x\", \"a\\nb\": 1}", "unknown field in JSON body");
}

static void
test_a_wrongly_typed_field_is_named(void **state)
{
    (void)state;
    expect_error("{\"name\": 5}", "name must be a string");
    expect_error("{\"name\": \"x\", \"active\": \"yes\"}", "active must be true or false");
    expect_error("{\"name\": \"x\", \"count\": 1.5}", "count must be an integer");
    expect_error("{\"name\": \"x\", \"count\": \"1\"}", "count must be an integer");
    expect_error("{\"name\": \"x\", \"scopes\": [1]}", "scopes must be a list of strings");
    expect_error("{\"name\": \"x\", \"scopes\": {}}", "scopes must be a list of strings");
    expect_error("{\"name\": \"x\", \"scopes\": [\"a,b\"]}",
                 "scopes: an item must not contain a comma");
    expect_error("{\"name\": \"x\", \"active\": null}", "active must not be null");
}

/* A ranged integer: both edges pass, one past either, a fraction, an
 * exponent, a string and a huge number are refused with the range. */
static void
test_a_ranged_integer_names_its_range(void **state)
{
    static const char *const bad[] = {"0",     "-1",   "1000000001",          "1.5", "1e9", "1E3",
                                      "\"5\"", "true", "-9223372036854775807"};
    static const char *const good[] = {"1", "1000000000"};
    static const int64_t good_value[] = {1, 1000000000};
    char body[128];
    struct form f;
    struct kg_err err = {{0}};
    json_t *root = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"name\": \"x\", \"burst\": %s}", bad[i]);
        expect_error(body, "burst must be an integer from 1 to 1000000000");
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(body, sizeof(body), "{\"name\": \"x\", \"burst\": %s}", good[i]);
        assert_int_equal(decode(body, &f, &err, &root), KG_OK);
        assert_int_equal(f.burst, good_value[i]);
        json_decref(root);
        root = NULL;
    }
}

static void
test_a_missing_required_field_is_named(void **state)
{
    (void)state;
    expect_error("{}", "name is required");
    expect_error("{\"name\": null}", "name is required");
    expect_error("{\"active\": true}", "name is required");
}

static void
test_an_empty_body_is_an_empty_object(void **state)
{
    const struct kg_jfield fields[] = {
        {.name = "grace", .type = KG_JSTRING, .out = &(const char *){0}}};
    struct kg_err err = {{0}};
    json_t *root = NULL;

    (void)state;
    assert_int_equal(kg_json_io_decode("", 0, fields, 1, &root, &err), KG_OK);
    json_decref(root);
}

static void
test_a_body_past_64_kib_is_dropped_and_flagged(void **state)
{
    struct kg_jbody b;
    char *chunk = malloc(KG_JSON_BODY_MAX);

    (void)state;
    assert_non_null(chunk);
    memset(chunk, 'x', KG_JSON_BODY_MAX);
    kg_jbody_init(&b);
    assert_true(kg_jbody_feed(&b, chunk, KG_JSON_BODY_MAX - 1));
    assert_true(kg_jbody_feed(&b, chunk, 1));
    assert_int_equal(b.len, KG_JSON_BODY_MAX);
    assert_false(kg_jbody_feed(&b, chunk, 1));
    assert_true(b.too_big);
    assert_null(b.data);
    assert_false(kg_jbody_feed(&b, chunk, 100));
    kg_jbody_cleanup(&b);
    free(chunk);
}

static void
test_content_type_must_be_application_json(void **state)
{
    (void)state;
    assert_true(kg_json_io_content_type_ok("application/json"));
    assert_true(kg_json_io_content_type_ok("Application/JSON; charset=utf-8"));
    assert_true(kg_json_io_content_type_ok(" application/json ;charset=UTF-8"));
    assert_false(kg_json_io_content_type_ok(NULL));
    assert_false(kg_json_io_content_type_ok(""));
    assert_false(kg_json_io_content_type_ok("text/plain"));
    assert_false(kg_json_io_content_type_ok("application/jsonx"));
    assert_false(kg_json_io_content_type_ok("application/x-www-form-urlencoded"));
}

static void
test_encoders_write_null_for_unset_values(void **state)
{
    json_t *o;
    char *s;

    (void)state;
    o = json_pack("{s:o, s:o, s:o, s:o, s:o}", "never", kg_json_io_time(0), "at",
                  kg_json_io_time(1767225600), "none", kg_json_io_str_or_null(""), "scopes",
                  kg_json_io_list("a,b"), "empty", kg_json_io_list(""));
    assert_non_null(o);
    s = kg_json_io_dump(o);
    assert_string_equal(s, "{\"never\": null, \"at\": \"2026-01-01T00:00:00Z\", \"none\": null, "
                           "\"scopes\": [\"a\", \"b\"], \"empty\": []}");
    free(s);
    json_decref(o);
}

static void
test_a_secret_is_spliced_into_its_placeholder_member(void **state)
{
    json_t *o;
    char *s;
    size_t len = 0;

    (void)state;
    /* A value that mentions the member's name must not be mistaken for it. */
    o = json_pack("{s:{s:s}, s:s}", "user", "first_name", "\"api_key\": \"\"", "api_key", "");
    assert_non_null(o);
    s = kg_json_io_dump_secret(o, "api_key", "kg_Secret123", &len);
    assert_non_null(s);
    assert_string_equal(s, "{\"user\": {\"first_name\": \"\\\"api_key\\\": \\\"\\\"\"}, "
                           "\"api_key\": \"kg_Secret123\"}");
    assert_int_equal(len, strlen(s));
    kg_json_io_secret_free(s);
    assert_null(kg_json_io_dump_secret(o, "key", "kg_x", &len));
    assert_null(kg_json_io_dump_secret(o, "api_key", "bad\"quote", &len));
    json_decref(o);
    kg_json_io_secret_free(NULL);
}

/* jansson's allocator for the attach tests: the Nth allocation fails
 * (0: none), and live counts what is still allocated, so a leak shows
 * without a sanitizer. */
static long fail_at, calls, live;

static void *
counting_malloc(size_t n)
{
    void *p;

    if (++calls == fail_at)
        return NULL;
    p = malloc(n);
    if (p != NULL)
        live++;
    return p;
}

static void
counting_free(void *p)
{
    if (p != NULL)
        live--;
    free(p);
}

static void
test_attach_adds_the_member_and_keeps_one_reference(void **state)
{
    json_t *doc, *value = json_string("b");

    (void)state;
    doc = kg_json_io_attach(json_object(), "previous", value);
    assert_non_null(doc);
    assert_ptr_equal(json_object_get(doc, "previous"), value);
    assert_int_equal(value->refcount, 1);
    json_decref(doc);
}

/* Either side NULL, or a member jansson refuses (a name that is not
 * UTF-8): NULL, and the other side released. The test holds a reference
 * of its own on each to see it. */
static void
test_attach_releases_both_when_either_is_missing(void **state)
{
    json_t *doc = json_object(), *value = json_string("b");

    (void)state;
    json_incref(value);
    assert_null(kg_json_io_attach(NULL, "previous", value));
    assert_int_equal(value->refcount, 1);
    json_incref(doc);
    assert_null(kg_json_io_attach(doc, "previous", NULL));
    assert_int_equal(doc->refcount, 1);
    json_incref(doc);
    json_incref(value);
    assert_null(kg_json_io_attach(doc, "\xff", value));
    assert_int_equal(doc->refcount, 1);
    assert_int_equal(value->refcount, 1);
    json_decref(doc);
    json_decref(value);
}

static json_t *
two_members(const char *v)
{
    return kg_json_io_attach(kg_json_io_attach(json_object(), "a", json_string(v)), "b",
                             json_integer(1));
}

/* A rotation's answer is the new key's document with the previous one
 * attached; the previous one was leaked when only the new one could not
 * be made (scripts/torture.sh admin_rotate). Every allocation of the
 * pair fails in turn: the answer is NULL or whole, and nothing is left. */
static void
test_attach_leaks_nothing_whichever_allocation_fails(void **state)
{
    long n;

    (void)state;
    json_set_alloc_funcs(counting_malloc, counting_free);
    for (n = 1;; n++) {
        json_t *doc;

        fail_at = n;
        calls = live = 0;
        doc = kg_json_io_attach(two_members("new"), "previous", two_members("old"));
        if (doc != NULL) {
            assert_int_equal(json_object_size(doc), 3);
            assert_int_equal(json_object_size(json_object_get(doc, "previous")), 2);
            json_decref(doc);
        }
        assert_int_equal(live, 0);
        if (calls < n)
            break; /* nothing failed: every allocation has had its turn */
    }
    json_set_alloc_funcs(malloc, free);
    assert_true(n > 10);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field_is_filled_from_a_good_body),
        cmocka_unit_test(test_scopes_may_also_be_one_comma_separated_string),
        cmocka_unit_test(test_null_is_reported_for_a_nullable_field),
        cmocka_unit_test(test_malformed_json_says_so),
        cmocka_unit_test(test_a_duplicate_member_is_malformed),
        cmocka_unit_test(test_the_body_must_be_an_object),
        cmocka_unit_test(test_an_unknown_field_is_named),
        cmocka_unit_test(test_a_wrongly_typed_field_is_named),
        cmocka_unit_test(test_a_ranged_integer_names_its_range),
        cmocka_unit_test(test_a_missing_required_field_is_named),
        cmocka_unit_test(test_an_empty_body_is_an_empty_object),
        cmocka_unit_test(test_a_body_past_64_kib_is_dropped_and_flagged),
        cmocka_unit_test(test_content_type_must_be_application_json),
        cmocka_unit_test(test_encoders_write_null_for_unset_values),
        cmocka_unit_test(test_a_secret_is_spliced_into_its_placeholder_member),
        cmocka_unit_test(test_attach_adds_the_member_and_keeps_one_reference),
        cmocka_unit_test(test_attach_releases_both_when_either_is_missing),
        cmocka_unit_test(test_attach_leaks_nothing_whichever_allocation_fails),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
