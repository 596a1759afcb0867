/* gateway/metrics.c - the node's metrics in the Prometheus text format 0.0.4 (docs/operations.md).
 * Counters live where they happen (gw_stats_t, broker_stats_t, the app's state); this file
 * renders the transport's, the broker's and the process's, then lets the app append its own
 * families (gw_app_t.render_metrics; the chat's are in chat_stats.c). Every family is declared
 * (# HELP, # TYPE) even before its first sample. Labels never carry user ids or tokens. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

/* ---- rendering ---- */

void gw__metrics_family(chat_buf_t *b, const char *name, const char *type, const char *help)
{
    chat_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void gw__metrics_sample(chat_buf_t *b, const char *name, const char *labels, uint64_t v)
{
    chat_buf_appendf(b, "%s%s%s%s %llu\n", name, labels ? "{" : "", labels ? labels : "",
                     labels ? "}" : "", (unsigned long long)v);
}

void gw__metrics_label_value(chat_buf_t *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
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
    gw__metrics_family(b, "chat_connections", "gauge", "Open WebSocket connections on this node.");
    gw__metrics_sample(b, "chat_connections", NULL, srv->nopen);
    gw__metrics_family(b, "chat_connections_opened_total", "counter",
                       "WebSocket connections opened.");
    gw__metrics_sample(b, "chat_connections_opened_total", NULL, st->connections_opened);
    gw__metrics_family(b, "chat_connections_closed_total", "counter",
                       "WebSocket connections closed, by close code (1006: no close handshake).");
    for (size_t c = 0; c < sizeof(st->closed_by_code) / sizeof(st->closed_by_code[0]); c++)
        if (st->closed_by_code[c]) {
            snprintf(l, sizeof(l), "code=\"%zu\"", c);
            gw__metrics_sample(b, "chat_connections_closed_total", l, st->closed_by_code[c]);
        }
    gw__metrics_family(b, "chat_handshake_rejected_total", "counter",
                       "Upgrade requests refused before the WebSocket opened, by HTTP status.");
    for (size_t c = 0; c < sizeof(st->handshake_rejected) / sizeof(st->handshake_rejected[0]); c++)
        if (st->handshake_rejected[c]) {
            snprintf(l, sizeof(l), "status=\"%zu\"", c);
            gw__metrics_sample(b, "chat_handshake_rejected_total", l, st->handshake_rejected[c]);
        }
}

static void render_limits(gw_server_t *srv, chat_buf_t *b)
{
    static const char *const buckets[] = {"message", "user", "typing", "join"};
    static const char *const authfail[] = {"missing_token", "invalid_token", "expired",
                                           "forbidden"};
    const gw_stats_t *st = &srv->stats;
    char l[64];
    gw__metrics_family(
        b, "chat_messages_dropped_total", "counter",
        "Frames not delivered, by reason (send_queue_full: typing/system for a full queue).");
    gw__metrics_sample(b, "chat_messages_dropped_total", "reason=\"send_queue_full\"",
                       st->dropped_queue_full);
    gw__metrics_family(b, "chat_rate_limited_total", "counter",
                       "Client messages refused by a rate limit.");
    for (size_t i = 0; i < GW_BUCKET_N; i++) {
        snprintf(l, sizeof(l), "bucket=\"%s\"", buckets[i]);
        gw__metrics_sample(b, "chat_rate_limited_total", l, st->rate_limited[i]);
    }
    gw__metrics_family(b, "chat_auth_failures_total", "counter",
                       "Refused tokens and forbidden rooms.");
    for (size_t i = 0; i < GW_AUTHFAIL_N; i++) {
        snprintf(l, sizeof(l), "reason=\"%s\"", authfail[i]);
        gw__metrics_sample(b, "chat_auth_failures_total", l, st->auth_failures[i]);
    }
}

static void render_listeners(gw_server_t *srv, chat_buf_t *b)
{
    static const char *const listeners[GW_LISTENER_N] = {"public", "admin"};
    static const char *const accept_errors[GW_ACCEPT_N] = {"fd_limit", "emfile", "enfile", "other"};
    static const char *const refusals[GW_ADMIN_REFUSED_N] = {"max_connections", "timeout",
                                                             "bad_request"};
    const gw_stats_t *st = &srv->stats;
    char l[64];
    gw__metrics_family(b, "chat_accept_errors_total", "counter",
                       "Connections a listener did not take: no file descriptor left after the "
                       "accept (fd_limit: answered 503), or accept() failed.");
    for (size_t i = 0; i < GW_LISTENER_N; i++)
        for (size_t r = 0; r < GW_ACCEPT_N; r++) {
            snprintf(l, sizeof(l), "listener=\"%s\",reason=\"%s\"", listeners[i], accept_errors[r]);
            gw__metrics_sample(b, "chat_accept_errors_total", l, st->accept_errors[i][r]);
        }
    gw__metrics_family(b, "chat_admin_connections", "gauge",
                       "Connections open on the admin listener.");
    gw__metrics_sample(b, "chat_admin_connections", NULL, srv->admin.nconns);
    gw__metrics_family(b, "chat_admin_refused_total", "counter",
                       "Admin connections refused: over --admin-max-connections (503), no "
                       "request within --handshake-timeout (408), bad request (400, 431).");
    for (size_t r = 0; r < GW_ADMIN_REFUSED_N; r++) {
        snprintf(l, sizeof(l), "reason=\"%s\"", refusals[r]);
        gw__metrics_sample(b, "chat_admin_refused_total", l, st->admin_refused[r]);
    }
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
    gw__metrics_family(b, "chat_send_queue_bytes", "gauge",
                       "Bytes waiting to be written to clients.");
    gw__metrics_sample(b, "chat_send_queue_bytes", NULL, queued);
    broker_get_stats(srv->broker, &bs);
    gw__metrics_family(
        b, "chat_broker_connected", "gauge",
        "1 while the broker can take messages (Redis: both links up, canary fresh).");
    gw__metrics_sample(b, "chat_broker_connected", NULL, (uint64_t)broker_is_up(srv->broker));
    gw__metrics_family(b, "chat_broker_reconnects_total", "counter",
                       "Times the broker came back after a loss.");
    gw__metrics_sample(b, "chat_broker_reconnects_total", NULL, bs.reconnects);
    gw__metrics_family(b, "chat_broker_published_total", "counter",
                       "Messages the broker accepted.");
    gw__metrics_sample(b, "chat_broker_published_total", NULL, bs.published);
    gw__metrics_family(b, "chat_broker_received_total", "counter",
                       "Messages received from the broker.");
    gw__metrics_sample(b, "chat_broker_received_total", NULL, bs.received);
    gw__metrics_family(b, "chat_broker_publish_errors_total", "counter",
                       "Publications refused or failed (their senders got `unavailable`).");
    gw__metrics_sample(b, "chat_broker_publish_errors_total", NULL, bs.publish_errors);
    gw__metrics_family(b, "chat_build_info", "gauge", "Always 1; the version as a label.");
    gw__metrics_sample(b, "chat_build_info", "version=\"" CHAT_VERSION "\"", 1);
    gw__metrics_family(b, "chat_process_resident_memory_bytes", "gauge",
                       "Resident memory of the process.");
    gw__metrics_sample(b, "chat_process_resident_memory_bytes", NULL, rss_bytes());
    gw__metrics_family(b, "chat_process_open_fds", "gauge",
                       "Open file descriptors of the process.");
    gw__metrics_sample(b, "chat_process_open_fds", NULL, open_fds());
}

void gw__metrics_render(gw_server_t *srv, chat_buf_t *out)
{
    render_connections(srv, out);
    render_limits(srv, out);
    render_listeners(srv, out);
    render_process(srv, out);
    if (srv->app->render_metrics)
        srv->app->render_metrics(srv, out);
}
