-- Per-key usage counters (issue 5, item 6). A table of their own rather than
-- columns on keys: the once-a-second flush rewrites these rows, and keeping
-- them apart leaves the key records (and every statement that lists their
-- columns) untouched; a key without a row has never been counted.
-- Totals only ever grow by deltas that one flush transaction adds, so a
-- restart continues from them and nothing is counted twice. last_used_at
-- stays on keys, where it already was.
CREATE TABLE key_usage (
    key_id           TEXT PRIMARY KEY REFERENCES keys(id) ON DELETE CASCADE,
    requests         INTEGER NOT NULL DEFAULT 0,
    denied_expired   INTEGER NOT NULL DEFAULT 0,
    denied_forbidden INTEGER NOT NULL DEFAULT 0,
    denied_rate      INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL
);
