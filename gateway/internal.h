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
#include "envelope.h"
#include "auth.h"
#include "http_upgrade.h"
#include "list.h"
#include "map.h"
#include "names.h"
#include "ratelimit.h"
#include "toprooms.h"
#include "wire.h"
#include "ws.h"

#define GW_READ_BUF_BYTES  65536
#define GW_LATENCY_BUCKETS 14
#define GW_LOG_MESSAGES_PER_SECOND 100 /* cap of sampled message records */
#define GW_CLOSE_LINGER_MS 5000 /* after our close frame, the TCP connection is dropped by then */
#define GW_STOP_LINGER_MS  2000 /* the same while the server stops */
#define GW_ID_MAX          96   /* user and connection ids: "guest-" + node id + number */

/* Close codes of our own (docs/protocol.md): 4000-4499 = reconnect with backoff. */
enum gw_app_close_code {
    GW_CLOSE_PING_TIMEOUT = 4000,
    GW_CLOSE_IDLE_TIMEOUT = 4001,
    GW_CLOSE_SLOW_CONSUMER = 4002,
    GW_CLOSE_WRITE_TIMEOUT = 4003,
    GW_CLOSE_TOKEN_EXPIRED = 4004,
};

/* Fixed buckets (docs/limits.md): typing and join have their own, per connection. */
#define GW_TYPING_RATE   2
#define GW_TYPING_BURST  4
#define GW_JOIN_RATE     10
/* A reconnecting client may rejoin every room at once, and then some: twice the room limit. */
#define GW_JOIN_BURST(max_rooms) ((max_rooms) * 2 > 20 ? (max_rooms) * 2 : 20)
#define GW_FLOOD_WINDOW_MS 10000 /* more refusals than 10x what the bucket allows in it: 1008 */
#define GW_FLOOD_FACTOR    10

typedef enum gw_bucket_kind {
    GW_BUCKET_MESSAGE = 0, /* per connection */
    GW_BUCKET_USER,        /* per user on this node */
    GW_BUCKET_TYPING,
    GW_BUCKET_JOIN,
    GW_BUCKET_N,
} gw_bucket_kind_t;

/* How a frame for a session may be treated when its send queue is full. */
typedef enum gw_out_kind {
    GW_OUT_MUST = 0,    /* chat, replies: never dropped; a full queue closes the connection */
    GW_OUT_DROPPABLE,   /* typing and system notices: dropped (and counted) when full */
} gw_out_kind_t;

typedef enum gw_authfail {
    GW_AUTHFAIL_MISSING = 0, /* missing_token */
    GW_AUTHFAIL_INVALID,     /* invalid_token (also a failed refresh) */
    GW_AUTHFAIL_EXPIRED,     /* expired */
    GW_AUTHFAIL_FORBIDDEN,   /* forbidden room */
    GW_AUTHFAIL_N,
} gw_authfail_t;

/* Counters of one node; the metrics endpoint reads them. */
typedef struct gw_stats {
    uint64_t dropped_queue_full;         /* typing/system frames dropped for a full send queue */
    uint64_t rate_limited[GW_BUCKET_N];  /* refusals by bucket */
    uint64_t closed_by_code[5000];       /* close frames we sent, by code (< 5000) */
    uint64_t handshake_rejected[600];    /* HTTP refusals by status */
    uint64_t auth_failures[GW_AUTHFAIL_N];
    uint64_t connections_opened, connections_closed;
    uint64_t received[CHAT_ENV_REFRESH + 1]; /* client messages by type; [0]: invalid */
    uint64_t delivered[3];                   /* frames queued: chat, typing, system */
} gw_stats_t;

/* One user's state shared by all its connections on this node. */
typedef struct gw_user {
    size_t refs;
    gw_bucket_t bucket;
    size_t id_len;
    char id[];
} gw_user_t;

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
    uv_timer_t timer; /* handshake timeout; then heartbeat/idle/write deadlines; then linger */
    int pending_closes;
    gw_http_req_t *req; /* during the handshake only */
    gw_ws_t *ws;        /* once open */
    chat_list_t rooms;  /* gw_member_t.session_link */
    unsigned nrooms;
    chat_list_t pending_pubs; /* gw_pending_pub_t, in publish order */
    gw_user_t *u;             /* shared per-user state (reference held while open) */
    gw_bucket_t buckets[GW_BUCKET_N]; /* GW_BUCKET_USER unused here: see u->bucket */
    uint64_t refuse_window_ms;        /* start of the flood window */
    uint64_t refusals;                /* rate-limit refusals in that window */
    uint64_t last_rx_ms;  /* uv_now() of the last bytes from the client */
    uint64_t last_app_ms; /* of the last application message */
    uint64_t ping_sent_ms; /* of our outstanding ping; 0: none */
    uint64_t opened_ms;    /* uv_now() of the upgrade */
    uint64_t bytes_in;     /* from the client, handshake included */
    const char *close_reason; /* static: why we closed (NULL: the client did, or the TCP link) */
    unsigned close_flags;     /* GW_CLOSE_F_*: a close was requested (see close_link) */
    chat_list_t close_link;   /* srv->close_list while a close is requested */
    uint64_t accepted_ms;     /* uv_now() of the accept (handshake deadline) */
    uint64_t linger_due_ms;   /* CLOSING: the TCP connection is dropped by then */
    chat_list_t link;         /* srv->session_list (until closing starts) */
    chat_list_t all_link;     /* srv->all_sessions (until teardown) */
    size_t user_len, conn_name_len;
    char remote[64]; /* client address: the peer, or from X-Forwarded-For via a trusted proxy */
    char *user;          /* owned: the token's sub, or guest-<node>-<n> */
    gw_identity_t ident; /* the verified token's claims; ident.sub == NULL for guests */
    uint64_t exp_mono_ms;    /* uv_now() time of exp (0: no expiry) */
    int expiry_warned;       /* token_expiring sent for the current token */
    char conn_name[GW_ID_MAX];
    char room_buf[CHAT_ROOM_NAME_MAX]; /* the canonical /chat/{room} during the handshake */
};

