/* helpers/daemon.h - the real keygate daemon and CLI, run by the integration tests.
 *
 * kt_daemon_new() makes a temporary directory (database, secret, config,
 * logs) and writes a config file: listen and admin_listen on free loopback
 * ports, database and secret_file in the directory unless the test's text
 * sets them (several daemons sharing a PostgreSQL store and one secret),
 * "workers 2" unless the test's text sets workers, then the test's own
 * config text. Keys are made
 * with the CLI against the same file, before or after the start.
 * kt_daemon_start() runs `$KEYGATE_BIN serve -c FILE` with its stderr in a
 * log file and waits, with a deadline, until GET /readyz on the admin port
 * answers 200. Everything is loopback only; every wait is bounded; the
 * directory is removed by kt_daemon_free() (kept when KEYGATE_TEST_KEEP=1).
 * One kt_daemon per thread. Every process started here is SIGKILLed by the
 * kernel if the thread that started it ends first, so a test binary killed
 * by a timeout leaves nothing running: start daemons from a thread that
 * outlives them (the main thread).
 *
 * No log may hold a key: every key a kt_daemon_*key* call got from the CLI
 * is remembered, as is every credential the http helpers sent (valid,
 * invalid or refused: helpers/http.h), and kt_daemon_stop() and
 * kt_daemon_free() fail the test (abort) when any file in the directory
 * with "log" in its name (the daemon's stderr/stdout, access logs) or the
 * store (keygate.db*, which holds the audit trail) holds one of them, or,
 * for one a key's length or longer, 10 characters in a row of its part
 * hidden from the display forms.
 */
#ifndef KT_DAEMON_H
#define KT_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>

struct kt_pg;

struct kt_daemon;

/* A port on 127.0.0.1 that was free a moment ago (bound to port 0, then
 * closed); 0 on failure. */
int kt_daemon_free_port(void);

/* Temporary directory and config (see above); config_text may be NULL.
 * NULL on failure (reason on stderr). Nothing runs yet. */
struct kt_daemon *kt_daemon_new(const char *config_text);

/* Starts the daemon and waits until /readyz answers 200 (deadline 20 s).
 * If it dies because a port was taken in the meantime, retries on new
 * ports. On failure prints the log to stderr and returns false. */
bool kt_daemon_start(struct kt_daemon *d);

/* SIGTERM, then waits (deadline 20 s; SIGKILL after it). Returns the exit
 * status (0 is a clean stop), 128+N when killed by signal N, -1 when the
 * daemon was not running. */
int kt_daemon_stop(struct kt_daemon *d);

/* Waits up to ms for the daemon to exit by itself (after a signal the test
 * sent with kill(kt_daemon_pid(d), ...)), sending nothing. Returns the exit
 * status as kt_daemon_stop() does, or -2 when it still runs at the
 * deadline (it is left running). */
int kt_daemon_wait(struct kt_daemon *d, long ms);

/* SIGKILL and reap; no-op when not running. The SIGKILL is what the test
 * asked for, so that exit is not unclean (see kt_daemon_free); a daemon
 * already dead when it is called is. */
void kt_daemon_kill(struct kt_daemon *d);

/* The next exit of d is code (e.g. 128 + SIGSEGV for a test that kills it
 * with that signal itself) and not a failure. Any other non-zero exit still is. */
void kt_daemon_expect_exit(struct kt_daemon *d, int code);

/* Adds text to the test's config (for lines that name the daemon's
 * directory, known only after kt_daemon_new) and rewrites the file; a
 * retry on new ports keeps it. Before kt_daemon_start(). */
bool kt_daemon_add_config(struct kt_daemon *d, const char *text);

/* Stops (SIGTERM) if running, removes the directory, frees. NULL ok.
 * Fails the test (abort: it may run in a group teardown, where cmocka
 * would not fail the binary) when any run of the daemon ended in anything
 * but exit 0 (or the exit kt_daemon_kill / kt_daemon_expect_exit asked
 * for), died before it was ready, or when a log in its directory holds a
 * sanitizer report (ASan, LSan, UBSan); the end of the log is printed. */
void kt_daemon_free(struct kt_daemon *d);

/* The leak check kt_daemon_free() runs, on its own: whether a key of d (or
 * a credential any client of this process sent) is in a log or the store
 * of d's directory, as a whole or by 10 of its hidden characters; what was
 * found where in why. For the check's own test (test_leakcheck). */
bool kt_daemon_keys_leaked(const struct kt_daemon *d, char *why, size_t cap);

bool kt_daemon_running(struct kt_daemon *d);
pid_t kt_daemon_pid(const struct kt_daemon *d);
int kt_daemon_port(const struct kt_daemon *d);
int kt_daemon_admin_port(const struct kt_daemon *d);
const char *kt_daemon_dir(const struct kt_daemon *d);
const char *kt_daemon_config_path(const struct kt_daemon *d);

