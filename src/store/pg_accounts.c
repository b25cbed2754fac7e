/* store/pg_accounts.c - tenants and users in the PostgreSQL backend (the
 * twin of sqlite_accounts.c): inserts that say which unique field clashed,
 * lookups by id, by tenant and username and by e-mail, whole-record
 * updates and paged listings. A check another instance could race is
 * backed by a unique constraint, whose violation is KG_ECONFLICT too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "store/pg_int.h"

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

/* Whether sql with a, b and c ($1..$3; b and c may be NULL: not bound)
 * returns a row. */
static enum kg_status
exists(struct pg_store *s, const char *sql, const char *a, const char *b, const char *c,
       bool *found, const char *what, struct kg_err *err)
{
    struct kg_pg_args args;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&args);
    kg_pg_arg_text(&args, a);
    if (b != NULL)
        kg_pg_arg_text(&args, b);
    if (c != NULL)
        kg_pg_arg_text(&args, c);
    rc = kg_pg_query(s, sql, &args, &res, what, err);
    if (rc == KG_OK)
        *found = PQntuples(res) > 0;
    PQclear(res);
    return rc;
}

/* ---- tenants ---- */

static enum kg_status
row_to_tenant(struct pg_store *s, PGresult *res, int row, struct kg_tenant_rec *out,
              struct kg_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!kg_pg_col_text(res, row, 0, out->name, sizeof(out->name)) ||
        !kg_pg_col_text(res, row, 1, out->display_name, sizeof(out->display_name)))
        return kg_err_set(err, KG_ECORRUPT, "%s: a tenant field is longer than keygate allows",
                          s->where);
    out->created_at = kg_pg_col_int_or(res, row, 2, 0);
    out->disabled_at = kg_pg_col_int_or(res, row, 3, 0);
    return KG_OK;
}

enum kg_status
kg_pg_tenant_insert(struct kg_store *st, const struct kg_tenant_rec *rec,
                    const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    enum kg_status rc;
    bool found = false;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = exists(s, "SELECT 1 FROM tenants WHERE name = $1::text", rec->name, NULL, NULL, &found,
                "insert tenant", err);
    if (rc == KG_OK && found)
        rc = kg_err_set(err, KG_ECONFLICT, "tenant %s already exists", rec->name);
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, rec->name);
        kg_pg_arg_text(&a, rec->display_name);
        kg_pg_arg_int(&a, rec->created_at);
        kg_pg_arg_int_or_null(&a, rec->disabled_at, 0);
        rc = kg_pg_query(s,
                         "INSERT INTO tenants (" TENANT_COLUMNS ")"
                         " VALUES ($1::text, $2::text, $3::bigint, $4::bigint)",
                         &a, NULL, "insert tenant", err);
        if (rc == KG_ECONFLICT)
            rc = kg_err_set(err, KG_ECONFLICT, "tenant %s already exists", rec->name);
    }
    return kg_pg_finish(s, rc, audit, err);
}

enum kg_status
kg_pg_tenant_get(struct kg_store *st, const char *name, struct kg_tenant_rec *out,
                 struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, name);
    rc = kg_pg_query(s, "SELECT " TENANT_COLUMNS " FROM tenants WHERE name = $1::text", &a, &res,
                     "get tenant", err);
    if (rc != KG_OK)
        return rc;
    rc = PQntuples(res) > 0 ? row_to_tenant(s, res, 0, out, err)
                            : kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", name);
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_tenant_update(struct kg_store *st, const struct kg_tenant_rec *rec,
                    const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc = kg_pg_begin(s, err);

    if (rc != KG_OK)
        return rc;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, rec->name);
    kg_pg_arg_text(&a, rec->display_name);
    kg_pg_arg_int_or_null(&a, rec->disabled_at, 0);
    rc = kg_pg_query(s,
                     "UPDATE tenants SET display_name = $2::text, disabled_at = $3::bigint"
                     " WHERE name = $1::text",
                     &a, &res, "update tenant", err);
    if (rc == KG_OK && kg_pg_affected(res) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", rec->name);
    PQclear(res);
    return kg_pg_finish(s, rc, audit, err);
}

