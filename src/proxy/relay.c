/* proxy/relay.c - WHERE A REQUEST LEAVES: one exchange with the upstream,
 * streamed both ways through two bounded ring buffers. Owns the curl easy
 * handle, the buffers and the suspend/resume handshake with the client
 * connection; does not decide anything and does not build the request
 * (proxy/outbound.c does). Everything runs on the owning loop's thread. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keygate/headers.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/relay.h"
#include "keygate/timeutil.h"
#include "keygate/upclient.h"
#include "proxy/proxy_int.h"

#define RING_START (16 * 1024)
/* Most answers' header lines fit; small enough for malloc's per-thread cache. */
#define HDRS_START 1024

void
kg_relay_fire_mid_body_end(struct kg_exchange *x)
{
    if (x->has_body && !x->up_done && x->mid_body_end != NULL && !x->mid_body_fired) {
        x->mid_body_fired = true;
        x->mid_body_end(x->mid_body_ctx);
    }
}

/* An upstream that answered in full (by its Content-Length) before the
 * client's body was all sent: curl, its upload paused, would wait for the
 * rest of the body until upstream_timeout, so the answer is final now. The
 * transfer is taken out of the multi when the request ends. */
static void
early_answer_check(struct kg_exchange *x)
{
    if (x->phase != KG_RELAY_HEADERS || !x->has_body || x->up_done || x->content_length < 0 ||
        x->down_total < x->content_length || x->mid_body_end == NULL)
        return;
    x->transfer_done = true;
    x->result = CURLE_OK;
    kg_relay_fire_mid_body_end(x);
}

bool
kg_ring_init(struct kg_ring *r, size_t max)
{
    r->buf = malloc(RING_START);
    r->cap = r->buf != NULL ? RING_START : 0;
    r->max = max;
    r->head = r->len = 0;
    return r->buf != NULL;
}

size_t
kg_ring_room(struct kg_ring *r, size_t n)
{
    while (r->cap - r->len < n && r->cap < r->max) {
        size_t ncap = r->cap * 2 > r->max ? r->max : r->cap * 2;
        char *nb = malloc(ncap);
        size_t len = r->len;

        if (nb == NULL)
            break;
        /* Unwrap into the new buffer so head starts at 0. */
        if (r->head + len <= r->cap) {
            memcpy(nb, r->buf + r->head, len);
        } else {
            size_t first = r->cap - r->head;

            memcpy(nb, r->buf + r->head, first);
            memcpy(nb + first, r->buf, len - first);
        }
        free(r->buf);
        r->buf = nb;
        r->cap = ncap;
        r->head = 0;
    }
    return r->cap - r->len;
}

size_t
kg_ring_put(struct kg_ring *r, const char *p, size_t n)
{
    size_t room = kg_ring_room(r, n), done = 0;

    if (n > room)
        n = room;
    while (done < n) {
        size_t tail = (r->head + r->len) % r->cap;
        size_t chunk = r->cap - tail;

        if (chunk > n - done)
            chunk = n - done;
        memcpy(r->buf + tail, p + done, chunk);
        r->len += chunk;
        done += chunk;
    }
    return n;
}

size_t
kg_ring_get(struct kg_ring *r, char *p, size_t n)
{
    size_t done = 0;

    if (n > r->len)
        n = r->len;
    while (done < n) {
        size_t chunk = r->cap - r->head;

        if (chunk > n - done)
            chunk = n - done;
        memcpy(p + done, r->buf + r->head, chunk);
        r->head = (r->head + chunk) % r->cap;
        r->len -= chunk;
        done += chunk;
    }
    if (r->len == 0)
        r->head = 0;
    return n;
}

void
kg_ring_spans(const struct kg_ring *r, const char **a, size_t *alen, const char **b, size_t *blen)
{
    size_t first = r->cap - r->head;

    *a = r->buf + r->head;
    *b = r->buf;
    if (r->len <= first) {
        *alen = r->len;
        *blen = 0;
    } else {
        *alen = first;
        *blen = r->len - first;
    }
}

void
kg_ring_consume(struct kg_ring *r, size_t n)
{
    if (n > r->len)
        n = r->len;
    r->head = (r->head + n) % r->cap;
    r->len -= n;
    if (r->len == 0)
        r->head = 0;
}