/* For a daemon whose config turns TLS on: its URLs become https and the
 * readiness probe of kt_daemon_start() verifies the server with ca_file
 * (copied). Call before kt_daemon_start(). */
void kt_daemon_set_tls_ca(struct kt_daemon *d, const char *ca_file);
/* "http://127.0.0.1:PORT" (https after kt_daemon_set_tls_ca()) + path on the public / admin
 * listener, written into a buffer of the daemon that the next call reuses. */
const char *kt_daemon_url(struct kt_daemon *d, const char *path);
const char *kt_daemon_admin_url(struct kt_daemon *d, const char *path);

/* Everything the daemon wrote to stderr (and stdout) so far, malloc'd. */
char *kt_daemon_log(const struct kt_daemon *d);

/* How many times needle occurs in that log so far. */
size_t kt_daemon_log_count(const struct kt_daemon *d, const char *needle);

/* Waits until needle occurs at least n times in the log, at most ms
 * (polling); true when it did. */
bool kt_daemon_wait_log(const struct kt_daemon *d, const char *needle, size_t n, long ms);

/* Peak resident set (VmHWM) of the running daemon in KiB; -1 when unknown. */
long kt_daemon_peak_rss_kib(const struct kt_daemon *d);

/* ---- the command line ---- */

struct kt_cli_result {
    int exit_code; /* exit status; 128+N when killed by signal N; -1 when it could not run */
    char *out;     /* stdout, NUL-terminated */
    char *err;     /* stderr, NUL-terminated */
};

/* Runs `$KEYGATE_BIN ARGS... -c CONFIG` (args NULL-terminated) with a 30 s
 * deadline. Returns true when it ran; out must be cleaned up. */
bool kt_daemon_cli(struct kt_daemon *d, struct kt_cli_result *out, const char *const *args);

void kt_cli_result_cleanup(struct kt_cli_result *r);

/* Runs the CLI (args as kt_daemon_cli(), at least two) and returns what it
 * printed on stdout, parsed; fails the test (cmocka fail_msg) unless it
 * exited 0 with JSON. json_decref() the result. */
json_t *kt_daemon_cli_json(struct kt_daemon *d, const char *const *args);

/* A key made with `keys create --json`: both strings malloc'd. */
struct kt_key {
    char *id;
    char *key;
};

/* `keys create --name NAME [--scopes SCOPES] [--expires EXPIRES] --json`;
 * scopes and expires may be NULL. Returns false (and says why on stderr)
 * when the CLI failed or printed no key. */
bool kt_daemon_create_key(struct kt_daemon *d, const char *name, const char *scopes,
                          const char *expires, struct kt_key *out);

/* Runs any command that prints a key with --json (args must include
 * "--json"), e.g. {"keys", "create", "--name", "x", "--tenant", "acme",
 * "--json", NULL}; expects exit 0 and an object with "id" and "key". */
bool kt_daemon_key_cli(struct kt_daemon *d, const char *const *args, struct kt_key *out);

/* `keys rotate ID [--grace GRACE] --json`; grace may be NULL. */
bool kt_daemon_rotate_key(struct kt_daemon *d, const char *id, const char *grace,
                          struct kt_key *out);

/* `keys revoke ID`; true when the CLI exited 0. */
bool kt_daemon_revoke_key(struct kt_daemon *d, const char *id);

void kt_key_cleanup(struct kt_key *k);

/* A key the test got some other way (the admin API, signup): no log of d
 * may hold it either (see the top of this file). NULLs are ignored. */
void kt_daemon_remember_key(struct kt_daemon *d, const char *key);

/* ---- the store backend ----
 *
 * A suite that runs on both backends calls kt_daemon_backend_start() before
 * its tests and kt_daemon_backend_stop() after them. With
 * KEYGATE_TEST_DATABASE=postgres (ctest's *_postgres entries) the first
 * starts one private PostgreSQL server for the whole binary
 * (helpers/pgserver.h), and every kt_daemon_new() whose text sets no
 * database gets a fresh database of its own on it, as it would get a fresh
 * SQLite file; the leak check reads every row of it as it reads the file.
 * Otherwise both do nothing. */

/* 0 (SQLite, or the server runs); KT_PG_SKIP when PostgreSQL is not
 * installed and not required (exit with it); -1 on failure. */
int kt_daemon_backend_start(void);
void kt_daemon_backend_stop(void);
/* The server, or NULL on SQLite. */
struct kt_pg *kt_daemon_backend_pg(void);

/* The database d's config names when the helper chose it: the SQLite file
 * or the PostgreSQL URI. */
const char *kt_daemon_database(const struct kt_daemon *d);

/* Runs one SQL statement on d's own store, whichever backend (to look at
 * it, or to edit a row by hand as an attacker would): the first column of
 * the first row as an integer, or the rows changed; -12345 on failure (the
 * error on stderr). */
long long kt_daemon_sql(const struct kt_daemon *d, const char *sql);

#endif
