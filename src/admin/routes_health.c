/* admin/routes_health.c - what /livez, /readyz and /metrics say: liveness,
 * readiness (loading keys, starting, ready, draining, or a listener out of
 * descriptors)
 * and the Prometheus text with the key counts, read from the store on the
 * admin thread because revoked keys are not in the snapshot requests use.
 * No key is needed for any of them; admin.c sends the answers.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "keygate/keycache.h"
#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/storefault.h"
#include "keygate/timeutil.h"

/* Whether the key cache was ever loaded, without waiting for a load in
 * progress (it holds the cache's load lock). */
static bool
admin_keys_loaded(struct kg_runtime *rt)
{
    const struct kg_keysnap *snap;
    bool loaded;

    if (rt->keys == NULL)
        return false;
    snap = kg_keycache_acquire(rt->keys);
    loaded = kg_keysnap_built_ms(snap) != 0;
    kg_keycache_release(snap);
    return loaded;
}

unsigned
admin_health(const struct kg_admin *adm, const char *url, char *body, size_t cap)
{
    struct kg_runtime *rt = adm->rt;

    if (strcmp(url, "/livez") == 0) {
        snprintf(body, cap, "{\"status\":\"ok\"}");
        return 200;
    }
    /* A listener out of descriptors: new clients wait in its queue. */
    if (atomic_load(&rt->accept_stalled) > 0 && !atomic_load(&rt->draining)) {
        snprintf(body, cap,
                 "{\"status\":\"unavailable\",\"reason\":\"cannot accept connections: %s\"}",
                 strerror(atomic_load(&rt->accept_errno)));
        return 503;
    }
    /* Still 200 without the store: keys are decided from memory, so a
     * load balancer should keep sending traffic; writes answer 503. */
    if (atomic_load(&rt->ready) && !atomic_load(&rt->draining) && atomic_load(&rt->store_down)) {
        snprintf(body, cap, "{\"status\":\"degraded\",\"reason\":\"database unreachable\"}");
        return 200;
    }
    if (atomic_load(&rt->ready) && !atomic_load(&rt->draining)) {
        char reason[128];

        /* Requests are still decided from memory, so still ready (200):
         * a store every gateway shares would otherwise take them all out
         * of the balancer at once. The body says what is wrong. */
        if (kg_storefault_active(rt->store_fault, reason, sizeof(reason))) {
            json_t *doc = json_pack("{s:s, s:s}", "status", "degraded", "reason", "");
            char *text;
            char full[160];

            snprintf(full, sizeof(full), "store: %s", reason);
            if (doc != NULL)
                json_object_set_new(doc, "reason", json_string(full));
            text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            snprintf(body, cap, "%s", text != NULL ? text : "{\"status\":\"degraded\"}");
            free(text);
            json_decref(doc);
            return 200;
        }
        snprintf(body, cap, "{\"status\":\"ready\"}");
        return 200;
    }
    /* The admin listener starts before the key cache is loaded, the public
     * one after it: "loading keys" until the load is done, "starting" for
     * the moment the public listener takes to open after that. */
    if (atomic_load(&rt->draining))
        snprintf(body, cap, "{\"status\":\"draining\"}");
    else if (!admin_keys_loaded(rt))
        snprintf(body, cap, "{\"status\":\"unavailable\",\"reason\":\"loading keys\"}");
    else
        snprintf(body, cap, "{\"status\":\"starting\"}");
    return 503;
}

char *
admin_metrics_text(struct kg_admin *adm, size_t *len)
{
    struct kg_runtime *rt = adm->rt;
    struct kg_metrics_gauges g = {.reload_age_s = -1};
    struct kg_key_census kc = {0};
    struct kg_err err = {{0}};
    const struct kg_keysnap *snap;

    /* Counted by the store through indexes: reading every key here cost
     * 1.6 s of CPU per scrape at 1,000,000 keys. */
    g.keys_known = kg_store_key_census(adm->store, kg_time_now(), &kc, &err) == KG_OK;
    if (g.keys_known) {
        g.keys_active = kc.active;
        g.keys_expired = kc.expired;
        g.keys_revoked = kc.revoked;
    } else {
        kg_log_warnx("metrics: %s", err.msg);
        g.keys_active = g.keys_expired = g.keys_revoked = 0;
    }
    snap = kg_keycache_acquire(rt->keys);
    g.reload_age_s = (double)(kg_time_mono_ms() - kg_keysnap_built_ms(snap)) / 1000.0;
    kg_keycache_release(snap);
    if (g.reload_age_s < 0)
        g.reload_age_s = 0;
    g.connections = atomic_load(&rt->connections);
    g.events_known =
        kg_store_event_counts(adm->store, &g.deliveries_pending, &g.deliveries_delivered,
                              &g.deliveries_failed, &err) == KG_OK;
    return kg_metrics_render(&g, len);
}
