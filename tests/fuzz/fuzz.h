/* tests/fuzz/fuzz.h - what the libFuzzer targets share: NUL-terminated
 * copies of the input, a raw HTTP request cut into its request line and
 * header fields, and a config loaded from text. Harness code only: every
 * target calls the library's own parsers (libkeygate_core). */
#ifndef KEYGATE_FUZZ_H
#define KEYGATE_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keygate/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* data[0..size) with a NUL after it; malloc'd (aborts when out of memory). */
char *fz_strndup(const uint8_t *data, size_t size);

/* Splits input at the first occurrence of the byte sep: *a gets what comes
 * before (NUL-terminated copy), *b what comes after. Both malloc'd. */
void fz_split(const uint8_t *data, size_t size, char sep, char **a, char **b);

/* Calls line_fn for the request line and header_fn for every "name: value"
 * line of a raw request (lines end in LF, a CR before it is dropped; the
 * header block ends at the first empty line), then end_fn. name and value
 * are NUL-terminated copies with their exact lengths (either may hold NUL
 * bytes), all valid until end_fn returns, as libmicrohttpd's are for the
 * whole request. Any callback may be NULL. */
struct fz_request_fns {
    void (*line_fn)(void *ctx, const char *line, size_t len);
    void (*header_fn)(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen);
    void (*end_fn)(void *ctx);
};
void fz_request(const uint8_t *data, size_t size, const struct fz_request_fns *fns, void *ctx);

/* Loads text as a config file (through a memfd, so kg_config_load reads it
 * the way it reads any file). NULL when the loader refused it. *nreports
 * (may be NULL) gets how many problems the loader reported. */
struct kg_config *fz_config(const char *text, size_t len, int *nreports);

#endif
