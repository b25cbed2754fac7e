-- 003_events.sql - key events and defences (issue 18); the PostgreSQL twin
-- of sql/010_events.sql (read it for what each object is for): keys.canary
-- and keys.allowed_ips, the events outbox, one delivery row per (event,
-- endpoint), each endpoint's fan-out cursor, the alerts already sent, and
-- the triggers that write key.created / key.rotated / key.revoked in the
-- transaction of the change, with the same ids and JSON data as SQLite.
--
-- What several instances change here at once:
-- - events.seq comes from events_state.last_seq, incremented by a BEFORE
--   INSERT trigger: the row lock is held to COMMIT, so events become
--   visible in seq order (as change_log rows do) and a fan-out that moved
--   an endpoint's cursor past seq N can never miss an event below N that
--   was still uncommitted (a sequence would allow exactly that);
-- - fan-out of one endpoint is serialised by an advisory lock and claims
--   of deliveries are row locks (src/store/pg_events.c).

ALTER TABLE keys ADD COLUMN canary boolean NOT NULL DEFAULT false;
ALTER TABLE keys ADD COLUMN allowed_ips text
    CHECK (allowed_ips IS NULL OR octet_length(allowed_ips) BETWEEN 1 AND 1023);

-- The change log's update trigger, again with the two new columns.
DROP TRIGGER keys_changed_update ON keys;
CREATE TRIGGER keys_changed_update
    AFTER UPDATE OF id, name, prefix, last4, digest, scopes, tenant, created_at, expires_at,
                    revoked_at, rotated_to, rate, rate_burst, quota_limit, quota_period,
                    metadata, user_id, canary, allowed_ips
    ON keys FOR EACH ROW EXECUTE FUNCTION keygate_key_changed();

CREATE TABLE events (
    seq     bigint PRIMARY KEY,
    id      text   NOT NULL UNIQUE CHECK (octet_length(id) BETWEEN 1 AND 39),
    type    text   NOT NULL CHECK (octet_length(type) BETWEEN 1 AND 31),
    time    bigint NOT NULL,
    tenant  text   NOT NULL DEFAULT '',
    key_id  text   NOT NULL DEFAULT '',
    prefix  text   NOT NULL DEFAULT '',
    name    text   NOT NULL DEFAULT '',
    user_id text   NOT NULL DEFAULT '',
    data    text   NOT NULL DEFAULT '{}' CHECK (octet_length(data) BETWEEN 2 AND 2047)
);
CREATE INDEX events_by_time ON events (time);

CREATE TABLE events_state (
    one      integer PRIMARY KEY CHECK (one = 1),
    last_seq bigint  NOT NULL DEFAULT 0
);
INSERT INTO events_state (one, last_seq) VALUES (1, 0);

CREATE FUNCTION keygate_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE events_state SET last_seq = last_seq + 1 WHERE one = 1 RETURNING last_seq INTO NEW.seq;
    RETURN NEW;
END $$;

CREATE TRIGGER events_seq BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION keygate_event_seq();

CREATE TABLE event_deliveries (
    event_seq   bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    endpoint    text   NOT NULL,
    state       text   NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    bigint NOT NULL DEFAULT 0,
    next_at     bigint NOT NULL,
    last_status bigint NOT NULL DEFAULT 0,
    last_error  text   NOT NULL DEFAULT '',
    done_at     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (event_seq, endpoint)
);
CREATE INDEX deliveries_due ON event_deliveries (state, next_at);

CREATE TABLE webhook_cursors (
    endpoint text   PRIMARY KEY,
    last_seq bigint NOT NULL
);

CREATE TABLE alerts (
    object text   NOT NULL,
    kind   text   NOT NULL,
    mark   bigint NOT NULL,
    PRIMARY KEY (object, kind)
);

-- "evt_" and 24 lower-case hex digits, as SQLite's hex(randomblob(12)).
CREATE FUNCTION keygate_event_id() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT 'evt_' || substr(md5(gen_random_uuid()::text), 1, 24)
$$;

CREATE FUNCTION keygate_key_event(kind text, k keys, data text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (id, type, time, tenant, key_id, prefix, name, user_id, data)
        VALUES (keygate_event_id(), kind, extract(epoch FROM now())::bigint, k.tenant, k.id,
                k.prefix, k.name, coalesce(k.user_id, ''), data);
END $$;

CREATE FUNCTION keygate_key_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keygate_key_event('key.created', NEW,
                              CASE WHEN NEW.canary THEN '{"canary":true}' ELSE '{}' END);
    RETURN NULL;
END $$;

-- The data text as SQLite's json_object() writes it (no spaces).
CREATE FUNCTION keygate_key_rotated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keygate_key_event('key.rotated', NEW,
        '{"rotated_to":' || to_json(NEW.rotated_to)::text
        || ',"revoked_at":' || coalesce(NEW.revoked_at::text, 'null') || '}');
    RETURN NULL;
END $$;

CREATE FUNCTION keygate_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keygate_key_event('key.revoked', NEW, '{}');
    RETURN NULL;
END $$;

CREATE TRIGGER keys_event_created AFTER INSERT ON keys
    FOR EACH ROW EXECUTE FUNCTION keygate_key_created();

CREATE TRIGGER keys_event_rotated AFTER UPDATE OF rotated_to ON keys
    FOR EACH ROW WHEN (NEW.rotated_to IS NOT NULL AND OLD.rotated_to IS NULL)
    EXECUTE FUNCTION keygate_key_rotated();

-- A revocation, or a scheduled one (rotation grace) brought forward; not
-- the scheduling a rotation itself does (key.rotated says that).
CREATE TRIGGER keys_event_revoked AFTER UPDATE OF revoked_at ON keys
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL
                       AND (OLD.revoked_at IS NULL OR NEW.revoked_at < OLD.revoked_at)
                       AND NEW.rotated_to IS NOT DISTINCT FROM OLD.rotated_to)
    EXECUTE FUNCTION keygate_key_revoked();

-- The clock's alerts find their keys through these, not by reading every
-- key (sql/010_events.sql says why).
CREATE INDEX keys_by_expiry ON keys (expires_at);
CREATE INDEX keys_by_last_use ON keys ((coalesce(last_used_at, created_at)));
