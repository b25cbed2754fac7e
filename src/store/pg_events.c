/* store/pg_events.c - the webhook outbox of the PostgreSQL backend
 * (sql/postgres/003_events.sql), the twin of sqlite_events.c: same rows,
 * ordering and errors. Several instances run a sender each against the
 * one database, so what SQLite's single writer gives is made explicit:
 * - fan-out of one endpoint holds an advisory lock, and reads the events
 *   and moves the cursor in one statement (one snapshot): two instances
 *   fanning out never skip an event nor make a delivery twice;
 * - delivery_due claims the delivery it returns: the row is locked (FOR
 *   UPDATE SKIP LOCKED) and its next_at moved CLAIM_S ahead in the same
 *   transaction, so no other instance is handed it while this one posts
 *   it. If the instance dies before delivery_done, the claim runs out and
 *   another instance delivers it (at-least-once). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "store/pg_int.h"

/* How long a claimed delivery is kept from other instances: well above
 * any webhook_timeout, so only a dead sender's claim runs out. */
#define CLAIM_S 300

#define EVENT_COLUMNS                                                                              \
    "e.seq, e.id, e.type, e.time, e.tenant, e.key_id, e.prefix, e.name, e.user_id, e.data"

static enum kg_status
row_to_event(struct pg_store *s, PGresult *res, int row, struct kg_event *ev, struct kg_err *err)
{
    const struct {
        int col;
        char *dst;
        size_t cap;
    } texts[] = {
        {1, ev->id, sizeof(ev->id)},           {2, ev->type, sizeof(ev->type)},
        {4, ev->tenant, sizeof(ev->tenant)},   {5, ev->key_id, sizeof(ev->key_id)},
        {6, ev->prefix, sizeof(ev->prefix)},   {7, ev->name, sizeof(ev->name)},
        {8, ev->user_id, sizeof(ev->user_id)}, {9, ev->data, sizeof(ev->data)},
    };

    memset(ev, 0, sizeof(*ev));
    ev->seq = kg_pg_col_int_or(res, row, 0, 0);
    ev->time = kg_pg_col_int_or(res, row, 3, 0);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (!kg_pg_col_text(res, row, texts[i].col, texts[i].dst, texts[i].cap))
            return kg_err_set(err, KG_ECORRUPT,
                              "%s: event %" PRId64 " is longer than keygate allows", s->where,
                              ev->seq);
    }
    if (ev->data[0] == '\0')
        memcpy(ev->data, "{}", 3);
    return KG_OK;
}

enum kg_status
kg_pg_event_add_locked(struct pg_store *s, struct kg_event *ev, struct kg_err *err)
{
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    if (ev->id[0] == '\0') {
        unsigned char rnd[12];

        randombytes_buf(rnd, sizeof(rnd));
        memcpy(ev->id, "evt_", 4);
        sodium_bin2hex(ev->id + 4, sizeof(ev->id) - 4, rnd, sizeof(rnd));
    }
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, ev->id);
    kg_pg_arg_text(&a, ev->type);
    kg_pg_arg_int(&a, ev->time);
    kg_pg_arg_text(&a, ev->tenant);
    kg_pg_arg_text(&a, ev->key_id);
    kg_pg_arg_text(&a, ev->prefix);
    kg_pg_arg_text(&a, ev->name);
    kg_pg_arg_text(&a, ev->user_id);
    kg_pg_arg_text(&a, ev->data[0] != '\0' ? ev->data : "{}");
    rc = kg_pg_query(s,
                     "INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id,"
                     " data) VALUES ($1::text, $2::text, $3::bigint, $4::text, $5::text, $6::text,"
                     " $7::text, $8::text, $9::text) RETURNING seq",
                     &a, &res, "write event", err);
    if (rc == KG_OK)
        ev->seq = kg_pg_col_int_or(res, 0, 0, 0);
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_event_add(struct kg_store *st, struct kg_event *ev, const struct kg_audit_entry *audit,
                struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    enum kg_status rc = kg_pg_begin(s, err);

    if (rc != KG_OK)
        return rc;
    rc = kg_pg_event_add_locked(s, ev, err);
    return kg_pg_finish(s, rc, audit, err);
}

