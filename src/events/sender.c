/* events/sender.c - the event sender thread (keygate/sender.h): the queue
 * the request loops report canary uses and throttle trips into, the
 * outbox fan-out to each webhook, and the deliveries with their backoff.
 * It never runs on a request loop: every step here may block on SQLite or
 * on a receiver. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "keygate/log.h"
#include "keygate/metrics.h"
#include "keygate/sender.h"
#include "keygate/store.h"
#include "keygate/throttle.h"
#include "keygate/timeutil.h"
#include "keygate/webhook.h"

#define QUEUE_MAX 256
#define PASS_MS 500
#define DELIVERIES_PER_PASS 64
#define UA_MAX 256
#define ALERT_EVERY_S 10
#define PATH_MAX_SHOWN 512

struct report {
    bool canary;
    int64_t time;
    char ip[48];
    char key_id[KG_ID_MAX];
    char tenant[KG_NAME_MAX];
    char user_id[KG_ID_MAX];
    char method[33];
    char path[PATH_MAX_SHOWN];
    char ua[UA_MAX];
};

struct kg_sender {
    struct kg_cfgswap *config;
    unsigned char audit_key[KG_AUDIT_KEY_BYTES];
    struct kg_store *store;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, woken;
    struct report *queue; /* QUEUE_MAX records, ring */
    size_t head, n;
    struct kg_throttle *canary_rate; /* canary.used reports per client IP */
};

