/* http/front.c - WHERE A REQUEST ENTERS. Owns struct kg_req (allocated when
 * libmicrohttpd reports the request line, freed when it reports the request
 * complete) and the access handler: hygiene, credential, path, decision,
 * then keygate's own answer or the relay. It neither decides (auth/) nor
 * talks to the upstream (proxy/). With `signup on`, POST signup_path is
 * the one request taken before the key decision: its body is collected
 * here and the signup itself (manage/signup.c) runs on the worker thread. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <gnutls/gnutls.h>
#include <sodium.h>

#include "keygate/accesslog.h"
#include "keygate/clientip.h"
#include "keygate/credential.h"
#include "keygate/decide.h"
#include "keygate/front.h"
#include "keygate/headers.h"
#include "keygate/hygiene.h"
#include "keygate/json_io.h"
#include "keygate/keycache.h"
#include "keygate/keywatch.h"
#include "keygate/limiter.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/pathnorm.h"
#include "keygate/rawguard.h"
#include "keygate/relay.h"
#include "keygate/respond.h"
#include "keygate/scope.h"
#include "keygate/signup.h"
#include "keygate/throttle.h"
#include "keygate/timeutil.h"
#include "keygate/tls.h"
#include "keygate/worker.h"

#define KG_RESPONSE_BLOCK (64 * 1024)
#define KG_CONN_TOKENS_MAX 1024
#define KG_XFF_MAX 2048

enum req_phase {
    REQ_NEW = 0,
    REQ_DEFERRED,
    REQ_PROXYING,
    REQ_ANSWERED,
    REQ_ANSWERED_MID_BODY, /* answered on the socket itself: read the rest, then close */
    REQ_SIGNUP_BODY, /* reading a signup body */
    REQ_SIGNUP_WAIT, /* suspended while the worker runs the signup */
    REQ_KEYWATCH,    /* suspended while the key watch asks the store (keywatch.h) */
};

/* A signup in flight: the body, then the worker's answer. Owned by its
 * kg_req; the worker touches it only between submit and resume. */
struct signup_job {
    struct kg_job job; /* first member: the worker hands this pointer back */
    struct kg_runtime *rt;
    const struct kg_config *cfg; /* the request's, borrowed: the job ends before the request */
    struct kg_loop *loop;
    struct MHD_Connection *conn;
    struct kg_jbody body;
    _Atomic bool done;
    struct kg_answer err; /* the answer when secret is NULL */
    char *secret;         /* 201 body holding the key (json_io dump_secret) */
    size_t secret_len;
};

struct kg_req {
    struct kg_loop *loop;
    /* The config this request runs under, from its request line to its
     * completion, whatever a reload publishes meanwhile (kg_cfgswap). */
    const struct kg_config *cfg;
    enum req_phase phase;
    char *uri;  /* raw request target as received */
    char *uri_raw; /* forward_auth: uri as received while uri holds the original target */
    struct MHD_Connection *watch_conn; /* REQ_KEYWATCH: what keywatch_done resumes */
    bool rechecked;                    /* the key watch was asked already */
    char *path; /* normalised path */
    const char *query; /* into uri, after '?', or NULL */
    struct kg_exchange *x;
    struct kg_answer *deferred; /* our answer, sent once the request is read */
    /* mode forward_auth: the 200 to send once the request is read */
    struct MHD_Response *allow;
    struct signup_job *signup;
    bool has_body;
    bool body_done;
    bool deny_body_header; /* forward_auth: repeat our answer's body in X-Keygate-Deny-Body */
    char request_id[KG_REQUEST_ID_MAX];
    struct kg_rl_fields rl; /* rate-limit headers for whatever answer goes out */
    /* Credits to charge when the upstream's answer arrives with a 2xx: the
     * key's stat record (it outlives the snapshot released in first_call). */
    struct kg_keystat *charge_to;
    int64_t cost;
    /* keygate_requests_total: what this request counts as, not yet counted
     * (a proxied request counts when the upstream answers or fails). */
    enum kg_outcome outcome;
    /* The access log line, gathered as the request goes (request_logged). */
    int64_t t0_us;
    unsigned status, upstream_status; /* 0 until an answer is queued */
    int64_t bytes_sent;
    enum kg_outcome log_outcome;
    char method[KG_ACCESSLOG_METHOD_MAX];
    bool head; /* the request on this connection is a HEAD (forward_auth: the question) */
    char remote[KG_CLIENTIP_MAX];
    char key_id[KG_ID_MAX];
    char tenant[KG_ACCESSLOG_TENANT_MAX];
};

/* Facts gathered in one pass over the request headers. */
struct scan {
    const struct kg_config *cfg;
    struct kg_hygiene hy;
    struct kg_cred cred;
    char conn_tokens[KG_CONN_TOKENS_MAX];
    char xff[KG_XFF_MAX];
    const char *host;
    const char *fwd_proto, *fwd_host; /* X-Forwarded-Proto/-Host: believed from a trusted peer */
    const char *request_id;
    bool has_accept;
    size_t header_bytes;
    /* mode forward_auth: the original request, as the front proxy names it */
    const char *orig_method, *orig_uri; /* X-Original-Method, X-Original-URI (nginx) */
    const char *fwd_method, *fwd_uri;   /* X-Forwarded-Method, X-Forwarded-Uri (Traefik) */
    bool fa_repeated;                   /* one of them more than once */
    bool deny_body_header;              /* X-Keygate-Deny-Body: header (see send_answer) */
};

/* src into dst[cap], cut to cap - 1 bytes (the access log's fixed fields). */
static void
copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void
fa_capture(struct scan *sc, const char *key, const char *value)
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

static void
append_list(char *dst, size_t cap, const char *v)
{
    size_t used = strlen(dst);

    if (used + strlen(v) + 2 < cap)
        snprintf(dst + used, cap - used, "%s%s", used > 0 ? ", " : "", v);
}

static enum MHD_Result
scan_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
            const char *value, size_t value_size)
{
    struct scan *sc = cls;

    (void)kind;
    sc->header_bytes += key_size + value_size + 4;
    if (value != NULL)
        kg_hygiene_feed_mhd(&sc->hy, key, key_size, value, value_size);
    else
        kg_hygiene_feed(&sc->hy, key, key_size, "", 0);
    kg_credential_feed(&sc->cred, sc->cfg, key, value, value != NULL ? value_size : 0);
    if (value == NULL)
        return MHD_YES;
    if (strcasecmp(key, "Connection") == 0)
        append_list(sc->conn_tokens, sizeof(sc->conn_tokens), value);
    else if (strcasecmp(key, "X-Forwarded-For") == 0)
        kg_clientip_xff_append(sc->xff, sizeof(sc->xff), value);
    else if (strcasecmp(key, "Host") == 0)
        sc->host = value;
    else if (strcasecmp(key, "X-Request-Id") == 0)
        sc->request_id = value;
    else if (strcasecmp(key, "X-Forwarded-Proto") == 0)
        sc->fwd_proto = value; /* the last line: the one a trusted proxy added */
    else if (strcasecmp(key, "X-Forwarded-Host") == 0)
        sc->fwd_host = value;
    else if (strcasecmp(key, "Accept") == 0)
        sc->has_accept = true;
    else if (sc->cfg->mode == KG_MODE_FORWARD_AUTH)
        fa_capture(sc, key, value);
    return MHD_YES;
}

