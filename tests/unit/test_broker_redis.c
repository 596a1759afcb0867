/* tests/unit/test_broker_redis.c - what only broker/redis.c promises, against a real redis-server
 * (started by the test on a free loopback port; the contract shared with the memory broker runs
 * in test_broker_contract.c): two brokers ("nodes" a and b) on one loop deliver each other's
 * publications in order, subscriptions follow PUBSUB NUMSUB, the /db is selected on both
 * connections, publish completes after Redis accepted it, and the failure cases: Redis stopped
 * and restarted (not up, publish refused, then resubscribed without any call), unreachable at
 * start, paused (SIGSTOP) long enough for the canary and the command timeout, paused after the
 * publisher connection timed out with no canary in flight (the subscriber connection must still
 * be replaced: a new CLIENT LIST id), and a connection that refuses a write at once (shut down
 * under the link): the failure reaches the callbacks from the loop, never inside publish().
 *
 * History on Redis: SCRIPT FLUSH mid-stream fails only the appends in flight (in order), a read
 * in flight still gets its answer, later appends succeed and script_loads grows; FLUSHALL, a
 * lost meta (the stream left behind is deleted) and a restart without persistence start a new
 * epoch (and the first append after the restart
 * succeeds: the scripts were loaded before it); bogus meta, stream entries and dedupe values
 * written with redis-cli answer CHAT_EBROKER (a WARN at most once per second), never a crash;
 * the keys carry the room as a hash tag and a TTL; two nodes appending one key store one
 * message; a failed link fails every pending append and read once, in order; on_subscribed
 * again after the subscriber connection is killed; history off loads no script. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "broker.h"
#include "broker_rec.h"
#include "err.h"
#include "log.h"
#include "redis_server.h"
#include "str.h"

#define MAX_MSGS 1024
#define MAX_APPS  256
#define MAX_READS 64
#define MAX_SUBS  64

typedef struct node {
    broker_t *b;
    uv_loop_t *loop;
    const char *id;
    int in_publish; /* set around broker_publish: a callback seeing it ran synchronously */
    int sync_calls;
    uint64_t up_at; /* uv_now() of the last on_link(1) */
    size_t nmsgs;
    char *msgs[MAX_MSGS]; /* "topic|data" */
    size_t npub;
    uint64_t pub_tags[MAX_MSGS];
    int pub_status[MAX_MSGS];
    int ups, downs;
    size_t napp, nread, nsubs;
    test_append_rec_t app[MAX_APPS];
    test_read_rec_t reads[MAX_READS];
    char *subs[MAX_SUBS]; /* on_subscribed topics (owned) */
} node_t;

/* uv_shutdown() requests; in the fixture because libuv completes them when the links close. */
typedef struct shutdowns {
    uv_shutdown_t reqs[4];
    int n;
} shutdowns_t;

typedef struct fixture {
    uv_loop_t loop;
    test_redis_t redis;
    node_t a, b, c;
    shutdowns_t shut;
} fixture_t;

static void on_message(void *ctx, chat_str_t topic, chat_str_t data)
{
    node_t *n = ctx;
    n->sync_calls += n->in_publish;
    assert_true(n->nmsgs < MAX_MSGS);
    char *m = malloc(topic.len + data.len + 2);
    assert_non_null(m);
    snprintf(m, topic.len + data.len + 2, "%.*s|%.*s", (int)topic.len, topic.p, (int)data.len,
             data.p);
    n->msgs[n->nmsgs++] = m;
}

static void on_published(void *ctx, uint64_t tag, int status, uint64_t receivers)
{
    node_t *n = ctx;
    n->sync_calls += n->in_publish;
    assert_true(n->npub < MAX_MSGS);
    n->pub_tags[n->npub] = tag;
    n->pub_status[n->npub++] = status;
}

static void on_appended(void *ctx, uint64_t tag, const broker_append_result_t *r)
{
    node_t *n = ctx;
    n->sync_calls += n->in_publish;
    assert_true(n->napp < MAX_APPS);
    test_append_rec_copy(&n->app[n->napp++], tag, r);
}

static void on_history(void *ctx, uint64_t tag, const broker_history_result_t *r)
{
    node_t *n = ctx;
    n->sync_calls += n->in_publish;
    assert_true(n->nread < MAX_READS);
    test_read_rec_copy(&n->reads[n->nread++], tag, r);
}

static void on_subscribed(void *ctx, chat_str_t topic)
{
    node_t *n = ctx;
    assert_true(n->nsubs < MAX_SUBS);
    n->subs[n->nsubs] = malloc(topic.len + 1);
    assert_non_null(n->subs[n->nsubs]);
    snprintf(n->subs[n->nsubs++], topic.len + 1, "%.*s", (int)topic.len, topic.p);
}

static void on_link(void *ctx, int up)
{
    node_t *n = ctx;
    n->sync_calls += n->in_publish;
    if (up) {
        n->ups++;
        n->up_at = uv_now(n->loop);
    } else {
        n->downs++;
    }
}

/* Opens node n with history_size size (0: off), history_ttl_ms 60 s and dedupe_window_ms 30 s. */
static void open_node_history(fixture_t *f, node_t *n, const char *id, const char *url,
                              uint64_t timeout, size_t size)
{
    broker_handlers_t h = {.on_message = on_message,
                           .on_published = on_published,
                           .on_link = on_link,
                           .on_appended = on_appended,
                           .on_history = on_history,
                           .on_subscribed = on_subscribed,
                           .ctx = n};
    broker_config_t cfg = {.url = url,
                           .prefix = "chat:",
                           .node_id = id,
                           .timeout_ms = timeout,
                           .history_size = size,
                           .history_ttl_ms = 60000,
                           .dedupe_window_ms = 30000};
    const char *why = NULL;
    n->id = id;
    n->loop = &f->loop;
    assert_int_equal(broker_open(&f->loop, &cfg, &h, &n->b, &why), 0);
    assert_string_equal(broker_kind(n->b), "redis");
}

