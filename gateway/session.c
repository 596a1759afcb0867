/* gateway/session.c - one client connection from accept to free:
 *   HANDSHAKE (HTTP request head) -> OPEN (WebSocket) -> CLOSING (last bytes, await EOF) -> CLOSED.
 * Owns its gw_conn_t, timer, request parser, WebSocket and memberships. States only move forward;
 * every entry point checks the state first. Memberships and registry links are cut synchronously
 * when closing starts; the memory is freed in the last handle close callback (STYLE C6). */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "demo_page.h"
#include "envelope.h"
#include "err.h"
#include "internal.h"
#include "log.h"

/* A chat publication waiting for the broker's verdict. */
typedef struct gw_pending_pub {
    chat_list_t link;
    chat_rcbuf_t *ack; /* the ack frame, NULL when the client sent no cid */
    size_t room_len, cid_len;
    char room[CHAT_ROOM_NAME_MAX];
    char cid[]; /* cid_len bytes; cid_len == 0 and ack == NULL: no cid */
} gw_pending_pub_t;

static chat_str_t id_key(const uint64_t *id)
{
    return chat_str((const char *)id, sizeof(*id));
}

gw_session_t *gw__session_find(gw_server_t *srv, uint64_t id)
{
    return chat_map_get(&srv->sessions, id_key(&id));
}

static void set_state(gw_session_t *s, gw_session_state_t to)
{
    if (to <= s->state)
        abort(); /* states only move forward */
    if (to == GW_S_OPEN)
        s->srv->nopen++;
    else if (s->state == GW_S_OPEN)
        s->srv->nopen--;
    s->state = to;
}

static void on_handle_closed(uv_handle_t *h)
{
    gw_session_t *s = h->data;
    if (--s->pending_closes > 0)
        return;
    gw_server_t *srv = s->srv;
    gw_ws_free(s->ws);
    gw_identity_dispose(&s->ident);
    free(s->user);
    if (s->req) {
        gw_http_req_dispose(s->req);
        free(s->req);
    }
    free(s);
    gw__server_session_gone(srv);
}

static void drop_pending_pubs(gw_session_t *s)
{
    while (!chat_list_is_empty(&s->pending_pubs)) {
        gw_pending_pub_t *p = chat_container_of(s->pending_pubs.next, gw_pending_pub_t, link);
        chat_list_unlink(&p->link);
        chat_rcbuf_release(p->ack);
        free(p);
    }
}

/* Cuts every link to the rest of the node: rooms (with leave notices) and the id registry. */
static void detach(gw_session_t *s)
{
    gw__dispatch_leave_all(s);
    drop_pending_pubs(s);
    gw__user_release(s);
    if (chat_list_is_linked(&s->link)) {
        chat_map_del(&s->srv->sessions, id_key(&s->id));
        chat_list_unlink(&s->link);
    }
}

/* The close of an opened connection: counted by code, and logged with its stable ids. The code is
 * the one of the close frame we sent (an echo of the client's when it closed first); 1006 when
 * the TCP connection ended without a close handshake. */
static void log_closed(gw_session_t *s)
{
    uint16_t code = gw_ws_sent_close_code(s->ws);
    if (code == 0)
        code = gw_ws_peer_close_code(s->ws);
    if (code == 0 && !gw_ws_closing(s->ws))
        code = 1006;
    const char *reason = s->close_reason;
    if (reason == NULL)
        reason = code == 1006 ? "connection lost" : "client closed";
    if (code < sizeof(s->srv->stats.closed_by_code) / sizeof(uint64_t))
        s->srv->stats.closed_by_code[code]++;
    s->srv->stats.connections_closed++;
    CHAT_LOG(CHAT_LOG_INFO, "connection closed", CHAT_KV_C("conn", s->conn_name),
             CHAT_KV_S("user", chat_str(s->user, s->user_len)), CHAT_KV_C("remote", s->remote),
             CHAT_KV_N("code", code), CHAT_KV_C("reason", reason),
             CHAT_KV_N("duration_ms", uv_now(s->srv->loop) - s->opened_ms),
             CHAT_KV_N("bytes_in", s->bytes_in), CHAT_KV_N("bytes_out", s->conn.bytes_out));
}

