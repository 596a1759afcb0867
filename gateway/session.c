/* gateway/session.c - one client connection from accept to free:
 *   HANDSHAKE (HTTP request head) -> OPEN (WebSocket) -> CLOSING (last bytes, await EOF) -> CLOSED.
 * Owns its gw_conn_t, timer, request parser and WebSocket; the app owns what it hangs on
 * s->app_data. States only move forward; every entry point checks the state first.
 *
 * Close paths (docs/architecture.md): whatever wants a session gone (a send over the queue bound,
 * a timer, the peer's close or EOF, the drain) only requests it: request() records why and links
 * the session onto srv->close_list; a close frame, if any, is queued at once. The server's prepare
 * callback runs gw__session_process_closes() before it flushes: there, and only there, the app
 * drops its links (rooms, leave notices), the registry links are cut and the close handshake or
 * the teardown starts. The memory is freed in the last handle close callback (STYLE C6). The
 * session timer has one owner, gw__session_rearm(), which arms it by state. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "demo_page.h"
#include "core.h"
#include "err.h"
#include "log.h"

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

/* Cuts every link to the rest of the node: the app's (rooms, with leave notices), the user's
 * and the id registry. Runs once, at the safe point (or at teardown). */
static void detach(gw_session_t *s)
{
    if (s->ws != NULL && !s->detached && s->srv->app->on_close)
        s->srv->app->on_close(s);
    s->detached = 1;
    gw__safety_user_release(s);
    if (chat_list_is_linked(&s->link)) {
        chat_map_del(&s->srv->sessions, id_key(&s->id));
        chat_list_unlink(&s->link);
    }
}

/* The close of an opened connection: counted by code, and logged with its stable ids, who closed
 * and why. by "server": the node's close frame went first (code and reason are ours: a limit, a
 * protocol error, the drain...); "client": the client's did (its code, 1005 when its frame had
 * none; ours was the echo); "network": the TCP connection ended with no close frame (1006). */
