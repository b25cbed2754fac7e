/* unit/console/test_session.c - CTest: unit_console_test_session.
 *
 * console/session.c: tokens, their digests and anti-CSRF tokens, the
 * cookie, and signing in, checking and ending sessions over a real store:
 * the same answer for every bad credential, sessions that end by time, by
 * idleness, at sign-out, and when the password changes or the user is
 * disabled, and the per-login throttle.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keygate/accounts.h"
#include "keygate/session.h"
#include "keygate/throttle.h"
#include "unit/fixture.h"

#define NOW INT64_C(1800000000)
#define TTL 43200
#define IDLE 3600
#define PASSWORD "Correct horse 42"

static int
setup(void **state)
{
    unsigned char bytes[KG_SECRET_BYTES];
    struct kg_fx_store *fx;
    struct kg_user_new u = {.username = "alice", .email = "alice@example.com"};
    struct kg_user_rec rec;
    struct kg_err err = {{0}};

    memset(bytes, 7, sizeof(bytes));
    fx = kg_fx_store_new("session", bytes, "cli:test");
    assert_int_equal(kg_accounts_user_create(&fx->kc, NULL, &u, NULL, NOW, &rec, NULL, NULL, &err),
                     KG_OK);
    assert_int_equal(
        kg_accounts_user_set_password(&fx->kc, NULL, rec.id, PASSWORD, NOW, &rec, &err), KG_OK);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    kg_fx_store_free(*state);
    return 0;
}

static void
test_tokens_are_43_url_safe_characters_and_differ(void **state)
{
    char a[KG_SESSION_TOKEN_LEN + 1], b[KG_SESSION_TOKEN_LEN + 1];

    (void)state;
    kg_session_new_token(a);
    kg_session_new_token(b);
    assert_int_equal(strlen(a), 43);
    assert_true(kg_session_token_ok(a));
    assert_string_not_equal(a, b);
    assert_false(kg_session_token_ok("short"));
    a[5] = '/';
    assert_false(kg_session_token_ok(a));
}

static void
test_digest_and_csrf_are_keyed_and_distinct(void **state)
{
    struct kg_fx_store *fx = *state;
    unsigned char other_bytes[KG_SECRET_BYTES], d1[32], d2[32];
    struct kg_secret *other = NULL;
    char tok[KG_SESSION_TOKEN_LEN + 1], c1[KG_SESSION_CSRF_LEN + 1], c2[KG_SESSION_CSRF_LEN + 1];

    memset(other_bytes, 9, sizeof(other_bytes));
    assert_int_equal(kg_digest_secret_from_bytes(other_bytes, &other), KG_OK);
    kg_session_new_token(tok);
    kg_session_digest(fx->secret, tok, d1);
    kg_session_digest(other, tok, d2);
    assert_memory_not_equal(d1, d2, 32);
    kg_session_csrf(fx->secret, tok, c1);
    kg_session_csrf(other, tok, c2);
    assert_string_not_equal(c1, c2);
    assert_int_equal(strlen(c1), 64);
    assert_true(kg_session_csrf_ok(fx->secret, tok, c1));
    assert_false(kg_session_csrf_ok(fx->secret, tok, c2));
    assert_false(kg_session_csrf_ok(fx->secret, tok, NULL));
    assert_false(kg_session_csrf_ok(fx->secret, tok, "abc"));
    c1[63] = c1[63] == '0' ? '1' : '0';
    assert_false(kg_session_csrf_ok(fx->secret, tok, c1));
    kg_digest_secret_free(other);
}

static void
test_cookie_header_parsing_finds_only_a_well_formed_token(void **state)
{
    char tok[KG_SESSION_TOKEN_LEN + 1], got[KG_SESSION_TOKEN_LEN + 1], hdr[200];

    (void)state;
    kg_session_new_token(tok);
    snprintf(hdr, sizeof(hdr), "a=b; keygate_console=%s; c=d", tok);
    assert_true(kg_session_cookie_token(hdr, got));
    assert_string_equal(got, tok);
    snprintf(hdr, sizeof(hdr), "keygate_console=%s", tok);
    assert_true(kg_session_cookie_token(hdr, got));
    assert_false(kg_session_cookie_token(NULL, got));
    assert_false(kg_session_cookie_token("keygate_console=short", got));
    assert_false(kg_session_cookie_token("xkeygate_console=abc", got));
    assert_false(kg_session_cookie_token("", got));
}

static void
test_a_session_ends_at_its_ttl_and_after_idle_time(void **state)
{
    struct kg_session_rec r = {.created_at = NOW, .expires_at = NOW + TTL, .last_seen_at = NOW};

    (void)state;
    assert_true(kg_session_alive(&r, NOW, IDLE));
    assert_true(kg_session_alive(&r, NOW + IDLE - 1, IDLE));
    assert_false(kg_session_alive(&r, NOW + IDLE, IDLE));
    r.last_seen_at = NOW + TTL - 10;
    assert_true(kg_session_alive(&r, NOW + TTL - 1, IDLE));
    assert_false(kg_session_alive(&r, NOW + TTL, IDLE));
}

static enum kg_status
signin(struct kg_fx_store *fx, const struct kg_session_throttles *th, const char *login,
       const char *pw, int64_t now, char tok[KG_SESSION_TOKEN_LEN + 1], struct kg_err *err)
{
    struct kg_user_rec u;
    int64_t retry = 0;

    return kg_session_signin(fx->store, fx->secret, th, "192.0.2.1", login, pw, now, now * 1000,
                             TTL, &u, tok, &retry, err);
}

static void
test_sign_in_by_email_or_username_and_check(void **state)
{
    struct kg_fx_store *fx = *state;
    char tok[KG_SESSION_TOKEN_LEN + 1];
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    assert_int_equal(signin(fx, NULL, "Alice@Example.com", PASSWORD, NOW, tok, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok, NOW + 5, IDLE, &u, &err), KG_OK);
    assert_string_equal(u.username, "alice");
    assert_int_equal(signin(fx, NULL, "alice", PASSWORD, NOW, tok, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok, NOW + 5, IDLE, &u, &err), KG_OK);
}

static void
test_every_bad_credential_gets_the_same_answer(void **state)
{
    struct kg_fx_store *fx = *state;
    char tok[KG_SESSION_TOKEN_LEN + 1];
    struct kg_err e1 = {{0}}, e2 = {{0}}, e3 = {{0}};

    assert_int_equal(signin(fx, NULL, "alice", "Wrong password 1", NOW, tok, &e1), KG_ENOTFOUND);
    assert_int_equal(signin(fx, NULL, "nobody", "Wrong password 1", NOW, tok, &e2), KG_ENOTFOUND);
    assert_int_equal(signin(fx, NULL, "x@nowhere.example", PASSWORD, NOW, tok, &e3), KG_ENOTFOUND);
    assert_string_equal(e1.msg, KG_SESSION_BAD_LOGIN);
    assert_string_equal(e2.msg, e1.msg);
    assert_string_equal(e3.msg, e1.msg);
    assert_string_equal(tok, "");
}

static void
test_sessions_end_by_idleness_ttl_and_sign_out(void **state)
{
    struct kg_fx_store *fx = *state;
    char tok[KG_SESSION_TOKEN_LEN + 1];
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    assert_int_equal(signin(fx, NULL, "alice", PASSWORD, NOW, tok, &err), KG_OK);
    /* Used within the idle time, again and again, until the TTL. */
    for (int64_t t = NOW + IDLE - 1; t < NOW + TTL; t += IDLE - 1)
        assert_int_equal(kg_session_check(fx->store, fx->secret, tok, t, IDLE, &u, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok, NOW + TTL, IDLE, &u, &err),
                     KG_ENOTFOUND);
    assert_int_equal(signin(fx, NULL, "alice", PASSWORD, NOW, tok, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok, NOW + IDLE, IDLE, &u, &err),
                     KG_ENOTFOUND);
    assert_int_equal(signin(fx, NULL, "alice", PASSWORD, NOW, tok, &err), KG_OK);
    assert_int_equal(kg_session_end(fx->store, fx->secret, tok, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok, NOW + 1, IDLE, &u, &err),
                     KG_ENOTFOUND);
}