/* reset: the peer did not finish closing in time; drop what it did not read with a RST */
static void teardown_ex(gw_session_t *s, int reset)
{
    if (s->state == GW_S_CLOSED)
        return;
    if (s->ws != NULL)
        log_closed(s);
    detach(s);
    chat_list_unlink(&s->all_link);
    if (chat_list_is_linked(&s->close_link))
        chat_list_unlink(&s->close_link);
    set_state(s, GW_S_CLOSED);
    s->pending_closes = 2;
    uv_timer_stop(&s->timer);
    gw_conn_close_handle(&s->conn, on_handle_closed, reset);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}

static void teardown(gw_session_t *s)
{
    teardown_ex(s, 0);
}

/* Writes what is queued, then waits (bounded by the linger) for the peer to close. */
static void finish(gw_session_t *s)
{
    if (s->state >= GW_S_CLOSING)
        return;
    detach(s);
    set_state(s, GW_S_CLOSING);
    s->linger_due_ms = uv_now(s->srv->loop) +
                       (s->srv->stopping ? GW_STOP_LINGER_MS : GW_CLOSE_LINGER_MS);
    gw_conn_close_gracefully(&s->conn);
    gw__session_rearm(s);
}

/* ---- the session timer: one owner, armed by state ---- */

static void on_timer(uv_timer_t *t);

void gw__session_rearm(gw_session_t *s)
{
    uint64_t now = uv_now(s->srv->loop), due;
    switch (s->state) {
    case GW_S_HANDSHAKE:
        due = s->accepted_ms + s->srv->cfg->handshake_timeout_ms;
        break;
    case GW_S_OPEN:
        if (s->close_flags) { /* the safe point arms the linger */
            uv_timer_stop(&s->timer);
            return;
        }
        due = gw__safety_next_deadline(s);
        break;
    case GW_S_CLOSING:
        due = s->linger_due_ms;
        break;
    default:
        uv_timer_stop(&s->timer);
        return;
    }
    if (due == UINT64_MAX) {
        uv_timer_stop(&s->timer);
        return;
    }
    uv_timer_start(&s->timer, on_timer, due > now ? due - now : 0, 0);
}

static void refuse(gw_session_t *s, int status, const char *error, const char *message);

static void on_timer(uv_timer_t *t)
{
    gw_session_t *s = t->data;
    switch (s->state) {
    case GW_S_HANDSHAKE:
        refuse(s, 408, "timeout", "the upgrade request took too long");
        break;
    case GW_S_OPEN:
        if (!s->close_flags)
            gw__safety_on_deadline(s, uv_now(s->srv->loop));
        gw__session_rearm(s);
        break;
    case GW_S_CLOSING: /* the peer did not finish closing in time: drop it with a RST */
        teardown_ex(s, 1);
        break;
    case GW_S_CLOSED:
        break;
    }
}

/* ---- the close list: every close of an open session ends here ---- */

/* Links s onto the server's close list with why it goes (GW_CLOSE_F_*). */
static void request(gw_session_t *s, unsigned flags)
{
    s->close_flags |= flags;
    if (!chat_list_is_linked(&s->close_link))
        chat_list_insert_tail(&s->srv->close_list, &s->close_link);
    uv_timer_stop(&s->timer);
}

void gw__session_close(gw_session_t *s, uint16_t code, const char *reason)
{
    if (s->state == GW_S_OPEN) {
        if (s->close_flags)
            return; /* the first reason stands */
        s->close_reason = reason;
        gw_ws_close(s->ws, code, reason); /* queued now: it follows what is already queued */
        request(s, GW_CLOSE_F_GRACEFUL);
    } else if (s->state == GW_S_HANDSHAKE) {
        request(s, GW_CLOSE_F_DROP);
    }
}

