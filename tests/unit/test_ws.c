/* tests/unit/test_ws.c - gateway/ws.c: client frames built here (masked with a fixed key unless a
 * test says otherwise) go in through gw_ws_feed(); handlers->send output is decoded with a small
 * frame parser and on_message calls are recorded. Covers whole, byte-at-a-time and fragmented
 * messages, ping/pong, binary, every close the layer must send (1002 unmasked / control too long /
 * reserved bits / bad opcodes, 1007 invalid UTF-8 including across fragments and fail-fast, 1009
 * too big, also when one-byte fragments add up), the peer's close handshake, gw_ws_close(), who
 * closed first and why (gw_ws_close_info), and gw_ws_encode()'s exact headers. Every
 * handlers->send call must carry exactly one whole control frame. Input is fed from exact-size
 * heap copies so ASan catches reads past the chunk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "err.h"
#include "rcbuf.h"
#include "ws.h"

enum {
    OP_CONT = 0x0,
    OP_TEXT = 0x1,
    OP_BINARY = 0x2,
    OP_CLOSE = 0x8,
    OP_PING = 0x9,
    OP_PONG = 0xA
};

#define MAX_MSGS   64
#define MAX_FRAMES 64
#define BIG_LIMIT  (1u << 20)

static const unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* ---- recorder ---------------------------------------------------------------------------- */

typedef struct rec_msg {
    int binary;
    char *p;
    size_t n;
} rec_msg_t;

typedef struct fixture {
    gw_ws_t *ws;
    gw_ws_handlers_t h;
    chat_buf_t out; /* everything handlers->send produced */
    size_t nmsgs;
    rec_msg_t msgs[MAX_MSGS];
    int close_on_message; /* on_message calls gw_ws_close(1008) (a policy decision upstream) */
    int close_on_pong;    /* send() calls gw_ws_close(4002) for a pong (a full send queue) */
    size_t nsends;        /* handlers->send calls */
    size_t npongs;        /* of them, pongs */
    size_t max_msg_bytes;
    chat_buf_t in[3]; /* client frames a test builds; owned here so a failing test leaks nothing */
} fixture_t;

static void on_message(void *ctx, int binary, const char *p, size_t n)
{
    fixture_t *f = ctx;

    assert_true(f->nmsgs < MAX_MSGS);
    rec_msg_t *m = &f->msgs[f->nmsgs++];
    m->binary = binary;
    m->n = n;
    m->p = malloc(n + 1);
    assert_non_null(m->p);
    if (n)
        memcpy(m->p, p, n);
    m->p[n] = '\0';
    if (f->close_on_message)
        gw_ws_close(f->ws, GW_CLOSE_POLICY, "policy");
}

/* Each call is one whole, unmasked control frame (2-byte header, <= 125 bytes of payload). */
static void on_send(void *ctx, const char *p, size_t n)
{
    fixture_t *f = ctx;
    assert_true(n >= 2);
    assert_int_equal((unsigned char)p[1] & 0x80, 0);
    assert_true(((unsigned char)p[1] & 0x7f) <= 125);
    assert_int_equal(n, 2 + ((unsigned char)p[1] & 0x7f));
    assert_true((p[0] & 0x08) != 0);
    f->nsends++;
    chat_buf_append(&f->out, p, n);
    if ((p[0] & 0x0f) == GW_WS_OP_PONG) {
        f->npongs++;
        if (f->close_on_pong)
            gw_ws_close(f->ws, 4002, "slow consumer");
    }
}

static void ws_open(fixture_t *f)
{
    f->ws = NULL;
    assert_int_equal(gw_ws_create(&f->ws, f->max_msg_bytes, &f->h), 0);
    assert_non_null(f->ws);
}

static void ws_forget(fixture_t *f)
{
    gw_ws_free(f->ws);
    f->ws = NULL;
    for (size_t i = 0; i < f->nmsgs; i++)
        free(f->msgs[i].p);
    f->nmsgs = 0;
    f->nsends = f->npongs = 0;
    chat_buf_reset(&f->out);
    for (size_t i = 0; i < 3; i++)
        chat_buf_reset(&f->in[i]);
}

static fixture_t *fixture_new(size_t max_msg_bytes)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->h.on_message = on_message;
    f->h.send = on_send;
    f->h.ctx = f;
    f->max_msg_bytes = max_msg_bytes;
    chat_buf_init(&f->out);
    for (size_t i = 0; i < 3; i++)
        chat_buf_init(&f->in[i]);
    ws_open(f);
    return f;
}

/* A fresh WebSocket with the same limit, for tests that try several inputs. */
static void fixture_reset(fixture_t *f)
{
    ws_forget(f);
    ws_open(f);
}

static void fixture_free(fixture_t *f)
{
    ws_forget(f);
    chat_buf_free(&f->out);
    for (size_t i = 0; i < 3; i++)
        chat_buf_free(&f->in[i]);
    free(f);
}

static int setup(void **state)
{
    *state = fixture_new(BIG_LIMIT);
    return 0;
}

static int setup_small(void **state)
{
    *state = fixture_new(100);
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

/* ---- client frame builder ---------------------------------------------------------------- */

/* Appends a frame header. `mask` adds the fixed masking key; `len` is the declared length. */
static void put_header(chat_buf_t *b, int fin, int rsv, int opcode, int mask, uint64_t len)
{
    unsigned char h[14];
    size_t hl = 2;

    h[0] = (unsigned char)((fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0xF));
    if (len < 126) {
        h[1] = (unsigned char)len;
    } else if (len <= 0xFFFF) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        hl = 10;
    }
    if (mask) {
        h[1] |= 0x80;
        memcpy(h + hl, mask_key, 4);
        hl += 4;
    }
    chat_buf_append(b, h, hl);
}

/* Appends payload bytes masked as if they started at offset `off` of the payload. */
static void put_payload(chat_buf_t *b, int mask, const void *p, size_t n, size_t off)
{
    const unsigned char *s = p;

    chat_buf_reserve(b, n);
    for (size_t i = 0; i < n; i++)
        b->p[b->len + i] = (char)(mask ? s[i] ^ mask_key[(off + i) % 4] : s[i]);
    b->len += n;
}

