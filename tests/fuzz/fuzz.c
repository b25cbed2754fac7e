/* tests/fuzz/fuzz.c - helpers shared by the fuzz targets (see fuzz.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"

char *
fz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        abort();
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void
fz_split(const uint8_t *data, size_t size, char sep, char **a, char **b)
{
    const uint8_t *p = memchr(data, sep, size);
    size_t alen = p != NULL ? (size_t)(p - data) : size;

    *a = fz_strndup(data, alen);
    *b = p != NULL ? fz_strndup(p + 1, size - alen - 1) : fz_strndup(data, 0);
}

void
fz_request(const uint8_t *data, size_t size, const struct fz_request_fns *fns, void *ctx)
{
    char **keep = NULL; /* every copy handed out, freed after end_fn */
    size_t nkeep = 0, pos = 0;
    bool first = true;

    keep = malloc((size + 1) * 2 * sizeof(*keep)); /* at most two copies per line */
    if (keep == NULL)
        abort();
    while (pos < size) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl != NULL ? (size_t)(nl - data) : size;
        size_t len = end - pos;
        const uint8_t *line = data + pos;

        if (len > 0 && line[len - 1] == '\r')
            len--;
        pos = end + 1;
        if (first) {
            char *s = keep[nkeep++] = fz_strndup(line, len);

            if (fns->line_fn != NULL)
                fns->line_fn(ctx, s, len);
            first = false;
            continue;
        }
        if (len == 0)
            break;
        const uint8_t *colon = memchr(line, ':', len);
        size_t nlen = colon != NULL ? (size_t)(colon - line) : len;
        size_t vstart = colon != NULL ? nlen + 1 : len;
        while (vstart < len && (line[vstart] == ' ' || line[vstart] == '\t'))
            vstart++;
        size_t vend = len;
        while (vend > vstart && (line[vend - 1] == ' ' || line[vend - 1] == '\t'))
            vend--;
        char *name = keep[nkeep++] = fz_strndup(line, nlen);
        char *value = keep[nkeep++] = fz_strndup(line + vstart, vend - vstart);
        if (fns->header_fn != NULL)
            fns->header_fn(ctx, name, nlen, value, vend - vstart);
    }
    if (fns->end_fn != NULL)
        fns->end_fn(ctx);
    for (size_t i = 0; i < nkeep; i++)
        free(keep[i]);
    free(keep);
}

static void
count_report(void *ctx, const char *line)
{
    (void)line;
    (*(int *)ctx)++;
}

struct kg_config *
fz_config(const char *text, size_t len, int *nreports)
{
    int n = 0;
    struct kg_config *cfg = NULL;
    char path[64];
    int fd = memfd_create("keygate-fuzz.conf", MFD_CLOEXEC);

    if (fd < 0)
        abort();
    if (len > 0 && write(fd, text, len) != (ssize_t)len)
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (kg_config_load(path, count_report, &n, &cfg) != KG_OK)
        cfg = NULL;
    close(fd);
    if (nreports != NULL)
        *nreports = n;
    return cfg;
}
