/* tests/unit/proxy/test_headers.c - src/proxy/headers.c through
 * keygate/headers.h: which headers cross the gateway in each direction.
 * Three configs, loaded from files: the defaults, one with an extra
 * credential header, and one that also forwards credentials. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keygate/config.h"
#include "keygate/headers.h"
#include "unit/fixture.h"

static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive",        "Proxy-Connection",   "TE",
    "Trailer",    "Transfer-Encoding", "Proxy-Authenticate", "Upgrade",
};

struct fixture {
    struct kg_config *plain;       /* defaults */
    struct kg_config *extra;       /* credential_header X-Api-Key */
    struct kg_config *forward;     /* the same, with forward_credentials on */
    struct kg_config *underscores; /* the same, with underscores_in_headers on */
};

static int
group_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    kg_fx_clear_env();
    *state = f;
    if (f == NULL || kg_fx_load_config("# defaults\n", &f->plain) != 0 ||
        kg_fx_load_config("credential_header X-Api-Key\n", &f->extra) != 0 ||
        kg_fx_load_config("credential_header X-Api-Key\nforward_credentials on\n", &f->forward) !=
            0 ||
        kg_fx_load_config("credential_header X-Api-Key\nforward_credentials on\n"
                          "underscores_in_headers on\n",
                          &f->underscores) != 0)
        return -1;
    return 0;
}

static int
group_teardown(void **state)
{
    struct fixture *f = *state;

    if (f != NULL) {
        kg_config_free(f->plain);
        kg_config_free(f->extra);
        kg_config_free(f->forward);
        kg_config_free(f->underscores);
        free(f);
    }
    return 0;
}

/* name in upper, lower and its own case. */
static void
for_each_case(const char *name, bool (*pred)(const char *, void *), void *ctx, bool want)
{
    char up[128], low[128];
    size_t n = strlen(name);

    assert_true(n < sizeof(up));
    for (size_t i = 0; i <= n; i++) {
        up[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
        low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    }
    if (pred(name, ctx) != want || pred(up, ctx) != want || pred(low, ctx) != want)
        fail_msg("\"%s\" (in every case) should %s", name, want ? "be dropped" : "be kept");
}

struct req_ctx {
    const struct kg_config *cfg;
    const char *value;
    const char *conn;
    bool trusted;
};

static bool
drops_request(const char *name, void *vctx)
{
    struct req_ctx *c = vctx;

    return kg_headers_drop_request(c->cfg, name, c->value, c->conn, c->trusted);
}

static bool
drops_response(const char *name, void *vctx)
{
    return kg_headers_drop_response(name, vctx);
}

static bool
is_hop(const char *name, void *vctx)
{
    return kg_headers_hop_by_hop(name, vctx);
}

static void
test_the_fixed_hop_by_hop_headers_are_known_in_any_case(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
        for_each_case(hop_by_hop[i], is_hop, NULL, true);
    for_each_case("Content-Type", is_hop, NULL, false);
    for_each_case("Keep-Alive-X", is_hop, NULL, false);
    for_each_case("Connections", is_hop, NULL, false);
    for_each_case("TEA", is_hop, NULL, false);
}

static void
test_headers_named_in_connection_are_hop_by_hop(void **state)
{
    (void)state;
    for_each_case("X-Secret", is_hop, "X-Secret", true);
    for_each_case("X-Foo", is_hop, "x-foo, X-BAR ,\tx-baz\t", true);
    for_each_case("X-Bar", is_hop, "x-foo, X-BAR ,\tx-baz\t", true);
    for_each_case("X-Baz", is_hop, "x-foo, X-BAR ,\tx-baz\t", true);
    for_each_case("X-Fo", is_hop, "x-foo, X-BAR ,\tx-baz\t", false);
    for_each_case("X-Foo2", is_hop, "x-foo, X-BAR ,\tx-baz\t", false);
    for_each_case("X-Foo", is_hop, "", false);
    for_each_case("X-Foo", is_hop, ",, ,", false);
    for_each_case("X-Foo", is_hop, "close", false);
    for_each_case("X-Foo", is_hop, ",x-foo,", true);
    /* Connection: close names no header to drop, but Connection itself goes. */
    for_each_case("Connection", is_hop, "close", true);
}

static void
test_connection_named_headers_are_dropped_from_requests(void **state)
{
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->plain, .value = "v", .conn = "keep-alive, X-Private,Cookie"};

    for_each_case("X-Private", drops_request, &c, true);
    /* Even an ordinary end-to-end header, once the client names it. */
    for_each_case("Cookie", drops_request, &c, true);
    for_each_case("Accept", drops_request, &c, false);
}

