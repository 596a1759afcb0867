/* tests/unit/test_broker_redis.c - broker/redis.c against a real redis-server (started by the
 * test on a free loopback port): two brokers ("nodes" a and b) on one loop deliver each other's
 * publications in order, subscriptions follow PUBSUB NUMSUB, the /db is selected on both
 * connections, publish completes after Redis accepted it, and the failure cases: Redis stopped
 * and restarted (not up, publish refused, then resubscribed without any call), unreachable at
 * start, and paused (SIGSTOP) long enough for the canary and the command timeout. */
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
#include "err.h"
#include "redis_server.h"
#include "str.h"

#define MAX_MSGS 1024

typedef struct node {
    broker_t *b;
    const char *id;
    size_t nmsgs;
    char *msgs[MAX_MSGS]; /* "topic|data" */
    size_t npub;
    uint64_t pub_tags[MAX_MSGS];
    int pub_status[MAX_MSGS];
    int ups, downs;
} node_t;

typedef struct fixture {
    uv_loop_t loop;
    test_redis_t redis;
    node_t a, b;
} fixture_t;

static void on_message(void *ctx, chat_str_t topic, chat_str_t data)
{
    node_t *n = ctx;
    assert_true(n->nmsgs < MAX_MSGS);
    char *m = malloc(topic.len + data.len + 2);
    assert_non_null(m);
    snprintf(m, topic.len + data.len + 2, "%.*s|%.*s", (int)topic.len, topic.p, (int)data.len,
             data.p);
    n->msgs[n->nmsgs++] = m;
}

static void on_published(void *ctx, uint64_t tag, int status)
{
    node_t *n = ctx;
    assert_true(n->npub < MAX_MSGS);
    n->pub_tags[n->npub] = tag;
    n->pub_status[n->npub++] = status;
}

static void on_link(void *ctx, int up)
{
    node_t *n = ctx;
    if (up)
        n->ups++;
    else
        n->downs++;
}

static void open_node(fixture_t *f, node_t *n, const char *id, const char *url, uint64_t timeout)
{
    broker_handlers_t h = {on_message, on_published, on_link, n};
    broker_config_t cfg = {.url = url, .prefix = "chat:", .node_id = id, .timeout_ms = timeout};
    const char *why = NULL;
    n->id = id;
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