static void put_frame(chat_buf_t *b, int fin, int rsv, int opcode, int mask, const void *p,
                      size_t n)
{
    put_header(b, fin, rsv, opcode, mask, n);
    put_payload(b, mask, p, n, 0);
}

/* A normal client frame: FIN, no RSV, masked. */
static void put_simple(chat_buf_t *b, int opcode, const void *p, size_t n)
{
    put_frame(b, 1, 0, opcode, 1, p, n);
}

static void put_close(chat_buf_t *b, uint16_t code, const char *reason)
{
    char payload[125];
    size_t rl = strlen(reason);

    assert_true(rl <= 123);
    payload[0] = (char)(code >> 8);
    payload[1] = (char)code;
    memcpy(payload + 2, reason, rl);
    put_simple(b, OP_CLOSE, payload, rl + 2);
}

/* ---- feeding ----------------------------------------------------------------------------- */

static int feed(fixture_t *f, const void *p, size_t n)
{
    char *copy = malloc(n ? n : 1);
    int rc;

    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    rc = gw_ws_feed(f->ws, copy, n);
    free(copy);
    assert_true(rc == 0 || rc == CHAT_ECLOSED);
    return rc;
}

static int feed_buf(fixture_t *f, const chat_buf_t *b)
{
    return feed(f, b->p, b->len);
}

/* Feeds b one byte at a time; every feed but possibly the last must return 0. */
static int feed_bytewise(fixture_t *f, const chat_buf_t *b)
{
    int rc = 0;

    for (size_t i = 0; i < b->len; i++) {
        assert_int_equal(rc, 0);
        rc = feed(f, b->p + i, 1);
    }
    return rc;
}

/* ---- server frame decoder ---------------------------------------------------------------- */

typedef struct frame {
    int fin, rsv, opcode;
    const unsigned char *payload;
    size_t len;
} frame_t;

/* Decodes every frame in out. Server frames must be unmasked and complete. */
static size_t decode_frames(const chat_buf_t *out, frame_t *frames, size_t max)
{
    const unsigned char *p = (const unsigned char *)out->p;
    size_t off = 0, n = 0;

    while (off < out->len) {
        assert_true(n < max);
        assert_true(out->len - off >= 2);
        frame_t *fr = &frames[n++];
        fr->fin = p[off] >> 7;
        fr->rsv = (p[off] >> 4) & 7;
        fr->opcode = p[off] & 0xF;
        assert_int_equal(p[off + 1] & 0x80, 0); /* a server never masks */
        uint64_t len = p[off + 1] & 0x7F;
        off += 2;
        if (len == 126) {
            assert_true(out->len - off >= 2);
            len = ((uint64_t)p[off] << 8) | p[off + 1];
            off += 2;
        } else if (len == 127) {
            assert_true(out->len - off >= 8);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | p[off + (size_t)i];
            off += 8;
        }
        assert_true(out->len - off >= len);
        fr->payload = p + off;
        fr->len = (size_t)len;
        off += (size_t)len;
    }
    return n;
}

static uint16_t close_code(const frame_t *fr)
{
    assert_int_equal(fr->opcode, OP_CLOSE);
    if (fr->len < 2)
        return 0;
    return (uint16_t)((fr->payload[0] << 8) | fr->payload[1]);
}

/* Requires the output to end with exactly one close frame carrying `code`, with nothing but
 * control frames before it. */
static frame_t expect_close_sent(const fixture_t *f, uint16_t code)
{
    frame_t frames[MAX_FRAMES];
    size_t n = decode_frames(&f->out, frames, MAX_FRAMES);
    size_t ncloses = 0;

    if (n == 0)
        fail_msg("no frame sent; expected a close with code %u", code);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(frames[i].fin, 1);
        assert_int_equal(frames[i].rsv, 0);
        assert_true(frames[i].opcode >= 0x8); /* ws.c sends no data frames itself */
        if (frames[i].opcode == OP_CLOSE)
            ncloses++;
    }
    assert_int_equal(ncloses, 1);
    assert_int_equal(frames[n - 1].opcode, OP_CLOSE);
    if (close_code(&frames[n - 1]) != code)
        fail_msg("close code %u, want %u", close_code(&frames[n - 1]), code);
    return frames[n - 1];
}

/* An error close: our close frame went out and the WebSocket is done or closing. */
static void expect_failed_with(const fixture_t *f, int rc, uint16_t code)
{
    expect_close_sent(f, code);
    assert_true(rc == CHAT_ECLOSED || gw_ws_closing(f->ws));
    assert_true(gw_ws_closing(f->ws));
}

static void expect_no_output(const fixture_t *f)
{
    assert_int_equal(f->out.len, 0);
}

static void assert_msg(const fixture_t *f, size_t i, int binary, const void *p, size_t n)
{
    assert_true(i < f->nmsgs);
    assert_int_equal(f->msgs[i].binary, binary);
    assert_int_equal(f->msgs[i].n, n);
    if (n)
        assert_memory_equal(f->msgs[i].p, p, n);
}

/* ---- text and binary messages ------------------------------------------------------------ */

static void test_text_message_whole(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_simple(b, OP_TEXT, "hello", 5);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "hello", 5);
    expect_no_output(f);
    assert_int_equal(gw_ws_closing(f->ws), 0);
    assert_int_equal(gw_ws_peer_close_code(f->ws), 0);
}

static void test_text_message_one_byte_at_a_time(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    static const char text[] = "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80";

    put_simple(b, OP_TEXT, text, sizeof(text) - 1);
    for (size_t i = 0; i < b->len; i++) {
        assert_int_equal(f->nmsgs, 0); /* nothing before the last byte */
        assert_int_equal(feed(f, b->p + i, 1), 0);
    }
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, text, sizeof(text) - 1);
    expect_no_output(f);
}

static void test_empty_text_message(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_simple(b, OP_TEXT, "", 0);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "", 0);
}

