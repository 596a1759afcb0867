/* gateway/iplimit.h - new connections per client address (--connect-rate-per-ip /
 * --connect-burst-per-ip, docs/limits.md): one token bucket per address that opened a connection
 * recently. Pure (time from the caller). Memory stays bounded: gw_iplimit_sweep() drops every
 * bucket that is full again (an address that stopped connecting costs nothing after burst / rate
 * seconds), and at most GW_IPLIMIT_MAX_ENTRIES addresses are tracked at once (beyond, a new
 * address is admitted without a bucket, and counted: a flood from that many addresses needs that
 * many real TCP handshakes and meets --max-connections). */
#ifndef CHAT_GATEWAY_IPLIMIT_H
#define CHAT_GATEWAY_IPLIMIT_H

#include <stdint.h>

#include "map.h"
#include "ratelimit.h"
#include "str.h"

#define GW_IPLIMIT_MAX_ENTRIES 100000

typedef struct gw_iplimit {
    chat_map_t buckets; /* address text -> gw_ipbucket_t (owned) */
    gw_rate_t rate;     /* rate 0: off */
    uint64_t untracked; /* admitted without a bucket: the table was full */
} gw_iplimit_t;

void gw_iplimit_init(gw_iplimit_t *l, gw_rate_t rate);
void gw_iplimit_dispose(gw_iplimit_t *l);
/* Takes a token for a new connection from addr. Returns 1 (go on), or 0 with *wait_ms: the time
 * until addr may connect again. */
int gw_iplimit_take(gw_iplimit_t *l, chat_str_t addr, uint64_t now_ms, uint64_t *wait_ms);
/* Drops the buckets that are full again at now_ms. Returns how many are left. */
size_t gw_iplimit_sweep(gw_iplimit_t *l, uint64_t now_ms);

#endif