void gw__session_teardown(gw_session_t *s)
{
    if (s->state < GW_S_CLOSED)
        request(s, GW_CLOSE_F_RESET);
}

int gw__session_is_open(const gw_session_t *s)
{
    return s->state == GW_S_OPEN && !s->close_flags;
}

void gw__server_process_closes(gw_server_t *srv)
{
    while (!chat_list_is_empty(&srv->close_list)) {
        gw_session_t *s = chat_container_of(srv->close_list.next, gw_session_t, close_link);
        chat_list_unlink(&s->close_link);
        unsigned f = s->close_flags;
        if (f & GW_CLOSE_F_RESET)
            teardown_ex(s, 1);
        else if (f & GW_CLOSE_F_DROP)
            teardown_ex(s, 0);
        else
            finish(s);
    }
}

chat_str_t gw__session_name(const gw_session_t *s)
{
    return s->ident.name ? chat_cstr(s->ident.name) : CHAT_STR_NULL;
}

void gw__session_set_identity(gw_session_t *s, gw_identity_t *ident)
{
    if (s->ident.sub == NULL) { /* first identity: the user id becomes the token's sub */
        free(s->user);
        s->user_len = strlen(ident->sub);
        s->user = chat_xstrndup(ident->sub, s->user_len);
    }
    gw_identity_dispose(&s->ident);
    s->ident = *ident; /* takes ownership */
    memset(ident, 0, sizeof(*ident));
    s->expiry_warned = 0;
    s->exp_mono_ms = 0;
    if (s->ident.has_exp) {
        int64_t left = s->ident.exp * 1000 - chat_wall_ms();
        uint64_t now = uv_now(s->srv->loop);
        s->exp_mono_ms = left > 0 ? now + (uint64_t)left : now;
    }
}

void gw__session_send_json(gw_session_t *s)
{
    chat_rcbuf_t *f = gw_ws_encode(0, s->srv->json.p, s->srv->json.len);
    gw__session_send(s, f, GW_OUT_MUST);
    chat_rcbuf_release(f);
}

/* ---- WebSocket phase ---- */

static void on_ws_send(void *ctx, const char *p, size_t n)
{
    gw_session_t *s = ctx;
    gw_conn_send_copy(&s->conn, p, n);
}

static void on_ws_message(void *ctx, int binary, const char *p, size_t n)
{
    gw_session_t *s = ctx;
    if (!gw__session_is_open(s))
        return;
    s->last_app_ms = uv_now(s->srv->loop);
    s->srv->app->on_message(s, binary, p, n);
}

static void ws_input(gw_session_t *s, const char *p, size_t n)
{
    /* close handshake done, or the peer broke the protocol, or a close frame is on its way */
    if (gw_ws_feed(s->ws, p, n) != 0 || (s->state == GW_S_OPEN && gw_ws_closing(s->ws)))
        request(s, GW_CLOSE_F_GRACEFUL);
}

/* ---- handshake phase ---- */

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)(const void *)ss, ip, sizeof(ip));
    else if (ss->ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)(const void *)ss, ip, sizeof(ip));
    snprintf(out, cap, "%s", ip);
}

/* The client's address: the TCP peer, unless the peer is a trusted proxy; then the rightmost
 * X-Forwarded-For entry that is not itself a trusted proxy (entries to its left can be forged by
 * the client). */
