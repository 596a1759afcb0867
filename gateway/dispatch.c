/* gateway/dispatch.c - the chat app's entry points (gw_chat_app) and what a client message does:
 * protocol v1 (docs/protocol.md). Takes the rate-limit token, parses the envelope once, checks it
 * against the session's rooms and the limits, publishes through the broker (relay.c) and
 * answers. Every refusal is an `error` envelope; the connection stays open. Each envelope is
 * built into chat->json and handed on as an argument at once. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "chat.h"
#include "clock.h"
#include "err.h"
#include "log.h"

#define CHAT_TICK_MS 1000

/* The scratch buffer for one envelope, emptied. */
static chat_buf_t *scratch(gw_session_t *s)
{
    chat_buf_t *b = &gw__chat(s->srv)->json;
    chat_buf_reset(b);
    return b;
}

void gw__dispatch_error(gw_session_t *s, const char *code, const char *message, chat_str_t cid,
                        chat_str_t room)
{
    chat_buf_t *b = scratch(s);
    chat_env_build_error(b, code, message, cid, room);
    gw__session_send_json(s, chat_buf_str(b));
}

/* Publishes a system join/leave notice for room (the actor does not get it), unless nobody else
 * is in the room: no other local member, and the room's last notice reached this node only with
 * nothing from another node since (gw_room_t.alone). The notice's receiver count keeps that
 * knowledge up to date (tag GW_TAG_ROOM | id). So a client that loops connect, join, close costs
 * no Redis command for rooms nobody else is in (with --room-linger, not even SUBSCRIBE). */
static void notice(gw_session_t *s, gw_room_t *room, const char *event)
{
    gw_server_t *srv = s->srv;
    size_t others = room->nmembers - 1; /* s is still a member */
    if (!srv->cfg->room_events || (others == 0 && room->alone))
        return;
    chat_str_t name = chat_str(room->name, room->name_len);
    chat_buf_t *b = scratch(s);
    chat_env_build_system(b, name, event, gw__session_user(s), gw__session_name(s), chat_wall_ms());
    room->probe_seq = room->remote_seq;
    gw__relay_publish(gw__chat(srv), name, CHAT_WIRE_SYSTEM, s, 1, GW_TAG_ROOM | room->id,
                      chat_buf_str(b));
}

/* The canonical room a client named (see gw__room_resolve); replies with an error and returns 0
 * when it is invalid or (for_join) forbidden. */
static int resolve(gw_session_t *s, chat_str_t name, int for_join, chat_str_t cid, char *buf,
                   chat_str_t *room)
{
    int rc = gw__room_resolve(s, name, for_join, buf, room);
    if (rc == CHAT_EBADREQ) {
        gw__dispatch_error(s, "bad_request", "invalid room name", cid, CHAT_STR_NULL);
        return 0;
    }
    if (rc == CHAT_EFORBIDDEN) {
        s->srv->stats.auth_failures[GW_AUTHFAIL_FORBIDDEN]++;
        gw__dispatch_error(s, "forbidden", "you may not join this room", cid, *room);
        return 0;
    }
    return 1;
}

void gw__dispatch_join(gw_session_t *s, chat_str_t name, chat_str_t cid, const gw_since_t *since)
{
    gw_member_t *m;
    char buf[CHAT_ROOM_NAME_MAX];
    chat_str_t room;
    int fresh = 0;
    if (!resolve(s, name, 1, cid, buf, &room))
        return;
    if ((m = gw__room_membership(s, room)) == NULL) {
        if (gw__chat_session(s)->nrooms >= s->srv->cfg->max_rooms_per_conn) {
            gw__dispatch_error(s, "room_limit", "too many rooms for this connection", cid, room);
            return;
        }
        if (gw__room_join(s, room, &m) != 0) {
            gw__dispatch_error(s, "unavailable", "the room cannot be joined now", cid, room);
            return;
        }
        notice(s, m->room, "join");
        fresh = 1;
    }
    if (s->srv->cfg->history_size > 0) { /* joined carries the room's position */
        gw__history_join(m, fresh, since);
        return;
    }
    chat_env_joined_t j = {.has_recovered = since != NULL, .recovered = 0};
    chat_buf_t *b = scratch(s);
    chat_env_build_joined(b, room, since != NULL ? &j : NULL);
    gw__session_send_json(s, chat_buf_str(b));
}

