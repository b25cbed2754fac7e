/* store/store_sqlite.c - the SQLite backend of the store (see store_int.h):
 * opening the file and the keys table.
 *
 * Owns the database file: creating it private (0600, parent 0700), the
 * connection settings and every read and write of the keys table; the
 * helpers every file of the backend shares (sqlite_int.h) are in
 * sqlite_common.c. Tenants and
 * users live in sqlite_accounts.c, the audit trail in sqlite_audit.c, usage
 * counters and last-used times in sqlite_usage.c, schema versions in
 * migrate.c. Every write is one BEGIN IMMEDIATE transaction that
 * is rolled back on any failure, and all user data reaches SQL through bound
 * parameters only. Arguments were checked by store.c; this file does not
 * check them again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "store/sqlite_int.h"

/* How long a write waits for another connection's write lock (the CLI, a
 * second daemon) before it fails as "database is locked". */
#define BUSY_TIMEOUT_MS 5000

/* Column order of KEY_COLUMNS, for reading a row and binding an insert. */
enum key_col {
    COL_ID,
    COL_NAME,
    COL_PREFIX,
    COL_LAST4,
    COL_DIGEST,
    COL_SCOPES,
    COL_TENANT,
    COL_CREATED_AT,
    COL_EXPIRES_AT,
    COL_REVOKED_AT,
    COL_LAST_USED_AT,
    COL_ROTATED_TO,
    COL_RATE,
    COL_RATE_BURST,
    COL_QUOTA_LIMIT,
    COL_QUOTA_PERIOD,
    COL_QUOTA_USED,
    COL_METADATA,
    COL_USER_ID,
    COL_QUOTA_PERIOD_START,
    COL_CANARY,
    COL_ALLOWED_IPS,
    KEY_NCOLS,
};

#define KEY_COLUMNS                                                                                \
    "id, name, prefix, last4, digest, scopes, tenant, created_at, expires_at, revoked_at, "        \
    "last_used_at, rotated_to, rate, rate_burst, quota_limit, quota_period, quota_used, "          \
    "metadata, user_id, quota_period_start, canary, allowed_ips"

/* The same columns of a table aliased k, for joins. */
#define KEY_COLUMNS_K                                                                              \
    "k.id, k.name, k.prefix, k.last4, k.digest, k.scopes, k.tenant, k.created_at, "                \
    "k.expires_at, k.revoked_at, k.last_used_at, k.rotated_to, k.rate, k.rate_burst, "             \
    "k.quota_limit, k.quota_period, k.quota_used, k.metadata, k.user_id, k.quota_period_start, "   \
    "k.canary, k.allowed_ips"

/* Reads the current row of a SELECT KEY_COLUMNS into rec. */
static enum kg_status
row_to_rec(struct sqlite_store *s, sqlite3_stmt *stmt, struct kg_key_rec *rec, struct kg_err *err)
{
    const struct {
        enum key_col col;
        char *dst;
        size_t cap;
        const char *name;
    } texts[] = {
        {COL_NAME, rec->name, sizeof(rec->name), "name"},
        {COL_PREFIX, rec->prefix, sizeof(rec->prefix), "prefix"},
        {COL_LAST4, rec->last4, sizeof(rec->last4), "last4"},
        {COL_SCOPES, rec->scopes, sizeof(rec->scopes), "scopes"},
        {COL_TENANT, rec->tenant, sizeof(rec->tenant), "tenant"},
        {COL_ROTATED_TO, rec->rotated_to, sizeof(rec->rotated_to), "rotated_to"},
        {COL_RATE, rec->rate, sizeof(rec->rate), "rate"},
        {COL_QUOTA_PERIOD, rec->quota_period, sizeof(rec->quota_period), "quota_period"},
        {COL_METADATA, rec->metadata, sizeof(rec->metadata), "metadata"},
        {COL_USER_ID, rec->user_id, sizeof(rec->user_id), "user_id"},
        {COL_ALLOWED_IPS, rec->allowed_ips, sizeof(rec->allowed_ips), "allowed_ips"},
    };
    size_t i;

    memset(rec, 0, sizeof(*rec));
    if (!kg_sq_col_text(stmt, COL_ID, rec->id, sizeof(rec->id)))
        return kg_err_set(err, KG_ECORRUPT, "%s: a key id is longer than keygate allows", s->path);
    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (!kg_sq_col_text(stmt, (int)texts[i].col, texts[i].dst, texts[i].cap))
            return kg_err_set(err, KG_ECORRUPT, "%s: key %s: %s is longer than keygate allows",
                              s->path, rec->id, texts[i].name);
    }
    if (sqlite3_column_type(stmt, COL_DIGEST) != SQLITE_BLOB ||
        sqlite3_column_bytes(stmt, COL_DIGEST) != KG_DIGEST_BYTES)
        return kg_err_set(err, KG_ECORRUPT, "%s: key %s: digest is not %d bytes", s->path, rec->id,
                          KG_DIGEST_BYTES);
    memcpy(rec->digest, sqlite3_column_blob(stmt, COL_DIGEST), KG_DIGEST_BYTES);
    rec->created_at = kg_sq_col_int_or(stmt, COL_CREATED_AT, 0);
    rec->expires_at = kg_sq_col_int_or(stmt, COL_EXPIRES_AT, 0);
    rec->revoked_at = kg_sq_col_int_or(stmt, COL_REVOKED_AT, 0);
    rec->last_used_at = kg_sq_col_int_or(stmt, COL_LAST_USED_AT, 0);
    rec->rate_burst = kg_sq_col_int_or(stmt, COL_RATE_BURST, 0);
    rec->quota_limit = kg_sq_col_int_or(stmt, COL_QUOTA_LIMIT, -1);
    rec->quota_used = kg_sq_col_int_or(stmt, COL_QUOTA_USED, 0);
    rec->quota_period_start = kg_sq_col_int_or(stmt, COL_QUOTA_PERIOD_START, 0);
    rec->canary = kg_sq_col_int_or(stmt, COL_CANARY, 0) != 0;
    return KG_OK;
}

