/* tests/integration/test_cli.c - the real `keygate` binary (KEYGATE_BIN),
 * run with posix_spawn in a temporary directory that holds its config,
 * database and secret (KEYGATE_CONFIG, KEYGATE_DATABASE,
 * KEYGATE_SECRET_FILE). Each run's stdout, stderr and exit status are
 * checked; every full key a test sees is remembered so the last test can
 * make sure none of them ever reached the database files.
 *
 * The tests share one database and run in order. With
 * KEYGATE_TEST_DATABASE=postgres (CTest: integration_test_cli_postgres)
 * that database is on a private PostgreSQL server (tests/helpers/pgserver.c)
 * and the last test reads its rows instead of the files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "helpers/pgserver.h"
#include "keygate/keyfmt.h"

extern char **environ;

#define PREFIX "kgcli_"
#define MAX_KEYS 64
#define MAX_ARGS 24
#define BURST_WANT "keygate: keys create: --burst wants a number from 1 to 1000000000\n"
#define BURST0_WANT                                                                                \
    "keygate: keys update: --burst wants 0 (the default) or a number from 1 to 1000000000\n"
#define CREDITS_WANT "--credits wants a number from 0 to 1000000000\n"
#define CREDITS_OR_UNLIMITED "--credits wants a number from 0 to 1000000000 or unlimited\n"

static char dir[64];
static char db_path[256]; /* a file, or a PostgreSQL URI */
static struct kt_pg *pg;  /* the server, on PostgreSQL */
#define PG_DB "cli"
static char secret_path[128];
static char conf_path[128];
static const char *bin;

/* Every full key any test was shown, for the last test's search. */
static char *seen_keys[MAX_KEYS];
static size_t nseen;

struct run {
    int status; /* exit status, or 128 + signal */
    char *out;
    char *err;
};

static void
run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

