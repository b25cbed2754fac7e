-- Per-user credits and the tier quota (issue 5, items 2 and 4).
-- A user may have credits of its own that every key of the user draws
-- from (quota_limit NULL = unlimited; quota_period '', 'day' or 'month' is
-- when they come back), and every user uses up its tier's quota (config:
-- tier NAME ... quota N/day|N/month) in units of cost.
-- What was used lives in a table of its own, like key_usage: the
-- once-a-second flush adds deltas to these rows and never touches the user
-- records, which a whole-record update rewrites. A *_period_start is the
-- start (Unix seconds, UTC day or month) of the period its count belongs
-- to; 0 = none yet. A delta charged in a later period starts the count
-- again (the refill). A user without a row has used nothing.
ALTER TABLE users ADD COLUMN quota_limit INTEGER
    CHECK (quota_limit IS NULL OR (typeof(quota_limit) = 'integer' AND quota_limit >= 0));
ALTER TABLE users ADD COLUMN quota_period TEXT NOT NULL DEFAULT ''
    CHECK (quota_period IN ('', 'day', 'month'));
CREATE TABLE user_usage (
    user_id              TEXT    PRIMARY KEY REFERENCES users (id),
    credits_used         INTEGER NOT NULL DEFAULT 0,
    credits_period_start INTEGER NOT NULL DEFAULT 0,
    tier_used            INTEGER NOT NULL DEFAULT 0,
    tier_period_start    INTEGER NOT NULL DEFAULT 0,
    updated_at           INTEGER NOT NULL
);
