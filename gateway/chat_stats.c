/* gateway/chat_stats.c - the chat's own metric families (docs/operations.md), appended to
 * /metrics through gw_app_t.render_metrics: client messages by type, frames delivered, rooms,
 * broker messages refused, the busiest rooms (toprooms.h: Space-Saving over counts halved every
 * TOP_SWEEP_MS; the busiest public rooms get a series, the rest sum as _other, dm: and private:
 * rooms as _private), and the delivery latency histogram. Also the cap of sampled message log
 * records. Counters live in gw_chat_t; labels never carry user ids or tokens. */
#include <stdio.h>
#include <stdlib.h>

#include "chat.h"
#include "clock.h"

#define TOP_SWEEP_MS 60000

/* upper bounds in seconds */
static const double latency_le[GW_LATENCY_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void gw__chat_stats_init(gw_chat_t *chat)
{
    gw_toprooms_init(&chat->top, (size_t)chat->srv->cfg->metrics_top_rooms);
    chat->top_decayed_ms = uv_now(chat->srv->loop);
}

void gw__chat_stats_dispose(gw_chat_t *chat)
{
    gw_toprooms_dispose(&chat->top);
}

/* The decay of the top-rooms scores: a half-life of one sweep period (toprooms.h). */
void gw__chat_stats_tick(gw_chat_t *chat, uint64_t now)
{
    if (now - chat->top_decayed_ms < TOP_SWEEP_MS)
        return;
    chat->top_decayed_ms = now;
    gw_toprooms_decay(&chat->top);
}

void gw__chat_stats_room_message(gw_chat_t *chat, chat_str_t room)
{
    gw_toprooms_count(&chat->top, room);
}

void gw__chat_stats_latency(gw_chat_t *chat, int64_t publish_ms)
{
    int64_t ms = chat_wall_ms() - publish_ms;
    double s = ms > 0 ? (double)ms / 1000.0 : 0.0; /* clocks of two nodes may disagree a little */
    size_t i = 0;
    while (i < GW_LATENCY_BUCKETS && s > latency_le[i])
        i++;
    chat->latency_buckets[i]++;
    chat->latency_count++;
    chat->latency_sum_s += s;
}

int gw__chat_stats_log_allowed(gw_chat_t *chat)
{
    /* at most GW_LOG_MESSAGES_PER_SECOND in any second: the time of the record that many records
     * ago must be a second old */
    uint64_t now = uv_now(chat->srv->loop);
    uint64_t *slot = &chat->log_times[chat->log_next % GW_LOG_MESSAGES_PER_SECOND];
    if (chat->log_next >= GW_LOG_MESSAGES_PER_SECOND && now - *slot < 1000)
        return 0;
    *slot = now;
    chat->log_next++;
    return 1;
}

static void render_messages(gw_chat_t *chat, chat_buf_t *b)
{
    static const char *const in_types[CHAT_ENV_NTYPES] = {
        "invalid", "join", "leave", "chat", "typing", "ping", "refresh", "history", "presence"};
    static const char *const out_types[] = {"chat", "typing", "system"};
    char l[64];
    gw__metrics_family(b, "chat_rooms", "gauge", "Rooms with local members on this node.");
    gw__metrics_sample(b, "chat_rooms", NULL, chat->active_rooms);
    gw__metrics_family(b, "chat_rooms_lingering", "gauge",
                       "Rooms without local members kept subscribed for --room-linger.");
    gw__metrics_sample(b, "chat_rooms_lingering", NULL,
                       chat_map_count(&chat->rooms) - chat->active_rooms);
    gw__metrics_family(b, "chat_messages_received_total", "counter",
                       "Messages from clients, by type.");
    for (size_t i = 0; i < sizeof(in_types) / sizeof(in_types[0]); i++) {
        snprintf(l, sizeof(l), "type=\"%s\"", in_types[i]);
        gw__metrics_sample(b, "chat_messages_received_total", l, chat->received[i]);
    }
    gw__metrics_family(b, "chat_messages_delivered_total", "counter",
                       "Chat, typing and system frames queued to clients (one per recipient).");
    for (size_t i = 0; i < 3; i++) {
        snprintf(l, sizeof(l), "type=\"%s\"", out_types[i]);
        gw__metrics_sample(b, "chat_messages_delivered_total", l, chat->delivered[i]);
    }
    gw__metrics_family(b, "chat_broker_rejected_total", "counter",
                       "Broker messages dropped because no node would have published them, by "
                       "reason.");
    for (size_t i = 0; i < CHAT_WIRE_NREASONS; i++) {
        snprintf(l, sizeof(l), "reason=\"%s\"", chat_wire_reason_name((chat_wire_reason_t)i));
        gw__metrics_sample(b, "chat_broker_rejected_total", l, chat->rejected[i]);
    }
}

static void counter(chat_buf_t *b, const char *name, const char *help, uint64_t v)
{
    gw__metrics_family(b, name, "counter", help);
    gw__metrics_sample(b, name, NULL, v);
}

/* History and recovery (history.c); all zero with --history-size 0. */
static void render_history(gw_chat_t *chat, chat_buf_t *b)
{
    counter(b, "chat_history_gaps_total",
            "Times a room's chats arrived out of seq order (a gap, or a new epoch) and were held "
            "until the history filled what was missing.",
            chat->hist_gaps);
    counter(b, "chat_history_filled_total",
            "Chats delivered from the history to fill a gap or what a resubscribe missed.",
            chat->hist_filled);
    counter(b, "chat_history_lost_total",
            "Chats a node could not fill because the history no longer had them.",
            chat->hist_lost);
    counter(b, "chat_history_epoch_changes_total",
            "Times a room's history was found lost (a new epoch) by this node.", chat->hist_epochs);
    counter(b, "chat_history_duplicates_dropped_total",
            "Chats that arrived again after they were delivered (dropped).", chat->hist_dups);
    counter(b, "chat_history_requests_total", "history requests from clients.",
            chat->history_requests);
    counter(b, "chat_dedupe_hits_total",
            "Chats retried with a cid the broker had seen within --dedupe-window (answered with "
            "the original's ack, not stored again).",
            chat->dedupe_hits);
    gw__metrics_family(b, "chat_recoveries_total", "counter",
                       "Joins with since, by outcome (recovered: the missed chats were replayed).");
    gw__metrics_sample(b, "chat_recoveries_total", "result=\"recovered\"", chat->recoveries[1]);
    gw__metrics_sample(b, "chat_recoveries_total", "result=\"not_recovered\"",
                       chat->recoveries[0]);
}

static void render_rooms(gw_chat_t *chat, chat_buf_t *b)
{
    gw_toprooms_stat_t st;
    size_t pos = 0;
    gw__metrics_family(b, "chat_room_messages_total", "counter",
                       "Chat messages published from this node, by room (the busiest public "
                       "rooms; the rest as _other, dm: and private: rooms as _private).");
    while (gw_toprooms_next(&chat->top, &pos, &st)) {
        if (!st.exported)
            continue;
        chat_buf_append(b, "chat_room_messages_total{room=\"", 31);
        gw__metrics_label_value(b, st.room.p, st.room.len);
        chat_buf_appendf(b, "\"} %llu\n", (unsigned long long)st.value);
    }
    gw__metrics_sample(b, "chat_room_messages_total", "room=\"" GW_TOPROOMS_OTHER "\"",
                       chat->top.other);
    gw__metrics_sample(b, "chat_room_messages_total", "room=\"" GW_TOPROOMS_PRIVATE "\"",
                       chat->top.private_msgs);
}

static void render_latency(gw_chat_t *chat, chat_buf_t *b)
{
    uint64_t cum = 0;
    gw__metrics_family(b, "chat_delivery_latency_seconds", "histogram",
                       "From the publish time stamped by the origin node to the hand-off to "
                       "local sockets, one observation per message per node.");
    for (size_t i = 0; i < GW_LATENCY_BUCKETS; i++) {
        cum += chat->latency_buckets[i];
        chat_buf_appendf(b, "chat_delivery_latency_seconds_bucket{le=\"%g\"} %llu\n", latency_le[i],
                         (unsigned long long)cum);
    }
    cum += chat->latency_buckets[GW_LATENCY_BUCKETS];
    chat_buf_appendf(b, "chat_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
                     (unsigned long long)cum);
    chat_buf_appendf(b, "chat_delivery_latency_seconds_sum %.6f\n", chat->latency_sum_s);
    chat_buf_appendf(b, "chat_delivery_latency_seconds_count %llu\n",
                     (unsigned long long)chat->latency_count);
}

void gw__chat_stats_render(gw_server_t *srv, chat_buf_t *out)
{
    gw_chat_t *chat = gw__chat(srv);
    if (chat == NULL)
        return;
    render_messages(chat, out);
    render_rooms(chat, out);
    render_history(chat, out);
    render_latency(chat, out);
}
