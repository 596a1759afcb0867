/* tests/unit/test_room.c - room membership of the chat app (gateway/room.c, dispatch.c, relay.c)
 * with gw_chat_app in a gw_server_t started in-process on a test loop, and loopback WebSocket
 * clients on the same loop sending envelopes (support/test_loop.h). libuv's style: one behaviour
 * per test, runs bounded in time, and every test ends with the server stopped, every handle
 * closed by its owner and uv_loop_close() == 0 (ASan's leak check covers the frees).
 * Covers: join and leave envelopes create and remove the room of this node (the rooms map and
 * the chat_rooms gauge), the memory broker's subscription follows the membership (observed by
 * what the broker hands over), the last member's disconnect removes the room, and the fan-out
 * regression: a send that overflows the queue of a room's only member closes it (4002) without
 * freeing the room under the fan-out walking it. */
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

typedef struct fixture {
    gw_config_t cfg;
    test_loop_t tl;
    gw_server_t *srv;
    int port;
    test_client_t clients[MAX_CLIENTS];
    size_t nclients;
} fixture_t;

static fixture_t *start(const char *const *extra)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_loop_init(&f->tl);
    test_config_load(&f->cfg, extra);
    assert_int_equal(gw_server_start(&f->srv, &f->tl.loop, &f->cfg, &gw_chat_app), 0);
    f->port = test_server_port(f->srv);
    return f;
}

static void finish(fixture_t *f)
{
    test_clients_close(f->clients, f->nclients);
    test_server_stop(&f->tl, f->srv);
    test_loop_wait_empty(&f->tl);
    test_loop_close(&f->tl);
    test_clients_free(f->clients, f->nclients);
    gw_config_dispose(&f->cfg);
    free(f);
}

static gw_chat_t *chat_of(fixture_t *f)
{
    return f->srv->app_state;
}

static gw_room_t *room(fixture_t *f, const char *name)
{
    return gw__room_find(chat_of(f), chat_cstr(name));
}

/* A client on path (the client reads unless told otherwise). */
static test_client_t *ws_client(fixture_t *f, const char *path, int rcvbuf, int read)
{
    assert_true(f->nclients < MAX_CLIENTS);
    test_client_t *c = &f->clients[f->nclients++];
    test_client_open(c, &f->tl, f->port, rcvbuf, read);
    if (read) {
        assert_int_equal(test_ws_handshake(c, path), 101);
    } else {
        chat_buf_t b = CHAT_BUF_INIT;
        test_ws_upgrade_request(&b, path);
        test_client_write_buf(c, &b);
        chat_buf_free(&b);
    }
    return c;
}

/* ---- waiting for what a client received -------------------------------------------------- */

typedef struct want_text {
    test_client_t *c;
    const char *needle;
    size_t n;
} want_text_t;

static size_t count_text(test_client_t *c, const char *needle)
{
    test_ws_stream_t st;
    test_ws_parse(c->in.p, c->in.len, &st);
    return test_ws_count_text(&st, needle);
}

static int has_text(void *ctx)
{
    want_text_t *w = ctx;
    return count_text(w->c, w->needle) >= w->n || w->c->read_err != 0;
}

/* Runs until c received n text frames containing needle (asserted, 2 s). */
static void wait_text(fixture_t *f, test_client_t *c, const char *needle, size_t n)
{
    want_text_t w = {c, needle, n};
    assert_true(test_loop_run_until(&f->tl, has_text, &w, 2000));
    assert_true(count_text(c, needle) >= n);
}

static void join(fixture_t *f, test_client_t *c, const char *name, size_t joined_before)
{
    char env[128];
    snprintf(env, sizeof(env), "{\"type\":\"join\",\"room\":\"%s\"}", name);
    test_ws_send_text(c, env);
    wait_text(f, c, "\"type\":\"joined\"", joined_before + 1);
}

static void leave(fixture_t *f, test_client_t *c, const char *name, size_t left_before)
{
    char env[128];
    snprintf(env, sizeof(env), "{\"type\":\"leave\",\"room\":\"%s\"}", name);
    test_ws_send_text(c, env);
    wait_text(f, c, "\"type\":\"left\"", left_before + 1);
}

/* The chat_rooms gauge as /metrics shows it. */
static long rooms_gauge(fixture_t *f)
{
    chat_buf_t b = CHAT_BUF_INIT;
    long v = -1;
    gw__chat_stats_render(f->srv, &b);
    chat_buf_append(&b, "", 1);
    const char *p = strstr(b.p, "\nchat_rooms ");
    if (p != NULL)
        v = strtol(p + strlen("\nchat_rooms "), NULL, 10);
    chat_buf_free(&b);
    return v;
}