static char *
slurp(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;

    if (f == NULL) {
        if (len_out != NULL)
            *len_out = 0;
        return NULL;
    }
    for (;;) {
        size_t n;

        if (cap - len < 4096) {
            cap = cap * 2 + 8192;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return buf;
}

static void
spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* The environment for a child: ours, with each "NAME=value" of over
 * replacing or adding NAME. */
static char **
child_env(const char *const *over)
{
    size_t n = 0, nover = 0, k = 0;
    char **env;

    while (environ[n] != NULL)
        n++;
    while (over != NULL && over[nover] != NULL)
        nover++;
    env = calloc(n + nover + 1, sizeof(*env));
    assert_non_null(env);
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;

        for (size_t j = 0; j < nover && !replaced; j++) {
            size_t len = strcspn(over[j], "=") + 1;

            replaced = strncmp(environ[i], over[j], len) == 0;
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < nover; j++)
        env[k++] = (char *)over[j];
    return env;
}

/* Runs keygate with args (NULL-terminated) and the environment overrides. */
static struct run
run_argv(const char *const *over, const char *const *args)
{
    char out_path[128], err_path[128];
    const char *argv[MAX_ARGS + 2];
    posix_spawn_file_actions_t fa;
    struct run r = {0};
    char **env = child_env(over);
    size_t n = 0;
    pid_t pid;
    int ws;

    argv[n++] = bin;
    while (args[n - 1] != NULL) {
        assert_true(n <= MAX_ARGS);
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    snprintf(out_path, sizeof(out_path), "%s/stdout", dir);
    snprintf(err_path, sizeof(err_path), "%s/stderr", dir);
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (posix_spawn(&pid, bin, &fa, NULL, (char *const *)argv, env) != 0)
        fail_msg("cannot run %s: %s", bin, strerror(errno));
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    while (waitpid(pid, &ws, 0) < 0)
        assert_int_equal(errno, EINTR);
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    r.out = slurp(out_path, NULL);
    r.err = slurp(err_path, NULL);
    assert_non_null(r.out);
    assert_non_null(r.err);
    return r;
}

#define KG(...) run_argv(NULL, (const char *const[]){__VA_ARGS__, NULL})
#define KG_ENV(over, ...) run_argv((over), (const char *const[]){__VA_ARGS__, NULL})

static size_t
count_lines(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* The last line of s, without its newline, copied into out. */
static void
last_line(const char *s, char *out, size_t outlen)
{
    size_t len = strlen(s);
    const char *start;

    while (len > 0 && s[len - 1] == '\n')
        len--;
    start = s + len;
    while (start > s && start[-1] != '\n')
        start--;
    assert_true((size_t)(s + len - start) < outlen);
    memcpy(out, start, (size_t)(s + len - start));
    out[s + len - start] = '\0';
}

static void
remember_key(const char *key)
{
    assert_true(nseen < MAX_KEYS);
    seen_keys[nseen] = strdup(key);
    assert_non_null(seen_keys[nseen]);
    nseen++;
}

/* Fails if text holds any full key seen so far. The message names the
 * key's id-free position only: a key never goes into a failure message. */
static void
assert_no_key_in(const char *what, const char *text, size_t len)
{
    for (size_t i = 0; i < nseen; i++) {
        if (memmem(text, len, seen_keys[i], strlen(seen_keys[i])) != NULL)
            fail_msg("%s should never contain a full key, but holds key #%zu", what, i);
    }
}

/* Expects exactly one stderr line, starting with "keygate: " and holding want. */
static void
assert_one_error_line(const struct run *r, const char *want)
{
    if (count_lines(r->err) != 1 || strncmp(r->err, "keygate: ", 9) != 0)
        fail_msg("expected one \"keygate: \" line on stderr, got: %s", r->err);
    if (want != NULL && strstr(r->err, want) == NULL)
        fail_msg("stderr should mention \"%s\", got: %s", want, r->err);
}

/* `keys list --json` output, for before/after comparisons. */
static char *
snapshot(void)
{
    struct run r = KG("keys", "list", "--json");
    char *out;

    assert_int_equal(r.status, 0);
    out = r.out;
    r.out = NULL;
    run_free(&r);
    return out;
}

/* Creates a key with --json and returns the parsed object; remembers the key. */
static json_t *
create_json(const char *name, const char *const *extra)
{
    const char *args[MAX_ARGS] = {"keys", "create", "--json", "--name", name};
    size_t n = 5;
    json_error_t jerr;
    struct run r;
    json_t *obj;

    while (extra != NULL && *extra != NULL)
        args[n++] = *extra++;
    args[n] = NULL;
    r = run_argv(NULL, args);
    if (r.status != 0)
        fail_msg("create should succeed, got %d: %s", r.status, r.err);
    obj = json_loads(r.out, 0, &jerr);
    if (obj == NULL)
        fail_msg("create --json should print JSON: %s", jerr.text);
    remember_key(json_string_value(json_object_get(obj, "key")));
    run_free(&r);
    return obj;
}

static char *
create_id(const char *name)
{
    json_t *obj = create_json(name, NULL);
    char *id = strdup(json_string_value(json_object_get(obj, "id")));

    json_decref(obj);
    assert_non_null(id);
    return id;
}

static int
group_setup(void **state)
{
    (void)state;
    bin = getenv("KEYGATE_BIN");
    if (bin == NULL || access(bin, X_OK) != 0) {
        fprintf(stderr, "KEYGATE_BIN must name the keygate binary\n");
        return -1;
    }
    snprintf(dir, sizeof(dir), "/tmp/kg_test_cli_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(db_path, sizeof(db_path), "%s/keygate.db", dir);
    if (pg != NULL && kt_pg_createdb(pg, PG_DB, db_path, sizeof(db_path)) != 0)
        return -1;
    snprintf(secret_path, sizeof(secret_path), "%s/secret", dir);
    snprintf(conf_path, sizeof(conf_path), "%s/keygate.conf", dir);
    spit(conf_path, "# written by test_cli.c\nkey_prefix " PREFIX "\n");
    setenv("KEYGATE_CONFIG", conf_path, 1);
    setenv("KEYGATE_DATABASE", db_path, 1);
    setenv("KEYGATE_SECRET_FILE", secret_path, 1);
    /* Anything else from the caller's environment would change the config under test. */
    unsetenv("KEYGATE_KEY_PREFIX");
    unsetenv("KEYGATE_LOG_LEVEL");
    return 0;
}

static int
group_teardown(void **state)
{
    static const char *const names[] = {
        "keygate.db", "keygate.db-wal", "keygate.db-shm", "keygate.db-journal",
        "secret",     "keygate.conf",   "other.conf",     "bad.conf",
        "corrupt.db", "corrupt.db-wal", "corrupt.db-shm", "stdout",
        "stderr",
    };
    char path[192];

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    for (size_t i = 0; i < nseen; i++) {
        memset(seen_keys[i], 0, strlen(seen_keys[i]));
        free(seen_keys[i]);
    }
    nseen = 0; /* a second group starts again */
    return 0;
}

static void
test_create_prints_fields_then_the_key_alone_on_the_last_line_and_warns_on_stderr(void **state)
{
    struct run r = KG("keys", "create", "--name", "ci deploy", "--scopes", "read:items,write:items",
                      "--expires", "30d");
    char key[KG_KEY_MAX + 8];

    (void)state;
    if (r.status != 0)
        fail_msg("create should exit 0, got %d: %s", r.status, r.err);
    last_line(r.out, key, sizeof(key));
    assert_true(kg_keyfmt_check(key, strlen(key)));
    assert_int_equal(strncmp(key, PREFIX, strlen(PREFIX)), 0);
    remember_key(key);
    assert_non_null(strstr(r.out, "id:"));
    assert_non_null(strstr(r.out, "name:    ci deploy\n"));
    assert_non_null(strstr(r.out, "scopes:  read:items,write:items\n"));
    assert_non_null(strstr(r.out, "tenant:  default\n"));
    assert_non_null(strstr(r.out, "prefix:  " PREFIX));
    assert_non_null(strstr(r.out, "created: "));
    assert_non_null(strstr(r.out, "expires: 20"));
    /* Shown once: the key appears a single time, on its last line. */
    assert_ptr_equal(strstr(r.out, key), strrchr(r.out, '\n') - strlen(key));
    assert_non_null(strstr(r.err, "not be shown again"));
    run_free(&r);
}

static void
test_create_json_has_exactly_the_documented_fields(void **state)
{
    static const char *const want[] = {"id",         "key",    "name",       "prefix",
                                       "scopes",     "tenant", "user_id",    "created_at",
                                       "expires_at", "canary", "allowed_ips"};
    json_t *obj = create_json(
        "json key", (const char *const[]){"--scopes", "read:a", "--tenant", "acme", NULL});
    const char *key = json_string_value(json_object_get(obj, "key"));
    json_t *scopes = json_object_get(obj, "scopes");

    (void)state;
    assert_int_equal(json_object_size(obj), sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (json_object_get(obj, want[i]) == NULL)
            fail_msg("create --json should have \"%s\"", want[i]);
    assert_non_null(key);
    assert_true(kg_keyfmt_check(key, strlen(key)));
    assert_int_equal(strncmp(json_string_value(json_object_get(obj, "id")), "key_", 4), 0);
    assert_string_equal(json_string_value(json_object_get(obj, "name")), "json key");
    assert_int_equal(strncmp(key, json_string_value(json_object_get(obj, "prefix")),
                             strlen(json_string_value(json_object_get(obj, "prefix")))),
                     0);
    assert_true(json_is_array(scopes));
    assert_int_equal(json_array_size(scopes), 1);
    assert_string_equal(json_string_value(json_array_get(scopes, 0)), "read:a");
    assert_string_equal(json_string_value(json_object_get(obj, "tenant")), "acme");
    /* Without --user, the key goes to the tenant's default user. */
    assert_int_equal(strncmp(json_string_value(json_object_get(obj, "user_id")), "usr_", 4), 0);
    assert_int_equal(strlen(json_string_value(json_object_get(obj, "created_at"))), 20);
    assert_true(json_is_null(json_object_get(obj, "expires_at")));
    json_decref(obj);
}

static void
test_list_table_has_every_column_and_never_a_key(void **state)
{
    static const char *const cols[] = {"NAME",    "ID",    "KEY",     "SCOPES",
                                       "TENANT",  "USER",  "CREATED", "LAST USED",
                                       "EXPIRES", "STATE", "REQUESTS"};
    struct run r = KG("keys", "list");
    char masked[64];

    (void)state;
    assert_int_equal(r.status, 0);
    for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
        if (strstr(r.out, cols[i]) == NULL)
            fail_msg("the table header should have %s: %s", cols[i], r.out);
    assert_true(count_lines(r.out) >= 3);
    assert_non_null(strstr(r.out, "ci deploy"));
    assert_non_null(strstr(r.out, "active"));
    assert_non_null(strstr(r.out, "never"));
    /* The first key, masked: display prefix, an ellipsis, its last four. */
    snprintf(masked, sizeof(masked), "\xE2\x80\xA6%s", seen_keys[0] + strlen(seen_keys[0]) - 4);
    assert_non_null(strstr(r.out, masked));
    assert_no_key_in("keys list", r.out, strlen(r.out));
    assert_string_equal(r.err, "");
    run_free(&r);
}

static void
test_list_json_masks_every_key_and_never_holds_a_key_or_digest(void **state)
{
    static const char *const want[] = {"name",       "id",           "key",        "prefix",
                                       "last4",      "scopes",       "tenant",     "user_id",
                                       "created_at", "last_used_at", "expires_at", "revoked_at",
                                       "state",      "rotated_to"};
    struct run r = KG("keys", "list", "--json");
    json_t *arr = json_loads(r.out, 0, NULL);
    size_t i;

    (void)state;
    assert_int_equal(r.status, 0);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), nseen);
    for (i = 0; i < json_array_size(arr); i++) {
        json_t *o = json_array_get(arr, i);
        const char *key = json_string_value(json_object_get(o, "key"));
        char masked[64];

        for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
            if (json_object_get(o, want[k]) == NULL)
                fail_msg("list --json objects should have \"%s\"", want[k]);
        assert_null(json_object_get(o, "digest"));
        assert_true(json_is_array(json_object_get(o, "scopes")));
        snprintf(masked, sizeof(masked), "%s\xE2\x80\xA6%s",
                 json_string_value(json_object_get(o, "prefix")),
                 json_string_value(json_object_get(o, "last4")));
        assert_string_equal(key, masked);
        assert_string_equal(json_string_value(json_object_get(o, "state")), "active");
    }
    assert_no_key_in("keys list --json", r.out, strlen(r.out));
    json_decref(arr);
    run_free(&r);
}

static void
test_show_prints_every_field_masked(void **state)
{
    const char *id = NULL;
    char *list = snapshot();
    json_t *arr, *o;
    struct run r;
    size_t i;

    (void)state;
    arr = json_loads(list, 0, NULL);
    for (i = 0; i < json_array_size(arr); i++) {
        o = json_array_get(arr, i);
        if (strcmp(json_string_value(json_object_get(o, "name")), "ci deploy") == 0)
            id = json_string_value(json_object_get(o, "id"));
    }
    assert_non_null(id);
    r = KG("keys", "show", id);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, id));
    assert_non_null(strstr(r.out, "state:"));
    assert_non_null(strstr(r.out, "rotated to:"));
    assert_non_null(strstr(r.out, "ci deploy"));
    assert_no_key_in("keys show", r.out, strlen(r.out));
    run_free(&r);

    r = KG("keys", "show", "--json", id);
    assert_int_equal(r.status, 0);
    o = json_loads(r.out, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "id")), id);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "active");
    assert_true(json_is_null(json_object_get(o, "rotated_to")));
    assert_null(json_object_get(o, "digest"));
    json_decref(o);
    assert_no_key_in("keys show --json", r.out, strlen(r.out));
    run_free(&r);
    json_decref(arr);
    free(list);
}

