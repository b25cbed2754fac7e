/* integration/test_leakcheck.c - CTest: integration_test_leakcheck.
 *
 * The check every integration test ends with (helpers/daemon.c: no key in
 * any log or in the store) is itself tested here: a key written whole, or
 * only 10 of its hidden characters, into a log of the daemon's directory is
 * found, and so is a credential a client of this process sent; the masked
 * form the CLI lists (prefix and last four) is not a leak; and a key at the
 * end of a 32 MiB file is found (the scan is one pass over the text, since a
 * store of 200,000 keys made the earlier memmem per window cost seconds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/daemon.h"
#include "helpers/http.h"

#define KEY_TAIL 51 /* as helpers/daemon.c: the shown and hidden characters */

/* Writes len bytes of text into NAME in d's directory (replacing it). */
static void
plant(struct kt_daemon *d, const char *name, const char *text, size_t len)
{
    char path[600];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", kt_daemon_dir(d), name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void
unplant(struct kt_daemon *d, const char *name)
{
    char path[600];

    snprintf(path, sizeof(path), "%s/%s", kt_daemon_dir(d), name);
    assert_int_equal(remove(path), 0);
}

static void
test_a_key_whole_or_in_part_is_found_and_its_masked_form_is_not(void **state)
{
    struct kt_daemon *d = kt_daemon_new("upstream http://127.0.0.1:9\n");
    struct kt_key key = {0};
    char why[512], text[256];
    size_t klen;
    const char *hidden;

    (void)state;
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "leak", NULL, NULL, &key));
    klen = strlen(key.key);
    assert_true(klen >= KEY_TAIL);
    hidden = key.key + klen - KEY_TAIL + 4;
    /* The store holds the digest only. */
    assert_false(kt_daemon_keys_leaked(d, why, sizeof(why)));

    snprintf(text, sizeof(text), "{\"msg\":\"request\",\"key\":\"%s\"}\n", key.key);
    plant(d, "planted.log", text, strlen(text));
    assert_true(kt_daemon_keys_leaked(d, why, sizeof(why)));
    assert_non_null(strstr(why, "key (created by the test) #1 found in planted.log"));
    /* The message shows where, never the key. */
    assert_null(strstr(why, hidden));

    snprintf(text, sizeof(text), "partial %.10s here\n", hidden + 17);
    plant(d, "planted.log", text, strlen(text));
    assert_true(kt_daemon_keys_leaked(d, why, sizeof(why)));

    snprintf(text, sizeof(text), "%.*s...%s\n", (int)(klen - KEY_TAIL + 4), key.key,
             key.key + klen - 4);
    plant(d, "planted.log", text, strlen(text));
    assert_false(kt_daemon_keys_leaked(d, why, sizeof(why)));

    unplant(d, "planted.log");
    assert_false(kt_daemon_keys_leaked(d, why, sizeof(why)));
    kt_key_cleanup(&key);
    kt_daemon_free(d);
}

static void
test_a_sent_credential_is_found_at_the_end_of_a_large_file(void **state)
{
    /* Well-formed but unknown: what a test presents as an invalid key. */
    static const char cred[] = "kg_test_Q7wXr2KdV9pLm4NbZt8YcHf3JsGa6EuRo1WiTy5Bn0MvDk";
    struct kt_daemon *d = kt_daemon_new("upstream http://127.0.0.1:9\n");
    size_t big = (size_t)32 << 20;
    char *text = malloc(big), line[128], why[512];
    uint64_t x = 0x9e3779b97f4a7c15ULL;

    (void)state;
    assert_non_null(d);
    assert_non_null(text);
    /* Bytes no key is in by chance (xorshift), then the credential's line. */
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text[i] = (char)(x >> 56);
    }
    snprintf(line, sizeof(line), "Authorization: Bearer %s", cred);
    kt_http_note_sent(line, strlen(line));
    plant(d, "big.log", text, big - 100);
    assert_false(kt_daemon_keys_leaked(d, why, sizeof(why)));
    memcpy(text + big - 100, cred, strlen(cred));
    plant(d, "big.log", text, big - 100 + strlen(cred));
    assert_true(kt_daemon_keys_leaked(d, why, sizeof(why)));
    assert_non_null(strstr(why, "credential (sent by the test)"));
    assert_non_null(strstr(why, "found in big.log"));
    unplant(d, "big.log");
    free(text);
    kt_daemon_free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_key_whole_or_in_part_is_found_and_its_masked_form_is_not),
        cmocka_unit_test(test_a_sent_credential_is_found_at_the_end_of_a_large_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
