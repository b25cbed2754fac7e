/* store/store.c - the store interface: picks a backend from the database
 * location, checks every argument once, and dispatches through the backend's
 * function table (store_int.h). Also the pure helpers every backend shares:
 * key states, listing cursors and the audit chain hash.
 *
 * It owns no storage itself; the backends are store_sqlite.c (a file path or
 * sqlite:PATH) and store_pg.c (a postgres:// or postgresql:// URI). The
 * checks live here so that a second backend cannot forget them and so that
 * bad input is reported the same way whatever the backend.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "keygate/store.h"
#include "store/store_int.h"

/* The first entry is the default, used for a plain file path. */
static const struct kg_store_ops *const backends[] = {
    &kg_store_sqlite_ops,
    &kg_store_pg_ops,
};

static bool
scheme_is(const char *location, size_t n, const char *name)
{
    return name != NULL && strlen(name) == n && strncasecmp(location, name, n) == 0;
}

/* Length of a URL scheme at the start of s ("postgres" in "postgres://x"),
 * or 0 when s does not start with one followed by ':'. */
static size_t
scheme_len(const char *s)
{
    size_t i = 0;

    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (i = 1; s[i] != '\0' && s[i] != ':'; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.'))
            return 0;
    }
    return s[i] == ':' ? i : 0;
}

static enum kg_status
pick_backend(const char *location, const struct kg_store_ops **ops_out, const char **rest_out,
             struct kg_err *err)
{
    size_t n = scheme_len(location);
    size_t i;

    if (n > 0) {
        for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
            if (scheme_is(location, n, backends[i]->name) ||
                scheme_is(location, n, backends[i]->alias)) {
                *ops_out = backends[i];
                *rest_out = backends[i]->whole_location ? location : location + n + 1;
                if (**rest_out == '\0')
                    return kg_err_set(err, KG_EINVAL, "database location \"%s\" has no path",
                                      location);
                return KG_OK;
            }
        }
        /* Only the scheme is named: the rest of a URL may hold a password. */
        if (strncmp(location + n, "://", 3) == 0)
            return kg_err_set(err, KG_EINVAL,
                              "unsupported database URL (scheme \"%.*s\"): use a file path, "
                              "sqlite:PATH or postgres://...",
                              (int)n, location);
    }
    /* Anything else, "keys:v2.db" included, is a file name for the default. */
    *ops_out = backends[0];
    *rest_out = location;
    return KG_OK;
}

/* Ids appear in error messages and logs, so they are held to a shape that
 * cannot carry a newline or, being short, a whole API key pasted by mistake.
 * The id itself is not echoed when it fails. */
