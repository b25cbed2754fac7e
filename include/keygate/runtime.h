/* keygate/runtime.h - what every event loop of a running daemon shares.
 *
 * Built once by daemon/serve.c. The config is swapped whole on reload
 * (keygate/cfgswap.h): acquire it, never keep a pointer past the request
 * or call that acquired it. The secret is read-only; the key cache
 * publishes snapshots; counters are atomic. Any thread may read.
 */
#ifndef KEYGATE_RUNTIME_H
#define KEYGATE_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include "keygate/cfgswap.h"
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"

struct kg_accesslog;
struct kg_keywatch;
struct kg_worker;
struct kg_throttle;
struct kg_tls;
struct kg_connlimit;
struct kg_storefault;

struct kg_sender;

struct kg_runtime {
    struct kg_cfgswap *config; /* the current config: kg_cfgswap_acquire() it */
    const struct kg_secret *secret;
    struct kg_keycache *keys;
    struct kg_worker *worker; /* blocking jobs (signup, console), or NULL when both are off */
    struct kg_throttle *signup_limit; /* signup attempts per client IP, or NULL */
    /* The brute-force throttle (auth_throttle), both NULL when it is off:
     * failed authentications per client IP, and the cool-down of an IP
     * that ran out of them (1 per cool-down: taken when it trips). */
    struct kg_throttle *auth_failures;
    struct kg_throttle *auth_cooldown;
    /* The console's failed sign-ins per login, and its cool-down (the
     * auth_throttle allowance); both NULL when the console or the throttle
     * is off. Per IP the console uses auth_failures/auth_cooldown. */
    struct kg_throttle *login_failures;
    struct kg_throttle *login_cooldown;
    struct kg_tls *tls; /* both listeners' certificate (server/tls.c), or NULL without TLS */
    struct kg_accesslog *accesslog; /* never NULL while the loops run; may be off */
    struct kg_keywatch *keywatch;   /* asks the store about an unknown key, or NULL */
    _Atomic bool ready;             /* store open and keys loaded */
    _Atomic bool draining;          /* SIGTERM seen: finish what is in flight, accept nothing new */
    _Atomic long connections;
    _Atomic long inflight; /* requests received and not yet completed */
    /* Listeners whose accept() is failing for want of descriptors or
     * memory (server/accept.c), and the errno of the latest failure:
     * /readyz answers 503 while accept_stalled > 0. */
    _Atomic int accept_stalled;
    _Atomic int accept_errno;
    /* The store did not answer the last poll (a PostgreSQL outage): keys
     * are still decided from the cache, /readyz says "degraded". */
    _Atomic bool store_down;
    struct kg_connlimit *per_ip; /* open client connections per IP, all loops */
    /* Whether the store takes writes (keygate/storefault.h); NULL in tests
     * that build a runtime without one. */
    struct kg_storefault *store_fault;
    struct kg_sender *events; /* the event sender (canary uses, throttle trips), or NULL */
};

#endif