static void test_several_messages_in_one_feed(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_simple(b, OP_TEXT, "one", 3);
    put_simple(b, OP_BINARY, "two", 3);
    put_simple(b, OP_TEXT, "three", 5);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 3);
    assert_msg(f, 0, 0, "one", 3);
    assert_msg(f, 1, 1, "two", 3);
    assert_msg(f, 2, 0, "three", 5);
}

static void test_extended_length_16(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    char *text = malloc(300);

    assert_non_null(text);
    for (size_t i = 0; i < 300; i++)
        text[i] = (char)('a' + i % 26);
    put_simple(b, OP_TEXT, text, 300);
    assert_int_equal((unsigned char)b->p[1], 0x80 | 126);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, text, 300);
    free(text);
}

static void test_extended_length_64(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    size_t n = 70000;
    char *text = malloc(n);

    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        text[i] = (char)('a' + i % 26);
    put_simple(b, OP_TEXT, text, n);
    assert_int_equal((unsigned char)b->p[1], 0x80 | 127);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, text, n);
    free(text);
}

static void test_binary_message(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    static const char bin[] = {'\x00', '\xFF', '\xC0', '\x80', '\xED', '\xA0', '\x80', 'z'};

    put_simple(b, OP_BINARY, bin, sizeof(bin)); /* not UTF-8, and that is fine for binary */
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 1, bin, sizeof(bin));
    expect_no_output(f);
    assert_int_equal(gw_ws_closing(f->ws), 0);
}

static void test_empty_feed(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(feed(f, "", 0), 0);
    expect_no_output(f);
    assert_int_equal(f->nmsgs, 0);
    assert_int_equal(gw_ws_closing(f->ws), 0);
}

static void test_close_from_on_message_stops_the_rest_of_the_feed(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    f->close_on_message = 1;
    put_simple(b, OP_TEXT, "first", 5);
    put_simple(b, OP_TEXT, "second", 6);
    put_simple(b, OP_PING, "p", 1);
    int rc = feed_buf(f, b);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "first", 5);
    frame_t fr = expect_close_sent(f, GW_CLOSE_POLICY);
    assert_int_equal(fr.len, 2 + 6);
    assert_memory_equal(fr.payload + 2, "policy", 6);
    assert_true(rc == CHAT_ECLOSED || gw_ws_closing(f->ws));
}

/* ---- fragmentation ----------------------------------------------------------------------- */

static void test_fragmented_text_delivered_once(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b1 = &f->in[0], *b2 = &f->in[1], *b3 = &f->in[2];

    put_frame(b1, 0, 0, OP_TEXT, 1, "Hel", 3);
    put_frame(b2, 0, 0, OP_CONT, 1, "lo ", 3);
    put_frame(b3, 1, 0, OP_CONT, 1, "world", 5);
    assert_int_equal(feed_buf(f, b1), 0);
    assert_int_equal(feed_buf(f, b2), 0);
    assert_int_equal(f->nmsgs, 0);
    assert_int_equal(feed_buf(f, b3), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "Hello world", 11);
    expect_no_output(f);
}

static void test_fragmented_text_byte_at_a_time(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 0, 0, OP_TEXT, 1, "ab", 2);
    put_frame(b, 0, 0, OP_CONT, 1, "", 0);
    put_frame(b, 1, 0, OP_CONT, 1, "cd", 2);
    assert_int_equal(feed_bytewise(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "abcd", 4);
}

static void test_fragmented_binary(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 0, 0, OP_BINARY, 1, "\xFF\xFE", 2);
    put_frame(b, 1, 0, OP_CONT, 1, "\xFD", 1);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 1, "\xFF\xFE\xFD", 3);
}

static void test_ping_between_fragments(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    frame_t frames[MAX_FRAMES];

    put_frame(b, 0, 0, OP_TEXT, 1, "frag", 4);
    put_simple(b, OP_PING, "p", 1);
    put_frame(b, 1, 0, OP_CONT, 1, "ment", 4);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "fragment", 8);
    assert_int_equal(decode_frames(&f->out, frames, MAX_FRAMES), 1);
    assert_int_equal(frames[0].opcode, OP_PONG);
    assert_int_equal(frames[0].len, 1);
    assert_memory_equal(frames[0].payload, "p", 1);
}

static void test_valid_multibyte_split_across_fragments(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    /* "x€y" with the euro sign's three bytes in three frames. */
    put_frame(b, 0, 0, OP_TEXT, 1, "x\xE2", 2);
    put_frame(b, 0, 0, OP_CONT, 1, "\x82", 1);
    put_frame(b, 1, 0, OP_CONT, 1, "\xAC\x79", 2);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "x\xE2\x82\xAC\x79", 5);
    expect_no_output(f);
    assert_int_equal(gw_ws_closing(f->ws), 0);
}

static void test_four_byte_char_split_across_two_fragments(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b1 = &f->in[0], *b2 = &f->in[1];

    put_frame(b1, 0, 0, OP_TEXT, 1, "\xF0\x9F", 2);
    put_frame(b2, 1, 0, OP_CONT, 1, "\x98\x80", 2);
    assert_int_equal(feed_buf(f, b1), 0);
    expect_no_output(f);
    assert_int_equal(feed_buf(f, b2), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "\xF0\x9F\x98\x80", 4);
    expect_no_output(f);
}

static void test_continuation_without_start_is_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 1, 0, OP_CONT, 1, "orphan", 6);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
    assert_int_equal(f->nmsgs, 0);
}

static void test_new_message_inside_fragmented_one_is_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 0, 0, OP_TEXT, 1, "start", 5);
    put_frame(b, 1, 0, OP_TEXT, 1, "again", 5);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
    assert_int_equal(f->nmsgs, 0);
}

/* ---- ping / pong ------------------------------------------------------------------------- */

