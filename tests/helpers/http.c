/* helpers/http.c - libcurl and raw-socket clients for the integration tests.
 * Owns nothing beyond one request's buffers; see http.h. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <curl/curl.h>

#include "helpers/http.h"

#define DEFAULT_TIMEOUT_MS 30000L

int64_t
kt_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
kt_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void
kt_http_pattern(uint64_t offset, void *buf, size_t len)
{
    unsigned char *p = buf;

    /* Not periodic at any small length, so a dropped, repeated or reordered
     * block changes the hash. */
    for (size_t i = 0; i < len; i++) {
        uint64_t x = offset + i;

        p[i] = (unsigned char)((x * 7) ^ (x >> 11) ^ (x >> 19));
    }
}

uint64_t
kt_http_hash(uint64_t h, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t
kt_http_pattern_hash(uint64_t len)
{
    unsigned char block[65536];
    uint64_t h = KT_HTTP_HASH_INIT, off = 0;

    while (off < len) {
        size_t n = len - off < sizeof(block) ? (size_t)(len - off) : sizeof(block);

        kt_http_pattern(off, block, n);
        h = kt_http_hash(h, block, n);
        off += n;
    }
    return h;
}

void
kt_http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void
kt_http_global_cleanup(void)
{
    curl_global_cleanup();
}

/* A growable byte buffer, always NUL-terminated. */
struct dyn {
    char *p;
    size_t len, cap;
    bool failed;
};

static void
dyn_add(struct dyn *d, const void *data, size_t len)
{
    if (d->failed)
        return;
    if (d->len + len + 1 > d->cap) {
        size_t cap = d->cap > 0 ? d->cap : 1024;
        char *p;

        while (cap < d->len + len + 1)
            cap *= 2;
        p = realloc(d->p, cap);
        if (p == NULL) {
            d->failed = true;
            return;
        }
        d->p = p;
        d->cap = cap;
    }
    memcpy(d->p + d->len, data, len);
    d->len += len;
    d->p[d->len] = '\0';
}

/* Everything one transfer needs while it runs. */
struct xfer {
    const struct kt_http_req *req;
    struct kt_http_resp *resp;
    CURL *easy;
    struct curl_slist *hdrs;
    uint64_t sent;
    struct dyn head, body;
    int64_t started_ms;
    bool finished; /* multi: curl reported it done */
};

static size_t
on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    uint64_t total = x->req->generate ? x->req->gen_len : x->req->body_len;
    size_t n = size * nitems;

    if (total - x->sent < n)
        n = (size_t)(total - x->sent);
    if (x->req->generate)
        kt_http_pattern(x->sent, buf, n);
    else if (n > 0)
        memcpy(buf, (const char *)x->req->body + x->sent, n);
    x->sent += n;
    return n;
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nitems;

    /* Keep only the final response's headers (not a 100 Continue's). */
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0)
        x->head.len = 0;
    dyn_add(&x->head, buf, n);
    return n;
}

static size_t
on_write(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nitems;

    x->resp->body_len += n;
    x->resp->body_hash = kt_http_hash(x->resp->body_hash, buf, n);
    if (!x->req->discard_body) {
        dyn_add(&x->body, buf, n);
        if (x->body.failed)
            return 0;
    }
    return n;
}