/* Resumes the client connection if we suspended it: there is progress. */
void
kg_relay_wake(struct kg_exchange *x)
{
    if (x->t.suspended) {
        x->t.suspended = false;
        MHD_resume_connection(x->conn);
        kg_loop_note_resume(x->loop);
    }
}

static void
update_pause(struct kg_exchange *x)
{
    int bits = (x->read_paused ? CURLPAUSE_SEND : 0) | (x->write_paused ? CURLPAUSE_RECV : 0);

    if (x->easy != NULL && x->in_multi)
        curl_easy_pause(x->easy, bits);
}

static size_t
on_read(char *p, size_t size, size_t nitems, void *ud)
{
    struct kg_exchange *x = ud;
    size_t n;

    if (x->up.len == 0) {
        if (x->up_done)
            return 0;
        x->read_paused = true;
        return CURL_READFUNC_PAUSE;
    }
    n = kg_ring_get(&x->up, p, size * nitems);
    kg_relay_wake(x); /* the client side may be waiting for room */
    return n;
}

static size_t
on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct kg_exchange *x = ud;
    size_t n = size * nmemb;

    if (x->down.buf == NULL && !kg_ring_init(&x->down, KG_RELAY_BUF_BYTES))
        return 0; /* out of memory: abort the transfer */
    if (kg_ring_room(&x->down, n) < n) {
        x->write_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    kg_ring_put(&x->down, p, n);
    x->down_total += (int64_t)n;
    kg_relay_wake(x);
    early_answer_check(x);
    return n;
}

static size_t
on_header(char *p, size_t size, size_t nitems, void *ud)
{
    struct kg_exchange *x = ud;
    size_t n = size * nitems;
    long code = 0;

    if (n == 2 && p[0] == '\r' && p[1] == '\n') {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 100 && code < 200) {
            x->hdrs_len = 0; /* an interim answer (100 Continue): wait for the final one */
            return n;
        }
        x->status = (unsigned)code;
        kg_metrics_upstream(x->status, kg_time_mono_us() - x->started_us);
        {
            curl_off_t cl = -1;

            curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
            x->content_length = cl;
        }
        x->phase = KG_RELAY_HEADERS;
        kg_relay_wake(x);
        early_answer_check(x); /* Content-Length: 0 */
        return n;
    }
    return kg_relay_add_header_line(x, p, n) ? n : 0;
}

bool
kg_relay_add_header_line(struct kg_exchange *x, const char *p, size_t n)
{
    if (x->hdrs_len + n + 1 > KG_RELAY_MAX_RESP_HEADERS)
        return false; /* an upstream flooding headers gets a 502, not our memory */
    if (x->hdrs_len + n + 1 > x->hdrs_cap) {
        size_t ncap = x->hdrs_cap == 0 ? HDRS_START : x->hdrs_cap * 2;
        char *nb;

        while (ncap < x->hdrs_len + n + 1)
            ncap *= 2;
        nb = realloc(x->hdrs, ncap);
        if (nb == NULL)
            return false;
        x->hdrs = nb;
        x->hdrs_cap = ncap;
    }
    memcpy(x->hdrs + x->hdrs_len, p, n);
    x->hdrs_len += n;
    x->hdrs[x->hdrs_len] = '\0';
    return true;
}

/* libcurl's built-in CA file and directory, to go back to on a pooled
 * handle after a reload dropped upstream_ca. */
static pthread_once_t ca_once = PTHREAD_ONCE_INIT;
static char *ca_default_file, *ca_default_path;

static void
ca_defaults(void)
{
    CURL *e = curl_easy_init();
    char *f = NULL, *d = NULL;

    if (e == NULL)
        return;
    curl_easy_getinfo(e, CURLINFO_CAINFO, &f);
    curl_easy_getinfo(e, CURLINFO_CAPATH, &d);
    ca_default_file = f != NULL ? strdup(f) : NULL;
    ca_default_path = d != NULL ? strdup(d) : NULL;
    curl_easy_cleanup(e);
}

