/* keygate/keyindex.h - the key cache's digest index: lock-free reads,
 * in-place updates, deferred freeing.
 *
 * One open-addressing table of entry pointers, shared by every thread.
 * Readers never wait and never see a half-built entry: a writer builds an
 * entry completely, then publishes it with one atomic store into its slot
 * (a new key, or replacing the entry of the same digest), or stores a
 * tombstone (a removed key). What leaves the table (replaced or removed
 * entries, an outgrown slot array) is retired, not freed: it is freed when
 * every reader that could have seen it is gone.
 *
 * Readers hold a generation (struct kg_keysnap) from acquire to release;
 * every lookup sees the table as it is now, and every entry found stays
 * valid until that generation is released. kg_keyindex_publish() closes
 * the current generation: what was retired since the previous publish
 * belongs to it, and is freed once it and every older generation are
 * released (each generation holds the next one, so they end in order).
 * A change thus costs memory for the entries it replaced, never a copy
 * of the table.
 *
 * Threads: acquire, release, find and count from any thread. Everything
 * else (put, remove, sweep, publish) from one writer at a time, serialised
 * by the caller (auth/keycache.c holds its load mutex).
 */
#ifndef KEYGATE_KEYINDEX_H
#define KEYGATE_KEYINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/status.h"
#include "keygate/store.h"

struct kg_keyent;
struct kg_keysnap;
struct kg_keyindex;

/* An empty index. Caller owns it: kg_keyindex_free(). drop frees an
 * entry the index owns (when it is replaced or removed and no reader can
 * hold it any more, or with the index); it may run on any thread that
 * releases a generation. */
enum kg_status kg_keyindex_new(void (*drop)(struct kg_keyent *), struct kg_keyindex **out);

/* Frees the index, every entry in it and everything retired. Every
 * generation must have been released. NULL is a no-op. */
void kg_keyindex_free(struct kg_keyindex *ix);

/* The current generation, held until kg_keyindex_release(). Never NULL. */
const struct kg_keysnap *kg_keyindex_acquire(struct kg_keyindex *ix);
void kg_keyindex_release(const struct kg_keysnap *snap);

/* Writer only. Room for n entries without growing (a full load knows how
 * many keys it will put). KG_ENOMEM when the table could not grow. */
enum kg_status kg_keyindex_reserve(struct kg_keyindex *ix, size_t n);

/* Writer only. Publishes ent (the index owns it from here and frees it
 * through drop), replacing and retiring the entry
 * with the same digest if there is one. KG_ENOMEM when the table could not
 * grow (ent is then dropped and nothing changed). */
enum kg_status kg_keyindex_put(struct kg_keyindex *ix, struct kg_keyent *ent);

/* Writer only. Removes and retires the entry with this digest, if there is
 * one. KG_ENOMEM when the retired list could not grow: nothing changed
 * (the caller tries again at its next sync; no entry is ever leaked). */
enum kg_status kg_keyindex_remove(struct kg_keyindex *ix,
                                  const unsigned char digest[KG_DIGEST_BYTES]);

/* Writer only. The entry with this digest as the writer sees it, or NULL. */
const struct kg_keyent *kg_keyindex_get(const struct kg_keyindex *ix,
                                        const unsigned char digest[KG_DIGEST_BYTES]);

/* Writer only. Calls keep for every entry; removes (and retires) those it
 * returns false for. KG_ENOMEM when the retired list could not grow: the
 * sweep stopped there, every entry not yet looked at still in place. */
enum kg_status kg_keyindex_sweep(struct kg_keyindex *ix,
                                 bool (*keep)(const struct kg_keyent *, void *), void *ctx);

/* Writer only. Ends the current generation (see above) and records
 * synced_ms (monotonic) as the time the index was last known current,
 * what kg_keysnap_built_ms() reports (0: leaves it as it was). */
void kg_keyindex_publish(struct kg_keyindex *ix, int64_t synced_ms);

/* Number of entries (any thread). */
size_t kg_keyindex_count(const struct kg_keyindex *ix);

#endif
