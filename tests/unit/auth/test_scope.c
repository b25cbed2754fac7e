/* tests/unit/auth/test_scope.c - src/auth/scope.c through keygate/scope.h.
 *
 * Route tables come from real config files: each test that needs one
 * writes its route lines to a mkstemp() file, loads it with
 * kg_config_load() (KEYGATE_* variables cleared first) and frees it in the
 * teardown, so a rule here is exactly what an operator would write. */
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
#include "keygate/scope.h"
#include "keygate/store.h"
#include "unit/fixture.h"

struct fixture {
    struct kg_config *cfg;
};

static int
group_setup(void **state)
{
    (void)state;
    kg_fx_clear_env();
    return 0;
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    *state = f;
    return f != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    kg_config_free(f->cfg);
    free(f);
    return 0;
}

/* Loads text as a config file into f->cfg; the file is removed at once. */
static void
load_config(struct fixture *f, const char *text)
{
    if (kg_fx_load_config(text, &f->cfg) != 0)
        fail_msg("the test config should load");
}

/* The config line a lookup landed on, or 0 for none. */
static int
route_line(const struct kg_config *cfg, const char *method, const char *path)
{
    const struct kg_route *r = kg_scope_route(cfg, method, path);

    return r != NULL ? r->line : 0;
}

static void
test_route_and_cost_patterns_match_letters_in_any_case_unless_sensitive(void **state)
{
    struct fixture *f = *state;

    load_config(f, "route * /admin/* admin:all\n"
                   "route GET /v1/report read:reports\n"
                   "cost POST /v1/Expensive* 5\n");
    assert_int_equal(route_line(f->cfg, "GET", "/ADMIN/x"), 1);
    assert_int_equal(route_line(f->cfg, "GET", "/Admin/users/7"), 1);
    assert_int_equal(route_line(f->cfg, "GET", "/V1/REPORT"), 2);
    assert_int_equal(route_line(f->cfg, "GET", "/v1/reports"), 0);
    assert_int_equal(kg_scope_cost(f->cfg, "POST", "/v1/expensive/run"), 5);
    assert_int_equal(kg_scope_cost(f->cfg, "POST", "/V1/EXPENSIVE"), 5);
    assert_int_equal(kg_scope_cost(f->cfg, "POST", "/v1/cheap"), 1);
    kg_config_free(f->cfg);
    f->cfg = NULL;
    load_config(f, "route_case sensitive\n"
                   "route * /admin/* admin:all\n"
                   "cost POST /v1/Expensive* 5\n");
    assert_int_equal(route_line(f->cfg, "GET", "/ADMIN/x"), 0);
    assert_int_equal(route_line(f->cfg, "GET", "/admin/x"), 2);
    assert_int_equal(kg_scope_cost(f->cfg, "POST", "/v1/expensive/run"), 1);
    assert_int_equal(kg_scope_cost(f->cfg, "POST", "/v1/Expensive/run"), 5);
}

static void
test_scope_valid_accepts_the_documented_alphabet(void **state)
{
    static const char *const good[] = {
        "read:items", "datasets.read",
        "a",          "*",
        "read:*",     "admin:*",
        "A-Z_0.9:x",  "write:datasets-v2",
        "x*",         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 64 */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!kg_scope_valid(good[i]))
            fail_msg("\"%s\" should be a valid scope", good[i]);
}

static void
test_scope_valid_rejects_empty_long_and_odd_scopes(void **state)
{
    static const char *const bad[] = {
        "",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
        "re*d",
        "*read",
        "**",
        "read:**",
        "read items",
        " read",
        "read ",
        "read,write",
        "read/items",
        "read@x",
        "caf\xC3\xA9",
        "read\titems",
        "read;x",
        "a=b",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kg_scope_valid(bad[i]))
            fail_msg("\"%s\" should not be a valid scope", bad[i]);
}

/* Normalises list, expecting success and exactly want. */
static void
assert_normalises_to(const char *list, const char *want)
{
    char out[KG_SCOPES_MAX];
    struct kg_err err = {{0}};
    enum kg_status rc = kg_scope_list_normalise(list, out, sizeof(out), &err);

    if (rc != KG_OK)
        fail_msg("\"%s\" should normalise, got %s: %s", list, kg_status_str(rc), err.msg);
    if (strcmp(out, want) != 0)
        fail_msg("\"%s\" should normalise to \"%s\", got \"%s\"", list, want, out);
}