static void leave(gw_session_t *s, chat_str_t name, chat_str_t cid)
{
    gw_member_t *m;
    char buf[CHAT_ROOM_NAME_MAX];
    chat_str_t room;
    if (!resolve(s, name, 0, cid, buf, &room))
        return;
    if ((m = gw__room_membership(s, room)) == NULL) {
        gw__dispatch_error(s, "not_joined", "not a member of this room", cid, room);
        return;
    }
    notice(s, m->room, "leave");
    gw__room_leave(m);
    chat_buf_t *b = scratch(s);
    chat_env_build_left(b, room);
    gw__session_send_json(s, chat_buf_str(b));
}

void gw__dispatch_leave_all(gw_session_t *s)
{
    gw_chat_session_t *cs = gw__chat_session(s);
    while (!chat_list_is_empty(&cs->rooms)) {
        gw_member_t *m = chat_container_of(cs->rooms.next, gw_member_t, session_link);
        notice(s, m->room, "leave");
        gw__room_leave(m);
    }
}

/* The room a chat or typing message is for: the given one (which must be joined), or the only
 * room of the connection. Replies with an error and returns 0 when there is none. */
static int target_room(gw_session_t *s, const chat_env_in_t *in, char *buf, chat_str_t *room)
{
    gw_chat_session_t *cs = gw__chat_session(s);
    if (in->room.p == NULL) {
        if (cs->nrooms != 1) {
            gw__dispatch_error(s, "bad_request",
                               cs->nrooms ? "field 'room' is required when in several rooms"
                                          : "join a room first",
                               in->cid, CHAT_STR_NULL);
            return 0;
        }
        gw_member_t *m = chat_container_of(cs->rooms.next, gw_member_t, session_link);
        *room = chat_str(m->room->name, m->room->name_len);
        return 1;
    }
    if (!resolve(s, in->room, 0, in->cid, buf, room))
        return 0;
    if (gw__room_membership(s, *room) == NULL) {
        gw__dispatch_error(s, "not_joined", "not a member of this room", in->cid, *room);
        return 0;
    }
    return 1;
}

/* Message-level records are sampled (--log-sample-messages) and capped per second; the text
 * only with --log-message-text. */
static void log_sampled(gw_session_t *s, chat_str_t room, const chat_env_in_t *in)
{
    const gw_config_t *cfg = s->srv->cfg;
    if (cfg->log_sample_messages <= 0.0 || !chat_log_enabled(CHAT_LOG_INFO) ||
        chat_rng_unit(&gw__chat(s->srv)->rng) >= cfg->log_sample_messages ||
        !gw__chat_stats_log_allowed(gw__chat(s->srv)))
        return;
    CHAT_LOG(CHAT_LOG_INFO, "chat message", CHAT_KV_C("conn", s->conn_name),
             CHAT_KV_S("user", chat_str(s->user, s->user_len)), CHAT_KV_S("room", room),
             CHAT_KV_N("bytes_in", in->text.len),
             cfg->log_message_text ? CHAT_KV_S("text", in->text) : CHAT_KV_S(NULL, CHAT_STR_NULL));
}

static void chat(gw_session_t *s, const chat_env_in_t *in)
{
    gw_server_t *srv = s->srv;
    gw_chat_t *chat = gw__chat(srv);
    chat_str_t room;
    char id[GW_ID_MAX + 32], buf[CHAT_ROOM_NAME_MAX];
    if (!target_room(s, in, buf, &room))
        return;
    if (in->text.len == 0 || in->text.len > srv->cfg->max_text_bytes) {
        gw__dispatch_error(s, "bad_request",
                           in->text.len ? "field 'text' is too long"
                                        : "field 'text' must not be empty",
                           in->cid, room);
        return;
    }
    int idlen = snprintf(id, sizeof(id), "%.*s-%s-%" PRIx64, (int)srv->node.len, srv->node.p,
                         chat->boot36, ++chat->next_msg_seq);
    chat_env_chat_t m = {
        .room = room,
        .id = chat_str(id, (size_t)idlen),
        .user = gw__session_user(s),
        .name = gw__session_name(s),
        .text = in->text,
        .ts = chat_wall_ms(),
    };
    chat_buf_t *b = scratch(s);
    int rc;
    if (srv->cfg->history_size > 0) { /* stored, with a seq; a retried cid is one message */
        char key[BROKER_DEDUPE_KEY_MAX];
        chat_str_t dk = CHAT_STR_NULL, user = gw__session_user(s);
        int kl = in->cid.p == NULL ? -1 : snprintf(key, sizeof(key), "%zu:", user.len);
        if (kl > 0 && (size_t)kl + user.len + in->cid.len <= sizeof(key)) {
            memcpy(key + kl, user.p, user.len);
            memcpy(key + kl + user.len, in->cid.p, in->cid.len);
            dk = chat_str(key, (size_t)kl + user.len + in->cid.len);
        }
        chat_env_build_chat_open(b, &m);
        rc = gw__relay_append(chat, room, s, s->id, chat_buf_str(b), dk, m.id);
    } else {
        chat_env_build_chat(b, &m);
        rc = gw__relay_publish(chat, room, CHAT_WIRE_CHAT, s, 0, s->id, chat_buf_str(b));
    }
    if (rc != 0) {
        gw__dispatch_error(s, "unavailable", "the message could not be published", in->cid, room);
        return;
    }
    gw__pubs_expect(s, room, in->cid, m.id);
    gw__chat_stats_room_message(chat, room);
    log_sampled(s, room, in);
}

