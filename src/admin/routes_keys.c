/* admin/routes_keys.c - /v1/keys: create, list, show, update, revoke,
 * rotate, usage. Each handler turns JSON and query parameters into a
 * manage/keys.h call with the caller's fence and actor, and the result into
 * JSON (manage/render.c's key shape, so the API and `keygate keys --json`
 * agree). Revocation, rotation and every other change reload the key cache
 * before the answer is sent.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "keygate/keycache.h"
#include "keygate/json_io.h"
#include "keygate/keys.h"
#include "keygate/quota.h"
#include "keygate/render.h"
#include "keygate/timeutil.h"

static struct kg_keys_ctx
keys_ctx(const struct admin_call *c)
{
    return (struct kg_keys_ctx){.store = c->adm->store,
                                .secret = c->adm->rt->secret,
                                .cfg = c->adm->cfg,
                                .actor = c->caller.actor};
}

/* A key as `keygate keys show --json` prints it (manage/render.c owns the
 * shape), its state as people see it: "disabled" while its owner is. */
static json_t *
key_json(const struct admin_call *c, const struct kg_key_rec *rec, bool detail)
{
    struct kg_keys_ctx kc = keys_ctx(c);

    return kg_render_key_json(rec, kg_keys_state(&kc, rec, c->now), detail, c->now);
}

/* Adds "usage" (exact: the store's totals plus what this process counted
 * since) and, in a rotation's grace period, "still_in_use" to o, the key
 * id; rec (may be NULL when the key was not rotated) is the key's row.
 * Answers and returns false when it cannot. */
static bool
add_key_extras(struct admin_call *c, json_t *o, const char *id, const struct kg_key_rec *rec)
{
    struct kg_keys_ctx kc = keys_ctx(c);
    enum kg_key_in_use in_use = KG_KEY_IN_USE_NONE;
    struct kg_key_usage u;
    struct kg_err err = {{0}};
    enum kg_status rc = kg_keycache_usage(c->adm->rt->keys, c->adm->store, id, &u, &err);

    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        return false;
    }
    if (rec != NULL) {
        if (rec->last_used_at > u.last_used_at)
            u.last_used_at = rec->last_used_at;
        in_use = kg_keys_rotation_in_use(&kc, c->fence, rec, c->now);
    }
    if (!kg_render_key_extras(o, &u, in_use)) {
        admin_fail(c, 500, "Internal error");
        return false;
    }
    return true;
}

/* A key document whose "key" member is a placeholder for the full key. */
static void
reply_with_key(struct admin_call *c, unsigned status, json_t *doc, const char *key)
{
    if (doc != NULL && json_object_set_new(doc, "key", json_string("")) != 0) {
        json_decref(doc);
        doc = NULL;
    }
    admin_reply_secret(c, status, doc, "key", key);
}

