/* http/front_int.h - what the public listener's files share: the request
 * (struct kg_req, owned by front.c from its request line to its completion),
 * the facts of one pass over its headers, and the answers front.c sends.
 * front_signup.c (POST signup_path) and front_fwdauth.c (mode forward_auth)
 * are the parts of the listener that are not every request's. */
#ifndef KEYGATE_HTTP_FRONT_INT_H
#define KEYGATE_HTTP_FRONT_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <microhttpd.h>
#include "keygate/accesslog.h"
#include "keygate/clientip.h"
#include "keygate/config.h"
#include "keygate/credential.h"
#include "keygate/headers.h"
#include "keygate/hygiene.h"
#include "keygate/keyreserve.h"
#include "keygate/json_io.h"
#include "keygate/keycache.h"
#include "keygate/loop.h"
#include "keygate/metrics.h"
#include "keygate/relay.h"
#include "keygate/respond.h"
#include "keygate/worker.h"

#define KG_CONN_TOKENS_MAX 1024
#define KG_XFF_MAX 2048

enum req_phase {
    REQ_NEW = 0,
    REQ_DEFERRED,
    REQ_PROXYING,
    REQ_ANSWERED,
    REQ_ANSWERED_MID_BODY, /* answered on the socket itself: read the rest, then close */
    REQ_SIGNUP_BODY,       /* reading a signup body */
    REQ_SIGNUP_WAIT,       /* suspended while the worker runs the signup */
    REQ_KEYWATCH,          /* suspended while the key watch asks the store (keywatch.h) */
    REQ_LIMITWAIT,         /* suspended while the shared limiter asks Redis (limiter.h) */
    REQ_CONSOLE_BODY,      /* reading a console API request's body */
    REQ_CONSOLE_WAIT,      /* suspended while the worker answers a console API request */
};

struct console_job;

/* A signup in flight: the body, then the worker's answer. Owned by its
 * kg_req; the worker touches it only between submit and resume. */
struct signup_job {
    struct kg_job job; /* first member: the worker hands this pointer back */
    struct kg_runtime *rt;
    const struct kg_config *cfg; /* the request's, borrowed: the job ends before the request */
    struct kg_loop *loop;
    struct MHD_Connection *conn;
    struct kg_jbody body;
    _Atomic bool done;
    struct kg_answer err; /* the answer when secret is NULL */
    char *secret;         /* 201 body holding the key (json_io dump_secret) */
    size_t secret_len;
};

struct kg_req {
    struct kg_loop *loop;
    /* The config this request runs under, from its request line to its
     * completion, whatever a reload publishes meanwhile (kg_cfgswap). */
    const struct kg_config *cfg;
    enum req_phase phase;
    char *uri;     /* raw request target as received */
    char *uri_raw; /* forward_auth: uri as received while uri holds the original target */
    struct MHD_Connection *watch_conn; /* REQ_KEYWATCH, _LIMITWAIT: what the answer resumes */
    bool rechecked;                    /* the key watch was asked already */
    /* The shared limiter's question and, once limit_waited, its answer. */
    struct kg_limit_wait limit_wait;
    bool limit_waited;
    char *path;        /* normalised path */
    const char *query; /* into uri, after '?', or NULL */
    struct kg_exchange *x;
    struct kg_answer *deferred; /* our answer, sent once the request is read */
    /* mode forward_auth: the 200 to send once the request is read */
    struct MHD_Response *allow;
    struct signup_job *signup;
    struct console_job *console;
    bool has_body;
    bool body_done;
    bool deny_body_header; /* forward_auth: repeat our answer's body in X-Keygate-Deny-Body */
    char request_id[KG_REQUEST_ID_MAX];
    struct kg_rl_fields rl; /* rate-limit headers for whatever answer goes out */
    /* Credits to charge when the upstream's answer arrives with a 2xx: the
     * key's stat record (it outlives the snapshot released in first_call). */
    struct kg_keystat *charge_to;
    int64_t cost;
    /* credits_mode strict: the credits claimed at admission, spent with the
     * charge, given back when the request ends without one. */
    struct kg_credit_claim claim;
    /* keygate_requests_total: what this request counts as, not yet counted
     * (a proxied request counts when the upstream answers or fails). */
    enum kg_outcome outcome;
    /* The access log line, gathered as the request goes (request_logged). */
    int64_t t0_us;
    unsigned status, upstream_status; /* 0 until an answer is queued */
    int64_t bytes_sent;
    enum kg_outcome log_outcome;
    char method[KG_ACCESSLOG_METHOD_MAX];
    bool head; /* the request on this connection is a HEAD (forward_auth: the question) */
    char remote[KG_CLIENTIP_MAX];
    char key_id[KG_ID_MAX];
    char tenant[KG_ACCESSLOG_TENANT_MAX];
};

