/* gateway/drain.c - graceful drain on SIGTERM (gw_server_stop -> gw__drain_start, docs/operations.md):
 *   t = 0             not ready (/readyz 503), new upgrades get 503; nothing else changes, so
 *                     load balancers have --drain-delay to stop routing here;
 *   t = delay         open connections are closed with 1001 in batches, every 100 ms, spread over
 *                     what is left of --drain-timeout (minus a margin for the close handshakes),
 *                     so that clients do not all reconnect in the same instant; what is queued to
 *                     a connection is written before its close frame;
 *   all closed        the listeners close, the node unsubscribes and closes its broker, exit 0;
 *   t = timeout - m   whatever is still there is dropped, so the node is gone before the timeout.
 * A second signal exits at once (main.c). */
#include "core.h"
#include "log.h"

#define DRAIN_TICK_MS 100

/* Time kept at the end of the window for the last close handshakes: 10%, at most 2 s. */
static uint64_t margin_ms(const gw_config_t *cfg)
{
    uint64_t m = (cfg->drain_timeout_ms - cfg->drain_delay_ms) / 10;
    return m > GW_STOP_LINGER_MS ? GW_STOP_LINGER_MS : m;
}

void gw__drain_init(gw_server_t *srv)
{
    uv_timer_init(srv->loop, &srv->drain.tick);
    uv_timer_init(srv->loop, &srv->drain.deadline);
    srv->drain.tick.data = srv->drain.deadline.data = srv;
    srv->drain.timers_open = 1;
}

void gw__drain_cancel(gw_server_t *srv)
{
    if (!srv->drain.timers_open)
        return;
    srv->drain.timers_open = 0;
    gw__server_close_handle(srv, (uv_handle_t *)&srv->drain.tick);
    gw__server_close_handle(srv, (uv_handle_t *)&srv->drain.deadline);
}

static void on_tick(uv_timer_t *t)
{
    gw_server_t *srv = t->data;
    size_t closed = 0;
    chat_list_t *pos, *tmp;
    chat_list_foreach_safe(pos, tmp, &srv->session_list)
    {
        if (closed >= srv->drain.batch)
            break;
        gw_session_t *s = chat_container_of(pos, gw_session_t, link);
        if (!gw__session_is_open(s))
            continue;
        gw__session_close(s, GW_CLOSE_GOING_AWAY, "server shutting down");
        closed++;
    }
    if (srv->nopen == 0) { /* the handshakes still in progress go with the listener */
        uv_timer_stop(&srv->drain.tick);
        gw__server_shutdown(srv);
    }
}

static void on_delay_over(uv_timer_t *t)
{
    gw_server_t *srv = t->data;
    const gw_config_t *cfg = srv->cfg;
    uint64_t window = cfg->drain_timeout_ms - cfg->drain_delay_ms - margin_ms(cfg);
    uint64_t ticks = window / DRAIN_TICK_MS ? window / DRAIN_TICK_MS : 1;
    srv->drain.batch = (size_t)((srv->nopen + ticks - 1) / ticks);
    if (srv->drain.batch == 0)
        srv->drain.batch = 1;
    CHAT_LOG(CHAT_LOG_INFO, "closing connections", CHAT_KV_N("connections", srv->nopen),
             CHAT_KV_N("duration_ms", window), CHAT_KV_N("batch", srv->drain.batch));
    uv_timer_start(&srv->drain.tick, on_tick, 0, DRAIN_TICK_MS);
}

static void on_deadline(uv_timer_t *t)
{
    gw_server_t *srv = t->data;
    CHAT_LOG(CHAT_LOG_WARN, "drain timeout: dropping the rest",
             CHAT_KV_N("connections", srv->nsessions));
    gw__server_shutdown(srv);
    chat_list_t *pos, *tmp;
    chat_list_foreach_safe(pos, tmp, &srv->all_sessions)
    {
        gw__session_teardown(chat_container_of(pos, gw_session_t, all_link));
    }
}

void gw__drain_start(gw_server_t *srv)
{
    const gw_config_t *cfg = srv->cfg;
    srv->draining = 1;
    CHAT_LOG(CHAT_LOG_INFO, "drain started", CHAT_KV_N("connections", srv->nopen),
             CHAT_KV_N("delay_ms", cfg->drain_delay_ms),
             CHAT_KV_N("timeout_ms", cfg->drain_timeout_ms));
    if (srv->nopen == 0) { /* nobody to tell: no reason to wait */
        gw__server_shutdown(srv);
        return;
    }
    uv_timer_start(&srv->drain.tick, on_delay_over, cfg->drain_delay_ms, 0);
    uint64_t deadline = cfg->drain_timeout_ms > 100 ? cfg->drain_timeout_ms - 100 : 0;
    uv_timer_start(&srv->drain.deadline, on_deadline, deadline, 0);
}
