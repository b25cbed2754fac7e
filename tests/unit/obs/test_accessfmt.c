/* tests/unit/obs/test_accessfmt.c - src/obs/accessfmt.c through
 * keygate/accesslog.h: a record as one JSON line (order, nulls, escaping,
 * bytes that are not UTF-8, cuts), keys in the path and request id masked
 * however they are glued, cut or encoded, and the time format; and through
 * obs/accesslog_int.h, the hand-written line held byte for byte against
 * jansson's json_dumpb() of the same members (accessfmt_ref.h): every byte
 * in every string member, every pair of bytes in the path, invalid UTF-8,
 * strings at their maximum length, int64 extremes, every combination of
 * null members, masked keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "keygate/accesslog.h"
#include "keygate/keyfmt.h"
#include "keygate/metrics.h"
#include "obs/accesslog_int.h"
#include "unit/obs/accessfmt_ref.h"

static void
fill(struct kg_accesslog_rec *r, const char *id)
{
    memset(r, 0, sizeof(*r));
    r->time_ms = 1795453262345LL; /* 2026-11-23T17:01:02.345Z */
    r->duration_us = 1234;
    r->bytes_sent = 17;
    r->status = 200;
    r->upstream_status = 200;
    r->outcome = KG_OUTCOME_ALLOWED;
    kg_accesslog_rec_strings(r, id, "192.0.2.7", "GET", "key_abc", "acme", "/v1/items", 9);
}

/* The field-by-field view of a record's packed strings, for changing one. */
struct strs {
    const char *id, *remote, *method, *key_id, *tenant, *path;
};

static void
set_strs(struct kg_accesslog_rec *r, const struct strs *s)
{
    kg_accesslog_rec_strings(r, s->id, s->remote, s->method, s->key_id, s->tenant, s->path,
                             s->path != NULL ? strlen(s->path) : 0);
}

static json_t *
parse_line(const char *line, size_t len)
{
    json_error_t jerr;
    json_t *o;

    assert_true(len > 1);
    assert_int_equal(line[len - 1], '\n');
    assert_null(memchr(line, '\n', len - 1)); /* one line */
    o = json_loadb(line, len - 1, 0, &jerr);
    if (o == NULL)
        fail_msg("not JSON: %s (%s)", line, jerr.text);
    return o;
}

static void
test_a_record_is_one_json_line_with_every_field_in_order(void **state)
{
    struct kg_accesslog_rec r;
    size_t len;
    char *line;

    (void)state;
    fill(&r, "req-1");
    line = kg_accesslog_format(&r, &len);
    assert_non_null(line);
    assert_string_equal(line, "{\"time\":\"2026-11-23T17:01:02.345Z\",\"request_id\":\"req-1\","
                              "\"remote\":\"192.0.2.7\",\"method\":\"GET\",\"path\":\"/v1/items\","
                              "\"status\":200,\"outcome\":\"allowed\",\"key_id\":\"key_abc\","
                              "\"tenant\":\"acme\",\"upstream_status\":200,\"duration_us\":1234,"
                              "\"bytes_sent\":17}\n");
    assert_int_equal(len, strlen(line));
    free(line);
}

static void
test_fields_that_do_not_apply_are_null_not_empty(void **state)
{
    struct kg_accesslog_rec r;
    size_t len;
    char *line;
    json_t *o;

    (void)state;
    fill(&r, "");
    set_strs(&r, &(struct strs){.id = "",
                                .remote = "192.0.2.7",
                                .method = "GET",
                                .key_id = NULL,
                                .tenant = "",
                                .path = "/v1/items"});
    r.upstream_status = 0;
    r.outcome = KG_OUTCOME_NONE;
    r.bytes_sent = -1;
    r.status = 0;
    line = kg_accesslog_format(&r, &len);
    o = parse_line(line, len);
    assert_true(json_is_null(json_object_get(o, "request_id")));
    assert_true(json_is_null(json_object_get(o, "key_id")));
    assert_true(json_is_null(json_object_get(o, "tenant")));
    assert_true(json_is_null(json_object_get(o, "upstream_status")));
    assert_true(json_is_null(json_object_get(o, "outcome")));
    assert_true(json_is_null(json_object_get(o, "bytes_sent")));
    assert_true(json_is_null(json_object_get(o, "status")));
    assert_null(strstr(line, "\"\""));
    json_decref(o);
    free(line);
}

