/* store/store_sqlite.c - the SQLite backend of the store (see store_int.h).
 *
 * Owns the database file: creating it private (0600, parent 0700), telling a
 * keygate database from anything else, applying the embedded sql/ migrations
 * by PRAGMA user_version, and every read and write of the keys table. Every
 * write is one BEGIN IMMEDIATE transaction that is rolled back on any
 * failure, and all user data reaches SQL through bound parameters only.
 * Arguments were checked by store.c; this file does not check them again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "keygate/migrate.h"
#include "keygate/store.h"
#include "store/store_int.h"

/* PRAGMA application_id of a keygate database: 0x4B474154, "KGAT" in the
 * file header. Set with the first migration, so that another program's
 * SQLite file is not mistaken for ours. Decimal, because it is pasted into
 * the PRAGMA text as well. */
#define KG_APPLICATION_ID 1262977364
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

struct sqlite_store {
    struct kg_store base; /* first, so store.c's pointer converts back */
    sqlite3 *db;
    char *path; /* as given, for error messages */
};

/* Column order of KEY_COLUMNS, for reading a row and binding an insert. */
enum key_col {
    COL_ID,
    COL_NAME,
    COL_PREFIX,
    COL_LAST4,
    COL_DIGEST,
    COL_SCOPES,
    COL_TENANT,
    COL_CREATED_AT,
    COL_EXPIRES_AT,
    COL_REVOKED_AT,
    COL_LAST_USED_AT,
    COL_ROTATED_TO,
    COL_RATE,
    COL_RATE_BURST,
    COL_QUOTA_LIMIT,
    COL_QUOTA_PERIOD,
    COL_QUOTA_USED,
    COL_METADATA,
};

#define KEY_COLUMNS                                                                                \
    "id, name, prefix, last4, digest, scopes, tenant, created_at, expires_at, revoked_at, "        \
    "last_used_at, rotated_to, rate, rate_burst, quota_limit, quota_period, quota_used, "          \
    "metadata"

static struct sqlite_store *
from_base(struct kg_store *st)
{
    return (struct sqlite_store *)st;
}

/* Turns the connection's last error into a status and words. what may be
 * NULL. SQLite's messages name columns and constraints, never bound values,
 * so no digest can end up in them. */
static enum kg_status
db_fail(struct sqlite_store *s, const char *what, struct kg_err *err)
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

/* Runs SQL without parameters: transaction control, pragmas, migrations. */
static enum kg_status
exec_sql(struct sqlite_store *s, const char *sql, const char *what, struct kg_err *err)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(s, what, err);
    return KG_OK;
}

static enum kg_status
prepare(struct sqlite_store *s, const char *sql, sqlite3_stmt **out, const char *what,
        struct kg_err *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, out, NULL) != SQLITE_OK)
        return db_fail(s, what, err);
    return KG_OK;
}

/* IMMEDIATE takes the write lock up front, so a transaction that has read
 * the state it checks cannot lose the lock to another writer before it
 * writes (and busy_timeout waits for the lock instead of failing). */
static enum kg_status
tx_begin(struct sqlite_store *s, struct kg_err *err)
{
    return exec_sql(s, "BEGIN IMMEDIATE", "begin transaction", err);
}

static enum kg_status
tx_commit(struct sqlite_store *s, struct kg_err *err)
{
    return exec_sql(s, "COMMIT", "commit", err);
}

