/* integration/test_connection_pressure.c - CTest: integration_test_connection_pressure.
 *
 * Issue 16, item 4: 10,000 idle connections (from 40 loopback addresses,
 * 250 each, under the default max_connections_per_ip of 256) plus
 * slowloris clients: 20 trickling a header block a byte a second, 20
 * trickling a body a byte a second, 10 sending a head and part of a body
 * and then nothing. Meanwhile a client at a modest load (one request at a
 * time, about 40 a second, two windows of 200) must get its answers
 * with a p99 under 100 ms (the better window: the machine is shared);
 * the header tricklers must be cut at client_header_timeout, the stalled
 * bodies at client_body_timeout, the body tricklers (a byte a second is
 * progress) at upstream_timeout with the 504; idle connections at
 * client_header_timeout too. The daemon's RSS with everything open is
 * measured and bounded (see RSS_BOUND_KIB). Loopback only; bounded.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0 /* the daemon is built like this test (same build directory) */
#endif

#define IDLE 10000
#define PER_ADDR 250
#define HEAD_TRICKLERS 20
#define BODY_TRICKLERS 20
#define STALLED 10
#define SAMPLES 200 /* per window; two windows, the better p99 counts (a shared machine) */
#define HEADER_TIMEOUT_S 20
#define BODY_TIMEOUT_S 4
#define UPSTREAM_TIMEOUT_S 6
/* What 10,000 idle connections may cost the daemon: 16 KiB each (the
 * kernel's socket buffers are not in RSS; libmicrohttpd's per-connection
 * pool is allocated but only touched pages count). */
#define RSS_BOUND_KIB (IDLE * 16L)

