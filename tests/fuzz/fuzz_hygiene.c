/* Fuzz target: request hygiene (http/hygiene.c). Input: a raw HTTP/1.1
 * request; every header field goes through kg_hygiene_feed() with its exact
 * lengths, as the front end feeds what libmicrohttpd hands it. */
#include <string.h>

#include "fuzz.h"
#include "keygate/hygiene.h"

static void
feed(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    kg_hygiene_feed(ctx, name, nlen, value, vlen);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct fz_request_fns fns = {.header_fn = feed};
    struct kg_hygiene h;
    const char *why;

    kg_hygiene_init(&h);
    fz_request(data, size, &fns, &h);
    why = kg_hygiene_verdict(&h);
    if (why != NULL && strlen(why) == 0)
        __builtin_trap(); /* a refusal always says why */
    (void)kg_hygiene_has_body(&h);
    return 0;
}