void
admin_keys_create(struct admin_call *c)
{
    struct kg_keys_ctx kc = keys_ctx(c);
    struct kg_key_new req = {0};
    char scopes[KG_SCOPES_MAX] = "", allowed_ips[KG_ALLOWED_IPS_MAX] = "";
    bool has_scopes = false, has_allowed_ips = false;
    const struct kg_jfield fields[] = {
        {.name = "name", .type = KG_JSTRING, .required = true, .out = &req.name},
        {.name = "scopes", .type = KG_JSCOPES, .out = scopes, .present = &has_scopes},
        {.name = "user", .type = KG_JSTRING, .out = &req.user},
        {.name = "tenant", .type = KG_JSTRING, .out = &req.tenant},
        {.name = "expires", .type = KG_JSTRING, .nullable = true, .out = &req.expires},
        /* The same names as PATCH, so a key document round-trips. */
        {.name = "rate", .type = KG_JSTRING, .nullable = true, .out = &req.rate},
        {.name = "rate_burst",
         .type = KG_JINT,
         .out = &req.rate_burst,
         .min = 1,
         .max = KG_JSON_COUNT_MAX},
        {.name = "quota_limit",
         .type = KG_JINT,
         .out = &req.credits,
         .present = &req.has_credits,
         .min = -1,
         .max = KG_JSON_COUNT_MAX},
        {.name = "quota_period", .type = KG_JSTRING, .nullable = true, .out = &req.refill},
        {.name = "canary", .type = KG_JBOOL, .out = &req.canary},
        /* A list of blocks, or one string "a,b"; null or [] = anywhere. */
        {.name = "allowed_ips",
         .type = KG_JSCOPES,
         .nullable = true,
         .out = allowed_ips,
         .present = &has_allowed_ips},
    };
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_err err = {{0}};
    json_t *root = NULL;
    char *key = NULL;
    enum kg_status rc;

    if (rec == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        goto cleanup;
    req.scopes = has_scopes ? scopes : NULL;
    req.allowed_ips = has_allowed_ips ? allowed_ips : NULL;
    if (req.has_credits && req.credits == -1)
        req.has_credits = false; /* -1 is "unlimited", as in PATCH and the key document */
    /* A tenant admin hands out no more than it holds. */
    if (!admin_within_caller(c, req.scopes))
        goto cleanup;
    rc = kg_keys_create(&kc, c->fence, &req, c->now, rec, &key, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    admin_reload_keys(c);
    reply_with_key(c, 201, key_json(c, rec, true), key);

cleanup:
    kg_keys_key_free(key);
    json_decref(root);
    free(rec);
}

struct list_ctx {
    json_t *data;
    int64_t now;
    bool failed;
};

/* During the walk the store may not be read: the owner's part of the state
 * is added after it (kg_keys_mark_disabled). */
static bool
list_one(const struct kg_key_rec *rec, enum kg_key_state state, void *p)
{
    struct list_ctx *lc = p;
    json_t *o = kg_render_key_json(rec, state, false, lc->now);

    if (o == NULL || json_array_append_new(lc->data, o) != 0) {
        lc->failed = true;
        return false;
    }
    return true;
}

/* Every key of a listing gets the members `keygate keys list --json` has:
 * "usage", and "still_in_use" when rotated and in its grace period (only a
 * rotated key is read again, for its successor). */
static bool
list_extras(struct admin_call *c, const struct kg_keys_ctx *kc, json_t *data)
{
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    bool ok = rec != NULL;
    size_t i;
    json_t *el;

    if (!ok)
        admin_fail(c, 500, "Internal error");
    json_array_foreach(data, i, el)
    {
        const char *id = json_string_value(json_object_get(el, "id"));
        struct kg_err err = {{0}};
        bool rotated;

        if (!ok)
            break;
        if (id == NULL)
            continue;
        rotated = json_is_string(json_object_get(el, "rotated_to")) &&
                  kg_keys_get(kc, c->fence, id, rec, &err) == KG_OK;
        ok = add_key_extras(c, el, id, rotated ? rec : NULL);
    }
    free(rec);
    return ok;
}

static void
drop_other_states(json_t *data, const char *want)
{
    size_t i = 0;

    while (i < json_array_size(data)) {
        const char *st = json_string_value(json_object_get(json_array_get(data, i), "state"));

        if (st != NULL && strcmp(st, want) != 0)
            json_array_remove(data, i);
        else
            i++;
    }
}

void
admin_keys_list(struct admin_call *c)
{
    static const char *const allowed[] = {"limit",  "cursor", "state", "user",
                                          "tenant", "name",   NULL};
    struct kg_keys_ctx kc = keys_ctx(c);
    struct kg_keys_filter filter = {.all_states = true};
    struct list_ctx lc = {.data = json_array(), .now = c->now};
    struct kg_page page;
    struct kg_err err = {{0}};
    char next[KG_CURSOR_MAX] = "";
    const char *state;
    enum kg_status rc;

    if (lc.data == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, allowed) || !admin_page(c, &page))
        goto cleanup;
    state = admin_query(c, "state");
    if (state != NULL &&
        kg_key_state_parse(state, &filter.state, &filter.all_states, &err) != KG_OK) {
        admin_fail(c, 400, "state: %s", err.msg);
        goto cleanup;
    }
    filter.tenant = admin_query(c, "tenant");
    filter.user = admin_query(c, "user");
    filter.name = admin_query(c, "name");
    rc = kg_keys_list(&kc, c->fence, &filter, &page, c->now, list_one, &lc, next, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    if (lc.failed) {
        admin_fail(c, 500, "Internal error");
        goto cleanup;
    }
    /* After the walk: its callback must not call into the store. A key of
     * a disabled owner reads "disabled", and a listing of one state keeps
     * only keys in that state as people see it. */
    kg_keys_mark_disabled(&kc, lc.data);
    if (!filter.all_states)
        drop_other_states(lc.data, kg_key_state_str(filter.state));
    if (!list_extras(c, &kc, lc.data))
        goto cleanup;
    admin_reply_list(c, lc.data, next);
    lc.data = NULL;

cleanup:
    json_decref(lc.data);
}

/* Reads c->id into *rec within the fence; answers and returns false when it
 * cannot. */
static bool
get_key(struct admin_call *c, struct kg_key_rec *rec)
{
    struct kg_keys_ctx kc = keys_ctx(c);
    struct kg_err err = {{0}};
    enum kg_status rc = kg_keys_get(&kc, c->fence, c->id, rec, &err);

    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        return false;
    }
    return true;
}

void
admin_keys_get(struct admin_call *c)
{
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));

    if (rec == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (admin_query_check(c, (const char *const[]){NULL}) && get_key(c, rec)) {
        json_t *o = key_json(c, rec, true);

        /* `keygate keys show --json`'s members: usage and still_in_use too. */
        if (o == NULL)
            admin_fail(c, 500, "Internal error");
        else if (add_key_extras(c, o, rec->id, rec))
            admin_reply(c, 200, o); /* takes o */
        else
            json_decref(o);
    }
    free(rec);
}

