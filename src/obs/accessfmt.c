/* obs/accessfmt.c - one access-log record -> one JSON line: the members
 * in a fixed order, bytes a terminal or a parser would choke on escaped,
 * bytes that are not UTF-8 replaced, and anything shaped like an API key
 * in the path or the request id masked (kg_accesslog_mask_keys()), so the
 * log never holds a full key. The line is written by hand, not by
 * jansson: the record is fixed, and jansson's dump (per-codepoint escaping,
 * a hash table per call for loop detection) was most of the writer
 * thread's time. What it writes is byte for byte what
 * json_dumpb(JSON_COMPACT | JSON_PRESERVE_ORDER) writes for the same
 * members (tests/unit/obs/test_accessfmt.c, the accesslog fuzz target).
 * Pure apart from the clock; the writer thread (accesslog.c) calls it with
 * its one reused state, kg_accesslog_format() with a fresh one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keygate/hex.h"
#include "keygate/accesslog.h"
#include "keygate/keyfmt.h"
#include "keygate/metrics.h"
#include "keygate/timeutil.h"
#include "obs/accesslog_int.h"

const char *const kg_al_field_name[NFIELDS] = {
    "time",    "request_id", "remote", "method",          "path",        "status",
    "outcome", "key_id",     "tenant", "upstream_status", "duration_us", "bytes_sent",
};

void
kg_accesslog_time(int64_t time_ms, char out[25])
{
    time_t s = (time_t)(time_ms / 1000);
    int ms = (int)(time_ms % 1000);
    struct tm tm;

    gmtime_r(&s, &tm);
    if (strftime(out, 25, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
        snprintf(out, 25, "1970-01-01T00:00:00.000Z");
        return;
    }
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    /* No overlong forms, no surrogates, nothing above U+10FFFF. */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Wall clock minus monotonic clock, in microseconds, now. */
int64_t
kg_al_wall_offset_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - kg_time_mono_us();
}

static const size_t str_max[KG_AL_NSTR] = {
    KG_REQUEST_ID_MAX - 1, KG_CLIENTIP_MAX - 1,         KG_ACCESSLOG_METHOD_MAX - 1,
    KG_ID_MAX - 1,         KG_ACCESSLOG_TENANT_MAX - 1, KG_ACCESSLOG_PATH_MAX - 1,
};

_Static_assert(KG_ACCESSLOG_TEXT_MAX >= KG_REQUEST_ID_MAX - 1 + KG_CLIENTIP_MAX - 1 +
                                            KG_ACCESSLOG_METHOD_MAX - 1 + KG_ID_MAX - 1 +
                                            KG_ACCESSLOG_TENANT_MAX - 1 + KG_ACCESSLOG_PATH_MAX - 1,
               "every string fits in text");

static bool alnum(unsigned char c);

/* A string cut at n (of full) in the middle of a run of letters, digits
 * and '%' hides how long the run was from the writer's masking: a run of
 * KG_ACCESSLOG_MASK_RUN bytes or more across the cut keeps its first 4
 * bytes in kept, the rest '*'. Only for strings cut, so the event loops
 * pay nothing for ordinary ones. */
static void
mask_cut(char *kept, size_t n, const char *s, size_t full)
{
    size_t a = n, b = n;

    while (a > 0 && (alnum((unsigned char)s[a - 1]) || s[a - 1] == '%'))
        a--;
    while (b < full && b - a < KG_ACCESSLOG_MASK_RUN && (alnum((unsigned char)s[b]) || s[b] == '%'))
        b++;
    if (b - a >= KG_ACCESSLOG_MASK_RUN && n > a + KG_KEY_SHOWN_BODY && b > n)
        memset(kept + a + KG_KEY_SHOWN_BODY, '*', n - a - KG_KEY_SHOWN_BODY);
}

void
kg_accesslog_rec_strings(struct kg_accesslog_rec *rec, const char *request_id, const char *remote,
                         const char *method, const char *key_id, const char *tenant,
                         const char *path, size_t path_len)
{
    const char *s[KG_AL_NSTR] = {request_id, remote, method, key_id, tenant, path};
    size_t off = 0;

    for (int i = 0; i < KG_AL_NSTR; i++) {
        size_t n = s[i] == NULL ? 0 : i == KG_AL_PATH ? path_len : strnlen(s[i], str_max[i]);

        bool cut = n > str_max[i];

        if (cut)
            n = str_max[i];
        if (n > 0)
            memcpy(rec->text + off, s[i], n);
        if (cut)
            mask_cut(rec->text + off, n, s[i], i == KG_AL_PATH ? path_len : strlen(s[i]));
        rec->len[i] = (uint16_t)n;
        off += n;
    }
}

