/* tests/unit/http/test_rawguard.c - the raw-bytes scanner of
 * src/http/rawguard.c through keygate/rawguard.h. Every case is fed whole,
 * one byte at a time and in pseudo-random pieces (fixed seeds): the verdict
 * and the offset of the refused head must not depend on how the stream was
 * cut, and the "safe" offset never passes the start of an unfinished head. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "keygate/rawguard.h"

#define OK KG_RAWGUARD_OK
#define GOOD_GET "GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n"

struct expect {
    enum kg_rawguard_reason why;
    uint64_t head_start;
    bool lost;
};

/* Feeds s in pieces of the sizes the generator gives; checks the safe
 * offset after each piece. */
static struct expect
feed_split(const unsigned char *s, size_t n, unsigned seed)
{
    struct kg_rawscan sc;
    struct expect e = {OK, 0, false};
    size_t i = 0;
    uint32_t x = seed * 2654435761u + 1;

    kg_rawscan_init(&sc);
    while (i < n) {
        size_t piece = 1;
        enum kg_rawscan_result r;

        if (seed != 0) {
            x = x * 1103515245u + 12345u;
            piece = 1 + (x >> 16) % 23;
        }
        if (piece > n - i)
            piece = n - i;
        r = kg_rawscan_feed(&sc, s + i, piece, &e.why);
        i += piece;
        if (r == KG_RAWSCAN_REJECT) {
            e.head_start = kg_rawscan_head_start(&sc);
            assert_true(kg_rawscan_safe_end(&sc) == e.head_start);
            return e;
        }
        if (r == KG_RAWSCAN_LOST) {
            e.lost = true;
            return e;
        }
        assert_true(kg_rawscan_safe_end(&sc) <= i);
    }
    return e;
}

/* The verdict of the whole buffer, checked to be the same for every split. */
static struct expect
scan_n(const char *s, size_t n)
{
    struct expect whole = {OK, 0, false};

    whole.why = kg_rawscan_buffer(s, n, &whole.head_start, &whole.lost);
    for (unsigned seed = 0; seed < 12; seed++) {
        struct expect e = feed_split((const unsigned char *)s, n, seed);

        assert_int_equal(e.why, whole.why);
        assert_int_equal(e.lost, whole.lost);
        if (e.why != OK)
            assert_int_equal(e.head_start, whole.head_start);
    }
    return whole;
}

#define SCAN(lit) scan_n((lit), sizeof(lit) - 1)

/* A refused head, first on the connection and again after a valid request
 * (the offset then is that request's length). */
static void
check_refused(const char *head, size_t n, enum kg_rawguard_reason why)
{
    char buf[4096];
    size_t pre = strlen(GOOD_GET);
    struct expect e = scan_n(head, n);

    assert_int_equal(e.why, why);
    assert_int_equal(e.head_start, 0);
    assert_true(pre + n <= sizeof(buf));
    memcpy(buf, GOOD_GET, pre);
    memcpy(buf + pre, head, n);
    e = scan_n(buf, pre + n);
    assert_int_equal(e.why, why);
    assert_int_equal(e.head_start, pre);
}

#define REFUSED(lit, why) check_refused((lit), sizeof(lit) - 1, (why))

static void
test_clean_requests_pass(void **state)
{
    struct expect e;

    (void)state;
    e = SCAN(GOOD_GET);
    assert_int_equal(e.why, OK);
    assert_false(e.lost);
    e = SCAN("\r\n\nPOST /v1/x?a=b HTTP/1.1\r\nHost: a\r\nContent-Length:  5\r\n"
             "X-Tab: a\tb \xc3\xa9\r\nX-Empty:\r\n\r\nabcde" GOOD_GET
             "DELETE /x HTTP/1.0\r\nContent-length: 0\r\n\r\n");
    assert_int_equal(e.why, OK);
    assert_false(e.lost);
    e = SCAN("GET /x HTTP/1.9\r\nHost: a\r\n\r\n");
    assert_int_equal(e.why, OK);
}

