/* keygate/store.h - durable truth for keys, users, tenants and the audit trail.
 *
 * The request path never calls this module: it reads auth/keycache, which is
 * loaded from here. Every write is one BEGIN IMMEDIATE transaction, so a
 * change is all there or not at all, and every mutating function takes an
 * optional audit entry that is appended to the hash-chained audit trail
 * inside that same transaction (see struct kg_audit_entry). The full key is
 * never passed here, only its digest. Backends plug in behind these
 * functions (store.c selects one; store_sqlite.c is the only one today).
 *
 * This module checks shapes (NUL-terminated fields, id syntax, positive
 * times), not rules: what a valid user name, role or e-mail is belongs to
 * manage/. Listings page by an opaque cursor (see struct kg_page).
 *
 * A handle is not thread-safe: one handle per thread.
 */
#ifndef KEYGATE_STORE_H
#define KEYGATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/status.h"

#define KG_ID_MAX 40            /* "key_" / "usr_" + 22 base62 + NUL, with room */
#define KG_NAME_MAX 129         /* names: 1..128 bytes */
#define KG_DPREFIX_MAX 48       /* display prefix: key_prefix + 4 body chars */
#define KG_SCOPES_MAX 1024      /* comma-separated scope list (key scopes, user roles) */
#define KG_RATE_MAX 32          /* "100/min" */
#define KG_META_MAX 4096        /* metadata JSON text */
#define KG_ALLOWED_IPS_MAX 1024 /* "CIDR,CIDR,...": the blocks a key may be used from */
#define KG_DIGEST_BYTES 32

#define KG_TENANT_MAX 64 /* tenant names made from now on: 1..64 of [A-Za-z0-9_.-] */
#define KG_TENANT_DEFAULT "default"
#define KG_USER_DEFAULT "default" /* username of a tenant's default user */
#define KG_EMAIL_MAX 255          /* e-mail: 3..254 bytes + NUL */
#define KG_PWHASH_MAX 128         /* crypto_pwhash_STRBYTES */
#define KG_TIER_MAX 65            /* tier names: 1..64 of [A-Za-z0-9_.-] */
#define KG_TIER_DEFAULT "default"
#define KG_CURSOR_MAX 288 /* a listing cursor with its NUL (room for a 128-byte name in hex) */

#define KG_AUDIT_ACTOR_MAX 96     /* "cli:alice", a key id, "signup" */
#define KG_AUDIT_ACTION_MAX 32    /* "key.create", ... */
#define KG_AUDIT_OBJECT_MAX 129   /* a key or user id, a tenant name, a display prefix */
#define KG_AUDIT_DETAILS_MAX 4096 /* compact JSON object text */
#define KG_AUDIT_HASH_HEX 65      /* 64 lower-case hex characters + NUL */
#define KG_AUDIT_KEY_BYTES 32

/* One key as stored. Plain data, caller-owned; times are Unix seconds and 0
 * means "not set" (no expiry, not revoked, never used). */
struct kg_key_rec {
    char id[KG_ID_MAX]; /* public id "key_…", used everywhere a key is named */
    char name[KG_NAME_MAX];
    char prefix[KG_DPREFIX_MAX];           /* display prefix: first characters of the key */
    char last4[5];                         /* last 4 characters of the key */
    unsigned char digest[KG_DIGEST_BYTES]; /* keyed BLAKE2b of the full key */
    char scopes[KG_SCOPES_MAX];            /* "read:a,write:b"; "" = no scopes */
    char tenant[KG_NAME_MAX];              /* always the owner's tenant (kept here for listings) */
    int64_t created_at;
    int64_t expires_at;
    int64_t revoked_at; /* may lie in the future: rotation grace */
    int64_t last_used_at;
    char rotated_to[KG_ID_MAX]; /* id of the key that replaced this one, or "" */
    char rate[KG_RATE_MAX];     /* per-key rate limit "100/min", "" = default */
    int64_t rate_burst;         /* 0 = default */
    int64_t quota_limit;        /* credits, -1 = unlimited */
    char quota_period[16];      /* "", "day", "month" */
    int64_t quota_used;         /* credits used in the period starting at quota_period_start */
    int64_t quota_period_start; /* Unix seconds, UTC day/month start; 0 = none yet */
    char metadata[KG_META_MAX]; /* JSON object text, "{}" when empty */
    char user_id[KG_ID_MAX];    /* owner "usr_…"; "" on insert: see kg_store_key_insert() */
    bool canary;                /* never grants access; every use is reported (fixed at creation) */
    char allowed_ips[KG_ALLOWED_IPS_MAX]; /* "CIDR,CIDR"; "" = from anywhere */
};

/* A tenant. Its name is its identity and never changes. */
struct kg_tenant_rec {
    char name[KG_NAME_MAX];
    char display_name[KG_NAME_MAX]; /* "" = none */
    int64_t created_at;
    int64_t disabled_at; /* 0 = enabled; else every key of the tenant is dead */
};

