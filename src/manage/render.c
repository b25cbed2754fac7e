/* manage/render.c - the JSON shape of keys, users, tenants and audit
 * entries, one place for the CLI's --json and the admin API, so the two
 * agree member for member.
 *
 * It decides nothing about keys: state and validity come from manage/ and
 * store/. A digest is never formatted here, and a full key never enters a
 * jansson value (a new key's "key" member is a placeholder the caller fills
 * from wiped memory).
 */
#include <string.h>

#include "keygate/json_io.h"
#include "keygate/keyfmt.h"
#include "keygate/quota.h"
#include "keygate/render.h"
#include "keygate/timeutil.h"

/* Sets obj[k] = v, taking v; false when v is NULL (jansson ran out of
 * memory or refused a string) or the set failed. */
static bool
put(json_t *obj, const char *k, json_t *v)
{
    return json_object_set_new(obj, k, v) == 0;
}

/* The end of every record builder: o, or NULL (o freed) when a member
 * could not be added. */
static json_t *
built(json_t *o, bool ok)
{
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static bool
put_detail(json_t *o, const struct kg_key_rec *rec, int64_t now)
{
    json_error_t jerr;
    json_t *meta;

    if (!(put(o, "rate", kg_json_io_str_or_null(rec->rate)) &&
          put(o, "rate_burst", rec->rate_burst > 0 ? json_integer(rec->rate_burst) : json_null()) &&
          put(o, "quota_limit",
              rec->quota_limit >= 0 ? json_integer(rec->quota_limit) : json_null()) &&
          put(o, "quota_period", kg_json_io_str_or_null(rec->quota_period)) &&
          put(o, "quota_used",
              json_integer(kg_quota_stored_used(rec->quota_period, rec->quota_used,
                                                rec->quota_period_start, now)))))
        return false;
    /* Parsed last, so that no earlier failure can leave it unowned.
     * metadata is JSON text the store accepted; if it does not parse, show
     * it as a string rather than lose it. (jansson reports some of its
     * parser's allocation failures as syntax errors: those show the text
     * too; the ones it names are failures.) */
    /* Zeroed: jansson can fail before it writes the error (unknown, then). */
    memset(&jerr, 0, sizeof(jerr));
    meta = json_loads(rec->metadata, 0, &jerr);
    if (meta == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory ||
            json_error_code(&jerr) == json_error_unknown)
            return false;
        meta = json_string(rec->metadata);
    }
    return put(o, "metadata", meta);
}

json_t *
kg_render_key_json(const struct kg_key_rec *rec, enum kg_key_state state, bool detail, int64_t now)
{
    char masked[KG_DPREFIX_MAX + 8];
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    kg_keyfmt_mask(rec->prefix, rec->last4, masked, sizeof(masked));
    ok = put(o, "name", json_string(rec->name)) && put(o, "id", json_string(rec->id)) &&
         put(o, "key", json_string(masked)) && put(o, "prefix", json_string(rec->prefix)) &&
         put(o, "last4", json_string(rec->last4)) &&
         put(o, "scopes", kg_json_io_list(rec->scopes)) &&
         put(o, "tenant", json_string(rec->tenant)) &&
         put(o, "user_id", kg_json_io_str_or_null(rec->user_id)) &&
         put(o, "created_at", kg_json_io_time(rec->created_at)) &&
         put(o, "last_used_at", kg_json_io_time(rec->last_used_at)) &&
         put(o, "expires_at", kg_json_io_time(rec->expires_at)) &&
         put(o, "revoked_at", kg_json_io_time(rec->revoked_at)) &&
         put(o, "state", json_string(kg_key_state_str(state))) &&
         put(o, "rotated_to", kg_json_io_str_or_null(rec->rotated_to)) &&
         put(o, "canary", json_boolean(rec->canary)) &&
         put(o, "allowed_ips", kg_json_io_list(rec->allowed_ips)) &&
         put(o, "expiring", json_boolean(kg_render_key_expiring(rec, state, now)));
    if (ok && detail)
        ok = put_detail(o, rec, now);
    return built(o, ok);
}

json_t *
kg_render_new_key_json(const struct kg_key_rec *rec)
{
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    ok = put(o, "id", json_string(rec->id)) && put(o, "key", json_string("")) &&
         put(o, "name", json_string(rec->name)) && put(o, "prefix", json_string(rec->prefix)) &&
         put(o, "scopes", kg_json_io_list(rec->scopes)) &&
         put(o, "tenant", json_string(rec->tenant)) &&
         put(o, "user_id", kg_json_io_str_or_null(rec->user_id)) &&
         put(o, "created_at", kg_json_io_time(rec->created_at)) &&
         put(o, "expires_at", kg_json_io_time(rec->expires_at)) &&
         put(o, "canary", json_boolean(rec->canary)) &&
         put(o, "allowed_ips", kg_json_io_list(rec->allowed_ips));
    return built(o, ok);
}

bool
kg_render_key_expiring(const struct kg_key_rec *rec, enum kg_key_state state, int64_t now)
{
    return state == KG_KEY_ACTIVE && rec->expires_at != 0 &&
           rec->expires_at - now <= KG_KEY_EXPIRING_S;
}

