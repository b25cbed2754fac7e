/* tests/unit/http/test_respond.c - src/http/respond.c through
 * keygate/respond.h. The bodies clients see are a contract (issue 3, the
 * Avala and Aivene seeds), so they are compared byte for byte; where a body
 * carries variable words (the missing scope) it is parsed with jansson and
 * its fields checked. Configs come from files: the defaults (detail style)
 * and "error_style error". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "keygate/config.h"
#include "keygate/decide.h"
#include "keygate/respond.h"
#include "unit/fixture.h"

struct fixture {
    struct kg_config *detail;
    struct kg_config *error;
};

static int
group_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    kg_fx_clear_env();
    *state = f;
    if (f == NULL || kg_fx_load_config("# defaults: detail style\n", &f->detail) != 0 ||
        kg_fx_load_config("error_style error\n", &f->error) != 0)
        return -1;
    return 0;
}

static int
group_teardown(void **state)
{
    struct fixture *f = *state;

    if (f != NULL) {
        kg_config_free(f->detail);
        kg_config_free(f->error);
        free(f);
    }
    return 0;
}

static void
verdict(const struct kg_config *cfg, enum kg_verdict v, const char *missing, struct kg_answer *out)
{
    struct kg_decision d;

    memset(&d, 0, sizeof(d));
    d.verdict = v;
    d.missing_scope = missing;
    memset(out, 0x5A, sizeof(*out)); /* every field must be set, not left over */
    kg_respond_verdict(cfg, &d, out);
}

/* Status, exact body, body_len, and no junk after the NUL that matters. */
static void
assert_answer(const struct kg_answer *a, unsigned status, const char *body)
{
    assert_int_equal(a->status, status);
    if (strcmp(a->body, body) != 0)
        fail_msg("body should be\n  %s\ngot\n  %s", body, a->body);
    assert_int_equal(a->body_len, strlen(body));
}

/* Parses the body; the caller json_decref()s it. */
static json_t *
parse(const struct kg_answer *a)
{
    json_error_t jerr;
    json_t *o = json_loadb(a->body, a->body_len, 0, &jerr);

    if (o == NULL)
        fail_msg("body should be JSON: %s (%s)", jerr.text, a->body);
    assert_true(json_is_object(o));
    return o;
}

