/* cli/output.c - records as JSON, aligned field lines and tables.
 *
 * Owns the JSON shape of keys, users, tenants and audit entries (the admin
 * API uses the same functions) and the one way a full key is written out
 * (straight to the descriptor, see kg_output_secret_line()). It decides
 * nothing about keys: state and validity come from manage/ and store/.
 * A digest is never formatted here, and a full key never enters a stdio or
 * jansson buffer, because those are freed without being wiped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keygate/keycache.h"
#include "keygate/keyfmt.h"
#include "keygate/output.h"
#include "keygate/quota.h"
#include "keygate/timeutil.h"

const char *
kg_output_time(int64_t t, const char *unset, char buf[KG_RFC3339_MAX])
{
    if (t == 0)
        return unset;
    return kg_time_format(t, buf);
}

json_t *
kg_output_time_json(int64_t t)
{
    char buf[KG_RFC3339_MAX];

    if (t == 0)
        return json_null();
    return json_string(kg_time_format(t, buf));
}

json_t *
kg_output_scopes_json(const char *scopes)
{
    json_t *arr = json_array();
    const char *p = scopes;

    if (arr == NULL)
        return NULL;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

        if (json_array_append_new(arr, json_stringn(p, n)) != 0) {
            json_decref(arr);
            return NULL;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return arr;
}

/* Sets obj[k] = v, taking v; false when v is NULL (jansson ran out of
 * memory or refused a string) or the set failed. */
static bool
put(json_t *obj, const char *k, json_t *v)
{
    return json_object_set_new(obj, k, v) == 0;
}

/* The end of every record builder: o, or NULL (o freed) when a member
 * could not be added. */
