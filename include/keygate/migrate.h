/* keygate/migrate.h - schema migrations embedded from sql/NNN_*.sql.
 *
 * Migration i (0-based, in file-name order) brings PRAGMA user_version from
 * i to i+1. The table is generated at build time by cmake/embed_sql.cmake.
 */
#ifndef KEYGATE_MIGRATE_H
#define KEYGATE_MIGRATE_H

#include <stddef.h>

struct kg_migration {
    const char *name; /* "001_init.sql" */
    const char *sql;
};

extern const struct kg_migration kg_migrations[];
extern const size_t kg_migrations_count;

/* The PostgreSQL backend's own set, sql/postgres/NNN_*.sql: migration i
 * is recorded as version i+1 in its keygate_schema table. */
extern const struct kg_migration kg_pg_migrations[];
extern const size_t kg_pg_migrations_count;

#endif
