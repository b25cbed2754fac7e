/* store/sqlite_usage.c - usage in the SQLite backend: the daemon's
 * once-a-second flush of per-key counters, credits and last-used times
 * (key_usage, keys.last_used_at and the users' credits, one transaction
 * per flush) and the reads of what was flushed.
 *
 * A flush may come from several processes out of order: times only move
 * forward, and a count in a later refill period starts again from its
 * delta. Arguments were checked by store.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/store.h"
#include "keygate/timeutil.h"
#include "store/sqlite_int.h"

enum kg_status
kg_sq_key_touch(struct kg_store *st, const char *const *ids, const int64_t *times, size_t n,
                struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    size_t i;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    /* The WHERE keeps the latest time: batches from several processes may
     * arrive out of order. */
    rc = kg_sq_prepare(s,
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
            rc = kg_sq_fail(s, "touch keys", err);
            goto cleanup;
        }
        sqlite3_reset(stmt);
    }

cleanup:
    sqlite3_finalize(stmt);
    return kg_sq_finish(s, rc, NULL, err);
}

/* Adds the user deltas of a flush, inside its transaction, and reads the
 * totals back (utot, may be NULL). A count in a later period than the
 * stored one starts again from the delta (the refill); a delta of 0 comes
 * with a start of 0, which changes nothing. */
