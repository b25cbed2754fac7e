/* daemon/serve.c - the daemon's life, and the one place that wires every
 * module together (which is why it sits above server/, http/, auth/ and
 * proxy/ rather than in one of them): startup order (config -> store ->
 * secret -> admin listener -> key cache load -> worker -> listeners -> loops),
 * the main thread's duties (signals, reloading the config on SIGHUP,
 * noticing key changes made by other processes, writing last-used times
 * once a second) and the drain on SIGTERM. Requests are never handled on
 * this thread. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "keygate/accesslog.h"
#include "keygate/admin.h"
#include "keygate/accept.h"
#include "keygate/cfgswap.h"
#include "keygate/keyreserve.h"
#include "keygate/connlimit.h"
#include "keygate/front.h"
#include "keygate/instance.h"
#include "keygate/keywatch.h"
#include "keygate/limiter.h"
#include "keygate/log.h"
#include "keygate/loop.h"
#include "keygate/redislimit.h"
#include "keygate/metrics.h"
#include "keygate/reload.h"
#include "keygate/sender.h"
#include "keygate/serve.h"
#include "keygate/throttle.h"
#include "keygate/storefault.h"
#include "keygate/timeutil.h"
#include "keygate/tls.h"
#include "keygate/worker.h"

#define KG_MAX_WORKERS 64
#define POLL_MS 200
#define FLUSH_MS 1000
/* Change log rows are kept this long (seconds), trimmed every TRIM_MS. */
#define CHANGE_KEEP_S 3600
#define TRIM_MS 60000
/* A key unknown to the cache: at most one store lookup this often (keywatch.h). */
#define KEYWATCH_MS 10
/* Signup: 5 attempts per minute per client IP, remembered for this many
 * clients at once; jobs waiting for the worker beyond the queue get a 503. */
#define SIGNUP_LIMIT 5
#define SIGNUP_PERIOD_MS 60000
#define SIGNUP_CLIENTS 4096
#define AUTH_THROTTLE_CLIENTS 65536 /* about 2 MiB for both tables */
#define WORKER_QUEUE_MAX 64

static void
report_stderr(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "%s\n", line);
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: keygate serve [-c FILE] [-t]\n"
               "  -c, --config FILE  configuration file (default: $KEYGATE_CONFIG,\n"
               "                     conf/keygate.conf, /etc/keygate/keygate.conf)\n"
               "  -t, --test         check the configuration, print \"configuration OK\", exit\n");
}

static int
workers_for(const struct kg_config *cfg)
{
    long n = cfg->workers > 0 ? cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        n = 1;
    return n > KG_MAX_WORKERS ? KG_MAX_WORKERS : (int)n;
}

/* Busy buckets the in-process limiter holds (16 bytes each: 1 MiB). */
#define LIMITER_BUCKETS ((size_t)1 << 16)
/* Keys whose shared-limit leases a gateway holds at once (limits
 * redis://; about 300 bytes each: 5 MiB, touched only as keys are used). */
#define LEASE_KEYS ((size_t)1 << 14)

struct daemon_state {
    const char *config_path; /* what SIGHUP reads again; NULL: defaults and environment */
    /* inst->cfg is the startup config, held (kg_cfgswap) until exit: the
     * startup code reads it, and the directives only startup acts on never
     * change in a running daemon. Requests read rt.config's current one. */
    struct kg_instance *inst;
    struct kg_runtime rt;
    struct kg_loop *loops[KG_MAX_WORKERS];
    int nloops;
    struct kg_admin *admin;
    struct kg_limiter *limiter;  /* every key's and user's rate buckets, handed to the key cache */
    int64_t version;             /* data_version the current key snapshot was loaded at */
    struct kg_keylisten *listen; /* change notifications (PostgreSQL), or NULL */
    pthread_t main_thread;       /* where a notification's SIGUSR2 goes */
};

/* On the listener's thread: the main thread's sigtimedwait() returns and
 * it polls the change log at once instead of at the next 200 ms tick. */
static void
wake_main(void *arg)
{
    struct daemon_state *ds = arg;

    pthread_kill(ds->main_thread, SIGUSR2);
}

/* The worker thread's context is its own store handle: SQLite handles are
 * one per thread, and a signup writes a user and its key. */
