/* tests/support/test_loop.h - what an in-process test of the core needs around a libuv loop,
 * in the style of libuv's own tests (test/task.h): run the loop until a condition holds (or a
 * count reaches n) or a deadline passes (every run is bounded in time), close every handle and
 * assert uv_loop_close() == 0 at the end; a loopback TCP client on the same loop (connect, write,
 * read into a buffer, stop reading, a tiny SO_RCVBUF; close a set of them); the bytes a WebSocket
 * client sends (the upgrade request, masked frames) and a parser for what a server sends back; a
 * gw_config_t with the defaults and a listener on 127.0.0.1:0, and the port the server got.
 * Assertions are cmocka's: call these from a test body, never from inside a libuv callback. */
#ifndef CHAT_TESTS_TEST_LOOP_H
#define CHAT_TESTS_TEST_LOOP_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "config.h"

typedef struct gw_server gw_server_t;

/* ---- the loop ---------------------------------------------------------------------------- */

typedef struct test_loop {
    uv_loop_t loop;
    uv_timer_t guard; /* wakes the loop at the deadline of a run; stopped between runs */
    int expired;
} test_loop_t;

/* uv_loop_init and the guard timer (asserted). */
void test_loop_init(test_loop_t *tl);
/* Runs loop turns until pred(ctx) != 0 (checked before every turn) or timeout_ms have passed.
 * Returns 1 when pred held, 0 at the deadline. */
int test_loop_run_until(test_loop_t *tl, int (*pred)(void *ctx), void *ctx, uint64_t timeout_ms);
/* Runs loop turns until count(ctx) >= n (checked before every turn) or timeout_ms have passed.
 * Returns 1 when the count was reached, 0 at the deadline. */
int test_loop_run_until_count(test_loop_t *tl, uint64_t (*count)(void *ctx), void *ctx,
                              uint64_t n, uint64_t timeout_ms);
/* Runs the loop for ms, whatever happens meanwhile. */
void test_loop_run_for(test_loop_t *tl, uint64_t ms);
/* Handles on the loop other than the guard (closing ones included): 0 once everything that
 * was opened has been closed and its close callback ran. */
size_t test_loop_handles(test_loop_t *tl);
/* Runs the loop until every handle but the guard has been closed by its owner (asserted, 2 s):
 * nothing is closed here, so what a component left open is seen. */
void test_loop_wait_empty(test_loop_t *tl);
/* libuv's MAKE_VALGRIND_HAPPY: closes every handle not closing yet (uv_walk), runs until their
 * close callbacks ran (bounded: 2 s) and asserts uv_loop_close() == 0. */
void test_loop_close(test_loop_t *tl);

/* ---- a loopback TCP client on the same loop ---------------------------------------------- */

typedef struct test_client {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    test_loop_t *tl;
    chat_buf_t in; /* every byte read so far (owned; freed by test_client_free) */
    int connected; /* 1 once connected, < 0: the connect failed */
    int read_err;  /* 0 while reading may go on; UV_EOF, UV_ECONNRESET... once it ended */
    int reading;   /* uv_read_start is in effect */
    int read_on_connect;
    size_t writes, writes_done; /* uv_write requests issued and completed */
    int write_err;              /* the first failed write's status */
    int open;                   /* the handle was initialised and not closed yet */
    int closed;                 /* its close callback ran */
    char rbuf[65536];
} test_client_t;

/* Opens the socket (rcvbuf > 0: SO_RCVBUF set before connecting, so the advertised window is
 * small from the start). Asserted. */
void test_client_init(test_client_t *c, test_loop_t *tl, int rcvbuf);
/* Starts connecting to addr; reading starts on connect when read is not 0. Asserted. */
void test_client_connect(test_client_t *c, const struct sockaddr *addr, int read);
/* init + connect to 127.0.0.1:port, then runs the loop until connected (asserted, 2 s). */
void test_client_open(test_client_t *c, test_loop_t *tl, int port, int rcvbuf, int read);
/* Copies p[0..n) and writes it. Asserted. */
void test_client_write(test_client_t *c, const void *p, size_t n);
static inline void test_client_write_buf(test_client_t *c, const chat_buf_t *b)
{
    test_client_write(c, b->p, b->len);
}
void test_client_read_start(test_client_t *c);
void test_client_read_stop(test_client_t *c);
/* Reads what the socket holds right now with recv(2), bypassing libuv (reading must be stopped),
 * into c->in; sets c->read_err to UV_EOF or the error once the stream ended. Returns read_err
 * (0: the stream goes on). Use it to tell a reset from an orderly close: libuv reports a reset
 * that arrives behind unread bytes as UV_EOF (POLLHUP after a partial read), the kernel as
 * ECONNRESET once those bytes are read. */
