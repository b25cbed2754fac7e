/* manage/common.c - what keys.c, accounts.c and audit.c share
 * through manage_int.h: the text and slug checks every kind of object uses,
 * the context check and the audit entry every change writes. Pure apart
 * from the audit entry's allocation.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "keygate/audit.h"
#include "keygate/keys.h"
#include "manage/manage_int.h"

/* Names end up in tables, JSON and log lines, so a newline or an escape
 * sequence in one could forge output, and jansson refuses strings that are
 * not UTF-8. */
const char *
kg_manage_text_problem(const unsigned char *s, size_t n)
{
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t len;

        if (c < 0x80) {
            cp = c;
            len = 1;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F;
            len = 2;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F;
            len = 3;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07;
            len = 4;
        } else {
            return "is not valid UTF-8";
        }
        if (len > n - i)
            return "is not valid UTF-8";
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return "is not valid UTF-8";
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return "is not valid UTF-8";
        /* C0, DEL and C1 (U+0080..U+009F): all of them move cursors or start escapes. */
        if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0))
            return "must not contain control characters";
        i += len;
    }
    return NULL;
}

enum kg_status
kg_manage_check_text(const char *field, const char *s, size_t min, size_t max, char *out,
                     struct kg_err *err)
{
    const char *why;
    size_t n;

    if (s == NULL)
        return kg_err_set(err, KG_EINVAL, "%s is required", field);
    n = strnlen(s, max + 1);
    if (n < min || n > max) {
        if (min == 0)
            return kg_err_set(err, KG_EINVAL, "%s must be at most %zu bytes", field, max);
        return kg_err_set(err, KG_EINVAL, "%s must be %zu to %zu bytes", field, min, max);
    }
    why = kg_manage_text_problem((const unsigned char *)s, n);
    if (why != NULL)
        return kg_err_set(err, KG_EINVAL, "%s %s", field, why);
    memcpy(out, s, n + 1);
    return KG_OK;
}

static bool
slug_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

enum kg_status
kg_manage_check_slug(const char *field, const char *s, size_t max, char *out, struct kg_err *err)
{
    size_t n;

    if (s == NULL)
        return kg_err_set(err, KG_EINVAL, "%s is required", field);
    n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return kg_err_set(err, KG_EINVAL, "%s must be 1 to %zu characters", field, max);
    for (size_t i = 0; i < n; i++) {
        if (!slug_char_ok(s[i]))
            return kg_err_set(err, KG_EINVAL, "%s may hold only A-Z, a-z, 0-9, _, . and -", field);
    }
    memcpy(out, s, n + 1);
    return KG_OK;
}

enum kg_status
kg_manage_check_ctx(const struct kg_keys_ctx *kc, bool minting, bool changing, struct kg_err *err)
{
    if (kc == NULL || kc->store == NULL || (minting && (kc->secret == NULL || kc->cfg == NULL)))
        return kg_err_set(err, KG_EINVAL, "keys: missing store, secret or config");
    if (changing && (kc->actor == NULL || kc->actor[0] == '\0'))
        return kg_err_set(err, KG_EINVAL, "keys: missing actor for the audit trail");
    return KG_OK;
}

enum kg_status
kg_manage_audit(struct kg_audit_entry *e, const struct kg_keys_ctx *kc, int64_t now,
                const char *tenant, const char *action, const char *object, json_t *details,
                struct kg_err *err)
{
    enum kg_status rc;

    /* NULL details from a failed allocation must not pass as "{}". */
    if (details == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory building the audit entry");
    rc = kg_audit_entry_init(e, now, kc->actor, tenant, action, object, details, err);
    json_decref(details);
    return rc;
}
