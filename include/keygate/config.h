/* keygate/config.h - the config file and KEYGATE_* environment -> struct kg_config.
 *
 * Grammar: one directive per line, "name value…" separated by blanks, "#"
 * starts a comment, a value may be double-quoted. Directives are one table in
 * config.c (one row each). Errors are reported as "file:line: what is wrong",
 * all of them, not just the first. The result is immutable once loaded: the
 * daemon swaps whole configs on reload and never edits one in place, so any
 * thread may read a config it holds.
 */
#ifndef KEYGATE_CONFIG_H
#define KEYGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/clientip.h"
#include "keygate/gcra.h"
#include "keygate/status.h"

enum kg_error_style { KG_STYLE_DETAIL = 0, KG_STYLE_ERROR };

/* ratelimit_headers: the draft's RateLimit-Policy/RateLimit only, or also
 * X-RateLimit-Limit/-Remaining/-Reset for older clients. */
enum kg_rl_headers { KG_RLH_STANDARD = 0, KG_RLH_LEGACY };

enum kg_quota_period { KG_QUOTA_NONE = 0, KG_QUOTA_DAY, KG_QUOTA_MONTH };

/* mode: proxy to the upstream, or only answer a front proxy's "may this
 * request through?" (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz). */
enum kg_mode { KG_MODE_PROXY = 0, KG_MODE_FORWARD_AUTH };

/* route_case: whether route and cost patterns match the path's letters in
 * any case (the default: many upstreams route /ADMIN like /admin) or exactly. */
enum kg_route_case { KG_ROUTE_CASE_INSENSITIVE = 0, KG_ROUTE_CASE_SENSITIVE };

/* upstream_client: keygate's own HTTP/1.1 client (proxy/upclient.c) or
 * libcurl for an http:// upstream; an https:// one always goes through libcurl. */
enum kg_upstream_client { KG_UPSTREAM_NATIVE = 0, KG_UPSTREAM_CURL };
/* limits_on_error: with `limits redis://…` and Redis not answering, a
 * request of a key with a rate limit is refused 503 (closed) or let
 * through unlimited (open). */
enum kg_limits_on_error { KG_LIMITS_CLOSED = 0, KG_LIMITS_OPEN };
/* credits_mode (issue 15): shared, every instance checks credits against
 * the store's total as of its last flush plus its own charges since (it may
 * overspend by what the other instances charged within a flush interval);
 * strict, an instance spends only blocks of credits it reserved in the
 * store, and the instances together never pass a key's limit. */
enum kg_credits_mode { KG_CREDITS_SHARED = 0, KG_CREDITS_STRICT };

/* signup_role's value for "no scope at all" (the default). */
#define KG_SIGNUP_ROLE_NONE "none"

/* tier NAME rate RATE [burst N] [quota N/day|N/month] */
struct kg_tier {
    char *name;
    struct kg_gcra rate; /* shared by every key of every user in the tier, per user */
    int64_t quota;       /* requests per quota_period; 0 with KG_QUOTA_NONE */
    enum kg_quota_period quota_period;
    int line;
};

/* route METHOD PATH-PATTERN SCOPE… */
struct kg_route {
    char method[16]; /* upper-case method, or "*" */
    char *pattern;   /* normalised path; when is_prefix, without the trailing '*' */
    bool is_prefix;  /* pattern ended in '*' */
    char **scopes;   /* every one of these is required */
    size_t nscopes;
    int line; /* config line, for messages */
};

/* cost METHOD PATH-PATTERN UNITS: the credits a request matching the rule is
 * charged when the upstream answers 2xx. First match wins, like route;
 * a request no rule matches costs 1. Integer units: money never goes
 * through floating point. */
struct kg_cost {
    char method[16]; /* upper-case method, or "*" */
    char *pattern;   /* normalised path; when is_prefix, without the trailing '*' */
    bool is_prefix;
    int64_t units; /* 0 to 1000000000 */
    int line;
};

#define KG_MAX_CRED_HEADERS 8

/* scope NAME "description": the scope catalogue the console's picker shows. */
struct kg_scope_desc {
    char *name;
    char *description;
    int line;
};

/* tenant NAME key_max_lifetime DURATION: a tenant's key policy; NAME "*"
 * is every tenant without a line of its own. */
struct kg_tenant_policy {
    char *tenant;
    int64_t key_max_lifetime_s; /* 0 = no limit */
    int line;
};

/* Fields are read-only after kg_config_load(). Strings are owned by the config.
 * It holds no pointer into itself, so a struct copy moves it (cfgswap.c). */
enum kg_leak_action { KG_LEAK_REVOKE = 0, KG_LEAK_FLAG };

