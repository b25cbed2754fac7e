/* tests/unit/store/test_store.c - src/store/store.c and its backends
 * through include/keygate/store.h: against real SQLite files in a fresh
 * temporary directory per test, and, with KEYGATE_TEST_DATABASE=postgres
 * (the ctest entry unit_store_test_store_postgres), the same tests that do
 * not look at files against a fresh database per test on a private
 * PostgreSQL server (tests/helpers/pgserver.c), plus the PostgreSQL-only
 * ones. Raw connections are used only to look at what was written and to
 * fake foreign or newer databases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "helpers/pgserver.h"
#include "keygate/migrate.h"
#include "keygate/store.h"
#include "store/pg_int.h"
#include "store/store_int.h"
#include "unit/fixture.h"

#define NOW 1800000000 /* 2027-01-15, a fixed clock */

struct fixture {
    char dir[64];   /* mkdtemp directory, removed by teardown */
    char path[128]; /* dir/data/keys.db: the data/ level does not exist yet; or a database URI */
    struct kg_store *st;
};

/* Set when the tests run against PostgreSQL: the server, and the database
 * of the running test (raw_int and raw_exec look there). */
static struct kt_pg *pg;
static char pg_db[32];
static int pg_dbs;

/* A pepper of our own: the store never sees it, only the digests. */
static const unsigned char test_pepper[32] = "keygate unit test pepper 32 byte";

static int
group_setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    if (kg_fx_mkdtemp(f->dir, "store") != 0) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/data/keys.db", f->dir);
    if (pg != NULL) {
        snprintf(pg_db, sizeof(pg_db), "store_%d", ++pg_dbs);
        if (kt_pg_createdb(pg, pg_db, f->path, sizeof(f->path)) != 0)
            return -1;
    }
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    kg_store_close(f->st);
    kg_fx_rmtree(f->dir);
    free(f);
    return 0;
}

/* Opens f->path into f->st, failing the test with the store's words. */
static void
open_store(struct fixture *f)
{
    struct kg_err err = {{0}};
    enum kg_status rc = kg_store_open(f->path, &f->st, &err);

    if (rc != KG_OK)
        fail_msg("opening %s should succeed: %s", f->path, err.msg);
}

/* Fills rec as keys/create would: digest of the fake key, display prefix
 * (first 8 characters) and last 4, never the key itself. */
static void
make_rec(struct kg_key_rec *rec, const char *id, const char *key, int64_t created_at)
{
    size_t len = strlen(key);

    memset(rec, 0, sizeof(*rec));
    snprintf(rec->id, sizeof(rec->id), "%s", id);
    snprintf(rec->name, sizeof(rec->name), "key for %s", id);
    snprintf(rec->prefix, sizeof(rec->prefix), "%.8s", key);
    snprintf(rec->last4, sizeof(rec->last4), "%s", key + len - 4);
    crypto_generichash(rec->digest, sizeof(rec->digest), (const unsigned char *)key, len,
                       test_pepper, sizeof(test_pepper));
    snprintf(rec->scopes, sizeof(rec->scopes), "read:a,write:b");
    snprintf(rec->tenant, sizeof(rec->tenant), "default");
    rec->created_at = created_at;
    rec->quota_limit = -1;
    snprintf(rec->metadata, sizeof(rec->metadata), "{}");
}

/* A distinct fake key per id, long like a real one. */
static void
fake_key(char *out, size_t cap, const char *id)
{
    snprintf(out, cap, "kg_live_%s_Q7zR2mXw9LpT4vKc8NdYb3Hs", id);
}

static void
insert_key(struct fixture *f, const char *id, int64_t created_at)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char key[96];

    fake_key(key, sizeof(key), id);
    make_rec(&rec, id, key, created_at);
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

static void
get_key(struct fixture *f, const char *id, struct kg_key_rec *out)
{
    struct kg_err err = {{0}};

    if (kg_store_key_get(f->st, id, out, &err) != KG_OK)
        fail_msg("getting %s should succeed: %s", id, err.msg);
}

/* One integer from SQL run on a separate raw connection. */
static int64_t
raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int64_t v = -12345;

    if (pg != NULL)
        return kt_pg_int(pg, pg_db, sql);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return v;
}

static void
raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;

    if (pg != NULL) {
        if (kt_pg_int(pg, pg_db, sql) == -12345)
            fail_msg("raw SQL should run: %s", sql);
        return;
    }
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("raw SQL should run: %s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

static void
test_opening_creates_a_private_directory_and_file_and_migrates(void **state)
{
    struct fixture *f = *state;
    char dir[160];
    struct stat sb;

    open_store(f);
    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), (int64_t)kg_migrations_count);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'keys'"), 1);
    /* WAL mode: the log file is there while the handle is open, as private. */
    snprintf(dir, sizeof(dir), "%s-wal", f->path);
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
}

static void
test_reopening_an_existing_store_is_idempotent(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;

    open_store(f);
    insert_key(f, "key_one", NOW);
    kg_store_close(f->st);
    f->st = NULL;
    open_store(f);
    kg_store_close(f->st);
    f->st = NULL;
    open_store(f);
    get_key(f, "key_one", &rec);
    assert_string_equal(rec.id, "key_one");
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), (int64_t)kg_migrations_count);
}

static void
test_a_sqlite_prefix_selects_the_sqlite_backend(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    char location[160];

    snprintf(location, sizeof(location), "sqlite:%s", f->path);
    assert_int_equal(kg_store_open(location, &f->st, &err), KG_OK);
    assert_int_equal(access(f->path, F_OK), 0);
}

static void
test_an_unknown_url_scheme_is_unsupported_and_its_password_not_echoed(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    assert_int_equal(kg_store_open("mysql://kg:hunter2@db.example/keygate", &f->st, &err),
                     KG_EINVAL);
    assert_null(f->st);
    assert_non_null(strstr(err.msg, "unsupported database URL"));
    assert_null(strstr(err.msg, "hunter2"));
}

static void
test_an_unreachable_postgres_server_is_an_io_error_without_the_password(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    /* Port 1 on loopback: nothing listens there. */
    assert_int_equal(kg_store_open("postgresql://kg:hunter2@127.0.0.1:1/keygate", &f->st, &err),
                     KG_EIO);
    assert_null(f->st);
    assert_non_null(strstr(err.msg, "postgresql://127.0.0.1:1/keygate"));
    assert_non_null(strstr(err.msg, "PostgreSQL unavailable"));
    assert_null(strstr(err.msg, "hunter2"));
    assert_int_equal(kg_store_open("postgres://kg:hunter2@[::1", &f->st, &err), KG_EINVAL);
    assert_null(strstr(err.msg, "hunter2"));
}

static void
test_insert_then_get_round_trips_every_field(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec in;
    struct kg_key_rec out;
    struct kg_err err = {{0}};

    open_store(f);
    make_rec(&in, "key_full", "kg_live_Full1234567890abcdefghijWXYZ", NOW);
    memset(in.tenant, 0, sizeof(in.tenant)); /* so the whole-struct compare holds */
    snprintf(in.tenant, sizeof(in.tenant), "acme");
    snprintf(in.name, sizeof(in.name), "billing job \xc3\xa9t\xc3\xa9");
    in.expires_at = NOW + 86400;
    in.revoked_at = NOW + 3600;
    in.last_used_at = NOW - 5;
    snprintf(in.rotated_to, sizeof(in.rotated_to), "key_next");
    snprintf(in.rate, sizeof(in.rate), "100/min");
    in.rate_burst = 20;
    in.quota_limit = 5000;
    snprintf(in.quota_period, sizeof(in.quota_period), "month");
    in.quota_used = 42;
    snprintf(in.metadata, sizeof(in.metadata), "{\"team\":\"billing\"}");
    assert_int_equal(kg_store_key_insert(f->st, &in, &err), KG_OK);

    get_key(f, "key_full", &out);
    assert_string_equal(out.id, in.id);
    assert_string_equal(out.name, in.name);
    assert_string_equal(out.prefix, "kg_live_");
    assert_string_equal(out.last4, "WXYZ");
    assert_memory_equal(out.digest, in.digest, KG_DIGEST_BYTES);
    assert_string_equal(out.scopes, in.scopes);
    assert_string_equal(out.tenant, "acme");
    assert_int_equal(out.created_at, NOW);
    assert_int_equal(out.expires_at, NOW + 86400);
    assert_int_equal(out.revoked_at, NOW + 3600);
    assert_int_equal(out.last_used_at, NOW - 5);
    assert_string_equal(out.rotated_to, "key_next");
    assert_string_equal(out.rate, "100/min");
    assert_int_equal(out.rate_burst, 20);
    assert_int_equal(out.quota_limit, 5000);
    assert_string_equal(out.quota_period, "month");
    assert_int_equal(out.quota_used, 42);
    assert_string_equal(out.metadata, in.metadata);
    /* No owner given: the tenant's default user, made on demand. */
    assert_int_equal(strncmp(out.user_id, "usr_", 4), 0);
    memcpy(in.user_id, out.user_id, sizeof(in.user_id));
    assert_memory_equal(&out, &in, sizeof(in)); /* and nothing else differs */
}

static void
test_unset_fields_are_stored_as_null_and_read_back_as_zero(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec out;

    open_store(f);
    insert_key(f, "key_bare", NOW);
    get_key(f, "key_bare", &out);
    assert_int_equal(out.expires_at, 0);
    assert_int_equal(out.revoked_at, 0);
    assert_int_equal(out.last_used_at, 0);
    assert_int_equal(out.rate_burst, 0);
    assert_int_equal(out.quota_limit, -1);
    assert_int_equal(out.quota_used, 0);
    assert_string_equal(out.rotated_to, "");
    assert_string_equal(out.rate, "");
    assert_string_equal(out.quota_period, "");
    assert_int_equal(raw_int(f->path, "SELECT expires_at IS NULL AND revoked_at IS NULL"
                                      " AND last_used_at IS NULL AND rotated_to IS NULL"
                                      " AND rate IS NULL AND rate_burst IS NULL"
                                      " AND quota_limit IS NULL AND quota_period IS NULL"
                                      " FROM keys WHERE id = 'key_bare'"),
                     1);
}

