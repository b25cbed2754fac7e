/* auth/gate.c - WHERE A REQUEST IS ADMITTED OR REFUSED.
 * The order is the contract: an IP in its throttle cool-down is refused
 * before any digest; a key the cache misses is checked against the store
 * (through the caller) before it is refused; credits are asked before the
 * rate limits, so a request refused for either spends neither; only then
 * is the use counted. Nothing here talks to libmicrohttpd or the store. */
#include <string.h>

#include "keygate/gate.h"
#include "keygate/keywatch.h"
#include "keygate/scope.h"
#include "keygate/throttle.h"

static bool
is_scope_verdict(enum kg_verdict v)
{
    return v == KG_ALLOW || v == KG_DENY_SCOPE || v == KG_DENY_NO_SCOPES || v == KG_DENY_NO_ROUTE ||
           v == KG_DENY_ROLE;
}

/* Checks the key's and its owner's tier limits for a request whose key is
 * valid (count: spend one, else only read, for answers such as a 403). A
 * key without a rate of its own has the config default; a tier the config
 * does not name has no limit. Returns the limiter's answer: KG_LIMIT_WAIT
 * with in->limit_wait ready to be asked, KG_LIMIT_DOWN with out->lv
 * allowing and out->rated false. */
static enum kg_limit_answer
rate_check(const struct kg_gate_in *in, const struct kg_keyent *key, const struct kg_tier *tier,
           bool count, struct kg_admission *out)
{
    const struct kg_config *cfg = in->cfg;
    struct kg_limit_req lr = {
        .key_id = key->id,
        .key_rate = key->has_rate           ? key->rate
                    : cfg->has_default_rate ? &cfg->default_rate
                                            : NULL,
        .user_id = key->user_id,
        .tier_rate = tier != NULL ? &tier->rate : NULL,
    };
    enum kg_limit_answer a;

    if (count && in->limit_waited && in->limit_wait != NULL) {
        /* Resumed: the shared limiter's answer is this request's. */
        a = in->limit_wait->answer;
        if (a == KG_LIMIT_DONE)
            out->lv = in->limit_wait->verdict;
    } else {
        a = kg_limiter_check(in->env->limiter, &lr, in->now_us, count, &out->lv);
    }
    if (a == KG_LIMIT_WAIT && (in->limit_wait == NULL || in->limit_waited))
        a = KG_LIMIT_DOWN;
    if (a == KG_LIMIT_WAIT) {
        kg_limiter_wait_init(in->limit_wait, &lr);
        return a;
    }
    if (a == KG_LIMIT_DOWN) {
        memset(&out->lv, 0, sizeof(out->lv));
        out->lv.allowed = true;
        return a;
    }
    out->rated = true;
    out->key_policy = key->has_rate ? "key" : "default";
    out->tier = key->tier;
    return a;
}

/* Counts the answer to a key that was found (an invalid key names none):
 * after the decision and the rate step. A health check is not a use of the
 * API and counts nothing. */
static void
count_usage(const struct kg_decision *d, const struct kg_limit_verdict *lv, bool health)
{
    if (d->key == NULL || health)
        return;
    switch (d->verdict) {
    case KG_ALLOW:
        kg_keycache_count(d->key, lv->allowed ? KG_USAGE_REQUEST : KG_USAGE_DENIED_RATE);
        break;
    case KG_DENY_EXPIRED:
        kg_keycache_count(d->key, KG_USAGE_DENIED_EXPIRED);
        break;
    case KG_DENY_SCOPE:
    case KG_DENY_NO_SCOPES:
    case KG_DENY_NO_ROUTE:
    case KG_DENY_ROLE:
    case KG_DENY_IP:
        kg_keycache_count(d->key, KG_USAGE_DENIED_FORBIDDEN);
        break;
    default:
        break;
    }
}

static void
refuse(struct kg_admission *out, enum kg_verdict v, enum kg_outcome o)
{
    out->action = KG_GATE_REFUSE;
    out->d.verdict = v;
    out->outcome = o;
}

