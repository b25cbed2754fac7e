/* console/assets.c - finds one of the console's compiled-in files
 * (keygate/assets.h); the bytes themselves are generated at build time. */
#include <string.h>

#include "keygate/assets.h"

const struct kg_asset *
kg_assets_find(const char *name)
{
    if (name == NULL)
        return NULL;
    if (name[0] == '\0')
        name = "index.html";
    for (size_t i = 0; i < kg_assets_count; i++) {
        if (strcmp(kg_assets[i].name, name) == 0)
            return &kg_assets[i];
    }
    return NULL;
}
