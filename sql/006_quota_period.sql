-- Credits refill (issue 5, item 4): the start (Unix seconds, a UTC day or
-- month boundary) of the refill period quota_used counts. A flush that
-- charges in a later period starts quota_used again from its delta. 0 = no
-- period yet (no refill, or none charged since one was set): what is used
-- then counts in the first period, which the first charge with a refill sets.
ALTER TABLE keys ADD COLUMN quota_period_start INTEGER NOT NULL DEFAULT 0;