/* A user. Never deleted: disabling is the end of a user. */
struct kg_user_rec {
    char id[KG_ID_MAX];         /* "usr_…" */
    char tenant[KG_NAME_MAX];   /* fixed at creation */
    char username[KG_NAME_MAX]; /* unique within the tenant */
    char email[KG_EMAIL_MAX];   /* lower-case, unique across tenants; "" = none */
    char first_name[KG_NAME_MAX];
    char last_name[KG_NAME_MAX];
    char password_hash[KG_PWHASH_MAX]; /* crypto_pwhash_str() text; "" = no password */
    char role[KG_SCOPES_MAX];          /* scope list the user's keys may carry; "*" = all */
    char tier[KG_TIER_MAX];
    bool platform_admin; /* admin keys of this user see every tenant */
    int64_t created_at;
    int64_t disabled_at; /* 0 = enabled; else every key of the user is dead */
    /* Credits every key of the user draws from together. A flag rather
     * than -1 for "unlimited", so that a zeroed record is unlimited. */
    bool has_quota;
    int64_t quota_limit;   /* when has_quota: 0 to 1000000000; else 0 */
    char quota_period[16]; /* "", "day", "month": when they come back */
};

/* One audit trail entry.
 *
 * To append, the caller fills time, actor, tenant, action, object and
 * details and passes the entry to a mutating function (or to
 * kg_store_audit_append()); the store assigns seq, prev_hash and hash under
 * its write lock, and ignores whatever those fields hold. No text field may
 * contain a newline (KG_EINVAL), details must be JSON object text, and the
 * handle needs an audit key (kg_store_set_audit_key(); KG_EINVAL without).
 * next chains further entries appended in the same transaction, in order.
 *
 * Reads fill every field; next is NULL. malformed is set when the row did
 * not fit this struct (a NULL, a value of the wrong type or too long): its
 * hash cannot match then, and kg_audit_verify() reports the entry. */
struct kg_audit_entry {
    int64_t seq;
    int64_t time;
    char actor[KG_AUDIT_ACTOR_MAX];
    char tenant[KG_NAME_MAX]; /* "" = not about one tenant */
    char action[KG_AUDIT_ACTION_MAX];
    char object[KG_AUDIT_OBJECT_MAX];
    char details[KG_AUDIT_DETAILS_MAX];
    char prev_hash[KG_AUDIT_HASH_HEX];
    char hash[KG_AUDIT_HASH_HEX];
    bool malformed;
    const struct kg_audit_entry *next;
};

/* One page of a listing. A listing walks rows in a fixed order (keys and
 * users by (created_at, id), tenants by (created_at, name), audit entries by
 * seq) and hands back a cursor for the row after the last one it returned.
 * Cursors are opaque text of at most KG_CURSOR_MAX - 1 bytes made of
 * [A-Za-z0-9_.~-] (RFC 3986 unreserved characters): safe in a URL as they
 * are. A malformed cursor is KG_EINVAL ("cursor is malformed"). */
struct kg_page {
    const char *cursor; /* NULL or "" = from the first row; else a next cursor */
    size_t limit;       /* at most this many rows; 0 = no limit */
};

/* KG_KEY_DISABLED is never a key's own state (kg_key_state_of() does not
 * return it): it is what people are shown for a key that is not revoked
 * but whose user or tenant is disabled (kg_keys_state() in keys.h). */
enum kg_key_state { KG_KEY_ACTIVE = 0, KG_KEY_EXPIRED, KG_KEY_REVOKED, KG_KEY_DISABLED };

/* State of rec at time now: revoked wins over expired. */
enum kg_key_state kg_key_state_of(const struct kg_key_rec *rec, int64_t now);
/* "active", "expired", "revoked", "disabled". */
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

/* Closes the handle and wipes its audit key; NULL is a no-op. */
void kg_store_close(struct kg_store *st);

/* Gives the handle the key that chains audit entries (kg_digest_audit_key()).
 * Copied; needed before any call that appends an entry. */
void kg_store_set_audit_key(struct kg_store *st, const unsigned char key[KG_AUDIT_KEY_BYTES]);

/* ---- keys ----
 *
 * Two key writes keep their issue-2 forms without an audit entry
 * (kg_store_key_insert(), kg_store_key_revoke()) beside the audited ones,
 * because seeding tools and tests call them; every other write takes the
 * audit chain directly. */

/* Inserts a new key with its audit entries (audit may be NULL).
 * KG_ECONFLICT when the id or digest already exists. A non-empty user_id
 * must name an existing user (KG_ENOTFOUND otherwise) and rec->tenant is
 * set to that user's tenant whatever it held. An empty user_id means the
 * default user of rec->tenant ("" = "default"): the tenant and its user
 * `default` (role "*") are created first if missing, in the same
 * transaction and without audit entries, which is what seeding tools and
 * tests rely on; manage/ creates them itself so that they are audited. */
