/* helpers/redis.h - a real redis-server for the tests of shared rate limits.
 *
 * kt_redis_start() runs `redis-server` on a free 127.0.0.1 port with its
 * working directory, log and (disabled) persistence in a temporary
 * directory, and waits (deadline 10 s) until it answers PING. The tests
 * stop it (SIGSTOP, SIGTERM) and start it again on the same port to play
 * outages; kt_redis_free() kills whatever still runs and removes the
 * directory. Like kt_daemon, a server is SIGKILLed by the kernel when the
 * thread that started it ends, so a test killed by its timeout leaves
 * nothing running.
 */
#ifndef KT_REDIS_H
#define KT_REDIS_H

#include <stdbool.h>

struct kt_redis;

/* The redis-server binary ($KEYGATE_REDIS_SERVER, else redis-server on
 * PATH or in /usr/bin), or NULL when there is none. Static string. */
const char *kt_redis_binary(void);

/* Starts a server; NULL (reason on stderr) on failure. */
struct kt_redis *kt_redis_start(void);

/* "redis://127.0.0.1:PORT/0", in a buffer of r. */
const char *kt_redis_url(const struct kt_redis *r);
int kt_redis_port(const struct kt_redis *r);

/* SIGSTOP / SIGCONT: a server that accepts connections and never answers. */
void kt_redis_pause(struct kt_redis *r);
void kt_redis_resume(struct kt_redis *r);

/* Shuts the server down (SIGCONT first if paused, SIGTERM, then SIGKILL
 * after 5 s) and reaps it. Its data is gone: persistence is off. */
void kt_redis_stop(struct kt_redis *r);

/* Starts it again on the same port; false when it did not come up. */
bool kt_redis_restart(struct kt_redis *r);

/* One command (words separated by single spaces, no quoting), its reply's
 * first line copied into reply (without CRLF). False when the server did
 * not answer within 2 s. */
bool kt_redis_command(struct kt_redis *r, const char *cmd, char *reply, size_t cap);

/* Stops it if running, removes its directory, frees. NULL ok. */
void kt_redis_free(struct kt_redis *r);

#endif
