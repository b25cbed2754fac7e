/* server/tls.c - the certificate and key the listeners present, loaded with
 * GnuTLS (libmicrohttpd's TLS backend) and swapped on SIGHUP.
 *
 * A pair is immutable once loaded. The current one is an atomic pointer the
 * certificate callback reads at each handshake, on whichever thread runs
 * it; a reload builds a new pair completely, then publishes it with one
 * store. Replaced pairs stay on a list until kg_tls_free() (see tls.h).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sodium.h>

#include "keygate/log.h"
#include "keygate/tls.h"

#define CHAIN_MAX 16               /* certificates in one chain file */
#define PEM_FILE_MAX (1024 * 1024) /* a chain is a few KiB; more is not a PEM file */

struct pair {
    gnutls_pcert_st certs[CHAIN_MAX];
    unsigned int ncerts;
    gnutls_privkey_t key;
    char subject[160]; /* of the first certificate, for log lines */
    char serial[66];   /* hex */
    /* BLAKE2b of the two files as read: a reload that finds the same bytes
     * keeps the pair instead of piling up one per SIGHUP (replaced pairs
     * live until exit, since GnuTLS gives no word when a handshake is done). */
    unsigned char files_hash[crypto_generichash_BYTES];
    struct pair *older;
};

struct kg_tls {
    char *priorities;
    struct pair *pairs; /* newest (current) first */
};

/* GnuTLS's callback has no user pointer: the one daemon's current pair. */
static _Atomic(struct pair *) current_pair;
static atomic_flag tls_taken = ATOMIC_FLAG_INIT;

/* Reads a whole file (at most PEM_FILE_MAX) into a malloc'd datum. */
static enum kg_status
read_file(const char *what, const char *path, gnutls_datum_t *out, struct kg_err *err)
{
    enum kg_status rc = KG_OK;
    unsigned char *buf = NULL;
    struct stat st;
    size_t n;
    FILE *f;

    out->data = NULL;
    out->size = 0;
    f = fopen(path, "rb");
    if (f == NULL)
        return kg_err_set(err, KG_EIO, "%s: cannot read %s: %s", what, path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > PEM_FILE_MAX) {
        rc = kg_err_set(err, KG_EINVAL, "%s: %s is not a PEM file of at most 1 MiB", what, path);
        goto cleanup;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    n = fread(buf, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        rc = kg_err_set(err, KG_EIO, "%s: cannot read %s: %s", what, path, strerror(errno));
        goto cleanup;
    }
    buf[n] = '\0';
    out->data = buf;
    out->size = (unsigned int)n;
    buf = NULL;
cleanup:
    free(buf);
    fclose(f);
    return rc;
}

/* The key file's bytes are wiped before they are freed. */
static void
free_secret(gnutls_datum_t *d)
{
    if (d->data != NULL)
        sodium_memzero(d->data, d->size);
    free(d->data);
    d->data = NULL;
}

/* DER SubjectPublicKeyInfo of pub, malloc'd by GnuTLS (gnutls_free). */
static bool
spki(gnutls_pubkey_t pub, gnutls_datum_t *out)
{
    return gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, out) == 0;
}

static void
describe(struct pair *p)
{
    unsigned char serial[32];
    size_t slen = sizeof(serial);
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = {NULL, 0};

    snprintf(p->subject, sizeof(p->subject), "?");
    snprintf(p->serial, sizeof(p->serial), "?");
    if (gnutls_x509_crt_init(&crt) != 0)
        return;
    if (gnutls_x509_crt_import(crt, &p->certs[0].cert, GNUTLS_X509_FMT_DER) == 0) {
        if (gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0)
            snprintf(p->subject, sizeof(p->subject), "%.*s", (int)dn.size, (const char *)dn.data);
        if (gnutls_x509_crt_get_serial(crt, serial, &slen) == 0)
            sodium_bin2hex(p->serial, sizeof(p->serial), serial, slen);
    }
    gnutls_free(dn.data);
    gnutls_x509_crt_deinit(crt);
}

static void
pair_free(struct pair *p)
{
    if (p == NULL)
        return;
    for (unsigned int i = 0; i < p->ncerts; i++)
        gnutls_pcert_deinit(&p->certs[i]);
    if (p->key != NULL)
        gnutls_privkey_deinit(p->key);
    free(p);
}

static void
files_hash(const gnutls_datum_t *cert, const gnutls_datum_t *key,
           unsigned char out[crypto_generichash_BYTES])
{
    crypto_generichash_state st;

    crypto_generichash_init(&st, NULL, 0, crypto_generichash_BYTES);
    crypto_generichash_update(&st, cert->data, cert->size);
    crypto_generichash_update(&st, key->data, key->size);
    crypto_generichash_final(&st, out, crypto_generichash_BYTES);
    sodium_memzero(&st, sizeof(st));
}

