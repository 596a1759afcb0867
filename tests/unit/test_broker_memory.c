/* tests/unit/test_broker_memory.c - what only broker/memory.c promises, on a real uv loop (the
 * shared contract of broker/broker.h runs against both brokers in test_broker_contract.c): the
 * URLs that select it, an idle broker leaves the loop without work, a publish from a handler is
 * delivered on a later loop turn (each turn handles only what was queued before it, so endless
 * republishing cannot starve the loop), and a publication completes before it is delivered (a
 * close from on_published suppresses its delivery). Like libuv's own tests, every test ends with
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

static void rec_published(void *ctx, uint64_t tag, int status, uint64_t receivers)
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

/* ---- the loop ---------------------------------------------------------------------------- */

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

    /* In one drain a message completes before it is delivered: closing from its on_published
     * means it is never delivered (Redis answers and delivers on two connections, in any order). */
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

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_memory_urls),
        T(test_open_unsupported_url),
        T(test_loop_has_no_work_when_idle),
        T(test_publish_from_handler_delivered_on_later_turn),
        T(test_batch_is_bounded_to_messages_queued_before_turn),
        T(test_endless_republishing_does_not_starve_the_loop),
        T(test_close_from_on_published_suppresses_delivery),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
