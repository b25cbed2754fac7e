/* store/migrate.c - schema versions of the SQLite backend: tells a keygate
 * database from any other file and applies the embedded sql/NNN_*.sql
 * migrations (cmake/embed_sql.cmake) by PRAGMA user_version, one
 * transaction per migration. Owns no data; the tables belong to
 * store_sqlite.c, sqlite_accounts.c and sqlite_audit.c.
 */
#include <inttypes.h>
#include <stdio.h>

#include "keygate/migrate.h"
#include "store/sqlite_int.h"

/* PRAGMA application_id of a keygate database: 0x4B474154, "KGAT" in the
 * file header. Set with the first migration, so that another program's
 * SQLite file is not mistaken for ours. Decimal, because it is pasted into
 * the PRAGMA text as well. */
#define KG_APPLICATION_ID 1262977364
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* Decides whether the open file is a keygate database this build can use:
 * an empty file (new), or one with our application_id and a schema version
 * no newer than ours. Reading the header is also where a file that is not
 * SQLite at all shows itself (SQLITE_NOTADB). */
enum kg_status
kg_sq_check_identity(struct sqlite_store *s, struct kg_err *err)
{
    int64_t version = 0;
    int64_t app_id = 0;
    int64_t objects = 0;
    enum kg_status rc;

    rc = kg_sq_read_int(s, "PRAGMA user_version", &version, NULL, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_read_int(s, "PRAGMA application_id", &app_id, NULL, err);
    if (rc != KG_OK)
        return rc;
    if (app_id != KG_APPLICATION_ID && (app_id != 0 || version != 0))
        return kg_err_set(err, KG_ECORRUPT,
                          "%s: not a keygate database (application_id %#" PRIx64
                          ", schema version %" PRId64 ")",
                          s->path, (uint64_t)app_id, version);
    if (version > (int64_t)kg_migrations_count)
        return kg_err_set(err, KG_ECORRUPT,
                          "%s: schema version %" PRId64 " is newer than this keygate (%zu)",
                          s->path, version, kg_migrations_count);
    if (app_id != 0)
        return KG_OK;
    rc = kg_sq_read_int(s, "SELECT count(*) FROM sqlite_master", &objects, NULL, err);
    if (rc != KG_OK)
        return rc;
    if (objects > 0)
        return kg_err_set(err, KG_ECORRUPT,
                          "%s: not a keygate database (a SQLite file with other tables)", s->path);
    return KG_OK;
}

/* Applies the next pending migration in its own transaction, the version
 * bump inside it, so a crash leaves the schema at one version or the next.
 * The version is read again under the write lock because another process
 * may have migrated since we looked. *done is set when none is pending. */
static enum kg_status
migrate_one(struct sqlite_store *s, bool *done, struct kg_err *err)
{
    const struct kg_migration *m;
    char what[96];
    char bump[64];
    int64_t version = 0;
    enum kg_status rc;

    *done = false;
    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_read_int(s, "PRAGMA user_version", &version, "read schema version", err);
    if (rc != KG_OK)
        goto cleanup;
    if (version > (int64_t)kg_migrations_count) {
        rc = kg_err_set(err, KG_ECORRUPT,
                        "%s: schema version %" PRId64 " is newer than this keygate (%zu)", s->path,
                        version, kg_migrations_count);
        goto cleanup;
    }
    if (version == (int64_t)kg_migrations_count) {
        *done = true;
        rc = kg_sq_commit(s, err);
        goto cleanup;
    }
    m = &kg_migrations[version];
    snprintf(what, sizeof(what), "migration %s", m->name);
    rc = kg_sq_exec(s, m->sql, what, err);
    if (rc != KG_OK)
        goto cleanup;
    if (version == 0) {
        rc = kg_sq_exec(s, "PRAGMA application_id = " STRINGIFY(KG_APPLICATION_ID), what, err);
        if (rc != KG_OK)
            goto cleanup;
    }
    /* PRAGMA takes no parameters; the number is ours, not user data. */
    snprintf(bump, sizeof(bump), "PRAGMA user_version = %" PRId64, version + 1);
    rc = kg_sq_exec(s, bump, what, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_sq_commit(s, err);

cleanup:
    if (rc != KG_OK)
        kg_sq_rollback(s);
    return rc;
}

enum kg_status
kg_sq_migrate(struct sqlite_store *s, struct kg_err *err)
{
    bool done = false;
    enum kg_status rc;

    do {
        rc = migrate_one(s, &done, err);
    } while (rc == KG_OK && !done);
    return rc;
}
