/* keygate/status.h - the one error type of the codebase.
 *
 * Every fallible function returns an enum kg_status and, when the caller
 * passes a struct kg_err, writes human words into it. A denial of a request
 * is not an error (see decide.h); kg_status is for things that went wrong.
 * The words never contain an API key.
 */
#ifndef KEYGATE_STATUS_H
#define KEYGATE_STATUS_H

enum kg_status {
    KG_OK = 0,
    KG_ENOMEM,    /* allocation failed */
    KG_EINVAL,    /* the caller's input is malformed (flag, JSON field, directive) */
    KG_ENOTFOUND, /* no such key, user or tenant */
    KG_ECONFLICT, /* state forbids it: revoked twice, duplicate name */
    KG_ELIMIT,    /* a bound was hit: header, body or buffer too big */
    KG_EIO,       /* store, file or socket I/O failed */
    KG_ECORRUPT,  /* store or secret file is not what we wrote */
};

#define KG_ERR_MAX 256

struct kg_err {
    char msg[KG_ERR_MAX];
};

/* Short constant name of st ("not found"); never NULL. */
const char *kg_status_str(enum kg_status st);

/* Formats err->msg (if err != NULL) and returns st, so a failure fits on one
 * line: return kg_err_set(err, KG_EINVAL, "bad rate %s", s); */
enum kg_status kg_err_set(struct kg_err *err, enum kg_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