static bool
xfer_setup(struct xfer *x, const struct kt_http_req *req, struct kt_http_resp *resp)
{
    bool has_body = req->generate || req->body != NULL;
    const char *method = req->method != NULL ? req->method : has_body ? "POST" : "GET";

    memset(x, 0, sizeof(*x));
    memset(resp, 0, sizeof(*resp));
    x->req = req;
    x->resp = resp;
    resp->body_hash = KT_HTTP_HASH_INIT;
    x->easy = curl_easy_init();
    if (x->easy == NULL)
        return false;
    kt_http_note_sent(req->url, strlen(req->url));
    if (req->body != NULL)
        kt_http_note_sent(req->body, req->body_len);
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        struct curl_slist *n = curl_slist_append(x->hdrs, req->headers[i]);

        kt_http_note_sent(req->headers[i], strlen(req->headers[i]));
        if (n == NULL)
            return false;
        x->hdrs = n;
    }
    if (has_body && req->chunked) {
        struct curl_slist *n = curl_slist_append(x->hdrs, "Transfer-Encoding: chunked");

        if (n == NULL)
            return false;
        x->hdrs = n;
    }
    curl_easy_setopt(x->easy, CURLOPT_URL, req->url);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
    /* The target goes out exactly as written: "/x/../admin" is a test case. */
    curl_easy_setopt(x->easy, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(x->easy, CURLOPT_PROXY, "");
    curl_easy_setopt(x->easy, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS,
                     req->timeout_ms > 0 ? req->timeout_ms : DEFAULT_TIMEOUT_MS);
    curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
    if (req->ca_file != NULL)
        curl_easy_setopt(x->easy, CURLOPT_CAINFO, req->ca_file);
    /* Every request on a connection of its own: a test never depends on
     * what an earlier one left behind. */
    curl_easy_setopt(x->easy, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, 1L);
    if (has_body) {
        uint64_t total = req->generate ? req->gen_len : req->body_len;

        curl_easy_setopt(x->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(x->easy, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(x->easy, CURLOPT_READDATA, x);
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         req->chunked ? (curl_off_t)-1 : (curl_off_t)total);
    }
    if (strcmp(method, has_body ? "POST" : "GET") != 0)
        curl_easy_setopt(x->easy, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(x->easy, CURLOPT_NOBODY, 1L);
    x->started_ms = kt_mono_ms();
    return true;
}

/* Moves the collected data into resp and frees the transfer. */
static bool
xfer_finish(struct xfer *x, CURLcode result)
{
    struct kt_http_resp *resp = x->resp;

    resp->curl_result = (int)result;
    resp->seconds = (double)(kt_mono_ms() - x->started_ms) / 1000.0;
    if (x->easy != NULL)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &resp->status);
    resp->headers = x->head.p != NULL ? x->head.p : strdup("");
    if (!x->req->discard_body)
        resp->body = x->body.p != NULL ? x->body.p : strdup("");
    else
        free(x->body.p);
    curl_slist_free_all(x->hdrs);
    curl_easy_cleanup(x->easy);
    memset(&x->head, 0, sizeof(x->head));
    memset(&x->body, 0, sizeof(x->body));
    return result == CURLE_OK && resp->status != 0;
}

bool
kt_http_do(const struct kt_http_req *req, struct kt_http_resp *out)
{
    struct xfer x;
    CURLcode rc = CURLE_FAILED_INIT;

    if (xfer_setup(&x, req, out))
        rc = curl_easy_perform(x.easy);
    return xfer_finish(&x, rc);
}

bool
kt_http_do_many(const struct kt_http_req *reqs, struct kt_http_resp *outs, size_t n)
{
    struct xfer *xs = calloc(n, sizeof(*xs));
    CURLM *multi = curl_multi_init();
    bool ok = xs != NULL && multi != NULL;
    size_t done = 0;
    int running = 0;

    memset(outs, 0, n * sizeof(*outs));
    for (size_t i = 0; i < n && ok; i++) {
        if (!xfer_setup(&xs[i], &reqs[i], &outs[i])) {
            ok = false;
            break;
        }
        curl_easy_setopt(xs[i].easy, CURLOPT_PRIVATE, &xs[i]);
        curl_multi_add_handle(multi, xs[i].easy);
    }
    while (ok && done < n) {
        CURLMsg *msg;
        int left;

        if (curl_multi_perform(multi, &running) != CURLM_OK)
            ok = false;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            char *priv = NULL;
            struct xfer *x;

            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            x = (struct xfer *)(void *)priv;
            x->resp->curl_result = (int)msg->data.result;
            x->finished = true;
            curl_multi_remove_handle(multi, msg->easy_handle);
            done++;
        }
        if (done < n && ok)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    for (size_t i = 0; xs != NULL && i < n; i++) {
        if (xs[i].easy == NULL)
            continue;
        curl_multi_remove_handle(multi, xs[i].easy); /* harmless when already removed */
        if (!xfer_finish(&xs[i], xs[i].finished ? (CURLcode)outs[i].curl_result
                                                : CURLE_ABORTED_BY_CALLBACK))
            ok = false;
    }
    curl_multi_cleanup(multi);
    free(xs);
    return ok;
}

bool
kt_http_get(const char *url, const char *const *headers, struct kt_http_resp *out)
{
    struct kt_http_req req = {.url = url, .headers = headers};

    return kt_http_do(&req, out);
}

bool
kt_http_do_key(const struct kt_http_req *req, const char *key, struct kt_http_resp *out)
{
    char auth[512];
    const char *h[16];
    struct kt_http_req with = *req;
    size_t n = 0;

    if (key == NULL)
        return kt_http_do(req, out);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    h[n++] = auth;
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        if (n + 1 >= sizeof(h) / sizeof(h[0])) {
            fprintf(stderr, "kt_http_do_key: more than %zu headers\n",
                    sizeof(h) / sizeof(h[0]) - 2);
            abort();
        }
        h[n++] = req->headers[i];
    }
    h[n] = NULL;
    with.headers = h;
    return kt_http_do(&with, out);
}