static void
test_framing_and_replaced_headers_are_dropped_from_requests(void **state)
{
    static const char *const dropped[] = {
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Request-Id",
        "Proxy-Authorization",
    };
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->plain, .value = "v", .conn = NULL};

    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        for_each_case(dropped[i], drops_request, &c, true);
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
        for_each_case(hop_by_hop[i], drops_request, &c, true);
}

static void
test_client_x_keygate_headers_are_dropped_in_any_case(void **state)
{
    static const char *const forged[] = {
        "X-Keygate-Tenant", "X-Keygate-Key-Id",   "X-Keygate-Scopes",
        "X-Keygate-",       "X-Keygate-Anything",
    };
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->forward, .value = "acme", .conn = NULL};

    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++)
        for_each_case(forged[i], drops_request, &c, true);
    assert_true(kg_headers_drop_request(f->plain, "x-KeYgAtE-tenant", "acme", NULL, false));
    /* Only the X-Keygate- family. */
    for_each_case("X-Keygate", drops_request, &c, false);
    for_each_case("X-Keygatex-Tenant", drops_request, &c, false);
    for_each_case("Keygate-Tenant", drops_request, &c, false);
}

static void
test_credential_headers_are_dropped_unless_forwarded(void **state)
{
    struct fixture *f = *state;

    assert_true(kg_headers_drop_request(f->plain, "Authorization", "Bearer kg_x", NULL, false));
    assert_true(kg_headers_drop_request(f->plain, "authorization", "apikey kg_x", NULL, false));
    assert_true(kg_headers_drop_request(f->plain, "X-Avala-Api-Key", "kg_x", NULL, false));
    assert_true(kg_headers_drop_request(f->plain, "x-avala-api-key", "kg_x", NULL, false));
    assert_true(kg_headers_drop_request(f->extra, "X-Api-Key", "kg_x", NULL, false));
    assert_true(kg_headers_drop_request(f->extra, "x-api-key", "kg_x", NULL, false));
    /* Without the directive X-Api-Key is just a header. */
    assert_false(kg_headers_drop_request(f->plain, "X-Api-Key", "kg_x", NULL, false));

    assert_false(kg_headers_drop_request(f->forward, "Authorization", "Bearer kg_x", NULL, false));
    assert_false(kg_headers_drop_request(f->forward, "X-Avala-Api-Key", "kg_x", NULL, false));
    assert_false(kg_headers_drop_request(f->forward, "X-Api-Key", "kg_x", NULL, false));
}

static void
test_authorization_basic_is_kept(void **state)
{
    struct fixture *f = *state;

    assert_false(
        kg_headers_drop_request(f->plain, "Authorization", "Basic dXNlcjpwYXNz", NULL, false));
    assert_false(
        kg_headers_drop_request(f->extra, "authorization", "Digest username=\"u\"", NULL, false));
    assert_false(
        kg_headers_drop_request(f->forward, "Authorization", "Basic dXNlcjpwYXNz", NULL, false));
}

