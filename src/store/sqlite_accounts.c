/* store/sqlite_accounts.c - tenants and users in the SQLite backend.
 *
 * Owns every read and write of the tenants and users tables (sql/002):
 * inserts that say which unique field clashed, lookups by id, by tenant and
 * username and by e-mail, whole-record updates and paged listings. Rules
 * (valid names, roles, who may change what) belong to manage/accounts.c;
 * arguments were checked by store.c. Each write is one BEGIN IMMEDIATE
 * transaction that also appends its audit entries (kg_sq_finish()).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "store/sqlite_int.h"

#define TENANT_COLUMNS "name, display_name, created_at, disabled_at"
#define USER_COLUMNS                                                                               \
    "id, tenant, username, email, first_name, last_name, password_hash, role, tier, "              \
    "platform_admin, created_at, disabled_at, quota_limit, quota_period"

enum user_col {
    UCOL_ID,
    UCOL_TENANT,
    UCOL_USERNAME,
    UCOL_EMAIL,
    UCOL_FIRST_NAME,
    UCOL_LAST_NAME,
    UCOL_PASSWORD_HASH,
    UCOL_ROLE,
    UCOL_TIER,
    UCOL_PLATFORM_ADMIN,
    UCOL_CREATED_AT,
    UCOL_DISABLED_AT,
    UCOL_QUOTA_LIMIT,
    UCOL_QUOTA_PERIOD,
};

/* ---- small helpers ---- */

/* Runs a prepared statement expected to return at most one row; *found
 * says whether it did. Resets nothing: the caller finalises. */
static enum kg_status
step_one(struct sqlite_store *s, sqlite3_stmt *stmt, bool *found, const char *what,
         struct kg_err *err)
{
    int step = sqlite3_step(stmt);

    *found = step == SQLITE_ROW;
    if (step == SQLITE_ROW || step == SQLITE_DONE)
        return KG_OK;
    return kg_sq_fail(s, what, err);
}

/* Whether sql, with a, b and c bound to ?1..?3 (b and c may be NULL: not
 * bound), returns a row. */
static enum kg_status
exists(struct sqlite_store *s, const char *sql, const char *a, const char *b, const char *c,
       bool *found, const char *what, struct kg_err *err)
{
    const char *args[] = {a, b, c};
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_prepare(s, sql, &stmt, what, err);
    if (rc != KG_OK)
        goto cleanup;
    for (int i = 0; i < 3; i++) {
        if (args[i] != NULL &&
            sqlite3_bind_text(stmt, i + 1, args[i], -1, SQLITE_STATIC) != SQLITE_OK) {
            rc = kg_sq_fail(s, what, err);
            goto cleanup;
        }
    }
    rc = step_one(s, stmt, found, what, err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* ---- tenants ---- */

static enum kg_status
row_to_tenant(struct sqlite_store *s, sqlite3_stmt *stmt, struct kg_tenant_rec *out,
              struct kg_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!kg_sq_col_text(stmt, 0, out->name, sizeof(out->name)) ||
        !kg_sq_col_text(stmt, 1, out->display_name, sizeof(out->display_name)))
        return kg_err_set(err, KG_ECORRUPT, "%s: a tenant field is longer than keygate allows",
                          s->path);
    out->created_at = kg_sq_col_int_or(stmt, 2, 0);
    out->disabled_at = kg_sq_col_int_or(stmt, 3, 0);
    return KG_OK;
}

static enum kg_status
tenant_insert_locked(struct sqlite_store *s, const struct kg_tenant_rec *rec, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    bool found = false;

    rc = exists(s, "SELECT 1 FROM tenants WHERE name = ?1", rec->name, NULL, NULL, &found,
                "insert tenant", err);
    if (rc != KG_OK)
        return rc;
    if (found)
        return kg_err_set(err, KG_ECONFLICT, "tenant %s already exists", rec->name);
    rc = kg_sq_prepare(s, "INSERT INTO tenants (" TENANT_COLUMNS ") VALUES (?1, ?2, ?3, ?4)", &stmt,
                       "insert tenant", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, rec->name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, rec->display_name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, rec->created_at) != SQLITE_OK ||
        kg_sq_bind_int_or_null(stmt, 4, rec->disabled_at, 0) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "insert tenant", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_tenant_insert(struct kg_store *st, const struct kg_tenant_rec *rec,
                    const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc = kg_sq_begin(s, err);

    if (rc != KG_OK)
        return rc;
    rc = tenant_insert_locked(s, rec, err);
    return kg_sq_finish(s, rc, audit, err);
}

enum kg_status
kg_sq_tenant_get(struct kg_store *st, const char *name, struct kg_tenant_rec *out,
                 struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    bool found = false;

    rc = kg_sq_prepare(s, "SELECT " TENANT_COLUMNS " FROM tenants WHERE name = ?1", &stmt,
                       "get tenant", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "get tenant", err);
        goto cleanup;
    }
    rc = step_one(s, stmt, &found, "get tenant", err);
    if (rc == KG_OK)
        rc = found ? row_to_tenant(s, stmt, out, err)
                   : kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", name);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_tenant_update(struct kg_store *st, const struct kg_tenant_rec *rec,
                    const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc = kg_sq_begin(s, err);

    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s, "UPDATE tenants SET display_name = ?2, disabled_at = ?3 WHERE name = ?1",
                       &stmt, "update tenant", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, rec->name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, rec->display_name, -1, SQLITE_STATIC) != SQLITE_OK ||
        kg_sq_bind_int_or_null(stmt, 3, rec->disabled_at, 0) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE) {
        rc = kg_sq_fail(s, "update tenant", err);
        goto cleanup;
    }
    if (sqlite3_changes(s->db) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", rec->name);

cleanup:
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, audit, err);
}

