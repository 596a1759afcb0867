/* tests/unit/test_broker_memory.c - broker/memory.c through broker/broker.h, on a real uv loop:
 * nothing calls back from inside publish(), subscribed topics receive in publish order and
 * nothing else does, on_published runs once per tag != 0 in order with status 0 (never for tag
 * 0), unsubscribe drops later and queued deliveries, a publish from a handler is delivered on a
 * later loop turn (bounded work per turn), and broker_close drops pending messages, runs no
 * handler afterwards and frees everything. Like libuv's own tests, every test ends with
 * uv_loop_close() == 0; ASan's leak check covers the frees. */
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
#include "str.h"

/* ---- fixture: a loop, a broker and a recorder -------------------------------------------- */

#define MAX_EVENTS 4096

typedef struct msg_rec {
    char *topic, *data;
    size_t topic_len, data_len;
} msg_rec_t;

typedef struct fixture fixture_t;

struct fixture {
    uv_loop_t loop;
    broker_t *b;
    int closed;     /* broker_close was called */
    int in_publish; /* set around broker_publish: a callback seeing it ran synchronously */
    int sync_calls; /* callbacks that ran inside publish() */
    size_t nmsgs, npub;
    msg_rec_t msgs[MAX_EVENTS];
    uint64_t pub_tags[MAX_EVENTS];
    int pub_status[MAX_EVENTS];
    int after_close_calls; /* handler calls after broker_close */
    /* Optional behaviour hooks. */
    void (*on_msg_hook)(fixture_t *f, chat_str_t topic, chat_str_t data);
    void (*on_pub_hook)(fixture_t *f, uint64_t tag);
    int hook_budget;
};


/* Opens a broker for url with the defaults the gateway uses. */
static int open_url(uv_loop_t *loop, const char *url, const broker_handlers_t *h, broker_t **out)
{
    broker_config_t cfg = {.url = url, .prefix = "chat:", .node_id = "t", .timeout_ms = 2000};
    const char *why;
    return broker_open(loop, &cfg, h, out, &why);
}

static void rec_message(void *ctx, chat_str_t topic, chat_str_t data)
{
    fixture_t *f = ctx;

    if (f->in_publish)
        f->sync_calls++;
    if (f->closed)
        f->after_close_calls++;
    assert_true(f->nmsgs < MAX_EVENTS);
    msg_rec_t *m = &f->msgs[f->nmsgs++];
    m->topic = malloc(topic.len + 1);
    m->data = malloc(data.len + 1);
    assert_non_null(m->topic);
    assert_non_null(m->data);
    if (topic.len)
        memcpy(m->topic, topic.p, topic.len);
    if (data.len)
        memcpy(m->data, data.p, data.len);
    m->topic[topic.len] = '\0';
    m->data[data.len] = '\0';
    m->topic_len = topic.len;
    m->data_len = data.len;
    if (f->on_msg_hook)
        f->on_msg_hook(f, topic, data);
}

