/* Fuzz target: route and scope matching (auth/scope.c, with the route and
 * cost lines of config/config.c). Input:
 *
 *     [ROUTE AND COST LINES "\n%%\n"] METHOD PATH "\n" KEY-SCOPES "\n" SCOPE
 *
 * Without the "%%" line the routes of a fixed config are used. The path is
 * normalised first (kg_pathnorm), as the front end does; the key's scope
 * list is checked and normalised the way the admin API and CLI do; then the
 * route, its missing scope and the request's cost are looked up. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "keygate/pathnorm.h"
#include "keygate/scope.h"
#include "keygate/store.h"

static const char fixed_routes[] = "route GET /v1/items/* read:items\n"
                                   "route POST /v1/items write:items read:items\n"
                                   "route * /v1/admin/* admin\n"
                                   "route GET /v1/exact read:*\n"
                                   "cost POST /v1/items* 5\n"
                                   "cost * /v1/expensive 100\n";
static struct kg_config *fixed;

/* Cuts the next line off *p (NUL-terminated in place). */
static char *
next_line(char **p)
{
    char *s = *p, *nl = strchr(s, '\n');

    if (nl != NULL) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = s + strlen(s);
    }
    return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char sep[] = "\n%%\n";
    const uint8_t *cut = memmem(data, size, sep, sizeof(sep) - 1);
    struct kg_config *own = NULL;
    const struct kg_config *cfg;
    struct kg_err err = {{0}};
    char *text, *p, *reqline, *have, *need, *sp, *path, *norm = NULL;
    char list[KG_SCOPES_MAX];
    const char *scopes[16];
    size_t nscopes = 0;

    if (fixed == NULL && (fixed = fz_config(fixed_routes, sizeof(fixed_routes) - 1, NULL)) == NULL)
        abort();
    if (cut != NULL) {
        own = fz_config((const char *)data, (size_t)(cut - data), NULL);
        if (own == NULL)
            return 0;
        size -= (size_t)(cut - data) + sizeof(sep) - 1;
        data = cut + sizeof(sep) - 1;
    }
    cfg = own != NULL ? own : fixed;
    p = text = fz_strndup(data, size);
    reqline = next_line(&p);
    have = next_line(&p);
    need = next_line(&p);

    sp = strchr(reqline, ' ');
    path = sp != NULL ? sp + 1 : (char *)"/";
    if (sp != NULL)
        *sp = '\0';
    norm = malloc(strlen(path) + 1);
    if (norm == NULL)
        abort();
    if (kg_pathnorm(path, strlen(path), norm, strlen(path) + 1, &err) != KG_OK)
        goto cleanup;

    if (kg_scope_list_normalise(have, list, sizeof(list), &err) == KG_OK) {
        for (char *tok = list, *save = NULL; nscopes < 16; tok = NULL) {
            char *s = strtok_r(tok, ",", &save);

            if (s == NULL)
                break;
            if (!kg_scope_valid(s))
                __builtin_trap(); /* the normaliser let a bad scope through */
            scopes[nscopes++] = s;
        }
    }
    const struct kg_route *r = kg_scope_route(cfg, reqline, norm);
    if (r != NULL) {
        const char *missing = kg_scope_missing(scopes, nscopes, r);

        if (missing != NULL && !kg_scope_valid(missing))
            __builtin_trap();
    }
    if (kg_scope_cost(cfg, reqline, norm) < 0)
        __builtin_trap();
    if (kg_scope_valid(need)) {
        for (size_t i = 0; i < nscopes; i++)
            (void)kg_scope_grants(scopes[i], need);
        /* A scope always grants itself, and "*" grants everything. */
        if (!kg_scope_grants(need, need) || !kg_scope_grants("*", need))
            __builtin_trap();
    }

cleanup:
    free(norm);
    free(text);
    kg_config_free(own);
    return 0;
}
