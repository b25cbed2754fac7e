/* store/sqlite_int.h - what the files of the SQLite backend share; only
 * src/store/store_sqlite.c, sqlite_accounts.c, sqlite_audit.c and migrate.c
 * include this.
 *
 * The backend is split by table: store_sqlite.c opens the file and owns
 * keys, sqlite_accounts.c tenants and users, sqlite_audit.c the audit trail,
 * migrate.c the schema versions. These helpers are the one way each of them
 * prepares statements, runs transactions and turns SQLite errors into a
 * status, so every write is BEGIN IMMEDIATE ... COMMIT (rolled back on any
 * failure) and all user data is bound, never pasted into SQL.
 */
#ifndef KEYGATE_SQLITE_INT_H
#define KEYGATE_SQLITE_INT_H

#include <sqlite3.h>

#include "store/store_int.h"

struct sqlite_store {
    struct kg_store base; /* first, so store.c's pointer converts back */
    sqlite3 *db;
    char *path; /* as given, for error messages */
    /* kg_store_key_known()'s statement, prepared on first use and kept for
     * the connection's life: the key watch asks it up to every 10 ms in a
     * flood of unknown keys, and preparing it each time was most of it. */
    sqlite3_stmt *key_known;
};

static inline struct sqlite_store *
kg_sq_from(struct kg_store *st)
{
    return (struct sqlite_store *)st;
}

/* Turns the connection's last error into a status and words; what may be NULL. */
enum kg_status kg_sq_fail(struct sqlite_store *s, const char *what, struct kg_err *err);
/* SQL without parameters: transaction control, pragmas, migrations. */
enum kg_status kg_sq_exec(struct sqlite_store *s, const char *sql, const char *what,
                          struct kg_err *err);
enum kg_status kg_sq_prepare(struct sqlite_store *s, const char *sql, sqlite3_stmt **out,
                             const char *what, struct kg_err *err);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK (the last safe whatever happened). */
enum kg_status kg_sq_begin(struct sqlite_store *s, struct kg_err *err);
enum kg_status kg_sq_commit(struct sqlite_store *s, struct kg_err *err);
void kg_sq_rollback(struct sqlite_store *s);
/* The first column of the first row of sql. */
enum kg_status kg_sq_read_int(struct sqlite_store *s, const char *sql, int64_t *out,
                              const char *what, struct kg_err *err);

/* sqlite_changes.c: the change log (sql/008_change_log.sql). */
enum kg_status kg_sq_key_count(struct kg_store *st, size_t *n, struct kg_err *err);
enum kg_status kg_sq_key_census(struct kg_store *st, int64_t now, struct kg_key_census *out,
                                struct kg_err *err);
enum kg_status kg_sq_change_head(struct kg_store *st, int64_t *last, int64_t *trimmed,
                                 struct kg_err *err);
enum kg_status kg_sq_change_each(struct kg_store *st, int64_t after, size_t limit,
                                 kg_store_change_cb cb, void *ctx, struct kg_err *err);
enum kg_status kg_sq_change_trim(struct kg_store *st, int64_t before, size_t *trimmed,
                                 struct kg_err *err);
/* The secret's fingerprint (sql/011_secret_fingerprint.sql). */
enum kg_status kg_sq_fingerprint(struct kg_store *st, const char *fp, char stored[65],
                                 struct kg_err *err);

