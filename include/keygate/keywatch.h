/* keygate/keywatch.h - a well-formed key the key cache does not know,
 * checked against the store before it is refused.
 *
 * The cache learns of changes other processes make (the CLI) from the
 * store's change log, polled by the main thread every 200 ms, so a key
 * created a moment ago could get 401 on its first request. On a lookup
 * miss a request loop asks this module instead, without ever touching the
 * store itself: kg_keywatch_ask() hands the question to the watch's own
 * thread (with its own store handle) and the loop suspends that one
 * request; the thread looks the digest up and, when the store holds the
 * key, brings the cache up to date (kg_keycache_sync: the rows since the
 * last poll, not a rebuild), then calls the request's done function, which
 * resumes it to be decided again. Other requests on the loop never wait.
 *
 * It costs nothing in steady state: at most one question per interval
 * across all threads, so a flood of unknown keys gets one indexed read per
 * interval and every other request of the flood its 401 at once. A key
 * that is stored but still not cached after the sync (a disabled user or
 * tenant) backs the watch off for a second.
 */
#ifndef KEYGATE_KEYWATCH_H
#define KEYGATE_KEYWATCH_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/status.h"
#include "keygate/store.h"

struct kg_keywatch;

/* Starts the watch thread with its own handle on database. interval_ms:
 * the least time between two questions. Caller owns *out. */
enum kg_status kg_keywatch_new(const char *database, struct kg_keycache *kc, int64_t interval_ms,
                               struct kg_keywatch **out, struct kg_err *err);

/* Stops the thread: the question being answered finishes, those still
 * queued get done(arg, false) on the calling thread, and kg_keywatch_ask()
 * takes none from now on. Call it while the request loops still run, so
 * every suspended request is resumed before they stop. Idempotent;
 * NULL-safe. */
void kg_keywatch_stop(struct kg_keywatch *w);

/* kg_keywatch_stop(), then frees. No other thread may still use w.
 * NULL-safe. */
void kg_keywatch_free(struct kg_keywatch *w);

/* Whether a question asked at now_ms (monotonic) could be taken: a cheap
 * check a loop makes before suspending a request. Any thread. */
bool kg_keywatch_due(const struct kg_keywatch *w, int64_t now_ms);

/* Called on the watch thread (or in kg_keywatch_free) when the answer is
 * there: known says whether the cache now holds the key. */
typedef void (*kg_keywatch_done_fn)(void *arg, bool known);

/* After a miss on digest: asks the watch thread, and true when the
 * question was taken: done(arg, known) will be called exactly once, from
 * another thread, possibly before this returns (so the caller suspends its
 * request first). False when it was not (another question was taken too
 * recently, the queue is full, or the watch is stopping): done is never
 * called, and the request is decided with what the cache has. Never
 * blocks; any thread. */
bool kg_keywatch_ask(struct kg_keywatch *w, const unsigned char digest[KG_DIGEST_BYTES],
                     int64_t now_ms, kg_keywatch_done_fn done, void *arg);

/* The same question answered on the calling thread with its own store
 * handle st, for threads that may block on the store (the admin
 * listener): true when the cache now holds the key. Rate-limited with the
 * questions above. */
bool kg_keywatch_recheck(struct kg_keywatch *w, struct kg_store *st,
                         const unsigned char digest[KG_DIGEST_BYTES], int64_t now_ms, int64_t now);

/* ---- change notifications ----
 *
 * The main thread polls the change log every 200 ms, which bounds how long
 * another instance's change takes to reach this one. With a store that
 * notifies (PostgreSQL: LISTEN/NOTIFY, sent by the change log trigger) a
 * listener thread with its own handle calls wake(arg) as soon as another
 * connection commits a change, and after every reconnect (changes may have
 * been missed meanwhile); the poll stays the truth and the fallback. */
struct kg_keylisten;
typedef void (*kg_keylisten_wake_fn)(void *arg);

/* Starts the listener on its own handle on database. *out is NULL (and
 * KG_OK) when the store sends no notifications (SQLite). wake is called on
 * the listener's thread. Caller owns *out. */
enum kg_status kg_keylisten_new(const char *database, kg_keylisten_wake_fn wake, void *arg,
                                struct kg_keylisten **out, struct kg_err *err);

/* Stops the thread (within about half a second) and frees. NULL-safe. */
void kg_keylisten_free(struct kg_keylisten *l);

#endif
