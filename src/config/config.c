/* config/config.c - the config file and KEYGATE_* environment -> struct kg_config.
 *
 * One table, directives[], describes every directive: its kind, its built-in
 * default (written as it would be in a file, so defaults pass through the same
 * validators as user input), the field it fills and the environment variable
 * that overrides it. The rest is a line tokenizer and a loop over lines;
 * the rule directives (route, cost, tier, default_rate) are parsed in
 * rules.c, and what a good single value looks like is values.c's.
 * Problems go to the caller's callback as "file:line: message", all of them;
 * this module never prints or logs. It only checks the form of addresses and
 * paths: binding sockets and opening the database are other modules' work.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "keygate/config.h"
#include "keygate/log.h"
#include "keygate/tls.h"
#include "config/config_int.h"

/* Longest duration any timeout may have; longer would only hide a hung peer. */
#define DURATION_MAX_MS (24LL * 3600 * 1000)

static enum kg_status parse_cred_header(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                        const char *const *argv, size_t argc);
static enum kg_status parse_auth_throttle(struct kg_cfg_loader *ld,
                                          const struct kg_cfg_directive *d, const char *const *argv,
                                          size_t argc);
static enum kg_status parse_trusted_proxies(struct kg_cfg_loader *ld,
                                            const struct kg_cfg_directive *d,
                                            const char *const *argv, size_t argc);
static enum kg_status parse_limits_lease(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                         const char *const *argv, size_t argc);
static enum kg_status parse_tls_priorities(struct kg_cfg_loader *ld,
                                           const struct kg_cfg_directive *d,
                                           const char *const *argv, size_t argc);

#define OFF(field) offsetof(struct kg_config, field)

/* Adding a directive: one row here, one section in docs/configuration.md,
 * one commented entry in conf/keygate.conf, one test. clang-format would
 * put every field on a line of its own; kept as rows, it reads as a table. */
