/* helpers/http.h - the integration tests' HTTP clients.
 *
 * Two of them. kt_http_*: libcurl easy (and multi, for concurrency) with
 * arbitrary request headers, returning status, the final response's header
 * block and the body; bodies can be generated on the fly so a 64 MiB upload
 * never sits in memory, and a response body can be reduced to its length
 * and hash for the same reason; kt_http_*_key() add an API key as
 * "Authorization: Bearer KEY". kt_raw_*: exact bytes over a TCP socket to
 * 127.0.0.1, for requests no well-behaved client would send.
 *
 * Both only ever talk to loopback, ignore proxy settings from the
 * environment and give up at a deadline, so a hung daemon fails a test
 * instead of hanging it. Not thread-safe per request; separate requests may
 * run on separate threads once kt_http_global_init() has run.
 */
#ifndef KT_HTTP_H
#define KT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The deterministic body pattern both the client and the stub upstream use:
 * fills buf with bytes offset..offset+len of the endless pattern. */
void kt_http_pattern(uint64_t offset, void *buf, size_t len);

/* FNV-1a 64 over a stream: start from KT_HTTP_HASH_INIT, feed pieces in order. */
#define KT_HTTP_HASH_INIT 0xcbf29ce484222325ULL
uint64_t kt_http_hash(uint64_t h, const void *buf, size_t len);

/* Hash of the first len bytes of the pattern. */
uint64_t kt_http_pattern_hash(uint64_t len);

/* Once per process, before any thread uses the client; and once at the end. */
void kt_http_global_init(void);
void kt_http_global_cleanup(void);

struct kt_http_req {
    const char *method; /* NULL: GET, or POST when there is a body */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines; "Name;" sends it empty */
    const void *body;           /* in-memory body of body_len bytes, or NULL */
    size_t body_len;
    bool generate; /* stream gen_len bytes of kt_http_pattern() as the body */
    uint64_t gen_len;
    bool chunked;        /* send the body chunked instead of with Content-Length */
    bool discard_body;   /* keep only the response body's length and hash */
    long timeout_ms;     /* whole transfer; 0: 30 s */
    const char *ca_file; /* https: PEM CA file to verify the server with; NULL: system CAs */
};

struct kt_http_resp {
    int curl_result;    /* CURLcode; 0 when the exchange completed */
    long status;        /* 0 when there was no answer */
    char *headers;      /* raw header block of the final response, NUL-terminated */
    char *body;         /* NUL-terminated (not with discard_body: then NULL) */
    size_t body_len;    /* bytes received, kept or not */
    uint64_t body_hash; /* kt_http_hash() of the received body */
    double seconds;     /* duration of the transfer */
};

/* Runs one request. Returns true when an HTTP answer came back (any
 * status); out is filled in either case and must be cleaned up. */
bool kt_http_do(const struct kt_http_req *req, struct kt_http_resp *out);

/* Runs n requests concurrently (curl multi, one connection each) and
 * returns when all have finished; true when every one got an answer. */
bool kt_http_do_many(const struct kt_http_req *reqs, struct kt_http_resp *outs, size_t n);

/* GET url with the given headers (NULL-terminated, may be NULL). */
bool kt_http_get(const char *url, const char *const *headers, struct kt_http_resp *out);

/* kt_http_do() with "Authorization: Bearer KEY" sent before req's own
 * headers; key NULL: no Authorization line, req as it is. At most 14 of
 * req's headers (more aborts). */
bool kt_http_do_key(const struct kt_http_req *req, const char *key, struct kt_http_resp *out);

/* GET url with the key (NULL: none) and then the extra headers
 * (NULL-terminated, may be NULL), as kt_http_do_key(). */
bool kt_http_get_key(const char *url, const char *key, const char *const *headers,
                     struct kt_http_resp *out);

/* First value of header name in the response (case-insensitive name,
 * value without surrounding blanks), malloc'd; NULL when absent. */
char *kt_http_header(const struct kt_http_resp *resp, const char *name);

/* The same, copied into buf (cut to cap - 1 bytes): returns buf, or NULL
 * when absent. Nothing to free, so an assertion after it leaks nothing. */
const char *kt_http_header_buf(const struct kt_http_resp *resp, const char *name, char *buf,
                               size_t cap);

/* How many times header name appears in the response. */
size_t kt_http_header_count(const struct kt_http_resp *resp, const char *name);

/* Frees what kt_http_do() put in resp; zeroes it. */
void kt_http_resp_cleanup(struct kt_http_resp *resp);

/* ---- raw bytes ---- */

struct kt_raw_result {
    bool connected;
    char *data; /* everything the server sent, NUL-terminated (may hold NULs) */
    size_t len;
    bool closed; /* the server closed (or reset) the connection */
};

/* Connects to 127.0.0.1:port, sends len bytes and reads until the server
 * closes the connection or deadline_ms passes. With want_responses > 0 it
 * stops earlier: once that many complete responses (framed by
 * Content-Length) have arrived and linger_ms more passed without a close.
 * Returns false only when it could not connect; out must be cleaned up. */
bool kt_raw_exchange(int port, const void *bytes, size_t len, int want_responses, long linger_ms,
                     long deadline_ms, struct kt_raw_result *out);

/* One complete response found in raw bytes. */
struct kt_raw_resp {
    int status;
    size_t head_off, head_len; /* status line and headers, without the blank line */
    size_t body_off, body_len;
};

/* Parses up to max complete Content-Length-framed responses (1xx skipped)
 * from data; returns how many. A response without Content-Length counts
 * only if the connection was closed (its body runs to the end). */
size_t kt_raw_parse(const char *data, size_t len, bool closed, struct kt_raw_resp *out, size_t max);

void kt_raw_result_cleanup(struct kt_raw_result *r);

/* ---- credentials sent ----
 *
 * Every request above is read for credentials before it goes out: the
 * value of a header named like a credential (Authorization without its
 * scheme word, any name with "key" or "token" in it), 12 to 200 characters,
 * and anything key-shaped (51+ of [A-Za-z0-9_] ending in 8 lower-case hex)
 * in the target, a header or a body. They are kept for the whole process;
 * helpers/daemon.c fails a test when any log or the store of a daemon holds
 * one. Thread-safe. */

/* Records the credentials in bytes (request text: lines of "Name: value"). */
void kt_http_note_sent(const void *bytes, size_t len);

/* Calls fn for each credential recorded so far (i counts from 0) while it
 * returns true; false when fn stopped the walk. fn must not send anything. */
bool kt_http_sent_each(bool (*fn)(const char *cred, size_t i, void *ctx), void *ctx);

/* Milliseconds on the monotonic clock. */
int64_t kt_mono_ms(void);

/* Sleeps ms milliseconds. */
void kt_sleep_ms(long ms);

#endif
