/* util/json_io.c - bounded body collection, strict field-table decoding and
 * small encoders (jansson), for both listeners, manage/ and the CLI. Owns the
 * words of every "your JSON is wrong" answer and the one way a time, a list
 * or an optional string becomes JSON; does not know what any endpoint means
 * by its fields. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "keygate/json_io.h"
#include "keygate/store.h"
#include "keygate/timeutil.h"

void
kg_jbody_init(struct kg_jbody *b)
{
    memset(b, 0, sizeof(*b));
}

bool
kg_jbody_feed(struct kg_jbody *b, const char *data, size_t n)
{
    if (b->too_big || b->failed)
        return false;
    if (n > KG_JSON_BODY_MAX - b->len) {
        /* Drop what we have: nobody will read it, and holding it would let
         * a client park 64 KiB per connection for nothing. */
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
        b->too_big = true;
        return false;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap == 0 ? 1024 : b->cap;
        char *grown;

        while (cap < b->len + n)
            cap *= 2;
        if (cap > KG_JSON_BODY_MAX)
            cap = KG_JSON_BODY_MAX;
        grown = realloc(b->data, cap);
        if (grown == NULL) {
            b->failed = true;
            return false;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return true;
}

void
kg_jbody_cleanup(struct kg_jbody *b)
{
    free(b->data);
    kg_jbody_init(b);
}

bool
kg_json_io_content_type_ok(const char *ct)
{
    static const char want[] = "application/json";
    size_t n = sizeof(want) - 1;

    if (ct == NULL)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

bool
kg_json_io_quotable(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e)
            return false;
    }
    return true;
}

static const struct kg_jfield *
find_field(const struct kg_jfield *fields, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    }
    return NULL;
}

/* Joins an array of scope strings with commas into out (KG_SCOPES_MAX). */
static enum kg_status
take_scopes(const struct kg_jfield *f, json_t *v, struct kg_err *err)
{
    char *out = f->out;
    size_t used = 0;
    size_t i;
    json_t *item;

    if (json_is_string(v)) {
        if (json_string_length(v) >= KG_SCOPES_MAX)
            return kg_err_set(err, KG_EINVAL, "%s is too long", f->name);
        memcpy(out, json_string_value(v), json_string_length(v) + 1);
        return KG_OK;
    }
    if (!json_is_array(v))
        return kg_err_set(err, KG_EINVAL, "%s must be a list of strings", f->name);
    out[0] = '\0';
    json_array_foreach(v, i, item)
    {
        size_t len;

        if (!json_is_string(item))
            return kg_err_set(err, KG_EINVAL, "%s must be a list of strings", f->name);
        len = json_string_length(item);
        /* A comma inside one item would smuggle two scopes past the list's shape. */
        if (memchr(json_string_value(item), ',', len) != NULL)
            return kg_err_set(err, KG_EINVAL, "%s: an item must not contain a comma", f->name);
        if (used + len + 2 > KG_SCOPES_MAX)
            return kg_err_set(err, KG_EINVAL, "%s is too long", f->name);
        if (used > 0)
            out[used++] = ',';
        memcpy(out + used, json_string_value(item), len + 1);
        used += len;
    }
    return KG_OK;
}

static enum kg_status
take_value(const struct kg_jfield *f, json_t *v, struct kg_err *err)
{
    switch (f->type) {
    case KG_JSTRING:
        if (!json_is_string(v))
            return kg_err_set(err, KG_EINVAL, "%s must be a string", f->name);
        *(const char **)f->out = json_string_value(v);
        return KG_OK;
    case KG_JBOOL:
        if (!json_is_boolean(v))
            return kg_err_set(err, KG_EINVAL, "%s must be true or false", f->name);
        *(bool *)f->out = json_is_true(v);
        return KG_OK;
    case KG_JINT:
        if (!json_is_integer(v) ||
            ((f->min != 0 || f->max != 0) &&
             (json_integer_value(v) < f->min || json_integer_value(v) > f->max))) {
            if (f->min != 0 || f->max != 0)
                return kg_err_set(err, KG_EINVAL,
                                  "%s must be an integer from %" PRId64 " to %" PRId64, f->name,
                                  f->min, f->max);
            return kg_err_set(err, KG_EINVAL, "%s must be an integer", f->name);
        }
        *(int64_t *)f->out = (int64_t)json_integer_value(v);
        return KG_OK;
    case KG_JSCOPES:
        return take_scopes(f, v, err);
    case KG_JARRAY:
        if (!json_is_array(v))
            return kg_err_set(err, KG_EINVAL, "%s must be a list", f->name);
        *(json_t **)f->out = v;
        return KG_OK;
    }
    return kg_err_set(err, KG_EINVAL, "%s has an unknown type", f->name);
}

