/* tests/unit/test_broker_contract.c - the shared contract of broker/broker.h, checked against both
 * implementations: every case runs once on memory:// and once on redis:// against a real
 * redis-server (tests/support/redis_server.c starts one per case on a free loopback port; a
 * missing redis-server is a failure, not a skip). The cases: publish() never calls back
 * synchronously; a broker receives its own publications, in publish order, and only for the
 * topics it subscribes; data is copied at publish; on_published runs exactly once per tag != 0,
 * in publish order, never for tag 0, with or without subscribers; unsubscribe (idempotent, like
 * subscribe) drops later and already queued messages, also from inside a handler; while the
 * broker is down (memory: closed; Redis: the server stopped) publish() returns CHAT_EBROKER and
 * no callback runs; broker_close() drops pending publications without callbacks, runs no handler
 * afterwards (also when called from a handler) and frees everything (uv_loop_close() == 0, and
 * ASan's leak check).
 *
 * What "has taken effect" means differs (a Redis SUBSCRIBE travels on its own connection), so the
 * cases never sleep: settle() subscribes a fresh barrier topic and publishes probes to it until
 * one comes back. One subscriber connection and one publisher connection, each in order (or the
 * memory broker's FIFO), mean that everything asked before settle() has then taken effect.
 * Implementation-specific cases stay in test_broker_memory.c and test_broker_redis.c. */
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
#include "list.h"
#include "redis_server.h"
#include "str.h"

/* ---- the two backends ------------------------------------------------------------------- */

typedef struct backend {
    const char *name;
    int redis; /* 0: memory:// */
} backend_t;

static const backend_t memory_backend = {"memory", 0};
static const backend_t redis_backend = {"redis", 1};

/* ---- fixture: a loop, a broker and a recorder ------------------------------------------- */

#define BARRIER_PREFIX "contract-barrier-"
#define UP_WITHIN_MS   5000

/* The recorder (support/broker_rec.h) and what the contract adds to it. */
typedef struct fixture {
    test_broker_rec_t r; /* ignore: barrier_ignore */
    const backend_t *be;
    test_redis_t redis;
    unsigned barrier_no;        /* settle(): the current barrier topic */
    size_t barrier_seen;        /* probes of the current barrier topic received */
    size_t want_msgs, want_pub; /* for the run_until() predicates */
} fixture_t;

static void barrier_name(const fixture_t *f, char *out, size_t cap)
{
    snprintf(out, cap, BARRIER_PREFIX "%u", f->barrier_no);
}

/* Probes are not part of what a case records: counts those of the current barrier topic. */
static int barrier_ignore(test_broker_rec_t *r, chat_str_t topic)
{
    fixture_t *f = chat_container_of(r, fixture_t, r);
    char barrier[48];

    if (topic.len < strlen(BARRIER_PREFIX) ||
        memcmp(topic.p, BARRIER_PREFIX, strlen(BARRIER_PREFIX)) != 0)
        return 0;
    barrier_name(f, barrier, sizeof(barrier));
    if (chat_str_eq(topic, chat_cstr(barrier)))
        f->barrier_seen++;
    return 1;
}

static void on_tick(uv_timer_t *t)
{
}

/* Runs the loop until pred(f) holds or ms pass (a 10 ms tick keeps it turning). Returns pred's
 * last value. */
