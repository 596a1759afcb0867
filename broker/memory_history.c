/* broker/memory_history.c - the memory broker's history store (see memory_history.h). A topic's
 * ring grows by doubling up to history_size slots and is then overwritten oldest first; a slot's
 * buffer is kept and reused, so a busy room appends without allocating. The seqs in a ring are
 * consecutive (every append is stored), which makes a read index arithmetic. */
#include "memory_history.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

typedef struct mem_slot {
    uint64_t seq;
    chat_buf_t data;
} mem_slot_t;

typedef struct mem_topic {
    chat_list_t age_link; /* in by_age */
    uint64_t touched;     /* uv_now() of the last append, or of the read that created it */
    uint64_t seq;
    size_t epoch_len;
    char epoch[BROKER_EPOCH_MAX];
    mem_slot_t *slots;
    size_t cap, count, head; /* head: the oldest slot once the ring is full, else 0 */
    size_t name_len;
    char name[];
} mem_topic_t;

typedef struct mem_key {
    chat_list_t fifo_link; /* in key_fifo */
    uint64_t added;        /* uv_now() of the append */
    uint64_t seq;
    size_t epoch_len;
    char epoch[BROKER_EPOCH_MAX];
    size_t key_len, receipt_len;
    char bytes[]; /* the composite key, then the receipt */
} mem_key_t;

static void on_sweep(uv_timer_t *t);

static void free_topic(broker__memory_history_t *h, mem_topic_t *t)
{
    chat_map_del(&h->topics, chat_str(t->name, t->name_len));
    chat_list_unlink(&t->age_link);
    for (size_t i = 0; i < t->cap; i++)
        chat_buf_free(&t->slots[i].data);
    free(t->slots);
    free(t);
}

static void free_key(broker__memory_history_t *h, mem_key_t *k)
{
    chat_map_del(&h->keys, chat_str(k->bytes, k->key_len));
    chat_list_unlink(&k->fifo_link);
    free(k);
}

static int topic_expired(const broker__memory_history_t *h, const mem_topic_t *t, uint64_t now)
{
    return h->b->history_ttl_ms > 0 && now - t->touched >= h->b->history_ttl_ms;
}

static int key_expired(const broker__memory_history_t *h, const mem_key_t *k, uint64_t now)
{
    return now - k->added >= h->b->dedupe_window_ms;
}

/* Arms the sweep for the earliest expiry (the head of either list: within a list, whatever is
 * added later expires later), unless it is due by then already. */
static void arm_sweep(broker__memory_history_t *h)
{
    uint64_t now = uv_now(h->loop), wait = UINT64_MAX;
    if (h->b->history_ttl_ms > 0 && !chat_list_is_empty(&h->by_age)) {
        mem_topic_t *t = chat_container_of(h->by_age.next, mem_topic_t, age_link);
        uint64_t age = now - t->touched;
        wait = age >= h->b->history_ttl_ms ? 0 : h->b->history_ttl_ms - age;
    }
    if (!chat_list_is_empty(&h->key_fifo)) {
        mem_key_t *k = chat_container_of(h->key_fifo.next, mem_key_t, fifo_link);
        uint64_t age = now - k->added;
        uint64_t kw = age >= h->b->dedupe_window_ms ? 0 : h->b->dedupe_window_ms - age;
        if (kw < wait)
            wait = kw;
    }
    if (wait == UINT64_MAX)
        return;
    if (uv_is_active((uv_handle_t *)&h->sweep) && uv_timer_get_due_in(&h->sweep) <= wait)
        return;
    uv_timer_start(&h->sweep, on_sweep, wait, 0);
}

static void on_sweep(uv_timer_t *timer)
{
    broker__memory_history_t *h = timer->data;
    uint64_t now = uv_now(h->loop);
    while (!chat_list_is_empty(&h->by_age)) {
        mem_topic_t *t = chat_container_of(h->by_age.next, mem_topic_t, age_link);
        if (!topic_expired(h, t, now))
            break;
        free_topic(h, t);
    }
    while (!chat_list_is_empty(&h->key_fifo)) {
        mem_key_t *k = chat_container_of(h->key_fifo.next, mem_key_t, fifo_link);
        if (!key_expired(h, k, now))
            break;
        free_key(h, k);
    }
    arm_sweep(h);
}