/* clang-format off */
static const struct kg_cfg_directive directives[] = {
    {.name = "listen", .kind = K_STRING, .def = "0.0.0.0:8080", .off = OFF(listen),
     .env = "KEYGATE_LISTEN", .check = kg_cfg_check_listen, .want = "host:port"},
    {.name = "admin_listen", .kind = K_STRING, .def = "127.0.0.1:8081", .off = OFF(admin_listen),
     .env = "KEYGATE_ADMIN_LISTEN", .check = kg_cfg_check_admin_listen, .want = "host:port or off"},
    {.name = "upstream", .kind = K_STRING, .def = "http://127.0.0.1:3000", .off = OFF(upstream),
     .env = "KEYGATE_UPSTREAM", .check = kg_cfg_check_upstream,
     .want = "an http:// or https:// URL such as http://127.0.0.1:3000/base"},
    {.name = "database", .kind = K_STRING, .def = "data/keygate.db", .off = OFF(database),
     .env = "KEYGATE_DATABASE", .check = kg_cfg_check_path, .want = "a file path"},
    {.name = "database_notify", .kind = K_BOOL, .def = "on", .off = OFF(database_notify)},
    {.name = "secret_file", .kind = K_STRING, .def = "data/secret", .off = OFF(secret_file),
     .env = "KEYGATE_SECRET_FILE", .check = kg_cfg_check_path, .want = "a file path"},
    {.name = "key_prefix", .kind = K_STRING, .def = "kg_", .off = OFF(key_prefix),
     .env = "KEYGATE_KEY_PREFIX", .check = kg_config_prefix_ok,
     .want = "1 to 32 characters of A-Z a-z 0-9 _"},
    {.name = "mode", .kind = K_CHOICE, .def = "proxy", .off = OFF(mode), .env = "KEYGATE_MODE",
     .choose = kg_cfg_choose_mode, .want = "proxy or forward_auth"},
    {.name = "forward_auth_prefix", .kind = K_STRING, .def = "", .off = OFF(forward_auth_prefix),
     .env = "KEYGATE_FORWARD_AUTH_PREFIX", .check = kg_cfg_check_fa_prefix,
     .want = "a normalised absolute path such as /authz, or \"\" for none"},
    {.name = "error_style", .kind = K_CHOICE, .def = "detail", .off = OFF(error_style),
     .env = "KEYGATE_ERROR_STYLE", .choose = kg_cfg_choose_error_style, .want = "detail or error"},
    {.name = "require_scopes", .kind = K_BOOL, .def = "off", .off = OFF(require_scopes)},
    {.name = "forward_credentials", .kind = K_BOOL, .def = "off",
     .off = OFF(forward_credentials)},
    {.name = "underscores_in_headers", .kind = K_BOOL, .def = "off",
     .off = OFF(underscores_in_headers)},
    {.name = "credential_header", .kind = K_CUSTOM, .parse = parse_cred_header, .multi = true,
     .want = "an HTTP header name such as X-Api-Key"},
    {.name = "route", .kind = K_CUSTOM, .parse = kg_cfg_parse_route, .multi = true},
    {.name = "cost", .kind = K_CUSTOM, .parse = kg_cfg_parse_cost, .multi = true},
    {.name = "upstream_connect_timeout", .kind = K_DURATION, .def = "5s",
     .off = OFF(upstream_connect_timeout_ms)},
    {.name = "upstream_timeout", .kind = K_DURATION, .def = "60s",
     .off = OFF(upstream_timeout_ms)},
    {.name = "client_timeout", .kind = K_DURATION, .def = "60s", .off = OFF(client_timeout_ms)},
    {.name = "client_header_timeout", .kind = K_DURATION, .def = "10s",
     .off = OFF(client_header_timeout_ms), .env = "KEYGATE_CLIENT_HEADER_TIMEOUT"},
    {.name = "client_body_timeout", .kind = K_DURATION, .def = "60s",
     .off = OFF(client_body_timeout_ms)},
    {.name = "max_connections_per_ip", .kind = K_INT, .def = "256",
     .off = OFF(max_connections_per_ip), .env = "KEYGATE_MAX_CONNECTIONS_PER_IP", .min = 0,
     .max = 1000000},
    {.name = "upstream_keepalive", .kind = K_INT, .def = "64", .off = OFF(upstream_keepalive),
     .min = 0, .max = 100000},
    {.name = "upstream_max_connections", .kind = K_INT, .def = "256",
     .off = OFF(upstream_max_connections), .min = 1, .max = 100000},
    {.name = "upstream_keepalive_timeout", .kind = K_DURATION, .def = "4s",
     .off = OFF(upstream_keepalive_timeout_ms)},
    {.name = "upstream_keepalive_requests", .kind = K_INT, .def = "1000",
     .off = OFF(upstream_keepalive_requests), .min = 1, .max = 100000000},
    {.name = "upstream_client", .kind = K_CHOICE, .def = "native", .off = OFF(upstream_client),
     .choose = kg_cfg_choose_upstream_client, .want = "native or curl"},
    {.name = "shutdown_timeout", .kind = K_DURATION, .def = "10s", .off = OFF(shutdown_timeout_ms),
     .env = "KEYGATE_SHUTDOWN_TIMEOUT"},
    {.name = "workers", .kind = K_INT, .def = "0", .off = OFF(workers), .env = "KEYGATE_WORKERS",
     .min = 0, .max = 64},
    {.name = "log_level", .kind = K_CHOICE, .def = "info", .off = OFF(log_level),
     .env = "KEYGATE_LOG_LEVEL", .choose = kg_cfg_choose_log_level, .want = "error, warn, info or debug"},
    {.name = "log_format", .kind = K_CHOICE, .def = "text", .off = OFF(log_format),
     .env = "KEYGATE_LOG_FORMAT", .choose = kg_cfg_choose_log_format, .want = "text or json"},
    {.name = "access_log", .kind = K_STRING, .def = "off", .off = OFF(access_log),
     .env = "KEYGATE_ACCESS_LOG", .check = kg_cfg_check_path, .want = "off, stdout, stderr or a file path"},
    {.name = "max_header_bytes", .kind = K_BYTES, .def = "16k", .off = OFF(max_header_bytes),
     .min = 1024, .max = 1048576},
    {.name = "signup", .kind = K_BOOL, .def = "off", .off = OFF(signup)},
    {.name = "signup_path", .kind = K_STRING, .def = "/api/v1/signup/", .off = OFF(signup_path),
     .check = kg_cfg_check_url_path, .want = "a normalised absolute path such as /api/v1/signup/"},
    {.name = "signup_tenant", .kind = K_STRING, .def = "signup", .off = OFF(signup_tenant),
     .check = kg_cfg_check_slug, .want = "a tenant name: 1 to 64 characters of A-Z a-z 0-9 _ . -"},
    {.name = "signup_role", .kind = K_STRING, .def = KG_SIGNUP_ROLE_NONE, .off = OFF(signup_role),
     .check = kg_cfg_check_signup_role,
     .want = "none or a comma-separated scope list such as read:*,write:items"},
    {.name = "signup_tier", .kind = K_STRING, .def = "default", .off = OFF(signup_tier),
     .check = kg_cfg_check_slug, .want = "a tier name: 1 to 64 characters of A-Z a-z 0-9 _ . -"},
    {.name = "rate_limit_default", .kind = K_CUSTOM, .def = "off", .parse = kg_cfg_parse_default_rate,
     .want = "N/s, N/min or N/h, optionally followed by burst N, or off"},
    {.name = "tier", .kind = K_CUSTOM, .parse = kg_cfg_parse_tier, .multi = true},
    {.name = "limits", .kind = K_STRING, .def = "local", .off = OFF(limits), .env = "KEYGATE_LIMITS",
     .check = kg_cfg_check_limits, .want = "local or redis://host:port/db"},
    {.name = "limits_lease", .kind = K_CUSTOM, .def = "10ms", .parse = parse_limits_lease,
     .want = "0 (exact: one Redis call per request) or a duration up to 1s such as 10ms"},
    {.name = "limits_timeout", .kind = K_DURATION, .def = "20ms", .off = OFF(limits_timeout_ms)},
    {.name = "limits_on_error", .kind = K_CHOICE, .def = "closed", .off = OFF(limits_on_error),
     .choose = kg_cfg_choose_limits_on_error, .want = "closed or open"},
    {.name = "credits_mode", .kind = K_CHOICE, .def = "shared", .off = OFF(credits_mode),
     .env = "KEYGATE_CREDITS_MODE", .choose = kg_cfg_choose_credits_mode,
     .want = "shared or strict"},
    {.name = "route_case", .kind = K_CHOICE, .def = "insensitive", .off = OFF(route_case),
     .choose = kg_cfg_choose_route_case, .want = "insensitive or sensitive"},
    {.name = "ratelimit_headers", .kind = K_CHOICE, .def = "standard",
     .off = OFF(ratelimit_headers), .choose = kg_cfg_choose_rl_headers, .want = "standard or legacy"},
    {.name = "auth_throttle", .kind = K_CUSTOM, .def = "20/min 60s", .parse = parse_auth_throttle,
     .want = "N/s, N/min or N/h and a cool-down such as 60s, or off"},
    {.name = "trusted_proxies", .kind = K_CUSTOM, .parse = parse_trusted_proxies, .multi = true,
     .want = "IPv4 or IPv6 addresses or CIDR blocks such as 10.0.0.0/8 fd00::/8, or none"},
    {.name = "tls_certificate", .kind = K_STRING, .off = OFF(tls_certificate),
     .env = "KEYGATE_TLS_CERTIFICATE", .check = kg_cfg_check_path, .want = "a PEM file path"},
    {.name = "tls_key", .kind = K_STRING, .off = OFF(tls_key), .env = "KEYGATE_TLS_KEY",
     .check = kg_cfg_check_path, .want = "a PEM file path"},
    {.name = "tls_priorities", .kind = K_CUSTOM, .def = KG_TLS_DEFAULT_PRIORITIES,
     .env = "KEYGATE_TLS_PRIORITIES", .parse = parse_tls_priorities,
     .want = "a GnuTLS priority string such as " KG_TLS_DEFAULT_PRIORITIES},
    {.name = "upstream_ca", .kind = K_STRING, .off = OFF(upstream_ca), .env = "KEYGATE_UPSTREAM_CA",
     .check = kg_cfg_check_path, .want = "a PEM file path"},
    {.name = "console", .kind = K_BOOL, .def = "off", .off = OFF(console), .env = "KEYGATE_CONSOLE"},
    {.name = "console_path", .kind = K_STRING, .def = "/console/", .off = OFF(console_path),
     .check = kg_cfg_check_console_path,
     .want = "a normalised absolute path ending in / such as /console/"},
    {.name = "console_session_ttl", .kind = K_DURATION, .def = "12h",
     .off = OFF(console_session_ttl_ms)},
    {.name = "console_session_idle", .kind = K_DURATION, .def = "1h",
     .off = OFF(console_session_idle_ms)},
    {.name = "scope", .kind = K_CUSTOM, .parse = kg_cfg_parse_scope, .multi = true},
    {.name = "tenant", .kind = K_CUSTOM, .parse = kg_cfg_parse_tenant, .multi = true},
    {.name = "webhook", .kind = K_CUSTOM, .parse = kg_cfg_parse_webhook, .multi = true,
     .env = "KEYGATE_WEBHOOK", .want = "a URL, optional event types, then secret_file PATH"},
    {.name = "webhook_timeout", .kind = K_DURATION, .def = "10s", .off = OFF(webhook_timeout_ms),
     .env = "KEYGATE_WEBHOOK_TIMEOUT"},
    {.name = "leak_action", .kind = K_CHOICE, .def = "revoke", .off = OFF(leak_action),
     .env = "KEYGATE_LEAK_ACTION", .choose = kg_cfg_choose_leak_action, .want = "revoke or flag"},
    {.name = "key_expiring_alert", .kind = K_CUSTOM, .def = "14d", .parse = kg_cfg_parse_alert,
     .env = "KEYGATE_KEY_EXPIRING_ALERT", .want = "a duration such as 14d, or off"},
    {.name = "key_idle_alert", .kind = K_CUSTOM, .def = "off", .parse = kg_cfg_parse_alert,
     .env = "KEYGATE_KEY_IDLE_ALERT", .want = "a duration such as 30d, or off"},
};
/* clang-format on */

