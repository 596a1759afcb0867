/* bench/chat-bench.c - chat-bench: load generator and latency meter for ONE running gateway.
 * Opens N WebSocket connections over loopback to /chat/{room}, lets S of them send chat messages
 * at a fixed rate per sender (open loop), and measures on the receiving side: deliveries, loss
 * against what each room should have received, per-sender order, and send-to-receive latency
 * (sender and receivers are this process, so both ends read the same CLOCK_MONOTONIC). With
 * --pid it also reads the gateway's VmRSS and CPU time from /proc.
 *
 * Owns everything it creates: one libuv loop, the connection array, four timers and a signal
 * handle; all of it hangs off bench_t (loop.data), nothing is global. Knows nothing of the
 * gateway's code, only its wire protocol (docs/protocol.md): the client framing is written here
 * (masked frames out, unmasked frames in, pings answered). Single-threaded. Every phase is bounded
 * by a timer and the whole run by a hard timeout; at the end every handle is closed and
 * uv_loop_close() must return 0. See docs/benchmarks.md for what the numbers mean. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem; meson passes -D_GNU_SOURCE project-wide */
#endif
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>
#include <uv.h>

#define BENCH_ROOM_PREFIX    "bench-"
#define BENCH_READ_BUF       (64 * 1024) /* loop-wide read buffer */
#define BENCH_MAX_HEAD       8192        /* longest HTTP answer to the upgrade */
#define BENCH_MAX_MSG        (1u << 20)  /* longest server message (frame or reassembled) */
#define BENCH_MAX_SIZE       65000       /* --size limit (the gateway takes 64 KiB messages) */
#define BENCH_MAX_CONNECTING 256         /* unsettled connections at once (backlog is 511) */
#define BENCH_MAX_BURST      1000        /* catch-up sends per sender per tick */
#define BENCH_TICK_MS        1           /* pacing granularity of connects and sends */
#define BENCH_CLOSE_WAIT_MS  3000        /* close handshake budget at the end */
#define BENCH_HARD_SLACK_S   30          /* hard timeout = warmup + duration + this */
#define BENCH_LATE_NS        10000000ull /* a send this late is counted as late */
#define BENCH_ORDER_MAX      (32u << 20) /* order-check entries (4 bytes each) at most */
#define BENCH_LOG_MAX        10          /* connection-level errors printed at most */
#define BENCH_FD_RESERVE     32          /* descriptors kept for the loop, stdio, /proc */
#define BENCH_FRAME_HDR_MAX  14          /* client frame header: 2 + 8 + 4 (mask) */

/* The chat text: fixed-width header, then 'x' up to --size. */
#define TEXT_FMT     "t=%016" PRIx64 ";s=%08" PRIx32 ";q=%08" PRIx32 ";m=%c;"
#define TEXT_HDR_LEN 45

/* RFC 6455 section 1.3 sample key: its accept value is known, so no SHA-1 is needed. The gateway
 * does not require keys to differ between connections. */
static const char ws_key[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char ws_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xa,
};

/* Our errors: negative, below libuv's UV_E* range so both pass through one int. */
enum {
    BENCH_EPROTO = -1001,   /* the server broke RFC 6455 framing */
    BENCH_ETOOBIG = -1002,  /* a server message over BENCH_MAX_MSG */
    BENCH_EUPGRADE = -1003, /* the upgrade was refused or answered wrongly */
    BENCH_ECLOSED = -1004,  /* the server sent a close frame */
    BENCH_EBADMSG = -1005,  /* a server message we cannot read (not a text frame, bad chat text) */
};

#define bench_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- log-linear histogram: exact below 64, then 32 buckets per power of two (~3 %) ---- */

#define HIST_SUB_BITS 5
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_LINEAR   (2 * HIST_SUB)
#define HIST_MAX_POW  44 /* 2^45 ns is about 9.8 hours; larger values land in the last bucket */
#define HIST_BUCKETS  (HIST_LINEAR + (HIST_MAX_POW - HIST_SUB_BITS) * HIST_SUB)

typedef struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n, sum, min, max;
} hist_t;

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (unsigned)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v); /* k >= HIST_SUB_BITS + 1 */
    if (k > HIST_MAX_POW)
        return HIST_BUCKETS - 1;
    return HIST_LINEAR + (k - HIST_SUB_BITS - 1) * HIST_SUB +
           (unsigned)((v >> (k - HIST_SUB_BITS)) - HIST_SUB);
}

/* Largest value that maps to bucket i. */
static uint64_t hist_upper(unsigned i)
{
    if (i < HIST_LINEAR)
        return i;
    unsigned j = i - HIST_LINEAR;
    unsigned shift = j / HIST_SUB + 1;
    uint64_t lower = (uint64_t)(HIST_SUB + j % HIST_SUB) << shift;
    return lower + ((uint64_t)1 << shift) - 1;
}

static void hist_add(hist_t *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += v;
}

/* The q-quantile (0 < q <= 1), as the upper edge of its bucket, never above the exact max. */
static uint64_t hist_quantile(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t target = (uint64_t)ceil(q * (double)h->n);
    uint64_t cum = 0;
    if (target < 1)
        target = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        cum += h->counts[i];
        if (cum >= target) {
            uint64_t up = hist_upper(i);
            return up < h->max ? up : h->max;
        }
    }
    return h->max;
}

static double ns_to_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* ---- state ---- */

typedef enum {
    C_IDLE,       /* not started */
    C_CONNECTING, /* uv_tcp_connect in flight */
    C_HANDSHAKE,  /* upgrade request sent, waiting for 101 */
    C_JOINING,    /* upgraded, waiting for welcome + joined */
    C_OPEN,       /* member of its room */
    C_CLOSING,    /* our close frame sent, waiting for the server's close and EOF */
    C_CLOSED,     /* uv_close called */
} conn_state_t;

typedef enum { P_CONNECT, P_WARMUP, P_MEASURE, P_DRAIN, P_CLOSE, P_DONE } phase_t;

typedef struct bench bench_t;

typedef struct bconn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    bench_t *b;
    conn_state_t state;
    uint32_t idx, room;
    uint64_t t_start; /* uv_hrtime() at connect */
    /* unparsed input: an HTTP head or a partial frame (most reads need none) */
    char *pend;
    size_t pend_len, pend_cap;
    /* a fragmented message being reassembled */
    char *frag;
    size_t frag_len, frag_cap;
    uint8_t frag_op;
    uint32_t *next_seq; /* next expected seq per sender of the room (order check), or NULL */
    uint64_t sent;      /* sender: messages sent so far = the next seq */
    unsigned handle_init : 1, welcomed : 1;
} bconn_t;

typedef struct bench_opts {
    const char *url;
    uint32_t conns, rooms, senders, size;
    double rate, duration, warmup, drain, connect_rate;
    int pid; /* 0: not given */
    bool quiet;
} bench_opts_t;

typedef struct bench_counts {
    uint64_t connect_failed, upgrade_failed, closed_by_server, conn_errors, server_errors;
    uint64_t protocol_errors, bad_msgs, misrouted, reordered, gaps, other_msgs, close_timeouts;
    uint64_t aborted; /* still connecting or upgrading when the run was stopped */
    uint64_t sent_total, sent_measured, expected, delivered_total, delivered_measured;
    uint64_t window_deliveries, late_sends, max_lag_ns;
    uint64_t after_drain; /* measured deliveries that arrived after the drain: counted lost */
} bench_counts_t;

typedef struct proc_sample {
    bool ok;
    uint64_t rss_kb, cpu_ticks;
} proc_sample_t;

