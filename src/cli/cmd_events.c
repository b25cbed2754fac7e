/* cli/cmd_events.c - `keygate events list|retry` (issue 18): the webhook
 * outbox as the store holds it, newest first, and failed deliveries made
 * pending again (a running daemon sends them within a second). */
#include <stdio.h>
#include <string.h>

#include "cli_int.h"
#include "keygate/cli.h"
#include "keygate/output.h"
#include "keygate/render.h"
#include "keygate/timeutil.h"

static const char list_usage[] =
    "usage: keygate events list [--type TYPE] [--state pending|delivered|failed]\n"
    "                           [--limit N] [--json] [-c FILE]\n"
    "\n"
    "Lists webhook events, newest first, with their deliveries (docs/events.md).\n"
    "\n"
    "  --type TYPE         only events of this type (key.created, canary.used, ...)\n"
    "  --state STATE       only events with a delivery in this state\n"
    "  --limit N           at most N events (default 100)\n"
    "  --json              print a JSON array\n"
    "  -c, --config FILE   config file\n";

static const char retry_usage[] =
    "usage: keygate events retry [ID|--all] [-c FILE]\n"
    "\n"
    "Makes the failed deliveries of event ID (or of every event with --all)\n"
    "pending again, retried from the first attempt.\n"
    "\n"
    "  --all               every failed delivery\n"
    "  -c, --config FILE   config file\n";

struct walk {
    json_t *arr;
    bool failed;
};

static bool
one(const struct kg_event *ev, void *ctx)
{
    struct walk *w = ctx;

    w->failed = json_array_append_new(w->arr, kg_render_event_json(ev)) != 0;
    return !w->failed;
}

static int
events_list(int argc, char **argv, const char *config)
{
    const char *cmd = "events list";
    const char *limit = NULL;
    struct kg_event_query q = {.page.limit = 100};
    bool json = false;
    const struct kg_cli_opt opts[] = {
        {.name = "type", .metavar = "TYPE", .value = &q.type},
        {.name = "state", .metavar = "STATE", .value = &q.state},
        {.name = "limit", .metavar = "N", .value = &limit},
        {.name = "json", .flag = &json},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct walk w = {0};
    struct kg_keys_ctx kc;
    struct kg_err err = {{0}};
    enum kg_status rc;
    size_t i;
    json_t *o;
    int ex;

    ex = kg_cli_parse_or_help(cmd, list_usage, argc, argv, opts, 0, &a);
    if (ex >= 0)
        return ex;
    if (limit != NULL) {
        ex = kg_cli_count(cmd, "--limit", limit, 10000, &q.page.limit);
        if (ex != KG_CLI_EXIT_OK)
            return ex;
    }
    if (q.state != NULL && strcmp(q.state, "pending") != 0 && strcmp(q.state, "delivered") != 0 &&
        strcmp(q.state, "failed") != 0)
        return kg_cli_usage_error(cmd, "--state wants pending, delivered or failed");
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    w.arr = json_array();
    rc = w.arr != NULL ? kg_store_event_list(kc.store, &q, one, &w, NULL, &err)
                       : kg_err_set(&err, KG_ENOMEM, "out of memory");
    if (rc == KG_OK && w.failed)
        rc = kg_err_set(&err, KG_ENOMEM, "out of memory");
    if (rc != KG_OK) {
        ex = kg_cli_fail(rc, &err);
        goto cleanup;
    }
    if (json) {
        ex = kg_cli_print_json(w.arr);
        w.arr = NULL;
        goto cleanup;
    }
    printf("%-28s  %-16s  %-20s  %-24s  %s\n", "ID", "TYPE", "TIME", "KEY", "DELIVERIES");
    json_array_foreach(w.arr, i, o)
    {
        json_t *d = json_object_get(o, "deliveries");
        const char *key = json_string_value(json_object_get(json_object_get(o, "key"), "id"));

        printf("%-28s  %-16s  %-20s  %-24s  %lld delivered, %lld pending, %lld failed\n",
               json_string_value(json_object_get(o, "id")),
               json_string_value(json_object_get(o, "type")),
               json_string_value(json_object_get(o, "time")), key != NULL ? key : "-",
               (long long)json_integer_value(json_object_get(d, "delivered")),
               (long long)json_integer_value(json_object_get(d, "pending")),
               (long long)json_integer_value(json_object_get(d, "failed")));
    }
cleanup:
    json_decref(w.arr);
    kg_instance_close(inst);
    return ex;
}

static int
events_retry(int argc, char **argv, const char *config)
{
    const char *cmd = "events retry";
    bool all = false;
    const struct kg_cli_opt opts[] = {
        {.name = "all", .flag = &all},
        {0},
    };
    struct kg_cli_args a = {.config = config};
    char actor[KG_AUDIT_ACTOR_MAX];
    struct kg_instance *inst = NULL;
    struct kg_keys_ctx kc;
    struct kg_err err = {{0}};
    const char *id = NULL;
    enum kg_status rc;
    size_t n = 0;
    int ex;

    ex = kg_cli_parse_or_help(cmd, retry_usage, argc, argv, opts, 1, &a);
    if (ex >= 0)
        return ex;
    id = a.npos > 0 ? a.pos[0] : NULL;
    if ((id == NULL) == !all)
        return kg_cli_usage_error(cmd, "give an event id or --all (see keygate %s --help)", cmd);
    ex = kg_cli_open_ctx(a.config, &inst, actor, &kc);
    if (ex != KG_CLI_EXIT_OK)
        return ex;
    rc = kg_store_event_retry(kc.store, id, NULL, kg_time_now(), &n, &err);
    if (rc != KG_OK)
        ex = kg_cli_fail(rc, &err);
    else
        printf("%zu failed deliver%s pending again\n", n, n == 1 ? "y is" : "ies are");
    kg_instance_close(inst);
    return ex;
}

static const struct kg_cli_subverb subverbs[] = {
    {"list", events_list, "list webhook events, newest first"},
    {"retry", events_retry, "send failed deliveries again"},
};

int
kg_cli_events(int argc, char **argv)
{
    return kg_cli_dispatch("events", subverbs, sizeof(subverbs) / sizeof(subverbs[0]), argc, argv);
}
