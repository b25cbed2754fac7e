/* helpers/upstream.c - the stub upstream: echo, slow, hang and big answers,
 * and a record of every request target it saw. See upstream.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "helpers/http.h"
#include "helpers/server.h"
#include "helpers/upstream.h"

#define BIG_BLOCK (64 * 1024)
#define HANG_MAX_MS 60000L
/* Request bodies kept for kt_upstream_request(); the length counts them all. */
#define SEEN_BODY_MAX (64 * 1024)

struct kt_upstream {
    struct MHD_Daemon *d;
    int port;
    char url[64];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    long slow_ms;
    size_t held_slow, held_hang;
    char **targets;
    size_t ntargets, cap;
    char **seen; /* kt_upstream_request(): whole requests, in the order completed */
    size_t nseen, seen_cap;
};

/* One request, from its request line to its completion. */
struct treq {
    struct kt_upstream *up;
    char *target;
    bool started;
    uint64_t body_len;
    uint64_t body_hash;
    char *body; /* the first SEEN_BODY_MAX bytes */
};

/* Appends s (taken over; NULL is dropped) to a list guarded by up->mu. */
static void
append(struct kt_upstream *up, char ***list, size_t *n, size_t *cap, char *s)
{
    pthread_mutex_lock(&up->mu);
    if (*n == *cap) {
        size_t c = *cap > 0 ? *cap * 2 : 64;
        char **t = realloc(*list, c * sizeof(*t));

        if (t != NULL) {
            *list = t;
            *cap = c;
        }
    }
    if (s != NULL && *n < *cap)
        (*list)[(*n)++] = s;
    else
        free(s);
    pthread_mutex_unlock(&up->mu);
}

static void
record(struct kt_upstream *up, const char *target)
{
    append(up, &up->targets, &up->ntargets, &up->cap, strdup(target));
}

struct seen_text {
    char *p;
    size_t len;
    FILE *f;
};

static enum MHD_Result
seen_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size, const char *value,
            size_t value_size)
{
    FILE *f = cls;

    (void)kind;
    fwrite(key, 1, key_size, f);
    fputs(": ", f);
    if (value != NULL)
        fwrite(value, 1, value_size, f);
    fputs("\r\n", f);
    return MHD_YES;
}

/* The whole request as this stub received it, for kt_upstream_request(). */
static void
record_request(struct kt_upstream *up, struct MHD_Connection *conn, const char *method,
               const char *version, const struct treq *r)
{
    struct seen_text t = {0};

    t.f = open_memstream(&t.p, &t.len);
    if (t.f == NULL)
        return;
    fprintf(t.f, "%s %s %s\r\n", method, r->target, version);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, seen_header, t.f);
    fputs("\r\n", t.f);
    if (r->body != NULL)
        fwrite(r->body, 1, r->body_len < SEEN_BODY_MAX ? (size_t)r->body_len : SEEN_BODY_MAX, t.f);
    if (r->body_len > SEEN_BODY_MAX)
        fprintf(t.f, "[... %" PRIu64 " bytes in all]", r->body_len);
    if (fclose(t.f) != 0) {
        free(t.p);
        return;
    }
    append(up, &up->seen, &up->nseen, &up->seen_cap, t.p);
}

static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct kt_upstream *up = cls;
    struct treq *r = calloc(1, sizeof(*r));

    (void)conn;
    if (r == NULL)
        return NULL;
    r->up = up;
    r->target = strdup(uri != NULL ? uri : "");
    r->body_hash = KT_HTTP_HASH_INIT;
    record(up, r->target != NULL ? r->target : "");
    return r;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct treq *r = *req_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (r == NULL)
        return;
    free(r->target);
    free(r->body);
    free(r);
    *req_cls = NULL;
}

/* Holds the calling connection thread for ms milliseconds, or until the
 * stub stops, counted in *held meanwhile. Returns false when it stopped. */