static int
connect_from(int addr_octet, int port)
{
    struct sockaddr_in src = {.sin_family = AF_INET};
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)addr_octet);
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static long
rss_kib(pid_t pid)
{
    char path[64], line[256];
    FILE *f;
    long kib = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* Whether the server closed fd (EOF or reset); reads and drops what came. */
static bool
closed_by_peer(int fd, char *got, size_t cap)
{
    char buf[4096];
    ssize_t n;

    for (;;) {
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            if (got != NULL && got[0] == '\0')
                snprintf(got, cap, "%.*s", (int)(n < 200 ? n : 200), buf);
            continue;
        }
        return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

struct slow {
    int fd;
    const char *rest; /* what is still to trickle, a byte per second */
    int64_t opened_ms, closed_ms;
    char got[256];
};

static void
test_ten_thousand_idle_and_slowloris_clients_leave_others_served(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    static int idle[IDLE];
    static struct slow slow[HEAD_TRICKLERS + BODY_TRICKLERS + STALLED];
    static double lat[SAMPLES];
    double p50[2], p99[2], worst[2], best;
    struct kt_daemon *d;
    struct kt_key key = {0};
    char cfg[512], body_head[512];
    int port, nidle = 0, nslow = 0;
    long rss0, rss1;
    pid_t pid;
    struct rlimit rl;

    (void)state;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < IDLE + 1000) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < IDLE + 1000)
            fail_msg("ulimit -n is %ld: the test needs %d descriptors", (long)rl.rlim_cur,
                     IDLE + 1000);
    }
    assert_non_null(up);
    snprintf(cfg, sizeof(cfg),
             "upstream %s\nclient_header_timeout %ds\nclient_body_timeout %ds\n"
             "upstream_timeout %ds\n",
             kt_upstream_url(up), HEADER_TIMEOUT_S, BODY_TIMEOUT_S, UPSTREAM_TIMEOUT_S);
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "pressure", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    port = kt_daemon_port(d);
    pid = kt_daemon_pid(d);
    rss0 = rss_kib(pid);

    for (int i = 0; i < IDLE; i++) {
        int fd = connect_from(2 + i / PER_ADDR, port);

        if (fd < 0)
            fail_msg("idle connection %d: %s", i, strerror(errno));
        idle[nidle++] = fd;
    }
    snprintf(body_head, sizeof(body_head),
             "POST /upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
             "Content-Length: 1000\r\n\r\n",
             key.key);
    kt_http_note_sent(body_head, strlen(body_head));
    for (int i = 0; i < HEAD_TRICKLERS + BODY_TRICKLERS + STALLED; i++) {
        struct slow *s = &slow[nslow];

        memset(s, 0, sizeof(*s));
        s->fd = connect_from(100 + i, port);
        assert_true(s->fd >= 0);
        s->opened_ms = kt_mono_ms();
        if (i < HEAD_TRICKLERS) {
            s->rest = "GET /slow HTTP/1.1\r\nHost: t\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        } else {
            /* The head at once, then the body: a byte a second, or nothing. */
            assert_true(send(s->fd, body_head, strlen(body_head), MSG_NOSIGNAL) > 0);
            assert_true(send(s->fd, "x", 1, MSG_NOSIGNAL) == 1);
            s->rest = i < HEAD_TRICKLERS + BODY_TRICKLERS
                          ? "0123456789012345678901234567890123456789012345678901234567890123"
                          : "";
        }
        nslow++;
    }
    kt_sleep_ms(300);
    rss1 = rss_kib(pid);

    /* The modest load, while everything above is open; the tricklers get a
     * byte each second in between. Two windows: on a machine shared with
     * other builds one window can meet a neighbour's burst; the better p99
     * of two, both under the whole pressure, is what keygate can do. */
    for (int window = 0; window < 2; window++) {
        int64_t next_drip = kt_mono_ms();
        int n = 0;

        while (n < SAMPLES) {
            struct kt_http_resp r = {0};

            for (int i = 0; i < nslow; i++)
                if (slow[i].closed_ms == 0 &&
                    closed_by_peer(slow[i].fd, slow[i].got, sizeof(slow[i].got)))
                    slow[i].closed_ms = kt_mono_ms();
            if (kt_mono_ms() >= next_drip) {
                for (int i = 0; i < nslow; i++)
                    if (slow[i].closed_ms == 0 && slow[i].rest[0] != '\0' &&
                        send(slow[i].fd, slow[i].rest++, 1, MSG_NOSIGNAL) != 1)
                        slow[i].closed_ms = kt_mono_ms();
                next_drip += 1000;
            }
            kt_http_get_key(kt_daemon_url(d, "/fast"), key.key, NULL, &r);
            if (r.status != 200)
                fail_msg("request %d under pressure: %ld (curl %d)", n, r.status, r.curl_result);
            lat[n++] = r.seconds;
            kt_http_resp_cleanup(&r);
            kt_sleep_ms(20);
        }
        qsort(lat, SAMPLES, sizeof(lat[0]), cmp_double);
        p50[window] = lat[SAMPLES / 2];
        p99[window] = lat[SAMPLES * 99 / 100];
        worst[window] = lat[SAMPLES - 1];
    }

    /* Keep trickling until every slow client is cut, at most 25 s. */
    {
        int64_t end = kt_mono_ms() + 25000;
        int64_t next_drip = kt_mono_ms();
        int open = nslow;

        while (open > 0 && kt_mono_ms() < end) {
            open = 0;
            for (int i = 0; i < nslow; i++) {
                struct slow *s = &slow[i];

                if (s->closed_ms != 0)
                    continue;
                if (closed_by_peer(s->fd, s->got, sizeof(s->got))) {
                    s->closed_ms = kt_mono_ms();
                    continue;
                }
                open++;
                if (kt_mono_ms() >= next_drip && s->rest[0] != '\0' &&
                    send(s->fd, s->rest++, 1, MSG_NOSIGNAL) != 1)
                    s->closed_ms = kt_mono_ms();
            }
            if (kt_mono_ms() >= next_drip)
                next_drip += 1000;
            kt_sleep_ms(50);
        }
    }
    best = p99[0] < p99[1] ? p99[0] : p99[1];
    fprintf(stderr,
            "pressure: %d idle + %d slow connections; latency over 2 x %d requests: p50 %.1f / "
            "%.1f ms, p99 %.1f / %.1f ms, max %.1f / %.1f ms; VmRSS %ld KiB idle -> %ld KiB "
            "with them all (%.1f KiB per connection)\n",
            nidle, nslow, SAMPLES, p50[0] * 1000, p50[1] * 1000, p99[0] * 1000, p99[1] * 1000,
            worst[0] * 1000, worst[1] * 1000, rss0, rss1,
            (double)(rss1 - rss0) / (double)(nidle + nslow));
    for (int i = 0; i < nslow; i++) {
        const struct slow *s = &slow[i];
        double cut_s = (double)(s->closed_ms - s->opened_ms) / 1000.0;
        double want = i < HEAD_TRICKLERS                    ? HEADER_TIMEOUT_S
                      : i < HEAD_TRICKLERS + BODY_TRICKLERS ? UPSTREAM_TIMEOUT_S
                                                            : BODY_TIMEOUT_S;

        if (s->closed_ms == 0)
            fail_msg("slow client %d still connected after 25 s", i);
        if (cut_s < want - 0.5 || cut_s > want + 4.0)
            fail_msg("slow client %d cut after %.1f s, want about %.0f s", i, cut_s, want);
        if (i >= HEAD_TRICKLERS && i < HEAD_TRICKLERS + BODY_TRICKLERS &&
            strncmp(s->got, "HTTP/1.1 504", 12) != 0)
            fail_msg("body trickler %d got \"%s\", want the 504", i, s->got);
    }
    /* The latency bound is for the real build: under AddressSanitizer every
     * request costs several times as much CPU. */
    if (!UNDER_ASAN && best >= 0.100)
        fail_msg("p99 %.1f ms under pressure, want < 100 ms", best * 1000);
    /* Under AddressSanitizer every allocation carries redzones and shadow:
     * the bound is for the real build (LeakSanitizer checks the exit). */
    if (!UNDER_ASAN && rss1 - rss0 > RSS_BOUND_KIB)
        fail_msg("VmRSS grew %ld KiB with %d connections open (bound %ld KiB)", rss1 - rss0,
                 nidle + nslow, RSS_BOUND_KIB);
    /* Idle connections go at client_header_timeout too (counted from accept). */
    {
        int cut = 0;

        for (int i = 0; i < nidle; i++) {
            if (closed_by_peer(idle[i], NULL, 0))
                cut++;
            close(idle[i]);
        }
        if (cut != nidle)
            fail_msg("%d of %d idle connections still open after client_header_timeout",
                     nidle - cut, nidle);
    }
    for (int i = 0; i < nslow; i++)
        close(slow[i].fd);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
    kt_key_cleanup(&key);
    kt_upstream_stop(up);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ten_thousand_idle_and_slowloris_clients_leave_others_served),
    };
    int rc;

    kt_http_global_init();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    kt_http_global_cleanup();
    return rc;
}
