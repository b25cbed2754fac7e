/* bench/seed_keys.c - fills a keygate store with N keys for the benchmark.
 *
 * `keygate keys create` costs a process start and a durable (fsynced)
 * transaction per key, far too slow for 10,000 keys; this opens the store and
 * secret the way the daemon does (kg_instance_open with the same config file), turns
 * durability off and inserts N keys in one process, one transaction per
 * batch of SEED_BATCH keys (kg_store_key_insert_batch): 1,000,000 keys take
 * about a minute instead of an hour. The plaintext keys are
 * written one per line to KEYS_FILE so wrk can send them: that is the whole
 * point of a benchmark key and the reason this tool must never touch a real
 * store. With -u it also writes one well-formed key (right prefix, right
 * checksum) that is NOT inserted, so the benchmark's 401 run pays for the
 * digest and the lookup miss instead of stopping at the checksum. With -i
 * it inserts the keys of such a file instead of new ones, so a second store
 * (bench/run.sh's PostgreSQL one) holds the very keys of the first and the
 * same wrk runs measure both.
 * Not installed, not part of the test suite.
 *
 *   kg_bench_seed -c bench/run/keygate.conf -n 10000 -o bench/run/keygate-keys.txt \
 *                 -u bench/run/keygate-unknown-key.txt
 *   kg_bench_seed -c bench/run/keygate-pg.conf -i bench/run/keygate-keys.txt
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keygate/digest.h"
#include "keygate/instance.h"
#include "keygate/keyfmt.h"
#include "keygate/store.h"

#define SEED_MAX_KEYS 10000000L
#define SEED_BATCH 2000 /* keys per transaction (a record is about 6 KiB) */

static void
usage(void)
{
    fprintf(stderr, "usage: kg_bench_seed -c CONFIG -n COUNT -o KEYS_FILE [-u UNKNOWN_FILE]\n"
                    "       kg_bench_seed -c CONFIG -i KEYS_FILE\n"
                    "  inserts COUNT new keys into the store named by CONFIG and writes\n"
                    "  their plaintext, one per line, to KEYS_FILE (mode 0600, replaced);\n"
                    "  -u: also write one well-formed key that is not in the store;\n"
                    "  -i: insert the keys of KEYS_FILE (one per line, as -o wrote them)\n"
                    "  instead of new ones\n");
}

/* Creates (or truncates) path with mode 0600: the files hold usable keys. */
static FILE *
open_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f;

    if (fd < 0)
        return NULL;
    f = fdopen(fd, "w");
    if (f == NULL)
        close(fd);
    return f;
}

/* Writes one key that has the configured prefix and a valid checksum but was
 * never inserted. A 256-bit random body makes a collision with a stored key
 * impossible in practice. */
static int
write_unknown(const char *path, const char *prefix)
{
    struct kg_err err = {{0}};
    char key[KG_KEY_MAX];
    FILE *f = NULL;
    int status = 1;

    if (kg_keyfmt_generate(prefix, key, &err) != KG_OK) {
        fprintf(stderr, "kg_bench_seed: %s\n", err.msg);
        goto cleanup;
    }
    f = open_private(path);
    if (f == NULL || fprintf(f, "%s\n", key) < 0) {
        fprintf(stderr, "kg_bench_seed: %s: %s\n", path, strerror(errno));
        goto cleanup;
    }
    status = 0;
cleanup:
    sodium_memzero(key, sizeof(key));
    if (f != NULL && fclose(f) != 0 && status == 0) {
        fprintf(stderr, "kg_bench_seed: %s: %s\n", path, strerror(errno));
        status = 1;
    }
    return status;
}

static void
report_line(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "%s\n", line);
}

/* Fills rec for the plaintext key[0..len); inserted by the batch. */
static void
fill_rec(struct kg_instance *inst, int64_t now, long i, const char *key, size_t len,
         struct kg_key_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
    kg_keyfmt_new_id("key", rec->id);
    snprintf(rec->name, sizeof(rec->name), "bench-%ld", i);
    kg_keyfmt_display(key, len, rec->prefix, rec->last4);
    kg_digest_compute(inst->secret, key, len, rec->digest);
    memcpy(rec->tenant, "bench", sizeof("bench"));
    /* Scopes, so X-Keygate-Scopes carries a value upstream, as nginx-key's and
     * haproxy-key's configs send it (bench/conf). */
    memcpy(rec->scopes, "read:items,write:items", sizeof("read:items,write:items"));
    rec->created_at = now;
    rec->quota_limit = -1;
    memcpy(rec->metadata, "{}", 3);
}

/* The next key of a -i file into key (KG_KEY_MAX bytes): 1 read, 0 at the
 * end, -1 for a line that is not a key of this store's prefix. */
static int
read_key(FILE *in, const char *prefix, long line, char *key)
{
    char buf[KG_KEY_MAX + 2];
    size_t len, plen = strlen(prefix);

    if (fgets(buf, sizeof(buf), in) == NULL)
        return 0;
    len = strcspn(buf, "\n");
    if (buf[len] == '\n')
        buf[len] = '\0';
    else if (!feof(in))
        len = sizeof(buf); /* longer than any key */
    if (len < plen || len >= KG_KEY_MAX || strncmp(buf, prefix, plen) != 0 ||
        !kg_keyfmt_check(buf, len)) {
        fprintf(stderr, "kg_bench_seed: line %ld: not a key with prefix %s\n", line, prefix);
        sodium_memzero(buf, sizeof(buf));
        return -1;
    }
    memcpy(key, buf, len + 1);
    sodium_memzero(buf, sizeof(buf));
    return 1;
}

