/* tests/unit/http/test_clientip.c - src/http/clientip.c through
 * keygate/clientip.h: addresses and CIDR blocks (IPv4 and IPv6), and the
 * X-Forwarded-For walk that decides which client a request counts against. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "keygate/clientip.h"

static struct kg_ipaddr
ip(const char *s)
{
    struct kg_ipaddr a;

    if (!kg_clientip_parse(s, &a))
        fail_msg("\"%s\" should parse as an address", s);
    return a;
}

static struct kg_cidr
cidr(const char *s)
{
    struct kg_cidr c;

    if (!kg_clientip_cidr_parse(s, &c))
        fail_msg("\"%s\" should parse as a CIDR block", s);
    return c;
}

static void
assert_in(const char *block, const char *addr, bool want)
{
    struct kg_cidr c = cidr(block);
    struct kg_ipaddr a = ip(addr);

    if (kg_clientip_cidr_match(&c, &a) != want)
        fail_msg("%s should %sbe inside %s", addr, want ? "" : "not ", block);
}

/* Resolves with the trusted list given as text, expecting want. */
static void
assert_client(const char *const *trusted, size_t n, const char *peer, const char *xff,
              const char *want)
{
    struct kg_cidr list[8];
    struct kg_ipaddr p = ip(peer);
    char out[KG_CLIENTIP_MAX];

    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        list[i] = cidr(trusted[i]);
    kg_clientip_resolve(list, n, &p, xff, out, sizeof(out));
    if (strcmp(out, want) != 0)
        fail_msg("peer %s with X-Forwarded-For \"%s\" should be client %s, got %s", peer,
                 xff != NULL ? xff : "(none)", want, out);
}

static void
test_ipv4_and_ipv6_blocks_parse_and_bad_ones_are_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/08",
        "10.0.0.1/8",
        "fd00::1/8",
        "::/129",
        "10.0.0.0/8x",
        "example.com",
        "10.0.0.256",
        "10.0.0",
        "[::1]",
        "::ffff:10.0.0.0/104",
        "1.2.3.4 ",
    };
    struct kg_cidr c;

    (void)state;
    c = cidr("10.0.0.0/8");
    assert_int_equal(c.addr.family, AF_INET);
    assert_int_equal(c.prefix, 8);
    c = cidr("fd00::/8");
    assert_int_equal(c.addr.family, AF_INET6);
    assert_int_equal(c.prefix, 8);
    c = cidr("192.0.2.7");
    assert_int_equal(c.prefix, 32);
    c = cidr("2001:db8::1");
    assert_int_equal(c.prefix, 128);
    c = cidr("0.0.0.0/0");
    assert_int_equal(c.prefix, 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kg_clientip_cidr_parse(bad[i], &c))
            fail_msg("\"%s\" should be refused as a CIDR block", bad[i]);
}

static void
test_ipv4_blocks_match_on_their_prefix_bits_only(void **state)
{
    (void)state;
    assert_in("10.0.0.0/8", "10.255.1.2", true);
    assert_in("10.0.0.0/8", "11.0.0.0", false);
    assert_in("192.168.4.0/22", "192.168.7.255", true);
    assert_in("192.168.4.0/22", "192.168.8.0", false);
    assert_in("192.168.4.0/22", "192.168.3.255", false);
    assert_in("127.0.0.1/32", "127.0.0.1", true);
    assert_in("127.0.0.1/32", "127.0.0.2", false);
    assert_in("0.0.0.0/0", "203.0.113.9", true);
}

static void
test_ipv6_blocks_match_and_families_never_mix(void **state)
{
    (void)state;
    assert_in("2001:db8::/32", "2001:db8:ffff::1", true);
    assert_in("2001:db8::/32", "2001:db9::1", false);
    assert_in("fe80::/10", "febf::1", true);
    assert_in("fe80::/10", "fec0::1", false);
    assert_in("::1/128", "::1", true);
    assert_in("::/0", "10.0.0.1", false);
    assert_in("0.0.0.0/0", "::1", false);
}

static void
test_ipv4_mapped_ipv6_addresses_count_as_ipv4(void **state)
{
    struct sockaddr_in6 s6;
    struct kg_ipaddr a;
    char out[KG_CLIENTIP_MAX];

    (void)state;
    assert_in("10.0.0.0/8", "::ffff:10.1.2.3", true);
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.1", &s6.sin6_addr), 1);
    assert_true(kg_clientip_from_sockaddr((const struct sockaddr *)(const void *)&s6, &a));
    assert_int_equal(a.family, AF_INET);
    kg_clientip_format(&a, out, sizeof(out));
    assert_string_equal(out, "127.0.0.1");
}

static void
test_socket_addresses_of_both_families_are_read(void **state)
{
    struct sockaddr_in s4;
    struct sockaddr_in6 s6;
    struct sockaddr other = {.sa_family = AF_UNIX};
    struct kg_ipaddr a;
    char out[KG_CLIENTIP_MAX];

    (void)state;
    memset(&s4, 0, sizeof(s4));
    s4.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, "198.51.100.4", &s4.sin_addr), 1);
    assert_true(kg_clientip_from_sockaddr((const struct sockaddr *)(const void *)&s4, &a));
    kg_clientip_format(&a, out, sizeof(out));
    assert_string_equal(out, "198.51.100.4");
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::5", &s6.sin6_addr), 1);
    assert_true(kg_clientip_from_sockaddr((const struct sockaddr *)(const void *)&s6, &a));
    kg_clientip_format(&a, out, sizeof(out));
    assert_string_equal(out, "2001:db8::5");
    assert_false(kg_clientip_from_sockaddr(&other, &a));
    assert_false(kg_clientip_from_sockaddr(NULL, &a));
}

