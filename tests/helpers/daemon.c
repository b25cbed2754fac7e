/* helpers/daemon.c - starts, watches and stops the real keygate daemon, and
 * runs its CLI, for the integration tests. See daemon.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

#include <arpa/inet.h>
#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/pgserver.h"
#include "keygate/keyfmt.h"

extern char **environ;

#define READY_DEADLINE_MS 20000L
#define STOP_DEADLINE_MS 20000L
#define CLI_DEADLINE_MS 30000L
#define START_ATTEMPTS 3
#define MAX_ARGS 32

struct kt_daemon {
    char dir[256];
    char config_path[300];
    char log_path[300];
    char *config_text;
    pid_t pid;
    int port, admin_port;
    int cli_runs;
    char url[512];
    char ca_file[300]; /* "" without TLS */
    char **keys;       /* every key the CLI printed: no log may contain one */
    size_t nkeys;
    int expected_exit;  /* the one non-zero exit the test asked for (kt_daemon_expect_exit), or 0 */
    char unclean[256];  /* the first exit nobody asked for; "" while every exit was clean */
    char pg_db[32];     /* its database on the suite's PostgreSQL server; "" on SQLite */
    char database[512]; /* what its config's database line says, when the helper wrote it */
};

/* The suite's PostgreSQL server (kt_daemon_backend_start), and how many
 * databases it made on it; NULL on SQLite. */
static struct kt_pg *backend_pg;
static int backend_dbs;

/* A key's tail: 43 body characters, then 8 of checksum; the display prefix
 * keeps the first 4 body characters and the list form the last 4. */
#define KEY_TAIL 51
#define KEY_SHOWN_BODY 4
#define KEY_SHOWN_LAST 4
/* Any run this long of a key's hidden characters in a log is a leak. */
#define LEAK_WINDOW 10

int
kt_daemon_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = 0;

    if (fd < 0)
        return 0;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (f == NULL)
        return strdup("");
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *p = realloc(buf, cap = cap * 2 + 8192);

            if (p == NULL)
                break;
            buf = p;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    if (buf == NULL)
        return strdup("");
    buf[len] = '\0';
    return buf;
}

/* True when text has a line starting with the directive name. */
static bool
has_directive(const char *text, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = text; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, name, n) == 0 && (p[n] == ' ' || p[n] == '\t'))
            return true;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return false;
}

static bool
write_config(struct kt_daemon *d)
{
    FILE *f;

    d->port = kt_daemon_free_port();
    d->admin_port = kt_daemon_free_port();
    if (d->port == 0 || d->admin_port == 0 || d->port == d->admin_port) {
        fprintf(stderr, "daemon: no free port\n");
        return false;
    }
    f = fopen(d->config_path, "w");
    if (f == NULL) {
        fprintf(stderr, "daemon: %s: %s\n", d->config_path, strerror(errno));
        return false;
    }
    fprintf(f,
            "# written by tests/helpers/daemon.c\n"
            "listen 127.0.0.1:%d\n"
            "admin_listen 127.0.0.1:%d\n",
            d->port, d->admin_port);
    /* A test's own database (PostgreSQL, shared by several daemons) and
     * secret_file (the one they share) replace the directory's. */
    if (!has_directive(d->config_text, "database"))
        fprintf(f, "database \"%s\"\n", d->database);
    if (!has_directive(d->config_text, "secret_file"))
        fprintf(f, "secret_file \"%s/secret\"\n", d->dir);
    if (!has_directive(d->config_text, "workers"))
        fprintf(f, "workers 2\n");
    /* Tests send many bad keys from one loopback address on purpose; only a
     * test of the brute-force throttle itself wants it on. */
    if (!has_directive(d->config_text, "auth_throttle"))
        fprintf(f, "auth_throttle off\n");
    /* KEYGATE_TEST_UPSTREAM_CLIENT=curl runs a suite against the libcurl
     * client (ctest's *_curl variants): the parity of the two clients. */
    if (!has_directive(d->config_text, "upstream_client") &&
        getenv("KEYGATE_TEST_UPSTREAM_CLIENT") != NULL)
        fprintf(f, "upstream_client %s\n", getenv("KEYGATE_TEST_UPSTREAM_CLIENT"));
    fprintf(f, "%s\n", d->config_text);
    return fclose(f) == 0;
}

static int stop_process(struct kt_daemon *d);

