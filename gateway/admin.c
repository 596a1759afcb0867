/* gateway/admin.c - the operators' listener (--admin-listen, default 127.0.0.1:9090; never the
 * public port): GET /healthz (200 while the loop turns; it does not depend on Redis, so a Redis
 * blip restarts no pod), GET /readyz (200 only when the broker is up, the node is not draining
 * and is below its connection cap; else 503 saying which condition failed), GET /metrics
 * (Prometheus text). One request per connection, answered and closed; requests are parsed by
 * the same HTTP parser as the public port, with the same framing checks (Host, no body).
 * Bounded like the public port: the request must be complete within --handshake-timeout (408),
 * the answer written within as long again, and at most --admin-max-connections are served at
 * once (beyond: 503 at once), so silent connections can neither pile up nor take the process's
 * descriptors. Refusals are counted (chat_admin_refused_total) and logged, once a second at most.
 *
 * Also the accept guard of both listeners (gw__admin_guard_accept, ops.h): libuv 1.44 meets an
 * accept() failing with EMFILE by closing its own spare descriptor and closing every pending
 * connection, without telling anyone. The guard keeps the process off that path: a connection
 * that takes the last descriptor (on the public listener: one of the last
 * --admin-max-connections + GW_FD_RESERVE, so the admin listener keeps working) is answered 503
 * and closed, counted (chat_accept_errors_total) and logged. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "core.h"
#include "envelope.h"
#include "err.h"
#include "log.h"

#define ADMIN_MAX_HEAD 4096
#define LOG_GATE_MS    1000 /* at most one record a second per gate */
#define FEW_FDS        64   /* fewer descriptors than this for connections: a warning at start */

static const char *const listener_name[GW_LISTENER_N] = {"public", "admin"};
static const char *const accept_error_name[GW_ACCEPT_N] = {"fd_limit", "emfile", "enfile", "other"};
static const char *const refusal_name[GW_ADMIN_REFUSED_N] = {"max_connections", "timeout",
                                                             "bad_request"};

typedef struct admin_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the request's deadline, then the answer's */
    uv_write_t wr;
    gw_server_t *srv;
    chat_list_t link; /* srv->admin.conns, until closing */
    int handles;      /* open handles (tcp, timer): freed after the last close callback */
    int answered, closing;
    gw_http_req_t req;
    chat_buf_t out;
    char rbuf[1024];
} admin_conn_t;

/* A connection refused as it is accepted: answered if the socket takes it at once, then closed
 * in the same loop turn. */
typedef struct refused_conn {
    uv_tcp_t tcp;
    gw_server_t *srv;
} refused_conn_t;

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

/* Descriptors the public listener leaves to the admin listener and the broker. */
static uint64_t public_reserve(const gw_server_t *srv)
{
    return GW_FD_RESERVE + (srv->cfg->admin_listen[0] ? srv->cfg->admin_max_connections : 0);
}

/* ---- rate-limited records ---- */

static void log_refusal(gw_server_t *srv, gw_admin_refusal_t why, uint64_t n)
{
    CHAT_LOG(CHAT_LOG_WARN, "admin connection refused", CHAT_KV_C("reason", refusal_name[why]),
             CHAT_KV_N("count", n), CHAT_KV_N("max_connections", srv->cfg->admin_max_connections));
}

static void log_accept(gw_server_t *srv, gw_listener_kind_t which, gw_accept_error_t why,
                       uint64_t n)
{
    if (why == GW_ACCEPT_FD_LIMIT)
        CHAT_LOG(
            CHAT_LOG_WARN, "connection refused: no file descriptor left",
            CHAT_KV_C("listener", listener_name[which]), CHAT_KV_N("count", n),
            CHAT_KV_N("limit", srv->admin.nofile == UINT64_MAX ? -1 : (int64_t)srv->admin.nofile),
            CHAT_KV_N("reserved", which == GW_LISTENER_PUBLIC ? public_reserve(srv) : 0));
    else
        CHAT_LOG(CHAT_LOG_WARN, "accept failed", CHAT_KV_C("listener", listener_name[which]),
                 CHAT_KV_C("reason", accept_error_name[why]), CHAT_KV_N("count", n));
}

static void on_log_flush(uv_timer_t *t);

/* 1 when g's record may be written now (or `force`): *count is the events since the last
 * record. Otherwise arms the flush timer, which writes it when g's second is over. */
static int gate_open(gw_server_t *srv, gw_log_gate_t *g, int force, uint64_t *count)
{
    uint64_t now = uv_now(srv->loop);
    if (!force && g->logged && now - g->last_ms < LOG_GATE_MS) {
        if (!uv_is_active((uv_handle_t *)&srv->admin.log_flush))
            uv_timer_start(&srv->admin.log_flush, on_log_flush, g->last_ms + LOG_GATE_MS - now, 0);
        return 0;
    }
    *count = g->pending;
    g->pending = 0;
    g->last_ms = now;
    g->logged = 1;
    return 1;
}

