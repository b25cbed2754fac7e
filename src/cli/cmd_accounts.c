/* cli/cmd_accounts.c - `keygate tenants create|list|show|update` and
 * `keygate users create|list|show|update|disable`.
 *
 * Each sub-verb parses its options, checks what it can before opening
 * anything, opens the instance, makes one call into manage/accounts.c as
 * "cli:<os user>" (the audit trail's actor) and prints the result through
 * output.c and manage/render.c. No rule about tenants or users is decided here. The CLI is a
 * platform admin: it passes no tenant fence.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "cli_int.h"
#include "keygate/accounts.h"
#include "keygate/cli.h"
#include "keygate/output.h"
#include "keygate/timeutil.h"

static const char tenants_create_usage[] =
    "usage: keygate tenants create NAME [--display-name TEXT] [--json] [-c FILE]\n"
    "\n"
    "Makes a tenant. Its name (1-64 of A-Z a-z 0-9 _ . -) is what X-Keygate-Tenant\n"
    "carries and never changes.\n"
    "\n"
    "  --display-name TEXT a name for people: up to 128 bytes, no control characters\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char tenants_list_usage[] = "usage: keygate tenants list [--json] [-c FILE]\n"
                                         "\n"
                                         "Lists tenants, oldest first.\n"
                                         "\n"
                                         "  --json              print a JSON array\n"
                                         "  -c, --config FILE   config file\n";

static const char tenants_show_usage[] = "usage: keygate tenants show NAME [--json] [-c FILE]\n"
                                         "\n"
                                         "Shows one tenant.\n"
                                         "\n"
                                         "  --json              print one JSON object\n"
                                         "  -c, --config FILE   config file\n";

static const char tenants_update_usage[] =
    "usage: keygate tenants update NAME [--display-name TEXT] [--disable | --enable]\n"
    "                              [--json] [-c FILE]\n"
    "\n"
    "Changes a tenant. Disabling it stops every key of every user in it at once\n"
    "(the daemon sees the change within a second); enabling brings them back.\n"
    "\n"
    "  --display-name TEXT a new name for people\n"
    "  --disable           disable the tenant\n"
    "  --enable            enable it again\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char users_create_usage[] =
    "usage: keygate users create --username NAME [--tenant TENANT] [--email ADDRESS]\n"
    "                            [--first-name TEXT] [--last-name TEXT] [--role SCOPES]\n"
    "                            [--tier TIER] [--platform-admin]\n"
    "                            [--credits N [--refill day|month]] [--json] [-c FILE]\n"
    "\n"
    "Makes a user. Its role is the set of scopes its keys may carry.\n"
    "\n"
    "  --username NAME     1-128 bytes, unique in the tenant (default: the e-mail)\n"
    "  --tenant TENANT     an existing tenant (default: default)\n"
    "  --email ADDRESS     unique across tenants; stored lower-case\n"
    "  --first-name TEXT   up to 128 bytes\n"
    "  --last-name TEXT    up to 128 bytes\n"
    "  --role SCOPES       comma-separated scopes, * for all (default: *)\n"
    "  --tier TIER         1-64 of A-Z a-z 0-9 _ . - (default: default)\n"
    "  --platform-admin    the user's admin keys see every tenant\n"
    "  --credits N         credits all its keys may spend together, 0-1000000000\n"
    "                      (default: unlimited); each key's own credits and the\n"
    "                      tier's quota apply as well\n"
    "  --refill PERIOD     day or month: the credits come back at the start of\n"
    "                      each UTC day or month (default: never)\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char users_list_usage[] =
    "usage: keygate users list [--tenant TENANT] [--json] [-c FILE]\n"
    "\n"
    "Lists users, oldest first.\n"
    "\n"
    "  --tenant TENANT     only users of this tenant\n"
    "  --json              print a JSON array\n"
    "  -c, --config FILE   config file\n";

static const char users_show_usage[] =
    "usage: keygate users show USER [--tenant TENANT] [--json] [-c FILE]\n"
    "\n"
    "Shows one user: USER is a user id, or a username in --tenant (default:\n"
    "default), with the credits it used and what it used of its tier's quota\n"
    "(as the daemon last wrote them: at most a second old).\n"
    "\n"
    "  --tenant TENANT     the tenant a username is looked up in\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char users_update_usage[] =
    "usage: keygate users update USER [--tenant TENANT] [--username NAME]\n"
    "                            [--email ADDRESS|\"\"] [--first-name TEXT]\n"
    "                            [--last-name TEXT] [--role SCOPES] [--tier TIER]\n"
    "                            [--platform-admin yes|no] [--enable]\n"
    "                            [--credits N|unlimited] [--refill day|month|never]\n"
    "                            [--json] [-c FILE]\n"
    "\n"
    "Changes a user. A narrower role narrows what every key of the user can do at\n"
    "once; no key needs editing.\n"
    "\n"
    "  --tenant TENANT     the tenant a username is looked up in\n"
    "  --username NAME     a new username\n"
    "  --email ADDRESS     a new e-mail address; \"\" removes it\n"
    "  --first-name TEXT   a new first name\n"
    "  --last-name TEXT    a new last name\n"
    "  --role SCOPES       the new role\n"
    "  --tier TIER         the new tier\n"
    "  --platform-admin V  yes or no\n"
    "  --enable            enable a disabled user again\n"
    "  --credits N         credits all its keys may spend together (0-1000000000),\n"
    "                      or unlimited; what was used stays counted\n"
    "  --refill PERIOD     day, month or never\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char users_disable_usage[] =
    "usage: keygate users disable USER [--tenant TENANT] [-c FILE]\n"
    "\n"
    "Disables a user: every key of the user stops working at once (the daemon\n"
    "sees the change within a second). Users are never deleted.\n"
    "\n"
    "  --tenant TENANT     the tenant a username is looked up in\n"
    "  -c, --config FILE   config file\n";

static const char users_passwd_usage[] =
    "usage: keygate users passwd USER [--tenant TENANT] [-c FILE]\n"
    "\n"
    "Sets the password USER signs in to the web console with. From a terminal\n"
    "it is asked twice without echo; otherwise the first line of standard input\n"
    "is the password (never an argument: argv is visible to other users). At\n"
    "least 12 characters, at most 1024 bytes. Every\n"
    "console session of the user ends.\n"
    "\n"
    "  --tenant TENANT     the tenant a username is looked up in\n"
    "  -c, --config FILE   config file\n";

/* ---- tenants ---- */