static void open_node(fixture_t *f, node_t *n, const char *id, const char *url, uint64_t timeout)
{
    open_node_history(f, n, id, url, timeout, 0);
}

static void on_tick(uv_timer_t *t)
{
}

/* Runs the loop until pred(f) holds or ms pass. Returns pred's last value. */
static int run_until(fixture_t *f, int (*pred)(fixture_t *f), uint64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10); /* keeps the loop turning */
    uint64_t end = uv_now(&f->loop) + ms;
    int ok = 0;
    while (!(ok = pred(f)) && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return ok;
}

static int never(fixture_t *f)
{
    return 0;
}

static int both_up(fixture_t *f)
{
    return broker_is_up(f->a.b) && broker_is_up(f->b.b);
}

static int both_down(fixture_t *f)
{
    return !broker_is_up(f->a.b) && !broker_is_up(f->b.b);
}

static int a_up(fixture_t *f)
{
    return broker_is_up(f->a.b);
}

static int a_completed(fixture_t *f)
{
    return f->a.npub > 0;
}

/* broker_publish on node n, recording callbacks that would run inside it. */
static int publish_on(node_t *n, const char *topic, const char *data, uint64_t tag)
{
    return test_broker_publish(n->b, &n->in_publish, topic, data, tag);
}

/* The CLIENT LIST id of the one connection named name (fails if there is not exactly one). */
static long client_id(fixture_t *f, const char *name)
{
    long ids[4];
    int n = test_redis_client_ids(&f->redis, name, ids, 4);
    if (n != 1)
        fail_msg("%d connections named %s in CLIENT LIST, expected 1", n, name);
    return ids[0];
}

/* PUBSUB NUMSUB through redis-cli (it prints the channel, then the count). */
static long numsub(fixture_t *f, const char *channel)
{
    char out[160], cmd[256];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d PUBSUB NUMSUB %s | tail -1", f->redis.port,
             channel);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = '\0';
    if (fgets(out, sizeof(out), p) == NULL)
        out[0] = '\0';
    pclose(p);
    return strtol(out, NULL, 10);
}

/* Runs the loop (so subscriptions are sent) until NUMSUB channel == count, bounded 3 s. */
static void expect_numsub(fixture_t *f, const char *channel, long count)
{
    for (int i = 0; i < 60 && numsub(f, channel) != count; i++)
        run_until(f, never, 50);
    assert_int_equal(numsub(f, channel), count);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    if (test_redis_start(&f->redis) != 0)
        fail_msg("cannot start redis-server (is it installed?)");
    *state = f;
    return 0;
}

static void free_msgs(node_t *n)
{
    for (size_t i = 0; i < n->nmsgs; i++)
        free(n->msgs[i]);
    n->nmsgs = 0;
    for (size_t i = 0; i < n->nread; i++)
        test_read_rec_free(&n->reads[i]);
    n->nread = 0;
    for (size_t i = 0; i < n->nsubs; i++)
        free(n->subs[i]);
    n->nsubs = 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->a.b)
        broker_close(f->a.b);
    if (f->b.b)
        broker_close(f->b.b);
    if (f->c.b)
        broker_close(f->c.b);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    test_redis_stop(&f->redis);
    free_msgs(&f->a);
    free_msgs(&f->b);
    free_msgs(&f->c);
    free(f);
    return 0;
}

static void open_both(fixture_t *f, uint64_t timeout)
{
    open_node(f, &f->a, "a", f->redis.url, timeout);
    open_node(f, &f->b, "b", f->redis.url, timeout);
    assert_true(run_until(f, both_up, 5000));
}

static void test_cross_node_delivery_and_ack(void **state)
{
    fixture_t *f = *state;
    open_both(f, 2000);
    assert_int_equal(broker_subscribe(f->b.b, CHAT_LIT("r1")), 0);
    expect_numsub(f, "chat:room:r1", 1);
    assert_int_equal(broker_publish(f->a.b, CHAT_LIT("r1"), CHAT_LIT("hello"), 7), 0);
    assert_int_equal(f->a.npub, 0); /* never synchronously */
    run_until(f, never, 300);
    assert_int_equal(f->a.npub, 1);
    assert_int_equal(f->a.pub_tags[0], 7);
    assert_int_equal(f->a.pub_status[0], 0);
    assert_int_equal(f->b.nmsgs, 1);
    assert_string_equal(f->b.msgs[0], "r1|hello");
    assert_int_equal(f->a.nmsgs, 0); /* a does not subscribe r1 */
}

static void test_one_order_for_every_node(void **state)
{
    fixture_t *f = *state;
    char data[32];
    open_both(f, 2000);
    broker_subscribe(f->a.b, CHAT_LIT("ord"));
    broker_subscribe(f->b.b, CHAT_LIT("ord"));
    expect_numsub(f, "chat:room:ord", 2);
    for (int i = 0; i < 300; i++) {
        snprintf(data, sizeof(data), "%d", i);
        assert_int_equal(broker_publish(i % 2 ? f->a.b : f->b.b, CHAT_LIT("ord"),
                                        chat_cstr(data), 0),
                         0);
    }
    run_until(f, never, 700);
    assert_int_equal(f->a.nmsgs, 300);
    assert_int_equal(f->b.nmsgs, 300);
    /* One order for everyone (Redis'), and each publisher's messages in its own order. */
    int last[2] = {-1, -1};
    for (int i = 0; i < 300; i++) {
        assert_string_equal(f->a.msgs[i], f->b.msgs[i]);
        int v = atoi(f->a.msgs[i] + 4);
        assert_true(v > last[v % 2]);
        last[v % 2] = v;
    }
}

