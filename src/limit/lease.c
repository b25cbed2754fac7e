/* limit/lease.c - leased tokens and the denied-until cache of shared rate
 * limits (keygate/lease.h): a fixed table of per-key leases and their
 * accounting. Knows nothing of Redis, sockets or locks; the owner
 * (limit/redislimit.c) holds its lock around every call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/lease.h"

#define WAYS 8
#define ENTRIES_MAX ((size_t)1 << 20)
#define LEASE_US_MAX (60LL * 1000000)

struct kg_lease_table {
    size_t nsets; /* a power of two */
    int64_t lease_us;
    unsigned char hkey[crypto_generichash_KEYBYTES];
    struct kg_lease *slots; /* nsets * WAYS */
};

enum kg_status
kg_lease_table_new(size_t entries, int64_t lease_us, struct kg_lease_table **out,
                   struct kg_err *err)
{
    struct kg_lease_table *t;
    size_t nsets = 1;

    *out = NULL;
    if (entries < 1 || entries > ENTRIES_MAX)
        return kg_err_set(err, KG_EINVAL, "lease table size must be 1 to %zu keys", ENTRIES_MAX);
    if (lease_us < 0 || lease_us > LEASE_US_MAX)
        return kg_err_set(err, KG_EINVAL, "limits_lease must be 0 to 60s");
    if (sodium_init() < 0)
        return kg_err_set(err, KG_EIO, "libsodium failed to initialise");
    while (nsets * WAYS < entries)
        nsets *= 2;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    t->slots = calloc(nsets * WAYS, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    t->nsets = nsets;
    t->lease_us = lease_us;
    randombytes_buf(t->hkey, sizeof(t->hkey));
    *out = t;
    return KG_OK;
}

void
kg_lease_table_free(struct kg_lease_table *t)
{
    if (t == NULL)
        return;
    sodium_memzero(t->hkey, sizeof(t->hkey));
    free(t->slots);
    free(t);
}

/* Tokens worth lease_us of one rate, rounded up, within 1..burst. */
static int64_t
size_of(const struct kg_gcra *g, int64_t lease_us)
{
    int64_t n = (lease_us * 1000 + g->interval_ns - 1) / g->interval_ns;

    if (n < 1)
        n = 1;
    return n > g->burst ? g->burst : n;
}

int64_t
kg_lease_size(const struct kg_gcra *key_rate, const struct kg_gcra *tier_rate, int64_t lease_us)
{
    int64_t n = INT64_MAX;

    if (lease_us <= 0)
        return 0;
    if (key_rate != NULL)
        n = size_of(key_rate, lease_us);
    if (tier_rate != NULL && size_of(tier_rate, lease_us) < n)
        n = size_of(tier_rate, lease_us);
    return n == INT64_MAX ? 0 : n;
}

static uint64_t
lease_id(const struct kg_lease_table *t, const struct kg_limit_req *req)
{
    crypto_generichash_state st;
    unsigned char h[crypto_generichash_BYTES_MIN], sep = 0, flags;
    uint64_t id;

    flags = (unsigned char)((req->key_rate != NULL ? 1 : 0) | (req->tier_rate != NULL ? 2 : 0));
    crypto_generichash_init(&st, t->hkey, sizeof(t->hkey), sizeof(h));
    crypto_generichash_update(&st, &flags, 1);
    if (req->key_rate != NULL)
        crypto_generichash_update(&st, (const unsigned char *)req->key_id, strlen(req->key_id));
    crypto_generichash_update(&st, &sep, 1);
    if (req->tier_rate != NULL)
        crypto_generichash_update(&st, (const unsigned char *)req->user_id, strlen(req->user_id));
    crypto_generichash_final(&st, h, sizeof(h));
    memcpy(&id, h, sizeof(id));
    return id != 0 ? id : 1;
}

static bool
busy(const struct kg_lease *l)
{
    return l->queued || l->inflight || l->waiters != NULL;
}

static bool
same_rate(const struct kg_gcra *a, const struct kg_gcra *b)
{
    return a->interval_ns == b->interval_ns && a->burst == b->burst && a->count == b->count &&
           a->period_s == b->period_s;
}

static bool
same_rates(const struct kg_lease *l, const struct kg_limit_req *req)
{
    return (l->has_key == (req->key_rate != NULL)) && (l->has_tier == (req->tier_rate != NULL)) &&
           (!l->has_key || same_rate(&l->key_rate, req->key_rate)) &&
           (!l->has_tier || same_rate(&l->tier_rate, req->tier_rate));
}

static void
reset(struct kg_lease_table *t, struct kg_lease *l, uint64_t id, const struct kg_limit_req *req)
{
    memset(l, 0, sizeof(*l));
    l->id = id;
    l->has_key = req->key_rate != NULL;
    l->has_tier = req->tier_rate != NULL;
    if (l->has_key) {
        l->key_rate = *req->key_rate;
        snprintf(l->key_id, sizeof(l->key_id), "%s", req->key_id);
    }
    if (l->has_tier) {
        l->tier_rate = *req->tier_rate;
        snprintf(l->user_id, sizeof(l->user_id), "%s", req->user_id);
    }
    l->size = kg_lease_size(req->key_rate, req->tier_rate, t->lease_us);
}

struct kg_lease *
kg_lease_get(struct kg_lease_table *t, const struct kg_limit_req *req, int64_t now_us, bool create)
{
    uint64_t id = lease_id(t, req);
    struct kg_lease *set = &t->slots[(size_t)(id >> 32) & (t->nsets - 1)], *victim = NULL;

    for (size_t i = 0; i < WAYS; i++) {
        struct kg_lease *l = &set[i];

        if (l->id != id)
            continue;
        /* The key's rate changed: its tokens were taken under the old one. */
        if (!same_rates(l, req) && !busy(l))
            reset(t, l, id, req);
        return l;
    }
    if (!create)
        return NULL;
    /* A free entry, else an idle one: holding nothing and denied no more
     * first, then the one holding fewest tokens (those are lost: the
     * gateway lets less through, never more). */
    for (size_t i = 0; i < WAYS; i++) {
        struct kg_lease *l = &set[i];

        if (l->id == 0) {
            victim = l;
            break;
        }
        if (busy(l))
            continue;
        if (l->tokens == 0 && l->denied_until_us <= now_us) {
            victim = l;
            break;
        }
        if (victim == NULL || l->tokens < victim->tokens)
            victim = l;
    }
    if (victim != NULL)
        reset(t, victim, id, req);
    return victim;
}

/* The bucket's state as last described, aged to now, with the held tokens
 * counted as still to come. */
static void
aged(const struct kg_lease *l, const struct kg_gcra *g, const struct kg_gcra_result *s,
     int64_t now_us, struct kg_gcra_result *out)
{
    int64_t age = now_us - l->state_us;

    out->limit = g->burst;
    if (!l->has_state) {
        out->remaining = g->burst; /* nothing known yet: as a full bucket */
        out->reset_us = 0;
        out->retry_after_us = 0;
        out->allowed = true;
        return;
    }
    out->remaining = s->remaining + l->tokens;
    if (out->remaining > g->burst)
        out->remaining = g->burst;
    out->reset_us = s->reset_us > age ? s->reset_us - age : 0;
    out->retry_after_us = s->retry_after_us > age ? s->retry_after_us - age : 0;
    out->allowed = true;
}

static void
describe(const struct kg_lease *l, int64_t now_us, bool denied, struct kg_limit_verdict *out)
{
    memset(out, 0, sizeof(*out));
    out->allowed = !denied;
    out->has_key = l->has_key;
    out->has_tier = l->has_tier;
    if (l->has_key) {
        out->key_rate = l->key_rate;
        aged(l, &l->key_rate, &l->key_state, now_us, &out->key);
    }
    if (l->has_tier) {
        out->tier_rate = l->tier_rate;
        aged(l, &l->tier_rate, &l->tier_state, now_us, &out->tier);
    }
    if (!denied)
        return;
    /* Refused here: the bucket(s) the store said must be waited for. */
    {
        int64_t wait = l->denied_until_us - now_us;
        bool any = false;

        if (l->has_key && l->has_state && l->key_state.retry_after_us > 0) {
            out->key.allowed = false;
            out->key.remaining = 0;
            out->key.retry_after_us = out->key.retry_after_us > 0 ? out->key.retry_after_us : wait;
            any = true;
        }
        if (l->has_tier && l->has_state && l->tier_state.retry_after_us > 0) {
            out->tier.allowed = false;
            out->tier.remaining = 0;
            out->tier.retry_after_us =
                out->tier.retry_after_us > 0 ? out->tier.retry_after_us : wait;
            any = true;
        }
        if (!any) {
            struct kg_gcra_result *r = l->has_key ? &out->key : &out->tier;

            r->allowed = false;
            r->remaining = 0;
            r->retry_after_us = wait;
        }
    }
}

enum kg_lease_take
kg_lease_take(struct kg_lease *l, int64_t now_us, bool count, struct kg_limit_verdict *out)
{
    bool denied = l->tokens == 0 && l->denied_until_us > now_us;
    enum kg_lease_take r;

    if (denied)
        r = KG_LEASE_DENIED;
    else if (!count)
        r = KG_LEASE_TOKEN;
    else if (l->tokens > 0) {
        l->tokens--;
        r = KG_LEASE_TOKEN;
    } else
        return KG_LEASE_EMPTY;
    if (out != NULL)
        describe(l, now_us, denied, out);
    return r;
}

bool
kg_lease_wants_refill(const struct kg_lease *l)
{
    if (l->queued || l->inflight)
        return false;
    if (l->waiters != NULL)
        return true;
    /* Ahead of need: half the lease spent (nothing held in exact mode),
     * unless the store said the key is exhausted: then only a request
     * after the denial asks again, or a flood on it would reach the store
     * as fast as the answers come back. */
    return l->size > 0 && l->tokens * 2 <= l->size && l->denied_until_us == 0;
}

int64_t
kg_lease_ask(const struct kg_lease *l)
{
    int64_t n = l->size - l->tokens;

    if (n < 0)
        n = 0;
    for (const struct kg_limit_wait *w = l->waiters; w != NULL; w = w->next)
        n++;
    return n > 0 ? n : 1;
}

void
kg_lease_add_waiter(struct kg_lease *l, struct kg_limit_wait *w, int64_t deadline_us)
{
    w->deadline_us = deadline_us;
    w->next = NULL;
    if (l->waiters_tail != NULL)
        l->waiters_tail->next = w;
    else
        l->waiters = w;
    l->waiters_tail = w;
}

static struct kg_limit_wait *
pop_waiter(struct kg_lease *l)
{
    struct kg_limit_wait *w = l->waiters;

    l->waiters = w->next;
    if (l->waiters == NULL)
        l->waiters_tail = NULL;
    w->next = NULL;
    return w;
}

static void
append(struct kg_limit_wait **done, struct kg_limit_wait *w)
{
    while (*done != NULL)
        done = &(*done)->next;
    *done = w;
}

void
kg_lease_granted(struct kg_lease *l, int64_t granted, const struct kg_gcra_result *key_state,
                 const struct kg_gcra_result *tier_state, int64_t now_us,
                 struct kg_limit_wait **done)
{
    int64_t retry = 0;

