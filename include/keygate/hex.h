/* keygate/hex.h - the value of one hexadecimal digit, for the three parsers
 * that read percent-escapes or chunk sizes (http/pathnorm.c,
 * http/rawguard.c, obs/accessfmt.c). No state. */
#ifndef KEYGATE_HEX_H
#define KEYGATE_HEX_H

/* 0-15 for [0-9a-fA-F], -1 for anything else. */
static inline int
kg_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
