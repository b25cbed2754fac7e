/* http/rawguard.c - the raw-bytes guard (keygate/rawguard.h says why it
 * exists): a scanner over each watched connection's byte stream, and the
 * recv()/gnutls_record_recv() definitions libmicrohttpd binds to. Owns the
 * descriptor table and each watched connection's held-back head. */

/* This file defines recv(): the fortified inline wrapper must not exist here. */
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <sodium.h>

#include "keygate/hex.h"
#include "keygate/headers.h"
#include "keygate/rawguard.h"

/* ---- scanner ---- */

enum {
    ST_IDLE,    /* between requests */
    ST_IDLE_CR, /* CR between requests: an empty line if LF follows */
    ST_METHOD,
    ST_RL_REST, /* request line after the method's SP */
    ST_RL_CR,
    ST_LINE_START, /* start of a header line, or the empty line */
    ST_END_CR,     /* CR at a line start: the head ends with LF */
    ST_BARE_LF,    /* LF without CR after a value: a fold if SP/HT follows */
    ST_NAME,
    ST_VALUE,
    ST_VALUE_CR,
    ST_BODY, /* Content-Length bytes */
    ST_CHUNK_SIZE,
    ST_CHUNK_SIZE_CR,
    ST_CHUNK_EXT, /* after ';' up to LF: the library takes any byte */
    ST_CHUNK_DATA,
    ST_CHUNK_DATA_END, /* CRLF or LF after a chunk's data */
    ST_CHUNK_DATA_END_CR,
    ST_TRAILER_START, /* trailer lines after the last chunk, to the empty line */
    ST_TRAILER_START_CR,
    ST_TRAILER_LINE,
    ST_REJECTED,
    ST_LOST,
};

#define KG_RAWSCAN_METHOD_MAX 32 /* front.c's method_ok() allows no more */
#define KG_RAWSCAN_CL_DIGITS 18  /* always below 2^63 */

static const char CL_NAME[] = "content-length";
static const char TE_NAME[] = "transfer-encoding";

static bool
tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

void
kg_rawscan_init(struct kg_rawscan *s)
{
    memset(s, 0, sizeof(*s));
    s->state = ST_IDLE;
}

static void
head_reset(struct kg_rawscan *s)
{
    s->len = s->digits = s->n_cl = s->n_te = s->rl_sp = 0;
    s->http10 = s->tgt_bad = s->cl_bad = s->cl_big = s->te_bad = s->bare_lf = false;
    s->seg_ok = true;
    s->cl_value = 0;
}

static bool
in_head(const struct kg_rawscan *s)
{
    return s->state >= ST_IDLE_CR && s->state <= ST_VALUE_CR;
}

uint64_t
kg_rawscan_safe_end(const struct kg_rawscan *s)
{
    if (s->state == ST_REJECTED || in_head(s))
        return s->head_start;
    return s->pos;
}

uint64_t
kg_rawscan_head_start(const struct kg_rawscan *s)
{
    return s->head_start;
}

/* The request line's rest, one byte: the version is what follows the LAST
 * SP (as libmicrohttpd 0.9.75 reads it without strict parsing), so a blank
 * in the target shows as several SPs. */
static void
rl_byte(struct kg_rawscan *s, unsigned char c)
{
    static const char pat[] = "HTTP/d.d";

    if (c == ' ') {
        s->rl_sp++;
        s->len = 0;
        s->seg_ok = true;
        s->http10 = false;
        s->major = 0;
        return;
    }
    if (c < 0x20 || c == 0x7f)
        s->tgt_bad = true;
    if (s->len >= 8)
        s->seg_ok = false;
    else if (pat[s->len] == 'd') {
        if (c < '0' || c > '9')
            s->seg_ok = false;
        else if (s->len == 5)
            s->major = (char)c;
        else
            s->http10 = c == '0';
    } else if ((unsigned char)pat[s->len] != c) {
        s->seg_ok = false;
    }
    s->len++;
}

/* Content-Length and Transfer-Encoding values, one byte. vstate: 0 leading
 * blanks, 1 in the value, 2 malformed. */
