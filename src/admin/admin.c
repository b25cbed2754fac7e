/* admin/admin.c - the admin listener: its own libmicrohttpd daemon with one
 * internal thread (admin calls block on SQLite), the request state, the
 * route table, authentication with the public side's credential and
 * decision code, authorisation by admin scope, and the answers.
 *
 * Owns no rule about keys, users or tenants: routes_*.c hand each call to
 * the manage/ core. /livez, /readyz and /metrics are answered without a key
 * (what they say is routes_health.c's).
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <sodium.h>

#include "admin/admin_int.h"
#include "keygate/accept.h"
#include "keygate/accounts.h"
#include "keygate/admin.h"
#include "keygate/clientip.h"
#include "keygate/credential.h"
#include "keygate/decide.h"
#include "keygate/hygiene.h"
#include "keygate/json_io.h"
#include "keygate/rawguard.h"
#include "keygate/keys.h"
#include "keygate/keywatch.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/storefault.h"
#include "keygate/reply.h"
#include "keygate/respond.h"
#include "keygate/sender.h"
#include "keygate/scope.h"
#include "keygate/timeutil.h"
#include "keygate/tls.h"

#define ADMIN_CONNECTIONS_MAX 256
#define ADMIN_TIMEOUT_S 30
#define ADMIN_POOL_BYTES (64 * 1024)
/* Client IPs the admin throttle tracks at once (two tables of them): the
 * admin listener has few callers; a full table forgets the least
 * restrictive record first, as on the public side. */
#define ADMIN_THROTTLE_CLIENTS 4096

/* Scopes; "tenants:admin" also needs a platform admin. */
#define S_READ "keys:read"
#define S_WRITE "keys:write"
#define S_USERS "users:admin"
#define S_TENANTS "tenants:admin"

struct route {
    const char *method;
    const char *pattern; /* segments; "{}" matches one non-empty segment */
    const char *scope;
    bool platform_only;
    admin_handler_fn fn;
};

