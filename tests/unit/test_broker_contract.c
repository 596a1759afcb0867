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
 * History (a broker opened with history_size 20): appends get seq 1..n in order and what is
 * delivered carries the seq and epoch where the parts say; on_appended (per tag, in order) and
 * on_published complete in one order; reads with after / before / limit (oldest first, exclusive
 * bounds, the limit honoured, an empty topic: seq 0 and an epoch stable across reads and kept by
 * the first append); the last history_size messages kept; a short history_ttl_ms: a new epoch
 * and seq from 1 again; idempotency keys: a duplicate gets the original's seq, epoch and receipt
 * and nothing is published, a new message once the window passed; on_subscribed after subscribe
 * (never synchronously, once per subscribe that added the topic); history off: CHAT_EINVAL;
 * close drops pending appends and reads without callbacks.
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
#include "names.h"
#include "err.h"
#include "list.h"
#include "redis_server.h"
#include "str.h"

/* ---- the two backends ------------------------------------------------------------------- */

typedef struct backend {
    const char *name;
    int redis;   /* 0: memory:// */
    int history; /* opened with history on (HISTORY_SIZE) */
} backend_t;

static const backend_t memory_backend = {"memory", 0, 0};
static const backend_t redis_backend = {"redis", 1, 0};
static const backend_t memory_history_backend = {"memory", 0, 1};
static const backend_t redis_history_backend = {"redis", 1, 1};

#define HISTORY_SIZE 20

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
    size_t msgs_at_answer[8];   /* messages received when each read was answered */
    size_t want_app, want_reads, want_subs;
    size_t history_size; /* what open_broker() opens with */
    uint64_t history_ttl_ms, dedupe_window_ms;
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
                           .timeout_ms = 2000,
                           .history_size = f->history_size,
                           .history_ttl_ms = f->history_ttl_ms,
                           .dedupe_window_ms = f->dedupe_window_ms};
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
    broker_handlers_t h;
    const char *problem = NULL;

    if (f == NULL || uv_loop_init(&f->r.loop) != 0) {
        free(f);
        return -1;
    }
    f->be = *state;
    *state = f;
    f->r.ignore = barrier_ignore;
    h = test_broker_rec_handlers(&f->r);
    if (f->be->history) {
        f->history_size = HISTORY_SIZE;
        f->history_ttl_ms = 60000;
        f->dedupe_window_ms = 60000;
    }
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

/* ---- history ---------------------------------------------------------------------------- */

#define P0 "{\"seq\":"
#define P1 ",\"epoch\":\""

static int never(fixture_t *f)
{
    return 0;
}

/* Runs the loop for ms, whatever happens. */
static void run_for(fixture_t *f, uint64_t ms)
{
    run_until(f, never, ms);
}

static int got_app(fixture_t *f)
{
    return f->r.napp >= f->want_app;
}

static int got_reads(fixture_t *f)
{
    return f->r.nread >= f->want_reads;
}

static int got_subs(fixture_t *f)
{
    return f->r.nsubs >= f->want_subs;
}

/* Runs the loop until n append results in all arrived (bounded 10 s). */
static void wait_app(fixture_t *f, size_t n)
{
    f->want_app = n;
    if (!run_until(f, got_app, 10000))
        fail_msg("%s: %zu/%zu append results within 10 s", f->be->name, f->r.napp, n);
}

/* Runs the loop until n history answers in all arrived (bounded 10 s). */
static void wait_reads(fixture_t *f, size_t n)
{
    f->want_reads = n;
    if (!run_until(f, got_reads, 10000))
        fail_msg("%s: %zu/%zu history answers within 10 s", f->be->name, f->r.nread, n);
}

/* Appends {"seq":<seq>,"epoch":"<epoch>","text":"<text>"} to topic (asserting 0). */
static void append_text(fixture_t *f, const char *topic, const char *text, const char *key,
                        const char *receipt, uint64_t tag)
{
    char p2[128];
    snprintf(p2, sizeof(p2), "\",\"text\":\"%s\"}", text);
    assert_int_equal(test_broker_rec_append(&f->r, topic, P0, P1, p2, key, receipt, tag), 0);
}