bool
kt_http_get_key(const char *url, const char *key, const char *const *headers,
                struct kt_http_resp *out)
{
    struct kt_http_req req = {.url = url, .headers = headers};

    return kt_http_do_key(&req, key, out);
}

/* Finds the next "Name: value" line at or after *from whose name matches;
 * returns its value (length in *vlen) and moves *from past the line. */
static const char *
find_header(const char *name, const char **from, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = *from;

    while (p != NULL && *p != '\0') {
        const char *eol = strstr(p, "\r\n");
        const char *next = eol != NULL ? eol + 2 : NULL;
        size_t llen = eol != NULL ? (size_t)(eol - p) : strlen(p);

        if (llen > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            size_t n = llen - nlen - 1;

            while (n > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                n--;
            }
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            *vlen = n;
            *from = next;
            return v;
        }
        p = next;
    }
    *from = NULL;
    return NULL;
}

char *
kt_http_header(const struct kt_http_resp *resp, const char *name)
{
    const char *from = resp->headers;
    size_t vlen;
    const char *v = resp->headers != NULL ? find_header(name, &from, &vlen) : NULL;

    return v != NULL ? strndup(v, vlen) : NULL;
}

const char *
kt_http_header_buf(const struct kt_http_resp *resp, const char *name, char *buf, size_t cap)
{
    const char *from = resp->headers;
    size_t vlen;
    const char *v = resp->headers != NULL ? find_header(name, &from, &vlen) : NULL;

    if (v == NULL || cap == 0)
        return NULL;
    if (vlen >= cap)
        vlen = cap - 1;
    memcpy(buf, v, vlen);
    buf[vlen] = '\0';
    return buf;
}

size_t
kt_http_header_count(const struct kt_http_resp *resp, const char *name)
{
    const char *from = resp->headers;
    size_t count = 0, vlen;

    while (from != NULL && find_header(name, &from, &vlen) != NULL)
        count++;
    return count;
}

