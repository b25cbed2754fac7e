/* manage/manage_int.h - what keys.c, accounts.c and audit.c share (the
 * helpers are in common.c); nothing outside src/manage/ includes this.
 *
 * Field checks that more than one kind of object uses (names, slugs), the
 * tenant fence test, and the two halves of making a key that both
 * kg_keys_create() and a user's first key (kg_accounts_user_create()) need,
 * so neither file writes those rules a second time.
 */
#ifndef KEYGATE_MANAGE_INT_H
#define KEYGATE_MANAGE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "keygate/keys.h"
#include "keygate/status.h"
#include "keygate/store.h"

/* NULL when s[0..n) is UTF-8 without control characters, otherwise what is
 * wrong with it ("is not valid UTF-8", "must not contain control characters"). */
const char *kg_manage_text_problem(const unsigned char *s, size_t n);

/* Create and update refuse a refill on unlimited credits with these
 * words, which name the option of the CLI and the member of the API. */
#define KG_REFILL_NEEDS_CREDITS "a refill needs credits (quota_period needs a quota_limit)"
/* The most credits a key or a user may have (CLI, admin API, store). */
#define KG_CREDITS_MAX INT64_C(1000000000)

/* Checks text of min..max bytes (UTF-8, no control characters) and copies
 * it into out (max + 1 bytes). NULL is KG_EINVAL "FIELD is required". */
enum kg_status kg_manage_check_text(const char *field, const char *s, size_t min, size_t max,
                                    char *out, struct kg_err *err);

/* Checks a slug: 1..max of [A-Za-z0-9_.-], copied into out (max + 1 bytes). */
enum kg_status kg_manage_check_slug(const char *field, const char *s, size_t max, char *out,
                                    struct kg_err *err);

/* True when a fence keeps the caller away from tenant. */
static inline bool
kg_manage_fenced_out(const char *fence, const char *tenant)
{
    return fence != NULL && strcmp(fence, tenant) != 0;
}

/* KG_EINVAL unless kc has a store, and a secret and config when minting,
 * and an actor when changing. */
enum kg_status kg_manage_check_ctx(const struct kg_keys_ctx *kc, bool minting, bool changing,
                                   struct kg_err *err);

/* Fills e with kc->actor as its actor; takes details (NULL = {}). */
enum kg_status kg_manage_audit(struct kg_audit_entry *e, const struct kg_keys_ctx *kc, int64_t now,
                               const char *tenant, const char *action, const char *object,
                               json_t *details, struct kg_err *err);

/* keys.c: validates req (tenant and user ignored) for owner, checks its
 * scopes against the owner's role and mints the key into rec (owner's id
 * and tenant set). On KG_OK *key_out is the full key (kg_keys_key_free()). */
enum kg_status kg_manage_key_prepare(const struct kg_keys_ctx *kc, const struct kg_key_new *req,
                                     const struct kg_user_rec *owner, int64_t now,
                                     struct kg_key_rec *rec, char **key_out, struct kg_err *err);

/* keys.c: the details of a key.create entry for rec. */
json_t *kg_manage_key_details(const struct kg_key_rec *rec);

#endif
