/* cli/cmd_audit.c - `keygate audit [verify]` and `keygate init`.
 *
 * audit reads the audit trail (manage/audit.c) and prints it as a table or
 * JSON; audit verify walks its hash chain and says where it breaks. init
 * bootstraps an empty database: the tenant `default`, a platform admin user
 * `admin` (role "*") and its key `admin` with the admin scopes, printed
 * once like `keys create`. On a database that already holds keys it does
 * nothing, so a quick-start script may run it on every start.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"
#include "keygate/accounts.h"
#include "keygate/audit.h"
#include "keygate/cli.h"
#include "keygate/output.h"
#include "keygate/timeutil.h"

#define INIT_SCOPES "keys:read,keys:write,users:admin,tenants:admin"
#define INIT_USER "admin"
#define AUDIT_LIMIT_MAX 1000000

static const char audit_usage[] =
    "usage: keygate audit [--json] [--limit N] [--tenant TENANT] [-c FILE]\n"
    "       keygate audit verify [--json] [-c FILE]\n"
    "\n"
    "Prints the audit trail, oldest first: every key, user and tenant change and\n"
    "every failed admin authentication, with its time, actor, tenant, object and\n"
    "what changed. `audit verify` walks the hash chain and reports the first\n"
    "entry that was edited, inserted or deleted by hand (exit 1).\n"
    "\n"
    "  --json              print a JSON array (verify: one JSON object)\n"
    "  --limit N           only the N most recent entries\n"
    "  --tenant TENANT     only entries about this tenant\n"
    "  -c, --config FILE   config file\n";

static const char init_usage[] =
    "usage: keygate init [--json] [-c FILE]\n"
    "\n"
    "On a database without keys: makes the tenant default (if missing), a\n"
    "platform admin user admin with role *, and a key named admin with the\n"
    "scopes " INIT_SCOPES ", and prints the key once, like\n"
    "`keygate keys create`. On a database that has keys it changes nothing.\n"
    "\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

/* ---- audit ---- */

/* Entries arrive newest first (so --limit keeps the latest) and are
 * printed oldest first, like any log. */
struct audit_rows {
    struct kg_audit_entry *v;
    size_t n, cap;
    bool failed;
};

