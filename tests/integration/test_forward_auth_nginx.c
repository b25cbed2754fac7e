/* tests/integration/test_forward_auth_nginx.c - the nginx recipe of
 * docs/forward-auth.md, run: a real nginx with auth_request to keygate in
 * mode forward_auth, in front of the stub upstream.
 *
 * The recipe is read from docs/forward-auth.md (between the nginx-recipe
 * markers), so the page shows what is tested; only the two addresses and
 * the listen port are replaced, and the settings a non-root nginx needs
 * (pid file, error log, temp paths in a temporary directory) are put around
 * it. nginx runs in the foreground as one process (daemon off,
 * master_process off), dies with this process (PR_SET_PDEATHSIG) and is
 * stopped at the end; every wait has a deadline. A proxy-mode daemon with
 * the same routes and kinds of keys answers the same requests, so what the
 * client gets through nginx is compared with what proxy mode sends.
 *
 * Without nginx (KEYGATE_NGINX, /usr/sbin/nginx or nginx on PATH) the test
 * says so and exits 77, which CTest reports as skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define SKIP_CODE 77
#define NGINX_READY_MS 20000L
#define NGINX_STOP_MS 10000L
#define RECIPE_BEGIN "<!-- nginx-recipe-begin -->"
#define RECIPE_END "<!-- nginx-recipe-end -->"

#define ROUTES                                                                                     \
    "route GET /v1/items* read:items\n"                                                            \
    "route POST /v1/items* write:items\n"                                                          \
    "route * /v1/admin* admin:all\n"

enum kind { K_READER, K_WRITER, K_RATED, K_NKINDS };

struct world {
    char nginx[512];
    char *recipe; /* the nginx block of docs/forward-auth.md */
    char dir[64]; /* nginx's prefix: config, logs, temp paths */
    pid_t nginx_pid;
    int port; /* nginx's listen port */
    struct kt_upstream *up;
    struct kt_daemon *fa; /* mode forward_auth, behind nginx */
    struct kt_daemon *px; /* mode proxy, for comparison */
    struct kt_key fa_keys[K_NKINDS];
    struct kt_key px_keys[K_NKINDS];
};

static struct world W;
static struct kt_http_resp R, P;
static struct kt_echo E;
static struct kt_raw_result RAW;

static int
free_slots(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    kt_http_resp_cleanup(&P);
    kt_echo_cleanup(&E);
    kt_raw_result_cleanup(&RAW);
    return 0;
}

/* ---- nginx ---- */

