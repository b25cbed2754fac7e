/* events/webhook.c - one webhook delivery: the JSON body of an event, its
 * signature (HMAC-SHA-256 over "t.body" with the webhook's secret, as
 * Stripe signs), and the POST (libcurl easy, on the sender's thread). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "keygate/json_io.h"
#include "keygate/timeutil.h"
#include "keygate/webhook.h"

char *
kg_webhook_body(const struct kg_event *ev)
{
    json_error_t jerr;
    json_t *data, *o;
    char *s;

    /* Zeroed: jansson can fail before it writes the error (unknown, then). */
    memset(&jerr, 0, sizeof(jerr));
    data = json_loads(ev->data, 0, &jerr);
    /* Out of memory is a failure the sender retries, not an empty "data". */
    if (data == NULL && (json_error_code(&jerr) == json_error_out_of_memory ||
                         json_error_code(&jerr) == json_error_unknown))
        return NULL;
    if (data == NULL || !json_is_object(data)) {
        json_decref(data);
        data = json_object();
    }
    o = json_pack("{s:s, s:s, s:o, s:s, s:{s:s?, s:s?, s:s?}, s:s?, s:o}", "id", ev->id, "type",
                  ev->type, "time", kg_json_io_time(ev->time), "tenant", ev->tenant, "key", "id",
                  ev->key_id[0] != '\0' ? ev->key_id : NULL, "prefix",
                  ev->prefix[0] != '\0' ? ev->prefix : NULL, "name",
                  ev->name[0] != '\0' ? ev->name : NULL, "user",
                  ev->user_id[0] != '\0' ? ev->user_id : NULL, "data", data);
    if (o == NULL)
        return NULL;
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

void
kg_webhook_sign(const unsigned char *secret, size_t secret_len, int64_t t, const char *body,
                size_t body_len, char out[KG_WEBHOOK_SIG_MAX])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char ts[24], hex[2 * crypto_auth_hmacsha256_BYTES + 1];
    int n = snprintf(ts, sizeof(ts), "%" PRId64, t);

    crypto_auth_hmacsha256_init(&st, secret, secret_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, (unsigned long long)n);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, body_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
    snprintf(out, KG_WEBHOOK_SIG_MAX, "t=%s,v1=%s", ts, hex);
    sodium_memzero(&st, sizeof(st));
}

/* The receiver's answer body is not wanted. */
static size_t
discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

bool
kg_webhook_post(const struct kg_webhook *w, const struct kg_event *ev, const char *body,
                int64_t now, int64_t timeout_ms, long *status, char *error, size_t errlen)
{
    char sig[KG_WEBHOOK_SIG_MAX], h_sig[KG_WEBHOOK_SIG_MAX + 32], h_id[KG_ID_MAX + 32];
    char cerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL, *tmp;
    CURL *c = curl_easy_init();
    CURLcode rc;
    bool ok = false;

    *status = 0;
    error[0] = '\0';
    if (c == NULL) {
        snprintf(error, errlen, "out of memory");
        return false;
    }
    kg_webhook_sign(w->secret, w->secret_len, now, body, strlen(body), sig);
    snprintf(h_sig, sizeof(h_sig), "Keygate-Signature: %s", sig);
    snprintf(h_id, sizeof(h_id), "Keygate-Event-Id: %s", ev->id);
    const char *lines[] = {"Content-Type: application/json", "User-Agent: keygate-webhook/1", h_sig,
                           h_id, "Expect:"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        tmp = curl_slist_append(hdrs, lines[i]);
        if (tmp == NULL) {
            snprintf(error, errlen, "out of memory");
            goto cleanup;
        }
        hdrs = tmp;
    }
    curl_easy_setopt(c, CURLOPT_URL, w->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    /* A webhook URL names its endpoint; no redirect is followed, no proxy
     * from the environment is used. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        snprintf(error, errlen, "%s", cerr[0] != '\0' ? cerr : curl_easy_strerror(rc));
        goto cleanup;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    ok = *status >= 200 && *status <= 299;
    if (!ok)
        snprintf(error, errlen, "HTTP %ld", *status);
cleanup:
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return ok;
}