/* What append_text's message is once it has seq and epoch. */
static void expected_text(char *out, size_t cap, uint64_t seq, const char *epoch, const char *text)
{
    snprintf(out, cap, P0 "%llu" P1 "%s\",\"text\":\"%s\"}", (unsigned long long)seq, epoch, text);
}

/* Reads topic (asserting 0) and waits for the answer; returns it. */
static const test_read_rec_t *read_history(fixture_t *f, const char *topic, int has_after,
                                           uint64_t after, uint64_t before, size_t limit)
{
    size_t n = f->r.nread;
    assert_int_equal(test_broker_rec_read(&f->r, topic, has_after, after, before, limit, 77), 0);
    assert_int_equal(f->r.nread, n); /* never synchronously */
    wait_reads(f, n + 1);
    const test_read_rec_t *r = &f->r.reads[n];
    assert_true(r->tag == 77);
    assert_int_equal(r->status, 0);
    assert_true(chat_epoch_valid(chat_cstr(r->epoch)));
    assert_true(r->n <= limit);
    for (size_t i = 1; i < r->n; i++)
        assert_true(r->seqs[i] > r->seqs[i - 1]);
    return r;
}

/* Asserts the read returned exactly the seqs first..last (last < first: none). */
static void assert_seqs(const test_read_rec_t *r, uint64_t first, uint64_t last)
{
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    if (r->n != want)
        fail_msg("read returned %zu entries, expected %zu (%llu..%llu)", r->n, want,
                 (unsigned long long)first, (unsigned long long)last);
    for (size_t i = 0; i < want; i++)
        assert_true(r->seqs[i] == first + i);
}

/* Closes the broker and opens another one with this history configuration (up within 5 s). */
static void reopen(fixture_t *f, size_t size, uint64_t ttl_ms, uint64_t dedupe_ms)
{
    broker_handlers_t h = test_broker_rec_handlers(&f->r);
    broker_close(f->r.b); /* its handles close while the loop runs */
    f->history_size = size;
    f->history_ttl_ms = ttl_ms;
    f->dedupe_window_ms = dedupe_ms;
    assert_int_equal(open_broker(f, &h, &f->r.b), 0);
    if (!run_until(f, is_up, UP_WITHIN_MS))
        fail_msg("%s: the reopened broker is not up within 5 s", f->be->name);
}

static void test_append_assigns_seq_and_publishes_it(void **state)
{
    fixture_t *f = *state;
    char text[16], want[256];

    subscribe(f, "room");
    settle(f);
    for (uint64_t i = 1; i <= 30; i++) {
        snprintf(text, sizeof(text), "m%llu", (unsigned long long)i);
        append_text(f, "room", text, NULL, NULL, i);
    }
    assert_int_equal(f->r.napp, 0); /* never synchronously */
    assert_int_equal(f->r.nmsgs, 0);
    wait_app(f, 30);
    wait_for(f, 30, 0);
    settle(f);
    assert_int_equal(f->r.sync_calls, 0);
    assert_int_equal(f->r.napp, 30);
    assert_int_equal(f->r.nmsgs, 30);
    const char *epoch = f->r.app[0].epoch;
    assert_true(chat_epoch_valid(chat_cstr(epoch)));
    for (uint64_t i = 1; i <= 30; i++) {
        const test_append_rec_t *a = &f->r.app[i - 1];
        assert_true(a->tag == i);
        assert_int_equal(a->status, 0);
        assert_true(a->seq == i);
        assert_string_equal(a->epoch, epoch);
        assert_int_equal(a->duplicate, 0);
        assert_int_equal(a->has_receipt, 0);
        assert_true(a->receivers == 1); /* this node subscribes the topic */
        snprintf(text, sizeof(text), "m%llu", (unsigned long long)i);
        expected_text(want, sizeof(want), i, epoch, text);
        assert_msg(f, (size_t)(i - 1), "room", want);
    }
    broker_stats_t st;
    broker_get_stats(f->r.b, &st);
    assert_true(st.appended == 30);
    assert_true(st.duplicates == 0);
    finish(f);
}

