/* tests/unit/server/test_tls.c - src/server/tls.c through keygate/tls.h.
 *
 * Pairs are made at run time by the fixture (kg_fx_tls_pair). The
 * handshake itself is libmicrohttpd's and is tested end to end in
 * tests/integration/test_tls.c; here: what loads, what a reload keeps, the
 * options handed to the library and the healthcheck's pin.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keygate/config.h"
#include "keygate/tls.h"
#include "unit/fixture.h"

struct fixture {
    char dir[KG_FX_DIR_MAX];
    char a_crt[128], a_key[128], b_crt[128], b_key[128];
    struct kg_config *cfg;
};

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL || kg_fx_mkdtemp(fx->dir, "tlsmod") != 0)
        return -1;
    kg_fx_tls_pair(fx->dir, "a", 1);
    kg_fx_tls_pair(fx->dir, "b", 2);
    snprintf(fx->a_crt, sizeof(fx->a_crt), "%s/a.crt", fx->dir);
    snprintf(fx->a_key, sizeof(fx->a_key), "%s/a.key", fx->dir);
    snprintf(fx->b_crt, sizeof(fx->b_crt), "%s/b.crt", fx->dir);
    snprintf(fx->b_key, sizeof(fx->b_key), "%s/b.key", fx->dir);
    kg_fx_clear_env();
    if (kg_config_defaults(&fx->cfg) != KG_OK)
        return -1;
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;

    kg_config_free(fx->cfg);
    kg_fx_rmtree(fx->dir);
    free(fx);
    return 0;
}

/* Points the config's tls_certificate/tls_key at crt and key (NULL: unset). */
static void
use_pair(struct fixture *fx, const char *crt, const char *key)
{
    free(fx->cfg->tls_certificate);
    free(fx->cfg->tls_key);
    fx->cfg->tls_certificate = crt != NULL ? strdup(crt) : NULL;
    fx->cfg->tls_key = key != NULL ? strdup(key) : NULL;
}

static void
test_without_a_certificate_tls_is_off_and_adds_nothing_to_the_listeners(void **state)
{
    struct fixture *fx = *state;
    struct MHD_OptionItem opts[KG_TLS_MHD_OPTIONS];
    struct kg_tls *tls = (struct kg_tls *)fx;

    assert_int_equal(kg_tls_new(fx->cfg, &tls, NULL), KG_OK);
    assert_null(tls);
    assert_int_equal(kg_tls_mhd_flags(NULL), 0);
    assert_int_equal(kg_tls_mhd_options(NULL, opts)[0].option, MHD_OPTION_END);
    kg_tls_reload_on_signal(NULL, fx->cfg); /* TLS off: SIGHUP does nothing here */
    kg_tls_free(NULL);
}

static void
test_a_pair_gives_the_listeners_tls_a_callback_and_the_priorities(void **state)
{
    struct fixture *fx = *state;
    struct MHD_OptionItem opts[KG_TLS_MHD_OPTIONS];
    struct kg_tls *tls = NULL;

    use_pair(fx, fx->a_crt, fx->a_key);
    assert_int_equal(kg_tls_new(fx->cfg, &tls, NULL), KG_OK);
    assert_non_null(tls);
    assert_int_equal(kg_tls_mhd_flags(tls), MHD_USE_TLS);
    kg_tls_mhd_options(tls, opts);
    assert_int_equal(opts[0].option, MHD_OPTION_HTTPS_CERT_CALLBACK);
    assert_non_null(opts[0].ptr_value);
    assert_int_equal(opts[1].option, MHD_OPTION_HTTPS_PRIORITIES);
    assert_string_equal(opts[1].ptr_value, KG_TLS_DEFAULT_PRIORITIES);
    assert_int_equal(opts[2].option, MHD_OPTION_END);
    kg_tls_free(tls);
}

static void
test_only_one_tls_state_lives_in_a_process(void **state)
{
    struct fixture *fx = *state;
    struct kg_tls *tls = NULL, *second = NULL;
    struct kg_err err = {{0}};

    use_pair(fx, fx->a_crt, fx->a_key);
    assert_int_equal(kg_tls_new(fx->cfg, &tls, NULL), KG_OK);
    assert_int_equal(kg_tls_new(fx->cfg, &second, &err), KG_ECONFLICT);
    assert_null(second);
    assert_string_equal(err.msg, "TLS is already set up in this process");
    kg_tls_free(tls);
    /* Freed: the slot is free again. */
    assert_int_equal(kg_tls_new(fx->cfg, &tls, NULL), KG_OK);
    kg_tls_free(tls);
}