struct build {
    const struct kg_config *cfg;
    const struct scan *sc;
    struct curl_slist *list;
    bool trusted; /* the peer is in trusted_proxies */
    bool failed;
};

static void
add_raw(struct build *b, const char *line)
{
    struct curl_slist *n;

    if (b->failed)
        return;
    n = curl_slist_append(b->list, line);
    if (n == NULL)
        b->failed = true;
    else
        b->list = n;
}

static void
add_header(struct build *b, const char *name, const char *value)
{
    char line[2048], *big;
    size_t n;

    /* curl sends "Name;" as an empty header; "Name:" would remove it. */
    if (value[0] == '\0')
        n = (size_t)snprintf(line, sizeof(line), "%s;", name);
    else
        n = (size_t)snprintf(line, sizeof(line), "%s: %s", name, value);
    if (n < sizeof(line)) {
        add_raw(b, line);
        return;
    }
    /* A long header (a JWT, a big cookie) is forwarded whole, never cut or dropped. */
    big = malloc(n + 1);
    if (big == NULL) {
        b->failed = true;
        return;
    }
    if (value[0] == '\0')
        snprintf(big, n + 1, "%s;", name);
    else
        snprintf(big, n + 1, "%s: %s", name, value);
    add_raw(b, big);
    free(big);
}

static enum MHD_Result
copy_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
            const char *value, size_t value_size)
{
    struct build *b = cls;

    (void)kind;
    (void)key_size;
    (void)value_size;
    if (value != NULL &&
        !kg_headers_drop_request(b->cfg, key, value, b->sc->conn_tokens, b->trusted))
        add_header(b, key, value);
    return MHD_YES;
}

static const char *
peer_address(struct MHD_Connection *conn, char *buf, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;

    buf[0] = '\0';
    if (sa == NULL)
        return buf;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                  (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                  (socklen_t)len);
    return buf;
}

/* Whether the socket peer is in trusted_proxies. */
static bool
peer_trusted(struct MHD_Connection *conn, const struct kg_config *cfg)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct kg_ipaddr peer;

    return cfg->ntrusted_proxies > 0 && ci != NULL &&
           kg_clientip_from_sockaddr(ci->client_addr, &peer) &&
           kg_clientip_trusted(cfg->trusted_proxies, cfg->ntrusted_proxies, &peer);
}

/* The client a request counts against: the peer, or the right-most
 * untrusted X-Forwarded-For hop when the peer is a trusted proxy. */
static const char *
client_ip(struct MHD_Connection *conn, const struct kg_config *cfg, const struct scan *sc,
          char *buf, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct kg_ipaddr peer;

    if (ci == NULL || !kg_clientip_from_sockaddr(ci->client_addr, &peer)) {
        buf[0] = '\0';
        return buf;
    }
    kg_clientip_resolve(cfg->trusted_proxies, cfg->ntrusted_proxies, &peer, sc->xff, buf, len);
    return buf;
}

static void
add_rl_headers(const struct kg_req *req, struct MHD_Response *resp)
{
    for (size_t i = 0; i < req->rl.n; i++)
        MHD_add_response_header(resp, req->rl.name[i], req->rl.value[i]);
}

