/* keygate/storefault.h - whether the store is taking writes, for the daemon.
 *
 * A failed store operation (disk full, file read-only, locked past
 * busy_timeout, an I/O error) is noted here by whoever met it: the admin
 * thread, the main thread's usage flush and change-log poll, the signup
 * worker. Each is counted in keygate_store_errors_total; a failure of the
 * store itself (KG_EIO, KG_ECORRUPT) also marks the store faulted, with its
 * words, until the main thread's write probe succeeds again (it probes once
 * a second while faulted). /readyz reports the fault; authentication goes
 * on from the key cache meanwhile. Thread-safe.
 */
#ifndef KEYGATE_STOREFAULT_H
#define KEYGATE_STOREFAULT_H

#include <stdbool.h>
#include <stddef.h>

#include "keygate/status.h"

struct kg_storefault;

/* NULL when out of memory. Free with kg_storefault_free() (NULL ok). */
struct kg_storefault *kg_storefault_new(void);
void kg_storefault_free(struct kg_storefault *f);

/* Whether rc is the store failing (rather than the caller's input). */
bool kg_storefault_is_store(enum kg_status rc);

/* A store operation failed with rc; words is its kg_err message
 * ("path: what: SQLite's words"; only the last part is kept). Counts it;
 * marks the store faulted when kg_storefault_is_store(rc). f may be NULL
 * (only counted). */
void kg_storefault_fail(struct kg_storefault *f, enum kg_status rc, const char *words);

/* A write went through: the fault, if any, is over. Returns true when
 * there was one. f may be NULL. */
bool kg_storefault_clear(struct kg_storefault *f);

/* True while faulted; then reason holds the store's words (cut to cap). */
bool kg_storefault_active(struct kg_storefault *f, char *reason, size_t cap);

#endif
