/* tests/unit/proxy/test_upresp.c - src/proxy/upresp.c through
 * keygate/upresp.h: the native client's response parser. Every malformed
 * or ambiguous head and framing is BAD; good answers come out whole, in
 * any split of their bytes; what follows an answer is left unused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/upresp.h"

struct sink {
    char headers[1024];
    size_t hlen;
    char body[1024];
    size_t blen;
};

static bool
on_header(void *ctx, const char *line, size_t len)
{
    struct sink *s = ctx;

    if (s->hlen + len >= sizeof(s->headers))
        return false;
    memcpy(s->headers + s->hlen, line, len);
    s->hlen += len;
    s->headers[s->hlen] = '\0';
    return true;
}

static bool
on_body(void *ctx, const char *p, size_t len)
{
    struct sink *s = ctx;

    if (s->blen + len >= sizeof(s->body))
        return false;
    memcpy(s->body + s->blen, p, len);
    s->blen += len;
    s->body[s->blen] = '\0';
    return true;
}

static const struct kg_upresp_cb cb = {.header = on_header, .body = on_body};

/* Feeds bytes in pieces of step (0: all at once); returns the bytes used. */
static size_t
feed(struct kg_upresp *r, const char *p, size_t len, size_t step, struct sink *s)
{
    size_t used = 0;

    while (used < len) {
        size_t n = step == 0 || len - used < step ? len - used : step;
        size_t u = kg_upresp_feed(r, p + used, n, &cb, s);

        used += u;
        if (u < n)
            break;
    }
    return used;
}

static const char *const bad_answers[] = {
    "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\rXok",
    "HTTP/1.1 200 OK\r\nX-A: a\x01z\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nX-A: a\x7fz\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length\t: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 2\r\n\r\nok",
    ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: "
     "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: 2 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok",
    "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nok\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nok\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"x\x01\"\r\nok\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\rX0\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok",
    "ICY 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 100 Continue\r\n \r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
};

static void
test_every_malformed_or_ambiguous_answer_is_bad_in_any_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_answers) / sizeof(bad_answers[0]); i++) {
        for (size_t step = 0; step < 4; step++) {
            struct kg_upresp *r = kg_upresp_new(4096);
            struct sink s = {0};

            assert_non_null(r);
            feed(r, bad_answers[i], strlen(bad_answers[i]), step, &s);
            if (kg_upresp_state(r) != KG_UPRESP_BAD)
                kg_upresp_eof(r, &cb, &s);
            if (kg_upresp_state(r) != KG_UPRESP_BAD)
                fail_msg("answer %zu (step %zu) was taken: %s", i, step, bad_answers[i]);
            assert_true(kg_upresp_error(r)[0] != '\0');
            kg_upresp_free(r);
        }
    }
}

static void
test_a_nul_in_the_head_is_bad(void **state)
{
    static const char a[] = "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok";
    struct kg_upresp *r = kg_upresp_new(4096);
    struct sink s = {0};

    (void)state;
    assert_non_null(r);
    feed(r, a, sizeof(a) - 1, 0, &s);
    assert_int_equal(kg_upresp_state(r), KG_UPRESP_BAD);
    kg_upresp_free(r);
}

static void
test_a_head_over_the_limit_is_bad(void **state)
{
    char a[2048];
    struct kg_upresp *r = kg_upresp_new(1024);
    struct sink s = {0};
    int n;

    (void)state;
    assert_non_null(r);
    n = snprintf(a, sizeof(a), "HTTP/1.1 200 OK\r\nX-Big: %01100d\r\nContent-Length: 0\r\n\r\n", 0);
    feed(r, a, (size_t)n, 0, &s);
    assert_int_equal(kg_upresp_state(r), KG_UPRESP_BAD);
    kg_upresp_free(r);
}

struct good {
    const char *bytes;
    bool head_request;
    unsigned status;
    long long content_length;
    const char *headers;
    const char *body;
    bool keep_alive;
    size_t left; /* bytes left unused at the end */
};

