/* tests/unit/http/test_pathnorm.c - src/http/pathnorm.c through
 * keygate/pathnorm.h. Each case is an input path and either the one
 * canonical form a route rule will see or a refusal (400). The tricks of
 * issue 3 come first: they must all land on "/admin". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "keygate/pathnorm.h"

/* Normalises path[0..len), expecting KG_OK and exactly want. The output
 * buffer is exactly len + 1 bytes, as the header promises is enough. */
static void
assert_norm_len(const char *path, size_t len, const char *want)
{
    char out[1024];
    struct kg_err err = {{0}};
    enum kg_status rc;

    assert_true(len + 1 <= sizeof(out));
    memset(out, 'X', sizeof(out));
    rc = kg_pathnorm(path, len, out, len + 1, &err);
    if (rc != KG_OK)
        fail_msg("\"%.*s\" should normalise to \"%s\", got %s: %s", (int)len, path, want,
                 kg_status_str(rc), err.msg);
    if (strcmp(out, want) != 0)
        fail_msg("\"%.*s\" should normalise to \"%s\", got \"%s\"", (int)len, path, want, out);
    /* Nothing written past the NUL the result needs. */
    assert_int_equal(out[len + 1], 'X');
}

static void
assert_norm(const char *path, const char *want)
{
    assert_norm_len(path, strlen(path), want);
}

static void
assert_refused_len(const char *path, size_t len)
{
    char out[1024];
    struct kg_err err = {{0}};
    enum kg_status rc = kg_pathnorm(path, len, out, sizeof(out), &err);

    if (rc != KG_EINVAL)
        fail_msg("path of %zu bytes (\"%.*s\") should be refused with KG_EINVAL, got %s", len,
                 (int)len, path, kg_status_str(rc));
    assert_true(err.msg[0] != '\0');
}

static void
assert_refused(const char *path)
{
    assert_refused_len(path, strlen(path));
}

static void
test_the_admin_tricks_all_become_admin(void **state)
{
    (void)state;
    assert_norm("/admin", "/admin");
    assert_norm("//admin", "/admin");
    assert_norm("///admin", "/admin");
    assert_norm("/x/../admin", "/admin");
    assert_norm("/%61dmin", "/admin");
    assert_norm("/%61%64%6D%69%6e", "/admin");
    assert_norm("/%2e%2e/admin", "/admin");
    assert_norm("/%2E%2E/admin", "/admin");
    assert_norm("/./admin", "/admin");
    assert_norm("/x/y/../../admin", "/admin");
    assert_norm("/x/%2e%2e/admin", "/admin");
    assert_norm("/.%2e/admin", "/admin");
    assert_norm("/../../../admin", "/admin");
}

static void
test_dot_segments_are_resolved(void **state)
{
    (void)state;
    assert_norm("/./a/./b", "/a/b");
    assert_norm("/a/b/..", "/a/");
    assert_norm("/a/b/../c", "/a/c");
    assert_norm("/a/b/.", "/a/b/");
    assert_norm("/a/./b/../../c", "/c");
    assert_norm("/a/b/c/./../../g", "/a/g");
}

static void
test_dot_dot_never_climbs_above_the_root(void **state)
{
    (void)state;
    assert_norm("/..", "/");
    assert_norm("/../", "/");
    assert_norm("/../..", "/");
    assert_norm("/a/../..", "/");
    assert_norm("/.", "/");
    assert_norm("/", "/");
}

static void
test_segments_that_only_look_like_dots_are_kept(void **state)
{
    (void)state;
    assert_norm("/...", "/...");
    assert_norm("/a/.b", "/a/.b");
    assert_norm("/a/..b/c", "/a/..b/c");
    assert_norm("/a/b../c", "/a/b../c");
    assert_norm("/.well-known/x", "/.well-known/x");
}

static void
test_repeated_slashes_collapse(void **state)
{
    (void)state;
    assert_norm("//", "/");
    assert_norm("/a//b///c", "/a/b/c");
    assert_norm("/a//", "/a/");
}

static void
test_a_trailing_slash_is_kept(void **state)
{
    (void)state;
    assert_norm("/v1/items/", "/v1/items/");
    assert_norm("/v1/items", "/v1/items");
    assert_norm("/v1/x/../items/", "/v1/items/");
}

static void
test_unreserved_escapes_are_decoded(void **state)
{
    (void)state;
    assert_norm("/%41%5A%61%7A%30%39", "/AZaz09");
    assert_norm("/%2D%2e%5F%7E", "/-._~");
    assert_norm("/%7e", "/~");
}

static void
test_reserved_escapes_are_kept_upper_cased(void **state)
{
    (void)state;
    assert_norm("/a%3ab", "/a%3Ab");
    assert_norm("/a%3Ab", "/a%3Ab");
    assert_norm("/%3f%23%5b%5d%40", "/%3F%23%5B%5D%40");
    assert_norm("/q%20x", "/q%20x");
    assert_norm("/%25", "/%25");
    assert_norm("/caf%c3%a9", "/caf%C3%A9");
}