/* What a pooled easy handle keeps from one transfer to the next. */
static void
easy_once(CURL *e, struct kg_loop *loop)
{
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* An https upstream is always verified, name included. A failed check
     * is a 502 like any other. */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, kg_loop_open_upstream_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, loop);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    /* Redirects and content decoding belong to the client, not the gateway. */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(e, CURLOPT_HTTP_TRANSFER_DECODING, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* "" disables proxies outright: an http_proxy in the daemon's environment
     * must not reroute upstream traffic (and curl skips the lookup). */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
}

static void transfer_done(struct kg_loop_transfer *t, CURLcode result);
static void transfer_abort(struct kg_loop_transfer *t);

enum kg_status
kg_relay_start(struct kg_loop *loop, struct kg_relay_req *rq, struct kg_exchange **out,
               struct kg_err *err)
{
    const struct kg_config *cfg = rq->cfg;
    struct kg_exchange *x = calloc(1, sizeof(*x));
    enum kg_status rc = KG_OK;
    CURL *e;

    *out = NULL;
    if (x == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    x->loop = loop;
    x->t.done = transfer_done;
    x->t.abort = transfer_abort;
    x->started_us = kg_time_mono_us();
    x->conn = rq->conn;
    x->req_lines = rq->out->lines;
    x->req_lines_len = rq->out->lines_len;
    rq->out->lines = NULL;
    rq->out->lines_len = rq->out->lines_cap = 0;
    x->has_body = rq->has_body;
    x->content_length = -1;
    if (kg_upclient_wanted(cfg)) {
        x->native = true;
        if (x->has_body && !kg_ring_init(&x->up, KG_RELAY_BUF_BYTES)) {
            rc = kg_err_set(err, KG_ENOMEM, "out of memory");
            goto cleanup;
        }
        rc = kg_upclient_start(x, rq, err);
        if (rc != KG_OK)
            goto cleanup;
        kg_loop_transfer_add(loop, &x->t);
        *out = x;
        return KG_OK;
    }
    if (rq->out->unsendable) {
        rc = kg_err_set(err, KG_EINVAL, "header cannot be written upstream");
        goto cleanup;
    }
    x->req_headers = kg_outbound_curl_list(x->req_lines, x->req_lines_len, rq->out->no_accept);
    x->easy = e = kg_loop_easy_get(loop, &x->url);
    if (x->req_headers == NULL || e == NULL ||
        (x->has_body && !kg_ring_init(&x->up, KG_RELAY_BUF_BYTES))) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    {
        char *was = NULL;

        /* A handle from the loop's pool keeps what its last transfer set
         * (no curl_easy_reset per request): what never varies is set once,
         * on a new handle (no CURLOPT_PRIVATE yet), the rest every time. */
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &was);
        if (was == NULL)
            easy_once(e, loop);
    }
    {
        struct kg_upbase *base = kg_loop_upbase(loop);

        /* The upstream parsed once per loop, the path and query set apart;
         * the URL string only where a CURLU would send other bytes. */
        if (base != NULL &&
            kg_upurl_point(base, &x->url, cfg->upstream, rq->out->path, rq->out->query)) {
            curl_easy_setopt(e, CURLOPT_URL, NULL);
            curl_easy_setopt(e, CURLOPT_CURLU, x->url.u);
        } else {
            curl_easy_setopt(e, CURLOPT_CURLU, NULL);
            curl_easy_setopt(e, CURLOPT_URL, rq->out->url);
        }
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, &x->t);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->req_headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->upstream_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->upstream_timeout_ms);
    /* An idle upstream connection older than this is not reused (closed instead):
     * the upstream's own keep-alive timeout may already have closed it. */
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN,
                     (long)((cfg->upstream_keepalive_timeout_ms + 999) / 1000));
    /* upstream_ca replaces the system CAs; without it, the defaults. Debian's
     * libcurl also trusts /etc/ssl/certs by default: "instead of the system
     * CAs" means clearing that directory as well. */
    if (cfg->upstream_ca != NULL) {
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->upstream_ca);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    } else {
        pthread_once(&ca_once, ca_defaults);
        curl_easy_setopt(e, CURLOPT_CAINFO, ca_default_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, ca_default_path);
    }
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    /* The method from a clean slate: the handle's last request may have set another. */
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    if (strcmp(rq->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(rq->method, "GET") != 0 || x->has_body) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    if (x->has_body || rq->body_size == 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->body_size);
        if (rq->body_size == 0)
            x->up_done = true;
    }
    if (curl_multi_add_handle(kg_loop_multi(loop), e) != CURLM_OK) {
        rc = kg_err_set(err, KG_EIO, "cannot start upstream transfer");
        goto cleanup;
    }
    x->in_multi = true;
    kg_loop_transfer_add(loop, &x->t);
    *out = x;
    x = NULL;