static enum MHD_Result
send_answer(struct kg_req *req, struct MHD_Connection *conn, const struct kg_answer *ans)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    char retry[24];

    /* Queued on the first call, libmicrohttpd would close the connection; a
     * request without a body is answered on its final call instead, so
     * keep-alive survives a 401. One with a body is answered now and closed
     * rather than read in full. */
    if (req->phase == REQ_NEW && !req->has_body) {
        req->deferred = malloc(sizeof(*req->deferred));
        if (req->deferred != NULL) {
            *req->deferred = *ans;
            req->phase = REQ_DEFERRED;
            return MHD_YES;
        }
    }
    req->phase = REQ_ANSWERED;
    req->status = ans->status;
    req->bytes_sent = req->head ? 0 : (int64_t)ans->body_len; /* HEAD: no body goes out */
    resp = MHD_create_response_from_buffer(ans->body_len, (void *)ans->body,
                                           MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    add_rl_headers(req, resp);
    if (ans->www_authenticate != NULL)
        MHD_add_response_header(resp, "WWW-Authenticate", ans->www_authenticate);
    if (ans->retry_after_s > 0) {
        snprintf(retry, sizeof(retry), "%d", ans->retry_after_s);
        MHD_add_response_header(resp, "Retry-After", retry);
    }
    if (ans->allow != NULL)
        MHD_add_response_header(resp, "Allow", ans->allow);
    /* nginx's auth_request drops a subrequest's body; its recipe asks for the
     * body as a header (one line of JSON) to answer the client with it. */
    if (req->deny_body_header)
        MHD_add_response_header(resp, "X-Keygate-Deny-Body", ans->body);
    if (ans->close || atomic_load(&kg_loop_runtime(req->loop)->draining))
        MHD_add_response_header(resp, "Connection", "close");
    ret = MHD_queue_response(conn, ans->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* mode forward_auth, allowed: 200 with an empty body and who is asking, for
 * the front proxy to copy upstream. Deferred like send_answer(). */
static enum MHD_Result
send_allow(struct kg_req *req, struct MHD_Connection *conn, const struct kg_keyent *key)
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
    add_rl_headers(req, resp);
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

static enum MHD_Result
send_deferred(struct kg_req *req, struct MHD_Connection *conn)
{
    enum MHD_Result ret;

    req->phase = REQ_ANSWERED;
    if (req->allow == NULL)
        return send_answer(req, conn, req->deferred);
    if (atomic_load(&kg_loop_runtime(req->loop)->draining))
        MHD_add_response_header(req->allow, "Connection", "close");
    req->status = 200;
    req->bytes_sent = 0;
    ret = MHD_queue_response(conn, 200, req->allow);
    MHD_destroy_response(req->allow);
    req->allow = NULL;
    return ret;
}

static enum MHD_Result
send_error(struct kg_req *req, struct MHD_Connection *conn, unsigned status, const char *msg)
{
    struct kg_answer ans;

    kg_respond_error(req->cfg, status, msg, &ans);
    return send_answer(req, conn, &ans);
}

/* ---- an answer while the request body is still arriving ---- */

struct raw_answer {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void
raw_put(struct raw_answer *r, const char *p, size_t n)
{
    if (r->failed)
        return;
    if (r->len + n > r->cap) {
        size_t ncap = r->cap == 0 ? 4096 : r->cap;
        char *nb;

        while (ncap < r->len + n)
            ncap *= 2;
        nb = realloc(r->buf, ncap);
        if (nb == NULL) {
            r->failed = true;
            return;
        }
        r->buf = nb;
        r->cap = ncap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
}

static void
raw_header(struct raw_answer *r, const char *name, const char *value)
{
    raw_put(r, name, strlen(name));
    raw_put(r, ": ", 2);
    raw_put(r, value, strlen(value));
    raw_put(r, "\r\n", 2);
}

static void
raw_upstream_header(void *ctx, const char *name, const char *value)
{
    /* Framing is keygate's: the body goes out whole with its own length. */
    if (strcasecmp(name, "Content-Length") != 0 && strcasecmp(name, "Transfer-Encoding") != 0)
        raw_header(ctx, name, value);
}

/* Writes all of r to the client; false when the socket would not take it. */
static bool
raw_send(struct MHD_Connection *conn, const struct raw_answer *r)
{
    const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *tls = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    size_t done = 0;

    if (fd == NULL)
        return false;
    while (done < r->len) {
        ssize_t n;

        if (tls != NULL && tls->tls_session != NULL)
            n = gnutls_record_send(tls->tls_session, r->buf + done, r->len - done);
        else
            n = send(fd->connect_fd, r->buf + done, r->len - done, MSG_NOSIGNAL);
        if (n <= 0)
            return false; /* an answer bigger than the socket buffer to a stalled client */
        done += (size_t)n;
    }
    shutdown(fd->connect_fd, SHUT_WR);
    return true;
}

/* The upstream exchange ended (its answer in full, a failure or a timeout)
 * while the client's body is still arriving. libmicrohttpd 0.9.75 queues an
 * answer only before the body or after all of it, and calls us only when
 * bytes arrive, so a client that stalled mid-upload would hear nothing: the
 * answer is written on the socket here, with Connection: close and the
 * write side shut. The rest of the body is read and dropped, and a client
 * that sends nothing more is closed a second later (its idle timeout). */
static void
answer_mid_body(void *ctx)
{
    struct kg_req *req = ctx;
    struct MHD_Connection *conn = kg_relay_connection(req->x);
    struct raw_answer r = {0};
    struct kg_answer ans;
    char line[64], len[32];
    const char *body;
    size_t blen;
    char *ubody = NULL;
    unsigned status;
    bool upstream = kg_relay_phase(req->x) == KG_RELAY_HEADERS;

    if (req->phase != REQ_PROXYING)
        return;
    if (upstream && !kg_relay_take_body(req->x, &ubody, &blen))
        upstream = false; /* failed mid-answer: 502 */
    if (upstream) {
        status = kg_relay_status(req->x);
        body = ubody;
        kg_metrics_count(req->outcome);
        if (req->charge_to != NULL && status >= 200 && status <= 299)
            kg_keycache_charge(req->charge_to, req->cost);
        req->upstream_status = status;
    } else {
        status = kg_relay_phase(req->x) == KG_RELAY_FAILED ? kg_relay_fail_status(req->x) : 502;
        kg_respond_error(req->cfg, status,
                         status == 504   ? "Upstream timed out"
                         : status == 503 ? "Service is shutting down"
                                         : "Upstream is unavailable",
                         &ans);
        body = ans.body;
        blen = ans.body_len;
        if (status != 503)
            kg_metrics_count(KG_OUTCOME_UPSTREAM_ERROR);
        req->log_outcome = status == 503 ? KG_OUTCOME_NONE : KG_OUTCOME_UPSTREAM_ERROR;
    }
    req->charge_to = NULL;
    req->outcome = KG_OUTCOME_NONE;
    snprintf(line, sizeof(line), "HTTP/1.1 %u %s\r\n", status, MHD_get_reason_phrase_for(status));
    raw_put(&r, line, strlen(line));
    if (upstream) {
        kg_relay_each_header(req->x, raw_upstream_header, &r);
    } else {
        raw_header(&r, "Content-Type", "application/json");
    }
    snprintf(len, sizeof(len), "%zu", req->head ? (size_t)0 : blen);
    raw_header(&r, "Content-Length", len);
    raw_header(&r, "X-Request-Id", req->request_id);
    raw_header(&r, "Connection", "close");
    raw_put(&r, "\r\n", 2);
    if (!req->head)
        raw_put(&r, body, blen);
    req->phase = REQ_ANSWERED_MID_BODY;
    req->status = status;
    req->bytes_sent = req->head ? 0 : (int64_t)blen;
    if (r.failed || !raw_send(conn, &r)) {
        req->status = 0;
        req->bytes_sent = -1;
    }
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned int)1);
    free(r.buf);
    free(ubody);
}

/* Builds the upstream request and starts the relay for an allowed request. */
static enum MHD_Result
start_proxy(struct kg_req *req, struct MHD_Connection *conn, const char *method,
            const struct scan *sc, const struct kg_keyent *key)
{
    const struct kg_config *cfg = req->cfg;
    struct build b = {.cfg = cfg, .sc = sc};
    struct kg_relay_req rq = {.method = method, .conn = conn, .cfg = cfg};
    struct kg_err err = {{0}};
    char peer[INET6_ADDRSTRLEN], xff[KG_XFF_MAX + INET6_ADDRSTRLEN + 4];
    const char *proto, *host;
    size_t ulen = strlen(cfg->upstream);
    char *url;
    int n;

    b.trusted = peer_trusted(conn, cfg);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, copy_header, &b);
    peer_address(conn, peer, sizeof(peer));
    snprintf(xff, sizeof(xff), "%s%s%s", sc->xff, sc->xff[0] != '\0' ? ", " : "", peer);
    add_header(&b, "X-Forwarded-For", xff);
    proto = kg_loop_runtime(req->loop)->tls != NULL ? "https" : "http";
    host = sc->host;
    /* Behind a trusted proxy (a load balancer that ended TLS) the scheme and
     * host the client used are the proxy's to tell; anyone else's are ours. */
    if ((sc->fwd_proto != NULL || sc->fwd_host != NULL) && b.trusted) {
        if (sc->fwd_proto != NULL && strcasecmp(sc->fwd_proto, "https") == 0)
            proto = "https";
        else if (sc->fwd_proto != NULL && strcasecmp(sc->fwd_proto, "http") == 0)
            proto = "http";
        if (sc->fwd_host != NULL && sc->fwd_host[0] != '\0')
            host = sc->fwd_host;
    }
    add_header(&b, "X-Forwarded-Proto", proto);
    if (host != NULL)
        add_header(&b, "X-Forwarded-Host", host);
    add_header(&b, "X-Request-Id", req->request_id);
    add_header(&b, "X-Keygate-Key-Id", key->id);
    add_header(&b, "X-Keygate-Tenant", key->tenant);
    add_header(&b, "X-Keygate-User-Id", key->user_id);
    /* What the key may really do: its scopes within its owner's role now. */
    add_header(&b, "X-Keygate-Scopes", key->effective_str);
    /* "Name:" with nothing after it stops curl adding a header the client did not send. */
    if (!sc->has_accept)
        add_raw(&b, "Accept:");
    add_raw(&b, "Expect:");
    if (b.failed) {
        curl_slist_free_all(b.list);
        return send_error(req, conn, 500, "Internal error");
    }
    while (ulen > 0 && cfg->upstream[ulen - 1] == '/')
        ulen--;
    n = snprintf(NULL, 0, "%.*s%s%s%s", (int)ulen, cfg->upstream, req->path,
                 req->query != NULL ? "?" : "", req->query != NULL ? req->query : "");
    url = malloc((size_t)n + 1);
    if (url == NULL) {
        curl_slist_free_all(b.list);
        return send_error(req, conn, 500, "Internal error");
    }
    snprintf(url, (size_t)n + 1, "%.*s%s%s%s", (int)ulen, cfg->upstream, req->path,
             req->query != NULL ? "?" : "", req->query != NULL ? req->query : "");
    rq.url = url;
    rq.headers = b.list;
    rq.has_body = kg_hygiene_has_body(&sc->hy);
    rq.body_size = sc->hy.n_te > 0 ? -1 : sc->hy.content_length;
    if (kg_relay_start(req->loop, &rq, &req->x, &err) != KG_OK) {
        free(url);
        kg_log_warnx("proxy: %s", err.msg);
        return send_error(req, conn, 500, "Internal error");
    }
    free(url);
    kg_relay_on_mid_body_end(req->x, answer_mid_body, req);
    req->phase = REQ_PROXYING;
    return MHD_YES;
}

/* ---- signup: POST signup_path with `signup on`, the one request without a key ---- */

static void
signup_job_free(struct signup_job *j)
{
    if (j == NULL)
        return;
    if (j->body.data != NULL)
        sodium_memzero(j->body.data, j->body.len); /* it held a password */
    kg_jbody_cleanup(&j->body);
    kg_json_io_secret_free(j->secret);
    free(j);
}

/* Hands the answer back to the loop. After the resume the loop may complete
 * and free the request at any moment, so j is not touched again. */
static void
signup_finish(struct signup_job *j)
{
    struct MHD_Connection *conn = j->conn;
    struct kg_loop *loop = j->loop;

    /* After the resume the loop thread may free j: read it all first. */
    atomic_store(&j->done, true);
    MHD_resume_connection(conn);
    kg_loop_kick(loop);
}

/* jansson frees strings without wiping them; the password is wiped in place. */
static void
wipe_member(json_t *root, const char *name)
{
    json_t *v = json_object_get(root, name);

    if (json_is_string(v))
        sodium_memzero((char *)json_string_value(v), json_string_length(v));
}

static void
signup_answer_created(struct signup_job *j, const struct kg_user_rec *user, const char *key)
{
    json_t *doc = json_pack("{s:{s:s, s:s, s:s, s:s, s:s}, s:s}", "user", "uid", user->id,
                            "username", user->username, "email", user->email, "first_name",
                            user->first_name, "last_name", user->last_name, "api_key", "");

    j->secret = doc != NULL ? kg_json_io_dump_secret(doc, "api_key", key, &j->secret_len) : NULL;
    json_decref(doc);
    if (j->secret == NULL)
        kg_respond_error(j->cfg, 500, "Internal error", &j->err);
}

/* On the worker thread: decode, create the account (Argon2id and one store
 * transaction), load the new key into the cache so it works at once. */
static void
signup_run(struct kg_job *job, void *thread_ctx)
{
    struct signup_job *j = (struct signup_job *)job;
    const struct kg_config *cfg = j->cfg;
    struct kg_keys_ctx kc = {.store = thread_ctx, .secret = j->rt->secret, .cfg = cfg};
    struct kg_signup_req rq = {0};
    struct kg_jfield fields[KG_SIGNUP_FIELDS];
    size_t nfields = kg_signup_fields(&rq, fields);
    struct kg_user_rec *user = calloc(1, sizeof(*user));
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_err err = {{0}};
    json_t *root = NULL;
    char *key = NULL;
    enum kg_status rc = KG_ENOMEM;
    int64_t now = kg_time_now();

    if (user != NULL && rec != NULL)
        rc = kg_json_io_decode(j->body.data, j->body.len, fields, nfields, &root, &err);
    if (rc == KG_OK)
        rc = kg_signup_create(&kc, &rq, now, user, rec, &key, &err);
    if (root != NULL)
        wipe_member(root, "password");
    json_decref(root);
    switch (rc) {
    case KG_OK:
        if (kg_keycache_sync(j->rt->keys, thread_ctx, now, NULL, &err) != KG_OK)
            kg_log_warnx("signup: applying key changes: %s", err.msg);
        signup_answer_created(j, user, key);
        break;
    case KG_EINVAL:
        kg_respond_error(cfg, 400, err.msg, &j->err);
        break;
    case KG_ECONFLICT:
        kg_respond_error(cfg, 409, err.msg, &j->err);
        break;
    case KG_ENOTFOUND:
        kg_log_warnx("signup: %s (check signup_tenant)", err.msg);
        kg_respond_error(cfg, 503, "Signup is not available", &j->err);
        break;
    default:
        kg_log_warnx("signup: %s", err.msg[0] != '\0' ? err.msg : kg_status_str(rc));
        kg_respond_error(cfg, 500, "Internal error", &j->err);
        break;
    }
    kg_keys_key_free(key);
    free(user);
    free(rec);
    signup_finish(j);
}

static void
signup_cancel(struct kg_job *job)
{
    struct signup_job *j = (struct signup_job *)job;

    kg_respond_error(j->cfg, 503, "Service is shutting down", &j->err);
    signup_finish(j);
}

/* First call of a signup request: the per-IP limit, then the framing of the
 * body; the body itself is collected by the next calls. */
static enum MHD_Result
signup_start(struct kg_req *req, struct MHD_Connection *conn, const struct scan *sc)
{
    struct kg_runtime *rt = kg_loop_runtime(req->loop);
    struct kg_answer ans;
    const char *ct;
    int64_t retry_ms = 0;

    /* Every attempt counts, good or bad: the limit is what stops password
     * and e-mail guessing through this endpoint. */
    if (rt->signup_limit != NULL &&
        !kg_throttle_take(rt->signup_limit, req->remote, kg_time_mono_ms(), &retry_ms)) {
        kg_respond_error(req->cfg, 429, "Too many signup requests", &ans);
        ans.retry_after_s = kg_throttle_retry_after_s(retry_ms);
        return send_answer(req, conn, &ans);
    }
    ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    if (!kg_json_io_content_type_ok(ct))
        return send_error(req, conn, 415, "Content-Type must be application/json");
    if (sc->hy.content_length > KG_JSON_BODY_MAX)
        return send_error(req, conn, 413, "Request body is larger than 64 KiB");
    req->signup = calloc(1, sizeof(*req->signup));
    if (req->signup == NULL)
        return send_error(req, conn, 500, "Internal error");
    req->signup->job.run = signup_run;
    req->signup->job.cancel = signup_cancel;
    req->signup->rt = rt;
    req->signup->cfg = req->cfg;
    req->signup->conn = conn;
    req->signup->loop = req->loop;
    kg_jbody_init(&req->signup->body);
    req->phase = REQ_SIGNUP_BODY;
    return MHD_YES;
}

/* Later calls: collect the body; at its end, queue the job and suspend. */
static enum MHD_Result
signup_continue(struct kg_req *req, struct MHD_Connection *conn, const char *upload_data,
                size_t *upload_data_size)
{
    struct signup_job *j = req->signup;
    struct kg_runtime *rt = kg_loop_runtime(req->loop);

    if (req->phase == REQ_SIGNUP_BODY) {
        if (*upload_data_size > 0) {
            kg_jbody_feed(&j->body, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (j->body.too_big)
            return send_error(req, conn, 413, "Request body is larger than 64 KiB");
        if (j->body.failed)
            return send_error(req, conn, 500, "Internal error");
        req->phase = REQ_SIGNUP_WAIT;
        /* Suspended before the job is queued, so the worker's resume can
         * never come first. */
        MHD_suspend_connection(conn);
        if (rt->worker == NULL || kg_worker_submit(rt->worker, &j->job) != KG_OK) {
            kg_respond_error(req->cfg, 503, "Signup is busy, try again later", &j->err);
            signup_finish(j);
        }
        return MHD_YES;
    }
    *upload_data_size = 0;
    if (!atomic_load(&j->done))
        return MHD_YES;
    req->phase = REQ_ANSWERED;
    if (j->secret != NULL) {
        struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(
            j->secret_len, j->secret, kg_json_io_secret_free);
        enum MHD_Result ret;

        if (resp == NULL)
            return MHD_NO;
        j->secret = NULL; /* the response owns it now */
        req->status = 201;
        req->bytes_sent = (int64_t)j->secret_len;
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        MHD_add_response_header(resp, "X-Request-Id", req->request_id);
        ret = MHD_queue_response(conn, 201, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    return send_answer(req, conn, &j->err);
}

static bool
is_scope_verdict(enum kg_verdict v)
{
    return v == KG_ALLOW || v == KG_DENY_SCOPE || v == KG_DENY_NO_SCOPES ||
           v == KG_DENY_NO_ROUTE || v == KG_DENY_ROLE;
}

/* The raw request target: with STRICT_FOR_CLIENT 0 libmicrohttpd 0.9.75
 * keeps blanks inside it (it looks for the version from the end), so a
 * space, a tab or another control character arrives here and is refused. */
static bool
target_ok(const char *t)
{
    for (const char *p = t; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            return false;
    return true;
}

/* TRACE echoes the request, credentials and cookies included, back to
 * whoever can read the answer (cross-site tracing); TRACK is IIS's name for
 * it. Refused in any letter case, as some upstreams match methods so. */
static bool
method_refused(const char *m)
{
    return strcasecmp(m, "TRACE") == 0 || strcasecmp(m, "TRACK") == 0;
}

/* libmicrohttpd 0.9.75 passes any bytes up to the first space as the method;
 * one that is not an HTTP token (RFC 9110 5.6.2) must not reach the upstream. */
static bool
method_ok(const char *m)
{
    if (m == NULL || m[0] == '\0' || strlen(m) > 32)
        return false;
    for (const char *p = m; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              strchr("!#$%&'*+-.^_`|~", c) != NULL))
            return false;
    }
    return true;
}

/* Checks the key's and its owner's tier limits for a request whose key is
 * valid (count: spend one, else only read, for answers such as a 403) and
 * keeps the headers every such answer carries. A key without a rate of its
 * own has the config default; a tier the config does not name has no limit. */
static void
rate_check(struct kg_req *req, const struct kg_runtime *rt, const struct kg_keyent *key,
           const struct kg_tier *tier, bool count, struct kg_limit_verdict *v)
{
    const struct kg_config *cfg = req->cfg;
    struct kg_limit_req lr = {
        .key_id = key->id,
        .key_rate = key->has_rate           ? &key->rate
                    : cfg->has_default_rate ? &cfg->default_rate
                                            : NULL,
        .user_id = key->user_id,
        .tier_rate = tier != NULL ? &tier->rate : NULL,
    };

    kg_limiter_check(kg_keycache_limiter(rt->keys), &lr, kg_time_mono_us(), count, v);
    kg_respond_ratelimit_headers(cfg, v, key->has_rate ? "key" : "default", key->tier, &req->rl);
}

/* The brute-force throttle, before any key lookup: an IP in its cool-down
 * is refused whatever key it sends, so guessing costs no digest. */
static bool
throttle_refuses(const struct kg_runtime *rt, const struct kg_config *cfg, const char *ip,
                 int64_t now_ms, struct kg_answer *ans)
{
    struct kg_decision d = {.verdict = KG_DENY_THROTTLED};
    int64_t retry_ms = 0;

    if (!kg_throttle_cooling(rt->auth_cooldown, ip, now_ms, &retry_ms))
        return false;
    kg_respond_verdict(cfg, &d, ans);
    ans->retry_after_s = kg_throttle_retry_after_s(retry_ms);
    return true;
}

/* Counts the answer to a key that was found (an invalid key names none):
 * after the decision and the rate step, before anything can fail. A health
 * check is not a use of the API and counts nothing. */
static void
count_usage(const struct kg_decision *d, const struct kg_limit_verdict *lv, bool health)
{
    if (d->key == NULL || health)
        return;
    switch (d->verdict) {
    case KG_ALLOW:
        kg_keycache_count(d->key, lv->allowed ? KG_USAGE_REQUEST : KG_USAGE_DENIED_RATE);
        break;
    case KG_DENY_EXPIRED:
        kg_keycache_count(d->key, KG_USAGE_DENIED_EXPIRED);
        break;
    case KG_DENY_SCOPE:
    case KG_DENY_NO_SCOPES:
    case KG_DENY_NO_ROUTE:
    case KG_DENY_ROLE:
        kg_keycache_count(d->key, KG_USAGE_DENIED_FORBIDDEN);
        break;
    default:
        break;
    }
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

/* The key watch's answer, on its thread: the request is decided again
 * whatever it says. After the resume the loop may free req at any moment. */
static void
keywatch_done(void *arg, bool known)
{
    struct kg_req *req = arg;
    struct MHD_Connection *conn = req->watch_conn;
    struct kg_loop *loop = req->loop;

    (void)known;
    MHD_resume_connection(conn);
    kg_loop_kick(loop);
}

static enum MHD_Result
decide_first(struct kg_req *req, struct MHD_Connection *conn, const char *method,
             const char *version)
{
    struct kg_runtime *rt = kg_loop_runtime(req->loop);
    const struct kg_config *cfg = req->cfg;
    struct scan sc = {.cfg = cfg};
    const struct kg_keysnap *snap;
    struct kg_decision d;
    struct kg_limit_verdict lv = {.allowed = true};
    const struct kg_tier *tier;
    struct kg_answer ans;
    bool health, over_quota = false, own = true;
    enum kg_rawguard_reason raw;
    const char *why, *q;
    enum MHD_Result ret;
    size_t plen;
    int64_t now, now_ms;

    raw = kg_rawguard_rejected(conn, method);
    if (raw != KG_RAWGUARD_OK) {
        /* The raw-bytes guard's stand-in for a head it refused: that head
         * never reached the library, so no method or path is logged. */
        req->method[0] = '\0';
        req->head = false;
        free(req->uri);
        req->uri = NULL;
        q = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (q != NULL && kg_headers_request_id_ok(q)) /* the refused head's own */
            snprintf(req->request_id, sizeof(req->request_id), "%s", q);
        else
            kg_headers_new_request_id(req->request_id);
        req->has_body = true; /* answered now, and closed */
        req->outcome = KG_OUTCOME_BAD_REQUEST;
        return send_error(req, conn, kg_rawguard_status(raw), kg_rawguard_message(raw));
    }
    kg_hygiene_init(&sc.hy);
    kg_credential_init(&sc.cred);
    kg_hygiene_version(&sc.hy, version);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_header, &sc);
    req->deny_body_header = sc.deny_body_header;
    client_ip(conn, cfg, &sc, req->remote, sizeof(req->remote));
    if (atomic_load(&rt->draining)) {
        /* Keep-alive clients keep sending during a drain: nothing new starts,
         * and the answer closes the connection so they go elsewhere. */
        kg_headers_new_request_id(req->request_id);
        req->has_body = true;
        return send_error(req, conn, 503, "Service is shutting down");
    }
    why = kg_hygiene_verdict(&sc.hy);
    req->has_body = kg_hygiene_has_body(&sc.hy) || why != NULL;
    if (sc.request_id != NULL && kg_headers_request_id_ok(sc.request_id))
        snprintf(req->request_id, sizeof(req->request_id), "%s", sc.request_id);
    else
        kg_headers_new_request_id(req->request_id);

    if (why == NULL && req->method[0] == '\0') /* first_call found it no token */
        why = "Malformed request method";
    if (why == NULL && req->uri != NULL && !target_ok(req->uri))
        why = "Malformed request target";
    if (why != NULL) {
        req->has_body = true; /* answer now and close: the framing is not to be trusted */
        req->outcome = KG_OUTCOME_BAD_REQUEST;
        return send_error(req, conn, 400, why);
    }
    req->outcome = KG_OUTCOME_BAD_REQUEST;
    if (req->uri == NULL)
        return send_error(req, conn, 400, "Malformed request target");
    if (sc.header_bytes + strlen(req->uri) > (size_t)cfg->max_header_bytes)
        return send_error(req, conn, 431, "Request header fields too large");
    if (cfg->mode == KG_MODE_FORWARD_AUTH) {
        char *target;

        why = fa_original(cfg, &sc, &method, req->uri, &target, &own);
        if (why == NULL && target == NULL)
            return send_error(req, conn, 500, "Internal error");
        if (why == NULL && !method_ok(method))
            why = "Malformed request method";
        if (why != NULL) {
            free(target);
            return send_error(req, conn, 400, why);
        }
        /* From here on the request is the one asked about, in the log too. */
        free(req->uri_raw);
        req->uri_raw = req->uri;
        req->uri = target;
        copy_cut(req->method, sizeof(req->method), method);
    }
    if (method_refused(method)) {
        kg_respond_error(cfg, 405, "Method not allowed", &ans);
        ans.allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
        return send_answer(req, conn, &ans);
    }
    req->outcome = KG_OUTCOME_NONE;
    q = strchr(req->uri, '?');
    plen = q != NULL ? (size_t)(q - req->uri) : strlen(req->uri);
    req->query = q != NULL ? q + 1 : NULL;
    req->path = malloc(plen + 1);
    if (req->path == NULL)
        return send_error(req, conn, 500, "Internal error");
    if (kg_pathnorm(req->uri, plen, req->path, plen + 1, NULL) != KG_OK) {
        req->outcome = KG_OUTCOME_BAD_REQUEST;
        return send_error(req, conn, 400, "Malformed request path");
    }
    /* In forward_auth the API gets the client's raw path, not ours: decide
     * only a path that normalising leaves as it is (up to the case of an
     * escape's hex digits), or "/v1/admin/x/../../items" would be judged as
     * "/v1/items" and served as whatever the API makes of it. */
    if (cfg->mode == KG_MODE_FORWARD_AUTH &&
        (strlen(req->path) != plen || strncasecmp(req->path, req->uri, plen) != 0)) {
        req->outcome = KG_OUTCOME_BAD_REQUEST;
        return send_error(req, conn, 400, "Request path is not in normal form");
    }
    /* keygate's own endpoints answer only requests addressed to it, never
     * a question about an upstream path of the same name. */
    if (own && cfg->signup && strcmp(method, "POST") == 0 &&
        strcmp(req->path, cfg->signup_path) == 0)
        return signup_start(req, conn, &sc);

    health = own && strcmp(req->path, "/health") == 0 &&
             (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0);
    now_ms = kg_time_mono_ms();
    if (throttle_refuses(rt, cfg, req->remote, now_ms, &ans)) {
        req->outcome = KG_OUTCOME_RATE_LIMITED;
        return send_answer(req, conn, &ans);
    }
    now = kg_time_now();
    snap = kg_keycache_acquire(rt->keys);
    kg_decide(cfg, snap, rt->secret, &sc.cred, method, req->path, now, &d);
    /* A key the CLI made a moment ago may be in the store before the next
     * poll: the key watch's thread asks (rate-limited) while this request
     * alone is suspended, then it is decided again from the top. */
    if (d.unknown && !req->rechecked && kg_keywatch_due(rt->keywatch, now_ms)) {
        kg_keycache_release(snap);
        req->rechecked = true;
        req->phase = REQ_KEYWATCH;
        req->watch_conn = conn;
        /* Suspended before asking, so the answer's resume never comes first. */
        MHD_suspend_connection(conn);
        if (!kg_keywatch_ask(rt->keywatch, d.digest, now_ms, keywatch_done, req))
            keywatch_done(req, false);
        return MHD_YES;
    }
    if (kg_verdict_is_auth_failure(d.verdict))
        kg_throttle_fail(rt->auth_failures, rt->auth_cooldown, req->remote, now_ms);
    if (d.key != NULL) {
        copy_cut(req->key_id, sizeof(req->key_id), d.key->id);
        copy_cut(req->tenant, sizeof(req->tenant), d.key->tenant);
    }
    /* The owner's tier, looked up once for the limits below. */
    tier = d.key != NULL ? kg_config_tier(cfg, d.key->tier) : NULL;
    if (d.verdict == KG_ALLOW && !health) {
        req->cost = kg_scope_cost(cfg, method, req->path);
        /* The key's credits, its owner's and the owner's tier quota, asked
         * first: a request refused for them must not spend a rate token. */
        over_quota = !kg_keycache_spend_allow(d.key, tier, req->cost, now);
    }
    if (d.key != NULL && is_scope_verdict(d.verdict)) {
        kg_keycache_touch(d.key, now);
        /* Only a request that would be proxied spends; every other answer
         * to a valid key shows where it stands. */
        rate_check(req, rt, d.key, tier, d.verdict == KG_ALLOW && !health && !over_quota, &lv);
    }
    /* A request refused for its credits is not let through: not counted. */
    if (!over_quota)
        count_usage(&d, &lv, health);

    if (health) {
        /* /health tells whether the key is valid, whatever the routes say. */
        if (is_scope_verdict(d.verdict))
            kg_respond_health(&ans);
        else
            kg_respond_verdict(cfg, &d, &ans);
        ret = send_answer(req, conn, &ans);
    } else if (d.verdict != KG_ALLOW) {
        req->outcome = kg_metrics_outcome_of(d.verdict);
        kg_respond_verdict(cfg, &d, &ans);
        ret = send_answer(req, conn, &ans);
    } else if (over_quota) {
        int64_t wait = kg_keycache_spend_retry_after(d.key, tier, req->cost, now);

        d.verdict = KG_DENY_QUOTA;
        req->outcome = KG_OUTCOME_QUOTA_EXCEEDED;
        kg_respond_verdict(cfg, &d, &ans);
        /* Credits that refill: when the last refusing limit starts again. */
        if (wait > 0)
            ans.retry_after_s = wait > 86400 * 31 ? 86400 * 31 : (int)wait;
        ret = send_answer(req, conn, &ans);
    } else if (!lv.allowed) {
        req->outcome = KG_OUTCOME_RATE_LIMITED;
        kg_respond_rate_limited(cfg, &lv, &ans);
        ret = send_answer(req, conn, &ans);
    } else if (cfg->mode == KG_MODE_FORWARD_AUTH) {
        /* No upstream status ever comes back here: the allow is the charge. */
        kg_keycache_charge(d.key->stat, req->cost);
        req->outcome = KG_OUTCOME_ALLOWED;
        ret = send_allow(req, conn, d.key);
    } else {
        /* Every key is charged, with a limit or not, so its credits used
         * are known when it gets one. */
        req->charge_to = d.key->stat;
        ret = start_proxy(req, conn, method, &sc, d.key);
        if (req->phase == REQ_PROXYING)
            req->outcome = KG_OUTCOME_ALLOWED;
    }
    kg_keycache_release(snap);
    return ret;
}

/* Times keygate's own part of a request: from here to our answer, or to
 * handing the request to the relay. Our own answers count their outcome
 * now, before the client can see them; a proxied one waits for the upstream. */
static enum MHD_Result
first_call(struct kg_req *req, struct MHD_Connection *conn, const char *method, const char *version)
{
    int64_t t0 = kg_time_mono_us();
    enum MHD_Result ret;

    req->outcome = KG_OUTCOME_NONE;
    /* A method that is not a token is logged as null: it may be anything, a key included. */
    copy_cut(req->method, sizeof(req->method), method_ok(method) ? method : "");
    req->head = method != NULL && strcmp(method, "HEAD") == 0;
    ret = decide_first(req, conn, method, version);
    if (req->phase == REQ_KEYWATCH)
        return ret; /* timed and counted when decided again */
    req->log_outcome = req->outcome;
    kg_metrics_request_time(kg_time_mono_us() - t0);
    if (req->phase != REQ_PROXYING) {
        kg_metrics_count(req->outcome);
        req->outcome = KG_OUTCOME_NONE;
    }
    return ret;
}

static ssize_t
read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct kg_req *req = cls;
    ssize_t n = kg_relay_pull_body(req->x, buf, max);

    (void)pos;
    if (n > 0) {
        req->bytes_sent += n;
        return n;
    }
    if (n == -1)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n == -2)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    kg_relay_suspend(req->x);
    return 0;
}

static void
add_upstream_header(void *ctx, const char *name, const char *value)
{
    MHD_add_response_header(ctx, name, value);
}

static enum MHD_Result
send_upstream_answer(struct kg_req *req, struct MHD_Connection *conn)
{
    unsigned status = kg_relay_status(req->x);
    int64_t cl = kg_relay_content_length(req->x);
    struct MHD_Response *resp;
    enum MHD_Result ret;
    char *body;
    size_t blen;

    req->phase = REQ_ANSWERED;
    req->status = status;
    req->upstream_status = status;
    req->bytes_sent = 0; /* the body's bytes are added as they go */
    kg_metrics_count(req->outcome);
    req->outcome = KG_OUTCOME_NONE;
    /* Charged when the upstream's status line and headers arrive with a
     * 2xx, before the body streams: a 2xx is the upstream's word that it
     * did the work. Anything else (its 4xx/5xx, our 502/504) costs nothing. */
    if (req->charge_to != NULL && status >= 200 && status <= 299)
        kg_keycache_charge(req->charge_to, req->cost);
    req->charge_to = NULL;
    if (status == 204 || status == 304 || (req->head && cl < 0))
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    else if (!req->head && kg_relay_take_body(req->x, &body, &blen)) {
        req->bytes_sent = (int64_t)blen;
        resp = MHD_create_response_from_buffer(blen, body, MHD_RESPMEM_MUST_FREE);
    } else {
        resp = MHD_create_response_from_callback(cl >= 0 ? (uint64_t)cl : MHD_SIZE_UNKNOWN,
                                                 KG_RESPONSE_BLOCK, read_body, req, NULL);
    }
    if (resp == NULL)
        return MHD_NO;
    kg_relay_each_header(req->x, add_upstream_header, resp);
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    add_rl_headers(req, resp);
    if (atomic_load(&kg_loop_runtime(req->loop)->draining))
        MHD_add_response_header(resp, "Connection", "close");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
               const char *version, const char *upload_data, size_t *upload_data_size,
               void **req_cls)
{
    struct kg_req *req = *req_cls;

    (void)cls;
    (void)url; /* already unescaped by the library; we use the raw target */
    if (req == NULL)
        return MHD_NO;
    if (req->phase == REQ_NEW) {
        kg_loop_conn_headers_done(req->loop, conn);
        return first_call(req, conn, method, version);
    }
    if (req->phase == REQ_KEYWATCH) {
        /* Resumed: decided again from the request as received. */
        req->phase = REQ_NEW;
        free(req->path);
        req->path = NULL;
        if (req->uri_raw != NULL) {
            free(req->uri);
            req->uri = req->uri_raw;
            req->uri_raw = NULL;
        }
        return first_call(req, conn, method, version);
    }
    if (req->phase == REQ_SIGNUP_BODY || req->phase == REQ_SIGNUP_WAIT)
        return signup_continue(req, conn, upload_data, upload_data_size);
    if (req->phase == REQ_DEFERRED) {
        *upload_data_size = 0;
        return send_deferred(req, conn);
    }
    if (req->phase == REQ_ANSWERED) {
        *upload_data_size = 0; /* a body after our own answer is read and dropped */
        return MHD_YES;
    }
    if (req->phase == REQ_ANSWERED_MID_BODY) {
        if (*upload_data_size == 0)
            return MHD_NO; /* all of it read: close now, a FIN rather than a reset */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size -= kg_relay_push_body(req->x, upload_data, *upload_data_size);
        if (*upload_data_size > 0)
            kg_relay_suspend(req->x); /* no room: wait for the upstream to read */
        return MHD_YES;
    }
    if (!req->body_done) {
        req->body_done = true;
        kg_relay_body_done(req->x);
    }
    switch (kg_relay_phase(req->x)) {
    case KG_RELAY_WAITING:
        kg_relay_suspend(req->x);
        return MHD_YES;
    case KG_RELAY_FAILED:
        if (kg_relay_fail_status(req->x) == 502 || kg_relay_fail_status(req->x) == 504)
            kg_metrics_count(KG_OUTCOME_UPSTREAM_ERROR);
        req->outcome = KG_OUTCOME_NONE;
        req->log_outcome = kg_relay_fail_status(req->x) == 503 ? KG_OUTCOME_NONE
                                                                : KG_OUTCOME_UPSTREAM_ERROR;
        return send_error(req, conn, kg_relay_fail_status(req->x),
                          kg_relay_fail_status(req->x) == 504   ? "Upstream timed out"
                          : kg_relay_fail_status(req->x) == 503 ? "Service is shutting down"
                                                                : "Upstream is unavailable");
    case KG_RELAY_HEADERS:
        break;
    }
    return send_upstream_answer(req, conn);
}

static void *
uri_logger(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct kg_req *req = calloc(1, sizeof(*req));

    (void)conn;
    if (req == NULL)
        return NULL;
    req->loop = cls;
    req->cfg = kg_cfgswap_acquire(kg_loop_runtime(req->loop)->config);
    req->outcome = KG_OUTCOME_NONE;
    req->log_outcome = KG_OUTCOME_NONE;
    if (kg_accesslog_enabled(kg_loop_runtime(req->loop)->accesslog))
        req->t0_us = kg_time_mono_us();
    req->uri = strdup(uri != NULL ? uri : "");
    atomic_fetch_add(&kg_loop_runtime(req->loop)->inflight, 1);
    return req;
}

/* One access log line: a copy into the log's ring, nothing formatted or
 * written here (obs/accesslog.c). A full ring drops the line. */
static void
request_logged(const struct kg_req *req, struct MHD_Connection *conn)
{
    struct kg_accesslog *al = kg_loop_runtime(req->loop)->accesslog;
    struct kg_accesslog_rec *r;
    char remote[KG_CLIENTIP_MAX];
    size_t plen;

    if (!kg_accesslog_enabled(al))
        return;
    /* Refused before the headers were read: the peer is all there is. */
    if (req->remote[0] == '\0')
        peer_address(conn, remote, sizeof(remote));
    /* The query string is left out: it may hold anything, credentials included. */
    plen = req->uri != NULL ? strcspn(req->uri, "?") : 0;
    r = kg_accesslog_reserve(al);
    if (r == NULL)
        return; /* the ring is full: dropped and counted */
    r->time_ms = 0; /* the writer makes it from end_mono_us */
    r->end_mono_us = kg_time_mono_us();
    /* t0_us is 0 when the log was off as the request began (a reload turned it on). */
    r->duration_us = req->t0_us != 0 ? r->end_mono_us - req->t0_us : 0;
    r->status = req->status;
    r->upstream_status = req->upstream_status;
    r->bytes_sent = req->status != 0 ? req->bytes_sent : -1;
    r->outcome = req->log_outcome;
    kg_accesslog_rec_strings(r, req->request_id, req->remote[0] != '\0' ? req->remote : remote,
                             req->method, req->key_id, req->tenant, req->uri, plen);
    kg_accesslog_commit(al, r);
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                  enum MHD_RequestTerminationCode toe)
{
    struct kg_req *req = *req_cls;

    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        kg_loop_conn_request_done(cls, conn); /* the next header block's deadline */
    if (req == NULL)
        return;
    atomic_fetch_sub(&kg_loop_runtime(req->loop)->inflight, 1);
    kg_metrics_count(req->outcome); /* a client gone before its upstream answered */
    request_logged(req, conn);
    kg_relay_free(req->x);
    signup_job_free(req->signup);
    free(req->deferred);
    if (req->allow != NULL)
        MHD_destroy_response(req->allow);
    free(req->uri);
    free(req->uri_raw);
    free(req->path);
    kg_cfgswap_release(req->cfg); /* last: everything above ran under it */
    free(req);
    *req_cls = NULL;
}

/* The connections' memory pool, the most a request head can take: the
 * raw-bytes guard holds no more of a head than that. */
static _Atomic size_t front_pool_bytes;

static void
connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode toe)
{
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        kg_rawguard_watch(conn, atomic_load(&front_pool_bytes));
        *socket_context = kg_loop_conn_open(cls, conn);
    } else {
        kg_loop_conn_close(cls, *socket_context);
        kg_rawguard_forget(conn);
    }
    kg_loop_conn_delta(cls, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
}

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;
    int full;

    (void)cls;
    full = vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    /* Its messages quote the request line: a key there is masked as in the
     * access log, and a run cut short at the end keeps only 4 characters. */
    if (full >= (int)sizeof(msg)) {
        size_t a = n;

        while (a > 0 && (isalnum((unsigned char)msg[a - 1]) || msg[a - 1] == '%'))
            a--;
        if (n > a + 4)
            memset(msg + a + 4, '*', n - a - 4);
    }
    kg_accesslog_mask_keys(msg, n);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    kg_log_debug("libmicrohttpd: %s", msg);
}

