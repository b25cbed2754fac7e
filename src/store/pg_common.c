/* store/pg_common.c - the helpers every file of the PostgreSQL backend
 * shares (pg_int.h): statement parameters, running a statement with one
 * reconnect outside transactions, errors as kg_status with the server's
 * primary message, transactions that end with their audit entries, and
 * column reads of text-format results.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/store.h"
#include "store/pg_int.h"

void
kg_pg_args_init(struct kg_pg_args *a)
{
    memset(a, 0, sizeof(*a));
}

static int
next_slot(struct kg_pg_args *a)
{
    /* The statements are ours: more parameters than slots is a bug. */
    if (a->n >= KG_PG_ARGS_MAX)
        abort();
    return a->n++;
}

void
kg_pg_arg_text(struct kg_pg_args *a, const char *text)
{
    int i = next_slot(a);

    a->values[i] = text;
}

void
kg_pg_arg_text_or_null(struct kg_pg_args *a, const char *text)
{
    kg_pg_arg_text(a, text != NULL && text[0] != '\0' ? text : NULL);
}

void
kg_pg_arg_int(struct kg_pg_args *a, int64_t v)
{
    int i = next_slot(a);

    snprintf(a->nums[i], sizeof(a->nums[i]), "%" PRId64, v);
    a->values[i] = a->nums[i];
}

void
kg_pg_arg_int_or_null(struct kg_pg_args *a, int64_t v, int64_t null_value)
{
    if (v == null_value)
        kg_pg_arg_text(a, NULL);
    else
        kg_pg_arg_int(a, v);
}

void
kg_pg_arg_bool(struct kg_pg_args *a, bool v)
{
    kg_pg_arg_text(a, v ? "t" : "f");
}

void
kg_pg_arg_bytes(struct kg_pg_args *a, const unsigned char *p, size_t n)
{
    int i = next_slot(a);

    a->values[i] = (const char *)p;
    a->lengths[i] = (int)n;
    a->formats[i] = 1;
}

void
kg_pg_arg_limit(struct kg_pg_args *a, size_t limit)
{
    if (limit == 0 || limit >= (size_t)INT64_MAX)
        kg_pg_arg_text(a, NULL);
    else
        kg_pg_arg_int(a, (int64_t)limit + 1);
}

void
kg_pg_arg_cursor(struct kg_pg_args *a, const struct kg_cursor *after)
{
    if (!after->set) {
        kg_pg_arg_text(a, NULL);
        kg_pg_arg_text(a, NULL);
        return;
    }
    kg_pg_arg_int(a, after->num);
    kg_pg_arg_text(a, after->key);
}

/* The server's primary message names constraints and columns, never the
 * values (those are in DETAIL, which is not read), so no digest or
 * password reaches the words. */
enum kg_status
kg_pg_fail(struct pg_store *s, PGresult *res, const char *what, struct kg_err *err)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    enum kg_status st = KG_EIO;
    char line[160];
    size_t n;

    if (state != NULL && strncmp(state, "23", 2) == 0)
        st = strcmp(state, "23505") == 0 ? KG_ECONFLICT : KG_EINVAL;
    else if (state != NULL && strncmp(state, "22", 2) == 0)
        st = KG_EINVAL;
    else if (state != NULL && strcmp(state, "53200") == 0)
        st = KG_ENOMEM;
    if (msg == NULL || state == NULL) {
        /* No answer from the server: the connection's own words. */
        snprintf(line, sizeof(line), "PostgreSQL unavailable: %s",
                 s->conn != NULL ? PQerrorMessage(s->conn) : "no connection");
    } else {
        snprintf(line, sizeof(line), "%s", msg);
    }
    n = strcspn(line, "\r\n");
    line[n] = '\0';
    if (what == NULL)
        return kg_err_set(err, st, "%s: %s", s->where, line);
    return kg_err_set(err, st, "%s: %s: %s", s->where, what, line);
}

/* libpq prints notices, and a FATAL that arrives on an idle connection
 * (the server shutting down), to stderr by default: raw lines in the
 * daemon's log. What matters reaches the caller as a failed query. */
