/* broker/redis_link.h - one connection to Redis, driven on libuv with hiredis' reply parser
 * (redisReader) and command formatter only; hiredis' async API is not used (0.14 has no timeouts,
 * resolves host names by blocking, and aborts on sharded pub/sub). This file owns:
 *  - resolving (uv_getaddrinfo), connecting (TCP or unix socket), AUTH / SELECT / CLIENT SETNAME,
 *  - a connect timeout and a per-command timeout (cfg.timeout_ms): a command without a reply by
 *    then fails and the connection is dropped and rebuilt,
 *  - reconnecting with exponential backoff and full jitter, for ever, until closed,
 *  - pipelining: commands are written as they come; replies complete them in order.
 * In subscriber mode, every reply after the handshake is handed to on_push instead (pub/sub
 * messages and subscribe confirmations have no 1:1 relation to commands). */
#ifndef CHAT_BROKER_REDIS_LINK_H
#define CHAT_BROKER_REDIS_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "redis_url.h"

struct redisReply;
typedef struct redis_link redis_link_t;

/* The reply to one command, borrowed (valid during the call), or NULL when the command failed
 * (timeout, connection lost). Runs exactly once per accepted command, never synchronously, and
 * never after redis_link_close(). */
typedef void (*redis_link_reply_cb)(void *ctx, uint64_t tag, struct redisReply *reply);

typedef struct redis_link_handlers {
    void (*on_ready)(void *ctx);                 /* connected and handshake done */
    void (*on_down)(void *ctx, const char *why); /* was ready, is not any more */
    void (*on_push)(void *ctx, struct redisReply *reply); /* subscriber mode; borrowed */
    redis_link_reply_cb on_reply;
    void *ctx;
} redis_link_handlers_t;

typedef struct redis_link_config {
    redis_url_t url;
    uint64_t timeout_ms;     /* connect + handshake, and each command */
    uint64_t backoff_min_ms; /* first retry delay (before jitter) */
    uint64_t backoff_max_ms; /* cap of the doubling */
    const char *name;        /* CLIENT SETNAME value (copied), or NULL */
    int subscriber;
} redis_link_config_t;

/* Starts connecting at once. Both structs are copied. Returns 0 and *out. */
int redis_link_open(uv_loop_t *loop, const redis_link_config_t *cfg, const redis_link_handlers_t *h,
                    redis_link_t **out);
/* 1 when connected and the handshake is done (and no failure is waiting for the next turn). */
int redis_link_ready(const redis_link_t *l);
/* Sends one command (arguments copied). Outside subscriber mode on_reply(tag) follows. Returns 0,
 * or CHAT_EBROKER (no callback) when the link is not ready or the connection refused the write at
 * once; then the link stops taking commands and fails on the next loop turn, where the commands
 * already pending get their NULL replies and on_down runs: never inside this call. */
int redis_link_command(redis_link_t *l, int argc, const char **argv, const size_t *lens,
                       uint64_t tag);
/* Drops the connection (failing its commands) and reconnects after the backoff. The NULL replies
 * and on_down run before it returns: call it from a loop callback (a timer), never from code that
 * runs inside redis_link_command() or broker_publish(). */
void redis_link_reset(redis_link_t *l, const char *why);
/* Closes everything; pending commands are dropped without callbacks. Frees l asynchronously. */
void redis_link_close(redis_link_t *l);

#endif