static bool
alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Bytes of one key-body character at s (n > 0 left): a letter or a digit,
 * or %XX that decodes to one (a client may encode a key); 0 otherwise. */
static size_t
body_char(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    if (alnum(u[0]))
        return 1;
    if (u[0] == '%' && n >= 3 && kg_hexval((unsigned char)u[1]) >= 0 &&
        kg_hexval((unsigned char)u[2]) >= 0 &&
        alnum(
            (unsigned char)(kg_hexval((unsigned char)u[1]) * 16 + kg_hexval((unsigned char)u[2]))))
        return 3;
    return 0;
}

/* keygate never reads a key from the URL or X-Request-Id, but a client may
 * still put one there, and no log may hold a key or a fragment of one. A
 * key's body and checksum are 51 letters and digits in a row; any run of
 * KG_ACCESSLOG_MASK_RUN or more (wherever it starts or ends, whatever
 * precedes or follows it) keeps its first 4 characters and the rest of its
 * bytes become '*'. No checksum is tried: one pass, whatever the input,
 * and a long run that is not a key is masked too (the safe side). With
 * out NULL, only tells whether there is something to mask. */
static bool
mask_scan(const char *s, size_t n, char *out)
{
    bool any = false;

    for (size_t i = 0; i < n;) {
        size_t k = body_char(s + i, n - i), count = 0, keep = i;

        if (k == 0) {
            i++;
            continue;
        }
        while (i < n && (k = body_char(s + i, n - i)) > 0) {
            i += k;
            if (++count == KG_KEY_SHOWN_BODY)
                keep = i;
        }
        if (count >= KG_ACCESSLOG_MASK_RUN) {
            if (out == NULL)
                return true;
            memset(out + keep, '*', i - keep);
            any = true;
        }
    }
    return any;
}

bool
kg_accesslog_mask_keys(char *s, size_t n)
{
    return mask_scan(s, n, s);
}

/* s, or out (n bytes) holding s masked when it has a run to mask. */
static const char *
mask_keys(const char *s, size_t n, char *out)
{
    if (!mask_scan(s, n, NULL))
        return s;
    memcpy(out, s, n);
    mask_scan(out, n, out);
    return out;
}

bool
kg_al_field_is_number(int f)
{
    return f == F_STATUS || f == F_UPSTREAM_STATUS || f == F_DURATION_US || f == F_BYTES_SENT;
}

static void
str_value(struct kg_al_value *v, const char *s, size_t n)
{
    v->s = n > 0 ? s : NULL; /* empty is null, not "" */
    v->n = n;
    v->i = 0;
    v->is_null = n == 0;
}

static void
num_value(struct kg_al_value *v, int64_t i, bool is_null)
{
    v->s = NULL;
    v->n = 0;
    v->i = i;
    v->is_null = is_null;
}

void
kg_al_line_values(struct kg_al_line *l, const struct kg_accesslog_rec *r, int64_t wall_off_us,
                  struct kg_al_value v[NFIELDS])
{
    const char *outcome = kg_metrics_outcome_name((enum kg_outcome)r->outcome);
    int64_t time_ms = r->time_ms != 0 ? r->time_ms : (r->end_mono_us + wall_off_us) / 1000;
    int ms = (int)(time_ms % 1000);
    const char *str[KG_AL_NSTR];
    size_t len[KG_AL_NSTR], off = 0;

    for (int i = 0; i < KG_AL_NSTR; i++) {
        len[i] = r->len[i] < str_max[i] ? r->len[i] : str_max[i];
        str[i] = r->text + off;
        off += len[i];
    }
    /* What the client chose freely: the path and its request id. */
    str[KG_AL_PATH] = mask_keys(str[KG_AL_PATH], len[KG_AL_PATH], l->masked);
    str[KG_AL_REQUEST_ID] = mask_keys(str[KG_AL_REQUEST_ID], len[KG_AL_REQUEST_ID], l->masked_id);