/* Safe to call whatever happened: SQLite may already have rolled back. */
static void
tx_rollback(struct sqlite_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static enum kg_status
read_int(struct sqlite_store *s, const char *sql, int64_t *out, const char *what,
         struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = prepare(s, sql, &stmt, what, err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        rc = db_fail(s, what, err);
        goto cleanup;
    }
    *out = sqlite3_column_int64(stmt, 0);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* Copies a TEXT column; NULL reads as "". false when it does not fit. */
static bool
col_text(sqlite3_stmt *stmt, int col, char *dst, size_t cap)
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

static int64_t
col_int_or(sqlite3_stmt *stmt, int col, int64_t if_null)
{
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return if_null;
    return sqlite3_column_int64(stmt, col);
}

/* Reads the current row of a SELECT KEY_COLUMNS into rec. */
static enum kg_status
row_to_rec(struct sqlite_store *s, sqlite3_stmt *stmt, struct kg_key_rec *rec, struct kg_err *err)
{
    const struct {
        enum key_col col;
        char *dst;
        size_t cap;
        const char *name;
    } texts[] = {
        {COL_NAME, rec->name, sizeof(rec->name), "name"},
        {COL_PREFIX, rec->prefix, sizeof(rec->prefix), "prefix"},
        {COL_LAST4, rec->last4, sizeof(rec->last4), "last4"},
        {COL_SCOPES, rec->scopes, sizeof(rec->scopes), "scopes"},
        {COL_TENANT, rec->tenant, sizeof(rec->tenant), "tenant"},
        {COL_ROTATED_TO, rec->rotated_to, sizeof(rec->rotated_to), "rotated_to"},
        {COL_RATE, rec->rate, sizeof(rec->rate), "rate"},
        {COL_QUOTA_PERIOD, rec->quota_period, sizeof(rec->quota_period), "quota_period"},
        {COL_METADATA, rec->metadata, sizeof(rec->metadata), "metadata"},
    };
    size_t i;

    memset(rec, 0, sizeof(*rec));
    if (!col_text(stmt, COL_ID, rec->id, sizeof(rec->id)))
        return kg_err_set(err, KG_ECORRUPT, "%s: a key id is longer than keygate allows", s->path);
    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (!col_text(stmt, (int)texts[i].col, texts[i].dst, texts[i].cap))
            return kg_err_set(err, KG_ECORRUPT, "%s: key %s: %s is longer than keygate allows",
                              s->path, rec->id, texts[i].name);
    }
    if (sqlite3_column_type(stmt, COL_DIGEST) != SQLITE_BLOB ||
        sqlite3_column_bytes(stmt, COL_DIGEST) != KG_DIGEST_BYTES)
        return kg_err_set(err, KG_ECORRUPT, "%s: key %s: digest is not %d bytes", s->path, rec->id,
                          KG_DIGEST_BYTES);
    memcpy(rec->digest, sqlite3_column_blob(stmt, COL_DIGEST), KG_DIGEST_BYTES);
    rec->created_at = col_int_or(stmt, COL_CREATED_AT, 0);
    rec->expires_at = col_int_or(stmt, COL_EXPIRES_AT, 0);
    rec->revoked_at = col_int_or(stmt, COL_REVOKED_AT, 0);
    rec->last_used_at = col_int_or(stmt, COL_LAST_USED_AT, 0);
    rec->rate_burst = col_int_or(stmt, COL_RATE_BURST, 0);
    rec->quota_limit = col_int_or(stmt, COL_QUOTA_LIMIT, -1);
    rec->quota_used = col_int_or(stmt, COL_QUOTA_USED, 0);
    return KG_OK;
}

/* "" and "not set" numbers go in as NULL, the schema's word for "none" or
 * "the default"; see sql/001_init.sql. */
static int
bind_text_or_null(sqlite3_stmt *stmt, int idx, const char *text)
{
    if (text[0] == '\0')
        return sqlite3_bind_null(stmt, idx);
    return sqlite3_bind_text(stmt, idx, text, -1, SQLITE_STATIC);
}

static int
bind_int_or_null(sqlite3_stmt *stmt, int idx, int64_t v, int64_t null_value)
{
    if (v == null_value)
        return sqlite3_bind_null(stmt, idx);
    return sqlite3_bind_int64(stmt, idx, v);
}

/* Binds rec to an INSERT whose parameters ?1.. follow KEY_COLUMNS. */
static bool
bind_rec(sqlite3_stmt *stmt, const struct kg_key_rec *rec)
{
    /* Empty tenant and metadata mean what the column defaults say. */
    const char *tenant = rec->tenant[0] != '\0' ? rec->tenant : "default";
    const char *metadata = rec->metadata[0] != '\0' ? rec->metadata : "{}";
    int rcs[] = {
        sqlite3_bind_text(stmt, COL_ID + 1, rec->id, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_NAME + 1, rec->name, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_PREFIX + 1, rec->prefix, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_LAST4 + 1, rec->last4, -1, SQLITE_STATIC),
        sqlite3_bind_blob(stmt, COL_DIGEST + 1, rec->digest, KG_DIGEST_BYTES, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_SCOPES + 1, rec->scopes, -1, SQLITE_STATIC),
        sqlite3_bind_text(stmt, COL_TENANT + 1, tenant, -1, SQLITE_STATIC),
        sqlite3_bind_int64(stmt, COL_CREATED_AT + 1, rec->created_at),
        bind_int_or_null(stmt, COL_EXPIRES_AT + 1, rec->expires_at, 0),
        bind_int_or_null(stmt, COL_REVOKED_AT + 1, rec->revoked_at, 0),
        bind_int_or_null(stmt, COL_LAST_USED_AT + 1, rec->last_used_at, 0),
        bind_text_or_null(stmt, COL_ROTATED_TO + 1, rec->rotated_to),
        bind_text_or_null(stmt, COL_RATE + 1, rec->rate),
        bind_int_or_null(stmt, COL_RATE_BURST + 1, rec->rate_burst, 0),
        bind_int_or_null(stmt, COL_QUOTA_LIMIT + 1, rec->quota_limit, -1),
        bind_text_or_null(stmt, COL_QUOTA_PERIOD + 1, rec->quota_period),
        sqlite3_bind_int64(stmt, COL_QUOTA_USED + 1, rec->quota_used),
        sqlite3_bind_text(stmt, COL_METADATA + 1, metadata, -1, SQLITE_STATIC),
    };
    size_t i;

    for (i = 0; i < sizeof(rcs) / sizeof(rcs[0]); i++) {
        if (rcs[i] != SQLITE_OK)
            return false;
    }
    return true;
}

/* Inserts rec inside the caller's transaction. */
static enum kg_status
insert_locked(struct sqlite_store *s, const struct kg_key_rec *rec, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    char what[80];
    int step;

    snprintf(what, sizeof(what), "insert key %s", rec->id);
    /* Looked up first so the answer can say which of id and digest clashed;
     * the UNIQUE constraints stay the last word. */
    rc = prepare(s, "SELECT id FROM keys WHERE id = ?1 OR digest = ?2 LIMIT 1", &stmt, what, err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, rec->id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 2, rec->digest, KG_DIGEST_BYTES, SQLITE_STATIC) != SQLITE_OK) {
        rc = db_fail(s, what, err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        const char *other = (const char *)sqlite3_column_text(stmt, 0);

        if (other != NULL && strcmp(other, rec->id) == 0)
            rc = kg_err_set(err, KG_ECONFLICT, "key %s already exists", rec->id);
        else
            rc = kg_err_set(err, KG_ECONFLICT, "key %s has the same digest as key %.39s", rec->id,
                            other != NULL ? other : "?");
        goto cleanup;
    }
    if (step != SQLITE_DONE) {
        rc = db_fail(s, what, err);
        goto cleanup;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;

    rc = prepare(s,
                 "INSERT INTO keys (" KEY_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                 " ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                 &stmt, what, err);
    if (rc != KG_OK)
        goto cleanup;
    if (!bind_rec(stmt, rec) || sqlite3_step(stmt) != SQLITE_DONE) {
        rc = db_fail(s, what, err);
        goto cleanup;
    }

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static enum kg_status
sqlite_key_insert(struct kg_store *st, const struct kg_key_rec *rec, struct kg_err *err)
{
    struct sqlite_store *s = from_base(st);
    enum kg_status rc;

    rc = tx_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = insert_locked(s, rec, err);
    if (rc == KG_OK)
        rc = tx_commit(s, err);
    if (rc != KG_OK)
        tx_rollback(s);
    return rc;
}

static enum kg_status
sqlite_key_get(struct kg_store *st, const char *id, struct kg_key_rec *out, struct kg_err *err)
{
    struct sqlite_store *s = from_base(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = prepare(s, "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1", &stmt, "get key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = db_fail(s, "get key", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW)
        rc = row_to_rec(s, stmt, out, err);
    else if (step == SQLITE_DONE)
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
    else
        rc = db_fail(s, "get key", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* The callback must not use this handle: the walk's statement is still
 * open, and a write from inside it would not see a consistent table. */
static enum kg_status
sqlite_key_each(struct kg_store *st, kg_store_key_cb cb, void *ctx, struct kg_err *err)
{
    struct sqlite_store *s = from_base(st);
    sqlite3_stmt *stmt = NULL;
    struct kg_key_rec *rec = NULL;
    enum kg_status rc;
    int step;

    /* About 6 KiB: kept off the stack of whichever thread walks. */
    rec = malloc(sizeof(*rec));
    if (rec == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: walk keys: out of memory", s->path);
    rc = prepare(s, "SELECT " KEY_COLUMNS " FROM keys ORDER BY created_at, id", &stmt, "walk keys",
                 err);
    if (rc != KG_OK)
        goto cleanup;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        rc = row_to_rec(s, stmt, rec, err);
        if (rc != KG_OK)
            goto cleanup;
        if (!cb(rec, ctx))
            goto cleanup;
    }
    if (step != SQLITE_DONE)
        rc = db_fail(s, "walk keys", err);

cleanup:
    sqlite3_finalize(stmt);
    free(rec);
    return rc;
}

/* Reads what kg_store_key_revoke() and _rotate() decide on: whether id
 * exists, its revoked_at (0 when NULL) and its rotated_to ("" when NULL). */
static enum kg_status
read_revocation(struct sqlite_store *s, const char *id, int64_t *revoked_at, char *rotated_to,
                size_t rotated_cap, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc =
        prepare(s, "SELECT revoked_at, rotated_to FROM keys WHERE id = ?1", &stmt, "read key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = db_fail(s, "read key", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE) {
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
        goto cleanup;
    }
    if (step != SQLITE_ROW) {
        rc = db_fail(s, "read key", err);
        goto cleanup;
    }
    *revoked_at = col_int_or(stmt, 0, 0);
    if (!col_text(stmt, 1, rotated_to, rotated_cap))
        rc = kg_err_set(err, KG_ECORRUPT, "%s: key %s: rotated_to is longer than keygate allows",
                        s->path, id);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static enum kg_status
sqlite_key_revoke(struct kg_store *st, const char *id, int64_t now, struct kg_err *err)
{
    struct sqlite_store *s = from_base(st);
    sqlite3_stmt *stmt = NULL;
    char rotated_to[KG_ID_MAX];
    int64_t revoked_at = 0;
    enum kg_status rc;

    rc = tx_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = read_revocation(s, id, &revoked_at, rotated_to, sizeof(rotated_to), err);
    if (rc != KG_OK)
        goto cleanup;
    if (revoked_at != 0 && revoked_at <= now) {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", id);
        goto cleanup;
    }
    /* Unset, or scheduled by a rotation grace that is cut short now. */
    rc = prepare(s, "UPDATE keys SET revoked_at = ?1 WHERE id = ?2", &stmt, "revoke key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, now) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE) {
        rc = db_fail(s, "revoke key", err);
        goto cleanup;
    }
    rc = tx_commit(s, err);

cleanup:
    sqlite3_finalize(stmt);
    if (rc != KG_OK)
        tx_rollback(s);
    return rc;
}

static enum kg_status
sqlite_key_rotate(struct kg_store *st, const char *old_id, const struct kg_key_rec *fresh,
                  int64_t revoke_at, int64_t now, struct kg_err *err)
{
    struct sqlite_store *s = from_base(st);
    sqlite3_stmt *stmt = NULL;
    char rotated_to[KG_ID_MAX];
    int64_t revoked_at = 0;
    enum kg_status rc;

    rc = tx_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = read_revocation(s, old_id, &revoked_at, rotated_to, sizeof(rotated_to), err);
    if (rc != KG_OK)
        goto cleanup;
    if (revoked_at != 0 && revoked_at <= now) {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s is already revoked", old_id);
        goto cleanup;
    }
    if (rotated_to[0] != '\0') {
        rc = kg_err_set(err, KG_ECONFLICT, "key %s was already rotated to %s", old_id, rotated_to);
        goto cleanup;
    }
    rc = insert_locked(s, fresh, err);
    if (rc != KG_OK)
        goto cleanup;
    /* min() keeps an earlier revocation already scheduled on the old key:
     * rotating must never extend a key's life. */
    rc = prepare(s,
                 "UPDATE keys SET revoked_at = min(coalesce(revoked_at, ?1), ?1),"
                 " rotated_to = ?2 WHERE id = ?3",
                 &stmt, "rotate key", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_int64(stmt, 1, revoke_at) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, fresh->id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 3, old_id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE) {
        rc = db_fail(s, "rotate key", err);
        goto cleanup;
    }
    rc = tx_commit(s, err);

cleanup:
    sqlite3_finalize(stmt);
    if (rc != KG_OK)
        tx_rollback(s);
    return rc;
}

static enum kg_status
sqlite_key_touch(struct kg_store *st, const char *const *ids, const int64_t *times, size_t n,
                 struct kg_err *err)
{
    struct sqlite_store *s = from_base(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    size_t i;

    rc = tx_begin(s, err);
    if (rc != KG_OK)
        return rc;
    /* The WHERE keeps the latest time: batches from several processes may
     * arrive out of order. */
    rc = prepare(s,
                 "UPDATE keys SET last_used_at = ?1"
                 " WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                 &stmt, "touch keys", err);
    if (rc != KG_OK)
        goto cleanup;
    for (i = 0; i < n; i++) {
        /* 0 means "never used" and cannot move a time forward. */
        if (ids[i] == NULL || times[i] <= 0)
            continue;
        if (sqlite3_bind_int64(stmt, 1, times[i]) != SQLITE_OK ||
            sqlite3_bind_text(stmt, 2, ids[i], -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_step(stmt) != SQLITE_DONE) {
            rc = db_fail(s, "touch keys", err);
            goto cleanup;
        }
        sqlite3_reset(stmt);
    }
    rc = tx_commit(s, err);

cleanup:
    sqlite3_finalize(stmt);
    if (rc != KG_OK)
        tx_rollback(s);
    return rc;
}

static enum kg_status
sqlite_data_version(struct kg_store *st, int64_t *out, struct kg_err *err)
{
    return read_int(from_base(st), "PRAGMA data_version", out, "data version", err);
}

static enum kg_status
sqlite_set_durable(struct kg_store *st, bool durable, struct kg_err *err)
{
    /* In WAL mode NORMAL can lose the last commits on power loss but never
     * corrupts the file: fine for counters, not for key changes. */
    return exec_sql(from_base(st),
                    durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                    "set synchronous", err);
}

/* One level is enough for the usual "data/keygate.db"; deeper trees are the
 * operator's to make. */
static enum kg_status
make_parent_dir(const char *path, struct kg_err *err)
{
    const char *slash = strrchr(path, '/');
    enum kg_status rc = KG_OK;
    char *dir;

    if (slash == NULL || slash == path)
        return KG_OK;
    dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: out of memory", path);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        rc = kg_err_set(err, KG_EIO, "%s: cannot create directory %s: %s", path, dir,
                        strerror(errno));
    free(dir);
    return rc;
}

/* Creates the file ourselves so it starts life 0600 whatever SQLite's
 * default; SQLite then gives the -wal and -shm files the same mode. */
static enum kg_status
create_file(const char *path, struct kg_err *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0)
        return kg_err_set(err, KG_EIO, "%s: cannot open: %s", path, strerror(errno));
    close(fd);
    return KG_OK;
}

/* Decides whether the open file is a keygate database this build can use:
 * an empty file (new), or one with our application_id and a schema version
 * no newer than ours. Reading the header is also where a file that is not
 * SQLite at all shows itself (SQLITE_NOTADB). */
static enum kg_status
check_identity(struct sqlite_store *s, struct kg_err *err)
{
    int64_t version = 0;
    int64_t app_id = 0;
    int64_t objects = 0;
    enum kg_status rc;

    rc = read_int(s, "PRAGMA user_version", &version, NULL, err);
    if (rc != KG_OK)
        return rc;
    rc = read_int(s, "PRAGMA application_id", &app_id, NULL, err);
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
    rc = read_int(s, "SELECT count(*) FROM sqlite_master", &objects, NULL, err);
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
    rc = tx_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = read_int(s, "PRAGMA user_version", &version, "read schema version", err);
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
        rc = tx_commit(s, err);
        goto cleanup;
    }
    m = &kg_migrations[version];
    snprintf(what, sizeof(what), "migration %s", m->name);
    rc = exec_sql(s, m->sql, what, err);
    if (rc != KG_OK)
        goto cleanup;
    if (version == 0) {
        rc = exec_sql(s, "PRAGMA application_id = " STRINGIFY(KG_APPLICATION_ID), what, err);
        if (rc != KG_OK)
            goto cleanup;
    }
    /* PRAGMA takes no parameters; the number is ours, not user data. */
    snprintf(bump, sizeof(bump), "PRAGMA user_version = %" PRId64, version + 1);
    rc = exec_sql(s, bump, what, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = tx_commit(s, err);

cleanup:
    if (rc != KG_OK)
        tx_rollback(s);
    return rc;
}

static enum kg_status
migrate(struct sqlite_store *s, struct kg_err *err)
{
    bool done = false;
    enum kg_status rc;

    do {
        rc = migrate_one(s, &done, err);
    } while (rc == KG_OK && !done);
    return rc;
}

/* Connection settings, after check_identity() so another program's file is
 * never switched to WAL. */
static enum kg_status
configure(struct sqlite_store *s, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    const char *mode;
    enum kg_status rc;

    rc = prepare(s, "PRAGMA journal_mode = WAL", &stmt, "set WAL journal", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        rc = db_fail(s, "set WAL journal", err);
        goto cleanup;
    }
    /* The pragma answers with the mode in force, which is not WAL where the
     * file system cannot share memory (some network mounts). */
    mode = (const char *)sqlite3_column_text(stmt, 0);
    if (mode == NULL || strcmp(mode, "wal") != 0) {
        rc = kg_err_set(err, KG_EIO, "%s: cannot use WAL journal (journal mode is %s)", s->path,
                        mode != NULL ? mode : "unknown");
        goto cleanup;
    }
    rc = exec_sql(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON", "set pragmas", err);

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static void
sqlite_close(struct kg_store *st)
{
    struct sqlite_store *s = from_base(st);

    if (s == NULL)
        return;
    /* Closing the last connection checkpoints and removes the WAL file. */
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

static enum kg_status
sqlite_open(const char *location, struct kg_store **out, struct kg_err *err)
{
    struct sqlite_store *s = NULL;
    enum kg_status rc;

    rc = make_parent_dir(location, err);
    if (rc != KG_OK)
        return rc;
    rc = create_file(location, err);
    if (rc != KG_OK)
        return rc;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kg_err_set(err, KG_ENOMEM, "%s: out of memory", location);
    s->base.ops = &kg_store_sqlite_ops;
    s->path = strdup(location);
    if (s->path == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "%s: out of memory", location);
        goto cleanup;
    }
    /* No SQLITE_OPEN_CREATE: the file exists by now, and if it vanished we
     * would rather fail than let SQLite create it with its default mode. */
    if (sqlite3_open_v2(location, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        if (s->db == NULL)
            rc = kg_err_set(err, KG_ENOMEM, "%s: out of memory", location);
        else
            rc = db_fail(s, "open", err);
        goto cleanup;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
#ifdef SQLITE_DBCONFIG_DEFENSIVE
    /* Refuses writable_schema and other ways to corrupt the file by SQL. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
#endif
    rc = check_identity(s, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = configure(s, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = migrate(s, err);
    if (rc != KG_OK)
        goto cleanup;
    *out = &s->base;
    s = NULL;

cleanup:
    if (s != NULL)
        sqlite_close(&s->base);
    return rc;
}

const struct kg_store_ops kg_store_sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .key_insert = sqlite_key_insert,
    .key_get = sqlite_key_get,
    .key_each = sqlite_key_each,
    .key_revoke = sqlite_key_revoke,
    .key_rotate = sqlite_key_rotate,
    .key_touch = sqlite_key_touch,
    .data_version = sqlite_data_version,
    .set_durable = sqlite_set_durable,
};
