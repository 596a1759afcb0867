/* gateway/metrics.c - the node's metrics in the Prometheus text format 0.0.4 (docs/operations.md).
 * Counters live where they happen (gw_stats_t, broker_stats_t); this file renders them, keeps
 * the bounded per-room message counters and the delivery latency histogram. Every family is
 * declared (# HELP, # TYPE) even before its first sample. Labels never carry user ids or tokens:
 * room names only for the --metrics-top-rooms busiest rooms, the rest summed as room="_other".
 *
 * Top rooms: a room gets its own series when a slot is free; every minute, rooms that sent no
 * message during the last minute give their slot back, so the tracked set follows the busy
 * rooms while the number of series stays bounded. Counters only grow (a room that comes back
 * starts again from zero, which PromQL's rate() reads as a counter reset). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "internal.h"

#define TOP_SWEEP_MS 60000

/* upper bounds in seconds */
static const double latency_le[GW_LATENCY_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                      0.025,  0.05,  0.1,    0.25,  0.5,
                                                      1,      2.5,   5,      10};

/* The decay of the top-rooms scores: a half-life of one sweep period (toprooms.h). */
static void on_top_sweep(uv_timer_t *t)
{
    gw_server_t *srv = t->data;
    gw_toprooms_decay(&srv->top);
}

void gw__metrics_init(gw_server_t *srv)
{
    gw_toprooms_init(&srv->top, (size_t)srv->cfg->metrics_top_rooms);
    uv_timer_init(srv->loop, &srv->top_sweep);
    srv->top_sweep.data = srv;
    uv_timer_start(&srv->top_sweep, on_top_sweep, TOP_SWEEP_MS, TOP_SWEEP_MS);
    uv_unref((uv_handle_t *)&srv->top_sweep);
}

static void on_sweep_closed(uv_handle_t *h)
{
    gw_server_t *srv = h->data;
    gw_toprooms_dispose(&srv->top);
    gw__server_handle_closed(h);
}

void gw__metrics_close(gw_server_t *srv)
{
    srv->pending_closes++;
    uv_close((uv_handle_t *)&srv->top_sweep, on_sweep_closed);
}

void gw__metrics_room_message(gw_server_t *srv, chat_str_t room)
{
    gw_toprooms_count(&srv->top, room);
}

void gw__metrics_observe_latency(gw_server_t *srv, int64_t publish_ms)
{
    int64_t ms = chat_wall_ms() - publish_ms;
    double s = ms > 0 ? (double)ms / 1000.0 : 0.0; /* clocks of two nodes may disagree a little */
    size_t i = 0;
    while (i < GW_LATENCY_BUCKETS && s > latency_le[i])
        i++;
    srv->latency_buckets[i]++;
    srv->latency_count++;
    srv->latency_sum_s += s;
}

/* ---- rendering ---- */

static void family(chat_buf_t *b, const char *name, const char *type, const char *help)
{
    chat_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(chat_buf_t *b, const char *name, const char *labels, uint64_t v)
{
    chat_buf_appendf(b, "%s%s%s%s %llu\n", name, labels ? "{" : "", labels ? labels : "",
                     labels ? "}" : "", (unsigned long long)v);
}

/* A label value as the text format wants it: \, " and newline escaped. */
static void label_value(chat_buf_t *b, chat_str_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        char c = v.p[i];
        if (c == '\\' || c == '"')
            chat_buf_appendf(b, "\\%c", c);
        else if (c == '\n')
            chat_buf_append(b, "\\n", 2);
        else
            chat_buf_append(b, &c, 1);
    }
}

