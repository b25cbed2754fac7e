/* helpers/receiver.c - see receiver.h. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers/http.h"
#include "helpers/receiver.h"
#include "helpers/server.h"

#define KEEP 256

struct kt_receiver {
    int fd;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mu;
    char url[64];
    struct kt_received got[KEEP];
    size_t n;
    int fail_n, fail_status, hang_n;
    long hang_ms;
};

static void
header_value(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);

    out[0] = '\0';
    for (const char *p = head; p != NULL && *p != '\0'; p = strstr(p, "\r\n")) {
        if (p[0] == '\r')
            p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *e = strstr(v, "\r\n");

            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(e != NULL ? e - v : (long)strlen(v)), v);
            return;
        }
    }
}

static void
serve_one(struct kt_receiver *r, int c)
{
    char buf[65536], cl[32], answer[128];
    size_t len = 0;
    char *end = NULL;
    long want;
    int status = 200;
    long hang = 0;

    while (len < sizeof(buf) - 1) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        ssize_t k;

        if (poll(&p, 1, 5000) <= 0)
            return;
        k = read(c, buf + len, sizeof(buf) - 1 - len);
        if (k <= 0)
            return;
        len += (size_t)k;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            header_value(buf, "Content-Length", cl, sizeof(cl));
            want = strtol(cl, NULL, 10);
            if ((long)(len - (size_t)(end + 4 - buf)) >= want)
                break;
        }
    }
    if (end == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    if (r->hang_n > 0) {
        r->hang_n--;
        hang = r->hang_ms;
        status = 0;
    } else if (r->fail_n > 0) {
        r->fail_n--;
        status = r->fail_status;
    }
    if (r->n < KEEP) {
        struct kt_received *g = &r->got[r->n++];

        header_value(buf, "Keygate-Signature", g->signature, sizeof(g->signature));
        header_value(buf, "Keygate-Event-Id", g->event_id, sizeof(g->event_id));
        g->body = strdup(end + 4);
        g->answered = status;
    }
    pthread_mutex_unlock(&r->mu);
    if (hang > 0) {
        kt_sleep_ms(hang);
        return;
    }
    snprintf(answer, sizeof(answer),
             "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status);
    if (write(c, answer, strlen(answer)) < 0)
        return;
}

static void *
run(void *arg)
{
    struct kt_receiver *r = arg;

    for (;;) {
        struct pollfd p[2] = {{.fd = r->fd, .events = POLLIN},
                              {.fd = r->wake[0], .events = POLLIN}};
        int c;

        if (poll(p, 2, -1) < 0 || p[1].revents != 0)
            return NULL;
        c = accept(r->fd, NULL, NULL);
        if (c < 0)
            continue;
        serve_one(r, c);
        close(c);
    }
}

struct kt_receiver *
kt_receiver_start(void)
{
    struct kt_receiver *r = calloc(1, sizeof(*r));
    int port = 0;

    if (r == NULL)
        return NULL;
    r->fd = kt_server_listen(16, &port);
    if (r->fd < 0 || pipe(r->wake) != 0) {
        if (r->fd >= 0)
            close(r->fd);
        free(r);
        return NULL;
    }
    snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d/hook", port);
    pthread_mutex_init(&r->mu, NULL);
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

void
kt_receiver_stop(struct kt_receiver *r)
{
    if (r == NULL)
        return;
    if (write(r->wake[1], "x", 1) < 0)
        return;
    pthread_join(r->thread, NULL);
    close(r->fd);
    close(r->wake[0]);
    close(r->wake[1]);
    for (size_t i = 0; i < r->n; i++)
        free(r->got[i].body);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

const char *
kt_receiver_url(const struct kt_receiver *r)
{
    return r->url;
}

void
kt_receiver_fail_next(struct kt_receiver *r, int n, int status)
{
    pthread_mutex_lock(&r->mu);
    r->fail_n = n;
    r->fail_status = status;
    pthread_mutex_unlock(&r->mu);
}

void
kt_receiver_hang_next(struct kt_receiver *r, int n, long ms)
{
    pthread_mutex_lock(&r->mu);
    r->hang_n = n;
    r->hang_ms = ms;
    pthread_mutex_unlock(&r->mu);
}

size_t
kt_receiver_count(struct kt_receiver *r)
{
    return kt_server_count(&r->mu, &r->n);
}

bool
kt_receiver_get(struct kt_receiver *r, size_t i, struct kt_received *out)
{
    bool ok;

    pthread_mutex_lock(&r->mu);
    ok = i < r->n;
    if (ok) {
        *out = r->got[i];
        out->body = strdup(r->got[i].body != NULL ? r->got[i].body : "");
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

bool
kt_receiver_wait(struct kt_receiver *r, size_t n, long ms)
{
    for (long waited = 0; waited <= ms; waited += 20) {
        if (kt_receiver_count(r) >= n)
            return true;
        kt_sleep_ms(20);
    }
    return false;
}