enum kg_status
kg_pg_tenant_list(struct kg_store *st, const char *only, const struct kg_cursor *after,
                  size_t limit, kg_store_tenant_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_tenant_rec rec;
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, only);
    kg_pg_arg_cursor(&a, after);
    kg_pg_arg_limit(&a, limit);
    rc = kg_pg_query(s,
                     "SELECT " TENANT_COLUMNS " FROM tenants"
                     " WHERE ($1::text IS NULL OR name = $1::text)"
                     " AND ($2::bigint IS NULL OR created_at > $2::bigint"
                     "      OR (created_at = $2::bigint AND name > $3::text))"
                     " ORDER BY created_at, name LIMIT $4::bigint",
                     &a, &res, "list tenants", err);
    if (rc != KG_OK)
        return rc;
    for (int r = 0; r < PQntuples(res); r++) {
        if (limit > 0 && (size_t)r == limit) {
            if (next != NULL)
                kg_store_cursor_format(rec.created_at, rec.name, next);
            break;
        }
        rc = row_to_tenant(s, res, r, &rec, err);
        if (rc != KG_OK)
            break;
        if (!cb(&rec, ctx)) {
            if (next != NULL && limit > 0)
                kg_store_cursor_format(rec.created_at, rec.name, next);
            break;
        }
    }
    PQclear(res);
    return rc;
}

/* ---- users ---- */

static enum kg_status
row_to_user(struct pg_store *s, PGresult *res, int row, struct kg_user_rec *out, struct kg_err *err)
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
        if (!kg_pg_col_text(res, row, (int)texts[i].col, texts[i].dst, texts[i].cap))
            return kg_err_set(err, KG_ECORRUPT,
                              "%s: user %s: a field is longer than keygate allows", s->where,
                              out->id[0] != '\0' ? out->id : "?");
    }
    out->platform_admin = kg_pg_col_bool(res, row, UCOL_PLATFORM_ADMIN);
    out->created_at = kg_pg_col_int_or(res, row, UCOL_CREATED_AT, 0);
    out->disabled_at = kg_pg_col_int_or(res, row, UCOL_DISABLED_AT, 0);
    out->has_quota = !kg_pg_col_null(res, row, UCOL_QUOTA_LIMIT);
    out->quota_limit = kg_pg_col_int_or(res, row, UCOL_QUOTA_LIMIT, 0);
    return KG_OK;
}

/* The unique fields of rec another user already holds (see
 * sqlite_accounts.c); the e-mail is never echoed. */
static enum kg_status
check_unique(struct pg_store *s, const struct kg_user_rec *rec, struct kg_err *err)
{
    enum kg_status rc;
    bool found = false;

    rc = exists(s,
                "SELECT 1 FROM users WHERE tenant = $1::text AND username = $2::text"
                " AND id <> $3::text",
                rec->tenant, rec->username, rec->id, &found, "check user", err);
    if (rc != KG_OK)
        return rc;
    if (found)
        return kg_err_set(err, KG_ECONFLICT, "user %s already exists in tenant %.64s",
                          rec->username, rec->tenant);
    if (rec->email[0] == '\0')
        return KG_OK;
    rc = exists(s, "SELECT 1 FROM users WHERE email = $1::text AND id <> $2::text", rec->email,
                rec->id, NULL, &found, "check user", err);
    if (rc != KG_OK)
        return rc;
    if (found)
        return kg_err_set(err, KG_ECONFLICT, "email is already in use");
    return KG_OK;
}

/* Binds rec as $1..$14 in USER_COLUMNS order. */
static void
bind_user(struct kg_pg_args *a, const struct kg_user_rec *rec)
{
    kg_pg_args_init(a);
    kg_pg_arg_text(a, rec->id);
    kg_pg_arg_text(a, rec->tenant);
    kg_pg_arg_text(a, rec->username);
    kg_pg_arg_text_or_null(a, rec->email);
    kg_pg_arg_text(a, rec->first_name);
    kg_pg_arg_text(a, rec->last_name);
    kg_pg_arg_text_or_null(a, rec->password_hash);
    kg_pg_arg_text(a, rec->role);
    kg_pg_arg_text(a, rec->tier);
    kg_pg_arg_bool(a, rec->platform_admin);
    kg_pg_arg_int(a, rec->created_at);
    kg_pg_arg_int_or_null(a, rec->disabled_at, 0);
    if (rec->has_quota)
        kg_pg_arg_int(a, rec->quota_limit);
    else
        kg_pg_arg_text(a, NULL);
    kg_pg_arg_text(a, rec->quota_period);
}

