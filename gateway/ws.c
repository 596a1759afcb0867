/* gateway/ws.c - wslay glue: input parsing, UTF-8 checks, close handling, frame encoding (see
 * ws.h). wslay's error codes stop here.
 *
 * Messages are reassembled here, not by wslay. wslay 1.1.1 buffers a message as one heap chunk
 * per frame (about 100 bytes of allocations for a one-byte fragment, counted as one byte against
 * its limit), so a peer sending one-byte fragments made a connection cost 60 times the bytes it
 * sent. wslay runs with no_buffering: it still parses the frames, checks their sequence and
 * validates the UTF-8 of text messages across fragments (at the first bad byte, before the bytes
 * reach us, and an unfinished character at the end), but hands the payload to
 * on_frame_recv_chunk and the end of the message to on_msg_recv. The bytes go into one buffer,
 * msg, grown by doubling but never past max_msg, and freed when the message is delivered: a
 * connection holds at most --max-message-bytes of message, whatever the fragmentation. In that
 * mode wslay's own limit only sees one frame at a time, so the sum of a message's frames is
 * checked here, at each frame's start, before its bytes arrive (1009). */
#include "ws.h"

#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "alloc.h"
#include "buf.h"
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

/* Control frames made by wslay leave through send_cb as a header, then a payload: they are put
 * together here so that handlers->send gets whole frames (a pong can then be told apart). */
#define OUT_MAX     (2 + 125)
#define MSG_MIN_CAP 256 /* the first allocation of a message buffer that must grow */

struct gw_ws {
    wslay_event_context_ptr ctx;
    const gw_ws_handlers_t *h;
    size_t max_msg;
    chat_buf_t msg;     /* the message being received (data frames only); empty between them */
    uint64_t msg_total; /* bytes of the message's frames started so far (their declared sizes) */
    unsigned msg_binary : 1, in_control : 1;
    unsigned char out[OUT_MAX]; /* the control frame being written by wslay */
    size_t out_len, out_need;
    unsigned in_send : 1;       /* inside wslay_event_send() (handlers->send may close ws) */
    gw_ws_closer_t first_close; /* whose close frame came first */
    const char *own_reason;     /* why this layer (or wslay) closed by itself */
    const char *in;             /* the bytes of the current gw_ws_feed() */
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

/* A close frame made by wslay is leaving (in ws->out). Unless it is the echo of the peer's close
 * (then on_msg marked the peer first), wslay refused the input: say why, by its code. */
static void note_wslay_close(gw_ws_t *ws)
{
    if (ws->first_close != GW_WS_CLOSER_NONE)
        return;
    uint16_t code = ws->out_len >= 4 ? (uint16_t)(ws->out[2] << 8 | ws->out[3]) : 0;
    ws->first_close = GW_WS_CLOSER_US;
    ws->own_reason = code == GW_CLOSE_BAD_DATA  ? "invalid UTF-8"
                     : code == GW_CLOSE_TOO_BIG ? "message too big"
                                                : "protocol error";
}

/* wslay's output (control frames only: data never goes through wslay) arrives as a header and a
 * payload; the header of an unmasked control frame is 2 bytes. Whole frames go up. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    gw_ws_t *ws = ud;
    size_t done = 0;
    while (done < len) {
        if (ws->out_len < 2) {
            ws->out[ws->out_len++] = data[done++];
            if (ws->out_len == 2) {
                unsigned len7 = ws->out[1] & 0x7f;
                ws->out_need = 2 + (len7 <= 125 ? len7 : 0);
            }
        } else {
            size_t k = ws->out_need - ws->out_len;
            k = k < len - done ? k : len - done;
            memcpy(ws->out + ws->out_len, data + done, k);
            ws->out_len += k;
            done += k;
        }
        if (ws->out_len >= 2 && ws->out_len == ws->out_need) {
            if ((ws->out[0] & 0x0f) == WSLAY_CONNECTION_CLOSE)
                note_wslay_close(ws);
            ws->h->send(ws->h->ctx, (const char *)ws->out, ws->out_len);
            ws->out_len = ws->out_need = 0;
        }
    }
    return (ssize_t)len; /* always takes the whole chunk */
}

static void send_close_frame(gw_ws_t *ws, uint16_t code, const char *reason);

/* Lets wslay write what it queued. handlers->send may close ws (a pong over the send queue bound
 * makes a slow consumer): that close is only queued then, and this same loop writes it, because
 * wslay_event_send() must not run inside itself. */
static int flush_out(gw_ws_t *ws)
{
    if (ws->in_send)
        return 0;
    ws->in_send = 1;
    int rc = wslay_event_send(ws->ctx);
    ws->in_send = 0;
    return rc;
}

static void msg_drop(gw_ws_t *ws)
{
    chat_buf_free(&ws->msg);
    ws->msg_total = 0;
}

/* Makes room for the message's bytes once `need` in all (need <= max_msg): doubling, but never
 * past max_msg, so the buffer never holds more than the limit. Returns 0 or CHAT_ENOMEM. */
static int msg_reserve(gw_ws_t *ws, size_t need)
{
    if (need <= ws->msg.cap)
        return 0;
    size_t cap = ws->msg.cap * 2;
    if (cap < need)
        cap = need;
    if (cap < MSG_MIN_CAP)
        cap = MSG_MIN_CAP;
    if (cap > ws->max_msg)
        cap = ws->max_msg;
    char *p = realloc(ws->msg.p, cap);
    if (p == NULL)
        return CHAT_ENOMEM;
    ws->msg.p = p;
    ws->msg.cap = cap;
    return 0;
}

