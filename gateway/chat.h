/* gateway/chat.h - the chat app: protocol v1 (docs/protocol.md) on top of the core (core.h),
 * plugged in as a gw_app_t (gw_chat_app). Its files:
 *   dispatch.c    what each client envelope does; the app table and the per-session data
 *   room.c        the room registry of this node: name -> local members, broker subscriptions
 *   relay.c       the broker side: the wire header written (publish) and parsed, validated and
 *                 fanned out (delivery) in one file; publish results
 *   pubs.c        a session's publications waiting for the broker's verdict (acks)
 *   history.c     with --history-size > 0: each room's position (seq, epoch) in one order,
 *                 gaps filled from the history, recovery of a joining member (since), and
 *                 `history` requests
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
    /* history.c (history on): the room's position as delivered to its local members */
    int hstate;              /* gw_hist_state_t */
    int refill;              /* read again once the read in flight is answered */
    uint64_t seq;            /* the last seq delivered here (valid from GW_HIST_LIVE on) */
    uint64_t read_started;   /* uv_now() when the read in flight was asked; 0: none */
    uint64_t wait_since;     /* uv_now() when members began waiting for the first read; 0: none */
    chat_list_t held;        /* gw_held_t: chats that arrived while a read was in flight */
    size_t nheld;
    size_t epoch_len;
    char epoch[CHAT_EPOCH_MAX + 1];
    size_t name_len;
    char name[CHAT_ROOM_NAME_MAX + 1];
} gw_room_t;

/* A room's history state (gw_room_t.hstate). Chats (with a seq) are delivered in seq order only:
 * one that arrives in any other state, or with a gap, is held until a read of the history has
 * filled what is missing. */
typedef enum gw_hist_state {
    GW_HIST_NEW = 0,  /* subscribing: waiting for on_subscribed, then the first read */
    GW_HIST_SYNCING,  /* the first read (seq, epoch) is in flight; members wait for `joined` */
    GW_HIST_LIVE,     /* in order: deliver seq + 1 at once */
    GW_HIST_FILLING,  /* a read fills a gap (or a resubscribe); later chats are held */
} gw_hist_state_t;

/* Publication tags: a session's id (a chat, answered with an ack), or a room's id with this bit
 * (a join/leave notice, whose receiver count teaches the room whether it is alone). */
#define GW_TAG_ROOM ((uint64_t)1 << 63)

/* A member's state (history on): LIVE members get the room's messages; a member waits for the
 * room's first read before its `joined` (WAITING), or buffers the room's chats while its own
 * recovery read is in flight (RECOVERING). With history off every member is LIVE. */
typedef enum gw_member_state {
    GW_MEMBER_LIVE = 0,
    GW_MEMBER_WAITING,
    GW_MEMBER_RECOVERING,
} gw_member_state_t;

typedef struct gw_recovery gw_recovery_t; /* history.c */

/* One session's membership of one room: linked into both. Owned by the session's chat data. */
typedef struct gw_member {
    chat_list_t room_link, session_link;
    gw_room_t *room;
    gw_session_t *session;
    int state;                /* gw_member_state_t */
    uint64_t seen;            /* history on: the last seq this member has (joined or delivered) */
    gw_recovery_t *recovery;  /* WAITING with since, RECOVERING: owned */
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
    /* history.c */
    chat_map_t reads;      /* 8-byte read id -> gw_read_t: history reads in flight */
    uint64_t next_read_id;
    uint64_t hist_gaps, hist_filled, hist_lost, hist_epochs, hist_dups, hist_held_dropped;
    uint64_t recoveries[2]; /* joins with since: [0] not recovered, [1] recovered */
    uint64_t history_requests, dedupe_hits;
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
/* A join's `since` (the client's last seq and epoch of the room); the epoch is borrowed. */
typedef struct gw_since {
    uint64_t seq;
    chat_str_t epoch;
} gw_since_t;
/* Joins s to room (valid name) and answers `joined` (with history on, perhaps later: see
 * gw__history_join); errors become error envelopes. */
void gw__dispatch_join(gw_session_t *s, chat_str_t room, chat_str_t cid, const gw_since_t *since);
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

/* ---- history.c ---- */
/* A join of m (fresh: just added; else already a member) asking `since` or not (NULL): answers
 * `joined` now when the room's position is known, else once it is (m waits); with since, the
 * missed chats follow `joined` when they can all be replayed ("recovered":true). */
void gw__history_join(gw_member_t *m, int fresh, const gw_since_t *since);
/* A validated chat with h->seq != 0 for room (json: the envelope). Delivers it in seq order. */
void gw__history_on_chat(gw_chat_t *chat, gw_room_t *room, const chat_wire_hdr_t *h,
                         chat_str_t json);
/* The room's subscription took effect (first time, or again after a reconnect). */
void gw__history_on_subscribed(gw_chat_t *chat, gw_room_t *room);
/* A `history` request of s for room (already resolved and permitted). */
void gw__history_request(gw_session_t *s, chat_str_t room, const chat_env_in_t *in);
/* m is leaving: drops what its recovery holds. */
void gw__history_member_gone(gw_member_t *m);
/* The room is being freed: drops its held chats. */
void gw__history_room_gone(gw_room_t *room);
void gw__history_on_read(gw_server_t *srv, uint64_t tag, const broker_history_result_t *r);
/* Once a second: retries reads that failed. */
void gw__history_tick(gw_chat_t *chat, uint64_t now);
void gw__history_init(gw_chat_t *chat);
void gw__history_dispose(gw_chat_t *chat);

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
/* A broker message (or a stored one) that failed chat_wire_check: counted, logged (sampled). */
void gw__relay_reject(gw_chat_t *chat, chat_str_t topic, size_t bytes, chat_wire_reason_t why);
/* Stores a chat in room's history and publishes it (history on): open is the envelope from
 * chat_env_build_chat_open(); dedupe_key (p == NULL: none) and receipt as for broker_append.
 * Returns broker_append's result (0: on_appended(tag) follows). */
int gw__relay_append(gw_chat_t *chat, chat_str_t room, const gw_session_t *origin, uint64_t tag,
                     chat_str_t open, chat_str_t dedupe_key, chat_str_t receipt);
void gw__relay_on_appended(gw_server_t *srv, uint64_t tag, const broker_append_result_t *r);
void gw__relay_on_subscribed(gw_server_t *srv, chat_str_t topic);

/* ---- pubs.c ---- */
/* After a chat publish that succeeded: remembers what to answer when the broker completes it
 * (an ack when cid.p != NULL, an `unavailable` error on failure). Completions arrive in order. */
void gw__pubs_expect(gw_session_t *s, chat_str_t room, chat_str_t cid, chat_str_t id);
/* The broker's verdict on the oldest pending publication of s (r: an append's result, with the
 * seq for the ack and, for a duplicate, the original's id; NULL for a plain publish). */
void gw__pubs_on_published(gw_session_t *s, int status, const broker_append_result_t *r);
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
