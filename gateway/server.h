/* gateway/server.h - one gateway node: the public listener, its sessions, its rooms and its
 * broker, all on one libuv loop. No global state: two servers can share a process (tests). */
#ifndef CHAT_GATEWAY_SERVER_H
#define CHAT_GATEWAY_SERVER_H

#include <uv.h>

#include "config.h"

typedef struct gw_server gw_server_t;
struct gw_app;

/* Loads the JWT keys, opens the broker, starts the app (what runs on open WebSockets: the chat,
 * gw_chat_app in chat.h, or a test harness's) and binds the listeners. cfg and app are borrowed
 * for the server's lifetime. Returns 0 and *out, CHAT_EINVAL when a key cannot be used (the
 * reason is printed on stderr: a configuration error), or another negative error (nothing is
 * left open; the loop may need one run to finish closing handles). */
int gw_server_start(gw_server_t **out, uv_loop_t *loop, const gw_config_t *cfg,
                    const struct gw_app *app);
/* Drains (docs/operations.md; drain.c): not ready at once, new upgrades 503, then every open
 * WebSocket gets 1001 in batches; closes the broker and calls on_stopped once everything is
 * closed; the server is freed right after. Idempotent. */
void gw_server_stop(gw_server_t *srv, void (*on_stopped)(void *ctx), void *ctx);

#endif
