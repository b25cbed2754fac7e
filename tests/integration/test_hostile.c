/* integration/test_hostile.c - CTest: integration_test_hostile.
 *
 * A data-driven driver for raw, mostly malformed requests. Each case is two
 * files in tests/cases/http/: NNNN-name.req holds the exact bytes to send
 * (CRLF written out, NUL bytes and all; the text ${KEY} is replaced by a
 * valid key, so only the check under test can stop the request), and
 * NNNN-name.want what must come back (see tests/cases/http/README.md).
 *
 * The full form pins everything:
 *
 *   answer ... end        one block per answer, in order: its exact bytes
 *                         (status line, headers, blank line, body), with
 *                         ${DATE} and ${REQUEST_ID} standing for what changes
 *   answer none           no answer at all
 *   received ... end      one block per request the upstream received, in
 *                         order: method, target, version, headers, body
 *   closed yes|no         whether the server must close the connection
 *
 * The old form only samples (kept until every case is converted):
 *
 *   status 400            the status of each answer, in order; "none": no answer
 *   contains TEXT         TEXT appears in the raw answer bytes (repeatable)
 *   upstream N            requests the upstream must have seen (default 0
 *                         when no answer is 2xx)
 *
 * Every case is one cmocka test named after its file; adding a case is
 * adding a file. After all of them the daemon must still answer /health.
 *
 * Cases in tests/cases/admin/ (same two files, same directives except
 * "received" and "upstream") are sent to the admin listener instead, with ${KEY} the
 * platform admin key `keygate init` printed; there, the number of keys in
 * the store must not change unless an answer is 2xx (the admin API's
 * counterpart of "upstream 0": a request that slipped through would make one).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "helpers/daemon.h"
#include "helpers/http.h"
#include "helpers/upstream.h"

/* 1: every case must be in the full form, and an old-form case fails when
 * the bytes do not split into exactly its answers (an answer sent twice).
 * Flip to 1 once 0007, 0008, 0009, 0015, 0021 and 0030 are converted
 * (issue 19: their libmicrohttpd-level answers are being fixed). */
#ifndef KT_HOSTILE_STRICT
#define KT_HOSTILE_STRICT 0
#endif

#define MAX_STATUSES 8
#define MAX_CONTAINS 8
#define CASE_DEADLINE_MS 5000L
/* How long to watch for a close after the last expected answer: a server
 * closes right after its answer, so "closed yes" waits generously, and
 * "closed no" only needs to see that nothing happens for a while. */
#define LINGER_CLOSE_MS 1500L
#define LINGER_OPEN_MS 300L

/* An expected byte string: what a block of the .want file stands for. */
struct blob {
    char *p;
    size_t len;
};

struct want {
    int statuses[MAX_STATUSES];
    size_t nstatuses; /* 0 with "status none" */
    bool status_set;
    char *contains[MAX_CONTAINS];
    size_t ncontains;
    bool closed;
    bool closed_set;
    long upstream; /* -1: default */
    /* the full form */
    bool full;
    struct blob answers[MAX_STATUSES];
    size_t nanswers;
    struct blob received[MAX_STATUSES];
    size_t nreceived;
};

struct hcase {
    bool admin; /* tests/cases/admin/: sent to the admin listener */
    char name[128];
    char req_path[1024];
    char want_path[1024];
};

struct world {
    struct kt_upstream *up;
    struct kt_daemon *gw;
    struct kt_key key;
    char user_id[64]; /* the key's owner, for ${USER_ID} */
    char *admin_key;  /* printed by `keygate init` */
};

static struct world W;

/* What a case holds lives here, not on the stack: a failed assertion
 * longjmps out of the test, and free_slots (each test's teardown) frees it. */
static struct want CW;
static struct kt_raw_result CR;
static char *CB;

static int teardown(void **state);

#define KEY_LEN 54 /* "kg_" + 43 body + 8 checksum */

/* The key `keygate init` printed: the first run of key characters that
 * starts with the prefix and has a key's length. */
