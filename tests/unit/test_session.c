/* tests/unit/test_session.c - the core's session close paths (gateway/session.c, server.c) with
 * a gw_server_t started in-process on a test loop and loopback clients on the same loop
 * (support/test_loop.h). The app is a small test app (core.h's gw_app_t) that counts its calls
 * and, per test, does one thing from inside on_message; two tests use the real gw_chat_app.
 * libuv's style: one behaviour per test, callback counters, runs bounded in time, assertions on
 * the counts, and every test ends with the server stopped, every handle closed and
 * uv_loop_close() == 0 (ASan's leak check covers the frees).
 * Covers: the handshake timeout (408, session freed), EOF during the handshake, the peer's EOF on
 * an open session, a close requested from inside on_message (carried out at the next safe point,
 * never during the call), two close requests (the first code stands), a send over
 * --send-queue-bytes (4002, on_close once), the close linger (a peer that never reads its close
 * is dropped after GW_CLOSE_LINGER_MS), gw__session_teardown of an open session (RST, no close
 * frame, no linger), and gw_server_stop (1001, on_stopped, nothing left on the loop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chat.h"
#include "core.h"
#include "log.h"
#include "server.h"
#include "test_loop.h"

#define MAX_CLIENTS 4

typedef enum action {
    ACT_NONE = 0,
    ACT_CLOSE,       /* gw__session_close(4001), then inspect s and try a send */
    ACT_CLOSE_TWICE, /* 4001 "first", then 1008 "second" */
    ACT_FLOOD,       /* four 2000-byte frames against a 4096-byte send queue */
    ACT_TEARDOWN,    /* queue 256 KiB, then gw__session_teardown */
} action_t;

typedef struct fixture {
    gw_config_t cfg; /* srv->cfg points here: the test app finds the fixture from it */
    test_loop_t tl;
    gw_server_t *srv;
    int port;
    uv_check_t check;
    uint64_t turns; /* loop iterations finished (the check phase ran) */
    test_client_t clients[MAX_CLIENTS];
    size_t nclients;
    const gw_app_t *app;
    action_t action;
    /* the test app's counters */
    size_t starts, stops, opens, messages, closes, stopped;
    int in_message;
    /* recorded inside on_message, right after the close request returned */
    size_t closes_at_return;
    int found_at_return, state_at_return, detached_at_return, linked_at_return, open_at_return;
    int send_after_request;
    const char *reason_at_return;
    size_t queued_before;
    int send_results[4];
    uint64_t turn_at_request, request_ms;
    /* recorded in on_close */
    int close_in_message;
    uint64_t turn_at_close;
} fixture_t;

static fixture_t *fix_of(const gw_server_t *srv)
{
    return chat_container_of(srv->cfg, fixture_t, cfg);
}

/* ---- the test app ------------------------------------------------------------------------ */

static int app_start(gw_server_t *srv)
{
    fixture_t *f = fix_of(srv);
    f->starts++;
    srv->app_state = f;
    return 0;
}

static void app_stop(gw_server_t *srv)
{
    fix_of(srv)->stops++;
    srv->app_state = NULL;
}

static void app_open(gw_session_t *s, const gw_upgrade_t *u)
{
    fixture_t *f = fix_of(s->srv);
    f->opens++;
}

static void send_frame(gw_session_t *s, size_t n, int *result)
{
    char *p = malloc(n);
    assert_non_null(p);
    memset(p, 'x', n);
    chat_rcbuf_t *fr = gw_ws_encode(0, p, n);
    int r = gw__session_send(s, fr, GW_OUT_MUST);
    if (result)
        *result = r;
    chat_rcbuf_release(fr);
    free(p);
}

/* What the core lets a caller see right after it asked for a close. */
static void record_after_request(fixture_t *f, gw_session_t *s)
{
    f->closes_at_return = f->closes;
    f->found_at_return = gw__session_find(s->srv, s->id) == s;
    f->state_at_return = (int)s->state;
    f->detached_at_return = s->detached;
    f->linked_at_return = chat_list_is_linked(&s->link);
    f->open_at_return = gw__session_is_open(s);
    f->reason_at_return = s->close_reason;
}

