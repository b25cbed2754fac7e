/* store/store.c - the store interface: picks a backend from the database
 * location, checks every argument once, and dispatches through the backend's
 * function table (store_int.h). Also the pure key-state helpers.
 *
 * It owns no storage itself; store_sqlite.c is the only backend today. The
 * checks live here so that a second backend cannot forget them and so that
 * bad input is reported the same way whatever the backend.
 */
#include <string.h>
#include <strings.h>

#include "keygate/store.h"
#include "store/store_int.h"

/* The first entry is the default, used for a plain file path. */
static const struct kg_store_ops *const backends[] = {
    &kg_store_sqlite_ops,
};

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
            if (strlen(backends[i]->name) == n &&
                strncasecmp(location, backends[i]->name, n) == 0) {
                *ops_out = backends[i];
                *rest_out = location + n + 1;
                if (**rest_out == '\0')
                    return kg_err_set(err, KG_EINVAL, "database location \"%s\" has no path",
                                      location);
                return KG_OK;
            }
        }
        /* Only the scheme is named: the rest of a URL may hold a password. */
        if (strncmp(location + n, "://", 3) == 0)
            return kg_err_set(err, KG_EINVAL,
                              "unsupported database URL (scheme \"%.*s\"): use a file path "
                              "or sqlite:PATH",
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
    rc = pick_backend(path, &ops, &rest, err);
    if (rc != KG_OK)
        return rc;
    return ops->open(rest, out, err);
}

void
kg_store_close(struct kg_store *st)
{
    if (st == NULL)
        return;
    st->ops->close(st);
}

enum kg_status
kg_store_key_insert(struct kg_store *st, const struct kg_key_rec *rec, struct kg_err *err)
{
    enum kg_status rc;

    if (st == NULL || rec == NULL)
        return kg_err_set(err, KG_EINVAL, "key insert: missing argument");
    rc = check_rec(rec, err);
    if (rc != KG_OK)
        return rc;
    return st->ops->key_insert(st, rec, err);
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

enum kg_status
kg_store_key_revoke(struct kg_store *st, const char *id, int64_t now, struct kg_err *err)
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
    return st->ops->key_revoke(st, id, now, err);
}

enum kg_status
kg_store_key_rotate(struct kg_store *st, const char *old_id, const struct kg_key_rec *fresh,
                    int64_t revoke_at, int64_t now, struct kg_err *err)
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
    return st->ops->key_rotate(st, old_id, fresh, revoke_at, now, err);
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
kg_store_data_version(struct kg_store *st, int64_t *out, struct kg_err *err)
{
    if (st == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "data version: missing argument");
    return st->ops->data_version(st, out, err);
}

enum kg_status
kg_store_set_durable(struct kg_store *st, bool durable, struct kg_err *err)
{
    if (st == NULL)
        return kg_err_set(err, KG_EINVAL, "set durable: missing argument");
    return st->ops->set_durable(st, durable, err);
}
