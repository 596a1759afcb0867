/* gateway/relay.c - the chat's side of the broker (chat app). Every room message leaves a node as
 * a wire header (common/wire.h: origin node and connection, publish time, whether the origin is
 * excluded) in front of the envelope exactly as members receive it; this file writes that header
 * and parses it, so the two cannot drift apart.
 *
 * What arrives from the broker crosses a trust boundary (anything that can PUBLISH to Redis can
 * put bytes there): a message is relayed only when it is what a node would have published
 * itself; anything else is dropped, counted (chat_broker_rejected_total{reason}) and logged
 * (sampled). A valid message is encoded once into a WebSocket frame that every local member of
 * its room shares. */
#include <inttypes.h>
#include <string.h>

#include "chat.h"
#include "clock.h"
#include "err.h"
#include "log.h"

#define REJECT_LOG_EVERY_MS 1000 /* at most one log record per second for refused messages */

/* chat->wire emptied, then the header of a message from origin (NULL: the node itself) */
static chat_buf_t *header(gw_chat_t *chat, chat_wire_kind_t kind, const gw_session_t *origin,
                          int exclude_origin)
{
    chat_wire_hdr_t h = {
        .kind = kind,
        .exclude_origin = exclude_origin,
        .origin_node = chat->srv->node,
        .origin_conn = origin ? origin->id : 0,
        .publish_ms = chat_wall_ms(),
    };
    chat_buf_reset(&chat->wire);
    chat_wire_put_header(&chat->wire, &h);
    return &chat->wire;
}

int gw__relay_publish(gw_chat_t *chat, chat_str_t room, chat_wire_kind_t kind,
                      const gw_session_t *origin, int exclude_origin, uint64_t tag, chat_str_t json)
{
    chat_buf_t *w = header(chat, kind, origin, exclude_origin);
    chat_buf_append_str(w, json);
    return broker_publish(chat->srv->broker, room, chat_buf_str(w), tag);
}

int gw__relay_append(gw_chat_t *chat, chat_str_t room, const gw_session_t *origin, uint64_t tag,
                     chat_str_t open, chat_str_t dedupe_key, chat_str_t receipt)
{
    chat_buf_t *w = header(chat, CHAT_WIRE_CHAT, origin, 0);
    chat_buf_append_str(w, open);
    broker_append_t m = {
        .parts = {chat_buf_str(w), CHAT_LIT(CHAT_ENV_SEQ_MID), CHAT_LIT(CHAT_ENV_SEQ_END)},
        .dedupe_key = dedupe_key,
        .receipt = receipt,
    };
    return broker_append(chat->srv->broker, room, &m, tag);
}

/* Counted always; logged at most once per REJECT_LOG_EVERY_MS (with how many were dropped). */
void gw__relay_reject(gw_chat_t *chat, chat_str_t topic, size_t bytes, chat_wire_reason_t why)
{
    uint64_t now = uv_now(chat->srv->loop);
    chat->rejected[why]++;
    chat->rejected_unlogged++;
    if (chat->reject_log_ms != 0 && now - chat->reject_log_ms < REJECT_LOG_EVERY_MS)
        return;
    chat->reject_log_ms = now;
    CHAT_LOG(CHAT_LOG_WARN, "broker message dropped", CHAT_KV_S("room", topic),
             CHAT_KV_C("reason", chat_wire_reason_name(why)), CHAT_KV_N("bytes_in", bytes),
             CHAT_KV_N("dropped", chat->rejected_unlogged));
    chat->rejected_unlogged = 0;
}

void gw__relay_on_message(gw_server_t *srv, chat_str_t topic, chat_str_t data)
{
    gw_chat_t *chat = gw__chat(srv);
    chat_wire_hdr_t h;
    chat_wire_reason_t why;
    chat_str_t json;
    gw_room_t *room = gw__room_find(chat, topic);
    if (room == NULL)
        return; /* the last member left after the message was published */
    chat_wire_limits_t lim = {.now_ms = chat_wall_ms(), .max_text_bytes = srv->cfg->max_text_bytes};
    if (chat_wire_check(topic, data, &lim, &h, &json, &why) != 0) {
        gw__relay_reject(chat, topic, data.len, why);
        return;
    }
    if (h.kind == CHAT_WIRE_CHAT && h.seq != 0 && srv->cfg->history_size > 0) { /* stored: delivered in seq order */
        if (!chat_str_eq(h.origin_node, srv->node)) {
            room->alone = 0;
            room->remote_seq++;
        }
        gw__chat_stats_latency(chat, h.publish_ms);
        gw__history_on_chat(chat, room, &h, json);
        return;
    }
    gw_out_kind_t kind = h.kind == CHAT_WIRE_CHAT ? GW_OUT_MUST : GW_OUT_DROPPABLE;
    int ours = chat_str_eq(h.origin_node, srv->node);
    uint64_t skip = h.exclude_origin && ours ? h.origin_conn : 0;
    if (!ours) { /* somebody else is in the room */
        room->alone = 0;
        room->remote_seq++;
    }
    gw__chat_stats_latency(chat, h.publish_ms);
    size_t kind_ix = h.kind == CHAT_WIRE_CHAT ? 0 : h.kind == CHAT_WIRE_TYPING ? 1 : 2;
    chat_rcbuf_t *frame = gw_ws_encode(0, json.p, json.len); /* once for every member */
    chat->delivered[kind_ix] += gw__room_fanout(room, frame, kind, skip);
    chat_rcbuf_release(frame);
}

void gw__relay_on_published(gw_server_t *srv, uint64_t tag, int status, uint64_t receivers)
{
    if (tag & GW_TAG_ROOM) { /* a join/leave notice: what it says of its room */
        gw_room_t *room = gw__room_by_id(gw__chat(srv), tag & ~GW_TAG_ROOM);
        /* alone when it reached this node only, unless another node spoke meanwhile (its
         * message and this reply come on different connections: no order between them) */
        if (room != NULL && status == 0)
            room->alone = receivers <= 1 && room->remote_seq == room->probe_seq;
        return;
    }
    gw_session_t *s = gw__session_find(srv, tag);
    if (s != NULL)
        gw__pubs_on_published(s, status, NULL);
}

void gw__relay_on_appended(gw_server_t *srv, uint64_t tag, const broker_append_result_t *r)
{
    gw_session_t *s = gw__session_find(srv, tag);
    if (r->status == 0 && r->duplicate)
        gw__chat(srv)->dedupe_hits++;
    if (s != NULL)
        gw__pubs_on_published(s, r->status, r);
}

void gw__relay_on_subscribed(gw_server_t *srv, chat_str_t topic)
{
    gw_room_t *room = gw__room_find(gw__chat(srv), topic);
    if (room != NULL)
        gw__history_on_subscribed(gw__chat(srv), room);
}
