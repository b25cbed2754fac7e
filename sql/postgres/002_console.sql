-- 002_console.sql - sign-in sessions of the web console (issue 14); the
-- PostgreSQL twin of sql/009_console.sql. Only a keyed digest of a session
-- token is kept. The triggers end a user's sessions in the same transaction
-- as a password change or a user or tenant being disabled, whoever makes it.

CREATE TABLE console_sessions (
    digest       bytea  NOT NULL PRIMARY KEY CHECK (octet_length(digest) = 32),
    user_id      text   NOT NULL REFERENCES users (id),
    created_at   bigint NOT NULL CHECK (created_at > 0),
    expires_at   bigint NOT NULL CHECK (expires_at > 0),
    last_seen_at bigint NOT NULL CHECK (last_seen_at > 0)
);

CREATE INDEX console_sessions_by_user ON console_sessions (user_id);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);

CREATE FUNCTION keygate_user_end_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.password_hash IS DISTINCT FROM OLD.password_hash
       OR (NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL) THEN
        DELETE FROM console_sessions WHERE user_id = NEW.id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_end_console_sessions AFTER UPDATE OF password_hash, disabled_at ON users
    FOR EACH ROW EXECUTE FUNCTION keygate_user_end_sessions();

CREATE FUNCTION keygate_tenant_end_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL THEN
        DELETE FROM console_sessions
            WHERE user_id IN (SELECT id FROM users WHERE tenant = NEW.name);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_end_console_sessions AFTER UPDATE OF disabled_at ON tenants
    FOR EACH ROW EXECUTE FUNCTION keygate_tenant_end_sessions();