enum kg_status kg_store_key_insert_audited(struct kg_store *st, const struct kg_key_rec *rec,
                                           const struct kg_audit_entry *audit, struct kg_err *err);

/* kg_store_key_insert_audited() without an audit entry: the issue-2 form,
 * for seeding tools and tests. Lifecycle code (manage/) never uses it. */
enum kg_status kg_store_key_insert(struct kg_store *st, const struct kg_key_rec *rec,
                                   struct kg_err *err);

/* n keys as kg_store_key_insert() inserts them, all in ONE transaction:
 * all of them or none (the first failure's status). For seeding tools. */
enum kg_status kg_store_key_insert_batch(struct kg_store *st, const struct kg_key_rec *recs,
                                         size_t n, struct kg_err *err);

/* Reads one key by id into *out. KG_ENOTFOUND when there is none. */
enum kg_status kg_store_key_get(struct kg_store *st, const char *id, struct kg_key_rec *out,
                                struct kg_err *err);

/* Calls cb for every key, oldest first (created_at, then id). rec is borrowed
 * for the duration of the call. cb returning false stops the walk (KG_OK).
 * The callback must not use the handle. */
typedef bool (*kg_store_key_cb)(const struct kg_key_rec *rec, void *ctx);
enum kg_status kg_store_key_each(struct kg_store *st, kg_store_key_cb cb, void *ctx,
                                 struct kg_err *err);

/* How many keys are in each state at now, by the rule of kg_key_state_of():
 * revoked when revoked_at is set and <= now, else expired when expires_at
 * is set and <= now, else active. Counted in the store through indexes,
 * not by reading every key (what /metrics asks at every scrape). */
struct kg_key_census {
    uint64_t active, expired, revoked;
};
enum kg_status kg_store_key_census(struct kg_store *st, int64_t now, struct kg_key_census *out,
                                   struct kg_err *err);

/* Which keys kg_store_key_list() returns; NULL strings match anything. */
struct kg_key_query {
    const char *tenant;
    const char *user_id;
    const char *name; /* exact match */
    bool all_states;  /* false: only keys in state as of now */
    enum kg_key_state state;
    int64_t now;
    struct kg_page page;
};

/* Calls cb for each key matching q, oldest first, at most q->page.limit of
 * them. next (KG_CURSOR_MAX bytes, may be NULL) receives the cursor of the
 * next page, or "" when this page reached the end. */
enum kg_status kg_store_key_list(struct kg_store *st, const struct kg_key_query *q,
                                 kg_store_key_cb cb, void *ctx, char *next, struct kg_err *err);

/* What the key cache needs to know about a key's owner. Borrowed for the
 * callback. disabled: the user or its tenant is disabled, or the key has no
 * owner at all (a key is never live without one). */
struct kg_user_usage;
struct kg_key_owner {
    const char *role; /* the user's role, "*" = every scope */
    const char *tier;
    bool platform_admin;
    bool disabled;
    bool has_quota; /* the user's own credits (struct kg_user_rec) */
    int64_t quota_limit;
    const char *quota_period;          /* "", "day", "month" */
    const struct kg_user_usage *usage; /* what the user used, as stored */
};
typedef bool (*kg_store_key_owner_cb)(const struct kg_key_rec *rec,
                                      const struct kg_key_owner *owner, void *ctx);

/* kg_store_key_each() with each key's owner, read in one statement so the
 * pairs are consistent. */
enum kg_status kg_store_key_each_owner(struct kg_store *st, kg_store_key_owner_cb cb, void *ctx,
                                       struct kg_err *err);

/* What one change log row names (sql/008_change_log.sql). */
enum kg_change_object { KG_CHANGE_KEY = 0, KG_CHANGE_USER, KG_CHANGE_TENANT };

/* The number of keys in st, revoked ones included: what a full load of the
 * key cache sizes its tables by. */
enum kg_status kg_store_key_count(struct kg_store *st, size_t *n, struct kg_err *err);

/* kg_store_key_each_owner() restricted to the keys of one object: the key
 * with id id, the keys of user id, or the keys of every user of tenant id.
 * What the key cache reads to apply one change log row. */
enum kg_status kg_store_key_each_owner_of(struct kg_store *st, enum kg_change_object of,
                                          const char *id, kg_store_key_owner_cb cb, void *ctx,
                                          struct kg_err *err);

/* Writes the changeable fields of rec to the key rec->id: name, scopes,
 * expires_at, rate, rate_burst, quota_limit, quota_period, metadata and
 * allowed_ips.
 * Everything else (owner, digest, revocation, usage) stays as stored.
 * KG_ENOTFOUND: no such key. */
enum kg_status kg_store_key_update(struct kg_store *st, const struct kg_key_rec *rec,
                                   const struct kg_audit_entry *audit, struct kg_err *err);

