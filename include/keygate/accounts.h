/* keygate/accounts.h - tenants and users: the owners of keys.
 *
 * The one place where the rules about accounts live, shared by the command
 * line, the admin API and signup: what a valid tenant name, username,
 * e-mail, role and tier are; who may make a user a platform admin; when a
 * change conflicts with a disabled tenant or user. A user's role is the set
 * of scopes its keys may carry (kg_scope_list_normalise() syntax, "*" = all);
 * the key cache intersects it with each key's scopes at request time, so
 * narrowing a role narrows every key of the user at once and never needs a
 * key edit. Disabling a user or tenant stops all its keys (the key cache
 * skips them); nothing is ever deleted.
 *
 * Context, fence, audit and errors work as in keys.h: kc->actor is recorded
 * for every change in the same transaction; with a fence (the caller's
 * tenant) any other tenant and its users answer KG_ENOTFOUND exactly as if
 * they did not exist; KG_EINVAL words name the field.
 */
#ifndef KEYGATE_ACCOUNTS_H
#define KEYGATE_ACCOUNTS_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/keys.h"
#include "keygate/status.h"
#include "keygate/store.h"

/* ---- validation, usable before anything is opened ---- */

/* A tenant name (1..64 of [A-Za-z0-9_.-]); a tier name (same syntax). */
enum kg_status kg_accounts_check_tenant(const char *name, struct kg_err *err);
enum kg_status kg_accounts_check_tier(const char *tier, struct kg_err *err);

/* Checks an e-mail address and writes it lower-cased into out: 3..254
 * bytes, one '@', a local part of 1..64 of [A-Za-z0-9.!#$%&'*+/=?^_`{|}~-],
 * a domain of dot-separated labels of [A-Za-z0-9-] with at least one dot.
 * KG_EINVAL "email …". */
enum kg_status kg_accounts_normalise_email(const char *email, char out[KG_EMAIL_MAX],
                                           struct kg_err *err);

/* ---- passwords (signup, `keygate users passwd`, the admin API) ---- */

#define KG_PASSWORD_MIN 12   /* characters (code points of UTF-8) */
#define KG_PASSWORD_MAX 1024 /* bytes: bounds the hashing work a request can ask for */

/* The one password rule (issue 14): KG_PASSWORD_MIN characters to
 * KG_PASSWORD_MAX bytes, nothing about their kind: length is what makes a
 * password strong. KG_EINVAL "password …". */
enum kg_status kg_accounts_check_password(const char *pw, struct kg_err *err);

/* Checks pw and hashes it with Argon2id (crypto_pwhash_str, interactive
 * limits: about 64 MiB and tens of milliseconds, so never on an event
 * loop) into out. KG_ENOMEM when the hash cannot be made. */
enum kg_status kg_accounts_hash_password(const char *pw, char out[KG_PWHASH_MAX],
                                         struct kg_err *err);

/* Sets user id's password (checked and hashed here), audited as
 * user.update {"password": "changed"}. The store ends every console
 * session of the user in the same transaction. KG_ENOTFOUND as for
 * kg_accounts_user_get(). */
enum kg_status kg_accounts_user_set_password(const struct kg_keys_ctx *kc, const char *fence,
                                             const char *id, const char *password, int64_t now,
                                             struct kg_user_rec *out, struct kg_err *err);

/* ---- tenants ---- */

struct kg_tenant_new {
    const char *name;         /* required */
    const char *display_name; /* NULL = "": 0..128 bytes of UTF-8 without control characters */
};

/* NULL / false = unchanged; at least one member must be set. */
struct kg_tenant_change {
    const char *display_name;
    bool set_disabled;
    bool disabled; /* true: disable now (every key of the tenant stops); false: enable */
};

/* Creates a tenant (tenant.create). KG_ECONFLICT: it exists. With a fence,
 * no other tenant can be made (KG_ENOTFOUND "no tenant NAME"); the admin
 * API lets only platform admins reach this anyway. */
enum kg_status kg_accounts_tenant_create(const struct kg_keys_ctx *kc, const char *fence,
                                         const struct kg_tenant_new *req, int64_t now,
                                         struct kg_tenant_rec *out, struct kg_err *err);

/* KG_ENOTFOUND "no tenant NAME". */
enum kg_status kg_accounts_tenant_get(const struct kg_keys_ctx *kc, const char *fence,
                                      const char *name, struct kg_tenant_rec *out,
                                      struct kg_err *err);

/* Tenants oldest first, one page (page NULL: all); with a fence only the
 * fence's own. next as for kg_keys_list(). */
enum kg_status kg_accounts_tenant_list(const struct kg_keys_ctx *kc, const char *fence,
                                       const struct kg_page *page, kg_store_tenant_cb cb, void *ctx,
                                       char *next, struct kg_err *err);

/* tenant.update with the new values. KG_EINVAL: nothing to change.
 * KG_ECONFLICT: disabling a disabled tenant, enabling an enabled one. */
enum kg_status kg_accounts_tenant_update(const struct kg_keys_ctx *kc, const char *fence,
                                         const char *name, const struct kg_tenant_change *chg,
                                         int64_t now, struct kg_tenant_rec *out,
                                         struct kg_err *err);

/* ---- users ---- */

