/* manage/accounts.c - tenants and users, the owners of keys.
 *
 * Owns the rules about accounts every edge shares: tenant, username,
 * e-mail, role and tier syntax, who may grant platform admin, what a
 * disabled tenant or user may still do, the default user a key without an
 * owner goes to, and what each change records in the audit trail. Key
 * rules stay in keys.c (a user's first key is made through its helpers);
 * storage is store/'s, one transaction per change with its audit entries.
 * A role narrows keys at request time (auth/keycache.c, auth/decide.c), so
 * nothing here ever edits a key.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/accounts.h"
#include "keygate/audit.h"
#include "keygate/json_io.h"
#include "keygate/keycache.h"
#include "keygate/keyfmt.h"
#include "keygate/quota.h"
#include "keygate/scope.h"
#include "manage/manage_int.h"

/* The most credits a user may be given, as for a key. */

/* ---- validation ---- */

enum kg_status
kg_accounts_check_tenant(const char *name, struct kg_err *err)
{
    char out[KG_TENANT_MAX + 1];

    return kg_manage_check_slug("tenant", name, KG_TENANT_MAX, out, err);
}

enum kg_status
kg_accounts_check_tier(const char *tier, struct kg_err *err)
{
    char out[KG_TIER_MAX];

    return kg_manage_check_slug("tier", tier, KG_TIER_MAX - 1, out, err);
}

static bool
local_char_ok(char c)
{
    return isalnum((unsigned char)c) || strchr(".!#$%&'*+/=?^_`{|}~-", c) != NULL;
}

enum kg_status
kg_accounts_normalise_email(const char *email, char out[KG_EMAIL_MAX], struct kg_err *err)
{
    const char *at;
    size_t n, local, label = 0;
    bool dot = false;

    if (email == NULL)
        return kg_err_set(err, KG_EINVAL, "email is required");
    n = strnlen(email, KG_EMAIL_MAX);
    if (n < 3 || n >= KG_EMAIL_MAX)
        return kg_err_set(err, KG_EINVAL, "email must be 3 to %d bytes", KG_EMAIL_MAX - 1);
    at = strchr(email, '@');
    if (at == NULL || strchr(at + 1, '@') != NULL)
        return kg_err_set(err, KG_EINVAL, "email must hold exactly one @");
    local = (size_t)(at - email);
    if (local == 0 || local > 64)
        return kg_err_set(err, KG_EINVAL, "email must have 1 to 64 characters before the @");
    for (size_t i = 0; i < local; i++) {
        if (!local_char_ok(email[i]))
            return kg_err_set(err, KG_EINVAL, "email has a character not allowed before the @");
    }
    if (email[0] == '.' || email[local - 1] == '.')
        return kg_err_set(err, KG_EINVAL, "email must not start or end its name with a dot");
    for (const char *p = at + 1; *p != '\0'; p++) {
        if (*p == '.') {
            if (label == 0)
                return kg_err_set(err, KG_EINVAL, "email domain has an empty label");
            dot = true;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-') {
            label++;
        } else {
            return kg_err_set(err, KG_EINVAL,
                              "email domain may hold only letters, digits, - and .");
        }
    }
    if (!dot || label == 0)
        return kg_err_set(err, KG_EINVAL, "email domain must be a name with a dot");
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)email[i]);
    return KG_OK;
}

static enum kg_status
check_role(const char *role, char out[KG_SCOPES_MAX], struct kg_err *err)
{
    struct kg_err why = {{0}};

    if (kg_scope_list_normalise(role, out, KG_SCOPES_MAX, &why) != KG_OK)
        return kg_err_set(err, KG_EINVAL, "role: %s", why.msg);
    return KG_OK;
}

