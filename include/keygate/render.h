/* keygate/render.h - how keys, users, tenants and audit entries look as
 * JSON, to the CLI's --json and to the admin API alike.
 *
 * One place decides each record's members so the two edges cannot drift.
 * Nothing here formats a digest or holds a full key. Pure; any thread.
 */
#ifndef KEYGATE_RENDER_H
#define KEYGATE_RENDER_H

#include <stdbool.h>

#include <jansson.h>

#include "keygate/keys.h"
#include "keygate/store.h"

/* A key as lists show it: name, id, key (masked), prefix, last4, scopes,
 * tenant, user_id, created_at, last_used_at, expires_at, revoked_at, state,
 * rotated_to, canary, allowed_ips (a list, [] = anywhere) and expiring
 * (kg_render_key_expiring() at now, the clock state came from). With detail, also rate,
 * rate_burst, quota_limit, quota_period, quota_used (its period judged at now) and metadata.
 * New reference or NULL. */
json_t *kg_render_key_json(const struct kg_key_rec *rec, enum kg_key_state state, bool detail,
                           int64_t now);

/* The fields shown when a key is made: id, key (as "" for
 * kg_output_json_secret() or kg_json_io_dump_secret() to fill), name, prefix, scopes, tenant,
 * user_id, created_at, expires_at, canary, allowed_ips. New reference or NULL. */
json_t *kg_render_new_key_json(const struct kg_key_rec *rec);

/* An event as GET /v1/events and `keygate events list --json` show it:
 * the webhook body's members (id, type, time, tenant, key {id, prefix,
 * name}, user, data) and deliveries {pending, delivered, failed}. */
json_t *kg_render_event_json(const struct kg_event *ev);

/* What "expiring" means in listings (`keys list`, the key page): an active
 * key whose expiry is at most 14 days after now. */
#define KG_KEY_EXPIRING_S (14 * 86400)
bool kg_render_key_expiring(const struct kg_key_rec *rec, enum kg_key_state state, int64_t now);

/* A tenant: name, display_name, created_at, disabled_at, state ("active" or
 * "disabled"). New reference or NULL. */
json_t *kg_render_tenant_json(const struct kg_tenant_rec *rec);

/* A user: id, tenant, username, email (null when none), first_name,
 * last_name, role (array of scopes), tier, platform_admin, has_password,
 * created_at, disabled_at, state ("active" or "disabled"), quota_limit
 * (its own credits, null = unlimited), quota_period ("day", "month" or
 * null). Never the password hash. New reference or NULL. */
json_t *kg_render_user_json(const struct kg_user_rec *rec);

/* Adds what a user used to o (a user object): quota_used (its own credits)
 * and tier_quota_used (units of its tier's quota) in the current periods.
 * false on failure (out of memory). */
bool kg_render_user_usage(json_t *o, const struct kg_user_usage *used);

/* An audit entry: seq, time, actor, tenant (null when none), action,
 * object, details (the JSON object; a string if it does not parse),
 * prev_hash, hash. New reference or NULL. */
json_t *kg_render_audit_json(const struct kg_audit_entry *e);

/* A key's "usage" member: requests, denied {expired, forbidden,
 * rate_limited}, last_used_at. New reference or NULL. */
json_t *kg_render_key_usage_json(const struct kg_key_usage *u);

/* Adds to o (a key object) its "usage" (when u is not NULL) and, during a
 * rotation's grace period (in_use not NONE), "still_in_use": true, false,
 * or null when unknown. `keys list/show --json` and GET /v1/keys(/{id})
 * both end with this. false when out of memory. */
bool kg_render_key_extras(json_t *o, const struct kg_key_usage *u, enum kg_key_in_use in_use);

#endif