static void
test_password_change_and_disabling_end_sessions(void **state)
{
    struct kg_fx_store *fx = *state;
    char tok[KG_SESSION_TOKEN_LEN + 1], tok2[KG_SESSION_TOKEN_LEN + 1];
    struct kg_user_rec u;
    struct kg_err err = {{0}};

    assert_int_equal(signin(fx, NULL, "alice", PASSWORD, NOW, tok, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok, NOW + 1, IDLE, &u, &err), KG_OK);
    assert_int_equal(
        kg_accounts_user_set_password(&fx->kc, NULL, u.id, "Another pass 77", NOW + 2, &u, &err),
        KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok, NOW + 3, IDLE, &u, &err),
                     KG_ENOTFOUND);
    assert_int_equal(signin(fx, NULL, "alice", PASSWORD, NOW + 4, tok, &err), KG_ENOTFOUND);
    assert_int_equal(signin(fx, NULL, "alice", "Another pass 77", NOW + 4, tok2, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok2, NOW + 5, IDLE, &u, &err), KG_OK);
    assert_int_equal(kg_accounts_user_disable(&fx->kc, NULL, u.id, NOW + 6, &u, &err), KG_OK);
    assert_int_equal(kg_session_check(fx->store, fx->secret, tok2, NOW + 7, IDLE, &u, &err),
                     KG_ENOTFOUND);
    assert_int_equal(signin(fx, NULL, "alice", "Another pass 77", NOW + 8, tok2, &err),
                     KG_ENOTFOUND);
}

