/* http/hygiene.c - the framing and character checks libmicrohttpd 0.9.75
 * skips: CL with TE, TE other than chunked, several or empty CL, several
 * Host, control characters in names or values. Owns no state beyond the
 * counters of one request. */
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
kg_hygiene_feed(struct kg_hygiene *h, const char *name, size_t nlen, const char *value,
                size_t vlen)
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
        size_t a = 0, b = vlen;

        h->n_te++;
        while (a < b && (value[a] == ' ' || value[a] == '\t'))
            a++;
        while (b > a && (value[b - 1] == ' ' || value[b - 1] == '\t'))
            b--;
        if (b - a != 7 || strncasecmp(value + a, "chunked", 7) != 0)
            h->bad_te = true;
    } else if (nlen == 4 && strncasecmp(name, "Host", 4) == 0) {
        h->n_host++;
    }
}

const char *
kg_hygiene_verdict(const struct kg_hygiene *h)
{
    if (h->bad_name)
        return "Malformed header name";
    if (h->bad_value)
        return "Control character in header value";
    if (h->n_cl > 0 && h->n_te > 0)
        return "Both Content-Length and Transfer-Encoding";
    if (h->n_te > 1 || h->bad_te)
        return "Unsupported Transfer-Encoding";
    if (h->n_cl > 1)
        return "Several Content-Length headers";
    if (h->bad_cl)
        return "Malformed Content-Length";
    if (h->n_host > 1)
        return "Several Host headers";
    return NULL;
}

bool
kg_hygiene_has_body(const struct kg_hygiene *h)
{
    return h->n_te > 0 || h->content_length > 0;
}
