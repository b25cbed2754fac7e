/* http/clientip.c - the client address of a request: the socket peer, or,
 * behind trusted_proxies, the right-most untrusted X-Forwarded-For hop.
 * Owns address and CIDR parsing and matching; it does not read headers (front.c
 * joins them) nor limit anything (limit/throttle.c). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "keygate/clientip.h"

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Stores 16 IPv6 bytes, unmapping ::ffff:a.b.c.d to IPv4. */
static void
set_v6(struct kg_ipaddr *out, const uint8_t *b)
{
    memset(out, 0, sizeof(*out));
    if (memcmp(b, v4_mapped, sizeof(v4_mapped)) == 0) {
        out->family = AF_INET;
        memcpy(out->b, b + 12, 4);
    } else {
        out->family = AF_INET6;
        memcpy(out->b, b, 16);
    }
}

bool
kg_clientip_parse(const char *s, struct kg_ipaddr *out)
{
    uint8_t b[16];

    if (s == NULL)
        return false;
    if (inet_pton(AF_INET, s, b) == 1) {
        memset(out, 0, sizeof(*out));
        out->family = AF_INET;
        memcpy(out->b, b, 4);
        return true;
    }
    if (inet_pton(AF_INET6, s, b) == 1) {
        set_v6(out, b);
        return true;
    }
    return false;
}

bool
kg_clientip_cidr_parse(const char *s, struct kg_cidr *out)
{
    char host[KG_CLIENTIP_MAX];
    const char *slash = strchr(s, '/');
    size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    struct kg_cidr c;
    int bits, prefix = 0;

    if (hlen == 0 || hlen >= sizeof(host))
        return false;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (!kg_clientip_parse(host, &c.addr))
        return false;
    /* "::ffff:10.0.0.0/104" is unmapped to IPv4, so its prefix would be off by 96. */
    if (c.addr.family == AF_INET && strchr(host, ':') != NULL && slash != NULL)
        return false;
    bits = c.addr.family == AF_INET ? 32 : 128;
    if (slash == NULL) {
        prefix = bits;
    } else {
        const char *p = slash + 1;

        if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '\0'))
            return false;
        for (; *p != '\0'; p++) {
            if (*p < '0' || *p > '9')
                return false;
            prefix = prefix * 10 + (*p - '0');
            if (prefix > bits)
                return false;
        }
    }
    c.prefix = prefix;
    for (int i = prefix; i < bits; i++)
        if (c.addr.b[i / 8] & (0x80 >> (i % 8)))
            return false;
    *out = c;
    return true;
}

bool
kg_clientip_cidr_match(const struct kg_cidr *c, const struct kg_ipaddr *a)
{
    int full = c->prefix / 8, rest = c->prefix % 8;

    if (c->addr.family != a->family)
        return false;
    if (memcmp(c->addr.b, a->b, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((c->addr.b[full] ^ a->b[full]) & (uint8_t)(0xff00 >> rest)) == 0;
}

bool
kg_clientip_trusted(const struct kg_cidr *list, size_t n, const struct kg_ipaddr *a)
{
    for (size_t i = 0; i < n; i++)
        if (kg_clientip_cidr_match(&list[i], a))
            return true;
    return false;
}

bool
kg_clientip_from_sockaddr(const struct sockaddr *sa, struct kg_ipaddr *out)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;

        memset(out, 0, sizeof(*out));
        out->family = AF_INET;
        memcpy(out->b, &s4->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;

        set_v6(out, (const uint8_t *)&s6->sin6_addr);
        return true;
    }
    return false;
}

void
kg_clientip_format(const struct kg_ipaddr *a, char *out, size_t outlen)
{
    out[0] = '\0';
    if (inet_ntop(a->family, a->b, out, (socklen_t)outlen) == NULL)
        out[0] = '\0';
}

/* One X-Forwarded-For entry [start, end) without blanks, brackets or port. */
static bool
parse_entry(const char *start, const char *end, struct kg_ipaddr *out)
{
    char buf[KG_CLIENTIP_MAX + 8];
    size_t len;
    char *colon;

    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    len = (size_t)(end - start);
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, start, len);
    buf[len] = '\0';
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');

        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return false;
        *close = '\0';
        return kg_clientip_parse(buf + 1, out) && out->family == AF_INET6;
    }
    colon = strchr(buf, ':');
    if (colon != NULL && strchr(colon + 1, ':') == NULL)
        *colon = '\0'; /* one colon: IPv4 with a port */
    return kg_clientip_parse(buf, out);
}

void
kg_clientip_resolve(const struct kg_cidr *trusted, size_t ntrusted, const struct kg_ipaddr *peer,
                    const char *xff, char *out, size_t outlen)
{
    struct kg_ipaddr client, hop;
    const char *end;

    if (peer == NULL) {
        out[0] = '\0';
        return;
    }
    client = *peer;
    if (xff != NULL && kg_clientip_trusted(trusted, ntrusted, &client)) {
        end = xff + strlen(xff);
        while (kg_clientip_trusted(trusted, ntrusted, &client)) {
            const char *start = end;

            while (start > xff && start[-1] != ',')
                start--;
            /* Nothing left, or garbage: the last trusted hop is all we know. */
            if (!parse_entry(start, end, &hop))
                break;
            client = hop;
            if (start == xff)
                break;
            end = start - 1;
        }
    }
    kg_clientip_format(&client, out, outlen);
}

void
kg_clientip_xff_append(char *dst, size_t cap, const char *v)
{
    size_t used = strlen(dst), vlen = strlen(v), sep = used > 0 ? 2 : 0;

    if (cap == 0)
        return;
    if (vlen + 1 > cap) {
        /* v alone is too long: keep its tail from an entry boundary. */
        const char *t = v + (vlen - (cap - 1));
        const char *c = strchr(t, ',');

        t = c != NULL ? c + 1 : v + vlen;
        while (*t == ' ')
            t++;
        snprintf(dst, cap, "%s", t);
        return;
    }
    while (used > 0 && used + sep + vlen + 1 > cap) {
        /* Drop the left-most entry of dst (or all of it). */
        char *c = strchr(dst, ',');

        if (c == NULL) {
            dst[0] = '\0';
            used = 0;
            sep = 0;
            break;
        }
        c++;
        while (*c == ' ')
            c++;
        memmove(dst, c, strlen(c) + 1);
        used = strlen(dst);
        sep = used > 0 ? 2 : 0;
    }
    snprintf(dst + used, cap - used, "%s%s", sep > 0 ? ", " : "", v);
}