static void
test_every_outcome_has_the_metrics_name(void **state)
{
    static const char *const want[] = {"allowed",      "unauthenticated", "forbidden",
                                       "rate_limited", "quota_exceeded",  "upstream_error",
                                       "bad_request"};
    struct kg_accesslog_rec r;

    (void)state;
    for (int i = 0; i < KG_OUTCOME_COUNT; i++) {
        size_t len;
        char *line;
        json_t *o;

        fill(&r, "x");
        r.outcome = i;
        line = kg_accesslog_format(&r, &len);
        o = parse_line(line, len);
        assert_string_equal(json_string_value(json_object_get(o, "outcome")), want[i]);
        json_decref(o);
        free(line);
    }
}

static void
test_quotes_backslashes_and_control_characters_are_escaped(void **state)
{
    struct kg_accesslog_rec r;
    size_t len;
    char *line;
    json_t *o;

    (void)state;
    fill(&r, "x");
    set_strs(&r, &(struct strs){.id = "x",
                                .remote = "192.0.2.7",
                                .method = "G\"ET\r",
                                .key_id = "key_abc",
                                .tenant = "acme",
                                .path = "/a\"b\\c\nd\te\x01\x1f\x7f/\"}{,"});
    line = kg_accesslog_format(&r, &len);
    o = parse_line(line, len);
    assert_string_equal(json_string_value(json_object_get(o, "path")),
                        "/a\"b\\c\nd\te\x01\x1f\x7f/\"}{,");
    assert_string_equal(json_string_value(json_object_get(o, "method")), "G\"ET\r");
    assert_non_null(strstr(line, "\\u0001"));
    json_decref(o);
    free(line);
}

static void
test_bytes_that_are_not_utf8_become_replacement_characters(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"/\xff", "/\xEF\xBF\xBD"},
        {"/caf\xC3\xA9", "/caf\xC3\xA9"},                                   /* valid: kept */
        {"/\xE2\x82\xAC\xF0\x9F\x98\x80", "/\xE2\x82\xAC\xF0\x9F\x98\x80"}, /* € and an emoji */
        {"/\xC0\xAF", "/\xEF\xBF\xBD\xEF\xBF\xBD"},                         /* overlong '/' */
        {"/\xED\xA0\x80", "/\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},         /* a surrogate */
        {"/\xE2\x82", "/\xEF\xBF\xBD\xEF\xBF\xBD"},                         /* cut short */
        {"/\xF4\x90\x80\x80", "/\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* > U+10FFFF */
    };
    struct kg_accesslog_rec r;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len;
        char *line;
        json_t *o;

        fill(&r, "x");
        set_strs(&r, &(struct strs){.id = "x", .method = "GET", .path = cases[i].in});
        line = kg_accesslog_format(&r, &len);
        assert_non_null(line);
        o = parse_line(line, len);
        assert_string_equal(json_string_value(json_object_get(o, "path")), cases[i].out);
        json_decref(o);
        free(line);
    }
}

static void
test_strings_longer_than_their_field_are_cut_to_it(void **state)
{
    struct kg_accesslog_rec r;
    size_t len;
    char *line;
    json_t *o;

    (void)state;
    fill(&r, "x");
    {
        char path[KG_ACCESSLOG_PATH_MAX + 100];
        char id[KG_REQUEST_ID_MAX + 10];

        memset(path, '\xff', sizeof(path));
        memset(id, 'a', sizeof(id) - 1);
        id[sizeof(id) - 1] = '\0';
        /* Longer than the fields: cut to their maximum, not past the record. */
        kg_accesslog_rec_strings(&r, id, "192.0.2.7", "GET", "key_abc", "acme", path, sizeof(path));
    }
    line = kg_accesslog_format(&r, &len);
    o = parse_line(line, len);
    assert_int_equal(json_string_length(json_object_get(o, "path")),
                     3 * (KG_ACCESSLOG_PATH_MAX - 1));
    assert_int_equal(json_string_length(json_object_get(o, "request_id")), KG_REQUEST_ID_MAX - 1);
    assert_string_equal(json_string_value(json_object_get(o, "tenant")), "acme");
    json_decref(o);
    free(line);
}