enum kg_status
kg_sq_tenant_list(struct kg_store *st, const char *only, const struct kg_cursor *after,
                  size_t limit, kg_store_tenant_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    struct kg_tenant_rec rec;
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    size_t n = 0;
    int step;

    rc = kg_sq_prepare(s,
                       "SELECT " TENANT_COLUMNS " FROM tenants WHERE (?1 IS NULL OR name = ?1)"
                       " AND (?2 IS NULL OR created_at > ?2 OR (created_at = ?2 AND name > ?3))"
                       " ORDER BY created_at, name LIMIT ?4",
                       &stmt, "list tenants", err);
    if (rc != KG_OK)
        goto cleanup;
    if (kg_sq_bind_opt_text(stmt, 1, only) != SQLITE_OK ||
        kg_sq_bind_cursor(stmt, 2, after) != SQLITE_OK ||
        kg_sq_bind_limit(stmt, 4, limit) != SQLITE_OK) {
        rc = kg_sq_fail(s, "list tenants", err);
        goto cleanup;
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (limit > 0 && n == limit) {
            if (next != NULL)
                kg_store_cursor_format(rec.created_at, rec.name, next);
            goto cleanup;
        }
        rc = row_to_tenant(s, stmt, &rec, err);
        if (rc != KG_OK)
            goto cleanup;
        n++;
        if (!cb(&rec, ctx)) {
            if (next != NULL && limit > 0)
                kg_store_cursor_format(rec.created_at, rec.name, next);
            goto cleanup;
        }
    }
    if (step != SQLITE_DONE)
        rc = kg_sq_fail(s, "list tenants", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* ---- users ---- */

static enum kg_status
row_to_user(struct sqlite_store *s, sqlite3_stmt *stmt, struct kg_user_rec *out, struct kg_err *err)
{
    const struct {
        enum user_col col;
        char *dst;
        size_t cap;
    } texts[] = {
        {UCOL_ID, out->id, sizeof(out->id)},
        {UCOL_TENANT, out->tenant, sizeof(out->tenant)},
        {UCOL_USERNAME, out->username, sizeof(out->username)},
        {UCOL_EMAIL, out->email, sizeof(out->email)},
        {UCOL_FIRST_NAME, out->first_name, sizeof(out->first_name)},
        {UCOL_LAST_NAME, out->last_name, sizeof(out->last_name)},
        {UCOL_PASSWORD_HASH, out->password_hash, sizeof(out->password_hash)},
        {UCOL_ROLE, out->role, sizeof(out->role)},
        {UCOL_TIER, out->tier, sizeof(out->tier)},
        {UCOL_QUOTA_PERIOD, out->quota_period, sizeof(out->quota_period)},
    };

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (!kg_sq_col_text(stmt, (int)texts[i].col, texts[i].dst, texts[i].cap))
            return kg_err_set(err, KG_ECORRUPT,
                              "%s: user %s: a field is longer than keygate allows", s->path,
                              out->id[0] != '\0' ? out->id : "?");
    }
    out->platform_admin = sqlite3_column_int(stmt, UCOL_PLATFORM_ADMIN) != 0;
    out->created_at = kg_sq_col_int_or(stmt, UCOL_CREATED_AT, 0);
    out->disabled_at = kg_sq_col_int_or(stmt, UCOL_DISABLED_AT, 0);
    out->has_quota = sqlite3_column_type(stmt, UCOL_QUOTA_LIMIT) == SQLITE_INTEGER;
    out->quota_limit = out->has_quota ? sqlite3_column_int64(stmt, UCOL_QUOTA_LIMIT) : 0;
    return KG_OK;
}

/* The unique fields of rec that another user (not rec->id) already holds:
 * KG_ECONFLICT naming the field, KG_OK when none. The e-mail itself is
 * never echoed: a signup error must not confirm whose address it is. */
static enum kg_status
check_unique(struct sqlite_store *s, const struct kg_user_rec *rec, struct kg_err *err)
{
    enum kg_status rc;
    bool found = false;

    rc = exists(s, "SELECT 1 FROM users WHERE tenant = ?1 AND username = ?2 AND id <> ?3",
                rec->tenant, rec->username, rec->id, &found, "check user", err);
    if (rc != KG_OK)
        return rc;
    if (found)
        return kg_err_set(err, KG_ECONFLICT, "user %s already exists in tenant %.64s",
                          rec->username, rec->tenant);
    if (rec->email[0] == '\0')
        return KG_OK;
    rc = exists(s, "SELECT 1 FROM users WHERE email = ?1 AND id <> ?2", rec->email, rec->id, NULL,
                &found, "check user", err);
    if (rc != KG_OK)
        return rc;
    if (found)
        return kg_err_set(err, KG_ECONFLICT, "email is already in use");
    return KG_OK;
}

/* Binds rec to ?1..?14 in USER_COLUMNS order. */
static bool
bind_user(sqlite3_stmt *stmt, const struct kg_user_rec *rec)
{
    int rcs[] = {
        sqlite3_bind_text(stmt, UCOL_ID + 1, rec->id, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, UCOL_TENANT + 1, rec->tenant, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, UCOL_USERNAME + 1, rec->username, -1, SQLITE_STATIC),
        kg_sq_bind_text_or_null(stmt, UCOL_EMAIL + 1, rec->email),
        sqlite3_bind_text(stmt, UCOL_FIRST_NAME + 1, rec->first_name, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, UCOL_LAST_NAME + 1, rec->last_name, -1, SQLITE_STATIC),
        kg_sq_bind_text_or_null(stmt, UCOL_PASSWORD_HASH + 1, rec->password_hash),
        sqlite3_bind_text(stmt, UCOL_ROLE + 1, rec->role, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, UCOL_TIER + 1, rec->tier, -1, SQLITE_STATIC),
        sqlite3_bind_int(stmt, UCOL_PLATFORM_ADMIN + 1, rec->platform_admin ? 1 : 0),
        sqlite3_bind_int64(stmt, UCOL_CREATED_AT + 1, rec->created_at),
        kg_sq_bind_int_or_null(stmt, UCOL_DISABLED_AT + 1, rec->disabled_at, 0),
        rec->has_quota ? sqlite3_bind_int64(stmt, UCOL_QUOTA_LIMIT + 1, rec->quota_limit)
                       : sqlite3_bind_null(stmt, UCOL_QUOTA_LIMIT + 1),
        sqlite3_bind_text(stmt, UCOL_QUOTA_PERIOD + 1, rec->quota_period, -1, SQLITE_STATIC),
    };

    for (size_t i = 0; i < sizeof(rcs) / sizeof(rcs[0]); i++) {
        if (rcs[i] != SQLITE_OK)
            return false;
    }
    return true;
}

static enum kg_status
user_insert_locked(struct sqlite_store *s, const struct kg_user_rec *rec, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    bool found = false;

    rc = exists(s, "SELECT 1 FROM tenants WHERE name = ?1", rec->tenant, NULL, NULL, &found,
                "insert user", err);
    if (rc != KG_OK)
        return rc;
    if (!found)
        return kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", rec->tenant);
    rc = exists(s, "SELECT 1 FROM users WHERE id = ?1", rec->id, NULL, NULL, &found, "insert user",
                err);
    if (rc != KG_OK)
        return rc;
    if (found)
        return kg_err_set(err, KG_ECONFLICT, "user %s already exists", rec->id);
    rc = check_unique(s, rec, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s,
                       "INSERT INTO users (" USER_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                       " ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                       &stmt, "insert user", err);
    if (rc == KG_OK && (!bind_user(stmt, rec) || sqlite3_step(stmt) != SQLITE_DONE))
        rc = kg_sq_fail(s, "insert user", err);
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_user_insert(struct kg_store *st, const struct kg_user_rec *rec,
                  const struct kg_key_rec *first_key, const struct kg_audit_entry *audit,
                  struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc = kg_sq_begin(s, err);

    if (rc != KG_OK)
        return rc;
    rc = user_insert_locked(s, rec, err);
    if (rc == KG_OK && first_key != NULL)
        rc = kg_sq_key_insert_locked(s, first_key, rec->id, rec->tenant, err);
    return kg_sq_finish(s, rc, audit, err);
}

enum kg_status
kg_sq_user_lookup(struct kg_store *st, const char *by, const char *tenant, const char *value,
                  struct kg_user_rec *out, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    const char *sql;
    enum kg_status rc;
    bool found = false;
    int brc;

    if (strcmp(by, "username") == 0)
        sql = "SELECT " USER_COLUMNS " FROM users WHERE tenant = ?2 AND username = ?1";
    else if (strcmp(by, "email") == 0)
        sql = "SELECT " USER_COLUMNS " FROM users WHERE email = ?1";
    else if (strcmp(by, "username_any") == 0)
        sql = "SELECT " USER_COLUMNS " FROM users WHERE username = ?1"
              " AND (SELECT count(*) FROM users WHERE username = ?1) = 1";
    else
        sql = "SELECT " USER_COLUMNS " FROM users WHERE id = ?1";
    rc = kg_sq_prepare(s, sql, &stmt, "get user", err);
    if (rc != KG_OK)
        goto cleanup;
    brc = sqlite3_bind_text(stmt, 1, value, -1, SQLITE_STATIC);
    if (brc == SQLITE_OK && tenant != NULL)
        brc = sqlite3_bind_text(stmt, 2, tenant, -1, SQLITE_STATIC);
    if (brc != SQLITE_OK) {
        rc = kg_sq_fail(s, "get user", err);
        goto cleanup;
    }
    rc = step_one(s, stmt, &found, "get user", err);
    if (rc != KG_OK)
        goto cleanup;
    if (found)
        rc = row_to_user(s, stmt, out, err);
    else if (strcmp(by, "email") == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "no user with that email");
    else
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %.128s", value);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

#define USER_OLD_START KG_SQ_PERIOD_START("?2", "?4")
#define USER_NEW_START KG_SQ_PERIOD_START("?3", "?4")

/* The user's refill period moves from old to rec's (or a start of 0 under
 * a refill is moved), inside the update's transaction; the same rule as a
 * key's (see sqlite_key_update in store_sqlite.c): what the old period
 * counts now stays used in the current period of the new one, the rest is
 * history, and the start is the later of the two current starts. A user
 * without a row gets one, so that a flush of charges made before the
 * daemon reloads adds to it from the new start. */
static enum kg_status
move_credits_period(struct sqlite_store *s, const char *old, const struct kg_user_rec *rec,
                    const struct kg_audit_entry *audit, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_prepare(s,
                       "INSERT INTO user_usage (user_id, credits_used, credits_period_start,"
                       " tier_used, tier_period_start, updated_at)"
                       " VALUES (?1, 0, MAX(" USER_OLD_START ", " USER_NEW_START "), 0, 0, ?4)"
                       " ON CONFLICT (user_id) DO UPDATE SET"
                       " credits_used = CASE WHEN credits_period_start < " USER_OLD_START
                       "  THEN 0 ELSE credits_used END,"
                       " credits_period_start = MAX(" USER_OLD_START ", " USER_NEW_START ")"
                       " WHERE ?2 <> ?3 OR (credits_period_start = 0 AND ?3 <> '')",
                       &stmt, "update user", err);
    if (rc != KG_OK)
        return rc;
    if (sqlite3_bind_text(stmt, 1, rec->id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, old, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 3, rec->quota_period, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 4, audit != NULL ? audit->time : kg_time_now()) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "update user", err);
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_user_update(struct kg_store *st, const struct kg_user_rec *rec,
                  const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    struct kg_user_rec cur;
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc = kg_sq_begin(s, err);
    bool found = false;

    if (rc != KG_OK)
        return rc;
    /* The tenant of the stored user, not the caller's copy, decides what
     * "unique within the tenant" means. */
    rc = kg_sq_prepare(s, "SELECT " USER_COLUMNS " FROM users WHERE id = ?1", &stmt, "update user",
                       err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, rec->id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "update user", err);
        goto cleanup;
    }
    rc = step_one(s, stmt, &found, "update user", err);
    if (rc == KG_OK && !found)
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", rec->id);
    if (rc == KG_OK)
        rc = row_to_user(s, stmt, &cur, err);
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (rc != KG_OK)
        goto cleanup;
    memcpy(cur.username, rec->username, sizeof(cur.username));
    memcpy(cur.email, rec->email, sizeof(cur.email));
    rc = check_unique(s, &cur, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_sq_prepare(s,
                       "UPDATE users SET username = ?3, email = ?4, first_name = ?5,"
                       " last_name = ?6, password_hash = ?7, role = ?8, tier = ?9,"
                       " platform_admin = ?10, disabled_at = ?12, quota_limit = ?13,"
                       " quota_period = ?14 WHERE id = ?1",
                       &stmt, "update user", err);
    if (rc != KG_OK)
        goto cleanup;
    /* ?2 and ?11 (tenant, created_at) are bound but unused: one binder for
     * insert and update keeps the column order in one place. */
    if (!bind_user(stmt, rec) || sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "update user", err);
    if (rc == KG_OK &&
        (strcmp(cur.quota_period, rec->quota_period) != 0 || rec->quota_period[0] != '\0')) {
        sqlite3_finalize(stmt);
        stmt = NULL;
        rc = move_credits_period(s, cur.quota_period, rec, audit, err);
    }

cleanup:
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, audit, err);
}

enum kg_status
kg_sq_user_list(struct kg_store *st, const char *tenant, const struct kg_cursor *after,
                size_t limit, kg_store_user_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    struct kg_user_rec *rec = NULL;
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    size_t n = 0;
    int step;

    rec = malloc(sizeof(*rec));
    if (rec == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: list users: out of memory", s->path);
    rc = kg_sq_prepare(s,
                       "SELECT " USER_COLUMNS " FROM users WHERE (?1 IS NULL OR tenant = ?1)"
                       " AND (?2 IS NULL OR created_at > ?2 OR (created_at = ?2 AND id > ?3))"
                       " ORDER BY created_at, id LIMIT ?4",
                       &stmt, "list users", err);
    if (rc != KG_OK)
        goto cleanup;
    if (kg_sq_bind_opt_text(stmt, 1, tenant) != SQLITE_OK ||
        kg_sq_bind_cursor(stmt, 2, after) != SQLITE_OK ||
        kg_sq_bind_limit(stmt, 4, limit) != SQLITE_OK) {
        rc = kg_sq_fail(s, "list users", err);
        goto cleanup;
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (limit > 0 && n == limit) {
            if (next != NULL)
                kg_store_cursor_format(rec->created_at, rec->id, next);
            goto cleanup;
        }
        rc = row_to_user(s, stmt, rec, err);
        if (rc != KG_OK)
            goto cleanup;
        n++;
        if (!cb(rec, ctx)) {
            if (next != NULL && limit > 0)
                kg_store_cursor_format(rec->created_at, rec->id, next);
            goto cleanup;
        }
    }
    if (step != SQLITE_DONE)
        rc = kg_sq_fail(s, "list users", err);

cleanup:
    sqlite3_finalize(stmt);
    free(rec);
    return rc;
}

enum kg_status
kg_sq_default_owner_locked(struct sqlite_store *s, const char *tenant, int64_t now,
                           char user_id[KG_ID_MAX], struct kg_err *err)
{
    static const char *const steps[] = {
        "INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?1, ?2)",
        /* The same id shape as migration 002's: SQL makes it, so the store
         * needs nothing from auth/ to invent an owner. */
        "INSERT OR IGNORE INTO users (id, tenant, username, role, created_at)"
        " VALUES ('usr_' || lower(hex(randomblob(11))), ?1, 'default', '*', ?2)",
    };
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc = KG_OK;
    bool found = false;

    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]) && rc == KG_OK; i++) {
        rc = kg_sq_prepare(s, steps[i], &stmt, "create default owner", err);
        if (rc == KG_OK && (sqlite3_bind_text(stmt, 1, tenant, -1, SQLITE_STATIC) != SQLITE_OK ||
                            sqlite3_bind_int64(stmt, 2, now > 0 ? now : 1) != SQLITE_OK ||
                            sqlite3_step(stmt) != SQLITE_DONE))
            rc = kg_sq_fail(s, "create default owner", err);
        sqlite3_finalize(stmt);
        stmt = NULL;
    }
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s, "SELECT id FROM users WHERE tenant = ?1 AND username = 'default'", &stmt,
                       "find default owner", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, tenant, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "find default owner", err);
        goto cleanup;
    }
    rc = step_one(s, stmt, &found, "find default owner", err);
    if (rc == KG_OK && (!found || !kg_sq_col_text(stmt, 0, user_id, KG_ID_MAX)))
        rc = kg_err_set(err, KG_ECORRUPT, "%s: tenant %.64s has no usable default user", s->path,
                        tenant);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}
