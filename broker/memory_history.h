/* broker/memory_history.h - private to broker/memory*.c: the memory broker's history store. Per
 * topic a ring of the last history_size appended messages (seq, bytes), the topic's seq and epoch
 * and the time of its last append; one idempotency map for all topics. State expires
 * history_ttl_ms after a topic's last append (or after the read that created it) and keys
 * dedupe_window_ms after their append: lazily when a topic or key is looked up, and by a sweep
 * timer (unreferenced: it never keeps the loop alive) so that the memory of dead rooms is given
 * back. Expiry is O(expired): one TTL for every topic and one window for every key, so a list in
 * order of the last touch is a list in order of expiry. The functions run from the memory broker's
 * drain, one at a time; nothing here calls back. */
#ifndef CHAT_BROKER_MEMORY_HISTORY_H
#define CHAT_BROKER_MEMORY_HISTORY_H

#include <uv.h>

#include "broker_impl.h"
#include "buf.h"
#include "list.h"
#include "map.h"

typedef struct broker__memory_history {
    broker_t *b; /* the owner: its configuration and epoch generator */
    uv_loop_t *loop;
    uv_timer_t sweep;                /* data: this struct */
    chat_map_t topics;               /* topic -> mem_topic_t (memory_history.c) */
    chat_list_t by_age;              /* mem_topic_t, least recently appended first */
    chat_map_t keys;                 /* <topic length><topic><key> -> mem_key_t */
    chat_list_t key_fifo;            /* mem_key_t, oldest first */
    chat_buf_t scratch;              /* a composite key being looked up */
    broker_history_entry_t *entries; /* history_size entries: a read's answer */
} broker__memory_history_t;

/* Initialises h (its timer on loop) for b, which must have history on. */
void broker__memory_history_init(broker__memory_history_t *h, uv_loop_t *loop, broker_t *b);
/* Appends m to topic's history (or finds its idempotency key): fills r (status 0; epoch and
 * receipt borrowed until the next call into the store) and *data (the stored message, borrowed
 * likewise; CHAT_STR_NULL for a duplicate). receivers is left to the caller. Returns 0, or
 * CHAT_EBROKER when the topic's seq cannot grow any more (nothing stored). */
int broker__memory_history_append(broker__memory_history_t *h, chat_str_t topic,
                                  const broker_append_t *m, broker_append_result_t *r,
                                  chat_str_t *data);
/* Reads what q selects from topic (creating its epoch when it has none): fills r, borrowed until
 * the next call into the store. */
void broker__memory_history_read(broker__memory_history_t *h, chat_str_t topic,
                                 const broker_history_query_t *q, broker_history_result_t *r);
/* Stored topics and remembered keys (tests). */
size_t broker__memory_history_topics(const broker__memory_history_t *h);
size_t broker__memory_history_keys(const broker__memory_history_t *h);
/* Frees everything and closes the timer; close_cb runs with the timer handle. */
void broker__memory_history_close(broker__memory_history_t *h, uv_close_cb close_cb);

#endif
