/* tests/integration/test_accesslog_stall.c - access_log stdout into a pipe
 * nobody reads: the daemon keeps answering, SIGHUP to another destination
 * completes (the new file gets the lines after it) and SIGTERM exits 0,
 * each within a few seconds.
 *
 * The daemon is started here rather than by kt_daemon_start(), which puts
 * stdout and stderr in one file: here stdout is the pipe and stderr a log
 * file in the daemon's directory (so kt_daemon_free() still greps it for
 * keys). kt_daemon_new() makes the directory, config and ports.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers/daemon.h"
#include "helpers/http.h"

#define DEADLINE_MS 20000L

extern char **environ;

/* fork + execve `$KEYGATE_BIN serve -c config` with stdout on out_fd and
 * stderr appended to err_path; KEYGATE_* variables left out, as the
 * helpers do. Killed with the thread that started it. */
static pid_t
spawn_serve_fds(const char *config, int out_fd, const char *err_path, int err_fd)
{
    const char *bin = getenv("KEYGATE_BIN");
    char *argv[] = {(char *)bin, "serve", "-c", (char *)config, NULL};
    char *env[256];
    size_t k = 0;
    pid_t parent = getpid(), pid;

    if (bin == NULL)
        return -1;
    for (size_t i = 0; environ[i] != NULL && k < 255; i++)
        if (strncmp(environ[i], "KEYGATE_", 8) != 0)
            env[k++] = environ[i];
    env[k] = NULL;
    pid = fork();
    if (pid == 0) {
        int fd;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        fd = open("/dev/null", O_RDONLY);
        if (fd < 0 || dup2(fd, 0) < 0 || dup2(out_fd, 1) < 0)
            _exit(127);
        fd = err_fd >= 0 ? err_fd : open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execve(argv[0], argv, env);
        _exit(127);
    }
    return pid;
}

static pid_t
spawn_serve(const char *config, int out_fd, const char *err_path)
{
    return spawn_serve_fds(config, out_fd, err_path, -1);
}

/* Exit code, 128+N when killed by signal N, -2 when still running at ms. */
static int
wait_exit(pid_t pid, long ms)
{
    int64_t deadline = kt_mono_ms() + ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (kt_mono_ms() >= deadline)
            return -2;
        kt_sleep_ms(10);
    }
}

static int
get_status(const char *url, const char *rid)
{
    char rh[128];
    const char *hdrs[] = {rh, NULL};
    struct kt_http_resp r;
    int status = -1;

    snprintf(rh, sizeof(rh), "X-Request-Id: %s", rid);
    if (kt_http_get_key(url, NULL, hdrs, &r))
        status = r.status;
    kt_http_resp_cleanup(&r);
    return status;
}

static bool
file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    bool found = false;

    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* Replaces "access_log stdout" in the config file with access_log to. */
static void
switch_config(const char *config, const char *to)
{
    FILE *f = fopen(config, "r");
    char text[8192], *at;
    size_t n;

    assert_non_null(f);
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    at = strstr(text, "access_log stdout\n");
    assert_non_null(at);
    f = fopen(config, "w");
    assert_non_null(f);
    fprintf(f, "%.*saccess_log \"%s\"\n%s", (int)(at - text), text, to,
            at + strlen("access_log stdout\n"));
    fclose(f);
}

