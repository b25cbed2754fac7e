/* http/pathnorm.c - canonical request paths (RFC 3986 sections 2.3, 6.2.2 and
 * 5.2.4), so "//admin", "/x/../admin" and "/%61dmin" all meet the rule for
 * "/admin". Owns no state. */
#include <string.h>

#include "keygate/hex.h"
#include "keygate/pathnorm.h"

static int
is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Removes the last segment of out[0..*n) and its "/" (dot-dot). Never above the root. */
static void
pop_segment(char *out, size_t *n)
{
    while (*n > 0 && out[*n - 1] != '/')
        (*n)--;
    if (*n > 0)
        (*n)--;
}

enum kg_status
kg_pathnorm(const char *path, size_t len, char *out, size_t outcap, struct kg_err *err)
{
    size_t n = 0, i = 0;

    if (len == 0 || path[0] != '/')
        return kg_err_set(err, KG_EINVAL, "path must start with /");
    if (outcap < len + 1)
        return kg_err_set(err, KG_ELIMIT, "path buffer too small");
    /* Pass 1 decodes and checks into out; pass 2 (in place) resolves segments. */
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];

        if (c == '%') {
            int hi, lo;

            if (i + 2 >= len)
                return kg_err_set(err, KG_EINVAL, "malformed percent-escape in path");
            hi = kg_hexval((unsigned char)path[i + 1]);
            lo = kg_hexval((unsigned char)path[i + 2]);
            if (hi < 0 || lo < 0)
                return kg_err_set(err, KG_EINVAL, "malformed percent-escape in path");
            c = (unsigned char)(hi * 16 + lo);
            if (c == '/')
                return kg_err_set(err, KG_EINVAL, "encoded / (%%2F) in path");
            if (c == 0)
                return kg_err_set(err, KG_EINVAL, "encoded NUL in path");
            if (is_unreserved(c)) {
                out[n++] = (char)c;
            } else {
                static const char hex[] = "0123456789ABCDEF";

                out[n++] = '%';
                out[n++] = hex[c >> 4];
                out[n++] = hex[c & 15];
            }
            i += 2;
            continue;
        }
        if (c <= 0x20 || c >= 0x7f)
            return kg_err_set(err, KG_EINVAL, "control character, space or non-ASCII byte in path");
        /* Never valid raw in a request target (RFC 3986): an upstream that
         * cuts at '#' or reads a backslash as '/' would see another path than the rules. */
        if (c == '#' || c == '\\')
            return kg_err_set(err, KG_EINVAL, "'#' or '\\' in path");
        out[n++] = (char)c;
    }
    out[n] = '\0';

    /* Pass 2: walk segments of out, writing the result over it (never longer). */
    {
        size_t r = 0, w = 0;

        while (r < n) {
            size_t start, slen;

            while (r < n && out[r] == '/')
                r++;
            start = r;
            while (r < n && out[r] != '/')
                r++;
            slen = r - start;
            if (slen == 0)
                break;
            if (slen == 1 && out[start] == '.') {
                if (r >= n)
                    out[w++] = '/';
                continue;
            }
            if (slen == 2 && out[start] == '.' && out[start + 1] == '.') {
                pop_segment(out, &w);
                if (r >= n)
                    out[w++] = '/';
                continue;
            }
            out[w++] = '/';
            memmove(out + w, out + start, slen);
            w += slen;
        }
        /* A trailing "/" is meaningful to many APIs: keep it. */
        if (n > 0 && out[n - 1] == '/' && (w == 0 || out[w - 1] != '/'))
            out[w++] = '/';
        if (w == 0)
            out[w++] = '/';
        out[w] = '\0';
    }
    return KG_OK;
}