static void test_subscriptions_follow_numsub(void **state)
{
    fixture_t *f = *state;
    open_both(f, 2000);
    broker_subscribe(f->a.b, CHAT_LIT("r2"));
    broker_subscribe(f->b.b, CHAT_LIT("r2"));
    broker_subscribe(f->b.b, CHAT_LIT("r2")); /* idempotent */
    expect_numsub(f, "chat:room:r2", 2);
    expect_numsub(f, "chat:node:a", 1); /* the canary channel */
    broker_unsubscribe(f->a.b, CHAT_LIT("r2"));
    expect_numsub(f, "chat:room:r2", 1);
    broker_unsubscribe(f->b.b, CHAT_LIT("r2"));
    expect_numsub(f, "chat:room:r2", 0);
    broker_publish(f->a.b, CHAT_LIT("r2"), CHAT_LIT("nobody"), 0);
    run_until(f, never, 200);
    assert_int_equal(f->a.nmsgs + f->b.nmsgs, 0);
}

static void test_db_and_names_visible_in_client_list(void **state)
{
    fixture_t *f = *state;
    char url[96], out[4096], cmd[128];
    snprintf(url, sizeof(url), "%s/3", f->redis.url);
    open_node(f, &f->a, "dbnode", url, 2000);
    f->b.b = NULL;
    run_until(f, never, 300);
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d CLIENT LIST", f->redis.port);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    pclose(p);
    const char *pub = strstr(out, "name=chat-gateway:dbnode:pub");
    const char *sub = strstr(out, "name=chat-gateway:dbnode:sub");
    assert_non_null(pub);
    assert_non_null(sub);
    assert_non_null(strstr(pub, "db=3"));
    assert_non_null(strstr(sub, "db=3"));
}

static void test_restart_resubscribes_without_help(void **state)
{
    fixture_t *f = *state;
    open_both(f, 1000);
    broker_subscribe(f->b.b, CHAT_LIT("keep"));
    expect_numsub(f, "chat:room:keep", 1);
    test_redis_stop(&f->redis);
    assert_true(run_until(f, both_down, 3000));
    /* While down: publish is refused at once (no callback). */
    assert_int_equal(broker_publish(f->a.b, CHAT_LIT("keep"), CHAT_LIT("lost"), 9), CHAT_EBROKER);
    run_until(f, never, 200);
    assert_int_equal(f->a.npub, 0);
    assert_int_equal(test_redis_start(&f->redis), 0); /* same port */
    assert_true(run_until(f, both_up, 15000));
    expect_numsub(f, "chat:room:keep", 1); /* resubscribed by itself */
    assert_int_equal(broker_publish(f->a.b, CHAT_LIT("keep"), CHAT_LIT("back"), 10), 0);
    run_until(f, never, 300);
    assert_int_equal(f->b.nmsgs, 1);
    assert_string_equal(f->b.msgs[0], "keep|back");
    assert_true(f->a.downs >= 1);
    assert_true(f->a.ups >= 2);
}

static void test_unreachable_at_start_then_up(void **state)
{
    fixture_t *f = *state;
    test_redis_stop(&f->redis);
    open_node(f, &f->a, "a", f->redis.url, 1000);
    open_node(f, &f->b, "b", f->redis.url, 1000);
    run_until(f, never, 1200);
    assert_false(broker_is_up(f->a.b));
    assert_int_equal(broker_publish(f->a.b, CHAT_LIT("x"), CHAT_LIT("y"), 1), CHAT_EBROKER);
    assert_int_equal(test_redis_start(&f->redis), 0);
    assert_true(run_until(f, both_up, 15000));
}

static void test_pause_trips_canary_and_timeout(void **state)
{
    fixture_t *f = *state;
    open_both(f, 1000);
    broker_subscribe(f->b.b, CHAT_LIT("p"));
    expect_numsub(f, "chat:room:p", 1);
    test_redis_pause(&f->redis);
    assert_int_equal(broker_publish(f->a.b, CHAT_LIT("p"), CHAT_LIT("stuck"), 11), 0);
    /* the command times out after 1 s: the sender is told, never an ack */
    run_until(f, never, 1600);
    assert_int_equal(f->a.npub, 1);
    assert_int_equal(f->a.pub_tags[0], 11);
    assert_int_equal(f->a.pub_status[0], CHAT_EBROKER);
    /* the canary (3 s) or the link timeouts mark the broker down */
    assert_true(run_until(f, both_down, 4000));
    test_redis_resume(&f->redis);
    assert_true(run_until(f, both_up, 15000));
    expect_numsub(f, "chat:room:p", 1);
    assert_int_equal(broker_publish(f->a.b, CHAT_LIT("p"), CHAT_LIT("again"), 12), 0);
    run_until(f, never, 300);
    assert_int_equal(f->b.nmsgs >= 1, 1);
    assert_string_equal(f->b.msgs[f->b.nmsgs - 1], "p|again");
}

