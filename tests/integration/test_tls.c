/* tests/integration/test_tls.c - TLS on the listeners and to the upstream,
 * against the real daemon (CTest integration_test_tls).
 *
 * A CA and two server certificates (serials 1 and 2, subjects keygate-one
 * and keygate-two, both for 127.0.0.1) are made at run time with the
 * openssl command line: no key material lives in the tree. Without the
 * openssl command the binary says so and exits 77, which CTest reports as
 * skipped (never as passed). What is checked: curl with the
 * CA gets 200 on both listeners; plain HTTP to a TLS port gets no HTTP
 * answer; a client offering only TLS 1.1 is refused (the same client gets
 * through to a daemon whose tls_priorities allow 1.1, so it really offers
 * 1.1); after SIGHUP new handshakes get the renewed certificate while a
 * connection opened before goes on, and a broken renewal is refused with
 * file:line and leaves the old one serving; an https upstream is verified with upstream_ca (200)
 * and fails without it (502); `keygate healthcheck` passes over TLS; a
 * malformed Content-Length sent over TLS gets keygate's JSON 400 exactly
 * once on both listeners (the raw-bytes guard reads through
 * gnutls_record_recv).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define WAIT_MS 15000 /* bounded waits: generous, since the suite also runs under ASan */

static struct {
    char dir[64];
    bool ok;       /* the PKI was made */
    char ca[128];  /* dir/ca.crt */
    char why[128]; /* why not, for the skip message */
} pki;

/* Runs a shell command quietly; true when it exited 0. */
static bool sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static bool
sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    strncat(cmd, " >/dev/null 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    return system(cmd) == 0;
}

/* dir/NAME.crt and dir/NAME.key: a P-256 server certificate for 127.0.0.1
 * signed by the test CA, subject CN=keygate-NAME. */
static bool
make_leaf(const char *name, int serial)
{
    return sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s/%s.key "
              "-out %s/%s.csr -subj /CN=keygate-%s",
              pki.dir, name, pki.dir, name, name) &&
           sh("openssl x509 -req -in %s/%s.csr -CA %s/ca.crt -CAkey %s/ca.key -set_serial %d "
              "-days 2 -extfile %s/ext -out %s/%s.crt",
              pki.dir, name, pki.dir, pki.dir, serial, pki.dir, pki.dir, name);
}

static int
group_setup(void **state)
{
    FILE *f;

    (void)state;
    kt_http_global_init();
    snprintf(pki.dir, sizeof(pki.dir), "/tmp/kg-tls-pki-XXXXXX");
    if (mkdtemp(pki.dir) == NULL)
        return -1;
    snprintf(pki.ca, sizeof(pki.ca), "%s/ca.crt", pki.dir);
    if (!sh("openssl version")) {
        snprintf(pki.why, sizeof(pki.why), "the openssl command is not installed");
        return 0;
    }
    snprintf(pki.why, sizeof(pki.why), "openssl failed to make the test certificates");
    {
        char ext[128];

        snprintf(ext, sizeof(ext), "%s/ext", pki.dir);
        f = fopen(ext, "w");
        if (f == NULL)
            return -1;
        fputs("subjectAltName=IP:127.0.0.1,DNS:localhost\n", f);
        if (fclose(f) != 0)
            return -1;
    }
    pki.ok = sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-keyout %s/ca.key -out %s/ca.crt -subj '/CN=keygate test CA' -days 2 "
                "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
                pki.dir, pki.dir) &&
             make_leaf("one", 1) && make_leaf("two", 2);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    sh("rm -rf %s", pki.dir);
    kt_http_global_cleanup();
    return 0;
}

static void
need_pki(void)
{
    /* openssl is there (main checked): failing to make certificates is a
     * failure, never a skip that CTest would count as passed. */
    if (!pki.ok)
        fail_msg("%s", pki.why);
}

/* A daemon listening with TLS on cert files dir/NAME.crt, dir/NAME.key,
 * plus extra config text; its URLs are https and verified with the CA. */