    /* The date and time change once a second; the milliseconds every line. */
    if (time_ms / 1000 != l->when_s || l->when[0] == '\0') {
        kg_accesslog_time(time_ms, l->when);
        l->when_s = time_ms / 1000;
    }
    l->when[20] = (char)('0' + ms / 100);
    l->when[21] = (char)('0' + ms / 10 % 10);
    l->when[22] = (char)('0' + ms % 10);
    str_value(&v[F_TIME], l->when, 24);
    str_value(&v[F_REQUEST_ID], str[KG_AL_REQUEST_ID], len[KG_AL_REQUEST_ID]);
    str_value(&v[F_REMOTE], str[KG_AL_REMOTE], len[KG_AL_REMOTE]);
    str_value(&v[F_METHOD], str[KG_AL_METHOD], len[KG_AL_METHOD]);
    str_value(&v[F_PATH], str[KG_AL_PATH], len[KG_AL_PATH]);
    num_value(&v[F_STATUS], r->status, r->status == 0);
    str_value(&v[F_OUTCOME], outcome, outcome != NULL ? strlen(outcome) : 0);
    str_value(&v[F_KEY_ID], str[KG_AL_KEY_ID], len[KG_AL_KEY_ID]);
    str_value(&v[F_TENANT], str[KG_AL_TENANT], len[KG_AL_TENANT]);
    num_value(&v[F_UPSTREAM_STATUS], r->upstream_status, r->upstream_status == 0);
    num_value(&v[F_DURATION_US], r->duration_us > 0 ? r->duration_us : 0, false);
    num_value(&v[F_BYTES_SENT], r->bytes_sent, r->bytes_sent < 0);
}

/* What a byte needs in a JSON string: 0 nothing, 1 an escape (a control
 * byte, '"', '\\'), 2 a UTF-8 check (0x80 and above). '/' and DEL (0x7F)
 * pass as they are, as jansson writes them without JSON_ESCAPE_SLASH. */
static const unsigned char byte_class[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50: '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x70 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x80 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x90 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xA0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xB0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xC0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xD0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xE0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xF0 */
};

/* s (n bytes) as a JSON string at o; returns the end. */
static char *
put_str(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    *o++ = '"';
    while (i < n) {
        size_t start = i, k;
        unsigned char c;

        while (i < n && byte_class[u[i]] == 0)
            i++;
        memcpy(o, s + start, i - start);
        o += i - start;
        if (i == n)
            break;
        c = u[i];
        if (c >= 0x80) {
            /* The rule of the jansson formatter before this one: each byte
             * that does not start or continue a valid sequence is one U+FFFD. */
            k = utf8_seq(u + i, n - i);
            if (k == 0) {
                memcpy(o, "\xEF\xBF\xBD", 3);
                o += 3;
                i++;
            } else {
                memcpy(o, s + i, k);
                o += k;
                i += k;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *o++ = (char)c;
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            memcpy(o, "u00", 3);
            o[3] = hex[c >> 4];
            o[4] = hex[c & 15];
            o += 5;
        }
        i++;
    }
    *o++ = '"';
    return o;
}

/* v in decimal at o (INT64_MIN too); returns the end. */
static char *
put_int(char *o, int64_t v)
{
    char digits[20];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0;

    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *o++ = '-';
    while (n > 0)
        *o++ = digits[--n];
    return o;
}

/* What comes before each member's value: the separator and the quoted name. */
#define HEAD(s)                                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
static const struct {
    const char *s;
    size_t n;
} member_head[NFIELDS] = {
    HEAD("{\"time\":"),        HEAD(",\"request_id\":"),
    HEAD(",\"remote\":"),      HEAD(",\"method\":"),
    HEAD(",\"path\":"),        HEAD(",\"status\":"),
    HEAD(",\"outcome\":"),     HEAD(",\"key_id\":"),
    HEAD(",\"tenant\":"),      HEAD(",\"upstream_status\":"),
    HEAD(",\"duration_us\":"), HEAD(",\"bytes_sent\":"),
};
#undef HEAD

size_t
kg_al_line_write(const struct kg_al_value v[NFIELDS], char *out)
{
    char *o = out;

    for (int f = 0; f < NFIELDS; f++) {
        memcpy(o, member_head[f].s, member_head[f].n);
        o += member_head[f].n;
        if (kg_al_field_is_number(f) ? v[f].is_null : v[f].s == NULL) {
            memcpy(o, "null", 4);
            o += 4;
        } else if (kg_al_field_is_number(f)) {
            o = put_int(o, v[f].i);
        } else {
            o = put_str(o, v[f].s, v[f].n);
        }
    }
    *o++ = '}';
    *o++ = '\n';
    return (size_t)(o - out);
}

char *
kg_accesslog_format(const struct kg_accesslog_rec *rec, size_t *len)
{
    struct kg_al_line l = {.when_s = 0};
    struct kg_al_value v[NFIELDS];
    char *out = malloc(KG_AL_LINE_MAX + 1);
    size_t n;

    if (out == NULL)
        return NULL;
    kg_al_line_values(&l, rec, kg_al_wall_offset_us(), v);
    n = kg_al_line_write(v, out);
    out[n] = '\0';
    if (len != NULL)
        *len = n;
    return out;
}