static const char *
field(json_t *o, const char *outer, const char *inner)
{
    json_t *v = json_object_get(o, outer);

    if (inner != NULL)
        v = json_object_get(v, inner);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void
assert_401_challenge(const struct kg_answer *a)
{
    assert_non_null(a->www_authenticate);
    assert_memory_equal(a->www_authenticate, "Bearer ", 7);
    assert_false(a->close);
}

static void
test_detail_no_credential_body_is_exact(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    verdict(f->detail, KG_DENY_NO_CREDENTIAL, NULL, &a);
    assert_answer(&a, 401, "{\"detail\": \"Authentication credentials were not provided.\"}");
    assert_401_challenge(&a);
    assert_int_equal(a.retry_after_s, 0);
}

static void
test_detail_invalid_key_body_is_exact(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    verdict(f->detail, KG_DENY_INVALID, NULL, &a);
    assert_answer(&a, 401, "{\"detail\": \"Invalid API key.\"}");
    assert_401_challenge(&a);
    assert_non_null(strstr(a.www_authenticate, "invalid_token"));
}

static void
test_detail_expired_key_body_is_exact(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    verdict(f->detail, KG_DENY_EXPIRED, NULL, &a);
    assert_answer(&a, 401, "{\"detail\": \"API key has expired.\"}");
    assert_401_challenge(&a);
    assert_non_null(strstr(a.www_authenticate, "invalid_token"));
}

static void
test_detail_missing_scope_is_403_naming_the_scope(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;
    json_t *o;

    verdict(f->detail, KG_DENY_SCOPE, "write:items", &a);
    assert_int_equal(a.status, 403);
    assert_null(a.www_authenticate);
    assert_int_equal(a.body_len, strlen(a.body));
    o = parse(&a);
    assert_int_equal(json_object_size(o), 1);
    assert_non_null(strstr(field(o, "detail", NULL), "write:items"));
    /* A sentence, like the other detail bodies. */
    assert_int_equal(a.body[a.body_len - 3], '.');
    json_decref(o);
}

static void
test_detail_other_403s_are_json_without_a_challenge(void **state)
{
    struct fixture *f = *state;
    static const enum kg_verdict vs[] = {KG_DENY_NO_SCOPES, KG_DENY_NO_ROUTE};
    struct kg_answer a;

    for (size_t i = 0; i < 2; i++) {
        json_t *o;

        verdict(f->detail, vs[i], NULL, &a);
        assert_int_equal(a.status, 403);
        assert_null(a.www_authenticate);
        o = parse(&a);
        assert_true(strlen(field(o, "detail", NULL)) > 0);
        json_decref(o);
    }
}

static void
test_detail_429s_are_json(void **state)
{
    struct fixture *f = *state;
    static const enum kg_verdict vs[] = {KG_DENY_RATE, KG_DENY_QUOTA, KG_DENY_THROTTLED};
    struct kg_answer a;

    for (size_t i = 0; i < 3; i++) {
        json_t *o;

        verdict(f->detail, vs[i], NULL, &a);
        assert_int_equal(a.status, 429);
        assert_null(a.www_authenticate);
        o = parse(&a);
        assert_true(strlen(field(o, "detail", NULL)) > 0);
        json_decref(o);
    }
}

static void
test_error_style_invalid_key_body_is_exact(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    verdict(f->error, KG_DENY_INVALID, NULL, &a);
    assert_answer(&a, 401,
                  "{\"error\": {\"type\": \"authentication_error\", \"message\": \"Invalid API "
                  "key\"}}");
    assert_401_challenge(&a);
}

static void
test_error_style_other_401s_are_authentication_errors(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    verdict(f->error, KG_DENY_NO_CREDENTIAL, NULL, &a);
    assert_answer(&a, 401,
                  "{\"error\": {\"type\": \"authentication_error\", \"message\": "
                  "\"Authentication credentials were not provided\"}}");
    assert_401_challenge(&a);
    verdict(f->error, KG_DENY_EXPIRED, NULL, &a);
    assert_answer(&a, 401,
                  "{\"error\": {\"type\": \"authentication_error\", \"message\": \"API key has "
                  "expired\"}}");
    assert_401_challenge(&a);
}

static void
test_error_style_403_is_a_permission_error_naming_the_scope(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;
    json_t *o;

    verdict(f->error, KG_DENY_SCOPE, "admin:all", &a);
    assert_int_equal(a.status, 403);
    assert_null(a.www_authenticate);
    o = parse(&a);
    assert_int_equal(json_object_size(o), 1);
    assert_string_equal(field(o, "error", "type"), "permission_error");
    assert_non_null(strstr(field(o, "error", "message"), "admin:all"));
    json_decref(o);

    verdict(f->error, KG_DENY_NO_SCOPES, NULL, &a);
    o = parse(&a);
    assert_int_equal(a.status, 403);
    assert_string_equal(field(o, "error", "type"), "permission_error");
    json_decref(o);

    verdict(f->error, KG_DENY_NO_ROUTE, NULL, &a);
    o = parse(&a);
    assert_int_equal(a.status, 403);
    assert_string_equal(field(o, "error", "type"), "permission_error");
    json_decref(o);
}

static void
test_error_style_429_is_a_rate_limit_error(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;
    json_t *o;

    verdict(f->error, KG_DENY_RATE, NULL, &a);
    assert_int_equal(a.status, 429);
    o = parse(&a);
    assert_string_equal(field(o, "error", "type"), "rate_limit_error");
    json_decref(o);

    verdict(f->error, KG_DENY_THROTTLED, NULL, &a);
    assert_int_equal(a.status, 429);
    o = parse(&a);
    assert_string_equal(field(o, "error", "type"), "rate_limit_error");
    json_decref(o);
}

static void
test_error_style_quota_is_typed_quota_exceeded(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;
    json_t *o;

    verdict(f->error, KG_DENY_QUOTA, NULL, &a);
    assert_int_equal(a.status, 429);
    o = parse(&a);
    assert_string_equal(field(o, "error", "type"), "quota_exceeded");
    json_decref(o);
}

static void
test_error_style_bodies_have_type_first_then_message(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    verdict(f->error, KG_DENY_RATE, NULL, &a);
    assert_memory_equal(a.body, "{\"error\": {\"type\": \"rate_limit_error\", \"message\": \"",
                        strlen("{\"error\": {\"type\": \"rate_limit_error\", \"message\": \""));
}

static void
test_upstream_errors_in_error_style_are_upstream_errors(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    memset(&a, 0x5A, sizeof(a));
    kg_respond_error(f->error, 502, "Upstream unreachable", &a);
    assert_answer(&a, 502,
                  "{\"error\": {\"type\": \"upstream_error\", \"message\": \"Upstream "
                  "unreachable\"}}");
    assert_false(a.close);
    assert_null(a.www_authenticate);

    memset(&a, 0x5A, sizeof(a));
    kg_respond_error(f->error, 504, "Upstream timed out", &a);
    assert_answer(&a, 504,
                  "{\"error\": {\"type\": \"upstream_error\", \"message\": \"Upstream timed "
                  "out\"}}");
    assert_false(a.close);
}

static void
test_upstream_errors_in_detail_style_end_with_a_period(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    kg_respond_error(f->detail, 502, "Upstream unreachable", &a);
    assert_answer(&a, 502, "{\"detail\": \"Upstream unreachable.\"}");
    kg_respond_error(f->detail, 504, "Upstream timed out", &a);
    assert_answer(&a, 504, "{\"detail\": \"Upstream timed out.\"}");
    assert_null(a.www_authenticate);
}

static void
test_gateway_error_types_follow_the_status(void **state)
{
    static const struct {
        unsigned status;
        const char *type;
    } cases[] = {
        {400, "invalid_request_error"}, {404, "not_found_error"}, {413, "invalid_request_error"},
        {431, "invalid_request_error"}, {500, "api_error"},       {503, "api_error"},
        {405, "invalid_request_error"},
    };
    struct fixture *f = *state;
    struct kg_answer a;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o;

        kg_respond_error(f->error, cases[i].status, "Something", &a);
        assert_int_equal(a.status, cases[i].status);
        o = parse(&a);
        if (strcmp(field(o, "error", "type"), cases[i].type) != 0)
            fail_msg("status %u should have type %s, got %s", cases[i].status, cases[i].type,
                     field(o, "error", "type"));
        assert_string_equal(field(o, "error", "message"), "Something");
        json_decref(o);
    }
}

