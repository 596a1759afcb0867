/* gateway/core.h - the transport core of a gateway node: the server (server.c), its sessions
 * from accept to free (session.c) and the limits they live under (safety.c), on top of conn.[ch]
 * (TCP bytes) and ws.[ch] (RFC 6455). The core knows sessions, never rooms or envelopes: what
 * runs on an open WebSocket is an app (gw_app_t), the chat protocol (chat.h) or a test harness
 * (tests/autobahn/echo.c, which links the core without the chat files). The operators' parts
 * (admin, metrics, drain) have their own structs in ops.h. Nothing outside gateway/ includes
 * this header.
 *
 * Closing: nothing here frees a session in the middle of a caller's walk. gw__session_close()
 * and gw__session_teardown() record the request (a close frame is queued at once) and link the
 * session onto srv->close_list; the server's prepare callback carries the requests out with
 * gw__session_process_closes() right before it flushes (redis' freeClientAsync). So a room, a
 * list or a session stays valid for whoever is walking it when a send overflows a queue. */
#ifndef CHAT_GATEWAY_CORE_H
#define CHAT_GATEWAY_CORE_H

#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "broker.h"
#include "buf.h"
#include "config.h"
#include "conn.h"
#include "http_upgrade.h"
#include "iplimit.h"
#include "list.h"
#include "map.h"
#include "ops.h"
#include "ratelimit.h"
#include "ws.h"

#define GW_READ_BUF_BYTES  65536
#define GW_CLOSE_LINGER_MS 5000 /* after our close frame, the TCP connection is dropped by then */
#define GW_STOP_LINGER_MS  2000 /* the same while the server stops */
#define GW_ID_MAX          96   /* user and connection ids: "guest-" + node id + number */
#define GW_ROUTE_ARG_MAX   64   /* the canonical form of a route argument (/chat/{room}) */

/* Close codes of our own (docs/protocol.md): 4000-4499 = reconnect with backoff. */
enum gw_app_close_code {
    GW_CLOSE_PING_TIMEOUT = 4000,
    GW_CLOSE_IDLE_TIMEOUT = 4001,
    GW_CLOSE_SLOW_CONSUMER = 4002,
    GW_CLOSE_WRITE_TIMEOUT = 4003,
    GW_CLOSE_TOKEN_EXPIRED = 4004,
};

/* Fixed buckets (docs/limits.md): typing and join have their own, per connection. */
#define GW_TYPING_RATE  2
#define GW_TYPING_BURST 4
#define GW_JOIN_RATE    10
/* A reconnecting client may rejoin every room at once, and then some: twice the room limit. */
#define GW_JOIN_BURST(max_rooms) ((max_rooms)*2 > 20 ? (max_rooms)*2 : 20)
#define GW_FLOOD_WINDOW_MS       10000 /* more refusals than 10x what the bucket allows in it: 1008 */
#define GW_FLOOD_FACTOR          10

typedef enum gw_bucket_kind {
    GW_BUCKET_MESSAGE = 0, /* per connection */
    GW_BUCKET_USER,        /* per user on this node */
    GW_BUCKET_TYPING,
    GW_BUCKET_JOIN,
    GW_BUCKET_N,
} gw_bucket_kind_t;

/* How a frame for a session may be treated when its send queue is full. */
typedef enum gw_out_kind {
    GW_OUT_MUST = 0,  /* chat, replies: never dropped; a full queue closes the connection */
    GW_OUT_DROPPABLE, /* typing and system notices: dropped (and counted) when full */
} gw_out_kind_t;

typedef enum gw_authfail {
    GW_AUTHFAIL_MISSING = 0, /* missing_token */
    GW_AUTHFAIL_INVALID,     /* invalid_token (also a failed refresh) */
    GW_AUTHFAIL_EXPIRED,     /* expired */
    GW_AUTHFAIL_FORBIDDEN,   /* forbidden room */
    GW_AUTHFAIL_N,
} gw_authfail_t;

