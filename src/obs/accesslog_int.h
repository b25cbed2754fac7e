/* obs/accesslog_int.h - what the writer (accesslog.c) and the line
 * formatter (accessfmt.c) share; nothing outside src/obs/ includes this
 * (the unit test, the fuzz target and bench/accesslog_line.c do, to hold
 * the line against jansson's).
 */
#ifndef KEYGATE_ACCESSLOG_INT_H
#define KEYGATE_ACCESSLOG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keygate/accesslog.h"

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

/* The members' names, in the line's order. */
extern const char *const kg_al_field_name[NFIELDS];

/* True for the members written as numbers (status, upstream_status,
 * duration_us, bytes_sent); the others are strings. */
bool kg_al_field_is_number(int f);

/* One member's value. A string member is s (n bytes, any bytes: a byte
 * that is not part of valid UTF-8 is written as U+FFFD), or null when s is
 * NULL. A number member is i, or null when is_null. */
struct kg_al_value {
    const char *s;
    size_t n;
    int64_t i;
    bool is_null;
};

/* The writer's state between lines: where a masked path or request id is
 * copied, and the time text, whose date changes once a second. Zeroed
 * memory is a valid start; it owns nothing. */
struct kg_al_line {
    char masked[KG_ACCESSLOG_PATH_MAX]; /* the path with a key masked */
    char masked_id[KG_REQUEST_ID_MAX];  /* the request id with a key masked */
    char when[25];                      /* the last time written, and its second */
    int64_t when_s;
};

/* The most bytes kg_al_line_write() writes for values made by
 * kg_al_line_values(): every byte of every string escaped as \u00XX (6),
 * plus the time, the outcome, four numbers, the names and punctuation. */
#define KG_AL_LINE_MAX (6 * KG_ACCESSLOG_TEXT_MAX + 512)

/* r's twelve members into v, keys in the path and request id masked (into
 * l's buffers); the strings point into r and l, valid while both are.
 * wall_off_us: kg_al_wall_offset_us() of about now, for records with
 * end_mono_us. Cannot fail. */
void kg_al_line_values(struct kg_al_line *l, const struct kg_accesslog_rec *r, int64_t wall_off_us,
                       struct kg_al_value v[NFIELDS]);

/* Writes v as one JSON object and '\n' at out and returns the bytes
 * written (no NUL). Byte for byte what json_dumpb(JSON_COMPACT |
 * JSON_PRESERVE_ORDER) writes for the same members (jansson's escaping:
 * '"', '\\' and \b \f \n \r \t short, other bytes below 0x20 as \u00XX
 * with capital hex digits, '/' and DEL as they are) after each byte that
 * is not UTF-8 became U+FFFD. out holds KG_AL_LINE_MAX bytes when v came
 * from kg_al_line_values(); otherwise at least 6 bytes per string byte
 * plus 512. */
size_t kg_al_line_write(const struct kg_al_value v[NFIELDS], char *out);

/* The wall clock minus the monotonic one, in microseconds. */
int64_t kg_al_wall_offset_us(void);

#endif