static void resolve_remote(gw_session_t *s)
{
    struct sockaddr_storage peer;
    int len = sizeof(peer);
    memset(&peer, 0, sizeof(peer));
    if (uv_tcp_getpeername(&s->conn.tcp, (struct sockaddr *)&peer, &len) != 0) {
        snprintf(s->remote, sizeof(s->remote), "?");
        return;
    }
    format_addr(&peer, s->remote, sizeof(s->remote));
    if (!gw_config_trusted_proxy(s->srv->cfg, (const struct sockaddr *)&peer))
        return;
    chat_str_t xff = gw_http_req_header(s->req, CHAT_LIT("x-forwarded-for"));
    size_t end = xff.len;
    while (xff.p != NULL && end > 0) {
        size_t start = end;
        while (start > 0 && xff.p[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff.p[a] == ' ' || xff.p[a] == '\t'))
            a++;
        while (b > a && (xff.p[b - 1] == ' ' || xff.p[b - 1] == '\t'))
            b--;
        char ip[INET6_ADDRSTRLEN];
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        if (b - a == 0 || b - a >= sizeof(ip))
            return; /* garbage: keep what we have */
        memcpy(ip, xff.p + a, b - a);
        ip[b - a] = '\0';
        if (uv_ip4_addr(ip, 0, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&ss) != 0)
            return;
        snprintf(s->remote, sizeof(s->remote), "%s", ip);
        if (!gw_config_trusted_proxy(s->srv->cfg, (const struct sockaddr *)&ss))
            return;
        end = start > 0 ? start - 1 : 0;
    }
}

static void refuse(gw_session_t *s, int status, const char *error, const char *message)
{
    chat_buf_t out = CHAT_BUF_INIT;
    if (status > 0 && status < 600)
        s->srv->stats.handshake_rejected[status]++;
    gw_http_build_refusal(&out, status, error, message);
    gw_conn_send_copy(&s->conn, out.p, out.len);
    chat_buf_free(&out);
    CHAT_LOG(CHAT_LOG_DEBUG, "handshake refused", CHAT_KV_N("code", status),
             CHAT_KV_C("reason", error));
    finish(s);
}

static void open_websocket(gw_session_t *s, const gw_upgrade_t *u)
{
    gw_server_t *srv = s->srv;
    chat_buf_t out = CHAT_BUF_INIT;
    if (gw_ws_create(&s->ws, srv->cfg->max_message_bytes, &s->ws_h) != 0) {
        refuse(s, 503, "unavailable", "out of memory");
        return;
    }
    gw_http_build_101(&out, u);
    gw_conn_send_copy(&s->conn, out.p, out.len);
    chat_buf_free(&out);
    set_state(s, GW_S_OPEN);
    gw__user_acquire(s);
    gw__safety_start(s);
    gw__session_rearm(s);
    resolve_remote(s);
    s->opened_ms = uv_now(srv->loop);
    srv->stats.connections_opened++;
    CHAT_LOG(CHAT_LOG_INFO, "connection opened", CHAT_KV_C("conn", s->conn_name),
             CHAT_KV_S("user", chat_str(s->user, s->user_len)), CHAT_KV_C("remote", s->remote),
             CHAT_KV_S(u->route == GW_ROUTE_CHAT ? "room" : NULL, u->room));
    srv->app->on_open(s, u);
}

static void refuse_auth(gw_session_t *s, int status, gw_authfail_t why, const char *error,
                        const char *message)
{
    s->srv->stats.auth_failures[why]++;
    refuse(s, status, error, message);
}

/* With keys configured: the token of the first carrier present must verify (401 otherwise); it
 * becomes s's identity. Returns 1 to go on. */
static int authenticate(gw_session_t *s)
{
    chat_str_t token;
    const char *reason = NULL;
    if (!gw_auth_enabled(s->srv->auth))
        return 1;
    if (gw_http_req_token(s->req, &token) == GW_TOKEN_NONE) {
        refuse_auth(s, 401, GW_AUTHFAIL_MISSING, "missing_token",
                    "a token is required: subprotocol bearer.<token>, Authorization: Bearer, "
                    "or ?token=");
        return 0;
    }
    gw_identity_t id;
    if (gw_auth_verify(s->srv->auth, token, chat_wall_ms() / 1000, &id, &reason) != 0) {
        int expired = reason != NULL && strcmp(reason, GW_AUTH_EXPIRED) == 0;
        refuse_auth(s, 401, expired ? GW_AUTHFAIL_EXPIRED : GW_AUTHFAIL_INVALID,
                    expired ? "expired" : "invalid_token",
                    expired ? "the token has expired" : "the token is not valid");
        return 0;
    }
    gw__session_set_identity(s, &id);
    return 1;
}

