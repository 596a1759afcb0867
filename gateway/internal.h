/* gateway/internal.h - the gateway's own structures and gw__ functions shared between its files
 * (server, session, room, dispatch). Nothing outside gateway/ includes this. */
#ifndef CHAT_GATEWAY_INTERNAL_H
#define CHAT_GATEWAY_INTERNAL_H

#include <stdint.h>
#include <uv.h>

#include "broker.h"
#include "buf.h"
#include "config.h"
#include "conn.h"
#include "http_upgrade.h"
#include "list.h"
#include "map.h"
#include "names.h"
#include "wire.h"
#include "ws.h"

#define GW_READ_BUF_BYTES     65536
#define GW_CLOSE_LINGER_MS    5000 /* after our close frame, the TCP connection is dropped by then */
#define GW_STOP_LINGER_MS     2000 /* the same while the server stops */
#define GW_HANDSHAKE_TIMEOUT_MS 10000
#define GW_ID_MAX             96 /* user and connection ids: "guest-" + node id + number */

typedef struct gw_server gw_server_t;
typedef struct gw_session gw_session_t;

/* What runs on top of an open WebSocket: the chat protocol (dispatch.c, the default) or a test
 * harness (the Autobahn echo server in tests/autobahn/). Everything below it (handshake, framing,
 * limits, close paths) is the same. */
typedef struct gw_app {
    /* The 101 was queued; u is the accepted upgrade (borrowed). */
    void (*on_open)(gw_session_t *s, const gw_upgrade_t *u);
    /* One complete message (text: valid UTF-8). Borrowed. */
    void (*on_message)(gw_session_t *s, int binary, const char *p, size_t n);
} gw_app_t;

extern const gw_app_t gw__chat_app;

typedef struct gw_room {
    chat_list_t members; /* gw_member_t.room_link */
    size_t nmembers;
    size_t name_len;
    char name[CHAT_ROOM_NAME_MAX + 1];
} gw_room_t;

/* One session's membership of one room: linked into both. Owned by the session. */
typedef struct gw_member {
    chat_list_t room_link, session_link;
    gw_room_t *room;
    gw_session_t *session;
} gw_member_t;

typedef enum gw_session_state {
    GW_S_HANDSHAKE = 0, /* reading the HTTP request */
    GW_S_OPEN,          /* WebSocket open */
    GW_S_CLOSING,       /* last bytes (close frame or HTTP answer) being written, awaiting EOF */
    GW_S_CLOSED,        /* handles closing; freed in the last close callback */
} gw_session_state_t;

struct gw_session {
    gw_server_t *srv;
    uint64_t id;
    gw_session_state_t state;
    gw_conn_t conn;
    gw_conn_handlers_t conn_h;
    gw_ws_handlers_t ws_h;
    uv_timer_t timer; /* handshake timeout, then close linger */
    int pending_closes;
    gw_http_req_t *req; /* during the handshake only */
    gw_ws_t *ws;        /* once open */
    chat_list_t rooms;  /* gw_member_t.session_link */
    unsigned nrooms;
    chat_list_t pending_pubs; /* gw_pending_pub_t, in publish order */
    chat_list_t link;         /* srv->session_list */
    size_t user_len, conn_name_len;
    char remote[64]; /* client address: the peer, or from X-Forwarded-For via a trusted proxy */
    char user[GW_ID_MAX];
    char conn_name[GW_ID_MAX];
};

struct gw_server {
    uv_loop_t *loop;
    const gw_config_t *cfg;
    chat_str_t node;
    uv_tcp_t listener;
    uv_prepare_t flusher; /* flushes flush_list before the loop polls */
    chat_list_t flush_list;
    uv_buf_t readbuf; /* loop-wide read buffer lent to every connection */
    chat_map_t sessions;      /* 8-byte id -> gw_session_t */
    chat_list_t session_list; /* every session, for shutdown */
    size_t nsessions;
    chat_map_t rooms; /* name -> gw_room_t (rooms with local members) */
    broker_t *broker;
    uint64_t next_session_id, next_msg_seq;
    char boot36[16]; /* start time in base 36: makes message ids unique across restarts */
    chat_buf_t json, wire; /* scratch buffers for building one message at a time */
    const gw_app_t *app;
    int stopping, stop_finished, listener_open, pending_closes;
    void (*on_stopped)(void *ctx);
    void *on_stopped_ctx;
};

/* session.c */
void gw__session_accept(gw_server_t *srv);
/* Closes an open session with a WebSocket close frame (code, reason); other states tear down. */
void gw__session_close(gw_session_t *s, uint16_t code, const char *reason);
/* Queues a frame to an open session (takes its own reference). */
void gw__session_send(gw_session_t *s, chat_rcbuf_t *frame);
/* Encodes srv->json as one text frame and queues it to s. */
void gw__session_send_json(gw_session_t *s);
gw_session_t *gw__session_find(gw_server_t *srv, uint64_t id);
/* After a chat publish that succeeded: remembers what to answer when the broker completes it
 * (an ack when cid.p != NULL, an `unavailable` error on failure). Completions arrive in order. */
void gw__session_expect_published(gw_session_t *s, chat_str_t room, chat_str_t cid,
                                  chat_str_t id);
/* The broker's verdict on the oldest pending publication of s. */
void gw__session_on_published(gw_session_t *s, int status);

/* dispatch.c (gw__chat_app) */
/* Joins s to room (valid name) and answers `joined`; errors become error envelopes. */
void gw__dispatch_join(gw_session_t *s, chat_str_t room, chat_str_t cid);
/* Leaves every room (publishing leave notices). */
void gw__dispatch_leave_all(gw_session_t *s);

/* room.c */
gw_member_t *gw__room_membership(gw_session_t *s, chat_str_t name);
/* Adds s to `name`, creating the room and subscribing the broker on the first local member.
 * Returns 0, or a broker error (nothing changed). */
int gw__room_join(gw_session_t *s, chat_str_t name, gw_member_t **out);
/* Removes the membership (frees m); unsubscribes and frees the room after its last member. */
void gw__room_leave(gw_member_t *m);
/* Delivers one broker message to the local members of its room. */
void gw__room_deliver(gw_server_t *srv, chat_str_t room, chat_str_t data);

/* server.c */
/* Publishes srv->json to room through the broker with a wire header. Returns broker_publish's
 * result. */
int gw__publish(gw_server_t *srv, chat_str_t room, chat_wire_kind_t kind, gw_session_t *origin,
                int exclude_origin, uint64_t tag);
/* Replaces the application (before any connection arrives). */
void gw__server_set_app(gw_server_t *srv, const gw_app_t *app);
/* Called by session.c after a session was freed. */
void gw__server_session_gone(gw_server_t *srv);

#endif