/* Revokes id for good at time now, with its audit entries. KG_ENOTFOUND: no
 * such key. KG_ECONFLICT: already revoked (revoked_at set and <= now). A key
 * whose revocation is scheduled (rotation grace) is revoked now. */
enum kg_status kg_store_key_revoke_audited(struct kg_store *st, const char *id, int64_t now,
                                           const struct kg_audit_entry *audit, struct kg_err *err);

/* kg_store_key_revoke_audited() without an audit entry (tools and tests). */
enum kg_status kg_store_key_revoke(struct kg_store *st, const char *id, int64_t now,
                                   struct kg_err *err);

/* Rotation in one transaction: inserts fresh (which carries the old key's
 * name, scopes, owner and limits, set by the caller), and schedules the old
 * key's revocation at revoke_at (now for no grace), recording fresh->id in
 * its rotated_to. KG_ENOTFOUND / KG_ECONFLICT (old already revoked or
 * already rotated) as for revoke. */
enum kg_status kg_store_key_rotate(struct kg_store *st, const char *old_id,
                                   const struct kg_key_rec *fresh, int64_t revoke_at, int64_t now,
                                   const struct kg_audit_entry *audit, struct kg_err *err);

/* Records last-used times: for each i, last_used_at = max(stored, times[i]).
 * One transaction for the whole batch. Unknown ids are ignored. Not audited:
 * usage is not a lifecycle event. */
enum kg_status kg_store_key_touch(struct kg_store *st, const char *const *ids, const int64_t *times,
                                  size_t n, struct kg_err *err);

/* Usage counters of one key, as stored (totals over every process that
 * ever served it) or as a delta to add to them. */
struct kg_key_usage {
    int64_t requests;
    int64_t denied_expired;
    int64_t denied_forbidden;
    int64_t denied_rate;
    int64_t last_used_at; /* Unix seconds, 0 = never */
    int64_t updated_at;   /* when the totals were last written, 0 = never */
    /* Deltas only (kg_store_key_usage_get leaves them 0; the total is the
     * key's quota_used): credits charged, and the start of the refill
     * period they were charged in (0 = the key has no refill). */
    int64_t credits;
    int64_t credits_period_start;
};

/* Adds deltas[i] to the stored totals of ids[i] and sets its last_used_at
 * to max(stored, deltas[i].last_used_at), and adds deltas[i].credits to
 * its quota_used (starting it again from the delta when
 * credits_period_start is later than the stored period start: the
 * refill), all in ONE transaction: either the
 * whole batch is counted or none of it. Unknown ids are ignored. now stamps
 * updated_at. Not audited: usage is not a lifecycle event. */
enum kg_status kg_store_key_usage_add(struct kg_store *st, const char *const *ids,
                                      const struct kg_key_usage *deltas, size_t n, int64_t now,
                                      struct kg_err *err);

/* The stored usage of key id (all zero when it was never counted, including
 * last_used_at). KG_ENOTFOUND: no such key. */
enum kg_status kg_store_key_usage_get(struct kg_store *st, const char *id, struct kg_key_usage *out,
                                      struct kg_err *err);

/* What a user used of its own credits and of its tier's quota: stored
 * totals (each in the period starting at its *_period_start, 0 = none yet)
 * or deltas to add to them (charged in the period starting there; a start
 * later than the stored one starts the count again: the refill). */
struct kg_user_usage {
    int64_t credits;
    int64_t credits_period_start;
    int64_t tier;
    int64_t tier_period_start;
    int64_t updated_at; /* stored only: when last written, 0 = never */
};

/* kg_store_key_usage_add() and, in the SAME transaction, the user deltas
 * udeltas[i] added to the totals of user uids[i] (unknown ids ignored): a
 * flush either counts a request for its key, its user and its tier or for
 * none of them. */
enum kg_status kg_store_usage_add(struct kg_store *st, const char *const *ids,
                                  const struct kg_key_usage *deltas, size_t n,
                                  const char *const *uids, const struct kg_user_usage *udeltas,
                                  size_t nu, int64_t now, struct kg_err *err);

/* What a flush learnt of one key's or user's stored credits: the totals
 * after its own deltas were added, i.e. every instance's flushed charges
 * (issue 15). want is the caller's: for a key, ask for its total even when
 * its credit delta is 0 (a key with a limit); a key or user with a credit
 * delta always gets it. known: the store answered (else leave the meter as
 * it was). Users: credits and tier as in struct kg_user_usage. */
struct kg_usage_total {
    bool want;
    bool known;
    int64_t credits;
    int64_t credits_period_start;
    int64_t tier;
    int64_t tier_period_start;
};

/* kg_store_usage_add(), and the stored credit totals after it: ktot[i] for
 * ids[i] (n entries, may be NULL), utot[i] for uids[i] (nu, may be NULL),
 * read in the same transaction (UPDATE ... RETURNING), so a total never
 * misses a delta another instance committed before it. */
