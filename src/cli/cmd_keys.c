/* cli/cmd_keys.c - `keygate keys create|list|show|update|revoke|rotate`.
 *
 * Each sub-verb parses its options, checks what it can before opening
 * anything (so a typo never creates a database or a secret), opens the
 * instance, makes one call into manage/keys.c and prints the result through
 * output.c and manage/render.c. No rule about keys is decided here. A full key is printed only
 * by create and rotate, once, through kg_output_secret_line() or
 * kg_output_json_secret(), and wiped right after.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli_int.h"
#include "keygate/accounts.h"
#include "keygate/cli.h"
#include "keygate/keycache.h"
#include "keygate/keyfmt.h"
#include "keygate/keys.h"
#include "keygate/leaks.h"
#include "keygate/output.h"
#include "keygate/quota.h"
#include "keygate/timeutil.h"

static const char create_usage[] =
    "usage: keygate keys create --name NAME [--scopes S1,S2] [--user USER] [--tenant TENANT]\n"
    "                           [--expires 30d|90d|365d|TIME] [--rate N/s|N/min|N/h]\n"
    "                           [--burst N] [--credits N [--refill day|month]]\n"
    "                           [--allow-ip CIDR[,CIDR...]] [--canary] [--json] [-c FILE]\n"
    "\n"
    "Makes a key and prints it once, on the last line (\"key\" with --json). Only a\n"
    "digest is stored: the key cannot be shown again.\n"
    "\n"
    "  --name NAME         what the key is for: 1-128 bytes, no control characters\n"
    "  --scopes LIST       comma-separated scopes, e.g. read:items,write:items; they\n"
    "                      must fit the user's role\n"
    "  --user USER         the owner: a user id, or a username in the tenant\n"
    "                      (default: the tenant's user \"default\", made if missing)\n"
    "  --tenant TENANT     1-64 of A-Z a-z 0-9 _ . - (default: default, or the\n"
    "                      user's tenant)\n"
    "  --expires WHEN      a duration from now (30d, 90d, 365d; units s m h d w)\n"
    "                      or an RFC 3339 time such as 2026-12-31T23:59:59Z\n"
    "                      (default: never)\n"
    "  --rate RATE         the key's own rate limit (default: rate_limit_default)\n"
    "  --burst N           requests it may make at once, 1-1000000000\n"
    "                      (default: the rate's N)\n"
    "  --credits N         credits it may spend, 0-1000000000 (default: unlimited);\n"
    "                      a request costs its `cost` rule's units, charged on 2xx\n"
    "  --refill PERIOD     day or month: the credits come back at the start of\n"
    "                      each UTC day or month (default: never)\n"
    "  --allow-ip LIST     the only address blocks it may be used from, IPv4 or\n"
    "                      IPv6 (192.0.2.0/24,2001:db8::/32); others get a 403\n"
    "                      (default: anywhere)\n"
    "  --canary            a canary key: it never grants access (every use gets the\n"
    "                      401 of an unknown key) and each use fires canary.used;\n"
    "                      plant it where an attacker would look\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char list_usage[] =
    "usage: keygate keys list [--state active|expired|revoked|all] [--tenant TENANT]\n"
    "                         [--user USER] [--json] [-c FILE]\n"
    "\n"
    "Lists keys, oldest first, masked (prefix...last4), with the requests each made\n"
    "and when it was last used (as the daemon last wrote them: at most a second\n"
    "old). Without --state, keys in every state are listed. A key that expires\n"
    "within 14 days is marked \"(expiring)\" after its expiry.\n"
    "\n"
    "  --state STATE       only keys in this state (default: all)\n"
    "  --tenant TENANT     only keys of this tenant\n"
    "  --user USER         only keys of this user (an id, or a username in --tenant\n"
    "                      or the default tenant)\n"
    "  --json              print a JSON array\n"
    "  -c, --config FILE   config file\n";

static const char show_usage[] =
    "usage: keygate keys show ID [--json] [-c FILE]\n"
    "\n"
    "Shows every field of one key, masked, with its state; during a rotation\n"
    "grace period, also when the key stops working.\n"
    "\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char update_usage[] =
    "usage: keygate keys update ID [--name NAME] [--scopes S1,S2] [--expires WHEN|never]\n"
    "                           [--rate N/s|N/min|N/h|default] [--burst N]\n"
    "                           [--credits N|unlimited] [--refill day|month|never]\n"
    "                           [--allow-ip CIDR[,CIDR...]|any] [--json] [-c FILE]\n"
    "\n"
    "Changes a key that is not revoked. Scopes can only narrow: every new scope\n"
    "must be granted by the key's current scopes (a key without scopes may take\n"
    "any), and fit its user's role.\n"
    "\n"
    "  --name NAME         a new name\n"
    "  --scopes LIST       the new, narrower scopes\n"
    "  --expires WHEN      a duration from now, an RFC 3339 time, or never\n"
    "  --rate RATE         the key's own rate limit, or default\n"
    "  --burst N           its burst, 1-1000000000, or 0 for the default\n"
    "  --credits N         credits it may spend (0-1000000000), or unlimited;\n"
    "                      what it has used so far stays\n"
    "  --refill PERIOD     day, month or never\n"
    "  --allow-ip LIST     the only address blocks it may be used from, or any\n"
    "  --json              print the key as one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char revoke_usage[] =
    "usage: keygate keys revoke ID [-c FILE]\n"
    "\n"
    "Revokes a key at once and for good. A key in a rotation grace period stops\n"
    "working now.\n"
    "\n"
    "  -c, --config FILE   config file\n";

static const char rotate_usage[] =
    "usage: keygate keys rotate ID [--grace DURATION] [--json] [-c FILE]\n"
    "\n"
    "Makes a new key with the old one's name, scopes, tenant, limits and expiry,\n"
    "prints it once, and revokes the old key now or when the grace period ends.\n"
    "\n"
    "  --grace DURATION    keep the old key working this long (15m, 1h, 7d; s m h d w)\n"
    "  --json              print one JSON object (adds replaces, old_key_revoked_at)\n"
    "  -c, --config FILE   config file\n";

static const char leaked_usage[] =
    "usage: keygate keys leaked [--source URL] [--json] [-c FILE] < strings\n"
    "\n"
    "Reads strings found somewhere (one per line on stdin: a public repository,\n"
    "a paste site) and revokes every one that is a key of this keygate\n"
    "(leak_action flag: only reports it), audited with the source and announced\n"
    "as key.leaked. Strings that are not keys are counted, never stored. Prints\n"
    "how many were keys, revoked and already revoked.\n"
    "\n"
    "  --source URL        where the strings were found\n"
    "  --json              print one JSON object\n"
    "  -c, --config FILE   config file\n";

static const char shown_once[] = "warning: save this key now; it will not be shown again";

int
kg_cli_print_new_key(const struct kg_key_rec *rec, const char *key, const struct kg_key_rec *old,
                     bool json)
{
    struct kg_err err = {{0}};
    enum kg_status rc;

    if (json) {
        json_t *obj = kg_render_new_key_json(rec);

        if (obj != NULL && old != NULL &&
            (json_object_set_new(obj, "replaces", json_string(old->id)) != 0 ||
             json_object_set_new(obj, "old_key_revoked_at", kg_json_io_time(old->revoked_at)) !=
                 0)) {
            json_decref(obj);
            obj = NULL;
        }
        if (obj == NULL)
            return kg_cli_fail(KG_ENOMEM, NULL);
        rc = kg_output_json_secret(stdout, obj, "key", key, &err);
        json_decref(obj);
    } else {
        char created[KG_RFC3339_MAX], expires[KG_RFC3339_MAX], until[KG_RFC3339_MAX];
        const struct kg_output_field fields[] = {
            {"id", rec->id},
            {"name", rec->name},
            {"prefix", rec->prefix},
            {"scopes", rec->scopes[0] != '\0' ? rec->scopes : "-"},
            {"tenant", rec->tenant},
            {"user", rec->user_id},
            {"created", kg_output_time(rec->created_at, "-", created)},
            {"expires", kg_output_time(rec->expires_at, "never", expires)},
        };

        kg_output_fields(stdout, fields, sizeof(fields) / sizeof(fields[0]));
        if (rec->allowed_ips[0] != '\0')
            printf("allowed ips: %s\n", rec->allowed_ips);
        if (rec->canary)
            printf("canary: yes: this key never grants access; every use is reported\n");
        if (old != NULL) {
            if (old->revoked_at > rec->created_at)
                printf("replaces %s, which stops working at %s\n", old->id,
                       kg_time_format(old->revoked_at, until));
            else
                printf("replaces %s, which stops working now\n", old->id);
        }
        /* Last, on a line of its own, so `tail -n 1` is all a script needs. */
        rc = kg_output_secret_line(stdout, key, &err);
    }
    if (rc != KG_OK)
        return kg_cli_fail(rc, &err);
    fprintf(stderr, "%s\n", shown_once);
    return KG_CLI_EXIT_OK;
}