static void
value_byte(struct kg_rawscan *s, unsigned char c)
{
    if (s->match == 0 || s->vstate == 2)
        return;
    if (s->vstate == 0 && (c == ' ' || c == '\t'))
        return;
    s->vstate = 1;
    if (s->match & 1) {
        /* Exactly 1*DIGIT after the leading blanks: libmicrohttpd 0.9.75
         * refuses anything else, trailing blanks included, and answers that
         * itself (twice). */
        if (c < '0' || c > '9') {
            s->vstate = 2;
            return;
        }
        if (++s->digits <= KG_RAWSCAN_CL_DIGITS)
            s->num = s->num * 10 + (uint64_t)(c - '0');
    } else {
        /* The library's test: the value after its leading blanks equals
         * "chunked" in any letter case, nothing around it. */
        if (s->len >= 7 || (c | 0x20) != (unsigned char)"chunked"[s->len])
            s->vstate = 2;
        else
            s->len++;
    }
}

static void
header_done(struct kg_rawscan *s)
{
    if (s->match & 1) {
        s->n_cl++;
        if (s->vstate != 1)
            s->cl_bad = true;
        else if (s->digits > KG_RAWSCAN_CL_DIGITS)
            s->cl_big = true;
        else
            s->cl_value = s->num;
    } else if (s->match & 2) {
        s->n_te++;
        if (s->vstate != 1 || s->len != 7)
            s->te_bad = true;
    }
}

/* The empty line: kg_hygiene's framing checks, in its order, then the body
 * as the library frames it. */
static enum kg_rawguard_reason
head_done(struct kg_rawscan *s)
{
    if (s->bare_lf)
        return KG_RAWGUARD_LINE_END;
    if (s->n_cl > 0 && s->n_te > 0)
        return KG_RAWGUARD_CL_AND_TE;
    if (s->n_te > 1 || s->te_bad)
        return KG_RAWGUARD_TE;
    if (s->n_te > 0 && s->http10)
        return KG_RAWGUARD_TE_HTTP10;
    if (s->n_cl > 1)
        return KG_RAWGUARD_SEVERAL_CL;
    if (s->cl_bad)
        return KG_RAWGUARD_CL;
    if (s->cl_big)
        return KG_RAWGUARD_CL_TOO_LARGE;
    if (s->n_te > 0) {
        s->state = ST_CHUNK_SIZE;
        s->num = 0;
        s->digits = 0;
    } else if (s->cl_value > 0) {
        s->state = ST_BODY;
        s->remaining = s->cl_value;
    } else {
        s->state = ST_IDLE;
    }
    return KG_RAWGUARD_OK;
}

/* End of the request line. */
static enum kg_rawscan_result
rl_done(struct kg_rawscan *s)
{
    if (s->rl_sp == 0 || !s->seg_ok || s->len != 8)
        s->reason = KG_RAWGUARD_LINE;
    else if (s->major != '1')
        return KG_RAWSCAN_LOST; /* the library answers 505 itself and closes */
    else if (s->tgt_bad || s->rl_sp > 1)
        s->reason = KG_RAWGUARD_TARGET;
    if (s->reason != KG_RAWGUARD_OK)
        return KG_RAWSCAN_REJECT;
    s->state = ST_LINE_START;
    return KG_RAWSCAN_MORE;
}

static enum kg_rawscan_result
chunk_size_done(struct kg_rawscan *s)
{
    if (s->digits == 0)
        return KG_RAWSCAN_LOST;
    if (s->num == 0) {
        s->state = ST_TRAILER_START;
    } else {
        s->state = ST_CHUNK_DATA;
        s->remaining = s->num;
    }
    return KG_RAWSCAN_MORE;
}

