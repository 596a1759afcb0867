/* tests/support/test_loop.c - see test_loop.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

#include "test_loop.h"

#include "core.h"
#include "server.h"

/* ---- the loop ---------------------------------------------------------------------------- */

static void on_guard(uv_timer_t *t)
{
    test_loop_t *tl = chat_container_of(t, test_loop_t, guard);
    tl->expired = 1;
}

void test_loop_init(test_loop_t *tl)
{
    memset(tl, 0, sizeof(*tl));
    assert_int_equal(uv_loop_init(&tl->loop), 0);
    assert_int_equal(uv_timer_init(&tl->loop, &tl->guard), 0);
}

int test_loop_run_until(test_loop_t *tl, int (*pred)(void *ctx), void *ctx, uint64_t timeout_ms)
{
    int held = 0;
    tl->expired = 0;
    uv_update_time(&tl->loop);
    /* ref'd while it runs: the loop is alive (and wakes up) until the deadline at the latest */
    assert_int_equal(uv_timer_start(&tl->guard, on_guard, timeout_ms, 0), 0);
    while (!(held = pred != NULL && pred(ctx)) && !tl->expired)
        uv_run(&tl->loop, UV_RUN_ONCE);
    uv_timer_stop(&tl->guard);
    return held;
}

typedef struct want_count {
    uint64_t (*count)(void *ctx);
    void *ctx;
    uint64_t n;
} want_count_t;

static int count_reached(void *ctx)
{
    want_count_t *w = ctx;
    return w->count(w->ctx) >= w->n;
}

int test_loop_run_until_count(test_loop_t *tl, uint64_t (*count)(void *ctx), void *ctx,
                              uint64_t n, uint64_t timeout_ms)
{
    want_count_t w = {count, ctx, n};
    return test_loop_run_until(tl, count_reached, &w, timeout_ms);
}

void test_loop_run_for(test_loop_t *tl, uint64_t ms)
{
    test_loop_run_until(tl, NULL, NULL, ms);
}

static void count_handle(uv_handle_t *h, void *arg)
{
    size_t *n = arg;
    (*n)++;
}

size_t test_loop_handles(test_loop_t *tl)
{
    size_t n = 0;
    uv_walk(&tl->loop, count_handle, &n);
    return n - (uv_is_closing((uv_handle_t *)&tl->guard) ? 0 : 1);
}

static int no_handles(void *ctx)
{
    return test_loop_handles(ctx) == 0;
}

static void close_handle(uv_handle_t *h, void *arg)
{
    test_loop_t *tl = arg;
    if (h != (uv_handle_t *)&tl->guard && !uv_is_closing(h))
        uv_close(h, NULL);
}

void test_loop_wait_empty(test_loop_t *tl)
{
    assert_true(test_loop_run_until(tl, no_handles, tl, 2000));
}

void test_loop_close(test_loop_t *tl)
{
    uv_walk(&tl->loop, close_handle, tl);
    assert_true(test_loop_run_until(tl, no_handles, tl, 2000));
    uv_close((uv_handle_t *)&tl->guard, NULL);
    uv_run(&tl->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&tl->loop), 0);
}

/* ---- the client -------------------------------------------------------------------------- */

typedef struct wreq {
    uv_write_t req;
    test_client_t *c;
    char data[];
} wreq_t;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    test_client_t *c = chat_container_of((uv_tcp_t *)h, test_client_t, tcp);
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    test_client_t *c = chat_container_of((uv_tcp_t *)s, test_client_t, tcp);
    if (nread > 0) {
        chat_buf_append(&c->in, buf->base, (size_t)nread);
    } else if (nread < 0) {
        c->read_err = (int)nread;
        uv_read_stop(s);
        c->reading = 0;
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    test_client_t *c = chat_container_of(req, test_client_t, connect_req);
    c->connected = status == 0 ? 1 : status;
    if (status == 0 && c->read_on_connect)
        test_client_read_start(c);
}

void test_client_init(test_client_t *c, test_loop_t *tl, int rcvbuf)
{
    uv_os_fd_t fd;
    memset(c, 0, offsetof(test_client_t, rbuf));
    c->tl = tl;
    assert_int_equal(uv_tcp_init_ex(&tl->loop, &c->tcp, AF_INET), 0);
    c->open = 1;
    if (rcvbuf > 0) {
        assert_int_equal(uv_fileno((uv_handle_t *)&c->tcp, &fd), 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    }
}

void test_client_connect(test_client_t *c, const struct sockaddr *addr, int read)
{
    c->read_on_connect = read;
    assert_int_equal(uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connect), 0);
}