enum kg_status kg_store_usage_add_totals(struct kg_store *st, const char *const *ids,
                                         const struct kg_key_usage *deltas, size_t n,
                                         const char *const *uids,
                                         const struct kg_user_usage *udeltas, size_t nu,
                                         int64_t now, struct kg_usage_total *ktot,
                                         struct kg_usage_total *utot, struct kg_err *err);

/* ---- credits_mode strict (issue 15) ----
 *
 * An instance spends only credits it holds: blocks of a key's credits
 * reserved in the store (table credit_reservations), one row per key, this
 * handle's instance id and refill period, with a lease. The flush adds an
 * instance's charges to its row's spent in the transaction that adds them
 * to the key's quota_used, so the key's used credits plus what every live
 * row holds (granted - spent) never pass its limit. */

/* This handle's instance id: random, drawn when the store was opened. */
const char *kg_store_instance(const struct kg_store *st);

/* In one transaction holding the key's row: drops the key's rows of an
 * ended period (before period_start) or a lapsed lease (expires_at <
 * now), then grants this instance up to want of what the key has left in
 * the period starting at period_start (its limit less what is used and
 * what every live row holds), adds it to its row and sets the row's lease
 * to now + lease_s. *granted: what was granted, 0 when nothing is left (or
 * the key has no limit: it needs no reservation). KG_ENOTFOUND: no key. */
enum kg_status kg_store_credit_reserve(struct kg_store *st, const char *key_id, int64_t want,
                                       int64_t period_start, int64_t now, int64_t lease_s,
                                       int64_t *granted, struct kg_err *err);

/* Moves the lease of every row of this instance to now + lease_s. */
enum kg_status kg_store_credit_renew(struct kg_store *st, int64_t now, int64_t lease_s,
                                     struct kg_err *err);

/* Deletes this instance's rows of key_id (NULL: of every key), handing
 * back what they hold. After a flush of everything charged: a charge not
 * flushed yet is then counted nowhere until its flush. */
enum kg_status kg_store_credit_release(struct kg_store *st, const char *key_id, struct kg_err *err);

/* The stored usage of user id (all zero when nothing was charged).
 * KG_ENOTFOUND: no such user. */
enum kg_status kg_store_user_usage_get(struct kg_store *st, const char *id,
                                       struct kg_user_usage *out, struct kg_err *err);

/* ---- tenants ---- */

/* KG_ECONFLICT: a tenant of that name exists. */
enum kg_status kg_store_tenant_insert(struct kg_store *st, const struct kg_tenant_rec *rec,
                                      const struct kg_audit_entry *audit, struct kg_err *err);

/* KG_ENOTFOUND: no such tenant. */
enum kg_status kg_store_tenant_get(struct kg_store *st, const char *name, struct kg_tenant_rec *out,
                                   struct kg_err *err);

/* Writes display_name and disabled_at of the tenant rec->name.
 * KG_ENOTFOUND: no such tenant. */
enum kg_status kg_store_tenant_update(struct kg_store *st, const struct kg_tenant_rec *rec,
                                      const struct kg_audit_entry *audit, struct kg_err *err);

/* Tenants oldest first (created_at, name), one page; next as for keys.
 * only (may be NULL) restricts the listing to that one tenant. */
typedef bool (*kg_store_tenant_cb)(const struct kg_tenant_rec *rec, void *ctx);
enum kg_status kg_store_tenant_list(struct kg_store *st, const char *only,
                                    const struct kg_page *page, kg_store_tenant_cb cb, void *ctx,
                                    char *next, struct kg_err *err);

/* ---- users ---- */

/* Inserts rec and, when first_key is not NULL, that key for it (its user_id
 * and tenant are taken from rec), with the audit entries, in one
 * transaction. KG_ENOTFOUND: no tenant rec->tenant. KG_ECONFLICT: the id,
 * the username within the tenant, the e-mail, or the key's id or digest
 * exists; err says which. */
enum kg_status kg_store_user_insert(struct kg_store *st, const struct kg_user_rec *rec,
                                    const struct kg_key_rec *first_key,
                                    const struct kg_audit_entry *audit, struct kg_err *err);

/* By id; by tenant and username; by e-mail (compared as stored: lower-case).
 * KG_ENOTFOUND when there is none. */
enum kg_status kg_store_user_get(struct kg_store *st, const char *id, struct kg_user_rec *out,
                                 struct kg_err *err);
enum kg_status kg_store_user_find(struct kg_store *st, const char *tenant, const char *username,
                                  struct kg_user_rec *out, struct kg_err *err);
enum kg_status kg_store_user_by_email(struct kg_store *st, const char *email,
                                      struct kg_user_rec *out, struct kg_err *err);