#define NDIRECTIVES (sizeof(directives) / sizeof(directives[0]))
_Static_assert(NDIRECTIVES <= KG_CFG_DIRECTIVES_MAX, "raise KG_CFG_DIRECTIVES_MAX");

/* K_CHOICE stores an int through the field's bytes; both targets must be int-sized. */
_Static_assert(sizeof(enum kg_error_style) == sizeof(int), "error_style is not int-sized");
_Static_assert(sizeof(enum kg_rl_headers) == sizeof(int), "ratelimit_headers is not int-sized");
_Static_assert(sizeof(enum kg_mode) == sizeof(int), "mode is not int-sized");

/* The words of one line, split in place; the array is reused line to line. */
struct words {
    char **v;
    size_t n, cap;
};

void
kg_cfg_complain(struct kg_cfg_loader *ld, const char *fmt, ...)
{
    char msg[512], out[1024];
    va_list ap;

    ld->nerrors++;
    if (ld->report == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ld->env != NULL)
        snprintf(out, sizeof(out), "%s: %s", ld->env, msg);
    else if (ld->line > 0)
        snprintf(out, sizeof(out), "%s:%d: %s", ld->file, ld->line, msg);
    else
        snprintf(out, sizeof(out), "%s: %s", ld->file, msg);
    ld->report(ld->ctx, out);
}

