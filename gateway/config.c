/* gateway/config.c - the option table, flag/env/default resolution and validation (see config.h).
 * Nothing here listens or allocates beyond the strings it keeps; errors print one clear line. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"

#ifndef CHAT_VERSION
#define CHAT_VERSION "0.0.0"
#endif

typedef enum opt_kind {
    OPT_STR,
    OPT_UINT,
    OPT_BOOL,
    OPT_DURATION,
    OPT_ADDR,
    OPT_NODE,
    OPT_REDIS_URL,
    OPT_PREFIX,
    OPT_CIDRS,
    OPT_ORIGINS,
    OPT_SECRET, /* a string that is never echoed */
    OPT_RATIO,  /* a number from 0 to 1 */
    OPT_ADMIN,  /* HOST:PORT or empty */
    OPT_ENUM,   /* one of the words in `meta` separated by | */
} opt_kind_t;

typedef struct opt {
    const char *name; /* flag without the leading "--" */
    opt_kind_t kind;
    const char *def; /* default as text; NULL = computed (node id) */
    const char *meta;
    const char *help;
    size_t offset;
    uint64_t min, max; /* OPT_UINT, OPT_DURATION (ms) */
} opt_t;

#define FIELD(f) offsetof(gw_config_t, f)

static const opt_t options[] = {
    {"listen", OPT_ADDR, "0.0.0.0:8080", "HOST:PORT",
     "address of the public WebSocket/HTTP listener (IPv4, [IPv6] or localhost)", FIELD(listen),
     0, 0},
    {"node-id", OPT_NODE, NULL, "ID",
     "name of this node in welcome envelopes and ids (default: host name); 1-64 of A-Za-z0-9._-",
     FIELD(node_id), 0, 0},
    {"max-rooms-per-conn", OPT_UINT, "128", "N", "rooms one connection may be in at once",
     FIELD(max_rooms_per_conn), 1, 1000000},
    {"max-text-bytes", OPT_UINT, "4096", "N", "longest `text` (bytes) a chat message may carry",
     FIELD(max_text_bytes), 1, 1048576},
    {"room-events", OPT_BOOL, "true", "BOOL",
     "send system join/leave notices to the other members of a room", FIELD(room_events), 0, 0},
    {"room-linger", OPT_DURATION, "15s", "DURATION",
     "keep a room subscribed this long after its last local member left (reconnects find it)",
     FIELD(room_linger_ms), 0, 3600000},
    {"history-size", OPT_UINT, "100", "N",
     "chat messages kept per room for history and recovery; 0 turns history off",
     FIELD(history_size), 0, 1000},
    {"history-ttl", OPT_DURATION, "24h", "DURATION",
     "a room's history is kept this long after its last message", FIELD(history_ttl_ms), 1000,
     30ULL * 24 * 3600 * 1000},
    {"dedupe-window", OPT_DURATION, "2m", "DURATION",
     "a chat retried with the same cid within this is stored and delivered once (history on)",
     FIELD(dedupe_window_ms), 1000, 3600000},
    {"max-message-bytes", OPT_UINT, "65536", "N",
     "largest WebSocket message (fragments included); larger closes with 1009",
     FIELD(max_message_bytes), 125, 268435456},
    {"max-header-bytes", OPT_UINT, "8192", "N",
     "largest HTTP request head; larger gets 431", FIELD(max_header_bytes), 1024, 1048576},
    {"handshake-timeout", OPT_DURATION, "10s", "DURATION",
     "time to complete the upgrade request (and an admin request); slower clients get 408 and "
     "are disconnected",
     FIELD(handshake_timeout_ms), 100, 600000},
    {"allowed-origins", OPT_ORIGINS, "", "ORIGINS",
     "comma list of origins (https://chat.example.com) or https://*.example.com patterns "
     "allowed to open WebSockets from a browser (403 otherwise); empty: any",
     FIELD(allowed_origins), 0, 0},
    {"max-connections", OPT_UINT, "0", "N",
     "open WebSockets on this node; beyond, new upgrades get 503 with Retry-After; 0: unlimited",
     FIELD(max_connections), 0, 100000000},
    {"ping-interval", OPT_DURATION, "25s", "DURATION",
     "send a WebSocket ping after this long without hearing from the client",
     FIELD(ping_interval_ms), 100, 3600000},
    {"pong-timeout", OPT_DURATION, "10s", "DURATION",
     "close (4000) when nothing arrives this long after a ping; shorter than --ping-interval",
     FIELD(pong_timeout_ms), 50, 3600000},
    {"idle-timeout", OPT_DURATION, "0", "DURATION",
     "close (4001) a connection that sent no application message for this long; 0: off",
     FIELD(idle_timeout_ms), 0, 604800000},
    {"rate-limit", OPT_UINT, "20", "N",
     "messages per second per connection (typing and join have their own buckets); 0: off",
     FIELD(rate_limit), 0, 1000000},
    {"rate-burst", OPT_UINT, "40", "N", "burst of the per-connection message bucket",
     FIELD(rate_burst), 1, 1000000},
    {"user-rate-limit", OPT_UINT, "50", "N",
     "messages per second across all connections of one user on this node; 0: off",
     FIELD(user_rate_limit), 0, 1000000},
    {"user-rate-burst", OPT_UINT, "100", "N", "burst of the per-user message bucket",
     FIELD(user_rate_burst), 1, 1000000},
    {"connect-rate-per-ip", OPT_UINT, "20", "N",
     "new WebSocket connections per second from one client address (the X-Forwarded-For client "
     "behind --trusted-proxies); 429 beyond; 0: off",
     FIELD(connect_rate_per_ip), 0, 1000000},
    {"connect-burst-per-ip", OPT_UINT, "200", "N", "burst of the per-address connection bucket",
     FIELD(connect_burst_per_ip), 1, 1000000},
    {"send-queue-bytes", OPT_UINT, "1048576", "N",
     "bytes waiting to be written to one connection; a chat beyond closes it (4002), typing and "
     "system messages beyond are dropped",
     FIELD(send_queue_bytes), 4096, 1073741824},
    {"write-timeout", OPT_DURATION, "30s", "DURATION",
     "close (4003) a connection whose writes make no progress for this long",
     FIELD(write_timeout_ms), 100, 3600000},
    {"jwt-secret", OPT_SECRET, "", "SECRET",
     "HMAC secret for HS256/384/512 tokens (prefer --jwt-secret-file: command lines are "
     "visible to other users)",
     FIELD(jwt_secret), 0, 0},
    {"jwt-secret-file", OPT_STR, "", "FILES",
     "comma list of files, each holding an HMAC secret (trimmed); a token's kid selects the file "
     "whose name without extension equals it",
     FIELD(jwt_secret_file), 0, 0},
    {"jwt-public-key-file", OPT_STR, "", "FILES",
     "comma list of PEM public keys (RSA for RS256/384/512, EC P-256/P-384 for ES256/ES384); "
     "kid selects by file name",
     FIELD(jwt_public_key_file), 0, 0},
    {"jwt-allow-no-exp", OPT_BOOL, "false", "BOOL", "accept tokens without an exp claim",
     FIELD(jwt_allow_no_exp), 0, 0},
    {"jwt-leeway", OPT_DURATION, "30s", "DURATION", "clock skew tolerated for exp, nbf and iat",
     FIELD(jwt_leeway_ms), 0, 3600000},
    {"jwt-issuer", OPT_STR, "", "ISS", "required iss claim; empty: not checked", FIELD(jwt_issuer),
     0, 0},
    {"jwt-audience", OPT_STR, "", "AUD", "required aud claim (one of); empty: not checked",
     FIELD(jwt_audience), 0, 0},
    {"jwt-refresh-window", OPT_DURATION, "30s", "DURATION",
     "send token_expiring this long before a connection's token expires", FIELD(jwt_refresh_window_ms),
     0, 86400000},
    {"admin-listen", OPT_ADMIN, "127.0.0.1:9090", "HOST:PORT",
     "operators' listener: /healthz, /readyz, /metrics (never the public one); empty: none",
     FIELD(admin_listen), 0, 0},
    {"admin-max-connections", OPT_UINT, "16", "N",
     "connections the admin listener serves at once (each gets --handshake-timeout to send its "
     "request); beyond, a new one gets 503 and is closed",
     FIELD(admin_max_connections), 1, 10000},
    {"log-format", OPT_ENUM, "auto", "auto|json|text",
     "log records on stdout: one JSON object per line, or text; auto: JSON unless stdout is a "
     "terminal",
     FIELD(log_format), 0, 0},
    {"log-level", OPT_ENUM, "info", "error|warn|info|debug", "least severe level logged",
     FIELD(log_level), 0, 0},
    {"log-sample-messages", OPT_RATIO, "0.01", "RATIO",
     "share of client messages logged (0.01 = 1 in 100), at most 100 records per second",
     FIELD(log_sample_messages), 0, 0},
    {"log-message-text", OPT_BOOL, "false", "BOOL",
     "include the chat text in sampled message records (off: text never reaches the logs)",
     FIELD(log_message_text), 0, 0},
    {"drain-delay", OPT_DURATION, "5s", "DURATION",
     "on SIGTERM: time between turning not-ready and closing connections (load balancers stop "
     "routing meanwhile)",
     FIELD(drain_delay_ms), 0, 600000},
    {"drain-timeout", OPT_DURATION, "20s", "DURATION",
     "on SIGTERM: the node has exited by then; connections are closed in batches spread over "
     "what is left after the delay",
     FIELD(drain_timeout_ms), 100, 3600000},
    {"metrics-top-rooms", OPT_UINT, "50", "N",
     "rooms with their own chat_room_messages_total series; the rest are summed as _other",
     FIELD(metrics_top_rooms), 0, 10000},
    {"redis-url", OPT_REDIS_URL, "", "URL",
     "Redis for multi-node fan-out: redis://[[user]:password@]host[:port][/db], "
     "unix:///path[?db=N] or host:port; empty: the in-memory broker (one node)",
     FIELD(redis_url), 0, 0},
    {"redis-prefix", OPT_PREFIX, "chat:", "PREFIX",
     "start of every Redis channel name (rooms: <prefix>room:<room>)", FIELD(redis_prefix), 0,
     0},
    {"redis-timeout", OPT_DURATION, "2s", "DURATION",
     "Redis connect and command timeout; a command without a reply by then fails",
     FIELD(redis_timeout_ms), 10, 60000},
    {"trusted-proxies", OPT_CIDRS, "", "CIDRS",
     "comma list of proxy address ranges (10.0.0.0/8,::1/128) whose X-Forwarded-For is "
     "believed; empty: none",
     FIELD(trusted_proxies), 0, 0},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static void env_name(const opt_t *o, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "CHAT_");
    for (const char *p = o->name; *p && n + 1 < cap; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n] = '\0';
}

