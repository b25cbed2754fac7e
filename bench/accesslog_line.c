/* bench/accesslog_line.c - what one access-log line costs the writer
 * thread: the record's members (kg_al_line_values: masking, the time)
 * then the line, made two ways in the same process:
 *
 *   jansson  what keygate did before issue 13: one jansson object reused
 *            for every line, its members' values changed in place (each
 *            string checked for UTF-8 first, as the old formatter did),
 *            then json_dumpb(JSON_COMPACT | JSON_PRESERVE_ORDER);
 *   keygate  kg_al_line_write(), the hand-written serializer.
 *
 * A benchmark, not a test: it prints thread CPU nanoseconds per line, the
 * best of REPS rounds of N lines, for three records (a proxied request, a
 * 401 with its null members, a 511-byte path full of escapes and UTF-8).
 * Both ways are checked to write the same bytes before anything is timed.
 *
 *   build/kg_bench_accesslog [-n LINES] [-r REPS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "keygate/accesslog.h"
#include "keygate/metrics.h"
#include "obs/accesslog_int.h"

/* The jansson way, as src/obs/accessfmt.c had it. */
struct jline {
    json_t *obj;
    json_t *val[NFIELDS];
    char scratch[3 * KG_ACCESSLOG_PATH_MAX + 1];
};

static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

static void
jline_init(struct jline *l)
{
    l->obj = json_object();
    for (int i = 0; i < NFIELDS; i++) {
        l->val[i] = json_null();
        json_object_set_new(l->obj, kg_al_field_name[i], l->val[i]);
    }
}

static void
jset(struct jline *l, int i, json_t *v)
{
    json_object_set_new(l->obj, kg_al_field_name[i], v);
    l->val[i] = v;
}

static void
jset_str(struct jline *l, int i, const char *s, size_t n)
{
    size_t o = 0, k, at;

    if (s == NULL) {
        if (!json_is_null(l->val[i]))
            jset(l, i, json_null());
        return;
    }
    for (at = 0; at < n; at += k)
        if ((k = utf8_seq((const unsigned char *)s + at, n - at)) == 0)
            break;
    if (at < n) {
        for (size_t j = 0; j < n; j += k) {
            k = utf8_seq((const unsigned char *)s + j, n - j);
            if (k == 0) {
                memcpy(l->scratch + o, "\xEF\xBF\xBD", 3);
                o += 3;
                k = 1;
            } else {
                memcpy(l->scratch + o, s + j, k);
                o += k;
            }
        }
        s = l->scratch;
        n = o;
    }
    if (json_is_string(l->val[i]))
        json_string_setn_nocheck(l->val[i], s, n);
    else
        jset(l, i, json_stringn_nocheck(s, n));
}

static void
jset_int(struct jline *l, int i, int64_t v, bool is_null)
{
    if (is_null) {
        if (!json_is_null(l->val[i]))
            jset(l, i, json_null());
    } else if (json_is_integer(l->val[i])) {
        json_integer_set(l->val[i], (json_int_t)v);
    } else {
        jset(l, i, json_integer((json_int_t)v));
    }
}

