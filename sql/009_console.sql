-- 009_console.sql - sign-in sessions of the web console (issue 14).
--
-- A session is a random 256-bit token the browser holds in a cookie; the
-- store keeps only its keyed digest (BLAKE2b keyed from the server secret),
-- so a copy of the database signs nobody in. A session ends at expires_at
-- (created_at + console_session_ttl), after console_session_idle without a
-- request (last_seen_at), at sign-out, and whenever its user's password
-- changes or the user or its tenant is disabled: the triggers below delete
-- those rows in the same transaction as the change, whoever makes it (CLI,
-- admin API, another daemon), so no code path can forget it.

CREATE TABLE console_sessions (
    digest       BLOB    NOT NULL PRIMARY KEY CHECK (length(digest) = 32),
    user_id      TEXT    NOT NULL REFERENCES users (id),
    created_at   INTEGER NOT NULL CHECK (typeof(created_at) = 'integer' AND created_at > 0),
    expires_at   INTEGER NOT NULL CHECK (typeof(expires_at) = 'integer' AND expires_at > 0),
    last_seen_at INTEGER NOT NULL CHECK (typeof(last_seen_at) = 'integer' AND last_seen_at > 0)
);

CREATE INDEX console_sessions_by_user ON console_sessions (user_id);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);

CREATE TRIGGER users_end_console_sessions
AFTER UPDATE OF password_hash, disabled_at ON users
WHEN NEW.password_hash IS NOT OLD.password_hash
     OR (NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL)
BEGIN
    DELETE FROM console_sessions WHERE user_id = NEW.id;
END;

CREATE TRIGGER tenants_end_console_sessions
AFTER UPDATE OF disabled_at ON tenants
WHEN NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL
BEGIN
    DELETE FROM console_sessions
        WHERE user_id IN (SELECT id FROM users WHERE tenant = NEW.name);
END;