static void
test_forwarding_credentials_still_drops_everything_else(void **state)
{
    struct fixture *f = *state;

    assert_true(kg_headers_drop_request(f->forward, "Host", "x", NULL, false));
    assert_true(kg_headers_drop_request(f->forward, "X-Keygate-Tenant", "x", NULL, false));
    assert_true(kg_headers_drop_request(f->forward, "Connection", "close", "close", false));
    /* A credential header named in Connection is hop-by-hop all the same. */
    assert_true(
        kg_headers_drop_request(f->forward, "X-Avala-Api-Key", "kg_x", "X-Avala-Api-Key", false));
}

static void
test_end_to_end_request_headers_are_kept(void **state)
{
    static const char *const kept[] = {
        "Accept",        "Accept-Encoding", "Content-Type", "Cookie", "User-Agent",
        "If-None-Match", "X-Custom",        "Range",        "Origin", "Forwarded-Foo",
    };
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->extra, .value = "v", .conn = "close"};

    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        for_each_case(kept[i], drops_request, &c, false);
}

static void
test_underscore_names_are_dropped_by_default(void **state)
{
    static const char *const names[] = {
        "X_Keygate_Tenant", "X_Forwarded_For", "X_Request_Id", "X_Real_Ip", "X_Custom", "_", "a_b",
        "X-Mixed_Name",
    };
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->forward, .value = "v", .conn = NULL};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        c.cfg = f->plain;
        for_each_case(names[i], drops_request, &c, true);
        c.cfg = f->forward;
        for_each_case(names[i], drops_request, &c, true);
    }
}

static void
test_underscores_on_keeps_names_that_collide_with_nothing_of_ours(void **state)
{
    static const char *const kept[] = {"X_Custom", "a_b", "X_Trace_Token", "Forwarded_Foo"};
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->underscores, .value = "v", .conn = NULL};

    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        for_each_case(kept[i], drops_request, &c, false);
}

static void
test_underscores_on_still_drops_names_spelling_a_header_of_ours(void **state)
{
    static const char *const ours[] = {
        "X_Keygate_Tenant",    "X_Keygate_Key_Id", "X_Keygate_Scopes",  "X_Keygate_User_Id",
        "X_Forwarded_For",     "X_Forwarded_Host", "X_Forwarded_Proto", "X_Forwarded_Port",
        "X_Request_Id",        "X_Real_Ip",        "Content_Length",    "Transfer_Encoding",
        "Proxy_Connection",    "Keep_Alive",       "X_Avala_Api_Key",   "X_Api_Key",
        "Proxy_Authorization", "X-Keygate_Tenant", "X_Keygate-Tenant",
    };
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->underscores, .value = "v", .conn = NULL};

    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
        for_each_case(ours[i], drops_request, &c, true);
    /* Named in Connection: hop-by-hop in either spelling. */
    assert_true(kg_headers_drop_request(f->underscores, "X_Hop", "v", "X-Hop", false));
}

static void
test_x_real_ip_is_kept_only_from_a_trusted_peer(void **state)
{
    struct fixture *f = *state;
    struct req_ctx c = {.cfg = f->plain, .value = "203.0.113.9", .conn = NULL};

    for_each_case("X-Real-IP", drops_request, &c, true);
    c.trusted = true;
    for_each_case("X-Real-IP", drops_request, &c, false);
    /* Forwarded is always ours to drop: keygate sends X-Forwarded-* instead. */
    for_each_case("Forwarded", drops_request, &c, true);
    c.trusted = false;
    for_each_case("Forwarded", drops_request, &c, true);
}

static void
test_response_side_drops_hop_by_hop_framing_and_date(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
        for_each_case(hop_by_hop[i], drops_response, NULL, true);
    for_each_case("Content-Length", drops_response, NULL, true);
    for_each_case("Date", drops_response, NULL, true);
    for_each_case("X-Internal", drops_response, (void *)"X-Internal, X-Other", true);
    for_each_case("X-Other", drops_response, (void *)"X-Internal, X-Other", true);
}

