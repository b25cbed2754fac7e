/* auth/credhdr.c - the names and schemes of the headers that carry a key
 * of ours. Knows nothing of a request: the front end feeds it header by
 * header (http/credential.c), the upstream filter asks it (proxy/headers.c). */
#include <string.h>
#include <strings.h>

#include "keygate/credhdr.h"

static bool
is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

const char *
kg_credhdr_trim(const char *v, size_t *len)
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
bool
kg_credhdr_scheme(const char *v, size_t len, const char **rest, size_t *rlen)
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

unsigned
kg_credhdr_bit(const struct kg_config *cfg, const char *name)
{
    if (strcasecmp(name, "Authorization") == 0)
        return KG_CREDHDR_AUTHORIZATION;
    if (strcasecmp(name, "X-Avala-Api-Key") == 0)
        return KG_CREDHDR_AVALA;
    for (size_t i = 0; i < cfg->ncred_headers; i++)
        if (strcasecmp(name, cfg->cred_headers[i]) == 0)
            return KG_CREDHDR_EXTRA0 << i;
    return 0;
}

bool
kg_credhdr_is_credential(const struct kg_config *cfg, const char *name, const char *value)
{
    unsigned bit = kg_credhdr_bit(cfg, name);
    const char *rest;
    size_t len, rlen;

    if (bit != KG_CREDHDR_AUTHORIZATION)
        return bit != 0;
    len = value != NULL ? strlen(value) : 0;
    value = kg_credhdr_trim(value != NULL ? value : "", &len);
    return kg_credhdr_scheme(value, len, &rest, &rlen);
}
