/* broker/broker_impl.h - private to broker/: the operations table each implementation exports, the
 * common header of every broker object, and what both implementations share: the counters kept
 * by broker.c's forwarders and completion helpers, and the epoch generator. */
#ifndef CHAT_BROKER_BROKER_IMPL_H
#define CHAT_BROKER_BROKER_IMPL_H

#include "broker.h"
#include "buf.h"
#include "rng.h"

#define BROKER_SEQ_MAX       (1ULL << 53) /* largest seq (exact in a double: Lua, JSON) */
#define BROKER_EPOCH_NEW_LEN 16           /* length of the epochs this broker creates */

typedef struct broker_ops {
    const char *kind;
    int (*open)(uv_loop_t *loop, const broker_config_t *cfg, const broker_handlers_t *h,
                broker_t **out, const char **why);
    int (*subscribe)(broker_t *b, chat_str_t topic);
    int (*unsubscribe)(broker_t *b, chat_str_t topic);
    int (*publish)(broker_t *b, chat_str_t topic, chat_str_t data, uint64_t tag);
    /* Called by broker.c only with history on and m's key and receipt within their limits. */
    int (*append)(broker_t *b, chat_str_t topic, const broker_append_t *m, uint64_t tag);
    /* Called by broker.c only with history on and q->limit <= history_size. */
    int (*history)(broker_t *b, chat_str_t topic, const broker_history_query_t *q, uint64_t tag);
    int (*is_up)(const broker_t *b);
    void (*close)(broker_t *b);
} broker_ops_t;

/* Every implementation's struct starts with this (filled by broker__init). */
struct broker {
    const broker_ops_t *ops;
    broker_handlers_t h;
    broker_stats_t stats;      /* implementations count reconnects, received and late failures */
    size_t history_size;       /* from broker_config_t */
    uint64_t history_ttl_ms;   /* 0: a topic's history never expires */
    uint64_t dedupe_window_ms; /* 0: idempotency keys are not remembered */
    chat_rng_t rng;            /* epochs (seeded per broker from the node id) */
};

/* Fills the common header from the configuration (the handlers are copied). */
void broker__init(broker_t *b, const broker_ops_t *ops, const broker_config_t *cfg,
                  const broker_handlers_t *h);
/* Writes a new random epoch of BROKER_EPOCH_NEW_LEN bytes of A-Z a-z 0-9 (not NUL-terminated). */
void broker__new_epoch(broker_t *b, char *out);
/* Appends the message of m to out: parts[0] <seq in decimal> parts[1] <epoch> parts[2]. */
void broker__message(chat_buf_t *out, const broker_append_t *m, uint64_t seq, chat_str_t epoch);
/* An append's outcome: counts it (appended, duplicates or publish_errors) and runs on_appended
 * when tag != 0. */
void broker__appended(broker_t *b, uint64_t tag, const broker_append_result_t *r);
/* A read's outcome: counts it (history_reads when r->status == 0) and runs on_history. */
void broker__history_answered(broker_t *b, uint64_t tag, const broker_history_result_t *r);
/* 1 when an append with m's key remembers it (a key given and a dedupe window). */
static inline int broker__dedupes(const broker_t *b, const broker_append_t *m)
{
    return m->dedupe_key.p != NULL && b->dedupe_window_ms > 0;
}

extern const broker_ops_t broker_memory_ops;
extern const broker_ops_t broker_redis_ops;

#endif
