/* console/session.c - the web console's sessions: tokens, their keyed
 * digests and anti-CSRF tokens, the session cookie, and signing in, checking
 * and ending a session over the store (keygate/session.h). Knows nothing of
 * HTTP beyond the Cookie header's syntax; what an answer looks like is
 * console/selfservice.c's.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/accounts.h"
#include "keygate/session.h"
#include "keygate/throttle.h"

#define SUBKEY_SESSION "keygate console session v1"
#define SUBKEY_CSRF "keygate console csrf v1"

void
kg_session_new_token(char out[KG_SESSION_TOKEN_LEN + 1])
{
    unsigned char raw[32];

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(out, KG_SESSION_TOKEN_LEN + 1, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
}

bool
kg_session_token_ok(const char *token)
{
    if (token == NULL || strnlen(token, KG_SESSION_TOKEN_LEN + 1) != KG_SESSION_TOKEN_LEN)
        return false;
    for (const char *p = token; *p != '\0'; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return false;
    return true;
}

static void
keyed(const struct kg_secret *s, const char *label, const char *token, unsigned char out[32])
{
    unsigned char key[32];

    kg_digest_subkey(s, label, key);
    crypto_generichash(out, 32, (const unsigned char *)token, strlen(token), key, sizeof(key));
    sodium_memzero(key, sizeof(key));
}

void
kg_session_digest(const struct kg_secret *s, const char *token, unsigned char out[KG_DIGEST_BYTES])
{
    keyed(s, SUBKEY_SESSION, token, out);
}

void
kg_session_csrf(const struct kg_secret *s, const char *token, char out[KG_SESSION_CSRF_LEN + 1])
{
    unsigned char raw[32];

    keyed(s, SUBKEY_CSRF, token, raw);
    sodium_bin2hex(out, KG_SESSION_CSRF_LEN + 1, raw, sizeof(raw));
}

bool
kg_session_csrf_ok(const struct kg_secret *s, const char *token, const char *sent)
{
    char want[KG_SESSION_CSRF_LEN + 1];
    bool ok;

    if (sent == NULL || strnlen(sent, KG_SESSION_CSRF_LEN + 1) != KG_SESSION_CSRF_LEN)
        return false;
    kg_session_csrf(s, token, want);
    ok = sodium_memcmp(want, sent, KG_SESSION_CSRF_LEN) == 0;
    sodium_memzero(want, sizeof(want));
    return ok;
}

bool
kg_session_cookie_token(const char *cookie, char out[KG_SESSION_TOKEN_LEN + 1])
{
    static const char name[] = KG_SESSION_COOKIE "=";
    const char *p = cookie;

    out[0] = '\0';
    while (p != NULL && *p != '\0') {
        size_t n;

        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        n = strcspn(p, ";");
        if (strncmp(p, name, sizeof(name) - 1) == 0) {
            size_t vlen = n - (sizeof(name) - 1);

            while (vlen > 0 && (p[sizeof(name) - 1 + vlen - 1] == ' '))
                vlen--;
            if (vlen != KG_SESSION_TOKEN_LEN)
                return false;
            memcpy(out, p + sizeof(name) - 1, vlen);
            out[vlen] = '\0';
            if (!kg_session_token_ok(out)) {
                out[0] = '\0';
                return false;
            }
            return true;
        }
        p += n;
    }
    return false;
}

bool
kg_session_alive(const struct kg_session_rec *rec, int64_t now, int64_t idle_s)
{
    return now < rec->expires_at && now - rec->last_seen_at < idle_s;
}

/* ---- signing in ---- */

/* A hash of a random password, verified instead of a user's when there is
 * no user to verify against, so every refusal costs the same. Made once. */