static char *
key_in(const char *text)
{
    for (const char *p = strstr(text, "kg_"); p != NULL; p = strstr(p + 1, "kg_")) {
        size_t n = 3;

        while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z') ||
               (p[n] >= '0' && p[n] <= '9'))
            n++;
        if (n == KEY_LEN)
            return strndup(p, n);
    }
    return NULL;
}

static bool
make_admin_key(void)
{
    struct kt_cli_result res;

    if (!kt_daemon_cli(W.gw, &res, (const char *const[]){"init", NULL}))
        return false;
    if (res.exit_code == 0)
        W.admin_key = key_in(res.out);
    kt_cli_result_cleanup(&res);
    kt_daemon_remember_key(W.gw, W.admin_key);
    return W.admin_key != NULL;
}

static int
setup(void **state)
{
    char cfg[256];
    json_t *show;
    const char *user;

    (void)state;
    kt_http_global_init();
    W.up = kt_upstream_start();
    if (W.up == NULL) {
        teardown(state);
        return -1;
    }
    snprintf(cfg, sizeof(cfg), "upstream %s\n", kt_upstream_url(W.up));
    W.gw = kt_daemon_new(cfg);
    if (W.gw == NULL || !make_admin_key() ||
        !kt_daemon_create_key(W.gw, "hostile", NULL, NULL, &W.key) || !kt_daemon_start(W.gw)) {
        teardown(state);
        return -1;
    }
    show =
        kt_daemon_cli_json(W.gw, (const char *const[]){"keys", "show", "--json", W.key.id, NULL});
    user = json_string_value(json_object_get(show, "user_id"));
    if (user == NULL || strlen(user) >= sizeof(W.user_id)) {
        json_decref(show);
        teardown(state);
        return -1;
    }
    snprintf(W.user_id, sizeof(W.user_id), "%s", user);
    json_decref(show);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    kt_daemon_free(W.gw);
    kt_upstream_stop(W.up);
    kt_key_cleanup(&W.key);
    free(W.admin_key);
    kt_http_global_cleanup();
    memset(&W, 0, sizeof(W));
    return 0;
}

/* ---- reading a case ---- */

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    *len = 0;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = '\0';
            *len = (size_t)n;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* Replaces every ${KEY} in the request bytes with the valid key. */