static enum kg_status
user_insert_locked(struct pg_store *s, const struct kg_user_rec *rec, struct kg_err *err)
{
    struct kg_pg_args a;
    enum kg_status rc;
    bool found = false;

    /* FOR SHARE: the tenant cannot vanish (it never does) nor be renamed
     * under the insert. */
    rc = exists(s, "SELECT 1 FROM tenants WHERE name = $1::text FOR SHARE", rec->tenant, NULL, NULL,
                &found, "insert user", err);
    if (rc != KG_OK)
        return rc;
    if (!found)
        return kg_err_set(err, KG_ENOTFOUND, "no tenant %.64s", rec->tenant);
    rc = exists(s, "SELECT 1 FROM users WHERE id = $1::text", rec->id, NULL, NULL, &found,
                "insert user", err);
    if (rc != KG_OK)
        return rc;
    if (found)
        return kg_err_set(err, KG_ECONFLICT, "user %s already exists", rec->id);
    rc = check_unique(s, rec, err);
    if (rc != KG_OK)
        return rc;
    bind_user(&a, rec);
    return kg_pg_query(s,
                       "INSERT INTO users (" USER_COLUMNS ") VALUES ($1::text, $2::text,"
                       " $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text,"
                       " $10::boolean, $11::bigint, $12::bigint, $13::bigint, $14::text)",
                       &a, NULL, "insert user", err);
}

enum kg_status
kg_pg_user_insert(struct kg_store *st, const struct kg_user_rec *rec,
                  const struct kg_key_rec *first_key, const struct kg_audit_entry *audit,
                  struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    enum kg_status rc = kg_pg_begin(s, err);

    if (rc != KG_OK)
        return rc;
    rc = user_insert_locked(s, rec, err);
    if (rc == KG_OK && first_key != NULL)
        rc = kg_pg_key_insert_locked(s, first_key, rec->id, rec->tenant, err);
    return kg_pg_finish(s, rc, audit, err);
}

enum kg_status
kg_pg_user_lookup(struct kg_store *st, const char *by, const char *tenant, const char *value,
                  struct kg_user_rec *out, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    const char *sql;
    enum kg_status rc;

    if (strcmp(by, "username") == 0)
        sql = "SELECT " USER_COLUMNS " FROM users WHERE tenant = $2::text AND username = $1::text";
    else if (strcmp(by, "email") == 0)
        sql = "SELECT " USER_COLUMNS " FROM users WHERE email = $1::text";
    else if (strcmp(by, "username_any") == 0) /* signing in by a name unique across tenants */
        sql = "SELECT " USER_COLUMNS " FROM users WHERE username = $1::text"
              " AND (SELECT count(*) FROM users WHERE username = $1::text) = 1";
    else
        sql = "SELECT " USER_COLUMNS " FROM users WHERE id = $1::text";
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, value);
    if (tenant != NULL)
        kg_pg_arg_text(&a, tenant);
    rc = kg_pg_query(s, sql, &a, &res, "get user", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) > 0)
        rc = row_to_user(s, res, 0, out, err);
    else if (strcmp(by, "email") == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "no user with that email");
    else
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %.128s", value);
    PQclear(res);
    return rc;
}

#define USER_OLD_START KG_PG_PERIOD_START("$2::text", "$4::bigint")
#define USER_NEW_START KG_PG_PERIOD_START("$3::text", "$4::bigint")

/* The user's refill period moves (sqlite_accounts.c, move_credits_period). */
static enum kg_status
move_credits_period(struct pg_store *s, const char *old, const struct kg_user_rec *rec,
                    const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct kg_pg_args a;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, rec->id);
    kg_pg_arg_text(&a, old);
    kg_pg_arg_text(&a, rec->quota_period);
    kg_pg_arg_int(&a, audit != NULL ? audit->time : kg_time_now());
    return kg_pg_query(s,
                       "INSERT INTO user_usage AS uu (user_id, credits_used, credits_period_start,"
                       " tier_used, tier_period_start, updated_at)"
                       " VALUES ($1::text, 0, GREATEST(" USER_OLD_START ", " USER_NEW_START "),"
                       " 0, 0, $4::bigint)"
                       " ON CONFLICT (user_id) DO UPDATE SET"
                       " credits_used = CASE WHEN uu.credits_period_start < " USER_OLD_START
                       "  THEN 0 ELSE uu.credits_used END,"
                       " credits_period_start = GREATEST(" USER_OLD_START ", " USER_NEW_START ")"
                       " WHERE $2::text <> $3::text OR (uu.credits_period_start = 0"
                       " AND $3::text <> '')",
                       &a, NULL, "update user", err);
}