static void
test_revoke_prints_the_id_and_revoking_twice_fails_with_one_line(void **state)
{
    char *id = create_id("to revoke");
    char want[96];
    struct run r;
    char *before;

    (void)state;
    r = KG("keys", "revoke", id);
    assert_int_equal(r.status, 0);
    snprintf(want, sizeof(want), "revoked %s\n", id);
    assert_string_equal(r.out, want);
    run_free(&r);

    before = snapshot();
    r = KG("keys", "revoke", id);
    assert_int_equal(r.status, 1);
    snprintf(want, sizeof(want), "keygate: key %s is already revoked\n", id);
    assert_string_equal(r.err, want);
    assert_string_equal(r.out, "");
    run_free(&r);
    {
        char *after = snapshot();

        assert_string_equal(before, after);
        free(after);
    }

    r = KG("keys", "list", "--state", "revoked", "--json");
    assert_int_equal(r.status, 0);
    {
        json_t *arr = json_loads(r.out, 0, NULL);

        assert_int_equal(json_array_size(arr), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "id")), id);
        json_decref(arr);
    }
    run_free(&r);
    r = KG("keys", "list", "--state", "active");
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.out, id));
    run_free(&r);
    free(before);
    free(id);
}

static void
test_rotate_with_grace_prints_the_new_key_and_when_the_old_one_stops(void **state)
{
    char *id = create_id("to rotate");
    char key[KG_KEY_MAX + 8], want[96];
    struct run r;

    (void)state;
    r = KG("keys", "rotate", id, "--grace", "1h");
    if (r.status != 0)
        fail_msg("rotate should exit 0, got %d: %s", r.status, r.err);
    last_line(r.out, key, sizeof(key));
    assert_true(kg_keyfmt_check(key, strlen(key)));
    remember_key(key);
    snprintf(want, sizeof(want), "replaces %s, which stops working at 20", id);
    assert_non_null(strstr(r.out, want));
    assert_non_null(strstr(r.out, "name:    to rotate\n"));
    assert_non_null(strstr(r.err, "not be shown again"));
    run_free(&r);

    /* During the grace period the old key is still active and says when it stops. */
    r = KG("keys", "show", id);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "state:         active"));
    assert_non_null(strstr(r.out, "stops working: 20"));
    run_free(&r);

    /* It cannot be rotated twice. */
    r = KG("keys", "rotate", id);
    assert_int_equal(r.status, 1);
    assert_one_error_line(&r, "already rotated");
    run_free(&r);
    free(id);
}

