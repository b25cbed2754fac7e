/* tests/unit/auth/test_gate.c - src/auth/gate.c through keygate/gate.h.
 *
 * Admission from real parts and no server: keys in a real store in a
 * temporary directory, a key cache loaded from it, real throttle tables and
 * limiter, configs loaded from text. The clock is an argument. Checks every
 * action, and the order: a throttled IP is refused before any lookup, a
 * refusal spends no rate token and no credit, forward-auth's allow charges
 * at once. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/config.h"
#include "keygate/credential.h"
#include "keygate/digest.h"
#include "keygate/gate.h"
#include "keygate/keycache.h"
#include "keygate/limiter.h"
#include "keygate/keyfmt.h"
#include "keygate/keywatch.h"
#include "keygate/store.h"
#include "keygate/throttle.h"
#include "unit/fixture.h"

#define NOW 1800000000 /* 2027-01-15, a fixed clock */
#define MONO_MS 5000000

static const unsigned char test_secret[KG_SECRET_BYTES] = "keygate gate unit test secret!!!";

static const char routes[] = "route GET /v1/items read:items\n"
                             "route POST /v1/items write:items\n";

enum { K_READER, K_EXPIRED, K_RATED, K_QUOTA, K_UNKNOWN, NKEYS };

struct fixture {
    char dir[KG_FX_DIR_MAX];
    char db[128];
    struct kg_store *st;
    struct kg_secret *secret;
    struct kg_limiter *lim;
    struct kg_keycache *kc;
    struct kg_config *cfg; /* mode proxy */
    struct kg_config *fa;  /* mode forward_auth */
    struct kg_throttle *failures, *cooldown;
    struct kg_gate_env env;
    char keys[NKEYS][KG_KEY_MAX];
};

static int
add_key(struct fixture *f, int i, const char *id, int64_t expires_at, const char *rate,
        int64_t quota)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    size_t len;

    if (kg_keyfmt_generate("kg_", f->keys[i], &err) != KG_OK)
        return -1;
    if (i == K_UNKNOWN)
        return 0;
    len = strlen(f->keys[i]);
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.id, sizeof(rec.id), "%s", id);
    snprintf(rec.name, sizeof(rec.name), "%s", id);
    kg_keyfmt_display(f->keys[i], len, rec.prefix, rec.last4);
    kg_digest_compute(f->secret, f->keys[i], len, rec.digest);
    snprintf(rec.scopes, sizeof(rec.scopes), "read:items");
    snprintf(rec.tenant, sizeof(rec.tenant), "acme");
    snprintf(rec.rate, sizeof(rec.rate), "%s", rate);
    rec.created_at = NOW - 86400;
    rec.expires_at = expires_at;
    rec.quota_limit = quota;
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK) {
        fprintf(stderr, "insert %s: %s\n", id, err.msg);
        return -1;
    }
    return 0;
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct kg_err err = {{0}};
    char fa_text[512];

    if (f == NULL)
        return -1;
    *state = f;
    kg_fx_clear_env();
    if (sodium_init() < 0 || kg_fx_mkdtemp(f->dir, "gate") != 0)
        return -1;
    snprintf(f->db, sizeof(f->db), "%s/keys.db", f->dir);
    snprintf(fa_text, sizeof(fa_text), "mode forward_auth\n%s", routes);
    if (kg_store_open(f->db, &f->st, &err) != KG_OK ||
        kg_digest_secret_from_bytes(test_secret, &f->secret) != KG_OK ||
        kg_limiter_new_local(1024, &f->lim, &err) != KG_OK ||
        kg_keycache_new(f->lim, &f->kc) != KG_OK || kg_fx_load_config(routes, &f->cfg) != 0 ||
        kg_fx_load_config(fa_text, &f->fa) != 0)
        return -1;
    /* One failed authentication per minute, then a minute's cool-down. */
    if (kg_throttle_new(1, 60000, 64, &f->failures, &err) != KG_OK ||
        kg_throttle_new(1, 60000, 64, &f->cooldown, &err) != KG_OK)
        return -1;
    if (add_key(f, K_READER, "key_reader", 0, "", -1) != 0 ||
        add_key(f, K_EXPIRED, "key_expired", NOW - 1, "", -1) != 0 ||
        add_key(f, K_RATED, "key_rated", 0, "1/min", -1) != 0 ||
        add_key(f, K_QUOTA, "key_quota", 0, "2/min", 1) != 0 ||
        add_key(f, K_UNKNOWN, "", 0, "", -1) != 0)
        return -1;
    if (kg_keycache_reload(f->kc, f->st, NOW, &err) != KG_OK) {
        fprintf(stderr, "reload: %s\n", err.msg);
        return -1;
    }
    f->env.secret = f->secret;
    f->env.keys = f->kc;
    f->env.limiter = kg_keycache_limiter(f->kc);
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    if (f == NULL)
        return 0;
    kg_throttle_free(f->failures);
    kg_throttle_free(f->cooldown);
    kg_keycache_free(f->kc);
    kg_limiter_free(f->lim);
    kg_store_close(f->st);
    kg_digest_secret_free(f->secret);
    kg_config_free(f->cfg);
    kg_config_free(f->fa);
    sodium_memzero(f->keys, sizeof(f->keys));
    kg_fx_rmtree(f->dir);
    free(f);
    return 0;
}

