/* gateway/iplimit.c - per-address connection buckets (see iplimit.h). */
#include "iplimit.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

typedef struct gw_ipbucket {
    gw_bucket_t b;
    size_t len;
    char addr[];
} gw_ipbucket_t;

void gw_iplimit_init(gw_iplimit_t *l, gw_rate_t rate)
{
    memset(l, 0, sizeof(*l));
    chat_map_init(&l->buckets);
    l->rate = rate;
}

void gw_iplimit_dispose(gw_iplimit_t *l)
{
    chat_map_iter_t it = {0, NULL};
    gw_ipbucket_t *e;
    while ((e = chat_map_next(&l->buckets, &it, NULL)) != NULL)
        free(e);
    chat_map_dispose(&l->buckets);
}

int gw_iplimit_take(gw_iplimit_t *l, chat_str_t addr, uint64_t now_ms, uint64_t *wait_ms)
{
    if (l->rate.rate == 0)
        return 1;
    gw_ipbucket_t *e = chat_map_get(&l->buckets, addr);
    if (e == NULL) {
        if (chat_map_count(&l->buckets) >= GW_IPLIMIT_MAX_ENTRIES) {
            l->untracked++;
            return 1;
        }
        e = chat_xcalloc(1, sizeof(*e) + addr.len);
        memcpy(e->addr, addr.p, addr.len);
        e->len = addr.len;
        chat_map_put(&l->buckets, chat_str(e->addr, e->len), e);
    }
    uint64_t w = gw_bucket_wait_ms(&e->b, l->rate, now_ms);
    if (w != 0) {
        *wait_ms = w;
        return 0;
    }
    gw_bucket_take(&e->b, l->rate);
    return 1;
}

size_t gw_iplimit_sweep(gw_iplimit_t *l, uint64_t now_ms)
{
    chat_map_iter_t it = {0, NULL};
    chat_str_t key;
    gw_ipbucket_t *e;
    while ((e = chat_map_next(&l->buckets, &it, &key)) != NULL) {
        gw_bucket_wait_ms(&e->b, l->rate, now_ms); /* refills */
        if (e->b.tokens >= (double)l->rate.burst) {
            chat_map_del(&l->buckets, key);
            free(e);
        }
    }
    return chat_map_count(&l->buckets);
}