int
main(int argc, char **argv)
{
    const char *config_path = NULL, *keys_path = NULL, *unknown_path = NULL, *in_path = NULL;
    struct kg_instance *inst = NULL;
    struct kg_key_rec *rec = NULL;
    struct kg_err err = {{0}};
    enum kg_status rc = KG_EINVAL;
    char key[KG_KEY_MAX];
    char *end = NULL;
    long count = -1, i = 0;
    bool count_given = false;
    FILE *out = NULL, *in = NULL;
    int opt, status = 1;
    struct timespec t0, t1;
    int64_t now;

    while ((opt = getopt(argc, argv, "c:n:o:u:i:h")) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'n':
            count_given = true;
            errno = 0;
            count = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || count < 1 || count > SEED_MAX_KEYS)
                count = -1;
            break;
        case 'o':
            keys_path = optarg;
            break;
        case 'u':
            unknown_path = optarg;
            break;
        case 'i':
            in_path = optarg;
            break;
        default:
            usage();
            return 2;
        }
    }
    /* Either new keys (-n, -o, -u) or the keys of a file (-i), never both. */
    if (config_path == NULL || optind != argc ||
        (in_path == NULL && (keys_path == NULL || count < 0)) ||
        (in_path != NULL && (keys_path != NULL || unknown_path != NULL || count_given))) {
        usage();
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "kg_bench_seed: libsodium failed to initialise\n");
        return 1;
    }
    rec = calloc(SEED_BATCH, sizeof(*rec));
    if (rec == NULL) {
        fprintf(stderr, "kg_bench_seed: out of memory\n");
        goto cleanup;
    }
    rc = kg_instance_open(config_path, report_line, NULL, &inst, &err);
    if (rc != KG_OK) {
        fprintf(stderr, "kg_bench_seed: %s\n", err.msg);
        status = rc == KG_EINVAL ? 2 : 1;
        goto cleanup;
    }
    /* A benchmark store can always be seeded again, so an fsync per key buys nothing. */
    rc = kg_store_set_durable(inst->store, false, &err);
    if (rc != KG_OK) {
        fprintf(stderr, "kg_bench_seed: %s\n", err.msg);
        goto cleanup;
    }
    if (in_path != NULL) {
        in = fopen(in_path, "re");
        if (in == NULL) {
            fprintf(stderr, "kg_bench_seed: %s: %s\n", in_path, strerror(errno));
            goto cleanup;
        }
    } else {
        out = open_private(keys_path);
        if (out == NULL) {
            fprintf(stderr, "kg_bench_seed: %s: %s\n", keys_path, strerror(errno));
            goto cleanup;
        }
    }

    clock_gettime(CLOCK_MONOTONIC, &t0);
    now = (int64_t)time(NULL);
    for (;;) {
        long n = 0;

        while (n < SEED_BATCH && (in != NULL || i + n < count)) {
            if (in != NULL) {
                int r = read_key(in, inst->cfg->key_prefix, i + n + 1, key);

                if (r < 0)
                    goto cleanup;
                if (r == 0)
                    break;
            } else {
                rc = kg_keyfmt_generate(inst->cfg->key_prefix, key, &err);
                if (rc != KG_OK) {
                    fprintf(stderr, "kg_bench_seed: key %ld: %s\n", i + n, err.msg);
                    goto cleanup;
                }
                if (fprintf(out, "%s\n", key) < 0) {
                    fprintf(stderr, "kg_bench_seed: %s: write failed\n", keys_path);
                    goto cleanup;
                }
            }
            fill_rec(inst, now, i + n, key, strlen(key), &rec[n]);
            n++;
        }
        if (n == 0)
            break;
        rc = kg_store_key_insert_batch(inst->store, rec, (size_t)n, &err);
        if (rc != KG_OK) {
            fprintf(stderr, "kg_bench_seed: keys %ld to %ld: %s\n", i, i + n - 1, err.msg);
            goto cleanup;
        }
        i += n;
    }
    if (in != NULL) {
        if (ferror(in) || i == 0) {
            fprintf(stderr, "kg_bench_seed: %s: %s\n", in_path,
                    ferror(in) ? "read failed" : "no keys");
            goto cleanup;
        }
    } else {
        if (fclose(out) != 0) {
            out = NULL;
            fprintf(stderr, "kg_bench_seed: %s: %s\n", keys_path, strerror(errno));
            goto cleanup;
        }
        out = NULL;
    }
    if (unknown_path != NULL && write_unknown(unknown_path, inst->cfg->key_prefix) != 0)
        goto cleanup;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "kg_bench_seed: %ld keys%s into %s in %.1f s (secret %s)\n", i,
            in != NULL ? " from a file" : "", inst->cfg->database,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            inst->secret_created ? "created" : "reused");
    status = 0;

cleanup:
    sodium_memzero(key, sizeof(key));
    if (out != NULL)
        fclose(out);
    if (in != NULL)
        fclose(in);
    kg_instance_close(inst);
    free(rec);
    return status;
}