static void test_append_parts_may_be_empty_or_binary(void **state)
{
    fixture_t *f = *state;
    static const char bin[] = {'x', '\0', '\xff'};
    broker_append_t m = {.parts = {CHAT_STR_NULL, chat_str(bin, 3), CHAT_LIT("")}};

    subscribe(f, "room");
    settle(f);
    assert_int_equal(broker_append(f->r.b, CHAT_LIT("room"), &m, 1), 0);
    wait_app(f, 1);
    wait_for(f, 1, 0);
    const char *epoch = f->r.app[0].epoch;
    size_t elen = strlen(epoch);
    assert_int_equal(f->r.msgs[0].data_len, 1 + 3 + elen); /* "1" bin epoch */
    assert_memory_equal(f->r.msgs[0].data, "1", 1);
    assert_memory_equal(f->r.msgs[0].data + 1, bin, 3);
    assert_memory_equal(f->r.msgs[0].data + 4, epoch, elen);
    finish(f);
}

static void test_appends_and_publishes_complete_in_one_order(void **state)
{
    fixture_t *f = *state;
    /* p: publish, a: append; tag 0 completes silently */
    static const char kinds[] = "papaapaaappa";
    static const uint64_t tags[] = {1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12};
    const size_t n = sizeof(tags) / sizeof(tags[0]);
    size_t want = 0;

    subscribe(f, "room");
    settle(f);
    for (size_t i = 0; i < n; i++) {
        char text[8];
        snprintf(text, sizeof(text), "%zu", i);
        if (kinds[i] == 'p')
            assert_int_equal(publish(f, "room", text, tags[i]), 0);
        else
            append_text(f, "room", text, NULL, NULL, tags[i]);
        want += tags[i] != 0;
    }
    wait_for(f, n, 0);
    f->want_app = 0;
    for (int i = 0; i < 1000 && f->r.ndone < want; i++)
        run_until(f, got_app, 10);
    settle(f);
    assert_int_equal(f->r.ndone, want);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (tags[i] == 0)
            continue;
        assert_true(f->r.done_tags[j] == tags[i]);
        assert_int_equal(f->r.done_kind[j], kinds[i]);
        j++;
    }
    /* and delivery in the same order, the appends carrying seq 1, 2, ... */
    uint64_t seq = 0;
    for (size_t i = 0; i < n; i++) {
        char text[8], data[128];
        snprintf(text, sizeof(text), "%zu", i);
        if (kinds[i] == 'p') {
            assert_msg(f, i, "room", text);
            continue;
        }
        expected_text(data, sizeof(data), ++seq, f->r.app[0].epoch, text);
        assert_msg(f, i, "room", data);
    }
    finish(f);
}

static void test_history_reads_after_before_limit(void **state)
{
    fixture_t *f = *state;
    const test_read_rec_t *r;
    char want[256];

    for (int i = 1; i <= 10; i++) {
        char text[8];
        snprintf(text, sizeof(text), "m%d", i);
        append_text(f, "h", text, NULL, NULL, (uint64_t)i);
    }
    wait_app(f, 10);
    const char *epoch = f->r.app[0].epoch;
    r = read_history(f, "h", 0, 0, 0, 0); /* limit 0: seq and epoch only */
    assert_true(r->seq == 10);
    assert_string_equal(r->epoch, epoch);
    assert_int_equal(r->n, 0);
    r = read_history(f, "h", 0, 0, 0, 3); /* the newest 3, oldest first */
    assert_seqs(r, 8, 10);
    expected_text(want, sizeof(want), 8, epoch, "m8");
    assert_string_equal(r->data[0], want); /* exactly as delivered */
    r = read_history(f, "h", 0, 0, 5, 3);  /* below 5 (exclusive) */
    assert_seqs(r, 2, 4);
    r = read_history(f, "h", 0, 0, 3, 10);
    assert_seqs(r, 1, 2);
    r = read_history(f, "h", 0, 0, 1, 10);
    assert_seqs(r, 1, 0);
    r = read_history(f, "h", 0, 0, 1000, 4);
    assert_seqs(r, 7, 10);
    r = read_history(f, "h", 1, 7, 0, 10); /* above 7 (exclusive) */
    assert_seqs(r, 8, 10);
    r = read_history(f, "h", 1, 2, 0, 3); /* the OLDEST 3 above 2 */
    assert_seqs(r, 3, 5);
    r = read_history(f, "h", 1, 0, 0, HISTORY_SIZE);
    assert_seqs(r, 1, 10);
    expected_text(want, sizeof(want), 10, epoch, "m10");
    assert_string_equal(r->data[9], want);
    r = read_history(f, "h", 1, 10, 0, 5);
    assert_seqs(r, 1, 0);
    r = read_history(f, "h", 1, UINT64_MAX, 0, 5);
    assert_seqs(r, 1, 0);
    r = read_history(f, "h", 0, 0, UINT64_MAX, 2);
    assert_seqs(r, 9, 10);
    assert_true(r->seq == 10);
    r = read_history(f, "other", 1, 0, 0, 5); /* topics are apart */
    assert_true(r->seq == 0);
    assert_int_equal(r->n, 0);
    assert_int_equal(f->r.sync_calls, 0);
    broker_stats_t st;
    broker_get_stats(f->r.b, &st);
    assert_true(st.history_reads == f->r.nread);
    finish(f);
}