static void app_message(gw_session_t *s, int binary, const char *p, size_t n)
{
    fixture_t *f = fix_of(s->srv);
    f->messages++;
    f->in_message = 1;
    switch (f->action) {
    case ACT_NONE:
        break;
    case ACT_CLOSE:
        f->turn_at_request = f->turns;
        f->request_ms = uv_now(s->srv->loop);
        gw__session_close(s, GW_CLOSE_IDLE_TIMEOUT, "first");
        record_after_request(f, s);
        send_frame(s, 5, &f->send_after_request); /* s is still there to be asked */
        break;
    case ACT_CLOSE_TWICE:
        gw__session_close(s, GW_CLOSE_IDLE_TIMEOUT, "first");
        gw__session_close(s, GW_CLOSE_POLICY, "second");
        record_after_request(f, s);
        break;
    case ACT_FLOOD:
        f->queued_before = s->conn.queued_bytes;
        for (int i = 0; i < 4; i++)
            send_frame(s, 2000, &f->send_results[i]);
        record_after_request(f, s);
        break;
    case ACT_TEARDOWN:
        for (int i = 0; i < 4; i++)
            send_frame(s, 65536, NULL);
        gw__session_teardown(s);
        record_after_request(f, s);
        break;
    }
    f->in_message = 0;
}

static void app_close(gw_session_t *s)
{
    fixture_t *f = fix_of(s->srv);
    if (f->closes++ == 0) {
        f->close_in_message = f->in_message;
        f->turn_at_close = f->turns;
    }
}

static const gw_app_t test_app = {
    .on_start = app_start,
    .on_stop = app_stop,
    .on_open = app_open,
    .on_message = app_message,
    .on_close = app_close,
};

/* ---- fixture ----------------------------------------------------------------------------- */

static void on_check(uv_check_t *c)
{
    fixture_t *f = c->data;
    f->turns++;
}

static fixture_t *start(const gw_app_t *app, const char *const *extra)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_loop_init(&f->tl);
    test_config_load(&f->cfg, extra);
    f->app = app;
    assert_int_equal(gw_server_start(&f->srv, &f->tl.loop, &f->cfg, app), 0);
    f->port = test_server_port(f->srv);
    uv_check_init(&f->tl.loop, &f->check);
    f->check.data = f;
    uv_check_start(&f->check, on_check);
    uv_unref((uv_handle_t *)&f->check);
    return f;
}

static void on_stopped(void *ctx)
{
    fixture_t *f = ctx;
    f->stopped++;
    f->srv = NULL;
}

static int is_stopped(void *ctx)
{
    return ((fixture_t *)ctx)->stopped > 0;
}

/* Closes the clients, stops the server (unless the test did), and asserts that nothing is left
 * on the loop before test_loop_close() walks it: the server must have closed all it opened
 * (libuv's MAKE_VALGRIND_HAPPY, without closing anything for the server). */
static void finish(fixture_t *f)
{
    test_clients_close(f->clients, f->nclients);
    if (f->srv != NULL)
        gw_server_stop(f->srv, on_stopped, f);
    assert_true(test_loop_run_until(&f->tl, is_stopped, f, 3000));
    assert_int_equal(f->stopped, 1);
    if (f->app == &test_app) { /* the app's state came and went once */
        assert_int_equal(f->starts, 1);
        assert_int_equal(f->stops, 1);
    }
    uv_close((uv_handle_t *)&f->check, NULL);
    test_loop_wait_empty(&f->tl);
    test_loop_close(&f->tl);
    test_clients_free(f->clients, f->nclients);
    gw_config_dispose(&f->cfg);
    free(f);
}

/* ---- clients ----------------------------------------------------------------------------- */

static test_client_t *connect_client(fixture_t *f, int rcvbuf, int read)
{
    assert_true(f->nclients < MAX_CLIENTS);
    test_client_t *c = &f->clients[f->nclients++];
    test_client_open(c, &f->tl, f->port, rcvbuf, read);
    return c;
}