static int
keys_create(int argc, char **argv, const char *config)
{
    const char *cmd = "keys create";
    struct kg_key_new req = {0};
    const char *burst = NULL, *credits = NULL;
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "name", .metavar = "NAME", .value = &req.name},
        {.name = "scopes", .metavar = "LIST", .value = &req.scopes},
        {.name = "tenant", .metavar = "TENANT", .value = &req.tenant},
        {.name = "user", .metavar = "USER", .value = &req.user},
        {.name = "expires", .metavar = "WHEN", .value = &req.expires},
        {.name = "rate", .metavar = "RATE", .value = &req.rate},
        {.name = "burst", .metavar = "N", .value = &burst},
        {.name = "credits", .metavar = "N", .value = &credits},
        {.name = "refill", .metavar = "PERIOD", .value = &req.refill},
        {.name = "allow-ip", .metavar = "LIST", .value = &req.allowed_ips},
        {.name = "canary", .flag = &req.canary},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_keys_ctx kc;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = NULL;
    enum kg_status rc;
    size_t n = 0;
    int64_t now;
    int ex;

    ex = kg_cli_parse_or_help(cmd, create_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    if (req.name == NULL)
        return kg_cli_usage_error(cmd, "--name is required (see keygate %s --help)", cmd);
    if (req.rate != NULL && strcmp(req.rate, "default") == 0)
        req.rate = NULL;
    if (burst != NULL) {
        ex = kg_cli_count(cmd, "--burst", burst, 1000000000, &n);
        if (ex != KG_CLI_EXIT_OK)
            return ex;
        req.rate_burst = (int64_t)n;
    }
    if (credits != NULL) {
        ex = kg_cli_credits(cmd, credits, false, &req.credits);
        if (ex != KG_CLI_EXIT_OK)
            return ex;
        req.has_credits = true;
    }
    now = kg_time_now();
    rc = kg_keys_check_new(&req, now, &err);
    if (rc != KG_OK)
        return kg_cli_fail(rc, &err);

    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_keys_create(&kc, NULL, &req, now, &rec, &key, &err);
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

/* Adds its "usage" (the totals the daemon has flushed, at most a second
 * behind) and, in a rotation's grace period, "still_in_use" to every key of
 * a --json listing, as GET /v1/keys does. After the walk, not in list_row:
 * the walk's callback must not call into the store. */
static enum kg_status
add_list_usage(const struct kg_keys_ctx *kc, json_t *arr, int64_t now, struct kg_err *err)
{
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    enum kg_status rc = KG_OK;
    size_t i;
    json_t *el;

    if (rec == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory listing keys");
    json_array_foreach(arr, i, el)
    {
        const char *id = json_string_value(json_object_get(el, "id"));
        enum kg_key_in_use in_use = KG_KEY_IN_USE_NONE;
        struct kg_err gerr = {{0}};
        struct kg_key_usage u;

        if (id == NULL)
            continue;
        rc = kg_store_key_usage_get(kc->store, id, &u, err);
        if (rc != KG_OK)
            break;
        /* Only a rotated key can be in a grace period: read it whole. */
        if (json_is_string(json_object_get(el, "rotated_to")) &&
            kg_keys_get(kc, NULL, id, rec, &gerr) == KG_OK)
            in_use = kg_keys_rotation_in_use(kc, NULL, rec, now);
        if (!kg_render_key_extras(el, &u, in_use)) {
            rc = kg_err_set(err, KG_ENOMEM, "out of memory listing keys");
            break;
        }
    }
    free(rec);
    return rc;
}

/* A listing walk: --json objects go straight to lc->arr; for the table
 * they gather in rows first, because usage is read after the walk. */
struct list_walk {
    struct kg_cli_list *lc;
    json_t *rows;
    int64_t now;
};

static bool
list_row(const struct kg_key_rec *rec, enum kg_key_state state, void *ctx)
{
    struct list_walk *w = ctx;
    json_t *dst = w->lc->arr != NULL ? w->lc->arr : w->rows;

    w->lc->failed = json_array_append_new(dst, kg_render_key_json(rec, state, false, w->now)) != 0;
    return !w->lc->failed;
}

/* The table for people, from the gathered objects with their usage: the
 * columns issue 2 promised (name, id, masked key, scopes, tenant, user,
 * created, last used, expires, state) plus the requests each key made. */
static const char *
cell_or(json_t *o, const char *field, const char *none)
{
    const char *v = json_string_value(json_object_get(o, field));

    return v != NULL ? v : none;
}

static void
table_rows(struct kg_cli_list *lc, json_t *rows)
{
    size_t i, j;
    json_t *o, *sc;

    json_array_foreach(rows, i, o)
    {
        json_t *usage = json_object_get(o, "usage");
        char masked[KG_DPREFIX_MAX + 8], requests[24], scopes[1024], expires[KG_RFC3339_MAX + 16];
        size_t n = 0;
        const char *cells[11];

        kg_keyfmt_mask(json_string_value(json_object_get(o, "prefix")),
                       json_string_value(json_object_get(o, "last4")), masked, sizeof(masked));
        snprintf(requests, sizeof(requests), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(usage, "requests")));
        scopes[0] = '\0';
        json_array_foreach(json_object_get(o, "scopes"), j, sc)
        {
            int w = snprintf(scopes + n, sizeof(scopes) - n, "%s%s", n > 0 ? "," : "",
                             json_string_value(sc));

            if (w < 0 || (size_t)w >= sizeof(scopes) - n)
                break;
            n += (size_t)w;
        }
        cells[0] = cell_or(o, "name", "");
        cells[1] = cell_or(o, "id", "");
        cells[2] = masked;
        cells[3] = n > 0 ? scopes : "-";
        cells[4] = cell_or(o, "tenant", "-");
        cells[5] = cell_or(o, "user_id", "-");
        cells[6] = cell_or(o, "created_at", "-");
        cells[7] = cell_or(o, "last_used_at", "never");
        /* Issue 18: keys nearing their expiry stand out in the list. */
        snprintf(expires, sizeof(expires), "%s%s", cell_or(o, "expires_at", "never"),
                 json_is_true(json_object_get(o, "expiring")) ? " (expiring)" : "");
        cells[8] = expires;
        cells[9] = cell_or(o, "state", "");
        cells[10] = requests;
        if (kg_output_table_add(lc->table, cells) != KG_OK) {
            lc->failed = true;
            return;
        }
    }
}

static int
keys_list(int argc, char **argv, const char *config)
{
    static const char *const headers[] = {"NAME",    "ID",    "KEY",     "SCOPES",
                                          "TENANT",  "USER",  "CREATED", "LAST USED",
                                          "EXPIRES", "STATE", "REQUESTS"};
    const char *cmd = "keys list";
    const char *state = NULL, *user = NULL;
    bool json = false;
    struct kg_keys_filter filter = {.all_states = true};
    const struct kg_cli_opt opts[] = {
        {.name = "state", .metavar = "STATE", .value = &state},
        {.name = "tenant", .metavar = "TENANT", .value = &filter.tenant},
        {.name = "user", .metavar = "USER", .value = &user},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_user_rec owner;
    struct kg_instance *inst = NULL;
    struct kg_keys_ctx kc;
    struct kg_cli_list lc = {0};
    struct kg_err err = {{0}};
    int64_t now = kg_time_now();
    struct list_walk w = {.lc = &lc, .now = now};
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, list_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    if (state != NULL) {
        rc = kg_key_state_parse(state, &filter.state, &filter.all_states, &err);
        if (rc != KG_OK)
            return kg_cli_usage_error(cmd, "--state: %s", err.msg);
    }
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    ex = kg_cli_list_open(&lc, json, headers, sizeof(headers) / sizeof(headers[0]));
    if (ex != KG_CLI_EXIT_OK)
        goto cleanup;
    w.rows = json_array();
    rc = w.rows != NULL ? KG_OK : kg_err_set(&err, KG_ENOMEM, "out of memory listing keys");
    if (rc == KG_OK && user != NULL) {
        rc = kg_accounts_user_resolve(&kc, NULL, filter.tenant, user, &owner, &err);
        filter.user = owner.id;
    }
    if (rc == KG_OK)
        rc = kg_keys_list(&kc, NULL, &filter, NULL, now, list_row, &w, NULL, &err);
    /* The walk cannot read owners: a key of a disabled one reads "disabled" after it. */
    if (rc == KG_OK && !lc.failed)
        kg_keys_mark_disabled(&kc, lc.arr != NULL ? lc.arr : w.rows);
    if (rc == KG_OK && !lc.failed)
        rc = add_list_usage(&kc, lc.arr != NULL ? lc.arr : w.rows, now, &err);
    if (rc == KG_OK && !lc.failed && lc.arr == NULL)
        table_rows(&lc, w.rows);
    ex = kg_cli_list_close(&lc, rc, "out of memory listing keys", &err);
cleanup:
    json_decref(w.rows);
    kg_instance_close(inst);
    return ex;
}

/* The plain form of `keys show`. */
static void
print_key_fields(const struct kg_key_rec *rec, enum kg_key_state state, int64_t now,
                 const struct kg_key_usage *u, const char *in_use)
{
    char masked[KG_DPREFIX_MAX + 8], rate[64], quota[96];
    char created[KG_RFC3339_MAX], used[KG_RFC3339_MAX], expires[KG_RFC3339_MAX];
    char revoked[KG_RFC3339_MAX], stops[KG_RFC3339_MAX + 64];
    char requests[32], denied[128];
    bool grace = rec->revoked_at > now;
    int64_t credits;
    struct kg_output_field fields[24];
    size_t n = 0;

    kg_keyfmt_mask(rec->prefix, rec->last4, masked, sizeof(masked));
    if (rec->rate[0] == '\0')
        snprintf(rate, sizeof(rate), "default");
    else if (rec->rate_burst > 0)
        snprintf(rate, sizeof(rate), "%s (burst %" PRId64 ")", rec->rate, rec->rate_burst);
    else
        snprintf(rate, sizeof(rate), "%s", rec->rate);
    credits =
        kg_quota_stored_used(rec->quota_period, rec->quota_used, rec->quota_period_start, now);
    if (rec->quota_limit < 0)
        snprintf(quota, sizeof(quota), "unlimited (used %" PRId64 ")", credits);
    else
        snprintf(quota, sizeof(quota), "%" PRId64 "%s%s (used %" PRId64 ")", rec->quota_limit,
                 rec->quota_period[0] != '\0' ? " per " : "", rec->quota_period, credits);

    fields[n++] = (struct kg_output_field){"id", rec->id};
    fields[n++] = (struct kg_output_field){"name", rec->name};
    fields[n++] = (struct kg_output_field){"key", masked};
    fields[n++] = (struct kg_output_field){"scopes", rec->scopes[0] != '\0' ? rec->scopes : "-"};
    fields[n++] = (struct kg_output_field){"tenant", rec->tenant};
    fields[n++] = (struct kg_output_field){"user", rec->user_id[0] != '\0' ? rec->user_id : "-"};
    fields[n++] = (struct kg_output_field){"state", kg_key_state_str(state)};
    fields[n++] =
        (struct kg_output_field){"created", kg_output_time(rec->created_at, "-", created)};
    fields[n++] =
        (struct kg_output_field){"last used", kg_output_time(rec->last_used_at, "never", used)};
    fields[n++] =
        (struct kg_output_field){"expires", kg_output_time(rec->expires_at, "never", expires)};
    /* A revocation in the future is a rotation grace period: the key still
     * works, and when it stops is what the reader needs. */
    fields[n++] = (struct kg_output_field){
        "revoked", grace ? "-" : kg_output_time(rec->revoked_at, "-", revoked)};
    if (grace) {
        snprintf(stops, sizeof(stops), "%s (rotation grace period)",
                 kg_time_format(rec->revoked_at, revoked));
        fields[n++] = (struct kg_output_field){"stops working", stops};
    }
    fields[n++] =
        (struct kg_output_field){"rotated to", rec->rotated_to[0] != '\0' ? rec->rotated_to : "-"};
    fields[n++] = (struct kg_output_field){"rate", rate};
    fields[n++] = (struct kg_output_field){"quota", quota};
    fields[n++] = (struct kg_output_field){
        "allowed ips", rec->allowed_ips[0] != '\0' ? rec->allowed_ips : "anywhere"};
    if (rec->canary)
        fields[n++] = (struct kg_output_field){"canary", "yes: never grants access"};
    if (kg_render_key_expiring(rec, state, now))
        fields[n++] = (struct kg_output_field){"expiring", "within 14 days"};
    if (u != NULL) {
        snprintf(requests, sizeof(requests), "%" PRId64, u->requests);
        snprintf(denied, sizeof(denied),
                 "expired %" PRId64 ", forbidden %" PRId64 ", rate limited %" PRId64,
                 u->denied_expired, u->denied_forbidden, u->denied_rate);
        fields[n++] = (struct kg_output_field){"requests", requests};
        fields[n++] = (struct kg_output_field){"denied", denied};
    }
    if (in_use != NULL)
        fields[n++] = (struct kg_output_field){"still in use", in_use};
    fields[n++] = (struct kg_output_field){"metadata", rec->metadata};
    kg_output_fields(stdout, fields, n);
}

/* One key as `keys show` and `keys update` print it; u (may be NULL) adds
 * its usage, in_use (may be NULL) the rotation line, in_use_v the same for
 * scripts. */
static int
print_key(const struct kg_keys_ctx *kc, const struct kg_key_rec *rec, int64_t now, bool json,
          const struct kg_key_usage *u, const char *in_use, enum kg_key_in_use in_use_v)
{
    enum kg_key_state state = kg_keys_state(kc, rec, now); /* "disabled" with its owner */
    json_t *o;

    if (!json) {
        print_key_fields(rec, state, now, u, in_use);
        return KG_CLI_EXIT_OK;
    }
    o = kg_render_key_json(rec, state, true, now);
    if (o != NULL && !kg_render_key_extras(o, u, in_use_v)) {
        json_decref(o);
        o = NULL;
    }
    return kg_cli_print_json(o);
}

/* During a rotation's grace period (rotated_to set, not revoked yet): was
 * the old key used since the rotation, i.e. since its successor was made?
 * The line for people goes to buf. */
static enum kg_key_in_use
rotation_in_use(const struct kg_keys_ctx *kc, const struct kg_key_rec *rec, int64_t now, char *buf,
                size_t len)
{
    enum kg_key_in_use v = kg_keys_rotation_in_use(kc, NULL, rec, now);
    char seen[KG_RFC3339_MAX];

    if (v == KG_KEY_IN_USE_UNKNOWN) {
        /* Without the successor the rotation time is unknown: say what is known. */
        snprintf(buf, len, "unknown, last seen %s",
                 kg_output_time(rec->last_used_at, "never", seen));
    } else if (v == KG_KEY_IN_USE_YES) {
        snprintf(buf, len, "yes, last seen %s", kg_time_format(rec->last_used_at, seen));
    } else if (v == KG_KEY_IN_USE_NO) {
        snprintf(buf, len, "no, not seen since the rotation (last seen %s)",
                 kg_output_time(rec->last_used_at, "never", seen));
    }
    return v;
}

static int
keys_show(int argc, char **argv, const char *config)
{
    const char *cmd = "keys show";
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_keys_ctx kc;
    struct kg_key_rec rec;
    struct kg_key_usage usage;
    struct kg_err err = {{0}};
    char in_use[KG_RFC3339_MAX + 64] = "";
    enum kg_key_in_use in_use_v;
    const char *id = NULL;
    enum kg_status rc;
    int64_t now;
    int ex;

    ex = kg_cli_parse_one(cmd, show_usage, argc, argv, opts, "key id", &a, &id);
    if (ex >= 0)
        return ex;
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_keys_get(&kc, NULL, id, &rec, &err);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    rc = kg_store_key_usage_get(kc.store, id, &usage, &err);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    now = kg_time_now();
    in_use_v = rotation_in_use(&kc, &rec, now, in_use, sizeof(in_use));
    ex = print_key(&kc, &rec, now, json, &usage, in_use[0] != '\0' ? in_use : NULL, in_use_v);
cleanup:
    kg_instance_close(inst);
    return ex;
}

static int
keys_revoke(int argc, char **argv, const char *config)
{
    const char *cmd = "keys revoke";
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_keys_ctx kc;
    struct kg_err err = {{0}};
    const char *id = NULL;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_one(cmd, revoke_usage, argc, argv, NULL, "key id", &a, &id);
    if (ex >= 0)
        return ex;
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_keys_revoke(&kc, NULL, id, kg_time_now(), NULL, &err);
    if (rc != KG_OK)
        ex = kg_cli_fail(rc, &err);
    else
        printf("revoked %s\n", id);
    kg_instance_close(inst);
    return ex;
}

static int
keys_rotate(int argc, char **argv, const char *config)
{
    const char *cmd = "keys rotate";
    const char *grace = NULL;
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "grace", .metavar = "DURATION", .value = &grace},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_keys_ctx kc;
    struct kg_key_rec fresh, old;
    struct kg_err err = {{0}};
    int64_t grace_s = 0;
    const char *id = NULL;
    char *key = NULL;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_one(cmd, rotate_usage, argc, argv, opts, "key id", &a, &id);
    if (ex >= 0)
        return ex;
    if (grace != NULL && kg_time_parse_duration(grace, &grace_s, &err) != KG_OK)
        return kg_cli_usage_error(cmd, "--grace: %s", err.msg);
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_keys_rotate(&kc, NULL, id, grace_s, kg_time_now(), &fresh, &old, &key, &err);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    ex = kg_cli_print_new_key(&fresh, key, &old, json);
cleanup:
    kg_keys_key_free(key);
    kg_instance_close(inst);
    return ex;
}

static int
keys_update(int argc, char **argv, const char *config)
{
    const char *cmd = "keys update";
    const char *burst = NULL, *credits = NULL;
    struct kg_key_change chg = {0};
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "name", .metavar = "NAME", .value = &chg.name},
        {.name = "scopes", .metavar = "LIST", .value = &chg.scopes},
        {.name = "expires", .metavar = "WHEN", .value = &chg.expires},
        {.name = "rate", .metavar = "RATE", .value = &chg.rate},
        {.name = "burst", .metavar = "N", .value = &burst},
        {.name = "credits", .metavar = "N", .value = &credits},
        {.name = "refill", .metavar = "PERIOD", .value = &chg.quota_period},
        {.name = "allow-ip", .metavar = "LIST", .value = &chg.allowed_ips},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_keys_ctx kc;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    const char *id = NULL;
    enum kg_status rc;
    size_t n = 0;
    int64_t now;
    int ex;

    ex = kg_cli_parse_one(cmd, update_usage, argc, argv, opts, "key id", &a, &id);
    if (ex >= 0)
        return ex;
    if (chg.rate != NULL && strcmp(chg.rate, "default") == 0)
        chg.rate = "";
    if (burst != NULL) {
        /* 0 is documented as "back to the default" (PATCH's null). */
        if (!kg_cli_decimal(burst, 1000000000, &n))
            return kg_cli_usage_error(cmd, "--burst wants 0 (the default) or a number from 1 to "
                                           "1000000000");
        chg.set_rate_burst = true;
        chg.rate_burst = (int64_t)n;
    }
    if (credits != NULL) {
        ex = kg_cli_credits(cmd, credits, true, &chg.quota_limit);
        if (ex != KG_CLI_EXIT_OK)
            return ex;
        chg.set_quota_limit = true;
    }
    if (chg.quota_period != NULL && strcmp(chg.quota_period, "never") == 0)
        chg.quota_period = "";
    if (chg.allowed_ips != NULL && strcmp(chg.allowed_ips, "any") == 0)
        chg.allowed_ips = "";
    if (chg.name == NULL && chg.scopes == NULL && chg.expires == NULL && chg.rate == NULL &&
        burst == NULL && credits == NULL && chg.quota_period == NULL && chg.allowed_ips == NULL)
        return kg_cli_usage_error(cmd, "nothing to change (see keygate %s --help)", cmd);
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    now = kg_time_now();
    rc = kg_keys_update(&kc, NULL, id, &chg, now, &rec, &err);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    ex = print_key(&kc, &rec, now, json, NULL, NULL, KG_KEY_IN_USE_NONE);
cleanup:
    kg_instance_close(inst);
    return ex;
}

