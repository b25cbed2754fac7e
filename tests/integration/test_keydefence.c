/* tests/integration/test_keydefence.c - per-key IP allowlists and canary
 * keys (issue 18, items 3 and 4) on a running daemon.
 *
 * gw trusts 127.0.0.1 as a proxy, so each test names its client through
 * X-Forwarded-For (the address the throttle sees is the one the allowlist
 * sees); gwu trusts nobody and answers in the error style, so there every
 * request comes from 127.0.0.1 whatever X-Forwarded-For says.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define DETAIL_IP "{\"detail\": \"API key is not allowed from this address.\"}"
#define ERROR_IP                                                                                   \
    "{\"error\": {\"type\": \"permission_error\", \"message\": \"API key is not allowed from "     \
    "this address\"}}"
/* Well formed (the checksum holds) and in no store. */
#define UNKNOWN_KEY_NAME "unknown"

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;
    struct kt_daemon *gwu;
    struct kt_key v4;      /* gw: --allow-ip 198.51.100.0/24,203.0.113.7 */
    struct kt_key v6;      /* gw: --allow-ip 2001:db8:1::/48 */
    struct kt_key local;   /* gwu: --allow-ip 127.0.0.1 */
    struct kt_key away;    /* gwu: --allow-ip 192.0.2.0/24 */
    struct kt_key canary;  /* gw: --canary */
    struct kt_key gone;    /* gw: made, then revoked: an unknown key as far as answers go */
    struct kt_key changed; /* gw: no list; one is added with keys update */
};

static struct world W;
static struct kt_http_resp R;

static long
get_as(struct kt_daemon *d, const char *client, const char *key)
{
    char xff[128];
    const char *headers[] = {client != NULL ? xff : NULL, NULL};

    if (client != NULL)
        snprintf(xff, sizeof(xff), "X-Forwarded-For: %s", client);
    kt_http_resp_cleanup(&R);
    if (!kt_http_get_key(kt_daemon_url(d, "/v1/items"), key, headers, &R))
        fail_msg("GET as %s got no answer", client != NULL ? client : "the peer");
    return R.status;
}

static int teardown(void **state);

static int
setup(void **state)
{
    char cfg[512];

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL)
        goto fail;
    snprintf(cfg, sizeof(cfg), "upstream %s\ntrusted_proxies 127.0.0.1/32\n",
             kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    snprintf(cfg, sizeof(cfg), "upstream %s\nerror_style error\n", kt_upstream_url(W.up));
    W.gwu = kt_daemon_new(cfg);
    if (W.gw == NULL || W.gwu == NULL)
        goto fail;
    if (!kt_daemon_key_cli(W.gw,
                           (const char *const[]){"keys", "create", "--name", "v4", "--allow-ip",
                                                 "198.51.100.0/24, 203.0.113.7", "--json", NULL},
                           &W.v4) ||
        !kt_daemon_key_cli(W.gw,
                           (const char *const[]){"keys", "create", "--name", "v6", "--allow-ip",
                                                 "2001:db8:1::/48", "--json", NULL},
                           &W.v6) ||
        !kt_daemon_key_cli(W.gwu,
                           (const char *const[]){"keys", "create", "--name", "local", "--allow-ip",
                                                 "127.0.0.1", "--json", NULL},
                           &W.local) ||
        !kt_daemon_key_cli(W.gwu,
                           (const char *const[]){"keys", "create", "--name", "away", "--allow-ip",
                                                 "192.0.2.0/24", "--json", NULL},
                           &W.away) ||
        !kt_daemon_key_cli(
            W.gw,
            (const char *const[]){"keys", "create", "--name", "canary", "--canary", "--json", NULL},
            &W.canary) ||
        !kt_daemon_create_key(W.gw, UNKNOWN_KEY_NAME, NULL, NULL, &W.gone) ||
        !kt_daemon_revoke_key(W.gw, W.gone.id) ||
        !kt_daemon_create_key(W.gw, "changed", NULL, NULL, &W.changed))
        goto fail;
    if (!kt_daemon_start(W.gw) || !kt_daemon_start(W.gwu))
        goto fail;
    return 0;

fail:
    teardown(state);
    return -1;
}

