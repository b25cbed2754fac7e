/* admin/routes_accounts.c - /v1/users and /v1/tenants over manage/accounts.h.
 *
 * Decodes, calls the core with the caller's fence and actor, encodes. Every
 * rule (names, e-mail, roles, who may grant platform admin, conflicts) is
 * the core's. A change that can stop keys (disabling a user or tenant,
 * narrowing a role) reloads the key cache before the answer. A password
 * hash is never part of an answer.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "admin/admin_int.h"
#include "keygate/accounts.h"
#include "keygate/keys.h"
#include "keygate/render.h"

static struct kg_keys_ctx
accounts_ctx(const struct admin_call *c)
{
    return (struct kg_keys_ctx){.store = c->adm->store,
                                .secret = c->adm->rt->secret,
                                .cfg = c->adm->cfg,
                                .actor = c->caller.actor};
}

/* Users and tenants as `keygate users|tenants show --json` print them
 * (manage/render.c owns the shapes; never a password hash). */
static json_t *
user_json(const struct kg_user_rec *u)
{
    return kg_render_user_json(u);
}

static json_t *
tenant_json(const struct kg_tenant_rec *t)
{
    return kg_render_tenant_json(t);
}

struct list_ctx {
    json_t *data;
    bool failed;
};

static bool
append(struct list_ctx *lc, json_t *o)
{
    if (o == NULL || json_array_append_new(lc->data, o) != 0) {
        lc->failed = true;
        return false;
    }
    return true;
}

static bool
list_user(const struct kg_user_rec *u, void *p)
{
    return append(p, user_json(u));
}

static bool
list_tenant(const struct kg_tenant_rec *t, void *p)
{
    return append(p, tenant_json(t));
}

/* Ends a listing: the page, or the error. Takes lc->data. */
static void
finish_list(struct admin_call *c, struct list_ctx *lc, enum kg_status rc, const struct kg_err *err,
            const char *next)
{
    if (rc != KG_OK)
        admin_fail_status(c, rc, err);
    else if (lc->failed)
        admin_fail(c, 500, "Internal error");
    else {
        admin_reply_list(c, lc->data, next);
        lc->data = NULL;
    }
    json_decref(lc->data);
    lc->data = NULL;
}

/* ---- users ---- */

void
admin_users_create(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct kg_user_new req = {0};
    char role[KG_SCOPES_MAX] = "";
    bool has_role = false, null_quota = false;
    const struct kg_jfield fields[] = {
        {.name = "username", .type = KG_JSTRING, .out = &req.username},
        {.name = "email", .type = KG_JSTRING, .nullable = true, .out = &req.email},
        {.name = "first_name", .type = KG_JSTRING, .out = &req.first_name},
        {.name = "last_name", .type = KG_JSTRING, .out = &req.last_name},
        {.name = "tenant", .type = KG_JSTRING, .out = &req.tenant},
        {.name = "role", .type = KG_JSCOPES, .out = role, .present = &has_role},
        {.name = "tier", .type = KG_JSTRING, .out = &req.tier},
        {.name = "platform_admin", .type = KG_JBOOL, .out = &req.platform_admin},
        /* The key document's names: null or -1 is unlimited. */
        {.name = "quota_limit",
         .type = KG_JINT,
         .nullable = true,
         .out = &req.credits,
         .present = &req.has_credits,
         .is_null = &null_quota,
         .min = -1,
         .max = KG_JSON_COUNT_MAX},
        {.name = "quota_period", .type = KG_JSTRING, .nullable = true, .out = &req.refill},
    };
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    json_t *root = NULL;
    enum kg_status rc;

    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        return;
    req.role = has_role ? role : NULL;
    if (null_quota || (req.has_credits && req.credits == -1))
        req.has_credits = false;
    rc = kg_accounts_user_create(&kc, c->fence, &req, NULL, c->now, &u, NULL, NULL, &err);
    if (rc != KG_OK)
        admin_fail_status(c, rc, &err);
    else
        admin_reply(c, 201, user_json(&u));
    json_decref(root);
}

void
admin_users_list(struct admin_call *c)
{
    static const char *const allowed[] = {"limit", "cursor", "tenant", NULL};
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct list_ctx lc = {.data = json_array()};
    struct kg_page page;
    struct kg_err err = {{0}};
    char next[KG_CURSOR_MAX] = "";
    enum kg_status rc;

    if (lc.data == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, allowed) || !admin_page(c, &page)) {
        json_decref(lc.data);
        return;
    }
    rc = kg_accounts_user_list(&kc, c->fence, admin_query(c, "tenant"), &page, list_user, &lc, next,
                               &err);
    finish_list(c, &lc, rc, &err, next);
}

void
admin_users_get(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    enum kg_status rc;
    struct kg_user_usage used;
    json_t *doc;

    if (!admin_query_check(c, (const char *const[]){NULL}))
        return;
    rc = kg_accounts_user_get(&kc, c->fence, c->id, &u, &err);
    if (rc == KG_OK)
        rc = kg_accounts_user_usage(&kc, c->fence, &u, c->now, &used, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        return;
    }
    /* What was used, as flushed (at most a second old). */
    doc = user_json(&u);
    if (doc != NULL && !kg_render_user_usage(doc, &used)) {
        json_decref(doc);
        doc = NULL;
    }
    admin_reply(c, 200, doc);
}