static enum kg_status
check_password_hash(const char *hash, char out[KG_PWHASH_MAX], struct kg_err *err)
{
    size_t n = strnlen(hash, KG_PWHASH_MAX);

    /* Made by signup with crypto_pwhash_str(); anything else is a bug, and
     * its text is never echoed. */
    if (n == 0 || n >= KG_PWHASH_MAX || strncmp(hash, "$argon2id$", 10) != 0)
        return kg_err_set(err, KG_EINVAL, "password_hash is not an Argon2id hash");
    for (size_t i = 0; i < n; i++) {
        if (hash[i] <= ' ' || hash[i] > '~')
            return kg_err_set(err, KG_EINVAL, "password_hash is not an Argon2id hash");
    }
    memcpy(out, hash, n + 1);
    return KG_OK;
}

/* Validates req into u (all but id, tenant and times). */
static enum kg_status
fill_user(const struct kg_user_new *req, const char *fence, struct kg_user_rec *u,
          struct kg_err *err)
{
    enum kg_status rc;

    if (req->email != NULL) {
        rc = kg_accounts_normalise_email(req->email, u->email, err);
        if (rc != KG_OK)
            return rc;
    }
    if (req->username == NULL && req->email == NULL)
        return kg_err_set(err, KG_EINVAL, "username is required (or an email to use as one)");
    rc = kg_manage_check_text("username", req->username != NULL ? req->username : u->email, 1,
                              KG_NAME_MAX - 1, u->username, err);
    if (rc == KG_OK)
        rc = kg_manage_check_text("first_name", req->first_name != NULL ? req->first_name : "", 0,
                                  KG_NAME_MAX - 1, u->first_name, err);
    if (rc == KG_OK)
        rc = kg_manage_check_text("last_name", req->last_name != NULL ? req->last_name : "", 0,
                                  KG_NAME_MAX - 1, u->last_name, err);
    if (rc == KG_OK && req->password_hash != NULL)
        rc = check_password_hash(req->password_hash, u->password_hash, err);
    if (rc == KG_OK)
        rc = check_role(req->role != NULL ? req->role : "*", u->role, err);
    if (rc == KG_OK)
        rc = kg_manage_check_slug("tier", req->tier != NULL ? req->tier : KG_TIER_DEFAULT,
                                  KG_TIER_MAX - 1, u->tier, err);
    if (rc != KG_OK)
        return rc;
    if (req->platform_admin && fence != NULL)
        return kg_err_set(err, KG_EINVAL, "platform_admin: only a platform admin may grant it");
    u->platform_admin = req->platform_admin;
    if (req->has_credits) {
        if (req->credits < 0 || req->credits > KG_CREDITS_MAX)
            return kg_err_set(err, KG_EINVAL, "credits must be 0 to 1000000000");
        u->has_quota = true;
        u->quota_limit = req->credits;
    }
    if (req->refill != NULL && req->refill[0] != '\0') {
        if (strcmp(req->refill, "day") != 0 && strcmp(req->refill, "month") != 0)
            return kg_err_set(err, KG_EINVAL, "refill wants day or month");
        if (!req->has_credits)
            return kg_err_set(err, KG_EINVAL, KG_REFILL_NEEDS_CREDITS);
        snprintf(u->quota_period, sizeof(u->quota_period), "%s", req->refill);
    }
    return KG_OK;
}

enum kg_status
kg_accounts_user_check_new(const struct kg_user_new *req, struct kg_err *err)
{
    char tenant[KG_TENANT_MAX + 1];
    struct kg_user_rec u;

    if (req == NULL)
        return kg_err_set(err, KG_EINVAL, "user request: missing argument");
    if (req->tenant != NULL &&
        kg_manage_check_slug("tenant", req->tenant, KG_TENANT_MAX, tenant, err) != KG_OK)
        return KG_EINVAL;
    memset(&u, 0, sizeof(u));
    return fill_user(req, NULL, &u, err);
}

/* ---- JSON of what a record holds, for audit details ---- */

