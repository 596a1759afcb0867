/* gateway/ratelimit.c - token bucket arithmetic (see ratelimit.h). */
#include "ratelimit.h"

static void refill(gw_bucket_t *b, gw_rate_t r, uint64_t now_ms)
{
    if (!b->started) {
        b->started = 1;
        b->tokens = (double)r.burst;
        b->last_ms = now_ms;
        return;
    }
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * (double)r.rate / 1000.0;
        if (b->tokens > (double)r.burst)
            b->tokens = (double)r.burst;
        b->last_ms = now_ms;
    }
}

uint64_t gw_bucket_wait_ms(gw_bucket_t *b, gw_rate_t r, uint64_t now_ms)
{
    if (r.rate == 0)
        return 0;
    refill(b, r, now_ms);
    if (b->tokens >= 1.0)
        return 0;
    double ms = (1.0 - b->tokens) * 1000.0 / (double)r.rate;
    uint64_t w = (uint64_t)ms;
    return (double)w < ms ? w + 1 : (w ? w : 1);
}

void gw_bucket_take(gw_bucket_t *b, gw_rate_t r)
{
    if (r.rate != 0)
        b->tokens -= 1.0;
}

uint64_t gw_rate_allows(gw_rate_t r, uint64_t ms)
{
    return r.burst + r.rate * ms / 1000;
}