/* One byte of a head or of the framing around chunks. */
static enum kg_rawscan_result
step(struct kg_rawscan *s, unsigned char c)
{
    enum kg_rawguard_reason r = KG_RAWGUARD_OK;

    switch (s->state) {
    case ST_IDLE:
        if (c == '\n')
            return KG_RAWSCAN_MORE; /* the library skips empty lines before a request */
        s->head_start = s->pos;
        head_reset(s);
        if (c == '\r') {
            s->state = ST_IDLE_CR;
            return KG_RAWSCAN_MORE;
        }
        s->state = ST_METHOD;
        return step(s, c);
    case ST_IDLE_CR:
        if (c == '\n') {
            s->state = ST_IDLE;
            return KG_RAWSCAN_MORE;
        }
        r = KG_RAWGUARD_METHOD;
        break;
    case ST_METHOD:
        if (c == ' ' && s->len > 0) {
            s->len = 0;
            s->state = ST_RL_REST;
        } else if (c == '\r' || c == '\n') {
            r = KG_RAWGUARD_LINE;
        } else if (!tchar(c) || ++s->len > KG_RAWSCAN_METHOD_MAX) {
            r = KG_RAWGUARD_METHOD;
        }
        break;
    case ST_RL_REST:
        if (c == '\r') {
            s->state = ST_RL_CR;
        } else if (c == '\n') {
            s->bare_lf = true; /* a line end to the library: refused at the head's end */
            return rl_done(s);
        } else {
            rl_byte(s, c);
        }
        break;
    case ST_RL_CR:
        if (c == '\n')
            return rl_done(s);
        rl_byte(s, '\r'); /* a bare CR is a control byte of the line */
        s->state = ST_RL_REST;
        return step(s, c);
    case ST_LINE_START:
        if (c == '\r') {
            s->state = ST_END_CR;
        } else if (c == '\n') {
            s->bare_lf = true;
            r = head_done(s);
        } else if (c == ' ' || c == '\t') {
            r = KG_RAWGUARD_FOLD;
        } else if (!tchar(c)) {
            r = KG_RAWGUARD_NAME;
        } else {
            s->state = ST_NAME;
            s->match = 3;
            s->len = 0;
            return step(s, c);
        }
        break;
    case ST_END_CR:
        if (c != '\n') {
            r = KG_RAWGUARD_LINE_END;
            break;
        }
        r = head_done(s);
        break;
    case ST_BARE_LF:
        /* Bare LF ends a line for the library, so lines go on being read
         * (a fold after one is named as such); the head is refused at its end. */
        if (c == ' ' || c == '\t') {
            r = KG_RAWGUARD_FOLD;
            break;
        }
        header_done(s);
        s->bare_lf = true;
        s->state = ST_LINE_START;
        return step(s, c);
    case ST_NAME:
        if (c == ':') {
            if ((s->match & 1) && s->len != sizeof(CL_NAME) - 1)
                s->match &= (uint8_t)~1u;
            if ((s->match & 2) && s->len != sizeof(TE_NAME) - 1)
                s->match &= (uint8_t)~2u;
            s->state = ST_VALUE;
            s->vstate = 0;
            s->len = 0;
            s->digits = 0;
            s->num = 0;
        } else if (!tchar(c)) {
            r = KG_RAWGUARD_NAME; /* a blank before the colon, a control byte, no colon */
        } else {
            unsigned char l = (unsigned char)(c | 0x20);

            if ((s->match & 1) &&
                (s->len >= sizeof(CL_NAME) - 1 || (unsigned char)CL_NAME[s->len] != l))
                s->match &= (uint8_t)~1u;
            if ((s->match & 2) &&
                (s->len >= sizeof(TE_NAME) - 1 || (unsigned char)TE_NAME[s->len] != l))
                s->match &= (uint8_t)~2u;
            s->len++;
        }
        break;
    case ST_VALUE:
        if (c == '\r')
            s->state = ST_VALUE_CR;
        else if (c == '\n')
            s->state = ST_BARE_LF;
        else if ((c < 0x20 && c != '\t') || c == 0x7f)
            r = KG_RAWGUARD_VALUE; /* HTAB is the only control byte a value may hold */
        else
            value_byte(s, c);
        break;
    case ST_VALUE_CR:
        if (c != '\n') {
            r = KG_RAWGUARD_VALUE;
            break;
        }
        header_done(s);
        s->state = ST_LINE_START;
        break;
    /* Chunk framing, as libmicrohttpd 0.9.75 reads it (process_request_body):
     * hex digits, then ';' and anything up to LF, or CRLF, or LF; data;
     * CRLF or LF; after the 0 chunk, lines up to an empty one. */
    case ST_CHUNK_SIZE: {
        int h = kg_hexval((unsigned char)c);

        if (h >= 0) {
            if (s->num > (UINT64_MAX >> 4))
                return KG_RAWSCAN_LOST;
            s->num = (s->num << 4) | (uint64_t)h;
            s->digits++;
        } else if (c == ';') {
            if (s->digits == 0)
                return KG_RAWSCAN_LOST;
            s->state = ST_CHUNK_EXT;
        } else if (c == '\r') {
            s->state = ST_CHUNK_SIZE_CR;
        } else if (c == '\n') {
            return chunk_size_done(s);
        } else {
            return KG_RAWSCAN_LOST;
        }
        break;
    }
    case ST_CHUNK_SIZE_CR:
        if (c != '\n')
            return KG_RAWSCAN_LOST;
        return chunk_size_done(s);
    case ST_CHUNK_EXT:
        if (c == '\n')
            return chunk_size_done(s);
        break;
    case ST_CHUNK_DATA_END:
        if (c == '\r') {
            s->state = ST_CHUNK_DATA_END_CR;
        } else if (c == '\n') {
            s->state = ST_CHUNK_SIZE;
            s->num = 0;
            s->digits = 0;
        } else {
            return KG_RAWSCAN_LOST;
        }
        break;
    case ST_CHUNK_DATA_END_CR:
        if (c != '\n')
            return KG_RAWSCAN_LOST;
        s->state = ST_CHUNK_SIZE;
        s->num = 0;
        s->digits = 0;
        break;
    case ST_TRAILER_START:
        if (c == '\n')
            s->state = ST_IDLE;
        else
            s->state = c == '\r' ? ST_TRAILER_START_CR : ST_TRAILER_LINE;
        break;
    case ST_TRAILER_START_CR:
        s->state = c == '\n' ? ST_IDLE : ST_TRAILER_LINE;
        break;
    case ST_TRAILER_LINE:
        if (c == '\n')
            s->state = ST_TRAILER_START;
        break;
    default:
        return KG_RAWSCAN_LOST;
    }
    if (r != KG_RAWGUARD_OK) {
        s->reason = r;
        return KG_RAWSCAN_REJECT;
    }
    return KG_RAWSCAN_MORE;
}

