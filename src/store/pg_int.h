/* store/pg_int.h - what the files of the PostgreSQL backend share; only
 * src/store/store_pg.c and the pg_*.c files include this.
 *
 * The backend mirrors the SQLite one file for file (sqlite_int.h):
 * store_pg.c opens the connection and owns keys, pg_accounts.c tenants and
 * users, pg_audit.c the audit trail, pg_usage.c the flush, pg_changes.c the
 * change log, pg_migrate.c the schema versions (sql/postgres/). Adding a
 * store function means one pg_X.c function beside its sqlite_X.c twin and
 * one row in kg_store_pg_ops.
 *
 * Every value reaches SQL as a parameter of PQexecParams (text, except the
 * digest: binary), never pasted into the statement. Every write is one
 * transaction (kg_pg_begin .. kg_pg_finish); the rows several instances
 * must not both decide on are read FOR UPDATE.
 */
#ifndef KEYGATE_PG_INT_H
#define KEYGATE_PG_INT_H

#include <libpq-fe.h>

#include "store/store_int.h"

struct pg_store {
    struct kg_store base; /* first, so store.c's pointer converts back */
    PGconn *conn;
    char *conninfo; /* as given: the reconnect uses it again */
    char *where;    /* "postgresql://host:port/db" without user or password, for messages */
    /* The token of a flush whose COMMIT got no answer (pg_usage.c), with
     * what it carried; "" when none is in doubt. */
    char doubt_token[40];
    struct pg_doubt *doubt;
    bool listening; /* LISTEN keygate_changes was issued on this connection */
    /* The usage writer's handle runs with synchronous_commit off
     * (pg_set_durable): a session setting, applied again after every
     * reconnect, which starts a new session with the server's default. */
    bool sync_off;
    /* Test hook (tests/unit/store): the next COMMIT of a flush succeeds
     * but is reported as a lost connection, as when the reply is lost. */
    bool test_lose_commit;
};

static inline struct pg_store *
kg_pg_from(struct kg_store *st)
{
    return (struct pg_store *)st;
}

/* The parameters of one statement. */
#define KG_PG_ARGS_MAX 24
struct kg_pg_args {
    int n;
    const char *values[KG_PG_ARGS_MAX];
    int lengths[KG_PG_ARGS_MAX];
    int formats[KG_PG_ARGS_MAX];
    char nums[KG_PG_ARGS_MAX][24];
};

void kg_pg_args_init(struct kg_pg_args *a);
/* text NULL binds SQL NULL. */
void kg_pg_arg_text(struct kg_pg_args *a, const char *text);
/* "" binds NULL, the schema's word for "none". */
void kg_pg_arg_text_or_null(struct kg_pg_args *a, const char *text);
void kg_pg_arg_int(struct kg_pg_args *a, int64_t v);
/* v == null_value binds NULL. */
void kg_pg_arg_int_or_null(struct kg_pg_args *a, int64_t v, int64_t null_value);
void kg_pg_arg_bool(struct kg_pg_args *a, bool v);
/* Binary bytea (the digest); p is borrowed until the query ran. */
void kg_pg_arg_bytes(struct kg_pg_args *a, const unsigned char *p, size_t n);
/* A page's LIMIT: one more than limit so the walk can tell whether a next
 * page exists; NULL (no limit) for 0. */
void kg_pg_arg_limit(struct kg_pg_args *a, size_t limit);
/* A cursor as (num, key), NULLs when unset. */
void kg_pg_arg_cursor(struct kg_pg_args *a, const struct kg_cursor *after);

/* Runs sql with args (may be NULL). On KG_OK *out (may be NULL: cleared)
 * is the result, which the caller PQclear()s. Outside a transaction a
 * statement that finds the connection broken reconnects and runs once
 * more; inside one it fails. */
enum kg_status kg_pg_query(struct pg_store *s, const char *sql, const struct kg_pg_args *args,
                           PGresult **out, const char *what, struct kg_err *err);
/* Rows an UPDATE/INSERT/DELETE result touched. */
int64_t kg_pg_affected(PGresult *res);
/* The status of res (may be NULL: the connection's own error) as words. */
enum kg_status kg_pg_fail(struct pg_store *s, PGresult *res, const char *what, struct kg_err *err);

/* BEGIN / COMMIT / ROLLBACK (the last safe whatever happened). */
enum kg_status kg_pg_begin(struct pg_store *s, struct kg_err *err);
enum kg_status kg_pg_commit(struct pg_store *s, struct kg_err *err);
void kg_pg_rollback(struct pg_store *s);
/* Ends a write: appends audit and commits when rc is KG_OK, rolls back
 * otherwise. Returns the final status. */
