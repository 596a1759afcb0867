/* gateway/server.c - the node: listener, session registry, broker wiring (forwarded to the app),
 * the loop's safe point (requested closes, then the once-per-turn flush), and orderly stop (see
 * server.h). */
#include "server.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "err.h"
#include "core.h"
#include "log.h"

static void on_flush(uv_prepare_t *p)
{
    gw_server_t *srv = p->data;
    /* The safe point: nothing walks a room or a list now. Closing a session may queue bytes
     * (flushed right after) and a failed write may request another close: bounded, since each
     * session closes once. */
    for (int i = 0; i < 4; i++) {
        gw__session_process_closes(srv);
        gw_conn_flush_all(&srv->flush_list);
        if (chat_list_is_empty(&srv->close_list))
            break;
    }
}

#define IP_SWEEP_MS 10000

static void on_ip_sweep(uv_timer_t *t)
{
    gw_server_t *srv = t->data;
    gw_iplimit_sweep(&srv->iplimit, uv_now(srv->loop));
}

static void on_connection(uv_stream_t *l, int status)
{
    gw_server_t *srv = l->data;
    /* a failed accept, or one that took the descriptors kept for the admin listener: counted,
     * logged and (the latter) answered 503 by the guard */
    if (gw__admin_guard_accept(srv, l, GW_LISTENER_PUBLIC, status))
        gw__session_accept(srv);
}

static void on_broker_message(void *ctx, chat_str_t topic, chat_str_t data)
{
    gw_server_t *srv = ctx;
    if (srv->app->on_broker_message)
        srv->app->on_broker_message(srv, topic, data);
}

static void on_broker_published(void *ctx, uint64_t tag, int status, uint64_t receivers)
{
    gw_server_t *srv = ctx;
    if (srv->app->on_published)
        srv->app->on_published(srv, tag, status, receivers);
}

static void on_broker_appended(void *ctx, uint64_t tag, const broker_append_result_t *r)
{
    gw_server_t *srv = ctx;
    if (srv->app->on_appended)
        srv->app->on_appended(srv, tag, r);
}

static void on_broker_history(void *ctx, uint64_t tag, const broker_history_result_t *r)
{
    gw_server_t *srv = ctx;
    if (srv->app->on_history)
        srv->app->on_history(srv, tag, r);
}

static void on_broker_subscribed(void *ctx, chat_str_t topic)
{
    gw_server_t *srv = ctx;
    if (srv->app->on_subscribed)
        srv->app->on_subscribed(srv, topic);
}

static void on_broker_link(void *ctx, int up)
{
    CHAT_LOG0(up ? CHAT_LOG_INFO : CHAT_LOG_WARN, up ? "broker link up" : "broker link down");
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
    chat_map_dispose(&srv->users);
    gw_iplimit_dispose(&srv->iplimit);
    gw_auth_free(srv->auth);
    free(srv->readbuf.base);
    free(srv);
    if (cb)
        cb(ctx);
}

void gw__server_hold(gw_server_t *srv)
{
    srv->pending_closes++;
}

void gw__server_release(gw_server_t *srv)
{
    /* the listener may close long before the last session: free only after finish_stop() */
    if (--srv->pending_closes == 0 && srv->stop_finished)
        free_server(srv);
}

void gw__server_handle_closed(uv_handle_t *h)
{
    gw__server_release(h->data);
}

void gw__server_close_handle(gw_server_t *srv, uv_handle_t *h)
{
    h->data = srv;
    srv->pending_closes++;
    uv_close(h, gw__server_handle_closed);
}

static void finish_stop(gw_server_t *srv)
{
    srv->stop_finished = 1;
    if (srv->app_state != NULL && srv->app->on_stop)
        srv->app->on_stop(srv);
    if (srv->broker) {
        broker_close(srv->broker);
        srv->broker = NULL;
    }
    gw__server_close_handle(srv, (uv_handle_t *)&srv->flusher);
    gw__server_close_handle(srv, (uv_handle_t *)&srv->ip_sweep);
}

void gw__server_session_gone(gw_server_t *srv)
{
    srv->nsessions--;
    if (srv->stopping && srv->nsessions == 0 && !srv->stop_finished)
        finish_stop(srv);
}

int gw_server_start(gw_server_t **out, uv_loop_t *loop, const gw_config_t *cfg, const gw_app_t *app)
{
    int rc;
    gw_server_t *srv = chat_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->node = chat_cstr(cfg->node_id);
    srv->app = app;
    chat_list_init(&srv->flush_list);
    chat_list_init(&srv->close_list);
    chat_list_init(&srv->session_list);
    chat_list_init(&srv->all_sessions);
    chat_map_init(&srv->sessions);
    chat_map_init(&srv->users);
    if ((rc = open_auth(srv)) != 0) {
        chat_map_dispose(&srv->sessions);
        chat_map_dispose(&srv->users);
        free(srv);
        return rc;
    }
    srv->readbuf = uv_buf_init(chat_xmalloc(GW_READ_BUF_BYTES), GW_READ_BUF_BYTES);
    broker_handlers_t bh = {
        .on_message = on_broker_message,
        .on_published = on_broker_published,
        .on_link = on_broker_link,
        .ctx = srv,
        .on_appended = on_broker_appended,
        .on_history = on_broker_history,
        .on_subscribed = on_broker_subscribed,
    };
    broker_config_t bc = {
        .url = cfg->redis_url,
        .prefix = cfg->redis_prefix,
        .node_id = cfg->node_id,
        .timeout_ms = cfg->redis_timeout_ms,
        .history_size = cfg->history_size,
        .history_ttl_ms = cfg->history_ttl_ms,
        .dedupe_window_ms = cfg->dedupe_window_ms,
    };
    const char *why;
    if ((rc = broker_open(loop, &bc, &bh, &srv->broker, &why)) != 0) {
        CHAT_LOG(CHAT_LOG_ERROR, "broker cannot start",
                 CHAT_KV_C("reason", why ? why : chat_strerror(rc)));
        gw_auth_free(srv->auth);
        chat_map_dispose(&srv->users);
        chat_map_dispose(&srv->sessions);
        free(srv->readbuf.base);
        free(srv);
        return rc;
    }
    gw_iplimit_init(&srv->iplimit,
                    (gw_rate_t){cfg->connect_rate_per_ip, cfg->connect_burst_per_ip});
    uv_timer_init(loop, &srv->ip_sweep);
    srv->ip_sweep.data = srv;
    uv_timer_start(&srv->ip_sweep, on_ip_sweep, IP_SWEEP_MS, IP_SWEEP_MS);
    uv_unref((uv_handle_t *)&srv->ip_sweep);
    uv_prepare_init(loop, &srv->flusher);
    srv->flusher.data = srv;
    uv_prepare_start(&srv->flusher, on_flush);
    gw__admin_init(srv); /* the accept guard's spare descriptor, before the listeners */
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->listener_open = 1;
    gw__drain_init(srv);
    if ((srv->app->on_start && (rc = srv->app->on_start(srv)) != 0) ||
        (rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&cfg->listen_addr, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection)) != 0 ||
        (rc = gw__admin_open(srv)) != 0) {
        gw__server_shutdown(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

void gw_server_stop(gw_server_t *srv, void (*on_stopped)(void *ctx), void *ctx)
{
    if (srv->draining || srv->stopping)
        return;
    srv->on_stopped = on_stopped;
    srv->on_stopped_ctx = ctx;
    gw__drain_start(srv);
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