enum kg_status
kg_pg_event_fanout(struct kg_store *st, const char *endpoint, const char *types, int64_t now,
                   int64_t window_s, size_t *added, struct kg_err *err)
{
    /* One statement, so one snapshot: the cursor moves to the head the
     * insert saw, never past an event it did not see. */
    static const char fan_sql[] =
        "WITH head AS (SELECT coalesce(max(seq), 0) AS h FROM events),"
        " start AS (SELECT coalesce("
        "   (SELECT last_seq FROM webhook_cursors WHERE endpoint = $1::text),"
        "   (SELECT coalesce(max(seq), 0) FROM events WHERE time < $3::bigint - $4::bigint)) AS s),"
        " ins AS (INSERT INTO event_deliveries (event_seq, endpoint, next_at)"
        "   SELECT e.seq, $1::text, $3::bigint FROM events AS e, head, start"
        "   WHERE e.seq > start.s AND e.seq <= head.h"
        "   AND ($2::text = '' OR strpos($2::text, ',' || e.type || ',') > 0)"
        "   ORDER BY e.seq ON CONFLICT DO NOTHING RETURNING 1),"
        " cur AS (INSERT INTO webhook_cursors (endpoint, last_seq)"
        "   SELECT $1::text, h FROM head"
        "   ON CONFLICT (endpoint) DO UPDATE SET last_seq = excluded.last_seq RETURNING 1)"
        " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM cur)";
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    /* Instances fanning out to the same endpoint take turns; the second
     * sees the first's cursor (READ COMMITTED: a new snapshot per
     * statement). */
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, endpoint);
    rc = kg_pg_query(
        s, "SELECT pg_advisory_xact_lock(hashtextextended('keygate.fanout:' || $1::text, 0))", &a,
        NULL, "fan out events", err);
    if (rc == KG_OK) {
        kg_pg_arg_text(&a, types);
        kg_pg_arg_int(&a, now);
        kg_pg_arg_int(&a, window_s);
        rc = kg_pg_query(s, fan_sql, &a, &res, "fan out events", err);
    }
    if (rc == KG_OK && added != NULL)
        *added = (size_t)kg_pg_col_int_or(res, 0, 0, 0);
    PQclear(res);
    return kg_pg_finish(s, rc, NULL, err);
}

enum kg_status
kg_pg_delivery_due(struct kg_store *st, const char *endpoint, int64_t now, struct kg_event *ev,
                   int64_t *attempts, struct kg_err *err)
{
    /* A later event of a key waits while an earlier one to the same
     * endpoint is pending (claimed ones included): receivers see a key's
     * events in order. SKIP LOCKED: a delivery another instance is
     * claiming right now is passed over, not waited for. */
    static const char sql[] =
        "SELECT " EVENT_COLUMNS ", d.attempts FROM event_deliveries AS d"
        " JOIN events AS e ON e.seq = d.event_seq"
        " WHERE d.endpoint = $1::text AND d.state = 'pending' AND d.next_at <= $2::bigint"
        " AND NOT EXISTS (SELECT 1 FROM event_deliveries AS d2"
        "   JOIN events AS e2 ON e2.seq = d2.event_seq"
        "   WHERE d2.endpoint = d.endpoint AND d2.state = 'pending' AND e.key_id <> ''"
        "   AND e2.key_id = e.key_id AND d2.event_seq < d.event_seq)"
        " ORDER BY d.event_seq LIMIT 1 FOR UPDATE OF d SKIP LOCKED";
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, endpoint);
    kg_pg_arg_int(&a, now);
    rc = kg_pg_query(s, sql, &a, &res, "read deliveries", err);
    if (rc == KG_OK && PQntuples(res) == 0)
        rc = KG_ENOTFOUND;
    if (rc == KG_OK)
        rc = row_to_event(s, res, 0, ev, err);
    if (rc == KG_OK) {
        *attempts = kg_pg_col_int_or(res, 0, 10, 0);
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, ev->seq);
        kg_pg_arg_text(&a, endpoint);
        kg_pg_arg_int(&a, now + CLAIM_S);
        rc = kg_pg_query(s,
                         "UPDATE event_deliveries SET next_at = $3::bigint"
                         " WHERE event_seq = $1::bigint AND endpoint = $2::text",
                         &a, NULL, "claim delivery", err);
    }
    PQclear(res);
    if (rc == KG_ENOTFOUND) {
        kg_pg_rollback(s);
        return rc;
    }
    return kg_pg_finish(s, rc, NULL, err);
}

