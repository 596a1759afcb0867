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
    assert_true(r->ndone < TEST_BROKER_REC_MAX);
    r->done_tags[r->ndone] = tag;
    r->done_kind[r->ndone++] = 'p';
    if (r->on_pub_hook)
        r->on_pub_hook(r, tag);
}

void test_append_rec_copy(test_append_rec_t *out, uint64_t tag, const broker_append_result_t *r)
{
    memset(out, 0, sizeof(*out));
    out->tag = tag;
    out->status = r->status;
    out->receivers = r->receivers;
    out->seq = r->seq;
    out->duplicate = r->duplicate;
    assert_true(r->epoch.len <= BROKER_EPOCH_MAX);
    if (r->epoch.len)
        memcpy(out->epoch, r->epoch.p, r->epoch.len);
    out->has_receipt = r->receipt.p != NULL;
    assert_true(r->receipt.len <= BROKER_RECEIPT_MAX);
    if (r->receipt.len)
        memcpy(out->receipt, r->receipt.p, r->receipt.len);
}

void test_read_rec_copy(test_read_rec_t *out, uint64_t tag, const broker_history_result_t *r)
{
    memset(out, 0, sizeof(*out));
    out->tag = tag;
    out->status = r->status;
    out->seq = r->seq;
    assert_true(r->epoch.len <= BROKER_EPOCH_MAX);
    if (r->epoch.len)
        memcpy(out->epoch, r->epoch.p, r->epoch.len);
    assert_true(r->n <= BROKER_HISTORY_MAX);
    out->n = r->n;
    out->seqs = calloc(r->n + 1, sizeof(*out->seqs));
    out->data = calloc(r->n + 1, sizeof(*out->data));
    assert_non_null(out->seqs);
    assert_non_null(out->data);
    for (size_t i = 0; i < r->n; i++) {
        out->seqs[i] = r->entries[i].seq;
        out->data[i] = malloc(r->entries[i].data.len + 1);
        assert_non_null(out->data[i]);
        if (r->entries[i].data.len)
            memcpy(out->data[i], r->entries[i].data.p, r->entries[i].data.len);
        out->data[i][r->entries[i].data.len] = '\0';
    }
}

void test_read_rec_free(test_read_rec_t *r)
{
    for (size_t i = 0; r->data != NULL && i < r->n; i++)
        free(r->data[i]);
    free(r->data);
    free(r->seqs);
    r->data = NULL;
    r->seqs = NULL;
}

void test_broker_rec_appended(void *ctx, uint64_t tag, const broker_append_result_t *res)
{
    test_broker_rec_t *r = ctx;

    if (r->in_publish)
        r->sync_calls++;
    if (r->closed)
        r->after_close_calls++;
    assert_true(r->napp < TEST_BROKER_REC_APPENDS);
    test_append_rec_copy(&r->app[r->napp++], tag, res);
    assert_true(r->ndone < TEST_BROKER_REC_MAX);
    r->done_tags[r->ndone] = tag;
    r->done_kind[r->ndone++] = 'a';
}

void test_broker_rec_history(void *ctx, uint64_t tag, const broker_history_result_t *res)
{
    test_broker_rec_t *r = ctx;

    if (r->in_publish)
        r->sync_calls++;
    if (r->closed)
        r->after_close_calls++;
    assert_true(r->nread < TEST_BROKER_REC_READS);
    test_read_rec_copy(&r->reads[r->nread++], tag, res);
    if (r->on_read_hook)
        r->on_read_hook(r, tag);
}

void test_broker_rec_subscribed(void *ctx, chat_str_t topic)
{
    test_broker_rec_t *r = ctx;

    if (r->in_publish)
        r->sync_calls++;
    if (r->closed)
        r->after_close_calls++;
    if (r->ignore != NULL && r->ignore(r, topic))
        return;
    assert_true(r->nsubs < TEST_BROKER_REC_SUBS);
    char *t = malloc(topic.len + 1);
    assert_non_null(t);
    if (topic.len)
        memcpy(t, topic.p, topic.len);
    t[topic.len] = '\0';
    r->subs[r->nsubs++] = t;
    if (r->on_sub_hook)
        r->on_sub_hook(r, topic);
}

broker_handlers_t test_broker_rec_handlers(test_broker_rec_t *r)
{
    return (broker_handlers_t){.on_message = test_broker_rec_message,
                               .on_published = test_broker_rec_published,
                               .on_appended = test_broker_rec_appended,
                               .on_history = test_broker_rec_history,
                               .on_subscribed = test_broker_rec_subscribed,
                               .ctx = r};
}

static chat_str_t opt_str(const char *s)
{
    return s != NULL ? chat_cstr(s) : CHAT_STR_NULL;
}

int test_broker_rec_append(test_broker_rec_t *r, const char *topic, const char *p0, const char *p1,
                           const char *p2, const char *key, const char *receipt, uint64_t tag)
{
    broker_append_t m = {.parts = {chat_cstr(p0), chat_cstr(p1), chat_cstr(p2)},
                         .dedupe_key = opt_str(key),
                         .receipt = opt_str(receipt)};
    r->in_publish = 1;
    int rc = broker_append(r->b, chat_cstr(topic), &m, tag);
    r->in_publish = 0;
    return rc;
}

int test_broker_rec_read(test_broker_rec_t *r, const char *topic, int has_after, uint64_t after,
                         uint64_t before, size_t limit, uint64_t tag)
{
    broker_history_query_t q = {
        .has_after = has_after, .after = after, .before = before, .limit = limit};
    r->in_publish = 1;
    int rc = broker_history(r->b, chat_cstr(topic), &q, tag);
    r->in_publish = 0;
    return rc;
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
    for (size_t i = 0; i < r->nread; i++)
        test_read_rec_free(&r->reads[i]);
    for (size_t i = 0; i < r->nsubs; i++)
        free(r->subs[i]);
    return rc == 0 ? 0 : -1;
}