void
admin_keys_update(struct admin_call *c)
{
    struct kg_keys_ctx kc = keys_ctx(c);
    struct kg_key_change chg = {0};
    char scopes[KG_SCOPES_MAX] = "", allowed_ips[KG_ALLOWED_IPS_MAX] = "";
    bool has_scopes = false, null_expires = false, null_rate = false, null_period = false;
    bool null_burst = false, null_quota = false, has_allowed_ips = false;
    const struct kg_jfield fields[] = {
        {.name = "name", .type = KG_JSTRING, .out = &chg.name},
        {.name = "scopes", .type = KG_JSCOPES, .out = scopes, .present = &has_scopes},
        {.name = "expires",
         .type = KG_JSTRING,
         .nullable = true,
         .out = &chg.expires,
         .is_null = &null_expires},
        {.name = "rate",
         .type = KG_JSTRING,
         .nullable = true,
         .out = &chg.rate,
         .is_null = &null_rate},
        {.name = "rate_burst",
         .type = KG_JINT,
         .nullable = true,
         .out = &chg.rate_burst,
         .present = &chg.set_rate_burst,
         .is_null = &null_burst,
         .min = 1,
         .max = KG_JSON_COUNT_MAX},
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
        {.name = "allowed_ips",
         .type = KG_JSCOPES,
         .nullable = true,
         .out = allowed_ips,
         .present = &has_allowed_ips},
    };
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_err err = {{0}};
    json_t *root = NULL;
    enum kg_status rc;

    if (rec == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        goto cleanup;
    /* null means "back to the default": no expiry, default limits, no quota. */
    if (has_scopes)
        chg.scopes = scopes;
    if (null_expires)
        chg.expires = "never";
    if (null_rate)
        chg.rate = "";
    if (null_burst)
        chg.rate_burst = 0;
    if (null_quota)
        chg.quota_limit = -1;
    if (null_period)
        chg.quota_period = "";
    /* null leaves the buffer "": from anywhere again. */
    if (has_allowed_ips)
        chg.allowed_ips = allowed_ips;
    rc = kg_keys_update(&kc, c->fence, c->id, &chg, c->now, rec, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    admin_reload_keys(c);
    admin_reply(c, 200, key_json(c, rec, true));

cleanup:
    json_decref(root);
    free(rec);
}

void
admin_keys_revoke(struct admin_call *c)
{
    struct kg_keys_ctx kc = keys_ctx(c);
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_err err = {{0}};
    enum kg_status rc;

    if (rec == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    /* No body fields; an empty object or no body at all. */
    if (!admin_query_check(c, (const char *const[]){NULL}) || !admin_decode(c, NULL, 0, NULL))
        goto cleanup;
    rc = kg_keys_revoke(&kc, c->fence, c->id, c->now, rec, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    /* Enforced by this daemon before the client hears it is done. */
    admin_reload_keys(c);
    admin_reply(c, 200, key_json(c, rec, true));

cleanup:
    free(rec);
}

void
admin_keys_rotate(struct admin_call *c)
{
    struct kg_keys_ctx kc = keys_ctx(c);
    const char *grace = NULL;
    const struct kg_jfield fields[] = {
        {.name = "grace", .type = KG_JSTRING, .nullable = true, .out = &grace},
    };
    struct kg_key_rec *fresh = calloc(1, sizeof(*fresh)), *old = calloc(1, sizeof(*old));
    struct kg_err err = {{0}};
    json_t *root = NULL, *doc = NULL;
    char *key = NULL;
    int64_t grace_s = 0;
    enum kg_status rc;

    if (fresh == NULL || old == NULL) {
        admin_fail(c, 500, "Internal error");
        goto cleanup;
    }
    if (!admin_query_check(c, (const char *const[]){NULL}) ||
        !admin_decode(c, fields, sizeof(fields) / sizeof(fields[0]), &root))
        goto cleanup;
    if (grace != NULL && kg_time_parse_duration(grace, &grace_s, &err) != KG_OK) {
        admin_fail(c, 400, "grace: %s", err.msg);
        goto cleanup;
    }
    /* Rotating hands the caller a working copy of the key: the same cap as creating one. */
    rc = kg_keys_get(&kc, c->fence, c->id, old, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    if (!admin_within_caller(c, old->scopes))
        goto cleanup;
    rc = kg_keys_rotate(&kc, c->fence, c->id, grace_s, c->now, fresh, old, &key, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    admin_reload_keys(c);
    /* Both documents are made whichever fails (the previous one was leaked
     * when only the new one could not be: scripts/torture.sh admin_rotate). */
    doc = kg_json_io_attach(key_json(c, fresh, true), "previous", key_json(c, old, false));
    reply_with_key(c, 201, doc, key);

cleanup:
    kg_keys_key_free(key);
    json_decref(root);
    free(fresh);
    free(old);
}

void
admin_keys_usage(struct admin_call *c)
{
    struct kg_keys_ctx kc = keys_ctx(c);
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_key_usage u;
    struct kg_err err = {{0}};
    enum kg_status rc;

    if (rec == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    if (!admin_query_check(c, (const char *const[]){NULL}) || !get_key(c, rec))
        goto cleanup;
    /* The store has the totals up to the last flush (once a second); the key
     * cache adds what this process counted since, so the answer is exact. */
    rc = kg_keycache_usage(c->adm->rt->keys, c->adm->store, rec->id, &u, &err);
    if (rc != KG_OK) {
        admin_fail_status(c, rc, &err);
        goto cleanup;
    }
    if (rec->last_used_at > u.last_used_at)
        u.last_used_at = rec->last_used_at;
    admin_reply(c, 200,
                json_pack("{s:s, s:s, s:o, s:I, s:I, s:{s:I, s:I, s:I}}", "id", rec->id, "state",
                          kg_key_state_str(kg_keys_state(&kc, rec, c->now)), "last_used_at",
                          kg_json_io_time(u.last_used_at), "quota_used",
                          (json_int_t)kg_quota_stored_used(rec->quota_period, rec->quota_used,
                                                           rec->quota_period_start, c->now),
                          "requests", (json_int_t)u.requests, "denied", "expired",
                          (json_int_t)u.denied_expired, "forbidden", (json_int_t)u.denied_forbidden,
                          "rate_limited", (json_int_t)u.denied_rate));

cleanup:
    free(rec);
}
