/* http/front.c - WHERE A REQUEST ENTERS, and all it does is adapt
 * libmicrohttpd: it owns struct kg_req (allocated when the library reports
 * the request line, freed when it reports the request complete), reads the
 * request (hygiene, credential, path), asks auth/gate.c whether it is
 * admitted, and then sends keygate's own answer or hands what
 * proxy/outbound.c builds to proxy/relay.c. Signup (front_signup.c) and
 * forward-auth (front_fwdauth.c) are parts of their own. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <gnutls/gnutls.h>

#include "http/front_int.h"
#include "keygate/accesslog.h"
#include "keygate/clientip.h"
#include "keygate/credential.h"
#include "keygate/front.h"
#include "keygate/gate.h"
#include "keygate/headers.h"
#include "keygate/hygiene.h"
#include "keygate/keywatch.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/outbound.h"
#include "keygate/pathnorm.h"
#include "keygate/rawguard.h"
#include "keygate/relay.h"
#include "keygate/reply.h"
#include "keygate/respond.h"
#include "keygate/sender.h"
#include "keygate/timeutil.h"
#include "keygate/tls.h"

#define KG_RESPONSE_BLOCK (64 * 1024)

static void
append_list(char *dst, size_t cap, const char *v)
{
    size_t used = strlen(dst);

    if (used + strlen(v) + 2 < cap)
        snprintf(dst + used, cap - used, "%s%s", used > 0 ? ", " : "", v);
}

static enum MHD_Result
scan_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size, const char *value,
            size_t value_size)
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
        front_fa_capture(sc, key, value);
    return MHD_YES;
}

/* libmicrohttpd's header walk, feeding the upstream request. */
struct outbound_walk {
    struct kg_outbound *ob;
    const struct kg_outbound_in *in;
};