int test_client_read_raw(test_client_t *c);
/* Shuts the write side down (the peer reads EOF); reading goes on. */
void test_client_shutdown(test_client_t *c);
/* Closes the handle (idempotent); c->closed once its callback ran. */
void test_client_close(test_client_t *c);
/* Frees c->in (after the close callback ran). */
void test_client_free(test_client_t *c);
/* test_client_close on c[0..n), then runs the loop until every close callback ran (asserted,
 * 2 s). */
void test_clients_close(test_client_t *c, size_t n);
/* test_client_free on c[0..n). */
void test_clients_free(test_client_t *c, size_t n);
/* Predicates for test_loop_run_until (ctx: the client). */
int test_client_is_connected(void *c);
int test_client_read_ended(void *c); /* EOF or an error */
int test_client_is_closed(void *c);

/* ---- WebSocket bytes ------------------------------------------------------------------- */

enum { TEST_WS_TEXT = 0x1, TEST_WS_BINARY = 0x2, TEST_WS_CLOSE = 0x8, TEST_WS_PING = 0x9 };

/* Appends a valid upgrade request for path ("/ws", "/chat/room"). */
void test_ws_upgrade_request(chat_buf_t *out, const char *path);
/* Appends one client frame (FIN set, masked with a fixed key). */
void test_ws_frame(chat_buf_t *out, int opcode, const void *p, size_t n);
/* Appends a masked text frame holding the NUL-terminated string s. */
void test_ws_text(chat_buf_t *out, const char *s);

/* One server frame as read back (payload points into the bytes parsed). */
typedef struct test_ws_frame {
    int opcode;
    const char *payload;
    size_t len;
} test_ws_frame_t;

#define TEST_WS_MAX_FRAMES 256

/* What a client read: the HTTP head, then the frames that followed it. */
typedef struct test_ws_stream {
    int status;      /* the HTTP status, 0 when the head is not complete */
    size_t head_len; /* bytes of the HTTP head */
    size_t nframes;  /* complete frames after the head (at most TEST_WS_MAX_FRAMES) */
    test_ws_frame_t frames[TEST_WS_MAX_FRAMES];
    size_t partial; /* bytes of an incomplete last frame */
    int close_code; /* the first close frame's code (0: none; 1005: no code) */
    char close_reason[124];
} test_ws_stream_t;

/* Writes the upgrade request for path and runs the loop until the answer's head arrived (2 s; the
 * client must be reading). Returns the HTTP status, 0 when none came. */
int test_ws_handshake(test_client_t *c, const char *path);
/* Writes one masked text frame holding s. */
void test_ws_send_text(test_client_t *c, const char *s);
/* Predicates on a client (ctx): the HTTP head arrived; a close frame arrived. Both are also true
 * once reading ended. */
int test_ws_got_head(void *c);
int test_ws_got_close(void *c);

/* Parses p[0..n) as a server's answer. p must stay valid while frames are used. */
void test_ws_parse(const char *p, size_t n, test_ws_stream_t *out);
/* Text frames whose payload contains needle. */
size_t test_ws_count_text(const test_ws_stream_t *st, const char *needle);

/* ---- a gateway configuration and its server ---------------------------------------------- */

/* gw_config_load with an empty environment and "--listen 127.0.0.1:0 --admin-listen ''
 * --node-id t --drain-delay 0 --drain-timeout 2s", then extra (a NULL-terminated list of
 * arguments, may be NULL) which may override them. Asserts GW_CONFIG_OK. Dispose with
 * gw_config_dispose(). */
void test_config_load(gw_config_t *cfg, const char *const *extra);
/* gw_server_stop(srv) and runs the loop until its on_stopped ran (asserted, 3 s); srv is freed. */
void test_server_stop(test_loop_t *tl, gw_server_t *srv);
/* The port srv's public listener is bound to (uv_tcp_getsockname). Asserted. */
int test_server_port(gw_server_t *srv);

#endif