static void
test_a_reload_that_fails_changes_nothing_and_a_good_one_takes_over(void **state)
{
    struct fixture *fx = *state;
    struct kg_tls *tls = NULL;
    struct kg_err err = {{0}};
    bool changed = true;
    char want[512];

    use_pair(fx, fx->a_crt, fx->a_key);
    assert_int_equal(kg_tls_new(fx->cfg, &tls, NULL), KG_OK);

    use_pair(fx, fx->a_crt, fx->b_key);
    assert_int_equal(kg_tls_reload(tls, fx->cfg, NULL, &err), KG_EINVAL);
    snprintf(want, sizeof(want), "tls_key: %s does not match the certificate in %s", fx->b_key,
             fx->a_crt);
    assert_string_equal(err.msg, want);

    use_pair(fx, fx->b_crt, NULL);
    assert_int_equal(kg_tls_reload(tls, fx->cfg, NULL, &err), KG_EINVAL);
    assert_string_equal(err.msg, "turning TLS off needs a restart");

    use_pair(fx, fx->b_crt, fx->b_key);
    assert_int_equal(kg_tls_pairs_held(tls), 1);
    assert_int_equal(kg_tls_reload(tls, fx->cfg, &changed, &err), KG_OK);
    assert_true(changed);
    assert_int_equal(kg_tls_pairs_held(tls), 2);
    /* The same files again (every SIGHUP re-reads them): nothing piles up. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(kg_tls_reload(tls, fx->cfg, &changed, &err), KG_OK);
        assert_false(changed);
        kg_tls_reload_on_signal(tls, fx->cfg);
    }
    assert_int_equal(kg_tls_pairs_held(tls), 2);
    kg_tls_free(tls);
}

static void
test_a_missing_file_is_named_with_the_reason(void **state)
{
    struct fixture *fx = *state;
    struct kg_tls *tls = NULL;
    struct kg_err err = {{0}};
    char missing[160], want[512];

    snprintf(missing, sizeof(missing), "%s/none.crt", fx->dir);
    use_pair(fx, missing, fx->a_key);
    assert_int_equal(kg_tls_new(fx->cfg, &tls, &err), KG_EIO);
    assert_null(tls);
    snprintf(want, sizeof(want), "tls_certificate: cannot read %s: No such file or directory",
             missing);
    assert_string_equal(err.msg, want);
    assert_int_equal(kg_tls_check_pair(fx->a_crt, fx->a_key, NULL), KG_OK);
    assert_int_equal(kg_tls_check_ca(fx->b_crt, NULL), KG_OK);
    assert_int_equal(kg_tls_check_ca(fx->b_key, NULL), KG_EINVAL);
}

static void
test_priority_strings_are_checked_by_gnutls(void **state)
{
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(kg_tls_check_priorities(KG_TLS_DEFAULT_PRIORITIES, NULL), KG_OK);
    assert_int_equal(kg_tls_check_priorities("NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL), KG_OK);
    assert_int_equal(kg_tls_check_priorities("NORMAL:+NOPE", &err), KG_EINVAL);
    assert_string_equal(err.msg, "GnuTLS does not understand \"+NOPE\"");
}

static void
test_the_pin_is_the_sha256_of_the_certificates_public_key(void **state)
{
    struct fixture *fx = *state;
    char pa[80], pb[80], small[20];

    assert_int_equal(kg_tls_pin(fx->a_crt, pa, sizeof(pa), NULL), KG_OK);
    assert_int_equal(kg_tls_pin(fx->b_crt, pb, sizeof(pb), NULL), KG_OK);
    /* "sha256//" and 32 bytes in standard base64 (44 characters). */
    assert_int_equal(strncmp(pa, "sha256//", 8), 0);
    assert_int_equal(strlen(pa), 8 + 44);
    assert_string_not_equal(pa, pb);
    assert_int_equal(kg_tls_pin(fx->a_crt, small, sizeof(small), NULL), KG_ELIMIT);
    assert_int_equal(kg_tls_pin(fx->a_key, pa, sizeof(pa), NULL), KG_EINVAL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_without_a_certificate_tls_is_off_and_adds_nothing_to_the_listeners),
        T(test_a_pair_gives_the_listeners_tls_a_callback_and_the_priorities),
        T(test_only_one_tls_state_lives_in_a_process),
        T(test_a_reload_that_fails_changes_nothing_and_a_good_one_takes_over),
        T(test_a_missing_file_is_named_with_the_reason),
        T(test_priority_strings_are_checked_by_gnutls),
        T(test_the_pin_is_the_sha256_of_the_certificates_public_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
