/* cli/cli.c - the `keygate` command line: the verb table, the option parser
 * every command shares and the one place errors become output.
 *
 * Adding a verb is one row in verbs[] and one cmd_<verb>.c. Rules about keys
 * and accounts live in manage/, record shapes in manage/render.c, tables in output.c; this file
 * only turns argv into calls and statuses into exit codes: 0 success, 1 failure (not found,
 * conflict, I/O, corrupt data), 2 usage (unknown verb or flag, malformed value, config file
 * errors).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli_int.h"
#include "keygate/audit.h"
#include "keygate/cli.h"
#include "keygate/output.h"
#include "keygate/serve.h"

struct verb {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the verb */
    const char *summary;
};

static const struct verb verbs[] = {
    {"serve", kg_serve_main, "run the gateway daemon"},
    {"init", kg_cli_init, "on an empty database, create and print a platform admin key"},
    {"keys", kg_cli_keys, "create, list, show, update, revoke and rotate API keys"},
    {"tenants", kg_cli_tenants, "create, list, show and update tenants"},
    {"users", kg_cli_users, "create, list, show, update and disable users"},
    {"audit", kg_cli_audit, "read the audit trail, or verify its hash chain"},
    {"events", kg_cli_events, "list webhook events, retry failed deliveries"},
    {"healthcheck", kg_cli_healthcheck, "ask the daemon's /readyz: exit 0 when ready, else 1"},
};

#define NVERBS (sizeof(verbs) / sizeof(verbs[0]))

static void
usage(FILE *f)
{
    fprintf(f, "usage: keygate <command> [-c FILE] [options]\n"
               "       keygate --help | --version\n"
               "\n"
               "commands:\n");
    for (size_t i = 0; i < NVERBS; i++)
        fprintf(f, "  %-11s %s\n", verbs[i].name, verbs[i].summary);
    fprintf(f, "\n"
               "Every command takes -c FILE (--config FILE) to name the config file;\n"
               "without it KEYGATE_CONFIG, conf/keygate.conf and /etc/keygate/keygate.conf\n"
               "are tried in that order. KEYGATE_DATABASE and KEYGATE_SECRET_FILE override\n"
               "the file. `keygate <command> --help` describes a command.\n"
               "\n"
               "exit status: 0 success, 1 failure, 2 usage or configuration error\n");
}

static const struct verb *
find_verb(const char *name)
{
    for (size_t i = 0; i < NVERBS; i++)
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    return NULL;
}

int
kg_cli_main(int argc, char **argv)
{
    const struct verb *v;

    if (argc < 2)
        return kg_cli_usage_error("keygate", "missing command (see keygate --help)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        v = argc > 2 ? find_verb(argv[2]) : NULL;
        if (v != NULL) {
            /* "keygate help keys" is "keygate keys --help". */
            char *help_argv[] = {argv[2], "--help", NULL};

            return v->run(2, help_argv);
        }
        usage(stdout);
        return KG_CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("keygate %s\n", KEYGATE_VERSION);
        return KG_CLI_EXIT_OK;
    }
    v = find_verb(argv[1]);
    if (v == NULL) {
        /* Only a bounded, option-free echo: argv may hold anything. */
        if (argv[1][0] == '-')
            return kg_cli_usage_error("keygate", "unknown option %.40s (see keygate --help)",
                                      argv[1]);
        return kg_cli_usage_error("keygate", "unknown command \"%.40s\" (see keygate --help)",
                                  argv[1]);
    }
    return v->run(argc - 1, argv + 1);
}

/* Writes msg as one line on stderr. Messages echo what was typed (a bad
 * scope, an unknown option), so control characters become '?': an error
 * stays one line and cannot move the terminal's cursor or recolour it. */
static void
emit_line(const char *msg)
{
    for (const char *p = msg; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;

        fputc(c < 0x20 || c == 0x7f ? '?' : c, stderr);
    }
    fputc('\n', stderr);
}