/* ---- a write refused at once ------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *req, int status)
{
}

static void shut_down_tcp(uv_handle_t *h, void *arg)
{
    shutdowns_t *s = arg;
    if (h->type == UV_TCP && !uv_is_closing(h) && s->n < 4 &&
        uv_shutdown(&s->reqs[s->n], (uv_stream_t *)h, on_shutdown) == 0)
        s->n++;
}

static void test_write_refused_at_once_fails_from_the_loop(void **state)
{
    fixture_t *f = *state;
    open_node(f, &f->a, "a", f->redis.url, 2000);
    assert_true(run_until(f, a_up, 5000));
    broker_subscribe(f->a.b, CHAT_LIT("w"));
    expect_numsub(f, "chat:room:w", 1);
    assert_int_equal(publish_on(&f->a, "w", "pending", 1), 0); /* written, reply not read yet */
    /* Shut the write side of both of a's connections under the links (node a's sockets are the
     * only TCP handles on this loop): libuv's uv_write() now fails at once with EPIPE. */
    uv_walk(&f->loop, shut_down_tcp, &f->shut);
    assert_int_equal(f->shut.n, 2);
    assert_int_equal(publish_on(&f->a, "w", "refused", 2), CHAT_EBROKER);
    assert_int_equal(publish_on(&f->a, "w", "after", 3), CHAT_EBROKER); /* link stopped taking */
    assert_int_equal(f->a.sync_calls, 0); /* nothing ran inside publish(): not tag 1's failure */
    assert_int_equal(f->a.npub, 0);
    assert_int_equal(f->a.downs, 0);
    /* The failure comes from the loop: tag 1 fails exactly once, tags 2 and 3 never call back. */
    assert_true(run_until(f, a_completed, 2000));
    run_until(f, never, 200);
    assert_int_equal(f->a.npub, 1);
    assert_int_equal(f->a.pub_tags[0], 1);
    assert_int_equal(f->a.pub_status[0], CHAT_EBROKER);
    assert_true(f->a.downs >= 1);
    /* and the links come back by themselves */
    assert_true(run_until(f, a_up, 10000));
    expect_numsub(f, "chat:room:w", 1);
    assert_int_equal(publish_on(&f->a, "w", "back", 4), 0);
    run_until(f, never, 300);
    assert_int_equal(f->a.npub, 2);
    assert_int_equal(f->a.pub_tags[1], 4);
    assert_int_equal(f->a.pub_status[1], 0);
    /* Redis ran tag 1's PUBLISH and may have delivered it before the subscriber connection
     * went (its read side stayed open): failed for the sender is not "never delivered". */
    assert_in_range(f->a.nmsgs, 1, 2);
    if (f->a.nmsgs == 2)
        assert_string_equal(f->a.msgs[0], "w|pending");
    assert_string_equal(f->a.msgs[f->a.nmsgs - 1], "w|back");
    assert_int_equal(f->a.sync_calls, 0);
}

/* ---- frozen after the publisher timed out, no canary in flight -------------------------- */

static void test_freeze_without_canary_in_flight_replaces_subscriber(void **state)
{
    fixture_t *f = *state;
    /* A 400 ms Redis timeout: a chat published just after a canary came back times the publisher
     * connection out (400..500 ms later) before the next canary (every second) could be sent.
     * Then no canary is in flight while Redis is frozen, and none can be late: the subscription
     * must count as unverified from the moment the publisher went down. */
    open_node(f, &f->a, "a", f->redis.url, 400);
    broker_subscribe(f->a.b, CHAT_LIT("fz"));
    assert_true(run_until(f, a_up, 5000)); /* up = the first canary just came back */
    long old_sub = client_id(f, "chat-gateway:a:sub");
    test_redis_pause(&f->redis);
    uint64_t since_canary = uv_now(&f->loop) - f->a.up_at;
    assert_int_equal(publish_on(&f->a, "fz", "frozen", 1), 0);
    assert_true(run_until(f, a_completed, 1000));
    assert_int_equal(f->a.pub_status[0], CHAT_EBROKER); /* timed out: never an ack */
    /* The premise: the publisher went down before the next canary was due. */
    assert_true(since_canary < 300);
    assert_true(uv_now(&f->loop) - f->a.up_at < 950);
    run_until(f, never, 6000 - (uv_now(&f->loop) - f->a.up_at)); /* frozen 6 s in all */
    test_redis_resume(&f->redis);
    assert_true(run_until(f, a_up, 20000));
    long ids[4];
    int n = test_redis_client_ids(&f->redis, "chat-gateway:a:sub", ids, 4);
    assert_int_equal(n, 1);
    if (ids[0] == old_sub)
        fail_msg("the subscriber connection (id %ld) survived the freeze", old_sub);
    expect_numsub(f, "chat:room:fz", 1); /* resubscribed on the new connection */
    assert_int_equal(publish_on(&f->a, "fz", "thawed", 2), 0);
    run_until(f, never, 300);
    assert_int_equal(f->a.npub, 2);
    assert_int_equal(f->a.pub_status[1], 0);
    assert_int_equal(f->a.nmsgs, 1);
    assert_string_equal(f->a.msgs[0], "fz|thawed");
}

/* ---- history ---------------------------------------------------------------------------- */

#define HSIZE 20

static size_t want_count; /* for the count predicates below (one test at a time) */

static int a_apps(fixture_t *f)
{
    return f->a.napp >= want_count;
}

static int a_reads(fixture_t *f)
{
    return f->a.nread >= want_count;
}

static int a_subs(fixture_t *f)
{
    return f->a.nsubs >= want_count;
}

static int a_msgs(fixture_t *f)
{
    return f->a.nmsgs >= want_count;
}

/* Runs the loop until pred holds for n (bounded 5 s), else fails with what. */
static void wait_n(fixture_t *f, int (*pred)(fixture_t *f), size_t n, const char *what)
{
    want_count = n;
    if (!run_until(f, pred, 5000))
        fail_msg("%s: not %zu within 5 s", what, n);
}

