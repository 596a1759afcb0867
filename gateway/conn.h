/* gateway/conn.h - gw_conn_t: the bytes of one TCP connection. Reads into a loop-wide buffer
 * lent by the owner (no per-connection input buffer), and keeps a bounded-by-the-owner queue of
 * shared frames (chat_rcbuf_t references) that is written with ONE uv_write of up to
 * GW_CONN_MAX_IOV buffers per flush. Flushes happen once per loop turn: gw_conn_send() only links
 * the connection into the owner's flush list, and the owner calls gw_conn_flush_all() from a
 * uv_prepare_t (redis' handleClientsWithPendingWrites).
 *
 * Replaceable frames: a frame queued with gw_conn_send_replaceable() (a pong) may later be
 * swapped for a newer one of its kind while it still waits in the queue (RFC 6455 5.5.3: a pong
 * may answer only the latest of several pings), so the owner can keep their number bounded.
 *
 * Closing: gw_conn_close_gracefully() writes what is queued, then shuts the write side down and
 * waits for the peer's EOF (discarding input) before the owner tears the socket down; the owner
 * bounds the wait with its own timer. gw_conn_abort() discards the queue at once.
 * The conn is embedded in its owner; the uv_tcp_t is closed by gw_conn_close_handle(). */
#ifndef CHAT_GATEWAY_CONN_H
#define CHAT_GATEWAY_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"
#include "rcbuf.h"

#define GW_CONN_MAX_IOV 64

typedef struct gw_conn gw_conn_t;

/* One frame waiting in the send queue. */
typedef struct gw_conn_slot {
    chat_rcbuf_t *frame; /* a reference */
    int replaceable;     /* queued with gw_conn_send_replaceable() */
} gw_conn_slot_t;

typedef struct gw_conn_handlers {
    /* n > 0 bytes arrived (borrowed: valid during the call). */
    void (*on_data)(void *ctx, const char *p, size_t n);
    /* The peer closed its side (err == UV_EOF), or the socket failed (other err); also called
     * after a graceful close saw EOF. The owner tears down; no more on_data. */
    void (*on_end)(void *ctx, int err);
    /* A write was issued while none was in flight (c->write_started_ms is its start). Optional:
     * the owner arms its write timeout. */
    void (*on_write_start)(void *ctx);
    void *ctx;
} gw_conn_handlers_t;

struct gw_conn {
    uv_tcp_t tcp; /* tcp.data is free for the owner */
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    const gw_conn_handlers_t *h;
    chat_list_t *flush_list; /* owner's list of conns with unflushed frames */
    chat_list_t flush_link;
    uv_buf_t *readbuf; /* loop-wide read buffer lent by the owner */
    /* send queue: a ring of frame references, then the ones in flight */
    gw_conn_slot_t *ring;
    size_t ring_head, ring_count, ring_cap;
    uint64_t ring_seq;    /* frames ever taken off the ring: the sequence number of its head */
    size_t nreplaceable;  /* replaceable frames in the ring (not yet handed to the socket) */
    uint64_t newest_repl; /* sequence number of the newest of them (when nreplaceable > 0) */
    chat_rcbuf_t *inflight[GW_CONN_MAX_IOV];
    unsigned ninflight;
    size_t queued_bytes; /* ring + in flight, counted per connection */
    uint64_t bytes_out;  /* written to the socket so far */
    size_t pause_above;  /* stop reading while queued_bytes exceeds this (0: never) */
    uint64_t write_started_ms;
    unsigned writing : 1, reading : 1, paused : 1, graceful : 1, shut : 1, ended : 1, closed : 1;
};

/* Initialises c around an uninitialised tcp handle (uv_tcp_init is done here). */
int gw_conn_init(gw_conn_t *c, uv_loop_t *loop, chat_list_t *flush_list, uv_buf_t *readbuf,
                 const gw_conn_handlers_t *h);
/* Starts reading (after uv_accept). */
int gw_conn_start(gw_conn_t *c);
/* Stops reading while more than `bytes` are queued (backpressure: a client that floods without
 * reading cannot make us buffer its input either); 0 disables. */
void gw_conn_set_pause_above(gw_conn_t *c, size_t bytes);
/* Drops the frames not yet handed to the socket (the write in flight completes). */
void gw_conn_discard_queued(gw_conn_t *c);
/* Queues a frame: takes its own reference. Ignored after close or abort. */
void gw_conn_send(gw_conn_t *c, chat_rcbuf_t *frame);
/* Same for bytes that are not shared (copies them). */
void gw_conn_send_copy(gw_conn_t *c, const void *p, size_t n);
/* Queues a frame (own reference) that gw_conn_replace_newest() may replace while it waits. */
void gw_conn_send_replaceable(gw_conn_t *c, chat_rcbuf_t *frame);
/* Puts frame (own reference) in the place of the newest replaceable frame still waiting in the
 * queue, whose reference is dropped; queued_bytes follows. Returns 1, or 0 when none waits
 * (nothing is queued then). */
int gw_conn_replace_newest(gw_conn_t *c, chat_rcbuf_t *frame);
/* Writes the queue, then shuts down writing; on_end follows the peer's EOF. Idempotent. */
void gw_conn_close_gracefully(gw_conn_t *c);
/* Drops everything queued; nothing more is written or read. Idempotent. */
void gw_conn_abort(gw_conn_t *c);
/* Closes the socket handle (after abort); cb runs when libuv is done with it. With reset, the
 * connection is reset (RST) instead of closed in order, so that bytes still unsent (in our queue
 * or the kernel's) cannot keep it alive. */
void gw_conn_close_handle(gw_conn_t *c, uv_close_cb cb, int reset);
/* Flushes every connection linked into flush_list. */
void gw_conn_flush_all(chat_list_t *flush_list);

#endif