static void
test_empty_tenant_and_metadata_get_the_column_defaults(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec in;
    struct kg_key_rec out;
    struct kg_err err = {{0}};

    open_store(f);
    make_rec(&in, "key_defaults", "kg_live_Defaults0123456789abcdefABCD", NOW);
    in.tenant[0] = '\0';
    in.metadata[0] = '\0';
    assert_int_equal(kg_store_key_insert(f->st, &in, &err), KG_OK);
    get_key(f, "key_defaults", &out);
    assert_string_equal(out.tenant, "default");
    assert_string_equal(out.metadata, "{}");
}

static void
test_inserting_a_duplicate_id_is_a_conflict(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_dup", NOW);
    make_rec(&rec, "key_dup", "kg_live_SomeOtherKey0123456789abcdef", NOW);
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_ECONFLICT);
    assert_string_equal(err.msg, "key key_dup already exists");
}

static void
test_inserting_a_duplicate_digest_is_a_conflict_without_showing_it(void **state)
{
    struct fixture *f = *state;
    const char *key = "kg_live_SameSecretTwice0123456789abcd";
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char hex[2 * KG_DIGEST_BYTES + 1];

    open_store(f);
    make_rec(&rec, "key_first", key, NOW);
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_OK);
    make_rec(&rec, "key_second", key, NOW);
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_ECONFLICT);
    assert_non_null(strstr(err.msg, "same digest"));
    sodium_bin2hex(hex, sizeof(hex), rec.digest, sizeof(rec.digest));
    assert_null(strstr(err.msg, hex));
    assert_null(strstr(err.msg, key));
    assert_int_equal(kg_store_key_get(f->st, "key_second", &rec, &err), KG_ENOTFOUND);
}

static void
test_getting_an_unknown_key_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    open_store(f);
    assert_int_equal(kg_store_key_get(f->st, "key_missing", &rec, &err), KG_ENOTFOUND);
    assert_string_equal(err.msg, "key key_missing not found");
}

static void
test_invalid_records_are_rejected_before_storage(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    const char *key = "kg_live_Invalid0123456789abcdefghijk";

    open_store(f);
    make_rec(&rec, "key_bad", key, 0);
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_EINVAL);
    make_rec(&rec, "key_bad", key, NOW);
    rec.quota_limit = -2;
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_EINVAL);
    make_rec(&rec, "key_bad", key, NOW);
    memset(rec.name, 'x', sizeof(rec.name));
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_EINVAL);
    make_rec(&rec, "key_bad\nforged log line", key, NOW);
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_EINVAL);
    assert_null(strchr(err.msg, '\n'));
    /* A whole key pasted where an id belongs is refused, not echoed. */
    assert_int_equal(
        kg_store_key_get(f->st, "kg_live_AVeryLongPastedSecretKey0123456789", &rec, &err),
        KG_EINVAL);
    assert_null(strstr(err.msg, "AVeryLong"));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM keys"), 0);
}

struct walk {
    char ids[8][KG_ID_MAX];
    size_t n;
    size_t stop_after; /* 0 = never stop */
};

static bool
collect(const struct kg_key_rec *rec, void *ctx)
{
    struct walk *w = ctx;

    if (w->n < 8)
        snprintf(w->ids[w->n], sizeof(w->ids[w->n]), "%s", rec->id);
    w->n++;
    return w->stop_after == 0 || w->n < w->stop_after;
}

static void
test_each_walks_keys_oldest_first_then_by_id(void **state)
{
    struct fixture *f = *state;
    struct walk w = {.n = 0};
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_c", NOW + 300);
    insert_key(f, "key_b", NOW + 100);
    insert_key(f, "key_z", NOW + 200);
    insert_key(f, "key_a", NOW + 200);
    assert_int_equal(kg_store_key_each(f->st, collect, &w, &err), KG_OK);
    assert_int_equal(w.n, 4);
    assert_string_equal(w.ids[0], "key_b");
    assert_string_equal(w.ids[1], "key_a");
    assert_string_equal(w.ids[2], "key_z");
    assert_string_equal(w.ids[3], "key_c");
}

static void
test_each_stops_when_the_callback_says_so(void **state)
{
    struct fixture *f = *state;
    struct walk w = {.n = 0, .stop_after = 2};
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_1", NOW + 1);
    insert_key(f, "key_2", NOW + 2);
    insert_key(f, "key_3", NOW + 3);
    assert_int_equal(kg_store_key_each(f->st, collect, &w, &err), KG_OK);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.ids[1], "key_2");
}

static void
test_each_on_an_empty_store_calls_nothing(void **state)
{
    struct fixture *f = *state;
    struct walk w = {.n = 0};
    struct kg_err err = {{0}};

    open_store(f);
    assert_int_equal(kg_store_key_each(f->st, collect, &w, &err), KG_OK);
    assert_int_equal(w.n, 0);
}

static void
test_revoking_twice_is_a_conflict(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_rev", NOW);
    assert_int_equal(kg_store_key_revoke(f->st, "key_rev", NOW + 10, &err), KG_OK);
    get_key(f, "key_rev", &rec);
    assert_int_equal(rec.revoked_at, NOW + 10);
    assert_int_equal(kg_key_state_of(&rec, NOW + 10), KG_KEY_REVOKED);
    assert_int_equal(kg_store_key_revoke(f->st, "key_rev", NOW + 20, &err), KG_ECONFLICT);
    assert_string_equal(err.msg, "key key_rev is already revoked");
    get_key(f, "key_rev", &rec);
    assert_int_equal(rec.revoked_at, NOW + 10);
}

static void
test_revoking_an_unknown_key_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    open_store(f);
    assert_int_equal(kg_store_key_revoke(f->st, "key_ghost", NOW, &err), KG_ENOTFOUND);
    assert_string_equal(err.msg, "key key_ghost not found");
}

static void
test_revoking_a_key_in_rotation_grace_revokes_it_now(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec fresh;
    struct kg_key_rec old;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_old", NOW);
    make_rec(&fresh, "key_new", "kg_live_FreshKey0123456789abcdefghijk", NOW + 5);
    assert_int_equal(
        kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 86400, NOW + 5, NULL, &err), KG_OK);
    assert_int_equal(kg_store_key_revoke(f->st, "key_old", NOW + 60, &err), KG_OK);
    get_key(f, "key_old", &old);
    assert_int_equal(old.revoked_at, NOW + 60);
    assert_string_equal(old.rotated_to, "key_new");
}

static void
test_a_key_expires_by_time(void **state)
{
    struct kg_key_rec rec;

    (void)state;
    make_rec(&rec, "key_exp", "kg_live_Expiring0123456789abcdefghijk", NOW);
    rec.expires_at = NOW + 100;
    assert_int_equal(kg_key_state_of(&rec, NOW), KG_KEY_ACTIVE);
    assert_int_equal(kg_key_state_of(&rec, NOW + 99), KG_KEY_ACTIVE);
    assert_int_equal(kg_key_state_of(&rec, NOW + 100), KG_KEY_EXPIRED);
    assert_int_equal(kg_key_state_of(&rec, NOW + 1000000), KG_KEY_EXPIRED);
}

static void
test_revocation_wins_over_expiry(void **state)
{
    struct kg_key_rec rec;

    (void)state;
    make_rec(&rec, "key_both", "kg_live_Both0123456789abcdefghijklmno", NOW);
    rec.expires_at = NOW + 100;
    rec.revoked_at = NOW + 200;
    assert_int_equal(kg_key_state_of(&rec, NOW + 150), KG_KEY_EXPIRED);
    assert_int_equal(kg_key_state_of(&rec, NOW + 250), KG_KEY_REVOKED);
}

static void
test_a_revocation_scheduled_in_the_future_leaves_the_key_active(void **state)
{
    struct kg_key_rec rec;

    (void)state;
    make_rec(&rec, "key_grace", "kg_live_Grace0123456789abcdefghijklmn", NOW);
    rec.revoked_at = NOW + 3600;
    assert_int_equal(kg_key_state_of(&rec, NOW), KG_KEY_ACTIVE);
    assert_int_equal(kg_key_state_of(&rec, NOW + 3599), KG_KEY_ACTIVE);
    assert_int_equal(kg_key_state_of(&rec, NOW + 3600), KG_KEY_REVOKED);
}

static void
insert_key_at(struct fixture *f, const char *id, int64_t expires_at, int64_t revoked_at)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char key[96];

    fake_key(key, sizeof(key), id);
    make_rec(&rec, id, key, NOW);
    rec.expires_at = expires_at;
    rec.revoked_at = revoked_at;
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

struct walk_census {
    int64_t now;
    struct kg_key_census c;
};

/* The census /metrics made before: every key through kg_key_state_of(). */
static bool
census_by_walk(const struct kg_key_rec *rec, void *ctx)
{
    struct walk_census *w = ctx;

    switch (kg_key_state_of(rec, w->now)) {
    case KG_KEY_REVOKED:
        w->c.revoked++;
        break;
    case KG_KEY_EXPIRED:
        w->c.expired++;
        break;
    default:
        w->c.active++;
        break;
    }
    return true;
}

static void
assert_census(struct fixture *f, int64_t now, uint64_t active, uint64_t expired, uint64_t revoked)
{
    struct kg_key_census c = {99, 99, 99};
    struct walk_census w = {.now = now};
    struct kg_err err = {{0}};

    if (kg_store_key_census(f->st, now, &c, &err) != KG_OK)
        fail_msg("counting keys should succeed: %s", err.msg);
    assert_int_equal(c.active, active);
    assert_int_equal(c.expired, expired);
    assert_int_equal(c.revoked, revoked);
    assert_int_equal(kg_store_key_each(f->st, census_by_walk, &w, &err), KG_OK);
    assert_int_equal(w.c.active, active);
    assert_int_equal(w.c.expired, expired);
    assert_int_equal(w.c.revoked, revoked);
}

static void
test_the_census_counts_keys_by_state_at_now_as_state_of_does(void **state)
{
    struct fixture *f = *state;

    open_store(f);
    assert_census(f, NOW, 0, 0, 0);
    insert_key_at(f, "key_active", 0, 0);
    insert_key_at(f, "key_expiring", NOW + 100, 0);
    insert_key_at(f, "key_revoking", 0, NOW + 50);
    /* Expired first, revoked later: revoked wins once both are due. */
    insert_key_at(f, "key_exp_then_rev", NOW + 100, NOW + 200);
    /* Revoked first, expiring later: never counted as expired. */
    insert_key_at(f, "key_rev_then_exp", NOW + 300, NOW + 100);
    /* Each boundary is inclusive: a time equal to now is due. */
    assert_census(f, NOW + 49, 5, 0, 0);
    assert_census(f, NOW + 50, 4, 0, 1);
    assert_census(f, NOW + 99, 4, 0, 1);
    assert_census(f, NOW + 100, 1, 2, 2);
    assert_census(f, NOW + 199, 1, 2, 2);
    assert_census(f, NOW + 200, 1, 1, 3);
    assert_census(f, NOW + 1000000, 1, 1, 3);
}

