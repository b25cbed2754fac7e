/* tests/unit/obs/accessfmt_ref.h - the reference the access-log line is
 * held against: the same twelve members (struct kg_al_value) put into a
 * jansson object in order and dumped with json_dumpb(JSON_COMPACT |
 * JSON_PRESERVE_ORDER), as keygate wrote the line before it wrote it by
 * hand. jansson refuses a string that is not UTF-8, so bytes that are not
 * are replaced first, by jansson's own judgement rather than keygate's:
 * at each offset, the shortest run of 1 to 4 bytes json_stringn() takes is
 * one character; when none is, that one byte becomes U+FFFD.
 *
 * Static functions in a header, shared by tests/unit/obs/test_accessfmt.c
 * and tests/fuzz/fuzz_accesslog.c. */
#ifndef KEYGATE_TEST_ACCESSFMT_REF_H
#define KEYGATE_TEST_ACCESSFMT_REF_H

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "obs/accesslog_int.h"

/* Bytes of the character at s (n left) as jansson sees it; 0: not UTF-8. */
static size_t
ref_char_len(const char *s, size_t n)
{
    if ((unsigned char)s[0] < 0x80)
        return 1;
    for (size_t k = 1; k <= 4 && k <= n; k++) {
        json_t *j = json_stringn(s, k);

        if (j != NULL) {
            json_decref(j);
            return k;
        }
    }
    return 0;
}

/* s (n bytes) as a jansson string, each byte jansson does not take as
 * UTF-8 replaced by U+FFFD; NULL when out of memory or jansson refused. */
static json_t *
ref_string(const char *s, size_t n)
{
    char *fixed = malloc(3 * n + 1);
    size_t o = 0, k;
    json_t *j;

    if (fixed == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += k) {
        k = ref_char_len(s + i, n - i);
        if (k == 0) {
            memcpy(fixed + o, "\xEF\xBF\xBD", 3);
            o += 3;
            k = 1;
        } else {
            memcpy(fixed + o, s + i, k);
            o += k;
        }
    }
    j = json_stringn(fixed, o); /* checked: the reference never feeds jansson bad UTF-8 */
    free(fixed);
    return j;
}

/* The line jansson writes for v, with its '\n', NUL-terminated; *len
 * without the NUL. NULL when jansson could not make it. Caller frees. */
static char *
ref_line(const struct kg_al_value v[NFIELDS], size_t *len)
{
    json_t *obj = json_object();
    char *out = NULL;
    size_t n;

    if (obj == NULL)
        return NULL;
    for (int f = 0; f < NFIELDS; f++) {
        json_t *j;

        if (kg_al_field_is_number(f))
            j = v[f].is_null ? json_null() : json_integer((json_int_t)v[f].i);
        else
            j = v[f].s == NULL ? json_null() : ref_string(v[f].s, v[f].n);
        if (j == NULL || json_object_set_new(obj, kg_al_field_name[f], j) != 0)
            goto cleanup;
    }
    n = json_dumpb(obj, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (n == 0)
        goto cleanup;
    out = malloc(n + 2);
    if (out == NULL || json_dumpb(obj, out, n, JSON_COMPACT | JSON_PRESERVE_ORDER) != n) {
        free(out);
        out = NULL;
        goto cleanup;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    *len = n + 1;

cleanup:
    json_decref(obj);
    return out;
}

#endif