static json_t *
user_details(const struct kg_user_rec *u)
{
    json_t *d = json_pack("{s:s, s:o, s:s, s:s, s:o, s:s, s:b, s:b}", "username", u->username,
                          "email", u->email[0] != '\0' ? json_string(u->email) : json_null(),
                          "first_name", u->first_name, "last_name", u->last_name, "role",
                          kg_json_io_list(u->role), "tier", u->tier, "platform_admin",
                          u->platform_admin, "password", u->password_hash[0] != '\0');

    /* Credits only when set, as the key entries name only what a key has. */
    if (d != NULL && u->has_quota) {
        json_object_set_new(d, "quota_limit", json_integer(u->quota_limit));
        json_object_set_new(d, "quota_period",
                            u->quota_period[0] != '\0' ? json_string(u->quota_period)
                                                       : json_null());
    }
    return d;
}

/* ---- tenants ---- */

static enum kg_status
get_tenant(const struct kg_keys_ctx *kc, const char *fence, const char *name,
           struct kg_tenant_rec *out, struct kg_err *err)
{
    enum kg_status rc;

    if (name == NULL || name[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "tenant is required");
    if (kg_manage_fenced_out(fence, name))
        return kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", name);
    rc = kg_store_tenant_get(kc->store, name, out, err);
    if (rc == KG_ENOTFOUND || (rc == KG_EINVAL && strlen(name) >= KG_NAME_MAX))
        return kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", name);
    return rc;
}

enum kg_status
kg_accounts_tenant_create(const struct kg_keys_ctx *kc, const char *fence,
                          const struct kg_tenant_new *req, int64_t now, struct kg_tenant_rec *out,
                          struct kg_err *err)
{
    struct kg_audit_entry *audit = NULL;
    enum kg_status rc;

    rc = kg_manage_check_ctx(kc, false, true, err);
    if (rc != KG_OK)
        return rc;
    if (req == NULL)
        return kg_err_set(err, KG_EINVAL, "tenant request: missing argument");
    memset(out, 0, sizeof(*out));
    rc = kg_manage_check_slug("tenant", req->name, KG_TENANT_MAX, out->name, err);
    if (rc == KG_OK)
        rc =
            kg_manage_check_text("display_name", req->display_name != NULL ? req->display_name : "",
                                 0, KG_NAME_MAX - 1, out->display_name, err);
    if (rc != KG_OK)
        return rc;
    if (kg_manage_fenced_out(fence, out->name))
        return kg_err_set(err, KG_ENOTFOUND, "no tenant %s", out->name);
    out->created_at = now;
    audit = malloc(sizeof(*audit));
    if (audit == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    rc = kg_manage_audit(audit, kc, now, out->name, "tenant.create", out->name,
                         json_pack("{s:s}", "display_name", out->display_name), err);
    if (rc == KG_OK)
        rc = kg_store_tenant_insert(kc->store, out, audit, err);
    free(audit);
    return rc;
}

enum kg_status
kg_accounts_tenant_get(const struct kg_keys_ctx *kc, const char *fence, const char *name,
                       struct kg_tenant_rec *out, struct kg_err *err)
{
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (rc != KG_OK)
        return rc;
    return get_tenant(kc, fence, name, out, err);
}

enum kg_status
kg_accounts_tenant_list(const struct kg_keys_ctx *kc, const char *fence, const struct kg_page *page,
                        kg_store_tenant_cb cb, void *ctx, char *next, struct kg_err *err)
{
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (next != NULL)
        next[0] = '\0';
    if (rc != KG_OK)
        return rc;
    return kg_store_tenant_list(kc->store, fence, page, cb, ctx, next, err);
}

enum kg_status
kg_accounts_tenant_update(const struct kg_keys_ctx *kc, const char *fence, const char *name,
                          const struct kg_tenant_change *chg, int64_t now,
                          struct kg_tenant_rec *out, struct kg_err *err)
{
    struct kg_audit_entry *audit = NULL;
    struct kg_tenant_rec t;
    json_t *details = NULL;
    enum kg_status rc;

