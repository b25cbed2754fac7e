/* console/selfservice.c - the web console's API (keygate/selfservice.h):
 * routing under "api/", the cross-site and anti-CSRF checks, and each
 * endpoint as JSON over manage/ (keys, accounts) and console/session.c.
 *
 * Every rule about keys is manage/'s; this file only fences them to the
 * signed-in user (a key of anyone else reads exactly like a missing one),
 * maps the console's expiry presets and applies the two console rules:
 * require_scopes refuses a key without scopes at creation, and the page's
 * scopes are those the user's role grants. Runs on the worker thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <sodium.h>

#include "keygate/accounts.h"
#include "keygate/json_io.h"
#include "keygate/keys.h"
#include "keygate/log.h"
#include "keygate/render.h"
#include "keygate/respond.h"
#include "keygate/scope.h"
#include "keygate/selfservice.h"
#include "keygate/timeutil.h"

#define ACTOR_PREFIX "console:"

/* ---- answers ---- */

static void
answer_doc(struct kg_console_answer *a, unsigned status, json_t *doc)
{
    a->status = status;
    a->body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (a->body == NULL) {
        a->status = 500;
        a->body = strdup("{\"detail\": \"Internal error.\"}");
    }
    a->body_len = a->body != NULL ? strlen(a->body) : 0;
}

static void
answer_error(const struct kg_console_env *env, struct kg_console_answer *a, unsigned status,
             const char *msg)
{
    struct kg_answer ans;

    kg_respond_error(env->cfg, status, msg, &ans);
    a->status = status;
    a->body = malloc(ans.body_len + 1);
    if (a->body != NULL)
        memcpy(a->body, ans.body, ans.body_len + 1);
    a->body_len = a->body != NULL ? ans.body_len : 0;
}

/* A core failure: 400, 404, 409, 413; anything else 500 and logged. */
static void
answer_status(const struct kg_console_env *env, struct kg_console_answer *a, enum kg_status rc,
              const struct kg_err *err)
{
    switch (rc) {
    case KG_EINVAL:
        answer_error(env, a, 400, err->msg);
        break;
    case KG_ENOTFOUND:
        answer_error(env, a, 404, err->msg);
        break;
    case KG_ECONFLICT:
        answer_error(env, a, 409, err->msg);
        break;
    default:
        kg_log_warnx("console: %s", err->msg[0] != '\0' ? err->msg : kg_status_str(rc));
        answer_error(env, a, 500, "Internal error");
        break;
    }
}

/* doc with its "key" member filled from key in wiped memory. */
static void
answer_with_key(struct kg_console_answer *a, unsigned status, json_t *doc, const char *key)
{
    if (doc == NULL || json_object_set_new(doc, "key", json_string("")) != 0) {
        json_decref(doc);
        answer_doc(a, 500, NULL);
        return;
    }
    a->body = kg_json_io_dump_secret(doc, "key", key, &a->body_len);
    json_decref(doc);
    if (a->body == NULL) {
        answer_doc(a, 500, NULL);
        return;
    }
    a->status = status;
    a->body_secret = true;
}

static void
set_cookie(const struct kg_console_env *env, const struct kg_console_req *rq,
           struct kg_console_answer *a, const char *token, int64_t max_age)
{
    snprintf(a->set_cookie, sizeof(a->set_cookie),
             KG_SESSION_COOKIE "=%s; Path=%s; Max-Age=%" PRId64 "; HttpOnly; SameSite=Strict%s",
             token, env->cfg->console_path, max_age, rq->tls ? "; Secure" : "");
}

void
kg_selfservice_answer_cleanup(struct kg_console_answer *a)
{
    if (a == NULL)
        return;
    if (a->body_secret)
        kg_json_io_secret_free(a->body);
    else
        free(a->body);
    a->body = NULL;
    a->body_len = 0;
    a->body_secret = false;
}

/* ---- the checks every request passes ---- */

bool
kg_selfservice_cross_site(const struct kg_console_req *rq)
{
    char own[300];

    if (rq->sec_fetch_site != NULL && strcasecmp(rq->sec_fetch_site, "same-origin") != 0 &&
        strcasecmp(rq->sec_fetch_site, "none") != 0)
        return true;
    if (rq->origin == NULL)
        return false;
    if (rq->host == NULL)
        return true;
    snprintf(own, sizeof(own), "%s://%s", rq->tls ? "https" : "http", rq->host);
    return strcasecmp(rq->origin, own) != 0;
}