static bool
hold(struct kt_upstream *up, long ms, size_t *held)
{
    struct timespec until;
    bool stopped;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&up->mu);
    (*held)++;
    while (!up->stopping && pthread_cond_timedwait(&up->cv, &up->mu, &until) != ETIMEDOUT)
        ;
    (*held)--;
    stopped = up->stopping;
    pthread_mutex_unlock(&up->mu);
    return !stopped;
}

static bool
starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static enum MHD_Result
queue(struct MHD_Connection *conn, unsigned status, struct MHD_Response *resp)
{
    enum MHD_Result ret;

    if (resp == NULL)
        return MHD_NO;
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

struct big {
    uint64_t total;
};

static ssize_t
big_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    const struct big *b = cls;

    if (pos >= b->total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (max > b->total - pos)
        max = (size_t)(b->total - pos);
    kt_http_pattern(pos, buf, max);
    return (ssize_t)max;
}

static enum MHD_Result
answer_big(struct MHD_Connection *conn)
{
    const char *n = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "n");
    struct big *b = malloc(sizeof(*b));
    struct MHD_Response *resp;

    if (b == NULL)
        return MHD_NO;
    b->total = n != NULL ? strtoull(n, NULL, 10) : 0;
    resp = MHD_create_response_from_callback(b->total, BIG_BLOCK, big_reader, b, free);
    if (resp == NULL) {
        free(b);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
    return queue(conn, 200, resp);
}

static json_t *
jstr(const char *s, size_t len)
{
    json_t *j = s != NULL ? json_stringn(s, len) : json_null();

    return j != NULL ? j : json_string("<not utf-8>");
}

static enum MHD_Result
add_header_pair(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                const char *value, size_t value_size)
{
    json_t *pair = json_array();

    (void)kind;
    json_array_append_new(pair, jstr(key, key_size));
    json_array_append_new(pair, jstr(value, value_size));
    json_array_append_new(cls, pair);
    return MHD_YES;
}

/* The status a request asks for: a path segment pair /status/NNN (anywhere
 * in the path, so it fits under any route or cost rule) or an
 * X-Test-Status: NNN header; 200 without either. NNN is 200 to 599. */
static unsigned
wanted_status(struct MHD_Connection *conn, const char *target)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Test-Status");
    size_t path_len = strcspn(target, "?");
    const char *p = target;

    if (h != NULL && strlen(h) == 3 && h[0] >= '2' && h[0] <= '5' && h[1] >= '0' && h[1] <= '9' &&
        h[2] >= '0' && h[2] <= '9')
        return (unsigned)strtoul(h, NULL, 10);
    while ((p = strstr(p, "/status/")) != NULL && (size_t)(p - target) < path_len) {
        const char *d = p + 8;

        if ((size_t)(d + 3 - target) <= path_len && d[0] >= '2' && d[0] <= '5' && d[1] >= '0' &&
            d[1] <= '9' && d[2] >= '0' && d[2] <= '9' &&
            ((size_t)(d + 3 - target) == path_len || d[3] == '/'))
            return (unsigned)((d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0'));
        p++;
    }
    return 200;
}

static enum MHD_Result
answer_echo(struct MHD_Connection *conn, const char *method, const struct treq *r)
{
    unsigned status = wanted_status(conn, r->target);
    json_t *o = json_object(), *headers = json_array();
    struct MHD_Response *resp;
    char hash[17];
    char *body;

    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, add_header_pair, headers);
    snprintf(hash, sizeof(hash), "%016" PRIx64, r->body_hash);
    json_object_set_new(o, "method", json_string(method));
    json_object_set_new(o, "target", jstr(r->target, strlen(r->target)));
    json_object_set_new(o, "headers", headers);
    json_object_set_new(o, "body_len", json_integer((json_int_t)r->body_len));
    json_object_set_new(o, "body_hash", json_string(hash));
    body = status == 204 || status == 304 ? strdup("") : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (body == NULL)
        return MHD_NO;
    resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    return queue(conn, status, resp);
}

static enum MHD_Result
handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
        const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls)
{
    struct kt_upstream *up = cls;
    struct treq *r = *req_cls;
    long slow_ms;

    (void)url; /* decoded by the library; the raw target is what the tests check */
    if (r == NULL || r->target == NULL)
        return MHD_NO;
    if (!r->started) {
        r->started = true;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (r->body_len < SEEN_BODY_MAX) {
            size_t n = SEEN_BODY_MAX - (size_t)r->body_len;

            if (r->body == NULL)
                r->body = malloc(SEEN_BODY_MAX);
            if (r->body != NULL)
                memcpy(r->body + r->body_len, upload_data,
                       n < *upload_data_size ? n : *upload_data_size);
        }
        r->body_len += *upload_data_size;
        r->body_hash = kt_http_hash(r->body_hash, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    record_request(up, conn, method, version, r);
    if (starts_with(r->target, "/hang")) {
        hold(up, HANG_MAX_MS, &up->held_hang);
        return MHD_NO;
    }
    if (starts_with(r->target, "/slow")) {
        pthread_mutex_lock(&up->mu);
        slow_ms = up->slow_ms;
        pthread_mutex_unlock(&up->mu);
        if (!hold(up, slow_ms, &up->held_slow))
            return MHD_NO;
    }
    if (starts_with(r->target, "/big"))
        return answer_big(conn);
    return answer_echo(conn, method, r);
}

struct kt_upstream *
kt_upstream_start(void)
{
    struct kt_upstream *up = calloc(1, sizeof(*up));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    const union MHD_DaemonInfo *info;

    if (up == NULL)
        return NULL;
    pthread_mutex_init(&up->mu, NULL);
    pthread_cond_init(&up->cv, NULL);
    up->slow_ms = 2000;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    up->d = MHD_start_daemon(
        MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
        NULL, handler, up, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_URI_LOG_CALLBACK, on_uri, up,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, up, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(256 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)256, MHD_OPTION_END);
    if (up->d == NULL) {
        fprintf(stderr, "upstream: MHD_start_daemon failed\n");
        kt_upstream_stop(up);
        return NULL;
    }
    info = MHD_get_daemon_info(up->d, MHD_DAEMON_INFO_BIND_PORT);
    up->port = info != NULL ? info->port : 0;
    if (up->port == 0) {
        fprintf(stderr, "upstream: no port\n");
        kt_upstream_stop(up);
        return NULL;
    }
    snprintf(up->url, sizeof(up->url), "http://127.0.0.1:%d", up->port);
    return up;
}

void
kt_upstream_stop(struct kt_upstream *up)
{
    if (up == NULL)
        return;
    pthread_mutex_lock(&up->mu);
    up->stopping = true;
    pthread_cond_broadcast(&up->cv);
    pthread_mutex_unlock(&up->mu);
    if (up->d != NULL)
        MHD_stop_daemon(up->d);
    kt_upstream_reset(up);
    free(up->targets);
    free(up->seen);
    pthread_cond_destroy(&up->cv);
    pthread_mutex_destroy(&up->mu);
    free(up);
}

int
kt_upstream_port(const struct kt_upstream *up)
{
    return up->port;
}

const char *
kt_upstream_url(const struct kt_upstream *up)
{
    return up->url;
}

void
kt_upstream_set_slow_ms(struct kt_upstream *up, long ms)
{
    pthread_mutex_lock(&up->mu);
    up->slow_ms = ms;
    pthread_mutex_unlock(&up->mu);
}

size_t
kt_upstream_count(struct kt_upstream *up)
{
    return kt_server_count(&up->mu, &up->ntargets);
}

size_t
kt_upstream_count_prefix(struct kt_upstream *up, const char *prefix)
{
    size_t n = 0;

    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->ntargets; i++)
        if (starts_with(up->targets[i], prefix))
            n++;
    pthread_mutex_unlock(&up->mu);
    return n;
}

bool
kt_upstream_saw(struct kt_upstream *up, const char *needle)
{
    bool saw = false;

    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->ntargets && !saw; i++)
        saw = strcasestr(up->targets[i], needle) != NULL;
    pthread_mutex_unlock(&up->mu);
    return saw;
}

