/* tests/unit/proxy/test_outbound.c - src/proxy/outbound.c through
 * keygate/outbound.h.
 *
 * The upstream request of an admitted key, built from a config loaded from
 * a file and headers fed one by one, as the front end feeds them: the URL,
 * which client headers cross, and what keygate adds (forwarding, request
 * id, identity), line by line as curl would send them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keygate/config.h"
#include "keygate/keycache.h"
#include "keygate/outbound.h"
#include "unit/fixture.h"

struct fixture {
    struct kg_config *cfg;
    struct kg_keyent key;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    *state = f;
    kg_fx_clear_env();
    if (kg_fx_load_config("upstream http://127.0.0.1:9/base//\n", &f->cfg) != 0)
        return -1;
    f->key.id = "key_1";
    f->key.tenant = "acme";
    f->key.user_id = "usr_1";
    f->key.effective_str = "read:items";
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    kg_config_free(f->cfg);
    free(f);
    return 0;
}

static struct kg_outbound_in
input(const struct fixture *f)
{
    struct kg_outbound_in in = {.cfg = f->cfg,
                                .path = "/v1/items",
                                .query = "a=1&b=2",
                                .request_id = "req-1",
                                .key = &f->key,
                                .conn_tokens = "",
                                .xff = "",
                                .peer = "192.0.2.10",
                                .host = "api.example"};

    return in;
}

/* The position of line in the list curl is given, or -1. */
static int
line_at(const struct kg_outbound *ob, const char *line)
{
    struct curl_slist *list = kg_outbound_curl_list(ob->lines, ob->lines_len, ob->no_accept);
    int i = 0, at = -1;

    assert_non_null(list);
    for (const struct curl_slist *l = list; l != NULL && at < 0; l = l->next, i++)
        if (strcmp(l->data, line) == 0)
            at = i;
    curl_slist_free_all(list);
    return at;
}

static bool
has_name(const struct kg_outbound *ob, const char *name)
{
    struct curl_slist *list = kg_outbound_curl_list(ob->lines, ob->lines_len, ob->no_accept);
    size_t n = strlen(name);
    bool found = false;

    assert_non_null(list);
    for (const struct curl_slist *l = list; l != NULL && !found; l = l->next)
        found = strncasecmp(l->data, name, n) == 0 && (l->data[n] == ':' || l->data[n] == ';');
    curl_slist_free_all(list);
    return found;
}

static void
test_the_url_is_upstream_path_and_query(void **state)
{
    struct fixture *f = *state;
    struct kg_outbound_in in = input(f);
    struct kg_outbound ob;

    kg_outbound_init(&ob);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_string_equal(ob.url, "http://127.0.0.1:9/base/v1/items?a=1&b=2");
    /* The same apart, for a CURLU (keygate/upurl.h). */
    assert_string_equal(ob.path, "/v1/items");
    assert_string_equal(ob.query, "a=1&b=2");
    kg_outbound_cleanup(&ob);

    in.query = NULL;
    kg_outbound_init(&ob);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_string_equal(ob.url, "http://127.0.0.1:9/base/v1/items");
    assert_string_equal(ob.path, "/v1/items");
    assert_null(ob.query);
    kg_outbound_cleanup(&ob);
    assert_null(ob.url);
    assert_null(ob.lines);
}

static void
test_client_headers_are_filtered_in_order(void **state)
{
    struct fixture *f = *state;
    struct kg_outbound_in in = input(f);
    struct kg_outbound ob;

    in.conn_tokens = "keep-alive, X-Secret-Hop";
    in.has_accept = true; /* what the front end's scan found */
    kg_outbound_init(&ob);
    kg_outbound_client_header(&ob, &in, "Accept", "application/json");
    kg_outbound_client_header(&ob, &in, "Authorization", "Bearer kg_abc");
    kg_outbound_client_header(&ob, &in, "X-Keygate-Tenant", "forged");
    kg_outbound_client_header(&ob, &in, "X-Secret-Hop", "1");
    kg_outbound_client_header(&ob, &in, "X-Forwarded-For", "203.0.113.9");
    kg_outbound_client_header(&ob, &in, "X_Custom", "u");
    kg_outbound_client_header(&ob, &in, "X-Trace", "t-1");
    kg_outbound_client_header(&ob, &in, "X-Empty", "");
    kg_outbound_client_header(&ob, &in, "X-Null", NULL);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_int_equal(line_at(&ob, "Accept: application/json"), 0);
    assert_int_equal(line_at(&ob, "X-Trace: t-1"), 1);
    assert_int_equal(line_at(&ob, "X-Empty;"), 2); /* sent empty, not removed */
    assert_false(has_name(&ob, "Authorization"));
    assert_false(has_name(&ob, "X-Secret-Hop"));
    assert_false(has_name(&ob, "X_Custom"));
    assert_false(has_name(&ob, "X-Null"));
    assert_int_equal(line_at(&ob, "X-Keygate-Tenant: acme"),
                     line_at(&ob, "X-Keygate-Key-Id: key_1") + 1);
    assert_int_equal(line_at(&ob, "X-Keygate-Tenant: forged"), -1);
    /* The client sent Accept: no "Accept:" line to stop curl adding its own. */
    assert_int_equal(line_at(&ob, "Accept:"), -1);
    assert_true(line_at(&ob, "Expect:") > 0);
    kg_outbound_cleanup(&ob);
}