static void typing(gw_session_t *s, const chat_env_in_t *in)
{
    chat_str_t room;
    char buf[CHAT_ROOM_NAME_MAX];
    if (!target_room(s, in, buf, &room))
        return;
    chat_buf_t *b = scratch(s);
    chat_env_build_typing(b, room, gw__session_user(s), gw__session_name(s));
    /* best effort: no answer */
    gw__relay_publish(gw__chat(s->srv), room, CHAT_WIRE_TYPING, s, 1, 0, chat_buf_str(b));
}

/* `history`: the same permission as join, no membership needed. */
static void history(gw_session_t *s, const chat_env_in_t *in)
{
    char buf[CHAT_ROOM_NAME_MAX];
    chat_str_t room;
    if (!resolve(s, in->room, 1, in->cid, buf, &room))
        return;
    if (s->srv->cfg->history_size == 0) {
        gw__dispatch_error(s, "history_off", "this gateway keeps no history", in->cid, room);
        return;
    }
    gw__history_request(s, room, in);
}

/* A new token for the same user: the connection keeps going with its claims and expiry. */
static void refresh(gw_session_t *s, const chat_env_in_t *in)
{
    gw_identity_t id;
    const char *reason;
    if (!gw_auth_enabled(s->srv->auth) || s->ident.sub == NULL) {
        gw__dispatch_error(s, "bad_request", "this connection has no token to refresh", in->cid,
                           CHAT_STR_NULL);
        return;
    }
    if (gw_auth_verify(s->srv->auth, in->token, chat_wall_ms() / 1000, &id, &reason) != 0) {
        s->srv->stats.auth_failures[GW_AUTHFAIL_INVALID]++;
        gw__dispatch_error(s, "invalid_token",
                           "the new token is not valid; the current one still holds", in->cid,
                           CHAT_STR_NULL);
        return;
    }
    if (strcmp(id.sub, s->ident.sub) != 0) {
        gw_identity_dispose(&id);
        s->srv->stats.auth_failures[GW_AUTHFAIL_INVALID]++;
        gw__session_close(s, GW_CLOSE_POLICY, "refresh for another user");
        return;
    }
    gw__session_set_identity(s, &id);
    gw__session_rearm(s);
    chat_buf_t *b = scratch(s);
    chat_env_build_refreshed(b, s->ident.has_exp ? s->ident.exp : 0);
    gw__session_send_json(s, chat_buf_str(b));
}

/* The bucket a message is charged to, from the type it says it has (chat_env_peek_type: no
 * parse). Typing and join have buckets of their own; every other message, malformed ones
 * included, takes a token from the connection's and the user's message buckets. */
static gw_bucket_kind_t bucket_of(chat_env_type_t type)
{
    if (type == CHAT_ENV_TYPING)
        return GW_BUCKET_TYPING;
    if (type == CHAT_ENV_JOIN)
        return GW_BUCKET_JOIN;
    return GW_BUCKET_MESSAGE;
}

