-- 012_credit_reservations.sql - credits_mode strict (issue 15, item 3).
--
-- With credits_mode strict an instance spends only credits it holds: it
-- reserves small blocks of a key's credits here, in a transaction that
-- locks the key's row, so the credits used plus every live reservation
-- never pass the key's limit. One row per key, instance (a random id each
-- process draws at start) and refill period:
--   granted   credits handed to the instance in that period;
--   spent     of its charges, what its flushes added to keys.quota_used
--             (the flush adds both in one transaction, so a block's credits
--             are counted either as reserved or as used, never in neither);
--   expires_at the lease: renewed while the instance lives, so a dead
--             instance's unspent credits come back after it runs out.
-- What an instance holds and has not spent is granted - spent. Rows of an
-- ended period or a lapsed lease are deleted by the next reservation of
-- the key; an instance deletes its own at shutdown. Not in the change log:
-- reservations change no key and must cause no reload.
CREATE TABLE credit_reservations (
    key_id       TEXT    NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
    instance     TEXT    NOT NULL CHECK (length(instance) BETWEEN 1 AND 64),
    period_start INTEGER NOT NULL,
    granted      INTEGER NOT NULL DEFAULT 0 CHECK (granted >= 0),
    spent        INTEGER NOT NULL DEFAULT 0 CHECK (spent >= 0),
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (key_id, instance, period_start)
);
CREATE INDEX credit_reservations_by_instance ON credit_reservations (instance);