bool
kt_daemon_add_config(struct kt_daemon *d, const char *text)
{
    size_t n = strlen(d->config_text) + strlen(text) + 2;
    char *t = malloc(n);

    if (t == NULL)
        return false;
    snprintf(t, n, "%s\n%s", d->config_text, text);
    free(d->config_text);
    d->config_text = t;
    return write_config(d);
}

struct kt_daemon *
kt_daemon_new(const char *config_text)
{
    struct kt_daemon *d = calloc(1, sizeof(*d));
    const char *tmp = getenv("TMPDIR");

    if (d == NULL)
        return NULL;
    d->pid = -1;
    d->config_text = strdup(config_text != NULL ? config_text : "");
    snprintf(d->dir, sizeof(d->dir), "%s/keygate-it-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (d->config_text == NULL || mkdtemp(d->dir) == NULL) {
        fprintf(stderr, "daemon: mkdtemp %s: %s\n", d->dir, strerror(errno));
        free(d->config_text);
        free(d);
        return NULL;
    }
    snprintf(d->config_path, sizeof(d->config_path), "%s/keygate.conf", d->dir);
    snprintf(d->log_path, sizeof(d->log_path), "%s/daemon.log", d->dir);
    snprintf(d->database, sizeof(d->database), "%s/keygate.db", d->dir);
    /* On PostgreSQL, a database of its own, as fresh as a new file. */
    if (backend_pg != NULL && !has_directive(d->config_text, "database")) {
        snprintf(d->pg_db, sizeof(d->pg_db), "kt_daemon_%d", ++backend_dbs);
        if (kt_pg_createdb(backend_pg, d->pg_db, d->database, sizeof(d->database)) != 0) {
            kt_daemon_free(d);
            return NULL;
        }
    }
    if (!write_config(d)) {
        kt_daemon_free(d);
        return NULL;
    }
    return d;
}

static const char *
keygate_bin(void)
{
    const char *bin = getenv("KEYGATE_BIN");

    if (bin == NULL || bin[0] == '\0') {
        fprintf(stderr, "daemon: KEYGATE_BIN is not set (run the tests through ctest)\n");
        return NULL;
    }
    return bin;
}

/* The environment without KEYGATE_* variables, which would override the
 * test's config file. The array is malloc'd; the strings are environ's. */
static char **
clean_env(void)
{
    size_t n = 0, k = 0;
    char **env;

    while (environ[n] != NULL)
        n++;
    env = calloc(n + 1, sizeof(*env));
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "KEYGATE_", 8) != 0)
            env[k++] = environ[i];
    return env;
}

/* fork + execve with only system calls in between (the tests run threads,
 * so nothing else is safe in the child). The child asks for SIGKILL when
 * the thread that started it dies, so a test binary killed by a timeout
 * leaves no daemon behind. */
static pid_t
spawn(char *const argv[], const char *out_path, const char *err_path, bool append)
{
    int oflags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC);
    bool same = strcmp(out_path, err_path) == 0;
    char **env = clean_env();
    pid_t parent = getpid(), pid;
    /* KEYGATE_TEST_WRAPPER: a program the daemon and the CLI run under
     * (scripts/valgrind.sh: valgrind); argv[0] becomes its first argument. */
    const char *wrapper = getenv("KEYGATE_TEST_WRAPPER");
    char *wargv[MAX_ARGS + 8];

    if (wrapper != NULL && wrapper[0] != '\0') {
        size_t n = 0;

        wargv[n++] = (char *)wrapper;
        while (argv[n - 1] != NULL && n < sizeof(wargv) / sizeof(wargv[0]) - 1) {
            wargv[n] = argv[n - 1];
            n++;
        }
        wargv[n] = NULL;
        argv = wargv;
    }
    if (env == NULL)
        return -1;
    pid = fork();
    if (pid == 0) {
        int fd;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        fd = open("/dev/null", O_RDONLY);
        if (fd < 0 || dup2(fd, 0) < 0)
            _exit(127);
        fd = open(out_path, oflags, 0600);
        if (fd < 0 || dup2(fd, 1) < 0)
            _exit(127);
        fd = same ? 1 : open(err_path, oflags, 0600);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execve(argv[0], argv, env);
        _exit(127);
    }
    free(env);
    if (pid < 0)
        fprintf(stderr, "daemon: cannot run %s: %s\n", argv[0], strerror(errno));
    return pid;
}

static int
exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* Waits up to ms for pid; returns its exit code, or -2 when still running. */
static int
wait_for(pid_t pid, long ms)
{
    int64_t deadline = kt_mono_ms() + ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return exit_code(status);
        if (r < 0 && errno != EINTR)
            return -1;
        if (kt_mono_ms() >= deadline)
            return -2;
        kt_sleep_ms(5);
    }
}