/* broker_append on node n: the message "<text>:<seq>:<epoch>", with key (NULL: none). */
static int append_on(node_t *n, const char *topic, const char *text, const char *key,
                     const char *receipt, uint64_t tag)
{
    char p0[64];
    snprintf(p0, sizeof(p0), "%s:", text);
    broker_append_t m = {.parts = {chat_cstr(p0), CHAT_LIT(":"), CHAT_LIT("")},
                         .dedupe_key = key ? chat_cstr(key) : CHAT_STR_NULL,
                         .receipt = receipt ? chat_cstr(receipt) : CHAT_STR_NULL};
    n->in_publish = 1;
    int rc = broker_append(n->b, chat_cstr(topic), &m, tag);
    n->in_publish = 0;
    return rc;
}

static int read_on(node_t *n, const char *topic, size_t limit, uint64_t tag)
{
    broker_history_query_t q = {.limit = limit};
    n->in_publish = 1;
    int rc = broker_history(n->b, chat_cstr(topic), &q, tag);
    n->in_publish = 0;
    return rc;
}

static uint64_t script_loads(node_t *n)
{
    broker_stats_t st;
    broker_get_stats(n->b, &st);
    return st.script_loads;
}

/* One redis-cli command that must succeed; its first output line in out. */
static void cli(fixture_t *f, const char *args, char *out, size_t cap)
{
    if (test_redis_cli(&f->redis, args, out, cap) != 0)
        fail_msg("redis-cli %s failed: %s", args, out);
}

/* The first line of "redis-cli -p <port> <args>" (a shell pipeline may follow in args). */
static void shell_line(fixture_t *f, const char *args, char *out, size_t cap)
{
    char full[512];
    snprintf(full, sizeof(full), "redis-cli -p %d %s", f->redis.port, args);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    out[0] = '\0';
    if (fgets(out, (int)cap, p) != NULL)
        out[strcspn(out, "\n")] = '\0';
    while (fgetc(p) != EOF) {
    }
    pclose(p);
}

static void open_history_a(fixture_t *f, uint64_t timeout)
{
    open_node_history(f, &f->a, "a", f->redis.url, timeout, HSIZE);
    f->b.b = NULL;
    assert_true(run_until(f, a_up, 5000));
}

static void test_script_flush_fails_only_appends_in_flight(void **state)
{
    fixture_t *f = *state;
    char out[256], want[128];

    open_history_a(f, 2000);
    assert_int_equal(script_loads(&f->a), 2); /* both, at connect */
    broker_subscribe(f->a.b, CHAT_LIT("sf"));
    expect_numsub(f, "chat:room:sf", 1);
    for (uint64_t t = 1; t <= 3; t++)
        assert_int_equal(append_on(&f->a, "sf", "before", NULL, NULL, t), 0);
    wait_n(f, a_apps, 3, "appends before the flush");
    cli(f, "SCRIPT FLUSH", out, sizeof(out));
    assert_string_equal(out, "OK");
    for (uint64_t t = 10; t <= 14; t++) /* all in flight when the NOSCRIPT comes back */
        assert_int_equal(append_on(&f->a, "sf", "lost", NULL, NULL, t), 0);
    assert_int_equal(read_on(&f->a, "sf", 10, 20), 0);
    wait_n(f, a_apps, 8, "appends in flight");
    wait_n(f, a_reads, 1, "the read in flight");
    for (size_t i = 3; i < 8; i++) { /* failed, each once, in order */
        assert_true(f->a.app[i].tag == 10 + (i - 3));
        assert_int_equal(f->a.app[i].status, CHAT_EBROKER);
    }
    assert_int_equal(f->a.reads[0].status, 0); /* sent again as EVAL */
    assert_true(f->a.reads[0].seq == 3);
    assert_int_equal(f->a.reads[0].n, 3);
    assert_int_equal(script_loads(&f->a), 4); /* loaded again once, not once per NOSCRIPT */
    for (uint64_t t = 30; t <= 32; t++)
        assert_int_equal(append_on(&f->a, "sf", "after", NULL, NULL, t), 0);
    wait_n(f, a_apps, 11, "appends after the flush");
    for (size_t i = 8; i < 11; i++) {
        assert_int_equal(f->a.app[i].status, 0);
        assert_true(f->a.app[i].seq == i - 4); /* 4, 5, 6: the failed ones stored nothing */
    }
    wait_n(f, a_msgs, 6, "messages");
    run_until(f, never, 200);
    assert_int_equal(f->a.nmsgs, 6); /* nothing of the failed ones was published */
    snprintf(want, sizeof(want), "sf|after:6:%s", f->a.app[0].epoch);
    assert_string_equal(f->a.msgs[5], want);
    assert_int_equal(f->a.sync_calls, 0);
}

static void test_flushall_starts_a_new_epoch(void **state)
{
    fixture_t *f = *state;
    char out[256], epoch[BROKER_EPOCH_MAX + 1];

    open_history_a(f, 2000);
    for (uint64_t t = 1; t <= 3; t++)
        assert_int_equal(append_on(&f->a, "fa", "m", NULL, NULL, t), 0);
    wait_n(f, a_apps, 3, "appends");
    assert_true(f->a.app[2].seq == 3);
    snprintf(epoch, sizeof(epoch), "%s", f->a.app[2].epoch);
    cli(f, "FLUSHALL", out, sizeof(out));
    assert_int_equal(append_on(&f->a, "fa", "m", NULL, NULL, 4), 0);
    wait_n(f, a_apps, 4, "the append after FLUSHALL");
    assert_int_equal(f->a.app[3].status, 0);
    assert_true(f->a.app[3].seq == 1);
    assert_string_not_equal(f->a.app[3].epoch, epoch);
    assert_int_equal(read_on(&f->a, "fa", 10, 1), 0);
    wait_n(f, a_reads, 1, "the read");
    assert_true(f->a.reads[0].seq == 1);
    assert_string_equal(f->a.reads[0].epoch, f->a.app[3].epoch);
    assert_int_equal(f->a.reads[0].n, 1);
    /* meta lost but the stream left (a partial eviction): the stream goes, a new epoch starts */
    snprintf(epoch, sizeof(epoch), "%s", f->a.app[3].epoch);
    cli(f, "DEL 'chat:{fa}:meta'", out, sizeof(out));
    assert_string_equal(out, "1");
    assert_int_equal(append_on(&f->a, "fa", "m", NULL, NULL, 5), 0);
    wait_n(f, a_apps, 5, "the append after the meta was lost");
    assert_int_equal(f->a.app[4].status, 0);
    assert_true(f->a.app[4].seq == 1);
    assert_string_not_equal(f->a.app[4].epoch, epoch);
    cli(f, "XLEN 'chat:{fa}:history'", out, sizeof(out));
    assert_string_equal(out, "1");
}

