/* tests/unit/test_conn.c - gateway/conn.c over a real loopback TCP pair on one loop: the server
 * side is a gw_conn_t accepted from a listener of the test, the other side a test_client_t
 * (support/test_loop.h). libuv's style: one behaviour per test, callback counters, the loop run
 * until a condition or a deadline, assertions on the counts, and every test ends with every
 * handle closed and uv_loop_close() == 0 (the frames' reference counts and ASan's leak check
 * cover the releases). Covers: sends only queue until a flush, one uv_write per flush in
 * order (GW_CONN_MAX_IOV buffers at most, one write in flight), queued_bytes accounting,
 * discard_queued, abort (idempotent, stops reading), graceful close (queue, then FIN, input
 * discarded, on_end after the peer's EOF), the peer's EOF, pause_above, and close_handle's reset
 * (RST when bytes are unsent, an orderly close otherwise). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>

#include "conn.h"
#include "rcbuf.h"
#include "test_loop.h"

#define READBUF_BYTES 65536

typedef struct fixture {
    test_loop_t tl;
    uv_tcp_t listener;
    int port;
    gw_conn_t conn;
    gw_conn_handlers_t h;
    chat_list_t flush_list;
    uv_buf_t readbuf;
    int accepted;    /* the conn exists */
    int conn_closed; /* its handle's close callback ran */
    test_client_t client;
    /* counters */
    size_t data_calls;
    chat_buf_t data; /* everything on_data got */
    size_t end_calls;
    int end_err;
    size_t data_calls_at_end; /* on_data calls seen when on_end ran */
    size_t write_starts;
} fixture_t;

static void on_data(void *ctx, const char *p, size_t n)
{
    fixture_t *f = ctx;
    f->data_calls++;
    chat_buf_append(&f->data, p, n);
}

static void on_end(void *ctx, int err)
{
    fixture_t *f = ctx;
    if (f->end_calls++ == 0) {
        f->end_err = err;
        f->data_calls_at_end = f->data_calls;
    }
}

static void on_write_start(void *ctx)
{
    fixture_t *f = ctx;
    f->write_starts++;
}

static void on_connection(uv_stream_t *l, int status)
{
    fixture_t *f = l->data;
    if (status != 0 || f->accepted)
        return;
    if (gw_conn_init(&f->conn, l->loop, &f->flush_list, &f->readbuf, &f->h) != 0)
        return;
    f->accepted = 1;
    if (uv_accept(l, (uv_stream_t *)&f->conn.tcp) == 0)
        gw_conn_start(&f->conn);
}

static int is_accepted(void *ctx)
{
    return ((fixture_t *)ctx)->accepted;
}

/* A listener on 127.0.0.1:0 and a client connected to it (rcvbuf: see test_client_init). */
static fixture_t *open_pair(int rcvbuf, int client_reads)
{
    fixture_t *f = calloc(1, sizeof(*f));
    struct sockaddr_in a;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    assert_non_null(f);
    test_loop_init(&f->tl);
    chat_list_init(&f->flush_list);
    f->readbuf = uv_buf_init(malloc(READBUF_BYTES), READBUF_BYTES);
    f->h = (gw_conn_handlers_t){
        .on_data = on_data, .on_end = on_end, .on_write_start = on_write_start, .ctx = f};
    assert_int_equal(uv_tcp_init(&f->tl.loop, &f->listener), 0);
    f->listener.data = f;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 8, on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&f->listener, (struct sockaddr *)&ss, &len), 0);
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    test_client_open(&f->client, &f->tl, f->port, rcvbuf, client_reads);
    assert_true(test_loop_run_until(&f->tl, is_accepted, f, 2000));
    return f;
}

static void on_conn_closed(uv_handle_t *h)
{
    gw_conn_t *c = chat_container_of((uv_tcp_t *)h, gw_conn_t, tcp);
    fixture_t *f = chat_container_of(c, fixture_t, conn);
    f->conn_closed = 1;
}

static int conn_closed(void *ctx)
{
    return ((fixture_t *)ctx)->conn_closed;
}