static enum kg_status
check_id(const char *what, const char *id, struct kg_err *err)
{
    size_t len;
    size_t i;

    if (id == NULL || id[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "%s: empty key id", what);
    len = strnlen(id, KG_ID_MAX);
    if (len == KG_ID_MAX)
        return kg_err_set(err, KG_EINVAL, "%s: key id is longer than %d bytes", what,
                          KG_ID_MAX - 1);
    for (i = 0; i < len; i++) {
        char c = id[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return kg_err_set(err, KG_EINVAL,
                              "%s: key id may hold only letters, digits, '_', '-' and '.'", what);
    }
    return KG_OK;
}

static bool
terminated(const char *buf, size_t size)
{
    return memchr(buf, '\0', size) != NULL;
}

/* Checks a record before any backend sees it. Messages name the field, never
 * its value: prefix and last4 are pieces of a key. */
static enum kg_status
check_rec(const struct kg_key_rec *rec, struct kg_err *err)
{
    const struct {
        const char *name;
        const char *buf;
        size_t size;
    } strs[] = {
        {"id", rec->id, sizeof(rec->id)},
        {"name", rec->name, sizeof(rec->name)},
        {"prefix", rec->prefix, sizeof(rec->prefix)},
        {"last4", rec->last4, sizeof(rec->last4)},
        {"scopes", rec->scopes, sizeof(rec->scopes)},
        {"tenant", rec->tenant, sizeof(rec->tenant)},
        {"rotated_to", rec->rotated_to, sizeof(rec->rotated_to)},
        {"rate", rec->rate, sizeof(rec->rate)},
        {"quota_period", rec->quota_period, sizeof(rec->quota_period)},
        {"metadata", rec->metadata, sizeof(rec->metadata)},
        {"user_id", rec->user_id, sizeof(rec->user_id)},
        {"allowed_ips", rec->allowed_ips, sizeof(rec->allowed_ips)},
    };
    const struct {
        const char *name;
        int64_t value;
    } times[] = {
        {"expires_at", rec->expires_at},
        {"revoked_at", rec->revoked_at},
        {"last_used_at", rec->last_used_at},
    };
    enum kg_status rc;
    size_t i;

    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        if (!terminated(strs[i].buf, strs[i].size))
            return kg_err_set(err, KG_EINVAL, "key record: %s is not NUL-terminated", strs[i].name);
    }
    rc = check_id("key record", rec->id, err);
    if (rc != KG_OK)
        return rc;
    if (rec->user_id[0] != '\0') {
        rc = check_id("key record user_id", rec->user_id, err);
        if (rc != KG_OK)
            return rc;
    }
    if (rec->rotated_to[0] != '\0') {
        rc = check_id("key record rotated_to", rec->rotated_to, err);
        if (rc != KG_OK)
            return rc;
        if (strcmp(rec->rotated_to, rec->id) == 0)
            return kg_err_set(err, KG_EINVAL, "key %s: rotated_to names the key itself", rec->id);
    }
    if (rec->created_at <= 0)
        return kg_err_set(err, KG_EINVAL, "key %s: created_at must be set", rec->id);
    for (i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        if (times[i].value < 0)
            return kg_err_set(err, KG_EINVAL, "key %s: %s is negative", rec->id, times[i].name);
    }
    if (rec->rate_burst < 0)
        return kg_err_set(err, KG_EINVAL, "key %s: rate_burst is negative", rec->id);
    if (rec->quota_limit < -1)
        return kg_err_set(err, KG_EINVAL, "key %s: quota_limit must be -1 (unlimited) or more",
                          rec->id);
    if (rec->quota_used < 0)
        return kg_err_set(err, KG_EINVAL, "key %s: quota_used is negative", rec->id);
    return KG_OK;
}

enum kg_key_state
kg_key_state_of(const struct kg_key_rec *rec, int64_t now)
{
    /* A revocation in the future is the grace period of a rotation: the old
     * key still works until then. */
    if (rec->revoked_at != 0 && rec->revoked_at <= now)
        return KG_KEY_REVOKED;
    if (rec->expires_at != 0 && rec->expires_at <= now)
        return KG_KEY_EXPIRED;
    return KG_KEY_ACTIVE;
}

const char *
kg_key_state_str(enum kg_key_state st)
{
    switch (st) {
    case KG_KEY_ACTIVE:
        return "active";
    case KG_KEY_EXPIRED:
        return "expired";
    case KG_KEY_REVOKED:
        return "revoked";
    case KG_KEY_DISABLED:
        return "disabled";
    }
    return "unknown";
}

enum kg_status
kg_key_state_parse(const char *s, enum kg_key_state *out, bool *all, struct kg_err *err)
{
    static const enum kg_key_state states[] = {KG_KEY_ACTIVE, KG_KEY_EXPIRED, KG_KEY_REVOKED};
    size_t i;

    if (s == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "key state: missing argument");
    if (all != NULL)
        *all = false;
    if (strcmp(s, "all") == 0 && all != NULL) {
        *all = true;
        return KG_OK;
    }
    for (i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        if (strcmp(s, kg_key_state_str(states[i])) == 0) {
            *out = states[i];
            return KG_OK;
        }
    }
    return kg_err_set(err, KG_EINVAL, "unknown key state \"%.32s\": want active, expired, %s", s,
                      all != NULL ? "revoked or all" : "or revoked");
}

/* ---- checks of the new record types ---- */

static bool
has_newline(const char *s)
{
    return strchr(s, '\n') != NULL || strchr(s, '\r') != NULL;
}

static enum kg_status
check_tenant_rec(const char *what, const struct kg_tenant_rec *rec, struct kg_err *err)
{
    if (!terminated(rec->name, sizeof(rec->name)) ||
        !terminated(rec->display_name, sizeof(rec->display_name)))
        return kg_err_set(err, KG_EINVAL, "%s: tenant record is not NUL-terminated", what);
    if (rec->name[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "%s: empty tenant name", what);
    if (rec->created_at <= 0)
        return kg_err_set(err, KG_EINVAL, "%s: tenant %s: created_at must be set", what, rec->name);
    if (rec->disabled_at < 0)
        return kg_err_set(err, KG_EINVAL, "%s: tenant %s: disabled_at is negative", what,
                          rec->name);
    return KG_OK;
}

static enum kg_status
check_user_rec(const char *what, const struct kg_user_rec *rec, struct kg_err *err)
{
    const struct {
        const char *name;
        const char *buf;
        size_t size;
    } strs[] = {
        {"id", rec->id, sizeof(rec->id)},
        {"tenant", rec->tenant, sizeof(rec->tenant)},
        {"username", rec->username, sizeof(rec->username)},
        {"email", rec->email, sizeof(rec->email)},
        {"first_name", rec->first_name, sizeof(rec->first_name)},
        {"last_name", rec->last_name, sizeof(rec->last_name)},
        {"password_hash", rec->password_hash, sizeof(rec->password_hash)},
        {"role", rec->role, sizeof(rec->role)},
        {"tier", rec->tier, sizeof(rec->tier)},
        {"quota_period", rec->quota_period, sizeof(rec->quota_period)},
    };
    enum kg_status rc;

    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        if (!terminated(strs[i].buf, strs[i].size))
            return kg_err_set(err, KG_EINVAL, "%s: user record: %s is not NUL-terminated", what,
                              strs[i].name);
    }
    rc = check_id(what, rec->id, err);
    if (rc != KG_OK)
        return rc;
    if (rec->tenant[0] == '\0' || rec->username[0] == '\0' || rec->tier[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "%s: user %s: tenant, username and tier must be set",
                          what, rec->id);
    if ((rec->has_quota && rec->quota_limit < 0) ||
        (rec->quota_period[0] != '\0' && strcmp(rec->quota_period, "day") != 0 &&
         strcmp(rec->quota_period, "month") != 0))
        return kg_err_set(err, KG_EINVAL, "%s: user %s: malformed credits", what, rec->id);
    if (rec->created_at <= 0)
        return kg_err_set(err, KG_EINVAL, "%s: user %s: created_at must be set", what, rec->id);
    if (rec->disabled_at < 0)
        return kg_err_set(err, KG_EINVAL, "%s: user %s: disabled_at is negative", what, rec->id);
    return KG_OK;
}

/* Entries are checked whole before a transaction starts, so a bad entry
 * never leaves a change committed without its record. */
static enum kg_status
check_audit(const struct kg_store *st, const struct kg_audit_entry *audit, struct kg_err *err)
{
    for (const struct kg_audit_entry *e = audit; e != NULL; e = e->next) {
        const char *strs[] = {e->actor, e->tenant, e->action, e->object, e->details};
        const size_t sizes[] = {sizeof(e->actor), sizeof(e->tenant), sizeof(e->action),
                                sizeof(e->object), sizeof(e->details)};
        size_t n;

        if (!st->has_audit_key)
            return kg_err_set(err, KG_EINVAL, "audit: the store has no audit key");
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
            if (!terminated(strs[i], sizes[i]))
                return kg_err_set(err, KG_EINVAL, "audit entry: a field is not NUL-terminated");
            /* The hash joins fields with newlines: one inside a field could
             * move text between fields without changing the hash. */
            if (has_newline(strs[i]))
                return kg_err_set(err, KG_EINVAL, "audit entry: a field contains a newline");
        }
        if (e->time <= 0 || e->actor[0] == '\0' || e->action[0] == '\0')
            return kg_err_set(err, KG_EINVAL, "audit entry: time, actor and action must be set");
        n = strlen(e->details);
        if (n < 2 || e->details[0] != '{' || e->details[n - 1] != '}')
            return kg_err_set(err, KG_EINVAL, "audit entry: details must be a JSON object");
    }
    return KG_OK;
}

/* ---- cursors ---- */

static bool
cursor_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

void
kg_store_cursor_format(int64_t num, const char *key, char out[KG_CURSOR_MAX])
{
    static const char hex[] = "0123456789abcdef";
    bool plain = true;
    size_t n;

    if (key == NULL) {
        snprintf(out, KG_CURSOR_MAX, "%" PRId64, num);
        return;
    }
    for (const char *p = key; *p != '\0'; p++)
        plain = plain && cursor_char_ok(*p);
    if (plain) {
        snprintf(out, KG_CURSOR_MAX, "%" PRId64 ".%s", num, key);
        return;
    }
    /* Tenants named before names were restricted may hold anything: their
     * bytes go in hex after a '~' so the cursor stays URL-safe. */
    n = (size_t)snprintf(out, KG_CURSOR_MAX, "%" PRId64 "~", num);
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0' && n + 3 < KG_CURSOR_MAX;
         p++) {
        out[n++] = hex[*p >> 4];
        out[n++] = hex[*p & 15];
    }
    out[n] = '\0';
}

