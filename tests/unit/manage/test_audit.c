/* tests/unit/manage/test_audit.c - the audit trail (src/manage/audit.c and
 * the store's append, src/store/sqlite_audit.c): entries built without
 * secrets, listings with the tenant fence, and the hash chain, which must
 * catch an edit to any column of any row, a deleted or forged row, and a
 * different secret, and must keep verifying as entries are appended.
 * Tampering is done the way an operator would: with raw SQL through the
 * sqlite3 C API on a second connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "keygate/accounts.h"
#include "keygate/audit.h"
#include "keygate/config.h"
#include "keygate/digest.h"
#include "keygate/keyfmt.h"
#include "keygate/keys.h"
#include "keygate/store.h"
#include "unit/fixture.h"

#define NOW INT64_C(1800000000)

static const unsigned char secret_bytes[KG_SECRET_BYTES] = "audit test secret, 32 bytes long";

static int
setup(void **state)
{
    *state = kg_fx_store_new("audit", secret_bytes, "cli:auditor");
    return 0;
}

static int
teardown(void **state)
{
    kg_fx_store_free(*state);
    return 0;
}

/* ---- raw SQL, as an operator with the sqlite3 shell would do it ---- */

static sqlite3 *
raw_open(struct kg_fx_store *fx)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open_v2(fx->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void
raw_exec(struct kg_fx_store *fx, const char *sql)
{
    sqlite3 *db = raw_open(fx);

    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("raw SQL should run: %s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* The value of col in row seq as text (NULL-safe), into out. */
static void
raw_get(struct kg_fx_store *fx, const char *col, int64_t seq, char *out, size_t cap)
{
    sqlite3 *db = raw_open(fx);
    sqlite3_stmt *stmt = NULL;
    char sql[128];

    snprintf(sql, sizeof(sql), "SELECT %s FROM audit WHERE seq = ?1", col);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    sqlite3_bind_int64(stmt, 1, seq);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    snprintf(out, cap, "%s", (const char *)sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/* Sets col of row seq to value, as an integer when as_int. */
static void
raw_set(struct kg_fx_store *fx, const char *col, int64_t seq, const char *value, bool as_int)
{
    sqlite3 *db = raw_open(fx);
    sqlite3_stmt *stmt = NULL;
    char sql[128];

    snprintf(sql, sizeof(sql), "UPDATE audit SET %s = ?1 WHERE seq = ?2", col);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    if (as_int)
        sqlite3_bind_int64(stmt, 1, strtoll(value, NULL, 10));
    else
        sqlite3_bind_text(stmt, 1, value, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 2, seq);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/* ---- helpers ---- */

/* Five lifecycle changes: five entries in three tenants' worth of events. */
static void
make_history(struct kg_fx_store *fx)
{
    struct kg_user_rec u;
    struct kg_key_rec rec;
    struct kg_err err = {{0}};
    char *key = NULL;

    assert_int_equal(kg_accounts_tenant_create(&fx->kc, NULL,
                                               &(struct kg_tenant_new){.name = "acme"}, NOW,
                                               &(struct kg_tenant_rec){.created_at = 0}, &err),
                     KG_OK);
    assert_int_equal(kg_accounts_user_create(
                         &fx->kc, NULL, &(struct kg_user_new){.tenant = "acme", .username = "bob"},
                         NULL, NOW + 1, &u, NULL, NULL, &err),
                     KG_OK);
    assert_int_equal(
        kg_keys_create(&fx->kc, NULL,
                       &(struct kg_key_new){.name = "ci", .user = u.id, .scopes = "read:a"},
                       NOW + 2, &rec, &key, &err),
        KG_OK);
    kg_keys_key_free(key);
    assert_int_equal(kg_keys_update(&fx->kc, NULL, rec.id, &(struct kg_key_change){.name = "cd"},
                                    NOW + 3, NULL, &err),
                     KG_OK);
    assert_int_equal(kg_keys_revoke(&fx->kc, NULL, rec.id, NOW + 4, NULL, &err), KG_OK);
}

static struct kg_audit_report
verify(struct kg_fx_store *fx)
{
    struct kg_audit_report rep;
    struct kg_err err = {{0}};

    if (kg_audit_verify(fx->store, fx->secret, &rep, &err) != KG_OK)
        fail_msg("verify should run: %s", err.msg);
    return rep;
}

static void
expect_broken_at(struct kg_fx_store *fx, int64_t seq, const char *what)
{
    struct kg_audit_report rep = verify(fx);

    if (rep.ok)
        fail_msg("%s: the chain should be broken at %lld but verified", what, (long long)seq);
    if (rep.broken_seq != seq)
        fail_msg("%s: the chain should break at %lld, broke at %lld (%s)", what, (long long)seq,
                 (long long)rep.broken_seq, rep.why);
}

static void
expect_ok(struct kg_fx_store *fx, int64_t n)
{
    struct kg_audit_report rep = verify(fx);

    if (!rep.ok)
        fail_msg("the chain should verify, broke at %lld: %s", (long long)rep.broken_seq, rep.why);
    assert_int_equal(rep.entries, n);
}

/* ---- the chain ---- */

static void
test_an_empty_trail_verifies(void **state)
{
    expect_ok(*state, 0);
}

static void
test_a_history_of_changes_verifies_and_each_entry_links_to_the_last(void **state)
{
    struct kg_fx_store *fx = *state;
    char prev[96], link[96];

    make_history(fx);
    expect_ok(fx, 5);
    raw_get(fx, "prev_hash", 1, link, sizeof(link));
    assert_string_equal(link, "0000000000000000000000000000000000000000000000000000000000000000");
    for (int64_t seq = 2; seq <= 5; seq++) {
        raw_get(fx, "hash", seq - 1, prev, sizeof(prev));
        raw_get(fx, "prev_hash", seq, link, sizeof(link));
        assert_string_equal(prev, link);
    }
}

static void
test_the_hash_is_the_documented_keyed_blake2b(void **state)
{
    struct kg_fx_store *fx = *state;
    unsigned char key[KG_AUDIT_KEY_BYTES], digest[32];
    char text[8192], want[KG_AUDIT_HASH_HEX], stored[96];
    char f[8][4200];
    static const char *const cols[] = {"prev_hash", "seq",    "time",   "actor",
                                       "tenant",    "action", "object", "details"};
    size_t n = 0;

    make_history(fx);
    for (size_t i = 0; i < 8; i++)
        raw_get(fx, cols[i], 3, f[i], sizeof(f[i]));
    for (size_t i = 0; i < 8; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%s", i > 0 ? "\n" : "", f[i]);
    crypto_generichash(key, sizeof(key), (const unsigned char *)"keygate audit chain v1", 22,
                       secret_bytes, sizeof(secret_bytes));
    crypto_generichash(digest, sizeof(digest), (const unsigned char *)text, n, key, sizeof(key));
    sodium_bin2hex(want, sizeof(want), digest, sizeof(digest));
    raw_get(fx, "hash", 3, stored, sizeof(stored));
    assert_string_equal(stored, want);
    assert_string_equal(f[5], "key.create");
}

static void
test_editing_any_column_of_any_row_is_caught_at_that_entry(void **state)
{
    struct kg_fx_store *fx = *state;
    static const struct {
        const char *col;
        bool is_int;
    } cols[] = {
        {"time", true},    {"actor", false},   {"tenant", false},    {"action", false},
        {"object", false}, {"details", false}, {"prev_hash", false}, {"hash", false},
    };
    char orig[4200], edited[4300], what[96];

    make_history(fx);
    for (int64_t seq = 1; seq <= 5; seq++) {
        for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
            raw_get(fx, cols[c].col, seq, orig, sizeof(orig));
            if (cols[c].is_int) {
                snprintf(edited, sizeof(edited), "%lld", strtoll(orig, NULL, 10) + 1);
            } else if (strlen(orig) == 64) {
                /* A hash keeps its shape: one hex digit changed. */
                snprintf(edited, sizeof(edited), "%s", orig);
                edited[10] = edited[10] == '0' ? '1' : '0';
            } else {
                snprintf(edited, sizeof(edited), "%s%s", orig,
                         strcmp(cols[c].col, "details") == 0 ? " " : "x");
            }
            raw_set(fx, cols[c].col, seq, edited, cols[c].is_int);
            snprintf(what, sizeof(what), "%s of entry %lld", cols[c].col, (long long)seq);
            expect_broken_at(fx, seq, what);
            raw_set(fx, cols[c].col, seq, orig, cols[c].is_int);
            expect_ok(fx, 5);
        }
        /* The sequence number itself: the entry vanishes from its place. */
        raw_exec(fx, "UPDATE audit SET seq = seq + 1000 WHERE seq = 3");
        expect_broken_at(fx, 3, "seq of entry 3");
        raw_exec(fx, "UPDATE audit SET seq = 3 WHERE seq = 1003");
        expect_ok(fx, 5);
    }
    /* A value of another type is caught too. */
    raw_exec(fx, "UPDATE audit SET time = 'yesterday' WHERE seq = 2");
    expect_broken_at(fx, 2, "time stored as text");
}

/* Each hash is compared in full: changing any one of its 64 hex digits, in
 * the first entry or the last, breaks the chain right there. */
static void
test_changing_any_hex_digit_of_a_hash_is_caught(void **state)
{
    struct kg_fx_store *fx = *state;
    static const char *const cols[] = {"hash", "prev_hash"};
    static const int64_t seqs[] = {1, 5};
    char orig[80], edited[80], what[96];

    make_history(fx);
    for (size_t s = 0; s < sizeof(seqs) / sizeof(seqs[0]); s++) {
        for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
            raw_get(fx, cols[c], seqs[s], orig, sizeof(orig));
            assert_int_equal(strlen(orig), 64);
            for (size_t pos = 0; pos < 64; pos++) {
                snprintf(edited, sizeof(edited), "%s", orig);
                edited[pos] = edited[pos] == '0' ? '1' : '0';
                raw_set(fx, cols[c], seqs[s], edited, false);
                snprintf(what, sizeof(what), "hex digit %zu of the %s of entry %lld", pos, cols[c],
                         (long long)seqs[s]);
                expect_broken_at(fx, seqs[s], what);
                raw_set(fx, cols[c], seqs[s], orig, false);
            }
        }
    }
    expect_ok(fx, 5);
}

static void
test_deleting_a_row_is_caught_first_middle_or_last(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_audit_report rep;

    make_history(fx);
    raw_exec(fx, "CREATE TABLE saved AS SELECT * FROM audit");
    raw_exec(fx, "DELETE FROM audit WHERE seq = 3");
    rep = verify(fx);
    assert_false(rep.ok);
    assert_int_equal(rep.broken_seq, 3);
    assert_string_equal(rep.why, "entry is missing");
    raw_exec(fx, "INSERT INTO audit SELECT * FROM saved WHERE seq = 3");
    expect_ok(fx, 5);

    raw_exec(fx, "DELETE FROM audit WHERE seq = 1");
    expect_broken_at(fx, 1, "first row deleted");
    raw_exec(fx, "INSERT INTO audit SELECT * FROM saved WHERE seq = 1");

    /* The last row has no successor to miss it; the chain head does. */
    raw_exec(fx, "DELETE FROM audit WHERE seq = 5");
    expect_broken_at(fx, 5, "last row deleted");
    /* And new entries do not paper over the hole. */
    assert_int_equal(kg_accounts_tenant_create(&fx->kc, NULL,
                                               &(struct kg_tenant_new){.name = "later"}, NOW + 9,
                                               &(struct kg_tenant_rec){.created_at = 0}, NULL),
                     KG_OK);
    expect_broken_at(fx, 5, "last row deleted, then an append");
}

static void
test_a_forged_row_or_a_wrong_secret_is_caught(void **state)
{
    struct kg_fx_store *fx = *state;
    static const unsigned char other[KG_SECRET_BYTES] = "some other secret of 32 bytes!!";
    struct kg_secret *wrong = NULL;
    struct kg_audit_report rep;

    make_history(fx);
    raw_exec(fx, "INSERT INTO audit (seq, time, actor, tenant, action, object, details,"
                 " prev_hash, hash) SELECT 6, time, actor, tenant, action, object, details, hash,"
                 " hash FROM audit WHERE seq = 5");
    expect_broken_at(fx, 6, "a row appended by hand");
    raw_exec(fx, "DELETE FROM audit WHERE seq = 6");
    expect_ok(fx, 5);

    assert_int_equal(kg_digest_secret_from_bytes(other, &wrong), KG_OK);
    assert_int_equal(kg_audit_verify(fx->store, wrong, &rep, NULL), KG_OK);
    kg_digest_secret_free(wrong);
    assert_false(rep.ok);
    assert_int_equal(rep.broken_seq, 1);
}

static void
test_appending_after_verification_continues_the_chain(void **state)
{
    struct kg_fx_store *fx = *state;
    char prev[96], link[96];

    make_history(fx);
    expect_ok(fx, 5);
    assert_int_equal(kg_accounts_tenant_create(&fx->kc, NULL,
                                               &(struct kg_tenant_new){.name = "next"}, NOW + 10,
                                               &(struct kg_tenant_rec){.created_at = 0}, NULL),
                     KG_OK);
    expect_ok(fx, 6);
    raw_get(fx, "hash", 5, prev, sizeof(prev));
    raw_get(fx, "prev_hash", 6, link, sizeof(link));
    assert_string_equal(prev, link);
    /* A store reopened later (another process) chains on the same head. */
    kg_store_close(fx->store);
    fx->store = NULL;
    assert_int_equal(kg_store_open(fx->db, &fx->store, NULL), KG_OK);
    fx->kc.store = fx->store;
    {
        unsigned char audit_key[KG_AUDIT_KEY_BYTES];

        kg_digest_audit_key(fx->secret, audit_key);
        kg_store_set_audit_key(fx->store, audit_key);
    }
    assert_int_equal(kg_audit_auth_failed(fx->store, NOW + 11, NULL, 0, "invalid", NULL), KG_OK);
    expect_ok(fx, 7);
}

/* ---- entries ---- */

static void
test_a_failed_admin_authentication_records_only_a_display_prefix(void **state)
{
    struct kg_fx_store *fx = *state;
    char key[KG_KEY_MAX], object[96], actor[96], dprefix[KG_DPREFIX_MAX], last4[5];
    struct kg_err err = {{0}};

    assert_int_equal(kg_keyfmt_generate("kg_", key, NULL), KG_OK);
    assert_int_equal(kg_audit_auth_failed(fx->store, NOW, key, strlen(key), "revoked", &err),
                     KG_OK);
    kg_keyfmt_display(key, strlen(key), dprefix, last4);
    raw_get(fx, "object", 1, object, sizeof(object));
    raw_get(fx, "actor", 1, actor, sizeof(actor));
    assert_string_equal(object, dprefix);
    assert_string_equal(actor, "anonymous");
    raw_get(fx, "action", 1, object, sizeof(object));
    assert_string_equal(object, "admin.auth_failed");
    raw_get(fx, "details", 1, object, sizeof(object));
    assert_string_equal(object, "{\"reason\":\"revoked\"}");
    /* Something that is not a key is never written down, even in part. */
    assert_int_equal(kg_audit_auth_failed(fx->store, NOW, "hunter2-password", 16, "invalid", &err),
                     KG_OK);
    raw_get(fx, "object", 2, object, sizeof(object));
    assert_string_equal(object, "none");
    expect_ok(fx, 2);
    sodium_memzero(key, sizeof(key));
}

static void
test_entries_refuse_newlines_and_oversized_details(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_audit_entry e;
    char big[KG_AUDIT_DETAILS_MAX + 16];
    json_t *details;

    (void)fx;
    assert_int_equal(
        kg_audit_entry_init(&e, NOW, "cli:x\nforged", NULL, "key.create", "k", NULL, NULL),
        KG_EINVAL);
    assert_int_equal(kg_audit_entry_init(&e, NOW, "cli:x", "t", "key.create", "k\r", NULL, NULL),
                     KG_EINVAL);
    assert_int_equal(kg_audit_entry_init(&e, NOW, NULL, NULL, "key.create", "k", NULL, NULL),
                     KG_EINVAL);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    details = json_pack("{s:s}", "note", big);
    assert_int_equal(kg_audit_entry_init(&e, NOW, "cli:x", "t", "key.update", "k", details, NULL),
                     KG_ELIMIT);
    json_decref(details);
    /* A newline inside a detail is escaped by JSON, so it is fine. */
    details = json_pack("{s:s}", "name", "two\nlines");
    assert_int_equal(kg_audit_entry_init(&e, NOW, "cli:x", "t", "key.update", "k", details, NULL),
                     KG_OK);
    json_decref(details);
    assert_string_equal(e.details, "{\"name\":\"two\\nlines\"}");
}

static void
test_the_cli_actor_names_the_os_user(void **state)
{
    char actor[KG_AUDIT_ACTOR_MAX];

    (void)state;
    kg_audit_cli_actor(actor);
    assert_int_equal(strncmp(actor, "cli:", 4), 0);
    assert_true(strlen(actor) > 4);
    assert_null(strchr(actor, '\n'));
}

struct seqs {
    int64_t v[16];
    char tenants[16][KG_NAME_MAX];
    int n;
};

static bool
seq_cb(const struct kg_audit_entry *e, void *ctx)
{
    struct seqs *s = ctx;

    assert_true(s->n < 16);
    snprintf(s->tenants[s->n], KG_NAME_MAX, "%s", e->tenant);
    s->v[s->n++] = e->seq;
    return true;
}

static void
test_listings_page_both_ways_and_the_fence_keeps_other_tenants_out(void **state)
{
    struct kg_fx_store *fx = *state;
    struct kg_audit_filter newest = {.newest_first = true};
    struct kg_audit_filter other = {.tenant = "default"};
    char cursor[KG_CURSOR_MAX] = "";
    struct seqs s = {.n = 0};

    make_history(fx);
    assert_int_equal(kg_audit_auth_failed(fx->store, NOW + 5, NULL, 0, "invalid", NULL), KG_OK);
    do {
        struct kg_page page = {.cursor = cursor, .limit = 4};
        char next[KG_CURSOR_MAX];

        assert_int_equal(kg_audit_list(&fx->kc, NULL, &newest, &page, seq_cb, &s, next, NULL),
                         KG_OK);
        memcpy(cursor, next, sizeof(cursor));
    } while (cursor[0] != '\0');
    assert_int_equal(s.n, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(s.v[i], 6 - i);

    /* A tenant's admin sees that tenant's entries only: not the platform-wide failure. */
    s.n = 0;
    assert_int_equal(kg_audit_list(&fx->kc, "acme", NULL, NULL, seq_cb, &s, NULL, NULL), KG_OK);
    assert_int_equal(s.n, 5);
    for (int i = 0; i < s.n; i++)
        assert_string_equal(s.tenants[i], "acme");
    s.n = 0;
    assert_int_equal(kg_audit_list(&fx->kc, "acme", &other, NULL, seq_cb, &s, NULL, NULL), KG_OK);
    assert_int_equal(s.n, 0);
    s.n = 0;
    assert_int_equal(kg_audit_list(&fx->kc, NULL, NULL, &(struct kg_page){.cursor = "4"}, seq_cb,
                                   &s, NULL, NULL),
                     KG_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(kg_audit_list(&fx->kc, NULL, NULL, &(struct kg_page){.cursor = "4.x"}, seq_cb,
                                   &s, NULL, NULL),
                     KG_EINVAL);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_an_empty_trail_verifies),
        T(test_a_history_of_changes_verifies_and_each_entry_links_to_the_last),
        T(test_the_hash_is_the_documented_keyed_blake2b),
        T(test_editing_any_column_of_any_row_is_caught_at_that_entry),
        T(test_changing_any_hex_digit_of_a_hash_is_caught),
        T(test_deleting_a_row_is_caught_first_middle_or_last),
        T(test_a_forged_row_or_a_wrong_secret_is_caught),
        T(test_appending_after_verification_continues_the_chain),
        T(test_a_failed_admin_authentication_records_only_a_display_prefix),
        T(test_entries_refuse_newlines_and_oversized_details),
        T(test_the_cli_actor_names_the_os_user),
        T(test_listings_page_both_ways_and_the_fence_keeps_other_tenants_out),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
