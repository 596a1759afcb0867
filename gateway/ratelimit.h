/* gateway/ratelimit.h - token buckets (pure): a bucket holds up to `burst` tokens and refills at
 * `rate` tokens per second; a message takes one. Time comes from the caller (uv_now), so the
 * arithmetic is testable without a loop. Rate 0 means "no limit". */
#ifndef CHAT_GATEWAY_RATELIMIT_H
#define CHAT_GATEWAY_RATELIMIT_H

#include <stdint.h>

typedef struct gw_bucket {
    double tokens;    /* current tokens; starts full */
    uint64_t last_ms; /* time of the last refill */
    int started;
} gw_bucket_t;

typedef struct gw_rate {
    uint64_t rate;  /* tokens per second; 0 = unlimited */
    uint64_t burst; /* capacity */
} gw_rate_t;

/* Refills b up to now and returns 0 when a token is available, else the ms until one is. Takes
 * nothing. */
uint64_t gw_bucket_wait_ms(gw_bucket_t *b, gw_rate_t r, uint64_t now_ms);
/* Takes one token (call after gw_bucket_wait_ms() returned 0). */
void gw_bucket_take(gw_bucket_t *b, gw_rate_t r);
/* How many messages the bucket lets through in `ms` from full: burst + rate * ms / 1000. */
uint64_t gw_rate_allows(gw_rate_t r, uint64_t ms);

#endif
