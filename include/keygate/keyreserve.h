/* keygate/keyreserve.h - credits_mode strict (issue 15): a key's credits
 * spent across several instances never pass its limit.
 *
 * Each instance spends only credits it holds: blocks of a key's credits
 * reserved in the store (kg_store_credit_reserve), each in a transaction
 * that holds the key's row, so the credits used plus every instance's
 * unspent blocks never pass the limit. A request claims its cost from the
 * block atomically on its loop (never a store call there); a block running
 * low (half spent) queues the key for a refill, which the daemon's main
 * thread makes off the loops (kg_keyreserve_pass), as the Redis lease is
 * refilled ahead of need (keygate/lease.h). A key whose block is empty is
 * refused like an exhausted key (429) until its refill lands. Blocks are
 * min(limit / 16, 1000) credits, at least 1; leases run KG_RESERVE_LEASE_S
 * and are renewed every few seconds, so the credits of an instance that
 * died come back; at a new refill period the block is dropped here (the
 * store drops the rows of ended periods); at shutdown they are handed back.
 *
 * Only a key's own credits are reserved: a user's credits and a tier quota
 * stay checked the shared way (keygate/config.h, credits_mode).
 */
#ifndef KEYGATE_KEYRESERVE_H
#define KEYGATE_KEYRESERVE_H

#include <stdbool.h>
#include <stdint.h>
#include "keygate/config.h"
#include "keygate/keycache.h"
#include "keygate/status.h"
#include "keygate/store.h"

/* How long a reservation outlives its instance's last renewal. */
#define KG_RESERVE_LEASE_S 30

/* A request's claim on its key's block: given back unless charged. */
struct kg_credit_claim {
    struct kg_keystat *stat; /* NULL: nothing claimed */
    int64_t units;
    uint64_t epoch;
};

/* Turns strict mode on for kc: claims queue refills and call wake(arg)
 * (any thread; must not block) so the reserving thread runs soon. */
void kg_keyreserve_enable(struct kg_keycache *kc, void (*wake)(void *), void *arg);

/* The credits a refill asks for: min(limit / 16, 1000), at least 1. */
int64_t kg_keyreserve_block(int64_t limit);

/* The strict twin of kg_keycache_spend_allow(): the owner's credits and
 * tier quota are checked as there; the key's own credits (when it has a
 * limit and cost > 0) are claimed from the block this instance holds,
 * atomically, into *claim. false: refused (nothing claimed). Lock-free;
 * never touches the store. */
bool kg_keyreserve_claim(struct kg_keycache *kc, const struct kg_keyent *ent,
                         const struct kg_tier *tier, int64_t cost, int64_t now,
                         struct kg_credit_claim *claim);

/* The claim was charged (kg_keycache_charge): it is spent; forget it. */
void kg_keyreserve_spent(struct kg_credit_claim *claim);

/* The claim was not charged (refused later, not a 2xx): its credits go
 * back to the block, unless the block was voided since. Idempotent. */
void kg_keyreserve_give_back(struct kg_credit_claim *claim);

/* The reserving thread's work (the daemon's main thread; blocks on st):
 * refills every queued key, drops the blocks of an ended period, renews
 * the leases every few seconds and, when renewals have failed for half a
 * lease, drops every block (the store may let them lapse). now: Unix
 * seconds; mono_ms: the monotonic clock. */
enum kg_status kg_keyreserve_pass(struct kg_keycache *kc, struct kg_store *st, int64_t now,
                                  int64_t mono_ms, struct kg_err *err);

/* Drops every block this instance holds and deletes its reservations in
 * st (at shutdown, after the last flush; or when strict mode is turned
 * off). */
enum kg_status kg_keyreserve_release(struct kg_keycache *kc, struct kg_store *st,
                                     struct kg_err *err);

#endif