/* Says what d wants instead of value; numeric kinds state their bounds from the row. */
void
kg_cfg_complain_want(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d, const char *value)
{
    switch (d->kind) {
    case K_BOOL:
        kg_cfg_complain(ld, "%s wants on or off, got \"" SHOWN "\"", d->name, value);
        break;
    case K_DURATION:
        kg_cfg_complain(ld,
                        "%s wants a duration such as 500ms, 30s, 5m or 1h (at most 24h), "
                        "got \"" SHOWN "\"",
                        d->name, value);
        break;
    case K_INT:
        kg_cfg_complain(ld, "%s wants a whole number from %lld to %lld, got \"" SHOWN "\"", d->name,
                        (long long)d->min, (long long)d->max, value);
        break;
    case K_BYTES:
        kg_cfg_complain(
            ld, "%s wants a size from %lld to %lld bytes (k = 1024, e.g. 16k), got \"" SHOWN "\"",
            d->name, (long long)d->min, (long long)d->max, value);
        break;
    default:
        kg_cfg_complain(ld, "%s wants %s, got \"" SHOWN "\"", d->name, d->want, value);
        break;
    }
}

void
kg_cfg_complain_count(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d, size_t argc)
{
    if (argc == 0)
        kg_cfg_complain(ld, "%s takes one value, got none", d->name);
    else
        kg_cfg_complain(ld, "%s takes one value, got %zu", d->name, argc);
}

static bool
parse_bool(const char *v, bool *out)
{
    if (strcasecmp(v, "on") == 0 || strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0)
        *out = true;
    else if (strcasecmp(v, "off") == 0 || strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0)
        *out = false;
    else
        return false;
    return true;
}

/* Digits only (no sign, no blanks) followed by one of the given suffixes,
 * each with its multiplier; "" in suffixes means a bare number is allowed. */
static bool
parse_scaled(const char *s, const char *const *suffixes, const int64_t *mults, size_t n,
             int64_t max, int64_t *out)
{
    int64_t v = 0;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++) {
        if (v > (max - (*p - '0')) / 10)
            return false;
        v = v * 10 + (*p - '0');
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(p, suffixes[i]) != 0)
            continue;
        if (v > max / mults[i])
            return false;
        *out = v * mults[i];
        return true;
    }
    return false;
}

static bool
parse_duration_ms(const char *s, int64_t *out)
{
    static const char *const units[] = {"ms", "s", "m", "h"};
    static const int64_t mults[] = {1, 1000, 60 * 1000, 3600 * 1000};
    int64_t v;

    /* A bare number is refused: 60 could mean seconds or milliseconds. */
    if (!parse_scaled(s, units, mults, 4, DURATION_MAX_MS, &v) || v <= 0)
        return false;
    *out = v;
    return true;
}