static int
print_tenant(const struct kg_tenant_rec *t, bool json)
{
    char created[KG_RFC3339_MAX], disabled[KG_RFC3339_MAX];

    if (json)
        return kg_cli_print_json(kg_render_tenant_json(t));
    kg_output_fields(stdout,
                     (const struct kg_output_field[]){
                         {"name", t->name},
                         {"display name", t->display_name[0] != '\0' ? t->display_name : "-"},
                         {"state", t->disabled_at != 0 ? "disabled" : "active"},
                         {"created", kg_output_time(t->created_at, "-", created)},
                         {"disabled", kg_output_time(t->disabled_at, "-", disabled)},
                     },
                     5);
    return KG_CLI_EXIT_OK;
}

static int
tenants_create(int argc, char **argv, const char *config)
{
    const char *cmd = "tenants create";
    struct kg_tenant_new req = {0};
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "display-name", .metavar = "TEXT", .value = &req.display_name},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_tenant_rec t;
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    ex =
        kg_cli_parse_one(cmd, tenants_create_usage, argc, argv, opts, "tenant name", &a, &req.name);
    if (ex >= 0)
        return ex;
    rc = kg_accounts_check_tenant(req.name, &err);
    if (rc != KG_OK)
        return kg_cli_fail(rc, &err);
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_tenant_create(&kc, NULL, &req, kg_time_now(), &t, &err);
    ex = rc != KG_OK ? kg_cli_fail(rc, &err) : print_tenant(&t, json);
    kg_instance_close(inst);
    return ex;
}

static bool
tenant_row(const struct kg_tenant_rec *t, void *ctx)
{
    struct kg_cli_list *tc = ctx;
    char created[KG_RFC3339_MAX];

    if (tc->arr != NULL) {
        tc->failed = json_array_append_new(tc->arr, kg_render_tenant_json(t)) != 0;
    } else {
        const char *cells[] = {t->name, t->display_name[0] != '\0' ? t->display_name : "-",
                               kg_output_time(t->created_at, "-", created),
                               t->disabled_at != 0 ? "disabled" : "active"};

        tc->failed = kg_output_table_add(tc->table, cells) != KG_OK;
    }
    return !tc->failed;
}

