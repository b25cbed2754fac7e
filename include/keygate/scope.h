/* keygate/scope.h - scope names, route rules and wildcard grants.
 *
 * A scope is 1..64 characters of [A-Za-z0-9_.:*-] ("read:items",
 * "datasets.read"). A key's scope ending in '*' grants every scope that
 * starts with what precedes it ("read:*", "*"). Routes are matched in config
 * order against the normalised path; the first match wins. Pure functions;
 * any thread.
 */
#ifndef KEYGATE_SCOPE_H
#define KEYGATE_SCOPE_H

#include <stdbool.h>
#include <stddef.h>
#include "keygate/config.h"
#include "keygate/status.h"

#define KG_SCOPE_MAX 64

/* True when s is a well-formed scope name. */
bool kg_scope_valid(const char *s);

/* Checks a comma-separated list ("a,b"; "" is the empty list) and writes it
 * normalised (blanks around commas removed, duplicates dropped) into out.
 * KG_EINVAL names the bad scope. */
enum kg_status kg_scope_list_normalise(const char *list, char *out, size_t outlen,
                                       struct kg_err *err);

/* True when the key scope have grants the required scope need. */
bool kg_scope_grants(const char *have, const char *need);

/* The first route matching method and the normalised path, or NULL. The
 * path's letters meet the pattern's in any case unless cfg->route_case is
 * KG_ROUTE_CASE_SENSITIVE; kg_scope_cost() matches the same way. */
const struct kg_route *kg_scope_route(const struct kg_config *cfg, const char *method,
                                      const char *path);

/* The credits a request costs: the units of the first cost rule matching
 * method and the normalised path, or 1 when none does. */
int64_t kg_scope_cost(const struct kg_config *cfg, const char *method, const char *path);

/* The first scope of route r not granted by any of the key's scopes, or
 * NULL when the key has them all. */
const char *kg_scope_missing(const char *const *have, size_t nhave, const struct kg_route *r);

#endif
