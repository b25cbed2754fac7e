/* Fuzz target: credential headers (http/credential.c). Input: a raw
 * request; every header goes through kg_credential_feed() under a config
 * with two extra credential_header names, as the front end does. A key
 * found must lie inside the header value it was taken from. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "keygate/credential.h"

static struct kg_config *cfg;

static void
feed(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct kg_cred *c = ctx;
    const char *before = c->key;

    (void)nlen;
    (void)kg_credential_is_cred_header(cfg, name, value);
    (void)kg_credential_feed(c, cfg, name, value, vlen);
    if (c->key != NULL && c->key != before && (c->key < value || c->key + c->len > value + vlen))
        __builtin_trap();
}

static void
end(void *ctx)
{
    struct kg_cred *c = ctx;
    enum kg_cred_result r = kg_credential_result(c);

    if (r == KG_CRED_ONE && c->key == NULL)
        __builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct fz_request_fns fns = {.header_fn = feed, .end_fn = end};
    struct kg_cred c;

    if (cfg == NULL) {
        static const char text[] = "credential_header X-Api-Key\ncredential_header Api-Token\n";

        cfg = fz_config(text, sizeof(text) - 1, NULL);
        if (cfg == NULL)
            abort();
    }
    kg_credential_init(&c);
    fz_request(data, size, &fns, &c);
    return 0;
}
