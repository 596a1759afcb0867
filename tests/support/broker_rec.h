/* tests/support/broker_rec.h - a broker under test on its own loop and a recorder of its
 * callbacks, for test_broker_contract.c and test_broker_memory.c (and publish with the "inside
 * publish()" flag for test_broker_redis.c): every message is copied (topic and data, each also
 * NUL-terminated) and every completion recorded in arrival order; a callback that runs inside
 * publish() or after broker_close() is counted, so a test can require none did. The end of a
 * test (close, run the loop dry, uv_loop_close() == 0) and the teardown of a fixture are here
 * too. Assertions are cmocka's: the recorder asserts from inside broker callbacks, like the
 * tests it serves always did. */
#ifndef CHAT_TESTS_BROKER_REC_H
#define CHAT_TESTS_BROKER_REC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker.h"
#include "str.h"

#define TEST_BROKER_REC_MAX 4096 /* messages, and completions, a recorder holds */

typedef struct test_msg_rec {
    char *topic, *data; /* owned copies, NUL-terminated (freed by test_broker_rec_teardown) */
    size_t topic_len, data_len;
} test_msg_rec_t;

typedef struct test_broker_rec test_broker_rec_t;

/* Zeroed (calloc) before use; a test fixture with more to hold embeds it and finds itself from
 * it with chat_container_of. */
struct test_broker_rec {
    uv_loop_t loop;
    broker_t *b;
    int closed;     /* broker_close was called (set by whoever calls it) */
    int in_publish; /* set around broker_publish: a callback seeing it ran synchronously */
    int sync_calls; /* callbacks that ran inside publish() */
    size_t nmsgs, npub;
    test_msg_rec_t msgs[TEST_BROKER_REC_MAX];
    uint64_t pub_tags[TEST_BROKER_REC_MAX];
    int pub_status[TEST_BROKER_REC_MAX];
    int after_close_calls; /* handler calls after broker_close */
    /* Optional: a message whose topic ignore() accepts (returns != 0) is counted above, then
     * neither recorded nor passed to on_msg_hook. */
    int (*ignore)(test_broker_rec_t *r, chat_str_t topic);
    /* Optional behaviour hooks, run after the call was recorded. */
    void (*on_msg_hook)(test_broker_rec_t *r, chat_str_t topic, chat_str_t data);
    void (*on_pub_hook)(test_broker_rec_t *r, uint64_t tag);
    int hook_budget; /* for the hooks' own use */
};

/* broker_handlers_t's on_message and on_published; ctx is the test_broker_rec_t. */
void test_broker_rec_message(void *ctx, chat_str_t topic, chat_str_t data);
void test_broker_rec_published(void *ctx, uint64_t tag, int status, uint64_t receivers);

/* broker_publish(b, topic, data, tag) with *in_publish set to 1 during the call (0 after).
 * Returns what broker_publish returned. */
int test_broker_publish(broker_t *b, int *in_publish, const char *topic, const char *data,
                        uint64_t tag);
/* The same on r->b with r->in_publish. */
int test_broker_rec_publish(test_broker_rec_t *r, const char *topic, const char *data,
                            uint64_t tag);

/* Asserts that message i was recorded, on topic, with data (its length too). */
void test_broker_rec_assert_msg(const test_broker_rec_t *r, size_t i, const char *topic,
                                const char *data);

/* broker_close(r->b) unless r->closed, and sets r->closed. */
void test_broker_rec_close(test_broker_rec_t *r);
/* Hooks that close the broker (test_broker_rec_close) from a message or a completion. */
void test_broker_rec_close_on_msg(test_broker_rec_t *r, chat_str_t topic, chat_str_t data);
void test_broker_rec_close_on_pub(test_broker_rec_t *r, uint64_t tag);

/* The end of a test: closes the broker (if the test did not), runs the loop dry and requires
 * uv_run() == 0, uv_loop_close() == 0 and no handler call after the close; then initialises a
 * fresh, empty loop for the teardown to close. */
void test_broker_rec_finish(test_broker_rec_t *r);

/* For a cmocka teardown (never asserts): closes the broker if it is open and not closed, closes
 * any handle left, drains the loop, closes it and frees the recorded messages (not r itself).
 * Returns 0, or -1 when uv_loop_close() failed. */
int test_broker_rec_teardown(test_broker_rec_t *r);

#endif
