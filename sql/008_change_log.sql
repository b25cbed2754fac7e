-- 008_change_log.sql - what changed, in order, for the running key caches
-- (issue 17).
--
-- Every change to a key, a user or a tenant appends one row (seq, object,
-- id) in the SAME transaction as the change, written by the triggers below
-- so no code path can forget it. A daemon remembers the last seq its cache
-- applied and reads only the rows after it: each names one object to read
-- again, so applying a row twice or out of order does no harm. The usage
-- flush (last_used_at, quota_used, quota_period_start, key_usage,
-- user_usage) writes no row: counters are not changes the cache reloads.
--
-- Old rows are trimmed by the daemon (kg_store_change_trim); trimmed_through
-- in change_log_state says up to which seq rows may be missing, so a cache
-- that fell behind that point rebuilds instead of missing a change. The same
-- shape (a sequence, object, id, and triggers) works in PostgreSQL.

CREATE TABLE change_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    object     TEXT    NOT NULL CHECK (object IN ('key', 'user', 'tenant')),
    id         TEXT    NOT NULL,
    changed_at INTEGER NOT NULL
);

CREATE TABLE change_log_state (
    one             INTEGER PRIMARY KEY CHECK (one = 1),
    trimmed_through INTEGER NOT NULL DEFAULT 0
);
INSERT INTO change_log_state (one, trimmed_through) VALUES (1, 0);

CREATE TRIGGER keys_changed_insert AFTER INSERT ON keys BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('key', NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

-- Not the usage columns: the once-a-second flush must not look like a change.
CREATE TRIGGER keys_changed_update
AFTER UPDATE OF id, name, prefix, last4, digest, scopes, tenant, created_at, expires_at,
                revoked_at, rotated_to, rate, rate_burst, quota_limit, quota_period, metadata,
                user_id
ON keys BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('key', NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER keys_changed_delete AFTER DELETE ON keys BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('key', OLD.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER users_changed_insert AFTER INSERT ON users BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('user', NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER users_changed_update AFTER UPDATE ON users BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('user', NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER tenants_changed_insert AFTER INSERT ON tenants BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('tenant', NEW.name, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER tenants_changed_update AFTER UPDATE ON tenants BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('tenant', NEW.name, CAST(strftime('%s', 'now') AS INTEGER));
END;