static uint64_t broker_received(fixture_t *f)
{
    broker_stats_t st;
    broker_get_stats(f->srv->broker, &st);
    return st.received;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* A room exists on this node while it has members: the first join creates it, it counts its
 * members, and the last leave removes it (the rooms map and the chat_rooms gauge agree). */
static void test_room_exists_while_it_has_members(void **state)
{
    fixture_t *f = start(NULL);
    test_client_t *a = ws_client(f, "/ws", 0, 1);
    test_client_t *b = ws_client(f, "/ws", 0, 1);
    assert_null(room(f, "r"));
    join(f, a, "r", 0);
    assert_non_null(room(f, "r"));
    assert_int_equal(room(f, "r")->nmembers, 1);
    assert_int_equal(rooms_gauge(f), 1);
    join(f, b, "r", 0);
    assert_int_equal(room(f, "r")->nmembers, 2);
    leave(f, a, "r", 0);
    assert_non_null(room(f, "r"));
    assert_int_equal(room(f, "r")->nmembers, 1);
    leave(f, b, "r", 0);
    assert_null(room(f, "r"));
    assert_int_equal(chat_map_count(&chat_of(f)->rooms), 0);
    assert_int_equal(rooms_gauge(f), 0);
    finish(f);
}

static int room_r_gone(void *ctx)
{
    return room(ctx, "r") == NULL;
}

static long lingering_gauge(fixture_t *f)
{
    return (long)(chat_map_count(&chat_of(f)->rooms) - chat_of(f)->active_rooms);
}

/* --room-linger: after its last member the room stays (subscribed, no member) for the linger,
 * a member that comes back within it finds the same room, and then it goes. */
static void test_room_lingers_after_its_last_member(void **state)
{
    static const char *const args[] = {"--room-linger", "1s", NULL};
    fixture_t *f = start(args);
    test_client_t *a = ws_client(f, "/ws", 0, 1);
    join(f, a, "r", 0);
    uint64_t id = room(f, "r")->id;
    leave(f, a, "r", 0);
    assert_non_null(room(f, "r"));
    assert_int_equal(room(f, "r")->nmembers, 0);
    assert_int_equal(rooms_gauge(f), 0);
    assert_int_equal(lingering_gauge(f), 1);
    join(f, a, "r", 1);
    assert_int_equal(room(f, "r")->id, id); /* the same room, no new subscription */
    assert_int_equal(rooms_gauge(f), 1);
    assert_int_equal(lingering_gauge(f), 0);
    leave(f, a, "r", 1);
    uint64_t left = uv_now(&f->tl.loop);
    assert_true(test_loop_run_until(&f->tl, room_r_gone, f, 3000));
    assert_true(uv_now(&f->tl.loop) - left >= 1000); /* not before the linger */
    assert_int_equal(lingering_gauge(f), 0);
    finish(f);
}

static uint64_t received(void *ctx)
{
    return broker_received(ctx);
}

/* The broker subscription follows the membership: while the room has a member the broker hands
 * over what is published to it; after the last member left, it does not (a publication to a
 * room still joined, made after it, is handed over: the broker preserves order, so the first
 * one was dropped, not late). */
static void test_broker_subscription_follows_membership(void **state)
{
    fixture_t *f = start(NULL);
    test_client_t *a = ws_client(f, "/ws", 0, 1);
    join(f, a, "r", 0);
    join(f, a, "keep", 1);
    test_loop_run_for(&f->tl, 20); /* the join notices have gone through the broker */
    uint64_t r0 = broker_received(f);
    assert_int_equal(broker_publish(f->srv->broker, CHAT_LIT("r"), CHAT_LIT("x"), 0), 0);
    assert_true(test_loop_run_until_count(&f->tl, received, f, r0 + 1, 2000));
    leave(f, a, "r", 0);
    assert_null(room(f, "r"));
    test_loop_run_for(&f->tl, 20);
    uint64_t r1 = broker_received(f);
    assert_int_equal(broker_publish(f->srv->broker, CHAT_LIT("r"), CHAT_LIT("x"), 0), 0);
    assert_int_equal(broker_publish(f->srv->broker, CHAT_LIT("keep"), CHAT_LIT("x"), 0), 0);
    assert_true(test_loop_run_until_count(&f->tl, received, f, r1 + 1, 2000));
    test_loop_run_for(&f->tl, 20);
    assert_int_equal(broker_received(f), r1 + 1);
    finish(f);
}


/* The last member's TCP connection ends: its close removes the room (at the safe point). */
static void test_last_member_disconnect_removes_room(void **state)
{
    fixture_t *f = start(NULL);
    test_client_t *a = ws_client(f, "/chat/r", 0, 1);
    wait_text(f, a, "\"type\":\"joined\"", 1);
    assert_non_null(room(f, "r"));
    test_client_close(a);
    assert_true(test_loop_run_until(&f->tl, room_r_gone, f, 1000));
    assert_int_equal(chat_map_count(&chat_of(f)->rooms), 0);
    finish(f);
}

/* The members of room "r" (0 while there is no such room). */
static uint64_t room_r_members(void *ctx)
{
    gw_room_t *r = room(ctx, "r");
    return r != NULL ? r->nmembers : 0;
}

typedef struct after_burst {
    fixture_t *f;
    test_client_t *sender;
} after_burst_t;

static int burst_done(void *ctx)
{
    after_burst_t *w = ctx;
    return room(w->f, "r") == NULL && count_text(w->sender, "\"type\":\"ack\"") >= 3;
}

static int sessions_at_most_one(void *ctx)
{
    return ((fixture_t *)ctx)->srv->nsessions <= 1;
}

/* The fan-out use-after-free: a slow member (tiny receive buffer, never reads) is alone in a
 * room when another client sends three 3000-byte chats and a leave in one write. The three
 * deliveries reach the fan-out in one broker turn: the second overflows the slow member's
 * 4096-byte queue. Were its close carried out there, it would leave its last room and the room
 * would be freed while the fan-out walks it (ASan: heap-use-after-free). Instead: no crash, the
 * slow member is closed with 4002 (without any of the chats), the room is gone afterwards and
 * the sender got its 3 acks. */
static void test_fanout_overflow_of_last_member(void **state)
{
    static const char *const args[] = {"--send-queue-bytes", "4096", NULL};
    fixture_t *f = start(args);
    test_client_t *slow = ws_client(f, "/chat/r", 2048, 0);
    assert_true(test_loop_run_until_count(&f->tl, room_r_members, f, 1, 2000));
    test_client_t *sender = ws_client(f, "/chat/r", 0, 1);
    wait_text(f, sender, "\"type\":\"joined\"", 1);
    assert_true(test_loop_run_until_count(&f->tl, room_r_members, f, 2, 2000));

    static char text[3001];
    memset(text, 'a', 3000);
    chat_buf_t env = CHAT_BUF_INIT, burst = CHAT_BUF_INIT;
    for (int i = 0; i < 3; i++) {
        chat_buf_reset(&env);
        chat_buf_appendf(&env, "{\"type\":\"chat\",\"room\":\"r\",\"text\":\"%s\",\"cid\":\"c%d\"}",
                         text, i);
        test_ws_frame(&burst, TEST_WS_TEXT, env.p, env.len);
    }
    test_ws_text(&burst, "{\"type\":\"leave\",\"room\":\"r\"}");
    test_client_write_buf(sender, &burst);
    chat_buf_free(&env);
    chat_buf_free(&burst);

    after_burst_t w = {f, sender};
    assert_true(test_loop_run_until(&f->tl, burst_done, &w, 2000));
    assert_int_equal(count_text(sender, "\"type\":\"ack\""), 3);
    assert_int_equal(count_text(sender, "\"type\":\"left\""), 1);
    assert_int_equal(count_text(sender, "\"type\":\"chat\""), 0); /* it had left */
    assert_null(room(f, "r"));
    assert_int_equal(chat_map_count(&chat_of(f)->rooms), 0);

    /* what the slow member was sent: its welcome and joined, then the close, no chat */
    test_client_read_start(slow);
    assert_true(test_loop_run_until(&f->tl, test_ws_got_close, slow, 2000));
    test_ws_stream_t st;
    test_ws_parse(slow->in.p, slow->in.len, &st);
    assert_int_equal(st.status, 101);
    assert_int_equal(st.close_code, GW_CLOSE_SLOW_CONSUMER);
    assert_int_equal(test_ws_count_text(&st, "\"type\":\"chat\""), 0);
    test_client_close(slow);
    assert_true(test_loop_run_until(&f->tl, sessions_at_most_one, f, 1000));
    assert_int_equal(f->srv->stats.closed_by_code[GW_CLOSE_SLOW_CONSUMER], 1);
    finish(f);
}

int main(void)
{
    chat_log_setup_stream(stderr);
    chat_log_set_level(CHAT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_room_exists_while_it_has_members),
        cmocka_unit_test(test_room_lingers_after_its_last_member),
        cmocka_unit_test(test_broker_subscription_follows_membership),
        cmocka_unit_test(test_last_member_disconnect_removes_room),
        cmocka_unit_test(test_fanout_overflow_of_last_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