static bool
find_nginx(char *out, size_t cap)
{
    const char *env = getenv("KEYGATE_NGINX"), *path = getenv("PATH");

    if (env != NULL && env[0] != '\0') {
        snprintf(out, cap, "%s", env);
        return access(out, X_OK) == 0;
    }
    snprintf(out, cap, "/usr/sbin/nginx");
    if (access(out, X_OK) == 0)
        return true;
    while (path != NULL && *path != '\0') {
        size_t n = strcspn(path, ":");

        snprintf(out, cap, "%.*s/nginx", (int)n, path);
        if (n > 0 && access(out, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else if (buf != NULL) {
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* The fenced block between the markers of docs/forward-auth.md, malloc'd. */
static char *
read_recipe(void)
{
    const char *src = getenv("KEYGATE_SOURCE_DIR");
    char path[1024], *doc, *out = NULL;
    const char *b, *e;

    snprintf(path, sizeof(path), "%s/docs/forward-auth.md", src != NULL ? src : ".");
    doc = slurp(path);
    if (doc == NULL) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    b = strstr(doc, RECIPE_BEGIN);
    e = b != NULL ? strstr(b, RECIPE_END) : NULL;
    if (b != NULL && e != NULL) {
        b = strstr(b, "```nginx\n");
        if (b != NULL && b < e) {
            b += strlen("```nginx\n");
            while (e > b && e[-1] != '`') /* back to the closing fence */
                e--;
            while (e > b && e[-1] == '`')
                e--;
            out = strndup(b, (size_t)(e - b));
        }
    }
    if (out == NULL)
        fprintf(stderr, "%s: no nginx block between the recipe markers\n", path);
    free(doc);
    return out;
}

/* Replaces the first `from` in *s with `to`; false when it is not there. */
static bool
replace(char **s, const char *from, const char *to)
{
    char *at = strstr(*s, from), *n;
    size_t len;

    if (at == NULL) {
        fprintf(stderr, "recipe: \"%s\" not found\n", from);
        return false;
    }
    len = strlen(*s) - strlen(from) + strlen(to) + 1;
    n = malloc(len);
    if (n == NULL)
        return false;
    snprintf(n, len, "%.*s%s%s", (int)(at - *s), *s, to, at + strlen(from));
    free(*s);
    *s = n;
    return true;
}

static bool
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    bool ok = f != NULL && fputs(text, f) >= 0;

    if (f != NULL && fclose(f) != 0)
        ok = false;
    return ok;
}

/* The recipe with this run's addresses, inside the settings a non-root
 * nginx in a temporary directory needs. */
static bool
write_nginx_config(void)
{
    char *recipe = strdup(W.recipe), path[128], text[2048], addr[64];
    bool ok;

    if (recipe == NULL)
        return false;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", kt_daemon_port(W.fa));
    ok = replace(&recipe, "127.0.0.1:8080", addr);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", kt_upstream_port(W.up));
    ok = ok && replace(&recipe, "127.0.0.1:3000", addr);
    snprintf(addr, sizeof(addr), "listen 127.0.0.1:%d;", W.port);
    ok = ok && replace(&recipe, "listen 80;", addr);
    snprintf(path, sizeof(path), "%s/recipe.conf", W.dir);
    ok = ok && write_file(path, recipe);
    free(recipe);
    snprintf(text, sizeof(text),
             "daemon off;\n"
             "master_process off;\n"
             "pid %1$s/nginx.pid;\n"
             "error_log %1$s/error.log info;\n"
             "events { worker_connections 256; }\n"
             "http {\n"
             "    access_log %1$s/access.log;\n"
             "    client_body_temp_path %1$s/client_body;\n"
             "    proxy_temp_path %1$s/proxy;\n"
             "    fastcgi_temp_path %1$s/fastcgi;\n"
             "    uwsgi_temp_path %1$s/uwsgi;\n"
             "    scgi_temp_path %1$s/scgi;\n"
             "    include %1$s/recipe.conf;\n"
             "}\n",
             W.dir);
    snprintf(path, sizeof(path), "%s/nginx.conf", W.dir);
    return ok && write_file(path, text);
}

static void
print_nginx_log(void)
{
    char path[128], *log;

    snprintf(path, sizeof(path), "%s/error.log", W.dir);
    log = slurp(path);
    fprintf(stderr, "---- nginx error.log ----\n%s\n", log != NULL ? log : "(none)");
    free(log);
}

/* fork + execv, only system calls in the child; SIGKILL when we die. */
static pid_t
spawn_nginx(void)
{
    char prefix[80], conf[96], errlog[96], out[96];
    char *const argv[] = {W.nginx, "-p", prefix, "-c", conf, "-e", errlog, NULL};
    pid_t parent = getpid(), pid;

    snprintf(prefix, sizeof(prefix), "%s/", W.dir);
    snprintf(conf, sizeof(conf), "%s/nginx.conf", W.dir);
    snprintf(errlog, sizeof(errlog), "%s/error.log", W.dir);
    snprintf(out, sizeof(out), "%s/stdout.log", W.dir);
    pid = fork();
    if (pid == 0) {
        int fd;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static bool
port_answers(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Starts nginx and waits until it accepts connections; false (with its
 * log) when it exits or does not answer in time. */
static bool
start_nginx(void)
{
    int64_t end = kt_mono_ms() + NGINX_READY_MS;
    int status;

    W.port = kt_daemon_free_port();
    if (W.port == 0 || !write_nginx_config())
        return false;
    W.nginx_pid = spawn_nginx();
    if (W.nginx_pid < 0) {
        fprintf(stderr, "cannot fork: %s\n", strerror(errno));
        W.nginx_pid = 0;
        return false;
    }
    while (!port_answers(W.port)) {
        if (waitpid(W.nginx_pid, &status, WNOHANG) == W.nginx_pid) {
            fprintf(stderr, "nginx exited (status 0x%x)\n", status);
            W.nginx_pid = 0;
            print_nginx_log();
            return false;
        }
        if (kt_mono_ms() > end) {
            fprintf(stderr, "nginx did not answer on port %d in time\n", W.port);
            print_nginx_log();
            return false;
        }
        kt_sleep_ms(20);
    }
    return true;
}

/* SIGTERM (fast shutdown), then SIGKILL after the deadline. Returns the
 * exit status, 128+N when killed by signal N, -1 when it was not running. */
static int
stop_nginx(void)
{
    int64_t end = kt_mono_ms() + NGINX_STOP_MS;
    pid_t pid = W.nginx_pid;
    int status = 0;

    if (pid <= 0)
        return -1;
    W.nginx_pid = 0;
    kill(pid, SIGTERM);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (kt_mono_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        kt_sleep_ms(20);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* ---- setup ---- */

static bool
make_keys(struct kt_daemon *d, struct kt_key *keys)
{
    static const char *const args[K_NKINDS][14] = {
        [K_READER] = {"keys", "create", "--name", "reader", "--scopes", "read:items", "--json"},
        [K_WRITER] = {"keys", "create", "--name", "writer", "--scopes", "write:items", "--json"},
        [K_RATED] = {"keys", "create", "--name", "rated", "--scopes", "read:items", "--rate",
                     "2/min", "--burst", "2", "--json"},
    };

    for (size_t i = 0; i < K_NKINDS; i++) {
        if (!kt_daemon_key_cli(d, args[i], &keys[i]))
            return false;
    }
    return true;
}

static int teardown(void **state);

static int
setup(void **state)
{
    char cfg[1024];

    (void)state;
    kt_http_global_init();
    snprintf(W.dir, sizeof(W.dir), "/tmp/kg-nginx-test-XXXXXX");
    if (mkdtemp(W.dir) == NULL) {
        W.dir[0] = '\0';
        goto fail;
    }
    W.up = kt_upstream_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg),
             "mode forward_auth\nupstream http://127.0.0.1:9\ntrusted_proxies 127.0.0.1\n" ROUTES);
    W.fa = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\n" ROUTES, kt_upstream_url(W.up));
    W.px = kt_daemon_new(cfg);
    if (W.fa == NULL || W.px == NULL || !make_keys(W.fa, W.fa_keys) ||
        !make_keys(W.px, W.px_keys) || !kt_daemon_start(W.fa) || !kt_daemon_start(W.px) ||
        !start_nginx())
        goto fail;
    return 0;

fail:
    teardown(state);
    return -1;
}

static int
teardown(void **state)
{
    (void)state;
    stop_nginx();
    kt_daemon_free(W.fa);
    kt_daemon_free(W.px);
    kt_upstream_stop(W.up);
    for (size_t i = 0; i < K_NKINDS; i++) {
        kt_key_cleanup(&W.fa_keys[i]);
        kt_key_cleanup(&W.px_keys[i]);
    }
    if (W.dir[0] != '\0' && getenv("KEYGATE_TEST_KEEP") == NULL)
        nftw(W.dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    kt_http_global_cleanup();
    W.up = NULL;
    W.fa = W.px = NULL;
    W.dir[0] = '\0';
    return 0;
}

/* ---- requests ---- */

static const char *
nginx_url(const char *path)
{
    static char url[512];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", W.port, path);
    return url;
}

/* METHOD PATH with key (NULL: none) and one extra header line (or NULL),
 * through nginx (to_nginx) or straight to the proxy-mode daemon. */
static void
send_req(bool to_nginx, const char *method, const char *path, const char *key, const char *extra,
         struct kt_http_resp *out)
{
    const char *h[] = {extra, NULL};
    struct kt_http_req req = {.method = method, .headers = h};

    req.url = to_nginx ? nginx_url(path) : kt_daemon_url(W.px, path);
    if (strcmp(method, "POST") == 0) {
        req.body = "{}";
        req.body_len = 2;
    }
    kt_http_resp_cleanup(out);
    assert_true(kt_http_do_key(&req, key, out));
}

static void
expect_header_once(const struct kt_http_resp *r, const char *name, const char *want)
{
    char buf[512];
    const char *got = kt_http_header_buf(r, name, buf, sizeof(buf));

    if (got == NULL || strcmp(got, want) != 0)
        print_error("%s: got \"%s\", want \"%s\"\n", name, got != NULL ? got : "(none)", want);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(kt_http_header_count(r, name), 1);
}

/* What the client got through nginx is what proxy mode sends: status, body
 * bytes, Content-Type, and the WWW-Authenticate and Retry-After it has. */
static void
expect_keygates_answer(const struct kt_http_resp *ng, const struct kt_http_resp *px)
{
    char a[256], b[256];

    if (ng->status != px->status || ng->body_len != px->body_len ||
        memcmp(ng->body, px->body, ng->body_len) != 0)
        print_error("through nginx: %ld %s\nproxy mode:    %ld %s\n", ng->status, ng->body,
                    px->status, px->body);
    assert_int_equal(ng->status, px->status);
    assert_int_equal(ng->body_len, px->body_len);
    assert_memory_equal(ng->body, px->body, ng->body_len);
    expect_header_once(ng, "Content-Type", "application/json");
    assert_int_equal(kt_http_header_count(ng, "WWW-Authenticate"),
                     kt_http_header_count(px, "WWW-Authenticate"));
    if (kt_http_header_buf(px, "WWW-Authenticate", b, sizeof(b)) != NULL)
        expect_header_once(ng, "WWW-Authenticate", b);
    assert_int_equal(kt_http_header_count(ng, "Retry-After"),
                     kt_http_header_count(px, "Retry-After"));
    assert_int_equal(kt_http_header_count(ng, "X-Request-Id"), 1);
    assert_int_equal(kt_http_header_count(ng, "X-Keygate-Deny-Body"), 0);
    if (kt_http_header_buf(px, "RateLimit-Policy", b, sizeof(b)) != NULL)
        expect_header_once(ng, "RateLimit-Policy", b);
    (void)a;
}

/* ---- tests ---- */

static void
test_a_valid_key_reaches_the_upstream_with_the_identity_headers(void **state)
{
    char rid[128];

    (void)state;
    send_req(true, "GET", "/v1/items/1?full=yes", W.fa_keys[K_READER].key,
             "X-Keygate-Key-Id: key_forged", &R);
    if (R.status != 200)
        print_error("got %ld %s\n", R.status, R.body);
    assert_int_equal(R.status, 200);
    assert_true(kt_echo_parse(R.body, R.body_len, &E));
    assert_string_equal(kt_echo_target(&E), "/v1/items/1?full=yes");
    assert_int_equal(kt_echo_header_count(&E, "X-Keygate-Key-Id"), 1);
    assert_string_equal(kt_echo_header(&E, "X-Keygate-Key-Id"), W.fa_keys[K_READER].id);
    assert_string_equal(kt_echo_header(&E, "X-Keygate-Tenant"), "default");
    assert_string_equal(kt_echo_header(&E, "X-Keygate-Scopes"), "read:items");
    assert_non_null(kt_echo_header(&E, "X-Keygate-User-Id"));
    assert_null(kt_echo_header(&E, "Authorization"));
    assert_null(kt_echo_header(&E, "X-Original-URI"));
    /* One request id from the client's view to the upstream's. */
    assert_non_null(kt_http_header_buf(&R, "X-Request-Id", rid, sizeof(rid)));
    assert_string_equal(kt_echo_header(&E, "X-Request-Id"), rid);
    /* A writer reaches POST the same way. */
    send_req(true, "POST", "/v1/items", W.fa_keys[K_WRITER].key, NULL, &R);
    assert_int_equal(R.status, 200);
    kt_echo_cleanup(&E);
    assert_true(kt_echo_parse(R.body, R.body_len, &E));
    assert_string_equal(kt_echo_method(&E), "POST");
    assert_string_equal(kt_echo_header(&E, "X-Keygate-Key-Id"), W.fa_keys[K_WRITER].id);
}

static void
test_a_missing_or_invalid_key_is_keygates_401_json_at_the_client(void **state)
{
    (void)state;
    kt_upstream_reset(W.up);
    send_req(true, "GET", "/v1/items/no-key", NULL, NULL, &R);
    send_req(false, "GET", "/v1/items/no-key", NULL, NULL, &P);
    assert_int_equal(R.status, 401);
    expect_keygates_answer(&R, &P);
    send_req(true, "GET", "/v1/items/bad-key", "kg_notAKey", NULL, &R);
    send_req(false, "GET", "/v1/items/bad-key", "kg_notAKey", NULL, &P);
    assert_int_equal(R.status, 401);
    expect_keygates_answer(&R, &P);
    assert_int_equal(kt_upstream_count(W.up), 0);
}

static void
test_a_wrong_scope_is_keygates_403_json_at_the_client(void **state)
{
    (void)state;
    kt_upstream_reset(W.up);
    send_req(true, "POST", "/v1/items", W.fa_keys[K_READER].key, NULL, &R);
    send_req(false, "POST", "/v1/items", W.px_keys[K_READER].key, NULL, &P);
    assert_int_equal(R.status, 403);
    expect_keygates_answer(&R, &P);
    send_req(true, "GET", "/v1/admin/users", W.fa_keys[K_WRITER].key, NULL, &R);
    send_req(false, "GET", "/v1/admin/users", W.px_keys[K_WRITER].key, NULL, &P);
    assert_int_equal(R.status, 403);
    expect_keygates_answer(&R, &P);
    assert_int_equal(kt_upstream_count(W.up), 0);
}

static void
test_over_the_limit_is_keygates_429_with_retry_after_and_json_at_the_client(void **state)
{
    char ra[32];

    (void)state;
    /* 2 a minute: the first two pass, so each request was asked (and
     * spent) once; the third is refused. */
    for (int i = 0; i < 2; i++) {
        send_req(true, "GET", "/v1/items/limited", W.fa_keys[K_RATED].key, NULL, &R);
        if (R.status != 200)
            print_error("request %d: %ld %s\n", i + 1, R.status, R.body);
        assert_int_equal(R.status, 200);
        assert_int_equal(kt_http_header_count(&R, "RateLimit-Policy"), 1);
        assert_int_equal(kt_http_header_count(&R, "RateLimit"), 1);
        send_req(false, "GET", "/v1/items/limited", W.px_keys[K_RATED].key, NULL, &P);
        assert_int_equal(P.status, 200);
    }
    kt_upstream_reset(W.up);
    send_req(true, "GET", "/v1/items/limited", W.fa_keys[K_RATED].key, NULL, &R);
    send_req(false, "GET", "/v1/items/limited", W.px_keys[K_RATED].key, NULL, &P);
    assert_int_equal(R.status, 429);
    expect_keygates_answer(&R, &P);
    assert_non_null(kt_http_header_buf(&R, "Retry-After", ra, sizeof(ra)));
    assert_true(atoi(ra) >= 1 && atoi(ra) <= 60);
    assert_int_equal(kt_upstream_count(W.up), 0);
}

static void
test_paths_not_in_normal_form_are_refused_through_nginx(void **state)
{
    static const char *const targets[] = {
        "/v1/items/../admin/users", "/v1/items/%2e%2e/admin/users", "/v1//admin/users",
        "/v1/%61dmin/users", "/v1/admin/users#/../../../v1/items"};
    struct kt_raw_resp rr;
    char req[1024];

    (void)state;
    send_req(false, "GET", "/v1/admin/users", W.px_keys[K_READER].key, NULL, &P);
    assert_int_equal(P.status, 403);
    kt_upstream_reset(W.up);
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer %s\r\n"
                         "Connection: close\r\n\r\n",
                         targets[i], W.fa_keys[K_READER].key);

        kt_raw_result_cleanup(&RAW);
        assert_true(kt_raw_exchange(W.port, req, (size_t)n, 1, 0, 10000, &RAW));
        assert_int_equal(kt_raw_parse(RAW.data, RAW.len, RAW.closed, &rr, 1), 1);
        /* The API would get this raw path: keygate refuses to judge it. */
        if (rr.status != 400)
            print_error("%s: %.*s\n", targets[i], (int)RAW.len, RAW.data);
        assert_int_equal(rr.status, 400);
        /* keygate's JSON ("... not in normal form." or, for '#', "Malformed request path.") */
        assert_non_null(memmem(RAW.data + rr.body_off, rr.body_len, "path", 4));
        assert_memory_equal(RAW.data + rr.body_off, "{\"detail\": \"", 12);
    }
    assert_int_equal(kt_upstream_count(W.up), 0);
}

static void
test_health_through_nginx_is_keygates_own(void **state)
{
    (void)state;
    send_req(true, "GET", "/health", W.fa_keys[K_READER].key, NULL, &R);
    send_req(false, "GET", "/health", W.px_keys[K_READER].key, NULL, &P);
    assert_int_equal(R.status, 200);
    assert_string_equal(R.body, "{\"status\":\"ok\"}");
    assert_string_equal(R.body, P.body);
    send_req(true, "GET", "/health", NULL, "X-Original-URI: /v1/admin/x", &R);
    send_req(false, "GET", "/health", NULL, NULL, &P);
    expect_keygates_answer(&R, &P);
}

static void
test_nginx_and_keygate_stop_cleanly(void **state)
{
    (void)state;
    assert_int_equal(stop_nginx(), 0);
    assert_int_equal(kt_daemon_stop(W.fa), 0);
    assert_int_equal(kt_daemon_stop(W.px), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_a_valid_key_reaches_the_upstream_with_the_identity_headers,
                                  free_slots),
        cmocka_unit_test_teardown(test_a_missing_or_invalid_key_is_keygates_401_json_at_the_client,
                                  free_slots),
        cmocka_unit_test_teardown(test_a_wrong_scope_is_keygates_403_json_at_the_client,
                                  free_slots),
        cmocka_unit_test_teardown(
            test_over_the_limit_is_keygates_429_with_retry_after_and_json_at_the_client,
            free_slots),
        cmocka_unit_test_teardown(test_paths_not_in_normal_form_are_refused_through_nginx,
                                  free_slots),
        cmocka_unit_test_teardown(test_health_through_nginx_is_keygates_own, free_slots),
        cmocka_unit_test_teardown(test_nginx_and_keygate_stop_cleanly, free_slots),
    };
    int failed;

    if (!find_nginx(W.nginx, sizeof(W.nginx))) {
        const char *req = getenv("KEYGATE_REQUIRE_NGINX");

        printf("integration_test_forward_auth_nginx: %s: no nginx found "
               "(KEYGATE_NGINX, /usr/sbin/nginx, PATH); install nginx-light\n",
               req != NULL && strcmp(req, "1") == 0 ? "FAILED (KEYGATE_REQUIRE_NGINX=1)"
                                                    : "SKIPPED");
        /* CI installs nginx-light: there a missing nginx is a failure. */
        return req != NULL && strcmp(req, "1") == 0 ? 1 : SKIP_CODE;
    }
    W.recipe = read_recipe();
    if (W.recipe == NULL)
        return 1;
    failed =
        cmocka_run_group_tests_name("integration_test_forward_auth_nginx", tests, setup, teardown);
    free(W.recipe);
    /* A failure count of 77 must not read as a skip. */
    return failed == SKIP_CODE ? 1 : failed;
}
