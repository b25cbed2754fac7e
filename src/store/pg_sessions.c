/* store/pg_sessions.c - the console's sign-in sessions in the PostgreSQL
 * backend (sql/postgres/002_console.sql); the twin of sqlite_sessions.c:
 * insert (expired rows swept in the same transaction), the lookup that only
 * finds a session of an enabled user in an enabled tenant, touch, delete. */
#include <string.h>

#include "keygate/store.h"
#include "store/pg_int.h"

enum kg_status
kg_pg_session_insert(struct kg_store *st, const struct kg_session_rec *rec, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    kg_pg_args_init(&a);
    kg_pg_arg_int(&a, rec->created_at);
    rc = kg_pg_query(s, "DELETE FROM console_sessions WHERE expires_at <= $1::bigint", &a, NULL,
                     "insert session", err);
    if (rc != KG_OK)
        goto cleanup;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, rec->user_id);
    rc = kg_pg_query(s, "SELECT 1 FROM users WHERE id = $1::text", &a, &res, "insert session", err);
    if (rc != KG_OK)
        goto cleanup;
    if (PQntuples(res) == 0) {
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", rec->user_id);
        goto cleanup;
    }
    kg_pg_args_init(&a);
    kg_pg_arg_bytes(&a, rec->digest, KG_DIGEST_BYTES);
    kg_pg_arg_text(&a, rec->user_id);
    kg_pg_arg_int(&a, rec->created_at);
    kg_pg_arg_int(&a, rec->expires_at);
    kg_pg_arg_int(&a, rec->last_seen_at);
    rc = kg_pg_query(s,
                     "INSERT INTO console_sessions (digest, user_id, created_at, expires_at,"
                     " last_seen_at) VALUES ($1::bytea, $2::text, $3::bigint, $4::bigint,"
                     " $5::bigint)",
                     &a, NULL, "insert session", err);

cleanup:
    PQclear(res);
    return kg_pg_finish(s, rc, NULL, err);
}

enum kg_status
kg_pg_session_get(struct kg_store *st, const unsigned char *digest, struct kg_session_rec *out,
                  struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_bytes(&a, digest, KG_DIGEST_BYTES);
    rc = kg_pg_query(s,
                     "SELECT cs.user_id, cs.created_at, cs.expires_at, cs.last_seen_at"
                     " FROM console_sessions AS cs JOIN users AS u ON u.id = cs.user_id"
                     " JOIN tenants AS t ON t.name = u.tenant"
                     " WHERE cs.digest = $1::bytea AND u.disabled_at IS NULL"
                     " AND t.disabled_at IS NULL",
                     &a, &res, "get session", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0) {
        rc = kg_err_set(err, KG_ENOTFOUND, "no such session");
        goto cleanup;
    }
    memcpy(out->digest, digest, KG_DIGEST_BYTES);
    if (!kg_pg_col_text(res, 0, 0, out->user_id, sizeof(out->user_id))) {
        rc = kg_err_set(err, KG_ECORRUPT, "a session's user id is too long");
        goto cleanup;
    }
    out->created_at = kg_pg_col_int_or(res, 0, 1, 0);
    out->expires_at = kg_pg_col_int_or(res, 0, 2, 0);
    out->last_seen_at = kg_pg_col_int_or(res, 0, 3, 0);

cleanup:
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_session_touch(struct kg_store *st, const unsigned char *digest, int64_t now,
                    struct kg_err *err)
{
    struct kg_pg_args a;

    kg_pg_args_init(&a);
    kg_pg_arg_bytes(&a, digest, KG_DIGEST_BYTES);
    kg_pg_arg_int(&a, now);
    return kg_pg_query(kg_pg_from(st),
                       "UPDATE console_sessions SET last_seen_at = greatest(last_seen_at,"
                       " $2::bigint) WHERE digest = $1::bytea",
                       &a, NULL, "touch session", err);
}

enum kg_status
kg_pg_session_delete(struct kg_store *st, const unsigned char *digest, struct kg_err *err)
{
    struct kg_pg_args a;

    kg_pg_args_init(&a);
    kg_pg_arg_bytes(&a, digest, KG_DIGEST_BYTES);
    return kg_pg_query(kg_pg_from(st), "DELETE FROM console_sessions WHERE digest = $1::bytea", &a,
                       NULL, "delete session", err);
}