static void
test_a_key_in_the_path_or_request_id_keeps_only_its_display_prefix(void **state)
{
    char key[KG_KEY_MAX], path[256], want[256], shown[64];
    struct kg_err err = {{0}};
    struct kg_accesslog_rec r;
    const char *not_a_key =
        "/files/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/sha/0123456789abcdef0123456789abcde";
    size_t len, klen, keep;
    char *line;
    json_t *o;

    (void)state;
    assert_int_equal(kg_keyfmt_generate("kg_live_", key, &err), KG_OK);
    klen = strlen(key);
    keep = klen - KG_KEY_TAIL_LEN + KG_KEY_SHOWN_BODY;
    snprintf(path, sizeof(path), "/v1/x_%s/y?%s", key, key); /* glued to "x_" on the left */
    snprintf(shown, sizeof(shown), "%.*s", (int)keep, key);
    snprintf(want, sizeof(want), "/v1/x_%s%.*s/y", shown, (int)(klen - keep),
             "****************************************************************");
    fill(&r, "x");
    kg_accesslog_rec_strings(&r, key, "192.0.2.7", "GET", NULL, NULL, path, strcspn(path, "?"));
    line = kg_accesslog_format(&r, &len);
    o = parse_line(line, len);
    assert_string_equal(json_string_value(json_object_get(o, "path")), want);
    assert_int_equal(strncmp(json_string_value(json_object_get(o, "request_id")), shown, keep), 0);
    assert_null(strstr(line, key + keep));
    assert_null(strstr(line, key + klen - 12));
    json_decref(o);
    free(line);

    /* A run shorter than a key's tail is left alone. */
    kg_accesslog_rec_strings(&r, "x", "192.0.2.7", "GET", NULL, NULL, not_a_key, strlen(not_a_key));
    line = kg_accesslog_format(&r, &len);
    o = parse_line(line, len);
    assert_string_equal(json_string_value(json_object_get(o, "path")), not_a_key);
    json_decref(o);
    free(line);
}

/* No 8 characters in a row of key past its display prefix (keep) in line. */
static void
assert_no_fragment(const char *line, const char *key, size_t keep)
{
    size_t klen = strlen(key);
    char w[9];

    for (size_t j = keep; j + 8 <= klen; j++) {
        memcpy(w, key + j, 8);
        w[8] = '\0';
        if (strstr(line, w) != NULL)
            fail_msg("key fragment %s (at %zu) in %s", w, j, line);
    }
}

/* The path (n bytes) and request id id as a line; caller frees. */
static char *
line_for(const char *id, const char *path, size_t n)
{
    struct kg_accesslog_rec r;
    size_t len;
    char *line;

    fill(&r, "x");
    kg_accesslog_rec_strings(&r, id, "192.0.2.7", "GET", NULL, NULL, path, n);
    line = kg_accesslog_format(&r, &len);
    assert_non_null(line);
    json_decref(parse_line(line, len));
    return line;
}

static void
test_a_key_with_anything_glued_after_it_is_masked_too(void **state)
{
    char key[KG_KEY_MAX], path[256], id[KG_REQUEST_ID_MAX];
    const char *after[] = {"_old", "X", "0", ".json", "-1"};
    struct kg_err err = {{0}};
    size_t keep;
    char *line;

    (void)state;
    assert_int_equal(kg_keyfmt_generate("kg_live_", key, &err), KG_OK);
    keep = strlen("kg_live_") + KG_KEY_SHOWN_BODY;
    for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
        snprintf(path, sizeof(path), "/v1/keys/%s%s", key, after[i]);
        snprintf(id, sizeof(id), "%s%s", key, after[i]);
        line = line_for(id, path, strlen(path));
        assert_non_null(strstr(line, "/v1/keys/kg_live_"));
        assert_no_fragment(line, key, keep);
        free(line);
    }
}