static void test_restart_without_persistence_starts_a_new_epoch(void **state)
{
    fixture_t *f = *state;
    char epoch[BROKER_EPOCH_MAX + 1];

    open_history_a(f, 1000);
    assert_int_equal(append_on(&f->a, "rs", "m", NULL, NULL, 1), 0);
    assert_int_equal(append_on(&f->a, "rs", "m", NULL, NULL, 2), 0);
    wait_n(f, a_apps, 2, "appends");
    snprintf(epoch, sizeof(epoch), "%s", f->a.app[1].epoch);
    test_redis_stop(&f->redis);
    assert_true(run_until(f, never, 300) == 0);
    assert_false(broker_is_up(f->a.b));
    assert_int_equal(test_redis_start(&f->redis), 0); /* same port, empty */
    assert_true(run_until(f, a_up, 15000));
    /* the first append on the new server: the scripts were loaded before it (no NOSCRIPT) */
    assert_int_equal(append_on(&f->a, "rs", "m", NULL, NULL, 3), 0);
    wait_n(f, a_apps, 3, "the append after the restart");
    assert_int_equal(f->a.app[2].status, 0);
    assert_true(f->a.app[2].seq == 1);
    assert_string_not_equal(f->a.app[2].epoch, epoch);
    assert_true(script_loads(&f->a) >= 4);
}

static void test_bogus_redis_data_answers_ebroker(void **state)
{
    fixture_t *f = *state;
    char out[512], cmd[512], receipt[300];
    char *logs = NULL;
    size_t logs_len = 0;
    FILE *mem = open_memstream(&logs, &logs_len);
    static const char *const reads[] = {
        "HSET 'chat:{b1}:meta' epoch 'bad epoch!' seq 1",
        "HSET 'chat:{b2}:meta' epoch good seq abc",
        "HSET 'chat:{b3}:meta' epoch good seq 99999999999999999",
        "HSET 'chat:{b4}:meta' epoch good seq 5",
        "HSET 'chat:{b5}:meta' epoch good seq 5",
        "HSET 'chat:{b6}:meta' epoch good seq 2",
        "SET 'chat:{b7}:meta' notahash",
        "HSET 'chat:{b8}:meta' epoch good seq 05",
        "HSET 'chat:{b9}:meta' epoch good",
    };
    static const char *const streams[] = {
        "XADD 'chat:{b4}:history' 3-0 x y",  /* not the field "m" */
        "XADD 'chat:{b5}:history' 3-1 m hi", /* not <seq>-0 */
        "XADD 'chat:{b6}:history' 3-0 m hi", /* above meta's seq */
        "XADD 'chat:{b9}:history' 1-0 m hi", /* meta without seq */
    };
    const size_t nreads = sizeof(reads) / sizeof(reads[0]);

    assert_non_null(mem);
    chat_log_setup_stream(mem);
    open_history_a(f, 2000);
    uint64_t start = uv_now(&f->loop);
    for (size_t i = 0; i < nreads; i++)
        cli(f, reads[i], out, sizeof(out));
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++)
        cli(f, streams[i], out, sizeof(out));
    cli(f, "SET 'chat:{d1}:dedupe:k' garbage", out, sizeof(out));
    cli(f, "SET 'chat:{d2}:dedupe:k' 0:good:r", out, sizeof(out));
    cli(f, "SET 'chat:{d3}:dedupe:k' '1:bad epoch:r'", out, sizeof(out));
    memset(receipt, 'r', sizeof(receipt) - 1);
    receipt[sizeof(receipt) - 1] = '\0';
    snprintf(cmd, sizeof(cmd), "SET 'chat:{d4}:dedupe:k' 1:good:%s", receipt);
    cli(f, cmd, out, sizeof(out));
    cli(f, "SET 'chat:{d5}:dedupe:k' 7:good:fine", out, sizeof(out));
    for (size_t i = 0; i < nreads; i++) {
        char topic[8];
        snprintf(topic, sizeof(topic), "b%zu", i + 1);
        assert_int_equal(read_on(&f->a, topic, 5, i + 1), 0);
    }
    assert_int_equal(append_on(&f->a, "b1", "m", NULL, NULL, 1), 0); /* bad epoch */
    assert_int_equal(append_on(&f->a, "b2", "m", NULL, NULL, 2), 0); /* bad seq */
    assert_int_equal(append_on(&f->a, "b6", "m", NULL, NULL, 3), 0); /* 3-0 taken */
    assert_int_equal(append_on(&f->a, "b7", "m", NULL, NULL, 4), 0); /* wrong type */
    for (uint64_t i = 1; i <= 4; i++) {
        char topic[8];
        snprintf(topic, sizeof(topic), "d%llu", (unsigned long long)i);
        assert_int_equal(append_on(&f->a, topic, "m", "k", "mine", 4 + i), 0);
    }
    assert_int_equal(append_on(&f->a, "d5", "m", "k", "mine", 9), 0);
    assert_int_equal(append_on(&f->a, "fine", "m", NULL, NULL, 10), 0);
    wait_n(f, a_reads, nreads, "reads of bogus data");
    wait_n(f, a_apps, 10, "appends to bogus data");
    uint64_t took = uv_now(&f->loop) - start;
    for (size_t i = 0; i < nreads; i++)
        if (f->a.reads[i].status != CHAT_EBROKER)
            fail_msg("read of b%zu (%s): status %d", i + 1, reads[i], f->a.reads[i].status);
    for (size_t i = 0; i < 8; i++)
        if (f->a.app[i].status != CHAT_EBROKER)
            fail_msg("append %zu: status %d", i + 1, f->a.app[i].status);
    /* a dedupe value of the right form is believed (it is what the script writes) */
    assert_int_equal(f->a.app[8].status, 0);
    assert_int_equal(f->a.app[8].duplicate, 1);
    assert_true(f->a.app[8].seq == 7);
    assert_string_equal(f->a.app[8].receipt, "fine");
    assert_int_equal(f->a.app[9].status, 0); /* and the broker goes on */
    assert_true(f->a.app[9].seq == 1);
    assert_true(broker_is_up(f->a.b));
    /* nothing of the refused appends was stored */
    cli(f, "HGET 'chat:{b6}:meta' seq", out, sizeof(out));
    assert_string_equal(out, "2");
    fflush(mem);
    size_t warns = 0;
    for (const char *p = logs; p != NULL && (p = strstr(p, "redis reply refused")) != NULL; p++)
        warns++;
    chat_log_setup_stream(NULL);
    fclose(mem);
    free(logs);
    assert_true(warns >= 1);
    if (warns > took / 1000 + 1)
        fail_msg("%zu warnings in %llu ms: more than one per second", warns,
                 (unsigned long long)took);
}