static void rec_published(void *ctx, uint64_t tag, int status)
{
    fixture_t *f = ctx;

    if (f->in_publish)
        f->sync_calls++;
    if (f->closed)
        f->after_close_calls++;
    assert_true(f->npub < MAX_EVENTS);
    f->pub_tags[f->npub] = tag;
    f->pub_status[f->npub] = status;
    f->npub++;
    if (f->on_pub_hook)
        f->on_pub_hook(f, tag);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    broker_handlers_t h = {rec_message, rec_published, NULL, NULL};

    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    h.ctx = f;
    if (open_url(&f->loop, NULL, &h, &f->b) != 0)
        return -1;
    *state = f;
    return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Closes the broker if the test did not, then closes any handle left and drains the loop. */
static int teardown(void **state)
{
    fixture_t *f = *state;
    int rc;

    if (!f->closed) {
        f->closed = 1;
        broker_close(f->b);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_walk(&f->loop, close_walk_cb, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&f->loop);
    for (size_t i = 0; i < f->nmsgs; i++) {
        free(f->msgs[i].topic);
        free(f->msgs[i].data);
    }
    free(f);
    return rc == 0 ? 0 : -1;
}

/* The end of every test: close the broker, run the loop dry, and require a clean uv_loop_close. */
static void finish(fixture_t *f)
{
    f->closed = 1;
    broker_close(f->b);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(f->after_close_calls, 0);
    assert_int_equal(uv_loop_init(&f->loop), 0); /* teardown closes this fresh, empty loop */
}

static int publish(fixture_t *f, const char *topic, const char *data, uint64_t tag)
{
    f->in_publish = 1;
    int rc = broker_publish(f->b, chat_cstr(topic), chat_cstr(data), tag);
    f->in_publish = 0;
    return rc;
}

/* Runs at most `max` loop iterations without blocking. */
static void run_turns(fixture_t *f, int max)
{
    for (int i = 0; i < max; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void assert_msg(const fixture_t *f, size_t i, const char *topic, const char *data)
{
    assert_true(i < f->nmsgs);
    assert_string_equal(f->msgs[i].topic, topic);
    assert_int_equal(f->msgs[i].data_len, strlen(data));
    assert_string_equal(f->msgs[i].data, data);
}

/* ---- open -------------------------------------------------------------------------------- */

static void test_open_memory_urls(void **state)
{
    fixture_t *f = *state;
    broker_handlers_t h = {rec_message, rec_published, NULL, f};
    static const char *const urls[] = {"", "memory://"};

    assert_string_equal(broker_kind(f->b), "memory"); /* opened with url NULL in setup */
    assert_int_equal(broker_is_up(f->b), 1);
    for (size_t i = 0; i < 2; i++) {
        broker_t *b = NULL;
        assert_int_equal(open_url(&f->loop, urls[i], &h, &b), 0);
        assert_non_null(b);
        assert_string_equal(broker_kind(b), "memory");
        assert_int_equal(broker_is_up(b), 1);
        broker_close(b);
    }
    finish(f);
}

static void test_open_unsupported_url(void **state)
{
    fixture_t *f = *state;
    broker_handlers_t h = {rec_message, rec_published, NULL, f};
    broker_t *b = NULL;

    assert_int_equal(open_url(&f->loop, "bogus://x", &h, &b), CHAT_EINVAL);
    assert_int_equal(open_url(&f->loop, "memory", &h, &b), CHAT_EINVAL);
    finish(f);
}

static void test_open_copies_handlers(void **state)
{
    fixture_t *f = *state;
    broker_handlers_t *h = malloc(sizeof(*h));
    broker_t *b = NULL;

    assert_non_null(h);
    *h = (broker_handlers_t){rec_message, rec_published, NULL, f};
    assert_int_equal(open_url(&f->loop, "memory://", h, &b), 0);
    memset(h, 0, sizeof(*h));
    free(h); /* the broker must have its own copy */
    assert_int_equal(broker_subscribe(b, CHAT_LIT("t")), 0);
    assert_int_equal(broker_publish(b, CHAT_LIT("t"), CHAT_LIT("x"), 1), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->nmsgs, 1);
    assert_int_equal(f->npub, 1);
    broker_close(b);
    finish(f);
}

/* ---- asynchrony -------------------------------------------------------------------------- */

static void test_publish_never_calls_back_synchronously(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    for (uint64_t t = 1; t <= 10; t++)
        assert_int_equal(publish(f, "room", "hello", t), 0);
    assert_int_equal(publish(f, "room", "untagged", 0), 0);
    assert_int_equal(f->nmsgs, 0);
    assert_int_equal(f->npub, 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->sync_calls, 0);
    assert_int_equal(f->nmsgs, 11);
    assert_int_equal(f->npub, 10);
    finish(f);
}

static void test_loop_has_no_work_when_idle(void **state)
{
    fixture_t *f = *state;

    /* An open broker with nothing queued must not keep the loop alive (or spin). */
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(publish(f, "room", "x", 1), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    finish(f);
}

/* ---- delivery ---------------------------------------------------------------------------- */

static void test_subscribed_topic_receives_in_publish_order(void **state)
{
    fixture_t *f = *state;
    char data[32];

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    for (int i = 0; i < 1000; i++) {
        snprintf(data, sizeof(data), "msg-%d", i);
        assert_int_equal(publish(f, "room", data, 0), 0);
    }
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(data, sizeof(data), "msg-%d", i);
        assert_msg(f, (size_t)i, "room", data);
    }
    finish(f);
}

static void test_interleaved_topics_keep_order(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("a")), 0);
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("b")), 0);
    assert_int_equal(publish(f, "a", "1", 0), 0);
    assert_int_equal(publish(f, "b", "2", 0), 0);
    assert_int_equal(publish(f, "c", "lost", 0), 0);
    assert_int_equal(publish(f, "a", "3", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 3);
    assert_msg(f, 0, "a", "1");
    assert_msg(f, 1, "b", "2");
    assert_msg(f, 2, "a", "3");
    finish(f);
}

static void test_unsubscribed_topic_gets_nothing(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "other", "x", 0), 0);
    assert_int_equal(publish(f, "Room", "x", 0), 0);
    assert_int_equal(publish(f, "room2", "x", 0), 0);
    assert_int_equal(publish(f, "roo", "x", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 0);
    finish(f);
}

