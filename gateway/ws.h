/* gateway/ws.h - the WebSocket layer of one connection (RFC 6455, server side) on top of wslay.
 * wslay parses input: masking, the frame sequence of fragmented messages, control frames, UTF-8
 * validation of text messages across fragments, failing as soon as a bad byte arrives (1007),
 * automatic pong and close replies. This layer reassembles messages into one buffer bounded by
 * the message limit (1009 as soon as the frames' declared lengths pass it, whatever the
 * fragmentation), hands complete messages up, makes sure every protocol failure leaves with a
 * close code (1002 where wslay would send none), keeps control replies ahead of the data they
 * precede, and remembers who closed first and why.
 * Output never goes through wslay's copying queue for data: gw_ws_encode() builds a server frame
 * once into a chat_rcbuf_t that every recipient shares. Control frames made by wslay leave through
 * handlers->send. No sockets here: bytes in via gw_ws_feed(), bytes out via handlers->send. */
#ifndef CHAT_GATEWAY_WS_H
#define CHAT_GATEWAY_WS_H

#include <stddef.h>
#include <stdint.h>

#include "rcbuf.h"

/* Close codes used by the gateway (docs/protocol.md lists them with the client's duty). */
enum gw_close_code {
    GW_CLOSE_NORMAL = 1000,
    GW_CLOSE_GOING_AWAY = 1001,
    GW_CLOSE_PROTOCOL = 1002,
    GW_CLOSE_UNSUPPORTED = 1003, /* binary frames */
    GW_CLOSE_NO_STATUS = 1005,   /* never sent: counts a peer's close frame that had no code */
    GW_CLOSE_BAD_DATA = 1007,    /* invalid UTF-8 */
    GW_CLOSE_POLICY = 1008,
    GW_CLOSE_TOO_BIG = 1009,
    GW_CLOSE_INTERNAL = 1011,
};

/* Opcodes of the control frames handlers->send carries (p[0] & 0x0f). */
enum gw_ws_opcode { GW_WS_OP_CLOSE = 0x8, GW_WS_OP_PING = 0x9, GW_WS_OP_PONG = 0xA };

typedef struct gw_ws gw_ws_t;

typedef struct gw_ws_handlers {
    /* One complete message: text (valid UTF-8) or binary. Borrowed during the call. */
    void (*on_message)(void *ctx, int binary, const char *p, size_t n);
    /* One whole control frame to write to the peer (a pong, our ping or a close; its opcode is
     * p[0] & 0x0f, see gw_ws_opcode), made by wslay or by this layer. Borrowed: copy it. It may
     * call gw_ws_close() (a frame that does not fit): that close follows once it returns. */
    void (*send)(void *ctx, const char *p, size_t n);
    void *ctx;
} gw_ws_handlers_t;

/* Creates a server-side WebSocket. max_msg_bytes bounds a message (fragments included): a larger
 * one closes with 1009 as soon as its frames' declared lengths pass it, and the message buffer
 * never holds more than max_msg_bytes (it is freed between messages). The handlers struct is
 * borrowed for the life of ws. Returns 0 or CHAT_ENOMEM. */
int gw_ws_create(gw_ws_t **out, size_t max_msg_bytes, const gw_ws_handlers_t *h);
void gw_ws_free(gw_ws_t *ws);
/* Processes n input bytes (all consumed). Handlers may run during the call. Returns 0, or
 * CHAT_ECLOSED when the WebSocket is finished (close sent and received, or failed): the caller
 * should close the connection gracefully once its queue is written. */
int gw_ws_feed(gw_ws_t *ws, const char *p, size_t n);
/* Queues a close frame with code and reason (at most 123 bytes) and stops reading. Idempotent. */
void gw_ws_close(gw_ws_t *ws, uint16_t code, const char *reason);
/* 1 once a close frame was sent or received (no data frames may follow ours). */
int gw_ws_closing(const gw_ws_t *ws);
/* The code of the close frame received from the peer, 0 when none (or none with a code). */
uint16_t gw_ws_peer_close_code(const gw_ws_t *ws);
/* The code of the close frame we sent (ours or wslay's), 0 when none was sent. */
uint16_t gw_ws_sent_close_code(const gw_ws_t *ws);

/* Who sent the first close frame. */
typedef enum gw_ws_closer {
    GW_WS_CLOSER_NONE = 0, /* no close frame either way (yet) */
    GW_WS_CLOSER_US,       /* ours: a protocol error, a limit, or gw_ws_close() */
    GW_WS_CLOSER_PEER,     /* the peer's (ours, if any, was its echo) */
} gw_ws_closer_t;

typedef struct gw_ws_close_info {
    gw_ws_closer_t by;
    /* US: the code we sent; PEER: the peer's code, GW_CLOSE_NO_STATUS (1005) when its close
     * frame had none; NONE: 0. */
    uint16_t code;
    /* US, when this layer closed by itself: why ("protocol error", "invalid UTF-8", "message too
     * big", "out of memory", "internal error"; static). NULL otherwise: gw_ws_close()'s caller
     * knows its reason. */
    const char *reason;
} gw_ws_close_info_t;

/* How ws closed so far, for the close record and the counters by code. */
void gw_ws_close_info(const gw_ws_t *ws, gw_ws_close_info_t *out);
/* Sends a ping (empty payload). Returns 0, or CHAT_ECLOSED once closing. */
int gw_ws_ping(gw_ws_t *ws);

/* Encodes one unmasked server data frame (FIN set) holding p[0..n): text, or binary when
 * binary != 0. Returns a new rcbuf (one reference, the caller's). */
chat_rcbuf_t *gw_ws_encode(int binary, const void *p, size_t n);

#endif