static struct kt_daemon *
tls_daemon(const char *name, const char *upstream, const char *extra)
{
    char text[1024];
    struct kt_daemon *d;

    snprintf(text, sizeof(text), "upstream %s\ntls_certificate %s/%s.crt\ntls_key %s/%s.key\n%s",
             upstream, pki.dir, name, pki.dir, name, extra != NULL ? extra : "");
    d = kt_daemon_new(text);
    assert_non_null(d);
    kt_daemon_set_tls_ca(d, pki.ca);
    return d;
}

/* GET url verified with the CA, with the key if any; the status (0: no answer). */
static long
get_status(const char *url, const char *key)
{
    struct kt_http_req req = {.url = url, .ca_file = pki.ca, .timeout_ms = 10000};
    struct kt_http_resp resp;
    long status;

    kt_http_do_key(&req, key, &resp);
    status = resp.status;
    kt_http_resp_cleanup(&resp);
    return status;
}

static void
test_curl_with_the_ca_gets_200_from_the_public_and_admin_listeners(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_http_req req = {0};
    struct kt_http_resp resp;
    struct kt_daemon *d;
    struct kt_key key;

    (void)state;
    need_pki();
    assert_non_null(up);
    d = tls_daemon("one", kt_upstream_url(up), NULL);
    assert_true(kt_daemon_create_key(d, "tls", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    assert_int_equal(get_status(kt_daemon_url(d, "/health"), key.key), 200);
    {
        struct kt_http_req proxied = {.url = kt_daemon_url(d, "/items/1"), .ca_file = pki.ca};
        struct kt_echo echo;

        assert_true(kt_http_do_key(&proxied, key.key, &resp));
        assert_int_equal(resp.status, 200);
        assert_true(kt_echo_parse(resp.body, resp.body_len, &echo));
        /* The upstream learns the client spoke https to keygate. */
        assert_string_equal(kt_echo_header(&echo, "X-Forwarded-Proto"), "https");
        kt_echo_cleanup(&echo);
        kt_http_resp_cleanup(&resp);
    }
    assert_int_equal(kt_upstream_count_prefix(up, "/items/1"), 1);
    assert_int_equal(get_status(kt_daemon_url(d, "/health"), NULL), 401);
    assert_int_equal(get_status(kt_daemon_admin_url(d, "/livez"), NULL), 200);
    assert_int_equal(get_status(kt_daemon_admin_url(d, "/readyz"), NULL), 200);

    /* The same request without the test CA fails verification: the 200s
     * above came over a verified TLS connection. */
    req.url = kt_daemon_admin_url(d, "/livez");
    req.timeout_ms = 10000;
    assert_false(kt_http_do(&req, &resp));
    assert_int_equal(resp.status, 0);
    assert_int_equal(resp.curl_result, CURLE_PEER_FAILED_VERIFICATION);
    kt_http_resp_cleanup(&resp);

    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

/* Sends a plain HTTP request to port; asserts nothing HTTP came back. */
static void
assert_no_http_answer(int port)
{
    static const char request[] = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    struct kt_raw_result r;
    struct kt_raw_resp parsed[1];

    assert_true(kt_raw_exchange(port, request, sizeof(request) - 1, 1, 200, 5000, &r));
    if (kt_raw_parse(r.data, r.len, r.closed, parsed, 1) != 0 || strstr(r.data, "HTTP/") != NULL)
        fail_msg("plain HTTP to TLS port %d got an HTTP answer: %.200s", port, r.data);
    kt_raw_result_cleanup(&r);
}

static void
test_plain_http_to_a_tls_port_gets_no_http_answer(void **state)
{
    struct kt_daemon *d;

    (void)state;
    need_pki();
    d = tls_daemon("one", "http://127.0.0.1:9", NULL);
    assert_true(kt_daemon_start(d));
    assert_no_http_answer(kt_daemon_port(d));
    assert_no_http_answer(kt_daemon_admin_port(d));
    /* Still serving TLS afterwards. */
    assert_int_equal(get_status(kt_daemon_admin_url(d, "/livez"), NULL), 200);
    kt_daemon_free(d);
}

static size_t
discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* GET url with a client that offers TLS 1.1 and nothing else (security
 * level 0, or OpenSSL 3 would refuse to offer 1.1 at all). The status,
 * 0 when the handshake failed. */
static long
tls11_status(const char *url)
{
    CURL *e = curl_easy_init();
    long status = 0;

    assert_non_null(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_CAINFO, pki.ca);
    curl_easy_setopt(e, CURLOPT_SSLVERSION,
                     (long)(CURL_SSLVERSION_TLSv1_1 | CURL_SSLVERSION_MAX_TLSv1_1));
    curl_easy_setopt(e, CURLOPT_SSL_CIPHER_LIST, "DEFAULT@SECLEVEL=0");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    return status;
}

static void
test_a_tls_1_1_client_is_refused(void **state)
{
    struct kt_daemon *d;

    (void)state;
    need_pki();
    /* The control: a daemon told to allow TLS 1.1 answers this client, so
     * the client below really offers TLS 1.1. */
    d = tls_daemon("one", "http://127.0.0.1:9", "tls_priorities NORMAL:+VERS-TLS1.1\n");
    assert_true(kt_daemon_start(d));
    if (tls11_status(kt_daemon_url(d, "/health")) != 401)
        fail_msg("control: a TLS 1.1 client should get 401 from a daemon allowing TLS 1.1");
    kt_daemon_free(d);

    d = tls_daemon("one", "http://127.0.0.1:9", NULL);
    assert_true(kt_daemon_start(d));
    assert_int_equal(tls11_status(kt_daemon_url(d, "/health")), 0);
    assert_int_equal(tls11_status(kt_daemon_admin_url(d, "/livez")), 0);
    /* A TLS 1.2+ client is still served. */
    assert_int_equal(get_status(kt_daemon_admin_url(d, "/livez"), NULL), 200);
    kt_daemon_free(d);
}

/* ---- renewal ---- */

/* An open keep-alive connection and what its handshake saw. */
struct conn {
    CURL *e;
    struct curl_slist *hdrs;
};

static void
conn_open(struct conn *c, const char *key)
{
    char auth[256];

    c->e = curl_easy_init();
    assert_non_null(c->e);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    kt_http_note_sent(auth, strlen(auth)); /* for the leak check (helpers/http.h) */
    c->hdrs = curl_slist_append(NULL, auth);
    assert_non_null(c->hdrs);
    curl_easy_setopt(c->e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->e, CURLOPT_PROXY, "");
    curl_easy_setopt(c->e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c->e, CURLOPT_CAINFO, pki.ca);
    curl_easy_setopt(c->e, CURLOPT_CERTINFO, 1L);
    curl_easy_setopt(c->e, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(c->e, CURLOPT_WRITEFUNCTION, discard);
}

static void
conn_close(struct conn *c)
{
    curl_easy_cleanup(c->e);
    curl_slist_free_all(c->hdrs);
}

/* GETs url on c. Returns the status; *fresh says whether a new connection
 * was made, and subject (when fresh) receives the server certificate's
 * subject line. */
static long
conn_get(struct conn *c, const char *url, bool *fresh, char *subject, size_t cap)
{
    struct curl_certinfo *ci = NULL;
    long status = 0, connects = 0;

    subject[0] = '\0';
    curl_easy_setopt(c->e, CURLOPT_URL, url);
    if (curl_easy_perform(c->e) != CURLE_OK)
        return 0;
    curl_easy_getinfo(c->e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c->e, CURLINFO_NUM_CONNECTS, &connects);
    *fresh = connects > 0;
    if (curl_easy_getinfo(c->e, CURLINFO_CERTINFO, &ci) == CURLE_OK && ci != NULL &&
        ci->num_of_certs > 0) {
        for (struct curl_slist *s = ci->certinfo[0]; s != NULL; s = s->next) {
            if (strncmp(s->data, "Subject:", 8) == 0)
                snprintf(subject, cap, "%s", s->data);
        }
    }
    return status;
}

/* The subject a new connection to url is shown. */
static void
fresh_subject(const char *url, const char *key, char *subject, size_t cap)
{
    struct conn c;
    bool fresh = false;

    conn_open(&c, key);
    conn_get(&c, url, &fresh, subject, cap);
    conn_close(&c);
}

/* Replaces dir/cur.crt and dir/cur.key with pair name, each by rename. */
static void
install_pair(const char *dir, const char *name)
{
    assert_true(sh("cp %s/%s.crt %s/cur.crt.new && mv %s/cur.crt.new %s/cur.crt", pki.dir, name,
                   dir, dir, dir));
    assert_true(sh("cp %s/%s.key %s/cur.key.new && mv %s/cur.key.new %s/cur.key", pki.dir, name,
                   dir, dir, dir));
}

/* The line of the daemon's config file that starts with directive. */
static int
config_line(struct kt_daemon *d, const char *directive)
{
    FILE *f = fopen(kt_daemon_config_path(d), "r");
    char buf[1024];
    int n = 0, found = 0;

    assert_non_null(f);
    while (found == 0 && fgets(buf, sizeof(buf), f) != NULL) {
        n++;
        if (strncmp(buf, directive, strlen(directive)) == 0 && buf[strlen(directive)] == ' ')
            found = n;
    }
    fclose(f);
    assert_true(found > 0);
    return found;
}

static void
test_a_renewed_certificate_is_served_after_sighup_while_an_open_connection_goes_on(void **state)
{
    char dir[128], text[512], subject[256], url[512];
    struct kt_daemon *d;
    struct conn before;
    struct kt_key key;
    bool fresh = false;

    (void)state;
    need_pki();
    snprintf(dir, sizeof(dir), "%s/renew", pki.dir);
    assert_true(sh("mkdir -p %s", dir));
    install_pair(dir, "one");
    snprintf(text, sizeof(text),
             "upstream http://127.0.0.1:9\ntls_certificate %s/cur.crt\ntls_key %s/cur.key\n", dir,
             dir);
    d = kt_daemon_new(text);
    assert_non_null(d);
    kt_daemon_set_tls_ca(d, pki.ca);
    assert_true(kt_daemon_create_key(d, "renew", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));

    snprintf(url, sizeof(url), "%s", kt_daemon_url(d, "/health"));
    conn_open(&before, key.key);
    assert_int_equal(conn_get(&before, url, &fresh, subject, sizeof(subject)), 200);
    assert_true(fresh);
    if (strstr(subject, "keygate-one") == NULL)
        fail_msg("first handshake should show keygate-one, got \"%s\"", subject);

    install_pair(dir, "two");
    assert_int_equal(kill(kt_daemon_pid(d), SIGHUP), 0);
    assert_true(
        kt_daemon_wait_log(d, "TLS certificate reloaded: CN=keygate-two (serial 02)", 1, WAIT_MS));
    fresh_subject(url, key.key, subject, sizeof(subject));
    if (strstr(subject, "keygate-two") == NULL)
        fail_msg("a handshake after SIGHUP should show keygate-two, got \"%s\"", subject);
    fresh_subject(kt_daemon_admin_url(d, "/livez"), key.key, subject, sizeof(subject));
    if (strstr(subject, "keygate-two") == NULL)
        fail_msg("the admin listener should show keygate-two after SIGHUP, got \"%s\"", subject);

    /* The connection opened before the swap goes on, on the same connection. */
    assert_int_equal(conn_get(&before, url, &fresh, subject, sizeof(subject)), 200);
    assert_false(fresh);

    /* A renewal that does not load is reported with its file and line, the
     * reload is refused and the current pair keeps serving. */
    assert_true(sh("echo broken > %s/cur.key", dir));
    assert_int_equal(kill(kt_daemon_pid(d), SIGHUP), 0);
    assert_true(kt_daemon_wait_log(d, "configuration reload refused", 1, WAIT_MS));
    snprintf(text, sizeof(text),
             "keygate.conf:%d: tls_key: %s/cur.key holds no unencrypted PEM "
             "private key",
             config_line(d, "tls_key"), dir);
    assert_true(kt_daemon_wait_log(d, text, 1, WAIT_MS));
    fresh_subject(url, key.key, subject, sizeof(subject));
    if (strstr(subject, "keygate-two") == NULL)
        fail_msg("after a failed renewal keygate-two should still serve, got \"%s\"", subject);
    assert_int_equal(conn_get(&before, url, &fresh, subject, sizeof(subject)), 200);

    conn_close(&before);
    kt_key_cleanup(&key);
    assert_int_equal(kt_daemon_stop(d), 0);
    kt_daemon_free(d);
}

/* ---- https upstream ---- */

static enum MHD_Result
tls_upstream_answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                    const char *version, const char *data, size_t *data_size, void **ctx)
{
    static const char body[] = "{\"from\":\"tls upstream\"}";
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)data;
    (void)data_size;
    (void)ctx;
    r = MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 65536);

    assert_non_null(f);
    assert_non_null(buf);
    assert_true(fread(buf, 1, 65535, f) > 0);
    fclose(f);
    return buf;
}

/* GET /x with a key through a daemon started with text (then stopped) into resp. */
static void
get_x_through(const char *text, struct kt_http_resp *resp)
{
    struct kt_daemon *d = kt_daemon_new(text);
    struct kt_key key;

    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "up", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));
    assert_true(kt_http_get_key(kt_daemon_url(d, "/x"), key.key, NULL, resp));
    kt_key_cleanup(&key);
    kt_daemon_free(d);
}