/* Writes every field of the user rec->id except id, tenant and created_at.
 * KG_ENOTFOUND: no such user. KG_ECONFLICT: the new username or e-mail is
 * taken. */
enum kg_status kg_store_user_update(struct kg_store *st, const struct kg_user_rec *rec,
                                    const struct kg_audit_entry *audit, struct kg_err *err);

/* By username across every tenant, for signing in: KG_ENOTFOUND when no
 * user or more than one (in different tenants) has it, so a sign-in with
 * an ambiguous username fails like an unknown one. */
enum kg_status kg_store_user_by_username(struct kg_store *st, const char *username,
                                         struct kg_user_rec *out, struct kg_err *err);

/* Users oldest first (created_at, id), one page; tenant NULL = every tenant. */
typedef bool (*kg_store_user_cb)(const struct kg_user_rec *rec, void *ctx);
enum kg_status kg_store_user_list(struct kg_store *st, const char *tenant,
                                  const struct kg_page *page, kg_store_user_cb cb, void *ctx,
                                  char *next, struct kg_err *err);

/* ---- console sessions (sql/009_console.sql) ----
 *
 * Only the keyed digest of a session token is stored. Rows of a user go
 * when its password changes or it or its tenant is disabled (triggers, in
 * the transaction of that change). Times are Unix seconds. */
struct kg_session_rec {
    unsigned char digest[KG_DIGEST_BYTES];
    char user_id[KG_ID_MAX];
    int64_t created_at;
    int64_t expires_at;   /* absolute end: created_at + console_session_ttl */
    int64_t last_seen_at; /* the idle timeout counts from here */
};

/* Inserts rec, and deletes every session whose expires_at is not after
 * rec->created_at (housekeeping), in one transaction. KG_ENOTFOUND: no
 * user rec->user_id. KG_ECONFLICT: the digest exists. */
enum kg_status kg_store_session_insert(struct kg_store *st, const struct kg_session_rec *rec,
                                       struct kg_err *err);

/* The session with this digest whose user and tenant are enabled.
 * KG_ENOTFOUND otherwise (whatever the reason, the same words). */
enum kg_status kg_store_session_get(struct kg_store *st,
                                    const unsigned char digest[KG_DIGEST_BYTES],
                                    struct kg_session_rec *out, struct kg_err *err);

/* Sets last_seen_at to now. A missing session is not an error. */
enum kg_status kg_store_session_touch(struct kg_store *st,
                                      const unsigned char digest[KG_DIGEST_BYTES], int64_t now,
                                      struct kg_err *err);

/* Deletes the session with this digest; a missing one is not an error. */
enum kg_status kg_store_session_delete(struct kg_store *st,
                                       const unsigned char digest[KG_DIGEST_BYTES],
                                       struct kg_err *err);

/* ---- audit trail ---- */

/* Appends entries on their own, one transaction (failed authentications). */
enum kg_status kg_store_audit_append(struct kg_store *st, const struct kg_audit_entry *audit,
                                     struct kg_err *err);

/* Which entries kg_store_audit_list() returns. */
struct kg_audit_query {
    const char *tenant; /* NULL = every entry; else only entries about this tenant */
    bool newest_first;  /* walk by descending seq (the cursor follows the direction) */
    struct kg_page page;
};
typedef bool (*kg_store_audit_cb)(const struct kg_audit_entry *e, void *ctx);
enum kg_status kg_store_audit_list(struct kg_store *st, const struct kg_audit_query *q,
                                   kg_store_audit_cb cb, void *ctx, char *next, struct kg_err *err);

/* Every entry in seq order, rows that do not fit included (malformed), for
 * verification. */
enum kg_status kg_store_audit_each(struct kg_store *st, kg_store_audit_cb cb, void *ctx,
                                   struct kg_err *err);

/* The chain head: seq and hash of the last entry appended (0 and 64 zeros
 * before the first). KG_ECORRUPT when the head row is missing or mangled. */
enum kg_status kg_store_audit_head(struct kg_store *st, int64_t *seq, char hash[KG_AUDIT_HASH_HEX],
                                   struct kg_err *err);

/* The chain hash of e over prev_hash (64 hex characters): hex of BLAKE2b-256
 * keyed with key over prev_hash "\n" seq "\n" time "\n" actor "\n" tenant
 * "\n" action "\n" object "\n" details, numbers in decimal. Pure. */
void kg_store_audit_hash(const unsigned char key[KG_AUDIT_KEY_BYTES],
                         const struct kg_audit_entry *e, const char *prev_hash,
                         char out[KG_AUDIT_HASH_HEX]);

/* ---- housekeeping ---- */

/* A number that changes whenever another connection committed a change
 * (PRAGMA data_version): the daemon polls it to see CLI changes. */
enum kg_status kg_store_data_version(struct kg_store *st, int64_t *out, struct kg_err *err);

