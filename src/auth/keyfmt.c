/* auth/keyfmt.c - key format: generate, verify checksum, display parts.
 * Pure functions over bytes; it never sees a digest or the store. The
 * body's randomness comes from libsodium (randombytes_uniform is unbiased),
 * the checksum from unkeyed BLAKE2b, its text from sodium_bin2hex. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "keygate/keyfmt.h"

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static bool
prefix_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static bool
base62_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Writes the 8 hex checksum characters of s[0..len) into out (9 bytes). */
static void
checksum(const char *s, size_t len, char out[KG_KEY_CHECK_LEN + 1])
{
    unsigned char h[crypto_generichash_BYTES_MIN];

    crypto_generichash(h, sizeof(h), (const unsigned char *)s, len, NULL, 0);
    sodium_bin2hex(out, KG_KEY_CHECK_LEN + 1, h, KG_KEY_CHECK_LEN / 2);
    sodium_memzero(h, sizeof(h));
}

static void
random_base62(char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = base62[randombytes_uniform(sizeof(base62) - 1)];
}

enum kg_status
kg_keyfmt_generate(const char *prefix, char out[KG_KEY_MAX], struct kg_err *err)
{
    size_t plen = strlen(prefix);

    if (plen == 0 || plen > KG_KEY_PREFIX_MAX)
        return kg_err_set(err, KG_EINVAL, "key prefix must be 1 to %d characters",
                          KG_KEY_PREFIX_MAX);
    for (size_t i = 0; i < plen; i++)
        if (!prefix_char_ok(prefix[i]))
            return kg_err_set(err, KG_EINVAL, "key prefix may hold only A-Z, a-z, 0-9 and _");
    memcpy(out, prefix, plen);
    random_base62(out + plen, KG_KEY_BODY_LEN);
    checksum(out, plen + KG_KEY_BODY_LEN, out + plen + KG_KEY_BODY_LEN);
    out[plen + KG_KEY_TAIL_LEN] = '\0';
    return KG_OK;
}

bool
kg_keyfmt_check(const char *key, size_t len)
{
    char want[KG_KEY_CHECK_LEN + 1];
    size_t plen;
    bool ok = true;

    if (len <= KG_KEY_TAIL_LEN || len > KG_KEY_MAX - 1)
        return false;
    plen = len - KG_KEY_TAIL_LEN;
    for (size_t i = 0; i < plen; i++)
        ok &= prefix_char_ok(key[i]);
    for (size_t i = plen; i < plen + KG_KEY_BODY_LEN; i++)
        ok &= base62_ok(key[i]);
    if (!ok)
        return false;
    checksum(key, plen + KG_KEY_BODY_LEN, want);
    return sodium_memcmp(want, key + plen + KG_KEY_BODY_LEN, KG_KEY_CHECK_LEN) == 0;
}

void
kg_keyfmt_display(const char *key, size_t len, char prefix_out[KG_DPREFIX_MAX], char last4_out[5])
{
    size_t plen = len > KG_KEY_TAIL_LEN ? len - KG_KEY_TAIL_LEN : 0;
    size_t n = plen + KG_KEY_SHOWN_BODY;

    if (n > len)
        n = len;
    if (n > KG_DPREFIX_MAX - 1)
        n = KG_DPREFIX_MAX - 1;
    memcpy(prefix_out, key, n);
    prefix_out[n] = '\0';
    n = len < 4 ? len : 4;
    memcpy(last4_out, key + len - n, n);
    last4_out[n] = '\0';
}

void
kg_keyfmt_mask(const char *dprefix, const char *last4, char *out, size_t outlen)
{
    /* U+2026 so a masked key can never be pasted back as a key. */
    snprintf(out, outlen, "%s\xE2\x80\xA6%s", dprefix, last4);
}

void
kg_keyfmt_new_id(const char *kind, char out[KG_ID_MAX])
{
    size_t klen = strlen(kind);

    if (klen > 8)
        klen = 8;
    memcpy(out, kind, klen);
    out[klen] = '_';
    random_base62(out + klen + 1, 22);
    out[klen + 23] = '\0';
}