/* Binds rec to an INSERT whose parameters ?1.. follow KEY_COLUMNS, with
 * the owner decided by the caller. */
static bool
bind_rec(sqlite3_stmt *stmt, const struct kg_key_rec *rec, const char *user_id, const char *tenant)
{
    /* Empty metadata means what the column default says. */
    const char *metadata = rec->metadata[0] != '\0' ? rec->metadata : "{}";
    int rcs[] = {
        sqlite3_bind_text(stmt, COL_ID + 1, rec->id, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_NAME + 1, rec->name, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_PREFIX + 1, rec->prefix, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_LAST4 + 1, rec->last4, -1, SQLITE_STATIC),
        sqlite3_bind_blob(stmt, COL_DIGEST + 1, rec->digest, KG_DIGEST_BYTES, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_SCOPES + 1, rec->scopes, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_TENANT + 1, tenant, -1, SQLITE_STATIC),
        sqlite3_bind_int64(stmt, COL_CREATED_AT + 1, rec->created_at),
        kg_sq_bind_int_or_null(stmt, COL_EXPIRES_AT + 1, rec->expires_at, 0),
        kg_sq_bind_int_or_null(stmt, COL_REVOKED_AT + 1, rec->revoked_at, 0),
        kg_sq_bind_int_or_null(stmt, COL_LAST_USED_AT + 1, rec->last_used_at, 0),
        kg_sq_bind_text_or_null(stmt, COL_ROTATED_TO + 1, rec->rotated_to),
        kg_sq_bind_text_or_null(stmt, COL_RATE + 1, rec->rate),
        kg_sq_bind_int_or_null(stmt, COL_RATE_BURST + 1, rec->rate_burst, 0),
        kg_sq_bind_int_or_null(stmt, COL_QUOTA_LIMIT + 1, rec->quota_limit, -1),
        kg_sq_bind_text_or_null(stmt, COL_QUOTA_PERIOD + 1, rec->quota_period),
        sqlite3_bind_int64(stmt, COL_QUOTA_USED + 1, rec->quota_used),
        sqlite3_bind_text(stmt, COL_METADATA + 1, metadata, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_USER_ID + 1, user_id, -1, SQLITE_STATIC),
        sqlite3_bind_int64(stmt, COL_QUOTA_PERIOD_START + 1, rec->quota_period_start),
        sqlite3_bind_int(stmt, COL_CANARY + 1, rec->canary ? 1 : 0),
        kg_sq_bind_text_or_null(stmt, COL_ALLOWED_IPS + 1, rec->allowed_ips),
    };
    size_t i;

    for (i = 0; i < sizeof(rcs) / sizeof(rcs[0]); i++) {
        if (rcs[i] != SQLITE_OK)
            return false;
    }
    return true;
}

