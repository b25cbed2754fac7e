-- 003_audit.sql - the append-only audit trail with its hash chain.
--
-- One row per lifecycle event (key, user and tenant changes, failed admin
-- authentications), written in the same transaction as the change it
-- records. hash = hex(BLAKE2b-256 keyed with the audit key, over prev_hash,
-- seq, time, actor, tenant, action, object and details joined by "\n"),
-- and prev_hash is the previous entry's hash (64 zeros for the first). The
-- audit key is derived from the server secret, which is not in this file,
-- so an entry edited here by hand cannot be chained again: `keygate audit
-- verify` reports the first broken link.
--
-- There are deliberately no triggers: an operator can edit this table, and
-- verification is what tells. No field may contain a newline (the C side
-- refuses one), so the joined text hashes one way only.
--
-- audit_head holds the seq and hash of the last entry appended. A new entry
-- chains onto the head, not onto whatever row is last, so deleting the last
-- rows is caught too: verify finds the head ahead of the rows.

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    time       INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    tenant     TEXT    NOT NULL DEFAULT '',
    action     TEXT    NOT NULL,
    object     TEXT    NOT NULL DEFAULT '',
    details    TEXT    NOT NULL DEFAULT '{}',
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);

CREATE INDEX audit_by_tenant ON audit (tenant, seq);

CREATE TABLE audit_head (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT    NOT NULL
);

INSERT INTO audit_head (one, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