int gw_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    /* grammar: DIGITS [ "." DIGITS ] [ "ms" | "s" | "m" | "h" ] (no sign, exponent or hex) */
    uint64_t whole = 0, frac = 0, frac_scale = 1;
    const char *p = s;
    if (s == NULL || !isdigit((unsigned char)*p))
        return CHAT_EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        if (whole > 1000000000000ULL)
            return CHAT_EINVAL;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        if (!isdigit((unsigned char)*++p))
            return CHAT_EINVAL;
        for (; isdigit((unsigned char)*p); p++)
            if (frac_scale < 1000000) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_scale *= 10;
            }
    }
    uint64_t mult;
    if (strcmp(p, "") == 0 || strcmp(p, "s") == 0)
        mult = 1000;
    else if (strcmp(p, "ms") == 0)
        mult = 1;
    else if (strcmp(p, "m") == 0)
        mult = 60000;
    else if (strcmp(p, "h") == 0)
        mult = 3600000;
    else
        return CHAT_EINVAL;
    if (whole > 1000000000000ULL / mult)
        return CHAT_EINVAL;
    if (frac * mult % frac_scale != 0)
        return CHAT_EINVAL; /* finer than a millisecond */
    *out_ms = whole * mult + frac * mult / frac_scale;
    return 0;
}

