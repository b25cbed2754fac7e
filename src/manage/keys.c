/* manage/keys.c - the key lifecycle core: create (the key shown once), get,
 * list, revoke (permanent) and rotate with a grace period.
 *
 * Owns the rules every edge shares: what a valid name and tenant are, what a
 * rotation carries over and when a change conflicts with a key's state. It
 * does not format anything for people (cli/, admin/ do) and does not store
 * anything itself (store/ does, in one transaction per change). The full key
 * lives only in sodium_malloc'd memory between its generation and the
 * caller's kg_keys_key_free().
 */
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "keygate/keyfmt.h"
#include "keygate/keys.h"
#include "keygate/scope.h"
#include "keygate/timeutil.h"

/* Returns NULL when s[0..n) is UTF-8 without control characters, otherwise
 * what is wrong with it. Names end up in tables, JSON and log lines, so a
 * newline or an escape sequence in one could forge output, and jansson
 * refuses strings that are not UTF-8. */
static const char *
text_problem(const unsigned char *s, size_t n)
{
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t len;

        if (c < 0x80) {
            cp = c;
            len = 1;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F;
            len = 2;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F;
            len = 3;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07;
            len = 4;
        } else {
            return "is not valid UTF-8";
        }
        if (len > n - i)
            return "is not valid UTF-8";
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return "is not valid UTF-8";
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return "is not valid UTF-8";
        /* C0, DEL and C1 (U+0080..U+009F): all of them move cursors or start escapes. */
        if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0))
            return "must not contain control characters";
        i += len;
    }
    return NULL;
}

static enum kg_status
check_name(const char *name, char out[KG_NAME_MAX], struct kg_err *err)
{
    size_t n;
    const char *why;

    if (name == NULL)
        return kg_err_set(err, KG_EINVAL, "name is required");
    n = strnlen(name, KG_NAME_MAX);
    if (n == 0 || n >= KG_NAME_MAX)
        return kg_err_set(err, KG_EINVAL, "name must be 1 to %d bytes", KG_NAME_MAX - 1);
    why = text_problem((const unsigned char *)name, n);
    if (why != NULL)
        return kg_err_set(err, KG_EINVAL, "name %s", why);
    memcpy(out, name, n + 1);
    return KG_OK;
}

static bool
tenant_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static enum kg_status
check_tenant(const char *tenant, char out[KG_NAME_MAX], struct kg_err *err)
{
    size_t n;

    if (tenant == NULL)
        tenant = KG_TENANT_DEFAULT;
    n = strnlen(tenant, KG_TENANT_MAX + 1);
    if (n == 0 || n > KG_TENANT_MAX)
        return kg_err_set(err, KG_EINVAL, "tenant must be 1 to %d characters", KG_TENANT_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!tenant_char_ok(tenant[i]))
            return kg_err_set(err, KG_EINVAL, "tenant may hold only A-Z, a-z, 0-9, _, . and -");
    }
    memcpy(out, tenant, n + 1);
    return KG_OK;
}

/* Validates req into the matching fields of rec. The scope and time
 * modules own those rules; their words already name the field. */
