/* obs/metrics.c - the counters behind GET /metrics and their text form.
 *
 * Histograms keep one non-cumulative count per bucket (one relaxed add per
 * observation); the renderer sums them into Prometheus' cumulative buckets
 * and takes _count from that same sum, so +Inf always equals _count even
 * while requests land during a scrape. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/metrics.h"

#ifndef KEYGATE_VERSION
#define KEYGATE_VERSION "0.0.0"
#endif

#define NBUCKETS 16

/* Upper bounds in microseconds and as written in the `le` label. */
static const int64_t bucket_us[NBUCKETS] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static const char *const bucket_le[NBUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10",
};

struct histogram {
    _Atomic uint64_t bucket[NBUCKETS + 1]; /* the last one: above every bound */
    _Atomic uint64_t sum_us;
};

static const char *const outcome_name[KG_OUTCOME_COUNT] = {
    "allowed",        "unauthenticated", "forbidden",   "rate_limited",
    "quota_exceeded", "upstream_error",  "bad_request",
};

static const char *const class_name[4] = {"2xx", "3xx", "4xx", "5xx"};

static _Atomic uint64_t requests[KG_OUTCOME_COUNT];
static _Atomic uint64_t upstream_class[4];
static struct histogram request_hist;
static struct histogram upstream_hist;
static _Atomic uint64_t access_log_dropped;
static _Atomic uint64_t store_errors;
static _Atomic uint64_t accept_errors[KG_ACCEPT_REASON_COUNT];
static const char *const accept_reason_name[KG_ACCEPT_REASON_COUNT] = {"emfile", "enfile", "enomem",
                                                                       "other"};
static _Atomic uint64_t connections_refused;
static _Atomic uint64_t header_timeouts;
static _Atomic uint64_t limiter_calls, limiter_errors, limiter_unavailable[2];
static _Atomic int limiter_up = -1;
static _Atomic uint64_t canary_uses, canary_unreported;
static _Atomic uint64_t deliveries_ok, deliveries_retry, deliveries_given_up;

void
kg_metrics_canary_use(void)
{
    atomic_fetch_add_explicit(&canary_uses, 1, memory_order_relaxed);
}

void
kg_metrics_canary_unreported(void)
{
    atomic_fetch_add_explicit(&canary_unreported, 1, memory_order_relaxed);
}

void
kg_metrics_event_delivery(bool delivered, bool final)
{
    atomic_fetch_add_explicit(delivered ? &deliveries_ok
                              : final   ? &deliveries_given_up
                                        : &deliveries_retry,
                              1, memory_order_relaxed);
}

enum kg_outcome
kg_metrics_outcome_of(enum kg_verdict v)
{
    switch (v) {
    case KG_ALLOW:
        return KG_OUTCOME_ALLOWED;
    case KG_DENY_NO_CREDENTIAL:
    case KG_DENY_INVALID:
    case KG_DENY_EXPIRED:
        return KG_OUTCOME_UNAUTHENTICATED;
    case KG_DENY_SCOPE:
    case KG_DENY_NO_SCOPES:
    case KG_DENY_NO_ROUTE:
    case KG_DENY_ROLE:
    case KG_DENY_IP:
        return KG_OUTCOME_FORBIDDEN;
    case KG_DENY_RATE:
    case KG_DENY_THROTTLED:
        return KG_OUTCOME_RATE_LIMITED;
    case KG_DENY_QUOTA:
        return KG_OUTCOME_QUOTA_EXCEEDED;
    case KG_DENY_LIMITER:
        /* Not the key's doing: counted by keygate_limiter_unavailable_total. */
        return KG_OUTCOME_NONE;
    }
    return KG_OUTCOME_NONE;
}

const char *
kg_metrics_outcome_name(enum kg_outcome o)
{
    if (o < 0 || o >= KG_OUTCOME_COUNT)
        return NULL;
    return outcome_name[o];
}

