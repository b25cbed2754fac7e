/* server/reload.c - the directives a reload must not change in a running
 * daemon, one table row each, and how to say so. The rest of the reload
 * (loading, logging, publishing) is daemon/serve.c's. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/reload.h"

enum kind { R_STRING, R_INT, R_BOOL, R_DURATION, R_BYTES, R_THROTTLE, R_TLS, R_CREDITS };

struct startup_only {
    const char *name;
    enum kind kind;
    size_t off; /* the field in struct kg_config; unused by R_THROTTLE */
};

#define OFF(field) offsetof(struct kg_config, field)

/* Directives acted on once, at startup: listeners bound (listen,
 * admin_listen and what libmicrohttpd sizes with them), files opened,
 * threads started (workers, signup's worker, the Redis limiter's
 * connection and leases), tables sized (auth_throttle).
 * TLS on or off and its priorities are fixed in the listeners; a renewed
 * certificate (new files or the same names) is not, and is reloaded. */
static const struct startup_only startup_only[] = {
    {"listen", R_STRING, OFF(listen)},
    {"admin_listen", R_STRING, OFF(admin_listen)},
    {"database", R_STRING, OFF(database)},
    {"database_notify", R_BOOL, OFF(database_notify)}, /* the listener thread */
    {"secret_file", R_STRING, OFF(secret_file)},
    {"workers", R_INT, OFF(workers)},
    {"client_timeout", R_DURATION, OFF(client_timeout_ms)},
    {"max_header_bytes", R_BYTES, OFF(max_header_bytes)},
    {"upstream_keepalive", R_INT, OFF(upstream_keepalive)},
    {"upstream_max_connections", R_INT, OFF(upstream_max_connections)},
    {"signup", R_BOOL, OFF(signup)},
    {"signup_path", R_STRING, OFF(signup_path)},
    {"signup_tenant", R_STRING, OFF(signup_tenant)},
    {"signup_role", R_STRING, OFF(signup_role)},
    {"signup_tier", R_STRING, OFF(signup_tier)},
    /* The console needs the worker thread and its throttles, started once. */
    {"console", R_BOOL, OFF(console)},
    {"console_path", R_STRING, OFF(console_path)},
    {"auth_throttle", R_THROTTLE, 0},
    {"TLS (tls_certificate, tls_key)", R_TLS, 0},
    {"tls_priorities", R_STRING, OFF(tls_priorities)},
    {"limits", R_STRING, OFF(limits)},
    {"limits_lease", R_DURATION, OFF(limits_lease_ms)},
    {"limits_timeout", R_DURATION, OFF(limits_timeout_ms)},
    /* Blocks held in the store and the thread that refills them. */
    {"credits_mode", R_CREDITS, OFF(credits_mode)},
};

#define NSTARTUP_ONLY (sizeof(startup_only) / sizeof(startup_only[0]))

/* A duration as the config file would say it: 90s, 5m, 250ms. */
static void
show_ms(int64_t ms, char *buf, size_t len)
{
    if (ms % 3600000 == 0)
        snprintf(buf, len, "%" PRId64 "h", ms / 3600000);
    else if (ms % 60000 == 0)
        snprintf(buf, len, "%" PRId64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, len, "%" PRId64 "s", ms / 1000);
    else
        snprintf(buf, len, "%" PRId64 "ms", ms);
}

static void
show(const struct startup_only *d, const struct kg_config *cfg, char *buf, size_t len)
{
    const char *field = (const char *)cfg + d->off;
    char window[32], cooldown[32];

    switch (d->kind) {
    case R_STRING:
        snprintf(buf, len, "%s", *(char *const *)(const void *)field);
        break;
    case R_INT:
        snprintf(buf, len, "%d", *(const int *)(const void *)field);
        break;
    case R_BOOL:
        snprintf(buf, len, "%s", *(const bool *)(const void *)field ? "on" : "off");
        break;
    case R_DURATION:
        show_ms(*(const int64_t *)(const void *)field, buf, len);
        break;
    case R_BYTES:
        snprintf(buf, len, "%" PRId64, *(const int64_t *)(const void *)field);
        break;
    case R_THROTTLE:
        if (cfg->auth_throttle_count == 0) {
            snprintf(buf, len, "off");
            break;
        }
        show_ms(cfg->auth_throttle_window_ms, window, sizeof(window));
        show_ms(cfg->auth_throttle_cooldown_ms, cooldown, sizeof(cooldown));
        snprintf(buf, len, "%" PRId64 " per %s, cool-down %s", cfg->auth_throttle_count, window,
                 cooldown);
        break;
    case R_TLS:
        snprintf(buf, len, "%s", cfg->tls_certificate != NULL ? "on" : "off");
        break;
    case R_CREDITS:
        snprintf(buf, len, "%s", cfg->credits_mode == KG_CREDITS_STRICT ? "strict" : "shared");
        break;
    }
}