static void
test_a_400_closes_the_connection(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    memset(&a, 0, sizeof(a));
    kg_respond_error(f->detail, 400, "Both Content-Length and Transfer-Encoding", &a);
    assert_answer(&a, 400, "{\"detail\": \"Both Content-Length and Transfer-Encoding.\"}");
    assert_true(a.close);
    kg_respond_error(f->error, 400, "Malformed header name", &a);
    assert_true(a.close);
    kg_respond_error(f->detail, 413, "Request body too large", &a);
    assert_true(a.close);
    kg_respond_error(f->detail, 431, "Request headers too large", &a);
    assert_true(a.close);
}

static void
test_other_errors_keep_the_connection(void **state)
{
    static const unsigned statuses[] = {404, 405, 500, 502, 503, 504};
    struct fixture *f = *state;
    struct kg_answer a;

    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        memset(&a, 0x5A, sizeof(a));
        kg_respond_error(f->detail, statuses[i], "X", &a);
        if (a.close)
            fail_msg("a %u should keep the connection open", statuses[i]);
        /* Allow is the caller's to set, for a 405 only. */
        assert_null(a.allow);
    }
}

static void
test_messages_are_escaped_as_json(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;
    json_t *o;

    kg_respond_error(f->detail, 400, "A \"quoted\" \\ word", &a);
    o = parse(&a);
    assert_string_equal(field(o, "detail", NULL), "A \"quoted\" \\ word.");
    json_decref(o);
    kg_respond_error(f->error, 400, "A \"quoted\" \\ word", &a);
    o = parse(&a);
    assert_string_equal(field(o, "error", "message"), "A \"quoted\" \\ word");
    json_decref(o);
}