static enum kg_status
fill_new(const struct kg_key_new *req, int64_t now, struct kg_key_rec *rec, struct kg_err *err)
{
    enum kg_status rc;

    rc = check_name(req->name, rec->name, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_scope_list_normalise(req->scopes != NULL ? req->scopes : "", rec->scopes,
                                 sizeof(rec->scopes), err);
    if (rc != KG_OK)
        return rc;
    rc = check_tenant(req->tenant, rec->tenant, err);
    if (rc != KG_OK)
        return rc;
    rec->expires_at = 0;
    if (req->expires != NULL) {
        struct kg_err why = {{0}};

        rc = kg_time_parse_expiry(req->expires, now, &rec->expires_at, &why);
        if (rc == KG_OK)
            return KG_OK;
        /* A malformed duration's words do not say what it was for. */
        if (strstr(why.msg, "expiry") != NULL)
            return kg_err_set(err, rc, "%s", why.msg);
        return kg_err_set(err, rc, "expiry: %s", why.msg);
    }
    return KG_OK;
}

enum kg_status
kg_keys_check_new(const struct kg_key_new *req, int64_t now, struct kg_err *err)
{
    struct kg_key_rec scratch;

    if (req == NULL)
        return kg_err_set(err, KG_EINVAL, "key request: missing argument");
    memset(&scratch, 0, sizeof(scratch));
    return fill_new(req, now, &scratch, err);
}

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
check_ctx(const struct kg_keys_ctx *kc, bool minting, struct kg_err *err)
{
    if (kc == NULL || kc->store == NULL || (minting && (kc->secret == NULL || kc->cfg == NULL)))
        return kg_err_set(err, KG_EINVAL, "keys: missing store, secret or config");
    return KG_OK;
}

enum kg_status
kg_keys_create(const struct kg_keys_ctx *kc, const struct kg_key_new *req, int64_t now,
               struct kg_key_rec *rec_out, char **key_out, struct kg_err *err)
{
    enum kg_status rc;
    char *key = NULL;

    *key_out = NULL;
    rc = check_ctx(kc, true, err);
    if (rc != KG_OK)
        return rc;
    if (req == NULL)
        return kg_err_set(err, KG_EINVAL, "key request: missing argument");
    memset(rec_out, 0, sizeof(*rec_out));
    rc = fill_new(req, now, rec_out, err);
    if (rc != KG_OK)
        goto cleanup;
    rec_out->created_at = now;
    rec_out->quota_limit = -1;
    memcpy(rec_out->metadata, "{}", 3);
    rc = mint(kc, rec_out, &key, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_store_key_insert(kc->store, rec_out, err);
    if (rc != KG_OK)
        goto cleanup;
    *key_out = key;
    key = NULL;
cleanup:
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
kg_keys_get(const struct kg_keys_ctx *kc, const char *id, struct kg_key_rec *out,
            struct kg_err *err)
{
    enum kg_status rc = check_ctx(kc, false, err);

    if (rc != KG_OK)
        return rc;
    rc = kg_store_key_get(kc->store, id, out, err);
    /* The store's words vary by backend; a missing key reads the same everywhere. */
    if (rc == KG_ENOTFOUND)
        return kg_err_set(err, KG_ENOTFOUND, "no key %s", id);
    return rc;
}

struct list_walk {
    const struct kg_keys_filter *filter;
    int64_t now;
    kg_keys_list_cb cb;
    void *ctx;
};

static bool
list_one(const struct kg_key_rec *rec, void *ctx)
{
    const struct list_walk *w = ctx;
    enum kg_key_state st = kg_key_state_of(rec, w->now);

    if (w->filter != NULL) {
        if (!w->filter->all_states && st != w->filter->state)
            return true;
        if (w->filter->tenant != NULL && strcmp(w->filter->tenant, rec->tenant) != 0)
            return true;
    }
    return w->cb(rec, st, w->ctx);
}

enum kg_status
kg_keys_list(const struct kg_keys_ctx *kc, const struct kg_keys_filter *filter, int64_t now,
             kg_keys_list_cb cb, void *ctx, struct kg_err *err)
{
    struct list_walk w = {.filter = filter, .now = now, .cb = cb, .ctx = ctx};
    enum kg_status rc = check_ctx(kc, false, err);

    if (rc != KG_OK)
        return rc;
    if (cb == NULL)
        return kg_err_set(err, KG_EINVAL, "keys list: missing callback");
    return kg_store_key_each(kc->store, list_one, &w, err);
}

enum kg_status
kg_keys_revoke(const struct kg_keys_ctx *kc, const char *id, int64_t now,
               struct kg_key_rec *rec_out, struct kg_err *err)
{
    struct kg_key_rec rec;
    enum kg_status rc;

    /* Reading first gives a clear "no key" and lets rec_out be filled
     * without a second read that could fail after the change committed. */
    rc = kg_keys_get(kc, id, &rec, err);
    if (rc != KG_OK)
        return rc;
    if (kg_key_state_of(&rec, now) == KG_KEY_REVOKED)
        return kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", id);
    rc = kg_store_key_revoke(kc->store, id, now, err);
    if (rc == KG_ECONFLICT)
        return kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", id);
    if (rc == KG_ENOTFOUND)
        return kg_err_set(err, KG_ENOTFOUND, "no key %s", id);
    if (rc != KG_OK)
        return rc;
    if (rec_out != NULL) {
        *rec_out = rec;
        rec_out->revoked_at = now;
    }
    return KG_OK;
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
        break;
    }
    if (old->rotated_to[0] != '\0')
        return kg_err_set(err, KG_ECONFLICT, "key %s was already rotated to %s", old->id,
                          old->rotated_to);
    return KG_OK;
}

enum kg_status
kg_keys_rotate(const struct kg_keys_ctx *kc, const char *old_id, int64_t grace_s, int64_t now,
               struct kg_key_rec *fresh_out, struct kg_key_rec *old_out, char **key_out,
               struct kg_err *err)
{
    struct kg_key_rec old;
    enum kg_status rc;
    char *key = NULL;
    int64_t revoke_at;

    *key_out = NULL;
    rc = check_ctx(kc, true, err);
    if (rc != KG_OK)
        return rc;
    if (grace_s < 0)
        return kg_err_set(err, KG_EINVAL, "grace must not be negative");
    if (grace_s > INT64_MAX - now)
        return kg_err_set(err, KG_EINVAL, "grace is too long");
    revoke_at = now + grace_s;
    rc = kg_keys_get(kc, old_id, &old, err);
    if (rc != KG_OK)
        return rc;
    rc = check_rotatable(&old, now, err);
    if (rc != KG_OK)
        return rc;

    /* Everything the old key was allowed to do carries over, usage included,
     * so a rotation is never a way around a quota. Only identity, key
     * material and history start afresh. */
    *fresh_out = old;
    fresh_out->created_at = now;
    fresh_out->revoked_at = 0;
    fresh_out->last_used_at = 0;
    fresh_out->rotated_to[0] = '\0';
    rc = mint(kc, fresh_out, &key, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_store_key_rotate(kc->store, old_id, fresh_out, revoke_at, now, err);
    if (rc == KG_ENOTFOUND)
        rc = kg_err_set(err, KG_ENOTFOUND, "no key %s", old_id);
    if (rc != KG_OK)
        goto cleanup;
    if (old_out != NULL) {
        *old_out = old;
        old_out->revoked_at = revoke_at;
        memcpy(old_out->rotated_to, fresh_out->id, sizeof(old_out->rotated_to));
    }
    *key_out = key;
    key = NULL;
cleanup:
    kg_keys_key_free(key);
    return rc;
}
