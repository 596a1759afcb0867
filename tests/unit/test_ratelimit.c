/* tests/unit/test_ratelimit.c - gateway/ratelimit.c: a bucket starts full (burst), refills at
 * `rate` per second up to burst, says how long to wait when empty, and rate 0 is unlimited. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ratelimit.h"

static int take(gw_bucket_t *b, gw_rate_t r, uint64_t now)
{
    if (gw_bucket_wait_ms(b, r, now) != 0)
        return 0;
    gw_bucket_take(b, r);
    return 1;
}

static void test_burst_then_refusal(void **state)
{
    gw_bucket_t b = {0};
    gw_rate_t r = {5, 10};
    for (int i = 0; i < 10; i++)
        assert_true(take(&b, r, 1000));
    assert_false(take(&b, r, 1000));
    uint64_t wait = gw_bucket_wait_ms(&b, r, 1000);
    assert_int_equal(wait, 200); /* one token per 200 ms at 5/s */
}

static void test_refills_at_rate_up_to_burst(void **state)
{
    gw_bucket_t b = {0};
    gw_rate_t r = {10, 3};
    for (int i = 0; i < 3; i++)
        assert_true(take(&b, r, 0));
    assert_false(take(&b, r, 0));
    assert_false(take(&b, r, 99));
    assert_true(take(&b, r, 100));   /* 100 ms at 10/s = one token */
    assert_false(take(&b, r, 100));
    for (int i = 0; i < 3; i++)      /* a long pause refills only up to the burst */
        assert_true(take(&b, r, 100000));
    assert_false(take(&b, r, 100000));
}

static void test_wait_is_exact_enough(void **state)
{
    gw_bucket_t b = {0};
    gw_rate_t r = {3, 1};
    assert_true(take(&b, r, 0));
    uint64_t w = gw_bucket_wait_ms(&b, r, 0);
    assert_int_equal(w, 334); /* 333.3 ms rounded up: waiting that long always suffices */
    assert_false(take(&b, r, 333));
    assert_true(take(&b, r, 334));
}

static void test_rate_zero_is_unlimited(void **state)
{
    gw_bucket_t b = {0};
    gw_rate_t r = {0, 1};
    for (int i = 0; i < 100000; i++)
        assert_true(take(&b, r, 0));
}

static void test_allows(void **state)
{
    gw_rate_t r = {20, 40};
    assert_int_equal(gw_rate_allows(r, 10000), 240);
    assert_int_equal(gw_rate_allows((gw_rate_t){1, 1}, 10000), 11);
}

static void test_clock_going_backwards_is_harmless(void **state)
{
    gw_bucket_t b = {0};
    gw_rate_t r = {1, 1};
    assert_true(take(&b, r, 5000));
    assert_false(take(&b, r, 4000));
    assert_true(take(&b, r, 6000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refusal),
        cmocka_unit_test(test_refills_at_rate_up_to_burst),
        cmocka_unit_test(test_wait_is_exact_enough),
        cmocka_unit_test(test_rate_zero_is_unlimited),
        cmocka_unit_test(test_allows),
        cmocka_unit_test(test_clock_going_backwards_is_harmless),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
