/* tests/unit/test_config.c - gateway/config.c: durations, defaults, environment over default,
 * flag over environment, both flag forms, booleans, every refusal (bad values, unknown options,
 * missing values) with a message naming the option, --help and --version, --listen forms and node
 * id rules. The environment is always an array built here (never the process environment), and
 * output goes to open_memstream() buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <uv.h>

#include "config.h"
#include "err.h"

#ifndef CHAT_VERSION
#error "CHAT_VERSION is defined by the project's meson.build"
#endif

/* ---- helpers ----------------------------------------------------------------------------- */

typedef struct run {
    gw_config_t cfg;
    gw_config_result_t rc;
    char *out, *err; /* what gw_config_load printed, NUL-terminated */
    size_t out_len, err_len;
} run_t;

#define MAX_ARGS 16

/* Runs gw_config_load with argv = {"chat-gateway", args..., NULL} and the NULL-terminated env
 * list (may be NULL for "no variables"), capturing both streams. */
static void load(run_t *r, const char *const *args, const char *const *env)
{
    char *argv[MAX_ARGS + 2];
    char *envp[MAX_ARGS + 1];
    int argc = 0, envc = 0;
    FILE *out, *err;

    argv[argc++] = (char *)"chat-gateway";
    for (; args && args[argc - 1]; argc++) {
        assert_true(argc <= MAX_ARGS);
        argv[argc] = (char *)args[argc - 1];
    }
    argv[argc] = NULL;
    for (; env && env[envc]; envc++) {
        assert_true(envc < MAX_ARGS);
        envp[envc] = (char *)env[envc];
    }
    envp[envc] = NULL;

    r->out = r->err = NULL;
    out = open_memstream(&r->out, &r->out_len);
    err = open_memstream(&r->err, &r->err_len);
    assert_non_null(out);
    assert_non_null(err);
    r->rc = gw_config_load(&r->cfg, argc, argv, envp, out, err);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(fclose(err), 0);
}

