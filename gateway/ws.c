/* gateway/ws.c - wslay glue: input parsing, UTF-8 checks, close handling, frame encoding (see
 * ws.h). wslay's error codes stop here. */
#include "ws.h"

#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "alloc.h"
#include "err.h"

/* wslay 1.1.1 checks the UTF-8 of a close frame's reason per read chunk, restarting 2 bytes into
 * every chunk: a close frame split across reads is judged wrongly (a valid reason refused, an
 * invalid one echoed back). So the input handed to wslay never splits a close frame: a small
 * tracker follows the frame boundaries of the stream, and the bytes of a close frame (at most
 * 2 + 4 + 125) are held back until the whole frame can be handed over in one read. wslay reads
 * into an empty (or nearly empty) 4 KiB buffer whenever it asks, so the frame arrives whole. */
#define HOLD_MAX (2 + 4 + 125)

typedef struct frame_tracker {
    unsigned char hdr[14]; /* header bytes of the current frame seen so far */
    unsigned hlen, hneed;  /* hneed: full header length once known (0: not yet) */
    uint64_t payload_left; /* after the header */
    int passthrough;       /* a close frame went through: nothing after it matters */
} frame_tracker_t;

struct gw_ws {
    wslay_event_context_ptr ctx;
    const gw_ws_handlers_t *h;
    const char *in; /* the bytes of the current gw_ws_feed() */
    size_t in_len;
    unsigned char hold[HOLD_MAX]; /* the start of a close frame, held until complete */
    size_t hold_len;
    frame_tracker_t ft;
    unsigned closed_by_us : 1;
    uint16_t peer_code;
    uint16_t sent_code; /* code of a close frame we sent ourselves (not through wslay) */
};

/* ---- the input source: held bytes first, then the current feed ---- */

static size_t src_avail(const gw_ws_t *ws)
{
    return ws->hold_len + ws->in_len;
}

static unsigned char src_peek(const gw_ws_t *ws, size_t i)
{
    return i < ws->hold_len ? ws->hold[i] : (unsigned char)ws->in[i - ws->hold_len];
}

static void src_take(gw_ws_t *ws, uint8_t *out, size_t n)
{
    size_t h = n < ws->hold_len ? n : ws->hold_len;
    memcpy(out, ws->hold, h);
    memmove(ws->hold, ws->hold + h, ws->hold_len - h);
    ws->hold_len -= h;
    memcpy(out + h, ws->in, n - h);
    ws->in += n - h;
    ws->in_len -= n - h;
}

/* Moves the rest of the feed into hold (it is the start of a close frame: < HOLD_MAX bytes). */
static void src_hold_rest(gw_ws_t *ws)
{
    memcpy(ws->hold + ws->hold_len, ws->in, ws->in_len);
    ws->hold_len += ws->in_len;
    ws->in += ws->in_len;
    ws->in_len = 0;
}

/* Follows one header byte; sets hneed and payload_left as they become known. */
static void track_header_byte(frame_tracker_t *t, unsigned char c)
{
    t->hdr[t->hlen++] = c;
    if (t->hlen == 2) {
        unsigned len7 = t->hdr[1] & 0x7f;
        t->hneed = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((t->hdr[1] & 0x80) ? 4 : 0);
    }
    if (t->hneed && t->hlen == t->hneed) {
        unsigned len7 = t->hdr[1] & 0x7f;
        uint64_t len = len7;
        if (len7 == 126)
            len = (uint64_t)t->hdr[2] << 8 | t->hdr[3];
        else if (len7 == 127)
            for (int i = 0; i < 8; i++)
                len = i ? len << 8 | t->hdr[2 + i] : t->hdr[2];
        t->payload_left = len;
        t->hlen = t->hneed = 0;
    }
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    gw_ws_t *ws = ud;
    frame_tracker_t *t = &ws->ft;
    size_t n = 0;
    while (n < len && src_avail(ws) > 0) {
        if (t->passthrough) {
            size_t k = len - n < src_avail(ws) ? len - n : src_avail(ws);
            src_take(ws, buf + n, k);
            n += k;
        } else if (t->payload_left > 0) { /* inside a payload: hand over in bulk */
            size_t k = src_avail(ws);
            k = k < len - n ? k : len - n;
            k = (uint64_t)k < t->payload_left ? k : (size_t)t->payload_left;
            src_take(ws, buf + n, k);
            n += k;
            t->payload_left -= k;
        } else if (t->hlen == 0 && (src_peek(ws, 0) & 0x0f) == WSLAY_CONNECTION_CLOSE) {
            /* a close frame starts here: only whole, and at the start of a read */
            if (n > 0)
                break;
            size_t total = 0;
            if (src_avail(ws) >= 2) {
                unsigned b1 = src_peek(ws, 1), len7 = b1 & 0x7f;
                total = 2 + ((b1 & 0x80) ? 4 : 0) + (len7 <= 125 ? len7 : 0);
            }
            if (total == 0 || src_avail(ws) < total) {
                src_hold_rest(ws);
                break;
            }
            total = total < len ? total : len;
            src_take(ws, buf, total);
            n = total;
            t->passthrough = 1;
            break;
        } else { /* a header byte of another frame */
            uint8_t c;
            src_take(ws, &c, 1);
            buf[n++] = c;
            track_header_byte(t, c);
        }
    }
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    gw_ws_t *ws = ud;
    ws->h->send(ws->h->ctx, (const char *)data, len); /* always takes the whole chunk */
    return (ssize_t)len;
}

static void send_close_frame(gw_ws_t *ws, uint16_t code, const char *reason);

