/* config/catalog.c - the directives the web console reads: `scope NAME
 * "description"` (the scope catalogue its picker and GET endpoint show) and
 * `tenant NAME key_max_lifetime DURATION` (a tenant's key policy), and the
 * lookups of both. A scope a route names but the catalogue lacks still
 * works everywhere; it only has no description.
 */
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"
#include "keygate/config.h"
#include "keygate/timeutil.h"

#define DESCRIPTION_MAX 200

static bool
description_ok(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > DESCRIPTION_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

enum kg_status
kg_cfg_parse_scope(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                   const char *const *argv, size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    struct kg_scope_desc *grown;

    (void)d;
    if (argc != 2) {
        kg_cfg_complain(ld, "scope wants NAME \"description\" (quote a description with blanks)");
        return KG_EINVAL;
    }
    if (!kg_cfg_scope_ok(argv[0]) || strchr(argv[0], '*') != NULL) {
        kg_cfg_complain(ld,
                        "scope name wants 1 to 64 characters of A-Z a-z 0-9 _ . : - (no *), "
                        "got \"" SHOWN "\"",
                        argv[0]);
        return KG_EINVAL;
    }
    if (!description_ok(argv[1])) {
        kg_cfg_complain(ld,
                        "scope %s: the description wants 1 to %d characters without control "
                        "characters",
                        argv[0], DESCRIPTION_MAX);
        return KG_EINVAL;
    }
    for (size_t i = 0; i < cfg->nscope_catalog; i++) {
        if (strcmp(cfg->scope_catalog[i].name, argv[0]) == 0) {
            kg_cfg_complain(ld, "scope %s is already described on line %d", argv[0],
                            cfg->scope_catalog[i].line);
            return KG_EINVAL;
        }
    }
    grown = realloc(cfg->scope_catalog, (cfg->nscope_catalog + 1) * sizeof(*grown));
    if (grown == NULL)
        return KG_ENOMEM;
    cfg->scope_catalog = grown;
    grown[cfg->nscope_catalog] = (struct kg_scope_desc){
        .name = strdup(argv[0]), .description = strdup(argv[1]), .line = ld->line};
    cfg->nscope_catalog++;
    if (grown[cfg->nscope_catalog - 1].name == NULL ||
        grown[cfg->nscope_catalog - 1].description == NULL)
        return KG_ENOMEM;
    return KG_OK;
}

enum kg_status
kg_cfg_parse_tenant(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                    const char *const *argv, size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    struct kg_tenant_policy *grown;
    struct kg_err err = {{0}};
    int64_t secs = 0;

    (void)d;
    if (argc != 3 || strcmp(argv[1], "key_max_lifetime") != 0) {
        kg_cfg_complain(ld, "tenant wants NAME key_max_lifetime DURATION (such as 90d)");
        return KG_EINVAL;
    }
    if (strcmp(argv[0], "*") != 0 && !kg_cfg_check_slug(argv[0])) {
        kg_cfg_complain(ld,
                        "tenant name wants 1 to 64 characters of A-Z a-z 0-9 _ . - or *, "
                        "got \"" SHOWN "\"",
                        argv[0]);
        return KG_EINVAL;
    }
    if (kg_time_parse_duration(argv[2], &secs, &err) != KG_OK) {
        kg_cfg_complain(
            ld, "key_max_lifetime wants a duration such as 30d, 90d or 365d, got \"" SHOWN "\"",
            argv[2]);
        return KG_EINVAL;
    }
    for (size_t i = 0; i < cfg->ntenant_policies; i++) {
        if (strcmp(cfg->tenant_policies[i].tenant, argv[0]) == 0) {
            kg_cfg_complain(ld, "tenant %s already has a policy on line %d", argv[0],
                            cfg->tenant_policies[i].line);
            return KG_EINVAL;
        }
    }
    grown = realloc(cfg->tenant_policies, (cfg->ntenant_policies + 1) * sizeof(*grown));
    if (grown == NULL)
        return KG_ENOMEM;
    cfg->tenant_policies = grown;
    grown[cfg->ntenant_policies] = (struct kg_tenant_policy){
        .tenant = strdup(argv[0]), .key_max_lifetime_s = secs, .line = ld->line};
    cfg->ntenant_policies++;
    return grown[cfg->ntenant_policies - 1].tenant != NULL ? KG_OK : KG_ENOMEM;
}

int64_t
kg_config_key_max_lifetime(const struct kg_config *cfg, const char *tenant)
{
    int64_t any = 0;

    for (size_t i = 0; cfg != NULL && i < cfg->ntenant_policies; i++) {
        if (tenant != NULL && strcmp(cfg->tenant_policies[i].tenant, tenant) == 0)
            return cfg->tenant_policies[i].key_max_lifetime_s;
        if (strcmp(cfg->tenant_policies[i].tenant, "*") == 0)
            any = cfg->tenant_policies[i].key_max_lifetime_s;
    }
    return any;
}

const char *
kg_config_scope_description(const struct kg_config *cfg, const char *name)
{
    for (size_t i = 0; cfg != NULL && i < cfg->nscope_catalog; i++) {
        if (strcmp(cfg->scope_catalog[i].name, name) == 0)
            return cfg->scope_catalog[i].description;
    }
    return NULL;
}