static void done(run_t *r)
{
    gw_config_dispose(&r->cfg);
    free(r->out);
    free(r->err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NOARGS    ((const char *const *)NULL)
#define NOENV     ((const char *const *)NULL)

/* Expects GW_CONFIG_OK with nothing printed. */
static void load_ok(run_t *r, const char *const *args, const char *const *env)
{
    load(r, args, env);
    if (r->rc != GW_CONFIG_OK)
        fail_msg("expected GW_CONFIG_OK, got %d; err: %s", (int)r->rc, r->err);
    assert_int_equal(r->out_len, 0);
    assert_int_equal(r->err_len, 0);
}

/* Expects GW_CONFIG_EXIT_BAD, nothing on out, and an error that contains every `needles`. */
static void expect_bad(const char *const *args, const char *const *env, const char *const *needles)
{
    run_t r;

    load(&r, args, env);
    if (r.rc != GW_CONFIG_EXIT_BAD)
        fail_msg("expected GW_CONFIG_EXIT_BAD, got %d (args[0] %s)", (int)r.rc,
                 args ? args[0] : "-");
    assert_int_equal(r.out_len, 0);
    assert_true(r.err_len > 0);
    for (; needles && *needles; needles++)
        if (strstr(r.err, *needles) == NULL)
            fail_msg("error \"%s\" does not mention \"%s\"", r.err, *needles);
    done(&r);
}

static void assert_ipv4(const struct sockaddr_storage *ss, const char *ip, int port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    struct in_addr want;

    assert_int_equal(ss->ss_family, AF_INET);
    assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
    assert_int_equal(sin->sin_addr.s_addr, want.s_addr);
    assert_int_equal(ntohs(sin->sin_port), port);
}

static void assert_ipv6(const struct sockaddr_storage *ss, const char *ip, int port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    struct in6_addr want;

    assert_int_equal(ss->ss_family, AF_INET6);
    assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
    assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
    assert_int_equal(ntohs(sin6->sin6_port), port);
}

static int node_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_NODE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- gw_parse_duration_ms ---------------------------------------------------------------- */

static uint64_t duration(const char *s)
{
    uint64_t ms = 0xdeadbeef;
    if (gw_parse_duration_ms(s, &ms) != 0)
        fail_msg("\"%s\" refused", s);
    return ms;
}

static void expect_duration_refused(const char *s)
{
    uint64_t ms = 0xdeadbeef;
    int rc = gw_parse_duration_ms(s, &ms);

    if (rc != CHAT_EINVAL)
        fail_msg("\"%s\": got %d (%llu ms), want CHAT_EINVAL", s, rc, (unsigned long long)ms);
    assert_true(ms == 0xdeadbeef); /* untouched on failure */
}

static void test_duration_units(void **state)
{
    assert_true(duration("500ms") == 500);
    assert_true(duration("25s") == 25000);
    assert_true(duration("2m") == 120000);
    assert_true(duration("1h") == 3600000);
}

static void test_duration_plain_seconds(void **state)
{
    assert_true(duration("3") == 3000);
    assert_true(duration("0") == 0);
    assert_true(duration("60") == 60000);
}

static void test_duration_fractions(void **state)
{
    assert_true(duration("1.5s") == 1500);
    assert_true(duration("1.5") == 1500);
    assert_true(duration("0.5m") == 30000);
    assert_true(duration("0ms") == 0);
}

static void test_duration_refusals(void **state)
{
    expect_duration_refused("");
    expect_duration_refused("s");
    expect_duration_refused("ms");
    expect_duration_refused("-1");
    expect_duration_refused("-1s");
    expect_duration_refused("5x");
    expect_duration_refused("5 s");
    expect_duration_refused(" 5s");
    expect_duration_refused("5s ");
    expect_duration_refused("5sec");
    expect_duration_refused("5S");
    expect_duration_refused(".5s");
    expect_duration_refused("abc");
}

/* config.h's grammar is digits with an optional unit (the help says "500ms, 25s, 2m, 1h or
 * plain seconds"); strtod's extras (exponents, hex) are not part of it. */
static void test_duration_refuses_exponent(void **state)
{
    expect_duration_refused("1e3");
}

static void test_duration_refuses_hex(void **state)
{
    expect_duration_refused("0x10");
}

static void test_duration_refuses_null(void **state)
{
    uint64_t ms = 0xdeadbeef;
    assert_int_equal(gw_parse_duration_ms(NULL, &ms), CHAT_EINVAL);
}

/* ---- defaults ---------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    run_t r;

    load_ok(&r, NOARGS, ARGS("PATH=/usr/bin", "HOME=/root"));
    assert_string_equal(r.cfg.listen, "0.0.0.0:8080");
    assert_ipv4(&r.cfg.listen_addr, "0.0.0.0", 8080);
    assert_true(r.cfg.max_rooms_per_conn == 128);
    assert_true(r.cfg.max_text_bytes == 4096);
    assert_int_equal(r.cfg.room_events, 1);
    assert_non_null(r.cfg.node_id);
    assert_true(node_id_ok(r.cfg.node_id));
    done(&r);
}

static void test_defaults_with_empty_env(void **state)
{
    run_t r;

    load_ok(&r, NOARGS, NOENV);
    assert_string_equal(r.cfg.listen, "0.0.0.0:8080");
    assert_true(r.cfg.max_rooms_per_conn == 128);
    done(&r);
}

/* ---- environment ------------------------------------------------------------------------- */

static void test_env_overrides_default(void **state)
{
    run_t r;

    load_ok(&r, NOARGS,
            ARGS("CHAT_LISTEN=127.0.0.1:9000", "CHAT_NODE_ID=env-node", "CHAT_MAX_ROOMS_PER_CONN=5",
                 "CHAT_MAX_TEXT_BYTES=100", "CHAT_ROOM_EVENTS=false"));
    assert_string_equal(r.cfg.listen, "127.0.0.1:9000");
    assert_ipv4(&r.cfg.listen_addr, "127.0.0.1", 9000);
    assert_string_equal(r.cfg.node_id, "env-node");
    assert_true(r.cfg.max_rooms_per_conn == 5);
    assert_true(r.cfg.max_text_bytes == 100);
    assert_int_equal(r.cfg.room_events, 0);
    done(&r);
}

static void test_env_room_events_zero(void **state)
{
    run_t r;

    load_ok(&r, NOARGS, ARGS("CHAT_ROOM_EVENTS=0"));
    assert_int_equal(r.cfg.room_events, 0);
    done(&r);
    load_ok(&r, NOARGS, ARGS("CHAT_ROOM_EVENTS=1"));
    assert_int_equal(r.cfg.room_events, 1);
    done(&r);
    load_ok(&r, NOARGS, ARGS("CHAT_ROOM_EVENTS=true"));
    assert_int_equal(r.cfg.room_events, 1);
    done(&r);
}

static void test_env_similar_names_ignored(void **state)
{
    run_t r;

    load_ok(&r, NOARGS,
            ARGS("CHAT_LISTENX=bad", "CHAT_LISTEN_EXTRA=bad", "chat_listen=bad", "XCHAT_LISTEN=bad",
                 "CHAT_MAX_ROOMS=0", "CHAT_LISTEN"));
    assert_string_equal(r.cfg.listen, "0.0.0.0:8080");
    assert_true(r.cfg.max_rooms_per_conn == 128);
    done(&r);
}

static void test_env_invalid_value_is_bad(void **state)
{
    expect_bad(NOARGS, ARGS("CHAT_MAX_TEXT_BYTES=0"),
               ARGS("CHAT_MAX_TEXT_BYTES", "--max-text-bytes", "'0'"));
    expect_bad(NOARGS, ARGS("CHAT_ROOM_EVENTS=yes"), ARGS("CHAT_ROOM_EVENTS", "'yes'"));
    expect_bad(NOARGS, ARGS("CHAT_LISTEN=nohost"), ARGS("CHAT_LISTEN", "'nohost'"));
    expect_bad(NOARGS, ARGS("CHAT_NODE_ID=a b"), ARGS("CHAT_NODE_ID", "'a b'"));
}

/* ---- flags ------------------------------------------------------------------------------- */

static void test_flag_overrides_env(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--max-rooms-per-conn", "7", "--listen=127.0.0.1:1", "--node-id", "flag-node"),
            ARGS("CHAT_MAX_ROOMS_PER_CONN=5", "CHAT_LISTEN=127.0.0.1:9000", "CHAT_NODE_ID=env"));
    assert_true(r.cfg.max_rooms_per_conn == 7);
    assert_string_equal(r.cfg.listen, "127.0.0.1:1");
    assert_ipv4(&r.cfg.listen_addr, "127.0.0.1", 1);
    assert_string_equal(r.cfg.node_id, "flag-node");
    done(&r);
}

static void test_flag_equals_form(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--max-rooms-per-conn=9", "--max-text-bytes=10", "--node-id=n.1"), NOENV);
    assert_true(r.cfg.max_rooms_per_conn == 9);
    assert_true(r.cfg.max_text_bytes == 10);
    assert_string_equal(r.cfg.node_id, "n.1");
    done(&r);
}

static void test_flag_separate_value_form(void **state)
{
    run_t r;

    load_ok(&r,
            ARGS("--max-rooms-per-conn", "9", "--max-text-bytes", "10", "--listen", "127.0.0.1:80"),
            NOENV);
    assert_true(r.cfg.max_rooms_per_conn == 9);
    assert_true(r.cfg.max_text_bytes == 10);
    assert_string_equal(r.cfg.listen, "127.0.0.1:80");
    done(&r);
}

static void test_last_flag_wins(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--node-id=a", "--node-id", "b", "--max-text-bytes=1", "--max-text-bytes=2"),
            NOENV);
    assert_string_equal(r.cfg.node_id, "b");
    assert_true(r.cfg.max_text_bytes == 2);
    done(&r);
}