static enum MHD_Result
copy_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size, const char *value,
            size_t value_size)
{
    const struct outbound_walk *w = cls;

    (void)kind;
    (void)key_size;
    (void)value_size;
    kg_outbound_client_header(w->ob, w->in, key, value);
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

void
front_add_rl_headers(const struct kg_req *req, struct MHD_Response *resp)
{
    for (size_t i = 0; i < req->rl.n; i++)
        MHD_add_response_header(resp, req->rl.name[i], req->rl.value[i]);
}

enum MHD_Result
front_send_answer(struct kg_req *req, struct MHD_Connection *conn, const struct kg_answer *ans)
{
    struct kg_reply_hdrs h = {0};

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
    h.request_id = req->request_id;
    h.rl = &req->rl;
    /* nginx's auth_request drops a subrequest's body; its recipe asks for the
     * body as a header (one line of JSON) to answer the client with it. */
    h.deny_body = req->deny_body_header ? ans->body : NULL;
    h.close = atomic_load(&kg_loop_runtime(req->loop)->draining);
    return kg_reply_answer(conn, ans, &h);
}

static enum MHD_Result
send_deferred(struct kg_req *req, struct MHD_Connection *conn)
{
    enum MHD_Result ret;

    req->phase = REQ_ANSWERED;
    if (req->allow == NULL)
        return front_send_answer(req, conn, req->deferred);
    if (atomic_load(&kg_loop_runtime(req->loop)->draining))
        MHD_add_response_header(req->allow, "Connection", "close");
    req->status = 200;
    req->bytes_sent = 0;
    ret = MHD_queue_response(conn, 200, req->allow);
    MHD_destroy_response(req->allow);
    req->allow = NULL;
    return ret;
}

enum MHD_Result
front_send_error(struct kg_req *req, struct MHD_Connection *conn, unsigned status, const char *msg)
{
    struct kg_answer ans;

    kg_respond_error(req->cfg, status, msg, &ans);
    return front_send_answer(req, conn, &ans);
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
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *tls =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
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

/* Charged when the upstream's status line and headers arrive with a 2xx,
 * before the body streams: a 2xx is the upstream's word that it did the
 * work. Anything else (its 4xx/5xx, our 502/504) costs nothing. Once. */
static void
charge_if_2xx(struct kg_req *req, unsigned status)
{
    if (req->charge_to != NULL && status >= 200 && status <= 299) {
        kg_keycache_charge(req->charge_to, req->cost);
        kg_keyreserve_spent(&req->claim);
    }
    kg_keyreserve_give_back(&req->claim);
    req->charge_to = NULL;
}

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
        charge_if_2xx(req, status);
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
    kg_keyreserve_give_back(&req->claim);
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

/* Starts the relay for an admitted request with what proxy/outbound.c
 * builds from the request and the key. */
static enum MHD_Result
start_proxy(struct kg_req *req, struct MHD_Connection *conn, const char *method,
            const struct scan *sc, const struct kg_keyent *key)
{
    const struct kg_config *cfg = req->cfg;
    char peer[INET6_ADDRSTRLEN];
    const struct kg_outbound_in in = {.cfg = cfg,
                                      .path = req->path,
                                      .query = req->query,
                                      .request_id = req->request_id,
                                      .key = key,
                                      .conn_tokens = sc->conn_tokens,
                                      .xff = sc->xff,
                                      .peer = peer_address(conn, peer, sizeof(peer)),
                                      .trusted_peer = peer_trusted(conn, cfg),
                                      .tls = kg_loop_runtime(req->loop)->tls != NULL,
                                      .host = sc->host,
                                      .fwd_proto = sc->fwd_proto,
                                      .fwd_host = sc->fwd_host,
                                      .has_accept = sc->has_accept};
    struct kg_outbound ob;
    struct outbound_walk w = {.ob = &ob, .in = &in};
    struct kg_relay_req rq = {.method = method, .out = &ob, .conn = conn, .cfg = cfg};
    struct kg_err err = {{0}};
    enum kg_status rc;

    kg_outbound_init(&ob);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, copy_header, &w);
    if (kg_outbound_finish(&ob, &in) != KG_OK) {
        kg_outbound_cleanup(&ob);
        return front_send_error(req, conn, 500, "Internal error");
    }
    rq.has_body = kg_hygiene_has_body(&sc->hy);
    rq.body_size = sc->hy.n_te > 0 ? -1 : sc->hy.content_length;
    rc = kg_relay_start(req->loop, &rq, &req->x, &err);
    kg_outbound_cleanup(&ob);
    if (rc != KG_OK) {
        kg_log_warnx("proxy: %s", err.msg);
        return front_send_error(req, conn, 500, "Internal error");
    }
    kg_relay_on_mid_body_end(req->x, answer_mid_body, req);
    req->phase = REQ_PROXYING;
    return MHD_YES;
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
bool
front_method_ok(const char *m)
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

/* The shared limiter's answer, on its thread (or at once): decided again
 * with it. After the resume the loop may free req at any moment. */
static void
limit_done(void *arg)
{
    keywatch_done(arg, true);
}

/* The answer to a refusal (or to /health) that kg_gate_admit() gave. */
static void
gate_answer(const struct kg_config *cfg, const struct kg_admission *adm, struct kg_answer *ans)
{
    if (adm->action == KG_GATE_HEALTH)
        kg_respond_health(ans);
    else if (adm->d.verdict == KG_DENY_RATE)
        kg_respond_rate_limited(cfg, &adm->lv, ans);
    else
        kg_respond_verdict(cfg, &adm->d, ans);
    if (adm->retry_after_s > 0)
        ans->retry_after_s = adm->retry_after_s;
}

/* Admission (auth/gate.c), then what its verdict asks of the connection. */
static enum MHD_Result
admit(struct kg_req *req, struct MHD_Connection *conn, const char *method, const struct scan *sc,
      bool own)
{
    struct kg_runtime *rt = kg_loop_runtime(req->loop);
    const struct kg_gate_env env = {.secret = rt->secret,
                                    .keys = rt->keys,
                                    .limiter = kg_keycache_limiter(rt->keys),
                                    .auth_failures = rt->auth_failures,
                                    .auth_cooldown = rt->auth_cooldown,
                                    .keywatch = rt->keywatch};
    struct kg_gate_in in = {.env = &env,
                            .cfg = req->cfg,
                            .cred = &sc->cred,
                            .method = method,
                            .path = req->path,
                            .client_ip = req->remote,
                            .rechecked = req->rechecked,
                            .limit_wait = &req->limit_wait,
                            .limit_waited = req->limit_waited};
    struct kg_admission adm;
    struct kg_answer ans;
    enum MHD_Result ret;

    in.health = own && strcmp(req->path, "/health") == 0 &&
                (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0);
    in.now_ms = kg_time_mono_ms();
    in.now_us = kg_time_mono_us();
    in.now = kg_time_now();
    kg_gate_admit(&in, &adm);
    if (adm.action == KG_GATE_RECHECK) {
        req->rechecked = true;
        req->phase = REQ_KEYWATCH;
        req->watch_conn = conn;
        /* Suspended before asking, so the answer's resume never comes first. */
        MHD_suspend_connection(conn);
        if (!kg_keywatch_ask(rt->keywatch, adm.d.digest, in.now_ms, keywatch_done, req))
            keywatch_done(req, false);
        return MHD_YES;
    }
    /* Issue 18: reported off the loop by the event sender. */
    if (adm.d.canary != NULL)
        kg_sender_canary(rt->events, adm.d.canary, req->remote, method, req->path,
                         MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "User-Agent"), in.now);
    if (adm.tripped)
        kg_sender_tripped(rt->events, req->remote, in.now);
    if (adm.action == KG_GATE_LIMIT_WAIT) {
        req->limit_waited = true;
        req->phase = REQ_LIMITWAIT;
        req->watch_conn = conn;
        /* Suspended before asking, as for the key watch. */
        MHD_suspend_connection(conn);
        kg_limiter_wait(env.limiter, &req->limit_wait, in.now_us, limit_done, req);
        return MHD_YES;
    }
    if (adm.d.key != NULL) {
        front_copy_cut(req->key_id, sizeof(req->key_id), adm.d.key->id);
        front_copy_cut(req->tenant, sizeof(req->tenant), adm.d.key->tenant);
    }
    if (adm.rated)
        kg_respond_ratelimit_headers(req->cfg, &adm.lv, adm.key_policy, adm.tier, &req->rl);
    req->cost = adm.cost;
    switch (adm.action) {
    case KG_GATE_ALLOW:
        req->outcome = adm.outcome;
        ret = front_fa_send_allow(req, conn, adm.d.key);
        break;
    case KG_GATE_PROXY:
        req->charge_to = adm.charge_to;
        req->claim = adm.claim;
        ret = start_proxy(req, conn, method, sc, adm.d.key);
        if (req->phase == REQ_PROXYING)
            req->outcome = adm.outcome;
        break;
    default:
        req->outcome = adm.outcome;
        gate_answer(req->cfg, &adm, &ans);
        ret = front_send_answer(req, conn, &ans);
        break;
    }
    kg_gate_release(&adm);
    return ret;
}

/* One pass over the headers (scan_header), the client IP and the request id. */
static void
scan_request(struct kg_req *req, struct MHD_Connection *conn, struct scan *sc, const char *version)
{
    kg_hygiene_init(&sc->hy);
    kg_credential_init(&sc->cred);
    kg_hygiene_version(&sc->hy, version);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_header, sc);
    req->deny_body_header = sc->deny_body_header;
    client_ip(conn, sc->cfg, sc, req->remote, sizeof(req->remote));
    if (sc->request_id != NULL && kg_headers_request_id_ok(sc->request_id))
        snprintf(req->request_id, sizeof(req->request_id), "%s", sc->request_id);
    else
        kg_headers_new_request_id(req->request_id);
}

