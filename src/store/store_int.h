/* store/store_int.h - what store.c and its backends share; nothing outside
 * src/store/ includes this.
 *
 * A backend is a table of functions (like curl's struct Curl_ssl). Its handle
 * type embeds struct kg_store as its first member, so store.c sees only the
 * common part and the backend converts back with a cast. store.c has already
 * checked the arguments (non-NULL, NUL-terminated, ids well formed, times
 * positive, cursors parsed, audit entries well formed and an audit key set
 * when entries are given) before any of these is called, so backends only do
 * storage.
 */
#ifndef KEYGATE_STORE_INT_H
#define KEYGATE_STORE_INT_H

#include "keygate/store.h"

struct kg_store_ops;

/* The common head of every backend's handle. */
struct kg_store {
    const struct kg_store_ops *ops;
    char instance[33]; /* random hex, set by kg_store_open (credit reservations) */
    bool has_audit_key;
    unsigned char audit_key[KG_AUDIT_KEY_BYTES]; /* wiped by kg_store_close() */
};

/* A parsed listing cursor: the sort key of the last row of the previous
 * page. For keys and users num is created_at and key the id; for tenants
 * num is created_at and key the name; for audit entries num is seq. */
struct kg_cursor {
    bool set; /* false: start from the first row */
    int64_t num;
    char key[KG_NAME_MAX];
};

/* Formats the cursor that follows a row (key NULL for audit cursors). */
void kg_store_cursor_format(int64_t num, const char *key, char out[KG_CURSOR_MAX]);

struct kg_store_ops {
    const char *name;  /* "sqlite", as in the "sqlite:PATH" location form */
    const char *alias; /* another scheme naming the backend, or NULL */
    /* Whether open() gets the whole location, scheme included (a URL the
     * backend's library parses), rather than what follows "name:". */
    bool whole_location;

    /* location has the "name:" prefix already removed (see whole_location).
     * On KG_OK, *out is a handle whose ops member points back at this table. */
    enum kg_status (*open)(const char *location, struct kg_store **out, struct kg_err *err);
    void (*close)(struct kg_store *st);

    enum kg_status (*key_add)(struct kg_store *st, const struct kg_key_rec *rec,
                              const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*key_add_batch)(struct kg_store *st, const struct kg_key_rec *recs, size_t n,
                                    struct kg_err *err);
    enum kg_status (*key_get)(struct kg_store *st, const char *id, struct kg_key_rec *out,
                              struct kg_err *err);
    enum kg_status (*key_each)(struct kg_store *st, kg_store_key_cb cb, void *ctx,
                               struct kg_err *err);
    enum kg_status (*key_list)(struct kg_store *st, const struct kg_key_query *q,
                               const struct kg_cursor *after, kg_store_key_cb cb, void *ctx,
                               char *next, struct kg_err *err);
    /* of: -1 = every key, else an enum kg_change_object naming id. */
    enum kg_status (*key_each_owner)(struct kg_store *st, int of, const char *id,
                                     kg_store_key_owner_cb cb, void *ctx, struct kg_err *err);
    enum kg_status (*key_update)(struct kg_store *st, const struct kg_key_rec *rec,
                                 const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*key_revoke)(struct kg_store *st, const char *id, int64_t now,
                                 const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*key_rotate)(struct kg_store *st, const char *old_id,
                                 const struct kg_key_rec *fresh, int64_t revoke_at, int64_t now,
                                 const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*key_touch)(struct kg_store *st, const char *const *ids, const int64_t *times,
                                size_t n, struct kg_err *err);
    enum kg_status (*key_usage_add)(struct kg_store *st, const char *const *ids,
                                    const struct kg_key_usage *deltas, size_t n,
                                    const char *const *uids, const struct kg_user_usage *udeltas,
                                    size_t nu, int64_t now, struct kg_usage_total *ktot,
                                    struct kg_usage_total *utot, struct kg_err *err);
    enum kg_status (*credit_reserve)(struct kg_store *st, const char *key_id, int64_t want,
                                     int64_t period_start, int64_t now, int64_t lease_s,
                                     int64_t *granted, struct kg_err *err);
    enum kg_status (*credit_renew)(struct kg_store *st, int64_t now, int64_t lease_s,
                                   struct kg_err *err);
    enum kg_status (*credit_release)(struct kg_store *st, const char *key_id, struct kg_err *err);
    enum kg_status (*user_usage_get)(struct kg_store *st, const char *id, struct kg_user_usage *out,
                                     struct kg_err *err);
    enum kg_status (*key_usage_get)(struct kg_store *st, const char *id, struct kg_key_usage *out,
                                    struct kg_err *err);

    enum kg_status (*tenant_insert)(struct kg_store *st, const struct kg_tenant_rec *rec,
                                    const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*tenant_get)(struct kg_store *st, const char *name, struct kg_tenant_rec *out,
                                 struct kg_err *err);
    enum kg_status (*tenant_update)(struct kg_store *st, const struct kg_tenant_rec *rec,
                                    const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*tenant_list)(struct kg_store *st, const char *only,
                                  const struct kg_cursor *after, size_t limit,
                                  kg_store_tenant_cb cb, void *ctx, char *next, struct kg_err *err);

