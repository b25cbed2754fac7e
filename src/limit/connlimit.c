/* limit/connlimit.c - open client connections per IP across all loops
 * (keygate/connlimit.h). Taken when a connection is accepted, given back
 * when libmicrohttpd closes it. */
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/connlimit.h"

#define NBUCKETS 4096u

struct entry {
    struct entry *next;
    unsigned char addr[16];
    unsigned count;
};

struct kg_connlimit {
    pthread_mutex_t mu;
    unsigned char key[crypto_shorthash_KEYBYTES];
    struct entry *bucket[NBUCKETS];
};

enum kg_status
kg_connlimit_new(struct kg_connlimit **out, struct kg_err *err)
{
    struct kg_connlimit *cl = calloc(1, sizeof(*cl));

    *out = NULL;
    if (cl == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory");
    if (pthread_mutex_init(&cl->mu, NULL) != 0) {
        free(cl);
        return kg_err_set(err, KG_ENOMEM, "cannot create a mutex");
    }
    randombytes_buf(cl->key, sizeof(cl->key));
    *out = cl;
    return KG_OK;
}

void
kg_connlimit_free(struct kg_connlimit *cl)
{
    if (cl == NULL)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        while (cl->bucket[i] != NULL) {
            struct entry *e = cl->bucket[i];

            cl->bucket[i] = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

/* The 16-byte form of sa's IP (IPv4 mapped into IPv6); false for other families. */
static bool
addr_key(const struct sockaddr *sa, unsigned char out[16])
{
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return true;
    }
    if (sa->sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    return false;
}

static struct entry **
find(struct kg_connlimit *cl, const unsigned char addr[16])
{
    unsigned char h[crypto_shorthash_BYTES];
    struct entry **pp;
    uint32_t b;

    crypto_shorthash(h, addr, 16, cl->key);
    memcpy(&b, h, sizeof(b));
    pp = &cl->bucket[b % NBUCKETS];
    while (*pp != NULL && memcmp((*pp)->addr, addr, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

bool
kg_connlimit_take(struct kg_connlimit *cl, const struct sockaddr *sa, unsigned max)
{
    unsigned char addr[16];
    struct entry **pp;
    bool ok = false;

    if (!addr_key(sa, addr) || max == 0)
        return false;
    pthread_mutex_lock(&cl->mu);
    pp = find(cl, addr);
    if (*pp == NULL) {
        struct entry *e = calloc(1, sizeof(*e));

        if (e == NULL)
            goto cleanup;
        memcpy(e->addr, addr, 16);
        *pp = e;
    }
    if ((*pp)->count < max) {
        (*pp)->count++;
        ok = true;
    }

cleanup:
    pthread_mutex_unlock(&cl->mu);
    return ok;
}

void
kg_connlimit_release(struct kg_connlimit *cl, const struct sockaddr *sa)
{
    unsigned char addr[16];
    struct entry **pp;

    if (!addr_key(sa, addr))
        return;
    pthread_mutex_lock(&cl->mu);
    pp = find(cl, addr);
    if (*pp != NULL && --(*pp)->count == 0) {
        struct entry *e = *pp;

        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&cl->mu);
}

unsigned
kg_connlimit_count(struct kg_connlimit *cl, const struct sockaddr *sa)
{
    unsigned char addr[16];
    unsigned n = 0;

    if (!addr_key(sa, addr))
        return 0;
    pthread_mutex_lock(&cl->mu);
    if (*find(cl, addr) != NULL)
        n = (*find(cl, addr))->count;
    pthread_mutex_unlock(&cl->mu);
    return n;
}
