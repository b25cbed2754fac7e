/* keygate/pathnorm.h - one canonical form of a request path.
 *
 * Route rules are matched against this form and the upstream receives it,
 * so what a rule saw is what the upstream gets: percent-encoded unreserved
 * characters are decoded, other escapes are kept with upper-case hex, "."
 * and ".." segments are resolved (never above the root), and runs of "/"
 * collapse to one. Pure; any thread.
 */
#ifndef KEYGATE_PATHNORM_H
#define KEYGATE_PATHNORM_H

#include <stddef.h>
#include "keygate/status.h"

/* Normalises the path part of a request target (no query) of length len
 * into out (outcap bytes; the result is never longer than the input, so
 * len + 1 is enough), NUL-terminated. KG_EINVAL (answer 400) when the path
 * does not start with "/", holds an encoded "/" (%2F), an encoded or raw NUL,
 * a malformed escape, a raw '#' or backslash, or a control character, space or
 * non-ASCII byte. */
enum kg_status kg_pathnorm(const char *path, size_t len, char *out, size_t outcap,
                           struct kg_err *err);

#endif