/* /chat/{room}: the room must be one s may join (403 forbidden; 400 for a malformed dm: name).
 * Rewrites u->room to its canonical form (kept in s->room_buf). */
static int authorize_room(gw_session_t *s, gw_upgrade_t *u)
{
    if (u->route != GW_ROUTE_CHAT)
        return 1;
    int rc = gw__room_resolve(s, u->room, 1, s->room_buf, &u->room);
    if (rc == CHAT_EBADREQ) {
        refuse(s, 400, "bad_request", "malformed direct room name (dm:<user>:<user>)");
        return 0;
    }
    if (rc == CHAT_EFORBIDDEN) {
        refuse_auth(s, 403, GW_AUTHFAIL_FORBIDDEN, "forbidden", "you may not join this room");
        return 0;
    }
    return 1;
}

static void handshake_input(gw_session_t *s, const char *p, size_t n)
{
    gw_upgrade_t u;
    int used = gw_http_req_feed(s->req, p, n);
    if (used == 0)
        return;
    if (used == CHAT_ETOOLARGE) {
        refuse(s, 431, "header_too_large", "the request head is too large");
        return;
    }
    if (used == CHAT_ENOMEM) {
        refuse(s, 503, "unavailable", "out of memory");
        return;
    }
    if (used < 0) {
        refuse(s, 400, "bad_request", "malformed HTTP request");
        return;
    }
    if (gw_upgrade_check(s->req, &u) != 0) {
        refuse(s, u.status, u.error, u.message);
        return;
    }
    if (u.route == GW_ROUTE_DEMO) {
        chat_buf_t out = CHAT_BUF_INIT;
        gw_http_build_ok(&out, "text/html; charset=utf-8",
                         chat_str(gw_demo_page, gw_demo_page_len));
        gw_conn_send_copy(&s->conn, out.p, out.len);
        chat_buf_free(&out);
        finish(s);
        return;
    }
    if (s->srv->draining || s->srv->stopping) {
        refuse(s, 503, "unavailable", "the server is shutting down");
        return;
    }
    chat_str_t origin = gw_http_req_header(s->req, CHAT_LIT("origin"));
    if (origin.p != NULL && !gw_config_origin_allowed(s->srv->cfg, origin.p, origin.len)) {
        refuse(s, 403, "forbidden_origin", "this Origin may not open WebSockets here");
        return;
    }
    if (!authenticate(s) || !authorize_room(s, &u))
        return;
    if (s->srv->cfg->max_connections && s->srv->nopen >= s->srv->cfg->max_connections) {
        refuse(s, 503, "unavailable", "too many connections on this node, retry later");
        return;
    }
    open_websocket(s, &u); /* u.room points into s->req: keep it until the join is done */
    gw_http_req_dispose(s->req);
    free(s->req);
    s->req = NULL;
    if (s->state == GW_S_OPEN && (size_t)used < n)
        ws_input(s, p + used, n - (size_t)used);
}

static void on_conn_data(void *ctx, const char *p, size_t n)
{
    gw_session_t *s = ctx;
    s->bytes_in += n;
    if (s->state == GW_S_HANDSHAKE) {
        handshake_input(s, p, n);
    } else if (s->state == GW_S_OPEN) {
        s->last_rx_ms = uv_now(s->srv->loop);
        ws_input(s, p, n);
    }
    /* CLOSING: input after our last bytes is discarded */
}