static void
test_a_key_across_the_cut_at_511_bytes_is_masked(void **state)
{
    char key[KG_KEY_MAX], path[1024];
    struct kg_err err = {{0}};
    size_t klen, keep = strlen("kg_live_") + KG_KEY_SHOWN_BODY;
    char *line;

    (void)state;
    assert_int_equal(kg_keyfmt_generate("kg_live_", key, &err), KG_OK);
    klen = strlen(key);
    /* The key starts at every offset from well before the cut to just before it. */
    for (size_t at = KG_ACCESSLOG_PATH_MAX - 1 - klen - 2; at < KG_ACCESSLOG_PATH_MAX - 1; at++) {
        memset(path, 'a', sizeof(path));
        for (size_t j = 0; j < at; j += 8)
            path[j] = '/'; /* short segments: nothing to mask but the key */
        memcpy(path + at, key, klen);
        path[at + klen] = '/';
        line = line_for("x", path, at + klen + 20);
        assert_no_fragment(line, key, keep);
        free(line);
    }
}

static void
test_a_percent_encoded_key_is_masked(void **state)
{
    char key[KG_KEY_MAX], path[512];
    struct kg_err err = {{0}};
    size_t klen, keep = strlen("kg_live_") + KG_KEY_SHOWN_BODY, o = 0;
    char *line;

    (void)state;
    assert_int_equal(kg_keyfmt_generate("kg_live_", key, &err), KG_OK);
    klen = strlen(key);
    /* %6B is 'k'; every fourth body character encoded too. */
    o += (size_t)snprintf(path, sizeof(path), "/v1/%%6B%s", "g_live_");
    for (size_t j = strlen("kg_live_"); j < klen; j++)
        o += (size_t)(j % 4 == 0 ? snprintf(path + o, sizeof(path) - o, "%%%02X", key[j])
                                 : snprintf(path + o, sizeof(path) - o, "%c", key[j]));
    line = line_for("x", path, o);
    /* Kept: the prefix and 4 body characters ("%XX" and 3 plain), then '*'. */
    {
        size_t head = strlen("/v1/%6Bg_live_") + 3 + 3;
        json_error_t jerr;
        json_t *obj = json_loads(line, 0, &jerr);

        memset(path + head, '*', o - head);
        path[o] = '\0';
        assert_non_null(obj);
        assert_string_equal(json_string_value(json_object_get(obj, "path")), path);
        json_decref(obj);
    }
    assert_no_fragment(line, key, keep);
    free(line);
}

static void
test_masking_in_place_keeps_the_length_and_the_display_prefix(void **state)
{
    char key[KG_KEY_MAX], msg[256], want[256];
    struct kg_err err = {{0}};
    size_t klen, n;

    (void)state;
    assert_int_equal(kg_keyfmt_generate("kg_", key, &err), KG_OK);
    klen = strlen(key);
    n = (size_t)snprintf(msg, sizeof(msg), "Not found: /v1/%s?x=1", key);
    snprintf(want, sizeof(want), "Not found: /v1/%.*s%.*s?x=1", (int)(3 + KG_KEY_SHOWN_BODY), key,
             (int)(klen - 3 - KG_KEY_SHOWN_BODY),
             "*******************************************************************");
    assert_true(kg_accesslog_mask_keys(msg, n));
    assert_string_equal(msg, want);
    assert_false(kg_accesslog_mask_keys(msg, n)); /* nothing left to mask */
    n = (size_t)snprintf(msg, sizeof(msg), "GET /v1/items/42 HTTP/1.1");
    assert_false(kg_accesslog_mask_keys(msg, n));
    assert_string_equal(msg, "GET /v1/items/42 HTTP/1.1");
}

