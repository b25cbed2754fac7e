/* keygate/leaks.h - leaked-key reports (issue 18, item 2).
 *
 * Someone found strings somewhere (a public repository, a paste site) and
 * hands them over with an optional source URL. Each string whose checksum
 * holds and whose keyed digest names a stored key is a leaked key: it is
 * revoked at once (leak_action revoke) or only flagged (leak_action flag),
 * audited as key.leaked with the source, and announced as key.leaked, in
 * one transaction per key. Strings that are not keys are counted and
 * forgotten: nothing about them is stored or logged. A key is never
 * written anywhere; only its id. The CLI and POST /v1/leaks share this.
 */
#ifndef KEYGATE_LEAKS_H
#define KEYGATE_LEAKS_H

#include <stddef.h>
#include <stdint.h>
#include "keygate/keys.h"

#define KG_LEAK_STRINGS_MAX 1000
#define KG_LEAK_SOURCE_MAX 1024

struct kg_leak_result {
    size_t strings;         /* strings looked at */
    size_t not_keys;        /* no valid checksum, or no stored key with that digest */
    size_t keys;            /* stored keys among them (counted once each) */
    size_t revoked;         /* revoked now */
    size_t already_revoked; /* were revoked before */
    size_t flagged;         /* leak_action flag: reported, left working */
};

/* Reports the n strings (each up to its NUL; blanks around it ignored)
 * found at source (may be NULL). fence as in keys.h: a key of another
 * tenant counts as not a key. KG_EINVAL: more than KG_LEAK_STRINGS_MAX
 * strings, or a source longer than KG_LEAK_SOURCE_MAX - 1 bytes or with
 * control characters. */
enum kg_status kg_leaks_report(const struct kg_keys_ctx *kc, const char *fence,
                               const char *const *strings, size_t n, const char *source,
                               enum kg_leak_action action, int64_t now, struct kg_leak_result *out,
                               struct kg_err *err);

#endif