enum kg_status
kg_front_parse_addr(const char *hostport, struct sockaddr_storage *out, struct kg_err *err)
{
    char host[KG_ADDR_HOST_MAX];
    int port;

    /* The config module owns the address syntax; this only fills a sockaddr. */
    if (!kg_config_addr_parse(hostport, host, sizeof(host), &port))
        return kg_err_set(err, KG_EINVAL, "address \"%s\" wants host:port", hostport);
    memset(out, 0, sizeof(*out));
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)out;

        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return kg_err_set(err, KG_EINVAL, "address \"%s\": bad IPv6 host", hostport);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)out;

        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return kg_err_set(err, KG_EINVAL, "address \"%s\": bad IPv4 host", hostport);
    }
    return KG_OK;
}

enum kg_status
kg_front_new_daemon(struct kg_loop *loop, struct MHD_Daemon **out, struct kg_err *err)
{
    const struct kg_runtime *rt = kg_loop_runtime(loop);
    const struct kg_config *cfg = kg_cfgswap_acquire(rt->config);
    /* No listen socket: the loop accepts (server/accept.c says why). */
    unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                         MHD_USE_NO_LISTEN_SOCKET;
    struct MHD_OptionItem tls_opts[KG_TLS_MHD_OPTIONS];
    enum kg_status rc = KG_OK;

    /* The memory pool bounds request line + headers; past it the library
     * answers 431 itself (docs/security.md lists what it still answers).
     * libmicrohttpd zeroes the pool between keep-alive requests, so it is
     * kept just above what headers need rather than generous. */
    /* STRICT_FOR_CLIENT 0: in 0.9.75, 1 makes the library close the
     * connection without an answer on a space in the target and answer an
     * HTTP/1.1 request without Host with its status line and headers sent
     * twice (parse_connection_headers' error path). keygate makes both
     * checks itself (target_ok, kg_hygiene) and answers JSON. */
    kg_rawguard_init();
    atomic_store(&front_pool_bytes, (size_t)(cfg->max_header_bytes + 16 * 1024));
    *out = MHD_start_daemon(
        flags | kg_tls_mhd_flags(rt->tls), 0, NULL, NULL, access_handler, loop,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_STRICT_FOR_CLIENT, (int)0,
        MHD_OPTION_URI_LOG_CALLBACK, uri_logger, loop, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, loop, MHD_OPTION_NOTIFY_CONNECTION, connection_notify, loop,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)((cfg->client_timeout_ms + 999) / 1000),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(cfg->max_header_bytes + 16 * 1024),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)10000, MHD_OPTION_ARRAY, kg_tls_mhd_options(rt->tls, tls_opts),
        MHD_OPTION_END);
    if (*out == NULL)
        rc = kg_err_set(err, KG_EIO, "cannot start the HTTP server for %s", cfg->listen);
    /* Sized from the config once: these directives need a restart. */
    kg_cfgswap_release(cfg);
    return rc;
}
