/* store/store_pg.c - the PostgreSQL backend of the store (see store_int.h
 * and pg_int.h): the connection and the keys table.
 *
 * Chosen by a database location that is a libpq URI (postgres://,
 * postgresql://). Several keygate instances share one database: what
 * SQLite's single writer gives for free is made explicit here, with rows
 * read FOR UPDATE before a decision (revocation, rotation) and unique
 * constraints as the last word on duplicates. The helpers every file of the
 * backend shares are in pg_common.c; tenants and users live in
 * pg_accounts.c, the audit trail in pg_audit.c, usage in pg_usage.c, the
 * change log in pg_changes.c, schema versions in pg_migrate.c. Arguments
 * were checked by store.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "store/pg_int.h"

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

#define KEY_VALUES                                                                                 \
    "$1::text, $2::text, $3::text, $4::text, $5::bytea, $6::text, $7::text, $8::bigint,"           \
    " $9::bigint, $10::bigint, $11::bigint, $12::text, $13::text, $14::bigint, $15::bigint,"       \
    " $16::text, $17::bigint, $18::text, $19::text, $20::bigint, $21::boolean, $22::text"

static enum kg_status
row_to_rec(struct pg_store *s, PGresult *res, int row, struct kg_key_rec *rec, struct kg_err *err)
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

    memset(rec, 0, sizeof(*rec));
    if (!kg_pg_col_text(res, row, COL_ID, rec->id, sizeof(rec->id)))
        return kg_err_set(err, KG_ECORRUPT, "%s: a key id is longer than keygate allows", s->where);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (!kg_pg_col_text(res, row, (int)texts[i].col, texts[i].dst, texts[i].cap))
            return kg_err_set(err, KG_ECORRUPT, "%s: key %s: %s is longer than keygate allows",
                              s->where, rec->id, texts[i].name);
    }
    if (!kg_pg_col_bytes(res, row, COL_DIGEST, rec->digest, KG_DIGEST_BYTES))
        return kg_err_set(err, KG_ECORRUPT, "%s: key %s: digest is not %d bytes", s->where, rec->id,
                          KG_DIGEST_BYTES);
    rec->created_at = kg_pg_col_int_or(res, row, COL_CREATED_AT, 0);
    rec->expires_at = kg_pg_col_int_or(res, row, COL_EXPIRES_AT, 0);
    rec->revoked_at = kg_pg_col_int_or(res, row, COL_REVOKED_AT, 0);
    rec->last_used_at = kg_pg_col_int_or(res, row, COL_LAST_USED_AT, 0);
    rec->rate_burst = kg_pg_col_int_or(res, row, COL_RATE_BURST, 0);
    rec->quota_limit = kg_pg_col_int_or(res, row, COL_QUOTA_LIMIT, -1);
    rec->quota_used = kg_pg_col_int_or(res, row, COL_QUOTA_USED, 0);
    rec->quota_period_start = kg_pg_col_int_or(res, row, COL_QUOTA_PERIOD_START, 0);
    rec->canary = kg_pg_col_bool(res, row, COL_CANARY);
    return KG_OK;
}

/* Binds rec as $1..$22 in KEY_COLUMNS order, with the owner decided by the
 * caller. */
static void
bind_rec(struct kg_pg_args *a, const struct kg_key_rec *rec, const char *user_id,
         const char *tenant)
{
    kg_pg_args_init(a);
    kg_pg_arg_text(a, rec->id);
    kg_pg_arg_text(a, rec->name);
    kg_pg_arg_text(a, rec->prefix);
    kg_pg_arg_text(a, rec->last4);
    kg_pg_arg_bytes(a, rec->digest, KG_DIGEST_BYTES);
    kg_pg_arg_text(a, rec->scopes);
    kg_pg_arg_text(a, tenant);
    kg_pg_arg_int(a, rec->created_at);
    kg_pg_arg_int_or_null(a, rec->expires_at, 0);
    kg_pg_arg_int_or_null(a, rec->revoked_at, 0);
    kg_pg_arg_int_or_null(a, rec->last_used_at, 0);
    kg_pg_arg_text_or_null(a, rec->rotated_to);
    kg_pg_arg_text_or_null(a, rec->rate);
    kg_pg_arg_int_or_null(a, rec->rate_burst, 0);
    kg_pg_arg_int_or_null(a, rec->quota_limit, -1);
    kg_pg_arg_text_or_null(a, rec->quota_period);
    kg_pg_arg_int(a, rec->quota_used);
    /* Empty metadata means what the column default says. */
    kg_pg_arg_text(a, rec->metadata[0] != '\0' ? rec->metadata : "{}");
    kg_pg_arg_text(a, user_id);
    kg_pg_arg_int(a, rec->quota_period_start);
    kg_pg_arg_bool(a, rec->canary);
    kg_pg_arg_text_or_null(a, rec->allowed_ips);
}

