/* gateway/ws.h - the WebSocket layer of one connection (RFC 6455, server side) on top of wslay.
 * wslay parses input: masking, fragmentation, control frames, the message size limit (1009),
 * UTF-8 validation of text messages across fragments, failing as soon as a bad byte arrives
 * (1007), automatic pong and close replies. This layer hands complete messages up, makes sure
 * every protocol failure leaves with a close code (1002 where wslay would send none), and keeps
 * control replies ahead of the data they precede.
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
    GW_CLOSE_BAD_DATA = 1007,    /* invalid UTF-8 */
    GW_CLOSE_POLICY = 1008,
    GW_CLOSE_TOO_BIG = 1009,
    GW_CLOSE_INTERNAL = 1011,
};

typedef struct gw_ws gw_ws_t;

typedef struct gw_ws_handlers {
    /* One complete message: text (valid UTF-8) or binary. Borrowed during the call. */
    void (*on_message)(void *ctx, int binary, const char *p, size_t n);
    /* Bytes to write to the peer (a control frame made by wslay). Borrowed: copy or ref. */
    void (*send)(void *ctx, const char *p, size_t n);
    void *ctx;
} gw_ws_handlers_t;

/* Creates a server-side WebSocket. max_msg_bytes bounds a message (fragments included); a larger
 * one closes with 1009. The handlers struct is borrowed for the life of ws. Returns 0 or
 * CHAT_ENOMEM. */
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
/* Sends a ping (empty payload). Returns 0, or CHAT_ECLOSED once closing. */
int gw_ws_ping(gw_ws_t *ws);

/* Encodes one unmasked server data frame (FIN set) holding p[0..n): text, or binary when
 * binary != 0. Returns a new rcbuf (one reference, the caller's). */
chat_rcbuf_t *gw_ws_encode(int binary, const void *p, size_t n);

#endif
