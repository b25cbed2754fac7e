/* manage/keys.c - the key lifecycle core: create (the key shown once), get,
 * list, update, revoke (permanent) and rotate with a grace period.
 *
 * Owns the rules every edge shares: what a valid name and tenant are, which
 * user owns a key and what its role allows, what an update may change, what
 * a rotation carries over and when a change conflicts with a key's state;
 * the field checks and audit plumbing all manage/ files share are in
 * common.c. It does not format anything for people (cli/, admin/ do)
 * and does not store anything itself (store/ does, one transaction per
 * change with its audit entry). The full key lives only in sodium_malloc'd
 * memory between its generation and the caller's kg_keys_key_free().
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/accounts.h"
#include "keygate/audit.h"
#include "keygate/clientip.h"
#include "keygate/gcra.h"
#include "keygate/json_io.h"
#include "keygate/keyfmt.h"
#include "keygate/keys.h"
#include "keygate/scope.h"
#include "keygate/timeutil.h"
#include "manage/manage_int.h"

/* ---- scope sets ---- */

/* Copies the next scope of list at *p into one (KG_SCOPE_MAX + 1 bytes)
 * and advances *p; false at the end. Lists are normalised: no blanks. */
static bool
next_scope(const char **p, char *one)
{
    const char *s = *p;
    const char *end;
    size_t n;

    if (*s == '\0')
        return false;
    end = strchr(s, ',');
    n = end != NULL ? (size_t)(end - s) : strlen(s);
    if (n > KG_SCOPE_MAX)
        n = KG_SCOPE_MAX;
    memcpy(one, s, n);
    one[n] = '\0';
    *p = end != NULL ? end + 1 : s + strlen(s);
    return true;
}

static bool
granted_by(const char *granting, const char *scope)
{
    char have[KG_SCOPE_MAX + 1];
    const char *p = granting;

    while (next_scope(&p, have)) {
        if (kg_scope_grants(have, scope))
            return true;
    }
    return false;
}

bool
kg_keys_scopes_within(const char *granting, const char *scopes, char *bad, size_t badlen)
{
    char want[KG_SCOPE_MAX + 1];
    const char *p = scopes;

    while (next_scope(&p, want)) {
        if (!granted_by(granting, want)) {
            if (bad != NULL && badlen > 0)
                snprintf(bad, badlen, "%s", want);
            return false;
        }
    }
    return true;
}

static enum kg_status
check_role_fit(const char *role, const char *scopes, struct kg_err *err)
{
    char bad[KG_SCOPE_MAX + 1];

    if (kg_keys_scopes_within(role, scopes, bad, sizeof(bad)))
        return KG_OK;
    return kg_err_set(err, KG_EINVAL, "scopes exceed the user's role: %s", bad);
}

/* ---- validation ---- */

static enum kg_status
parse_expiry(const char *expires, int64_t now, int64_t *out, struct kg_err *err)
{
    struct kg_err why = {{0}};
    enum kg_status rc;

    rc = kg_time_parse_expiry(expires, now, out, &why);
    if (rc == KG_OK)
        return KG_OK;
    /* A malformed duration's words do not say what it was for. */
    if (strstr(why.msg, "expiry") != NULL)
        return kg_err_set(err, rc, "%s", why.msg);
    return kg_err_set(err, rc, "expiry: %s", why.msg);
}

static enum kg_status check_rate(const char *rate, char out[KG_RATE_MAX], struct kg_err *err);

enum kg_status
kg_keys_allowed_ips_normalise(const char *in, char *out, struct kg_err *err)
{
    size_t used = 0, count = 0;
    const char *p = in;

    out[0] = '\0';
    if (*p == '\0')
        return KG_OK;
    for (;;) {
        char one[KG_CLIENTIP_MAX + 8], canon[KG_CLIENTIP_MAX];
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        struct kg_cidr c;
        int w;

        /* Blanks around a block are the list's, not the block's. */
        while (n > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == 0)
            return kg_err_set(err, KG_EINVAL,
                              "allowed_ips: an empty entry is not an address block");
        if (n < sizeof(one))
            memcpy(one, p, n);
        one[n < sizeof(one) ? n : 0] = '\0';
        if (n >= sizeof(one) || !kg_clientip_cidr_parse(one, &c))
            return kg_err_set(err, KG_EINVAL, "allowed_ips: %.*s is not an address block (CIDR)",
                              (int)(n > 64 ? 64 : n), p);
        if (++count > KG_ALLOWED_IPS_COUNT)
            return kg_err_set(err, KG_EINVAL, "allowed_ips: at most %d address blocks",
                              KG_ALLOWED_IPS_COUNT);
        kg_clientip_format(&c.addr, canon, sizeof(canon));
        w = snprintf(out + used, KG_ALLOWED_IPS_MAX - used, "%s%s/%d", used > 0 ? "," : "", canon,
                     c.prefix);
        if (w < 0 || (size_t)w >= KG_ALLOWED_IPS_MAX - used)
            return kg_err_set(err, KG_EINVAL, "allowed_ips: the list is too long");
        used += (size_t)w;
        if (end == NULL)
            return KG_OK;
        p = end + 1;
    }
}

