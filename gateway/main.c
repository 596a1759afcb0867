/* gateway/main.c - the chat-gateway binary: configuration, one server on the default loop,
 * signals, and a clean exit (every handle closed, uv_loop_close() == 0) so leak checkers see a
 * quiet process. SIGTERM/SIGINT stop the server; a second one exits at once with status 1. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "server.h"

extern char **environ;

typedef struct app {
    uv_loop_t *loop;
    gw_server_t *srv;
    uv_signal_t sigterm, sigint;
    int stopping;
} app_t;

static void on_stopped(void *ctx)
{
    app_t *app = ctx;
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    app->srv = NULL;
}

static void on_signal(uv_signal_t *h, int signum)
{
    app_t *app = h->data;
    if (app->stopping) {
        chat_log(CHAT_LOG_WARN, "main", "second %s: exiting now", strsignal(signum));
        exit(1);
    }
    app->stopping = 1;
    chat_log(CHAT_LOG_INFO, "main", "%s: stopping", strsignal(signum));
    gw_server_stop(app->srv, on_stopped, app);
}

int main(int argc, char **argv)
{
    gw_config_t cfg;
    app_t app = {0};
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
    app.loop = uv_default_loop();
    if ((rc = gw_server_start(&app.srv, app.loop, &cfg)) != 0) {
        if (rc != CHAT_EINVAL) /* CHAT_EINVAL: a configuration problem, already explained */
            fprintf(stderr, "chat-gateway: cannot listen on %s: %s\n", cfg.listen,
                    uv_strerror(rc));
        uv_run(app.loop, UV_RUN_DEFAULT);
        uv_loop_close(app.loop);
        gw_config_dispose(&cfg);
        return rc == CHAT_EINVAL ? 2 : 1;
    }
    uv_signal_init(app.loop, &app.sigterm);
    uv_signal_init(app.loop, &app.sigint);
    app.sigterm.data = app.sigint.data = &app;
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    chat_log(CHAT_LOG_INFO, "main", "node %s listening on %s (broker: %s)", cfg.node_id,
             cfg.listen, cfg.redis_url[0] ? "redis" : "memory");
    uv_run(app.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(app.loop);
    gw_config_dispose(&cfg);
    if (rc != 0) {
        fprintf(stderr, "chat-gateway: loop not closed cleanly: %s\n", uv_strerror(rc));
        return 1;
    }
    chat_log(CHAT_LOG_INFO, "main", "stopped");
    return 0;
}
