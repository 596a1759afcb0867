/* tests/unit/test_log.c - common/log.c: records rendered into a captured stream
 * (chat_log_setup_stream + open_memstream). The text format must give one record per line
 * whatever a value holds, escape every control byte, and read back (the escapes of log.h) to the
 * exact bytes; the JSON format is checked byte for byte against the envelope escaping it always
 * had. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"

/* "2026-12-02T01:29:50.544Z" */
#define TS_LEN 24

/* ---- capture ----------------------------------------------------------------------------- */

typedef struct capture {
    char *p;
    size_t len;
} capture_t;

/* Writes one record with format fmt into a fresh memory stream; returns what was written (the
 * caller frees .p). */
static capture_t render(chat_log_format_t fmt, const char *msg, const chat_log_kv_t *kv, size_t n)
{
    capture_t c = {NULL, 0};
    FILE *f = open_memstream(&c.p, &c.len);

    assert_non_null(f);
    chat_log_setup(fmt, CHAT_LOG_INFO, "n1");
    chat_log_setup_stream(f);
    chat_log_write(CHAT_LOG_INFO, msg, kv, n);
    chat_log_setup_stream(NULL);
    assert_int_equal(fclose(f), 0);
    return c;
}

static void check_ts(const char *p)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

    for (size_t i = 0; i < TS_LEN; i++) {
        if (shape[i] == 'd') {
            if (p[i] < '0' || p[i] > '9')
                fail_msg("ts %.24s: byte %zu is not a digit", p, i);
        } else if (p[i] != shape[i]) {
            fail_msg("ts %.24s: byte %zu is not '%c'", p, i, shape[i]);
        }
    }
}

/* Checks that c is exactly one line (a single '\n', at the end) with no other byte below 0x20
 * and, unless del_ok (JSON keeps DEL as is), no DEL. */
static void check_line(const capture_t *c, const char *what, int del_ok)
{
    if (c->len == 0 || c->p[c->len - 1] != '\n')
        fail_msg("%s: the record does not end with a newline", what);
    for (size_t i = 0; i + 1 < c->len; i++) {
        unsigned char b = (unsigned char)c->p[i];
        if (b < 0x20 || (b == 0x7f && !del_ok))
            fail_msg("%s: raw byte 0x%02x at %zu of the record", what, b, i);
    }
}

static void check_one_line(const capture_t *c, const char *what)
{
    check_line(c, what, 0);
}

/* The text record of one string field "v" holding value (len bytes); returns what follows
 * "<ts> info  m v=" up to the newline (the caller frees it), after checking the prefix and that
 * the record is one line. */
static char *text_value_of(chat_str_t value, const char *what)
{
    static const char head[] = " info  m v=";
    chat_log_kv_t kv[] = {CHAT_KV_S("v", value)};
    capture_t c = render(CHAT_LOG_TEXT, "m", kv, 1);
    char *out;

    check_one_line(&c, what);
    assert_true(c.len > TS_LEN + sizeof(head));
    check_ts(c.p);
    if (memcmp(c.p + TS_LEN, head, sizeof(head) - 1) != 0)
        fail_msg("%s: record %s", what, c.p);
    out = strndup(c.p + TS_LEN + sizeof(head) - 1, c.len - TS_LEN - sizeof(head)); /* no \n */
    assert_non_null(out);
    free(c.p);
    return out;
}

static int hexval(char h)
{
    if (h >= '0' && h <= '9')
        return h - '0';
    if (h >= 'a' && h <= 'f')
        return h - 'a' + 10;
    return -1;
}

/* Reads back a text value written by log.c (bare, or quoted with the six escapes of log.h)
 * into out (at least strlen(s) bytes); returns its length, or -1 (with a message in why) when
 * s is not exactly one well-formed value. */
