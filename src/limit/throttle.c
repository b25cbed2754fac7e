/* limit/throttle.c - per-client GCRA limiter in a fixed-size table.
 *
 * Owns the table and its locks; knows nothing about HTTP or where the
 * client string comes from. Times are scaled by the limit so the emission
 * interval (period / limit) stays an exact integer: a client's theoretical
 * arrival time (TAT) is kept in units of 1/limit ms.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keygate/throttle.h"

#define WAYS 8       /* slots per set: the eviction choice is made among these */
#define LOCKS_MAX 64 /* lock stripes; a set is always guarded by the same one */
#define LIMIT_MAX 1000000
#define PERIOD_MAX_MS (7LL * 24 * 3600 * 1000)

struct slot {
    uint64_t id; /* keyed hash of the client string; 0 = empty */
    int64_t tat; /* theoretical arrival time, in ms * limit */
};

struct kg_throttle {
    int64_t limit;
    int64_t period_ms;
    size_t nsets; /* a power of two */
    size_t nlocks;
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    pthread_mutex_t locks[LOCKS_MAX];
    struct slot *slots; /* nsets * WAYS */
};

enum kg_status
kg_throttle_new(int64_t limit, int64_t period_ms, size_t clients, struct kg_throttle **out,
                struct kg_err *err)
{
    struct kg_throttle *t;
    size_t nsets = 1;

    *out = NULL;
    if (limit < 1 || limit > LIMIT_MAX)
        return kg_err_set(err, KG_EINVAL, "throttle limit must be 1 to %d", LIMIT_MAX);
    if (period_ms < 1 || period_ms > PERIOD_MAX_MS)
        return kg_err_set(err, KG_EINVAL, "throttle period must be 1 ms to 7 days");
    if (clients < 1 || clients > ((size_t)1 << 24))
        return kg_err_set(err, KG_EINVAL, "throttle size must be 1 to %zu clients",
                          (size_t)1 << 24);
    if (sodium_init() < 0)
        return kg_err_set(err, KG_EIO, "libsodium failed to initialise");
    while (nsets * WAYS < clients)
        nsets *= 2;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    t->slots = calloc(nsets * WAYS, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    }
    t->limit = limit;
    t->period_ms = period_ms;
    t->nsets = nsets;
    t->nlocks = nsets < LOCKS_MAX ? nsets : LOCKS_MAX;
    for (size_t i = 0; i < t->nlocks; i++)
        pthread_mutex_init(&t->locks[i], NULL);
    crypto_shorthash_keygen(t->hkey);
    *out = t;
    return KG_OK;
}

void
kg_throttle_free(struct kg_throttle *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nlocks; i++)
        pthread_mutex_destroy(&t->locks[i]);
    sodium_memzero(t->hkey, sizeof(t->hkey));
    free(t->slots);
    free(t);
}

static uint64_t
client_id(const struct kg_throttle *t, const char *client)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t id;

    crypto_shorthash(h, (const unsigned char *)client, strlen(client), t->hkey);
    memcpy(&id, h, sizeof(id));
    return id != 0 ? id : 1; /* 0 marks an empty slot */
}

/* The slot of id in its set: its own, else a recovered or empty one, else
 * the oldest. *fresh tells the caller the slot holds no record of id yet.
 * Called with the set's lock held. */
static struct slot *
find_slot(struct slot *set, uint64_t id, int64_t now_scaled, bool *fresh)
{
    struct slot *victim = &set[0];

    for (size_t i = 0; i < WAYS; i++) {
        if (set[i].id == id) {
            *fresh = false;
            return &set[i];
        }
    }
    for (size_t i = 0; i < WAYS; i++) {
        if (set[i].id == 0 || set[i].tat <= now_scaled) {
            victim = &set[i];
            break;
        }
        if (set[i].tat < victim->tat)
            victim = &set[i];
    }
    *fresh = true;
    return victim;
}

static bool
decide(struct kg_throttle *t, const char *client, int64_t now_ms, bool count,
       int64_t *retry_after_ms)
{
    uint64_t id = client_id(t, client);
    size_t set_index = (size_t)(id >> 32) & (t->nsets - 1);
    struct slot *set = &t->slots[set_index * WAYS], *s;
    pthread_mutex_t *lock = &t->locks[set_index & (t->nlocks - 1)];
    int64_t now_scaled = now_ms * t->limit;
    int64_t tat, new_tat, over;
    bool fresh, allowed;

    pthread_mutex_lock(lock);
    s = find_slot(set, id, now_scaled, &fresh);
    tat = fresh || s->tat < now_scaled ? now_scaled : s->tat;
    new_tat = tat + t->period_ms;
    over = new_tat - now_scaled - t->period_ms * t->limit;
    allowed = over <= 0;
    if (allowed && count) {
        s->id = id;
        s->tat = new_tat;
    }
    pthread_mutex_unlock(lock);
    if (!allowed && retry_after_ms != NULL)
        *retry_after_ms = (over + t->limit - 1) / t->limit;
    return allowed;
}

bool
kg_throttle_take(struct kg_throttle *t, const char *client, int64_t now_ms, int64_t *retry_after_ms)
{
    return decide(t, client, now_ms, true, retry_after_ms);
}

bool
kg_throttle_peek(struct kg_throttle *t, const char *client, int64_t now_ms, int64_t *retry_after_ms)
{
    return decide(t, client, now_ms, false, retry_after_ms);
}

void
kg_throttle_fail(struct kg_throttle *failures, struct kg_throttle *cooldown, const char *client,
                 int64_t now_ms)
{
    if (failures == NULL || cooldown == NULL)
        return;
    if (!kg_throttle_take(failures, client, now_ms, NULL) ||
        !kg_throttle_peek(failures, client, now_ms, NULL))
        kg_throttle_take(cooldown, client, now_ms, NULL);
}

bool
kg_throttle_cooling(struct kg_throttle *cooldown, const char *client, int64_t now_ms,
                    int64_t *retry_after_ms)
{
    return cooldown != NULL && !kg_throttle_peek(cooldown, client, now_ms, retry_after_ms);
}

int
kg_throttle_retry_after_s(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;

    if (s < 1)
        return 1;
    return s > 86400 * 7 ? 86400 * 7 : (int)s;
}
