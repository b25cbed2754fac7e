/* keygate/timeutil.h - clocks, RFC 3339 times and durations.
 *
 * All times in keygate are int64 Unix seconds (0 means "not set") unless a
 * name says _ms or _us. Pure functions take "now" as an argument so tests can
 * step time; only kg_time_now*() read the clock.
 */
#ifndef KEYGATE_TIMEUTIL_H
#define KEYGATE_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>
#include "keygate/status.h"

/* Wall clock, Unix seconds. Thread-safe. */
int64_t kg_time_now(void);
/* Monotonic clock in milliseconds / microseconds, for deadlines and latency. */
int64_t kg_time_mono_ms(void);
int64_t kg_time_mono_us(void);

#define KG_RFC3339_MAX 32
#define KG_TIME_MAX 253402300799 /* 9999-12-31T23:59:59Z: the last time four digits write */

/* Writes t as "2026-11-23T14:00:00Z" into out (KG_RFC3339_MAX bytes).
 * t == 0 writes "" so callers can print "never". Returns out. */
char *kg_time_format(int64_t t, char out[KG_RFC3339_MAX]);

/* Parses an RFC 3339 date-time ("2026-12-01T00:00:00Z", "...+02:00",
 * fractional seconds ignored) or a plain date "2026-12-01" (midnight UTC).
 * KG_EINVAL with words in err when malformed, or past KG_TIME_MAX (a leap
 * second or an offset on 9999-12-31). */
enum kg_status kg_time_parse_rfc3339(const char *s, int64_t *out, struct kg_err *err);

/* Parses a duration: a positive integer followed by s, m, h, d or w
 * ("30d", "90d", "365d", "15m"). *out is seconds. KG_EINVAL when malformed,
 * zero or overflowing. */
enum kg_status kg_time_parse_duration(const char *s, int64_t *out, struct kg_err *err);

/* Parses an expiry as the CLI and admin API accept it: a duration counted
 * from now, or an RFC 3339 time. A time not after now is KG_EINVAL
 * ("expiry is in the past"). */
enum kg_status kg_time_parse_expiry(const char *s, int64_t now, int64_t *out, struct kg_err *err);

#endif
