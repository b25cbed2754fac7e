/* auth/decide.c - WHERE THE KEY IS DECIDED.
 * Order matters and is fixed: credential shape, checksum (refuses forged
 * keys before any lookup), digest lookup, revocation, expiry, then scopes:
 * a required scope must be granted by the key's own scopes (a key without
 * scopes sets no limit of its own) AND by its owner's role. Keys of disabled
 * users and tenants are not in the cache at all. Rate limits and quotas are
 * applied after this by limit/ when allowed. A canary key is refused
 * like an unknown one (issue 18); the IP allowlist is gate.c's. */
#include <string.h>

#include "keygate/decide.h"
#include "keygate/keyfmt.h"
#include "keygate/scope.h"

static enum kg_verdict
check_scopes(const struct kg_config *cfg, const struct kg_keyent *ent, const char *method,
             const char *path, struct kg_decision *out)
{
    out->route = kg_scope_route(cfg, method, path);
    if (cfg->require_scopes && ent->nscopes == 0)
        return KG_DENY_NO_SCOPES;
    /* A role narrowed below every scope of the key leaves it nothing. */
    if (ent->effective_empty)
        return KG_DENY_ROLE;
    if (out->route == NULL)
        return cfg->require_scopes ? KG_DENY_NO_ROUTE : KG_ALLOW;
    /* Avala: a key with no scopes has full access (only without
     * require_scopes), within what its owner's role allows. */
    if (ent->nscopes > 0)
        out->missing_scope = kg_scope_missing(ent->scopes, ent->nscopes, out->route);
    if (out->missing_scope == NULL && !ent->owner->role_all)
        out->missing_scope = kg_scope_missing(ent->owner->role, ent->owner->nrole, out->route);
    return out->missing_scope != NULL ? KG_DENY_SCOPE : KG_ALLOW;
}

bool
kg_decide_grants(const struct kg_keyent *ent, const char *scope)
{
    bool by_key = ent->nscopes == 0, by_role = ent->owner->role_all;

    for (size_t i = 0; i < ent->nscopes && !by_key; i++)
        by_key = kg_scope_grants(ent->scopes[i], scope);
    for (size_t i = 0; i < ent->owner->nrole && !by_role; i++)
        by_role = kg_scope_grants(ent->owner->role[i], scope);
    return by_key && by_role;
}

void
kg_decide(const struct kg_config *cfg, const struct kg_keysnap *snap,
          const struct kg_secret *secret, const struct kg_cred *cred, const char *method,
          const char *path, int64_t now, struct kg_decision *out)
{
    unsigned char digest[KG_DIGEST_BYTES];
    const struct kg_keyent *ent;

    memset(out, 0, sizeof(*out));
    /* The credential arrives parsed: two keys or a malformed one is bad. */
    if (cred->bad) {
        out->verdict = KG_DENY_INVALID;
        return;
    }
    if (cred->key == NULL) {
        out->verdict = KG_DENY_NO_CREDENTIAL;
        return;
    }
    if (!kg_keyfmt_check(cred->key, cred->len)) {
        out->verdict = KG_DENY_INVALID;
        return;
    }
    kg_digest_compute(secret, cred->key, cred->len, digest);
    ent = kg_keysnap_find(snap, digest);
    if (ent == NULL) {
        out->verdict = KG_DENY_INVALID;
        out->unknown = true;
        memcpy(out->digest, digest, sizeof(digest));
        return;
    }
    if (ent->revoked_at != 0 && ent->revoked_at <= now) {
        out->verdict = KG_DENY_INVALID;
        return;
    }
    /* A canary never grants anything: the same answer as an unknown key,
     * with nothing that tells them apart (no key, no rate headers). */
    if (ent->flags & KG_KEYENT_CANARY) {
        out->verdict = KG_DENY_INVALID;
        out->canary = ent;
        return;
    }
    out->key = ent;
    if (ent->expires_at != 0 && ent->expires_at <= now) {
        out->verdict = KG_DENY_EXPIRED;
        return;
    }
    out->verdict = check_scopes(cfg, ent, method, path, out);
}

bool
kg_verdict_is_auth_failure(enum kg_verdict v)
{
    return v == KG_DENY_NO_CREDENTIAL || v == KG_DENY_INVALID || v == KG_DENY_EXPIRED;
}

const char *
kg_verdict_str(enum kg_verdict v)
{
    switch (v) {
    case KG_ALLOW:
        return "allowed";
    case KG_DENY_NO_CREDENTIAL:
        return "no_credential";
    case KG_DENY_INVALID:
        return "invalid";
    case KG_DENY_EXPIRED:
        return "expired";
    case KG_DENY_SCOPE:
        return "forbidden";
    case KG_DENY_NO_SCOPES:
        return "forbidden";
    case KG_DENY_NO_ROUTE:
    case KG_DENY_ROLE:
        return "forbidden";
    case KG_DENY_RATE:
        return "rate_limited";
    case KG_DENY_QUOTA:
        return "quota_exceeded";
    case KG_DENY_THROTTLED:
        return "throttled";
    case KG_DENY_LIMITER:
        return "limiter_unavailable";
    case KG_DENY_IP:
        return "forbidden";
    }
    return "unknown";
}