static const struct route routes[] = {
    {"POST", "/v1/keys", S_WRITE, false, admin_keys_create},
    {"GET", "/v1/keys", S_READ, false, admin_keys_list},
    {"GET", "/v1/keys/{}", S_READ, false, admin_keys_get},
    {"PATCH", "/v1/keys/{}", S_WRITE, false, admin_keys_update},
    {"POST", "/v1/keys/{}/revoke", S_WRITE, false, admin_keys_revoke},
    {"POST", "/v1/keys/{}/rotate", S_WRITE, false, admin_keys_rotate},
    {"GET", "/v1/keys/{}/usage", S_READ, false, admin_keys_usage},
    {"POST", "/v1/users", S_USERS, false, admin_users_create},
    {"GET", "/v1/users", S_USERS, false, admin_users_list},
    {"GET", "/v1/users/{}", S_USERS, false, admin_users_get},
    {"PATCH", "/v1/users/{}", S_USERS, false, admin_users_update},
    {"POST", "/v1/users/{}/disable", S_USERS, false, admin_users_disable},
    {"POST", "/v1/users/{}/password", S_USERS, false, admin_users_password},
    {"POST", "/v1/tenants", S_TENANTS, true, admin_tenants_create},
    {"GET", "/v1/tenants", S_TENANTS, true, admin_tenants_list},
    {"GET", "/v1/tenants/{}", S_TENANTS, true, admin_tenants_get},
    {"PATCH", "/v1/tenants/{}", S_TENANTS, true, admin_tenants_update},
    {"GET", "/v1/audit", S_READ, false, admin_audit_list},
    {"POST", "/v1/leaks", S_WRITE, false, admin_leaks_report},
    {"GET", "/v1/events", S_READ, false, admin_events_list},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* Per-request state: allocated on the first call, freed when MHD reports
 * the request complete. */
struct areq {
    const struct kg_config *cfg; /* held from the first call to completion */
    struct kg_hygiene hy;
    struct kg_jbody body;
    bool answered;
};

/* ---- answers ---- */

/* Every admin answer is JSON (keygate/reply.h) and never cached. */
static enum MHD_Result
queue(struct MHD_Connection *conn, unsigned status, struct MHD_Response *resp, bool close,
      const char *allow, int retry_after_s, const char *www_auth)
{
    const struct kg_reply_hdrs h = {.no_store = true,
                                    .close = close,
                                    .allow = allow,
                                    .retry_after_s = retry_after_s,
                                    .www_authenticate = www_auth};

    return kg_reply_json(conn, status, resp, &h);
}

static enum MHD_Result
send_answer(struct MHD_Connection *conn, const struct kg_answer *ans, const char *allow)
{
    const struct kg_reply_hdrs h = {.no_store = true, .allow = allow};

    return kg_reply_answer(conn, ans, &h);
}

static enum MHD_Result
send_error(struct kg_admin *adm, struct MHD_Connection *conn, unsigned status, const char *msg,
           const char *allow)
{
    struct kg_answer ans;

    kg_respond_error(adm->cfg, status, msg, &ans);
    return send_answer(conn, &ans, allow);
}

void
admin_reply(struct admin_call *c, unsigned status, json_t *doc)
{
    json_decref(c->json);
    c->json = doc;
    c->status = doc != NULL ? status : 500;
    if (doc == NULL)
        snprintf(c->message, sizeof(c->message), "Internal error");
}

void
admin_reply_secret(struct admin_call *c, unsigned status, json_t *doc, const char *field,
                   const char *secret)
{
    char *body = doc != NULL ? kg_json_io_dump_secret(doc, field, secret, &c->secret_len) : NULL;

    json_decref(doc);
    if (body == NULL) {
        admin_fail(c, 500, "Internal error");
        return;
    }
    kg_json_io_secret_free(c->secret_body);
    c->secret_body = body;
    c->status = status;
}

void
admin_fail(struct admin_call *c, unsigned status, const char *fmt, ...)
{
    va_list ap;

    json_decref(c->json);
    c->json = NULL;
    c->status = status;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
}

void
admin_fail_status(struct admin_call *c, enum kg_status rc, const struct kg_err *err)
{
    const char *words = err != NULL && err->msg[0] != '\0' ? err->msg : kg_status_str(rc);

    switch (rc) {
    case KG_EINVAL:
        admin_fail(c, 400, "%s", words);
        return;
    case KG_ENOTFOUND:
        /* One answer for "missing" and "another tenant's": no existence oracle. */
        admin_fail(c, 404, "Not found");
        return;
    case KG_ECONFLICT:
        admin_fail(c, 409, "%s", words);
        return;
    case KG_ELIMIT:
        admin_fail(c, 413, "%s", words);
        return;
    case KG_EIO:
    case KG_ECORRUPT:
        /* Nothing was written and trying again later is right: the store
         * cannot be reached (a PostgreSQL outage) or refuses writes (disk
         * full, read-only, locked past busy_timeout). */
        kg_log_warnx("admin %s: %s", c->method, words);
        kg_storefault_fail(c->adm->rt->store_fault, rc, words);
        if (atomic_load(&c->adm->rt->store_down)) {
            admin_fail(c, 503, ADMIN_STORE_DOWN);
            return;
        }
        {
            char reason[128] = "";

            if (!kg_storefault_active(c->adm->rt->store_fault, reason, sizeof(reason)))
                snprintf(reason, sizeof(reason), "%s", kg_status_str(rc));
            admin_fail(c, 503, "Service unavailable: store: %s", reason);
        }
        return;
    default:
        kg_log_warnx("admin %s: %s", c->method, words);
        admin_fail(c, 500, "Internal error");
        return;
    }
}

/* ---- input ---- */

bool
admin_decode(struct admin_call *c, const struct kg_jfield *fields, size_t n, json_t **root)
{
    struct kg_err err = {{0}};

    if (root != NULL)
        *root = NULL;
    if (c->body_len > 0 && !kg_json_io_content_type_ok(c->content_type)) {
        admin_fail(c, 415, "Content-Type must be application/json");
        return false;
    }
    if (kg_json_io_decode(c->body, c->body_len, fields, n, root, &err) != KG_OK) {
        admin_fail(c, 400, "%s", err.msg);
        return false;
    }
    return true;
}

struct query_scan {
    const char *const *allowed;
    const char *bad;
};

static enum MHD_Result
scan_query(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct query_scan *qs = cls;

    (void)kind;
    (void)value;
    for (size_t i = 0; qs->allowed[i] != NULL; i++) {
        if (strcmp(qs->allowed[i], key) == 0)
            return MHD_YES;
    }
    qs->bad = key;
    return MHD_NO;
}

bool
admin_query_check(struct admin_call *c, const char *const *allowed)
{
    struct query_scan qs = {.allowed = allowed};

    MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, scan_query, &qs);
    if (qs.bad == NULL)
        return true;
    if (kg_json_io_quotable(qs.bad))
        admin_fail(c, 400, "unknown query parameter: %s", qs.bad);
    else
        admin_fail(c, 400, "unknown query parameter");
    return false;
}

