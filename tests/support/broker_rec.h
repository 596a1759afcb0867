/* tests/support/broker_rec.h - a broker under test on its own loop and a recorder of its
 * callbacks, for test_broker_contract.c and test_broker_memory.c (and publish with the "inside
 * publish()" flag, and the copies of append and read results, for test_broker_redis.c): every
 * message is copied (topic and data, each also NUL-terminated), every completion recorded in
 * arrival order (publications and appends also in one combined order), every append result and
 * history answer copied, every on_subscribed topic kept; a callback that runs inside publish(),
 * append() or history(), or after broker_close(), is counted, so a test can require none did.
 * The end of a test (close, run the loop dry, uv_loop_close() == 0) and the teardown of a
 * fixture are here too. Assertions are cmocka's: the recorder asserts from inside broker callbacks,
 * like the tests it serves always did. */
#ifndef CHAT_TESTS_BROKER_REC_H
#define CHAT_TESTS_BROKER_REC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker.h"
#include "str.h"

#define TEST_BROKER_REC_MAX 4096 /* messages, and completions, a recorder holds */
#define TEST_BROKER_REC_APPENDS 1024 /* append results a recorder holds */
#define TEST_BROKER_REC_READS   256  /* history answers a recorder holds */
#define TEST_BROKER_REC_SUBS    4096 /* on_subscribed calls a recorder holds */

typedef struct test_msg_rec {
    char *topic, *data; /* owned copies, NUL-terminated (freed by test_broker_rec_teardown) */
    size_t topic_len, data_len;
} test_msg_rec_t;

/* A copy of one broker_append_result_t (epoch and receipt NUL-terminated). */
typedef struct test_append_rec {
    uint64_t tag;
    int status;
    uint64_t receivers, seq;
    int duplicate;
    int has_receipt; /* r->receipt.p != NULL */
    char epoch[BROKER_EPOCH_MAX + 1];
    char receipt[BROKER_RECEIPT_MAX + 1];
} test_append_rec_t;

/* A copy of one broker_history_result_t. */
typedef struct test_read_rec {
    uint64_t tag;
    int status;
    uint64_t seq;
    char epoch[BROKER_EPOCH_MAX + 1];
    size_t n;
    uint64_t *seqs; /* n of them (owned: freed by test_read_rec_free) */
    char **data;    /* n copies, NUL-terminated (owned likewise) */
} test_read_rec_t;

/* Copies r (asserting its sizes are within the limits of broker.h). */
void test_append_rec_copy(test_append_rec_t *out, uint64_t tag, const broker_append_result_t *r);
void test_read_rec_copy(test_read_rec_t *out, uint64_t tag, const broker_history_result_t *r);
void test_read_rec_free(test_read_rec_t *r);

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
    /* every on_published and on_appended, in arrival order: the tag and 'p' or 'a' */
    size_t ndone;
    uint64_t done_tags[TEST_BROKER_REC_MAX];
    char done_kind[TEST_BROKER_REC_MAX];
    size_t napp, nread, nsubs;
    test_append_rec_t app[TEST_BROKER_REC_APPENDS];
    test_read_rec_t reads[TEST_BROKER_REC_READS];
    char *subs[TEST_BROKER_REC_SUBS]; /* on_subscribed topics (owned, NUL-terminated) */
    /* Optional: a message (or an on_subscribed) whose topic ignore() accepts (returns != 0) is
     * counted above, then neither recorded nor passed to on_msg_hook. */
    int (*ignore)(test_broker_rec_t *r, chat_str_t topic);
    /* Optional behaviour hooks, run after the call was recorded. */
    void (*on_msg_hook)(test_broker_rec_t *r, chat_str_t topic, chat_str_t data);
    void (*on_pub_hook)(test_broker_rec_t *r, uint64_t tag);
    void (*on_sub_hook)(test_broker_rec_t *r, chat_str_t topic);
    void (*on_read_hook)(test_broker_rec_t *r, uint64_t tag);
    int hook_budget; /* for the hooks' own use */
};

/* broker_handlers_t's on_message and on_published; ctx is the test_broker_rec_t. */
void test_broker_rec_message(void *ctx, chat_str_t topic, chat_str_t data);
void test_broker_rec_published(void *ctx, uint64_t tag, int status, uint64_t receivers);

/* on_appended, on_history and on_subscribed; ctx is the test_broker_rec_t. */
void test_broker_rec_appended(void *ctx, uint64_t tag, const broker_append_result_t *r);
void test_broker_rec_history(void *ctx, uint64_t tag, const broker_history_result_t *r);
void test_broker_rec_subscribed(void *ctx, chat_str_t topic);
/* All six handlers of a recorder (on_link NULL), ctx r. */
broker_handlers_t test_broker_rec_handlers(test_broker_rec_t *r);

/* broker_append on r->b of parts p0, p1, p2 (NUL-terminated), with key (NULL: none) and receipt
 * (NULL: none), r->in_publish set during the call. Returns what broker_append returned. */
int test_broker_rec_append(test_broker_rec_t *r, const char *topic, const char *p0, const char *p1,
                           const char *p2, const char *key, const char *receipt, uint64_t tag);
/* broker_history on r->b, r->in_publish set during the call. */
int test_broker_rec_read(test_broker_rec_t *r, const char *topic, int has_after, uint64_t after,
                         uint64_t before, size_t limit, uint64_t tag);

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