/* Closes the conn (if the test did not), the client and the listener; asserts the loop closes. */
static void finish(fixture_t *f)
{
    if (f->accepted && !f->conn_closed && !uv_is_closing((uv_handle_t *)&f->conn.tcp))
        gw_conn_close_handle(&f->conn, on_conn_closed, 0);
    assert_true(test_loop_run_until(&f->tl, conn_closed, f, 2000));
    assert_int_equal(f->conn.queued_bytes, 0);
    test_client_close(&f->client);
    uv_close((uv_handle_t *)&f->listener, NULL);
    assert_true(test_loop_run_until(&f->tl, test_client_is_closed, &f->client, 2000));
    test_loop_close(&f->tl);
    test_client_free(&f->client);
    chat_buf_free(&f->data);
    free(f->readbuf.base);
    free(f);
}

/* ---- predicates -------------------------------------------------------------------------- */

/* For test_loop_run_until_count: the bytes the client read, the bytes on_data got. */
static uint64_t client_bytes(void *ctx)
{
    return ((fixture_t *)ctx)->client.in.len;
}

static uint64_t conn_bytes(void *ctx)
{
    return ((fixture_t *)ctx)->data.len;
}

static int write_idle(void *ctx)
{
    return !((fixture_t *)ctx)->conn.writing;
}

static int end_called(void *ctx)
{
    return ((fixture_t *)ctx)->end_calls > 0;
}

static void wait_client_bytes(fixture_t *f, size_t n)
{
    assert_true(test_loop_run_until_count(&f->tl, client_bytes, f, n, 2000));
}

/* Frames "f00:" .. with distinct lengths: frame i is i+1 bytes of filler after its tag. */
static chat_rcbuf_t *numbered_frame(unsigned i, chat_buf_t *expect)
{
    char tmp[512];
    int n = snprintf(tmp, sizeof(tmp), "f%02u:", i);
    size_t len = (size_t)n + (i % 100) + 1;
    memset(tmp + n, 'a' + (int)(i % 26), len - (size_t)n);
    chat_buf_append(expect, tmp, len);
    return chat_rcbuf_new(tmp, len);
}

static void send_numbered(fixture_t *f, unsigned from, unsigned to, chat_buf_t *expect)
{
    for (unsigned i = from; i < to; i++) {
        chat_rcbuf_t *fr = numbered_frame(i, expect);
        gw_conn_send(&f->conn, fr);
        chat_rcbuf_release(fr);
    }
}

/* ---- tests ------------------------------------------------------------------------------- */

/* gw_conn_send only queues: nothing reaches the socket until the owner flushes, even across
 * loop turns. */
static void test_send_queues_until_flush(void **state)
{
    fixture_t *f = open_pair(0, 1);
    chat_buf_t expect = CHAT_BUF_INIT;
    send_numbered(f, 0, 3, &expect);
    assert_int_equal(f->conn.ring_count, 3);
    assert_int_equal(f->conn.writing, 0);
    assert_true(chat_list_is_linked(&f->conn.flush_link));
    test_loop_run_for(&f->tl, 50);
    assert_int_equal(f->client.in.len, 0);
    assert_int_equal(f->conn.bytes_out, 0);
    assert_int_equal(f->write_starts, 0);
    gw_conn_flush_all(&f->flush_list);
    assert_true(chat_list_is_empty(&f->flush_list));
    wait_client_bytes(f, expect.len);
    assert_memory_equal(f->client.in.p, expect.p, expect.len);
    chat_buf_free(&expect);
    finish(f);
}

/* One flush issues one uv_write holding every queued frame, in order. */
static void test_one_write_per_flush_in_order(void **state)
{
    fixture_t *f = open_pair(0, 1);
    chat_buf_t expect = CHAT_BUF_INIT;
    send_numbered(f, 0, 5, &expect);
    gw_conn_flush_all(&f->flush_list);
    assert_int_equal(f->write_starts, 1);
    assert_int_equal(f->conn.ninflight, 5);
    assert_int_equal(f->conn.ring_count, 0);
    wait_client_bytes(f, expect.len);
    assert_int_equal(f->client.in.len, expect.len);
    assert_memory_equal(f->client.in.p, expect.p, expect.len);
    assert_int_equal(f->write_starts, 1);
    chat_buf_free(&expect);
    finish(f);
}

/* While a write is in flight, a second flush in the same turn writes nothing: new frames wait
 * and follow in order when the first write completes. */