const char *
admin_query(struct admin_call *c, const char *name)
{
    return MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool
admin_page(struct admin_call *c, struct kg_page *page)
{
    const char *limit = admin_query(c, "limit");
    const char *cursor = admin_query(c, "cursor");

    page->limit = ADMIN_LIMIT_DEFAULT;
    page->cursor = cursor != NULL && cursor[0] != '\0' ? cursor : NULL;
    if (limit != NULL) {
        long v = 0;
        size_t i = 0;

        for (; limit[i] >= '0' && limit[i] <= '9' && i < 4; i++)
            v = v * 10 + (limit[i] - '0');
        if (i == 0 || limit[i] != '\0' || v < 1 || v > ADMIN_LIMIT_MAX) {
            admin_fail(c, 400, "limit must be a whole number from 1 to %d", ADMIN_LIMIT_MAX);
            return false;
        }
        page->limit = (size_t)v;
    }
    return true;
}

void
admin_reply_list(struct admin_call *c, json_t *data, const char *next)
{
    json_t *doc = NULL;

    if (data != NULL)
        doc = json_pack("{s:o, s:o}", "data", data, "next_cursor", kg_json_io_str_or_null(next));
    admin_reply(c, 200, doc);
}

/* Admin power comes only from scopes under these resources (explicit_grant). */
static bool
is_admin_scope(const char *s, size_t n)
{
    static const char *const res[] = {"keys:", "users:", "tenants:"};

    for (size_t i = 0; i < sizeof(res) / sizeof(res[0]); i++)
        if (n >= strlen(res[i]) && strncmp(s, res[i], strlen(res[i])) == 0)
            return true;
    return false;
}

bool
admin_within_caller(struct admin_call *c, const char *scopes)
{
    char one[KG_SCOPE_MAX + 1];
    const char *p = scopes;

    if (c->caller.platform_admin || scopes == NULL)
        return true;
    /* Public scopes are capped by the owner's role; admin scopes by the caller. */
    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t n = e != NULL ? (size_t)(e - p) : strlen(p);

        if (n <= KG_SCOPE_MAX && is_admin_scope(p, n)) {
            memcpy(one, p, n);
            one[n] = '\0';
            if (!kg_keys_scopes_within(c->caller.scopes, one, NULL, 0)) {
                admin_fail(c, 403, "API key cannot grant the scope %s, which it does not hold",
                           one);
                return false;
            }
        }
        p = e != NULL ? e + 1 : p + n;
    }
    return true;
}

void
admin_reload_keys(struct admin_call *c)
{
    struct kg_err err = {{0}};

    /* The change is committed; the answer must not go out before this daemon
     * enforces it: the change log rows since the last poll (this one among
     * them) are applied, and a failure is retried. */
    for (int attempt = 0; attempt < 5; attempt++) {
        if (kg_keycache_sync(c->adm->rt->keys, c->adm->store, kg_time_now(), NULL, &err) == KG_OK)
            return;
        kg_log_warnx("admin: applying key changes: %s", err.msg);
    }
}

/* ---- routing ---- */

/* Whether path matches pattern; the "{}" segment goes to *id (written into
 * idbuf, a copy, since path is the library's). */
static bool
match(const char *pattern, const char *path, char *idbuf, size_t idlen, const char **id)
{
    const char *p = pattern, *u = path;

    *id = NULL;
    while (*p != '\0' && *u != '\0') {
        if (strncmp(p, "{}", 2) == 0) {
            size_t n = strcspn(u, "/");

            if (n == 0 || n >= idlen)
                return false;
            memcpy(idbuf, u, n);
            idbuf[n] = '\0';
            *id = idbuf;
            u += n;
            p += 2;
            continue;
        }
        if (*p != *u)
            return false;
        p++;
        u++;
    }
    return *p == '\0' && *u == '\0';
}