static void
test_the_unknown_key_lookup_answers_again_and_again(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    unsigned char other[KG_DIGEST_BYTES] = {0};
    bool known;
    int i;

    open_store(f);
    insert_key_at(f, "key_known", 0, NOW + 100);
    get_key(f, "key_known", &rec);
    /* The statement is kept between calls: each answer is its own. */
    for (i = 0; i < 3; i++) {
        known = false;
        assert_int_equal(kg_store_key_known(f->st, rec.digest, NOW, &known, &err), KG_OK);
        assert_true(known);
        assert_int_equal(kg_store_key_known(f->st, other, NOW, &known, &err), KG_OK);
        assert_false(known);
        assert_int_equal(kg_store_key_known(f->st, rec.digest, NOW + 100, &known, &err), KG_OK);
        assert_false(known);
    }
}

static void
test_key_states_parse_back_from_their_names(void **state)
{
    static const enum kg_key_state states[] = {KG_KEY_ACTIVE, KG_KEY_EXPIRED, KG_KEY_REVOKED};
    enum kg_key_state parsed = KG_KEY_ACTIVE;
    struct kg_err err = {{0}};
    bool all = true;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        assert_int_equal(kg_key_state_parse(kg_key_state_str(states[i]), &parsed, &all, &err),
                         KG_OK);
        assert_int_equal(parsed, states[i]);
        assert_false(all);
    }
    assert_int_equal(kg_key_state_parse("all", &parsed, &all, &err), KG_OK);
    assert_true(all);
    assert_int_equal(kg_key_state_parse("Active", &parsed, &all, &err), KG_EINVAL);
    assert_int_equal(kg_key_state_parse("", &parsed, &all, &err), KG_EINVAL);
    assert_non_null(strstr(err.msg, "unknown key state"));
}

static void
test_rotating_without_grace_revokes_the_old_key_now(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec fresh;
    struct kg_key_rec old;
    struct kg_key_rec got;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_old", NOW);
    make_rec(&fresh, "key_new", "kg_live_FreshKey0123456789abcdefghijk", NOW + 50);
    assert_int_equal(kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 50, NOW + 50, NULL, &err),
                     KG_OK);
    get_key(f, "key_old", &old);
    assert_int_equal(old.revoked_at, NOW + 50);
    assert_string_equal(old.rotated_to, "key_new");
    assert_int_equal(kg_key_state_of(&old, NOW + 50), KG_KEY_REVOKED);
    get_key(f, "key_new", &got);
    assert_string_equal(got.user_id, old.user_id); /* same tenant, same default owner */
    memcpy(fresh.user_id, got.user_id, sizeof(fresh.user_id));
    assert_memory_equal(&got, &fresh, sizeof(fresh));
    assert_int_equal(kg_key_state_of(&got, NOW + 50), KG_KEY_ACTIVE);
}

static void
test_rotating_with_grace_schedules_the_old_key_revocation(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec fresh;
    struct kg_key_rec old;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_old", NOW);
    make_rec(&fresh, "key_new", "kg_live_FreshKey0123456789abcdefghijk", NOW + 50);
    assert_int_equal(
        kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 50 + 3600, NOW + 50, NULL, &err),
        KG_OK);
    get_key(f, "key_old", &old);
    assert_int_equal(old.revoked_at, NOW + 50 + 3600);
    assert_string_equal(old.rotated_to, "key_new");
    assert_int_equal(kg_key_state_of(&old, NOW + 60), KG_KEY_ACTIVE);
    assert_int_equal(kg_key_state_of(&old, NOW + 50 + 3600), KG_KEY_REVOKED);
}

static void
test_rotating_twice_is_a_conflict(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec fresh;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_old", NOW);
    make_rec(&fresh, "key_new", "kg_live_FreshKey0123456789abcdefghijk", NOW);
    assert_int_equal(kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 3600, NOW, NULL, &err),
                     KG_OK);
    make_rec(&fresh, "key_newer", "kg_live_Fresher0123456789abcdefghijkl", NOW + 1);
    assert_int_equal(kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 3600, NOW + 1, NULL, &err),
                     KG_ECONFLICT);
    assert_string_equal(err.msg, "key key_old was already rotated to key_new");
    assert_int_equal(kg_store_key_get(f->st, "key_newer", &fresh, &err), KG_ENOTFOUND);
}

static void
test_rotating_a_revoked_key_is_a_conflict(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec fresh;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_old", NOW);
    assert_int_equal(kg_store_key_revoke(f->st, "key_old", NOW, &err), KG_OK);
    make_rec(&fresh, "key_new", "kg_live_FreshKey0123456789abcdefghijk", NOW + 1);
    assert_int_equal(kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 1, NOW + 1, NULL, &err),
                     KG_ECONFLICT);
    assert_string_equal(err.msg, "key key_old is already revoked");
    assert_int_equal(kg_store_key_get(f->st, "key_new", &fresh, &err), KG_ENOTFOUND);
}

static void
test_rotating_an_unknown_key_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec fresh;
    struct kg_err err = {{0}};

    open_store(f);
    make_rec(&fresh, "key_new", "kg_live_FreshKey0123456789abcdefghijk", NOW);
    assert_int_equal(kg_store_key_rotate(f->st, "key_ghost", &fresh, NOW, NOW, NULL, &err),
                     KG_ENOTFOUND);
    assert_int_equal(kg_store_key_get(f->st, "key_new", &fresh, &err), KG_ENOTFOUND);
}

static void
test_rotating_keeps_an_earlier_scheduled_revocation(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    open_store(f);
    make_rec(&rec, "key_old", "kg_live_Scheduled0123456789abcdefghij", NOW);
    rec.revoked_at = NOW + 600;
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_OK);
    make_rec(&rec, "key_new", "kg_live_FreshKey0123456789abcdefghijk", NOW);
    assert_int_equal(kg_store_key_rotate(f->st, "key_old", &rec, NOW + 86400, NOW, NULL, &err),
                     KG_OK);
    get_key(f, "key_old", &rec);
    assert_int_equal(rec.revoked_at, NOW + 600);
    assert_string_equal(rec.rotated_to, "key_new");
}

static void
test_a_failed_rotation_writes_nothing(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec fresh;
    struct kg_key_rec old;
    struct kg_err err = {{0}};
    char key[96];

    open_store(f);
    insert_key(f, "key_old", NOW);
    insert_key(f, "key_other", NOW);
    /* The fresh key's digest clashes with key_other's: the insert half fails
     * after the old key has been checked, and nothing may stay behind. */
    fake_key(key, sizeof(key), "key_other");
    make_rec(&fresh, "key_new", key, NOW + 1);
    assert_int_equal(kg_store_key_rotate(f->st, "key_old", &fresh, NOW + 1, NOW + 1, NULL, &err),
                     KG_ECONFLICT);
    get_key(f, "key_old", &old);
    assert_int_equal(old.revoked_at, 0);
    assert_string_equal(old.rotated_to, "");
    assert_int_equal(kg_store_key_get(f->st, "key_new", &fresh, &err), KG_ENOTFOUND);
    /* And the handle is still usable: no transaction was left open. */
    assert_int_equal(kg_store_key_revoke(f->st, "key_old", NOW + 2, &err), KG_OK);
}

static void
test_touch_keeps_the_latest_time(void **state)
{
    struct fixture *f = *state;
    const char *ids[] = {"key_t", "key_unknown", "key_t", "key_u"};
    const int64_t times[] = {NOW + 100, NOW + 500, NOW + 50, 0};
    const char *later_ids[] = {"key_t"};
    const int64_t later[] = {NOW + 200};
    struct kg_key_rec rec;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_t", NOW);
    insert_key(f, "key_u", NOW);
    assert_int_equal(kg_store_key_touch(f->st, ids, times, 4, &err), KG_OK);
    get_key(f, "key_t", &rec);
    assert_int_equal(rec.last_used_at, NOW + 100);
    get_key(f, "key_u", &rec);
    assert_int_equal(rec.last_used_at, 0);
    assert_int_equal(kg_store_key_touch(f->st, ids, times, 1, &err), KG_OK);
    assert_int_equal(kg_store_key_touch(f->st, later_ids, later, 1, &err), KG_OK);
    get_key(f, "key_t", &rec);
    assert_int_equal(rec.last_used_at, NOW + 200);
    assert_int_equal(kg_store_key_touch(f->st, ids, times, 1, &err), KG_OK);
    get_key(f, "key_t", &rec);
    assert_int_equal(rec.last_used_at, NOW + 200);
    assert_int_equal(kg_store_key_touch(f->st, NULL, NULL, 0, &err), KG_OK);
}

static void
test_data_version_changes_after_another_handle_writes_but_not_after_its_own(void **state)
{
    struct fixture *f = *state;
    struct kg_store *other = NULL;
    struct kg_err err = {{0}};
    int64_t v0 = 0;
    int64_t v1 = 0;
    int64_t v2 = 0;
    struct kg_key_rec rec;
    char key[96];

    open_store(f);
    assert_int_equal(kg_store_open(f->path, &other, &err), KG_OK);
    assert_int_equal(kg_store_data_version(f->st, &v0, &err), KG_OK);
    insert_key(f, "key_mine", NOW);
    assert_int_equal(kg_store_data_version(f->st, &v1, &err), KG_OK);
    assert_int_equal(v1, v0);

    fake_key(key, sizeof(key), "key_theirs");
    make_rec(&rec, "key_theirs", key, NOW);
    assert_int_equal(kg_store_key_insert(other, &rec, &err), KG_OK);
    assert_int_equal(kg_store_data_version(f->st, &v2, &err), KG_OK);
    assert_int_not_equal(v2, v1);
    kg_store_close(other);
}

static void
test_durability_can_be_switched_both_ways(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    open_store(f);
    assert_int_equal(kg_store_set_durable(f->st, false, &err), KG_OK);
    insert_key(f, "key_fast", NOW);
    assert_int_equal(kg_store_set_durable(f->st, true, &err), KG_OK);
    insert_key(f, "key_safe", NOW);
}