static void
test_an_overlong_message_still_gives_a_json_body(void **state)
{
    struct fixture *f = *state;
    char msg[1000];
    struct kg_answer a;
    json_t *o;

    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    kg_respond_error(f->detail, 500, msg, &a);
    assert_int_equal(a.status, 500);
    assert_true(a.body_len < KG_ANSWER_BODY_MAX);
    assert_int_equal(a.body_len, strlen(a.body));
    o = parse(&a);
    json_decref(o);
}

static void
test_health_body_is_exact(void **state)
{
    struct kg_answer a;

    (void)state;
    memset(&a, 0x5A, sizeof(a));
    kg_respond_health(&a);
    assert_answer(&a, 200, "{\"status\":\"ok\"}");
    assert_null(a.www_authenticate);
    assert_false(a.close);
    assert_int_equal(a.retry_after_s, 0);
}

/* A verdict of a key limit (and a tier limit when tier_count > 0) after
 * `taken` requests at one instant. */
static void
limited(struct kg_limit_verdict *v, int64_t count, int64_t period, int64_t burst, int taken,
        int64_t tier_count, int64_t tier_period)
{
    struct kg_limiter *lim = NULL;
    struct kg_gcra key, tier;
    struct kg_limit_req rq = {.key_id = "key_a", .key_rate = &key, .user_id = "usr_a"};

    assert_int_equal(kg_limiter_new_local(16, &lim, NULL), KG_OK);
    assert_int_equal(kg_gcra_init(&key, count, period, burst, NULL), KG_OK);
    if (tier_count > 0) {
        assert_int_equal(kg_gcra_init(&tier, tier_count, tier_period, 0, NULL), KG_OK);
        rq.tier_rate = &tier;
    }
    for (int i = 0; i < taken; i++)
        kg_limiter_check(lim, &rq, 1000000, true, v);
    kg_limiter_free(lim);
}

static const char *
rl_value(const struct kg_rl_fields *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->name[i], name) == 0)
            return h->value[i];
    }
    return NULL;
}

/* Every denial kg_respond_verdict() writes, in both styles, byte for byte:
 * the wording is the contract (README "Answers", the seeds). */
