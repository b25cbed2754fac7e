/* tests/unit/store/test_sqlite_accounts.c - tenants and users in the store
 * (src/store/sqlite_accounts.c through include/keygate/store.h), against a
 * real SQLite file in a fresh temporary directory per test; with
 * KEYGATE_TEST_DATABASE=postgres (ctest: ..._postgres) the same tests run
 * against src/store/pg_accounts.c, a fresh database per test on a private
 * PostgreSQL server (tests/helpers/pgserver.c). The rules about
 * what a valid account is live in manage/ and are tested there; here it is
 * storage: round trips, uniqueness, atomicity, pages and audit entries
 * written in the same transaction as the change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "helpers/pgserver.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW INT64_C(1800000000)

struct fixture {
    char dir[64];
    char path[128];
    struct kg_store *st;
};

/* Set when the tests run against PostgreSQL, with the running test's
 * database. */
static struct kt_pg *pg;
static char pg_db[32];
static int pg_dbs;

static const unsigned char audit_key[KG_AUDIT_KEY_BYTES] = "keygate unit test audit key 32b";

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct kg_err err = {{0}};

    if (f == NULL || sodium_init() < 0)
        return -1;
    if (kg_fx_mkdtemp(f->dir, "accounts") != 0)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/keys.db", f->dir);
    if (pg != NULL) {
        snprintf(pg_db, sizeof(pg_db), "accounts_%d", ++pg_dbs);
        if (kt_pg_createdb(pg, pg_db, f->path, sizeof(f->path)) != 0)
            return -1;
    }
    if (kg_store_open(f->path, &f->st, &err) != KG_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    kg_store_set_audit_key(f->st, audit_key);
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

static struct kg_tenant_rec
tenant(const char *name, int64_t created_at)
{
    struct kg_tenant_rec t;

    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", name);
    t.created_at = created_at;
    return t;
}

static struct kg_user_rec
user(const char *id, const char *ten, const char *username, const char *email)
{
    struct kg_user_rec u;

    memset(&u, 0, sizeof(u));
    snprintf(u.id, sizeof(u.id), "%s", id);
    snprintf(u.tenant, sizeof(u.tenant), "%s", ten);
    snprintf(u.username, sizeof(u.username), "%s", username);
    if (email != NULL)
        snprintf(u.email, sizeof(u.email), "%s", email);
    snprintf(u.role, sizeof(u.role), "*");
    snprintf(u.tier, sizeof(u.tier), "default");
    u.created_at = NOW;
    return u;
}

static struct kg_audit_entry
entry(const char *action, const char *object)
{
    struct kg_audit_entry e;

    memset(&e, 0, sizeof(e));
    e.time = NOW;
    snprintf(e.actor, sizeof(e.actor), "cli:tester");
    snprintf(e.action, sizeof(e.action), "%s", action);
    snprintf(e.object, sizeof(e.object), "%s", object);
    snprintf(e.details, sizeof(e.details), "{}");
    return e;
}

static void
add_tenant(struct fixture *f, const char *name, int64_t created_at)
{
    struct kg_tenant_rec t = tenant(name, created_at);
    struct kg_err err = {{0}};

    if (kg_store_tenant_insert(f->st, &t, NULL, &err) != KG_OK)
        fail_msg("tenant %s should be inserted: %s", name, err.msg);
}

static void
test_a_tenant_round_trips_and_a_duplicate_is_a_conflict(void **state)
{
    struct fixture *f = *state;
    struct kg_tenant_rec t = tenant("acme", NOW), got;
    struct kg_err err = {{0}};

    snprintf(t.display_name, sizeof(t.display_name), "Acme Inc");
    assert_int_equal(kg_store_tenant_insert(f->st, &t, NULL, &err), KG_OK);
    assert_int_equal(kg_store_tenant_get(f->st, "acme", &got, &err), KG_OK);
    assert_memory_equal(&got, &t, sizeof(t));
    assert_int_equal(kg_store_tenant_insert(f->st, &t, NULL, &err), KG_ECONFLICT);
    assert_string_equal(err.msg, "tenant acme already exists");
    assert_int_equal(kg_store_tenant_get(f->st, "nope", &got, &err), KG_ENOTFOUND);
}

static void
test_a_tenant_update_writes_display_name_and_disabled_at(void **state)
{
    struct fixture *f = *state;
    struct kg_tenant_rec t = tenant("acme", NOW), got;

    add_tenant(f, "acme", NOW);
    snprintf(t.display_name, sizeof(t.display_name), "Acme");
    t.disabled_at = NOW + 5;
    t.created_at = NOW + 999; /* not changeable */
    assert_int_equal(kg_store_tenant_update(f->st, &t, NULL, NULL), KG_OK);
    assert_int_equal(kg_store_tenant_get(f->st, "acme", &got, NULL), KG_OK);
    assert_string_equal(got.display_name, "Acme");
    assert_int_equal(got.disabled_at, NOW + 5);
    assert_int_equal(got.created_at, NOW);
    t = tenant("ghost", NOW);
    assert_int_equal(kg_store_tenant_update(f->st, &t, NULL, NULL), KG_ENOTFOUND);
}

struct names {
    char v[16][KG_NAME_MAX];
    int n;
};

static bool
tenant_cb(const struct kg_tenant_rec *t, void *ctx)
{
    struct names *s = ctx;

    assert_true(s->n < 16);
    snprintf(s->v[s->n++], KG_NAME_MAX, "%s", t->name);
    return true;
}

static bool
user_cb(const struct kg_user_rec *u, void *ctx)
{
    struct names *s = ctx;

    assert_true(s->n < 16);
    snprintf(s->v[s->n++], KG_NAME_MAX, "%s", u->id);
    return true;
}

static void
test_tenant_pages_walk_oldest_first_even_for_old_odd_names(void **state)
{
    struct fixture *f = *state;
    char cursor[KG_CURSOR_MAX] = "";
    struct names all = {.n = 0};
    sqlite3 *db = NULL;

    /* "default" and "signup" come from the migrations, made now: after these. */
    add_tenant(f, "b", 100);
    add_tenant(f, "a", 100);
    /* Issue 2 allowed any tenant on a key; such a name reaches the table
     * through the migration, so the cursor must carry it safely. */
    if (pg != NULL) {
        assert_int_equal(kt_pg_int(pg, pg_db,
                                   "INSERT INTO tenants (name, created_at) VALUES"
                                   " ('Old Co/\xc3\xa9', 100), ('c', 200),"
                                   " (repeat('~ ', 64), 300)"),
                         3);
    } else {
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db,
                                      "INSERT INTO tenants (name, created_at) VALUES"
                                      " ('Old Co/\xc3\xa9', 100), ('c', 200),"
                                      " (replace(hex(zeroblob(64)), '00', '~ '), 300)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
    }
    do {
        struct kg_page page = {.cursor = cursor, .limit = 1};
        char next[KG_CURSOR_MAX];

        assert_int_equal(kg_store_tenant_list(f->st, NULL, &page, tenant_cb, &all, next, NULL),
                         KG_OK);
        for (const char *p = next; *p != '\0'; p++)
            assert_non_null(strchr("0123456789abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-~",
                                   *p));
        memcpy(cursor, next, sizeof(cursor));
    } while (cursor[0] != '\0');
    assert_int_equal(all.n, 7);
    assert_string_equal(all.v[0], "Old Co/\xc3\xa9"); /* byte order: 'O' < 'a' */
    assert_string_equal(all.v[1], "a");
    assert_string_equal(all.v[2], "b");
    assert_string_equal(all.v[3], "c");
    assert_int_equal(strlen(all.v[4]), 128); /* the longest name fits a cursor too */
    assert_string_equal(all.v[5], "default");
    assert_string_equal(all.v[6], "signup"); /* both from the migrations, made in the same second */

    all.n = 0;
    assert_int_equal(kg_store_tenant_list(f->st, "b", NULL, tenant_cb, &all, NULL, NULL), KG_OK);
    assert_int_equal(all.n, 1);
}

static void
test_a_user_round_trips_every_field(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u = user("usr_bob", "acme", "bob", "bob@example.com"), got;
    struct kg_err err = {{0}};

    add_tenant(f, "acme", NOW);
    snprintf(u.first_name, sizeof(u.first_name), "Bob");
    snprintf(u.last_name, sizeof(u.last_name), "Builder");
    snprintf(u.password_hash, sizeof(u.password_hash), "$argon2id$v=19$m=65536,t=2,p=1$xx$yy");
    snprintf(u.role, sizeof(u.role), "read:*,write:items");
    memset(u.tier, 0, sizeof(u.tier)); /* so the whole-struct compare holds */
    snprintf(u.tier, sizeof(u.tier), "gold");
    u.platform_admin = true;
    u.has_quota = true;
    u.quota_limit = 250;
    snprintf(u.quota_period, sizeof(u.quota_period), "month");
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_get(f->st, "usr_bob", &got, &err), KG_OK);
    assert_memory_equal(&got, &u, sizeof(u));
    assert_int_equal(kg_store_user_find(f->st, "acme", "bob", &got, &err), KG_OK);
    assert_string_equal(got.id, "usr_bob");
    assert_int_equal(kg_store_user_by_email(f->st, "bob@example.com", &got, &err), KG_OK);
    assert_string_equal(got.id, "usr_bob");
    assert_int_equal(kg_store_user_find(f->st, "default", "bob", &got, &err), KG_ENOTFOUND);
    assert_int_equal(kg_store_user_by_email(f->st, "eve@example.com", &got, &err), KG_ENOTFOUND);
    assert_null(strstr(err.msg, "eve@example.com"));
    assert_int_equal(kg_store_user_get(f->st, "usr_none", &got, &err), KG_ENOTFOUND);
}