static char *
substitute_key(const char *raw, size_t len, const char *key, size_t *out_len)
{
    static const char token[] = "${KEY}";
    size_t tlen = sizeof(token) - 1, klen = strlen(key), n = 0;
    char *out = malloc(len + 1 + (len / tlen + 1) * klen);

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len;) {
        if (i + tlen <= len && memcmp(raw + i, token, tlen) == 0) {
            memcpy(out + n, key, klen);
            n += klen;
            i += tlen;
        } else {
            out[n++] = raw[i++];
        }
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

static void
want_cleanup(struct want *w)
{
    for (size_t i = 0; i < w->ncontains; i++)
        free(w->contains[i]);
    for (size_t i = 0; i < w->nanswers; i++)
        free(w->answers[i].p);
    for (size_t i = 0; i < w->nreceived; i++)
        free(w->received[i].p);
    memset(w, 0, sizeof(*w));
}

static int
free_slots(void **state)
{
    (void)state;
    want_cleanup(&CW);
    kt_raw_result_cleanup(&CR);
    free(CB);
    CB = NULL;
    return 0;
}

/* ---- the full form: blocks with placeholders ---- */

/* Placeholders the driver fills in before comparing... */
#define PH_KEY "${KEY}"
#define PH_KEY_ID "${KEY_ID}"
#define PH_USER_ID "${USER_ID}"
#define PH_UPSTREAM "${UPSTREAM}"
/* ...and the ones that match what changes from run to run. */
#define PH_DATE "${DATE}"
#define PH_REQUEST_ID "${REQUEST_ID}"
#define IMF_FIXDATE "Aaa, 00 Aaa 0000 00:00:00 GMT" /* A: upper, a: lower, 0: digit */
#define REQUEST_ID_LEN 32                           /* lower-case hex */

static void
blob_add(struct blob *b, const char *p, size_t n)
{
    char *q = realloc(b->p, b->len + n + 1);

    assert_non_null(q);
    memcpy(q + b->len, p, n);
    b->len += n;
    q[b->len] = '\0';
    b->p = q;
}

/* Appends one line of a block, the driver's placeholders filled in; an
 * unknown ${...} fails the case, so a typo cannot pass silently. In an admin
 * case ${KEY} is the admin key, and the hostile key's placeholders do not
 * apply. */
static void
blob_line(struct blob *b, const char *path, bool admin, const char *line, size_t n)
{
    const char *key = admin ? W.admin_key : W.key.key;
    char upstream[64];

    snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", kt_upstream_port(W.up));
    for (size_t i = 0; i < n;) {
        const char *at = line + i;
        size_t rest = n - i;

#define PH(name) (rest >= sizeof(name) - 1 && memcmp(at, name, sizeof(name) - 1) == 0)
        if (PH(PH_KEY)) {
            blob_add(b, key, strlen(key));
            i += sizeof(PH_KEY) - 1;
        } else if (admin && (PH(PH_KEY_ID) || PH(PH_USER_ID) || PH(PH_UPSTREAM))) {
            fail_msg("%s: no such placeholder in an admin case: \"%.*s\"", path, (int)n, line);
        } else if (PH(PH_KEY_ID)) {
            blob_add(b, W.key.id, strlen(W.key.id));
            i += sizeof(PH_KEY_ID) - 1;
        } else if (PH(PH_USER_ID)) {
            blob_add(b, W.user_id, strlen(W.user_id));
            i += sizeof(PH_USER_ID) - 1;
        } else if (PH(PH_UPSTREAM)) {
            blob_add(b, upstream, strlen(upstream));
            i += sizeof(PH_UPSTREAM) - 1;
        } else if (PH(PH_DATE) || PH(PH_REQUEST_ID)) {
            size_t len = PH(PH_DATE) ? sizeof(PH_DATE) - 1 : sizeof(PH_REQUEST_ID) - 1;

            blob_add(b, at, len); /* matched at comparison time */
            i += len;
        } else if (PH("${")) {
            fail_msg("%s: unknown placeholder in \"%.*s\"", path, (int)n, line);
        } else {
            blob_add(b, at, 1);
            i++;
        }
#undef PH
    }
}

/* Reads the block after an "answer" or "received" line up to its "end"
 * line: head lines (each sent as line CRLF), a blank line (CRLF), then the
 * body lines joined by LF (an empty last line gives a final LF).
 * *pos moves past "end". */
static void
parse_block(const char *path, bool admin, const char *text, size_t len, size_t *pos, struct blob *b)
{
    bool in_body = false, first_body = true;

    b->p = NULL;
    b->len = 0;
    blob_add(b, "", 0);
    while (*pos < len) {
        const char *line = text + *pos, *nl = memchr(line, '\n', len - *pos);
        size_t n = nl != NULL ? (size_t)(nl - line) : len - *pos;

        *pos += n + (nl != NULL);
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (n == 3 && memcmp(line, "end", 3) == 0) {
            if (!in_body)
                fail_msg("%s: a block needs a blank line after its head", path);
            return;
        }
        if (in_body) {
            if (!first_body)
                blob_add(b, "\n", 1);
            first_body = false;
            blob_line(b, path, admin, line, n);
        } else {
            in_body = n == 0;
            blob_line(b, path, admin, line, n);
            blob_add(b, "\r\n", 2);
        }
    }
    fail_msg("%s: a block without its \"end\" line", path);
}

/* Parses a .want file; fails the test on anything it does not understand. */
static void
parse_want(const char *path, bool admin, struct want *w)
{
    size_t len, pos = 0;
    char *text = slurp(path, &len);
    bool old = false;

    memset(w, 0, sizeof(*w));
    w->upstream = -1;
    if (text == NULL)
        fail_msg("%s: cannot read", path);
    CB = text; /* freed by free_slots should a check below fail */
    while (pos < len) {
        char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - line) : len - pos;
        char *arg;

        pos += n + (nl != NULL);
        line[n] = '\0';
        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        arg = strchr(line, ' ');
        if (arg != NULL)
            *arg++ = '\0';
        if (strcmp(line, "answer") == 0 && arg != NULL && strcmp(arg, "none") == 0) {
            w->full = w->status_set = true;
        } else if ((strcmp(line, "answer") == 0 || strcmp(line, "received") == 0) && arg == NULL) {
            bool answer = line[0] == 'a';
            size_t *count = answer ? &w->nanswers : &w->nreceived;

            if (*count == MAX_STATUSES)
                fail_msg("%s: more than %d %s blocks", path, MAX_STATUSES, line);
            if (!answer && admin)
                fail_msg("%s: the admin listener has no upstream: no received blocks", path);
            parse_block(path, admin, text, len, &pos,
                        answer ? &w->answers[*count] : &w->received[*count]);
            (*count)++;
            if (answer) {
                if (w->answers[*count - 1].len < 12 ||
                    memcmp(w->answers[*count - 1].p, "HTTP/1.1 ", 9) != 0)
                    fail_msg("%s: an answer block starts with its status line", path);
                w->full = w->status_set = true;
                w->statuses[w->nstatuses++] = atoi(w->answers[*count - 1].p + 9);
            }
        } else if (strcmp(line, "status") == 0 && arg != NULL) {
            old = w->status_set = true;
            if (strcmp(arg, "none") == 0)
                continue;
            for (char *s = strtok(arg, " "); s != NULL; s = strtok(NULL, " "))
                if (w->nstatuses < MAX_STATUSES)
                    w->statuses[w->nstatuses++] = atoi(s);
        } else if (strcmp(line, "contains") == 0 && arg != NULL && w->ncontains < MAX_CONTAINS) {
            old = true;
            w->contains[w->ncontains++] = strdup(arg);
        } else if (strcmp(line, "closed") == 0 && arg != NULL &&
                   (strcmp(arg, "yes") == 0 || strcmp(arg, "no") == 0)) {
            w->closed = strcmp(arg, "yes") == 0;
            w->closed_set = true;
        } else if (strcmp(line, "upstream") == 0 && arg != NULL && !admin) {
            old = true;
            w->upstream = atol(arg);
        } else {
            fail_msg("%s: cannot understand \"%s %s\"", path, line, arg != NULL ? arg : "");
        }
    }
    CB = NULL;
    free(text);
    if (w->full && old)
        fail_msg("%s: answer/received blocks and status/contains/upstream lines do not mix", path);
    if (w->nreceived > 0 && !w->full)
        fail_msg("%s: received blocks need answer blocks", path);
    if (!w->full && KT_HOSTILE_STRICT)
        fail_msg("%s: not in the full form (answer/received blocks): see README.md", path);
    if (!w->status_set || !w->closed_set)
        fail_msg("%s: needs an answer (or status) and a closed line", path);
    if (w->full && !admin) {
        w->upstream = (long)w->nreceived;
        return;
    }
    /* In an admin case, 0 means the key count must not change. */
    if (w->upstream < 0) {
        w->upstream = 0;
        for (size_t i = 0; i < w->nstatuses; i++)
            if (w->statuses[i] >= 200 && w->statuses[i] < 300)
                w->upstream = -1; /* a success may or may not be proxied: not checked */
    }
}