/* sqlite_events.c: the event outbox (sql/010_events.sql). */
enum kg_status kg_sq_event_add(struct kg_store *st, struct kg_event *ev,
                               const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_sq_event_add_locked(struct sqlite_store *s, struct kg_event *ev,
                                      struct kg_err *err);
enum kg_status kg_sq_event_fanout(struct kg_store *st, const char *endpoint, const char *types,
                                  int64_t now, int64_t window_s, size_t *added, struct kg_err *err);
enum kg_status kg_sq_delivery_due(struct kg_store *st, const char *endpoint, int64_t now,
                                  struct kg_event *ev, int64_t *attempts, struct kg_err *err);
enum kg_status kg_sq_delivery_done(struct kg_store *st, int64_t seq, const char *endpoint,
                                   bool delivered, int64_t next_at, long status, const char *error,
                                   int64_t now, struct kg_err *err);
enum kg_status kg_sq_event_list(struct kg_store *st, const struct kg_event_query *q,
                                const struct kg_cursor *after, kg_store_event_cb cb, void *ctx,
                                char *next, struct kg_err *err);
enum kg_status kg_sq_event_retry(struct kg_store *st, const char *id, const char *tenant,
                                 int64_t now, size_t *n, struct kg_err *err);
enum kg_status kg_sq_alerts_scan(struct kg_store *st, int64_t now, int64_t lead_s, int64_t idle_s,
                                 size_t *fired, struct kg_err *err);
enum kg_status kg_sq_quota_alert(struct kg_store *st, const struct kg_quota_alert *a, int64_t now,
                                 bool *fired, struct kg_err *err);
enum kg_status kg_sq_event_counts(struct kg_store *st, int64_t *pending, int64_t *delivered,
                                  int64_t *failed, struct kg_err *err);

/* Copies a TEXT column; NULL reads as "". false when it does not fit. */
bool kg_sq_col_text(sqlite3_stmt *stmt, int col, char *dst, size_t cap);
int64_t kg_sq_col_int_or(sqlite3_stmt *stmt, int col, int64_t if_null);

/* SQL for the start (Unix seconds) of the UTC day or month holding the
 * integer parameter now when the text p is 'day' or 'month', else 0: the
 * arithmetic of kg_quota_period_start() for the update statements. */
#define KG_SQ_PERIOD_START(p, now)                                                                 \
    "(CASE " p " WHEN 'day' THEN " now " - " now " % 86400"                                        \
    " WHEN 'month' THEN CAST(strftime('%s', " now ", 'unixepoch', 'start of month') AS INTEGER)"   \
    " ELSE 0 END)"

/* "" and "not set" numbers are bound as NULL, the schema's word for "none". */
int kg_sq_bind_text_or_null(sqlite3_stmt *stmt, int idx, const char *text);
int kg_sq_bind_int_or_null(sqlite3_stmt *stmt, int idx, int64_t v, int64_t null_value);
/* Binds NULL for a NULL pointer, the text otherwise. */
int kg_sq_bind_opt_text(sqlite3_stmt *stmt, int idx, const char *text);
/* Binds a page's LIMIT: one more than limit, so the walk can tell whether
 * a next page exists; -1 (no limit) for 0. */
int kg_sq_bind_limit(sqlite3_stmt *stmt, int idx, size_t limit);
/* Binds a cursor as (num, key) at idx and idx + 1, NULLs when unset. */
int kg_sq_bind_cursor(sqlite3_stmt *stmt, int idx, const struct kg_cursor *after);

/* store_sqlite.c: inserts a key inside the caller's transaction. user_id
 * and tenant, when not NULL, replace the record's (the owner decided by
 * the caller). */
enum kg_status kg_sq_key_insert_locked(struct sqlite_store *s, const struct kg_key_rec *rec,
                                       const char *user_id, const char *tenant, struct kg_err *err);

/* sqlite_audit.c: appends the entries of the chain audit (may be NULL)
 * inside the caller's transaction. */
enum kg_status kg_sq_audit_append_locked(struct sqlite_store *s, const struct kg_audit_entry *audit,
                                         struct kg_err *err);

/* Ends a write: appends audit and commits when rc is KG_OK, rolls back
 * otherwise. Returns the final status. */
enum kg_status kg_sq_finish(struct sqlite_store *s, enum kg_status rc,
                            const struct kg_audit_entry *audit, struct kg_err *err);

/* migrate.c */
enum kg_status kg_sq_check_identity(struct sqlite_store *s, struct kg_err *err);
enum kg_status kg_sq_migrate(struct sqlite_store *s, struct kg_err *err);

/* sqlite_accounts.c */
enum kg_status kg_sq_tenant_insert(struct kg_store *st, const struct kg_tenant_rec *rec,
                                   const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_sq_tenant_get(struct kg_store *st, const char *name, struct kg_tenant_rec *out,
                                struct kg_err *err);
enum kg_status kg_sq_tenant_update(struct kg_store *st, const struct kg_tenant_rec *rec,
                                   const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_sq_tenant_list(struct kg_store *st, const char *only,
                                 const struct kg_cursor *after, size_t limit, kg_store_tenant_cb cb,
                                 void *ctx, char *next, struct kg_err *err);
enum kg_status kg_sq_user_insert(struct kg_store *st, const struct kg_user_rec *rec,
                                 const struct kg_key_rec *first_key,
                                 const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_sq_user_lookup(struct kg_store *st, const char *by, const char *tenant,
                                 const char *value, struct kg_user_rec *out, struct kg_err *err);
enum kg_status kg_sq_user_update(struct kg_store *st, const struct kg_user_rec *rec,
                                 const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_sq_user_list(struct kg_store *st, const char *tenant,
                               const struct kg_cursor *after, size_t limit, kg_store_user_cb cb,
                               void *ctx, char *next, struct kg_err *err);
/* Makes sure tenant and its default user exist (creating them without
 * audit entries) and writes the user's id; inside the caller's transaction. */
enum kg_status kg_sq_default_owner_locked(struct sqlite_store *s, const char *tenant, int64_t now,
                                          char user_id[KG_ID_MAX], struct kg_err *err);

/* sqlite_usage.c */
enum kg_status kg_sq_key_touch(struct kg_store *st, const char *const *ids, const int64_t *times,
                               size_t n, struct kg_err *err);
enum kg_status kg_sq_key_usage_add(struct kg_store *st, const char *const *ids,
                                   const struct kg_key_usage *deltas, size_t n,
                                   const char *const *uids, const struct kg_user_usage *udeltas,
                                   size_t nu, int64_t now, struct kg_usage_total *ktot,
                                   struct kg_usage_total *utot, struct kg_err *err);
enum kg_status kg_sq_credit_reserve(struct kg_store *st, const char *key_id, int64_t want,
                                    int64_t period_start, int64_t now, int64_t lease_s,
                                    int64_t *granted, struct kg_err *err);
enum kg_status kg_sq_credit_renew(struct kg_store *st, int64_t now, int64_t lease_s,
                                  struct kg_err *err);
enum kg_status kg_sq_credit_release(struct kg_store *st, const char *key_id, struct kg_err *err);
enum kg_status kg_sq_key_usage_get(struct kg_store *st, const char *id, struct kg_key_usage *out,
                                   struct kg_err *err);
enum kg_status kg_sq_user_usage_get(struct kg_store *st, const char *id, struct kg_user_usage *out,
                                    struct kg_err *err);

/* sqlite_sessions.c: console sessions (sql/009_console.sql). */
enum kg_status kg_sq_session_insert(struct kg_store *st, const struct kg_session_rec *rec,
                                    struct kg_err *err);
enum kg_status kg_sq_session_get(struct kg_store *st, const unsigned char *digest,
                                 struct kg_session_rec *out, struct kg_err *err);
enum kg_status kg_sq_session_touch(struct kg_store *st, const unsigned char *digest, int64_t now,
                                   struct kg_err *err);
enum kg_status kg_sq_session_delete(struct kg_store *st, const unsigned char *digest,
                                    struct kg_err *err);

/* sqlite_audit.c */
enum kg_status kg_sq_audit_append(struct kg_store *st, const struct kg_audit_entry *audit,
                                  struct kg_err *err);
enum kg_status kg_sq_audit_list(struct kg_store *st, const struct kg_audit_query *q,
                                const struct kg_cursor *after, kg_store_audit_cb cb, void *ctx,
                                char *next, struct kg_err *err);
enum kg_status kg_sq_audit_each(struct kg_store *st, kg_store_audit_cb cb, void *ctx,
                                struct kg_err *err);
enum kg_status kg_sq_audit_head(struct kg_store *st, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
                                struct kg_err *err);

#endif