static int parse_uint(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return CHAT_EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return CHAT_EINVAL;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *out = 1;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *out = 0;
    else
        return CHAT_EINVAL;
    return 0;
}

static int parse_addr(const char *s, struct sockaddr_storage *ss)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    uint64_t port;
    if (colon == NULL || colon == s || parse_uint(colon + 1, &port) != 0 || port > 65535)
        return CHAT_EINVAL;
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof(host))
        return CHAT_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss) ? CHAT_EINVAL : 0;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) ? CHAT_EINVAL : 0;
}

static int node_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_NODE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return 0;
    return 1;
}

static int parse_cidr(const char *s, size_t n, struct gw_cidr *out)
{
    char buf[64];
    const char *slash = memchr(s, '/', n);
    size_t al = slash ? (size_t)(slash - s) : n;
    uint64_t bits;
    if (al == 0 || al >= sizeof(buf))
        return CHAT_EINVAL;
    memcpy(buf, s, al);
    buf[al] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        bits = 128;
    } else {
        return CHAT_EINVAL;
    }
    if (slash) {
        char pb[8];
        size_t pl = n - al - 1;
        uint64_t p;
        if (pl == 0 || pl >= sizeof(pb))
            return CHAT_EINVAL;
        memcpy(pb, slash + 1, pl);
        pb[pl] = '\0';
        if (parse_uint(pb, &p) != 0 || p > bits)
            return CHAT_EINVAL;
        bits = p;
    }
    out->prefix = (unsigned)bits;
    return 0;
}