static void
test_rotate_json_adds_replaces_and_old_key_revoked_at(void **state)
{
    char *id = create_id("to rotate now");
    struct run r;
    json_t *o;

    (void)state;
    r = KG("keys", "rotate", "--json", id);
    assert_int_equal(r.status, 0);
    o = json_loads(r.out, 0, NULL);
    assert_non_null(o);
    remember_key(json_string_value(json_object_get(o, "key")));
    assert_true(kg_keyfmt_check(json_string_value(json_object_get(o, "key")),
                                strlen(json_string_value(json_object_get(o, "key")))));
    assert_string_equal(json_string_value(json_object_get(o, "replaces")), id);
    assert_string_equal(json_string_value(json_object_get(o, "old_key_revoked_at")),
                        json_string_value(json_object_get(o, "created_at")));
    assert_string_equal(json_string_value(json_object_get(o, "name")), "to rotate now");
    json_decref(o);
    run_free(&r);

    r = KG("keys", "show", "--json", id);
    o = json_loads(r.out, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "revoked");
    assert_true(json_is_string(json_object_get(o, "rotated_to")));
    json_decref(o);
    run_free(&r);
    free(id);
}

/* The edges of every number's documented range pass (the usage-error
 * table holds one past them): --burst 1 and 1000000000, --credits 0 and
 * 1000000000; on update --burst 0 is the default. */
/* `keys show ID --json` of the key created as obj. */
static json_t *
shown_json(const json_t *obj)
{
    struct run r = KG("keys", "show", json_string_value(json_object_get(obj, "id")), "--json");
    json_t *o;

    assert_int_equal(r.status, 0);
    o = json_loads(r.out, 0, NULL);
    assert_non_null(o);
    run_free(&r);
    return o;
}