/* Whether the store takes a write now: one small transaction that writes
 * a page and commits (it changes nothing), without waiting for another
 * writer's lock. KG_EIO (with the store's words) when the disk is full,
 * the file read-only or locked; the daemon asks it while writes are
 * failing, to see the fault go away (store/storefault.h). */
enum kg_status kg_store_write_probe(struct kg_store *st, struct kg_err *err);

/* Whether a key with this digest is stored, not revoked at now, and its
 * user and tenant not disabled: one the key cache would hold (*out).
 * One indexed read; what the daemon asks when a well-formed key is not in
 * its cache (auth/keywatch.c). */
enum kg_status kg_store_key_known(struct kg_store *st, const unsigned char digest[KG_DIGEST_BYTES],
                                  int64_t now, bool *out, struct kg_err *err);

/* ---- change log ----
 *
 * Every change to a key, user or tenant appends a row (seq, object, id) in
 * the transaction of the change itself (triggers); the usage flush appends
 * none. The key cache applies the rows after the last seq it applied, each
 * by reading its object again, so a row applied twice does no harm. Rows
 * are trimmed by age; trimmed_through is the highest seq trimmed so far: a
 * reader whose position is below it may have missed rows and must reload
 * everything. */
struct kg_change {
    int64_t seq;
    enum kg_change_object object;
    char id[KG_NAME_MAX]; /* key id, user id or tenant name */
};

/* The last seq written (0 = none yet) and trimmed_through (0 = nothing
 * trimmed). */
enum kg_status kg_store_change_head(struct kg_store *st, int64_t *last, int64_t *trimmed,
                                    struct kg_err *err);

/* Calls cb for the rows with seq > after, in seq order, at most limit of
 * them (limit > 0); c is borrowed for the call, which must not use the
 * handle. cb returning false stops the walk (KG_OK). */
typedef bool (*kg_store_change_cb)(const struct kg_change *c, void *ctx);
enum kg_status kg_store_change_each(struct kg_store *st, int64_t after, size_t limit,
                                    kg_store_change_cb cb, void *ctx, struct kg_err *err);

/* Deletes the rows written before the Unix time before, in one transaction
 * that also moves trimmed_through up to the highest seq deleted; *trimmed
 * (may be NULL) gets the number of rows. The newest row is always kept,
 * so the head never goes back. */
enum kg_status kg_store_change_trim(struct kg_store *st, int64_t before, size_t *trimmed,
                                    struct kg_err *err);

/* Waits up to timeout_ms for another connection's change (PostgreSQL:
 * LISTEN keygate_changes, issued again after every reconnect). *woke is
 * true when one came, or when the connection was made again (changes may
 * have been missed meanwhile: the caller polls). KG_EINVAL when the
 * backend has no such wake-up (SQLite: poll kg_store_data_version()).
 * Only a wake-up: the change log stays the truth. */
enum kg_status kg_store_wait_change(struct kg_store *st, int timeout_ms, bool *woke,
                                    struct kg_err *err);

/* The fingerprint of the server secret the store was made with
 * (kg_digest_fingerprint(); sql/011_secret_fingerprint.sql, and
 * sql/postgres/001_init.sql). When fp is not NULL and none is stored yet,
 * fp is recorded, in one transaction with the read. stored (65 bytes)
 * receives what the store holds afterwards, "" for none: the caller
 * compares. Every instance sharing a store must use the same secret. */
enum kg_status kg_store_fingerprint(struct kg_store *st, const char *fp, char stored[65],
                                    struct kg_err *err);

/* ---- events (issue 18) ----
 *
 * The webhook outbox (sql/010_events.sql). Key lifecycle events are
 * written by triggers in the transaction of the change; the others through
 * kg_store_event_add() in the transaction of their cause. Deliveries are
 * one row per (event, endpoint URL). */

#define KG_EVENT_TYPE_MAX 32
#define KG_EVENT_DATA_MAX 2048
#define KG_URL_MAX 1024

struct kg_event {
    int64_t seq;        /* assigned by the store */
    char id[KG_ID_MAX]; /* "evt_..." (kg_store_event_add() makes one when "") */
    char type[KG_EVENT_TYPE_MAX];
    int64_t time;
    char tenant[KG_NAME_MAX];
    char key_id[KG_ID_MAX];
    char prefix[KG_DPREFIX_MAX];
    char name[KG_NAME_MAX];
    char user_id[KG_ID_MAX];
    char data[KG_EVENT_DATA_MAX]; /* JSON object text: what the type adds */
    /* Reads only: deliveries by state over every endpoint. */
    int64_t pending, delivered, failed;
};

/* Appends ev (its id made when empty) and the audit entries, in ONE
 * transaction. */
enum kg_status kg_store_event_add(struct kg_store *st, struct kg_event *ev,
                                  const struct kg_audit_entry *audit, struct kg_err *err);

