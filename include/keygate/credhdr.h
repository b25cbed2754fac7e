/* keygate/credhdr.h - which request headers carry a key of ours.
 *
 * "Authorization" with the scheme Bearer or ApiKey (case-insensitive, RFC
 * 9110 section 11.1), "X-Avala-Api-Key", and the names set with
 * credential_header. Shared by the front end, which takes the key from them
 * (http/credential.c), and the upstream request, which strips them
 * (proxy/headers.c). Pure; any thread.
 */
#ifndef KEYGATE_CREDHDR_H
#define KEYGATE_CREDHDR_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/config.h"

#define KG_CREDHDR_AUTHORIZATION 1u
#define KG_CREDHDR_AVALA 2u
#define KG_CREDHDR_EXTRA0 4u /* << i for the i-th credential_header */

/* A bit of its own per credential header name (so a header sent twice is
 * seen), or 0 when name is none. */
unsigned kg_credhdr_bit(const struct kg_config *cfg, const char *name);

/* v[0..*len) without optional white space around it. */
const char *kg_credhdr_trim(const char *v, size_t *len);

/* Whether an Authorization value starts with Bearer or ApiKey and a blank:
 * *rest, *rlen then hold what follows. */
bool kg_credhdr_scheme(const char *v, size_t len, const char **rest, size_t *rlen);

/* True when name: value carries a credential of ours (Authorization only
 * with our schemes). */
bool kg_credhdr_is_credential(const struct kg_config *cfg, const char *name, const char *value);

#endif