/* Validates req's own fields (not tenant or user) into rec. The scope and
 * time modules own those rules; their words already name the field. */
static enum kg_status
fill_new(const struct kg_key_new *req, int64_t now, struct kg_key_rec *rec, struct kg_err *err)
{
    enum kg_status rc;

    rc = kg_manage_check_text("name", req->name, 1, KG_NAME_MAX - 1, rec->name, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_scope_list_normalise(req->scopes != NULL ? req->scopes : "", rec->scopes,
                                 sizeof(rec->scopes), err);
    if (rc != KG_OK)
        return rc;
    rc = check_rate(req->rate != NULL ? req->rate : "", rec->rate, err);
    if (rc != KG_OK)
        return rc;
    if (req->rate_burst < 0 || req->rate_burst > 1000000000)
        return kg_err_set(err, KG_EINVAL, "rate_burst must be 0 (the default) to 1000000000");
    rec->rate_burst = req->rate_burst;
    rec->quota_limit = -1;
    if (req->has_credits) {
        if (req->credits < 0 || req->credits > KG_CREDITS_MAX)
            return kg_err_set(err, KG_EINVAL, "credits must be 0 to 1000000000");
        rec->quota_limit = req->credits;
    }
    if (req->refill != NULL && req->refill[0] != '\0') {
        if (strcmp(req->refill, "day") != 0 && strcmp(req->refill, "month") != 0)
            return kg_err_set(err, KG_EINVAL, "refill wants day or month");
        if (!req->has_credits)
            return kg_err_set(err, KG_EINVAL, KG_REFILL_NEEDS_CREDITS);
        snprintf(rec->quota_period, sizeof(rec->quota_period), "%s", req->refill);
    }
    rec->canary = req->canary;
    rc = kg_keys_allowed_ips_normalise(req->allowed_ips != NULL ? req->allowed_ips : "",
                                       rec->allowed_ips, err);
    if (rc != KG_OK)
        return rc;
    rec->expires_at = 0;
    if (req->expires != NULL)
        return parse_expiry(req->expires, now, &rec->expires_at, err);
    return KG_OK;
}

enum kg_status
kg_keys_check_new(const struct kg_key_new *req, int64_t now, struct kg_err *err)
{
    struct kg_key_rec *scratch;
    char tenant[KG_TENANT_MAX + 1];
    enum kg_status rc;

    if (req == NULL)
        return kg_err_set(err, KG_EINVAL, "key request: missing argument");
    scratch = calloc(1, sizeof(*scratch));
    if (scratch == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    rc = fill_new(req, now, scratch, err);
    if (rc == KG_OK && req->tenant != NULL)
        rc = kg_manage_check_slug("tenant", req->tenant, KG_TENANT_MAX, tenant, err);
    if (rc == KG_OK && req->user != NULL && req->user[0] == '\0')
        rc = kg_err_set(err, KG_EINVAL, "user must not be empty");
    free(scratch);
    return rc;
}

/* ---- minting ---- */

/* Generates a key for rec: a new id, display parts and digest. On KG_OK
 * *key_out is the full key in read-only sodium memory. */
static enum kg_status
mint(const struct kg_keys_ctx *kc, struct kg_key_rec *rec, char **key_out, struct kg_err *err)
{
    enum kg_status rc;
    char *key;
    size_t len;

    *key_out = NULL;
    if (sodium_init() < 0)
        return kg_err_set(err, KG_ENOMEM, "libsodium failed to initialise");
    /* sodium_malloc puts the key between guard pages, keeps it out of swap
     * and wipes it in sodium_free. */
    key = sodium_malloc(KG_KEY_MAX);
    if (key == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    rc = kg_keyfmt_generate(kc->cfg->key_prefix, key, err);
    if (rc != KG_OK) {
        sodium_free(key);
        return rc;
    }
    len = strlen(key);
    kg_keyfmt_new_id("key", rec->id);
    kg_keyfmt_display(key, len, rec->prefix, rec->last4);
    kg_digest_compute(kc->secret, key, len, rec->digest);
    sodium_mprotect_readonly(key);
    *key_out = key;
    return KG_OK;
}

static enum kg_status
check_owner_usable(const struct kg_user_rec *u, struct kg_err *err)
{
    if (u->disabled_at != 0)
        return kg_err_set(err, KG_ECONFLICT, "user %s is disabled", u->id);
    return KG_OK;
}

enum kg_status
kg_manage_key_prepare(const struct kg_keys_ctx *kc, const struct kg_key_new *req,
                      const struct kg_user_rec *owner, int64_t now, struct kg_key_rec *rec,
                      char **key_out, struct kg_err *err)
{
    enum kg_status rc;

    *key_out = NULL;
    memset(rec, 0, sizeof(*rec));
    rc = fill_new(req, now, rec, err);
    if (rc != KG_OK)
        return rc;
    rc = check_role_fit(owner->role, rec->scopes, err);
    if (rc != KG_OK)
        return rc;
    memcpy(rec->user_id, owner->id, sizeof(rec->user_id));
    memcpy(rec->tenant, owner->tenant, sizeof(rec->tenant));
    rec->created_at = now;
    memcpy(rec->metadata, "{}", 3);
    return mint(kc, rec, key_out, err);
}

json_t *
kg_manage_key_details(const struct kg_key_rec *rec)
{
    json_t *o =
        json_pack("{s:s, s:o, s:s, s:o}", "name", rec->name, "scopes", kg_json_io_list(rec->scopes),
                  "user_id", rec->user_id, "expires_at", kg_json_io_time(rec->expires_at));

    /* Only when set, so the audit entries of ordinary keys keep their shape. */
    if (o != NULL && rec->canary)
        json_object_set_new(o, "canary", json_true());
    if (o != NULL && rec->allowed_ips[0] != '\0')
        json_object_set_new(o, "allowed_ips", kg_json_io_list(rec->allowed_ips));
    return o;
}

/* Finds the owner a new key asks for (see struct kg_key_new). */
static enum kg_status
resolve_owner(const struct kg_keys_ctx *kc, const char *fence, const struct kg_key_new *req,
              int64_t now, struct kg_user_rec *owner, struct kg_err *err)
{
    const char *tenant = req->tenant != NULL ? req->tenant : fence;
    struct kg_tenant_rec t;
    enum kg_status rc;

    if (req->user == NULL) {
        rc = kg_accounts_default_user(kc, fence, tenant != NULL ? tenant : KG_TENANT_DEFAULT, now,
                                      owner, err);
        /* The default tenant's default user is the platform admin: a fenced
         * caller must name a user of its own instead. */
        if (rc == KG_OK && fence != NULL && owner->platform_admin)
            rc = kg_err_set(err, KG_ENOTFOUND, "no user default in tenant %.64s", owner->tenant);
        return rc;
    }
    rc = kg_accounts_user_resolve(kc, fence, tenant, req->user, owner, err);
    if (rc != KG_OK)
        return rc;
    /* A user named by id decides the tenant; one named by --tenant too must agree. */
    if (req->tenant != NULL && strcmp(req->tenant, owner->tenant) != 0)
        return kg_err_set(err, KG_ENOTFOUND, "no user %.128s in tenant %.64s", req->user,
                          req->tenant);
    rc = kg_store_tenant_get(kc->store, owner->tenant, &t, err);
    if (rc == KG_OK && t.disabled_at != 0)
        rc = kg_err_set(err, KG_ECONFLICT, "tenant %s is disabled", t.name);
    return rc;
}

/* The tenant's key_max_lifetime (config `tenant NAME key_max_lifetime`):
 * a key must expire, and no later than that from now. */
static enum kg_status
check_lifetime(const struct kg_keys_ctx *kc, const char *tenant, int64_t expires_at, int64_t now,
               struct kg_err *err)
{
    int64_t max = kg_config_key_max_lifetime(kc->cfg, tenant);
    char shown[32];

    if (max <= 0)
        return KG_OK;
    if (max % 86400 == 0)
        snprintf(shown, sizeof(shown), "%" PRId64 "d", max / 86400);
    else
        snprintf(shown, sizeof(shown), "%" PRId64 "s", max);
    if (expires_at == 0)
        return kg_err_set(err, KG_EINVAL,
                          "expires is required: tenant %.64s allows keys of at most %s", tenant,
                          shown);
    if (expires_at - now > max)
        return kg_err_set(err, KG_EINVAL,
                          "expires is later than tenant %.64s allows (keys of at most %s)", tenant,
                          shown);
    return KG_OK;
}

enum kg_status
kg_keys_create(const struct kg_keys_ctx *kc, const char *fence, const struct kg_key_new *req,
               int64_t now, struct kg_key_rec *rec_out, char **key_out, struct kg_err *err)
{
    struct kg_audit_entry *audit = NULL;
    struct kg_user_rec owner;
    enum kg_status rc;
    char *key = NULL;

    *key_out = NULL;
    rc = kg_manage_check_ctx(kc, true, true, err);
    if (rc != KG_OK)
        return rc;
    if (req == NULL)
        return kg_err_set(err, KG_EINVAL, "key request: missing argument");
    /* Input first, so a typo never creates a default owner. */
    rc = kg_keys_check_new(req, now, err);
    if (rc != KG_OK)
        return rc;
    rc = resolve_owner(kc, fence, req, now, &owner, err);
    if (rc == KG_OK)
        rc = check_owner_usable(&owner, err);
    if (rc == KG_OK)
        rc = kg_manage_key_prepare(kc, req, &owner, now, rec_out, &key, err);
    if (rc == KG_OK)
        rc = check_lifetime(kc, owner.tenant, rec_out->expires_at, now, err);
    if (rc != KG_OK)
        goto cleanup;
    audit = malloc(sizeof(*audit));
    if (audit == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kg_manage_audit(audit, kc, now, rec_out->tenant, "key.create", rec_out->id,
                         kg_manage_key_details(rec_out), err);
    if (rc == KG_OK)
        rc = kg_store_key_insert_audited(kc->store, rec_out, audit, err);
    if (rc != KG_OK)
        goto cleanup;
    *key_out = key;
    key = NULL;
cleanup:
    free(audit);
    kg_keys_key_free(key);
    return rc;
}

void
kg_keys_key_free(char *key)
{
    /* sodium_free wipes the region (read-only or not) before unmapping it. */
    if (key != NULL)
        sodium_free(key);
}

enum kg_status
kg_keys_get(const struct kg_keys_ctx *kc, const char *fence, const char *id, struct kg_key_rec *out,
            struct kg_err *err)
{
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (rc != KG_OK)
        return rc;
    rc = kg_store_key_get(kc->store, id, out, err);
    /* The store's words vary by backend; a missing key reads the same
     * everywhere, and so does one behind the fence or one of a platform
     * admin seen by a fenced caller. */
    if (rc == KG_OK && fence != NULL && !kg_manage_fenced_out(fence, out->tenant) &&
        out->user_id[0] != '\0') {
        struct kg_user_rec owner;

        if (kg_store_user_get(kc->store, out->user_id, &owner, NULL) == KG_OK &&
            owner.platform_admin)
            rc = KG_ENOTFOUND;
    }
    if (rc == KG_ENOTFOUND || (rc == KG_OK && kg_manage_fenced_out(fence, out->tenant))) {
        memset(out, 0, sizeof(*out));
        return kg_err_set(err, KG_ENOTFOUND, "no key %s", id);
    }
    return rc;
}

struct list_walk {
    int64_t now;
    kg_keys_list_cb cb;
    void *ctx;
};

static bool
list_one(const struct kg_key_rec *rec, void *ctx)
{
    const struct list_walk *w = ctx;

    return w->cb(rec, kg_key_state_of(rec, w->now), w->ctx);
}

enum kg_status
kg_keys_list(const struct kg_keys_ctx *kc, const char *fence, const struct kg_keys_filter *filter,
             const struct kg_page *page, int64_t now, kg_keys_list_cb cb, void *ctx, char *next,
             struct kg_err *err)
{
    struct list_walk w = {.now = now, .cb = cb, .ctx = ctx};
    struct kg_key_query q = {.all_states = true, .now = now};
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (next != NULL)
        next[0] = '\0';
    if (rc != KG_OK)
        return rc;
    if (cb == NULL)
        return kg_err_set(err, KG_EINVAL, "keys list: missing callback");
    if (filter != NULL) {
        q.all_states = filter->all_states;
        q.state = filter->state;
        q.tenant = filter->tenant;
        q.user_id = filter->user;
        q.name = filter->name;
    }
    if (page != NULL)
        q.page = *page;
    if (fence != NULL) {
        /* Another tenant's keys are not there for this caller: an empty
         * page, exactly as for a tenant without keys. */
        if (q.tenant != NULL && strcmp(q.tenant, fence) != 0)
            return KG_OK;
        q.tenant = fence;
    }
    return kg_store_key_list(kc->store, &q, list_one, &w, next, err);
}

/* ---- update ---- */

/* "N/s", "N/min" or "N/h", N 1..1e9: checked by the limiter's own parser,
 * so a stored rate is always one the key cache can enforce. */
static enum kg_status
check_rate(const char *rate, char out[KG_RATE_MAX], struct kg_err *err)
{
    int64_t count, period_s;

    if (rate[0] == '\0' || kg_gcra_parse_rate(rate, &count, &period_s)) {
        snprintf(out, KG_RATE_MAX, "%s", rate);
        return KG_OK;
    }
    return kg_err_set(err, KG_EINVAL,
                      "rate wants N/s, N/min or N/h (N 1 to 1000000000), got "
                      "\"%.32s\"",
                      rate);
}

/* Applies chg to rec, recording each new value in details. */
static enum kg_status
apply_change(const struct kg_key_change *chg, const struct kg_user_rec *owner, int64_t now,
             struct kg_key_rec *rec, json_t *details, struct kg_err *err)
{
    char bad[KG_SCOPE_MAX + 1];
    enum kg_status rc;
    bool ok = true;

    if (chg->name != NULL) {
        rc = kg_manage_check_text("name", chg->name, 1, KG_NAME_MAX - 1, rec->name, err);
        if (rc != KG_OK)
            return rc;
        ok = ok && json_object_set_new(details, "name", json_string(rec->name)) == 0;
    }
    if (chg->scopes != NULL) {
        char scopes[KG_SCOPES_MAX];

        rc = kg_scope_list_normalise(chg->scopes, scopes, sizeof(scopes), err);
        if (rc != KG_OK)
            return rc;
        /* A key without scopes has all of its role's power, so any list
         * narrows it; an empty list widens any other key. */
        if (rec->scopes[0] != '\0' &&
            (scopes[0] == '\0' || !kg_keys_scopes_within(rec->scopes, scopes, bad, sizeof(bad))))
            return kg_err_set(err, KG_EINVAL, "scopes must narrow the key's scopes: %s",
                              scopes[0] == '\0' ? "(none means every scope)" : bad);
        rc = check_role_fit(owner->role, scopes, err);
        if (rc != KG_OK)
            return rc;
        memcpy(rec->scopes, scopes, sizeof(scopes));
        ok = ok && json_object_set_new(details, "scopes", kg_json_io_list(rec->scopes)) == 0;
    }
    if (chg->expires != NULL) {
        if (strcmp(chg->expires, "never") == 0)
            rec->expires_at = 0;
        else if ((rc = parse_expiry(chg->expires, now, &rec->expires_at, err)) != KG_OK)
            return rc;
        ok =
            ok && json_object_set_new(details, "expires_at", kg_json_io_time(rec->expires_at)) == 0;
    }
    if (chg->rate != NULL) {
        rc = check_rate(chg->rate, rec->rate, err);
        if (rc != KG_OK)
            return rc;
        ok = ok &&
             json_object_set_new(details, "rate",
                                 rec->rate[0] != '\0' ? json_string(rec->rate) : json_null()) == 0;
    }
    if (chg->set_rate_burst) {
        if (chg->rate_burst < 0 || chg->rate_burst > 1000000000)
            return kg_err_set(err, KG_EINVAL, "rate_burst must be 0 (the default) to 1000000000");
        rec->rate_burst = chg->rate_burst;
        ok = ok && json_object_set_new(details, "rate_burst", json_integer(rec->rate_burst)) == 0;
    }
    if (chg->set_quota_limit) {
        if (chg->quota_limit < -1 || chg->quota_limit > KG_CREDITS_MAX)
            return kg_err_set(err, KG_EINVAL, "quota_limit must be -1 (unlimited) to 1000000000");
        rec->quota_limit = chg->quota_limit;
        ok = ok && json_object_set_new(details, "quota_limit", json_integer(rec->quota_limit)) == 0;
        /* Unlimited credits have nothing to refill. */
        if (rec->quota_limit < 0 && rec->quota_period[0] != '\0' && chg->quota_period == NULL) {
            rec->quota_period[0] = '\0';
            ok = ok && json_object_set_new(details, "quota_period", json_string("")) == 0;
        }
    }
    if (chg->quota_period != NULL) {
        if (strcmp(chg->quota_period, "") != 0 && strcmp(chg->quota_period, "day") != 0 &&
            strcmp(chg->quota_period, "month") != 0)
            return kg_err_set(err, KG_EINVAL, "quota_period wants day, month or nothing");
        if (chg->quota_period[0] != '\0' && rec->quota_limit < 0)
            return kg_err_set(err, KG_EINVAL, KG_REFILL_NEEDS_CREDITS);
        snprintf(rec->quota_period, sizeof(rec->quota_period), "%s", chg->quota_period);
        ok =
            ok && json_object_set_new(details, "quota_period", json_string(rec->quota_period)) == 0;
    }
    if (chg->allowed_ips != NULL) {
        rc = kg_keys_allowed_ips_normalise(chg->allowed_ips, rec->allowed_ips, err);
        if (rc != KG_OK)
            return rc;
        ok = ok &&
             json_object_set_new(details, "allowed_ips", kg_json_io_list(rec->allowed_ips)) == 0;
    }
    if (!ok)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    return KG_OK;
}

static bool
change_is_empty(const struct kg_key_change *chg)
{
    return chg->name == NULL && chg->scopes == NULL && chg->expires == NULL && chg->rate == NULL &&
           !chg->set_rate_burst && !chg->set_quota_limit && chg->quota_period == NULL &&
           chg->allowed_ips == NULL;
}

enum kg_status
kg_keys_update(const struct kg_keys_ctx *kc, const char *fence, const char *id,
               const struct kg_key_change *chg, int64_t now, struct kg_key_rec *rec_out,
               struct kg_err *err)
{
    struct kg_audit_entry *audit = NULL;
    struct kg_key_rec *rec = NULL;
    struct kg_user_rec owner;
    json_t *details = NULL;
    enum kg_status rc;

    rc = kg_manage_check_ctx(kc, false, true, err);
    if (rc != KG_OK)
        return rc;
    if (chg == NULL || change_is_empty(chg))
        return kg_err_set(err, KG_EINVAL, "nothing to change");
    rec = malloc(sizeof(*rec));
    audit = malloc(sizeof(*audit));
    details = json_object();
    if (rec == NULL || audit == NULL || details == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kg_keys_get(kc, fence, id, rec, err);
    if (rc != KG_OK)
        goto cleanup;
    if (kg_key_state_of(rec, now) == KG_KEY_REVOKED) {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is revoked", id);
        goto cleanup;
    }
    rc = kg_store_user_get(kc->store, rec->user_id, &owner, err);
    if (rc == KG_OK)
        rc = apply_change(chg, &owner, now, rec, details, err);
    if (rc == KG_OK && chg->expires != NULL)
        rc = check_lifetime(kc, rec->tenant, rec->expires_at, now, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_manage_audit(audit, kc, now, rec->tenant, "key.update", rec->id, details, err);
    details = NULL;
    if (rc == KG_OK)
        rc = kg_store_key_update(kc->store, rec, audit, err);
    if (rc == KG_ENOTFOUND)
        rc = kg_err_set(err, KG_ENOTFOUND, "no key %s", id);
    if (rc == KG_OK && rec_out != NULL)
        *rec_out = *rec;
cleanup:
    json_decref(details);
    free(audit);
    free(rec);
    return rc;
}

/* ---- revoke and rotate ---- */

enum kg_status
kg_keys_revoke(const struct kg_keys_ctx *kc, const char *fence, const char *id, int64_t now,
               struct kg_key_rec *rec_out, struct kg_err *err)
{
    struct kg_audit_entry *audit = NULL;
    struct kg_key_rec *rec = NULL;
    enum kg_status rc;

    rc = kg_manage_check_ctx(kc, false, true, err);
    if (rc != KG_OK)
        return rc;
    rec = malloc(sizeof(*rec));
    audit = malloc(sizeof(*audit));
    if (rec == NULL || audit == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    /* Reading first gives a clear "no key" and lets rec_out be filled
     * without a second read that could fail after the change committed. */
    rc = kg_keys_get(kc, fence, id, rec, err);
    if (rc != KG_OK)
        goto cleanup;
    if (kg_key_state_of(rec, now) == KG_KEY_REVOKED) {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", id);
        goto cleanup;
    }
    rc = kg_manage_audit(audit, kc, now, rec->tenant, "key.revoke", rec->id,
                         json_pack("{s:o}", "revoked_at", kg_json_io_time(now)), err);
    if (rc == KG_OK)
        rc = kg_store_key_revoke_audited(kc->store, id, now, audit, err);
    if (rc == KG_ECONFLICT)
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", id);
    else if (rc == KG_ENOTFOUND)
        rc = kg_err_set(err, KG_ENOTFOUND, "no key %s", id);
    if (rc == KG_OK && rec_out != NULL) {
        *rec_out = *rec;
        rec_out->revoked_at = now;
    }
cleanup:
    free(audit);
    free(rec);
    return rc;
}

/* Checks that old may be rotated at now. */
static enum kg_status
check_rotatable(const struct kg_key_rec *old, int64_t now, struct kg_err *err)
{
    switch (kg_key_state_of(old, now)) {
    case KG_KEY_REVOKED:
        return kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", old->id);
    case KG_KEY_EXPIRED:
        /* The new key takes the old expiry, so it would be born expired. */
        return kg_err_set(err, KG_ECONFLICT, "key %s has expired; create a new key instead",
                          old->id);
    case KG_KEY_ACTIVE:
    case KG_KEY_DISABLED:
        break;
    }
    if (old->rotated_to[0] != '\0')
        return kg_err_set(err, KG_ECONFLICT, "key %s was already rotated to %s", old->id,
                          old->rotated_to);
    return KG_OK;
}

/* What a rotation and a regeneration share once old is checked: a fresh
 * key made from old (expiring at expires_at; identity, key material and
 * history new), its audit entry (action; details: the new key's id, then
 * extra's members, extra taken over), and the swap in the store, old
 * revoked at revoke_at. *old_out (when not NULL) is old as it now stands. */
static enum kg_status
replace_key(const struct kg_keys_ctx *kc, const struct kg_key_rec *old, int64_t expires_at,
            int64_t revoke_at, int64_t now, const char *action, json_t *extra,
            struct kg_key_rec *fresh_out, struct kg_key_rec *old_out, char **key_out,
            struct kg_err *err)
{
    struct kg_audit_entry *audit = malloc(sizeof(*audit));
    json_t *details = NULL;
    enum kg_status rc;
    char *key = NULL;

    if (audit == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    *fresh_out = *old;
    fresh_out->created_at = now;
    fresh_out->expires_at = expires_at;
    fresh_out->revoked_at = 0;
    fresh_out->last_used_at = 0;
    fresh_out->rotated_to[0] = '\0';
    rc = mint(kc, fresh_out, &key, err);
    if (rc != KG_OK)
        goto cleanup;
    /* NULL (out of memory) is kg_manage_audit's error to give. */
    details = extra != NULL ? json_pack("{s:s}", "new_key_id", fresh_out->id) : NULL;
    if (details != NULL && json_object_update(details, extra) != 0) {
        json_decref(details);
        details = NULL;
    }
    rc = kg_manage_audit(audit, kc, now, old->tenant, action, old->id, details, err);
    if (rc == KG_OK)
        rc = kg_store_key_rotate(kc->store, old->id, fresh_out, revoke_at, now, audit, err);
    if (rc == KG_ENOTFOUND)
        rc = kg_err_set(err, KG_ENOTFOUND, "no key %s", old->id);
    if (rc != KG_OK)
        goto cleanup;
    if (old_out != NULL) {
        *old_out = *old;
        old_out->revoked_at = revoke_at;
        memcpy(old_out->rotated_to, fresh_out->id, sizeof(old_out->rotated_to));
    }
    *key_out = key;
    key = NULL;
cleanup:
    json_decref(extra);
    kg_keys_key_free(key);
    free(audit);
    return rc;
}

enum kg_status
kg_keys_rotate(const struct kg_keys_ctx *kc, const char *fence, const char *old_id, int64_t grace_s,
               int64_t now, struct kg_key_rec *fresh_out, struct kg_key_rec *old_out,
               char **key_out, struct kg_err *err)
{
    struct kg_key_rec *old = NULL;
    struct kg_user_rec owner;
    enum kg_status rc;
    int64_t revoke_at;

    *key_out = NULL;
    rc = kg_manage_check_ctx(kc, true, true, err);
    if (rc != KG_OK)
        return rc;
    if (grace_s < 0)
        return kg_err_set(err, KG_EINVAL, "grace must not be negative");
    if (grace_s > INT64_MAX - now)
        return kg_err_set(err, KG_EINVAL, "grace is too long");
    revoke_at = now + grace_s;
    old = malloc(sizeof(*old));
    if (old == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kg_keys_get(kc, fence, old_id, old, err);
    if (rc == KG_OK)
        rc = check_rotatable(old, now, err);
    /* A disabled owner's keys are dead; a fresh one would be born dead. */
    if (rc == KG_OK)
        rc = kg_store_user_get(kc->store, old->user_id, &owner, err);
    if (rc == KG_OK)
        rc = check_owner_usable(&owner, err);
    if (rc != KG_OK)
        goto cleanup;

    /* Everything the old key was allowed to do carries over, usage included,
     * so a rotation is never a way around a quota. Only identity, key
     * material and history start afresh. */
    rc = replace_key(kc, old, old->expires_at, revoke_at, now, "key.rotate",
                     json_pack("{s:I, s:o}", "grace_s", (json_int_t)grace_s, "old_key_revoked_at",
                               kg_json_io_time(revoke_at)),
                     fresh_out, old_out, key_out, err);
cleanup:
    free(old);
    return rc;
}

enum kg_key_in_use
kg_keys_rotation_in_use(const struct kg_keys_ctx *kc, const char *fence,
                        const struct kg_key_rec *rec, int64_t now)
{
    struct kg_key_rec *fresh;
    struct kg_err err = {{0}};
    enum kg_key_in_use v;

    if (rec->rotated_to[0] == '\0' || rec->revoked_at <= now)
        return KG_KEY_IN_USE_NONE;
    fresh = calloc(1, sizeof(*fresh));
    if (fresh == NULL || kg_keys_get(kc, fence, rec->rotated_to, fresh, &err) != KG_OK)
        v = KG_KEY_IN_USE_UNKNOWN;
    else if (rec->last_used_at >= fresh->created_at && rec->last_used_at > 0)
        v = KG_KEY_IN_USE_YES;
    else
        v = KG_KEY_IN_USE_NO;
    free(fresh);
    return v;
}

/* ---- regenerate (the console) and the state people see ---- */

enum kg_status
kg_keys_regenerate(const struct kg_keys_ctx *kc, const char *fence, const char *id, int64_t now,
                   struct kg_key_rec *fresh_out, struct kg_key_rec *old_out, char **key_out,
                   struct kg_err *err)
{
    struct kg_key_rec *old = NULL;
    struct kg_user_rec owner;
    enum kg_status rc;
    int64_t lifetime, max, expires_at;

    *key_out = NULL;
    rc = kg_manage_check_ctx(kc, true, true, err);
    if (rc != KG_OK)
        return rc;
    old = malloc(sizeof(*old));
    if (old == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kg_keys_get(kc, fence, id, old, err);
    if (rc == KG_OK && kg_key_state_of(old, now) == KG_KEY_REVOKED)
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is revoked", id);
    else if (rc == KG_OK && old->rotated_to[0] != '\0')
        rc =
            kg_err_set(err, KG_ECONFLICT, "key %s was already replaced by %s", id, old->rotated_to);
    if (rc == KG_OK)
        rc = kg_store_user_get(kc->store, old->user_id, &owner, err);
    if (rc == KG_OK)
        rc = check_owner_usable(&owner, err);
    if (rc != KG_OK)
        goto cleanup;
    /* The same lifetime again from now, never more than the policy allows. */
    lifetime = old->expires_at != 0 ? old->expires_at - old->created_at : 0;
    if (old->expires_at != 0 && lifetime < 1)
        lifetime = 1;
    max = kg_config_key_max_lifetime(kc->cfg, old->tenant);
    if (max > 0 && (lifetime == 0 || lifetime > max))
        lifetime = max;
    expires_at = lifetime > 0 ? now + lifetime : 0;
    rc = replace_key(kc, old, expires_at, now, now, "key.regenerate",
                     json_pack("{s:o}", "expires_at", kg_json_io_time(expires_at)), fresh_out,
                     old_out, key_out, err);
cleanup:
    free(old);
    return rc;
}

/* Whether user_id or its tenant is disabled; false when it cannot be read. */
static bool
owner_disabled(const struct kg_keys_ctx *kc, const char *user_id)
{
    struct kg_user_rec *u = malloc(sizeof(*u));
    struct kg_tenant_rec t;
    bool disabled = false;

    if (u != NULL && kg_store_user_get(kc->store, user_id, u, NULL) == KG_OK)
        disabled =
            u->disabled_at != 0 ||
            (kg_store_tenant_get(kc->store, u->tenant, &t, NULL) == KG_OK && t.disabled_at != 0);
    free(u);
    return disabled;
}

enum kg_key_state
kg_keys_state(const struct kg_keys_ctx *kc, const struct kg_key_rec *rec, int64_t now)
{
    enum kg_key_state own = kg_key_state_of(rec, now);

    if (own == KG_KEY_REVOKED || kc == NULL || kc->store == NULL || rec->user_id[0] == '\0')
        return own;
    return owner_disabled(kc, rec->user_id) ? KG_KEY_DISABLED : own;
}

void
kg_keys_mark_disabled(const struct kg_keys_ctx *kc, json_t *keys)
{
    char last[KG_ID_MAX] = "";
    bool last_disabled = false;
    size_t i;
    json_t *el;

    if (kc == NULL || kc->store == NULL || !json_is_array(keys))
        return;
    json_array_foreach(keys, i, el)
    {
        const char *uid = json_string_value(json_object_get(el, "user_id"));
        const char *state = json_string_value(json_object_get(el, "state"));

        if (uid == NULL || state == NULL || strcmp(state, "revoked") == 0 ||
            strlen(uid) >= sizeof(last))
            continue;
        if (strcmp(uid, last) != 0) {
            snprintf(last, sizeof(last), "%s", uid);
            last_disabled = owner_disabled(kc, uid);
        }
        if (last_disabled)
            json_object_set_new(el, "state", json_string(kg_key_state_str(KG_KEY_DISABLED)));
    }
}
