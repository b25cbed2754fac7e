/* admin/admin.c - the admin listener: liveness and readiness today; the
 * key-lifecycle API is added here over manage/. Owns nothing but its
 * MHD daemon's handler; answers are JSON like the public side's. */
#include <arpa/inet.h>
#include <string.h>

#include "keygate/admin.h"
#include "keygate/respond.h"

static enum MHD_Result
answer(struct MHD_Connection *conn, unsigned status, const char *body)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
admin_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
              const char *version, const char *upload_data, size_t *upload_data_size,
              void **req_cls)
{
    struct kg_runtime *rt = kg_loop_runtime(cls);
    static int first_marker;

    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        *req_cls = &first_marker;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0; /* no admin endpoint takes a body yet */
        return MHD_YES;
    }
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
        if (strcmp(url, "/livez") == 0)
            return answer(conn, 200, "{\"status\":\"ok\"}");
        if (strcmp(url, "/readyz") == 0) {
            if (atomic_load(&rt->ready) && !atomic_load(&rt->draining))
                return answer(conn, 200, "{\"status\":\"ready\"}");
            return answer(conn, 503,
                          atomic_load(&rt->draining) ? "{\"status\":\"draining\"}"
                                                     : "{\"status\":\"starting\"}");
        }
    }
    return answer(conn, 404, "{\"detail\": \"Not found.\"}");
}

enum kg_status
kg_admin_new_daemon(struct kg_loop *loop, const struct sockaddr_storage *addr,
                    struct MHD_Daemon **out, struct kg_err *err)
{
    unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    uint16_t port;

    if (addr->ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
        port = ntohs(((const struct sockaddr_in6 *)(const void *)addr)->sin6_port);
    } else {
        port = ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port);
    }
    *out = MHD_start_daemon(flags, port, NULL, NULL, admin_handler, loop, MHD_OPTION_SOCK_ADDR,
                            addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_END);
    if (*out == NULL)
        return kg_err_set(err, KG_EIO, "cannot listen on admin address %s",
                          kg_loop_runtime(loop)->cfg->admin_listen);
    return KG_OK;
}
