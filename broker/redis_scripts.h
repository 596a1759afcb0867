/* broker/redis_scripts.h - private to broker/redis.c: the two Lua scripts of the Redis history and
 * their SHA1s (what SCRIPT LOAD answers and EVALSHA takes), computed with libcrypto. The scripts
 * check what they read from Redis before they write anything (an epoch of the epoch alphabet, a
 * seq of digits within 2^53) and answer an error otherwise; broker/redis.c checks their answers
 * again (Redis is a trust boundary).
 *
 * Keys of a topic (the room as a Redis Cluster hash tag): <prefix>{<room>}:meta (hash: epoch,
 * seq), <prefix>{<room>}:history (a Stream; entry <seq>-0 with one field "m": the message),
 * <prefix>{<room>}:dedupe:<key> (a string "<seq>:<epoch>:<receipt>" with PX dedupe_window_ms).
 *
 * Append: KEYS meta, history [, dedupe]; ARGV channel, epoch candidate, history_size,
 *   history_ttl_ms (0: none), dedupe_window_ms, receipt, parts[0], parts[1], parts[2].
 *   A key seen: {1, "<seq>:<epoch>:<receipt>"}, nothing written or published. Else the seq is
 *   meta's + 1 (1 and the candidate epoch when meta is missing: any stream left is deleted), the
 *   message parts[0] seq parts[1] epoch parts[2] is added (XADD MAXLEN ~ history_size), meta
 *   written, both given the TTL, the key set, the message published to the channel:
 *   {0, seq, epoch, receivers}.
 * Read: KEYS meta, history; ARGV epoch candidate, history_ttl_ms, mode ("a": XRANGE after the
 *   bound, "b": XREVRANGE below the bound, "n": XREVRANGE from the newest), bound, limit.
 *   Meta missing: created with the candidate and seq 0 (and the TTL), any stream deleted:
 *   {candidate, "0", {}}. Else {epoch, seq (a string as stored), entries} (limit 0: none). */
#ifndef CHAT_BROKER_REDIS_SCRIPTS_H
#define CHAT_BROKER_REDIS_SCRIPTS_H

#include <stddef.h>

#include "str.h"

#define BROKER_SHA1_HEX 40

extern const char broker_redis_append_lua[];
extern const char broker_redis_read_lua[];

/* The SHA1 of script in lowercase hex (out: BROKER_SHA1_HEX + 1 bytes, NUL-terminated). Returns
 * 0, or -1 when libcrypto failed. */
int broker_redis_script_sha(chat_str_t script, char *out);

#endif