void
kt_http_resp_cleanup(struct kt_http_resp *resp)
{
    free(resp->headers);
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

/* ---- raw bytes ---- */

static int
raw_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static const char *
memfind(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    for (size_t i = 0; i + nlen <= hlen; i++)
        if (memcmp(hay + i, needle, nlen) == 0)
            return hay + i;
    return NULL;
}

/* Content-Length in head[0..len), or -1. */
static long long
head_content_length(const char *head, size_t len)
{
    static const char name[] = "\r\ncontent-length:";
    size_t nlen = sizeof(name) - 1;

    for (size_t i = 0; i + nlen <= len; i++) {
        if (strncasecmp(head + i, name, nlen) == 0) {
            const char *v = head + i + nlen;

            while (*v == ' ' || *v == '\t')
                v++;
            return isdigit((unsigned char)*v) ? strtoll(v, NULL, 10) : -1;
        }
    }
    return -1;
}

size_t
kt_raw_parse(const char *data, size_t len, bool closed, struct kt_raw_resp *out, size_t max)
{
    size_t pos = 0, count = 0;

    while (count < max && pos < len) {
        const char *end = memfind(data + pos, len - pos, "\r\n\r\n", 4);
        size_t head_len, body_off;
        long long cl;
        int status;

        if (end == NULL || len - pos < 12 || memcmp(data + pos, "HTTP/1.", 7) != 0)
            break;
        head_len = (size_t)(end - (data + pos));
        body_off = pos + head_len + 4;
        status = atoi(data + pos + 9);
        if (status >= 100 && status < 200) {
            pos = body_off;
            continue;
        }
        cl = head_content_length(data + pos, head_len);
        if (cl < 0 && !closed)
            break;
        if (cl < 0)
            cl = (long long)(len - body_off);
        if ((unsigned long long)cl > len - body_off)
            break;
        out[count].status = status;
        out[count].head_off = pos;
        out[count].head_len = head_len;
        out[count].body_off = body_off;
        out[count].body_len = (size_t)cl;
        count++;
        pos = body_off + (size_t)cl;
    }
    return count;
}

bool
kt_raw_exchange(int port, const void *bytes, size_t len, int want_responses, long linger_ms,
                long deadline_ms, struct kt_raw_result *out)
{
    int64_t deadline = kt_mono_ms() + deadline_ms, complete_at = -1;
    struct dyn got = {0};
    size_t sent = 0;
    int fd;

    memset(out, 0, sizeof(*out));
    kt_http_note_sent(bytes, len);
    fd = raw_connect(port);
    if (fd < 0)
        return false;
    out->connected = true;
    for (;;) {
        int64_t now = kt_mono_ms(), wait = deadline - now;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};

        if (wait <= 0)
            break;
        if (complete_at >= 0) {
            if (now >= complete_at + linger_ms)
                break;
            if (complete_at + linger_ms - now < wait)
                wait = complete_at + linger_ms - now;
        }
        if (sent < len)
            pfd.events |= POLLOUT;
        if (poll(&pfd, 1, (int)wait) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if ((pfd.revents & POLLOUT) != 0 && sent < len) {
            ssize_t n = send(fd, (const char *)bytes + sent, len - sent, MSG_NOSIGNAL);

            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                sent = len; /* the server stopped reading; what it says is what matters */
        }
        if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char buf[65536];
            ssize_t n = recv(fd, buf, sizeof(buf), 0);

            if (n > 0) {
                dyn_add(&got, buf, (size_t)n);
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                out->closed = true;
                break;
            }
        }
        if (want_responses > 0 && complete_at < 0 && got.p != NULL) {
            struct kt_raw_resp r[16];
            size_t max = want_responses < 16 ? (size_t)want_responses : 16;

            if (kt_raw_parse(got.p, got.len, false, r, max) >= max)
                complete_at = kt_mono_ms();
        }
    }
    close(fd);
    out->data = got.p != NULL ? got.p : strdup("");
    out->len = got.len;
    return true;
}

void
kt_raw_result_cleanup(struct kt_raw_result *r)
{
    free(r->data);
    memset(r, 0, sizeof(*r));
}

/* ---- credentials sent ---- */

/* Every credential any client above sent in this process, for the leak
 * check of helpers/daemon.c. Guarded by a lock: requests run on threads. */
static pthread_mutex_t sent_lock = PTHREAD_MUTEX_INITIALIZER;
static char **sent;
static size_t nsent;