static void log_closed(gw_session_t *s)
{
    gw_ws_close_info_t ci;
    const char *by, *reason;
    gw_ws_close_info(s->ws, &ci);
    uint16_t code = ci.code;
    if (ci.by == GW_WS_CLOSER_US) {
        by = "server";
        reason = ci.reason ? ci.reason : s->close_reason ? s->close_reason : "server closed";
    } else if (ci.by == GW_WS_CLOSER_PEER) {
        by = "client";
        reason = "client closed";
    } else {
        by = "network";
        code = 1006;
        reason = "connection lost";
    }
    if (code < sizeof(s->srv->stats.closed_by_code) / sizeof(uint64_t))
        s->srv->stats.closed_by_code[code]++;
    s->srv->stats.connections_closed++;
    CHAT_LOG(CHAT_LOG_INFO, "connection closed", CHAT_KV_C("conn", s->conn_name),
             CHAT_KV_S("user", chat_str(s->user, s->user_len)), CHAT_KV_C("remote", s->remote),
             CHAT_KV_C("by", by), CHAT_KV_N("code", code), CHAT_KV_C("reason", reason),
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
    s->linger_due_ms =
        uv_now(s->srv->loop) + (s->srv->stopping ? GW_STOP_LINGER_MS : GW_CLOSE_LINGER_MS);
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

void gw__session_process_closes(gw_server_t *srv)
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

chat_str_t gw__session_user(const gw_session_t *s)
{
    return chat_str(s->user, s->user_len);
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

/* ---- sending, within the send queue bound ---- */

int gw__session_send(gw_session_t *s, chat_rcbuf_t *frame, gw_out_kind_t kind)
{
    if (!gw__session_is_open(s))
        return 0;
    if (s->conn.queued_bytes + frame->len <= s->srv->cfg->send_queue_bytes) {
        gw_conn_send(&s->conn, frame);
        return 1;
    }
    if (kind == GW_OUT_DROPPABLE) {
        s->srv->stats.dropped_queue_full++;
        return 0;
    }
    /* A slow consumer: what it has not received yet is dropped at once, the close frame follows
     * the write in flight, and the linger drops the TCP connection 5 s later at most. Only
     * requested here: whoever called us may be walking a room that s is in. */
    CHAT_LOG(CHAT_LOG_INFO, "slow consumer", CHAT_KV_C("conn", s->conn_name),
             CHAT_KV_S("user", chat_str(s->user, s->user_len)),
             CHAT_KV_N("queued_bytes", s->conn.queued_bytes));
    gw_conn_discard_queued(&s->conn);
    gw__session_close(s, GW_CLOSE_SLOW_CONSUMER, "slow consumer: send queue full");
    return 0;
}

void gw__session_send_json(gw_session_t *s, chat_str_t json)
{
    chat_rcbuf_t *f = gw_ws_encode(0, json.p, json.len);
    gw__session_send(s, f, GW_OUT_MUST);
    chat_rcbuf_release(f);
}

/* ---- WebSocket phase ---- */

/* Pongs waiting unwritten in one connection's queue: beyond this many, the newest waiting one is
 * replaced instead (RFC 6455 5.5.3 lets a pong answer only the latest ping). A client that sends
 * pings and never reads then costs a fixed amount, not one allocation per ping
 * (docs/limits.md). */
#define PONGS_WAITING_MAX 16

/* A control frame from the WebSocket layer. Closes always go (the last frame; over the queue
 * bound the slow-consumer close has emptied the queue first). Pongs and our pings count against
 * --send-queue-bytes like any frame: a pong that does not fit takes the place of a waiting one,
 * or, with none waiting, the connection is a slow consumer (4002). */
static void on_ws_send(void *ctx, const char *p, size_t n)
{
    gw_session_t *s = ctx;
    int op = (unsigned char)p[0] & 0x0f;
    if (op == GW_WS_OP_CLOSE) {
        gw_conn_send_copy(&s->conn, p, n);
        return;
    }
    if (!gw__session_is_open(s))
        return; /* closing: no pong or ping is owed any more */
    chat_rcbuf_t *f = chat_rcbuf_new(p, n);
    if (op != GW_WS_OP_PONG) {
        gw__session_send(s, f, GW_OUT_MUST);
    } else if (s->conn.nreplaceable >= PONGS_WAITING_MAX ||
               s->conn.queued_bytes + n > s->srv->cfg->send_queue_bytes) {
        if (!gw_conn_replace_newest(&s->conn, f))
            gw__session_send(s, f, GW_OUT_MUST); /* does not fit: the slow-consumer close */
    } else {
        gw_conn_send_replaceable(&s->conn, f);
    }
    chat_rcbuf_release(f);
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
 * the client). An entry must be a bare IPv4 or IPv6 address: a zone id ("fe80::1%eth0"), a port or
 * anything else stops the walk (the address found so far stands). What is logged is always
 * re-formatted from the parsed address, never the header's text. */
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
        if (memchr(ip, '%', b - a) != NULL)
            return; /* a zone id: meaningless beyond the proxy's own link, and free text */
        struct sockaddr_in *v4 = (struct sockaddr_in *)(void *)&ss;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)&ss;
        if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
            ss.ss_family = AF_INET;
        else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
            ss.ss_family = AF_INET6;
        else
            return;
        format_addr(&ss, s->remote, sizeof(s->remote));
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
    gw__safety_user_acquire(s);
    gw__safety_start(s);
    gw__session_rearm(s);
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

/* The app's say on the route (for the chat: /chat/{room} must name a room s may join; the
 * canonical name is kept in s->route_buf). Returns 1 to go on. */
static int authorize_route(gw_session_t *s, gw_upgrade_t *u)
{
    const char *error = NULL, *message = NULL;
    if (s->srv->app->on_upgrade == NULL)
        return 1;
    int status = s->srv->app->on_upgrade(s, u, s->route_buf, &error, &message);
    if (status == 0)
        return 1;
    if (status == 403)
        refuse_auth(s, 403, GW_AUTHFAIL_FORBIDDEN, error, message);
    else
        refuse(s, status, error, message);
    return 0;
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
    /* new connections per client address, before any costly check (a token's signature) */
    uint64_t wait_ms = 0;
    resolve_remote(s);
    if (!gw_iplimit_take(&s->srv->iplimit, chat_cstr(s->remote), uv_now(s->srv->loop),
                         &wait_ms)) {
        refuse(s, 429, "rate_limited", "too many new connections from this address, retry later");
        return;
    }
    chat_str_t origin = gw_http_req_header(s->req, CHAT_LIT("origin"));
    if (origin.p != NULL && !gw_config_origin_allowed(s->srv->cfg, origin.p, origin.len)) {
        refuse(s, 403, "forbidden_origin", "this Origin may not open WebSockets here");
        return;
    }
    if (!authenticate(s) || !authorize_route(s, &u))
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
    chat_list_init(&s->link);
    chat_list_init(&s->close_link);
    chat_list_insert_tail(&srv->all_sessions, &s->all_link);
    char guest[GW_ID_MAX];
    s->user_len = (size_t)snprintf(guest, sizeof(guest), "guest-%.*s-%" PRIu64, (int)srv->node.len,
                                   srv->node.p, s->id);
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
