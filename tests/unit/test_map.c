/* tests/unit/test_map.c - common/map.c: put/get/del/replace, key copying, growth to 10,000 keys,
 * iteration (each entry exactly once, deleting the current key while iterating), and binary keys
 * with NUL bytes. Values are pointers into arrays the test owns; the map never frees them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "map.h"
#include "str.h"

#define NKEYS 10000

/* ---- helpers ----------------------------------------------------------------------------- */

static int values[NKEYS];

static size_t key_of(char *buf, size_t cap, int i)
{
    int n = snprintf(buf, cap, "key-%d", i);
    assert_in_range(n, 1, (int)cap - 1);
    return (size_t)n;
}

static void put_n(chat_map_t *m, int n)
{
    char k[32];

    for (int i = 0; i < n; i++) {
        size_t kl = key_of(k, sizeof(k), i);
        chat_map_put(m, chat_str(k, kl), &values[i]);
    }
}

static void *get_i(const chat_map_t *m, int i)
{
    char k[32];
    size_t kl = key_of(k, sizeof(k), i);
    return chat_map_get(m, chat_str(k, kl));
}

static void *del_i(chat_map_t *m, int i)
{
    char k[32];
    size_t kl = key_of(k, sizeof(k), i);
    return chat_map_del(m, chat_str(k, kl));
}

/* Index of a value pointer into values[]. */
static int index_of(const void *v)
{
    const int *p = v;
    assert_true(p >= values && p < values + NKEYS);
    return (int)(p - values);
}

/* ---- empty map --------------------------------------------------------------------------- */

static void test_empty_map(void **state)
{
    chat_map_t m;
    chat_map_iter_t it = {0};
    chat_str_t key = CHAT_STR_NULL;

    chat_map_init(&m);
    assert_int_equal(chat_map_count(&m), 0);
    assert_null(chat_map_get(&m, CHAT_LIT("a")));
    assert_null(chat_map_del(&m, CHAT_LIT("a")));
    assert_null(chat_map_next(&m, &it, &key));
    assert_int_equal(chat_map_count(&m), 0);
    chat_map_dispose(&m);
}

static void test_dispose_of_unused_map(void **state)
{
    chat_map_t m;

    chat_map_init(&m);
    chat_map_dispose(&m);
    assert_int_equal(chat_map_count(&m), 0);
}

/* ---- put / get / del / replace ----------------------------------------------------------- */

static void test_put_then_get(void **state)
{
    chat_map_t m;
    int a = 1, b = 2;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("alpha"), &a);
    chat_map_put(&m, CHAT_LIT("beta"), &b);
    assert_int_equal(chat_map_count(&m), 2);
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("alpha")), &a);
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("beta")), &b);
    assert_null(chat_map_get(&m, CHAT_LIT("gamma")));
    chat_map_dispose(&m);
}

static void test_get_is_exact_match(void **state)
{
    chat_map_t m;
    int a = 1;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("room"), &a);
    assert_null(chat_map_get(&m, CHAT_LIT("Room")));
    assert_null(chat_map_get(&m, CHAT_LIT("roo")));
    assert_null(chat_map_get(&m, CHAT_LIT("rooms")));
    assert_null(chat_map_get(&m, CHAT_LIT("")));
    assert_ptr_equal(chat_map_get(&m, chat_str("rooms", 4)), &a); /* length, not NUL, ends it */
    chat_map_dispose(&m);
}

static void test_put_replaces_value(void **state)
{
    chat_map_t m;
    int a = 1, b = 2;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("k"), &a);
    chat_map_put(&m, CHAT_LIT("k"), &b);
    assert_int_equal(chat_map_count(&m), 1);
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("k")), &b);
    assert_ptr_equal(chat_map_del(&m, CHAT_LIT("k")), &b);
    assert_int_equal(chat_map_count(&m), 0);
    assert_null(chat_map_get(&m, CHAT_LIT("k")));
    chat_map_dispose(&m);
}

static void test_del_returns_value_and_removes(void **state)
{
    chat_map_t m;
    int a = 1, b = 2;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("a"), &a);
    chat_map_put(&m, CHAT_LIT("b"), &b);
    assert_ptr_equal(chat_map_del(&m, CHAT_LIT("a")), &a);
    assert_int_equal(chat_map_count(&m), 1);
    assert_null(chat_map_get(&m, CHAT_LIT("a")));
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("b")), &b);
    assert_null(chat_map_del(&m, CHAT_LIT("a"))); /* second delete: absent */
    assert_int_equal(chat_map_count(&m), 1);
    chat_map_dispose(&m);
}

