/* gateway/chat.h - the chat app: protocol v1 (docs/protocol.md) on top of the core (core.h),
 * plugged in as a gw_app_t (gw_chat_app). Its files:
 *   dispatch.c    what each client envelope does; the app table and the per-session data
 *   room.c        the room registry of this node: name -> local members, broker subscriptions
 *   relay.c       the broker side: the wire header written (publish) and parsed, validated and
 *                 fanned out (delivery) in one file; publish results
 *   pubs.c        a session's publications waiting for the broker's verdict (acks)
 *   chat_stats.c  the chat's metric families: messages, busiest rooms, delivery latency
 * The core never sees a room or an envelope; the chat never touches a socket. */
#ifndef CHAT_GATEWAY_CHAT_H
#define CHAT_GATEWAY_CHAT_H

#include <stdint.h>

#include "buf.h"
#include "core.h"
#include "envelope.h"
#include "list.h"
#include "map.h"
#include "names.h"
#include "rng.h"
#include "toprooms.h"
#include "wire.h"

#define GW_LATENCY_BUCKETS         14
#define GW_LOG_MESSAGES_PER_SECOND 100 /* cap of sampled message records */

extern const gw_app_t gw_chat_app;

/* A room of this node. It lives while it has local members, and --room-linger after the last
 * one left (still subscribed: a member that reconnects finds it, and churn costs no Redis
 * command); then it is unsubscribed and freed. */
typedef struct gw_room {
    chat_list_t members; /* gw_member_t.room_link */
    size_t nmembers;
    uint64_t id;             /* unique on this node: the tag of its notices' publications */
    uint64_t empty_since;    /* uv_now() when the last local member left; 0 while it has some */
    chat_list_t linger_link; /* chat->lingering while it has no member (oldest first) */
    int alone;               /* the last notice reached this node only, and nothing from another
                              * node arrived since: nobody else is in the room */
    uint64_t remote_seq;     /* messages from other nodes so far */
    uint64_t probe_seq;      /* remote_seq when the last notice was published */
    size_t name_len;
    char name[CHAT_ROOM_NAME_MAX + 1];
} gw_room_t;

/* Publication tags: a session's id (a chat, answered with an ack), or a room's id with this bit
 * (a join/leave notice, whose receiver count teaches the room whether it is alone). */
#define GW_TAG_ROOM ((uint64_t)1 << 63)

/* One session's membership of one room: linked into both. Owned by the session's chat data. */
typedef struct gw_member {
    chat_list_t room_link, session_link;
    gw_room_t *room;
    gw_session_t *session;
} gw_member_t;

/* The chat's data of one open session (gw_session_t.app_data). */
typedef struct gw_chat_session {
    chat_list_t rooms; /* gw_member_t.session_link */
    unsigned nrooms;
    chat_list_t pending_pubs; /* pubs.c, in publish order */
} gw_chat_session_t;

/* The chat's state of one node (gw_server_t.app_state). */
typedef struct gw_chat {
    gw_server_t *srv;
    chat_map_t rooms;    /* name -> gw_room_t (with local members, or lingering) */
    chat_map_t room_ids; /* 8-byte id -> gw_room_t */
    uint64_t next_room_id;
    size_t active_rooms;   /* rooms with local members (chat_rooms) */
    chat_list_t lingering; /* gw_room_t.linger_link, in the order they emptied */
    uv_timer_t tick;       /* once a second: lingering rooms, top-rooms decay */
    uint64_t next_msg_seq;
    chat_rng_t rng;  /* log sampling */
    char boot36[16]; /* start time in base 36: makes message ids unique across restarts */
    chat_buf_t json; /* scratch of dispatch.c: one envelope at a time, passed on as an argument */
    chat_buf_t wire; /* scratch of relay.c: one publication at a time */
    /* chat_stats.c */
    uint64_t received[CHAT_ENV_NTYPES]; /* client messages by type; [0]: invalid */
    uint64_t delivered[3];                   /* frames queued: chat, typing, system */
    uint64_t rejected[CHAT_WIRE_NREASONS];   /* broker messages refused, by chat_wire_reason_t */
    uint64_t rejected_unlogged;              /* refused since the last log record of one */
    gw_toprooms_t top;                       /* chat_room_messages_total */
    uint64_t top_decayed_ms;                 /* uv_now() of the last decay */
    uint64_t latency_buckets[GW_LATENCY_BUCKETS + 1]; /* the last one: +Inf */
    uint64_t latency_count;
    double latency_sum_s;
    uint64_t log_times[GW_LOG_MESSAGES_PER_SECOND]; /* ring: times of the last sampled records */
    uint64_t log_next;
    uint64_t reject_log_ms; /* last sampled log record of a refused broker message */
} gw_chat_t;

