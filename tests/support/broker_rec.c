/* tests/support/broker_rec.c - see broker_rec.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker_rec.h"

void test_broker_rec_message(void *ctx, chat_str_t topic, chat_str_t data)
{
    test_broker_rec_t *r = ctx;

    if (r->in_publish)
        r->sync_calls++;
    if (r->closed)
        r->after_close_calls++;
    if (r->ignore != NULL && r->ignore(r, topic))
        return;
    assert_true(r->nmsgs < TEST_BROKER_REC_MAX);
    test_msg_rec_t *m = &r->msgs[r->nmsgs++];
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
    if (r->on_msg_hook)
        r->on_msg_hook(r, topic, data);
}

void test_broker_rec_published(void *ctx, uint64_t tag, int status, uint64_t receivers)
{
    test_broker_rec_t *r = ctx;

    if (r->in_publish)
        r->sync_calls++;
    if (r->closed)
        r->after_close_calls++;
    assert_true(r->npub < TEST_BROKER_REC_MAX);
    r->pub_tags[r->npub] = tag;
    r->pub_status[r->npub] = status;
    r->npub++;
    if (r->on_pub_hook)
        r->on_pub_hook(r, tag);
}

int test_broker_publish(broker_t *b, int *in_publish, const char *topic, const char *data,
                        uint64_t tag)
{
    *in_publish = 1;
    int rc = broker_publish(b, chat_cstr(topic), chat_cstr(data), tag);
    *in_publish = 0;
    return rc;
}

int test_broker_rec_publish(test_broker_rec_t *r, const char *topic, const char *data,
                            uint64_t tag)
{
    return test_broker_publish(r->b, &r->in_publish, topic, data, tag);
}

void test_broker_rec_assert_msg(const test_broker_rec_t *r, size_t i, const char *topic,
                                const char *data)
{
    assert_true(i < r->nmsgs);
    assert_string_equal(r->msgs[i].topic, topic);
    assert_int_equal(r->msgs[i].data_len, strlen(data));
    assert_string_equal(r->msgs[i].data, data);
}

void test_broker_rec_close(test_broker_rec_t *r)
{
    if (!r->closed) {
        r->closed = 1;
        broker_close(r->b);
    }
}

void test_broker_rec_close_on_msg(test_broker_rec_t *r, chat_str_t topic, chat_str_t data)
{
    test_broker_rec_close(r);
}

void test_broker_rec_close_on_pub(test_broker_rec_t *r, uint64_t tag)
{
    test_broker_rec_close(r);
}

void test_broker_rec_finish(test_broker_rec_t *r)
{
    test_broker_rec_close(r);
    assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    assert_int_equal(r->after_close_calls, 0);
    assert_int_equal(uv_loop_init(&r->loop), 0); /* the teardown closes this fresh, empty loop */
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int test_broker_rec_teardown(test_broker_rec_t *r)
{
    if (!r->closed && r->b != NULL) {
        r->closed = 1;
        broker_close(r->b);
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_walk(&r->loop, close_walk_cb, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&r->loop);
    for (size_t i = 0; i < r->nmsgs; i++) {
        free(r->msgs[i].topic);
        free(r->msgs[i].data);
    }
    return rc == 0 ? 0 : -1;
}