/* Loads and checks a pair; *out is NULL on failure. */
static enum kg_status
pair_load(const char *cert_file, const char *key_file, struct pair **out, struct kg_err *err)
{
    gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0}, a = {NULL, 0}, b = {NULL, 0};
    gnutls_pubkey_t pub = NULL;
    struct pair *p;
    enum kg_status rc;
    int g;

    *out = NULL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    rc = read_file("tls_certificate", cert_file, &cert, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = read_file("tls_key", key_file, &key, err);
    if (rc != KG_OK)
        goto cleanup;
    p->ncerts = CHAIN_MAX;
    g = gnutls_pcert_list_import_x509_raw(p->certs, &p->ncerts, &cert, GNUTLS_X509_FMT_PEM, 0);
    if (g < 0 || p->ncerts == 0) {
        p->ncerts = 0;
        rc = kg_err_set(err, KG_EINVAL, "tls_certificate: %s holds no PEM certificate", cert_file);
        goto cleanup;
    }
    if (gnutls_privkey_init(&p->key) != 0) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    g = gnutls_privkey_import_x509_raw(p->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (g < 0) {
        rc = kg_err_set(err, KG_EINVAL, "tls_key: %s holds no unencrypted PEM private key",
                        key_file);
        goto cleanup;
    }
    if (gnutls_pubkey_init(&pub) != 0 || gnutls_pubkey_import_privkey(pub, p->key, 0, 0) != 0 ||
        !spki(pub, &a) || !spki(p->certs[0].pubkey, &b)) {
        rc =
            kg_err_set(err, KG_EINVAL, "tls_key: cannot compare %s with the certificate", key_file);
        goto cleanup;
    }
    if (a.size != b.size || memcmp(a.data, b.data, a.size) != 0) {
        rc = kg_err_set(err, KG_EINVAL, "tls_key: %s does not match the certificate in %s",
                        key_file, cert_file);
        goto cleanup;
    }
    describe(p);
    files_hash(&cert, &key, p->files_hash);
    *out = p;
    p = NULL;
cleanup:
    gnutls_free(a.data);
    gnutls_free(b.data);
    if (pub != NULL)
        gnutls_pubkey_deinit(pub);
    free(cert.data);
    free_secret(&key);
    pair_free(p);
    return rc;
}

enum kg_status
kg_tls_check_pair(const char *cert_file, const char *key_file, struct kg_err *err)
{
    struct pair *p = NULL;
    enum kg_status rc = pair_load(cert_file, key_file, &p, err);

    pair_free(p);
    return rc;
}

enum kg_status
kg_tls_check_priorities(const char *prio, struct kg_err *err)
{
    gnutls_priority_t pc;
    const char *where = NULL;
    int g = gnutls_priority_init(&pc, prio, &where);

    if (g == 0) {
        gnutls_priority_deinit(pc);
        return KG_OK;
    }
    if (where != NULL && where[0] != '\0')
        return kg_err_set(err, KG_EINVAL, "GnuTLS does not understand \"%.60s\"", where);
    return kg_err_set(err, KG_EINVAL, "GnuTLS refuses it: %s", gnutls_strerror(g));
}

enum kg_status
kg_tls_check_ca(const char *file, struct kg_err *err)
{
    gnutls_x509_crt_t *list = NULL;
    gnutls_datum_t d = {NULL, 0};
    unsigned int n = 0;
    enum kg_status rc;
    int g;

    rc = read_file("upstream_ca", file, &d, err);
    if (rc != KG_OK)
        return rc;
    g = gnutls_x509_crt_list_import2(&list, &n, &d, GNUTLS_X509_FMT_PEM, 0);
    if (g < 0 || n == 0)
        rc = kg_err_set(err, KG_EINVAL, "upstream_ca: %s holds no PEM certificate", file);
    for (unsigned int i = 0; i < n; i++)
        gnutls_x509_crt_deinit(list[i]);
    gnutls_free(list);
    free(d.data);
    return rc;
}

/* Called by GnuTLS in every handshake of both listeners, on their threads. */
static int
retrieve_pair(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
              const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length, gnutls_pcert_st **pcert,
              unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
    struct pair *p = atomic_load_explicit(&current_pair, memory_order_acquire);

    (void)session;
    (void)req_ca_rdn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    if (p == NULL)
        return -1;
    *pcert = p->certs;
    *pcert_length = p->ncerts;
    *pkey = p->key;
    return 0;
}

enum kg_status
kg_tls_new(const struct kg_config *cfg, struct kg_tls **out, struct kg_err *err)
{
    struct kg_tls *tls;
    enum kg_status rc;

    *out = NULL;
    if (cfg->tls_certificate == NULL || cfg->tls_key == NULL)
        return KG_OK;
    if (atomic_flag_test_and_set(&tls_taken))
        return kg_err_set(err, KG_ECONFLICT, "TLS is already set up in this process");
    tls = calloc(1, sizeof(*tls));
    if (tls == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto fail;
    }
    tls->priorities =
        strdup(cfg->tls_priorities != NULL ? cfg->tls_priorities : KG_TLS_DEFAULT_PRIORITIES);
    if (tls->priorities == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto fail;
    }
    rc = pair_load(cfg->tls_certificate, cfg->tls_key, &tls->pairs, err);
    if (rc != KG_OK)
        goto fail;
    atomic_store_explicit(&current_pair, tls->pairs, memory_order_release);
    *out = tls;
    return KG_OK;
fail:
    if (tls != NULL)
        free(tls->priorities);
    free(tls);
    atomic_flag_clear(&tls_taken);
    return rc;
}

void
kg_tls_free(struct kg_tls *tls)
{
    if (tls == NULL)
        return;
    atomic_store(&current_pair, NULL);
    while (tls->pairs != NULL) {
        struct pair *older = tls->pairs->older;

        pair_free(tls->pairs);
        tls->pairs = older;
    }
    free(tls->priorities);
    free(tls);
    atomic_flag_clear(&tls_taken);
}

enum kg_status
kg_tls_reload(struct kg_tls *tls, const struct kg_config *cfg, bool *changed, struct kg_err *err)
{
    struct pair *p = NULL;
    enum kg_status rc;

    if (changed != NULL)
        *changed = false;
    if (cfg->tls_certificate == NULL || cfg->tls_key == NULL)
        return kg_err_set(err, KG_EINVAL, "turning TLS off needs a restart");
    rc = pair_load(cfg->tls_certificate, cfg->tls_key, &p, err);
    if (rc != KG_OK)
        return rc;
    if (tls->pairs != NULL &&
        sodium_memcmp(p->files_hash, tls->pairs->files_hash, sizeof(p->files_hash)) == 0) {
        pair_free(p); /* the same files: keep serving the current pair */
        return KG_OK;
    }
    p->older = tls->pairs;
    tls->pairs = p;
    atomic_store_explicit(&current_pair, p, memory_order_release);
    if (changed != NULL)
        *changed = true;
    return KG_OK;
}

size_t
kg_tls_pairs_held(const struct kg_tls *tls)
{
    size_t n = 0;

    for (const struct pair *p = tls != NULL ? tls->pairs : NULL; p != NULL; p = p->older)
        n++;
    return n;
}

void
kg_tls_reload_on_signal(struct kg_tls *tls, const struct kg_config *cfg)
{
    struct kg_err err = {{0}};
    bool changed = false;

    if (tls == NULL)
        return;
    if (kg_tls_reload(tls, cfg, &changed, &err) != KG_OK) {
        kg_log_warnx("SIGHUP: %s; still serving certificate %s (serial %s)", err.msg,
                     tls->pairs->subject, tls->pairs->serial);
        return;
    }
    if (changed)
        kg_log_info("SIGHUP: TLS certificate reloaded: %s (serial %s)", tls->pairs->subject,
                    tls->pairs->serial);
    else
        kg_log_debug("SIGHUP: TLS certificate and key files unchanged");
}

unsigned int
kg_tls_mhd_flags(const struct kg_tls *tls)
{
    return tls != NULL ? (unsigned int)MHD_USE_TLS : 0u;
}

struct MHD_OptionItem *
kg_tls_mhd_options(const struct kg_tls *tls, struct MHD_OptionItem *opts)
{
    size_t n = 0;

    if (tls != NULL) {
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0,
                                            (void *)(uintptr_t)&retrieve_pair};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, tls->priorities};
    }
    opts[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return opts;
}