static enum kg_status
worker_open_store(void *arg, void **ctx, struct kg_err *err)
{
    struct kg_runtime *rt = arg;
    unsigned char audit_key[KG_AUDIT_KEY_BYTES];
    const struct kg_config *cfg = kg_cfgswap_acquire(rt->config);
    struct kg_store *st = NULL;
    enum kg_status rc;

    rc = kg_store_open(cfg->database, &st, err);
    kg_cfgswap_release(cfg); /* database needs a restart: every config has the same */
    if (rc != KG_OK)
        return rc;
    kg_digest_audit_key(rt->secret, audit_key);
    kg_store_set_audit_key(st, audit_key);
    sodium_memzero(audit_key, sizeof(audit_key));
    *ctx = st;
    return KG_OK;
}

static void
worker_close_store(void *ctx)
{
    kg_store_close(ctx);
}

/* The rate limits' buckets: in this process, or in Redis for every
 * gateway that names it (limits redis://). */
static enum kg_status
start_limiter(struct daemon_state *ds, struct kg_err *err)
{
    const struct kg_config *cfg = ds->inst->cfg;
    enum kg_status rc;

    if (strcmp(cfg->limits, "local") == 0)
        return kg_limiter_new_local(LIMITER_BUCKETS, &ds->limiter, err);
    rc = kg_limiter_new_redis(cfg->limits, cfg->limits_lease_ms * 1000,
                              cfg->limits_timeout_ms * 1000, LEASE_KEYS, &ds->limiter, err);
    if (rc == KG_OK)
        kg_log_info("limits: shared in %s (lease %lldms, timeout %lldms, on error %s)", cfg->limits,
                    (long long)cfg->limits_lease_ms, (long long)cfg->limits_timeout_ms,
                    cfg->limits_on_error == KG_LIMITS_OPEN ? "open" : "closed");
    return rc;
}

/* The brute-force throttle's two per-IP tables, unless auth_throttle is off. */
static enum kg_status
start_auth_throttle(struct daemon_state *ds, struct kg_err *err)
{
    const struct kg_config *cfg = ds->inst->cfg;
    enum kg_status rc;

    if (cfg->auth_throttle_count == 0)
        return KG_OK;
    rc = kg_throttle_new(cfg->auth_throttle_count, cfg->auth_throttle_window_ms,
                         AUTH_THROTTLE_CLIENTS, &ds->rt.auth_failures, err);
    if (rc != KG_OK)
        return rc;
    return kg_throttle_new(1, cfg->auth_throttle_cooldown_ms, AUTH_THROTTLE_CLIENTS,
                           &ds->rt.auth_cooldown, err);
}

/* The worker thread (blocking jobs: signup, the console) and what each
 * needs: signup's per-IP limit, the console's failed sign-ins per account
 * (the same allowance and cool-down as auth_throttle's per IP). */
static enum kg_status
start_signup(struct daemon_state *ds, struct kg_err *err)
{
    const struct kg_config *cfg = ds->inst->cfg;
    enum kg_status rc;

    if (!cfg->signup && !cfg->console)
        return KG_OK;
    if (cfg->signup) {
        rc = kg_throttle_new(SIGNUP_LIMIT, SIGNUP_PERIOD_MS, SIGNUP_CLIENTS, &ds->rt.signup_limit,
                             err);
        if (rc != KG_OK)
            return rc;
    }
    if (cfg->console && cfg->auth_throttle_count > 0) {
        rc = kg_throttle_new(cfg->auth_throttle_count, cfg->auth_throttle_window_ms,
                             AUTH_THROTTLE_CLIENTS, &ds->rt.login_failures, err);
        if (rc == KG_OK)
            rc = kg_throttle_new(1, cfg->auth_throttle_cooldown_ms, AUTH_THROTTLE_CLIENTS,
                                 &ds->rt.login_cooldown, err);
        if (rc != KG_OK)
            return rc;
    }
    return kg_worker_new(WORKER_QUEUE_MAX, worker_open_store, worker_close_store, &ds->rt,
                         &ds->rt.worker, err);
}