/* A client that sent its upgrade to path and got the 101 (reading). */
static test_client_t *open_ws(fixture_t *f, const char *path)
{
    test_client_t *c = connect_client(f, 0, 1);
    assert_int_equal(test_ws_handshake(c, path), 101);
    return c;
}

static int no_sessions(void *ctx)
{
    return ((fixture_t *)ctx)->srv->nsessions == 0;
}

static int one_session(void *ctx)
{
    return ((fixture_t *)ctx)->srv->nsessions == 1;
}

static int one_close(void *ctx)
{
    return ((fixture_t *)ctx)->closes > 0;
}

/* The client closes its socket; the server sees EOF and frees the session (well within the
 * close linger). */
static void client_leaves(fixture_t *f, test_client_t *c)
{
    test_client_close(c);
    assert_true(test_loop_run_until(&f->tl, no_sessions, f, 1000));
}

/* ---- tests ------------------------------------------------------------------------------- */

/* A client that does not finish its upgrade request within --handshake-timeout gets 408 and
 * EOF; once it goes, the session is freed. The app never hears of it. */
static void test_handshake_timeout_408(void **state)
{
    static const char *const args[] = {"--handshake-timeout", "100ms", NULL};
    fixture_t *f = start(&test_app, args);
    uv_update_time(&f->tl.loop);
    uint64_t t0 = uv_now(&f->tl.loop); /* before the accept */
    test_client_t *c = connect_client(f, 0, 1);
    const char *partial = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    test_client_write(c, partial, strlen(partial));
    assert_true(test_loop_run_until(&f->tl, one_session, f, 1000));
    assert_true(test_loop_run_until(&f->tl, test_client_read_ended, c, 2000));
    assert_true(uv_now(&f->tl.loop) - t0 >= 100);
    assert_int_equal(c->read_err, UV_EOF);
    assert_true(c->in.len > 12);
    assert_memory_equal(c->in.p, "HTTP/1.1 408", 12);
    assert_int_equal(f->srv->stats.handshake_rejected[408], 1);
    client_leaves(f, c);
    assert_int_equal(f->opens, 0);
    assert_int_equal(f->closes, 0);
    finish(f);
}

/* The client's EOF in the middle of its request head frees the session at once (not at the
 * handshake timeout), with nothing written back. */
static void test_eof_during_handshake(void **state)
{
    fixture_t *f = start(&test_app, NULL);
    test_client_t *c = connect_client(f, 0, 1);
    const char *partial = "GET /ws HTTP/1.1\r\nHost: 12";
    test_client_write(c, partial, strlen(partial));
    assert_true(test_loop_run_until(&f->tl, one_session, f, 1000));
    test_client_shutdown(c);
    assert_true(test_loop_run_until(&f->tl, no_sessions, f, 1000));
    assert_true(test_loop_run_until(&f->tl, test_client_read_ended, c, 1000));
    assert_int_equal(c->read_err, UV_EOF);
    assert_int_equal(c->in.len, 0);
    assert_int_equal(f->opens, 0);
    assert_int_equal(f->closes, 0);
    finish(f);
}

/* The peer's EOF on an open WebSocket: on_close runs once and the session is freed. */
static void test_peer_eof_on_open_session(void **state)
{
    fixture_t *f = start(&test_app, NULL);
    test_client_t *c = open_ws(f, "/ws");
    assert_int_equal(f->opens, 1);
    assert_int_equal(f->srv->nopen, 1);
    test_client_shutdown(c);
    assert_true(test_loop_run_until(&f->tl, no_sessions, f, 1000));
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->srv->nopen, 0);
    assert_int_equal(f->srv->stats.closed_by_code[1006], 1);
    finish(f);
}

/* A close requested from inside on_message is only recorded: when gw__session_close returns the
 * app's on_close has not run, the session is still registered, open in state and attached, and
 * only refuses new data. A synchronous close would have run on_close inside the call (and cut
 * the registry links): every one of these would see it. on_close runs once, from a later loop
 * turn (the server's prepare callback), and the client gets the close frame. */