/* Expects KG_EINVAL whose message holds must_mention (when not NULL). */
static void
assert_list_rejected(const char *list, const char *must_mention)
{
    char out[KG_SCOPES_MAX];
    struct kg_err err = {{0}};
    enum kg_status rc = kg_scope_list_normalise(list, out, sizeof(out), &err);

    if (rc != KG_EINVAL)
        fail_msg("\"%s\" should be rejected with KG_EINVAL, got %s (\"%s\")", list,
                 kg_status_str(rc), out);
    if (must_mention != NULL && strstr(err.msg, must_mention) == NULL)
        fail_msg("the message for \"%s\" should name \"%s\": %s", list, must_mention, err.msg);
}

static void
test_normalise_trims_blanks_around_each_scope(void **state)
{
    (void)state;
    assert_normalises_to("read:a,write:b", "read:a,write:b");
    assert_normalises_to(" read:a , write:b ", "read:a,write:b");
    assert_normalises_to("\tread:a\t,\t write:b", "read:a,write:b");
    assert_normalises_to("  solo  ", "solo");
}

static void
test_normalise_of_the_empty_list_is_empty(void **state)
{
    (void)state;
    assert_normalises_to("", "");
}

static void
test_normalise_drops_duplicates_and_keeps_first_order(void **state)
{
    (void)state;
    assert_normalises_to("a,b,a", "a,b");
    assert_normalises_to("b,a,b,a,c", "b,a,c");
    assert_normalises_to("read:a, read:a ,read:a", "read:a");
    /* A prefix of another scope is not a duplicate of it. */
    assert_normalises_to("read,read:a,read:", "read,read:a,read:");
    assert_normalises_to("read:a,read", "read:a,read");
    assert_normalises_to("*,read:*", "*,read:*");
}

