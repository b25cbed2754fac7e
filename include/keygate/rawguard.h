/* keygate/rawguard.h - the raw-bytes guard: every byte libmicrohttpd reads
 * from a listener's client connection is checked here first.
 *
 * Why: libmicrohttpd 0.9.75 (Debian 12) parses a request head before
 * keygate's access handler is called, and for some malformed heads it
 * answers itself, badly (a bad Content-Length gets its HTML 400/413 with
 * the status line and headers sent twice), or rewrites what it read (a raw
 * NUL cuts a header value or the target; an obs-fold line is glued onto
 * the previous header's name). No callback of 0.9.75 runs before that
 * parsing. So keygate sees the bytes first.
 *
 * How: ELF symbol interposition. The keygate executable defines recv() and
 * gnutls_record_recv(); libmicrohttpd's calls (plain: recv() in
 * recv_param_adapter; TLS: gnutls_record_recv() in recv_tls_adapter) bind
 * to these definitions. A descriptor that is not a watched listener
 * connection goes straight to the real call: recv() as the recvfrom system
 * call, gnutls_record_recv() through dlsym(RTLD_NEXT). That fast path is one
 * atomic load of the descriptor's table slot. GnuTLS's own recv() on a
 * watched TLS connection is ciphertext and passes through too.
 *
 * On a watched connection each request head is held back (not given to the
 * library) until it is complete and checked by the scanner below; bodies
 * are framed exactly as the library frames them and pass at once. When a
 * head is refused, the library gets the bytes before that request, then a
 * synthetic request, "KGREJECT /<reason> HTTP/1.1" carrying a per-process
 * random token in X-Keygate-Reject (and the refused head's X-Request-Id
 * when it has a well-formed one), then EAGAIN for ever (what the client
 * sends after that is read and dropped). So the library answers earlier
 * pipelined requests first, in order, and then keygate's handler answers
 * the synthetic one (kg_rawguard_rejected()) with its own JSON 400/413 and
 * closes. A KGREJECT request without the token, or on a connection the
 * guard has not refused, is an ordinary request.
 *
 * Where the scanner loses sync inside a chunked body (a chunk line the
 * library refuses itself: it answers 400 and closes), it stops checking
 * that connection and passes every later byte through.
 *
 * Threads: kg_rawguard_watch/forget/rejected run on the thread that runs
 * the connection's daemon (libmicrohttpd's notify and access callbacks);
 * recv() from any thread.
 */
#ifndef KEYGATE_RAWGUARD_H
#define KEYGATE_RAWGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

/* Why a head is refused. Each has one status and message (kg_rawguard_status,
 * kg_rawguard_message); where a check of kg_hygiene exists, the words are
 * the same. */
enum kg_rawguard_reason {
    KG_RAWGUARD_OK = 0,
    KG_RAWGUARD_LINE,         /* 400 Malformed request line */
    KG_RAWGUARD_METHOD,       /* 400 Malformed request method */
    KG_RAWGUARD_TARGET,       /* 400 Malformed request target */
    KG_RAWGUARD_LINE_END,     /* 400 Malformed line ending (bare LF, bare CR) */
    KG_RAWGUARD_FOLD,         /* 400 Folded header line */
    KG_RAWGUARD_NAME,         /* 400 Malformed header name */
    KG_RAWGUARD_VALUE,        /* 400 Control character in header value */
    KG_RAWGUARD_CL_AND_TE,    /* 400 Both Content-Length and Transfer-Encoding */
    KG_RAWGUARD_TE,           /* 400 Unsupported Transfer-Encoding */
    KG_RAWGUARD_TE_HTTP10,    /* 400 Transfer-Encoding in an HTTP/1.0 request */
    KG_RAWGUARD_SEVERAL_CL,   /* 400 Several Content-Length headers */
    KG_RAWGUARD_CL,           /* 400 Malformed Content-Length */
    KG_RAWGUARD_CL_TOO_LARGE, /* 413 Content-Length is too large (over 18 digits) */
    KG_RAWGUARD_NREASONS,
};