struct kg_webhook;
/* Whether webhook w wants events of type (an event type name). */
bool kg_config_webhook_wants(const struct kg_webhook *w, const char *type);

struct kg_config {
    char *path;         /* file it came from, or "(built-in)" */
    char *listen;       /* "host:port" as written: see kg_config_addr_parse() */
    char *admin_listen; /* "host:port" or "off" */
    char *upstream;     /* "http://host:port[/base]" */
    char *database;
    /* database_notify: on PostgreSQL, a thread LISTENs for change
     * notifications and wakes the poll; off (a pooler in transaction mode,
     * where LISTEN does not work), the 200 ms poll alone sees changes. */
    bool database_notify;
    char *secret_file;
    char *key_prefix;
    enum kg_mode mode;
    /* forward_auth: removed from the request's own path when no header names
     * the original request (Envoy ext_authz path_prefix); "" = none. */
    char *forward_auth_prefix;
    enum kg_error_style error_style;
    bool require_scopes;
    bool forward_credentials;
    /* Forward client header names holding "_" (those spelling a header
     * keygate sets or strips are dropped regardless); off = drop them all. */
    bool underscores_in_headers;
    char *cred_headers[KG_MAX_CRED_HEADERS]; /* extra credential header names */
    size_t ncred_headers;
    struct kg_route *routes;
    size_t nroutes;
    enum kg_route_case route_case; /* for routes and costs */
    struct kg_cost *costs;
    size_t ncosts;
    int64_t upstream_connect_timeout_ms;
    int64_t upstream_timeout_ms;
    int64_t client_timeout_ms;        /* idle client connection */
    int64_t client_header_timeout_ms; /* the whole header block, from accept or the last answer */
    int64_t client_body_timeout_ms;   /* a request body making no progress */
    int max_connections_per_ip;       /* open client connections per IP, all loops; 0 = no cap */
    int upstream_keepalive;           /* idle upstream connections kept per loop */
    int upstream_max_connections;     /* concurrent upstream connections per loop */
    int64_t upstream_keepalive_timeout_ms; /* an idle upstream connection older than this is not
                                              reused */
    int upstream_keepalive_requests; /* requests one upstream connection carries, then closed */
    enum kg_upstream_client upstream_client;
    int workers;                 /* 0 = one per core */
    int log_level;               /* enum kg_log_level */
    int log_format;              /* enum kg_log_format: the daemon's own lines, text or JSON */
    int64_t shutdown_timeout_ms; /* SIGTERM: how long requests in flight may take */
    char *access_log;            /* "off", "stdout", "stderr" or a file path */
    int64_t max_header_bytes;    /* per request: request line + headers */
    bool signup;                 /* POST signup_path creates an account and its first key */
    char *signup_path;           /* normalised path, "/api/v1/signup/" */
    char *signup_tenant;         /* tenant name new accounts join */
    char *signup_role;           /* role (scope list) of new accounts, or "none" (the default) */
    char *signup_tier;           /* tier of new accounts, "default" */
    bool has_default_rate;       /* rate_limit_default: keys without a rate of their own */
    struct kg_gcra default_rate;
    struct kg_tier *tiers;
    size_t ntiers;
    enum kg_rl_headers ratelimit_headers;
    /* Where the rate-limit buckets live: "local" (this process) or
     * "redis://host:port/db", shared by every gateway using it. */
    char *limits;
    int64_t limits_lease_ms;   /* leased tokens worth this long of a key's rate; 0 = exact */
    int64_t limits_timeout_ms; /* the longest a request waits for Redis */
    enum kg_limits_on_error limits_on_error;
    enum kg_credits_mode credits_mode; /* a key's credits across instances */
    /* auth_throttle N/WINDOW COOLDOWN: after auth_throttle_count invalid or
     * missing keys within auth_throttle_window_ms, a client IP is refused for
     * auth_throttle_cooldown_ms. Off: auth_throttle_count is 0. */
    int64_t auth_throttle_count;
    int64_t auth_throttle_window_ms;
    int64_t auth_throttle_cooldown_ms;
    struct kg_cidr *trusted_proxies; /* peers whose X-Forwarded-For is believed */
    size_t ntrusted_proxies;
    /* TLS on listen and admin_listen when both are set (server/tls.c); the
     * loader has checked that the files load and the key matches. */
    char *tls_certificate; /* PEM chain file, or NULL */
    char *tls_key;         /* PEM private key file, or NULL */
    char *tls_priorities;  /* GnuTLS priority string */
    char *upstream_ca;     /* PEM bundle an https upstream is verified with; NULL: system CAs */
    /* The web console (src/console/): served under console_path on the
     * public listener; sessions last console_session_ttl_ms at most and end
     * after console_session_idle_ms without a request. */
    bool console;
    char *console_path; /* normalised path ending in '/', "/console/" */
    int64_t console_session_ttl_ms;
    int64_t console_session_idle_ms;
    struct kg_scope_desc *scope_catalog;
    size_t nscope_catalog;
    struct kg_tenant_policy *tenant_policies;
    size_t ntenant_policies;
    /* Issue 18: key events. webhook URL [EVENT...] secret_file PATH lines
     * (KEYGATE_WEBHOOK replaces them all with one). */
    struct kg_webhook *webhooks;
    size_t nwebhooks;
    int64_t webhook_timeout_ms;      /* one delivery attempt, connect to last byte */
    enum kg_leak_action leak_action; /* what a reported leaked key gets */
    int64_t key_expiring_alert_s;    /* key.expiring this long before expires_at; 0 = off */
    int64_t key_idle_alert_s;        /* key.unused after this long unused; 0 = off */
};

