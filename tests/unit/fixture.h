/* tests/unit/fixture.h - the setup most unit tests share: a temporary
 * directory, the KEYGATE_* environment cleared, a config loaded from text
 * the way an operator's file is, and a real SQLite store with a fixed
 * secret for the manage/ tests.
 *
 * Linked into every unit test binary (tests/CMakeLists.txt). The helpers
 * report through cmocka, so they may be called from setup functions and
 * tests alike; nothing here outlives the test that made it.
 */
#ifndef KEYGATE_TEST_FIXTURE_H
#define KEYGATE_TEST_FIXTURE_H

#include <stddef.h>

#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keycache.h"
#include "keygate/keys.h"
#include "keygate/store.h"

#define KG_FX_DIR_MAX 64

/* Makes a fresh empty directory "/tmp/kg-<tag>-test-XXXXXX" into dir.
 * Returns 0, or -1 with dir "" (so kg_fx_rmtree() of it is a no-op). */
int kg_fx_mkdtemp(char dir[KG_FX_DIR_MAX], const char *tag);

/* Removes dir and everything below it; "" is a no-op. */
void kg_fx_rmtree(const char *dir);

/* Writes a fresh self-signed P-256 certificate (subject CN=name, the given
 * serial, valid for an hour) to dir/name.crt and its key to dir/name.key,
 * made at run time: no key material in the tree. Fails the test on error. */
void kg_fx_tls_pair(const char *dir, const char *name, unsigned char serial);

/* Unsets every KEYGATE_* variable the config module reads, so that the
 * caller's environment cannot change what a test sees. */
void kg_fx_clear_env(void);

/* Writes text to a temporary file, loads it with kg_config_load() (each
 * complaint printed through cmocka) and removes the file. Returns 0 with
 * *out owned by the caller, or -1. */
int kg_fx_load_config(const char *text, struct kg_config **out);

/* A store in a temporary directory (dir/keys.db) with a fixed secret, its
 * audit key set, the default config and a manage/ context acting as actor. */
struct kg_fx_store {
    char dir[KG_FX_DIR_MAX];
    char db[128];
    struct kg_store *store;
    struct kg_secret *secret;
    struct kg_config *cfg;
    struct kg_keys_ctx kc;
};

/* Makes one, failing the test on any error. actor must outlive it. */
struct kg_fx_store *kg_fx_store_new(const char *tag, const unsigned char secret[KG_SECRET_BYTES],
                                    const char *actor);

/* Closes everything and removes the directory; NULL is a no-op. */
void kg_fx_store_free(struct kg_fx_store *fx);

/* A store in a temporary directory (dir/keys.db) and an empty key cache:
 * what the key-cache, usage and credit tests share. */
struct kg_fx_cache {
    char dir[KG_FX_DIR_MAX];
    char path[128];
    struct kg_store *st;
    struct kg_limiter *lim; /* handed to kc */
    struct kg_keycache *kc;
};

/* cmocka setup/teardown for a struct kg_fx_cache in *state. */
int kg_fx_cache_setup(void **state);
int kg_fx_cache_teardown(void **state);

/* Fills rec with a plain active key of this id: display parts, a digest of
 * the id (the cache never sees a key, any 32 distinct bytes do), tenant
 * "tenant-<id>", created at created_at, no quota, metadata "{}". */
void kg_fx_key_rec(struct kg_key_rec *rec, const char *id, int64_t created_at);

#endif
