/* keygate/sender.h - the event sender: the thread that turns what happens
 * to keys into signed webhook deliveries.
 *
 * It owns a store handle of its own and, every half second or when woken:
 * writes the events the request loops reported (canary.used,
 * throttle.tripped: a bounded queue, rate-limited per client IP, each
 * with its audit entry in the same transaction); fans every new event in
 * the outbox out to the webhooks of the current config that want its
 * type; and posts each due delivery (keygate/webhook.h), oldest first and
 * in order within a key, retrying a failure after 1 s, 2 s, 4 s, ... (at
 * most an hour apart) until the event is 24 hours old, then marking it
 * failed. Delivery is at least once: a crash between a receiver's 2xx and
 * the store's record of it sends the event again, with the same id.
 *
 * Threads: the report functions from any thread (one short mutex, only on
 * a canary use or a throttle trip); start and stop from the main thread.
 */
#ifndef KEYGATE_SENDER_H
#define KEYGATE_SENDER_H

#include <stdint.h>
#include "keygate/cfgswap.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/status.h"

struct kg_sender;

/* Retry window and backoff ceiling (docs/events.md). */
#define KG_SENDER_RETRY_WINDOW_S 86400
#define KG_SENDER_BACKOFF_MAX_S 3600
/* canary.used events one client IP may fire per minute (burst the same):
 * more uses are still refused and counted, not reported one by one. */
#define KG_SENDER_CANARY_PER_MIN 10

/* Starts the thread. config is borrowed (acquired at each pass); secret
 * gives the audit key. Caller owns *out: kg_sender_stop(). */
enum kg_status kg_sender_start(struct kg_cfgswap *config, const struct kg_secret *secret,
                               struct kg_sender **out, struct kg_err *err);

/* Ends the thread after the delivery in flight (if any; bounded by
 * webhook_timeout), writing what is queued; frees. NULL is a no-op. */
void kg_sender_stop(struct kg_sender *s);

/* Asks for a pass now (a change was just committed). NULL is a no-op. */
void kg_sender_wake(struct kg_sender *s);

/* A canary key was presented: queues canary.used with the client IP, the
 * method and path, the User-Agent (ua may be NULL) and now. Returns false
 * when the IP's report rate or the queue was exceeded (then counted in
 * the metrics only). NULL s: false. */
bool kg_sender_canary(struct kg_sender *s, const struct kg_keyent *ent, const char *client_ip,
                      const char *method, const char *path, const char *ua, int64_t now);

/* client_ip just started its brute-force cool-down: throttle.tripped. */
void kg_sender_tripped(struct kg_sender *s, const char *client_ip, int64_t now);

#endif