enum kg_status
kg_pg_delivery_done(struct kg_store *st, int64_t seq, const char *endpoint, bool delivered,
                    int64_t next_at, long status, const char *error, int64_t now,
                    struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;

    kg_pg_args_init(&a);
    kg_pg_arg_int(&a, seq);
    kg_pg_arg_text(&a, endpoint);
    kg_pg_arg_int(&a, status);
    kg_pg_arg_text(&a, error);
    kg_pg_arg_text(&a, delivered ? "delivered" : next_at > 0 ? "pending" : "failed");
    kg_pg_arg_int(&a, next_at);
    kg_pg_arg_int(&a, now);
    /* One statement, its own transaction. A delivered row stays so: the
     * late answer of a sender whose claim ran out (another instance
     * delivered meanwhile) must not send it again. */
    return kg_pg_query(
        s,
        "UPDATE event_deliveries SET attempts = attempts + 1,"
        " last_status = $3::bigint, last_error = $4::text, state = $5::text,"
        " next_at = $6::bigint,"
        " done_at = CASE WHEN $5::text = 'pending' THEN 0 ELSE $7::bigint END"
        " WHERE event_seq = $1::bigint AND endpoint = $2::text AND state <> 'delivered'",
        &a, NULL, "record delivery", err);
}

enum kg_status
kg_pg_event_list(struct kg_store *st, const struct kg_event_query *q, const struct kg_cursor *after,
                 kg_store_event_cb cb, void *ctx, char *next, struct kg_err *err)
{
    static const char sql[] =
        "SELECT " EVENT_COLUMNS ","
        " (SELECT count(*) FROM event_deliveries WHERE event_seq = e.seq AND state = 'pending'),"
        " (SELECT count(*) FROM event_deliveries WHERE event_seq = e.seq AND state = 'delivered'),"
        " (SELECT count(*) FROM event_deliveries WHERE event_seq = e.seq AND state = 'failed')"
        " FROM events AS e WHERE ($1::text IS NULL OR e.tenant = $1::text)"
        " AND ($2::text IS NULL OR e.type = $2::text)"
        " AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM event_deliveries"
        "   WHERE event_seq = e.seq AND state = $3::text))"
        " AND ($4::bigint IS NULL OR e.seq < $4::bigint) ORDER BY e.seq DESC LIMIT $5::bigint";
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    struct kg_event ev = {0};
    enum kg_status rc;
    int rows;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, q->tenant);
    kg_pg_arg_text(&a, q->type);
    kg_pg_arg_text(&a, q->state);
    if (after->set)
        kg_pg_arg_int(&a, after->num);
    else
        kg_pg_arg_text(&a, NULL);
    kg_pg_arg_limit(&a, q->page.limit);
    rc = kg_pg_query(s, sql, &a, &res, "read events", err);
    if (rc != KG_OK)
        return rc;
    rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        if (q->page.limit > 0 && (size_t)r == q->page.limit) {
            if (next != NULL)
                kg_store_cursor_format(ev.seq, NULL, next);
            break;
        }
        rc = row_to_event(s, res, r, &ev, err);
        if (rc != KG_OK)
            break;
        ev.pending = kg_pg_col_int_or(res, r, 10, 0);
        ev.delivered = kg_pg_col_int_or(res, r, 11, 0);
        ev.failed = kg_pg_col_int_or(res, r, 12, 0);
        if (!cb(&ev, ctx))
            break;
    }
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_event_retry(struct kg_store *st, const char *id, const char *tenant, int64_t now, size_t *n,
                  struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    if (rc != KG_OK)
        return rc;
    if (id != NULL) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, id);
        kg_pg_arg_text(&a, tenant);
        rc = kg_pg_query(s,
                         "SELECT 1 FROM events WHERE id = $1::text"
                         " AND ($2::text IS NULL OR tenant = $2::text)",
                         &a, &res, "retry events", err);
        if (rc == KG_OK && PQntuples(res) == 0)
            rc = kg_err_set(err, KG_ENOTFOUND, "no event %s", id);
        PQclear(res);
        res = NULL;
    }
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, now);
        kg_pg_arg_text(&a, id);
        kg_pg_arg_text(&a, tenant);
        rc =
            kg_pg_query(s,
                        "UPDATE event_deliveries SET state = 'pending', attempts = 0,"
                        " next_at = $1::bigint, done_at = 0 WHERE state = 'failed' AND event_seq IN"
                        " (SELECT seq FROM events WHERE ($2::text IS NULL OR id = $2::text)"
                        "  AND ($3::text IS NULL OR tenant = $3::text))",
                        &a, &res, "retry events", err);
    }
    if (rc == KG_OK && n != NULL)
        *n = (size_t)kg_pg_affected(res);
    PQclear(res);
    return kg_pg_finish(s, rc, NULL, err);
}