static enum kg_status
start_loops(struct daemon_state *ds, struct kg_err *err)
{
    const struct kg_config *cfg = ds->inst->cfg;
    struct sockaddr_storage pub;
    struct MHD_Daemon *d = NULL;
    enum kg_status rc;
    int n = workers_for(cfg);

    rc = kg_front_parse_addr(cfg->listen, &pub, err);
    if (rc != KG_OK)
        return rc;
    for (int i = 0; i < n; i++) {
        rc = kg_loop_new(&ds->rt, &ds->loops[i], err);
        if (rc != KG_OK)
            return rc;
        ds->nloops++;
        int lfd;

        rc = kg_front_new_daemon(ds->loops[i], &d, err);
        if (rc != KG_OK)
            return rc;
        /* One listen socket per loop (SO_REUSEPORT): the kernel spreads connections. */
        lfd = kg_accept_listen(&pub, true, 1024, err);
        if (lfd < 0) {
            char why[KG_ERR_MAX];

            MHD_stop_daemon(d);
            snprintf(why, sizeof(why), "%s", err->msg);
            return kg_err_set(err, KG_EIO, "cannot listen on %s: %s", cfg->listen, why);
        }
        rc = kg_loop_add_daemon(ds->loops[i], d, lfd, err);
        if (rc != KG_OK) {
            MHD_stop_daemon(d);
            return rc;
        }
    }
    for (int i = 0; i < ds->nloops; i++) {
        rc = kg_loop_start(ds->loops[i], err);
        if (rc != KG_OK)
            return rc;
    }
    return KG_OK;
}

/* The admin listener runs on its own thread: its calls block on the store.
 * Started before the keys are loaded, so that /livez answers and /readyz
 * says why it is not ready yet (rt->ready is still false: admin.c answers
 * every other call 503 until then). */
static enum kg_status
start_admin(struct daemon_state *ds, struct kg_err *err)
{
    const struct kg_config *cfg = ds->inst->cfg;
    struct sockaddr_storage adm;
    enum kg_status rc;

    if (strcmp(cfg->admin_listen, "off") == 0)
        return KG_OK;
    rc = kg_front_parse_addr(cfg->admin_listen, &adm, err);
    if (rc != KG_OK)
        return rc;
    return kg_admin_start(&ds->rt, &adm, &ds->admin, err);
}

/* Applies the changes another process (the CLI) made to the key cache:
 * the change log rows since the last one applied, read only when some
 * other connection committed since the last poll (data_version). */
static void
poll_store(struct daemon_state *ds, int64_t *version)
{
    struct kg_err err = {{0}};
    enum kg_status rc;
    bool full = false;
    int64_t v;

    if ((rc = kg_store_data_version(ds->inst->store, &v, &err)) != KG_OK) {
        /* Once per outage in the log; every failed poll in the metric. */
        if (!atomic_exchange(&ds->rt.store_down, true))
            kg_log_warnx("store: %s; deciding keys from memory until it is back", err.msg);
        kg_storefault_fail(ds->rt.store_fault, rc, err.msg);
        return;
    }
    if (atomic_exchange(&ds->rt.store_down, false))
        kg_log_info("store: reachable again");
    if (v == *version)
        return;
    if ((rc = kg_keycache_sync(ds->rt.keys, ds->inst->store, kg_time_now(), &full, &err)) !=
        KG_OK) {
        kg_log_warnx("applying key changes: %s", err.msg);
        kg_storefault_fail(ds->rt.store_fault, rc, err.msg);
        return;
    }
    *version = v;
    if (full)
        kg_log_info("keys loaded again: the change log was trimmed past this daemon's position");
    kg_log_debug("key changes applied up to change log row %lld",
                 (long long)kg_keycache_position(ds->rt.keys));
}

/* Drops change log rows older than CHANGE_KEEP_S: every daemon polls far
 * more often, and one that fell further behind loads everything again. */
static void
trim_changes(struct daemon_state *ds)
{
    struct kg_err err = {{0}};
    size_t n = 0;

    if (kg_store_change_trim(ds->inst->store, kg_time_now() - CHANGE_KEEP_S, &n, &err) != KG_OK)
        kg_log_warnx("trimming the change log: %s", err.msg);
    else if (n > 0)
        kg_log_debug("trimmed %zu change log rows", n);
}

/* credits_mode strict: refills the blocks the loops asked for, renews the
 * leases, drops blocks of an ended period (keygate/keyreserve.h). */