enum kg_rawscan_result
kg_rawscan_feed(struct kg_rawscan *s, const unsigned char *p, size_t n,
                enum kg_rawguard_reason *why)
{
    size_t i = 0;

    while (i < n) {
        enum kg_rawscan_result res;

        if (s->state == ST_REJECTED || s->state == ST_LOST)
            break;
        if (s->state == ST_BODY || s->state == ST_CHUNK_DATA) {
            size_t skip = n - i;

            if ((uint64_t)skip > s->remaining)
                skip = (size_t)s->remaining;
            s->remaining -= skip;
            s->pos += skip;
            i += skip;
            if (s->remaining == 0)
                s->state = s->state == ST_BODY ? ST_IDLE : ST_CHUNK_DATA_END;
            continue;
        }
        res = step(s, p[i]);
        if (res == KG_RAWSCAN_REJECT) {
            s->state = ST_REJECTED;
            break;
        }
        if (res == KG_RAWSCAN_LOST) {
            s->state = ST_LOST;
            break;
        }
        s->pos++;
        i++;
    }
    if (s->state == ST_REJECTED) {
        if (why != NULL)
            *why = s->reason;
        return KG_RAWSCAN_REJECT;
    }
    return s->state == ST_LOST ? KG_RAWSCAN_LOST : KG_RAWSCAN_MORE;
}

enum kg_rawguard_reason
kg_rawscan_buffer(const void *p, size_t n, uint64_t *head_start, bool *lost)
{
    struct kg_rawscan s;
    enum kg_rawguard_reason why = KG_RAWGUARD_OK;
    enum kg_rawscan_result res;

    kg_rawscan_init(&s);
    res = kg_rawscan_feed(&s, p, n, &why);
    if (head_start != NULL)
        *head_start = res == KG_RAWSCAN_REJECT ? s.head_start : 0;
    if (lost != NULL)
        *lost = res == KG_RAWSCAN_LOST;
    return res == KG_RAWSCAN_REJECT ? why : KG_RAWGUARD_OK;
}

/* ---- reasons ---- */

