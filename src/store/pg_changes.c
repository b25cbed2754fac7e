/* store/pg_changes.c - the change log of the PostgreSQL backend
 * (sql/postgres/001_init.sql; the twin of sqlite_changes.c): its head,
 * the rows after a position, trimming by age, the key count and the keys
 * by state (/metrics), and the data
 * version the daemon polls, which is the head itself: it moves with every
 * change made by any instance and not with usage flushes. The rows are
 * written by triggers in the transaction of each change, never here.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "store/pg_int.h"

enum kg_status
kg_pg_key_count(struct kg_store *st, size_t *n, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_query(s, "SELECT count(*) FROM keys", NULL, &res, "count the keys", err);
    if (rc == KG_OK)
        *n = (size_t)kg_pg_col_int_or(res, 0, 0, 0);
    PQclear(res);
    return rc;
}

/* As kg_sq_key_census(): revoked through keys_by_revoked, expired through
 * keys_by_expiry, the total by the planner's cheapest count. */
enum kg_status
kg_pg_key_census(struct kg_store *st, int64_t now, struct kg_key_census *out, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    int64_t total, revoked, expired;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_int(&a, now);
    rc = kg_pg_query(s,
                     "SELECT (SELECT count(*) FROM keys),"
                     " (SELECT count(*) FROM keys"
                     "  WHERE revoked_at IS NOT NULL AND revoked_at <= $1::bigint),"
                     " (SELECT count(*) FROM keys"
                     "  WHERE expires_at IS NOT NULL AND expires_at <= $1::bigint"
                     "  AND (revoked_at IS NULL OR revoked_at > $1::bigint))",
                     &a, &res, "count keys by state", err);
    if (rc == KG_OK) {
        total = kg_pg_col_int_or(res, 0, 0, 0);
        revoked = kg_pg_col_int_or(res, 0, 1, 0);
        expired = kg_pg_col_int_or(res, 0, 2, 0);
        out->revoked = (uint64_t)revoked;
        out->expired = (uint64_t)expired;
        out->active = (uint64_t)(total - revoked - expired);
    }
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_change_head(struct kg_store *st, int64_t *last, int64_t *trimmed, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_query(s, "SELECT last_seq, trimmed_through FROM change_log_state WHERE one = 1",
                     NULL, &res, "read the change log", err);
    if (rc == KG_OK && PQntuples(res) != 1)
        rc = kg_err_set(err, KG_ECORRUPT, "%s: the change log state row is missing", s->where);
    if (rc == KG_OK) {
        *last = kg_pg_col_int_or(res, 0, 0, 0);
        *trimmed = kg_pg_col_int_or(res, 0, 1, 0);
    }
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_data_version(struct kg_store *st, int64_t *out, struct kg_err *err)
{
    int64_t trimmed = 0;

    return kg_pg_change_head(st, out, &trimmed, err);
}

enum kg_status
kg_pg_change_each(struct kg_store *st, int64_t after, size_t limit, kg_store_change_cb cb,
                  void *ctx, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    struct kg_change c;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_int(&a, after);
    kg_pg_arg_int(&a, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    rc = kg_pg_query(s,
                     "SELECT seq, object, id FROM change_log WHERE seq > $1::bigint"
                     " ORDER BY seq LIMIT $2::bigint",
                     &a, &res, "read the change log", err);
    for (int r = 0; rc == KG_OK && r < PQntuples(res); r++) {
        const char *object = PQgetvalue(res, r, 1);

        memset(&c, 0, sizeof(c));
        c.seq = kg_pg_col_int_or(res, r, 0, 0);
        if (!kg_pg_col_text(res, r, 2, c.id, sizeof(c.id))) {
            rc = kg_err_set(err, KG_ECORRUPT, "%s: change log row %lld is malformed", s->where,
                            (long long)c.seq);
            break;
        }
        if (strcmp(object, "key") == 0)
            c.object = KG_CHANGE_KEY;
        else if (strcmp(object, "user") == 0)
            c.object = KG_CHANGE_USER;
        else
            c.object = KG_CHANGE_TENANT;
        if (!cb(&c, ctx))
            break;
    }
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_wait_change(struct kg_store *st, int timeout_ms, bool *woke, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct pollfd pfd;
    PGnotify *n;
    enum kg_status rc;

    if (!s->listening) {
        /* A new connection: LISTEN again, and wake the caller, which polls
         * for whatever was committed while nobody listened. */
        rc = kg_pg_query(s, "LISTEN keygate_changes", NULL, NULL, "listen for changes", err);
        if (rc != KG_OK)
            return rc;
        s->listening = true;
        *woke = true;
        return KG_OK;
    }
    pfd.fd = PQsocket(s->conn);
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (pfd.fd < 0 || (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR))
        return kg_pg_fail(s, NULL, "wait for changes", err);
    if (pfd.revents != 0 && PQconsumeInput(s->conn) == 0) {
        s->listening = false;
        return kg_pg_fail(s, NULL, "wait for changes", err);
    }
    while ((n = PQnotifies(s->conn)) != NULL) {
        *woke = true;
        PQfreemem(n);
    }
    return KG_OK;
}

enum kg_status
kg_pg_fingerprint(struct kg_store *st, const char *fp, char stored[65], struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc == KG_OK && fp != NULL) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, fp);
        rc = kg_pg_query(s,
                         "INSERT INTO secret_fingerprint (one, fingerprint, created_at)"
                         " VALUES (1, $1::text, extract(epoch FROM now())::bigint)"
                         " ON CONFLICT (one) DO NOTHING",
                         &a, NULL, "record the secret fingerprint", err);
    }
    if (rc == KG_OK)
        rc = kg_pg_query(s, "SELECT fingerprint FROM secret_fingerprint WHERE one = 1", NULL, &res,
                         "read the secret fingerprint", err);
    if (rc == KG_OK && PQntuples(res) > 0 && !kg_pg_col_text(res, 0, 0, stored, 65))
        rc = kg_err_set(err, KG_ECORRUPT, "%s: the secret fingerprint is mangled", s->where);
    PQclear(res);
    if (rc == KG_OK)
        rc = kg_pg_commit(s, err);
    if (rc != KG_OK)
        kg_pg_rollback(s);
    return rc;
}

enum kg_status
kg_pg_change_trim(struct kg_store *st, int64_t before, size_t *trimmed, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    int64_t through = 0;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    /* The state row locked first, as every change's trigger does: no
     * change commits between the cut and the move of trimmed_through. */
    if (rc == KG_OK)
        rc = kg_pg_query(s, "SELECT 1 FROM change_log_state WHERE one = 1 FOR UPDATE", NULL, NULL,
                         "trim the change log", err);
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, before);
        rc = kg_pg_query(s,
                         "SELECT COALESCE(max(seq), 0) FROM change_log"
                         " WHERE changed_at < $1::bigint"
                         " AND seq < (SELECT max(seq) FROM change_log)",
                         &a, &res, "trim the change log", err);
        if (rc == KG_OK)
            through = kg_pg_col_int_or(res, 0, 0, 0);
        PQclear(res);
        res = NULL;
    }
    if (rc == KG_OK && through > 0) {
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, through);
        rc = kg_pg_query(s, "DELETE FROM change_log WHERE seq <= $1::bigint", &a, &res,
                         "trim the change log", err);
        if (rc == KG_OK && trimmed != NULL)
            *trimmed = (size_t)kg_pg_affected(res);
        PQclear(res);
        res = NULL;
        if (rc == KG_OK)
            rc = kg_pg_query(s,
                             "UPDATE change_log_state SET trimmed_through ="
                             " GREATEST(trimmed_through, $1::bigint) WHERE one = 1",
                             &a, NULL, "trim the change log", err);
    }
    /* Settled flush tokens age out with the log: a flush in doubt is
     * settled by the next one, a second later. */
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, before);
        rc = kg_pg_query(s, "DELETE FROM flush_applied WHERE applied_at < $1::bigint", &a, NULL,
                         "trim the change log", err);
    }
    if (rc == KG_OK)
        rc = kg_pg_commit(s, err);
    if (rc != KG_OK) {
        kg_pg_rollback(s);
        if (trimmed != NULL)
            *trimmed = 0;
    }
    return rc;
}