static void test_history_empty_topic_has_a_stable_epoch(void **state)
{
    fixture_t *f = *state;
    char epoch[BROKER_EPOCH_MAX + 1];

    const test_read_rec_t *r = read_history(f, "empty", 0, 0, 0, 10);
    assert_true(r->seq == 0);
    assert_int_equal(r->n, 0);
    assert_true(strlen(r->epoch) > 0);
    snprintf(epoch, sizeof(epoch), "%s", r->epoch);
    r = read_history(f, "empty", 1, 0, 0, 10);
    assert_true(r->seq == 0);
    assert_string_equal(r->epoch, epoch); /* not a new one per read */
    append_text(f, "empty", "first", NULL, NULL, 1);
    wait_app(f, 1);
    assert_true(f->r.app[0].seq == 1);
    assert_string_equal(f->r.app[0].epoch, epoch); /* the read's epoch, kept */
    r = read_history(f, "empty2", 0, 0, 0, 0);
    assert_string_not_equal(r->epoch, epoch); /* each topic its own */
    finish(f);
}

static void test_history_keeps_the_last_history_size(void **state)
{
    fixture_t *f = *state;

    for (uint64_t i = 1; i <= 3 * HISTORY_SIZE; i++)
        append_text(f, "k", "x", NULL, NULL, i);
    wait_app(f, 3 * HISTORY_SIZE);
    const test_read_rec_t *r = read_history(f, "k", 0, 0, 0, HISTORY_SIZE);
    assert_true(r->seq == 3 * HISTORY_SIZE);
    assert_seqs(r, 2 * HISTORY_SIZE + 1, 3 * HISTORY_SIZE);
    r = read_history(f, "k", 1, 2 * HISTORY_SIZE, 0, HISTORY_SIZE);
    assert_seqs(r, 2 * HISTORY_SIZE + 1, 3 * HISTORY_SIZE);
    /* The oldest kept: Redis trims approximately (MAXLEN ~), so older ones may remain, but
     * never more than limit come back, and they are consecutive. */
    r = read_history(f, "k", 1, 0, 0, HISTORY_SIZE);
    assert_int_equal(r->n, HISTORY_SIZE);
    assert_true(r->seqs[0] >= 1 && r->seqs[0] <= 2 * HISTORY_SIZE + 1);
    for (size_t i = 1; i < r->n; i++)
        assert_true(r->seqs[i] == r->seqs[0] + i);
    assert_int_equal(test_broker_rec_read(&f->r, "k", 0, 0, 0, HISTORY_SIZE + 1, 1), CHAT_EINVAL);
    finish(f);
}

static void test_history_ttl_starts_a_new_epoch(void **state)
{
    fixture_t *f = *state;
    char epoch[BROKER_EPOCH_MAX + 1];

    reopen(f, HISTORY_SIZE, 300, 60000);
    append_text(f, "ttl", "a", NULL, NULL, 1);
    append_text(f, "ttl", "b", NULL, NULL, 2);
    wait_app(f, 2);
    assert_true(f->r.app[1].seq == 2);
    snprintf(epoch, sizeof(epoch), "%s", f->r.app[1].epoch);
    run_for(f, 150);
    append_text(f, "ttl", "c", NULL, NULL, 3); /* an append renews the TTL */
    wait_app(f, 3);
    assert_true(f->r.app[2].seq == 3);
    run_for(f, 200); /* 350 ms after the first append, 200 after the last */
    const test_read_rec_t *r = read_history(f, "ttl", 0, 0, 0, 10);
    assert_string_equal(r->epoch, epoch);
    assert_seqs(r, 1, 3);
    run_for(f, 400); /* reads do not renew it */
    r = read_history(f, "ttl", 0, 0, 0, 10);
    assert_string_not_equal(r->epoch, epoch); /* history lost: a new epoch, seq 0 */
    assert_true(r->seq == 0);
    assert_int_equal(r->n, 0);
    append_text(f, "ttl", "d", NULL, NULL, 4);
    wait_app(f, 4);
    assert_true(f->r.app[3].seq == 1);
    assert_string_equal(f->r.app[3].epoch, r->epoch);
    finish(f);
}

