/* util/timeutil.c - clocks, RFC 3339 and durations.
 * Pure parsing and formatting; the only clock reads are kg_time_now*(). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keygate/timeutil.h"

int64_t
kg_time_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t
kg_time_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
kg_time_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *
kg_time_format(int64_t t, char out[KG_RFC3339_MAX])
{
    struct tm tm;
    time_t tt = (time_t)t;

    out[0] = '\0';
    if (t == 0 || gmtime_r(&tt, &tm) == NULL)
        return out;
    strftime(out, KG_RFC3339_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return out;
}

/* Reads exactly n digits at *p into *v. */
static int
digits(const char **p, int n, int *v)
{
    int x = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *v = x;
    return 0;
}

static int
days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 ? 28 + leap : dm[m - 1];
}

enum kg_status
kg_time_parse_rfc3339(const char *s, int64_t *out, struct kg_err *err)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, oh = 0, om = 0, sign = 0;
    struct tm tm;
    int64_t t;

    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        goto bad;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || y < 1970)
        goto bad;
    if (*p == '\0')
        goto done;
    if (*p != 'T' && *p != 't' && *p != ' ')
        goto bad;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        goto bad;
    if (h > 23 || mi > 59 || sec > 60)
        goto bad;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            goto bad;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            goto bad;
    } else {
        goto bad;
    }
    if (*p != '\0')
        goto bad;
done:
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = (int64_t)timegm(&tm) - sign * ((int64_t)oh * 3600 + om * 60);
    /* A leap second or an offset can carry 9999-12-31 into year 10000, which
     * kg_time_format() writes with five digits and this parser refuses: an
     * expiry accepted here must read back from the key document. */
    if (t > KG_TIME_MAX)
        goto bad;
    *out = t;
    return KG_OK;
bad:
    return kg_err_set(err, KG_EINVAL,
                      "bad time \"%.40s\": want RFC 3339 such as 2026-12-31T23:59:59Z", s);
}

enum kg_status
kg_time_parse_duration(const char *s, int64_t *out, struct kg_err *err)
{
    char *end;
    long long n;
    int64_t unit;

    if (!isdigit((unsigned char)s[0]))
        goto bad;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno != 0 || n <= 0 || end[0] == '\0' || end[1] != '\0')
        goto bad;
    switch (end[0]) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    case 'w':
        unit = 7 * 86400;
        break;
    default:
        goto bad;
    }
    /* 100 years is more than any key should live; it also keeps now + d far from overflow. */
    if (n > (100LL * 365 * 86400) / unit)
        goto bad;
    *out = (int64_t)n * unit;
    return KG_OK;
bad:
    return kg_err_set(err, KG_EINVAL,
                      "bad duration \"%.40s\": want a positive number with s, m, h, d or w "
                      "(e.g. 30d)",
                      s);
}

enum kg_status
kg_time_parse_expiry(const char *s, int64_t now, int64_t *out, struct kg_err *err)
{
    int64_t t;
    enum kg_status rc;

    if (s[0] != '\0' && strchr("smhdw", s[strlen(s) - 1]) != NULL && strchr(s, '-') == NULL) {
        rc = kg_time_parse_duration(s, &t, err);
        if (rc != KG_OK)
            return rc;
        *out = now + t;
        return KG_OK;
    }
    rc = kg_time_parse_rfc3339(s, &t, NULL);
    if (rc != KG_OK)
        return kg_err_set(err, KG_EINVAL,
                          "bad expiry \"%.40s\": want 30d, 90d, 365d or an RFC 3339 time", s);
    if (t <= now)
        return kg_err_set(err, KG_EINVAL, "expiry \"%.40s\" is in the past", s);
    *out = t;
    return KG_OK;
}
