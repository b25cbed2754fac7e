/* http/front_fwdauth.c - mode forward_auth on the public listener: the
 * original request a front proxy (nginx auth_request, Traefik ForwardAuth,
 * Envoy ext_authz) asks about replaces the request's own target and method
 * before it is admitted, and an allow is answered here (200, empty body,
 * the identity headers) instead of being relayed. See docs/forward-auth.md. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/front_int.h"

void
front_fa_capture(struct scan *sc, const char *key, const char *value)
{
    const char **slot = strcasecmp(key, "X-Original-Method") == 0    ? &sc->orig_method
                        : strcasecmp(key, "X-Original-URI") == 0     ? &sc->orig_uri
                        : strcasecmp(key, "X-Forwarded-Method") == 0 ? &sc->fwd_method
                        : strcasecmp(key, "X-Forwarded-Uri") == 0    ? &sc->fwd_uri
                                                                     : NULL;

    if (strcasecmp(key, "X-Keygate-Deny-Body") == 0 && strcasecmp(value, "header") == 0)
        sc->deny_body_header = true;
    if (slot == NULL)
        return;
    if (*slot != NULL)
        sc->fa_repeated = true;
    *slot = value;
}

/* mode forward_auth: the original request's target as the front proxy
 * names it: X-Original-URI (nginx), X-Forwarded-Uri (Traefik), or the own
 * target with forward_auth_prefix removed (Envoy). *own: none of these, the
 * request is addressed to keygate itself. Every source present must agree,
 * so a client cannot slip a header of one contract past a proxy of another.
 * Returns NULL with *target malloc'd (NULL: out of memory), or why it is a 400. */
static const char *
fa_original(const struct kg_config *cfg, const struct scan *sc, const char **method,
            const char *own_target, char **target, bool *own)
{
    const char *m = sc->orig_method, *u = sc->orig_uri, *pfx = cfg->forward_auth_prefix;
    const char *rest = NULL;
    size_t plen = strlen(pfx);

    *own = false;
    *target = NULL;
    if (sc->fa_repeated || (sc->orig_method == NULL) != (sc->orig_uri == NULL) ||
        (sc->fwd_method == NULL) != (sc->fwd_uri == NULL))
        return "Malformed forward-auth request";
    if (u != NULL && sc->fwd_uri != NULL &&
        (strcmp(u, sc->fwd_uri) != 0 || strcmp(m, sc->fwd_method) != 0))
        return "Conflicting forward-auth headers";
    if (u == NULL) {
        m = sc->fwd_method;
        u = sc->fwd_uri;
    }
    while (plen > 0 && pfx[plen - 1] == '/')
        plen--;
    if (plen > 0 && strncmp(own_target, pfx, plen) == 0 &&
        (own_target[plen] == '\0' || own_target[plen] == '/' || own_target[plen] == '?'))
        rest = own_target + plen;
    if (rest != NULL) {
        size_t n = strlen(rest) + 2;

        *target = malloc(n);
        if (*target == NULL)
            return NULL;
        snprintf(*target, n, "%s%s", rest[0] == '/' ? "" : "/", rest);
        if (u != NULL && (strcmp(*target, u) != 0 || strcmp(*method, m) != 0)) {
            free(*target);
            *target = NULL;
            return "Conflicting forward-auth headers";
        }
        return NULL;
    }
    if (u != NULL)
        *method = m;
    else
        *own = true;
    *target = strdup(u != NULL ? u : own_target);
    return NULL;
}

bool
front_fa_take_original(struct kg_req *req, struct MHD_Connection *conn, const struct scan *sc,
                       const char **method, bool *own, enum MHD_Result *ret)
{
    char *target;
    const char *why = fa_original(req->cfg, sc, method, req->uri, &target, own);

    if (why == NULL && target == NULL) {
        *ret = front_send_error(req, conn, 500, "Internal error");
        return true;
    }
    if (why == NULL && !front_method_ok(*method))
        why = "Malformed request method";
    if (why != NULL) {
        free(target);
        *ret = front_send_error(req, conn, 400, why);
        return true;
    }
    /* From here on the request is the one asked about, in the log too. */
    free(req->uri_raw);
    req->uri_raw = req->uri;
    req->uri = target;
    front_copy_cut(req->method, sizeof(req->method), *method);
    return false;
}

/* mode forward_auth, allowed: 200 with an empty body and who is asking, for
 * the front proxy to copy upstream. Deferred like front_send_answer(). */
enum MHD_Result
front_fa_send_allow(struct kg_req *req, struct MHD_Connection *conn, const struct kg_keyent *key)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "X-Keygate-Key-Id", key->id);
    MHD_add_response_header(resp, "X-Keygate-Tenant", key->tenant);
    MHD_add_response_header(resp, "X-Keygate-User-Id", key->user_id);
    /* "" (every scope) must still arrive as a header; libmicrohttpd refuses
     * an empty value, and a blank is what a parser strips to "". */
    MHD_add_response_header(resp, "X-Keygate-Scopes",
                            key->effective_str[0] != '\0' ? key->effective_str : " ");
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    front_add_rl_headers(req, resp);
    if (req->phase == REQ_NEW && !req->has_body) {
        req->allow = resp;
        req->phase = REQ_DEFERRED;
        return MHD_YES;
    }
    req->phase = REQ_ANSWERED;
    req->status = 200;
    req->bytes_sent = 0;
    ret = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}