/* Facts gathered in one pass over the request headers. */
struct scan {
    const struct kg_config *cfg;
    struct kg_hygiene hy;
    struct kg_cred cred;
    char conn_tokens[KG_CONN_TOKENS_MAX];
    char xff[KG_XFF_MAX];
    const char *host;
    const char *fwd_proto, *fwd_host; /* X-Forwarded-Proto/-Host: believed from a trusted peer */
    const char *request_id;
    bool has_accept;
    size_t header_bytes;
    /* mode forward_auth: the original request, as the front proxy names it */
    const char *orig_method, *orig_uri; /* X-Original-Method, X-Original-URI (nginx) */
    const char *fwd_method, *fwd_uri;   /* X-Forwarded-Method, X-Forwarded-Uri (Traefik) */
    bool fa_repeated;                   /* one of them more than once */
    bool deny_body_header;              /* X-Keygate-Deny-Body: header (see send_answer) */
};

/* src into dst[cap], cut to cap - 1 bytes (the access log's fixed fields). */
static inline void
front_copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* front.c: the answers every part sends. */
void front_add_rl_headers(const struct kg_req *req, struct MHD_Response *resp);
enum MHD_Result front_send_answer(struct kg_req *req, struct MHD_Connection *conn,
                                  const struct kg_answer *ans);
enum MHD_Result front_send_error(struct kg_req *req, struct MHD_Connection *conn, unsigned status,
                                 const char *msg);
/* An HTTP token of at most 32 characters (RFC 9110 5.6.2). */
bool front_method_ok(const char *m);

/* front_signup.c: POST signup_path with `signup on`. */
enum MHD_Result front_signup_start(struct kg_req *req, struct MHD_Connection *conn,
                                   const struct scan *sc);
enum MHD_Result front_signup_continue(struct kg_req *req, struct MHD_Connection *conn,
                                      const char *upload_data, size_t *upload_data_size);
void front_signup_free(struct signup_job *j);

/* front_console.c: the web console under console_path with `console on`. */
bool front_console_owns(const struct kg_req *req, const char *method);
enum MHD_Result front_console_start(struct kg_req *req, struct MHD_Connection *conn,
                                    const char *method, const struct scan *sc);
enum MHD_Result front_console_continue(struct kg_req *req, struct MHD_Connection *conn,
                                       const char *upload_data, size_t *upload_data_size);
void front_console_free(struct console_job *j);

/* front_fwdauth.c: mode forward_auth. */
void front_fa_capture(struct scan *sc, const char *key, const char *value);
/* Makes the request the one the front proxy asks about (target and method,
 * in the log too); *own: it names none, the request is keygate's own. True
 * with *ret the 400/500 queued when the question is malformed. */
bool front_fa_take_original(struct kg_req *req, struct MHD_Connection *conn, const struct scan *sc,
                            const char **method, bool *own, enum MHD_Result *ret);
/* The allow: 200, empty body, who is asking. Deferred like front_send_answer(). */
enum MHD_Result front_fa_send_allow(struct kg_req *req, struct MHD_Connection *conn,
                                    const struct kg_keyent *key);

#endif