/* Counters of the transport; the metrics endpoint reads them. */
typedef struct gw_stats {
    uint64_t dropped_queue_full;        /* droppable frames dropped for a full send queue */
    uint64_t rate_limited[GW_BUCKET_N]; /* refusals by bucket */
    uint64_t closed_by_code[5000];      /* closes by code (< 5000; 1005: no code, 1006: none) */
    uint64_t handshake_rejected[600];   /* HTTP refusals by status */
    uint64_t auth_failures[GW_AUTHFAIL_N];
    uint64_t connections_opened, connections_closed;
    uint64_t accept_errors[GW_LISTENER_N][GW_ACCEPT_N]; /* connections a listener did not take */
    uint64_t admin_refused[GW_ADMIN_REFUSED_N];         /* admin connections refused, by reason */
} gw_stats_t;

/* One user's state shared by all its connections on this node. */
typedef struct gw_user {
    size_t refs;
    gw_bucket_t bucket;
    size_t id_len;
    char id[];
} gw_user_t;

typedef struct gw_session gw_session_t;

/* What runs on top of an open WebSocket. Every callback runs from the loop, never inside a walk
 * of the core's own lists; optional ones may be NULL. Borrowed arguments die when it returns. */
typedef struct gw_app {
    /* The server is up (before any connection): the app may set srv->app_state. Returns 0 or a
     * negative error (the server does not start). */
    int (*on_start)(gw_server_t *srv);
    /* The last session is gone and the broker is about to close: free srv->app_state (handles
     * close through gw__server_close_handle()). */
    void (*on_stop)(gw_server_t *srv);
    /* A valid upgrade request that passed the core's checks (token included). The app may
     * rewrite u->room into buf (GW_ROUTE_ARG_MAX bytes) or refuse: returns 0, or 400 / 403 with
     * *error and *message (static strings) saying why. */
    int (*on_upgrade)(gw_session_t *s, gw_upgrade_t *u, char *buf, const char **error,
                      const char **message);
    /* The 101 was queued; u is the accepted upgrade (borrowed). */
    void (*on_open)(gw_session_t *s, const gw_upgrade_t *u);
    /* One complete message (text: valid UTF-8). Borrowed. */
    void (*on_message)(gw_session_t *s, int binary, const char *p, size_t n);
    /* s is closing (at the safe point, before the core drops its links): the app drops its
     * own (s->app_data) and may still publish. */
    void (*on_close)(gw_session_t *s);
    /* s's token expires in ms_left: tell the client. */
    void (*on_token_expiring)(gw_session_t *s, int64_t ms_left);
    /* Broker traffic (broker.h's handlers, forwarded). */
    void (*on_broker_message)(gw_server_t *srv, chat_str_t topic, chat_str_t data);
    void (*on_published)(gw_server_t *srv, uint64_t tag, int status, uint64_t receivers);
    void (*on_appended)(gw_server_t *srv, uint64_t tag, const broker_append_result_t *r);
    void (*on_history)(gw_server_t *srv, uint64_t tag, const broker_history_result_t *r);
    void (*on_subscribed)(gw_server_t *srv, chat_str_t topic);
    /* Appends the app's metric families to /metrics (gw__metrics_family/_sample). */
    void (*render_metrics)(gw_server_t *srv, chat_buf_t *out);
} gw_app_t;

typedef enum gw_session_state {
    GW_S_HANDSHAKE = 0, /* reading the HTTP request */
    GW_S_OPEN,          /* WebSocket open */
    GW_S_CLOSING,       /* last bytes (close frame or HTTP answer) being written, awaiting EOF */
    GW_S_CLOSED,        /* handles closing; freed in the last close callback */
} gw_session_state_t;

/* Why a session's close was requested (gw_session_t.close_flags). */
#define GW_CLOSE_F_GRACEFUL 1u /* close frame queued: write the queue, then await the EOF */
#define GW_CLOSE_F_DROP     2u /* the TCP connection ended (or a handshake is cut): free it */
#define GW_CLOSE_F_RESET    4u /* drop at once, RST if bytes are unsent (the drain deadline) */

