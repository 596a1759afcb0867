/* common/rcbuf.h - chat_rcbuf_t: immutable, reference-counted bytes, the unit of fan-out.
 * A message is encoded once into an rcbuf and every recipient's send queue holds a reference
 * (cf. h2o_mem_alloc_shared, nchan's shared messages). The bytes never change after creation.
 * Single-threaded: the count is a plain integer. */
#ifndef CHAT_COMMON_RCBUF_H
#define CHAT_COMMON_RCBUF_H

#include <stddef.h>

typedef struct chat_rcbuf {
    size_t refs;
    size_t len;
    char data[]; /* len bytes */
} chat_rcbuf_t;

/* Allocates an rcbuf of len bytes with a reference count of 1 (the caller's). When p is not
 * NULL the bytes are copied from p; otherwise the caller fills data[] before sharing it. */
chat_rcbuf_t *chat_rcbuf_new(const void *p, size_t len);
/* Takes one more reference; returns b. */
chat_rcbuf_t *chat_rcbuf_ref(chat_rcbuf_t *b);
/* Drops one reference; frees at zero. NULL is ignored. */
void chat_rcbuf_release(chat_rcbuf_t *b);

#endif