int
kg_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[KG_ERR_MAX + 64];
    size_t n;
    va_list ap;

    /* "keygate: keygate: …" would stutter for top-level errors. */
    if (strcmp(cmd, "keygate") == 0)
        snprintf(msg, sizeof(msg), "keygate: ");
    else
        snprintf(msg, sizeof(msg), "keygate: %s: ", cmd);
    n = strlen(msg);
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - n, fmt, ap);
    va_end(ap);
    emit_line(msg);
    return KG_CLI_EXIT_USAGE;
}

int
kg_cli_fail(enum kg_status rc, const struct kg_err *err)
{
    char msg[KG_ERR_MAX + 16];

    snprintf(msg, sizeof(msg), "keygate: %s",
             err != NULL && err->msg[0] != '\0' ? err->msg : kg_status_str(rc));
    emit_line(msg);
    return rc == KG_EINVAL ? KG_CLI_EXIT_USAGE : KG_CLI_EXIT_FAIL;
}

/* Stores the value of an option: the part after '=' if there is one, else
 * the next argument. */
static int
take_value(const char *cmd, const char *shown, const char *eq, int argc, char **argv, int *i,
           const char **out)
{
    const char *next;

    if (eq != NULL) {
        *out = eq + 1;
        return KG_CLI_EXIT_OK;
    }
    next = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (next == NULL || (next[0] == '-' && next[1] != '\0'))
        return kg_cli_usage_error(cmd, "%s needs a value", shown);
    *out = next;
    (*i)++;
    return KG_CLI_EXIT_OK;
}

static int
parse_short(const char *cmd, int argc, char **argv, int *i, struct kg_cli_args *out)
{
    const char *a = argv[*i];

    if (strcmp(a, "-h") == 0) {
        out->help = true;
        return KG_CLI_EXIT_OK;
    }
    if (a[1] == 'c') {
        if (a[2] != '\0') {
            out->config = a + 2;
            return KG_CLI_EXIT_OK;
        }
        return take_value(cmd, "-c", NULL, argc, argv, i, &out->config);
    }
    return kg_cli_usage_error(cmd, "unknown option %.40s (see keygate %s --help)", a, cmd);
}

static int
parse_long(const char *cmd, int argc, char **argv, int *i, const struct kg_cli_opt *opts,
           struct kg_cli_args *out)
{
    const char *name = argv[*i] + 2;
    const char *eq = strchr(name, '=');
    size_t n = eq != NULL ? (size_t)(eq - name) : strlen(name);
    char shown[48];

    /* The name only: whatever follows '=' may be a secret typed by mistake. */
    snprintf(shown, sizeof(shown), "--%.*s", (int)(n > 40 ? 40 : n), name);
    if (n == 4 && strncmp(name, "help", 4) == 0) {
        if (eq != NULL)
            return kg_cli_usage_error(cmd, "--help takes no value");
        out->help = true;
        return KG_CLI_EXIT_OK;
    }
    if (n == 6 && strncmp(name, "config", 6) == 0)
        return take_value(cmd, shown, eq, argc, argv, i, &out->config);
    for (const struct kg_cli_opt *o = opts; o != NULL && o->name != NULL; o++) {
        if (strlen(o->name) != n || strncmp(o->name, name, n) != 0)
            continue;
        if (o->metavar != NULL)
            return take_value(cmd, shown, eq, argc, argv, i, o->value);
        if (eq != NULL)
            return kg_cli_usage_error(cmd, "%s takes no value", shown);
        *o->flag = true;
        return KG_CLI_EXIT_OK;
    }
    return kg_cli_usage_error(cmd, "unknown option %s (see keygate %s --help)", shown, cmd);
}