/* The route for method and path; NULL with allow filled ("GET, POST") when
 * the path exists for other methods, NULL with allow "" when it does not. */
static const struct route *
find_route(const char *method, const char *path, char *idbuf, size_t idlen, const char **id,
           char *allow, size_t allowlen)
{
    allow[0] = '\0';
    /* HEAD is GET without the body; libmicrohttpd drops the body itself. */
    if (strcmp(method, "HEAD") == 0)
        method = "GET";
    for (size_t i = 0; i < NROUTES; i++) {
        if (!match(routes[i].pattern, path, idbuf, idlen, id))
            continue;
        if (strcmp(routes[i].method, method) == 0)
            return &routes[i];
        if (strstr(allow, routes[i].method) == NULL) {
            size_t used = strlen(allow);

            snprintf(allow + used, allowlen - used, "%s%s", used > 0 ? ", " : "", routes[i].method);
        }
    }
    return NULL;
}

/* ---- authentication and authorisation ---- */

struct cred_scan {
    const struct kg_config *cfg;
    struct kg_cred cred;
    const char *content_type;
};

static enum MHD_Result
scan_cred(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size, const char *value,
          size_t value_size)
{
    struct cred_scan *cs = cls;

    (void)kind;
    (void)key_size;
    kg_credential_feed(&cs->cred, cs->cfg, key, value, value != NULL ? value_size : 0);
    if (value != NULL && strcasecmp(key, "Content-Type") == 0)
        cs->content_type = value;
    return MHD_YES;
}

/* Records a refused admin authentication: the core keeps the key's display
 * prefix when it has the shape of a key, never the key itself. */
static void
audit_auth_failure(struct kg_admin *adm, const struct kg_cred *cred, enum kg_verdict verdict)
{
    bool one = kg_credential_result(cred) == KG_CRED_ONE;
    int64_t now_ms = kg_time_mono_ms();

    /* The admin listener has one thread: these counters need no lock. */
    if (now_ms - adm->auth_audit_window_ms >= 60000) {
        if (adm->auth_audit_rows > ADMIN_AUTH_AUDIT_PER_MIN)
            kg_log_warnx("admin: %d refused authentications in a minute; %d recorded in the audit",
                         adm->auth_audit_rows, ADMIN_AUTH_AUDIT_PER_MIN);
        adm->auth_audit_window_ms = now_ms;
        adm->auth_audit_rows = 0;
    }
    if (adm->auth_audit_rows++ >= ADMIN_AUTH_AUDIT_PER_MIN)
        return;
    admin_audit_auth_failed(adm, one ? cred->key : NULL, one ? cred->len : 0,
                            kg_verdict_str(verdict));
}

/* Fills who from the store: the key's owner and whether it is a platform
 * admin are read fresh, not from the cache, since they decide the fence. */
static enum kg_status
load_caller(struct kg_admin *adm, const char *key_id, struct admin_caller *who)
{
    struct kg_keys_ctx kc = {
        .store = adm->store, .secret = adm->rt->secret, .cfg = adm->cfg, .actor = key_id};
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_user_rec user;
    struct kg_err err = {{0}};
    enum kg_status rc;

    if (rec == NULL)
        return KG_ENOMEM;
    rc = kg_keys_get(&kc, NULL, key_id, rec, &err);
    if (rc == KG_OK)
        rc = kg_accounts_user_get(&kc, NULL, rec->user_id, &user, &err);
    if (rc != KG_OK) {
        kg_log_warnx("admin: key %s: %s", key_id, err.msg);
        goto cleanup;
    }
    snprintf(who->key_id, sizeof(who->key_id), "%s", rec->id);
    snprintf(who->actor, sizeof(who->actor), "%s", rec->id);
    snprintf(who->user_id, sizeof(who->user_id), "%s", user.id);
    snprintf(who->tenant, sizeof(who->tenant), "%s", user.tenant);
    snprintf(who->scopes, sizeof(who->scopes), "%s", rec->scopes);
    who->platform_admin = user.platform_admin;

cleanup:
    free(rec);
    return rc;
}

/* Admin scopes are never implied: a scope-less key (full access on the public
 * side) and "*" do not reach the admin API; the key must list the scope
 * itself, or its resource wildcard ("keys:*"). Otherwise any key of a user
 * whose role is "*" (a default user; signup users with signup_role *) could
 * manage keys. */
