/* keygate/upurl.h - the upstream URL handed to libcurl as a CURLU.
 *
 * The `upstream` directive is parsed once per loop (again only when a reload
 * changed it); each pooled easy handle keeps its own CURLU, a copy of that
 * base, and per request only its path and query are set, so curl parses no
 * URL string. libcurl 7.88 lowercases the hex of %XX escapes set this way
 * and treats '#' differently from a parsed URL, so a path or query that
 * holds an uppercase escape, '#', a space or a control byte keeps the URL
 * string (kg_upurl_fits): what reaches the upstream is byte-identical either
 * way. Loop thread only.
 */
#ifndef KEYGATE_UPURL_H
#define KEYGATE_UPURL_H

#include <stdbool.h>

#include <curl/curl.h>

/* Per loop: the upstream parsed once. Opaque. */
struct kg_upbase;

/* Per pooled easy handle: its own CURLU and the base it was copied from. */
struct kg_upurl {
    CURLU *u;     /* NULL until first used */
    unsigned gen; /* the base generation u was copied from */
};

struct kg_upbase *kg_upbase_new(void);
void kg_upbase_free(struct kg_upbase *b); /* NULL ok */

/* Whether path and query set as CURLU parts reach the wire as the URL string would. */
bool kg_upurl_fits(const char *path, const char *query);

/* Points h at upstream + path ["?" query]: parses upstream only when it is not
 * the one the base holds, copies the base into h only when h is older. false:
 * not possible (out of memory, an upstream or input CURLU would alter):
 * give curl the URL string instead. */
bool kg_upurl_point(struct kg_upbase *b, struct kg_upurl *h, const char *upstream, const char *path,
                    const char *query);

void kg_upurl_cleanup(struct kg_upurl *h);

#endif
