/* keygate/decide.h - THE decision: credential + route + clock -> verdict.
 *
 * Pure over its inputs: the key cache snapshot, the config, the secret and
 * the time are passed in, so every outcome is testable without a server.
 * A denial is a normal result, not an error; http/respond.c maps each
 * verdict to a status and body.
 */
#ifndef KEYGATE_DECIDE_H
#define KEYGATE_DECIDE_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"

/* The credential a request presents, as the front end parsed it
 * (http/credential.c fills it in; the decision only reads it). */
enum kg_cred_result {
    KG_CRED_NONE = 0, /* no credential header at all */
    KG_CRED_ONE,      /* exactly one key (possibly repeated across different headers) */
    KG_CRED_BAD,      /* malformed value, two different keys, or a header twice */
};

struct kg_cred {
    const char *key; /* borrowed; not NUL-terminated at len */
    size_t len;
    unsigned seen; /* bit per credential header name already seen */
    bool bad;
};

enum kg_verdict {
    KG_ALLOW = 0,
    KG_DENY_NO_CREDENTIAL, /* 401 */
    KG_DENY_INVALID,       /* 401: malformed, bad checksum, unknown, revoked, ambiguous */
    KG_DENY_EXPIRED,       /* 401 */
    KG_DENY_SCOPE,         /* 403: a scope the route requires is missing */
    KG_DENY_NO_SCOPES,     /* 403: require_scopes on and the key has none */
    KG_DENY_NO_ROUTE,      /* 403: require_scopes on and no route matches */
    KG_DENY_ROLE,          /* 403: the owner's role grants none of the key's scopes */
    KG_DENY_RATE,          /* 429 */
    KG_DENY_QUOTA,         /* 429 */
    KG_DENY_THROTTLED,     /* 429 */
    KG_DENY_LIMITER,       /* 503: shared limits unavailable, limits_on_error closed */
    KG_DENY_IP,            /* 403: the key's IP allowlist does not hold the client (gate.c) */
};

struct kg_decision {
    enum kg_verdict verdict;
    const struct kg_keyent *key;  /* set when the key was found (allowed or not) */
    const struct kg_route *route; /* the matching route, or NULL */
    const char *missing_scope;    /* KG_DENY_SCOPE: the first scope missing */
    /* KG_DENY_INVALID for a well-formed key the snapshot does not hold: its
     * digest, so the caller can ask the store whether the snapshot is behind
     * (a key the CLI made a moment ago). */
    bool unknown;
    unsigned char digest[KG_DIGEST_BYTES];
    /* A canary key (KG_KEYENT_CANARY) was presented: the verdict is
     * KG_DENY_INVALID, exactly as for an unknown key, key stays NULL, and
     * this names the entry so the use can be reported. */
    const struct kg_keyent *canary;
};

/* Decides one request. path is the normalised path; snap and ent borrow
 * from the caller's acquired snapshot. */
void kg_decide(const struct kg_config *cfg, const struct kg_keysnap *snap,
               const struct kg_secret *secret, const struct kg_cred *cred, const char *method,
               const char *path, int64_t now, struct kg_decision *out);

/* True when ent may use scope: granted by one of the key's scopes (or the
 * key has none) and by its owner's role. What the admin API checks its
 * admin scopes (keys:read, keys:write, users:admin, tenants:admin) with, so
 * both listeners apply the same rule. Pure; no allocation. */
bool kg_decide_grants(const struct kg_keyent *ent, const char *scope);

/* A failed authentication (no, an invalid or an expired key): what the
 * brute-force throttle counts on both listeners. */
bool kg_verdict_is_auth_failure(enum kg_verdict v);

/* Short lower-case name of a verdict for logs: "allowed", "invalid", … */
const char *kg_verdict_str(enum kg_verdict v);

#endif
