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

static void
add_raw(struct kg_outbound *ob, const char *line)
{
    struct curl_slist *n;

    if (ob->failed)
        return;
    n = curl_slist_append(ob->headers, line);
    if (n == NULL)
        ob->failed = true;
    else
        ob->headers = n;
}

static void
add_header(struct kg_outbound *ob, const char *name, const char *value)
{
    char line[2048], *big;
    size_t n;

    /* curl sends "Name;" as an empty header; "Name:" would remove it. */
    if (value[0] == '\0')
        n = (size_t)snprintf(line, sizeof(line), "%s;", name);
    else
        n = (size_t)snprintf(line, sizeof(line), "%s: %s", name, value);
    if (n < sizeof(line)) {
        add_raw(ob, line);
        return;
    }
    /* A long header (a JWT, a big cookie) is forwarded whole, never cut or dropped. */
    big = malloc(n + 1);
    if (big == NULL) {
        ob->failed = true;
        return;
    }
    if (value[0] == '\0')
        snprintf(big, n + 1, "%s;", name);
    else
        snprintf(big, n + 1, "%s: %s", name, value);
    add_raw(ob, big);
    free(big);
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
    /* "Name:" with nothing after it stops curl adding a header the client did not send. */
    if (!in->has_accept)
        add_raw(ob, "Accept:");
    add_raw(ob, "Expect:");
    if (!ob->failed && !target_url(ob, in))
        ob->failed = true;
    return ob->failed ? KG_ENOMEM : KG_OK;
}

void
kg_outbound_cleanup(struct kg_outbound *ob)
{
    curl_slist_free_all(ob->headers);
    free(ob->url);
    memset(ob, 0, sizeof(*ob));
}
