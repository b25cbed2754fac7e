/* server/upurl.c - the upstream URL as a pre-parsed CURLU (keygate/upurl.h), kept
 * with the loop's pooled easy handles (server/loop.c). */
#include "keygate/upurl.h"

#include <stdlib.h>
#include <string.h>

struct kg_upbase {
    char *upstream; /* the directive's value parsed into base; NULL: none yet */
    CURLU *base;    /* scheme, host and port; NULL: upstream unusable as a CURLU */
    char *prefix;   /* the upstream's own path, trailing slashes removed */
    unsigned gen;   /* bumped at each new upstream */
};

struct kg_upbase *
kg_upbase_new(void)
{
    return calloc(1, sizeof(struct kg_upbase));
}

static void
base_clear(struct kg_upbase *b)
{
    free(b->upstream);
    curl_url_cleanup(b->base);
    free(b->prefix);
    b->upstream = b->prefix = NULL;
    b->base = NULL;
}

void
kg_upbase_free(struct kg_upbase *b)
{
    if (b == NULL)
        return;
    base_clear(b);
    free(b);
}

static bool
is_upper_hex(char c)
{
    return c >= 'A' && c <= 'F';
}

/* Bytes curl would read differently as a CURLU part than inside a URL string. */
static bool
part_fits(const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;

        if (c <= 0x20 || c == 0x7f || c == '#')
            return false;
        if (c == '%' && (is_upper_hex(p[1]) || (p[1] != '\0' && is_upper_hex(p[2]))))
            return false;
    }
    return true;
}

bool
kg_upurl_fits(const char *path, const char *query)
{
    return part_fits(path) && (query == NULL || part_fits(query));
}

/* base := scheme://authority of upstream, prefix := its path. */
static void
base_parse(struct kg_upbase *b, const char *upstream)
{
    const char *auth = strstr(upstream, "://"), *path;
    size_t plen;
    char *head = NULL;

    b->gen++;
    b->upstream = strdup(upstream);
    if (b->upstream == NULL || auth == NULL)
        return;
    path = auth + 3 + strcspn(auth + 3, "/");
    plen = strlen(path);
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    head = strndup(upstream, (size_t)(path - upstream));
    b->prefix = strndup(path, plen);
    b->base = curl_url();
    if (head == NULL || b->prefix == NULL || b->base == NULL || !part_fits(b->prefix) ||
        curl_url_set(b->base, CURLUPART_URL, head, CURLU_PATH_AS_IS) != CURLUE_OK) {
        curl_url_cleanup(b->base);
        b->base = NULL;
    }
    free(head);
}

bool
kg_upurl_point(struct kg_upbase *b, struct kg_upurl *h, const char *upstream, const char *path,
               const char *query)
{
    size_t plen, xlen;
    char buf[1024], *full;
    bool ok;

    if (b->upstream == NULL || strcmp(b->upstream, upstream) != 0) {
        base_clear(b);
        base_parse(b, upstream);
    }
    if (b->base == NULL || !kg_upurl_fits(path, query))
        return false;
    if (h->u == NULL || h->gen != b->gen) {
        curl_url_cleanup(h->u);
        h->u = curl_url_dup(b->base);
        h->gen = b->gen;
        if (h->u == NULL)
            return false;
    }
    plen = strlen(b->prefix);
    xlen = strlen(path);
    full = plen + xlen < sizeof(buf) ? buf : malloc(plen + xlen + 1);
    if (full == NULL)
        return false;
    memcpy(full, b->prefix, plen);
    memcpy(full + plen, path, xlen + 1);
    ok = curl_url_set(h->u, CURLUPART_PATH, full, 0) == CURLUE_OK &&
         curl_url_set(h->u, CURLUPART_QUERY, query, 0) == CURLUE_OK;
    if (full != buf)
        free(full);
    return ok;
}

void
kg_upurl_cleanup(struct kg_upurl *h)
{
    curl_url_cleanup(h->u);
    h->u = NULL;
    h->gen = 0;
}