struct gw_server {
    uv_loop_t *loop;
    const gw_config_t *cfg;
    chat_str_t node;
    uv_tcp_t listener;
    uv_prepare_t flusher; /* flushes flush_list before the loop polls */
    chat_list_t flush_list;
    chat_list_t close_list; /* sessions whose close was requested, carried out in on_flush */
    uv_buf_t readbuf; /* loop-wide read buffer lent to every connection */
    chat_map_t sessions;      /* 8-byte id -> gw_session_t */
    chat_list_t session_list; /* every session, for shutdown */
    chat_list_t all_sessions; /* every session not yet torn down (forced stop) */
    size_t nsessions;
    chat_map_t rooms; /* name -> gw_room_t (rooms with local members) */
    chat_map_t users; /* user id -> gw_user_t (users with open connections) */
    size_t nopen;     /* sessions in GW_S_OPEN */
    gw_stats_t stats;
    broker_t *broker;
    gw_auth_t *auth; /* owned; no keys: guests only */
    uint64_t next_session_id, next_msg_seq;
    char boot36[16]; /* start time in base 36: makes message ids unique across restarts */
    chat_buf_t json, wire; /* scratch buffers for building one message at a time */
    const gw_app_t *app;
    int draining;      /* SIGTERM seen: not ready, new upgrades get 503 */
    int stopping, stop_finished, listener_open, pending_closes;
    /* drain.c */
    uv_timer_t drain_timer, drain_deadline;
    int drain_timers_open;
    size_t drain_batch;
    /* admin.c */
    uv_tcp_t admin;
    int admin_open;
    /* metrics.c */
    gw_toprooms_t top; /* chat_room_messages_total */
    uv_timer_t top_sweep;
    uint64_t latency_buckets[GW_LATENCY_BUCKETS + 1]; /* the last one: +Inf */
    uint64_t latency_count;
    double latency_sum_s;
    uint64_t log_times[GW_LOG_MESSAGES_PER_SECOND]; /* ring: times of the last sampled records */
    uint64_t log_next;
    void (*on_stopped)(void *ctx);
    void *on_stopped_ctx;
};

/* Why a session's close was requested (gw_session_t.close_flags). */
#define GW_CLOSE_F_GRACEFUL 1u /* close frame queued: write the queue, then await the EOF */
#define GW_CLOSE_F_DROP     2u /* the TCP connection ended (or a handshake is cut): free it */
#define GW_CLOSE_F_RESET    4u /* drop at once, RST if bytes are unsent (the drain deadline) */

/* session.c
 * Closing never happens in the middle of a caller's walk: gw__session_close() and
 * gw__session_teardown() only record the request (the close frame is queued at once) and link
 * the session onto srv->close_list; the server's prepare callback carries the requests out with
 * gw__server_process_closes() right before it flushes (redis' freeClientAsync). So a room, a
 * list or a session stays valid for whoever is walking it when a send overflows a queue. */
void gw__session_accept(gw_server_t *srv);
/* Requests that s be dropped at once (RST if bytes are still unsent): the drain's deadline. */
void gw__session_teardown(gw_session_t *s);
/* Requests the close of an open session with a WebSocket close frame (code, reason; the first
 * request's code stands); a session still in its handshake is dropped. */
void gw__session_close(gw_session_t *s, uint16_t code, const char *reason);
/* 1 while s is open and no close was requested: it may still be sent data. */
int gw__session_is_open(const gw_session_t *s);
/* Carries out every requested close (detach from rooms, leave notices, close handshake or
 * teardown). Called only from the server's prepare callback. */
void gw__server_process_closes(gw_server_t *srv);
/* The one owner of s->timer: arms it for s's state (handshake deadline; the safety deadlines
 * while open; the close linger while closing). */
