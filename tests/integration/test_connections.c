/* integration/test_connections.c - CTest: integration_test_connections.
 *
 * Issue 11, defect 5 and the upstream pool: max_connections_per_ip holds
 * across every loop while other clients go on being served;
 * client_header_timeout cuts a client that trickles its header block; and
 * after a burst, the idle upstream connections a loop keeps and the
 * upstream connections it opens at once stay within upstream_keepalive and
 * upstream_max_connections. Defect 4: a client that stalls mid-upload gets
 * the 504 at upstream_timeout, or the upstream's early answer, and then the
 * connection is closed. Raw sockets against the real daemon; loopback
 * only (127.0.0.2 is a second client address); every wait is bounded.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

static int
connect_from(const char *src, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in me = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    inet_pton(AF_INET, src, &me.sin_addr);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&me, sizeof(me)) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Whether the server closed fd (EOF or reset) within ms. */
static bool
closed_within(int fd, long ms)
{
    int64_t end = kt_mono_ms() + ms;
    char buf[4096];

    while (kt_mono_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t r;

        if (poll(&p, 1, 20) <= 0)
            continue;
        r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0)
            return true;
    }
    return false;
}

/* A GET with key from src: the status of the answer, 0 for none within 5 s. */
static int
get_from(const char *src, int port, const char *key)
{
    char req[512], buf[4096];
    size_t len = 0;
    int64_t end = kt_mono_ms() + 5000;
    int fd = connect_from(src, port);
    int n = snprintf(req, sizeof(req),
                     "GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\nConnection: "
                     "close\r\n\r\n",
                     key);
    int status = 0;

    if (fd < 0)
        return 0;
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
        while (kt_mono_ms() < end && len + 1 < sizeof(buf)) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            ssize_t r;

            if (poll(&p, 1, 50) <= 0)
                continue;
            r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
            if (r <= 0)
                break;
            len += (size_t)r;
            buf[len] = '\0';
            if (len >= 12 && strncmp(buf, "HTTP/1.1 ", 9) == 0) {
                status = atoi(buf + 9);
                break;
            }
        }
    }
    close(fd);
    return status;
}

static char *
metrics_text(struct kt_daemon *d)
{
    struct kt_http_resp resp = {0};
    char *text = NULL;

    if (kt_http_get(kt_daemon_admin_url(d, "/metrics"), NULL, &resp) && resp.status == 200)
        text = strdup(resp.body);
    kt_http_resp_cleanup(&resp);
    return text;
}

#define CAP 20
#define FLOOD 60

static void
test_one_ip_is_capped_on_every_loop_and_others_are_served(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    struct kt_key key = {0};
    char cfg[256];
    int fds[FLOOD];
    int nclosed = 0, nopen = 0;
    char *m;

    (void)state;
    assert_non_null(up);
    snprintf(cfg, sizeof(cfg), "upstream %s\nworkers 2\nmax_connections_per_ip %d\n",
             kt_upstream_url(up), CAP);
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "ip", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));

    /* 60 idle connections from one IP, spread by the kernel over both loops. */
    for (int i = 0; i < FLOOD; i++) {
        fds[i] = connect_from("127.0.0.1", kt_daemon_port(d));
        assert_true(fds[i] >= 0);
    }
    /* Meanwhile another client is answered at once. */
    assert_int_equal(get_from("127.0.0.2", kt_daemon_port(d), key.key), 200);
    for (int i = 0; i < FLOOD; i++) {
        if (closed_within(fds[i], i == 0 ? 1000 : 50)) {
            nclosed++;
            close(fds[i]);
            fds[i] = -1;
        } else {
            nopen++;
        }
    }
    if (nopen != CAP || nclosed != FLOOD - CAP)
        fail_msg("one IP kept %d connections (cap %d), %d closed", nopen, CAP, nclosed);
    /* The flooding IP itself is refused while it holds its share... */
    assert_int_equal(get_from("127.0.0.1", kt_daemon_port(d), key.key), 0);
    m = metrics_text(d);
    assert_non_null(m);
    assert_non_null(strstr(m, "keygate_connections_refused_total 41\n"));
    free(m);
    /* ...and served once it lets some go. */
    for (int i = 0; i < FLOOD; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    {
        int64_t end = kt_mono_ms() + 3000;
        int status = 0;

        while (kt_mono_ms() < end &&
               (status = get_from("127.0.0.1", kt_daemon_port(d), key.key)) != 200)
            kt_sleep_ms(50);
        assert_int_equal(status, 200);
    }
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

static void
test_a_trickled_header_block_is_cut_at_client_header_timeout(void **state)
{
    struct kt_daemon *d = kt_daemon_new("client_header_timeout 2s\nclient_timeout 30s\n");
    static const char head[] = "GET /x HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    int64_t t0, cut = -1;
    int fd;
    char *m;

    (void)state;
    assert_non_null(d);
    assert_true(kt_daemon_start(d));
    fd = connect_from("127.0.0.1", kt_daemon_port(d));
    assert_true(fd >= 0);
    t0 = kt_mono_ms();
    assert_int_equal(send(fd, head, sizeof(head) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(head) - 1));
    /* A byte every 200 ms: never idle for client_timeout, never done. */
    while (kt_mono_ms() - t0 < 6000) {
        if (send(fd, "a", 1, MSG_NOSIGNAL) != 1 || closed_within(fd, 200)) {
            cut = kt_mono_ms() - t0;
            break;
        }
    }
    close(fd);
    if (cut < 0)
        fail_msg("a client trickling its header block was still connected after 6 s");
    if (cut < 1800 || cut > 3500)
        fail_msg("cut after %lld ms, want about 2000 (client_header_timeout 2s)", (long long)cut);
    m = metrics_text(d);
    assert_non_null(m);
    assert_non_null(strstr(m, "keygate_header_timeouts_total 1\n"));
    free(m);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
}

/* Sockets of the daemon's connected to the upstream port: lines of
 * /proc/net/tcp whose remote port is the upstream's (the stub's own
 * sockets have it as their local port). */
static int
upstream_sockets(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    int n = 0;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned lport, rport, st;

        if (sscanf(line, " %*d: %*x:%x %*x:%x %x", &lport, &rport, &st) == 3 &&
            rport == (unsigned)port && st == 0x01 /* ESTABLISHED */)
            n++;
    }
    fclose(f);
    return n;
}