/* The tenant of user id, inside the caller's transaction. */
static enum kg_status
owner_tenant(struct pg_store *s, const char *id, char tenant[KG_NAME_MAX], struct kg_err *err)
{
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, id);
    rc = kg_pg_query(s, "SELECT tenant FROM users WHERE id = $1::text", &a, &res, "read user", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", id);
    else if (!kg_pg_col_text(res, 0, 0, tenant, KG_NAME_MAX))
        rc = kg_err_set(err, KG_ECORRUPT, "%s: user %s: tenant is longer than keygate allows",
                        s->where, id);
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_key_insert_locked(struct pg_store *s, const struct kg_key_rec *rec, const char *user_id,
                        const char *tenant, struct kg_err *err)
{
    char owner_id[KG_ID_MAX];
    char owner_tenant_buf[KG_NAME_MAX];
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;
    char what[80];

    snprintf(what, sizeof(what), "insert key %s", rec->id);
    if (user_id == NULL && rec->user_id[0] != '\0') {
        rc = owner_tenant(s, rec->user_id, owner_tenant_buf, err);
        if (rc != KG_OK)
            return rc;
        user_id = rec->user_id;
        tenant = owner_tenant_buf;
    } else if (user_id == NULL) {
        tenant = rec->tenant[0] != '\0' ? rec->tenant : KG_TENANT_DEFAULT;
        rc = kg_pg_default_owner_locked(s, tenant, rec->created_at, owner_id, err);
        if (rc != KG_OK)
            return rc;
        user_id = owner_id;
    }
    /* Looked up first so the answer can say which of id and digest clashed;
     * the UNIQUE constraints stay the last word (another instance may
     * insert between the two statements). */
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, rec->id);
    kg_pg_arg_bytes(&a, rec->digest, KG_DIGEST_BYTES);
    rc = kg_pg_query(s, "SELECT id FROM keys WHERE id = $1::text OR digest = $2::bytea LIMIT 1", &a,
                     &res, what, err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) > 0) {
        const char *other = PQgetvalue(res, 0, 0);

        if (strcmp(other, rec->id) == 0)
            rc = kg_err_set(err, KG_ECONFLICT, "key %s already exists", rec->id);
        else
            rc = kg_err_set(err, KG_ECONFLICT, "key %s has the same digest as key %.39s", rec->id,
                            other);
        PQclear(res);
        return rc;
    }
    PQclear(res);
    bind_rec(&a, rec, user_id, tenant);
    return kg_pg_query(s, "INSERT INTO keys (" KEY_COLUMNS ") VALUES (" KEY_VALUES ")", &a, NULL,
                       what, err);
}

static enum kg_status
pg_key_add(struct kg_store *st, const struct kg_key_rec *rec, const struct kg_audit_entry *audit,
           struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_pg_key_insert_locked(s, rec, NULL, NULL, err);
    return kg_pg_finish(s, rc, audit, err);
}

/* The seeding path: one transaction, each owner resolved once for a run of
 * records with the same one, duplicates left to the UNIQUE constraints. */
static enum kg_status
pg_key_add_batch(struct kg_store *st, const struct kg_key_rec *recs, size_t n, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    char user_id[KG_ID_MAX] = "", tenant[KG_NAME_MAX] = "";
    const struct kg_key_rec *prev = NULL;
    struct kg_pg_args a;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
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
                rc = kg_pg_default_owner_locked(s, tenant, rec->created_at, user_id, err);
            }
            if (rc != KG_OK)
                break;
            prev = rec;
        }
        bind_rec(&a, rec, user_id, tenant);
        rc = kg_pg_query(s, "INSERT INTO keys (" KEY_COLUMNS ") VALUES (" KEY_VALUES ")", &a, NULL,
                         "insert keys", err);
    }
    if (rc != KG_OK) {
        kg_pg_rollback(s);
        return rc;
    }
    return kg_pg_finish(s, rc, NULL, err);
}

