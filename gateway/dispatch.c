/* gateway/dispatch.c - what a client message does: protocol v1 (docs/protocol.md). Parses the
 * envelope once, checks it against the session's rooms and the limits, publishes through the
 * broker and answers. Every refusal is an `error` envelope; the connection stays open. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "envelope.h"
#include "err.h"
#include "internal.h"
#include "log.h"

static void reply_error(gw_session_t *s, const char *code, const char *message, chat_str_t cid,
                        chat_str_t room)
{
    chat_buf_reset(&s->srv->json);
    chat_env_build_error(&s->srv->json, code, message, cid, room);
    gw__session_send_json(s);
}

/* Publishes a system join/leave notice for room (the actor does not get it). */
static void notice(gw_session_t *s, chat_str_t room, const char *event)
{
    gw_server_t *srv = s->srv;
    if (!srv->cfg->room_events)
        return;
    chat_buf_reset(&srv->json);
    chat_env_build_system(&srv->json, room, event, chat_str(s->user, s->user_len),
                          gw__session_name(s), chat_wall_ms());
    gw__publish(srv, room, CHAT_WIRE_SYSTEM, s, 1, 0);
}

/* The canonical room a client named (see gw__room_resolve); replies with an error and returns 0
 * when it is invalid or (for_join) forbidden. */
static int resolve(gw_session_t *s, chat_str_t name, int for_join, chat_str_t cid, char *buf,
                   chat_str_t *room)
{
    int rc = gw__room_resolve(s, name, for_join, buf, room);
    if (rc == CHAT_EBADREQ) {
        reply_error(s, "bad_request", "invalid room name", cid, CHAT_STR_NULL);
        return 0;
    }
    if (rc == CHAT_EFORBIDDEN) {
        s->srv->stats.auth_failures[GW_AUTHFAIL_FORBIDDEN]++;
        reply_error(s, "forbidden", "you may not join this room", cid, *room);
        return 0;
    }
    return 1;
}

void gw__dispatch_join(gw_session_t *s, chat_str_t name, chat_str_t cid)
{
    gw_member_t *m;
    char buf[CHAT_ROOM_NAME_MAX];
    chat_str_t room;
    if (!resolve(s, name, 1, cid, buf, &room))
        return;
    if (gw__room_membership(s, room) == NULL) {
        if (s->nrooms >= s->srv->cfg->max_rooms_per_conn) {
            reply_error(s, "room_limit", "too many rooms for this connection", cid, room);
            return;
        }
        if (gw__room_join(s, room, &m) != 0) {
            reply_error(s, "unavailable", "the room cannot be joined now", cid, room);
            return;
        }
        notice(s, room, "join");
    }
    chat_buf_reset(&s->srv->json);
    chat_env_build_joined(&s->srv->json, room);
    gw__session_send_json(s);
}

static void leave(gw_session_t *s, chat_str_t name, chat_str_t cid)
{
    gw_member_t *m;
    char buf[CHAT_ROOM_NAME_MAX];
    chat_str_t room;
    if (!resolve(s, name, 0, cid, buf, &room))
        return;
    if ((m = gw__room_membership(s, room)) == NULL) {
        reply_error(s, "not_joined", "not a member of this room", cid, room);
        return;
    }
    gw__room_leave(m);
    notice(s, room, "leave");
    chat_buf_reset(&s->srv->json);
    chat_env_build_left(&s->srv->json, room);
    gw__session_send_json(s);
}

void gw__dispatch_leave_all(gw_session_t *s)
{
    while (!chat_list_is_empty(&s->rooms)) {
        gw_member_t *m = chat_container_of(s->rooms.next, gw_member_t, session_link);
        char name[CHAT_ROOM_NAME_MAX];
        chat_str_t room = chat_str(name, m->room->name_len);
        memcpy(name, m->room->name, room.len);
        gw__room_leave(m);
        notice(s, room, "leave");
    }
}

/* The room a chat or typing message is for: the given one (which must be joined), or the only
 * room of the connection. Replies with an error and returns 0 when there is none. */
