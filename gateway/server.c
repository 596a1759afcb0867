/* gateway/server.c - the node: listener, session registry, broker wiring, once-per-turn flush,
 * and orderly stop (see server.h). */
#include "server.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "err.h"
#include "internal.h"
#include "log.h"

static void on_flush(uv_prepare_t *p)
{
    gw_server_t *srv = p->data;
    /* The safe point: nothing walks a room or a list now. Closing a session may queue bytes
     * (flushed right after) and a failed write may request another close: bounded, since each
     * session closes once. */
    for (int i = 0; i < 4; i++) {
        gw__server_process_closes(srv);
        gw_conn_flush_all(&srv->flush_list);
        if (chat_list_is_empty(&srv->close_list))
            break;
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    gw_server_t *srv = l->data;
    if (status != 0) {
        CHAT_LOG(CHAT_LOG_WARN, "accept failed", CHAT_KV_C("reason", uv_strerror(status)));
        return;
    }
    gw__session_accept(srv);
}

static void on_broker_message(void *ctx, chat_str_t topic, chat_str_t data)
{
    gw__room_deliver(ctx, topic, data);
}

static void on_broker_published(void *ctx, uint64_t tag, int status)
{
    gw_session_t *s = gw__session_find(ctx, tag);
    if (s != NULL)
        gw__session_on_published(s, status);
}

static void on_broker_link(void *ctx, int up)
{
    CHAT_LOG0(up ? CHAT_LOG_INFO : CHAT_LOG_WARN, up ? "broker link up" : "broker link down");
}

int gw__publish(gw_server_t *srv, chat_str_t room, chat_wire_kind_t kind, gw_session_t *origin,
                int exclude_origin, uint64_t tag)
{
    chat_wire_hdr_t h = {
        .kind = kind,
        .exclude_origin = exclude_origin,
        .origin_node = srv->node,
        .origin_conn = origin ? origin->id : 0,
        .publish_ms = chat_wall_ms(),
    };
    chat_buf_reset(&srv->wire);
    chat_wire_put_header(&srv->wire, &h);
    chat_buf_append(&srv->wire, srv->json.p, srv->json.len);
    return broker_publish(srv->broker, room, chat_buf_str(&srv->wire), tag);
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

/* Loads the JWT keys. A key problem is a configuration error: CHAT_EINVAL (message on stderr). */
static int open_auth(gw_server_t *srv)
{
    const gw_config_t *cfg = srv->cfg;
    gw_auth_config_t ac;
    char err[512];
    gw_auth_t *auth = NULL;
    gw_auth_config_init(&ac);
    ac.secret = cfg->jwt_secret;
    ac.secret_files = cfg->jwt_secret_file;
    ac.public_key_files = cfg->jwt_public_key_file;
    ac.allow_no_exp = cfg->jwt_allow_no_exp;
    ac.leeway_s = cfg->jwt_leeway_ms / 1000;
    ac.issuer = cfg->jwt_issuer[0] ? cfg->jwt_issuer : NULL;
    ac.audience = cfg->jwt_audience[0] ? cfg->jwt_audience : NULL;
    if (gw_auth_create(&auth, &ac, err, sizeof(err)) != 0) {
        fprintf(stderr, "chat-gateway: %s\n", err);
        return CHAT_EINVAL;
    }
    srv->auth = auth;
    if (!gw_auth_enabled(auth))
        CHAT_LOG0(CHAT_LOG_WARN, "no JWT key configured: anyone can connect as a guest");
    return 0;
}

static void free_server(gw_server_t *srv)
{
    void (*cb)(void *) = srv->on_stopped;
    void *ctx = srv->on_stopped_ctx;
    chat_map_dispose(&srv->sessions);
    chat_map_dispose(&srv->rooms);
    chat_map_dispose(&srv->users);
    gw_auth_free(srv->auth);
    chat_buf_free(&srv->json);
    chat_buf_free(&srv->wire);
    free(srv->readbuf.base);
    free(srv);
    if (cb)
        cb(ctx);
}

void gw__server_handle_closed(uv_handle_t *h)
{
    gw_server_t *srv = h->data;
    /* the listener may close long before the last session: free only after finish_stop() */
    if (--srv->pending_closes == 0 && srv->stop_finished)
        free_server(srv);
}

static void finish_stop(gw_server_t *srv)
{
    srv->stop_finished = 1;
    if (srv->broker) {
        broker_close(srv->broker);
        srv->broker = NULL;
    }
    gw__metrics_close(srv);
    srv->pending_closes++;
    uv_close((uv_handle_t *)&srv->flusher, gw__server_handle_closed);
}

void gw__server_set_app(gw_server_t *srv, const gw_app_t *app)
{
    srv->app = app;
}

void gw__server_session_gone(gw_server_t *srv)
{
    srv->nsessions--;
    if (srv->stopping && srv->nsessions == 0 && !srv->stop_finished)
        finish_stop(srv);
}

int gw_server_start(gw_server_t **out, uv_loop_t *loop, const gw_config_t *cfg)
{
    int rc;
    gw_server_t *srv = chat_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->node = chat_cstr(cfg->node_id);
    srv->app = &gw__chat_app;
    chat_list_init(&srv->flush_list);
    chat_list_init(&srv->close_list);
    chat_list_init(&srv->session_list);
    chat_list_init(&srv->all_sessions);
    chat_map_init(&srv->sessions);
    chat_map_init(&srv->rooms);
    chat_map_init(&srv->users);
    if ((rc = open_auth(srv)) != 0) {
        chat_map_dispose(&srv->sessions);
        chat_map_dispose(&srv->rooms);
        chat_map_dispose(&srv->users);
        free(srv);
        return rc;
    }
    srv->readbuf = uv_buf_init(chat_xmalloc(GW_READ_BUF_BYTES), GW_READ_BUF_BYTES);
    base36((uint64_t)chat_wall_ms(), srv->boot36, sizeof(srv->boot36));
    broker_handlers_t bh = {
        .on_message = on_broker_message,
        .on_published = on_broker_published,
        .on_link = on_broker_link,
        .ctx = srv,
    };
    broker_config_t bc = {
        .url = cfg->redis_url,
        .prefix = cfg->redis_prefix,
        .node_id = cfg->node_id,
        .timeout_ms = cfg->redis_timeout_ms,
    };
    const char *why;
    if ((rc = broker_open(loop, &bc, &bh, &srv->broker, &why)) != 0) {
        CHAT_LOG(CHAT_LOG_ERROR, "broker cannot start",
                 CHAT_KV_C("reason", why ? why : chat_strerror(rc)));
        gw_auth_free(srv->auth);
        chat_map_dispose(&srv->users);
        chat_map_dispose(&srv->sessions);
        chat_map_dispose(&srv->rooms);
        free(srv->readbuf.base);
        free(srv);
        return rc;
    }
    gw__metrics_init(srv);
    uv_prepare_init(loop, &srv->flusher);
    srv->flusher.data = srv;
    uv_prepare_start(&srv->flusher, on_flush);
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->listener_open = 1;
    if ((rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&cfg->listen_addr, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection)) != 0 ||
        (rc = gw__admin_open(srv)) != 0) {
        gw__server_shutdown(srv);
        return rc;
    }
    gw__drain_init(srv);
    *out = srv;
    return 0;
}

void gw__server_shutdown(gw_server_t *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    gw__drain_cancel(srv);
    gw__admin_close(srv);
    if (srv->listener_open) {
        srv->listener_open = 0;
        srv->pending_closes++;
        uv_close((uv_handle_t *)&srv->listener, gw__server_handle_closed);
    }
    chat_list_t *pos, *tmp;
    chat_list_foreach_safe(pos, tmp, &srv->session_list)
    {
        gw_session_t *s = chat_container_of(pos, gw_session_t, link);
        gw__session_close(s, GW_CLOSE_GOING_AWAY, "server shutting down");
    }
    if (srv->nsessions == 0)
        finish_stop(srv);
}
