/* bench/load_keys.c - times the key cache's full load of a store, alone:
 * no daemon, no listener. Prints the keys loaded, the wall time of
 * kg_keycache_reload() and the process's peak RSS, so start time and
 * memory per key can be measured without anything else running.
 * Not installed, not part of the test suite.
 *
 *   kg_bench_load /tmp/kg-1m/keygate.db
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "keygate/keycache.h"
#include "keygate/store.h"

static double
seconds(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
    struct kg_store *st = NULL;
    struct kg_keycache *kc = NULL;
    const struct kg_keysnap *snap;
    struct kg_err err = {{0}};
    char line[256];
    FILE *f;
    double t0, t1;
    int status = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: kg_bench_load DATABASE\n");
        return 2;
    }
    if (sodium_init() < 0 || kg_store_open(argv[1], &st, &err) != KG_OK ||
        kg_keycache_new(NULL, &kc) != KG_OK) {
        fprintf(stderr, "kg_bench_load: %s\n", err.msg[0] != '\0' ? err.msg : "out of memory");
        goto cleanup;
    }
    t0 = seconds();
    if (kg_keycache_reload(kc, st, (int64_t)time(NULL), &err) != KG_OK) {
        fprintf(stderr, "kg_bench_load: %s\n", err.msg);
        goto cleanup;
    }
    t1 = seconds();
    snap = kg_keycache_acquire(kc);
    printf("%zu keys loaded in %.3f s\n", kg_keysnap_count(snap), t1 - t0);
    kg_keycache_release(snap);
    f = fopen("/proc/self/status", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            fputs(line, stdout);
    if (f != NULL)
        fclose(f);
    status = 0;
cleanup:
    kg_keycache_free(kc);
    kg_store_close(st);
    return status;
}
