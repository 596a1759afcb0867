/* tests/unit/test_names.c - common/names.c: room names are 1..64 bytes of A-Z a-z 0-9 . _ - : @.
 * Every one of the 256 byte values is tried alone and inside an otherwise valid name; the length
 * limits; and each forbidden class (space, '/', '%', '!', non-ASCII, NUL) explicitly. History
 * epochs (chat_epoch_valid) the same way: 1..32 bytes of A-Z a-z 0-9 _ -, so the room characters
 * . : @ are not epoch characters. Inputs live in exact-size heap blocks so ASan catches any read
 * past the name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "names.h"
#include "str.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static int valid_n(const char *p, size_t n)
{
    char *copy = malloc(n ? n : 1);
    int r;

    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    r = chat_room_name_valid(chat_str(copy, n));
    free(copy);
    return r;
}

static int valid(const char *s)
{
    return valid_n(s, strlen(s));
}

static int epoch_valid_n(const char *p, size_t n)
{
    char *copy = malloc(n ? n : 1);
    int r;

    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    r = chat_epoch_valid(chat_str(copy, n));
    free(copy);
    return r;
}

static int epoch_allowed(unsigned c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static int allowed(unsigned c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == ':' || c == '@';
}

/* ---- allowed characters ------------------------------------------------------------------ */

static void test_every_allowed_char_alone(void **state)
{
    static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:@";

    for (size_t i = 0; i < sizeof(set) - 1; i++)
        if (!valid_n(&set[i], 1))
            fail_msg("'%c' refused", set[i]);
}

