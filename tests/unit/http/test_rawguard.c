/* tests/unit/http/test_rawguard.c - the raw-bytes scanner of
 * src/http/rawguard.c through keygate/rawguard.h. Every case is fed whole,
 * one byte at a time and in pseudo-random pieces (fixed seeds): the verdict
 * and the offset of the refused head must not depend on how the stream was
 * cut, and the "safe" offset never passes the start of an unfinished head.
 * The guard itself is driven through this binary's own recv() (the
 * definition in rawguard.c) on a socketpair, as libmicrohttpd drives it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

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

/* ---- the guard, through recv() on a socketpair ---- */

struct pair {
    int lib; /* the library's end: watched */
    int client;
};

static void
pair_open(struct pair *p, bool watch)
{
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    p->lib = sv[0];
    p->client = sv[1];
    if (watch)
        kg_rawguard_watch_fd(p->lib, NULL, 65536);
}

static void
pair_close(struct pair *p)
{
    kg_rawguard_forget_fd(p->lib);
    close(p->lib);
    if (p->client >= 0)
        close(p->client);
}

static void
send_all(int fd, const void *p, size_t n)
{
    assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* Reads as the library would, in pieces of at most piece bytes, until
 * EAGAIN; appends to out. Returns the last recv() result (-1 with EAGAIN
 * expected). */
static ssize_t
read_until_again(int fd, size_t piece, char *out, size_t cap, size_t *len)
{
    for (;;) {
        ssize_t n = recv(fd, out + *len, piece < cap - *len ? piece : cap - *len, 0);

        if (n <= 0)
            return n;
        *len += (size_t)n;
    }
}

/* GOOD_GET, then a refused head, then more bytes: the library gets
 * GOOD_GET, the synthetic request, then EAGAIN, also once more bytes come
 * and after the client closes (never end-of-file). */
static void
test_the_guard_gives_the_library_the_good_request_then_the_synthetic_one(void **state)
{
    static const char bad[] = "POST /v1/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: rid-1\r\n"
                              "Content-Length: +5\r\n\r\nabcde";
    static const size_t pieces[] = {1, 3, 7, 64, 4096};
    char want[512], got[1024];

    (void)state;
    for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
        struct pair p;
        size_t len = 0;
        const char *tok;

        pair_open(&p, true);
        send_all(p.client, GOOD_GET, strlen(GOOD_GET));
        send_all(p.client, bad, sizeof(bad) - 1);
        assert_int_equal(read_until_again(p.lib, pieces[k], got, sizeof(got), &len), -1);
        assert_int_equal(errno, EAGAIN);
        got[len] = '\0';
        tok = strstr(got, "X-Keygate-Reject: ");
        assert_non_null(tok);
        tok += 18;
        snprintf(want, sizeof(want),
                 "%sKGREJECT /content-length HTTP/1.1\r\nHost: keygate.invalid\r\n"
                 "X-Keygate-Reject: %.64s\r\nX-Request-Id: rid-1\r\n\r\n",
                 GOOD_GET, tok);
        assert_string_equal(got, want);
        for (size_t i = 0; i < 64; i++)
            assert_non_null(strchr("0123456789abcdef", tok[i]));

        send_all(p.client, GOOD_GET, strlen(GOOD_GET));
        assert_int_equal(recv(p.lib, got, sizeof(got), 0), -1);
        assert_int_equal(errno, EAGAIN);
        close(p.client);
        p.client = -1;
        assert_int_equal(recv(p.lib, got, sizeof(got), 0), -1);
        assert_int_equal(errno, EAGAIN);
        pair_close(&p);
    }
}

/* An unfinished head is held back (EAGAIN) until its empty line arrives,
 * then given whole; a body passes at once. */
static void
test_the_guard_holds_a_head_until_it_is_complete(void **state)
{
    static const char req[] = "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
                              "0123456789" GOOD_GET;
    const size_t head = sizeof(req) - 1 - 10 - strlen(GOOD_GET);
    char got[1024];
    size_t len = 0;
    struct pair p;

    (void)state;
    pair_open(&p, true);
    for (size_t i = 0; i < sizeof(req) - 1; i++) {
        size_t before = len;

        send_all(p.client, req + i, 1);
        assert_int_equal(read_until_again(p.lib, 4096, got, sizeof(got), &len), -1);
        assert_int_equal(errno, EAGAIN);
        if (i + 1 < head) /* nothing of the first head before its end */
            assert_int_equal(len, 0);
        else if (i + 1 == head)
            assert_int_equal(len, head);
        else if (i + 1 <= head + 10) /* body bytes: one by one */
            assert_int_equal(len, before + 1);
    }
    assert_int_equal(len, sizeof(req) - 1);
    assert_memory_equal(got, req, len);
    pair_close(&p);
}

/* A descriptor nobody watches, or one forgotten, reads exactly what was sent. */
static void
test_unwatched_descriptors_pass_straight_through(void **state)
{
    static const char bad[] = "G\0T / HTTP/1.1\r\nContent-Length: +5\r\n\r\n";
    char got[128];
    struct pair p;

    (void)state;
    pair_open(&p, false);
    send_all(p.client, bad, sizeof(bad) - 1);
    assert_int_equal(recv(p.lib, got, sizeof(got), 0), (ssize_t)(sizeof(bad) - 1));
    assert_memory_equal(got, bad, sizeof(bad) - 1);
    assert_int_equal(recv(p.lib, got, sizeof(got), 0), -1);
    assert_int_equal(errno, EAGAIN);
    pair_close(&p);

    pair_open(&p, true);
    kg_rawguard_forget_fd(p.lib);
    send_all(p.client, bad, sizeof(bad) - 1);
    assert_int_equal(recv(p.lib, got, sizeof(got), 0), (ssize_t)(sizeof(bad) - 1));
    pair_close(&p);
}

/* A head the library refuses by size is passed through, not held for ever. */
static void
test_a_head_larger_than_the_pool_is_passed_through(void **state)
{
    static char big[12000];
    char got[16384];
    size_t len = 0;
    struct pair p;
    int n;

    (void)state;
    pair_open(&p, true); /* hold_max 65536 in pair_open: use a smaller one */
    kg_rawguard_watch_fd(p.lib, NULL, 4096);
    n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'a', sizeof(big) - (size_t)n);
    send_all(p.client, big, sizeof(big));
    read_until_again(p.lib, 1024, got, sizeof(got), &len);
    assert_int_equal(len, sizeof(big));
    assert_memory_equal(got, big, len);
    pair_close(&p);
}

static int
guard_setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
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
        cmocka_unit_test(test_the_guard_gives_the_library_the_good_request_then_the_synthetic_one),
        cmocka_unit_test(test_the_guard_holds_a_head_until_it_is_complete),
        cmocka_unit_test(test_unwatched_descriptors_pass_straight_through),
        cmocka_unit_test(test_a_head_larger_than_the_pool_is_passed_through),
    };

    return cmocka_run_group_tests(tests, guard_setup, NULL);
}