static bool
explicit_grant(const struct kg_keyent *ent, const char *scope)
{
    const char *colon = strchr(scope, ':');
    size_t res = colon != NULL ? (size_t)(colon - scope) + 1 : 0;

    for (size_t i = 0; i < ent->nscopes; i++) {
        const char *have = ent->scopes[i];

        if (strcmp(have, scope) == 0)
            return true;
        if (res > 0 && strncmp(have, scope, res) == 0 && strcmp(have + res, "*") == 0)
            return true;
    }
    return false;
}

/* Decides the caller with the public side's code: the admin scope is a route
 * rule matching every path, so key scopes, the user's role, require_scopes,
 * revocation and expiry are judged exactly as for a proxied request. On
 * KG_ALLOW *key_id gets the key's id. */
static enum kg_verdict
authenticate(struct kg_admin *adm, const struct kg_cred *cred, const char *method, const char *path,
             const char *client_ip, const struct route *r, char key_id[KG_ID_MAX],
             struct kg_decision *d_out)
{
    char empty[] = "", scope[KG_SCOPE_MAX + 1];
    char *scopes[1] = {scope};
    struct kg_route rule = {
        .method = "*", .pattern = empty, .is_prefix = true, .scopes = scopes, .nscopes = 1};
    struct kg_config cfg = *adm->cfg;
    const struct kg_keysnap *snap;
    enum kg_verdict v;

    snprintf(scope, sizeof(scope), "%s", r->scope);
    cfg.routes = &rule;
    cfg.nroutes = 1;
    snap = kg_keycache_acquire(adm->rt->keys);
    kg_decide(&cfg, snap, adm->rt->secret, cred, method, path, kg_time_now(), d_out);
    /* A key the CLI made a moment ago: the store is asked before a 401. */
    if (d_out->unknown && kg_keywatch_recheck(adm->rt->keywatch, adm->store, d_out->digest,
                                              kg_time_mono_ms(), kg_time_now())) {
        kg_keycache_release(snap);
        snap = kg_keycache_acquire(adm->rt->keys);
        kg_decide(&cfg, snap, adm->rt->secret, cred, method, path, kg_time_now(), d_out);
    }
    v = d_out->verdict;
    /* An admin key held to an address range is held there here too. */
    if (v == KG_ALLOW && (d_out->key->flags & KG_KEYENT_IPALLOW) &&
        !kg_keycache_ip_permits(adm->rt->keys, d_out->key, client_ip))
        v = d_out->verdict = KG_DENY_IP;
    if (v == KG_ALLOW && !explicit_grant(d_out->key, r->scope))
        v = d_out->verdict = KG_DENY_SCOPE;
    if (v == KG_ALLOW)
        snprintf(key_id, KG_ID_MAX, "%s", d_out->key->id);
    /* The decision's pointers borrow from the snapshot and this frame: keep
     * only what outlives them. */
    if (v == KG_DENY_SCOPE)
        d_out->missing_scope = r->scope;
    if (d_out->canary != NULL)
        kg_sender_canary(adm->rt->events, d_out->canary, client_ip, method, path, NULL,
                         kg_time_now());
    d_out->key = NULL;
    d_out->route = NULL;
    d_out->canary = NULL;
    kg_keycache_release(snap);
    return v;
}

/* ---- the brute-force throttle ---- */

#define ADMIN_XFF_MAX 2048

static enum MHD_Result
collect_xff(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    if (value != NULL && strcasecmp(key, "X-Forwarded-For") == 0)
        kg_clientip_xff_append(cls, ADMIN_XFF_MAX, value);
    return MHD_YES;
}

/* The client IP of an admin call: the socket peer, or behind a trusted
 * proxy the right-most untrusted X-Forwarded-For hop, over EVERY
 * X-Forwarded-For line (the last one is the proxy's own). */
static void
admin_client_ip(struct kg_admin *adm, struct MHD_Connection *conn, char *buf, size_t len)
{
    const struct kg_config *cfg = adm->cfg;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char xff[ADMIN_XFF_MAX] = "";
    struct kg_ipaddr peer;

    MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_xff, xff);
    buf[0] = '\0';
    if (ci != NULL && kg_clientip_from_sockaddr(ci->client_addr, &peer))
        kg_clientip_resolve(cfg->trusted_proxies, cfg->ntrusted_proxies, &peer, xff, buf, len);
}

