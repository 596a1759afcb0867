/* common/rcbuf.c - reference-counted immutable bytes (see rcbuf.h). */
#include "rcbuf.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

chat_rcbuf_t *chat_rcbuf_new(const void *p, size_t len)
{
    chat_rcbuf_t *b = chat_xmalloc(sizeof(*b) + len);
    b->refs = 1;
    b->len = len;
    if (p != NULL && len)
        memcpy(b->data, p, len);
    return b;
}

chat_rcbuf_t *chat_rcbuf_ref(chat_rcbuf_t *b)
{
    b->refs++;
    return b;
}

void chat_rcbuf_release(chat_rcbuf_t *b)
{
    if (b == NULL)
        return;
    assert(b->refs > 0);
    if (--b->refs == 0)
        free(b);
}
