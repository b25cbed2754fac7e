/* helpers/cluster.h - several keygate instances on one PostgreSQL
 * database and one secret file, in front of one upstream: the shape of
 * issue 15's tests (test_scale_out, test_credits_scale).
 *
 * kt_cluster_up() creates the database on pg, a private directory for the
 * shared secret_file, a loopback upstream and n daemons whose config is
 * that upstream, the database, the secret file and extra; runs `keygate
 * init --json` on the first (it makes the secret and the platform admin's
 * key, kept in root and remembered by every daemon for the leak check) and
 * starts them all. kt_cluster_down() frees the daemons (with their checks),
 * stops the upstream and removes the directory; on a zeroed struct it is a
 * no-op, so a teardown may call it after a failed setup.
 */
#ifndef KT_CLUSTER_H
#define KT_CLUSTER_H

#include "helpers/daemon.h"
#include "helpers/pgserver.h"
#include "helpers/upstream.h"

#define KT_CLUSTER_MAX 4

struct kt_cluster {
    struct kt_upstream *up;
    struct kt_daemon *d[KT_CLUSTER_MAX];
    int n;
    char dir[64]; /* the shared secret lives here */
    char url[256];
    struct kt_key root; /* `keygate init`: platform admin */
};

/* Returns 0, or -1 (c may then hold what was made: kt_cluster_down it). */
int kt_cluster_up(struct kt_cluster *c, struct kt_pg *pg, const char *db, int n, const char *extra);

void kt_cluster_down(struct kt_cluster *c);

/* The secret file's path, for a config of one more instance. */
void kt_cluster_secret_path(const struct kt_cluster *c, char *out, size_t cap);

#endif
