/* broker/redis_link.c - one Redis connection on libuv with hiredis' parser (see redis_link.h).
 *
 * States: BACKOFF -> RESOLVING -> CONNECTING -> HANDSHAKE -> READY, and from any of the middle
 * ones back to BACKOFF through fail() (the stream is closed first: a new connection reuses the
 * handle memory only after its close callback). One timer serves every state: the backoff delay,
 * the connect + handshake timeout, in READY a periodic check of the oldest command's deadline
 * (replies come in order, so the oldest is the first to time out), and a 0 ms shot for a failure
 * found inside redis_link_command() (uv_write refused at once): fail() runs the callbacks of the
 * pending commands and on_down, which must never run synchronously from a command. */
#include "redis_link.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "list.h"
#include "log.h"
#include "rng.h"

#define LINK_READ_BYTES 16384

typedef enum link_state {
    L_BACKOFF,
    L_RESOLVING,
    L_CONNECTING,
    L_HANDSHAKE,
    L_READY,
    L_CLOSED,
} link_state_t;

typedef struct pending_cmd {
    chat_list_t link;
    uint64_t tag;
    uint64_t deadline; /* uv_now() ms */
    int internal;      /* a handshake command: the link handles the reply */
} pending_cmd_t;

typedef struct write_req {
    uv_write_t req;
    char *cmd; /* from redisFormatCommandArgv */
} write_req_t;

struct redis_link {
    uv_loop_t *loop;
    redis_link_config_t cfg;
    char *name;
    redis_link_handlers_t h;
    link_state_t state;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } s;
    int stream_open;    /* s initialised and not closing */
    int stream_closing; /* uv_close(s) issued, callback pending */
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai;
    int gai_pending;
    uv_timer_t timer;
    redisReader *reader;
    chat_list_t pending; /* pending_cmd_t, in the order the commands were written */
    unsigned attempt;    /* consecutive failures, for the backoff */
    chat_rng_t rng;      /* the backoff's jitter */
    int handshake_left;
    const char *fail_soon; /* static reason of a failure deferred to the timer, or NULL */
    int pending_closes;    /* after redis_link_close(): handles still closing */
    char rbuf[LINK_READ_BYTES];
};

static void start_connect(redis_link_t *l);
static void fail(redis_link_t *l, const char *why);

static void maybe_free(redis_link_t *l)
{
    if (l->state != L_CLOSED || l->pending_closes > 0 || l->gai_pending || l->stream_closing)
        return;
    free(l->name);
    free(l);
}

static void drop_pending(redis_link_t *l, int notify)
{
    while (!chat_list_is_empty(&l->pending)) {
        pending_cmd_t *p = chat_container_of(l->pending.next, pending_cmd_t, link);
        chat_list_unlink(&p->link);
        if (notify && !p->internal && l->h.on_reply)
            l->h.on_reply(l->h.ctx, p->tag, NULL);
        free(p);
    }
}

static void on_stream_closed(uv_handle_t *h)
{
    redis_link_t *l = h->data;
    l->stream_closing = 0;
    if (l->state == L_CLOSED)
        maybe_free(l);
}

static void close_stream(redis_link_t *l)
{
    if (l->reader) {
        redisReaderFree(l->reader);
        l->reader = NULL;
    }
    if (!l->stream_open)
        return;
    l->stream_open = 0;
    l->stream_closing = 1;
    uv_close((uv_handle_t *)&l->s, on_stream_closed);
}

static uint64_t backoff_ms(redis_link_t *l)
{
    uint64_t d = l->cfg.backoff_min_ms;
    for (unsigned i = 0; i < l->attempt && d < l->cfg.backoff_max_ms; i++)
        d *= 2;
    if (d > l->cfg.backoff_max_ms)
        d = l->cfg.backoff_max_ms;
    /* jitter: uniformly in [d/2, d], from this link's own generator (seeded per process, node
     * and link), so a fleet of nodes does not reconnect in lockstep */
    return d / 2 + chat_rng_below(&l->rng, d / 2 + 1);
}