static int run_until(fixture_t *f, int (*pred)(fixture_t *f), uint64_t ms)
{
    uv_timer_t tick;
    int ok;

    uv_timer_init(&f->r.loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t end = uv_now(&f->r.loop) + ms;
    for (int i = 0; i < 100000 && !(ok = pred(f)) && uv_now(&f->r.loop) < end; i++)
        uv_run(&f->r.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->r.loop, UV_RUN_NOWAIT);
    return ok;
}

static int is_up(fixture_t *f)
{
    return broker_is_up(f->r.b);
}

static int is_down(fixture_t *f)
{
    return !broker_is_up(f->r.b);
}

static int got_wanted(fixture_t *f)
{
    return f->r.nmsgs >= f->want_msgs && f->r.npub >= f->want_pub;
}

static int barrier_back(fixture_t *f)
{
    return f->barrier_seen > 0;
}

/* Runs the loop until at least msgs messages and pub completions arrived (bounded 10 s). */
static void wait_for(fixture_t *f, size_t msgs, size_t pub)
{
    f->want_msgs = msgs;
    f->want_pub = pub;
    if (!run_until(f, got_wanted, 10000))
        fail_msg("%s: %zu/%zu messages and %zu/%zu completions within 10 s", f->be->name,
                 f->r.nmsgs, msgs, f->r.npub, pub);
}

/* Returns once everything asked of the broker so far has taken effect (see the top comment). */
static void settle(fixture_t *f)
{
    char barrier[48];

    f->barrier_no++;
    f->barrier_seen = 0;
    barrier_name(f, barrier, sizeof(barrier));
    assert_int_equal(broker_subscribe(f->r.b, chat_cstr(barrier)), 0);
    for (int i = 0; i < 100 && f->barrier_seen == 0; i++) { /* 100 probes, 50 ms apart */
        assert_int_equal(broker_publish(f->r.b, chat_cstr(barrier), CHAT_LIT("probe"), 0), 0);
        run_until(f, barrier_back, 50);
    }
    if (f->barrier_seen == 0)
        fail_msg("%s: no probe of %s came back within 5 s", f->be->name, barrier);
    assert_int_equal(broker_unsubscribe(f->r.b, chat_cstr(barrier)), 0);
}

static int open_broker(fixture_t *f, const broker_handlers_t *h, broker_t **out)
{
    broker_config_t cfg = {.url = f->be->redis ? f->redis.url : "memory://",
                           .prefix = "chat:",
                           .node_id = "t",
                           .timeout_ms = 2000};
    const char *why = NULL;
    int rc = broker_open(&f->r.loop, &cfg, h, out, &why);
    if (rc == 0)
        assert_string_equal(broker_kind(*out), f->be->name);
    return rc;
}

/* Closes the broker if the case did not, then closes any handle left and drains the loop. */
static int teardown(void **state)
{
    fixture_t *f = *state;
    int rc = test_broker_rec_teardown(&f->r);

    test_redis_stop(&f->redis);
    free(f);
    return rc;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    broker_handlers_t h = {.on_message = test_broker_rec_message,
                          .on_published = test_broker_rec_published};
    const char *problem = NULL;

    if (f == NULL || uv_loop_init(&f->r.loop) != 0) {
        free(f);
        return -1;
    }
    f->be = *state;
    *state = f;
    f->r.ignore = barrier_ignore;
    h.ctx = &f->r;
    if (f->be->redis && test_redis_start(&f->redis) != 0)
        problem = "cannot start redis-server (is it installed?)";
    else if (open_broker(f, &h, &f->r.b) != 0)
        problem = "broker_open failed";
    else if (!run_until(f, is_up, UP_WITHIN_MS))
        problem = "broker not up within 5 s";
    if (problem == NULL)
        return 0;
    fprintf(stderr, "# %s: %s\n", f->be->name, problem);
    teardown(state); /* cmocka runs no teardown after a failed setup */
    return -1;
}

/* Closes the broker (if the case did not), runs the loop dry and requires a clean
 * uv_loop_close() and no handler call after the close. */
static void finish(fixture_t *f)
{
    test_broker_rec_finish(&f->r);
}

static int publish(fixture_t *f, const char *topic, const char *data, uint64_t tag)
{
    return test_broker_rec_publish(&f->r, topic, data, tag);
}

static void subscribe(fixture_t *f, const char *topic)
{
    assert_int_equal(broker_subscribe(f->r.b, chat_cstr(topic)), 0);
}

static void assert_msg(const fixture_t *f, size_t i, const char *topic, const char *data)
{
    test_broker_rec_assert_msg(&f->r, i, topic, data);
}

/* The broker can no longer take publications: memory:// only once closed, Redis when the server
 * is gone. */
static void go_down(fixture_t *f)
{
    if (!f->be->redis) {
        f->r.closed = 1;
        broker_close(f->r.b); /* the object lives until its handle's close callback */
        return;
    }
    test_redis_stop(&f->redis);
    if (!run_until(f, is_down, 5000))
        fail_msg("redis broker still up 5 s after redis-server stopped");
}

/* ---- asynchrony ------------------------------------------------------------------------- */

static void test_publish_never_calls_back_synchronously(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    for (uint64_t t = 1; t <= 10; t++)
        assert_int_equal(publish(f, "room", "hello", t), 0);
    assert_int_equal(publish(f, "room", "untagged", 0), 0);
    assert_int_equal(f->r.nmsgs, 0);
    assert_int_equal(f->r.npub, 0);
    wait_for(f, 11, 10);
    settle(f);
    assert_int_equal(f->r.sync_calls, 0);
    assert_int_equal(f->r.nmsgs, 11);
    assert_int_equal(f->r.npub, 10);
    finish(f);
}

static void test_open_copies_handlers(void **state)
{
    fixture_t *f = *state;
    broker_handlers_t *h = malloc(sizeof(*h));
    broker_t *own = f->r.b, *b = NULL;

    assert_non_null(h);
    *h = (broker_handlers_t){.on_message = test_broker_rec_message,
                             .on_published = test_broker_rec_published,
                             .ctx = &f->r};
    assert_int_equal(open_broker(f, h, &b), 0);
    memset(h, 0, sizeof(*h));
    free(h); /* the broker must have its own copy */
    f->r.b = b;
    assert_true(run_until(f, is_up, UP_WITHIN_MS));
    subscribe(f, "t");
    settle(f);
    assert_int_equal(publish(f, "t", "x", 1), 0);
    wait_for(f, 1, 1);
    assert_msg(f, 0, "t", "x");
    broker_close(b);
    f->r.b = own;
    finish(f);
}

/* ---- delivery --------------------------------------------------------------------------- */

static void test_own_publications_are_received(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    assert_int_equal(publish(f, "room", "mine", 5), 0);
    wait_for(f, 1, 1);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1); /* once: local delivery is not a special case */
    assert_msg(f, 0, "room", "mine");
    assert_int_equal(f->r.npub, 1);
    assert_true(f->r.pub_tags[0] == 5);
    assert_int_equal(f->r.pub_status[0], 0);
    finish(f);
}