/* Makes a pending delivery to endpoint for every event after the
 * endpoint's cursor whose type is in types (",a,b," form; "" = all), due
 * at now, and moves the cursor. An endpoint seen for the first time starts
 * with the events of the last retry_window_s seconds. *added may be NULL. */
enum kg_status kg_store_event_fanout(struct kg_store *st, const char *endpoint, const char *types,
                                     int64_t now, int64_t retry_window_s, size_t *added,
                                     struct kg_err *err);

/* The next pending delivery due at now for endpoint (ev, *attempts), oldest
 * event first, skipping one whose key has an older delivery to that
 * endpoint still pending (events of a key arrive in order). KG_ENOTFOUND:
 * none due. */
enum kg_status kg_store_delivery_due(struct kg_store *st, const char *endpoint, int64_t now,
                                     struct kg_event *ev, int64_t *attempts, struct kg_err *err);

/* Records an attempt: delivered, or (next_at > 0) pending again at next_at,
 * or (next_at 0) failed for good. status is the HTTP status (0: none). */
enum kg_status kg_store_delivery_done(struct kg_store *st, int64_t seq, const char *endpoint,
                                      bool delivered, int64_t next_at, long status,
                                      const char *error, int64_t now, struct kg_err *err);

/* Events newest first, one page (cursor: an event seq), with their
 * delivery counts; tenant NULL = all; type NULL = any; state NULL = any,
 * else only events with a delivery in "pending", "delivered" or
 * "failed". */
struct kg_event_query {
    const char *tenant;
    const char *type;
    const char *state;
    struct kg_page page;
};
typedef bool (*kg_store_event_cb)(const struct kg_event *ev, void *ctx);
enum kg_status kg_store_event_list(struct kg_store *st, const struct kg_event_query *q,
                                   kg_store_event_cb cb, void *ctx, char *next, struct kg_err *err);

/* Makes the failed deliveries of event id (NULL: of every event) pending
 * again, due at now with the attempts counted from zero; *n (may be NULL)
 * gets how many. KG_ENOTFOUND: no such event (tenant: fenced). */
enum kg_status kg_store_event_retry(struct kg_store *st, const char *id, const char *tenant,
                                    int64_t now, size_t *n, struct kg_err *err);

/* The key whose digest this is. KG_ENOTFOUND: none. */
enum kg_status kg_store_key_by_digest(struct kg_store *st,
                                      const unsigned char digest[KG_DIGEST_BYTES],
                                      struct kg_key_rec *out, struct kg_err *err);

/* A reported leak of key id, in ONE transaction: revoked at now when
 * revoke (and not revoked yet), the event ev (key.leaked) and the audit
 * entries. KG_ENOTFOUND: no such key. */
enum kg_status kg_store_key_leaked(struct kg_store *st, const char *id, bool revoke, int64_t now,
                                   struct kg_event *ev, const struct kg_audit_entry *audit,
                                   struct kg_err *err);

/* The clock's alerts at now, each once, in ONE transaction with what
 * marks them sent: key.expiring for a live key whose expires_at lies in
 * (now, now + expiring_lead_s] (0: off; again if expires_at changes),
 * key.expired for one that expired in the last 24 hours, key.unused for a
 * live key unused (or never used since created) for idle_s (0: off; again
 * after a later use). Canary keys get none. *fired (may be NULL) gets
 * how many events were written. */
enum kg_status kg_store_alerts_scan(struct kg_store *st, int64_t now, int64_t expiring_lead_s,
                                    int64_t idle_s, size_t *fired, struct kg_err *err);

/* One quota.threshold alert: subject "key" (id: the key's), "user" (the
 * user's own credits) or "tier" (the user's tier quota; id: the user's),
 * threshold 80 or 100, what was used of limit in the period ("day",
 * "month" or "never") starting at period_start (0 for "never"). */
struct kg_quota_alert {
    const char *subject;
    const char *id;
    int threshold;
    int64_t used, limit;
    const char *period;
    int64_t period_start;
};

/* Writes a's quota.threshold event at now, once per (subject, id,
 * threshold, period_start): in ONE transaction with the mark that makes
 * it once (the alerts table), so a restart in the same period does not
 * send it again, a later period does. *fired (may be NULL): whether it
 * was written now (false: sent before). */
enum kg_status kg_store_quota_alert(struct kg_store *st, const struct kg_quota_alert *a,
                                    int64_t now, bool *fired, struct kg_err *err);

/* Delivery rows by state (the metrics). */
enum kg_status kg_store_event_counts(struct kg_store *st, int64_t *pending, int64_t *delivered,
                                     int64_t *failed, struct kg_err *err);

/* Durable (synchronous=FULL, the default) for key changes; the daemon's
 * usage writer turns it off (NORMAL) for its batched counters. */
enum kg_status kg_store_set_durable(struct kg_store *st, bool durable, struct kg_err *err);

#endif