static void
test_response_side_keeps_end_to_end_headers(void **state)
{
    static const char *const kept[] = {
        "Content-Type", "Set-Cookie", "X-Request-Id",     "Cache-Control",
        "ETag",         "Location",   "WWW-Authenticate", "Retry-After",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        for_each_case(kept[i], drops_response, (void *)"close", false);
}

static void
test_request_id_sanity(void **state)
{
    char id[200];

    (void)state;
    assert_true(kg_headers_request_id_ok("abc"));
    assert_true(kg_headers_request_id_ok("a"));
    assert_true(kg_headers_request_id_ok("Req-01_2.3:4"));
    assert_true(kg_headers_request_id_ok("550e8400-e29b-41d4-a716-446655440000"));

    memset(id, 'a', sizeof(id));
    id[128] = '\0';
    assert_true(kg_headers_request_id_ok(id));
    id[128] = 'a';
    id[129] = '\0';
    assert_false(kg_headers_request_id_ok(id));

    assert_false(kg_headers_request_id_ok(""));
    assert_false(kg_headers_request_id_ok("a b"));
    assert_false(kg_headers_request_id_ok("a/b"));
    assert_false(kg_headers_request_id_ok("a\"b"));
    assert_false(kg_headers_request_id_ok("a\nb"));
    assert_false(kg_headers_request_id_ok("a\rb"));
    assert_false(kg_headers_request_id_ok("a\tb"));
    assert_false(kg_headers_request_id_ok("a+b"));
    assert_false(kg_headers_request_id_ok("a,b"));
    assert_false(kg_headers_request_id_ok("a;b"));
    assert_false(kg_headers_request_id_ok("a=b"));
    assert_false(kg_headers_request_id_ok("caf\xC3\xA9"));
    assert_false(kg_headers_request_id_ok("<script>"));
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_new_request_ids_are_32_lower_hex_and_unique(void **state)
{
    enum { N = 1000 };
    char *ids[N];

    (void)state;
    for (int i = 0; i < N; i++) {
        ids[i] = malloc(KG_REQUEST_ID_MAX);
        assert_non_null(ids[i]);
        memset(ids[i], 'X', KG_REQUEST_ID_MAX);
        kg_headers_new_request_id(ids[i]);
        assert_int_equal(strlen(ids[i]), 32);
        assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
        assert_true(kg_headers_request_id_ok(ids[i]));
    }
    qsort(ids, N, sizeof(ids[0]), cmp_str);
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("request id %s was drawn twice in %d draws", ids[i], N);
    for (int i = 0; i < N; i++)
        free(ids[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_fixed_hop_by_hop_headers_are_known_in_any_case),
        cmocka_unit_test(test_headers_named_in_connection_are_hop_by_hop),
        cmocka_unit_test(test_connection_named_headers_are_dropped_from_requests),
        cmocka_unit_test(test_framing_and_replaced_headers_are_dropped_from_requests),
        cmocka_unit_test(test_client_x_keygate_headers_are_dropped_in_any_case),
        cmocka_unit_test(test_credential_headers_are_dropped_unless_forwarded),
        cmocka_unit_test(test_authorization_basic_is_kept),
        cmocka_unit_test(test_forwarding_credentials_still_drops_everything_else),
        cmocka_unit_test(test_end_to_end_request_headers_are_kept),
        cmocka_unit_test(test_underscore_names_are_dropped_by_default),
        cmocka_unit_test(test_underscores_on_keeps_names_that_collide_with_nothing_of_ours),
        cmocka_unit_test(test_underscores_on_still_drops_names_spelling_a_header_of_ours),
        cmocka_unit_test(test_x_real_ip_is_kept_only_from_a_trusted_peer),
        cmocka_unit_test(test_response_side_drops_hop_by_hop_framing_and_date),
        cmocka_unit_test(test_response_side_keeps_end_to_end_headers),
        cmocka_unit_test(test_request_id_sanity),
        cmocka_unit_test(test_new_request_ids_are_32_lower_hex_and_unique),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
