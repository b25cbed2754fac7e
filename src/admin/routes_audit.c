/* admin/routes_audit.c - GET /v1/audit over manage/audit.h, and the record
 * of refused admin authentications. Entries are shown as stored, with
 * their chain hashes, so a client can follow the chain itself. */
#include <string.h>

#include "admin/admin_int.h"
#include "keygate/audit.h"
#include "keygate/keys.h"
#include "keygate/log.h"
#include "keygate/render.h"
#include "keygate/timeutil.h"

struct list_ctx {
    json_t *data;
    bool failed;
};

static bool
list_entry(const struct kg_audit_entry *e, void *p)
{
    struct list_ctx *lc = p;
    json_t *o = kg_render_audit_json(e); /* the CLI's shape, hand-edited rows included */

    if (o == NULL || json_array_append_new(lc->data, o) != 0) {
        lc->failed = true;
        return false;
    }
    return true;
}

void
admin_audit_list(struct admin_call *c)
{
    static const char *const allowed[] = {"limit", "cursor", "tenant", "order", NULL};
    struct kg_keys_ctx kc = {.store = c->adm->store,
                             .secret = c->adm->rt->secret,
                             .cfg = c->adm->cfg,
                             .actor = c->caller.actor};
    struct kg_audit_filter filter = {0};
    struct list_ctx lc = {.data = json_array()};
    struct kg_page page;
    struct kg_err err = {{0}};
    char next[KG_CURSOR_MAX] = "";
    const char *order;
    enum kg_status rc;

    if (lc.data == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, allowed) || !admin_page(c, &page))
        goto cleanup;
    order = admin_query(c, "order");
    if (order != NULL && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0) {
        admin_fail(c, 400, "order must be asc or desc");
        goto cleanup;
    }
    filter.newest_first = order != NULL && strcmp(order, "desc") == 0;
    filter.tenant = admin_query(c, "tenant");
    rc = kg_audit_list(&kc, c->fence, &filter, &page, list_entry, &lc, next, &err);
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

void
admin_audit_auth_failed(struct kg_admin *adm, const char *presented, size_t len, const char *reason)
{
    struct kg_err err = {{0}};

    if (kg_audit_auth_failed(adm->store, kg_time_now(), presented, len, reason, &err) != KG_OK)
        kg_log_warnx("admin: recording a refused authentication: %s", err.msg);
}