static void
test_numbers_at_the_edges_of_their_ranges_are_accepted(void **state)
{
    json_t *lo_made = create_json("edges low", (const char *const[]){"--rate", "10/s", "--burst",
                                                                     "1", "--credits", "0", NULL});
    json_t *hi_made =
        create_json("edges high", (const char *const[]){"--rate", "10/s", "--burst", "1000000000",
                                                        "--credits", "1000000000", NULL});
    json_t *lo = shown_json(lo_made), *hi = shown_json(hi_made);
    struct run r;
    json_t *o;

    (void)state;
    json_decref(lo_made);
    json_decref(hi_made);
    assert_int_equal(json_integer_value(json_object_get(lo, "rate_burst")), 1);
    assert_int_equal(json_integer_value(json_object_get(lo, "quota_limit")), 0);
    assert_int_equal(json_integer_value(json_object_get(hi, "rate_burst")), 1000000000);
    assert_int_equal(json_integer_value(json_object_get(hi, "quota_limit")), 1000000000);
    r = KG("keys", "update", json_string_value(json_object_get(hi, "id")), "--burst", "0",
           "--credits", "unlimited", "--json");
    assert_int_equal(r.status, 0);
    o = json_loads(r.out, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "rate_burst")));
    assert_true(json_is_null(json_object_get(o, "quota_limit")));
    json_decref(o);
    run_free(&r);
    json_decref(lo);
    json_decref(hi);
}

static void
test_update_renames_narrows_scopes_and_refuses_to_widen_them(void **state)
{
    json_t *obj = create_json("to update", (const char *const[]){"--scopes", "read:*", NULL});
    char *id = strdup(json_string_value(json_object_get(obj, "id")));
    json_t *shown;
    struct run r;

    (void)state;
    json_decref(obj);
    assert_non_null(id);
    r = KG("keys", "update", id, "--name", "updated", "--scopes", "read:items", "--expires", "30d",
           "--rate", "10/s", "--burst", "5", "--json");
    if (r.status != 0)
        fail_msg("update should exit 0, got %d: %s", r.status, r.err);
    shown = json_loads(r.out, 0, NULL);
    assert_non_null(shown);
    assert_string_equal(json_string_value(json_object_get(shown, "name")), "updated");
    assert_string_equal(json_string_value(json_array_get(json_object_get(shown, "scopes"), 0)),
                        "read:items");
    assert_string_equal(json_string_value(json_object_get(shown, "rate")), "10/s");
    assert_int_equal(json_integer_value(json_object_get(shown, "rate_burst")), 5);
    assert_false(json_is_null(json_object_get(shown, "expires_at")));
    assert_no_key_in("keys update", r.out, strlen(r.out));
    json_decref(shown);
    run_free(&r);

    r = KG("keys", "update", id, "--scopes", "read:*");
    assert_int_equal(r.status, 2);
    assert_one_error_line(&r, "scopes must narrow the key's scopes: read:*");
    run_free(&r);
    r = KG("keys", "update", id, "--expires", "never", "--rate", "default");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "expires:"));
    assert_non_null(strstr(strstr(r.out, "expires:"), " never\n"));
    assert_non_null(strstr(strstr(r.out, "rate:"), " default\n"));
    run_free(&r);
    r = KG("keys", "revoke", id);
    run_free(&r);
    r = KG("keys", "update", id, "--name", "late");
    assert_int_equal(r.status, 1);
    assert_one_error_line(&r, "is revoked");
    run_free(&r);
    free(id);
}

static void
test_help_and_version_print_to_stdout_and_exit_zero(void **state)
{
    static const char *const helps[][4] = {
        {"--help"},
        {"-h"},
        {"help"},
        {"help", "keys"},
        {"keys", "--help"},
        {"keys", "create", "--help"},
        {"keys", "list", "-h"},
        {"keys", "show", "--help"},
        {"keys", "revoke", "--help"},
        {"keys", "rotate", "--help"},
    };
    struct run r;

    (void)state;
    for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++) {
        r = run_argv(NULL, helps[i]);
        if (r.status != 0 || strstr(r.out, "usage: keygate") == NULL || r.err[0] != '\0')
            fail_msg("help #%zu should print usage on stdout and exit 0, got %d", i, r.status);
        run_free(&r);
    }
    r = KG("--version");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "keygate 0.1.0\n");
    run_free(&r);
}

static void
test_config_flag_works_after_the_verb_and_after_the_sub_verb(void **state)
{
    char other[160];
    char key[KG_KEY_MAX + 8];
    struct run r;
    json_t *o;

    (void)state;
    snprintf(other, sizeof(other), "%s/other.conf", dir);
    spit(other, "key_prefix other_\n");
    r = KG("keys", "-c", other, "create", "--name", "via -c before");
    assert_int_equal(r.status, 0);
    last_line(r.out, key, sizeof(key));
    remember_key(key);
    assert_int_equal(strncmp(key, "other_", 6), 0);
    run_free(&r);

    r = KG("keys", "create", "--config", other, "--json", "--name", "via --config after");
    assert_int_equal(r.status, 0);
    o = json_loads(r.out, 0, NULL);
    remember_key(json_string_value(json_object_get(o, "key")));
    assert_int_equal(strncmp(json_string_value(json_object_get(o, "key")), "other_", 6), 0);
    json_decref(o);
    run_free(&r);

    r = KG("keys", "create", "--name", "via -c last", "-c", other);
    assert_int_equal(r.status, 0);
    last_line(r.out, key, sizeof(key));
    remember_key(key);
    assert_int_equal(strncmp(key, "other_", 6), 0);
    run_free(&r);
}

