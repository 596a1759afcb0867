/* common/list.h - intrusive circular doubly linked list (cf. h2o/linklist.h). A node is embedded
 * in its owner; chat_container_of() gets back to the owner. The list owns nothing. */
#ifndef CHAT_COMMON_LIST_H
#define CHAT_COMMON_LIST_H

#include <stddef.h>

#define chat_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct chat_list {
    struct chat_list *prev, *next;
} chat_list_t;

static inline void chat_list_init(chat_list_t *l)
{
    l->prev = l->next = l;
}

static inline int chat_list_is_empty(const chat_list_t *l)
{
    return l->next == l;
}

/* 1 when node is linked into some list (nodes are initialised unlinked). */
static inline int chat_list_is_linked(const chat_list_t *node)
{
    return node->next != node;
}

static inline void chat_list_insert_tail(chat_list_t *l, chat_list_t *node)
{
    node->prev = l->prev;
    node->next = l;
    l->prev->next = node;
    l->prev = node;
}

static inline void chat_list_unlink(chat_list_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = node;
}

/* Walks a list that nothing unlinks from during the walk. */
#define chat_list_foreach(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Walks a list whose current entry may be unlinked (only that one) during the walk. */
#define chat_list_foreach_safe(pos, tmp, head)                                                     \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