    rc = kg_manage_check_ctx(kc, false, true, err);
    if (rc != KG_OK)
        return rc;
    if (chg == NULL || (chg->display_name == NULL && !chg->set_disabled))
        return kg_err_set(err, KG_EINVAL, "nothing to change");
    rc = get_tenant(kc, fence, name, &t, err);
    if (rc != KG_OK)
        return rc;
    details = json_object();
    audit = malloc(sizeof(*audit));
    if (details == NULL || audit == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (chg->display_name != NULL) {
        rc = kg_manage_check_text("display_name", chg->display_name, 0, KG_NAME_MAX - 1,
                                  t.display_name, err);
        if (rc != KG_OK)
            goto cleanup;
        json_object_set_new(details, "display_name", json_string(t.display_name));
    }
    if (chg->set_disabled) {
        if (chg->disabled == (t.disabled_at != 0)) {
            rc = kg_err_set(err, KG_ECONFLICT, "tenant %s is already %s", t.name,
                            chg->disabled ? "disabled" : "enabled");
            goto cleanup;
        }
        t.disabled_at = chg->disabled ? now : 0;
        json_object_set_new(details, "disabled", json_boolean(chg->disabled));
    }
    rc = kg_manage_audit(audit, kc, now, t.name, "tenant.update", t.name, details, err);
    details = NULL;
    if (rc == KG_OK)
        rc = kg_store_tenant_update(kc->store, &t, audit, err);
    if (rc == KG_OK && out != NULL)
        *out = t;
cleanup:
    json_decref(details);
    free(audit);
    return rc;
}

/* ---- users ---- */

static enum kg_status
fenced_user(const char *fence, const char *ref, enum kg_status rc, struct kg_user_rec *out,
            struct kg_err *err)
{
    /* A user behind the fence reads exactly like one that is not there, and
     * so does a platform admin to a fenced caller: a tenant admin must not
     * manage (or mint keys for) a user with more power than its tenant. */
    if (rc == KG_ENOTFOUND || (rc == KG_OK && (kg_manage_fenced_out(fence, out->tenant) ||
                                               (fence != NULL && out->platform_admin)))) {
        memset(out, 0, sizeof(*out));
        return kg_err_set(err, KG_ENOTFOUND, "no user %.128s", ref);
    }
    return rc;
}

/* Store lookups refuse malformed ids and names with KG_EINVAL; to a person
 * typing a reference that is simply "no such user". */
static bool
id_shaped(const char *ref)
{
    size_t n = strnlen(ref, KG_ID_MAX);

    if (n == 0 || n == KG_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = ref[i];

        if (!(isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

enum kg_status
kg_accounts_user_get(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                     struct kg_user_rec *out, struct kg_err *err)
{
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (rc != KG_OK)
        return rc;
    if (id == NULL || !id_shaped(id))
        return kg_err_set(err, KG_ENOTFOUND, "no user %.128s", id != NULL ? id : "");
    rc = kg_store_user_get(kc->store, id, out, err);
    return fenced_user(fence, id, rc, out, err);
}

enum kg_status
kg_accounts_user_resolve(const struct kg_keys_ctx *kc, const char *fence, const char *tenant,
                         const char *ref, struct kg_user_rec *out, struct kg_err *err)
{
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (rc != KG_OK)
        return rc;
    if (ref == NULL || ref[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "user is required");
    if (strncmp(ref, "usr_", 4) == 0 && id_shaped(ref)) {
        rc = kg_store_user_get(kc->store, ref, out, err);
        rc = fenced_user(fence, ref, rc, out, err);
        if (rc != KG_ENOTFOUND)
            return rc;
    }
    if (tenant == NULL)
        tenant = fence != NULL ? fence : KG_TENANT_DEFAULT;
    if (kg_manage_fenced_out(fence, tenant) || strnlen(ref, KG_NAME_MAX) == KG_NAME_MAX ||
        strnlen(tenant, KG_NAME_MAX) == KG_NAME_MAX)
        return kg_err_set(err, KG_ENOTFOUND, "no user %.128s", ref);
    rc = kg_store_user_find(kc->store, tenant, ref, out, err);
    return fenced_user(fence, ref, rc, out, err);
}

enum kg_status
kg_accounts_user_list(const struct kg_keys_ctx *kc, const char *fence, const char *tenant,
                      const struct kg_page *page, kg_store_user_cb cb, void *ctx, char *next,
                      struct kg_err *err)
{
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (next != NULL)
        next[0] = '\0';
    if (rc != KG_OK)
        return rc;
    if (fence != NULL) {
        if (tenant != NULL && strcmp(tenant, fence) != 0)
            return KG_OK;
        tenant = fence;
    }
    return kg_store_user_list(kc->store, tenant, page, cb, ctx, next, err);
}

/* Makes the user entry (and, with key, the key entry after it). */
static enum kg_status
creation_audit(const struct kg_keys_ctx *kc, const struct kg_user_new *req,
               const struct kg_user_rec *u, const struct kg_key_rec *key, int64_t now,
               struct kg_audit_entry entries[2], struct kg_err *err)
{
    json_t *details = user_details(u);
    enum kg_status rc;

    if (details != NULL && req->is_signup && key != NULL)
        json_object_set_new(details, "key_id", json_string(key->id));
    rc = kg_manage_audit(&entries[0], kc, now, u->tenant, req->is_signup ? "signup" : "user.create",
                         u->id, details, err);
    if (rc != KG_OK || key == NULL || req->is_signup)
        return rc;
    rc = kg_manage_audit(&entries[1], kc, now, key->tenant, "key.create", key->id,
                         kg_manage_key_details(key), err);
    entries[0].next = &entries[1];
    return rc;
}

enum kg_status
kg_accounts_user_create(const struct kg_keys_ctx *kc, const char *fence,
                        const struct kg_user_new *req, const struct kg_key_new *first_key,
                        int64_t now, struct kg_user_rec *out, struct kg_key_rec *key_rec,
                        char **key_out, struct kg_err *err)
{
    struct kg_audit_entry *audit = NULL;
    struct kg_tenant_rec t;
    const char *tenant;
    enum kg_status rc;
    char *key = NULL;

    if (key_out != NULL)
        *key_out = NULL;
    rc = kg_manage_check_ctx(kc, first_key != NULL, true, err);
    if (rc != KG_OK)
        return rc;
    if (req == NULL || (first_key != NULL && (key_rec == NULL || key_out == NULL)))
        return kg_err_set(err, KG_EINVAL, "user request: missing argument");
    if (first_key != NULL && (first_key->tenant != NULL || first_key->user != NULL))
        return kg_err_set(err, KG_EINVAL, "a first key takes its user's tenant and id");
    memset(out, 0, sizeof(*out));
    rc = fill_user(req, fence, out, err);
    if (rc != KG_OK)
        return rc;
    tenant = req->tenant != NULL ? req->tenant : fence != NULL ? fence : KG_TENANT_DEFAULT;
    rc = kg_manage_check_slug("tenant", tenant, KG_TENANT_MAX, out->tenant, err);
    if (rc == KG_OK)
        rc = get_tenant(kc, fence, out->tenant, &t, err);
    if (rc == KG_OK && t.disabled_at != 0)
        rc = kg_err_set(err, KG_ECONFLICT, "tenant %s is disabled", t.name);
    if (rc != KG_OK)
        return rc;
    kg_keyfmt_new_id("usr", out->id);
    out->created_at = now;
    if (first_key != NULL) {
        rc = kg_manage_key_prepare(kc, first_key, out, now, key_rec, &key, err);
        if (rc != KG_OK)
            goto cleanup;
    }
    audit = calloc(2, sizeof(*audit));
    if (audit == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = creation_audit(kc, req, out, first_key != NULL ? key_rec : NULL, now, audit, err);
    if (rc == KG_OK)
        rc = kg_store_user_insert(kc->store, out, first_key != NULL ? key_rec : NULL, audit, err);
    if (rc != KG_OK)
        goto cleanup;
    if (key_out != NULL) {
        *key_out = key;
        key = NULL;
    }
cleanup:
    kg_keys_key_free(key);
    free(audit);
    return rc;
}

enum kg_status
kg_accounts_user_usage(const struct kg_keys_ctx *kc, const char *fence, const struct kg_user_rec *u,
                       int64_t now, struct kg_user_usage *out, struct kg_err *err)
{
    const struct kg_tier *tier;
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (rc != KG_OK)
        return rc;
    if (kg_manage_fenced_out(fence, u->tenant))
        return kg_err_set(err, KG_ENOTFOUND, "no user %s", u->id);
    rc = kg_store_user_usage_get(kc->store, u->id, out, err);
    if (rc != KG_OK)
        return rc;
    /* A count of an earlier period is history (the same rule as the cache). */
    out->credits =
        kg_quota_stored_used(u->quota_period, out->credits, out->credits_period_start, now);
    tier = kc->cfg != NULL ? kg_config_tier(kc->cfg, u->tier) : NULL;
    /* Without a tier quota nothing counts (a quota removed from the config
     * leaves its last count in the store): 0, as for a user never charged. */
    if (tier == NULL || tier->quota_period == KG_QUOTA_NONE ||
        out->tier_period_start < kg_quota_period_start(tier->quota_period, now)) {
        out->tier = 0;
        out->tier_period_start = 0;
    }
    return KG_OK;
}

/* Applies chg to u, recording each new value in details. */
static enum kg_status
apply_user_change(const struct kg_user_change *chg, const char *fence, int64_t now,
                  struct kg_user_rec *u, json_t *details, struct kg_err *err)
{
    enum kg_status rc = KG_OK;

    if (chg->username != NULL &&
        (rc = kg_manage_check_text("username", chg->username, 1, KG_NAME_MAX - 1, u->username,
                                   err)) == KG_OK)
        json_object_set_new(details, "username", json_string(u->username));
    if (rc == KG_OK && chg->email != NULL) {
        if (chg->email[0] == '\0')
            u->email[0] = '\0';
        else
            rc = kg_accounts_normalise_email(chg->email, u->email, err);
        json_object_set_new(details, "email",
                            u->email[0] != '\0' ? json_string(u->email) : json_null());
    }
    if (rc == KG_OK && chg->first_name != NULL &&
        (rc = kg_manage_check_text("first_name", chg->first_name, 0, KG_NAME_MAX - 1, u->first_name,
                                   err)) == KG_OK)
        json_object_set_new(details, "first_name", json_string(u->first_name));
    if (rc == KG_OK && chg->last_name != NULL &&
        (rc = kg_manage_check_text("last_name", chg->last_name, 0, KG_NAME_MAX - 1, u->last_name,
                                   err)) == KG_OK)
        json_object_set_new(details, "last_name", json_string(u->last_name));
    if (rc == KG_OK && chg->password_hash != NULL &&
        (rc = check_password_hash(chg->password_hash, u->password_hash, err)) == KG_OK)
        json_object_set_new(details, "password", json_string("changed"));
    if (rc == KG_OK && chg->role != NULL && (rc = check_role(chg->role, u->role, err)) == KG_OK)
        json_object_set_new(details, "role", kg_json_io_list(u->role));
    if (rc == KG_OK && chg->tier != NULL &&
        (rc = kg_manage_check_slug("tier", chg->tier, KG_TIER_MAX - 1, u->tier, err)) == KG_OK)
        json_object_set_new(details, "tier", json_string(u->tier));
    if (rc == KG_OK && chg->set_platform_admin) {
        if (fence != NULL)
            return kg_err_set(err, KG_EINVAL,
                              "platform_admin: only a platform admin may change it");
        u->platform_admin = chg->platform_admin;
        json_object_set_new(details, "platform_admin", json_boolean(u->platform_admin));
    }
    if (rc == KG_OK && chg->set_quota_limit) {
        if (chg->quota_limit < -1 || chg->quota_limit > KG_CREDITS_MAX)
            return kg_err_set(err, KG_EINVAL, "quota_limit must be -1 (unlimited) to 1000000000");
        u->has_quota = chg->quota_limit >= 0;
        u->quota_limit = u->has_quota ? chg->quota_limit : 0;
        json_object_set_new(details, "quota_limit", json_integer(chg->quota_limit));
        /* Unlimited credits have nothing to refill. */
        if (!u->has_quota && u->quota_period[0] != '\0' && chg->quota_period == NULL) {
            u->quota_period[0] = '\0';
            json_object_set_new(details, "quota_period", json_string(""));
        }
    }
    if (rc == KG_OK && chg->quota_period != NULL) {
        if (strcmp(chg->quota_period, "") != 0 && strcmp(chg->quota_period, "day") != 0 &&
            strcmp(chg->quota_period, "month") != 0)
            return kg_err_set(err, KG_EINVAL, "quota_period wants day, month or nothing");
        if (chg->quota_period[0] != '\0' && !u->has_quota)
            return kg_err_set(err, KG_EINVAL, KG_REFILL_NEEDS_CREDITS);
        snprintf(u->quota_period, sizeof(u->quota_period), "%s", chg->quota_period);
        json_object_set_new(details, "quota_period", json_string(u->quota_period));
    }
    if (rc == KG_OK && chg->set_disabled) {
        if (chg->disabled == (u->disabled_at != 0))
            return kg_err_set(err, KG_ECONFLICT, "user %s is already %s", u->id,
                              chg->disabled ? "disabled" : "enabled");
        u->disabled_at = chg->disabled ? now : 0;
        json_object_set_new(details, "disabled", json_boolean(chg->disabled));
    }
    return rc;
}

static bool
user_change_empty(const struct kg_user_change *chg)
{
    return chg->username == NULL && chg->email == NULL && chg->first_name == NULL &&
           chg->last_name == NULL && chg->password_hash == NULL && chg->role == NULL &&
           chg->tier == NULL && !chg->set_platform_admin && !chg->set_disabled &&
           !chg->set_quota_limit && chg->quota_period == NULL;
}

/* Reads id, applies chg and stores it with one entry of action. */
static enum kg_status
change_user(const struct kg_keys_ctx *kc, const char *fence, const char *id,
            const struct kg_user_change *chg, const char *action, int64_t now,
            struct kg_user_rec *out, struct kg_err *err)
{
    struct kg_audit_entry *audit = NULL;
    struct kg_user_rec u;
    json_t *details = NULL;
    enum kg_status rc;

    rc = kg_manage_check_ctx(kc, false, true, err);
    if (rc != KG_OK)
        return rc;
    if (chg == NULL || user_change_empty(chg))
        return kg_err_set(err, KG_EINVAL, "nothing to change");
    rc = kg_accounts_user_get(kc, fence, id, &u, err);
    if (rc != KG_OK)
        return rc;
    details = json_object();
    audit = malloc(sizeof(*audit));
    if (details == NULL || audit == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = apply_user_change(chg, fence, now, &u, details, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_manage_audit(audit, kc, now, u.tenant, action, u.id, details, err);
    details = NULL;
    if (rc == KG_OK)
        rc = kg_store_user_update(kc->store, &u, audit, err);
    if (rc == KG_OK && out != NULL)
        *out = u;
cleanup:
    json_decref(details);
    free(audit);
    return rc;
}

enum kg_status
kg_accounts_user_update(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                        const struct kg_user_change *chg, int64_t now, struct kg_user_rec *out,
                        struct kg_err *err)
{
    return change_user(kc, fence, id, chg, "user.update", now, out, err);
}

enum kg_status
kg_accounts_user_disable(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                         int64_t now, struct kg_user_rec *out, struct kg_err *err)
{
    const struct kg_user_change chg = {.set_disabled = true, .disabled = true};

    return change_user(kc, fence, id, &chg, "user.disable", now, out, err);
}

/* The default owner's pieces are made on first need; another process may
 * make them at the same moment, so a conflict means "read it again". */
static enum kg_status
ensure_tenant(const struct kg_keys_ctx *kc, const char *fence, const char *name, int64_t now,
              struct kg_err *err)
{
    const struct kg_tenant_new req = {.name = name};
    struct kg_tenant_rec t;
    enum kg_status rc;

    rc = get_tenant(kc, fence, name, &t, err);
    if (rc != KG_ENOTFOUND || fence != NULL)
        return rc;
    rc = kg_accounts_tenant_create(kc, NULL, &req, now, &t, err);
    return rc == KG_ECONFLICT ? KG_OK : rc;
}

enum kg_status
kg_accounts_default_user(const struct kg_keys_ctx *kc, const char *fence, const char *tenant,
                         int64_t now, struct kg_user_rec *out, struct kg_err *err)
{
    const struct kg_user_new req = {.tenant = tenant, .username = KG_USER_DEFAULT};
    struct kg_tenant_rec t;
    enum kg_status rc;

    rc = kg_manage_check_ctx(kc, false, true, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_accounts_check_tenant(tenant, err);
    if (rc == KG_OK)
        rc = ensure_tenant(kc, fence, tenant, now, err);
    if (rc == KG_OK)
        rc = get_tenant(kc, fence, tenant, &t, err);
    if (rc == KG_OK && t.disabled_at != 0)
        rc = kg_err_set(err, KG_ECONFLICT, "tenant %s is disabled", t.name);
    if (rc != KG_OK)
        return rc;
    rc = kg_store_user_find(kc->store, tenant, KG_USER_DEFAULT, out, err);
    if (rc != KG_ENOTFOUND)
        return rc;
    rc = kg_accounts_user_create(kc, fence, &req, NULL, now, out, NULL, NULL, err);
    if (rc == KG_ECONFLICT)
        rc = kg_store_user_find(kc->store, tenant, KG_USER_DEFAULT, out, err);
    return rc;
}

/* ---- passwords ---- */

/* A letter is an ASCII letter or any non-ASCII character, so passphrases in
 * any script count. */
enum kg_status
kg_accounts_check_password(const char *pw, struct kg_err *err)
{
    size_t n, chars = 0;

    if (pw == NULL)
        return kg_err_set(err, KG_EINVAL, "password is required");
    n = strnlen(pw, KG_PASSWORD_MAX + 1);
    if (n > KG_PASSWORD_MAX)
        return kg_err_set(err, KG_EINVAL, "password must be at most %d bytes", KG_PASSWORD_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)pw[i];

        if ((c & 0xC0) != 0x80)
            chars++;
    }
    if (chars < KG_PASSWORD_MIN)
        return kg_err_set(err, KG_EINVAL, "password must be at least %d characters",
                          KG_PASSWORD_MIN);
    return KG_OK;
}

enum kg_status
kg_accounts_hash_password(const char *pw, char out[KG_PWHASH_MAX], struct kg_err *err)
{
    enum kg_status rc = kg_accounts_check_password(pw, err);

    if (rc != KG_OK)
        return rc;
    _Static_assert(crypto_pwhash_STRBYTES <= KG_PWHASH_MAX, "KG_PWHASH_MAX is too small");
    if (sodium_init() < 0)
        return kg_err_set(err, KG_EIO, "libsodium failed to initialise");
    if (crypto_pwhash_str(out, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return kg_err_set(err, KG_ENOMEM, "out of memory hashing the password");
    return KG_OK;
}

enum kg_status
kg_accounts_user_set_password(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                              const char *password, int64_t now, struct kg_user_rec *out,
                              struct kg_err *err)
{
    char hash[KG_PWHASH_MAX];
    struct kg_user_change chg = {.password_hash = hash};
    struct kg_user_rec u;
    enum kg_status rc;

    /* The user first: an unknown id costs no Argon2id run. */
    rc = kg_accounts_user_get(kc, fence, id, &u, err);
    if (rc == KG_OK)
        rc = kg_accounts_hash_password(password, hash, err);
    if (rc == KG_OK)
        rc = kg_accounts_user_update(kc, fence, id, &chg, now, out, err);
    sodium_memzero(hash, sizeof(hash));
    return rc;
}