void broker__memory_history_init(broker__memory_history_t *h, uv_loop_t *loop, broker_t *b)
{
    memset(h, 0, sizeof(*h));
    h->b = b;
    h->loop = loop;
    chat_map_init(&h->topics);
    chat_map_init(&h->keys);
    chat_list_init(&h->by_age);
    chat_list_init(&h->key_fifo);
    h->entries = chat_xcalloc(b->history_size, sizeof(*h->entries));
    uv_timer_init(loop, &h->sweep);
    uv_unref((uv_handle_t *)&h->sweep);
    h->sweep.data = h;
}

/* The topic's state: NULL when it has none (or it expired: then it is freed), unless create. */
static mem_topic_t *get_topic(broker__memory_history_t *h, chat_str_t topic, int create)
{
    uint64_t now = uv_now(h->loop);
    mem_topic_t *t = chat_map_get(&h->topics, topic);
    if (t != NULL && topic_expired(h, t, now)) {
        free_topic(h, t);
        t = NULL;
    }
    if (t != NULL || !create)
        return t;
    t = chat_xcalloc(1, sizeof(*t) + topic.len);
    if (topic.len)
        memcpy(t->name, topic.p, topic.len);
    t->name_len = topic.len;
    broker__new_epoch(h->b, t->epoch);
    t->epoch_len = BROKER_EPOCH_NEW_LEN;
    t->touched = now;
    chat_list_insert_tail(&h->by_age, &t->age_link);
    chat_map_put(&h->topics, topic, t);
    arm_sweep(h);
    return t;
}

/* scratch = <topic length, 8 bytes><topic><key>: no topic and key pair shares it with another. */
static chat_str_t composite_key(broker__memory_history_t *h, chat_str_t topic, chat_str_t key)
{
    uint64_t n = topic.len;
    chat_buf_reset(&h->scratch);
    chat_buf_append(&h->scratch, &n, sizeof(n));
    chat_buf_append_str(&h->scratch, topic);
    chat_buf_append_str(&h->scratch, key);
    return chat_buf_str(&h->scratch);
}

static mem_key_t *get_key(broker__memory_history_t *h, chat_str_t ck)
{
    mem_key_t *k = chat_map_get(&h->keys, ck);
    if (k != NULL && key_expired(h, k, uv_now(h->loop))) {
        free_key(h, k);
        k = NULL;
    }
    return k;
}

static void put_key(broker__memory_history_t *h, chat_str_t ck, const mem_topic_t *t,
                    chat_str_t receipt)
{
    mem_key_t *k = chat_xmalloc(sizeof(*k) + ck.len + receipt.len);
    k->added = uv_now(h->loop);
    k->seq = t->seq;
    k->epoch_len = t->epoch_len;
    memcpy(k->epoch, t->epoch, t->epoch_len);
    k->key_len = ck.len;
    k->receipt_len = receipt.len;
    memcpy(k->bytes, ck.p, ck.len);
    if (receipt.len)
        memcpy(k->bytes + ck.len, receipt.p, receipt.len);
    chat_list_insert_tail(&h->key_fifo, &k->fifo_link);
    chat_map_put(&h->keys, ck, k);
    arm_sweep(h);
}

/* The slot the next append goes into (the oldest once the ring is full). */
static mem_slot_t *next_slot(broker__memory_history_t *h, mem_topic_t *t)
{
    size_t size = h->b->history_size;
    if (t->count == size) {
        mem_slot_t *s = &t->slots[t->head];
        t->head = (t->head + 1) % size;
        return s;
    }
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        if (cap > size)
            cap = size;
        t->slots = chat_xrealloc(t->slots, cap * sizeof(*t->slots));
        memset(t->slots + t->cap, 0, (cap - t->cap) * sizeof(*t->slots));
        t->cap = cap;
    }
    return &t->slots[t->count++];
}