static void test_del_missing_key(void **state)
{
    chat_map_t m;
    int a = 1;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("a"), &a);
    assert_null(chat_map_del(&m, CHAT_LIT("b")));
    assert_int_equal(chat_map_count(&m), 1);
    chat_map_dispose(&m);
}

static void test_put_again_after_del(void **state)
{
    chat_map_t m;
    int a = 1, b = 2;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("k"), &a);
    assert_ptr_equal(chat_map_del(&m, CHAT_LIT("k")), &a);
    chat_map_put(&m, CHAT_LIT("k"), &b);
    assert_int_equal(chat_map_count(&m), 1);
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("k")), &b);
    chat_map_dispose(&m);
}

static void test_map_copies_keys(void **state)
{
    chat_map_t m;
    int a = 1;
    char *k = malloc(5);

    assert_non_null(k);
    memcpy(k, "temp", 4);
    chat_map_init(&m);
    chat_map_put(&m, chat_str(k, 4), &a);
    memcpy(k, "XXXX", 4); /* the caller's bytes change, then go away */
    free(k);
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("temp")), &a);
    assert_null(chat_map_get(&m, CHAT_LIT("XXXX")));

    chat_map_iter_t it = {0};
    chat_str_t key;
    assert_ptr_equal(chat_map_next(&m, &it, &key), &a);
    assert_int_equal(key.len, 4);
    assert_memory_equal(key.p, "temp", 4);
    chat_map_dispose(&m);
}

static void test_dispose_does_not_free_values(void **state)
{
    chat_map_t m;
    int *v = malloc(sizeof(int));

    assert_non_null(v);
    *v = 7;
    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("v"), v);
    chat_map_dispose(&m);
    assert_int_equal(*v, 7); /* still ours: ASan would flag a use after free */
    free(v);
}

/* ---- growth ------------------------------------------------------------------------------ */

static void test_ten_thousand_keys(void **state)
{
    chat_map_t m;

    chat_map_init(&m);
    put_n(&m, NKEYS);
    assert_int_equal(chat_map_count(&m), NKEYS);
    for (int i = 0; i < NKEYS; i++)
        assert_ptr_equal(get_i(&m, i), &values[i]);
    assert_null(chat_map_get(&m, CHAT_LIT("key-10000")));
    assert_null(chat_map_get(&m, CHAT_LIT("key-")));
    chat_map_dispose(&m);
}

static void test_growth_keeps_load_at_most_one(void **state)
{
    chat_map_t m;

    chat_map_init(&m);
    assert_int_equal(m.nbuckets, 0);
    for (int n = 1; n <= NKEYS; n++) {
        char k[32];
        size_t kl = key_of(k, sizeof(k), n - 1);
        chat_map_put(&m, chat_str(k, kl), &values[n - 1]);
        assert_int_equal(chat_map_count(&m), n);
        assert_true(m.nbuckets >= (size_t)n);
        assert_int_equal(m.nbuckets & (m.nbuckets - 1), 0); /* power of two */
    }
    chat_map_dispose(&m);
}

static void test_ten_thousand_keys_delete_half(void **state)
{
    chat_map_t m;

    chat_map_init(&m);
    put_n(&m, NKEYS);
    for (int i = 0; i < NKEYS; i += 2)
        assert_ptr_equal(del_i(&m, i), &values[i]);
    assert_int_equal(chat_map_count(&m), NKEYS / 2);
    for (int i = 0; i < NKEYS; i++) {
        if (i % 2 == 0)
            assert_null(get_i(&m, i));
        else
            assert_ptr_equal(get_i(&m, i), &values[i]);
    }
    chat_map_dispose(&m);
}

static void test_ten_thousand_replacements_keep_count(void **state)
{
    chat_map_t m;
    char k[32];

    chat_map_init(&m);
    put_n(&m, NKEYS);
    for (int i = 0; i < NKEYS; i++) {
        size_t kl = key_of(k, sizeof(k), i);
        chat_map_put(&m, chat_str(k, kl), &values[NKEYS - 1 - i]);
    }
    assert_int_equal(chat_map_count(&m), NKEYS);
    for (int i = 0; i < NKEYS; i++)
        assert_ptr_equal(get_i(&m, i), &values[NKEYS - 1 - i]);
    chat_map_dispose(&m);
}

/* ---- iteration --------------------------------------------------------------------------- */

