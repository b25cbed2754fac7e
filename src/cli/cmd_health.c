/* cli/cmd_health.c - `keygate healthcheck`: asks GET /readyz on admin_listen
 * and turns the answer into an exit status, so a container's HEALTHCHECK
 * or a compose healthcheck needs no curl in the image.
 *
 * Only the config is read: no database, no secret. A health probe runs every
 * few seconds, possibly as another user than the daemon, and must neither
 * take SQLite locks nor create a secret. Every failure is exit 1, usage and
 * config errors included: Docker reserves exit 2 of a health command, and
 * a probe that cannot even ask has found the service unhealthy all the same.
 *
 * With TLS on, the probe speaks https to loopback, where the certificate's
 * names (a public host name) cannot match 127.0.0.1. So it verifies neither
 * chain nor name but pins the public key of tls_certificate: only a server
 * holding the configured key passes. That needs no CA file, survives a
 * renewal that keeps the key, and fails while a renewed key is on disk but
 * not yet loaded (SIGHUP), which is worth knowing.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli_int.h"
#include "keygate/cli.h"
#include "keygate/config.h"
#include "keygate/tls.h"

/* Connect and whole exchange: the admin listener answers /readyz from
 * memory, so a daemon that needs longer than this is not healthy. */
#define HEALTH_TIMEOUT_MS 2000L
#define HEALTH_BODY_MAX 512

static const char health_usage[] =
    "usage: keygate healthcheck [-c FILE]\n"
    "\n"
    "Asks GET /readyz on admin_listen and exits 0 when the daemon answers 200\n"
    "(store open, keys loaded, not draining), else 1 with one line on stderr\n"
    "saying why. Reads only the config (same file and KEYGATE_* environment\n"
    "as keygate serve), never the database. A wildcard admin_listen (0.0.0.0,\n"
    "[::]) is asked on 127.0.0.1 or [::1]. With tls_certificate set it asks\n"
    "over https and accepts only the public key of that certificate.\n"
    "Meant for HEALTHCHECK in a container image and for orchestrators.\n"
    "\n"
    "  -c, --config FILE   config file\n"
    "\n"
    "exit status: 0 ready, 1 anything else (usage and config errors included)\n";

/* The config module's lines, as `keygate serve` prints them; counted so a
 * failed load that said nothing still gets a line. */
struct health_report {
    int lines;
};

static void
report_line(void *ctx, const char *line)
{
    struct health_report *r = ctx;

    /* The line may quote the file, which may hold anything: one line, no
     * terminal controls. */
    for (const char *p = line; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;

        fputc(c < 0x20 || c == 0x7f ? '?' : c, stderr);
    }
    fputc('\n', stderr);
    r->lines++;
}

/* "http://HOST:PORT/readyz" (https with TLS) for admin_listen, with a
 * wildcard address replaced by the loopback address of its family: a
 * listener on every address is reachable on loopback, and 0.0.0.0 is not a
 * destination. */
static enum kg_status
readyz_url(const char *admin_listen, bool tls, char *url, size_t cap, struct kg_err *err)
{
    const char *scheme = tls ? "https" : "http";
    char host[KG_ADDR_HOST_MAX];
    struct in6_addr a6;
    struct in_addr a4;
    int port;

    if (!kg_config_addr_parse(admin_listen, host, sizeof(host), &port))
        return kg_err_set(err, KG_EINVAL, "healthcheck: admin_listen \"%.60s\" is not host:port",
                          admin_listen);
    if (inet_pton(AF_INET, host, &a4) == 1) {
        if (a4.s_addr == htonl(INADDR_ANY))
            snprintf(host, sizeof(host), "127.0.0.1");
        snprintf(url, cap, "%s://%s:%d/readyz", scheme, host, port);
    } else if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_UNSPECIFIED(&a6))
            snprintf(host, sizeof(host), "::1");
        snprintf(url, cap, "%s://[%s]:%d/readyz", scheme, host, port);
    } else {
        snprintf(url, cap, "%s://%s:%d/readyz", scheme, host, port);
    }
    return KG_OK;
}

struct body {
    char buf[HEALTH_BODY_MAX];
    size_t len;
};

