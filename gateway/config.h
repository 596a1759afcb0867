/* gateway/config.h - gw_config_t: every setting of a gateway node, each one a command-line flag
 * and a CHAT_ environment variable (upper snake case of the flag), flag over env over default.
 * The option table in config.c is the single source of names, defaults, limits and help text. */
#ifndef CHAT_GATEWAY_CONFIG_H
#define CHAT_GATEWAY_CONFIG_H

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define GW_NODE_ID_MAX 64

typedef struct gw_config {
    char *listen; /* "host:port" as given */
    struct sockaddr_storage listen_addr;
    char *node_id; /* 1..64 of A-Z a-z 0-9 . _ - */
    uint64_t max_rooms_per_conn;
    uint64_t max_text_bytes;
    int room_events;            /* send system join/leave notices */
    uint64_t room_linger_ms;    /* a room stays subscribed this long after its last member */
    /* history and recovery (docs/reliability.md) */
    uint64_t history_size;     /* chat messages kept per room; 0: no history */
    uint64_t history_ttl_ms;   /* a room's history lives this long after its last message */
    uint64_t dedupe_window_ms; /* a retried cid within this is the same message */
    /* connection safety (docs/limits.md) */
    uint64_t max_message_bytes;  /* largest WebSocket message accepted (1009 beyond) */
    uint64_t max_header_bytes;   /* largest HTTP request head (431 beyond) */
    uint64_t handshake_timeout_ms;
    char *allowed_origins;       /* comma list; empty = any */
    uint64_t max_connections;    /* open WebSockets; 0 = unlimited */
    uint64_t ping_interval_ms;
    uint64_t pong_timeout_ms;
    uint64_t idle_timeout_ms;    /* 0 = off */
    uint64_t rate_limit, rate_burst;           /* per connection; 0 = off */
    uint64_t user_rate_limit, user_rate_burst; /* per user on this node; 0 = off */
    uint64_t connect_rate_per_ip, connect_burst_per_ip; /* new connections per address; 0 = off */
    uint64_t send_queue_bytes;
    uint64_t write_timeout_ms;
    /* identity (docs/auth.md) */
    char *jwt_secret;          /* inline HS secret; never printed */
    char *jwt_secret_file;     /* comma list */
    char *jwt_public_key_file; /* comma list */
    int jwt_allow_no_exp;
    uint64_t jwt_leeway_ms;
    char *jwt_issuer, *jwt_audience;
    uint64_t jwt_refresh_window_ms;
    /* operability (docs/operations.md) */
    char *admin_listen; /* empty: no admin listener */
    struct sockaddr_storage admin_addr;
    uint64_t admin_max_connections; /* admin connections served at once (503 beyond) */
    char *log_format;   /* "auto", "json", "text" */
    char *log_level;    /* "error", "warn", "info", "debug" */
    double log_sample_messages; /* 0..1 */
    int log_message_text;
    uint64_t drain_delay_ms, drain_timeout_ms;
    uint64_t metrics_top_rooms;
    char *redis_url;            /* empty: the in-memory broker */
    char *redis_prefix;         /* channel prefix */
    uint64_t redis_timeout_ms;
    char *trusted_proxies;      /* comma list of CIDRs; parsed into proxies[] */
    unsigned nproxies;
    struct gw_cidr {
        int family; /* AF_INET or AF_INET6 */
        unsigned char addr[16];
        unsigned prefix;
    } proxies[32];
    const char *why; /* while loading: the reason of the last refusal (static) */
} gw_config_t;

typedef enum gw_config_result {
    GW_CONFIG_OK = 0,
    GW_CONFIG_EXIT_OK,  /* --help or --version was printed: exit 0 */
    GW_CONFIG_EXIT_BAD, /* an error was printed: exit 2 */
} gw_config_result_t;

/* Fills cfg from defaults, then envp (NULL-terminated "NAME=value" list), then argv. Prints help,
 * version or a clear error (to out / err) when needed. cfg must be released with
 * gw_config_dispose() whatever the result. */
gw_config_result_t gw_config_load(gw_config_t *cfg, int argc, char **argv, char **envp, FILE *out,
                                  FILE *err);
void gw_config_dispose(gw_config_t *cfg);

/* 1 when `origin` (the Origin header's value) may open a WebSocket: no --allowed-origins, or an
 * entry equals it (scheme and host case-insensitive, port exact), or an entry whose host starts
 * with "*." matches it as a subdomain at any depth (not the domain itself), same scheme and port. */
int gw_config_origin_allowed(const gw_config_t *cfg, const char *origin, size_t len);

/* 1 when addr (AF_INET or AF_INET6) is inside one of cfg's trusted proxy ranges. An IPv4-mapped
 * IPv6 address matches IPv4 ranges. */
int gw_config_trusted_proxy(const gw_config_t *cfg, const struct sockaddr *addr);

/* Parses a duration ("500ms", "25s", "2m", "1h" or plain seconds) into ms. Returns 0 or
 * CHAT_EINVAL. */
int gw_parse_duration_ms(const char *s, uint64_t *out_ms);

#endif