static long decode_value(const char *s, unsigned char *out, const char **why)
{
    size_t n = strlen(s), o = 0, i = 1;

    if (n == 0 || s[0] != '"') {
        for (size_t k = 0; k < n; k++)
            if (strchr(" =\"\\", s[k]) != NULL || (unsigned char)s[k] < 0x20 || s[k] == 0x7f) {
                *why = "a bare value with a byte that needs quotes";
                return -1;
            }
        memcpy(out, s, n);
        return (long)n;
    }
    for (; i < n && s[i] != '"'; i++) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x20 || b == 0x7f) {
            *why = "a raw control byte inside quotes";
            return -1;
        }
        if (b != '\\') {
            out[o++] = b;
            continue;
        }
        if (++i == n) {
            *why = "a backslash at the end";
            return -1;
        }
        switch (s[i]) {
        case 'n':
            out[o++] = '\n';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case '"':
        case '\\':
            out[o++] = (unsigned char)s[i];
            break;
        case 'x':
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
                *why = "a \\x without two lowercase hex digits";
                return -1;
            }
            out[o++] = (unsigned char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
            break;
        default:
            *why = "an unknown escape";
            return -1;
        }
    }
    if (i != n - 1) {
        *why = "no closing quote, or bytes after it";
        return -1;
    }
    return (long)o;
}

/* value renders to exactly want, and reads back to value. */
static void expect_text(chat_str_t value, const char *want)
{
    char *got = text_value_of(value, want);
    unsigned char back[1024];
    const char *why = NULL;
    long n;

    if (strcmp(got, want) != 0)
        fail_msg("value rendered as [%s], expected [%s]", got, want);
    n = decode_value(got, back, &why);
    if (n < 0)
        fail_msg("[%s] does not read back: %s", got, why);
    if ((size_t)n != value.len || memcmp(back, value.p, value.len) != 0)
        fail_msg("[%s] reads back to other bytes", got);
    free(got);
}

#define EXPECT(lit, want) expect_text(chat_str((lit), sizeof(lit) - 1), (want))

/* ---- the text format --------------------------------------------------------------------- */

static void test_text_exact_renderings(void **state)
{
    EXPECT("plain", "plain");
    EXPECT("guest-t1-3", "guest-t1-3");
    EXPECT("127.0.0.1", "127.0.0.1");
    EXPECT("private:eng-a@b", "private:eng-a@b");
    EXPECT("", "\"\"");
    EXPECT("a b", "\"a b\"");
    EXPECT("a=b", "\"a=b\"");
    EXPECT("=", "\"=\"");
    EXPECT("a\"b", "\"a\\\"b\"");
    EXPECT("a\\b", "\"a\\\\b\"");
    EXPECT("a\\nb", "\"a\\\\nb\""); /* a backslash and an n: not a newline */
    EXPECT("a\nb", "\"a\\nb\"");
    EXPECT("a\tb", "\"a\\tb\"");
    EXPECT("a\rb", "\"a\\rb\"");
    EXPECT("\x1b[31mred", "\"\\x1b[31mred\"");
    EXPECT("a\x7f", "\"a\\x7f\"");
    EXPECT("\x01\x07\x08\x0b\x0c\x1f", "\"\\x01\\x07\\x08\\x0b\\x0c\\x1f\"");
    EXPECT("a\0b", "\"a\\x00b\"");
    /* UTF-8: printable code points stay readable, C1 controls, separators, invalid bytes not */
    EXPECT("h\xc3\xa9llo", "h\xc3\xa9llo");
    EXPECT("\xe2\x82\xac", "\xe2\x82\xac");            /* U+20AC */
    EXPECT("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");    /* U+1F600 */
    EXPECT("\xc2\xa0", "\xc2\xa0");                    /* U+00A0, the first kept */
    EXPECT("\xc2\x9b[2J", "\"\\xc2\\x9b[2J\"");        /* U+009B CSI */
    EXPECT("\xc2\x80", "\"\\xc2\\x80\"");              /* U+0080 */
    EXPECT("a\xe2\x80\xa8z", "\"a\\xe2\\x80\\xa8z\""); /* U+2028 */
    EXPECT("\xe2\x80\xa9", "\"\\xe2\\x80\\xa9\"");     /* U+2029 */
    EXPECT("\x9b[31m", "\"\\x9b[31m\"");               /* a raw 8-bit CSI */
    EXPECT("\xff\xfe", "\"\\xff\\xfe\"");
    EXPECT("\xc0\xaf", "\"\\xc0\\xaf\"");                   /* overlong '/' */
    EXPECT("\xe0\x80\xaf", "\"\\xe0\\x80\\xaf\"");          /* overlong, 3 bytes */
    EXPECT("\xed\xa0\x80", "\"\\xed\\xa0\\x80\"");          /* a surrogate */
    EXPECT("\xf4\x90\x80\x80", "\"\\xf4\\x90\\x80\\x80\""); /* beyond U+10FFFF */
    EXPECT("\xe2\x82", "\"\\xe2\\x82\"");                   /* truncated */
    EXPECT("\xe2\x82x", "\"\\xe2\\x82x\"");                 /* bad continuation */
    EXPECT("\xc3\xa9 \n", "\"\xc3\xa9 \\n\"");
}