/* Lines of stdin, at most KG_LEAK_STRINGS_MAX of at most 1 KiB each. */
static int
keys_leaked(int argc, char **argv, const char *config)
{
    const char *cmd = "keys leaked";
    const char *source = NULL;
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "source", .metavar = "URL", .value = &source},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX], line[1024];
    struct kg_instance *inst = NULL;
    struct kg_leak_result res;
    struct kg_keys_ctx kc;
    struct kg_err err = {{0}};
    char **lines = NULL;
    size_t n = 0;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help(cmd, leaked_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    lines = calloc(KG_LEAK_STRINGS_MAX, sizeof(*lines));
    if (lines == NULL)
        return kg_cli_fail(KG_ENOMEM, NULL);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        if (n == KG_LEAK_STRINGS_MAX) {
            ex = kg_cli_usage_error(cmd, "at most %d strings per report", KG_LEAK_STRINGS_MAX);
            goto cleanup;
        }
        line[strcspn(line, "\r\n")] = '\0';
        /* Counted only once copied: the cleanup wipes every counted line. */
        if ((lines[n] = strdup(line)) == NULL) {
            sodium_memzero(line, sizeof(line));
            ex = kg_cli_fail(KG_ENOMEM, NULL);
            goto cleanup;
        }
        n++;
    }
    sodium_memzero(line, sizeof(line));
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        goto cleanup;
    rc = kg_leaks_report(&kc, NULL, (const char *const *)lines, n, source, kc.cfg->leak_action,
                         kg_time_now(), &res, &err);
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    if (json)
        ex = kg_cli_print_json(
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "strings", (json_int_t)res.strings, "keys",
                      (json_int_t)res.keys, "revoked", (json_int_t)res.revoked, "already_revoked",
                      (json_int_t)res.already_revoked, "flagged", (json_int_t)res.flagged,
                      "not_keys", (json_int_t)res.not_keys));
    else
        printf("%zu string(s): %zu key(s), %zu revoked, %zu already revoked, %zu flagged, "
               "%zu not keys\n",
               res.strings, res.keys, res.revoked, res.already_revoked, res.flagged, res.not_keys);
cleanup:
    for (size_t i = 0; i < n; i++) {
        sodium_memzero(lines[i], strlen(lines[i]));
        free(lines[i]);
    }
    free(lines);
    kg_instance_close(inst);
    return ex;
}

static const struct kg_cli_subverb subverbs[] = {
    {"create", keys_create, "make a key and print it, once"},
    {"list", keys_list, "list keys, masked"},
    {"show", keys_show, "show one key, masked"},
    {"update", keys_update, "rename a key, narrow its scopes, change its expiry or rate"},
    {"revoke", keys_revoke, "revoke a key at once and for good"},
    {"rotate", keys_rotate, "replace a key, optionally after a grace period"},
    {"leaked", keys_leaked, "revoke the keys among strings found somewhere (stdin)"},
};

int
kg_cli_keys(int argc, char **argv)
{
    return kg_cli_dispatch("keys", subverbs, sizeof(subverbs) / sizeof(subverbs[0]), argc, argv);
}