#define SENT_MIN 12  /* shorter strings are words a log may hold by chance */
#define SENT_MAX 200 /* a longer value is a header-size test, not a key */

static void
sent_add(const char *s, size_t n)
{
    char **grown;

    while (n > 0 && (*s == ' ' || *s == '\t' || *s == '"')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '"'))
        n--;
    if (n < SENT_MIN || n > SENT_MAX)
        return;
    pthread_mutex_lock(&sent_lock);
    for (size_t i = 0; i < nsent; i++) {
        if (strlen(sent[i]) == n && memcmp(sent[i], s, n) == 0) {
            pthread_mutex_unlock(&sent_lock);
            return;
        }
    }
    grown = realloc(sent, (nsent + 1) * sizeof(*sent));
    if (grown == NULL || (grown[nsent] = strndup(s, n)) == NULL) {
        fprintf(stderr, "http: out of memory recording a credential\n");
        abort();
    }
    sent = grown;
    nsent++;
    pthread_mutex_unlock(&sent_lock);
}

static bool
is_key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* Key-shaped anywhere (a target, a body, a header of any name): a run of
 * [A-Za-z0-9_] at least a key's tail long whose last 8 characters are
 * lower-case hex, the shape of keygate's checksum, right or wrong. */
static void
note_key_shaped(const char *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        bool hex = true;

        while (i + n < len && is_key_char(p[i + n]))
            n++;
        if (n >= 51) {
            for (size_t k = n - 8; k < n; k++)
                hex = hex &&
                      (isdigit((unsigned char)p[i + k]) || (p[i + k] >= 'a' && p[i + k] <= 'f'));
            if (hex)
                sent_add(p + i, n);
        }
        i += n > 0 ? n : 1;
    }
}

/* One "Name: value" line: the value of a header that carries a credential
 * (Authorization and the like, or a name with "key" or "token" in it, which
 * covers X-Avala-Api-Key and configured credential headers) is recorded
 * whatever it holds, without its scheme word. */
static void
note_header_line(const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len), *v, *sp;
    char name[128];
    size_t nlen, vlen;

    note_key_shaped(line, len);
    if (colon == NULL || (nlen = (size_t)(colon - line)) == 0 || nlen >= sizeof(name))
        return;
    for (size_t i = 0; i < nlen; i++)
        name[i] = (char)tolower((unsigned char)line[i]);
    name[nlen] = '\0';
    /* X-Keygate-Key-Id carries an id, which logs hold by design. */
    if (strncmp(name, "x-keygate-", 10) == 0 ||
        (strstr(name, "authorization") == NULL && strstr(name, "key") == NULL &&
         strstr(name, "token") == NULL))
        return;
    v = colon + 1;
    vlen = len - nlen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    /* "Bearer KEY", "ApiKey KEY": the credential is what follows the scheme. */
    sp = memchr(v, ' ', vlen);
    if (strstr(name, "authorization") != NULL && sp != NULL) {
        vlen -= (size_t)(sp - v) + 1;
        v = sp + 1;
    }
    sent_add(v, vlen);
}

void
kt_http_note_sent(const void *bytes, size_t len)
{
    const char *p = bytes;

    /* Line by line, so a raw request's header lines are read as headers. */
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t n = nl != NULL ? (size_t)(nl - p) : len;

        note_header_line(p, n > 0 && p[n - 1] == '\r' ? n - 1 : n);
        if (nl == NULL)
            break;
        len -= n + 1;
        p = nl + 1;
    }
}

bool
kt_http_sent_each(bool (*fn)(const char *cred, size_t i, void *ctx), void *ctx)
{
    bool go_on = true;

    pthread_mutex_lock(&sent_lock);
    for (size_t i = 0; go_on && i < nsent; i++)
        go_on = fn(sent[i], i, ctx);
    pthread_mutex_unlock(&sent_lock);
    return go_on;
}
