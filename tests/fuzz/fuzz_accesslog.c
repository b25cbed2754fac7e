/* Fuzz target: the access-log line of today's writer (obs/accesslog.c):
 * kg_accesslog_rec_strings() packs what a request carried, and
 * kg_accesslog_format() turns the record into the JSON line the writer
 * thread writes. Input: 16 bytes of numbers (status, upstream status,
 * outcome, duration, bytes sent, time), then
 * "REQUEST-ID\nREMOTE\nMETHOD\nKEY-ID\nTENANT\nPATH" (the path is the rest,
 * any bytes). The line must be one JSON object (jansson reads it back), end
 * in exactly one '\n', and its path and request_id hold no run of
 * KG_ACCESSLOG_MASK_RUN letters and digits, %XX decoding to one counting as
 * one (a key's body). The line, written by hand (obs/accessfmt.c), must be
 * byte for byte what jansson's json_dumpb() writes for the record's members
 * (tests/unit/obs/accessfmt_ref.h); and so must the serializer alone fed
 * members no record could hold: the input's newline-separated pieces, NUL
 * bytes and all, at any length, in every string member (time and outcome
 * too), and any int64 or null, from the 16 head bytes, in every number. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "keygate/accesslog.h"
#include "keygate/metrics.h"
#include "obs/accesslog_int.h"
#include "unit/obs/accessfmt_ref.h"

#define HEAD 16

/* The masking rule of accesslog.h, counted independently: a letter or
 * digit, or %XX decoding to one, is one character of a run. */
static size_t
run_char(const char *s, size_t n)
{
    char hex[3] = {0};
    char *end;

    if (isalnum((unsigned char)s[0]))
        return 1;
    if (s[0] == '%' && n >= 3 && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
        hex[0] = s[1];
        hex[1] = s[2];
        if (isalnum((int)strtol(hex, &end, 16)))
            return 3;
    }
    return 0;
}

static void
check_masked(json_t *obj, const char *member)
{
    json_t *v = json_object_get(obj, member);
    const char *s = json_string_value(v);
    size_t run = 0, n = json_string_length(v), k;

    for (size_t i = 0; s != NULL && i<n; i += k> 0 ? k : 1) {
        k = run_char(s + i, n - i);
        run = k > 0 ? run + 1 : 0;
        if (run >= KG_ACCESSLOG_MASK_RUN)
            __builtin_trap();
    }
}

/* line (len bytes) is ref_line(v), or the target traps. */
static void
check_same_as_jansson(const char *line, size_t len, const struct kg_al_value v[NFIELDS])
{
    size_t ref_len = 0;
    char *ref = ref_line(v, &ref_len);

    if (ref == NULL)
        abort(); /* only out of memory */
    if (ref_len != len || memcmp(ref, line, len) != 0)
        __builtin_trap();
    free(ref);
}

/* The serializer alone, on members no record holds (above). */
static void
check_raw_members(const uint8_t *data, size_t size)
{
    const char *piece[8], *p = (const char *)data + HEAD, *end = (const char *)data + size;
    size_t plen[8], cap = 512, n;
    struct kg_al_value v[NFIELDS];
    int np = 0, sj = 0;
    char *out;

    while (np < 8) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));

        piece[np] = p;
        plen[np] = (size_t)((nl != NULL ? nl : end) - p);
        np++;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    for (int f = 0; f < NFIELDS; f++) {
        if (kg_al_field_is_number(f)) {
            uint64_t u;

            memcpy(&u, data + f % 9, sizeof(u));
            v[f] = (struct kg_al_value){.i = (int64_t)u, .is_null = (data[15] >> (f % 8) & 1) != 0};
        } else {
            int j = sj++ % np;

            /* Bit set: null; else the piece, possibly empty ("" is written ""). */
            if (data[14] >> (sj % 8) & 1)
                v[f] = (struct kg_al_value){.s = NULL};
            else
                v[f] = (struct kg_al_value){.s = piece[j], .n = plen[j]};
            cap += 6 * v[f].n;
        }
    }
    out = malloc(cap);
    if (out == NULL)
        abort();
    n = kg_al_line_write(v, out);
    if (n > cap)
        __builtin_trap();
    check_same_as_jansson(out, n, v);
    free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kg_accesslog_rec *rec;
    char *text, *p, *f[5];
    char *line;
    size_t len;
    json_t *obj;
    json_error_t jerr;

    if (size < HEAD)
        return 0;
    rec = calloc(1, sizeof(*rec));
    if (rec == NULL)
        abort();
    rec->status = (unsigned)(data[0] | data[1] << 8) % 1000;
    rec->upstream_status = (unsigned)(data[2] | data[3] << 8) % 1000;
    rec->outcome = (int)(data[4] % (KG_OUTCOME_COUNT + 2)) - 1; /* NONE, each, one past */
    rec->duration_us =
        (int64_t)(int32_t)(data[5] | data[6] << 8 | data[7] << 16 | (uint32_t)data[8] << 24);
    rec->bytes_sent =
        (int64_t)(int32_t)(data[9] | data[10] << 8 | data[11] << 16 | (uint32_t)data[12] << 24);
    /* A wall clock between 2001 and 2318: what a request's completion can read. */
    rec->time_ms = 1000000000000 + (int64_t)(data[13] | data[14] << 8 | data[15] << 16) * 600000;
    p = text = fz_strndup(data + HEAD, size - HEAD);
    for (int i = 0; i < 5; i++) {
        f[i] = strsep(&p, "\n");
        if (f[i] == NULL)
            f[i] = (char *)"";
    }
    /* The path: the rest of the input, NUL bytes and all. */
    size_t plen = p != NULL ? size - HEAD - (size_t)(p - text) : 0;
    kg_accesslog_rec_strings(rec, f[0], f[1], f[2], f[3], f[4], p != NULL ? p : "", plen);
    line = kg_accesslog_format(rec, &len);
    if (line == NULL)
        abort(); /* only out of memory */
    if (len == 0 || line[len - 1] != '\n' || strlen(line) != len || memchr(line, '\n', len - 1))
        __builtin_trap();
    /* A NUL byte in a path is written "\u0000": valid JSON, which jansson
     * reads only when asked to. */
    obj = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(obj))
        __builtin_trap();
    check_masked(obj, "path");
    check_masked(obj, "request_id");
    json_decref(obj);
    {
        struct kg_al_line l = {.when_s = 0};
        struct kg_al_value v[NFIELDS];

        kg_al_line_values(&l, rec, 0, v);
        check_same_as_jansson(line, len, v);
    }
    check_raw_members(data, size);
    free(line);
    free(text);
    free(rec);
    return 0;
}
