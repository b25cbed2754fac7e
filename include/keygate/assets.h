/* keygate/assets.h - the console's page: HTML, CSS and JavaScript compiled
 * into the binary from src/console/assets/ (cmake/embed_assets.cmake), so a
 * deployment is one file and the page loads nothing from anywhere else.
 * Immutable; any thread.
 */
#ifndef KEYGATE_ASSETS_H
#define KEYGATE_ASSETS_H

#include <stddef.h>

struct kg_asset {
    const char *name;         /* file name: "index.html", "app.js" */
    const char *content_type; /* with charset for text */
    const unsigned char *data;
    size_t len;
};

/* Generated: every asset, in name order. */
extern const struct kg_asset kg_assets[];
extern const size_t kg_assets_count;

/* The asset called name ("" is index.html), or NULL. */
const struct kg_asset *kg_assets_find(const char *name);

#endif