static void
reserve_credits(struct daemon_state *ds)
{
    struct kg_err err = {{0}};

    if (kg_keyreserve_pass(ds->rt.keys, ds->inst->store, kg_time_now(), kg_time_mono_ms(), &err) !=
            KG_OK &&
        !atomic_load(&ds->rt.store_down))
        kg_log_warnx("reserving credits: %s", err.msg);
}

static void
flush_usage(struct daemon_state *ds)
{
    struct kg_err err = {{0}};
    enum kg_status rc = kg_keycache_flush(ds->rt.keys, ds->inst->store, NULL, &err);

    if (rc != KG_OK) {
        /* Not lost: the next flush retries the same counts whole. While
         * the store is down the poll has already said so once. */
        if (!atomic_load(&ds->rt.store_down))
            kg_log_warnx("writing last-used times and usage counts: %s", err.msg);
        kg_storefault_fail(ds->rt.store_fault, rc, err.msg);
    }
}

/* While store writes are failing, one probe a second: once one commits
 * the fault is over (and /readyz says so) without anyone's help. */
static void
probe_store(struct daemon_state *ds)
{
    struct kg_err err = {{0}};
    char reason[128];

    if (!kg_storefault_active(ds->rt.store_fault, reason, sizeof(reason)))
        return;
    if (kg_store_write_probe(ds->inst->store, &err) != KG_OK) {
        kg_log_debug("store still failing: %s", err.msg);
        return;
    }
    if (kg_storefault_clear(ds->rt.store_fault))
        kg_log_info("store: writes work again (was: %s)", reason);
}

static void
report_error(void *ctx, const char *line)
{
    (void)ctx;
    kg_log_error("%s", line);
}

static void
report_restart(void *ctx, const char *line)
{
    (void)ctx;
    kg_log_warnx("%s", line);
}

/* SIGHUP: reads the config file again. A file with any problem is refused
 * whole; a good one replaces the running config for new requests, except
 * for the directives only startup acts on, which keep their running values
 * (kg_reload_keep_startup_values). Requests in flight keep the config they
 * started with. */
static void
reload_config(struct daemon_state *ds)
{
    const char *file = ds->config_path != NULL ? ds->config_path : "(built-in)";
    const struct kg_config *running;
    struct kg_config *next = NULL;
    enum kg_status rc;
    size_t kept = 0;

    rc = kg_config_load(ds->config_path, report_error, NULL, &next);
    if (rc != KG_OK) {
        kg_log_error("SIGHUP: configuration reload refused (%s has errors); keeping the running "
                     "configuration",
                     file);
        return;
    }
    running = kg_cfgswap_acquire(ds->rt.config);
    rc = kg_reload_keep_startup_values(running, next, report_restart, NULL, &kept);
    if (rc == KG_OK && strcmp(running->access_log, next->access_log) != 0) {
        struct kg_err err = {{0}};

        /* Opened here: a path that cannot be opened refuses the reload. */
        if (kg_accesslog_set_dest(ds->rt.accesslog, next->access_log, &err) != KG_OK) {
            kg_cfgswap_release(running);
            kg_config_free(next);
            kg_log_error("SIGHUP: access_log: %s; configuration reload refused, keeping the "
                         "running configuration",
                         err.msg);
            return;
        }
    }
    kg_cfgswap_release(running);
    if (rc != KG_OK) {
        kg_config_free(next);
        kg_log_error("SIGHUP: configuration reload refused (out of memory); keeping the running "
                     "configuration");
        return;
    }
    kg_log_set_level((enum kg_log_level)next->log_level);
    kg_log_set_format((enum kg_log_format)next->log_format);
    /* ---- Other subsystems learn about the new config here ----
     * next is complete and checked but not published yet: a subsystem that
     * holds state built from the config (TLS certificates, the access log)
     * reconfigures itself from next now, and may refuse the reload by
     * logging why, freeing next and returning before the publish below. */
    /* TLS: next's pair was loaded and checked by kg_config_load(); this
     * makes it the one new handshakes get (a failure here only logs). */
    kg_tls_reload_on_signal(ds->rt.tls, next);
    if (kg_cfgswap_publish(ds->rt.config, next) != KG_OK) {
        kg_log_error("SIGHUP: configuration reload refused (out of memory); keeping the running "
                     "configuration");
        return;
    }
    if (kept > 0)
        kg_log_info("SIGHUP: configuration reloaded from %s for new requests; %zu change(s) "
                    "need a restart and were not applied",
                    file, kept);
    else
        kg_log_info("SIGHUP: configuration reloaded from %s for new requests", file);
}