static void
test_a_stdout_nobody_reads_holds_up_neither_sighup_nor_sigterm(void **state)
{
    struct kt_daemon *d;
    char err_path[512], after[512], rid[64];
    int p[2];
    pid_t pid;
    int64_t deadline, t0;
    bool ready = false, moved = false;

    (void)state;
    kt_http_global_init();
    d = kt_daemon_new("upstream http://127.0.0.1:9\naccess_log stdout\n");
    assert_non_null(d);
    snprintf(err_path, sizeof(err_path), "%s/stderr.log", kt_daemon_dir(d));
    snprintf(after, sizeof(after), "%s/after-hup.log", kt_daemon_dir(d));
    assert_int_equal(pipe(p), 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096); /* full sooner; never read */
    pid = spawn_serve(kt_daemon_config_path(d), p[1], err_path);
    assert_true(pid > 0);
    close(p[1]);

    for (deadline = kt_mono_ms() + DEADLINE_MS; !ready && kt_mono_ms() < deadline;) {
        struct kt_http_req req = {.url = kt_daemon_admin_url(d, "/readyz"), .timeout_ms = 1000};
        struct kt_http_resp resp;

        ready = kt_http_do(&req, &resp) && resp.status == 200;
        kt_http_resp_cleanup(&resp);
        if (!ready)
            kt_sleep_ms(50);
    }
    assert_true(ready);

    /* Far more lines than the pipe holds; requests are answered all along. */
    for (int i = 0; i < 200; i++) {
        snprintf(rid, sizeof(rid), "stall-%d", i);
        assert_int_equal(get_status(kt_daemon_url(d, "/v1/items"), rid), 401);
    }

    /* SIGHUP to a file: the reload completes and new lines land there. */
    switch_config(kt_daemon_config_path(d), after);
    t0 = kt_mono_ms();
    assert_int_equal(kill(pid, SIGHUP), 0);
    for (deadline = kt_mono_ms() + DEADLINE_MS; !moved && kt_mono_ms() < deadline;) {
        assert_int_equal(get_status(kt_daemon_url(d, "/v1/items"), "after-hup"), 401);
        moved = file_has(after, "\"after-hup\"");
        if (!moved)
            kt_sleep_ms(100);
    }
    assert_true(moved);
    print_message("SIGHUP to a file took effect after %lld ms\n", (long long)(kt_mono_ms() - t0));
    assert_true(kt_mono_ms() - t0 < 10000);

    /* SIGTERM with the old destination still stuck: exit 0, soon. */
    t0 = kt_mono_ms();
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid, DEADLINE_MS), 0);
    print_message("SIGTERM exited after %lld ms\n", (long long)(kt_mono_ms() - t0));
    assert_true(kt_mono_ms() - t0 < 10000);
    close(p[0]);
    kt_daemon_free(d);
    kt_http_global_cleanup();
}

/* The daemon's own log and the access log both on a stderr nobody reads:
 * neither the main thread's lines nor the writer may hold up SIGTERM. */
static void
test_a_stderr_nobody_reads_does_not_hold_up_sigterm(void **state)
{
    struct kt_daemon *d;
    char unused[512], rid[64];
    int p[2], devnull;
    pid_t pid;
    int64_t deadline, t0;
    bool ready = false;

    (void)state;
    kt_http_global_init();
    d = kt_daemon_new("upstream http://127.0.0.1:9\naccess_log stderr\nlog_level debug\n");
    assert_non_null(d);
    snprintf(unused, sizeof(unused), "%s/unused.log", kt_daemon_dir(d));
    assert_int_equal(pipe(p), 0);
    /* Full to the last byte before the daemon starts, and never read: any
     * blocking write(2) to it would hang for ever. */
    {
        int fl = fcntl(p[1], F_GETFL);
        char junk[4096];

        memset(junk, 'x', sizeof(junk));
        assert_int_equal(fcntl(p[1], F_SETFL, fl | O_NONBLOCK), 0);
        while (write(p[1], junk, sizeof(junk)) > 0 || errno == EINTR)
            ;
        while (write(p[1], junk, 1) > 0)
            ;
        assert_int_equal(errno, EAGAIN);
        assert_int_equal(fcntl(p[1], F_SETFL, fl), 0);
    }
    devnull = open("/dev/null", O_WRONLY);
    assert_true(devnull >= 0);
    pid = spawn_serve_fds(kt_daemon_config_path(d), devnull, unused, p[1]);
    assert_true(pid > 0);
    close(p[1]);
    close(devnull);
    for (deadline = kt_mono_ms() + DEADLINE_MS; !ready && kt_mono_ms() < deadline;) {
        struct kt_http_req req = {.url = kt_daemon_admin_url(d, "/readyz"), .timeout_ms = 1000};
        struct kt_http_resp resp;

        ready = kt_http_do(&req, &resp) && resp.status == 200;
        kt_http_resp_cleanup(&resp);
        if (!ready)
            kt_sleep_ms(50);
    }
    assert_true(ready);
    for (int i = 0; i < 200; i++) {
        snprintf(rid, sizeof(rid), "stall-%d", i);
        assert_int_equal(get_status(kt_daemon_url(d, "/v1/items"), rid), 401);
    }
    t0 = kt_mono_ms();
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid, DEADLINE_MS), 0);
    print_message("SIGTERM with stderr stalled exited after %lld ms\n",
                  (long long)(kt_mono_ms() - t0));
    assert_true(kt_mono_ms() - t0 < 10000);
    close(p[0]);
    kt_daemon_free(d);
    kt_http_global_cleanup();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_stdout_nobody_reads_holds_up_neither_sighup_nor_sigterm),
        cmocka_unit_test(test_a_stderr_nobody_reads_does_not_hold_up_sigterm),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
