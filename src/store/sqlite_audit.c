/* store/sqlite_audit.c - the audit trail in the SQLite backend.
 *
 * Owns the audit and audit_head tables (sql/003): appending entries inside
 * the transaction of the change they record, chained by
 * kg_store_audit_hash() onto the head, and reading them back, leniently
 * enough that a row edited by hand into any shape still reaches
 * verification (manage/audit.c) instead of failing the walk. Nothing here
 * decides whether the chain holds.
 */
#include <stdio.h>
#include <string.h>

#include "keygate/store.h"
#include "store/sqlite_int.h"

#define AUDIT_COLUMNS "seq, time, actor, tenant, action, object, details, prev_hash, hash"

static enum kg_status
read_head(struct sqlite_store *s, int64_t *seq, char hash[KG_AUDIT_HASH_HEX], struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s, "SELECT seq, hash FROM audit_head WHERE one = 1", &stmt,
                       "read audit head", err);
    if (rc != KG_OK)
        goto cleanup;
    step = sqlite3_step(stmt);
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = kg_sq_fail(s, "read audit head", err);
        goto cleanup;
    }
    if (step == SQLITE_DONE || sqlite3_column_type(stmt, 0) != SQLITE_INTEGER ||
        sqlite3_column_int64(stmt, 0) < 0 || !kg_sq_col_text(stmt, 1, hash, KG_AUDIT_HASH_HEX) ||
        strlen(hash) != KG_AUDIT_HASH_HEX - 1) {
        rc = kg_err_set(err, KG_ECORRUPT,
                        "%s: the audit chain head is missing or mangled; run keygate audit verify",
                        s->path);
        goto cleanup;
    }
    *seq = sqlite3_column_int64(stmt, 0);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static enum kg_status
append_one(struct sqlite_store *s, const struct kg_audit_entry *in, struct kg_err *err)
{
    struct kg_audit_entry e = *in;
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int64_t head = 0;

    rc = read_head(s, &head, e.prev_hash, err);
    if (rc != KG_OK)
        return rc;
    e.seq = head + 1;
    kg_store_audit_hash(s->base.audit_key, &e, e.prev_hash, e.hash);
    rc = kg_sq_prepare(s,
                       "INSERT INTO audit (" AUDIT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                       " ?8, ?9)",
                       &stmt, "append audit entry", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, e.seq) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, e.time) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 3, e.actor, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 4, e.tenant, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 5, e.action, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 6, e.object, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 7, e.details, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 8, e.prev_hash, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 9, e.hash, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "append audit entry", err);
        goto cleanup;
    }
    if (sqlite3_step(stmt) != SQLITE_DONE) {
        /* A row the head does not know about: someone wrote to the table. */
        if ((sqlite3_extended_errcode(s->db) & 0xff) == SQLITE_CONSTRAINT)
            rc = kg_err_set(err, KG_ECORRUPT,
                            "%s: audit entry %lld already exists although the chain ends before "
                            "it; run keygate audit verify",
                            s->path, (long long)e.seq);
        else
            rc = kg_sq_fail(s, "append audit entry", err);
        goto cleanup;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    rc = kg_sq_prepare(s, "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE one = 1", &stmt,
                       "append audit entry", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, e.seq) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, e.hash, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "append audit entry", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_audit_append_locked(struct sqlite_store *s, const struct kg_audit_entry *audit,
                          struct kg_err *err)
{
    enum kg_status rc = KG_OK;

    for (const struct kg_audit_entry *e = audit; e != NULL && rc == KG_OK; e = e->next)
        rc = append_one(s, e, err);
    return rc;
}

enum kg_status
kg_sq_audit_append(struct kg_store *st, const struct kg_audit_entry *audit, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc = kg_sq_begin(s, err);

    if (rc != KG_OK)
        return rc;
    return kg_sq_finish(s, KG_OK, audit, err);
}

/* Reads a row of AUDIT_COLUMNS. Never fails: what does not fit is cut
 * and the entry marked malformed, so verification can name it. */
static void
row_to_entry(sqlite3_stmt *stmt, struct kg_audit_entry *e)
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
    /* Types first: reading a value as another type converts it. */
    if (sqlite3_column_type(stmt, 1) != SQLITE_INTEGER)
        e->malformed = true;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (sqlite3_column_type(stmt, texts[i].col) != SQLITE_TEXT)
            e->malformed = true;
    }
    e->seq = sqlite3_column_int64(stmt, 0);
    e->time = sqlite3_column_int64(stmt, 1);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (!kg_sq_col_text(stmt, texts[i].col, texts[i].dst, texts[i].cap)) {
            const unsigned char *t = sqlite3_column_text(stmt, texts[i].col);

            memcpy(texts[i].dst, t, texts[i].cap - 1);
            texts[i].dst[texts[i].cap - 1] = '\0';
            e->malformed = true;
        }
        /* A NUL inside the text would hide the rest from the hash. */
        if (strlen(texts[i].dst) != (size_t)sqlite3_column_bytes(stmt, texts[i].col))
            e->malformed = true;
    }
}