static void
test_usage_errors_exit_2_with_one_line_and_change_nothing(void **state)
{
    static const struct {
        const char *args[8];
        const char *want;
    } cases[] = {
        {{NULL}, "missing command"},
        {{"frobnicate"}, "unknown command"},
        {{"--frobnicate"}, "unknown option"},
        {{"keys"}, "missing command"},
        {{"keys", "frobnicate"}, "unknown command"},
        {{"keys", "create", "--name", "x", "--frobnicate"}, "unknown option --frobnicate"},
        {{"keys", "create"}, "--name is required"},
        {{"keys", "create", "--name"}, "--name needs a value"},
        {{"keys", "create", "--name", ""}, "name"},
        {{"keys", "create", "--name", "x", "--scopes"}, "--scopes needs a value"},
        {{"keys", "create", "--name", "x", "--scopes", "read:a,bad scope"}, "scope"},
        {{"keys", "create", "--name", "x", "--scopes", "read:a,"}, "scope"},
        {{"keys", "create", "--name", "x", "--expires", "2020-01-01T00:00:00Z"}, "past"},
        {{"keys", "create", "--name", "x", "--expires", "tomorrow"}, "expiry"},
        {{"keys", "create", "--name", "x", "--tenant", "no spaces"}, "tenant"},
        {{"keys", "create", "--name", "line\nbreak"}, "control"},
        /* An echoed value cannot break the one line or reach the terminal raw. */
        {{"keys", "create", "--name", "x", "--scopes", "a\nb\x1b[31m"}, "\"a?b?[31m\""},
        {{"keys", "create", "--name", "x", "--json=yes"}, "--json takes no value"},
        {{"keys", "create", "-c"}, "-c needs a value"},
        {{"keys", "list", "--state", "dormant"}, "state"},
        {{"keys", "list", "extra"}, "unexpected argument"},
        {{"keys", "show"}, "missing key id"},
        {{"keys", "show", "key_a", "key_b"}, "unexpected argument"},
        {{"keys", "show", "not an id"}, "key id"},
        {{"keys", "revoke"}, "missing key id"},
        {{"keys", "rotate", "key_x", "--grace", "forever"}, "--grace"},
        {{"keys", "rotate", "key_x", "--grace"}, "--grace needs a value"},
        {{"keys", "update"}, "missing key id"},
        {{"keys", "update", "key_x"}, "nothing to change"},
        {{"keys", "update", "key_x", "--burst", "lots"}, "--burst"},
        /* Every number against its documented range: one past each edge,
         * signs, fractions, exponents, words. */
        {{"keys", "create", "--name", "x", "--burst", "0"}, BURST_WANT},
        {{"keys", "create", "--name", "x", "--burst", "1000000001"}, BURST_WANT},
        {{"keys", "create", "--name", "x", "--burst=-1"}, BURST_WANT},
        {{"keys", "create", "--name", "x", "--burst", "-1"}, "--burst needs a value"},
        {{"keys", "create", "--name", "x", "--burst", "1.5"}, BURST_WANT},
        {{"keys", "create", "--name", "x", "--burst", "1e9"}, BURST_WANT},
        {{"keys", "create", "--name", "x", "--burst", "+5"}, BURST_WANT},
        {{"keys", "create", "--name", "x", "--credits=-1"}, CREDITS_WANT},
        {{"keys", "create", "--name", "x", "--credits", "1000000001"}, CREDITS_WANT},
        {{"keys", "create", "--name", "x", "--credits", "2.5"}, CREDITS_WANT},
        {{"keys", "create", "--name", "x", "--credits", "unlimited"}, CREDITS_WANT},
        {{"keys", "update", "key_x", "--burst=-1"}, BURST0_WANT},
        {{"keys", "update", "key_x", "--burst", "1000000001"}, BURST0_WANT},
        {{"keys", "update", "key_x", "--burst", "1e3"}, BURST0_WANT},
        {{"keys", "update", "key_x", "--credits=-1"}, CREDITS_OR_UNLIMITED},
        {{"keys", "update", "key_x", "--credits", "99999999999999999999"}, CREDITS_OR_UNLIMITED},
        {{"users", "create", "--username", "x", "--credits=-5"}, CREDITS_WANT},
        {{"users", "create", "--username", "x", "--credits", "1000000001"}, CREDITS_WANT},
        {{"users", "update", "usr_x", "--credits", "0.5"}, CREDITS_OR_UNLIMITED},
        {{"audit", "--limit", "0"}, "--limit wants a number from 1 to"},
        {{"audit", "--limit=-3"}, "--limit wants a number from 1 to"},
        {{"keys", "create", "--name", "x", "--user", ""}, "user"},
    };
    char *before = snapshot();

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct run r = run_argv(NULL, cases[i].args);

        if (r.status != 2)
            fail_msg("case %zu (%s) should exit 2, got %d: %s", i,
                     cases[i].args[0] ? cases[i].args[0] : "(none)", r.status, r.err);
        assert_one_error_line(&r, cases[i].want);
        assert_string_equal(r.out, "");
        run_free(&r);
    }
    {
        char *after = snapshot();

        assert_string_equal(before, after);
        free(after);
    }
    free(before);
}