/* An IP in its cool-down is refused before any key lookup, as on the
 * public side: 429 with Retry-After and the active error style's body. */
static bool
admin_throttled(struct kg_admin *adm, const char *ip, int64_t now_ms, struct kg_answer *ans)
{
    struct kg_decision d = {.verdict = KG_DENY_THROTTLED};
    int64_t retry_ms = 0;

    if (!kg_throttle_cooling(adm->auth_cooldown, ip, now_ms, &retry_ms))
        return false;
    kg_respond_verdict(adm->cfg, &d, ans);
    ans->retry_after_s = kg_throttle_retry_after_s(retry_ms);
    return true;
}

/* ---- the access handler ---- */

static enum MHD_Result
scan_hygiene(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
             const char *value, size_t value_size)
{
    (void)kind;
    if (value != NULL)
        kg_hygiene_feed_mhd(cls, key, key_size, value, value_size);
    else
        kg_hygiene_feed(cls, key, key_size, "", 0);
    return MHD_YES;
}

/* The library keeps blanks inside the target (its version is looked for
 * from the end); the path it reports is unescaped, and no admin path holds
 * a blank or a control character either way. */
static bool
admin_target_ok(const char *url)
{
    for (const char *p = url; p != NULL && *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            return false;
    return url != NULL;
}

static enum MHD_Result
health(struct kg_admin *adm, struct MHD_Connection *conn, const char *url)
{
    char body[256];
    unsigned status = admin_health(adm, url, body, sizeof(body));

    return queue(conn, status,
                 MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY), false,
                 NULL, 0, NULL);
}

/* GET /metrics: routes_health.c renders it; the answer is text, not JSON. */
static enum MHD_Result
metrics(struct kg_admin *adm, struct MHD_Connection *conn)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    size_t len;
    char *text = admin_metrics_text(adm, &len);

    if (text == NULL)
        return send_error(adm, conn, 500, "Internal error", NULL);
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", KG_METRICS_CONTENT_TYPE);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    ret = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
send_call(struct kg_admin *adm, struct admin_call *c)
{
    struct MHD_Response *resp;
    char *text;

    if (c->secret_body != NULL) {
        resp = MHD_create_response_from_buffer_with_free_callback(c->secret_len, c->secret_body,
                                                                  kg_json_io_secret_free);
        if (resp == NULL)
            kg_json_io_secret_free(c->secret_body);
        c->secret_body = NULL;
        return queue(c->conn, c->status, resp, false, NULL, 0, NULL);
    }
    if (c->json == NULL || c->status >= 400)
        return send_error(adm, c->conn, c->status != 0 ? c->status : 500,
                          c->message[0] != '\0' ? c->message : "Internal error", NULL);
    text = kg_json_io_dump(c->json);
    if (text == NULL)
        return send_error(adm, c->conn, 500, "Internal error", NULL);
    /* A response that cannot be made does not take the buffer. */
    resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
        free(text);
    return queue(c->conn, c->status, resp, false, NULL, 0, NULL);
}

static enum MHD_Result
dispatch(struct kg_admin *adm, struct MHD_Connection *conn, const char *url, const char *method,
         struct areq *rq)
{
    const struct kg_config *cfg = adm->cfg;
    struct cred_scan cs = {.cfg = cfg};
    struct admin_call c = {.adm = adm, .conn = conn, .method = method};
    char idbuf[KG_NAME_MAX], allow[64], key_id[KG_ID_MAX], ip[KG_CLIENTIP_MAX];
    const struct route *r;
    struct kg_decision d;
    struct kg_answer ans;
    enum kg_verdict v;
    enum MHD_Result ret;
    int64_t now_ms;