static int
teardown(void **state)
{
    (void)state;
    kt_http_resp_cleanup(&R);
    kt_daemon_free(W.gw);
    kt_daemon_free(W.gwu);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.v4);
    kt_key_cleanup(&W.v6);
    kt_key_cleanup(&W.local);
    kt_key_cleanup(&W.away);
    kt_key_cleanup(&W.canary);
    kt_key_cleanup(&W.gone);
    kt_key_cleanup(&W.changed);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

static void
test_ipv4_allowlist_admits_its_blocks_and_refuses_others_with_403(void **state)
{
    size_t seen;

    (void)state;
    assert_int_equal(get_as(W.gw, "198.51.100.23", W.v4.key), 200);
    assert_int_equal(get_as(W.gw, "203.0.113.7", W.v4.key), 200);
    seen = kt_upstream_count(W.up);
    assert_int_equal(get_as(W.gw, "203.0.113.8", W.v4.key), 403);
    assert_string_equal(R.body, DETAIL_IP);
    assert_int_equal(get_as(W.gw, "198.51.101.1", W.v4.key), 403);
    /* An IPv6 client never matches an IPv4 block. */
    assert_int_equal(get_as(W.gw, "2001:db8:1::5", W.v4.key), 403);
    assert_int_equal(kt_upstream_count(W.up), seen);
}

static void
test_ipv6_allowlist_admits_its_block_and_refuses_others(void **state)
{
    (void)state;
    assert_int_equal(get_as(W.gw, "2001:db8:1:ffff::1", W.v6.key), 200);
    assert_int_equal(get_as(W.gw, "2001:db8:2::1", W.v6.key), 403);
    assert_string_equal(R.body, DETAIL_IP);
    assert_int_equal(get_as(W.gw, "198.51.100.23", W.v6.key), 403);
}

/* Without trusted proxies the client is the socket peer: X-Forwarded-For
 * cannot move a request into the allowed block. Error style applies. */
static void
test_untrusted_peer_cannot_claim_an_allowed_address_and_error_style_applies(void **state)
{
    (void)state;
    assert_int_equal(get_as(W.gwu, NULL, W.local.key), 200);
    assert_int_equal(get_as(W.gwu, "192.0.2.10", W.away.key), 403);
    assert_string_equal(R.body, ERROR_IP);
    assert_int_equal(get_as(W.gwu, NULL, W.away.key), 403);
}

/* A list added with keys update reaches the running daemon (the change
 * log) and is enforced; "any" takes it away again. */
static void
test_allowlist_added_and_removed_by_update_applies_within_a_second(void **state)
{
    struct kt_cli_result r;
    int i;

    (void)state;
    assert_int_equal(get_as(W.gw, "192.0.2.1", W.changed.key), 200);
    assert_true(kt_daemon_cli(
        W.gw, &r,
        (const char *const[]){"keys", "update", W.changed.id, "--allow-ip", "10.0.0.0/8", NULL}));
    assert_int_equal(r.exit_code, 0);
    kt_cli_result_cleanup(&r);
    for (i = 0; i < 40 && get_as(W.gw, "192.0.2.1", W.changed.key) != 403; i++)
        kt_sleep_ms(50);
    assert_int_equal(R.status, 403);
    assert_int_equal(get_as(W.gw, "10.1.2.3", W.changed.key), 200);
    assert_true(kt_daemon_cli(
        W.gw, &r,
        (const char *const[]){"keys", "update", W.changed.id, "--allow-ip", "any", NULL}));
    assert_int_equal(r.exit_code, 0);
    kt_cli_result_cleanup(&r);
    for (i = 0; i < 40 && get_as(W.gw, "192.0.2.1", W.changed.key) != 200; i++)
        kt_sleep_ms(50);
    assert_int_equal(R.status, 200);
}