static void
test_raw_reserved_characters_pass_through(void **state)
{
    (void)state;
    assert_norm("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;=");
}

static void
test_an_encoded_slash_is_refused(void **state)
{
    (void)state;
    assert_refused("/a%2Fb");
    assert_refused("/a%2fb");
    assert_refused("/%2F");
    assert_refused("/admin%2f..%2fsecret");
}

static void
test_nul_is_refused_encoded_or_raw(void **state)
{
    (void)state;
    assert_refused("/a%00b");
    assert_refused("/%00");
    assert_refused_len("/a\0b", 4);
}

static void
test_a_raw_fragment_mark_or_backslash_is_refused(void **state)
{
    (void)state;
    /* "/v1/admin#/../../items" would pass a rule as "/items" while an
     * upstream that cuts at '#' serves "/v1/admin". */
    assert_refused("/v1/admin#/../../items");
    assert_refused("/a#");
    assert_refused("/v1/items\\..\\admin");
    assert_norm("/a%23b%5Cc", "/a%23b%5Cc");
}

static void
test_malformed_escapes_are_refused(void **state)
{
    (void)state;
    assert_refused("/%4");
    assert_refused("/a%");
    assert_refused("/%");
    assert_refused("/%zz");
    assert_refused("/%4g");
    assert_refused("/%g4");
    assert_refused("/%%41");
    assert_refused("/% 41");
}

static void
test_an_escape_cut_by_len_is_refused(void **state)
{
    (void)state;
    /* "%41" is complete in the string but len stops before its last digit. */
    assert_refused_len("/a%41", 4);
}

static void
test_raw_space_control_and_non_ascii_bytes_are_refused(void **state)
{
    static const char *const bad[] = {
        "/a b",   "/a\tb",  "/a\rb",        "/a\nb", "/\x01",
        "/a\x1f", "/a\x7f", "/caf\xC3\xA9", "/\x80", "/\xff",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(bad[i]);
}

static void
test_a_path_not_starting_with_a_slash_is_refused(void **state)
{
    (void)state;
    assert_refused("admin");
    assert_refused("*");
    assert_refused("http://example.com/admin");
    assert_refused("./admin");
    assert_refused("");
}

static void
test_only_len_bytes_are_read(void **state)
{
    (void)state;
    /* The query string is not part of the path: the caller passes its length. */
    assert_norm_len("/v1/items?x=%2F", 9, "/v1/items");
    assert_norm_len("/admin/../x", 6, "/admin");
}

static void
test_a_too_small_output_buffer_is_refused_not_overrun(void **state)
{
    char out[4];
    struct kg_err err = {{0}};

    (void)state;
    memset(out, 'X', sizeof(out));
    assert_int_equal(kg_pathnorm("/abcdef", 7, out, 3, &err), KG_ELIMIT);
    assert_int_equal(out[3], 'X');
}

static void
test_normalising_twice_changes_nothing(void **state)
{
    static const char *const paths[] = {
        "//admin", "/x/../admin", "/%61dmin", "/a/b/..", "/a%3ab", "/./a/./b/", "/..", "/a//b/",
    };
    char once[256], twice[256];
    struct kg_err err = {{0}};

    (void)state;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        assert_int_equal(kg_pathnorm(paths[i], strlen(paths[i]), once, sizeof(once), &err), KG_OK);
        assert_int_equal(kg_pathnorm(once, strlen(once), twice, sizeof(twice), &err), KG_OK);
        if (strcmp(once, twice) != 0)
            fail_msg("\"%s\" normalised twice should stay \"%s\", got \"%s\"", paths[i], once,
                     twice);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_admin_tricks_all_become_admin),
        cmocka_unit_test(test_dot_segments_are_resolved),
        cmocka_unit_test(test_dot_dot_never_climbs_above_the_root),
        cmocka_unit_test(test_segments_that_only_look_like_dots_are_kept),
        cmocka_unit_test(test_repeated_slashes_collapse),
        cmocka_unit_test(test_a_trailing_slash_is_kept),
        cmocka_unit_test(test_unreserved_escapes_are_decoded),
        cmocka_unit_test(test_reserved_escapes_are_kept_upper_cased),
        cmocka_unit_test(test_raw_reserved_characters_pass_through),
        cmocka_unit_test(test_an_encoded_slash_is_refused),
        cmocka_unit_test(test_nul_is_refused_encoded_or_raw),
        cmocka_unit_test(test_a_raw_fragment_mark_or_backslash_is_refused),
        cmocka_unit_test(test_malformed_escapes_are_refused),
        cmocka_unit_test(test_an_escape_cut_by_len_is_refused),
        cmocka_unit_test(test_raw_space_control_and_non_ascii_bytes_are_refused),
        cmocka_unit_test(test_a_path_not_starting_with_a_slash_is_refused),
        cmocka_unit_test(test_only_len_bytes_are_read),
        cmocka_unit_test(test_a_too_small_output_buffer_is_refused_not_overrun),
        cmocka_unit_test(test_normalising_twice_changes_nothing),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
