/* Fuzz target: the native client's upstream response parser
 * (proxy/upresp.c). Input: the bytes an upstream sends, split at the first
 * byte's value into two reads as a socket might hand them over, then the
 * close. Checks the parser's own contract: it never uses more bytes than
 * given, a refusal always says why, and a body is only ever reported once
 * the head was accepted. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "keygate/upresp.h"

struct sink {
    size_t headers, body;
    bool bad_order;
};

static bool
on_header(void *ctx, const char *line, size_t len)
{
    struct sink *s = ctx;

    if (len < 2 || line[len - 2] != '\r' || line[len - 1] != '\n' || s->body > 0)
        s->bad_order = true;
    s->headers++;
    return true;
}

static bool
on_body(void *ctx, const char *p, size_t len)
{
    struct sink *s = ctx;

    (void)p;
    s->body += len;
    return true;
}

static void
check(const struct kg_upresp *r, const struct sink *s)
{
    if (s->bad_order)
        __builtin_trap();
    if (kg_upresp_state(r) == KG_UPRESP_BAD && kg_upresp_error(r)[0] == '\0')
        __builtin_trap(); /* a refusal always says why */
    if (s->body > 0 && kg_upresp_status(r) < 200)
        __builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct kg_upresp_cb cb = {.header = on_header, .body = on_body};
    struct kg_upresp *r = kg_upresp_new(4096);
    struct sink s = {0};
    size_t split, used = 0;

    if (r == NULL || size == 0) {
        kg_upresp_free(r);
        return 0;
    }
    /* The first byte: the split point and whether the request was HEAD. */
    split = data[0] % (size > 1 ? size : 1);
    kg_upresp_reset(r, (data[0] & 0x80) != 0);
    data++;
    size--;
    if (split > size)
        split = size;
    used = kg_upresp_feed(r, (const char *)data, split, &cb, &s);
    if (used > split)
        __builtin_trap();
    if (used == split && split < size) {
        size_t more = kg_upresp_feed(r, (const char *)data + split, size - split, &cb, &s);

        if (more > size - split)
            __builtin_trap();
    }
    check(r, &s);
    if (kg_upresp_state(r) == KG_UPRESP_HEAD || kg_upresp_state(r) == KG_UPRESP_BODY)
        kg_upresp_eof(r, &cb, &s);
    check(r, &s);
    kg_upresp_free(r);
    return 0;
}