static void
test_allow_ip_refuses_a_malformed_block_with_one_line(void **state)
{
    struct kt_cli_result r;

    (void)state;
    assert_true(kt_daemon_cli(W.gw, &r,
                              (const char *const[]){"keys", "create", "--name", "bad", "--allow-ip",
                                                    "10.0.0.1/8", NULL}));
    assert_int_not_equal(r.exit_code, 0);
    assert_non_null(strstr(r.err, "allowed_ips: 10.0.0.1/8 is not an address block"));
    assert_int_equal(strchr(r.err, '\n') - r.err + 1, (long)strlen(r.err));
    kt_cli_result_cleanup(&r);
}

/* A canary's answer is the unknown key's, byte for byte: status, headers
 * (but Date) and body; and nothing reaches the upstream. */
static void
test_canary_use_is_the_same_401_as_an_unknown_key_byte_for_byte(void **state)
{
    char *canary_headers, *unknown_headers, *canary_body;
    long canary_status;
    size_t seen;
    char *p;

    (void)state;
    seen = kt_upstream_count(W.up);
    canary_status = get_as(W.gw, "192.0.2.50", W.canary.key);
    canary_headers = strdup(R.headers);
    canary_body = strdup(R.body);
    assert_int_equal(get_as(W.gw, "192.0.2.51", W.gone.key), canary_status);
    assert_int_equal(canary_status, 401);
    unknown_headers = strdup(R.headers);
    assert_string_equal(canary_body, R.body);
    /* Date may differ by a second and each request has an id of its own:
     * blank those two values in both. */
    for (char *h = canary_headers; h != NULL; h = h == canary_headers ? unknown_headers : NULL)
        for (int f = 0; f < 2; f++)
            if ((p = strstr(h, f == 0 ? "Date: " : "X-Request-Id: ")) != NULL)
                for (p = strchr(p, ' ') + 1; *p != '\r' && *p != '\0'; p++)
                    *p = 'x';
    assert_string_equal(canary_headers, unknown_headers);
    assert_int_equal(kt_upstream_count(W.up), seen);
    free(canary_headers);
    free(unknown_headers);
    free(canary_body);
}

static void
test_key_document_shows_canary_and_allowed_ips(void **state)
{
    json_t *o;

    (void)state;
    o = kt_daemon_cli_json(W.gw, (const char *const[]){"keys", "show", W.v4.id, "--json", NULL});
    assert_false(json_is_true(json_object_get(o, "canary")));
    assert_int_equal(json_array_size(json_object_get(o, "allowed_ips")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "allowed_ips"), 0)),
                        "198.51.100.0/24");
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "allowed_ips"), 1)),
                        "203.0.113.7/32");
    json_decref(o);
    o = kt_daemon_cli_json(W.gw,
                           (const char *const[]){"keys", "show", W.canary.id, "--json", NULL});
    assert_true(json_is_true(json_object_get(o, "canary")));
    assert_int_equal(json_array_size(json_object_get(o, "allowed_ips")), 0);
    json_decref(o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_allowlist_admits_its_blocks_and_refuses_others_with_403),
        cmocka_unit_test(test_ipv6_allowlist_admits_its_block_and_refuses_others),
        cmocka_unit_test(
            test_untrusted_peer_cannot_claim_an_allowed_address_and_error_style_applies),
        cmocka_unit_test(test_allowlist_added_and_removed_by_update_applies_within_a_second),
        cmocka_unit_test(test_allow_ip_refuses_a_malformed_block_with_one_line),
        cmocka_unit_test(test_canary_use_is_the_same_401_as_an_unknown_key_byte_for_byte),
        cmocka_unit_test(test_key_document_shows_canary_and_allowed_ips),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