static void test_dedupe_key_answers_the_original(void **state)
{
    fixture_t *f = *state;
    char want[256];

    reopen(f, HISTORY_SIZE, 60000, 400);
    subscribe(f, "d");
    settle(f);
    append_text(f, "d", "one", "user:cid-1", "receipt-1", 1);
    append_text(f, "d", "retry", "user:cid-1", "receipt-2", 2); /* in flight together */
    append_text(f, "d", "two", "user:cid-2", "receipt-3", 3);
    append_text(f, "d", "untagged", "user:cid-1", "receipt-4", 0); /* counted, no callback */
    append_text(f, "d2", "x", "user:cid-1", "receipt-5", 4);       /* keys are per topic */
    wait_app(f, 4);
    settle(f);
    const test_append_rec_t *a = f->r.app;
    assert_true(a[0].seq == 1 && !a[0].duplicate && a[0].status == 0);
    assert_true(a[1].tag == 2 && a[1].status == 0 && a[1].duplicate == 1);
    assert_true(a[1].seq == 1);
    assert_string_equal(a[1].epoch, a[0].epoch);
    assert_int_equal(a[1].has_receipt, 1);
    assert_string_equal(a[1].receipt, "receipt-1");
    assert_true(a[1].receivers == 0);
    assert_true(a[2].seq == 2 && !a[2].duplicate);
    assert_true(a[3].tag == 4 && a[3].seq == 1 && !a[3].duplicate);
    assert_int_equal(f->r.nmsgs, 2); /* the duplicate was not published */
    expected_text(want, sizeof(want), 2, a[0].epoch, "two");
    assert_msg(f, 1, "d", want);
    const test_read_rec_t *r = read_history(f, "d", 1, 0, 0, 10);
    assert_seqs(r, 1, 2); /* nor stored */
    run_for(f, 600);      /* the window passed: a new message */
    append_text(f, "d", "again", "user:cid-1", "receipt-6", 5);
    wait_app(f, 5);
    assert_true(f->r.app[4].seq == 3);
    assert_int_equal(f->r.app[4].duplicate, 0);
    wait_for(f, 3, 0);
    broker_stats_t st;
    broker_get_stats(f->r.b, &st);
    assert_true(st.duplicates == 2);
    assert_true(st.appended == 4);
    finish(f);
}

static void test_on_subscribed_after_subscribe(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    assert_int_equal(f->r.nsubs, 0); /* never synchronously */
    f->want_subs = 1;
    assert_true(run_until(f, got_subs, 5000));
    assert_string_equal(f->r.subs[0], "room");
    /* it has taken effect: a publication made now is delivered */
    assert_int_equal(publish(f, "room", "after", 0), 0);
    wait_for(f, 1, 0);
    subscribe(f, "room"); /* adds nothing: no call */
    subscribe(f, "second");
    settle(f);
    settle(f);
    assert_int_equal(f->r.nsubs, 2);
    assert_string_equal(f->r.subs[1], "second");
    assert_int_equal(f->r.sync_calls, 0);
    finish(f);
}

