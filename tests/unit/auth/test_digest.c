/* tests/unit/auth/test_digest.c - src/auth/digest.c through keygate/digest.h.
 *
 * The expected digest was computed once outside keygate (Python's
 * hashlib.blake2b with key=, digest_size=32) and is checked here against
 * libsodium's crypto_generichash too, so a change of algorithm, key use or
 * length shows up as a failure: every stored digest depends on it. Secret
 * files live in a fresh temporary directory per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "keygate/digest.h"
#include "unit/fixture.h"

/* 32 bytes of secret, written as text so the raw-file test can reuse it. */
static const unsigned char test_secret[KG_SECRET_BYTES] = "keygate digest unit test secret!";
static const char test_secret_hex[] =
    "6b6579676174652064696765737420756e697420746573742073656372657421";

/* A well-formed key (see test_keyfmt.c) and its digest under test_secret. */
static const char test_key[] = "kg_Q7zR2mXw9LpT4vKc8NdYb3HsA1b2C3d4E5f6G7h8I9jecc25ceb";
static const char test_key_digest_hex[] =
    "252afc3a4332fa1dda3ba607a81a1f9d73ca28ada4a16c87277bb05bcf6de996";

struct fixture {
    char dir[64];
    char path[128]; /* dir/data/secret: data/ does not exist yet */
};

static int
group_setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    if (kg_fx_mkdtemp(f->dir, "digest") != 0) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/data/secret", f->dir);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    kg_fx_rmtree(f->dir);
    free(f);
    return 0;
}