    if ((strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) &&
        (strcmp(url, "/livez") == 0 || strcmp(url, "/readyz") == 0))
        return health(adm, conn, url);
    if ((strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) && strcmp(url, "/metrics") == 0)
        return metrics(adm, conn);
    /* Keys are decided from the cache: none before it is loaded. */
    if (!atomic_load(&adm->rt->ready) && !atomic_load(&adm->rt->draining))
        return send_error(adm, conn, 503, "Service unavailable: loading keys", NULL);
    r = find_route(method, url, idbuf, sizeof(idbuf), &c.id, allow, sizeof(allow));
    if (r == NULL && allow[0] != '\0')
        return send_error(adm, conn, 405, "Method not allowed", allow);
    if (r == NULL)
        return send_error(adm, conn, 404, "Not found", NULL);
    if (rq->body.too_big)
        return send_error(adm, conn, 413, "Request body is larger than 64 KiB", NULL);
    if (rq->body.failed)
        return send_error(adm, conn, 500, "Internal error", NULL);

    admin_client_ip(adm, conn, ip, sizeof(ip));
    now_ms = kg_time_mono_ms();
    if (admin_throttled(adm, ip, now_ms, &ans))
        return send_answer(conn, &ans, NULL);
    kg_credential_init(&cs.cred);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_cred, &cs);
    v = authenticate(adm, &cs.cred, method, url, ip, r, key_id, &d);
    if (kg_verdict_is_auth_failure(v)) {
        kg_throttle_fail(adm->auth_failures, adm->auth_cooldown, ip, now_ms);
        audit_auth_failure(adm, &cs.cred, v);
    }
    if (v != KG_ALLOW) {
        kg_respond_verdict(cfg, &d, &ans);
        return send_answer(conn, &ans, NULL);
    }
    switch (load_caller(adm, key_id, &c.caller)) {
    case KG_OK:
        break;
    case KG_EIO:
        return send_error(adm, conn, 503, ADMIN_STORE_DOWN, NULL);
    default:
        return send_error(adm, conn, 500, "Internal error", NULL);
    }
    if (r->platform_only && !c.caller.platform_admin)
        return send_error(adm, conn, 403,
                          "API key is missing the required scope " S_TENANTS
                          " (it needs a platform admin)",
                          NULL);

    c.fence = c.caller.platform_admin ? NULL : c.caller.tenant;
    c.body = rq->body.data;
    c.body_len = rq->body.len;
    c.content_type = cs.content_type;
    c.now = kg_time_now();
    r->fn(&c);
    ret = send_call(adm, &c);
    json_decref(c.json);
    kg_json_io_secret_free(c.secret_body);
    return ret;
}

static enum MHD_Result
admin_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
              const char *version, const char *upload_data, size_t *upload_data_size,
              void **req_cls)
{
    struct kg_admin *adm = cls;
    struct areq *rq = *req_cls;
    enum kg_rawguard_reason raw;
    const char *why;

    if (rq == NULL) {
        rq = calloc(1, sizeof(*rq));
        if (rq == NULL)
            return MHD_NO;
        rq->cfg = kg_cfgswap_acquire(adm->rt->config);
        adm->cfg = rq->cfg;
        kg_hygiene_init(&rq->hy);
        kg_jbody_init(&rq->body);
        *req_cls = rq;
        raw = kg_rawguard_rejected(conn, method);
        if (raw != KG_RAWGUARD_OK) { /* a head the raw-bytes guard refused */
            rq->answered = true;
            return send_error(adm, conn, kg_rawguard_status(raw), kg_rawguard_message(raw), NULL);
        }
        kg_hygiene_version(&rq->hy, version);
        MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_hygiene, &rq->hy);
        why = kg_hygiene_verdict(&rq->hy);
        if (why == NULL && !admin_target_ok(url))
            why = "Malformed request target";
        if (why != NULL) {
            rq->answered = true;
            return send_error(adm, conn, 400, why, NULL);
        }
        /* Refused before a byte of it is read; the connection closes. */
        if (rq->hy.content_length > KG_JSON_BODY_MAX) {
            rq->answered = true;
            return send_error(adm, conn, 413, "Request body is larger than 64 KiB", NULL);
        }
        return MHD_YES;
    }
    adm->cfg = rq->cfg;
    if (*upload_data_size > 0) {
        /* A chunked body past the cap is read and dropped (kg_jbody keeps
         * nothing past 64 KiB), then answered 413. */
        if (!rq->answered)
            kg_jbody_feed(&rq->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->answered)
        return MHD_YES;
    rq->answered = true;
    return dispatch(adm, conn, url, method, rq);
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                  enum MHD_RequestTerminationCode toe)
{
    struct areq *rq = *req_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (rq == NULL)
        return;
    kg_jbody_cleanup(&rq->body);
    kg_cfgswap_release(rq->cfg);
    free(rq);
    *req_cls = NULL;
}

