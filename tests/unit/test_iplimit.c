/* tests/unit/test_iplimit.c - new connections per address (gateway/iplimit.c): the burst, the
 * wait until the next token, addresses apart, the sweep of idle addresses, rate 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "iplimit.h"

static void test_burst_then_wait(void **state)
{
    gw_iplimit_t l;
    uint64_t wait = 0;
    gw_iplimit_init(&l, (gw_rate_t){2, 3});
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_iplimit_take(&l, CHAT_LIT("10.0.0.1"), 1000, &wait), 1);
    assert_int_equal(gw_iplimit_take(&l, CHAT_LIT("10.0.0.1"), 1000, &wait), 0);
    assert_int_equal(wait, 500); /* 2 a second */
    assert_int_equal(gw_iplimit_take(&l, CHAT_LIT("10.0.0.2"), 1000, &wait), 1);
    assert_int_equal(gw_iplimit_take(&l, CHAT_LIT("10.0.0.1"), 1500, &wait), 1);
    gw_iplimit_dispose(&l);
}

static void test_sweep_drops_idle_addresses(void **state)
{
    gw_iplimit_t l;
    uint64_t wait = 0;
    gw_iplimit_init(&l, (gw_rate_t){2, 4});
    assert_int_equal(gw_iplimit_take(&l, CHAT_LIT("a"), 0, &wait), 1);
    for (int i = 0; i < 4; i++)
        gw_iplimit_take(&l, CHAT_LIT("b"), 0, &wait);
    assert_int_equal(gw_iplimit_sweep(&l, 100), 2);  /* neither is full again */
    assert_int_equal(gw_iplimit_sweep(&l, 600), 1);  /* a: 1 token back after 0.5 s */
    assert_int_equal(gw_iplimit_sweep(&l, 2000), 0); /* b: 4 tokens after 2 s */
    gw_iplimit_dispose(&l);
}

static void test_rate_zero_is_off(void **state)
{
    gw_iplimit_t l;
    uint64_t wait = 0;
    gw_iplimit_init(&l, (gw_rate_t){0, 1});
    for (int i = 0; i < 1000; i++)
        assert_int_equal(gw_iplimit_take(&l, CHAT_LIT("a"), 0, &wait), 1);
    assert_int_equal(gw_iplimit_sweep(&l, 0), 0);
    gw_iplimit_dispose(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_wait),
        cmocka_unit_test(test_sweep_drops_idle_addresses),
        cmocka_unit_test(test_rate_zero_is_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
