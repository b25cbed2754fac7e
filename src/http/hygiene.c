/* http/hygiene.c - the framing and character checks libmicrohttpd 0.9.75
 * skips: CL with TE, TE other than exactly chunked, TE in HTTP/1.0, several
 * or empty CL, a missing, repeated or malformed Host, obs-fold, control
 * characters in names or values. Owns no state beyond the counters of one
 * request. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "keygate/hygiene.h"

void
kg_hygiene_init(struct kg_hygiene *h)
{
    memset(h, 0, sizeof(*h));
    h->content_length = -1;
}

static bool
tchar(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

void
kg_hygiene_version(struct kg_hygiene *h, const char *version)
{
    /* libmicrohttpd accepts "HTTP/d.d" only, and asks 1.1 to 1.9 for Host. */
    if (version == NULL || strncmp(version, "HTTP/1.", 7) != 0 || version[7] == '\0')
        return;
    h->http10 = version[7] == '0';
    h->needs_host = version[7] >= '1' && version[7] <= '9';
}

static bool
hexdig(unsigned char c)
{
    return isdigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* unreserved / sub-delims (RFC 3986 2.2, 2.3): what reg-name allows besides pct-encoded. */
static bool
host_char(unsigned char c)
{
    return isalnum(c) || strchr("-._~!$&'()*+,;=", c) != NULL;
}

bool
kg_hygiene_host_ok(const char *v, size_t len)
{
    size_t i = 0;

    /* Trailing blanks are OWS around the value, not part of it. */
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len > 0 && v[0] == '[') {
        /* IP-literal: IPv6address or IPvFuture, in brackets. */
        for (i = 1; i < len && v[i] != ']'; i++)
            if (!host_char((unsigned char)v[i]) && v[i] != ':')
                return false;
        if (i == len || i == 1)
            return false;
        i++;
    } else {
        for (; i < len && v[i] != ':'; i++) {
            if (v[i] == '%' && i + 2 < len && hexdig((unsigned char)v[i + 1]) &&
                hexdig((unsigned char)v[i + 2]))
                i += 2;
            else if (!host_char((unsigned char)v[i]))
                return false;
        }
    }
    if (i == len)
        return true;
    if (v[i] != ':')
        return false;
    for (i++; i < len; i++)
        if (!isdigit((unsigned char)v[i]))
            return false;
    return true;
}

void
kg_hygiene_feed(struct kg_hygiene *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (nlen == 0)
        h->bad_name = true;
    for (size_t i = 0; i < nlen; i++)
        if (name[i] == '\0' || !tchar((unsigned char)name[i]))
            h->bad_name = true;
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];

        /* HTAB is the only control character a field value may hold (RFC 9110 5.5). */
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            h->bad_value = true;
    }
    if (nlen == 14 && strncasecmp(name, "Content-Length", 14) == 0) {
        int64_t v = 0;
        size_t i = 0;

        h->n_cl++;
        while (i < vlen && (value[i] == ' ' || value[i] == '\t'))
            i++;
        if (i == vlen)
            h->bad_cl = true;
        for (; i < vlen && value[i] != ' ' && value[i] != '\t'; i++) {
            if (!isdigit((unsigned char)value[i]) || v > (INT64_MAX - 9) / 10) {
                h->bad_cl = true;
                break;
            }
            v = v * 10 + (value[i] - '0');
        }
        for (; i < vlen; i++)
            if (value[i] != ' ' && value[i] != '\t')
                h->bad_cl = true;
        h->content_length = v;
    } else if (nlen == 17 && strncasecmp(name, "Transfer-Encoding", 17) == 0) {
        /* Exactly the library's test (MHD_str_equal_caseless_ on the value
         * after its leading blanks): anything else, "chunked " included,
         * would have it read the body until the connection closes. */
        h->n_te++;
        if (vlen != 7 || strncasecmp(value, "chunked", 7) != 0)
            h->bad_te = true;
    } else if (nlen == 4 && strncasecmp(name, "Host", 4) == 0) {
        h->n_host++;
        if (!kg_hygiene_host_ok(value, vlen))
            h->bad_host = true;
    }
}

void
kg_hygiene_feed_mhd(struct kg_hygiene *h, const char *name, size_t nlen, const char *value,
                    size_t vlen)
{
    uintptr_t n = (uintptr_t)name, v = (uintptr_t)value;

    /* A clean line "Name: value" is parsed in place: the colon becomes the
     * NUL after the name and the value starts after the blanks following
     * it. Compared as integers first, so no byte outside the line is read
     * (a moved name lies after its value, at the pool's free end). */
    if (v <= n + nlen || v - (n + nlen) > 4096 || name[nlen] != '\0') {
        h->folded = true;
    } else {
        for (const char *p = name + nlen + 1; p < value; p++)
            if (*p != ' ' && *p != '\t')
                h->folded = true;
    }
    kg_hygiene_feed(h, name, nlen, value, vlen);
}

const char *
kg_hygiene_verdict(const struct kg_hygiene *h)
{
    if (h->folded)
        return "Folded header line";
    if (h->bad_name)
        return "Malformed header name";
    if (h->bad_value)
        return "Control character in header value";
    if (h->n_cl > 0 && h->n_te > 0)
        return "Both Content-Length and Transfer-Encoding";
    if (h->n_te > 1 || h->bad_te)
        return "Unsupported Transfer-Encoding";
    if (h->n_te > 0 && h->http10)
        return "Transfer-Encoding in an HTTP/1.0 request";
    if (h->n_cl > 1)
        return "Several Content-Length headers";
    if (h->bad_cl)
        return "Malformed Content-Length";
    if (h->n_host > 1)
        return "Several Host headers";
    if (h->bad_host)
        return "Malformed Host header";
    if (h->n_host == 0 && h->needs_host)
        return "Missing Host header";
    return NULL;
}

bool
kg_hygiene_has_body(const struct kg_hygiene *h)
{
    return h->n_te > 0 || h->content_length > 0;
}