size_t
kt_upstream_held_slow(struct kt_upstream *up)
{
    return kt_server_count(&up->mu, &up->held_slow);
}

size_t
kt_upstream_held_hang(struct kt_upstream *up)
{
    return kt_server_count(&up->mu, &up->held_hang);
}

char *
kt_upstream_targets(struct kt_upstream *up)
{
    size_t len = 1;
    char *out, *p;

    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->ntargets; i++)
        len += strlen(up->targets[i]) + 1;
    out = malloc(len);
    if (out != NULL) {
        p = out;
        for (size_t i = 0; i < up->ntargets; i++)
            p += sprintf(p, "%s\n", up->targets[i]);
        *p = '\0';
    }
    pthread_mutex_unlock(&up->mu);
    return out;
}

void
kt_upstream_reset(struct kt_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->ntargets; i++)
        free(up->targets[i]);
    up->ntargets = 0;
    for (size_t i = 0; i < up->nseen; i++)
        free(up->seen[i]);
    up->nseen = 0;
    pthread_mutex_unlock(&up->mu);
}

size_t
kt_upstream_request_count(struct kt_upstream *up)
{
    return kt_server_count(&up->mu, &up->nseen);
}

char *
kt_upstream_request(struct kt_upstream *up, size_t i)
{
    char *s = NULL;

    pthread_mutex_lock(&up->mu);
    if (i < up->nseen)
        s = strdup(up->seen[i]);
    pthread_mutex_unlock(&up->mu);
    return s;
}