static void test_uint_limits(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--max-rooms-per-conn=1", "--max-text-bytes=1"), NOENV);
    assert_true(r.cfg.max_rooms_per_conn == 1);
    assert_true(r.cfg.max_text_bytes == 1);
    done(&r);
    load_ok(&r, ARGS("--max-rooms-per-conn=1000000", "--max-text-bytes=1048576"), NOENV);
    assert_true(r.cfg.max_rooms_per_conn == 1000000);
    assert_true(r.cfg.max_text_bytes == 1048576);
    done(&r);
}

/* ---- booleans ---------------------------------------------------------------------------- */

static void test_bool_flag_alone_is_true(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--room-events"), ARGS("CHAT_ROOM_EVENTS=0"));
    assert_int_equal(r.cfg.room_events, 1);
    done(&r);
}

static void test_bool_flag_alone_does_not_take_next_arg(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--room-events", "--max-text-bytes=5"), ARGS("CHAT_ROOM_EVENTS=0"));
    assert_int_equal(r.cfg.room_events, 1);
    assert_true(r.cfg.max_text_bytes == 5);
    done(&r);
}

static void test_bool_flag_values(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--room-events=false"), NOENV);
    assert_int_equal(r.cfg.room_events, 0);
    done(&r);
    load_ok(&r, ARGS("--room-events=0"), NOENV);
    assert_int_equal(r.cfg.room_events, 0);
    done(&r);
    load_ok(&r, ARGS("--room-events=true"), ARGS("CHAT_ROOM_EVENTS=false"));
    assert_int_equal(r.cfg.room_events, 1);
    done(&r);
    load_ok(&r, ARGS("--room-events=1"), ARGS("CHAT_ROOM_EVENTS=0"));
    assert_int_equal(r.cfg.room_events, 1);
    done(&r);
}