static int parse_cidrs(gw_config_t *cfg, const char *s)
{
    unsigned n = 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if (n >= sizeof(cfg->proxies) / sizeof(cfg->proxies[0]) ||
            parse_cidr(p, (size_t)(e - p), &cfg->proxies[n]) != 0)
            return CHAT_EINVAL;
        n++;
        p = e;
    }
    cfg->nproxies = n;
    return 0;
}

/* One origin pattern: scheme "://" [ "*." ] host [ ":" port ], no path. */
static int origin_entry_valid(const char *p, size_t n)
{
    const char *sep = n >= 3 ? strstr(p, "://") : NULL;
    if (sep == NULL || sep == p || (size_t)(sep - p) + 3 >= n)
        return 0;
    for (const char *c = p; c < sep; c++)
        if (!isalpha((unsigned char)*c))
            return 0;
    const char *h = sep + 3, *end = p + n;
    if (end - h > 2 && h[0] == '*' && h[1] == '.')
        h += 2;
    if (h >= end)
        return 0;
    for (const char *c = h; c < end; c++)
        if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-' && *c != ':' && *c != '[' &&
            *c != ']')
            return 0;
    return 1;
}

static int origins_valid(const char *s)
{
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if (!origin_entry_valid(p, (size_t)(e - p)))
            return 0;
        p = e;
    }
    return 1;
}

static int prefix_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

/* 1500 -> "1500ms", 2000 -> "2s", 120000 -> "2m" */
static const char *format_ms(uint64_t ms, char *buf, size_t cap)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, cap, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, cap, "%llum", (unsigned long long)(ms / 60000));
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(buf, cap, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, cap, "%llums", (unsigned long long)ms);
    return buf;
}

/* 1 when word is one of the |-separated words of list */
static int enum_has(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, word, n) == 0)
            return 1;
        p += len + (e ? 1 : 0);
    }
    return 0;
}

