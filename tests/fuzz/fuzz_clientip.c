/* Fuzz target: client IP and X-Forwarded-For (http/clientip.c).
 * Input: "TRUSTED-CIDRS\nPEER\nXFF-HEADER\nXFF-HEADER...". The trusted
 * list is parsed block by block (space-separated), each X-Forwarded-For
 * header appended as the front end joins them, and the client resolved.
 * The answer is the peer itself when the peer is not trusted, and always
 * a parseable address or "". */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "keygate/clientip.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fz_strndup(data, size), *p = text, *line, *save = NULL;
    struct kg_cidr trusted[8];
    size_t ntrusted = 0;
    struct kg_ipaddr peer, got;
    bool has_peer = false;
    char xff[1024] = "", out[KG_CLIENTIP_MAX], peer_text[KG_CLIENTIP_MAX];
    int n = 0;

    while ((line = strsep(&p, "\n")) != NULL) {
        if (n == 0) {
            for (char *tok = strtok_r(line, " ", &save); tok != NULL && ntrusted < 8;
                 tok = strtok_r(NULL, " ", &save)) {
                if (kg_clientip_cidr_parse(tok, &trusted[ntrusted])) {
                    if (!kg_clientip_cidr_match(&trusted[ntrusted], &trusted[ntrusted].addr))
                        __builtin_trap(); /* a block holds its own address */
                    ntrusted++;
                }
            }
        } else if (n == 1) {
            has_peer = kg_clientip_parse(line, &peer);
        } else {
            kg_clientip_xff_append(xff, sizeof(xff), line);
            if (strlen(xff) >= sizeof(xff))
                __builtin_trap();
        }
        n++;
    }
    kg_clientip_resolve(trusted, ntrusted, has_peer ? &peer : NULL, xff, out, sizeof(out));
    if (!has_peer) {
        if (out[0] != '\0')
            __builtin_trap();
        goto cleanup;
    }
    if (!kg_clientip_parse(out, &got))
        __builtin_trap(); /* the resolved client is always an address */
    kg_clientip_format(&peer, peer_text, sizeof(peer_text));
    if (!kg_clientip_trusted(trusted, ntrusted, &peer) && strcmp(out, peer_text) != 0)
        __builtin_trap(); /* an untrusted peer cannot move its identity */

cleanup:
    free(text);
    return 0;
}
