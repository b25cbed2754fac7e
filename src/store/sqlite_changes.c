/* store/sqlite_changes.c - the change log of the SQLite backend
 * (sql/008_change_log.sql): its head, the rows after a position, and
 * trimming by age; the key count a full load of the cache sizes by, and
 * the keys by state /metrics shows. The rows themselves are
 * written by triggers in the transaction of each change, never here. */
#include <stdio.h>
#include <string.h>

#include "store/sqlite_int.h"

enum kg_status
kg_sq_key_count(struct kg_store *st, size_t *n, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_prepare(s, "SELECT COUNT(*) FROM keys", &stmt, "count the keys", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        rc = kg_sq_fail(s, "count the keys", err);
        goto cleanup;
    }
    *n = (size_t)sqlite3_column_int64(stmt, 0);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* The total from the smallest index; revoked through keys_by_revoked (a
 * partial index: revoked keys are few) and expired through keys_by_expiry,
 * so no row of an active key is read. */
enum kg_status
kg_sq_key_census(struct kg_store *st, int64_t now, struct kg_key_census *out, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    int64_t total, revoked, expired;
    enum kg_status rc;

    rc = kg_sq_prepare(s,
                       "SELECT (SELECT count(*) FROM keys),"
                       " (SELECT count(*) FROM keys"
                       "  WHERE revoked_at IS NOT NULL AND revoked_at <= ?1),"
                       " (SELECT count(*) FROM keys"
                       "  WHERE expires_at IS NOT NULL AND expires_at <= ?1"
                       "  AND (revoked_at IS NULL OR revoked_at > ?1))",
                       &stmt, "count keys by state", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, now) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_ROW) {
        rc = kg_sq_fail(s, "count keys by state", err);
        goto cleanup;
    }
    total = sqlite3_column_int64(stmt, 0);
    revoked = sqlite3_column_int64(stmt, 1);
    expired = sqlite3_column_int64(stmt, 2);
    out->revoked = (uint64_t)revoked;
    out->expired = (uint64_t)expired;
    out->active = (uint64_t)(total - revoked - expired);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_change_head(struct kg_store *st, int64_t *last, int64_t *trimmed, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    /* One statement, so both numbers come from the same snapshot. The
     * sqlite_sequence row outlives trimming every row, so the head never
     * goes back. */
    rc = kg_sq_prepare(s,
                       "SELECT COALESCE((SELECT seq FROM sqlite_sequence"
                       "                 WHERE name = 'change_log'), 0),"
                       " (SELECT trimmed_through FROM change_log_state WHERE one = 1)",
                       &stmt, "read the change log", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        rc = kg_sq_fail(s, "read the change log", err);
        goto cleanup;
    }
    *last = sqlite3_column_int64(stmt, 0);
    *trimmed = sqlite3_column_int64(stmt, 1);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_change_each(struct kg_store *st, int64_t after, size_t limit, kg_store_change_cb cb,
                  void *ctx, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    struct kg_change c;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s,
                       "SELECT seq, object, id FROM change_log WHERE seq > ?1"
                       " ORDER BY seq LIMIT ?2",
                       &stmt, "read the change log", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, after) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, limit > INT64_MAX ? INT64_MAX : (int64_t)limit) != SQLITE_OK) {
        rc = kg_sq_fail(s, "read the change log", err);
        goto cleanup;
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *object = (const char *)sqlite3_column_text(stmt, 1);

        memset(&c, 0, sizeof(c));
        c.seq = sqlite3_column_int64(stmt, 0);
        if (object == NULL || !kg_sq_col_text(stmt, 2, c.id, sizeof(c.id))) {
            rc = kg_err_set(err, KG_ECORRUPT, "%s: change log row %lld is malformed", s->path,
                            (long long)c.seq);
            goto cleanup;
        }
        if (strcmp(object, "key") == 0)
            c.object = KG_CHANGE_KEY;
        else if (strcmp(object, "user") == 0)
            c.object = KG_CHANGE_USER;
        else
            c.object = KG_CHANGE_TENANT;
        if (!cb(&c, ctx))
            goto cleanup;
    }
    if (step != SQLITE_DONE)
        rc = kg_sq_fail(s, "read the change log", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_fingerprint(struct kg_store *st, const char *fp, char stored[65], struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    if (fp != NULL) {
        rc = kg_sq_prepare(s,
                           "INSERT OR IGNORE INTO secret_fingerprint (one, fingerprint, created_at)"
                           " VALUES (1, ?1, CAST(strftime('%s', 'now') AS INTEGER))",
                           &stmt, "record the secret fingerprint", err);
        if (rc == KG_OK && (sqlite3_bind_text(stmt, 1, fp, -1, SQLITE_STATIC) != SQLITE_OK ||
                            sqlite3_step(stmt) != SQLITE_DONE))
            rc = kg_sq_fail(s, "record the secret fingerprint", err);
        sqlite3_finalize(stmt);
        stmt = NULL;
    }
    if (rc == KG_OK)
        rc = kg_sq_prepare(s, "SELECT fingerprint FROM secret_fingerprint WHERE one = 1", &stmt,
                           "read the secret fingerprint", err);
    if (rc == KG_OK) {
        step = sqlite3_step(stmt);
        if (step == SQLITE_ROW) {
            if (!kg_sq_col_text(stmt, 0, stored, 65))
                rc = kg_err_set(err, KG_ECORRUPT, "%s: the secret fingerprint is mangled", s->path);
        } else if (step != SQLITE_DONE) {
            rc = kg_sq_fail(s, "read the secret fingerprint", err);
        }
    }
    sqlite3_finalize(stmt);
    if (rc == KG_OK)
        rc = kg_sq_commit(s, err);
    if (rc != KG_OK)
        kg_sq_rollback(s);
    return rc;
}

enum kg_status
kg_sq_change_trim(struct kg_store *st, int64_t before, size_t *trimmed, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int64_t through;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    /* The newest row stays whatever its age: the log is never empty once
     * written, and the cut is a seq every reader can compare with. */
    rc = kg_sq_prepare(s,
                       "SELECT COALESCE(MAX(seq), 0) FROM change_log WHERE changed_at < ?1"
                       " AND seq < (SELECT MAX(seq) FROM change_log)",
                       &stmt, "trim the change log", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, before) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_ROW) {
        rc = kg_sq_fail(s, "trim the change log", err);
        goto cleanup;
    }
    through = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (through == 0)
        goto cleanup;
    rc = kg_sq_prepare(s, "DELETE FROM change_log WHERE seq <= ?1", &stmt, "trim the change log",
                       err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, through) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_DONE) {
        rc = kg_sq_fail(s, "trim the change log", err);
        goto cleanup;
    }
    if (trimmed != NULL)
        *trimmed = (size_t)sqlite3_changes(s->db);
    sqlite3_finalize(stmt);
    stmt = NULL;
    rc = kg_sq_prepare(s,
                       "UPDATE change_log_state SET trimmed_through = MAX(trimmed_through, ?1)"
                       " WHERE one = 1",
                       &stmt, "trim the change log", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, through) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "trim the change log", err);

cleanup:
    sqlite3_finalize(stmt);
    if (rc == KG_OK)
        rc = kg_sq_commit(s, err);
    if (rc != KG_OK) {
        kg_sq_rollback(s);
        if (trimmed != NULL)
            *trimmed = 0;
    }
    return rc;
}