cleanup:
    kg_relay_free(x);
    return rc;
}

size_t
kg_relay_push_body(struct kg_exchange *x, const char *data, size_t len)
{
    size_t n;

    if (x->transfer_done)
        return len; /* the upstream is gone: swallow the rest, the answer is decided */
    if (x->native) {
        size_t done = 0;

        /* The native client writes at once, here, inside the front end's
         * upload callback, where a kg_relay_wake() is lost: the connection
         * is not suspended yet. So what it frees is filled again before
         * returning; the front end suspends only when the ring stays full
         * after a write that made no room (EAGAIN, with EPOLLOUT watched,
         * or no connection yet), and that write's later progress resumes
         * it. A write that emptied the ring (the upstream read everything
         * since its last EAGAIN) would otherwise leave the client
         * suspended with nothing left to resume it. */
        while (done < len) {
            n = kg_ring_put(&x->up, data + done, len - done);
            if (n == 0)
                break;
            done += n;
            kg_upclient_send_more(x);
            if (x->transfer_done)
                return len; /* answered (or failed) meanwhile: as above */
        }
        return done;
    }
    n = kg_ring_put(&x->up, data, len);
    if (n > 0 && x->read_paused) {
        x->read_paused = false;
        update_pause(x);
    }
    return n;
}

void
kg_relay_body_done(struct kg_exchange *x)
{
    x->up_done = true;
    if (x->native) {
        kg_upclient_send_more(x);
        return;
    }
    if (x->read_paused) {
        x->read_paused = false;
        update_pause(x);
    }
}

enum kg_relay_phase
kg_relay_phase(const struct kg_exchange *x)
{
    return x->phase;
}

unsigned
kg_relay_fail_status(const struct kg_exchange *x)
{
    return x->fail_status;
}

unsigned
kg_relay_status(const struct kg_exchange *x)
{
    return x->status;
}

int64_t
kg_relay_content_length(const struct kg_exchange *x)
{
    return x->content_length;
}

/* The comma-joined values of every Connection header of the response. */
static void
connection_tokens(const struct kg_exchange *x, char *out, size_t outlen)
{
    const char *p = x->hdrs;
    size_t used = 0;

    out[0] = '\0';
    while (p != NULL && *p != '\0') {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);

        if (len > 11 && strncasecmp(p, "Connection:", 11) == 0 && used + len < outlen) {
            used += (size_t)snprintf(out + used, outlen - used, "%s%.*s", used > 0 ? "," : "",
                                     (int)(len - 11), p + 11);
        }
        p = eol != NULL ? eol + 2 : NULL;
    }
}

void
kg_relay_each_header(const struct kg_exchange *x,
                     void (*cb)(void *ctx, const char *name, const char *value), void *ctx)
{
    char conn[1024], name[256], value[8192];
    const char *p = x->hdrs;

    connection_tokens(x, conn, sizeof(conn));
    while (p != NULL && *p != '\0') {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        const char *colon = memchr(p, ':', len);

        /* The status line and anything malformed have no colon in a name position. */
        if (colon != NULL && colon > p && (size_t)(colon - p) < sizeof(name) &&
            strncmp(p, "HTTP/", 5) != 0) {
            const char *v = colon + 1;
            size_t vlen = len - (size_t)(v - p);

            memcpy(name, p, (size_t)(colon - p));
            name[colon - p] = '\0';
            while (vlen > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
            }
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (!kg_headers_drop_response(name, conn)) {
                /* Values longer than the stack buffer (bounded by
                 * KG_RELAY_MAX_RESP_HEADERS in total) are passed on whole. */
                char *vb = vlen < sizeof(value) ? value : malloc(vlen + 1);

                if (vb != NULL) {
                    memcpy(vb, v, vlen);
                    vb[vlen] = '\0';
                    cb(ctx, name, vb);
                    if (vb != value)
                        free(vb);
                }
            }
        }
        p = eol != NULL ? eol + 2 : NULL;
    }
}