static void
test_opening_below_a_missing_grandparent_is_an_io_error(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    char path[160];

    /* Only one missing level is created; deeper trees are the operator's. */
    snprintf(path, sizeof(path), "%s/no/such/keys.db", f->dir);
    assert_int_equal(kg_store_open(path, &f->st, &err), KG_EIO);
    assert_null(f->st);
    assert_non_null(strstr(err.msg, "cannot create directory"));
}

static void
test_a_file_that_is_not_a_database_is_corrupt(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    char dir[128];
    char junk[4096];
    FILE *fp;

    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    fp = fopen(f->path, "wb");
    assert_non_null(fp);
    memset(junk, 'k', sizeof(junk));
    assert_int_equal(fwrite(junk, 1, sizeof(junk), fp), sizeof(junk));
    fclose(fp);
    assert_int_equal(kg_store_open(f->path, &f->st, &err), KG_ECORRUPT);
    assert_null(f->st);
    assert_non_null(strstr(err.msg, f->path));
    assert_non_null(strstr(err.msg, "not a database"));
}

static void
test_a_database_from_a_newer_keygate_is_corrupt(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    char sql[64];
    char want[64];

    open_store(f);
    kg_store_close(f->st);
    f->st = NULL;
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %zu", kg_migrations_count + 6);
    raw_exec(f->path, sql);
    assert_int_equal(kg_store_open(f->path, &f->st, &err), KG_ECORRUPT);
    assert_null(f->st);
    snprintf(want, sizeof(want), "schema version %zu is newer than this keygate (%zu)",
             kg_migrations_count + 6, kg_migrations_count);
    assert_non_null(strstr(err.msg, want));
    assert_non_null(strstr(err.msg, f->path));
}

static void
test_another_programs_sqlite_database_is_corrupt_and_left_alone(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    char dir[128];

    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    raw_exec(f->path, "CREATE TABLE songs (title TEXT)");
    assert_int_equal(kg_store_open(f->path, &f->st, &err), KG_ECORRUPT);
    assert_non_null(strstr(err.msg, "not a keygate database"));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'keys'"), 0);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 0);
}

/* Searches the main file and any WAL or journal left next to it. */
static bool
store_files_contain(const char *path, const void *needle, size_t len)
{
    static const char *const suffixes[] = {"", "-wal", "-journal", "-shm"};
    bool found = false;
    size_t i;

    for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]) && !found; i++) {
        char name[160];
        unsigned char *buf;
        struct stat sb;
        FILE *fp;

        snprintf(name, sizeof(name), "%s%s", path, suffixes[i]);
        if (stat(name, &sb) != 0)
            continue;
        buf = malloc((size_t)sb.st_size + 1);
        assert_non_null(buf);
        fp = fopen(name, "rb");
        assert_non_null(fp);
        assert_int_equal(fread(buf, 1, (size_t)sb.st_size, fp), (size_t)sb.st_size);
        fclose(fp);
        found = memmem(buf, (size_t)sb.st_size, needle, len) != NULL;
        free(buf);
    }
    return found;
}

static void
test_the_database_files_never_contain_the_plaintext_key(void **state)
{
    struct fixture *f = *state;
    const char *key = "kg_live_7Tq2XbN9vLmR4sWc8KpYd3Hf6JzGa";
    const char *fresh_key = "kg_live_Fz3Wq8LmR2vNc7TbY9KpXd4Hs6JgA";
    const char *ids[] = {"key_secret"};
    const int64_t times[] = {NOW + 10};
    struct kg_key_rec rec;
    struct kg_key_rec fresh;
    struct kg_err err = {{0}};

    open_store(f);
    make_rec(&rec, "key_secret", key, NOW);
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_OK);
    make_rec(&fresh, "key_fresh", fresh_key, NOW + 1);
    assert_int_equal(
        kg_store_key_rotate(f->st, "key_secret", &fresh, NOW + 60, NOW + 1, NULL, &err), KG_OK);
    assert_int_equal(kg_store_key_touch(f->st, ids, times, 1, &err), KG_OK);

    /* While open, the writes sit in the WAL; after close, in the main file. */
    assert_false(store_files_contain(f->path, key, strlen(key)));
    assert_false(store_files_contain(f->path, fresh_key, strlen(fresh_key)));
    kg_store_close(f->st);
    f->st = NULL;
    assert_false(store_files_contain(f->path, key, strlen(key)));
    assert_false(store_files_contain(f->path, fresh_key, strlen(fresh_key)));
    /* Nor the secret part between the display prefix and the last four. */
    assert_false(store_files_contain(f->path, key + 8, strlen(key) - 12));
    /* The search itself works: the digest is there. */
    assert_true(store_files_contain(f->path, rec.digest, sizeof(rec.digest)));
}

/* ---- issue 4: owners, listings and the issue-2 migration ---- */

static void
test_an_issue_2_database_migrates_its_keys_to_default_users(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec a, b;
    struct kg_user_rec ua, ub;
    struct kg_tenant_rec t;
    char dir[128];
    sqlite3 *db = NULL;

    /* A database as issue 2 left it: migration 001 only, keys by raw SQL. */
    snprintf(dir, sizeof(dir), "%s/data", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(
        sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, kg_migrations[0].sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "PRAGMA application_id = 1262977364; PRAGMA user_version = 1;"
                                  "INSERT INTO keys (id, name, digest, scopes, tenant, created_at)"
                                  " VALUES ('key_old_a', 'a', randomblob(32), 'read:a', 'default',"
                                  " 1700000000),"
                                  " ('key_old_b', 'b', randomblob(32), '', 'acme', 1700000100),"
                                  " ('key_old_c', 'c', randomblob(32), '', 'acme', 1700000200);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    open_store(f);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), (int64_t)kg_migrations_count);
    get_key(f, "key_old_a", &a);
    get_key(f, "key_old_b", &b);
    assert_int_equal(kg_store_user_get(f->st, a.user_id, &ua, NULL), KG_OK);
    assert_int_equal(kg_store_user_get(f->st, b.user_id, &ub, NULL), KG_OK);
    assert_string_equal(ua.tenant, "default");
    assert_string_equal(ua.username, "default");
    assert_string_equal(ua.role, "*");
    assert_true(ua.platform_admin); /* the operator's own keys keep full power */
    assert_string_equal(ub.tenant, "acme");
    assert_string_equal(ub.username, "default");
    assert_false(ub.platform_admin);
    assert_int_equal(strncmp(ub.id, "usr_", 4), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(DISTINCT user_id) FROM keys"), 2);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM keys WHERE user_id IS NULL"), 0);
    assert_int_equal(kg_store_tenant_get(f->st, "acme", &t, NULL), KG_OK);
    assert_int_equal(t.created_at, 1700000100); /* its oldest key */
    assert_int_equal(kg_store_tenant_get(f->st, "default", &t, NULL), KG_OK);
    /* The migrated data is live: the key cache walk sees enabled owners. */
    assert_string_equal(a.scopes, "read:a");
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 0);
}

static void
test_a_key_with_an_owner_takes_the_owners_tenant(void **state)
{
    struct fixture *f = *state;
    struct kg_tenant_rec t = {.name = "globex", .created_at = NOW};
    struct kg_user_rec u = {.id = "usr_eve",
                            .tenant = "globex",
                            .username = "eve",
                            .role = "*",
                            .tier = "default",
                            .created_at = NOW};
    struct kg_key_rec rec, got;
    struct kg_err err = {{0}};

    open_store(f);
    assert_int_equal(kg_store_tenant_insert(f->st, &t, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_OK);
    make_rec(&rec, "key_owned", "kg_live_Owned0123456789abcdefghijklmn", NOW);
    snprintf(rec.user_id, sizeof(rec.user_id), "usr_eve");
    snprintf(rec.tenant, sizeof(rec.tenant), "ignored");
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_OK);
    get_key(f, "key_owned", &got);
    assert_string_equal(got.tenant, "globex");
    assert_string_equal(got.user_id, "usr_eve");

    make_rec(&rec, "key_orphan", "kg_live_Orphan0123456789abcdefghijklm", NOW);
    snprintf(rec.user_id, sizeof(rec.user_id), "usr_ghost");
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_ENOTFOUND);
    assert_int_equal(kg_store_key_get(f->st, "key_orphan", &got, NULL), KG_ENOTFOUND);
}

struct owner_seen {
    char ids[8][KG_ID_MAX];
    char roles[8][KG_SCOPES_MAX];
    bool disabled[8];
    bool admin[8];
    int n;
};

static bool
owner_cb(const struct kg_key_rec *rec, const struct kg_key_owner *owner, void *ctx)
{
    struct owner_seen *s = ctx;
    /* The walk promises no order: key_a and key_b have their own slots. */
    int i = strcmp(rec->id, "key_a") == 0 ? 0 : strcmp(rec->id, "key_b") == 0 ? 1 : s->n;

    assert_true(s->n < 8 && i < 8);
    snprintf(s->ids[i], KG_ID_MAX, "%s", rec->id);
    snprintf(s->roles[i], KG_SCOPES_MAX, "%s", owner->role);
    s->disabled[i] = owner->disabled;
    s->admin[i] = owner->platform_admin;
    s->n++;
    return true;
}

