/* proxy/headers.c - hop-by-hop and Connection-named removal, credential,
 * identity-header and underscore-name stripping. Decides per header; building the lists is the
 * caller's (proxy/outbound.c for requests, proxy/relay.c for responses). */
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "keygate/credhdr.h"
#include "keygate/headers.h"

static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive",        "Proxy-Connection",   "TE", "Trailer",
    "Upgrade",    "Transfer-Encoding", "Proxy-Authenticate", NULL,
};

static bool
in_token_list(const char *name, const char *list)
{
    size_t nlen = strlen(name);
    const char *p = list;

    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *s = p;

        while (len > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            len--;
        }
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len == nlen && strncasecmp(s, name, nlen) == 0)
            return true;
        p = end != NULL ? end + 1 : NULL;
    }
    return false;
}

bool
kg_headers_hop_by_hop(const char *name, const char *conn_tokens)
{
    for (size_t i = 0; hop_by_hop[i] != NULL; i++)
        if (strcasecmp(name, hop_by_hop[i]) == 0)
            return true;
    return conn_tokens != NULL && in_token_list(name, conn_tokens);
}

/* Headers keygate replaces with its own, or never forwards. */
static const char *const replaced[] = {
    "Host",
    "Content-Length",
    "Expect",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-For",
    "Forwarded",
    "X-Request-Id",
    "Proxy-Authorization",
    NULL,
};

static bool
is_replaced(const char *name)
{
    for (size_t i = 0; replaced[i] != NULL; i++)
        if (strcasecmp(name, replaced[i]) == 0)
            return true;
    return false;
}

/* Whether name is a header keygate sets, replaces or strips in some
 * configuration: the names an underscore spelling must never stand for. */
static bool
keygate_owned(const struct kg_config *cfg, const char *name, const char *value,
              const char *conn_tokens)
{
    return kg_headers_hop_by_hop(name, conn_tokens) || is_replaced(name) ||
           strcasecmp(name, "X-Real-IP") == 0 || strncasecmp(name, "X-Keygate-", 10) == 0 ||
           strncasecmp(name, "X-Forwarded-", 12) == 0 || kg_credhdr_is_credential(cfg, name, value);
}

/* A name with "_": CGI, WSGI and Rack turn "-" and "_" into the same "_",
 * so X_Keygate_Tenant would reach the application as X-Keygate-Tenant.
 * Dropped unless underscores_in_headers on, and then still dropped when its
 * "-" spelling is a header keygate sets or strips. */
static bool
drop_underscored(const struct kg_config *cfg, const char *name, const char *value,
                 const char *conn_tokens)
{
    char dashed[256];
    size_t n = strlen(name);

    if (!cfg->underscores_in_headers || n >= sizeof(dashed))
        return true;
    for (size_t i = 0; i <= n; i++)
        dashed[i] = name[i] == '_' ? '-' : name[i];
    return keygate_owned(cfg, dashed, value, conn_tokens);
}

bool
kg_headers_drop_request(const struct kg_config *cfg, const char *name, const char *value,
                        const char *conn_tokens, bool trusted_peer)
{
    if (strchr(name, '_') != NULL && drop_underscored(cfg, name, value, conn_tokens))
        return true;
    if (kg_headers_hop_by_hop(name, conn_tokens) || is_replaced(name))
        return true;
    /* The client address a proxy in trusted_proxies tells; anyone else's is forged. */
    if (!trusted_peer && strcasecmp(name, "X-Real-IP") == 0)
        return true;
    /* Identity headers come only from keygate: a forged one never arrives. */
    if (strncasecmp(name, "X-Keygate-", 10) == 0)
        return true;
    if (!cfg->forward_credentials && kg_credhdr_is_credential(cfg, name, value))
        return true;
    return false;
}

bool
kg_headers_drop_response(const char *name, const char *conn_tokens)
{
    return kg_headers_hop_by_hop(name, conn_tokens) || strcasecmp(name, "Content-Length") == 0 ||
           strcasecmp(name, "Date") == 0;
}

bool
kg_headers_request_id_ok(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n >= KG_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* Request ids need to be unique and unguessable, not secret: drawing them
 * from a per-thread pool refilled 256 ids at a time saves a getrandom(2)
 * per request. */
#define ID_POOL_BYTES 4096
static _Thread_local unsigned char id_pool[ID_POOL_BYTES];
static _Thread_local size_t id_pool_used = ID_POOL_BYTES;

void
kg_headers_new_request_id(char out[KG_REQUEST_ID_MAX])
{
    if (id_pool_used + 16 > ID_POOL_BYTES) {
        randombytes_buf(id_pool, sizeof(id_pool));
        id_pool_used = 0;
    }
    sodium_bin2hex(out, KG_REQUEST_ID_MAX, id_pool + id_pool_used, 16);
    id_pool_used += 16;
}

bool
kg_headers_is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL)))
            return false;
    }
    return true;
}
