/* manage/audit.c - the audit trail's rules: what an entry holds, who the CLI
 * is, what a failed admin authentication records, who may read what, and
 * whether the chain holds.
 *
 * Appending happens inside the store's transactions (store.h); this file
 * builds the entries keys.c and accounts.c hand over, and verifies the
 * chain with the audit key derived from the server secret. It never sees a
 * key: a failed authentication is recorded by its display prefix only.
 */
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "keygate/audit.h"
#include "keygate/keyfmt.h"
#include "manage/manage_int.h"

/* Copies src (NULL = "") into dst of cap bytes; false when it does not fit
 * or holds a newline (the chain hash joins fields with newlines). */
static bool
copy_field(char *dst, size_t cap, const char *src)
{
    size_t n;

    if (src == NULL)
        src = "";
    n = strnlen(src, cap);
    if (n == cap || strchr(src, '\n') != NULL || strchr(src, '\r') != NULL)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

enum kg_status
kg_audit_entry_init(struct kg_audit_entry *e, int64_t now, const char *actor, const char *tenant,
                    const char *action, const char *object, const json_t *details,
                    struct kg_err *err)
{
    char *text = NULL;
    size_t n;

    memset(e, 0, sizeof(*e));
    if (actor == NULL || actor[0] == '\0' || action == NULL || action[0] == '\0')
        return kg_err_set(err, KG_EINVAL, "audit entry: actor and action are required");
    if (!copy_field(e->actor, sizeof(e->actor), actor) ||
        !copy_field(e->tenant, sizeof(e->tenant), tenant) ||
        !copy_field(e->action, sizeof(e->action), action) ||
        !copy_field(e->object, sizeof(e->object), object))
        return kg_err_set(err, KG_EINVAL, "audit entry: a field is too long or holds a newline");
    e->time = now;
    if (details == NULL) {
        memcpy(e->details, "{}", 3);
        return KG_OK;
    }
    if (!json_is_object(details))
        return kg_err_set(err, KG_EINVAL, "audit entry: details must be a JSON object");
    /* Compact JSON escapes every control character inside strings, so the
     * text has no newline of its own. */
    text = json_dumps(details, JSON_COMPACT);
    if (text == NULL)
        return kg_err_set(err, KG_ENOMEM, "out of memory building the audit entry");
    n = strlen(text);
    if (n >= sizeof(e->details)) {
        free(text);
        return kg_err_set(err, KG_ELIMIT, "audit entry: details are longer than %zu bytes",
                          sizeof(e->details) - 1);
    }
    memcpy(e->details, text, n + 1);
    free(text);
    return KG_OK;
}

void
kg_audit_cli_actor(char out[KG_AUDIT_ACTOR_MAX])
{
    /* getpwuid's buffer is static: fine for the single-threaded CLI. */
    const struct passwd *pw = getpwuid(geteuid());
    size_t n;

    if (pw == NULL || pw->pw_name == NULL || pw->pw_name[0] == '\0') {
        snprintf(out, KG_AUDIT_ACTOR_MAX, "cli:uid%lu", (unsigned long)geteuid());
        return;
    }
    n = (size_t)snprintf(out, KG_AUDIT_ACTOR_MAX, "cli:%s", pw->pw_name);
    if (n >= KG_AUDIT_ACTOR_MAX)
        n = KG_AUDIT_ACTOR_MAX - 1;
    for (size_t i = 4; i < n; i++) {
        char c = out[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '@' || c == '-'))
            out[i] = '_';
    }
}

