/* keygate/output.h - what the CLI prints for people and scripts.
 *
 * The aligned "field: value" lines and tables the CLI prints, JSON
 * documents (the records' shape is keygate/render.h's), and the single path
 * by which a full key reaches an output: it is written straight to the file
 * descriptor, never copied into stdio or jansson buffers that nobody wipes.
 * Nothing here ever formats a digest. Not thread-safe for a shared FILE;
 * otherwise pure.
 */
#ifndef KEYGATE_OUTPUT_H
#define KEYGATE_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "keygate/status.h"
#include "keygate/timeutil.h"

/* t as RFC 3339 UTC into buf, or unset (e.g. "never") when t is 0. Returns
 * buf or unset. */
const char *kg_output_time(int64_t t, const char *unset, char buf[KG_RFC3339_MAX]);

/* Writes v as indented JSON and a newline. KG_ENOMEM, KG_EIO. */
enum kg_status kg_output_json(FILE *f, const json_t *v, struct kg_err *err);

/* Writes obj like kg_output_json(), with the value of its top-level string
 * member field (which must be "") replaced by secret. The secret goes to
 * the descriptor with write(2) between two flushes. */
enum kg_status kg_output_json_secret(FILE *f, const json_t *obj, const char *field,
                                     const char *secret, struct kg_err *err);

/* Writes secret and a newline to f's descriptor directly, after flushing f. */
enum kg_status kg_output_secret_line(FILE *f, const char *secret, struct kg_err *err);

/* One "label: value" line; kg_output_fields() aligns the values. */
struct kg_output_field {
    const char *label;
    const char *value;
};
void kg_output_fields(FILE *f, const struct kg_output_field *fields, size_t n);

/* A table for people: columns padded to the widest cell (counted in
 * characters, not bytes), two spaces apart, no trailing blanks. */
struct kg_output_table;

/* headers has ncols entries, copied. Caller owns *out: kg_output_table_free(). */
enum kg_status kg_output_table_new(const char *const *headers, size_t ncols,
                                   struct kg_output_table **out);
/* Appends a row of ncols cells, copied. KG_ENOMEM. */
enum kg_status kg_output_table_add(struct kg_output_table *t, const char *const *cells);
void kg_output_table_print(const struct kg_output_table *t, FILE *f);
/* NULL-safe. */
void kg_output_table_free(struct kg_output_table *t);

#endif
