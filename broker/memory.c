/* broker/memory.c - the in-memory broker: one process, one node. publish(), append(), history()
 * and subscribe() copy what they need into a FIFO; a uv_idle_t drains the FIFO on the next loop
 * turn: a publication completes and is delivered if its topic is subscribed; an append is stored
 * (memory_history.c), completes and is delivered the same way; a read is answered; a subscription
 * is confirmed (on_subscribed). One FIFO means one order for all of them, and nothing calls back
 * synchronously. Bounded work per turn: only the items queued before the drain started are
 * handled, so a handler that publishes cannot starve the loop. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker_impl.h"
#include "err.h"
#include "list.h"
#include "map.h"
#include "memory_history.h"

typedef enum mem_kind {
    MEM_PUBLISH,
    MEM_APPEND,
    MEM_READ,
    MEM_SUBSCRIBED,
} mem_kind_t;

typedef struct mem_msg {
    chat_list_t link;
    mem_kind_t kind;
    uint64_t tag;
    size_t topic_len;
    size_t lens[5]; /* publish: the data; append: parts[0..2], the key, the receipt */
    int has_key;
    broker_history_query_t q; /* read */
    char bytes[];             /* topic, then the lens[] strings in order */
} mem_msg_t;

typedef struct mem_broker {
    struct broker base;
    uv_idle_t idle;
    chat_map_t topics;             /* subscribed topic -> (void *)1 */
    chat_list_t fifo;              /* mem_msg_t */
    broker__memory_history_t hist; /* with history on */
    int handles;                   /* open handles: freed when the last one closed */
    int closing;
} mem_broker_t;

static int subscribed(mem_broker_t *m, chat_str_t topic)
{
    return chat_map_get(&m->topics, topic) != NULL;
}

static chat_str_t field(const mem_msg_t *msg, int i) /* i: -1 the topic, else lens[i] */
{
    size_t off = msg->topic_len;
    if (i < 0)
        return chat_str(msg->bytes, msg->topic_len);
    for (int j = 0; j < i; j++)
        off += msg->lens[j];
    return chat_str(msg->bytes + off, msg->lens[i]);
}

static void deliver(mem_broker_t *m, chat_str_t topic, chat_str_t data)
{
    if (!m->closing && subscribed(m, topic) && ++m->base.stats.received)
        m->base.h.on_message(m->base.h.ctx, topic, data);
}

static void run_append(mem_broker_t *m, const mem_msg_t *msg)
{
    chat_str_t topic = field(msg, -1), data;
    broker_append_t a = {.parts = {field(msg, 0), field(msg, 1), field(msg, 2)},
                         .dedupe_key = msg->has_key ? field(msg, 3) : CHAT_STR_NULL,
                         .receipt = field(msg, 4)};
    broker_append_result_t r;
    if (broker__memory_history_append(&m->hist, topic, &a, &r, &data) != 0) {
        broker_append_result_t failed = {.status = CHAT_EBROKER};
        broker__appended(&m->base, msg->tag, &failed);
        return;
    }
    if (!r.duplicate)
        r.receivers = subscribed(m, topic) ? 1 : 0;
    broker__appended(&m->base, msg->tag, &r);
    if (!r.duplicate) /* the store is not touched until the next item: data is still valid */
        deliver(m, topic, data);
}

static void run_one(mem_broker_t *m, const mem_msg_t *msg)
{
    chat_str_t topic = field(msg, -1);
    switch (msg->kind) {
    case MEM_PUBLISH:
        if (msg->tag != 0)
            m->base.h.on_published(m->base.h.ctx, msg->tag, 0, subscribed(m, topic) ? 1 : 0);
        deliver(m, topic, field(msg, 0));
        return;
    case MEM_APPEND:
        run_append(m, msg);
        return;
    case MEM_READ: {
        broker_history_result_t r;
        broker__memory_history_read(&m->hist, topic, &msg->q, &r);
        broker__history_answered(&m->base, msg->tag, &r);
        return;
    }
    case MEM_SUBSCRIBED:
        if (subscribed(m, topic) && m->base.h.on_subscribed != NULL)
            m->base.h.on_subscribed(m->base.h.ctx, topic);
        return;
    }
}

static void drain(uv_idle_t *idle)
{
    mem_broker_t *m = chat_container_of(idle, mem_broker_t, idle);
    chat_list_t batch;
    chat_list_init(&batch);
    if (!chat_list_is_empty(&m->fifo)) { /* move the whole FIFO into batch */
        batch.next = m->fifo.next;
        batch.prev = m->fifo.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        chat_list_init(&m->fifo);
    }
    while (!chat_list_is_empty(&batch) && !m->closing) {
        mem_msg_t *msg = chat_container_of(batch.next, mem_msg_t, link);
        chat_list_unlink(&msg->link);
        run_one(m, msg);
        free(msg);
    }
    while (!chat_list_is_empty(&batch)) { /* closed during a handler: drop the rest */
        mem_msg_t *msg = chat_container_of(batch.next, mem_msg_t, link);
        chat_list_unlink(&msg->link);
        free(msg);
    }
    if (chat_list_is_empty(&m->fifo) && !m->closing)
        uv_idle_stop(&m->idle);
}