/* Admits "method path" from ip carrying key (NULL: no credential). */
static void
admit(struct fixture *f, const struct kg_config *cfg, const char *key, const char *method,
      const char *path, const char *ip, bool health, struct kg_admission *adm)
{
    char value[KG_KEY_MAX + 16];
    struct kg_cred cred;
    struct kg_gate_in in = {.env = &f->env,
                            .cfg = cfg,
                            .cred = &cred,
                            .method = method,
                            .path = path,
                            .client_ip = ip,
                            .health = health,
                            .now = NOW,
                            .now_ms = MONO_MS,
                            .now_us = (int64_t)MONO_MS * 1000};

    kg_credential_init(&cred);
    if (key != NULL) {
        snprintf(value, sizeof(value), "Bearer %s", key);
        kg_credential_feed(&cred, cfg, "Authorization", value, strlen(value));
    }
    kg_gate_admit(&in, adm);
    sodium_memzero(value, sizeof(value));
}

/* The stat record of a cached key, looked up in a snapshot of its own. */
static struct kg_keystat *
stat_of(struct fixture *f, int i)
{
    unsigned char digest[KG_DIGEST_BYTES];
    const struct kg_keysnap *snap = kg_keycache_acquire(f->kc);
    const struct kg_keyent *ent;
    struct kg_keystat *st;

    kg_digest_compute(f->secret, f->keys[i], strlen(f->keys[i]), digest);
    ent = kg_keysnap_find(snap, digest);
    assert_non_null(ent);
    st = kg_keycache_stat(ent);
    kg_keycache_release(snap);
    return st;
}

static void
test_no_credential_is_refused_unauthenticated(void **state)
{
    struct fixture *f = *state;
    struct kg_admission adm;

    admit(f, f->cfg, NULL, "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_NO_CREDENTIAL);
    assert_int_equal(adm.outcome, KG_OUTCOME_UNAUTHENTICATED);
    assert_null(adm.charge_to);
    assert_false(adm.rated);
    kg_gate_release(&adm);
}

static void
test_a_valid_key_is_proxied_with_its_charge_and_counted(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_READER);
    struct kg_admission adm;

    admit(f, f->cfg, f->keys[K_READER], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_PROXY);
    assert_int_equal(adm.d.verdict, KG_ALLOW);
    assert_int_equal(adm.outcome, KG_OUTCOME_ALLOWED);
    assert_non_null(adm.d.key);
    assert_string_equal(adm.d.key->id, "key_reader");
    assert_non_null(adm.snap);
    assert_ptr_equal(adm.charge_to, st);
    assert_int_equal(adm.cost, 1);
    assert_true(adm.rated);
    assert_string_equal(adm.key_policy, "default");
    /* Counted as a request, charged only when the upstream answers 2xx. */
    assert_int_equal(atomic_load(&st->requests), 1);
    assert_int_equal(atomic_load(&st->credits.charged), 0);
    assert_int_equal(atomic_load(&st->last_used), NOW);
    kg_gate_release(&adm);
    assert_null(adm.snap);
    kg_gate_release(&adm); /* idempotent */
}

