/* http/respond.c - status, body and headers of keygate's own answers.
 * Owns the wording of every message a client can see from keygate; builds
 * JSON with jansson (its default separators give the seeds' exact bytes:
 * {"detail": "Invalid API key."}). Knows nothing about sockets. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "keygate/respond.h"

static const char *const challenge = "Bearer realm=\"keygate\"";
static const char *const challenge_invalid = "Bearer realm=\"keygate\", error=\"invalid_token\"";

static const char *
error_type(unsigned status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    case 502:
    case 504:
        return "upstream_error";
    case 404:
        return "not_found_error";
    case 500:
    case 503:
        return "api_error";
    default:
        return "invalid_request_error";
    }
}

/* Writes the body for message in the configured style. type NULL: by status. */
static void
set_body(const struct kg_config *cfg, struct kg_answer *out, const char *message, const char *type)
{
    char sentence[KG_ANSWER_BODY_MAX];
    json_t *o;
    char *s = NULL;

    if (cfg->error_style == KG_STYLE_ERROR) {
        o = json_pack("{s:{s:s, s:s}}", "error", "type",
                      type != NULL ? type : error_type(out->status), "message", message);
    } else {
        snprintf(sentence, sizeof(sentence), "%s.", message);
        o = json_pack("{s:s}", "detail", sentence);
    }
    if (o != NULL)
        s = json_dumps(o, 0);
    if (s != NULL && strlen(s) < sizeof(out->body)) {
        out->body_len = strlen(s);
        memcpy(out->body, s, out->body_len + 1);
    } else {
        /* Only reachable on allocation failure: a fixed, valid body. */
        out->body_len = (size_t)snprintf(out->body, sizeof(out->body), "{\"detail\": \"Error.\"}");
    }
    free(s);
    json_decref(o);
}

static void
answer_init(struct kg_answer *out, unsigned status)
{
    out->status = status;
    out->body_len = 0;
    out->www_authenticate = NULL;
    out->retry_after_s = 0;
    out->close = false;
    out->allow = NULL;
}

/* The fixed denials, rendered once per style: a 401 flood should not run
 * jansson for every request. */
enum fixed {
    F_NO_CRED,
    F_INVALID,
    F_EXPIRED,
    F_NO_SCOPES,
    F_NO_ROUTE,
    F_ROLE,
    F_RATE,
    F_QUOTA,
    F_THROTTLED,
    F_LIMITER,
    F_IP,
    F_COUNT
};
static const struct {
    unsigned status;
    const char *message;
    const char *type;
} fixed_rows[F_COUNT] = {
    [F_NO_CRED] = {401, "Authentication credentials were not provided", NULL},
    [F_INVALID] = {401, "Invalid API key", NULL},
    [F_EXPIRED] = {401, "API key has expired", NULL},
    [F_NO_SCOPES] = {403, "API key has no scopes and scopes are required", NULL},
    [F_NO_ROUTE] = {403, "No route permits this request", NULL},
    [F_ROLE] = {403, "API key's scopes are all outside its user's role", NULL},
    [F_RATE] = {429, "Rate limit exceeded", NULL},
    [F_QUOTA] = {429, "Quota exceeded", "quota_exceeded"},
    [F_THROTTLED] = {429, "Too many failed authentication attempts", NULL},
    [F_LIMITER] = {503, "Rate limiter unavailable", NULL},
    [F_IP] = {403, "API key is not allowed from this address", NULL},
};
static struct kg_answer fixed_answers[2][F_COUNT];
static pthread_once_t fixed_once = PTHREAD_ONCE_INIT;

static void set_body(const struct kg_config *cfg, struct kg_answer *out, const char *message,
                     const char *type);

static void
fixed_init(void)
{
    for (int style = 0; style < 2; style++) {
        struct kg_config cfg = {.error_style = (enum kg_error_style)style};

        for (int f = 0; f < F_COUNT; f++) {
            struct kg_answer *a = &fixed_answers[style][f];

            answer_init(a, fixed_rows[f].status);
            set_body(&cfg, a, fixed_rows[f].message, fixed_rows[f].type);
        }
    }
}

static void
fixed_answer(const struct kg_config *cfg, enum fixed f, struct kg_answer *out)
{
    const struct kg_answer *a;

    pthread_once(&fixed_once, fixed_init);
    a = &fixed_answers[cfg->error_style == KG_STYLE_ERROR ? 1 : 0][f];
    answer_init(out, a->status);
    memcpy(out->body, a->body, a->body_len + 1);
    out->body_len = a->body_len;
}