static void test_ping_gets_pong_with_same_payload(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    frame_t frames[MAX_FRAMES];

    put_simple(b, OP_PING, "are you there?", 14);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(decode_frames(&f->out, frames, MAX_FRAMES), 1);
    assert_int_equal(frames[0].fin, 1);
    assert_int_equal(frames[0].opcode, OP_PONG);
    assert_int_equal(frames[0].len, 14);
    assert_memory_equal(frames[0].payload, "are you there?", 14);
    assert_int_equal(f->nmsgs, 0);
    assert_int_equal(gw_ws_closing(f->ws), 0);
}

static void test_empty_ping_and_max_size_ping(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    frame_t frames[MAX_FRAMES];
    unsigned char big[125];

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 7);
    put_simple(b, OP_PING, "", 0);
    put_simple(b, OP_PING, big, sizeof(big));
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(decode_frames(&f->out, frames, MAX_FRAMES), 2);
    assert_int_equal(frames[0].opcode, OP_PONG);
    assert_int_equal(frames[0].len, 0);
    assert_int_equal(frames[1].opcode, OP_PONG);
    assert_int_equal(frames[1].len, sizeof(big));
    assert_memory_equal(frames[1].payload, big, sizeof(big));
}

static void test_ping_fed_byte_at_a_time(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    frame_t frames[MAX_FRAMES];

    put_simple(b, OP_PING, "xyz", 3);
    assert_int_equal(feed_bytewise(f, b), 0);
    assert_int_equal(decode_frames(&f->out, frames, MAX_FRAMES), 1);
    assert_int_equal(frames[0].opcode, OP_PONG);
    assert_memory_equal(frames[0].payload, "xyz", 3);
}

static void test_unsolicited_pong_is_ignored(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_simple(b, OP_PONG, "hb", 2);
    put_simple(b, OP_TEXT, "after", 5);
    assert_int_equal(feed_buf(f, b), 0);
    expect_no_output(f);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, "after", 5);
}

/* ---- protocol errors: 1002 --------------------------------------------------------------- */

static void test_unmasked_frame_is_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 1, 0, OP_TEXT, 0, "hello", 5);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
    assert_int_equal(f->nmsgs, 0);
}

static void test_control_frame_over_125_is_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    char payload[126];

    memset(payload, 'p', sizeof(payload));
    put_simple(b, OP_PING, payload, sizeof(payload));
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
}

static void test_length_with_top_bit_set_is_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    static const unsigned char hdr[] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1};

    /* RFC 6455 5.2: the most significant bit of a 64-bit length must be 0. */
    chat_buf_append(b, hdr, sizeof(hdr));
    chat_buf_append(b, mask_key, 4);
    put_payload(b, 1, "abcd", 4, 0);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
    assert_int_equal(f->nmsgs, 0);
}

static void test_fragmented_control_frame_is_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 0, 0, OP_PING, 1, "p", 1);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
}

static void test_reserved_bits_are_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    for (unsigned rsv = 1; rsv <= 7; rsv++) {
        fixture_reset(f);
        put_frame(b, 1, (int)rsv, OP_TEXT, 1, "x", 1);
        int rc = feed_buf(f, b);
        expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
        assert_int_equal(f->nmsgs, 0);
    }
}

static void test_reserved_opcodes_are_protocol_error(void **state)
{
    static const int ops[] = {0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF};

    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        fixture_reset(f);
        put_simple(b, ops[i], "x", 1);
        int rc = feed_buf(f, b);
        expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
        assert_int_equal(f->nmsgs, 0);
    }
}

static void test_data_after_protocol_error_is_ignored(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 1, 0, OP_TEXT, 0, "bad", 3);
    put_simple(b, OP_TEXT, "later", 5);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
    assert_int_equal(f->nmsgs, 0);
}

/* ---- invalid UTF-8: 1007 ----------------------------------------------------------------- */

static void test_invalid_utf8_text_closes_1007(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_simple(b, OP_TEXT, "bad \xC0\x80 text", 10);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
    assert_int_equal(f->nmsgs, 0);
}

static void test_truncated_utf8_at_message_end_closes_1007(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_simple(b, OP_TEXT, "ends in \xE2\x82", 10);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
    assert_int_equal(f->nmsgs, 0);
}

static void test_invalid_utf8_split_across_fragments_closes_1007(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b1 = &f->in[0], *b2 = &f->in[1];

    /* Each fragment alone could be part of valid text; together they cannot. */
    put_frame(b1, 0, 0, OP_TEXT, 1, "ok \xE2\x82", 5);
    put_frame(b2, 1, 0, OP_CONT, 1, "A", 1);
    assert_int_equal(feed_buf(f, b1), 0);
    expect_no_output(f);
    int rc = feed_buf(f, b2);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
    assert_int_equal(f->nmsgs, 0);
}

static void test_surrogate_split_across_fragments_closes_1007(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b1 = &f->in[0], *b2 = &f->in[1];

    put_frame(b1, 0, 0, OP_TEXT, 1, "\xED", 1);
    put_frame(b2, 1, 0, OP_CONT, 1, "\xA0\x80", 2);
    assert_int_equal(feed_buf(f, b1), 0);
    int rc = feed_buf(f, b2);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
    assert_int_equal(f->nmsgs, 0);
}

static void test_invalid_utf8_fails_fast_in_first_fragment(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    /* The message is not finished, but its first fragment is already hopeless. */
    put_frame(b, 0, 0, OP_TEXT, 1, "\xCE\xBA\xF4\x90\x80\x80", 6);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
    assert_int_equal(f->nmsgs, 0);
}

static void test_invalid_utf8_fails_fast_within_a_frame(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    /* A frame declares 1000 bytes; only the first 8 arrive, and they are already invalid. */
    put_header(b, 1, 0, OP_TEXT, 1, 1000);
    put_payload(b, 1, "abc\xF5xyz!", 8, 0);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
    assert_int_equal(f->nmsgs, 0);
}