static void
test_a_missing_scope_is_forbidden_and_counted(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_READER);
    struct kg_admission adm;

    admit(f, f->cfg, f->keys[K_READER], "POST", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_SCOPE);
    assert_string_equal(adm.d.missing_scope, "write:items");
    assert_int_equal(adm.outcome, KG_OUTCOME_FORBIDDEN);
    assert_null(adm.charge_to);
    assert_true(adm.rated); /* a 403 to a valid key shows where it stands */
    assert_int_equal(atomic_load(&st->denied_forbidden), 1);
    assert_int_equal(atomic_load(&st->requests), 0);
    kg_gate_release(&adm);
}

static void
test_an_expired_key_is_unauthenticated_and_counted(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_EXPIRED);
    struct kg_admission adm;

    admit(f, f->cfg, f->keys[K_EXPIRED], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_EXPIRED);
    assert_int_equal(adm.outcome, KG_OUTCOME_UNAUTHENTICATED);
    assert_false(adm.rated);
    assert_int_equal(atomic_load(&st->denied_expired), 1);
    kg_gate_release(&adm);
}

static void
test_an_unknown_key_asks_the_key_watch_once(void **state)
{
    struct fixture *f = *state;
    struct kg_keywatch *w = NULL;
    struct kg_err err = {{0}};
    struct kg_admission adm;
    char value[KG_KEY_MAX + 16];
    struct kg_cred cred;
    struct kg_gate_in in = {.env = &f->env,
                            .cfg = f->cfg,
                            .cred = &cred,
                            .method = "GET",
                            .path = "/v1/items",
                            .client_ip = "192.0.2.9",
                            .now = NOW,
                            .now_ms = MONO_MS,
                            .now_us = (int64_t)MONO_MS * 1000};

    /* Without a watch: refused at once. */
    admit(f, f->cfg, f->keys[K_UNKNOWN], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_INVALID);
    assert_true(adm.d.unknown);
    kg_gate_release(&adm);

    if (kg_keywatch_new(f->db, f->kc, 10, &w, &err) != KG_OK)
        fail_msg("kg_keywatch_new: %s", err.msg);
    f->env.keywatch = w;
    f->env.auth_failures = f->failures;
    f->env.auth_cooldown = f->cooldown;
    snprintf(value, sizeof(value), "Bearer %s", f->keys[K_UNKNOWN]);
    kg_credential_init(&cred);
    kg_credential_feed(&cred, f->cfg, "Authorization", value, strlen(value));
    kg_gate_admit(&in, &adm);
    /* The store is asked before the key is refused: no failure counted yet. */
    assert_int_equal(adm.action, KG_GATE_RECHECK);
    assert_null(adm.snap);
    assert_false(kg_throttle_cooling(f->cooldown, "192.0.2.9", MONO_MS, NULL));
    /* Admitted again after the watch answered: refused, and counted. */
    in.rechecked = true;
    kg_gate_admit(&in, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_INVALID);
    assert_int_equal(adm.outcome, KG_OUTCOME_UNAUTHENTICATED);
    kg_gate_release(&adm);
    assert_true(kg_throttle_cooling(f->cooldown, "192.0.2.9", MONO_MS, NULL));
    f->env.keywatch = NULL;
    f->env.auth_failures = NULL;
    f->env.auth_cooldown = NULL;
    kg_keywatch_free(w);
    sodium_memzero(value, sizeof(value));
}