/* Compares what came (act) with a block (exp), placeholders matched.
 * ${REQUEST_ID} must stand for the same id everywhere in one block.
 * On a difference, says where into why and returns false. */
static bool
blob_match(const struct blob *exp, const char *act, size_t alen, char *why, size_t whylen)
{
    char id[REQUEST_ID_LEN + 1] = "";
    size_t i = 0, j = 0;

    while (i < exp->len) {
        const char *at = exp->p + i;
        size_t rest = exp->len - i;

        if (rest >= sizeof(PH_DATE) - 1 && memcmp(at, PH_DATE, sizeof(PH_DATE) - 1) == 0) {
            static const char shape[] = IMF_FIXDATE;

            for (size_t k = 0; k < sizeof(shape) - 1; k++) {
                char c = j + k < alen ? act[j + k] : '\0', s = shape[k];

                if ((s == 'A' && !(c >= 'A' && c <= 'Z')) ||
                    (s == 'a' && !(c >= 'a' && c <= 'z')) ||
                    (s == '0' && !(c >= '0' && c <= '9')) ||
                    (s != 'A' && s != 'a' && s != '0' && c != s)) {
                    snprintf(why, whylen, "byte %zu: not a date (%s)", j + k, IMF_FIXDATE);
                    return false;
                }
            }
            i += sizeof(PH_DATE) - 1;
            j += sizeof(shape) - 1;
            continue;
        }
        if (rest >= sizeof(PH_REQUEST_ID) - 1 &&
            memcmp(at, PH_REQUEST_ID, sizeof(PH_REQUEST_ID) - 1) == 0) {
            for (size_t k = 0; k < REQUEST_ID_LEN; k++) {
                char c = j + k < alen ? act[j + k] : '\0';

                if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                    snprintf(why, whylen, "byte %zu: not a request id (32 hex digits)", j + k);
                    return false;
                }
            }
            if (id[0] == '\0') {
                memcpy(id, act + j, REQUEST_ID_LEN);
            } else if (memcmp(id, act + j, REQUEST_ID_LEN) != 0) {
                snprintf(why, whylen, "byte %zu: another request id than %s", j, id);
                return false;
            }
            i += sizeof(PH_REQUEST_ID) - 1;
            j += REQUEST_ID_LEN;
            continue;
        }
        if (j >= alen || act[j] != *at) {
            snprintf(why, whylen, "byte %zu: %s", j, j >= alen ? "ends early" : "differs");
            return false;
        }
        i++;
        j++;
    }
    if (j != alen) {
        snprintf(why, whylen, "byte %zu: %zu more byte(s) than wanted", j, alen - j);
        return false;
    }
    return true;
}