static void test_no_subscription_gets_nothing(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(publish(f, "room", "x", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 0);
    finish(f);
}

static void test_data_is_copied_at_publish(void **state)
{
    fixture_t *f = *state;
    char topic[] = "room", data[] = "original";

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(broker_publish(f->b, chat_str(topic, 4), chat_str(data, 8), 0), 0);
    memcpy(topic, "XXXX", 4);
    memcpy(data, "changed!", 8);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, "room", "original");
    finish(f);
}

static void test_binary_and_empty_data(void **state)
{
    fixture_t *f = *state;
    static const char bin[] = {'a', '\0', 'b', '\xFF', '\0'};

    assert_int_equal(broker_subscribe(f->b, chat_str("t\0x", 3)), 0);
    assert_int_equal(broker_publish(f->b, chat_str("t\0x", 3), chat_str(bin, 5), 0), 0);
    assert_int_equal(broker_publish(f->b, chat_str("t\0x", 3), CHAT_LIT(""), 0), 0);
    assert_int_equal(broker_publish(f->b, chat_str("t", 1), CHAT_LIT("no"), 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 2);
    assert_int_equal(f->msgs[0].topic_len, 3);
    assert_memory_equal(f->msgs[0].topic, "t\0x", 3);
    assert_int_equal(f->msgs[0].data_len, 5);
    assert_memory_equal(f->msgs[0].data, bin, 5);
    assert_int_equal(f->msgs[1].data_len, 0);
    finish(f);
}

static void test_subscribe_is_idempotent(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "once", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1); /* not once per subscribe call */
    assert_int_equal(broker_unsubscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "none", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1); /* one unsubscribe undoes any number of subscribes */
    finish(f);
}

static void test_unsubscribe_is_idempotent(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_unsubscribe(f->b, CHAT_LIT("never")), 0);
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(broker_unsubscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(broker_unsubscribe(f->b, CHAT_LIT("room")), 0);
    finish(f);
}

/* ---- on_published ------------------------------------------------------------------------ */

static void test_on_published_once_per_nonzero_tag_in_order(void **state)
{
    fixture_t *f = *state;
    static const uint64_t tags[] = {5, 0, 3, 0, 0, 9, 1, UINT64_MAX, 0, 7};
    static const uint64_t want[] = {5, 3, 9, 1, UINT64_MAX, 7};

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
        assert_int_equal(publish(f, "room", "x", tags[i]), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->npub, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < f->npub; i++) {
        assert_true(f->pub_tags[i] == want[i]);
        assert_int_equal(f->pub_status[i], 0);
    }
    assert_int_equal(f->nmsgs, sizeof(tags) / sizeof(tags[0]));
    finish(f);
}

