/* keygate/accesslog.h - the access log: one JSON object per line per request.
 *
 * The event loops never format or write: a loop reserves a slot in a
 * bounded lock-free ring (multi-producer, one consumer), fills the fixed
 * record in place (no allocation) and commits it. A writer thread turns
 * records into JSON lines (accessfmt.c, by hand), collects them in a buffer and writes
 * it at least every 200 ms, and before it stops. When the ring is full the
 * record is dropped and counted (kg_accesslog_dropped() and
 * keygate_access_log_dropped_total), never waited for. The ring is
 * allocated the first time the log is on: "off" costs no memory.
 *
 * A destination that stops taking lines (a pipe nobody reads) never blocks
 * the controlling thread: a pipe is written only when poll() says it has
 * room, and once a switch or the exit waits for it and it has taken nothing
 * for a second, its lines are dropped and counted.
 *
 * Destinations: "off", "stdout", "stderr" or a file path (opened with
 * O_APPEND, created 0640). kg_accesslog_reopen() (SIGUSR1, logrotate) and
 * kg_accesslog_set_dest() (a new config) switch files on the writer thread.
 *
 * Threads: reserve/commit/enabled from any thread; the rest from one
 * controlling thread (the main thread).
 */
#ifndef KEYGATE_ACCESSLOG_H
#define KEYGATE_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "keygate/clientip.h"
#include "keygate/headers.h"
#include "keygate/status.h"
#include "keygate/store.h"

#define KG_ACCESSLOG_METHOD_MAX 33 /* method_ok() allows 32 characters */
#define KG_ACCESSLOG_TENANT_MAX 65 /* a tenant name is at most 64 characters */
#define KG_ACCESSLOG_PATH_MAX 512  /* longer paths are cut (to 511 bytes) */
/* 170 ms of lines at 100,000 requests a second: a writer thread scheduled
 * late on a busy machine catches up instead of dropping (measured: 4096
 * dropped 7 % at 95,000 401s a second on 2 shared cores, 16384 none). About
 * 14 MiB, allocated only when the log is on. */
#define KG_ACCESSLOG_RING_DEFAULT 16384

/* The record's strings, packed back to back in this order. */
enum kg_accesslog_str {
    KG_AL_REQUEST_ID,
    KG_AL_REMOTE,
    KG_AL_METHOD,
    KG_AL_KEY_ID,
    KG_AL_TENANT,
    KG_AL_PATH,
    KG_AL_NSTR,
};

#define KG_ACCESSLOG_TEXT_MAX                                                                      \
    (KG_REQUEST_ID_MAX + KG_CLIENTIP_MAX + KG_ACCESSLOG_METHOD_MAX + KG_ID_MAX +                   \
     KG_ACCESSLOG_TENANT_MAX + KG_ACCESSLOG_PATH_MAX)

/* One request. Empty strings, status 0, upstream_status 0, bytes_sent < 0
 * and outcome KG_OUTCOME_NONE are written as null. The strings are packed
 * (kg_accesslog_rec_strings), so a loop writes the few cache lines a line
 * needs, not every field's maximum. */
struct kg_accesslog_rec {
    int64_t time_ms;     /* wall clock when the request completed, ms since the epoch */
    int64_t end_mono_us; /* when time_ms is 0: kg_time_mono_us() then, which the writer
                          * turns into wall time (one clock read per request, not two) */
    int64_t duration_us; /* request line received → request complete */
    int64_t bytes_sent;  /* response body bytes handed to the connection */
    unsigned status;
    unsigned upstream_status;
    int outcome;              /* enum kg_outcome */
    uint16_t len[KG_AL_NSTR]; /* each string's length in text */
    char text[KG_ACCESSLOG_TEXT_MAX];
};

/* Packs the strings into rec (NULL or "" is null; each cut to its field's
 * maximum less one: a path to 511 bytes; a key-like run across the cut is
 * masked here, since the writer cannot see it whole). path is path_len
 * bytes, any bytes (without the query string); the others are
 * NUL-terminated. */
void kg_accesslog_rec_strings(struct kg_accesslog_rec *rec, const char *request_id,
                              const char *remote, const char *method, const char *key_id,
                              const char *tenant, const char *path, size_t path_len);

struct kg_accesslog;

/* Opens dest and starts the writer thread; capacity is the ring's size in
 * records (rounded up to a power of two; 0: KG_ACCESSLOG_RING_DEFAULT).
 * KG_EINVAL for an empty dest, KG_EIO when the file cannot be opened. */
enum kg_status kg_accesslog_new(const char *dest, size_t capacity, struct kg_accesslog **out,
                                struct kg_err *err);

/* True when requests should be logged: al is not NULL and not "off". */
bool kg_accesslog_enabled(const struct kg_accesslog *al);

/* A slot to fill, or NULL (dropped and counted) when the ring is full or
 * the log is off. Every reserved slot must be committed, at once. */
struct kg_accesslog_rec *kg_accesslog_reserve(struct kg_accesslog *al);
void kg_accesslog_commit(struct kg_accesslog *al, struct kg_accesslog_rec *rec);

/* Asks the writer to reopen the file (after logrotate renamed it). Returns
 * at once; a no-op for stdout, stderr and off. */
void kg_accesslog_reopen(struct kg_accesslog *al);

/* Switches to a new destination (a reloaded config): a file is opened
 * here, so a bad path is an error for the caller and nothing changes.
 * Returns once the writer has switched (lines committed before go to the
 * old destination, lines committed after to the new one), or after 2.5 s
 * when the old destination is stuck (the switch then happens when the
 * writer is free; a warning is logged). */
enum kg_status kg_accesslog_set_dest(struct kg_accesslog *al, const char *dest, struct kg_err *err);

/* Waits (at most timeout_ms) until every record committed before the call
 * is written; false on timeout. */
bool kg_accesslog_sync(struct kg_accesslog *al, int64_t timeout_ms);

/* Lines dropped because the ring was full or the destination was given
 * up, since kg_accesslog_new(). */
uint64_t kg_accesslog_dropped(const struct kg_accesslog *al);

/* Writes everything committed, stops the writer, closes the file. NULL ok.
 * Bounded: a stuck destination is given up after a second, and a writer
 * stuck in write() is cancelled after 3 s (its lines counted as dropped). */
void kg_accesslog_free(struct kg_accesslog *al);

/* Letters and digits in a row (or %XX for one) taken for a key: a key's
 * body and checksum are 51. */
#define KG_ACCESSLOG_MASK_RUN 40

/* Masks, in place, every run of KG_ACCESSLOG_MASK_RUN or more letters and
 * digits (%XX decoding to one counts as one) down to its first 4
 * characters, the rest of the run's bytes '*': what the access log does to
 * the path and request id, for any text a client chose that goes to a log.
 * Length unchanged; true when something was masked. Any thread. */
bool kg_accesslog_mask_keys(char *s, size_t n);

/* One record as a JSON object and '\n', NUL-terminated (*len without the
 * NUL); NULL when out of memory. Bytes that are not UTF-8 become U+FFFD.
 * Caller frees. */
char *kg_accesslog_format(const struct kg_accesslog_rec *rec, size_t *len);

/* rec->time_ms as "2026-11-23T17:01:02.345Z" (out: 25 bytes). */
void kg_accesslog_time(int64_t time_ms, char out[25]);

#endif
