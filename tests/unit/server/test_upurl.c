/* tests/unit/server/test_upurl.c - src/server/upurl.c through keygate/upurl.h.
 *
 * Which paths and queries may go to curl as CURLU parts, and that a CURLU
 * pointed at upstream + path + query reads back as the URL string keygate
 * built before: the upstream parsed once, parsed again only when a reload
 * changed it, each handle's copy refreshed only then. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/upurl.h"

static void
test_what_curl_would_alter_keeps_the_string(void **state)
{
    (void)state;
    assert_true(kg_upurl_fits("/v1/a+b;c=d/%20%25%7e", NULL));
    assert_true(kg_upurl_fits("/", "p=%2f&&q==r"));
    assert_true(kg_upurl_fits("/", ""));
    assert_true(kg_upurl_fits("/%zz", "a=%z"));
    /* curl 7.88 lowercases the hex of an escape set as a part. */
    assert_false(kg_upurl_fits("/a%2Fb", NULL));
    assert_false(kg_upurl_fits("/a%3B", NULL));
    assert_false(kg_upurl_fits("/a%A0", NULL));
    assert_false(kg_upurl_fits("/", "p=%2F"));
    assert_false(kg_upurl_fits("/", "p=%E"));
    assert_true(kg_upurl_fits("/", "p=%e2"));
    /* A parsed URL drops a fragment, refuses spaces and control bytes. */
    assert_false(kg_upurl_fits("/a#b", NULL));
    assert_false(kg_upurl_fits("/", "x#y"));
    assert_false(kg_upurl_fits("/", "q=a b"));
    assert_false(kg_upurl_fits("/\x01", NULL));
    assert_false(kg_upurl_fits("/", "\x7f"));
}

static void
want_url(const struct kg_upurl *h, const char *want)
{
    char *got = NULL;

    assert_int_equal(curl_url_get(h->u, CURLUPART_URL, &got, 0), CURLUE_OK);
    assert_string_equal(got, want);
    curl_free(got);
}

static void
test_a_handle_follows_the_upstream_and_each_request(void **state)
{
    struct kg_upbase *b = kg_upbase_new();
    struct kg_upurl h = {0}, h2 = {0};
    CURLU *first;

    (void)state;
    assert_non_null(b);
    assert_true(kg_upurl_point(b, &h, "http://127.0.0.1:9/base/", "/v1/a+b;c", "p=%2f&&q==r"));
    want_url(&h, "http://127.0.0.1:9/base/v1/a+b;c?p=%2f&&q==r");
    first = h.u;
    /* The next request on the same handle: the same CURLU, new parts. */
    assert_true(kg_upurl_point(b, &h, "http://127.0.0.1:9/base/", "/x", NULL));
    assert_ptr_equal(h.u, first);
    want_url(&h, "http://127.0.0.1:9/base/x");
    /* An empty query stays one (curl sends "/x?" for it, as for the string). */
    assert_true(kg_upurl_point(b, &h, "http://127.0.0.1:9/base/", "/x", ""));
    {
        char *q = NULL;

        assert_int_equal(curl_url_get(h.u, CURLUPART_QUERY, &q, 0), CURLUE_OK);
        assert_string_equal(q, "");
        curl_free(q);
    }
    /* A reload changed upstream: the base again, and the handle's copy. */
    assert_true(kg_upurl_point(b, &h, "https://[::1]:8443", "/y", "z=1"));
    want_url(&h, "https://[::1]:8443/y?z=1");
    assert_true(kg_upurl_point(b, &h2, "https://[::1]:8443", "/w", NULL));
    want_url(&h2, "https://[::1]:8443/w");
    /* What a CURLU would alter: the caller uses the string. */
    assert_false(kg_upurl_point(b, &h, "https://[::1]:8443", "/a%2F", NULL));
    assert_false(kg_upurl_point(b, &h, "http://127.0.0.1:9/%2Fbase", "/a", NULL));
    kg_upurl_cleanup(&h);
    kg_upurl_cleanup(&h2);
    assert_null(h.u);
    kg_upbase_free(b);
    kg_upbase_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_what_curl_would_alter_keeps_the_string),
        cmocka_unit_test(test_a_handle_follows_the_upstream_and_each_request),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