static int
hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* with_key: "N.KEY" or "N~HEX"; otherwise "N". */
static enum kg_status
cursor_parse(const struct kg_page *page, bool with_key, struct kg_cursor *out, struct kg_err *err)
{
    const char *s = page != NULL ? page->cursor : NULL;
    const char *p;
    int64_t num = 0;
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    if (s == NULL || s[0] == '\0')
        return KG_OK;
    for (p = s; *p >= '0' && *p <= '9'; p++) {
        if (num > (INT64_MAX - (*p - '0')) / 10)
            goto bad;
        num = num * 10 + (*p - '0');
    }
    if (p == s || strnlen(s, KG_CURSOR_MAX) == KG_CURSOR_MAX)
        goto bad;
    if (!with_key) {
        if (*p != '\0')
            goto bad;
    } else if (*p == '.') {
        for (p++; *p != '\0'; p++) {
            if (!cursor_char_ok(*p) || n + 1 >= sizeof(out->key))
                goto bad;
            out->key[n++] = *p;
        }
    } else if (*p == '~') {
        for (p++; *p != '\0'; p += 2) {
            int hi = hex_val(p[0]), lo = hi >= 0 ? hex_val(p[1]) : -1;

            if (lo < 0 || (hi == 0 && lo == 0) || n + 1 >= sizeof(out->key))
                goto bad;
            out->key[n++] = (char)(hi * 16 + lo);
        }
    } else {
        goto bad;
    }
    if (with_key && n == 0)
        goto bad;
    out->key[n] = '\0';
    out->num = num;
    out->set = true;
    return KG_OK;
bad:
    memset(out, 0, sizeof(*out));
    return kg_err_set(err, KG_EINVAL, "cursor is malformed");
}

/* ---- the audit chain hash ---- */

void
kg_store_audit_hash(const unsigned char key[KG_AUDIT_KEY_BYTES], const struct kg_audit_entry *e,
                    const char *prev_hash, char out[KG_AUDIT_HASH_HEX])
{
    crypto_generichash_state h;
    unsigned char digest[32];
    char nums[2][24];
    const char *parts[] = {prev_hash, nums[0],   nums[1],   e->actor,
                           e->tenant, e->action, e->object, e->details};

    snprintf(nums[0], sizeof(nums[0]), "%" PRId64, e->seq);
    snprintf(nums[1], sizeof(nums[1]), "%" PRId64, e->time);
    crypto_generichash_init(&h, key, KG_AUDIT_KEY_BYTES, sizeof(digest));
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (i > 0)
            crypto_generichash_update(&h, (const unsigned char *)"\n", 1);
        crypto_generichash_update(&h, (const unsigned char *)parts[i], strlen(parts[i]));
    }
    crypto_generichash_final(&h, digest, sizeof(digest));
    sodium_bin2hex(out, KG_AUDIT_HASH_HEX, digest, sizeof(digest));
}

/* ---- dispatch ---- */