/* A close frame must carry nothing or a 2-byte code (RFC 6455 5.5.1); wslay 1.1.1 would treat a
 * 1-byte body as "no code" and answer with an empty close. */
static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1)
        send_close_frame(ud, GW_CLOSE_PROTOCOL, "protocol error");
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    gw_ws_t *ws = ud;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        ws->peer_code = arg->status_code;
        return;
    }
    if (ws->closed_by_us)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        /* Control replies queued so far (pongs) leave before whatever this message causes. */
        wslay_event_send(ws->ctx);
        ws->h->on_message(ws->h->ctx, arg->opcode == WSLAY_BINARY_FRAME, (const char *)arg->msg,
                          arg->msg_length);
    }
}

int gw_ws_create(gw_ws_t **out, size_t max_msg_bytes, const gw_ws_handlers_t *h)
{
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_frame_recv_start_callback = on_frame_start,
        .on_msg_recv_callback = on_msg,
    };
    gw_ws_t *ws = chat_xcalloc(1, sizeof(*ws));
    ws->h = h;
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0) {
        free(ws);
        return CHAT_ENOMEM;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max_msg_bytes);
    *out = ws;
    return 0;
}

void gw_ws_free(gw_ws_t *ws)
{
    if (ws == NULL)
        return;
    wslay_event_context_free(ws->ctx);
    free(ws);
}

/* Writes a close frame directly (bypassing wslay's queue) and stops wslay's output. */
static void send_close_frame(gw_ws_t *ws, uint16_t code, const char *reason)
{
    unsigned char f[2 + 2 + 123];
    size_t rlen = strlen(reason);
    if (ws->closed_by_us || wslay_event_get_close_sent(ws->ctx))
        return;
    ws->closed_by_us = 1;
    ws->sent_code = code;
    f[0] = 0x80 | WSLAY_CONNECTION_CLOSE;
    f[1] = (unsigned char)(2 + rlen);
    f[2] = (unsigned char)(code >> 8);
    f[3] = (unsigned char)code;
    memcpy(f + 4, reason, rlen);
    wslay_event_shutdown_read(ws->ctx);
    wslay_event_shutdown_write(ws->ctx);
    ws->h->send(ws->h->ctx, (const char *)f, 4 + rlen);
}

static int finished(gw_ws_t *ws)
{
    return !wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx);
}

int gw_ws_feed(gw_ws_t *ws, const char *p, size_t n)
{
    ws->in = p;
    ws->in_len = n;
    int rc = wslay_event_recv(ws->ctx);
    ws->in = NULL;
    ws->in_len = 0;
    if (rc != 0) {
        /* WSLAY_ERR_CALLBACK_FAILURE: our recv callback never fails, so the frame layer refused
         * the input (a control frame over 125 bytes or fragmented, a bad length...). wslay then
         * queues a close without a code; send a 1002 of our own instead. WSLAY_ERR_NOMEM: 1011. */
        send_close_frame(ws, rc == WSLAY_ERR_NOMEM ? GW_CLOSE_INTERNAL : GW_CLOSE_PROTOCOL,
                         rc == WSLAY_ERR_NOMEM ? "out of memory" : "protocol error");
        return CHAT_ECLOSED;
    }
    if (wslay_event_send(ws->ctx) != 0)
        return CHAT_ECLOSED;
    return finished(ws) ? CHAT_ECLOSED : 0;
}

void gw_ws_close(gw_ws_t *ws, uint16_t code, const char *reason)
{
    if (ws->closed_by_us)
        return;
    ws->closed_by_us = 1;
    if (!wslay_event_get_close_sent(ws->ctx) && !wslay_event_get_close_received(ws->ctx))
        ws->sent_code = code;
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123)
        rlen = 123;
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, rlen);
    wslay_event_shutdown_read(ws->ctx);
    wslay_event_send(ws->ctx);
}

int gw_ws_closing(const gw_ws_t *ws)
{
    return ws->closed_by_us || wslay_event_get_close_received(ws->ctx) ||
           wslay_event_get_close_sent(ws->ctx);
}

uint16_t gw_ws_peer_close_code(const gw_ws_t *ws)
{
    return ws->peer_code;
}

uint16_t gw_ws_sent_close_code(const gw_ws_t *ws)
{
    if (ws->sent_code)
        return ws->sent_code;
    if (!wslay_event_get_close_sent(ws->ctx))
        return 0;
    uint16_t code = wslay_event_get_status_code_sent(ws->ctx);
    return code == WSLAY_CODE_NO_STATUS_RCVD ? 0 : code;
}

int gw_ws_ping(gw_ws_t *ws)
{
    struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
    if (ws->closed_by_us || wslay_event_queue_msg(ws->ctx, &m) != 0)
        return CHAT_ECLOSED;
    return wslay_event_send(ws->ctx) == 0 ? 0 : CHAT_ECLOSED;
}

chat_rcbuf_t *gw_ws_encode(int binary, const void *p, size_t n)
{
    unsigned char hdr[10];
    size_t hl;
    hdr[0] = 0x80 | (binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME);
    if (n < 126) {
        hdr[1] = (unsigned char)n;
        hl = 2;
    } else if (n <= 0xffff) {
        hdr[1] = 126;
        hdr[2] = (unsigned char)(n >> 8);
        hdr[3] = (unsigned char)n;
        hl = 4;
    } else {
        hdr[1] = 127;
        for (int i = 0; i < 8; i++)
            hdr[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    chat_rcbuf_t *f = chat_rcbuf_new(NULL, hl + n);
    memcpy(f->data, hdr, hl);
    if (n)
        memcpy(f->data + hl, p, n);
    return f;
}
