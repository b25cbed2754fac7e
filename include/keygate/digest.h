/* keygate/digest.h - the server secret ("pepper") and key digests.
 *
 * A key is stored and looked up only as keyed BLAKE2b(key) with a 32-byte
 * secret kept outside the database, so a stolen database alone gives an
 * attacker nothing to try offline. The secret lives in sodium_malloc'd
 * memory, read-only after load. Losing the secret file invalidates every key.
 * Digest functions are pure and thread-safe on a loaded secret.
 */
#ifndef KEYGATE_DIGEST_H
#define KEYGATE_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/status.h"
#include "keygate/store.h"

#define KG_SECRET_BYTES 32

struct kg_secret;

/* Loads the secret from path: 64 hex characters (surrounding white space
 * allowed) or exactly 32 raw bytes. If the file does not exist and
 * may_create is true, a new random secret is written there (mode 0600,
 * parent directory created 0700) and *created set. A missing file with
 * may_create false is KG_ENOTFOUND; a malformed one KG_ECORRUPT.
 * Caller owns *out: kg_digest_secret_free(). */
enum kg_status kg_digest_secret_load(const char *path, bool may_create, struct kg_secret **out,
                                     bool *created, struct kg_err *err);

/* Wipes and frees; NULL is a no-op. */
void kg_digest_secret_free(struct kg_secret *s);

/* A secret from raw bytes, for tests and tools. */
enum kg_status kg_digest_secret_from_bytes(const unsigned char bytes[KG_SECRET_BYTES],
                                           struct kg_secret **out);

/* out = BLAKE2b-256 keyed with the secret, over key[0..len). */
void kg_digest_compute(const struct kg_secret *s, const char *key, size_t len,
                       unsigned char out[KG_DIGEST_BYTES]);

/* The key that chains the audit trail: BLAKE2b-256 keyed with the secret
 * over "keygate audit chain v1". Derived, so the secret file stays the one
 * thing to keep, and separate from key digests, so an audit hash says
 * nothing about any key. Give it to kg_store_set_audit_key(); wipe it
 * (sodium_memzero) after. Pure; any thread. */
void kg_digest_audit_key(const struct kg_secret *s, unsigned char out[KG_AUDIT_KEY_BYTES]);

/* The secret's fingerprint, 64 lower-case hex characters: BLAKE2b-256
 * keyed with the secret over "keygate secret fingerprint v1". The store
 * keeps it (kg_store_fingerprint()) so that an instance started with
 * another secret_file is refused; it says nothing about the secret nor
 * about any key. Pure; any thread. */
#define KG_FINGERPRINT_HEX 65
void kg_digest_fingerprint(const struct kg_secret *s, char out[KG_FINGERPRINT_HEX]);

/* Constant-time comparison of two digests. */
/* A 32-byte key for one purpose, derived from the secret and label (keyed
 * BLAKE2b), so that keys for different jobs (console session digests, CSRF
 * tokens) never equal each other or the key digest's. Pure. */
void kg_digest_subkey(const struct kg_secret *s, const char *label, unsigned char out[32]);

bool kg_digest_equal(const unsigned char a[KG_DIGEST_BYTES],
                     const unsigned char b[KG_DIGEST_BYTES]);

#endif