static enum kg_status
pg_key_get(struct kg_store *st, const char *id, struct kg_key_rec *out, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, id);
    rc = kg_pg_query(s, "SELECT " KEY_COLUMNS " FROM keys WHERE id = $1::text", &a, &res, "get key",
                     err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
    else
        rc = row_to_rec(s, res, 0, out, err);
    PQclear(res);
    return rc;
}

/* A walk over the rows of one result; with limit > 0 the statement asked
 * for limit + 1 rows, the extra one only telling that a next page exists.
 * The result is read whole before the callbacks, so they may not use the
 * handle anyway (as in SQLite), but nothing here depends on it. */
struct key_walk {
    kg_store_key_cb cb;
    kg_store_key_owner_cb owner_cb;
    void *ctx;
    size_t limit;
    char *next;
};

static enum kg_status
walk_keys(struct pg_store *s, PGresult *res, const struct key_walk *w, struct kg_err *err)
{
    struct kg_key_rec *rec = NULL;
    enum kg_status rc = KG_OK;
    int rows = PQntuples(res);

    rec = malloc(sizeof(*rec));
    if (rec == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: out of memory", s->where);
    for (int r = 0; r < rows; r++) {
        bool go_on;

        if (w->limit > 0 && (size_t)r == w->limit) {
            if (w->next != NULL)
                kg_store_cursor_format(rec->created_at, rec->id, w->next);
            break;
        }
        rc = row_to_rec(s, res, r, rec, err);
        if (rc != KG_OK)
            break;
        if (w->owner_cb != NULL) {
            struct kg_user_usage used = {
                .credits = kg_pg_col_int_or(res, r, KEY_NCOLS + 6, 0),
                .credits_period_start = kg_pg_col_int_or(res, r, KEY_NCOLS + 7, 0),
                .tier = kg_pg_col_int_or(res, r, KEY_NCOLS + 8, 0),
                .tier_period_start = kg_pg_col_int_or(res, r, KEY_NCOLS + 9, 0),
            };
            struct kg_key_owner owner = {
                .role = PQgetisnull(res, r, KEY_NCOLS) ? NULL : PQgetvalue(res, r, KEY_NCOLS),
                .tier =
                    PQgetisnull(res, r, KEY_NCOLS + 1) ? NULL : PQgetvalue(res, r, KEY_NCOLS + 1),
                .platform_admin = kg_pg_col_bool(res, r, KEY_NCOLS + 2),
                .disabled = kg_pg_col_bool(res, r, KEY_NCOLS + 3),
                .has_quota = !kg_pg_col_null(res, r, KEY_NCOLS + 4),
                .quota_limit = kg_pg_col_int_or(res, r, KEY_NCOLS + 4, 0),
                .quota_period =
                    PQgetisnull(res, r, KEY_NCOLS + 5) ? "" : PQgetvalue(res, r, KEY_NCOLS + 5),
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
            break;
        }
    }
    free(rec);
    return rc;
}

static enum kg_status
pg_key_each(struct kg_store *st, kg_store_key_cb cb, void *ctx, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct key_walk w = {.cb = cb, .ctx = ctx};
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_query(s, "SELECT " KEY_COLUMNS " FROM keys ORDER BY created_at, id", NULL, &res,
                     "walk keys", err);
    if (rc == KG_OK)
        rc = walk_keys(s, res, &w, err);
    PQclear(res);
    return rc;
}

static enum kg_status
pg_key_list(struct kg_store *st, const struct kg_key_query *q, const struct kg_cursor *after,
            kg_store_key_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct key_walk w = {.cb = cb, .ctx = ctx, .limit = q->page.limit, .next = next};
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, q->tenant);
    kg_pg_arg_text(&a, q->user_id);
    kg_pg_arg_text(&a, q->name);
    kg_pg_arg_int(&a, q->all_states ? -1 : (int64_t)q->state);
    kg_pg_arg_int(&a, q->now);
    kg_pg_arg_cursor(&a, after);
    kg_pg_arg_limit(&a, q->page.limit);
    /* The state test mirrors kg_key_state_of(): revoked wins over expired.
     * COLLATE "C": byte order, as SQLite sorts ids. */
    rc =
        kg_pg_query(s,
                    "SELECT " KEY_COLUMNS " FROM keys"
                    " WHERE ($1::text IS NULL OR tenant = $1::text)"
                    " AND ($2::text IS NULL OR user_id = $2::text)"
                    " AND ($3::text IS NULL OR name = $3::text)"
                    " AND ($4::integer < 0"
                    "  OR ($4::integer = 2 AND revoked_at IS NOT NULL AND revoked_at <= $5::bigint)"
                    "  OR ($4::integer = 1 AND (revoked_at IS NULL OR revoked_at > $5::bigint)"
                    "      AND expires_at IS NOT NULL AND expires_at <= $5::bigint)"
                    "  OR ($4::integer = 0 AND (revoked_at IS NULL OR revoked_at > $5::bigint)"
                    "      AND (expires_at IS NULL OR expires_at > $5::bigint)))"
                    " AND ($6::bigint IS NULL OR created_at > $6::bigint"
                    "      OR (created_at = $6::bigint AND id COLLATE \"C\" > $7::text))"
                    " ORDER BY created_at, id COLLATE \"C\" LIMIT $8::bigint",
                    &a, &res, "list keys", err);
    if (rc == KG_OK)
        rc = walk_keys(s, res, &w, err);
    PQclear(res);
    return rc;
}

/* The owner query, as in store_sqlite.c: metadata read as "{}". */
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
pg_key_each_owner(struct kg_store *st, int of, const char *id, kg_store_key_owner_cb cb, void *ctx,
                  struct kg_err *err)
{
    static const char *const where[] = {
        [KG_CHANGE_KEY] = " WHERE k.id = $1::text",
        [KG_CHANGE_USER] = " WHERE k.user_id = $1::text",
        [KG_CHANGE_TENANT] = " WHERE k.user_id IN (SELECT id FROM users WHERE tenant = $1::text)",
    };
    struct pg_store *s = kg_pg_from(st);
    struct key_walk w = {.owner_cb = cb, .ctx = ctx};
    char sql[sizeof(KEY_OWNER_SELECT) + 96];
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    snprintf(sql, sizeof(sql), "%s%s", KEY_OWNER_SELECT, of < 0 ? "" : where[of]);
    kg_pg_args_init(&a);
    if (of >= 0)
        kg_pg_arg_text(&a, id);
    rc = kg_pg_query(s, sql, &a, &res, "walk keys", err);
    if (rc == KG_OK)
        rc = walk_keys(s, res, &w, err);
    PQclear(res);
    return rc;
}

/* The refill-period rule of sqlite_key_update (store_sqlite.c), $8 the new
 * period and $10 now. */
#define KEY_PERIOD_MOVES                                                                           \
    "(COALESCE(quota_period, '') <> COALESCE($8::text, '')"                                        \
    " OR (quota_period_start = 0 AND $8::text IS NOT NULL))"
#define KEY_OLD_START KG_PG_PERIOD_START("quota_period", "$10::bigint")
#define KEY_NEW_START KG_PG_PERIOD_START("$8::text", "$10::bigint")

static const char key_update_sql[] =
    "UPDATE keys SET name = $2::text, scopes = $3::text, expires_at = $4::bigint,"
    " rate = $5::text, rate_burst = $6::bigint, quota_limit = $7::bigint,"
    " quota_period = $8::text, metadata = $9::text, allowed_ips = $11::text,"
    " quota_used = CASE WHEN " KEY_PERIOD_MOVES " AND quota_period_start < " KEY_OLD_START
    " THEN 0 ELSE quota_used END,"
    " quota_period_start = CASE WHEN " KEY_PERIOD_MOVES " THEN GREATEST(" KEY_OLD_START
    ", " KEY_NEW_START ") ELSE quota_period_start END"
    " WHERE id = $1::text";

static enum kg_status
pg_key_update(struct kg_store *st, const struct kg_key_rec *rec, const struct kg_audit_entry *audit,
              struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, rec->id);
    kg_pg_arg_text(&a, rec->name);
    kg_pg_arg_text(&a, rec->scopes);
    kg_pg_arg_int_or_null(&a, rec->expires_at, 0);
    kg_pg_arg_text_or_null(&a, rec->rate);
    kg_pg_arg_int_or_null(&a, rec->rate_burst, 0);
    kg_pg_arg_int_or_null(&a, rec->quota_limit, -1);
    kg_pg_arg_text_or_null(&a, rec->quota_period);
    kg_pg_arg_text(&a, rec->metadata[0] != '\0' ? rec->metadata : "{}");
    kg_pg_arg_int(&a, audit != NULL ? audit->time : kg_time_now());
    kg_pg_arg_text_or_null(&a, rec->allowed_ips);
    rc = kg_pg_query(s, key_update_sql, &a, &res, "update key", err);
    if (rc == KG_OK && kg_pg_affected(res) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", rec->id);
    PQclear(res);
    return kg_pg_finish(s, rc, audit, err);
}

/* Reads, locking the row until the transaction ends, what revoke and
 * rotate decide on: another instance revoking the same key waits here and
 * then sees this one's answer. */
static enum kg_status
read_revocation(struct pg_store *s, const char *id, int64_t *revoked_at, char *rotated_to,
                size_t rotated_cap, struct kg_err *err)
{
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, id);
    rc = kg_pg_query(s, "SELECT revoked_at, rotated_to FROM keys WHERE id = $1::text FOR UPDATE",
                     &a, &res, "read key", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0) {
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
    } else {
        *revoked_at = kg_pg_col_int_or(res, 0, 0, 0);
        if (!kg_pg_col_text(res, 0, 1, rotated_to, rotated_cap))
            rc = kg_err_set(err, KG_ECORRUPT,
                            "%s: key %s: rotated_to is longer than keygate allows", s->where, id);
    }
    PQclear(res);
    return rc;
}