/* Every reap of a daemon that was started goes through here: an exit the
 * test did not ask for (anything but 0, or the kt_daemon_expect_exit()
 * code) is remembered, and kt_daemon_free() fails the test on it. */
static void
note_exit(struct kt_daemon *d, int code, const char *when)
{
    bool asked = code == 0 || (d->expected_exit != 0 && code == d->expected_exit);

    d->expected_exit = 0;
    if (asked || d->unclean[0] != '\0')
        return;
    if (code > 128)
        snprintf(d->unclean, sizeof(d->unclean), "killed by signal %d %s", code - 128, when);
    else
        snprintf(d->unclean, sizeof(d->unclean), "exit status %d %s", code, when);
}

static bool
ready(struct kt_daemon *d)
{
    struct kt_http_req req = {.url = kt_daemon_admin_url(d, "/readyz"),
                              .timeout_ms = 1000,
                              .ca_file = d->ca_file[0] != '\0' ? d->ca_file : NULL};
    struct kt_http_resp resp;
    bool ok = kt_http_do(&req, &resp) && resp.status == 200;

    kt_http_resp_cleanup(&resp);
    return ok;
}

static void
dump_log(const struct kt_daemon *d)
{
    char *log = kt_daemon_log(d);

    fprintf(stderr, "---- keygate log (%s) ----\n%s---- end of log ----\n", d->log_path, log);
    free(log);
}

/* One attempt: 1 ready, 0 failed, -1 died because a port was taken. */
static int
start_once(struct kt_daemon *d)
{
    const char *bin = keygate_bin();
    char *argv[] = {(char *)bin, "serve", "-c", d->config_path, NULL};
    int64_t deadline = kt_mono_ms() + READY_DEADLINE_MS;

    if (bin == NULL)
        return 0;
    d->pid = spawn(argv, d->log_path, d->log_path, true);
    if (d->pid < 0)
        return 0;
    while (kt_mono_ms() < deadline) {
        int code = wait_for(d->pid, 0);

        if (code != -2) {
            char *log = kt_daemon_log(d);
            bool port_taken = strstr(log, "cannot listen") != NULL;

            free(log);
            d->pid = -1;
            if (port_taken)
                return -1;
            fprintf(stderr, "daemon: keygate serve exited with %d before it was ready\n", code);
            /* A refused config exits 1 or 2, which the test sees as a failed
             * start; a crash is never what a test asked for. */
            if (code < 0 || code > 128)
                note_exit(d, code, "before it was ready");
            return 0;
        }
        if (ready(d))
            return 1;
        kt_sleep_ms(20);
    }
    fprintf(stderr, "daemon: not ready after %ld ms\n", READY_DEADLINE_MS);
    kt_daemon_kill(d);
    snprintf(d->unclean, sizeof(d->unclean), "not ready after %ld ms", READY_DEADLINE_MS);
    return 0;
}

bool
kt_daemon_start(struct kt_daemon *d)
{
    if (d->pid > 0)
        return true;
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        int r = start_once(d);

        if (r == 1)
            return true;
        if (r == 0 || !write_config(d))
            break;
        fprintf(stderr, "daemon: a port was taken; retrying on new ports\n");
    }
    dump_log(d);
    return false;
}

/* Whether a window of a key is worth looking for: a run like "0000000000"
 * (a made-up invalid key) is in any database by chance. */
static bool
varied(const char *w, size_t n)
{
    bool seen[256] = {false};
    int distinct = 0;

    for (size_t i = 0; i < n; i++) {
        if (!seen[(unsigned char)w[i]])
            distinct++;
        seen[(unsigned char)w[i]] = true;
    }
    return distinct >= 6;
}

/* Reads a whole file; NULL when it cannot. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0;

    *len = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        size_t n;

        if (*len + 4096 > cap) {
            char *p = realloc(buf, cap = cap * 2 + 8192);

            if (p == NULL)
                break;
            buf = p;
        }
        n = fread(buf + *len, 1, cap - *len, f);
        *len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    return buf;
}

/* What the leak check reads: every regular file in the daemon's directory
 * whose name has "log" in it (the daemon's stderr and stdout, access logs,
 * rotated ones), and the store, where the audit trail lives (keygate.db and
 * its write-ahead log; no key is ever stored, so no window of one may be
 * there either). */
