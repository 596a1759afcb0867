/* common/buf.h - chat_buf_t: a growable byte buffer owned by whoever embeds it.
 * chat_buf_append()/chat_buf_reserve() abort on OOM (use them for sizes we control);
 * chat_buf_try_reserve() returns CHAT_ENOMEM instead (use it for sizes the peer controls). */
#ifndef CHAT_COMMON_BUF_H
#define CHAT_COMMON_BUF_H

#include <stddef.h>

#include "str.h"

typedef struct chat_buf {
    char *p;    /* owned; NULL until the first reserve */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
} chat_buf_t;

#define CHAT_BUF_INIT ((chat_buf_t){NULL, 0, 0})

void chat_buf_init(chat_buf_t *b);
/* Frees the storage; the buffer is empty and reusable afterwards. */
void chat_buf_free(chat_buf_t *b);
/* Makes room for `extra` more bytes after len. Returns 0 or CHAT_ENOMEM (b unchanged). */
__attribute__((warn_unused_result)) int chat_buf_try_reserve(chat_buf_t *b, size_t extra);
/* Same, but aborts on OOM. */
void chat_buf_reserve(chat_buf_t *b, size_t extra);
void chat_buf_append(chat_buf_t *b, const void *p, size_t n);
static inline void chat_buf_append_str(chat_buf_t *b, chat_str_t s)
{
    chat_buf_append(b, s.p, s.len);
}
/* printf-style append; aborts on OOM. */
__attribute__((format(printf, 2, 3))) void chat_buf_appendf(chat_buf_t *b, const char *fmt, ...);
static inline void chat_buf_reset(chat_buf_t *b)
{
    b->len = 0;
}
static inline chat_str_t chat_buf_str(const chat_buf_t *b)
{
    return chat_str(b->p, b->len);
}

#endif