/* Every byte value, alone and between two letters: the record stays one line, a control byte
 * (C0, DEL) or a lone byte >= 0x80 is escaped, the value is quoted exactly when it must be, and
 * it reads back. */
static void test_text_every_byte(void **state)
{
    for (int c = 0; c < 256; c++) {
        char in[3] = {'x', (char)c, 'y'};
        char want[16];

        for (int alone = 0; alone < 2; alone++) {
            chat_str_t v = alone ? chat_str(in + 1, 1) : chat_str(in, 3);
            const char *pre = alone ? "" : "x", *post = alone ? "" : "y";
            if (c == '\n' || c == '\t' || c == '\r' || c == '"' || c == '\\')
                snprintf(want, sizeof(want), "\"%s\\%c%s\"", pre,
                         c == '\n'   ? 'n'
                         : c == '\t' ? 't'
                         : c == '\r' ? 'r'
                                     : c,
                         post);
            else if (c < 0x20 || c >= 0x7f)
                snprintf(want, sizeof(want), "\"%s\\x%02x%s\"", pre, c, post);
            else if (c == ' ' || c == '=')
                snprintf(want, sizeof(want), "\"%s%c%s\"", pre, c, post);
            else
                snprintf(want, sizeof(want), "%s%c%s", pre, c, post);
            expect_text(v, want);
        }
    }
}

/* A value that carries a whole fake record (newline, time stamp, level, fields) cannot start a
 * line of its own. */
static void test_text_forged_record(void **state)
{
    static const char forged[] = "alice\n2026-01-01T00:00:00.000Z error token refused "
                                 "user=root level=error msg=\"admin login\"\r\n\x1b[2K";
    chat_log_kv_t kv[] = {CHAT_KV_C("conn", "t1-1"), CHAT_KV_C("user", forged),
                          CHAT_KV_N("code", 1000)};
    capture_t c = render(CHAT_LOG_TEXT, "connection closed", kv, 3);
    static const char want[] =
        " info  connection closed conn=t1-1 user=\"alice\\n2026-01-01T00:00:00.000Z error token "
        "refused user=root level=error msg=\\\"admin login\\\"\\r\\n\\x1b[2K\" code=1000\n";

    check_one_line(&c, "forged");
    check_ts(c.p);
    assert_int_equal(c.len, TS_LEN + sizeof(want) - 1);
    assert_memory_equal(c.p + TS_LEN, want, sizeof(want) - 1);
    free(c.p);
}

/* Pseudo-random values (a fixed LCG, so every run is the same) of every byte: each record is
 * one line and reads back to its value. */
static void test_text_round_trip(void **state)
{
    uint32_t seed = 12345;
    unsigned char v[64], back[1024];

    for (int round = 0; round < 3000; round++) {
        size_t n;
        char *got;
        const char *why = NULL;
        long m;

        seed = seed * 1103515245u + 12345u;
        n = (seed >> 16) % sizeof(v);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            /* half the bytes from a small set of troublemakers, half anything */
            v[i] =
                (seed >> 24) & 1
                    ? (unsigned char)(seed >> 16)
                    : (unsigned char)"\n\t\r\x1b\x7f\"\\= a\xc2\x9b\xe2\x80\xa8"[(seed >> 16) % 15];
        }
        got = text_value_of(chat_str((const char *)v, n), "random value");
        m = decode_value(got, back, &why);
        if (m < 0)
            fail_msg("round %d: [%s] does not read back: %s", round, got, why);
        if ((size_t)m != n || memcmp(back, v, n) != 0)
            fail_msg("round %d: [%s] reads back to other bytes", round, got);
        free(got);
    }
}

