/* Fuzz target: key format and checksum (auth/keyfmt.c). Input: a candidate
 * key. kg_keyfmt_check() must never read past len (ASan sees the input's
 * exact bounds); a key it accepts yields display parts and a masked form
 * that hold no more of the key than the prefix and the last 4 characters. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "keygate/keyfmt.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char prefix[KG_DPREFIX_MAX], last4[5], masked[KG_DPREFIX_MAX + 8];
    char *key;

    if (!kg_keyfmt_check((const char *)data, size))
        return 0;
    if (size < KG_KEY_TAIL_LEN + 1 || size > KG_KEY_MAX - 1)
        __builtin_trap(); /* accepted with an impossible length */
    key = fz_strndup(data, size);
    kg_keyfmt_display(key, size, prefix, last4);
    if (strlen(last4) != 4 || memcmp(last4, key + size - 4, 4) != 0)
        __builtin_trap();
    if (strlen(prefix) >= size - KG_KEY_TAIL_LEN + KG_KEY_SHOWN_BODY + 1)
        __builtin_trap();
    kg_keyfmt_mask(prefix, last4, masked, sizeof(masked));
    if (strstr(masked, key) != NULL)
        __builtin_trap(); /* the full key must never come back out */
    /* Any one character changed in the tail breaks the checksum. */
    key[size - 1] = key[size - 1] == '0' ? '1' : '0';
    if (kg_keyfmt_check(key, size))
        __builtin_trap();
    free(key);
    return 0;
}
