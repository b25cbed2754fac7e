-- 005_keys_by_revoked.sql - the PostgreSQL twin of sql/013_keys_by_revoked.sql:
-- the revoked keys by a partial index, so the key count by state each
-- /metrics scrape asks (kg_store_key_census) reads no row of an active key.
CREATE INDEX keys_by_revoked ON keys (revoked_at) WHERE revoked_at IS NOT NULL;
