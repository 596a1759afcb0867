/* gateway/safety.c - the limits one open session lives under (docs/limits.md):
 *  - heartbeats: a ping after --ping-interval without input, close 4000 when nothing arrives
 *    within --pong-timeout; --idle-timeout without an application message closes with 4001;
 *  - a write that makes no progress for --write-timeout closes with 4003;
 *  - a token past its exp (+ leeway) closes with 4004, after the app was told (on_token_expiring)
 *    --jwt-refresh-window before;
 *  - token buckets per connection, per user, for typing and for joins; a flood closes with 1008.
 * (The send queue bound is in session.c's gw__session_send.)
 * Deadlines are lazy: input only stamps last_rx_ms / last_app_ms; the session timer belongs to
 * session.c, which asks gw__safety_next_deadline() when to fire and gw__safety_on_deadline() what
 * to do then. No timer work per message. Nothing here closes a session at once: a close is a
 * request that the loop carries out at its safe point (gw__session_process_closes). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "core.h"
#include "log.h"

/* ---- heartbeats and timeouts ---- */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

uint64_t gw__safety_next_deadline(const gw_session_t *s)
{
    const gw_config_t *cfg = s->srv->cfg;
    uint64_t d = UINT64_MAX;
    if (s->ping_sent_ms)
        d = min_u64(d, s->ping_sent_ms + cfg->pong_timeout_ms);
    else
        d = min_u64(d, s->last_rx_ms + cfg->ping_interval_ms);
    if (cfg->idle_timeout_ms)
        d = min_u64(d, s->last_app_ms + cfg->idle_timeout_ms);
    if (s->conn.writing)
        d = min_u64(d, s->conn.write_started_ms + cfg->write_timeout_ms);
    if (s->exp_mono_ms) {
        if (!s->expiry_warned)
            d = min_u64(d, s->exp_mono_ms > cfg->jwt_refresh_window_ms
                               ? s->exp_mono_ms - cfg->jwt_refresh_window_ms
                               : 0);
        d = min_u64(d, s->exp_mono_ms + cfg->jwt_leeway_ms);
    }
    return d;
}

void gw__safety_on_deadline(gw_session_t *s, uint64_t now)
{
    const gw_config_t *cfg = s->srv->cfg;
    if (s->ping_sent_ms && s->last_rx_ms >= s->ping_sent_ms)
        s->ping_sent_ms = 0; /* any frame (a pong or anything else) answers the ping */
    if (s->ping_sent_ms && now >= s->ping_sent_ms + cfg->pong_timeout_ms) {
        gw__session_close(s, GW_CLOSE_PING_TIMEOUT, "ping timeout: no pong");
        return;
    }
    if (cfg->idle_timeout_ms && now >= s->last_app_ms + cfg->idle_timeout_ms) {
        gw__session_close(s, GW_CLOSE_IDLE_TIMEOUT, "idle timeout");
        return;
    }
    if (s->conn.writing && now >= s->conn.write_started_ms + cfg->write_timeout_ms) {
        gw__session_close(s, GW_CLOSE_WRITE_TIMEOUT, "write timeout: the client does not read");
        return;
    }
    if (s->exp_mono_ms && now >= s->exp_mono_ms + cfg->jwt_leeway_ms) {
        gw__session_close(s, GW_CLOSE_TOKEN_EXPIRED, "token expired: get a new token");
        return;
    }
    if (s->exp_mono_ms && !s->expiry_warned && now + cfg->jwt_refresh_window_ms >= s->exp_mono_ms) {
        s->expiry_warned = 1;
        if (s->srv->app->on_token_expiring)
            s->srv->app->on_token_expiring(s, s->ident.exp * 1000 - chat_wall_ms());
        if (!gw__session_is_open(s))
            return; /* that overflowed the send queue */
    }
    if (!s->ping_sent_ms && now >= s->last_rx_ms + cfg->ping_interval_ms) {
        if (gw_ws_ping(s->ws) != 0)
            return;
        s->ping_sent_ms = now;
    }
}

void gw__safety_start(gw_session_t *s)
{
    uint64_t now = uv_now(s->srv->loop);
    s->last_rx_ms = s->last_app_ms = now;
    s->ping_sent_ms = 0;
    gw_conn_set_pause_above(&s->conn, s->srv->cfg->send_queue_bytes / 2);
}