enum kg_status
kg_store_open(const char *path, struct kg_store **out, struct kg_err *err)
{
    const struct kg_store_ops *ops = NULL;
    const char *rest = NULL;
    enum kg_status rc;

    if (out == NULL)
        return kg_err_set(err, KG_EINVAL, "store open: no place for the handle");
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "store open: empty database path");
    if (sodium_init() < 0)
        return kg_err_set(err, KG_ENOMEM, "libsodium failed to initialise");
    rc = pick_backend(path, &ops, &rest, err);
    if (rc != KG_OK)
        return rc;
    rc = ops->open(rest, out, err);
    if (rc == KG_OK) {
        unsigned char raw[16];

        /* Names this process's credit reservations (credits_mode strict). */
        randombytes_buf(raw, sizeof(raw));
        sodium_bin2hex((*out)->instance, sizeof((*out)->instance), raw, sizeof(raw));
    }
    return rc;
}

void
kg_store_close(struct kg_store *st)
{
    if (st == NULL)
        return;
    sodium_memzero(st->audit_key, sizeof(st->audit_key));
    st->ops->close(st);
}

void
kg_store_set_audit_key(struct kg_store *st, const unsigned char key[KG_AUDIT_KEY_BYTES])
{
    if (st == NULL || key == NULL)
        return;
    memcpy(st->audit_key, key, KG_AUDIT_KEY_BYTES);
    st->has_audit_key = true;
}

enum kg_status
kg_store_key_insert_audited(struct kg_store *st, const struct kg_key_rec *rec,
                            const struct kg_audit_entry *audit, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "key insert: missing argument");
    rc = check_rec(rec, err);
    if (rc == KG_OK)
        rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->key_add(st, rec, audit, err);
}

enum kg_status
kg_store_key_insert(struct kg_store *st, const struct kg_key_rec *rec, struct kg_err *err)
{
    return kg_store_key_insert_audited(st, rec, NULL, err);
}

enum kg_status
kg_store_key_insert_batch(struct kg_store *st, const struct kg_key_rec *recs, size_t n,
                          struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || (recs == NULL && n > 0))
        return kg_err_set(err, KG_EINVAL, "key insert: missing argument");
    for (size_t i = 0; i < n; i++) {
        rc = check_rec(&recs[i], err);
        if (rc != KG_OK)
            return rc;
    }
    return n == 0 ? KG_OK : st->ops->key_add_batch(st, recs, n, err);
}

enum kg_status
kg_store_key_get(struct kg_store *st, const char *id, struct kg_key_rec *out, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "key get: missing argument");
    rc = check_id("key get", id, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->key_get(st, id, out, err);
}

enum kg_status
kg_store_key_each(struct kg_store *st, kg_store_key_cb cb, void *ctx, struct kg_err *err)
{
    if (st == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "key walk: missing argument");
    return st->ops->key_each(st, cb, ctx, err);
}

static void
clear_next(char *next)
{
    if (next != NULL)
        next[0] = '\0';
}

enum kg_status
kg_store_key_list(struct kg_store *st, const struct kg_key_query *q, kg_store_key_cb cb, void *ctx,
                  char *next, struct kg_err *err)
{
    struct kg_cursor after;
    enum kg_status rc;

    clear_next(next);
    if (st == NULL || q == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "key list: missing argument");
    if (q->user_id != NULL) {
        rc = check_id("key list", q->user_id, err);
        if (rc != KG_OK)
            return rc;
    }
    rc = cursor_parse(&q->page, true, &after, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->key_list(st, q, &after, cb, ctx, next, err);
}

enum kg_status
kg_store_key_each_owner(struct kg_store *st, kg_store_key_owner_cb cb, void *ctx,
                        struct kg_err *err)
{
    if (st == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "key walk: missing argument");
    return st->ops->key_each_owner(st, -1, NULL, cb, ctx, err);
}

enum kg_status
kg_store_key_each_owner_of(struct kg_store *st, enum kg_change_object of, const char *id,
                           kg_store_key_owner_cb cb, void *ctx, struct kg_err *err)
{
    if (st == NULL || cb == NULL || id == NULL)
        return kg_err_set(err, KG_EINVAL, "key walk: missing argument");
    if (of != KG_CHANGE_KEY && of != KG_CHANGE_USER && of != KG_CHANGE_TENANT)
        return kg_err_set(err, KG_EINVAL, "key walk: unknown object");
    return st->ops->key_each_owner(st, (int)of, id, cb, ctx, err);
}

enum kg_status
kg_store_key_count(struct kg_store *st, size_t *n, struct kg_err *err)
{
    if (st == NULL || n == NULL)
        return kg_err_set(err, KG_EINVAL, "key count: missing argument");
    return st->ops->key_count(st, n, err);
}

enum kg_status
kg_store_change_head(struct kg_store *st, int64_t *last, int64_t *trimmed, struct kg_err *err)
{
    if (st == NULL || last == NULL || trimmed == NULL)
        return kg_err_set(err, KG_EINVAL, "change log: missing argument");
    return st->ops->change_head(st, last, trimmed, err);
}

enum kg_status
kg_store_change_each(struct kg_store *st, int64_t after, size_t limit, kg_store_change_cb cb,
                     void *ctx, struct kg_err *err)
{
    if (st == NULL || cb == NULL || limit == 0)
        return kg_err_set(err, KG_EINVAL, "change log: missing argument");
    return st->ops->change_each(st, after, limit, cb, ctx, err);
}

enum kg_status
kg_store_change_trim(struct kg_store *st, int64_t before, size_t *trimmed, struct kg_err *err)
{
    if (trimmed != NULL)
        *trimmed = 0;
    if (st == NULL)
        return kg_err_set(err, KG_EINVAL, "change log: missing argument");
    return st->ops->change_trim(st, before, trimmed, err);
}

enum kg_status
kg_store_key_update(struct kg_store *st, const struct kg_key_rec *rec,
                    const struct kg_audit_entry *audit, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "key update: missing argument");
    rc = check_rec(rec, err);
    if (rc == KG_OK)
        rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->key_update(st, rec, audit, err);
}