static int
tenants_list(int argc, char **argv, const char *config)
{
    static const char *const headers[] = {"NAME", "DISPLAY NAME", "CREATED", "STATE"};
    const char *cmd = "tenants list";
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_cli_list tc = {0};
    struct kg_err err = {{0}};
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, tenants_list_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    ex = kg_cli_list_open(&tc, json, headers, sizeof(headers) / sizeof(headers[0]));
    if (ex == KG_CLI_EXIT_OK) {
        rc = kg_accounts_tenant_list(&kc, NULL, NULL, tenant_row, &tc, NULL, &err);
        ex = kg_cli_list_close(&tc, rc, "out of memory listing", &err);
    }
    kg_instance_close(inst);
    return ex;
}

static int
tenants_show(int argc, char **argv, const char *config)
{
    const char *cmd = "tenants show";
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_tenant_rec t;
    struct kg_keys_ctx kc;
    const char *name = NULL;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_one(cmd, tenants_show_usage, argc, argv, opts, "tenant name", &a, &name);
    if (ex >= 0)
        return ex;
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_tenant_get(&kc, NULL, name, &t, &err);
    ex = rc != KG_OK ? kg_cli_fail(rc, &err) : print_tenant(&t, json);
    kg_instance_close(inst);
    return ex;
}

static int
tenants_update(int argc, char **argv, const char *config)
{
    const char *cmd = "tenants update";
    struct kg_tenant_change chg = {0};
    bool json = false, disable = false, enable = false;
    const struct kg_cli_opt opts[] = {
        {.name = "display-name", .metavar = "TEXT", .value = &chg.display_name},
        {.name = "disable", .flag = &disable},
        {.name = "enable", .flag = &enable},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_tenant_rec t;
    struct kg_keys_ctx kc;
    const char *name = NULL;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_one(cmd, tenants_update_usage, argc, argv, opts, "tenant name", &a, &name);
    if (ex >= 0)
        return ex;
    if (disable && enable)
        return kg_cli_usage_error(cmd, "--disable and --enable contradict each other");
    if (!disable && !enable && chg.display_name == NULL)
        return kg_cli_usage_error(cmd, "nothing to change (see keygate %s --help)", cmd);
    chg.set_disabled = disable || enable;
    chg.disabled = disable;
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_tenant_update(&kc, NULL, name, &chg, kg_time_now(), &t, &err);
    ex = rc != KG_OK ? kg_cli_fail(rc, &err) : print_tenant(&t, json);
    kg_instance_close(inst);
    return ex;
}

/* ---- users ---- */

/* Prints u; with used (users show), what it used of its credits and of its
 * tier's quota (tier NULL: the config names no such tier). */
static int
print_user_usage(const struct kg_user_rec *u, const struct kg_user_usage *used,
                 const struct kg_tier *tier, bool json)
{
    char created[KG_RFC3339_MAX], disabled[KG_RFC3339_MAX], credits[96], tq[96] = "";

    if (json) {
        json_t *o = kg_render_user_json(u);

        if (o != NULL && used != NULL && !kg_render_user_usage(o, used)) {
            json_decref(o);
            o = NULL;
        }
        return kg_cli_print_json(o);
    }
    if (!u->has_quota)
        snprintf(credits, sizeof(credits), "unlimited");
    else
        snprintf(credits, sizeof(credits), "%" PRId64 "%s%s", u->quota_limit,
                 u->quota_period[0] != '\0' ? " per " : "", u->quota_period);
    if (used != NULL) {
        size_t n = strlen(credits);

        snprintf(credits + n, sizeof(credits) - n, " (used %" PRId64 ")", used->credits);
        if (tier == NULL || tier->quota_period == KG_QUOTA_NONE)
            snprintf(tq, sizeof(tq), "none");
        else
            snprintf(tq, sizeof(tq), "%" PRId64 " per %s (used %" PRId64 ")", tier->quota,
                     tier->quota_period == KG_QUOTA_DAY ? "day" : "month", used->tier);
    }
    kg_output_fields(stdout,
                     (const struct kg_output_field[]){
                         {"id", u->id},
                         {"username", u->username},
                         {"tenant", u->tenant},
                         {"email", u->email[0] != '\0' ? u->email : "-"},
                         {"first name", u->first_name[0] != '\0' ? u->first_name : "-"},
                         {"last name", u->last_name[0] != '\0' ? u->last_name : "-"},
                         {"role", u->role[0] != '\0' ? u->role : "(no scopes)"},
                         {"tier", u->tier},
                         {"platform admin", u->platform_admin ? "yes" : "no"},
                         {"password", u->password_hash[0] != '\0' ? "set" : "none"},
                         {"state", u->disabled_at != 0 ? "disabled" : "active"},
                         {"created", kg_output_time(u->created_at, "-", created)},
                         {"disabled", kg_output_time(u->disabled_at, "-", disabled)},
                         {"credits", credits},
                         {"tier quota", tq},
                     },
                     used != NULL ? 15 : 14);
    return KG_CLI_EXIT_OK;
}

static int
print_user(const struct kg_user_rec *u, bool json)
{
    return print_user_usage(u, NULL, NULL, json);
}

static int
users_create(int argc, char **argv, const char *config)
{
    const char *cmd = "users create";
    struct kg_user_new req = {0};
    const char *credits = NULL;
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "username", .metavar = "NAME", .value = &req.username},
        {.name = "tenant", .metavar = "TENANT", .value = &req.tenant},
        {.name = "email", .metavar = "ADDRESS", .value = &req.email},
        {.name = "first-name", .metavar = "TEXT", .value = &req.first_name},
        {.name = "last-name", .metavar = "TEXT", .value = &req.last_name},
        {.name = "role", .metavar = "SCOPES", .value = &req.role},
        {.name = "tier", .metavar = "TIER", .value = &req.tier},
        {.name = "platform-admin", .flag = &req.platform_admin},
        {.name = "credits", .metavar = "N", .value = &credits},
        {.name = "refill", .metavar = "PERIOD", .value = &req.refill},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_user_rec u;
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, users_create_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    if (credits != NULL) {
        ex = kg_cli_credits(cmd, credits, false, &req.credits);
        if (ex != KG_CLI_EXIT_OK)
            return ex;
        req.has_credits = true;
    }
    if (req.username == NULL && req.email == NULL)
        return kg_cli_usage_error(cmd, "--username is required (see keygate %s --help)", cmd);
    rc = kg_accounts_user_check_new(&req, &err);
    if (rc != KG_OK)
        return kg_cli_fail(rc, &err);
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_user_create(&kc, NULL, &req, NULL, kg_time_now(), &u, NULL, NULL, &err);
    ex = rc != KG_OK ? kg_cli_fail(rc, &err) : print_user(&u, json);
    kg_instance_close(inst);
    return ex;
}

