/* config/rules.c - the rule directives: route (who may call what),
 * cost (what a call spends), tier and default_rate (how fast), and the
 * path patterns and scope words they are written in.
 *
 * Each parser checks one line, complains through the loader as
 * "file:line: message" and appends to the config being built; matching
 * requests against the rules is auth/scope.c's and limit/'s work.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"
#include "keygate/config.h"
#include "keygate/gcra.h"
#include "keygate/scope.h"

/* One rule for scopes everywhere (auth/scope.c): a route or a default that the
 * admin API would refuse on a key could never be granted. */
bool
kg_cfg_scope_ok(const char *s)
{
    return kg_scope_valid(s);
}

/* Request paths are normalised before routes are matched (http/pathnorm.c),
 * so a pattern holding "//", "." or ".." segments could never match: the
 * rule would silently protect nothing. s starts with '/'. The last segment
 * of a prefix is only the start of a segment (/v1/.* matches /v1/.env), so
 * its dots are allowed. */
bool
kg_cfg_pattern_normal(const char *s, size_t len, bool is_prefix)
{
    size_t i = 0;

    while (i < len) {
        size_t j = i + 1, seg;

        while (j < len && s[j] != '/')
            j++;
        seg = j - i - 1;
        if (seg == 0 && j < len)
            return false;
        if (j == len && is_prefix)
            break;
        if ((seg == 1 && s[i + 1] == '.') || (seg == 2 && s[i + 1] == '.' && s[i + 2] == '.'))
            return false;
        i = j;
    }
    return true;
}

/* Checks the pattern of a route line; complains and returns false when bad. */
static bool
pattern_ok(struct kg_cfg_loader *ld, const char *p)
{
    size_t len = strlen(p);
    const char *star = strchr(p, '*');

    if (p[0] != '/' || strpbrk(p, "?# \t") != NULL) {
        kg_cfg_complain(ld, "route path wants /PATH or /PREFIX*, got \"" SHOWN "\"", p);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
            kg_cfg_complain(ld, "route path wants /PATH or /PREFIX*, got \"" SHOWN "\"", p);
            return false;
        }
    }
    if (star != NULL && star != p + len - 1) {
        kg_cfg_complain(ld, "route path may have * only at its end, got \"" SHOWN "\"", p);
        return false;
    }
    if (!kg_cfg_pattern_normal(p, star != NULL ? len - 1 : len, star != NULL)) {
        kg_cfg_complain(
            ld, "route path must be normalised (no //, . or .. segments), got \"" SHOWN "\"", p);
        return false;
    }
    return true;
}

void
kg_cfg_route_cleanup(struct kg_route *r)
{
    free(r->pattern);
    for (size_t i = 0; i < r->nscopes; i++)
        free(r->scopes[i]);
    free(r->scopes);
}

/* route METHOD PATH-PATTERN SCOPE…: every problem on the line is reported. */
enum kg_status
kg_cfg_parse_route(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                   const char *const *argv, size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    struct kg_route r = {.line = ld->line}, *grown;
    const char *method, *pattern;
    enum kg_status rc = KG_EINVAL;
    bool ok = true;
    size_t plen;

    (void)d;
    if (argc < 3) {
        kg_cfg_complain(ld, "route needs METHOD PATH SCOPE…");
        return KG_EINVAL;
    }
    method = argv[0];
    pattern = argv[1];
    if (strcmp(method, "*") != 0 &&
        (!kg_cfg_is_token(method) || strlen(method) >= sizeof(r.method))) {
        kg_cfg_complain(ld, "route wants an HTTP method such as GET, or *, got \"" SHOWN "\"",
                        method);
        ok = false;
    }
    if (!pattern_ok(ld, pattern))
        ok = false;
    for (size_t i = 2; i < argc; i++) {
        if (!kg_cfg_scope_ok(argv[i])) {
            kg_cfg_complain(ld,
                            "route scope wants 1 to 64 characters of A-Z a-z 0-9 _ . : - (* only "
                            "at the end), got \"" SHOWN "\"",
                            argv[i]);
            ok = false;
        }
    }
    if (!ok)
        return KG_EINVAL;

    rc = KG_ENOMEM;
    for (size_t i = 0; method[i] != '\0'; i++)
        r.method[i] = (char)toupper((unsigned char)method[i]);
    plen = strlen(pattern);
    r.is_prefix = pattern[plen - 1] == '*';
    r.pattern = strndup(pattern, r.is_prefix ? plen - 1 : plen);
    r.scopes = calloc(argc - 2, sizeof(*r.scopes));
    if (r.pattern == NULL || r.scopes == NULL)
        goto cleanup;
    for (size_t i = 2; i < argc; i++) {
        r.scopes[r.nscopes] = strdup(argv[i]);
        if (r.scopes[r.nscopes] == NULL)
            goto cleanup;
        r.nscopes++;
    }
    grown = realloc(cfg->routes, (cfg->nroutes + 1) * sizeof(*cfg->routes));
    if (grown == NULL)
        goto cleanup;
    cfg->routes = grown;
    cfg->routes[cfg->nroutes++] = r;
    memset(&r, 0, sizeof(r)); /* handed over: cleanup must not free it */
    rc = KG_OK;

cleanup:
    kg_cfg_route_cleanup(&r);
    return rc;
}

