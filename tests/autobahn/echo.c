/* tests/autobahn/echo.c - chat-echo: the Autobahn|Testsuite echo harness. It is the gateway with
 * another app on top of the open WebSocket: every text or binary message goes back to its sender
 * as one frame. Listener, handshake, framing, UTF-8 checks, size limit, send queue and close
 * paths are the gateway's own (gw_server_t, session.c, ws.c, conn.c), configured exactly like
 * chat-gateway (flags, CHAT_* environment, defaults), e.g.
 *   chat-echo --listen 127.0.0.1:9001 --max-message-bytes 16777216 --send-queue-bytes 67108864
 * then ws://127.0.0.1:9001/ws (the gateway's upgrade path; "/chat/{room}" works too, "/" is 404).
 * SIGTERM/SIGINT stop the server (open WebSockets get 1001); the process exits 0 once every
 * handle is closed. A second signal exits at once with status 1. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "internal.h"
#include "log.h"
#include "server.h"

extern char **environ;

typedef struct echo_main {
    uv_loop_t *loop;
    gw_server_t *srv;
    uv_signal_t sigterm, sigint;
    int stopping;
} echo_main_t;

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

static void on_stopped(void *ctx)
{
    echo_main_t *m = ctx;
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    m->srv = NULL;
}

static void on_signal(uv_signal_t *h, int signum)
{
    echo_main_t *m = h->data;
    if (m->stopping) {
        CHAT_LOG(CHAT_LOG_WARN, "second signal: exiting now", CHAT_KV_C("reason", strsignal(signum)));
        exit(1);
    }
    m->stopping = 1;
    CHAT_LOG(CHAT_LOG_INFO, "stopping", CHAT_KV_C("reason", strsignal(signum)));
    gw_server_stop(m->srv, on_stopped, m);
}

int main(int argc, char **argv)
{
    gw_config_t cfg;
    echo_main_t m = {0};
    int rc;
    signal(SIGPIPE, SIG_IGN);
    switch (gw_config_load(&cfg, argc, argv, environ, stdout, stderr)) {
    case GW_CONFIG_OK:
        break;
    case GW_CONFIG_EXIT_OK:
        gw_config_dispose(&cfg);
        return 0;
    case GW_CONFIG_EXIT_BAD:
        gw_config_dispose(&cfg);
        return 2;
    }
    chat_log_setup(CHAT_LOG_TEXT, CHAT_LOG_INFO, cfg.node_id);
    m.loop = uv_default_loop();
    if ((rc = gw_server_start(&m.srv, m.loop, &cfg)) != 0) {
        fprintf(stderr, "chat-echo: cannot listen on %s: %s\n", cfg.listen, uv_strerror(rc));
        uv_run(m.loop, UV_RUN_DEFAULT);
        uv_loop_close(m.loop);
        gw_config_dispose(&cfg);
        return 1;
    }
    gw__server_set_app(m.srv, &echo_app); /* before the loop runs: no connection yet */
    uv_signal_init(m.loop, &m.sigterm);
    uv_signal_init(m.loop, &m.sigint);
    m.sigterm.data = m.sigint.data = &m;
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    CHAT_LOG(CHAT_LOG_INFO, "echo harness listening", CHAT_KV_C("addr", cfg.listen),
             CHAT_KV_N("max_message_bytes", cfg.max_message_bytes));
    uv_run(m.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(m.loop);
    gw_config_dispose(&cfg);
    if (rc != 0) {
        fprintf(stderr, "chat-echo: loop not closed cleanly: %s\n", uv_strerror(rc));
        return 1;
    }
    CHAT_LOG0(CHAT_LOG_INFO, "stopped");
    return 0;
}