static void on_timer(uv_timer_t *t)
{
    redis_link_t *l = t->data;
    if (l->fail_soon) {
        fail(l, l->fail_soon);
        return;
    }
    switch (l->state) {
    case L_BACKOFF:
        if (l->stream_closing || l->gai_pending) { /* old handle or lookup not released yet */
            uv_timer_start(&l->timer, on_timer, 10, 0);
            return;
        }
        start_connect(l);
        return;
    case L_RESOLVING:
    case L_CONNECTING:
    case L_HANDSHAKE:
        fail(l, "connect timeout");
        return;
    case L_READY:
        if (!chat_list_is_empty(&l->pending)) {
            pending_cmd_t *p = chat_container_of(l->pending.next, pending_cmd_t, link);
            if (uv_now(l->loop) >= p->deadline)
                fail(l, "command timeout");
        }
        return;
    case L_CLOSED:
        return;
    }
}

static void fail(redis_link_t *l, const char *why)
{
    link_state_t was = l->state;
    l->fail_soon = NULL;
    if (was == L_CLOSED || was == L_BACKOFF)
        return;
    l->state = L_BACKOFF;
    if (l->gai_pending)
        uv_cancel((uv_req_t *)&l->gai);
    close_stream(l);
    drop_pending(l, 1);
    l->attempt++;
    uint64_t retry = backoff_ms(l);
    CHAT_LOG(CHAT_LOG_WARN, "redis link failed", CHAT_KV_C("link", l->name ? l->name : "redis"),
             CHAT_KV_C("reason", why), CHAT_KV_N("retry_ms", retry));
    uv_timer_start(&l->timer, on_timer, retry, 0);
    if (was == L_READY && l->h.on_down)
        l->h.on_down(l->h.ctx, why);
}

static void on_write(uv_write_t *req, int status)
{
    write_req_t *w = chat_container_of(req, write_req_t, req);
    redis_link_t *l = req->data;
    redisFreeCommand(w->cmd);
    free(w);
    if (status != 0 && status != UV_ECANCELED && l->state != L_CLOSED && l->stream_open)
        fail(l, uv_strerror(status));
}

/* The stream refused a write at once (uv_write: EPIPE after a shutdown, EBADF): the caller may
 * be inside redis_link_command(), so the link stops taking commands now and fails from the loop on
 * the next turn (the timer), where the pending commands get their NULL replies. why is static. */
static void fail_from_loop(redis_link_t *l, const char *why)
{
    if (l->fail_soon != NULL)
        return;
    l->fail_soon = why;
    uv_timer_start(&l->timer, on_timer, 0, 0);
}

/* Formats and writes one command; internal marks handshake commands. Returns 0, or CHAT_EBROKER
 * (no reply will follow; the link fails on the next loop turn). */
static int send_cmd(redis_link_t *l, int argc, const char **argv, const size_t *lens, uint64_t tag,
                    int internal, int expect_reply)
{
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return CHAT_ENOMEM;
    write_req_t *w = chat_xmalloc(sizeof(*w));
    w->cmd = cmd;
    w->req.data = l;
    uv_buf_t buf = uv_buf_init(cmd, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&l->s, &buf, 1, on_write);
    if (rc != 0) {
        redisFreeCommand(cmd);
        free(w);
        fail_from_loop(l, uv_strerror(rc));
        return CHAT_EBROKER;
    }
    if (expect_reply) {
        pending_cmd_t *p = chat_xcalloc(1, sizeof(*p));
        p->tag = tag;
        p->internal = internal;
        p->deadline = uv_now(l->loop) + l->cfg.timeout_ms;
        chat_list_insert_tail(&l->pending, &p->link);
    }
    return 0;
}

static void become_ready(redis_link_t *l)
{
    l->state = L_READY;
    l->attempt = 0;
    uint64_t every = l->cfg.timeout_ms / 4;
    if (every < 10)
        every = 10;
    if (every > 250)
        every = 250;
    uv_timer_start(&l->timer, on_timer, every, every);
    CHAT_LOG(CHAT_LOG_INFO, "redis link connected", CHAT_KV_C("link", l->name ? l->name : "redis"));
    if (l->h.on_ready)
        l->h.on_ready(l->h.ctx);
}