static void test_bool_flag_bad_value(void **state)
{
    expect_bad(ARGS("--room-events=yes"), NOENV, ARGS("--room-events", "'yes'"));
    expect_bad(ARGS("--room-events="), NOENV, ARGS("--room-events"));
    expect_bad(ARGS("--room-events=TRUE"), NOENV, ARGS("--room-events"));
}

/* ---- refusals ---------------------------------------------------------------------------- */

static void test_max_rooms_zero_is_bad(void **state)
{
    expect_bad(ARGS("--max-rooms-per-conn", "0"), NOENV, ARGS("--max-rooms-per-conn", "'0'"));
    expect_bad(ARGS("--max-rooms-per-conn=0"), NOENV, ARGS("--max-rooms-per-conn"));
}

static void test_uint_invalid_values_are_bad(void **state)
{
    static const char *const bad[] = {
        "abc", "-5", "+5", "5x", "", " 5", "5 ", "1.0", "1000001", "18446744073709551616", "0x10"};
    char arg[64];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(arg, sizeof(arg), "--max-rooms-per-conn=%s", bad[i]);
        expect_bad(ARGS(arg), NOENV, ARGS("--max-rooms-per-conn"));
    }
    expect_bad(ARGS("--max-text-bytes=1048577"), NOENV, ARGS("--max-text-bytes", "'1048577'"));
    expect_bad(ARGS("--max-text-bytes", "0"), NOENV, ARGS("--max-text-bytes"));
}

static void test_unknown_options_are_bad(void **state)
{
    expect_bad(ARGS("--bogus"), NOENV, ARGS("--bogus"));
    expect_bad(ARGS("--bogus=1"), NOENV, ARGS("--bogus=1"));
    expect_bad(ARGS("-x"), NOENV, ARGS("-x"));
    expect_bad(ARGS("positional"), NOENV, ARGS("positional"));
    expect_bad(ARGS("--max-rooms", "5"), NOENV, ARGS("--max-rooms"));
    expect_bad(ARGS("--listen-addr=1.2.3.4:5"), NOENV, ARGS("--listen-addr"));
    expect_bad(ARGS("--LISTEN=1.2.3.4:5"), NOENV, ARGS("--LISTEN"));
    expect_bad(ARGS("-"), NOENV, NULL);
    expect_bad(ARGS("--"), NOENV, NULL);
    expect_bad(ARGS(""), NOENV, NULL);
}

static void test_unknown_option_after_good_ones_is_bad(void **state)
{
    expect_bad(ARGS("--max-text-bytes=5", "--nope"), NOENV, ARGS("--nope"));
}

static void test_missing_value_is_bad(void **state)
{
    expect_bad(ARGS("--listen"), NOENV, ARGS("--listen"));
    expect_bad(ARGS("--max-rooms-per-conn"), NOENV, ARGS("--max-rooms-per-conn"));
    expect_bad(ARGS("--max-text-bytes=5", "--node-id"), NOENV, ARGS("--node-id"));
}

static void test_bad_result_can_be_disposed(void **state)
{
    run_t r;

    /* Strings set before the failure must be released by gw_config_dispose (ASan leak check). */
    load(&r, ARGS("--node-id=first", "--listen=127.0.0.1:5", "--max-text-bytes=0"),
         ARGS("CHAT_NODE_ID=env"));
    assert_int_equal(r.rc, GW_CONFIG_EXIT_BAD);
    done(&r);
    gw_config_dispose(&r.cfg); /* twice is harmless */
}

/* ---- --help and --version ---------------------------------------------------------------- */