/* Bytes, printable, for failure messages: CR shown as \r so a .want
 * block can be checked against them line by line. */
static void
print_bytes(const char *what, const char *p, size_t len)
{
    char buf[2400];
    size_t n = 0;

    for (size_t i = 0; i < len && n + 5 < sizeof(buf); i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '\n' || (c >= 0x20 && c < 0x7f))
            buf[n++] = (char)c;
        else if (c == '\r')
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\\r");
        else
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\\x%02x", c);
    }
    buf[n] = '\0';
    /* Not print_error(): it cuts long messages short. */
    fflush(stdout);
    fprintf(stderr, "%s (%zu bytes):\n%s\n", what, len, buf);
}

static void
print_answer(const struct kt_raw_result *r)
{
    print_bytes(r->closed ? "answer (then closed)" : "answer (left open)", r->data, r->len);
}

static bool
memcontains(const char *hay, size_t hlen, const char *needle)
{
    size_t nlen = strlen(needle);

    for (size_t i = 0; i + nlen <= hlen; i++)
        if (memcmp(hay + i, needle, nlen) == 0)
            return true;
    return false;
}

/* Keys in the store, revoked ones included. */
static size_t
count_keys(void)
{
    json_t *list = kt_daemon_cli_json(
        W.gw, (const char *const[]){"keys", "list", "--state", "all", "--json", NULL});
    size_t n = json_array_size(list);

    json_decref(list);
    return n;
}

