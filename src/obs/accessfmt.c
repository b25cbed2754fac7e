/* obs/accessfmt.c - one access-log record -> one JSON line: the members
 * in a fixed order, bytes a terminal or a parser would choke on replaced,
 * and anything shaped like an API key in the path or the request id
 * masked (kg_accesslog_mask_keys()), so the log never holds a full key.
 * Pure apart from the clock; the writer thread (accesslog.c) calls it with
 * its one reused line, kg_accesslog_format() with a fresh one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "keygate/hex.h"
#include "keygate/accesslog.h"
#include "keygate/keyfmt.h"
#include "keygate/metrics.h"
#include "keygate/timeutil.h"
#include "obs/accesslog_int.h"

static const char *const field_name[NFIELDS] = {
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

bool
kg_al_line_init(struct kg_al_line *l)
{
    l->obj = json_object();
    if (l->obj == NULL)
        return false;
    for (int i = 0; i < NFIELDS; i++) {
        l->val[i] = json_null();
        if (json_object_set_new(l->obj, field_name[i], l->val[i]) != 0)
            return false;
    }
    return true;
}

void
kg_al_line_cleanup(struct kg_al_line *l)
{
    json_decref(l->obj);
    l->obj = NULL;
}

/* Member i becomes v (a new reference, or NULL: out of memory). */
static bool
set_new(struct kg_al_line *l, int i, json_t *v)
{
    if (v == NULL || json_object_set_new(l->obj, field_name[i], v) != 0)
        return false;
    l->val[i] = v;
    return true;
}

static bool
set_null(struct kg_al_line *l, int i)
{
    return json_is_null(l->val[i]) || set_new(l, i, json_null());
}

/* Member i becomes the string s (at most max bytes), each byte that is not
 * part of valid UTF-8 replaced by U+FFFD; null when s is empty. jansson
 * escapes quotes, backslashes and control characters when it dumps. */
static bool
set_str(struct kg_al_line *l, int i, const char *s, size_t n)
{
    size_t o = 0, k;
    const char *v = s;
    size_t i_byte;

    if (n == 0)
        return set_null(l, i);
    for (i_byte = 0; i_byte < n; i_byte += k) {
        k = utf8_seq((const unsigned char *)s + i_byte, n - i_byte);
        if (k == 0)
            break;
    }
    if (i_byte < n) {
        /* Rare: copy with replacements (n <= KG_ACCESSLOG_PATH_MAX for every field). */
        for (size_t j = 0; j < n; j += k) {
            k = utf8_seq((const unsigned char *)s + j, n - j);
            if (k == 0) {
                memcpy(l->scratch + o, "\xEF\xBF\xBD", 3);
                o += 3;
                k = 1;
            } else {
                memcpy(l->scratch + o, s + j, k);
                o += k;
            }
        }
        v = l->scratch;
        n = o;
    }
    if (json_is_string(l->val[i]))
        return json_string_setn_nocheck(l->val[i], v, n) == 0;
    return set_new(l, i, json_stringn_nocheck(v, n));
}

static bool
set_int(struct kg_al_line *l, int i, int64_t v, bool is_null)
{
    if (is_null)
        return set_null(l, i);
    if (json_is_integer(l->val[i]))
        return json_integer_set(l->val[i], (json_int_t)v) == 0;
    return set_new(l, i, json_integer((json_int_t)v));
}

/* The line's object now holds rec; false when out of memory. */
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

/* wall_off_us: kg_al_wall_offset_us() of about now, for records with end_mono_us. */
bool
kg_al_line_fill(struct kg_al_line *l, const struct kg_accesslog_rec *r, int64_t wall_off_us)
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
    return set_str(l, F_TIME, l->when, 24) &&
           set_str(l, F_REQUEST_ID, str[KG_AL_REQUEST_ID], len[KG_AL_REQUEST_ID]) &&
           set_str(l, F_REMOTE, str[KG_AL_REMOTE], len[KG_AL_REMOTE]) &&
           set_str(l, F_METHOD, str[KG_AL_METHOD], len[KG_AL_METHOD]) &&
           set_str(l, F_PATH, str[KG_AL_PATH], len[KG_AL_PATH]) &&
           set_int(l, F_STATUS, r->status, r->status == 0) &&
           set_str(l, F_OUTCOME, outcome != NULL ? outcome : "",
                   outcome != NULL ? strlen(outcome) : 0) &&
           set_str(l, F_KEY_ID, str[KG_AL_KEY_ID], len[KG_AL_KEY_ID]) &&
           set_str(l, F_TENANT, str[KG_AL_TENANT], len[KG_AL_TENANT]) &&
           set_int(l, F_UPSTREAM_STATUS, r->upstream_status, r->upstream_status == 0) &&
           set_int(l, F_DURATION_US, r->duration_us > 0 ? r->duration_us : 0, false) &&
           set_int(l, F_BYTES_SENT, r->bytes_sent, r->bytes_sent < 0);
}

char *
kg_accesslog_format(const struct kg_accesslog_rec *rec, size_t *len)
{
    struct kg_al_line *l = calloc(1, sizeof(*l));
    char *text = NULL, *out = NULL;
    size_t n;

    if (l == NULL || !kg_al_line_init(l) || !kg_al_line_fill(l, rec, kg_al_wall_offset_us()))
        goto cleanup;
    text = json_dumps(l->obj, DUMP_FLAGS);
    if (text == NULL)
        goto cleanup;
    n = strlen(text);
    out = malloc(n + 2);
    if (out == NULL)
        goto cleanup;
    memcpy(out, text, n);
    out[n] = '\n';
    out[n + 1] = '\0';
    if (len != NULL)
        *len = n + 1;

cleanup:
    free(text);
    if (l != NULL)
        kg_al_line_cleanup(l);
    free(l);
    return out;
}
