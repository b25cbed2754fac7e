/* store/sqlite_sessions.c - the console's sign-in sessions in the SQLite
 * backend (sql/009_console.sql): insert (with the housekeeping of expired
 * rows in the same transaction), the lookup that only finds a session of
 * an enabled user in an enabled tenant, touch and delete. Only digests of
 * tokens are ever bound here; what a session means is console/session.c's.
 */
#include <string.h>

#include "keygate/store.h"
#include "store/sqlite_int.h"

enum kg_status
kg_sq_session_insert(struct kg_store *st, const struct kg_session_rec *rec, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    bool found;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s, "DELETE FROM console_sessions WHERE expires_at <= ?1", &stmt,
                       "insert session", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, rec->created_at) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE) {
        rc = kg_sq_fail(s, "insert session", err);
        goto cleanup;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    rc = kg_sq_prepare(s, "SELECT 1 FROM users WHERE id = ?1", &stmt, "insert session", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, rec->user_id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "insert session", err);
        goto cleanup;
    }
    found = sqlite3_step(stmt) == SQLITE_ROW;
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (!found) {
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", rec->user_id);
        goto cleanup;
    }
    rc = kg_sq_prepare(s,
                       "INSERT INTO console_sessions (digest, user_id, created_at, expires_at,"
                       " last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                       &stmt, "insert session", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_blob(stmt, 1, rec->digest, KG_DIGEST_BYTES, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, rec->user_id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, rec->created_at) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 4, rec->expires_at) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 5, rec->last_seen_at) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "insert session", err);

cleanup:
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, NULL, err);
}

enum kg_status
kg_sq_session_get(struct kg_store *st, const unsigned char *digest, struct kg_session_rec *out,
                  struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s,
                       "SELECT cs.user_id, cs.created_at, cs.expires_at, cs.last_seen_at"
                       " FROM console_sessions AS cs JOIN users AS u ON u.id = cs.user_id"
                       " JOIN tenants AS t ON t.name = u.tenant"
                       " WHERE cs.digest = ?1 AND u.disabled_at IS NULL"
                       " AND t.disabled_at IS NULL",
                       &stmt, "get session", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_blob(stmt, 1, digest, KG_DIGEST_BYTES, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "get session", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE) {
        rc = kg_err_set(err, KG_ENOTFOUND, "no such session");
        goto cleanup;
    }
    if (step != SQLITE_ROW) {
        rc = kg_sq_fail(s, "get session", err);
        goto cleanup;
    }
    memcpy(out->digest, digest, KG_DIGEST_BYTES);
    if (!kg_sq_col_text(stmt, 0, out->user_id, sizeof(out->user_id))) {
        rc = kg_err_set(err, KG_ECORRUPT, "%s: a session's user id is too long", s->path);
        goto cleanup;
    }
    out->created_at = sqlite3_column_int64(stmt, 1);
    out->expires_at = sqlite3_column_int64(stmt, 2);
    out->last_seen_at = sqlite3_column_int64(stmt, 3);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* One statement on one digest: autocommit makes it its own transaction. */
static enum kg_status
exec_digest(struct sqlite_store *s, const char *sql, const unsigned char *digest, int64_t now,
            const char *what, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc = kg_sq_prepare(s, sql, &stmt, what, err);

    if (rc == KG_OK &&
        (sqlite3_bind_blob(stmt, 1, digest, KG_DIGEST_BYTES, SQLITE_STATIC) != SQLITE_OK ||
         (now > 0 && sqlite3_bind_int64(stmt, 2, now) != SQLITE_OK) ||
         sqlite3_step(stmt) != SQLITE_DONE))
        rc = kg_sq_fail(s, what, err);
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_session_touch(struct kg_store *st, const unsigned char *digest, int64_t now,
                    struct kg_err *err)
{
    return exec_digest(kg_sq_from(st),
                       "UPDATE console_sessions SET last_seen_at = max(last_seen_at, ?2)"
                       " WHERE digest = ?1",
                       digest, now, "touch session", err);
}

enum kg_status
kg_sq_session_delete(struct kg_store *st, const unsigned char *digest, struct kg_err *err)
{
    return exec_digest(kg_sq_from(st), "DELETE FROM console_sessions WHERE digest = ?1", digest, 0,
                       "delete session", err);
}