static void
test_time_is_rfc3339_utc_with_milliseconds(void **state)
{
    char out[25];

    (void)state;
    kg_accesslog_time(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    kg_accesslog_time(1795453262005LL, out);
    assert_string_equal(out, "2026-11-23T17:01:02.005Z");
}

/* ---- the hand-written line against jansson's ---- */

/* kg_al_line_write(v) is byte for byte ref_line(v). */
static void
assert_same_as_jansson(const struct kg_al_value v[NFIELDS])
{
    size_t cap = 512, n, ref_len = 0;
    char *ours, *ref;

    for (int f = 0; f < NFIELDS; f++)
        cap += 6 * v[f].n;
    ours = malloc(cap);
    assert_non_null(ours);
    n = kg_al_line_write(v, ours);
    assert_true(n <= cap);
    ref = ref_line(v, &ref_len);
    assert_non_null(ref);
    if (n != ref_len || memcmp(ours, ref, n) != 0)
        fail_msg("the line differs from jansson's:\n  ours:    %.*s\n  jansson: %s", (int)n, ours,
                 ref);
    free(ours);
    free(ref);
}

/* The record's members against jansson, and kg_accesslog_format() is the
 * same line; returns the line's length. */
static size_t
assert_record_same_as_jansson(const struct kg_accesslog_rec *r)
{
    static char buf[KG_AL_LINE_MAX];
    struct kg_al_line l;
    struct kg_al_value v[NFIELDS];
    size_t n, len;
    char *line;

    memset(&l, 0, sizeof(l));
    kg_al_line_values(&l, r, 0, v);
    assert_same_as_jansson(v);
    n = kg_al_line_write(v, buf);
    assert_true(n <= KG_AL_LINE_MAX);
    line = kg_accesslog_format(r, &len);
    assert_non_null(line);
    assert_int_equal(len, n);
    assert_memory_equal(line, buf, n);
    free(line);
    return n;
}

/* The members of fill()'s record, every one set. */
static void
base_values(struct kg_al_line *l, struct kg_accesslog_rec *r, struct kg_al_value v[NFIELDS])
{
    memset(l, 0, sizeof(*l));
    fill(r, "req-1");
    kg_al_line_values(l, r, 0, v);
}

static void
test_the_members_are_named_and_typed_in_the_line_order(void **state)
{
    static const char *const want[NFIELDS] = {
        "time",    "request_id", "remote", "method",          "path",        "status",
        "outcome", "key_id",     "tenant", "upstream_status", "duration_us", "bytes_sent",
    };

    (void)state;
    for (int f = 0; f < NFIELDS; f++) {
        assert_string_equal(kg_al_field_name[f], want[f]);
        assert_int_equal(kg_al_field_is_number(f), f == F_STATUS || f == F_UPSTREAM_STATUS ||
                                                       f == F_DURATION_US || f == F_BYTES_SENT);
    }
}

static void
test_every_byte_in_every_string_member_is_written_as_jansson_writes_it(void **state)
{
    struct kg_accesslog_rec r;
    struct kg_al_line l;
    struct kg_al_value v[NFIELDS];

    (void)state;
    base_values(&l, &r, v);
    for (int f = 0; f < NFIELDS; f++) {
        if (kg_al_field_is_number(f))
            continue;
        for (int b = 0; b < 256; b++) {
            char alone[1] = {(char)b}, inside[3] = {'a', (char)b, 'z'}, three[3];
            struct kg_al_value keep = v[f];

            memset(three, b, sizeof(three));
            v[f] = (struct kg_al_value){.s = alone, .n = 1};
            assert_same_as_jansson(v);
            v[f] = (struct kg_al_value){.s = inside, .n = 3};
            assert_same_as_jansson(v);
            v[f] = (struct kg_al_value){.s = three, .n = 3};
            assert_same_as_jansson(v);
            v[f] = keep;
        }
    }
}

static void
test_escapes_are_the_short_ones_and_capital_u00xx(void **state)
{
    static const struct {
        char in;
        const char *out;
    } cases[] = {
        {'"', "\\\""},       {'\\', "\\\\"},      {'\b', "\\b"},       {'\f', "\\f"},
        {'\n', "\\n"},       {'\r', "\\r"},       {'\t', "\\t"},       {'\0', "\\u0000"},
        {'\x01', "\\u0001"}, {'\x0b', "\\u000B"}, {'\x1f', "\\u001F"}, {'\x7f', "\x7f"},
        {'/', "/"},          {'\'', "'"},
    };
    struct kg_accesslog_rec r;
    struct kg_al_line l;
    struct kg_al_value v[NFIELDS];
    char line[1024], want[64];
    size_t n;

    (void)state;
    base_values(&l, &r, v);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        v[F_PATH] = (struct kg_al_value){.s = &cases[i].in, .n = 1};
        n = kg_al_line_write(v, line);
        line[n] = '\0';
        snprintf(want, sizeof(want), ",\"path\":\"%s\",", cases[i].out);
        if (strstr(line, want) == NULL)
            fail_msg("byte 0x%02x: want %s in %s", (unsigned char)cases[i].in, want, line);
    }
}