static void test_keys_carry_the_hash_tag_and_a_ttl(void **state)
{
    fixture_t *f = *state;
    char out[256], want[128];

    open_history_a(f, 2000);
    assert_int_equal(append_on(&f->a, "r1", "m", "k", "rc", 1), 0);
    assert_int_equal(read_on(&f->a, "r2", 0, 2), 0); /* creates an empty room's meta */
    wait_n(f, a_apps, 1, "the append");
    wait_n(f, a_reads, 1, "the read");
    cli(f, "TYPE 'chat:{r1}:history'", out, sizeof(out));
    assert_string_equal(out, "stream");
    cli(f, "HGET 'chat:{r1}:meta' seq", out, sizeof(out));
    assert_string_equal(out, "1");
    cli(f, "HGET 'chat:{r1}:meta' epoch", out, sizeof(out));
    assert_string_equal(out, f->a.app[0].epoch);
    cli(f, "XRANGE 'chat:{r1}:history' - +", out, sizeof(out));
    assert_string_equal(out, "1-0");
    cli(f, "GET 'chat:{r1}:dedupe:k'", out, sizeof(out));
    snprintf(want, sizeof(want), "1:%s:rc", f->a.app[0].epoch);
    assert_string_equal(out, want);
    static const char *const ttls[][2] = {{"chat:{r1}:meta", "60000"},
                                          {"chat:{r1}:history", "60000"},
                                          {"chat:{r1}:dedupe:k", "30000"},
                                          {"chat:{r2}:meta", "60000"}};
    for (size_t i = 0; i < 4; i++) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "PTTL '%s'", ttls[i][0]);
        cli(f, cmd, out, sizeof(out));
        long ttl = strtol(out, NULL, 10);
        if (ttl <= 0 || ttl > strtol(ttls[i][1], NULL, 10))
            fail_msg("PTTL %s = %s", ttls[i][0], out);
    }
    cli(f, "EXISTS 'chat:{r2}:history'", out, sizeof(out));
    assert_string_equal(out, "0");
    /* every key of a room carries the room as its hash tag */
    cli(f, "CLUSTER KEYSLOT 'chat:{r1}:meta'", out, sizeof(out));
    char slot[256];
    memcpy(slot, out, sizeof(slot));
    cli(f, "CLUSTER KEYSLOT 'chat:{r1}:dedupe:k'", out, sizeof(out));
    assert_string_equal(out, slot);
    cli(f, "CLUSTER KEYSLOT r1", out, sizeof(out));
    assert_string_equal(out, slot);
}

static int both_appended(fixture_t *f)
{
    return f->a.napp >= 1 && f->b.napp >= 1;
}

static void test_two_nodes_racing_one_key_store_one_message(void **state)
{
    fixture_t *f = *state;

    open_node_history(f, &f->a, "a", f->redis.url, 2000, HSIZE);
    open_node_history(f, &f->b, "b", f->redis.url, 2000, HSIZE);
    assert_true(run_until(f, both_up, 5000));
    broker_subscribe(f->a.b, CHAT_LIT("race"));
    expect_numsub(f, "chat:room:race", 1);
    assert_int_equal(append_on(&f->a, "race", "from-a", "u:cid", "ra", 1), 0);
    assert_int_equal(append_on(&f->b, "race", "from-b", "u:cid", "rb", 1), 0);
    assert_true(run_until(f, both_appended, 5000));
    const test_append_rec_t *x = &f->a.app[0], *y = &f->b.app[0];
    assert_int_equal(x->status, 0);
    assert_int_equal(y->status, 0);
    assert_int_equal(x->duplicate + y->duplicate, 1);
    assert_true(x->seq == 1 && y->seq == 1);
    assert_string_equal(x->epoch, y->epoch);
    assert_string_equal(x->duplicate ? x->receipt : y->receipt, x->duplicate ? "rb" : "ra");
    run_until(f, never, 300);
    assert_int_equal(f->a.nmsgs, 1);
    assert_int_equal(read_on(&f->a, "race", 10, 1), 0);
    wait_n(f, a_reads, 1, "the read");
    assert_true(f->a.reads[0].seq == 1);
    assert_int_equal(f->a.reads[0].n, 1);
}

