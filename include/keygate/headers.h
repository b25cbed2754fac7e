/* keygate/headers.h - which headers cross the gateway, in both directions.
 *
 * Request: hop-by-hop headers and every header named in Connection (RFC
 * 9110 7.6.1) are removed, as are Host, Content-Length, Transfer-Encoding,
 * Expect, Forwarded, the credential headers (unless forward_credentials on), every
 * client-supplied X-Keygate-*, the X-Forwarded-* keygate sets itself,
 * X-Real-IP from an untrusted peer and names with "_" (underscores_in_headers).
 * Response: hop-by-hop, Connection-named, framing and Date headers are
 * removed (libmicrohttpd writes its own). Pure; any thread.
 */
#ifndef KEYGATE_HEADERS_H
#define KEYGATE_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/config.h"

#define KG_REQUEST_ID_MAX 129

/* True when name is listed in conn_tokens (the comma-separated values of
 * every Connection header, or NULL) or is a fixed hop-by-hop header. */
bool kg_headers_hop_by_hop(const char *name, const char *conn_tokens);

/* Whether s[0..n) is an HTTP token (RFC 9110 5.6.2): a method or a field
 * name that may be written upstream. */
bool kg_headers_is_token(const char *s, size_t n);

/* True when the client header name: value must not reach the upstream.
 * trusted_peer: the socket peer is in trusted_proxies (its X-Real-IP is
 * kept; anyone else's is dropped). A name holding "_" is dropped unless
 * underscores_in_headers on, and even then when its "-" spelling is one
 * keygate sets or strips (X_Keygate_Tenant, X_Forwarded_For, X_Real_IP,
 * X_Request_Id, credential headers, hop-by-hop headers). */
bool kg_headers_drop_request(const struct kg_config *cfg, const char *name, const char *value,
                             const char *conn_tokens, bool trusted_peer);

/* True when the upstream header must not reach the client. */
bool kg_headers_drop_response(const char *name, const char *conn_tokens);

/* A sane client X-Request-Id: 1..128 of [A-Za-z0-9._:-]. */
bool kg_headers_request_id_ok(const char *v);

/* A fresh request id: 32 lower-case hex characters from the CSPRNG. */
void kg_headers_new_request_id(char out[KG_REQUEST_ID_MAX]);

#endif