static bool
scanned_file(const struct kt_daemon *d, const char *name, char *path, size_t cap, bool *is_log)
{
    struct stat st;

    *is_log = strstr(name, "log") != NULL;
    if (!*is_log && strncmp(name, "keygate.db", 10) != 0)
        return false;
    snprintf(path, cap, "%s/%s", d->dir, name);
    /* A FIFO (a test's stalled pipe) would block the read. */
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* One window of a key's hidden characters to look for, and whose it is. */
struct needle {
    char w[LEAK_WINDOW];
    const char *what;
    size_t n;
};

struct leak_scan {
    const char *text, *file;
    size_t len;
    char *why;
    size_t cap;
    bool leaked;
    struct needle *needles;
    size_t nneedles, needle_cap;
};

static void
leak_report(struct leak_scan *ls, const char *hit, const char *what, size_t n)
{
    size_t off = (size_t)(hit - ls->text), from = off > 60 ? off - 60 : 0;

    /* The excerpt shows where; the key itself is cut out of the message. */
    snprintf(ls->why, ls->cap, "%s #%zu found in %s at byte %zu: ...%.*s", what, n, ls->file, off,
             (int)(off - from), ls->text + from);
    ls->leaked = true;
}

/* Adds what key k is looked for by: each varied LEAK_WINDOW of its hidden
 * characters. A value too short to be a key is looked for whole, at once. */
static void
add_needles(struct leak_scan *ls, const char *k, const char *what, size_t n)
{
    size_t klen = strlen(k), hidden_len = KEY_TAIL - KEY_SHOWN_BODY - KEY_SHOWN_LAST;
    const char *hidden;

    if (klen < KEY_TAIL) {
        const char *hit = memmem(ls->text, ls->len, k, klen);

        if (hit != NULL && !ls->leaked)
            leak_report(ls, hit, what, n);
        return;
    }
    hidden = k + klen - KEY_TAIL + KEY_SHOWN_BODY;
    for (size_t i = 0; i + LEAK_WINDOW <= hidden_len; i++) {
        if (!varied(hidden + i, LEAK_WINDOW))
            continue;
        if (ls->nneedles == ls->needle_cap) {
            size_t cap = ls->needle_cap != 0 ? 2 * ls->needle_cap : 64;
            struct needle *grown = realloc(ls->needles, cap * sizeof(*grown));

            if (grown == NULL)
                abort();
            ls->needles = grown;
            ls->needle_cap = cap;
        }
        memcpy(ls->needles[ls->nneedles].w, hidden + i, LEAK_WINDOW);
        ls->needles[ls->nneedles].what = what;
        ls->needles[ls->nneedles].n = n;
        ls->nneedles++;
    }
}

/* kt_http_sent_each() callback: a credential some client of this process sent. */
static bool
collect_sent(const char *cred, size_t n, void *ctx)
{
    add_needles(ctx, cred, "credential (sent by the test)", n + 1);
    return true;
}

static uint32_t
window_hash(const char *w, unsigned shift)
{
    uint64_t a, b = 0;

    _Static_assert(LEAK_WINDOW >= 8 && LEAK_WINDOW <= 16, "window_hash reads 8 + up to 8 bytes");
    memcpy(&a, w, 8);
    memcpy(&b, w + 8, LEAK_WINDOW - 8);
    return (uint32_t)(((a ^ (b * 0xff51afd7ed558ccdULL)) * 0x9e3779b97f4a7c15ULL) >> shift);
}

/* Looks for d's keys and every credential sent in ls->text: every window
 * of every key in a hash table, then one pass over the text (a memmem per
 * window took seconds on a store of 200,000 keys). */
static void
scan_text(const struct kt_daemon *d, struct leak_scan *ls)
{
    unsigned bits = 6, shift;
    uint32_t *slots = NULL;
    size_t nslots;

    ls->nneedles = 0;
    if (ls->text == NULL)
        return;
    for (size_t i = 0; i < d->nkeys; i++)
        add_needles(ls, d->keys[i], "key (created by the test)", i + 1);
    kt_http_sent_each(collect_sent, ls);
    if (ls->leaked || ls->nneedles == 0 || ls->len < LEAK_WINDOW)
        return;
    while (((size_t)1 << bits) < 4 * ls->nneedles)
        bits++;
    nslots = (size_t)1 << bits;
    shift = 64 - bits;
    slots = calloc(nslots, sizeof(*slots)); /* needle index + 1; 0 = empty */
    if (slots == NULL)
        abort();
    for (size_t i = 0; i < ls->nneedles; i++) {
        size_t h = window_hash(ls->needles[i].w, shift);

        while (slots[h] != 0)
            h = (h + 1) & (nslots - 1);
        slots[h] = (uint32_t)(i + 1);
    }
    for (size_t off = 0; off + LEAK_WINDOW <= ls->len && !ls->leaked; off++) {
        const char *at = ls->text + off;

        for (size_t h = window_hash(at, shift); slots[h] != 0; h = (h + 1) & (nslots - 1)) {
            const struct needle *nd = &ls->needles[slots[h] - 1];

            if (memcmp(nd->w, at, LEAK_WINDOW) == 0) {
                leak_report(ls, at, nd->what, nd->n);
                break;
            }
        }
    }
    free(slots);
}

/* "the suite greps every log it produced for the keys it created", and for
 * every credential the test presented, valid or not: the keys the CLI
 * printed for d, and whatever kt_http_* and kt_raw_* sent to anyone in this
 * process (helpers/http.h). Writes what leaked where into why and returns
 * true on a leak. */
static bool
keys_leaked(const struct kt_daemon *d, char *why, size_t cap)
{
    struct leak_scan ls = {.why = why, .cap = cap};
    DIR *dir = opendir(d->dir);
    struct dirent *e;

    if (dir == NULL)
        return false;
    while (!ls.leaked && (e = readdir(dir)) != NULL) {
        char path[600], *text;
        bool is_log;

        if (!scanned_file(d, e->d_name, path, sizeof(path), &is_log))
            continue;
        text = slurp(path, &ls.len);
        ls.text = text;
        ls.file = e->d_name;
        scan_text(d, &ls);
        free(text);
    }
    closedir(dir);
    /* The same store, on PostgreSQL: every row of its database as text (a
     * test that stopped the server has it back before it frees the daemon). */
    if (!ls.leaked && d->pg_db[0] != '\0' && backend_pg != NULL) {
        char *text = kt_pg_dump(backend_pg, d->pg_db, &ls.len);

        ls.text = text;
        ls.file = "the PostgreSQL store";
        scan_text(d, &ls);
        free(text);
    }
    free(ls.needles);
    return ls.leaked;
}

bool
kt_daemon_keys_leaked(const struct kt_daemon *d, char *why, size_t cap)
{
    return keys_leaked(d, why, cap);
}

/* A sanitizer's report in any log of the directory: the daemon (or a
 * process a test started there) hit undefined behaviour, a memory error
 * or a leak, whatever its exit status said. */
static bool
sanitizer_report(const struct kt_daemon *d, char *why, size_t cap)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", "UndefinedBehaviorSanitizer",
                                        "WARNING: ThreadSanitizer"};
    DIR *dir = opendir(d->dir);
    struct dirent *e;
    bool found = false;

    if (dir == NULL)
        return false;
    while (!found && (e = readdir(dir)) != NULL) {
        char path[600], *text;
        bool is_log;
        size_t len;

        if (!scanned_file(d, e->d_name, path, sizeof(path), &is_log) || !is_log)
            continue;
        text = slurp(path, &len);
        for (size_t i = 0; text != NULL && i < sizeof(marks) / sizeof(marks[0]); i++) {
            const char *hit = memmem(text, len, marks[i], strlen(marks[i]));

            if (hit != NULL) {
                size_t off = (size_t)(hit - text);

                snprintf(why, cap, "%s at byte %zu:\n%.*s", e->d_name, off,
                         (int)(len - off > 1500 ? 1500 : len - off), hit);
                found = true;
                break;
            }
        }
        free(text);
    }
    closedir(dir);
    return found;
}