struct gw_session {
    gw_server_t *srv;
    uint64_t id;
    gw_session_state_t state;
    gw_conn_t conn;
    gw_conn_handlers_t conn_h;
    gw_ws_handlers_t ws_h;
    uv_timer_t timer; /* owned by session.c: handshake, then safety deadlines, then linger */
    int pending_closes;
    gw_http_req_t *req;               /* during the handshake only */
    gw_ws_t *ws;                      /* once open */
    void *app_data;                   /* the app's, from on_open until on_close */
    gw_user_t *u;                     /* shared per-user state (reference held while open) */
    gw_bucket_t buckets[GW_BUCKET_N]; /* GW_BUCKET_USER unused here: see u->bucket */
    uint64_t refuse_window_ms;        /* start of the flood window */
    uint64_t refusals;                /* rate-limit refusals in that window */
    uint64_t last_rx_ms;              /* uv_now() of the last bytes from the client */
    uint64_t last_app_ms;             /* of the last application message */
    uint64_t ping_sent_ms;            /* of our outstanding ping; 0: none */
    uint64_t accepted_ms;             /* uv_now() of the accept (handshake deadline) */
    uint64_t opened_ms;               /* uv_now() of the upgrade */
    uint64_t linger_due_ms;           /* CLOSING: the TCP connection is dropped by then */
    uint64_t bytes_in;                /* from the client, handshake included */
    const char *close_reason; /* static: why we closed (NULL: the client did, or the TCP link) */
    unsigned close_flags;     /* GW_CLOSE_F_*: a close was requested (see close_link) */
    int detached;             /* the app's on_close ran: no more app calls for s */
    chat_list_t close_link;   /* srv->close_list while a close is requested */
    chat_list_t link;         /* srv->session_list (until closing starts) */
    chat_list_t all_link;     /* srv->all_sessions (until teardown) */
    size_t user_len, conn_name_len;
    char remote[64];     /* client address: the peer, or from X-Forwarded-For via a trusted proxy */
    char *user;          /* owned: the token's sub, or guest-<node>-<n> */
    gw_identity_t ident; /* the verified token's claims; ident.sub == NULL for guests */
    uint64_t exp_mono_ms; /* uv_now() time of exp (0: no expiry) */
    int expiry_warned;    /* on_token_expiring ran for the current token */
    char conn_name[GW_ID_MAX];
    char route_buf[GW_ROUTE_ARG_MAX]; /* the canonical route argument during the handshake */
};

struct gw_server {
    uv_loop_t *loop;
    const gw_config_t *cfg;
    chat_str_t node;
    uv_tcp_t listener;
    uv_prepare_t flusher; /* carries out requested closes, then flushes, before the loop polls */
    chat_list_t flush_list;
    chat_list_t close_list;   /* gw_session_t.close_link */
    uv_buf_t readbuf;         /* loop-wide read buffer lent to every connection */
    chat_map_t sessions;      /* 8-byte id -> gw_session_t */
    chat_list_t session_list; /* every session, for shutdown */
    chat_list_t all_sessions; /* every session not yet torn down (forced stop) */
    size_t nsessions;
    chat_map_t users; /* user id -> gw_user_t (users with open connections) */
    gw_iplimit_t iplimit;  /* new connections per client address */
    uv_timer_t ip_sweep;   /* drops the buckets of addresses that stopped connecting */
    size_t nopen;     /* sessions in GW_S_OPEN */
    gw_stats_t stats;
    broker_t *broker;
    gw_auth_t *auth; /* owned; no keys: guests only */
    uint64_t next_session_id;
    const gw_app_t *app;
    void *app_state; /* the app's (on_start .. on_stop) */
    int draining;    /* SIGTERM seen: not ready, new upgrades get 503 */
    int stopping, stop_finished, listener_open, pending_closes;
    gw_drain_t drain;
    gw_admin_t admin;
    void (*on_stopped)(void *ctx);
    void *on_stopped_ctx;
};