static bool
changes_state(const char *method)
{
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
}

/* The signed-in user of rq (and its token), or an answer: 401. */
static bool
signed_in(const struct kg_console_env *env, const struct kg_console_req *rq,
          struct kg_console_answer *a, struct kg_user_rec *u, char token[KG_SESSION_TOKEN_LEN + 1])
{
    struct kg_err err = {{0}};
    enum kg_status rc;

    if (!kg_session_cookie_token(rq->cookie, token)) {
        answer_error(env, a, 401, "Not signed in");
        return false;
    }
    rc = kg_session_check(env->store, env->secret, token, rq->now,
                          env->cfg->console_session_idle_ms / 1000, u, &err);
    if (rc == KG_ENOTFOUND) {
        answer_error(env, a, 401, "Not signed in");
        set_cookie(env, rq, a, "", 0);
        return false;
    }
    if (rc != KG_OK) {
        answer_status(env, a, rc, &err);
        return false;
    }
    return true;
}

static struct kg_keys_ctx
keys_ctx(const struct kg_console_env *env, const char *actor)
{
    return (struct kg_keys_ctx){
        .store = env->store, .secret = env->secret, .cfg = env->cfg, .actor = actor};
}

/* The change is in the store; the gateway enforces it once the key cache
 * has applied the change log, which this does before the answer leaves. */
static void
sync_keys(const struct kg_console_env *env, int64_t now)
{
    struct kg_err err = {{0}};

    if (env->keys != NULL && kg_keycache_sync(env->keys, env->store, now, NULL, &err) != KG_OK)
        kg_log_warnx("console: applying key changes: %s", err.msg);
}

/* ---- what the page reads ---- */

static json_t *
user_doc(const struct kg_user_rec *u)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}", "id", u->id, "username", u->username,
                     "email", kg_json_io_str_or_null(u->email), "tenant", u->tenant, "first_name",
                     u->first_name, "last_name", u->last_name);
}

/* The scopes the user may choose: the catalogue's and the routes', those
 * the role grants, each once, described when the catalogue describes it. */
static json_t *
scopes_doc(const struct kg_config *cfg, const struct kg_user_rec *u)
{
    json_t *arr = json_array();
    size_t n = cfg->nscope_catalog;

    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < n + cfg->nroutes; i++) {
        size_t nscopes = i < n ? 1 : cfg->routes[i - n].nscopes;

        for (size_t j = 0; j < nscopes; j++) {
            const char *name = i < n ? cfg->scope_catalog[i].name : cfg->routes[i - n].scopes[j];
            const char *desc = kg_config_scope_description(cfg, name);
            bool seen = false;
            size_t k;
            json_t *el;

            if (strchr(name, '*') != NULL || !kg_keys_scopes_within(u->role, name, NULL, 0))
                continue;
            json_array_foreach(arr, k, el)
            {
                seen = seen || strcmp(json_string_value(json_object_get(el, "name")), name) == 0;
            }
            if (!seen &&
                json_array_append_new(
                    arr, json_pack("{s:s, s:o}", "name", name, "description",
                                   kg_json_io_str_or_null(desc != NULL ? desc : ""))) != 0) {
                json_decref(arr);
                return NULL;
            }
        }
    }
    return arr;
}

static void
get_config(const struct kg_console_env *env, struct kg_console_answer *a)
{
    answer_doc(a, 200,
               json_pack("{s:b, s:s, s:i}", "signup", env->cfg->signup, "signup_path",
                         env->cfg->signup_path, "password_min", KG_PASSWORD_MIN));
}

static void
get_session(const struct kg_console_env *env, const struct kg_console_req *rq,
            struct kg_console_answer *a)
{
    struct kg_user_rec u;
    char token[KG_SESSION_TOKEN_LEN + 1], csrf[KG_SESSION_CSRF_LEN + 1];
    int64_t max = 0;

    if (!signed_in(env, rq, a, &u, token))
        return;
    kg_session_csrf(env->secret, token, csrf);
    max = kg_config_key_max_lifetime(env->cfg, u.tenant);
    answer_doc(a, 200,
               json_pack("{s:o, s:s, s:{s:b, s:o, s:o}}", "user", user_doc(&u), "csrf_token", csrf,
                         "policy", "require_scopes", env->cfg->require_scopes,
                         "key_max_lifetime_days", max > 0 ? json_integer(max / 86400) : json_null(),
                         "scopes", scopes_doc(env->cfg, &u)));
    sodium_memzero(token, sizeof(token));
}