void
admin_users_update(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct kg_user_change chg = {0};
    char role[KG_SCOPES_MAX] = "";
    bool has_role = false, null_email = false, null_quota = false, null_period = false;
    const struct kg_jfield fields[] = {
        {.name = "username", .type = KG_JSTRING, .out = &chg.username},
        {.name = "email",
         .type = KG_JSTRING,
         .nullable = true,
         .out = &chg.email,
         .is_null = &null_email},
        {.name = "first_name", .type = KG_JSTRING, .out = &chg.first_name},
        {.name = "last_name", .type = KG_JSTRING, .out = &chg.last_name},
        {.name = "role", .type = KG_JSCOPES, .out = role, .present = &has_role},
        {.name = "tier", .type = KG_JSTRING, .out = &chg.tier},
        {.name = "platform_admin",
         .type = KG_JBOOL,
         .out = &chg.platform_admin,
         .present = &chg.set_platform_admin},
        {.name = "disabled", .type = KG_JBOOL, .out = &chg.disabled, .present = &chg.set_disabled},
        {.name = "quota_limit",
         .type = KG_JINT,
         .nullable = true,
         .out = &chg.quota_limit,
         .present = &chg.set_quota_limit,
         .is_null = &null_quota,
         .min = -1,
         .max = KG_JSON_COUNT_MAX},
        {.name = "quota_period",
         .type = KG_JSTRING,
         .nullable = true,
         .out = &chg.quota_period,
         .is_null = &null_period},
    };
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    json_t *root = NULL;
    enum kg_status rc;

    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        return;
    if (has_role)
        chg.role = role;
    if (null_email)
        chg.email = ""; /* null removes the address */
    if (null_quota)
        chg.quota_limit = -1; /* null: unlimited, as for a key */
    if (null_period)
        chg.quota_period = "";
    rc = kg_accounts_user_update(&kc, c->fence, c->id, &chg, c->now, &u, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
    } else {
        /* A narrower role or a disabled user changes what keys may do. */
        admin_reload_keys(c);
        admin_reply(c, 200, user_json(&u));
    }
    json_decref(root);
}

void
admin_users_disable(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    enum kg_status rc;

    if (!admin_query_check(c, (const char *const[]){NULL}) || !admin_decode(c, NULL, 0, NULL))
        return;
    rc = kg_accounts_user_disable(&kc, c->fence, c->id, c->now, &u, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        return;
    }
    admin_reload_keys(c);
    admin_reply(c, 200, user_json(&u));
}

/* POST /v1/users/{id}/password {"password": "..."}: Argon2id on this
 * thread (the admin listener's own, never a request loop); the user's
 * console sessions end in the same transaction. The body is wiped. */
void
admin_users_password(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    const char *password = NULL;
    const struct kg_jfield fields[] = {
        {.name = "password", .type = KG_JSTRING, .required = true, .out = &password},
    };
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    json_t *root = NULL;
    enum kg_status rc;

    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        return;
    rc = kg_accounts_user_set_password(&kc, c->fence, c->id, password, c->now, &u, &err);
    if (password != NULL)
        sodium_memzero((char *)password, strlen(password));
    json_decref(root);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        return;
    }
    admin_reply(c, 200, user_json(&u));
}

/* ---- tenants (platform admins only: admin.c checks before we get here) ---- */

void
admin_tenants_create(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct kg_tenant_new req = {0};
    const struct kg_jfield fields[] = {
        {.name = "name", .type = KG_JSTRING, .required = true, .out = &req.name},
        {.name = "display_name", .type = KG_JSTRING, .out = &req.display_name},
    };
    struct kg_tenant_rec t;
    struct kg_err err = {{0}};
    json_t *root = NULL;
    enum kg_status rc;

    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        return;
    /* The core's words say "tenant"; in this body the member is "name". */
    if (kg_accounts_check_tenant(req.name, &err) != KG_OK) {
        admin_fail(c, 400, "name: %s", err.msg);
        json_decref(root);
        return;
    }
    rc = kg_accounts_tenant_create(&kc, c->fence, &req, c->now, &t, &err);
    if (rc != KG_OK)
        admin_fail_status(c, rc, &err);
    else
        admin_reply(c, 201, tenant_json(&t));
    json_decref(root);
}

void
admin_tenants_list(struct admin_call *c)
{
    static const char *const allowed[] = {"limit", "cursor", NULL};
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct list_ctx lc = {.data = json_array()};
    struct kg_page page;
    struct kg_err err = {{0}};
    char next[KG_CURSOR_MAX] = "";
    enum kg_status rc;

    if (lc.data == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, allowed) || !admin_page(c, &page)) {
        json_decref(lc.data);
        return;
    }
    rc = kg_accounts_tenant_list(&kc, c->fence, &page, list_tenant, &lc, next, &err);
    finish_list(c, &lc, rc, &err, next);
}

void
admin_tenants_get(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct kg_tenant_rec t;
    struct kg_err err = {{0}};
    enum kg_status rc;

    if (!admin_query_check(c, (const char *const[]){NULL}))
        return;
    rc = kg_accounts_tenant_get(&kc, c->fence, c->id, &t, &err);
    if (rc != KG_OK)
        admin_fail_status(c, rc, &err);
    else
        admin_reply(c, 200, tenant_json(&t));
}

void
admin_tenants_update(struct admin_call *c)
{
    struct kg_keys_ctx kc = accounts_ctx(c);
    struct kg_tenant_change chg = {0};
    const struct kg_jfield fields[] = {
        {.name = "display_name", .type = KG_JSTRING, .out = &chg.display_name},
        {.name = "disabled", .type = KG_JBOOL, .out = &chg.disabled, .present = &chg.set_disabled},
    };
    struct kg_tenant_rec t;
    struct kg_err err = {{0}};
    json_t *root = NULL;
    enum kg_status rc;

    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        return;
    rc = kg_accounts_tenant_update(&kc, c->fence, c->id, &chg, c->now, &t, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
    } else {
        admin_reload_keys(c); /* a disabled tenant's keys stop now */
        admin_reply(c, 200, tenant_json(&t));
    }
    json_decref(root);
}