static void
test_an_untrusted_peer_is_the_client_whatever_its_forwarded_for_says(void **state)
{
    static const char *const trusted[] = {"10.0.0.0/8"};

    (void)state;
    assert_client(NULL, 0, "203.0.113.7", "198.51.100.1", "203.0.113.7");
    assert_client(trusted, 1, "203.0.113.7", "198.51.100.1, 10.0.0.1", "203.0.113.7");
    assert_client(trusted, 1, "203.0.113.7", NULL, "203.0.113.7");
}

static void
test_a_trusted_peer_hands_over_to_the_rightmost_untrusted_hop(void **state)
{
    static const char *const trusted[] = {"10.0.0.0/8", "fd00::/8"};

    (void)state;
    assert_client(trusted, 2, "10.0.0.1", "198.51.100.1", "198.51.100.1");
    /* The client wrote "1.1.1.1" itself; the first untrusted hop from the right is who it is. */
    assert_client(trusted, 2, "10.0.0.1", "1.1.1.1, 198.51.100.1, 10.9.9.9", "198.51.100.1");
    assert_client(trusted, 2, "10.0.0.1", "1.1.1.1,198.51.100.1,fd00::9", "198.51.100.1");
    assert_client(trusted, 2, "fd00::2", "2001:db8::77 , 10.0.0.3", "2001:db8::77");
}

static void
test_a_forwarded_chain_of_only_trusted_hops_ends_at_the_leftmost(void **state)
{
    static const char *const trusted[] = {"10.0.0.0/8"};

    (void)state;
    assert_client(trusted, 1, "10.0.0.1", "10.0.0.5, 10.0.0.6", "10.0.0.5");
}

static void
test_no_or_empty_forwarded_for_leaves_the_trusted_peer_as_the_client(void **state)
{
    static const char *const trusted[] = {"127.0.0.1/32"};

    (void)state;
    assert_client(trusted, 1, "127.0.0.1", NULL, "127.0.0.1");
    assert_client(trusted, 1, "127.0.0.1", "", "127.0.0.1");
}

static void
test_garbage_in_forwarded_for_stops_at_the_last_trusted_hop(void **state)
{
    static const char *const trusted[] = {"10.0.0.0/8"};

    (void)state;
    assert_client(trusted, 1, "10.0.0.1", "unknown", "10.0.0.1");
    assert_client(trusted, 1, "10.0.0.1", "198.51.100.1, junk, 10.0.0.2", "10.0.0.2");
    assert_client(trusted, 1, "10.0.0.1", "198.51.100.1, ", "10.0.0.1");
}

static void
test_ports_and_brackets_on_forwarded_entries_are_ignored(void **state)
{
    static const char *const trusted[] = {"10.0.0.0/8"};

    (void)state;
    assert_client(trusted, 1, "10.0.0.1", "198.51.100.1:4711", "198.51.100.1");
    assert_client(trusted, 1, "10.0.0.1", "[2001:db8::1]:443", "2001:db8::1");
    assert_client(trusted, 1, "10.0.0.1", "[2001:db8::1]", "2001:db8::1");
}

static void
test_forwarded_for_lines_are_joined_in_order(void **state)
{
    char buf[64] = "";

    (void)state;
    kg_clientip_xff_append(buf, sizeof(buf), "203.0.113.1");
    kg_clientip_xff_append(buf, sizeof(buf), "198.51.100.2, 10.0.0.1");
    assert_string_equal(buf, "203.0.113.1, 198.51.100.2, 10.0.0.1");
}

static void
test_a_full_forwarded_for_list_drops_its_left_most_entries(void **state)
{
    char buf[32] = "";

    (void)state;
    kg_clientip_xff_append(buf, sizeof(buf), "1.1.1.1, 2.2.2.2, 3.3.3.3");
    kg_clientip_xff_append(buf, sizeof(buf), "198.51.100.41");
    /* The proxy's hop stays; what the client padded goes first. */
    assert_string_equal(buf, "2.2.2.2, 3.3.3.3, 198.51.100.41");
    /* One value longer than the buffer keeps its right-most entries. */
    kg_clientip_xff_append(buf, sizeof(buf), "9.9.9.9, 8.8.8.8, 7.7.7.7, 6.6.6.6, 5.5.5.5");
    assert_string_equal(buf, "7.7.7.7, 6.6.6.6, 5.5.5.5");
    buf[0] = '\0';
    kg_clientip_xff_append(buf, sizeof(buf), "an-entry-without-any-comma-longer-than-the-buffer");
    assert_string_equal(buf, "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_and_ipv6_blocks_parse_and_bad_ones_are_refused),
        cmocka_unit_test(test_ipv4_blocks_match_on_their_prefix_bits_only),
        cmocka_unit_test(test_ipv6_blocks_match_and_families_never_mix),
        cmocka_unit_test(test_ipv4_mapped_ipv6_addresses_count_as_ipv4),
        cmocka_unit_test(test_socket_addresses_of_both_families_are_read),
        cmocka_unit_test(test_an_untrusted_peer_is_the_client_whatever_its_forwarded_for_says),
        cmocka_unit_test(test_a_trusted_peer_hands_over_to_the_rightmost_untrusted_hop),
        cmocka_unit_test(test_a_forwarded_chain_of_only_trusted_hops_ends_at_the_leftmost),
        cmocka_unit_test(test_no_or_empty_forwarded_for_leaves_the_trusted_peer_as_the_client),
        cmocka_unit_test(test_garbage_in_forwarded_for_stops_at_the_last_trusted_hop),
        cmocka_unit_test(test_ports_and_brackets_on_forwarded_entries_are_ignored),
        cmocka_unit_test(test_forwarded_for_lines_are_joined_in_order),
        cmocka_unit_test(test_a_full_forwarded_for_list_drops_its_left_most_entries),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