enum kg_status kg_pg_finish(struct pg_store *s, enum kg_status rc,
                            const struct kg_audit_entry *audit, struct kg_err *err);
/* Reconnects when the connection is broken (an outage that ended). */
enum kg_status kg_pg_connect(struct pg_store *s, struct kg_err *err);

/* Reads of a text-format result. NULL reads as "" / if_null / false. */
bool kg_pg_col_text(PGresult *res, int row, int col, char *dst, size_t cap);
int64_t kg_pg_col_int_or(PGresult *res, int row, int col, int64_t if_null);
bool kg_pg_col_bool(PGresult *res, int row, int col);
bool kg_pg_col_null(PGresult *res, int row, int col);
/* A bytea column of exactly n bytes (hex output format); false otherwise. */
bool kg_pg_col_bytes(PGresult *res, int row, int col, unsigned char *dst, size_t n);

/* SQL for the start (Unix seconds) of the UTC day or month holding the
 * bigint now when the text p is 'day' or 'month', else 0: the arithmetic
 * of kg_quota_period_start() (KG_SQ_PERIOD_START in SQLite). */
#define KG_PG_PERIOD_START(p, now)                                                                 \
    "(CASE " p " WHEN 'day' THEN " now " - " now " % 86400"                                        \
    " WHEN 'month' THEN extract(epoch FROM date_trunc('month', to_timestamp(" now                  \
    ") AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')::bigint"                                            \
    " ELSE 0 END)"

/* store_pg.c: inserts a key inside the caller's transaction; user_id and
 * tenant, when not NULL, replace the record's. */
enum kg_status kg_pg_key_insert_locked(struct pg_store *s, const struct kg_key_rec *rec,
                                       const char *user_id, const char *tenant, struct kg_err *err);

/* pg_audit.c */
enum kg_status kg_pg_audit_append_locked(struct pg_store *s, const struct kg_audit_entry *audit,
                                         struct kg_err *err);
enum kg_status kg_pg_audit_append(struct kg_store *st, const struct kg_audit_entry *audit,
                                  struct kg_err *err);
enum kg_status kg_pg_audit_list(struct kg_store *st, const struct kg_audit_query *q,
                                const struct kg_cursor *after, kg_store_audit_cb cb, void *ctx,
                                char *next, struct kg_err *err);
enum kg_status kg_pg_audit_each(struct kg_store *st, kg_store_audit_cb cb, void *ctx,
                                struct kg_err *err);
enum kg_status kg_pg_audit_head(struct kg_store *st, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
                                struct kg_err *err);

/* pg_migrate.c */
enum kg_status kg_pg_migrate(struct pg_store *s, struct kg_err *err);