/* ---- reading an echo answer ---- */

bool
kt_echo_parse(const char *body, size_t len, struct kt_echo *out)
{
    json_error_t jerr;
    json_t *root = body != NULL ? json_loadb(body, len, 0, &jerr) : NULL;

    out->root = root;
    return json_is_object(root) && json_is_string(json_object_get(root, "target")) &&
           json_is_array(json_object_get(root, "headers"));
}

const char *
kt_echo_method(const struct kt_echo *e)
{
    return json_string_value(json_object_get(e->root, "method"));
}

const char *
kt_echo_target(const struct kt_echo *e)
{
    return json_string_value(json_object_get(e->root, "target"));
}

/* The value of the idx-th header called name, or NULL. */
static const char *
nth_header(const struct kt_echo *e, const char *name, size_t idx)
{
    json_t *headers = json_object_get(e->root, "headers");
    size_t seen = 0;

    for (size_t i = 0; i < json_array_size(headers); i++) {
        json_t *pair = json_array_get(headers, i);
        const char *n = json_string_value(json_array_get(pair, 0));

        if (n != NULL && strcasecmp(n, name) == 0 && seen++ == idx) {
            const char *v = json_string_value(json_array_get(pair, 1));

            return v != NULL ? v : "";
        }
    }
    return NULL;
}

const char *
kt_echo_header(const struct kt_echo *e, const char *name)
{
    return nth_header(e, name, 0);
}

size_t
kt_echo_header_count(const struct kt_echo *e, const char *name)
{
    size_t n = 0;

    while (nth_header(e, name, n) != NULL)
        n++;
    return n;
}

long long
kt_echo_body_len(const struct kt_echo *e)
{
    json_t *v = json_object_get(e->root, "body_len");

    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

unsigned long long
kt_echo_body_hash(const struct kt_echo *e)
{
    const char *v = json_string_value(json_object_get(e->root, "body_hash"));

    return v != NULL ? strtoull(v, NULL, 16) : 0;
}

void
kt_echo_cleanup(struct kt_echo *e)
{
    json_decref(e->root);
    e->root = NULL;
}
