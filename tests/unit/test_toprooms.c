/* tests/unit/test_toprooms.c - gateway/toprooms.c: busy rooms get a series even when quiet rooms
 * came first, the sum over all series is exact, an evicted room's value moves to _other, decay
 * lets a newly busy room replace a formerly busy one, dm:/private: rooms are never monitored,
 * the edge cases k = 0 and k = 1, and the Space-Saving bounds over a long random stream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "toprooms.h"

static void send(gw_toprooms_t *t, const char *room, int n)
{
    for (int i = 0; i < n; i++)
        gw_toprooms_count(t, chat_cstr(room));
}

/* 1 and *out when `room` is monitored. */
static int find(const gw_toprooms_t *t, const char *room, gw_toprooms_stat_t *out)
{
    size_t pos = 0;
    while (gw_toprooms_next(t, &pos, out))
        if (chat_str_eq(out->room, chat_cstr(room)))
            return 1;
    return 0;
}

/* The value of room's series, or -1 when it has none. */
static long long series(const gw_toprooms_t *t, const char *room)
{
    gw_toprooms_stat_t st;
    return find(t, room, &st) && st.exported ? (long long)st.value : -1;
}

/* Sum over every exported series, _other and _private. */
static uint64_t sum_all(const gw_toprooms_t *t)
{
    gw_toprooms_stat_t st;
    size_t pos = 0;
    uint64_t sum = t->other + t->private_msgs;
    while (gw_toprooms_next(t, &pos, &st))
        sum += st.exported ? st.value : 0;
    return sum;
}

static size_t exported_count(const gw_toprooms_t *t)
{
    gw_toprooms_stat_t st;
    size_t pos = 0, n = 0;
    while (gw_toprooms_next(t, &pos, &st))
        n += st.exported ? 1 : 0;
    return n;
}

static void test_busy_rooms_after_quiet_ones_get_a_series(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_init(&t, 5);
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "quiet-%d", i);
        send(&t, name, 1);
        assert_int_equal(series(&t, name), 1); /* free slots: a series at the first message */
    }
    send(&t, "busy-a", 50);
    send(&t, "busy-b", 50);
    send(&t, "busy-c", 50);
    assert_int_equal(series(&t, "busy-a"), 50);
    assert_int_equal(series(&t, "busy-b"), 50);
    assert_int_equal(series(&t, "busy-c"), 50);
    size_t quiet = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "quiet-%d", i);
        long long v = series(&t, name);
        assert_true(v == -1 || v == 1);
        quiet += v == 1;
    }
    assert_int_equal(quiet, 2);
    assert_int_equal(t.other, 3); /* the three evicted quiet rooms' series */
    assert_int_equal(sum_all(&t), 155);
    gw_toprooms_dispose(&t);
}

static void test_interleaved_busy_rooms(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_init(&t, 5);
    send(&t, "q0", 1);
    send(&t, "q1", 1);
    send(&t, "q2", 1);
    send(&t, "q3", 1);
    send(&t, "q4", 1);
    for (int i = 0; i < 50; i++) {
        send(&t, "a", 1);
        send(&t, "b", 1);
        send(&t, "c", 1);
    }
    assert_int_equal(series(&t, "a"), 50);
    assert_int_equal(series(&t, "b"), 50);
    assert_int_equal(series(&t, "c"), 50);
    assert_int_equal(exported_count(&t), 5);
    assert_int_equal(sum_all(&t), 155);
    gw_toprooms_dispose(&t);
}

