/* tests/unit/obs/test_accesslog.c - src/obs/accesslog.c through
 * keygate/accesslog.h: the ring (full: dropped and counted, never waited
 * for), reopen after a rename, switching destinations, each line's own
 * time, and nothing committed lost at free. What a line says is
 * test_accessfmt.c's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "keygate/accesslog.h"
#include "keygate/keyfmt.h"
#include "keygate/metrics.h"

static char dir[64];

static int
make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/kg-accesslog-XXXXXX");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
remove_dir(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void
fill(struct kg_accesslog_rec *r, const char *id)
{
    memset(r, 0, sizeof(*r));
    r->time_ms = 1795453262345LL; /* 2026-11-23T17:01:02.345Z */
    r->duration_us = 1234;
    r->bytes_sent = 17;
    r->status = 200;
    r->upstream_status = 200;
    r->outcome = KG_OUTCOME_ALLOWED;
    kg_accesslog_rec_strings(r, id, "192.0.2.7", "GET", "key_abc", "acme", "/v1/items", 9);
}

/* ---- the ring and the writer ---- */

static size_t
count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    size_t n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (needle == NULL || strstr(line, needle) != NULL)
            n++;
    fclose(f);
    return n;
}

static void
submit(struct kg_accesslog *al, const char *id)
{
    struct kg_accesslog_rec *r = kg_accesslog_reserve(al);

    assert_non_null(r);
    fill(r, id);
    kg_accesslog_commit(al, r);
}

static void
test_a_full_ring_drops_and_counts_instead_of_waiting(void **state)
{
    char path[128];
    struct kg_accesslog *al;
    struct kg_accesslog_rec *held, *r;
    struct kg_err err = {{0}};
    char *text;

    (void)state;
    kg_metrics_reset();
    snprintf(path, sizeof(path), "%s/full.log", dir);
    assert_int_equal(kg_accesslog_new(path, 4, &al, &err), KG_OK);
    /* A slot reserved and not yet committed holds the writer back, as a
     * loop in the middle of filling one would. */
    held = kg_accesslog_reserve(al);
    assert_non_null(held);
    fill(held, "held");
    for (int i = 0; i < 3; i++)
        submit(al, "queued");
    r = kg_accesslog_reserve(al);
    assert_null(r);
    assert_null(kg_accesslog_reserve(al));
    assert_int_equal(kg_accesslog_dropped(al), 2);
    text = kg_metrics_render(&(struct kg_metrics_gauges){.reload_age_s = -1}, NULL);
    assert_non_null(strstr(text, "\nkeygate_access_log_dropped_total 2\n"));
    free(text);
    kg_accesslog_commit(al, held);
    assert_true(kg_accesslog_sync(al, 10000));
    assert_int_equal(count_lines(path, "\"held\""), 1);
    assert_int_equal(count_lines(path, "\"queued\""), 3);
    /* Room again once the writer took them. */
    submit(al, "after");
    kg_accesslog_free(al);
    assert_int_equal(count_lines(path, NULL), 5);
}

static void
test_free_writes_every_committed_line(void **state)
{
    char path[128], id[32];
    struct kg_accesslog *al;
    struct kg_err err = {{0}};

    (void)state;
    snprintf(path, sizeof(path), "%s/all.log", dir);
    assert_int_equal(kg_accesslog_new(path, 4096, &al, &err), KG_OK);
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof(id), "n%d", i);
        submit(al, id);
    }
    kg_accesslog_free(al);
    assert_int_equal(count_lines(path, NULL), 3000);
    assert_int_equal(count_lines(path, "\"n2999\""), 1);
}

static void
test_lines_are_written_soon_without_a_sync_or_a_free(void **state)
{
    char path[128];
    struct kg_accesslog *al;
    struct kg_err err = {{0}};
    struct timespec ts = {0, 20 * 1000000L};
    int waited = 0;

    (void)state;
    snprintf(path, sizeof(path), "%s/timely.log", dir);
    assert_int_equal(kg_accesslog_new(path, 0, &al, &err), KG_OK);
    submit(al, "soon");
    /* 200 ms by design; 5 s is the bound, for a loaded machine. */
    while (count_lines(path, "\"soon\"") == 0 && waited < 250) {
        nanosleep(&ts, NULL);
        waited++;
    }
    assert_int_equal(count_lines(path, "\"soon\""), 1);
    kg_accesslog_free(al);
}