void test_client_open(test_client_t *c, test_loop_t *tl, int port, int rcvbuf, int read)
{
    struct sockaddr_in a;
    test_client_init(c, tl, rcvbuf);
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, &a), 0);
    test_client_connect(c, (const struct sockaddr *)&a, read);
    assert_true(test_loop_run_until(tl, test_client_is_connected, c, 2000));
    assert_int_equal(c->connected, 1);
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = chat_container_of(req, wreq_t, req);
    w->c->writes_done++;
    if (status != 0 && w->c->write_err == 0)
        w->c->write_err = status;
    free(w);
}

void test_client_write(test_client_t *c, const void *p, size_t n)
{
    wreq_t *w = malloc(sizeof(*w) + n);
    assert_non_null(w);
    w->c = c;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    c->writes++;
    assert_int_equal(uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write), 0);
}

void test_client_read_start(test_client_t *c)
{
    if (c->reading || c->read_err != 0)
        return;
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read), 0);
    c->reading = 1;
}

void test_client_read_stop(test_client_t *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

int test_client_read_raw(test_client_t *c)
{
    uv_os_fd_t fd;
    assert_false(c->reading);
    assert_int_equal(uv_fileno((uv_handle_t *)&c->tcp, &fd), 0);
    for (int i = 0; i < 100000 && c->read_err == 0; i++) {
        ssize_t n = recv(fd, c->rbuf, sizeof(c->rbuf), MSG_DONTWAIT);
        if (n > 0)
            chat_buf_append(&c->in, c->rbuf, (size_t)n);
        else if (n == 0)
            c->read_err = UV_EOF;
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        else if (errno != EINTR)
            c->read_err = -errno;
    }
    return c->read_err;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
}

void test_client_shutdown(test_client_t *c)
{
    assert_int_equal(uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown), 0);
}

static void on_closed(uv_handle_t *h)
{
    test_client_t *c = chat_container_of((uv_tcp_t *)h, test_client_t, tcp);
    c->closed = 1;
}

void test_client_close(test_client_t *c)
{
    if (!c->open)
        return;
    c->open = 0;
    c->reading = 0;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void test_client_free(test_client_t *c)
{
    chat_buf_free(&c->in);
}

typedef struct clients {
    test_client_t *c;
    size_t n;
} clients_t;

static int clients_closed(void *ctx)
{
    clients_t *w = ctx;
    for (size_t i = 0; i < w->n; i++)
        if (!w->c[i].closed)
            return 0;
    return 1;
}

void test_clients_close(test_client_t *c, size_t n)
{
    clients_t w = {c, n};
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        test_client_close(&c[i]);
    assert_true(test_loop_run_until(c[0].tl, clients_closed, &w, 2000));
}

void test_clients_free(test_client_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        test_client_free(&c[i]);
}

int test_client_is_connected(void *ctx)
{
    return ((test_client_t *)ctx)->connected != 0;
}

int test_client_read_ended(void *ctx)
{
    return ((test_client_t *)ctx)->read_err != 0;
}

int test_client_is_closed(void *ctx)
{
    return ((test_client_t *)ctx)->closed;
}

/* ---- WebSocket bytes ------------------------------------------------------------------- */

static const unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

void test_ws_upgrade_request(chat_buf_t *out, const char *path)
{
    chat_buf_appendf(out,
                     "GET %s HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n",
                     path);
}

void test_ws_frame(chat_buf_t *out, int opcode, const void *p, size_t n)
{
    unsigned char h[14];
    size_t hl = 0;
    h[hl++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[hl++] = (unsigned char)(0x80 | n);
    } else if (n <= 0xffff) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (unsigned char)(n >> 8);
        h[hl++] = (unsigned char)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    memcpy(h + hl, mask_key, 4);
    hl += 4;
    chat_buf_append(out, h, hl);
    chat_buf_reserve(out, n);
    for (size_t i = 0; i < n; i++)
        out->p[out->len + i] = (char)(((const unsigned char *)p)[i] ^ mask_key[i % 4]);
    out->len += n;
}

void test_ws_text(chat_buf_t *out, const char *s)
{
    test_ws_frame(out, TEST_WS_TEXT, s, strlen(s));
}

int test_ws_got_head(void *ctx)
{
    test_client_t *c = ctx;
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    return st.status != 0 || c->read_err != 0;
}

int test_ws_got_close(void *ctx)
{
    test_client_t *c = ctx;
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    return st.close_code != 0 || c->read_err != 0;
}

int test_ws_handshake(test_client_t *c, const char *path)
{
    chat_buf_t b = CHAT_BUF_INIT;
    test_ws_stream_t st;
    test_ws_upgrade_request(&b, path);
    test_client_write_buf(c, &b);
    chat_buf_free(&b);
    test_loop_run_until(c->tl, test_ws_got_head, c, 2000);
    test_ws_parse(c->in.p, c->in.len, &st);
    return st.status;
}

void test_ws_send_text(test_client_t *c, const char *s)
{
    chat_buf_t b = CHAT_BUF_INIT;
    test_ws_text(&b, s);
    test_client_write_buf(c, &b);
    chat_buf_free(&b);
}

/* One frame at p: its size, or 0 when incomplete. Unmasks in place is not needed: server
 * frames are not masked (a masked one is reported with its masked payload). */
static size_t parse_frame(const unsigned char *p, size_t n, test_ws_frame_t *f)
{
    size_t hl = 2;
    uint64_t len;
    if (n < 2)
        return 0;
    len = p[1] & 0x7f;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        hl = 10;
    }
    if (p[1] & 0x80)
        hl += 4;
    if (n < hl || n - hl < len)
        return 0;
    f->opcode = p[0] & 0x0f;
    f->payload = (const char *)p + hl;
    f->len = (size_t)len;
    return hl + (size_t)len;
}