/* pg_accounts.c */
enum kg_status kg_pg_tenant_insert(struct kg_store *st, const struct kg_tenant_rec *rec,
                                   const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_pg_tenant_get(struct kg_store *st, const char *name, struct kg_tenant_rec *out,
                                struct kg_err *err);
enum kg_status kg_pg_tenant_update(struct kg_store *st, const struct kg_tenant_rec *rec,
                                   const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_pg_tenant_list(struct kg_store *st, const char *only,
                                 const struct kg_cursor *after, size_t limit, kg_store_tenant_cb cb,
                                 void *ctx, char *next, struct kg_err *err);
enum kg_status kg_pg_user_insert(struct kg_store *st, const struct kg_user_rec *rec,
                                 const struct kg_key_rec *first_key,
                                 const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_pg_user_lookup(struct kg_store *st, const char *by, const char *tenant,
                                 const char *value, struct kg_user_rec *out, struct kg_err *err);
enum kg_status kg_pg_user_update(struct kg_store *st, const struct kg_user_rec *rec,
                                 const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_pg_user_list(struct kg_store *st, const char *tenant,
                               const struct kg_cursor *after, size_t limit, kg_store_user_cb cb,
                               void *ctx, char *next, struct kg_err *err);
enum kg_status kg_pg_default_owner_locked(struct pg_store *s, const char *tenant, int64_t now,
                                          char user_id[KG_ID_MAX], struct kg_err *err);

/* pg_usage.c */
enum kg_status kg_pg_key_touch(struct kg_store *st, const char *const *ids, const int64_t *times,
                               size_t n, struct kg_err *err);
enum kg_status kg_pg_credit_reserve(struct kg_store *st, const char *key_id, int64_t want,
                                    int64_t period_start, int64_t now, int64_t lease_s,
                                    int64_t *granted, struct kg_err *err);
enum kg_status kg_pg_credit_renew(struct kg_store *st, int64_t now, int64_t lease_s,
                                  struct kg_err *err);
enum kg_status kg_pg_credit_release(struct kg_store *st, const char *key_id, struct kg_err *err);
enum kg_status kg_pg_key_usage_add(struct kg_store *st, const char *const *ids,
                                   const struct kg_key_usage *deltas, size_t n,
                                   const char *const *uids, const struct kg_user_usage *udeltas,
                                   size_t nu, int64_t now, struct kg_usage_total *ktot,
                                   struct kg_usage_total *utot, struct kg_err *err);
enum kg_status kg_pg_key_usage_get(struct kg_store *st, const char *id, struct kg_key_usage *out,
                                   struct kg_err *err);
enum kg_status kg_pg_user_usage_get(struct kg_store *st, const char *id, struct kg_user_usage *out,
                                    struct kg_err *err);
void kg_pg_doubt_free(struct pg_store *s);

/* pg_changes.c */
enum kg_status kg_pg_key_count(struct kg_store *st, size_t *n, struct kg_err *err);
enum kg_status kg_pg_key_census(struct kg_store *st, int64_t now, struct kg_key_census *out,
                                struct kg_err *err);
enum kg_status kg_pg_change_head(struct kg_store *st, int64_t *last, int64_t *trimmed,
                                 struct kg_err *err);
enum kg_status kg_pg_change_each(struct kg_store *st, int64_t after, size_t limit,
                                 kg_store_change_cb cb, void *ctx, struct kg_err *err);
enum kg_status kg_pg_change_trim(struct kg_store *st, int64_t before, size_t *trimmed,
                                 struct kg_err *err);
enum kg_status kg_pg_data_version(struct kg_store *st, int64_t *out, struct kg_err *err);
enum kg_status kg_pg_wait_change(struct kg_store *st, int timeout_ms, bool *woke,
                                 struct kg_err *err);
enum kg_status kg_pg_fingerprint(struct kg_store *st, const char *fp, char stored[65],
                                 struct kg_err *err);

/* pg_sessions.c: console sessions (sql/postgres/002_console.sql). */
enum kg_status kg_pg_session_insert(struct kg_store *st, const struct kg_session_rec *rec,
                                    struct kg_err *err);
enum kg_status kg_pg_session_get(struct kg_store *st, const unsigned char *digest,
                                 struct kg_session_rec *out, struct kg_err *err);
enum kg_status kg_pg_session_touch(struct kg_store *st, const unsigned char *digest, int64_t now,
                                   struct kg_err *err);
enum kg_status kg_pg_session_delete(struct kg_store *st, const unsigned char *digest,
                                    struct kg_err *err);

/* pg_events.c: the webhook outbox (sql/postgres/003_events.sql). */
enum kg_status kg_pg_event_add_locked(struct pg_store *s, struct kg_event *ev, struct kg_err *err);
enum kg_status kg_pg_event_add(struct kg_store *st, struct kg_event *ev,
                               const struct kg_audit_entry *audit, struct kg_err *err);
enum kg_status kg_pg_event_fanout(struct kg_store *st, const char *endpoint, const char *types,
                                  int64_t now, int64_t window_s, size_t *added, struct kg_err *err);
enum kg_status kg_pg_delivery_due(struct kg_store *st, const char *endpoint, int64_t now,
                                  struct kg_event *ev, int64_t *attempts, struct kg_err *err);
enum kg_status kg_pg_delivery_done(struct kg_store *st, int64_t seq, const char *endpoint,
                                   bool delivered, int64_t next_at, long status, const char *error,
                                   int64_t now, struct kg_err *err);
enum kg_status kg_pg_event_list(struct kg_store *st, const struct kg_event_query *q,
                                const struct kg_cursor *after, kg_store_event_cb cb, void *ctx,
                                char *next, struct kg_err *err);
enum kg_status kg_pg_event_retry(struct kg_store *st, const char *id, const char *tenant,
                                 int64_t now, size_t *n, struct kg_err *err);
enum kg_status kg_pg_event_counts(struct kg_store *st, int64_t *pending, int64_t *delivered,
                                  int64_t *failed, struct kg_err *err);
enum kg_status kg_pg_alerts_scan(struct kg_store *st, int64_t now, int64_t lead_s, int64_t idle_s,
                                 size_t *fired, struct kg_err *err);
enum kg_status kg_pg_quota_alert(struct kg_store *st, const struct kg_quota_alert *a, int64_t now,
                                 bool *fired, struct kg_err *err);

#endif