enum kg_status
kg_store_key_revoke_audited(struct kg_store *st, const char *id, int64_t now,
                            const struct kg_audit_entry *audit, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL)
        return kg_err_set(err, KG_EINVAL, "key revoke: missing argument");
    rc = check_id("key revoke", id, err);
    if (rc != KG_OK)
        return rc;
    /* 0 means "not revoked" in the record, so it cannot be a revocation time. */
    if (now <= 0)
        return kg_err_set(err, KG_EINVAL, "key revoke %s: time must be positive", id);
    rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->key_revoke(st, id, now, audit, err);
}

enum kg_status
kg_store_key_revoke(struct kg_store *st, const char *id, int64_t now, struct kg_err *err)
{
    return kg_store_key_revoke_audited(st, id, now, NULL, err);
}

enum kg_status
kg_store_key_rotate(struct kg_store *st, const char *old_id, const struct kg_key_rec *fresh,
                    int64_t revoke_at, int64_t now, const struct kg_audit_entry *audit,
                    struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || fresh == NULL)
        return kg_err_set(err, KG_EINVAL, "key rotate: missing argument");
    rc = check_id("key rotate", old_id, err);
    if (rc != KG_OK)
        return rc;
    rc = check_rec(fresh, err);
    if (rc != KG_OK)
        return rc;
    if (strcmp(old_id, fresh->id) == 0)
        return kg_err_set(err, KG_EINVAL, "key rotate %s: the new key needs a new id", old_id);
    if (now <= 0)
        return kg_err_set(err, KG_EINVAL, "key rotate %s: time must be positive", old_id);
    /* A revocation before now would rewrite history, not schedule anything. */
    if (revoke_at < now)
        return kg_err_set(err, KG_EINVAL, "key rotate %s: revocation time is in the past", old_id);
    rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->key_rotate(st, old_id, fresh, revoke_at, now, audit, err);
}

enum kg_status
kg_store_key_touch(struct kg_store *st, const char *const *ids, const int64_t *times, size_t n,
                   struct kg_err *err)
{
    if (st == NULL || (n > 0 && (ids == NULL || times == NULL)))
        return kg_err_set(err, KG_EINVAL, "key touch: missing argument");
    if (n == 0)
        return KG_OK;
    return st->ops->key_touch(st, ids, times, n, err);
}

enum kg_status
kg_store_usage_add_totals(struct kg_store *st, const char *const *ids,
                          const struct kg_key_usage *deltas, size_t n, const char *const *uids,
                          const struct kg_user_usage *udeltas, size_t nu, int64_t now,
                          struct kg_usage_total *ktot, struct kg_usage_total *utot,
                          struct kg_err *err)
{
    for (size_t i = 0; ktot != NULL && i < n; i++)
        ktot[i].known = false;
    for (size_t i = 0; utot != NULL && i < nu; i++)
        utot[i].known = false;
    if (st == NULL || (n > 0 && (ids == NULL || deltas == NULL)) ||
        (nu > 0 && (uids == NULL || udeltas == NULL)))
        return kg_err_set(err, KG_EINVAL, "key usage: missing argument");
    /* A negative delta would make a total shrink: only a bug produces one. */
    for (size_t i = 0; i < n; i++)
        if (deltas[i].requests < 0 || deltas[i].denied_expired < 0 ||
            deltas[i].denied_forbidden < 0 || deltas[i].denied_rate < 0)
            return kg_err_set(err, KG_EINVAL, "key usage: negative delta");
    for (size_t i = 0; i < nu; i++)
        if (udeltas[i].credits < 0 || udeltas[i].tier < 0)
            return kg_err_set(err, KG_EINVAL, "user usage: negative delta");
    if (n == 0 && nu == 0)
        return KG_OK;
    return st->ops->key_usage_add(st, ids, deltas, n, uids, udeltas, nu, now, ktot, utot, err);
}

enum kg_status
kg_store_usage_add(struct kg_store *st, const char *const *ids, const struct kg_key_usage *deltas,
                   size_t n, const char *const *uids, const struct kg_user_usage *udeltas,
                   size_t nu, int64_t now, struct kg_err *err)
{
    return kg_store_usage_add_totals(st, ids, deltas, n, uids, udeltas, nu, now, NULL, NULL, err);
}

enum kg_status
kg_store_key_usage_add(struct kg_store *st, const char *const *ids,
                       const struct kg_key_usage *deltas, size_t n, int64_t now, struct kg_err *err)
{
    return kg_store_usage_add(st, ids, deltas, n, NULL, NULL, 0, now, err);
}

const char *
kg_store_instance(const struct kg_store *st)
{
    return st != NULL ? st->instance : "";
}

enum kg_status
kg_store_credit_reserve(struct kg_store *st, const char *key_id, int64_t want, int64_t period_start,
                        int64_t now, int64_t lease_s, int64_t *granted, struct kg_err *err)
{
    if (granted != NULL)
        *granted = 0;
    if (st == NULL || key_id == NULL || granted == NULL || want < 0 || lease_s <= 0)
        return kg_err_set(err, KG_EINVAL, "credit reservation: missing argument");
    if (st->ops->credit_reserve == NULL)
        return kg_err_set(err, KG_EINVAL, "credit reservation: not supported by this store");
    if (want == 0)
        return KG_OK;
    return st->ops->credit_reserve(st, key_id, want, period_start, now, lease_s, granted, err);
}