/* Counts one event; 1 when its record may be written now (see gate_open). */
static int gate_pass(gw_server_t *srv, gw_log_gate_t *g, uint64_t *count)
{
    g->pending++;
    return gate_open(srv, g, 0, count);
}

/* Writes the records the gates held back: those whose second is over, or all of them. */
static void flush_gates(gw_server_t *srv, int force)
{
    gw_admin_t *ad = &srv->admin;
    uint64_t n;
    for (size_t i = 0; i < GW_ADMIN_REFUSED_N; i++)
        if (ad->refused_log[i].pending && gate_open(srv, &ad->refused_log[i], force, &n))
            log_refusal(srv, (gw_admin_refusal_t)i, n);
    for (size_t l = 0; l < GW_LISTENER_N; l++)
        for (size_t i = 0; i < GW_ACCEPT_N; i++)
            if (ad->accept_log[l][i].pending && gate_open(srv, &ad->accept_log[l][i], force, &n))
                log_accept(srv, (gw_listener_kind_t)l, (gw_accept_error_t)i, n);
}

static void on_log_flush(uv_timer_t *t)
{
    flush_gates(t->data, 0);
}

static void note_refusal(gw_server_t *srv, gw_admin_refusal_t why)
{
    uint64_t n;
    srv->stats.admin_refused[why]++;
    if (gate_pass(srv, &srv->admin.refused_log[why], &n))
        log_refusal(srv, why, n);
}

/* ---- the accept guard ---- */

/* The soft RLIMIT_NOFILE (UINT64_MAX: none). Read at every accept (one cheap system call), so
 * that a limit changed while the node runs (prlimit) counts at once. */
static uint64_t nofile_limit(gw_server_t *srv)
{
    struct rlimit rl;
    srv->admin.nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                            ? (uint64_t)rl.rlim_cur
                            : UINT64_MAX;
    return srv->admin.nofile;
}

/* The lowest free descriptor, the one the next accept() gets (POSIX: always the lowest), found
 * by duplicating `any` (an open descriptor); -1 when none is left. Takes the spare back when it
 * was given up and two descriptors are free. */