static void test_on_published_never_for_tag_zero(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(publish(f, "room", "x", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->npub, 0);
    assert_int_equal(f->nmsgs, 50);
    finish(f);
}

static void test_on_published_without_subscribers(void **state)
{
    fixture_t *f = *state;

    /* A publication completes whether or not anyone listens. */
    assert_int_equal(publish(f, "nobody", "x", 11), 0);
    assert_int_equal(publish(f, "nobody", "y", 12), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->npub, 2);
    assert_true(f->pub_tags[0] == 11);
    assert_true(f->pub_tags[1] == 12);
    assert_int_equal(f->pub_status[0], 0);
    assert_int_equal(f->pub_status[1], 0);
    assert_int_equal(f->nmsgs, 0);
    finish(f);
}

static void test_on_published_runs_exactly_once(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(publish(f, "t", "x", 42), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    run_turns(f, 5);
    assert_int_equal(f->npub, 1);
    finish(f);
}

/* ---- unsubscribe ------------------------------------------------------------------------- */

static void test_unsubscribe_drops_later_deliveries(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "before", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(broker_unsubscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "after", 1), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, "room", "before");
    assert_int_equal(f->npub, 1); /* the publication itself still completes */
    finish(f);
}

static void test_unsubscribe_drops_queued_messages(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("keep")), 0);
    assert_int_equal(publish(f, "room", "queued", 1), 0);
    assert_int_equal(publish(f, "keep", "kept", 2), 0);
    assert_int_equal(broker_unsubscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, "keep", "kept");
    assert_int_equal(f->npub, 2);
    finish(f);
}

static void unsubscribe_hook(fixture_t *f, chat_str_t topic, chat_str_t data)
{
    /* On the first message, leave the room: the rest of the batch must not arrive. */
    if (f->hook_budget-- > 0)
        assert_int_equal(broker_unsubscribe(f->b, topic), 0);
}

static void test_unsubscribe_from_handler_drops_rest_of_batch(void **state)
{
    fixture_t *f = *state;

    f->on_msg_hook = unsubscribe_hook;
    f->hook_budget = 1;
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "1", 0), 0);
    assert_int_equal(publish(f, "room", "2", 0), 0);
    assert_int_equal(publish(f, "room", "3", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_msg(f, 0, "room", "1");
    finish(f);
}

/* ---- publish from a handler: a later turn, bounded work ---------------------------------- */

static void republish_hook(fixture_t *f, chat_str_t topic, chat_str_t data)
{
    if (f->hook_budget-- > 0) {
        f->in_publish = 1;
        assert_int_equal(broker_publish(f->b, topic, CHAT_LIT("again"), f->nmsgs), 0);
        f->in_publish = 0;
    }
}

static void test_publish_from_handler_delivered_on_later_turn(void **state)
{
    fixture_t *f = *state;

    f->on_msg_hook = republish_hook;
    f->hook_budget = 3;
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "first", 0), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->nmsgs, 1); /* not the republished one: that waits for the next turn */
    assert_int_equal(f->npub, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->nmsgs, 2);
    assert_int_equal(f->npub, 1);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 4);
    assert_msg(f, 0, "room", "first");
    assert_msg(f, 1, "room", "again");
    assert_msg(f, 3, "room", "again");
    assert_int_equal(f->npub, 3);
    assert_int_equal(f->sync_calls, 0);
    finish(f);
}

static void test_batch_is_bounded_to_messages_queued_before_turn(void **state)
{
    fixture_t *f = *state;

    /* Three queued messages each republish once: one turn delivers exactly the three. */
    f->on_msg_hook = republish_hook;
    f->hook_budget = 3;
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "a", 0), 0);
    assert_int_equal(publish(f, "room", "b", 0), 0);
    assert_int_equal(publish(f, "room", "c", 0), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->nmsgs, 3);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->nmsgs, 6);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 6);
    finish(f);
}

static uv_timer_t starve_timer;

static void close_on_timer(uv_timer_t *t)
{
    fixture_t *f = t->data;

    f->closed = 1;
    broker_close(f->b);
    uv_close((uv_handle_t *)t, NULL);
}

static void forever_hook(fixture_t *f, chat_str_t topic, chat_str_t data)
{
    /* Publishes again from every delivery, forever. The first delivery also arms a 0 ms timer,
     * which can only fire if the drain returns to the loop. */
    if (f->closed)
        return;
    if (f->nmsgs == 1) {
        assert_int_equal(uv_timer_init(&f->loop, &starve_timer), 0);
        starve_timer.data = f;
        assert_int_equal(uv_timer_start(&starve_timer, close_on_timer, 0, 0), 0);
    }
    assert_int_equal(broker_publish(f->b, topic, CHAT_LIT("loop"), 0), 0);
}