static void
test_the_request_line_is_checked(void **state)
{
    (void)state;
    REFUSED("G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_METHOD);
    REFUSED("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_METHOD);
    REFUSED(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_METHOD);
    REFUSED("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG / HTTP/1.1\r\n\r\n", KG_RAWGUARD_METHOD);
    REFUSED("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_TARGET);
    REFUSED("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_TARGET);
    REFUSED("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_TARGET);
    REFUSED("GET /v1/raw\0/admin HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_TARGET);
    REFUSED("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_TARGET);
    REFUSED("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_TARGET);
    REFUSED("GET\r\nHost: a\r\n\r\n", KG_RAWGUARD_LINE);
    REFUSED("GET /x\r\nHost: a\r\n\r\n", KG_RAWGUARD_LINE);
    REFUSED("GET /x HTTP/1.1 junk\r\nHost: a\r\n\r\n", KG_RAWGUARD_LINE);
    REFUSED("GET /x HTTP/1.10\r\nHost: a\r\n\r\n", KG_RAWGUARD_LINE);
    REFUSED("GET /x http/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_LINE);
    REFUSED("GET /x HTTP/1.1\nHost: a\r\n\r\n", KG_RAWGUARD_LINE_END);
}

static void
test_a_version_the_library_refuses_itself_stops_the_scan(void **state)
{
    struct expect e;

    (void)state;
    e = SCAN("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert_int_equal(e.why, OK);
    assert_true(e.lost);
    e = SCAN("GET / HTTP/0.9\r\n\r\n");
    assert_true(e.lost);
}

static void
test_line_ends_are_crlf_only(void **state)
{
    (void)state;
    REFUSED("GET / HTTP/1.1\r\nHost: a\n\r\n", KG_RAWGUARD_LINE_END);
    REFUSED("GET / HTTP/1.1\r\nHost: a\r\n\n", KG_RAWGUARD_LINE_END);
    REFUSED("GET / HTTP/1.1\r\nHost: a\r\n\rX", KG_RAWGUARD_LINE_END);
    REFUSED("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", KG_RAWGUARD_VALUE);
    REFUSED("GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", KG_RAWGUARD_NAME);
    REFUSED("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", KG_RAWGUARD_METHOD);
}

static void
test_obs_fold_is_refused_after_crlf_or_bare_lf(void **state)
{
    (void)state;
    REFUSED("GET / HTTP/1.1\r\nContent-Lengt: 5\r\n h\r\n\r\nabcde", KG_RAWGUARD_FOLD);
    REFUSED("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n", KG_RAWGUARD_FOLD);
    REFUSED("GET / HTTP/1.1\r\nX-A: first\n second\n\n", KG_RAWGUARD_FOLD);
    REFUSED("GET / HTTP/1.1\r\n Host: a\r\n\r\n", KG_RAWGUARD_FOLD);
}

static void
test_header_names_and_values_are_checked(void **state)
{
    (void)state;
    REFUSED("GET / HTTP/1.1\r\nX-No\0te: ab\r\n\r\n", KG_RAWGUARD_NAME);
    REFUSED("GET / HTTP/1.1\r\nHost : a\r\n\r\n", KG_RAWGUARD_NAME);
    REFUSED("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", KG_RAWGUARD_NAME);
    REFUSED("GET / HTTP/1.1\r\n: a\r\n\r\n", KG_RAWGUARD_NAME);
    REFUSED("GET / HTTP/1.1\r\nNoColon\r\n\r\n", KG_RAWGUARD_NAME);
    REFUSED("GET / HTTP/1.1\r\nX(y): a\r\n\r\n", KG_RAWGUARD_NAME);
    REFUSED("GET / HTTP/1.1\r\nX-Note: a\0b\r\n\r\n", KG_RAWGUARD_VALUE);
    REFUSED("GET / HTTP/1.1\r\nX-Note: a\x01\r\n\r\n", KG_RAWGUARD_VALUE);
    REFUSED("GET / HTTP/1.1\r\nX-Note: a\x0b\r\n\r\n", KG_RAWGUARD_VALUE);
    REFUSED("GET / HTTP/1.1\r\nX-Note: a\x7f\r\n\r\n", KG_RAWGUARD_VALUE);
}

static void
test_content_length_is_plain_digits(void **state)
{
    struct expect e;

    (void)state;
#define CL(v) "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:" v "\r\n\r\n"
    REFUSED(CL(" +5"), KG_RAWGUARD_CL);
    REFUSED(CL(" -1"), KG_RAWGUARD_CL);
    REFUSED(CL(" 0x5"), KG_RAWGUARD_CL);
    REFUSED(CL(""), KG_RAWGUARD_CL);
    REFUSED(CL(" "), KG_RAWGUARD_CL);
    REFUSED(CL(" 5, 5"), KG_RAWGUARD_CL);
    REFUSED(CL(" 5 "), KG_RAWGUARD_CL);
    REFUSED(CL(" 5\t"), KG_RAWGUARD_CL);
    REFUSED(CL(" 5x"), KG_RAWGUARD_CL);
    REFUSED(CL(" 5 5"), KG_RAWGUARD_CL);
    REFUSED(CL(" 99999999999999999999"), KG_RAWGUARD_CL_TOO_LARGE);
    REFUSED(CL(" 1000000000000000000"), KG_RAWGUARD_CL_TOO_LARGE);
    REFUSED("POST / HTTP/1.1\r\ncontent-length: 1\r\nContent-Length: 1\r\n\r\nab",
            KG_RAWGUARD_SEVERAL_CL);
    e = SCAN(CL(" 999999999999999999"));
    assert_int_equal(e.why, OK);
    e = SCAN(CL("\t 007") "abcdefg" GOOD_GET);
    assert_int_equal(e.why, OK);
#undef CL
}

static void
test_transfer_encoding_matches_the_library(void **state)
{
    struct expect e;

    (void)state;
#define TE(v) "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:" v "\r\n\r\n0\r\n\r\n"
    REFUSED(TE(" chunked "), KG_RAWGUARD_TE);
    REFUSED(TE(" chunked\t"), KG_RAWGUARD_TE);
    REFUSED(TE(" gzip"), KG_RAWGUARD_TE);
    REFUSED(TE(" chunked, chunked"), KG_RAWGUARD_TE);
    REFUSED(TE(" chunke"), KG_RAWGUARD_TE);
    REFUSED(TE(""), KG_RAWGUARD_TE);
    REFUSED("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            KG_RAWGUARD_TE);
    REFUSED("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            KG_RAWGUARD_CL_AND_TE);
    REFUSED("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            KG_RAWGUARD_TE_HTTP10);
    e = SCAN(TE("  CHUNKED"));
    assert_int_equal(e.why, OK);
    assert_false(e.lost);
#undef TE
}

/* What follows a body is the next request's head, found exactly where the
 * library finds it; what is inside a body is never taken for a head. */
static void
test_bodies_are_framed_as_the_library_frames_them(void **state)
{
    static const char bad_looking[] = "X-Note: a\0b\r\n\r\n";
    char buf[512];
    struct expect e;
    size_t n;

    (void)state;
    n = (size_t)snprintf(buf, sizeof(buf),
                         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "%zx;name=\"v\"\r\n",
                         sizeof(bad_looking) - 1);
    memcpy(buf + n, bad_looking, sizeof(bad_looking) - 1);
    n += sizeof(bad_looking) - 1;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n3\nG\rT\n0\r\nTrailer: x\r\n\r\n%s",
                          GOOD_GET);
    e = scan_n(buf, n);
    assert_int_equal(e.why, OK);
    assert_false(e.lost);

    /* The same bytes after the last chunk are a head, and refused there. */
    memcpy(buf + n, "G\x01T / HTTP/1.1\r\n\r\n", 18);
    e = scan_n(buf, n + 18);
    assert_int_equal(e.why, KG_RAWGUARD_METHOD);
    assert_int_equal(e.head_start, n);

    /* A Content-Length body holding a bad head's bytes. */
    e = SCAN("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n\r\nX-Note: a\0b\r\n\r\n" GOOD_GET
             "GET /\0 HTTP/1.1\r\n\r\n");
    assert_int_equal(e.why, KG_RAWGUARD_TARGET);
    assert_int_equal(e.head_start, 48 + 15 + strlen(GOOD_GET));
}

static void
test_bad_chunk_framing_stops_the_scan(void **state)
{
    struct expect e;

    (void)state;
#define CH(b) "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" b
    e = SCAN(CH("5 \r\nabcde\r\n0\r\n\r\nG T / HTTP/1.1\r\n\r\n"));
    assert_int_equal(e.why, OK);
    assert_true(e.lost);
    e = SCAN(CH(";x\r\n"));
    assert_true(e.lost);
    e = SCAN(CH("3\r\nabcX0\r\n\r\n"));
    assert_true(e.lost);
    e = SCAN(CH("3\r\nabc\rX"));
    assert_true(e.lost);
    e = SCAN(CH("1ffffffffffffffff\r\n"));
    assert_true(e.lost);
    e = SCAN(CH("00000000000000000003\r\nabc\r\n0\r\n\r\n" GOOD_GET));
    assert_false(e.lost);
    assert_int_equal(e.why, OK);
#undef CH
}

/* The checks of one head come in kg_hygiene's order: syntax at the byte
 * where it fails, framing at the empty line. */
static void
test_syntax_comes_before_framing(void **state)
{
    (void)state;
    REFUSED("POST / HTTP/1.1\r\nContent-Length: +5\r\nX: a\0\r\n\r\n", KG_RAWGUARD_VALUE);
    REFUSED("POST / HTTP/1.1\r\nContent-Length: +5\r\nContent-Length: 5\r\n\r\n",
            KG_RAWGUARD_SEVERAL_CL);
}

static void
test_every_reason_has_a_status_and_message(void **state)
{
    (void)state;
    for (int r = KG_RAWGUARD_OK + 1; r < KG_RAWGUARD_NREASONS; r++) {
        assert_non_null(kg_rawguard_message(r));
        assert_true(kg_rawguard_status(r) == 400 || kg_rawguard_status(r) == 413);
    }
    assert_string_equal(kg_rawguard_message(KG_RAWGUARD_CL), "Malformed Content-Length");
    assert_string_equal(kg_rawguard_message(KG_RAWGUARD_FOLD), "Folded header line");
    assert_int_equal(kg_rawguard_status(KG_RAWGUARD_CL_TOO_LARGE), 413);
}

/* Every prefix of a valid pipelined stream: no verdict, and the safe
 * offset only moves forward. */
static void
test_every_prefix_of_a_clean_stream_is_undecided(void **state)
{
    static const char s[] = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                            "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                            "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "2\r\nab\r\n0\r\n\r\n";
    uint64_t last = 0;
    struct kg_rawscan sc;

    (void)state;
    kg_rawscan_init(&sc);
    for (size_t i = 0; i < sizeof(s) - 1; i++) {
        enum kg_rawguard_reason why = OK;

        assert_int_equal(kg_rawscan_feed(&sc, (const unsigned char *)s + i, 1, &why),
                         KG_RAWSCAN_MORE);
        assert_true(kg_rawscan_safe_end(&sc) >= last);
        last = kg_rawscan_safe_end(&sc);
        if (i + 1 == 28)
            assert_int_equal(last, 28); /* the first head, whole */
    }
    assert_int_equal(last, sizeof(s) - 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_requests_pass),
        cmocka_unit_test(test_the_request_line_is_checked),
        cmocka_unit_test(test_a_version_the_library_refuses_itself_stops_the_scan),
        cmocka_unit_test(test_line_ends_are_crlf_only),
        cmocka_unit_test(test_obs_fold_is_refused_after_crlf_or_bare_lf),
        cmocka_unit_test(test_header_names_and_values_are_checked),
        cmocka_unit_test(test_content_length_is_plain_digits),
        cmocka_unit_test(test_transfer_encoding_matches_the_library),
        cmocka_unit_test(test_bodies_are_framed_as_the_library_frames_them),
        cmocka_unit_test(test_bad_chunk_framing_stops_the_scan),
        cmocka_unit_test(test_syntax_comes_before_framing),
        cmocka_unit_test(test_every_reason_has_a_status_and_message),
        cmocka_unit_test(test_every_prefix_of_a_clean_stream_is_undecided),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
