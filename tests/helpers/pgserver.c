/* helpers/pgserver.c - see pgserver.h. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "helpers/pgserver.h"

struct kt_pg {
    char bindir[128];
    char dir[64];
    uid_t uid; /* the server's user; 0 = ours */
    gid_t gid;
    bool running;
};

static bool
required(void)
{
    const char *v = getenv("KEYGATE_REQUIRE_POSTGRES");

    return v != NULL && strcmp(v, "1") == 0;
}

/* The newest /usr/lib/postgresql/N/bin with an initdb (or
 * KEYGATE_PG_BINDIR). */
static bool
find_bindir(char *out, size_t cap)
{
    const char *env = getenv("KEYGATE_PG_BINDIR");
    glob_t g;
    bool ok = false;

    if (env != NULL && env[0] != '\0') {
        snprintf(out, cap, "%s", env);
        return true;
    }
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0)
        return false;
    if (g.gl_pathc > 0) {
        const char *last = g.gl_pathv[g.gl_pathc - 1];
        size_t n = strlen(last) - strlen("/initdb");

        snprintf(out, cap, "%.*s", (int)n, last);
        ok = true;
    }
    globfree(&g);
    return ok;
}

/* Runs argv (as the server's user), stdout and stderr appended to the log
 * in the directory; waits at most timeout_s. Returns the exit status or -1. */
static int
run(struct kt_pg *pg, char *const argv[], int timeout_s)
{
    char log[128];
    pid_t pid;
    int status = 0;
    time_t deadline = time(NULL) + timeout_s;

    snprintf(log, sizeof(log), "%s/tool.log", pg->dir);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (pg->uid != 0 &&
            (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (time(NULL) > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(20000);
    }
}

static void
dump_log(struct kt_pg *pg, const char *name)
{
    char path[128], line[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", pg->dir, name);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL)
        fprintf(stderr, "  pg %s: %s", name, line);
    fclose(f);
}

static int
pg_ctl_start(struct kt_pg *pg)
{
    char tool[192], data[96], log[96], opts[256];
    char *argv[] = {tool, "-D", data, "-l", log, "-w", "-t", "30", "-o", opts, "start", NULL};

    snprintf(tool, sizeof(tool), "%s/pg_ctl", pg->bindir);
    snprintf(data, sizeof(data), "%s/data", pg->dir);
    snprintf(log, sizeof(log), "%s/server.log", pg->dir);
    /* max_connections: three daemons with a handful of connections each,
     * and the CLI, with room to spare. */
    snprintf(opts, sizeof(opts),
             "-k %s -c listen_addresses='' -c fsync=off -c full_page_writes=off"
             " -c max_connections=100 -c shared_buffers=16MB",
             pg->dir);
    if (run(pg, argv, 40) != 0) {
        fprintf(stderr, "pgserver: pg_ctl start failed\n");
        dump_log(pg, "tool.log");
        dump_log(pg, "server.log");
        return -1;
    }
    pg->running = true;
    return 0;
}

int
kt_pg_start(struct kt_pg **out)
{
    struct kt_pg *pg = calloc(1, sizeof(*pg));
    char tool[192], data[96];
    char *argv[] = {tool,    "-D", data,   "-U",        "keygate",    "-A",
                    "trust", "-E", "UTF8", "--no-sync", "--locale=C", NULL};

    *out = NULL;
    if (pg == NULL)
        return -1;
    if (!find_bindir(pg->bindir, sizeof(pg->bindir))) {
        free(pg);
        fprintf(stderr, "pgserver: initdb not found (apt-get install postgresql-15)%s\n",
                required() ? "; KEYGATE_REQUIRE_POSTGRES=1: failing" : ": skipping");
        return required() ? -1 : KT_PG_SKIP;
    }
    snprintf(pg->dir, sizeof(pg->dir), "/tmp/kg-pg-XXXXXX");
    if (mkdtemp(pg->dir) == NULL) {
        free(pg);
        return -1;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");

        if (pw == NULL || chown(pg->dir, pw->pw_uid, pw->pw_gid) != 0) {
            fprintf(stderr, "pgserver: running as root and cannot hand %s to nobody\n", pg->dir);
            kt_pg_free(pg);
            return -1;
        }
        pg->uid = pw->pw_uid;
        pg->gid = pw->pw_gid;
    }
    snprintf(tool, sizeof(tool), "%s/initdb", pg->bindir);
    snprintf(data, sizeof(data), "%s/data", pg->dir);
    if (run(pg, argv, 120) != 0) {
        fprintf(stderr, "pgserver: initdb failed\n");
        dump_log(pg, "tool.log");
        kt_pg_free(pg);
        return -1;
    }
    if (pg_ctl_start(pg) != 0) {
        kt_pg_free(pg);
        return -1;
    }
    *out = pg;
    return 0;
}

static PGconn *
connect_db(struct kt_pg *pg, const char *name)
{
    const char *const keys[] = {"host", "user", "dbname", "connect_timeout", NULL};
    const char *const vals[] = {pg->dir, "keygate", name != NULL ? name : "postgres", "5", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);

    if (c != NULL && PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pgserver: connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

int
kt_pg_createdb(struct kt_pg *pg, const char *name, char *url, size_t cap)
{
    PGconn *c = connect_db(pg, NULL);
    char sql[160];
    PGresult *res;
    int rc = -1;

    if (c == NULL)
        return -1;
    /* Names are the test's own, [a-z0-9_]. */
    snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\"", name);
    res = PQexec(c, sql);
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        snprintf(url, cap, "postgresql:///%s?host=%s&user=keygate", name, pg->dir);
        rc = 0;
    } else {
        fprintf(stderr, "pgserver: %s: %s", sql, PQerrorMessage(c));
    }
    PQclear(res);
    PQfinish(c);
    return rc;
}

long long
kt_pg_int(struct kt_pg *pg, const char *name, const char *sql)
{
    PGconn *c = connect_db(pg, name);
    long long v = -12345;
    PGresult *res;

    if (c == NULL)
        return v;
    res = PQexec(c, sql);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
        const char *s = PQgetvalue(res, 0, 0);

        v = strcmp(s, "t") == 0 ? 1 : strcmp(s, "f") == 0 ? 0 : strtoll(s, NULL, 10);
    } else if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        v = strtoll(PQcmdTuples(res), NULL, 10);
    } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "pgserver: %s: %s", sql, PQerrorMessage(c));
    }
    PQclear(res);
    PQfinish(c);
    return v;
}