static void
test_failures_exit_1_with_one_line_and_change_nothing(void **state)
{
    static const struct {
        const char *args[8];
        const char *want;
    } cases[] = {
        {{"keys", "show", "key_doesnotexist"}, "no key key_doesnotexist"},
        {{"keys", "revoke", "key_doesnotexist"}, "no key key_doesnotexist"},
        {{"keys", "rotate", "key_doesnotexist"}, "no key key_doesnotexist"},
        {{"keys", "rotate", "key_doesnotexist", "--grace", "1h"}, "no key"},
        {{"keys", "update", "key_doesnotexist", "--name", "x"}, "no key key_doesnotexist"},
        {{"keys", "create", "--name", "x", "--user", "nobody"}, "no user nobody"},
    };
    char *before = snapshot();

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct run r = run_argv(NULL, cases[i].args);

        if (r.status != 1)
            fail_msg("case %zu should exit 1, got %d: %s", i, r.status, r.err);
        assert_one_error_line(&r, cases[i].want);
        assert_string_equal(r.out, "");
        run_free(&r);
    }
    {
        char *after = snapshot();

        assert_string_equal(before, after);
        free(after);
    }
    free(before);
}

static void
test_config_file_errors_print_file_and_line_and_exit_2(void **state)
{
    char bad[160], where[192], env[200];
    const char *over[] = {NULL, NULL};
    char *before = snapshot();
    struct run r;

    (void)state;
    snprintf(bad, sizeof(bad), "%s/bad.conf", dir);
    spit(bad, "key_prefix kgcli_\nno_such_directive 1\n");
    snprintf(where, sizeof(where), "%s:2:", bad);

    r = KG("keys", "create", "-c", bad, "--name", "never made");
    assert_int_equal(r.status, 2);
    if (strstr(r.err, where) == NULL || count_lines(r.err) != 1)
        fail_msg("stderr should be one line naming %s, got: %s", where, r.err);
    assert_string_equal(r.out, "");
    run_free(&r);

    /* A file that cannot be read is a config error too. */
    snprintf(where, sizeof(where), "%s/no-such.conf", dir);
    r = KG("keys", "list", "-c", where);
    assert_int_equal(r.status, 2);
    if (strstr(r.err, where) == NULL || count_lines(r.err) != 1)
        fail_msg("stderr should be one line naming %s, got: %s", where, r.err);
    run_free(&r);

    snprintf(where, sizeof(where), "%s:2:", bad);
    snprintf(env, sizeof(env), "KEYGATE_CONFIG=%s", bad);
    over[0] = env;
    r = KG_ENV(over, "keys", "list");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, where));
    run_free(&r);
    {
        char *after = snapshot();

        assert_string_equal(before, after);
        free(after);
    }
    free(before);
}

static void
test_a_corrupt_database_exits_1_with_one_line_and_stays_as_it_was(void **state)
{
    static const char garbage[] = "this is not an SQLite database, and keygate must say so\n";
    char corrupt[160], env[200];
    const char *over[] = {NULL, NULL};
    char *after;
    struct run r;
    size_t len;

    (void)state;
    snprintf(corrupt, sizeof(corrupt), "%s/corrupt.db", dir);
    {
        char big[8192];

        for (size_t i = 0; i < sizeof(big); i++)
            big[i] = garbage[i % (sizeof(garbage) - 1)];
        big[sizeof(big) - 1] = '\0';
        spit(corrupt, big);
    }
    snprintf(env, sizeof(env), "KEYGATE_DATABASE=%s", corrupt);
    over[0] = env;
    r = KG_ENV(over, "keys", "list");
    assert_int_equal(r.status, 1);
    assert_one_error_line(&r, NULL);
    assert_string_equal(r.out, "");
    run_free(&r);
    r = KG_ENV(over, "keys", "create", "--name", "never made");
    assert_int_equal(r.status, 1);
    assert_one_error_line(&r, NULL);
    run_free(&r);
    after = slurp(corrupt, &len);
    assert_int_equal(len, 8191);
    assert_memory_equal(after, garbage, sizeof(garbage) - 1);
    free(after);
}