static inline gw_chat_t *gw__chat(const gw_server_t *srv)
{
    return srv->app_state;
}

static inline gw_chat_session_t *gw__chat_session(const gw_session_t *s)
{
    return s->app_data;
}

/* ---- dispatch.c ---- */
/* Joins s to room (valid name) and answers `joined`; errors become error envelopes. */
void gw__dispatch_join(gw_session_t *s, chat_str_t room, chat_str_t cid);
/* Leaves every room (publishing leave notices). */
void gw__dispatch_leave_all(gw_session_t *s);
/* Answers an `error` envelope. */
void gw__dispatch_error(gw_session_t *s, const char *code, const char *message, chat_str_t cid,
                        chat_str_t room);

/* ---- room.c ---- */
/* The canonical form of a room name a client sent (dm:<a>:<b> with the ids in byte order; other
 * names unchanged) into *out (which may point into buf, CHAT_ROOM_NAME_MAX bytes), and, when
 * for_join, whether s may join it: private: rooms need the token's rooms claim, dm: rooms must
 * name s's own user id, guests may join neither. Returns 0, CHAT_EBADREQ (invalid name, malformed
 * dm:) or CHAT_EFORBIDDEN. */
int gw__room_resolve(gw_session_t *s, chat_str_t name, int for_join, char *buf, chat_str_t *out);
gw_member_t *gw__room_membership(gw_session_t *s, chat_str_t name);
/* Adds s to `name`, creating the room and subscribing the broker on the first local member.
 * Returns 0, or a broker error (nothing changed). */
int gw__room_join(gw_session_t *s, chat_str_t name, gw_member_t **out);
/* Removes the membership (frees m); after the last member the room lingers (see gw_room_t). */
void gw__room_leave(gw_member_t *m);
/* Unsubscribes and frees the rooms that lingered --room-linger (all of them when force). */
void gw__room_sweep(gw_chat_t *chat, uint64_t now, int force);
/* The room with this id, or NULL. */
gw_room_t *gw__room_by_id(gw_chat_t *chat, uint64_t id);
/* The room `name` of this node, or NULL when it has no local member. */
gw_room_t *gw__room_find(gw_chat_t *chat, chat_str_t name);
/* Queues frame to every member of room but the session with id `skip` (0: none). Sends only
 * request closes, so room stays valid during the walk. Returns the frames queued. */
size_t gw__room_fanout(gw_room_t *room, chat_rcbuf_t *frame, gw_out_kind_t kind, uint64_t skip);

/* ---- relay.c ---- */
/* Publishes json (one envelope) to room through the broker behind a wire header (origin node,
 * connection, publish time, whether the origin is excluded). Returns broker_publish's result
 * (0: on_published(tag) follows when tag != 0). */
int gw__relay_publish(gw_chat_t *chat, chat_str_t room, chat_wire_kind_t kind,
                      const gw_session_t *origin, int exclude_origin, uint64_t tag,
                      chat_str_t json);
/* A broker message: validated (what a node would have published itself, else dropped and
 * counted), then delivered to the local members of its room. */
void gw__relay_on_message(gw_server_t *srv, chat_str_t topic, chat_str_t data);
void gw__relay_on_published(gw_server_t *srv, uint64_t tag, int status, uint64_t receivers);

/* ---- pubs.c ---- */
/* After a chat publish that succeeded: remembers what to answer when the broker completes it
 * (an ack when cid.p != NULL, an `unavailable` error on failure). Completions arrive in order. */
void gw__pubs_expect(gw_session_t *s, chat_str_t room, chat_str_t cid, chat_str_t id);
/* The broker's verdict on the oldest pending publication of s. */
void gw__pubs_on_published(gw_session_t *s, int status);
/* Forgets every pending publication of s (it is closing). */
void gw__pubs_drop(gw_session_t *s);

/* ---- chat_stats.c ---- */
void gw__chat_stats_init(gw_chat_t *chat);
void gw__chat_stats_dispose(gw_chat_t *chat);
/* Once a second (the chat's tick): decays the top-rooms scores every TOP_SWEEP_MS. */
void gw__chat_stats_tick(gw_chat_t *chat, uint64_t now);
/* A chat message published from this node to room (chat_room_messages_total). */
void gw__chat_stats_room_message(gw_chat_t *chat, chat_str_t room);
/* From a message's publish time (origin node) to its hand-off to local sockets. */
void gw__chat_stats_latency(gw_chat_t *chat, int64_t publish_ms);
/* 1 when a sampled message record may be written now (--log-sample-messages, capped at
 * GW_LOG_MESSAGES_PER_SECOND in any second). */
int gw__chat_stats_log_allowed(gw_chat_t *chat);
void gw__chat_stats_render(gw_server_t *srv, chat_buf_t *out);

#endif
