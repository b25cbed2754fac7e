/* cli/output.c - JSON documents, aligned field lines and tables on the
 * CLI's streams.
 *
 * Owns the one way a full key is written out (straight to the descriptor,
 * see kg_output_secret_line()); the records' JSON shape is manage/render.c's.
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