void test_ws_parse(const char *p, size_t n, test_ws_stream_t *out)
{
    memset(out, 0, sizeof(*out));
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
            end = p + i + 4;
            break;
        }
    if (end == NULL || n < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        return;
    out->status = atoi(p + 9);
    out->head_len = (size_t)(end - p);
    if (out->status != 101)
        return;
    size_t off = out->head_len;
    while (off < n && out->nframes < TEST_WS_MAX_FRAMES) {
        test_ws_frame_t *f = &out->frames[out->nframes];
        size_t used = parse_frame((const unsigned char *)p + off, n - off, f);
        if (used == 0)
            break;
        off += used;
        out->nframes++;
        if (f->opcode == TEST_WS_CLOSE && out->close_code == 0) {
            const unsigned char *q = (const unsigned char *)f->payload;
            out->close_code = f->len >= 2 ? (q[0] << 8) | q[1] : 1005;
            size_t rl = f->len > 2 ? f->len - 2 : 0;
            if (rl >= sizeof(out->close_reason))
                rl = sizeof(out->close_reason) - 1;
            memcpy(out->close_reason, f->payload + 2, rl);
            out->close_reason[rl] = '\0';
        }
    }
    out->partial = n - off;
}

size_t test_ws_count_text(const test_ws_stream_t *st, const char *needle)
{
    size_t k = 0, nl = strlen(needle);
    for (size_t i = 0; i < st->nframes; i++) {
        const test_ws_frame_t *f = &st->frames[i];
        if (f->opcode != TEST_WS_TEXT || f->len < nl)
            continue;
        for (size_t j = 0; j + nl <= f->len; j++)
            if (memcmp(f->payload + j, needle, nl) == 0) {
                k++;
                break;
            }
    }
    return k;
}

/* ---- configuration and server ------------------------------------------------------------ */

#define MAX_ARGS 64

void test_config_load(gw_config_t *cfg, const char *const *extra)
{
    /* port 0: the kernel picks one (test_server_port); no admin listener; not the host name;
     * gw_server_stop closes open sessions at once; a room goes with its last member (a test
     * of the linger sets --room-linger again: the last value counts) */
    static const char *const defaults[] = {
        "--listen",      "127.0.0.1:0", "--admin-listen",  "",   "--node-id",     "t",
        "--drain-delay", "0",           "--drain-timeout", "2s", "--room-linger", "0",
        NULL,
    };
    char *argv[MAX_ARGS + 2];
    char *envp[1] = {NULL};
    int argc = 0;
    argv[argc++] = (char *)"chat-gateway";
    for (size_t i = 0; defaults[i] != NULL; i++)
        argv[argc++] = (char *)defaults[i];
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        assert_true(argc < MAX_ARGS);
        argv[argc++] = (char *)extra[i];
    }
    argv[argc] = NULL;
    assert_int_equal(gw_config_load(cfg, argc, argv, envp, stderr, stderr), GW_CONFIG_OK);
}

static void on_stopped(void *ctx)
{
    *(int *)ctx = 1;
}

static int flag_set(void *ctx)
{
    return *(int *)ctx;
}

void test_server_stop(test_loop_t *tl, gw_server_t *srv)
{
    int stopped = 0;
    gw_server_stop(srv, on_stopped, &stopped);
    assert_true(test_loop_run_until(tl, flag_set, &stopped, 3000));
}

int test_server_port(gw_server_t *srv)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    assert_int_equal(uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    assert_true(port > 0);
    return port;
}
