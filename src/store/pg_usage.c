/* store/pg_usage.c - usage in the PostgreSQL backend (the twin of
 * sqlite_usage.c): the once-a-second flush of per-key counters, credits
 * and last-used times, and the reads of what was flushed.
 *
 * Several instances add their deltas to the same rows; each UPDATE adds in
 * place, so no instance's count overwrites another's. A flush is applied
 * at most once: it carries a random token written in its own transaction
 * (flush_applied). When a COMMIT gets no answer the outcome is unknown;
 * the batch is kept as "in doubt", and before the next flush (which by the
 * caller's contract carries the same deltas again plus newer ones, since
 * nothing was marked flushed) the token is looked up: if that flush did
 * commit, its deltas are taken off the new batch, so nothing counts twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/store.h"
#include "store/pg_int.h"

struct pg_doubt {
    size_t n, nu;
    char (*ids)[KG_ID_MAX];
    struct kg_key_usage *deltas;
    char (*uids)[KG_ID_MAX];
    struct kg_user_usage *udeltas;
};

static void
doubt_free(struct pg_doubt *d)
{
    if (d != NULL) {
        free(d->ids);
        free(d->deltas);
        free(d->uids);
        free(d->udeltas);
        free(d);
    }
}

void
kg_pg_doubt_free(struct pg_store *s)
{
    doubt_free(s->doubt);
    s->doubt = NULL;
    s->doubt_token[0] = '\0';
}

/* A copy of a flush's deltas, made before its COMMIT so that keeping it
 * when the COMMIT's answer is lost needs no memory; NULL when out of it. */
static struct pg_doubt *
doubt_new(const char *const *ids, const struct kg_key_usage *deltas, size_t n,
          const char *const *uids, const struct kg_user_usage *udeltas, size_t nu)
{
    struct pg_doubt *d = calloc(1, sizeof(*d));

    if (d == NULL)
        return NULL;
    d->ids = calloc(n + 1, sizeof(*d->ids));
    d->deltas = calloc(n + 1, sizeof(*d->deltas));
    d->uids = calloc(nu + 1, sizeof(*d->uids));
    d->udeltas = calloc(nu + 1, sizeof(*d->udeltas));
    if (d->ids == NULL || d->deltas == NULL || d->uids == NULL || d->udeltas == NULL) {
        doubt_free(d);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] != NULL)
            snprintf(d->ids[i], KG_ID_MAX, "%s", ids[i]);
        d->deltas[i] = deltas[i];
    }
    for (size_t i = 0; i < nu; i++) {
        if (uids[i] != NULL)
            snprintf(d->uids[i], KG_ID_MAX, "%s", uids[i]);
        d->udeltas[i] = udeltas[i];
    }
    d->n = n;
    d->nu = nu;
    return d;
}

static int64_t
less(int64_t v, int64_t by)
{
    return v > by ? v - by : 0;
}

/* The flush in doubt did commit: its deltas leave the copies of the new
 * batch (adj, aadj). */
static void
take_off(const struct pg_doubt *d, const char *const *ids, struct kg_key_usage *adj, size_t n,
         const char *const *uids, struct kg_user_usage *uadj, size_t nu)
{
    for (size_t j = 0; j < d->n; j++) {
        for (size_t i = 0; i < n; i++) {
            if (ids[i] == NULL || strcmp(ids[i], d->ids[j]) != 0)
                continue;
            adj[i].requests = less(adj[i].requests, d->deltas[j].requests);
            adj[i].denied_expired = less(adj[i].denied_expired, d->deltas[j].denied_expired);
            adj[i].denied_forbidden = less(adj[i].denied_forbidden, d->deltas[j].denied_forbidden);
            adj[i].denied_rate = less(adj[i].denied_rate, d->deltas[j].denied_rate);
            adj[i].credits = less(adj[i].credits, d->deltas[j].credits);
            break;
        }
    }
    for (size_t j = 0; j < d->nu; j++) {
        for (size_t i = 0; i < nu; i++) {
            if (uids[i] == NULL || strcmp(uids[i], d->uids[j]) != 0)
                continue;
            uadj[i].credits = less(uadj[i].credits, d->udeltas[j].credits);
            uadj[i].tier = less(uadj[i].tier, d->udeltas[j].tier);
            break;
        }
    }
}

/* Settles a flush in doubt: *committed says whether its token is stored.
 * Outside a transaction, so the lookup reconnects after an outage. */
