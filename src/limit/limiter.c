/* limit/limiter.c - key and tier limits composed over a bucket backend,
 * and the in-process backend: a fixed table of GCRA times.
 *
 * Knows nothing about HTTP, configs or keys beyond their ids. The table is
 * set-associative (WAYS slots per set) with one mutex per stripe of sets:
 * a take holds one lock for a few dozen instructions, and two loop threads
 * only meet on it when their buckets share a stripe.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/limiter.h"

#define WAYS 8
#define LOCKS_MAX 256
#define BUCKETS_MAX ((size_t)1 << 24)

struct kg_limiter {
    const struct kg_limiter_ops *ops;
    void *impl;
};

enum kg_status
kg_limiter_new(const struct kg_limiter_ops *ops, void *impl, struct kg_limiter **out,
               struct kg_err *err)
{
    struct kg_limiter *lim = calloc(1, sizeof(*lim));

    *out = NULL;
    if (lim == NULL) {
        ops->free(impl);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    lim->ops = ops;
    lim->impl = impl;
    *out = lim;
    return KG_OK;
}

void
kg_limiter_free(struct kg_limiter *lim)
{
    if (lim == NULL)
        return;
    lim->ops->free(lim->impl);
    free(lim);
}

void
kg_limiter_finish(struct kg_limit_verdict *out)
{
    if (out->has_key && !out->key.allowed)
        out->binding = KG_LIMIT_KEY;
    else if (out->has_tier && !out->tier.allowed)
        out->binding = KG_LIMIT_USER;
    else if (out->has_key && out->has_tier)
        out->binding = out->tier.remaining < out->key.remaining ||
                               (out->tier.remaining == out->key.remaining &&
                                out->tier.reset_us > out->key.reset_us)
                           ? KG_LIMIT_USER
                           : KG_LIMIT_KEY;
    else
        out->binding = out->has_tier ? KG_LIMIT_USER : KG_LIMIT_KEY;
    out->retry_after_us = 0;
    if (!out->allowed) {
        if (out->has_key && !out->key.allowed)
            out->retry_after_us = out->key.retry_after_us;
        if (out->has_tier && !out->tier.allowed && out->tier.retry_after_us > out->retry_after_us)
            out->retry_after_us = out->tier.retry_after_us;
    }
}

/* Both limits over a per-bucket backend (take/refund). */
static void
compose(struct kg_limiter *lim, const struct kg_limit_req *req, int64_t now_us, bool count,
        struct kg_limit_verdict *out)
{
    if (req->key_rate != NULL) {
        out->has_key = true;
        out->key_rate = *req->key_rate;
        lim->ops->take(lim->impl, KG_LIMIT_KEY, req->key_id, req->key_rate, now_us, count,
                       &out->key);
        out->allowed = out->key.allowed;
    }
    if (req->tier_rate != NULL) {
        /* A request the key refused must not spend the tier too. */
        bool spend = count && out->allowed;

        out->has_tier = true;
        out->tier_rate = *req->tier_rate;
        lim->ops->take(lim->impl, KG_LIMIT_USER, req->user_id, req->tier_rate, now_us, spend,
                       &out->tier);
        if (!out->tier.allowed) {
            if (spend && out->has_key) {
                lim->ops->refund(lim->impl, KG_LIMIT_KEY, req->key_id, req->key_rate, now_us);
                lim->ops->take(lim->impl, KG_LIMIT_KEY, req->key_id, req->key_rate, now_us, false,
                               &out->key);
            }
            out->allowed = false;
        }
    }
}

enum kg_limit_answer
kg_limiter_check(struct kg_limiter *lim, const struct kg_limit_req *req, int64_t now_us, bool count,
                 struct kg_limit_verdict *out)
{
    enum kg_limit_answer a = KG_LIMIT_DONE;

    memset(out, 0, sizeof(*out));
    out->allowed = true;
    if (req->key_rate == NULL && req->tier_rate == NULL)
        return KG_LIMIT_DONE;
    if (lim->ops->check != NULL) {
        a = lim->ops->check(lim->impl, req, now_us, count, out);
        if (a != KG_LIMIT_DONE) {
            memset(out, 0, sizeof(*out));
            out->allowed = true;
            return a;
        }
    } else {
        compose(lim, req, now_us, count, out);
    }
    kg_limiter_finish(out);
    return KG_LIMIT_DONE;
}

static void
copy_id(char *dst, const char *src)
{
    snprintf(dst, KG_LIMIT_ID_MAX, "%s", src != NULL ? src : "");
}

void
kg_limiter_wait_init(struct kg_limit_wait *w, const struct kg_limit_req *req)
{
    memset(w, 0, sizeof(*w));
    w->has_key = req->key_rate != NULL;
    w->has_tier = req->tier_rate != NULL;
    if (w->has_key) {
        w->key_rate = *req->key_rate;
        copy_id(w->key_id, req->key_id);
    }
    if (w->has_tier) {
        w->tier_rate = *req->tier_rate;
        copy_id(w->user_id, req->user_id);
    }
}

void
kg_limiter_wait(struct kg_limiter *lim, struct kg_limit_wait *w, int64_t now_us,
                kg_limit_done_fn done, void *arg)
{
    struct kg_limit_req rq;

    w->done = done;
    w->arg = arg;
    w->next = NULL;
    if (lim->ops->wait != NULL) {
        lim->ops->wait(lim->impl, w, now_us);
        return;
    }
    /* A backend that never waits answers now. */
    kg_limiter_wait_req(w, &rq);
    w->answer = kg_limiter_check(lim, &rq, now_us, true, &w->verdict);
    done(arg);
}

