/* tests/fuzz/fuzz_ws_input.c - libFuzzer target for the frame input path of gateway/ws.h.
 * Input: 1 config byte (bits 0-2: max message 16 << k bytes; bit 3: on_message closes with 1008,
 * as the app does on a policy breach; bit 4: gw_ws_close(1000) after the input; bit 5: with an
 * over-long reason; bit 6: gw_ws_ping() after every feed, as the idle timer does), FUZZ_NCHUNK
 * bytes of chunk sizes (fuzz.h), then the client's byte stream (frames must be masked). The
 * stream goes to two WebSockets, in one feed and in chunks, each until gw_ws_feed() reports
 * CHAT_ECLOSED; both must give the same messages, output and verdict.
 * Invariants: text messages are valid UTF-8 (a reference decoder, independent of wslay's), no
 * message exceeds the limit or arrives after a close frame left; after every call the output is
 * whole, valid, unmasked server frames: FIN, no RSV bits, only pong, empty ping and close,
 * control payloads <= 125 bytes, at most one close and nothing after it, a close code that may
 * be sent (RFC 6455 7.4) with a UTF-8 reason and reported by gw_ws_sent_close_code(), and
 * CHAT_ECLOSED only once a close has left. Each message also goes through gw_ws_encode(), whose
 * frame must hold it exactly. */
#include <string.h>

#include "buf.h"
#include "err.h"
#include "rcbuf.h"
#include "ws.h"

#include "fuzz.h"

#define PREFIX (1 + FUZZ_NCHUNK)

enum { OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xa };

typedef struct fuzz_ws {
    gw_ws_t *ws;
    gw_ws_handlers_t h;
    size_t max_msg;
    int close_on_message;
    chat_buf_t out;      /* everything handlers->send produced */
    size_t checked;      /* bytes of out already parsed as frames */
    int close_sent;      /* a close frame is in out */
    uint16_t close_code; /* its code, 0 when it has none */
    size_t close_off;    /* where it starts in out */
    size_t nmsgs;
    uint64_t digest; /* FNV-1a over every message: kind, length, bytes */
} fuzz_ws_t;

