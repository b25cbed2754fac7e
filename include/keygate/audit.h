/* keygate/audit.h - the audit trail: building entries, reading, verifying.
 *
 * Every lifecycle change (key.create, key.update, key.rotate, key.revoke,
 * user.create, user.update, user.disable, tenant.create, tenant.update,
 * signup) is appended by keys.c and accounts.c inside the store transaction
 * that makes the change; failed admin authentications (admin.auth_failed)
 * through kg_audit_auth_failed(). Each entry carries time, actor, tenant,
 * action, object and details (JSON of what changed: never a key, digest,
 * password or hash) and a BLAKE2b hash chained to the previous entry with a
 * key derived from the server secret (store.h, kg_digest_audit_key()), so
 * kg_audit_verify() finds the first entry edited, inserted or deleted by
 * hand. The store has no delete: the trail is append-only.
 */
#ifndef KEYGATE_AUDIT_H
#define KEYGATE_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keygate/digest.h"
#include "keygate/keys.h"
#include "keygate/status.h"
#include "keygate/store.h"

#define KG_ACTOR_SIGNUP "signup"

/* Fills e (next = NULL) for appending: copies actor, tenant (NULL = "" =
 * not about one tenant), action and object (NULL = ""), and dumps details
 * (borrowed; NULL = {}) as compact JSON. KG_EINVAL: a field too long or
 * holding a newline, no actor or action; KG_ELIMIT: details too long. */
enum kg_status kg_audit_entry_init(struct kg_audit_entry *e, int64_t now, const char *actor,
                                   const char *tenant, const char *action, const char *object,
                                   const json_t *details, struct kg_err *err);

/* The CLI's actor: "cli:" and the name of the effective user
 * (getpwuid(geteuid())), or "cli:uid<N>" when it has none. Characters
 * outside [A-Za-z0-9_.@-] become '_'. */
void kg_audit_cli_actor(char out[KG_AUDIT_ACTOR_MAX]);

/* Appends one admin.auth_failed entry (actor "anonymous", no tenant) in a
 * transaction of its own. presented[0..len) is the credential as the
 * client sent it (may be NULL): only its display prefix is recorded, and
 * only when it has the shape of a key; otherwise the object is "none".
 * reason ("invalid", "expired", ...) goes into details. Never records the
 * key itself. */
enum kg_status kg_audit_auth_failed(struct kg_store *st, int64_t now, const char *presented,
                                    size_t len, const char *reason, struct kg_err *err);

/* Which entries a listing walks. */
struct kg_audit_filter {
    const char *tenant; /* NULL = all (with a fence: the fence's); another tenant: none */
    bool newest_first;
};

/* Entries one page at a time (page NULL: all), as kg_store_audit_list().
 * With a fence, only entries about the fence's tenant. */
enum kg_status kg_audit_list(const struct kg_keys_ctx *kc, const char *fence,
                             const struct kg_audit_filter *filter, const struct kg_page *page,
                             kg_store_audit_cb cb, void *ctx, char *next, struct kg_err *err);

/* What kg_audit_verify() found. */
struct kg_audit_report {
    bool ok;
    int64_t entries;    /* entries walked */
    int64_t broken_seq; /* when !ok: the first entry that does not hold */
    char why[160];      /* when !ok: "entry is missing", "hash does not match its contents", … */
};

/* Walks the whole chain with the audit key derived from secret: sequence
 * numbers 1, 2, … without gaps, each prev_hash equal to the previous hash,
 * each hash equal to the hash of the entry's fields, and the chain head
 * equal to the last entry. A broken chain is a normal result (out->ok
 * false, KG_OK); errors are for a store that cannot be read. */
enum kg_status kg_audit_verify(struct kg_store *st, const struct kg_secret *secret,
                               struct kg_audit_report *out, struct kg_err *err);

#endif