/* ---- session.c ---- */
void gw__session_accept(gw_server_t *srv);
/* Requests the close of an open session with a WebSocket close frame (code, reason; the first
 * request stands); a session still in its handshake is dropped. Never frees anything now. */
void gw__session_close(gw_session_t *s, uint16_t code, const char *reason);
/* Requests that s be dropped at once (RST if bytes are still unsent): the drain's deadline. */
void gw__session_teardown(gw_session_t *s);
/* 1 while s is open and no close was requested: it may still be sent data. */
int gw__session_is_open(const gw_session_t *s);
/* Carries out every requested close (the app's on_close, registry links, close handshake or
 * teardown). Called only from the server's prepare callback: the loop's one safe point. */
void gw__session_process_closes(gw_server_t *srv);
/* The one owner of s->timer: arms it for s's state (handshake deadline; the safety deadlines
 * while open; the close linger while closing). */
void gw__session_rearm(gw_session_t *s);
/* Queues a frame to an open session (takes its own reference), within --send-queue-bytes: over
 * it, a droppable frame is dropped and counted, any other requests the close (4002). Returns 1
 * when the frame was queued, 0 otherwise. */
int gw__session_send(gw_session_t *s, chat_rcbuf_t *frame, gw_out_kind_t kind);
/* Encodes json as one text frame and queues it to s (GW_OUT_MUST). */
void gw__session_send_json(gw_session_t *s, chat_str_t json);
gw_session_t *gw__session_find(gw_server_t *srv, uint64_t id);
/* s's user id (the token's sub, or its guest name). */
chat_str_t gw__session_user(const gw_session_t *s);
/* The display name from s's token, or CHAT_STR_NULL. */
chat_str_t gw__session_name(const gw_session_t *s);
/* Replaces s's identity after a successful refresh (same sub); re-arms the expiry. */
void gw__session_set_identity(gw_session_t *s, gw_identity_t *ident);

/* ---- safety.c ---- */
/* Starts heartbeats, idle and write timeouts, and the backpressure threshold of an opened
 * session (the caller arms the timer). */
void gw__safety_start(gw_session_t *s);
void gw__safety_on_write_start(gw_session_t *s);
/* The earliest moment something must be checked for open s (UINT64_MAX: nothing). */
uint64_t gw__safety_next_deadline(const gw_session_t *s);
/* The session timer fired while s is open: pings, timeouts, expiry (may request a close). */
void gw__safety_on_deadline(gw_session_t *s, uint64_t now);
/* Rate limiting: GW_ADMIT_OK when the message may proceed (a token was taken from each bucket
 * that applies); GW_ADMIT_REFUSED with *wait_ms (the app answers the client); GW_ADMIT_FLOOD when
 * refusals flooded and the close (1008) was requested. */
enum { GW_ADMIT_FLOOD = -1, GW_ADMIT_REFUSED = 0, GW_ADMIT_OK = 1 };
int gw__safety_admit(gw_session_t *s, gw_bucket_kind_t kind, uint64_t *wait_ms);
/* Takes / drops s's reference to its user's shared state (per-user rate limit). */
void gw__safety_user_acquire(gw_session_t *s);
void gw__safety_user_release(gw_session_t *s);

/* ---- server.c ---- */
/* Close callback for handles whose data is srv (the server's own, and the app's). */
void gw__server_handle_closed(uv_handle_t *h);
/* Closes h and counts it until its close callback ran (the server is freed after the last). */
void gw__server_close_handle(gw_server_t *srv, uv_handle_t *h);
/* The same for a handle closed with a callback of its own: hold before uv_close, release at the
 * end of that callback. */
void gw__server_hold(gw_server_t *srv);
void gw__server_release(gw_server_t *srv);
/* Closes the listener and every session at once (1001), then the broker; on_stopped follows. */
void gw__server_shutdown(gw_server_t *srv);
/* Called by session.c after a session was freed. */
void gw__server_session_gone(gw_server_t *srv);

#endif