    l->has_state = true;
    l->state_us = now_us;
    if (l->has_key && key_state != NULL) {
        l->key_state = *key_state;
        if (key_state->retry_after_us > retry)
            retry = key_state->retry_after_us;
    }
    if (l->has_tier && tier_state != NULL) {
        l->tier_state = *tier_state;
        if (tier_state->retry_after_us > retry)
            retry = tier_state->retry_after_us;
    }
    l->tokens += granted > 0 ? granted : 0;
    l->denied_until_us = 0;
    while (l->waiters != NULL && l->tokens > 0) {
        struct kg_limit_wait *w = pop_waiter(l);

        l->tokens--;
        w->answer = KG_LIMIT_DONE;
        describe(l, now_us, false, &w->verdict);
        kg_limiter_finish(&w->verdict);
        append(done, w);
    }
    if (l->tokens > 0 || retry == 0)
        return;
    /* Exhausted: refused here until the store would grant one again. */
    l->denied_until_us = now_us + retry;
    while (l->waiters != NULL) {
        struct kg_limit_wait *w = pop_waiter(l);

        w->answer = KG_LIMIT_DONE;
        describe(l, now_us, true, &w->verdict);
        kg_limiter_finish(&w->verdict);
        append(done, w);
    }
}

void
kg_lease_failed(struct kg_lease *l, struct kg_limit_wait **done)
{
    while (l->waiters != NULL) {
        struct kg_limit_wait *w = pop_waiter(l);

        w->answer = KG_LIMIT_DOWN;
        append(done, w);
    }
}

int64_t
kg_lease_expire(struct kg_lease *l, int64_t now_us, struct kg_limit_wait **done)
{
    struct kg_limit_wait *keep = NULL, *tail = NULL;
    int64_t first = INT64_MAX;

    while (l->waiters != NULL) {
        struct kg_limit_wait *w = pop_waiter(l);

        if (w->deadline_us <= now_us) {
            w->answer = KG_LIMIT_DOWN;
            append(done, w);
            continue;
        }
        if (w->deadline_us < first)
            first = w->deadline_us;
        if (tail != NULL)
            tail->next = w;
        else
            keep = w;
        tail = w;
    }
    l->waiters = keep;
    l->waiters_tail = tail;
    return first;
}