static void handshake_reply(redis_link_t *l, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof(why), "handshake refused: %.*s", (int)(r->len < 120 ? r->len : 120),
                 r->str);
        fail(l, why);
        return;
    }
    if (--l->handshake_left == 0 && l->fail_soon == NULL) /* else the timer fails it */
        become_ready(l);
}

static void on_reply(redis_link_t *l, redisReply *r)
{
    if (!chat_list_is_empty(&l->pending)) {
        pending_cmd_t *p = chat_container_of(l->pending.next, pending_cmd_t, link);
        chat_list_unlink(&p->link);
        int internal = p->internal;
        uint64_t tag = p->tag;
        free(p);
        if (internal)
            handshake_reply(l, r);
        else if (l->h.on_reply)
            l->h.on_reply(l->h.ctx, tag, r);
        return;
    }
    if (l->cfg.subscriber && l->state == L_READY && l->h.on_push) {
        l->h.on_push(l->h.ctx, r);
        return;
    }
    fail(l, "unexpected reply");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    redis_link_t *l = h->data;
    *buf = uv_buf_init(l->rbuf, sizeof(l->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    redis_link_t *l = s->data;
    if (nread < 0) {
        fail(l, nread == UV_EOF ? "connection closed by Redis" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0 || l->reader == NULL)
        return;
    if (redisReaderFeed(l->reader, buf->base, (size_t)nread) != REDIS_OK) {
        fail(l, "protocol error");
        return;
    }
    /* Replies may fail() the link (which frees the reader): re-check it each time. */
    while (l->reader != NULL && (l->state == L_HANDSHAKE || l->state == L_READY)) {
        void *reply = NULL;
        if (redisReaderGetReply(l->reader, &reply) != REDIS_OK) {
            fail(l, "protocol error");
            return;
        }
        if (reply == NULL)
            return;
        on_reply(l, reply);
        freeReplyObject(reply);
    }
}

static void start_handshake(redis_link_t *l)
{
    const char *argv[3];
    size_t lens[3];
    int n = 0;
    l->state = L_HANDSHAKE;
    l->reader = redisReaderCreate();
    l->handshake_left = 0;
    if (uv_read_start((uv_stream_t *)&l->s, on_alloc, on_read) != 0) {
        fail(l, "read failed");
        return;
    }
    if (l->cfg.url.has_password) {
        argv[n++] = "AUTH";
        if (l->cfg.url.user[0])
            argv[n++] = l->cfg.url.user;
        argv[n++] = l->cfg.url.password;
        for (int i = 0; i < n; i++)
            lens[i] = strlen(argv[i]);
        if (send_cmd(l, n, argv, lens, 0, 1, 1) != 0)
            return;
        l->handshake_left++;
    }
    if (l->cfg.url.db_given) {
        char db[16];
        snprintf(db, sizeof(db), "%d", l->cfg.url.db);
        const char *a[2] = {"SELECT", db};
        size_t al[2] = {6, strlen(db)};
        if (send_cmd(l, 2, a, al, 0, 1, 1) != 0)
            return;
        l->handshake_left++;
    }
    const char *a[3] = {"CLIENT", "SETNAME", l->name ? l->name : "chat-gateway"};
    size_t al[3] = {6, 7, strlen(a[2])};
    if (send_cmd(l, 3, a, al, 0, 1, 1) != 0)
        return;
    l->handshake_left++;
}

static void on_connect(uv_connect_t *req, int status)
{
    redis_link_t *l = req->data;
    if (l->state != L_CONNECTING)
        return; /* failed or closed meanwhile: the handle is closing */
    if (status != 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(status));
        fail(l, why);
        return;
    }
    start_handshake(l);
}

static void connect_addr(redis_link_t *l, const struct sockaddr *addr)
{
    uv_tcp_init(l->loop, &l->s.tcp);
    l->s.tcp.data = l;
    l->stream_open = 1;
    uv_tcp_nodelay(&l->s.tcp, 1);
    l->state = L_CONNECTING;
    l->connect_req.data = l;
    int rc = uv_tcp_connect(&l->connect_req, &l->s.tcp, addr, on_connect);
    if (rc != 0)
        fail(l, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    redis_link_t *l = req->data;
    l->gai_pending = 0;
    if (l->state == L_CLOSED) {
        uv_freeaddrinfo(res);
        maybe_free(l);
        return;
    }
    if (l->state != L_RESOLVING) { /* failed meanwhile (timeout): a retry is scheduled */
        uv_freeaddrinfo(res);
        return;
    }
    if (status != 0 || res == NULL) {
        char why[320];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", l->cfg.url.host, uv_strerror(status));
        uv_freeaddrinfo(res);
        fail(l, why);
        return;
    }
    connect_addr(l, res->ai_addr);
    uv_freeaddrinfo(res);
}

static void start_connect(redis_link_t *l)
{
    struct sockaddr_storage ss;
    uv_timer_start(&l->timer, on_timer, l->cfg.timeout_ms, 0);
    if (l->cfg.url.is_unix) {
        uv_pipe_init(l->loop, &l->s.pipe, 0);
        l->s.pipe.data = l;
        l->stream_open = 1;
        l->state = L_CONNECTING;
        l->connect_req.data = l;
        uv_pipe_connect(&l->connect_req, &l->s.pipe, l->cfg.url.path, on_connect);
        return;
    }
    if (uv_ip4_addr(l->cfg.url.host, l->cfg.url.port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(l->cfg.url.host, l->cfg.url.port, (struct sockaddr_in6 *)&ss) == 0) {
        connect_addr(l, (const struct sockaddr *)&ss);
        return;
    }
    char port[8];
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", l->cfg.url.port);
    l->state = L_RESOLVING;
    l->gai.data = l;
    int rc = uv_getaddrinfo(l->loop, &l->gai, on_resolved, l->cfg.url.host, port, &hints);
    if (rc != 0) {
        fail(l, uv_strerror(rc));
        return;
    }
    l->gai_pending = 1;
}

int redis_link_open(uv_loop_t *loop, const redis_link_config_t *cfg, const redis_link_handlers_t *h,
                    redis_link_t **out)
{
    redis_link_t *l = chat_xcalloc(1, sizeof(*l));
    l->loop = loop;
    l->cfg = *cfg;
    if (cfg->name)
        l->name = chat_xstrndup(cfg->name, strlen(cfg->name));
    l->cfg.name = l->name;
    chat_rng_seed(&l->rng, l->name, l->name ? strlen(l->name) : 0);
    if (l->cfg.backoff_min_ms < 2)
        l->cfg.backoff_min_ms = 2;
    if (l->cfg.backoff_max_ms < l->cfg.backoff_min_ms)
        l->cfg.backoff_max_ms = l->cfg.backoff_min_ms;
    l->h = *h;
    chat_list_init(&l->pending);
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    l->state = L_BACKOFF;
    start_connect(l);
    *out = l;
    return 0;
}

int redis_link_ready(const redis_link_t *l)
{
    return l->state == L_READY && l->fail_soon == NULL;
}

int redis_link_command(redis_link_t *l, int argc, const char **argv, const size_t *lens,
                       uint64_t tag)
{
    if (!redis_link_ready(l))
        return CHAT_EBROKER;
    return send_cmd(l, argc, argv, lens, tag, 0, !l->cfg.subscriber);
}

void redis_link_reset(redis_link_t *l, const char *why)
{
    fail(l, why);
}

static void on_timer_closed(uv_handle_t *h)
{
    redis_link_t *l = h->data;
    l->pending_closes--;
    maybe_free(l);
}

void redis_link_close(redis_link_t *l)
{
    if (l->state == L_CLOSED)
        return;
    l->state = L_CLOSED;
    drop_pending(l, 0);
    if (l->gai_pending)
        uv_cancel((uv_req_t *)&l->gai);
    close_stream(l);
    l->pending_closes = 1;
    uv_close((uv_handle_t *)&l->timer, on_timer_closed);
}
