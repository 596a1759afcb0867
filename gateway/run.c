/* gateway/run.c - what the chat-gateway binary does (gw_main): configuration, logging setup, one
 * server on the default loop, signals, and a clean exit (every handle closed, uv_loop_close() ==
 * 0) so leak checkers see a quiet process. main.c runs it with the chat app; test harnesses run
 * the same path with another app (tests/autobahn/echo.c).
 *   SIGTERM, SIGINT: graceful drain (docs/operations.md), then exit 0; a second one exits at once
 *                    with status 1.
 *   SIGHUP:          toggles the log level between the configured one and debug; nothing is
 *                    reopened or dropped. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "err.h"
#include "core.h"
#include "log.h"
#include "run.h"
#include "server.h"

extern char **environ;

typedef struct app {
    uv_loop_t *loop;
    gw_server_t *srv;
    uv_signal_t sigterm, sigint, sighup;
    chat_log_level_t level; /* the configured one */
    int stopping;
} app_t;

static void on_stopped(void *ctx)
{
    app_t *app = ctx;
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sighup, NULL);
    app->srv = NULL;
}

static void on_signal(uv_signal_t *h, int signum)
{
    app_t *app = h->data;
    if (signum == SIGHUP) {
        chat_log_level_t to = chat_log_get_level() == CHAT_LOG_DEBUG ? app->level : CHAT_LOG_DEBUG;
        chat_log_set_level(CHAT_LOG_INFO); /* so that the change itself is visible */
        CHAT_LOG(CHAT_LOG_INFO, "log level changed", CHAT_KV_C("reason", "SIGHUP"),
                 CHAT_KV_C("new_level", chat_log_level_name(to)));
        chat_log_set_level(to);
        return;
    }
    if (app->stopping) {
        CHAT_LOG(CHAT_LOG_WARN, "second signal: exiting now", CHAT_KV_C("reason", strsignal(signum)));
        exit(1);
    }
    app->stopping = 1;
    CHAT_LOG(CHAT_LOG_INFO, "draining", CHAT_KV_C("reason", strsignal(signum)));
    gw_server_stop(app->srv, on_stopped, app);
}

static void setup_logging(const gw_config_t *cfg, app_t *app)
{
    chat_log_format_t format = strcmp(cfg->log_format, "text") == 0   ? CHAT_LOG_TEXT
                               : strcmp(cfg->log_format, "json") == 0 ? CHAT_LOG_JSON
                               : isatty(STDOUT_FILENO)                 ? CHAT_LOG_TEXT
                                                                       : CHAT_LOG_JSON;
    chat_log_parse_level(cfg->log_level, &app->level);
    chat_log_setup(format, app->level, cfg->node_id);
}

int gw_main(int argc, char **argv, const struct gw_app *what)
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
    setup_logging(&cfg, &app);
    app.loop = uv_default_loop();
    if ((rc = gw_server_start(&app.srv, app.loop, &cfg, what)) != 0) {
        if (rc != CHAT_EINVAL) /* CHAT_EINVAL: a configuration problem, already explained */
            fprintf(stderr, "chat-gateway: cannot listen on %s (or %s): %s\n", cfg.listen,
                    cfg.admin_listen, uv_strerror(rc));
        uv_run(app.loop, UV_RUN_DEFAULT);
        uv_loop_close(app.loop);
        gw_config_dispose(&cfg);
        return rc == CHAT_EINVAL ? 2 : 1;
    }
    uv_signal_init(app.loop, &app.sigterm);
    uv_signal_init(app.loop, &app.sigint);
    uv_signal_init(app.loop, &app.sighup);
    app.sigterm.data = app.sigint.data = app.sighup.data = &app;
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_start(&app.sighup, on_signal, SIGHUP);
    CHAT_LOG(CHAT_LOG_INFO, "listening", CHAT_KV_C("addr", cfg.listen),
             CHAT_KV_C("admin", cfg.admin_listen), CHAT_KV_C("broker", cfg.redis_url[0] ? "redis" : "memory"),
             CHAT_KV_C("version", CHAT_VERSION));
    uv_run(app.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(app.loop);
    gw_config_dispose(&cfg);
    if (rc != 0) {
        fprintf(stderr, "chat-gateway: loop not closed cleanly: %s\n", uv_strerror(rc));
        return 1;
    }
    CHAT_LOG0(CHAT_LOG_INFO, "stopped");
    return 0;
}
