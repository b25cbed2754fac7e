/* Fuzz target: expiry, time and rate parsing (util/timeutil.c,
 * limit/gcra.c). Input: one string. It goes through every parser a config
 * value or an admin body field can reach: RFC 3339 times, durations
 * ("30d"), expiries (either, relative to a fixed now) and rates ("100/min").
 * A time that parses must format and parse back to the same instant (a key
 * document round-trips through the admin API), and a rate
 * must be one kg_gcra_init() accepts. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "keygate/gcra.h"
#include "keygate/timeutil.h"

#define NOW 1795000000 /* 2026-11-18: a fixed now, so runs repeat */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kg_err err = {{0}};
    char *s = fz_strndup(data, size), buf[KG_RFC3339_MAX];
    int64_t t, d, e, count, period;
    struct kg_gcra g;

    /* 0 is "not set" (formats as "") and an instant before 1970 is refused as
     * an expiry anyway: the round trip is owed from 1 on. */
    if (kg_time_parse_rfc3339(s, &t, &err) == KG_OK && t > 0) {
        int64_t back;

        if (kg_time_parse_rfc3339(kg_time_format(t, buf), &back, &err) != KG_OK || back != t)
            __builtin_trap();
    }
    if (kg_time_parse_duration(s, &d, &err) == KG_OK && d < 0)
        __builtin_trap();
    if (kg_time_parse_expiry(s, NOW, &e, &err) == KG_OK && e <= NOW)
        __builtin_trap(); /* "expiry is in the past" */
    if (kg_gcra_parse_rate(s, &count, &period)) {
        if (count < 1 || period < 1)
            __builtin_trap();
        if (kg_gcra_init(&g, count, period, 0, &err) != KG_OK)
            __builtin_trap();
        (void)kg_gcra_take(&g, 0, (int64_t)NOW * 1000000, NULL);
    }
    free(s);
    return 0;
}