ssize_t
kg_relay_pull_body(struct kg_exchange *x, char *buf, size_t max)
{
    if (x->down.len > 0) {
        size_t n = kg_ring_get(&x->down, buf, max);

        if (x->native)
            kg_upclient_recv_more(x);
        else if (x->write_paused && x->down.cap - x->down.len >= x->down.max / 2) {
            x->write_paused = false;
            update_pause(x);
        }
        return (ssize_t)n;
    }
    if (x->transfer_done)
        return x->result == CURLE_OK ? -1 : -2;
    return 0;
}

bool
kg_relay_take_body(struct kg_exchange *x, char **out, size_t *len)
{
    if (!x->transfer_done || x->result != CURLE_OK)
        return false;
    *len = x->down.len;
    *out = malloc(x->down.len > 0 ? x->down.len : 1);
    if (*out == NULL)
        return false;
    kg_ring_get(&x->down, *out, x->down.len);
    return true;
}

void
kg_relay_suspend(struct kg_exchange *x)
{
    if (!x->t.suspended) {
        x->t.suspended = true;
        MHD_suspend_connection(x->conn);
    }
}

void
kg_relay_finish(struct kg_exchange *x, CURLcode result, unsigned fail_status)
{
    if (x->in_multi) {
        curl_multi_remove_handle(kg_loop_multi(x->loop), x->easy);
        x->in_multi = false;
    }
    x->transfer_done = true;
    x->result = result;
    if (x->phase == KG_RELAY_WAITING) {
        x->phase = KG_RELAY_FAILED;
        x->fail_status = fail_status;
    }
    kg_relay_wake(x);
    /* A client that stopped mid-body would never be called back to hear it. */
    kg_relay_fire_mid_body_end(x);
}

struct MHD_Connection *
kg_relay_connection(const struct kg_exchange *x)
{
    return x->conn;
}

void
kg_relay_on_mid_body_end(struct kg_exchange *x, void (*cb)(void *ctx), void *ctx)
{
    x->mid_body_end = cb;
    x->mid_body_ctx = ctx;
}

static struct kg_exchange *
exchange_of(struct kg_loop_transfer *t)
{
    return (struct kg_exchange *)(void *)((char *)t - offsetof(struct kg_exchange, t));
}

/* The loop's call: curl finished the transfer with result. */
static void
transfer_done(struct kg_loop_transfer *t, CURLcode result)
{
    struct kg_exchange *x = exchange_of(t);

    if (result != CURLE_OK)
        kg_log_debug("upstream exchange failed: %s", curl_easy_strerror(result));
    kg_relay_finish(x, result, result == CURLE_OPERATION_TIMEDOUT ? 504 : 502);
}

/* The loop's call at shutdown: a transfer still running ends with a 503,
 * and a suspended client connection is resumed so MHD can finish it. */
static void
transfer_abort(struct kg_loop_transfer *t)
{
    struct kg_exchange *x = exchange_of(t);

    if (x->native && !x->transfer_done)
        kg_upclient_release(x); /* the upstream connection is closed, not pooled */
    if (!x->transfer_done)
        kg_relay_finish(x, CURLE_ABORTED_BY_CALLBACK, 503);
    else
        kg_relay_wake(x);
}

void
kg_relay_free(struct kg_exchange *x)
{
    if (x == NULL)
        return;
    if (x->in_multi)
        curl_multi_remove_handle(kg_loop_multi(x->loop), x->easy);
    if (x->native)
        kg_upclient_release(x);
    kg_loop_transfer_remove(x->loop, &x->t);
    kg_loop_easy_put(x->loop, x->easy, &x->url);
    curl_slist_free_all(x->req_headers);
    free(x->req_lines);
    free(x->up.buf);
    free(x->down.buf);
    free(x->hdrs);
    free(x);
}
