/* manage/instance.c - opens config, store and secret in the one order every
 * command uses. Owns the rule for when a secret may be created (empty store
 * only) and hands the store its audit key; does not keep anything global. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/instance.h"
#include "keygate/log.h"

static bool
any_key(const struct kg_key_rec *rec, void *ctx)
{
    (void)rec;
    *(bool *)ctx = true;
    return false;
}

enum kg_status
kg_instance_open(const char *config_path, kg_config_report_fn report, void *ctx,
                 struct kg_instance **out, struct kg_err *err)
{
    struct kg_instance *inst = calloc(1, sizeof(*inst));
    char fp[KG_FINGERPRINT_HEX], stored[65];
    enum kg_status rc;
    bool has_keys = false;

    *out = NULL;
    if (inst == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    if (config_path == NULL)
        config_path = kg_config_default_path();
    rc = kg_config_load(config_path, report, ctx, &inst->cfg);
    if (rc != KG_OK) {
        /* The config module already reported each problem with file:line. */
        kg_err_set(err, rc == KG_EIO ? KG_EIO : KG_EINVAL, "%s: configuration has errors",
                   config_path != NULL ? config_path : "(built-in)");
        rc = rc == KG_EIO ? KG_EIO : KG_EINVAL;
        goto cleanup;
    }
    kg_log_set_level((enum kg_log_level)inst->cfg->log_level);
    kg_log_set_format((enum kg_log_format)inst->cfg->log_format);
    rc = kg_store_open(inst->cfg->database, &inst->store, err);
    if (rc != KG_OK)
        goto cleanup;
    rc = kg_store_key_each(inst->store, any_key, &has_keys, err);
    if (rc == KG_OK)
        rc = kg_store_fingerprint(inst->store, NULL, stored, err);
    if (rc != KG_OK)
        goto cleanup;
    /* A new secret only for a store no secret has been used with: against
     * a shared store it would make every key there invalid. */
    rc = kg_digest_secret_load(inst->cfg->secret_file, !has_keys && stored[0] == '\0',
                               &inst->secret, &inst->secret_created, err);
    if (rc != KG_OK)
        goto cleanup;
    kg_digest_fingerprint(inst->secret, fp);
    rc = kg_store_fingerprint(inst->store, fp, stored, err);
    if (rc != KG_OK)
        goto cleanup;
    if (strcmp(fp, stored) != 0) {
        rc = kg_err_set(err, KG_ECONFLICT,
                        "%s is not the secret this store was made with (its fingerprint "
                        "differs): every keygate instance sharing a database must use the same "
                        "secret_file",
                        inst->cfg->secret_file);
        goto cleanup;
    }
    {
        unsigned char audit_key[KG_AUDIT_KEY_BYTES];

        /* Every change this instance makes is audited with this key. */
        kg_digest_audit_key(inst->secret, audit_key);
        kg_store_set_audit_key(inst->store, audit_key);
        sodium_memzero(audit_key, sizeof(audit_key));
    }
    *out = inst;
    inst = NULL;
cleanup:
    kg_instance_close(inst);
    return rc;
}

void
kg_instance_close(struct kg_instance *inst)
{
    if (inst == NULL)
        return;
    kg_digest_secret_free(inst->secret);
    kg_store_close(inst->store);
    kg_config_free(inst->cfg);
    free(inst);
}