static const char *expectation(const opt_t *o, char *buf, size_t cap)
{
    switch (o->kind) {
    case OPT_UINT:
        snprintf(buf, cap, "an integer from %llu to %llu", (unsigned long long)o->min,
                 (unsigned long long)o->max);
        break;
    case OPT_BOOL:
        snprintf(buf, cap, "true, false, 1 or 0");
        break;
    case OPT_DURATION: {
        char lo[24], hi[24];
        snprintf(buf, cap, "a duration from %s to %s (500ms, 25s, 2m, 1h or plain seconds)",
                 format_ms(o->min, lo, sizeof(lo)), format_ms(o->max, hi, sizeof(hi)));
        break;
    }
    case OPT_ADDR:
        snprintf(buf, cap, "HOST:PORT with a numeric IPv4 address, [IPv6] or localhost");
        break;
    case OPT_NODE:
        snprintf(buf, cap, "1 to %d characters of A-Z a-z 0-9 . _ -", GW_NODE_ID_MAX);
        break;
    case OPT_STR:
        snprintf(buf, cap, "a string");
        break;
    case OPT_REDIS_URL:
        snprintf(buf, cap, "redis://[[user]:password@]host[:port][/db], unix:///path[?db=N], "
                           "host:port or empty");
        break;
    case OPT_PREFIX:
        snprintf(buf, cap, "1 to 64 printable characters without spaces");
        break;
    case OPT_CIDRS:
        snprintf(buf, cap, "a comma list of at most 32 CIDRs such as 10.0.0.0/8 or ::1/128");
        break;
    case OPT_ORIGINS:
        snprintf(buf, cap, "a comma list of scheme://host[:port] origins, host may start with *.");
        break;
    case OPT_SECRET:
        snprintf(buf, cap, "a string");
        break;
    case OPT_RATIO:
        snprintf(buf, cap, "a number from 0 to 1");
        break;
    case OPT_ADMIN:
        snprintf(buf, cap, "HOST:PORT (numeric IPv4, [IPv6] or localhost) or empty");
        break;
    case OPT_ENUM:
        snprintf(buf, cap, "one of %s", o->meta);
        break;
    }
    return buf;
}

/* Stores text as the value of o. Returns 0 or CHAT_EINVAL. */
static int set_value(gw_config_t *cfg, const opt_t *o, const char *text)
{
    char *field = (char *)cfg + o->offset;
    uint64_t u;
    int b;
    switch (o->kind) {
    case OPT_UINT:
        if (parse_uint(text, &u) != 0 || u < o->min || u > o->max)
            return CHAT_EINVAL;
        *(uint64_t *)(void *)field = u;
        return 0;
    case OPT_DURATION:
        if (gw_parse_duration_ms(text, &u) != 0 || u < o->min || u > o->max)
            return CHAT_EINVAL;
        *(uint64_t *)(void *)field = u;
        return 0;
    case OPT_BOOL:
        if (parse_bool(text, &b) != 0)
            return CHAT_EINVAL;
        *(int *)(void *)field = b;
        return 0;
    case OPT_ADDR:
        if (parse_addr(text, &cfg->listen_addr) != 0)
            return CHAT_EINVAL;
        break;
    case OPT_NODE:
        if (!node_id_valid(text))
            return CHAT_EINVAL;
        break;
    case OPT_REDIS_URL: {
        const char *why;
        if (broker_check_url(text, &why) != 0) {
            cfg->why = why;
            return CHAT_EINVAL;
        }
        break;
    }
    case OPT_PREFIX:
        if (!prefix_valid(text))
            return CHAT_EINVAL;
        break;
    case OPT_CIDRS:
        if (parse_cidrs(cfg, text) != 0)
            return CHAT_EINVAL;
        break;
    case OPT_ORIGINS:
        if (!origins_valid(text))
            return CHAT_EINVAL;
        break;
    case OPT_RATIO: {
        char *end;
        double d = strtod(text, &end);
        if (!isdigit((unsigned char)text[0]) || *end != '\0' || !(d >= 0.0 && d <= 1.0))
            return CHAT_EINVAL;
        *(double *)(void *)field = d;
        return 0;
    }
    case OPT_ADMIN:
        if (text[0] != '\0' && parse_addr(text, &cfg->admin_addr) != 0)
            return CHAT_EINVAL;
        break;
    case OPT_ENUM:
        if (!enum_has(o->meta, text))
            return CHAT_EINVAL;
        break;
    case OPT_STR:
    case OPT_SECRET:
        break;
    }
    free(*(char **)(void *)field);
    *(char **)(void *)field = chat_xstrndup(text, strlen(text));
    return 0;
}