/* cost METHOD PATH-PATTERN UNITS: the pattern follows route's rules. */
enum kg_status
kg_cfg_parse_cost(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                  const char *const *argv, size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    struct kg_cost c = {.line = ld->line}, *grown;
    const char *method, *pattern, *units;
    bool ok = true;
    size_t plen, ulen;

    (void)d;
    if (argc != 3) {
        kg_cfg_complain(ld, "cost wants METHOD PATH UNITS");
        return KG_EINVAL;
    }
    method = argv[0];
    pattern = argv[1];
    units = argv[2];
    if (strcmp(method, "*") != 0 &&
        (!kg_cfg_is_token(method) || strlen(method) >= sizeof(c.method))) {
        kg_cfg_complain(ld, "cost wants an HTTP method such as GET, or *, got \"" SHOWN "\"",
                        method);
        ok = false;
    }
    if (!pattern_ok(ld, pattern))
        ok = false;
    /* Digits only, at most 10 of them: no sign, no fraction, no overflow. */
    ulen = strlen(units);
    c.units = 0;
    if (ulen == 0 || ulen > 10)
        c.units = -1;
    for (size_t i = 0; i < ulen && c.units >= 0; i++) {
        if (units[i] < '0' || units[i] > '9')
            c.units = -1;
        else
            c.units = c.units * 10 + (units[i] - '0');
    }
    if (c.units < 0 || c.units > 1000000000) {
        kg_cfg_complain(ld, "cost units want a whole number 0 to 1000000000, got \"" SHOWN "\"",
                        units);
        ok = false;
    }
    if (!ok)
        return KG_EINVAL;
    for (size_t i = 0; method[i] != '\0'; i++)
        c.method[i] = (char)toupper((unsigned char)method[i]);
    plen = strlen(pattern);
    c.is_prefix = pattern[plen - 1] == '*';
    c.pattern = strndup(pattern, c.is_prefix ? plen - 1 : plen);
    if (c.pattern == NULL)
        return KG_ENOMEM;
    grown = realloc(cfg->costs, (cfg->ncosts + 1) * sizeof(*cfg->costs));
    if (grown == NULL) {
        free(c.pattern);
        return KG_ENOMEM;
    }
    cfg->costs = grown;
    cfg->costs[cfg->ncosts++] = c;
    return KG_OK;
}

bool
kg_cfg_choose_route_case(const char *v, int *out)
{
    if (strcmp(v, "insensitive") == 0)
        *out = KG_ROUTE_CASE_INSENSITIVE;
    else if (strcmp(v, "sensitive") == 0)
        *out = KG_ROUTE_CASE_SENSITIVE;
    else
        return false;
    return true;
}

bool
kg_cfg_choose_upstream_client(const char *v, int *out)
{
    if (strcmp(v, "native") == 0)
        *out = KG_UPSTREAM_NATIVE;
    else if (strcmp(v, "curl") == 0)
        *out = KG_UPSTREAM_CURL;
    else
        return false;
    return true;
}

/* A whole number 1..KG_GCRA_COUNT_MAX without sign or leading zero. */
static bool
parse_count(const char *v, int64_t *out)
{
    int64_t n = 0;

    if (v[0] < '1' || v[0] > '9')
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        n = n * 10 + (*p - '0');
        if (n > KG_GCRA_COUNT_MAX)
            return false;
    }
    *out = n;
    return true;
}

/* "RATE [burst N]" from argv into g; complains (as what) and returns false when bad. */
static bool
parse_rate_burst(struct kg_cfg_loader *ld, const char *what, const char *const *argv, size_t argc,
                 struct kg_gcra *g)
{
    int64_t count, period, burst = 0;
    struct kg_err err = {{0}};