static const struct {
    const char *code; /* the synthetic request's path */
    unsigned status;
    const char *msg;
} reasons[KG_RAWGUARD_NREASONS] = {
    [KG_RAWGUARD_OK] = {"ok", 200, NULL},
    [KG_RAWGUARD_LINE] = {"request-line", 400, "Malformed request line"},
    [KG_RAWGUARD_METHOD] = {"method", 400, "Malformed request method"},
    [KG_RAWGUARD_TARGET] = {"target", 400, "Malformed request target"},
    [KG_RAWGUARD_LINE_END] = {"line-ending", 400, "Malformed line ending"},
    [KG_RAWGUARD_FOLD] = {"obs-fold", 400, "Folded header line"},
    [KG_RAWGUARD_NAME] = {"header-name", 400, "Malformed header name"},
    [KG_RAWGUARD_VALUE] = {"header-value", 400, "Control character in header value"},
    [KG_RAWGUARD_CL_AND_TE] = {"cl-and-te", 400, "Both Content-Length and Transfer-Encoding"},
    [KG_RAWGUARD_TE] = {"transfer-encoding", 400, "Unsupported Transfer-Encoding"},
    [KG_RAWGUARD_TE_HTTP10] = {"te-http10", 400, "Transfer-Encoding in an HTTP/1.0 request"},
    [KG_RAWGUARD_SEVERAL_CL] = {"several-cl", 400, "Several Content-Length headers"},
    [KG_RAWGUARD_CL] = {"content-length", 400, "Malformed Content-Length"},
    [KG_RAWGUARD_CL_TOO_LARGE] = {"content-length-size", 413, "Content-Length is too large"},
};

const char *
kg_rawguard_message(enum kg_rawguard_reason r)
{
    return (unsigned)r < KG_RAWGUARD_NREASONS ? reasons[r].msg : NULL;
}

unsigned
kg_rawguard_status(enum kg_rawguard_reason r)
{
    return (unsigned)r < KG_RAWGUARD_NREASONS ? reasons[r].status : 400;
}

/* ---- the guard ---- */

#define KG_RAWGUARD_FDS_MAX (1u << 20)     /* the kernel's default nr_open */
#define KG_RAWGUARD_DRAIN_MAX (256 * 1024) /* per call, after a refusal */

struct guard {
    struct kg_rawscan scan;
    void *tls;           /* the connection's gnutls session; NULL for plain TCP */
    unsigned char *hold; /* read from the socket, not yet given to the library */
    size_t hold_len, hold_cap, hold_max;
    size_t release;   /* leading bytes of hold that are checked */
    uint64_t base;    /* stream offset of hold[0] */
    bool passthrough; /* lost sync, or a head larger than hold_max */
    bool rejected;
    enum kg_rawguard_reason reason;
    char synth[384];
    size_t synth_len, synth_off;
};

/* A connection whose state could not be allocated reads end-of-file. */
static struct guard dead_guard;

static _Atomic(struct guard *) *table;
static atomic_uint table_n;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char token_hex[65];

typedef ssize_t (*tls_recv_fn)(gnutls_session_t, void *, size_t);
static _Atomic(tls_recv_fn) real_tls_recv;

static void
init_once_fn(void)
{
    struct rlimit rl;
    rlim_t n = 65536;
    unsigned char tok[32];

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        n = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > KG_RAWGUARD_FDS_MAX ? KG_RAWGUARD_FDS_MAX
                                                                              : rl.rlim_max;
    if (n < 1024)
        n = 1024;
    randombytes_buf(tok, sizeof(tok));
    sodium_bin2hex(token_hex, sizeof(token_hex), tok, sizeof(tok));
    sodium_memzero(tok, sizeof(tok));
    /* calloc: untouched pages of a large table cost no memory. */
    table = calloc((size_t)n, sizeof(*table));
    if (table != NULL)
        atomic_store(&table_n, (unsigned)n);
}

void
kg_rawguard_init(void)
{
    pthread_once(&init_once, init_once_fn);
}

static struct guard *
lookup(int fd)
{
    if (fd < 0 || (unsigned)fd >= atomic_load_explicit(&table_n, memory_order_acquire))
        return NULL;
    return atomic_load_explicit(&table[fd], memory_order_acquire);
}

