/* common/utf8.h - incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF), usable across fragment boundaries. Pure. */
#ifndef CHAT_COMMON_UTF8_H
#define CHAT_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef struct chat_utf8 {
    uint32_t state; /* 0 = between code points (accept), 1 = reject, others = inside one */
} chat_utf8_t;

#define CHAT_UTF8_INIT ((chat_utf8_t){0})

/* Feeds n bytes. Returns 0 while the input can still be valid, -1 once it cannot. */
int chat_utf8_feed(chat_utf8_t *v, const void *p, size_t n);
/* 1 when everything fed so far is complete, valid UTF-8. */
static inline int chat_utf8_complete(const chat_utf8_t *v)
{
    return v->state == 0;
}
/* Whole-buffer check: 1 when valid. */
int chat_utf8_valid(const void *p, size_t n);

#endif