/* A request refused before anything is looked up: a drain (503), framing,
 * request line (400) or size (431). True with *ret the answer queued. */
static bool
refused_as_sent(struct kg_req *req, struct MHD_Connection *conn, const struct scan *sc,
                enum MHD_Result *ret)
{
    const char *why = kg_hygiene_verdict(&sc->hy);

    if (atomic_load(&kg_loop_runtime(req->loop)->draining)) {
        /* Keep-alive clients keep sending during a drain: nothing new starts,
         * and the answer closes the connection so they go elsewhere. */
        kg_headers_new_request_id(req->request_id); /* the client's is not echoed */
        req->has_body = true;
        *ret = front_send_error(req, conn, 503, "Service is shutting down");
        return true;
    }
    req->has_body = kg_hygiene_has_body(&sc->hy) || why != NULL;
    if (why == NULL && req->method[0] == '\0') /* first_call found it no token */
        why = "Malformed request method";
    if (why == NULL && req->uri != NULL && !target_ok(req->uri))
        why = "Malformed request target";
    if (why != NULL)
        req->has_body = true; /* answer now and close: the framing is not to be trusted */
    else if (req->uri == NULL)
        why = "Malformed request target";
    req->outcome = KG_OUTCOME_BAD_REQUEST;
    if (why != NULL) {
        *ret = front_send_error(req, conn, 400, why);
        return true;
    }
    if (sc->header_bytes + strlen(req->uri) > (size_t)sc->cfg->max_header_bytes) {
        *ret = front_send_error(req, conn, 431, "Request header fields too large");
        return true;
    }
    return false;
}

/* Splits the target into the normalised path and the query. True with
 * *ret the answer queued when the path is refused. */