    if (!kg_gcra_parse_rate(argv[0], &count, &period)) {
        kg_cfg_complain(ld,
                        "%s rate wants N/s, N/min or N/h (N 1 to 1000000000), got \"" SHOWN "\"",
                        what, argv[0]);
        return false;
    }
    if (argc >= 2) {
        if (strcmp(argv[1], "burst") != 0 || argc < 3 || !parse_count(argv[2], &burst)) {
            kg_cfg_complain(ld, "%s wants RATE [burst N] with N 1 to 1000000000", what);
            return false;
        }
    }
    if (kg_gcra_init(g, count, period, burst, &err) != KG_OK) {
        kg_cfg_complain(ld, "%s: %s", what, err.msg);
        return false;
    }
    return true;
}

/* rate_limit_default off | RATE [burst N] */
enum kg_status
kg_cfg_parse_default_rate(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                          const char *const *argv, size_t argc)
{
    struct kg_gcra g;

    if (argc == 1 && strcmp(argv[0], "off") == 0) {
        ld->cfg->has_default_rate = false;
        return KG_OK;
    }
    if (argc != 1 && argc != 3) {
        /* With no value there is no argv[0] to quote (found by fuzz_config). */
        kg_cfg_complain_want(ld, d, argc > 0 ? argv[0] : "");
        return KG_EINVAL;
    }
    if (!parse_rate_burst(ld, d->name, argv, argc, &g))
        return KG_EINVAL;
    ld->cfg->has_default_rate = true;
    ld->cfg->default_rate = g;
    return KG_OK;
}

/* tier NAME rate RATE [burst N] [quota N/day|N/month] */
enum kg_status
kg_cfg_parse_tier(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                  const char *const *argv, size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    struct kg_tier t = {.line = ld->line}, *grown;
    size_t i = 4;
    bool ok = true;

    (void)d;
    if (argc < 3 || strcmp(argv[1], "rate") != 0) {
        kg_cfg_complain(ld, "tier wants NAME rate RATE [burst N] [quota N/day|N/month]");
        return KG_EINVAL;
    }
    if (!kg_cfg_check_slug(argv[0])) {
        kg_cfg_complain(
            ld, "tier name wants 1 to 64 characters of A-Z a-z 0-9 _ . -, got \"" SHOWN "\"",
            argv[0]);
        ok = false;
    }
    for (size_t j = 0; ok && j < cfg->ntiers; j++) {
        if (strcmp(cfg->tiers[j].name, argv[0]) == 0) {
            kg_cfg_complain(ld, "tier %s is already defined on line %d", argv[0],
                            cfg->tiers[j].line);
            ok = false;
        }
    }
    if (argc >= 4 && strcmp(argv[3], "burst") == 0) {
        ok = parse_rate_burst(ld, "tier", argv + 2, 3 <= argc - 2 ? 3 : argc - 2, &t.rate) && ok;
        i = 5;
    } else {
        ok = parse_rate_burst(ld, "tier", argv + 2, 1, &t.rate) && ok;
        i = 3;
    }
    if (i < argc) {
        const char *q = i + 1 < argc ? argv[i + 1] : "";
        const char *slash = strchr(q, '/');
        char num[16];

        if (strcmp(argv[i], "quota") != 0 || i + 2 != argc || slash == NULL ||
            (size_t)(slash - q) >= sizeof(num)) {
            kg_cfg_complain(ld, "tier wants NAME rate RATE [burst N] [quota N/day|N/month]");
            return KG_EINVAL;
        }
        memcpy(num, q, (size_t)(slash - q));
        num[slash - q] = '\0';
        if (strcmp(slash + 1, "day") == 0)
            t.quota_period = KG_QUOTA_DAY;
        else if (strcmp(slash + 1, "month") == 0)
            t.quota_period = KG_QUOTA_MONTH;
        if (t.quota_period == KG_QUOTA_NONE || !parse_count(num, &t.quota)) {
            kg_cfg_complain(
                ld, "tier quota wants N/day or N/month (N 1 to 1000000000), got \"" SHOWN "\"", q);
            return KG_EINVAL;
        }
    }
    if (!ok)
        return KG_EINVAL;
    grown = realloc(cfg->tiers, (cfg->ntiers + 1) * sizeof(*cfg->tiers));
    if (grown == NULL)
        return KG_ENOMEM;
    cfg->tiers = grown;
    t.name = strdup(argv[0]);
    if (t.name == NULL)
        return KG_ENOMEM;
    cfg->tiers[cfg->ntiers++] = t;
    return KG_OK;
}

const struct kg_tier *
kg_config_tier(const struct kg_config *cfg, const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->ntiers; i++) {
        if (strcmp(cfg->tiers[i].name, name) == 0)
            return &cfg->tiers[i];
    }
    return NULL;
}
