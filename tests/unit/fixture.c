/* tests/unit/fixture.c - see fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sodium.h>

#include "keygate/limiter.h"
#include "unit/fixture.h"

static const char *const env_names[] = {
    "KEYGATE_CONFIG",
    "KEYGATE_LISTEN",
    "KEYGATE_ADMIN_LISTEN",
    "KEYGATE_UPSTREAM",
    "KEYGATE_DATABASE",
    "KEYGATE_KEY_PREFIX",
    "KEYGATE_SECRET_FILE",
    "KEYGATE_ERROR_STYLE",
    "KEYGATE_LOG_LEVEL",
    "KEYGATE_WORKERS",
    "KEYGATE_LOG_FORMAT",
    "KEYGATE_SHUTDOWN_TIMEOUT",
    "KEYGATE_MODE",
    "KEYGATE_FORWARD_AUTH_PREFIX",
    "KEYGATE_TLS_CERTIFICATE",
    "KEYGATE_TLS_KEY",
    "KEYGATE_TLS_PRIORITIES",
    "KEYGATE_UPSTREAM_CA",
    "KEYGATE_ACCESS_LOG",
    "KEYGATE_LIMITS",
    "KEYGATE_CONSOLE",
};

int
kg_fx_mkdtemp(char dir[KG_FX_DIR_MAX], const char *tag)
{
    snprintf(dir, KG_FX_DIR_MAX, "/tmp/kg-%s-test-XXXXXX", tag);
    if (mkdtemp(dir) == NULL) {
        dir[0] = '\0';
        return -1;
    }
    return 0;
}

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void
kg_fx_rmtree(const char *dir)
{
    if (dir[0] != '\0')
        nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

void
kg_fx_clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
}

static void
report(void *ctx, const char *line)
{
    (void)ctx;
    print_error("config: %s\n", line);
}

int
kg_fx_load_config(const char *text, struct kg_config **out)
{
    char path[] = "/tmp/kg-unit-conf-XXXXXX";
    int fd = mkstemp(path);
    size_t len = strlen(text);
    enum kg_status rc;

    if (fd < 0)
        return -1;
    if (write(fd, text, len) != (ssize_t)len) {
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    rc = kg_config_load(path, report, NULL, out);
    unlink(path);
    return rc == KG_OK ? 0 : -1;
}

struct kg_fx_store *
kg_fx_store_new(const char *tag, const unsigned char secret[KG_SECRET_BYTES], const char *actor)
{
    unsigned char audit_key[KG_AUDIT_KEY_BYTES];
    struct kg_fx_store *fx = calloc(1, sizeof(*fx));
    struct kg_err err = {{0}};

    assert_non_null(fx);
    assert_int_equal(kg_fx_mkdtemp(fx->dir, tag), 0);
    snprintf(fx->db, sizeof(fx->db), "%s/keys.db", fx->dir);
    if (kg_store_open(fx->db, &fx->store, &err) != KG_OK)
        fail_msg("store should open in a fresh directory: %s", err.msg);
    assert_int_equal(kg_digest_secret_from_bytes(secret, &fx->secret), KG_OK);
    assert_int_equal(kg_config_defaults(&fx->cfg), KG_OK);
    kg_digest_audit_key(fx->secret, audit_key);
    kg_store_set_audit_key(fx->store, audit_key);
    fx->kc = (struct kg_keys_ctx){
        .store = fx->store, .secret = fx->secret, .cfg = fx->cfg, .actor = actor};
    return fx;
}

void
kg_fx_store_free(struct kg_fx_store *fx)
{
    if (fx == NULL)
        return;
    kg_store_close(fx->store);
    kg_digest_secret_free(fx->secret);
    kg_config_free(fx->cfg);
    kg_fx_rmtree(fx->dir);
    free(fx);
}

int
kg_fx_cache_setup(void **state)
{
    struct kg_fx_cache *f = calloc(1, sizeof(*f));
    struct kg_err err = {{0}};

    if (f == NULL)
        return -1;
    if (kg_fx_mkdtemp(f->dir, "keycache") != 0) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/keys.db", f->dir);
    *state = f;
    if (kg_store_open(f->path, &f->st, &err) != KG_OK) {
        fprintf(stderr, "kg_store_open: %s\n", err.msg);
        return -1;
    }
    if (kg_limiter_new_local(1024, &f->lim, &err) != KG_OK)
        return -1;
    return kg_keycache_new(f->lim, &f->kc) == KG_OK ? 0 : -1;
}

int
kg_fx_cache_teardown(void **state)
{
    struct kg_fx_cache *f = *state;

    kg_keycache_free(f->kc);
    kg_limiter_free(f->lim);
    kg_store_close(f->st);
    kg_fx_rmtree(f->dir);
    free(f);
    return 0;
}

void
kg_fx_key_rec(struct kg_key_rec *rec, const char *id, int64_t created_at)
{
    memset(rec, 0, sizeof(*rec));
    snprintf(rec->id, sizeof(rec->id), "%s", id);
    snprintf(rec->name, sizeof(rec->name), "name of %s", id);
    snprintf(rec->prefix, sizeof(rec->prefix), "kg_AbCd");
    snprintf(rec->last4, sizeof(rec->last4), "wxyz");
    crypto_generichash(rec->digest, KG_DIGEST_BYTES, (const unsigned char *)id, strlen(id), NULL,
                       0);
    snprintf(rec->tenant, sizeof(rec->tenant), "tenant-%s", id);
    rec->created_at = created_at;
    rec->quota_limit = -1;
    snprintf(rec->metadata, sizeof(rec->metadata), "{}");
}

void
kg_fx_tls_pair(const char *dir, const char *name, unsigned char serial)
{
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
    gnutls_datum_t pem;
    char path[256];
    FILE *f;

    assert_int_equal(gnutls_x509_privkey_init(&key), 0);
    assert_int_equal(gnutls_x509_privkey_generate(
                         key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
                     0);
    assert_int_equal(gnutls_x509_crt_init(&crt), 0);
    assert_int_equal(gnutls_x509_crt_set_version(crt, 3), 0);
    assert_int_equal(gnutls_x509_crt_set_serial(crt, &serial, 1), 0);
    assert_int_equal(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, name,
                                                   (unsigned)strlen(name)),
                     0);
    assert_int_equal(gnutls_x509_crt_set_activation_time(crt, time(NULL) - 60), 0);
    assert_int_equal(gnutls_x509_crt_set_expiration_time(crt, time(NULL) + 3600), 0);
    assert_int_equal(gnutls_x509_crt_set_key(crt, key), 0);
    assert_int_equal(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), 0);
    assert_int_equal(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem), 0);
    snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(pem.data, 1, pem.size, f), pem.size);
    assert_int_equal(fclose(f), 0);
    gnutls_free(pem.data);
    assert_int_equal(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &pem), 0);
    snprintf(path, sizeof(path), "%s/%s.key", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(pem.data, 1, pem.size, f), pem.size);
    assert_int_equal(fclose(f), 0);
    gnutls_free(pem.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
}