static enum kg_status
pg_key_revoke(struct kg_store *st, const char *id, int64_t now, const struct kg_audit_entry *audit,
              struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    char rotated_to[KG_ID_MAX];
    int64_t revoked_at = 0;
    struct kg_pg_args a;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = read_revocation(s, id, &revoked_at, rotated_to, sizeof(rotated_to), err);
    if (rc == KG_OK && revoked_at != 0 && revoked_at <= now)
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", id);
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, now);
        kg_pg_arg_text(&a, id);
        rc = kg_pg_query(s, "UPDATE keys SET revoked_at = $1::bigint WHERE id = $2::text", &a, NULL,
                         "revoke key", err);
    }
    return kg_pg_finish(s, rc, audit, err);
}

static enum kg_status
pg_key_rotate(struct kg_store *st, const char *old_id, const struct kg_key_rec *fresh,
              int64_t revoke_at, int64_t now, const struct kg_audit_entry *audit,
              struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    char rotated_to[KG_ID_MAX];
    int64_t revoked_at = 0;
    struct kg_pg_args a;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = read_revocation(s, old_id, &revoked_at, rotated_to, sizeof(rotated_to), err);
    if (rc == KG_OK && revoked_at != 0 && revoked_at <= now)
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", old_id);
    else if (rc == KG_OK && rotated_to[0] != '\0')
        rc = kg_err_set(err, KG_ECONFLICT, "key %s was already rotated to %s", old_id, rotated_to);
    if (rc == KG_OK)
        rc = kg_pg_key_insert_locked(s, fresh, NULL, NULL, err);
    if (rc == KG_OK) {
        /* LEAST keeps an earlier revocation already scheduled on the old
         * key: rotating must never extend a key's life. */
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, revoke_at);
        kg_pg_arg_text(&a, fresh->id);
        kg_pg_arg_text(&a, old_id);
        rc = kg_pg_query(s,
                         "UPDATE keys SET revoked_at = LEAST(COALESCE(revoked_at, $1::bigint),"
                         " $1::bigint), rotated_to = $2::text WHERE id = $3::text",
                         &a, NULL, "rotate key", err);
    }
    return kg_pg_finish(s, rc, audit, err);
}

