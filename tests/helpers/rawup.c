/* helpers/rawup.c - a scripted, strict, misbehaving upstream: see rawup.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "helpers/http.h"
#include "helpers/rawup.h"
#include "helpers/server.h"

#define HEAD_MAX (1024 * 1024)
#define BODY_KEEP (16 * 1024 * 1024)

struct act {
    struct kt_rawup_act a;
    char *bytes, *later;
    struct act *next;
};

struct rconn {
    struct kt_rawup *u;
    int fd;
    size_t num;
    pthread_t th;
    struct rconn *next;
    char buf[65536];
    size_t boff, blen;
};

struct kt_rawup {
    int lfd, port;
    char url[64];
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    struct act *q_head, *q_tail;
    struct rconn *conns;
    size_t nconns, nopen, later_sent;
    struct kt_rawup_seen *seen;
    size_t nseen, seen_cap;
};

static ssize_t
fill(struct rconn *c)
{
    ssize_t n;

    if (c->boff == c->blen)
        c->boff = c->blen = 0;
    if (c->blen == sizeof(c->buf)) {
        memmove(c->buf, c->buf + c->boff, c->blen - c->boff);
        c->blen -= c->boff;
        c->boff = 0;
    }
    do
        n = recv(c->fd, c->buf + c->blen, sizeof(c->buf) - c->blen, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        c->blen += (size_t)n;
    return n;
}

static bool
send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool
tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* The strict parser's view of a head; fills framing. */
static void
check_head(const char *h, size_t len, struct kt_rawup_seen *s, long long *cl)
{
    const char *p = h, *end = h + len - 2, *eol;
    size_t i;
    int n_cl = 0, n_te = 0;

    s->strict_ok = false;
    *cl = 0;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)h[i];

        if (ch == '\n' && (i == 0 || h[i - 1] != '\r')) {
            snprintf(s->why, sizeof(s->why), "bare LF at %zu", i);
            return;
        }
        if (ch == '\r' && (i + 1 >= len || h[i + 1] != '\n')) {
            snprintf(s->why, sizeof(s->why), "CR without LF at %zu", i);
            return;
        }
        if ((ch < 0x20 && ch != '\r' && ch != '\n' && ch != '\t') || ch == 0x7f) {
            snprintf(s->why, sizeof(s->why), "control byte 0x%02x at %zu", ch, i);
            return;
        }
    }
    eol = strstr(p, "\r\n");
    for (i = 0; p + i < eol && tchar((unsigned char)p[i]); i++)
        ;
    if (i == 0 || p[i] != ' ') {
        snprintf(s->why, sizeof(s->why), "method is not a token");
        return;
    }
    p += i + 1;
    for (i = 0; p + i < eol && (unsigned char)p[i] > 0x20 && p[i] != 0x7f; i++)
        ;
    if (i == 0 || p[i] != ' ' || p[0] != '/' || (size_t)(eol - (p + i + 1)) != 8 ||
        memcmp(p + i + 1, "HTTP/1.1", 8) != 0) {
        snprintf(s->why, sizeof(s->why), "bad request target or version");
        return;
    }
    for (p = eol + 2; p < end; p = eol + 2) {
        const char *v;

        eol = strstr(p, "\r\n");
        for (i = 0; p + i < eol && tchar((unsigned char)p[i]); i++)
            ;
        if (i == 0 || p[i] != ':') {
            snprintf(s->why, sizeof(s->why), "bad header line %.60s", p);
            return;
        }
        v = p + i + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (i == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            char *e;

            n_cl++;
            if (*v < '0' || *v > '9') {
                snprintf(s->why, sizeof(s->why), "bad Content-Length");
                return;
            }
            *cl = strtoll(v, &e, 10);
            if (e != eol) {
                snprintf(s->why, sizeof(s->why), "bad Content-Length");
                return;
            }
        } else if (i == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
            n_te++;
            if ((size_t)(eol - v) != 7 || strncmp(v, "chunked", 7) != 0) {
                snprintf(s->why, sizeof(s->why), "bad Transfer-Encoding");
                return;
            }
            s->chunked = true;
        } else if (i == 4 && strncasecmp(p, "Host", 4) == 0 && eol == v) {
            snprintf(s->why, sizeof(s->why), "empty Host");
            return;
        }
    }
    if (n_cl > 1 || n_te > 1 || (n_cl > 0 && n_te > 0)) {
        snprintf(s->why, sizeof(s->why), "ambiguous framing");
        return;
    }
    s->strict_ok = true;
}

