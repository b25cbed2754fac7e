/* store/pg_audit.c - the audit trail in the PostgreSQL backend (the twin
 * of sqlite_audit.c). The head row is read FOR UPDATE by every appender,
 * so writers from several instances take turns on it and the chain never
 * forks: each entry chains onto the head the previous COMMIT left. Reads
 * are lenient as in SQLite, so a row edited by hand reaches verification.
 */
#include <stdio.h>
#include <string.h>

#include "keygate/store.h"
#include "store/pg_int.h"

#define AUDIT_COLUMNS "seq, time, actor, tenant, action, object, details, prev_hash, hash"

/* lock: FOR UPDATE, inside the caller's transaction. */
static enum kg_status
read_head(struct pg_store *s, bool lock, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
          struct kg_err *err)
{
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_query(s,
                     lock ? "SELECT seq, hash FROM audit_head WHERE one = 1 FOR UPDATE"
                          : "SELECT seq, hash FROM audit_head WHERE one = 1",
                     NULL, &res, "read audit head", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0 || kg_pg_col_null(res, 0, 0) || kg_pg_col_int_or(res, 0, 0, -1) < 0 ||
        !kg_pg_col_text(res, 0, 1, hash, KG_AUDIT_HASH_HEX) ||
        strlen(hash) != KG_AUDIT_HASH_HEX - 1)
        rc = kg_err_set(err, KG_ECORRUPT,
                        "%s: the audit chain head is missing or mangled; run keygate audit verify",
                        s->where);
    else
        *seq = kg_pg_col_int_or(res, 0, 0, 0);
    PQclear(res);
    return rc;
}

static enum kg_status
append_one(struct pg_store *s, const struct kg_audit_entry *in, struct kg_err *err)
{
    struct kg_audit_entry e = *in;
    struct kg_pg_args a;
    enum kg_status rc;
    int64_t head = 0;

    rc = read_head(s, true, &head, e.prev_hash, err);
    if (rc != KG_OK)
        return rc;
    e.seq = head + 1;
    kg_store_audit_hash(s->base.audit_key, &e, e.prev_hash, e.hash);
    kg_pg_args_init(&a);
    kg_pg_arg_int(&a, e.seq);
    kg_pg_arg_int(&a, e.time);
    kg_pg_arg_text(&a, e.actor);
    kg_pg_arg_text(&a, e.tenant);
    kg_pg_arg_text(&a, e.action);
    kg_pg_arg_text(&a, e.object);
    kg_pg_arg_text(&a, e.details);
    kg_pg_arg_text(&a, e.prev_hash);
    kg_pg_arg_text(&a, e.hash);
    rc = kg_pg_query(s,
                     "INSERT INTO audit (" AUDIT_COLUMNS ") VALUES ($1::bigint, $2::bigint,"
                     " $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text)",
                     &a, NULL, "append audit entry", err);
    if (rc == KG_ECONFLICT)
        /* A row the head does not know about: someone wrote to the table. */
        return kg_err_set(err, KG_ECORRUPT,
                          "%s: audit entry %lld already exists although the chain ends before "
                          "it; run keygate audit verify",
                          s->where, (long long)e.seq);
    if (rc != KG_OK)
        return rc;
    kg_pg_args_init(&a);
    kg_pg_arg_int(&a, e.seq);
    kg_pg_arg_text(&a, e.hash);
    return kg_pg_query(s, "UPDATE audit_head SET seq = $1::bigint, hash = $2::text WHERE one = 1",
                       &a, NULL, "append audit entry", err);
}

enum kg_status
kg_pg_audit_append_locked(struct pg_store *s, const struct kg_audit_entry *audit,
                          struct kg_err *err)
{
    enum kg_status rc = KG_OK;

    for (const struct kg_audit_entry *e = audit; e != NULL && rc == KG_OK; e = e->next)
        rc = append_one(s, e, err);
    return rc;
}

enum kg_status
kg_pg_audit_append(struct kg_store *st, const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    enum kg_status rc = kg_pg_begin(s, err);

    if (rc != KG_OK)
        return rc;
    return kg_pg_finish(s, KG_OK, audit, err);
}

/* Reads one row; never fails: what does not fit is cut and the entry
 * marked malformed, so verification can name it. */
static void
row_to_entry(PGresult *res, int row, struct kg_audit_entry *e)
{
    struct {
        int col;
        char *dst;
        size_t cap;
    } texts[] = {
        {2, e->actor, sizeof(e->actor)},     {3, e->tenant, sizeof(e->tenant)},
        {4, e->action, sizeof(e->action)},   {5, e->object, sizeof(e->object)},
        {6, e->details, sizeof(e->details)}, {7, e->prev_hash, sizeof(e->prev_hash)},
        {8, e->hash, sizeof(e->hash)},
    };

    memset(e, 0, sizeof(*e));
    e->seq = kg_pg_col_int_or(res, row, 0, 0);
    e->time = kg_pg_col_int_or(res, row, 1, 0);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (!kg_pg_col_text(res, row, texts[i].col, texts[i].dst, texts[i].cap)) {
            memcpy(texts[i].dst, PQgetvalue(res, row, texts[i].col), texts[i].cap - 1);
            texts[i].dst[texts[i].cap - 1] = '\0';
            e->malformed = true;
        }
    }
}

static enum kg_status
walk_entries(PGresult *res, size_t limit, kg_store_audit_cb cb, void *ctx, char *next)
{
    struct kg_audit_entry e;

    for (int r = 0; r < PQntuples(res); r++) {
        if (limit > 0 && (size_t)r == limit) {
            if (next != NULL)
                kg_store_cursor_format(e.seq, NULL, next);
            return KG_OK;
        }
        row_to_entry(res, r, &e);
        if (!cb(&e, ctx)) {
            if (next != NULL && limit > 0)
                kg_store_cursor_format(e.seq, NULL, next);
            return KG_OK;
        }
    }
    return KG_OK;
}

enum kg_status
kg_pg_audit_list(struct kg_store *st, const struct kg_audit_query *q, const struct kg_cursor *after,
                 kg_store_audit_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, q->tenant);
    if (after->set)
        kg_pg_arg_int(&a, after->num);
    else
        kg_pg_arg_text(&a, NULL);
    kg_pg_arg_limit(&a, q->page.limit);
    rc = kg_pg_query(s,
                     q->newest_first ? "SELECT " AUDIT_COLUMNS " FROM audit"
                                       " WHERE ($1::text IS NULL OR tenant = $1::text)"
                                       " AND ($2::bigint IS NULL OR seq < $2::bigint)"
                                       " ORDER BY seq DESC LIMIT $3::bigint"
                                     : "SELECT " AUDIT_COLUMNS " FROM audit"
                                       " WHERE ($1::text IS NULL OR tenant = $1::text)"
                                       " AND ($2::bigint IS NULL OR seq > $2::bigint)"
                                       " ORDER BY seq LIMIT $3::bigint",
                     &a, &res, "read audit trail", err);
    if (rc == KG_OK)
        rc = walk_entries(res, q->page.limit, cb, ctx, next);
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_audit_each(struct kg_store *st, kg_store_audit_cb cb, void *ctx, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_query(s, "SELECT " AUDIT_COLUMNS " FROM audit ORDER BY seq", NULL, &res,
                     "read audit trail", err);
    if (rc == KG_OK)
        rc = walk_entries(res, 0, cb, ctx, NULL);
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_audit_head(struct kg_store *st, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
                 struct kg_err *err)
{
    return read_head(kg_pg_from(st), false, seq, hash, err);
}