static void test_one_write_in_flight(void **state)
{
    fixture_t *f = open_pair(0, 1);
    chat_buf_t expect = CHAT_BUF_INIT;
    send_numbered(f, 0, 2, &expect);
    gw_conn_flush_all(&f->flush_list);
    send_numbered(f, 2, 4, &expect);
    gw_conn_flush_all(&f->flush_list);
    assert_int_equal(f->write_starts, 1);
    assert_int_equal(f->conn.ninflight, 2);
    assert_int_equal(f->conn.ring_count, 2);
    wait_client_bytes(f, expect.len);
    assert_memory_equal(f->client.in.p, expect.p, expect.len);
    assert_int_equal(f->write_starts, 2);
    chat_buf_free(&expect);
    finish(f);
}

/* More frames than GW_CONN_MAX_IOV: the first write takes GW_CONN_MAX_IOV, the rest follow in a
 * second one, in order. */
static void test_more_than_max_iov_takes_two_writes(void **state)
{
    fixture_t *f = open_pair(0, 1);
    chat_buf_t expect = CHAT_BUF_INIT;
    send_numbered(f, 0, GW_CONN_MAX_IOV + 36, &expect);
    gw_conn_flush_all(&f->flush_list);
    assert_int_equal(f->conn.ninflight, GW_CONN_MAX_IOV);
    assert_int_equal(f->conn.ring_count, 36);
    wait_client_bytes(f, expect.len);
    assert_int_equal(f->client.in.len, expect.len);
    assert_memory_equal(f->client.in.p, expect.p, expect.len);
    assert_int_equal(f->write_starts, 2);
    chat_buf_free(&expect);
    finish(f);
}

/* queued_bytes counts queued and in-flight frames (a shared frame once per send), and goes back
 * to 0 when they are written; bytes_out counts what was written; the references are released. */
static void test_queued_bytes_accounting(void **state)
{
    fixture_t *f = open_pair(0, 1);
    static char big[3000];
    memset(big, 'z', sizeof(big));
    chat_rcbuf_t *a = chat_rcbuf_new("0123456789", 10);
    chat_rcbuf_t *b = chat_rcbuf_new(big, sizeof(big));
    gw_conn_send(&f->conn, a);
    gw_conn_send(&f->conn, b);
    gw_conn_send(&f->conn, a); /* the same shared frame twice */
    assert_int_equal(f->conn.queued_bytes, 10 + 3000 + 10);
    assert_int_equal(a->refs, 3);
    assert_int_equal(b->refs, 2);
    gw_conn_flush_all(&f->flush_list);
    assert_int_equal(f->conn.queued_bytes, 3020); /* in flight still counts */
    assert_true(test_loop_run_until(&f->tl, write_idle, f, 2000));
    assert_int_equal(f->conn.queued_bytes, 0);
    assert_int_equal(f->conn.bytes_out, 3020);
    assert_int_equal(a->refs, 1);
    assert_int_equal(b->refs, 1);
    wait_client_bytes(f, 3020);
    chat_rcbuf_release(a);
    chat_rcbuf_release(b);
    finish(f);
}

/* discard_queued drops the frames not handed to the socket yet; the write in flight completes. */
static void test_discard_queued(void **state)
{
    fixture_t *f = open_pair(0, 1);
    chat_rcbuf_t *a = chat_rcbuf_new("in-flight", 9);
    chat_rcbuf_t *b = chat_rcbuf_new("dropped-1", 9);
    chat_rcbuf_t *c = chat_rcbuf_new("dropped-2", 9);
    gw_conn_send(&f->conn, a);
    gw_conn_flush_all(&f->flush_list);
    gw_conn_send(&f->conn, b);
    gw_conn_send(&f->conn, c);
    gw_conn_discard_queued(&f->conn);
    assert_int_equal(f->conn.ring_count, 0);
    assert_int_equal(f->conn.queued_bytes, 9); /* only the write in flight */
    assert_int_equal(b->refs, 1);
    assert_int_equal(c->refs, 1);
    assert_true(test_loop_run_until(&f->tl, write_idle, f, 2000));
    wait_client_bytes(f, 9);
    gw_conn_flush_all(&f->flush_list);
    test_loop_run_for(&f->tl, 50);
    assert_int_equal(f->client.in.len, 9);
    assert_memory_equal(f->client.in.p, "in-flight", 9);
    assert_int_equal(f->conn.bytes_out, 9);
    assert_int_equal(f->write_starts, 1);
    chat_rcbuf_release(a);
    chat_rcbuf_release(b);
    chat_rcbuf_release(c);
    finish(f);
}