static void test_invalid_utf8_in_binary_is_fine_then_text_is_checked(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_frame(b, 0, 0, OP_BINARY, 1, "\xE2\x82", 2);
    put_frame(b, 1, 0, OP_CONT, 1, "A", 1);
    put_simple(b, OP_TEXT, "\xE2\x82\xAC", 3);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 2);
    assert_msg(f, 0, 1, "\xE2\x82\x41", 3);
    assert_msg(f, 1, 0, "\xE2\x82\xAC", 3);
    expect_no_output(f);
}

static void test_validator_resets_between_messages(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    /* A complete message, then a binary one ending mid-sequence, then text: each judged alone. */
    put_simple(b, OP_TEXT, "\xC3\xA9", 2);
    put_simple(b, OP_BINARY, "\xC3", 1);
    put_simple(b, OP_TEXT, "\xA9", 1); /* a lone continuation byte: invalid on its own */
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
    assert_int_equal(f->nmsgs, 2);
}

/* ---- too big: 1009 ----------------------------------------------------------------------- */

static void test_message_at_limit_is_accepted(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];
    char text[100];

    memset(text, 't', sizeof(text));
    put_simple(b, OP_TEXT, text, 100);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, text, 100);
    expect_no_output(f);
}

static void test_message_over_limit_closes_1009(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];
    char text[101];

    memset(text, 't', sizeof(text));
    put_simple(b, OP_TEXT, text, 101);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_TOO_BIG);
    assert_int_equal(f->nmsgs, 0);
}

static void test_fragmented_message_over_limit_closes_1009(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];
    char part[60];

    memset(part, 'f', sizeof(part));
    put_frame(b, 0, 0, OP_TEXT, 1, part, 60);
    put_frame(b, 1, 0, OP_CONT, 1, part, 60);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_TOO_BIG);
    assert_int_equal(f->nmsgs, 0);
}

static void test_binary_over_limit_closes_1009(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];

    /* A 1 GiB frame: only its header and first bytes arrive; they are enough to refuse it. */
    put_header(b, 1, 0, OP_BINARY, 1, 1u << 30);
    put_payload(b, 1, "0123456789", 10, 0);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_TOO_BIG);
    assert_int_equal(f->nmsgs, 0);
}

/* ---- the peer's close -------------------------------------------------------------------- */

static void test_peer_close_is_echoed(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_close(b, 1000, "bye");
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    frame_t fr = expect_close_sent(f, 1000);
    assert_int_equal(fr.len, 2 + 3);
    assert_memory_equal(fr.payload + 2, "bye", 3);
    assert_int_equal(gw_ws_peer_close_code(f->ws), 1000);
    assert_int_equal(gw_ws_closing(f->ws), 1);
    assert_int_equal(f->nmsgs, 0);
}

static void test_peer_close_going_away(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_close(b, 1001, "");
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    expect_close_sent(f, 1001);
    assert_int_equal(gw_ws_peer_close_code(f->ws), 1001);
}

static void test_peer_close_without_code(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    frame_t frames[MAX_FRAMES];

    put_simple(b, OP_CLOSE, "", 0);
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    assert_int_equal(gw_ws_peer_close_code(f->ws), 0);
    assert_int_equal(decode_frames(&f->out, frames, MAX_FRAMES), 1);
    assert_int_equal(frames[0].opcode, OP_CLOSE);
}

static void test_peer_close_byte_at_a_time(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_close(b, 1000, "done");
    assert_int_equal(feed_bytewise(f, b), CHAT_ECLOSED);
    expect_close_sent(f, 1000);
    assert_int_equal(gw_ws_peer_close_code(f->ws), 1000);
}

/* wslay 1.1.1 checks a close reason's UTF-8 per read chunk: ws.c must hand it the frame whole,
 * so the verdict does not depend on how TCP split the bytes. */
static void test_close_reason_split_valid_is_echoed(void **state)
{
    fixture_t *f = *state;
    chat_buf_t b = CHAT_BUF_INIT;
    put_close(&b, 1000, "caf\xc3\xa9 \xe2\x82\xac");
    for (size_t cut = 1; cut < b.len; cut++) {
        fixture_reset(f);
        feed(f, b.p, cut);
        int rc = feed(f, b.p + cut, b.len - cut);
        frame_t fr = expect_close_sent(f, 1000);
        assert_int_equal(fr.len, b.len - 6); /* the reason came back whole */
        assert_int_equal(rc, CHAT_ECLOSED);
    }
    chat_buf_free(&b);
}

static void test_close_reason_split_invalid_is_1007(void **state)
{
    fixture_t *f = *state;
    chat_buf_t b = CHAT_BUF_INIT;
    put_close(&b, 1000, "ok\xff");
    for (size_t cut = 1; cut < b.len; cut++) {
        fixture_reset(f);
        feed(f, b.p, cut);
        feed(f, b.p + cut, b.len - cut);
        expect_close_sent(f, 1007);
    }
    chat_buf_free(&b);
}

static void test_close_split_after_text_frame(void **state)
{
    fixture_t *f = *state;
    chat_buf_t b = CHAT_BUF_INIT;
    put_simple(&b, OP_TEXT, "hello", 5);
    put_close(&b, 1001, "\xc3\xa9");
    for (size_t cut = 1; cut < b.len; cut++) {
        fixture_reset(f);
        feed(f, b.p, cut);
        feed(f, b.p + cut, b.len - cut);
        assert_int_equal(f->nmsgs, 1);
        expect_close_sent(f, 1001);
    }
    chat_buf_free(&b);
}

static void test_peer_close_with_invalid_code_is_protocol_error(void **state)
{
    static const uint16_t bad[] = {0, 999, 1004, 1005, 1006, 1016, 2999, 5000};

    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fixture_reset(f);
        put_close(b, bad[i], "");
        int rc = feed_buf(f, b);
        expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
    }
}

static void test_peer_close_with_one_byte_payload_is_protocol_error(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    /* RFC 6455 5.5.1: a close body starts with a 2-byte code, so 1 byte is a protocol error
     * (Autobahn 7.3.2 expects close 1002 or a dropped connection). */
    put_simple(b, OP_CLOSE, "\x03", 1);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_PROTOCOL);
}