static int target_room(gw_session_t *s, const chat_env_in_t *in, char *buf, chat_str_t *room)
{
    if (in->room.p == NULL) {
        if (s->nrooms != 1) {
            reply_error(s, "bad_request",
                        s->nrooms ? "field 'room' is required when in several rooms"
                                  : "join a room first",
                        in->cid, CHAT_STR_NULL);
            return 0;
        }
        gw_member_t *m = chat_container_of(s->rooms.next, gw_member_t, session_link);
        *room = chat_str(m->room->name, m->room->name_len);
        return 1;
    }
    if (!resolve(s, in->room, 0, in->cid, buf, room))
        return 0;
    if (gw__room_membership(s, *room) == NULL) {
        reply_error(s, "not_joined", "not a member of this room", in->cid, *room);
        return 0;
    }
    return 1;
}

/* Message-level records are sampled (--log-sample-messages) and capped per second; the text
 * only with --log-message-text. */
static void log_sampled(gw_session_t *s, chat_str_t room, const chat_env_in_t *in)
{
    gw_server_t *srv = s->srv;
    const gw_config_t *cfg = srv->cfg;
    if (cfg->log_sample_messages <= 0.0 || !chat_log_enabled(CHAT_LOG_INFO) ||
        (double)rand() / RAND_MAX >= cfg->log_sample_messages)
        return;
    /* at most GW_LOG_MESSAGES_PER_SECOND in any second: the time of the record that many records
     * ago must be a second old */
    uint64_t now = uv_now(srv->loop);
    uint64_t *slot = &srv->log_times[srv->log_next % GW_LOG_MESSAGES_PER_SECOND];
    if (srv->log_next >= GW_LOG_MESSAGES_PER_SECOND && now - *slot < 1000)
        return;
    *slot = now;
    srv->log_next++;
    CHAT_LOG(CHAT_LOG_INFO, "chat message", CHAT_KV_C("conn", s->conn_name),
             CHAT_KV_S("user", chat_str(s->user, s->user_len)), CHAT_KV_S("room", room),
             CHAT_KV_N("bytes_in", in->text.len),
             cfg->log_message_text ? CHAT_KV_S("text", in->text) : CHAT_KV_S(NULL, CHAT_STR_NULL));
}

static void chat(gw_session_t *s, const chat_env_in_t *in)
{
    gw_server_t *srv = s->srv;
    chat_str_t room;
    char id[GW_ID_MAX + 32], buf[CHAT_ROOM_NAME_MAX];
    if (!target_room(s, in, buf, &room))
        return;
    if (in->text.len == 0 || in->text.len > srv->cfg->max_text_bytes) {
        reply_error(s, "bad_request",
                    in->text.len ? "field 'text' is too long" : "field 'text' must not be empty",
                    in->cid, room);
        return;
    }
    int idlen = snprintf(id, sizeof(id), "%.*s-%s-%" PRIx64, (int)srv->node.len, srv->node.p,
                         srv->boot36, ++srv->next_msg_seq);
    chat_env_chat_t m = {
        .room = room,
        .id = chat_str(id, (size_t)idlen),
        .user = chat_str(s->user, s->user_len),
        .name = gw__session_name(s),
        .text = in->text,
        .ts = chat_wall_ms(),
    };
    chat_buf_reset(&srv->json);
    chat_env_build_chat(&srv->json, &m);
    if (gw__publish(srv, room, CHAT_WIRE_CHAT, s, 0, s->id) != 0) {
        reply_error(s, "unavailable", "the message could not be published", in->cid, room);
        return;
    }
    gw__session_expect_published(s, room, in->cid, m.id);
    gw__metrics_room_message(srv, room);
    log_sampled(s, room, in);
}

static void typing(gw_session_t *s, const chat_env_in_t *in)
{
    chat_str_t room;
    char buf[CHAT_ROOM_NAME_MAX];
    if (!target_room(s, in, buf, &room))
        return;
    chat_buf_reset(&s->srv->json);
    chat_env_build_typing(&s->srv->json, room, chat_str(s->user, s->user_len),
                          gw__session_name(s));
    gw__publish(s->srv, room, CHAT_WIRE_TYPING, s, 1, 0); /* best effort: no answer */
}