static void
test_a_missing_secret_with_keys_in_the_database_exits_1_and_creates_no_secret(void **state)
{
    char missing[160], env[200];
    const char *over[] = {NULL, NULL};
    char *before = snapshot();
    struct run r;

    (void)state;
    snprintf(missing, sizeof(missing), "%s/no-such-secret", dir);
    snprintf(env, sizeof(env), "KEYGATE_SECRET_FILE=%s", missing);
    over[0] = env;
    r = KG_ENV(over, "keys", "create", "--name", "never made");
    assert_int_equal(r.status, 1);
    assert_one_error_line(&r, "secret");
    assert_string_equal(r.out, "");
    run_free(&r);
    r = KG_ENV(over, "keys", "list");
    assert_int_equal(r.status, 1);
    assert_one_error_line(&r, "secret");
    run_free(&r);
    assert_int_equal(access(missing, F_OK), -1);
    {
        char *after = snapshot();

        assert_string_equal(before, after);
        free(after);
    }
    free(before);
}

/* Fails if bytes hold any key seen so far, or even its random body alone;
 * true when they hold a key's id (a control: they are the keys' records). */
static bool
assert_no_key_stored(const char *what, const char *bytes, size_t len)
{
    assert_no_key_in(what, bytes, len);
    for (size_t k = 0; k < nseen; k++) {
        const char *body = seen_keys[k] + strlen(seen_keys[k]) - KG_KEY_TAIL_LEN;

        if (memmem(bytes, len, body, KG_KEY_BODY_LEN) != NULL)
            fail_msg("%s should never contain a key body, but holds key #%zu's", what, k);
    }
    return memmem(bytes, len, "key_", 4) != NULL;
}

static void
test_the_database_files_never_hold_a_key_the_tests_saw(void **state)
{
    static const char *const suffixes[] = {"", "-wal"};
    bool saw_an_id = false;
    char path[300];

    (void)state;
    assert_true(nseen >= 8);
    if (pg != NULL) {
        size_t len;
        char *rows = kt_pg_dump(pg, PG_DB, &len);

        assert_non_null(rows);
        saw_an_id = assert_no_key_stored("the PostgreSQL database", rows, len);
        free(rows);
    }
    for (size_t i = 0; pg == NULL && i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        size_t len;
        char *bytes;

        snprintf(path, sizeof(path), "%s%s", db_path, suffixes[i]);
        bytes = slurp(path, &len);
        if (bytes == NULL) {
            assert_int_equal(i, 1); /* the WAL may have been checkpointed away */
            continue;
        }
        saw_an_id |= assert_no_key_stored(path, bytes, len);
        free(bytes);
    }
    assert_true(saw_an_id);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_create_prints_fields_then_the_key_alone_on_the_last_line_and_warns_on_stderr),
        cmocka_unit_test(test_create_json_has_exactly_the_documented_fields),
        cmocka_unit_test(test_list_table_has_every_column_and_never_a_key),
        cmocka_unit_test(test_list_json_masks_every_key_and_never_holds_a_key_or_digest),
        cmocka_unit_test(test_show_prints_every_field_masked),
        cmocka_unit_test(test_revoke_prints_the_id_and_revoking_twice_fails_with_one_line),
        cmocka_unit_test(test_rotate_with_grace_prints_the_new_key_and_when_the_old_one_stops),
        cmocka_unit_test(test_rotate_json_adds_replaces_and_old_key_revoked_at),
        cmocka_unit_test(test_update_renames_narrows_scopes_and_refuses_to_widen_them),
        cmocka_unit_test(test_numbers_at_the_edges_of_their_ranges_are_accepted),
        cmocka_unit_test(test_help_and_version_print_to_stdout_and_exit_zero),
        cmocka_unit_test(test_config_flag_works_after_the_verb_and_after_the_sub_verb),
        cmocka_unit_test(test_usage_errors_exit_2_with_one_line_and_change_nothing),
        cmocka_unit_test(test_failures_exit_1_with_one_line_and_change_nothing),
        cmocka_unit_test(test_config_file_errors_print_file_and_line_and_exit_2),
        cmocka_unit_test(
            test_a_missing_secret_with_keys_in_the_database_exits_1_and_creates_no_secret),
        cmocka_unit_test(test_the_database_files_never_hold_a_key_the_tests_saw),
    };
    /* A file of garbage given as the database: SQLite's alone (on PostgreSQL,
     * another program's database is unit_store_test_store_postgres's). */
    const struct CMUnitTest sqlite_only[] = {
        cmocka_unit_test(test_a_corrupt_database_exits_1_with_one_line_and_stays_as_it_was),
    };
    const char *backend = getenv("KEYGATE_TEST_DATABASE");
    int failed;

    if (backend != NULL && strcmp(backend, "postgres") == 0) {
        int rc = kt_pg_start(&pg);

        if (rc != 0)
            return rc == KT_PG_SKIP ? KT_PG_SKIP : 1;
        failed =
            cmocka_run_group_tests_name("cli on PostgreSQL", tests, group_setup, group_teardown);
        kt_pg_free(pg);
        return failed;
    }
    failed = cmocka_run_group_tests_name("cli on SQLite", tests, group_setup, group_teardown);
    failed +=
        cmocka_run_group_tests_name("cli on SQLite only", sqlite_only, group_setup, group_teardown);
    return failed;
}