static void
test_reopen_after_a_rename_starts_a_new_file_and_keeps_the_old_one(void **state)
{
    char path[128], old[140];
    struct kg_accesslog *al;
    struct kg_err err = {{0}};
    struct timespec ts = {0, 10 * 1000000L};
    struct stat st;
    int waited = 0;

    (void)state;
    snprintf(path, sizeof(path), "%s/rot.log", dir);
    snprintf(old, sizeof(old), "%s/rot.log.1", dir);
    assert_int_equal(kg_accesslog_new(path, 0, &al, &err), KG_OK);
    submit(al, "first");
    assert_true(kg_accesslog_sync(al, 10000));
    assert_int_equal(rename(path, old), 0);
    submit(al, "renamed");
    assert_true(kg_accesslog_sync(al, 10000));
    kg_accesslog_reopen(al);
    while (stat(path, &st) != 0 && waited < 1000) {
        nanosleep(&ts, NULL);
        waited++;
    }
    assert_int_equal(stat(path, &st), 0);
    submit(al, "second");
    kg_accesslog_free(al);
    assert_int_equal(count_lines(old, NULL), 2);
    assert_int_equal(count_lines(old, "\"first\""), 1);
    assert_int_equal(count_lines(old, "\"renamed\""), 1);
    assert_int_equal(count_lines(path, NULL), 1);
    assert_int_equal(count_lines(path, "\"second\""), 1);
}

