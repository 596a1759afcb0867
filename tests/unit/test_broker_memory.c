/* tests/unit/test_broker_memory.c - what only broker/memory.c promises, on a real uv loop (the
 * shared contract of broker/broker.h runs against both brokers in test_broker_contract.c): the
 * URLs that select it, an idle broker leaves the loop without work, a publish from a handler is
 * delivered on a later loop turn (each turn handles only what was queued before it, so endless
 * republishing cannot starve the loop), and a publication completes before it is delivered (a
 * close from on_published suppresses its delivery). Like libuv's own tests, every test ends with
 * uv_loop_close() == 0; ASan's leak check covers the frees.
 *
 * History: stored rooms do not keep the loop alive (the sweep timer is unreferenced); the store
 * itself (memory_history.h): a ring of history_size that keeps the newest, and the sweep that
 * frees expired rooms and keys without anyone touching them. */
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
#include "broker_impl.h"
#include "broker_rec.h"
#include "err.h"
#include "memory_history.h"
#include "str.h"

/* ---- fixture: a loop, a broker and a recorder (support/broker_rec.h) ------------------- */

typedef test_broker_rec_t fixture_t;

/* Opens a broker for url with the defaults the gateway uses. */
static int open_url(uv_loop_t *loop, const char *url, const broker_handlers_t *h, broker_t **out)
{
    broker_config_t cfg = {.url = url, .prefix = "chat:", .node_id = "t", .timeout_ms = 2000};
    const char *why;
    return broker_open(loop, &cfg, h, out, &why);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    broker_handlers_t h = {.on_message = test_broker_rec_message,
                          .on_published = test_broker_rec_published,
                          .ctx = NULL};

    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    h.ctx = f;
    if (open_url(&f->loop, NULL, &h, &f->b) != 0)
        return -1;
    *state = f;
    return 0;
}

/* Closes the broker if the test did not, then closes any handle left and drains the loop. */
static int teardown(void **state)
{
    fixture_t *f = *state;
    int rc = test_broker_rec_teardown(f);
    free(f);
    return rc;
}

/* The end of every test: close the broker, run the loop dry, and require a clean uv_loop_close. */
static void finish(fixture_t *f)
{
    test_broker_rec_finish(f);
}

static int publish(fixture_t *f, const char *topic, const char *data, uint64_t tag)
{
    return test_broker_rec_publish(f, topic, data, tag);
}

static void assert_msg(const fixture_t *f, size_t i, const char *topic, const char *data)
{
    test_broker_rec_assert_msg(f, i, topic, data);
}

/* ---- open -------------------------------------------------------------------------------- */