static void test_close_from_on_message_waits_for_safe_point(void **state)
{
    fixture_t *f = start(&test_app, NULL);
    test_client_t *c = open_ws(f, "/ws");
    f->action = ACT_CLOSE;
    test_ws_send_text(c, "close me");
    assert_true(test_loop_run_until(&f->tl, test_ws_got_close, c, 2000));
    assert_int_equal(f->messages, 1);
    assert_int_equal(f->closes_at_return, 0);
    assert_true(f->found_at_return);
    assert_int_equal(f->state_at_return, GW_S_OPEN);
    assert_false(f->detached_at_return);
    assert_true(f->linked_at_return);
    assert_false(f->open_at_return);
    assert_int_equal(f->send_after_request, 0);
    assert_int_equal(f->closes, 1);
    assert_false(f->close_in_message);
    assert_true(f->turn_at_close > f->turn_at_request);
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    assert_int_equal(st.close_code, GW_CLOSE_IDLE_TIMEOUT);
    assert_int_equal(test_ws_count_text(&st, ""), 0); /* the send after the request was refused */
    client_leaves(f, c);
    assert_int_equal(f->closes, 1);
    finish(f);
}

/* Of two close requests the first stands: its code in the close frame and the stats, its
 * reason on the session. */
static void test_second_close_request_keeps_first_code(void **state)
{
    fixture_t *f = start(&test_app, NULL);
    test_client_t *c = open_ws(f, "/ws");
    f->action = ACT_CLOSE_TWICE;
    test_ws_send_text(c, "close twice");
    assert_true(test_loop_run_until(&f->tl, test_ws_got_close, c, 2000));
    assert_non_null(f->reason_at_return);
    assert_string_equal(f->reason_at_return, "first");
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    assert_int_equal(st.close_code, GW_CLOSE_IDLE_TIMEOUT);
    assert_string_equal(st.close_reason, "first");
    client_leaves(f, c);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->srv->stats.closed_by_code[GW_CLOSE_IDLE_TIMEOUT], 1);
    assert_int_equal(f->srv->stats.closed_by_code[GW_CLOSE_POLICY], 0);
    finish(f);
}

/* A send that would take the queue over --send-queue-bytes is refused and requests the close
 * with 4002: what was queued is dropped, the client gets the close frame, later sends are
 * refused too, and on_close runs once (later). */
static void test_queue_overflow_closes_4002(void **state)
{
    static const char *const args[] = {"--send-queue-bytes", "4096", NULL};
    fixture_t *f = start(&test_app, args);
    test_client_t *c = open_ws(f, "/ws");
    f->action = ACT_FLOOD;
    test_ws_send_text(c, "flood me");
    assert_true(test_loop_run_until(&f->tl, test_ws_got_close, c, 2000));
    assert_int_equal(f->queued_before, 0);
    assert_int_equal(f->send_results[0], 1); /* 2004 bytes queued */
    assert_int_equal(f->send_results[1], 1); /* 4008 <= 4096 */
    assert_int_equal(f->send_results[2], 0); /* 6012 > 4096: the close is requested */
    assert_int_equal(f->send_results[3], 0);
    assert_int_equal(f->closes_at_return, 0);
    assert_false(f->open_at_return);
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    assert_int_equal(st.close_code, GW_CLOSE_SLOW_CONSUMER);
    assert_int_equal(test_ws_count_text(&st, ""), 0); /* the queued frames were dropped */
    assert_int_equal(f->closes, 1);
    client_leaves(f, c);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->srv->stats.closed_by_code[GW_CLOSE_SLOW_CONSUMER], 1);
    finish(f);
}

/* A peer that never reads (nor closes) after its close was requested is dropped by the close
 * linger: GW_CLOSE_LINGER_MS after the request, not before, and not much later. */