static void test_peer_close_with_invalid_utf8_reason_closes_1007(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_simple(b, OP_CLOSE, "\x03\xE8\xC0\x80", 4);
    int rc = feed_buf(f, b);
    expect_failed_with(f, rc, GW_CLOSE_BAD_DATA);
}

static void test_data_after_peer_close_is_ignored(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_close(b, 1000, "");
    put_simple(b, OP_TEXT, "too late", 8);
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    assert_int_equal(f->nmsgs, 0);
    chat_buf_reset(b);
    put_simple(b, OP_TEXT, "later still", 11);
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    assert_int_equal(f->nmsgs, 0);
    expect_close_sent(f, 1000);
}

/* ---- gw_ws_close ------------------------------------------------------------------------- */

static void test_close_emits_code_and_reason(void **state)
{
    fixture_t *f = *state;

    gw_ws_close(f->ws, GW_CLOSE_POLICY, "rate limit exceeded");
    frame_t fr = expect_close_sent(f, GW_CLOSE_POLICY);
    assert_int_equal(fr.len, 2 + strlen("rate limit exceeded"));
    assert_memory_equal(fr.payload + 2, "rate limit exceeded", fr.len - 2);
    assert_int_equal(gw_ws_closing(f->ws), 1);
    assert_int_equal(gw_ws_peer_close_code(f->ws), 0);
}

static void test_close_without_reason(void **state)
{
    fixture_t *f = *state;

    gw_ws_close(f->ws, GW_CLOSE_GOING_AWAY, NULL);
    frame_t fr = expect_close_sent(f, GW_CLOSE_GOING_AWAY);
    assert_int_equal(fr.len, 2);
}

static void test_close_is_idempotent(void **state)
{
    fixture_t *f = *state;

    gw_ws_close(f->ws, GW_CLOSE_NORMAL, "first");
    size_t len = f->out.len;
    gw_ws_close(f->ws, GW_CLOSE_INTERNAL, "second");
    assert_int_equal(f->out.len, len);
    frame_t fr = expect_close_sent(f, GW_CLOSE_NORMAL);
    assert_memory_equal(fr.payload + 2, "first", 5);
}

static void test_close_reason_truncated_to_123(void **state)
{
    fixture_t *f = *state;
    char reason[201];

    memset(reason, 'r', 200);
    reason[200] = '\0';
    gw_ws_close(f->ws, GW_CLOSE_NORMAL, reason);
    frame_t fr = expect_close_sent(f, GW_CLOSE_NORMAL);
    assert_int_equal(fr.len, 125);
    assert_memory_equal(fr.payload + 2, reason, 123);
}

static void test_no_messages_after_our_close(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    gw_ws_close(f->ws, GW_CLOSE_NORMAL, "");
    put_simple(b, OP_TEXT, "ignored", 7);
    feed_buf(f, b);
    assert_int_equal(f->nmsgs, 0);
    expect_close_sent(f, GW_CLOSE_NORMAL);
}

static void test_close_after_peer_close_sends_nothing_more(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_close(b, 1000, "");
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    size_t len = f->out.len;
    gw_ws_close(f->ws, GW_CLOSE_GOING_AWAY, "shutdown");
    assert_int_equal(f->out.len, len);
    expect_close_sent(f, 1000);
}

/* ---- the message buffer: fragments add up against the limit ------------------------------ */

static void test_one_byte_fragments_up_to_the_limit(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];
    char want[100];

    put_frame(b, 0, 0, OP_TEXT, 1, "{", 1);
    want[0] = '{';
    for (size_t i = 1; i < 100; i++) {
        want[i] = (char)('a' + i % 26);
        put_frame(b, 0, 0, OP_CONT, 1, &want[i], 1);
    }
    put_frame(b, 1, 0, OP_CONT, 1, "", 0);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, want, 100);
    expect_no_output(f);

    /* the next message may be as large again: the count starts over */
    chat_buf_reset(b);
    put_frame(b, 0, 0, OP_TEXT, 1, want, 50);
    put_frame(b, 1, 0, OP_CONT, 1, want + 50, 50);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 2);
    assert_msg(f, 1, 0, want, 100);
}

static void test_one_byte_fragment_past_the_limit_closes_1009(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];

    put_frame(b, 0, 0, OP_TEXT, 1, "{", 1);
    for (size_t i = 1; i < 100; i++)
        put_frame(b, 0, 0, OP_CONT, 1, "a", 1);
    assert_int_equal(feed_buf(f, b), 0);
    expect_no_output(f);
    chat_buf_reset(b);
    put_frame(b, 0, 0, OP_CONT, 1, "a", 1); /* byte 101 */
    int rc = feed_buf(f, b);
    frame_t fr = expect_close_sent(f, GW_CLOSE_TOO_BIG);
    assert_true(rc == CHAT_ECLOSED || gw_ws_closing(f->ws));
    assert_int_equal(fr.len, 2 + strlen("message too big"));
    assert_int_equal(f->nmsgs, 0);
}

static void test_fragment_refused_by_its_declared_length(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];

    put_frame(b, 0, 0, OP_TEXT, 1, "0123456789012345678901234567890123456789", 40);
    assert_int_equal(feed_buf(f, b), 0);
    chat_buf_reset(b);
    /* a continuation declaring 61 bytes: refused by that declared length as soon as wslay
     * reports the frame (with its first payload byte), not after 61 bytes */
    put_header(b, 1, 0, OP_CONT, 1, 61);
    put_payload(b, 1, "a", 1, 0);
    feed_buf(f, b);
    expect_close_sent(f, GW_CLOSE_TOO_BIG);
    assert_int_equal(f->nmsgs, 0);
}

static void test_control_frames_between_fragments_do_not_count(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];
    char p[100];

    memset(p, 'x', sizeof(p));
    put_frame(b, 0, 0, OP_TEXT, 1, p, 50);
    put_simple(b, OP_PING, p, sizeof(p));
    put_frame(b, 1, 0, OP_CONT, 1, p, 50);
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, 0, p, 100);
    assert_int_equal(f->npongs, 1);
}