/* Sets one single-valued directive. KG_EINVAL has been reported. */
static enum kg_status
set_value(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d, const char *v)
{
    static const char *const int_units[] = {""};
    static const char *const byte_units[] = {"", "k", "K"};
    static const int64_t int_mults[] = {1};
    static const int64_t byte_mults[] = {1, 1024, 1024};
    char *field = (char *)ld->cfg + d->off;
    int64_t n;
    int choice;
    bool b;
    char *copy;

    switch (d->kind) {
    case K_STRING:
        if (!d->check(v))
            break;
        copy = strdup(v);
        if (copy == NULL)
            return KG_ENOMEM;
        free(*(char **)field);
        *(char **)field = copy;
        return KG_OK;
    case K_BOOL:
        if (!parse_bool(v, &b))
            break;
        *(bool *)field = b;
        return KG_OK;
    case K_CHOICE:
        if (!d->choose(v, &choice))
            break;
        memcpy(field, &choice, sizeof(choice));
        return KG_OK;
    case K_DURATION:
        if (!parse_duration_ms(v, &n))
            break;
        *(int64_t *)field = n;
        return KG_OK;
    case K_INT:
        if (!parse_scaled(v, int_units, int_mults, 1, d->max, &n) || n < d->min)
            break;
        *(int *)field = (int)n;
        return KG_OK;
    case K_BYTES:
        if (!parse_scaled(v, byte_units, byte_mults, 3, d->max, &n) || n < d->min)
            break;
        *(int64_t *)field = n;
        return KG_OK;
    case K_CUSTOM:
        return d->parse(ld, d, &v, 1);
    }
    kg_cfg_complain_want(ld, d, v);
    return KG_EINVAL;
}

static enum kg_status
apply(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d, const char *const *argv,
      size_t argc)
{
    if (d->kind == K_CUSTOM)
        return d->parse(ld, d, argv, argc);
    if (argc != 1) {
        kg_cfg_complain_count(ld, d, argc);
        return KG_EINVAL;
    }
    return set_value(ld, d, argv[0]);
}

static enum kg_status
parse_cred_header(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                  const char *const *argv, size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    const char *name;
    char *copy;

    if (argc != 1) {
        kg_cfg_complain_count(ld, d, argc);
        return KG_EINVAL;
    }
    name = argv[0];
    if (!kg_cfg_is_token(name)) {
        kg_cfg_complain_want(ld, d, name);
        return KG_EINVAL;
    }
    /* The built-in headers and repeats change nothing, so they are accepted
     * rather than made into errors a copied config would trip over. */
    if (strcasecmp(name, "Authorization") == 0 || strcasecmp(name, "X-Avala-Api-Key") == 0)
        return KG_OK;
    for (size_t i = 0; i < cfg->ncred_headers; i++) {
        if (strcasecmp(cfg->cred_headers[i], name) == 0)
            return KG_OK;
    }
    if (cfg->ncred_headers == KG_MAX_CRED_HEADERS) {
        kg_cfg_complain(ld, "%s allows at most %d header names; \"" SHOWN "\" is one too many",
                        d->name, KG_MAX_CRED_HEADERS, name);
        return KG_EINVAL;
    }
    copy = strdup(name);
    if (copy == NULL)
        return KG_ENOMEM;
    cfg->cred_headers[cfg->ncred_headers++] = copy;
    return KG_OK;
}

/* auth_throttle off | N/WINDOW COOLDOWN. The built-in default arrives as
 * one word ("20/min 60s"), so a single value holding a blank is split. */
/* limits_lease: 0, or a duration of at most a second (more would let a
 * gateway sit on a whole second's worth of every key's rate). */
static enum kg_status
parse_limits_lease(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                   const char *const *argv, size_t argc)
{
    int64_t ms = 0;

    if (argc == 1 &&
        (strcmp(argv[0], "0") == 0 || (parse_duration_ms(argv[0], &ms) && ms <= 1000))) {
        ld->cfg->limits_lease_ms = ms;
        return KG_OK;
    }
    kg_cfg_complain(ld, "%s wants %s, got \"" SHOWN "\"", d->name, d->want,
                    argc > 0 ? argv[0] : "");
    return KG_EINVAL;
}

static enum kg_status
parse_auth_throttle(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                    const char *const *argv, size_t argc)
{
    char rate[64], cool[64];
    int64_t count, period_s, cooldown_ms;
    const char *sp;

    if (argc == 1 && strcmp(argv[0], "off") == 0) {
        ld->cfg->auth_throttle_count = 0;
        return KG_OK;
    }
    sp = argc == 1 ? strchr(argv[0], ' ') : NULL;
    if (sp != NULL && (size_t)(sp - argv[0]) < sizeof(rate)) {
        snprintf(rate, sizeof(rate), "%.*s", (int)(sp - argv[0]), argv[0]);
        snprintf(cool, sizeof(cool), "%s", sp + 1);
    } else if (argc == 2) {
        snprintf(rate, sizeof(rate), "%s", argv[0]);
        snprintf(cool, sizeof(cool), "%s", argv[1]);
    } else {
        kg_cfg_complain(ld, "%s wants N/WINDOW COOLDOWN such as 20/min 60s, or off", d->name);
        return KG_EINVAL;
    }
    if (!kg_gcra_parse_rate(rate, &count, &period_s)) {
        kg_cfg_complain(ld, "%s wants N/s, N/min or N/h (N 1 to 1000000000), got \"" SHOWN "\"",
                        d->name, rate);
        return KG_EINVAL;
    }
    /* limit/throttle.c's bound: more failures than this are no throttle anyway. */
    if (count > 1000000) {
        kg_cfg_complain(ld, "%s allows 1 to 1000000 failures per window, got %lld", d->name,
                        (long long)count);
        return KG_EINVAL;
    }
    if (!parse_duration_ms(cool, &cooldown_ms)) {
        kg_cfg_complain(ld,
                        "%s cool-down wants a duration such as 500ms, 30s, 5m or 1h (at most 24h), "
                        "got \"" SHOWN "\"",
                        d->name, cool);
        return KG_EINVAL;
    }
    ld->cfg->auth_throttle_count = count;
    ld->cfg->auth_throttle_window_ms = period_s * 1000;
    ld->cfg->auth_throttle_cooldown_ms = cooldown_ms;
    return KG_OK;
}

