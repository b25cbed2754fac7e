/* keygate/keyfmt.h - the shape of an API key: generate, check, display.
 *
 * A key is <prefix><body><checksum>: prefix is the configured key_prefix
 * (1..32 of [A-Za-z0-9_]), body is 43 base62 characters from libsodium's
 * CSPRNG (256 bits), checksum is the first 4 bytes of an unkeyed BLAKE2b of
 * prefix+body as 8 lower-case hex characters. The fixed-length tail lets a
 * key be checked without knowing which prefix it was made with, and lets a
 * mistyped or forged key be refused before any lookup. Pure: no I/O, no
 * global state; any thread may call.
 */
#ifndef KEYGATE_KEYFMT_H
#define KEYGATE_KEYFMT_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/status.h"
#include "keygate/store.h"

#define KG_KEY_PREFIX_MAX 32
#define KG_KEY_BODY_LEN 43
#define KG_KEY_CHECK_LEN 8
#define KG_KEY_TAIL_LEN (KG_KEY_BODY_LEN + KG_KEY_CHECK_LEN)
#define KG_KEY_MAX (KG_KEY_PREFIX_MAX + KG_KEY_TAIL_LEN + 1) /* with NUL */
#define KG_KEY_SHOWN_BODY 4 /* body characters kept in the display prefix */

/* Writes a new key with the given prefix into out (KG_KEY_MAX bytes, NUL
 * terminated). KG_EINVAL when the prefix is not 1..32 of [A-Za-z0-9_].
 * The caller should keep out in sodium_malloc'd memory and wipe it. */
enum kg_status kg_keyfmt_generate(const char *prefix, char out[KG_KEY_MAX], struct kg_err *err);

/* True when key[0..len) has the shape of a keygate key and its checksum
 * matches. Constant work for a given length; never reads past len. */
bool kg_keyfmt_check(const char *key, size_t len);

/* Display parts of a well-formed key: prefix plus the first 4 body
 * characters, and the last 4 characters. */
void kg_keyfmt_display(const char *key, size_t len, char prefix_out[KG_DPREFIX_MAX],
                       char last4_out[5]);

/* Masked form for lists: "kg_AbCd…wxyz". out needs KG_DPREFIX_MAX + 8 bytes. */
void kg_keyfmt_mask(const char *dprefix, const char *last4, char *out, size_t outlen);

/* A new public id: kind ("key", "usr", "ten") + "_" + 22 base62 characters. */
void kg_keyfmt_new_id(const char *kind, char out[KG_ID_MAX]);

#endif
