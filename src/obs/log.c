/* obs/log.c - the daemon's own messages, after OpenBSD's log.c.
 * Owns the level and format; the access log is obs/accesslog.c. Each line
 * is formatted into a stack buffer and written with one write(2), so
 * threads never interleave within a line. */
#include <errno.h>
#include <poll.h>
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

/* Atomic: a SIGHUP changes them on the main thread while the loops log. */
_Atomic int kg_log_level_current = KG_LOG_INFO;
static _Atomic int log_format = KG_LOG_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
kg_log_set_level(enum kg_log_level level)
{
    atomic_store_explicit(&kg_log_level_current, (int)level, memory_order_relaxed);
}

void
kg_log_set_format(enum kg_log_format fmt)
{
    atomic_store_explicit(&log_format, (int)fmt, memory_order_relaxed);
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

/* Writes one whole line to stderr, unless stderr is a pipe or socket that
 * has not taken anything for LOG_STALL_MS: then the line is dropped. A
 * collector that stops reading must not freeze the thread that logs (the
 * main thread's reload and shutdown, a request loop). Regular files and
 * terminals are always writable to poll(). */
#define LOG_STALL_MS 200

static void
write_line(const char *line, size_t len)
{
    struct pollfd p = {.fd = STDERR_FILENO, .events = POLLOUT};

    if (poll(&p, 1, LOG_STALL_MS) != 1 || (p.revents & POLLOUT) == 0)
        return;
    if (write(STDERR_FILENO, line, len) < 0) {
        /* Nowhere left to report it. */
    }
}

/* One JSON object and a newline in one write(2). jansson refuses a string
 * that is not UTF-8 (a file name, a peer's bytes quoted in a message): then
 * every non-ASCII byte is shown as '?' rather than losing the message. */
static void
write_json(const char *ts, enum kg_log_level level, char *msg)
{
    json_t *m = json_string(msg), *o;
    char *text, *line = NULL;
    size_t len;

    if (m == NULL) {
        for (char *p = msg; *p != '\0'; p++) {
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        }
        m = json_string(msg);
    }
    /* "o" takes m, also when packing fails. */
    o = m != NULL
            ? json_pack("{s:s, s:s, s:o}", "time", ts, "level", level_names[level], "message", m)
            : NULL;
    text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL)
        return;
    len = strlen(text);
    line = malloc(len + 2);
    if (line != NULL) {
        memcpy(line, text, len);
        line[len] = '\n';
        write_line(line, len + 1);
    }
    free(line);
    free(text);
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

    if (atomic_load_explicit(&log_format, memory_order_relaxed) == KG_LOG_JSON) {
        write_json(ts, level, msg);
        return;
    }
    if (level == KG_LOG_DEBUG && func != NULL) {
        n = snprintf(line, sizeof(line), "%s %s %s: %s\n", ts, level_names[level], func, msg);
    } else {
        n = snprintf(line, sizeof(line), "%s %s %s\n", ts, level_names[level], msg);
    }
    if (n > (int)sizeof(line) - 1) {
        /* Cut, but still one line: the next one must not run into it. */
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    write_line(line, (size_t)n);
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