static void on_message(gw_session_t *s, int binary, const char *p, size_t n)
{
    chat_env_in_t in;
    uint64_t wait_ms = 0;
    if (binary) {
        gw__session_close(s, GW_CLOSE_UNSUPPORTED, "binary frames are not supported");
        return;
    }
    /* The rate limit comes before any JSON work: a refused message costs one scan of its bytes
     * (no tree, no allocation), so flooding cannot buy parse time. */
    chat_str_t said_cid;
    chat_env_type_t said = chat_env_peek(p, n, &said_cid);
    int admit = gw__safety_admit(s, bucket_of(said), &wait_ms);
    if (admit != GW_ADMIT_OK) {
        gw__chat(s->srv)->received[said]++;
        if (admit == GW_ADMIT_REFUSED) {
            chat_buf_t *b = scratch(s);
            chat_env_build_rate_limited(b, wait_ms, said_cid);
            gw__session_send_json(s, chat_buf_str(b));
        }
        return;
    }
    struct cJSON *doc = NULL;
    int rc = chat_env_parse(p, n, &in, &doc);
    gw__chat(s->srv)->received[rc == 0 ? in.type : 0]++;
    if (rc == CHAT_EBADJSON) {
        gw__dispatch_error(s, "bad_json", "a message must be one JSON object", CHAT_STR_NULL,
                           CHAT_STR_NULL);
    } else if (rc == CHAT_EUNKNOWN_TYPE) {
        gw__dispatch_error(s, "unknown_type", in.error, in.cid, CHAT_STR_NULL);
    } else if (rc != 0) {
        gw__dispatch_error(s, "bad_request", in.error, in.cid, CHAT_STR_NULL);
    } else {
        switch (in.type) {
        case CHAT_ENV_JOIN: {
            gw_since_t since = {in.since_seq, in.since_epoch};
            gw__dispatch_join(s, in.room, in.cid, in.has_since ? &since : NULL);
            break;
        }
        case CHAT_ENV_LEAVE:
            leave(s, in.room, in.cid);
            break;
        case CHAT_ENV_CHAT:
            chat(s, &in);
            break;
        case CHAT_ENV_TYPING:
            typing(s, &in);
            break;
        case CHAT_ENV_PING: {
            chat_buf_t *b = scratch(s);
            chat_env_build_pong(b);
            gw__session_send_json(s, chat_buf_str(b));
            break;
        }
        case CHAT_ENV_REFRESH:
            refresh(s, &in);
            break;
        case CHAT_ENV_HISTORY:
            history(s, &in);
            break;
        case CHAT_ENV_PRESENCE: /* issue 11's presence: not built yet */
        case CHAT_ENV_NTYPES:
            gw__dispatch_error(s, "unknown_type", "presence is not available yet", in.cid,
                               CHAT_STR_NULL);
            break;
        }
    }
    chat_env_free(doc);
}

/* `since` and `epoch` of /chat/{room}?since=41&epoch=e: returns 1 with *out filled, 0 when the
 * query has neither, -1 when they are not both there and well formed. */
