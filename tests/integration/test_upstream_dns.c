/* integration/test_upstream_dns.c - CTest: integration_test_upstream_dns.
 *
 * An upstream named by a host name that does not resolve yet when the first
 * request comes (an API container not started yet, a DNS record still on
 * its way) is looked up again: the requests meanwhile get the bad-gateway
 * JSON, the log says why, and once the name resolves the gateway proxies
 * without a reload. The native client once resolved a name only once, so a
 * single failed lookup (or a failed allocation in it) answered 502 until a
 * reload named another upstream.
 *
 * The test makes a mount namespace of its own (as root, or in a user
 * namespace) and binds its own files over /etc/hosts and /etc/nsswitch.conf
 * ("hosts: files": no DNS query ever leaves the machine); the daemon and
 * the CLI it starts inherit them, and the test adds the name to its hosts
 * file half-way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

#define NAME "kg-upstream-dns.invalid"
#define BAD_GATEWAY "{\"detail\": \"Upstream is unavailable.\"}"

/* mkstemp() templates: the files bound over /etc/hosts and /etc/nsswitch.conf. */
static char hosts_path[] = "/tmp/kg-dns-hosts-XXXXXX";
static char nss_path[] = "/tmp/kg-dns-nss-XXXXXX";

static bool
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w"); /* truncates: the bound inode stays the same */

    if (f == NULL)
        return false;
    fputs(text, f);
    return fclose(f) == 0;
}

static bool
write_proc(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY);
    bool ok;

    if (fd < 0)
        return false;
    ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok;
}

/* A mount namespace where /etc/hosts and /etc/nsswitch.conf are the
 * test's; as a user, inside a user namespace that maps the user to root. */
static bool
private_resolver(void)
{
    int fd;
    char map[64];
    uid_t uid = geteuid();
    gid_t gid = getegid();

    fd = mkstemp(hosts_path);
    if (fd < 0)
        return false;
    close(fd);
    fd = mkstemp(nss_path);
    if (fd < 0)
        return false;
    close(fd);
    if (!write_file(hosts_path, "127.0.0.1 localhost\n") || !write_file(nss_path, "hosts: files\n"))
        return false;
    if (uid == 0) {
        if (unshare(CLONE_NEWNS) != 0) {
            fprintf(stderr, "unshare(CLONE_NEWNS): %s\n", strerror(errno));
            return false;
        }
    } else {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
            fprintf(stderr, "unshare(CLONE_NEWUSER | CLONE_NEWNS): %s\n", strerror(errno));
            return false;
        }
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
        if (!write_proc("/proc/self/setgroups", "deny") || !write_proc("/proc/self/uid_map", map))
            return false;
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
        if (!write_proc("/proc/self/gid_map", map))
            return false;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount(hosts_path, "/etc/hosts", NULL, MS_BIND, NULL) != 0 ||
        mount(nss_path, "/etc/nsswitch.conf", NULL, MS_BIND, NULL) != 0) {
        fprintf(stderr, "bind mount over /etc: %s\n", strerror(errno));
        return false;
    }
    return true;
}

static void
test_a_name_that_resolves_later_is_looked_up_again(void **state)
{
    struct kt_upstream *up = kt_upstream_start();
    struct kt_daemon *d;
    struct kt_key key = {0};
    struct kt_http_resp r = {0};
    char cfg[256], hosts[128];
    long status = 0;
    int64_t t0, elapsed;
    size_t lookups;

    (void)state;
    assert_non_null(up);
    snprintf(cfg, sizeof(cfg), "upstream http://%s:%d\nworkers 1\n", NAME, kt_upstream_port(up));
    d = kt_daemon_new(cfg);
    assert_non_null(d);
    assert_true(kt_daemon_create_key(d, "dns", NULL, NULL, &key));
    assert_true(kt_daemon_start(d));

    /* Not resolvable: the bad-gateway answer, and the log names the lookup. */
    t0 = kt_mono_ms();
    assert_true(kt_http_get_key(kt_daemon_url(d, "/v1/items"), key.key, NULL, &r));
    assert_int_equal(r.status, 502);
    assert_string_equal(r.body, BAD_GATEWAY);
    kt_http_resp_cleanup(&r);
    assert_true(kt_daemon_wait_log(d, "cannot resolve " NAME, 1, 5000));
    /* More requests meanwhile: a failed lookup is tried again at most once
     * a second (it blocks the loop), not once per request. */
    for (int i = 0; i < 10; i++) {
        assert_true(kt_http_get_key(kt_daemon_url(d, "/v1/items"), key.key, NULL, &r));
        assert_int_equal(r.status, 502);
        kt_http_resp_cleanup(&r);
    }
    elapsed = kt_mono_ms() - t0;
    lookups = kt_daemon_log_count(d, "cannot resolve " NAME);
    if (lookups > 1 + (size_t)(elapsed / 1000))
        fail_msg("%zu failed lookups in %lld ms: more than one a second", lookups,
                 (long long)elapsed);
    assert_int_equal(kt_upstream_count(up), 0);

    /* The name appears: within a few seconds, with no reload, it proxies. */
    snprintf(hosts, sizeof(hosts), "127.0.0.1 localhost\n127.0.0.1 %s\n", NAME);
    assert_true(write_file(hosts_path, hosts));
    for (int64_t deadline = kt_mono_ms() + 10000; kt_mono_ms() < deadline; kt_sleep_ms(100)) {
        assert_true(kt_http_get_key(kt_daemon_url(d, "/v1/items"), key.key, NULL, &r));
        status = r.status;
        kt_http_resp_cleanup(&r);
        if (status == 200)
            break;
        assert_int_equal(status, 502);
    }
    assert_int_equal(status, 200);
    assert_true(kt_upstream_count(up) >= 1);

    assert_int_equal(kt_daemon_stop(d), 0);
    kt_key_cleanup(&key);
    kt_daemon_free(d);
    kt_upstream_stop(up);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_name_that_resolves_later_is_looked_up_again),
    };
    int rc;

    /* Before any thread: unshare(CLONE_NEWUSER) wants a single thread. */
    if (!private_resolver()) {
        fprintf(stderr, "test_upstream_dns: cannot make a private /etc/hosts (needs root or "
                        "unprivileged user namespaces)\n");
        unlink(hosts_path);
        unlink(nss_path);
        return 1;
    }
    kt_http_global_init();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    kt_http_global_cleanup();
    unlink(hosts_path);
    unlink(nss_path);
    return rc;
}