enum kg_status
kg_store_credit_renew(struct kg_store *st, int64_t now, int64_t lease_s, struct kg_err *err)
{
    if (st == NULL || lease_s <= 0)
        return kg_err_set(err, KG_EINVAL, "credit reservation: missing argument");
    if (st->ops->credit_renew == NULL)
        return kg_err_set(err, KG_EINVAL, "credit reservation: not supported by this store");
    return st->ops->credit_renew(st, now, lease_s, err);
}

enum kg_status
kg_store_credit_release(struct kg_store *st, const char *key_id, struct kg_err *err)
{
    if (st == NULL)
        return kg_err_set(err, KG_EINVAL, "credit reservation: missing argument");
    if (st->ops->credit_release == NULL)
        return kg_err_set(err, KG_EINVAL, "credit reservation: not supported by this store");
    return st->ops->credit_release(st, key_id, err);
}

enum kg_status
kg_store_user_usage_get(struct kg_store *st, const char *id, struct kg_user_usage *out,
                        struct kg_err *err)
{
    if (st == NULL || id == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "user usage: missing argument");
    memset(out, 0, sizeof(*out));
    return st->ops->user_usage_get(st, id, out, err);
}

enum kg_status
kg_store_key_usage_get(struct kg_store *st, const char *id, struct kg_key_usage *out,
                       struct kg_err *err)
{
    if (st == NULL || id == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "key usage: missing argument");
    memset(out, 0, sizeof(*out));
    return st->ops->key_usage_get(st, id, out, err);
}

enum kg_status
kg_store_tenant_insert(struct kg_store *st, const struct kg_tenant_rec *rec,
                       const struct kg_audit_entry *audit, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "tenant insert: missing argument");
    rc = check_tenant_rec("tenant insert", rec, err);
    if (rc == KG_OK)
        rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->tenant_insert(st, rec, audit, err);
}

static enum kg_status
check_text_arg(const char *what, const char *s, size_t cap, struct kg_err *err)
{
    if (s == NULL || s[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "%s: missing argument", what);
    if (strnlen(s, cap) == cap)
        return kg_err_set(err, KG_EINVAL, "%s: argument is longer than %zu bytes", what, cap - 1);
    return KG_OK;
}

enum kg_status
kg_store_tenant_get(struct kg_store *st, const char *name, struct kg_tenant_rec *out,
                    struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "tenant get: missing argument");
    rc = check_text_arg("tenant get", name, KG_NAME_MAX, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->tenant_get(st, name, out, err);
}

enum kg_status
kg_store_tenant_update(struct kg_store *st, const struct kg_tenant_rec *rec,
                       const struct kg_audit_entry *audit, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "tenant update: missing argument");
    rc = check_tenant_rec("tenant update", rec, err);
    if (rc == KG_OK)
        rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->tenant_update(st, rec, audit, err);
}

enum kg_status
kg_store_tenant_list(struct kg_store *st, const char *only, const struct kg_page *page,
                     kg_store_tenant_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct kg_cursor after;
    enum kg_status rc;

    clear_next(next);
    if (st == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "tenant list: missing argument");
    rc = cursor_parse(page, true, &after, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->tenant_list(st, only, &after, page != NULL ? page->limit : 0, cb, ctx, next,
                                err);
}

enum kg_status
kg_store_user_insert(struct kg_store *st, const struct kg_user_rec *rec,
                     const struct kg_key_rec *first_key, const struct kg_audit_entry *audit,
                     struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "user insert: missing argument");
    rc = check_user_rec("user insert", rec, err);
    if (rc == KG_OK && first_key != NULL)
        rc = check_rec(first_key, err);
    if (rc == KG_OK)
        rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->user_insert(st, rec, first_key, audit, err);
}

enum kg_status
kg_store_user_get(struct kg_store *st, const char *id, struct kg_user_rec *out, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "user get: missing argument");
    rc = check_id("user get", id, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->user_lookup(st, "id", NULL, id, out, err);
}

enum kg_status
kg_store_user_find(struct kg_store *st, const char *tenant, const char *username,
                   struct kg_user_rec *out, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "user find: missing argument");
    rc = check_text_arg("user find", tenant, KG_NAME_MAX, err);
    if (rc == KG_OK)
        rc = check_text_arg("user find", username, KG_NAME_MAX, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->user_lookup(st, "username", tenant, username, out, err);
}

enum kg_status
kg_store_user_by_email(struct kg_store *st, const char *email, struct kg_user_rec *out,
                       struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "user by e-mail: missing argument");
    rc = check_text_arg("user by e-mail", email, KG_EMAIL_MAX, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->user_lookup(st, "email", NULL, email, out, err);
}

enum kg_status
kg_store_user_by_username(struct kg_store *st, const char *username, struct kg_user_rec *out,
                          struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "user by username: missing argument");
    rc = check_text_arg("user by username", username, KG_NAME_MAX, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->user_lookup(st, "username_any", NULL, username, out, err);
}

enum kg_status
kg_store_user_update(struct kg_store *st, const struct kg_user_rec *rec,
                     const struct kg_audit_entry *audit, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "user update: missing argument");
    rc = check_user_rec("user update", rec, err);
    if (rc == KG_OK)
        rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->user_update(st, rec, audit, err);
}