void gw__session_rearm(gw_session_t *s);
/* Queues a frame to an open session (takes its own reference), within --send-queue-bytes: over
 * it, a droppable frame is dropped and counted, any other closes the session (4002). Returns 1
 * when the frame was queued, 0 otherwise. */
int gw__session_send(gw_session_t *s, chat_rcbuf_t *frame, gw_out_kind_t kind);
/* The display name from s's token, or CHAT_STR_NULL. */
chat_str_t gw__session_name(const gw_session_t *s);
/* Replaces s's identity after a successful refresh (same sub); re-arms the expiry. */
void gw__session_set_identity(gw_session_t *s, gw_identity_t *ident);
/* Encodes srv->json as one text frame and queues it to s (GW_OUT_MUST). */
void gw__session_send_json(gw_session_t *s);
/* Rate limiting: 1 when the message may proceed (a token was taken from each bucket that applies),
 * else 0 after answering `rate_limited` (or closing with 1008 on a flood). */
int gw__session_admit(gw_session_t *s, gw_bucket_kind_t kind, chat_str_t cid);
gw_session_t *gw__session_find(gw_server_t *srv, uint64_t id);
/* After a chat publish that succeeded: remembers what to answer when the broker completes it
 * (an ack when cid.p != NULL, an `unavailable` error on failure). Completions arrive in order. */
void gw__session_expect_published(gw_session_t *s, chat_str_t room, chat_str_t cid,
                                  chat_str_t id);
/* The broker's verdict on the oldest pending publication of s. */
void gw__session_on_published(gw_session_t *s, int status);

/* safety.c */
/* Starts heartbeats, idle and write timeouts, and the backpressure threshold of an opened
 * session (the caller arms the timer). */
void gw__safety_start(gw_session_t *s);
void gw__safety_on_write_start(gw_session_t *s);
/* The earliest moment something must be checked for open s (UINT64_MAX: nothing). */
uint64_t gw__safety_next_deadline(const gw_session_t *s);
/* The session timer fired while s is open: pings, timeouts, expiry (may request a close). */
void gw__safety_on_deadline(gw_session_t *s, uint64_t now);
/* Takes / drops s's reference to its user's shared state (per-user rate limit). */
void gw__user_acquire(gw_session_t *s);
void gw__user_release(gw_session_t *s);

/* dispatch.c (gw__chat_app) */
/* Joins s to room (valid name) and answers `joined`; errors become error envelopes. */
void gw__dispatch_join(gw_session_t *s, chat_str_t room, chat_str_t cid);
/* Leaves every room (publishing leave notices). */
void gw__dispatch_leave_all(gw_session_t *s);

/* room.c */
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
/* Removes the membership (frees m); unsubscribes and frees the room after its last member. */
void gw__room_leave(gw_member_t *m);
/* Delivers one broker message to the local members of its room. */
void gw__room_deliver(gw_server_t *srv, chat_str_t room, chat_str_t data);

/* server.c */
/* Publishes srv->json to room through the broker with a wire header. Returns broker_publish's
 * result. */
int gw__publish(gw_server_t *srv, chat_str_t room, chat_wire_kind_t kind, gw_session_t *origin,
                int exclude_origin, uint64_t tag);
/* Close callback of the server's own handles (data = srv). */
void gw__server_handle_closed(uv_handle_t *h);
/* Closes the listener and every session at once (1001), then the broker; on_stopped follows. */
void gw__server_shutdown(gw_server_t *srv);

/* drain.c */
void gw__drain_init(gw_server_t *srv);
void gw__drain_cancel(gw_server_t *srv);

/* admin.c: the operators' listener (--admin-listen): /healthz, /readyz, /metrics */
int gw__admin_open(gw_server_t *srv);
void gw__admin_close(gw_server_t *srv);
/* 1 when the node should get traffic; else 0 and the failed conditions in failed[] (static
 * names: "broker", "draining", "capacity"). */
int gw__server_ready(const gw_server_t *srv, const char **failed, size_t *nfailed);

/* metrics.c */
void gw__metrics_init(gw_server_t *srv);
void gw__metrics_close(gw_server_t *srv);
/* A chat message published from this node to room (chat_room_messages_total). */
void gw__metrics_room_message(gw_server_t *srv, chat_str_t room);
/* From a message's publish time (origin node) to its hand-off to local sockets. */
void gw__metrics_observe_latency(gw_server_t *srv, int64_t publish_ms);
/* Appends the Prometheus text exposition (format 0.0.4). */
void gw__metrics_render(gw_server_t *srv, chat_buf_t *out);

/* Replaces the application (before any connection arrives). */
void gw__server_set_app(gw_server_t *srv, const gw_app_t *app);
/* Called by session.c after a session was freed. */
void gw__server_session_gone(gw_server_t *srv);

#endif