static enum kg_status
pg_key_known(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES], int64_t now,
             bool *out, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_bytes(&a, digest, KG_DIGEST_BYTES);
    kg_pg_arg_int(&a, now);
    rc = kg_pg_query(s,
                     "SELECT 1 FROM keys AS k"
                     " JOIN users AS u ON u.id = k.user_id"
                     " JOIN tenants AS t ON t.name = u.tenant"
                     " WHERE k.digest = $1::bytea"
                     " AND (k.revoked_at IS NULL OR k.revoked_at > $2::bigint)"
                     " AND u.disabled_at IS NULL AND t.disabled_at IS NULL",
                     &a, &res, "look up a key", err);
    if (rc == KG_OK)
        *out = PQntuples(res) > 0;
    PQclear(res);
    return rc;
}

static enum kg_status
pg_key_by_digest(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                 struct kg_key_rec *out, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_bytes(&a, digest, KG_DIGEST_BYTES);
    rc = kg_pg_query(s, "SELECT " KEY_COLUMNS " FROM keys WHERE digest = $1::bytea", &a, &res,
                     "find key", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0)
        rc = KG_ENOTFOUND;
    else
        rc = row_to_rec(s, res, 0, out, err);
    PQclear(res);
    return rc;
}

/* Revokes (when asked, and not revoked already) and writes the key.leaked
 * event in one transaction; the UPDATE's row lock orders it with another
 * instance's revocation of the same key. */
