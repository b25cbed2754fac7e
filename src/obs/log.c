/* obs/log.c - the daemon's own messages, after OpenBSD's log.c.
 * Owns the level and format; the access log is obs/accesslog.c. Each line
 * is formatted into a stack buffer and written with one write(2), so
 * threads never interleave within a line. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "keygate/log.h"

int kg_log_level_current = KG_LOG_INFO;
static enum kg_log_format log_format = KG_LOG_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
kg_log_set_level(enum kg_log_level level)
{
    kg_log_level_current = (int)level;
}

void
kg_log_set_format(enum kg_log_format fmt)
{
    log_format = fmt;
}

bool
kg_log_level_parse(const char *s, enum kg_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum kg_log_level)i;
            return true;
        }
    }
    return false;
}

static void
vlog(enum kg_log_level level, const char *func, int errnum, const char *fmt, va_list ap)
{
    char msg[1024], ts[40], line[2048];
    struct timeval tv;
    struct tm tm;
    int n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (errnum != 0) {
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof(msg) - len, ": %s", strerror(errnum));
    }
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = (int)strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - (size_t)n, ".%03ldZ", (long)(tv.tv_usec / 1000));

    if (log_format == KG_LOG_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "time", ts, "level", level_names[level], "msg",
                              msg);
        char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        n = snprintf(line, sizeof(line), "%s\n", s != NULL ? s : "{}");
        free(s);
        json_decref(o);
    } else if (level == KG_LOG_DEBUG && func != NULL) {
        n = snprintf(line, sizeof(line), "%s %s %s: %s\n", ts, level_names[level], func, msg);
    } else {
        n = snprintf(line, sizeof(line), "%s %s %s\n", ts, level_names[level], msg);
    }
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to report it. */
    }
}

void
kg_log_write(enum kg_log_level level, const char *func, int with_errno, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    vlog(level, func, with_errno ? saved : 0, fmt, ap);
    va_end(ap);
    errno = saved;
}

void
kg_fatalx(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(KG_LOG_ERROR, NULL, 0, fmt, ap);
    va_end(ap);
    exit(1);
}
