/* admin/admin_int.h - what the admin listener's files share (admin.c and
 * the routes_*.c files). Not a public header: nothing outside src/admin/
 * includes it.
 *
 * admin.c owns the daemon, the per-request state, authentication,
 * authorisation by scope and the tenant fence's input (who is calling);
 * a route handler gets a struct admin_call with all of that settled, calls
 * the manage/ core and sets the answer. Handlers run on the admin daemon's
 * one thread, so they may block on the store; they never write a rule of
 * their own: validation, role fit and conflicts are the core's.
 */
#ifndef KEYGATE_ADMIN_INT_H
#define KEYGATE_ADMIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "keygate/json_io.h"
#include "keygate/runtime.h"
#include "keygate/status.h"
#include "keygate/store.h"
#include "keygate/throttle.h"

#define ADMIN_LIMIT_DEFAULT 50
#define ADMIN_LIMIT_MAX 200
/* The 503 answer when the store cannot be reached (a PostgreSQL outage). */
#define ADMIN_STORE_DOWN "Service unavailable: the database cannot be reached"

struct kg_accept_thread;

struct kg_admin {
    struct kg_runtime *rt;
    struct MHD_Daemon *daemon;
    struct kg_accept_thread *acceptor; /* accepts for daemon (server/accept.c) */
    struct kg_store *store;            /* this thread's own handle */
    /* The config of the request being handled: the one its struct areq
     * acquired (the admin daemon has one thread, so one request at a time
     * runs; another connection's request may hold an older config). */
    const struct kg_config *cfg;
    /* Refused authentications recorded in the audit trail in the current
     * minute: capped, so a flood cannot grow the trail or fsync without end. */
    int64_t auth_audit_window_ms;
    int auth_audit_rows;
    /* The brute-force throttle (auth_throttle) of this listener: its own
     * pair of per-IP tables, so guesses on the public side never lock an
     * operator out of the admin API and the other way round. NULL: off. */
    struct kg_throttle *auth_failures;
    struct kg_throttle *auth_cooldown;
};

#define ADMIN_AUTH_AUDIT_PER_MIN 60

/* Who is calling, copied out of the key cache entry that authenticated it. */
struct admin_caller {
    char key_id[KG_ID_MAX];
    char user_id[KG_ID_MAX];
    char tenant[KG_NAME_MAX];
    char actor[KG_AUDIT_ACTOR_MAX]; /* what audit entries name: the key id */
    char scopes[KG_SCOPES_MAX];     /* the calling key's own scopes */
    bool platform_admin;
};

/* One admin request, from dispatch to answer. */
struct admin_call {
    struct kg_admin *adm;
    struct MHD_Connection *conn;
    const char *method;
    const char *id;   /* the {id} path segment, or NULL */
    const char *body; /* request body (may be NULL when body_len is 0) */
    size_t body_len;
    const char *content_type;
    struct admin_caller caller;
    const char *fence; /* NULL for platform admins, else the caller's tenant */
    int64_t now;

    /* The answer, set by the handler through the admin_* helpers. */
    unsigned status;
    json_t *json;      /* body document; owned */
    char *secret_body; /* a body holding a full key (json_io dump_secret); owned */
    size_t secret_len;
    char message[KG_ERR_MAX + 64]; /* error message when json and secret_body are NULL */
};

typedef void (*admin_handler_fn)(struct admin_call *c);

/* ---- answers ---- */

/* Success with a JSON document (taken; NULL means out of memory -> 500). */
void admin_reply(struct admin_call *c, unsigned status, json_t *doc);
/* Success with doc holding an empty-string placeholder member field that
 * receives secret (a full key): the body is assembled in wiped memory. */
void admin_reply_secret(struct admin_call *c, unsigned status, json_t *doc, const char *field,
                        const char *secret);
/* An error answer in the configured error style (message without the final period). */
void admin_fail(struct admin_call *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The answer for a core failure: KG_EINVAL 400, KG_ENOTFOUND 404,
 * KG_ECONFLICT 409, KG_ELIMIT 413, anything else 500 (logged, words not
 * shown to the client). */
void admin_fail_status(struct admin_call *c, enum kg_status rc, const struct kg_err *err);

/* ---- input ---- */

/* Decodes the body against fields (see json_io.h): answers 415 when a body
 * is not declared application/json and 400 for any problem, then returns
 * false. On true, *root (may be NULL) holds the document borrowed strings
 * point into: json_decref() it. */
bool admin_decode(struct admin_call *c, const struct kg_jfield *fields, size_t n, json_t **root);

/* Checks that every query parameter is one of allowed (NULL-terminated);
 * answers 400 naming the first other one and returns false. */
bool admin_query_check(struct admin_call *c, const char *const *allowed);
/* The value of query parameter name, or NULL. */
const char *admin_query(struct admin_call *c, const char *name);
/* Reads ?limit= (1..ADMIN_LIMIT_MAX, default ADMIN_LIMIT_DEFAULT) and
 * ?cursor= into page; answers 400 and returns false when limit is bad. */
bool admin_page(struct admin_call *c, struct kg_page *page);

/* {"data": data, "next_cursor": next or null}; takes data. */
void admin_reply_list(struct admin_call *c, json_t *data, const char *next);

/* Applies the store's change log to the daemon's key cache from this
 * thread's store handle (kg_keycache_sync), so a change made here is
 * enforced before the answer leaves. Logs a failure (the change is stored;
 * the main thread's poll of the log retries). */
void admin_reload_keys(struct admin_call *c);

/* routes_events.c (issue 18) */
void admin_leaks_report(struct admin_call *c);
void admin_events_list(struct admin_call *c);

/* For a fenced caller: true when every admin scope (keys:, users:,
 * tenants:) in the list scopes is one the calling key holds itself, so a
 * tenant admin cannot hand out (or rotate into its hands) admin power it
 * lacks; public scopes are capped by the owner's role instead. Otherwise
 * answers 403 naming the scope and returns false. Platform admins pass. */
bool admin_within_caller(struct admin_call *c, const char *scopes);

/* Records a refused authentication (admin.auth_failed). presented is the
 * credential as sent, or NULL; only its display prefix is stored. */
void admin_audit_auth_failed(struct kg_admin *adm, const char *presented, size_t len,
                             const char *reason);

/* ---- routes (routes_*.c) ---- */

void admin_keys_create(struct admin_call *c);
void admin_keys_list(struct admin_call *c);
void admin_keys_get(struct admin_call *c);
void admin_keys_update(struct admin_call *c);
void admin_keys_revoke(struct admin_call *c);
void admin_keys_rotate(struct admin_call *c);
void admin_keys_usage(struct admin_call *c);
void admin_users_create(struct admin_call *c);
void admin_users_list(struct admin_call *c);
void admin_users_get(struct admin_call *c);
void admin_users_update(struct admin_call *c);
void admin_users_disable(struct admin_call *c);
void admin_users_password(struct admin_call *c);
void admin_tenants_create(struct admin_call *c);
void admin_tenants_list(struct admin_call *c);
void admin_tenants_get(struct admin_call *c);
void admin_tenants_update(struct admin_call *c);
void admin_audit_list(struct admin_call *c);

/* routes_health.c: the body of /livez or /readyz (url) into body, and its
 * status (200 or 503). */
unsigned admin_health(const struct kg_admin *adm, const char *url, char *body, size_t cap);
/* routes_health.c: GET /metrics as Prometheus text (malloc'd, *len set);
 * NULL when out of memory. */
char *admin_metrics_text(struct kg_admin *adm, size_t *len);

#endif
