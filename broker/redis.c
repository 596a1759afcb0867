/* broker/redis.c - the Redis pub/sub broker: many gateway nodes, one chat service.
 *
 * Two links (broker/redis_link.c): PUBLISH goes over one, SUBSCRIBE lives on the other (a RESP2
 * connection in subscribed mode cannot publish). A room's channel is <prefix>room:<room>.
 * - The wanted set holds the topics with local members; the subscriber link subscribes exactly
 *   those, and after every reconnect subscribes them all again, in batches.
 * - publish() answers on_published(tag) when Redis replied to the PUBLISH (0), or when the command
 *   failed or timed out (CHAT_EBROKER). While either link is down it returns CHAT_EBROKER (without
 *   the subscriber, this node's own members would miss what it acks).
 * - A canary: every second the node publishes to its own channel <prefix>node:<node id> and
 *   expects it back on the subscriber link. A canary not back within CANARY_LATE_MS marks the
 *   subscription unhealthy and forces the subscriber link to reconnect (a subscription that
 *   silently stopped is the classic failure here; the health check must not stay green).
 *   While the publisher link is down no canary can be sent, so the subscription counts as
 *   unverified from then on: a stalled Redis that timed the publisher out before any canary was
 *   in flight gets its subscriber connection rebuilt as well, CANARY_LATE_MS later.
 * - The broker is "up" (on_link, broker_is_up) while both links are ready and the canary is fresh.
 * - on_subscribed(topic) runs from the subscribe confirmation of a wanted room channel on the
 *   subscriber link (from then on Redis delivers its messages): after SUBSCRIBE, and after every
 *   reconnect's batch resubscribe.
 * - History (history_size > 0; redis_history.c): appends and reads run the Lua scripts of
 *   redis_scripts.c with EVALSHA on the publisher link, SCRIPT LOADed first on every connection.
 *   Replies on that link come in order, so a FIFO of pending ops (broker__redis_op_t) says what
 *   each one answers: a publish, an append, a read or a SCRIPT LOAD. A failed link answers each
 *   pending op once, in order. */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker_impl.h"
#include "buf.h"
#include "err.h"
#include "log.h"
#include "map.h"
#include "redis_impl.h"
#include "redis_url.h"

#define CANARY_EVERY_MS     1000
#define CANARY_LATE_MS      3000
#define SUBSCRIBE_BATCH     256
#define BACKOFF_MIN_MS      500
#define BACKOFF_MAX_MS      10000

/* ---- the publisher link's FIFO of ops ------------------------------------------------------ */

static void ops_push(broker__redis_ops_t *q, broker__redis_op_t op)
{
    if (q->n == q->cap) { /* grow, unwrapping the ring */
        size_t cap = q->cap ? q->cap * 2 : 64;
        broker__redis_op_t *v = chat_xmalloc(cap * sizeof(*v));
        for (size_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->n) % q->cap] = op;
    q->n++;
}

static int ops_pop(broker__redis_ops_t *q, broker__redis_op_t *out)
{
    if (q->n == 0)
        return 0;
    *out = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return 1;
}

static void ops_free(broker__redis_ops_t *q)
{
    broker__redis_op_t op;
    while (ops_pop(q, &op))
        free(op.read);
    free(q->v);
    q->v = NULL;
    q->cap = 0;
}

int broker__redis_command(redis_broker_t *b, redis_op_kind_t kind, uint64_t tag,
                          broker__redis_read_t *read, int argc, const char **argv,
                          const size_t *lens)
{
    if (redis_link_command(b->pub, argc, argv, lens, tag) != 0) {
        free(read);
        return CHAT_EBROKER;
    }
    ops_push(&b->ops, (broker__redis_op_t){kind, tag, read});
    return 0;
}

void broker__redis_warn(redis_broker_t *b, const char *reason, chat_str_t detail)
{
    uint64_t now = uv_now(b->loop);
    if (b->last_warn != 0 && now - b->last_warn < 1000) {
        b->warns_dropped++;
        return;
    }
    if (detail.len > 200)
        detail.len = 200;
    CHAT_LOG(CHAT_LOG_WARN, "redis reply refused", CHAT_KV_C("reason", reason),
             CHAT_KV_S("detail", detail), CHAT_KV_N("dropped", b->warns_dropped));
    b->last_warn = now ? now : 1;
    b->warns_dropped = 0;
}

static void update_up(redis_broker_t *b)
{
    int up = redis_link_ready(b->pub) && redis_link_ready(b->sub) && b->canary_ok;
    if (up == b->up)
        return;
    b->up = up;
    if (up && b->was_up)
        b->base.stats.reconnects++;
    b->was_up |= up;
    if (b->base.h.on_link)
        b->base.h.on_link(b->base.h.ctx, up);
}