static void test_iteration_visits_each_once(void **state)
{
    chat_map_t m;
    static unsigned char seen[NKEYS];
    chat_map_iter_t it = {0};
    chat_str_t key;
    void *v;
    size_t visits = 0;

    memset(seen, 0, sizeof(seen));
    chat_map_init(&m);
    put_n(&m, NKEYS);
    while ((v = chat_map_next(&m, &it, &key)) != NULL) {
        int i = index_of(v);
        char want[32];
        size_t wl = key_of(want, sizeof(want), i);

        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        assert_int_equal(key.len, wl); /* the key returned is the value's key */
        assert_memory_equal(key.p, want, wl);
        visits++;
    }
    assert_int_equal(visits, NKEYS);
    assert_null(chat_map_next(&m, &it, &key)); /* stays at the end */
    chat_map_dispose(&m);
}

static void test_iteration_of_single_entry(void **state)
{
    chat_map_t m;
    int a = 1;
    chat_map_iter_t it = {0};
    chat_str_t key;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT("only"), &a);
    assert_ptr_equal(chat_map_next(&m, &it, &key), &a);
    assert_int_equal(key.len, 4);
    assert_memory_equal(key.p, "only", 4);
    assert_null(chat_map_next(&m, &it, &key));
    chat_map_dispose(&m);
}

static void test_delete_current_key_during_iteration(void **state)
{
    chat_map_t m;
    static unsigned char seen[NKEYS];
    chat_map_iter_t it = {0};
    chat_str_t key;
    void *v;
    size_t visits = 0;

    memset(seen, 0, sizeof(seen));
    chat_map_init(&m);
    put_n(&m, NKEYS);
    while ((v = chat_map_next(&m, &it, &key)) != NULL) {
        int i = index_of(v);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        visits++;
        assert_ptr_equal(chat_map_del(&m, key), v); /* key borrows the entry being freed */
    }
    assert_int_equal(visits, NKEYS);
    assert_int_equal(chat_map_count(&m), 0);
    for (int i = 0; i < NKEYS; i++)
        assert_null(get_i(&m, i));
    chat_map_dispose(&m);
}

static void test_delete_some_during_iteration(void **state)
{
    chat_map_t m;
    static unsigned char seen[NKEYS];
    chat_map_iter_t it = {0};
    chat_str_t key;
    void *v;
    size_t visits = 0;

    memset(seen, 0, sizeof(seen));
    chat_map_init(&m);
    put_n(&m, NKEYS);
    while ((v = chat_map_next(&m, &it, &key)) != NULL) {
        int i = index_of(v);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        visits++;
        if (i % 3 == 0)
            assert_ptr_equal(chat_map_del(&m, key), v);
    }
    assert_int_equal(visits, NKEYS);
    assert_int_equal(chat_map_count(&m), NKEYS - (NKEYS + 2) / 3);
    for (int i = 0; i < NKEYS; i++) {
        if (i % 3 == 0)
            assert_null(get_i(&m, i));
        else
            assert_ptr_equal(get_i(&m, i), &values[i]);
    }
    chat_map_dispose(&m);
}

/* ---- binary keys ------------------------------------------------------------------------- */

static void test_binary_keys_with_nul(void **state)
{
    chat_map_t m;
    int a = 1, b = 2, c = 3, d = 4;

    chat_map_init(&m);
    chat_map_put(&m, chat_str("a\0b", 3), &a);
    chat_map_put(&m, chat_str("a\0c", 3), &b);
    chat_map_put(&m, chat_str("a", 1), &c);
    chat_map_put(&m, chat_str("a\0", 2), &d);
    assert_int_equal(chat_map_count(&m), 4);
    assert_ptr_equal(chat_map_get(&m, chat_str("a\0b", 3)), &a);
    assert_ptr_equal(chat_map_get(&m, chat_str("a\0c", 3)), &b);
    assert_ptr_equal(chat_map_get(&m, chat_str("a", 1)), &c);
    assert_ptr_equal(chat_map_get(&m, chat_str("a\0", 2)), &d);
    assert_null(chat_map_get(&m, chat_str("a\0d", 3)));
    assert_ptr_equal(chat_map_del(&m, chat_str("a\0b", 3)), &a);
    assert_null(chat_map_get(&m, chat_str("a\0b", 3)));
    assert_ptr_equal(chat_map_get(&m, chat_str("a\0c", 3)), &b);
    chat_map_dispose(&m);
}