/* Reads through the blank line; NULL at EOF or on a head over HEAD_MAX. */
static char *
read_head(struct rconn *c, size_t *len)
{
    for (;;) {
        char *end =
            c->blen > c->boff ? memmem(c->buf + c->boff, c->blen - c->boff, "\r\n\r\n", 4) : NULL;

        if (end != NULL) {
            size_t n = (size_t)(end + 4 - (c->buf + c->boff));
            char *h = malloc(n + 1);

            if (h == NULL)
                return NULL;
            memcpy(h, c->buf + c->boff, n);
            h[n] = '\0';
            c->boff += n;
            *len = n;
            return h;
        }
        if (c->blen - c->boff >= HEAD_MAX - 1 || fill(c) <= 0)
            return NULL;
    }
}

static void
body_put(struct kt_rawup_seen *s, const char *p, size_t n)
{
    char *nb;

    if (s->body_len + n > BODY_KEEP)
        n = BODY_KEEP - s->body_len;
    nb = realloc(s->body, s->body_len + n + 1);
    if (nb == NULL)
        return;
    s->body = nb;
    memcpy(s->body + s->body_len, p, n);
    s->body_len += n;
    s->body[s->body_len] = '\0';
}

/* Takes n bytes of body; false at EOF first. */
static bool
read_n(struct rconn *c, struct kt_rawup_seen *s, long long n)
{
    while (n > 0) {
        size_t have = c->blen - c->boff, k;

        if (have == 0 && fill(c) <= 0)
            return false;
        have = c->blen - c->boff;
        k = (long long)have < n ? have : (size_t)n;
        body_put(s, c->buf + c->boff, k);
        c->boff += k;
        n -= (long long)k;
    }
    return true;
}

/* A CRLF-terminated line into line (cap bytes); false at EOF or when malformed. */
static bool
read_line(struct rconn *c, char *line, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf + c->boff, '\n', c->blen - c->boff);

        if (nl != NULL) {
            size_t n = (size_t)(nl - (c->buf + c->boff));

            if (n == 0 || nl[-1] != '\r' || n > cap)
                return false;
            memcpy(line, c->buf + c->boff, n - 1);
            line[n - 1] = '\0';
            c->boff += n + 1;
            return true;
        }
        if (fill(c) <= 0)
            return false;
    }
}

static bool
read_chunked(struct rconn *c, struct kt_rawup_seen *s)
{
    char line[256], crlf[4];

    for (;;) {
        char *e;
        long long n;

        if (!read_line(c, line, sizeof(line)))
            return false;
        n = strtoll(line, &e, 16);
        if (e == line || (*e != '\0' && *e != ';') || n < 0) {
            s->strict_ok = false;
            snprintf(s->why, sizeof(s->why), "bad chunk size line %.60s", line);
            return false;
        }
        if (n == 0)
            break;
        if (!read_n(c, s, n))
            return false;
        if (!read_line(c, crlf, sizeof(crlf)) || crlf[0] != '\0') {
            s->strict_ok = false;
            snprintf(s->why, sizeof(s->why), "chunk data not followed by CRLF");
            return false;
        }
    }
    do
        if (!read_line(c, line, sizeof(line)))
            return false;
    while (line[0] != '\0'); /* trailers */
    return true;
}