static void
run_case(void **state)
{
    const struct hcase *c = *state;
    struct kt_raw_resp resps[MAX_STATUSES + 1];
    size_t raw_len, len = 0, nresp, before, before_req, used = 0, keys_before = 0;
    char why[160];
    char *raw;
    bool ok = true;

    parse_want(c->want_path, c->admin, &CW);
    raw = slurp(c->req_path, &raw_len);
    assert_non_null(raw);
    CB = substitute_key(raw, raw_len, c->admin ? W.admin_key : W.key.key, &len);
    free(raw);
    assert_non_null(CB);

    before = kt_upstream_count(W.up);
    before_req = kt_upstream_request_count(W.up);
    if (c->admin)
        keys_before = count_keys();
    assert_true(kt_raw_exchange(
        c->admin ? kt_daemon_admin_port(W.gw) : kt_daemon_port(W.gw), CB, len, (int)CW.nstatuses,
        CW.closed ? LINGER_CLOSE_MS : LINGER_OPEN_MS, CASE_DEADLINE_MS, &CR));
    nresp = kt_raw_parse(CR.data, CR.len, CR.closed, resps, MAX_STATUSES + 1);

    if (nresp != CW.nstatuses) {
        print_error("%s: %zu answers, wanted %zu\n", c->name, nresp, CW.nstatuses);
        ok = false;
    }
    for (size_t i = 0; i < nresp && i < CW.nstatuses; i++) {
        if (resps[i].status != CW.statuses[i]) {
            print_error("%s: answer %zu is %d, wanted %d\n", c->name, i + 1, resps[i].status,
                        CW.statuses[i]);
            ok = false;
        }
    }
    if (nresp > 0)
        used = resps[nresp - 1].body_off + resps[nresp - 1].body_len;
    /* An answer sent twice: a second status line inside the first answer's
     * body, or bytes after the last answer. The full form's exact bytes
     * catch both; the old form's check waits for KT_HOSTILE_STRICT. */
    if ((CW.full || KT_HOSTILE_STRICT) && nresp == CW.nstatuses) {
        for (size_t i = 0; i < nresp; i++) {
            if (resps[i].body_len >= 7 && memcmp(CR.data + resps[i].body_off, "HTTP/1.", 7) == 0) {
                print_error("%s: answer %zu holds a second status line\n", c->name, i + 1);
                ok = false;
            }
        }
        if (used != CR.len) {
            print_error("%s: %zu byte(s) after the last answer\n", c->name, CR.len - used);
            ok = false;
        }
    }
    for (size_t i = 0; i < CW.nanswers && i < nresp; i++) {
        const struct kt_raw_resp *r = &resps[i];

        if (!blob_match(&CW.answers[i], CR.data + r->head_off,
                        r->body_off + r->body_len - r->head_off, why, sizeof(why))) {
            print_error("%s: answer %zu, %s\n", c->name, i + 1, why);
            print_bytes("wanted", CW.answers[i].p, CW.answers[i].len);
            ok = false;
        }
    }
    for (size_t i = 0; i < CW.nreceived; i++) {
        char *got = kt_upstream_request(W.up, before_req + i);

        if (got == NULL) {
            print_error("%s: the upstream did not receive request %zu\n", c->name, i + 1);
            ok = false;
        } else if (!blob_match(&CW.received[i], got, strlen(got), why, sizeof(why))) {
            print_error("%s: request %zu the upstream received, %s\n", c->name, i + 1, why);
            print_bytes("wanted", CW.received[i].p, CW.received[i].len);
            print_bytes("received", got, strlen(got));
            ok = false;
        }
        free(got);
    }
    if (!c->admin && CW.full && kt_upstream_request_count(W.up) - before_req != CW.nreceived) {
        print_error("%s: the upstream received %zu whole request(s), wanted %zu\n", c->name,
                    kt_upstream_request_count(W.up) - before_req, CW.nreceived);
        ok = false;
    }
    for (size_t i = 0; i < CW.ncontains; i++) {
        if (!memcontains(CR.data, CR.len, CW.contains[i])) {
            print_error("%s: answer lacks \"%s\"\n", c->name, CW.contains[i]);
            ok = false;
        }
    }
    if (CR.closed != CW.closed) {
        print_error("%s: connection %s, wanted %s\n", c->name, CR.closed ? "closed" : "open",
                    CW.closed ? "closed" : "open");
        ok = false;
    }
    if (c->admin && CW.upstream == 0 && count_keys() != keys_before) {
        print_error("%s: the store's key count changed from %zu\n", c->name, keys_before);
        ok = false;
    }
    if (!c->admin && CW.upstream >= 0 && kt_upstream_count(W.up) - before != (size_t)CW.upstream) {
        char *seen = kt_upstream_targets(W.up);

        print_error("%s: the upstream saw %zu request(s), wanted %ld; all it saw:\n%s", c->name,
                    kt_upstream_count(W.up) - before, CW.upstream, seen);
        free(seen);
        ok = false;
    }
    if (!kt_daemon_running(W.gw)) {
        char *log = kt_daemon_log(W.gw);

        print_error("%s: keygate is no longer running; its log:\n%s\n", c->name, log);
        free(log);
        ok = false;
    }
    if (!ok)
        print_answer(&CR);
    assert_true(ok);
}

