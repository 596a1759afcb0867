/* tests/unit/test_redis_url.c - broker/redis_url.c: every accepted form, the defaults, and the
 * refusals (rediss://, bad ports, bad db, unknown schemes, junk) with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "redis_url.h"

static redis_url_t parse_ok(const char *s)
{
    redis_url_t u;
    const char *why = NULL;
    int rc = redis_url_parse(s, &u, &why);
    if (rc != 0)
        fail_msg("'%s' refused: %s", s, why ? why : "?");
    return u;
}

static void refused(const char *s)
{
    redis_url_t u;
    const char *why = NULL;
    assert_int_equal(redis_url_parse(s, &u, &why), CHAT_EINVAL);
    assert_non_null(why);
    assert_true(strlen(why) > 5);
}

static void test_plain_host(void **state)
{
    redis_url_t u = parse_ok("redis://localhost");
    assert_false(u.is_unix);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_false(u.has_password);
    assert_false(u.db_given);
}

static void test_host_port_db(void **state)
{
    redis_url_t u = parse_ok("redis://10.1.2.3:7000/5");
    assert_string_equal(u.host, "10.1.2.3");
    assert_int_equal(u.port, 7000);
    assert_true(u.db_given);
    assert_int_equal(u.db, 5);
}

static void test_password_only(void **state)
{
    redis_url_t u = parse_ok("redis://:s3cret@redis:6380");
    assert_true(u.has_password);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "redis");
    assert_int_equal(u.port, 6380);
}

static void test_user_and_password_with_escapes(void **state)
{
    redis_url_t u = parse_ok("redis://app:p%40ss%3Aw@redis.internal/0");
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p@ss:w");
    assert_string_equal(u.host, "redis.internal");
    assert_true(u.db_given);
    assert_int_equal(u.db, 0);
}

static void test_password_with_at_sign_last_at_wins(void **state)
{
    redis_url_t u = parse_ok("redis://:a@b@host:1");
    assert_string_equal(u.password, "a@b");
    assert_string_equal(u.host, "host");
}

static void test_ipv6(void **state)
{
    redis_url_t u = parse_ok("redis://[::1]:6390");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
}

static void test_bare_host_port(void **state)
{
    redis_url_t u = parse_ok("127.0.0.1:6379");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
}

static void test_unix_socket(void **state)
{
    redis_url_t u = parse_ok("unix:///run/redis/redis.sock");
    assert_true(u.is_unix);
    assert_string_equal(u.path, "/run/redis/redis.sock");
    assert_false(u.db_given);
    u = parse_ok("unix:///tmp/r.sock?db=3");
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_true(u.db_given);
    assert_int_equal(u.db, 3);
}

static void test_tls_refused_with_advice(void **state)
{
    redis_url_t u;
    const char *why = NULL;
    assert_int_equal(redis_url_parse("rediss://host:6380", &u, &why), CHAT_EINVAL);
    assert_non_null(strstr(why, "TLS"));
    assert_non_null(strstr(why, "proxy"));
}

static void test_refusals(void **state)
{
    refused("");
    refused("http://host:1");
    refused("redis://");
    refused("redis://host:0");
    refused("redis://host:65536");
    refused("redis://host:port");
    refused("redis://host:6379/x");
    refused("redis://ho st:1");
    refused("redis://[::1");
    refused("unix://relative.sock");
    refused("unix:///tmp/r.sock?database=1");
    refused("unix:///tmp/r.sock?db=x");
    refused("justahost");
    refused("redis://:bad%zz@host");
    refused("redis://:nul%00@host");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_host),
        cmocka_unit_test(test_host_port_db),
        cmocka_unit_test(test_password_only),
        cmocka_unit_test(test_user_and_password_with_escapes),
        cmocka_unit_test(test_password_with_at_sign_last_at_wins),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_bare_host_port),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_tls_refused_with_advice),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
