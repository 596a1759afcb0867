/* common/map.h - chat_map_t: a hash map from byte-string keys to borrowed void * values
 * (rooms by name, sessions by id). The map copies keys and owns its entries; it never frees
 * values. Separate chaining with power-of-two bucket arrays that double at load 1. */
#ifndef CHAT_COMMON_MAP_H
#define CHAT_COMMON_MAP_H

#include <stddef.h>

#include "str.h"

typedef struct chat_map_entry chat_map_entry_t;

typedef struct chat_map {
    chat_map_entry_t **buckets;
    size_t nbuckets; /* power of two, 0 before the first insert */
    size_t count;
    unsigned long long seed; /* per-map hash seed (flooding resistance) */
} chat_map_t;

void chat_map_init(chat_map_t *m);
/* Frees the entries (not the values). */
void chat_map_dispose(chat_map_t *m);
/* The value stored under key, or NULL. */
void *chat_map_get(const chat_map_t *m, chat_str_t key);
/* Stores value (not NULL) under key, replacing any previous value. */
void chat_map_put(chat_map_t *m, chat_str_t key, void *value);
/* Removes key; returns its value or NULL. */
void *chat_map_del(chat_map_t *m, chat_str_t key);
static inline size_t chat_map_count(const chat_map_t *m)
{
    return m->count;
}
/* Iteration: `it` starts at 0; returns the next value or NULL at the end. The map must not be
 * modified during iteration except by chat_map_del of the key just returned. */
typedef struct chat_map_iter {
    size_t bucket;
    chat_map_entry_t *next;
} chat_map_iter_t;
void *chat_map_next(const chat_map_t *m, chat_map_iter_t *it, chat_str_t *key);

#endif