static int lowest_free_fd(gw_admin_t *ad, int any)
{
    int fd = fcntl(any, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return errno == EMFILE ? -1 : 0; /* another error says nothing about the count */
    if (ad->spare_fd < 0) {
        int next = fcntl(any, F_DUPFD_CLOEXEC, 0);
        if (next >= 0) {
            ad->spare_fd = fd;
            fd = next;
        }
    }
    close(fd);
    return fd;
}

static void on_refused_closed(uv_handle_t *h)
{
    refused_conn_t *x = h->data;
    gw_server_t *srv = x->srv;
    free(x);
    gw__server_release(srv);
}

/* Takes the connection waiting in `listener`, writes the refusal if the socket takes it at once
 * (a few hundred bytes into an empty send buffer), reads what the client already sent (so that
 * the close does not answer it with a RST that could destroy the refusal) and closes it. */
static void refuse_at_accept(gw_server_t *srv, uv_stream_t *listener, int status, const char *error,
                             const char *message)
{
    refused_conn_t *x = chat_xmalloc(sizeof(*x));
    x->srv = srv;
    uv_tcp_init(srv->loop, &x->tcp);
    x->tcp.data = x;
    gw__server_hold(srv);
    if (uv_accept(listener, (uv_stream_t *)&x->tcp) == 0) {
        chat_buf_t out = CHAT_BUF_INIT;
        uv_os_fd_t fd;
        char sink[4096];
        gw_http_build_refusal(&out, status, error, message);
        uv_buf_t b = uv_buf_init(out.p, (unsigned)out.len);
        (void)uv_try_write((uv_stream_t *)&x->tcp, &b, 1);
        chat_buf_free(&out);
        if (uv_fileno((uv_handle_t *)&x->tcp, &fd) == 0)
            for (int i = 0; i < 4 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
                ;
    }
    uv_close((uv_handle_t *)&x->tcp, on_refused_closed);
}

static void accept_failed(gw_server_t *srv, gw_listener_kind_t which, int status)
{
    gw_admin_t *ad = &srv->admin;
    gw_accept_error_t why = status == UV_EMFILE   ? GW_ACCEPT_EMFILE
                            : status == UV_ENFILE ? GW_ACCEPT_ENFILE
                                                  : GW_ACCEPT_OTHER;
    uint64_t n;
    srv->stats.accept_errors[which][why]++;
    if (why != GW_ACCEPT_OTHER && ad->spare_fd >= 0) {
        /* libuv calls accept() again as soon as this returns: let it succeed (the guard then
         * refuses that connection) instead of failing again in a tight loop */
        close(ad->spare_fd);
        ad->spare_fd = -1;
    }
    if (gate_pass(srv, &ad->accept_log[which][why], &n))
        log_accept(srv, which, why, n);
}

int gw__admin_guard_accept(gw_server_t *srv, uv_stream_t *listener, gw_listener_kind_t which,
                           int status)
{
    gw_admin_t *ad = &srv->admin;
    uv_os_fd_t lfd;
    uint64_t n;
    if (status != 0) {
        accept_failed(srv, which, status);
        return 0;
    }
    if (uv_fileno((uv_handle_t *)listener, &lfd) != 0)
        return 1;
    int fd = lowest_free_fd(ad, lfd);
    uint64_t limit = nofile_limit(srv);
    uint64_t keep = which == GW_LISTENER_PUBLIC ? public_reserve(srv) : 0;
    if (fd >= 0 && (limit == UINT64_MAX || (uint64_t)fd + keep < limit))
        return 1;
    refuse_at_accept(srv, listener, 503, "unavailable",
                     "no file descriptor left on this node, retry later");
    srv->stats.accept_errors[which][GW_ACCEPT_FD_LIMIT]++;
    if (gate_pass(srv, &ad->accept_log[which][GW_ACCEPT_FD_LIMIT], &n))
        log_accept(srv, which, GW_ACCEPT_FD_LIMIT, n);
    return 0;
}

/* ---- admin connections ---- */

static void on_conn_handle_closed(uv_handle_t *h)
{
    admin_conn_t *a = h->data;
    if (--a->handles > 0)
        return;
    gw_server_t *srv = a->srv;
    gw_http_req_dispose(&a->req);
    chat_buf_free(&a->out);
    free(a);
    gw__server_release(srv);
}

static void close_conn(admin_conn_t *a)
{
    if (a->closing)
        return;
    a->closing = 1;
    chat_list_unlink(&a->link);
    a->srv->admin.nconns--;
    uv_close((uv_handle_t *)&a->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&a->tcp, on_conn_handle_closed);
}

static void on_written(uv_write_t *w, int status)
{
    close_conn(w->data);
}

static void on_deadline(uv_timer_t *t);

/* Writes a->out and closes; the answer gets --handshake-timeout to leave. */
static void send_out(admin_conn_t *a)
{
    a->answered = 1;
    uv_read_stop((uv_stream_t *)&a->tcp);
    uv_timer_start(&a->timer, on_deadline, a->srv->cfg->handshake_timeout_ms, 0);
    uv_buf_t b = uv_buf_init(a->out.p, (unsigned)a->out.len);
    a->wr.data = a;
    if (uv_write(&a->wr, (uv_stream_t *)&a->tcp, &b, 1, on_written) != 0)
        close_conn(a);
}

static void answer(admin_conn_t *a, int status, const char *type, chat_str_t body)
{
    chat_buf_appendf(&a->out,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, status == 200 ? "OK" : "Service Unavailable", type, body.len);
    chat_buf_append_str(&a->out, body);
    send_out(a);
}

/* A refusal as the public port words it: JSON body, Connection: close. */
static void refuse(admin_conn_t *a, int status, const char *error, const char *message)
{
    gw_http_build_refusal(&a->out, status, error, message);
    send_out(a);
}

static void on_deadline(uv_timer_t *t)
{
    admin_conn_t *a = t->data;
    if (a->answered) { /* the answer did not leave in time: the client does not read */
        close_conn(a);
        return;
    }
    note_refusal(a->srv, GW_ADMIN_REFUSED_TIMEOUT);
    refuse(a, 408, "timeout", "the request took too long");
}

static void route(admin_conn_t *a)
{
    chat_buf_t body = CHAT_BUF_INIT;
    chat_str_t path = a->req.path;
    if (!chat_str_eq(a->req.method, CHAT_LIT("GET"))) {
        refuse(a, 405, "method_not_allowed", "only GET");
    } else if (chat_str_eq(path, CHAT_LIT("/healthz"))) {
        chat_env_build_health(&body);
        answer(a, 200, "application/json", chat_buf_str(&body));
    } else if (chat_str_eq(path, CHAT_LIT("/readyz"))) {
        const char *failed[3];
        size_t n;
        int ready = gw__admin_ready(a->srv, failed, &n);
        chat_env_build_readiness(&body, ready, failed, n);
        answer(a, ready ? 200 : 503, "application/json", chat_buf_str(&body));
    } else if (chat_str_eq(path, CHAT_LIT("/metrics"))) {
        gw__metrics_render(a->srv, &body);
        answer(a, 200, "text/plain; version=0.0.4; charset=utf-8", chat_buf_str(&body));
    } else {
        refuse(a, 404, "not_found", "try /healthz, /readyz or /metrics");
    }
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
    const char *why;
    if (a->answered || a->closing)
        return;
    if (nread < 0) { /* gone before asking */
        close_conn(a);
        return;
    }
    int rc = gw_http_req_feed(&a->req, buf->base, (size_t)nread);
    if (rc == 0)
        return;
    if (rc > 0 && gw_http_req_check_framing(&a->req, &why) == 0) {
        route(a);
        return;
    }
    note_refusal(a->srv, GW_ADMIN_REFUSED_BAD_REQUEST);
    if (rc > 0)
        refuse(a, 400, "bad_request", why);
    else if (rc == CHAT_ETOOLARGE)
        refuse(a, 431, "header_too_large", "the request head is too large");
    else
        refuse(a, 400, "bad_request", "malformed HTTP request");
}

static void on_connection(uv_stream_t *l, int status)
{
    gw_server_t *srv = l->data;
    if (!gw__admin_guard_accept(srv, l, GW_LISTENER_ADMIN, status))
        return;
    if (srv->admin.nconns >= srv->cfg->admin_max_connections) {
        refuse_at_accept(srv, l, 503, "unavailable", "too many admin connections, retry later");
        note_refusal(srv, GW_ADMIN_REFUSED_MAX_CONNECTIONS);
        return;
    }
    admin_conn_t *a = chat_xcalloc(1, sizeof(*a));
    a->srv = srv;
    gw__server_hold(srv);
    uv_tcp_init(srv->loop, &a->tcp);
    uv_timer_init(srv->loop, &a->timer);
    a->tcp.data = a->timer.data = a;
    a->handles = 2;
    chat_list_insert_tail(&srv->admin.conns, &a->link);
    srv->admin.nconns++;
    gw_http_req_init(&a->req, ADMIN_MAX_HEAD);
    if (uv_accept(l, (uv_stream_t *)&a->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&a->tcp, on_alloc, on_read) != 0) {
        close_conn(a);
        return;
    }
    uv_timer_start(&a->timer, on_deadline, srv->cfg->handshake_timeout_ms, 0);
}

/* ---- the listener ---- */

void gw__admin_init(gw_server_t *srv)
{
    chat_list_init(&srv->admin.conns);
    srv->admin.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uv_timer_init(srv->loop, &srv->admin.log_flush);
    srv->admin.log_flush.data = srv;
    srv->admin.log_flush_open = 1;
}

/* A warning when RLIMIT_NOFILE leaves few descriptors for connections (or fewer than
 * --max-connections): at the limit, connections get 503 (docs/limits.md). */
static void check_descriptors(gw_server_t *srv)
{
    uv_os_fd_t lfd;
    uint64_t limit = nofile_limit(srv);
    if (limit == UINT64_MAX || uv_fileno((uv_handle_t *)&srv->listener, &lfd) != 0)
        return;
    int fd = lowest_free_fd(&srv->admin, lfd);
    uint64_t used = fd < 0 ? limit : (uint64_t)fd, keep = public_reserve(srv);
    uint64_t room = used + keep < limit ? limit - used - keep : 0;
    if (room < FEW_FDS || (srv->cfg->max_connections && room < srv->cfg->max_connections))
        CHAT_LOG(CHAT_LOG_WARN, "few file descriptors for connections (raise ulimit -n)",
                 CHAT_KV_N("limit", limit), CHAT_KV_N("connections", room),
                 CHAT_KV_N("max_connections", srv->cfg->max_connections));
}

int gw__admin_open(gw_server_t *srv)
{
    int rc;
    check_descriptors(srv);
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
    chat_list_t *pos, *tmp;
    chat_list_foreach_safe(pos, tmp, &srv->admin.conns)
    {
        close_conn(chat_container_of(pos, admin_conn_t, link));
    }
    if (srv->admin.spare_fd >= 0) {
        close(srv->admin.spare_fd);
        srv->admin.spare_fd = -1;
    }
    if (srv->admin.log_flush_open) {
        srv->admin.log_flush_open = 0;
        flush_gates(srv, 1); /* what was held back, before the node stops */
        gw__server_close_handle(srv, (uv_handle_t *)&srv->admin.log_flush);
    }
    if (!srv->admin.open)
        return;
    srv->admin.open = 0;
    gw__server_close_handle(srv, (uv_handle_t *)&srv->admin.listener);
}