static json_t *
built(json_t *o, bool ok)
{
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *
str_or_null(const char *s)
{
    return s[0] != '\0' ? json_string(s) : json_null();
}

static bool
put_detail(json_t *o, const struct kg_key_rec *rec)
{
    json_t *meta = json_loads(rec->metadata, 0, NULL);

    /* metadata is JSON text the store accepted; if it does not parse, show
     * it as a string rather than lose it. */
    if (meta == NULL)
        meta = json_string(rec->metadata);
    return put(o, "rate", str_or_null(rec->rate)) &&
           put(o, "rate_burst",
               rec->rate_burst > 0 ? json_integer(rec->rate_burst) : json_null()) &&
           put(o, "quota_limit",
               rec->quota_limit >= 0 ? json_integer(rec->quota_limit) : json_null()) &&
           put(o, "quota_period", str_or_null(rec->quota_period)) &&
           put(o, "quota_used",
               json_integer(kg_quota_stored_used(rec->quota_period, rec->quota_used,
                                                    rec->quota_period_start, kg_time_now()))) &&
           put(o, "metadata", meta);
}

json_t *
kg_output_key_json(const struct kg_key_rec *rec, enum kg_key_state state, bool detail)
{
    char masked[KG_DPREFIX_MAX + 8];
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    kg_keyfmt_mask(rec->prefix, rec->last4, masked, sizeof(masked));
    ok = put(o, "name", json_string(rec->name)) && put(o, "id", json_string(rec->id)) &&
         put(o, "key", json_string(masked)) && put(o, "prefix", json_string(rec->prefix)) &&
         put(o, "last4", json_string(rec->last4)) &&
         put(o, "scopes", kg_output_scopes_json(rec->scopes)) &&
         put(o, "tenant", json_string(rec->tenant)) &&
         put(o, "user_id", str_or_null(rec->user_id)) &&
         put(o, "created_at", kg_output_time_json(rec->created_at)) &&
         put(o, "last_used_at", kg_output_time_json(rec->last_used_at)) &&
         put(o, "expires_at", kg_output_time_json(rec->expires_at)) &&
         put(o, "revoked_at", kg_output_time_json(rec->revoked_at)) &&
         put(o, "state", json_string(kg_key_state_str(state))) &&
         put(o, "rotated_to", str_or_null(rec->rotated_to));
    if (ok && detail)
        ok = put_detail(o, rec);
    return built(o, ok);
}

json_t *
kg_output_new_key_json(const struct kg_key_rec *rec)
{
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    ok = put(o, "id", json_string(rec->id)) && put(o, "key", json_string("")) &&
         put(o, "name", json_string(rec->name)) && put(o, "prefix", json_string(rec->prefix)) &&
         put(o, "scopes", kg_output_scopes_json(rec->scopes)) &&
         put(o, "tenant", json_string(rec->tenant)) &&
         put(o, "user_id", str_or_null(rec->user_id)) &&
         put(o, "created_at", kg_output_time_json(rec->created_at)) &&
         put(o, "expires_at", kg_output_time_json(rec->expires_at));
    return built(o, ok);
}

json_t *
kg_output_tenant_json(const struct kg_tenant_rec *rec)
{
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    ok = put(o, "name", json_string(rec->name)) &&
         put(o, "display_name", json_string(rec->display_name)) &&
         put(o, "created_at", kg_output_time_json(rec->created_at)) &&
         put(o, "disabled_at", kg_output_time_json(rec->disabled_at)) &&
         put(o, "state", json_string(rec->disabled_at != 0 ? "disabled" : "active"));
    return built(o, ok);
}

json_t *
kg_output_user_json(const struct kg_user_rec *rec)
{
    json_t *o = json_object();
    bool ok;

    if (o == NULL)
        return NULL;
    ok = put(o, "id", json_string(rec->id)) && put(o, "tenant", json_string(rec->tenant)) &&
         put(o, "username", json_string(rec->username)) &&
         put(o, "email", str_or_null(rec->email)) &&
         put(o, "first_name", json_string(rec->first_name)) &&
         put(o, "last_name", json_string(rec->last_name)) &&
         put(o, "role", kg_output_scopes_json(rec->role)) &&
         put(o, "tier", json_string(rec->tier)) &&
         put(o, "platform_admin", json_boolean(rec->platform_admin)) &&
         put(o, "has_password", json_boolean(rec->password_hash[0] != '\0')) &&
         put(o, "created_at", kg_output_time_json(rec->created_at)) &&
         put(o, "disabled_at", kg_output_time_json(rec->disabled_at)) &&
         put(o, "state", json_string(rec->disabled_at != 0 ? "disabled" : "active")) &&
         put(o, "quota_limit", rec->has_quota ? json_integer(rec->quota_limit) : json_null()) &&
         put(o, "quota_period", str_or_null(rec->quota_period));
    return built(o, ok);
}

bool
kg_output_user_usage(json_t *o, const struct kg_user_usage *used)
{
    return put(o, "quota_used", json_integer(used->credits)) &&
           put(o, "tier_quota_used", json_integer(used->tier));
}

/* Audit rows may have been edited by hand into anything, bytes that are
 * not UTF-8 included, which jansson refuses: those are shown as a marker
 * rather than failing the whole listing. */
static json_t *
hand_edited_string(const char *s)
{
    json_t *v = json_string(s);

    return v != NULL ? v : json_string("(not UTF-8)");
}

json_t *
kg_output_audit_json(const struct kg_audit_entry *e)
{
    json_t *details = json_loads(e->details, JSON_REJECT_DUPLICATES, NULL);
    json_t *o = json_object();
    bool ok;

    /* An entry edited by hand may hold anything: show it, do not lose it. */
    if (details == NULL)
        details = hand_edited_string(e->details);
    if (o == NULL || details == NULL) {
        json_decref(details);
        json_decref(o);
        return NULL;
    }
    ok = put(o, "seq", json_integer(e->seq)) && put(o, "time", kg_output_time_json(e->time)) &&
         put(o, "actor", hand_edited_string(e->actor)) &&
         put(o, "tenant", e->tenant[0] != '\0' ? hand_edited_string(e->tenant) : json_null()) &&
         put(o, "action", hand_edited_string(e->action)) &&
         put(o, "object", hand_edited_string(e->object)) &&
         json_object_set(o, "details", details) == 0 &&
         put(o, "prev_hash", hand_edited_string(e->prev_hash)) &&
         put(o, "hash", hand_edited_string(e->hash));
    json_decref(details);
    return built(o, ok);
}

static enum kg_status
flushed(FILE *f, struct kg_err *err)
{
    if (fflush(f) != 0 || ferror(f))
        return kg_err_set(err, KG_EIO, "cannot write output: %s", strerror(errno));
    return KG_OK;
}

enum kg_status
kg_output_json(FILE *f, const json_t *v, struct kg_err *err)
{
    char *text = json_dumps(v, JSON_INDENT(2));

    if (text == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory formatting JSON");
    fputs(text, f);
    fputc('\n', f);
    free(text);
    return flushed(f, err);
}

static enum kg_status
write_all(int fd, const char *p, size_t n, struct kg_err *err)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return kg_err_set(err, KG_EIO, "cannot write output: %s", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return KG_OK;
}

/* The secret bypasses stdio: whatever stdio buffered is flushed first so
 * the order on the descriptor stays the order of the calls. */
static enum kg_status
write_secret(FILE *f, const char *secret, struct kg_err *err)
{
    enum kg_status rc = flushed(f, err);

    if (rc != KG_OK)
        return rc;
    return write_all(fileno(f), secret, strlen(secret), err);
}

enum kg_status
kg_output_secret_line(FILE *f, const char *secret, struct kg_err *err)
{
    enum kg_status rc = write_secret(f, secret, err);

    if (rc != KG_OK)
        return rc;
    return write_all(fileno(f), "\n", 1, err);
}

enum kg_status
kg_output_json_secret(FILE *f, const json_t *obj, const char *field, const char *secret,
                      struct kg_err *err)
{
    char pattern[64];
    char *text = json_dumps(obj, JSON_INDENT(2));
    enum kg_status rc;
    const char *at;
    size_t split;

    if (text == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory formatting JSON");
    /* Inside a JSON string every '"' is escaped, so the first unescaped
     * "field": "" is the member itself, whatever the other values hold. */
    snprintf(pattern, sizeof(pattern), "\"%s\": \"\"", field);
    at = strstr(text, pattern);
    if (at == NULL) {
        rc = kg_err_set(err, KG_EINVAL, "JSON output has no empty \"%s\" member", field);
        goto cleanup;
    }
    split = (size_t)(at - text) + strlen(pattern) - 1; /* the closing quote */
    fwrite(text, 1, split, f);
    rc = write_secret(f, secret, err);
    if (rc != KG_OK)
        goto cleanup;
    fputs(text + split, f);
    fputc('\n', f);
    rc = flushed(f, err);
cleanup:
    free(text);
    return rc;
}

/* Characters, not bytes: counts every byte that does not continue a UTF-8
 * sequence, so "…" in a masked key is one column. */
static size_t
display_width(const char *s)
{
    size_t w = 0;

    for (; *s != '\0'; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void
pad(FILE *f, size_t n)
{
    while (n-- > 0)
        fputc(' ', f);
}

void
kg_output_fields(FILE *f, const struct kg_output_field *fields, size_t n)
{
    size_t width = 0;

    for (size_t i = 0; i < n; i++) {
        size_t w = display_width(fields[i].label);

        if (w > width)
            width = w;
    }
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s:", fields[i].label);
        pad(f, width - display_width(fields[i].label) + 1);
        fprintf(f, "%s\n", fields[i].value);
    }
}

struct kg_output_table {
    size_t ncols;
    size_t nrows; /* the header row included */
    size_t cap;   /* rows */
    char **cells; /* nrows * ncols, row-major */
};

static enum kg_status
table_append(struct kg_output_table *t, const char *const *cells)
{
    size_t base = t->nrows * t->ncols;

    if (t->nrows == t->cap) {
        size_t cap = t->cap != 0 ? t->cap * 2 : 16;
        char **grown = realloc(t->cells, cap * t->ncols * sizeof(*grown));

        if (grown == NULL)
            return KG_ENOMEM;
        t->cells = grown;
        t->cap = cap;
    }
    for (size_t c = 0; c < t->ncols; c++) {
        t->cells[base + c] = strdup(cells[c] != NULL ? cells[c] : "");
        if (t->cells[base + c] == NULL) {
            while (c-- > 0)
                free(t->cells[base + c]);
            return KG_ENOMEM;
        }
    }
    t->nrows++;
    return KG_OK;
}

enum kg_status
kg_output_table_new(const char *const *headers, size_t ncols, struct kg_output_table **out)
{
    struct kg_output_table *t = calloc(1, sizeof(*t));
    enum kg_status rc;

    *out = NULL;
    if (t == NULL)
        return KG_ENOMEM;
    t->ncols = ncols;
    rc = table_append(t, headers);
    if (rc != KG_OK) {
        kg_output_table_free(t);
        return rc;
    }
    *out = t;
    return KG_OK;
}

enum kg_status
kg_output_table_add(struct kg_output_table *t, const char *const *cells)
{
    return table_append(t, cells);
}

void
kg_output_table_print(const struct kg_output_table *t, FILE *f)
{
    size_t *width = calloc(t->ncols, sizeof(*width));

    if (width == NULL) {
        /* Unaligned is still readable; a table is never worth failing for. */
        for (size_t r = 0; r < t->nrows; r++)
            for (size_t c = 0; c < t->ncols; c++)
                fprintf(f, "%s%s", t->cells[r * t->ncols + c], c + 1 < t->ncols ? "  " : "\n");
        return;
    }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            size_t w = display_width(t->cells[r * t->ncols + c]);

            if (w > width[c])
                width[c] = w;
        }
    }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];

            fputs(cell, f);
            if (c + 1 < t->ncols)
                pad(f, width[c] - display_width(cell) + 2);
        }
        fputc('\n', f);
    }
    free(width);
}

void
kg_output_table_free(struct kg_output_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}