static void
sign_in(const struct kg_console_env *env, const struct kg_console_req *rq,
        struct kg_console_answer *a)
{
    const char *login = NULL, *password = NULL;
    const struct kg_jfield fields[] = {
        {.name = "login", .type = KG_JSTRING, .required = true, .out = &login},
        {.name = "password", .type = KG_JSTRING, .required = true, .out = &password},
    };
    char token[KG_SESSION_TOKEN_LEN + 1], csrf[KG_SESSION_CSRF_LEN + 1];
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    json_t *root = NULL;
    int64_t retry_ms = 0;
    enum kg_status rc;

    rc = kg_json_io_decode(rq->body, rq->body_len, fields, 2, &root, &err);
    if (rc != KG_OK) {
        answer_error(env, a, 400, err.msg);
        json_decref(root);
        return;
    }
    rc = kg_session_signin(env->store, env->secret, &env->throttles, rq->client_ip, login, password,
                           rq->now, rq->now_ms, env->cfg->console_session_ttl_ms / 1000, &u, token,
                           &retry_ms, &err);
    sodium_memzero((char *)password, strlen(password));
    json_decref(root);
    if (rc == KG_ENOTFOUND) {
        answer_error(env, a, 401, KG_SESSION_BAD_LOGIN);
        return;
    }
    if (rc == KG_ELIMIT) {
        answer_error(env, a, 429, err.msg);
        a->retry_after_s = (int)((retry_ms + 999) / 1000 > 0 ? (retry_ms + 999) / 1000 : 1);
        return;
    }
    if (rc != KG_OK) {
        answer_status(env, a, rc, &err);
        return;
    }
    kg_session_csrf(env->secret, token, csrf);
    set_cookie(env, rq, a, token, env->cfg->console_session_ttl_ms / 1000);
    sodium_memzero(token, sizeof(token));
    answer_doc(a, 200, json_pack("{s:o, s:s}", "user", user_doc(&u), "csrf_token", csrf));
}

static void
sign_out(const struct kg_console_env *env, const struct kg_console_req *rq,
         struct kg_console_answer *a, const char *token)
{
    struct kg_err err = {{0}};
    enum kg_status rc = kg_session_end(env->store, env->secret, token, &err);

    if (rc != KG_OK) {
        answer_status(env, a, rc, &err);
        return;
    }
    set_cookie(env, rq, a, "", 0);
    answer_doc(a, 200, json_pack("{s:b}", "signed_out", 1));
}

/* ---- keys ---- */

/* The key as the page shows it, its state as people see it. */
static json_t *
key_doc(const struct kg_console_env *env, const struct kg_key_rec *rec, int64_t now)
{
    struct kg_keys_ctx kc = keys_ctx(env, NULL);
    enum kg_key_state state = kg_keys_state(&kc, rec, now);
    json_t *o = kg_render_key_json(rec, state, false, now);
    struct kg_key_usage u;
    struct kg_err err = {{0}};

    /* Last used as the gateway knows it now, not as last flushed. */
    if (o != NULL && env->keys != NULL &&
        kg_keycache_usage(env->keys, env->store, rec->id, &u, &err) == KG_OK &&
        u.last_used_at > rec->last_used_at)
        json_object_set_new(o, "last_used_at", kg_json_io_time(u.last_used_at));
    return o;
}

struct list_ctx {
    struct kg_key_rec *recs;
    size_t n, cap;
    bool failed;
};

static bool
gather(const struct kg_key_rec *rec, enum kg_key_state state, void *p)
{
    struct list_ctx *lc = p;

    (void)state;
    if (lc->n == lc->cap) {
        size_t ncap = lc->cap == 0 ? 16 : lc->cap * 2;
        struct kg_key_rec *grown = realloc(lc->recs, ncap * sizeof(*grown));

        if (grown == NULL) {
            lc->failed = true;
            return false;
        }
        lc->recs = grown;
        lc->cap = ncap;
    }
    lc->recs[lc->n++] = *rec;
    return true;
}

/* The most keys one user's listing shows: a person's keys, not a fleet's. */
#define LIST_MAX 500

static void
list_keys(const struct kg_console_env *env, const struct kg_console_req *rq,
          struct kg_console_answer *a, const struct kg_user_rec *u)
{
    struct kg_keys_ctx kc = keys_ctx(env, NULL);
    struct kg_keys_filter filter = {.all_states = false, .state = KG_KEY_ACTIVE, .user = u->id};
    struct kg_page page = {.limit = LIST_MAX};
    struct list_ctx lc = {0};
    struct kg_err err = {{0}};
    const char *state = NULL;
    json_t *data = NULL;
    enum kg_status rc;