static void
test_a_throttled_ip_is_refused_before_any_lookup(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_READER);
    struct kg_admission adm;

    f->env.auth_failures = f->failures;
    f->env.auth_cooldown = f->cooldown;
    admit(f, f->cfg, "kg_not_a_key", "GET", "/v1/items", "198.51.100.7", false, &adm);
    assert_int_equal(adm.d.verdict, KG_DENY_INVALID);
    kg_gate_release(&adm);
    /* Its allowance is spent: even a good key is refused, unlooked-at. */
    admit(f, f->cfg, f->keys[K_READER], "GET", "/v1/items", "198.51.100.7", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_THROTTLED);
    assert_int_equal(adm.outcome, KG_OUTCOME_RATE_LIMITED);
    assert_true(adm.retry_after_s >= 1);
    assert_null(adm.d.key);
    assert_null(adm.snap); /* no snapshot taken: no digest, no lookup */
    assert_false(adm.rated);
    assert_int_equal(atomic_load(&st->requests), 0);
    assert_int_equal(atomic_load(&st->last_used), 0);
    kg_gate_release(&adm);
    /* Another client with the same key goes through. */
    admit(f, f->cfg, f->keys[K_READER], "GET", "/v1/items", "198.51.100.8", false, &adm);
    assert_int_equal(adm.action, KG_GATE_PROXY);
    kg_gate_release(&adm);
    f->env.auth_failures = NULL;
    f->env.auth_cooldown = NULL;
}

static void
test_a_rate_refusal_spends_no_credit(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_RATED);
    struct kg_admission adm;

    admit(f, f->cfg, f->keys[K_RATED], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_PROXY);
    assert_string_equal(adm.key_policy, "key");
    assert_true(adm.lv.has_key);
    assert_int_equal(adm.lv.key.remaining, 0);
    kg_keycache_charge(adm.charge_to, adm.cost); /* the upstream said 2xx */
    kg_gate_release(&adm);

    admit(f, f->cfg, f->keys[K_RATED], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_RATE);
    assert_int_equal(adm.outcome, KG_OUTCOME_RATE_LIMITED);
    assert_false(adm.lv.allowed);
    assert_null(adm.charge_to);
    assert_int_equal(atomic_load(&st->requests), 1);
    assert_int_equal(atomic_load(&st->denied_rate), 1);
    assert_int_equal(atomic_load(&st->credits.charged), 1);
    kg_gate_release(&adm);
}

static void
test_a_quota_refusal_spends_no_rate_token(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_QUOTA);
    struct kg_admission adm;

    /* 2 requests a minute, 1 credit: the first spends a token and the credit. */
    admit(f, f->cfg, f->keys[K_QUOTA], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_PROXY);
    assert_int_equal(adm.lv.key.remaining, 1);
    kg_keycache_charge(adm.charge_to, adm.cost);
    kg_gate_release(&adm);

    admit(f, f->cfg, f->keys[K_QUOTA], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_QUOTA);
    assert_int_equal(adm.outcome, KG_OUTCOME_QUOTA_EXCEEDED);
    assert_null(adm.charge_to);
    assert_true(adm.rated);
    assert_int_equal(adm.lv.key.remaining, 1);       /* read, not spent */
    assert_int_equal(atomic_load(&st->requests), 1); /* not counted either */
    assert_int_equal(atomic_load(&st->credits.charged), 1);
    kg_gate_release(&adm);
}

static void
test_health_says_whether_the_key_is_valid_and_counts_nothing(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_READER);
    struct kg_admission adm;

    /* Whatever the routes say: /health has none. */
    admit(f, f->cfg, f->keys[K_READER], "GET", "/health", "192.0.2.1", true, &adm);
    assert_int_equal(adm.action, KG_GATE_HEALTH);
    assert_int_equal(adm.outcome, KG_OUTCOME_NONE);
    assert_int_equal(adm.cost, 0);
    assert_null(adm.charge_to);
    assert_int_equal(atomic_load(&st->requests), 0);
    kg_gate_release(&adm);

    admit(f, f->cfg, f->keys[K_UNKNOWN], "GET", "/health", "192.0.2.1", true, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_INVALID);
    assert_int_equal(adm.outcome, KG_OUTCOME_NONE);
    kg_gate_release(&adm);
}