void
kg_respond_verdict(const struct kg_config *cfg, const struct kg_decision *d, struct kg_answer *out)
{
    char msg[256];

    switch (d->verdict) {
    case KG_DENY_NO_CREDENTIAL:
        fixed_answer(cfg, F_NO_CRED, out);
        out->www_authenticate = challenge;
        return;
    case KG_DENY_EXPIRED:
        fixed_answer(cfg, F_EXPIRED, out);
        out->www_authenticate = challenge_invalid;
        return;
    case KG_DENY_SCOPE:
        answer_init(out, 403);
        snprintf(msg, sizeof(msg), "API key is missing the required scope %s",
                 d->missing_scope != NULL ? d->missing_scope : "");
        set_body(cfg, out, msg, NULL);
        return;
    case KG_DENY_NO_SCOPES:
        fixed_answer(cfg, F_NO_SCOPES, out);
        return;
    case KG_DENY_NO_ROUTE:
        fixed_answer(cfg, F_NO_ROUTE, out);
        return;
    case KG_DENY_ROLE:
        fixed_answer(cfg, F_ROLE, out);
        return;
    case KG_DENY_RATE:
        fixed_answer(cfg, F_RATE, out);
        return;
    case KG_DENY_QUOTA:
        fixed_answer(cfg, F_QUOTA, out);
        return;
    case KG_DENY_THROTTLED:
        fixed_answer(cfg, F_THROTTLED, out);
        return;
    case KG_DENY_LIMITER:
        fixed_answer(cfg, F_LIMITER, out);
        return;
    case KG_DENY_IP:
        fixed_answer(cfg, F_IP, out);
        return;
    case KG_DENY_INVALID:
    case KG_ALLOW:
        break;
    }
    fixed_answer(cfg, F_INVALID, out);
    out->www_authenticate = challenge_invalid;
}

void
kg_respond_error(const struct kg_config *cfg, unsigned status, const char *message,
                 struct kg_answer *out)
{
    answer_init(out, status);
    /* Errors on a request we could not read completely end the connection:
     * whatever follows on it can no longer be framed safely. */
    out->close = status == 400 || status == 413 || status == 431;
    set_body(cfg, out, message, NULL);
}

void
kg_respond_health(struct kg_answer *out)
{
    answer_init(out, 200);
    out->body_len = (size_t)snprintf(out->body, sizeof(out->body), "{\"status\":\"ok\"}");
}

/* One structured-field list member per limit: `"name";q=N;w=S` or `"name";r=N;t=S`. */
static void
list_member(char *dst, size_t cap, const char *name, const char *k1, int64_t v1, const char *k2,
            int64_t v2)
{
    size_t used = strlen(dst);

    if (used < cap)
        snprintf(dst + used, cap - used, "%s\"%s\";%s=%lld;%s=%lld", used > 0 ? ", " : "", name, k1,
                 (long long)v1, k2, (long long)v2);
}

static void
add_header(struct kg_rl_fields *out, const char *name, const char *value)
{
    if (out->n == KG_RL_HEADERS_MAX)
        return;
    out->name[out->n] = name;
    snprintf(out->value[out->n], KG_RL_VALUE_MAX, "%s", value);
    out->n++;
}

void
kg_respond_ratelimit_headers(const struct kg_config *cfg, const struct kg_limit_verdict *v,
                             const char *key_policy, const char *tier, struct kg_rl_fields *out)
{
    char policy[KG_RL_VALUE_MAX] = "", state[KG_RL_VALUE_MAX] = "", tier_name[80], num[24];
    const struct kg_gcra_result *b;

    out->n = 0;
    if (!v->has_key && !v->has_tier)
        return;
    snprintf(tier_name, sizeof(tier_name), "tier-%s", tier != NULL ? tier : "");
    if (v->has_key) {
        list_member(policy, sizeof(policy), key_policy, "q", v->key_rate.count, "w",
                    v->key_rate.period_s);
        list_member(state, sizeof(state), key_policy, "r", v->key.remaining, "t",
                    kg_gcra_seconds_up(v->key.reset_us));
    }
    if (v->has_tier) {
        list_member(policy, sizeof(policy), tier_name, "q", v->tier_rate.count, "w",
                    v->tier_rate.period_s);
        list_member(state, sizeof(state), tier_name, "r", v->tier.remaining, "t",
                    kg_gcra_seconds_up(v->tier.reset_us));
    }
    add_header(out, "RateLimit-Policy", policy);
    add_header(out, "RateLimit", state);
    if (cfg->ratelimit_headers != KG_RLH_LEGACY)
        return;
    b = v->binding == KG_LIMIT_USER ? &v->tier : &v->key;
    snprintf(num, sizeof(num), "%lld",
             (long long)(v->binding == KG_LIMIT_USER ? v->tier_rate.count : v->key_rate.count));
    add_header(out, "X-RateLimit-Limit", num);
    snprintf(num, sizeof(num), "%lld", (long long)b->remaining);
    add_header(out, "X-RateLimit-Remaining", num);
    snprintf(num, sizeof(num), "%lld", (long long)kg_gcra_seconds_up(b->reset_us));
    add_header(out, "X-RateLimit-Reset", num);
}

void
kg_respond_rate_limited(const struct kg_config *cfg, const struct kg_limit_verdict *v,
                        struct kg_answer *out)
{
    int64_t s = kg_gcra_seconds_up(v->retry_after_us);

    fixed_answer(cfg, F_RATE, out);
    out->retry_after_s = s < 1 ? 1 : s > 86400 * 31 ? 86400 * 31 : (int)s;
}