static void
test_each_owner_reports_roles_and_disabled_users_and_tenants(void **state)
{
    struct fixture *f = *state;
    struct kg_tenant_rec t = {.name = "globex", .created_at = NOW};
    struct kg_user_rec u = {.id = "usr_eve",
                            .tenant = "globex",
                            .username = "eve",
                            .role = "read:*",
                            .tier = "gold",
                            .created_at = NOW};
    struct kg_key_rec rec;
    struct owner_seen s = {.n = 0};

    open_store(f);
    insert_key(f, "key_a", NOW); /* default user of default: role "*", platform admin */
    assert_int_equal(kg_store_tenant_insert(f->st, &t, NULL, NULL), KG_OK);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, NULL), KG_OK);
    make_rec(&rec, "key_b", "kg_live_KeyB0123456789abcdefghijklmnop", NOW + 1);
    snprintf(rec.user_id, sizeof(rec.user_id), "usr_eve");
    assert_int_equal(kg_store_key_insert(f->st, &rec, NULL), KG_OK);

    assert_int_equal(kg_store_key_each_owner(f->st, owner_cb, &s, NULL), KG_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.roles[0], "*");
    assert_true(s.admin[0]);
    assert_string_equal(s.roles[1], "read:*");
    assert_false(s.disabled[1]);

    u.disabled_at = NOW + 2;
    assert_int_equal(kg_store_user_update(f->st, &u, NULL, NULL), KG_OK);
    s.n = 0;
    assert_int_equal(kg_store_key_each_owner(f->st, owner_cb, &s, NULL), KG_OK);
    assert_true(s.disabled[1]);
    assert_false(s.disabled[0]);

    u.disabled_at = 0;
    t.disabled_at = NOW + 3;
    assert_int_equal(kg_store_user_update(f->st, &u, NULL, NULL), KG_OK);
    assert_int_equal(kg_store_tenant_update(f->st, &t, NULL, NULL), KG_OK);
    s.n = 0;
    assert_int_equal(kg_store_key_each_owner(f->st, owner_cb, &s, NULL), KG_OK);
    assert_true(s.disabled[1]);

    /* A key whose owner row vanished (hand-edited database) fails closed. */
    raw_exec(f->path, "UPDATE keys SET user_id = NULL WHERE id = 'key_a'");
    s.n = 0;
    assert_int_equal(kg_store_key_each_owner(f->st, owner_cb, &s, NULL), KG_OK);
    assert_true(s.disabled[0]);
    assert_string_equal(s.roles[0], "");
}

struct id_seen {
    char ids[16][KG_ID_MAX];
    int n;
};

static bool
id_cb(const struct kg_key_rec *rec, void *ctx)
{
    struct id_seen *s = ctx;

    assert_true(s->n < 16);
    snprintf(s->ids[s->n++], KG_ID_MAX, "%s", rec->id);
    return true;
}

static int
list_count(struct fixture *f, const struct kg_key_query *q)
{
    struct id_seen s = {.n = 0};

    assert_int_equal(kg_store_key_list(f->st, q, id_cb, &s, NULL, NULL), KG_OK);
    return s.n;
}

static void
test_key_list_filters_by_state_tenant_user_and_name(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec rec;
    struct kg_key_query q = {.all_states = true, .now = NOW + 100};

    open_store(f);
    insert_key(f, "key_active", NOW);
    insert_key(f, "key_revoked", NOW + 1);
    insert_key(f, "key_graced", NOW + 2);
    make_rec(&rec, "key_expired", "kg_live_Expired0123456789abcdefghijkl", NOW + 3);
    rec.expires_at = NOW + 50;
    assert_int_equal(kg_store_key_insert(f->st, &rec, NULL), KG_OK);
    make_rec(&rec, "key_acme", "kg_live_Acme0123456789abcdefghijklmnop", NOW + 4);
    snprintf(rec.tenant, sizeof(rec.tenant), "acme");
    snprintf(rec.name, sizeof(rec.name), "special");
    assert_int_equal(kg_store_key_insert(f->st, &rec, NULL), KG_OK);
    assert_int_equal(kg_store_key_revoke(f->st, "key_revoked", NOW + 10, NULL), KG_OK);
    raw_exec(f->path, "UPDATE keys SET revoked_at = 1800001000 WHERE id = 'key_graced'");

    assert_int_equal(list_count(f, &q), 5);
    q.all_states = false;
    q.state = KG_KEY_ACTIVE;
    assert_int_equal(list_count(f, &q), 3); /* active, graced (until later), acme */
    q.state = KG_KEY_REVOKED;
    assert_int_equal(list_count(f, &q), 1);
    q.state = KG_KEY_EXPIRED;
    assert_int_equal(list_count(f, &q), 1);
    q.all_states = true;
    q.tenant = "acme";
    assert_int_equal(list_count(f, &q), 1);
    get_key(f, "key_acme", &rec);
    q.tenant = NULL;
    q.user_id = rec.user_id;
    assert_int_equal(list_count(f, &q), 1);
    q.user_id = NULL;
    q.name = "special";
    assert_int_equal(list_count(f, &q), 1);
    q.name = "nothing";
    assert_int_equal(list_count(f, &q), 0);
}

static void
test_key_pages_end_with_an_empty_cursor_and_never_repeat(void **state)
{
    struct fixture *f = *state;
    char cursor[KG_CURSOR_MAX] = "";
    struct id_seen all = {.n = 0};
    char id[16];

    open_store(f);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "key_p%d", i);
        insert_key(f, id, NOW + i / 3);
    }
    do {
        struct kg_key_query q = {
            .all_states = true, .now = NOW, .page = {.cursor = cursor, .limit = 2}};
        char next[KG_CURSOR_MAX];
        struct id_seen s = {.n = 0};

        assert_int_equal(kg_store_key_list(f->st, &q, id_cb, &s, next, NULL), KG_OK);
        for (int i = 0; i < s.n; i++)
            memcpy(all.ids[all.n++], s.ids[i], KG_ID_MAX);
        memcpy(cursor, next, sizeof(cursor));
    } while (cursor[0] != '\0');
    assert_int_equal(all.n, 5);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "key_p%d", i);
        assert_string_equal(all.ids[i], id);
    }
}

static void
test_key_update_writes_only_the_changeable_fields(void **state)
{
    struct fixture *f = *state;
    struct kg_key_rec before, rec, after;
    struct kg_err err = {{0}};

    open_store(f);
    insert_key(f, "key_upd", NOW);
    get_key(f, "key_upd", &before);
    rec = before;
    snprintf(rec.name, sizeof(rec.name), "renamed");
    snprintf(rec.scopes, sizeof(rec.scopes), "read:a");
    rec.expires_at = NOW + 99;
    snprintf(rec.rate, sizeof(rec.rate), "5/s");
    rec.rate_burst = 7;
    /* Not changeable here: they must stay as stored. */
    rec.revoked_at = NOW + 1;
    rec.last_used_at = NOW + 2;
    memset(rec.digest, 0x11, sizeof(rec.digest));
    assert_int_equal(kg_store_key_update(f->st, &rec, NULL, &err), KG_OK);
    get_key(f, "key_upd", &after);
    assert_string_equal(after.name, "renamed");
    assert_string_equal(after.scopes, "read:a");
    assert_int_equal(after.expires_at, NOW + 99);
    assert_string_equal(after.rate, "5/s");
    assert_int_equal(after.rate_burst, 7);
    assert_int_equal(after.revoked_at, 0);
    assert_int_equal(after.last_used_at, 0);
    assert_memory_equal(after.digest, before.digest, KG_DIGEST_BYTES);
    snprintf(rec.id, sizeof(rec.id), "key_none");
    assert_int_equal(kg_store_key_update(f->st, &rec, NULL, &err), KG_ENOTFOUND);
}

/* Another process inserts one key and exits, closing its connection. */
static void
insert_from_another_process(struct fixture *f, const char *id)
{
    pid_t pid = fork();
    int status = -1;

    assert_true(pid >= 0);
    if (pid == 0) {
        struct kg_store *st = NULL;
        struct kg_key_rec rec;
        char key[96];
        int ok;

        fake_key(key, sizeof(key), id);
        make_rec(&rec, id, key, NOW);
        ok = kg_store_open(f->path, &st, NULL) == KG_OK &&
             kg_store_key_insert(st, &rec, NULL) == KG_OK;
        kg_store_close(st);
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Whether some process holds SQLite's shared lock on the database file, as
 * another process sees it: F_GETLK for a write lock over the shared range
 * (PENDING_BYTE 0x40000000 + 2, 510 bytes) reports the conflicting lock. */
static bool
shared_lock_seen_from_another_process(const char *path)
{
    pid_t pid = fork();
    int status = -1;

    assert_true(pid >= 0);
    if (pid == 0) {
        struct flock fl = {
            .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0x40000000 + 2, .l_len = 510};
        int fd = open(path, O_RDWR);

        if (fd < 0 || fcntl(fd, F_GETLK, &fl) != 0)
            _exit(2);
        _exit(fl.l_type == F_UNLCK ? 1 : 0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 2);
    return WEXITSTATUS(status) == 0;
}

static void
test_a_second_handle_in_the_process_keeps_the_first_ones_lock(void **state)
{
    struct fixture *f = *state;
    struct kg_store *second = NULL;
    int64_t v0 = 0, v1 = 0;

    open_store(f);
    insert_key(f, "key_first", NOW);
    /* In WAL mode a handle holds a shared lock on the file for as long as
     * it is open; that is what keeps another process that closes its last
     * connection from deleting the WAL under this one's feet. */
    assert_true(shared_lock_seen_from_another_process(f->path));
    /* The daemon opens one handle per thread. Opening one must not close a
     * descriptor of the file, which would drop every lock of the process. */
    assert_int_equal(kg_store_open(f->path, &second, NULL), KG_OK);
    assert_true(shared_lock_seen_from_another_process(f->path));
    kg_store_close(second);
    assert_true(shared_lock_seen_from_another_process(f->path));
    /* And the first handle still sees commits from elsewhere. */
    assert_int_equal(kg_store_data_version(f->st, &v0, NULL), KG_OK);
    insert_from_another_process(f, "key_child");
    assert_int_equal(kg_store_data_version(f->st, &v1, NULL), KG_OK);
    assert_true(v1 != v0);
}

/* ---- PostgreSQL only ---- */

static void
test_pg_opening_migrates_once_and_records_the_version(void **state)
{
    struct fixture *f = *state;

    open_store(f);
    kg_store_close(f->st);
    f->st = NULL;
    open_store(f);
    assert_int_equal(raw_int(f->path, "SELECT max(version) FROM keygate_schema"),
                     (int64_t)kg_pg_migrations_count);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM keygate_schema"),
                     (int64_t)kg_pg_migrations_count);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM tenants"), 2);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM users WHERE platform_admin"), 1);
}

static void
test_pg_a_database_from_a_newer_keygate_is_corrupt(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    char sql[160];

    open_store(f);
    kg_store_close(f->st);
    f->st = NULL;
    snprintf(sql, sizeof(sql), "INSERT INTO keygate_schema VALUES (%zu, '999_future.sql', 1)",
             kg_pg_migrations_count + 1);
    raw_exec(f->path, sql);
    assert_int_equal(kg_store_open(f->path, &f->st, &err), KG_ECORRUPT);
    assert_null(f->st);
    assert_non_null(strstr(err.msg, "newer than this keygate"));
}

