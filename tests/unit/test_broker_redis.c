/* tests/unit/test_broker_redis.c - what only broker/redis.c promises, against a real redis-server
 * (started by the test on a free loopback port; the contract shared with the memory broker runs
 * in test_broker_contract.c): two brokers ("nodes" a and b) on one loop deliver each other's
 * publications in order, subscriptions follow PUBSUB NUMSUB, the /db is selected on both
 * connections, publish completes after Redis accepted it, and the failure cases: Redis stopped
 * and restarted (not up, publish refused, then resubscribed without any call), unreachable at
 * start, paused (SIGSTOP) long enough for the canary and the command timeout, paused after the
 * publisher connection timed out with no canary in flight (the subscriber connection must still
 * be replaced: a new CLIENT LIST id), and a connection that refuses a write at once (shut down
 * under the link): the failure reaches the callbacks from the loop, never inside publish(). */
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
#include "redis_server.h"
#include "str.h"

#define MAX_MSGS 1024

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
} node_t;

/* uv_shutdown() requests; in the fixture because libuv completes them when the links close. */
typedef struct shutdowns {
    uv_shutdown_t reqs[4];
    int n;
} shutdowns_t;

typedef struct fixture {
    uv_loop_t loop;
    test_redis_t redis;
    node_t a, b;
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

static void open_node(fixture_t *f, node_t *n, const char *id, const char *url, uint64_t timeout)
{
    broker_handlers_t h = {.on_message = on_message, .on_published = on_published, .on_link = on_link, .ctx = n};
    broker_config_t cfg = {.url = url, .prefix = "chat:", .node_id = id, .timeout_ms = timeout};
    const char *why = NULL;
    n->id = id;
    n->loop = &f->loop;
    assert_int_equal(broker_open(&f->loop, &cfg, &h, &n->b, &why), 0);
    assert_string_equal(broker_kind(n->b), "redis");
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
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->a.b)
        broker_close(f->a.b);
    if (f->b.b)
        broker_close(f->b.b);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    test_redis_stop(&f->redis);
    free_msgs(&f->a);
    free_msgs(&f->b);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cross_node_delivery_and_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_order_for_every_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscriptions_follow_numsub, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_and_names_visible_in_client_list, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restart_resubscribes_without_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_at_start_then_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_trips_canary_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_refused_at_once_fails_from_the_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_freeze_without_canary_in_flight_replaces_subscriber,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