/* The tenant of user id, inside the caller's transaction. */
static enum kg_status
owner_tenant(struct sqlite_store *s, const char *id, char tenant[KG_NAME_MAX], struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s, "SELECT tenant FROM users WHERE id = ?1", &stmt, "read user", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "read user", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE)
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", id);
    else if (step != SQLITE_ROW)
        rc = kg_sq_fail(s, "read user", err);
    else if (!kg_sq_col_text(stmt, 0, tenant, KG_NAME_MAX))
        rc = kg_err_set(err, KG_ECORRUPT, "%s: user %s: tenant is longer than keygate allows",
                        s->path, id);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_key_insert_locked(struct sqlite_store *s, const struct kg_key_rec *rec, const char *user_id,
                        const char *tenant, struct kg_err *err)
{
    char owner_id[KG_ID_MAX];
    char owner_tenant_buf[KG_NAME_MAX];
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    char what[80];
    int step;

    snprintf(what, sizeof(what), "insert key %s", rec->id);
    if (user_id == NULL && rec->user_id[0] != '\0') {
        rc = owner_tenant(s, rec->user_id, owner_tenant_buf, err);
        if (rc != KG_OK)
            return rc;
        user_id = rec->user_id;
        tenant = owner_tenant_buf;
    } else if (user_id == NULL) {
        tenant = rec->tenant[0] != '\0' ? rec->tenant : KG_TENANT_DEFAULT;
        rc = kg_sq_default_owner_locked(s, tenant, rec->created_at, owner_id, err);
        if (rc != KG_OK)
            return rc;
        user_id = owner_id;
    }
    /* Looked up first so the answer can say which of id and digest clashed;
     * the UNIQUE constraints stay the last word. */
    rc = kg_sq_prepare(s, "SELECT id FROM keys WHERE id = ?1 OR digest = ?2 LIMIT 1", &stmt, what,
                       err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, rec->id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 2, rec->digest, KG_DIGEST_BYTES, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, what, err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        const char *other = (const char *)sqlite3_column_text(stmt, 0);

        if (other != NULL && strcmp(other, rec->id) == 0)
            rc = kg_err_set(err, KG_ECONFLICT, "key %s already exists", rec->id);
        else
            rc = kg_err_set(err, KG_ECONFLICT, "key %s has the same digest as key %.39s", rec->id,
                            other != NULL ? other : "?");
        goto cleanup;
    }
    if (step != SQLITE_DONE) {
        rc = kg_sq_fail(s, what, err);
        goto cleanup;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;

    rc = kg_sq_prepare(s,
                       "INSERT INTO keys (" KEY_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
                       " ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
                       &stmt, what, err);
    if (rc != KG_OK)
        goto cleanup;
    if (!bind_rec(stmt, rec, user_id, tenant) || sqlite3_step(stmt) != SQLITE_DONE) {
        rc = kg_sq_fail(s, what, err);
        goto cleanup;
    }

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static enum kg_status
sqlite_key_add(struct kg_store *st, const struct kg_key_rec *rec,
               const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_key_insert_locked(s, rec, NULL, NULL, err);
    return kg_sq_finish(s, rc, audit, err);
}

/* The seeding path: one transaction, the INSERT prepared once, each
 * owner resolved once for a run of records with the same one, and
 * duplicates left to the UNIQUE constraints (KG_ECONFLICT) instead of a
 * lookup per key. */
static enum kg_status
sqlite_key_add_batch(struct kg_store *st, const struct kg_key_rec *recs, size_t n,
                     struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    char user_id[KG_ID_MAX] = "", tenant[KG_NAME_MAX] = "";
    const struct kg_key_rec *prev = NULL;
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc == KG_OK)
        rc = kg_sq_prepare(
            s,
            "INSERT INTO keys (" KEY_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
            " ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            &stmt, "insert keys", err);
    for (size_t i = 0; rc == KG_OK && i < n; i++) {
        const struct kg_key_rec *rec = &recs[i];

        if (prev == NULL || strcmp(prev->user_id, rec->user_id) != 0 ||
            (rec->user_id[0] == '\0' && strcmp(prev->tenant, rec->tenant) != 0)) {
            if (rec->user_id[0] != '\0') {
                rc = owner_tenant(s, rec->user_id, tenant, err);
                snprintf(user_id, sizeof(user_id), "%s", rec->user_id);
            } else {
                snprintf(tenant, sizeof(tenant), "%s",
                         rec->tenant[0] != '\0' ? rec->tenant : KG_TENANT_DEFAULT);
                rc = kg_sq_default_owner_locked(s, tenant, rec->created_at, user_id, err);
            }
            if (rc != KG_OK)
                break;
            prev = rec;
        }
        if (!bind_rec(stmt, rec, user_id, tenant) || sqlite3_step(stmt) != SQLITE_DONE)
            rc = kg_sq_fail(s, "insert keys", err);
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    }
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, NULL, err);
}

static enum kg_status
sqlite_key_get(struct kg_store *st, const char *id, struct kg_key_rec *out, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s, "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1", &stmt, "get key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "get key", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW)
        rc = row_to_rec(s, stmt, out, err);
    else if (step == SQLITE_DONE)
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
    else
        rc = kg_sq_fail(s, "get key", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* Runs a prepared SELECT KEY_COLUMNS [+ owner columns] and calls cb (or
 * owner_cb) per row. With limit > 0 the statement was bound for limit + 1
 * rows; the extra row only tells that a next page exists. The callback must
 * not use this handle: the walk's statement is still open. */
struct key_walk {
    kg_store_key_cb cb;
    kg_store_key_owner_cb owner_cb;
    void *ctx;
    size_t limit;
    char *next;
};

static enum kg_status
walk_keys(struct sqlite_store *s, sqlite3_stmt *stmt, const struct key_walk *w, const char *what,
          struct kg_err *err)
{
    struct kg_key_rec *rec = NULL;
    enum kg_status rc = KG_OK;
    size_t n = 0;
    int step;

    /* About 6 KiB: kept off the stack of whichever thread walks. */
    rec = malloc(sizeof(*rec));
    if (rec == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: %s: out of memory", s->path, what);
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        bool go_on;

        if (w->limit > 0 && n == w->limit) {
            if (w->next != NULL)
                kg_store_cursor_format(rec->created_at, rec->id, w->next);
            goto cleanup;
        }
        rc = row_to_rec(s, stmt, rec, err);
        if (rc != KG_OK)
            goto cleanup;
        n++;
        if (w->owner_cb != NULL) {
            /* NULL usage columns (the user never charged) read as 0. */
            struct kg_user_usage used = {
                .credits = sqlite3_column_int64(stmt, KEY_NCOLS + 6),
                .credits_period_start = sqlite3_column_int64(stmt, KEY_NCOLS + 7),
                .tier = sqlite3_column_int64(stmt, KEY_NCOLS + 8),
                .tier_period_start = sqlite3_column_int64(stmt, KEY_NCOLS + 9),
            };
            const char *qperiod = (const char *)sqlite3_column_text(stmt, KEY_NCOLS + 5);
            struct kg_key_owner owner = {
                .role = (const char *)sqlite3_column_text(stmt, KEY_NCOLS),
                .tier = (const char *)sqlite3_column_text(stmt, KEY_NCOLS + 1),
                .platform_admin = sqlite3_column_int(stmt, KEY_NCOLS + 2) != 0,
                .disabled = sqlite3_column_int(stmt, KEY_NCOLS + 3) != 0,
                .has_quota = sqlite3_column_type(stmt, KEY_NCOLS + 4) == SQLITE_INTEGER,
                .quota_limit = sqlite3_column_int64(stmt, KEY_NCOLS + 4),
                .quota_period = qperiod != NULL ? qperiod : "",
                .usage = &used,
            };

            /* A key whose owner row is missing has no role: fail closed. */
            if (owner.role == NULL || owner.tier == NULL) {
                owner.role = "";
                owner.tier = "";
                owner.disabled = true;
            }
            go_on = w->owner_cb(rec, &owner, w->ctx);
        } else {
            go_on = w->cb(rec, w->ctx);
        }
        if (!go_on) {
            if (w->next != NULL && w->limit > 0)
                kg_store_cursor_format(rec->created_at, rec->id, w->next);
            goto cleanup;
        }
    }
    if (step != SQLITE_DONE)
        rc = kg_sq_fail(s, what, err);

cleanup:
    free(rec);
    return rc;
}

static enum kg_status
sqlite_key_each(struct kg_store *st, kg_store_key_cb cb, void *ctx, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    struct key_walk w = {.cb = cb, .ctx = ctx};
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_prepare(s, "SELECT " KEY_COLUMNS " FROM keys ORDER BY created_at, id", &stmt,
                       "walk keys", err);
    if (rc == KG_OK)
        rc = walk_keys(s, stmt, &w, "walk keys", err);
    sqlite3_finalize(stmt);
    return rc;
}

static enum kg_status
sqlite_key_list(struct kg_store *st, const struct kg_key_query *q, const struct kg_cursor *after,
                kg_store_key_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    struct key_walk w = {.cb = cb, .ctx = ctx, .limit = q->page.limit, .next = next};
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    /* The state test mirrors kg_key_state_of(): revoked wins over expired. */
    rc = kg_sq_prepare(s,
                       "SELECT " KEY_COLUMNS " FROM keys"
                       " WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR user_id = ?2)"
                       " AND (?3 IS NULL OR name = ?3)"
                       " AND (?4 < 0"
                       "  OR (?4 = 2 AND revoked_at IS NOT NULL AND revoked_at <= ?5)"
                       "  OR (?4 = 1 AND (revoked_at IS NULL OR revoked_at > ?5)"
                       "      AND expires_at IS NOT NULL AND expires_at <= ?5)"
                       "  OR (?4 = 0 AND (revoked_at IS NULL OR revoked_at > ?5)"
                       "      AND (expires_at IS NULL OR expires_at > ?5)))"
                       " AND (?6 IS NULL OR created_at > ?6 OR (created_at = ?6 AND id > ?7))"
                       " ORDER BY created_at, id LIMIT ?8",
                       &stmt, "list keys", err);
    if (rc != KG_OK)
        goto cleanup;
    if (kg_sq_bind_opt_text(stmt, 1, q->tenant) != SQLITE_OK ||
        kg_sq_bind_opt_text(stmt, 2, q->user_id) != SQLITE_OK ||
        kg_sq_bind_opt_text(stmt, 3, q->name) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 4, q->all_states ? -1 : (int)q->state) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 5, q->now) != SQLITE_OK ||
        kg_sq_bind_cursor(stmt, 6, after) != SQLITE_OK ||
        kg_sq_bind_limit(stmt, 8, q->page.limit) != SQLITE_OK) {
        rc = kg_sq_fail(s, "list keys", err);
        goto cleanup;
    }
    rc = walk_keys(s, stmt, &w, "list keys", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* The owner query: metadata is read as "{}" (the cache never needs it, and
 * it is the largest column); no ORDER BY, so a full load streams the table
 * in storage order without sorting it. */
#define KEY_OWNER_SELECT                                                                           \
    "SELECT k.id, k.name, k.prefix, k.last4, k.digest, k.scopes, k.tenant, k.created_at,"          \
    " k.expires_at, k.revoked_at, k.last_used_at, k.rotated_to, k.rate, k.rate_burst,"             \
    " k.quota_limit, k.quota_period, k.quota_used, '{}', k.user_id, k.quota_period_start,"         \
    " k.canary, k.allowed_ips,"                                                                    \
    " u.role, u.tier, u.platform_admin,"                                                           \
    " (u.id IS NULL OR u.disabled_at IS NOT NULL OR t.name IS NULL"                                \
    "  OR t.disabled_at IS NOT NULL),"                                                             \
    " u.quota_limit, u.quota_period, uu.credits_used, uu.credits_period_start,"                    \
    " uu.tier_used, uu.tier_period_start"                                                          \
    " FROM keys AS k LEFT JOIN users AS u ON u.id = k.user_id"                                     \
    " LEFT JOIN tenants AS t ON t.name = u.tenant"                                                 \
    " LEFT JOIN user_usage AS uu ON uu.user_id = k.user_id"

static enum kg_status
sqlite_key_each_owner(struct kg_store *st, int of, const char *id, kg_store_key_owner_cb cb,
                      void *ctx, struct kg_err *err)
{
    static const char *const where[] = {
        [KG_CHANGE_KEY] = " WHERE k.id = ?1",
        [KG_CHANGE_USER] = " WHERE k.user_id = ?1",
        [KG_CHANGE_TENANT] = " WHERE k.user_id IN (SELECT id FROM users WHERE tenant = ?1)",
    };
    struct sqlite_store *s = kg_sq_from(st);
    struct key_walk w = {.owner_cb = cb, .ctx = ctx};
    sqlite3_stmt *stmt = NULL;
    char sql[sizeof(KEY_OWNER_SELECT) + 96];
    enum kg_status rc;

    snprintf(sql, sizeof(sql), "%s%s", KEY_OWNER_SELECT, of < 0 ? "" : where[of]);
    rc = kg_sq_prepare(s, sql, &stmt, "walk keys", err);
    if (rc == KG_OK && of >= 0 && sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK)
        rc = kg_sq_fail(s, "walk keys", err);
    if (rc == KG_OK)
        rc = walk_keys(s, stmt, &w, "walk keys", err);
    sqlite3_finalize(stmt);
    return rc;
}

/* Whether an update moves the key's refill period: ?8 is the new period,
 * NULL for none; a start of 0 under a refill is moved even if the period
 * stays. */
#define KEY_PERIOD_MOVES                                                                           \
    "(COALESCE(quota_period, '') <> COALESCE(?8, '')"                                              \
    " OR (quota_period_start = 0 AND ?8 IS NOT NULL))"
#define KEY_OLD_START KG_SQ_PERIOD_START("quota_period", "?10")
#define KEY_NEW_START KG_SQ_PERIOD_START("?8", "?10")

/* A refill set, changed or removed starts the count's period now (?10):
 * what the old period counts now stays used in the current period of the
 * new one (credits used up stay used up until its next start), what it
 * counts no more (an earlier period, or a start of 0 under a refill) is
 * history. The start is the later of the two periods' current starts, so
 * that a flush from a daemon that has not reloaded yet adds to the count
 * instead of starting it again. SET reads the row as it was. */
static const char key_update_sql[] =
    "UPDATE keys SET name = ?2, scopes = ?3, expires_at = ?4, rate = ?5,"
    " rate_burst = ?6, quota_limit = ?7, quota_period = ?8, metadata = ?9, allowed_ips = ?11,"
    " quota_used = CASE WHEN " KEY_PERIOD_MOVES " AND quota_period_start < " KEY_OLD_START
    " THEN 0 ELSE quota_used END,"
    " quota_period_start = CASE WHEN " KEY_PERIOD_MOVES " THEN MAX(" KEY_OLD_START
    ", " KEY_NEW_START ") ELSE quota_period_start END"
    " WHERE id = ?1";

static enum kg_status
sqlite_key_update(struct kg_store *st, const struct kg_key_rec *rec,
                  const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    const char *metadata = rec->metadata[0] != '\0' ? rec->metadata : "{}";
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s, key_update_sql, &stmt, "update key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, rec->id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, rec->name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 3, rec->scopes, -1, SQLITE_STATIC) != SQLITE_OK ||
        kg_sq_bind_int_or_null(stmt, 4, rec->expires_at, 0) != SQLITE_OK ||
        kg_sq_bind_text_or_null(stmt, 5, rec->rate) != SQLITE_OK ||
        kg_sq_bind_int_or_null(stmt, 6, rec->rate_burst, 0) != SQLITE_OK ||
        kg_sq_bind_int_or_null(stmt, 7, rec->quota_limit, -1) != SQLITE_OK ||
        kg_sq_bind_text_or_null(stmt, 8, rec->quota_period) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 9, metadata, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 10, audit != NULL ? audit->time : kg_time_now()) != SQLITE_OK ||
        kg_sq_bind_text_or_null(stmt, 11, rec->allowed_ips) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE) {
        rc = kg_sq_fail(s, "update key", err);
        goto cleanup;
    }
    if (sqlite3_changes(s->db) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", rec->id);

cleanup:
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, audit, err);
}

static enum kg_status
sqlite_key_by_digest(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                     struct kg_key_rec *out, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s, "SELECT " KEY_COLUMNS " FROM keys WHERE digest = ?1", &stmt, "find key",
                       err);
    if (rc != KG_OK)
        return rc;
    if (sqlite3_bind_blob(stmt, 1, digest, KG_DIGEST_BYTES, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "find key", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE)
        rc = KG_ENOTFOUND;
    else if (step != SQLITE_ROW)
        rc = kg_sq_fail(s, "find key", err);
    else
        rc = row_to_rec(s, stmt, out, err);
cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static enum kg_status
sqlite_key_leaked(struct kg_store *st, const char *id, bool revoke, int64_t now,
                  struct kg_event *ev, const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    if (revoke) {
        rc = kg_sq_prepare(s,
                           "UPDATE keys SET revoked_at = ?2 WHERE id = ?1"
                           " AND (revoked_at IS NULL OR revoked_at > ?2)",
                           &stmt, "revoke key", err);
        if (rc == KG_OK &&
            (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK ||
             sqlite3_bind_int64(stmt, 2, now) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_DONE))
            rc = kg_sq_fail(s, "revoke key", err);
        sqlite3_finalize(stmt);
    }
    if (rc == KG_OK)
        rc = kg_sq_event_add_locked(s, ev, err);
    return kg_sq_finish(s, rc, audit, err);
}

/* Reads what kg_store_key_revoke() and _rotate() decide on: whether id
 * exists, its revoked_at (0 when NULL) and its rotated_to ("" when NULL). */
static enum kg_status
read_revocation(struct sqlite_store *s, const char *id, int64_t *revoked_at, char *rotated_to,
                size_t rotated_cap, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s, "SELECT revoked_at, rotated_to FROM keys WHERE id = ?1", &stmt,
                       "read key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "read key", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE) {
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
        goto cleanup;
    }
    if (step != SQLITE_ROW) {
        rc = kg_sq_fail(s, "read key", err);
        goto cleanup;
    }
    *revoked_at = kg_sq_col_int_or(stmt, 0, 0);
    if (!kg_sq_col_text(stmt, 1, rotated_to, rotated_cap))
        rc = kg_err_set(err, KG_ECORRUPT, "%s: key %s: rotated_to is longer than keygate allows",
                        s->path, id);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static enum kg_status
sqlite_key_revoke(struct kg_store *st, const char *id, int64_t now,
                  const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    char rotated_to[KG_ID_MAX];
    int64_t revoked_at = 0;
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = read_revocation(s, id, &revoked_at, rotated_to, sizeof(rotated_to), err);
    if (rc != KG_OK)
        goto cleanup;
    if (revoked_at != 0 && revoked_at <= now) {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", id);
        goto cleanup;
    }
    /* Unset, or scheduled by a rotation grace that is cut short now. */
    rc =
        kg_sq_prepare(s, "UPDATE keys SET revoked_at = ?1 WHERE id = ?2", &stmt, "revoke key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, now) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "revoke key", err);

cleanup:
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, audit, err);
}

static enum kg_status
sqlite_key_rotate(struct kg_store *st, const char *old_id, const struct kg_key_rec *fresh,
                  int64_t revoke_at, int64_t now, const struct kg_audit_entry *audit,
                  struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    char rotated_to[KG_ID_MAX];
    int64_t revoked_at = 0;
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = read_revocation(s, old_id, &revoked_at, rotated_to, sizeof(rotated_to), err);
    if (rc != KG_OK)
        goto cleanup;
    if (revoked_at != 0 && revoked_at <= now) {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", old_id);
        goto cleanup;
    }
    if (rotated_to[0] != '\0') {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s was already rotated to %s", old_id, rotated_to);
        goto cleanup;
    }
    rc = kg_sq_key_insert_locked(s, fresh, NULL, NULL, err);
    if (rc != KG_OK)
        goto cleanup;
    /* min() keeps an earlier revocation already scheduled on the old key:
     * rotating must never extend a key's life. */
    rc = kg_sq_prepare(s,
                       "UPDATE keys SET revoked_at = min(coalesce(revoked_at, ?1), ?1),"
                       " rotated_to = ?2 WHERE id = ?3",
                       &stmt, "rotate key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, revoke_at) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, fresh->id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 3, old_id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "rotate key", err);

cleanup:
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, audit, err);
}

static enum kg_status
sqlite_key_known(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES], int64_t now,
                 bool *out, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt;
    enum kg_status rc = KG_OK;
    int step;

    if (s->key_known == NULL) {
        rc = kg_sq_prepare(s,
                           /* The key cache's own rule (key_each_owner + load_one): an
                            * owner or tenant that is missing or disabled leaves it out. */
                           "SELECT 1 FROM keys AS k"
                           " JOIN users AS u ON u.id = k.user_id"
                           " JOIN tenants AS t ON t.name = u.tenant"
                           " WHERE k.digest = ?1 AND (k.revoked_at IS NULL OR k.revoked_at > ?2)"
                           " AND u.disabled_at IS NULL AND t.disabled_at IS NULL",
                           &s->key_known, "look up a key", err);
        if (rc != KG_OK)
            return rc;
    }
    stmt = s->key_known;
    if (sqlite3_bind_blob(stmt, 1, digest, KG_DIGEST_BYTES, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, now) != SQLITE_OK) {
        rc = kg_sq_fail(s, "look up a key", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW || step == SQLITE_DONE)
        *out = step == SQLITE_ROW;
    else
        rc = kg_sq_fail(s, "look up a key", err);

cleanup:
    /* Ends the read (no snapshot held between lookups) and drops the
     * borrowed digest. */
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static enum kg_status
sqlite_data_version(struct kg_store *st, int64_t *out, struct kg_err *err)
{
    return kg_sq_read_int(kg_sq_from(st), "PRAGMA data_version", out, "data version", err);
}

/* Writes page 1 again (user_version set to itself) and commits: a disk
 * that is full, a file that cannot be written or a lock held elsewhere
 * fail it as they fail any change. No busy wait: the caller probes again
 * later rather than block its thread for busy_timeout. */
static enum kg_status
sqlite_write_probe(struct kg_store *st, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    int64_t version = 0;
    char sql[64];
    enum kg_status rc;

    sqlite3_busy_timeout(s->db, 0);
    rc = kg_sq_begin(s, err);
    if (rc == KG_OK)
        rc = kg_sq_read_int(s, "PRAGMA user_version", &version, "write probe", err);
    if (rc == KG_OK) {
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)version);
        rc = kg_sq_exec(s, sql, "write probe", err);
    }
    if (rc == KG_OK)
        rc = kg_sq_commit(s, err);
    if (rc != KG_OK)
        kg_sq_rollback(s);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    return rc;
}

static enum kg_status
sqlite_set_durable(struct kg_store *st, bool durable, struct kg_err *err)
{
    /* In WAL mode NORMAL can lose the last commits on power loss but never
     * corrupts the file: fine for counters, not for key changes. */
    return kg_sq_exec(kg_sq_from(st),
                      durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                      "set synchronous", err);
}

/* One level is enough for the usual "data/keygate.db"; deeper trees are the
 * operator's to make. */
static enum kg_status
make_parent_dir(const char *path, struct kg_err *err)
{
    const char *slash = strrchr(path, '/');
    enum kg_status rc = KG_OK;
    char *dir;

    if (slash == NULL || slash == path)
        return KG_OK;
    dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: out of memory", path);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        rc = kg_err_set(err, KG_EIO, "%s: cannot create directory %s: %s", path, dir,
                        strerror(errno));
    free(dir);
    return rc;
}