enum kg_status
kg_pg_user_update(struct kg_store *st, const struct kg_user_rec *rec,
                  const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_user_rec cur;
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc = kg_pg_begin(s, err);

    if (rc != KG_OK)
        return rc;
    /* Locked: the stored tenant decides what "unique within the tenant"
     * means, and two instances updating one user take turns. */
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, rec->id);
    rc = kg_pg_query(s, "SELECT " USER_COLUMNS " FROM users WHERE id = $1::text FOR UPDATE", &a,
                     &res, "update user", err);
    if (rc == KG_OK && PQntuples(res) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", rec->id);
    if (rc == KG_OK)
        rc = row_to_user(s, res, 0, &cur, err);
    PQclear(res);
    res = NULL;
    if (rc != KG_OK)
        goto cleanup;
    memcpy(cur.username, rec->username, sizeof(cur.username));
    memcpy(cur.email, rec->email, sizeof(cur.email));
    rc = check_unique(s, &cur, err);
    if (rc != KG_OK)
        goto cleanup;
    bind_user(&a, rec);
    /* $2 and $11 (tenant, created_at) are bound but unused, as in SQLite;
     * PostgreSQL wants a type for them all the same. */
    rc = kg_pg_query(s,
                     "UPDATE users SET username = $3::text, email = $4::text,"
                     " first_name = $5::text, last_name = $6::text, password_hash = $7::text,"
                     " role = $8::text, tier = $9::text, platform_admin = $10::boolean,"
                     " disabled_at = $12::bigint, quota_limit = $13::bigint,"
                     " quota_period = $14::text"
                     " WHERE id = $1::text AND $2::text IS NOT DISTINCT FROM $2::text"
                     " AND $11::bigint IS NOT DISTINCT FROM $11::bigint",
                     &a, NULL, "update user", err);
    if (rc == KG_OK &&
        (strcmp(cur.quota_period, rec->quota_period) != 0 || rec->quota_period[0] != '\0'))
        rc = move_credits_period(s, cur.quota_period, rec, audit, err);

cleanup:
    return kg_pg_finish(s, rc, audit, err);
}

enum kg_status
kg_pg_user_list(struct kg_store *st, const char *tenant, const struct kg_cursor *after,
                size_t limit, kg_store_user_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_user_rec *rec = NULL;
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    rec = malloc(sizeof(*rec));
    if (rec == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: list users: out of memory", s->where);
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, tenant);
    kg_pg_arg_cursor(&a, after);
    kg_pg_arg_limit(&a, limit);
    rc = kg_pg_query(s,
                     "SELECT " USER_COLUMNS " FROM users"
                     " WHERE ($1::text IS NULL OR tenant = $1::text)"
                     " AND ($2::bigint IS NULL OR created_at > $2::bigint"
                     "      OR (created_at = $2::bigint AND id > $3::text))"
                     " ORDER BY created_at, id LIMIT $4::bigint",
                     &a, &res, "list users", err);
    for (int r = 0; rc == KG_OK && r < PQntuples(res); r++) {
        if (limit > 0 && (size_t)r == limit) {
            if (next != NULL)
                kg_store_cursor_format(rec->created_at, rec->id, next);
            break;
        }
        rc = row_to_user(s, res, r, rec, err);
        if (rc != KG_OK)
            break;
        if (!cb(rec, ctx)) {
            if (next != NULL && limit > 0)
                kg_store_cursor_format(rec->created_at, rec->id, next);
            break;
        }
    }
    PQclear(res);
    free(rec);
    return rc;
}

enum kg_status
kg_pg_default_owner_locked(struct pg_store *s, const char *tenant, int64_t now,
                           char user_id[KG_ID_MAX], struct kg_err *err)
{
    static const char *const steps[] = {
        "INSERT INTO tenants (name, created_at) VALUES ($1::text, $2::bigint)"
        " ON CONFLICT DO NOTHING",
        /* The id shape of the SQLite migration's: "usr_" and 22 lower-case
         * hex characters, made by SQL so the store needs nothing from auth/. */
        "INSERT INTO users (id, tenant, username, role, created_at)"
        " VALUES ('usr_' || substr(md5(random()::text || clock_timestamp()::text), 1, 22),"
        " $1::text, 'default', '*', $2::bigint) ON CONFLICT DO NOTHING",
    };
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc = KG_OK;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, tenant);
    kg_pg_arg_int(&a, now > 0 ? now : 1);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]) && rc == KG_OK; i++)
        rc = kg_pg_query(s, steps[i], &a, NULL, "create default owner", err);
    if (rc != KG_OK)
        return rc;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, tenant);
    rc = kg_pg_query(s, "SELECT id FROM users WHERE tenant = $1::text AND username = 'default'", &a,
                     &res, "find default owner", err);
    if (rc == KG_OK && (PQntuples(res) == 0 || !kg_pg_col_text(res, 0, 0, user_id, KG_ID_MAX)))
        rc = kg_err_set(err, KG_ECORRUPT, "%s: tenant %.64s has no usable default user", s->where,
                        tenant);
    PQclear(res);
    return rc;
}
