/* util/status.c - words for enum kg_status and the kg_err_set() helper.
 * Owns nothing else; callers decide what to do with an error. */
#include <stdarg.h>
#include <stdio.h>

#include "keygate/status.h"

const char *
kg_status_str(enum kg_status st)
{
    switch (st) {
    case KG_OK:
        return "ok";
    case KG_ENOMEM:
        return "out of memory";
    case KG_EINVAL:
        return "invalid argument";
    case KG_ENOTFOUND:
        return "not found";
    case KG_ECONFLICT:
        return "conflict";
    case KG_ELIMIT:
        return "limit exceeded";
    case KG_EIO:
        return "I/O error";
    case KG_ECORRUPT:
        return "corrupt data";
    }
    return "unknown error";
}

enum kg_status
kg_err_set(struct kg_err *err, enum kg_status st, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return st;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return st;
}
