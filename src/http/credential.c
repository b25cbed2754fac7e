/* http/credential.c - extracts the key from request headers and flags
 * ambiguity. Owns no memory: it points into the header values it is fed.
 * Which headers and schemes are ours is auth/credhdr.c's; it does not judge
 * the key itself (auth/keyfmt.c and auth/decide.c do). */
#include <string.h>
#include <strings.h>

#include "keygate/credential.h"
#include "keygate/credhdr.h"

void
kg_credential_init(struct kg_cred *c)
{
    memset(c, 0, sizeof(*c));
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

bool
kg_credential_feed(struct kg_cred *c, const struct kg_config *cfg, const char *name,
                   const char *value, size_t vlen)
{
    unsigned bit = kg_credhdr_bit(cfg, name);
    const char *v, *rest;
    size_t len = vlen, rlen;

    if (bit == 0)
        return false;
    v = kg_credhdr_trim(value != NULL ? value : "", &len);
    if (bit == KG_CREDHDR_AUTHORIZATION) {
        if (!kg_credhdr_scheme(v, len, &rest, &rlen)) {
            /* Basic, Digest…: not ours, but a second Authorization is still ambiguous. */
            if ((c->seen & bit) != 0)
                c->bad = true;
            c->seen |= bit;
            return false;
        }
        v = kg_credhdr_trim(rest, &rlen);
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
    return kg_credhdr_is_credential(cfg, name, value);
}
