/* broker/redis_impl.h - private to broker/redis*.c: the Redis broker object, shared by redis.c
 * (links, subscriptions, canary, publish, the FIFO of pending publisher-link ops) and
 * redis_history.c (appends and reads through the Lua scripts, and the checks of their replies). */
#ifndef CHAT_BROKER_REDIS_IMPL_H
#define CHAT_BROKER_REDIS_IMPL_H

#include <stdint.h>
#include <uv.h>

#include "broker_impl.h"
#include "buf.h"
#include "list.h"
#include "map.h"
#include "redis_link.h"
#include "redis_scripts.h"

struct redisReply;

/* What a pending command on the publisher link is; its reply is handled accordingly. */
typedef enum redis_op_kind {
    OP_PUBLISH, /* tag: the caller's (0: untagged, or a canary) */
    OP_APPEND,  /* tag: the caller's */
    OP_READ,    /* tag: the caller's; read: the query (owned by the op) */
    OP_LOAD,    /* tag: 0 the append script, 1 the read script */
} redis_op_kind_t;

/* A read in flight: what its reply is checked against, and what a re-send needs. */
typedef struct broker__redis_history_read {
    broker_history_query_t q;
    int resent; /* sent again as EVAL after a NOSCRIPT */
    size_t topic_len;
    char topic[];
} broker__redis_read_t;

typedef struct broker__redis_op {
    redis_op_kind_t kind;
    uint64_t tag;
    broker__redis_read_t *read;
} broker__redis_op_t;

/* A FIFO of ops in a growable ring (no allocation per command once grown). */
typedef struct broker__redis_ops {
    broker__redis_op_t *v;
    size_t cap, head, n;
} broker__redis_ops_t;

typedef struct redis_broker {
    struct broker base;
    uv_loop_t *loop;
    redis_link_t *pub, *sub;
    chat_map_t wanted; /* topic -> (void *)1 */
    chat_buf_t chan;   /* scratch: a channel name */
    char *prefix;
    size_t prefix_len;
    char *canary; /* <prefix>node:<node id> */
    uv_timer_t canary_timer;
    uint64_t canary_sent, canary_seen; /* sequence numbers */
    uint64_t canary_waiting_since;     /* uv_now() since the subscription is unverified (the
                                        * oldest canary not seen, or the publisher going down
                                        * with none in flight), 0 while verified */
    int canary_ok;
    int up, was_up;
    int closed;
    broker__redis_ops_t ops; /* the publisher link's pending commands, oldest first */
    uint64_t last_warn;      /* uv_now() of the last reply warning (at most one per second) */
    uint64_t warns_dropped;  /* warnings not logged since */
    /* history (history_size > 0) */
    char sha[2][BROKER_SHA1_HEX + 1]; /* the append and the read script */
    char size_arg[24], ttl_arg[24], dedupe_arg[24];
    int loads_in_flight;
    chat_buf_t keys;                 /* scratch: the keys and channel of one command */
    broker_history_entry_t *entries; /* history_size: a read's answer */
    chat_list_t held_reads;          /* answered reads waiting for their barrier (below) */
} redis_broker_t;

/* Sends a command on the publisher link and queues what it is (read: owned by the op from then
 * on, freed here on failure). Returns 0 or CHAT_EBROKER (nothing queued, no reply). */
int broker__redis_command(redis_broker_t *b, redis_op_kind_t kind, uint64_t tag,
                          broker__redis_read_t *read, int argc, const char **argv,
                          const size_t *lens);
/* Logs a refused reply at WARN, at most once per second (reason: a static text; detail: what
 * Redis said, may be empty). */
void broker__redis_warn(redis_broker_t *b, const char *reason, chat_str_t detail);

/* redis_history.c */
/* The SHAs and arguments of history; *why on failure (libcrypto). Returns 0 or CHAT_EINVAL. */
int broker__redis_history_open(redis_broker_t *b, const char **why);
void broker__redis_history_free(redis_broker_t *b);
/* SCRIPT LOAD of both scripts (counted in script_loads). */
void broker__redis_history_load_scripts(redis_broker_t *b);
int broker__redis_history_append(broker_t *base, chat_str_t topic, const broker_append_t *m,
                                 uint64_t tag);
int broker__redis_history_read(broker_t *base, chat_str_t topic, const broker_history_query_t *q,
                               uint64_t tag);
/* The replies (r NULL: the command failed). read_reply takes read (frees it, or re-sends it). */
void broker__redis_history_append_reply(redis_broker_t *b, uint64_t tag, struct redisReply *r);
void broker__redis_history_read_reply(redis_broker_t *b, broker__redis_read_t *read, uint64_t tag,
                                      struct redisReply *r);
void broker__redis_history_load_reply(redis_broker_t *b, uint64_t which, struct redisReply *r);
/* A read's answer is handed on only once a canary published after it came back on the
 * subscriber link: every message published before the read ran has then been delivered, so a
 * reader never sees a seq in the answer and then the same chat "live" after it (the reply and the
 * pushes travel on different connections, in no order between them). Releases the held answers
 * whose canary came back (all: every one, when the subscription is gone or being rebuilt). */
void broker__redis_history_release(redis_broker_t *b, int all);

#endif