static chat_str_t room_channel(redis_broker_t *b, chat_str_t topic)
{
    chat_buf_reset(&b->chan);
    chat_buf_append(&b->chan, b->prefix, b->prefix_len);
    chat_buf_append(&b->chan, "room:", 5);
    chat_buf_append_str(&b->chan, topic);
    return chat_buf_str(&b->chan);
}

/* SUBSCRIBE or UNSUBSCRIBE one room channel on the subscriber link (if ready). */
static void sub_command(redis_broker_t *b, const char *verb, chat_str_t topic)
{
    chat_str_t ch = room_channel(b, topic);
    const char *argv[2] = {verb, ch.p};
    size_t lens[2] = {strlen(verb), ch.len};
    redis_link_command(b->sub, 2, argv, lens, 0);
}

/* After (re)connecting: the canary channel and every wanted topic, SUBSCRIBE_BATCH per command. */
static void resubscribe_all(redis_broker_t *b)
{
    const char **argv = chat_xmalloc((SUBSCRIBE_BATCH + 1) * sizeof(*argv));
    size_t *lens = chat_xmalloc((SUBSCRIBE_BATCH + 1) * sizeof(*lens));
    chat_buf_t names = CHAT_BUF_INIT;
    size_t offs[SUBSCRIBE_BATCH];
    chat_map_iter_t it = {0, NULL};
    chat_str_t topic;
    int more = 1, first = 1;
    size_t total = 0;
    while (more) {
        int n = 1;
        chat_buf_reset(&names);
        argv[0] = "SUBSCRIBE";
        lens[0] = 9;
        if (first) {
            argv[n] = b->canary;
            lens[n++] = strlen(b->canary);
            first = 0;
        }
        int start = n;
        while (n < SUBSCRIBE_BATCH + 1) {
            if (chat_map_next(&b->wanted, &it, &topic) == NULL) {
                more = 0;
                break;
            }
            offs[n - start] = names.len;
            chat_buf_append(&names, b->prefix, b->prefix_len);
            chat_buf_append(&names, "room:", 5);
            chat_buf_append_str(&names, topic);
            lens[n] = names.len - offs[n - start];
            n++;
        }
        for (int i = start; i < n; i++) /* names.p is final now: point into it */
            argv[i] = names.p + offs[i - start];
        total += (size_t)(n - start);
        if (n > 1)
            redis_link_command(b->sub, n, argv, lens, 0);
    }
    chat_buf_free(&names);
    free(argv);
    free(lens);
    CHAT_LOG(CHAT_LOG_INFO, "redis subscribed", CHAT_KV_N("rooms", total));
}

static void on_pub_ready(void *ctx)
{
    redis_broker_t *b = ctx;
    if (b->base.history_size > 0) /* before anything else can be sent on this connection */
        broker__redis_history_load_scripts(b);
    update_up(b);
}

static void on_pub_down(void *ctx, const char *why)
{
    redis_broker_t *b = ctx;
    if (redis_link_ready(b->sub) && b->canary_waiting_since == 0)
        b->canary_waiting_since = uv_now(b->loop); /* no canary can vouch for it meanwhile */
    update_up(b);
}

static void publish_reply(redis_broker_t *b, uint64_t tag, redisReply *r)
{
    if (tag == 0)
        return;
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (!ok) {
        b->base.stats.publish_errors++;
        b->base.stats.published--; /* counted when it was sent */
    }
    b->base.h.on_published(b->base.h.ctx, tag, ok ? 0 : CHAT_EBROKER,
                           ok && r->integer > 0 ? (uint64_t)r->integer : 0);
}

static void on_pub_reply(void *ctx, uint64_t tag, redisReply *r)
{
    redis_broker_t *b = ctx;
    broker__redis_op_t op;
    if (b->closed)
        return;
    if (!ops_pop(&b->ops, &op)) { /* cannot happen: one reply per command, in order */
        broker__redis_warn(b, "reply without a pending op", CHAT_STR_NULL);
        return;
    }
    if (op.tag != tag) { /* likewise */
        broker__redis_warn(b, "reply for another op", CHAT_STR_NULL);
        free(op.read);
        return;
    }
    switch (op.kind) {
    case OP_PUBLISH:
        publish_reply(b, tag, r);
        return;
    case OP_APPEND:
        broker__redis_history_append_reply(b, tag, r);
        return;
    case OP_READ:
        broker__redis_history_read_reply(b, op.read, tag, r);
        return;
    case OP_LOAD:
        broker__redis_history_load_reply(b, tag, r);
        return;
    }
}