static void
copy_cut(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static bool
enqueue(struct kg_sender *s, const struct report *r)
{
    bool ok;

    pthread_mutex_lock(&s->mu);
    ok = s->n < QUEUE_MAX;
    if (ok) {
        s->queue[(s->head + s->n) % QUEUE_MAX] = *r;
        s->n++;
        s->woken = true;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

bool
kg_sender_canary(struct kg_sender *s, const struct kg_keyent *ent, const char *client_ip,
                 const char *method, const char *path, const char *ua, int64_t now)
{
    struct report *r;
    bool ok;

    kg_metrics_canary_use();
    if (s == NULL || !kg_throttle_take(s->canary_rate, client_ip, kg_time_mono_ms(), NULL)) {
        kg_metrics_canary_unreported();
        return false;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        kg_metrics_canary_unreported();
        return false;
    }
    r->canary = true;
    r->time = now;
    copy_cut(r->ip, sizeof(r->ip), client_ip);
    copy_cut(r->key_id, sizeof(r->key_id), ent->id);
    copy_cut(r->tenant, sizeof(r->tenant), ent->tenant);
    copy_cut(r->user_id, sizeof(r->user_id), ent->user_id);
    copy_cut(r->method, sizeof(r->method), method);
    copy_cut(r->path, sizeof(r->path), path);
    copy_cut(r->ua, sizeof(r->ua), ua);
    ok = enqueue(s, r);
    if (!ok)
        kg_metrics_canary_unreported();
    free(r);
    return ok;
}

void
kg_sender_tripped(struct kg_sender *s, const char *client_ip, int64_t now)
{
    struct report r = {.canary = false, .time = now};

    if (s == NULL)
        return;
    copy_cut(r.ip, sizeof(r.ip), client_ip);
    enqueue(s, &r);
}

void
kg_sender_wake(struct kg_sender *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->woken = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* One queued report into the outbox; a canary use with its audit entry in
 * the same transaction. The key's prefix and name are read from the
 * store, not kept by the loop. A report that cannot be written is said in
 * the log and, for a canary, counted as unreported. */
static void
write_report(struct kg_sender *s, const struct report *r)
{
    struct kg_audit_entry *audit = NULL;
    struct kg_event *ev = calloc(1, sizeof(*ev));
    struct kg_key_rec *rec = NULL;
    struct kg_err err = {{0}}, gerr = {{0}};
    json_t *data = NULL;
    char *text = NULL;
    bool written = false;

    if (ev == NULL)
        goto cleanup;
    ev->time = r->time;
    if (r->canary) {
        rec = calloc(1, sizeof(*rec));
        audit = calloc(1, sizeof(*audit));
        if (rec == NULL || audit == NULL)
            goto cleanup;
        copy_cut(ev->type, sizeof(ev->type), "canary.used");
        copy_cut(ev->key_id, sizeof(ev->key_id), r->key_id);
        copy_cut(ev->tenant, sizeof(ev->tenant), r->tenant);
        copy_cut(ev->user_id, sizeof(ev->user_id), r->user_id);
        /* Without the row (deleted since?) the event goes out without them. */
        if (kg_store_key_get(s->store, r->key_id, rec, &gerr) == KG_OK) {
            copy_cut(ev->prefix, sizeof(ev->prefix), rec->prefix);
            copy_cut(ev->name, sizeof(ev->name), rec->name);
        }
        data = json_pack("{s:s, s:s, s:s, s:s?}", "client_ip", r->ip, "method", r->method, "path",
                         r->path, "user_agent", r->ua[0] != '\0' ? r->ua : NULL);
    } else {
        copy_cut(ev->type, sizeof(ev->type), "throttle.tripped");
        data = json_pack("{s:s}", "client_ip", r->ip);
    }
    text = data != NULL ? json_dumps(data, JSON_COMPACT) : NULL;
    if (text == NULL)
        goto cleanup;
    if (strlen(text) >= sizeof(ev->data)) {
        kg_err_set(&err, KG_ELIMIT, "its data is longer than %zu bytes", sizeof(ev->data) - 1);
        goto cleanup;
    }
    memcpy(ev->data, text, strlen(text) + 1);
    if (audit != NULL) {
        audit->time = r->time;
        copy_cut(audit->actor, sizeof(audit->actor), "canary");
        copy_cut(audit->tenant, sizeof(audit->tenant), r->tenant);
        copy_cut(audit->action, sizeof(audit->action), "key.canary_used");
        copy_cut(audit->object, sizeof(audit->object), r->key_id);
        copy_cut(audit->details, sizeof(audit->details), text);
    }
    written = kg_store_event_add(s->store, ev, audit, &err) == KG_OK;
cleanup:
    if (!written) {
        kg_log_warnx("events: a %s report is dropped: %s",
                     r->canary ? "canary.used" : "throttle.tripped",
                     err.msg[0] != '\0' ? err.msg : "out of memory");
        if (r->canary)
            kg_metrics_canary_unreported();
    }
    free(text);
    json_decref(data);
    free(audit);
    free(rec);
    free(ev);
}

static void
drain_queue(struct kg_sender *s)
{
    struct report *r = malloc(sizeof(*r));

    for (;;) {
        bool got = false;

        pthread_mutex_lock(&s->mu);
        if (r != NULL && s->n > 0) {
            *r = s->queue[s->head];
            s->head = (s->head + 1) % QUEUE_MAX;
            s->n--;
            got = true;
        }
        pthread_mutex_unlock(&s->mu);
        if (!got)
            break;
        write_report(s, r);
    }
    free(r);
}

/* The wait before attempt number attempts + 1 (attempts made so far). */
static int64_t
backoff_s(int64_t attempts)
{
    int64_t d = 1;

    for (int64_t i = 1; i < attempts && d < KG_SENDER_BACKOFF_MAX_S; i++)
        d *= 2;
    return d < KG_SENDER_BACKOFF_MAX_S ? d : KG_SENDER_BACKOFF_MAX_S;
}

static bool
stopping(struct kg_sender *s)
{
    bool stop;

    pthread_mutex_lock(&s->mu);
    stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Fans out and delivers what is due for one endpoint. */
static void
serve_webhook(struct kg_sender *s, const struct kg_config *cfg, const struct kg_webhook *w,
              struct kg_event *ev)
{
    char types[512] = "", error[256];
    struct kg_err err = {{0}};
    size_t used = 0;

    if (w->nevents > 0) {
        used = (size_t)snprintf(types, sizeof(types), ",");
        for (size_t i = 0; i < w->nevents && used < sizeof(types); i++)
            used += (size_t)snprintf(types + used, sizeof(types) - used, "%s,", w->events[i]);
    }
    if (kg_store_event_fanout(s->store, w->url, types, kg_time_now(), KG_SENDER_RETRY_WINDOW_S,
                              NULL, &err) != KG_OK) {
        kg_log_warnx("events: %s", err.msg);
        return;
    }
    for (int i = 0; i < DELIVERIES_PER_PASS && !stopping(s); i++) {
        int64_t attempts, now = kg_time_now(), next_at = 0, wait;
        enum kg_status rc;
        long status;
        char *body;
        bool ok;

        rc = kg_store_delivery_due(s->store, w->url, now, ev, &attempts, &err);
        if (rc == KG_ENOTFOUND)
            return;
        if (rc != KG_OK) {
            kg_log_warnx("events: %s", err.msg);
            return;
        }
        body = kg_webhook_body(ev);
        if (body == NULL)
            return;
        ok = kg_webhook_post(w, ev, body, now, cfg->webhook_timeout_ms, &status, error,
                             sizeof(error));
        free(body);
        now = kg_time_now();
        if (!ok) {
            wait = backoff_s(attempts + 1);
            /* Retried for 24 hours after the event, then given up. */
            if (now + wait <= ev->time + KG_SENDER_RETRY_WINDOW_S)
                next_at = now + wait;
            kg_log_warnx("events: %s to %s: %s%s", ev->id, w->url, error,
                         next_at > 0 ? ", will retry" : ", giving up");
        }
        if (kg_store_delivery_done(s->store, ev->seq, w->url, ok, next_at, status, error, now,
                                   &err) != KG_OK) {
            kg_log_warnx("events: %s", err.msg);
            return;
        }
        kg_metrics_event_delivery(ok, !ok && next_at == 0);
    }
}

static void *
run(void *arg)
{
    struct kg_sender *s = arg;
    struct kg_event *ev = malloc(sizeof(*ev));
    int64_t last_scan_ms = 0;

    for (;;) {
        const struct kg_config *cfg;
        struct timespec until;
        bool stop;

        drain_queue(s);
        cfg = kg_cfgswap_acquire(s->config);
        /* The clock's alerts, at most every ALERT_EVERY_S. */
        if (kg_time_mono_ms() - last_scan_ms >= ALERT_EVERY_S * 1000 || last_scan_ms == 0) {
            struct kg_err err = {{0}};

            last_scan_ms = kg_time_mono_ms();
            if (kg_store_alerts_scan(s->store, kg_time_now(), cfg->key_expiring_alert_s,
                                     cfg->key_idle_alert_s, NULL, &err) != KG_OK)
                kg_log_warnx("events: %s", err.msg);
        }
        for (size_t i = 0; ev != NULL && i < cfg->nwebhooks && !stopping(s); i++)
            serve_webhook(s, cfg, &cfg->webhooks[i], ev);
        kg_cfgswap_release(cfg);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += PASS_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->woken)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0)
                break;
        s->woken = false;
        stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
    }
    drain_queue(s); /* what the loops reported before they stopped */
    free(ev);
    return NULL;
}

enum kg_status
kg_sender_start(struct kg_cfgswap *config, const struct kg_secret *secret, struct kg_sender **out,
                struct kg_err *err)
{
    const struct kg_config *cfg = kg_cfgswap_acquire(config);
    struct kg_sender *s = calloc(1, sizeof(*s));
    enum kg_status rc;

    *out = NULL;
    if (s == NULL) {
        kg_cfgswap_release(cfg);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    s->config = config;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->queue = calloc(QUEUE_MAX, sizeof(*s->queue));
    rc = s->queue == NULL ? kg_err_set(err, KG_ENOMEM, "out of memory") : KG_OK;
    if (rc == KG_OK)
        rc = kg_throttle_new(KG_SENDER_CANARY_PER_MIN, 60000, 4096, &s->canary_rate, err);
    if (rc == KG_OK)
        rc = kg_store_open(cfg->database, &s->store, err);
    kg_cfgswap_release(cfg);
    if (rc == KG_OK) {
        kg_digest_audit_key(secret, s->audit_key);
        kg_store_set_audit_key(s->store, s->audit_key);
        sodium_memzero(s->audit_key, sizeof(s->audit_key));
        if (pthread_create(&s->thread, NULL, run, s) != 0)
            rc = kg_err_set(err, KG_ENOMEM, "cannot start the event sender thread");
    }
    if (rc != KG_OK) {
        kg_store_close(s->store);
        kg_throttle_free(s->canary_rate);
        free(s->queue);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return rc;
    }
    *out = s;
    return KG_OK;
}

void
kg_sender_stop(struct kg_sender *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    kg_store_close(s->store);
    kg_throttle_free(s->canary_rate);
    free(s->queue);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
