/* integration/test_desync.c - CTest: integration_test_desync.
 *
 * Issue 11, defect 1: libmicrohttpd 0.9.75 frames a body as chunked only
 * when Transfer-Encoding is exactly "chunked" (any letter case); with
 * "chunked " it reads the body until the connection closes. keygate used
 * to trim the value and let the request through, so on one connection
 *
 *   POST /v1/items  (a reader key, Transfer-Encoding: "chunked ", chunks)
 *   GET /admin/secret  (an admin key)
 *
 * reached the upstream as ONE POST under the reader key whose body held the
 * second request, admin key included. Behind a front proxy that reuses
 * connections, that captures other clients' requests and keys.
 *
 * The upstream here is a raw recorder: it keeps every byte it receives, so
 * the test can say the admin key never arrived, in any form. A control
 * request first shows that the recorder does see request bodies.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers/daemon.h"
#include "helpers/http.h"

#define REC_MAX (1024 * 1024)
#define CONN_DEADLINE_MS 3000L

/* ---- the recording upstream ---- */

struct recorder {
    int fd;
    int port;
    pthread_t thread;
    _Atomic bool stop;
    pthread_mutex_t mu;
    char *bytes; /* everything received, on every connection */
    size_t len;
    size_t requests; /* request heads seen */
};

static bool
has(const char *hay, size_t hlen, const char *needle)
{
    size_t n = strlen(needle);

    for (size_t i = 0; i + n <= hlen; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

/* Whether buf (one connection's bytes so far) holds a whole request: the
 * head, then Content-Length bytes, or chunks up to the last one. */
static bool
request_complete(const char *buf, size_t len)
{
    const char *end = NULL, *cl;
    size_t head;

    for (size_t i = 0; i + 4 <= len && end == NULL; i++)
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
            end = buf + i + 4;
    if (end == NULL)
        return false;
    head = (size_t)(end - buf);
    for (cl = buf; cl < end; cl++) {
        if ((size_t)(end - cl) > 17 && strncasecmp(cl, "\nContent-Length:", 16) == 0)
            return len - head >= strtoul(cl + 16, NULL, 10);
        if ((size_t)(end - cl) > 27 && strncasecmp(cl, "\nTransfer-Encoding: chunked", 27) == 0)
            return has(end, len - head, "0\r\n\r\n");
    }
    return true;
}

static void
serve_one(struct recorder *r, int c)
{
    static const char answer[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\nok";
    char *buf = malloc(REC_MAX);
    size_t len = 0;
    bool answered = false;
    int64_t deadline = kt_mono_ms() + CONN_DEADLINE_MS;

    while (buf != NULL && kt_mono_ms() < deadline && !atomic_load(&r->stop)) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 50) <= 0)
            continue;
        n = recv(c, buf + len, REC_MAX - len, 0);
        if (n <= 0)
            break;
        pthread_mutex_lock(&r->mu);
        if (r->len + (size_t)n <= REC_MAX) {
            memcpy(r->bytes + r->len, buf + len, (size_t)n);
            r->len += (size_t)n;
        }
        pthread_mutex_unlock(&r->mu);
        len += (size_t)n;
        if (!answered && request_complete(buf, len)) {
            answered = true;
            pthread_mutex_lock(&r->mu);
            r->requests++;
            pthread_mutex_unlock(&r->mu);
            if (send(c, answer, sizeof(answer) - 1, MSG_NOSIGNAL) < 0)
                break;
        }
        if (len == REC_MAX)
            break;
    }
    free(buf);
    close(c);
}

static void *
recorder_main(void *arg)
{
    struct recorder *r = arg;

    while (!atomic_load(&r->stop)) {
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        int c;

        if (poll(&p, 1, 50) <= 0)
            continue;
        c = accept(r->fd, NULL, NULL);
        if (c >= 0)
            serve_one(r, c);
    }
    return NULL;
}

static struct recorder *
recorder_start(void)
{
    struct recorder *r = calloc(1, sizeof(*r));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);

    if (r == NULL)
        return NULL;
    r->bytes = malloc(REC_MAX);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    pthread_mutex_init(&r->mu, NULL);
    if (r->bytes == NULL || r->fd < 0 || bind(r->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(r->fd, 16) != 0 || getsockname(r->fd, (struct sockaddr *)&a, &alen) != 0 ||
        pthread_create(&r->thread, NULL, recorder_main, r) != 0) {
        if (r->fd >= 0)
            close(r->fd);
        pthread_mutex_destroy(&r->mu);
        free(r->bytes);
        free(r);
        return NULL;
    }
    r->port = ntohs(a.sin_port);
    return r;
}

static void
recorder_stop(struct recorder *r)
{
    if (r == NULL)
        return;
    atomic_store(&r->stop, true);
    pthread_join(r->thread, NULL);
    close(r->fd);
    pthread_mutex_destroy(&r->mu);
    free(r->bytes);
    free(r);
}

static bool
recorder_saw(struct recorder *r, const char *needle)
{
    bool saw;

    pthread_mutex_lock(&r->mu);
    saw = has(r->bytes, r->len, needle);
    pthread_mutex_unlock(&r->mu);
    return saw;
}

static size_t
recorder_requests(struct recorder *r)
{
    size_t n;

    pthread_mutex_lock(&r->mu);
    n = r->requests;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---- the world ---- */

struct world {
    struct recorder *up;
    struct kt_daemon *gw;
    struct kt_key reader, admin;
};

static struct world W;
static struct kt_raw_result CR;
static char *CB;

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.gw);
    recorder_stop(W.up);
    kt_key_cleanup(&W.reader);
    kt_key_cleanup(&W.admin);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

