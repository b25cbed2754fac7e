/* proxy/upresp.c - one upstream response off a byte stream: keygate's own
 * check of the raw head, the framing rules of RFC 9112 section 6.3, and
 * llhttp for the body. Knows nothing of sockets or the exchange it serves
 * (proxy/upclient.c); reports through two callbacks. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "keygate/upresp.h"

#define HEAD_START 2048

struct kg_upresp {
    llhttp_t parser;
    char *hbuf; /* the head as received, up to max_head bytes */
    size_t hlen, hcap, max_head;
    enum kg_upresp_state state;
    bool no_body;
    unsigned status;
    int64_t content_length;
    bool keep_alive;
    const char *err;
    bool chunked;
    /* llhttp 8.1 takes any two bytes after a chunk's data for its CRLF:
     * checked here. crlf_left of "\r\n" are still to come (0..2). */
    int crlf_left;
    /* During a feed: */
    const struct kg_upresp_cb *cb;
    void *ctx;
    const char *feed_end;
};

/* Checks what is at hand of the CRLF after a chunk's data, from p; false
 * when a byte is not the one due. */
static bool
crlf_check(struct kg_upresp *r, const char *p)
{
    while (r->crlf_left > 0 && p < r->feed_end) {
        if (*p != (r->crlf_left == 2 ? '\r' : '\n'))
            return false;
        r->crlf_left--;
        p++;
    }
    return true;
}

static int
on_headers_complete(llhttp_t *p)
{
    struct kg_upresp *r = p->data;

    /* 1: no body whatever the headers say (HEAD, 204, 304). */
    return r->no_body || r->status == 204 || r->status == 304 ? 1 : 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct kg_upresp *r = p->data;

    if (!r->cb->body(r->ctx, at, len)) {
        r->err = "no room for the body";
        return -1;
    }
    if (r->chunked && p->content_length == 0) {
        r->crlf_left = 2;
        if (!crlf_check(r, at + len)) {
            r->err = "chunk data not followed by CRLF";
            return -1;
        }
    }
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    struct kg_upresp *r = p->data;

    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    r->state = KG_UPRESP_DONE;
    return HPE_PAUSED; /* what follows is not this response's */
}

static const llhttp_settings_t settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

struct kg_upresp *
kg_upresp_new(size_t max_head)
{
    struct kg_upresp *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->max_head = max_head;
    r->hcap = max_head < HEAD_START ? max_head : HEAD_START;
    r->hbuf = malloc(r->hcap);
    if (r->hbuf == NULL) {
        free(r);
        return NULL;
    }
    kg_upresp_reset(r, false);
    return r;
}

void
kg_upresp_free(struct kg_upresp *r)
{
    if (r == NULL)
        return;
    free(r->hbuf);
    free(r);
}

void
kg_upresp_reset(struct kg_upresp *r, bool no_body)
{
    r->hlen = 0;
    r->state = KG_UPRESP_HEAD;
    r->no_body = no_body;
    r->status = 0;
    r->content_length = -1;
    r->keep_alive = false;
    r->err = "";
    r->chunked = false;
    r->crlf_left = 0;
}

static void
bad(struct kg_upresp *r, const char *why)
{
    r->state = KG_UPRESP_BAD;
    r->err = why;
}

static bool
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* HT, SP, VCHAR and obs-text: what a field value or reason phrase may hold. */
static bool
is_value_byte(unsigned char c)
{
    return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);
}