/* abort drops the queue, stops reading and ignores later sends; a second abort (and the one
 * inside close_handle) changes nothing; on_end is not called; the write in flight is released
 * by its cancelled callback before the close callback. */
static void test_abort_is_idempotent(void **state)
{
    fixture_t *f = open_pair(0, 1);
    chat_rcbuf_t *a = chat_rcbuf_new("first", 5);
    chat_rcbuf_t *b = chat_rcbuf_new("second", 6);
    gw_conn_send(&f->conn, a);
    gw_conn_flush_all(&f->flush_list);
    gw_conn_send(&f->conn, b);
    gw_conn_abort(&f->conn);
    gw_conn_abort(&f->conn);
    assert_int_equal(f->conn.ring_count, 0);
    assert_int_equal(b->refs, 1);
    assert_int_equal(f->conn.reading, 0);
    gw_conn_send(&f->conn, b); /* ignored */
    assert_int_equal(b->refs, 1);
    assert_int_equal(f->conn.ring_count, 0);
    assert_false(chat_list_is_linked(&f->conn.flush_link));
    test_client_write(&f->client, "late", 4);
    test_loop_run_for(&f->tl, 50);
    assert_int_equal(f->data_calls, 0);
    assert_int_equal(f->end_calls, 0);
    gw_conn_close_handle(&f->conn, on_conn_closed, 0);
    gw_conn_abort(&f->conn);
    assert_true(test_loop_run_until(&f->tl, conn_closed, f, 2000));
    assert_int_equal(a->refs, 1);
    assert_int_equal(f->conn.queued_bytes, 0);
    assert_int_equal(f->end_calls, 0);
    chat_rcbuf_release(a);
    chat_rcbuf_release(b);
    finish(f);
}

/* close_gracefully writes what is queued, then shuts the write side down (the peer reads every
 * byte, then EOF); input after it is discarded; on_end runs once, after the peer's EOF. */
static void test_close_gracefully(void **state)
{
    fixture_t *f = open_pair(0, 1);
    chat_buf_t expect = CHAT_BUF_INIT;
    send_numbered(f, 0, 4, &expect);
    gw_conn_close_gracefully(&f->conn);
    gw_conn_close_gracefully(&f->conn);
    gw_conn_flush_all(&f->flush_list);
    assert_true(test_loop_run_until(&f->tl, test_client_read_ended, &f->client, 2000));
    assert_int_equal(f->client.read_err, UV_EOF);
    assert_int_equal(f->client.in.len, expect.len);
    assert_memory_equal(f->client.in.p, expect.p, expect.len);
    assert_int_equal(f->end_calls, 0); /* the peer has not closed yet */
    test_client_write(&f->client, "discarded", 9);
    test_loop_run_for(&f->tl, 50);
    assert_int_equal(f->data_calls, 0);
    assert_int_equal(f->end_calls, 0);
    test_client_shutdown(&f->client);
    assert_true(test_loop_run_until(&f->tl, end_called, f, 2000));
    test_loop_run_for(&f->tl, 20);
    assert_int_equal(f->end_calls, 1);
    assert_int_equal(f->end_err, UV_EOF);
    assert_int_equal(f->data_calls, 0);
    chat_buf_free(&expect);
    finish(f);
}

/* The peer's EOF: every byte before it is handed to on_data, then on_end(UV_EOF) once. */
static void test_peer_eof_calls_on_end_once(void **state)
{
    fixture_t *f = open_pair(0, 1);
    test_client_write(&f->client, "abc", 3);
    test_client_shutdown(&f->client);
    assert_true(test_loop_run_until(&f->tl, end_called, f, 2000));
    test_loop_run_for(&f->tl, 20);
    assert_int_equal(f->end_calls, 1);
    assert_int_equal(f->end_err, UV_EOF);
    assert_int_equal(f->data.len, 3);
    assert_memory_equal(f->data.p, "abc", 3);
    assert_true(f->data_calls_at_end >= 1);
    finish(f);
}

/* Above pause_above queued bytes the conn stops reading; once the queue is written it reads
 * again and gets what arrived meanwhile. */
