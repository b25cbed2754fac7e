/* keygate/keys.h - the key lifecycle: create, get, list, update, revoke, rotate.
 *
 * The one place where the rules about keys live (what a valid name, tenant
 * or expiry is, which user owns a key and which scopes its role allows, what
 * an update may change, what a rotation carries over, when a revocation
 * conflicts), shared by the command line and the admin API, so neither edge
 * writes a rule of its own. The full key exists only in create and rotate:
 * it is generated into sodium_malloc'd memory, digested, handed to the
 * caller once and never stored. Every function takes the clock as "now" so
 * tests can step time.
 *
 * Every change is appended to the audit trail in the same store transaction,
 * with kc->actor as its actor (see audit.h); the store handle needs its
 * audit key (kg_instance_open() sets it).
 *
 * The tenant fence: every function that names an existing object takes
 * fence, the caller's tenant, or NULL for a platform admin (and the CLI).
 * With a fence, an object of any other tenant is reported exactly like a
 * missing one (KG_ENOTFOUND, same words), so an edge can answer 404 and
 * leak nothing; listings only ever walk the fence's tenant.
 *
 * Errors: KG_EINVAL for malformed input, with words naming the field;
 * KG_ENOTFOUND for an unknown (or fenced-off) id; KG_ECONFLICT when the
 * key's, user's or tenant's state forbids the change; store errors (KG_EIO,
 * KG_ECORRUPT) pass through. Not thread-safe beyond the store handle's
 * rule: one context per thread.
 */
#ifndef KEYGATE_KEYS_H
#define KEYGATE_KEYS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/status.h"
#include "keygate/store.h"

/* What every manage/ call works on (keys.h, accounts.h, audit.h). All
 * borrowed. secret and cfg (key_prefix) are only read where a key is made
 * (create, rotate, a user's first key); actor is required for any change. */
struct kg_keys_ctx {
    struct kg_store *store;
    const struct kg_secret *secret;
    const struct kg_config *cfg;
    const char *actor; /* "cli:<os user>", the admin key's id, or "signup" */
};

/* A request for a new key, as an edge received it. Strings are borrowed. */
struct kg_key_new {
    const char *name;        /* required: 1..128 bytes of UTF-8 without control characters */
    const char *scopes;      /* comma-separated; NULL or "" = no scopes (the role's power) */
    const char *tenant;      /* NULL = the fence, or KG_TENANT_DEFAULT */
    const char *expires;     /* NULL = never; "30d"-style duration from now or an RFC 3339 time */
    const char *user;        /* owner: a user id, or a username within tenant; NULL = the
                              * tenant's default user "default" (created with role "*", and the
                              * tenant too, when missing and there is no fence) */
    const char *rate;        /* NULL or "" = the config default; else as for kg_key_change */
    int64_t rate_burst;      /* 0 = the default (the rate's count) */
    bool has_credits;        /* false = unlimited credits */
    int64_t credits;         /* with has_credits: 0..1000000000 */
    const char *refill;      /* NULL or "" = never, "day" or "month" (needs has_credits) */
    bool canary;             /* a canary key: never grants access, every use is reported */
    const char *allowed_ips; /* NULL or "" = from anywhere; else "CIDR,CIDR" (IPv4 or IPv6) */
};

/* Which keys a listing walks. NULL strings match anything. */
struct kg_keys_filter {
    bool all_states;         /* true: every state; false: only state */
    enum kg_key_state state; /* from kg_key_state_parse() */
    const char *tenant;      /* with a fence, another tenant lists nothing */
    const char *user;        /* a user id */
    const char *name;        /* exact key name */
};

/* What kg_keys_update() changes. NULL / false = unchanged; at least one
 * member must be set. */
