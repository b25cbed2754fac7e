/* keygate/keys.h - the key lifecycle: create, get, list, revoke, rotate.
 *
 * The one place where the rules about keys live (what a valid name, tenant
 * or expiry is, what a rotation carries over, when a revocation conflicts),
 * shared by the command line today and the admin API later, so neither edge
 * writes a rule of its own. The full key exists only in create and rotate:
 * it is generated into sodium_malloc'd memory, digested, handed to the
 * caller once and never stored. Every function takes the clock as "now" so
 * tests can step time.
 *
 * Errors: KG_EINVAL for malformed input, with words naming the field;
 * KG_ENOTFOUND for an unknown id; KG_ECONFLICT when the key's state forbids
 * the change; store errors (KG_EIO, KG_ECORRUPT) pass through.
 * Not thread-safe beyond the store handle's rule: one context per thread.
 */
#ifndef KEYGATE_KEYS_H
#define KEYGATE_KEYS_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/status.h"
#include "keygate/store.h"

#define KG_TENANT_MAX 64 /* tenant names: 1..64 of [A-Za-z0-9_.-] */
#define KG_TENANT_DEFAULT "default"

/* What the lifecycle functions work on. All three are borrowed; secret and
 * cfg (for key_prefix) are only read by create and rotate. */
struct kg_keys_ctx {
    struct kg_store *store;
    const struct kg_secret *secret;
    const struct kg_config *cfg;
};

/* A request for a new key, as an edge received it. Strings are borrowed. */
struct kg_key_new {
    const char *name;    /* required: 1..128 bytes of UTF-8 without control characters */
    const char *scopes;  /* comma-separated; NULL or "" = no scopes */
    const char *tenant;  /* NULL = KG_TENANT_DEFAULT */
    const char *expires; /* NULL = never; "30d"-style duration from now or an RFC 3339 time */
};

/* Which keys a listing walks. */
struct kg_keys_filter {
    bool all_states;         /* true: every state; false: only state */
    enum kg_key_state state; /* from kg_key_state_parse() */
    const char *tenant;      /* NULL = every tenant */
};

/* Checks every field of req without touching a store, so an edge can refuse
 * bad input before it opens anything. kg_keys_create() runs the same checks. */
enum kg_status kg_keys_check_new(const struct kg_key_new *req, int64_t now, struct kg_err *err);

/* Creates a key: validates req, generates the key with cfg->key_prefix,
 * stores its digest and display parts with created_at = now, no quota and
 * metadata "{}". On KG_OK *rec_out holds the stored record and *key_out the
 * full key (NUL-terminated, sodium_malloc'd): the only time it exists
 * outside the client. The caller owns it and must kg_keys_key_free() it.
 * On error *key_out is NULL and nothing was stored. */
enum kg_status kg_keys_create(const struct kg_keys_ctx *kc, const struct kg_key_new *req,
                              int64_t now, struct kg_key_rec *rec_out, char **key_out,
                              struct kg_err *err);

/* Wipes and frees a key from kg_keys_create() or kg_keys_rotate(); NULL is a no-op. */
void kg_keys_key_free(char *key);

/* Reads one key. KG_ENOTFOUND: "no key ID". */
enum kg_status kg_keys_get(const struct kg_keys_ctx *kc, const char *id, struct kg_key_rec *out,
                           struct kg_err *err);

/* Calls cb for each key matching filter (NULL: all keys), oldest first, with
 * its state at now. rec is borrowed for the call; cb returning false stops
 * the walk (KG_OK). */
typedef bool (*kg_keys_list_cb)(const struct kg_key_rec *rec, enum kg_key_state state, void *ctx);
enum kg_status kg_keys_list(const struct kg_keys_ctx *kc, const struct kg_keys_filter *filter,
                            int64_t now, kg_keys_list_cb cb, void *ctx, struct kg_err *err);

/* Revokes id for good at now; a key in a rotation grace period stops at
 * once. KG_ENOTFOUND: no such key; KG_ECONFLICT: "key ID is already
 * revoked". rec_out (may be NULL) receives the record after the change. */
enum kg_status kg_keys_revoke(const struct kg_keys_ctx *kc, const char *id, int64_t now,
                              struct kg_key_rec *rec_out, struct kg_err *err);

/* Replaces old_id with a new key that carries its name, scopes, tenant,
 * limits, quota usage, metadata and expiry. The old key is revoked at
 * now + grace_s (grace_s 0: now) and records the new id in rotated_to; both
 * happen in one store transaction. KG_EINVAL: negative grace.
 * KG_ECONFLICT: the old key is revoked, expired or already rotated.
 * On KG_OK: *fresh_out is the new record, *old_out (may be NULL) the old one
 * after the change, *key_out the new full key as for kg_keys_create(). */
enum kg_status kg_keys_rotate(const struct kg_keys_ctx *kc, const char *old_id, int64_t grace_s,
                              int64_t now, struct kg_key_rec *fresh_out, struct kg_key_rec *old_out,
                              char **key_out, struct kg_err *err);

#endif