static bool
keep_entry(const struct kg_audit_entry *e, void *ctx)
{
    struct audit_rows *r = ctx;

    if (r->n == r->cap) {
        size_t cap = r->cap != 0 ? r->cap * 2 : 64;
        struct kg_audit_entry *v = realloc(r->v, cap * sizeof(*v));

        if (v == NULL) {
            r->failed = true;
            return false;
        }
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = *e;
    return true;
}

/* One table row; details are compact JSON, so one line. */
static enum kg_status
audit_row(struct kg_output_table *t, const struct kg_audit_entry *e)
{
    char seq[24], when[KG_RFC3339_MAX];
    const char *cells[] = {seq,       kg_output_time(e->time, "-", when),
                           e->actor,  e->tenant[0] != '\0' ? e->tenant : "-",
                           e->action, e->object[0] != '\0' ? e->object : "-",
                           e->details};

    snprintf(seq, sizeof(seq), "%" PRId64, e->seq);
    return kg_output_table_add(t, cells);
}

static int
print_entries(const struct audit_rows *r, bool json)
{
    static const char *const headers[] = {"SEQ",    "TIME",   "ACTOR",  "TENANT",
                                          "ACTION", "OBJECT", "DETAILS"};
    struct kg_output_table *t = NULL;
    enum kg_status rc = KG_OK;
    json_t *arr = NULL;

    if (json) {
        arr = json_array();
        for (size_t i = r->n; arr != NULL && i-- > 0;) {
            if (json_array_append_new(arr, kg_render_audit_json(&r->v[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        return kg_cli_print_json(arr);
    }
    rc = kg_output_table_new(headers, sizeof(headers) / sizeof(headers[0]), &t);
    for (size_t i = r->n; rc == KG_OK && i-- > 0;)
        rc = audit_row(t, &r->v[i]);
    if (rc == KG_OK)
        kg_output_table_print(t, stdout);
    kg_output_table_free(t);
    return rc != KG_OK ? kg_cli_fail(rc, NULL) : KG_CLI_EXIT_OK;
}

static int
audit_list(const struct kg_cli_args *a, const char *tenant, const char *limit, bool json)
{
    const struct kg_audit_filter filter = {.tenant = tenant, .newest_first = true};
    struct kg_page page = {0};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct audit_rows rows = {0};
    struct kg_err err = {{0}};
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    if (limit != NULL) {
        ex = kg_cli_count("audit", "--limit", limit, AUDIT_LIMIT_MAX, &page.limit);
        if (ex != KG_CLI_EXIT_OK)
            return ex;
    }
    ex = kg_cli_open_ctx(a->config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_audit_list(&kc, NULL, &filter, &page, keep_entry, &rows, NULL, &err);
    if (rc == KG_OK && rows.failed)
        rc = kg_err_set(&err, KG_ENOMEM, "out of memory reading the audit trail");
    ex = rc != KG_OK ? kg_cli_fail(rc, &err) : print_entries(&rows, json);
    free(rows.v);
    kg_instance_close(inst);
    return ex;
}

static int
audit_verify(const struct kg_cli_args *a, bool json)
{
    struct kg_instance *inst = NULL;
    struct kg_audit_report rep;
    struct kg_err err = {{0}};
    enum kg_status rc;
    int ex;

    ex = kg_cli_open(a->config, &inst);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_audit_verify(inst->store, inst->secret, &rep, &err);
    kg_instance_close(inst);
    if (rc != KG_OK)
        return kg_cli_fail(rc, &err);
    if (json) {
        ex = kg_cli_print_json(json_pack("{s:b, s:I, s:o, s:o}", "ok", rep.ok, "entries",
                                         (json_int_t)rep.entries, "broken_at",
                                         rep.ok ? json_null() : json_integer(rep.broken_seq),
                                         "reason", rep.ok ? json_null() : json_string(rep.why)));
        if (ex != KG_CLI_EXIT_OK)
            return ex;
    } else if (rep.ok) {
        printf("audit chain OK (%" PRId64 " entries)\n", rep.entries);
    } else {
        printf("audit chain broken at entry %" PRId64 ": %s\n", rep.broken_seq, rep.why);
    }
    return rep.ok ? KG_CLI_EXIT_OK : KG_CLI_EXIT_FAIL;
}

int
kg_cli_audit(int argc, char **argv)
{
    const char *cmd = "audit";
    const char *limit = NULL, *tenant = NULL;
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "json", .flag = &json},
        {.name = "limit", .metavar = "N", .value = &limit},
        {.name = "tenant", .metavar = "TENANT", .value = &tenant},
        {0},
    };
    struct kg_cli_args a = {0};
    int ex;

    ex = kg_cli_parse_or_help(cmd, audit_usage, argc, argv, opts, 1, &a);
    if (ex >= 0)
        return ex;
    if (a.npos == 0)
        return audit_list(&a, tenant, limit, json);
    if (strcmp(a.pos[0], "verify") != 0)
        return kg_cli_usage_error(cmd, "unknown command \"%.40s\" (see keygate audit --help)",
                                  a.pos[0]);
    if (limit != NULL || tenant != NULL)
        return kg_cli_usage_error("audit verify", "--limit and --tenant do not apply: the whole "
                                                  "chain is verified");
    return audit_verify(&a, json);
}

/* ---- init ---- */

static bool
any_key(const struct kg_key_rec *rec, void *ctx)
{
    (void)rec;
    *(bool *)ctx = true;
    return false;
}

/* Makes the admin key: for the existing user admin of the default tenant,
 * or together with that user when it does not exist yet. */
static enum kg_status
bootstrap(const struct kg_keys_ctx *kc, int64_t now, struct kg_key_rec *rec, char **key,
          struct kg_err *err)
{
    const struct kg_tenant_new tenant = {.name = KG_TENANT_DEFAULT};
    struct kg_key_new kreq = {.name = INIT_USER, .scopes = INIT_SCOPES};
    const struct kg_user_new ureq = {
        .tenant = KG_TENANT_DEFAULT, .username = INIT_USER, .role = "*", .platform_admin = true};
    struct kg_tenant_rec t;
    struct kg_user_rec u;
    enum kg_status rc;

    rc = kg_accounts_tenant_get(kc, NULL, KG_TENANT_DEFAULT, &t, err);
    if (rc == KG_ENOTFOUND)
        rc = kg_accounts_tenant_create(kc, NULL, &tenant, now, &t, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_store_user_find(kc->store, KG_TENANT_DEFAULT, INIT_USER, &u, err);
    if (rc == KG_ENOTFOUND)
        return kg_accounts_user_create(kc, NULL, &ureq, &kreq, now, &u, rec, key, err);
    if (rc != KG_OK)
        return rc;
    /* Someone made the user but no key yet: it must be able to administer. */
    if (!u.platform_admin || u.disabled_at != 0)
        return kg_err_set(err, KG_ECONFLICT,
                          "user admin of tenant default exists but is not an enabled platform "
                          "admin; make a key with keygate keys create --user admin");
    kreq.user = u.id;
    return kg_keys_create(kc, NULL, &kreq, now, rec, key, err);
}

int
kg_cli_init(int argc, char **argv)
{
    const char *cmd = "init";
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {0};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_key_rec rec;
    struct kg_keys_ctx kc;
    bool has_keys = false;
    char *key = NULL;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, init_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_store_key_each(inst->store, any_key, &has_keys, &err);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    if (has_keys) {
        /* Not an error: the quick start runs init on every start. */
        fprintf(stderr, "keygate: already initialised; nothing to do\n");
        goto cleanup;
    }
    rc = bootstrap(&kc, kg_time_now(), &rec, &key, &err);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    ex = kg_cli_print_new_key(&rec, key, NULL, json);
cleanup:
    kg_keys_key_free(key);
    kg_instance_close(inst);
    return ex;
}
