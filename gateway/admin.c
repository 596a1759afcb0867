/* gateway/admin.c - the operators' listener (--admin-listen, default 127.0.0.1:9090; never the
 * public port): GET /healthz (200 while the loop turns; it does not depend on Redis, so a Redis
 * blip restarts no pod), GET /readyz (200 only when the broker is up, the node is not draining
 * and is below its connection cap; else 503 saying which condition failed), GET /metrics
 * (Prometheus text). One request per connection, answered and closed; requests are parsed by
 * the same HTTP parser as the public port. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "envelope.h"
#include "core.h"
#include "log.h"

#define ADMIN_MAX_HEAD 4096

typedef struct admin_conn {
    uv_tcp_t tcp;
    uv_write_t wr;
    gw_server_t *srv;
    gw_http_req_t req;
    chat_buf_t out;
    int answered;
    char rbuf[1024];
} admin_conn_t;

int gw__admin_ready(const gw_server_t *srv, const char **failed, size_t *nfailed)
{
    size_t n = 0;
    if (!broker_is_up(srv->broker))
        failed[n++] = "broker";
    if (srv->draining || srv->stopping)
        failed[n++] = "draining";
    if (srv->cfg->max_connections && srv->nopen >= srv->cfg->max_connections)
        failed[n++] = "capacity";
    *nfailed = n;
    return n == 0;
}

static void on_conn_closed(uv_handle_t *h)
{
    admin_conn_t *a = h->data;
    gw_http_req_dispose(&a->req);
    chat_buf_free(&a->out);
    free(a);
}

static void on_written(uv_write_t *w, int status)
{
    admin_conn_t *a = w->data;
    uv_close((uv_handle_t *)&a->tcp, on_conn_closed);
}

static void respond(admin_conn_t *a, int status, const char *type, chat_str_t body)
{
    static const char *const phrase[] = {[200] = "OK", [400] = "Bad Request", [404] = "Not Found",
                                         [405] = "Method Not Allowed", [503] =
                                                                          "Service Unavailable"};
    chat_buf_appendf(&a->out,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, phrase[status] ? phrase[status] : "Error", type, body.len);
    chat_buf_append_str(&a->out, body);
    a->answered = 1;
    uv_read_stop((uv_stream_t *)&a->tcp);
    uv_buf_t b = uv_buf_init(a->out.p, (unsigned)a->out.len);
    a->wr.data = a;
    if (uv_write(&a->wr, (uv_stream_t *)&a->tcp, &b, 1, on_written) != 0)
        uv_close((uv_handle_t *)&a->tcp, on_conn_closed);
}

static void route(admin_conn_t *a)
{
    chat_buf_t body = CHAT_BUF_INIT;
    int status = 200;
    const char *type = "application/json";
    chat_str_t path = a->req.path;
    if (!chat_str_eq(a->req.method, CHAT_LIT("GET"))) {
        status = 405;
        chat_env_build_refusal(&body, "method_not_allowed", "only GET");
    } else if (chat_str_eq(path, CHAT_LIT("/healthz"))) {
        chat_env_build_health(&body);
    } else if (chat_str_eq(path, CHAT_LIT("/readyz"))) {
        const char *failed[3];
        size_t n;
        int ready = gw__admin_ready(a->srv, failed, &n);
        status = ready ? 200 : 503;
        chat_env_build_readiness(&body, ready, failed, n);
    } else if (chat_str_eq(path, CHAT_LIT("/metrics"))) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        gw__metrics_render(a->srv, &body);
    } else {
        status = 404;
        chat_env_build_refusal(&body, "not_found", "try /healthz, /readyz or /metrics");
    }
    respond(a, status, type, chat_buf_str(&body));
    chat_buf_free(&body);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    admin_conn_t *a = h->data;
    *buf = uv_buf_init(a->rbuf, sizeof(a->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    admin_conn_t *a = s->data;
    if (a->answered)
        return;
    if (nread < 0) {
        uv_close((uv_handle_t *)&a->tcp, on_conn_closed);
        return;
    }
    int rc = gw_http_req_feed(&a->req, buf->base, (size_t)nread);
    if (rc > 0) {
        route(a);
    } else if (rc < 0) {
        chat_buf_t body = CHAT_BUF_INIT;
        chat_env_build_refusal(&body, "bad_request", "malformed HTTP request");
        respond(a, 400, "application/json", chat_buf_str(&body));
        chat_buf_free(&body);
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    gw_server_t *srv = l->data;
    if (status != 0)
        return;
    admin_conn_t *a = chat_xcalloc(1, sizeof(*a));
    a->srv = srv;
    uv_tcp_init(srv->loop, &a->tcp);
    a->tcp.data = a;
    gw_http_req_init(&a->req, ADMIN_MAX_HEAD);
    if (uv_accept(l, (uv_stream_t *)&a->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&a->tcp, on_alloc, on_read) != 0)
        uv_close((uv_handle_t *)&a->tcp, on_conn_closed);
}

int gw__admin_open(gw_server_t *srv)
{
    int rc;
    if (srv->cfg->admin_listen[0] == '\0')
        return 0;
    uv_tcp_init(srv->loop, &srv->admin.listener);
    srv->admin.listener.data = srv;
    srv->admin.open = 1;
    if ((rc = uv_tcp_bind(&srv->admin.listener, (const struct sockaddr *)&srv->cfg->admin_addr,
                          0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&srv->admin.listener, 128, on_connection)) != 0)
        return rc;
    return 0;
}

void gw__admin_close(gw_server_t *srv)
{
    if (!srv->admin.open)
        return;
    srv->admin.open = 0;
    gw__server_close_handle(srv, (uv_handle_t *)&srv->admin.listener);
}