static void test_pause_above_stops_reading(void **state)
{
    fixture_t *f = open_pair(0, 1);
    static char big[200];
    memset(big, 'p', sizeof(big));
    gw_conn_set_pause_above(&f->conn, 100);
    test_client_write(&f->client, "before", 6);
    assert_true(test_loop_run_until_count(&f->tl, conn_bytes, f, 6, 2000));
    chat_rcbuf_t *fr = chat_rcbuf_new(big, sizeof(big));
    gw_conn_send(&f->conn, fr); /* 200 > 100: reading stops now */
    chat_rcbuf_release(fr);
    assert_int_equal(f->conn.reading, 0);
    assert_int_equal(f->conn.paused, 1);
    test_client_write(&f->client, "meanwhile", 9);
    test_loop_run_for(&f->tl, 100);
    assert_int_equal(f->data.len, 6);
    gw_conn_flush_all(&f->flush_list);
    assert_true(test_loop_run_until_count(&f->tl, conn_bytes, f, 15, 2000));
    assert_int_equal(f->conn.paused, 0);
    assert_memory_equal(f->data.p, "beforemeanwhile", 15);
    finish(f);
}

/* close_handle with reset while bytes are unsent (a peer that does not read, a small send
 * buffer): the connection is reset, the peer reads ECONNRESET (behind the bytes it had
 * received), not an orderly EOF. */
static void test_close_handle_reset_sends_rst(void **state)
{
    fixture_t *f = open_pair(2048, 0);
    int sndbuf = 4096;
    static char chunk[65536];
    memset(chunk, 'r', sizeof(chunk));
    assert_int_equal(uv_send_buffer_size((uv_handle_t *)&f->conn.tcp, &sndbuf), 0);
    chat_rcbuf_t *fr = chat_rcbuf_new(chunk, sizeof(chunk));
    for (int i = 0; i < 16; i++)
        gw_conn_send(&f->conn, fr);
    gw_conn_flush_all(&f->flush_list);
    test_loop_run_for(&f->tl, 100);
    assert_int_equal(f->conn.writing, 1); /* stuck: the peer does not read */
    gw_conn_close_handle(&f->conn, on_conn_closed, 1);
    assert_true(test_loop_run_until(&f->tl, conn_closed, f, 2000));
    assert_int_equal(fr->refs, 1); /* the cancelled write released its frames */
    chat_rcbuf_release(fr);
    /* the reset is in the client's socket now: the kernel reports it after the unread bytes */
    assert_int_equal(test_client_read_raw(&f->client), UV_ECONNRESET);
    assert_true(f->client.in.len > 0);
    finish(f);
}

static void close_after_all_written(fixture_t *f, int reset)
{
    chat_rcbuf_t *fr = chat_rcbuf_new("all written", 11);
    gw_conn_send(&f->conn, fr);
    chat_rcbuf_release(fr);
    gw_conn_flush_all(&f->flush_list);
    assert_true(test_loop_run_until(&f->tl, write_idle, f, 2000));
    wait_client_bytes(f, 11);
    gw_conn_close_handle(&f->conn, on_conn_closed, reset);
    assert_true(test_loop_run_until(&f->tl, test_client_read_ended, &f->client, 2000));
    assert_memory_equal(f->client.in.p, "all written", 11);
}

/* close_handle without reset: an orderly close (the peer reads EOF). */
static void test_close_handle_without_reset_is_orderly(void **state)
{
    fixture_t *f = open_pair(0, 1);
    close_after_all_written(f, 0);
    assert_int_equal(f->client.read_err, UV_EOF);
    finish(f);
}

/* close_handle with reset resets even when our queue is empty: bytes may still sit in the
 * kernel behind a shut receive window, and the linger must not leave them alive. */
static void test_close_handle_reset_resets_when_all_written(void **state)
{
    fixture_t *f = open_pair(0, 1);
    close_after_all_written(f, 1);
    assert_int_equal(f->client.read_err, UV_ECONNRESET);
    finish(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_queues_until_flush),
        cmocka_unit_test(test_one_write_per_flush_in_order),
        cmocka_unit_test(test_one_write_in_flight),
        cmocka_unit_test(test_more_than_max_iov_takes_two_writes),
        cmocka_unit_test(test_queued_bytes_accounting),
        cmocka_unit_test(test_discard_queued),
        cmocka_unit_test(test_abort_is_idempotent),
        cmocka_unit_test(test_close_gracefully),
        cmocka_unit_test(test_peer_eof_calls_on_end_once),
        cmocka_unit_test(test_pause_above_stops_reading),
        cmocka_unit_test(test_close_handle_reset_sends_rst),
        cmocka_unit_test(test_close_handle_without_reset_is_orderly),
        cmocka_unit_test(test_close_handle_reset_resets_when_all_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