static bool
path_refused(struct kg_req *req, struct MHD_Connection *conn, enum MHD_Result *ret)
{
    const char *q = strchr(req->uri, '?');
    size_t plen = q != NULL ? (size_t)(q - req->uri) : strlen(req->uri);

    req->outcome = KG_OUTCOME_NONE;
    req->query = q != NULL ? q + 1 : NULL;
    req->path = malloc(plen + 1);
    if (req->path == NULL) {
        *ret = front_send_error(req, conn, 500, "Internal error");
        return true;
    }
    req->outcome = KG_OUTCOME_BAD_REQUEST;
    if (kg_pathnorm(req->uri, plen, req->path, plen + 1, NULL) != KG_OK) {
        *ret = front_send_error(req, conn, 400, "Malformed request path");
        return true;
    }
    /* In forward_auth the API gets the client's raw path, not ours: decide
     * only a path that normalising leaves as it is (up to the case of an
     * escape's hex digits), or "/v1/admin/x/../../items" would be judged as
     * "/v1/items" and served as whatever the API makes of it. */
    if (req->cfg->mode == KG_MODE_FORWARD_AUTH &&
        (strlen(req->path) != plen || strncasecmp(req->path, req->uri, plen) != 0)) {
        *ret = front_send_error(req, conn, 400, "Request path is not in normal form");
        return true;
    }
    req->outcome = KG_OUTCOME_NONE;
    return false;
}

/* The first call of a request: read it, refuse what is malformed, then
 * signup or admission (auth/gate.c) and what follows from it. */
static enum MHD_Result
decide_first(struct kg_req *req, struct MHD_Connection *conn, const char *method,
             const char *version)
{
    const struct kg_config *cfg = req->cfg;
    struct scan sc = {.cfg = cfg};
    struct kg_answer ans;
    enum MHD_Result ret;
    enum kg_rawguard_reason raw;
    const char *q;
    bool own = true;

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
        return front_send_error(req, conn, kg_rawguard_status(raw), kg_rawguard_message(raw));
    }
    scan_request(req, conn, &sc, version);
    if (refused_as_sent(req, conn, &sc, &ret))
        return ret;
    if (cfg->mode == KG_MODE_FORWARD_AUTH &&
        front_fa_take_original(req, conn, &sc, &method, &own, &ret))
        return ret;
    if (method_refused(method)) {
        kg_respond_error(cfg, 405, "Method not allowed", &ans);
        ans.allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
        return front_send_answer(req, conn, &ans);
    }
    if (path_refused(req, conn, &ret))
        return ret;
    /* keygate's own endpoints answer only requests addressed to it, never
     * a question about an upstream path of the same name. */
    if (own && cfg->signup && strcmp(method, "POST") == 0 &&
        strcmp(req->path, cfg->signup_path) == 0)
        return front_signup_start(req, conn, &sc);
    /* The console's page and API are keygate's own: never proxied. */
    if (own && front_console_owns(req, method))
        return front_console_start(req, conn, method, &sc);
    return admit(req, conn, method, &sc, own);
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
    front_copy_cut(req->method, sizeof(req->method), front_method_ok(method) ? method : "");
    req->head = method != NULL && strcmp(method, "HEAD") == 0;
    ret = decide_first(req, conn, method, version);
    if (req->phase == REQ_KEYWATCH || req->phase == REQ_LIMITWAIT)
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
    charge_if_2xx(req, status);
    if (status == 204 || status == 304 || (req->head && cl < 0))
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    else if (!req->head && kg_relay_take_body(req->x, &body, &blen)) {
        req->bytes_sent = (int64_t)blen;
        resp = MHD_create_response_from_buffer(blen, body, MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            free(body); /* not taken by a response that could not be made */
    } else {
        resp = MHD_create_response_from_callback(cl >= 0 ? (uint64_t)cl : MHD_SIZE_UNKNOWN,
                                                 KG_RESPONSE_BLOCK, read_body, req, NULL);
    }
    if (resp == NULL)
        return MHD_NO;
    kg_relay_each_header(req->x, add_upstream_header, resp);
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    front_add_rl_headers(req, resp);
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
    if (req->phase == REQ_KEYWATCH || req->phase == REQ_LIMITWAIT) {
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
        return front_signup_continue(req, conn, upload_data, upload_data_size);
    if (req->phase == REQ_CONSOLE_BODY || req->phase == REQ_CONSOLE_WAIT)
        return front_console_continue(req, conn, upload_data, upload_data_size);
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
        req->log_outcome =
            kg_relay_fail_status(req->x) == 503 ? KG_OUTCOME_NONE : KG_OUTCOME_UPSTREAM_ERROR;
        return front_send_error(req, conn, kg_relay_fail_status(req->x),
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
        return;     /* the ring is full: dropped and counted */
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
    /* Ended without a 2xx (or any answer): its credits were not spent. */
    kg_keyreserve_give_back(&req->claim);
    front_signup_free(req->signup);
    front_console_free(req->console);
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
    unsigned int flags =
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
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
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)10000, MHD_OPTION_ARRAY,
        kg_tls_mhd_options(rt->tls, tls_opts), MHD_OPTION_END);
    if (*out == NULL)
        rc = kg_err_set(err, KG_EIO, "cannot start the HTTP server for %s", cfg->listen);
    /* Sized from the config once: these directives need a restart. */
    kg_cfgswap_release(cfg);
    return rc;
}