static void
test_pg_another_programs_database_is_corrupt_and_left_alone(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    raw_exec(f->path, "CREATE TABLE songs (title text)");
    assert_int_equal(kg_store_open(f->path, &f->st, &err), KG_ECORRUPT);
    assert_non_null(strstr(err.msg, "not a keygate database"));
    assert_int_equal(raw_int(f->path, "SELECT to_regclass('keys') IS NULL"), 1);
}

static void
test_pg_data_version_moves_with_any_handles_changes_but_not_with_usage(void **state)
{
    struct fixture *f = *state;
    struct kg_store *other = NULL;
    struct kg_err err = {{0}};
    struct kg_key_usage d = {.requests = 3, .last_used_at = NOW};
    const char *ids[] = {"key_mine"};
    int64_t v0 = 0, v1 = 0, v2 = 0, v3 = 0;
    struct kg_key_rec rec;
    char key[96];

    open_store(f);
    assert_int_equal(kg_store_open(f->path, &other, &err), KG_OK);
    assert_int_equal(kg_store_data_version(f->st, &v0, &err), KG_OK);
    insert_key(f, "key_mine", NOW);
    assert_int_equal(kg_store_data_version(f->st, &v1, &err), KG_OK);
    assert_true(v1 > v0);
    fake_key(key, sizeof(key), "key_theirs");
    make_rec(&rec, "key_theirs", key, NOW);
    assert_int_equal(kg_store_key_insert(other, &rec, &err), KG_OK);
    assert_int_equal(kg_store_data_version(f->st, &v2, &err), KG_OK);
    assert_true(v2 > v1);
    /* A usage flush is not a change the caches reload for. */
    assert_int_equal(kg_store_key_usage_add(other, ids, &d, 1, NOW, &err), KG_OK);
    assert_int_equal(kg_store_data_version(f->st, &v3, &err), KG_OK);
    assert_int_equal(v3, v2);
    kg_store_close(other);
}

struct chain_writer {
    const char *url;
    int who;
    int n;
    enum kg_status rc;
    char msg[KG_ERR_MAX];
};

static const unsigned char test_audit_key[KG_AUDIT_KEY_BYTES] = "keygate unit test audit key 32b";

static void *
chain_writer_run(void *arg)
{
    struct chain_writer *w = arg;
    struct kg_store *st = NULL;
    struct kg_err err = {{0}};

    w->rc = kg_store_open(w->url, &st, &err);
    if (w->rc == KG_OK)
        kg_store_set_audit_key(st, test_audit_key);
    for (int i = 0; w->rc == KG_OK && i < w->n; i++) {
        struct kg_key_rec rec;
        struct kg_audit_entry e;
        char id[32], key[96];

        snprintf(id, sizeof(id), "key_w%d_%d", w->who, i);
        fake_key(key, sizeof(key), id);
        make_rec(&rec, id, key, NOW + i);
        memset(&e, 0, sizeof(e));
        e.time = NOW + i;
        snprintf(e.actor, sizeof(e.actor), "writer%d", w->who);
        snprintf(e.action, sizeof(e.action), "key.create");
        snprintf(e.object, sizeof(e.object), "%s", id);
        snprintf(e.details, sizeof(e.details), "{}");
        w->rc = kg_store_key_insert_audited(st, &rec, &e, &err);
    }
    snprintf(w->msg, sizeof(w->msg), "%s", err.msg);
    kg_store_close(st);
    return NULL;
}

struct chain_check {
    int64_t seq;
    char hash[KG_AUDIT_HASH_HEX];
    bool broken;
};

static bool
chain_check_one(const struct kg_audit_entry *e, void *ctx)
{
    struct chain_check *c = ctx;
    char want[KG_AUDIT_HASH_HEX];

    kg_store_audit_hash(test_audit_key, e, e->prev_hash, want);
    if (e->seq != c->seq + 1 || strcmp(e->prev_hash, c->hash) != 0 || strcmp(want, e->hash) != 0)
        c->broken = true;
    c->seq = e->seq;
    snprintf(c->hash, sizeof(c->hash), "%s", e->hash);
    return true;
}

/* Four handles (as four instances) append audited changes at once: the
 * head read FOR UPDATE makes them take turns, so the chain is one line of
 * consecutive entries, each over the hash before it. */
static void
test_pg_concurrent_writers_never_fork_the_audit_chain(void **state)
{
    struct fixture *f = *state;
    struct chain_writer w[4];
    pthread_t t[4];
    struct chain_check c = {.seq = 0};
    struct kg_err err = {{0}};
    char head[KG_AUDIT_HASH_HEX];
    int64_t seq = 0;

    open_store(f);
    memset(c.hash, '0', KG_AUDIT_HASH_HEX - 1);
    c.hash[KG_AUDIT_HASH_HEX - 1] = '\0';
    for (int i = 0; i < 4; i++) {
        w[i] = (struct chain_writer){.url = f->path, .who = i, .n = 25};
        assert_int_equal(pthread_create(&t[i], NULL, chain_writer_run, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        if (w[i].rc != KG_OK)
            fail_msg("writer %d should succeed: %s", i, w[i].msg);
    }
    assert_int_equal(kg_store_audit_each(f->st, chain_check_one, &c, &err), KG_OK);
    assert_false(c.broken);
    assert_int_equal(c.seq, 100);
    assert_int_equal(kg_store_audit_head(f->st, &seq, head, &err), KG_OK);
    assert_int_equal(seq, 100);
    assert_string_equal(head, c.hash);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM keys"), 100);
}

/* The flush reads back the stored credit totals in its own transaction
 * (issue 15): what another writer (instance) added shows in them, a key
 * asked for with nothing to add is read, not written, and a later refill
 * period starts again from the delta. */
static void
test_a_flush_returns_the_stored_credit_totals_of_every_writer(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    const char *ids[] = {"key_a", "key_b"};
    struct kg_key_usage d[2] = {{.requests = 3, .credits = 3}, {.requests = 1}};
    struct kg_usage_total t[2] = {{.want = true}, {.want = true}};

    open_store(f);
    insert_key(f, "key_a", NOW);
    insert_key(f, "key_b", NOW);
    assert_int_equal(kg_store_usage_add_totals(f->st, ids, d, 2, NULL, NULL, 0, NOW, t, NULL, &err),
                     KG_OK);
    assert_true(t[0].known);
    assert_int_equal(t[0].credits, 3);
    assert_true(t[1].known);
    assert_int_equal(t[1].credits, 0);
    /* Another instance's flush, as it lands in the store. */
    raw_exec(f->path, "UPDATE keys SET quota_used = quota_used + 40 WHERE id = 'key_a'"
                      " RETURNING 1");
    raw_exec(f->path, "UPDATE keys SET quota_used = quota_used + 7 WHERE id = 'key_b'"
                      " RETURNING 1");
    d[0].credits = 2;
    t[0].want = false; /* a delta always brings its total */
    t[1].want = true;
    assert_int_equal(kg_store_usage_add_totals(f->st, ids, d, 2, NULL, NULL, 0, NOW, t, NULL, &err),
                     KG_OK);
    assert_true(t[0].known);
    assert_int_equal(t[0].credits, 45);
    assert_true(t[1].known);
    assert_int_equal(t[1].credits, 7);
    /* Not asked and nothing to add: not known. */
    t[1].want = false;
    assert_int_equal(kg_store_usage_add_totals(f->st, ids, d, 2, NULL, NULL, 0, NOW, t, NULL, &err),
                     KG_OK);
    assert_int_equal(t[0].credits, 47);
    assert_false(t[1].known);
    /* A later refill period: the count starts again from the delta. */
    d[0].credits = 1;
    d[0].credits_period_start = NOW + 86400;
    assert_int_equal(kg_store_usage_add_totals(f->st, ids, d, 2, NULL, NULL, 0, NOW, t, NULL, &err),
                     KG_OK);
    assert_int_equal(t[0].credits, 1);
    assert_int_equal(t[0].credits_period_start, NOW + 86400);
    assert_int_equal(raw_int(f->path, "SELECT quota_used FROM keys WHERE id = 'key_a'"), 1);
}

/* A user's totals come back with its flush too: its own credits and its
 * tier quota, every writer's charges in them. */
static void
test_a_flush_returns_the_stored_user_totals(void **state)
{
    struct fixture *f = *state;
    struct kg_tenant_rec tn = {.name = "globex", .created_at = NOW};
    struct kg_user_rec u = {.id = "usr_eve",
                            .tenant = "globex",
                            .username = "eve",
                            .role = "*",
                            .tier = "default",
                            .created_at = NOW};
    struct kg_err err = {{0}};
    const char *uids[] = {"usr_eve"};
    struct kg_user_usage ud = {
        .credits = 4, .credits_period_start = 0, .tier = 4, .tier_period_start = NOW};
    struct kg_usage_total t = {0};

    open_store(f);
    assert_int_equal(kg_store_tenant_insert(f->st, &tn, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_OK);
    assert_int_equal(
        kg_store_usage_add_totals(f->st, NULL, NULL, 0, uids, &ud, 1, NOW, NULL, &t, &err), KG_OK);
    assert_true(t.known);
    assert_int_equal(t.credits, 4);
    assert_int_equal(t.tier, 4);
    raw_exec(f->path, "UPDATE user_usage SET credits_used = credits_used + 10,"
                      " tier_used = tier_used + 20 WHERE user_id = 'usr_eve' RETURNING 1");
    ud.credits = 1;
    ud.tier = 1;
    assert_int_equal(
        kg_store_usage_add_totals(f->st, NULL, NULL, 0, uids, &ud, 1, NOW, NULL, &t, &err), KG_OK);
    assert_true(t.known);
    assert_int_equal(t.credits, 15);
    assert_int_equal(t.tier, 25);
    assert_int_equal(t.tier_period_start, NOW);
}

/* ---- credits_mode strict: reservations (issue 15) ---- */

/* Inserts id with limit credits (period "" or "day"). */
static void
insert_limited_key(struct fixture *f, const char *id, int64_t limit, const char *period)
{
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char key[96];

    fake_key(key, sizeof(key), id);
    make_rec(&rec, id, key, NOW);
    rec.quota_limit = limit;
    snprintf(rec.quota_period, sizeof(rec.quota_period), "%s", period);
    if (kg_store_key_insert(f->st, &rec, &err) != KG_OK)
        fail_msg("inserting %s should succeed: %s", id, err.msg);
}

/* The handle acts as instance name from here on (as another process's
 * handle would: each draws its own id). */
static void
act_as(struct fixture *f, const char *name)
{
    snprintf(f->st->instance, sizeof(f->st->instance), "%s", name);
}

static int64_t
reserve(struct fixture *f, const char *id, int64_t want, int64_t start, int64_t now)
{
    struct kg_err err = {{0}};
    int64_t got = -1;

    if (kg_store_credit_reserve(f->st, id, want, start, now, 30, &got, &err) != KG_OK)
        fail_msg("reserving %s should succeed: %s", id, err.msg);
    return got;
}

/* Blocks handed to several instances never add up past the limit, with
 * what is used; a flush moves its charges from the instance's block to
 * the used count (same sum), and a block handed back is free again. */
static void
test_reservations_never_pass_the_limit(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    const char *ids[] = {"key_r"};
    struct kg_key_usage d = {.requests = 3, .credits = 3};
    int64_t got;

    open_store(f);
    insert_limited_key(f, "key_r", 10, "");
    act_as(f, "inst_a");
    assert_int_equal(reserve(f, "key_r", 4, 0, NOW), 4);
    act_as(f, "inst_b");
    assert_int_equal(reserve(f, "key_r", 4, 0, NOW), 4);
    act_as(f, "inst_c");
    assert_int_equal(reserve(f, "key_r", 4, 0, NOW), 2);
    act_as(f, "inst_a");
    assert_int_equal(reserve(f, "key_r", 4, 0, NOW), 0);
    /* A spends 3 of its 4: used 3, A holds 1, B 4, C 2: still 10. */
    assert_int_equal(kg_store_key_usage_add(f->st, ids, &d, 1, NOW, &err), KG_OK);
    assert_int_equal(raw_int(f->path, "SELECT quota_used FROM keys WHERE id = 'key_r'"), 3);
    assert_int_equal(raw_int(f->path, "SELECT spent FROM credit_reservations"
                                      " WHERE instance = 'inst_a'"),
                     3);
    act_as(f, "inst_d");
    assert_int_equal(reserve(f, "key_r", 4, 0, NOW), 0);
    /* B hands its 4 back (shutdown): D gets them. */
    act_as(f, "inst_b");
    assert_int_equal(kg_store_credit_release(f->st, NULL, &err), KG_OK);
    act_as(f, "inst_d");
    assert_int_equal(reserve(f, "key_r", 10, 0, NOW), 4);
    /* No limit: nothing to reserve; no key: not found. */
    insert_key(f, "key_free", NOW);
    assert_int_equal(reserve(f, "key_free", 4, 0, NOW), 0);
    assert_int_equal(kg_store_credit_reserve(f->st, "key_nope", 4, 0, NOW, 30, &got, &err),
                     KG_ENOTFOUND);
    /* Reservations change no key: no change log row, no reload. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM change_log WHERE id = 'key_r'"), 1);
}

/* An instance that dies with a block: its lease runs out and the next
 * reservation of the key hands its credits to another; a renewed lease
 * keeps them. */
static void
test_a_dead_instances_reservation_lapses(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    open_store(f);
    insert_limited_key(f, "key_r", 10, "");
    act_as(f, "inst_a");
    assert_int_equal(reserve(f, "key_r", 10, 0, NOW), 10); /* lease to NOW + 30 */
    act_as(f, "inst_b");
    assert_int_equal(reserve(f, "key_r", 5, 0, NOW + 10), 0);
    act_as(f, "inst_a");
    assert_int_equal(kg_store_credit_renew(f->st, NOW + 20, 30, &err), KG_OK); /* to NOW + 50 */
    act_as(f, "inst_b");
    assert_int_equal(reserve(f, "key_r", 5, 0, NOW + 40), 0);
    /* A is gone: nothing renews it. */
    assert_int_equal(reserve(f, "key_r", 5, 0, NOW + 51), 5);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM credit_reservations"
                                      " WHERE instance = 'inst_a'"),
                     0);
}

/* A new refill period: the blocks of the last one are dropped, and the
 * whole limit is there again. */
static void
test_a_new_period_drops_the_blocks_of_the_last(void **state)
{
    struct fixture *f = *state;
    int64_t day = NOW - NOW % 86400;

    open_store(f);
    insert_limited_key(f, "key_r", 10, "day");
    act_as(f, "inst_a");
    assert_int_equal(reserve(f, "key_r", 8, day, NOW), 8);
    act_as(f, "inst_b");
    assert_int_equal(reserve(f, "key_r", 8, day, NOW), 2);
    assert_int_equal(reserve(f, "key_r", 8, day + 86400, NOW + 86400), 8);
    act_as(f, "inst_a");
    assert_int_equal(reserve(f, "key_r", 8, day + 86400, NOW + 86400), 2);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM credit_reservations"
                                      " WHERE period_start < (SELECT max(period_start)"
                                      " FROM credit_reservations)"),
                     0);
}

