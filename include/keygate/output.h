/* keygate/output.h - how keys, users, tenants and audit entries look to
 * people and to scripts.
 *
 * One place decides the JSON shape of each record (so the CLI's --json and
 * the admin API agree), the aligned "field: value" lines and tables the CLI
 * prints, and the single path by which a full key reaches an output: it is
 * written straight to the file descriptor, never copied into stdio or
 * jansson buffers that nobody wipes. Nothing here ever formats a digest.
 * Not thread-safe for a shared FILE; otherwise pure.
 */
#ifndef KEYGATE_OUTPUT_H
#define KEYGATE_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "keygate/status.h"
#include "keygate/store.h"
#include "keygate/timeutil.h"

/* t as RFC 3339 UTC into buf, or unset (e.g. "never") when t is 0. Returns
 * buf or unset. */
const char *kg_output_time(int64_t t, const char *unset, char buf[KG_RFC3339_MAX]);

/* RFC 3339 string, or JSON null when t is 0. New reference or NULL (no memory). */
json_t *kg_output_time_json(int64_t t);

/* "a,b" -> ["a","b"]; "" -> []. New reference or NULL. */
json_t *kg_output_scopes_json(const char *scopes);

/* A key as lists show it: name, id, key (masked), prefix, last4, scopes,
 * tenant, user_id, created_at, last_used_at, expires_at, revoked_at, state,
 * rotated_to. With detail, also rate, rate_burst, quota_limit, quota_period,
 * quota_used and metadata. New reference or NULL. */
json_t *kg_output_key_json(const struct kg_key_rec *rec, enum kg_key_state state, bool detail);

/* The fields shown when a key is made: id, key (as "" for
 * kg_output_json_secret() to fill), name, prefix, scopes, tenant, user_id,
 * created_at, expires_at. New reference or NULL. */
json_t *kg_output_new_key_json(const struct kg_key_rec *rec);

/* A tenant: name, display_name, created_at, disabled_at, state ("active" or
 * "disabled"). New reference or NULL. */
json_t *kg_output_tenant_json(const struct kg_tenant_rec *rec);

/* A user: id, tenant, username, email (null when none), first_name,
 * last_name, role (array of scopes), tier, platform_admin, has_password,
 * created_at, disabled_at, state ("active" or "disabled"), quota_limit
 * (its own credits, null = unlimited), quota_period ("day", "month" or
 * null). Never the password hash. New reference or NULL. */
json_t *kg_output_user_json(const struct kg_user_rec *rec);

/* Adds what a user used to o (a user object): quota_used (its own credits)
 * and tier_quota_used (units of its tier's quota) in the current periods.
 * false on failure (out of memory). */
bool kg_output_user_usage(json_t *o, const struct kg_user_usage *used);

/* An audit entry: seq, time, actor, tenant (null when none), action,
 * object, details (the JSON object; a string if it does not parse),
 * prev_hash, hash. New reference or NULL. */
json_t *kg_output_audit_json(const struct kg_audit_entry *e);

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