/* Every admin connection's bytes pass the raw-bytes guard first. */
static void
connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        kg_rawguard_watch(conn, ADMIN_POOL_BYTES);
    else
        kg_rawguard_forget(conn);
}

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    kg_log_debug("admin libmicrohttpd: %s", msg);
}

/* ---- lifetime ---- */

enum kg_status
kg_admin_start(struct kg_runtime *rt, const struct sockaddr_storage *addr, struct kg_admin **out,
               struct kg_err *err)
{
    /* No listen socket: an accept thread of keygate's hands connections
     * over (MHD_USE_ITC wakes the daemon for them; server/accept.c says why). */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                         MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    struct kg_acceptor *acc = NULL;
    int lfd;
    struct kg_admin *adm = calloc(1, sizeof(*adm));
    unsigned char audit_key[KG_AUDIT_KEY_BYTES];
    const struct kg_config *cfg = NULL;
    struct MHD_OptionItem tls_opts[KG_TLS_MHD_OPTIONS];
    enum kg_status rc;

    *out = NULL;
    if (adm == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    adm->rt = rt;
    cfg = kg_cfgswap_acquire(rt->config);
    rc = kg_store_open(cfg->database, &adm->store, err);
    if (rc != KG_OK)
        goto cleanup;
    kg_digest_audit_key(rt->secret, audit_key);
    kg_store_set_audit_key(adm->store, audit_key);
    sodium_memzero(audit_key, sizeof(audit_key));
    /* The same settings as the public side's throttle (which needs a
     * restart to change, like here), tables of its own. */
    if (cfg->auth_throttle_count > 0) {
        rc = kg_throttle_new(cfg->auth_throttle_count, cfg->auth_throttle_window_ms,
                             ADMIN_THROTTLE_CLIENTS, &adm->auth_failures, err);
        if (rc == KG_OK)
            rc = kg_throttle_new(1, cfg->auth_throttle_cooldown_ms, ADMIN_THROTTLE_CLIENTS,
                                 &adm->auth_cooldown, err);
        if (rc != KG_OK)
            goto cleanup;
    }
    kg_rawguard_init();
    /* The logger first: the library warns about options that precede it. */
    adm->daemon = MHD_start_daemon(
        flags | kg_tls_mhd_flags(rt->tls), 0, NULL, NULL, admin_handler, adm,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, adm, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ADMIN_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_POOL_BYTES, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)ADMIN_CONNECTIONS_MAX, MHD_OPTION_NOTIFY_CONNECTION, connection_notify, adm,
        MHD_OPTION_ARRAY, kg_tls_mhd_options(rt->tls, tls_opts), MHD_OPTION_END);
    if (adm->daemon == NULL) {
        rc = kg_err_set(err, KG_EIO, "cannot start the HTTP server for admin address %s",
                        cfg->admin_listen);
        goto cleanup;
    }
    lfd = kg_accept_listen(addr, false, 128, err);
    if (lfd < 0) {
        char why[KG_ERR_MAX];

        snprintf(why, sizeof(why), "%s", err->msg);
        rc = kg_err_set(err, KG_EIO, "cannot listen on admin address %s: %s", cfg->admin_listen,
                        why);
        goto cleanup;
    }
    rc = kg_acceptor_new(rt, lfd, adm->daemon, "admin", false, &acc, err);
    if (rc != KG_OK) {
        close(lfd);
        goto cleanup;
    }
    rc = kg_accept_thread_start(acc, &adm->acceptor, err); /* takes acc */
    if (rc != KG_OK)
        goto cleanup;
    *out = adm;
    adm = NULL;

cleanup:
    kg_cfgswap_release(cfg); /* the address and database need a restart to change */
    kg_admin_stop(adm);
    return rc;
}

void
kg_admin_stop(struct kg_admin *adm)
{
    if (adm == NULL)
        return;
    kg_accept_thread_stop(adm->acceptor); /* first: it adds to the daemon */
    if (adm->daemon != NULL)
        MHD_stop_daemon(adm->daemon);
    kg_store_close(adm->store);
    kg_throttle_free(adm->auth_failures);
    kg_throttle_free(adm->auth_cooldown);
    free(adm);
}