enum kg_status
kg_store_user_list(struct kg_store *st, const char *tenant, const struct kg_page *page,
                   kg_store_user_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct kg_cursor after;
    enum kg_status rc;

    clear_next(next);
    if (st == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "user list: missing argument");
    rc = cursor_parse(page, true, &after, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->user_list(st, tenant, &after, page != NULL ? page->limit : 0, cb, ctx, next,
                              err);
}

enum kg_status
kg_store_audit_append(struct kg_store *st, const struct kg_audit_entry *audit, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || audit == NULL)
        return kg_err_set(err, KG_EINVAL, "audit append: missing argument");
    rc = check_audit(st, audit, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->audit_append(st, audit, err);
}

enum kg_status
kg_store_audit_list(struct kg_store *st, const struct kg_audit_query *q, kg_store_audit_cb cb,
                    void *ctx, char *next, struct kg_err *err)
{
    struct kg_cursor after;
    enum kg_status rc;

    clear_next(next);
    if (st == NULL || q == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "audit list: missing argument");
    rc = cursor_parse(&q->page, false, &after, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->audit_list(st, q, &after, cb, ctx, next, err);
}

enum kg_status
kg_store_audit_each(struct kg_store *st, kg_store_audit_cb cb, void *ctx, struct kg_err *err)
{
    if (st == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "audit walk: missing argument");
    return st->ops->audit_each(st, cb, ctx, err);
}

enum kg_status
kg_store_audit_head(struct kg_store *st, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
                    struct kg_err *err)
{
    if (st == NULL || seq == NULL || hash == NULL)
        return kg_err_set(err, KG_EINVAL, "audit head: missing argument");
    return st->ops->audit_head(st, seq, hash, err);
}

enum kg_status
kg_store_data_version(struct kg_store *st, int64_t *out, struct kg_err *err)
{
    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "data version: missing argument");
    return st->ops->data_version(st, out, err);
}

enum kg_status
kg_store_write_probe(struct kg_store *st, struct kg_err *err)
{
    if (st == NULL)
        return kg_err_set(err, KG_EINVAL, "write probe: missing argument");
    if (st->ops->write_probe == NULL)
        return KG_OK;
    return st->ops->write_probe(st, err);
}

enum kg_status
kg_store_key_census(struct kg_store *st, int64_t now, struct kg_key_census *out, struct kg_err *err)
{
    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "key census: missing argument");
    return st->ops->key_census(st, now, out, err);
}

enum kg_status
kg_store_key_known(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES], int64_t now,
                   bool *out, struct kg_err *err)
{
    if (st == NULL || digest == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "key known: missing argument");
    return st->ops->key_known(st, digest, now, out, err);
}

enum kg_status
kg_store_set_durable(struct kg_store *st, bool durable, struct kg_err *err)
{
    if (st == NULL)
        return kg_err_set(err, KG_EINVAL, "set durable: missing argument");
    return st->ops->set_durable(st, durable, err);
}

/* ---- console sessions ---- */

enum kg_status
kg_store_session_insert(struct kg_store *st, const struct kg_session_rec *rec, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "session insert: missing argument");
    if (!terminated(rec->user_id, sizeof(rec->user_id)))
        return kg_err_set(err, KG_EINVAL, "session insert: user_id is not NUL-terminated");
    rc = check_id("session insert", rec->user_id, err);
    if (rc != KG_OK)
        return rc;
    if (rec->created_at <= 0 || rec->last_seen_at <= 0 || rec->expires_at <= rec->created_at)
        return kg_err_set(err, KG_EINVAL, "session insert: times must be positive and ordered");
    return st->ops->session_insert(st, rec, err);
}

enum kg_status
kg_store_session_get(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                     struct kg_session_rec *out, struct kg_err *err)
{
    if (st == NULL || digest == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "session get: missing argument");
    memset(out, 0, sizeof(*out));
    return st->ops->session_get(st, digest, out, err);
}

enum kg_status
kg_store_session_touch(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                       int64_t now, struct kg_err *err)
{
    if (st == NULL || digest == NULL || now <= 0)
        return kg_err_set(err, KG_EINVAL, "session touch: missing argument");
    return st->ops->session_touch(st, digest, now, err);
}

enum kg_status
kg_store_session_delete(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                        struct kg_err *err)
{
    if (st == NULL || digest == NULL)
        return kg_err_set(err, KG_EINVAL, "session delete: missing argument");
    return st->ops->session_delete(st, digest, err);
}

enum kg_status
kg_store_fingerprint(struct kg_store *st, const char *fp, char stored[65], struct kg_err *err)
{
    if (stored != NULL)
        stored[0] = '\0';
    if (st == NULL || stored == NULL)
        return kg_err_set(err, KG_EINVAL, "secret fingerprint: missing argument");
    if (fp != NULL && strlen(fp) != 64)
        return kg_err_set(err, KG_EINVAL, "secret fingerprint: not 64 characters");
    return st->ops->fingerprint(st, fp, stored, err);
}

enum kg_status
kg_store_wait_change(struct kg_store *st, int timeout_ms, bool *woke, struct kg_err *err)
{
    if (woke != NULL)
        *woke = false;
    if (st == NULL || woke == NULL || timeout_ms < 0)
        return kg_err_set(err, KG_EINVAL, "wait for changes: missing argument");
    if (st->ops->wait_change == NULL)
        return kg_err_set(err, KG_EINVAL, "the %s store sends no change notifications",
                          st->ops->name);
    return st->ops->wait_change(st, timeout_ms, woke, err);
}

/* ---- events (issue 18) ---- */

/* A backend without the event outbox refuses instead of crashing. */
static enum kg_status
no_outbox(struct kg_store *st, struct kg_err *err)
{
    return kg_err_set(err, KG_EINVAL, "the %s store has no event outbox", st->ops->name);
}

