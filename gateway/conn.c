/* gateway/conn.c - TCP bytes in and out with a shared-frame send queue (see conn.h). */
#include "conn.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

static void conn_flush(gw_conn_t *c);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    gw_conn_t *c = chat_container_of((uv_tcp_t *)h, gw_conn_t, tcp);
    *buf = *c->readbuf;
}

static void end(gw_conn_t *c, int err)
{
    if (c->ended)
        return;
    c->ended = 1;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    c->h->on_end(c->h->ctx, err);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gw_conn_t *c = chat_container_of((uv_tcp_t *)s, gw_conn_t, tcp);
    if (nread > 0) {
        if (!c->graceful && !c->closed)
            c->h->on_data(c->h->ctx, buf->base, (size_t)nread);
        return;
    }
    if (nread < 0)
        end(c, (int)nread);
}

int gw_conn_init(gw_conn_t *c, uv_loop_t *loop, chat_list_t *flush_list, uv_buf_t *readbuf,
                 const gw_conn_handlers_t *h)
{
    memset(c, 0, sizeof(*c));
    c->h = h;
    c->flush_list = flush_list;
    c->readbuf = readbuf;
    chat_list_init(&c->flush_link);
    return uv_tcp_init(loop, &c->tcp);
}

int gw_conn_start(gw_conn_t *c)
{
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc == 0)
        c->reading = 1;
    return rc;
}

static void ring_push(gw_conn_t *c, chat_rcbuf_t *f, int replaceable)
{
    if (c->ring_count == c->ring_cap) {
        size_t cap = c->ring_cap ? c->ring_cap * 2 : 8;
        gw_conn_slot_t *r = chat_xmalloc(cap * sizeof(*r));
        for (size_t i = 0; i < c->ring_count; i++)
            r[i] = c->ring[(c->ring_head + i) % c->ring_cap];
        free(c->ring);
        c->ring = r;
        c->ring_cap = cap;
        c->ring_head = 0;
    }
    c->ring[(c->ring_head + c->ring_count) % c->ring_cap] = (gw_conn_slot_t){f, replaceable};
    if (replaceable) {
        c->newest_repl = c->ring_seq + c->ring_count;
        c->nreplaceable++;
    }
    c->ring_count++;
}

static chat_rcbuf_t *ring_pop(gw_conn_t *c)
{
    gw_conn_slot_t *slot = &c->ring[c->ring_head];
    if (slot->replaceable)
        c->nreplaceable--;
    c->ring_head = (c->ring_head + 1) % c->ring_cap;
    c->ring_count--;
    c->ring_seq++;
    return slot->frame;
}

static void schedule_flush(gw_conn_t *c)
{
    if (!chat_list_is_linked(&c->flush_link))
        chat_list_insert_tail(c->flush_list, &c->flush_link);
}

static void update_reading(gw_conn_t *c)
{
    int want = !c->closed && !c->ended &&
               (c->pause_above == 0 || c->queued_bytes <= c->pause_above || c->graceful);
    if (want && c->paused) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->paused = 0;
            c->reading = 1;
        }
    } else if (!want && c->reading && !c->paused) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->paused = 1;
        c->reading = 0;
    }
}

void gw_conn_set_pause_above(gw_conn_t *c, size_t bytes)
{
    c->pause_above = bytes;
}

/* Every byte queued, whatever its kind, counts against pause_above. */
static void queued_more(gw_conn_t *c)
{
    schedule_flush(c);
    if (c->pause_above && c->queued_bytes > c->pause_above && !c->paused)
        update_reading(c);
}

static void send_frame(gw_conn_t *c, chat_rcbuf_t *frame, int replaceable)
{
    if (c->closed || c->shut || c->ended)
        return;
    ring_push(c, chat_rcbuf_ref(frame), replaceable);
    c->queued_bytes += frame->len;
    queued_more(c);
}

void gw_conn_send(gw_conn_t *c, chat_rcbuf_t *frame)
{
    send_frame(c, frame, 0);
}

void gw_conn_send_replaceable(gw_conn_t *c, chat_rcbuf_t *frame)
{
    send_frame(c, frame, 1);
}

int gw_conn_replace_newest(gw_conn_t *c, chat_rcbuf_t *frame)
{
    if (c->closed || c->shut || c->ended || c->nreplaceable == 0)
        return 0;
    gw_conn_slot_t *slot = &c->ring[(c->ring_head + (c->newest_repl - c->ring_seq)) % c->ring_cap];
    c->queued_bytes = c->queued_bytes - slot->frame->len + frame->len;
    chat_rcbuf_release(slot->frame);
    slot->frame = chat_rcbuf_ref(frame);
    queued_more(c);
    return 1;
}