/* One webhook endpoint. events NULL (nevents 0): every event type. The
 * secret (read from secret_file when the config is loaded, a trailing
 * newline removed) signs every delivery: keygate/webhook.h. */
struct kg_webhook {
    char *url;
    char **events;
    size_t nevents;
    char *secret_file;
    unsigned char *secret;
    size_t secret_len;
};

/* Receives one "file:line: message" (or "KEYGATE_X: message") per problem. */
typedef void (*kg_config_report_fn)(void *ctx, const char *line);

/* Built-in defaults, no file. Caller owns the result: kg_config_free(). */
enum kg_status kg_config_defaults(struct kg_config **out);

/* Loads path over the defaults, then applies the KEYGATE_* environment
 * (KEYGATE_LISTEN, KEYGATE_ADMIN_LISTEN, KEYGATE_UPSTREAM, KEYGATE_DATABASE,
 * KEYGATE_KEY_PREFIX, KEYGATE_SECRET_FILE, ...). path NULL: defaults and
 * environment only. Every problem goes to report; on any, returns KG_EINVAL
 * and *out is NULL. An unreadable file is KG_EIO (reported too). */
enum kg_status kg_config_load(const char *path, kg_config_report_fn report, void *ctx,
                              struct kg_config **out);

/* Which file to read when no -c was given: $KEYGATE_CONFIG, else
 * conf/keygate.conf if it exists, else /etc/keygate/keygate.conf if it
 * exists, else NULL (built-in defaults). Returned string is static or from
 * the environment; do not free. */
const char *kg_config_default_path(void);

/* NULL-safe. */
void kg_config_free(struct kg_config *cfg);

/* The role a new signup account gets: signup_role as a scope list, "" for
 * "none" (no scope). Borrowed from cfg. */
const char *kg_config_signup_role(const struct kg_config *cfg);

/* When signup is on and signup_role holds a wildcard ("*", "admin:*"),
 * writes a one-line warning into buf and returns true: anonymous accounts
 * would get every scope the wildcard covers, today's and tomorrow's. */
bool kg_config_signup_warning(const struct kg_config *cfg, char *buf, size_t cap);

/* The tier called name, or NULL when the config has none (no tier limit). */
const struct kg_tier *kg_config_tier(const struct kg_config *cfg, const char *name);

/* The longest lifetime tenant's policy allows a new key, in seconds (its
 * own `tenant` line, else the one of "*"); 0 = no limit. */
int64_t kg_config_key_max_lifetime(const struct kg_config *cfg, const char *tenant);

/* The description of scope name in the catalogue, or NULL when it has none. */
const char *kg_config_scope_description(const struct kg_config *cfg, const char *name);

/* Checks a key_prefix: 1..32 characters of [A-Za-z0-9_]. */
bool kg_config_prefix_ok(const char *prefix);

#define KG_ADDR_HOST_MAX 46 /* INET6_ADDRSTRLEN: longest numeric host, with its NUL */

/* Splits a listen/admin_listen value ("host:port", "[IPv6]:port",
 * "localhost:port", "*:port") into a numeric host and a port, so every
 * listener reads addresses the same way: "*" becomes "0.0.0.0", "localhost"
 * becomes "127.0.0.1" and the brackets of an IPv6 literal are removed.
 * host (hostlen bytes, KG_ADDR_HOST_MAX is enough) and port may be NULL to
 * only check. Returns false, writing nothing, when addr is malformed or the
 * port is outside 1..65535. Pure; any thread. */
bool kg_config_addr_parse(const char *addr, char *host, size_t hostlen, int *port);

#endif