/* trusted_proxies none | CIDR... (several lines add up) */
static enum kg_status
parse_trusted_proxies(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                      const char *const *argv, size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    struct kg_cidr *grown;
    bool ok = true;

    if (argc == 0) {
        kg_cfg_complain(ld, "%s wants %s", d->name, d->want);
        return KG_EINVAL;
    }
    if (argc == 1 && strcmp(argv[0], "none") == 0) {
        cfg->ntrusted_proxies = 0;
        return KG_OK;
    }
    for (size_t i = 0; i < argc; i++) {
        struct kg_cidr c;

        if (!kg_clientip_cidr_parse(argv[i], &c)) {
            kg_cfg_complain(ld,
                            "%s wants an IPv4 or IPv6 address or CIDR block (host bits zero, "
                            "e.g. 10.0.0.0/8), got \"" SHOWN "\"",
                            d->name, argv[i]);
            ok = false;
            continue;
        }
        grown = realloc(cfg->trusted_proxies, (cfg->ntrusted_proxies + 1) * sizeof(*grown));
        if (grown == NULL)
            return KG_ENOMEM;
        cfg->trusted_proxies = grown;
        cfg->trusted_proxies[cfg->ntrusted_proxies++] = c;
    }
    return ok ? KG_OK : KG_EINVAL;
}

/* tls_priorities STRING: GnuTLS parses it here, so a typo is reported at
 * its line instead of failing the listener at startup. */
static enum kg_status
parse_tls_priorities(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                     const char *const *argv, size_t argc)
{
    struct kg_err err = {{0}};
    char *copy;

    if (argc != 1) {
        kg_cfg_complain_count(ld, d, argc);
        return KG_EINVAL;
    }
    if (kg_tls_check_priorities(argv[0], &err) != KG_OK) {
        kg_cfg_complain(ld, "tls_priorities: %s", err.msg);
        return KG_EINVAL;
    }
    copy = strdup(argv[0]);
    if (copy == NULL)
        return KG_ENOMEM;
    free(ld->cfg->tls_priorities);
    ld->cfg->tls_priorities = copy;
    return KG_OK;
}

static const struct kg_cfg_directive *
find_directive(const char *name)
{
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        if (strcmp(directives[i].name, name) == 0)
            return &directives[i];
    }
    return NULL;
}

static enum kg_status
words_push(struct words *w, char *word)
{
    if (w->n == w->cap) {
        size_t cap = w->cap == 0 ? 8 : w->cap * 2;
        char **grown = realloc(w->v, cap * sizeof(*grown));

        if (grown == NULL)
            return KG_ENOMEM;
        w->v = grown;
        w->cap = cap;
    }
    w->v[w->n++] = word;
    return KG_OK;
}

