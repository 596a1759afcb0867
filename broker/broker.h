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
 *  - While the broker cannot take messages, publish() returns CHAT_EBROKER; it never blocks.
 *  - Appends (broker_append) are publications too: publish() and append() complete in the one
 *    order they were made, and an appended message reaches subscribers like a published one.
 *  - on_subscribed(topic) runs once a subscription has taken effect (every message published
 *    after that is delivered), and again after every reconnect that re-subscribed it.
 *  - on_history(tag) runs after every message of a subscribed topic that was published before
 *    the read ran has been handed to on_message (Redis: the answer waits for a canary sent after
 *    it to come back on the subscriber link), so a reader that holds live messages while a read
 *    is in flight never gets a message "live" after it was in the answer, unless the
 *    subscription was lost meanwhile (then on_subscribed follows). Reads are not ordered with
 *    the completions of publications.
 *
 * History (history_size > 0): every topic has a sequence number `seq` (0 while nothing was ever
 * appended; +1 per appended message) and an `epoch` (1 to BROKER_EPOCH_MAX bytes of
 * A-Z a-z 0-9 _ -) that changes whenever the topic's history was lost: Redis flushed, restarted
 * without persistence, or history_ttl_ms passed since the topic's last append. Under a new epoch
 * seq starts again from 0. The broker keeps at least the last history_size appended messages of
 * each topic (Redis: a Stream <prefix>{<topic>}:history with the seq as entry id, and a hash
 * <prefix>{<topic>}:meta; memory: a ring per topic) and assigns seq, stores and publishes in one
 * atomic step (Redis: a Lua script run with EVALSHA), so the order in the history and the order of
 * delivery are one. Reading a topic that has no epoch yet creates one (seq 0). */
#ifndef CHAT_BROKER_BROKER_H
#define CHAT_BROKER_BROKER_H

#include <stdint.h>
#include <uv.h>

#include "names.h"
#include "str.h"

typedef struct broker broker_t;

#define BROKER_EPOCH_MAX       CHAT_EPOCH_MAX /* longest epoch (common/names.h) */
#define BROKER_DEDUPE_KEY_MAX  512 /* longest idempotency key of an append */
#define BROKER_RECEIPT_MAX     256 /* longest receipt stored with it */
#define BROKER_HISTORY_MAX     1000 /* largest history_size */

/* One message to append to a topic's history and publish (broker_append). */
typedef struct broker_append {
    /* The message is parts[0] <seq in decimal> parts[1] <epoch> parts[2]: the broker inserts the
     * seq and epoch it assigns, so what is stored and delivered carries them. */
    chat_str_t parts[3];
    /* Optional idempotency key (p == NULL: none), unique within the topic, at most
     * BROKER_DEDUPE_KEY_MAX bytes: an append whose key was appended within dedupe_window_ms is
     * neither stored nor published again; its result is the original's seq and receipt. */
    chat_str_t dedupe_key;
    chat_str_t receipt; /* stored with the key (at most BROKER_RECEIPT_MAX bytes) */
} broker_append_t;

typedef struct broker_append_result {
    int status;         /* 0, or CHAT_EBROKER (then nothing else is set) */
    uint64_t receivers; /* as for on_published; 0 for a duplicate */
    uint64_t seq;       /* the message's seq (a duplicate: the original's) */
    chat_str_t epoch;   /* the topic's epoch (a duplicate: the original's; borrowed) */
    int duplicate;      /* 1: the key was seen within the window; nothing was stored or sent */
    chat_str_t receipt; /* duplicate: the original's receipt (borrowed); else CHAT_STR_NULL */
} broker_append_result_t;

/* Which stored messages broker_history() reads. */
typedef struct broker_history_query {
    int has_after;   /* 1: the OLDEST `limit` entries with seq > after */
    uint64_t after;
    uint64_t before; /* without has_after: the NEWEST `limit` entries with seq < before (0: no
                      * bound) */
    size_t limit;    /* 0..history_size; 0 reads only seq and epoch */
} broker_history_query_t;

typedef struct broker_history_entry {
    uint64_t seq;
    chat_str_t data; /* the message exactly as it was delivered (borrowed) */
} broker_history_entry_t;

typedef struct broker_history_result {
    int status;       /* 0, or CHAT_EBROKER (then nothing else is set) */
    uint64_t seq;     /* the topic's current seq, read in the same atomic step as the entries */
    chat_str_t epoch; /* borrowed */
    const broker_history_entry_t *entries; /* oldest first, seq strictly increasing; borrowed */
    size_t n;
} broker_history_result_t;

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
    /* The outcome of broker_append(..., tag) for tag != 0 (r borrowed). Needed with history. */
    void (*on_appended)(void *ctx, uint64_t tag, const broker_append_result_t *r);
    /* The answer to broker_history(..., tag) (r borrowed; every tag, 0 included). Needed with
     * history. */
    void (*on_history)(void *ctx, uint64_t tag, const broker_history_result_t *r);
    /* topic's subscription took effect (see the contract). Optional. */
    void (*on_subscribed)(void *ctx, chat_str_t topic);
} broker_handlers_t;

typedef struct broker_config {
    const char *url;     /* NULL, "" or "memory://": the in-memory broker; else a Redis URL */
    const char *prefix;  /* Redis channel and key prefix ("chat:") */
    const char *node_id; /* names this node's canary channel and connections */
    uint64_t timeout_ms; /* Redis connect and command timeout */
    size_t history_size; /* messages kept per topic (0: no history; at most BROKER_HISTORY_MAX) */
    uint64_t history_ttl_ms;   /* a topic's history lives this long after its last append (0:
                                * for ever) */
    uint64_t dedupe_window_ms; /* how long an append's idempotency key is remembered (0: keys
                                * are ignored) */
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
/* Stores m in topic's history and publishes it, in one atomic step (see the contract at the top).
 * m is copied. Returns 0 (on_appended(tag) follows when tag != 0, exactly once, in the order of
 * publications and appends: status CHAT_EBROKER when it failed later), CHAT_EINVAL (history is
 * off, or a key or receipt too long: no callback) or CHAT_EBROKER (no callback). */
int broker_append(broker_t *b, chat_str_t topic, const broker_append_t *m, uint64_t tag);
/* Reads topic's seq, epoch and the stored messages q selects. Returns 0 (on_history(tag)
 * follows, never synchronously, exactly once: status CHAT_EBROKER when the read failed later),
 * CHAT_EINVAL (history is off, or q->limit > history_size) or CHAT_EBROKER (the broker is down;
 * no callback). Reads are not ordered with publications and appends. */
int broker_history(broker_t *b, chat_str_t topic, const broker_history_query_t *q, uint64_t tag);
/* 1 while the broker can take publications. */
int broker_is_up(const broker_t *b);
typedef struct broker_stats {
    uint64_t reconnects;     /* times the link came back after being down */
    uint64_t published;      /* publications the broker accepted (or took, without a tag) */
    uint64_t received;       /* messages handed to on_message */
    uint64_t publish_errors; /* publications and appends refused at once or failed later */
    uint64_t appended;       /* appends stored (duplicates not counted) */
    uint64_t duplicates;     /* appends answered from their idempotency key */
    uint64_t history_reads;  /* broker_history() calls answered with status 0 */
    uint64_t script_loads;   /* Redis: SCRIPT LOADs sent (at connect, and after a NOSCRIPT) */
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
