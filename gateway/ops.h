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
#include "list.h"

typedef struct gw_server gw_server_t;

/* The listeners whose accepts are guarded (gw__admin_guard_accept). */
typedef enum gw_listener_kind {
    GW_LISTENER_PUBLIC = 0,
    GW_LISTENER_ADMIN,
    GW_LISTENER_N,
} gw_listener_kind_t;

/* Why a listener did not take a connection (chat_accept_errors_total{reason}). */
typedef enum gw_accept_error {
    GW_ACCEPT_FD_LIMIT = 0, /* accepted, but no descriptor was left after it: 503 and closed */
    GW_ACCEPT_EMFILE,       /* accept() failed: the process is out of descriptors */
    GW_ACCEPT_ENFILE,       /* accept() failed: the system is */
    GW_ACCEPT_OTHER,        /* any other accept() failure */
    GW_ACCEPT_N,
} gw_accept_error_t;

/* Why an admin connection was refused (chat_admin_refused_total{reason}). */
typedef enum gw_admin_refusal {
    GW_ADMIN_REFUSED_MAX_CONNECTIONS = 0, /* over --admin-max-connections: 503 at once */
    GW_ADMIN_REFUSED_TIMEOUT,             /* no complete request within --handshake-timeout: 408 */
    GW_ADMIN_REFUSED_BAD_REQUEST,         /* malformed, badly framed (400) or too large (431) */
    GW_ADMIN_REFUSED_N,
} gw_admin_refusal_t;

/* Descriptors the public listener leaves free, besides --admin-max-connections: so that the
 * admin listener (and the broker's reconnects) still find one when public clients hold all the
 * others. */
#define GW_FD_RESERVE 8

/* A log record at most once a second for a repeated event, with the number of events; what a
 * second held back is written when it ends (gw_admin_t.log_flush). */
typedef struct gw_log_gate {
    uint64_t last_ms; /* uv_now() of the last record */
    uint64_t pending; /* events since that record */
    int logged;       /* a record was written (last_ms is valid) */
} gw_log_gate_t;

/* admin.c: the operators' listener (--admin-listen), and the accept guard of both listeners. */
typedef struct gw_admin {
    uv_tcp_t listener;
    int open;
    chat_list_t conns; /* admin connections being read or answered */
    size_t nconns;
    gw_log_gate_t refused_log[GW_ADMIN_REFUSED_N];
    /* the accept guard (gw__admin_guard_accept): a descriptor kept in reserve, given up when
     * accept() itself fails so that libuv's next accept succeeds (and is refused) instead of
     * failing again; the last RLIMIT_NOFILE read; the rate limits of the records */
    int spare_fd; /* -1: none */
    uint64_t nofile;
    gw_log_gate_t accept_log[GW_LISTENER_N][GW_ACCEPT_N];
    uv_timer_t log_flush; /* writes the records the gates held back */
    int log_flush_open;
} gw_admin_t;

/* drain.c: graceful drain on SIGTERM. */
typedef struct gw_drain {
    uv_timer_t tick, deadline;
    int timers_open;
    size_t batch; /* connections closed per tick */
} gw_drain_t;

/* admin.c */
/* Prepares srv->admin before the listeners open (the accept guard's spare descriptor, the
 * timer of the rate-limited records). */
void gw__admin_init(gw_server_t *srv);
/* Opens the admin listener, if any. Each admin connection is read for one request within
 * --handshake-timeout (408 after it), at most --admin-max-connections at a time (beyond: 503 at
 * once and closed), and closed after its answer (or after --handshake-timeout more to write
 * it). Returns 0 or a uv error. */
int gw__admin_open(gw_server_t *srv);
/* Closes the admin listener, every admin connection and the spare descriptor. */
void gw__admin_close(gw_server_t *srv);
/* The first thing a listener's connection callback does (the public one in server.c, the admin
 * one here). status < 0 (accept() failed): counted and logged (at most once a second per
 * listener), the spare descriptor is given up for EMFILE/ENFILE; returns 0. status == 0: returns
 * 1 when the connection may be accepted; 0 when it took the last descriptor (on the public
 * listener: one of the last --admin-max-connections + GW_FD_RESERVE): it was accepted, answered
 * 503 and closed, counted and logged. libuv 1.44 handles an accept() that fails with EMFILE on
 * its own (its spare descriptor: the pending connections are closed, the callback never runs),
 * so this guard keeps a descriptor free for the next accept instead. */
int gw__admin_guard_accept(gw_server_t *srv, uv_stream_t *listener, gw_listener_kind_t which,
                           int status);
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