    if (rq->query != NULL && rq->query[0] != '\0') {
        if (strncmp(rq->query, "state=", 6) != 0 || strchr(rq->query, '&') != NULL) {
            answer_error(env, a, 400, "the only query parameter is state");
            return;
        }
        state = rq->query + 6;
        if (kg_key_state_parse(state, &filter.state, &filter.all_states, &err) != KG_OK) {
            answer_error(env, a, 400, err.msg);
            return;
        }
    }
    rc = kg_keys_list(&kc, NULL, &filter, &page, rq->now, gather, &lc, NULL, &err);
    data = json_array();
    if (rc == KG_OK && (lc.failed || data == NULL))
        rc = kg_err_set(&err, KG_ENOMEM, "out of memory listing keys");
    for (size_t i = 0; rc == KG_OK && i < lc.n; i++) {
        json_t *o = key_doc(env, &lc.recs[i], rq->now);

        if (o == NULL || json_array_append_new(data, o) != 0)
            rc = kg_err_set(&err, KG_ENOMEM, "out of memory listing keys");
    }
    free(lc.recs);
    if (rc != KG_OK) {
        json_decref(data);
        answer_status(env, a, rc, &err);
        return;
    }
    answer_doc(a, 200, json_pack("{s:o}", "data", data));
}

/* The console's expiry choices: 30d, 90d, 365d, a date (YYYY-MM-DD, the end
 * of that day UTC) or an RFC 3339 time, never/null. */
static enum kg_status
expiry_arg(const char *in, char *out, size_t cap, const char **res, struct kg_err *err)
{
    size_t n;

    *res = NULL;
    if (in == NULL || strcmp(in, "never") == 0)
        return KG_OK;
    n = strlen(in);
    if (n == 10 && in[4] == '-' && in[7] == '-') {
        snprintf(out, cap, "%sT23:59:59Z", in);
        *res = out;
        return KG_OK;
    }
    if (strcmp(in, "30d") == 0 || strcmp(in, "90d") == 0 || strcmp(in, "365d") == 0 ||
        strchr(in, 'T') != NULL) {
        *res = in;
        return KG_OK;
    }
    return kg_err_set(err, KG_EINVAL, "expires wants 30d, 90d, 365d, a date (YYYY-MM-DD) or never");
}

static void
create_key(const struct kg_console_env *env, const struct kg_console_req *rq,
           struct kg_console_answer *a, const struct kg_user_rec *u, const char *actor)
{
    struct kg_keys_ctx kc = keys_ctx(env, actor);
    struct kg_key_new req = {.user = u->id};
    char scopes[KG_SCOPES_MAX] = "", expires[40];
    bool has_scopes = false;
    const char *exp_in = NULL;
    const struct kg_jfield fields[] = {
        {.name = "name", .type = KG_JSTRING, .required = true, .out = &req.name},
        {.name = "expires", .type = KG_JSTRING, .nullable = true, .out = &exp_in},
        {.name = "scopes", .type = KG_JSCOPES, .out = scopes, .present = &has_scopes},
    };
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_err err = {{0}};
    json_t *root = NULL;
    char *key = NULL;
    enum kg_status rc;

    if (rec == NULL) {
        answer_error(env, a, 500, "Internal error");
        return;
    }
    rc = kg_json_io_decode(rq->body, rq->body_len, fields, 3, &root, &err);
    if (rc == KG_OK)
        rc = expiry_arg(exp_in, expires, sizeof(expires), &req.expires, &err);
    if (rc == KG_OK && env->cfg->require_scopes && scopes[0] == '\0')
        rc = kg_err_set(&err, KG_EINVAL,
                        "scopes: choose at least one scope (keys without scopes are refused)");
    req.scopes = scopes;
    if (rc == KG_OK)
        rc = kg_keys_create(&kc, NULL, &req, rq->now, rec, &key, &err);
    if (rc != KG_OK) {
        answer_status(env, a, rc, &err);
    } else {
        sync_keys(env, rq->now);
        answer_with_key(a, 201, key_doc(env, rec, rq->now), key);
    }
    kg_keys_key_free(key);
    json_decref(root);
    free(rec);
}

/* Reads key id for user u; a key of anyone else is "no key ID" like a
 * missing one. */
