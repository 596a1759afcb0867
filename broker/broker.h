/* broker/broker.h - the only way the gateway reaches the other members of a room, on this node
 * or on others. The broker knows topics (room names) and opaque bytes, never sessions or JSON.
 * Implementations: the in-memory broker (single node, the default: broker/memory.c) and Redis
 * pub/sub (broker/redis.c). Nothing outside broker/ knows which one runs.
 *
 * Shared contract (checked against both by tests/unit/test_broker_contract.c):
 *  - publish() never calls back synchronously; every callback runs from the loop.
 *  - Every node receives its own publications for topics it subscribes, so a topic has one
 *    order for everyone and local delivery is not a special case.
 *  - Publications complete in the order they were made (on_published per tag != 0, exactly once
 *    unless publish() returned an error, in which case it never runs).
 *  - While the broker cannot take messages, publish() returns CHAT_EBROKER; it never blocks. */
#ifndef CHAT_BROKER_BROKER_H
#define CHAT_BROKER_BROKER_H

#include <stdint.h>
#include <uv.h>

#include "str.h"

typedef struct broker broker_t;

typedef struct broker_handlers {
    /* A message for a subscribed topic. topic and data are borrowed: valid during the call. */
    void (*on_message)(void *ctx, chat_str_t topic, chat_str_t data);
    /* The outcome of broker_publish(..., tag) for tag != 0: status 0 when the broker accepted
     * the message, CHAT_EBROKER when it could not. receivers: how many nodes it reached (Redis:
     * the PUBLISH reply, subscriber connections; memory: 1 when the topic is subscribed, else 0;
     * 0 on failure), which lets a node learn that nobody else is in a room. */
    void (*on_published)(void *ctx, uint64_t tag, int status, uint64_t receivers);
    /* The link to the backing service went down (up == 0) or came back (up == 1). Optional. */
    void (*on_link)(void *ctx, int up);
    void *ctx;
} broker_handlers_t;

typedef struct broker_config {
    const char *url;     /* NULL, "" or "memory://": the in-memory broker; else a Redis URL */
    const char *prefix;  /* Redis channel prefix ("chat:") */
    const char *node_id; /* names this node's canary channel and connections */
    uint64_t timeout_ms; /* Redis connect and command timeout */
} broker_config_t;

/* Checks a broker URL without opening anything. Returns 0, or CHAT_EINVAL with a static reason
 * in *why. */
int broker_check_url(const char *url, const char **why);
/* Opens a broker on loop. The structs are copied. A Redis broker starts connecting at once and
 * keeps retrying: an unreachable Redis is not an error here (broker_is_up() says 0 meanwhile).
 * Returns 0 and *out, or CHAT_EINVAL for an invalid URL (reason in *why). */
int broker_open(uv_loop_t *loop, const broker_config_t *cfg, const broker_handlers_t *h,
                broker_t **out, const char **why);
/* Starts delivering topic's messages (idempotent). Returns 0 or a negative error. */
int broker_subscribe(broker_t *b, chat_str_t topic);
/* Stops delivering topic's messages (idempotent); messages already queued for it are dropped. */
int broker_unsubscribe(broker_t *b, chat_str_t topic);
/* Publishes data (copied) to topic. Returns 0 (on_published(tag) follows when tag != 0) or
 * CHAT_EBROKER (no callback will run). */
int broker_publish(broker_t *b, chat_str_t topic, chat_str_t data, uint64_t tag);
/* 1 while the broker can take publications. */
int broker_is_up(const broker_t *b);
typedef struct broker_stats {
    uint64_t reconnects;     /* times the link came back after being down */
    uint64_t published;      /* publications the broker accepted (or took, without a tag) */
    uint64_t received;       /* messages handed to on_message */
    uint64_t publish_errors; /* publications refused at once or failed later */
} broker_stats_t;

/* Counters since open (for metrics). */
void broker_get_stats(const broker_t *b, broker_stats_t *out);
/* A short name for logs: "memory" or "redis". */
const char *broker_kind(const broker_t *b);
/* Stops everything: pending publications are dropped without callbacks (the caller is shutting
 * down) and no handler runs afterwards. Handles close asynchronously and the memory is freed from
 * their close callbacks: keep running the loop until it has no handles. */
void broker_close(broker_t *b);

#endif