void gw__safety_on_write_start(gw_session_t *s)
{
    /* The timer may be set for a later deadline than this write's: bring it forward. */
    uint64_t due = s->conn.write_started_ms + s->srv->cfg->write_timeout_ms;
    uint64_t now = uv_now(s->srv->loop);
    if (gw__session_is_open(s) &&
        (!uv_is_active((uv_handle_t *)&s->timer) || now + uv_timer_get_due_in(&s->timer) > due))
        gw__session_rearm(s);
}

/* ---- rate limits ---- */

static gw_rate_t rate_of(const gw_session_t *s, gw_bucket_kind_t kind)
{
    const gw_config_t *cfg = s->srv->cfg;
    switch (kind) {
    case GW_BUCKET_MESSAGE:
        return (gw_rate_t){cfg->rate_limit, cfg->rate_burst};
    case GW_BUCKET_USER:
        return (gw_rate_t){cfg->user_rate_limit, cfg->user_rate_burst};
    case GW_BUCKET_TYPING:
        return (gw_rate_t){GW_TYPING_RATE, GW_TYPING_BURST};
    case GW_BUCKET_JOIN:
        return (gw_rate_t){GW_JOIN_RATE, GW_JOIN_BURST(cfg->max_rooms_per_conn)};
    case GW_BUCKET_N:
        break;
    }
    return (gw_rate_t){0, 0};
}

/* Counts a refusal; 1 when the connection floods (and its close, 1008, was requested). */
static int flooding(gw_session_t *s, gw_rate_t r, uint64_t now)
{
    if (now - s->refuse_window_ms > GW_FLOOD_WINDOW_MS || s->refusals == 0) {
        s->refuse_window_ms = now;
        s->refusals = 0;
    }
    if (++s->refusals <= GW_FLOOD_FACTOR * gw_rate_allows(r, GW_FLOOD_WINDOW_MS))
        return 0;
    CHAT_LOG(CHAT_LOG_INFO, "rate limit flood", CHAT_KV_C("conn", s->conn_name),
             CHAT_KV_S("user", chat_str(s->user, s->user_len)), CHAT_KV_N("refusals", s->refusals));
    gw__session_close(s, GW_CLOSE_POLICY, "rate limit exceeded again and again");
    return 1;
}

int gw__safety_admit(gw_session_t *s, gw_bucket_kind_t kind, uint64_t *wait_ms)
{
    uint64_t now = uv_now(s->srv->loop);
    gw_rate_t r = rate_of(s, kind), ur = rate_of(s, GW_BUCKET_USER);
    int with_user = kind == GW_BUCKET_MESSAGE && s->u != NULL;
    uint64_t wait = gw_bucket_wait_ms(&s->buckets[kind], r, now), uwait = 0;
    if (with_user)
        uwait = gw_bucket_wait_ms(&s->u->bucket, ur, now);
    if (wait == 0 && uwait == 0) {
        gw_bucket_take(&s->buckets[kind], r);
        if (with_user)
            gw_bucket_take(&s->u->bucket, ur);
        return GW_ADMIT_OK;
    }
    gw_bucket_kind_t which = wait >= uwait ? kind : GW_BUCKET_USER;
    s->srv->stats.rate_limited[which]++;
    if (flooding(s, which == kind ? r : ur, now))
        return GW_ADMIT_FLOOD;
    *wait_ms = wait > uwait ? wait : uwait;
    return GW_ADMIT_REFUSED;
}

/* ---- users ---- */

void gw__safety_user_acquire(gw_session_t *s)
{
    chat_str_t id = chat_str(s->user, s->user_len);
    gw_user_t *u = chat_map_get(&s->srv->users, id);
    if (u == NULL) {
        u = chat_xcalloc(1, sizeof(*u) + id.len);
        memcpy(u->id, id.p, id.len);
        u->id_len = id.len;
        chat_map_put(&s->srv->users, id, u);
    }
    u->refs++;
    s->u = u;
}

void gw__safety_user_release(gw_session_t *s)
{
    gw_user_t *u = s->u;
    if (u == NULL)
        return;
    s->u = NULL;
    if (--u->refs == 0) {
        chat_map_del(&s->srv->users, chat_str(u->id, u->id_len));
        free(u);
    }
}