static const struct {
    enum kg_verdict verdict;
    const char *missing; /* KG_DENY_SCOPE's scope */
    unsigned status;
    const char *detail, *error;
    const char *challenge; /* WWW-Authenticate, NULL: none */
} verdict_rows[] = {
    {KG_DENY_NO_CREDENTIAL, NULL, 401,
     "{\"detail\": \"Authentication credentials were not provided.\"}",
     "{\"error\": {\"type\": \"authentication_error\", \"message\": \"Authentication "
     "credentials were not provided\"}}",
     "Bearer realm=\"keygate\""},
    {KG_DENY_INVALID, NULL, 401, "{\"detail\": \"Invalid API key.\"}",
     "{\"error\": {\"type\": \"authentication_error\", \"message\": \"Invalid API key\"}}",
     "Bearer realm=\"keygate\", error=\"invalid_token\""},
    {KG_DENY_EXPIRED, NULL, 401, "{\"detail\": \"API key has expired.\"}",
     "{\"error\": {\"type\": \"authentication_error\", \"message\": \"API key has expired\"}}",
     "Bearer realm=\"keygate\", error=\"invalid_token\""},
    {KG_DENY_SCOPE, "read:items", 403,
     "{\"detail\": \"API key is missing the required scope read:items.\"}",
     "{\"error\": {\"type\": \"permission_error\", \"message\": \"API key is missing the "
     "required scope read:items\"}}",
     NULL},
    {KG_DENY_SCOPE, "admin:all", 403,
     "{\"detail\": \"API key is missing the required scope admin:all.\"}",
     "{\"error\": {\"type\": \"permission_error\", \"message\": \"API key is missing the "
     "required scope admin:all\"}}",
     NULL},
    {KG_DENY_NO_SCOPES, NULL, 403,
     "{\"detail\": \"API key has no scopes and scopes are required.\"}",
     "{\"error\": {\"type\": \"permission_error\", \"message\": \"API key has no scopes and "
     "scopes are required\"}}",
     NULL},
    {KG_DENY_NO_ROUTE, NULL, 403, "{\"detail\": \"No route permits this request.\"}",
     "{\"error\": {\"type\": \"permission_error\", \"message\": \"No route permits this "
     "request\"}}",
     NULL},
    {KG_DENY_ROLE, NULL, 403, "{\"detail\": \"API key's scopes are all outside its user's role.\"}",
     "{\"error\": {\"type\": \"permission_error\", \"message\": \"API key's scopes are all "
     "outside its user's role\"}}",
     NULL},
    {KG_DENY_RATE, NULL, 429, "{\"detail\": \"Rate limit exceeded.\"}",
     "{\"error\": {\"type\": \"rate_limit_error\", \"message\": \"Rate limit exceeded\"}}", NULL},
    {KG_DENY_QUOTA, NULL, 429, "{\"detail\": \"Quota exceeded.\"}",
     "{\"error\": {\"type\": \"quota_exceeded\", \"message\": \"Quota exceeded\"}}", NULL},
    {KG_DENY_THROTTLED, NULL, 429, "{\"detail\": \"Too many failed authentication attempts.\"}",
     "{\"error\": {\"type\": \"rate_limit_error\", \"message\": \"Too many failed "
     "authentication attempts\"}}",
     NULL},
    {KG_DENY_LIMITER, NULL, 503, "{\"detail\": \"Rate limiter unavailable.\"}",
     "{\"error\": {\"type\": \"api_error\", \"message\": \"Rate limiter unavailable\"}}", NULL},
};

static void
test_every_denial_is_exact_in_both_styles(void **state)
{
    struct fixture *f = *state;
    struct kg_answer a;

    for (size_t i = 0; i < sizeof(verdict_rows) / sizeof(verdict_rows[0]); i++) {
        for (int style = 0; style < 2; style++) {
            const char *want = style == 0 ? verdict_rows[i].detail : verdict_rows[i].error;

            verdict(style == 0 ? f->detail : f->error, verdict_rows[i].verdict,
                    verdict_rows[i].missing, &a);
            if (a.status != verdict_rows[i].status || strcmp(a.body, want) != 0)
                fail_msg("row %zu, %s style: wanted %u %s\ngot %u %s", i,
                         style == 0 ? "detail" : "error", verdict_rows[i].status, want, a.status,
                         a.body);
            assert_int_equal(a.body_len, strlen(want));
            if (verdict_rows[i].challenge == NULL)
                assert_null(a.www_authenticate);
            else
                assert_string_equal(a.www_authenticate, verdict_rows[i].challenge);
            /* Retry-After is the caller's to set; a connection is never closed for a denial. */
            assert_int_equal(a.retry_after_s, 0);
            assert_false(a.close);
        }
    }
}

/* Every gateway-side error front.c and admin.c write through
 * kg_respond_error(), with the exact words they pass, in both styles. */