static bool
user_row(const struct kg_user_rec *u, void *ctx)
{
    struct kg_cli_list *tc = ctx;
    char created[KG_RFC3339_MAX];

    if (tc->arr != NULL) {
        tc->failed = json_array_append_new(tc->arr, kg_render_user_json(u)) != 0;
    } else {
        const char *cells[] = {u->id,
                               u->username,
                               u->tenant,
                               u->email[0] != '\0' ? u->email : "-",
                               u->role[0] != '\0' ? u->role : "-",
                               u->tier,
                               u->platform_admin ? "yes" : "no",
                               kg_output_time(u->created_at, "-", created),
                               u->disabled_at != 0 ? "disabled" : "active"};

        tc->failed = kg_output_table_add(tc->table, cells) != KG_OK;
    }
    return !tc->failed;
}

static int
users_list(int argc, char **argv, const char *config)
{
    static const char *const headers[] = {"ID",   "USERNAME",       "TENANT",  "EMAIL", "ROLE",
                                          "TIER", "PLATFORM ADMIN", "CREATED", "STATE"};
    const char *cmd = "users list";
    const char *tenant = NULL;
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "tenant", .metavar = "TENANT", .value = &tenant},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_cli_list tc = {0};
    struct kg_err err = {{0}};
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, users_list_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    ex = kg_cli_list_open(&tc, json, headers, sizeof(headers) / sizeof(headers[0]));
    if (ex == KG_CLI_EXIT_OK) {
        rc = kg_accounts_user_list(&kc, NULL, tenant, NULL, user_row, &tc, NULL, &err);
        ex = kg_cli_list_close(&tc, rc, "out of memory listing", &err);
    }
    kg_instance_close(inst);
    return ex;
}

/* Opens the instance and finds the user the first argument names. On
 * KG_CLI_EXIT_OK the caller closes *inst. */
static int
open_user(const char *cmd, const struct kg_cli_args *a, const char *tenant,
          struct kg_instance **inst, struct kg_keys_ctx *kc, char actor[KG_AUDIT_ACTOR_MAX],
          struct kg_user_rec *u)
{
    struct kg_err err = {{0}};
    const char *ref = NULL;
    enum kg_status rc;
    int ex;