static enum kg_status
settle(struct pg_store *s, bool *committed, struct kg_err *err)
{
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, s->doubt_token);
    rc = kg_pg_query(s, "SELECT 1 FROM flush_applied WHERE token = $1::text", &a, &res,
                     "settle a flush", err);
    if (rc == KG_OK)
        *committed = PQntuples(res) > 0;
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_key_touch(struct kg_store *st, const char *const *ids, const int64_t *times, size_t n,
                struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    enum kg_status rc;

    rc = kg_pg_begin(s, err);
    for (size_t i = 0; rc == KG_OK && i < n; i++) {
        if (ids[i] == NULL || times[i] <= 0)
            continue;
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, times[i]);
        kg_pg_arg_text(&a, ids[i]);
        rc = kg_pg_query(s,
                         "UPDATE keys SET last_used_at = $1::bigint WHERE id = $2::text"
                         " AND (last_used_at IS NULL OR last_used_at < $1::bigint)",
                         &a, NULL, "touch keys", err);
    }
    return kg_pg_finish(s, rc, NULL, err);
}

/* Reads a total back from a RETURNING row (credits, start[, tier, start]). */
static void
read_total(PGresult *res, bool user, struct kg_usage_total *t)
{
    if (t == NULL || res == NULL || PQntuples(res) == 0)
        return;
    t->known = true;
    t->credits = kg_pg_col_int_or(res, 0, 0, 0);
    t->credits_period_start = kg_pg_col_int_or(res, 0, 1, 0);
    if (user) {
        t->tier = kg_pg_col_int_or(res, 0, 2, 0);
        t->tier_period_start = kg_pg_col_int_or(res, 0, 3, 0);
    }
}

static enum kg_status
add_key(struct pg_store *s, const char *id, const struct kg_key_usage *d, int64_t now,
        struct kg_usage_total *tot, struct kg_err *err)
{
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc = KG_OK;

    if (d->last_used_at > 0) {
        kg_pg_args_init(&a);
        kg_pg_arg_int(&a, d->last_used_at);
        kg_pg_arg_text(&a, id);
        rc = kg_pg_query(s,
                         "UPDATE keys SET last_used_at = $1::bigint WHERE id = $2::text"
                         " AND (last_used_at IS NULL OR last_used_at < $1::bigint)",
                         &a, NULL, "record key usage", err);
    }
    if (rc == KG_OK && d->credits != 0) {
        /* In place, so concurrent flushes of other instances add up. */
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, id);
        kg_pg_arg_int(&a, d->credits);
        kg_pg_arg_int(&a, d->credits_period_start);
        rc = kg_pg_query(s,
                         "UPDATE keys SET quota_used = CASE WHEN quota_period_start < $3::bigint"
                         " THEN $2::bigint ELSE quota_used + $2::bigint END,"
                         " quota_period_start = GREATEST(quota_period_start, $3::bigint)"
                         " WHERE id = $1::text RETURNING quota_used, quota_period_start",
                         &a, &res, "record key credits", err);
    } else if (rc == KG_OK && tot != NULL && tot->want) {
        /* A key with a limit and nothing to add: read, not written. */
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, id);
        rc = kg_pg_query(s, "SELECT quota_used, quota_period_start FROM keys WHERE id = $1::text",
                         &a, &res, "read key credits", err);
    }
    if (rc == KG_OK)
        read_total(res, false, tot);
    PQclear(res);
    if (rc == KG_OK && d->credits != 0) {
        /* credits_mode strict: the same charges leave what this instance
         * holds of its reservation in that period (sql/postgres/
         * 004_credit_reservations.sql); no row (shared mode, or charges of
         * an ended period): nothing. */
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, id);
        kg_pg_arg_int(&a, d->credits);
        kg_pg_arg_text(&a, s->base.instance);
        kg_pg_arg_int(&a, d->credits_period_start);
        rc = kg_pg_query(s,
                         "UPDATE credit_reservations SET spent = spent + $2::bigint"
                         " WHERE key_id = $1::text AND instance = $3::text"
                         " AND period_start = $4::bigint",
                         &a, NULL, "record key credits", err);
    }
    if (rc != KG_OK || (d->requests == 0 && d->denied_expired == 0 && d->denied_forbidden == 0 &&
                        d->denied_rate == 0))
        return rc;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, id);
    kg_pg_arg_int(&a, d->requests);
    kg_pg_arg_int(&a, d->denied_expired);
    kg_pg_arg_int(&a, d->denied_forbidden);
    kg_pg_arg_int(&a, d->denied_rate);
    kg_pg_arg_int(&a, now);
    return kg_pg_query(s,
                       "INSERT INTO key_usage AS u (key_id, requests, denied_expired,"
                       " denied_forbidden, denied_rate, updated_at)"
                       " SELECT id, $2::bigint, $3::bigint, $4::bigint, $5::bigint, $6::bigint"
                       " FROM keys WHERE id = $1::text"
                       " ON CONFLICT (key_id) DO UPDATE SET"
                       " requests = u.requests + excluded.requests,"
                       " denied_expired = u.denied_expired + excluded.denied_expired,"
                       " denied_forbidden = u.denied_forbidden + excluded.denied_forbidden,"
                       " denied_rate = u.denied_rate + excluded.denied_rate,"
                       " updated_at = excluded.updated_at",
                       &a, NULL, "record key usage", err);
}