static void
test_an_https_upstream_is_verified_with_upstream_ca(void **state)
{
    char *cert, *keypem, text[512], upstream[64];
    const union MHD_DaemonInfo *info;
    struct kt_http_resp resp;
    struct MHD_Daemon *up;

    (void)state;
    need_pki();
    snprintf(text, sizeof(text), "%s/one.crt", pki.dir);
    cert = slurp(text);
    snprintf(text, sizeof(text), "%s/one.key", pki.dir);
    keypem = slurp(text);
    up = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, 0, NULL, NULL,
                          tls_upstream_answer, NULL, MHD_OPTION_HTTPS_MEM_CERT, cert,
                          MHD_OPTION_HTTPS_MEM_KEY, keypem, MHD_OPTION_END);
    assert_non_null(up);
    info = MHD_get_daemon_info(up, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    snprintf(upstream, sizeof(upstream), "https://127.0.0.1:%u", (unsigned)info->port);

    /* Verified against upstream_ca: the upstream's answer. */
    snprintf(text, sizeof(text), "upstream %s\nupstream_ca %s\n", upstream, pki.ca);
    get_x_through(text, &resp);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.body, "tls upstream"));
    kt_http_resp_cleanup(&resp);

    /* The system CAs do not know the test CA: 502 with keygate's JSON. */
    snprintf(text, sizeof(text), "upstream %s\n", upstream);
    get_x_through(text, &resp);
    assert_int_equal(resp.status, 502);
    assert_null(strstr(resp.body, "tls upstream"));
    assert_true(resp.body[0] == '{');
    kt_http_resp_cleanup(&resp);

    MHD_stop_daemon(up);
    free(cert);
    free(keypem);
}