    enum kg_status (*user_insert)(struct kg_store *st, const struct kg_user_rec *rec,
                                  const struct kg_key_rec *first_key,
                                  const struct kg_audit_entry *audit, struct kg_err *err);
    /* by: "id", "username" (tenant + value), "email", or "username_any"
     * (tenant NULL: the one user of any tenant with that username; none
     * when several tenants have one). */
    enum kg_status (*user_lookup)(struct kg_store *st, const char *by, const char *tenant,
                                  const char *value, struct kg_user_rec *out, struct kg_err *err);
    enum kg_status (*user_update)(struct kg_store *st, const struct kg_user_rec *rec,
                                  const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*user_list)(struct kg_store *st, const char *tenant,
                                const struct kg_cursor *after, size_t limit, kg_store_user_cb cb,
                                void *ctx, char *next, struct kg_err *err);

    enum kg_status (*audit_append)(struct kg_store *st, const struct kg_audit_entry *audit,
                                   struct kg_err *err);
    enum kg_status (*audit_list)(struct kg_store *st, const struct kg_audit_query *q,
                                 const struct kg_cursor *after, kg_store_audit_cb cb, void *ctx,
                                 char *next, struct kg_err *err);
    enum kg_status (*audit_each)(struct kg_store *st, kg_store_audit_cb cb, void *ctx,
                                 struct kg_err *err);
    enum kg_status (*audit_head)(struct kg_store *st, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
                                 struct kg_err *err);

    enum kg_status (*data_version)(struct kg_store *st, int64_t *out, struct kg_err *err);
    /* Optional (NULL: the backend has no cheap probe, writes are assumed to work). */
    enum kg_status (*write_probe)(struct kg_store *st, struct kg_err *err);
    enum kg_status (*key_known)(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                                int64_t now, bool *out, struct kg_err *err);
    enum kg_status (*key_count)(struct kg_store *st, size_t *n, struct kg_err *err);
    enum kg_status (*key_census)(struct kg_store *st, int64_t now, struct kg_key_census *out,
                                 struct kg_err *err);
    enum kg_status (*change_head)(struct kg_store *st, int64_t *last, int64_t *trimmed,
                                  struct kg_err *err);
    enum kg_status (*change_each)(struct kg_store *st, int64_t after, size_t limit,
                                  kg_store_change_cb cb, void *ctx, struct kg_err *err);
    enum kg_status (*change_trim)(struct kg_store *st, int64_t before, size_t *trimmed,
                                  struct kg_err *err);
    enum kg_status (*set_durable)(struct kg_store *st, bool durable, struct kg_err *err);
    enum kg_status (*fingerprint)(struct kg_store *st, const char *fp, char stored[65],
                                  struct kg_err *err);
    /* NULL: the backend has no change notification. */
    enum kg_status (*wait_change)(struct kg_store *st, int timeout_ms, bool *woke,
                                  struct kg_err *err);

    /* console sessions (sql/009_console.sql) */
    enum kg_status (*session_insert)(struct kg_store *st, const struct kg_session_rec *rec,
                                     struct kg_err *err);
    enum kg_status (*session_get)(struct kg_store *st, const unsigned char *digest,
                                  struct kg_session_rec *out, struct kg_err *err);
    enum kg_status (*session_touch)(struct kg_store *st, const unsigned char *digest, int64_t now,
                                    struct kg_err *err);
    enum kg_status (*session_delete)(struct kg_store *st, const unsigned char *digest,
                                     struct kg_err *err);

    /* Issue 18: the event outbox (keygate/store.h). */
    enum kg_status (*event_add)(struct kg_store *st, struct kg_event *ev,
                                const struct kg_audit_entry *audit, struct kg_err *err);
    enum kg_status (*event_fanout)(struct kg_store *st, const char *endpoint, const char *types,
                                   int64_t now, int64_t window_s, size_t *added,
                                   struct kg_err *err);
    enum kg_status (*delivery_due)(struct kg_store *st, const char *endpoint, int64_t now,
                                   struct kg_event *ev, int64_t *attempts, struct kg_err *err);
    enum kg_status (*delivery_done)(struct kg_store *st, int64_t seq, const char *endpoint,
                                    bool delivered, int64_t next_at, long status, const char *error,
                                    int64_t now, struct kg_err *err);
    enum kg_status (*event_list)(struct kg_store *st, const struct kg_event_query *q,
                                 const struct kg_cursor *after, kg_store_event_cb cb, void *ctx,
                                 char *next, struct kg_err *err);
    enum kg_status (*event_retry)(struct kg_store *st, const char *id, const char *tenant,
                                  int64_t now, size_t *n, struct kg_err *err);
    enum kg_status (*event_counts)(struct kg_store *st, int64_t *pending, int64_t *delivered,
                                   int64_t *failed, struct kg_err *err);
    enum kg_status (*alerts_scan)(struct kg_store *st, int64_t now, int64_t lead_s, int64_t idle_s,
                                  size_t *fired, struct kg_err *err);
    enum kg_status (*quota_alert)(struct kg_store *st, const struct kg_quota_alert *a, int64_t now,
                                  bool *fired, struct kg_err *err);
    enum kg_status (*key_by_digest)(struct kg_store *st,
                                    const unsigned char digest[KG_DIGEST_BYTES],
                                    struct kg_key_rec *out, struct kg_err *err);
    enum kg_status (*key_leaked)(struct kg_store *st, const char *id, bool revoke, int64_t now,
                                 struct kg_event *ev, const struct kg_audit_entry *audit,
                                 struct kg_err *err);
};

/* store_sqlite.c */
extern const struct kg_store_ops kg_store_sqlite_ops;
/* store_pg.c */
extern const struct kg_store_ops kg_store_pg_ops;

#endif
