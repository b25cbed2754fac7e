/* http/front_signup.c - POST signup_path with `signup on`: the one request
 * of the public listener taken before the key decision. Its body is
 * collected here on the loop; the signup itself (manage/signup.c: Argon2id
 * and one store transaction) runs on the worker thread, which resumes the
 * request with the answer. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "http/front_int.h"
#include "keygate/log.h"
#include "keygate/reply.h"
#include "keygate/signup.h"
#include "keygate/throttle.h"
#include "keygate/timeutil.h"

void
front_signup_free(struct signup_job *j)
{
    if (j == NULL)
        return;
    if (j->body.data != NULL)
        sodium_memzero(j->body.data, j->body.len); /* it held a password */
    kg_jbody_cleanup(&j->body);
    kg_json_io_secret_free(j->secret);
    free(j);
}

/* Hands the answer back to the loop. After the resume the loop may complete
 * and free the request at any moment, so j is not touched again. */
static void
signup_finish(struct signup_job *j)
{
    struct MHD_Connection *conn = j->conn;
    struct kg_loop *loop = j->loop;

    /* After the resume the loop thread may free j: read it all first. */
    atomic_store(&j->done, true);
    MHD_resume_connection(conn);
    kg_loop_kick(loop);
}

/* jansson frees strings without wiping them; the password is wiped in place. */
static void
wipe_member(json_t *root, const char *name)
{
    json_t *v = json_object_get(root, name);

    if (json_is_string(v))
        sodium_memzero((char *)json_string_value(v), json_string_length(v));
}

static void
signup_answer_created(struct signup_job *j, const struct kg_user_rec *user, const char *key)
{
    json_t *doc = json_pack("{s:{s:s, s:s, s:s, s:s, s:s}, s:s}", "user", "uid", user->id,
                            "username", user->username, "email", user->email, "first_name",
                            user->first_name, "last_name", user->last_name, "api_key", "");

    j->secret = doc != NULL ? kg_json_io_dump_secret(doc, "api_key", key, &j->secret_len) : NULL;
    json_decref(doc);
    if (j->secret == NULL)
        kg_respond_error(j->cfg, 500, "Internal error", &j->err);
}

/* On the worker thread: decode, create the account (Argon2id and one store
 * transaction), load the new key into the cache so it works at once. */
static void
signup_run(struct kg_job *job, void *thread_ctx)
{
    struct signup_job *j = (struct signup_job *)job;
    const struct kg_config *cfg = j->cfg;
    struct kg_keys_ctx kc = {.store = thread_ctx, .secret = j->rt->secret, .cfg = cfg};
    struct kg_signup_req rq = {0};
    struct kg_jfield fields[KG_SIGNUP_FIELDS];
    size_t nfields = kg_signup_fields(&rq, fields);
    struct kg_user_rec *user = calloc(1, sizeof(*user));
    struct kg_key_rec *rec = calloc(1, sizeof(*rec));
    struct kg_err err = {{0}};
    json_t *root = NULL;
    char *key = NULL;
    enum kg_status rc = KG_ENOMEM;
    int64_t now = kg_time_now();

    if (user != NULL && rec != NULL)
        rc = kg_json_io_decode(j->body.data, j->body.len, fields, nfields, &root, &err);
    if (rc == KG_OK)
        rc = kg_signup_create(&kc, &rq, now, user, rec, &key, &err);
    if (root != NULL)
        wipe_member(root, "password");
    json_decref(root);
    switch (rc) {
    case KG_OK:
        if (kg_keycache_sync(j->rt->keys, thread_ctx, now, NULL, &err) != KG_OK)
            kg_log_warnx("signup: applying key changes: %s", err.msg);
        signup_answer_created(j, user, key);
        break;
    case KG_EINVAL:
        kg_respond_error(cfg, 400, err.msg, &j->err);
        break;
    case KG_ECONFLICT:
        kg_respond_error(cfg, 409, err.msg, &j->err);
        break;
    case KG_ENOTFOUND:
        kg_log_warnx("signup: %s (check signup_tenant)", err.msg);
        kg_respond_error(cfg, 503, "Signup is not available", &j->err);
        break;
    default:
        kg_log_warnx("signup: %s", err.msg[0] != '\0' ? err.msg : kg_status_str(rc));
        kg_respond_error(cfg, 500, "Internal error", &j->err);
        break;
    }
    kg_keys_key_free(key);
    free(user);
    free(rec);
    signup_finish(j);
}

