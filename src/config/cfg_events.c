/* config/cfg_events.c - the directives of key events and defences (issue
 * 18): webhook endpoints with their event types and signing secret,
 * leak_action, and the alert leads (key_expiring_alert, key_idle_alert).
 * The secret file is read here, so `keygate serve -t` and a reload refuse
 * a missing or short secret at its line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/timeutil.h"
#include "config/config_int.h"

/* The event types keygate sends (docs/events.md). */
static const char *const event_types[] = {
    "key.created", "key.rotated", "key.revoked", "key.expiring",     "key.expired",
    "key.unused",  "key.leaked",  "canary.used", "throttle.tripped", "quota.threshold",
};

#define SECRET_MIN 16
#define SECRET_MAX 1024
#define ENV_WORDS_MAX 32

static bool
known_type(const char *t)
{
    for (size_t i = 0; i < sizeof(event_types) / sizeof(event_types[0]); i++)
        if (strcmp(event_types[i], t) == 0)
            return true;
    return false;
}

bool
kg_config_webhook_wants(const struct kg_webhook *w, const char *type)
{
    if (w->nevents == 0)
        return true;
    for (size_t i = 0; i < w->nevents; i++)
        if (strcmp(w->events[i], type) == 0)
            return true;
    return false;
}

static void
webhook_cleanup(struct kg_webhook *w)
{
    free(w->url);
    for (size_t i = 0; i < w->nevents; i++)
        free(w->events[i]);
    free(w->events);
    free(w->secret_file);
    if (w->secret != NULL)
        memset(w->secret, 0, w->secret_len);
    free(w->secret);
    memset(w, 0, sizeof(*w));
}

void
kg_cfg_webhooks_free(struct kg_config *cfg)
{
    for (size_t i = 0; i < cfg->nwebhooks; i++)
        webhook_cleanup(&cfg->webhooks[i]);
    free(cfg->webhooks);
    cfg->webhooks = NULL;
    cfg->nwebhooks = 0;
}

/* Reads the secret: the file's bytes without one trailing newline. */
static bool
read_secret(struct kg_cfg_loader *ld, const char *path, struct kg_webhook *w)
{
    unsigned char buf[SECRET_MAX + 2];
    size_t n;
    FILE *fp = fopen(path, "rb");

    if (fp == NULL) {
        kg_cfg_complain(ld, "webhook secret_file " SHOWN ": %s", path, strerror(errno));
        return false;
    }
    n = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n < SECRET_MIN || n > SECRET_MAX) {
        kg_cfg_complain(ld, "webhook secret_file " SHOWN ": the secret must be %d to %d bytes",
                        path, SECRET_MIN, SECRET_MAX);
        memset(buf, 0, sizeof(buf));
        return false;
    }
    w->secret = malloc(n);
    if (w->secret != NULL)
        memcpy(w->secret, buf, n);
    w->secret_len = n;
    memset(buf, 0, sizeof(buf));
    return w->secret != NULL;
}

static enum kg_status
parse_words(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d, const char *const *argv,
            size_t argc)
{
    struct kg_config *cfg = ld->cfg;
    struct kg_webhook w = {0}, *grown;
    size_t nev;
    bool ok = true;

    if (argc < 3 || strcmp(argv[argc - 2], "secret_file") != 0) {
        kg_cfg_complain(ld, "%s wants %s (webhook URL [EVENT...] secret_file PATH)", d->name,
                        d->want);
        return KG_EINVAL;
    }
    if (strncmp(argv[0], "http://", 7) != 0 && strncmp(argv[0], "https://", 8) != 0) {
        kg_cfg_complain(ld, "%s wants an http:// or https:// URL, got \"" SHOWN "\"", d->name,
                        argv[0]);
        return KG_EINVAL;
    }
    nev = argc - 3;
    for (size_t i = 0; i < nev; i++) {
        if (!known_type(argv[1 + i])) {
            kg_cfg_complain(ld,
                            "%s: unknown event type \"" SHOWN "\" (see docs/events.md: "
                            "key.created, key.rotated, key.revoked, ...)",
                            d->name, argv[1 + i]);
            ok = false;
        }
    }
    if (!ok)
        return KG_EINVAL;
    w.url = strdup(argv[0]);
    w.secret_file = strdup(argv[argc - 1]);
    w.events = nev > 0 ? calloc(nev, sizeof(*w.events)) : NULL;
    if (w.url == NULL || w.secret_file == NULL || (nev > 0 && w.events == NULL))
        goto nomem;
    for (; w.nevents < nev; w.nevents++)
        if ((w.events[w.nevents] = strdup(argv[1 + w.nevents])) == NULL)
            goto nomem;
    if (!read_secret(ld, w.secret_file, &w)) {
        bool oom = w.secret_len >= SECRET_MIN && w.secret == NULL;

        webhook_cleanup(&w);
        return oom ? KG_ENOMEM : KG_EINVAL;
    }
    grown = realloc(cfg->webhooks, (cfg->nwebhooks + 1) * sizeof(*grown));
    if (grown == NULL)
        goto nomem;
    cfg->webhooks = grown;
    cfg->webhooks[cfg->nwebhooks++] = w;
    return KG_OK;
nomem:
    webhook_cleanup(&w);
    return KG_ENOMEM;
}

/* webhook URL [EVENT...] secret_file PATH; several lines add endpoints.
 * KEYGATE_WEBHOOK holds the same words and replaces the file's lines. */
enum kg_status
kg_cfg_parse_webhook(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                     const char *const *argv, size_t argc)
{
    const char *words[ENV_WORDS_MAX];
    enum kg_status rc;
    size_t n = 0;
    char *copy, *p;

    if (ld->env == NULL)
        return parse_words(ld, d, argv, argc);
    copy = strdup(argv[0]);
    if (copy == NULL)
        return KG_ENOMEM;
    /* The variable holds the directive's words, split at blanks. */
    for (p = copy; *p != '\0';) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (*p == '\0')
            break;
        if (n == ENV_WORDS_MAX) {
            kg_cfg_complain(ld, "too many words (at most %d)", ENV_WORDS_MAX);
            free(copy);
            return KG_EINVAL;
        }
        words[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
    }
    kg_cfg_webhooks_free(ld->cfg);
    rc = parse_words(ld, d, words, n);
    free(copy);
    return rc;
}

/* key_expiring_alert / key_idle_alert: a duration (14d, 30d; s m h d w) or off. */
enum kg_status
kg_cfg_parse_alert(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                   const char *const *argv, size_t argc)
{
    int64_t *field = strcmp(d->name, "key_idle_alert") == 0 ? &ld->cfg->key_idle_alert_s
                                                            : &ld->cfg->key_expiring_alert_s;
    struct kg_err err = {{0}};
    int64_t s;

    if (argc != 1) {
        kg_cfg_complain_count(ld, d, argc);
        return KG_EINVAL;
    }
    if (strcmp(argv[0], "off") == 0) {
        *field = 0;
        return KG_OK;
    }
    if (kg_time_parse_duration(argv[0], &s, &err) != KG_OK || s > 3650LL * 86400) {
        kg_cfg_complain_want(ld, d, argv[0]);
        return KG_EINVAL;
    }
    *field = s;
    return KG_OK;
}

bool
kg_cfg_choose_leak_action(const char *v, int *out)
{
    if (strcmp(v, "revoke") == 0)
        *out = KG_LEAK_REVOKE;
    else if (strcmp(v, "flag") == 0)
        *out = KG_LEAK_FLAG;
    else
        return false;
    return true;
}
