/* manage/leaks.c - leaked-key reports (keygate/leaks.h): strings that
 * look like keys are checked (checksum, then the keyed digest), and a
 * stored key among them is revoked or flagged with its audit entry and its
 * key.leaked event in one transaction. Nothing is kept of a string that
 * is not a key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "keygate/digest.h"
#include "keygate/keyfmt.h"
#include "keygate/leaks.h"
#include "manage/manage_int.h"

/* The key of one string, or false: blanks trimmed, shape and checksum. */
static bool
digest_of(const struct kg_keys_ctx *kc, const char *s, unsigned char digest[KG_DIGEST_BYTES])
{
    size_t len;

    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    len = strlen(s);
    while (len > 0 &&
           (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' || s[len - 1] == '\n'))
        len--;
    if (len == 0 || len >= KG_KEY_MAX || !kg_keyfmt_check(s, len))
        return false;
    kg_digest_compute(kc->secret, s, len, digest);
    return true;
}

static enum kg_status
check_source(const char *source, struct kg_err *err)
{
    if (source == NULL)
        return KG_OK;
    if (strlen(source) >= KG_LEAK_SOURCE_MAX)
        return kg_err_set(err, KG_EINVAL, "source must be at most %d bytes",
                          KG_LEAK_SOURCE_MAX - 1);
    for (const char *p = source; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return kg_err_set(err, KG_EINVAL, "source must not contain control characters");
    return KG_OK;
}

/* One leaked key: event and audit entry with the source, revoked or not. */
static enum kg_status
report_one(const struct kg_keys_ctx *kc, const struct kg_key_rec *rec, const char *source,
           enum kg_leak_action action, int64_t now, struct kg_leak_result *out, struct kg_err *err)
{
    bool was_revoked = rec->revoked_at != 0 && rec->revoked_at <= now;
    bool revoke = action == KG_LEAK_REVOKE && !was_revoked;
    const char *what = was_revoked ? "already_revoked" : revoke ? "revoked" : "flagged";
    struct kg_audit_entry *audit = malloc(sizeof(*audit));
    struct kg_event *ev = calloc(1, sizeof(*ev));
    json_t *details = NULL;
    char *text = NULL;
    enum kg_status rc;

    if (audit == NULL || ev == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    details = json_pack("{s:s?, s:s}", "source", source, "action", what);
    text = details != NULL ? json_dumps(details, JSON_COMPACT) : NULL;
    if (text == NULL || strlen(text) >= sizeof(ev->data)) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kg_manage_audit(audit, kc, now, rec->tenant, "key.leaked", rec->id, details, err);
    details = NULL; /* the audit entry took it */
    if (rc != KG_OK)
        goto cleanup;
    snprintf(ev->type, sizeof(ev->type), "key.leaked");
    ev->time = now;
    snprintf(ev->tenant, sizeof(ev->tenant), "%s", rec->tenant);
    snprintf(ev->key_id, sizeof(ev->key_id), "%s", rec->id);
    snprintf(ev->prefix, sizeof(ev->prefix), "%s", rec->prefix);
    snprintf(ev->name, sizeof(ev->name), "%s", rec->name);
    snprintf(ev->user_id, sizeof(ev->user_id), "%s", rec->user_id);
    memcpy(ev->data, text, strlen(text) + 1);
    rc = kg_store_key_leaked(kc->store, rec->id, revoke, now, ev, audit, err);
    if (rc != KG_OK)
        goto cleanup;
    out->keys++;
    if (was_revoked)
        out->already_revoked++;
    else if (revoke)
        out->revoked++;
    else
        out->flagged++;
cleanup:
    free(text);
    json_decref(details);
    free(ev);
    free(audit);
    return rc;
}

enum kg_status
kg_leaks_report(const struct kg_keys_ctx *kc, const char *fence, const char *const *strings,
                size_t n, const char *source, enum kg_leak_action action, int64_t now,
                struct kg_leak_result *out, struct kg_err *err)
{
    unsigned char(*seen)[KG_DIGEST_BYTES] = NULL;
    struct kg_key_rec *rec = NULL;
    enum kg_status rc;
    size_t nseen = 0;

    memset(out, 0, sizeof(*out));
    rc = kg_manage_check_ctx(kc, true, true, err);
    if (rc != KG_OK)
        return rc;
    if (n > KG_LEAK_STRINGS_MAX)
        return kg_err_set(err, KG_EINVAL, "at most %d strings per report", KG_LEAK_STRINGS_MAX);
    rc = check_source(source, err);
    if (rc != KG_OK)
        return rc;
    rec = malloc(sizeof(*rec));
    seen = calloc(n + 1, sizeof(*seen));
    if (rec == NULL || seen == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char digest[KG_DIGEST_BYTES];
        bool dup = false;

        out->strings++;
        if (!digest_of(kc, strings[i], digest)) {
            out->not_keys++;
            continue;
        }
        /* The same key found twice is one leak. */
        for (size_t j = 0; j < nseen && !dup; j++)
            dup = sodium_memcmp(seen[j], digest, KG_DIGEST_BYTES) == 0;
        if (dup)
            continue;
        memcpy(seen[nseen++], digest, KG_DIGEST_BYTES);
        rc = kg_store_key_by_digest(kc->store, digest, rec, err);
        if (rc == KG_ENOTFOUND ||
            (rc == KG_OK && fence != NULL && strcmp(rec->tenant, fence) != 0)) {
            out->not_keys++;
            rc = KG_OK;
            continue;
        }
        if (rc == KG_OK)
            rc = report_one(kc, rec, source, action, now, out, err);
        if (rc != KG_OK)
            goto cleanup;
    }
cleanup:
    if (seen != NULL)
        sodium_memzero(seen, (n + 1) * sizeof(*seen));
    free(seen);
    free(rec);
    return rc;
}