static void
test_every_byte_through_a_record_matches_jansson(void **state)
{
    struct kg_accesslog_rec r;

    (void)state;
    for (int b = 0; b < 256; b++) {
        char s[4] = {'x', (char)b, 'y', '\0'};
        const char *f[KG_AL_NSTR];

        for (int i = 0; i < KG_AL_NSTR; i++) {
            const char *base[KG_AL_NSTR] = {"req-1",   "192.0.2.7", "GET",
                                            "key_abc", "acme",      "/v1/items"};

            if (b == 0 && i != KG_AL_PATH)
                continue; /* only the path carries a NUL byte */
            memcpy(f, base, sizeof(f));
            f[i] = s;
            fill(&r, "req-1");
            kg_accesslog_rec_strings(&r, f[KG_AL_REQUEST_ID], f[KG_AL_REMOTE], f[KG_AL_METHOD],
                                     f[KG_AL_KEY_ID], f[KG_AL_TENANT], f[KG_AL_PATH],
                                     i == KG_AL_PATH ? 3 : strlen(f[KG_AL_PATH]));
            assert_record_same_as_jansson(&r);
        }
    }
}

static void
test_every_pair_of_bytes_in_the_path_matches_jansson(void **state)
{
    struct kg_accesslog_rec r;
    struct kg_al_line l;
    struct kg_al_value v[NFIELDS];

    (void)state;
    base_values(&l, &r, v);
    for (int a = 0; a < 256; a++) {
        for (int b = 0; b < 256; b++) {
            char s[2] = {(char)a, (char)b};

            v[F_PATH] = (struct kg_al_value){.s = s, .n = 2};
            assert_same_as_jansson(v);
        }
    }
}