static void
test_forward_auth_allows_and_charges_at_once(void **state)
{
    struct fixture *f = *state;
    struct kg_keystat *st = stat_of(f, K_READER);
    struct kg_admission adm;

    admit(f, f->fa, f->keys[K_READER], "GET", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_ALLOW);
    assert_int_equal(adm.outcome, KG_OUTCOME_ALLOWED);
    assert_non_null(adm.d.key);
    assert_null(adm.charge_to); /* no upstream status will come back */
    assert_int_equal(atomic_load(&st->credits.charged), 1);
    assert_int_equal(atomic_load(&st->requests), 1);
    kg_gate_release(&adm);

    admit(f, f->fa, f->keys[K_READER], "POST", "/v1/items", "192.0.2.1", false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_SCOPE);
    assert_int_equal(atomic_load(&st->credits.charged), 1);
    kg_gate_release(&adm);
}

/* Two loops admitting one fresh key at once, while the main thread flushes. */
#define RACE_ADMITS 2000

struct racer {
    struct fixture *f;
    pthread_barrier_t *start;
    struct kg_keystat *first; /* the record its first admission charged */
    int other_records;        /* admissions that charged another record */
    int proxied;
};

static void *
race_admit(void *arg)
{
    struct racer *r = arg;
    struct kg_admission adm;

    pthread_barrier_wait(r->start);
    for (int i = 0; i < RACE_ADMITS; i++) {
        admit(r->f, r->f->cfg, r->f->keys[K_READER], "GET", "/v1/items", "192.0.2.1", false, &adm);
        if (adm.action == KG_GATE_PROXY) {
            r->proxied++;
            if (r->first == NULL)
                r->first = adm.charge_to;
            else if (adm.charge_to != r->first)
                r->other_records++;
            kg_keycache_charge(adm.charge_to, 1); /* the upstream said 2xx */
        }
        kg_gate_release(&adm);
    }
    return NULL;
}

static void
test_two_loops_admitting_a_fresh_key_make_one_record_and_the_flush_loses_nothing(void **state)
{
    struct fixture *f = *state;
    unsigned char digest[KG_DIGEST_BYTES];
    const struct kg_keysnap *snap = kg_keycache_acquire(f->kc);
    pthread_barrier_t start;
    struct racer r[2] = {{.f = f, .start = &start}, {.f = f, .start = &start}};
    pthread_t t[2];
    struct kg_key_usage u;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    size_t flushed;

    /* Loaded and never used: no record yet. */
    kg_digest_compute(f->secret, f->keys[K_READER], strlen(f->keys[K_READER]), digest);
    assert_null(atomic_load(&kg_keysnap_find(snap, digest)->stat));
    kg_keycache_release(snap);
    assert_int_equal(pthread_barrier_init(&start, NULL, 3), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_admit, &r[i]), 0);
    pthread_barrier_wait(&start);
    /* Flushes while both make, find and count the record. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(kg_keycache_flush(f->kc, f->st, NULL, &err), KG_OK);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(kg_keycache_flush(f->kc, f->st, &flushed, &err), KG_OK);

    assert_int_equal(r[0].proxied, RACE_ADMITS);
    assert_int_equal(r[1].proxied, RACE_ADMITS);
    assert_non_null(r[0].first);
    assert_ptr_equal(r[0].first, r[1].first); /* one record for the key, whoever came first */
    assert_int_equal(r[0].other_records + r[1].other_records, 0);
    assert_ptr_equal(stat_of(f, K_READER), r[0].first);
    /* Every request and credit reached the store exactly once. */
    assert_int_equal(kg_store_key_usage_get(f->st, "key_reader", &u, &err), KG_OK);
    assert_int_equal(u.requests, 2 * RACE_ADMITS);
    assert_int_equal(u.last_used_at, NOW);
    assert_int_equal(kg_store_key_get(f->st, "key_reader", &rec, &err), KG_OK);
    assert_int_equal(rec.quota_used, 2 * RACE_ADMITS);
    assert_int_equal(kg_keycache_flush(f->kc, f->st, &flushed, &err), KG_OK);
    assert_int_equal(flushed, 0);
}