struct kg_key_change {
    const char *name;    /* as for kg_key_new */
    const char *scopes;  /* must be granted by the current scopes (narrowing only; a key
                          * with no scopes may take any) and fit the owner's role */
    const char *expires; /* as for kg_key_new, or "never" */
    const char *rate;    /* "N/s", "N/min" or "N/h" (N 1..1000000000); "" = the default */
    bool set_rate_burst;
    int64_t rate_burst; /* 1..1000000000, or 0 = the default */
    bool set_quota_limit;
    int64_t quota_limit;      /* credits 0..; -1 = unlimited */
    const char *quota_period; /* "day", "month" or "" (none) */
    const char *allowed_ips;  /* "CIDR,CIDR"; "" = from anywhere again */
};

/* Most address blocks one key's allowlist may hold. */
#define KG_ALLOWED_IPS_COUNT 64

/* Normalises an IP allowlist: comma-separated IPv4 or IPv6 blocks
 * ("192.0.2.0/24", "2001:db8::/32", a bare address is a block of one),
 * blanks dropped, each block written back in its canonical text, into out
 * (KG_ALLOWED_IPS_MAX bytes; "" for an empty list). KG_EINVAL "allowed_ips:
 * X is not an address block" (X cut to 64 bytes), or too many blocks. */
enum kg_status kg_keys_allowed_ips_normalise(const char *in, char *out, struct kg_err *err);

/* Checks every field of req without touching a store, so an edge can refuse
 * bad input before it opens anything. kg_keys_create() runs the same checks
 * (and, with the store, the role check). */
enum kg_status kg_keys_check_new(const struct kg_key_new *req, int64_t now, struct kg_err *err);

/* Creates a key for its owner (see struct kg_key_new): generates the key
 * with cfg->key_prefix and stores its digest and display parts with
 * created_at = now, req's credits (unlimited without) and metadata "{}", audited as key.create
 * (with tenant.create / user.create before it when a default owner had to
 * be made). KG_EINVAL "scopes exceed the user's role: X" when the owner's
 * role does not grant scope X; KG_EINVAL "expires …" when the tenant's
 * key_max_lifetime (config) forbids no expiry or a later one; KG_ENOTFOUND: no such user or tenant
 * (or fenced off); KG_ECONFLICT: the user or tenant is disabled. On KG_OK *rec_out holds the stored
 * record and *key_out the full key (NUL-terminated, sodium_malloc'd): the only time it exists
 * outside the client. The caller owns it and must kg_keys_key_free() it. On error *key_out is NULL
 * and nothing was stored. */
enum kg_status kg_keys_create(const struct kg_keys_ctx *kc, const char *fence,
                              const struct kg_key_new *req, int64_t now, struct kg_key_rec *rec_out,
                              char **key_out, struct kg_err *err);

/* Wipes and frees a key from kg_keys_create() or kg_keys_rotate(); NULL is a no-op. */
void kg_keys_key_free(char *key);

/* Reads one key. KG_ENOTFOUND: "no key ID". */
enum kg_status kg_keys_get(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                           struct kg_key_rec *out, struct kg_err *err);

/* Calls cb for each key matching filter (NULL: all keys), oldest first, with
 * its state at now, one page at a time (page NULL: every key). rec is
 * borrowed for the call; cb returning false stops the walk (KG_OK). next
 * (KG_CURSOR_MAX bytes, may be NULL) receives the next page's cursor, or
 * "" at the end. KG_EINVAL: malformed cursor. The callback must not call
 * into the same store handle. */
typedef bool (*kg_keys_list_cb)(const struct kg_key_rec *rec, enum kg_key_state state, void *ctx);
enum kg_status kg_keys_list(const struct kg_keys_ctx *kc, const char *fence,
                            const struct kg_keys_filter *filter, const struct kg_page *page,
                            int64_t now, kg_keys_list_cb cb, void *ctx, char *next,
                            struct kg_err *err);

/* Changes name, scopes (narrowing only), expiry and limits of id, audited
 * as key.update with the new values. KG_EINVAL: nothing to change, a
 * malformed field, "scopes must narrow the key's scopes: X", "scopes exceed
 * the user's role: X". KG_ECONFLICT: the key is revoked. rec_out (may be
 * NULL) receives the record after the change. */
enum kg_status kg_keys_update(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                              const struct kg_key_change *chg, int64_t now,
                              struct kg_key_rec *rec_out, struct kg_err *err);