static void test_subscribed_topic_receives_in_publish_order(void **state)
{
    fixture_t *f = *state;
    char data[32];

    subscribe(f, "room");
    settle(f);
    for (int i = 0; i < 1000; i++) {
        snprintf(data, sizeof(data), "msg-%d", i);
        assert_int_equal(publish(f, "room", data, 0), 0);
    }
    wait_for(f, 1000, 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(data, sizeof(data), "msg-%d", i);
        assert_msg(f, (size_t)i, "room", data);
    }
    finish(f);
}

static void test_interleaved_topics_keep_order(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "a");
    subscribe(f, "b");
    settle(f);
    assert_int_equal(publish(f, "a", "1", 0), 0);
    assert_int_equal(publish(f, "b", "2", 0), 0);
    assert_int_equal(publish(f, "c", "lost", 0), 0);
    assert_int_equal(publish(f, "a", "3", 0), 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 3);
    assert_msg(f, 0, "a", "1");
    assert_msg(f, 1, "b", "2");
    assert_msg(f, 2, "a", "3");
    finish(f);
}

static void test_unsubscribed_topic_gets_nothing(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    assert_int_equal(publish(f, "other", "x", 0), 0);
    assert_int_equal(publish(f, "Room", "x", 0), 0);
    assert_int_equal(publish(f, "room2", "x", 0), 0);
    assert_int_equal(publish(f, "roo", "x", 0), 0);
    assert_int_equal(publish(f, "room", "yes", 0), 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1);
    assert_msg(f, 0, "room", "yes");
    finish(f);
}