/* The flush's COMMIT succeeds but its answer is lost: the caller, told it
 * failed, sends the same deltas again with newer ones; the store settles
 * the first by its token and counts each request once. */
static void
test_pg_a_flush_whose_commit_answer_was_lost_counts_once(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    struct kg_key_usage got;
    struct kg_key_usage d = {.requests = 3, .denied_rate = 1, .last_used_at = NOW, .credits = 3};
    struct kg_usage_total tot = {0};
    const char *ids[] = {"key_a"};

    open_store(f);
    insert_key(f, "key_a", NOW);
    kg_pg_from(f->st)->test_lose_commit = true;
    assert_int_equal(kg_store_key_usage_add(f->st, ids, &d, 1, NOW, &err), KG_EIO);
    /* It did commit. */
    assert_int_equal(raw_int(f->path, "SELECT requests FROM key_usage WHERE key_id = 'key_a'"), 3);
    d.requests = 5; /* the 3 again and 2 newer */
    d.denied_rate = 1;
    d.credits = 5;
    assert_int_equal(
        kg_store_usage_add_totals(f->st, ids, &d, 1, NULL, NULL, 0, NOW + 1, &tot, NULL, &err),
        KG_OK);
    assert_int_equal(kg_store_key_usage_get(f->st, "key_a", &got, &err), KG_OK);
    assert_int_equal(got.requests, 5);
    assert_int_equal(got.denied_rate, 1);
    /* The total read back counts the settled flush once too. */
    assert_true(tot.known);
    assert_int_equal(tot.credits, 5);
    d.credits = 0;
    /* Settled: the next flush adds in full again. */
    d.requests = 4;
    d.denied_rate = 0;
    assert_int_equal(kg_store_key_usage_add(f->st, ids, &d, 1, NOW + 2, &err), KG_OK);
    assert_int_equal(kg_store_key_usage_get(f->st, "key_a", &got, &err), KG_OK);
    assert_int_equal(got.requests, 9);
}

/* The server goes away and comes back: the handle reports the outage as
 * an I/O error and then works again without being reopened. */
static void
test_pg_a_handle_survives_a_server_restart(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    struct kg_key_rec rec;
    char key[96];

    open_store(f);
    insert_key(f, "key_before", NOW);
    assert_int_equal(kt_pg_stop(pg, "immediate"), 0);
    fake_key(key, sizeof(key), "key_during");
    make_rec(&rec, "key_during", key, NOW);
    assert_int_equal(kg_store_key_insert(f->st, &rec, &err), KG_EIO);
    assert_non_null(strstr(err.msg, "PostgreSQL unavailable"));
    assert_int_equal(kg_store_key_get(f->st, "key_before", &rec, &err), KG_EIO);
    assert_int_equal(kt_pg_restart(pg), 0);
    get_key(f, "key_before", &rec);
    insert_key(f, "key_after", NOW);
    get_key(f, "key_after", &rec);
}

/* The daemon's write probe (store/storefault.h) fails while the server is
 * down and passes once it is back, as SQLite's does for a full disk: the
 * backend had none, so every probe passed through an outage. */
static void
test_pg_the_write_probe_fails_while_the_server_is_down(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    open_store(f);
    assert_int_equal(kg_store_write_probe(f->st, &err), KG_OK);
    assert_int_equal(kt_pg_stop(pg, "immediate"), 0);
    assert_int_equal(kg_store_write_probe(f->st, &err), KG_EIO);
    assert_non_null(strstr(err.msg, "write probe: PostgreSQL unavailable"));
    assert_int_equal(kt_pg_restart(pg), 0);
    assert_int_equal(kg_store_write_probe(f->st, &err), KG_OK);
}

/* SHOW synchronous_commit on the store's own connection equals want. */
static void
assert_sync_commit(struct fixture *f, const char *want)
{
    struct kg_err err = {{0}};
    PGresult *res = NULL;

    assert_int_equal(
        kg_pg_query(kg_pg_from(f->st), "SHOW synchronous_commit", NULL, &res, "show", &err), KG_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), want);
    PQclear(res);
}

/* synchronous_commit off is a session setting: the usage writer's handle
 * keeps it across a reconnect (a new session would be back to on, and
 * every flush would wait for the WAL flush again). */
static void
test_pg_synchronous_commit_off_survives_a_reconnect(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};

    open_store(f);
    assert_int_equal(kg_store_set_durable(f->st, false, &err), KG_OK);
    assert_sync_commit(f, "off");
    assert_int_equal(kt_pg_stop(pg, "immediate"), 0);
    assert_int_equal(kt_pg_restart(pg), 0);
    assert_sync_commit(f, "off");
    assert_int_equal(kg_store_set_durable(f->st, true, &err), KG_OK);
    assert_sync_commit(f, "on");
}

/* The first fingerprint offered is kept; a later, different one is not
 * recorded (the caller compares and refuses), and reading changes nothing. */
static void
test_the_secret_fingerprint_is_recorded_once_and_kept(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    char fp1[65], fp2[65], stored[65];

    memset(fp1, 'a', 64);
    fp1[64] = '\0';
    memset(fp2, 'b', 64);
    fp2[64] = '\0';
    open_store(f);
    assert_int_equal(kg_store_fingerprint(f->st, NULL, stored, &err), KG_OK);
    assert_string_equal(stored, "");
    assert_int_equal(kg_store_fingerprint(f->st, fp1, stored, &err), KG_OK);
    assert_string_equal(stored, fp1);
    assert_int_equal(kg_store_fingerprint(f->st, fp2, stored, &err), KG_OK);
    assert_string_equal(stored, fp1);
    kg_store_close(f->st);
    f->st = NULL;
    open_store(f);
    assert_int_equal(kg_store_fingerprint(f->st, NULL, stored, &err), KG_OK);
    assert_string_equal(stored, fp1);
    assert_int_equal(kg_store_fingerprint(f->st, "short", stored, &err), KG_EINVAL);
}

