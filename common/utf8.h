/* common/utf8.h - one well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), for the checks of common/ (relayed envelopes, JWT JSON, log values).
 * Client text frames are checked by wslay. Pure. */
#ifndef CHAT_COMMON_UTF8_H
#define CHAT_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The length (1 to 4) of the well-formed sequence at s[i] (i < n), with its code point in *cp;
 * 0 when the bytes there are not one. */
static inline size_t chat_utf8_seq(const unsigned char *s, size_t n, size_t i, uint32_t *cp)
{
    unsigned char c = s[i];
    uint32_t v, min;
    size_t len;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0; /* continuation bytes, 0xc0, 0xc1, 0xf5-0xff */
    }
    if (n - i < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i + k] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0; /* overlong, beyond Unicode, surrogate */
    *cp = v;
    return len;
}

/* 1 when p[0..n) is well-formed UTF-8. */
static inline int chat_utf8_valid(const unsigned char *p, size_t n)
{
    uint32_t cp;
    for (size_t i = 0, len; i < n; i += len)
        if ((len = chat_utf8_seq(p, n, i, &cp)) == 0)
            return 0;
    return 1;
}

#endif