static int
setup(void **state)
{
    char cfg[512];

    kt_http_global_init();
    W.up = recorder_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg),
             "upstream http://127.0.0.1:%d\n"
             "route POST /v1/items* write:items\n"
             "route GET /admin* admin:all\n",
             W.up->port);
    W.gw = kt_daemon_new(cfg);
    if (W.gw == NULL || !kt_daemon_create_key(W.gw, "reader", "write:items", NULL, &W.reader) ||
        !kt_daemon_create_key(W.gw, "admin", "admin:all", NULL, &W.admin) || !kt_daemon_start(W.gw))
        goto fail;
    return 0;

fail:
    teardown(state);
    return -1;
}

static int
free_slots(void **state)
{
    (void)state;
    kt_raw_result_cleanup(&CR);
    free(CB);
    CB = NULL;
    return 0;
}

/* Sends the two requests on one connection; te is the first one's
 * Transfer-Encoding value, exactly. */
static void
send_pair(int port, const char *te)
{
    size_t cap = 2048, n;

    CB = malloc(cap);
    assert_non_null(CB);
    n = (size_t)snprintf(CB, cap,
                         "POST /v1/items HTTP/1.1\r\nHost: gateway.test\r\n"
                         "Authorization: Bearer %s\r\nTransfer-Encoding: %s\r\n\r\n"
                         "5\r\nhello\r\n0\r\n\r\n"
                         "GET /admin/secret HTTP/1.1\r\nHost: gateway.test\r\n"
                         "Authorization: Bearer %s\r\n\r\n",
                         W.reader.key, te, W.admin.key);
    assert_true(n < cap);
    kt_raw_result_cleanup(&CR);
    assert_true(kt_raw_exchange(port, CB, n, 1, 1500, 3000, &CR));
}

static void
test_the_recorder_sees_request_bodies(void **state)
{
    static const char req[] = "POST /v1/items/control HTTP/1.1\r\nHost: gateway.test\r\n"
                              "Authorization: Bearer %s\r\nContent-Length: 17\r\n\r\n"
                              "MARKER-body-bytes";
    struct kt_raw_resp resp[2];
    size_t n;

    (void)state;
    CB = malloc(sizeof(req) + 128);
    assert_non_null(CB);
    n = (size_t)snprintf(CB, sizeof(req) + 128, req, W.reader.key);
    assert_true(kt_raw_exchange(kt_daemon_port(W.gw), CB, n, 1, 300, 5000, &CR));
    assert_int_equal(kt_raw_parse(CR.data, CR.len, CR.closed, resp, 2), 1);
    assert_int_equal(resp[0].status, 200);
    assert_true(recorder_saw(W.up, "POST /v1/items/control"));
    assert_true(recorder_saw(W.up, "MARKER-body-bytes"));
}

static void
check_desync_refused(const char *te)
{
    struct kt_raw_resp resp[3];
    size_t before = recorder_requests(W.up);
    int64_t until;

    send_pair(kt_daemon_port(W.gw), te);
    /* Whatever keygate passed on has time to arrive before looking. */
    until = kt_mono_ms() + 1000;
    while (kt_mono_ms() < until && !recorder_saw(W.up, W.admin.key))
        kt_sleep_ms(50);
    if (recorder_saw(W.up, W.admin.key) || recorder_saw(W.up, "/admin/secret"))
        fail_msg("Transfer-Encoding \"%s\": the upstream received the second request's key", te);
    assert_int_equal(recorder_requests(W.up), before);
    assert_int_equal(kt_raw_parse(CR.data, CR.len, CR.closed, resp, 3), 1);
    assert_int_equal(resp[0].status, 400);
    assert_non_null(strstr(CR.data, "{\"detail\": \"Unsupported Transfer-Encoding.\"}"));
    assert_true(CR.closed);
}

static void
test_chunked_with_a_trailing_space_never_smuggles_the_second_request(void **state)
{
    (void)state;
    check_desync_refused("chunked ");
}

static void
test_chunked_with_a_trailing_tab_never_smuggles_the_second_request(void **state)
{
    (void)state;
    check_desync_refused("chunked\t");
}

static void
test_capitalised_chunked_with_a_trailing_space_never_smuggles_the_second_request(void **state)
{
    (void)state;
    check_desync_refused("Chunked ");
}

static void
test_exact_chunked_still_serves_both_requests_in_turn(void **state)
{
    struct kt_raw_resp resp[3];

    (void)state;
    /* The same bytes with the value the library frames as chunked: two
     * answers, and the second request reaches the upstream as a request
     * of its own under its own key, never inside the first one's body. */
    send_pair(kt_daemon_port(W.gw), "chunked");
    kt_sleep_ms(200);
    assert_int_equal(kt_raw_parse(CR.data, CR.len, CR.closed, resp, 3), 2);
    assert_int_equal(resp[0].status, 200);
    assert_int_equal(resp[1].status, 200);
    assert_true(recorder_saw(W.up, "GET /admin/secret HTTP/1.1"));
}

static void
test_the_daemon_stops_cleanly(void **state)
{
    (void)state;
    assert_int_equal(kt_daemon_stop(W.gw), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_the_recorder_sees_request_bodies, free_slots),
        cmocka_unit_test_teardown(
            test_chunked_with_a_trailing_space_never_smuggles_the_second_request, free_slots),
        cmocka_unit_test_teardown(
            test_chunked_with_a_trailing_tab_never_smuggles_the_second_request, free_slots),
        cmocka_unit_test_teardown(
            test_capitalised_chunked_with_a_trailing_space_never_smuggles_the_second_request,
            free_slots),
        cmocka_unit_test_teardown(test_exact_chunked_still_serves_both_requests_in_turn,
                                  free_slots),
        cmocka_unit_test(test_the_daemon_stops_cleanly),
    };

    return cmocka_run_group_tests_name("integration_test_desync", tests, setup, teardown);
}