static void
test_invalid_utf8_becomes_one_replacement_per_byte_as_jansson_would_need(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\x80", "\xEF\xBF\xBD"},                                 /* a lone continuation byte */
        {"\xBF\xBF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* two */
        {"\xC0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong NUL */
        {"\xC1\xBF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong */
        {"\xC2\x80", "\xC2\x80"},                                 /* U+0080: kept */
        {"\xDF\xBF", "\xDF\xBF"},                                 /* U+07FF */
        {"\xE0\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* overlong 3 */
        {"\xE0\xA0\x80", "\xE0\xA0\x80"},                         /* U+0800 */
        {"\xED\x9F\xBF", "\xED\x9F\xBF"},                         /* U+D7FF */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* U+D800, a surrogate */
        {"\xEF\xBF\xBF", "\xEF\xBF\xBF"},                         /* U+FFFF */
        {"\xF0\x80\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* overlong 4 */
        {"\xF0\x90\x80\x80", "\xF0\x90\x80\x80"},                                 /* U+10000 */
        {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"},                                 /* U+10FFFF */
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* past it */
        {"\xF5\x80", "\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xFE\xFF", "\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xF0\x9F\x98", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* cut short */
        {"\xE2\x82"
         "A",
         "\xEF\xBF\xBD\xEF\xBF\xBD"
         "A"},                                           /* cut by ASCII */
        {"\xC3\xA9\xC3", "\xC3\xA9\xEF\xBF\xBD"},        /* good, then a lone lead */
        {"\xC3\"", "\xEF\xBF\xBD\\\""},                  /* a lead, then a quote */
        {"\xE2\x0a\x82", "\xEF\xBF\xBD\\n\xEF\xBF\xBD"}, /* a control byte inside */
    };
    struct kg_accesslog_rec r;
    struct kg_al_line l;
    struct kg_al_value v[NFIELDS];
    char line[1024], want[64];
    size_t n;

    (void)state;
    base_values(&l, &r, v);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        v[F_PATH] = (struct kg_al_value){.s = cases[i].in, .n = strlen(cases[i].in)};
        assert_same_as_jansson(v);
        n = kg_al_line_write(v, line);
        line[n] = '\0';
        snprintf(want, sizeof(want), ",\"path\":\"%s\",", cases[i].out);
        if (strstr(line, want) == NULL)
            fail_msg("case %zu: want %s in %s", i, want, line);
    }
}

static void
test_strings_at_their_maximum_length_match_jansson_and_fit_the_line(void **state)
{
    static const char *const fills[] = {"a",        "\x01",         "\xff", "\"", "\xc3",
                                        "\xc3\xa9", "\xe2\x82\xac", "%41",  "/"};
    struct kg_accesslog_rec r;
    char big[KG_ACCESSLOG_PATH_MAX * 2 + 8];

    (void)state;
    for (size_t i = 0; i < sizeof(fills) / sizeof(fills[0]); i++) {
        size_t k = strlen(fills[i]), n;

        for (size_t o = 0; o + k < sizeof(big); o += k)
            memcpy(big + o, fills[i], k);
        big[sizeof(big) - 1] = '\0';
        /* Every field longer than its maximum: each is cut, then written. */
        fill(&r, "x");
        kg_accesslog_rec_strings(&r, big, big, big, big, big, big, sizeof(big) - 1);
        n = assert_record_same_as_jansson(&r);
        assert_true(n <= KG_AL_LINE_MAX);
        for (int s = 0; s < KG_AL_NSTR; s++)
            assert_true(r.len[s] > 0);
    }
}

static void
test_numbers_at_the_int64_extremes_match_jansson(void **state)
{
    static const int64_t nums[] = {INT64_MIN,
                                   INT64_MIN + 1,
                                   -1000000000000000000LL,
                                   -10,
                                   -9,
                                   -1,
                                   0,
                                   1,
                                   9,
                                   10,
                                   99,
                                   100,
                                   4294967295LL,
                                   999999999999999999LL,
                                   1000000000000000000LL,
                                   INT64_MAX - 1,
                                   INT64_MAX};
    struct kg_accesslog_rec r;
    struct kg_al_line l;
    struct kg_al_value v[NFIELDS];
    char line[1024];
    size_t n;

    (void)state;
    base_values(&l, &r, v);
    for (int f = 0; f < NFIELDS; f++) {
        if (!kg_al_field_is_number(f))
            continue;
        for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
            v[f] = (struct kg_al_value){.i = nums[i]};
            assert_same_as_jansson(v);
        }
        v[f] = (struct kg_al_value){.i = INT64_MIN};
        n = kg_al_line_write(v, line);
        line[n] = '\0';
        assert_non_null(strstr(line, "\":-9223372036854775808"));
        v[f] = (struct kg_al_value){.i = 0};
    }

    /* Through a record: what each number member makes of its extremes. */
    fill(&r, "x");
    r.status = UINT32_MAX;
    r.upstream_status = UINT32_MAX;
    r.duration_us = INT64_MAX;
    r.bytes_sent = INT64_MAX;
    assert_record_same_as_jansson(&r);
    r.duration_us = INT64_MIN; /* written 0 */
    r.bytes_sent = INT64_MIN;  /* written null */
    assert_record_same_as_jansson(&r);
}

static void
test_every_combination_of_null_members_matches_jansson(void **state)
{
    struct kg_accesslog_rec r;
    struct kg_al_line l;
    struct kg_al_value base[NFIELDS], v[NFIELDS];

    (void)state;
    base_values(&l, &r, base);
    for (unsigned mask = 0; mask < 1u << NFIELDS; mask++) {
        memcpy(v, base, sizeof(v));
        for (int f = 0; f < NFIELDS; f++) {
            if ((mask & 1u << f) == 0)
                continue;
            if (kg_al_field_is_number(f))
                v[f].is_null = true;
            else
                v[f] = (struct kg_al_value){.s = NULL};
        }
        assert_same_as_jansson(v);
    }
}

static void
test_lines_with_masked_keys_match_jansson(void **state)
{
    char key[KG_KEY_MAX], path[1024];
    struct kg_err err = {{0}};
    struct kg_accesslog_rec r;
    size_t klen;

    (void)state;
    assert_int_equal(kg_keyfmt_generate("kg_live_", key, &err), KG_OK);
    klen = strlen(key);
    /* In the path and the request id, glued, encoded, and across the cut. */
    snprintf(path, sizeof(path), "/v1/x_%s/y\xff\"%s", key, key);
    fill(&r, "x");
    kg_accesslog_rec_strings(&r, key, "192.0.2.7", "GET", NULL, NULL, path, strlen(path));
    assert_record_same_as_jansson(&r);
    memset(path, '/', sizeof(path));
    memcpy(path + KG_ACCESSLOG_PATH_MAX - 1 - klen / 2, key, klen);
    kg_accesslog_rec_strings(&r, "\x01key", "192.0.2.7", "GET", NULL, NULL, path, sizeof(path));
    assert_record_same_as_jansson(&r);
    snprintf(path, sizeof(path), "/%%6B%%67_%s\n", key + 2);
    kg_accesslog_rec_strings(&r, path, "192.0.2.7", "GET", NULL, NULL, path, strlen(path));
    assert_record_same_as_jansson(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_record_is_one_json_line_with_every_field_in_order),
        cmocka_unit_test(test_fields_that_do_not_apply_are_null_not_empty),
        cmocka_unit_test(test_every_outcome_has_the_metrics_name),
        cmocka_unit_test(test_quotes_backslashes_and_control_characters_are_escaped),
        cmocka_unit_test(test_bytes_that_are_not_utf8_become_replacement_characters),
        cmocka_unit_test(test_strings_longer_than_their_field_are_cut_to_it),
        cmocka_unit_test(test_a_key_in_the_path_or_request_id_keeps_only_its_display_prefix),
        cmocka_unit_test(test_a_key_with_anything_glued_after_it_is_masked_too),
        cmocka_unit_test(test_a_key_across_the_cut_at_511_bytes_is_masked),
        cmocka_unit_test(test_a_percent_encoded_key_is_masked),
        cmocka_unit_test(test_masking_in_place_keeps_the_length_and_the_display_prefix),
        cmocka_unit_test(test_time_is_rfc3339_utc_with_milliseconds),
        cmocka_unit_test(test_the_members_are_named_and_typed_in_the_line_order),
        cmocka_unit_test(test_every_byte_in_every_string_member_is_written_as_jansson_writes_it),
        cmocka_unit_test(test_escapes_are_the_short_ones_and_capital_u00xx),
        cmocka_unit_test(test_every_byte_through_a_record_matches_jansson),
        cmocka_unit_test(test_every_pair_of_bytes_in_the_path_matches_jansson),
        cmocka_unit_test(test_invalid_utf8_becomes_one_replacement_per_byte_as_jansson_would_need),
        cmocka_unit_test(test_strings_at_their_maximum_length_match_jansson_and_fit_the_line),
        cmocka_unit_test(test_numbers_at_the_int64_extremes_match_jansson),
        cmocka_unit_test(test_every_combination_of_null_members_matches_jansson),
        cmocka_unit_test(test_lines_with_masked_keys_match_jansson),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