static void on_sub_ready(void *ctx)
{
    redis_broker_t *b = ctx;
    b->canary_ok = 0;
    b->canary_waiting_since = 0;
    b->canary_seen = b->canary_sent;
    resubscribe_all(b);
    update_up(b);
}

static void on_sub_down(void *ctx, const char *why)
{
    redis_broker_t *b = ctx;
    b->canary_ok = 0;
    update_up(b);
    broker__redis_history_release(b, 1); /* no canary comes back; the resubscribe fills */
}

static void on_canary(redis_broker_t *b, redisReply *payload)
{
    uint64_t seq = strtoull(payload->str, NULL, 10);
    if (seq > b->canary_seen)
        b->canary_seen = seq;
    if (b->canary_seen >= b->canary_sent) /* verified now; unverified again if no more can come */
        b->canary_waiting_since = redis_link_ready(b->pub) ? 0 : uv_now(b->loop);
    b->canary_ok = 1;
    update_up(b);
    broker__redis_history_release(b, 0);
}

/* The topic of a room channel <prefix>room:<topic>; 0 for any other channel. */
static int room_topic(const redis_broker_t *b, chat_str_t ch, chat_str_t *topic)
{
    if (ch.len <= b->prefix_len + 5 || memcmp(ch.p, b->prefix, b->prefix_len) != 0 ||
        memcmp(ch.p + b->prefix_len, "room:", 5) != 0)
        return 0;
    *topic = chat_str(ch.p + b->prefix_len + 5, ch.len - b->prefix_len - 5);
    return 1;
}

static void on_sub_push(void *ctx, redisReply *r)
{
    redis_broker_t *b = ctx;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (r->element[1]->type != REDIS_REPLY_STRING)
        return;
    chat_str_t kind = chat_str(r->element[0]->str, r->element[0]->len);
    chat_str_t ch = chat_str(r->element[1]->str, r->element[1]->len), topic;
    if (chat_str_eq(kind, CHAT_LIT("subscribe"))) { /* a channel's confirmation */
        if (r->element[2]->type == REDIS_REPLY_INTEGER && room_topic(b, ch, &topic) &&
            chat_map_get(&b->wanted, topic) != NULL && b->base.h.on_subscribed != NULL)
            b->base.h.on_subscribed(b->base.h.ctx, topic);
        return;
    }
    if (!chat_str_eq(kind, CHAT_LIT("message")) || r->element[2]->type != REDIS_REPLY_STRING)
        return; /* unsubscribe confirmations */
    if (chat_str_eq(ch, chat_cstr(b->canary))) {
        on_canary(b, r->element[2]);
        return;
    }
    if (room_topic(b, ch, &topic) && chat_map_get(&b->wanted, topic) != NULL &&
        ++b->base.stats.received)
        b->base.h.on_message(b->base.h.ctx, topic,
                             chat_str(r->element[2]->str, r->element[2]->len));
}

static void on_canary_timer(uv_timer_t *t)
{
    redis_broker_t *b = t->data;
    uint64_t now = uv_now(b->loop);
    if (!redis_link_ready(b->sub))
        return;
    /* Checked even while the publisher link is down: a canary sent before a stall must come
     * back in time, or the subscription is suspect too (its pushes may have stalled with it). */
    if (b->canary_waiting_since != 0 && now - b->canary_waiting_since >= CANARY_LATE_MS) {
        CHAT_LOG(CHAT_LOG_WARN, "redis canary late: resubscribing",
                 CHAT_KV_N("duration_ms", now - b->canary_waiting_since));
        b->canary_ok = 0;
        b->canary_waiting_since = 0;
        redis_link_reset(b->sub, "canary late");
        update_up(b);
        return;
    }
    if (!redis_link_ready(b->pub))
        return;
    char seq[24];
    snprintf(seq, sizeof(seq), "%" PRIu64, b->canary_sent + 1);
    const char *argv[3] = {"PUBLISH", b->canary, seq};
    size_t lens[3] = {7, strlen(b->canary), strlen(seq)};
    if (broker__redis_command(b, OP_PUBLISH, 0, NULL, 3, argv, lens) != 0)
        return;
    b->canary_sent++;
    if (b->canary_waiting_since == 0)
        b->canary_waiting_since = now;
}

