/* store/pg_migrate.c - schema versions of the PostgreSQL backend: tells a
 * keygate database from any other and applies the embedded
 * sql/postgres/NNN_*.sql migrations, each in one transaction that records
 * it in keygate_schema. Several instances may start at once: an advisory
 * lock held for the transaction lets one migrate while the others wait and
 * then find nothing left to do. Owns no data.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "keygate/migrate.h"
#include "store/pg_int.h"

/* "KGAT", as SQLite's application_id: the advisory lock of migrations. */
#define MIGRATE_LOCK "1262977364"

static enum kg_status
exec_script(struct pg_store *s, const char *sql, const char *what, struct kg_err *err)
{
    /* PQexec, not PQexecParams: a migration is several statements. */
    PGresult *res = PQexec(s->conn, sql);
    enum kg_status rc = KG_OK;

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = kg_pg_fail(s, res, what, err);
    PQclear(res);
    return rc;
}

static enum kg_status
read_version(struct pg_store *s, int64_t *version, struct kg_err *err)
{
    PGresult *res = NULL;
    enum kg_status rc;
    int64_t others;

    rc = kg_pg_query(s,
                     "SELECT to_regclass('keygate_schema') IS NOT NULL,"
                     " (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema())",
                     NULL, &res, "read schema version", err);
    if (rc != KG_OK)
        return rc;
    others = kg_pg_col_int_or(res, 0, 1, 0);
    if (!kg_pg_col_bool(res, 0, 0)) {
        PQclear(res);
        *version = 0;
        if (others > 0)
            return kg_err_set(err, KG_ECORRUPT,
                              "%s: not a keygate database (a PostgreSQL database with other "
                              "tables)",
                              s->where);
        return KG_OK;
    }
    PQclear(res);
    rc = kg_pg_query(s, "SELECT COALESCE(max(version), 0) FROM keygate_schema", NULL, &res,
                     "read schema version", err);
    if (rc != KG_OK)
        return rc;
    *version = kg_pg_col_int_or(res, 0, 0, 0);
    PQclear(res);
    if (*version > (int64_t)kg_pg_migrations_count)
        return kg_err_set(err, KG_ECORRUPT,
                          "%s: schema version %" PRId64 " is newer than this keygate (%zu)",
                          s->where, *version, kg_pg_migrations_count);
    return KG_OK;
}

/* Applies the next pending migration; *done when none is. The version is
 * read under the lock: another instance may have migrated meanwhile. */
static enum kg_status
migrate_one(struct pg_store *s, bool *done, struct kg_err *err)
{
    const struct kg_migration *m;
    struct kg_pg_args a;
    int64_t version = 0;
    enum kg_status rc;
    char what[96];

    *done = false;
    rc = kg_pg_begin(s, err);
    if (rc == KG_OK)
        rc = kg_pg_query(s, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ")", NULL, NULL,
                         "lock the schema", err);
    if (rc == KG_OK)
        rc = read_version(s, &version, err);
    if (rc != KG_OK)
        goto cleanup;
    if (version == (int64_t)kg_pg_migrations_count) {
        *done = true;
        rc = kg_pg_commit(s, err);
        goto cleanup;
    }
    if (version == 0) {
        rc = exec_script(s,
                         "CREATE TABLE keygate_schema (version integer PRIMARY KEY,"
                         " name text NOT NULL, applied_at bigint NOT NULL)",
                         "create the version table", err);
        if (rc != KG_OK)
            goto cleanup;
    }
    m = &kg_pg_migrations[version];
    snprintf(what, sizeof(what), "migration postgres/%s", m->name);
    rc = exec_script(s, m->sql, what, err);
    if (rc != KG_OK)
        goto cleanup;
    kg_pg_args_init(&a);
    kg_pg_arg_int(&a, version + 1);
    kg_pg_arg_text(&a, m->name);
    rc = kg_pg_query(s,
                     "INSERT INTO keygate_schema (version, name, applied_at)"
                     " VALUES ($1::integer, $2::text, extract(epoch FROM now())::bigint)",
                     &a, NULL, what, err);
    if (rc == KG_OK)
        rc = kg_pg_commit(s, err);

cleanup:
    if (rc != KG_OK)
        kg_pg_rollback(s);
    return rc;
}

enum kg_status
kg_pg_migrate(struct pg_store *s, struct kg_err *err)
{
    bool done = false;
    enum kg_status rc;

    do {
        rc = migrate_one(s, &done, err);
    } while (rc == KG_OK && !done);
    return rc;
}