static void
quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* What this handle set for its session, again on a new connection (a
 * reconnect starts a new session with the server's defaults). */
static enum kg_status
session_settings(struct pg_store *s, struct kg_err *err)
{
    PGresult *res;
    enum kg_status rc = KG_OK;

    if (!s->sync_off)
        return KG_OK;
    res = PQexec(s->conn, "SET synchronous_commit = off");
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = kg_pg_fail(s, res, "set synchronous_commit", err);
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_connect(struct pg_store *s, struct kg_err *err)
{
    /* connect_timeout first: a value in the URI itself, processed later,
     * wins. A server that is down must not hold the caller for long. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"2", "keygate", s->conninfo, NULL};

    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK)
        return KG_OK;
    s->listening = false;
    PQfinish(s->conn);
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (s->conn == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: out of memory", s->where);
    PQsetNoticeProcessor(s->conn, quiet_notice, NULL);
    if (PQstatus(s->conn) != CONNECTION_OK)
        return kg_pg_fail(s, NULL, "connect", err);
    return session_settings(s, err);
}

static bool
connection_lost(struct pg_store *s, PGresult *res)
{
    ExecStatusType rs = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK)
        return false;
    return PQstatus(s->conn) != CONNECTION_OK || state == NULL || strncmp(state, "08", 2) == 0 ||
           strcmp(state, "57P01") == 0;
}

static PGresult *
run(struct pg_store *s, const char *sql, const struct kg_pg_args *args)
{
    if (args == NULL || args->n == 0)
        return PQexecParams(s->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    return PQexecParams(s->conn, sql, args->n, NULL, args->values, args->lengths, args->formats, 0);
}

enum kg_status
kg_pg_query(struct pg_store *s, const char *sql, const struct kg_pg_args *args, PGresult **out,
            const char *what, struct kg_err *err)
{
    bool in_tx;
    PGresult *res;
    ExecStatusType rs;
    enum kg_status rc;

    if (out != NULL)
        *out = NULL;
    rc = kg_pg_connect(s, err);
    if (rc != KG_OK)
        return rc;
    in_tx = PQtransactionStatus(s->conn) != PQTRANS_IDLE;
    res = run(s, sql, args);
    if (!in_tx && connection_lost(s, res)) {
        /* A server restart since the last statement: one fresh try. Only
         * outside a transaction, whose earlier statements died with it. */
        PQclear(res);
        s->listening = false;
        PQreset(s->conn);
        if (PQstatus(s->conn) != CONNECTION_OK)
            return kg_pg_fail(s, NULL, what, err);
        rc = session_settings(s, err);
        if (rc != KG_OK)
            return rc;
        res = run(s, sql, args);
    }
    rs = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        rc = kg_pg_fail(s, res, what, err);
        PQclear(res);
        return rc;
    }
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return KG_OK;
}

int64_t
kg_pg_affected(PGresult *res)
{
    const char *n = PQcmdTuples(res);

    return n != NULL && n[0] != '\0' ? strtoll(n, NULL, 10) : 0;
}

enum kg_status
kg_pg_begin(struct pg_store *s, struct kg_err *err)
{
    return kg_pg_query(s, "BEGIN", NULL, NULL, "begin transaction", err);
}

enum kg_status
kg_pg_commit(struct pg_store *s, struct kg_err *err)
{
    return kg_pg_query(s, "COMMIT", NULL, NULL, "commit", err);
}

void
kg_pg_rollback(struct pg_store *s)
{
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK &&
        PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        PQclear(PQexec(s->conn, "ROLLBACK"));
}

enum kg_status
kg_pg_finish(struct pg_store *s, enum kg_status rc, const struct kg_audit_entry *audit,
             struct kg_err *err)
{
    if (rc == KG_OK)
        rc = kg_pg_audit_append_locked(s, audit, err);
    if (rc == KG_OK)
        rc = kg_pg_commit(s, err);
    if (rc != KG_OK)
        kg_pg_rollback(s);
    return rc;
}

bool
kg_pg_col_null(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) != 0;
}

bool
kg_pg_col_text(PGresult *res, int row, int col, char *dst, size_t cap)
{
    size_t len;

    dst[0] = '\0';
    if (PQgetisnull(res, row, col))
        return true;
    len = (size_t)PQgetlength(res, row, col);
    if (len >= cap)
        return false;
    memcpy(dst, PQgetvalue(res, row, col), len);
    dst[len] = '\0';
    return true;
}

int64_t
kg_pg_col_int_or(PGresult *res, int row, int col, int64_t if_null)
{
    if (PQgetisnull(res, row, col))
        return if_null;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

bool
kg_pg_col_bool(PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool
kg_pg_col_bytes(PGresult *res, int row, int col, unsigned char *dst, size_t n)
{
    const char *v;

    if (PQgetisnull(res, row, col) || (size_t)PQgetlength(res, row, col) != 2 + 2 * n)
        return false;
    v = PQgetvalue(res, row, col);
    if (v[0] != '\\' || v[1] != 'x')
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(v[2 + 2 * i]), lo = hexval(v[3 + 2 * i]);

        if (hi < 0 || lo < 0)
            return false;
        dst[i] = (unsigned char)(hi * 16 + lo);
    }
    return true;
}