void
kg_metrics_accept_error(enum kg_accept_reason r)
{
    if ((unsigned)r < KG_ACCEPT_REASON_COUNT)
        atomic_fetch_add_explicit(&accept_errors[r], 1, memory_order_relaxed);
}

void
kg_metrics_connection_refused(void)
{
    atomic_fetch_add_explicit(&connections_refused, 1, memory_order_relaxed);
}

void
kg_metrics_header_timeout(void)
{
    atomic_fetch_add_explicit(&header_timeouts, 1, memory_order_relaxed);
}

void
kg_metrics_limiter_call(void)
{
    atomic_fetch_add_explicit(&limiter_calls, 1, memory_order_relaxed);
}

void
kg_metrics_limiter_error(void)
{
    atomic_fetch_add_explicit(&limiter_errors, 1, memory_order_relaxed);
}

void
kg_metrics_limiter_up(int up)
{
    atomic_store_explicit(&limiter_up, up, memory_order_relaxed);
}

void
kg_metrics_limiter_unavailable(bool open)
{
    atomic_fetch_add_explicit(&limiter_unavailable[open ? 1 : 0], 1, memory_order_relaxed);
}

void
kg_metrics_store_error(void)
{
    atomic_fetch_add_explicit(&store_errors, 1, memory_order_relaxed);
}

void
kg_metrics_access_log_dropped(void)
{
    atomic_fetch_add_explicit(&access_log_dropped, 1, memory_order_relaxed);
}

void
kg_metrics_count(enum kg_outcome o)
{
    if (o < 0 || o >= KG_OUTCOME_COUNT)
        return;
    atomic_fetch_add_explicit(&requests[o], 1, memory_order_relaxed);
}

