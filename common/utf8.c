/* common/utf8.c - UTF-8 validation as a small state machine over byte classes (see utf8.h).
 * States: 0 accept, 1 reject; otherwise the number of continuation bytes still expected and the
 * allowed range of the next byte (which encodes the overlong/surrogate/max rules). */
#include "utf8.h"

enum { ACCEPT = 0, REJECT = 1 };

/* state layout: bits 0-7 = kind, kind 0 accept, 1 reject, 2 expecting continuation:
 * bits 8-15 remaining count, bits 16-23 low bound, bits 24-31 high bound of the next byte. */
static uint32_t expect(unsigned remaining, unsigned lo, unsigned hi)
{
    return 2u | (remaining << 8) | (lo << 16) | (hi << 24);
}

static uint32_t step(uint32_t st, unsigned char c)
{
    if (st == ACCEPT) {
        if (c < 0x80)
            return ACCEPT;
        if (c >= 0xC2 && c <= 0xDF)
            return expect(1, 0x80, 0xBF);
        if (c == 0xE0)
            return expect(2, 0xA0, 0xBF);
        if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
            return expect(2, 0x80, 0xBF);
        if (c == 0xED)
            return expect(2, 0x80, 0x9F);
        if (c == 0xF0)
            return expect(3, 0x90, 0xBF);
        if (c >= 0xF1 && c <= 0xF3)
            return expect(3, 0x80, 0xBF);
        if (c == 0xF4)
            return expect(3, 0x80, 0x8F);
        return REJECT;
    }
    unsigned remaining = (st >> 8) & 0xff, lo = (st >> 16) & 0xff, hi = st >> 24;
    if (c < lo || c > hi)
        return REJECT;
    return remaining == 1 ? ACCEPT : expect(remaining - 1, 0x80, 0xBF);
}

int chat_utf8_feed(chat_utf8_t *v, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint32_t st = v->state;
    if (st == REJECT)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (st == ACCEPT) { /* fast path over ASCII */
            while (i < n && s[i] < 0x80)
                i++;
            if (i == n)
                break;
        }
        st = step(st, s[i]);
        if (st == REJECT)
            break;
    }
    v->state = st;
    return st == REJECT ? -1 : 0;
}

int chat_utf8_valid(const void *p, size_t n)
{
    chat_utf8_t v = CHAT_UTF8_INIT;
    return chat_utf8_feed(&v, p, n) == 0 && chat_utf8_complete(&v);
}