struct bench {
    uv_loop_t loop;
    bench_opts_t o;
    struct sockaddr_in addr;
    char hostport[80]; /* host[64] ":" port */
    bconn_t *conns;
    uint32_t *room_members; /* open members per room */
    uv_timer_t tick, phase_timer, progress, hard;
    uv_signal_t sigint;
    phase_t phase;
    char *rbuf;
    uint64_t rng;
    double period_ns;
    /* progress */
    uint32_t started, settled, joined, closed_handles;
    unsigned logged;
    bool hard_timeout, interrupted, order_check;
    /* times (uv_hrtime) */
    uint64_t t_connect0, t_connected, send_t0, t_measure0, t_measure1, t_drain_end;
    uint64_t last_progress_deliveries;
    /* resources */
    proc_sample_t gw_before, gw_after, gw_m0, gw_m1, gw_end;
    uint64_t self_cpu_m0_us, self_cpu_m1_us;
    long clk_tck;
    bench_counts_t n;
    hist_t lat, setup;
};

static void conn_fail(bconn_t *c, int err, const char *what);
static void conn_close_handle(bconn_t *c);
static void start_close(bench_t *b);

static const char *bench_strerror(int err)
{
    switch (err) {
    case BENCH_EPROTO:
        return "WebSocket protocol error from the server";
    case BENCH_ETOOBIG:
        return "server message too large";
    case BENCH_EUPGRADE:
        return "upgrade refused or answered wrongly";
    case BENCH_ECLOSED:
        return "closed by the server";
    case BENCH_EBADMSG:
        return "unexpected message from the server";
    default:
        return uv_strerror(err);
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "chat-bench: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        fprintf(stderr, "chat-bench: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static uint64_t rng_next(bench_t *b) /* xorshift64*: mask keys only, not cryptographic */
{
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return b->rng * 2685821657736338717ull;
}

static const char *state_name(conn_state_t s)
{
    static const char *const names[] = {
        [C_IDLE] = "idle",           [C_CONNECTING] = "connecting",
        [C_HANDSHAKE] = "upgrading", [C_JOINING] = "joining",
        [C_OPEN] = "open",           [C_CLOSING] = "closing",
        [C_CLOSED] = "closed",
    };
    return names[s];
}

static void set_state(bconn_t *c, conn_state_t to)
{
    assert(to > c->state);
    c->state = to;
}

/* ---- /proc readers (the gateway process) ---- */

static int read_small_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -errno;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

static proc_sample_t proc_sample(int pid)
{
    proc_sample_t s = {0};
    char path[64], buf[4096];
    const char *p;
    uint64_t ut, st;
    if (pid <= 0)
        return s;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (read_small_file(path, buf, sizeof(buf)) != 0 || (p = strstr(buf, "VmRSS:")) == NULL ||
        sscanf(p + 6, "%" SCNu64, &s.rss_kb) != 1)
        return s;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    /* fields 14 and 15 (utime, stime) follow the ')' that ends the command name */
    if (read_small_file(path, buf, sizeof(buf)) != 0 || (p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %" SCNu64 " %" SCNu64, &ut,
               &st) != 2)
        return s;
    s.cpu_ticks = ut + st;
    s.ok = true;
    return s;
}

/* Soft "Max open files" of pid, or 0 if unknown. */
static uint64_t proc_nofile(int pid)
{
    char path[64], buf[8192];
    uint64_t soft = 0;
    snprintf(path, sizeof(path), "/proc/%d/limits", pid);
    if (read_small_file(path, buf, sizeof(buf)) != 0)
        return 0;
    const char *p = strstr(buf, "Max open files");
    if (p == NULL || sscanf(p + strlen("Max open files"), "%" SCNu64, &soft) != 1)
        return 0;
    return soft;
}

static uint64_t self_cpu_us(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* ---- WebSocket framing ---- */

typedef struct ws_frame {
    uint8_t fin, opcode;
    const char *payload; /* borrowed: points into the parsed bytes */
    size_t len;
} ws_frame_t;

/* Parses one server frame at p. Returns its size (> 0), 0 if more bytes are needed,
 * BENCH_EPROTO (masked, reserved bits, unknown opcode, bad control frame) or BENCH_ETOOBIG.
 * Pure. */
static ssize_t ws_parse(const char *p, size_t n, ws_frame_t *f)
{
    const uint8_t *u = (const uint8_t *)p;
    uint64_t len;
    size_t hdr = 2;
    if (n < 2)
        return 0;
    uint8_t op = u[0] & 0x0f;
    if ((u[0] & 0x70) || (u[1] & 0x80)) /* reserved bits; servers never mask */
        return BENCH_EPROTO;
    if ((op > WS_OP_BINARY && op < WS_OP_CLOSE) || op > WS_OP_PONG)
        return BENCH_EPROTO;
    len = u[1] & 0x7f;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)u[2] << 8 | u[3];
        hdr = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | u[2 + i];
        hdr = 10;
    }
    if (op >= WS_OP_CLOSE && (len > 125 || !(u[0] & 0x80)))
        return BENCH_EPROTO;
    if (len > BENCH_MAX_MSG)
        return BENCH_ETOOBIG;
    if (n - hdr < len)
        return 0;
    f->fin = u[0] >> 7;
    f->opcode = op;
    f->payload = p + hdr;
    f->len = (size_t)len;
    return (ssize_t)(hdr + len);
}

/* Writes a client frame header (FIN set, masked) for len payload bytes; returns its size
 * (at most BENCH_FRAME_HDR_MAX). The mask key is stored in the header's last four bytes. */
static size_t ws_put_header(bench_t *b, uint8_t *out, uint8_t opcode, size_t len)
{
    size_t h = 0;
    uint64_t key = rng_next(b);
    out[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[h++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + h, &key, 4);
    return h + 4;
}

static void ws_mask(uint8_t *p, size_t n, const uint8_t key[4])
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= key[i & 3];
}

/* ---- writes: one malloc'ed block per write, freed in the callback ---- */

typedef struct wreq {
    uv_write_t req;
    size_t len;
    uint8_t data[];
} wreq_t;

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = bench_container_of(req, wreq_t, req);
    bconn_t *c = bench_container_of((uv_tcp_t *)req->handle, bconn_t, tcp);
    free(w);
    if (status < 0 && status != UV_ECANCELED && c->state != C_CLOSED)
        conn_fail(c, status, "write");
}

static int conn_write(bconn_t *c, wreq_t *w)
{
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc != 0) /* the callback will not run */
        free(w);
    return rc;
}

static int conn_send_raw(bconn_t *c, const char *p, size_t n)
{
    wreq_t *w = xmalloc(sizeof(*w) + n);
    memcpy(w->data, p, n);
    w->len = n;
    return conn_write(c, w);
}

static int conn_send_frame(bconn_t *c, uint8_t opcode, const char *payload, size_t n)
{
    wreq_t *w = xmalloc(sizeof(*w) + BENCH_FRAME_HDR_MAX + n);
    size_t h = ws_put_header(c->b, w->data, opcode, n);
    memcpy(w->data + h, payload, n);
    ws_mask(w->data + h, n, w->data + h - 4);
    w->len = h + n;
    return conn_write(c, w);
}

/* Sends one chat message of --size text bytes carrying the send time and the sender's seq. */
static int conn_send_chat(bench_t *b, bconn_t *c, bool measured)
{
    char prefix[96], text_hdr[TEXT_HDR_LEN + 1];
    static const char suffix[] = "\"}";
    int pl = snprintf(
        prefix, sizeof(prefix),
        "{\"type\":\"chat\",\"room\":\"" BENCH_ROOM_PREFIX "%" PRIu32 "\",\"text\":\"", c->room);
    size_t n = (size_t)pl + b->o.size + sizeof(suffix) - 1;
    wreq_t *w = xmalloc(sizeof(*w) + BENCH_FRAME_HDR_MAX + n);
    size_t h = ws_put_header(b, w->data, WS_OP_TEXT, n);
    uint8_t *p = w->data + h;
    uint64_t now = uv_hrtime();
    snprintf(text_hdr, sizeof(text_hdr), TEXT_FMT, now, c->idx, (uint32_t)c->sent,
             measured ? '1' : '0');
    memcpy(p, prefix, (size_t)pl);
    memcpy(p + pl, text_hdr, TEXT_HDR_LEN);
    memset(p + pl + TEXT_HDR_LEN, 'x', b->o.size - TEXT_HDR_LEN);
    memcpy(p + pl + b->o.size, suffix, sizeof(suffix) - 1);
    ws_mask(p, n, w->data + h - 4);
    w->len = h + n;
    int rc = conn_write(c, w);
    if (rc != 0)
        return rc;
    c->sent++;
    b->n.sent_total++;
    if (measured) {
        b->n.sent_measured++;
        b->n.expected += b->room_members[c->room];
    }
    return 0;
}

