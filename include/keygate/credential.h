/* keygate/credential.h - finds the API key in a request's headers.
 *
 * Accepted: "Authorization: Bearer <key>", "Authorization: ApiKey <key>"
 * (scheme case-insensitive, RFC 9110 section 11.1), "X-Avala-Api-Key: <key>",
 * and the names set with credential_header. Two different keys, or the same
 * credential header twice, make the request ambiguous: it is refused, never
 * "first wins". Authorization with another scheme (Basic, …) is not a
 * credential of ours. Keys in the query string are never looked at.
 * The struct borrows header values: valid while the request's headers are.
 */
#ifndef KEYGATE_CREDENTIAL_H
#define KEYGATE_CREDENTIAL_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/config.h"
#include "keygate/decide.h" /* struct kg_cred: what this module fills in */

void kg_credential_init(struct kg_cred *c);

/* Feeds one request header. Returns true when name is a credential header
 * of ours (whatever its value), so the proxy knows to strip it. */
bool kg_credential_feed(struct kg_cred *c, const struct kg_config *cfg, const char *name,
                        const char *value, size_t vlen);

enum kg_cred_result kg_credential_result(const struct kg_cred *c);

/* True when name is a credential header (Authorization is one only when its
 * scheme is Bearer or ApiKey: pass the value). kg_credhdr_is_credential()
 * (keygate/credhdr.h), which the upstream filter asks. */
bool kg_credential_is_cred_header(const struct kg_config *cfg, const char *name, const char *value);

#endif