enum kg_status
kg_pg_event_counts(struct kg_store *st, int64_t *pending, int64_t *delivered, int64_t *failed,
                   struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    PGresult *res = NULL;
    enum kg_status rc;

    rc = kg_pg_query(s,
                     "SELECT count(*) FILTER (WHERE state = 'pending'),"
                     " count(*) FILTER (WHERE state = 'delivered'),"
                     " count(*) FILTER (WHERE state = 'failed') FROM event_deliveries",
                     NULL, &res, "count deliveries", err);
    if (rc == KG_OK) {
        *pending = kg_pg_col_int_or(res, 0, 0, 0);
        *delivered = kg_pg_col_int_or(res, 0, 1, 0);
        *failed = kg_pg_col_int_or(res, 0, 2, 0);
    }
    PQclear(res);
    return rc;
}

/* Each alert as in sqlite_events.c ($1 now, $2 lead, $3 idle), the JSON
 * text written as SQLite's json_object() writes it. */
#define ALERT_LIVE "(k.revoked_at IS NULL OR k.revoked_at > $1::bigint) AND NOT k.canary"
#define ISO_UTC(t)                                                                                 \
    "to_char(to_timestamp(" t ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
static const struct {
    const char *kind;
    const char *where; /* over keys AS k */
    const char *mark;
    const char *data;
} alerts[] = {
    {"key.expiring",
     "$2::bigint > 0 AND k.expires_at > $1::bigint AND k.expires_at <= $1::bigint + $2::bigint"
     " AND " ALERT_LIVE,
     "k.expires_at", "'{\"expires_at\":\"' || " ISO_UTC("k.expires_at") " || '\"}'"},
    {"key.expired",
     "k.expires_at <= $1::bigint AND k.expires_at > $1::bigint - 86400 AND " ALERT_LIVE,
     "k.expires_at", "'{\"expires_at\":\"' || " ISO_UTC("k.expires_at") " || '\"}'"},
    {"key.unused",
     "$3::bigint > 0 AND coalesce(k.last_used_at, k.created_at) <= $1::bigint - $3::bigint AND "
     "(k.expires_at IS NULL OR k.expires_at > $1::bigint) AND " ALERT_LIVE,
     "coalesce(k.last_used_at, k.created_at)",
     "'{\"last_used_at\":' || CASE WHEN k.last_used_at IS NULL THEN 'null' ELSE '\"' || " ISO_UTC(
         "k.last_used_at") " || '\"' END || '}'"},
};

enum kg_status
kg_pg_alerts_scan(struct kg_store *st, int64_t now, int64_t lead_s, int64_t idle_s, size_t *fired,
                  struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    enum kg_status rc = kg_pg_begin(s, err);
    struct kg_pg_args a;
    char sql[2048];

    /* Instances scanning at once take turns: the second sees the marks
     * the first wrote, so each alert is sent once. */
    if (rc == KG_OK)
        rc = kg_pg_query(s, "SELECT pg_advisory_xact_lock(hashtextextended('keygate.alerts', 0))",
                         NULL, NULL, "alerts", err);
    for (size_t i = 0; rc == KG_OK && i < sizeof(alerts) / sizeof(alerts[0]); i++) {
        PGresult *res = NULL;

        /* The events and the marks in one statement: both from the same
         * rows of one snapshot. */
        snprintf(sql, sizeof(sql),
                 "WITH due AS (SELECT k.id, k.tenant, k.prefix, k.name, k.user_id,"
                 " %s AS mark, %s AS data FROM keys AS k WHERE %s AND NOT EXISTS"
                 " (SELECT 1 FROM alerts AS a WHERE a.object = k.id AND a.kind = '%s'"
                 " AND a.mark = %s) ORDER BY k.id COLLATE \"C\"),"
                 " ev AS (INSERT INTO events (id, type, time, tenant, key_id, prefix, name,"
                 " user_id, data) SELECT keygate_event_id(), '%s', $1::bigint, tenant, id, prefix,"
                 " name, coalesce(user_id, ''), data FROM due RETURNING 1),"
                 " mk AS (INSERT INTO alerts (object, kind, mark) SELECT id, '%s', mark FROM due"
                 " ON CONFLICT (object, kind) DO UPDATE SET mark = excluded.mark RETURNING 1)"
                 " SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM mk)"
                 " , $2::bigint, $3::bigint",
                 alerts[i].mark, alerts[i].data, alerts[i].where, alerts[i].kind, alerts[i].mark,
                 alerts[i].kind, alerts[i].kind);
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, now);
        kg_pg_arg_int(&a, lead_s);
        kg_pg_arg_int(&a, idle_s);
        rc = kg_pg_query(s, sql, &a, &res, "alerts", err);
        if (rc == KG_OK && fired != NULL)
            *fired += (size_t)kg_pg_col_int_or(res, 0, 0, 0);
        PQclear(res);
    }
    return kg_pg_finish(s, rc, NULL, err);
}