/* ---- output: whole control frames, one per call ------------------------------------------ */

static void test_many_pings_in_one_feed_give_whole_pongs(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    frame_t frames[MAX_FRAMES];

    for (int i = 0; i < 40; i++) {
        char payload[8];
        int n = snprintf(payload, sizeof(payload), "p%d", i);
        put_simple(b, OP_PING, payload, (size_t)n);
    }
    assert_int_equal(feed_buf(f, b), 0);
    assert_int_equal(f->nsends, 40);
    assert_int_equal(f->npongs, 40);
    assert_int_equal(decode_frames(&f->out, frames, MAX_FRAMES), 40);
    for (int i = 0; i < 40; i++) {
        char payload[8];
        int n = snprintf(payload, sizeof(payload), "p%d", i);
        assert_int_equal(frames[i].opcode, OP_PONG);
        assert_int_equal(frames[i].len, (size_t)n);
        assert_memory_equal(frames[i].payload, payload, (size_t)n);
    }
}

static void test_close_from_send_handler_follows_the_pong(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];
    frame_t frames[MAX_FRAMES];

    f->close_on_pong = 1; /* the pong did not fit in the send queue: a slow consumer */
    put_simple(b, OP_PING, "a", 1);
    put_simple(b, OP_PING, "b", 1);
    put_simple(b, OP_TEXT, "later", 5);
    int rc = feed_buf(f, b);
    assert_true(rc == CHAT_ECLOSED || gw_ws_closing(f->ws));
    assert_int_equal(decode_frames(&f->out, frames, MAX_FRAMES), 2);
    assert_int_equal(frames[0].opcode, OP_PONG);
    assert_memory_equal(frames[0].payload, "a", 1);
    expect_close_sent(f, 4002);
    assert_int_equal(f->nmsgs, 0);
    gw_ws_close_info_t ci;
    gw_ws_close_info(f->ws, &ci);
    assert_int_equal(ci.by, GW_WS_CLOSER_US);
    assert_int_equal(ci.code, 4002);
}

/* ---- who closed first, and why ----------------------------------------------------------- */

static void expect_info(const fixture_t *f, gw_ws_closer_t by, uint16_t code, const char *reason)
{
    gw_ws_close_info_t ci;
    gw_ws_close_info(f->ws, &ci);
    assert_int_equal(ci.by, by);
    assert_int_equal(ci.code, code);
    if (reason == NULL)
        assert_null(ci.reason);
    else
        assert_string_equal(ci.reason, reason);
}

static void test_close_info_open(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    expect_info(f, GW_WS_CLOSER_NONE, 0, NULL);
    put_simple(b, OP_TEXT, "hi", 2);
    put_simple(b, OP_PING, "", 0);
    assert_int_equal(feed_buf(f, b), 0);
    expect_info(f, GW_WS_CLOSER_NONE, 0, NULL);
}

static void test_close_info_of_our_refusals(void **state)
{
    fixture_t *f = *state; /* limit 100 */
    chat_buf_t *b = &f->in[0];
    char big[101];

    memset(big, 'x', sizeof(big));
    put_frame(b, 1, 0, OP_TEXT, 0, "x", 1); /* unmasked */
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_PROTOCOL, "protocol error");

    fixture_reset(f);
    put_header(b, 1, 0, OP_PING, 1, 126); /* refused by wslay's frame layer */
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_PROTOCOL, "protocol error");

    fixture_reset(f);
    put_simple(b, OP_TEXT, "\xFF", 1);
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_BAD_DATA, "invalid UTF-8");

    fixture_reset(f);
    put_simple(b, OP_TEXT, big, sizeof(big)); /* one frame over the limit (wslay's check) */
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_TOO_BIG, "message too big");

    fixture_reset(f);
    put_frame(b, 0, 0, OP_TEXT, 1, big, 60);
    put_frame(b, 1, 0, OP_CONT, 1, big, 41); /* the sum over it (ours) */
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_TOO_BIG, "message too big");

    fixture_reset(f);
    put_simple(b, OP_CLOSE, "\x03", 1); /* a one-byte close body */
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_PROTOCOL, "protocol error");

    fixture_reset(f);
    put_close(b, 999, ""); /* a code that may not be sent */
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_PROTOCOL, "protocol error");

    fixture_reset(f);
    gw_ws_close(f->ws, GW_CLOSE_POLICY, "the caller's reason");
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_POLICY, NULL);
}

static void test_close_info_of_peer_closes(void **state)
{
    fixture_t *f = *state;
    chat_buf_t *b = &f->in[0];

    put_close(b, 3000, "bye");
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    expect_info(f, GW_WS_CLOSER_PEER, 3000, NULL);
    gw_ws_close(f->ws, GW_CLOSE_GOING_AWAY, "too late"); /* the peer was first */
    expect_info(f, GW_WS_CLOSER_PEER, 3000, NULL);

    fixture_reset(f);
    put_simple(b, OP_CLOSE, "", 0);
    assert_int_equal(feed_buf(f, b), CHAT_ECLOSED);
    expect_info(f, GW_WS_CLOSER_PEER, GW_CLOSE_NO_STATUS, NULL);
    assert_int_equal(gw_ws_peer_close_code(f->ws), 0); /* on the wire: no code */

    fixture_reset(f);
    gw_ws_close(f->ws, GW_CLOSE_GOING_AWAY, "shutdown"); /* ours first, the peer answers */
    put_close(b, 1000, "");
    feed_buf(f, b);
    expect_info(f, GW_WS_CLOSER_US, GW_CLOSE_GOING_AWAY, NULL);
}

/* ---- gw_ws_encode ------------------------------------------------------------------------ */