static int redis_open(uv_loop_t *loop, const broker_config_t *cfg, const broker_handlers_t *h,
                      broker_t **out, const char **why)
{
    redis_url_t url;
    char name[160];
    if (redis_url_parse(cfg->url, &url, why) != 0)
        return CHAT_EINVAL;
    redis_broker_t *b = chat_xcalloc(1, sizeof(*b));
    broker__init(&b->base, &broker_redis_ops, cfg, h);
    b->loop = loop;
    if (b->base.history_size > 0 && broker__redis_history_open(b, why) != 0) {
        free(b);
        return CHAT_EINVAL;
    }
    chat_map_init(&b->wanted);
    chat_list_init(&b->held_reads);
    b->prefix = chat_xstrndup(cfg->prefix, strlen(cfg->prefix));
    b->prefix_len = strlen(cfg->prefix);
    size_t clen = b->prefix_len + 5 + strlen(cfg->node_id) + 1;
    b->canary = chat_xmalloc(clen);
    snprintf(b->canary, clen, "%snode:%s", cfg->prefix, cfg->node_id);
    redis_link_config_t lc = {
        .url = url,
        .timeout_ms = cfg->timeout_ms,
        .backoff_min_ms = BACKOFF_MIN_MS,
        .backoff_max_ms = BACKOFF_MAX_MS,
    };
    redis_link_handlers_t ph = {.on_ready = on_pub_ready, .on_down = on_pub_down,
                                .on_reply = on_pub_reply, .ctx = b};
    redis_link_handlers_t sh = {.on_ready = on_sub_ready, .on_down = on_sub_down,
                                .on_push = on_sub_push, .ctx = b};
    snprintf(name, sizeof(name), "chat-gateway:%s:pub", cfg->node_id);
    lc.name = name;
    redis_link_open(loop, &lc, &ph, &b->pub);
    snprintf(name, sizeof(name), "chat-gateway:%s:sub", cfg->node_id);
    lc.subscriber = 1;
    redis_link_open(loop, &lc, &sh, &b->sub);
    uv_timer_init(loop, &b->canary_timer);
    b->canary_timer.data = b;
    uv_timer_start(&b->canary_timer, on_canary_timer, CANARY_EVERY_MS, CANARY_EVERY_MS);
    *out = &b->base;
    return 0;
}

static int redis_subscribe(broker_t *base, chat_str_t topic)
{
    redis_broker_t *b = (redis_broker_t *)base;
    if (chat_map_get(&b->wanted, topic) != NULL)
        return 0;
    chat_map_put(&b->wanted, topic, (void *)1);
    sub_command(b, "SUBSCRIBE", topic); /* or at the next (re)connect */
    return 0;
}

static int redis_unsubscribe(broker_t *base, chat_str_t topic)
{
    redis_broker_t *b = (redis_broker_t *)base;
    if (chat_map_del(&b->wanted, topic) == NULL)
        return 0;
    sub_command(b, "UNSUBSCRIBE", topic);
    return 0;
}

static int redis_publish(broker_t *base, chat_str_t topic, chat_str_t data, uint64_t tag)
{
    redis_broker_t *b = (redis_broker_t *)base;
    /* Without the subscriber link this node's own members would miss the message (the sender's
     * copy included) although the sender got its ack: refuse until both links are up. */
    if (b->closed || !redis_link_ready(b->sub))
        return CHAT_EBROKER;
    chat_str_t ch = room_channel(b, topic);
    const char *argv[3] = {"PUBLISH", ch.p, data.p};
    size_t lens[3] = {7, ch.len, data.len};
    return broker__redis_command(b, OP_PUBLISH, tag, NULL, 3, argv, lens);
}

static int redis_is_up(const broker_t *base)
{
    const redis_broker_t *b = (const redis_broker_t *)base;
    return b->up && !b->closed; /* closed: it takes nothing any more */
}

static void on_canary_timer_closed(uv_handle_t *h)
{
    redis_broker_t *b = h->data;
    chat_map_dispose(&b->wanted);
    chat_buf_free(&b->chan);
    ops_free(&b->ops);
    broker__redis_history_free(b);
    free(b->prefix);
    free(b->canary);
    free(b);
}

static void redis_close(broker_t *base)
{
    redis_broker_t *b = (redis_broker_t *)base;
    b->closed = 1;
    redis_link_close(b->pub);
    redis_link_close(b->sub);
    uv_close((uv_handle_t *)&b->canary_timer, on_canary_timer_closed);
}

const broker_ops_t broker_redis_ops = {
    .kind = "redis",
    .open = redis_open,
    .subscribe = redis_subscribe,
    .unsubscribe = redis_unsubscribe,
    .publish = redis_publish,
    .append = broker__redis_history_append,
    .history = broker__redis_history_read,
    .is_up = redis_is_up,
    .close = redis_close,
};