/* The quota.threshold event of a key names the key; of a user's credits or
 * tier quota, the user (no key). The data as SQLite's json_object() writes
 * it. $1 id, $2 now, $3 subject, $4 threshold, $5 used, $6 limit, $7
 * period, $8 period start, $9 the mark's kind. */
#define QUOTA_DATA                                                                                 \
    "'{\"subject\":' || to_json($3::text)::text || ',\"threshold\":' || $4::bigint"                \
    " || ',\"used\":' || $5::bigint || ',\"limit\":' || $6::bigint"                                \
    " || ',\"period\":' || to_json($7::text)::text || ',\"period_start\":' || CASE WHEN"           \
    " $8::bigint > 0 THEN '\"' || " ISO_UTC("$8::bigint") " || '\"' ELSE 'null' END || '}'"
#define QUOTA_MARK                                                                                 \
    "WITH mk AS (INSERT INTO alerts (object, kind, mark) VALUES ($1::text, $9::text, $8::bigint)"  \
    " ON CONFLICT (object, kind) DO UPDATE SET mark = excluded.mark"                               \
    " WHERE alerts.mark <> excluded.mark RETURNING 1),"                                            \
    " ev AS (INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id, data)"     \
    " SELECT keygate_event_id(), 'quota.threshold', $2::bigint, "

enum kg_status
kg_pg_quota_alert(struct kg_store *st, const struct kg_quota_alert *a, int64_t now, bool *fired,
                  struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    const char *sql_key = QUOTA_MARK
        "k.tenant, k.id, k.prefix, k.name, coalesce(k.user_id, ''), " QUOTA_DATA
        " FROM keys AS k WHERE k.id = $1::text AND EXISTS (SELECT 1 FROM mk) RETURNING 1)"
        " SELECT (SELECT count(*) FROM ev)";
    const char *sql_user = QUOTA_MARK
        "u.tenant, '', '', '', u.id, " QUOTA_DATA
        " FROM users AS u WHERE u.id = $1::text AND EXISTS (SELECT 1 FROM mk) RETURNING 1)"
        " SELECT (SELECT count(*) FROM ev)";
    struct kg_pg_args args;
    PGresult *res = NULL;
    char kind[32];
    enum kg_status rc;

    /* One mark per subject and threshold, its mark the period start: a
     * later period replaces it (the alert is allowed again). The mark and
     * the event in one statement: of several instances crossing the same
     * threshold at once, the one whose mark went in writes the event; the
     * others wait on its row and find it there. */
    snprintf(kind, sizeof(kind), "quota.%s.%d", a->subject, a->threshold);
    if (fired != NULL)
        *fired = false;
    rc = kg_pg_begin(s, err);
    if (rc == KG_OK) {
        kg_pg_args_init(&args);
        kg_pg_arg_text(&args, a->id);
        kg_pg_arg_int(&args, now);
        kg_pg_arg_text(&args, a->subject);
        kg_pg_arg_int(&args, a->threshold);
        kg_pg_arg_int(&args, a->used);
        kg_pg_arg_int(&args, a->limit);
        kg_pg_arg_text(&args, a->period);
        kg_pg_arg_int(&args, a->period_start);
        kg_pg_arg_text(&args, kind);
        rc = kg_pg_query(s, strcmp(a->subject, "key") == 0 ? sql_key : sql_user, &args, &res,
                         "quota alert", err);
    }
    if (rc == KG_OK && fired != NULL)
        *fired = kg_pg_col_int_or(res, 0, 0, 0) > 0;
    PQclear(res);
    rc = kg_pg_finish(s, rc, NULL, err);
    if (rc != KG_OK && fired != NULL)
        *fired = false;
    return rc;
}