struct kg_user_new {
    const char *tenant;     /* NULL = the fence, or KG_TENANT_DEFAULT; must exist */
    const char *username;   /* 1..128 bytes of UTF-8 without control characters;
                             * NULL = the e-mail address */
    const char *email;      /* NULL = none */
    const char *first_name; /* NULL = "": 0..128 bytes like names */
    const char *last_name;
    const char *password_hash; /* NULL = no password; else crypto_pwhash_str() output
                                * ("$argon2id$…"), made by signup. Never logged or audited. */
    const char *role;          /* NULL = "*" */
    const char *tier;          /* NULL = KG_TIER_DEFAULT */
    bool platform_admin;       /* KG_EINVAL with a fence: only platform admins grant it */
    bool is_signup;            /* audit as one "signup" entry instead of user.create (+
                                * key.create) */
    /* Credits every key of the user draws from together, besides each
     * key's own and the tier quota; charged on the upstream's 2xx. */
    bool has_credits;   /* false = unlimited */
    int64_t credits;    /* with has_credits: 0..1000000000 */
    const char *refill; /* NULL or "" = never, "day" or "month" (needs has_credits) */
};

/* NULL / false = unchanged; at least one member must be set. Rules as for
 * struct kg_user_new; email "" removes the address. */
struct kg_user_change {
    const char *username;
    const char *email;
    const char *first_name;
    const char *last_name;
    const char *password_hash;
    const char *role;
    const char *tier;
    bool set_platform_admin;
    bool platform_admin;
    bool set_disabled;
    bool disabled;
    bool set_quota_limit;
    int64_t quota_limit;      /* credits 0..1000000000; -1 = unlimited */
    const char *quota_period; /* "day", "month" or "" (never) */
};

/* Checks every field of req without a store. */
enum kg_status kg_accounts_user_check_new(const struct kg_user_new *req, struct kg_err *err);

/* Creates a user (user.create) and, when first_key is not NULL, its first
 * key (key.create) in the same transaction: first_key's tenant and user
 * must be NULL, its scopes must fit the new role. KG_ENOTFOUND: no such
 * tenant (or fenced off). KG_ECONFLICT: the username is taken in the
 * tenant, or the e-mail anywhere ("email is already in use"), or the tenant
 * is disabled. On KG_OK *out is the stored user; with first_key, *key_rec
 * and *key_out are as for kg_keys_create() (key_rec and key_out may be NULL
 * only without first_key). */
enum kg_status kg_accounts_user_create(const struct kg_keys_ctx *kc, const char *fence,
                                       const struct kg_user_new *req,
                                       const struct kg_key_new *first_key, int64_t now,
                                       struct kg_user_rec *out, struct kg_key_rec *key_rec,
                                       char **key_out, struct kg_err *err);

/* By id. KG_ENOTFOUND "no user ID". */
enum kg_status kg_accounts_user_get(const struct kg_keys_ctx *kc, const char *fence, const char *id,
                                    struct kg_user_rec *out, struct kg_err *err);

/* By reference as people type it: a user id, else a username within tenant
 * (NULL = the fence, or KG_TENANT_DEFAULT). KG_ENOTFOUND "no user REF". */
enum kg_status kg_accounts_user_resolve(const struct kg_keys_ctx *kc, const char *fence,
                                        const char *tenant, const char *ref,
                                        struct kg_user_rec *out, struct kg_err *err);

/* Users oldest first, one page (page NULL: all); tenant NULL = every tenant
 * (with a fence: the fence's; another tenant lists nothing). */
enum kg_status kg_accounts_user_list(const struct kg_keys_ctx *kc, const char *fence,
                                     const char *tenant, const struct kg_page *page,
                                     kg_store_user_cb cb, void *ctx, char *next,
                                     struct kg_err *err);

/* user.update with the new values (a password change is recorded as
 * "password": "changed"). KG_EINVAL: nothing to change, a malformed field,
 * platform_admin with a fence. KG_ECONFLICT: username or e-mail taken,
 * disabling a disabled user, enabling an enabled one. */
enum kg_status kg_accounts_user_update(const struct kg_keys_ctx *kc, const char *fence,
                                       const char *id, const struct kg_user_change *chg,
                                       int64_t now, struct kg_user_rec *out, struct kg_err *err);

/* What user id used, as the store has it (every daemon flushes at least
 * once a second): its own credits in its refill period and its tier's
 * quota (kc->cfg's tier of the user; NULL config or no quota: the count as
 * stored) in the tier's period, each 0 when the stored count belongs to an
 * earlier period than now's. KG_ENOTFOUND as for kg_accounts_user_get(). */
enum kg_status kg_accounts_user_usage(const struct kg_keys_ctx *kc, const char *fence,
                                      const struct kg_user_rec *u, int64_t now,
                                      struct kg_user_usage *out, struct kg_err *err);

/* Disables id now (user.disable): every key of the user stops, within the
 * same bound as a revocation. KG_ECONFLICT "user ID is already disabled". */
enum kg_status kg_accounts_user_disable(const struct kg_keys_ctx *kc, const char *fence,
                                        const char *id, int64_t now, struct kg_user_rec *out,
                                        struct kg_err *err);

/* The default user ("default", role "*") of tenant, made when missing
 * (user.create), and the tenant too when missing and there is no fence
 * (tenant.create). What kg_keys_create() uses for a key without --user. */
enum kg_status kg_accounts_default_user(const struct kg_keys_ctx *kc, const char *fence,
                                        const char *tenant, int64_t now, struct kg_user_rec *out,
                                        struct kg_err *err);

#endif
