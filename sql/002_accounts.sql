-- 002_accounts.sql - tenants and users; every key gets an owner.
--
-- A tenant is named by a slug (what X-Keygate-Tenant carries); a user
-- belongs to one tenant and owns keys. A user's role is a scope list in the
-- key scope syntax ("*" = every scope): a key may carry only scopes its
-- user's role grants, and at request time a key can do what both its own
-- scopes and the role allow. A disabled tenant or user stops all its keys.
-- Nothing is ever deleted: the audit trail keeps naming users and keys.
--
-- The C side validates names, e-mails, roles and tiers
-- (src/manage/accounts.c); the CHECKs here hold only invariants that will
-- not change, in bytes as in 001. Tenant names are checked up to 128 bytes
-- here (not the 64 the C side allows for new ones) because 001 let keys
-- carry tenants of up to 128 bytes and they migrate as they are.
--
-- Migration: every tenant named by a key, and `default`, becomes a tenant
-- row with a user `default` (role "*"); the `default` tenant's default user
-- is a platform admin. Every key then belongs to its tenant's default user.
-- Ids made here are "usr_" and 22 lower-case hex characters, which meets the
-- id syntax; ids made by keygate later are "usr_" and 22 base62 characters.

CREATE TABLE tenants (
    name          TEXT    NOT NULL PRIMARY KEY
                  CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 128),
    display_name  TEXT    NOT NULL DEFAULT ''
                  CHECK (length(CAST(display_name AS BLOB)) <= 128),
    created_at    INTEGER NOT NULL
                  CHECK (typeof(created_at) = 'integer' AND created_at > 0),
    disabled_at   INTEGER
                  CHECK (disabled_at IS NULL
                         OR (typeof(disabled_at) = 'integer' AND disabled_at > 0))
);

CREATE TABLE users (
    id             TEXT    NOT NULL PRIMARY KEY
                   CHECK (length(CAST(id AS BLOB)) BETWEEN 1 AND 39),
    tenant         TEXT    NOT NULL REFERENCES tenants (name),
    username       TEXT    NOT NULL
                   CHECK (length(CAST(username AS BLOB)) BETWEEN 1 AND 128),
    -- Lower-cased by the C side; unique across every tenant.
    email          TEXT    UNIQUE
                   CHECK (email IS NULL OR length(CAST(email AS BLOB)) BETWEEN 3 AND 254),
    first_name     TEXT    NOT NULL DEFAULT ''
                   CHECK (length(CAST(first_name AS BLOB)) <= 128),
    last_name      TEXT    NOT NULL DEFAULT ''
                   CHECK (length(CAST(last_name AS BLOB)) <= 128),
    -- crypto_pwhash_str() output (Argon2id); NULL for users without a password.
    password_hash  TEXT
                   CHECK (password_hash IS NULL
                          OR length(CAST(password_hash AS BLOB)) BETWEEN 1 AND 127),
    role           TEXT    NOT NULL DEFAULT '*'
                   CHECK (length(CAST(role AS BLOB)) <= 1023),
    tier           TEXT    NOT NULL DEFAULT 'default'
                   CHECK (length(CAST(tier AS BLOB)) BETWEEN 1 AND 64),
    platform_admin INTEGER NOT NULL DEFAULT 0
                   CHECK (platform_admin IN (0, 1)),
    created_at     INTEGER NOT NULL
                   CHECK (typeof(created_at) = 'integer' AND created_at > 0),
    disabled_at    INTEGER
                   CHECK (disabled_at IS NULL
                          OR (typeof(disabled_at) = 'integer' AND disabled_at > 0)),
    UNIQUE (tenant, username)
);

-- Listings page through (created_at, id) and (created_at, name).
CREATE INDEX tenants_by_created ON tenants (created_at, name);
CREATE INDEX users_by_created ON users (created_at, id);
CREATE INDEX users_by_tenant ON users (tenant, created_at, id);

INSERT INTO tenants (name, created_at)
    SELECT tenant, min(created_at) FROM keys GROUP BY tenant;
INSERT OR IGNORE INTO tenants (name, created_at)
    VALUES ('default', CAST(strftime('%s', 'now') AS INTEGER));

INSERT INTO users (id, tenant, username, role, platform_admin, created_at)
    SELECT 'usr_' || lower(hex(randomblob(11))), name, 'default', '*', name = 'default',
           created_at
    FROM tenants;

-- Not NOT NULL: ALTER TABLE cannot add that to a table with rows. The C side
-- always sets it, and the key cache treats a key without an owner as dead.
ALTER TABLE keys ADD COLUMN user_id TEXT REFERENCES users (id);

UPDATE keys SET user_id = (SELECT users.id FROM users
                           WHERE users.tenant = keys.tenant AND users.username = 'default');

CREATE INDEX keys_by_user ON keys (user_id, created_at, id);