static int apply(gw_config_t *cfg, const opt_t *o, const char *text, const char *source, FILE *err)
{
    char env[64], exp[128];
    if (set_value(cfg, o, text) == 0)
        return 0;
    env_name(o, env, sizeof(env));
    if (o->kind == OPT_REDIS_URL || o->kind == OPT_SECRET) /* never echo: may hold a secret */
        fprintf(err, "chat-gateway: invalid value for --%s (%s) from %s: %s\n", o->name, env,
                source, cfg->why ? cfg->why : "invalid URL");
    else
        fprintf(err, "chat-gateway: invalid value '%s' for --%s (%s) from %s: expected %s\n",
                text, o->name, env, source, expectation(o, exp, sizeof(exp)));
    return CHAT_EINVAL;
}

static void print_help(FILE *out)
{
    char env[64];
    fprintf(out, "Usage: chat-gateway [OPTIONS]\n\n"
                 "A WebSocket chat gateway. Every option is also an environment variable;\n"
                 "a flag wins over the environment, which wins over the default.\n"
                 "Booleans: --flag, --flag=true|false (env: true|false|1|0).\n"
                 "Durations: 500ms, 25s, 2m, 1h or plain seconds.\n\nOptions:\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_t *o = &options[i];
        env_name(o, env, sizeof(env));
        fprintf(out, "  --%s %s\n      %s\n      env %s, default %s\n", o->name, o->meta, o->help,
                env, o->def ? o->def : "the host name");
    }
    fprintf(out, "  -h, --help\n      print this help and exit\n"
                 "  -V, --version\n      print the version and exit\n");
}

static const opt_t *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

static int load_defaults(gw_config_t *cfg, FILE *err)
{
    char host[256];
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_t *o = &options[i];
        const char *def = o->def;
        if (o->kind == OPT_NODE) {
            if (gethostname(host, sizeof(host)) != 0 || !node_id_valid(host))
                strcpy(host, "node");
            def = host;
        }
        if (apply(cfg, o, def, "the default", err) != 0)
            return CHAT_EINVAL;
    }
    return 0;
}

static int load_env(gw_config_t *cfg, char **envp, FILE *err)
{
    char env[64];
    for (size_t i = 0; i < NOPTIONS; i++) {
        env_name(&options[i], env, sizeof(env));
        size_t el = strlen(env);
        for (char **e = envp; e && *e; e++)
            if (strncmp(*e, env, el) == 0 && (*e)[el] == '=' &&
                apply(cfg, &options[i], *e + el + 1, env, err) != 0)
                return CHAT_EINVAL;
    }
    return 0;
}

static gw_config_result_t load_args(gw_config_t *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_help(out);
            return GW_CONFIG_EXIT_OK;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            fprintf(out, "chat-gateway %s\n", CHAT_VERSION);
            return GW_CONFIG_EXIT_OK;
        }
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t nlen = eq ? (size_t)(eq - a - 2) : strlen(a) - 2;
        const opt_t *o = strncmp(a, "--", 2) == 0 ? find_option(a + 2, nlen) : NULL;
        if (o == NULL) {
            fprintf(err, "chat-gateway: unknown option '%s' (see --help)\n", a);
            return GW_CONFIG_EXIT_BAD;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (val == NULL && o->kind == OPT_BOOL)
            val = "true";
        if (val == NULL) {
            if (i + 1 >= argc) {
                char env[64];
                env_name(o, env, sizeof(env));
                fprintf(err, "chat-gateway: option --%s (%s) needs a value (see --help)\n",
                        o->name, env);
                return GW_CONFIG_EXIT_BAD;
            }
            val = argv[++i];
        }
        if (apply(cfg, o, val, "the command line", err) != 0)
            return GW_CONFIG_EXIT_BAD;
    }
    return GW_CONFIG_OK;
}