/* ---- the raw-bytes guard over TLS ---- */

/* Sends req over a TLS connection to port (a GnuTLS client: the CA is not
 * checked, the bytes are what matters) and reads until the server closes or
 * 10 s pass. Returns the bytes received (NUL-terminated, caller frees) and
 * *closed whether the server ended the connection. */
static char *
tls_raw_exchange(int port, const char *req, size_t len, size_t *got, bool *closed)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 10};
    gnutls_certificate_credentials_t cred = NULL;
    gnutls_session_t s = NULL;
    size_t cap = 65536;
    char *out = calloc(1, cap + 1);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ret;

    *got = 0;
    *closed = false;
    assert_non_null(out);
    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(gnutls_certificate_allocate_credentials(&cred), 0);
    assert_int_equal(gnutls_init(&s, GNUTLS_CLIENT), 0);
    assert_int_equal(gnutls_set_default_priority(s), 0);
    assert_int_equal(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred), 0);
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, 10000);
    do
        ret = gnutls_handshake(s);
    while (ret < 0 && !gnutls_error_is_fatal(ret));
    assert_int_equal(ret, 0);
    assert_int_equal(gnutls_record_send(s, req, len), (ssize_t)len);
    for (;;) {
        ssize_t n = gnutls_record_recv(s, out + *got, cap - *got);

        if (n > 0) {
            *got += (size_t)n;
            if (*got == cap)
                break;
            continue;
        }
        if (n == GNUTLS_E_INTERRUPTED)
            continue;
        /* 0: close_notify; a premature end is a close without one. EAGAIN is
         * SO_RCVTIMEO: the server kept the connection open. */
        *closed = n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION;
        break;
    }
    out[*got] = '\0';
    gnutls_deinit(s);
    gnutls_certificate_free_credentials(cred);
    close(fd);
    return out;
}

