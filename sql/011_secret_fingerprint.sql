-- 011_secret_fingerprint.sql - the fingerprint of the server secret the
-- store was made with (issue 15, item 5).
--
-- Several keygate instances may share a store (PostgreSQL), and even one
-- instance may be pointed at another secret_file by mistake: every key
-- digest and the audit chain depend on the secret, so a store used with
-- another one would refuse every key. The first start with a secret writes
-- its fingerprint here (BLAKE2b keyed with the secret over a fixed label:
-- nothing about the secret or any key can be learned from it); a start
-- with a different secret is refused with a clear error, and no new secret
-- is ever created for a store that already has a fingerprint.
CREATE TABLE secret_fingerprint (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    fingerprint TEXT    NOT NULL CHECK (length(fingerprint) = 64),
    created_at  INTEGER NOT NULL
);