/* How long nothing may be in flight, every loop quiesced, before the drain
 * ends: a connection the last accept pass took in may still be one MHD
 * round away from counting as in flight. */
#define DRAIN_SETTLE_MS 50

static void
drain(struct daemon_state *ds, const sigset_t *set)
{
    const struct kg_config *cfg = kg_cfgswap_acquire(ds->rt.config);
    int64_t deadline = kg_time_mono_ms() + cfg->shutdown_timeout_ms, settled = -1;
    struct timespec ts = {0, 10 * 1000000L};

    atomic_store(&ds->rt.draining, true);
    for (int i = 0; i < ds->nloops; i++)
        kg_loop_quiesce(ds->loops[i]);
    kg_log_info("draining %ld request(s)", atomic_load(&ds->rt.inflight));
    /* Not over when the count first reads 0: the loops close their listeners
     * asynchronously, and their backlogs' requests come after. */
    for (;;) {
        int64_t now = kg_time_mono_ms();
        bool quiet = atomic_load(&ds->rt.inflight) == 0;
        int sig;

        for (int i = 0; quiet && i < ds->nloops; i++)
            quiet = kg_loop_quiesced(ds->loops[i]);
        if (!quiet)
            settled = -1;
        else if (settled < 0)
            settled = now;
        else if (now - settled >= DRAIN_SETTLE_MS)
            break;
        if (now >= deadline) {
            kg_log_warnx("shutdown_timeout reached with %ld request(s) in flight: stopping now",
                         atomic_load(&ds->rt.inflight));
            break;
        }
        sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            kg_log_warnx("second signal: stopping now");
            break;
        }
    }
    kg_cfgswap_release(cfg);
}

static int
run(struct daemon_state *ds)
{
    struct timespec ts = {0, POLL_MS * 1000000L};
    int64_t version, next_flush = kg_time_mono_ms() + FLUSH_MS;
    int64_t next_trim = kg_time_mono_ms() + TRIM_MS;
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2); /* a change notification (kg_keylisten): poll now */
    /* Read before the first load (kg_serve_main): a change committed while
     * the listeners were starting is still seen by the first poll. */
    version = ds->version;
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &ts);

        if (sig == SIGTERM || sig == SIGINT) {
            kg_log_info("%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            drain(ds, &set);
            break;
        }
        if (sig == SIGUSR1)
            kg_accesslog_reopen(ds->rt.accesslog); /* logrotate renamed the file */
        if (sig == SIGHUP) {
            reload_config(ds);
            version = -1; /* and the key changes, as before */
        }
        poll_store(ds, &version);
        reserve_credits(ds);
        if (kg_time_mono_ms() >= next_flush) {
            probe_store(ds);
            flush_usage(ds);
            next_flush = kg_time_mono_ms() + FLUSH_MS;
        }
        if (kg_time_mono_ms() >= next_trim) {
            trim_changes(ds);
            next_trim = kg_time_mono_ms() + TRIM_MS;
        }
    }
    return 0;
}

static int
parse_args(int argc, char **argv, const char **config, bool *test)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                fprintf(stderr, "keygate: %s needs a file name\n", argv[i]);
                return 2;
            }
            *config = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            *config = argv[i] + 9;
        } else if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--test") == 0) {
            *test = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "keygate: serve: unknown option \"%s\" (see keygate serve --help)\n",
                    argv[i]);
            return 2;
        }
    }
    return -1;
}

static int
check_config(const char *path)
{
    struct kg_config *cfg = NULL;
    enum kg_status rc = kg_config_load(path, report_stderr, NULL, &cfg);
    char warning[512];

    if (rc == KG_OK && kg_config_signup_warning(cfg, warning, sizeof(warning)))
        fprintf(stderr, "keygate: warning: %s: %s\n", path != NULL ? path : "(built-in)", warning);
    kg_config_free(cfg);
    if (rc != KG_OK)
        return 2;
    printf("configuration OK\n");
    return 0;
}

