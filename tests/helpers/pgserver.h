/* helpers/pgserver.h - a private PostgreSQL server for the tests that run
 * against the PostgreSQL store backend (unit tests of src/store/ and the
 * integration tests with several instances).
 *
 * kt_pg_start() runs initdb and pg_ctl from the Debian postgresql-15
 * package in a fresh temporary directory: trust authentication, no TCP
 * listener, its unix socket in that directory, fsync off. PostgreSQL
 * refuses to run as root, so when the test runs as root the server runs as
 * `nobody` (setpriv) and the directory is handed to it. Every wait is
 * bounded; kt_pg_free() stops the server (immediate) and removes the
 * directory.
 */
#ifndef KT_PGSERVER_H
#define KT_PGSERVER_H

#include <stdbool.h>
#include <stddef.h>

struct kt_pg;

/* Exit status of a test that cannot run for want of PostgreSQL (ctest's
 * SKIP_RETURN_CODE). */
#define KT_PG_SKIP 77

/* Starts a server. Returns 0 with *out set; KT_PG_SKIP when initdb is not
 * installed and KEYGATE_REQUIRE_POSTGRES is not 1 (the reason on stderr);
 * -1 on any other failure (the server log on stderr). */
int kt_pg_start(struct kt_pg **out);

/* Creates an empty database name and writes the URI that reaches it
 * ("postgresql:///name?host=DIR&user=keygate") into url. Returns 0 or -1. */
int kt_pg_createdb(struct kt_pg *pg, const char *name, char *url, size_t cap);

/* Runs one SQL statement on database name (NULL = "postgres") and returns
 * the first column of the first row as an integer ("t"/"f" as 1/0);
 * -12345 when there is no row or it failed (the error on stderr). */
long long kt_pg_int(struct kt_pg *pg, const char *name, const char *sql);

/* Every row of every table of database name as text (one row a line,
 * "table: (col,...)"), malloc'd, its length in *len; NULL when the server
 * cannot be reached. What the tests search for keys that must never be
 * stored, as they read an SQLite file. */
char *kt_pg_dump(struct kt_pg *pg, const char *name, size_t *len);

/* `pg_ctl stop` in mode "fast" or "immediate": the data stays. */
int kt_pg_stop(struct kt_pg *pg, const char *mode);
/* Starts the stopped server again on the same socket. */
int kt_pg_restart(struct kt_pg *pg);

/* Stops the server if it runs and removes its directory; NULL is a no-op. */
void kt_pg_free(struct kt_pg *pg);

#endif