    ex = kg_cli_one_arg(cmd, "user", a, &ref);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    ex = kg_cli_open_ctx(a->config, inst, actor, kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_user_resolve(kc, NULL, tenant, ref, u, &err);
    if (rc != KG_OK) {
        kg_instance_close(*inst);
        *inst = NULL;
        return kg_cli_fail(rc, &err);
    }
    return KG_CLI_EXIT_OK;
}

static int
users_show(int argc, char **argv, const char *config)
{
    const char *cmd = "users show";
    const char *tenant = NULL;
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "tenant", .metavar = "TENANT", .value = &tenant},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_user_usage used;
    struct kg_err err = {{0}};
    struct kg_user_rec u;
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, users_show_usage, argc, argv, opts, 1, &a);
    if (ex >= 0)
        return ex;
    ex = open_user(cmd, &a, tenant, &inst, &kc, actor, &u);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_user_usage(&kc, NULL, &u, kg_time_now(), &used, &err);
    ex = rc != KG_OK ? kg_cli_fail(rc, &err)
                     : print_user_usage(&u, &used, kg_config_tier(kc.cfg, u.tier), json);
    kg_instance_close(inst);
    return ex;
}

static int
users_update(int argc, char **argv, const char *config)
{
    const char *cmd = "users update";
    const char *tenant = NULL, *admin = NULL, *credits = NULL;
    struct kg_user_change chg = {0};
    bool json = false, enable = false;
    const struct kg_cli_opt opts[] = {
        {.name = "tenant", .metavar = "TENANT", .value = &tenant},
        {.name = "username", .metavar = "NAME", .value = &chg.username},
        {.name = "email", .metavar = "ADDRESS", .value = &chg.email},
        {.name = "first-name", .metavar = "TEXT", .value = &chg.first_name},
        {.name = "last-name", .metavar = "TEXT", .value = &chg.last_name},
        {.name = "role", .metavar = "SCOPES", .value = &chg.role},
        {.name = "tier", .metavar = "TIER", .value = &chg.tier},
        {.name = "platform-admin", .metavar = "yes|no", .value = &admin},
        {.name = "enable", .flag = &enable},
        {.name = "credits", .metavar = "N", .value = &credits},
        {.name = "refill", .metavar = "PERIOD", .value = &chg.quota_period},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_user_rec u;
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, users_update_usage, argc, argv, opts, 1, &a);
    if (ex >= 0)
        return ex;
    if (admin != NULL) {
        if (strcmp(admin, "yes") != 0 && strcmp(admin, "no") != 0)
            return kg_cli_usage_error(cmd, "--platform-admin wants yes or no");
        chg.set_platform_admin = true;
        chg.platform_admin = strcmp(admin, "yes") == 0;
    }
    chg.set_disabled = enable;
    chg.disabled = false;
    if (credits != NULL) {
        ex = kg_cli_credits(cmd, credits, true, &chg.quota_limit);
        if (ex != KG_CLI_EXIT_OK)
            return ex;
        chg.set_quota_limit = true;
    }
    if (chg.quota_period != NULL && strcmp(chg.quota_period, "never") == 0)
        chg.quota_period = "";
    if (chg.username == NULL && chg.email == NULL && chg.first_name == NULL &&
        chg.last_name == NULL && chg.role == NULL && chg.tier == NULL && admin == NULL && !enable &&
        credits == NULL && chg.quota_period == NULL)
        return kg_cli_usage_error(cmd, "nothing to change (see keygate %s --help)", cmd);
    ex = open_user(cmd, &a, tenant, &inst, &kc, actor, &u);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_user_update(&kc, NULL, u.id, &chg, kg_time_now(), &u, &err);
    ex = rc != KG_OK ? kg_cli_fail(rc, &err) : print_user(&u, json);
    kg_instance_close(inst);
    return ex;
}

/* Reads one line into buf (cap bytes, sodium memory) without its line end;
 * false when there is none or it does not fit. */
static bool
read_line(FILE *in, char *buf, size_t cap)
{
    size_t n;

    if (fgets(buf, (int)cap, in) == NULL)
        return false;
    n = strlen(buf);
    if (n > 0 && buf[n - 1] != '\n' && !feof(in))
        return false; /* longer than the buffer: refused whole, not cut */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return true;
}

/* The password, asked twice without echo on a terminal, else the first
 * line of stdin. Returns an exit code; pw holds it on KG_CLI_EXIT_OK. */