static enum kg_status
own_key(const struct kg_console_env *env, const struct kg_user_rec *u, const char *id,
        struct kg_key_rec *rec, struct kg_err *err)
{
    struct kg_keys_ctx kc = keys_ctx(env, NULL);
    enum kg_status rc;

    if (strnlen(id, KG_ID_MAX) >= KG_ID_MAX)
        return kg_err_set(err, KG_ENOTFOUND, "no such key");
    rc = kg_keys_get(&kc, NULL, id, rec, err);
    if (rc == KG_EINVAL || (rc == KG_OK && strcmp(rec->user_id, u->id) != 0))
        rc = KG_ENOTFOUND;
    if (rc == KG_ENOTFOUND)
        return kg_err_set(err, KG_ENOTFOUND, "no key %s", id);
    return rc;
}

static void
key_action(const struct kg_console_env *env, const struct kg_console_req *rq,
           struct kg_console_answer *a, const struct kg_user_rec *u, const char *actor,
           const char *id, const char *action)
{
    struct kg_keys_ctx kc = keys_ctx(env, actor);
    struct kg_key_rec *rec = calloc(1, sizeof(*rec)), *fresh = calloc(1, sizeof(*fresh));
    struct kg_err err = {{0}};
    char *key = NULL;
    enum kg_status rc = rec != NULL && fresh != NULL ? KG_OK : KG_ENOMEM;

    if (rc == KG_OK && rq->body_len > 0 &&
        kg_json_io_decode(rq->body, rq->body_len, NULL, 0, NULL, &err) != KG_OK)
        rc = KG_EINVAL;
    if (rc == KG_OK)
        rc = own_key(env, u, id, rec, &err);
    if (rc == KG_OK && strcmp(action, "revoke") == 0)
        rc = kg_keys_revoke(&kc, NULL, id, rq->now, rec, &err);
    else if (rc == KG_OK)
        rc = kg_keys_regenerate(&kc, NULL, id, rq->now, fresh, rec, &key, &err);
    if (rc == KG_ENOMEM && err.msg[0] == '\0')
        kg_err_set(&err, KG_ENOMEM, "out of memory");
    if (rc != KG_OK) {
        answer_status(env, a, rc, &err);
    } else {
        sync_keys(env, rq->now);
        if (key != NULL) {
            answer_with_key(a, 201,
                            kg_json_io_attach(key_doc(env, fresh, rq->now), "previous",
                                              key_doc(env, rec, rq->now)),
                            key);
        } else {
            answer_doc(a, 200, key_doc(env, rec, rq->now));
        }
    }
    kg_keys_key_free(key);
    free(rec);
    free(fresh);
}

static void
usage(const struct kg_console_env *env, const struct kg_console_req *rq,
      struct kg_console_answer *a, const struct kg_user_rec *u)
{
    struct kg_keys_ctx kc = keys_ctx(env, NULL);
    struct kg_keys_filter filter = {.all_states = true, .user = u->id};
    struct kg_page page = {.limit = LIST_MAX};
    struct list_ctx lc = {0};
    struct kg_user_usage used;
    struct kg_err err = {{0}};
    json_t *keys = json_array(), *doc = NULL;
    enum kg_status rc;

    rc = kg_accounts_user_usage(&kc, NULL, u, rq->now, &used, &err);
    if (rc == KG_OK)
        rc = kg_keys_list(&kc, NULL, &filter, &page, rq->now, gather, &lc, NULL, &err);
    if (rc == KG_OK && (lc.failed || keys == NULL))
        rc = kg_err_set(&err, KG_ENOMEM, "out of memory");
    for (size_t i = 0; rc == KG_OK && i < lc.n; i++) {
        struct kg_key_usage ku = {0};
        json_t *o;

        if (env->keys != NULL)
            rc = kg_keycache_usage(env->keys, env->store, lc.recs[i].id, &ku, &err);
        else
            rc = kg_store_key_usage_get(env->store, lc.recs[i].id, &ku, &err);
        if (rc != KG_OK)
            break;
        /* attach() releases what was made when a member fails (a plain
         * set left the usage object behind). */
        o = kg_json_io_attach(
            kg_json_io_attach(kg_render_key_usage_json(&ku), "id", json_string(lc.recs[i].id)),
            "name", json_string(lc.recs[i].name));
        if (o == NULL || json_array_append_new(keys, o) != 0)
            rc = kg_err_set(&err, KG_ENOMEM, "out of memory");
    }
    free(lc.recs);
    if (rc != KG_OK) {
        json_decref(keys);
        answer_status(env, a, rc, &err);
        return;
    }
    doc =
        json_pack("{s:{s:o, s:I, s:I}, s:o}", "user", "quota_limit",
                  u->has_quota ? json_integer(u->quota_limit) : json_null(), "quota_used",
                  (json_int_t)used.credits, "tier_quota_used", (json_int_t)used.tier, "keys", keys);
    answer_doc(a, 200, doc);
}