void
kg_gate_admit(const struct kg_gate_in *in, struct kg_admission *out)
{
    const struct kg_gate_env *env = in->env;
    const struct kg_config *cfg = in->cfg;
    const struct kg_tier *tier;
    const struct kg_keyent *key;
    enum kg_limit_answer limit = KG_LIMIT_DONE;
    bool over_quota = false, limiter_closed = false;
    int64_t retry_ms = 0;

    memset(out, 0, sizeof(*out));
    out->lv.allowed = true;
    out->outcome = KG_OUTCOME_NONE;
    /* An IP in its cool-down is refused whatever key it sends, so guessing
     * costs no digest. */
    if (kg_throttle_cooling(env->auth_cooldown, in->client_ip, in->now_ms, &retry_ms)) {
        refuse(out, KG_DENY_THROTTLED, KG_OUTCOME_RATE_LIMITED);
        out->retry_after_s = kg_throttle_retry_after_s(retry_ms);
        return;
    }
    out->snap = kg_keycache_acquire(env->keys);
    kg_decide(cfg, out->snap, env->secret, in->cred, in->method, in->path, in->now, &out->d);
    /* A key the CLI made a moment ago may be in the store before the next
     * poll: the key watch asks (rate-limited) while this request alone is
     * suspended, then it is admitted again from the top. */
    if (out->d.unknown && !in->rechecked && kg_keywatch_due(env->keywatch, in->now_ms)) {
        kg_gate_release(out);
        out->action = KG_GATE_RECHECK;
        return;
    }
    if (kg_verdict_is_auth_failure(out->d.verdict)) {
        int64_t wait_ms;

        kg_throttle_fail(env->auth_failures, env->auth_cooldown, in->client_ip, in->now_ms);
        /* This failure started the cool-down: throttle.tripped (issue 18). */
        out->tripped = env->auth_cooldown != NULL &&
                       kg_throttle_cooling(env->auth_cooldown, in->client_ip, in->now_ms, &wait_ms);
    }
    key = out->d.key;
    /* A key held to an address range refuses every other address, whatever
     * its scopes would say; such a request spends no token (issue 18). */
    if (key != NULL && (key->flags & KG_KEYENT_IPALLOW) && is_scope_verdict(out->d.verdict) &&
        !kg_keycache_ip_permits(env->keys, key, in->client_ip))
        out->d.verdict = KG_DENY_IP;
    /* The owner's tier, looked up once for the limits below. */
    tier = key != NULL ? kg_config_tier(cfg, key->tier) : NULL;
    if (out->d.verdict == KG_ALLOW && !in->health) {
        out->cost = kg_scope_cost(cfg, in->method, in->path);
        /* The key's credits, its owner's and the owner's tier quota, asked
         * first: a request refused for them must not spend a rate token. */
        if (cfg->credits_mode == KG_CREDITS_STRICT)
            over_quota =
                !kg_keyreserve_claim(env->keys, key, tier, out->cost, in->now, &out->claim);
        else
            over_quota = !kg_keycache_spend_allow(key, tier, out->cost, in->now);
    }
    if (key != NULL && is_scope_verdict(out->d.verdict)) {
        kg_keycache_touch(key, in->now);
        /* Only a request that would be proxied spends; every other answer
         * to a valid key shows where it stands. */
        limit = rate_check(in, key, tier, out->d.verdict == KG_ALLOW && !in->health && !over_quota,
                           out);
    }
    if (limit == KG_LIMIT_WAIT) {
        /* Admitted again from the top once the answer is there (and claims
         * again then). */
        kg_keyreserve_give_back(&out->claim);
        kg_gate_release(out);
        out->action = KG_GATE_LIMIT_WAIT;
        return;
    }
    if (limit == KG_LIMIT_DOWN) {
        /* Only a key with a limit gets here; keys without one never ask. */
        limiter_closed = cfg->limits_on_error == KG_LIMITS_CLOSED;
        kg_metrics_limiter_unavailable(!limiter_closed);
    }
    /* A request refused for its credits, or because its limits cannot be
     * asked, is not let through: not counted. */
    if (!over_quota && !limiter_closed)
        count_usage(&out->d, &out->lv, in->health);

    if (in->health) {
        /* /health tells whether the key is valid, whatever the routes say. */
        out->action = is_scope_verdict(out->d.verdict) ? KG_GATE_HEALTH : KG_GATE_REFUSE;
    } else if (out->d.verdict != KG_ALLOW) {
        refuse(out, out->d.verdict, kg_metrics_outcome_of(out->d.verdict));
    } else if (over_quota) {
        int64_t wait = kg_keycache_spend_retry_after(key, tier, out->cost, in->now);

        refuse(out, KG_DENY_QUOTA, KG_OUTCOME_QUOTA_EXCEEDED);
        /* Credits that refill: when the last refusing limit starts again. */
        if (wait > 0)
            out->retry_after_s = wait > 86400 * 31 ? 86400 * 31 : (int)wait;
    } else if (limiter_closed) {
        refuse(out, KG_DENY_LIMITER, KG_OUTCOME_NONE);
    } else if (!out->lv.allowed) {
        refuse(out, KG_DENY_RATE, KG_OUTCOME_RATE_LIMITED);
    } else if (cfg->mode == KG_MODE_FORWARD_AUTH) {
        /* No upstream status ever comes back: the allow is the charge. */
        kg_keycache_charge(kg_keycache_stat(key), out->cost);
        kg_keyreserve_spent(&out->claim);
        out->action = KG_GATE_ALLOW;
        out->outcome = KG_OUTCOME_ALLOWED;
    } else {
        /* Every key is charged, with a limit or not, so its credits used
         * are known when it gets one. */
        out->action = KG_GATE_PROXY;
        out->outcome = KG_OUTCOME_ALLOWED;
        out->charge_to = kg_keycache_stat(key);
    }
    /* Anything but a request on its way upstream spends nothing. */
    if (out->action != KG_GATE_PROXY)
        kg_keyreserve_give_back(&out->claim);
}

void
kg_gate_release(struct kg_admission *adm)
{
    if (adm->snap != NULL)
        kg_keycache_release(adm->snap);
    adm->snap = NULL;
}
