/* tests/autobahn/echo.c - chat-echo: the Autobahn|Testsuite echo harness. It is the gateway with
 * another app on top of the open WebSocket: every text or binary message goes back to its sender
 * as one frame. Listener, handshake, framing, UTF-8 checks, size limit, send queue and close
 * paths are the gateway's own (gw_server_t, session.c, ws.c, conn.c), configured exactly like
 * chat-gateway (flags, CHAT_* environment, defaults), e.g.
 *   chat-echo --listen 127.0.0.1:9001 --max-message-bytes 16777216 --send-queue-bytes 67108864
 * then ws://127.0.0.1:9001/ws (the gateway's upgrade path; "/chat/{room}" works too, "/" is 404).
 * It runs gw_main(), the very path of chat-gateway's main(), with the echo app instead of chat,
 * and links the gateway's core only (gateway/core.h): no room, envelope or chat file. */
#include "core.h"
#include "run.h"

static void echo_open(gw_session_t *s, const gw_upgrade_t *u)
{
    (void)s;
    (void)u;
}

static void echo_message(gw_session_t *s, int binary, const char *p, size_t n)
{
    chat_rcbuf_t *f = gw_ws_encode(binary, p, n);
    /* A reply: never dropped; over --send-queue-bytes the session closes (4002). */
    gw__session_send(s, f, GW_OUT_MUST);
    chat_rcbuf_release(f);
}

static const gw_app_t echo_app = {
    .on_open = echo_open,
    .on_message = echo_message,
};

int main(int argc, char **argv)
{
    return gw_main(argc, argv, &echo_app);
}
