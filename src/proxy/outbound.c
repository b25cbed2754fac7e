/* proxy/outbound.c - WHAT GOES UPSTREAM: the URL and header list of an
 * admitted request. Which client header crosses is proxy/headers.c's
 * call; this adds what keygate says about the request (where it came
 * from, its id, who is asking) and hands the whole to proxy/relay.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>

#include "keygate/headers.h"
#include "keygate/outbound.h"

#define XFF_MAX (2048 + INET6_ADDRSTRLEN + 4)

void
kg_outbound_init(struct kg_outbound *ob)
{
    memset(ob, 0, sizeof(*ob));
}

/* Appends "Name: value\r\n" ("Name:\r\n" when empty) to the block: no
 * snprintf and no allocation per header once the block has its size. A
 * long header (a JWT, a big cookie) is forwarded whole, never cut. */
static void
add_header(struct kg_outbound *ob, const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value), need = nlen + vlen + 4;
    char *p;

    if (ob->failed)
        return;
    if (!kg_headers_is_token(name, nlen) || strpbrk(value, "\r\n") != NULL)
        ob->unsendable = true;
    if (ob->lines_len + need > ob->lines_cap) {
        size_t cap = ob->lines_cap != 0 ? ob->lines_cap : 1024;
        char *grown;

        while (cap < ob->lines_len + need)
            cap *= 2;
        grown = realloc(ob->lines, cap);
        if (grown == NULL) {
            ob->failed = true;
            return;
        }
        ob->lines = grown;
        ob->lines_cap = cap;
    }
    p = ob->lines + ob->lines_len;
    memcpy(p, name, nlen);
    p += nlen;
    *p++ = ':';
    if (vlen > 0) {
        *p++ = ' ';
        memcpy(p, value, vlen);
        p += vlen;
    }
    *p++ = '\r';
    *p++ = '\n';
    ob->lines_len = (size_t)(p - ob->lines);
}

static bool
list_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *n = curl_slist_append(*list, line);

    if (n == NULL)
        return false;
    *list = n;
    return true;
}

struct curl_slist *
kg_outbound_curl_list(const char *lines, size_t len, bool no_accept)
{
    struct curl_slist *list = NULL;
    const char *p = lines, *end = lines + len;
    char small[2048], *line = small;
    size_t cap = sizeof(small);
    bool ok = true;

    while (ok && p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        size_t n = eol != NULL ? (size_t)(eol - p) : (size_t)(end - p);

        if (n + 2 > cap) {
            char *big = line == small ? malloc(n + 2) : realloc(line, n + 2);

            if (big == NULL) {
                ok = false;
                break;
            }
            line = big;
            cap = n + 2;
        }
        memcpy(line, p, n);
        line[n] = '\0';
        /* curl sends "Name;" as an empty header; "Name:" would remove it.
         * Empty is "Name:" alone (a name has no colon; a value follows ": "). */
        if (n > 0 && memchr(line, ':', n) == line + n - 1)
            line[n - 1] = ';';
        ok = list_add(&list, line);
        p = eol != NULL ? eol + 2 : end;
    }
    if (line != small)
        free(line);
    /* "Name:" with nothing after it stops curl adding a header the client did not send. */
    if (ok && no_accept)
        ok = list_add(&list, "Accept:");
    if (ok)
        ok = list_add(&list, "Expect:");
    if (!ok) {
        curl_slist_free_all(list);
        return NULL;
    }
    return list;
}

void
kg_outbound_client_header(struct kg_outbound *ob, const struct kg_outbound_in *in, const char *name,
                          const char *value)
{
    if (value != NULL &&
        !kg_headers_drop_request(in->cfg, name, value, in->conn_tokens, in->trusted_peer))
        add_header(ob, name, value);
}

/* upstream + path + "?" query, without the upstream's trailing slashes; a
 * copy of the path after its NUL, so that the relay can hand curl the path
 * and query apart (ob->path, ob->query) from the same allocation. */
static bool
target_url(struct kg_outbound *ob, const struct kg_outbound_in *in)
{
    const char *up = in->cfg->upstream, *q = in->query;
    size_t ulen = strlen(up), plen = strlen(in->path);
    char *url;
    int n;

    while (ulen > 0 && up[ulen - 1] == '/')
        ulen--;
    n = snprintf(NULL, 0, "%.*s%s%s%s", (int)ulen, up, in->path, q != NULL ? "?" : "",
                 q != NULL ? q : "");
    url = malloc((size_t)n + 1 + plen + 1);
    if (url == NULL)
        return false;
    snprintf(url, (size_t)n + 1, "%.*s%s%s%s", (int)ulen, up, in->path, q != NULL ? "?" : "",
             q != NULL ? q : "");
    memcpy(url + n + 1, in->path, plen + 1);
    ob->url = url;
    ob->path = url + n + 1;
    ob->query = q != NULL ? url + ulen + plen + 1 : NULL;
    return true;
}

enum kg_status
kg_outbound_finish(struct kg_outbound *ob, const struct kg_outbound_in *in)
{
    const struct kg_keyent *key = in->key;
    char xff[XFF_MAX];
    const char *proto = in->tls ? "https" : "http", *host = in->host;

    snprintf(xff, sizeof(xff), "%s%s%s", in->xff, in->xff[0] != '\0' ? ", " : "", in->peer);
    add_header(ob, "X-Forwarded-For", xff);
    /* Behind a trusted proxy (a load balancer that ended TLS) the scheme and
     * host the client used are the proxy's to tell; anyone else's are ours. */
    if ((in->fwd_proto != NULL || in->fwd_host != NULL) && in->trusted_peer) {
        if (in->fwd_proto != NULL && strcasecmp(in->fwd_proto, "https") == 0)
            proto = "https";
        else if (in->fwd_proto != NULL && strcasecmp(in->fwd_proto, "http") == 0)
            proto = "http";
        if (in->fwd_host != NULL && in->fwd_host[0] != '\0')
            host = in->fwd_host;
    }
    add_header(ob, "X-Forwarded-Proto", proto);
    if (host != NULL)
        add_header(ob, "X-Forwarded-Host", host);
    add_header(ob, "X-Request-Id", in->request_id);
    add_header(ob, "X-Keygate-Key-Id", key->id);
    add_header(ob, "X-Keygate-Tenant", key->tenant);
    add_header(ob, "X-Keygate-User-Id", key->user_id);
    /* What the key may really do: its scopes within its owner's role now. */
    add_header(ob, "X-Keygate-Scopes", key->effective_str);
    ob->no_accept = !in->has_accept;
    if (!ob->failed && !target_url(ob, in))
        ob->failed = true;
    return ob->failed ? KG_ENOMEM : KG_OK;
}

void
kg_outbound_cleanup(struct kg_outbound *ob)
{
    free(ob->lines);
    free(ob->url);
    memset(ob, 0, sizeof(*ob));
}