static int
conn_fd(struct MHD_Connection *conn, void **tls)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ti =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);

    if (tls != NULL)
        *tls = ti != NULL ? ti->tls_session : NULL;
    return ci != NULL ? ci->connect_fd : -1;
}

void
kg_rawguard_watch_fd(int fd, void *tls, size_t hold_max)
{
    struct guard *g;

    kg_rawguard_init();
    if (fd < 0 || (unsigned)fd >= atomic_load(&table_n))
        return;                /* the table covers RLIMIT_NOFILE's hard limit (up to 2^20) */
    kg_rawguard_forget_fd(fd); /* nothing there unless a close went unreported */
    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        atomic_store_explicit(&table[fd], &dead_guard, memory_order_release);
        return;
    }
    kg_rawscan_init(&g->scan);
    g->tls = tls;
    g->hold_max = hold_max < 4096 ? 4096 : hold_max;
    atomic_store_explicit(&table[fd], g, memory_order_release);
}

void
kg_rawguard_forget_fd(int fd)
{
    struct guard *g = lookup(fd);

    if (g == NULL)
        return;
    atomic_store_explicit(&table[fd], NULL, memory_order_release);
    if (g != &dead_guard) {
        free(g->hold);
        free(g);
    }
}

void
kg_rawguard_watch(struct MHD_Connection *conn, size_t hold_max)
{
    void *tls;
    int fd = conn_fd(conn, &tls);

    kg_rawguard_watch_fd(fd, tls, hold_max);
}

void
kg_rawguard_forget(struct MHD_Connection *conn)
{
    kg_rawguard_forget_fd(conn_fd(conn, NULL));
}

enum kg_rawguard_reason
kg_rawguard_rejected(struct MHD_Connection *conn, const char *method)
{
    const char *tok;
    struct guard *g;

    if (method == NULL || strcmp(method, "KGREJECT") != 0)
        return KG_RAWGUARD_OK;
    g = lookup(conn_fd(conn, NULL));
    if (g == NULL || g == &dead_guard || !g->rejected || g->synth_off < g->synth_len)
        return KG_RAWGUARD_OK;
    tok = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Keygate-Reject");
    if (tok == NULL || strlen(tok) != 64 || sodium_memcmp(tok, token_hex, 64) != 0)
        return KG_RAWGUARD_OK;
    return g->reason;
}

/* The real read, plain or TLS: >0 bytes, 0 end of file, <0 an error the
 * library understands (-1 with errno, or a GnuTLS code). */
struct reader {
    int fd;
    int flags;
    gnutls_session_t tls;
};

static ssize_t
real_read(const struct reader *rd, void *buf, size_t len)
{
    if (rd->tls != NULL) {
        tls_recv_fn fn = atomic_load_explicit(&real_tls_recv, memory_order_acquire);

        if (fn == NULL) {
            fn = (tls_recv_fn)dlsym(RTLD_NEXT, "gnutls_record_recv");
            if (fn == NULL)
                return GNUTLS_E_INTERNAL_ERROR;
            atomic_store_explicit(&real_tls_recv, fn, memory_order_release);
        }
        return fn(rd->tls, buf, len);
    }
    return (ssize_t)syscall(SYS_recvfrom, rd->fd, buf, len, rd->flags, NULL, NULL);
}

static ssize_t
again(const struct reader *rd)
{
    if (rd->tls != NULL)
        return GNUTLS_E_AGAIN;
    errno = EAGAIN;
    return -1;
}

static ssize_t
deliver(struct guard *g, unsigned char *buf, size_t len)
{
    size_t n = g->release < len ? g->release : len;

    memcpy(buf, g->hold, n);
    memmove(g->hold, g->hold + n, g->hold_len - n);
    g->hold_len -= n;
    g->release -= n;
    g->base += n;
    return (ssize_t)n;
}

static size_t
synth_copy(struct guard *g, unsigned char *buf, size_t len)
{
    size_t n = g->synth_len - g->synth_off;

    if (n > len)
        n = len;
    memcpy(buf, g->synth + g->synth_off, n);
    g->synth_off += n;
    return n;
}