static void on_conn_write_start(void *ctx)
{
    gw__safety_on_write_start(ctx);
}

static void on_conn_end(void *ctx, int err)
{
    request(ctx, GW_CLOSE_F_DROP);
}

/* ---- publications ---- */

void gw__session_on_published(gw_session_t *s, int status)
{
    if (chat_list_is_empty(&s->pending_pubs))
        return;
    gw_pending_pub_t *p = chat_container_of(s->pending_pubs.next, gw_pending_pub_t, link);
    chat_list_unlink(&p->link);
    if (status == 0 && p->ack != NULL) {
        gw__session_send(s, p->ack, GW_OUT_MUST);
    } else if (status != 0) {
        chat_buf_reset(&s->srv->json);
        chat_env_build_error(&s->srv->json, "unavailable", "the message could not be published",
                             p->ack ? chat_str(p->cid, p->cid_len) : CHAT_STR_NULL,
                             chat_str(p->room, p->room_len));
        gw__session_send_json(s);
    }
    chat_rcbuf_release(p->ack);
    free(p);
}

void gw__session_expect_published(gw_session_t *s, chat_str_t room, chat_str_t cid, chat_str_t id)
{
    gw_pending_pub_t *p = chat_xcalloc(1, sizeof(*p) + cid.len);
    memcpy(p->room, room.p, room.len);
    p->room_len = room.len;
    if (cid.p != NULL) {
        chat_buf_t ack = CHAT_BUF_INIT;
        chat_env_build_ack(&ack, cid, room, id);
        p->ack = gw_ws_encode(0, ack.p, ack.len);
        chat_buf_free(&ack);
        memcpy(p->cid, cid.p, cid.len);
        p->cid_len = cid.len;
    }
    chat_list_insert_tail(&s->pending_pubs, &p->link);
}

/* ---- accept ---- */

void gw__session_accept(gw_server_t *srv)
{
    gw_session_t *s = chat_xcalloc(1, sizeof(*s));
    s->srv = srv;
    s->id = ++srv->next_session_id;
    s->conn_h = (gw_conn_handlers_t){
        .on_data = on_conn_data,
        .on_end = on_conn_end,
        .on_write_start = on_conn_write_start,
        .ctx = s,
    };
    s->ws_h = (gw_ws_handlers_t){.on_message = on_ws_message, .send = on_ws_send, .ctx = s};
    chat_list_init(&s->rooms);
    chat_list_init(&s->pending_pubs);
    chat_list_init(&s->link);
    chat_list_init(&s->close_link);
    chat_list_insert_tail(&srv->all_sessions, &s->all_link);
    char guest[GW_ID_MAX];
    s->user_len = (size_t)snprintf(guest, sizeof(guest), "guest-%.*s-%" PRIu64,
                                   (int)srv->node.len, srv->node.p, s->id);
    s->user = chat_xstrndup(guest, s->user_len);
    s->conn_name_len = (size_t)snprintf(s->conn_name, sizeof(s->conn_name), "%.*s-%" PRIu64,
                                        (int)srv->node.len, srv->node.p, s->id);
    gw_conn_init(&s->conn, srv->loop, &srv->flush_list, &srv->readbuf, &s->conn_h);
    s->conn.tcp.data = s;
    uv_timer_init(srv->loop, &s->timer);
    s->timer.data = s;
    srv->nsessions++;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&s->conn.tcp) != 0 ||
        gw_conn_start(&s->conn) != 0) {
        teardown(s);
        return;
    }
    s->req = chat_xmalloc(sizeof(*s->req));
    gw_http_req_init(s->req, srv->cfg->max_header_bytes);
    chat_map_put(&srv->sessions, id_key(&s->id), s);
    chat_list_insert_tail(&srv->session_list, &s->link);
    s->accepted_ms = uv_now(srv->loop);
    gw__session_rearm(s);
}