static void test_no_subscription_gets_nothing(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(publish(f, "room", "x", 1), 0);
    wait_for(f, 0, 1);
    settle(f);
    assert_int_equal(f->r.nmsgs, 0);
    finish(f);
}

static void test_data_is_copied_at_publish(void **state)
{
    fixture_t *f = *state;
    char topic[] = "room", data[] = "original";

    subscribe(f, "room");
    settle(f);
    assert_int_equal(broker_publish(f->r.b, chat_str(topic, 4), chat_str(data, 8), 0), 0);
    memcpy(topic, "XXXX", 4);
    memcpy(data, "changed!", 8);
    wait_for(f, 1, 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1);
    assert_msg(f, 0, "room", "original");
    finish(f);
}

static void test_binary_and_empty_data(void **state)
{
    fixture_t *f = *state;
    static const char bin[] = {'a', '\0', 'b', '\xFF', '\0'};

    assert_int_equal(broker_subscribe(f->r.b, chat_str("t\0x", 3)), 0);
    settle(f);
    assert_int_equal(broker_publish(f->r.b, chat_str("t\0x", 3), chat_str(bin, 5), 0), 0);
    assert_int_equal(broker_publish(f->r.b, chat_str("t\0x", 3), CHAT_LIT(""), 0), 0);
    assert_int_equal(broker_publish(f->r.b, chat_str("t", 1), CHAT_LIT("no"), 0), 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 2);
    assert_int_equal(f->r.msgs[0].topic_len, 3);
    assert_memory_equal(f->r.msgs[0].topic, "t\0x", 3);
    assert_int_equal(f->r.msgs[0].data_len, 5);
    assert_memory_equal(f->r.msgs[0].data, bin, 5);
    assert_int_equal(f->r.msgs[1].data_len, 0);
    finish(f);
}

static void test_subscribe_is_idempotent(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    subscribe(f, "room");
    settle(f);
    assert_int_equal(publish(f, "room", "once", 0), 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1); /* not once per subscribe call */
    assert_int_equal(broker_unsubscribe(f->r.b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "none", 0), 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1); /* one unsubscribe undoes any number of subscribes */
    finish(f);
}

static void test_unsubscribe_is_idempotent(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_unsubscribe(f->r.b, CHAT_LIT("never")), 0);
    subscribe(f, "room");
    assert_int_equal(broker_unsubscribe(f->r.b, CHAT_LIT("room")), 0);
    assert_int_equal(broker_unsubscribe(f->r.b, CHAT_LIT("room")), 0);
    subscribe(f, "room"); /* and a topic can be subscribed again */
    settle(f);
    assert_int_equal(publish(f, "room", "back", 0), 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1);
    assert_msg(f, 0, "room", "back");
    finish(f);
}

/* ---- on_published ----------------------------------------------------------------------- */

static void test_completions_in_publish_order_once_per_tag(void **state)
{
    fixture_t *f = *state;
    static const uint64_t tags[] = {5, 0, 3, 0, 0, 9, 1, UINT64_MAX, 0, 7};
    static const uint64_t want[] = {5, 3, 9, 1, UINT64_MAX, 7};
    const size_t ntags = sizeof(tags) / sizeof(tags[0]), nwant = sizeof(want) / sizeof(want[0]);

    subscribe(f, "room");
    settle(f);
    for (size_t i = 0; i < ntags; i++)
        assert_int_equal(publish(f, "room", "x", tags[i]), 0);
    wait_for(f, ntags, nwant);
    settle(f); /* and a while longer: still once each, never for tag 0 */
    settle(f);
    assert_int_equal(f->r.npub, nwant);
    for (size_t i = 0; i < f->r.npub; i++) {
        assert_true(f->r.pub_tags[i] == want[i]);
        assert_int_equal(f->r.pub_status[i], 0);
    }
    assert_int_equal(f->r.nmsgs, ntags);
    assert_int_equal(f->r.sync_calls, 0);
    finish(f);
}