static const struct good goods[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  a b \r\n\r\nhello", false, 200, 5,
     "Content-Length: 5\r\nX-A:  a b \r\n", "hello", true, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5;x=y\r\nhello\r\n6;z=\"q\"\r\n "
     "world\r\n"
     "0\r\nX-T: t\r\n\r\n",
     false, 200, -1, "Transfer-Encoding: Chunked\r\n", "hello world", true, 0},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
     "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
     false, 201, 2, "Content-Length: 2\r\n", "ok", true, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 200, 5, "Content-Length: 5\r\n", "",
     true, 0},
    {"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1", false, 204, 0, "", "", true, 8},
    {"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n", false, 304, 0,
     "ETag: \"x\"\r\nContent-Length: 10\r\n", "", true, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", false, 200, 2, "Content-Length: 2\r\n",
     "ok", true, 5},
    {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false, 200, 2,
     "Connection: close\r\nContent-Length: 2\r\n", "ok", false, 0},
    {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, 200, 0, "Content-Length: 0\r\n", "", true,
     0},
};

static void
test_good_answers_come_out_whole_in_any_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
        const struct good *g = &goods[i];

        for (size_t step = 0; step < 5; step++) {
            struct kg_upresp *r = kg_upresp_new(4096);
            struct sink s = {0};
            size_t len = strlen(g->bytes), used;

            assert_non_null(r);
            kg_upresp_reset(r, g->head_request);
            used = feed(r, g->bytes, len, step, &s);
            if (kg_upresp_state(r) != KG_UPRESP_DONE)
                fail_msg("answer %zu (step %zu): state %d (%s)", i, step, kg_upresp_state(r),
                         kg_upresp_error(r));
            assert_int_equal(len - used, g->left);
            assert_int_equal(kg_upresp_status(r), g->status);
            assert_int_equal(kg_upresp_content_length(r), g->content_length);
            assert_string_equal(s.headers, g->headers);
            assert_string_equal(s.body, g->body);
            assert_int_equal(kg_upresp_keep_alive(r), g->keep_alive);
            kg_upresp_free(r);
        }
    }
}

static void
test_a_body_delimited_by_the_close_ends_at_eof(void **state)
{
    static const char a[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close";
    struct kg_upresp *r = kg_upresp_new(4096);
    struct sink s = {0};

    (void)state;
    assert_non_null(r);
    feed(r, a, sizeof(a) - 1, 0, &s);
    assert_int_equal(kg_upresp_state(r), KG_UPRESP_BODY);
    kg_upresp_eof(r, &cb, &s);
    assert_int_equal(kg_upresp_state(r), KG_UPRESP_DONE);
    assert_false(kg_upresp_keep_alive(r));
    assert_string_equal(s.body, "until the close");
    kg_upresp_free(r);
}

static void
test_a_close_before_the_end_of_a_framed_body_is_bad(void **state)
{
    static const char *const cut[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "HTTP/1.1 200 OK\r\nContent-Le",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
        struct kg_upresp *r = kg_upresp_new(4096);
        struct sink s = {0};

        assert_non_null(r);
        feed(r, cut[i], strlen(cut[i]), 0, &s);
        kg_upresp_eof(r, &cb, &s);
        assert_int_equal(kg_upresp_state(r), KG_UPRESP_BAD);
        kg_upresp_free(r);
    }
}

static void
test_a_parser_is_reused_after_reset(void **state)
{
    static const char a[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";
    static const char b[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n";
    struct kg_upresp *r = kg_upresp_new(4096);
    struct sink s = {0};

    (void)state;
    assert_non_null(r);
    feed(r, a, sizeof(a) - 1, 0, &s);
    assert_int_equal(kg_upresp_state(r), KG_UPRESP_DONE);
    kg_upresp_reset(r, false);
    memset(&s, 0, sizeof(s));
    feed(r, b, sizeof(b) - 1, 0, &s);
    assert_int_equal(kg_upresp_state(r), KG_UPRESP_DONE);
    assert_string_equal(s.body, "b");
    assert_int_equal(kg_upresp_content_length(r), -1);
    kg_upresp_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_malformed_or_ambiguous_answer_is_bad_in_any_split),
        cmocka_unit_test(test_a_nul_in_the_head_is_bad),
        cmocka_unit_test(test_a_head_over_the_limit_is_bad),
        cmocka_unit_test(test_good_answers_come_out_whole_in_any_split),
        cmocka_unit_test(test_a_body_delimited_by_the_close_ends_at_eof),
        cmocka_unit_test(test_a_close_before_the_end_of_a_framed_body_is_bad),
        cmocka_unit_test(test_a_parser_is_reused_after_reset),
    };

    return cmocka_run_group_tests_name("unit_proxy_test_upresp", tests, NULL, NULL);
}
