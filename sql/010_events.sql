-- 010_events.sql - key events and defences (issue 18).
--
-- keys.canary: a key that never grants access; every use is reported.
-- keys.allowed_ips: the address blocks ("CIDR,CIDR") a key may be used
-- from; NULL = anywhere. Both are changes the key cache reloads, so the
-- change log's update trigger is made again with them in its column list.
--
-- events is the durable outbox of webhook events: a row is written in the
-- SAME transaction as its cause. Key lifecycle events (key.created,
-- key.rotated, key.revoked) are written by the triggers below, so no code
-- path can change a key without its event; the others (key.leaked,
-- canary.used, alerts, ...) by the C code inside the transaction of their
-- cause. id is the event's idempotency key ("evt_" + 24 hex digits),
-- the same at every delivery attempt.
--
-- event_deliveries holds one row per (event, webhook endpoint): the sender
-- fans every new event out to the endpoints that want it (webhook_cursors:
-- the last event seq fanned out per endpoint), then posts each pending row
-- when next_at is due, with exponential backoff, until it is delivered or
-- 24 hours old (failed).
--
-- alerts remembers which alert was sent for which key or user (object),
-- so each is sent once: kind names the alert, mark what it was about (the
-- expiry it warned of, the quota period start, the last use).

ALTER TABLE keys ADD COLUMN canary INTEGER NOT NULL DEFAULT 0 CHECK (canary IN (0, 1));
ALTER TABLE keys ADD COLUMN allowed_ips TEXT
    CHECK (allowed_ips IS NULL OR length(CAST(allowed_ips AS BLOB)) BETWEEN 1 AND 1023);

-- The clock's alerts (kg_store_alerts_scan, every 10 s under the write
-- lock) find their keys through these, not by reading every key: with a
-- million keys a full scan per alert held the lock for seconds.
CREATE INDEX keys_by_expiry ON keys (expires_at);
CREATE INDEX keys_by_last_use ON keys (coalesce(last_used_at, created_at));

DROP TRIGGER keys_changed_update;
CREATE TRIGGER keys_changed_update
AFTER UPDATE OF id, name, prefix, last4, digest, scopes, tenant, created_at, expires_at,
                revoked_at, rotated_to, rate, rate_burst, quota_limit, quota_period, metadata,
                user_id, canary, allowed_ips
ON keys BEGIN
    INSERT INTO change_log (object, id, changed_at)
        VALUES ('key', NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT    NOT NULL UNIQUE CHECK (length(CAST(id AS BLOB)) BETWEEN 1 AND 39),
    type    TEXT    NOT NULL CHECK (length(CAST(type AS BLOB)) BETWEEN 1 AND 31),
    time    INTEGER NOT NULL,
    tenant  TEXT    NOT NULL DEFAULT '',
    key_id  TEXT    NOT NULL DEFAULT '',
    prefix  TEXT    NOT NULL DEFAULT '',
    name    TEXT    NOT NULL DEFAULT '',
    user_id TEXT    NOT NULL DEFAULT '',
    data    TEXT    NOT NULL DEFAULT '{}'
                    CHECK (length(CAST(data AS BLOB)) BETWEEN 2 AND 2047)
);
CREATE INDEX events_by_time ON events (time);

CREATE TABLE event_deliveries (
    event_seq   INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    endpoint    TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    last_status INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    done_at     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_seq, endpoint)
);
CREATE INDEX deliveries_due ON event_deliveries (state, next_at);

CREATE TABLE webhook_cursors (
    endpoint TEXT    PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

CREATE TABLE alerts (
    object TEXT    NOT NULL,
    kind   TEXT    NOT NULL,
    mark   INTEGER NOT NULL,
    PRIMARY KEY (object, kind)
);

CREATE TRIGGER keys_event_created AFTER INSERT ON keys BEGIN
    INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id, data)
        VALUES ('evt_' || lower(hex(randomblob(12))), 'key.created',
                CAST(strftime('%s', 'now') AS INTEGER), NEW.tenant, NEW.id, NEW.prefix, NEW.name,
                coalesce(NEW.user_id, ''),
                CASE WHEN NEW.canary = 1 THEN '{"canary":true}' ELSE '{}' END);
END;

CREATE TRIGGER keys_event_rotated AFTER UPDATE OF rotated_to ON keys
WHEN NEW.rotated_to IS NOT NULL AND OLD.rotated_to IS NULL BEGIN
    INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id, data)
        VALUES ('evt_' || lower(hex(randomblob(12))), 'key.rotated',
                CAST(strftime('%s', 'now') AS INTEGER), NEW.tenant, NEW.id, NEW.prefix, NEW.name,
                coalesce(NEW.user_id, ''),
                json_object('rotated_to', NEW.rotated_to, 'revoked_at', NEW.revoked_at));
END;

-- A revocation, or a scheduled one (rotation grace) brought forward; not
-- the scheduling a rotation itself does (key.rotated says that).
CREATE TRIGGER keys_event_revoked AFTER UPDATE OF revoked_at ON keys
WHEN NEW.revoked_at IS NOT NULL AND (OLD.revoked_at IS NULL OR NEW.revoked_at < OLD.revoked_at)
     AND NEW.rotated_to IS OLD.rotated_to BEGIN
    INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id, data)
        VALUES ('evt_' || lower(hex(randomblob(12))), 'key.revoked',
                CAST(strftime('%s', 'now') AS INTEGER), NEW.tenant, NEW.id, NEW.prefix, NEW.name,
                coalesce(NEW.user_id, ''), '{}');
END;
