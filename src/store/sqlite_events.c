/* store/sqlite_events.c - the webhook outbox of the SQLite backend
 * (sql/010_events.sql): events, one delivery row per (event, endpoint),
 * each endpoint's fan-out cursor. Key lifecycle events are written by the
 * schema's triggers; this file writes the others, inside the transaction
 * of their cause, and runs the sender's bookkeeping. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "store/sqlite_int.h"

#define EVENT_COLUMNS "seq, id, type, time, tenant, key_id, prefix, name, user_id, data"

static void
row_to_event(sqlite3_stmt *stmt, struct kg_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->seq = sqlite3_column_int64(stmt, 0);
    kg_sq_col_text(stmt, 1, ev->id, sizeof(ev->id));
    kg_sq_col_text(stmt, 2, ev->type, sizeof(ev->type));
    ev->time = sqlite3_column_int64(stmt, 3);
    kg_sq_col_text(stmt, 4, ev->tenant, sizeof(ev->tenant));
    kg_sq_col_text(stmt, 5, ev->key_id, sizeof(ev->key_id));
    kg_sq_col_text(stmt, 6, ev->prefix, sizeof(ev->prefix));
    kg_sq_col_text(stmt, 7, ev->name, sizeof(ev->name));
    kg_sq_col_text(stmt, 8, ev->user_id, sizeof(ev->user_id));
    if (!kg_sq_col_text(stmt, 9, ev->data, sizeof(ev->data)))
        memcpy(ev->data, "{}", 3);
}

enum kg_status
kg_sq_event_add_locked(struct sqlite_store *s, struct kg_event *ev, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    if (ev->id[0] == '\0') {
        unsigned char rnd[12];

        randombytes_buf(rnd, sizeof(rnd));
        memcpy(ev->id, "evt_", 4);
        sodium_bin2hex(ev->id + 4, sizeof(ev->id) - 4, rnd, sizeof(rnd));
    }
    rc = kg_sq_prepare(s,
                       "INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id,"
                       " data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                       &stmt, "write event", err);
    if (rc != KG_OK)
        return rc;
    if (sqlite3_bind_text(stmt, 1, ev->id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, ev->type, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, ev->time) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 4, ev->tenant, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 5, ev->key_id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 6, ev->prefix, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 7, ev->name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 8, ev->user_id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 9, ev->data[0] != '\0' ? ev->data : "{}", -1, SQLITE_STATIC) !=
            SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "write event", err);
    else
        ev->seq = sqlite3_last_insert_rowid(s->db);
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_event_add(struct kg_store *st, struct kg_event *ev, const struct kg_audit_entry *audit,
                struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc = kg_sq_begin(s, err);

    if (rc != KG_OK)
        return rc;
    rc = kg_sq_event_add_locked(s, ev, err);
    return kg_sq_finish(s, rc, audit, err);
}

enum kg_status
kg_sq_event_fanout(struct kg_store *st, const char *endpoint, const char *types, int64_t now,
                   int64_t window_s, size_t *added, struct kg_err *err)
{
    static const char fan_sql[] =
        "INSERT OR IGNORE INTO event_deliveries (event_seq, endpoint, next_at)"
        " SELECT seq, ?1, ?3 FROM events WHERE seq > coalesce("
        "   (SELECT last_seq FROM webhook_cursors WHERE endpoint = ?1),"
        "   (SELECT coalesce(max(seq), 0) FROM events WHERE time < ?3 - ?4))"
        " AND (?2 = '' OR instr(?2, ',' || type || ',') > 0)";
    static const char cursor_sql[] =
        "INSERT INTO webhook_cursors (endpoint, last_seq)"
        " VALUES (?1, (SELECT coalesce(max(seq), 0) FROM events))"
        " ON CONFLICT (endpoint) DO UPDATE SET last_seq = excluded.last_seq";
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s, fan_sql, &stmt, "fan out events", err);
    if (rc == KG_OK &&
        (sqlite3_bind_text(stmt, 1, endpoint, -1, SQLITE_STATIC) != SQLITE_OK ||
         sqlite3_bind_text(stmt, 2, types, -1, SQLITE_STATIC) != SQLITE_OK ||
         sqlite3_bind_int64(stmt, 3, now) != SQLITE_OK ||
         sqlite3_bind_int64(stmt, 4, window_s) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_DONE))
        rc = kg_sq_fail(s, "fan out events", err);
    if (rc == KG_OK && added != NULL)
        *added = (size_t)sqlite3_changes(s->db);
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (rc == KG_OK)
        rc = kg_sq_prepare(s, cursor_sql, &stmt, "fan out events", err);
    if (rc == KG_OK && (sqlite3_bind_text(stmt, 1, endpoint, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_step(stmt) != SQLITE_DONE))
        rc = kg_sq_fail(s, "fan out events", err);
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, NULL, err);
}

enum kg_status
kg_sq_delivery_due(struct kg_store *st, const char *endpoint, int64_t now, struct kg_event *ev,
                   int64_t *attempts, struct kg_err *err)
{
    /* A later event of a key waits while an earlier one to the same
     * endpoint is pending: receivers see a key's events in order. */
    static const char sql[] =
        "SELECT e.seq, e.id, e.type, e.time, e.tenant, e.key_id, e.prefix, e.name, e.user_id,"
        " e.data, d.attempts FROM event_deliveries AS d JOIN events AS e ON e.seq = d.event_seq"
        " WHERE d.endpoint = ?1 AND d.state = 'pending' AND d.next_at <= ?2"
        " AND NOT EXISTS (SELECT 1 FROM event_deliveries AS d2"
        "   JOIN events AS e2 ON e2.seq = d2.event_seq"
        "   WHERE d2.endpoint = d.endpoint AND d2.state = 'pending' AND e.key_id <> ''"
        "   AND e2.key_id = e.key_id AND d2.event_seq < d.event_seq)"
        " ORDER BY d.event_seq LIMIT 1";
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s, sql, &stmt, "read deliveries", err);
    if (rc != KG_OK)
        return rc;
    if (sqlite3_bind_text(stmt, 1, endpoint, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, now) != SQLITE_OK) {
        rc = kg_sq_fail(s, "read deliveries", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_DONE) {
        rc = KG_ENOTFOUND;
    } else if (step != SQLITE_ROW) {
        rc = kg_sq_fail(s, "read deliveries", err);
    } else {
        row_to_event(stmt, ev);
        *attempts = sqlite3_column_int64(stmt, 10);
    }
cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_delivery_done(struct kg_store *st, int64_t seq, const char *endpoint, bool delivered,
                    int64_t next_at, long status, const char *error, int64_t now,
                    struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;

    rc = kg_sq_prepare(s,
                       "UPDATE event_deliveries SET attempts = attempts + 1, last_status = ?3,"
                       " last_error = ?4, state = ?5, next_at = ?6,"
                       " done_at = CASE WHEN ?5 = 'pending' THEN 0 ELSE ?7 END"
                       " WHERE event_seq = ?1 AND endpoint = ?2",
                       &stmt, "record delivery", err);
    if (rc != KG_OK)
        return rc;
    if (sqlite3_bind_int64(stmt, 1, seq) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 2, endpoint, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, status) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 4, error, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 5,
                          delivered     ? "delivered"
                          : next_at > 0 ? "pending"
                                        : "failed",
                          -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 6, next_at) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 7, now) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "record delivery", err);
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_event_list(struct kg_store *st, const struct kg_event_query *q, const struct kg_cursor *after,
                 kg_store_event_cb cb, void *ctx, char *next, struct kg_err *err)
{
    static const char sql[] =
        "SELECT e.seq, e.id, e.type, e.time, e.tenant, e.key_id, e.prefix, e.name, e.user_id,"
        " e.data,"
        " (SELECT count(*) FROM event_deliveries WHERE event_seq = e.seq AND state = 'pending'),"
        " (SELECT count(*) FROM event_deliveries WHERE event_seq = e.seq AND state = 'delivered'),"
        " (SELECT count(*) FROM event_deliveries WHERE event_seq = e.seq AND state = 'failed')"
        " FROM events AS e WHERE (?1 IS NULL OR e.tenant = ?1) AND (?2 IS NULL OR e.type = ?2)"
        " AND (?3 IS NULL OR EXISTS (SELECT 1 FROM event_deliveries"
        "   WHERE event_seq = e.seq AND state = ?3))"
        " AND (?4 IS NULL OR e.seq < ?4) ORDER BY e.seq DESC LIMIT ?5";
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    struct kg_event ev;
    enum kg_status rc;
    size_t n = 0;
    int step;

    rc = kg_sq_prepare(s, sql, &stmt, "read events", err);
    if (rc != KG_OK)
        return rc;
    if (kg_sq_bind_opt_text(stmt, 1, q->tenant) != SQLITE_OK ||
        kg_sq_bind_opt_text(stmt, 2, q->type) != SQLITE_OK ||
        kg_sq_bind_opt_text(stmt, 3, q->state) != SQLITE_OK ||
        (after->set ? sqlite3_bind_int64(stmt, 4, after->num) : sqlite3_bind_null(stmt, 4)) !=
            SQLITE_OK ||
        kg_sq_bind_limit(stmt, 5, q->page.limit) != SQLITE_OK) {
        rc = kg_sq_fail(s, "read events", err);
        goto cleanup;
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (q->page.limit > 0 && n == q->page.limit) {
            if (next != NULL)
                kg_store_cursor_format(ev.seq, NULL, next);
            goto cleanup;
        }
        row_to_event(stmt, &ev);
        ev.pending = sqlite3_column_int64(stmt, 10);
        ev.delivered = sqlite3_column_int64(stmt, 11);
        ev.failed = sqlite3_column_int64(stmt, 12);
        n++;
        if (!cb(&ev, ctx))
            goto cleanup;
    }
    if (step != SQLITE_DONE)
        rc = kg_sq_fail(s, "read events", err);
cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_event_retry(struct kg_store *st, const char *id, const char *tenant, int64_t now, size_t *n,
                  struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int64_t found = 0;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    if (id != NULL) {
        rc = kg_sq_prepare(
            s, "SELECT count(*) FROM events WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)", &stmt,
            "retry events", err);
        if (rc == KG_OK &&
            (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK ||
             kg_sq_bind_opt_text(stmt, 2, tenant) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_ROW))
            rc = kg_sq_fail(s, "retry events", err);
        if (rc == KG_OK)
            found = sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        stmt = NULL;
        if (rc == KG_OK && found == 0)
            rc = kg_err_set(err, KG_ENOTFOUND, "no event %s", id);
    }
    if (rc == KG_OK)
        rc = kg_sq_prepare(s,
                           "UPDATE event_deliveries SET state = 'pending', attempts = 0,"
                           " next_at = ?1, done_at = 0 WHERE state = 'failed' AND event_seq IN"
                           " (SELECT seq FROM events WHERE (?2 IS NULL OR id = ?2)"
                           "  AND (?3 IS NULL OR tenant = ?3))",
                           &stmt, "retry events", err);
    if (rc == KG_OK &&
        (sqlite3_bind_int64(stmt, 1, now) != SQLITE_OK ||
         kg_sq_bind_opt_text(stmt, 2, id) != SQLITE_OK ||
         kg_sq_bind_opt_text(stmt, 3, tenant) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_DONE))
        rc = kg_sq_fail(s, "retry events", err);
    if (rc == KG_OK && n != NULL)
        *n = (size_t)sqlite3_changes(s->db);
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, NULL, err);
}