/* A new token for the same user: the connection keeps going with its claims and expiry. */
static void refresh(gw_session_t *s, const chat_env_in_t *in)
{
    gw_identity_t id;
    const char *reason;
    if (!gw_auth_enabled(s->srv->auth) || s->ident.sub == NULL) {
        reply_error(s, "bad_request", "this connection has no token to refresh", in->cid,
                    CHAT_STR_NULL);
        return;
    }
    if (gw_auth_verify(s->srv->auth, in->token, chat_wall_ms() / 1000, &id, &reason) != 0) {
        s->srv->stats.auth_failures[GW_AUTHFAIL_INVALID]++;
        reply_error(s, "invalid_token", "the new token is not valid; the current one still holds",
                    in->cid, CHAT_STR_NULL);
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
    chat_buf_reset(&s->srv->json);
    chat_env_build_refreshed(&s->srv->json, s->ident.has_exp ? s->ident.exp : 0);
    gw__session_send_json(s);
}

static void on_message(gw_session_t *s, int binary, const char *p, size_t n)
{
    chat_env_in_t in;
    if (binary) {
        gw__session_close(s, GW_CLOSE_UNSUPPORTED, "binary frames are not supported");
        return;
    }
    struct cJSON *doc = NULL;
    int rc = chat_env_parse(p, n, &in, &doc);
    s->srv->stats.received[rc == 0 ? in.type : 0]++;
    /* Typing and join have buckets of their own; every other message, errors included, takes a
     * token from the connection's and the user's message buckets. */
    gw_bucket_kind_t bucket = rc == 0 && in.type == CHAT_ENV_TYPING ? GW_BUCKET_TYPING
                              : rc == 0 && in.type == CHAT_ENV_JOIN ? GW_BUCKET_JOIN
                                                                    : GW_BUCKET_MESSAGE;
    if (!gw__session_admit(s, bucket, rc == CHAT_EBADJSON ? CHAT_STR_NULL : in.cid)) {
        chat_env_free(doc);
        return;
    }
    if (rc == CHAT_EBADJSON) {
        reply_error(s, "bad_json", "a message must be one JSON object", CHAT_STR_NULL,
                    CHAT_STR_NULL);
    } else if (rc == CHAT_EUNKNOWN_TYPE) {
        reply_error(s, "unknown_type", in.error, in.cid, CHAT_STR_NULL);
    } else if (rc != 0) {
        reply_error(s, "bad_request", in.error, in.cid, CHAT_STR_NULL);
    } else {
        switch (in.type) {
        case CHAT_ENV_JOIN:
            gw__dispatch_join(s, in.room, in.cid);
            break;
        case CHAT_ENV_LEAVE:
            leave(s, in.room, in.cid);
            break;
        case CHAT_ENV_CHAT:
            chat(s, &in);
            break;
        case CHAT_ENV_TYPING:
            typing(s, &in);
            break;
        case CHAT_ENV_PING:
            chat_buf_reset(&s->srv->json);
            chat_env_build_pong(&s->srv->json);
            gw__session_send_json(s);
            break;
        case CHAT_ENV_REFRESH:
            refresh(s, &in);
            break;
        }
    }
    chat_env_free(doc);
}

/* welcome first, then (on /chat/{room}) the join */
static void on_open(gw_session_t *s, const gw_upgrade_t *u)
{
    gw_server_t *srv = s->srv;
    chat_buf_reset(&srv->json);
    chat_env_build_welcome(&srv->json, chat_str(s->user, s->user_len), gw__session_name(s),
                           srv->node,
                           chat_str(s->conn_name, s->conn_name_len));
    gw__session_send_json(s);
    if (u->route == GW_ROUTE_CHAT)
        gw__dispatch_join(s, u->room, CHAT_STR_NULL);
}

const gw_app_t gw__chat_app = {
    .on_open = on_open,
    .on_message = on_message,
};