static enum kg_status
add_user(struct pg_store *s, const char *id, const struct kg_user_usage *d, int64_t now,
         struct kg_usage_total *tot, struct kg_err *err)
{
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    if (d->credits == 0 && d->tier == 0)
        return KG_OK;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, id);
    kg_pg_arg_int(&a, d->credits);
    kg_pg_arg_int(&a, d->credits != 0 ? d->credits_period_start : 0);
    kg_pg_arg_int(&a, d->tier);
    kg_pg_arg_int(&a, d->tier != 0 ? d->tier_period_start : 0);
    kg_pg_arg_int(&a, now);
    rc = kg_pg_query(s,
                     "INSERT INTO user_usage AS uu (user_id, credits_used, credits_period_start,"
                     " tier_used, tier_period_start, updated_at)"
                     " SELECT id, $2::bigint, $3::bigint, $4::bigint, $5::bigint, $6::bigint"
                     " FROM users WHERE id = $1::text"
                     " ON CONFLICT (user_id) DO UPDATE SET"
                     " credits_used = CASE"
                     "  WHEN uu.credits_period_start < excluded.credits_period_start"
                     "  THEN excluded.credits_used ELSE uu.credits_used + excluded.credits_used"
                     "  END,"
                     " credits_period_start ="
                     "  GREATEST(uu.credits_period_start, excluded.credits_period_start),"
                     " tier_used = CASE WHEN uu.tier_period_start < excluded.tier_period_start"
                     "  THEN excluded.tier_used ELSE uu.tier_used + excluded.tier_used END,"
                     " tier_period_start = GREATEST(uu.tier_period_start,"
                     "  excluded.tier_period_start),"
                     " updated_at = excluded.updated_at"
                     " RETURNING credits_used, credits_period_start, tier_used, tier_period_start",
                     &a, &res, "record user usage", err);
    if (rc == KG_OK)
        read_total(res, true, tot);
    PQclear(res);
    return rc;
}

/* Commits the flush; a COMMIT without an answer leaves it in doubt. The
 * copy the doubt keeps is made first: without it the next flush could not
 * be told apart from this one, and a flush that cannot have it is rolled
 * back rather than risk counting it twice. */
static enum kg_status
commit_flush(struct pg_store *s, const char *token, const char *const *ids,
             const struct kg_key_usage *deltas, size_t n, const char *const *uids,
             const struct kg_user_usage *udeltas, size_t nu, struct kg_err *err)
{
    struct pg_doubt *d = doubt_new(ids, deltas, n, uids, udeltas, nu);
    PGresult *res;
    bool ok, lost;
    enum kg_status rc = KG_OK;

    if (d == NULL) {
        kg_pg_rollback(s);
        return kg_err_set(err, KG_ENOMEM, "%s: out of memory", s->where);
    }
    res = PQexec(s->conn, "COMMIT");
    ok = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK;
    lost = !ok && (res == NULL || PQresultErrorField(res, PG_DIAG_SQLSTATE) == NULL ||
                   PQstatus(s->conn) != CONNECTION_OK);
    if (ok && s->test_lose_commit) {
        s->test_lose_commit = false;
        ok = false;
        lost = true;
    }
    if (!ok)
        rc = kg_pg_fail(s, lost ? NULL : res, "commit usage", err);
    PQclear(res);
    if (lost) {
        kg_pg_doubt_free(s);
        s->doubt = d;
        snprintf(s->doubt_token, sizeof(s->doubt_token), "%s", token);
        d = NULL;
    }
    doubt_free(d);
    if (!ok)
        kg_pg_rollback(s);
    return rc;
}