static const struct {
    unsigned status;
    const char *message, *type;
    bool close;
} error_rows[] = {
    {400, "Malformed header name", "invalid_request_error", true},
    {400, "Control character in header value", "invalid_request_error", true},
    {400, "Both Content-Length and Transfer-Encoding", "invalid_request_error", true},
    {400, "Unsupported Transfer-Encoding", "invalid_request_error", true},
    {400, "Several Content-Length headers", "invalid_request_error", true},
    {400, "Malformed Content-Length", "invalid_request_error", true},
    {400, "Several Host headers", "invalid_request_error", true},
    {400, "Malformed request method", "invalid_request_error", true},
    {400, "Malformed request target", "invalid_request_error", true},
    {400, "Malformed request path", "invalid_request_error", true},
    {400, "Request path is not in normal form", "invalid_request_error", true},
    {400, "Malformed forward-auth request", "invalid_request_error", true},
    {400, "Conflicting forward-auth headers", "invalid_request_error", true},
    {400, "name is required", "invalid_request_error", true},
    {403, "API key is missing the required scope tenants:admin (it needs a platform admin)",
     "permission_error", false},
    {404, "Not found", "not_found_error", false},
    {405, "Method not allowed", "invalid_request_error", false},
    {409, "email is already in use", "invalid_request_error", false},
    {413, "Request body is larger than 64 KiB", "invalid_request_error", true},
    {415, "Content-Type must be application/json", "invalid_request_error", false},
    {429, "Too many signup requests", "rate_limit_error", false},
    {431, "Request header fields too large", "invalid_request_error", true},
    {500, "Internal error", "api_error", false},
    {502, "Upstream is unavailable", "upstream_error", false},
    {503, "Service is shutting down", "api_error", false},
    {503, "Signup is not available", "api_error", false},
    {504, "Upstream timed out", "upstream_error", false},
};

static void
test_every_gateway_error_is_exact_in_both_styles(void **state)
{
    struct fixture *f = *state;
    char want[KG_ANSWER_BODY_MAX];
    struct kg_answer a;

    for (size_t i = 0; i < sizeof(error_rows) / sizeof(error_rows[0]); i++) {
        for (int style = 0; style < 2; style++) {
            if (style == 0)
                snprintf(want, sizeof(want), "{\"detail\": \"%s.\"}", error_rows[i].message);
            else
                snprintf(want, sizeof(want), "{\"error\": {\"type\": \"%s\", \"message\": \"%s\"}}",
                         error_rows[i].type, error_rows[i].message);
            memset(&a, 0x5A, sizeof(a));
            kg_respond_error(style == 0 ? f->detail : f->error, error_rows[i].status,
                             error_rows[i].message, &a);
            if (a.status != error_rows[i].status || strcmp(a.body, want) != 0)
                fail_msg("row %zu, %s style: wanted %u %s\ngot %u %s", i,
                         style == 0 ? "detail" : "error", error_rows[i].status, want, a.status,
                         a.body);
            assert_int_equal(a.body_len, strlen(want));
            assert_null(a.www_authenticate);
            assert_int_equal(a.retry_after_s, 0);
            if (a.close != error_rows[i].close)
                fail_msg("row %zu: a %u should %s the connection", i, error_rows[i].status,
                         error_rows[i].close ? "close" : "keep");
        }
    }
}

static void
test_ratelimit_headers_follow_the_draft_structured_fields(void **state)
{
    struct fixture *f = *state;
    struct kg_limit_verdict v;
    struct kg_rl_fields h;

    limited(&v, 5, 1, 5, 1, 0, 0);
    kg_respond_ratelimit_headers(f->detail, &v, "key", "free", &h);
    assert_int_equal(h.n, 2);
    assert_string_equal(rl_value(&h, "RateLimit-Policy"), "\"key\";q=5;w=1");
    assert_string_equal(rl_value(&h, "RateLimit"), "\"key\";r=4;t=1");
    assert_null(rl_value(&h, "X-RateLimit-Limit"));
}

