/* keygate/reply.h - the one way both listeners send a JSON answer.
 *
 * keygate/respond.h makes an answer as data (status, JSON body, the
 * headers it asks for); this puts it on a libmicrohttpd connection with
 * Content-Type: application/json and whatever the listener adds: the
 * public listener its X-Request-Id and rate-limit headers, the admin
 * listener Cache-Control: no-store. Loop or admin thread; no allocation
 * beyond the library's response.
 */
#ifndef KEYGATE_REPLY_H
#define KEYGATE_REPLY_H

#include <stdbool.h>

#include <microhttpd.h>
#include "keygate/respond.h"

/* The headers of one answer besides Content-Type; every member optional. */
struct kg_reply_hdrs {
    const char *request_id;        /* X-Request-Id */
    const struct kg_rl_fields *rl; /* RateLimit-Policy, RateLimit, ... */
    const char *www_authenticate;
    int retry_after_s; /* > 0: Retry-After */
    const char *allow;
    const char *deny_body; /* X-Keygate-Deny-Body (forward_auth, nginx) */
    bool no_store;         /* Cache-Control: no-store */
    bool close;            /* Connection: close */
};

/* Queues resp, a JSON body, with status and the headers of h, then
 * destroys it. resp NULL (out of memory): MHD_NO, as the library wants. */
enum MHD_Result kg_reply_json(struct MHD_Connection *conn, unsigned status,
                              struct MHD_Response *resp, const struct kg_reply_hdrs *h);

/* Queues ans (its body copied) with the headers it asks for (ans's
 * WWW-Authenticate, Retry-After, Allow and close are added to h's). */
enum MHD_Result kg_reply_answer(struct MHD_Connection *conn, const struct kg_answer *ans,
                                const struct kg_reply_hdrs *h);

#endif