static void test_open_memory_urls(void **state)
{
    fixture_t *f = *state;
    broker_handlers_t h = {.on_message = test_broker_rec_message,
                          .on_published = test_broker_rec_published,
                          .ctx = f};
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
    broker_handlers_t h = {.on_message = test_broker_rec_message,
                          .on_published = test_broker_rec_published,
                          .ctx = f};
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

static void test_close_from_on_published_suppresses_delivery(void **state)
{
    fixture_t *f = *state;

    /* In one drain a message completes before it is delivered: closing from its on_published
     * means it is never delivered (Redis answers and delivers on two connections, in any order). */
    f->on_pub_hook = test_broker_rec_close_on_pub;
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

/* ---- history ----------------------------------------------------------------------------- */

static void test_history_does_not_keep_the_loop_alive(void **state)
{
    fixture_t *f = *state;
    broker_handlers_t h = test_broker_rec_handlers(f);
    broker_config_t cfg = {.url = "memory://",
                           .prefix = "chat:",
                           .node_id = "t",
                           .timeout_ms = 2000,
                           .history_size = 4,
                           .history_ttl_ms = 3600000,
                           .dedupe_window_ms = 3600000};
    const char *why;

    broker_close(f->b);
    assert_int_equal(broker_open(&f->loop, &cfg, &h, &f->b, &why), 0);
    assert_int_equal(broker_subscribe(f->b, CHAT_LIT("room")), 0);
    assert_int_equal(test_broker_rec_append(f, "room", "a", "b", "c", "key", "r", 1), 0);
    assert_int_equal(test_broker_rec_read(f, "room", 0, 0, 0, 4, 2), 0);
    /* one run handles it all and returns: an hour's TTL and window are not work to wait for */
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->nsubs, 1);
    assert_int_equal(f->napp, 1);
    assert_int_equal(f->nread, 1);
    assert_int_equal(f->nmsgs, 1);
    assert_int_equal(f->reads[0].n, 1);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    finish(f);
}

/* The store on its own, on f's loop, for a broker header configured like this. */
typedef struct store {
    struct broker b;
    broker__memory_history_t h;
    int closed;
} store_t;

static void store_open(fixture_t *f, store_t *s, size_t size, uint64_t ttl, uint64_t window)
{
    broker_handlers_t h = {0};
    broker_config_t cfg = {
        .node_id = "t", .history_size = size, .history_ttl_ms = ttl, .dedupe_window_ms = window};
    memset(s, 0, sizeof(*s));
    broker__init(&s->b, &broker_memory_ops, &cfg, &h);
    broker__memory_history_init(&s->h, &f->loop, &s->b);
}

static void on_store_closed(uv_handle_t *h)
{
    store_t *s = chat_container_of((uv_timer_t *)h, store_t, h.sweep);
    s->closed = 1;
}

static void store_close(fixture_t *f, store_t *s)
{
    broker__memory_history_close(&s->h, on_store_closed);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(s->closed, 1);
}

static uint64_t store_append(store_t *s, const char *topic, const char *key, int *dup)
{
    broker_append_t m = {.parts = {CHAT_LIT("<"), CHAT_LIT("|"), CHAT_LIT(">")},
                         .dedupe_key = key ? chat_cstr(key) : CHAT_STR_NULL,
                         .receipt = CHAT_LIT("r")};
    broker_append_result_t r;
    chat_str_t data;
    assert_int_equal(broker__memory_history_append(&s->h, chat_cstr(topic), &m, &r, &data), 0);
    *dup = r.duplicate;
    return r.seq;
}

static void on_keepalive(uv_timer_t *t)
{
}

/* Runs f's loop for ms (a referenced timer keeps it turning: the sweep's does not). */
static void run_for(fixture_t *f, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, on_keepalive, 5, 5);
    uint64_t end = uv_now(&f->loop) + ms;
    for (int i = 0; i < 100000 && uv_now(&f->loop) < end; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void test_history_ring_keeps_the_newest(void **state)
{
    fixture_t *f = *state;
    store_t s;
    broker_history_result_t r;
    int dup;

    store_open(f, &s, 4, 0, 0);
    for (uint64_t i = 1; i <= 10; i++)
        assert_true(store_append(&s, "t", NULL, &dup) == i);
    broker_history_query_t q = {.limit = 4};
    broker__memory_history_read(&s.h, CHAT_LIT("t"), &q, &r);
    assert_true(r.seq == 10);
    assert_int_equal(r.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_true(r.entries[i].seq == 7 + i);
    assert_int_equal(r.entries[0].data.len, 3 + 16 + 1); /* "<7|" epoch ">" */
    assert_memory_equal(r.entries[0].data.p, "<7|", 3);
    q = (broker_history_query_t){.has_after = 1, .after = 2, .limit = 2};
    broker__memory_history_read(&s.h, CHAT_LIT("t"), &q, &r);
    assert_int_equal(r.n, 2); /* 3..6 are gone: the oldest kept come first */
    assert_true(r.entries[0].seq == 7 && r.entries[1].seq == 8);
    q = (broker_history_query_t){.before = 8, .limit = 4};
    broker__memory_history_read(&s.h, CHAT_LIT("t"), &q, &r);
    assert_int_equal(r.n, 1);
    assert_true(r.entries[0].seq == 7);
    store_close(f, &s);
    finish(f);
}

static void test_history_sweep_frees_expired_rooms_and_keys(void **state)
{
    fixture_t *f = *state;
    store_t s;
    char topic[16];
    int dup;

    store_open(f, &s, 8, 200, 60);
    for (int i = 0; i < 300; i++) {
        snprintf(topic, sizeof(topic), "room-%d", i);
        assert_true(store_append(&s, topic, "key", &dup) == 1);
        assert_int_equal(dup, 0);
    }
    assert_true(store_append(&s, "room-0", "key", &dup) == 1);
    assert_int_equal(dup, 1); /* remembered within the window */
    assert_int_equal(broker__memory_history_topics(&s.h), 300);
    assert_int_equal(broker__memory_history_keys(&s.h), 300);
    run_for(f, 120); /* nobody touches the store: only the sweep can free */
    assert_int_equal(broker__memory_history_keys(&s.h), 0);
    assert_int_equal(broker__memory_history_topics(&s.h), 300);
    assert_true(store_append(&s, "room-1", NULL, &dup) == 2); /* renews room-1 alone */
    run_for(f, 150); /* 270 ms since the first appends, 150 since room-1's */
    assert_int_equal(broker__memory_history_topics(&s.h), 1);
    run_for(f, 120);
    assert_int_equal(broker__memory_history_topics(&s.h), 0);
    assert_true(store_append(&s, "room-0", "key", &dup) == 1); /* a new epoch, from 1 */
    assert_int_equal(dup, 0);
    store_close(f, &s);
    finish(f);
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
        T(test_history_does_not_keep_the_loop_alive),
        T(test_history_ring_keeps_the_newest),
        T(test_history_sweep_frees_expired_rooms_and_keys),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