gw_config_result_t gw_config_load(gw_config_t *cfg, int argc, char **argv, char **envp, FILE *out,
                                  FILE *err)
{
    memset(cfg, 0, sizeof(*cfg));
    if (load_defaults(cfg, err) != 0 || load_env(cfg, envp, err) != 0)
        return GW_CONFIG_EXIT_BAD;
    gw_config_result_t r = load_args(cfg, argc, argv, out, err);
    if (r == GW_CONFIG_OK && cfg->drain_delay_ms >= cfg->drain_timeout_ms) {
        char a[24], b[24];
        fprintf(err,
                "chat-gateway: --drain-delay (CHAT_DRAIN_DELAY, %s) must be shorter than "
                "--drain-timeout (CHAT_DRAIN_TIMEOUT, %s)\n",
                format_ms(cfg->drain_delay_ms, a, sizeof(a)),
                format_ms(cfg->drain_timeout_ms, b, sizeof(b)));
        return GW_CONFIG_EXIT_BAD;
    }
    if (r == GW_CONFIG_OK && cfg->pong_timeout_ms >= cfg->ping_interval_ms) {
        char a[24], b[24];
        fprintf(err,
                "chat-gateway: --pong-timeout (CHAT_PONG_TIMEOUT, %s) must be shorter than "
                "--ping-interval (CHAT_PING_INTERVAL, %s)\n",
                format_ms(cfg->pong_timeout_ms, a, sizeof(a)),
                format_ms(cfg->ping_interval_ms, b, sizeof(b)));
        return GW_CONFIG_EXIT_BAD;
    }
    return r;
}

void gw_config_dispose(gw_config_t *cfg)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].kind != OPT_UINT && options[i].kind != OPT_BOOL &&
            options[i].kind != OPT_DURATION && options[i].kind != OPT_RATIO) {
            char **p = (char **)(void *)((char *)cfg + options[i].offset);
            free(*p);
            *p = NULL;
        }
}

static int in_range(const struct gw_cidr *c, const unsigned char *a)
{
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, a, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (a[full] & mask);
}

int gw_config_trusted_proxy(const gw_config_t *cfg, const struct sockaddr *addr)
{
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *a4 = NULL, *a6 = NULL;
    if (addr->sa_family == AF_INET) {
        a4 = (const unsigned char *)&((const struct sockaddr_in *)(const void *)addr)->sin_addr;
    } else if (addr->sa_family == AF_INET6) {
        a6 = (const unsigned char *)&((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr;
        if (memcmp(a6, v4mapped, 12) == 0)
            a4 = a6 + 12;
    }
    for (unsigned i = 0; i < cfg->nproxies; i++) {
        const struct gw_cidr *c = &cfg->proxies[i];
        if ((c->family == AF_INET && a4 && in_range(c, a4)) ||
            (c->family == AF_INET6 && a6 && in_range(c, a6)))
            return 1;
    }
    return 0;
}

/* origin (from the request) against one configured entry */
static int origin_matches(const char *pat, size_t pn, const char *o, size_t on)
{
    const char *ps = strstr(pat, "://");
    const char *os = on >= 3 ? memmem(o, on, "://", 3) : NULL;
    if (ps == NULL || os == NULL)
        return 0;
    size_t pscheme = (size_t)(ps - pat), oscheme = (size_t)(os - o);
    if (pscheme != oscheme || strncasecmp(pat, o, pscheme) != 0)
        return 0;
    const char *ph = ps + 3, *oh = os + 3;
    size_t phl = pn - (size_t)(ph - pat), ohl = on - (size_t)(oh - o);
    if (phl >= 2 && ph[0] == '*' && ph[1] == '.') {
        size_t suffix = phl - 1; /* ".example.com[:port]" */
        return ohl > suffix && strncasecmp(oh + ohl - suffix, ph + 1, suffix) == 0 &&
               memchr(oh, ':', ohl - suffix) == NULL && oh[0] != '.';
    }
    return phl == ohl && strncasecmp(ph, oh, phl) == 0;
}

int gw_config_origin_allowed(const gw_config_t *cfg, const char *origin, size_t len)
{
    const char *p = cfg->allowed_origins;
    if (p == NULL || *p == '\0')
        return 1;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        char pat[512];
        size_t n = (size_t)(e - p);
        if (n < sizeof(pat)) {
            memcpy(pat, p, n);
            pat[n] = '\0';
            if (origin_matches(pat, n, origin, len))
                return 1;
        }
        p = e;
    }
    return 0;
}