static size_t
keep_body(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    size_t len = size * n;
    size_t room = sizeof(b->buf) - 1 - b->len;

    /* Only the start matters ({"status":"draining"}); the rest is dropped,
     * not refused, so a long answer still yields its status code. */
    memcpy(b->buf + b->len, p, len < room ? len : room);
    b->len += len < room ? len : room;
    b->buf[b->len] = '\0';
    return len;
}

/* The "status" word of a /readyz answer ("starting", "draining"), or "" */
static void
status_word(const struct body *b, char *out, size_t cap)
{
    json_t *root = json_loadb(b->buf, b->len, 0, NULL);
    const char *s =
        json_is_object(root) ? json_string_value(json_object_get(root, "status")) : NULL;

    snprintf(out, cap, "%s", s != NULL ? s : "");
    json_decref(root);
}

/* pin: "sha256//…" of the daemon's public key over https, NULL over http. */
static enum kg_status
ask(const char *url, const char *pin, struct kg_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "", word[32];
    struct body body = {.len = 0};
    enum kg_status rc = KG_EIO;
    long status = 0;
    CURLcode cc;
    CURL *e;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return kg_err_set(err, KG_EIO, "healthcheck: libcurl failed to initialise");
    e = curl_easy_init();
    if (e == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "healthcheck: out of memory");
        goto cleanup;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    /* The admin listener is local: an http_proxy in the environment must
     * not send the probe elsewhere. */
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, HEALTH_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, HEALTH_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
    if (pin != NULL) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(e, CURLOPT_PINNEDPUBLICKEY, pin);
    }
    cc = curl_easy_perform(e);
    if (cc != CURLE_OK) {
        rc = kg_err_set(err, KG_EIO, "healthcheck: %s: %s", url,
                        errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc));
        goto cleanup;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200) {
        rc = KG_OK;
        goto cleanup;
    }
    status_word(&body, word, sizeof(word));
    if (word[0] != '\0')
        rc = kg_err_set(err, KG_EIO, "healthcheck: %s answered %ld (%s)", url, status, word);
    else
        rc = kg_err_set(err, KG_EIO, "healthcheck: %s answered %ld", url, status);
cleanup:
    curl_easy_cleanup(e);
    curl_global_cleanup();
    return rc;
}

int
kg_cli_healthcheck(int argc, char **argv)
{
    struct health_report reported = {0};
    struct kg_config *cfg = NULL;
    struct kg_cli_args a = {0};
    struct kg_err err = {{0}};
    const char *path;
    char url[KG_ADDR_HOST_MAX + 32], pin[80];
    bool tls;
    enum kg_status rc;
    int ex;

    ex = kg_cli_parse_or_help("healthcheck", health_usage, argc, argv, NULL, 0, &a);
    if (ex >= 0)
        return ex == KG_CLI_EXIT_OK ? KG_CLI_EXIT_OK : KG_CLI_EXIT_FAIL;
    path = a.config != NULL ? a.config : kg_config_default_path();
    rc = kg_config_load(path, report_line, &reported, &cfg);
    if (rc != KG_OK) {
        if (reported.lines == 0) {
            kg_err_set(&err, KG_EIO, "healthcheck: configuration has errors");
            kg_cli_fail(KG_EIO, &err);
        }
        ex = KG_CLI_EXIT_FAIL;
        goto cleanup;
    }
    if (strcmp(cfg->admin_listen, "off") == 0) {
        kg_err_set(&err, KG_EIO,
                   "healthcheck: admin_listen is off (config %s): there is no /readyz to ask",
                   cfg->path);
        ex = kg_cli_fail(KG_EIO, &err);
        goto cleanup;
    }
    tls = cfg->tls_certificate != NULL;
    rc = readyz_url(cfg->admin_listen, tls, url, sizeof(url), &err);
    if (rc == KG_OK && tls)
        rc = kg_tls_pin(cfg->tls_certificate, pin, sizeof(pin), &err);
    if (rc == KG_OK)
        rc = ask(url, tls ? pin : NULL, &err);
    /* Not kg_cli_fail()'s 2 for KG_EINVAL: every failure of a probe is 1. */
    if (rc != KG_OK)
        kg_cli_fail(KG_EIO, &err);
    ex = rc == KG_OK ? KG_CLI_EXIT_OK : KG_CLI_EXIT_FAIL;
cleanup:
    kg_config_free(cfg);
    return ex;
}