static uint64_t rss_bytes(void)
{
    unsigned long long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t open_fds(void)
{
    uint64_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own descriptor */
}

static void render_connections(gw_server_t *srv, chat_buf_t *b)
{
    const gw_stats_t *st = &srv->stats;
    char l[64];
    family(b, "chat_connections", "gauge", "Open WebSocket connections on this node.");
    sample(b, "chat_connections", NULL, srv->nopen);
    family(b, "chat_connections_opened_total", "counter", "WebSocket connections opened.");
    sample(b, "chat_connections_opened_total", NULL, st->connections_opened);
    family(b, "chat_connections_closed_total", "counter",
           "WebSocket connections closed, by close code (1006: no close handshake).");
    for (size_t c = 0; c < sizeof(st->closed_by_code) / sizeof(st->closed_by_code[0]); c++)
        if (st->closed_by_code[c]) {
            snprintf(l, sizeof(l), "code=\"%zu\"", c);
            sample(b, "chat_connections_closed_total", l, st->closed_by_code[c]);
        }
    family(b, "chat_handshake_rejected_total", "counter",
           "Upgrade requests refused before the WebSocket opened, by HTTP status.");
    for (size_t c = 0; c < sizeof(st->handshake_rejected) / sizeof(st->handshake_rejected[0]); c++)
        if (st->handshake_rejected[c]) {
            snprintf(l, sizeof(l), "status=\"%zu\"", c);
            sample(b, "chat_handshake_rejected_total", l, st->handshake_rejected[c]);
        }
}

static void render_messages(gw_server_t *srv, chat_buf_t *b)
{
    static const char *const in_types[] = {"invalid", "join",   "leave",  "chat",
                                           "typing",  "ping",   "refresh"};
    static const char *const out_types[] = {"chat", "typing", "system"};
    static const char *const buckets[] = {"message", "user", "typing", "join"};
    static const char *const authfail[] = {"missing_token", "invalid_token", "expired",
                                           "forbidden"};
    const gw_stats_t *st = &srv->stats;
    char l[64];
    family(b, "chat_rooms", "gauge", "Rooms with local members on this node.");
    sample(b, "chat_rooms", NULL, chat_map_count(&srv->rooms));
    family(b, "chat_messages_received_total", "counter", "Messages from clients, by type.");
    for (size_t i = 0; i < sizeof(in_types) / sizeof(in_types[0]); i++) {
        snprintf(l, sizeof(l), "type=\"%s\"", in_types[i]);
        sample(b, "chat_messages_received_total", l, st->received[i]);
    }
    family(b, "chat_messages_delivered_total", "counter",
           "Chat, typing and system frames queued to clients (one per recipient).");
    for (size_t i = 0; i < 3; i++) {
        snprintf(l, sizeof(l), "type=\"%s\"", out_types[i]);
        sample(b, "chat_messages_delivered_total", l, st->delivered[i]);
    }
    family(b, "chat_messages_dropped_total", "counter",
           "Frames not delivered, by reason (send_queue_full: typing/system for a full queue).");
    sample(b, "chat_messages_dropped_total", "reason=\"send_queue_full\"", st->dropped_queue_full);
    family(b, "chat_rate_limited_total", "counter", "Client messages refused by a rate limit.");
    for (size_t i = 0; i < GW_BUCKET_N; i++) {
        snprintf(l, sizeof(l), "bucket=\"%s\"", buckets[i]);
        sample(b, "chat_rate_limited_total", l, st->rate_limited[i]);
    }
    family(b, "chat_auth_failures_total", "counter", "Refused tokens and forbidden rooms.");
    for (size_t i = 0; i < GW_AUTHFAIL_N; i++) {
        snprintf(l, sizeof(l), "reason=\"%s\"", authfail[i]);
        sample(b, "chat_auth_failures_total", l, st->auth_failures[i]);
    }
}

static void render_rooms(gw_server_t *srv, chat_buf_t *b)
{
    gw_toprooms_stat_t st;
    size_t pos = 0;
    family(b, "chat_room_messages_total", "counter",
           "Chat messages published from this node, by room (the busiest public rooms; the "
           "rest as _other, dm: and private: rooms as _private).");
    while (gw_toprooms_next(&srv->top, &pos, &st)) {
        if (!st.exported)
            continue;
        chat_buf_append(b, "chat_room_messages_total{room=\"", 31);
        label_value(b, st.room);
        chat_buf_appendf(b, "\"} %llu\n", (unsigned long long)st.value);
    }
    sample(b, "chat_room_messages_total", "room=\"" GW_TOPROOMS_OTHER "\"", srv->top.other);
    sample(b, "chat_room_messages_total", "room=\"" GW_TOPROOMS_PRIVATE "\"",
           srv->top.private_msgs);
}

static void render_latency(gw_server_t *srv, chat_buf_t *b)
{
    uint64_t cum = 0;
    family(b, "chat_delivery_latency_seconds", "histogram",
           "From the publish time stamped by the origin node to the hand-off to local sockets, "
           "one observation per message per node.");
    for (size_t i = 0; i < GW_LATENCY_BUCKETS; i++) {
        cum += srv->latency_buckets[i];
        chat_buf_appendf(b, "chat_delivery_latency_seconds_bucket{le=\"%g\"} %llu\n",
                         latency_le[i], (unsigned long long)cum);
    }
    cum += srv->latency_buckets[GW_LATENCY_BUCKETS];
    chat_buf_appendf(b, "chat_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
                     (unsigned long long)cum);
    chat_buf_appendf(b, "chat_delivery_latency_seconds_sum %.6f\n", srv->latency_sum_s);
    chat_buf_appendf(b, "chat_delivery_latency_seconds_count %llu\n",
                     (unsigned long long)srv->latency_count);
}

static void render_process(gw_server_t *srv, chat_buf_t *b)
{
    broker_stats_t bs;
    uint64_t queued = 0;
    chat_list_t *pos, *tmp;
    chat_list_foreach_safe(pos, tmp, &srv->all_sessions)
    {
        queued += chat_container_of(pos, gw_session_t, all_link)->conn.queued_bytes;
    }
    family(b, "chat_send_queue_bytes", "gauge", "Bytes waiting to be written to clients.");
    sample(b, "chat_send_queue_bytes", NULL, queued);
    broker_get_stats(srv->broker, &bs);
    family(b, "chat_broker_connected", "gauge",
           "1 while the broker can take messages (Redis: both links up, canary fresh).");
    sample(b, "chat_broker_connected", NULL, (uint64_t)broker_is_up(srv->broker));
    family(b, "chat_broker_reconnects_total", "counter", "Times the broker came back after a loss.");
    sample(b, "chat_broker_reconnects_total", NULL, bs.reconnects);
    family(b, "chat_broker_published_total", "counter", "Messages the broker accepted.");
    sample(b, "chat_broker_published_total", NULL, bs.published);
    family(b, "chat_broker_received_total", "counter", "Messages received from the broker.");
    sample(b, "chat_broker_received_total", NULL, bs.received);
    family(b, "chat_broker_publish_errors_total", "counter",
           "Publications refused or failed (their senders got `unavailable`).");
    sample(b, "chat_broker_publish_errors_total", NULL, bs.publish_errors);
    family(b, "chat_build_info", "gauge", "Always 1; the version as a label.");
    sample(b, "chat_build_info", "version=\"" CHAT_VERSION "\"", 1);
    family(b, "chat_process_resident_memory_bytes", "gauge", "Resident memory of the process.");
    sample(b, "chat_process_resident_memory_bytes", NULL, rss_bytes());
    family(b, "chat_process_open_fds", "gauge", "Open file descriptors of the process.");
    sample(b, "chat_process_open_fds", NULL, open_fds());
}

void gw__metrics_render(gw_server_t *srv, chat_buf_t *out)
{
    render_connections(srv, out);
    render_messages(srv, out);
    render_rooms(srv, out);
    render_latency(srv, out);
    render_process(srv, out);
}