enum kg_status
kg_store_event_add(struct kg_store *st, struct kg_event *ev, const struct kg_audit_entry *audit,
                   struct kg_err *err)
{
    if (st == NULL || ev == NULL || ev->type[0] == '\0' ||
        !terminated(ev->data, sizeof(ev->data)) || !terminated(ev->id, sizeof(ev->id)))
        return kg_err_set(err, KG_EINVAL, "event: missing argument");
    if (st->ops->event_add == NULL)
        return no_outbox(st, err);
    return st->ops->event_add(st, ev, audit, err);
}

enum kg_status
kg_store_event_fanout(struct kg_store *st, const char *endpoint, const char *types, int64_t now,
                      int64_t retry_window_s, size_t *added, struct kg_err *err)
{
    if (added != NULL)
        *added = 0;
    if (st == NULL || endpoint == NULL || types == NULL)
        return kg_err_set(err, KG_EINVAL, "event fanout: missing argument");
    if (st->ops->event_fanout == NULL)
        return no_outbox(st, err);
    return st->ops->event_fanout(st, endpoint, types, now, retry_window_s, added, err);
}

enum kg_status
kg_store_delivery_due(struct kg_store *st, const char *endpoint, int64_t now, struct kg_event *ev,
                      int64_t *attempts, struct kg_err *err)
{
    if (st == NULL || endpoint == NULL || ev == NULL || attempts == NULL)
        return kg_err_set(err, KG_EINVAL, "delivery: missing argument");
    if (st->ops->delivery_due == NULL)
        return no_outbox(st, err);
    return st->ops->delivery_due(st, endpoint, now, ev, attempts, err);
}

enum kg_status
kg_store_delivery_done(struct kg_store *st, int64_t seq, const char *endpoint, bool delivered,
                       int64_t next_at, long status, const char *error, int64_t now,
                       struct kg_err *err)
{
    if (st == NULL || endpoint == NULL)
        return kg_err_set(err, KG_EINVAL, "delivery: missing argument");
    if (st->ops->delivery_done == NULL)
        return no_outbox(st, err);
    return st->ops->delivery_done(st, seq, endpoint, delivered, next_at, status,
                                  error != NULL ? error : "", now, err);
}

enum kg_status
kg_store_event_list(struct kg_store *st, const struct kg_event_query *q, kg_store_event_cb cb,
                    void *ctx, char *next, struct kg_err *err)
{
    struct kg_cursor after;
    enum kg_status rc;

    clear_next(next);
    if (st == NULL || q == NULL || cb == NULL)
        return kg_err_set(err, KG_EINVAL, "event list: missing argument");
    rc = cursor_parse(&q->page, false, &after, err);
    if (rc != KG_OK)
        return rc;
    if (st->ops->event_list == NULL)
        return no_outbox(st, err);
    return st->ops->event_list(st, q, &after, cb, ctx, next, err);
}

enum kg_status
kg_store_event_retry(struct kg_store *st, const char *id, const char *tenant, int64_t now,
                     size_t *n, struct kg_err *err)
{
    if (n != NULL)
        *n = 0;
    if (st == NULL)
        return kg_err_set(err, KG_EINVAL, "event retry: missing argument");
    if (st->ops->event_retry == NULL)
        return no_outbox(st, err);
    return st->ops->event_retry(st, id, tenant, now, n, err);
}

enum kg_status
kg_store_event_counts(struct kg_store *st, int64_t *pending, int64_t *delivered, int64_t *failed,
                      struct kg_err *err)
{
    if (st == NULL || pending == NULL || delivered == NULL || failed == NULL)
        return kg_err_set(err, KG_EINVAL, "event counts: missing argument");
    if (st->ops->event_counts == NULL)
        return no_outbox(st, err);
    return st->ops->event_counts(st, pending, delivered, failed, err);
}

enum kg_status
kg_store_key_by_digest(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                       struct kg_key_rec *out, struct kg_err *err)
{
    if (st == NULL || digest == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "key by digest: missing argument");
    if (st->ops->key_by_digest == NULL)
        return no_outbox(st, err);
    return st->ops->key_by_digest(st, digest, out, err);
}

enum kg_status
kg_store_key_leaked(struct kg_store *st, const char *id, bool revoke, int64_t now,
                    struct kg_event *ev, const struct kg_audit_entry *audit, struct kg_err *err)
{
    if (st == NULL || id == NULL || ev == NULL)
        return kg_err_set(err, KG_EINVAL, "key leaked: missing argument");
    if (st->ops->key_leaked == NULL)
        return no_outbox(st, err);
    return st->ops->key_leaked(st, id, revoke, now, ev, audit, err);
}

enum kg_status
kg_store_quota_alert(struct kg_store *st, const struct kg_quota_alert *a, int64_t now, bool *fired,
                     struct kg_err *err)
{
    if (fired != NULL)
        *fired = false;
    if (st == NULL || a == NULL || a->subject == NULL || a->id == NULL || a->period == NULL ||
        (a->threshold != 80 && a->threshold != 100) || now <= 0)
        return kg_err_set(err, KG_EINVAL, "quota alert: missing argument");
    if (st->ops->quota_alert == NULL)
        return no_outbox(st, err);
    return st->ops->quota_alert(st, a, now, fired, err);
}

enum kg_status
kg_store_alerts_scan(struct kg_store *st, int64_t now, int64_t expiring_lead_s, int64_t idle_s,
                     size_t *fired, struct kg_err *err)
{
    if (fired != NULL)
        *fired = 0;
    if (st == NULL || now <= 0 || expiring_lead_s < 0 || idle_s < 0)
        return kg_err_set(err, KG_EINVAL, "alerts: missing argument");
    if (st->ops->alerts_scan == NULL)
        return no_outbox(st, err);
    return st->ops->alerts_scan(st, now, expiring_lead_s, idle_s, fired, err);
}
