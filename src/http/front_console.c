/* http/front_console.c - the web console on the public listener with
 * `console on`: everything under console_path is keygate's own and never
 * proxied. The page's files (keygate/assets.h) are answered here on the
 * loop; an API request's body is collected here and the request itself
 * (console/selfservice.c: the store, Argon2id) runs on the worker thread,
 * which resumes the connection with the answer, as a signup does. Every
 * answer carries the page's security headers.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "http/front_int.h"
#include "keygate/assets.h"
#include "keygate/log.h"
#include "keygate/reply.h"
#include "keygate/selfservice.h"
#include "keygate/timeutil.h"

#define CSP "default-src 'self'; frame-ancestors 'none'"

/* Copies of what the worker reads: the connection's own strings are the
 * library's, and the job outlives the call that saw them. */
struct console_job {
    struct kg_job job; /* first member: the worker hands this pointer back */
    struct kg_runtime *rt;
    const struct kg_config *cfg; /* the request's, borrowed: the job ends before the request */
    struct kg_loop *loop;
    struct MHD_Connection *conn;
    struct kg_jbody body;
    _Atomic bool done;
    char *method, *path, *query, *content_type, *cookie, *csrf, *origin, *sfs, *host, *ip;
    bool tls;
    struct kg_console_answer ans;
};

void
front_console_free(struct console_job *j)
{
    if (j == NULL)
        return;
    if (j->body.data != NULL)
        sodium_memzero(j->body.data, j->body.len); /* may hold a password */
    kg_jbody_cleanup(&j->body);
    kg_selfservice_answer_cleanup(&j->ans);
    if (j->cookie != NULL)
        sodium_memzero(j->cookie, strlen(j->cookie));
    free(j->method);
    free(j->path);
    free(j->query);
    free(j->content_type);
    free(j->cookie);
    free(j->csrf);
    free(j->origin);
    free(j->sfs);
    free(j->host);
    free(j->ip);
    free(j);
}

bool
front_console_owns(const struct kg_req *req, const char *method)
{
    const struct kg_config *cfg = req->cfg;
    size_t n;

    (void)method;
    if (!cfg->console)
        return false;
    n = strlen(cfg->console_path);
    /* "/console" as well as "/console/…": the former is redirected. */
    return strncmp(req->path, cfg->console_path, n - 1) == 0 &&
           (req->path[n - 1] == '\0' || req->path[n - 1] == '/');
}

