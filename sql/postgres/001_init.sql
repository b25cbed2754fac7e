-- sql/postgres/001_init.sql - the PostgreSQL schema of keygate, equal to what
-- sql/001..008 build in SQLite: keys, tenants, users, the audit trail with
-- its head, usage counters, and the change log the key caches sync from.
--
-- PostgreSQL migrations are numbered on their own (sql/postgres/NNN_*.sql)
-- and applied by src/store/pg_migrate.c, each in one transaction that also
-- records it in keygate_schema. Times are Unix seconds in bigint; NULL means
-- "not set" as in SQLite. Lengths are octet_length (bytes), matching the
-- fixed-size buffers of include/keygate/store.h. Ids and tenant names sort
-- by bytes (COLLATE "C"), as SQLite sorts them, so listings page the same.
--
-- Several keygate instances write here at once, so what SQLite gets from
-- its single writer is made explicit: the audit chain head and the change
-- log position are single rows every writer locks (FOR UPDATE, or the
-- UPDATE in the trigger), so chain entries and change log rows are
-- numbered in commit order and never fork.

CREATE TABLE tenants (
    name          text   COLLATE "C" NOT NULL PRIMARY KEY
                  CHECK (octet_length(name) BETWEEN 1 AND 128),
    display_name  text   NOT NULL DEFAULT ''
                  CHECK (octet_length(display_name) <= 128),
    created_at    bigint NOT NULL CHECK (created_at > 0),
    disabled_at   bigint CHECK (disabled_at IS NULL OR disabled_at > 0)
);

CREATE TABLE users (
    id             text    COLLATE "C" NOT NULL PRIMARY KEY CHECK (octet_length(id) BETWEEN 1 AND 39),
    tenant         text    NOT NULL REFERENCES tenants (name),
    username       text    NOT NULL CHECK (octet_length(username) BETWEEN 1 AND 128),
    email          text    UNIQUE
                   CHECK (email IS NULL OR octet_length(email) BETWEEN 3 AND 254),
    first_name     text    NOT NULL DEFAULT '' CHECK (octet_length(first_name) <= 128),
    last_name      text    NOT NULL DEFAULT '' CHECK (octet_length(last_name) <= 128),
    password_hash  text    CHECK (password_hash IS NULL
                                  OR octet_length(password_hash) BETWEEN 1 AND 127),
    role           text    NOT NULL DEFAULT '*' CHECK (octet_length(role) <= 1023),
    tier           text    NOT NULL DEFAULT 'default'
                   CHECK (octet_length(tier) BETWEEN 1 AND 64),
    platform_admin boolean NOT NULL DEFAULT false,
    created_at     bigint  NOT NULL CHECK (created_at > 0),
    disabled_at    bigint  CHECK (disabled_at IS NULL OR disabled_at > 0),
    quota_limit    bigint  CHECK (quota_limit IS NULL OR quota_limit >= 0),
    quota_period   text    NOT NULL DEFAULT '' CHECK (quota_period IN ('', 'day', 'month')),
    UNIQUE (tenant, username)
);

CREATE INDEX tenants_by_created ON tenants (created_at, name);
CREATE INDEX users_by_created ON users (created_at, id);
CREATE INDEX users_by_tenant ON users (tenant, created_at, id);

CREATE TABLE keys (
    id                 text   COLLATE "C" NOT NULL PRIMARY KEY CHECK (octet_length(id) BETWEEN 1 AND 39),
    name               text   NOT NULL DEFAULT '' CHECK (octet_length(name) <= 128),
    prefix             text   NOT NULL DEFAULT '' CHECK (octet_length(prefix) <= 47),
    last4              text   NOT NULL DEFAULT '' CHECK (octet_length(last4) <= 4),
    digest             bytea  NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    scopes             text   NOT NULL DEFAULT '' CHECK (octet_length(scopes) <= 1023),
    tenant             text   NOT NULL DEFAULT 'default'
                       CHECK (octet_length(tenant) BETWEEN 1 AND 128),
    created_at         bigint NOT NULL CHECK (created_at > 0),
    expires_at         bigint CHECK (expires_at IS NULL OR expires_at > 0),
    revoked_at         bigint CHECK (revoked_at IS NULL OR revoked_at > 0),
    last_used_at       bigint CHECK (last_used_at IS NULL OR last_used_at > 0),
    rotated_to         text   CHECK (rotated_to IS NULL
                                     OR (octet_length(rotated_to) BETWEEN 1 AND 39
                                         AND rotated_to <> id)),
    rate               text   CHECK (rate IS NULL OR octet_length(rate) BETWEEN 1 AND 31),
    rate_burst         bigint CHECK (rate_burst IS NULL OR rate_burst > 0),
    quota_limit        bigint CHECK (quota_limit IS NULL OR quota_limit >= 0),
    quota_period       text   CHECK (quota_period IS NULL
                                     OR octet_length(quota_period) BETWEEN 1 AND 15),
    quota_used         bigint NOT NULL DEFAULT 0 CHECK (quota_used >= 0),
    metadata           text   NOT NULL DEFAULT '{}'
                       CHECK (octet_length(metadata) BETWEEN 2 AND 4095),
    user_id            text   REFERENCES users (id),
    quota_period_start bigint NOT NULL DEFAULT 0
);

CREATE INDEX keys_by_created ON keys (created_at, id);
CREATE INDEX keys_by_tenant ON keys (tenant, created_at);
CREATE INDEX keys_by_user ON keys (user_id, created_at, id);