enum kg_status
kg_pg_key_usage_add(struct kg_store *st, const char *const *ids, const struct kg_key_usage *deltas,
                    size_t n, const char *const *uids, const struct kg_user_usage *udeltas,
                    size_t nu, int64_t now, struct kg_usage_total *ktot,
                    struct kg_usage_total *utot, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_key_usage *adj = NULL;
    struct kg_user_usage *uadj = NULL;
    unsigned char raw[16];
    char token[sizeof(raw) * 2 + 1];
    struct kg_pg_args a;
    enum kg_status rc;
    bool committed = false;

    adj = malloc((n + 1) * sizeof(*adj));
    uadj = malloc((nu + 1) * sizeof(*uadj));
    if (adj == NULL || uadj == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "%s: out of memory", s->where);
        goto cleanup;
    }
    if (n > 0)
        memcpy(adj, deltas, n * sizeof(*adj));
    if (nu > 0)
        memcpy(uadj, udeltas, nu * sizeof(*uadj));
    if (s->doubt_token[0] != '\0') {
        rc = settle(s, &committed, err);
        if (rc != KG_OK)
            goto cleanup;
        if (committed)
            take_off(s->doubt, ids, adj, n, uids, uadj, nu);
        kg_pg_doubt_free(s);
    }
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(token, sizeof(token), raw, sizeof(raw));
    rc = kg_pg_begin(s, err);
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, token);
        kg_pg_arg_int(&a, now);
        rc = kg_pg_query(s,
                         "INSERT INTO flush_applied (token, applied_at)"
                         " VALUES ($1::text, $2::bigint)",
                         &a, NULL, "record key usage", err);
    }
    for (size_t i = 0; rc == KG_OK && i < n; i++) {
        if (ids[i] != NULL)
            rc = add_key(s, ids[i], &adj[i], now, ktot != NULL ? &ktot[i] : NULL, err);
    }
    for (size_t i = 0; rc == KG_OK && i < nu; i++) {
        if (uids[i] != NULL)
            rc = add_user(s, uids[i], &uadj[i], now, utot != NULL ? &utot[i] : NULL, err);
    }
    if (rc != KG_OK) {
        kg_pg_rollback(s);
        goto cleanup;
    }
    rc = commit_flush(s, token, ids, adj, n, uids, uadj, nu, err);

cleanup:
    free(adj);
    free(uadj);
    return rc;
}

enum kg_status
kg_pg_key_usage_get(struct kg_store *st, const char *id, struct kg_key_usage *out,
                    struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, id);
    rc = kg_pg_query(s,
                     "SELECT k.last_used_at, u.requests, u.denied_expired, u.denied_forbidden,"
                     " u.denied_rate, u.updated_at"
                     " FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id WHERE k.id = $1::text",
                     &a, &res, "get key usage", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0) {
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
    } else {
        out->last_used_at = kg_pg_col_int_or(res, 0, 0, 0);
        out->requests = kg_pg_col_int_or(res, 0, 1, 0);
        out->denied_expired = kg_pg_col_int_or(res, 0, 2, 0);
        out->denied_forbidden = kg_pg_col_int_or(res, 0, 3, 0);
        out->denied_rate = kg_pg_col_int_or(res, 0, 4, 0);
        out->updated_at = kg_pg_col_int_or(res, 0, 5, 0);
    }
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_user_usage_get(struct kg_store *st, const char *id, struct kg_user_usage *out,
                     struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    enum kg_status rc;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, id);
    rc = kg_pg_query(s,
                     "SELECT uu.credits_used, uu.credits_period_start, uu.tier_used,"
                     " uu.tier_period_start, uu.updated_at"
                     " FROM users u LEFT JOIN user_usage uu ON uu.user_id = u.id"
                     " WHERE u.id = $1::text",
                     &a, &res, "get user usage", err);
    if (rc != KG_OK)
        return rc;
    if (PQntuples(res) == 0) {
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", id);
    } else {
        out->credits = kg_pg_col_int_or(res, 0, 0, 0);
        out->credits_period_start = kg_pg_col_int_or(res, 0, 1, 0);
        out->tier = kg_pg_col_int_or(res, 0, 2, 0);
        out->tier_period_start = kg_pg_col_int_or(res, 0, 3, 0);
        out->updated_at = kg_pg_col_int_or(res, 0, 4, 0);
    }
    PQclear(res);
    return rc;
}