static void
test_ratelimit_headers_list_the_tier_and_legacy_adds_the_binding_limit(void **state)
{
    struct fixture *f = *state;
    struct kg_config *legacy = NULL;
    struct kg_limit_verdict v;
    struct kg_rl_fields h;

    (void)f;
    assert_int_equal(kg_fx_load_config("ratelimit_headers legacy\n", &legacy), 0);
    limited(&v, 100, 60, 0, 3, 4, 60);
    kg_respond_ratelimit_headers(legacy, &v, "default", "pro", &h);
    assert_int_equal(h.n, 5);
    assert_string_equal(rl_value(&h, "RateLimit-Policy"),
                        "\"default\";q=100;w=60, \"tier-pro\";q=4;w=60");
    assert_string_equal(rl_value(&h, "RateLimit"), "\"default\";r=97;t=2, \"tier-pro\";r=1;t=45");
    assert_string_equal(rl_value(&h, "X-RateLimit-Limit"), "4");
    assert_string_equal(rl_value(&h, "X-RateLimit-Remaining"), "1");
    assert_string_equal(rl_value(&h, "X-RateLimit-Reset"), "45");
    kg_config_free(legacy);
}

static void
test_no_limit_means_no_ratelimit_headers(void **state)
{
    struct fixture *f = *state;
    struct kg_limit_verdict v = {.allowed = true};
    struct kg_rl_fields h;

    kg_respond_ratelimit_headers(f->detail, &v, "key", NULL, &h);
    assert_int_equal(h.n, 0);
}

static void
test_a_refused_request_is_429_with_retry_after_rounded_up(void **state)
{
    struct fixture *f = *state;
    struct kg_limit_verdict v;
    struct kg_answer a;

    limited(&v, 5, 1, 5, 6, 0, 0);
    assert_false(v.allowed);
    memset(&a, 0x5A, sizeof(a));
    kg_respond_rate_limited(f->detail, &v, &a);
    assert_answer(&a, 429, "{\"detail\": \"Rate limit exceeded.\"}");
    assert_int_equal(a.retry_after_s, 1); /* 200 ms, rounded up */
    limited(&v, 5, 60, 5, 6, 0, 0);
    kg_respond_rate_limited(f->error, &v, &a);
    assert_answer(&a, 429,
                  "{\"error\": {\"type\": \"rate_limit_error\", \"message\": \"Rate limit "
                  "exceeded\"}}");
    assert_int_equal(a.retry_after_s, 12);
    assert_null(a.www_authenticate);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detail_no_credential_body_is_exact),
        cmocka_unit_test(test_every_denial_is_exact_in_both_styles),
        cmocka_unit_test(test_every_gateway_error_is_exact_in_both_styles),
        cmocka_unit_test(test_ratelimit_headers_follow_the_draft_structured_fields),
        cmocka_unit_test(test_ratelimit_headers_list_the_tier_and_legacy_adds_the_binding_limit),
        cmocka_unit_test(test_no_limit_means_no_ratelimit_headers),
        cmocka_unit_test(test_a_refused_request_is_429_with_retry_after_rounded_up),
        cmocka_unit_test(test_detail_invalid_key_body_is_exact),
        cmocka_unit_test(test_detail_expired_key_body_is_exact),
        cmocka_unit_test(test_detail_missing_scope_is_403_naming_the_scope),
        cmocka_unit_test(test_detail_other_403s_are_json_without_a_challenge),
        cmocka_unit_test(test_detail_429s_are_json),
        cmocka_unit_test(test_error_style_invalid_key_body_is_exact),
        cmocka_unit_test(test_error_style_other_401s_are_authentication_errors),
        cmocka_unit_test(test_error_style_403_is_a_permission_error_naming_the_scope),
        cmocka_unit_test(test_error_style_429_is_a_rate_limit_error),
        cmocka_unit_test(test_error_style_quota_is_typed_quota_exceeded),
        cmocka_unit_test(test_error_style_bodies_have_type_first_then_message),
        cmocka_unit_test(test_upstream_errors_in_error_style_are_upstream_errors),
        cmocka_unit_test(test_upstream_errors_in_detail_style_end_with_a_period),
        cmocka_unit_test(test_gateway_error_types_follow_the_status),
        cmocka_unit_test(test_a_400_closes_the_connection),
        cmocka_unit_test(test_other_errors_keep_the_connection),
        cmocka_unit_test(test_messages_are_escaped_as_json),
        cmocka_unit_test(test_an_overlong_message_still_gives_a_json_body),
        cmocka_unit_test(test_health_body_is_exact),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
