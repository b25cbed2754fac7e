/* Fuzz target: the raw-bytes guard's head scanner (http/rawguard.c). Input:
 * one split byte, then a byte stream as a client would send it on one
 * connection. The stream is scanned whole and again in pieces (sizes drawn
 * from the split byte): the verdict, the refused head's offset and a lost
 * sync must not depend on the cut; the safe offset never moves backwards
 * nor past the bytes fed. */
#include <stdlib.h>

#include "fuzz.h"
#include "keygate/rawguard.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum kg_rawguard_reason whole, why = KG_RAWGUARD_OK;
    enum kg_rawscan_result r = KG_RAWSCAN_MORE;
    struct kg_rawscan s;
    uint64_t at = 0, safe = 0;
    uint32_t x;
    bool lost = false;
    size_t i = 0;

    if (size < 1)
        return 0;
    x = data[0] * 2654435761u + 1;
    data++;
    size--;
    whole = kg_rawscan_buffer(data, size, &at, &lost);
    if (whole != KG_RAWGUARD_OK && (kg_rawguard_message(whole) == NULL || at > size))
        __builtin_trap();
    kg_rawscan_init(&s);
    while (i < size && r == KG_RAWSCAN_MORE) {
        size_t piece = 1 + (x >> 16) % 37;

        x = x * 1103515245u + 12345u;
        if (piece > size - i)
            piece = size - i;
        r = kg_rawscan_feed(&s, data + i, piece, &why);
        i += piece;
        if (r == KG_RAWSCAN_MORE) {
            if (kg_rawscan_safe_end(&s) < safe || kg_rawscan_safe_end(&s) > i)
                __builtin_trap();
            safe = kg_rawscan_safe_end(&s);
        }
    }
    if ((r == KG_RAWSCAN_REJECT) != (whole != KG_RAWGUARD_OK) || (r == KG_RAWSCAN_LOST) != lost)
        __builtin_trap();
    if (r == KG_RAWSCAN_REJECT && (why != whole || kg_rawscan_head_start(&s) != at))
        __builtin_trap();
    return 0;
}