/* Writes len bytes to path (creating dir/data first), mode 0600. */
static void
write_file(struct fixture *f, const void *data, size_t len)
{
    char dir[160];
    int fd;

    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    if (mkdir(dir, 0700) != 0 && access(dir, F_OK) != 0)
        fail_msg("cannot create %s", dir);
    fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void
hex_of(const unsigned char d[KG_DIGEST_BYTES], char out[2 * KG_DIGEST_BYTES + 1])
{
    sodium_bin2hex(out, 2 * KG_DIGEST_BYTES + 1, d, KG_DIGEST_BYTES);
}

static struct kg_secret *
secret_of(const unsigned char bytes[KG_SECRET_BYTES])
{
    struct kg_secret *s = NULL;

    assert_int_equal(kg_digest_secret_from_bytes(bytes, &s), KG_OK);
    assert_non_null(s);
    return s;
}

static void
digest_hex(const struct kg_secret *s, const char *key, char out[2 * KG_DIGEST_BYTES + 1])
{
    unsigned char d[KG_DIGEST_BYTES];

    kg_digest_compute(s, key, strlen(key), d);
    hex_of(d, out);
}

/* Loads f->path, failing the test with the module's words on error. */
static struct kg_secret *
load(struct fixture *f, bool may_create, bool *created)
{
    struct kg_err err = {{0}};
    struct kg_secret *s = NULL;
    enum kg_status rc = kg_digest_secret_load(f->path, may_create, &s, created, &err);

    if (rc != KG_OK)
        fail_msg("loading the secret should succeed, got %s: %s", kg_status_str(rc), err.msg);
    assert_non_null(s);
    return s;
}

static void
assert_load_fails(struct fixture *f, bool may_create, enum kg_status want)
{
    struct kg_err err = {{0}};
    struct kg_secret *s = (struct kg_secret *)&err; /* must be reset to NULL */
    enum kg_status rc = kg_digest_secret_load(f->path, may_create, &s, NULL, &err);

    if (rc != want)
        fail_msg("loading should give %s, got %s (%s)", kg_status_str(want), kg_status_str(rc),
                 err.msg);
    assert_null(s);
    assert_true(err.msg[0] != '\0');
    /* The message names the file, so an operator knows which one. */
    assert_non_null(strstr(err.msg, f->path));
}

static void
test_digest_matches_the_fixed_vector_and_crypto_generichash(void **state)
{
    struct kg_secret *s = secret_of(test_secret);
    unsigned char want[KG_DIGEST_BYTES];
    char hex[2 * KG_DIGEST_BYTES + 1], want_hex[2 * KG_DIGEST_BYTES + 1];

    (void)state;
    crypto_generichash(want, sizeof(want), (const unsigned char *)test_key, strlen(test_key),
                       test_secret, sizeof(test_secret));
    hex_of(want, want_hex);
    assert_string_equal(want_hex, test_key_digest_hex);
    digest_hex(s, test_key, hex);
    assert_string_equal(hex, test_key_digest_hex);
    kg_digest_secret_free(s);
}

static void
test_digest_is_stable_for_the_same_secret_and_key(void **state)
{
    struct kg_secret *a = secret_of(test_secret);
    struct kg_secret *b = secret_of(test_secret);
    char h1[2 * KG_DIGEST_BYTES + 1], h2[2 * KG_DIGEST_BYTES + 1], h3[2 * KG_DIGEST_BYTES + 1];

    (void)state;
    digest_hex(a, test_key, h1);
    digest_hex(a, test_key, h2);
    digest_hex(b, test_key, h3);
    assert_string_equal(h1, h2);
    assert_string_equal(h1, h3);
    kg_digest_secret_free(a);
    kg_digest_secret_free(b);
}

static void
test_digest_depends_on_the_secret(void **state)
{
    unsigned char other[KG_SECRET_BYTES];
    struct kg_secret *a = secret_of(test_secret);
    struct kg_secret *b;
    char h1[2 * KG_DIGEST_BYTES + 1], h2[2 * KG_DIGEST_BYTES + 1];

    (void)state;
    memcpy(other, test_secret, sizeof(other));
    other[KG_SECRET_BYTES - 1] ^= 1; /* one bit of pepper */
    b = secret_of(other);
    digest_hex(a, test_key, h1);
    digest_hex(b, test_key, h2);
    assert_string_not_equal(h1, h2);
    kg_digest_secret_free(a);
    kg_digest_secret_free(b);
}

static void
test_digest_differs_for_a_key_one_char_different(void **state)
{
    struct kg_secret *s = secret_of(test_secret);
    char key[sizeof(test_key)];
    char h1[2 * KG_DIGEST_BYTES + 1], h2[2 * KG_DIGEST_BYTES + 1];

    (void)state;
    digest_hex(s, test_key, h1);
    for (size_t pos = 0; pos < sizeof(test_key) - 1; pos++) {
        memcpy(key, test_key, sizeof(key));
        key[pos] = key[pos] == 'A' ? 'B' : 'A';
        digest_hex(s, key, h2);
        if (strcmp(h1, h2) == 0)
            fail_msg("changing position %zu should change the digest", pos);
    }
    kg_digest_secret_free(s);
}

static void
test_digest_covers_exactly_len_bytes(void **state)
{
    struct kg_secret *s = secret_of(test_secret);
    char buf[sizeof(test_key) + 4];
    unsigned char d1[KG_DIGEST_BYTES], d2[KG_DIGEST_BYTES];

    (void)state;
    snprintf(buf, sizeof(buf), "%sXYZ", test_key);
    kg_digest_compute(s, test_key, strlen(test_key), d1);
    kg_digest_compute(s, buf, strlen(test_key), d2);
    assert_true(kg_digest_equal(d1, d2));
    kg_digest_compute(s, buf, strlen(test_key) + 1, d2);
    assert_false(kg_digest_equal(d1, d2));
    kg_digest_secret_free(s);
}

static void
test_digest_equal_compares_every_byte(void **state)
{
    unsigned char a[KG_DIGEST_BYTES], b[KG_DIGEST_BYTES];

    (void)state;
    for (size_t i = 0; i < KG_DIGEST_BYTES; i++)
        a[i] = (unsigned char)(i * 7 + 3);
    memcpy(b, a, sizeof(b));
    assert_true(kg_digest_equal(a, b));
    for (size_t i = 0; i < KG_DIGEST_BYTES; i++) {
        b[i] ^= 0x80;
        if (kg_digest_equal(a, b))
            fail_msg("digests differing in byte %zu should not be equal", i);
        b[i] ^= 0x80;
    }
    assert_true(kg_digest_equal(a, b));
}

static void
test_secret_file_is_created_0600_in_a_0700_directory_when_allowed(void **state)
{
    struct fixture *f = *state;
    char dir[160], text[256];
    bool created = false;
    struct kg_secret *s;
    struct stat sb;
    FILE *fp;
    size_t n;

    s = load(f, true, &created);
    assert_true(created);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    assert_int_equal(stat(dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);

    fp = fopen(f->path, "r");
    assert_non_null(fp);
    n = fread(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    text[n] = '\0';
    /* 64 lower-case hex characters, then at most white space. */
    assert_true(n >= 64);
    assert_int_equal(strspn(text, "0123456789abcdef"), 64);
    assert_int_equal(strspn(text + 64, " \t\r\n"), n - 64);
    sodium_memzero(text, sizeof(text));
    kg_digest_secret_free(s);
}

static void
test_a_created_secret_loads_back_with_the_same_digests(void **state)
{
    struct fixture *f = *state;
    unsigned char raw[KG_SECRET_BYTES];
    char text[128], h1[2 * KG_DIGEST_BYTES + 1], h2[2 * KG_DIGEST_BYTES + 1],
        h3[2 * KG_DIGEST_BYTES + 1];
    bool created = true;
    struct kg_secret *a, *b, *c;
    size_t binlen = 0;
    FILE *fp;
    size_t n;

    a = load(f, true, NULL);
    digest_hex(a, test_key, h1);

    b = load(f, false, &created);
    assert_false(created);
    digest_hex(b, test_key, h2);
    assert_string_equal(h1, h2);

    /* The file holds the secret itself, as hex. */
    fp = fopen(f->path, "r");
    assert_non_null(fp);
    n = fread(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    text[n] = '\0';
    assert_int_equal(sodium_hex2bin(raw, sizeof(raw), text, 64, NULL, &binlen, NULL), 0);
    assert_int_equal(binlen, KG_SECRET_BYTES);
    c = secret_of(raw);
    digest_hex(c, test_key, h3);
    assert_string_equal(h1, h3);

    /* A fresh secret is random: not the test secret's digest. */
    assert_string_not_equal(h1, test_key_digest_hex);
    sodium_memzero(text, sizeof(text));
    sodium_memzero(raw, sizeof(raw));
    kg_digest_secret_free(a);
    kg_digest_secret_free(b);
    kg_digest_secret_free(c);
}

static void
test_an_existing_secret_is_never_replaced_even_when_creation_is_allowed(void **state)
{
    struct fixture *f = *state;
    char line[80], h[2 * KG_DIGEST_BYTES + 1];
    bool created = true;
    struct kg_secret *s;

    snprintf(line, sizeof(line), "%s\n", test_secret_hex);
    write_file(f, line, strlen(line));
    s = load(f, true, &created);
    assert_false(created);
    digest_hex(s, test_key, h);
    assert_string_equal(h, test_key_digest_hex);
    kg_digest_secret_free(s);
}

static void
test_a_missing_secret_without_may_create_is_not_found_and_creates_nothing(void **state)
{
    struct fixture *f = *state;
    char dir[160];

    assert_load_fails(f, false, KG_ENOTFOUND);
    assert_int_equal(access(f->path, F_OK), -1);
    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    assert_int_equal(access(dir, F_OK), -1);
}

static void
test_hex_secret_with_surrounding_white_space_is_accepted(void **state)
{
    struct fixture *f = *state;
    char text[128], h[2 * KG_DIGEST_BYTES + 1];
    struct kg_secret *s;

    snprintf(text, sizeof(text), "  \t%s\r\n\n", test_secret_hex);
    write_file(f, text, strlen(text));
    s = load(f, false, NULL);
    digest_hex(s, test_key, h);
    assert_string_equal(h, test_key_digest_hex);
    kg_digest_secret_free(s);
}

static void
test_hex_secret_without_a_newline_is_accepted(void **state)
{
    struct fixture *f = *state;
    char h[2 * KG_DIGEST_BYTES + 1];
    struct kg_secret *s;

    write_file(f, test_secret_hex, 64);
    s = load(f, false, NULL);
    digest_hex(s, test_key, h);
    assert_string_equal(h, test_key_digest_hex);
    kg_digest_secret_free(s);
}

static void
test_upper_case_hex_secret_is_accepted(void **state)
{
    struct fixture *f = *state;
    char text[80], h[2 * KG_DIGEST_BYTES + 1];
    struct kg_secret *s;

    for (size_t i = 0; i < 64; i++)
        text[i] =
            (char)((test_secret_hex[i] >= 'a') ? test_secret_hex[i] - 32 : test_secret_hex[i]);
    text[64] = '\n';
    write_file(f, text, 65);
    s = load(f, false, NULL);
    digest_hex(s, test_key, h);
    assert_string_equal(h, test_key_digest_hex);
    kg_digest_secret_free(s);
}

static void
test_32_raw_bytes_are_accepted_as_the_secret(void **state)
{
    struct fixture *f = *state;
    char h[2 * KG_DIGEST_BYTES + 1];
    struct kg_secret *s;

    write_file(f, test_secret, KG_SECRET_BYTES);
    s = load(f, false, NULL);
    digest_hex(s, test_key, h);
    assert_string_equal(h, test_key_digest_hex);
    kg_digest_secret_free(s);
}

static void
test_32_raw_bytes_of_any_value_are_accepted(void **state)
{
    struct fixture *f = *state;
    unsigned char raw[KG_SECRET_BYTES];
    unsigned char d1[KG_DIGEST_BYTES], d2[KG_DIGEST_BYTES];
    struct kg_secret *a, *b;

    /* NUL, newline and high bytes: raw means raw. */
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)(i * 37);
    raw[5] = '\n';
    write_file(f, raw, sizeof(raw));
    a = load(f, false, NULL);
    b = secret_of(raw);
    kg_digest_compute(a, test_key, strlen(test_key), d1);
    kg_digest_compute(b, test_key, strlen(test_key), d2);
    assert_true(kg_digest_equal(d1, d2));
    kg_digest_secret_free(a);
    kg_digest_secret_free(b);
}

static void
test_malformed_secret_files_are_corrupt(void **state)
{
    struct fixture *f = *state;
    char text[200];
    static const char *const bad_texts[] = {
        "",
        "\n",
        "not a secret at all\n",
        /* 62 and 66 hex characters */
        "6b6579676174652064696765737420756e6974207465737420736563726574\n",
        "6b6579676174652064696765737420756e697420746573742073656372657421ab\n",
        /* 63: an odd count */
        "6b6579676174652064696765737420756e69742074657374207365637265742\n",
        /* 64 hex then junk */
        "6b6579676174652064696765737420756e697420746573742073656372657421 zz\n",
        /* a non-hex character inside */
        "6b6579676174652064696765737420756e6974207465737420736563726574g1\n",
    };

    for (size_t i = 0; i < sizeof(bad_texts) / sizeof(bad_texts[0]); i++) {
        write_file(f, bad_texts[i], strlen(bad_texts[i]));
        assert_load_fails(f, false, KG_ECORRUPT);
        /* Creation allowed changes nothing: the file is there, just wrong. */
        assert_load_fails(f, true, KG_ECORRUPT);
    }

    /* 31 and 33 raw bytes. */
    memset(text, 0xA5, sizeof(text));
    write_file(f, text, 31);
    assert_load_fails(f, false, KG_ECORRUPT);
    write_file(f, text, 33);
    assert_load_fails(f, false, KG_ECORRUPT);
}

static void
test_a_directory_in_place_of_the_secret_file_is_an_io_error(void **state)
{
    struct fixture *f = *state;
    char dir[160];

    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_load_fails(f, false, KG_EIO);
}

static void
test_secret_free_accepts_null(void **state)
{
    (void)state;
    kg_digest_secret_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_matches_the_fixed_vector_and_crypto_generichash),
        cmocka_unit_test(test_digest_is_stable_for_the_same_secret_and_key),
        cmocka_unit_test(test_digest_depends_on_the_secret),
        cmocka_unit_test(test_digest_differs_for_a_key_one_char_different),
        cmocka_unit_test(test_digest_covers_exactly_len_bytes),
        cmocka_unit_test(test_digest_equal_compares_every_byte),
        cmocka_unit_test_setup_teardown(
            test_secret_file_is_created_0600_in_a_0700_directory_when_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_created_secret_loads_back_with_the_same_digests,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_existing_secret_is_never_replaced_even_when_creation_is_allowed, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_missing_secret_without_may_create_is_not_found_and_creates_nothing, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_hex_secret_with_surrounding_white_space_is_accepted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_hex_secret_without_a_newline_is_accepted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upper_case_hex_secret_is_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_32_raw_bytes_are_accepted_as_the_secret, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_32_raw_bytes_of_any_value_are_accepted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_secret_files_are_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_directory_in_place_of_the_secret_file_is_an_io_error,
                                        setup, teardown),
        cmocka_unit_test(test_secret_free_accepts_null),
    };

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