static bool
is_blank(char c)
{
    /* '\r' counts as a blank so files saved with CRLF endings load. */
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Splits line into words in place: unquoting only ever shrinks the text, so
 * the write position never overtakes the read position. A word may mix bare
 * and "quoted" parts; inside quotes, \" and \\ are escapes and any other
 * backslash is kept. KG_EINVAL (reported) for an unterminated quote. */
static enum kg_status
tokenize(struct kg_cfg_loader *ld, char *line, struct words *w)
{
    char *r = line, *out = line, *start;
    enum kg_status rc;

    w->n = 0;
    for (;;) {
        bool quoted = false, in_word = false;

        while (is_blank(*r))
            r++;
        if (*r == '\0' || *r == '#')
            return KG_OK;
        start = out;
        for (;; r++) {
            char c = *r;

            if (quoted) {
                if (c == '\0') {
                    kg_cfg_complain(ld, "unterminated quote (close the \" on the same line)");
                    return KG_EINVAL;
                }
                if (c == '"') {
                    quoted = false;
                } else if (c == '\\' && (r[1] == '"' || r[1] == '\\')) {
                    *out++ = *++r;
                } else {
                    *out++ = c;
                }
                continue;
            }
            if (c == '\0' || c == '#' || is_blank(c))
                break;
            if (c == '"')
                quoted = true;
            else
                *out++ = c;
            in_word = true;
        }
        /* The byte at r may be overwritten by the terminator below, so
         * decide now whether the line goes on. */
        bool more = *r != '\0' && *r != '#';

        *out++ = '\0';
        if (in_word) {
            rc = words_push(w, start);
            if (rc != KG_OK)
                return rc;
        }
        if (!more)
            return KG_OK;
        r++;
    }
}

/* Handles one line. Only KG_ENOMEM stops the load: every other problem is
 * reported and counted so the next lines are still checked. */
static enum kg_status
parse_line(struct kg_cfg_loader *ld, char *line, size_t len, struct words *w)
{
    const struct kg_cfg_directive *d;
    enum kg_status rc;

    if (memchr(line, '\0', len) != NULL) {
        kg_cfg_complain(ld, "line holds a NUL byte; is this a text file?");
        return KG_OK;
    }
    rc = tokenize(ld, line, w);
    if (rc != KG_OK || w->n == 0)
        return rc == KG_ENOMEM ? rc : KG_OK;
    d = find_directive(w->v[0]);
    if (d == NULL) {
        kg_cfg_complain(ld, "unknown directive \"" SHOWN "\"", w->v[0]);
        return KG_OK;
    }
    if (!d->multi) {
        size_t i = (size_t)(d - directives);

        if (ld->first_line[i] != 0) {
            kg_cfg_complain(ld, "duplicate directive %s (first on line %d)", d->name,
                            ld->first_line[i]);
            return KG_OK;
        }
        ld->first_line[i] = ld->line;
    }
    rc = apply(ld, d, (const char *const *)(w->v + 1), w->n - 1);
    return rc == KG_ENOMEM ? rc : KG_OK;
}

static enum kg_status
load_file(struct kg_cfg_loader *ld, const char *path)
{
    FILE *fp;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    struct words w = {0};
    enum kg_status rc = KG_OK;

    fp = fopen(path, "r");
    if (fp == NULL) {
        kg_cfg_complain(ld, "cannot open: %s", strerror(errno));
        return KG_EIO;
    }
    for (;;) {
        len = getline(&buf, &cap, fp);
        if (len < 0)
            break;
        ld->line++;
        /* getline() counts the '\n'; a NUL before it would end the string early. */
        rc = parse_line(ld, buf, (size_t)len - (len > 0 && buf[len - 1] == '\n'), &w);
        if (rc != KG_OK)
            goto cleanup;
    }
    if (ferror(fp)) {
        ld->line = 0;
        kg_cfg_complain(ld, "cannot read: %s", strerror(errno));
        rc = KG_EIO;
    }

cleanup:
    free(w.v);
    free(buf);
    fclose(fp);
    return rc;
}

/* Every KEYGATE_* override, after the file: a container sets a few variables
 * and keeps the shipped file. An empty variable counts as unset, so
 * "KEYGATE_LISTEN=" in a compose file changes nothing. */
static enum kg_status
apply_env(struct kg_cfg_loader *ld)
{
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        const struct kg_cfg_directive *d = &directives[i];
        const char *v;
        enum kg_status rc;

        if (d->env == NULL)
            continue;
        v = getenv(d->env);
        if (v == NULL || v[0] == '\0')
            continue;
        ld->env = d->env;
        rc = set_value(ld, d, v);
        ld->env = NULL;
        if (rc == KG_ENOMEM)
            return rc;
    }
    return KG_OK;
}

/* Points complaints at where directive name was set: its environment
 * variable when that overrode the file, else its line (0: not in the file). */
static void
locate(struct kg_cfg_loader *ld, const char *name)
{
    const struct kg_cfg_directive *d = find_directive(name);
    const char *v = d->env != NULL ? getenv(d->env) : NULL;

    ld->env = v != NULL && v[0] != '\0' ? d->env : NULL;
    ld->line = ld->first_line[d - directives];
}

/* What needs two directives or the files themselves: the TLS pair is
 * complete, loads and matches; upstream_ca holds a certificate. Reading
 * them here makes `keygate serve -t` and a reload refuse a broken pair. */
static void
check_tls_files(struct kg_cfg_loader *ld)
{
    const struct kg_config *cfg = ld->cfg;
    struct kg_err err = {{0}};

    if ((cfg->tls_certificate == NULL) != (cfg->tls_key == NULL)) {
        if (cfg->tls_certificate != NULL) {
            locate(ld, "tls_certificate");
            kg_cfg_complain(ld, "tls_certificate is set but tls_key is not: TLS needs both");
        } else {
            locate(ld, "tls_key");
            kg_cfg_complain(ld, "tls_key is set but tls_certificate is not: TLS needs both");
        }
    } else if (cfg->tls_certificate != NULL &&
               kg_tls_check_pair(cfg->tls_certificate, cfg->tls_key, &err) != KG_OK) {
        /* The message starts with the directive it is about. */
        locate(ld, strncmp(err.msg, "tls_key", 7) == 0 ? "tls_key" : "tls_certificate");
        kg_cfg_complain(ld, "%s", err.msg);
    }
    if (cfg->upstream_ca != NULL && kg_tls_check_ca(cfg->upstream_ca, &err) != KG_OK) {
        locate(ld, "upstream_ca");
        kg_cfg_complain(ld, "%s", err.msg);
    }
    ld->env = NULL;
    ld->line = 0;
}

