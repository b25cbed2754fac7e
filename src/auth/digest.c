/* auth/digest.c - the server secret and keyed BLAKE2b digests of keys.
 * Owns the secret file format (64 hex characters, or 32 raw bytes) and its
 * creation; the decision of *when* a new secret may be created belongs to
 * the caller (only on an empty store, so a lost file is never silently
 * replaced). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "keygate/digest.h"
#include "keygate/log.h"

struct kg_secret {
    unsigned char bytes[KG_SECRET_BYTES];
};

static enum kg_status
secret_alloc(struct kg_secret **out)
{
    if (sodium_init() < 0)
        return KG_ENOMEM;
    *out = sodium_malloc(sizeof(struct kg_secret));
    return *out != NULL ? KG_OK : KG_ENOMEM;
}

enum kg_status
kg_digest_secret_from_bytes(const unsigned char bytes[KG_SECRET_BYTES], struct kg_secret **out)
{
    enum kg_status rc = secret_alloc(out);

    if (rc != KG_OK)
        return rc;
    memcpy((*out)->bytes, bytes, KG_SECRET_BYTES);
    sodium_mprotect_readonly(*out);
    return KG_OK;
}

void
kg_digest_secret_free(struct kg_secret *s)
{
    /* sodium_free wipes the region before releasing it. */
    if (s != NULL)
        sodium_free(s);
}

static enum kg_status
make_parent_dir(const char *path, struct kg_err *err)
{
    char *copy = strdup(path);
    enum kg_status rc = KG_OK;
    const char *dir;

    if (copy == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    dir = dirname(copy);
    if (strcmp(dir, ".") != 0 && strcmp(dir, "/") != 0 && mkdir(dir, 0700) != 0 && errno != EEXIST)
        rc = kg_err_set(err, KG_EIO, "%s: cannot create directory: %s", dir, strerror(errno));
    free(copy);
    return rc;
}

static enum kg_status
create_secret(const char *path, struct kg_secret **out, struct kg_err *err)
{
    unsigned char raw[KG_SECRET_BYTES];
    char hex[KG_SECRET_BYTES * 2 + 2];
    enum kg_status rc;
    int fd = -1;
    size_t len;

    rc = make_parent_dir(path, err);
    if (rc != KG_OK)
        return rc;
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(hex, sizeof(hex), raw, sizeof(raw));
    len = strlen(hex);
    hex[len++] = '\n';
    /* O_EXCL: if two processes race on first start, one wins and the other
     * fails loudly instead of both writing different secrets. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = kg_err_set(err, KG_EIO, "%s: cannot create secret file: %s", path, strerror(errno));
        goto cleanup;
    }
    if (write(fd, hex, len) != (ssize_t)len || fsync(fd) != 0) {
        rc = kg_err_set(err, KG_EIO, "%s: cannot write secret file: %s", path, strerror(errno));
        unlink(path);
        goto cleanup;
    }
    rc = kg_digest_secret_from_bytes(raw, out);
cleanup:
    if (fd >= 0)
        close(fd);
    sodium_memzero(raw, sizeof(raw));
    sodium_memzero(hex, sizeof(hex));
    return rc;
}

enum kg_status
kg_digest_secret_load(const char *path, bool may_create, struct kg_secret **out, bool *created,
                      struct kg_err *err)
{
    unsigned char buf[257], raw[KG_SECRET_BYTES];
    enum kg_status rc = KG_OK;
    struct stat sb;
    size_t binlen = 0;
    const char *end;
    ssize_t n;
    int fd;

    *out = NULL;
    if (created != NULL)
        *created = false;
    if (sodium_init() < 0)
        return kg_err_set(err, KG_ENOMEM, "libsodium failed to initialise");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (!may_create)
            return kg_err_set(err, KG_ENOTFOUND,
                              "%s: secret file is missing; keys in the database cannot be "
                              "verified without it",
                              path);
        rc = create_secret(path, out, err);
        if (rc == KG_OK && created != NULL)
            *created = true;
        return rc;
    }
    if (fd < 0)
        return kg_err_set(err, KG_EIO, "%s: cannot open secret file: %s", path, strerror(errno));
    /* Only a file we own is ours to tighten: a secret mounted by a container
     * engine (compose secrets are read-only bind mounts owned by someone else)
     * often has to be readable by others for uid 10001 to read it at all. */
    if (fstat(fd, &sb) == 0 && (sb.st_mode & 0077) != 0 && sb.st_uid == geteuid())
        kg_log_warnx("%s: secret file is readable by group or others; chmod 600 it", path);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        rc = kg_err_set(err, KG_EIO, "%s: cannot read secret file: %s", path, strerror(errno));
        goto cleanup;
    }
    buf[n] = '\0';
    if (n == KG_SECRET_BYTES) {
        memcpy(raw, buf, KG_SECRET_BYTES);
    } else if (sodium_hex2bin(raw, sizeof(raw), (const char *)buf, (size_t)n, " \t\r\n", &binlen,
                              &end) != 0 ||
               binlen != KG_SECRET_BYTES || strspn(end, " \t\r\n") != strlen(end)) {
        rc = kg_err_set(err, KG_ECORRUPT,
                        "%s: secret file must hold 64 hex characters (or 32 raw bytes)", path);
        goto cleanup;
    }
    rc = kg_digest_secret_from_bytes(raw, out);
cleanup:
    sodium_memzero(buf, sizeof(buf));
    sodium_memzero(raw, sizeof(raw));
    return rc;
}

void
kg_digest_compute(const struct kg_secret *s, const char *key, size_t len,
                  unsigned char out[KG_DIGEST_BYTES])
{
    crypto_generichash(out, KG_DIGEST_BYTES, (const unsigned char *)key, len, s->bytes,
                       KG_SECRET_BYTES);
}

void
kg_digest_audit_key(const struct kg_secret *s, unsigned char out[KG_AUDIT_KEY_BYTES])
{
    static const char label[] = "keygate audit chain v1";

    crypto_generichash(out, KG_AUDIT_KEY_BYTES, (const unsigned char *)label, sizeof(label) - 1,
                       s->bytes, KG_SECRET_BYTES);
}

void
kg_digest_subkey(const struct kg_secret *s, const char *label, unsigned char out[32])
{
    crypto_generichash(out, 32, (const unsigned char *)label, strlen(label), s->bytes,
                       KG_SECRET_BYTES);
}

void
kg_digest_fingerprint(const struct kg_secret *s, char out[KG_FINGERPRINT_HEX])
{
    static const char label[] = "keygate secret fingerprint v1";
    unsigned char fp[32];

    crypto_generichash(fp, sizeof(fp), (const unsigned char *)label, sizeof(label) - 1, s->bytes,
                       KG_SECRET_BYTES);
    sodium_bin2hex(out, KG_FINGERPRINT_HEX, fp, sizeof(fp));
}

bool
kg_digest_equal(const unsigned char a[KG_DIGEST_BYTES], const unsigned char b[KG_DIGEST_BYTES])
{
    return sodium_memcmp(a, b, KG_DIGEST_BYTES) == 0;
}