/* Appends text to the growing buffer *buf; false when out of memory. */
static bool
append(char **buf, size_t *len, size_t *cap, const char *text)
{
    size_t n = strlen(text);

    if (*len + n + 2 > *cap) {
        size_t want = (*len + n + 2) * 2;
        char *p = realloc(*buf, want);

        if (p == NULL)
            return false;
        *buf = p;
        *cap = want;
    }
    memcpy(*buf + *len, text, n);
    *len += n;
    (*buf)[(*len)++] = '\n';
    (*buf)[*len] = '\0';
    return true;
}

char *
kt_pg_dump(struct kt_pg *pg, const char *name, size_t *len)
{
    PGconn *c = connect_db(pg, name);
    PGresult *tables = NULL;
    char *buf = NULL;
    size_t cap = 0;
    bool ok = false;

    *len = 0;
    if (c == NULL)
        return NULL;
    tables = PQexec(c, "SELECT quote_ident(table_name) FROM information_schema.tables"
                       " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                       " ORDER BY 1");
    if (PQresultStatus(tables) != PGRES_TUPLES_OK)
        goto cleanup;
    ok = append(&buf, len, &cap, "");
    for (int t = 0; ok && t < PQntuples(tables); t++) {
        const char *table = PQgetvalue(tables, t, 0);
        char sql[160];
        PGresult *rows;

        snprintf(sql, sizeof(sql), "SELECT '%s: ' || r::text FROM %s r", table, table);
        rows = PQexec(c, sql);
        ok = PQresultStatus(rows) == PGRES_TUPLES_OK;
        for (int i = 0; ok && i < PQntuples(rows); i++)
            ok = append(&buf, len, &cap, PQgetvalue(rows, i, 0));
        PQclear(rows);
    }
cleanup:
    if (!ok) {
        fprintf(stderr, "pgserver: dumping %s: %s", name, PQerrorMessage(c));
        free(buf);
        buf = NULL;
        *len = 0;
    }
    PQclear(tables);
    PQfinish(c);
    return buf;
}

int
kt_pg_stop(struct kt_pg *pg, const char *mode)
{
    char tool[192], data[96], m[16];
    char *argv[] = {tool, "-D", data, "-m", m, "-w", "-t", "30", "stop", NULL};

    if (!pg->running)
        return 0;
    snprintf(tool, sizeof(tool), "%s/pg_ctl", pg->bindir);
    snprintf(data, sizeof(data), "%s/data", pg->dir);
    snprintf(m, sizeof(m), "%s", mode);
    if (run(pg, argv, 40) != 0)
        return -1;
    pg->running = false;
    return 0;
}

int
kt_pg_restart(struct kt_pg *pg)
{
    return pg->running ? 0 : pg_ctl_start(pg);
}

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void
kt_pg_free(struct kt_pg *pg)
{
    if (pg == NULL)
        return;
    kt_pg_stop(pg, "immediate");
    if (pg->dir[0] != '\0' && getenv("KEYGATE_TEST_KEEP") == NULL)
        nftw(pg->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(pg);
}
