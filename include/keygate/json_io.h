/* keygate/json_io.h - strict JSON in, JSON out, for both listeners (the admin
 * API, signup), manage/ and the CLI's --json.
 *
 * Requests: a body is collected under a hard cap (64 KiB; past it the edge
 * answers 413), must be declared application/json (else 415), must parse
 * (else 400 "Malformed JSON body") and must be an object whose every member
 * is one the endpoint knows, with the type it expects (else 400 naming the
 * member). A field table says what an endpoint accepts; decoding fills the
 * caller's variables and never allocates per field: strings are borrowed
 * from the parsed document, which the caller frees with json_decref().
 *
 * Responses: helpers that turn times and optional strings into JSON values
 * the same way everywhere. Error bodies come from http/respond.c so both
 * listeners speak one error style. Pure; any thread.
 */
#ifndef KEYGATE_JSON_IO_H
#define KEYGATE_JSON_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keygate/status.h"

#define KG_JSON_BODY_MAX (64 * 1024)
#define KG_JSON_MALFORMED "Malformed JSON body"

/* The largest count an admin body may carry: credits, a burst. */
#define KG_JSON_COUNT_MAX INT64_C(1000000000)

/* ---- collecting a request body ---- */

/* A body being received; fields are private, use the functions. */
struct kg_jbody {
    char *data;
    size_t len, cap;
    bool too_big; /* more than KG_JSON_BODY_MAX bytes arrived; data was dropped */
    bool failed;  /* out of memory */
};

void kg_jbody_init(struct kg_jbody *b);
/* Appends n bytes. Past KG_JSON_BODY_MAX the buffer is freed and too_big
 * set; later bytes are only counted away. Returns false once too_big or
 * failed is set. */
bool kg_jbody_feed(struct kg_jbody *b, const char *data, size_t n);
void kg_jbody_cleanup(struct kg_jbody *b);

/* True when a Content-Type value is application/json, in any case, with or
 * without parameters ("application/json; charset=utf-8"). NULL is false. */
bool kg_json_io_content_type_ok(const char *content_type);

/* True when a client's name (a JSON member, a query parameter) can be
 * quoted back in an error as it is: 1..64 bytes of printable ASCII without
 * spaces, so the message stays one clean line. */
bool kg_json_io_quotable(const char *s);

/* ---- decoding ---- */

enum kg_jtype {
    KG_JSTRING, /* out: const char ** borrowed from the document */
    KG_JBOOL,   /* out: bool * */
    KG_JINT,    /* out: int64_t *; a JSON integer (no fraction, no exponent) */
    KG_JSCOPES, /* out: char[KG_SCOPES_MAX]; a string "a,b" or an array of strings */
    KG_JARRAY,  /* out: json_t ** borrowed from the document; any JSON array */
};

/* One member an endpoint accepts. */
struct kg_jfield {
    const char *name;
    enum kg_jtype type;
    bool required; /* absent (or null when !nullable) -> "NAME is required" */
    bool nullable; /* null is accepted and reported through is_null */
    void *out;
    bool *present; /* may be NULL: set when the member is in the body */
    bool *is_null; /* may be NULL: set when the member is null (nullable only) */
    /* KG_JINT: the documented range, both ends included; outside it the
     * answer is "NAME must be an integer from MIN to MAX". Both 0: any. */
    int64_t min, max;
};

/* Parses body[0..len) and fills every field found. KG_EINVAL with the words
 * the client should see: "Malformed JSON body", "JSON body must be an
 * object", "unknown field: NAME", "NAME must be a string", "NAME is
 * required", … On KG_OK *root_out (may be NULL when no field borrows a
 * string) holds the document the borrowed strings point into:
 * json_decref() it. An empty body (len 0) is an empty object. */
enum kg_status kg_json_io_decode(const char *body, size_t len, const struct kg_jfield *fields,
                                 size_t nfields, json_t **root_out, struct kg_err *err);

/* ---- encoding ---- */

/* An RFC 3339 string for a Unix time, or JSON null when t is 0 ("not set"). */
json_t *kg_json_io_time(int64_t t);

/* A JSON string, or null when s is NULL or empty. */
json_t *kg_json_io_str_or_null(const char *s);

/* A JSON array of the comma-separated items of list, e.g. scopes or a role
 * ("a,b" -> ["a","b"]; "" or NULL -> []; empty items are skipped). NULL
 * when out of memory. */
json_t *kg_json_io_list(const char *list);

/* doc with value as its member name, taking both references, or NULL with
 * both released when either is NULL (an allocation that failed) or the
 * member cannot be added: doc = kg_json_io_attach(make_a(), "b", make_b())
 * leaks nothing whichever allocation fails. */
json_t *kg_json_io_attach(json_t *doc, const char *name, json_t *value);

/* json_dumps() in the separators the seeds use ({"a": 1, "b": 2}); malloc'd
 * or NULL on allocation failure. */
char *kg_json_io_dump(const json_t *v);

/* Dumps obj, whose member field must be the empty string "" (a placeholder),
 * with secret (a key: printable ASCII without quotes or backslashes) as that
 * member's value. The secret is never handed to jansson: the result is
 * assembled in sodium_malloc'd memory, which kg_json_io_secret_free() wipes
 * (it fits MHD_ContentReaderFreeCallback). *len_out gets the length without
 * the NUL. NULL when out of memory, when the placeholder is missing, or when
 * secret has a character that would need escaping. */
char *kg_json_io_dump_secret(const json_t *obj, const char *field, const char *secret,
                             size_t *len_out);
void kg_json_io_secret_free(void *buf);

#endif