static void test_on_published_without_subscribers(void **state)
{
    fixture_t *f = *state;

    /* A publication completes whether or not anyone listens. */
    assert_int_equal(publish(f, "nobody", "x", 11), 0);
    assert_int_equal(publish(f, "nobody", "y", 12), 0);
    wait_for(f, 0, 2);
    settle(f);
    assert_int_equal(f->r.npub, 2);
    assert_true(f->r.pub_tags[0] == 11);
    assert_true(f->r.pub_tags[1] == 12);
    assert_int_equal(f->r.pub_status[0], 0);
    assert_int_equal(f->r.pub_status[1], 0);
    assert_int_equal(f->r.nmsgs, 0);
    finish(f);
}

/* ---- unsubscribe ------------------------------------------------------------------------ */

static void test_unsubscribe_drops_later_deliveries(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    assert_int_equal(publish(f, "room", "before", 0), 0);
    settle(f);
    assert_int_equal(broker_unsubscribe(f->r.b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "after", 1), 0);
    wait_for(f, 0, 1); /* the publication itself still completes */
    settle(f);
    assert_int_equal(f->r.nmsgs, 1);
    assert_msg(f, 0, "room", "before");
    assert_int_equal(f->r.npub, 1);
    finish(f);
}

static void test_unsubscribe_drops_queued_messages(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    subscribe(f, "keep");
    settle(f);
    assert_int_equal(publish(f, "room", "queued", 1), 0);
    assert_int_equal(publish(f, "keep", "kept", 2), 0);
    assert_int_equal(broker_unsubscribe(f->r.b, CHAT_LIT("room")), 0); /* before any loop turn */
    wait_for(f, 1, 2);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1);
    assert_msg(f, 0, "keep", "kept");
    assert_int_equal(f->r.npub, 2);
    finish(f);
}

static void unsubscribe_hook(test_broker_rec_t *r, chat_str_t topic, chat_str_t data)
{
    /* On the first message, leave the room: the rest must not arrive. */
    if (r->hook_budget-- > 0)
        assert_int_equal(broker_unsubscribe(r->b, topic), 0);
}

static void test_unsubscribe_from_handler_drops_the_rest(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    f->r.on_msg_hook = unsubscribe_hook;
    f->r.hook_budget = 1;
    assert_int_equal(publish(f, "room", "1", 0), 0);
    assert_int_equal(publish(f, "room", "2", 0), 0);
    assert_int_equal(publish(f, "room", "3", 0), 0);
    wait_for(f, 1, 0);
    settle(f);
    assert_int_equal(f->r.nmsgs, 1);
    assert_msg(f, 0, "room", "1");
    finish(f);
}

/* ---- down ------------------------------------------------------------------------------- */

static void test_publish_while_down_returns_ebroker_without_callback(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    go_down(f);
    assert_int_equal(broker_is_up(f->r.b), 0);
    assert_int_equal(publish(f, "room", "x", 1), CHAT_EBROKER);
    assert_int_equal(publish(f, "room", "y", 0), CHAT_EBROKER);
    assert_int_equal(f->r.sync_calls, 0);
    if (f->be->redis) { /* still open: give a wrong callback the time to show up */
        f->want_pub = 1;
        f->want_msgs = 1;
        assert_false(run_until(f, got_wanted, 500));
    }
    finish(f);
    assert_int_equal(f->r.npub, 0); /* an error from publish means no callback */
    assert_int_equal(f->r.nmsgs, 0);
}

/* ---- broker_close ----------------------------------------------------------------------- */

static void test_close_drops_pending_without_callbacks(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    for (uint64_t t = 1; t <= 100; t++)
        assert_int_equal(publish(f, "room", "pending payload that must be freed", t), 0);
    finish(f);
    assert_int_equal(f->r.nmsgs, 0);
    assert_int_equal(f->r.npub, 0);
}

static void test_close_reports_down_and_refuses_publish(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_is_up(f->r.b), 1);
    f->r.closed = 1;
    broker_close(f->r.b);
    /* The object lives until its handles' close callbacks: it may still be asked. */
    assert_int_equal(broker_is_up(f->r.b), 0);
    assert_int_equal(broker_publish(f->r.b, CHAT_LIT("room"), CHAT_LIT("x"), 1), CHAT_EBROKER);
    finish(f);
    assert_int_equal(f->r.npub, 0);
}