/* Revokes id for good at now, audited as key.revoke; a key in a rotation
 * grace period stops at once. KG_ENOTFOUND: no such key; KG_ECONFLICT: "key
 * ID is already revoked". rec_out (may be NULL) receives the record after
 * the change. */
enum kg_status kg_keys_revoke(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                              int64_t now, struct kg_key_rec *rec_out, struct kg_err *err);

/* Replaces old_id with a new key that carries its name, scopes, owner,
 * limits, quota usage, metadata and expiry. The old key is revoked at
 * now + grace_s (grace_s 0: now) and records the new id in rotated_to; both
 * happen in one store transaction with the key.rotate audit entry.
 * KG_EINVAL: negative grace. KG_ECONFLICT: the old key is revoked, expired
 * or already rotated, or its owner is disabled.
 * On KG_OK: *fresh_out is the new record, *old_out (may be NULL) the old one
 * after the change, *key_out the new full key as for kg_keys_create(). */
enum kg_status kg_keys_rotate(const struct kg_keys_ctx *kc, const char *fence, const char *old_id,
                              int64_t grace_s, int64_t now, struct kg_key_rec *fresh_out,
                              struct kg_key_rec *old_out, char **key_out, struct kg_err *err);

/* Replaces id with a new key shown once, as the console's Regenerate does:
 * allowed for an active key and for an expired one (the Avala v2 page:
 * regenerate an expired key to restore access); a revoked key stays
 * revoked (KG_ECONFLICT), and so does one already rotated or regenerated.
 * The new key carries the old one's name, scopes, owner, limits, usage and
 * metadata; a key that had an expiry gets the same lifetime again from now
 * (capped by the tenant's key_max_lifetime), one without stays without.
 * The old key is revoked at now and records the new id in rotated_to, in
 * one transaction with the key.regenerate audit entry. Outputs as for
 * kg_keys_rotate(). */
enum kg_status kg_keys_regenerate(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                                  int64_t now, struct kg_key_rec *fresh_out,
                                  struct kg_key_rec *old_out, char **key_out, struct kg_err *err);

/* The state people are shown for rec at now: its own (kg_key_state_of()),
 * but KG_KEY_DISABLED for a key that is not revoked while its user or the
 * user's tenant is disabled (it authenticates nothing until they are
 * enabled). Reads the owner and its tenant from the store; a store error
 * leaves the key's own state. */
enum kg_key_state kg_keys_state(const struct kg_keys_ctx *kc, const struct kg_key_rec *rec,
                                int64_t now);

/* After a listing walk (whose callback must not use the store): sets the
 * "state" member of every key object of the array keys (kg_render_key_json()
 * shape) that is not "revoked" to "disabled" when its "user_id" names a
 * disabled user or a user of a disabled tenant, as kg_keys_state() would.
 * Reads each distinct owner once per run of equal user ids. */
void kg_keys_mark_disabled(const struct kg_keys_ctx *kc, json_t *keys);

/* True when every scope of the list scopes is granted by some scope of the
 * list granting ("" grants nothing, "*" everything). On false, bad (badlen
 * bytes, may be NULL) receives the first scope that is not. Pure. */
bool kg_keys_scopes_within(const char *granting, const char *scopes, char *bad, size_t badlen);

/* Whether a rotated key is still in use during its grace period: NONE when
 * rec is not in a grace period at now (rotated_to unset, or revoked_at
 * reached), YES when it was used since its successor was made, NO when not,
 * UNKNOWN when the successor cannot be read (the rotation time is then
 * unknown). What `keys show` and the admin API call still_in_use. */
enum kg_key_in_use {
    KG_KEY_IN_USE_NONE,
    KG_KEY_IN_USE_YES,
    KG_KEY_IN_USE_NO,
    KG_KEY_IN_USE_UNKNOWN,
};
enum kg_key_in_use kg_keys_rotation_in_use(const struct kg_keys_ctx *kc, const char *fence,
                                           const struct kg_key_rec *rec, int64_t now);

#endif