/* A frame starts (wslay checked its header and its place in the message sequence). A close
 * frame must carry nothing or a 2-byte code (RFC 6455 5.5.1); wslay 1.1.1 would treat a 1-byte
 * body as "no code" and answer with an empty close. A data frame's declared length counts
 * against the message limit now, before its bytes are read. */
static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    gw_ws_t *ws = ud;
    ws->in_control = (arg->opcode & 0x8) != 0;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1)
        send_close_frame(ws, GW_CLOSE_PROTOCOL, "protocol error");
    if (ws->in_control || ws->closed_by_us)
        return;
    if (arg->opcode != WSLAY_CONTINUATION_FRAME) { /* a new message */
        ws->msg.len = 0;
        ws->msg_total = 0;
        ws->msg_binary = arg->opcode == WSLAY_BINARY_FRAME;
    }
    if (arg->payload_length > ws->max_msg - ws->msg_total) {
        msg_drop(ws);
        send_close_frame(ws, GW_CLOSE_TOO_BIG, "message too big");
        return;
    }
    ws->msg_total += arg->payload_length;
    if (msg_reserve(ws, (size_t)ws->msg_total) != 0) {
        msg_drop(ws);
        send_close_frame(ws, GW_CLOSE_INTERNAL, "out of memory");
    }
}

/* Payload bytes of the current frame, unmasked and (text) UTF-8 checked so far. Control frames
 * are still buffered by wslay (at most 125 bytes). */
static void on_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *ud)
{
    gw_ws_t *ws = ud;
    if (ws->in_control || ws->closed_by_us || arg->data_length == 0)
        return;
    if (arg->data_length > ws->msg.cap - ws->msg.len) { /* more than the frame declared */
        msg_drop(ws);
        send_close_frame(ws, GW_CLOSE_INTERNAL, "internal error");
        return;
    }
    memcpy(ws->msg.p + ws->msg.len, arg->data, arg->data_length);
    ws->msg.len += arg->data_length;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    gw_ws_t *ws = ud;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        ws->peer_code = arg->status_code;
        if (ws->first_close == GW_WS_CLOSER_NONE && !ws->closed_by_us)
            ws->first_close = GW_WS_CLOSER_PEER;
        return;
    }
    if (ws->closed_by_us)
        return;
    if (arg->opcode == WSLAY_PING) {
        /* its pong leaves now: wslay would keep one queued message per ping until the feed ends */
        flush_out(ws);
        return;
    }
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        /* Control replies queued so far (pongs) leave before whatever this message causes. */
        flush_out(ws);
        chat_buf_t m = ws->msg; /* ours until delivered: on_message may close ws */
        ws->msg = CHAT_BUF_INIT;
        ws->msg_total = 0;
        ws->h->on_message(ws->h->ctx, ws->msg_binary, m.p ? m.p : "", m.len);
        chat_buf_free(&m);
    }
}

int gw_ws_create(gw_ws_t **out, size_t max_msg_bytes, const gw_ws_handlers_t *h)
{
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_frame_recv_start_callback = on_frame_start,
        .on_frame_recv_chunk_callback = on_frame_chunk,
        .on_msg_recv_callback = on_msg,
    };
    gw_ws_t *ws = chat_xcalloc(1, sizeof(*ws));
    ws->h = h;
    ws->max_msg = max_msg_bytes;
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0) {
        free(ws);
        return CHAT_ENOMEM;
    }
    wslay_event_config_set_no_buffering(ws->ctx, 1);
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max_msg_bytes); /* one frame's limit */
    *out = ws;
    return 0;
}

void gw_ws_free(gw_ws_t *ws)
{
    if (ws == NULL)
        return;
    wslay_event_context_free(ws->ctx);
    chat_buf_free(&ws->msg);
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
    if (ws->first_close == GW_WS_CLOSER_NONE) {
        ws->first_close = GW_WS_CLOSER_US;
        ws->own_reason = reason;
    }
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
        msg_drop(ws);
        send_close_frame(ws, rc == WSLAY_ERR_NOMEM ? GW_CLOSE_INTERNAL : GW_CLOSE_PROTOCOL,
                         rc == WSLAY_ERR_NOMEM ? "out of memory" : "protocol error");
        return CHAT_ECLOSED;
    }
    if (!wslay_event_get_read_enabled(ws->ctx))
        msg_drop(ws); /* no more input: the message in progress will never end */
    if (flush_out(ws) != 0)
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
    if (ws->first_close == GW_WS_CLOSER_NONE)
        ws->first_close = GW_WS_CLOSER_US; /* why: the caller's reason, not kept here */
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123)
        rlen = 123;
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, rlen);
    wslay_event_shutdown_read(ws->ctx);
    flush_out(ws);
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

void gw_ws_close_info(const gw_ws_t *ws, gw_ws_close_info_t *out)
{
    out->by = ws->first_close;
    out->reason = NULL;
    out->code = 0;
    if (ws->first_close == GW_WS_CLOSER_US) {
        out->code = gw_ws_sent_close_code(ws);
        out->reason = ws->own_reason;
    } else if (ws->first_close == GW_WS_CLOSER_PEER) {
        out->code = ws->peer_code ? ws->peer_code : GW_CLOSE_NO_STATUS;
    }
}

int gw_ws_ping(gw_ws_t *ws)
{
    struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
    if (ws->closed_by_us || wslay_event_queue_msg(ws->ctx, &m) != 0)
        return CHAT_ECLOSED;
    return flush_out(ws) == 0 ? 0 : CHAT_ECLOSED;
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