static void
security_headers(struct MHD_Response *resp, bool api)
{
    MHD_add_response_header(resp, "Content-Security-Policy", CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Cache-Control", api ? "no-store" : "no-cache");
}

static enum MHD_Result
queue(struct kg_req *req, struct MHD_Connection *conn, unsigned status, struct MHD_Response *resp)
{
    enum MHD_Result ret;

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    if (atomic_load(&kg_loop_runtime(req->loop)->draining))
        MHD_add_response_header(resp, "Connection", "close");
    req->phase = REQ_ANSWERED;
    req->status = status;
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* A JSON error with the console's headers. */
static enum MHD_Result
console_error(struct kg_req *req, struct MHD_Connection *conn, unsigned status, const char *msg,
              const char *allow)
{
    struct kg_answer ans;
    struct MHD_Response *resp;

    kg_respond_error(req->cfg, status, msg, &ans);
    resp = MHD_create_response_from_buffer(ans.body_len, ans.body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (allow != NULL)
        MHD_add_response_header(resp, "Allow", allow);
    security_headers(resp, true);
    req->bytes_sent = (int64_t)ans.body_len;
    /* A body we will not read: close rather than read it. */
    if (req->has_body)
        MHD_add_response_header(resp, "Connection", "close");
    return queue(req, conn, status, resp);
}

static enum MHD_Result
send_asset(struct kg_req *req, struct MHD_Connection *conn, const char *method, const char *name)
{
    const struct kg_asset *a = kg_assets_find(name);
    struct MHD_Response *resp;

    if (a == NULL)
        return console_error(req, conn, 404, "Not found", NULL);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return console_error(req, conn, 405, "Method not allowed", "GET, HEAD");
    resp = MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", a->content_type);
    security_headers(resp, false);
    req->bytes_sent = req->head ? 0 : (int64_t)a->len;
    return queue(req, conn, 200, resp);
}

static char *
dup_header(struct MHD_Connection *conn, const char *name, bool *failed)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
    char *c;

    if (v == NULL)
        return NULL;
    c = strdup(v);
    if (c == NULL)
        *failed = true;
    return c;
}

/* On the worker thread. After the resume the loop may free j at once. */
static void
console_finish(struct console_job *j)
{
    struct MHD_Connection *conn = j->conn;
    struct kg_loop *loop = j->loop;

    atomic_store(&j->done, true);
    MHD_resume_connection(conn);
    kg_loop_kick(loop);
}

static void
console_run(struct kg_job *job, void *thread_ctx)
{
    struct console_job *j = (struct console_job *)job;
    struct kg_runtime *rt = j->rt;
    const struct kg_console_env env = {.store = thread_ctx,
                                       .secret = rt->secret,
                                       .cfg = j->cfg,
                                       .keys = rt->keys,
                                       .throttles = {.ip_failures = rt->auth_failures,
                                                     .ip_cooldown = rt->auth_cooldown,
                                                     .login_failures = rt->login_failures,
                                                     .login_cooldown = rt->login_cooldown}};
    const struct kg_console_req rq = {.method = j->method,
                                      .path = j->path,
                                      .query = j->query,
                                      .body = j->body.data,
                                      .body_len = j->body.len,
                                      .content_type = j->content_type,
                                      .cookie = j->cookie,
                                      .csrf = j->csrf,
                                      .origin = j->origin,
                                      .sec_fetch_site = j->sfs,
                                      .host = j->host,
                                      .client_ip = j->ip,
                                      .tls = j->tls,
                                      .now = kg_time_now(),
                                      .now_ms = kg_time_mono_ms()};

    kg_selfservice_handle(&env, &rq, &j->ans);
    console_finish(j);
}

static void
console_cancel(struct kg_job *job)
{
    struct console_job *j = (struct console_job *)job;

    j->ans.status = 503;
    console_finish(j);
}

/* The first call: a redirect, a file, or an API request to collect. */
enum MHD_Result
front_console_start(struct kg_req *req, struct MHD_Connection *conn, const char *method,
                    const struct scan *sc)
{
    const struct kg_config *cfg = req->cfg;
    const char *sub = req->path + strlen(cfg->console_path);
    struct console_job *j;
    bool failed = false;

    req->outcome = KG_OUTCOME_NONE;
    if (req->path[strlen(cfg->console_path) - 1] == '\0') {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);

        if (resp == NULL)
            return MHD_NO;
        MHD_add_response_header(resp, "Location", cfg->console_path);
        security_headers(resp, false);
        return queue(req, conn, 308, resp);
    }
    if (!kg_selfservice_is_api(sub))
        return send_asset(req, conn, method, sub);
    if (sc->hy.content_length > KG_JSON_BODY_MAX)
        return console_error(req, conn, 413, "Request body is larger than 64 KiB", NULL);
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return console_error(req, conn, 500, "Internal error", NULL);
    req->console = j;
    j->job.run = console_run;
    j->job.cancel = console_cancel;
    j->rt = kg_loop_runtime(req->loop);
    j->cfg = cfg;
    j->conn = conn;
    j->loop = req->loop;
    j->tls = j->rt->tls != NULL;
    kg_jbody_init(&j->body);
    j->method = strdup(method);
    j->path = strdup(sub);
    j->query = req->query != NULL ? strdup(req->query) : NULL;
    j->ip = strdup(req->remote);
    failed = j->method == NULL || j->path == NULL || j->ip == NULL ||
             (req->query != NULL && j->query == NULL);
    j->content_type = dup_header(conn, "Content-Type", &failed);
    j->cookie = dup_header(conn, "Cookie", &failed);
    j->csrf = dup_header(conn, "X-CSRF-Token", &failed);
    j->origin = dup_header(conn, "Origin", &failed);
    j->sfs = dup_header(conn, "Sec-Fetch-Site", &failed);
    j->host = dup_header(conn, "Host", &failed);
    if (failed)
        return console_error(req, conn, 500, "Internal error", NULL);
    req->phase = REQ_CONSOLE_BODY;
    return MHD_YES;
}

static enum MHD_Result
send_api_answer(struct kg_req *req, struct MHD_Connection *conn)
{
    struct console_job *j = req->console;
    struct MHD_Response *resp;
    unsigned status = j->ans.status;

    if (j->ans.body == NULL)
        return console_error(req, conn, status == 503 ? 503 : 500,
                             status == 503 ? "Service is shutting down" : "Internal error", NULL);
    if (j->ans.body_secret) {
        resp = MHD_create_response_from_buffer_with_free_callback(j->ans.body_len, j->ans.body,
                                                                  kg_json_io_secret_free);
        if (resp != NULL) {
            j->ans.body = NULL; /* the response owns it now */
            j->ans.body_secret = false;
        }
    } else {
        resp = MHD_create_response_from_buffer(j->ans.body_len, j->ans.body, MHD_RESPMEM_MUST_COPY);
    }
    if (resp == NULL)
        return MHD_NO;
    req->bytes_sent = (int64_t)j->ans.body_len;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (j->ans.set_cookie[0] != '\0')
        MHD_add_response_header(resp, "Set-Cookie", j->ans.set_cookie);
    if (j->ans.retry_after_s > 0) {
        char ra[16];

        snprintf(ra, sizeof(ra), "%d", j->ans.retry_after_s);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    security_headers(resp, true);
    return queue(req, conn, status, resp);
}

enum MHD_Result
front_console_continue(struct kg_req *req, struct MHD_Connection *conn, const char *upload_data,
                       size_t *upload_data_size)
{
    struct console_job *j = req->console;
    struct kg_runtime *rt = kg_loop_runtime(req->loop);

    if (req->phase == REQ_CONSOLE_BODY) {
        if (*upload_data_size > 0) {
            kg_jbody_feed(&j->body, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (j->body.too_big)
            return console_error(req, conn, 413, "Request body is larger than 64 KiB", NULL);
        if (j->body.failed)
            return console_error(req, conn, 500, "Internal error", NULL);
        req->phase = REQ_CONSOLE_WAIT;
        /* Suspended before the job is queued: the resume can never come first. */
        MHD_suspend_connection(conn);
        if (rt->worker == NULL || kg_worker_submit(rt->worker, &j->job) != KG_OK) {
            j->ans.status = 503;
            console_finish(j);
        }
        return MHD_YES;
    }
    *upload_data_size = 0;
    if (!atomic_load(&j->done))
        return MHD_YES;
    if (j->ans.status == 503 && j->ans.body == NULL)
        return console_error(req, conn, 503, "The console is busy, try again later", NULL);
    return send_api_answer(req, conn);
}