enum kg_status
kg_audit_auth_failed(struct kg_store *st, int64_t now, const char *presented, size_t len,
                     const char *reason, struct kg_err *err)
{
    char prefix[KG_DPREFIX_MAX] = "none";
    char last4[5];
    struct kg_audit_entry *e;
    json_t *details;
    enum kg_status rc;

    /* Only a well-formed key has a display prefix worth keeping; anything
     * else might be a secret pasted into the wrong header. */
    if (presented != NULL && len > 0 && kg_keyfmt_check(presented, len))
        kg_keyfmt_display(presented, len, prefix, last4);
    e = malloc(sizeof(*e));
    details = json_pack("{s:s}", "reason", reason != NULL ? reason : "invalid");
    if (e == NULL || details == NULL) {
        rc = kg_err_set(err, KG_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kg_audit_entry_init(e, now, "anonymous", NULL, "admin.auth_failed", prefix, details, err);
    if (rc == KG_OK)
        rc = kg_store_audit_append(st, e, err);
cleanup:
    json_decref(details);
    free(e);
    return rc;
}

enum kg_status
kg_audit_list(const struct kg_keys_ctx *kc, const char *fence, const struct kg_audit_filter *filter,
              const struct kg_page *page, kg_store_audit_cb cb, void *ctx, char *next,
              struct kg_err *err)
{
    struct kg_audit_query q = {0};
    enum kg_status rc = kg_manage_check_ctx(kc, false, false, err);

    if (next != NULL)
        next[0] = '\0';
    if (rc != KG_OK)
        return rc;
    if (filter != NULL) {
        q.tenant = filter->tenant;
        q.newest_first = filter->newest_first;
    }
    if (page != NULL)
        q.page = *page;
    if (fence != NULL) {
        if (q.tenant != NULL && strcmp(q.tenant, fence) != 0)
            return KG_OK;
        q.tenant = fence;
    }
    return kg_store_audit_list(kc->store, &q, cb, ctx, next, err);
}

/* ---- verification ---- */

struct verify_walk {
    unsigned char key[KG_AUDIT_KEY_BYTES];
    char prev[KG_AUDIT_HASH_HEX];
    int64_t expected;
    struct kg_audit_report *out;
};

static bool
broken(struct verify_walk *w, int64_t seq, const char *why)
{
    w->out->ok = false;
    w->out->broken_seq = seq;
    snprintf(w->out->why, sizeof(w->out->why), "%s", why);
    return false;
}

static bool
has_newline(const struct kg_audit_entry *e)
{
    const char *fields[] = {e->actor, e->tenant, e->action, e->object, e->details};

    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (strchr(fields[i], '\n') != NULL || strchr(fields[i], '\r') != NULL)
            return true;
    }
    return false;
}

static bool
verify_one(const struct kg_audit_entry *e, void *ctx)
{
    struct verify_walk *w = ctx;
    char want[KG_AUDIT_HASH_HEX];

    if (e->seq > w->expected)
        return broken(w, w->expected, "entry is missing");
    if (e->seq < w->expected)
        return broken(w, e->seq, "entry is out of sequence");
    w->out->entries++;
    if (e->malformed || has_newline(e))
        return broken(w, e->seq, "a field is missing, of the wrong type or malformed");
    if (sodium_memcmp(e->prev_hash, w->prev, KG_AUDIT_HASH_HEX) != 0)
        return broken(w, e->seq, "prev_hash does not match the previous entry's hash");
    kg_store_audit_hash(w->key, e, e->prev_hash, want);
    if (sodium_memcmp(want, e->hash, KG_AUDIT_HASH_HEX) != 0)
        return broken(w, e->seq, "hash does not match the entry's contents");
    memcpy(w->prev, e->hash, KG_AUDIT_HASH_HEX);
    w->expected++;
    return true;
}

enum kg_status
kg_audit_verify(struct kg_store *st, const struct kg_secret *secret, struct kg_audit_report *out,
                struct kg_err *err)
{
    struct verify_walk w = {.expected = 1, .out = out};
    char head_hash[KG_AUDIT_HASH_HEX];
    int64_t head_seq = 0;
    enum kg_status rc;

    if (st == NULL || secret == NULL || out == NULL)
        return kg_err_set(err, KG_EINVAL, "audit verify: missing argument");
    memset(out, 0, sizeof(*out));
    out->ok = true;
    memset(w.prev, '0', KG_AUDIT_HASH_HEX - 1);
    w.prev[KG_AUDIT_HASH_HEX - 1] = '\0';
    kg_digest_audit_key(secret, w.key);
    rc = kg_store_audit_each(st, verify_one, &w, err);
    if (rc != KG_OK || !out->ok)
        goto cleanup;
    /* The rows hold together; the head says where they should end. */
    rc = kg_store_audit_head(st, &head_seq, head_hash, err);
    if (rc == KG_ECORRUPT) {
        rc = KG_OK;
        broken(&w, w.expected, "the chain head is missing or mangled");
        goto cleanup;
    }
    if (rc != KG_OK)
        goto cleanup;
    if (head_seq >= w.expected)
        broken(&w, w.expected, "entry is missing");
    else if (head_seq < w.expected - 1)
        broken(&w, head_seq + 1, "entry is not part of the chain (the head ends before it)");
    else if (sodium_memcmp(head_hash, w.prev, KG_AUDIT_HASH_HEX) != 0)
        broken(&w, head_seq, "entry does not match the chain head");
cleanup:
    sodium_memzero(w.key, sizeof(w.key));
    return rc;
}