static void test_linger_drops_peer_that_never_reads(void **state)
{
    fixture_t *f = start(&test_app, NULL);
    test_client_t *c = connect_client(f, 0, 0);
    chat_buf_t b = CHAT_BUF_INIT;
    test_ws_upgrade_request(&b, "/ws");
    test_ws_text(&b, "close me");
    test_client_write_buf(c, &b);
    chat_buf_free(&b);
    f->action = ACT_CLOSE;
    assert_true(test_loop_run_until(&f->tl, one_close, f, 2000));
    assert_int_equal(f->srv->nsessions, 1); /* closing: waiting for the peer */
    assert_true(test_loop_run_until(&f->tl, no_sessions, f, GW_CLOSE_LINGER_MS + 1500));
    uint64_t waited = uv_now(&f->tl.loop) - f->request_ms;
    assert_true(waited >= GW_CLOSE_LINGER_MS);
    assert_true(waited <= GW_CLOSE_LINGER_MS + 1000);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->srv->stats.closed_by_code[GW_CLOSE_IDLE_TIMEOUT], 1);
    test_client_read_raw(c); /* what it never read: the 101 and the close frame */
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    assert_int_equal(st.status, 101);
    assert_int_equal(st.close_code, GW_CLOSE_IDLE_TIMEOUT);
    finish(f);
}

/* gw__session_teardown of an open session with bytes still queued: on_close runs once at the
 * safe point, no close frame is sent, the connection is reset (RST: the queue is never
 * written) and the session is freed at once, without the linger. */
static void test_teardown_of_open_session(void **state)
{
    fixture_t *f = start(&test_app, NULL);
    test_client_t *c = open_ws(f, "/ws");
    test_client_read_stop(c);
    size_t seen = c->in.len;
    f->action = ACT_TEARDOWN;
    test_ws_send_text(c, "tear me down");
    assert_true(test_loop_run_until(&f->tl, no_sessions, f, 1000));
    assert_int_equal(f->closes_at_return, 0);
    assert_int_equal(f->closes, 1);
    assert_false(f->close_in_message);
    assert_int_equal(f->srv->stats.closed_by_code[1006], 1);
    assert_int_equal(test_client_read_raw(c), UV_ECONNRESET);
    assert_int_equal(c->in.len, seen); /* neither the queued frames nor a close frame */
    finish(f);
}

/* gw_server_stop with an open session: 1001 to the client, on_stopped once everything is closed
 * (after the client went), and nothing of the server is left on the loop. */
static void test_stop_drains_then_on_stopped(void **state)
{
    fixture_t *f = start(&test_app, NULL);
    test_client_t *c = open_ws(f, "/ws");
    gw_server_stop(f->srv, on_stopped, f);
    assert_true(test_loop_run_until(&f->tl, test_ws_got_close, c, 2000));
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    assert_int_equal(st.close_code, GW_CLOSE_GOING_AWAY);
    assert_int_equal(f->stopped, 0); /* the session still waits for the client */
    test_client_close(c);
    assert_true(test_loop_run_until(&f->tl, is_stopped, f, 2000));
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->stops, 1);
    finish(f);
}

/* The same with the chat app and a client in a room: the app's state goes with on_stop. */
static void test_stop_with_chat_app(void **state)
{
    fixture_t *f = start(&gw_chat_app, NULL);
    test_client_t *c = open_ws(f, "/chat/lobby");
    gw_chat_t *chat = f->srv->app_state;
    assert_non_null(gw__room_find(chat, CHAT_LIT("lobby")));
    gw_server_stop(f->srv, on_stopped, f);
    assert_true(test_loop_run_until(&f->tl, test_ws_got_close, c, 2000));
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    assert_int_equal(st.close_code, GW_CLOSE_GOING_AWAY);
    test_client_close(c);
    assert_true(test_loop_run_until(&f->tl, is_stopped, f, 2000));
    finish(f);
}

int main(void)
{
    chat_log_setup_stream(stderr);
    chat_log_set_level(CHAT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_timeout_408),
        cmocka_unit_test(test_eof_during_handshake),
        cmocka_unit_test(test_peer_eof_on_open_session),
        cmocka_unit_test(test_close_from_on_message_waits_for_safe_point),
        cmocka_unit_test(test_second_close_request_keeps_first_code),
        cmocka_unit_test(test_queue_overflow_closes_4002),
        cmocka_unit_test(test_linger_drops_peer_that_never_reads),
        cmocka_unit_test(test_teardown_of_open_session),
        cmocka_unit_test(test_stop_drains_then_on_stopped),
        cmocka_unit_test(test_stop_with_chat_app),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