/* "HTTP/1.x NNN[ reason]"; *status out. */
static bool
status_line_ok(const char *p, size_t len, unsigned *status, bool *http10)
{
    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return false;
    for (size_t i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    *status = (unsigned)((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
    *http10 = p[7] == '0';
    if (*status < 100 || *status > 599)
        return false;
    if (len == 12)
        return true;
    if (p[12] != ' ')
        return false;
    for (size_t i = 13; i < len; i++)
        if (!is_value_byte((unsigned char)p[i]))
            return false;
    return true;
}

/* The value of a header line without the OWS around it. */
static void
trim(const char **v, size_t *len)
{
    while (*len > 0 && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*len)--;
    }
    while (*len > 0 && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t'))
        (*len)--;
}

/* Checks one header line (without its CRLF) and notes the framing headers. */
static const char *
header_line_check(struct kg_upresp *r, const char *p, size_t len, int *n_cl, int *n_te)
{
    size_t i = 0;
    const char *v;
    size_t vlen;

    if (p[0] == ' ' || p[0] == '\t')
        return "obs-fold in the upstream's head";
    while (i < len && p[i] != ':') {
        if (!is_tchar((unsigned char)p[i]))
            return p[i] == ' ' || p[i] == '\t' ? "space before a colon" : "bad header name";
        i++;
    }
    if (i == 0 || i == len)
        return "header line without a name or colon";
    for (size_t k = i + 1; k < len; k++)
        if (!is_value_byte((unsigned char)p[k]))
            return "control byte in a header value";
    v = p + i + 1;
    vlen = len - i - 1;
    trim(&v, &vlen);
    if (i == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
        int64_t n = 0;

        if (++*n_cl > 1)
            return "several Content-Length headers";
        if (vlen == 0 || vlen > 18)
            return "bad Content-Length";
        for (size_t k = 0; k < vlen; k++) {
            if (v[k] < '0' || v[k] > '9')
                return "bad Content-Length";
            n = n * 10 + (v[k] - '0');
        }
        r->content_length = n;
    } else if (i == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
        if (++*n_te > 1)
            return "several Transfer-Encoding headers";
        if (vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
            return "a transfer coding other than chunked";
        r->chunked = true;
    }
    return NULL;
}

/* The head in hbuf ends in CRLF CRLF and every CR of it is followed by LF
 * (checked as it arrived). Checks the rest and hands it to llhttp. */
static void
head_end(struct kg_upresp *r)
{
    const char *p = r->hbuf, *end = r->hbuf + r->hlen - 2; /* before the last CRLF */
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    const char *why = NULL;
    int n_cl = 0, n_te = 0;
    bool http10 = false;
    enum llhttp_errno e;

    if (eol == NULL || !status_line_ok(p, (size_t)(eol - p), &r->status, &http10)) {
        bad(r, "bad status line");
        return;
    }
    if (r->status == 101) {
        bad(r, "101 Switching Protocols");
        return;
    }
    r->content_length = -1;
    r->chunked = false;
    for (p = eol + 2; p < end && why == NULL; p = eol + 2) {
        eol = memchr(p, '\r', (size_t)(end - p));
        why = header_line_check(r, p, (size_t)(eol - p), &n_cl, &n_te);
    }
    if (why == NULL && n_cl > 0 && n_te > 0)
        why = "both Content-Length and Transfer-Encoding";
    if (why == NULL && n_te > 0 && http10)
        why = "Transfer-Encoding in an HTTP/1.0 response";
    if (why != NULL) {
        bad(r, why);
        return;
    }
    if (r->status < 200) {
        r->hlen = 0; /* an interim answer (100 Continue, 103): the final one follows */
        r->content_length = -1;
        return;
    }
    for (p = (const char *)memchr(r->hbuf, '\r', r->hlen) + 2; p < end; p = eol + 2) {
        eol = memchr(p, '\r', (size_t)(end - p));
        if (!r->cb->header(r->ctx, p, (size_t)(eol + 2 - p))) {
            bad(r, "response headers too large");
            return;
        }
    }
    if (r->no_body || r->status == 204 || r->status == 304)
        r->content_length = r->no_body ? r->content_length : 0;
    r->state = KG_UPRESP_BODY;
    llhttp_init(&r->parser, HTTP_RESPONSE, &settings);
    r->parser.data = r;
    r->feed_end = r->hbuf + r->hlen;
    e = llhttp_execute(&r->parser, r->hbuf, r->hlen);
    if (e != HPE_OK && e != HPE_PAUSED)
        bad(r, llhttp_get_error_reason(&r->parser));
}

/* Takes head bytes up to the end of the head; returns how many. */
static size_t
feed_head(struct kg_upresp *r, const char *p, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        char c = p[i], prev = r->hlen > 0 ? r->hbuf[r->hlen - 1] : '\0';

        if (prev == '\r' && c != '\n') {
            bad(r, "CR without LF in the upstream's head");
            return i;
        }
        if (c == '\n' && prev != '\r') {
            bad(r, "bare LF in the upstream's head");
            return i;
        }
        if ((c == '\0' || ((unsigned char)c < 0x20 && c != '\r' && c != '\n' && c != '\t') ||
             c == 0x7f)) {
            bad(r, "control byte in the upstream's head");
            return i;
        }
        if (r->hlen == r->hcap) {
            size_t ncap = r->hcap * 2 > r->max_head ? r->max_head : r->hcap * 2;
            char *nb;

            if (r->hlen == r->max_head) {
                bad(r, "upstream head over max_header_bytes");
                return i;
            }
            nb = realloc(r->hbuf, ncap);
            if (nb == NULL) {
                bad(r, "out of memory");
                return i;
            }
            r->hbuf = nb;
            r->hcap = ncap;
        }
        r->hbuf[r->hlen++] = c;
        if (c == '\n' && r->hlen >= 4 && memcmp(r->hbuf + r->hlen - 4, "\r\n\r\n", 4) == 0) {
            head_end(r);
            return i + 1;
        }
    }
    return i;
}

size_t
kg_upresp_feed(struct kg_upresp *r, const char *p, size_t len, const struct kg_upresp_cb *cb,
               void *ctx)
{
    size_t used = 0;

    r->cb = cb;
    r->ctx = ctx;
    while (used < len && (r->state == KG_UPRESP_HEAD || r->state == KG_UPRESP_BODY)) {
        if (r->state == KG_UPRESP_HEAD) {
            used += feed_head(r, p + used, len - used);
            continue;
        }
        r->feed_end = p + len;
        if (r->crlf_left > 0 && !crlf_check(r, p + used)) {
            bad(r, "chunk data not followed by CRLF");
            break;
        }
        switch (llhttp_execute(&r->parser, p + used, len - used)) {
        case HPE_OK:
            used = len;
            break;
        case HPE_PAUSED:
            used = (size_t)(llhttp_get_error_pos(&r->parser) - p);
            break;
        default:
            if (r->err[0] == '\0')
                r->err = llhttp_get_error_reason(&r->parser);
            r->state = KG_UPRESP_BAD;
            break;
        }
    }
    return used;
}

void
kg_upresp_eof(struct kg_upresp *r, const struct kg_upresp_cb *cb, void *ctx)
{
    enum llhttp_errno e;

    r->cb = cb;
    r->ctx = ctx;
    if (r->state == KG_UPRESP_HEAD) {
        bad(r, "the upstream closed before its answer's head ended");
        return;
    }
    if (r->state != KG_UPRESP_BODY)
        return;
    e = llhttp_finish(&r->parser);
    if ((e == HPE_OK || e == HPE_PAUSED) && r->state == KG_UPRESP_DONE)
        r->keep_alive = false; /* a body delimited by the close */
    else
        bad(r, "the upstream closed before its answer's body ended");
}

enum kg_upresp_state
kg_upresp_state(const struct kg_upresp *r)
{
    return r->state;
}

unsigned
kg_upresp_status(const struct kg_upresp *r)
{
    return r->status;
}

int64_t
kg_upresp_content_length(const struct kg_upresp *r)
{
    return r->content_length;
}

bool
kg_upresp_keep_alive(const struct kg_upresp *r)
{
    return r->state == KG_UPRESP_DONE && r->keep_alive;
}

const char *
kg_upresp_error(const struct kg_upresp *r)
{
    return r->err;
}