struct sampler {
    struct kt_upstream *up;
    _Atomic bool stop;
    size_t max_held;
};

static void *
sample_held(void *arg)
{
    struct sampler *s = arg;

    while (!s->stop) {
        size_t h = kt_upstream_held_slow(s->up);

        if (h > s->max_held)
            s->max_held = h;
        kt_sleep_ms(5);
    }
    return NULL;
}

#define BURST 40

static void
test_upstream_connections_are_capped_per_loop(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    struct kt_key key = {0};
    struct kt_http_req reqs[BURST];
    struct kt_http_resp resps[BURST];
    const char *headers[2];
    char cfg[256], auth[256];
    struct sampler s = {0};
    pthread_t th;
    int idle = -1;

    (void)state;
    assert_non_null(up);
    kt_upstream_set_slow_ms(up, 300);
    snprintf(cfg, sizeof(cfg),
             "upstream %s\nworkers 1\nupstream_keepalive 4\nupstream_max_connections 8\n",
             kt_upstream_url(up));
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "pool", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key.key);
    headers[0] = auth;
    headers[1] = NULL;
    memset(resps, 0, sizeof(resps));
    for (int i = 0; i < BURST; i++)
        reqs[i] = (struct kt_http_req){
            .url = kt_daemon_url(d, "/slow"), .headers = headers, .timeout_ms = 20000};
    s.up = up;
    assert_int_equal(pthread_create(&th, NULL, sample_held, &s), 0);
    kt_http_do_many(reqs, resps, BURST);
    s.stop = true;
    pthread_join(th, NULL);
    for (int i = 0; i < BURST; i++) {
        if (resps[i].status != 200)
            fail_msg("request %d of the burst: %ld", i, resps[i].status);
        kt_http_resp_cleanup(&resps[i]);
    }
    /* Requests past the cap waited in curl's queue. */
    if (s.max_held > 8 || s.max_held < 2)
        fail_msg("the upstream held %zu requests at once (upstream_max_connections 8)", s.max_held);
    {
        int64_t end = kt_mono_ms() + 2000;

        while (kt_mono_ms() < end && (idle = upstream_sockets(kt_upstream_port(up))) > 4)
            kt_sleep_ms(50);
    }
    if (idle < 0 || idle > 4)
        fail_msg("%d connections to the upstream stayed open (upstream_keepalive 4)", idle);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* Sends head (headers and the first bytes of a longer body) and then
 * nothing: returns what came back and whether the server closed, within
 * deadline_ms. *answer_ms: when the first byte came, from the send. */