static void test_all_allowed_chars_together(void **state)
{
    assert_int_equal(valid("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 1);
    assert_int_equal(valid("abcdefghijklmnopqrstuvwxyz"), 1);
    assert_int_equal(valid("0123456789._-:@"), 1);
    assert_int_equal(valid("team:general@eu-1.prod_v2"), 1);
}

static void test_every_byte_value_alone(void **state)
{
    for (unsigned c = 0; c < 256; c++) {
        char b = (char)c;
        if (valid_n(&b, 1) != allowed(c))
            fail_msg("byte 0x%02X: got %d, want %d", c, !allowed(c), allowed(c));
    }
}

static void test_every_byte_value_inside_a_name(void **state)
{
    for (unsigned c = 0; c < 256; c++) {
        char name[5] = {'a', 'b', (char)c, 'c', 'd'};
        if (valid_n(name, 5) != allowed(c))
            fail_msg("byte 0x%02X in the middle: wrong verdict", c);
        name[0] = (char)c;
        name[2] = 'x';
        if (valid_n(name, 5) != allowed(c))
            fail_msg("byte 0x%02X first: wrong verdict", c);
        name[0] = 'a';
        name[4] = (char)c;
        if (valid_n(name, 5) != allowed(c))
            fail_msg("byte 0x%02X last: wrong verdict", c);
    }
}

/* ---- length ------------------------------------------------------------------------------ */

static void test_length_64_ok_65_refused(void **state)
{
    char name[CHAT_ROOM_NAME_MAX + 1];

    assert_int_equal(CHAT_ROOM_NAME_MAX, 64);
    memset(name, 'r', sizeof(name));
    assert_int_equal(valid_n(name, 64), 1);
    assert_int_equal(valid_n(name, 65), 0);
    assert_int_equal(valid_n(name, 1), 1);
    assert_int_equal(valid_n(name, 63), 1);
}

static void test_much_longer_name_refused(void **state)
{
    char name[4096];

    memset(name, 'r', sizeof(name));
    assert_int_equal(valid_n(name, sizeof(name)), 0);
}

static void test_empty_refused(void **state)
{
    assert_int_equal(valid_n("", 0), 0);
    assert_int_equal(chat_room_name_valid(CHAT_LIT("")), 0);
}

static void test_null_refused(void **state)
{
    assert_int_equal(chat_room_name_valid(CHAT_STR_NULL), 0);
    assert_int_equal(chat_room_name_valid(chat_str(NULL, 5)), 0);
}

static void test_length_not_nul_decides(void **state)
{
    /* The view's length bounds the name: bytes after it do not matter. */
    assert_int_equal(chat_room_name_valid(chat_str("ok room", 2)), 1);
    assert_int_equal(chat_room_name_valid(chat_str("ok", 1)), 1);
}

/* ---- forbidden classes ------------------------------------------------------------------- */

static void test_space_refused(void **state)
{
    assert_int_equal(valid("a b"), 0);
    assert_int_equal(valid(" a"), 0);
    assert_int_equal(valid("a "), 0);
    assert_int_equal(valid(" "), 0);
    assert_int_equal(valid("a\tb"), 0);
    assert_int_equal(valid("a\nb"), 0);
}

static void test_slash_refused(void **state)
{
    assert_int_equal(valid("a/b"), 0);
    assert_int_equal(valid("/"), 0);
    assert_int_equal(valid("a\\b"), 0);
    assert_int_equal(valid("../etc"), 0);
}

static void test_percent_refused(void **state)
{
    assert_int_equal(valid("a%20b"), 0);
    assert_int_equal(valid("%"), 0);
}

static void test_bang_and_other_punctuation_refused(void **state)
{
    static const char punct[] = "!\"#$%&'()*+,/;<=>?[\\]^`{|}~";

    assert_int_equal(valid("room!"), 0);
    for (size_t i = 0; i < sizeof(punct) - 1; i++) {
        char name[3] = {'a', punct[i], 'b'};
        if (valid_n(name, 3))
            fail_msg("'%c' accepted", punct[i]);
    }
}

static void test_non_ascii_refused(void **state)
{
    assert_int_equal(valid("caf\xC3\xA9"), 0);          /* é in UTF-8 */
    assert_int_equal(valid("\xE2\x82\xAC"), 0);         /* € */
    assert_int_equal(valid("room\xF0\x9F\x98\x80"), 0); /* emoji */
    assert_int_equal(valid("\x80"), 0);
    assert_int_equal(valid("\xFF"), 0);
    assert_int_equal(valid("a\x7F"), 0); /* DEL */
}

static void test_nul_refused(void **state)
{
    assert_int_equal(valid_n("a\0b", 3), 0);
    assert_int_equal(valid_n("\0", 1), 0);
    assert_int_equal(valid_n("ab\0", 3), 0);
}

static void test_control_chars_refused(void **state)
{
    for (unsigned c = 1; c < 0x20; c++) {
        char name[2] = {'a', (char)c};
        assert_int_equal(valid_n(name, 2), 0);
    }
}

/* ---- epochs ------------------------------------------------------------------------------ */

static void test_epoch_every_byte_value(void **state)
{
    char e[3] = {'a', 0, 'b'};
    for (unsigned c = 0; c < 256; c++) {
        char one = (char)c;
        e[1] = (char)c;
        if (epoch_valid_n(&one, 1) != epoch_allowed(c))
            fail_msg("byte 0x%02x alone: wrong verdict", c);
        if (epoch_valid_n(e, 3) != epoch_allowed(c))
            fail_msg("byte 0x%02x inside: wrong verdict", c);
    }
    assert_int_equal(epoch_valid_n("Ep0ch_-", 7), 1);
    /* room characters that are no epoch characters */
    assert_int_equal(epoch_valid_n("a.b", 3), 0);
    assert_int_equal(epoch_valid_n("a:b", 3), 0);
    assert_int_equal(epoch_valid_n("a@b", 3), 0);
}

static void test_epoch_length(void **state)
{
    char e[CHAT_EPOCH_MAX + 1];
    memset(e, 'e', sizeof(e));
    assert_int_equal(CHAT_EPOCH_MAX, 32);
    assert_int_equal(epoch_valid_n(e, CHAT_EPOCH_MAX), 1);
    assert_int_equal(epoch_valid_n(e, CHAT_EPOCH_MAX + 1), 0);
    assert_int_equal(epoch_valid_n(e, 1), 1);
    assert_int_equal(epoch_valid_n(e, 0), 0);
    assert_int_equal(chat_epoch_valid(CHAT_STR_NULL), 0);
    /* the length decides, not a NUL */
    assert_int_equal(epoch_valid_n("ab\0c", 4), 0);
    assert_int_equal(chat_epoch_valid(chat_str("abc", 2)), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allowed_char_alone),
        cmocka_unit_test(test_all_allowed_chars_together),
        cmocka_unit_test(test_every_byte_value_alone),
        cmocka_unit_test(test_every_byte_value_inside_a_name),
        cmocka_unit_test(test_length_64_ok_65_refused),
        cmocka_unit_test(test_much_longer_name_refused),
        cmocka_unit_test(test_empty_refused),
        cmocka_unit_test(test_null_refused),
        cmocka_unit_test(test_length_not_nul_decides),
        cmocka_unit_test(test_space_refused),
        cmocka_unit_test(test_slash_refused),
        cmocka_unit_test(test_percent_refused),
        cmocka_unit_test(test_bang_and_other_punctuation_refused),
        cmocka_unit_test(test_non_ascii_refused),
        cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_control_chars_refused),
        cmocka_unit_test(test_epoch_every_byte_value),
        cmocka_unit_test(test_epoch_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