/* Creates the file ourselves so it starts life 0600 whatever SQLite's
 * default; SQLite then gives the -wal and -shm files the same mode.
 * O_EXCL: an existing file is never opened here, because closing any
 * descriptor of a database drops every POSIX lock this process holds on
 * it, the shared lock of its other connections included (the daemon opens
 * one per thread). Without that lock another process closing its last
 * connection believes it is the last one anywhere and deletes the WAL,
 * after which this process no longer sees new commits. */
static enum kg_status
create_file(const char *path, struct kg_err *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0 && errno == EEXIST)
        return KG_OK;
    if (fd < 0)
        return kg_err_set(err, KG_EIO, "%s: cannot open: %s", path, strerror(errno));
    close(fd);
    return KG_OK;
}

/* Connection settings, after check_identity() so another program's file is
 * never switched to WAL. */
static enum kg_status
configure(struct sqlite_store *s, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    const char *mode;
    enum kg_status rc;

    rc = kg_sq_prepare(s, "PRAGMA journal_mode = WAL", &stmt, "set WAL journal", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        rc = kg_sq_fail(s, "set WAL journal", err);
        goto cleanup;
    }
    /* The pragma answers with the mode in force, which is not WAL where the
     * file system cannot share memory (some network mounts). */
    mode = (const char *)sqlite3_column_text(stmt, 0);
    if (mode == NULL || strcmp(mode, "wal") != 0) {
        rc = kg_err_set(err, KG_EIO, "%s: cannot use WAL journal (journal mode is %s)", s->path,
                        mode != NULL ? mode : "unknown");
        goto cleanup;
    }
    rc = kg_sq_exec(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON", "set pragmas", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static void
sqlite_close(struct kg_store *st)
{
    struct sqlite_store *s = kg_sq_from(st);

    if (s == NULL)
        return;
    sqlite3_finalize(s->key_known);
    /* Closing the last connection checkpoints and removes the WAL file. */
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

static enum kg_status
sqlite_open(const char *location, struct kg_store **out, struct kg_err *err)
{
    struct sqlite_store *s = NULL;
    enum kg_status rc;

    rc = make_parent_dir(location, err);
    if (rc != KG_OK)
        return rc;
    rc = create_file(location, err);
    if (rc != KG_OK)
        return rc;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: out of memory", location);
    s->base.ops = &kg_store_sqlite_ops;
    s->path = strdup(location);
    if (s->path == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "%s: out of memory", location);
        goto cleanup;
    }
    /* No SQLITE_OPEN_CREATE: the file exists by now, and if it vanished we
     * would rather fail than let SQLite create it with its default mode. */
    if (sqlite3_open_v2(location, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        if (s->db == NULL)
            rc = kg_err_set(err, KG_ENOMEM, "%s: out of memory", location);
        else
            rc = kg_sq_fail(s, "open", err);
        goto cleanup;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
#ifdef SQLITE_DBCONFIG_DEFENSIVE
    /* Refuses writable_schema and other ways to corrupt the file by SQL. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
#endif
    rc = kg_sq_check_identity(s, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = configure(s, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_sq_migrate(s, err);
    if (rc != KG_OK)
        goto cleanup;
    *out = &s->base;
    s = NULL;

cleanup:
    if (s != NULL)
        sqlite_close(&s->base);
    return rc;
}

const struct kg_store_ops kg_store_sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .key_add = sqlite_key_add,
    .key_add_batch = sqlite_key_add_batch,
    .key_get = sqlite_key_get,
    .key_each = sqlite_key_each,
    .key_list = sqlite_key_list,
    .key_each_owner = sqlite_key_each_owner,
    .key_update = sqlite_key_update,
    .key_revoke = sqlite_key_revoke,
    .key_rotate = sqlite_key_rotate,
    .key_touch = kg_sq_key_touch,
    .key_usage_add = kg_sq_key_usage_add,
    .credit_reserve = kg_sq_credit_reserve,
    .credit_renew = kg_sq_credit_renew,
    .credit_release = kg_sq_credit_release,
    .key_usage_get = kg_sq_key_usage_get,
    .user_usage_get = kg_sq_user_usage_get,
    .tenant_insert = kg_sq_tenant_insert,
    .tenant_get = kg_sq_tenant_get,
    .tenant_update = kg_sq_tenant_update,
    .tenant_list = kg_sq_tenant_list,
    .user_insert = kg_sq_user_insert,
    .user_lookup = kg_sq_user_lookup,
    .user_update = kg_sq_user_update,
    .user_list = kg_sq_user_list,
    .audit_append = kg_sq_audit_append,
    .audit_list = kg_sq_audit_list,
    .audit_each = kg_sq_audit_each,
    .audit_head = kg_sq_audit_head,
    .data_version = sqlite_data_version,
    .write_probe = sqlite_write_probe,
    .key_known = sqlite_key_known,
    .change_head = kg_sq_change_head,
    .key_count = kg_sq_key_count,
    .key_census = kg_sq_key_census,
    .change_each = kg_sq_change_each,
    .change_trim = kg_sq_change_trim,
    .event_add = kg_sq_event_add,
    .event_fanout = kg_sq_event_fanout,
    .delivery_due = kg_sq_delivery_due,
    .delivery_done = kg_sq_delivery_done,
    .event_list = kg_sq_event_list,
    .event_retry = kg_sq_event_retry,
    .event_counts = kg_sq_event_counts,
    .alerts_scan = kg_sq_alerts_scan,
    .quota_alert = kg_sq_quota_alert,
    .key_by_digest = sqlite_key_by_digest,
    .key_leaked = sqlite_key_leaked,
    .set_durable = sqlite_set_durable,
    .session_insert = kg_sq_session_insert,
    .session_get = kg_sq_session_get,
    .session_touch = kg_sq_session_touch,
    .session_delete = kg_sq_session_delete,
    .fingerprint = kg_sq_fingerprint,
};