static void test_eviction_moves_the_value_to_other(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_stat_t st;
    gw_toprooms_init(&t, 2);
    send(&t, "a", 3);
    send(&t, "b", 1);
    assert_int_equal(t.other, 0);
    send(&t, "c", 1); /* evicts b (score 1): b's 1 moves to _other */
    assert_int_equal(series(&t, "b"), -1);
    assert_false(find(&t, "b", &st));
    assert_int_equal(t.other, 1);
    assert_true(find(&t, "c", &st));
    assert_int_equal(st.score, 2);
    assert_int_equal(st.error, 1);
    assert_int_equal(series(&t, "c"), 1); /* 2 - 1 >= 1, the largest evicted score */
    assert_int_equal(t.evicted_max, 1);

    send(&t, "d", 1); /* evicts c (2 < 3): score 3, error 2: not certainly busier than c */
    assert_int_equal(series(&t, "c"), -1);
    assert_true(find(&t, "d", &st));
    assert_int_equal(st.score, 3);
    assert_int_equal(st.error, 2);
    assert_false(st.exported);
    assert_int_equal(t.other, 3); /* b, c's series, d's first message */
    send(&t, "d", 1);             /* 4 - 2 >= 2: d gets its series from this message on */
    assert_int_equal(series(&t, "d"), 1);
    send(&t, "d", 5);
    assert_int_equal(series(&t, "d"), 6);
    assert_int_equal(series(&t, "a"), 3);
    assert_int_equal(t.other, 3);
    assert_int_equal(sum_all(&t), 3 + 1 + 1 + 7);
    gw_toprooms_dispose(&t);
}

/* A formerly busy room that went quiet is replaced by newly busy ones once decay brought its
 * score down; without decay it keeps its slot and the newcomers evict each other. */
static void test_decay_lets_new_busy_rooms_in(void **state)
{
    for (int decays = 0; decays <= 4; decays += 4) {
        gw_toprooms_t t;
        gw_toprooms_init(&t, 2);
        send(&t, "old", 100);
        send(&t, "small", 5);
        for (int i = 0; i < decays; i++)
            gw_toprooms_decay(&t); /* old: 100 -> 6, small: 5 -> 0 */
        send(&t, "new1", 50);
        send(&t, "new2", 50);
        gw_toprooms_stat_t st;
        if (decays) {
            assert_false(find(&t, "old", &st));
            assert_true(find(&t, "new1", &st));
            assert_int_equal(series(&t, "new1"), 50);
            assert_true(find(&t, "new2", &st));
            assert_int_equal(st.score, 6 + 50);
            assert_int_equal(st.error, 6);
            assert_int_equal(series(&t, "new2"), 50 - 5); /* from its 6th message on */
            assert_int_equal(t.other, 5 + 100 + 5);
        } else {
            assert_int_equal(series(&t, "old"), 100);
            assert_false(find(&t, "new1", &st)); /* evicted by new2 */
            assert_true(find(&t, "new2", &st));
        }
        assert_int_equal(sum_all(&t), 205);
        gw_toprooms_dispose(&t);
    }
}

static void test_decay_halves_scores_and_keeps_bounds(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_stat_t st;
    gw_toprooms_init(&t, 1);
    send(&t, "a", 3);
    send(&t, "b", 2); /* score 5, error 3 */
    assert_true(find(&t, "b", &st));
    assert_int_equal(st.score, 5);
    assert_int_equal(st.error, 3);
    gw_toprooms_decay(&t); /* 2 and ceil(3/2) = 2 */
    assert_true(find(&t, "b", &st));
    assert_int_equal(st.score, 2);
    assert_int_equal(st.error, 2);
    assert_int_equal(t.evicted_max, 1);
    gw_toprooms_decay(&t); /* 1, and the error capped at the score */
    assert_true(find(&t, "b", &st));
    assert_int_equal(st.score, 1);
    assert_int_equal(st.error, 1);
    assert_int_equal(t.evicted_max, 0);
    gw_toprooms_decay(&t);
    assert_true(find(&t, "b", &st));
    assert_int_equal(st.score, 0);
    assert_int_equal(st.error, 0);
    uint64_t before = sum_all(&t);
    assert_int_equal(before, 5); /* decay never changes a value */
    gw_toprooms_dispose(&t);
}

