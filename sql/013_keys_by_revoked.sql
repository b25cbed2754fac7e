-- 013_keys_by_revoked.sql - revoked keys by index (metrics, issue 17).
--
-- Every /metrics scrape counts keys by state (kg_store_key_census).
-- Expired keys are found through keys_by_expiry; without this index the
-- revoked ones were a full scan of keys (130 ms of CPU per scrape at
-- 1,000,000 keys). Partial: only revoked keys are in it, so it costs
-- nothing on a key that is never revoked.
CREATE INDEX keys_by_revoked ON keys (revoked_at) WHERE revoked_at IS NOT NULL;
