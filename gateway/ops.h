/* gateway/ops.h - what operators see of a node, each with its own state struct embedded in the
 * server: the admin listener (admin.c: /healthz, /readyz, /metrics), the metrics exposition
 * (metrics.c: the transport's counters, the process, the broker, then the app's own families)
 * and the graceful drain (drain.c). Included by core.h; the structs are owned by gw_server_t. */
#ifndef CHAT_GATEWAY_OPS_H
#define CHAT_GATEWAY_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

typedef struct gw_server gw_server_t;

/* admin.c: the operators' listener (--admin-listen). */
typedef struct gw_admin {
    uv_tcp_t listener;
    int open;
} gw_admin_t;

/* drain.c: graceful drain on SIGTERM. */
typedef struct gw_drain {
    uv_timer_t tick, deadline;
    int timers_open;
    size_t batch; /* connections closed per tick */
} gw_drain_t;

/* admin.c */
int gw__admin_open(gw_server_t *srv);
void gw__admin_close(gw_server_t *srv);
/* 1 when the node should get traffic; else 0 and the failed conditions in failed[] (static
 * names: "broker", "draining", "capacity"). */
int gw__admin_ready(const gw_server_t *srv, const char **failed, size_t *nfailed);

/* drain.c */
void gw__drain_init(gw_server_t *srv);
void gw__drain_cancel(gw_server_t *srv);
/* Starts the drain: not ready at once, 1001 in batches after --drain-delay, hard deadline. */
void gw__drain_start(gw_server_t *srv);

/* metrics.c: the Prometheus text exposition (format 0.0.4). */
void gw__metrics_render(gw_server_t *srv, chat_buf_t *out);
/* Helpers for the families an app appends (gw_app_t.render_metrics). */
void gw__metrics_family(chat_buf_t *b, const char *name, const char *type, const char *help);
void gw__metrics_sample(chat_buf_t *b, const char *name, const char *labels, uint64_t v);
/* A label value as the text format wants it: \, " and newline escaped. */
void gw__metrics_label_value(chat_buf_t *b, const char *p, size_t n);

#endif