static void
test_usernames_are_unique_per_tenant_and_emails_everywhere(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u = user("usr_1", "acme", "bob", "bob@example.com");
    struct kg_err err = {{0}};

    add_tenant(f, "acme", NOW);
    add_tenant(f, "globex", NOW);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_OK);
    u = user("usr_2", "acme", "bob", NULL);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_ECONFLICT);
    assert_string_equal(err.msg, "user bob already exists in tenant acme");
    u = user("usr_2", "globex", "bob", NULL); /* another tenant: fine */
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_OK);
    u = user("usr_3", "globex", "robert", "bob@example.com");
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_ECONFLICT);
    assert_string_equal(err.msg, "email is already in use");
    u = user("usr_1", "globex", "other", NULL);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_ECONFLICT);
    u = user("usr_4", "nowhere", "x", NULL);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_ENOTFOUND);
    assert_string_equal(err.msg, "no tenant nowhere");
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM users WHERE tenant <> 'default'"), 2);
}

static void
test_a_user_update_keeps_id_tenant_and_creation_and_checks_uniqueness(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec a = user("usr_a", "acme", "alice", "alice@example.com");
    struct kg_user_rec b = user("usr_b", "acme", "bob", "bob@example.com");
    struct kg_user_rec got;
    struct kg_err err = {{0}};

    add_tenant(f, "acme", NOW);
    assert_int_equal(kg_store_user_insert(f->st, &a, NULL, NULL, NULL), KG_OK);
    assert_int_equal(kg_store_user_insert(f->st, &b, NULL, NULL, NULL), KG_OK);
    b.email[0] = '\0';
    snprintf(b.role, sizeof(b.role), "read:*");
    snprintf(b.tenant, sizeof(b.tenant), "elsewhere");
    b.created_at = 1;
    b.disabled_at = NOW + 9;
    assert_int_equal(kg_store_user_update(f->st, &b, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_get(f->st, "usr_b", &got, NULL), KG_OK);
    assert_string_equal(got.email, "");
    assert_string_equal(got.role, "read:*");
    assert_string_equal(got.tenant, "acme");
    assert_int_equal(got.created_at, NOW);
    assert_int_equal(got.disabled_at, NOW + 9);
    /* Updating to an address or username someone else holds conflicts; keeping one's own does not.
     */
    snprintf(b.email, sizeof(b.email), "alice@example.com");
    assert_int_equal(kg_store_user_update(f->st, &b, NULL, &err), KG_ECONFLICT);
    snprintf(b.email, sizeof(b.email), "bob@example.com");
    snprintf(b.username, sizeof(b.username), "alice");
    assert_int_equal(kg_store_user_update(f->st, &b, NULL, &err), KG_ECONFLICT);
    assert_int_equal(kg_store_user_update(f->st, &a, NULL, &err), KG_OK);
    b = user("usr_ghost", "acme", "ghost", NULL);
    assert_int_equal(kg_store_user_update(f->st, &b, NULL, &err), KG_ENOTFOUND);
}

static void
test_a_user_and_its_first_key_are_stored_together_or_not_at_all(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u = user("usr_new", "acme", "new", NULL);
    struct kg_key_rec key, clash, got;
    struct kg_err err = {{0}};

    add_tenant(f, "acme", NOW);
    memset(&key, 0, sizeof(key));
    snprintf(key.id, sizeof(key.id), "key_first");
    snprintf(key.name, sizeof(key.name), "first");
    memset(key.digest, 0x42, sizeof(key.digest));
    key.created_at = NOW;
    key.quota_limit = -1;
    assert_int_equal(kg_store_user_insert(f->st, &u, &key, NULL, &err), KG_OK);
    assert_int_equal(kg_store_key_get(f->st, "key_first", &got, NULL), KG_OK);
    assert_string_equal(got.user_id, "usr_new");
    assert_string_equal(got.tenant, "acme");

    /* The second user's key clashes with the first key's digest: neither is kept. */
    u = user("usr_other", "acme", "other", NULL);
    clash = key;
    snprintf(clash.id, sizeof(clash.id), "key_second");
    assert_int_equal(kg_store_user_insert(f->st, &u, &clash, NULL, &err), KG_ECONFLICT);
    assert_int_equal(kg_store_user_get(f->st, "usr_other", &u, NULL), KG_ENOTFOUND);
}

static void
test_user_pages_filter_by_tenant(void **state)
{
    struct fixture *f = *state;
    char cursor[KG_CURSOR_MAX] = "";
    struct names all = {.n = 0};
    char id[32], name[32];

    add_tenant(f, "acme", NOW);
    for (int i = 0; i < 5; i++) {
        struct kg_user_rec u;

        snprintf(id, sizeof(id), "usr_%d", i);
        snprintf(name, sizeof(name), "u%d", i);
        u = user(id, "acme", name, NULL);
        u.created_at = NOW + i / 2;
        assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, NULL), KG_OK);
    }
    do {
        struct kg_page page = {.cursor = cursor, .limit = 2};
        char next[KG_CURSOR_MAX];

        assert_int_equal(kg_store_user_list(f->st, "acme", &page, user_cb, &all, next, NULL),
                         KG_OK);
        memcpy(cursor, next, sizeof(cursor));
    } while (cursor[0] != '\0');
    assert_int_equal(all.n, 5);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "usr_%d", i);
        assert_string_equal(all.v[i], id);
    }
    all.n = 0;
    assert_int_equal(kg_store_user_list(f->st, NULL, NULL, user_cb, &all, NULL, NULL), KG_OK);
    assert_int_equal(all.n, 6); /* and the default tenant's default user */
}