int
kg_serve_main(int argc, char **argv)
{
    struct daemon_state ds = {0};
    struct kg_err err = {{0}};
    const char *config = NULL;
    bool test = false;
    sigset_t set;
    int status = 1, r;

    r = parse_args(argc, argv, &config, &test);
    if (r >= 0)
        return r;
    if (config == NULL)
        config = kg_config_default_path();
    if (test)
        return check_config(config);

    /* Signals are taken synchronously by the main thread; the loops inherit the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2); /* a change notification (kg_keylisten): poll now */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "keygate: libcurl failed to initialise\n");
        return 1;
    }

    switch (kg_instance_open(config, report_stderr, NULL, &ds.inst, &err)) {
    case KG_OK:
        break;
    case KG_EINVAL:
        status = 2;
        goto cleanup;
    default:
        kg_log_error("%s", err.msg);
        goto cleanup;
    }
    {
        char warning[512];

        if (kg_config_signup_warning(ds.inst->cfg, warning, sizeof(warning)))
            kg_log_warnx("%s", warning);
    }
    if (ds.inst->secret_created)
        kg_log_info("created a new server secret in %s: back it up, every key depends on it",
                    ds.inst->cfg->secret_file);
    /* The swap owns the config from here; inst->cfg holds it for startup. */
    {
        struct kg_config *boot = ds.inst->cfg;

        ds.inst->cfg = NULL;
        if (kg_cfgswap_new(boot, &ds.rt.config) != KG_OK) {
            kg_log_error("out of memory");
            goto cleanup;
        }
        ds.inst->cfg = (struct kg_config *)kg_cfgswap_acquire(ds.rt.config);
    }
    ds.config_path = config;
    ds.rt.secret = ds.inst->secret;
    if (kg_store_data_version(ds.inst->store, &ds.version, &err) != KG_OK) {
        kg_log_error("store: %s", err.msg);
        goto cleanup;
    }
    if (start_limiter(&ds, &err) != KG_OK) {
        kg_log_error("%s", err.msg);
        goto cleanup;
    }
    if (kg_keycache_new(ds.limiter, &ds.rt.keys) != KG_OK ||
        (ds.rt.store_fault = kg_storefault_new()) == NULL) {
        kg_log_error("out of memory");
        goto cleanup;
    }
    /* The admin listener before the load (its /readyz says "loading keys"),
     * the public one after it: no request is decided from a partial cache. */
    if (kg_tls_new(ds.inst->cfg, &ds.rt.tls, &err) != KG_OK ||
        start_auth_throttle(&ds, &err) != KG_OK || kg_connlimit_new(&ds.rt.per_ip, &err) != KG_OK ||
        start_admin(&ds, &err) != KG_OK) {
        kg_log_error("%s", err.msg);
        goto cleanup;
    }
    if (kg_keycache_reload(ds.rt.keys, ds.inst->store, kg_time_now(), &err) != KG_OK) {
        kg_log_error("loading keys: %s", err.msg[0] != '\0' ? err.msg : "out of memory");
        goto cleanup;
    }
    ds.main_thread = pthread_self();
    /* A loop whose key's block runs low wakes this thread to refill it. */
    if (ds.inst->cfg->credits_mode == KG_CREDITS_STRICT)
        kg_keyreserve_enable(ds.rt.keys, wake_main, &ds);
    /* database_notify off: no listener; the POLL_MS poll alone sees changes. */
    if (kg_keywatch_new(ds.inst->cfg->database, ds.rt.keys, KEYWATCH_MS, &ds.rt.keywatch, &err) !=
            KG_OK ||
        (ds.inst->cfg->database_notify &&
         kg_keylisten_new(ds.inst->cfg->database, wake_main, &ds, &ds.listen, &err) != KG_OK)) {
        kg_log_error("store: %s", err.msg);
        goto cleanup;
    }
    /* Before the loops, which report canary uses and throttle trips to it. */
    if (kg_sender_start(ds.rt.config, ds.rt.secret, &ds.rt.events, &err) != KG_OK) {
        kg_log_error("events: %s", err.msg);
        goto cleanup;
    }
    if (kg_accesslog_new(ds.inst->cfg->access_log, 0, &ds.rt.accesslog, &err) != KG_OK) {
        kg_log_error("%s", err.msg);
        goto cleanup;
    }
    if (start_signup(&ds, &err) != KG_OK || start_loops(&ds, &err) != KG_OK) {
        kg_log_error("%s", err.msg);
        goto cleanup;
    }
    atomic_store(&ds.rt.ready, true);
    {
        const struct kg_keysnap *snap = kg_keycache_acquire(ds.rt.keys);

        const struct kg_config *c = ds.inst->cfg;

        kg_log_info(
            "keygate %s listening on %s%s (admin %s), %s%s, %d worker(s), %zu key(s)",
            KEYGATE_VERSION, c->listen, ds.rt.tls != NULL ? " with TLS" : "", c->admin_listen,
            c->mode == KG_MODE_FORWARD_AUTH ? "forward_auth mode" : "upstream ",
            c->mode == KG_MODE_FORWARD_AUTH ? "" : c->upstream, ds.nloops, kg_keysnap_count(snap));
        kg_keycache_release(snap);
        if (c->console)
            kg_log_info("console on at %s (sessions %" PRId64 "s, idle %" PRId64 "s)",
                        c->console_path, c->console_session_ttl_ms / 1000,
                        c->console_session_idle_ms / 1000);
    }
    status = run(&ds);