static enum kg_status
user_usage_add_locked(struct sqlite_store *s, const char *const *uids,
                      const struct kg_user_usage *ud, size_t nu, int64_t now,
                      struct kg_usage_total *utot, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    if (nu == 0)
        return KG_OK;
    rc =
        kg_sq_prepare(s,
                      "INSERT INTO user_usage (user_id, credits_used, credits_period_start,"
                      " tier_used, tier_period_start, updated_at)"
                      " SELECT id, ?2, ?3, ?4, ?5, ?6 FROM users WHERE id = ?1"
                      " ON CONFLICT (user_id) DO UPDATE SET"
                      " credits_used = CASE"
                      "  WHEN credits_period_start < excluded.credits_period_start"
                      "  THEN excluded.credits_used ELSE credits_used + excluded.credits_used END,"
                      " credits_period_start ="
                      "  MAX(credits_period_start, excluded.credits_period_start),"
                      " tier_used = CASE WHEN tier_period_start < excluded.tier_period_start"
                      "  THEN excluded.tier_used ELSE tier_used + excluded.tier_used END,"
                      " tier_period_start = MAX(tier_period_start, excluded.tier_period_start),"
                      " updated_at = excluded.updated_at"
                      " RETURNING credits_used, credits_period_start, tier_used, tier_period_start",
                      &stmt, "record user usage", err);
    if (rc != KG_OK)
        return rc;
    for (size_t i = 0; i < nu; i++) {
        const struct kg_user_usage *d = &ud[i];

        if (uids[i] == NULL || (d->credits == 0 && d->tier == 0))
            continue;
        if (sqlite3_bind_text(stmt, 1, uids[i], -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 2, d->credits) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 3, d->credits != 0 ? d->credits_period_start : 0) !=
                SQLITE_OK ||
            sqlite3_bind_int64(stmt, 4, d->tier) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 5, d->tier != 0 ? d->tier_period_start : 0) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 6, now) != SQLITE_OK) {
            rc = kg_sq_fail(s, "record user usage", err);
            break;
        }
        step = sqlite3_step(stmt);
        if (step == SQLITE_ROW && utot != NULL) {
            utot[i].known = true;
            utot[i].credits = sqlite3_column_int64(stmt, 0);
            utot[i].credits_period_start = sqlite3_column_int64(stmt, 1);
            utot[i].tier = sqlite3_column_int64(stmt, 2);
            utot[i].tier_period_start = sqlite3_column_int64(stmt, 3);
        }
        /* A RETURNING statement runs whole on its first step. */
        if (step != SQLITE_ROW && step != SQLITE_DONE) {
            rc = kg_sq_fail(s, "record user usage", err);
            break;
        }
        sqlite3_reset(stmt);
    }
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_key_usage_add(struct kg_store *st, const char *const *ids, const struct kg_key_usage *deltas,
                    size_t n, const char *const *uids, const struct kg_user_usage *udeltas,
                    size_t nu, int64_t now, struct kg_usage_total *ktot,
                    struct kg_usage_total *utot, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *touch = NULL, *add = NULL, *charge = NULL, *total = NULL, *spent = NULL;
    enum kg_status rc;

    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    /* The WHERE keeps the latest time: batches from several processes may
     * arrive out of order. */
    rc = kg_sq_prepare(s,
                       "UPDATE keys SET last_used_at = ?1"
                       " WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                       &touch, "record key usage", err);
    if (rc != KG_OK)
        goto cleanup;
    /* Deltas add to the totals: the row is made on a key's first count, and
     * the SELECT skips ids that name no key. */
    rc = kg_sq_prepare(s,
                       "INSERT INTO key_usage (key_id, requests, denied_expired,"
                       " denied_forbidden, denied_rate, updated_at)"
                       " SELECT id, ?2, ?3, ?4, ?5, ?6 FROM keys WHERE id = ?1"
                       " ON CONFLICT (key_id) DO UPDATE SET"
                       " requests = requests + excluded.requests,"
                       " denied_expired = denied_expired + excluded.denied_expired,"
                       " denied_forbidden = denied_forbidden + excluded.denied_forbidden,"
                       " denied_rate = denied_rate + excluded.denied_rate,"
                       " updated_at = excluded.updated_at",
                       &add, "record key usage", err);
    if (rc != KG_OK)
        goto cleanup;
    /* Credits: a delta charged in a later refill period than the stored one
     * starts the count again (the refill); otherwise it adds up. A delta
     * without a refill has a start of 0, which adds up; a stored start of 0
     * under a refill is history, since setting a refill moves the start
     * (key_update_sql). */
    rc = kg_sq_prepare(s,
                       "UPDATE keys SET quota_used = CASE WHEN quota_period_start < ?3"
                       " THEN ?2 ELSE quota_used + ?2 END,"
                       " quota_period_start = MAX(quota_period_start, ?3) WHERE id = ?1"
                       " RETURNING quota_used, quota_period_start",
                       &charge, "record key credits", err);
    if (rc != KG_OK)
        goto cleanup;
    /* The total of a key with a limit and nothing to add: read, not
     * written (another process may have charged it). */
    rc = kg_sq_prepare(s, "SELECT quota_used, quota_period_start FROM keys WHERE id = ?1", &total,
                       "read key credits", err);
    if (rc != KG_OK)
        goto cleanup;
    /* credits_mode strict: the same charges leave what this instance holds
     * of its reservation in that period (sql/012_credit_reservations.sql);
     * no row (shared mode, or charges of an ended period): nothing. */
    rc = kg_sq_prepare(s,
                       "UPDATE credit_reservations SET spent = spent + ?2"
                       " WHERE key_id = ?1 AND instance = ?3 AND period_start = ?4",
                       &spent, "record key credits", err);
    if (rc != KG_OK)
        goto cleanup;
    for (size_t i = 0; i < n; i++) {
        const struct kg_key_usage *d = &deltas[i];

        if (ids[i] == NULL)
            continue;
        /* 0 means "not used since the last flush" and moves no time. */
        if (d->last_used_at > 0) {
            if (sqlite3_bind_int64(touch, 1, d->last_used_at) != SQLITE_OK ||
                sqlite3_bind_text(touch, 2, ids[i], -1, SQLITE_STATIC) != SQLITE_OK ||
                sqlite3_step(touch) != SQLITE_DONE) {
                rc = kg_sq_fail(s, "record key usage", err);
                goto cleanup;
            }
            sqlite3_reset(touch);
        }
        if (d->credits != 0 || (ktot != NULL && ktot[i].want)) {
            sqlite3_stmt *q = d->credits != 0 ? charge : total;
            int step;

            if (sqlite3_bind_text(q, 1, ids[i], -1, SQLITE_STATIC) != SQLITE_OK ||
                (q == charge && (sqlite3_bind_int64(q, 2, d->credits) != SQLITE_OK ||
                                 sqlite3_bind_int64(q, 3, d->credits_period_start) != SQLITE_OK))) {
                rc = kg_sq_fail(s, "record key credits", err);
                goto cleanup;
            }
            step = sqlite3_step(q);
            if (step != SQLITE_ROW && step != SQLITE_DONE) {
                rc = kg_sq_fail(s, "record key credits", err);
                goto cleanup;
            }
            if (step == SQLITE_ROW && ktot != NULL) {
                ktot[i].known = true;
                ktot[i].credits = sqlite3_column_int64(q, 0);
                ktot[i].credits_period_start = sqlite3_column_int64(q, 1);
            }
            sqlite3_reset(q);
        }
        if (d->credits != 0) {
            if (sqlite3_bind_text(spent, 1, ids[i], -1, SQLITE_STATIC) != SQLITE_OK ||
                sqlite3_bind_int64(spent, 2, d->credits) != SQLITE_OK ||
                sqlite3_bind_text(spent, 3, st->instance, -1, SQLITE_STATIC) != SQLITE_OK ||
                sqlite3_bind_int64(spent, 4, d->credits_period_start) != SQLITE_OK ||
                sqlite3_step(spent) != SQLITE_DONE) {
                rc = kg_sq_fail(s, "record key credits", err);
                goto cleanup;
            }
            sqlite3_reset(spent);
        }
        if (d->requests == 0 && d->denied_expired == 0 && d->denied_forbidden == 0 &&
            d->denied_rate == 0)
            continue;
        if (sqlite3_bind_text(add, 1, ids[i], -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_int64(add, 2, d->requests) != SQLITE_OK ||
            sqlite3_bind_int64(add, 3, d->denied_expired) != SQLITE_OK ||
            sqlite3_bind_int64(add, 4, d->denied_forbidden) != SQLITE_OK ||
            sqlite3_bind_int64(add, 5, d->denied_rate) != SQLITE_OK ||
            sqlite3_bind_int64(add, 6, now) != SQLITE_OK || sqlite3_step(add) != SQLITE_DONE) {
            rc = kg_sq_fail(s, "record key usage", err);
            goto cleanup;
        }
        sqlite3_reset(add);
    }
    rc = user_usage_add_locked(s, uids, udeltas, nu, now, utot, err);

cleanup:
    sqlite3_finalize(spent);
    sqlite3_finalize(total);
    sqlite3_finalize(touch);
    sqlite3_finalize(add);
    sqlite3_finalize(charge);
    return kg_sq_finish(s, rc, NULL, err);
}

enum kg_status
kg_sq_key_usage_get(struct kg_store *st, const char *id, struct kg_key_usage *out,
                    struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s,
                       "SELECT k.last_used_at, u.requests, u.denied_expired, u.denied_forbidden,"
                       " u.denied_rate, u.updated_at"
                       " FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id WHERE k.id = ?1",
                       &stmt, "get key usage", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "get key usage", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        /* NULL columns (never used, never counted) read as 0. */
        out->last_used_at = sqlite3_column_int64(stmt, 0);
        out->requests = sqlite3_column_int64(stmt, 1);
        out->denied_expired = sqlite3_column_int64(stmt, 2);
        out->denied_forbidden = sqlite3_column_int64(stmt, 3);
        out->denied_rate = sqlite3_column_int64(stmt, 4);
        out->updated_at = sqlite3_column_int64(stmt, 5);
    } else if (step == SQLITE_DONE) {
        rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", id);
    } else {
        rc = kg_sq_fail(s, "get key usage", err);
    }

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_user_usage_get(struct kg_store *st, const char *id, struct kg_user_usage *out,
                     struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc;
    int step;

    rc = kg_sq_prepare(s,
                       "SELECT uu.credits_used, uu.credits_period_start, uu.tier_used,"
                       " uu.tier_period_start, uu.updated_at"
                       " FROM users u LEFT JOIN user_usage uu ON uu.user_id = u.id"
                       " WHERE u.id = ?1",
                       &stmt, "get user usage", err);
    if (rc != KG_OK)
        goto cleanup;
    if (sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = kg_sq_fail(s, "get user usage", err);
        goto cleanup;
    }
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        out->credits = sqlite3_column_int64(stmt, 0);
        out->credits_period_start = sqlite3_column_int64(stmt, 1);
        out->tier = sqlite3_column_int64(stmt, 2);
        out->tier_period_start = sqlite3_column_int64(stmt, 3);
        out->updated_at = sqlite3_column_int64(stmt, 4);
    } else if (step == SQLITE_DONE) {
        rc = kg_err_set(err, KG_ENOTFOUND, "no user %s", id);
    } else {
        rc = kg_sq_fail(s, "get user usage", err);
    }

cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

/* One statement with integer and text parameters, run to its end; the
 * first column of its first row into *out when out is not NULL (0 when
 * there is no row). Inside the caller's transaction. */
static enum kg_status
run1(struct sqlite_store *s, const char *sql, const char *what, const char *t1, const char *t2,
     const int64_t *nums, int nnums, int64_t *out, struct kg_err *err)
{
    sqlite3_stmt *stmt = NULL;
    enum kg_status rc = kg_sq_prepare(s, sql, &stmt, what, err);
    int idx = 1, step;

    if (rc != KG_OK)
        return rc;
    if ((t1 != NULL && sqlite3_bind_text(stmt, idx++, t1, -1, SQLITE_STATIC) != SQLITE_OK) ||
        (t2 != NULL && sqlite3_bind_text(stmt, idx++, t2, -1, SQLITE_STATIC) != SQLITE_OK))
        rc = kg_sq_fail(s, what, err);
    for (int i = 0; rc == KG_OK && i < nnums; i++)
        if (sqlite3_bind_int64(stmt, idx++, nums[i]) != SQLITE_OK)
            rc = kg_sq_fail(s, what, err);
    if (out != NULL)
        *out = 0;
    while (rc == KG_OK && (step = sqlite3_step(stmt)) != SQLITE_DONE) {
        if (step != SQLITE_ROW) {
            rc = kg_sq_fail(s, what, err);
            break;
        }
        if (out != NULL) {
            *out = sqlite3_column_int64(stmt, 0);
            out = NULL;
        }
    }
    sqlite3_finalize(stmt);
    return rc;
}

enum kg_status
kg_sq_credit_reserve(struct kg_store *st, const char *key_id, int64_t want, int64_t period_start,
                     int64_t now, int64_t lease_s, int64_t *granted, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    sqlite3_stmt *stmt = NULL;
    int64_t limit = -1, used = 0, used_start = 0, held = 0, left;
    enum kg_status rc;
    int step;

    /* BEGIN IMMEDIATE: the write lock from here on, so the sum below is
     * the sum every other writer sees too. */
    rc = kg_sq_begin(s, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_sq_prepare(s,
                       "SELECT quota_limit, quota_used, quota_period_start FROM keys WHERE id = ?1",
                       &stmt, "reserve credits", err);
    if (rc == KG_OK && sqlite3_bind_text(stmt, 1, key_id, -1, SQLITE_STATIC) != SQLITE_OK)
        rc = kg_sq_fail(s, "reserve credits", err);
    if (rc == KG_OK) {
        step = sqlite3_step(stmt);
        if (step == SQLITE_ROW) {
            limit = kg_sq_col_int_or(stmt, 0, -1);
            used = sqlite3_column_int64(stmt, 1);
            used_start = sqlite3_column_int64(stmt, 2);
        } else if (step == SQLITE_DONE) {
            rc = kg_err_set(err, KG_ENOTFOUND, "key %s not found", key_id);
        } else {
            rc = kg_sq_fail(s, "reserve credits", err);
        }
    }
    sqlite3_finalize(stmt);
    if (rc == KG_OK)
        rc = run1(s,
                  "DELETE FROM credit_reservations WHERE key_id = ?1"
                  " AND (period_start < ?2 OR expires_at < ?3)",
                  "reserve credits", key_id, NULL, (const int64_t[]){period_start, now}, 2, NULL,
                  err);
    if (rc == KG_OK)
        rc = run1(s,
                  "SELECT coalesce(sum(granted - spent), 0) FROM credit_reservations"
                  " WHERE key_id = ?1",
                  "reserve credits", key_id, NULL, NULL, 0, &held, err);
    if (rc != KG_OK || limit < 0)
        goto finish;
    /* Credits of an ended period are history (the rule the daemon charges
     * by, limit/quota.c). */
    if (used_start < period_start)
        used = 0;
    left = limit - used - held;
    *granted = left < want ? (left > 0 ? left : 0) : want;
    if (*granted == 0)
        goto finish;
    rc = run1(s,
              "INSERT INTO credit_reservations (key_id, instance, period_start, granted, spent,"
              " expires_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)"
              " ON CONFLICT (key_id, instance, period_start) DO UPDATE SET"
              " granted = granted + excluded.granted, expires_at = excluded.expires_at",
              "reserve credits", key_id, st->instance,
              (const int64_t[]){period_start, *granted, now + lease_s}, 3, NULL, err);
finish:
    if (rc != KG_OK)
        *granted = 0;
    return kg_sq_finish(s, rc, NULL, err);
}

enum kg_status
kg_sq_credit_renew(struct kg_store *st, int64_t now, int64_t lease_s, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc = kg_sq_begin(s, err);

    if (rc == KG_OK)
        rc = run1(s, "UPDATE credit_reservations SET expires_at = ?2 WHERE instance = ?1",
                  "renew credit reservations", st->instance, NULL, (const int64_t[]){now + lease_s},
                  1, NULL, err);
    return kg_sq_finish(s, rc, NULL, err);
}

enum kg_status
kg_sq_credit_release(struct kg_store *st, const char *key_id, struct kg_err *err)
{
    struct sqlite_store *s = kg_sq_from(st);
    enum kg_status rc = kg_sq_begin(s, err);

    if (rc == KG_OK)
        rc = key_id != NULL
                 ? run1(s, "DELETE FROM credit_reservations WHERE instance = ?1 AND key_id = ?2",
                        "release credit reservations", st->instance, key_id, NULL, 0, NULL, err)
                 : run1(s, "DELETE FROM credit_reservations WHERE instance = ?1",
                        "release credit reservations", st->instance, NULL, NULL, 0, NULL, err);
    return kg_sq_finish(s, rc, NULL, err);
}