static size_t
jansson_line(struct jline *jl, const struct kg_al_value v[NFIELDS], char *out, size_t cap)
{
    size_t n;

    for (int f = 0; f < NFIELDS; f++) {
        if (kg_al_field_is_number(f))
            jset_int(jl, f, v[f].i, v[f].is_null);
        else
            jset_str(jl, f, v[f].s, v[f].n);
    }
    n = json_dumpb(jl->obj, out, cap - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
    out[n] = '\n';
    return n + 1;
}

static int64_t
cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static char out[KG_AL_LINE_MAX + 16];

/* Best of reps rounds: CPU ns per line for one way (use_jansson) and rec. */
static double
time_way(bool use_jansson, struct jline *jl, const struct kg_accesslog_rec *rec, long n, int reps)
{
    struct kg_al_line l;
    struct kg_al_value v[NFIELDS];
    double best = -1;
    size_t sink = 0;

    memset(&l, 0, sizeof(l));
    for (int r = 0; r < reps; r++) {
        int64_t t0 = cpu_ns();

        for (long i = 0; i < n; i++) {
            kg_al_line_values(&l, rec, 0, v);
            sink += use_jansson ? jansson_line(jl, v, out, sizeof(out)) : kg_al_line_write(v, out);
        }
        double ns = (double)(cpu_ns() - t0) / (double)n;
        if (best < 0 || ns < best)
            best = ns;
    }
    if (sink == 0)
        fprintf(stderr, "no output\n");
    return best;
}

int
main(int argc, char **argv)
{
    long n = 200000;
    int reps = 5, opt;
    struct kg_accesslog_rec rec[3];
    const char *name[3] = {"proxied (200)", "401, null members", "511-byte path, escapes"};
    char longpath[600];
    struct jline jl;

    while ((opt = getopt(argc, argv, "n:r:")) != -1) {
        if (opt == 'n')
            n = atol(optarg);
        else if (opt == 'r')
            reps = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-n LINES] [-r REPS]\n", argv[0]);
            return 2;
        }
    }
    if (n <= 0 || reps <= 0) {
        fprintf(stderr, "%s: -n and -r want positive numbers\n", argv[0]);
        return 2;
    }
    memset(rec, 0, sizeof(rec));
    for (int i = 0; i < 3; i++) {
        rec[i].time_ms = 1795453262345LL;
        rec[i].duration_us = 1234;
        rec[i].bytes_sent = 11;
        rec[i].status = 200;
        rec[i].upstream_status = 200;
        rec[i].outcome = KG_OUTCOME_ALLOWED;
    }
    kg_accesslog_rec_strings(&rec[0], "5f0c2a9e8d7b4c1a9e3f6d2b8a7c5e41", "127.0.0.1", "GET",
                             "key_3mQ8vT1xZr6kLp2N9sW4yB", "bench", "/v1/items/42", 12);
    rec[1].status = 401;
    rec[1].upstream_status = 0;
    rec[1].bytes_sent = 57;
    rec[1].outcome = KG_OUTCOME_UNAUTHENTICATED;
    kg_accesslog_rec_strings(&rec[1], "9a1b2c3d4e5f60718293a4b5c6d7e8f9", "127.0.0.1", "GET", NULL,
                             NULL, "/v1/items", 9);
    for (size_t i = 0; i < sizeof(longpath); i++)
        longpath[i] = "/ab\"c\\d\te\xc3\xa9"
                      "f\x01"[i % 14];
    kg_accesslog_rec_strings(&rec[2], "x", "2001:db8::1", "POST", "key_3mQ8vT1xZr6kLp2N9sW4yB",
                             "bench", longpath, sizeof(longpath));

    jline_init(&jl);
    /* Both ways write the same bytes, or there is nothing to compare. */
    for (int i = 0; i < 3; i++) {
        static char a[KG_AL_LINE_MAX + 16];
        struct kg_al_line l;
        struct kg_al_value v[NFIELDS];
        size_t na, nb;

        memset(&l, 0, sizeof(l));
        kg_al_line_values(&l, &rec[i], 0, v);
        na = kg_al_line_write(v, a);
        nb = jansson_line(&jl, v, out, sizeof(out));
        if (na != nb || memcmp(a, out, na) != 0) {
            fprintf(stderr, "record %d: the two lines differ\n", i);
            return 1;
        }
    }
    printf("CPU ns per access-log line, best of %d rounds of %ld lines\n", reps, n);
    printf("%-24s %10s %10s %8s\n", "record", "jansson", "keygate", "ratio");
    for (int i = 0; i < 3; i++) {
        double j = time_way(true, &jl, &rec[i], n, reps);
        double k = time_way(false, &jl, &rec[i], n, reps);

        printf("%-24s %10.0f %10.0f %7.2fx\n", name[i], j, k, k / j);
    }
    json_decref(jl.obj);
    return 0;
}