-- The audit trail (see sql/003_audit.sql for the chain): audit_head is
-- read FOR UPDATE by every appender, so two instances never chain onto the
-- same head.
CREATE TABLE audit (
    seq        bigint PRIMARY KEY,
    time       bigint NOT NULL,
    actor      text   NOT NULL,
    tenant     text   NOT NULL DEFAULT '',
    action     text   NOT NULL,
    object     text   NOT NULL DEFAULT '',
    details    text   NOT NULL DEFAULT '{}',
    prev_hash  text   NOT NULL,
    hash       text   NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant, seq);

CREATE TABLE audit_head (
    one   integer PRIMARY KEY CHECK (one = 1),
    seq   bigint  NOT NULL,
    hash  text    NOT NULL
);
INSERT INTO audit_head (one, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

INSERT INTO tenants (name, created_at)
    VALUES ('default', extract(epoch FROM now())::bigint);
INSERT INTO users (id, tenant, username, role, platform_admin, created_at)
    VALUES ('usr_' || substr(md5(random()::text || clock_timestamp()::text), 1, 22),
            'default', 'default', '*', true, extract(epoch FROM now())::bigint);
INSERT INTO tenants (name, display_name, created_at)
    VALUES ('signup', 'Self-service signups', extract(epoch FROM now())::bigint);

-- Usage counters and users' credits (sql/005, sql/007): rows the flush
-- adds deltas to, apart from the records a lifecycle update rewrites.
CREATE TABLE key_usage (
    key_id           text   PRIMARY KEY REFERENCES keys (id) ON DELETE CASCADE,
    requests         bigint NOT NULL DEFAULT 0,
    denied_expired   bigint NOT NULL DEFAULT 0,
    denied_forbidden bigint NOT NULL DEFAULT 0,
    denied_rate      bigint NOT NULL DEFAULT 0,
    updated_at       bigint NOT NULL
);

CREATE TABLE user_usage (
    user_id              text   PRIMARY KEY REFERENCES users (id),
    credits_used         bigint NOT NULL DEFAULT 0,
    credits_period_start bigint NOT NULL DEFAULT 0,
    tier_used            bigint NOT NULL DEFAULT 0,
    tier_period_start    bigint NOT NULL DEFAULT 0,
    updated_at           bigint NOT NULL
);

-- Flushes already applied, by the token the writing instance gave them:
-- a flush whose COMMIT reply was lost is asked about by its token after
-- the reconnect and never applied twice (src/store/pg_usage.c). Trimmed
-- with the change log.
CREATE TABLE flush_applied (
    token      text   PRIMARY KEY,
    applied_at bigint NOT NULL
);

-- The change log (sql/008_change_log.sql). seq comes from
-- change_log_state.last_seq, which the trigger increments: the row lock
-- it takes is held to COMMIT, so rows become visible in seq order and a
-- reader that saw seq N has seen every row below it. Each change also
-- sends NOTIFY keygate_changes, a wake-up for the instances that LISTEN
-- (the poll alone is the guarantee).
CREATE TABLE change_log (
    seq        bigint PRIMARY KEY,
    object     text   NOT NULL CHECK (object IN ('key', 'user', 'tenant')),
    id         text   NOT NULL,
    changed_at bigint NOT NULL
);

CREATE TABLE change_log_state (
    one             integer PRIMARY KEY CHECK (one = 1),
    last_seq        bigint  NOT NULL DEFAULT 0,
    trimmed_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO change_log_state (one, last_seq, trimmed_through) VALUES (1, 0, 0);

CREATE FUNCTION keygate_log_change(obj text, obj_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    UPDATE change_log_state SET last_seq = last_seq + 1 WHERE one = 1 RETURNING last_seq INTO s;
    INSERT INTO change_log (seq, object, id, changed_at)
        VALUES (s, obj, obj_id, extract(epoch FROM now())::bigint);
    PERFORM pg_notify('keygate_changes', s::text);
END;
$$;

CREATE FUNCTION keygate_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM keygate_log_change('key', OLD.id);
    ELSE
        PERFORM keygate_log_change('key', NEW.id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION keygate_user_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keygate_log_change('user', NEW.id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION keygate_tenant_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keygate_log_change('tenant', NEW.name);
    RETURN NULL;
END;
$$;

CREATE TRIGGER keys_changed_insert AFTER INSERT ON keys
    FOR EACH ROW EXECUTE FUNCTION keygate_key_changed();
-- Not the usage columns: the once-a-second flush must not look like a change.
CREATE TRIGGER keys_changed_update
    AFTER UPDATE OF id, name, prefix, last4, digest, scopes, tenant, created_at, expires_at,
                    revoked_at, rotated_to, rate, rate_burst, quota_limit, quota_period,
                    metadata, user_id
    ON keys FOR EACH ROW EXECUTE FUNCTION keygate_key_changed();
CREATE TRIGGER keys_changed_delete AFTER DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION keygate_key_changed();
CREATE TRIGGER users_changed_insert AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION keygate_user_changed();
CREATE TRIGGER users_changed_update AFTER UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION keygate_user_changed();
CREATE TRIGGER tenants_changed_insert AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION keygate_tenant_changed();
CREATE TRIGGER tenants_changed_update AFTER UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION keygate_tenant_changed();

-- The fingerprint of the server secret every instance must share (issue
-- 15, item 5; sql/011_secret_fingerprint.sql in SQLite). One row, written
-- by the first instance that opens the store with a secret.
CREATE TABLE secret_fingerprint (
    one         integer PRIMARY KEY CHECK (one = 1),
    fingerprint text    NOT NULL CHECK (octet_length(fingerprint) = 64),
    created_at  bigint  NOT NULL
);