enum kg_status
kg_pg_credit_reserve(struct kg_store *st, const char *key_id, int64_t want, int64_t period_start,
                     int64_t now, int64_t lease_s, int64_t *granted, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;
    PGresult *res = NULL;
    int64_t limit = -1, used = 0, used_start = 0, held = 0, left;
    enum kg_status rc = kg_pg_begin(s, err);

    /* The key's row locked (FOR UPDATE) to the commit: reservations of one
     * key from several instances take turns, so each sees the others'. */
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, key_id);
        rc = kg_pg_query(s,
                         "SELECT quota_limit, quota_used, quota_period_start FROM keys"
                         " WHERE id = $1::text FOR UPDATE",
                         &a, &res, "reserve credits", err);
    }
    if (rc == KG_OK && PQntuples(res) == 0)
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", key_id);
    if (rc == KG_OK) {
        limit = kg_pg_col_int_or(res, 0, 0, -1);
        used = kg_pg_col_int_or(res, 0, 1, 0);
        used_start = kg_pg_col_int_or(res, 0, 2, 0);
    }
    PQclear(res);
    res = NULL;
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, key_id);
        kg_pg_arg_int(&a, period_start);
        kg_pg_arg_int(&a, now);
        rc = kg_pg_query(s,
                         "DELETE FROM credit_reservations WHERE key_id = $1::text"
                         " AND (period_start < $2::bigint OR expires_at < $3::bigint)",
                         &a, NULL, "reserve credits", err);
    }
    if (rc == KG_OK) {
        kg_pg_args_init(&a);
        kg_pg_arg_text(&a, key_id);
        rc = kg_pg_query(s,
                         "SELECT coalesce(sum(granted - spent), 0)::bigint FROM credit_reservations"
                         " WHERE key_id = $1::text",
                         &a, &res, "reserve credits", err);
        if (rc == KG_OK)
            held = kg_pg_col_int_or(res, 0, 0, 0);
        PQclear(res);
    }
    if (rc != KG_OK || limit < 0)
        goto finish;
    /* Credits of an ended period are history (limit/quota.c). */
    if (used_start < period_start)
        used = 0;
    left = limit - used - held;
    *granted = left < want ? (left > 0 ? left : 0) : want;
    if (*granted == 0)
        goto finish;
    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, key_id);
    kg_pg_arg_text(&a, s->base.instance);
    kg_pg_arg_int(&a, period_start);
    kg_pg_arg_int(&a, *granted);
    kg_pg_arg_int(&a, now + lease_s);
    rc =
        kg_pg_query(s,
                    "INSERT INTO credit_reservations AS r (key_id, instance, period_start, granted,"
                    " spent, expires_at) VALUES ($1::text, $2::text, $3::bigint, $4::bigint, 0,"
                    " $5::bigint) ON CONFLICT (key_id, instance, period_start) DO UPDATE SET"
                    " granted = r.granted + excluded.granted, expires_at = excluded.expires_at",
                    &a, NULL, "reserve credits", err);
finish:
    if (rc != KG_OK)
        *granted = 0;
    return kg_pg_finish(s, rc, NULL, err);
}

enum kg_status
kg_pg_credit_renew(struct kg_store *st, int64_t now, int64_t lease_s, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, s->base.instance);
    kg_pg_arg_int(&a, now + lease_s);
    /* One statement: its own transaction. */
    return kg_pg_query(s,
                       "UPDATE credit_reservations SET expires_at = $2::bigint"
                       " WHERE instance = $1::text",
                       &a, NULL, "renew credit reservations", err);
}

enum kg_status
kg_pg_credit_release(struct kg_store *st, const char *key_id, struct kg_err *err)
{
    struct pg_store *s = kg_pg_from(st);
    struct kg_pg_args a;

    kg_pg_args_init(&a);
    kg_pg_arg_text(&a, s->base.instance);
    if (key_id != NULL)
        kg_pg_arg_text(&a, key_id);
    return kg_pg_query(s,
                       key_id != NULL ? "DELETE FROM credit_reservations WHERE instance = $1::text"
                                        " AND key_id = $2::text"
                                      : "DELETE FROM credit_reservations WHERE instance = $1::text",
                       &a, NULL, "release credit reservations", err);
}
