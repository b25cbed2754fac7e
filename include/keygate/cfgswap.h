/* keygate/cfgswap.h - the running configuration, swapped whole on reload.
 *
 * Holds the current struct kg_config as a refcounted snapshot, like the key
 * cache holds keys: a reader acquires the current config and keeps it for as
 * long as one request (or one admin call) needs it, so a request in flight
 * finishes under the config it started with; a reload publishes a complete
 * new config with one pointer swap, and the old one is freed by whoever
 * releases it last. A config is never edited once published.
 *
 * Threads: acquire and release from any thread (acquire takes an internal
 * mutex for a pointer read and an increment; release is one atomic
 * decrement); publish from any thread.
 */
#ifndef KEYGATE_CFGSWAP_H
#define KEYGATE_CFGSWAP_H

#include "keygate/config.h"
#include "keygate/status.h"

struct kg_cfgswap; /* opaque */

/* A swap whose current config is initial. Takes ownership of initial in
 * every case (freed on failure). KG_ENOMEM. */
enum kg_status kg_cfgswap_new(struct kg_config *initial, struct kg_cfgswap **out);

/* Frees the swap and its current config. Every acquired config must have
 * been released first. NULL is a no-op. */
void kg_cfgswap_free(struct kg_cfgswap *sw);

/* The current config, held until kg_cfgswap_release(). Never NULL. */
const struct kg_config *kg_cfgswap_acquire(struct kg_cfgswap *sw);

/* Lets go of a config from kg_cfgswap_acquire() (and only from there: the
 * pointer is the swap's own copy, not the one given to publish). The last
 * holder of a replaced config frees it. NULL is a no-op. */
void kg_cfgswap_release(const struct kg_config *cfg);

/* Makes next the current config for every later acquire. Takes ownership
 * of next in every case (freed on failure, when the current one stays);
 * next is moved, so the caller must not use its pointer again. KG_ENOMEM. */
enum kg_status kg_cfgswap_publish(struct kg_cfgswap *sw, struct kg_config *next);

/* How many configs have been published since kg_cfgswap_new (0 at first). */
unsigned long kg_cfgswap_generation(struct kg_cfgswap *sw);

#endif