static void
fail_on_leak(const char *why)
{
    /* abort, not fail_msg: most daemons are freed in a group teardown, where
     * cmocka reports a failure but still lets the binary exit 0. */
    fprintf(stderr, "daemon: A KEY LEAKED INTO A LOG: %s\n", why);
    fflush(stderr);
    abort();
}

/* The last bytes of the daemon's log, for a failure message. */
static void
dump_log_tail(const struct kt_daemon *d)
{
    char *log = kt_daemon_log(d);
    size_t len = strlen(log);

    fprintf(stderr, "---- end of keygate log (%s) ----\n%s\n---- end ----\n", d->log_path,
            len > 4000 ? log + len - 4000 : log);
    free(log);
}

int
kt_daemon_stop(struct kt_daemon *d)
{
    int code = stop_process(d);
    char why[512];

    if (code != -1 && keys_leaked(d, why, sizeof(why)))
        fail_on_leak(why);
    return code;
}

static int
stop_process(struct kt_daemon *d)
{
    int code;

    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    code = wait_for(d->pid, STOP_DEADLINE_MS);
    if (code == -2) {
        fprintf(stderr, "daemon: no exit %ld ms after SIGTERM; killing it\n", STOP_DEADLINE_MS);
        kill(d->pid, SIGKILL);
        code = wait_for(d->pid, STOP_DEADLINE_MS);
        if (code >= 0)
            code = 128 + SIGKILL;
        d->expected_exit = 0;
        note_exit(d, code, "(it ignored SIGTERM for 20 s)");
    } else {
        note_exit(d, code, "after SIGTERM");
    }
    d->pid = -1;
    return code;
}