static void
test_a_change_and_its_audit_entries_commit_together(void **state)
{
    struct fixture *f = *state;
    struct kg_tenant_rec t = tenant("acme", NOW);
    struct kg_audit_entry e1 = entry("tenant.create", "acme");
    struct kg_audit_entry e2 = entry("tenant.note", "acme");
    struct kg_user_rec u = user("usr_x", "acme", "x", NULL);
    struct kg_err err = {{0}};

    e1.next = &e2;
    assert_int_equal(kg_store_tenant_insert(f->st, &t, &e1, &err), KG_OK);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 2);
    /* A change that fails leaves no entry. */
    assert_int_equal(kg_store_tenant_insert(f->st, &t, &e1, &err), KG_ECONFLICT);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 2);
    /* An entry that cannot be written stops the change. */
    snprintf(e2.object, sizeof(e2.object), "two\nlines");
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, &e1, &err), KG_EINVAL);
    assert_int_equal(kg_store_user_get(f->st, "usr_x", &u, NULL), KG_ENOTFOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM audit"), 2);
}

static void
test_an_audited_change_without_an_audit_key_is_refused(void **state)
{
    struct fixture *f = *state;
    struct kg_tenant_rec t = tenant("acme", NOW);
    struct kg_audit_entry e = entry("tenant.create", "acme");
    struct kg_store *bare = NULL;
    struct kg_err err = {{0}};

    assert_int_equal(kg_store_open(f->path, &bare, &err), KG_OK);
    assert_int_equal(kg_store_tenant_insert(bare, &t, &e, &err), KG_EINVAL);
    assert_non_null(strstr(err.msg, "audit key"));
    assert_int_equal(kg_store_tenant_insert(bare, &t, NULL, &err), KG_OK);
    kg_store_close(bare);
}