static char *
stall_upload(int port, const char *head, long deadline_ms, bool *closed, long *answer_ms)
{
    int fd = connect_from("127.0.0.1", port);
    size_t len = 0, cap = 16384;
    char *buf = calloc(1, cap);
    int64_t t0 = kt_mono_ms(), end = t0 + deadline_ms;

    *closed = false;
    *answer_ms = -1;
    assert_true(fd >= 0);
    assert_non_null(buf);
    assert_int_equal(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
    while (kt_mono_ms() < end && len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t r;

        if (poll(&p, 1, 20) <= 0)
            continue;
        r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0) {
            *closed = true;
            break;
        }
        if (*answer_ms < 0)
            *answer_ms = (long)(kt_mono_ms() - t0);
        len += (size_t)r;
    }
    close(fd);
    return buf;
}

static const char stalled_post[] =
    "POST /hang HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
    "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n0123456789";

static void
test_a_stalled_upload_gets_the_upstream_timeout(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    struct kt_key key = {0};
    char cfg[256], head[512];
    bool closed;
    long at;
    char *got;

    (void)state;
    assert_non_null(up);
    snprintf(cfg, sizeof(cfg), "upstream %s\nupstream_timeout 2s\n", kt_upstream_url(up));
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "stall", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    snprintf(head, sizeof(head), stalled_post, key.key);
    got = stall_upload(kt_daemon_port(d), head, 6000, &closed, &at);
    if (strncmp(got, "HTTP/1.1 504 ", 13) != 0 || strstr(got, "application/json") == NULL ||
        strstr(got, "Upstream timed out") == NULL)
        fail_msg("a client stalled mid-upload got, after %ld ms: [%s]", at, got);
    if (at < 1800 || at > 4000)
        fail_msg("504 after %ld ms, want about 2000 (upstream_timeout 2s)", at);
    if (!closed)
        fail_msg("the connection stayed open after the 504");
    free(got);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* An upstream that answers 413 as soon as it has the headers and closes. */
struct early {
    int lfd, port;
};

static void *
early_upstream(void *arg)
{
    struct early *e = arg;
    static const char answer[] = "HTTP/1.1 413 Payload Too Large\r\nContent-Type: "
                                 "application/json\r\nContent-Length: 19\r\nConnection: "
                                 "close\r\n\r\n{\"error\":\"too big\"}";
    int fd = accept(e->lfd, NULL, NULL);
    char buf[4096];
    size_t len = 0;

    if (fd < 0)
        return NULL;
    while (len + 1 < sizeof(buf)) {
        ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);

        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        /* The 10 bytes of body the client sent too: then the upstream's close
         * is a clean one and only its answer can end the exchange. */
        if (strstr(buf, "\r\n\r\n") != NULL && strstr(buf, "\r\n\r\n") + 14 <= buf + len)
            break;
    }
    if (send(fd, answer, sizeof(answer) - 1, MSG_NOSIGNAL) < 0) {
        /* The test fails on what keygate answers. */
    }
    close(fd);
    return NULL;
}

static void
test_an_early_upstream_answer_reaches_a_stalled_upload(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sa);
    struct early e;
    struct kt_daemon *d;
    struct kt_key key = {0};
    char cfg[256], head[512];
    pthread_t th;
    bool closed;
    long at;
    char *got;

    (void)state;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    e.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(e.lfd >= 0);
    assert_int_equal(bind(e.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(e.lfd, 4), 0);
    assert_int_equal(getsockname(e.lfd, (struct sockaddr *)&sa, &slen), 0);
    e.port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&th, NULL, early_upstream, &e), 0);
    snprintf(cfg, sizeof(cfg), "upstream http://127.0.0.1:%d\nupstream_timeout 20s\n", e.port);
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "early", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    snprintf(head, sizeof(head), stalled_post, key.key);
    got = stall_upload(kt_daemon_port(d), head, 5000, &closed, &at);
    pthread_join(th, NULL);
    close(e.lfd);
    if (strncmp(got, "HTTP/1.1 413 ", 13) != 0 || strstr(got, "{\"error\":\"too big\"}") == NULL)
        fail_msg("a client stalled mid-upload got, after %ld ms: [%s]", at, got);
    if (at > 2000)
        fail_msg("the upstream's 413 took %ld ms to arrive", at);
    if (!closed)
        fail_msg("the connection stayed open after the early answer");
    free(got);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_ip_is_capped_on_every_loop_and_others_are_served),
        cmocka_unit_test(test_a_trickled_header_block_is_cut_at_client_header_timeout),
        cmocka_unit_test(test_upstream_connections_are_capped_per_loop),
        cmocka_unit_test(test_a_stalled_upload_gets_the_upstream_timeout),
        cmocka_unit_test(test_an_early_upstream_answer_reaches_a_stalled_upload),
    };

    kt_http_global_init();
    {
        int rc = cmocka_run_group_tests(tests, NULL, NULL);

        kt_http_global_cleanup();
        return rc;
    }
}