static void test_endless_republishing_does_not_starve_the_loop(void **state)
{
    fixture_t *f = *state;

    /* If one drain also handled the messages published during it, it would never return. */
    f->on_msg_hook = forever_hook;
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "start", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_true(f->closed);
    assert_in_range(f->nmsgs, 1, 3);
    assert_int_equal(f->after_close_calls, 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
}

/* ---- broker_close ------------------------------------------------------------------------ */

static void test_close_drops_pending_messages(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    for (uint64_t t = 1; t <= 100; t++)
        assert_int_equal(publish(f, "room", "pending payload that must be freed", t), 0);
    f->closed = 1;
    broker_close(f->b);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 0);
    assert_int_equal(f->npub, 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
}

static void test_close_reports_down_and_refuses_publish(void **state)
{
    fixture_t *f = *state;

    f->closed = 1;
    broker_close(f->b);
    /* The object lives until its handle's close callback: it may still be asked. */
    assert_int_equal(broker_is_up(f->b), 0);
    assert_int_equal(broker_publish(f->b, CHAT_LIT("room"), CHAT_LIT("x"), 1), CHAT_EBROKER);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->npub, 0); /* an error from publish means no callback */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
}

static void close_hook(fixture_t *f, chat_str_t topic, chat_str_t data)
{
    if (!f->closed) {
        f->closed = 1;
        broker_close(f->b);
    }
}

static void test_close_from_on_message_drops_rest(void **state)
{
    fixture_t *f = *state;

    f->on_msg_hook = close_hook;
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "1", 1), 0);
    assert_int_equal(publish(f, "room", "2", 2), 0);
    assert_int_equal(publish(f, "room", "3", 3), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    assert_int_equal(f->npub, 1);
    assert_int_equal(f->after_close_calls, 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
}

static void close_pub_hook(fixture_t *f, uint64_t tag)
{
    if (!f->closed) {
        f->closed = 1;
        broker_close(f->b);
    }
}

static void test_close_from_on_published_suppresses_delivery(void **state)
{
    fixture_t *f = *state;

    f->on_pub_hook = close_pub_hook;
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(publish(f, "room", "1", 1), 0);
    assert_int_equal(publish(f, "room", "2", 2), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->npub, 1);
    assert_int_equal(f->nmsgs, 0); /* no handler runs after broker_close */
    assert_int_equal(f->after_close_calls, 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
}

static void test_close_with_subscriptions_frees_everything(void **state)
{
    fixture_t *f = *state;
    char topic[32];

    for (int i = 0; i < 500; i++) {
        snprintf(topic, sizeof(topic), "room-%d", i);
        assert_int_equal(broker_subscribe(f->b, chat_cstr(topic)), 0);
    }
    assert_int_equal(publish(f, "room-1", "x", 0), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nmsgs, 1);
    finish(f); /* ASan's leak check fails the run if the topic map or broker leaks */
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_memory_urls),
        T(test_open_unsupported_url),
        T(test_open_copies_handlers),
        T(test_publish_never_calls_back_synchronously),
        T(test_loop_has_no_work_when_idle),
        T(test_subscribed_topic_receives_in_publish_order),
        T(test_interleaved_topics_keep_order),
        T(test_unsubscribed_topic_gets_nothing),
        T(test_no_subscription_gets_nothing),
        T(test_data_is_copied_at_publish),
        T(test_binary_and_empty_data),
        T(test_subscribe_is_idempotent),
        T(test_unsubscribe_is_idempotent),
        T(test_on_published_once_per_nonzero_tag_in_order),
        T(test_on_published_never_for_tag_zero),
        T(test_on_published_without_subscribers),
        T(test_on_published_runs_exactly_once),
        T(test_unsubscribe_drops_later_deliveries),
        T(test_unsubscribe_drops_queued_messages),
        T(test_unsubscribe_from_handler_drops_rest_of_batch),
        T(test_publish_from_handler_delivered_on_later_turn),
        T(test_batch_is_bounded_to_messages_queued_before_turn),
        T(test_endless_republishing_does_not_starve_the_loop),
        T(test_close_drops_pending_messages),
        T(test_close_reports_down_and_refuses_publish),
        T(test_close_from_on_message_drops_rest),
        T(test_close_from_on_published_suppresses_delivery),
        T(test_close_with_subscriptions_frees_everything),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