/* The refused head's own X-Request-Id, when it has a clean one, so keygate's
 * answer and its access log line carry it. p is what was read of the head
 * (past the refused byte too, up to the empty line): best effort. */
static bool
find_request_id(const unsigned char *p, size_t n, char out[KG_REQUEST_ID_MAX])
{
    static const char name[] = "\r\nx-request-id:";
    const size_t nlen = sizeof(name) - 1;

    for (size_t i = 0; i + nlen <= n; i++) {
        size_t j = i + nlen, k = 0;

        if (i + 4 <= n && memcmp(p + i, "\r\n\r\n", 4) == 0)
            return false;
        if (strncasecmp((const char *)p + i, name, nlen) != 0)
            continue;
        while (j < n && (p[j] == ' ' || p[j] == '\t'))
            j++;
        while (j < n && p[j] != '\r' && p[j] != '\n' && k + 1 < KG_REQUEST_ID_MAX)
            out[k++] = (char)p[j++];
        if (j == n || (p[j] != '\r' && p[j] != '\n'))
            return false; /* cut short or too long */
        while (k > 0 && (out[k - 1] == ' ' || out[k - 1] == '\t'))
            k--;
        out[k] = '\0';
        return kg_headers_request_id_ok(out);
    }
    return false;
}

/* p, n: the refused head as far as it was read. */
static void
reject(struct guard *g, enum kg_rawguard_reason why, const unsigned char *p, size_t n)
{
    char rid[KG_REQUEST_ID_MAX];
    int len;

    g->rejected = true;
    g->reason = why;
    if (!find_request_id(p, n, rid))
        rid[0] = '\0';
    len = snprintf(g->synth, sizeof(g->synth),
                   "KGREJECT /%s HTTP/1.1\r\nHost: keygate.invalid\r\nX-Keygate-Reject: %s\r\n"
                   "%s%s%s\r\n",
                   reasons[why].code, token_hex, rid[0] != '\0' ? "X-Request-Id: " : "", rid,
                   rid[0] != '\0' ? "\r\n" : "");
    g->synth_len = len > 0 && (size_t)len < sizeof(g->synth) ? (size_t)len : 0;
    g->synth_off = 0;
}

/* After the synthetic request: what the client still sends is read and
 * dropped (closing a socket with unread bytes would send a reset that can
 * destroy the answers in flight), and the library only ever sees EAGAIN,
 * never end-of-file (which would drop the answer to the synthetic request). */
static ssize_t
drain(const struct reader *rd, unsigned char *buf, size_t len)
{
    size_t total = 0;
    unsigned char scratch[512];

    if (len == 0) {
        buf = scratch;
        len = sizeof(scratch);
    }
    while (total < KG_RAWGUARD_DRAIN_MAX) {
        ssize_t m = real_read(rd, buf, len);

        if (m <= 0)
            break;
        total += (size_t)m;
    }
    return again(rd);
}

static bool
hold_room(struct guard *g)
{
    size_t want;
    unsigned char *p;

    if (g->hold_len < g->hold_cap)
        return true;
    want = g->hold_cap == 0 ? 4096 : g->hold_cap * 2;
    if (want > g->hold_max)
        want = g->hold_max;
    if (want <= g->hold_len)
        return false;
    p = realloc(g->hold, want);
    if (p == NULL)
        return false;
    g->hold = p;
    g->hold_cap = want;
    return true;
}

static bool
hold_append(struct guard *g, const unsigned char *p, size_t n)
{
    while (g->hold_cap - g->hold_len < n) {
        size_t want = g->hold_cap == 0 ? 4096 : g->hold_cap * 2;
        unsigned char *q;

        if (want < g->hold_len + n)
            want = g->hold_len + n;
        q = realloc(g->hold, want);
        if (q == NULL)
            return false;
        g->hold = q;
        g->hold_cap = want;
    }
    memcpy(g->hold + g->hold_len, p, n);
    g->hold_len += n;
    return true;
}