/* A shared backend stand-in: answers every check with `answer` and
 * counts the calls (limiter.h's check/wait ops). */
struct fake_shared {
    enum kg_limit_answer answer;
    int checks;
};

static enum kg_limit_answer
fake_check(void *impl, const struct kg_limit_req *req, int64_t now_us, bool count,
           struct kg_limit_verdict *out)
{
    struct fake_shared *fs = impl;

    (void)req;
    (void)now_us;
    (void)out;
    fs->checks++;
    return count ? fs->answer : KG_LIMIT_DONE;
}

static void
fake_wait(void *impl, struct kg_limit_wait *w, int64_t now_us)
{
    (void)impl;
    (void)now_us;
    w->answer = KG_LIMIT_DOWN;
    w->done(w->arg);
}

static void
fake_take(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
          int64_t now_us, bool count, struct kg_gcra_result *res)
{
    (void)impl;
    (void)scope;
    (void)id;
    (void)count;
    kg_gcra_peek(g, 0, now_us, res);
}

static void
fake_refund(void *impl, enum kg_limit_scope scope, const char *id, const struct kg_gcra *g,
            int64_t now_us)
{
    (void)impl;
    (void)scope;
    (void)id;
    (void)g;
    (void)now_us;
}

static void
fake_free(void *impl)
{
    (void)impl;
}

static const struct kg_limiter_ops fake_ops = {
    .take = fake_take,
    .refund = fake_refund,
    .free = fake_free,
    .check = fake_check,
    .wait = fake_wait,
};

/* Admits with the request's shared-limiter record (and, waited, its answer). */
static void
admit_shared(struct fixture *f, const struct kg_config *cfg, int key, struct kg_limit_wait *w,
             bool waited, struct kg_admission *adm)
{
    char value[KG_KEY_MAX + 16];
    struct kg_cred cred;
    struct kg_gate_in in = {.env = &f->env,
                            .cfg = cfg,
                            .cred = &cred,
                            .method = "GET",
                            .path = "/v1/items",
                            .client_ip = "192.0.2.9",
                            .now = NOW,
                            .now_ms = MONO_MS,
                            .now_us = (int64_t)MONO_MS * 1000,
                            .limit_wait = w,
                            .limit_waited = waited};

    kg_credential_init(&cred);
    snprintf(value, sizeof(value), "Bearer %s", f->keys[key]);
    kg_credential_feed(&cred, cfg, "Authorization", value, strlen(value));
    kg_gate_admit(&in, adm);
    sodium_memzero(value, sizeof(value));
}