enum kg_status
kg_json_io_decode(const char *body, size_t len, const struct kg_jfield *fields, size_t nfields,
                  json_t **root_out, struct kg_err *err)
{
    json_error_t jerr;
    json_t *root = NULL, *v;
    const char *name;
    enum kg_status rc = KG_OK;

    if (root_out != NULL)
        *root_out = NULL;
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].present != NULL)
            *fields[i].present = false;
        if (fields[i].is_null != NULL)
            *fields[i].is_null = false;
    }
    if (len == 0) {
        root = json_object();
    } else {
        /* Duplicate members are refused: which one wins differs between
         * parsers, and a check made on one copy must hold for the other. */
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (root == NULL)
            return kg_err_set(err, KG_EINVAL, KG_JSON_MALFORMED);
    }
    if (root == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    if (!json_is_object(root)) {
        rc = kg_err_set(err, KG_EINVAL, "JSON body must be an object");
        goto cleanup;
    }
    json_object_foreach(root, name, v)
    {
        const struct kg_jfield *f = find_field(fields, nfields, name);

        if (f == NULL) {
            rc = kg_json_io_quotable(name)
                     ? kg_err_set(err, KG_EINVAL, "unknown field: %s", name)
                     : kg_err_set(err, KG_EINVAL, "unknown field in JSON body");
            goto cleanup;
        }
        if (json_is_null(v)) {
            if (!f->nullable) {
                rc = f->required ? kg_err_set(err, KG_EINVAL, "%s is required", f->name)
                                 : kg_err_set(err, KG_EINVAL, "%s must not be null", f->name);
                goto cleanup;
            }
            if (f->is_null != NULL)
                *f->is_null = true;
        } else {
            rc = take_value(f, v, err);
            if (rc != KG_OK)
                goto cleanup;
        }
        if (f->present != NULL)
            *f->present = true;
    }
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].required && json_object_get(root, fields[i].name) == NULL) {
            rc = kg_err_set(err, KG_EINVAL, "%s is required", fields[i].name);
            goto cleanup;
        }
    }
    if (root_out != NULL) {
        *root_out = root;
        root = NULL;
    }

cleanup:
    json_decref(root);
    return rc;
}

json_t *
kg_json_io_time(int64_t t)
{
    char buf[KG_RFC3339_MAX];

    if (t == 0)
        return json_null();
    return json_string(kg_time_format(t, buf));
}

json_t *
kg_json_io_str_or_null(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return json_null();
    return json_string(s);
}

json_t *
kg_json_io_list(const char *list)
{
    json_t *a = json_array();
    const char *p = list;

    if (a == NULL || list == NULL)
        return a;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");

        if (n > 0 && json_array_append_new(a, json_stringn(p, n)) != 0) {
            json_decref(a);
            return NULL;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return a;
}

json_t *
kg_json_io_attach(json_t *doc, const char *name, json_t *value)
{
    if (doc == NULL || value == NULL) {
        json_decref(doc);
        json_decref(value);
        return NULL;
    }
    /* json_object_set_new() releases value when it fails. */
    if (json_object_set_new(doc, name, value) != 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

char *
kg_json_io_dump(const json_t *v)
{
    return json_dumps(v, JSON_PRESERVE_ORDER);
}

char *
kg_json_io_dump_secret(const json_t *obj, const char *field, const char *secret, size_t *len_out)
{
    char pattern[80];
    char *text, *hole, *out = NULL;
    size_t slen = strlen(secret), plen, tlen, head;

    for (size_t i = 0; i < slen; i++) {
        if (secret[i] < 0x20 || secret[i] > 0x7e || secret[i] == '"' || secret[i] == '\\')
            return NULL;
    }
    if ((size_t)snprintf(pattern, sizeof(pattern), "\"%s\": \"\"", field) >= sizeof(pattern))
        return NULL;
    text = kg_json_io_dump(obj);
    if (text == NULL)
        return NULL;
    /* A string followed by ": " is always a member name in valid JSON, and
     * quotes inside values are escaped, so this finds the member itself. */
    hole = strstr(text, pattern);
    if (hole == NULL)
        goto cleanup;
    plen = strlen(pattern);
    tlen = strlen(text);
    head = (size_t)(hole - text) + plen - 1; /* up to and including the opening quote */
    if (sodium_init() < 0)
        goto cleanup;
    out = sodium_malloc(tlen + slen + 1);
    if (out == NULL)
        goto cleanup;
    memcpy(out, text, head);
    memcpy(out + head, secret, slen);
    memcpy(out + head + slen, text + head, tlen - head + 1);
    *len_out = tlen + slen;

cleanup:
    free(text);
    return out;
}

void
kg_json_io_secret_free(void *buf)
{
    sodium_free(buf); /* wipes before freeing; NULL-safe */
}