static void
observe(struct histogram *h, int64_t us)
{
    size_t i = 0;

    if (us < 0)
        us = 0;
    while (i < NBUCKETS && us > bucket_us[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
}

void
kg_metrics_request_time(int64_t us)
{
    observe(&request_hist, us);
}

void
kg_metrics_upstream(unsigned status, int64_t us)
{
    if (status >= 200 && status <= 599)
        atomic_fetch_add_explicit(&upstream_class[status / 100 - 2], 1, memory_order_relaxed);
    observe(&upstream_hist, us);
}

void
kg_metrics_reset(void)
{
    size_t i;

    for (i = 0; i < KG_OUTCOME_COUNT; i++)
        atomic_store(&requests[i], 0);
    for (i = 0; i < 4; i++)
        atomic_store(&upstream_class[i], 0);
    for (i = 0; i <= NBUCKETS; i++) {
        atomic_store(&request_hist.bucket[i], 0);
        atomic_store(&upstream_hist.bucket[i], 0);
    }
    atomic_store(&access_log_dropped, 0);
    atomic_store(&store_errors, 0);
    for (i = 0; i < KG_ACCEPT_REASON_COUNT; i++)
        atomic_store(&accept_errors[i], 0);
    atomic_store(&connections_refused, 0);
    atomic_store(&header_timeouts, 0);
    atomic_store(&limiter_calls, 0);
    atomic_store(&limiter_errors, 0);
    atomic_store(&limiter_unavailable[0], 0);
    atomic_store(&limiter_unavailable[1], 0);
    atomic_store(&canary_uses, 0);
    atomic_store(&canary_unreported, 0);
    atomic_store(&deliveries_ok, 0);
    atomic_store(&deliveries_retry, 0);
    atomic_store(&deliveries_given_up, 0);
    atomic_store(&request_hist.sum_us, 0);
    atomic_store(&upstream_hist.sum_us, 0);
}

/* ---- rendering ---- */

struct out {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void
put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        {
            size_t ncap = o->cap * 2 + (size_t)n;
            char *nb = realloc(o->buf, ncap);

            if (nb == NULL) {
                o->failed = true;
                return;
            }
            o->buf = nb;
            o->cap = ncap;
        }
    }
}

static void
header(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
render_histogram(struct out *o, const char *name, const char *help, struct histogram *h)
{
    uint64_t cum = 0, sum_us;
    size_t i;

    header(o, name, "histogram", help);
    for (i = 0; i < NBUCKETS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        put(o, "%s_bucket{le=\"%s\"} %llu\n", name, bucket_le[i], (unsigned long long)cum);
    }
    cum += atomic_load_explicit(&h->bucket[NBUCKETS], memory_order_relaxed);
    sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    put(o, "%s_sum %llu.%06llu\n", name, (unsigned long long)(sum_us / 1000000),
        (unsigned long long)(sum_us % 1000000));
    put(o, "%s_count %llu\n", name, (unsigned long long)cum);
}

char *
kg_metrics_render(const struct kg_metrics_gauges *g, size_t *len)
{
    struct out o = {.cap = 8192};
    size_t i;

    o.buf = malloc(o.cap);
    if (o.buf == NULL)
        return NULL;
    o.buf[0] = '\0';

    header(&o, "keygate_build_info", "gauge", "Always 1; the version is in the label.");
    put(&o, "keygate_build_info{version=\"%s\"} 1\n", KEYGATE_VERSION);

    header(&o, "keygate_requests_total", "counter",
           "Requests on the main listener by the outcome keygate gave them.");
    for (i = 0; i < KG_OUTCOME_COUNT; i++)
        put(&o, "keygate_requests_total{outcome=\"%s\"} %llu\n", outcome_name[i],
            (unsigned long long)atomic_load_explicit(&requests[i], memory_order_relaxed));

    render_histogram(&o, "keygate_request_duration_seconds",
                     "Time spent inside keygate per request, upstream time excluded.",
                     &request_hist);
    render_histogram(&o, "keygate_upstream_duration_seconds",
                     "Time from starting the upstream request to its response headers.",
                     &upstream_hist);

    header(&o, "keygate_upstream_responses_total", "counter",
           "Upstream responses by status class.");
    for (i = 0; i < 4; i++)
        put(&o, "keygate_upstream_responses_total{code=\"%s\"} %llu\n", class_name[i],
            (unsigned long long)atomic_load_explicit(&upstream_class[i], memory_order_relaxed));

    if (g->keys_known) {
        header(&o, "keygate_keys", "gauge", "API keys in the store by state.");
        put(&o, "keygate_keys{state=\"active\"} %llu\n", (unsigned long long)g->keys_active);
        put(&o, "keygate_keys{state=\"expired\"} %llu\n", (unsigned long long)g->keys_expired);
        put(&o, "keygate_keys{state=\"revoked\"} %llu\n", (unsigned long long)g->keys_revoked);
    }
    if (g->reload_age_s >= 0) {
        header(&o, "keygate_key_reload_age_seconds", "gauge",
               "Seconds since the key snapshot in use was built.");
        put(&o, "keygate_key_reload_age_seconds %.3f\n", g->reload_age_s);
    }
    header(&o, "keygate_access_log_dropped_total", "counter",
           "Access log lines dropped because the log's buffer was full.");
    put(&o, "keygate_access_log_dropped_total %llu\n",
        (unsigned long long)atomic_load_explicit(&access_log_dropped, memory_order_relaxed));
    header(&o, "keygate_store_errors_total", "counter",
           "Polls of the store that failed; keys are decided from memory meanwhile.");
    put(&o, "keygate_store_errors_total %llu\n",
        (unsigned long long)atomic_load_explicit(&store_errors, memory_order_relaxed));
    header(&o, "keygate_accept_errors_total", "counter",
           "Failed accept() calls on either listener by reason; accepting resumes by itself.");
    for (i = 0; i < KG_ACCEPT_REASON_COUNT; i++)
        put(&o, "keygate_accept_errors_total{reason=\"%s\"} %llu\n", accept_reason_name[i],
            (unsigned long long)atomic_load_explicit(&accept_errors[i], memory_order_relaxed));
    header(&o, "keygate_connections_refused_total", "counter",
           "Connections closed at accept: their IP had max_connections_per_ip open.");
    put(&o, "keygate_connections_refused_total %llu\n",
        (unsigned long long)atomic_load_explicit(&connections_refused, memory_order_relaxed));
    header(&o, "keygate_header_timeouts_total", "counter",
           "Connections closed: no complete header block within client_header_timeout.");
    put(&o, "keygate_header_timeouts_total %llu\n",
        (unsigned long long)atomic_load_explicit(&header_timeouts, memory_order_relaxed));
    if (atomic_load_explicit(&limiter_up, memory_order_relaxed) >= 0) {
        header(&o, "keygate_limiter_redis_up", "gauge",
               "1 while the Redis of shared rate limits answers, else 0.");
        put(&o, "keygate_limiter_redis_up %d\n",
            atomic_load_explicit(&limiter_up, memory_order_relaxed));
        header(&o, "keygate_limiter_redis_calls_total", "counter",
               "Rate-limit script calls sent to Redis (lease refills).");
        put(&o, "keygate_limiter_redis_calls_total %llu\n",
            (unsigned long long)atomic_load_explicit(&limiter_calls, memory_order_relaxed));
        header(&o, "keygate_limiter_redis_errors_total", "counter",
               "Redis failures: connections lost or timed out, error replies.");
        put(&o, "keygate_limiter_redis_errors_total %llu\n",
            (unsigned long long)atomic_load_explicit(&limiter_errors, memory_order_relaxed));
        header(&o, "keygate_limiter_unavailable_total", "counter",
               "Requests of rate-limited keys answered by limits_on_error while Redis could not.");
        put(&o, "keygate_limiter_unavailable_total{policy=\"closed\"} %llu\n",
            (unsigned long long)atomic_load_explicit(&limiter_unavailable[0],
                                                     memory_order_relaxed));
        put(&o, "keygate_limiter_unavailable_total{policy=\"open\"} %llu\n",
            (unsigned long long)atomic_load_explicit(&limiter_unavailable[1],
                                                     memory_order_relaxed));
    }
    header(&o, "keygate_canary_uses_total", "counter",
           "Requests that presented a canary key (each refused like an unknown key).");
    put(&o, "keygate_canary_uses_total %llu\n",
        (unsigned long long)atomic_load_explicit(&canary_uses, memory_order_relaxed));
    header(&o, "keygate_canary_unreported_total", "counter",
           "Canary uses not reported as events: over the per-IP report rate, "
           "or dropped (queue full, out of memory, store write failed).");
    put(&o, "keygate_canary_unreported_total %llu\n",
        (unsigned long long)atomic_load_explicit(&canary_unreported, memory_order_relaxed));
    header(&o, "keygate_webhook_deliveries_total", "counter",
           "Webhook delivery attempts by this process, by result.");
    put(&o, "keygate_webhook_deliveries_total{result=\"delivered\"} %llu\n",
        (unsigned long long)atomic_load_explicit(&deliveries_ok, memory_order_relaxed));
    put(&o, "keygate_webhook_deliveries_total{result=\"retry\"} %llu\n",
        (unsigned long long)atomic_load_explicit(&deliveries_retry, memory_order_relaxed));
    put(&o, "keygate_webhook_deliveries_total{result=\"failed\"} %llu\n",
        (unsigned long long)atomic_load_explicit(&deliveries_given_up, memory_order_relaxed));
    if (g->events_known) {
        header(&o, "keygate_events", "gauge",
               "Webhook deliveries in the store by state: pending, delivered, failed.");
        put(&o, "keygate_events{state=\"pending\"} %lld\n", (long long)g->deliveries_pending);
        put(&o, "keygate_events{state=\"delivered\"} %lld\n", (long long)g->deliveries_delivered);
        put(&o, "keygate_events{state=\"failed\"} %lld\n", (long long)g->deliveries_failed);
    }
    header(&o, "keygate_connections", "gauge", "Open client connections on the main listener.");
    put(&o, "keygate_connections %ld\n", g->connections);

    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    if (len != NULL)
        *len = o.len;
    return o.buf;
}
