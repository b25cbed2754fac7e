-- 001_init.sql - the keys table: one row per API key, never the key itself.
--
-- A key is stored as its keyed BLAKE2b digest plus a display prefix and the
-- last four characters, enough to recognise it in a list and nothing more.
-- Times are Unix seconds; NULL means "not set" (the C struct says 0).
-- NULL in rate, rate_burst, quota_limit and quota_period means "the default"
-- (quota_limit NULL is unlimited, -1 in C).
--
-- Lengths are counted in bytes (CAST AS BLOB), because the C side keeps
-- fixed-size buffers and length() on TEXT counts characters. The bounds match
-- include/keygate/store.h. Only invariants that will not change are CHECKs:
-- SQLite can only change a CHECK by rebuilding the table.
--
-- rotated_to is deliberately not a FOREIGN KEY: a restore that inserts keys
-- oldest first would name a key that is not there yet.
--
-- Applied by src/store/store_sqlite.c inside one BEGIN IMMEDIATE transaction
-- that also sets PRAGMA user_version to 1.

CREATE TABLE keys (
    id            TEXT    NOT NULL PRIMARY KEY
                  CHECK (length(CAST(id AS BLOB)) BETWEEN 1 AND 39),
    name          TEXT    NOT NULL DEFAULT ''
                  CHECK (length(CAST(name AS BLOB)) <= 128),
    prefix        TEXT    NOT NULL DEFAULT ''
                  CHECK (length(CAST(prefix AS BLOB)) <= 47),
    last4         TEXT    NOT NULL DEFAULT ''
                  CHECK (length(CAST(last4 AS BLOB)) <= 4),
    digest        BLOB    NOT NULL UNIQUE
                  CHECK (typeof(digest) = 'blob' AND length(digest) = 32),
    scopes        TEXT    NOT NULL DEFAULT ''
                  CHECK (length(CAST(scopes AS BLOB)) <= 1023),
    tenant        TEXT    NOT NULL DEFAULT 'default'
                  CHECK (length(CAST(tenant AS BLOB)) BETWEEN 1 AND 128),
    created_at    INTEGER NOT NULL
                  CHECK (typeof(created_at) = 'integer' AND created_at > 0),
    expires_at    INTEGER
                  CHECK (expires_at IS NULL
                         OR (typeof(expires_at) = 'integer' AND expires_at > 0)),
    revoked_at    INTEGER
                  CHECK (revoked_at IS NULL
                         OR (typeof(revoked_at) = 'integer' AND revoked_at > 0)),
    last_used_at  INTEGER
                  CHECK (last_used_at IS NULL
                         OR (typeof(last_used_at) = 'integer' AND last_used_at > 0)),
    rotated_to    TEXT
                  CHECK (rotated_to IS NULL
                         OR (length(CAST(rotated_to AS BLOB)) BETWEEN 1 AND 39
                             AND rotated_to <> id)),
    rate          TEXT
                  CHECK (rate IS NULL OR length(CAST(rate AS BLOB)) BETWEEN 1 AND 31),
    rate_burst    INTEGER
                  CHECK (rate_burst IS NULL
                         OR (typeof(rate_burst) = 'integer' AND rate_burst > 0)),
    quota_limit   INTEGER
                  CHECK (quota_limit IS NULL
                         OR (typeof(quota_limit) = 'integer' AND quota_limit >= 0)),
    quota_period  TEXT
                  CHECK (quota_period IS NULL
                         OR length(CAST(quota_period AS BLOB)) BETWEEN 1 AND 15),
    quota_used    INTEGER NOT NULL DEFAULT 0
                  CHECK (typeof(quota_used) = 'integer' AND quota_used >= 0),
    metadata      TEXT    NOT NULL DEFAULT '{}'
                  CHECK (length(CAST(metadata AS BLOB)) BETWEEN 2 AND 4095)
);

-- kg_store_key_each() walks keys oldest first; listings filter by tenant.
CREATE INDEX keys_by_created ON keys (created_at, id);
CREATE INDEX keys_by_tenant ON keys (tenant, created_at);