static void
test_a_shared_limiter_without_an_answer_makes_the_request_wait_then_uses_its_answer(void **state)
{
    struct fixture *f = *state;
    struct fake_shared fs = {.answer = KG_LIMIT_WAIT};
    struct kg_limiter *shared = NULL;
    struct kg_limit_wait w;
    struct kg_admission adm;
    struct kg_err err = {{0}};

    assert_int_equal(kg_limiter_new(&fake_ops, &fs, &shared, &err), KG_OK);
    f->env.limiter = shared;
    admit_shared(f, f->cfg, K_RATED, &w, false, &adm);
    assert_int_equal(adm.action, KG_GATE_LIMIT_WAIT);
    assert_null(adm.snap); /* nothing held while the request waits */
    assert_string_equal(w.key_id, "key_rated");
    assert_true(w.has_key);
    assert_false(w.has_tier);
    assert_int_equal(w.key_rate.count, 1);
    kg_gate_release(&adm);

    /* Admitted again with the answer: this request's token. */
    w.answer = KG_LIMIT_DONE;
    memset(&w.verdict, 0, sizeof(w.verdict));
    w.verdict.allowed = true;
    w.verdict.has_key = true;
    w.verdict.key_rate = w.key_rate;
    w.verdict.key.allowed = true;
    admit_shared(f, f->cfg, K_RATED, &w, true, &adm);
    assert_int_equal(adm.action, KG_GATE_PROXY);
    assert_true(adm.rated);
    assert_int_equal(fs.checks, 1); /* the answer was used, not asked again */
    kg_gate_release(&adm);

    /* Or its refusal. */
    w.verdict.allowed = false;
    w.verdict.key.allowed = false;
    w.verdict.retry_after_us = 250000;
    admit_shared(f, f->cfg, K_RATED, &w, true, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_RATE);
    kg_gate_release(&adm);

    /* A caller that cannot wait gets what a down limiter gets. */
    admit_shared(f, f->cfg, K_RATED, NULL, false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_LIMITER);
    kg_gate_release(&adm);
    f->env.limiter = kg_keycache_limiter(f->kc);
    kg_limiter_free(shared);
}

static void
test_a_down_shared_limiter_is_503_closed_or_unlimited_open_and_spares_keys_without_limits(
    void **state)
{
    struct fixture *f = *state;
    struct fake_shared fs = {.answer = KG_LIMIT_DOWN};
    struct kg_limiter *shared = NULL;
    struct kg_config *open = NULL;
    struct kg_keystat *st = stat_of(f, K_RATED);
    struct kg_limit_wait w;
    struct kg_admission adm;
    struct kg_err err = {{0}};
    char text[256];

    snprintf(text, sizeof(text), "limits_on_error open\n%s", routes);
    assert_int_equal(kg_fx_load_config(text, &open), 0);
    assert_int_equal(kg_limiter_new(&fake_ops, &fs, &shared, &err), KG_OK);
    f->env.limiter = shared;

    admit_shared(f, f->cfg, K_RATED, &w, false, &adm);
    assert_int_equal(adm.action, KG_GATE_REFUSE);
    assert_int_equal(adm.d.verdict, KG_DENY_LIMITER);
    assert_int_equal(adm.outcome, KG_OUTCOME_NONE);
    assert_false(adm.rated);
    assert_null(adm.charge_to);
    assert_int_equal(atomic_load(&st->requests), 0); /* not let through: not counted */
    kg_gate_release(&adm);

    admit_shared(f, open, K_RATED, &w, false, &adm);
    assert_int_equal(adm.action, KG_GATE_PROXY);
    assert_false(adm.rated); /* no limit known: no RateLimit headers */
    kg_gate_release(&adm);

    /* A key without any limit never asks. */
    fs.checks = 0;
    admit_shared(f, f->cfg, K_READER, &w, false, &adm);
    assert_int_equal(adm.action, KG_GATE_PROXY);
    assert_int_equal(fs.checks, 0);
    kg_gate_release(&adm);
    f->env.limiter = kg_keycache_limiter(f->kc);
    kg_limiter_free(shared);
    kg_config_free(open);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_credential_is_refused_unauthenticated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_valid_key_is_proxied_with_its_charge_and_counted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_missing_scope_is_forbidden_and_counted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_expired_key_is_unauthenticated_and_counted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_unknown_key_asks_the_key_watch_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_throttled_ip_is_refused_before_any_lookup, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_rate_refusal_spends_no_credit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_quota_refusal_spends_no_rate_token, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_health_says_whether_the_key_is_valid_and_counts_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forward_auth_allows_and_charges_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_two_loops_admitting_a_fresh_key_make_one_record_and_the_flush_loses_nothing, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_shared_limiter_without_an_answer_makes_the_request_wait_then_uses_its_answer,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_down_shared_limiter_is_503_closed_or_unlimited_open_and_spares_keys_without_limits,
            setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
