/* Fuzz target: a whole config file (config/config.c). Input: the file's
 * bytes. The loader either refuses it with at least one "file:line: what is
 * wrong" report, or returns a config without any report; nothing in between,
 * nothing leaked. */
#include <stdlib.h>

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int nreports = 0;
    struct kg_config *cfg = fz_config((const char *)data, size, &nreports);

    if ((cfg == NULL) != (nreports > 0))
        __builtin_trap();
    kg_config_free(cfg);
    return 0;
}