static void
test_user_credits_are_unlimited_unless_set_and_a_negative_limit_is_refused(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u = user("usr_cat", "acme", "cat", ""), got;
    struct kg_err err = {{0}};

    add_tenant(f, "acme", NOW);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_get(f->st, "usr_cat", &got, &err), KG_OK);
    assert_false(got.has_quota);
    assert_string_equal(got.quota_period, "");
    assert_int_equal(raw_int(f->path, "SELECT quota_limit IS NULL FROM users WHERE id = 'usr_cat'"),
                     1);
    got.has_quota = true;
    got.quota_limit = -1;
    assert_int_equal(kg_store_user_update(f->st, &got, NULL, &err), KG_EINVAL);
    got.quota_limit = 0; /* no credits at all is a limit too */
    assert_int_equal(kg_store_user_update(f->st, &got, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_get(f->st, "usr_cat", &got, &err), KG_OK);
    assert_true(got.has_quota);
    assert_int_equal(got.quota_limit, 0);
}

static void
test_user_usage_adds_up_in_one_batch_and_a_later_period_starts_again(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec u = user("usr_dan", "acme", "dan", "");
    const char *uids[] = {"usr_dan", "usr_nobody"};
    struct kg_user_usage d[2] = {
        {.credits = 3, .credits_period_start = 86400, .tier = 5, .tier_period_start = 0},
        {.credits = 9, .credits_period_start = 86400},
    };
    struct kg_user_usage got;
    struct kg_err err = {{0}};

    add_tenant(f, "acme", NOW);
    assert_int_equal(kg_store_user_insert(f->st, &u, NULL, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_usage_get(f->st, "usr_dan", &got, &err), KG_OK);
    assert_int_equal(got.credits + got.tier + got.updated_at, 0);
    /* The unknown user is skipped, the known one counted. */
    assert_int_equal(kg_store_usage_add(f->st, NULL, NULL, 0, uids, d, 2, NOW, &err), KG_OK);
    assert_int_equal(kg_store_usage_add(f->st, NULL, NULL, 0, uids, d, 1, NOW + 1, &err), KG_OK);
    assert_int_equal(kg_store_user_usage_get(f->st, "usr_dan", &got, &err), KG_OK);
    assert_int_equal(got.credits, 6);
    assert_int_equal(got.credits_period_start, 86400);
    assert_int_equal(got.tier, 10);
    assert_int_equal(got.updated_at, NOW + 1);
    /* The next day: credits start again from the delta, the tier count
     * (which has its own period) keeps adding up while its start is 0. */
    d[0] = (struct kg_user_usage){.credits = 2, .credits_period_start = 2 * 86400, .tier = 1};
    assert_int_equal(kg_store_usage_add(f->st, NULL, NULL, 0, uids, d, 1, NOW + 2, &err), KG_OK);
    assert_int_equal(kg_store_user_usage_get(f->st, "usr_dan", &got, &err), KG_OK);
    assert_int_equal(got.credits, 2);
    assert_int_equal(got.credits_period_start, 2 * 86400);
    assert_int_equal(got.tier, 11);
    /* A stale batch (an earlier period) adds to the current count. */
    d[0] = (struct kg_user_usage){.credits = 1, .credits_period_start = 86400};
    assert_int_equal(kg_store_usage_add(f->st, NULL, NULL, 0, uids, d, 1, NOW + 3, &err), KG_OK);
    assert_int_equal(kg_store_user_usage_get(f->st, "usr_dan", &got, &err), KG_OK);
    assert_int_equal(got.credits, 3);
    assert_int_equal(got.credits_period_start, 2 * 86400);
    d[0] = (struct kg_user_usage){.tier = -1};
    assert_int_equal(kg_store_usage_add(f->st, NULL, NULL, 0, uids, d, 1, NOW, &err), KG_EINVAL);
    assert_int_equal(kg_store_user_usage_get(f->st, "usr_nobody", &got, &err), KG_ENOTFOUND);
}

static struct kg_session_rec
session(unsigned char fill, const char *user_id, int64_t created_at)
{
    struct kg_session_rec r;

    memset(&r, 0, sizeof(r));
    memset(r.digest, fill, sizeof(r.digest));
    snprintf(r.user_id, sizeof(r.user_id), "%s", user_id);
    r.created_at = created_at;
    r.last_seen_at = created_at;
    r.expires_at = created_at + 3600;
    return r;
}

/* Console sessions (sql/009_console.sql, sql/postgres/002_console.sql): a
 * round trip, touch, delete, the sweep of expired rows on insert, and the
 * triggers that end a user's sessions when its password changes or it or
 * its tenant is disabled, in the same transaction as that change. */
static void
test_sessions_round_trip_and_end_with_a_password_change_or_a_disabled_owner(void **state)
{
    struct fixture *f = *state;
    struct kg_user_rec alice = user("usr_alice", "acme", "alice", "alice@example.com");
    struct kg_user_rec bob = user("usr_bob", "acme", "bob", NULL);
    struct kg_user_rec carol = user("usr_carol", "other", "bob", NULL);
    struct kg_session_rec a = session(0xa1, "usr_alice", NOW), got;
    struct kg_session_rec old = session(0xa0, "usr_alice", NOW - 7200);
    struct kg_session_rec b = session(0xb1, "usr_bob", NOW);
    struct kg_session_rec c = session(0xc1, "usr_carol", NOW);
    struct kg_session_rec ghost = session(0xd1, "usr_nobody", NOW);
    struct kg_tenant_rec other = tenant("other", NOW);
    struct kg_err err = {{0}};

    add_tenant(f, "acme", NOW);
    add_tenant(f, "other", NOW);
    assert_int_equal(kg_store_user_insert(f->st, &alice, NULL, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_insert(f->st, &bob, NULL, NULL, &err), KG_OK);
    assert_int_equal(kg_store_user_insert(f->st, &carol, NULL, NULL, &err), KG_OK);

    /* An expired session is swept by the next insert. */
    assert_int_equal(kg_store_session_insert(f->st, &old, &err), KG_OK);
    assert_int_equal(kg_store_session_insert(f->st, &a, &err), KG_OK);
    assert_int_equal(kg_store_session_get(f->st, old.digest, &got, &err), KG_ENOTFOUND);
    assert_int_equal(kg_store_session_insert(f->st, &a, &err), KG_ECONFLICT);
    assert_int_equal(kg_store_session_insert(f->st, &ghost, &err), KG_ENOTFOUND);
    assert_int_equal(kg_store_session_get(f->st, a.digest, &got, &err), KG_OK);
    assert_string_equal(got.user_id, "usr_alice");
    assert_int_equal(got.created_at, NOW);
    assert_int_equal(got.expires_at, NOW + 3600);
    assert_int_equal(got.last_seen_at, NOW);
    assert_memory_equal(got.digest, a.digest, KG_DIGEST_BYTES);

    /* touch only moves forward; a missing session is not an error */
    assert_int_equal(kg_store_session_touch(f->st, a.digest, NOW + 60, &err), KG_OK);
    assert_int_equal(kg_store_session_touch(f->st, a.digest, NOW + 30, &err), KG_OK);
    assert_int_equal(kg_store_session_touch(f->st, ghost.digest, NOW + 30, &err), KG_OK);
    assert_int_equal(kg_store_session_get(f->st, a.digest, &got, &err), KG_OK);
    assert_int_equal(got.last_seen_at, NOW + 60);

    /* a password change ends alice's sessions, not bob's */
    assert_int_equal(kg_store_session_insert(f->st, &b, &err), KG_OK);
    snprintf(alice.password_hash, sizeof(alice.password_hash), "$argon2id$v=19$new");
    assert_int_equal(kg_store_user_update(f->st, &alice, NULL, &err), KG_OK);
    assert_int_equal(kg_store_session_get(f->st, a.digest, &got, &err), KG_ENOTFOUND);
    assert_int_equal(kg_store_session_get(f->st, b.digest, &got, &err), KG_OK);

    /* disabling bob ends his */
    bob.disabled_at = NOW + 1;
    assert_int_equal(kg_store_user_update(f->st, &bob, NULL, &err), KG_OK);
    assert_int_equal(kg_store_session_get(f->st, b.digest, &got, &err), KG_ENOTFOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 0);

    /* disabling a tenant ends its users' sessions */
    assert_int_equal(kg_store_session_insert(f->st, &c, &err), KG_OK);
    other.disabled_at = NOW + 2;
    assert_int_equal(kg_store_tenant_update(f->st, &other, NULL, &err), KG_OK);
    assert_int_equal(kg_store_session_get(f->st, c.digest, &got, &err), KG_ENOTFOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM console_sessions"), 0);

    /* sign-out */
    a = session(0xa2, "usr_alice", NOW + 100);
    assert_int_equal(kg_store_session_insert(f->st, &a, &err), KG_OK);
    assert_int_equal(kg_store_session_delete(f->st, a.digest, &err), KG_OK);
    assert_int_equal(kg_store_session_get(f->st, a.digest, &got, &err), KG_ENOTFOUND);
    assert_int_equal(kg_store_session_delete(f->st, a.digest, &err), KG_OK);

    /* signing in by a username unique across tenants ("bob" is in two) */
    {
        struct kg_user_rec found;

        assert_int_equal(kg_store_user_by_username(f->st, "alice", &found, &err), KG_OK);
        assert_string_equal(found.id, "usr_alice");
        assert_int_equal(kg_store_user_by_username(f->st, "bob", &found, &err), KG_ENOTFOUND);
        assert_int_equal(kg_store_user_by_username(f->st, "nobody", &found, &err), KG_ENOTFOUND);
    }
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_a_tenant_round_trips_and_a_duplicate_is_a_conflict),
        T(test_a_tenant_update_writes_display_name_and_disabled_at),
        T(test_tenant_pages_walk_oldest_first_even_for_old_odd_names),
        T(test_a_user_round_trips_every_field),
        T(test_user_credits_are_unlimited_unless_set_and_a_negative_limit_is_refused),
        T(test_user_usage_adds_up_in_one_batch_and_a_later_period_starts_again),
        T(test_usernames_are_unique_per_tenant_and_emails_everywhere),
        T(test_a_user_update_keeps_id_tenant_and_creation_and_checks_uniqueness),
        T(test_a_user_and_its_first_key_are_stored_together_or_not_at_all),
        T(test_user_pages_filter_by_tenant),
        T(test_a_change_and_its_audit_entries_commit_together),
        T(test_an_audited_change_without_an_audit_key_is_refused),
        T(test_sessions_round_trip_and_end_with_a_password_change_or_a_disabled_owner),
    };
#undef T
    const char *backend = getenv("KEYGATE_TEST_DATABASE");
    int failed;

    if (backend != NULL && strcmp(backend, "postgres") == 0) {
        int rc = kt_pg_start(&pg);

        if (rc != 0)
            return rc == KT_PG_SKIP ? KT_PG_SKIP : 1;
        failed = cmocka_run_group_tests_name("accounts on PostgreSQL", tests, NULL, NULL);
        kt_pg_free(pg);
        return failed;
    }
    return cmocka_run_group_tests_name("accounts on SQLite", tests, NULL, NULL);
}
