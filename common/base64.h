/* common/base64.h - the value of one base64 character (RFC 4648): the standard alphabet (+ /) for
 * the WebSocket key, the URL alphabet (- _) for JWTs. Pure. */
#ifndef CHAT_COMMON_BASE64_H
#define CHAT_COMMON_BASE64_H

/* 0..63, or -1 when c is not in the alphabet (url: 1 for base64url). */
static inline int chat_base64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

#endif
