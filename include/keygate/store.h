/* keygate/store.h - durable truth for API keys.
 *
 * The request path never calls this module: it reads auth/keycache, which is
 * loaded from here. Every write is one BEGIN IMMEDIATE transaction, so a
 * change is all there or not at all. The full key is never passed here, only
 * its digest. Backends plug in behind these functions (store.c selects one;
 * store_sqlite.c is the only one today).
 *
 * A handle is not thread-safe: one handle per thread.
 */
#ifndef KEYGATE_STORE_H
#define KEYGATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/status.h"

#define KG_ID_MAX 40       /* "key_" + 22 base62 + NUL, with room */
#define KG_NAME_MAX 129    /* names: 1..128 bytes */
#define KG_DPREFIX_MAX 48  /* display prefix: key_prefix + 4 body chars */
#define KG_SCOPES_MAX 1024 /* comma-separated scope list */
#define KG_RATE_MAX 32     /* "100/min" */
#define KG_META_MAX 4096   /* metadata JSON text */
#define KG_DIGEST_BYTES 32

/* One key as stored. Plain data, caller-owned; times are Unix seconds and 0
 * means "not set" (no expiry, not revoked, never used). */
struct kg_key_rec {
    char id[KG_ID_MAX];             /* public id "key_…", used everywhere a key is named */
    char name[KG_NAME_MAX];
    char prefix[KG_DPREFIX_MAX];    /* display prefix: first characters of the key */
    char last4[5];                  /* last 4 characters of the key */
    unsigned char digest[KG_DIGEST_BYTES]; /* keyed BLAKE2b of the full key */
    char scopes[KG_SCOPES_MAX];     /* "read:a,write:b"; "" = no scopes */
    char tenant[KG_NAME_MAX];
    int64_t created_at;
    int64_t expires_at;
    int64_t revoked_at;             /* may lie in the future: rotation grace */
    int64_t last_used_at;
    char rotated_to[KG_ID_MAX];     /* id of the key that replaced this one, or "" */
    char rate[KG_RATE_MAX];         /* per-key rate limit "100/min", "" = default */
    int64_t rate_burst;             /* 0 = default */
    int64_t quota_limit;            /* credits, -1 = unlimited */
    char quota_period[16];          /* "", "day", "month" */
    int64_t quota_used;
    char metadata[KG_META_MAX];     /* JSON object text, "{}" when empty */
};

enum kg_key_state { KG_KEY_ACTIVE = 0, KG_KEY_EXPIRED, KG_KEY_REVOKED };

/* State of rec at time now: revoked wins over expired. */
enum kg_key_state kg_key_state_of(const struct kg_key_rec *rec, int64_t now);
/* "active", "expired", "revoked". */
const char *kg_key_state_str(enum kg_key_state st);
/* Parses "active|expired|revoked"; "all" sets *all. KG_EINVAL otherwise. */
enum kg_status kg_key_state_parse(const char *s, enum kg_key_state *out, bool *all,
                                  struct kg_err *err);

struct kg_store;

/* Opens the store at path, creating the file (and its parent directory, mode
 * 0700) if absent, and applies the embedded migrations. WAL, busy_timeout,
 * synchronous=FULL. KG_ECORRUPT when the file is not a keygate database or
 * comes from a newer keygate. On KG_OK *out is owned by the caller:
 * kg_store_close() it. */
enum kg_status kg_store_open(const char *path, struct kg_store **out, struct kg_err *err);

/* Closes the handle; NULL is a no-op. */
void kg_store_close(struct kg_store *st);

/* Inserts a new key. KG_ECONFLICT when the id or digest already exists. */
enum kg_status kg_store_key_insert(struct kg_store *st, const struct kg_key_rec *rec,
                                   struct kg_err *err);

/* Reads one key by id into *out. KG_ENOTFOUND when there is none. */
enum kg_status kg_store_key_get(struct kg_store *st, const char *id, struct kg_key_rec *out,
                                struct kg_err *err);

/* Calls cb for every key, oldest first (created_at, then id). rec is borrowed
 * for the duration of the call. cb returning false stops the walk (KG_OK). */
typedef bool (*kg_store_key_cb)(const struct kg_key_rec *rec, void *ctx);
enum kg_status kg_store_key_each(struct kg_store *st, kg_store_key_cb cb, void *ctx,
                                 struct kg_err *err);

/* Revokes id for good at time now. KG_ENOTFOUND: no such key. KG_ECONFLICT:
 * already revoked (revoked_at set and <= now). A key whose revocation is
 * scheduled (rotation grace) is revoked now. */
enum kg_status kg_store_key_revoke(struct kg_store *st, const char *id, int64_t now,
                                   struct kg_err *err);

/* Rotation in one transaction: inserts fresh (which carries the old key's
 * name, scopes, tenant and limits, set by the caller), and schedules the old
 * key's revocation at revoke_at (now for no grace), recording fresh->id in
 * its rotated_to. KG_ENOTFOUND / KG_ECONFLICT (old already revoked or
 * already rotated) as for revoke. */
enum kg_status kg_store_key_rotate(struct kg_store *st, const char *old_id,
                                   const struct kg_key_rec *fresh, int64_t revoke_at, int64_t now,
                                   struct kg_err *err);

/* Records last-used times: for each i, last_used_at = max(stored, times[i]).
 * One transaction for the whole batch. Unknown ids are ignored. */
enum kg_status kg_store_key_touch(struct kg_store *st, const char *const *ids,
                                  const int64_t *times, size_t n, struct kg_err *err);

/* A number that changes whenever another connection committed a change
 * (PRAGMA data_version): the daemon polls it to see CLI changes. */
enum kg_status kg_store_data_version(struct kg_store *st, int64_t *out, struct kg_err *err);

/* Durable (synchronous=FULL, the default) for key changes; the daemon's
 * usage writer turns it off (NORMAL) for its batched counters. */
enum kg_status kg_store_set_durable(struct kg_store *st, bool durable, struct kg_err *err);

#endif