static char dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void
make_dummy(void)
{
    unsigned char pw[24];

    randombytes_buf(pw, sizeof(pw));
    if (crypto_pwhash_str(dummy_hash, (const char *)pw, sizeof(pw),
                          crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        dummy_hash[0] = '\0';
    sodium_memzero(pw, sizeof(pw));
}

/* The login as the per-account throttle knows it: lower-cased, cut. */
static void
login_key(const char *login, char out[KG_EMAIL_MAX])
{
    size_t i;

    for (i = 0; login[i] != '\0' && i < KG_EMAIL_MAX - 1; i++)
        out[i] = (char)tolower((unsigned char)login[i]);
    out[i] = '\0';
}

static enum kg_status
find_user(struct kg_store *st, const char *login, struct kg_user_rec *u)
{
    char email[KG_EMAIL_MAX];
    struct kg_err ignored = {{0}};

    if (strchr(login, '@') != NULL) {
        if (kg_accounts_normalise_email(login, email, &ignored) != KG_OK)
            return KG_ENOTFOUND;
        return kg_store_user_by_email(st, email, u, &ignored);
    }
    if (strnlen(login, KG_NAME_MAX) >= KG_NAME_MAX)
        return KG_ENOTFOUND;
    return kg_store_user_by_username(st, login, u, &ignored);
}

static bool
cooling(const struct kg_session_throttles *th, const char *ip, const char *login, int64_t now_ms,
        int64_t *retry_ms)
{
    int64_t a = 0, b = 0;
    bool ip_cool = th != NULL && ip != NULL && kg_throttle_cooling(th->ip_cooldown, ip, now_ms, &a);
    bool login_cool = th != NULL && kg_throttle_cooling(th->login_cooldown, login, now_ms, &b);

    *retry_ms = a > b ? a : b;
    return ip_cool || login_cool;
}

enum kg_status
kg_session_signin(struct kg_store *st, const struct kg_secret *secret,
                  const struct kg_session_throttles *th, const char *client_ip, const char *login,
                  const char *password, int64_t now, int64_t now_ms, int64_t ttl_s,
                  struct kg_user_rec *user, char token[KG_SESSION_TOKEN_LEN + 1], int64_t *retry_ms,
                  struct kg_err *err)
{
    struct kg_session_rec rec = {.created_at = now, .expires_at = now + ttl_s, .last_seen_at = now};
    struct kg_tenant_rec t;
    char lkey[KG_EMAIL_MAX];
    const char *hash;
    bool usable, verified;
    enum kg_status rc;

    token[0] = '\0';
    *retry_ms = 0;
    if (login == NULL || password == NULL)
        return kg_err_set(err, KG_EINVAL, "login and password are required");
    login_key(login, lkey);
    if (cooling(th, client_ip, lkey, now_ms, retry_ms))
        return kg_err_set(err, KG_ELIMIT, "Too many failed sign-ins");
    pthread_once(&dummy_once, make_dummy);
    usable = find_user(st, login, user) == KG_OK && user->disabled_at == 0 &&
             user->password_hash[0] != '\0' &&
             kg_store_tenant_get(st, user->tenant, &t, NULL) == KG_OK && t.disabled_at == 0;
    hash = usable ? user->password_hash : dummy_hash;
    /* One verification whatever was found: the same time for every refusal.
     * A password longer than the rule allows is verified too (and fails). */
    verified =
        hash[0] != '\0' &&
        crypto_pwhash_str_verify(hash, password, strnlen(password, KG_PASSWORD_MAX + 1)) == 0 &&
        usable;
    if (!verified) {
        if (th != NULL) {
            if (client_ip != NULL)
                kg_throttle_fail(th->ip_failures, th->ip_cooldown, client_ip, now_ms);
            kg_throttle_fail(th->login_failures, th->login_cooldown, lkey, now_ms);
        }
        memset(user, 0, sizeof(*user));
        return kg_err_set(err, KG_ENOTFOUND, KG_SESSION_BAD_LOGIN);
    }
    kg_session_new_token(token);
    kg_session_digest(secret, token, rec.digest);
    memcpy(rec.user_id, user->id, sizeof(rec.user_id));
    rc = kg_store_session_insert(st, &rec, err);
    if (rc != KG_OK) {
        sodium_memzero(token, KG_SESSION_TOKEN_LEN + 1);
        memset(user, 0, sizeof(*user));
    }
    return rc;
}

enum kg_status
kg_session_check(struct kg_store *st, const struct kg_secret *secret, const char *token,
                 int64_t now, int64_t idle_s, struct kg_user_rec *user, struct kg_err *err)
{
    unsigned char digest[KG_DIGEST_BYTES];
    struct kg_session_rec rec;
    enum kg_status rc;

    if (!kg_session_token_ok(token))
        return kg_err_set(err, KG_ENOTFOUND, "Not signed in");
    kg_session_digest(secret, token, digest);
    rc = kg_store_session_get(st, digest, &rec, err);
    if (rc == KG_ENOTFOUND)
        return kg_err_set(err, KG_ENOTFOUND, "Not signed in");
    if (rc != KG_OK)
        return rc;
    if (!kg_session_alive(&rec, now, idle_s)) {
        kg_store_session_delete(st, rec.digest, NULL);
        return kg_err_set(err, KG_ENOTFOUND, "Not signed in");
    }
    rc = kg_store_user_get(st, rec.user_id, user, err);
    if (rc == KG_ENOTFOUND)
        return kg_err_set(err, KG_ENOTFOUND, "Not signed in");
    if (rc != KG_OK)
        return rc;
    /* One write a second at most: the idle clock has second resolution. */
    if (now > rec.last_seen_at)
        rc = kg_store_session_touch(st, rec.digest, now, err);
    return rc;
}

enum kg_status
kg_session_end(struct kg_store *st, const struct kg_secret *secret, const char *token,
               struct kg_err *err)
{
    unsigned char digest[KG_DIGEST_BYTES];

    if (!kg_session_token_ok(token))
        return KG_OK;
    kg_session_digest(secret, token, digest);
    return kg_store_session_delete(st, digest, err);
}
