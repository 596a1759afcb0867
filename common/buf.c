/* common/buf.c - growable byte buffer (see buf.h). Growth doubles, starting at 64 bytes. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

void chat_buf_init(chat_buf_t *b)
{
    *b = CHAT_BUF_INIT;
}

void chat_buf_free(chat_buf_t *b)
{
    free(b->p);
    *b = CHAT_BUF_INIT;
}

int chat_buf_try_reserve(chat_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > ((size_t)-1) / 2 - b->len)
        return CHAT_ENOMEM;
    size_t need = b->len + extra, cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return CHAT_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

void chat_buf_reserve(chat_buf_t *b, size_t extra)
{
    if (chat_buf_try_reserve(b, extra) != 0)
        chat__oom(b->len + extra);
}

void chat_buf_append(chat_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    chat_buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void chat_buf_appendf(chat_buf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    if ((size_t)n < sizeof(small)) {
        chat_buf_append(b, small, (size_t)n);
        return;
    }
    chat_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

