/* http/reply.c - a JSON answer onto a libmicrohttpd connection, the same
 * way for the public and the admin listener (keygate/reply.h). */
#include <stdio.h>

#include "keygate/reply.h"

enum MHD_Result
kg_reply_json(struct MHD_Connection *conn, unsigned status, struct MHD_Response *resp,
              const struct kg_reply_hdrs *h)
{
    enum MHD_Result ret;
    char retry[24];

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (h->no_store)
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (h->request_id != NULL)
        MHD_add_response_header(resp, "X-Request-Id", h->request_id);
    for (size_t i = 0; h->rl != NULL && i < h->rl->n; i++)
        MHD_add_response_header(resp, h->rl->name[i], h->rl->value[i]);
    if (h->www_authenticate != NULL)
        MHD_add_response_header(resp, "WWW-Authenticate", h->www_authenticate);
    if (h->retry_after_s > 0) {
        snprintf(retry, sizeof(retry), "%d", h->retry_after_s);
        MHD_add_response_header(resp, "Retry-After", retry);
    }
    if (h->allow != NULL)
        MHD_add_response_header(resp, "Allow", h->allow);
    if (h->deny_body != NULL)
        MHD_add_response_header(resp, "X-Keygate-Deny-Body", h->deny_body);
    if (h->close)
        MHD_add_response_header(resp, "Connection", "close");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result
kg_reply_answer(struct MHD_Connection *conn, const struct kg_answer *ans,
                const struct kg_reply_hdrs *h)
{
    struct kg_reply_hdrs all = *h;

    if (ans->www_authenticate != NULL)
        all.www_authenticate = ans->www_authenticate;
    if (ans->retry_after_s > 0)
        all.retry_after_s = ans->retry_after_s;
    if (ans->allow != NULL)
        all.allow = ans->allow;
    all.close = all.close || ans->close;
    return kg_reply_json(
        conn, ans->status,
        MHD_create_response_from_buffer(ans->body_len, (void *)ans->body, MHD_RESPMEM_MUST_COPY),
        &all);
}