static void test_private_rooms_are_never_monitored(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_init(&t, 50);
    send(&t, "dm:alice:bob", 7);
    send(&t, "private:ops", 3);
    send(&t, "private:", 1);
    gw_toprooms_stat_t st;
    size_t pos = 0;
    assert_false(gw_toprooms_next(&t, &pos, &st)); /* 50 free slots, none taken */
    assert_int_equal(t.private_msgs, 11);
    assert_int_equal(t.other, 0);
    send(&t, "lobby", 2);
    send(&t, "Private:x", 1); /* room names are case-sensitive: a public room (room.c) */
    send(&t, "dmx", 1);
    assert_int_equal(series(&t, "lobby"), 2);
    assert_int_equal(series(&t, "Private:x"), 1);
    assert_int_equal(series(&t, "dmx"), 1);
    assert_int_equal(sum_all(&t), 15);
    assert_true(gw_toprooms_is_private(CHAT_LIT("dm:a:b")));
    assert_true(gw_toprooms_is_private(CHAT_LIT("private:x")));
    assert_false(gw_toprooms_is_private(CHAT_LIT("dm")));
    assert_false(gw_toprooms_is_private(CHAT_LIT("privatex")));
    gw_toprooms_dispose(&t);
}

static void test_aggregate_names_and_bad_names_count_as_other(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_init(&t, 50);
    send(&t, "_other", 2);
    send(&t, "_private", 3);
    gw_toprooms_count(&t, CHAT_LIT(""));
    char longname[80];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    send(&t, longname, 1);
    assert_int_equal(exported_count(&t), 0);
    assert_int_equal(t.other, 7);
    assert_int_equal(t.private_msgs, 0);
    send(&t, "_others", 1); /* only the exact names are reserved */
    assert_int_equal(series(&t, "_others"), 1);
    gw_toprooms_dispose(&t);
}

static void test_k_zero(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_init(&t, 0);
    send(&t, "a", 4);
    send(&t, "dm:a:b", 2);
    gw_toprooms_decay(&t);
    gw_toprooms_stat_t st;
    size_t pos = 0;
    assert_false(gw_toprooms_next(&t, &pos, &st));
    assert_int_equal(t.other, 4);
    assert_int_equal(t.private_msgs, 2);
    gw_toprooms_dispose(&t);
}

static void test_k_one(void **state)
{
    gw_toprooms_t t;
    gw_toprooms_init(&t, 1);
    send(&t, "a", 1);
    assert_int_equal(series(&t, "a"), 1);
    send(&t, "b", 1); /* evicts a; 2 - 1 >= 1: b is at least as busy as a */
    assert_int_equal(series(&t, "a"), -1);
    assert_int_equal(series(&t, "b"), 1);
    assert_int_equal(t.other, 1);
    send(&t, "a", 10); /* evicts b (2): a's first message is not enough, the second is */
    assert_int_equal(series(&t, "b"), -1);
    assert_int_equal(series(&t, "a"), 9);
    assert_int_equal(t.other, 3);
    assert_int_equal(exported_count(&t), 1);
    assert_int_equal(sum_all(&t), 12);
    /* alternating rooms: the one slot flips at every message, the sum stays exact */
    for (int i = 0; i < 20; i++)
        send(&t, i % 2 ? "x" : "y", 1);
    assert_true(exported_count(&t) <= 1);
    assert_int_equal(sum_all(&t), 32);
    gw_toprooms_dispose(&t);
}

/* ---- the invariants over a long stream -------------------------------------------------- */

#define R 40 /* rooms r0..r39, plus dm: rooms */
#define K 8

typedef struct {
    uint64_t c[R]; /* true decayed counts (+1 per message, floor-halved per decay) */
    int was_monitored[R], was_exported[R];
    uint64_t prev_score[R], prev_value[R];
} model_t;

static uint32_t rnd(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 8) & 0xffffff;
}

static int room_id(chat_str_t room)
{
    int id = 0;
    assert_true(room.len >= 2 && room.p[0] == 'r');
    for (size_t i = 1; i < room.len; i++)
        id = id * 10 + (room.p[i] - '0');
    assert_true(id >= 0 && id < R);
    return id;
}