enum kg_status
kg_config_defaults(struct kg_config **out)
{
    struct kg_cfg_loader ld = {.file = "(built-in)"};
    struct kg_config *cfg;
    enum kg_status rc = KG_OK;

    *out = NULL;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return KG_ENOMEM;
    ld.cfg = cfg;
    cfg->path = strdup("(built-in)");
    if (cfg->path == NULL) {
        rc = KG_ENOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        const char *def = directives[i].def;

        if (def == NULL)
            continue;
        /* KG_EINVAL here means the table's own default is wrong: a bug. */
        rc = apply(&ld, &directives[i], &def, 1);
        if (rc != KG_OK)
            goto cleanup;
    }
    *out = cfg;
    cfg = NULL;

cleanup:
    kg_config_free(cfg);
    return rc;
}

enum kg_status
kg_config_load(const char *path, kg_config_report_fn report, void *ctx, struct kg_config **out)
{
    struct kg_cfg_loader ld = {
        .file = path != NULL ? path : "(built-in)", .report = report, .ctx = ctx};
    struct kg_config *cfg = NULL;
    enum kg_status rc;

    *out = NULL;
    rc = kg_config_defaults(&cfg);
    if (rc != KG_OK)
        goto cleanup;
    ld.cfg = cfg;
    if (path != NULL) {
        char *copy = strdup(path);

        if (copy == NULL) {
            rc = KG_ENOMEM;
            goto cleanup;
        }
        free(cfg->path);
        cfg->path = copy;
        rc = load_file(&ld, path);
        if (rc != KG_OK)
            goto cleanup;
    }
    ld.line = 0;
    rc = apply_env(&ld);
    if (rc == KG_OK)
        check_tls_files(&ld);
    if (rc == KG_OK && ld.nerrors > 0)
        rc = KG_EINVAL;

cleanup:
    if (rc == KG_ENOMEM) {
        ld.line = 0;
        kg_cfg_complain(&ld, "out of memory");
    }
    if (rc != KG_OK)
        kg_config_free(cfg);
    else
        *out = cfg;
    return rc;
}

const char *
kg_config_default_path(void)
{
    const char *env = getenv("KEYGATE_CONFIG");

    if (env != NULL && env[0] != '\0')
        return env;
    /* "Exists", not "readable": an unreadable file should be an error the
     * operator sees, not a silent fall back to the built-in defaults. */
    if (access("conf/keygate.conf", F_OK) == 0)
        return "conf/keygate.conf";
    if (access("/etc/keygate/keygate.conf", F_OK) == 0)
        return "/etc/keygate/keygate.conf";
    return NULL;
}

void
kg_config_free(struct kg_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->listen);
    free(cfg->admin_listen);
    free(cfg->upstream);
    free(cfg->database);
    free(cfg->secret_file);
    free(cfg->key_prefix);
    free(cfg->signup_path);
    free(cfg->forward_auth_prefix);
    free(cfg->access_log);
    free(cfg->limits);
    free(cfg->signup_tenant);
    free(cfg->signup_role);
    free(cfg->signup_tier);
    for (size_t i = 0; i < cfg->ncred_headers; i++)
        free(cfg->cred_headers[i]);
    for (size_t i = 0; i < cfg->nroutes; i++)
        kg_cfg_route_cleanup(&cfg->routes[i]);
    free(cfg->routes);
    for (size_t i = 0; i < cfg->ncosts; i++)
        free(cfg->costs[i].pattern);
    free(cfg->costs);
    for (size_t i = 0; i < cfg->ntiers; i++)
        free(cfg->tiers[i].name);
    free(cfg->tiers);
    free(cfg->trusted_proxies);
    free(cfg->tls_certificate);
    free(cfg->tls_key);
    free(cfg->tls_priorities);
    free(cfg->upstream_ca);
    free(cfg->console_path);
    for (size_t i = 0; i < cfg->nscope_catalog; i++) {
        free(cfg->scope_catalog[i].name);
        free(cfg->scope_catalog[i].description);
    }
    free(cfg->scope_catalog);
    for (size_t i = 0; i < cfg->ntenant_policies; i++)
        free(cfg->tenant_policies[i].tenant);
    free(cfg->tenant_policies);
    kg_cfg_webhooks_free(cfg);
    free(cfg);
}