/* ---- the scanner: pure, over a byte stream ---- */

/* One connection's scan. Fields are private: use the kg_rawscan_* functions. */
struct kg_rawscan {
    uint64_t pos;        /* bytes fed so far */
    uint64_t head_start; /* offset of the head being read */
    uint64_t remaining;  /* body or chunk bytes still to skip */
    uint64_t cl_value, num;
    uint32_t len, digits, n_cl, n_te, rl_sp;
    uint8_t state, vstate, match; /* match: bit 0 Content-Length, bit 1 Transfer-Encoding */
    bool http10, tgt_bad, seg_ok, cl_bad, cl_big, te_bad, bare_lf;
    char major;
    enum kg_rawguard_reason reason;
};

enum kg_rawscan_result {
    KG_RAWSCAN_MORE = 0, /* every byte taken; safe up to kg_rawscan_safe_end() */
    KG_RAWSCAN_REJECT,   /* the head starting at kg_rawscan_head_start() is refused */
    KG_RAWSCAN_LOST,     /* lost sync (the library refuses or cannot frame it): stop checking */
};

void kg_rawscan_init(struct kg_rawscan *s);

/* Feeds the next n bytes of the stream. After REJECT (the reason in *why)
 * or LOST the scan is over: later calls return the same result. Splitting
 * a stream anywhere gives the same results as feeding it whole. */
enum kg_rawscan_result kg_rawscan_feed(struct kg_rawscan *s, const unsigned char *p, size_t n,
                                       enum kg_rawguard_reason *why);

/* Stream offset below which every byte is checked: bodies and complete
 * heads. The bytes from there on are an unfinished head. */
uint64_t kg_rawscan_safe_end(const struct kg_rawscan *s);

/* Stream offset where the refused (or unfinished) head starts. */
uint64_t kg_rawscan_head_start(const struct kg_rawscan *s);

/* One-shot form for fuzzing and tests: the whole of p as one stream.
 * Returns the reason of the first refused head (its offset in *head_start)
 * or KG_RAWGUARD_OK; *lost (may be NULL) says whether the scan lost sync. */
enum kg_rawguard_reason kg_rawscan_buffer(const void *p, size_t n, uint64_t *head_start,
                                          bool *lost);

/* ---- the guard ---- */

const char *kg_rawguard_message(enum kg_rawguard_reason r); /* without the final period */
unsigned kg_rawguard_status(enum kg_rawguard_reason r);

/* Makes the descriptor table (sized by RLIMIT_NOFILE, at most 2^20) and the
 * token. Idempotent, thread-safe; called by the listeners before they start.
 * Needs sodium_init(). */
void kg_rawguard_init(void);

/* MHD_CONNECTION_NOTIFY_STARTED: watch conn. hold_max is the most a head
 * may take (the connection's memory pool: the library refuses more with
 * 431/414 itself, so the guard then passes the bytes through). When memory
 * runs out the connection reads end-of-file (closed, never unchecked). */
void kg_rawguard_watch(struct MHD_Connection *conn, size_t hold_max);

/* MHD_CONNECTION_NOTIFY_CLOSED (before the library closes the socket). */
void kg_rawguard_forget(struct MHD_Connection *conn);

/* The same by descriptor (tls: the connection's gnutls session, or NULL),
 * for a caller that accepts connections itself, and for tests. */
void kg_rawguard_watch_fd(int fd, void *tls, size_t hold_max);
void kg_rawguard_forget_fd(int fd);

/* For the access handler's first call: the reason when this request is the
 * guard's synthetic one on a connection it refused (method KGREJECT and the
 * right token, compared in constant time), else KG_RAWGUARD_OK. */
enum kg_rawguard_reason kg_rawguard_rejected(struct MHD_Connection *conn, const char *method);

#endif
