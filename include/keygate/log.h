/* keygate/log.h - the daemon's own messages (not the access log).
 *
 * Lines go to stderr with time and level, or as JSON lines when
 * kg_log_set_format(KG_LOG_JSON): one object per line,
 * {"time":"2026-01-02T03:04:05.678Z","level":"info","message":"..."},
 * always valid JSON (a message that is not UTF-8 has its non-ASCII bytes
 * shown as '?'). The level is
 * checked before the arguments are formatted. Never pass an API key, a
 * password or the secret. Thread-safe: each line is one write(2); level
 * and format may be changed (SIGHUP) while other threads log. A line that
 * stderr (a pipe or socket whose reader stalled) has not taken within
 * 200 ms is dropped, so logging never freezes a thread.
 */
#ifndef KEYGATE_LOG_H
#define KEYGATE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

enum kg_log_level { KG_LOG_ERROR = 0, KG_LOG_WARN, KG_LOG_INFO, KG_LOG_DEBUG };
enum kg_log_format { KG_LOG_TEXT = 0, KG_LOG_JSON };

extern _Atomic int kg_log_level_current;

void kg_log_set_level(enum kg_log_level level);
void kg_log_set_format(enum kg_log_format fmt);
/* "error", "warn", "info", "debug" -> level; false when unknown. */
bool kg_log_level_parse(const char *s, enum kg_log_level *out);

void kg_log_write(enum kg_log_level level, const char *func, int with_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define kg_log_at(lvl, errno_, ...)                                                                \
    do {                                                                                           \
        if ((int)(lvl) <= atomic_load_explicit(&kg_log_level_current, memory_order_relaxed))       \
            kg_log_write((lvl), __func__, (errno_), __VA_ARGS__);                                  \
    } while (0)

/* warn adds strerror(errno); warnx does not (OpenBSD log.c). */
#define kg_log_error(...) kg_log_at(KG_LOG_ERROR, 0, __VA_ARGS__)
#define kg_log_warn(...) kg_log_at(KG_LOG_WARN, 1, __VA_ARGS__)
#define kg_log_warnx(...) kg_log_at(KG_LOG_WARN, 0, __VA_ARGS__)
#define kg_log_info(...) kg_log_at(KG_LOG_INFO, 0, __VA_ARGS__)
#define kg_log_debug(...) kg_log_at(KG_LOG_DEBUG, 0, __VA_ARGS__)

/* Startup only: logs and exits 1. Never on the request path. */
_Noreturn void kg_fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