static int close_code_sendable(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* Parses one server frame at p[0..n). Returns its length, or 0 when it is incomplete. */
static size_t check_frame(fuzz_ws_t *f, const unsigned char *p, size_t n)
{
    if (n < 2)
        return 0;
    unsigned op = p[0] & 0x0f;
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;

    FUZZ_CHECK((p[0] & 0x80) != 0);                               /* FIN */
    FUZZ_CHECK((p[0] & 0x70) == 0);                               /* RSV1-3 */
    FUZZ_CHECK((p[1] & 0x80) == 0);                               /* a server never masks */
    FUZZ_CHECK(op == OP_PONG || op == OP_CLOSE || op == OP_PING); /* data never goes via wslay */
    FUZZ_CHECK(len <= 125); /* control frames: no extended lengths */
    if (n < hl + len)
        return 0;
    if (op == OP_PING)
        FUZZ_CHECK(len == 0); /* gw_ws_ping() sends empty pings */

    FUZZ_CHECK(!f->close_sent); /* nothing follows our close */
    if (op == OP_CLOSE) {
        f->close_sent = 1;
        f->close_off = (size_t)((const char *)p - f->out.p);
        FUZZ_CHECK(len != 1);
        if (len >= 2) {
            f->close_code = (uint16_t)(p[hl] << 8 | p[hl + 1]);
            FUZZ_CHECK(close_code_sendable(f->close_code));
            FUZZ_CHECK(fuzz_utf8_valid(p + hl + 2, (size_t)len - 2));
        } else {
            /* only an echo of the peer's code-less close goes without a code */
            FUZZ_CHECK(gw_ws_peer_close_code(f->ws) == 0);
        }
    }
    return hl + (size_t)len;
}

/* After every call into ws: the output so far is whole frames, each valid. */
static void check_output(fuzz_ws_t *f)
{
    const unsigned char *p = (const unsigned char *)f->out.p;
    while (f->checked < f->out.len) {
        size_t used = check_frame(f, p + f->checked, f->out.len - f->checked);
        FUZZ_CHECK(used != 0); /* a frame cut short */
        f->checked += used;
    }
    FUZZ_CHECK(gw_ws_sent_close_code(f->ws) == (f->close_sent ? f->close_code : 0));
}

/* gw_ws_ping() fails exactly when the WebSocket is closing; otherwise an empty ping leaves. */
static void ping(fuzz_ws_t *f)
{
    int closing = gw_ws_closing(f->ws);
    size_t before = f->out.len;
    int rc = gw_ws_ping(f->ws);
    FUZZ_CHECK(rc == 0 || rc == CHAT_ECLOSED);
    FUZZ_CHECK((rc == CHAT_ECLOSED) == (closing != 0));
    check_output(f);
    if (rc == 0)
        FUZZ_CHECK(f->out.len == before + 2 && (unsigned char)f->out.p[before] == 0x89);
}

/* What the gateway would send back: gw_ws_encode() of the message is one unmasked server frame
 * with FIN, the right opcode, the minimal length encoding and the same bytes. */
static void check_encode(int binary, const char *p, size_t n)
{
    chat_rcbuf_t *f = gw_ws_encode(binary, p, n);
    const unsigned char *h = (const unsigned char *)f->data;
    size_t hl = n < 126 ? 2 : n <= 0xffff ? 4 : 10;
    FUZZ_CHECK(f->refs == 1 && f->len == hl + n);
    FUZZ_CHECK(h[0] == (binary ? 0x82 : 0x81));
    if (hl == 2) {
        FUZZ_CHECK(h[1] == n);
    } else if (hl == 4) {
        FUZZ_CHECK(h[1] == 126 && ((size_t)h[2] << 8 | h[3]) == n);
    } else {
        uint64_t len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        FUZZ_CHECK(h[1] == 127 && len == n);
    }
    FUZZ_CHECK(n == 0 || memcmp(f->data + hl, p, n) == 0);
    chat_rcbuf_release(f);
}

static void on_message(void *ctx, int binary, const char *p, size_t n)
{
    fuzz_ws_t *f = ctx;

    FUZZ_CHECK(!f->close_sent);
    FUZZ_CHECK(n <= f->max_msg);
    FUZZ_CHECK(n == 0 || p != NULL);
    if (!binary)
        FUZZ_CHECK(fuzz_utf8_valid((const unsigned char *)p, n));
    f->digest = (f->digest ^ (uint64_t)(binary != 0)) * 1099511628211u;
    f->digest = (f->digest ^ (uint64_t)n) * 1099511628211u;
    for (size_t i = 0; i < n; i++) /* also makes ASan check that every byte is readable */
        f->digest = (f->digest ^ (unsigned char)p[i]) * 1099511628211u;
    check_encode(binary, p, n);
    f->nmsgs++;
    if (f->close_on_message)
        gw_ws_close(f->ws, GW_CLOSE_POLICY, "policy");
}

static void on_send(void *ctx, const char *p, size_t n)
{
    fuzz_ws_t *f = ctx;
    FUZZ_CHECK(n > 0);
    chat_buf_append(&f->out, p, n);
}

/* The close frame in f's output (empty when none) and what precedes it (pongs and pings). */
static chat_str_t close_frame(const fuzz_ws_t *f)
{
    if (!f->close_sent)
        return CHAT_LIT("");
    return chat_str(f->out.p + f->close_off, f->out.len - f->close_off);
}

static chat_str_t pongs(const fuzz_ws_t *f)
{
    return chat_str(f->out.len ? f->out.p : "", f->close_sent ? f->close_off : f->out.len);
}

/* One run over the stream: whole (ch == NULL, one feed) or in chunks. Returns the last
 * gw_ws_feed() result; f keeps the output and the message digest. */
static int run(fuzz_ws_t *f, uint8_t cfg, const uint8_t *in, size_t n, fuzz_chunker_t *ch)
{
    static const char long_reason[] =
        "a reason longer than the 123 bytes a close frame can carry, so that gw_ws_close() "
        "has to cut it short before it queues the frame (this is byte 140)";

    memset(f, 0, sizeof(*f));
    f->max_msg = (size_t)16 << (cfg & 7);
    f->close_on_message = (cfg & 0x08) != 0;
    f->digest = 14695981039346656037u;
    f->h = (gw_ws_handlers_t){.on_message = on_message, .send = on_send, .ctx = f};
    chat_buf_init(&f->out);
    FUZZ_CHECK(gw_ws_create(&f->ws, f->max_msg, &f->h) == 0);
    FUZZ_CHECK(!gw_ws_closing(f->ws) && gw_ws_peer_close_code(f->ws) == 0);

    size_t off = 0;
    int rc = 0;
    while (off < n && rc == 0) {
        int empty_first = 0;
        size_t len = ch != NULL ? fuzz_next_chunk(ch, n - off, &empty_first) : n;
        if (empty_first) {
            rc = gw_ws_feed(f->ws, (const char *)in + off, 0);
            FUZZ_CHECK(rc == 0 || rc == CHAT_ECLOSED);
            check_output(f);
            if (rc != 0)
                break;
        }
        rc = gw_ws_feed(f->ws, (const char *)in + off, len);
        FUZZ_CHECK(rc == 0 || rc == CHAT_ECLOSED);
        check_output(f);
        off += len;
        if (ch != NULL && (cfg & 0x40))
            ping(f);
    }
    if (rc == CHAT_ECLOSED) {
        FUZZ_CHECK(f->close_sent); /* every end leaves with a close frame */
        FUZZ_CHECK(gw_ws_closing(f->ws));
    }
    if (f->close_sent)
        FUZZ_CHECK(gw_ws_closing(f->ws));
    uint16_t peer = gw_ws_peer_close_code(f->ws);
    FUZZ_CHECK(peer == 0 || close_code_sendable(peer));

    if (cfg & 0x10) {
        int was_closing = gw_ws_closing(f->ws);
        gw_ws_close(f->ws, GW_CLOSE_NORMAL, (cfg & 0x20) ? long_reason : "bye");
        check_output(f);
        FUZZ_CHECK(gw_ws_closing(f->ws));
        if (!was_closing)
            FUZZ_CHECK(f->close_sent && f->close_code == GW_CLOSE_NORMAL);
        gw_ws_close(f->ws, GW_CLOSE_NORMAL, "again"); /* idempotent */
        check_output(f);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX)
        return 0;
    const uint8_t cfg = data[0];
    fuzz_chunker_t ch = {.sizes = data + 1, .next = 0};
    fuzz_ws_t whole, chunked;

    int rc_whole = run(&whole, cfg, data + PREFIX, size - PREFIX, NULL);
    int rc_chunked = run(&chunked, cfg, data + PREFIX, size - PREFIX, &ch);

    /* the split of the stream changes nothing: same messages, same close, same verdict */
    FUZZ_CHECK(whole.nmsgs == chunked.nmsgs && whole.digest == chunked.digest);
    /* (wslay 1.1.1 judged a close reason's UTF-8 per read chunk: ws.c now hands it every close
     * frame whole; the seed corpus/ws_input/close_reason_split found that) */
    {
        FUZZ_CHECK(rc_whole == rc_chunked);
        FUZZ_CHECK(whole.close_sent == chunked.close_sent);
        chat_str_t wc = close_frame(&whole), cc = close_frame(&chunked);
        FUZZ_CHECK(chat_str_eq(wc, cc));
        /* and the same pongs, except that a pong still queued when the input ends the
         * WebSocket is dropped: by ws.c on a frame-level error (1002, it stops wslay's output
         * to send its own close) and by wslay 1.1.1 when a close arrives in the same read as
         * the ping (RFC 6455 5.5.2 allows that). So one feed may send fewer than several. */
        chat_str_t wp = pongs(&whole), cp = pongs(&chunked);
        if (!(cfg & 0x40)) { /* pings after every feed differ by design */
            FUZZ_CHECK(wp.len <= cp.len && memcmp(wp.p, cp.p, wp.len) == 0);
            if (!whole.close_sent)
                FUZZ_CHECK(wp.len == cp.len);
        }
    }

    gw_ws_free(whole.ws);
    chat_buf_free(&whole.out);
    gw_ws_free(chunked.ws);
    chat_buf_free(&chunked.out);
    return 0;
}
