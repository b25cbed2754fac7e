/* torture/torture.c - the allocation-failure build (-DKEYGATE_TORTURE=ON).
 *
 * Linked only into build-torture's keygate, with -Wl,--wrap for malloc,
 * calloc, realloc, strdup and strndup: every allocation keygate's own code
 * makes comes here, and so do SQLite's (SQLITE_CONFIG_MALLOC) and
 * jansson's (json_set_alloc_funcs), set up before main. With
 * KEYGATE_TORTURE_FAIL=N the Nth allocation counted fails (returns NULL),
 * as curl's torture tests do; every other goes through. Counting starts
 * at once, or, with KEYGATE_TORTURE_ARM=signal, when the process gets
 * SIGRTMIN+5, until the second one (so a daemon can start first and the
 * count covers one request and nothing else). Not SIGUSR2: the daemon takes
 * that one itself (a change notification, blocked and waited for by its
 * main thread), so an arm on it never fired.
 * At exit the number of allocations counted is written to
 * KEYGATE_TORTURE_COUNT (a file), which tells scripts/torture.sh whether
 * the run reached N. Leaks are ASan's to find: the build is ASan+UBSan.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static long fail_at;           /* 0: never */
static _Atomic bool armed;     /* counting */
static _Atomic long counted;   /* allocations seen while armed */
static const char *count_file; /* where the count goes at exit */

/* The sanitizer runtime's (the torture build is always ASan). */
void __sanitizer_print_stack_trace(void);

static bool trace; /* KEYGATE_TORTURE_TRACE: where the failing allocation was */

/* True when this allocation is the one to fail. */
static bool
fail_now(void)
{
    long n;

    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return false;
    n = atomic_fetch_add(&counted, 1) + 1;
    if (n == fail_at && trace)
        __sanitizer_print_stack_trace();
    return n == fail_at;
}

void *
__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *
__wrap_strdup(const char *s)
{
    return fail_now() ? NULL : __real_strdup(s);
}

char *
__wrap_strndup(const char *s, size_t n)
{
    return fail_now() ? NULL : __real_strndup(s, n);
}

/* SQLite wants each block's size back: a 16-byte header holds it. */
static void *
sq_malloc(int n)
{
    size_t *p;

    if (n <= 0 || fail_now())
        return NULL;
    p = __real_malloc((size_t)n + 16);
    if (p == NULL)
        return NULL;
    p[0] = (size_t)n;
    return (char *)p + 16;
}

static void
sq_free(void *p)
{
    if (p != NULL)
        free((char *)p - 16);
}

static int
sq_size(void *p)
{
    return p != NULL ? (int)*(size_t *)(void *)((char *)p - 16) : 0;
}

static void *
sq_realloc(void *p, int n)
{
    size_t *q;

    if (p == NULL)
        return sq_malloc(n);
    if (n <= 0 || fail_now())
        return NULL;
    q = __real_realloc((char *)p - 16, (size_t)n + 16);
    if (q == NULL)
        return NULL;
    q[0] = (size_t)n;
    return (char *)q + 16;
}

static int
sq_roundup(int n)
{
    return (n + 7) & ~7;
}

static int
sq_init(void *ctx)
{
    (void)ctx;
    return SQLITE_OK;
}

static void
sq_shutdown(void *ctx)
{
    (void)ctx;
}

static void *
js_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

/* The first arm signal starts counting, the second stops it. */
static void
on_arm(int sig)
{
    static _Atomic int seen;

    (void)sig;
    atomic_store(&armed, atomic_fetch_add(&seen, 1) == 0);
}

static void
write_count(void)
{
    FILE *f;

    if (count_file == NULL)
        return;
    f = fopen(count_file, "w");
    if (f == NULL)
        return;
    fprintf(f, "%ld\n", atomic_load(&counted));
    fclose(f);
}

__attribute__((constructor)) static void
torture_init(void)
{
    static const sqlite3_mem_methods methods = {sq_malloc,  sq_free, sq_realloc,  sq_size,
                                                sq_roundup, sq_init, sq_shutdown, NULL};
    const char *n = getenv("KEYGATE_TORTURE_FAIL");
    const char *arm = getenv("KEYGATE_TORTURE_ARM");

    fail_at = n != NULL ? strtol(n, NULL, 10) : 0;
    count_file = getenv("KEYGATE_TORTURE_COUNT");
    trace = getenv("KEYGATE_TORTURE_TRACE") != NULL;
    sqlite3_config(SQLITE_CONFIG_MALLOC, &methods);
    json_set_alloc_funcs(js_malloc, free);
    if (arm != NULL && strcmp(arm, "signal") == 0)
        signal(SIGRTMIN + 5, on_arm);
    else
        atomic_store(&armed, true);
    atexit(write_count);
}