int
kt_daemon_wait(struct kt_daemon *d, long ms)
{
    int code;

    if (d->pid <= 0)
        return -1;
    code = wait_for(d->pid, ms);
    if (code != -2) {
        note_exit(d, code, "(kt_daemon_wait)");
        d->pid = -1;
    }
    return code;
}

void
kt_daemon_kill(struct kt_daemon *d)
{
    int code;

    if (d->pid <= 0)
        return;
    /* Dead already: that exit was not the test's SIGKILL. */
    code = wait_for(d->pid, 0);
    if (code != -2) {
        note_exit(d, code, "before kt_daemon_kill");
        d->pid = -1;
        return;
    }
    kill(d->pid, SIGKILL);
    code = wait_for(d->pid, STOP_DEADLINE_MS);
    d->expected_exit = 128 + SIGKILL;
    note_exit(d, code, "(kt_daemon_kill)");
    d->pid = -1;
}

void
kt_daemon_expect_exit(struct kt_daemon *d, int code)
{
    d->expected_exit = code;
}

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void
kt_daemon_free(struct kt_daemon *d)
{
    const char *keep = getenv("KEYGATE_TEST_KEEP");
    char why[2048], unclean[256];
    bool leaked, sanitized;

    if (d == NULL)
        return;
    if (d->pid > 0)
        stop_process(d);
    leaked = keys_leaked(d, why, sizeof(why));
    sanitized = !leaked && sanitizer_report(d, why, sizeof(why));
    snprintf(unclean, sizeof(unclean), "%s", d->unclean);
    if (unclean[0] != '\0' || sanitized)
        dump_log_tail(d);
    if (keep != NULL && strcmp(keep, "1") == 0)
        fprintf(stderr, "daemon: kept %s\n", d->dir);
    else
        nftw(d->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < d->nkeys; i++) {
        explicit_bzero(d->keys[i], strlen(d->keys[i]));
        free(d->keys[i]);
    }
    free(d->keys);
    free(d->config_text);
    free(d);
    if (leaked)
        fail_on_leak(why);
    /* abort for the reason fail_on_leak() gives. */
    if (sanitized) {
        fprintf(stderr, "daemon: A SANITIZER REPORT IN A LOG: %s\n", why);
        fflush(stderr);
        abort();
    }
    if (unclean[0] != '\0') {
        fprintf(stderr, "daemon: THE DAEMON DID NOT EXIT CLEANLY: %s\n", unclean);
        fflush(stderr);
        abort();
    }
}

bool
kt_daemon_running(struct kt_daemon *d)
{
    int code;

    if (d->pid <= 0)
        return false;
    code = wait_for(d->pid, 0);
    if (code != -2) {
        note_exit(d, code, "by itself");
        d->pid = -1;
        return false;
    }
    return true;
}

pid_t
kt_daemon_pid(const struct kt_daemon *d)
{
    return d->pid;
}

int
kt_daemon_port(const struct kt_daemon *d)
{
    return d->port;
}

int
kt_daemon_admin_port(const struct kt_daemon *d)
{
    return d->admin_port;
}

const char *
kt_daemon_dir(const struct kt_daemon *d)
{
    return d->dir;
}

const char *
kt_daemon_config_path(const struct kt_daemon *d)
{
    return d->config_path;
}

void
kt_daemon_set_tls_ca(struct kt_daemon *d, const char *ca_file)
{
    snprintf(d->ca_file, sizeof(d->ca_file), "%s", ca_file);
}

