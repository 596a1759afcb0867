/* gateway/run.h - the whole life of a gateway process, for main() and for test harnesses that put
 * another app on the same connection path. */
#ifndef CHAT_GATEWAY_RUN_H
#define CHAT_GATEWAY_RUN_H

struct gw_app;

/* Loads the configuration from argv and the environment, runs one server with `app` on its open
 * WebSockets (gateway/core.h; the chat: gw_chat_app) until it has drained after SIGTERM/SIGINT,
 * and returns the process exit status (0; 1 on a runtime failure; 2 for an invalid
 * configuration). */
int gw_main(int argc, char **argv, const struct gw_app *app);

#endif
