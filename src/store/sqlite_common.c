/* store/sqlite_common.c - the helpers every file of the SQLite backend
 * shares (sqlite_int.h): errors as kg_status with SQLite's message,
 * transactions that end with their audit entries, column reads and the
 * binds for "none", pages and cursors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/store.h"
#include "store/sqlite_int.h"

/* SQLite's messages name columns and constraints, never bound values, so
 * no digest can end up in them. */
enum kg_status
kg_sq_fail(struct sqlite_store *s, const char *what, struct kg_err *err)
{
    int code = sqlite3_extended_errcode(s->db);
    enum kg_status st;

    switch (code & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        st = KG_ECORRUPT;
        break;
    case SQLITE_NOMEM:
        st = KG_ENOMEM;
        break;
    case SQLITE_CONSTRAINT:
        /* Duplicates are looked up under the write lock before inserting,
         * so this is mostly a value the schema's CHECKs refuse. */
        if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY)
            st = KG_ECONFLICT;
        else
            st = KG_EINVAL;
        break;
    default:
        st = KG_EIO;
        break;
    }
    if (what == NULL)
        return kg_err_set(err, st, "%s: %s", s->path, sqlite3_errmsg(s->db));
    return kg_err_set(err, st, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

enum kg_status
kg_sq_exec(struct sqlite_store *s, const char *sql, const char *what, struct kg_err *err)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return kg_sq_fail(s, what, err);
    return KG_OK;
}

enum kg_status
kg_sq_prepare(struct sqlite_store *s, const char *sql, sqlite3_stmt **out, const char *what,
              struct kg_err *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, out, NULL) != SQLITE_OK)
        return kg_sq_fail(s, what, err);
    return KG_OK;
}

/* IMMEDIATE takes the write lock up front, so a transaction that has read
 * the state it checks cannot lose the lock to another writer before it
 * writes (and busy_timeout waits for the lock instead of failing). */
enum kg_status
kg_sq_begin(struct sqlite_store *s, struct kg_err *err)
{
    return kg_sq_exec(s, "BEGIN IMMEDIATE", "begin transaction", err);
}

enum kg_status
kg_sq_commit(struct sqlite_store *s, struct kg_err *err)
{
    return kg_sq_exec(s, "COMMIT", "commit", err);
}

/* Safe to call whatever happened: SQLite may already have rolled back. */
void
kg_sq_rollback(struct sqlite_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

enum kg_status
kg_sq_finish(struct sqlite_store *s, enum kg_status rc, const struct kg_audit_entry *audit,
             struct kg_err *err)
{
    if (rc == KG_OK)
        rc = kg_sq_audit_append_locked(s, audit, err);
    if (rc == KG_OK)
        rc = kg_sq_commit(s, err);
    if (rc != KG_OK)
        kg_sq_rollback(s);
    return rc;
}

enum kg_status
kg_sq_read_int(struct sqlite_store *s, const char *sql, int64_t *out, const char *what,
               struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_prepare(s, sql, &stmt, what, err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        rc = kg_sq_fail(s, what, err);
        goto cleanup;
    }
    *out = sqlite3_column_int64(stmt, 0);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

bool
kg_sq_col_text(sqlite3_stmt *stmt, int col, char *dst, size_t cap)
{
    const unsigned char *text = sqlite3_column_text(stmt, col);
    size_t len = (size_t)sqlite3_column_bytes(stmt, col);

    dst[0] = '\0';
    if (text == NULL)
        return true;
    if (len >= cap)
        return false;
    memcpy(dst, text, len);
    dst[len] = '\0';
    return true;
}

int64_t
kg_sq_col_int_or(sqlite3_stmt *stmt, int col, int64_t if_null)
{
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return if_null;
    return sqlite3_column_int64(stmt, col);
}

int
kg_sq_bind_text_or_null(sqlite3_stmt *stmt, int idx, const char *text)
{
    if (text[0] == '\0')
        return sqlite3_bind_null(stmt, idx);
    return sqlite3_bind_text(stmt, idx, text, -1, SQLITE_STATIC);
}

int
kg_sq_bind_int_or_null(sqlite3_stmt *stmt, int idx, int64_t v, int64_t null_value)
{
    if (v == null_value)
        return sqlite3_bind_null(stmt, idx);
    return sqlite3_bind_int64(stmt, idx, v);
}

int
kg_sq_bind_opt_text(sqlite3_stmt *stmt, int idx, const char *text)
{
    if (text == NULL)
        return sqlite3_bind_null(stmt, idx);
    return sqlite3_bind_text(stmt, idx, text, -1, SQLITE_STATIC);
}

int
kg_sq_bind_limit(sqlite3_stmt *stmt, int idx, size_t limit)
{
    if (limit == 0 || limit >= (size_t)INT64_MAX)
        return sqlite3_bind_int64(stmt, idx, -1);
    return sqlite3_bind_int64(stmt, idx, (int64_t)limit + 1);
}

int
kg_sq_bind_cursor(sqlite3_stmt *stmt, int idx, const struct kg_cursor *after)
{
    int rc;

    if (!after->set) {
        rc = sqlite3_bind_null(stmt, idx);
        return rc != SQLITE_OK ? rc : sqlite3_bind_null(stmt, idx + 1);
    }
    rc = sqlite3_bind_int64(stmt, idx, after->num);
    return rc != SQLITE_OK ? rc : sqlite3_bind_text(stmt, idx + 1, after->key, -1, SQLITE_STATIC);
}
