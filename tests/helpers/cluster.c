/* helpers/cluster.c - several instances on one database (cluster.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers/cluster.h"

void
kt_cluster_secret_path(const struct kt_cluster *c, char *out, size_t cap)
{
    snprintf(out, cap, "%s/secret", c->dir);
}

int
kt_cluster_up(struct kt_cluster *c, struct kt_pg *pg, const char *db, int n, const char *extra)
{
    char cfg[1024], secret[96];

    memset(c, 0, sizeof(*c));
    if (n < 1 || n > KT_CLUSTER_MAX || kt_pg_createdb(pg, db, c->url, sizeof(c->url)) != 0)
        return -1;
    snprintf(c->dir, sizeof(c->dir), "/tmp/kg-cluster-test-XXXXXX");
    if (mkdtemp(c->dir) == NULL) {
        c->dir[0] = '\0';
        return -1;
    }
    kt_cluster_secret_path(c, secret, sizeof(secret));
    c->up = kt_upstream_start();
    if (c->up == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg), "upstream %s\ndatabase \"%s\"\nsecret_file \"%s\"\n%s",
             kt_upstream_url(c->up), c->url, secret, extra != NULL ? extra : "");
    for (c->n = 0; c->n < n; c->n++) {
        c->d[c->n] = kt_daemon_new(cfg);
        if (c->d[c->n] == NULL)
            return -1;
    }
    /* The first command on the empty store makes the shared secret. */
    if (!kt_daemon_key_cli(c->d[0], (const char *const[]){"init", "--json", NULL}, &c->root))
        return -1;
    for (int i = 0; i < n; i++) {
        kt_daemon_remember_key(c->d[i], c->root.key);
        if (!kt_daemon_start(c->d[i]))
            return -1;
    }
    return 0;
}

void
kt_cluster_down(struct kt_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        kt_daemon_free(c->d[i]);
    kt_upstream_stop(c->up);
    kt_key_cleanup(&c->root);
    if (c->dir[0] != '\0') {
        char secret[96];

        kt_cluster_secret_path(c, secret, sizeof(secret));
        unlink(secret);
        rmdir(c->dir);
    }
    memset(c, 0, sizeof(*c));
}
