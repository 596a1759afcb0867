/* common/alloc.h - allocation that aborts on out-of-memory (the redis/h2o policy) for
 * fixed-size structures. Anything whose size the network decides goes through
 * chat_buf_try_reserve() instead, so a hostile peer cannot kill the process. */
#ifndef CHAT_COMMON_ALLOC_H
#define CHAT_COMMON_ALLOC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void chat__oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

static inline void *chat_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        chat__oom(n);
    return p;
}

static inline void *chat_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        chat__oom(count * size);
    return p;
}

static inline void *chat_xrealloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (p == NULL)
        chat__oom(n);
    return p;
}

/* Returns a NUL-terminated copy of the n bytes at s. */
static inline char *chat_xstrndup(const char *s, size_t n)
{
    char *p = chat_xmalloc(n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

#endif
