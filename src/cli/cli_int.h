/* cli/cli_int.h - what only the cmd_<verb>.c files share: the steps every
 * sub-verb takes (parse or print its usage, take its one argument, open the
 * instance as "cli:<os user>", print one JSON object) and the listing
 * helper that gathers rows into a table or a JSON array.
 *
 * Each helper prints exactly what the open-coded steps it replaces printed;
 * none of it is part of the CLI's contract in keygate/cli.h.
 */
#ifndef KEYGATE_CLI_INT_H
#define KEYGATE_CLI_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "keygate/cli.h"
#include "keygate/json_io.h"
#include "keygate/output.h"
#include "keygate/render.h"

/* kg_cli_parse() of argv[1..argc) without stopping at positionals; on
 * --help prints usage on stdout. Returns -1 to go on, or the exit status. */
int kg_cli_parse_or_help(const char *cmd, const char *usage, int argc, char **argv,
                         const struct kg_cli_opt *opts, size_t max_pos, struct kg_cli_args *a);

/* The first positional argument into *out, or a usage error
 * "missing <what> (see keygate <cmd> --help)". */
int kg_cli_one_arg(const char *cmd, const char *what, const struct kg_cli_args *a,
                   const char **out);

/* kg_cli_parse_or_help() of a command that takes one argument, then
 * kg_cli_one_arg() with what. Returns -1 to go on, or the exit status. */
int kg_cli_parse_one(const char *cmd, const char *usage, int argc, char **argv,
                     const struct kg_cli_opt *opts, const char *what, struct kg_cli_args *a,
                     const char **out);

/* kg_cli_open() and, on KG_CLI_EXIT_OK, kg_cli_ctx() into *kc. */
int kg_cli_open_ctx(const char *config_path, struct kg_instance **inst,
                    char actor[KG_AUDIT_ACTOR_MAX], struct kg_keys_ctx *kc);

/* Prints obj (taken; NULL means out of memory) as indented JSON on stdout.
 * Returns the exit status. */
int kg_cli_print_json(json_t *obj);

/* A listing being gathered: rows go to arr with --json, else to table. */
struct kg_cli_list {
    struct kg_output_table *table; /* people */
    json_t *arr;                   /* --json */
    bool failed;                   /* out of memory adding a row */
};

/* Starts a listing: a JSON array, or a table with headers. Returns the exit
 * status; on failure (out of memory, already reported) nothing is held. */
int kg_cli_list_open(struct kg_cli_list *l, bool json, const char *const *headers, size_t ncols);

/* Ends a listing with the status of the call that filled it: prints what
 * was gathered, or reports rc (oom_msg when a row could not be added), and
 * frees it. Returns the exit status. */
int kg_cli_list_close(struct kg_cli_list *l, enum kg_status rc, const char *oom_msg,
                      struct kg_err *err);

#endif