static int
read_password(const char *cmd, char *pw, char *again, size_t cap)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    bool ok;

    if (!tty) {
        if (!read_line(stdin, pw, cap)) {
            fprintf(stderr,
                    "keygate %s: no password on standard input (one line, at most %d "
                    "bytes)\n",
                    cmd, KG_PASSWORD_MAX);
            return KG_CLI_EXIT_FAIL;
        }
        return KG_CLI_EXIT_OK;
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    fputs("New password: ", stderr);
    fflush(stderr);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    ok = read_line(stdin, pw, cap);
    fputs("\nRepeat it: ", stderr);
    fflush(stderr);
    ok = read_line(stdin, again, cap) && ok;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fputs("\n", stderr);
    if (!ok || strcmp(pw, again) != 0) {
        fprintf(stderr, "keygate %s: the two passwords differ\n", cmd);
        return KG_CLI_EXIT_FAIL;
    }
    return KG_CLI_EXIT_OK;
}

static int
users_passwd(int argc, char **argv, const char *config)
{
    const char *cmd = "users passwd";
    const char *tenant = NULL;
    const struct kg_cli_opt opts[] = {
        {.name = "tenant", .metavar = "TENANT", .value = &tenant},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_user_rec u;
    struct kg_keys_ctx kc;
    /* One byte more than the rule allows, so a longer line is told apart. */
    size_t cap = KG_PASSWORD_MAX + 3;
    char *pw = NULL, *again = NULL;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, users_passwd_usage, argc, argv, opts, 1, &a);
    if (ex >= 0)
        return ex;
    if (sodium_init() < 0 || (pw = sodium_malloc(cap)) == NULL ||
        (again = sodium_malloc(cap)) == NULL) {
        fprintf(stderr, "keygate %s: out of memory\n", cmd);
        ex = KG_CLI_EXIT_FAIL;
        goto cleanup;
    }
    ex = open_user(cmd, &a, tenant, &inst, &kc, actor, &u);
    if (ex != KG_CLI_EXIT_OK)
        goto cleanup;
    ex = read_password(cmd, pw, again, cap);
    if (ex != KG_CLI_EXIT_OK)
        goto cleanup;
    rc = kg_accounts_user_set_password(&kc, NULL, u.id, pw, kg_time_now(), &u, &err);
    if (rc != KG_OK)
        ex = kg_cli_fail(rc, &err);
    else
        printf("password set for %s\n", u.id);
cleanup:
    sodium_free(pw); /* wipes */
    sodium_free(again);
    kg_instance_close(inst);
    return ex;
}

static int
users_disable(int argc, char **argv, const char *config)
{
    const char *cmd = "users disable";
    const char *tenant = NULL;
    const struct kg_cli_opt opts[] = {
        {.name = "tenant", .metavar = "TENANT", .value = &tenant},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_err err = {{0}};
    struct kg_user_rec u;
    struct kg_keys_ctx kc;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, users_disable_usage, argc, argv, opts, 1, &a);
    if (ex >= 0)
        return ex;
    ex = open_user(cmd, &a, tenant, &inst, &kc, actor, &u);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_accounts_user_disable(&kc, NULL, u.id, kg_time_now(), &u, &err);
    if (rc != KG_OK)
        ex = kg_cli_fail(rc, &err);
    else
        printf("disabled %s\n", u.id);
    kg_instance_close(inst);
    return ex;
}

static const struct kg_cli_subverb tenant_verbs[] = {
    {"create", tenants_create, "make a tenant"},
    {"list", tenants_list, "list tenants"},
    {"show", tenants_show, "show one tenant"},
    {"update", tenants_update, "rename a tenant for people, disable or enable it"},
};

static const struct kg_cli_subverb user_verbs[] = {
    {"create", users_create, "make a user"},
    {"list", users_list, "list users"},
    {"show", users_show, "show one user"},
    {"update", users_update, "change a user's role, tier, names, e-mail or admin flag"},
    {"disable", users_disable, "disable a user and stop all of its keys"},
    {"passwd", users_passwd, "set a user's console password (from a terminal or stdin)"},
};

int
kg_cli_tenants(int argc, char **argv)
{
    return kg_cli_dispatch("tenants", tenant_verbs, sizeof(tenant_verbs) / sizeof(tenant_verbs[0]),
                           argc, argv);
}

int
kg_cli_users(int argc, char **argv)
{
    return kg_cli_dispatch("users", user_verbs, sizeof(user_verbs) / sizeof(user_verbs[0]), argc,
                           argv);
}