static void
test_set_dest_moves_lines_and_off_stops_taking_them(void **state)
{
    char a[128], b[128];
    struct kg_accesslog *al;
    struct kg_err err = {{0}};

    (void)state;
    snprintf(a, sizeof(a), "%s/a.log", dir);
    snprintf(b, sizeof(b), "%s/b.log", dir);
    assert_int_equal(kg_accesslog_new("off", 0, &al, &err), KG_OK);
    assert_false(kg_accesslog_enabled(al));
    assert_null(kg_accesslog_reserve(al));
    assert_int_equal(kg_accesslog_dropped(al), 0); /* off is not a drop */
    assert_int_equal(kg_accesslog_set_dest(al, a, &err), KG_OK);
    assert_true(kg_accesslog_enabled(al));
    submit(al, "to-a");
    assert_int_equal(kg_accesslog_set_dest(al, b, &err), KG_OK);
    submit(al, "to-b");
    assert_true(kg_accesslog_sync(al, 10000));
    assert_int_equal(kg_accesslog_set_dest(al, "/nonexistent-dir/x.log", &err), KG_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.log"));
    assert_true(kg_accesslog_enabled(al)); /* a bad path changes nothing */
    assert_int_equal(kg_accesslog_set_dest(al, "off", &err), KG_OK);
    assert_false(kg_accesslog_enabled(al));
    assert_null(kg_accesslog_reserve(al));
    kg_accesslog_free(al);
    assert_int_equal(count_lines(a, NULL), 1);
    assert_int_equal(count_lines(a, "\"to-a\""), 1);
    assert_int_equal(count_lines(b, NULL), 1);
    assert_int_equal(count_lines(b, "\"to-b\""), 1);
}

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A log on a pipe nobody reads, with that pipe full: the writer is stuck. */
static struct kg_accesslog *
stalled_log(int p[2])
{
    char spec[32];
    struct kg_accesslog *al;
    struct kg_err err = {{0}};

    assert_int_equal(pipe(p), 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096); /* fills sooner; the default is fine too */
    snprintf(spec, sizeof(spec), "/dev/fd/%d", p[1]);
    assert_int_equal(kg_accesslog_new(spec, 64, &al, &err), KG_OK);
    for (int i = 0; i < 400; i++) {
        struct kg_accesslog_rec *r = kg_accesslog_reserve(al);

        if (r != NULL) {
            fill(r, "stalled");
            kg_accesslog_commit(al, r);
        }
    }
    assert_false(kg_accesslog_sync(al, 300));
    return al;
}

static void
test_a_destination_nobody_reads_does_not_hold_up_set_dest(void **state)
{
    char other[128];
    struct kg_accesslog *al;
    struct kg_err err = {{0}};
    int p[2];
    int64_t t0;

    (void)state;
    snprintf(other, sizeof(other), "%s/after-stall.log", dir);
    al = stalled_log(p);
    t0 = now_ms();
    assert_int_equal(kg_accesslog_set_dest(al, other, &err), KG_OK);
    assert_true(now_ms() - t0 < 5000);
    submit(al, "after");
    assert_true(kg_accesslog_sync(al, 10000));
    assert_int_equal(count_lines(other, NULL), 1);
    assert_int_equal(count_lines(other, "\"after\""), 1);
    assert_true(kg_accesslog_dropped(al) > 0); /* what the stuck pipe never took */
    t0 = now_ms();
    kg_accesslog_free(al);
    assert_true(now_ms() - t0 < 5000);
    close(p[0]);
    close(p[1]);
}

static void
test_free_gives_up_on_a_destination_nobody_reads(void **state)
{
    struct kg_accesslog *al;
    int p[2];
    int64_t t0;

    (void)state;
    al = stalled_log(p);
    t0 = now_ms();
    kg_accesslog_free(al);
    assert_true(now_ms() - t0 < 5000);
    close(p[0]);
    close(p[1]);
}

static void
test_the_writer_writes_each_lines_own_time(void **state)
{
    static const int64_t t[] = {1795453262345LL, 1795453262346LL, 1795453263001LL, 1795453262999LL};
    static const char *const want[] = {"2026-11-23T17:01:02.345Z", "2026-11-23T17:01:02.346Z",
                                       "2026-11-23T17:01:03.001Z", "2026-11-23T17:01:02.999Z"};
    char path[128], id[8], needle[64];
    struct kg_accesslog *al;
    struct kg_err err = {{0}};

    (void)state;
    snprintf(path, sizeof(path), "%s/time.log", dir);
    assert_int_equal(kg_accesslog_new(path, 0, &al, &err), KG_OK);
    for (int i = 0; i < 4; i++) {
        struct kg_accesslog_rec *r = kg_accesslog_reserve(al);

        assert_non_null(r);
        snprintf(id, sizeof(id), "t%d", i);
        fill(r, id);
        r->time_ms = t[i];
        kg_accesslog_commit(al, r);
    }
    kg_accesslog_free(al);
    for (int i = 0; i < 4; i++) {
        snprintf(needle, sizeof(needle), "{\"time\":\"%s\",\"request_id\":\"t%d\"", want[i], i);
        if (count_lines(path, needle) != 1)
            fail_msg("no line starting %s", needle);
    }
}

static void
test_a_file_that_cannot_be_opened_is_an_error(void **state)
{
    struct kg_accesslog *al = NULL;
    struct kg_err err = {{0}};

    (void)state;
    assert_int_equal(kg_accesslog_new("/nonexistent-dir/access.log", 0, &al, &err), KG_EIO);
    assert_null(al);
    assert_int_equal(kg_accesslog_new("", 0, &al, &err), KG_EINVAL);
    assert_null(al);
    kg_accesslog_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_full_ring_drops_and_counts_instead_of_waiting),
        cmocka_unit_test(test_free_writes_every_committed_line),
        cmocka_unit_test(test_lines_are_written_soon_without_a_sync_or_a_free),
        cmocka_unit_test(test_reopen_after_a_rename_starts_a_new_file_and_keeps_the_old_one),
        cmocka_unit_test(test_set_dest_moves_lines_and_off_stops_taking_them),
        cmocka_unit_test(test_the_writer_writes_each_lines_own_time),
        cmocka_unit_test(test_a_destination_nobody_reads_does_not_hold_up_set_dest),
        cmocka_unit_test(test_free_gives_up_on_a_destination_nobody_reads),
        cmocka_unit_test(test_a_file_that_cannot_be_opened_is_an_error),
    };

    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