/* ---- routing ---- */

bool
kg_selfservice_is_api(const char *path)
{
    return strncmp(path, "api/", 4) == 0;
}

/* "api/keys/{id}/{action}": the id into id (cap bytes) and the action. */
static bool
key_path(const char *path, char *id, size_t cap, const char **action)
{
    const char *p, *slash;

    /* The prefix first: a shorter path ("api/keys") has nothing past it. */
    if (strncmp(path, "api/keys/", 9) != 0)
        return false;
    p = path + 9;
    slash = strchr(p, '/');
    if (slash == NULL || slash == p || (size_t)(slash - p) >= cap)
        return false;
    memcpy(id, p, (size_t)(slash - p));
    id[slash - p] = '\0';
    *action = slash + 1;
    return strcmp(*action, "revoke") == 0 || strcmp(*action, "regenerate") == 0;
}

void
kg_selfservice_handle(const struct kg_console_env *env, const struct kg_console_req *rq,
                      struct kg_console_answer *out)
{
    const char *m = rq->method, *p = rq->path, *action = NULL;
    char token[KG_SESSION_TOKEN_LEN + 1] = "", actor[KG_AUDIT_ACTOR_MAX], id[KG_ID_MAX + 1];
    struct kg_user_rec *u = NULL;
    bool is_key_path;

    memset(out, 0, sizeof(*out));
    is_key_path = key_path(p, id, sizeof(id), &action);
    if (changes_state(m)) {
        /* A cross-site form post, or a script of another origin: refused
         * before anything is read. A form cannot send application/json. */
        if (kg_selfservice_cross_site(rq)) {
            answer_error(env, out, 403, "Cross-site request refused");
            return;
        }
        if (rq->body_len > 0 && !kg_json_io_content_type_ok(rq->content_type)) {
            answer_error(env, out, 415, "Content-Type must be application/json");
            return;
        }
    }
    if (strcmp(p, "api/config") == 0 && strcmp(m, "GET") == 0) {
        get_config(env, out);
        return;
    }
    if (strcmp(p, "api/session") == 0 && strcmp(m, "POST") == 0) {
        sign_in(env, rq, out);
        return;
    }
    if (strcmp(p, "api/session") == 0 && strcmp(m, "GET") == 0) {
        get_session(env, rq, out);
        return;
    }
    if (!(strcmp(p, "api/session") == 0 && strcmp(m, "DELETE") == 0) &&
        !((strcmp(p, "api/keys") == 0 || strcmp(p, "api/scopes") == 0 ||
           strcmp(p, "api/usage") == 0) &&
          (strcmp(m, "GET") == 0 || (strcmp(m, "POST") == 0 && strcmp(p, "api/keys") == 0))) &&
        !(is_key_path && strcmp(m, "POST") == 0)) {
        answer_error(env, out, 404, "Not found");
        return;
    }
    u = malloc(sizeof(*u));
    if (u == NULL) {
        answer_error(env, out, 500, "Internal error");
        return;
    }
    if (!signed_in(env, rq, out, u, token))
        goto cleanup;
    if (changes_state(m) && !kg_session_csrf_ok(env->secret, token, rq->csrf)) {
        answer_error(env, out, 403, "Missing or invalid anti-CSRF token (X-CSRF-Token)");
        goto cleanup;
    }
    snprintf(actor, sizeof(actor), ACTOR_PREFIX "%s", u->id);
    if (strcmp(p, "api/session") == 0)
        sign_out(env, rq, out, token);
    else if (strcmp(p, "api/scopes") == 0)
        answer_doc(out, 200, json_pack("{s:o}", "data", scopes_doc(env->cfg, u)));
    else if (strcmp(p, "api/usage") == 0)
        usage(env, rq, out, u);
    else if (strcmp(p, "api/keys") == 0 && strcmp(m, "GET") == 0)
        list_keys(env, rq, out, u);
    else if (strcmp(p, "api/keys") == 0)
        create_key(env, rq, out, u, actor);
    else
        key_action(env, rq, out, u, actor, id, action);
cleanup:
    sodium_memzero(token, sizeof(token));
    free(u);
}