static void test_close_from_on_message_runs_no_handler_afterwards(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    f->r.on_msg_hook = test_broker_rec_close_on_msg;
    assert_int_equal(publish(f, "room", "1", 1), 0);
    assert_int_equal(publish(f, "room", "2", 2), 0);
    assert_int_equal(publish(f, "room", "3", 3), 0);
    wait_for(f, 1, 0); /* the first message closes the broker */
    finish(f);
    assert_int_equal(f->r.nmsgs, 1);
    assert_msg(f, 0, "room", "1");
    assert_in_range(f->r.npub, 0, 3); /* Redis: replies and messages come on two connections */
}

static void test_close_from_on_published_runs_no_handler_afterwards(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    f->r.on_pub_hook = test_broker_rec_close_on_pub;
    assert_int_equal(publish(f, "room", "1", 1), 0);
    assert_int_equal(publish(f, "room", "2", 2), 0);
    wait_for(f, 0, 1); /* the first completion closes the broker */
    finish(f);
    assert_int_equal(f->r.npub, 1);
    assert_true(f->r.pub_tags[0] == 1);
    assert_in_range(f->r.nmsgs, 0, 2);
}

static void test_close_with_subscriptions_frees_everything(void **state)
{
    fixture_t *f = *state;
    char topic[32];

    for (int i = 0; i < 500; i++) {
        snprintf(topic, sizeof(topic), "room-%d", i);
        subscribe(f, topic);
    }
    settle(f);
    assert_int_equal(publish(f, "room-1", "x", 0), 0);
    assert_int_equal(publish(f, "room-499", "y", 0), 0);
    wait_for(f, 2, 0);
    assert_msg(f, 0, "room-1", "x");
    assert_msg(f, 1, "room-499", "y");
    finish(f); /* ASan's leak check fails the run if the topic map or the broker leaks */
}

/* ---- the two runs ----------------------------------------------------------------------- */

#define CONTRACT(X)                                                                                \
    X(test_publish_never_calls_back_synchronously)                                                 \
    X(test_open_copies_handlers)                                                                   \
    X(test_own_publications_are_received)                                                          \
    X(test_subscribed_topic_receives_in_publish_order)                                             \
    X(test_interleaved_topics_keep_order)                                                          \
    X(test_unsubscribed_topic_gets_nothing)                                                        \
    X(test_no_subscription_gets_nothing)                                                           \
    X(test_data_is_copied_at_publish)                                                              \
    X(test_binary_and_empty_data)                                                                  \
    X(test_subscribe_is_idempotent)                                                                \
    X(test_unsubscribe_is_idempotent)                                                              \
    X(test_completions_in_publish_order_once_per_tag)                                              \
    X(test_on_published_without_subscribers)                                                       \
    X(test_unsubscribe_drops_later_deliveries)                                                     \
    X(test_unsubscribe_drops_queued_messages)                                                      \
    X(test_unsubscribe_from_handler_drops_the_rest)                                                \
    X(test_publish_while_down_returns_ebroker_without_callback)                                    \
    X(test_close_drops_pending_without_callbacks)                                                  \
    X(test_close_reports_down_and_refuses_publish)                                                 \
    X(test_close_from_on_message_runs_no_handler_afterwards)                                       \
    X(test_close_from_on_published_runs_no_handler_afterwards)                                     \
    X(test_close_with_subscriptions_frees_everything)

/* The backends are read-only; cmocka's initial_state is a plain void *. */
#define ON_MEMORY(fn) {"memory: " #fn, fn, setup, teardown, (void *)&memory_backend},
#define ON_REDIS(fn)  {"redis: " #fn, fn, setup, teardown, (void *)&redis_backend},

int main(void)
{
    const struct CMUnitTest tests[] = {CONTRACT(ON_MEMORY) CONTRACT(ON_REDIS)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