enum kg_status
kg_tls_pin(const char *cert_file, char *out, size_t cap, struct kg_err *err)
{
    unsigned char hash[crypto_hash_sha256_BYTES];
    gnutls_pcert_st chain[CHAIN_MAX];
    gnutls_datum_t cert = {NULL, 0}, der = {NULL, 0};
    unsigned int n = CHAIN_MAX;
    enum kg_status rc;
    char b64[64];
    int g;

    rc = read_file("tls_certificate", cert_file, &cert, err);
    if (rc != KG_OK)
        return rc;
    g = gnutls_pcert_list_import_x509_raw(chain, &n, &cert, GNUTLS_X509_FMT_PEM, 0);
    if (g < 0 || n == 0) {
        n = 0;
        rc = kg_err_set(err, KG_EINVAL, "tls_certificate: %s holds no PEM certificate", cert_file);
        goto cleanup;
    }
    /* The first certificate of the chain is the server's own. */
    if (!spki(chain[0].pubkey, &der)) {
        rc = kg_err_set(err, KG_EINVAL, "tls_certificate: cannot read the key of %s", cert_file);
        goto cleanup;
    }
    crypto_hash_sha256(hash, der.data, der.size);
    sodium_bin2base64(b64, sizeof(b64), hash, sizeof(hash), sodium_base64_VARIANT_ORIGINAL);
    if ((size_t)snprintf(out, cap, "sha256//%s", b64) >= cap)
        rc = kg_err_set(err, KG_ELIMIT, "pin buffer too small");
cleanup:
    for (unsigned int i = 0; i < n; i++)
        gnutls_pcert_deinit(&chain[i]);
    gnutls_free(der.data);
    free(cert.data);
    return rc;
}