/* ---- inbound ---- */

/* Finds `pat` ("\"key\":\"") in a compact JSON object written by the gateway and returns the
 * string value after it (borrowed, without escapes: ours have none), or NULL. */
static const char *json_str(const char *p, size_t n, const char *pat, size_t *vlen)
{
    size_t pl = strlen(pat);
    const char *v = memmem(p, n, pat, pl);
    if (v == NULL)
        return NULL;
    v += pl;
    const char *e = memchr(v, '"', (size_t)(p + n - v));
    if (e == NULL)
        return NULL;
    *vlen = (size_t)(e - v);
    return v;
}

static bool str_is(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static bool parse_hex(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d;
        if (p[i] >= '0' && p[i] <= '9')
            d = p[i] - '0';
        else if (p[i] >= 'a' && p[i] <= 'f')
            d = p[i] - 'a' + 10;
        else
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

/* Reads our text header "t=..;s=..;q=..;m=.;" back. */
static int parse_text(const char *t, size_t n, uint64_t *ts, uint64_t *sid, uint64_t *seq,
                      bool *measured)
{
    if (n < TEXT_HDR_LEN || memcmp(t, "t=", 2) != 0 || memcmp(t + 18, ";s=", 3) != 0 ||
        memcmp(t + 29, ";q=", 3) != 0 || memcmp(t + 40, ";m=", 3) != 0 || t[44] != ';' ||
        !parse_hex(t + 2, 16, ts) || !parse_hex(t + 21, 8, sid) || !parse_hex(t + 32, 8, seq))
        return BENCH_EBADMSG;
    *measured = t[43] == '1';
    return 0;
}

static void conn_log(bconn_t *c, const char *what, const char *detail)
{
    bench_t *b = c->b;
    if (b->logged++ < BENCH_LOG_MAX)
        fprintf(stderr, "chat-bench: conn %" PRIu32 " (%s): %s: %s\n", c->idx, state_name(c->state),
                what, detail);
    else if (b->logged == BENCH_LOG_MAX + 1)
        fprintf(stderr, "chat-bench: (further connection errors are counted, not printed)\n");
}

static int on_chat(bconn_t *c, const char *p, size_t n, uint64_t now)
{
    bench_t *b = c->b;
    size_t tl;
    uint64_t ts, sid, seq;
    bool measured;
    const char *t = json_str(p, n, "\"text\":\"", &tl);
    if (t == NULL || parse_text(t, tl, &ts, &sid, &seq, &measured) != 0) {
        b->n.bad_msgs++;
        return 0;
    }
    b->n.delivered_total++;
    if (b->phase == P_MEASURE)
        b->n.window_deliveries++;
    if (measured && b->phase <= P_DRAIN) {
        b->n.delivered_measured++;
        hist_add(&b->lat, now > ts ? now - ts : 0);
    } else if (measured) {
        b->n.after_drain++; /* the server was still flushing its backlog when we closed */
    }
    if (sid >= b->o.senders || sid % b->o.rooms != c->room) {
        b->n.misrouted++;
        return 0;
    }
    if (c->next_seq != NULL) {
        uint32_t *next = &c->next_seq[sid / b->o.rooms];
        if (seq < *next) {
            b->n.reordered++; /* a duplicate or a late one */
        } else {
            if (seq > *next)
                b->n.gaps += seq - *next;
            *next = (uint32_t)seq + 1;
        }
    }
    return 0;
}

static void conn_open(bconn_t *c, uint64_t now)
{
    bench_t *b = c->b;
    set_state(c, C_OPEN);
    b->joined++;
    b->settled++;
    b->room_members[c->room]++;
    hist_add(&b->setup, now - c->t_start);
}

static int on_message(bconn_t *c, uint8_t op, const char *p, size_t n, uint64_t now)
{
    bench_t *b = c->b;
    size_t tl;
    if (op != WS_OP_TEXT)
        return BENCH_EBADMSG;
    const char *type = json_str(p, n, "\"type\":\"", &tl);
    if (type == NULL)
        return BENCH_EBADMSG;
    if (str_is(type, tl, "chat"))
        return on_chat(c, p, n, now);
    if (str_is(type, tl, "welcome")) {
        c->welcomed = 1;
    } else if (str_is(type, tl, "joined")) {
        if (c->state == C_JOINING && c->welcomed)
            conn_open(c, now);
    } else if (str_is(type, tl, "error")) {
        if (b->n.server_errors++ < BENCH_LOG_MAX)
            fprintf(stderr, "chat-bench: conn %" PRIu32 ": server error: %.*s\n", c->idx,
                    (int)(n > 300 ? 300 : n), p);
        if (c->state == C_JOINING) /* the join failed: this connection will never open */
            return BENCH_EUPGRADE;
    } else {
        b->n.other_msgs++; /* system, typing, pong, ack: not ours to measure */
    }
    return 0;
}

static int frag_append(bconn_t *c, const char *p, size_t n)
{
    if (c->frag_len + n > BENCH_MAX_MSG)
        return BENCH_ETOOBIG;
    if (c->frag_len + n > c->frag_cap) {
        c->frag_cap = c->frag_len + n > 4096 ? c->frag_len + n : 4096;
        c->frag = xrealloc(c->frag, c->frag_cap);
    }
    memcpy(c->frag + c->frag_len, p, n);
    c->frag_len += n;
    return 0;
}

/* Handles one frame. Returns 0 or a negative error (the caller fails the connection); may close
 * the connection itself (state C_CLOSED). */
static int on_frame(bconn_t *c, const ws_frame_t *f, uint64_t now)
{
    int rc;
    switch (f->opcode) {
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (c->frag_op)
            return BENCH_EPROTO;
        if (f->fin)
            return on_message(c, f->opcode, f->payload, f->len, now);
        c->frag_op = f->opcode;
        c->frag_len = 0;
        return frag_append(c, f->payload, f->len);
    case WS_OP_CONT:
        if (!c->frag_op)
            return BENCH_EPROTO;
        if ((rc = frag_append(c, f->payload, f->len)) != 0 || !f->fin)
            return rc;
        rc = on_message(c, c->frag_op, c->frag, c->frag_len, now);
        c->frag_op = 0;
        c->frag_len = 0;
        return rc;
    case WS_OP_PING:
        return conn_send_frame(c, WS_OP_PONG, f->payload, f->len);
    case WS_OP_PONG:
        return 0;
    case WS_OP_CLOSE:
        if (c->state == C_CLOSING) /* the answer to ours: the server's EOF follows */
            return 0;
        if (f->len >= 2) { /* fail here to log the code; the caller's conn_fail is a no-op */
            char what[160];
            const uint8_t *u = (const uint8_t *)f->payload;
            snprintf(what, sizeof(what), "close frame %u \"%.*s\"", (unsigned)(u[0] << 8 | u[1]),
                     (int)(f->len - 2), f->payload + 2);
            conn_fail(c, BENCH_ECLOSED, what);
        }
        return BENCH_ECLOSED;
    default:
        return BENCH_EPROTO;
    }
}

/* Parses the HTTP answer to the upgrade. Returns the head's length (> 0) once it is complete and
 * is a 101 with the right Sec-WebSocket-Accept, 0 if more bytes are needed, BENCH_EUPGRADE
 * otherwise. Pure. */
static ssize_t http_check_101(const char *p, size_t n)
{
    static const char name[] = "sec-websocket-accept:";
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    bool accepted = false;
    if (end == NULL)
        return n > BENCH_MAX_HEAD ? BENCH_EUPGRADE : 0;
    size_t head = (size_t)(end - p) + 4;
    if (head < 13 || memcmp(p, "HTTP/1.1 101 ", 13) != 0)
        return BENCH_EUPGRADE;
    const char *line = (const char *)memchr(p, '\n', head) + 1;
    while (line < p + head) {
        const char *eol = memchr(line, '\n', (size_t)(p + head - line));
        if (eol == NULL)
            break;
        if ((size_t)(eol - line) > sizeof(name) - 1 &&
            strncasecmp(line, name, sizeof(name) - 1) == 0) {
            const char *v = line + sizeof(name) - 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            accepted = str_is(v, (size_t)(ve - v), ws_accept);
        }
        line = eol + 1;
    }
    return accepted ? (ssize_t)head : BENCH_EUPGRADE;
}

static void pend_append(bconn_t *c, const char *p, size_t n)
{
    if (c->pend_len + n > c->pend_cap) {
        size_t cap = c->pend_cap ? c->pend_cap : 1024;
        while (cap < c->pend_len + n)
            cap *= 2;
        c->pend = xrealloc(c->pend, cap);
        c->pend_cap = cap;
    }
    memcpy(c->pend + c->pend_len, p, n);
    c->pend_len += n;
}

/* Bytes the frame starting at p needs in all (header first), given the n bytes present; more
 * than BENCH_MAX_MSG means "parse it now" (ws_parse reports the error). */
static size_t frame_need(const char *p, size_t n)
{
    const uint8_t *u = (const uint8_t *)p;
    uint64_t len = 0;
    if (n < 2)
        return 2;
    size_t hdr = (u[1] & 0x7f) == 126 ? 4 : (u[1] & 0x7f) == 127 ? 10 : 2;
    if (n < hdr)
        return hdr;
    if (hdr == 2)
        len = u[1] & 0x7f;
    for (size_t i = 2; i < hdr; i++)
        len = len << 8 | u[i];
    return len > BENCH_MAX_MSG ? n : hdr + (size_t)len;
}

/* Takes bytes from p into pend until pend holds one whole frame. Returns the bytes taken; the
 * frame is complete when frame_need(pend) <= pend_len afterwards. */
static size_t pend_complete(bconn_t *c, const char *p, size_t n)
{
    size_t taken = 0, need;
    while (taken < n && (need = frame_need(c->pend, c->pend_len)) > c->pend_len) {
        size_t take = need - c->pend_len < n - taken ? need - c->pend_len : n - taken;
        pend_append(c, p + taken, take);
        taken += take;
    }
    return taken;
}

/* Handles the whole frames at p. Returns the bytes they used, or -1 after failing the connection;
 * the connection may also have been closed (state C_CLOSED). */
static ssize_t conn_on_bytes(bconn_t *c, const char *p, size_t n, uint64_t now)
{
    size_t used = 0;
    while (used < n && c->state != C_CLOSED) {
        ws_frame_t f;
        ssize_t r = ws_parse(p + used, n - used, &f);
        int rc;
        if (r == 0)
            break;
        if (r < 0) {
            c->b->n.protocol_errors++;
            conn_fail(c, (int)r, "frame");
            return -1;
        }
        used += (size_t)r;
        if ((rc = on_frame(c, &f, now)) != 0) {
            if (rc == BENCH_EPROTO || rc == BENCH_EBADMSG || rc == BENCH_ETOOBIG)
                c->b->n.protocol_errors++;
            conn_fail(c, rc, "message");
            return -1;
        }
    }
    return (ssize_t)used;
}

/* The HTTP answer, then the first frames: all of it goes through pend (small). */
static void conn_on_upgrade_bytes(bconn_t *c, const char *p, size_t n, uint64_t now)
{
    pend_append(c, p, n);
    ssize_t r = http_check_101(c->pend, c->pend_len);
    if (r == 0)
        return;
    if (r < 0) {
        char line[120];
        size_t ln = c->pend_len < 100 ? c->pend_len : 100;
        const char *eol = memchr(c->pend, '\r', ln);
        snprintf(line, sizeof(line), "%.*s", (int)(eol ? (size_t)(eol - c->pend) : ln), c->pend);
        conn_log(c, "upgrade refused", line);
        conn_fail(c, (int)r, "upgrade");
        return;
    }
    set_state(c, C_JOINING);
    size_t head = (size_t)r;
    ssize_t used = conn_on_bytes(c, c->pend + head, c->pend_len - head, now);
    if (used < 0 || c->state == C_CLOSED)
        return;
    c->pend_len -= head + (size_t)used;
    memmove(c->pend, c->pend + head + (size_t)used, c->pend_len);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    bench_t *b = h->loop->data;
    *buf = uv_buf_init(b->rbuf, BENCH_READ_BUF); /* read_cb runs before the next alloc */
}

/* Frames are parsed straight from the loop-wide read buffer; only a frame cut by the end of a
 * read is copied into the connection's pend buffer, which thus holds at most one frame. */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    bconn_t *c = bench_container_of((uv_tcp_t *)s, bconn_t, tcp);
    const char *p = buf->base;
    size_t n = (size_t)nread;
    ssize_t used;
    if (c->state == C_CLOSED || nread == 0)
        return;
    if (nread < 0) {
        if (c->state == C_CLOSING)
            conn_close_handle(c);
        else
            conn_fail(c, nread == UV_EOF ? BENCH_ECLOSED : (int)nread, "read");
        return;
    }
    uint64_t now = uv_hrtime(); /* one receive time for everything in this read */
    if (c->state == C_HANDSHAKE) {
        conn_on_upgrade_bytes(c, p, n, now);
        return;
    }
    if (c->pend_len > 0) { /* finish the cut frame first */
        size_t taken = pend_complete(c, p, n);
        if (frame_need(c->pend, c->pend_len) > c->pend_len)
            return; /* still incomplete: everything went into pend */
        if ((used = conn_on_bytes(c, c->pend, c->pend_len, now)) < 0 || c->state == C_CLOSED)
            return;
        c->pend_len = 0;
        if (c->pend_cap > BENCH_READ_BUF) { /* a rare big frame: do not keep its buffer */
            free(c->pend);
            c->pend = NULL;
            c->pend_cap = 0;
        }
        p += taken;
        n -= taken;
    }
    if ((used = conn_on_bytes(c, p, n, now)) < 0 || c->state == C_CLOSED)
        return;
    if ((size_t)used < n)
        pend_append(c, p + used, n - (size_t)used);
}

/* ---- connection lifecycle ---- */

static void on_conn_closed(uv_handle_t *h)
{
    bench_t *b = h->loop->data;
    b->closed_handles++;
    if (b->phase == P_CLOSE && b->closed_handles == b->started)
        start_close(b); /* finishes: every connection is closed */
}

/* Leaves the room count and closes the socket. Idempotent. */
static void conn_close_handle(bconn_t *c)
{
    bench_t *b = c->b;
    if (c->state == C_CLOSED)
        return;
    if (c->state == C_OPEN)
        b->room_members[c->room]--;
    if (c->state > C_IDLE && c->state < C_OPEN)
        b->settled++; /* it will never open */
    c->state = C_CLOSED;
    if (c->handle_init)
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    else
        b->closed_handles++;
}

/* Counts an error by the state it hit, logs the first few, and closes. */
static void conn_fail(bconn_t *c, int err, const char *what)
{
    bench_t *b = c->b;
    if (c->state == C_CLOSED)
        return;
    if (c->state == C_CLOSING) { /* our own close: the server may simply drop us */
        conn_close_handle(c);
        return;
    }
    switch (c->state) {
    case C_CONNECTING:
        b->n.connect_failed++;
        break;
    case C_HANDSHAKE:
    case C_JOINING:
        b->n.upgrade_failed++;
        break;
    default:
        if (err == BENCH_ECLOSED)
            b->n.closed_by_server++;
        else
            b->n.conn_errors++;
        break;
    }
    conn_log(c, what, bench_strerror(err));
    conn_close_handle(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    bconn_t *c = bench_container_of(req, bconn_t, connect_req);
    bench_t *b = c->b;
    char head[512];
    int rc;
    if (c->state != C_CONNECTING) /* closed meanwhile (UV_ECANCELED) */
        return;
    if (status < 0) {
        conn_fail(c, status, "connect");
        return;
    }
    int hl = snprintf(head, sizeof(head),
                      "GET /chat/" BENCH_ROOM_PREFIX "%" PRIu32 " HTTP/1.1\r\n"
                      "Host: %s\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Protocol: chat.v1\r\n"
                      "User-Agent: chat-bench\r\n\r\n",
                      c->room, b->hostport, ws_key);
    uv_tcp_nodelay(&c->tcp, 1);
    set_state(c, C_HANDSHAKE);
    if ((rc = conn_send_raw(c, head, (size_t)hl)) != 0 ||
        (rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) != 0)
        conn_fail(c, rc, "upgrade request");
}

static void conn_start(bench_t *b, bconn_t *c)
{
    int rc = uv_tcp_init(&b->loop, &c->tcp);
    b->started++;
    set_state(c, C_CONNECTING);
    c->t_start = uv_hrtime();
    if (rc != 0) {
        conn_fail(c, rc, "tcp init");
        return;
    }
    c->handle_init = 1;
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&b->addr, on_connect);
    if (rc != 0) /* on_connect will not run */
        conn_fail(c, rc, "connect");
}

/* ---- phases ---- */

static void print_progress(bench_t *b, const char *label)
{
    if (b->o.quiet)
        return;
    uint64_t d = b->n.delivered_total - b->last_progress_deliveries;
    b->last_progress_deliveries = b->n.delivered_total;
    fprintf(stderr,
            "chat-bench: %-8s open %" PRIu32 "/%" PRIu32 "  sent %" PRIu64 "  delivered %" PRIu64
            " (+%" PRIu64 ")  p99 %.3f ms  errors %" PRIu64 "\n",
            label, b->joined, b->o.conns, b->n.sent_total, b->n.delivered_total, d,
            ns_to_ms(hist_quantile(&b->lat, 0.99)),
            b->n.connect_failed + b->n.upgrade_failed + b->n.closed_by_server + b->n.conn_errors +
                b->n.server_errors + b->n.protocol_errors);
}

static void on_progress(uv_timer_t *t)
{
    static const char *const names[] = {"connect", "warmup", "measure", "drain", "close", "done"};
    bench_t *b = t->loop->data;
    print_progress(b, names[b->phase]);
}

/* Phase timers count from now: a busy loop's cached time can lag behind by a whole iteration. */
static void phase_timer_start(bench_t *b, uv_timer_cb cb, double seconds)
{
    uv_update_time(&b->loop);
    uv_timer_start(&b->phase_timer, cb, (uint64_t)(seconds * 1000), 0);
}

static void drain_done(bench_t *b)
{
    b->t_drain_end = uv_hrtime();
    b->gw_end = proc_sample(b->o.pid);
    start_close(b);
}

static void on_drain_end(uv_timer_t *t)
{
    drain_done(t->loop->data);
}

static void measure_end(bench_t *b)
{
    b->t_measure1 = uv_hrtime();
    b->gw_m1 = proc_sample(b->o.pid);
    b->self_cpu_m1_us = self_cpu_us();
    b->phase = P_DRAIN;
    phase_timer_start(b, on_drain_end, b->o.drain);
}

static void on_measure_end(uv_timer_t *t)
{
    measure_end(t->loop->data);
}

static void measure_start(bench_t *b)
{
    b->phase = P_MEASURE;
    b->t_measure0 = uv_hrtime();
    b->gw_m0 = proc_sample(b->o.pid);
    b->self_cpu_m0_us = self_cpu_us();
    phase_timer_start(b, on_measure_end, b->o.duration);
}

static void on_warmup_end(uv_timer_t *t)
{
    measure_start(t->loop->data);
}

static void connect_done(bench_t *b)
{
    b->gw_after = proc_sample(b->o.pid);
    print_progress(b, "open");
    if (b->joined == 0) {
        fprintf(stderr, "chat-bench: no connection opened\n");
        start_close(b);
        return;
    }
    b->phase = P_WARMUP;
    b->send_t0 = uv_hrtime();
    if (b->o.warmup > 0)
        phase_timer_start(b, on_warmup_end, b->o.warmup);
    else
        measure_start(b);
}

static void connect_due(bench_t *b, uint64_t now)
{
    uint64_t due = (uint64_t)((double)(now - b->t_connect0) * b->o.connect_rate / 1e9) + 1;
    while (b->started < b->o.conns && b->started < due &&
           b->started - b->settled < BENCH_MAX_CONNECTING)
        conn_start(b, &b->conns[b->started]);
}

/* Sender k sends its n-th message at send_t0 + (k / S + n) * period: evenly spread, open loop
 * (a late sender catches up; its lateness is reported as sender lag). */
static void send_due(bench_t *b, uint64_t now)
{
    bool measured = b->phase == P_MEASURE;
    for (uint32_t k = 0; k < b->o.senders; k++) {
        bconn_t *c = &b->conns[k];
        for (unsigned burst = 0; burst < BENCH_MAX_BURST && c->state == C_OPEN; burst++) {
            double off = ((double)k / b->o.senders + (double)c->sent) * b->period_ns;
            uint64_t due = b->send_t0 + (uint64_t)off;
            if (due > now)
                break;
            int rc = conn_send_chat(b, c, measured);
            if (rc != 0) {
                conn_fail(c, rc, "send");
                break;
            }
            if (measured) {
                if (now - due > b->n.max_lag_ns)
                    b->n.max_lag_ns = now - due;
                if (now - due > BENCH_LATE_NS)
                    b->n.late_sends++;
            }
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    bench_t *b = t->loop->data;
    uint64_t now = uv_hrtime();
    switch (b->phase) {
    case P_CONNECT:
        connect_due(b, now);
        if (b->settled == b->o.conns) {
            b->t_connected = now;
            connect_done(b);
        }
        break;
    case P_WARMUP:
    case P_MEASURE:
        send_due(b, now);
        break;
    case P_DRAIN:
        if (b->n.delivered_measured >= b->n.expected) {
            uv_timer_stop(&b->phase_timer);
            drain_done(b);
        }
        break;
    default:
        break;
    }
}

static void on_close_timeout(uv_timer_t *t)
{
    bench_t *b = t->loop->data;
    for (uint32_t i = 0; i < b->started; i++) {
        if (b->conns[i].state != C_CLOSED) {
            b->n.close_timeouts++;
            conn_close_handle(&b->conns[i]);
        }
    }
}

/* Enters P_CLOSE: a close frame to every open connection, abort the rest, bounded by a timer.
 * Called again (from the last close callback) it finishes: the timers and the signal handle are
 * closed, so uv_run returns. */
static void start_close(bench_t *b)
{
    static const char close_payload[2] = {(char)(1000 >> 8), (char)(1000 & 0xff)};
    if (b->phase == P_DONE)
        return;
    if (b->phase != P_CLOSE) {
        b->phase = P_CLOSE;
        uv_timer_stop(&b->tick);
        uv_timer_stop(&b->phase_timer);
        for (uint32_t i = 0; i < b->started; i++) {
            bconn_t *c = &b->conns[i];
            if (c->state == C_OPEN) {
                b->room_members[c->room]--;
                c->state = C_CLOSING;
                if (conn_send_frame(c, WS_OP_CLOSE, close_payload, sizeof(close_payload)) != 0)
                    conn_close_handle(c);
            } else if (c->state != C_CLOSED) {
                b->n.aborted++;
                conn_close_handle(c);
            }
        }
        phase_timer_start(b, on_close_timeout, BENCH_CLOSE_WAIT_MS / 1000.0);
    }
    if (b->closed_handles < b->started)
        return; /* on_conn_closed calls again */
    b->phase = P_DONE;
    uv_close((uv_handle_t *)&b->tick, NULL);
    uv_close((uv_handle_t *)&b->phase_timer, NULL);
    uv_close((uv_handle_t *)&b->progress, NULL);
    uv_close((uv_handle_t *)&b->hard, NULL);
    uv_close((uv_handle_t *)&b->sigint, NULL);
}

/* Stops a run early (hard timeout, SIGINT): what was measured so far is reported. */
static void stop_early(bench_t *b)
{
    if (b->phase == P_MEASURE)
        measure_end(b);
    if (b->phase == P_DRAIN)
        drain_done(b);
    else if (b->phase == P_CLOSE)
        on_close_timeout(&b->phase_timer);
    else
        start_close(b);
}

static void on_hard_timeout(uv_timer_t *t)
{
    bench_t *b = t->loop->data;
    fprintf(stderr, "chat-bench: hard timeout (warmup + duration + %d s) in phase %d\n",
            BENCH_HARD_SLACK_S, (int)b->phase);
    b->hard_timeout = true;
    stop_early(b);
}

static void on_sigint(uv_signal_t *h, int signum)
{
    bench_t *b = h->loop->data;
    fprintf(stderr, "chat-bench: interrupted\n");
    b->interrupted = true;
    stop_early(b);
}

/* ---- report ---- */

/* Everything the report prints, computed once. */
typedef struct summary {
    double win_s, setup_s, dps, sps, offered, rss_per_conn, gw_cpu, self_cpu;
    uint64_t lost, extra, errors;
    bool rss, gw_cpu_ok;
    /* setup and latency quantiles, ms: p50 p90 p99 p99.9 max mean */
    double setup[6], lat[6];
} summary_t;

static void hist_summary(const hist_t *h, double out[6])
{
    static const double q[4] = {0.5, 0.9, 0.99, 0.999};
    for (int i = 0; i < 4; i++)
        out[i] = ns_to_ms(hist_quantile(h, q[i]));
    out[4] = ns_to_ms(h->max);
    out[5] = h->n ? ns_to_ms(h->sum / h->n) : 0.0;
}

/* CPU share of one core over window_ns; used is in units of per_s per second. */
static double cpu_pct(uint64_t used, double per_s, uint64_t window_ns)
{
    if (window_ns == 0)
        return 0;
    return 100.0 * ((double)used / per_s) / ((double)window_ns / 1e9);
}

static summary_t summarize(const bench_t *b)
{
    const bench_counts_t *n = &b->n;
    summary_t s = {0};
    uint64_t window = b->t_measure1 > b->t_measure0 ? b->t_measure1 - b->t_measure0 : 0;
    s.win_s = (double)window / 1e9;
    s.lost = n->expected > n->delivered_measured ? n->expected - n->delivered_measured : 0;
    s.extra = n->delivered_measured > n->expected ? n->delivered_measured - n->expected : 0;
    if (b->t_connected > b->t_connect0)
        s.setup_s = (double)(b->t_connected - b->t_connect0) / 1e9;
    if (s.win_s > 0) {
        s.dps = (double)n->window_deliveries / s.win_s;
        s.sps = (double)n->sent_measured / s.win_s;
        s.offered = (double)n->expected / s.win_s;
    }
    s.rss = b->gw_before.ok && b->gw_after.ok && b->joined > 0;
    if (s.rss)
        s.rss_per_conn =
            ((double)b->gw_after.rss_kb - (double)b->gw_before.rss_kb) * 1024.0 / b->joined;
    s.gw_cpu_ok = b->gw_m0.ok && b->gw_m1.ok && window > 0;
    if (s.gw_cpu_ok)
        s.gw_cpu = cpu_pct(b->gw_m1.cpu_ticks - b->gw_m0.cpu_ticks, (double)b->clk_tck, window);
    s.self_cpu = cpu_pct(b->self_cpu_m1_us - b->self_cpu_m0_us, 1e6, window);
    s.errors = n->connect_failed + n->upgrade_failed + n->aborted + (b->o.conns - b->started) +
               n->closed_by_server + n->conn_errors + n->server_errors + n->protocol_errors +
               n->bad_msgs + n->misrouted + n->reordered + n->gaps + n->close_timeouts + s.lost +
               s.extra + (b->hard_timeout ? 1 : 0) + (b->interrupted ? 1 : 0);
    hist_summary(&b->setup, s.setup);
    hist_summary(&b->lat, s.lat);
    return s;
}

static void print_summary(const bench_t *b, const summary_t *s)
{
    const bench_counts_t *n = &b->n;
    printf("chat-bench: %s  conns %" PRIu32 "  rooms %" PRIu32 "  senders %" PRIu32
           "  rate %g/s per sender  size %" PRIu32 " B  warmup %g s  duration %g s\n",
           b->o.url, b->o.conns, b->o.rooms, b->o.senders, b->o.rate, b->o.size, b->o.warmup,
           b->o.duration);
    printf("connections : %" PRIu32 "/%" PRIu32 " open in %.2f s (setup p50 %.2f ms, p99 %.2f ms,"
           " max %.2f ms)\n",
           b->joined, b->o.conns, s->setup_s, s->setup[0], s->setup[2], s->setup[4]);
    if (s->rss && b->gw_end.ok)
        printf("gateway RSS : %.1f MiB before, %.1f MiB with %" PRIu32 " open -> %.0f B per"
               " connection; %.1f MiB after the drain\n",
               (double)b->gw_before.rss_kb / 1024, (double)b->gw_after.rss_kb / 1024, b->joined,
               s->rss_per_conn, (double)b->gw_end.rss_kb / 1024);
    else if (s->rss)
        printf("gateway RSS : %.1f MiB before, %.1f MiB with %" PRIu32 " open -> %.0f B per"
               " connection; n/a after the drain (gateway gone?)\n",
               (double)b->gw_before.rss_kb / 1024, (double)b->gw_after.rss_kb / 1024, b->joined,
               s->rss_per_conn);
    else
        printf("gateway RSS : n/a (%s)\n", b->o.pid ? "cannot read /proc/PID" : "no --pid");
    printf("messages    : %" PRIu64 " sent in %.2f s (%.1f/s); %" PRIu64
           " deliveries expected, %" PRIu64 " received, %" PRIu64 " lost (%" PRIu64
           " of them after the drain), %" PRIu64 " extra\n",
           n->sent_measured, s->win_s, s->sps, n->expected, n->delivered_measured, s->lost,
           n->after_drain, s->extra);
    printf("throughput  : %.0f deliveries/s received during the window (offered %.0f/s)\n", s->dps,
           s->offered);
    printf("latency ms  : p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f"
           "  (%" PRIu64 " samples)\n",
           s->lat[0], s->lat[1], s->lat[2], s->lat[3], s->lat[4], s->lat[5], b->lat.n);
    if (s->gw_cpu_ok)
        printf("cpu         : gateway %.0f %%, chat-bench %.0f %% (100 %% = one core)\n", s->gw_cpu,
               s->self_cpu);
    else
        printf("cpu         : chat-bench %.0f %% (100 %% = one core)\n", s->self_cpu);
    printf("sender lag  : max %.3f ms, %" PRIu64 " sends more than %llu ms late\n",
           ns_to_ms(n->max_lag_ns), n->late_sends, BENCH_LATE_NS / 1000000ull);
    printf("errors      : connect %" PRIu64 ", upgrade %" PRIu64 ", aborted %" PRIu64
           ", closed by server %" PRIu64 ", socket %" PRIu64 ", server error msgs %" PRIu64
           ", protocol %" PRIu64 ", bad msgs %" PRIu64 ", misrouted %" PRIu64 ", reordered %" PRIu64
           ", gaps %" PRIu64 ", close timeouts %" PRIu64 "%s%s%s\n",
           n->connect_failed, n->upgrade_failed, n->aborted, n->closed_by_server, n->conn_errors,
           n->server_errors, n->protocol_errors, n->bad_msgs, n->misrouted, n->reordered, n->gaps,
           n->close_timeouts, b->order_check ? "" : " (order check off: too many pairs)",
           b->hard_timeout ? ", HARD TIMEOUT" : "", b->interrupted ? ", INTERRUPTED" : "");
    printf("result      : %s\n", s->errors ? "FAIL" : "OK");
}

static void print_json(const bench_t *b, const summary_t *s)
{
    const bench_counts_t *n = &b->n;
    printf("{\"conns\":%" PRIu32 ",\"open\":%" PRIu32 ",\"rooms\":%" PRIu32 ",\"senders\":%" PRIu32
           ",\"rate\":%g,\"size\":%" PRIu32 ",\"warmup_s\":%g,\"duration_s\":%.3f",
           b->o.conns, b->joined, b->o.rooms, b->o.senders, b->o.rate, b->o.size, b->o.warmup,
           s->win_s);
    printf(",\"connect_s\":%.3f,\"setup_p50_ms\":%.3f,\"setup_p99_ms\":%.3f,\"setup_max_ms\":%.3f",
           s->setup_s, s->setup[0], s->setup[2], s->setup[4]);
    printf(",\"sent\":%" PRIu64 ",\"sent_per_s\":%.1f,\"expected\":%" PRIu64
           ",\"delivered\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"after_drain\":%" PRIu64
           ",\"extra\":%" PRIu64 ",\"deliveries_per_s\":%.1f,\"offered_per_s\":%.1f",
           n->sent_measured, s->sps, n->expected, n->delivered_measured, s->lost, n->after_drain,
           s->extra, s->dps, s->offered);
    printf(",\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f"
           ",\"mean_ms\":%.3f",
           s->lat[0], s->lat[1], s->lat[2], s->lat[3], s->lat[4], s->lat[5]);
    if (s->rss) {
        printf(",\"rss_before_kb\":%" PRIu64 ",\"rss_open_kb\":%" PRIu64 ",\"rss_per_conn_b\":%.0f",
               b->gw_before.rss_kb, b->gw_after.rss_kb, s->rss_per_conn);
        if (b->gw_end.ok)
            printf(",\"rss_end_kb\":%" PRIu64, b->gw_end.rss_kb);
        else
            printf(",\"rss_end_kb\":null");
    } else
        printf(",\"rss_per_conn_b\":null");
    if (s->gw_cpu_ok)
        printf(",\"gateway_cpu_pct\":%.1f", s->gw_cpu);
    else
        printf(",\"gateway_cpu_pct\":null");
    printf(",\"bench_cpu_pct\":%.1f,\"max_send_lag_ms\":%.3f,\"late_sends\":%" PRIu64, s->self_cpu,
           ns_to_ms(n->max_lag_ns), n->late_sends);
    printf(",\"connect_failed\":%" PRIu64 ",\"upgrade_failed\":%" PRIu64 ",\"aborted\":%" PRIu64
           ",\"closed_by_server\":%" PRIu64 ",\"socket_errors\":%" PRIu64
           ",\"server_errors\":%" PRIu64 ",\"protocol_errors\":%" PRIu64 ",\"bad_msgs\":%" PRIu64
           ",\"misrouted\":%" PRIu64 ",\"reordered\":%" PRIu64 ",\"gaps\":%" PRIu64
           ",\"close_timeouts\":%" PRIu64 ",\"hard_timeout\":%s,\"interrupted\":%s,\"ok\":%s}\n",
           n->connect_failed, n->upgrade_failed, n->aborted, n->closed_by_server, n->conn_errors,
           n->server_errors, n->protocol_errors, n->bad_msgs, n->misrouted, n->reordered, n->gaps,
           n->close_timeouts, b->hard_timeout ? "true" : "false", b->interrupted ? "true" : "false",
           s->errors ? "false" : "true");
}

/* Prints the summary and the JSON line; returns the exit status (0 clean, 1 errors). */
static int report(const bench_t *b)
{
    summary_t s = summarize(b);
    print_summary(b, &s);
    print_json(b, &s);
    fflush(stdout);
    return s.errors ? 1 : 0;
}

/* ---- options and setup ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chat-bench [options]\n"
            "  --url ws://127.0.0.1:PORT  gateway to load (loopback only; default "
            "ws://127.0.0.1:8080)\n"
            "  --conns N         connections (default 1000); connection i joins room "
            "\"" BENCH_ROOM_PREFIX "<i %% R>\"\n"
            "  --rooms R         rooms (default 10)\n"
            "  --senders S       connections 0..S-1 send (default R: one per room)\n"
            "  --rate M          messages per second per sender (default 10)\n"
            "  --duration D      measured seconds (default 10)\n"
            "  --warmup W        seconds of sending before measuring (default 2)\n"
            "  --drain T         seconds to wait for late deliveries at the end (default 2)\n"
            "  --size B          chat text bytes, %d-%d (default 64)\n"
            "  --connect-rate C  new connections per second (default 2000)\n"
            "  --pid PID         gateway PID: report its RSS per connection and CPU\n"
            "  --quiet           no progress lines on stderr\n"
            "Prints a summary and, as the last line, one JSON object. Exit 0 when every "
            "connection opened and\nevery expected delivery arrived in order, 1 otherwise, 2 "
            "on bad options.\n",
            TEXT_HDR_LEN, BENCH_MAX_SIZE);
}

static int parse_u32(const char *name, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        fprintf(stderr,
                "chat-bench: %s: expected an integer in %" PRIu32 "..%" PRIu32 ", got \"%s\"\n",
                name, min, max, s);
        return -EINVAL;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_num(const char *name, const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "chat-bench: %s: expected a number in %g..%g, got \"%s\"\n", name, min, max,
                s);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* ws://HOST:PORT[/] with HOST an IPv4 loopback address (127.0.0.0/8) or "localhost". */
static int parse_url(bench_t *b, const char *url)
{
    char host[64];
    const char *h = url + 5, *colon, *end;
    uint32_t port;
    if (strncmp(url, "ws://", 5) != 0 || (colon = strchr(h, ':')) == NULL ||
        (size_t)(colon - h) >= sizeof(host) || colon == h) {
        fprintf(stderr, "chat-bench: --url: expected ws://127.x.x.x:PORT, got \"%s\"\n", url);
        return -EINVAL;
    }
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
    end = colon + 1 + strspn(colon + 1, "0123456789");
    if ((*end != '\0' && strcmp(end, "/") != 0) || end == colon + 1) {
        fprintf(stderr, "chat-bench: --url: expected ws://HOST:PORT with no path, got \"%s\"\n",
                url);
        return -EINVAL;
    }
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%.*s", (int)(end - colon - 1), colon + 1);
    if (parse_u32("--url port", portstr, 1, 65535, &port) != 0)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (uv_ip4_addr(host, (int)port, &b->addr) != 0 ||
        (ntohl(b->addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr,
                "chat-bench: --url: refusing \"%s\": only IPv4 loopback addresses "
                "(127.0.0.0/8) may be loaded\n",
                host);
        return -EINVAL;
    }
    snprintf(b->hostport, sizeof(b->hostport), "%s:%" PRIu32, host, port);
    return 0;
}

/* Returns 0, 1 after --help (exit 0), or -EINVAL after printing why. */
static int parse_opts(bench_t *b, int argc, char **argv)
{
    enum {
        O_URL = 1,
        O_CONNS,
        O_ROOMS,
        O_SENDERS,
        O_RATE,
        O_DURATION,
        O_WARMUP,
        O_DRAIN,
        O_SIZE,
        O_CRATE,
        O_PID,
        O_QUIET,
        O_HELP
    };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, O_URL},
        {"conns", required_argument, NULL, O_CONNS},
        {"rooms", required_argument, NULL, O_ROOMS},
        {"senders", required_argument, NULL, O_SENDERS},
        {"rate", required_argument, NULL, O_RATE},
        {"duration", required_argument, NULL, O_DURATION},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"drain", required_argument, NULL, O_DRAIN},
        {"size", required_argument, NULL, O_SIZE},
        {"connect-rate", required_argument, NULL, O_CRATE},
        {"pid", required_argument, NULL, O_PID},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    bench_opts_t *o = &b->o;
    bool senders_set = false;
    uint32_t pid;
    int opt, rc = 0;
    *o = (bench_opts_t){.url = "ws://127.0.0.1:8080",
                        .conns = 1000,
                        .rooms = 10,
                        .rate = 10,
                        .duration = 10,
                        .warmup = 2,
                        .drain = 2,
                        .size = 64,
                        .connect_rate = 2000};
    while (rc == 0 && (opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case O_URL:
            o->url = optarg;
            break;
        case O_CONNS:
            rc = parse_u32("--conns", optarg, 1, 1000000, &o->conns);
            break;
        case O_ROOMS:
            rc = parse_u32("--rooms", optarg, 1, 1000000, &o->rooms);
            break;
        case O_SENDERS:
            rc = parse_u32("--senders", optarg, 0, 1000000, &o->senders);
            senders_set = true;
            break;
        case O_RATE:
            rc = parse_num("--rate", optarg, 0.001, 1e6, &o->rate);
            break;
        case O_DURATION:
            rc = parse_num("--duration", optarg, 0.1, 86400, &o->duration);
            break;
        case O_WARMUP:
            rc = parse_num("--warmup", optarg, 0, 3600, &o->warmup);
            break;
        case O_DRAIN:
            rc = parse_num("--drain", optarg, 0, 3600, &o->drain);
            break;
        case O_SIZE:
            rc = parse_u32("--size", optarg, TEXT_HDR_LEN, BENCH_MAX_SIZE, &o->size);
            break;
        case O_CRATE:
            rc = parse_num("--connect-rate", optarg, 1, 1e6, &o->connect_rate);
            break;
        case O_PID:
            rc = parse_u32("--pid", optarg, 1, INT32_MAX, &pid);
            o->pid = (int)pid;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case O_HELP:
            usage(stdout);
            return 1; /* done, exit 0 */
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (rc != 0)
        return rc;
    if (optind < argc) {
        fprintf(stderr, "chat-bench: unexpected argument \"%s\"\n", argv[optind]);
        return -EINVAL;
    }
    if (!senders_set)
        o->senders = o->rooms < o->conns ? o->rooms : o->conns;
    if (o->rooms > o->conns || o->senders > o->conns) {
        fprintf(stderr, "chat-bench: --rooms and --senders must not exceed --conns (%" PRIu32 ")\n",
                o->conns);
        return -EINVAL;
    }
    if (o->pid && kill(o->pid, 0) != 0 && errno == ESRCH) {
        fprintf(stderr, "chat-bench: --pid %d: no such process\n", o->pid);
        return -EINVAL;
    }
    return parse_url(b, o->url);
}

/* Raises RLIMIT_NOFILE to its hard maximum and checks that --conns fits, as well as the local
 * port range (every connection takes one ephemeral port of 127.0.0.1). */
static int check_limits(bench_t *b)
{
    struct rlimit rl;
    char buf[64];
    unsigned lo, hi;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -errno;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -errno;
    if ((uint64_t)b->o.conns + BENCH_FD_RESERVE > (uint64_t)rl.rlim_max) {
        fprintf(stderr,
                "chat-bench: --conns %" PRIu32 " needs %" PRIu32 " file descriptors, but"
                " the hard limit (RLIMIT_NOFILE) is %llu; raise it (ulimit -Hn as root,"
                " or limits.conf) or use fewer connections\n",
                b->o.conns, b->o.conns + BENCH_FD_RESERVE, (unsigned long long)rl.rlim_max);
        return -EMFILE;
    }
    if (read_small_file("/proc/sys/net/ipv4/ip_local_port_range", buf, sizeof(buf)) == 0 &&
        sscanf(buf, "%u %u", &lo, &hi) == 2 && hi >= lo && b->o.conns > hi - lo + 1) {
        fprintf(stderr,
                "chat-bench: --conns %" PRIu32 " exceeds the %u local ports of"
                " net.ipv4.ip_local_port_range (%u-%u)\n",
                b->o.conns, hi - lo + 1, lo, hi);
        return -EADDRNOTAVAIL;
    }
    if (b->o.pid) {
        uint64_t gw = proc_nofile(b->o.pid);
        if (gw && gw < (uint64_t)b->o.conns + 16)
            fprintf(stderr,
                    "chat-bench: warning: the gateway's open-file limit is %" PRIu64
                    ", below --conns %" PRIu32 "\n",
                    gw, b->o.conns);
    }
    return 0;
}

static int bench_init(bench_t *b)
{
    const bench_opts_t *o = &b->o;
    uint64_t per_room = (o->senders + o->rooms - 1) / o->rooms;
    int rc;
    if ((rc = uv_loop_init(&b->loop)) != 0)
        return rc;
    b->loop.data = b;
    b->rbuf = xmalloc(BENCH_READ_BUF);
    b->conns = calloc(o->conns, sizeof(*b->conns));
    b->room_members = calloc(o->rooms, sizeof(*b->room_members));
    if (b->conns == NULL || b->room_members == NULL)
        return UV_ENOMEM;
    b->order_check = (uint64_t)o->conns * per_room <= BENCH_ORDER_MAX;
    for (uint32_t i = 0; i < o->conns; i++) {
        bconn_t *c = &b->conns[i];
        c->b = b;
        c->idx = i;
        c->room = i % o->rooms;
        if (b->order_check) {
            uint32_t senders_here =
                o->senders > c->room ? (o->senders - c->room + o->rooms - 1) / o->rooms : 0;
            if (senders_here)
                c->next_seq = calloc(senders_here, sizeof(*c->next_seq));
        }
    }
    b->rng = uv_hrtime() | 1;
    b->period_ns = 1e9 / o->rate;
    b->clk_tck = sysconf(_SC_CLK_TCK);
    uv_timer_init(&b->loop, &b->tick);
    uv_timer_init(&b->loop, &b->phase_timer);
    uv_timer_init(&b->loop, &b->progress);
    uv_timer_init(&b->loop, &b->hard);
    uv_signal_init(&b->loop, &b->sigint);
    return 0;
}

static void bench_free(bench_t *b)
{
    if (b->conns != NULL) {
        for (uint32_t i = 0; i < b->o.conns; i++) {
            free(b->conns[i].pend);
            free(b->conns[i].frag);
            free(b->conns[i].next_seq);
        }
    }
    free(b->conns);
    free(b->room_members);
    free(b->rbuf);
    free(b);
}

static void on_walk_report(uv_handle_t *h, void *arg)
{
    fprintf(stderr, "chat-bench: handle left open: %s\n", uv_handle_type_name(h->type));
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof(*b));
    int rc;
    if (b == NULL)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    if ((rc = parse_opts(b, argc, argv)) != 0) {
        bench_free(b);
        return rc > 0 ? 0 : 2;
    }
    if (check_limits(b) != 0) {
        bench_free(b);
        return 1;
    }
    if ((rc = bench_init(b)) != 0) {
        fprintf(stderr, "chat-bench: cannot start: %s\n", uv_strerror(rc));
        bench_free(b);
        return 1;
    }
    b->gw_before = proc_sample(b->o.pid);
    if (b->o.pid && !b->gw_before.ok)
        fprintf(stderr, "chat-bench: warning: cannot read /proc/%d; no RSS or CPU figures\n",
                b->o.pid);
    b->t_connect0 = uv_hrtime();
    uv_timer_start(&b->tick, on_tick, 0, BENCH_TICK_MS);
    uv_timer_start(&b->progress, on_progress, 1000, 1000);
    uv_timer_start(&b->hard, on_hard_timeout,
                   (uint64_t)((b->o.warmup + b->o.duration + BENCH_HARD_SLACK_S) * 1000), 0);
    uv_signal_start(&b->sigint, on_sigint, SIGINT);
    uv_run(&b->loop, UV_RUN_DEFAULT);

    int status = report(b);
    if ((rc = uv_loop_close(&b->loop)) != 0) {
        uv_walk(&b->loop, on_walk_report, NULL);
        fprintf(stderr, "chat-bench: loop not closed cleanly: %s\n", uv_strerror(rc));
        status = 1;
    }
    bench_free(b);
    return status;
}
