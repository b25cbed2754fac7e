-- The tenant that accounts made by the public signup endpoint join by
-- default (signup_tenant). It is kept apart from 'default', where the
-- platform administrator lives, so a self-service account never shares a
-- tenant (and so X-Keygate-Tenant) with the operator's own keys.
INSERT OR IGNORE INTO tenants (name, display_name, created_at)
    VALUES ('signup', 'Self-service signups', CAST(strftime('%s', 'now') AS INTEGER));