cleanup:
    atomic_store(&ds.rt.draining, true);
    /* The worker first: every signup it still holds is answered (a
     * queued one with 503) and its connection resumed while the loops
     * still run, since libmicrohttpd must not stop with a connection
     * suspended. Loops that meet the stopped worker answer 503 at once. */
    kg_worker_stop(ds.rt.worker);
    kg_keywatch_stop(ds.rt.keywatch); /* the same for requests waiting on the key watch */
    kg_limiter_stop(ds.limiter);      /* and for those waiting on Redis (limits redis://) */
    for (int i = 0; i < ds.nloops; i++)
        kg_loop_stop(ds.loops[i]);
    for (int i = 0; i < ds.nloops; i++)
        kg_loop_free(ds.loops[i]);
    kg_admin_stop(ds.admin);
    kg_sender_stop(ds.rt.events);    /* after the loops and admin: what they reported is written */
    kg_connlimit_free(ds.rt.per_ip); /* after the loops: their connections gave theirs back */
    kg_tls_free(ds.rt.tls);
    kg_keylisten_free(ds.listen);
    kg_keywatch_free(ds.rt.keywatch);
    /* Counters first: nothing after this (a log reader that stalls the
     * access log's last write) may cost the last second of usage. */
    if (ds.rt.keys != NULL && ds.inst != NULL) {
        struct kg_err rerr = {{0}};

        flush_usage(&ds);
        /* After the flush (each charge counted as spent): what the blocks
         * still hold goes back to the other instances now, not when the
         * leases run out. */
        if (ds.inst->cfg->credits_mode == KG_CREDITS_STRICT &&
            kg_keyreserve_release(ds.rt.keys, ds.inst->store, &rerr) != KG_OK)
            kg_log_warnx("handing back credit reservations: %s (they lapse in %d s)", rerr.msg,
                         KG_RESERVE_LEASE_S);
    }
    /* After the loops: every request they completed is written. */
    kg_accesslog_free(ds.rt.accesslog);
    kg_worker_free(ds.rt.worker);
    kg_throttle_free(ds.rt.signup_limit);
    kg_throttle_free(ds.rt.login_failures);
    kg_throttle_free(ds.rt.login_cooldown);
    kg_throttle_free(ds.rt.auth_failures);
    kg_throttle_free(ds.rt.auth_cooldown);
    kg_keycache_free(ds.rt.keys);
    kg_limiter_free(ds.limiter);
    kg_storefault_free(ds.rt.store_fault);
    if (ds.inst != NULL) {
        kg_cfgswap_release(ds.inst->cfg); /* not the instance's to free any more */
        ds.inst->cfg = NULL;
    }
    kg_cfgswap_free(ds.rt.config);
    kg_instance_close(ds.inst);
    curl_global_cleanup();
    if (status == 0)
        kg_log_info("stopped");
    return status;
}
