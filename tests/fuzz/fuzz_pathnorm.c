/* Fuzz target: path normalisation (http/pathnorm.c). Input: the path part
 * of a request target, any bytes. A path accepted once is canonical:
 * normalising the result again gives the same bytes, it starts with "/",
 * holds no "//", no "." or ".." segment and is no longer than the input. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "keygate/pathnorm.h"

static void
check_canonical(const char *p, size_t len)
{
    if (len == 0 || p[0] != '/' || strstr(p, "//") != NULL || strstr(p, "/./") != NULL ||
        strstr(p, "/../") != NULL)
        __builtin_trap();
    if ((len >= 2 && strcmp(p + len - 2, "/.") == 0) ||
        (len >= 3 && strcmp(p + len - 3, "/..") == 0))
        __builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kg_err err = {{0}};
    char *out = malloc(size + 1), *again = NULL;
    size_t olen;

    if (out == NULL)
        abort();
    if (kg_pathnorm((const char *)data, size, out, size + 1, &err) != KG_OK) {
        if (err.msg[0] == '\0')
            __builtin_trap(); /* every 400 says why */
        goto cleanup;
    }
    olen = strlen(out);
    if (olen > size)
        __builtin_trap();
    check_canonical(out, olen);
    again = malloc(olen + 1);
    if (again == NULL)
        abort();
    if (kg_pathnorm(out, olen, again, olen + 1, &err) != KG_OK || strcmp(out, again) != 0)
        __builtin_trap();

cleanup:
    free(out);
    free(again);
    return 0;
}