/* One read by the library on a watched connection. */
static ssize_t
guard_read(struct guard *g, const struct reader *rd, unsigned char *buf, size_t len)
{
    enum kg_rawguard_reason why = KG_RAWGUARD_OK;
    enum kg_rawscan_result res;
    ssize_t n;

    if (g == &dead_guard)
        return 0;
    if (len == 0)
        return real_read(rd, buf, len);
    if (g->release > 0)
        return deliver(g, buf, len);
    if (g->rejected) {
        if (g->synth_off < g->synth_len)
            return (ssize_t)synth_copy(g, buf, len);
        return drain(rd, buf, len);
    }
    if (g->passthrough)
        return real_read(rd, buf, len);

    if (g->hold_len == 0) {
        /* The usual case: read in place, no copy unless a head is cut. */
        size_t safe;

        n = real_read(rd, buf, len);
        if (n <= 0)
            return n;
        res = kg_rawscan_feed(&g->scan, buf, (size_t)n, &why);
        if (res == KG_RAWSCAN_LOST) {
            g->passthrough = true;
            return n;
        }
        if (res == KG_RAWSCAN_REJECT) {
            safe = (size_t)(kg_rawscan_head_start(&g->scan) - g->base);
            g->base += safe;
            reject(g, why, buf + safe, (size_t)n - safe);
            return (ssize_t)(safe + synth_copy(g, buf + safe, len - safe));
        }
        safe = (size_t)(kg_rawscan_safe_end(&g->scan) - g->base);
        if (safe < (size_t)n && !hold_append(g, buf + safe, (size_t)n - safe)) {
            g->hold_len = 0;
            g->rejected = true; /* out of memory: end the connection, unchecked bytes unread */
            g->synth_len = g->synth_off = 0;
            return 0;
        }
        g->base += safe;
        if (safe > 0)
            return (ssize_t)safe;
    }

    /* An unfinished head is held: read on until it is checked or the
     * socket has nothing more (then the next edge brings the rest). */
    for (;;) {
        if (!hold_room(g)) {
            if (g->hold_len < g->hold_max) {
                g->rejected = true; /* out of memory */
                g->synth_len = g->synth_off = 0;
                g->hold_len = 0;
                return 0;
            }
            /* Larger than the library's pool: it refuses it itself (431/414). */
            g->passthrough = true;
            g->release = g->hold_len;
            return deliver(g, buf, len);
        }
        n = real_read(rd, g->hold + g->hold_len, g->hold_cap - g->hold_len);
        if (n <= 0)
            return n;
        res = kg_rawscan_feed(&g->scan, g->hold + g->hold_len, (size_t)n, &why);
        g->hold_len += (size_t)n;
        if (res == KG_RAWSCAN_LOST) {
            g->passthrough = true;
            g->release = g->hold_len;
            return deliver(g, buf, len);
        }
        if (res == KG_RAWSCAN_REJECT) {
            g->release = (size_t)(kg_rawscan_head_start(&g->scan) - g->base);
            reject(g, why, g->hold + g->release, g->hold_len - g->release);
            g->hold_len = g->release; /* the refused head and what follows are dropped */
            if (g->release > 0)
                return deliver(g, buf, len);
            return (ssize_t)synth_copy(g, buf, len);
        }
        g->release = (size_t)(kg_rawscan_safe_end(&g->scan) - g->base);
        if (g->release > 0)
            return deliver(g, buf, len);
    }
}

/* libmicrohttpd's plain reads (recv_param_adapter). */
ssize_t
recv(int fd, void *buf, size_t len, int flags)
{
    struct guard *g = lookup(fd);
    struct reader rd = {.fd = fd, .flags = flags};

    if (g == NULL || g->tls != NULL || flags != 0)
        return (ssize_t)syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
    return guard_read(g, &rd, buf, len);
}

/* libmicrohttpd's TLS reads (recv_tls_adapter). The session names its
 * socket (the library sets it with gnutls_transport_set_int); the slot must
 * hold this very session. */
ssize_t
gnutls_record_recv(gnutls_session_t session, void *data, size_t data_size)
{
    struct guard *g = atomic_load_explicit(&table_n, memory_order_relaxed) > 0
                          ? lookup(gnutls_transport_get_int(session))
                          : NULL;
    struct reader rd = {.fd = -1, .tls = session};

    if (g == NULL || (g != &dead_guard && g->tls != (void *)session))
        return real_read(&rd, data, data_size);
    return guard_read(g, &rd, data, data_size);
}