/* Walks a prepared SELECT AUDIT_COLUMNS; limit and next as for keys. */
static enum kg_status
walk_entries(struct sqlite_store *s, sqlite3_stmt *stmt, size_t limit, kg_store_audit_cb cb,
             void *ctx, char *next, struct kg_err *err)
{
    struct kg_audit_entry e;
    size_t n = 0;
    int step;

    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (limit > 0 && n == limit) {
            if (next != NULL)
                kg_store_cursor_format(e.seq, NULL, next);
            return KG_OK;
        }
        row_to_entry(stmt, &e);
        n++;
        if (!cb(&e, ctx)) {
            if (next != NULL && limit > 0)
                kg_store_cursor_format(e.seq, NULL, next);
            return KG_OK;
        }
    }
    if (step != SQLITE_DONE)
        return kg_sq_fail(s, "read audit trail", err);
    return KG_OK;
}

enum kg_status
kg_sq_audit_list(struct kg_store *st, const struct kg_audit_query *q, const struct kg_cursor *after,
                 kg_store_audit_cb cb, void *ctx, char *next, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    /* ORDER BY cannot take a parameter, so each direction has its text. */
    rc = kg_sq_prepare(s,
                       q->newest_first
                           ? "SELECT " AUDIT_COLUMNS " FROM audit WHERE (?1 IS NULL OR tenant = ?1)"
                             " AND (?2 IS NULL OR seq < ?2) ORDER BY seq DESC LIMIT ?3"
                           : "SELECT " AUDIT_COLUMNS " FROM audit WHERE (?1 IS NULL OR tenant = ?1)"
                             " AND (?2 IS NULL OR seq > ?2) ORDER BY seq LIMIT ?3",
                       &stmt, "read audit trail", err);
    if (rc != KG_OK)
        goto cleanup;
    if (kg_sq_bind_opt_text(stmt, 1, q->tenant) != SQLITE_OK ||
        (after->set ? sqlite3_bind_int64(stmt, 2, after->num) : sqlite3_bind_null(stmt, 2)) !=
            SQLITE_OK ||
        kg_sq_bind_limit(stmt, 3, q->page.limit) != SQLITE_OK) {
        rc = kg_sq_fail(s, "read audit trail", err);
        goto cleanup;
    }
    rc = walk_entries(s, stmt, q->page.limit, cb, ctx, next, err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_audit_each(struct kg_store *st, kg_store_audit_cb cb, void *ctx, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_prepare(s, "SELECT " AUDIT_COLUMNS " FROM audit ORDER BY seq", &stmt,
                       "read audit trail", err);
    if (rc == KG_OK)
        rc = walk_entries(s, stmt, 0, cb, ctx, NULL, err);
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_audit_head(struct kg_store *st, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
                 struct kg_err *err)
{
    return read_head(kg_sq_from(st), seq, hash, err);
}
