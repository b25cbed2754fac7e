/* store/store_int.h - what store.c and its backends share; nothing outside
 * src/store/ includes this.
 *
 * A backend is a table of functions (like curl's struct Curl_ssl). Its handle
 * type embeds struct kg_store as its first member, so store.c sees only the
 * common part and the backend converts back with a cast. store.c has already
 * checked the arguments (non-NULL, NUL-terminated, ids well formed, times
 * positive) before any of these is called, so backends only do storage.
 */
#ifndef KEYGATE_STORE_INT_H
#define KEYGATE_STORE_INT_H

#include "keygate/store.h"

struct kg_store_ops;

/* The common head of every backend's handle. */
struct kg_store {
    const struct kg_store_ops *ops;
};

struct kg_store_ops {
    const char *name; /* "sqlite", as in the "sqlite:PATH" location form */

    /* location has the "name:" prefix already removed. On KG_OK, *out is a
     * handle whose ops member points back at this table. */
    enum kg_status (*open)(const char *location, struct kg_store **out, struct kg_err *err);
    void (*close)(struct kg_store *st);

    enum kg_status (*key_insert)(struct kg_store *st, const struct kg_key_rec *rec,
                                 struct kg_err *err);
    enum kg_status (*key_get)(struct kg_store *st, const char *id, struct kg_key_rec *out,
                              struct kg_err *err);
    enum kg_status (*key_each)(struct kg_store *st, kg_store_key_cb cb, void *ctx,
                               struct kg_err *err);
    enum kg_status (*key_revoke)(struct kg_store *st, const char *id, int64_t now,
                                 struct kg_err *err);
    enum kg_status (*key_rotate)(struct kg_store *st, const char *old_id,
                                 const struct kg_key_rec *fresh, int64_t revoke_at, int64_t now,
                                 struct kg_err *err);
    enum kg_status (*key_touch)(struct kg_store *st, const char *const *ids, const int64_t *times,
                                size_t n, struct kg_err *err);
    enum kg_status (*data_version)(struct kg_store *st, int64_t *out, struct kg_err *err);
    enum kg_status (*set_durable)(struct kg_store *st, bool durable, struct kg_err *err);
};

/* store_sqlite.c */
extern const struct kg_store_ops kg_store_sqlite_ops;

#endif
