/* helpers/redis.c - a redis-server on a loopback port for the shared-limit
 * tests (helpers/redis.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/redis.h"

extern char **environ;

struct kt_redis {
    char dir[256];
    char url[64];
    int port;
    pid_t pid;
    bool paused;
};

const char *
kt_redis_binary(void)
{
    static char found[512];
    const char *env = getenv("KEYGATE_REDIS_SERVER");
    const char *path = getenv("PATH");

    if (env != NULL && env[0] != '\0')
        return access(env, X_OK) == 0 ? env : NULL;
    while (path != NULL && *path != '\0') {
        size_t n = strcspn(path, ":");

        snprintf(found, sizeof(found), "%.*s/redis-server", (int)n, path);
        if (n > 0 && access(found, X_OK) == 0)
            return found;
        path += n;
        if (*path == ':')
            path++;
    }
    return access("/usr/bin/redis-server", X_OK) == 0 ? "/usr/bin/redis-server" : NULL;
}

static int
connect_port(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

bool
kt_redis_command(struct kt_redis *r, const char *cmd, char *reply, size_t cap)
{
    char out[1024], in[4096];
    const char *words[16];
    size_t nwords = 0, len = 0, got = 0;
    char copy[512];
    int fd;
    int64_t deadline = kt_mono_ms() + 2000;
    bool ok = false;

    snprintf(copy, sizeof(copy), "%s", cmd);
    for (char *p = strtok(copy, " "); p != NULL && nwords < 16; p = strtok(NULL, " "))
        words[nwords++] = p;
    len = (size_t)snprintf(out, sizeof(out), "*%zu\r\n", nwords);
    for (size_t i = 0; i < nwords && len < sizeof(out); i++)
        len += (size_t)snprintf(out + len, sizeof(out) - len, "$%zu\r\n%s\r\n", strlen(words[i]),
                                words[i]);
    fd = connect_port(r->port);
    if (fd < 0)
        return false;
    if (write(fd, out, len) != (ssize_t)len)
        goto done;
    while (got < sizeof(in) - 1 && kt_mono_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 100) <= 0)
            continue;
        n = read(fd, in + got, sizeof(in) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        in[got] = '\0';
        if (strstr(in, "\r\n") != NULL) {
            ok = true;
            break;
        }
    }
    if (ok && reply != NULL)
        snprintf(reply, cap, "%.*s", (int)strcspn(in, "\r\n"), in);
done:
    close(fd);
    return ok;
}

static bool
launch(struct kt_redis *r)
{
    const char *bin = kt_redis_binary();
    char port[16], logfile[300];
    pid_t parent = getpid();
    int64_t deadline;

    if (bin == NULL)
        return false;
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", r->dir);
    {
        char *argv[] = {
            (char *)bin, "--port",      port, "--bind",           "127.0.0.1", "--dir",
            r->dir,      "--save",      "",   "--appendonly",     "no",        "--logfile",
            logfile,     "--daemonize", "no", "--protected-mode", "yes",       NULL};

        r->pid = fork();
        if (r->pid < 0)
            return false;
        if (r->pid == 0) {
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
                _exit(127);
            execve(argv[0], argv, environ);
            _exit(127);
        }
    }
    r->paused = false;
    deadline = kt_mono_ms() + 10000;
    while (kt_mono_ms() < deadline) {
        char reply[64] = "";
        int st;

        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = -1;
            fprintf(stderr, "redis: redis-server exited at start (see %s)\n", logfile);
            return false;
        }
        if (kt_redis_command(r, "PING", reply, sizeof(reply)) && strcmp(reply, "+PONG") == 0)
            return true;
        kt_sleep_ms(20);
    }
    fprintf(stderr, "redis: no PONG within 10 s\n");
    kt_redis_stop(r);
    return false;
}

struct kt_redis *
kt_redis_start(void)
{
    struct kt_redis *r = calloc(1, sizeof(*r));
    const char *tmp = getenv("TMPDIR");

    if (r == NULL)
        return NULL;
    r->pid = -1;
    snprintf(r->dir, sizeof(r->dir), "%s/keygate-redis-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(r->dir) == NULL) {
        fprintf(stderr, "redis: mkdtemp: %s\n", strerror(errno));
        free(r);
        return NULL;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        r->port = kt_daemon_free_port();
        snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d/0", r->port);
        if (r->port != 0 && launch(r))
            return r;
    }
    kt_redis_free(r);
    return NULL;
}

const char *
kt_redis_url(const struct kt_redis *r)
{
    return r->url;
}

int
kt_redis_port(const struct kt_redis *r)
{
    return r->port;
}

void
kt_redis_pause(struct kt_redis *r)
{
    if (r->pid > 0 && kill(r->pid, SIGSTOP) == 0)
        r->paused = true;
}

void
kt_redis_resume(struct kt_redis *r)
{
    if (r->pid > 0 && kill(r->pid, SIGCONT) == 0)
        r->paused = false;
}

void
kt_redis_stop(struct kt_redis *r)
{
    int64_t deadline;
    int st;

    if (r == NULL || r->pid <= 0)
        return;
    kill(r->pid, SIGTERM);
    if (r->paused)
        kill(r->pid, SIGCONT);
    r->paused = false;
    deadline = kt_mono_ms() + 5000;
    while (kt_mono_ms() < deadline) {
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = -1;
            return;
        }
        kt_sleep_ms(10);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, &st, 0);
    r->pid = -1;
}

bool
kt_redis_restart(struct kt_redis *r)
{
    kt_redis_stop(r);
    return launch(r);
}

void
kt_redis_free(struct kt_redis *r)
{
    char path[320];

    if (r == NULL)
        return;
    kt_redis_stop(r);
    if (getenv("KEYGATE_TEST_KEEP") == NULL) {
        snprintf(path, sizeof(path), "%s/redis.log", r->dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/dump.rdb", r->dir);
        unlink(path);
        rmdir(r->dir);
    }
    free(r);
}