static void check_step(const gw_toprooms_t *t, model_t *m, uint64_t messages, uint64_t *other,
                       int just_decayed)
{
    int monitored[R] = {0}, exported[R] = {0};
    uint64_t score[R] = {0}, value[R] = {0}, min = UINT64_MAX, prev_min = UINT64_MAX;
    gw_toprooms_stat_t st;
    size_t pos = 0;
    for (int r = 0; r < R; r++)
        if (m->was_monitored[r] && m->prev_score[r] < prev_min)
            prev_min = m->prev_score[r];
    while (gw_toprooms_next(t, &pos, &st)) {
        int r = room_id(st.room);
        assert_false(monitored[r]);
        monitored[r] = 1;
        exported[r] = st.exported;
        score[r] = st.score;
        value[r] = st.value;
        assert_true(st.error <= st.score);
        assert_true(st.score - st.error <= m->c[r] && m->c[r] <= st.score);
        assert_true(st.exported || st.value == 0);
        if (st.score < min)
            min = st.score;
    }
    assert_true(t->n <= K);
    assert_true(sum_all(t) == messages);
    assert_true(t->other >= *other); /* a counter */
    *other = t->other;
    if (t->n == K)
        assert_true(t->evicted_max <= min);
    for (int r = 0; r < R; r++) {
        if (!monitored[r])
            assert_true(m->c[r] <= t->evicted_max);
        if (m->was_exported[r] && exported[r])
            assert_true(value[r] >= m->prev_value[r]); /* a series only grows */
        if (m->was_monitored[r] && !monitored[r] && !just_decayed)
            assert_true(m->prev_score[r] == prev_min); /* only the least busy is evicted */
        m->was_monitored[r] = monitored[r];
        m->was_exported[r] = exported[r];
        m->prev_score[r] = score[r];
        m->prev_value[r] = value[r];
    }
}

static void test_invariants_over_a_random_stream(void **state)
{
    static model_t m;
    gw_toprooms_t t;
    uint32_t seed = 12345;
    uint64_t messages = 0, other = 0;
    char name[16];
    memset(&m, 0, sizeof(m));
    gw_toprooms_init(&t, K);
    for (int step = 0; step < 30000; step++) {
        if (step % 700 == 699) {
            gw_toprooms_decay(&t);
            for (int r = 0; r < R; r++)
                m.c[r] /= 2;
            check_step(&t, &m, messages, &other, 1);
            continue;
        }
        uint32_t x = rnd(&seed);
        int hot = (step / 5000) * 5; /* the busy rooms move every 5000 messages */
        if (x % 17 == 0) {
            gw_toprooms_count(&t, CHAT_LIT("dm:a:b"));
        } else {
            /* half the messages to 4 hot rooms, the rest anywhere */
            int r = x % 2 ? (hot + (int)(x >> 4) % 4) % R : (int)((x >> 4) % R);
            snprintf(name, sizeof(name), "r%d", r);
            gw_toprooms_count(&t, chat_cstr(name));
            m.c[r]++;
        }
        messages++;
        check_step(&t, &m, messages, &other, 0);
    }
    /* after the last phase the 4 hot rooms have their series */
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "r%d", (25 + i) % R);
        assert_true(series(&t, name) > 0);
    }
    gw_toprooms_dispose(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_busy_rooms_after_quiet_ones_get_a_series),
        cmocka_unit_test(test_interleaved_busy_rooms),
        cmocka_unit_test(test_eviction_moves_the_value_to_other),
        cmocka_unit_test(test_decay_lets_new_busy_rooms_in),
        cmocka_unit_test(test_decay_halves_scores_and_keeps_bounds),
        cmocka_unit_test(test_private_rooms_are_never_monitored),
        cmocka_unit_test(test_aggregate_names_and_bad_names_count_as_other),
        cmocka_unit_test(test_k_zero),
        cmocka_unit_test(test_k_one),
        cmocka_unit_test(test_invariants_over_a_random_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
