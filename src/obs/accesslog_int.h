/* obs/accesslog_int.h - what the writer (accesslog.c) and the line
 * formatter (accessfmt.c) share; nothing outside src/obs/ includes this.
 */
#ifndef KEYGATE_ACCESSLOG_INT_H
#define KEYGATE_ACCESSLOG_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "keygate/accesslog.h"

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

enum kg_al_field {
    F_TIME,
    F_REQUEST_ID,
    F_REMOTE,
    F_METHOD,
    F_PATH,
    F_STATUS,
    F_OUTCOME,
    F_KEY_ID,
    F_TENANT,
    F_UPSTREAM_STATUS,
    F_DURATION_US,
    F_BYTES_SENT,
    NFIELDS,
};

/* One jansson object reused for every line: its members are made once, in
 * the order above, and their values changed in place, so a line costs no
 * hash-table insert and no allocation for a number (profiled: building a
 * fresh object per line was most of the writer's time). */
struct kg_al_line {
    json_t *obj;
    json_t *val[NFIELDS];                        /* borrowed from obj */
    char scratch[3 * KG_ACCESSLOG_PATH_MAX + 1]; /* a field with bytes replaced */
    char masked[KG_ACCESSLOG_PATH_MAX];          /* the path with a key masked */
    char masked_id[KG_REQUEST_ID_MAX];           /* the request id with a key masked */
    char when[25];                               /* the last time written, and its second */
    int64_t when_s;
};

/* Makes l's object and its members, in order. false when out of memory
 * (l is then for kg_al_line_cleanup() only). */
bool kg_al_line_init(struct kg_al_line *l);
void kg_al_line_cleanup(struct kg_al_line *l);

/* Puts r into l's members, keys in the path and request id masked.
 * wall_off_us: kg_al_wall_offset_us() of about now, for records with
 * end_mono_us. false when a value could not be made. */
bool kg_al_line_fill(struct kg_al_line *l, const struct kg_accesslog_rec *r, int64_t wall_off_us);

/* The wall clock minus the monotonic one, in microseconds. */
int64_t kg_al_wall_offset_us(void);

#endif