static void test_binary_keys_all_bytes(void **state)
{
    chat_map_t m;
    char k[2];

    chat_map_init(&m);
    for (int i = 0; i < 256; i++) {
        k[0] = (char)i;
        k[1] = '\0';
        chat_map_put(&m, chat_str(k, 2), &values[i]);
    }
    assert_int_equal(chat_map_count(&m), 256);
    for (int i = 0; i < 256; i++) {
        k[0] = (char)i;
        k[1] = '\0';
        assert_ptr_equal(chat_map_get(&m, chat_str(k, 2)), &values[i]);
        assert_null(chat_map_get(&m, chat_str(k, 1)));
    }
    chat_map_iter_t it = {0};
    chat_str_t key;
    void *v;
    size_t visits = 0;
    while ((v = chat_map_next(&m, &it, &key)) != NULL) {
        assert_int_equal(key.len, 2);
        assert_int_equal((unsigned char)key.p[0], index_of(v));
        assert_int_equal(key.p[1], '\0');
        visits++;
    }
    assert_int_equal(visits, 256);
    chat_map_dispose(&m);
}

static void test_empty_key(void **state)
{
    chat_map_t m;
    int a = 1, b = 2;

    chat_map_init(&m);
    chat_map_put(&m, CHAT_LIT(""), &a);
    chat_map_put(&m, CHAT_LIT("x"), &b);
    assert_int_equal(chat_map_count(&m), 2);
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("")), &a);
    assert_ptr_equal(chat_map_del(&m, CHAT_LIT("")), &a);
    assert_null(chat_map_get(&m, CHAT_LIT("")));
    assert_ptr_equal(chat_map_get(&m, CHAT_LIT("x")), &b);
    chat_map_dispose(&m);
}

static void test_long_keys(void **state)
{
    chat_map_t m;
    char *k1 = malloc(4096), *k2 = malloc(4096);
    int a = 1, b = 2;

    assert_non_null(k1);
    assert_non_null(k2);
    memset(k1, 'z', 4096);
    memcpy(k2, k1, 4096);
    k2[4095] = 'y'; /* differs only in the last byte */
    chat_map_init(&m);
    chat_map_put(&m, chat_str(k1, 4096), &a);
    chat_map_put(&m, chat_str(k2, 4096), &b);
    assert_int_equal(chat_map_count(&m), 2);
    assert_ptr_equal(chat_map_get(&m, chat_str(k1, 4096)), &a);
    assert_ptr_equal(chat_map_get(&m, chat_str(k2, 4096)), &b);
    assert_null(chat_map_get(&m, chat_str(k1, 4095)));
    chat_map_dispose(&m);
    free(k1);
    free(k2);
}

static void test_two_maps_are_independent(void **state)
{
    chat_map_t m1, m2;
    int a = 1, b = 2;

    chat_map_init(&m1);
    chat_map_init(&m2);
    chat_map_put(&m1, CHAT_LIT("k"), &a);
    chat_map_put(&m2, CHAT_LIT("k"), &b);
    assert_ptr_equal(chat_map_get(&m1, CHAT_LIT("k")), &a);
    assert_ptr_equal(chat_map_get(&m2, CHAT_LIT("k")), &b);
    assert_ptr_equal(chat_map_del(&m1, CHAT_LIT("k")), &a);
    assert_ptr_equal(chat_map_get(&m2, CHAT_LIT("k")), &b);
    chat_map_dispose(&m1);
    chat_map_dispose(&m2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_map),
        cmocka_unit_test(test_dispose_of_unused_map),
        cmocka_unit_test(test_put_then_get),
        cmocka_unit_test(test_get_is_exact_match),
        cmocka_unit_test(test_put_replaces_value),
        cmocka_unit_test(test_del_returns_value_and_removes),
        cmocka_unit_test(test_del_missing_key),
        cmocka_unit_test(test_put_again_after_del),
        cmocka_unit_test(test_map_copies_keys),
        cmocka_unit_test(test_dispose_does_not_free_values),
        cmocka_unit_test(test_ten_thousand_keys),
        cmocka_unit_test(test_growth_keeps_load_at_most_one),
        cmocka_unit_test(test_ten_thousand_keys_delete_half),
        cmocka_unit_test(test_ten_thousand_replacements_keep_count),
        cmocka_unit_test(test_iteration_visits_each_once),
        cmocka_unit_test(test_iteration_of_single_entry),
        cmocka_unit_test(test_delete_current_key_during_iteration),
        cmocka_unit_test(test_delete_some_during_iteration),
        cmocka_unit_test(test_binary_keys_with_nul),
        cmocka_unit_test(test_binary_keys_all_bytes),
        cmocka_unit_test(test_empty_key),
        cmocka_unit_test(test_long_keys),
        cmocka_unit_test(test_two_maps_are_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