static enum kg_status
pg_key_leaked(struct kg_store *st, const char *id, bool revoke, int64_t now, struct kg_event *ev,
              const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    if (revoke) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, id);
        kg_pg_arg_int(&a, now);
        rc = kg_pg_query(s,
                         "UPDATE keys SET revoked_at = $2::bigint WHERE id = $1::text"
                         " AND (revoked_at IS NULL OR revoked_at > $2::bigint)",
                         &a, NULL, "revoke key", err);
    }
    if (rc == KG_OK)
        rc = kg_pg_event_add_locked(s, ev, err);
    return kg_pg_finish(s, rc, audit, err);
}

static enum kg_status
pg_set_durable(struct kg_store *st, bool durable, struct kg_err *err)
{
    /* The usage writer's counters may skip the wait for the WAL flush, as
     * SQLite's synchronous=NORMAL: a crash of the server loses at most the
     * last moments of counts, never a key change (other handles). */
    kg_pg_from(st)->sync_off = !durable; /* kept for every reconnect (pg_common.c) */
    return kg_pg_query(kg_pg_from(st),
                       durable ? "SET synchronous_commit = on" : "SET synchronous_commit = off",
                       NULL, NULL, "set synchronous_commit", err);
}

/* A transaction that takes a transaction id and commits, writing nothing
 * else: it fails as any change would while the server is unreachable, a
 * read-only standby (after a failover) or unable to write its WAL. Without
 * it the daemon took every probe for recovered and logged "writes work
 * again" once a second through an outage. */
static enum kg_status
pg_write_probe(struct kg_store *st, struct kg_err *err)
{
    return kg_pg_query(kg_pg_from(st), "SELECT pg_current_xact_id()", NULL, NULL, "write probe",
                       err);
}

/* "postgresql://host:port/db" for messages: the location without user,
 * password or options, whatever form it came in. */
static char *
safe_where(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    const char *host = "", *port = "", *db = "";
    char buf[256];

    if (opts != NULL) {
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
            if (o->val == NULL)
                continue;
            if (strcmp(o->keyword, "host") == 0)
                host = o->val;
            else if (strcmp(o->keyword, "port") == 0)
                port = o->val;
            else if (strcmp(o->keyword, "dbname") == 0)
                db = o->val;
        }
    }
    snprintf(buf, sizeof(buf), "postgresql://%.80s%s%.8s/%.64s", host, port[0] != '\0' ? ":" : "",
             port, db);
    PQconninfoFree(opts);
    return strdup(buf);
}

static void
pg_close(struct kg_store *st)
{
    struct pg_store *s = kg_pg_from(st);

    if (s == NULL)
        return;
    PQfinish(s->conn);
    kg_pg_doubt_free(s);
    if (s->conninfo != NULL) {
        /* It may hold a password. */
        memset(s->conninfo, 0, strlen(s->conninfo));
        free(s->conninfo);
    }
    free(s->where);
    free(s);
}

