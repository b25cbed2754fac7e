/* admin/routes_events.c - POST /v1/leaks and GET /v1/events (issue 18):
 * JSON in and out over manage/leaks.c and the store's outbox; no rules of
 * their own. */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "keygate/leaks.h"
#include "keygate/render.h"

void
admin_leaks_report(struct admin_call *c)
{
    struct kg_keys_ctx kc = {.store = c->adm->store,
                             .secret = c->adm->rt->secret,
                             .cfg = c->adm->cfg,
                             .actor = c->caller.actor};
    json_t *strings = NULL, *root = NULL, *item;
    const char *source = NULL;
    const struct kg_jfield fields[] = {
        {.name = "strings", .type = KG_JARRAY, .required = true, .out = &strings},
        {.name = "source", .type = KG_JSTRING, .nullable = true, .out = &source},
    };
    const char **list = NULL;
    struct kg_leak_result res;
    struct kg_err err = {{0}};
    enum kg_status rc;
    size_t i, n;

    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        goto cleanup;
    n = json_array_size(strings);
    if (n > KG_LEAK_STRINGS_MAX) {
        admin_fail(c, 400, "strings: at most 1000 per report");
        goto cleanup;
    }
    list = calloc(n + 1, sizeof(*list));
    if (list == NULL) {
        admin_fail(c, 500, "Internal error");
        goto cleanup;
    }
    json_array_foreach(strings, i, item)
    {
        if (!json_is_string(item)) {
            admin_fail(c, 400, "strings must be a list of strings");
            goto cleanup;
        }
        list[i] = json_string_value(item);
    }
    rc = kg_leaks_report(&kc, c->fence, list, n, source, c->adm->cfg->leak_action, c->now, &res,
                         &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    /* Revoked keys stop working before the answer goes out. */
    if (res.revoked > 0)
        admin_reload_keys(c);
    admin_reply(c, 200,
                json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "strings", (json_int_t)res.strings,
                          "keys", (json_int_t)res.keys, "revoked", (json_int_t)res.revoked,
                          "already_revoked", (json_int_t)res.already_revoked, "flagged",
                          (json_int_t)res.flagged, "not_keys", (json_int_t)res.not_keys));
cleanup:
    free(list);
    json_decref(root);
}

struct list_ctx {
    json_t *data;
    bool failed;
};

static bool
list_event(const struct kg_event *ev, void *ctx)
{
    struct list_ctx *lc = ctx;

    lc->failed = json_array_append_new(lc->data, kg_render_event_json(ev)) != 0;
    return !lc->failed;
}

void
admin_events_list(struct admin_call *c)
{
    static const char *const allowed[] = {"limit", "cursor", "type", "state", NULL};
    struct list_ctx lc = {.data = json_array()};
    struct kg_event_query q = {.tenant = c->fence};
    struct kg_err err = {{0}};
    char next[KG_CURSOR_MAX] = "";
    enum kg_status rc;

    if (lc.data == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, allowed) || !admin_page(c, &q.page))
        goto cleanup;
    q.type = admin_query(c, "type");
    q.state = admin_query(c, "state");
    if (q.state != NULL && strcmp(q.state, "pending") != 0 && strcmp(q.state, "delivered") != 0 &&
        strcmp(q.state, "failed") != 0) {
        admin_fail(c, 400, "state must be pending, delivered or failed");
        goto cleanup;
    }
    rc = kg_store_event_list(c->adm->store, &q, list_event, &lc, next, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    if (lc.failed) {
        admin_fail(c, 500, "Internal error");
        goto cleanup;
    }
    admin_reply_list(c, lc.data, next);
    lc.data = NULL;
cleanup:
    json_decref(lc.data);
}
