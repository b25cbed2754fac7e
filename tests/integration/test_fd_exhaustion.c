/* integration/test_fd_exhaustion.c - CTest: integration_test_fd_exhaustion.
 *
 * Issue 11, defect 2: with its descriptors briefly used up (RLIMIT_NOFILE
 * lowered on the running daemon with prlimit(2), then more half-sent
 * requests than it allows, held and closed), keygate must count and log
 * the failed accepts, say so on /readyz (503 JSON with the reason), and
 * accept again on every listen socket as soon as descriptors come free.
 * libmicrohttpd 0.9.75 driven by keygate's loop used to stop accepting on
 * a listen socket for good after EMFILE. Three rounds: one wedge is enough
 * to fail. While out of descriptors the daemon's CPU time over one second
 * is measured (/proc/PID/stat): a busy loop (100 % of a core) fails it, the
 * bound is 25 %. Loopback only; every wait is bounded.
 */
#include <dirent.h>
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

#define HELD 200    /* partial requests per round: far more than the limit allows */
#define HEADROOM 24 /* descriptors the daemon gets above what it holds at rest */
#define ROUNDS 3
#define AFTER 24 /* fresh connections after each round: both listen sockets meet some */

static int
count_fds(pid_t pid)
{
    char path[64];
    DIR *dir;
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (dir == NULL)
        return -1;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

/* CPU time (user + system) the process used so far, in clock ticks. */
static long long
cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    FILE *f;
    size_t n;
    const char *p;
    unsigned long long ut = 0, st = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields 14 and 15, counted after the ")" that ends the command name. */
    p = strrchr(buf, ')');
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static int
connect_to(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One request on an open keep-alive connection; the whole answer into buf
 * (framed by Content-Length). Returns the status, or 0 on timeout/close. */
static int
request_on(int fd, const char *path, char *buf, size_t cap, long deadline_ms)
{
    char req[256];
    size_t len = 0;
    int64_t end = kt_mono_ms() + deadline_ms;
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);

    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return 0;
    buf[0] = '\0';
    while (kt_mono_ms() < end && len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char *body, *cl;
        ssize_t r;

        if (poll(&p, 1, 100) <= 0)
            continue;
        r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0)
            return 0;
        len += (size_t)r;
        buf[len] = '\0';
        body = strstr(buf, "\r\n\r\n");
        cl = strcasestr(buf, "Content-Length:");
        if (body != NULL && cl != NULL &&
            (size_t)(buf + len - (body + 4)) >= (size_t)strtoul(cl + 15, NULL, 10))
            return atoi(buf + 9);
    }
    return 0;
}

static void
test_descriptor_exhaustion_is_reported_and_recovered_from(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    struct kt_key key = {0};
    char cfg[256], buf[8192];
    int admin_fd, port, base;
    pid_t pid;

    (void)state;
    assert_non_null(up);
    snprintf(cfg, sizeof(cfg), "upstream %s\nworkers 2\n", kt_upstream_url(up));
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "fd", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    pid = kt_daemon_pid(d);
    port = kt_daemon_port(d);

    /* A monitoring connection opened while descriptors are plentiful. */
    admin_fd = connect_to(kt_daemon_admin_port(d));
    assert_true(admin_fd >= 0);
    assert_int_equal(request_on(admin_fd, "/readyz", buf, sizeof(buf), 5000), 200);

    base = count_fds(pid);
    assert_true(base > 0);
    {
        struct rlimit rl;

        assert_int_equal(prlimit(pid, RLIMIT_NOFILE, NULL, &rl), 0);
        rl.rlim_cur = (rlim_t)(base + HEADROOM);
        assert_int_equal(prlimit(pid, RLIMIT_NOFILE, &rl, NULL), 0);
    }

    for (int round = 0; round < ROUNDS; round++) {
        int held[HELD];
        int nheld = 0;
        int64_t end;
        int status = 0;

        for (int i = 0; i < HELD; i++) {
            static const char partial[] = "GET /x HTTP/1.1\r\nHost: t\r\nX-Half: ";

            held[nheld] = connect_to(port);
            if (held[nheld] < 0)
                break;
            if (send(held[nheld], partial, sizeof(partial) - 1, MSG_NOSIGNAL) < 0) {
                /* Sent or not, the connection still takes a place in the queue. */
            }
            nheld++;
        }
        assert_true(nheld > HEADROOM * 2);

        /* While the descriptors are gone: 503 with the reason. */
        end = kt_mono_ms() + 5000;
        while (kt_mono_ms() < end) {
            status = request_on(admin_fd, "/readyz", buf, sizeof(buf), 2000);
            if (status != 200)
                break;
            kt_sleep_ms(50);
        }
        if (status != 503)
            fail_msg("round %d: /readyz during descriptor exhaustion: %d, %s", round, status, buf);
        assert_non_null(strstr(buf, "\"status\":\"unavailable\""));
        assert_non_null(strstr(buf, "Too many open files"));
        assert_int_equal(request_on(admin_fd, "/metrics", buf, sizeof(buf), 2000), 200);
        assert_null(strstr(buf, "keygate_accept_errors_total{reason=\"emfile\"} 0\n"));
        assert_non_null(strstr(buf, "keygate_accept_errors_total{reason=\"emfile\"} "));

        /* Out of descriptors with clients still queued: no busy loop. A
         * listener polled level-triggered would spin a core (100 %). */
        {
            long long t0 = cpu_ticks(pid), t1;
            int64_t m0 = kt_mono_ms(), m1;
            double share;

            kt_sleep_ms(1000);
            t1 = cpu_ticks(pid);
            m1 = kt_mono_ms();
            assert_true(t0 >= 0 && t1 >= t0);
            share = (double)(t1 - t0) / (double)sysconf(_SC_CLK_TCK) / ((double)(m1 - m0) / 1000.0);
            fprintf(stderr, "round %d: %.1f %% of a core while out of descriptors\n", round,
                    share * 100.0);
            if (share > 0.25)
                fail_msg("round %d: keygate used %.0f %% of a core while out of descriptors", round,
                         share * 100.0);
        }
        for (int i = 0; i < nheld; i++)
            close(held[i]);

        /* Fresh clients are served again, on whichever listen socket the
         * kernel gives them (a wedged one would leave them hanging). */
        for (int i = 0; i < AFTER; i++) {
            struct kt_http_resp resp = {0};
            struct kt_http_req req = {.url = kt_daemon_url(d, "/after"), .timeout_ms = 5000};

            kt_http_do_key(&req, key.key, &resp);
            if (resp.status != 200)
                fail_msg("round %d, request %d after the descriptors came back: status %ld "
                         "(curl %d)",
                         round, i, resp.status, resp.curl_result);
            kt_http_resp_cleanup(&resp);
        }
        end = kt_mono_ms() + 3000;
        while (kt_mono_ms() < end &&
               (status = request_on(admin_fd, "/readyz", buf, sizeof(buf), 2000)) != 200)
            kt_sleep_ms(50);
        assert_int_equal(status, 200);
    }
    close(admin_fd);
    assert_true(kt_daemon_log_count(d, "public listener: cannot accept connections: Too many "
                                       "open files") >= 1);
    assert_true(kt_daemon_log_count(d, "public listener: accepting connections again") >= 1);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor_exhaustion_is_reported_and_recovered_from),
    };

    kt_http_global_init();
    {
        int rc = cmocka_run_group_tests(tests, NULL, NULL);

        kt_http_global_cleanup();
        return rc;
    }
}
