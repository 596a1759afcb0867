/* common/str.h - chat_str_t: a borrowed (pointer, length) view of bytes, not NUL-terminated
 * (cf. h2o_iovec_t). It never owns memory: whoever made the bytes keeps them alive. */
#ifndef CHAT_COMMON_STR_H
#define CHAT_COMMON_STR_H

#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct chat_str {
    const char *p; /* NULL means "absent" (distinct from an empty string) */
    size_t len;
} chat_str_t;

#define CHAT_LIT(s) ((chat_str_t){(s), sizeof(s) - 1})
#define CHAT_STR_NULL ((chat_str_t){NULL, 0})

static inline chat_str_t chat_str(const char *p, size_t len)
{
    return (chat_str_t){p, len};
}

static inline chat_str_t chat_cstr(const char *s)
{
    return (chat_str_t){s, s ? strlen(s) : 0};
}

static inline int chat_str_eq(chat_str_t a, chat_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* ASCII case-insensitive equality (HTTP tokens, header names). */
static inline int chat_str_caseeq(chat_str_t a, chat_str_t b)
{
    return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

#endif
