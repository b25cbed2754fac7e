/* keygate/session.h - sign-in sessions of the web console.
 *
 * A session is a random 256-bit token (43 characters of base64url) the
 * browser keeps in an HttpOnly, SameSite=Strict cookie. The store keeps
 * only its keyed digest (BLAKE2b with a key derived from the server secret),
 * with an absolute end (console_session_ttl) and the time it was last used
 * (console_session_idle counts from there). The anti-CSRF token of a
 * session is derived from its token with another derived key, so it needs
 * no storage and changes with every sign-in; the page sends it in a header
 * (X-CSRF-Token), which a cross-site form cannot.
 *
 * Signing in verifies an Argon2id hash (tens of milliseconds, 64 MiB):
 * kg_session_signin() must run off the event loops (the worker thread).
 * An unknown login, a user without a password, a disabled user or tenant
 * and a wrong password all take one verification (a dummy hash stands in)
 * and give the same status and words. Tokens and passwords never reach a
 * log or an error message.
 */
#ifndef KEYGATE_SESSION_H
#define KEYGATE_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "keygate/digest.h"
#include "keygate/status.h"
#include "keygate/store.h"

#define KG_SESSION_TOKEN_LEN 43 /* base64url (no padding) of 32 random bytes */
#define KG_SESSION_CSRF_LEN 64  /* hex of 32 bytes */
#define KG_SESSION_COOKIE "keygate_console"
#define KG_SESSION_BAD_LOGIN "Invalid e-mail, username or password"

struct kg_throttle;

/* A new random token. */
void kg_session_new_token(char out[KG_SESSION_TOKEN_LEN + 1]);

/* Whether token looks like one of ours (length and alphabet). */
bool kg_session_token_ok(const char *token);

/* The digest the store keeps for token. Pure. */
void kg_session_digest(const struct kg_secret *s, const char *token,
                       unsigned char out[KG_DIGEST_BYTES]);

/* The anti-CSRF token of the session token (hex). Pure. */
void kg_session_csrf(const struct kg_secret *s, const char *token,
                     char out[KG_SESSION_CSRF_LEN + 1]);

/* Whether sent (may be NULL) is the anti-CSRF token of token; constant time. */
bool kg_session_csrf_ok(const struct kg_secret *s, const char *token, const char *sent);

/* Finds our cookie in a Cookie header value (may be NULL) and copies its
 * token to out; false when it is absent or malformed. */
bool kg_session_cookie_token(const char *cookie, char out[KG_SESSION_TOKEN_LEN + 1]);

/* Whether rec is still alive at now (Unix seconds): before its expires_at
 * and used within idle_s. Pure. */
bool kg_session_alive(const struct kg_session_rec *rec, int64_t now, int64_t idle_s);

/* The throttles a sign-in consults (any may be NULL: off): failed attempts
 * per client IP and per login (lower-cased), each with its cool-down. */
struct kg_session_throttles {
    struct kg_throttle *ip_failures, *ip_cooldown;
    struct kg_throttle *login_failures, *login_cooldown;
};

/* Signs login (an e-mail address, or a username unique across tenants) in
 * with password: on KG_OK *user holds the user and token a new session's
 * token, stored with expires_at = now + ttl_s. Refusals: KG_ENOTFOUND with
 * KG_SESSION_BAD_LOGIN (every kind of bad credential, after one Argon2id
 * verification); KG_ELIMIT "Too many failed sign-ins" with *retry_ms when
 * the client IP or the login is cooling down (checked before verifying,
 * counted after a failure). now_ms is the throttles' monotonic clock. */
enum kg_status kg_session_signin(struct kg_store *st, const struct kg_secret *secret,
                                 const struct kg_session_throttles *th, const char *client_ip,
                                 const char *login, const char *password, int64_t now,
                                 int64_t now_ms, int64_t ttl_s, struct kg_user_rec *user,
                                 char token[KG_SESSION_TOKEN_LEN + 1], int64_t *retry_ms,
                                 struct kg_err *err);

/* The live session of token: on KG_OK *user is its user (enabled, in an
 * enabled tenant) and the session's last use is moved to now. KG_ENOTFOUND
 * when there is none, it ended (an ended one is deleted) or its user
 * cannot be read. */
enum kg_status kg_session_check(struct kg_store *st, const struct kg_secret *secret,
                                const char *token, int64_t now, int64_t idle_s,
                                struct kg_user_rec *user, struct kg_err *err);

/* Ends the session of token (sign-out); one that does not exist is fine. */
enum kg_status kg_session_end(struct kg_store *st, const struct kg_secret *secret,
                              const char *token, struct kg_err *err);

#endif
