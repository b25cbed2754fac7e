/* tests/unit/limit/test_connlimit.c - src/limit/connlimit.c through keygate/connlimit.h.
 *
 * The cap per IP, IPv4 and its IPv4-mapped IPv6 form counted as one,
 * entries given back to zero, and several threads taking and releasing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>

#include "keygate/connlimit.h"

static struct sockaddr_in
v4(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(1234)};

    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    return sa;
}

static struct sockaddr_in6
v6(const char *ip)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(99)};

    assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
    return sa;
}

static void
test_cap_per_ip(void **state)
{
    struct kg_connlimit *cl = NULL;
    struct kg_err err = {{0}};
    struct sockaddr_in a = v4("192.0.2.1"), b = v4("192.0.2.2");
    struct sockaddr_in6 a6 = v6("::ffff:192.0.2.1"), c6 = v6("2001:db8::1");

    (void)state;
    assert_int_equal(kg_connlimit_new(&cl, &err), KG_OK);
    for (int i = 0; i < 3; i++)
        assert_true(kg_connlimit_take(cl, (struct sockaddr *)&a, 3));
    assert_false(kg_connlimit_take(cl, (struct sockaddr *)&a, 3));
    /* The mapped form is the same client; other clients are not touched. */
    assert_false(kg_connlimit_take(cl, (struct sockaddr *)&a6, 3));
    assert_true(kg_connlimit_take(cl, (struct sockaddr *)&b, 3));
    assert_true(kg_connlimit_take(cl, (struct sockaddr *)&c6, 1));
    assert_false(kg_connlimit_take(cl, (struct sockaddr *)&c6, 1));
    assert_int_equal(kg_connlimit_count(cl, (struct sockaddr *)&a), 3);
    /* A cap lowered by a reload refuses more but takes nothing away. */
    assert_false(kg_connlimit_take(cl, (struct sockaddr *)&a, 2));
    assert_false(kg_connlimit_take(cl, (struct sockaddr *)&a, 0));
    kg_connlimit_release(cl, (struct sockaddr *)&a6);
    assert_int_equal(kg_connlimit_count(cl, (struct sockaddr *)&a), 2);
    assert_true(kg_connlimit_take(cl, (struct sockaddr *)&a, 3));
    for (int i = 0; i < 3; i++)
        kg_connlimit_release(cl, (struct sockaddr *)&a);
    assert_int_equal(kg_connlimit_count(cl, (struct sockaddr *)&a), 0);
    /* Releasing what was never taken changes nothing. */
    kg_connlimit_release(cl, (struct sockaddr *)&a);
    assert_int_equal(kg_connlimit_count(cl, (struct sockaddr *)&a), 0);
    kg_connlimit_free(cl);
}

struct worker {
    struct kg_connlimit *cl;
    int taken;
};

static void *
hammer(void *arg)
{
    struct worker *w = arg;
    struct sockaddr_in a = {.sin_family = AF_INET};

    a.sin_addr.s_addr = htonl(0xC0000201);
    for (int i = 0; i < 20000; i++) {
        if (kg_connlimit_take(w->cl, (struct sockaddr *)&a, 8)) {
            w->taken++;
            kg_connlimit_release(w->cl, (struct sockaddr *)&a);
        }
    }
    return NULL;
}

static void
test_threads_never_exceed_the_cap(void **state)
{
    struct kg_connlimit *cl = NULL;
    struct kg_err err = {{0}};
    struct worker w[4];
    pthread_t th[4];
    struct sockaddr_in a = v4("192.0.2.1");

    (void)state;
    assert_int_equal(kg_connlimit_new(&cl, &err), KG_OK);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.cl = cl};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].taken, 20000); /* 4 threads hold at most 4 < 8 at once */
    }
    assert_int_equal(kg_connlimit_count(cl, (struct sockaddr *)&a), 0);
    kg_connlimit_free(cl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_per_ip),
        cmocka_unit_test(test_threads_never_exceed_the_cap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