static void test_history_off_refuses_append_and_read(void **state)
{
    fixture_t *f = *state;
    broker_append_t m = {.parts = {CHAT_LIT("a"), CHAT_LIT("b"), CHAT_LIT("c")}};
    broker_history_query_t q = {.limit = 0};

    assert_int_equal(broker_append(f->r.b, CHAT_LIT("room"), &m, 1), CHAT_EINVAL);
    assert_int_equal(broker_history(f->r.b, CHAT_LIT("room"), &q, 2), CHAT_EINVAL);
    subscribe(f, "room"); /* the rest works as ever */
    settle(f);
    assert_int_equal(publish(f, "room", "x", 3), 0);
    wait_for(f, 1, 1);
    settle(f);
    assert_int_equal(f->r.napp, 0);
    assert_int_equal(f->r.nread, 0);
    broker_stats_t st;
    broker_get_stats(f->r.b, &st);
    assert_true(st.appended == 0 && st.history_reads == 0 && st.script_loads == 0);
    reopen(f, 1, 60000, 60000); /* the same calls with history on */
    assert_int_equal(broker_append(f->r.b, CHAT_LIT("room"), &m, 4), 0);
    assert_int_equal(broker_history(f->r.b, CHAT_LIT("room"), &q, 5), 0);
    wait_app(f, 1);
    wait_reads(f, 1);
    assert_int_equal(f->r.app[0].status, 0);
    assert_int_equal(f->r.reads[0].status, 0);
    finish(f);
}

static void test_append_refuses_long_key_and_receipt(void **state)
{
    fixture_t *f = *state;
    static char key[BROKER_DEDUPE_KEY_MAX + 2], receipt[BROKER_RECEIPT_MAX + 2];
    broker_append_t m = {.parts = {CHAT_LIT("a"), CHAT_LIT("b"), CHAT_LIT("c")}};

    memset(key, 'k', sizeof(key) - 1);
    memset(receipt, 'r', sizeof(receipt) - 1);
    m.dedupe_key = chat_str(key, BROKER_DEDUPE_KEY_MAX + 1);
    assert_int_equal(broker_append(f->r.b, CHAT_LIT("room"), &m, 1), CHAT_EINVAL);
    m.dedupe_key = chat_str(key, BROKER_DEDUPE_KEY_MAX);
    m.receipt = chat_str(receipt, BROKER_RECEIPT_MAX + 1);
    assert_int_equal(broker_append(f->r.b, CHAT_LIT("room"), &m, 2), CHAT_EINVAL);
    m.receipt = chat_str(receipt, BROKER_RECEIPT_MAX); /* the longest are fine */
    assert_int_equal(broker_append(f->r.b, CHAT_LIT("room"), &m, 3), 0);
    assert_int_equal(broker_append(f->r.b, CHAT_LIT("room"), &m, 4), 0);
    wait_app(f, 2);
    assert_true(f->r.app[0].tag == 3 && f->r.app[0].status == 0 && !f->r.app[0].duplicate);
    assert_true(f->r.app[1].tag == 4 && f->r.app[1].duplicate);
    assert_int_equal(strlen(f->r.app[1].receipt), BROKER_RECEIPT_MAX);
    finish(f);
}

static void test_append_and_read_while_down_return_ebroker(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    go_down(f);
    assert_int_equal(test_broker_rec_append(&f->r, "room", "a", "b", "c", NULL, NULL, 1),
                     CHAT_EBROKER);
    if (f->be->redis) /* memory: closed; Redis: the server is gone */
        assert_int_equal(test_broker_rec_read(&f->r, "room", 0, 0, 0, 1, 2), CHAT_EBROKER);
    finish(f);
    assert_int_equal(f->r.napp, 0);
    assert_int_equal(f->r.nread, 0);
}

static void test_close_drops_pending_appends_and_reads(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    for (uint64_t t = 1; t <= 50; t++)
        append_text(f, "room", "pending", t % 2 ? "key" : NULL, "receipt", t);
    for (uint64_t t = 1; t <= 10; t++)
        assert_int_equal(test_broker_rec_read(&f->r, "room", 0, 0, 0, 5, t), 0);
    finish(f); /* ASan: nothing pending leaks */
    assert_int_equal(f->r.napp, 0);
    assert_int_equal(f->r.nread, 0);
    assert_int_equal(f->r.nmsgs, 0);
}

static void close_on_read_hook(test_broker_rec_t *r, uint64_t tag)
{
    test_broker_rec_close(r);
}