static void
test_a_login_cools_down_after_its_failures_whoever_asks(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_session_throttles th = {0};
    char tok[KG_SESSION_TOKEN_LEN + 1];
    struct kg_user_rec u;
    struct kg_err err = {{0}};
    int64_t retry = 0;

    assert_int_equal(kg_throttle_new(2, 60000, 64, &th.login_failures, &err), KG_OK);
    assert_int_equal(kg_throttle_new(1, 60000, 64, &th.login_cooldown, &err), KG_OK);
    assert_int_equal(signin(fx, &th, "alice", "Wrong password 1", NOW, tok, &err), KG_ENOTFOUND);
    assert_int_equal(signin(fx, &th, "ALICE", "Wrong password 2", NOW, tok, &err), KG_ENOTFOUND);
    /* Cooling down: even the right password from another address waits. */
    assert_int_equal(kg_session_signin(fx->store, fx->secret, &th, "198.51.100.9", "alice",
                                       PASSWORD, NOW, NOW * 1000 + 1, TTL, &u, tok, &retry, &err),
                     KG_ELIMIT);
    assert_true(retry > 0);
    assert_int_equal(kg_session_signin(fx->store, fx->secret, &th, "198.51.100.9", "alice",
                                       PASSWORD, NOW + 61, (NOW + 61) * 1000, TTL, &u, tok, &retry,
                                       &err),
                     KG_OK);
    kg_throttle_free(th.login_failures);
    kg_throttle_free(th.login_cooldown);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_are_43_url_safe_characters_and_differ),
        cmocka_unit_test_setup_teardown(test_digest_and_csrf_are_keyed_and_distinct, setup,
                                        teardown),
        cmocka_unit_test(test_cookie_header_parsing_finds_only_a_well_formed_token),
        cmocka_unit_test(test_a_session_ends_at_its_ttl_and_after_idle_time),
        cmocka_unit_test_setup_teardown(test_sign_in_by_email_or_username_and_check, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_every_bad_credential_gets_the_same_answer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sessions_end_by_idleness_ttl_and_sign_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_password_change_and_disabling_end_sessions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_login_cools_down_after_its_failures_whoever_asks,
                                        setup, teardown),
    };

    kg_fx_clear_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