const char *
kt_daemon_url(struct kt_daemon *d, const char *path)
{
    snprintf(d->url, sizeof(d->url), "%s://127.0.0.1:%d%s",
             d->ca_file[0] != '\0' ? "https" : "http", d->port, path);
    return d->url;
}

const char *
kt_daemon_admin_url(struct kt_daemon *d, const char *path)
{
    snprintf(d->url, sizeof(d->url), "%s://127.0.0.1:%d%s",
             d->ca_file[0] != '\0' ? "https" : "http", d->admin_port, path);
    return d->url;
}

char *
kt_daemon_log(const struct kt_daemon *d)
{
    return read_file(d->log_path);
}

size_t
kt_daemon_log_count(const struct kt_daemon *d, const char *needle)
{
    char *log = kt_daemon_log(d);
    size_t n = 0;

    for (const char *p = log; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(log);
    return n;
}

bool
kt_daemon_wait_log(const struct kt_daemon *d, const char *needle, size_t n, long ms)
{
    int64_t deadline = kt_mono_ms() + ms;

    while (kt_daemon_log_count(d, needle) < n) {
        if (kt_mono_ms() >= deadline)
            return false;
        kt_sleep_ms(20);
    }
    return true;
}

long
kt_daemon_peak_rss_kib(const struct kt_daemon *d)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    if (d->pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* ---- the command line ---- */

static bool remember_key(struct kt_daemon *d, const char *key);

/* Every key a CLI run printed (plain or JSON), so that no log the daemon
 * writes may hold it, whichever way the test made it. */
static void
remember_printed_keys(struct kt_daemon *d, const char *text)
{
    char tok[256];

    for (const char *p = text; p != NULL && *p != '\0';) {
        size_t n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");

        if (n > 0 && n < sizeof(tok)) {
            memcpy(tok, p, n);
            tok[n] = '\0';
            if (kg_keyfmt_check(tok, n))
                remember_key(d, tok);
        }
        p += n > 0 ? n : 1;
    }
}

bool
kt_daemon_cli(struct kt_daemon *d, struct kt_cli_result *out, const char *const *args)
{
    const char *bin = keygate_bin();
    char *argv[MAX_ARGS + 4];
    char out_path[320], err_path[320];
    size_t n = 0;
    pid_t pid;

    memset(out, 0, sizeof(*out));
    out->exit_code = -1;
    if (bin == NULL)
        return false;
    argv[n++] = (char *)bin;
    for (size_t i = 0; args[i] != NULL && n < MAX_ARGS; i++)
        argv[n++] = (char *)args[i];
    argv[n++] = "-c";
    argv[n++] = d->config_path;
    argv[n] = NULL;
    d->cli_runs++;
    snprintf(out_path, sizeof(out_path), "%s/cli-%d.out", d->dir, d->cli_runs);
    snprintf(err_path, sizeof(err_path), "%s/cli-%d.err", d->dir, d->cli_runs);
    pid = spawn(argv, out_path, err_path, false);
    if (pid < 0)
        return false;
    out->exit_code = wait_for(pid, CLI_DEADLINE_MS);
    if (out->exit_code == -2) {
        fprintf(stderr, "daemon: the CLI did not finish in %ld ms\n", CLI_DEADLINE_MS);
        kill(pid, SIGKILL);
        wait_for(pid, CLI_DEADLINE_MS);
        out->exit_code = 128 + SIGKILL;
    }
    out->out = read_file(out_path);
    out->err = read_file(err_path);
    remember_printed_keys(d, out->out);
    /* The key is in this file: do not leave it behind longer than needed. */
    unlink(out_path);
    unlink(err_path);
    return true;
}

void
kt_cli_result_cleanup(struct kt_cli_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

json_t *
kt_daemon_cli_json(struct kt_daemon *d, const char *const *args)
{
    struct kt_cli_result r;
    json_error_t jerr;
    json_t *o;

    if (!kt_daemon_cli(d, &r, args) || r.exit_code != 0)
        fail_msg("keygate %s %s should exit 0: %s", args[0], args[1], r.err != NULL ? r.err : "");
    o = json_loads(r.out, 0, &jerr);
    kt_cli_result_cleanup(&r);
    if (o == NULL)
        fail_msg("keygate %s %s should print JSON: %s", args[0], args[1], jerr.text);
    return o;
}

static bool
remember_key(struct kt_daemon *d, const char *key)
{
    char **grown = realloc(d->keys, (d->nkeys + 1) * sizeof(*grown));

    if (grown == NULL)
        return false;
    d->keys = grown;
    d->keys[d->nkeys] = strdup(key);
    if (d->keys[d->nkeys] == NULL)
        return false;
    d->nkeys++;
    return true;
}

bool
kt_daemon_key_cli(struct kt_daemon *d, const char *const *args, struct kt_key *out)
{
    struct kt_cli_result r;
    json_error_t jerr;
    json_t *o = NULL;
    const char *id, *key;
    bool ok = false;

    memset(out, 0, sizeof(*out));
    if (!kt_daemon_cli(d, &r, args))
        goto cleanup;
    if (r.exit_code != 0) {
        fprintf(stderr, "daemon: keygate %s %s exited %d: %s", args[0], args[1], r.exit_code,
                r.err);
        goto cleanup;
    }
    o = json_loads(r.out, 0, &jerr);
    id = json_string_value(json_object_get(o, "id"));
    key = json_string_value(json_object_get(o, "key"));
    if (id == NULL || key == NULL) {
        fprintf(stderr, "daemon: keygate %s %s printed no id and key: %s\n", args[0], args[1],
                r.out);
        goto cleanup;
    }
    out->id = strdup(id);
    out->key = strdup(key);
    ok = out->id != NULL && out->key != NULL && remember_key(d, key);

cleanup:
    json_decref(o);
    kt_cli_result_cleanup(&r);
    if (!ok)
        kt_key_cleanup(out);
    return ok;
}

bool
kt_daemon_create_key(struct kt_daemon *d, const char *name, const char *scopes, const char *expires,
                     struct kt_key *out)
{
    const char *args[12] = {"keys", "create", "--name", name, "--json"};
    size_t n = 5;

    if (scopes != NULL) {
        args[n++] = "--scopes";
        args[n++] = scopes;
    }
    if (expires != NULL) {
        args[n++] = "--expires";
        args[n++] = expires;
    }
    args[n] = NULL;
    return kt_daemon_key_cli(d, args, out);
}

bool
kt_daemon_rotate_key(struct kt_daemon *d, const char *id, const char *grace, struct kt_key *out)
{
    const char *args[8] = {"keys", "rotate", id, "--json"};
    size_t n = 4;

    if (grace != NULL) {
        args[n++] = "--grace";
        args[n++] = grace;
    }
    args[n] = NULL;
    return kt_daemon_key_cli(d, args, out);
}

bool
kt_daemon_revoke_key(struct kt_daemon *d, const char *id)
{
    const char *args[] = {"keys", "revoke", id, NULL};
    struct kt_cli_result r;
    bool ok = kt_daemon_cli(d, &r, args) && r.exit_code == 0;

    if (!ok)
        fprintf(stderr, "daemon: keygate keys revoke %s exited %d: %s", id, r.exit_code,
                r.err != NULL ? r.err : "");
    kt_cli_result_cleanup(&r);
    return ok;
}

void
kt_daemon_remember_key(struct kt_daemon *d, const char *key)
{
    if (d != NULL && key != NULL && key[0] != '\0' && !remember_key(d, key))
        fail_msg("daemon: out of memory remembering a key");
}

void
kt_key_cleanup(struct kt_key *k)
{
    free(k->id);
    free(k->key);
    k->id = NULL;
    k->key = NULL;
}

/* ---- the store backend ---- */

int
kt_daemon_backend_start(void)
{
    const char *backend = getenv("KEYGATE_TEST_DATABASE");

    if (backend == NULL || strcmp(backend, "postgres") != 0)
        return 0;
    return kt_pg_start(&backend_pg);
}

void
kt_daemon_backend_stop(void)
{
    kt_pg_free(backend_pg);
    backend_pg = NULL;
}

struct kt_pg *
kt_daemon_backend_pg(void)
{
    return backend_pg;
}

const char *
kt_daemon_database(const struct kt_daemon *d)
{
    return d->database;
}

/* The first column of the first row, or the rows changed: kt_pg_int()'s
 * answer, from SQLite. */
static long long
sqlite_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -12345;
    int rc;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        goto cleanup;
    sqlite3_busy_timeout(db, 10000);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        goto cleanup;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE && sqlite3_column_count(st) == 0)
        v = sqlite3_changes(db);
cleanup:
    if (v == -12345)
        fprintf(stderr, "daemon: %s: %s\n", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

long long
kt_daemon_sql(const struct kt_daemon *d, const char *sql)
{
    if (d->pg_db[0] != '\0')
        return kt_pg_int(backend_pg, d->pg_db, sql);
    return sqlite_int(d->database, sql);
}