static void test_text_keys_msg_numbers(void **state)
{
    chat_log_kv_t kv[] = {CHAT_KV_C("bad key=x\n", "v"),
                          CHAT_KV_C("", "e"),
                          CHAT_KV_N("n", -42),
                          CHAT_KV_S(NULL, CHAT_LIT("skipped")),
                          CHAT_KV_S("null", CHAT_STR_NULL),
                          CHAT_KV_C("ok_key.x-1", "w")};
    capture_t c = render(CHAT_LOG_TEXT, "a msg\nwith\x1b a newline", kv, 6);
    static const char want[] = " info  a msg\\x0awith\\x1b a newline bad_key_x_=v _=e n=-42 "
                               "null=\"\" ok_key.x-1=w\n";

    check_one_line(&c, "keys");
    assert_int_equal(c.len, TS_LEN + sizeof(want) - 1);
    assert_memory_equal(c.p + TS_LEN, want, sizeof(want) - 1);
    free(c.p);
}

/* ---- the JSON format (unchanged) --------------------------------------------------------- */

static void test_json_unchanged(void **state)
{
    static const char user[] = "a\nb\t\"q\"\\ \x1b[31m\x7f\x01 h\xc3\xa9 \xe2\x80\xa8=x";
    chat_log_kv_t kv[] = {CHAT_KV_C("conn", "t1-1"), CHAT_KV_C("user", user),
                          CHAT_KV_N("code", 1006), CHAT_KV_S("empty", CHAT_STR_NULL),
                          CHAT_KV_S("nul", chat_str("a\0b", 3))};
    capture_t c = render(CHAT_LOG_JSON, "connection closed", kv, 5);
    static const char head[] = "{\"ts\":\"";
    static const char want[] =
        "\",\"level\":\"info\",\"msg\":\"connection closed\",\"node\":\"n1\",\"conn\":\"t1-1\","
        "\"user\":\"a\\nb\\t\\\"q\\\"\\\\ \\u001b[31m\x7f\\u0001 h\xc3\xa9 \\u2028=x\","
        "\"code\":1006,\"empty\":\"\",\"nul\":\"a\\u0000b\"}\n";

    check_line(&c, "json", 1);
    assert_true(c.len == sizeof(head) - 1 + TS_LEN + sizeof(want) - 1);
    assert_memory_equal(c.p, head, sizeof(head) - 1);
    check_ts(c.p + sizeof(head) - 1);
    assert_memory_equal(c.p + sizeof(head) - 1 + TS_LEN, want, sizeof(want) - 1);
    free(c.p);
}

/* The level filter still applies to a captured stream, and NULL gives stdout back. */
static void test_stream_and_level(void **state)
{
    char *p = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&p, &len);

    assert_non_null(f);
    chat_log_setup(CHAT_LOG_TEXT, CHAT_LOG_WARN, "n1");
    chat_log_setup_stream(f);
    CHAT_LOG(CHAT_LOG_INFO, "filtered", CHAT_KV_C("k", "v"));
    CHAT_LOG0(CHAT_LOG_WARN, "kept");
    assert_int_equal(len, TS_LEN + strlen(" warn  kept\n"));
    assert_memory_equal(p + TS_LEN, " warn  kept\n", strlen(" warn  kept\n"));
    chat_log_setup_stream(NULL);
    CHAT_LOG0(CHAT_LOG_DEBUG, "to stdout, filtered anyway");
    assert_int_equal(fclose(f), 0);
    assert_int_equal(len, TS_LEN + strlen(" warn  kept\n"));
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_exact_renderings), cmocka_unit_test(test_text_every_byte),
        cmocka_unit_test(test_text_forged_record),    cmocka_unit_test(test_text_round_trip),
        cmocka_unit_test(test_text_keys_msg_numbers), cmocka_unit_test(test_json_unchanged),
        cmocka_unit_test(test_stream_and_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