static void
record(struct kt_rawup *u, struct kt_rawup_seen *s)
{
    pthread_mutex_lock(&u->mu);
    if (u->nseen == u->seen_cap) {
        size_t cap = u->seen_cap > 0 ? u->seen_cap * 2 : 32;
        struct kt_rawup_seen *t = realloc(u->seen, cap * sizeof(*t));

        if (t == NULL) {
            pthread_mutex_unlock(&u->mu);
            kt_rawup_seen_cleanup(s);
            return;
        }
        u->seen = t;
        u->seen_cap = cap;
    }
    u->seen[u->nseen++] = *s;
    memset(s, 0, sizeof(*s));
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

static struct act *
pop(struct kt_rawup *u)
{
    struct act *a;

    pthread_mutex_lock(&u->mu);
    a = u->q_head;
    if (a != NULL) {
        u->q_head = a->next;
        if (u->q_head == NULL)
            u->q_tail = NULL;
    }
    pthread_mutex_unlock(&u->mu);
    return a;
}

static void
act_free(struct act *a)
{
    if (a == NULL)
        return;
    free(a->bytes);
    free(a->later);
    free(a);
}

static bool
send_answer(struct rconn *c, const struct act *a, const char *head, size_t reqno)
{
    char body[512], out[1024], key[128] = "", target[256] = "";
    const char *k = strcasestr(head, "\r\nX-Keygate-Key-Id: ");
    int n;

    if (a != NULL && a->bytes != NULL)
        return send_all(c->fd, a->bytes, a->a.len);
    if (k != NULL)
        sscanf(k + 20, "%127[^\r]", key);
    sscanf(head, "%*s %255s", target);
    n = snprintf(body, sizeof(body), "conn=%zu req=%zu key=%s target=%s", c->num, reqno, key,
                 target);
    n = snprintf(out, sizeof(out),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", n,
                 body);
    return send_all(c->fd, out, (size_t)n);
}

static void *
conn_main(void *arg)
{
    struct rconn *c = arg;
    struct kt_rawup *u = c->u;

    for (size_t reqno = 1;; reqno++) {
        struct kt_rawup_seen s = {0};
        struct act *a;
        size_t hlen;
        long long cl;
        bool ok;

        s.head = read_head(c, &hlen);
        if (s.head == NULL)
            break;
        s.conn = c->num;
        check_head(s.head, hlen, &s, &cl);
        a = pop(u);
        if (a != NULL && a->a.how == KT_RAWUP_EARLY)
            send_answer(c, a, s.head, reqno);
        ok = s.chunked ? read_chunked(c, &s) : read_n(c, &s, cl);
        s.complete = ok;
        {
            char *head = strdup(s.head);

            record(u, &s);
            if (!ok || head == NULL || (a != NULL && a->a.how == KT_RAWUP_CLOSE)) {
                free(head);
                act_free(a);
                break;
            }
            if ((a == NULL || a->a.how == KT_RAWUP_ANSWER) && !send_answer(c, a, head, reqno)) {
                free(head);
                act_free(a);
                break;
            }
            free(head);
        }
        if (a != NULL && a->later != NULL) {
            kt_sleep_ms(a->a.later_ms);
            send_all(c->fd, a->later, strlen(a->later));
            pthread_mutex_lock(&u->mu);
            u->later_sent++;
            pthread_mutex_unlock(&u->mu);
        }
        if (a != NULL && a->a.close_after) {
            act_free(a);
            break;
        }
        act_free(a);
    }
    pthread_mutex_lock(&u->mu);
    shutdown(c->fd, SHUT_RDWR);
    u->nopen--;
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

static void *
accept_main(void *arg)
{
    struct kt_rawup *u = arg;

    for (;;) {
        int fd = accept(u->lfd, NULL, NULL);
        struct rconn *c;

        if (fd < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        /* Each send on the wire at once: Nagle would hold a second small
         * write (a stray answer) until keygate's delayed ACK, 40 ms later. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
        c->u = u;
        c->fd = fd;
        pthread_mutex_lock(&u->mu);
        if (u->stopping) {
            pthread_mutex_unlock(&u->mu);
            close(fd);
            free(c);
            break;
        }
        c->num = ++u->nconns;
        u->nopen++;
        c->next = u->conns;
        u->conns = c;
        if (pthread_create(&c->th, NULL, conn_main, c) != 0) {
            u->conns = c->next;
            u->nopen--;
            close(fd);
            free(c);
        }
        pthread_mutex_unlock(&u->mu);
    }
    return NULL;
}

struct kt_rawup *
kt_rawup_start(void)
{
    struct kt_rawup *u = calloc(1, sizeof(*u));

    if (u == NULL)
        return NULL;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    u->lfd = kt_server_listen(64, &u->port);
    if (u->lfd < 0) {
        fprintf(stderr, "rawup: %s\n", strerror(errno));
        free(u);
        return NULL;
    }
    snprintf(u->url, sizeof(u->url), "http://127.0.0.1:%d", u->port);
    if (pthread_create(&u->th, NULL, accept_main, u) != 0) {
        close(u->lfd);
        free(u);
        return NULL;
    }
    return u;
}

void
kt_rawup_stop(struct kt_rawup *u)
{
    struct rconn *c;

    if (u == NULL)
        return;
    pthread_mutex_lock(&u->mu);
    u->stopping = true;
    for (c = u->conns; c != NULL; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&u->mu);
    shutdown(u->lfd, SHUT_RDWR);
    pthread_join(u->th, NULL);
    close(u->lfd);
    while ((c = u->conns) != NULL) {
        u->conns = c->next;
        pthread_join(c->th, NULL);
        close(c->fd);
        free(c);
    }
    kt_rawup_reset(u);
    free(u->seen);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
}

const char *
kt_rawup_url(const struct kt_rawup *u)
{
    return u->url;
}

void
kt_rawup_push(struct kt_rawup *u, const struct kt_rawup_act *in)
{
    struct act *a = calloc(1, sizeof(*a));

    if (a == NULL)
        abort();
    a->a = *in;
    if (in->bytes != NULL) {
        a->a.len = in->len > 0 ? in->len : strlen(in->bytes);
        a->bytes = malloc(a->a.len);
        if (a->bytes == NULL)
            abort();
        memcpy(a->bytes, in->bytes, a->a.len);
    }
    if (in->later != NULL && (a->later = strdup(in->later)) == NULL)
        abort();
    pthread_mutex_lock(&u->mu);
    if (u->q_tail != NULL)
        u->q_tail->next = a;
    else
        u->q_head = a;
    u->q_tail = a;
    pthread_mutex_unlock(&u->mu);
}

size_t
kt_rawup_connections(struct kt_rawup *u)
{
    return kt_server_count(&u->mu, &u->nconns);
}

size_t
kt_rawup_later_sent(struct kt_rawup *u)
{
    return kt_server_count(&u->mu, &u->later_sent);
}

size_t
kt_rawup_open(struct kt_rawup *u)
{
    return kt_server_count(&u->mu, &u->nopen);
}

size_t
kt_rawup_requests(struct kt_rawup *u)
{
    return kt_server_count(&u->mu, &u->nseen);
}

bool
kt_rawup_request(struct kt_rawup *u, size_t i, struct kt_rawup_seen *out)
{
    bool ok = false;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&u->mu);
    if (i < u->nseen) {
        *out = u->seen[i];
        out->head = strdup(u->seen[i].head);
        out->body = malloc(u->seen[i].body_len + 1);
        if (out->body != NULL) {
            if (u->seen[i].body_len > 0)
                memcpy(out->body, u->seen[i].body, u->seen[i].body_len);
            out->body[u->seen[i].body_len] = '\0';
        }
        ok = out->head != NULL && out->body != NULL;
    }
    pthread_mutex_unlock(&u->mu);
    return ok;
}

void
kt_rawup_seen_cleanup(struct kt_rawup_seen *s)
{
    free(s->head);
    free(s->body);
    memset(s, 0, sizeof(*s));
}

bool
kt_rawup_wait_requests(struct kt_rawup *u, size_t n, long ms)
{
    int64_t end = kt_mono_ms() + ms;
    bool ok;

    for (;;) {
        ok = kt_rawup_requests(u) >= n;
        if (ok || kt_mono_ms() >= end)
            return ok;
        kt_sleep_ms(10);
    }
}

void
kt_rawup_reset(struct kt_rawup *u)
{
    struct act *a;

    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < u->nseen; i++)
        kt_rawup_seen_cleanup(&u->seen[i]);
    u->nseen = 0;
    while ((a = u->q_head) != NULL) {
        u->q_head = a->next;
        act_free(a);
    }
    u->q_tail = NULL;
    pthread_mutex_unlock(&u->mu);
}
