/* keygate/metrics.h - process-wide counters and histograms for GET /metrics.
 *
 * The request path only adds to relaxed _Atomic uint64_t cells: no lock, no
 * allocation. The text (Prometheus exposition format 0.0.4) is built on
 * demand by the admin thread. Labels are fixed sets (outcome, code class,
 * key state, bucket bound): never a key id or a path, whose number has no
 * bound. Per-key figures belong to the usage API.
 *
 * Threads: every function may be called from any thread.
 */
#ifndef KEYGATE_METRICS_H
#define KEYGATE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/decide.h"

#define KG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The one outcome each request counts as (keygate_requests_total). */
enum kg_outcome {
    KG_OUTCOME_ALLOWED = 0,     /* let through and answered by the upstream */
    KG_OUTCOME_UNAUTHENTICATED, /* 401: no key, invalid, expired */
    KG_OUTCOME_FORBIDDEN,       /* 403: scope, role, no route, no scopes */
    KG_OUTCOME_RATE_LIMITED,    /* 429: rate limit or brute-force throttle */
    KG_OUTCOME_QUOTA_EXCEEDED,  /* 429: out of credits */
    KG_OUTCOME_UPSTREAM_ERROR,  /* 502/504: the upstream failed or timed out */
    KG_OUTCOME_BAD_REQUEST,     /* 400/431: refused by request hygiene */
    KG_OUTCOME_COUNT,
    KG_OUTCOME_NONE = -1, /* not counted (signup, drain, internal error) */
};

/* What a decision verdict counts as; KG_OUTCOME_ALLOWED for KG_ALLOW. */
enum kg_outcome kg_metrics_outcome_of(enum kg_verdict v);

/* "allowed", "unauthenticated", ...: the label value of o; NULL for
 * KG_OUTCOME_NONE (the access log writes null). */
const char *kg_metrics_outcome_name(enum kg_outcome o);

/* One access log line dropped because the log's buffer was full. Lock-free. */
void kg_metrics_access_log_dropped(void);
/* A poll of the store that failed (keygate_store_errors_total): the
 * daemon keeps deciding from its cache meanwhile. */
void kg_metrics_store_error(void);

/* Why accept() failed on a listener (keygate_accept_errors_total{reason}). */
enum kg_accept_reason {
    KG_ACCEPT_EMFILE = 0, /* the process's descriptor limit */
    KG_ACCEPT_ENFILE,     /* the system's descriptor limit */
    KG_ACCEPT_ENOMEM,     /* ENOBUFS or ENOMEM */
    KG_ACCEPT_OTHER,
    KG_ACCEPT_REASON_COUNT,
};

/* One failed accept() of reason r. Lock-free. */
void kg_metrics_accept_error(enum kg_accept_reason r);

/* One connection closed at once because its IP already had
 * max_connections_per_ip open (keygate_connections_refused_total). */
void kg_metrics_connection_refused(void);

/* One connection closed because its header block took longer than
 * client_header_timeout (keygate_header_timeouts_total). */
void kg_metrics_header_timeout(void);

/* Shared rate limits (limits redis://): one script call sent to Redis
 * (keygate_limiter_redis_calls_total), one failure (a lost or timed-out
 * connection, an error reply: keygate_limiter_redis_errors_total), whether
 * Redis answers (1), not (0), or is not used (-1: the gauge is left out),
 * and one request answered by limits_on_error
 * (keygate_limiter_unavailable_total{policy="closed"|"open"}). Lock-free. */
void kg_metrics_limiter_call(void);
void kg_metrics_limiter_error(void);
void kg_metrics_limiter_up(int up);
void kg_metrics_limiter_unavailable(bool open);

/* Counts one request as o; KG_OUTCOME_NONE is a no-op. Lock-free. */
void kg_metrics_count(enum kg_outcome o);

/* Time inside keygate for one request, in microseconds. Lock-free. */
void kg_metrics_request_time(int64_t us);

/* An upstream's final status and the time from relay start to its headers. */
void kg_metrics_upstream(unsigned status, int64_t us);

/* What the scraper knows at scrape time and the counters do not hold. */
struct kg_metrics_gauges {
    bool keys_known; /* false: keygate_keys is left out */
    uint64_t keys_active, keys_expired, keys_revoked;
    double reload_age_s; /* < 0: keygate_key_reload_age_seconds left out */
    long connections;
    /* Issue 18: webhook deliveries in the store by state (every process's);
     * events_known false leaves them out. */
    bool events_known;
    int64_t deliveries_pending, deliveries_delivered, deliveries_failed;
};

/* Issue 18. A canary key was presented (keygate_canary_uses_total); one
 * whose report was dropped: by the per-IP rate, a full queue, no memory or
 * a failed store write (keygate_canary_unreported_total). */
void kg_metrics_canary_use(void);
void kg_metrics_canary_unreported(void);
/* A webhook delivery attempt by this process: delivered, or failed (given
 * up for good when final) - keygate_webhook_deliveries_total{result}. */
void kg_metrics_event_delivery(bool delivered, bool final);

/* The whole exposition text, NUL-terminated (*len without the NUL); NULL
 * when out of memory. Caller frees. */
char *kg_metrics_render(const struct kg_metrics_gauges *g, size_t *len);

/* Sets every counter to zero, for tests. */
void kg_metrics_reset(void);

#endif
