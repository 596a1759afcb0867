/* broker/memory.c - the in-memory broker: one process, one node. publish() copies the message into
 * a FIFO; a uv_idle_t drains the FIFO on the next loop turn, completing each publication and
 * delivering it if its topic is subscribed. Bounded work per turn: only the messages queued before
 * the drain started are handled, so a handler that publishes cannot starve the loop. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker_impl.h"
#include "err.h"
#include "list.h"
#include "map.h"

typedef struct mem_msg {
    chat_list_t link;
    uint64_t tag;
    size_t topic_len, data_len;
    char bytes[]; /* topic then data */
} mem_msg_t;

typedef struct mem_broker {
    struct broker base;
    uv_idle_t idle;
    chat_map_t topics; /* subscribed topic -> (void *)1 */
    chat_list_t fifo;  /* mem_msg_t */
    int closing;
} mem_broker_t;

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
        chat_str_t topic = chat_str(msg->bytes, msg->topic_len);
        if (msg->tag != 0)
            m->base.h.on_published(m->base.h.ctx, msg->tag, 0,
                                   chat_map_get(&m->topics, topic) != NULL ? 1 : 0);
        if (!m->closing && chat_map_get(&m->topics, topic) != NULL && ++m->base.stats.received)
            m->base.h.on_message(m->base.h.ctx, topic,
                                 chat_str(msg->bytes + msg->topic_len, msg->data_len));
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

static int mem_open(uv_loop_t *loop, const broker_config_t *cfg, const broker_handlers_t *h,
                    broker_t **out, const char **why)
{
    mem_broker_t *m = chat_xcalloc(1, sizeof(*m));
    m->base.ops = &broker_memory_ops;
    m->base.h = *h;
    chat_map_init(&m->topics);
    chat_list_init(&m->fifo);
    uv_idle_init(loop, &m->idle);
    *out = &m->base;
    return 0;
}

static int mem_subscribe(broker_t *b, chat_str_t topic)
{
    mem_broker_t *m = (mem_broker_t *)b;
    chat_map_put(&m->topics, topic, (void *)1);
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
    mem_msg_t *msg = chat_xmalloc(sizeof(*msg) + topic.len + data.len);
    msg->tag = tag;
    msg->topic_len = topic.len;
    msg->data_len = data.len;
    if (topic.len)
        memcpy(msg->bytes, topic.p, topic.len);
    if (data.len)
        memcpy(msg->bytes + topic.len, data.p, data.len);
    chat_list_insert_tail(&m->fifo, &msg->link);
    uv_idle_start(&m->idle, drain);
    return 0;
}

static int mem_is_up(const broker_t *b)
{
    return ((const mem_broker_t *)b)->closing ? 0 : 1;
}

static void on_idle_closed(uv_handle_t *h)
{
    mem_broker_t *m = chat_container_of((uv_idle_t *)h, mem_broker_t, idle);
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
    uv_close((uv_handle_t *)&m->idle, on_idle_closed);
}

const broker_ops_t broker_memory_ops = {
    .kind = "memory",
    .open = mem_open,
    .subscribe = mem_subscribe,
    .unsubscribe = mem_unsubscribe,
    .publish = mem_publish,
    .is_up = mem_is_up,
    .close = mem_close,
};
