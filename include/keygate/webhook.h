/* keygate/webhook.h - what one webhook delivery looks like on the wire.
 *
 * The body is one JSON object: id (the event id, the same at every
 * attempt: receivers deduplicate on it), type, time (RFC 3339), tenant,
 * key {id, prefix, name}, user, data (what the type adds). Never a key.
 * The signature header is
 *   Keygate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of "<t>.<body>">
 * keyed with the webhook's secret (libsodium crypto_auth_hmacsha256), so a
 * receiver can check it and refuse an old t (a replay).
 *
 * Pure apart from kg_webhook_post(), which blocks (libcurl easy): only
 * the event sender's thread calls it.
 */
#ifndef KEYGATE_WEBHOOK_H
#define KEYGATE_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>
#include "keygate/config.h"
#include "keygate/store.h"

#define KG_WEBHOOK_SIG_MAX 96 /* "t=" 20 digits ",v1=" 64 hex, NUL */

/* The body of ev; malloc'd NUL-terminated text, NULL when out of memory. */
char *kg_webhook_body(const struct kg_event *ev);

/* Writes "t=<t>,v1=<hex>" for body under secret into out. */
void kg_webhook_sign(const unsigned char *secret, size_t secret_len, int64_t t, const char *body,
                     size_t body_len, char out[KG_WEBHOOK_SIG_MAX]);

/* POSTs body to w->url with Content-Type application/json, Keygate-Event-Id
 * and Keygate-Signature (signed at now), within timeout_ms. *status gets
 * the HTTP status (0: none); error (errlen bytes) says what went wrong.
 * Returns whether the receiver took it (2xx). */
bool kg_webhook_post(const struct kg_webhook *w, const struct kg_event *ev, const char *body,
                     int64_t now, int64_t timeout_ms, long *status, char *error, size_t errlen);

#endif