static void
test_normalise_rejects_bad_and_empty_scopes(void **state)
{
    (void)state;
    assert_list_rejected("read:a,re*d", "re*d");
    assert_list_rejected("read items", "read items");
    assert_list_rejected("read:a,caf\xC3\xA9", NULL);
    assert_list_rejected("a,,b", NULL);
    assert_list_rejected(",a", NULL);
    assert_list_rejected(" , ", NULL);
    assert_list_rejected(" ", NULL);
    assert_list_rejected(",", NULL);
    assert_list_rejected("a,b/c", "b/c");
    assert_list_rejected("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL);
}

static void
test_normalise_rejects_trailing_commas(void **state)
{
    (void)state;
    assert_list_rejected("a,", NULL);
    assert_list_rejected("a,b,", NULL);
    assert_list_rejected("a, ", NULL);
    assert_list_rejected("a,b,,", NULL);
}

static void
test_normalise_refuses_a_list_longer_than_the_output(void **state)
{
    char out[8];
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(kg_scope_list_normalise("abc,def", out, sizeof(out), &err), KG_OK);
    assert_string_equal(out, "abc,def");
    assert_int_equal(kg_scope_list_normalise("abc,defg", out, sizeof(out), &err), KG_EINVAL);
    /* Duplicates do not count against the room. */
    assert_int_equal(kg_scope_list_normalise("abc,abc,def,def", out, sizeof(out), &err), KG_OK);
    assert_string_equal(out, "abc,def");
}

static void
test_grants_exact_scopes_only_exactly(void **state)
{
    (void)state;
    assert_true(kg_scope_grants("read:items", "read:items"));
    assert_false(kg_scope_grants("read:items", "read:item"));
    assert_false(kg_scope_grants("read:item", "read:items"));
    assert_false(kg_scope_grants("read", "read:items"));
    assert_false(kg_scope_grants("Read:items", "read:items"));
    assert_false(kg_scope_grants("write:items", "read:items"));
}

static void
test_grants_with_a_star_covers_everything(void **state)
{
    (void)state;
    assert_true(kg_scope_grants("*", "read:items"));
    assert_true(kg_scope_grants("*", "admin"));
    assert_true(kg_scope_grants("*", "write:datasets.v2"));
}

static void
test_grants_with_a_prefix_wildcard_covers_only_that_prefix(void **state)
{
    (void)state;
    assert_true(kg_scope_grants("read:*", "read:items"));
    assert_true(kg_scope_grants("read:*", "read:datasets.v2"));
    assert_true(kg_scope_grants("read:*", "read:"));
    assert_false(kg_scope_grants("read:*", "read"));
    assert_false(kg_scope_grants("read:*", "write:items"));
    assert_false(kg_scope_grants("read:*", "reader:items"));
    assert_false(kg_scope_grants("read:*", "xread:items"));
    assert_true(kg_scope_grants("datasets.*", "datasets.read"));
    assert_false(kg_scope_grants("datasets.*", "datasets"));
}

static const char routes_conf[] = "# line 1\n"
                                  "route GET /v1/items read:items\n"   /* 2 */
                                  "route POST /v1/items write:items\n" /* 3 */
                                  "route * /admin* admin\n"            /* 4 */
                                  "route GET /v1/* read:any\n"         /* 5 */
                                  "route GET /v1/special special\n"    /* 6: shadowed by line 5 */
                                  "route get /lower low\n"             /* 7: method upper-cased */
                                  "route DELETE /v1/items write:items admin\n" /* 8 */
                                  "route * /health*  health\n";                /* 9 */

static void
test_route_takes_the_first_matching_rule(void **state)
{
    struct fixture *f = *state;

    load_config(f, routes_conf);
    assert_int_equal(f->cfg->nroutes, 8);
    assert_int_equal(route_line(f->cfg, "GET", "/v1/items"), 2);
    assert_int_equal(route_line(f->cfg, "POST", "/v1/items"), 3);
    /* Line 6 is never reached: the prefix on line 5 comes first. */
    assert_int_equal(route_line(f->cfg, "GET", "/v1/special"), 5);
    assert_int_equal(route_line(f->cfg, "DELETE", "/v1/items"), 8);
}

static void
test_route_exact_patterns_match_only_the_whole_path(void **state)
{
    struct fixture *f = *state;

    load_config(f, routes_conf);
    /* Not exactly /v1/items, so the GET prefix rule on line 5 takes them. */
    assert_int_equal(route_line(f->cfg, "GET", "/v1/items/"), 5);
    assert_int_equal(route_line(f->cfg, "GET", "/v1/items/42"), 5);
    assert_int_equal(route_line(f->cfg, "GET", "/v1/itemsx"), 5);
    /* No POST prefix rule exists. */
    assert_int_equal(route_line(f->cfg, "POST", "/v1/items/"), 0);
    assert_int_equal(route_line(f->cfg, "POST", "/v1/item"), 0);
}

static void
test_route_prefix_patterns_match_by_prefix(void **state)
{
    struct fixture *f = *state;
    const struct kg_route *r;

    load_config(f, routes_conf);
    assert_int_equal(route_line(f->cfg, "GET", "/admin"), 4);
    assert_int_equal(route_line(f->cfg, "GET", "/admin/users"), 4);
    assert_int_equal(route_line(f->cfg, "GET", "/administrator"), 4);
    assert_int_equal(route_line(f->cfg, "GET", "/v1/"), 5);
    assert_int_equal(route_line(f->cfg, "GET", "/v1"), 0);
    assert_int_equal(route_line(f->cfg, "GET", "/adm"), 0);
    r = kg_scope_route(f->cfg, "GET", "/admin/x");
    assert_true(r->is_prefix);
    assert_string_equal(r->pattern, "/admin");
}

static void
test_route_method_star_matches_every_method(void **state)
{
    struct fixture *f = *state;
    static const char *const methods[] = {"GET",  "POST",    "PUT",   "DELETE",
                                          "HEAD", "OPTIONS", "PATCH", "PROPFIND"};

    load_config(f, routes_conf);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (route_line(f->cfg, methods[i], "/admin/x") != 4)
            fail_msg("%s /admin/x should match the \"*\" rule on line 4", methods[i]);
    /* A named method matches only itself, except that GET covers HEAD
     * (servers answer HEAD with their GET handler). */
    assert_int_equal(route_line(f->cfg, "PUT", "/v1/items"), 0);
    assert_int_equal(route_line(f->cfg, "HEAD", "/v1/items"), 2);
    assert_int_equal(route_line(f->cfg, "HEAD", "/v1/special"), 5);
    assert_int_equal(route_line(f->cfg, "OPTIONS", "/v1/items"), 0);
}

static void
test_route_methods_are_stored_upper_case_and_matched_in_any_case(void **state)
{
    struct fixture *f = *state;

    load_config(f, routes_conf);
    assert_string_equal(kg_scope_route(f->cfg, "GET", "/lower")->method, "GET");
    assert_int_equal(route_line(f->cfg, "GET", "/lower"), 7);
    /* Methods are case-sensitive (RFC 9110 9.1), but an upstream that
     * upper-cases "post" must not receive it past a POST rule. */
    assert_int_equal(route_line(f->cfg, "get", "/lower"), 7);
    assert_int_equal(route_line(f->cfg, "post", "/v1/items"), 3);
    assert_int_equal(route_line(f->cfg, "Delete", "/v1/items"), 8);
}

static void
test_route_with_no_rules_matches_nothing(void **state)
{
    struct fixture *f = *state;

    load_config(f, "# no routes\n");
    assert_int_equal(f->cfg->nroutes, 0);
    assert_null(kg_scope_route(f->cfg, "GET", "/"));
    assert_null(kg_scope_route(f->cfg, "GET", "/v1/items"));
}

static void
test_route_star_on_the_root_matches_every_path(void **state)
{
    struct fixture *f = *state;

    load_config(f, "route GET /v1/items read:items\nroute * /* base\n");
    assert_int_equal(route_line(f->cfg, "GET", "/v1/items"), 1);
    assert_int_equal(route_line(f->cfg, "GET", "/"), 2);
    assert_int_equal(route_line(f->cfg, "POST", "/anything/at/all"), 2);
}

static void
test_missing_names_the_first_scope_not_granted(void **state)
{
    struct fixture *f = *state;
    const struct kg_route *r;
    const char *none[] = {NULL};
    const char *only_write[] = {"write:items"};
    const char *only_admin[] = {"admin"};
    const char *both[] = {"admin", "write:items"};
    const char *star[] = {"*"};
    const char *write_star[] = {"read:x", "write:*"};

    load_config(f, routes_conf);
    r = kg_scope_route(f->cfg, "DELETE", "/v1/items");
    assert_non_null(r);
    assert_int_equal(r->nscopes, 2);
    assert_string_equal(kg_scope_missing(none, 0, r), "write:items");
    assert_string_equal(kg_scope_missing(only_write, 1, r), "admin");
    assert_string_equal(kg_scope_missing(only_admin, 1, r), "write:items");
    assert_null(kg_scope_missing(both, 2, r));
    assert_null(kg_scope_missing(star, 1, r));
    assert_string_equal(kg_scope_missing(write_star, 2, r), "admin");
}

static void
test_missing_honours_prefix_wildcards(void **state)
{
    struct fixture *f = *state;
    const struct kg_route *r;
    const char *read_star[] = {"read:*"};
    const char *write_star[] = {"write:*"};

    load_config(f, routes_conf);
    r = kg_scope_route(f->cfg, "GET", "/v1/items");
    assert_null(kg_scope_missing(read_star, 1, r));
    assert_string_equal(kg_scope_missing(write_star, 1, r), "read:items");
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scope_valid_accepts_the_documented_alphabet),
        cmocka_unit_test(test_scope_valid_rejects_empty_long_and_odd_scopes),
        cmocka_unit_test(test_normalise_trims_blanks_around_each_scope),
        cmocka_unit_test(test_normalise_of_the_empty_list_is_empty),
        cmocka_unit_test(test_normalise_drops_duplicates_and_keeps_first_order),
        cmocka_unit_test(test_normalise_rejects_bad_and_empty_scopes),
        cmocka_unit_test(test_normalise_rejects_trailing_commas),
        cmocka_unit_test(test_normalise_refuses_a_list_longer_than_the_output),
        cmocka_unit_test(test_grants_exact_scopes_only_exactly),
        cmocka_unit_test(test_grants_with_a_star_covers_everything),
        cmocka_unit_test(test_grants_with_a_prefix_wildcard_covers_only_that_prefix),
        T(test_route_takes_the_first_matching_rule),
        T(test_route_exact_patterns_match_only_the_whole_path),
        T(test_route_prefix_patterns_match_by_prefix),
        T(test_route_method_star_matches_every_method),
        T(test_route_methods_are_stored_upper_case_and_matched_in_any_case),
        T(test_route_with_no_rules_matches_nothing),
        T(test_route_and_cost_patterns_match_letters_in_any_case_unless_sensitive),
        T(test_route_star_on_the_root_matches_every_path),
        T(test_missing_names_the_first_scope_not_granted),
        T(test_missing_honours_prefix_wildcards),
    };
#undef T

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
