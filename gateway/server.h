/* gateway/server.h - one gateway node: the public listener, its sessions, its rooms and its
 * broker, all on one libuv loop. No global state: two servers can share a process (tests). */
#ifndef CHAT_GATEWAY_SERVER_H
#define CHAT_GATEWAY_SERVER_H

#include <uv.h>

#include "config.h"

typedef struct gw_server gw_server_t;

/* Loads the JWT keys, opens the broker and binds the listener. cfg is borrowed for the server's
 * lifetime. Returns 0 and *out, CHAT_EINVAL when a key cannot be used (the reason is printed on
 * stderr: a configuration error), or another negative error (nothing is left open; the loop may
 * need one run to finish closing handles). */
int gw_server_start(gw_server_t **out, uv_loop_t *loop, const gw_config_t *cfg);
/* Stops accepting, closes every session (open WebSockets get 1001), closes the broker, and calls
 * on_stopped once everything is closed; the server is freed right after. Idempotent. */
void gw_server_stop(gw_server_t *srv, void (*on_stopped)(void *ctx), void *ctx);

#endif