static void check_help_text(const char *text)
{
    static const struct {
        const char *flag, *env, *def;
    } opts[] = {
        {"--listen", "CHAT_LISTEN", "0.0.0.0:8080"},
        {"--node-id", "CHAT_NODE_ID", "host name"},
        {"--max-rooms-per-conn", "CHAT_MAX_ROOMS_PER_CONN", "128"},
        {"--max-text-bytes", "CHAT_MAX_TEXT_BYTES", "4096"},
        {"--room-events", "CHAT_ROOM_EVENTS", "true"},
    };

    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        /* The option's own block: from its flag to the next option's flag line. */
        char flag[64];
        snprintf(flag, sizeof(flag), "%s ", opts[i].flag);
        const char *start = strstr(text, flag);
        if (start == NULL) {
            fail_msg("help does not list %s", opts[i].flag);
            return;
        }
        const char *end = strstr(start + 1, "\n  -");
        size_t len = end ? (size_t)(end - start) : strlen(start);
        char *block = strndup(start, len);
        assert_non_null(block);
        if (strstr(block, opts[i].env) == NULL)
            fail_msg("help for %s does not name %s", opts[i].flag, opts[i].env);
        if (strstr(block, opts[i].def) == NULL)
            fail_msg("help for %s does not give its default %s", opts[i].flag, opts[i].def);
        free(block);
    }
    assert_non_null(strstr(text, "--help"));
    assert_non_null(strstr(text, "--version"));
}