static void
test_the_daemon_still_answers_health_after_every_case(void **state)
{
    char auth[512];
    const char *hdrs[] = {auth, NULL};
    struct kt_http_resp r;

    (void)state;
    assert_true(kt_daemon_running(W.gw));
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", W.key.key);
    assert_true(kt_http_get(kt_daemon_url(W.gw, "/health"), hdrs, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    kt_http_resp_cleanup(&r);
}

static void
test_the_daemon_stops_cleanly(void **state)
{
    (void)state;
    assert_int_equal(kt_daemon_stop(W.gw), 0);
}

static int
is_req(const struct dirent *e)
{
    size_t n = strlen(e->d_name);

    return n > 4 && strcmp(e->d_name + n - 4, ".req") == 0;
}

/* Adds one test per .req in src/tests/cases/sub; the number added, or -1. */
static int
add_cases(const char *src, const char *sub, bool admin, struct hcase *cases,
          struct CMUnitTest *tests, int room)
{
    struct dirent **names = NULL;
    char dir[400];
    int n;

    snprintf(dir, sizeof(dir), "%s/tests/cases/%s", src, sub);
    n = scandir(dir, &names, is_req, alphasort);
    if (n <= 0 || n > room) {
        fprintf(stderr, "%s: no .req cases, or more than %d\n", dir, room);
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct hcase *c = &cases[i];
        size_t len = strlen(names[i]->d_name) - 4;

        c->admin = admin;
        snprintf(c->name, sizeof(c->name), "%s%.*s", admin ? "admin/" : "", (int)len,
                 names[i]->d_name);
        snprintf(c->req_path, sizeof(c->req_path), "%s/%s", dir, names[i]->d_name);
        snprintf(c->want_path, sizeof(c->want_path), "%s/%.*s.want", dir, (int)len,
                 names[i]->d_name);
        tests[i] = (struct CMUnitTest){.name = c->name,
                                       .test_func = run_case,
                                       .teardown_func = free_slots,
                                       .initial_state = c};
        free(names[i]);
    }
    free(names);
    return n;
}

#define MAX_CASES 512

int
main(void)
{
    const char *src = getenv("KEYGATE_SOURCE_DIR");
    struct CMUnitTest *tests;
    struct hcase *cases;
    int n, ntests = 0, rc;

    if (src == NULL || src[0] == '\0') {
        fprintf(stderr, "KEYGATE_SOURCE_DIR is not set (run the tests through ctest)\n");
        return 1;
    }
    cases = calloc(MAX_CASES, sizeof(*cases));
    tests = calloc(MAX_CASES + 2, sizeof(*tests));
    if (cases == NULL || tests == NULL)
        return 1;
    n = add_cases(src, "http", false, cases, tests, MAX_CASES);
    if (n < 0)
        return 1;
    ntests = n;
    n = add_cases(src, "admin", true, cases + ntests, tests + ntests, MAX_CASES - ntests);
    if (n < 0)
        return 1;
    ntests += n;
    tests[ntests++] =
        (struct CMUnitTest)cmocka_unit_test(test_the_daemon_still_answers_health_after_every_case);
    tests[ntests++] = (struct CMUnitTest)cmocka_unit_test(test_the_daemon_stops_cleanly);
    rc =
        _cmocka_run_group_tests("integration_test_hostile", tests, (size_t)ntests, setup, teardown);
    free(tests);
    free(cases);
    return rc;
}