/* LISTEN/NOTIFY: a change committed by another handle wakes a waiting one
 * (the first wait only starts listening and wakes at once, so the caller
 * polls for what it may have missed); a usage flush wakes nobody. */
static void
test_pg_a_change_by_another_handle_wakes_a_waiting_one(void **state)
{
    struct fixture *f = *state;
    struct kg_store *other = NULL;
    struct kg_err err = {{0}};
    struct kg_key_usage d = {.requests = 1};
    const char *ids[] = {"key_one"};
    bool woke = false;

    open_store(f);
    assert_int_equal(kg_store_open(f->path, &other, &err), KG_OK);
    assert_int_equal(kg_store_wait_change(f->st, 0, &woke, &err), KG_OK);
    assert_true(woke);
    assert_int_equal(kg_store_wait_change(f->st, 50, &woke, &err), KG_OK);
    assert_false(woke);
    {
        struct kg_key_rec rec;
        char key[96];

        fake_key(key, sizeof(key), "key_one");
        make_rec(&rec, "key_one", key, NOW);
        assert_int_equal(kg_store_key_insert(other, &rec, &err), KG_OK);
    }
    assert_int_equal(kg_store_wait_change(f->st, 5000, &woke, &err), KG_OK);
    assert_true(woke);
    assert_int_equal(kg_store_key_usage_add(other, ids, &d, 1, NOW, &err), KG_OK);
    assert_int_equal(kg_store_wait_change(f->st, 100, &woke, &err), KG_OK);
    assert_false(woke);
    kg_store_close(other);
}

/* SQLite has no notifications: the caller polls. */
static void
test_sqlite_sends_no_change_notifications(void **state)
{
    struct fixture *f = *state;
    struct kg_err err = {{0}};
    bool woke = true;

    open_store(f);
    assert_int_equal(kg_store_wait_change(f->st, 0, &woke, &err), KG_EINVAL);
    assert_false(woke);
}

static bool
grab_first_key(const struct kg_key_rec *rec, void *ctx)
{
    *(struct kg_key_rec *)ctx = *rec;
    return false;
}

static bool
grab_owned_key(const struct kg_key_rec *rec, const struct kg_key_owner *owner, void *ctx)
{
    (void)owner;
    *(struct kg_key_rec *)ctx = *rec;
    return false;
}

/* Issue 18's key columns survive every key function of both backends:
 * insert, get, list, the cache's owner walk, update (allowed_ips changes,
 * canary is fixed at creation), and a clear back to "from anywhere". */
static void
test_canary_and_allowed_ips_round_trip(void **state)
{
    struct fixture *f = *state;
    struct kg_key_query q = {.all_states = true, .now = NOW};
    struct kg_key_rec in, out;
    struct kg_err err = {{0}};

    open_store(f);
    make_rec(&in, "key_canary", "kg_live_Canary0123456789abcdefghijWXYZ", NOW);
    in.canary = true;
    snprintf(in.allowed_ips, sizeof(in.allowed_ips), "192.0.2.0/24,2001:db8::/48");
    if (kg_store_key_insert(f->st, &in, &err) != KG_OK)
        fail_msg("%s", err.msg);
    get_key(f, "key_canary", &out);
    assert_true(out.canary);
    assert_string_equal(out.allowed_ips, "192.0.2.0/24,2001:db8::/48");
    memset(&out, 0, sizeof(out));
    assert_int_equal(kg_store_key_list(f->st, &q, grab_first_key, &out, NULL, &err), KG_OK);
    assert_true(out.canary);
    assert_string_equal(out.allowed_ips, "192.0.2.0/24,2001:db8::/48");
    memset(&out, 0, sizeof(out));
    assert_int_equal(kg_store_key_each_owner(f->st, grab_owned_key, &out, &err), KG_OK);
    assert_string_equal(out.id, "key_canary");
    assert_true(out.canary);
    assert_string_equal(out.allowed_ips, "192.0.2.0/24,2001:db8::/48");

    get_key(f, "key_canary", &in);
    snprintf(in.allowed_ips, sizeof(in.allowed_ips), "10.1.0.0/16");
    in.canary = false;
    if (kg_store_key_update(f->st, &in, NULL, &err) != KG_OK)
        fail_msg("%s", err.msg);
    get_key(f, "key_canary", &out);
    assert_string_equal(out.allowed_ips, "10.1.0.0/16");
    assert_true(out.canary);
    in.allowed_ips[0] = '\0';
    assert_int_equal(kg_store_key_update(f->st, &in, NULL, &err), KG_OK);
    get_key(f, "key_canary", &out);
    assert_string_equal(out.allowed_ips, "");

    /* A plain key reads back as neither. */
    insert_key(f, "key_plain", NOW + 1);
    get_key(f, "key_plain", &out);
    assert_false(out.canary);
    assert_string_equal(out.allowed_ips, "");
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    /* Through the interface only: both backends. */
    const struct CMUnitTest common[] = {
        T(test_an_unknown_url_scheme_is_unsupported_and_its_password_not_echoed),
        T(test_an_unreachable_postgres_server_is_an_io_error_without_the_password),
        T(test_insert_then_get_round_trips_every_field),
        T(test_unset_fields_are_stored_as_null_and_read_back_as_zero),
        T(test_empty_tenant_and_metadata_get_the_column_defaults),
        T(test_inserting_a_duplicate_id_is_a_conflict),
        T(test_inserting_a_duplicate_digest_is_a_conflict_without_showing_it),
        T(test_getting_an_unknown_key_is_not_found),
        T(test_invalid_records_are_rejected_before_storage),
        T(test_each_walks_keys_oldest_first_then_by_id),
        T(test_each_stops_when_the_callback_says_so),
        T(test_each_on_an_empty_store_calls_nothing),
        T(test_revoking_twice_is_a_conflict),
        T(test_revoking_an_unknown_key_is_not_found),
        T(test_revoking_a_key_in_rotation_grace_revokes_it_now),
        T(test_a_key_expires_by_time),
        T(test_revocation_wins_over_expiry),
        T(test_the_census_counts_keys_by_state_at_now_as_state_of_does),
        T(test_the_unknown_key_lookup_answers_again_and_again),
        T(test_a_revocation_scheduled_in_the_future_leaves_the_key_active),
        T(test_key_states_parse_back_from_their_names),
        T(test_rotating_without_grace_revokes_the_old_key_now),
        T(test_rotating_with_grace_schedules_the_old_key_revocation),
        T(test_rotating_twice_is_a_conflict),
        T(test_rotating_a_revoked_key_is_a_conflict),
        T(test_rotating_an_unknown_key_is_not_found),
        T(test_rotating_keeps_an_earlier_scheduled_revocation),
        T(test_a_failed_rotation_writes_nothing),
        T(test_touch_keeps_the_latest_time),
        T(test_durability_can_be_switched_both_ways),
        T(test_a_key_with_an_owner_takes_the_owners_tenant),
        T(test_each_owner_reports_roles_and_disabled_users_and_tenants),
        T(test_key_list_filters_by_state_tenant_user_and_name),
        T(test_key_pages_end_with_an_empty_cursor_and_never_repeat),
        T(test_key_update_writes_only_the_changeable_fields),
        T(test_the_secret_fingerprint_is_recorded_once_and_kept),
        T(test_canary_and_allowed_ips_round_trip),
        T(test_a_flush_returns_the_stored_credit_totals_of_every_writer),
        T(test_a_flush_returns_the_stored_user_totals),
        T(test_reservations_never_pass_the_limit),
        T(test_a_dead_instances_reservation_lapses),
        T(test_a_new_period_drops_the_blocks_of_the_last),
    };
    /* Files, pragmas and SQLite's own locking. */
    const struct CMUnitTest sqlite_only[] = {
        T(test_opening_creates_a_private_directory_and_file_and_migrates),
        T(test_reopening_an_existing_store_is_idempotent),
        T(test_a_sqlite_prefix_selects_the_sqlite_backend),
        T(test_data_version_changes_after_another_handle_writes_but_not_after_its_own),
        T(test_opening_below_a_missing_grandparent_is_an_io_error),
        T(test_a_file_that_is_not_a_database_is_corrupt),
        T(test_a_database_from_a_newer_keygate_is_corrupt),
        T(test_another_programs_sqlite_database_is_corrupt_and_left_alone),
        T(test_the_database_files_never_contain_the_plaintext_key),
        T(test_an_issue_2_database_migrates_its_keys_to_default_users),
        T(test_a_second_handle_in_the_process_keeps_the_first_ones_lock),
        T(test_sqlite_sends_no_change_notifications),
    };
    const struct CMUnitTest pg_only[] = {
        T(test_pg_opening_migrates_once_and_records_the_version),
        T(test_pg_a_database_from_a_newer_keygate_is_corrupt),
        T(test_pg_another_programs_database_is_corrupt_and_left_alone),
        T(test_pg_data_version_moves_with_any_handles_changes_but_not_with_usage),
        T(test_pg_concurrent_writers_never_fork_the_audit_chain),
        T(test_pg_a_flush_whose_commit_answer_was_lost_counts_once),
        T(test_pg_a_handle_survives_a_server_restart),
        T(test_pg_the_write_probe_fails_while_the_server_is_down),
        T(test_pg_synchronous_commit_off_survives_a_reconnect),
        T(test_pg_a_change_by_another_handle_wakes_a_waiting_one),
    };
#undef T
    const char *backend = getenv("KEYGATE_TEST_DATABASE");
    int failed;

    if (backend != NULL && strcmp(backend, "postgres") == 0) {
        int rc = kt_pg_start(&pg);

        if (rc != 0)
            return rc == KT_PG_SKIP ? KT_PG_SKIP : 1;
        failed = cmocka_run_group_tests_name("store on PostgreSQL", common, group_setup, NULL);
        failed +=
            cmocka_run_group_tests_name("store on PostgreSQL only", pg_only, group_setup, NULL);
        kt_pg_free(pg);
        return failed;
    }
    failed = cmocka_run_group_tests_name("store on SQLite", common, group_setup, NULL);
    failed += cmocka_run_group_tests_name("store on SQLite only", sqlite_only, group_setup, NULL);
    return failed;
}