static size_t
count_status_lines(const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i + 9 <= len; i++)
        if (memcmp(s + i, "HTTP/1.1 ", 9) == 0)
            n++;
    return n;
}

/* libmicrohttpd 0.9.75 answered a Content-Length of "+5" itself, its status
 * line and headers twice; over TLS too, since it reads through
 * gnutls_record_recv(), which the raw-bytes guard defines. */
static void
test_a_malformed_content_length_over_tls_gets_one_json_400(void **state)
{
    static const char req[] = "POST /v1/items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Length: +5\r\n\r\nabcde";
    struct kt_daemon *d;

    (void)state;
    need_pki();
    d = tls_daemon("one", "http://127.0.0.1:9", NULL);
    assert_true(kt_daemon_start(d));
    for (int admin = 0; admin < 2; admin++) {
        size_t len;
        bool closed;
        char *got = tls_raw_exchange(admin ? kt_daemon_admin_port(d) : kt_daemon_port(d), req,
                                     sizeof(req) - 1, &len, &closed);

        if (count_status_lines(got, len) != 1 || strncmp(got, "HTTP/1.1 400 ", 13) != 0 ||
            strstr(got, "Content-Type: application/json\r\n") == NULL ||
            strstr(got, "{\"detail\": \"Malformed Content-Length.\"}") == NULL || !closed)
            fail_msg("%s listener over TLS answered (%s):\n%s", admin ? "admin" : "public",
                     closed ? "closed" : "open", got);
        free(got);
    }
    /* Still serving TLS afterwards. */
    assert_int_equal(get_status(kt_daemon_admin_url(d, "/livez"), NULL), 200);
    kt_daemon_free(d);
}