/* The block the native client writes as is: "Name: value\r\n" each, an
 * empty value as "Name:\r\n", no curl markers; a long value whole; a name
 * that is not a token or a value with CR or LF marks it unsendable. */
static void
test_the_header_block_is_the_request_heads_lines(void **state)
{
    struct fixture *f = *state;
    struct kg_outbound_in in = input(f);
    struct kg_outbound ob;
    char *big = malloc(5000);
    const char *want;

    assert_non_null(big);
    memset(big, 'j', 4999);
    big[4999] = '\0';
    in.has_accept = true;
    kg_outbound_init(&ob);
    kg_outbound_client_header(&ob, &in, "Accept", "*/*");
    kg_outbound_client_header(&ob, &in, "X-Empty", "");
    kg_outbound_client_header(&ob, &in, "X-Value-Colon", "a:");
    kg_outbound_client_header(&ob, &in, "X-Big", big);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_false(ob.unsendable);
    want = "Accept: */*\r\nX-Empty:\r\nX-Value-Colon: a:\r\nX-Big: ";
    assert_true(ob.lines_len > strlen(want) + 4999);
    assert_memory_equal(ob.lines, want, strlen(want));
    assert_memory_equal(ob.lines + strlen(want), big, 4999);
    assert_memory_equal(ob.lines + strlen(want) + 4999, "\r\nX-Forwarded-For: ", 19);
    assert_memory_equal(ob.lines + ob.lines_len - 2, "\r\n", 2);
    assert_null(memmem(ob.lines, ob.lines_len, "Expect", 6));
    /* curl's list of the same: the empty one as "Name;", a value's colon kept. */
    assert_int_equal(line_at(&ob, "X-Empty;"), 1);
    assert_int_equal(line_at(&ob, "X-Value-Colon: a:"), 2);
    kg_outbound_cleanup(&ob);

    kg_outbound_init(&ob);
    kg_outbound_client_header(&ob, &in, "X-Split", "a\r\nInjected: 1");
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_true(ob.unsendable);
    kg_outbound_cleanup(&ob);
    kg_outbound_init(&ob);
    kg_outbound_client_header(&ob, &in, "X Space", "1");
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_true(ob.unsendable);
    kg_outbound_cleanup(&ob);
    free(big);
}

static void
test_keygate_adds_forwarding_request_id_and_identity(void **state)
{
    struct fixture *f = *state;
    struct kg_outbound_in in = input(f);
    struct kg_outbound ob;

    in.xff = "203.0.113.9, 198.51.100.2";
    in.fwd_proto = "https"; /* from an untrusted peer: not believed */
    in.fwd_host = "evil.example";
    kg_outbound_init(&ob);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_int_equal(line_at(&ob, "X-Forwarded-For: 203.0.113.9, 198.51.100.2, 192.0.2.10"), 0);
    assert_int_equal(line_at(&ob, "X-Forwarded-Proto: http"), 1);
    assert_int_equal(line_at(&ob, "X-Forwarded-Host: api.example"), 2);
    assert_int_equal(line_at(&ob, "X-Request-Id: req-1"), 3);
    assert_int_equal(line_at(&ob, "X-Keygate-Key-Id: key_1"), 4);
    assert_int_equal(line_at(&ob, "X-Keygate-Tenant: acme"), 5);
    assert_int_equal(line_at(&ob, "X-Keygate-User-Id: usr_1"), 6);
    assert_int_equal(line_at(&ob, "X-Keygate-Scopes: read:items"), 7);
    assert_int_equal(line_at(&ob, "Accept:"), 8);
    assert_int_equal(line_at(&ob, "Expect:"), 9);
    kg_outbound_cleanup(&ob);

    /* Behind a trusted proxy its scheme and host are the client's. */
    in.trusted_peer = true;
    kg_outbound_init(&ob);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_true(line_at(&ob, "X-Forwarded-Proto: https") >= 0);
    assert_true(line_at(&ob, "X-Forwarded-Host: evil.example") >= 0);
    kg_outbound_cleanup(&ob);

    /* Our own TLS listener, no Host: https, and no X-Forwarded-Host. */
    in = input(f);
    in.tls = true;
    in.host = NULL;
    f->key.effective_str = ""; /* every scope: still sent, empty */
    kg_outbound_init(&ob);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_true(line_at(&ob, "X-Forwarded-Proto: https") >= 0);
    assert_false(has_name(&ob, "X-Forwarded-Host"));
    assert_true(line_at(&ob, "X-Keygate-Scopes;") >= 0);
    kg_outbound_cleanup(&ob);
}

static void
test_a_long_header_crosses_whole(void **state)
{
    struct fixture *f = *state;
    struct kg_outbound_in in = input(f);
    struct kg_outbound ob;
    char *value = malloc(5001), *line = malloc(5020);

    assert_non_null(value);
    assert_non_null(line);
    memset(value, 'j', 5000);
    value[5000] = '\0';
    snprintf(line, 5020, "Cookie: %s", value);
    kg_outbound_init(&ob);
    kg_outbound_client_header(&ob, &in, "Cookie", value);
    assert_int_equal(kg_outbound_finish(&ob, &in), KG_OK);
    assert_int_equal(line_at(&ob, line), 0);
    kg_outbound_cleanup(&ob);
    free(value);
    free(line);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_the_url_is_upstream_path_and_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_headers_are_filtered_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_header_block_is_the_request_heads_lines, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keygate_adds_forwarding_request_id_and_identity, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_long_header_crosses_whole, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