static void test_failed_link_fails_pending_appends_and_reads_once(void **state)
{
    fixture_t *f = *state;

    open_history_a(f, 1000);
    test_redis_pause(&f->redis);
    for (uint64_t t = 1; t <= 3; t++)
        assert_int_equal(append_on(&f->a, "fl", "stuck", NULL, NULL, t), 0);
    assert_int_equal(read_on(&f->a, "fl", 5, 4), 0);
    assert_int_equal(append_on(&f->a, "fl", "stuck", NULL, NULL, 5), 0);
    wait_n(f, a_apps, 4, "failed appends");
    wait_n(f, a_reads, 1, "failed read");
    for (size_t i = 0; i < 4; i++) {
        assert_true(f->a.app[i].tag == (i < 3 ? i + 1 : 5));
        assert_int_equal(f->a.app[i].status, CHAT_EBROKER);
    }
    assert_int_equal(f->a.reads[0].status, CHAT_EBROKER);
    test_redis_resume(&f->redis);
    assert_true(run_until(f, a_up, 15000));
    assert_int_equal(f->a.napp, 4); /* once each */
    assert_int_equal(f->a.nread, 1);
    assert_int_equal(append_on(&f->a, "fl", "back", NULL, NULL, 6), 0);
    wait_n(f, a_apps, 5, "the append after");
    assert_int_equal(f->a.app[4].status, 0);
    broker_stats_t st;
    broker_get_stats(f->a.b, &st);
    assert_true(st.publish_errors >= 4);
    assert_int_equal(f->a.sync_calls, 0);
}

static int subscribed_twice(fixture_t *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->a.nsubs; i++)
        n += strcmp(f->a.subs[i], "s1") == 0;
    return n >= 2;
}

static void test_on_subscribed_again_after_subscriber_reconnect(void **state)
{
    fixture_t *f = *state;
    char out[256];

    open_node(f, &f->a, "a", f->redis.url, 2000);
    f->b.b = NULL;
    assert_true(run_until(f, a_up, 5000));
    broker_subscribe(f->a.b, CHAT_LIT("s1"));
    broker_subscribe(f->a.b, CHAT_LIT("s2"));
    wait_n(f, a_subs, 2, "on_subscribed");
    assert_string_equal(f->a.subs[0], "s1");
    assert_string_equal(f->a.subs[1], "s2");
    long old = client_id(f, "chat-gateway:a:sub");
    cli(f, "CLIENT KILL TYPE pubsub", out, sizeof(out));
    assert_true(run_until(f, subscribed_twice, 10000)); /* the batch resubscribe */
    wait_n(f, a_subs, 4, "on_subscribed after the reconnect");
    assert_true(client_id(f, "chat-gateway:a:sub") != old);
    for (size_t i = 0; i < f->a.nsubs; i++) /* rooms only: not the canary */
        assert_true(strcmp(f->a.subs[i], "s1") == 0 || strcmp(f->a.subs[i], "s2") == 0);
    /* and it means what it says: a publication made now is delivered */
    assert_int_equal(broker_publish(f->a.b, CHAT_LIT("s1"), CHAT_LIT("after"), 0), 0);
    wait_n(f, a_msgs, 1, "the message");
    assert_string_equal(f->a.msgs[0], "s1|after");
    broker_unsubscribe(f->a.b, CHAT_LIT("s2")); /* an unsubscribe is not confirmed as one */
    run_until(f, never, 300);
    assert_int_equal(f->a.nsubs, 4);
}

static void test_history_off_loads_no_script(void **state)
{
    fixture_t *f = *state;
    char out[64];

    open_both(f, 2000);
    broker_subscribe(f->a.b, CHAT_LIT("x"));
    expect_numsub(f, "chat:room:x", 1);
    assert_int_equal(script_loads(&f->a), 0);
    assert_int_equal(append_on(&f->a, "x", "m", NULL, NULL, 1), CHAT_EINVAL);
    shell_line(f, "INFO commandstats | grep -c 'cmdstat_script\\|cmdstat_eval'", out, sizeof(out));
    assert_string_equal(out, "0");
    /* a node with history on is what loads them */
    node_t *c = &f->c;
    open_node_history(f, c, "c", f->redis.url, 2000, HSIZE);
    for (int i = 0; i < 100 && !broker_is_up(c->b); i++)
        run_until(f, never, 50);
    assert_true(broker_is_up(c->b));
    assert_int_equal(script_loads(c), 2);
    shell_line(f, "INFO commandstats | grep -c 'cmdstat_script'", out, sizeof(out));
    assert_string_equal(out, "1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cross_node_delivery_and_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_order_for_every_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscriptions_follow_numsub, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_and_names_visible_in_client_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_resubscribes_without_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_at_start_then_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_trips_canary_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_refused_at_once_fails_from_the_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_freeze_without_canary_in_flight_replaces_subscriber,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_flush_fails_only_appends_in_flight, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flushall_starts_a_new_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_without_persistence_starts_a_new_epoch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bogus_redis_data_answers_ebroker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_carry_the_hash_tag_and_a_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_nodes_racing_one_key_store_one_message, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_link_fails_pending_appends_and_reads_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_subscribed_again_after_subscriber_reconnect, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_history_off_loads_no_script, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