static const mem_slot_t *slot_at(const mem_topic_t *t, size_t i) /* i: 0 is the oldest */
{
    return &t->slots[(t->head + i) % t->cap];
}

int broker__memory_history_append(broker__memory_history_t *h, chat_str_t topic,
                                  const broker_append_t *m, broker_append_result_t *r,
                                  chat_str_t *data)
{
    chat_str_t ck = CHAT_STR_NULL;
    memset(r, 0, sizeof(*r));
    *data = CHAT_STR_NULL;
    if (broker__dedupes(h->b, m)) {
        ck = composite_key(h, topic, m->dedupe_key);
        mem_key_t *k = get_key(h, ck);
        if (k != NULL) {
            r->duplicate = 1;
            r->seq = k->seq;
            r->epoch = chat_str(k->epoch, k->epoch_len);
            r->receipt = chat_str(k->bytes + k->key_len, k->receipt_len);
            return 0;
        }
    }
    mem_topic_t *t = get_topic(h, topic, 1);
    if (t->seq >= BROKER_SEQ_MAX)
        return CHAT_EBROKER;
    t->seq++;
    mem_slot_t *s = next_slot(h, t);
    s->seq = t->seq;
    chat_buf_reset(&s->data);
    broker__message(&s->data, m, t->seq, chat_str(t->epoch, t->epoch_len));
    t->touched = uv_now(h->loop);
    chat_list_unlink(&t->age_link); /* the most recently appended now */
    chat_list_insert_tail(&h->by_age, &t->age_link);
    if (ck.p != NULL)
        put_key(h, ck, t, m->receipt);
    r->seq = t->seq;
    r->epoch = chat_str(t->epoch, t->epoch_len);
    *data = chat_buf_str(&s->data);
    return 0;
}

void broker__memory_history_read(broker__memory_history_t *h, chat_str_t topic,
                                 const broker_history_query_t *q, broker_history_result_t *r)
{
    mem_topic_t *t = get_topic(h, topic, 1);
    size_t start = 0, end = t->count; /* ring indices [start, end) */
    memset(r, 0, sizeof(*r));
    if (t->count > 0) {
        uint64_t first = slot_at(t, 0)->seq, n = t->count;
        if (q->has_after) {
            if (q->after >= first) /* skip the entries up to after */
                start = q->after - first + 1 >= n ? t->count : (size_t)(q->after - first + 1);
            if (end - start > q->limit)
                end = start + q->limit;
        } else {
            if (q->before != 0) /* keep the entries below before */
                end = q->before <= first       ? 0
                      : q->before - first >= n ? t->count
                                               : (size_t)(q->before - first);
            start = end > q->limit ? end - q->limit : 0;
        }
    }
    if (q->limit == 0)
        start = end = 0;
    for (size_t i = start; i < end; i++) {
        const mem_slot_t *s = slot_at(t, i);
        h->entries[i - start] = (broker_history_entry_t){s->seq, chat_buf_str(&s->data)};
    }
    r->seq = t->seq;
    r->epoch = chat_str(t->epoch, t->epoch_len);
    r->entries = h->entries;
    r->n = end - start;
}

size_t broker__memory_history_topics(const broker__memory_history_t *h)
{
    return chat_map_count(&h->topics);
}

size_t broker__memory_history_keys(const broker__memory_history_t *h)
{
    return chat_map_count(&h->keys);
}

void broker__memory_history_close(broker__memory_history_t *h, uv_close_cb close_cb)
{
    while (!chat_list_is_empty(&h->by_age))
        free_topic(h, chat_container_of(h->by_age.next, mem_topic_t, age_link));
    while (!chat_list_is_empty(&h->key_fifo))
        free_key(h, chat_container_of(h->key_fifo.next, mem_key_t, fifo_link));
    chat_map_dispose(&h->topics);
    chat_map_dispose(&h->keys);
    chat_buf_free(&h->scratch);
    free(h->entries);
    h->entries = NULL;
    uv_close((uv_handle_t *)&h->sweep, close_cb);
}