/* Queues an item holding topic and the n strings s[] (copied). */
static mem_msg_t *enqueue(mem_broker_t *m, mem_kind_t kind, uint64_t tag, chat_str_t topic,
                          const chat_str_t *s, int n)
{
    size_t total = topic.len;
    for (int i = 0; i < n; i++)
        total += s[i].len;
    mem_msg_t *msg = chat_xcalloc(1, sizeof(*msg) + total);
    msg->kind = kind;
    msg->tag = tag;
    msg->topic_len = topic.len;
    char *p = msg->bytes;
    if (topic.len)
        memcpy(p, topic.p, topic.len);
    p += topic.len;
    for (int i = 0; i < n; i++) {
        msg->lens[i] = s[i].len;
        if (s[i].len)
            memcpy(p, s[i].p, s[i].len);
        p += s[i].len;
    }
    chat_list_insert_tail(&m->fifo, &msg->link);
    uv_idle_start(&m->idle, drain);
    return msg;
}

static int mem_open(uv_loop_t *loop, const broker_config_t *cfg, const broker_handlers_t *h,
                    broker_t **out, const char **why)
{
    mem_broker_t *m = chat_xcalloc(1, sizeof(*m));
    broker__init(&m->base, &broker_memory_ops, cfg, h);
    chat_map_init(&m->topics);
    chat_list_init(&m->fifo);
    uv_idle_init(loop, &m->idle);
    m->handles = 1;
    if (m->base.history_size > 0) {
        broker__memory_history_init(&m->hist, loop, &m->base);
        m->handles++;
    }
    *out = &m->base;
    return 0;
}

static int mem_subscribe(broker_t *b, chat_str_t topic)
{
    mem_broker_t *m = (mem_broker_t *)b;
    if (m->closing || subscribed(m, topic))
        return 0;
    chat_map_put(&m->topics, topic, (void *)1);
    if (!m->closing && b->h.on_subscribed != NULL)
        enqueue(m, MEM_SUBSCRIBED, 0, topic, NULL, 0);
    return 0;
}

static int mem_unsubscribe(broker_t *b, chat_str_t topic)
{
    mem_broker_t *m = (mem_broker_t *)b;
    chat_map_del(&m->topics, topic);
    return 0;
}

static int mem_publish(broker_t *b, chat_str_t topic, chat_str_t data, uint64_t tag)
{
    mem_broker_t *m = (mem_broker_t *)b;
    if (m->closing)
        return CHAT_EBROKER;
    enqueue(m, MEM_PUBLISH, tag, topic, &data, 1);
    return 0;
}

static int mem_append(broker_t *b, chat_str_t topic, const broker_append_t *a, uint64_t tag)
{
    mem_broker_t *m = (mem_broker_t *)b;
    if (m->closing)
        return CHAT_EBROKER;
    chat_str_t s[5] = {a->parts[0], a->parts[1], a->parts[2], a->dedupe_key, a->receipt};
    mem_msg_t *msg = enqueue(m, MEM_APPEND, tag, topic, s, 5);
    msg->has_key = a->dedupe_key.p != NULL;
    return 0;
}

static int mem_history(broker_t *b, chat_str_t topic, const broker_history_query_t *q, uint64_t tag)
{
    mem_broker_t *m = (mem_broker_t *)b;
    if (m->closing)
        return CHAT_EBROKER;
    enqueue(m, MEM_READ, tag, topic, NULL, 0)->q = *q;
    return 0;
}

static int mem_is_up(const broker_t *b)
{
    return ((const mem_broker_t *)b)->closing ? 0 : 1;
}

static void on_handle_closed(uv_handle_t *h)
{
    mem_broker_t *m = h->data;
    if (--m->handles == 0)
        free(m);
}

static void mem_close(broker_t *b)
{
    mem_broker_t *m = (mem_broker_t *)b;
    m->closing = 1;
    while (!chat_list_is_empty(&m->fifo)) {
        mem_msg_t *msg = chat_container_of(m->fifo.next, mem_msg_t, link);
        chat_list_unlink(&msg->link);
        free(msg);
    }
    chat_map_dispose(&m->topics);
    m->idle.data = m;
    uv_close((uv_handle_t *)&m->idle, on_handle_closed);
    if (b->history_size > 0) {
        m->hist.sweep.data = m; /* the store is freed: the close callback finds the broker */
        broker__memory_history_close(&m->hist, on_handle_closed);
    }
}

const broker_ops_t broker_memory_ops = {
    .kind = "memory",
    .open = mem_open,
    .subscribe = mem_subscribe,
    .unsubscribe = mem_unsubscribe,
    .publish = mem_publish,
    .append = mem_append,
    .history = mem_history,
    .is_up = mem_is_up,
    .close = mem_close,
};