void gw_conn_send_copy(gw_conn_t *c, const void *p, size_t n)
{
    chat_rcbuf_t *f = chat_rcbuf_new(p, n);
    gw_conn_send(c, f);
    chat_rcbuf_release(f);
}

static void release_inflight(gw_conn_t *c, int written)
{
    for (unsigned i = 0; i < c->ninflight; i++) {
        if (written)
            c->bytes_out += c->inflight[i]->len;
        c->queued_bytes -= c->inflight[i]->len;
        chat_rcbuf_release(c->inflight[i]);
    }
    c->ninflight = 0;
}

static void drop_ring(gw_conn_t *c)
{
    while (c->ring_count) {
        chat_rcbuf_t *f = ring_pop(c);
        c->queued_bytes -= f->len;
        chat_rcbuf_release(f);
    }
    free(c->ring);
    c->ring = NULL;
    c->ring_cap = c->ring_head = 0;
}

void gw_conn_discard_queued(gw_conn_t *c)
{
    drop_ring(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    /* Nothing to do: on_end arrives with the peer's EOF (or the owner's timer fires). */
}

static void maybe_shutdown(gw_conn_t *c)
{
    if (!c->graceful || c->shut || c->writing || c->ring_count || c->closed)
        return;
    c->shut = 1;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        end(c, UV_EOF);
}

static void on_write_done(uv_write_t *req, int status)
{
    gw_conn_t *c = chat_container_of(req, gw_conn_t, write_req);
    c->writing = 0;
    release_inflight(c, status == 0);
    if (c->closed)
        return;
    if (status != 0) {
        end(c, status);
        return;
    }
    if (c->paused)
        update_reading(c);
    if (c->ring_count)
        conn_flush(c);
    else
        maybe_shutdown(c);
}

static void conn_flush(gw_conn_t *c)
{
    uv_buf_t bufs[GW_CONN_MAX_IOV];
    unsigned n = 0;
    if (c->writing || c->closed || c->ended)
        return;
    while (n < GW_CONN_MAX_IOV && c->ring_count) {
        chat_rcbuf_t *f = ring_pop(c);
        c->inflight[n] = f;
        bufs[n++] = uv_buf_init(f->data, (unsigned)f->len);
    }
    if (n == 0) {
        maybe_shutdown(c);
        return;
    }
    c->ninflight = n;
    c->writing = 1;
    c->write_started_ms = uv_now(c->tcp.loop);
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, n, on_write_done);
    if (rc != 0) { /* the callback will not run (libuv rule) */
        c->writing = 0;
        release_inflight(c, 0);
        end(c, rc);
        return;
    }
    if (c->h->on_write_start)
        c->h->on_write_start(c->h->ctx);
}

void gw_conn_flush_all(chat_list_t *flush_list)
{
    while (!chat_list_is_empty(flush_list)) {
        gw_conn_t *c = chat_container_of(flush_list->next, gw_conn_t, flush_link);
        chat_list_unlink(&c->flush_link);
        conn_flush(c);
    }
}

void gw_conn_close_gracefully(gw_conn_t *c)
{
    if (c->graceful || c->closed)
        return;
    c->graceful = 1;
    update_reading(c); /* read again (and discard) to see the peer's EOF */
    schedule_flush(c); /* shutdown happens once the queue is written */
}

void gw_conn_abort(gw_conn_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    if (chat_list_is_linked(&c->flush_link))
        chat_list_unlink(&c->flush_link);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    drop_ring(c);
}

void gw_conn_close_handle(gw_conn_t *c, uv_close_cb cb, int reset)
{
    uv_os_fd_t fd;
    /* The peer did not finish closing in time. Bytes may still be unsent, in our queue or in the
     * kernel's send buffer (a client that stopped reading: its window is shut), and a normal
     * close would leave our FIN behind data the client never reads, so the connection would
     * linger in the kernel: send a RST instead (SO_LINGER 0, what uv_tcp_close_reset does, but
     * allowed after a uv_shutdown too). */
    if (reset && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        struct linger l = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    gw_conn_abort(c);
    /* In-flight write callbacks run with UV_ECANCELED before cb and release their frames. */
    uv_close((uv_handle_t *)&c->tcp, cb);
}