enum kg_status
kg_sq_event_counts(struct kg_store *st, int64_t *pending, int64_t *delivered, int64_t *failed,
                   struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc;

    rc = kg_sq_read_int(s, "SELECT count(*) FROM event_deliveries WHERE state = 'pending'", pending,
                        "count deliveries", err);
    if (rc == KG_OK)
        rc = kg_sq_read_int(s, "SELECT count(*) FROM event_deliveries WHERE state = 'delivered'",
                            delivered, "count deliveries", err);
    if (rc == KG_OK)
        rc = kg_sq_read_int(s, "SELECT count(*) FROM event_deliveries WHERE state = 'failed'",
                            failed, "count deliveries", err);
    return rc;
}

/* Each alert: which keys (?1 now, ?2 lead, ?3 idle), and the mark that
 * makes it once. The event rows first, then the marks, under one write
 * lock: the second statement selects the same keys as the first. */
#define ALERT_LIVE "(k.revoked_at IS NULL OR k.revoked_at > ?1) AND k.canary = 0"
static const struct {
    const char *kind;
    const char *where; /* over keys AS k */
    const char *mark;
    const char *data;
} alerts[] = {
    {"key.expiring", "?2 > 0 AND k.expires_at > ?1 AND k.expires_at <= ?1 + ?2 AND " ALERT_LIVE,
     "k.expires_at",
     "json_object('expires_at', strftime('%Y-%m-%dT%H:%M:%SZ', k.expires_at, 'unixepoch'))"},
    {"key.expired", "k.expires_at <= ?1 AND k.expires_at > ?1 - 86400 AND " ALERT_LIVE,
     "k.expires_at",
     "json_object('expires_at', strftime('%Y-%m-%dT%H:%M:%SZ', k.expires_at, 'unixepoch'))"},
    {"key.unused",
     "?3 > 0 AND coalesce(k.last_used_at, k.created_at) <= ?1 - ?3 AND "
     "(k.expires_at IS NULL OR k.expires_at > ?1) AND " ALERT_LIVE,
     "coalesce(k.last_used_at, k.created_at)",
     "json_object('last_used_at', CASE WHEN k.last_used_at IS NULL THEN NULL ELSE "
     "strftime('%Y-%m-%dT%H:%M:%SZ', k.last_used_at, 'unixepoch') END)"},
};

