/* keygate/selfservice.h - the web console's self-service API: one call
 * answers one request under console_path + "api/", fenced to the user its
 * session belongs to.
 *
 *   GET    api/config                what the sign-in page needs (signup on?)
 *   POST   api/session               sign in {"login", "password"}: cookie + csrf_token
 *   GET    api/session               who is signed in, the csrf_token, the key policy
 *   DELETE api/session               sign out
 *   GET    api/scopes                the scopes the user's role allows, described
 *   GET    api/keys[?state=…]        the user's keys (active by default; all, expired, revoked)
 *   POST   api/keys                  create {"name", "expires", "scopes"}: the key, once
 *   POST   api/keys/{id}/regenerate  a new key replacing id (expired ones too), once
 *   POST   api/keys/{id}/revoke      revoke for good
 *   GET    api/usage                 the user's credits and each key's counts
 *
 * Every request that changes anything needs the session cookie and, but
 * for signing in, the session's anti-CSRF token in X-CSRF-Token; one that
 * Origin or Sec-Fetch-Site says comes from another site is 403 whatever it
 * holds, and a body must be application/json (a form cannot send that). A
 * key of another user, or an id that does not exist, is 404 the same way.
 * Answers are JSON with Cache-Control: no-store (some carry a key).
 *
 * Blocks on the store and on Argon2id: call it on the worker thread, never
 * on an event loop. Knows nothing of libmicrohttpd: http/front_console.c
 * gathers the request and sends the answer.
 */
#ifndef KEYGATE_SELFSERVICE_H
#define KEYGATE_SELFSERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/session.h"
#include "keygate/store.h"

#define KG_CONSOLE_COOKIE_MAX 512

/* What the request runs against; all borrowed. keys may be NULL (no cache
 * to bring up to date, as in unit tests). */
struct kg_console_env {
    struct kg_store *store;
    const struct kg_secret *secret;
    const struct kg_config *cfg;
    struct kg_keycache *keys;
    struct kg_session_throttles throttles;
};

/* One request, as received; strings borrowed, NULL when absent. */
struct kg_console_req {
    const char *method;
    const char *path; /* below console_path, without the query: "api/keys" */
    const char *query;
    const char *body;
    size_t body_len;
    const char *content_type;
    const char *cookie;
    const char *csrf;           /* X-CSRF-Token */
    const char *origin;         /* Origin */
    const char *sec_fetch_site; /* Sec-Fetch-Site */
    const char *host;           /* Host */
    const char *client_ip;
    bool tls;
    int64_t now;    /* Unix seconds */
    int64_t now_ms; /* monotonic, for the throttles */
};

/* The answer. body is JSON; when body_secret it holds a full key and was
 * made by kg_json_io_dump_secret() (free with kg_json_io_secret_free()). */
struct kg_console_answer {
    unsigned status;
    char *body;
    size_t body_len;
    bool body_secret;
    char set_cookie[KG_CONSOLE_COOKIE_MAX]; /* "" = none */
    int retry_after_s;                      /* > 0: Retry-After */
};

/* Whether path (below console_path) is an API path this module answers. */
bool kg_selfservice_is_api(const char *path);

/* Answers rq into *out (kg_selfservice_answer_cleanup() it). */
void kg_selfservice_handle(const struct kg_console_env *env, const struct kg_console_req *rq,
                           struct kg_console_answer *out);

/* Frees the body (wiping a secret one); NULL-safe. */
void kg_selfservice_answer_cleanup(struct kg_console_answer *a);

/* Whether a state-changing request is cross-site: Sec-Fetch-Site other than
 * same-origin or none, or an Origin that is not the page's own (scheme from
 * tls, host from Host; "null" included). Pure. */
bool kg_selfservice_cross_site(const struct kg_console_req *rq);

#endif