static enum kg_status
pg_open(const char *location, struct kg_store **out, struct kg_err *err)
{
    struct pg_store *s = calloc(1, sizeof(*s));
    char *errmsg = NULL;
    PQconninfoOption *opts;
    enum kg_status rc;

    if (s == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    s->base.ops = &kg_store_pg_ops;
    /* Checked before anything else: a malformed URI's own words may quote
     * it, password and all, so only its shape is reported. */
    opts = PQconninfoParse(location, &errmsg);
    PQconninfoFree(opts);
    PQfreemem(errmsg);
    if (opts == NULL) {
        rc = kg_err_set(err, KG_EINVAL, "database URL is not a valid PostgreSQL connection URI");
        goto cleanup;
    }
    s->conninfo = strdup(location);
    s->where = safe_where(location);
    if (s->conninfo == NULL || s->where == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kg_pg_connect(s, err);
    if (rc == KG_OK)
        rc = kg_pg_query(s, "SET client_min_messages = warning", NULL, NULL, "configure", err);
    if (rc == KG_OK)
        rc = kg_pg_migrate(s, err);
    if (rc != KG_OK)
        goto cleanup;
    *out = &s->base;
    s = NULL;

cleanup:
    if (s != NULL)
        pg_close(&s->base);
    return rc;
}

const struct kg_store_ops kg_store_pg_ops = {
    .name = "postgres",
    .alias = "postgresql",
    .whole_location = true,
    .open = pg_open,
    .close = pg_close,
    .key_add = pg_key_add,
    .key_add_batch = pg_key_add_batch,
    .key_get = pg_key_get,
    .key_each = pg_key_each,
    .key_list = pg_key_list,
    .key_each_owner = pg_key_each_owner,
    .key_update = pg_key_update,
    .key_revoke = pg_key_revoke,
    .key_rotate = pg_key_rotate,
    .key_touch = kg_pg_key_touch,
    .key_usage_add = kg_pg_key_usage_add,
    .credit_reserve = kg_pg_credit_reserve,
    .credit_renew = kg_pg_credit_renew,
    .credit_release = kg_pg_credit_release,
    .key_usage_get = kg_pg_key_usage_get,
    .user_usage_get = kg_pg_user_usage_get,
    .tenant_insert = kg_pg_tenant_insert,
    .tenant_get = kg_pg_tenant_get,
    .tenant_update = kg_pg_tenant_update,
    .tenant_list = kg_pg_tenant_list,
    .user_insert = kg_pg_user_insert,
    .user_lookup = kg_pg_user_lookup,
    .user_update = kg_pg_user_update,
    .user_list = kg_pg_user_list,
    .audit_append = kg_pg_audit_append,
    .audit_list = kg_pg_audit_list,
    .audit_each = kg_pg_audit_each,
    .audit_head = kg_pg_audit_head,
    .data_version = kg_pg_data_version,
    .write_probe = pg_write_probe,
    .key_known = pg_key_known,
    .change_head = kg_pg_change_head,
    .key_count = kg_pg_key_count,
    .key_census = kg_pg_key_census,
    .change_each = kg_pg_change_each,
    .change_trim = kg_pg_change_trim,
    .set_durable = pg_set_durable,
    .fingerprint = kg_pg_fingerprint,
    .session_insert = kg_pg_session_insert,
    .session_get = kg_pg_session_get,
    .session_touch = kg_pg_session_touch,
    .session_delete = kg_pg_session_delete,
    .wait_change = kg_pg_wait_change,
    .event_add = kg_pg_event_add,
    .event_fanout = kg_pg_event_fanout,
    .delivery_due = kg_pg_delivery_due,
    .delivery_done = kg_pg_delivery_done,
    .event_list = kg_pg_event_list,
    .event_retry = kg_pg_event_retry,
    .event_counts = kg_pg_event_counts,
    .alerts_scan = kg_pg_alerts_scan,
    .quota_alert = kg_pg_quota_alert,
    .key_by_digest = pg_key_by_digest,
    .key_leaked = pg_key_leaked,
};