static enum kg_status
run_bound(struct sqlite_store *s, const char *sql, int64_t now, int64_t lead_s, int64_t idle_s,
          size_t *changes, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc = kg_sq_prepare(s, sql, &stmt, "alerts", err);

    const int64_t v[3] = {now, lead_s, idle_s};

    /* Not every alert names all three parameters. */
    for (int i = 0; rc == KG_OK && i < 3 && i < sqlite3_bind_parameter_count(stmt); i++)
        if (sqlite3_bind_int64(stmt, i + 1, v[i]) != SQLITE_OK)
            rc = kg_sq_fail(s, "alerts", err);
    if (rc == KG_OK && sqlite3_step(stmt) != SQLITE_DONE)
        rc = kg_sq_fail(s, "alerts", err);
    if (rc == KG_OK && changes != NULL)
        *changes += (size_t)sqlite3_changes(s->db);
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_alerts_scan(struct kg_store *st, int64_t now, int64_t lead_s, int64_t idle_s, size_t *fired,
                  struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc = kg_sq_begin(s, err);
    char sql[1536];

    for (size_t i = 0; rc == KG_OK && i < sizeof(alerts) / sizeof(alerts[0]); i++) {
        /* An alert that is off costs no statement (its ?2/?3 > 0 term
         * would still be tested once per key). */
        if ((strcmp(alerts[i].kind, "key.expiring") == 0 && lead_s <= 0) ||
            (strcmp(alerts[i].kind, "key.unused") == 0 && idle_s <= 0))
            continue;
        const char *not_sent = " AND NOT EXISTS (SELECT 1 FROM alerts AS a WHERE a.object = k.id"
                               " AND a.kind = '%s' AND a.mark = %s)";
        char cond[512];

        snprintf(cond, sizeof(cond), not_sent, alerts[i].kind, alerts[i].mark);
        snprintf(sql, sizeof(sql),
                 "INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id, data)"
                 " SELECT 'evt_' || lower(hex(randomblob(12))), '%s', ?1, k.tenant, k.id,"
                 " k.prefix, k.name, coalesce(k.user_id, ''), %s FROM keys AS k WHERE %s%s"
                 " ORDER BY k.id",
                 alerts[i].kind, alerts[i].data, alerts[i].where, cond);
        rc = run_bound(s, sql, now, lead_s, idle_s, fired, err);
        if (rc != KG_OK)
            break;
        snprintf(sql, sizeof(sql),
                 "INSERT OR REPLACE INTO alerts (object, kind, mark) SELECT k.id, '%s', %s"
                 " FROM keys AS k WHERE %s%s",
                 alerts[i].kind, alerts[i].mark, alerts[i].where, cond);
        rc = run_bound(s, sql, now, lead_s, idle_s, NULL, err);
    }
    return kg_sq_finish(s, rc, NULL, err);
}

/* The quota.threshold event of a key names the key; of a user's credits or
 * tier quota, the user (no key). ?1 id, ?2 now, ?3 subject, ?4 threshold,
 * ?5 used, ?6 limit, ?7 period, ?8 period start. */
#define QUOTA_DATA                                                                                 \
    "json_object('subject', ?3, 'threshold', ?4, 'used', ?5, 'limit', ?6, 'period', ?7,"           \
    " 'period_start', CASE WHEN ?8 > 0 THEN strftime('%Y-%m-%dT%H:%M:%SZ', ?8, 'unixepoch')"       \
    " ELSE NULL END)"
#define QUOTA_EVENT                                                                                \
    "INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id, data)"             \
    " SELECT 'evt_' || lower(hex(randomblob(12))), 'quota.threshold', ?2, "

enum kg_status
kg_sq_quota_alert(struct kg_store *st, const struct kg_quota_alert *a, int64_t now, bool *fired,
                  struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    const char *sql_key =
        QUOTA_EVENT "k.tenant, k.id, k.prefix, k.name, coalesce(k.user_id, ''), " QUOTA_DATA
                    " FROM keys AS k WHERE k.id = ?1";
    const char *sql_user =
        QUOTA_EVENT "u.tenant, '', '', '', u.id, " QUOTA_DATA " FROM users AS u WHERE u.id = ?1";
    sqlite3_stmt *stmt = NULL;
    char kind[32];
    int64_t sent = 0;
    enum kg_status rc;

    /* One mark per subject and threshold, its mark the period start: a
     * later period replaces it (the alert is allowed again). */
    snprintf(kind, sizeof(kind), "quota.%s.%d", a->subject, a->threshold);
    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s,
                       "SELECT count(*) FROM alerts WHERE object = ?1 AND kind = ?2 AND mark = ?3",
                       &stmt, "quota alert", err);
    if (rc == KG_OK && (sqlite3_bind_text(stmt, 1, a->id, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_bind_text(stmt, 2, kind, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_bind_int64(stmt, 3, a->period_start) != SQLITE_OK ||
                        sqlite3_step(stmt) != SQLITE_ROW))
        rc = kg_sq_fail(s, "quota alert", err);
    if (rc == KG_OK)
        sent = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (rc != KG_OK || sent > 0)
        goto finish;
    rc = kg_sq_prepare(s, strcmp(a->subject, "key") == 0 ? sql_key : sql_user, &stmt, "quota alert",
                       err);
    if (rc == KG_OK && (sqlite3_bind_text(stmt, 1, a->id, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_bind_int64(stmt, 2, now) != SQLITE_OK ||
                        sqlite3_bind_text(stmt, 3, a->subject, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_bind_int(stmt, 4, a->threshold) != SQLITE_OK ||
                        sqlite3_bind_int64(stmt, 5, a->used) != SQLITE_OK ||
                        sqlite3_bind_int64(stmt, 6, a->limit) != SQLITE_OK ||
                        sqlite3_bind_text(stmt, 7, a->period, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_bind_int64(stmt, 8, a->period_start) != SQLITE_OK ||
                        sqlite3_step(stmt) != SQLITE_DONE))
        rc = kg_sq_fail(s, "quota alert", err);
    if (rc == KG_OK && fired != NULL)
        *fired = sqlite3_changes(s->db) > 0;
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (rc == KG_OK)
        rc = kg_sq_prepare(s,
                           "INSERT OR REPLACE INTO alerts (object, kind, mark) VALUES (?1, ?2, ?3)",
                           &stmt, "quota alert", err);
    if (rc == KG_OK && (sqlite3_bind_text(stmt, 1, a->id, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_bind_text(stmt, 2, kind, -1, SQLITE_STATIC) != SQLITE_OK ||
                        sqlite3_bind_int64(stmt, 3, a->period_start) != SQLITE_OK ||
                        sqlite3_step(stmt) != SQLITE_DONE))
        rc = kg_sq_fail(s, "quota alert", err);
    sqlite3_finalize(stmt);
finish:
    rc = kg_sq_finish(s, rc, NULL, err);
    if (rc != KG_OK && fired != NULL)
        *fired = false;
    return rc;
}
