/* keygate/cli.h - the `keygate` command line: verb table, option parsing,
 * error reporting and exit codes.
 *
 * cli.c owns the verb table (one row per verb), the option parser every
 * command uses and the one rule for turning an error into output: one line
 * "keygate: …" on stderr, exit 2 for usage errors (KG_EINVAL) and 1 for
 * everything else. The cmd_<verb>.c files hold the verbs; they call manage/
 * for every rule and render.h for every shape. Single-threaded.
 */
#ifndef KEYGATE_CLI_H
#define KEYGATE_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/instance.h"
#include "keygate/keys.h"
#include "keygate/status.h"

#define KG_CLI_EXIT_OK 0
#define KG_CLI_EXIT_FAIL 1  /* not found, conflict, I/O, corrupt data */
#define KG_CLI_EXIT_USAGE 2 /* unknown verb or flag, malformed value, config file errors */

#define KG_CLI_MAX_POS 4

/* Runs `keygate argv[1] …` and returns the process exit status. */
int kg_cli_main(int argc, char **argv);

/* The verbs; argv[0] is the verb. */
int kg_cli_keys(int argc, char **argv);        /* cmd_keys.c */
int kg_cli_tenants(int argc, char **argv);     /* cmd_accounts.c */
int kg_cli_users(int argc, char **argv);       /* cmd_accounts.c */
int kg_cli_audit(int argc, char **argv);       /* cmd_audit.c: `audit` and `audit verify` */
int kg_cli_events(int argc, char **argv);      /* cmd_events.c: `events list|retry` */
int kg_cli_init(int argc, char **argv);        /* cmd_audit.c: bootstrap the platform admin key */
int kg_cli_healthcheck(int argc, char **argv); /* cmd_health.c: GET /readyz on admin_listen */

/* A sub-verb of a verb with several (keys, tenants, users). */
struct kg_cli_subverb {
    const char *name;
    int (*run)(int argc, char **argv, const char *config); /* argv[0] is the sub-verb */
    const char *summary;
};

/* Parses the verb's own options (-c, --help) up to the sub-verb and runs
 * it with the -c seen so far; --help or no sub-verb prints the table. */
int kg_cli_dispatch(const char *verb, const struct kg_cli_subverb *subs, size_t nsubs, int argc,
                    char **argv);

/* The manage/ context of an open instance, acting as "cli:<os user>"
 * (kg_audit_cli_actor() into actor, which must outlive the context). */
struct kg_keys_ctx kg_cli_ctx(const struct kg_instance *inst, char actor[KG_AUDIT_ACTOR_MAX]);

/* A decimal count 0..max: digits only (no sign, blank, fraction or
 * exponent). False, writing nothing, otherwise. */
bool kg_cli_decimal(const char *value, size_t max, size_t *out);

/* Parses --limit and similar: a decimal count 1..max, else a usage error
 * naming opt. */
int kg_cli_count(const char *cmd, const char *opt, const char *value, size_t max, size_t *out);

/* --credits VALUE of keys and users: 0 to 1000000000 into *out, or, when
 * unlimited_ok, "unlimited" as -1. A usage error (exit 2) otherwise. */
int kg_cli_credits(const char *cmd, const char *value, bool unlimited_ok, int64_t *out);

/* Prints a key that was just made, the only time it is ever printed: the
 * fields, then the key alone on the last line (or one JSON object with
 * json), and the "save this key now" warning on stderr. old is the key it
 * replaces (rotate) or NULL. Returns the exit status. (cmd_keys.c) */
int kg_cli_print_new_key(const struct kg_key_rec *rec, const char *key,
                         const struct kg_key_rec *old, bool json);

/* One option of a command. Options with a metavar take a value ("--name
 * NAME" or "--name=NAME") stored in *value, borrowed from argv; the others
 * set *flag. A value that starts with '-' must use the "=" form, so that a
 * forgotten value is reported instead of eating the next option. The
 * table ends with a row whose name is NULL. */
struct kg_cli_opt {
    const char *name;    /* long name without "--" */
    const char *metavar; /* non-NULL: takes a value */
    const char **value;
    bool *flag;
};

/* What every command accepts besides its own options. Fields keep what the
 * caller put in them unless the command line says otherwise, so a verb
 * passes its own -c on to its sub-verb. */
struct kg_cli_args {
    const char *config; /* -c FILE, -cFILE, --config FILE, --config=FILE */
    bool help;          /* -h, --help */
    const char *pos[KG_CLI_MAX_POS];
    size_t npos;
    int next; /* with stop_at_pos: index of the first positional argument, or argc */
};

/* Parses argv[start..argc) against opts (may be NULL) plus -c/--config and
 * -h/--help. "--" ends the options. At most max_pos positional arguments;
 * with stop_at_pos, parsing stops at the first one (for a verb that has
 * sub-verbs). cmd ("keys create") names the command in messages. Returns
 * KG_CLI_EXIT_OK, or prints one line and returns KG_CLI_EXIT_USAGE. */
int kg_cli_parse(const char *cmd, int argc, char **argv, int start, const struct kg_cli_opt *opts,
                 size_t max_pos, bool stop_at_pos, struct kg_cli_args *out);

/* Prints "keygate: CMD: <message>" on stderr and returns KG_CLI_EXIT_USAGE. */
int kg_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "keygate: <err->msg>" (or the status name when there are no words)
 * on stderr and returns the exit status for rc: 2 for KG_EINVAL, 1 otherwise. */
int kg_cli_fail(enum kg_status rc, const struct kg_err *err);

/* Opens config (config_path, or KEYGATE_CONFIG and the default places),
 * store and secret. Config problems, an unreadable file included, are
 * printed as the config module words them ("file:line: …") and give
 * KG_CLI_EXIT_USAGE; any other failure is one kg_cli_fail() line. Returns
 * KG_CLI_EXIT_OK with *out owned by the caller (kg_instance_close()), or
 * the exit status with *out NULL. */
int kg_cli_open(const char *config_path, struct kg_instance **out);

#endif
