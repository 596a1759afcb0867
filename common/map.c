/* common/map.c - string-keyed hash map (see map.h). Hash: FNV-1a mixed with a per-map seed. */
#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "rng.h"

struct chat_map_entry {
    chat_map_entry_t *next;
    void *value;
    uint64_t hash;
    size_t klen;
    char key[];
};

static uint64_t hash_bytes(const chat_map_t *m, chat_str_t k)
{
    uint64_t h = 1469598103934665603ULL ^ m->seed;
    for (size_t i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.p[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

void chat_map_init(chat_map_t *m)
{
    chat_rng_t r;
    memset(m, 0, sizeof(*m));
    /* a seed of its own per map: room names come from clients, so the bucket of a name must not
     * be predictable (hash flooding) */
    chat_rng_seed(&r, &m, sizeof(m));
    m->seed = chat_rng_next(&r);
}

void chat_map_dispose(chat_map_t *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        chat_map_entry_t *e = m->buckets[i];
        while (e) {
            chat_map_entry_t *n = e->next;
            free(e);
            e = n;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->count = 0;
}

static chat_map_entry_t **find(const chat_map_t *m, chat_str_t key, uint64_t h)
{
    if (m->nbuckets == 0)
        return NULL;
    chat_map_entry_t **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == key.len && memcmp((*pp)->key, key.p, key.len) == 0)
            return pp;
    return pp;
}

static void grow(chat_map_t *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    chat_map_entry_t **b = chat_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < m->nbuckets; i++) {
        chat_map_entry_t *e = m->buckets[i];
        while (e) {
            chat_map_entry_t *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

void *chat_map_get(const chat_map_t *m, chat_str_t key)
{
    chat_map_entry_t **pp = find(m, key, hash_bytes(m, key));
    return pp && *pp ? (*pp)->value : NULL;
}

void chat_map_put(chat_map_t *m, chat_str_t key, void *value)
{
    uint64_t h = hash_bytes(m, key);
    chat_map_entry_t **pp = find(m, key, h);
    if (pp && *pp) {
        (*pp)->value = value;
        return;
    }
    if (m->count >= m->nbuckets)
        grow(m);
    chat_map_entry_t *e = chat_xmalloc(sizeof(*e) + key.len);
    e->value = value;
    e->hash = h;
    e->klen = key.len;
    if (key.len)
        memcpy(e->key, key.p, key.len);
    size_t i = h & (m->nbuckets - 1);
    e->next = m->buckets[i];
    m->buckets[i] = e;
    m->count++;
}

void *chat_map_del(chat_map_t *m, chat_str_t key)
{
    chat_map_entry_t **pp = find(m, key, hash_bytes(m, key));
    if (pp == NULL || *pp == NULL)
        return NULL;
    chat_map_entry_t *e = *pp;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

void *chat_map_next(const chat_map_t *m, chat_map_iter_t *it, chat_str_t *key)
{
    chat_map_entry_t *e = it->next;
    while (e == NULL) {
        if (it->bucket >= m->nbuckets)
            return NULL;
        e = m->buckets[it->bucket++];
    }
    it->next = e->next;
    if (key)
        *key = chat_str(e->key, e->klen);
    return e->value;
}