json_t *
kg_render_tenant_json(const struct kg_tenant_rec *rec)
{
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    ok = put(o, "name", json_string(rec->name)) &&
         put(o, "display_name", json_string(rec->display_name)) &&
         put(o, "created_at", kg_json_io_time(rec->created_at)) &&
         put(o, "disabled_at", kg_json_io_time(rec->disabled_at)) &&
         put(o, "state", json_string(rec->disabled_at != 0 ? "disabled" : "active"));
    return built(o, ok);
}

json_t *
kg_render_user_json(const struct kg_user_rec *rec)
{
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    ok = put(o, "id", json_string(rec->id)) && put(o, "tenant", json_string(rec->tenant)) &&
         put(o, "username", json_string(rec->username)) &&
         put(o, "email", kg_json_io_str_or_null(rec->email)) &&
         put(o, "first_name", json_string(rec->first_name)) &&
         put(o, "last_name", json_string(rec->last_name)) &&
         put(o, "role", kg_json_io_list(rec->role)) && put(o, "tier", json_string(rec->tier)) &&
         put(o, "platform_admin", json_boolean(rec->platform_admin)) &&
         put(o, "has_password", json_boolean(rec->password_hash[0] != '\0')) &&
         put(o, "created_at", kg_json_io_time(rec->created_at)) &&
         put(o, "disabled_at", kg_json_io_time(rec->disabled_at)) &&
         put(o, "state", json_string(rec->disabled_at != 0 ? "disabled" : "active")) &&
         put(o, "quota_limit", rec->has_quota ? json_integer(rec->quota_limit) : json_null()) &&
         put(o, "quota_period", kg_json_io_str_or_null(rec->quota_period));
    return built(o, ok);
}

bool
kg_render_user_usage(json_t *o, const struct kg_user_usage *used)
{
    return put(o, "quota_used", json_integer(used->credits)) &&
           put(o, "tier_quota_used", json_integer(used->tier));
}

/* Audit rows may have been edited by hand into anything, bytes that are
 * not UTF-8 included, which jansson refuses: those are shown as a marker
 * rather than failing the whole listing. */
static json_t *
hand_edited_string(const char *s)
{
    json_t *v = json_string(s);

    return v != NULL ? v : json_string("(not UTF-8)");
}

json_t *
kg_render_audit_json(const struct kg_audit_entry *e)
{
    json_t *details = json_loads(e->details, JSON_REJECT_DUPLICATES, NULL);
    json_t *o = json_object();
    bool ok;

    /* An entry edited by hand may hold anything: show it, do not lose it. */
    if (details == NULL)
        details = hand_edited_string(e->details);
    if (o == NULL || details == NULL) {
        json_decref(details);
        json_decref(o);
        return NULL;
    }
    ok = put(o, "seq", json_integer(e->seq)) && put(o, "time", kg_json_io_time(e->time)) &&
         put(o, "actor", hand_edited_string(e->actor)) &&
         put(o, "tenant", e->tenant[0] != '\0' ? hand_edited_string(e->tenant) : json_null()) &&
         put(o, "action", hand_edited_string(e->action)) &&
         put(o, "object", hand_edited_string(e->object)) &&
         json_object_set(o, "details", details) == 0 &&
         put(o, "prev_hash", hand_edited_string(e->prev_hash)) &&
         put(o, "hash", hand_edited_string(e->hash));
    json_decref(details);
    return built(o, ok);
}

json_t *
kg_render_key_usage_json(const struct kg_key_usage *u)
{
    return json_pack("{s:I, s:{s:I, s:I, s:I}, s:o}", "requests", (json_int_t)u->requests, "denied",
                     "expired", (json_int_t)u->denied_expired, "forbidden",
                     (json_int_t)u->denied_forbidden, "rate_limited", (json_int_t)u->denied_rate,
                     "last_used_at", kg_json_io_time(u->last_used_at));
}

bool
kg_render_key_extras(json_t *o, const struct kg_key_usage *u, enum kg_key_in_use in_use)
{
    json_t *v;

    if (u != NULL && !put(o, "usage", kg_render_key_usage_json(u)))
        return false;
    if (in_use == KG_KEY_IN_USE_NONE)
        return true;
    v = in_use == KG_KEY_IN_USE_YES  ? json_true()
        : in_use == KG_KEY_IN_USE_NO ? json_false()
                                     : json_null();
    return put(o, "still_in_use", v);
}

json_t *
kg_render_event_json(const struct kg_event *ev)
{
    json_t *data = json_loads(ev->data, 0, NULL);

    if (data == NULL)
        data = json_object();
    return json_pack("{s:s, s:s, s:o, s:s, s:{s:s?, s:s?, s:s?}, s:s?, s:o, s:{s:I, s:I, s:I}}",
                     "id", ev->id, "type", ev->type, "time", kg_json_io_time(ev->time), "tenant",
                     ev->tenant, "key", "id", ev->key_id[0] != '\0' ? ev->key_id : NULL, "prefix",
                     ev->prefix[0] != '\0' ? ev->prefix : NULL, "name",
                     ev->name[0] != '\0' ? ev->name : NULL, "user",
                     ev->user_id[0] != '\0' ? ev->user_id : NULL, "data", data, "deliveries",
                     "pending", (json_int_t)ev->pending, "delivered", (json_int_t)ev->delivered,
                     "failed", (json_int_t)ev->failed);
}