int
kg_cli_parse(const char *cmd, int argc, char **argv, int start, const struct kg_cli_opt *opts,
             size_t max_pos, bool stop_at_pos, struct kg_cli_args *out)
{
    bool opts_done = false;
    int rc;

    out->npos = 0;
    out->next = argc;
    for (int i = start; i < argc; i++) {
        const char *a = argv[i];

        /* "-" alone is an argument (conventionally stdin), not an option. */
        if (opts_done || a[0] != '-' || a[1] == '\0') {
            if (stop_at_pos) {
                out->next = i;
                return KG_CLI_EXIT_OK;
            }
            if (out->npos == max_pos)
                return kg_cli_usage_error(cmd, "unexpected argument \"%.40s\"", a);
            out->pos[out->npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        rc = a[1] == '-' ? parse_long(cmd, argc, argv, &i, opts, out)
                         : parse_short(cmd, argc, argv, &i, out);
        if (rc != KG_CLI_EXIT_OK)
            return rc;
        /* Help wins over anything later on the line, mistakes included. */
        if (out->help)
            return KG_CLI_EXIT_OK;
    }
    return KG_CLI_EXIT_OK;
}

struct report_ctx {
    int lines;
};

static void
report_line(void *ctx, const char *line)
{
    struct report_ctx *rc = ctx;

    emit_line(line);
    rc->lines++;
}

int
kg_cli_open(const char *config_path, struct kg_instance **out)
{
    struct report_ctx reported = {0};
    struct kg_err err = {{0}};
    enum kg_status rc;

    rc = kg_instance_open(config_path, report_line, &reported, out, &err);
    if (rc == KG_OK)
        return KG_CLI_EXIT_OK;
    /* The config module has already said what is wrong, line by line; a
     * summary on top would only repeat it. It reports only when the config
     * failed, an unreadable file included, and that is always exit 2, as
     * for `keygate serve`. */
    if (reported.lines > 0)
        return KG_CLI_EXIT_USAGE;
    return kg_cli_fail(rc, &err);
}

int
kg_cli_dispatch(const char *verb, const struct kg_cli_subverb *subs, size_t nsubs, int argc,
                char **argv)
{
    struct kg_cli_args a = {0};
    int ex;

    /* Options before the sub-verb: -c FILE is passed on, --help is ours. */
    ex = kg_cli_parse(verb, argc, argv, 1, NULL, 0, true, &a);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    if (a.help) {
        printf("usage: keygate %s <command> [-c FILE] [options]\n\ncommands:\n", verb);
        for (size_t i = 0; i < nsubs; i++)
            printf("  %-8s %s\n", subs[i].name, subs[i].summary);
        printf("\n`keygate %s <command> --help` describes a command.\n", verb);
        return KG_CLI_EXIT_OK;
    }
    if (a.next >= argc)
        return kg_cli_usage_error(verb, "missing command (see keygate %s --help)", verb);
    for (size_t i = 0; i < nsubs; i++) {
        if (strcmp(subs[i].name, argv[a.next]) == 0)
            return subs[i].run(argc - a.next, argv + a.next, a.config);
    }
    return kg_cli_usage_error(verb, "unknown command \"%.40s\" (see keygate %s --help)",
                              argv[a.next], verb);
}

struct kg_keys_ctx
kg_cli_ctx(const struct kg_instance *inst, char actor[KG_AUDIT_ACTOR_MAX])
{
    kg_audit_cli_actor(actor);
    return (struct kg_keys_ctx){
        .store = inst->store, .secret = inst->secret, .cfg = inst->cfg, .actor = actor};
}

bool
kg_cli_decimal(const char *value, size_t max, size_t *out)
{
    size_t n = 0;
    const char *p = value;

    for (; *p >= '0' && *p <= '9' && n <= max; p++)
        n = n * 10 + (size_t)(*p - '0');
    if (p == value || *p != '\0' || n > max)
        return false;
    *out = n;
    return true;
}

int
kg_cli_count(const char *cmd, const char *opt, const char *value, size_t max, size_t *out)
{
    size_t n;

    if (!kg_cli_decimal(value, max, &n) || n == 0)
        return kg_cli_usage_error(cmd, "%s wants a number from 1 to %zu", opt, max);
    *out = n;
    return KG_CLI_EXIT_OK;
}

int
kg_cli_credits(const char *cmd, const char *value, bool unlimited_ok, int64_t *out)
{
    size_t n = 0;

    if (unlimited_ok && strcmp(value, "unlimited") == 0) {
        *out = -1;
        return KG_CLI_EXIT_OK;
    }
    if (!kg_cli_decimal(value, 1000000000, &n))
        return kg_cli_usage_error(cmd, "--credits wants a number from 0 to 1000000000%s",
                                  unlimited_ok ? " or unlimited" : "");
    *out = (int64_t)n;
    return KG_CLI_EXIT_OK;
}

int
kg_cli_parse_or_help(const char *cmd, const char *usage, int argc, char **argv,
                     const struct kg_cli_opt *opts, size_t max_pos, struct kg_cli_args *a)
{
    int ex = kg_cli_parse(cmd, argc, argv, 1, opts, max_pos, false, a);

    if (ex != KG_CLI_EXIT_OK)
        return ex;
    if (a->help) {
        fputs(usage, stdout);
        return KG_CLI_EXIT_OK;
    }
    return -1;
}

int
kg_cli_one_arg(const char *cmd, const char *what, const struct kg_cli_args *a, const char **out)
{
    if (a->npos == 0)
        return kg_cli_usage_error(cmd, "missing %s (see keygate %s --help)", what, cmd);
    *out = a->pos[0];
    return KG_CLI_EXIT_OK;
}

int
kg_cli_parse_one(const char *cmd, const char *usage, int argc, char **argv,
                 const struct kg_cli_opt *opts, const char *what, struct kg_cli_args *a,
                 const char **out)
{
    int ex = kg_cli_parse_or_help(cmd, usage, argc, argv, opts, 1, a);

    if (ex >= 0)
        return ex;
    ex = kg_cli_one_arg(cmd, what, a, out);
    return ex != KG_CLI_EXIT_OK ? ex : -1;
}

int
kg_cli_open_ctx(const char *config_path, struct kg_instance **inst, char actor[KG_AUDIT_ACTOR_MAX],
                struct kg_keys_ctx *kc)
{
    int ex = kg_cli_open(config_path, inst);

    if (ex == KG_CLI_EXIT_OK)
        *kc = kg_cli_ctx(*inst, actor);
    return ex;
}

int
kg_cli_print_json(json_t *obj)
{
    struct kg_err err = {{0}};
    enum kg_status rc = obj != NULL ? kg_output_json(stdout, obj, &err) : KG_ENOMEM;

    json_decref(obj);
    return rc != KG_OK ? kg_cli_fail(rc, &err) : KG_CLI_EXIT_OK;
}

int
kg_cli_list_open(struct kg_cli_list *l, bool json, const char *const *headers, size_t ncols)
{
    if (json)
        l->arr = json_array();
    else
        kg_output_table_new(headers, ncols, &l->table);
    return l->arr == NULL && l->table == NULL ? kg_cli_fail(KG_ENOMEM, NULL) : KG_CLI_EXIT_OK;
}

int
kg_cli_list_close(struct kg_cli_list *l, enum kg_status rc, const char *oom_msg, struct kg_err *err)
{
    int ex = KG_CLI_EXIT_OK;

    if (rc == KG_OK && l->failed)
        rc = kg_err_set(err, KG_ENOMEM, "%s", oom_msg);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, err);
    } else if (l->arr != NULL) {
        rc = kg_output_json(stdout, l->arr, err);
        if (rc != KG_OK)
            ex = kg_cli_fail(rc, err);
    } else {
        kg_output_table_print(l->table, stdout);
    }
    json_decref(l->arr);
    kg_output_table_free(l->table);
    l->arr = NULL;
    l->table = NULL;
    return ex;
}
