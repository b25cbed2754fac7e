/* keygate/instance.h - what every command opens first: config, store, secret.
 *
 * One place decides the startup order and the rule for the secret file: a
 * new secret is generated only when the store holds no keys (a first start);
 * if keys exist and the secret is missing, opening fails, because a new
 * secret would silently invalidate every key.
 */
#ifndef KEYGATE_INSTANCE_H
#define KEYGATE_INSTANCE_H

#include <stdbool.h>
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/status.h"
#include "keygate/store.h"

struct kg_instance {
    struct kg_config *cfg;
    struct kg_store *store;
    struct kg_secret *secret;
    bool secret_created; /* this open generated the secret file */
};

/* Loads the config from config_path (NULL: kg_config_default_path()),
 * reporting each config problem through report; then opens the store,
 * loads (or, on an empty store, creates) the secret and gives the store
 * its audit key (kg_digest_audit_key()).
 * KG_EINVAL: config errors (already reported; exit 2). Other statuses carry
 * one line in err. Caller owns *out: kg_instance_close(). */
enum kg_status kg_instance_open(const char *config_path, kg_config_report_fn report, void *ctx,
                                struct kg_instance **out, struct kg_err *err);

/* NULL-safe. */
void kg_instance_close(struct kg_instance *inst);

#endif
