/* limit/ipallow.c - per-key IP allowlists in a map beside the key cache.
 * The writer keeps a chained hash of key id -> list text (only keys that
 * have one); a publish turns it into an immutable snapshot sorted by id,
 * with every block parsed, that readers search without allocating. The
 * snapshot is counted: readers take a reference under a mutex held for two
 * instructions, and whoever drops the last reference frees it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keygate/clientip.h"
#include "keygate/ipallow.h"

struct node {
    struct node *next;
    char *list;
    char id[];
};

struct entry {
    const char *id;
    size_t n;
    const struct kg_cidr *blocks;
};

struct snap {
    _Atomic size_t refs;
    size_t n;
    struct entry *e;
    struct kg_cidr *blocks;
    char *ids; /* every id, NUL-separated */
};

struct kg_ipallow {
    struct node **tab;
    size_t cap, n;
    bool changed;
    pthread_mutex_t mu; /* guards cur's reference taking */
    struct snap *cur;
};

static uint64_t
hash_of(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void
snap_unref(struct snap *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    free(s->e);
    free(s->blocks);
    free(s->ids);
    free(s);
}

enum kg_status
kg_ipallow_new(struct kg_ipallow **out)
{
    struct kg_ipallow *a = calloc(1, sizeof(*a));

    *out = NULL;
    if (a == NULL || pthread_mutex_init(&a->mu, NULL) != 0) {
        free(a);
        return KG_ENOMEM;
    }
    *out = a;
    return KG_OK;
}

void
kg_ipallow_free(struct kg_ipallow *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->cap; i++) {
        struct node *nd = a->tab[i], *next;

        for (; nd != NULL; nd = next) {
            next = nd->next;
            free(nd->list);
            free(nd);
        }
    }
    free(a->tab);
    snap_unref(a->cur);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static bool
grow(struct kg_ipallow *a)
{
    size_t cap = a->cap == 0 ? 64 : a->cap * 2;
    struct node **tab = calloc(cap, sizeof(*tab));

    if (tab == NULL)
        return false;
    for (size_t i = 0; i < a->cap; i++) {
        struct node *nd = a->tab[i], *next;

        for (; nd != NULL; nd = next) {
            size_t b = hash_of(nd->id) & (cap - 1);

            next = nd->next;
            nd->next = tab[b];
            tab[b] = nd;
        }
    }
    free(a->tab);
    a->tab = tab;
    a->cap = cap;
    return true;
}

enum kg_status
kg_ipallow_note(struct kg_ipallow *a, const char *id, const char *list, bool *changed)
{
    struct node **pp = NULL, *nd;
    size_t idlen;
    char *copy;

    if (changed != NULL)
        *changed = a->changed;
    if (a->cap > 0) {
        for (pp = &a->tab[hash_of(id) & (a->cap - 1)]; *pp != NULL; pp = &(*pp)->next)
            if (strcmp((*pp)->id, id) == 0)
                break;
    }
    nd = pp != NULL ? *pp : NULL;
    if (list[0] == '\0') {
        if (nd == NULL)
            return KG_OK;
        *pp = nd->next;
        free(nd->list);
        free(nd);
        a->n--;
        goto done;
    }
    if (nd != NULL && strcmp(nd->list, list) == 0)
        return KG_OK;
    copy = strdup(list);
    if (copy == NULL)
        return KG_ENOMEM;
    if (nd != NULL) {
        free(nd->list);
        nd->list = copy;
        goto done;
    }
    if ((a->n + 1) * 4 > a->cap * 3 && !grow(a)) {
        free(copy);
        return KG_ENOMEM;
    }
    idlen = strlen(id) + 1;
    nd = malloc(sizeof(*nd) + idlen);
    if (nd == NULL) {
        free(copy);
        return KG_ENOMEM;
    }
    memcpy(nd->id, id, idlen);
    nd->list = copy;
    pp = &a->tab[hash_of(id) & (a->cap - 1)];
    nd->next = *pp;
    *pp = nd;
    a->n++;
done:
    a->changed = true;
    if (changed != NULL)
        *changed = true;
    return KG_OK;
}

static int
entry_cmp(const void *x, const void *y)
{
    return strcmp(((const struct entry *)x)->id, ((const struct entry *)y)->id);
}

/* Parses the blocks of list into out (room for every comma plus one); the
 * count. */
static size_t
parse_list(const char *list, struct kg_cidr *out)
{
    char one[KG_CLIENTIP_MAX + 8];
    size_t n = 0;

    while (*list != '\0') {
        const char *end = strchr(list, ',');
        size_t len = end != NULL ? (size_t)(end - list) : strlen(list);

        if (len < sizeof(one)) {
            memcpy(one, list, len);
            one[len] = '\0';
            if (kg_clientip_cidr_parse(one, &out[n]))
                n++;
        }
        list += len + (end != NULL ? 1 : 0);
    }
    return n;
}

enum kg_status
kg_ipallow_publish(struct kg_ipallow *a)
{
    size_t nblocks = 0, idbytes = 0, k = 0, b = 0, off = 0;
    struct snap *s, *old;

    if (!a->changed)
        return KG_OK;
    for (size_t i = 0; i < a->cap; i++)
        for (const struct node *nd = a->tab[i]; nd != NULL; nd = nd->next) {
            idbytes += strlen(nd->id) + 1;
            nblocks++;
            for (const char *p = nd->list; *p != '\0'; p++)
                nblocks += *p == ',';
        }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KG_ENOMEM;
    atomic_init(&s->refs, 1);
    s->e = calloc(a->n + 1, sizeof(*s->e));
    s->blocks = calloc(nblocks + 1, sizeof(*s->blocks));
    s->ids = malloc(idbytes + 1);
    if (s->e == NULL || s->blocks == NULL || s->ids == NULL) {
        snap_unref(s);
        return KG_ENOMEM;
    }
    for (size_t i = 0; i < a->cap; i++)
        for (const struct node *nd = a->tab[i]; nd != NULL; nd = nd->next) {
            size_t len = strlen(nd->id) + 1;

            memcpy(s->ids + off, nd->id, len);
            s->e[k].id = s->ids + off;
            off += len;
            s->e[k].blocks = s->blocks + b;
            s->e[k].n = parse_list(nd->list, s->blocks + b);
            b += s->e[k].n;
            k++;
        }
    s->n = k;
    qsort(s->e, s->n, sizeof(*s->e), entry_cmp);
    pthread_mutex_lock(&a->mu);
    old = a->cur;
    a->cur = s;
    pthread_mutex_unlock(&a->mu);
    snap_unref(old);
    a->changed = false;
    return KG_OK;
}

static struct snap *
acquire(struct kg_ipallow *a)
{
    struct snap *s;

    pthread_mutex_lock(&a->mu);
    s = a->cur;
    if (s != NULL)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&a->mu);
    return s;
}

bool
kg_ipallow_permits(struct kg_ipallow *a, const char *id, const char *client_ip)
{
    struct entry want = {.id = id};
    const struct entry *e;
    struct kg_ipaddr ip;
    struct snap *s;
    bool ok = false;

    if (client_ip == NULL || !kg_clientip_parse(client_ip, &ip))
        return false;
    s = acquire(a);
    if (s == NULL)
        return false;
    e = bsearch(&want, s->e, s->n, sizeof(*s->e), entry_cmp);
    if (e != NULL)
        ok = kg_clientip_trusted(e->blocks, e->n, &ip);
    snap_unref(s);
    return ok;
}

size_t
kg_ipallow_count(struct kg_ipallow *a)
{
    struct snap *s = acquire(a);
    size_t n = s != NULL ? s->n : 0;

    snap_unref(s);
    return n;
}