static void
test_healthcheck_passes_over_tls(void **state)
{
    static const char *const args[] = {"healthcheck", NULL};
    struct kt_cli_result r = {0};
    struct kt_daemon *d;

    (void)state;
    need_pki();
    d = tls_daemon("one", "http://127.0.0.1:9", NULL);
    assert_true(kt_daemon_start(d));
    assert_true(kt_daemon_cli(d, &r, args));
    if (r.exit_code != 0)
        fail_msg("healthcheck over TLS should exit 0, got %d: %s", r.exit_code, r.err);
    kt_cli_result_cleanup(&r);
    kt_daemon_free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_with_the_ca_gets_200_from_the_public_and_admin_listeners),
        cmocka_unit_test(test_plain_http_to_a_tls_port_gets_no_http_answer),
        cmocka_unit_test(test_a_tls_1_1_client_is_refused),
        cmocka_unit_test(
            test_a_renewed_certificate_is_served_after_sighup_while_an_open_connection_goes_on),
        cmocka_unit_test(test_an_https_upstream_is_verified_with_upstream_ca),
        cmocka_unit_test(test_healthcheck_passes_over_tls),
        cmocka_unit_test(test_a_malformed_content_length_over_tls_gets_one_json_400),
    };

    if (system("openssl version >/dev/null 2>&1") != 0) {
        const char *req = getenv("KEYGATE_REQUIRE_OPENSSL");
        bool required = req != NULL && strcmp(req, "1") == 0;

        fprintf(stderr,
                "integration_test_tls: %s: the openssl command is not installed "
                "(Debian package openssl); it makes the test certificates\n",
                required ? "FAILED (KEYGATE_REQUIRE_OPENSSL=1)" : "SKIPPED");
        return required ? 1 : 77;
    }
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