static void test_help_lists_every_option(void **state)
{
    run_t r;

    load(&r, ARGS("--help"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_OK);
    assert_int_equal(r.err_len, 0);
    assert_true(r.out_len > 0);
    check_help_text(r.out);
    done(&r);
}

static void test_short_help(void **state)
{
    run_t r;

    load(&r, ARGS("-h"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_OK);
    check_help_text(r.out);
    done(&r);
}

static void test_help_after_other_flags(void **state)
{
    run_t r;

    load(&r, ARGS("--max-text-bytes=5", "--help"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_OK);
    check_help_text(r.out);
    done(&r);
}

static void test_version(void **state)
{
    run_t r;

    load(&r, ARGS("--version"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_OK);
    assert_int_equal(r.err_len, 0);
    assert_non_null(strstr(r.out, CHAT_VERSION));
    assert_non_null(strstr(r.out, "chat-gateway"));
    done(&r);
    load(&r, ARGS("-V"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_OK);
    assert_non_null(strstr(r.out, CHAT_VERSION));
    done(&r);
}

/* ---- --listen ---------------------------------------------------------------------------- */

static void test_listen_ipv4_port_zero(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--listen", "127.0.0.1:0"), NOENV);
    assert_string_equal(r.cfg.listen, "127.0.0.1:0");
    assert_ipv4(&r.cfg.listen_addr, "127.0.0.1", 0);
    done(&r);
}

static void test_listen_ipv6(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--listen=[::1]:80"), NOENV);
    assert_string_equal(r.cfg.listen, "[::1]:80");
    assert_ipv6(&r.cfg.listen_addr, "::1", 80);
    done(&r);
    load_ok(&r, ARGS("--listen=[::]:65535"), NOENV);
    assert_ipv6(&r.cfg.listen_addr, "::", 65535);
    done(&r);
}

static void test_listen_localhost(void **state)
{
    run_t r;

    load_ok(&r, ARGS("--listen", "localhost:9"), NOENV);
    assert_string_equal(r.cfg.listen, "localhost:9"); /* as given */
    assert_ipv4(&r.cfg.listen_addr, "127.0.0.1", 9);
    done(&r);
}

static void test_listen_bad_forms(void **state)
{
    static const char *const bad[] = {
        "nohost",         "1.2.3.4:99999",
        "1.2.3.4:",       ":80",
        "1.2.3.4:-1",     "1.2.3.4:80x",
        "256.1.1.1:80",   "1.2.3:80",
        "example.com:80", "[::1]",
        "[::1]:",         "[nope]:80",
        "1.2.3.4:65536",  "",
        "[]:80",          "1.2.3.4:+80",
        "1.2.3.4: 80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char arg[128];
        snprintf(arg, sizeof(arg), "--listen=%s", bad[i]);
        expect_bad(ARGS(arg), NOENV, ARGS("--listen", "CHAT_LISTEN"));
    }
}

static void test_listen_too_long_host_is_bad(void **state)
{
    char arg[256];

    memset(arg, '1', sizeof(arg));
    memcpy(arg, "--listen=", 9);
    memcpy(arg + sizeof(arg) - 4, ":80", 4);
    expect_bad(ARGS(arg), NOENV, ARGS("--listen"));
}

static void test_listen_bad_keeps_message_naming_value(void **state)
{
    expect_bad(ARGS("--listen", "1.2.3.4:99999"), NOENV, ARGS("'1.2.3.4:99999'", "--listen"));
}

/* ---- node id ----------------------------------------------------------------------------- */

static void test_node_id_valid_forms(void **state)
{
    run_t r;
    char id[GW_NODE_ID_MAX + 1];
    char arg[GW_NODE_ID_MAX + 16];

    load_ok(&r, ARGS("--node-id", "Node_1.eu-west"), NOENV);
    assert_string_equal(r.cfg.node_id, "Node_1.eu-west");
    done(&r);

    memset(id, 'n', GW_NODE_ID_MAX);
    id[GW_NODE_ID_MAX] = '\0';
    snprintf(arg, sizeof(arg), "--node-id=%s", id);
    load_ok(&r, ARGS(arg), NOENV);
    assert_string_equal(r.cfg.node_id, id);
    done(&r);
}

static void test_node_id_invalid_forms(void **state)
{
    static const char *const bad[] = {"",    "a b", "a/b", "a:b", "a@b", "caf\xC3\xA9",
                                      "a%b", "a!",  "\t"};
    char arg[GW_NODE_ID_MAX + 16];
    char id[GW_NODE_ID_MAX + 2];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(arg, sizeof(arg), "--node-id=%s", bad[i]);
        expect_bad(ARGS(arg), NOENV, ARGS("--node-id", "CHAT_NODE_ID"));
    }
    memset(id, 'n', GW_NODE_ID_MAX + 1);
    id[GW_NODE_ID_MAX + 1] = '\0';
    snprintf(arg, sizeof(arg), "--node-id=%s", id);
    expect_bad(ARGS(arg), NOENV, ARGS("--node-id"));
}

/* ---- connection safety options ------------------------------------------------------------ */

static int origin_ok(run_t *r, const char *origin)
{
    return gw_config_origin_allowed(&r->cfg, origin, strlen(origin));
}

static void test_origins_empty_allows_any(void **state)
{
    run_t r;
    load(&r, NOARGS, NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    assert_true(origin_ok(&r, "https://evil.example"));
    done(&r);
}

static void test_origins_exact_and_wildcard(void **state)
{
    run_t r;
    load(&r, ARGS("--allowed-origins", "https://chat.example.com, https://*.example.org,"
                                       "http://localhost:8080"),
         NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    assert_true(origin_ok(&r, "https://chat.example.com"));
    assert_true(origin_ok(&r, "HTTPS://Chat.Example.COM"));        /* case-insensitive */
    assert_false(origin_ok(&r, "http://chat.example.com"));        /* scheme differs */
    assert_false(origin_ok(&r, "https://chat.example.com:8443"));  /* port differs */
    assert_false(origin_ok(&r, "https://chat.example.com.evil.io"));
    assert_true(origin_ok(&r, "https://a.example.org"));
    assert_true(origin_ok(&r, "https://a.b.c.example.org"));       /* any depth */
    assert_false(origin_ok(&r, "https://example.org"));            /* not the domain itself */
    assert_false(origin_ok(&r, "https://evilexample.org"));
    assert_false(origin_ok(&r, "https://a.example.org:444"));
    assert_true(origin_ok(&r, "http://localhost:8080"));
    assert_false(origin_ok(&r, "http://localhost"));
    assert_false(origin_ok(&r, "null"));
    done(&r);
}

static void test_origins_invalid_refused(void **state)
{
    static const char *const bad[] = {"chat.example.com", "https://", "://x", "https://a/b",
                                      "ht tps://x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_t r;
        load(&r, ARGS("--allowed-origins", bad[i]), NOENV);
        assert_int_equal(r.rc, GW_CONFIG_EXIT_BAD);
        assert_non_null(strstr(r.err, "--allowed-origins"));
        done(&r);
    }
}

static void test_safety_defaults(void **state)
{
    run_t r;
    load(&r, NOARGS, NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    assert_int_equal(r.cfg.max_header_bytes, 8192);
    assert_int_equal(r.cfg.handshake_timeout_ms, 10000);
    assert_int_equal(r.cfg.max_connections, 0);
    assert_int_equal(r.cfg.max_message_bytes, 65536);
    assert_int_equal(r.cfg.ping_interval_ms, 25000);
    assert_int_equal(r.cfg.pong_timeout_ms, 10000);
    assert_int_equal(r.cfg.idle_timeout_ms, 0);
    assert_int_equal(r.cfg.rate_limit, 20);
    assert_int_equal(r.cfg.rate_burst, 40);
    assert_int_equal(r.cfg.user_rate_limit, 50);
    assert_int_equal(r.cfg.user_rate_burst, 100);
    assert_int_equal(r.cfg.send_queue_bytes, 1048576);
    assert_int_equal(r.cfg.write_timeout_ms, 30000);
    done(&r);
}

static void test_pong_timeout_must_be_shorter_than_ping_interval(void **state)
{
    run_t r;
    load(&r, ARGS("--ping-interval", "5s", "--pong-timeout", "5s"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_BAD);
    assert_non_null(strstr(r.err, "--pong-timeout"));
    assert_non_null(strstr(r.err, "--ping-interval"));
    done(&r);
    load(&r, ARGS("--ping-interval", "5s", "--pong-timeout", "4999ms"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    done(&r);
    load(&r, ARGS("--pong-timeout", "30s"), NOENV); /* against the default 25s interval */
    assert_int_equal(r.rc, GW_CONFIG_EXIT_BAD);
    done(&r);
}

static void test_trusted_proxies(void **state)
{
    run_t r;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    load(&r, ARGS("--trusted-proxies", "10.0.0.0/8,192.168.1.7,::1/128"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    uv_ip4_addr("10.20.30.40", 0, &a4);
    assert_true(gw_config_trusted_proxy(&r.cfg, (struct sockaddr *)&a4));
    uv_ip4_addr("11.0.0.1", 0, &a4);
    assert_false(gw_config_trusted_proxy(&r.cfg, (struct sockaddr *)&a4));
    uv_ip4_addr("192.168.1.7", 0, &a4);
    assert_true(gw_config_trusted_proxy(&r.cfg, (struct sockaddr *)&a4));
    uv_ip4_addr("192.168.1.8", 0, &a4);
    assert_false(gw_config_trusted_proxy(&r.cfg, (struct sockaddr *)&a4));
    uv_ip6_addr("::1", 0, &a6);
    assert_true(gw_config_trusted_proxy(&r.cfg, (struct sockaddr *)&a6));
    uv_ip6_addr("::ffff:10.1.1.1", 0, &a6); /* IPv4-mapped matches the IPv4 range */
    assert_true(gw_config_trusted_proxy(&r.cfg, (struct sockaddr *)&a6));
    done(&r);
    load(&r, ARGS("--trusted-proxies", "10.0.0.0/33"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_BAD);
    done(&r);
}

/* ---- operability options ------------------------------------------------------------------ */

static void test_operability_defaults(void **state)
{
    run_t r;
    load(&r, NOARGS, NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    assert_string_equal(r.cfg.admin_listen, "127.0.0.1:9090");
    assert_int_equal(r.cfg.admin_max_connections, 16);
    assert_string_equal(r.cfg.log_format, "auto");
    assert_string_equal(r.cfg.log_level, "info");
    assert_true(r.cfg.log_sample_messages > 0.0099 && r.cfg.log_sample_messages < 0.0101);
    assert_int_equal(r.cfg.log_message_text, 0);
    assert_int_equal(r.cfg.drain_delay_ms, 5000);
    assert_int_equal(r.cfg.drain_timeout_ms, 20000);
    assert_int_equal(r.cfg.metrics_top_rooms, 50);
    done(&r);
}

static void test_operability_values(void **state)
{
    run_t r;
    load(&r, ARGS("--admin-listen=", "--log-format", "text", "--log-sample-messages", "1",
                  "--log-level=debug"),
         ARGS("CHAT_LOG_SAMPLE_MESSAGES=0.5"));
    assert_int_equal(r.rc, GW_CONFIG_OK);
    assert_string_equal(r.cfg.admin_listen, "");
    assert_string_equal(r.cfg.log_format, "text");
    assert_string_equal(r.cfg.log_level, "debug");
    assert_true(r.cfg.log_sample_messages == 1.0);
    done(&r);
}

static void test_admin_max_connections(void **state)
{
    run_t r;
    load(&r, ARGS("--admin-max-connections", "2"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    assert_int_equal(r.cfg.admin_max_connections, 2);
    done(&r);
    load(&r, NOARGS, ARGS("CHAT_ADMIN_MAX_CONNECTIONS=10000"));
    assert_int_equal(r.rc, GW_CONFIG_OK);
    assert_int_equal(r.cfg.admin_max_connections, 10000);
    done(&r);
    load(&r, ARGS("--admin-max-connections=3"), ARGS("CHAT_ADMIN_MAX_CONNECTIONS=7"));
    assert_int_equal(r.cfg.admin_max_connections, 3); /* the flag wins */
    done(&r);
    static const char *const bad[] = {"0", "10001", "-1", "x", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        load(&r, ARGS("--admin-max-connections", bad[i]), NOENV);
        if (r.rc != GW_CONFIG_EXIT_BAD)
            fail_msg("--admin-max-connections '%s' accepted", bad[i]);
        assert_non_null(strstr(r.err, "--admin-max-connections"));
        assert_non_null(strstr(r.err, "CHAT_ADMIN_MAX_CONNECTIONS"));
        assert_non_null(strstr(r.err, "from 1 to 10000"));
        done(&r);
    }
}

static void test_operability_refusals(void **state)
{
    static const char *const bad[][2] = {
        {"--log-format", "yaml"},      {"--log-level", "verbose"},
        {"--log-sample-messages", "2"}, {"--log-sample-messages", "-0.1"},
        {"--log-sample-messages", "x"}, {"--admin-listen", "nohost"},
        {"--drain-timeout", "0"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_t r;
        load(&r, ARGS(bad[i][0], bad[i][1]), NOENV);
        if (r.rc != GW_CONFIG_EXIT_BAD)
            fail_msg("%s %s accepted", bad[i][0], bad[i][1]);
        assert_non_null(strstr(r.err, bad[i][0]));
        done(&r);
    }
}

static void test_drain_delay_must_be_shorter_than_timeout(void **state)
{
    run_t r;
    load(&r, ARGS("--drain-delay", "20s"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_EXIT_BAD);
    assert_non_null(strstr(r.err, "--drain-delay"));
    done(&r);
    load(&r, ARGS("--drain-delay", "0", "--drain-timeout", "1s"), NOENV);
    assert_int_equal(r.rc, GW_CONFIG_OK);
    done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_plain_seconds),
        cmocka_unit_test(test_duration_fractions),
        cmocka_unit_test(test_duration_refusals),
        cmocka_unit_test(test_duration_refuses_exponent),
        cmocka_unit_test(test_duration_refuses_hex),
        cmocka_unit_test(test_duration_refuses_null),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_with_empty_env),
        cmocka_unit_test(test_env_overrides_default),
        cmocka_unit_test(test_env_room_events_zero),
        cmocka_unit_test(test_env_similar_names_ignored),
        cmocka_unit_test(test_env_invalid_value_is_bad),
        cmocka_unit_test(test_flag_overrides_env),
        cmocka_unit_test(test_flag_equals_form),
        cmocka_unit_test(test_flag_separate_value_form),
        cmocka_unit_test(test_last_flag_wins),
        cmocka_unit_test(test_uint_limits),
        cmocka_unit_test(test_bool_flag_alone_is_true),
        cmocka_unit_test(test_bool_flag_alone_does_not_take_next_arg),
        cmocka_unit_test(test_bool_flag_values),
        cmocka_unit_test(test_bool_flag_bad_value),
        cmocka_unit_test(test_max_rooms_zero_is_bad),
        cmocka_unit_test(test_uint_invalid_values_are_bad),
        cmocka_unit_test(test_unknown_options_are_bad),
        cmocka_unit_test(test_unknown_option_after_good_ones_is_bad),
        cmocka_unit_test(test_missing_value_is_bad),
        cmocka_unit_test(test_bad_result_can_be_disposed),
        cmocka_unit_test(test_help_lists_every_option),
        cmocka_unit_test(test_short_help),
        cmocka_unit_test(test_help_after_other_flags),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_listen_ipv4_port_zero),
        cmocka_unit_test(test_listen_ipv6),
        cmocka_unit_test(test_listen_localhost),
        cmocka_unit_test(test_listen_bad_forms),
        cmocka_unit_test(test_listen_too_long_host_is_bad),
        cmocka_unit_test(test_listen_bad_keeps_message_naming_value),
        cmocka_unit_test(test_node_id_valid_forms),
        cmocka_unit_test(test_node_id_invalid_forms),
        cmocka_unit_test(test_origins_empty_allows_any),
        cmocka_unit_test(test_origins_exact_and_wildcard),
        cmocka_unit_test(test_origins_invalid_refused),
        cmocka_unit_test(test_safety_defaults),
        cmocka_unit_test(test_pong_timeout_must_be_shorter_than_ping_interval),
        cmocka_unit_test(test_trusted_proxies),
        cmocka_unit_test(test_operability_defaults),
        cmocka_unit_test(test_operability_values),
        cmocka_unit_test(test_admin_max_connections),
        cmocka_unit_test(test_operability_refusals),
        cmocka_unit_test(test_drain_delay_must_be_shorter_than_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