static void
signup_cancel(struct kg_job *job)
{
    struct signup_job *j = (struct signup_job *)job;

    kg_respond_error(j->cfg, 503, "Service is shutting down", &j->err);
    signup_finish(j);
}

/* First call of a signup request: the per-IP limit, then the framing of the
 * body; the body itself is collected by the next calls. */
enum MHD_Result
front_signup_start(struct kg_req *req, struct MHD_Connection *conn, const struct scan *sc)
{
    struct kg_runtime *rt = kg_loop_runtime(req->loop);
    struct kg_answer ans;
    const char *ct;
    int64_t retry_ms = 0;

    /* Every attempt counts, good or bad: the limit is what stops password
     * and e-mail guessing through this endpoint. */
    if (rt->signup_limit != NULL &&
        !kg_throttle_take(rt->signup_limit, req->remote, kg_time_mono_ms(), &retry_ms)) {
        kg_respond_error(req->cfg, 429, "Too many signup requests", &ans);
        ans.retry_after_s = kg_throttle_retry_after_s(retry_ms);
        return front_send_answer(req, conn, &ans);
    }
    ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    if (!kg_json_io_content_type_ok(ct))
        return front_send_error(req, conn, 415, "Content-Type must be application/json");
    if (sc->hy.content_length > KG_JSON_BODY_MAX)
        return front_send_error(req, conn, 413, "Request body is larger than 64 KiB");
    req->signup = calloc(1, sizeof(*req->signup));
    if (req->signup == NULL)
        return front_send_error(req, conn, 500, "Internal error");
    req->signup->job.run = signup_run;
    req->signup->job.cancel = signup_cancel;
    req->signup->rt = rt;
    req->signup->cfg = req->cfg;
    req->signup->conn = conn;
    req->signup->loop = req->loop;
    kg_jbody_init(&req->signup->body);
    req->phase = REQ_SIGNUP_BODY;
    return MHD_YES;
}

/* Later calls: collect the body; at its end, queue the job and suspend. */
enum MHD_Result
front_signup_continue(struct kg_req *req, struct MHD_Connection *conn, const char *upload_data,
                      size_t *upload_data_size)
{
    struct signup_job *j = req->signup;
    struct kg_runtime *rt = kg_loop_runtime(req->loop);

    if (req->phase == REQ_SIGNUP_BODY) {
        if (*upload_data_size > 0) {
            kg_jbody_feed(&j->body, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (j->body.too_big)
            return front_send_error(req, conn, 413, "Request body is larger than 64 KiB");
        if (j->body.failed)
            return front_send_error(req, conn, 500, "Internal error");
        req->phase = REQ_SIGNUP_WAIT;
        /* Suspended before the job is queued, so the worker's resume can
         * never come first. */
        MHD_suspend_connection(conn);
        if (rt->worker == NULL || kg_worker_submit(rt->worker, &j->job) != KG_OK) {
            kg_respond_error(req->cfg, 503, "Signup is busy, try again later", &j->err);
            signup_finish(j);
        }
        return MHD_YES;
    }
    *upload_data_size = 0;
    if (!atomic_load(&j->done))
        return MHD_YES;
    req->phase = REQ_ANSWERED;
    if (j->secret != NULL) {
        struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(
            j->secret_len, j->secret, kg_json_io_secret_free);
        const struct kg_reply_hdrs h = {.no_store = true, .request_id = req->request_id};

        if (resp == NULL)
            return MHD_NO;
        j->secret = NULL; /* the response owns it now */
        req->status = 201;
        req->bytes_sent = (int64_t)j->secret_len;
        return kg_reply_json(conn, 201, resp, &h);
    }
    return front_send_answer(req, conn, &j->err);
}