void
kg_limiter_wait_req(const struct kg_limit_wait *w, struct kg_limit_req *out)
{
    out->key_id = w->key_id;
    out->key_rate = w->has_key ? &w->key_rate : NULL;
    out->user_id = w->user_id;
    out->tier_rate = w->has_tier ? &w->tier_rate : NULL;
}

void
kg_limiter_stop(struct kg_limiter *lim)
{
    if (lim != NULL && lim->ops->stop != NULL)
        lim->ops->stop(lim->impl);
}

/* ---- the in-process backend ---- */

struct slot {
    uint64_t id; /* keyed hash of scope and name; 0 = empty */
    int64_t tat; /* nanoseconds on the callers' clock */
};

struct local {
    size_t nsets; /* a power of two */
    size_t nlocks;
    unsigned char hkey[crypto_generichash_KEYBYTES];
    pthread_mutex_t locks[LOCKS_MAX];
    struct slot *slots; /* nsets * WAYS */
};

static uint64_t
bucket_id(const struct local *l, enum kg_limit_scope scope, const char *name)
{
    crypto_generichash_state st;
    unsigned char h[crypto_generichash_BYTES_MIN], tag = (unsigned char)scope;
    uint64_t id;

    crypto_generichash_init(&st, l->hkey, sizeof(l->hkey), sizeof(h));
    crypto_generichash_update(&st, &tag, 1);
    crypto_generichash_update(&st, (const unsigned char *)name, strlen(name));
    crypto_generichash_final(&st, h, sizeof(h));
    memcpy(&id, h, sizeof(id));
    return id != 0 ? id : 1; /* 0 marks an empty slot */
}

/* The slot of id in its set: its own, else an empty or refilled one, else
 * the one closest to full. *fresh: the slot holds no record of id yet.
 * Called with the set's lock held. */
static struct slot *
find_slot(struct slot *set, uint64_t id, int64_t now_ns, bool *fresh)
{
    struct slot *victim = &set[0];

    for (size_t i = 0; i < WAYS; i++) {
        if (set[i].id == id) {
            *fresh = false;
            return &set[i];
        }
    }
    *fresh = true;
    for (size_t i = 0; i < WAYS; i++) {
        if (set[i].id == 0 || set[i].tat <= now_ns)
            return &set[i];
        if (set[i].tat < victim->tat)
            victim = &set[i];
    }
    return victim;
}

static pthread_mutex_t *
lock_set(struct local *l, uint64_t id, struct slot **set)
{
    size_t si = (size_t)(id >> 32) & (l->nsets - 1);
    pthread_mutex_t *mu = &l->locks[si & (l->nlocks - 1)];

    *set = &l->slots[si * WAYS];
    pthread_mutex_lock(mu);
    return mu;
}

static void
local_take(void *impl, enum kg_limit_scope scope, const char *name, const struct kg_gcra *g,
           int64_t now_us, bool count, struct kg_gcra_result *res)
{
    struct local *l = impl;
    uint64_t id = bucket_id(l, scope, name);
    int64_t now_ns = now_us > 0 ? now_us * 1000 : 0;
    struct slot *set, *s;
    pthread_mutex_t *mu = lock_set(l, id, &set);
    bool fresh;
    int64_t tat;

    s = find_slot(set, id, now_ns, &fresh);
    tat = fresh ? 0 : s->tat;
    if (count) {
        tat = kg_gcra_take(g, tat, now_us, res);
        if (res->allowed || !fresh) {
            s->id = id;
            s->tat = tat;
        }
    } else {
        kg_gcra_peek(g, tat, now_us, res);
    }
    pthread_mutex_unlock(mu);
}

static void
local_refund(void *impl, enum kg_limit_scope scope, const char *name, const struct kg_gcra *g,
             int64_t now_us)
{
    struct local *l = impl;
    uint64_t id = bucket_id(l, scope, name);
    struct slot *set;
    pthread_mutex_t *mu = lock_set(l, id, &set);

    for (size_t i = 0; i < WAYS; i++) {
        if (set[i].id == id) {
            set[i].tat = kg_gcra_refund(g, set[i].tat, now_us);
            break;
        }
    }
    pthread_mutex_unlock(mu);
}

static void
local_free(void *impl)
{
    struct local *l = impl;

    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nlocks; i++)
        pthread_mutex_destroy(&l->locks[i]);
    sodium_memzero(l->hkey, sizeof(l->hkey));
    free(l->slots);
    free(l);
}

static const struct kg_limiter_ops local_ops = {
    .take = local_take,
    .refund = local_refund,
    .free = local_free,
};

enum kg_status
kg_limiter_new_local(size_t buckets, struct kg_limiter **out, struct kg_err *err)
{
    struct local *l;
    size_t nsets = 1;

    *out = NULL;
    if (buckets < 1 || buckets > BUCKETS_MAX)
        return kg_err_set(err, KG_EINVAL, "limiter size must be 1 to %zu buckets", BUCKETS_MAX);
    if (sodium_init() < 0)
        return kg_err_set(err, KG_EIO, "libsodium failed to initialise");
    while (nsets * WAYS < buckets)
        nsets *= 2;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    l->slots = calloc(nsets * WAYS, sizeof(*l->slots));
    if (l->slots == NULL) {
        free(l);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    l->nsets = nsets;
    l->nlocks = nsets < LOCKS_MAX ? nsets : LOCKS_MAX;
    for (size_t i = 0; i < l->nlocks; i++)
        pthread_mutex_init(&l->locks[i], NULL);
    randombytes_buf(l->hkey, sizeof(l->hkey));
    return kg_limiter_new(&local_ops, l, out, err);
}