static bool
same(const struct startup_only *d, const struct kg_config *a, const struct kg_config *b)
{
    const char *fa = (const char *)a + d->off, *fb = (const char *)b + d->off;

    switch (d->kind) {
    case R_STRING:
        return strcmp(*(char *const *)(const void *)fa, *(char *const *)(const void *)fb) == 0;
    case R_INT:
        return *(const int *)(const void *)fa == *(const int *)(const void *)fb;
    case R_BOOL:
        return *(const bool *)(const void *)fa == *(const bool *)(const void *)fb;
    case R_DURATION:
    case R_BYTES:
        return *(const int64_t *)(const void *)fa == *(const int64_t *)(const void *)fb;
    case R_THROTTLE:
        return a->auth_throttle_count == b->auth_throttle_count &&
               a->auth_throttle_window_ms == b->auth_throttle_window_ms &&
               a->auth_throttle_cooldown_ms == b->auth_throttle_cooldown_ms;
    case R_TLS:
        return (a->tls_certificate != NULL) == (b->tls_certificate != NULL);
    case R_CREDITS:
        return a->credits_mode == b->credits_mode;
    }
    return true;
}

/* TLS stays as it runs: off stays off; on keeps running's files (a config
 * that names none cannot renew anything). */
static enum kg_status
keep_tls(const struct kg_config *running, struct kg_config *next)
{
    char *crt = NULL, *key = NULL;

    if (running->tls_certificate != NULL) {
        crt = strdup(running->tls_certificate);
        key = strdup(running->tls_key);
        if (crt == NULL || key == NULL) {
            free(crt);
            free(key);
            return KG_ENOMEM;
        }
    }
    free(next->tls_certificate);
    free(next->tls_key);
    next->tls_certificate = crt;
    next->tls_key = key;
    return KG_OK;
}

/* Copies running's value of d into next. */
static enum kg_status
keep(const struct startup_only *d, const struct kg_config *running, struct kg_config *next)
{
    const char *from = (const char *)running + d->off;
    char *to = (char *)next + d->off;
    char *copy;

    switch (d->kind) {
    case R_STRING:
        copy = strdup(*(char *const *)(const void *)from);
        if (copy == NULL)
            return KG_ENOMEM;
        free(*(char **)(void *)to);
        *(char **)(void *)to = copy;
        return KG_OK;
    case R_INT:
        memcpy(to, from, sizeof(int));
        return KG_OK;
    case R_BOOL:
        memcpy(to, from, sizeof(bool));
        return KG_OK;
    case R_DURATION:
    case R_BYTES:
        memcpy(to, from, sizeof(int64_t));
        return KG_OK;
    case R_THROTTLE:
        next->auth_throttle_count = running->auth_throttle_count;
        next->auth_throttle_window_ms = running->auth_throttle_window_ms;
        next->auth_throttle_cooldown_ms = running->auth_throttle_cooldown_ms;
        return KG_OK;
    case R_TLS:
        return keep_tls(running, next);
    case R_CREDITS:
        next->credits_mode = running->credits_mode;
        return KG_OK;
    }
    return KG_OK;
}

enum kg_status
kg_reload_keep_startup_values(const struct kg_config *running, struct kg_config *next,
                              kg_config_report_fn report, void *ctx, size_t *kept)
{
    size_t n = 0;

    if (kept != NULL)
        *kept = 0;
    for (size_t i = 0; i < NSTARTUP_ONLY; i++) {
        const struct startup_only *d = &startup_only[i];
        char was[256], now[256], line[640];
        enum kg_status rc;

        if (same(d, running, next))
            continue;
        show(d, running, was, sizeof(was));
        show(d, next, now, sizeof(now));
        rc = keep(d, running, next);
        if (rc != KG_OK)
            return rc;
        n++;
        if (report != NULL) {
            snprintf(line, sizeof(line), "%s: changed to %s; needs a restart, keeping %s", d->name,
                     now, was);
            report(ctx, line);
        }
    }
    if (kept != NULL)
        *kept = n;
    return KG_OK;
}