static void test_close_from_on_history_runs_no_handler_afterwards(void **state)
{
    fixture_t *f = *state;

    subscribe(f, "room");
    settle(f);
    append_text(f, "room", "stored", NULL, NULL, 1);
    wait_app(f, 1);
    wait_for(f, 1, 0);
    f->r.on_read_hook = close_on_read_hook;
    assert_int_equal(test_broker_rec_read(&f->r, "room", 0, 0, 0, 5, 1), 0);
    append_text(f, "room", "after", NULL, NULL, 2);
    assert_int_equal(test_broker_rec_read(&f->r, "room", 0, 0, 0, 5, 3), 0);
    wait_reads(f, 1); /* the first answer closes the broker (with history stored: ASan) */
    finish(f);
    assert_int_equal(f->r.nread, 1);
    assert_int_equal(f->r.reads[0].n, 1);
    /* Redis answers a read only after a canary came back (broker.h), by when the second append
     * may have completed too; memory answers in FIFO order */
    assert_in_range(f->r.napp, 1, f->be->redis ? 2 : 1);
    assert_in_range(f->r.nmsgs, 1, 2); /* Redis: replies and messages come on two connections */
}

/* When a read is answered, every message it counts (seq <= the answer's seq) has already been
 * delivered: a reader holding live messages meanwhile never sees one of them after the answer.
 * On Redis the reply and the messages come on two connections: without the broker's barrier the
 * answer often overtakes the last messages. */
static void note_msgs_on_read(test_broker_rec_t *r, uint64_t tag)
{
    fixture_t *f = chat_container_of(r, fixture_t, r);
    if (r->nread <= 8)
        f->msgs_at_answer[r->nread - 1] = r->nmsgs;
}

static void test_history_answer_comes_after_its_messages(void **state)
{
    fixture_t *f = *state;
    char text[32];

    subscribe(f, "room");
    settle(f);
    f->r.on_read_hook = note_msgs_on_read;
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < 25; i++) {
            snprintf(text, sizeof(text), "r%di%d", round, i);
            append_text(f, "room", text, NULL, NULL, 0);
        }
        assert_int_equal(test_broker_rec_read(&f->r, "room", 0, 0, 0, 0, 100 + (uint64_t)round),
                         0);
        wait_reads(f, (size_t)round + 1);
        assert_int_equal(f->r.reads[round].status, 0);
        assert_int_equal(f->r.reads[round].seq, 25 * ((uint64_t)round + 1));
        /* the messages counted by the answer were all delivered before it */
        assert_true(f->msgs_at_answer[round] >= 25 * ((size_t)round + 1));
    }
    finish(f);
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
    X(test_close_with_subscriptions_frees_everything)                                              \
    X(test_history_off_refuses_append_and_read)

/* Cases on a broker opened with history on. */
#define HISTORY_CONTRACT(X)                                                                        \
    X(test_append_assigns_seq_and_publishes_it)                                                    \
    X(test_append_parts_may_be_empty_or_binary)                                                    \
    X(test_appends_and_publishes_complete_in_one_order)                                            \
    X(test_history_reads_after_before_limit)                                                       \
    X(test_history_empty_topic_has_a_stable_epoch)                                                 \
    X(test_history_keeps_the_last_history_size)                                                    \
    X(test_history_ttl_starts_a_new_epoch)                                                         \
    X(test_dedupe_key_answers_the_original)                                                        \
    X(test_on_subscribed_after_subscribe)                                                          \
    X(test_append_refuses_long_key_and_receipt)                                                    \
    X(test_append_and_read_while_down_return_ebroker)                                              \
    X(test_close_drops_pending_appends_and_reads)                                                  \
    X(test_close_from_on_history_runs_no_handler_afterwards)                                       \
    X(test_history_answer_comes_after_its_messages)                                                \
    X(test_close_drops_pending_without_callbacks)                                                  \
    X(test_completions_in_publish_order_once_per_tag)

/* The backends are read-only; cmocka's initial_state is a plain void *. */
#define ON_MEMORY(fn) {"memory: " #fn, fn, setup, teardown, (void *)&memory_backend},
#define ON_REDIS(fn)  {"redis: " #fn, fn, setup, teardown, (void *)&redis_backend},
#define ON_MEMORY_HISTORY(fn)                                                                      \
    {"memory+history: " #fn, fn, setup, teardown, (void *)&memory_history_backend},
#define ON_REDIS_HISTORY(fn)                                                                       \
    {"redis+history: " #fn, fn, setup, teardown, (void *)&redis_history_backend},

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        CONTRACT(ON_MEMORY) CONTRACT(ON_REDIS)
        HISTORY_CONTRACT(ON_MEMORY_HISTORY) HISTORY_CONTRACT(ON_REDIS_HISTORY)
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