static void check_encode(int binary, size_t n, const unsigned char *want_hdr, size_t hl)
{
    unsigned char *payload = malloc(n ? n : 1);

    assert_non_null(payload);
    for (size_t i = 0; i < n; i++)
        payload[i] = (unsigned char)(i * 31 + 7);
    chat_rcbuf_t *r = gw_ws_encode(binary, payload, n);
    assert_non_null(r);
    assert_int_equal(r->refs, 1);
    assert_int_equal(r->len, hl + n);
    assert_memory_equal(r->data, want_hdr, hl);
    if (n)
        assert_memory_equal(r->data + hl, payload, n);

    /* And the decoder agrees. */
    chat_buf_t enc = CHAT_BUF_INIT;
    frame_t fr;
    chat_buf_append(&enc, r->data, r->len);
    assert_int_equal(decode_frames(&enc, &fr, 1), 1);
    assert_int_equal(fr.fin, 1);
    assert_int_equal(fr.opcode, binary ? OP_BINARY : OP_TEXT);
    assert_int_equal(fr.len, n);
    chat_buf_free(&enc);
    chat_rcbuf_release(r);
    free(payload);
}

static void test_encode_length_0(void **state)
{
    static const unsigned char h[] = {0x81, 0x00};
    check_encode(0, 0, h, sizeof(h));
}

static void test_encode_length_125(void **state)
{
    static const unsigned char h[] = {0x81, 0x7D};
    check_encode(0, 125, h, sizeof(h));
}

static void test_encode_length_126(void **state)
{
    static const unsigned char h[] = {0x81, 0x7E, 0x00, 0x7E};
    check_encode(0, 126, h, sizeof(h));
}

static void test_encode_length_65535(void **state)
{
    static const unsigned char h[] = {0x81, 0x7E, 0xFF, 0xFF};
    check_encode(0, 65535, h, sizeof(h));
}

static void test_encode_length_65536(void **state)
{
    static const unsigned char h[] = {0x81, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};
    check_encode(0, 65536, h, sizeof(h));
}

static void test_encode_binary(void **state)
{
    static const unsigned char h0[] = {0x82, 0x05};
    static const unsigned char h1[] = {0x82, 0x7E, 0x01, 0x00};
    check_encode(1, 5, h0, sizeof(h0));
    check_encode(1, 256, h1, sizeof(h1));
}

int main(void)
{
#define T(fn)  cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TS(fn) cmocka_unit_test_setup_teardown(fn, setup_small, teardown)
    const struct CMUnitTest tests[] = {
        T(test_text_message_whole),
        T(test_text_message_one_byte_at_a_time),
        T(test_empty_text_message),
        T(test_several_messages_in_one_feed),
        T(test_extended_length_16),
        T(test_extended_length_64),
        T(test_binary_message),
        T(test_empty_feed),
        T(test_close_from_on_message_stops_the_rest_of_the_feed),
        T(test_fragmented_text_delivered_once),
        T(test_fragmented_text_byte_at_a_time),
        T(test_fragmented_binary),
        T(test_ping_between_fragments),
        T(test_valid_multibyte_split_across_fragments),
        T(test_four_byte_char_split_across_two_fragments),
        T(test_continuation_without_start_is_protocol_error),
        T(test_new_message_inside_fragmented_one_is_protocol_error),
        T(test_ping_gets_pong_with_same_payload),
        T(test_empty_ping_and_max_size_ping),
        T(test_ping_fed_byte_at_a_time),
        T(test_unsolicited_pong_is_ignored),
        T(test_unmasked_frame_is_protocol_error),
        T(test_control_frame_over_125_is_protocol_error),
        T(test_length_with_top_bit_set_is_protocol_error),
        T(test_fragmented_control_frame_is_protocol_error),
        T(test_reserved_bits_are_protocol_error),
        T(test_reserved_opcodes_are_protocol_error),
        T(test_data_after_protocol_error_is_ignored),
        T(test_invalid_utf8_text_closes_1007),
        T(test_truncated_utf8_at_message_end_closes_1007),
        T(test_invalid_utf8_split_across_fragments_closes_1007),
        T(test_surrogate_split_across_fragments_closes_1007),
        T(test_invalid_utf8_fails_fast_in_first_fragment),
        T(test_invalid_utf8_fails_fast_within_a_frame),
        T(test_invalid_utf8_in_binary_is_fine_then_text_is_checked),
        T(test_validator_resets_between_messages),
        TS(test_message_at_limit_is_accepted),
        TS(test_message_over_limit_closes_1009),
        TS(test_fragmented_message_over_limit_closes_1009),
        TS(test_binary_over_limit_closes_1009),
        T(test_peer_close_is_echoed),
        T(test_peer_close_going_away),
        T(test_peer_close_without_code),
        T(test_peer_close_byte_at_a_time),
        T(test_close_reason_split_valid_is_echoed),
        T(test_close_reason_split_invalid_is_1007),
        T(test_close_split_after_text_frame),
        T(test_peer_close_with_invalid_code_is_protocol_error),
        T(test_peer_close_with_one_byte_payload_is_protocol_error),
        T(test_peer_close_with_invalid_utf8_reason_closes_1007),
        T(test_data_after_peer_close_is_ignored),
        T(test_close_emits_code_and_reason),
        T(test_close_without_reason),
        T(test_close_is_idempotent),
        T(test_close_reason_truncated_to_123),
        T(test_no_messages_after_our_close),
        T(test_close_after_peer_close_sends_nothing_more),
        TS(test_one_byte_fragments_up_to_the_limit),
        TS(test_one_byte_fragment_past_the_limit_closes_1009),
        TS(test_fragment_refused_by_its_declared_length),
        TS(test_control_frames_between_fragments_do_not_count),
        T(test_many_pings_in_one_feed_give_whole_pongs),
        T(test_close_from_send_handler_follows_the_pong),
        T(test_close_info_open),
        TS(test_close_info_of_our_refusals),
        T(test_close_info_of_peer_closes),
        cmocka_unit_test(test_encode_length_0),
        cmocka_unit_test(test_encode_length_125),
        cmocka_unit_test(test_encode_length_126),
        cmocka_unit_test(test_encode_length_65535),
        cmocka_unit_test(test_encode_length_65536),
        cmocka_unit_test(test_encode_binary),
    };
#undef T
#undef TS
    return cmocka_run_group_tests(tests, NULL, NULL);
}