static int query_since(chat_str_t query, gw_since_t *out)
{
    chat_str_t sv, ev;
    int hs = query.p != NULL && gw_http_query_param(query, "since", &sv);
    int he = query.p != NULL && gw_http_query_param(query, "epoch", &ev);
    if (!hs && !he)
        return 0;
    if (!hs || !he || sv.len == 0 || sv.len > 16 || !chat_epoch_valid(ev))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < sv.len; i++) {
        if (sv.p[i] < '0' || sv.p[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(sv.p[i] - '0');
    }
    if (v > ((uint64_t)1 << 53))
        return -1;
    out->seq = v;
    out->epoch = ev;
    return 1;
}

/* /chat/{room}: the room must be one s may join (403 forbidden; 400 for a malformed dm: name,
 * or a malformed since/epoch). Rewrites u->room to its canonical form (in buf). */
static int on_upgrade(gw_session_t *s, gw_upgrade_t *u, char *buf, const char **error,
                      const char **message)
{
    gw_since_t since;
    if (u->route != GW_ROUTE_CHAT)
        return 0;
    if (query_since(u->query, &since) < 0) {
        *error = "bad_request";
        *message = "since and epoch go together: ?since=<seq>&epoch=<epoch>";
        return 400;
    }
    int rc = gw__room_resolve(s, u->room, 1, buf, &u->room);
    if (rc == CHAT_EBADREQ) {
        *error = "bad_request";
        *message = "malformed direct room name (dm:<user>:<user>)";
        return 400;
    }
    if (rc == CHAT_EFORBIDDEN) {
        *error = "forbidden";
        *message = "you may not join this room";
        return 403;
    }
    return 0;
}

/* welcome first, then (on /chat/{room}) the join */
static void on_open(gw_session_t *s, const gw_upgrade_t *u)
{
    gw_server_t *srv = s->srv;
    gw_chat_session_t *cs = chat_xcalloc(1, sizeof(*cs));
    chat_list_init(&cs->rooms);
    chat_list_init(&cs->pending_pubs);
    s->app_data = cs;
    chat_buf_t *b = scratch(s);
    chat_env_build_welcome(b, gw__session_user(s), gw__session_name(s), srv->node,
                           chat_str(s->conn_name, s->conn_name_len));
    gw__session_send_json(s, chat_buf_str(b));
    if (u->route == GW_ROUTE_CHAT) {
        gw_since_t since;
        int has = query_since(u->query, &since) > 0;
        gw__dispatch_join(s, u->room, CHAT_STR_NULL, has ? &since : NULL);
    }
}

/* At the safe point: leave every room (leave notices), forget pending publications. */
static void on_close(gw_session_t *s)
{
    gw_chat_session_t *cs = gw__chat_session(s);
    if (cs == NULL)
        return;
    gw__dispatch_leave_all(s);
    gw__pubs_drop(s);
    s->app_data = NULL;
    free(cs);
}

static void on_token_expiring(gw_session_t *s, int64_t ms_left)
{
    chat_buf_t *b = scratch(s);
    chat_env_build_token_expiring(b, ms_left);
    gw__session_send_json(s, chat_buf_str(b));
}

static void base36(uint64_t v, char *out, size_t cap)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36];
        v /= 36;
    } while (v && n < sizeof(tmp));
    size_t i = 0;
    for (; i < n && i + 1 < cap; i++)
        out[i] = tmp[n - 1 - i];
    out[i] = '\0';
}

static void on_tick(uv_timer_t *t)
{
    gw_chat_t *chat = chat_container_of(t, gw_chat_t, tick);
    uint64_t now = uv_now(chat->srv->loop);
    gw__room_sweep(chat, now, 0);
    gw__history_tick(chat, now);
    gw__chat_stats_tick(chat, now);
}

static int on_start(gw_server_t *srv)
{
    gw_chat_t *chat = chat_xcalloc(1, sizeof(*chat));
    chat->srv = srv;
    chat_map_init(&chat->rooms);
    chat_map_init(&chat->room_ids);
    chat_list_init(&chat->lingering);
    chat_rng_seed(&chat->rng, srv->node.p, srv->node.len);
    base36((uint64_t)chat_wall_ms(), chat->boot36, sizeof(chat->boot36));
    srv->app_state = chat;
    gw__chat_stats_init(chat);
    gw__history_init(chat);
    uv_timer_init(srv->loop, &chat->tick);
    uv_timer_start(&chat->tick, on_tick, CHAT_TICK_MS, CHAT_TICK_MS);
    uv_unref((uv_handle_t *)&chat->tick);
    return 0;
}

static void on_tick_closed(uv_handle_t *h)
{
    gw_chat_t *chat = chat_container_of((uv_timer_t *)h, gw_chat_t, tick);
    gw_server_t *srv = chat->srv;
    free(chat);
    gw__server_release(srv);
}

/* Every session is gone, so every room is. */
static void on_stop(gw_server_t *srv)
{
    gw_chat_t *chat = gw__chat(srv);
    gw__room_sweep(chat, uv_now(srv->loop), 1); /* the lingering ones */
    chat_map_dispose(&chat->rooms);
    chat_map_dispose(&chat->room_ids);
    chat_buf_free(&chat->json);
    chat_buf_free(&chat->wire);
    gw__chat_stats_dispose(chat);
    gw__history_dispose(chat);
    srv->app_state = NULL;
    gw__server_hold(srv);
    uv_close((uv_handle_t *)&chat->tick, on_tick_closed); /* frees chat */
}

const gw_app_t gw_chat_app = {
    .on_start = on_start,
    .on_stop = on_stop,
    .on_upgrade = on_upgrade,
    .on_open = on_open,
    .on_message = on_message,
    .on_close = on_close,
    .on_token_expiring = on_token_expiring,
    .on_broker_message = gw__relay_on_message,
    .on_published = gw__relay_on_published,
    .on_appended = gw__relay_on_appended,
    .on_history = gw__history_on_read,
    .on_subscribed = gw__relay_on_subscribed,
    .render_metrics = gw__chat_stats_render,
};
