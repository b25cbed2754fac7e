/* http/credential.c - extracts the key from request headers and flags
 * ambiguity. Owns no memory: it points into the header values it is fed.
 * It does not judge the key itself (auth/keyfmt.c and auth/decide.c do). */
#include <string.h>
#include <strings.h>

#include "keygate/credential.h"

#define BIT_AUTHORIZATION 1u
#define BIT_AVALA 2u
#define BIT_EXTRA0 4u

void
kg_credential_init(struct kg_cred *c)
{
    memset(c, 0, sizeof(*c));
}

static bool
is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Trims optional white space around v[0..*len). */
static const char *
trim(const char *v, size_t *len)
{
    while (*len > 0 && is_ows(v[0])) {
        v++;
        (*len)--;
    }
    while (*len > 0 && is_ows(v[*len - 1]))
        (*len)--;
    return v;
}

/* Matches "Bearer" or "ApiKey" followed by at least one blank; sets *rest.
 * Returns false for any other scheme. */
static bool
our_scheme(const char *v, size_t len, const char **rest, size_t *rlen)
{
    static const char *const schemes[] = {"Bearer", "ApiKey"};

    for (size_t i = 0; i < 2; i++) {
        size_t sl = strlen(schemes[i]);

        if (len >= sl && strncasecmp(v, schemes[i], sl) == 0 && (len == sl || is_ows(v[sl]))) {
            *rest = v + sl;
            *rlen = len - sl;
            return true;
        }
    }
    return false;
}

/* Our keys are token68 without '=' padding; anything else cannot be one. */
static bool
plausible_key(const char *k, size_t len)
{
    if (len == 0 || len > 256)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)k[i];

        if (ch <= 0x20 || ch >= 0x7f)
            return false;
    }
    return true;
}

static void
take(struct kg_cred *c, unsigned bit, const char *k, size_t len)
{
    if ((c->seen & bit) != 0)
        c->bad = true; /* the same header twice */
    c->seen |= bit;
    if (!plausible_key(k, len)) {
        c->bad = true;
        return;
    }
    if (c->key != NULL && (c->len != len || memcmp(c->key, k, len) != 0))
        c->bad = true; /* two different keys */
    c->key = k;
    c->len = len;
}

static unsigned
header_bit(const struct kg_config *cfg, const char *name)
{
    if (strcasecmp(name, "Authorization") == 0)
        return BIT_AUTHORIZATION;
    if (strcasecmp(name, "X-Avala-Api-Key") == 0)
        return BIT_AVALA;
    for (size_t i = 0; i < cfg->ncred_headers; i++)
        if (strcasecmp(name, cfg->cred_headers[i]) == 0)
            return BIT_EXTRA0 << i;
    return 0;
}

bool
kg_credential_feed(struct kg_cred *c, const struct kg_config *cfg, const char *name,
                   const char *value, size_t vlen)
{
    unsigned bit = header_bit(cfg, name);
    const char *v, *rest;
    size_t len = vlen, rlen;

    if (bit == 0)
        return false;
    v = trim(value != NULL ? value : "", &len);
    if (bit == BIT_AUTHORIZATION) {
        if (!our_scheme(v, len, &rest, &rlen)) {
            /* Basic, Digest…: not ours, but a second Authorization is still ambiguous. */
            if ((c->seen & bit) != 0)
                c->bad = true;
            c->seen |= bit;
            return false;
        }
        v = trim(rest, &rlen);
        len = rlen;
    }
    take(c, bit, v, len);
    return true;
}

enum kg_cred_result
kg_credential_result(const struct kg_cred *c)
{
    if (c->bad)
        return KG_CRED_BAD;
    return c->key != NULL ? KG_CRED_ONE : KG_CRED_NONE;
}

bool
kg_credential_is_cred_header(const struct kg_config *cfg, const char *name, const char *value)
{
    unsigned bit = header_bit(cfg, name);
    const char *rest;
    size_t len, rlen;

    if (bit != BIT_AUTHORIZATION)
        return bit != 0;
    len = value != NULL ? strlen(value) : 0;
    value = trim(value != NULL ? value : "", &len);
    return our_scheme(value, len, &rest, &rlen);
}
