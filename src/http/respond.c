/* http/respond.c - status, body and headers of keygate's own answers.
 * Owns the wording of every message a client can see from keygate; builds
 * JSON with jansson (its default separators give the seeds' exact bytes:
 * {"detail": "Invalid API key."}). Knows nothing about sockets. */
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
set_body(const struct kg_config *cfg, struct kg_answer *out, const char *message,
         const char *type)
{
    char sentence[KG_ANSWER_BODY_MAX];
    json_t *o;
    char *s = NULL;

    if (cfg->error_style == KG_STYLE_ERROR) {
        o = json_pack("{s:{s:s, s:s}}", "error", "type", type != NULL ? type : error_type(out->status),
                      "message", message);
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
    memset(out, 0, sizeof(*out));
    out->status = status;
}

void
kg_respond_verdict(const struct kg_config *cfg, const struct kg_decision *d,
                   struct kg_answer *out)
{
    char msg[256];

    switch (d->verdict) {
    case KG_DENY_NO_CREDENTIAL:
        answer_init(out, 401);
        out->www_authenticate = challenge;
        set_body(cfg, out, "Authentication credentials were not provided", NULL);
        return;
    case KG_DENY_EXPIRED:
        answer_init(out, 401);
        out->www_authenticate = challenge_invalid;
        set_body(cfg, out, "API key has expired", NULL);
        return;
    case KG_DENY_SCOPE:
        answer_init(out, 403);
        snprintf(msg, sizeof(msg), "API key is missing the required scope %s",
                 d->missing_scope != NULL ? d->missing_scope : "");
        set_body(cfg, out, msg, NULL);
        return;
    case KG_DENY_NO_SCOPES:
        answer_init(out, 403);
        set_body(cfg, out, "API key has no scopes and scopes are required", NULL);
        return;
    case KG_DENY_NO_ROUTE:
        answer_init(out, 403);
        set_body(cfg, out, "No route permits this request", NULL);
        return;
    case KG_DENY_RATE:
        answer_init(out, 429);
        set_body(cfg, out, "Rate limit exceeded", NULL);
        return;
    case KG_DENY_QUOTA:
        answer_init(out, 429);
        set_body(cfg, out, "Quota exceeded", "quota_exceeded");
        return;
    case KG_DENY_THROTTLED:
        answer_init(out, 429);
        set_body(cfg, out, "Too many failed authentication attempts", NULL);
        return;
    case KG_DENY_INVALID:
    case KG_ALLOW:
        break;
    }
    answer_init(out, 401);
    out->www_authenticate = challenge_invalid;
    set_body(cfg, out, "Invalid API key", NULL);
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
