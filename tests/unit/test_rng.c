/* tests/unit/test_rng.c - the per-owner PRNG (common/rng.h): seeds differ per call even with the
 * same salt, values stay in range, and the unit interval is [0, 1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rng.h"

static void test_same_salt_different_sequences(void **state)
{
    chat_rng_t a, b;
    chat_rng_seed(&a, "node-1", 6);
    chat_rng_seed(&b, "node-1", 6);
    int same = 1;
    for (int i = 0; i < 4; i++)
        same &= chat_rng_next(&a) == chat_rng_next(&b);
    assert_false(same);
}

static void test_below_and_unit_in_range(void **state)
{
    chat_rng_t r;
    unsigned hist[10] = {0};
    chat_rng_seed(&r, NULL, 0);
    for (int i = 0; i < 100000; i++) {
        uint64_t v = chat_rng_below(&r, 10);
        assert_true(v < 10);
        hist[v]++;
        double u = chat_rng_unit(&r);
        assert_true(u >= 0.0 && u < 1.0);
    }
    for (int i = 0; i < 10; i++) /* each bucket near 10,000 (5 sigma is about 475) */
        assert_true(hist[i] > 9000 && hist[i] < 11000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_salt_different_sequences),
        cmocka_unit_test(test_below_and_unit_in_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
