/* auth/scope.c - scope syntax, wildcard grants and first-match route lookup.
 * Owns no state: routes belong to the config, scopes to the key cache. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keygate/scope.h"

static bool
scope_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '*' || c == '-';
}

bool
kg_scope_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > KG_SCOPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!scope_char_ok(s[i]))
            return false;
        /* '*' only as the last character: "read:*" is a wildcard, "re*d" is a typo. */
        if (s[i] == '*' && i != n - 1)
            return false;
    }
    return true;
}

enum kg_status
kg_scope_list_normalise(const char *list, char *out, size_t outlen, struct kg_err *err)
{
    size_t used = 0;
    const char *p = list;

    out[0] = '\0';
    while (*p != '\0') {
        char one[KG_SCOPE_MAX + 2];
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *s = p;

        while (n > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n == 0 || n > KG_SCOPE_MAX)
            goto bad;
        memcpy(one, s, n);
        one[n] = '\0';
        if (!kg_scope_valid(one))
            goto bad;
        /* Drop duplicates: ",one," bracketed search over what we have. */
        {
            bool dup = false;
            const char *q = out;

            while (*q != '\0' && !dup) {
                const char *qe = strchr(q, ',');
                size_t qn = qe != NULL ? (size_t)(qe - q) : strlen(q);

                dup = qn == n && memcmp(q, one, n) == 0;
                q = qe != NULL ? qe + 1 : q + qn;
            }
            if (!dup) {
                if (used + n + 2 > outlen)
                    return kg_err_set(err, KG_EINVAL, "too many scopes (at most %zu bytes)",
                                      outlen - 1);
                if (used > 0)
                    out[used++] = ',';
                memcpy(out + used, one, n + 1);
                used += n;
            }
        }
        if (end == NULL)
            break;
        p = end + 1;
        continue;
    bad:
        return kg_err_set(err, KG_EINVAL,
                          "malformed scope \"%.*s\": want 1-64 of A-Z a-z 0-9 _ . : - with an "
                          "optional trailing *",
                          (int)(n > 64 ? 64 : n), s);
    }
    if (*list != '\0' && list[strlen(list) - 1] == ',')
        return kg_err_set(err, KG_EINVAL, "malformed scope list \"%.64s\": empty scope", list);
    return KG_OK;
}

bool
kg_scope_grants(const char *have, const char *need)
{
    size_t n = strlen(have);

    if (n > 0 && have[n - 1] == '*')
        return strncmp(have, need, n - 1) == 0;
    return strcmp(have, need) == 0;
}

/* Methods are case-sensitive (RFC 9110), but some frameworks upper-case
 * what they receive, so "post" must not slip past a POST rule; and servers
 * answer HEAD with their GET handler, so a GET rule covers HEAD too. */
static bool
method_matches(const char *rule, const char *method)
{
    return strcmp(rule, "*") == 0 || strcasecmp(rule, method) == 0 ||
           (strcmp(rule, "GET") == 0 && strcasecmp(method, "HEAD") == 0);
}

/* Whether path meets pattern (a prefix when is_prefix). Letters match in
 * any case unless route_case sensitive: an upstream that routes /ADMIN/x
 * like /admin/x must not see it pass as a path no rule covers. */
static bool
pattern_matches(const struct kg_config *cfg, const char *pattern, bool is_prefix, const char *path)
{
    if (cfg->route_case == KG_ROUTE_CASE_SENSITIVE)
        return is_prefix ? strncmp(path, pattern, strlen(pattern)) == 0
                         : strcmp(path, pattern) == 0;
    return is_prefix ? strncasecmp(path, pattern, strlen(pattern)) == 0
                     : strcasecmp(path, pattern) == 0;
}

const struct kg_route *
kg_scope_route(const struct kg_config *cfg, const char *method, const char *path)
{
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct kg_route *r = &cfg->routes[i];

        if (!method_matches(r->method, method))
            continue;
        if (pattern_matches(cfg, r->pattern, r->is_prefix, path))
            return r;
    }
    return NULL;
}

int64_t
kg_scope_cost(const struct kg_config *cfg, const char *method, const char *path)
{
    for (size_t i = 0; i < cfg->ncosts; i++) {
        const struct kg_cost *c = &cfg->costs[i];

        if (!method_matches(c->method, method))
            continue;
        if (pattern_matches(cfg, c->pattern, c->is_prefix, path))
            return c->units;
    }
    return 1;
}

const char *
kg_scope_missing(const char *const *have, size_t nhave, const struct kg_route *r)
{
    for (size_t i = 0; i < r->nscopes; i++) {
        bool ok = false;

        for (size_t j = 0; j < nhave && !ok; j++)
            ok = kg_scope_grants(have[j], r->scopes[i]);
        if (!ok)
            return r->scopes[i];
    }
    return NULL;
}
