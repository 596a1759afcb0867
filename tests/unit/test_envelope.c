/* tests/unit/test_envelope.c - unit tests for common/envelope.c: every parse error path, the
 * required/optional fields of each client type, cid echo, ignored client fields, inputs that
 * are not NUL-terminated, and the exact bytes, escaping and cJSON round-trip of each builder.
 * Every parse input is copied into a heap block of exactly n bytes, so ASan catches any read
 * past the payload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "alloc.h"
#include "buf.h"
#include "envelope.h"
#include "err.h"
#include "names.h"
#include "str.h"
#include "wire.h"

/* ---- helpers ----------------------------------------------------------------------------- */

#define assert_chat_str(s, want)                                                                   \
    do {                                                                                           \
        chat_str_t s_ = (s);                                                                       \
        const char *w_ = (want);                                                                   \
        assert_non_null(s_.p);                                                                     \
        assert_int_equal(s_.len, strlen(w_));                                                      \
        if (s_.len > 0)                                                                            \
            assert_memory_equal(s_.p, w_, s_.len);                                                 \
    } while (0)

#define assert_buf_eq(b, want)                                                                     \
    do {                                                                                           \
        const char *w_ = (want);                                                                   \
        assert_int_equal((b)->len, strlen(w_));                                                    \
        assert_memory_equal((b)->p, w_, (b)->len);                                                 \
    } while (0)

/* Parses the first n bytes of p from an exact-size heap copy (no NUL after it). The copy is
 * freed before returning: results must borrow only *doc. */
static int parse_n(const char *p, size_t n, chat_env_in_t *in, cJSON **doc)
{
    char *copy = chat_xcalloc(n ? n : 1, 1);
    int rc;

    if (n > 0)
        memcpy(copy, p, n);
    rc = chat_env_parse(copy, n, in, doc);
    free(copy);
    return rc;
}

static int parse(const char *json, chat_env_in_t *in, cJSON **doc)
{
    return parse_n(json, strlen(json), in, doc);
}

/* Expects rc from json; checks *doc is NULL exactly for CHAT_EBADJSON; frees the tree. */
static void expect_rc(const char *json, int want, chat_env_in_t *in)
{
    cJSON *doc = (cJSON *)1;
    int rc = parse(json, in, &doc);

    assert_int_equal(rc, want);
    if (want == CHAT_EBADJSON)
        assert_null(doc);
    else
        assert_non_null(doc);
    if (want != 0)
        assert_non_null(in->error);
    chat_env_free(doc);
}

static void expect_badreq(const char *json, const char *why)
{
    chat_env_in_t in;

    expect_rc(json, CHAT_EBADREQ, &in);
    assert_string_equal(in.error, why);
}

/* Copies the buffer into a NUL-terminated string and parses it with plain cJSON_Parse. */
static cJSON *cjson_of(const chat_buf_t *b)
{
    char *s = chat_xstrndup(b->p, b->len);
    cJSON *j = cJSON_Parse(s);

    free(s);
    assert_non_null(j);
    assert_true(cJSON_IsObject(j));
    return j;
}

static void assert_json_str(const cJSON *obj, const char *key, const char *want)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    assert_non_null(item);
    assert_true(cJSON_IsString(item));
    assert_string_equal(item->valuestring, want);
}

/* 32 bytes: the longest epoch (CHAT_EPOCH_MAX) */
#define EPOCH32 "abcdefghijklmnopqrstuvwxyzABCD_-"

static void assert_json_absent(const cJSON *obj, const char *key)
{
    assert_null(cJSON_GetObjectItemCaseSensitive(obj, key));
}

/* ---- parse: not a JSON object ------------------------------------------------------------ */

static void test_parse_empty_is_badjson(void **state)
{
    chat_env_in_t in;
    cJSON *doc = (cJSON *)1;

    assert_int_equal(parse_n("", 0, &in, &doc), CHAT_EBADJSON);
    assert_null(doc);
}

static void test_parse_null_pointer_is_badjson(void **state)
{
    chat_env_in_t in;
    cJSON *doc = (cJSON *)1;

    assert_int_equal(chat_env_parse(NULL, 0, &in, &doc), CHAT_EBADJSON);
    assert_null(doc);
}

static void test_parse_whitespace_only_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("  \n\t ", CHAT_EBADJSON, &in);
}

static void test_parse_invalid_json_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("{\"type\":", CHAT_EBADJSON, &in);
    expect_rc("{type:\"ping\"}", CHAT_EBADJSON, &in);
    expect_rc("{\"type\":\"ping\",}", CHAT_EBADJSON, &in);
}

static void test_parse_truncated_string_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("{\"type\":\"chat\",\"text\":\"abc", CHAT_EBADJSON, &in);
}

static void test_parse_trailing_garbage_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("{\"type\":\"ping\"} x", CHAT_EBADJSON, &in);
    expect_rc("{\"type\":\"ping\"}{}", CHAT_EBADJSON, &in);
}

static void test_parse_trailing_whitespace_is_ok(void **state)
{
    chat_env_in_t in;
    expect_rc(" \r\n{\"type\":\"ping\"} \t\r\n", 0, &in);
    assert_int_equal(in.type, CHAT_ENV_PING);
}

static void test_parse_array_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("[{\"type\":\"ping\"}]", CHAT_EBADJSON, &in);
}

static void test_parse_string_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("\"ping\"", CHAT_EBADJSON, &in);
}

static void test_parse_number_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("42", CHAT_EBADJSON, &in);
}

static void test_parse_null_literal_is_badjson(void **state)
{
    chat_env_in_t in;
    expect_rc("null", CHAT_EBADJSON, &in);
}

static void test_parse_deep_nesting_is_badreq(void **state)
{
    enum { DEPTH = 5000 };
    char *s = chat_xmalloc(2 * DEPTH);
    chat_env_in_t in;
    cJSON *doc = NULL;

    memset(s, '[', DEPTH);
    memset(s + DEPTH, ']', DEPTH);
    assert_int_equal(parse_n(s, 2 * DEPTH, &in, &doc), CHAT_EBADREQ);
    assert_null(doc);
    free(s);
}

/* {"type":"ping","x":[[[...]]]} with the top-level object at level 1 and `levels` in all */
static char *nested(int levels)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_appendf(&b, "{\"type\":\"ping\",\"x\":");
    for (int i = 1; i < levels; i++)
        chat_buf_append(&b, i % 2 ? "[" : "{\"k\":", i % 2 ? 1 : 5);
    chat_buf_append(&b, "1", 1);
    for (int i = levels - 1; i >= 1; i--)
        chat_buf_append(&b, i % 2 ? "]" : "}", 1);
    chat_buf_append(&b, "}", 2);
    return b.p;
}

static void test_parse_depth_16_passes_17_refused(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;
    char *ok = nested(16), *bad = nested(17);
    assert_int_equal(parse(ok, &in, &doc), 0);
    chat_env_free(doc);
    doc = NULL;
    assert_int_equal(parse(bad, &in, &doc), CHAT_EBADREQ);
    assert_null(doc);
    assert_non_null(strstr(in.error, "16"));
    free(ok);
    free(bad);
}

static char *with_keys(int n)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_appendf(&b, "{\"type\":\"ping\"");
    for (int i = 1; i < n; i++)
        chat_buf_appendf(&b, ",\"k%d\":\"a:b\"", i); /* colons inside strings do not count */
    chat_buf_append(&b, "}", 2);
    return b.p;
}

static void test_parse_64_keys_pass_65_refused(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;
    char *ok = with_keys(64), *bad = with_keys(65);
    assert_int_equal(parse(ok, &in, &doc), 0);
    chat_env_free(doc);
    doc = NULL;
    assert_int_equal(parse(bad, &in, &doc), CHAT_EBADREQ);
    assert_null(doc);
    free(ok);
    free(bad);
}

/* {"type":"ping","a":[1,1,...]} with n elements */
static char *with_items(unsigned n)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_append_str(&b, CHAT_LIT("{\"type\":\"ping\",\"a\":["));
    for (unsigned i = 0; i < n; i++)
        chat_buf_append(&b, i ? ",1" : "1", i ? 2 : 1);
    chat_buf_append(&b, "]}", 3); /* with the NUL */
    return b.p;
}

static void test_parse_64_items_pass_65_refused(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;
    char *ok = with_items(64), *bad = with_items(65), *huge = with_items(32000);
    assert_int_equal(parse(ok, &in, &doc), 0);
    chat_env_free(doc);
    doc = NULL;
    assert_int_equal(parse(bad, &in, &doc), CHAT_EBADREQ);
    assert_string_equal(in.error, "an array with more than 64 elements");
    assert_null(doc);
    assert_int_equal(parse(huge, &in, &doc), CHAT_EBADREQ);
    assert_null(doc);
    expect_rc("{\"type\":\"ping\",\"a\":[]}", 0, &in);
    expect_rc("{\"type\":\"ping\",\"a\":\"[1,2,3]\"}", 0, &in); /* commas in a string */
    free(ok);
    free(bad);
    free(huge);
}

static void test_parse_values_bounded(void **state)
{
    /* 20 arrays of 60 elements: each array is fine, the whole is 1,200+ values */
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_in_t in;
    cJSON *doc = NULL;
    chat_buf_append_str(&b, CHAT_LIT("{\"type\":\"ping\""));
    for (int k = 0; k < 20; k++) {
        chat_buf_appendf(&b, ",\"a%d\":[", k);
        for (int i = 0; i < 60; i++)
            chat_buf_append(&b, i ? ",1" : "1", i ? 2 : 1);
        chat_buf_append(&b, "]", 1);
    }
    chat_buf_append(&b, "}", 2);
    assert_int_equal(parse(b.p, &in, &doc), CHAT_EBADREQ);
    assert_string_equal(in.error, "a message with more than 1024 values");
    assert_null(doc);
    chat_buf_free(&b);
}

static void test_peek(void **state)
{
    chat_str_t cid;
    const char *m = "{\"type\":\"chat\",\"cid\":\"c1\"}";
    assert_int_equal(chat_env_peek(m, strlen(m), &cid), CHAT_ENV_CHAT);
    assert_chat_str(cid, "c1");
    /* type after a big nested value; cid first */
    m = " { \"cid\" : \"x\", \"a\": [{\"type\":\"join\"}, \"}\", [1,[2]]], "
                    "\"type\" : \"typing\" } ";
    assert_int_equal(chat_env_peek(m, strlen(m), &cid), CHAT_ENV_TYPING);
    assert_chat_str(cid, "x");
    /* only the first "type" counts; nested ones never */
    m = "{\"a\":{\"type\":\"join\"},\"type\":\"leave\",\"type\":\"join\"}";
    assert_int_equal(chat_env_peek(m, strlen(m), &cid), CHAT_ENV_LEAVE);
    assert_null(cid.p);
    /* unknown, escaped, non-string types; not an object; cut */
    const char *zero[] = {"{\"type\":\"nope\"}", "{\"type\":\"ch\\u0061t\"}", "{\"type\":3}",
                          "[\"type\",\"chat\"]", "{\"type\":\"chat", "", "{\"t\\ype\":\"chat\"}"};
    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
        assert_int_equal(chat_env_peek(zero[i], strlen(zero[i]), &cid), 0);
    /* a cid too long or escaped is not echoed */
    char longcid[300];
    snprintf(longcid, sizeof(longcid), "{\"type\":\"chat\",\"cid\":\"%0200d\"}", 0);
    assert_int_equal(chat_env_peek(longcid, strlen(longcid), &cid), CHAT_ENV_CHAT);
    assert_null(cid.p);
    m = "{\"cid\":\"a\\\"b\",\"type\":\"chat\"}";
    assert_int_equal(chat_env_peek(m, strlen(m), &cid), CHAT_ENV_CHAT);
    assert_null(cid.p);
}

/* ---- parse: type ------------------------------------------------------------------------- */

static void test_parse_type_missing_is_badreq(void **state)
{
    expect_badreq("{\"room\":\"a\"}", "field 'type' is required");
}

static void test_parse_empty_object_is_badreq(void **state)
{
    expect_badreq("{}", "field 'type' is required");
}

static void test_parse_type_number_is_badreq(void **state)
{
    expect_badreq("{\"type\":5}", "field 'type' must be a string");
}

static void test_parse_type_null_is_badreq(void **state)
{
    expect_badreq("{\"type\":null}", "field 'type' must be a string");
}

static void test_parse_type_key_is_case_sensitive(void **state)
{
    expect_badreq("{\"Type\":\"ping\"}", "field 'type' is required");
}

static void test_parse_unknown_type(void **state)
{
    chat_env_in_t in;
    expect_rc("{\"type\":\"shout\",\"room\":\"a\"}", CHAT_EUNKNOWN_TYPE, &in);
}

static void test_parse_type_value_is_case_sensitive(void **state)
{
    chat_env_in_t in;
    expect_rc("{\"type\":\"JOIN\",\"room\":\"a\"}", CHAT_EUNKNOWN_TYPE, &in);
}

static void test_parse_type_prefix_is_unknown(void **state)
{
    chat_env_in_t in;
    expect_rc("{\"type\":\"joinx\",\"room\":\"a\"}", CHAT_EUNKNOWN_TYPE, &in);
    expect_rc("{\"type\":\"joi\",\"room\":\"a\"}", CHAT_EUNKNOWN_TYPE, &in);
    expect_rc("{\"type\":\"\"}", CHAT_EUNKNOWN_TYPE, &in);
}

/* ---- parse: join / leave ----------------------------------------------------------------- */

static void test_parse_join_ok(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"join\",\"room\":\"lobby\"}", &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_JOIN);
    assert_chat_str(in.room, "lobby");
    assert_null(in.text.p);
    assert_null(in.cid.p);
    chat_env_free(doc);
}

static void test_parse_join_missing_room_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"join\"}", "field 'room' is required");
}

static void test_parse_join_numeric_room_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"join\",\"room\":5}", "field 'room' must be a string");
}

static void test_parse_join_ignores_text(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"join\",\"room\":\"a\",\"text\":\"hi\"}", &in, &doc), 0);
    assert_null(in.text.p);
    chat_env_free(doc);
}

static void test_parse_leave_ok(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"room\":\"lobby\",\"type\":\"leave\"}", &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_LEAVE);
    assert_chat_str(in.room, "lobby");
    chat_env_free(doc);
}

static void test_parse_leave_missing_room_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"leave\"}", "field 'room' is required");
}

static void test_parse_leave_null_room_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"leave\",\"room\":null}", "field 'room' must be a string");
}

/* ---- parse: chat ------------------------------------------------------------------------- */

static void test_parse_chat_ok(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"chat\",\"room\":\"r\",\"text\":\"hello\"}", &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_CHAT);
    assert_chat_str(in.room, "r");
    assert_chat_str(in.text, "hello");
    chat_env_free(doc);
}

static void test_parse_chat_room_is_optional(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"chat\",\"text\":\"hello\"}", &in, &doc), 0);
    assert_null(in.room.p);
    assert_chat_str(in.text, "hello");
    chat_env_free(doc);
}

static void test_parse_chat_empty_text_is_ok(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"chat\",\"text\":\"\"}", &in, &doc), 0);
    assert_chat_str(in.text, "");
    chat_env_free(doc);
}

static void test_parse_chat_missing_text_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"chat\",\"room\":\"r\"}", "field 'text' is required");
}

static void test_parse_chat_null_text_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"chat\",\"text\":null}", "field 'text' must be a string");
}

static void test_parse_chat_numeric_text_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"chat\",\"text\":1}", "field 'text' must be a string");
}

static void test_parse_chat_array_room_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"chat\",\"room\":[\"r\"],\"text\":\"x\"}",
                  "field 'room' must be a string");
}

static void test_parse_chat_unicode_escape_is_decoded(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(
        parse("{\"type\":\"chat\",\"text\":\"caf\\u00e9 \\\"q\\\" \\ud83d\\ude00\"}", &in, &doc),
        0);
    assert_chat_str(in.text, "caf\xc3\xa9 \"q\" \xf0\x9f\x98\x80");
    chat_env_free(doc);
}

/* ---- parse: NUL in strings --------------------------------------------------------------- */
/* cJSON strings end at the first NUL, so each of these would read as a shorter string ("ab",
 * the room "a", the type "chat"): every one must be refused, never cut. */

/* Expects CHAT_EBADREQ with `why` and the given cid echo (NULL: no cid). */
static void expect_nul_refused(const char *json, const char *why, const char *cid)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse(json, &in, &doc), CHAT_EBADREQ);
    assert_non_null(doc); /* a tree was built (JSON is fine): the cid may be echoed from it */
    assert_string_equal(in.error, why);
    if (cid == NULL)
        assert_null(in.cid.p);
    else
        assert_chat_str(in.cid, cid);
    assert_null(in.text.p);
    assert_null(in.room.p);
    chat_env_free(doc);
}

static void test_parse_nul_in_text_is_badreq(void **state)
{
    expect_nul_refused("{\"type\":\"chat\",\"text\":\"ab\\u0000secret\",\"cid\":\"c1\"}",
                       "field 'text' contains a NUL character", "c1");
    /* at either end, alone, and after a valid escape */
    expect_nul_refused("{\"type\":\"chat\",\"text\":\"\\u0000\"}",
                       "field 'text' contains a NUL character", NULL);
    expect_nul_refused("{\"type\":\"chat\",\"text\":\"x\\n\\u0000\"}",
                       "field 'text' contains a NUL character", NULL);
}

static void test_parse_nul_in_room_is_badreq(void **state)
{
    expect_nul_refused("{\"type\":\"join\",\"room\":\"a\\u0000b\",\"cid\":\"j\"}",
                       "field 'room' contains a NUL character", "j");
    expect_nul_refused("{\"type\":\"chat\",\"room\":\"a\\u0000b\",\"text\":\"hi\"}",
                       "field 'room' contains a NUL character", NULL);
}

static void test_parse_nul_in_cid_is_badreq_and_not_echoed(void **state)
{
    expect_nul_refused("{\"type\":\"ping\",\"cid\":\"ab\\u0000cd\"}",
                       "field 'cid' contains a NUL character", NULL);
    /* a second cid holding the NUL: the first is clean and echoed, the message still refused */
    expect_nul_refused("{\"type\":\"ping\",\"cid\":\"ok\",\"cid\":\"x\\u0000\"}",
                       "field 'cid' contains a NUL character", "ok");
}

static void test_parse_nul_in_token_is_badreq(void **state)
{
    expect_nul_refused("{\"type\":\"refresh\",\"token\":\"a.b.c\\u0000junk\",\"cid\":\"r\"}",
                       "field 'token' contains a NUL character", "r");
}

static void test_parse_nul_in_type_is_badreq(void **state)
{
    expect_nul_refused("{\"type\":\"chat\\u0000x\",\"text\":\"hi\"}",
                       "field 'type' contains a NUL character", NULL);
}

static void test_parse_nul_in_unknown_field_is_badreq(void **state)
{
    expect_nul_refused("{\"type\":\"ping\",\"extra\":\"\\u0000\",\"cid\":\"p\"}",
                       "a string in the message contains a NUL character", "p");
    /* nested in an array or object of an unknown field */
    expect_nul_refused("{\"type\":\"ping\",\"x\":[1,{\"a\":[\"\\u0000\"]}]}",
                       "a string in the message contains a NUL character", NULL);
    /* in the value of a duplicate key: the first "text" is clean, the second is not */
    expect_nul_refused("{\"type\":\"chat\",\"text\":\"ok\",\"text\":\"a\\u0000\"}",
                       "field 'text' contains a NUL character", NULL);
}

static void test_parse_nul_in_key_is_badreq(void **state)
{
    /* "text\u0000x" would read as the key "text"; "cid\u0000" as "cid": neither is echoed */
    expect_nul_refused("{\"type\":\"chat\",\"text\\u0000x\":\"hi\"}",
                       "a key in the message contains a NUL character", NULL);
    expect_nul_refused("{\"type\":\"ping\",\"cid\\u0000\":\"c\"}",
                       "a key in the message contains a NUL character", NULL);
    expect_nul_refused("{\"type\":\"ping\",\"x\":{\"\\u0000\":1}}",
                       "a key in the message contains a NUL character", NULL);
}

static void test_parse_raw_nul_byte_in_string_is_badreq(void **state)
{
    static const char json[] = "{\"type\":\"chat\",\"text\":\"ab\0cd\"}";
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse_n(json, sizeof(json) - 1, &in, &doc), CHAT_EBADREQ);
    assert_string_equal(in.error, "field 'text' contains a NUL character");
    chat_env_free(doc);
}

/* "\\u0000" in the JSON is an escaped backslash, then the text u0000: no NUL. */
static void test_parse_escaped_backslash_u0000_is_text(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"chat\",\"room\":\"r\",\"text\":\"a\\\\u0000b\","
                           "\"cid\":\"\\\\u0000\"}",
                           &in, &doc),
                     0);
    assert_chat_str(in.text, "a\\u0000b");
    assert_chat_str(in.cid, "\\u0000");
    chat_env_free(doc);
    /* but an escaped backslash followed by a real \u0000 escape is a NUL */
    expect_nul_refused("{\"type\":\"chat\",\"text\":\"a\\\\\\u0000\"}",
                       "field 'text' contains a NUL character", NULL);
    /* and \u0000 spelled in a key or value of a clean message elsewhere is still accepted text */
    assert_int_equal(parse("{\"type\":\"ping\",\"k\\\\u0000\":\"u0000\"}", &in, &doc), 0);
    chat_env_free(doc);
}

/* The cid limit counts decoded bytes: 128 escaped characters are 128 bytes, not 768. */
static void test_parse_cid_length_is_decoded(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_in_t in;
    cJSON *doc = NULL;

    for (int n = CHAT_ENV_MAX_CID; n <= CHAT_ENV_MAX_CID + 1; n++) {
        chat_buf_reset(&b);
        chat_buf_appendf(&b, "{\"type\":\"ping\",\"cid\":\"");
        for (int i = 0; i < n; i++)
            chat_buf_appendf(&b, "\\u0063");
        chat_buf_appendf(&b, "\"}");
        int rc = parse_n(b.p, b.len, &in, &doc);
        assert_int_equal(rc, n == CHAT_ENV_MAX_CID ? 0 : CHAT_EBADREQ);
        if (rc == 0)
            assert_int_equal(in.cid.len, CHAT_ENV_MAX_CID);
        chat_env_free(doc);
        doc = NULL;
    }
    chat_buf_free(&b);
}

/* ---- parse: typing / ping ---------------------------------------------------------------- */

static void test_parse_typing_without_room(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"typing\"}", &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_TYPING);
    assert_null(in.room.p);
    chat_env_free(doc);
}

static void test_parse_typing_with_room(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"typing\",\"room\":\"r\"}", &in, &doc), 0);
    assert_chat_str(in.room, "r");
    chat_env_free(doc);
}

static void test_parse_typing_object_room_is_badreq(void **state)
{
    expect_badreq("{\"type\":\"typing\",\"room\":{}}", "field 'room' must be a string");
}

static void test_parse_ping_ok(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"ping\"}", &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_PING);
    assert_null(in.room.p);
    assert_null(in.text.p);
    assert_null(in.cid.p);
    assert_null(in.error);
    chat_env_free(doc);
}

static void test_parse_ping_does_not_fill_room(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"ping\",\"room\":\"r\",\"text\":\"t\"}", &in, &doc), 0);
    assert_null(in.room.p);
    assert_null(in.text.p);
    chat_env_free(doc);
}

static void test_parse_ping_wrongly_typed_room_is_badreq(void **state)
{
    /* room/text are known fields: their type is checked on every message type. */
    expect_badreq("{\"type\":\"ping\",\"room\":5}", "field 'room' must be a string");
}

/* ---- parse: cid -------------------------------------------------------------------------- */

static void test_parse_cid_filled(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"ping\",\"cid\":\"c-1\"}", &in, &doc), 0);
    assert_chat_str(in.cid, "c-1");
    chat_env_free(doc);
}

static void test_parse_cid_empty_is_present(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"ping\",\"cid\":\"\"}", &in, &doc), 0);
    assert_chat_str(in.cid, "");
    chat_env_free(doc);
}

static void test_parse_cid_wrong_type_is_badreq(void **state)
{
    chat_env_in_t in;

    expect_rc("{\"type\":\"ping\",\"cid\":7}", CHAT_EBADREQ, &in);
    assert_string_equal(in.error, "field 'cid' must be a string");
    assert_null(in.cid.p);
}

static void test_parse_cid_at_max_is_ok(void **state)
{
    char json[CHAT_ENV_MAX_CID + 64];
    char cid[CHAT_ENV_MAX_CID + 1];
    chat_env_in_t in;
    cJSON *doc = NULL;

    memset(cid, 'x', CHAT_ENV_MAX_CID);
    cid[CHAT_ENV_MAX_CID] = '\0';
    snprintf(json, sizeof(json), "{\"type\":\"ping\",\"cid\":\"%s\"}", cid);
    assert_int_equal(parse(json, &in, &doc), 0);
    assert_chat_str(in.cid, cid);
    chat_env_free(doc);
}

static void test_parse_cid_too_long_is_badreq(void **state)
{
    char json[CHAT_ENV_MAX_CID + 64];
    char cid[CHAT_ENV_MAX_CID + 2];
    chat_env_in_t in;

    memset(cid, 'x', CHAT_ENV_MAX_CID + 1);
    cid[CHAT_ENV_MAX_CID + 1] = '\0';
    snprintf(json, sizeof(json), "{\"type\":\"ping\",\"cid\":\"%s\"}", cid);
    expect_rc(json, CHAT_EBADREQ, &in);
    assert_string_equal(in.error, "field 'cid' must be at most 128 bytes");
    assert_null(in.cid.p);
}

static void test_parse_cid_echoed_on_missing_type(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"cid\":\"c9\"}", &in, &doc), CHAT_EBADREQ);
    assert_non_null(doc);
    assert_chat_str(in.cid, "c9");
    chat_env_free(doc);
}

static void test_parse_cid_echoed_on_unknown_type(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"nope\",\"cid\":\"c9\"}", &in, &doc), CHAT_EUNKNOWN_TYPE);
    assert_non_null(doc);
    assert_chat_str(in.cid, "c9");
    assert_string_equal(in.error, "unknown message type");
    chat_env_free(doc);
}

static void test_parse_cid_echoed_on_missing_field(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"join\",\"cid\":\"c9\"}", &in, &doc), CHAT_EBADREQ);
    assert_chat_str(in.cid, "c9");
    chat_env_free(doc);
}

static void test_parse_cid_echoed_on_wrong_field_type(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"chat\",\"text\":false,\"cid\":\"c9\"}", &in, &doc),
                     CHAT_EBADREQ);
    assert_chat_str(in.cid, "c9");
    chat_env_free(doc);
}

/* ---- parse: general ---------------------------------------------------------------------- */

static void test_parse_ignores_client_user_id_ts(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"chat\",\"text\":\"t\",\"user\":5,\"id\":{\"a\":1},"
                           "\"ts\":\"yesterday\",\"extra\":[null]}",
                           &in, &doc),
                     0);
    assert_int_equal(in.type, CHAT_ENV_CHAT);
    assert_chat_str(in.text, "t");
    chat_env_free(doc);
}

static void test_parse_duplicate_key_first_wins(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"join\",\"room\":\"first\",\"room\":\"second\"}", &in, &doc),
                     0);
    assert_chat_str(in.room, "first");
    chat_env_free(doc);
}

static void test_parse_slice_of_larger_buffer(void **state)
{
    const char *two = "{\"type\":\"join\",\"room\":\"a\"}{\"type\":\"leave\",\"room\":\"b\"}";
    size_t first = strlen("{\"type\":\"join\",\"room\":\"a\"}");
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(chat_env_parse(two, first, &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_JOIN);
    assert_chat_str(in.room, "a");
    chat_env_free(doc);
    assert_int_equal(chat_env_parse(two + first, strlen(two) - first, &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_LEAVE);
    assert_chat_str(in.room, "b");
    chat_env_free(doc);
}

static void test_parse_slice_cut_mid_object_is_badjson(void **state)
{
    const char *s = "{\"type\":\"join\",\"room\":\"abc\"}";
    chat_env_in_t in;
    cJSON *doc = NULL;

    for (size_t n = 1; n < strlen(s); n++) {
        assert_int_equal(parse_n(s, n, &in, &doc), CHAT_EBADJSON);
        assert_null(doc);
    }
}

static void test_parse_resets_out(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    memset(&in, 0xa5, sizeof(in));
    assert_int_equal(parse("{\"type\":\"ping\"}", &in, &doc), 0);
    assert_null(in.room.p);
    assert_null(in.text.p);
    assert_null(in.cid.p);
    assert_null(in.error);
    chat_env_free(doc);
}

static void test_free_null_is_noop(void **state)
{
    chat_env_free(NULL);
}

/* ---- builders: exact output -------------------------------------------------------------- */

static void test_build_welcome(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_welcome(&b, CHAT_LIT("alice"), CHAT_STR_NULL, CHAT_LIT("node-1"), CHAT_LIT("c42"));
    assert_buf_eq(&b, "{\"type\":\"welcome\",\"user\":\"alice\",\"node\":\"node-1\","
                      "\"conn\":\"c42\"}");
    chat_buf_free(&b);
}

static void test_build_joined(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_joined(&b, CHAT_LIT("lobby"), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"lobby\"}");
    chat_buf_free(&b);
}

static void test_build_left(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_left(&b, CHAT_LIT("lobby"));
    assert_buf_eq(&b, "{\"type\":\"left\",\"room\":\"lobby\"}");
    chat_buf_free(&b);
}

static void test_build_pong(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_pong(&b);
    assert_buf_eq(&b, "{\"type\":\"pong\"}");
    chat_buf_free(&b);
}

static void test_build_chat(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_chat_t m = {.room = CHAT_LIT("r"), .id = CHAT_LIT("m1"), .user = CHAT_LIT("bob"),
                         .text = CHAT_LIT("hi"), .ts = 1700000000123};

    chat_env_build_chat(&b, &m);
    assert_buf_eq(&b, "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"m1\",\"user\":\"bob\","
                      "\"text\":\"hi\",\"ts\":1700000000123}");
    chat_buf_free(&b);
}

static void test_build_chat_extreme_ts(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_chat_t m = {CHAT_LIT("r"), CHAT_LIT("i"), CHAT_LIT("u"), CHAT_LIT("t"), INT64_MIN, CHAT_STR_NULL};

    chat_env_build_chat(&b, &m);
    assert_buf_eq(&b, "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\","
                      "\"text\":\"t\",\"ts\":-9223372036854775808}");
    chat_buf_reset(&b);
    m.ts = INT64_MAX;
    chat_env_build_chat(&b, &m);
    assert_buf_eq(&b, "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\","
                      "\"text\":\"t\",\"ts\":9223372036854775807}");
    chat_buf_free(&b);
}

static void test_build_ack(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_ack(&b, CHAT_LIT("c1"), CHAT_LIT("r"), CHAT_LIT("m1"), 0, 0);
    assert_buf_eq(&b, "{\"type\":\"ack\",\"cid\":\"c1\",\"room\":\"r\",\"id\":\"m1\"}");
    chat_buf_free(&b);
}

static void test_build_typing(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_typing(&b, CHAT_LIT("r"), CHAT_LIT("bob"), CHAT_STR_NULL);
    assert_buf_eq(&b, "{\"type\":\"typing\",\"room\":\"r\",\"user\":\"bob\"}");
    chat_buf_free(&b);
}

static void test_build_system(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_system(&b, CHAT_LIT("r"), "join", CHAT_LIT("bob"), CHAT_STR_NULL, 5);
    assert_buf_eq(&b, "{\"type\":\"system\",\"room\":\"r\",\"event\":\"join\","
                      "\"user\":\"bob\",\"ts\":5}");
    chat_buf_free(&b);
}

static void test_build_error_minimal(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_error(&b, "bad_request", "nope", CHAT_STR_NULL, CHAT_STR_NULL);
    assert_buf_eq(&b, "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"nope\"}");
    chat_buf_free(&b);
}

static void test_build_error_with_cid(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_error(&b, "bad_request", "nope", CHAT_LIT("c1"), CHAT_STR_NULL);
    assert_buf_eq(&b, "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"nope\","
                      "\"cid\":\"c1\"}");
    chat_buf_free(&b);
}

static void test_build_error_with_room(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_error(&b, "not_joined", "nope", CHAT_STR_NULL, CHAT_LIT("r"));
    assert_buf_eq(&b, "{\"type\":\"error\",\"code\":\"not_joined\",\"message\":\"nope\","
                      "\"room\":\"r\"}");
    chat_buf_free(&b);
}

static void test_build_error_with_cid_and_room(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_error(&b, "not_joined", "nope", CHAT_LIT("c1"), CHAT_LIT("r"));
    assert_buf_eq(&b, "{\"type\":\"error\",\"code\":\"not_joined\",\"message\":\"nope\","
                      "\"cid\":\"c1\",\"room\":\"r\"}");
    chat_buf_free(&b);
}

static void test_build_error_empty_cid_is_kept(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_error(&b, "x", "y", CHAT_LIT(""), CHAT_STR_NULL);
    assert_buf_eq(&b, "{\"type\":\"error\",\"code\":\"x\",\"message\":\"y\",\"cid\":\"\"}");
    chat_buf_free(&b);
}

static void test_build_refusal(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_refusal(&b, "unauthorized", "token expired");
    assert_buf_eq(&b, "{\"error\":\"unauthorized\",\"message\":\"token expired\"}");
    chat_buf_free(&b);
}

static void test_build_appends(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_buf_append(&b, "X", 1);
    chat_env_build_pong(&b);
    chat_env_build_joined(&b, CHAT_LIT("r"), NULL);
    assert_buf_eq(&b, "X{\"type\":\"pong\"}{\"type\":\"joined\",\"room\":\"r\"}");
    chat_buf_free(&b);
}

static void test_build_null_required_string_is_empty(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_ack(&b, CHAT_STR_NULL, CHAT_LIT("r"), CHAT_LIT("m"), 0, 0);
    chat_env_build_system(&b, CHAT_LIT("r"), NULL, CHAT_LIT("u"), CHAT_STR_NULL, 0);
    assert_buf_eq(&b, "{\"type\":\"ack\",\"cid\":\"\",\"room\":\"r\",\"id\":\"m\"}"
                      "{\"type\":\"system\",\"room\":\"r\",\"event\":\"\",\"user\":\"u\","
                      "\"ts\":0}");
    chat_buf_free(&b);
}

/* ---- builders: escaping ------------------------------------------------------------------ */

static void test_escape_quote_and_backslash(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_joined(&b, CHAT_LIT("a\"b\\c"), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"a\\\"b\\\\c\"}");
    chat_buf_free(&b);
}

static void test_escape_short_control_chars(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_joined(&b, CHAT_LIT("\n\r\t\b\f"), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"\\n\\r\\t\\b\\f\"}");
    chat_buf_free(&b);
}

static void test_escape_other_control_chars(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    static const char raw[] = {0x00, 0x01, 0x0b, 0x1f, 0x20};

    chat_env_build_joined(&b, chat_str(raw, sizeof(raw)), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"\\u0000\\u0001\\u000b\\u001f \"}");
    chat_buf_free(&b);
}

static void test_escape_del_passes_through(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_joined(&b, CHAT_LIT("a\177b/c"), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"a\177b/c\"}");
    chat_buf_free(&b);
}

static void test_escape_utf8_passes_through(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_joined(&b, CHAT_LIT("h\xc3\xa9llo \xe4\xb8\x96 \xf0\x9f\x98\x80"), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"h\xc3\xa9llo \xe4\xb8\x96 "
                      "\xf0\x9f\x98\x80\"}");
    chat_buf_free(&b);
}

static void test_escape_line_and_paragraph_separators(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_joined(&b, CHAT_LIT("a\342\200\250b\342\200\251c\342\200\252"), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"a\\u2028b\\u2029c\xe2\x80\xaa\"}");
    chat_buf_free(&b);
}

static void test_escape_truncated_utf8_at_end(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    /* A lone 0xe2 0x80 at the very end must not be read past. */
    chat_env_build_joined(&b, chat_str("a\xe2\x80", 3), NULL);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"a\xe2\x80\"}");
    chat_buf_free(&b);
}

static void test_escape_in_error_and_refusal_strings(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_refusal(&b, "c\"", "line1\nline2");
    assert_buf_eq(&b, "{\"error\":\"c\\\"\",\"message\":\"line1\\nline2\"}");
    chat_buf_free(&b);
}

/* ---- builders: round trip ---------------------------------------------------------------- */

static void test_roundtrip_chat_through_cjson(void **state)
{
    char text[64];
    size_t n = 0;
    chat_buf_t b = CHAT_BUF_INIT;

    for (char c = 1; c < 0x20; c++)
        text[n++] = c;
    memcpy(text + n, "\"\\/\xc3\xa9\xe2\x80\xa8", 8);
    n += 8;
    text[n] = '\0';
    chat_env_chat_t m = {CHAT_LIT("room \"1\""), CHAT_LIT("id\\1"), CHAT_LIT("\xf0\x9f\x98\x80"),
                         chat_str(text, n), 1700000000123, CHAT_STR_NULL};
    chat_env_build_chat(&b, &m);

    cJSON *j = cjson_of(&b);
    assert_json_str(j, "type", "chat");
    assert_json_str(j, "room", "room \"1\"");
    assert_json_str(j, "id", "id\\1");
    assert_json_str(j, "user", "\xf0\x9f\x98\x80");
    assert_json_str(j, "text", text);
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
    assert_true(cJSON_IsNumber(ts));
    assert_true(ts->valuedouble == 1700000000123.0);
    cJSON_Delete(j);
    chat_buf_free(&b);
}

static void test_roundtrip_error_through_cjson(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_error(&b, "bad_request", "field 'room' must be a string", CHAT_LIT("c\t1"),
                         CHAT_STR_NULL);
    cJSON *j = cjson_of(&b);
    assert_json_str(j, "type", "error");
    assert_json_str(j, "code", "bad_request");
    assert_json_str(j, "message", "field 'room' must be a string");
    assert_json_str(j, "cid", "c\t1");
    assert_json_absent(j, "room");
    cJSON_Delete(j);
    chat_buf_free(&b);
}

static void test_roundtrip_each_builder_is_valid_json(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_chat_t m = {CHAT_LIT("r"), CHAT_LIT("i"), CHAT_LIT("u"), CHAT_LIT("t"), -1, CHAT_STR_NULL};
    cJSON *j;

    chat_env_build_welcome(&b, CHAT_LIT("u\n"), CHAT_STR_NULL, CHAT_LIT("n"), CHAT_LIT("c"));
    j = cjson_of(&b);
    assert_json_str(j, "user", "u\n");
    assert_json_str(j, "conn", "c");
    cJSON_Delete(j);

    chat_buf_reset(&b);
    chat_env_build_ack(&b, CHAT_LIT("c"), CHAT_LIT("r"), CHAT_LIT("i"), 0, 0);
    j = cjson_of(&b);
    assert_json_str(j, "type", "ack");
    assert_json_str(j, "cid", "c");
    cJSON_Delete(j);

    chat_buf_reset(&b);
    chat_env_build_system(&b, CHAT_LIT("r"), "leave", CHAT_LIT("u"), CHAT_STR_NULL, 7);
    j = cjson_of(&b);
    assert_json_str(j, "event", "leave");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "ts")->valueint, 7);
    cJSON_Delete(j);

    chat_buf_reset(&b);
    chat_env_build_chat(&b, &m);
    j = cjson_of(&b);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "ts")->valueint, -1);
    cJSON_Delete(j);

    chat_buf_reset(&b);
    chat_env_build_refusal(&b, "e", "m");
    j = cjson_of(&b);
    assert_json_str(j, "error", "e");
    assert_json_str(j, "message", "m");
    cJSON_Delete(j);
    chat_buf_free(&b);
}

static void test_roundtrip_chat_through_own_parser(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_chat_t m = {CHAT_LIT("r\"x"), CHAT_LIT("i"), CHAT_LIT("u"),
                         CHAT_LIT("a\\b\n\x01\xc3\xa9"), 3, CHAT_STR_NULL};
    chat_env_in_t in;
    cJSON *doc = NULL;

    chat_env_build_chat(&b, &m);
    assert_int_equal(parse_n(b.p, b.len, &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_CHAT);
    assert_chat_str(in.room, "r\"x");
    assert_chat_str(in.text, "a\\b\n\x01\xc3\xa9");
    chat_env_free(doc);
    chat_buf_free(&b);
}

static void test_build_identity_with_name(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_build_welcome(&b, CHAT_LIT("alice"), CHAT_LIT("Alice A."), CHAT_LIT("n"), CHAT_LIT("c"));
    assert_buf_eq(&b, "{\"type\":\"welcome\",\"user\":\"alice\",\"name\":\"Alice A.\","
                        "\"node\":\"n\",\"conn\":\"c\"}");
    chat_buf_reset(&b);
    chat_env_build_typing(&b, CHAT_LIT("r"), CHAT_LIT("u"), CHAT_LIT("N"));
    assert_buf_eq(&b, "{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\",\"name\":\"N\"}");
    chat_buf_reset(&b);
    chat_env_chat_t m = {.room = CHAT_LIT("r"), .id = CHAT_LIT("1"), .user = CHAT_LIT("u"),
                         .name = CHAT_LIT("N"), .text = CHAT_LIT("hi"), .ts = 3};
    chat_env_build_chat(&b, &m);
    assert_buf_eq(&b, "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"1\","
                                       "\"user\":\"u\",\"name\":\"N\",\"text\":\"hi\",\"ts\":3}");
    chat_buf_reset(&b);
    chat_env_build_system(&b, CHAT_LIT("r"), "join", CHAT_LIT("u"), CHAT_LIT("N"), 4);
    assert_buf_eq(&b, "{\"type\":\"system\",\"room\":\"r\",\"event\":"
                                       "\"join\",\"user\":\"u\",\"name\":\"N\",\"ts\":4}");
    chat_buf_free(&b);
}

static void test_build_token_messages(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_build_token_expiring(&b, 29500);
    assert_buf_eq(&b, "{\"type\":\"system\",\"event\":\"token_expiring\",\"ttl_ms\":29500}");
    chat_buf_reset(&b);
    chat_env_build_refreshed(&b, 1764400000);
    assert_buf_eq(&b, "{\"type\":\"refreshed\",\"exp\":1764400000}");
    chat_buf_free(&b);
}

static void test_parse_refresh(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;
    assert_int_equal(parse("{\"type\":\"refresh\",\"token\":\"a.b.c\"}", &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_REFRESH);
    assert_int_equal(in.token.len, 5);
    assert_memory_equal(in.token.p, "a.b.c", 5);
    chat_env_free(doc);
    doc = NULL;
    assert_int_equal(parse("{\"type\":\"refresh\"}", &in, &doc), CHAT_EBADREQ);
    chat_env_free(doc);
    doc = NULL;
    assert_int_equal(parse("{\"type\":\"refresh\",\"token\":5}", &in, &doc), CHAT_EBADREQ);
    chat_env_free(doc);
}

/* ---- parse: join's since, history, presence ----------------------------------------------- */

#define SINCE_WHY  "field 'since' must be {\"seq\":<integer 0..2^53>,\"epoch\":<string>}"
#define EPOCH_WHY  "field 'since' has an invalid epoch (1 to 32 of A-Z a-z 0-9 _ -)"
#define BEFORE_WHY "field 'before' must be an integer from 1 to 2^53"
#define LIMIT_WHY  "field 'limit' must be an integer from 1 to 2^53"

/* Parses a join with `since` = since_json; expects success with seq and epoch. */
static void expect_since(const char *since_json, uint64_t seq, const char *epoch)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_in_t in;
    cJSON *doc = NULL;

    chat_buf_appendf(&b, "{\"type\":\"join\",\"room\":\"r\",\"since\":%s}", since_json);
    if (parse_n(b.p, b.len, &in, &doc) != 0)
        fail_msg("since %s refused: %s", since_json, in.error);
    assert_int_equal(in.type, CHAT_ENV_JOIN);
    assert_int_equal(in.has_since, 1);
    if (in.since_seq != seq)
        fail_msg("since %s: seq %llu", since_json, (unsigned long long)in.since_seq);
    assert_chat_str(in.since_epoch, epoch);
    assert_chat_str(in.room, "r");
    chat_env_free(doc);
    chat_buf_free(&b);
}

static void expect_since_refused(const char *since_json, const char *why)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_in_t in;
    cJSON *doc = NULL;

    chat_buf_appendf(&b, "{\"type\":\"join\",\"room\":\"r\",\"cid\":\"c1\",\"since\":%s}",
                     since_json);
    if (parse_n(b.p, b.len, &in, &doc) != CHAT_EBADREQ)
        fail_msg("since %s not refused", since_json);
    if (strcmp(in.error, why) != 0)
        fail_msg("since %s: error \"%s\", want \"%s\"", since_json, in.error, why);
    /* nothing of a refused since is left behind */
    assert_int_equal(in.has_since, 0);
    assert_int_equal(in.since_seq, 0);
    assert_null(in.since_epoch.p);
    chat_env_free(doc);
    chat_buf_free(&b);
}

static void test_parse_join_since_ok(void **state)
{
    expect_since("{\"seq\":41,\"epoch\":\"e\"}", 41, "e");
    expect_since("{\"epoch\":\"Ep0ch_-Z\",\"seq\":41}", 41, "Ep0ch_-Z"); /* any order */
    expect_since("{\"seq\":0,\"epoch\":\"e\"}", 0, "e");                 /* an empty room */
    expect_since("{\"seq\":9007199254740992,\"epoch\":\"e\"}", (uint64_t)1 << 53, "e");
    expect_since("{\"seq\":9007199254740991,\"epoch\":\"e\"}", ((uint64_t)1 << 53) - 1, "e");
    /* whole numbers in any JSON spelling */
    expect_since("{\"seq\":1e2,\"epoch\":\"e\"}", 100, "e");
    expect_since("{\"seq\":1E+2,\"epoch\":\"e\"}", 100, "e");
    expect_since("{\"seq\":100.000,\"epoch\":\"e\"}", 100, "e");
    expect_since("{\"seq\":4.5e1,\"epoch\":\"e\"}", 45, "e");
    expect_since("{\"seq\":1000e-1,\"epoch\":\"e\"}", 100, "e");
    expect_since("{\"seq\":100000000000000000000e-20,\"epoch\":\"e\"}", 1, "e");
    expect_since("{\"seq\":-0,\"epoch\":\"e\"}", 0, "e");
    expect_since("{\"seq\":0e999999999999,\"epoch\":\"e\"}", 0, "e");
    expect_since("{\"seq\":9007199254740992.0,\"epoch\":\"e\"}", (uint64_t)1 << 53, "e");
    /* whitespace anywhere, escapes in the epoch (decoded) */
    expect_since(" {\n\t\"seq\" :\r 7 , \"epoch\" : \"\\u0041b\" } ", 7, "Ab");
    /* an epoch at its longest */
    expect_since("{\"seq\":1,\"epoch\":\"" EPOCH32 "\"}", 1, EPOCH32);
}

/* The number is found in the text whatever precedes it: strings with braces, commas and
 * escaped quotes, nested values, a duplicate "since" (the first one counts, as for cJSON). */
static void test_parse_join_since_found_among_other_members(void **state)
{
    static const char *const msgs[] = {
        "{\"x\":\"a\\\"},{\\\"seq\\\":1,\",\"type\":\"join\",\"room\":\"r\",\"since\":"
        "{\"epoch\":\"e\",\"seq\":5}}",
        "{\"type\":\"join\",\"a\":[{\"seq\":1},[2,3]],\"room\":\"r\",\"since\":{\"epoch\":"
        "\"e\",\"seq\":5},\"b\":{}}",
        "{\"type\":\"join\",\"room\":\"r\",\"since\":{\"seq\":5,\"epoch\":\"e\"},\"since\":{"
        "\"seq\":6,\"epoch\":\"f\"}}",
        "\xef\xbb\xbf {\"type\":\"join\",\"room\":\"r\",\"since\":{\"seq\":5,\"epoch\":\"e\"}}",
        "{\"type\":\"join\",\"r\\u006fom\":\"r\",\"since\":{\"s\\u0065q\":5,\"epoch\":\"e\"}}",
    };
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        chat_env_in_t in;
        cJSON *doc = NULL;
        if (parse(msgs[i], &in, &doc) != 0)
            fail_msg("case %zu refused: %s", i, in.error);
        assert_int_equal(in.has_since, 1);
        assert_int_equal(in.since_seq, 5);
        assert_chat_str(in.since_epoch, "e");
        chat_env_free(doc);
    }
}

static void test_parse_join_without_since(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"join\",\"room\":\"r\"}", &in, &doc), 0);
    assert_int_equal(in.has_since, 0);
    assert_int_equal(in.since_seq, 0);
    assert_null(in.since_epoch.p);
    chat_env_free(doc);
}

static void test_parse_join_since_refused(void **state)
{
    static const char *const bad[] = {
        "41",
        "null",
        "\"41\"",
        "true",
        "[41,\"e\"]",
        "{}",
        "{\"seq\":41}",
        "{\"epoch\":\"e\"}",
        "{\"seq\":41,\"epoch\":\"e\",\"x\":1}",    /* another member */
        "{\"seq\":41,\"epoch\":\"e\",\"seq\":42}", /* a member twice */
        "{\"seq\":41,\"epoch\":\"e\",\"epoch\":\"e\"}",
        "{\"Seq\":41,\"epoch\":\"e\"}", /* names are case-sensitive */
        "{\"seq\":\"41\",\"epoch\":\"e\"}",
        "{\"seq\":null,\"epoch\":\"e\"}",
        "{\"seq\":[41],\"epoch\":\"e\"}",
        "{\"seq\":{},\"epoch\":\"e\"}",
        "{\"seq\":-1,\"epoch\":\"e\"}",
        "{\"seq\":41.5,\"epoch\":\"e\"}",
        "{\"seq\":1e-1,\"epoch\":\"e\"}",
        "{\"seq\":0.5,\"epoch\":\"e\"}",
        "{\"seq\":9007199254740993,\"epoch\":\"e\"}", /* 2^53 + 1: a double reads 2^53 */
        "{\"seq\":9007199254740994,\"epoch\":\"e\"}",
        "{\"seq\":18446744073709551616,\"epoch\":\"e\"}",
        "{\"seq\":1e16,\"epoch\":\"e\"}",
        "{\"seq\":1e400,\"epoch\":\"e\"}",
        "{\"seq\":9007199254740991.5,\"epoch\":\"e\"}",
        "{\"seq\":4503599627370496.5,\"epoch\":\"e\"}", /* a double rounds it to a whole */
        "{\"seq\":41,\"epoch\":5}",
        "{\"seq\":41,\"epoch\":null}",
        "{\"seq\":41,\"epoch\":[\"e\"]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_since_refused(bad[i], SINCE_WHY);
}

static void test_parse_join_since_bad_epoch(void **state)
{
    static const char *const bad[] = {
        "",    " ",   "a b",         "a.b",     "a:b",   "a@b",
        "a/b", "a+b", "caf\xc3\xa9", "\\u00e9", "a\\nb", EPOCH32 "x", /* 33 bytes */
    };
    char since[128];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(since, sizeof(since), "{\"seq\":1,\"epoch\":\"%s\"}", bad[i]);
        expect_since_refused(since, EPOCH_WHY);
    }
    /* a NUL in the epoch (escaped or raw), or in a key of since */
    expect_since_refused("{\"seq\":1,\"epoch\":\"e\\u0000x\"}",
                         "field 'since' contains a NUL character");
    expect_since_refused("{\"seq\":1,\"epoch\":\"e\",\"\\u0000\":1}",
                         "a key in the message contains a NUL character");
    static const char raw[] = "{\"type\":\"join\",\"room\":\"r\",\"since\":{\"seq\":1,\"epoch\":"
                              "\"e\0x\"}}";
    chat_env_in_t in;
    cJSON *doc = NULL;
    assert_int_equal(parse_n(raw, sizeof(raw) - 1, &in, &doc), CHAT_EBADREQ);
    assert_string_equal(in.error, "field 'since' contains a NUL character");
    assert_int_equal(in.has_since, 0);
    chat_env_free(doc);
}

/* The cid is echoed on a bad since; since is a join field: other types ignore it. */
static void test_parse_since_cid_and_other_types(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(
        parse("{\"type\":\"join\",\"room\":\"r\",\"cid\":\"c9\",\"since\":5}", &in, &doc),
        CHAT_EBADREQ);
    assert_chat_str(in.cid, "c9");
    chat_env_free(doc);
    doc = NULL;
    assert_int_equal(parse("{\"type\":\"leave\",\"room\":\"r\",\"since\":5}", &in, &doc), 0);
    assert_int_equal(in.has_since, 0);
    chat_env_free(doc);
    doc = NULL;
    assert_int_equal(parse("{\"type\":\"chat\",\"text\":\"t\",\"since\":{\"seq\":1,\"epoch\":"
                           "\"e\"},\"before\":0,\"limit\":-1}",
                           &in, &doc),
                     0);
    assert_int_equal(in.has_since, 0);
    assert_int_equal(in.has_before, 0);
    assert_int_equal(in.limit, 0);
    assert_null(in.since_epoch.p);
    chat_env_free(doc);
}

static void test_parse_history_ok(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"history\",\"room\":\"lobby\",\"cid\":\"h1\"}", &in, &doc),
                     0);
    assert_int_equal(in.type, CHAT_ENV_HISTORY);
    assert_chat_str(in.room, "lobby");
    assert_chat_str(in.cid, "h1");
    assert_int_equal(in.has_before, 0);
    assert_int_equal(in.before, 0);
    assert_int_equal(in.limit, 0); /* absent: the caller's default */
    assert_int_equal(in.has_since, 0);
    assert_null(in.text.p);
    chat_env_free(doc);
    doc = NULL;

    assert_int_equal(
        parse("{\"type\":\"history\",\"room\":\"r\",\"before\":42,\"limit\":10}", &in, &doc), 0);
    assert_int_equal(in.has_before, 1);
    assert_int_equal(in.before, 42);
    assert_int_equal(in.limit, 10);
    chat_env_free(doc);
}

/* Parses a history request with extra members; returns before (has_before checked) and limit. */
static void expect_history(const char *members, int has_before, uint64_t before, uint64_t limit)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_in_t in;
    cJSON *doc = NULL;

    chat_buf_appendf(&b, "{\"type\":\"history\",\"room\":\"r\",%s}", members);
    if (parse_n(b.p, b.len, &in, &doc) != 0)
        fail_msg("%s refused: %s", members, in.error);
    if (in.has_before != has_before || in.before != before || in.limit != limit)
        fail_msg("%s: has_before %d before %llu limit %llu", members, in.has_before,
                 (unsigned long long)in.before, (unsigned long long)in.limit);
    chat_env_free(doc);
    chat_buf_free(&b);
}

static void expect_history_refused(const char *members, const char *why)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_in_t in;
    cJSON *doc = NULL;

    chat_buf_appendf(&b, "{\"type\":\"history\",\"room\":\"r\",\"cid\":\"h\",%s}", members);
    if (parse_n(b.p, b.len, &in, &doc) != CHAT_EBADREQ)
        fail_msg("%s not refused", members);
    if (strcmp(in.error, why) != 0)
        fail_msg("%s: error \"%s\", want \"%s\"", members, in.error, why);
    assert_chat_str(in.cid, "h");
    chat_env_free(doc);
    chat_buf_free(&b);
}

static void test_parse_history_limit_clamped(void **state)
{
    expect_history("\"limit\":1", 0, 0, 1);
    expect_history("\"limit\":99", 0, 0, 99);
    expect_history("\"limit\":100", 0, 0, CHAT_ENV_HISTORY_MAX);
    expect_history("\"limit\":101", 0, 0, CHAT_ENV_HISTORY_MAX);
    expect_history("\"limit\":1e3", 0, 0, CHAT_ENV_HISTORY_MAX);
    expect_history("\"limit\":9007199254740992", 0, 0, CHAT_ENV_HISTORY_MAX);
    expect_history("\"limit\":5.0", 0, 0, 5);
    expect_history("\"before\":1", 1, 1, 0);
    expect_history("\"before\":9007199254740992", 1, (uint64_t)1 << 53, 0);
    expect_history("\"before\":2E1,\"limit\":3", 1, 20, 3);
    assert_int_equal(CHAT_ENV_HISTORY_MAX, 100);
}

static void test_parse_history_refused(void **state)
{
    static const char *const bad[] = {
        "0",
        "-0",
        "-1",
        "1.5",
        "0.5",
        "1e-1",
        "\"42\"",
        "null",
        "true",
        "[1]",
        "{}",
        "9007199254740993",
        "18446744073709551616",
        "1e400",
        "4503599627370496.5",
    };
    char member[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(member, sizeof(member), "\"before\":%s", bad[i]);
        expect_history_refused(member, BEFORE_WHY);
        snprintf(member, sizeof(member), "\"limit\":%s", bad[i]);
        expect_history_refused(member, LIMIT_WHY);
    }
    expect_badreq("{\"type\":\"history\"}", "field 'room' is required");
    expect_badreq("{\"type\":\"history\",\"room\":7}", "field 'room' must be a string");
    expect_badreq("{\"type\":\"history\",\"limit\":5}", "field 'room' is required");
}

static void test_parse_presence(void **state)
{
    chat_env_in_t in;
    cJSON *doc = NULL;

    assert_int_equal(parse("{\"type\":\"presence\",\"room\":\"dm:a:b\",\"before\":\"x\","
                           "\"limit\":0,\"since\":1}",
                           &in, &doc),
                     0); /* before, limit, since are not presence fields: ignored */
    assert_int_equal(in.type, CHAT_ENV_PRESENCE);
    assert_chat_str(in.room, "dm:a:b");
    assert_int_equal(in.has_before, 0);
    assert_int_equal(in.limit, 0);
    assert_int_equal(in.has_since, 0);
    chat_env_free(doc);
    expect_badreq("{\"type\":\"presence\"}", "field 'room' is required");
    expect_badreq("{\"type\":\"presence\",\"room\":null}", "field 'room' must be a string");
}

static void test_peek_new_types(void **state)
{
    chat_str_t cid;
    const char *m = "{\"type\":\"history\",\"room\":\"r\",\"cid\":\"h1\"}";
    assert_int_equal(chat_env_peek(m, strlen(m), &cid), CHAT_ENV_HISTORY);
    assert_chat_str(cid, "h1");
    m = "{\"cid\":\"p\",\"type\":\"presence\"}";
    assert_int_equal(chat_env_peek(m, strlen(m), &cid), CHAT_ENV_PRESENCE);
    assert_chat_str(cid, "p");
    m = "{\"type\":\"History\"}";
    assert_int_equal(chat_env_peek(m, strlen(m), &cid), 0);
    assert_int_equal(CHAT_ENV_NTYPES, CHAT_ENV_PRESENCE + 1);
}

/* ---- builders: joined, ack, chat_open, history, presence ---------------------------------- */

static void test_build_joined_with_seq_and_recovered(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_joined_t j = {.has_seq = 1, .seq = 41, .epoch = CHAT_LIT("Ep0ch")};

    chat_env_build_joined(&b, CHAT_LIT("r"), &j);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"r\",\"seq\":41,\"epoch\":\"Ep0ch\"}");
    chat_buf_reset(&b);
    j.has_recovered = 1;
    j.recovered = 1;
    chat_env_build_joined(&b, CHAT_LIT("r"), &j);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"r\",\"seq\":41,\"epoch\":\"Ep0ch\","
                      "\"recovered\":true}");
    chat_buf_reset(&b);
    j.recovered = 7; /* any non-zero is true */
    j.seq = 0;
    chat_env_build_joined(&b, CHAT_LIT("r"), &j);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"r\",\"seq\":0,\"epoch\":\"Ep0ch\","
                      "\"recovered\":true}");
    chat_buf_reset(&b);
    /* history off, a join with since: only recovered:false */
    j = (chat_env_joined_t){.has_recovered = 1, .recovered = 0, .seq = 9, .epoch = CHAT_LIT("x")};
    chat_env_build_joined(&b, CHAT_LIT("r"), &j);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"r\",\"recovered\":false}");
    chat_buf_reset(&b);
    j = (chat_env_joined_t){0};
    chat_env_build_joined(&b, CHAT_LIT("r"), &j); /* all zero: as NULL */
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"r\"}");
    chat_buf_reset(&b);
    j = (chat_env_joined_t){.has_seq = 1, .seq = UINT64_MAX, .epoch = CHAT_LIT("a\"b")};
    chat_env_build_joined(&b, CHAT_LIT("r"), &j);
    assert_buf_eq(&b, "{\"type\":\"joined\",\"room\":\"r\",\"seq\":18446744073709551615,"
                      "\"epoch\":\"a\\\"b\"}");
    chat_buf_free(&b);
}

static void test_build_ack_with_seq(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;

    chat_env_build_ack(&b, CHAT_LIT("c1"), CHAT_LIT("r"), CHAT_LIT("m1"), 1, 7);
    assert_buf_eq(&b, "{\"type\":\"ack\",\"cid\":\"c1\",\"room\":\"r\",\"id\":\"m1\",\"seq\":7}");
    chat_buf_reset(&b);
    chat_env_build_ack(&b, CHAT_LIT("c1"), CHAT_LIT("r"), CHAT_LIT("m1"), 0, 7);
    assert_buf_eq(&b, "{\"type\":\"ack\",\"cid\":\"c1\",\"room\":\"r\",\"id\":\"m1\"}");
    chat_buf_reset(&b);
    chat_env_build_ack(&b, CHAT_LIT("c"), CHAT_LIT("r"), CHAT_LIT("m"), 1, 9007199254740992);
    assert_buf_eq(&b, "{\"type\":\"ack\",\"cid\":\"c\",\"room\":\"r\",\"id\":\"m\","
                      "\"seq\":9007199254740992}");
    chat_buf_free(&b);
}

/* chat_open is chat without its '}' and then ,"seq": ; open + seq + MID + epoch + END is the
 * chat with seq and epoch last, valid JSON, and read back by our parser as the same chat. */
static void test_build_chat_open(void **state)
{
    chat_buf_t open = CHAT_BUF_INIT, chat = CHAT_BUF_INIT;
    const chat_str_t names[] = {CHAT_STR_NULL, CHAT_LIT("Al \"ice\"")};

    for (size_t i = 0; i < 2; i++) {
        chat_env_chat_t m = {CHAT_LIT("lobby"),     CHAT_LIT("n1-k-1"), CHAT_LIT("u"),
                             CHAT_LIT("hi\n\"x\""), 1700000000123,      names[i]};
        chat_buf_reset(&open);
        chat_buf_reset(&chat);
        chat_env_build_chat_open(&open, &m);
        chat_env_build_chat(&chat, &m);
        assert_int_equal(open.len, chat.len - 1 + strlen(",\"seq\":"));
        assert_memory_equal(open.p, chat.p, chat.len - 1);
        assert_memory_equal(open.p + chat.len - 1, ",\"seq\":", 7);
    }
    chat_buf_reset(&open);
    chat_env_chat_t m = {CHAT_LIT("r"), CHAT_LIT("i"), CHAT_LIT("u"), CHAT_LIT("t"), 5,
                         CHAT_STR_NULL};
    chat_env_build_chat_open(&open, &m);
    chat_buf_appendf(&open, "41" CHAT_ENV_SEQ_MID "Ep0ch" CHAT_ENV_SEQ_END);
    assert_buf_eq(&open, "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":"
                         "\"t\",\"ts\":5,\"seq\":41,\"epoch\":\"Ep0ch\"}");
    cJSON *j = cjson_of(&open);
    const cJSON *last = cJSON_GetArrayItem(j, cJSON_GetArraySize(j) - 1);
    const cJSON *before_last = cJSON_GetArrayItem(j, cJSON_GetArraySize(j) - 2);
    assert_string_equal(last->string, "epoch");
    assert_string_equal(last->valuestring, "Ep0ch");
    assert_string_equal(before_last->string, "seq");
    assert_true(before_last->valuedouble == 41);
    cJSON_Delete(j);
    /* our own parser reads it as a chat (seq and epoch are not client fields) */
    chat_env_in_t in;
    cJSON *doc = NULL;
    assert_int_equal(parse_n(open.p, open.len, &in, &doc), 0);
    assert_int_equal(in.type, CHAT_ENV_CHAT);
    assert_chat_str(in.text, "t");
    chat_env_free(doc);
    chat_buf_free(&open);
    chat_buf_free(&chat);
}

static void test_build_history(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    const chat_str_t msgs[] = {
        CHAT_LIT("{\"type\":\"chat\",\"room\":\"r\",\"id\":\"a\",\"user\":\"u\",\"text\":\"1\","
                 "\"ts\":1,\"seq\":6,\"epoch\":\"E\"}"),
        CHAT_LIT("{\"type\":\"chat\",\"room\":\"r\",\"id\":\"b\",\"user\":\"u\",\"text\":\"[2]\","
                 "\"ts\":2,\"seq\":7,\"epoch\":\"E\"}"),
    };

    chat_env_build_history(&b, CHAT_LIT("r"), CHAT_LIT("E"), 0, NULL, 0);
    assert_buf_eq(&b, "{\"type\":\"history\",\"room\":\"r\",\"epoch\":\"E\",\"seq\":0,"
                      "\"messages\":[]}");
    chat_buf_reset(&b);
    chat_env_build_history(&b, CHAT_LIT("r"), CHAT_LIT("E"), 9, msgs, 1);
    assert_buf_eq(&b, "{\"type\":\"history\",\"room\":\"r\",\"epoch\":\"E\",\"seq\":9,"
                      "\"messages\":[{\"type\":\"chat\",\"room\":\"r\",\"id\":\"a\",\"user\":"
                      "\"u\",\"text\":\"1\",\"ts\":1,\"seq\":6,\"epoch\":\"E\"}]}");
    chat_buf_reset(&b);
    chat_env_build_history(&b, CHAT_LIT("r\n"), CHAT_LIT("E"), 9, msgs, 2);
    cJSON *j = cjson_of(&b);
    assert_json_str(j, "type", "history");
    assert_json_str(j, "room", "r\n");
    assert_json_str(j, "epoch", "E");
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "seq")->valuedouble == 9);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "messages");
    assert_true(cJSON_IsArray(arr));
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    assert_json_str(cJSON_GetArrayItem(arr, 0), "id", "a");
    assert_json_str(cJSON_GetArrayItem(arr, 1), "text", "[2]");
    assert_true(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, 1), "seq")->valuedouble ==
                7);
    cJSON_Delete(j);
    /* the messages are copied verbatim, between commas */
    assert_non_null(memmem(b.p, b.len, msgs[0].p, msgs[0].len));
    assert_non_null(memmem(b.p, b.len, "\"E\"},{\"type\"", 12));
    chat_buf_free(&b);
}

static void test_build_presence(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    const chat_env_presence_user_t users[] = {{CHAT_LIT("alice"), 2}, {CHAT_LIT("b\"ob"), 1}};

    chat_env_build_presence(&b, CHAT_LIT("r"), 2, users, 2, 1);
    assert_buf_eq(&b, "{\"type\":\"presence\",\"room\":\"r\",\"count\":2,\"users\":["
                      "{\"user\":\"alice\",\"connections\":2},"
                      "{\"user\":\"b\\\"ob\",\"connections\":1}]}");
    cJSON *j = cjson_of(&b);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "users");
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    assert_json_str(cJSON_GetArrayItem(arr, 1), "user", "b\"ob");
    assert_true(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, 0), "connections")->valuedouble ==
        2);
    cJSON_Delete(j);
    /* above --presence-list-max: the count only */
    chat_buf_reset(&b);
    chat_env_build_presence(&b, CHAT_LIT("r"), 5000, users, 2, 0);
    assert_buf_eq(&b, "{\"type\":\"presence\",\"room\":\"r\",\"count\":5000}");
    /* an empty room, listed */
    chat_buf_reset(&b);
    chat_env_build_presence(&b, CHAT_LIT("r"), 0, NULL, 0, 1);
    assert_buf_eq(&b, "{\"type\":\"presence\",\"room\":\"r\",\"count\":0,\"users\":[]}");
    chat_buf_free(&b);
}

/* ---- relayed envelopes (chat_env_check_relayed) ------------------------------------------ */

#define OK_RELAYED CHAT_WIRE_NREASONS /* "accepted" in the helpers below */

/* Checks n bytes of json from an exact-size heap copy; returns the reason, or OK_RELAYED. */
static chat_wire_reason_t relayed_n(const char *json, size_t n, chat_wire_kind_t kind,
                                    const char *room, size_t max_text)
{
    char *copy = chat_xcalloc(n ? n : 1, 1);
    chat_wire_reason_t why = OK_RELAYED;
    int rc;

    if (n > 0)
        memcpy(copy, json, n);
    rc = chat_env_check_relayed(chat_str(copy, n), kind, chat_cstr(room), max_text, NULL, &why);
    free(copy);
    assert_true(rc == 0 || rc == CHAT_EMALFORMED);
    assert_true((rc == 0) == (why == OK_RELAYED));
    return why;
}

static chat_wire_reason_t relayed(const char *json, chat_wire_kind_t kind)
{
    return relayed_n(json, strlen(json), kind, "r", 2000);
}

static chat_wire_reason_t relayed_buf(const chat_buf_t *b, chat_wire_kind_t kind,
                                      const char *room, size_t max_text)
{
    return relayed_n(b->p, b->len, kind, room, max_text);
}

#define assert_relayed(json, kind, want)                                                           \
    do {                                                                                           \
        chat_wire_reason_t got_ = relayed((json), (kind));                                        \
        if (got_ != (want))                                                                        \
            fail_msg("%s: got reason %d, want %d", (json), (int)got_, (int)(want));               \
    } while (0)

/* Builds every relayed envelope with the real builders and checks it is accepted: the check
 * and the builders cannot drift apart. */
static void test_relayed_builder_outputs_accepted(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    const chat_str_t names[] = {CHAT_STR_NULL, CHAT_LIT(""), CHAT_LIT("Alice \"A\" \xc3\xa9")};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        chat_env_chat_t m = {CHAT_LIT("room-1"), CHAT_LIT("n1-k3x9-1f"), CHAT_LIT("guest-n1-7"),
                             CHAT_LIT("hi \"there\"\n\\ \x01 \xe2\x80\xa8 \xf0\x9f\x98\x80"),
                             1700000000123, names[i]};
        chat_buf_reset(&b);
        chat_env_build_chat(&b, &m);
        assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, "room-1", 2000), OK_RELAYED);

        chat_buf_reset(&b);
        chat_env_build_typing(&b, CHAT_LIT("dm:a:b"), CHAT_LIT("a"), names[i]);
        assert_int_equal(relayed_buf(&b, CHAT_WIRE_TYPING, "dm:a:b", 2000), OK_RELAYED);

        chat_buf_reset(&b);
        chat_env_build_system(&b, CHAT_LIT("lobby"), "join", CHAT_LIT("alice"), names[i], 0);
        assert_int_equal(relayed_buf(&b, CHAT_WIRE_SYSTEM, "lobby", 2000), OK_RELAYED);

        chat_buf_reset(&b);
        chat_env_build_system(&b, CHAT_LIT("lobby"), "leave", CHAT_LIT("alice"), names[i],
                              9007199254740992);
        assert_int_equal(relayed_buf(&b, CHAT_WIRE_SYSTEM, "lobby", 2000), OK_RELAYED);
    }
    chat_buf_free(&b);
}

/* Every string at its longest and every byte escaped to 6: still within
 * chat_env_relayed_max_bytes(), so the size bound never refuses a real message. */
static void test_relayed_worst_case_builder_output_fits(void **state)
{
    enum { MAX_TEXT = 1000 };
    static char text[MAX_TEXT], user[CHAT_JWT_MAX_SUB], name[CHAT_JWT_MAX_NAME];
    static char room[CHAT_ROOM_NAME_MAX + 1], id[CHAT_ENV_RELAYED_MAX_ID];
    chat_buf_t b = CHAT_BUF_INIT;

    memset(text, 0x01, sizeof(text)); /* each written as \u0001 */
    memset(user, 0x1f, sizeof(user));
    memset(name, 0x02, sizeof(name));
    memset(room, 'r', CHAT_ROOM_NAME_MAX);
    memset(id, 'i', sizeof(id));
    chat_env_chat_t m = {chat_str(room, CHAT_ROOM_NAME_MAX), chat_str(id, sizeof(id)),
                         chat_str(user, sizeof(user)), chat_str(text, sizeof(text)),
                         -9223372036854775807 - 1, chat_str(name, sizeof(name))};
    chat_env_build_chat(&b, &m);
    assert_true(b.len <= chat_env_relayed_max_bytes(MAX_TEXT));
    /* the ts of INT64_MIN is the longest number but not a valid ts: "fields", not "size" */
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, room, MAX_TEXT), CHAT_WIRE_R_FIELDS);
    m.ts = 9007199254740992;
    chat_buf_reset(&b);
    chat_env_build_chat(&b, &m);
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, room, MAX_TEXT), OK_RELAYED);
    chat_buf_free(&b);
}

static void test_relayed_max_bytes(void **state)
{
    /* the epoch is one more string at its longest, fully escaped */
    const size_t strings = CHAT_ROOM_NAME_MAX + CHAT_ENV_RELAYED_MAX_ID + CHAT_JWT_MAX_SUB +
                           CHAT_JWT_MAX_NAME + CHAT_EPOCH_MAX;
    assert_int_equal(chat_env_relayed_max_bytes(0), 6 * strings + 128);
    assert_int_equal(chat_env_relayed_max_bytes(4096), 6 * (4096 + strings) + 128);
    assert_true(chat_env_relayed_max_bytes(SIZE_MAX) == SIZE_MAX); /* no overflow */
    assert_true(chat_env_relayed_max_bytes(SIZE_MAX / 6) == SIZE_MAX);
}

static void test_relayed_unknown_kind(void **state)
{
    assert_relayed("{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\","
                   "\"ts\":1}",
                   (chat_wire_kind_t)'x', CHAT_WIRE_R_KIND);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}", (chat_wire_kind_t)0,
                   CHAT_WIRE_R_KIND);
}

static void test_relayed_size(void **state)
{
    size_t max = chat_env_relayed_max_bytes(10);
    chat_buf_t b = CHAT_BUF_INIT;

    /* one byte over the bound, refused before anything else is looked at (even bad UTF-8) */
    chat_buf_append(&b, "\xff", 1);
    while (b.len < max + 1)
        chat_buf_append(&b, " ", 1);
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, "r", 10), CHAT_WIRE_R_SIZE);
    /* at the bound the same bytes get past the size check: then they are not UTF-8 */
    assert_int_equal(relayed_n(b.p, max, CHAT_WIRE_CHAT, "r", 10), CHAT_WIRE_R_UTF8);
    chat_buf_free(&b);
}

static void test_relayed_utf8(void **state)
{
    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, 3 bytes */
        "\xf0\x80\x80\xaf", /* overlong, 4 bytes */
        "\xed\xa0\x80",     /* U+D800, a surrogate */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* beyond any plane */
        "\xe2\x82",         /* cut short */
        "\x80",             /* a lone continuation byte */
        "\xff",
    };
    chat_buf_t b = CHAT_BUF_INIT;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        chat_buf_reset(&b);
        chat_buf_appendf(&b, "{\"type\":\"typing\",\"room\":\"r\",\"user\":\"a%sb\"}", bad[i]);
        if (relayed_buf(&b, CHAT_WIRE_TYPING, "r", 100) != CHAT_WIRE_R_UTF8)
            fail_msg("case %zu not refused as utf8", i);
    }
    /* the largest and smallest of each length pass */
    chat_buf_reset(&b);
    chat_buf_appendf(&b, "{\"type\":\"typing\",\"room\":\"r\",\"user\":\"\x7f\xc2\x80\xdf\xbf"
                         "\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80"
                         "\xf4\x8f\xbf\xbf\"}");
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_TYPING, "r", 100), OK_RELAYED);
    chat_buf_free(&b);
}

static void test_relayed_json(void **state)
{
    static const char typing[] = "{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}";
    char deep[256];

    assert_relayed(typing, CHAT_WIRE_TYPING, OK_RELAYED);
    assert_relayed("", CHAT_WIRE_TYPING, CHAT_WIRE_R_JSON);
    assert_relayed("{", CHAT_WIRE_TYPING, CHAT_WIRE_R_JSON);
    assert_relayed("not json", CHAT_WIRE_TYPING, CHAT_WIRE_R_JSON);
    assert_relayed("[{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}]", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_JSON);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"} ", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_JSON);
    assert_relayed(" {\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_JSON);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}{\"type\":\"typing\"}",
                   CHAT_WIRE_TYPING, CHAT_WIRE_R_JSON);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\",}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_JSON);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"\\ud800\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_JSON); /* a lone surrogate escape */
    /* a raw control character inside a string (builders escape them all) */
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"a\nb\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_JSON);
    /* raw control bytes and NULs between tokens: cJSON skips them as whitespace, builders never
     * write them */
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\n\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_JSON);
    assert_int_equal(relayed_n("{\"type\":\"typing\",\"room\"\0\0:\"r\",\"user\":\"u\"}", 41,
                               CHAT_WIRE_TYPING, "r", 10),
                     CHAT_WIRE_R_JSON);
    assert_int_equal(relayed_n("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"a\0b\"}", 41,
                               CHAT_WIRE_TYPING, "r", 10),
                     CHAT_WIRE_R_JSON);
    /* deeper than CHAT_ENV_MAX_DEPTH */
    snprintf(deep, sizeof(deep), "{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\",\"x\":%s%s}",
             "[[[[[[[[[[[[[[[[", "]]]]]]]]]]]]]]]]");
    assert_relayed(deep, CHAT_WIRE_TYPING, CHAT_WIRE_R_JSON);
}

static void test_relayed_type(void **state)
{
    assert_relayed("{\"room\":\"r\",\"user\":\"u\"}", CHAT_WIRE_TYPING, CHAT_WIRE_R_TYPE);
    assert_relayed("{\"type\":1,\"room\":\"r\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_TYPE);
    assert_relayed("{\"type\":\"Typing\",\"room\":\"r\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_TYPE);
    /* a well-formed envelope of another kind than the header says */
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}", CHAT_WIRE_CHAT,
                   CHAT_WIRE_R_TYPE);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}", CHAT_WIRE_SYSTEM,
                   CHAT_WIRE_R_TYPE);
    /* types a node never relays */
    assert_relayed("{\"type\":\"error\",\"room\":\"r\",\"code\":\"x\",\"message\":\"m\"}",
                   CHAT_WIRE_SYSTEM, CHAT_WIRE_R_TYPE);
    assert_relayed("{\"type\":\"welcome\",\"room\":\"r\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_TYPE);
}

static void test_relayed_room(void **state)
{
    assert_relayed("{\"type\":\"typing\",\"user\":\"u\"}", CHAT_WIRE_TYPING, CHAT_WIRE_R_ROOM);
    assert_relayed("{\"type\":\"typing\",\"room\":\"other\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_ROOM);
    assert_relayed("{\"type\":\"typing\",\"room\":\"R\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_ROOM);
    assert_relayed("{\"type\":\"typing\",\"room\":\"rr\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_ROOM);
    assert_relayed("{\"type\":\"typing\",\"room\":\"\",\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_ROOM);
    assert_relayed("{\"type\":\"typing\",\"room\":[\"r\"],\"user\":\"u\"}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_ROOM);
    /* a message for room "a" published on topic "b" */
    assert_int_equal(relayed_n("{\"type\":\"typing\",\"room\":\"a\",\"user\":\"u\"}", 39,
                               CHAT_WIRE_TYPING, "b", 10),
                     CHAT_WIRE_R_ROOM);
}

static void test_relayed_fields(void **state)
{
#define CHAT_OK "\"id\":\"i\",\"user\":\"u\",\"text\":\"t\",\"ts\":1"
    static const char *const bad_chat[] = {
        /* a NUL anywhere: cJSON would cut "chat\u0000x" to "chat", "r\u0000x" to "r" */
        "{\"type\":\"chat\\u0000x\",\"room\":\"r\"," CHAT_OK "}",
        "{\"type\":\"chat\",\"room\":\"r\\u0000x\"," CHAT_OK "}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"admin\\u0000x\",\"text\":\"t\","
        "\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"ab\\u0000cd\","
        "\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"name\\u0000\":\"n\"}",
        /* unknown or duplicate keys, keys of other kinds */
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"admin\":true}",
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"html\":\"<b>x</b>\"}",
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"text\":\"second\"}",
        "{\"type\":\"chat\",\"type\":\"chat\",\"room\":\"r\"," CHAT_OK "}",
        "{\"type\":\"chat\",\"room\":\"r\",\"room\":\"r\"," CHAT_OK "}",
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"event\":\"join\"}",
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"Text\":\"t\"}",
        /* missing fields */
        "{\"type\":\"chat\",\"room\":\"r\",\"user\":\"u\",\"text\":\"t\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"text\":\"t\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\"}",
        /* wrong types and sizes */
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":1,\"user\":\"u\",\"text\":\"t\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"\",\"user\":\"u\",\"text\":\"t\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"\",\"text\":\"t\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":null,\"text\":\"t\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"\",\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":[\"t\"],\"ts\":1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\",\"ts\":\"1\"}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\",\"ts\":-1}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\",\"ts\":1.5}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\","
        "\"ts\":9007199254740994}",
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\",\"ts\":1e400}",
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"name\":5}",
        "{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK ",\"name\":{\"a\":1}}",
    };
    for (size_t i = 0; i < sizeof(bad_chat) / sizeof(bad_chat[0]); i++)
        assert_relayed(bad_chat[i], CHAT_WIRE_CHAT, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"chat\",\"room\":\"r\"," CHAT_OK "}", CHAT_WIRE_CHAT, OK_RELAYED);
    assert_relayed("{\"ts\":1,\"text\":\"t\",\"user\":\"u\",\"id\":\"i\",\"room\":\"r\","
                   "\"type\":\"chat\"}",
                   CHAT_WIRE_CHAT, OK_RELAYED); /* key order is free */
#undef CHAT_OK

    /* typing and system: their own keys only */
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\"}", CHAT_WIRE_TYPING, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\",\"text\":\"t\"}",
                   CHAT_WIRE_TYPING, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\",\"ts\":1}", CHAT_WIRE_TYPING,
                   CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"system\",\"room\":\"r\",\"event\":\"kick\",\"user\":\"u\","
                   "\"ts\":1}",
                   CHAT_WIRE_SYSTEM, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"system\",\"room\":\"r\",\"event\":\"token_expiring\","
                   "\"ttl_ms\":1}",
                   CHAT_WIRE_SYSTEM, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"system\",\"room\":\"r\",\"user\":\"u\",\"ts\":1}", CHAT_WIRE_SYSTEM,
                   CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"system\",\"room\":\"r\",\"event\":\"join\",\"user\":\"u\"}",
                   CHAT_WIRE_SYSTEM, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"system\",\"room\":\"r\",\"event\":\"join\",\"user\":\"u\","
                   "\"ts\":1,\"id\":\"i\"}",
                   CHAT_WIRE_SYSTEM, CHAT_WIRE_R_FIELDS);
}

/* The text limit counts decoded bytes: "\u00e9" is 2 bytes, not 6. */
static void test_relayed_text_limit_is_decoded(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_chat_t m = {CHAT_LIT("r"), CHAT_LIT("i"), CHAT_LIT("u"), CHAT_LIT("\xc3\xa9\xc3\xa9"),
                         1, CHAT_STR_NULL};

    chat_env_build_chat(&b, &m);
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, "r", 4), OK_RELAYED);
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, "r", 3), CHAT_WIRE_R_FIELDS);
    /* written with escapes by hand: 4 decoded bytes too */
    static const char esc[] =
        "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"\\u00e9\\u00e9\","
        "\"ts\":1}";
    assert_int_equal(relayed_n(esc, sizeof(esc) - 1, CHAT_WIRE_CHAT, "r", 4), OK_RELAYED);
    assert_int_equal(relayed_n(esc, sizeof(esc) - 1, CHAT_WIRE_CHAT, "r", 3), CHAT_WIRE_R_FIELDS);
    chat_buf_free(&b);
}

static void test_relayed_string_limits(void **state)
{
    static char user[CHAT_JWT_MAX_SUB + 1], name[CHAT_JWT_MAX_NAME + 1];
    static char id[CHAT_ENV_RELAYED_MAX_ID + 1];
    chat_buf_t b = CHAT_BUF_INIT;

    memset(user, 'u', sizeof(user));
    memset(name, 'n', sizeof(name));
    memset(id, 'i', sizeof(id));
    for (int over = 0; over <= 1; over++) {
        chat_wire_reason_t want = over ? CHAT_WIRE_R_FIELDS : OK_RELAYED;
        chat_env_chat_t m = {CHAT_LIT("r"), chat_str(id, sizeof(id) - 1), CHAT_LIT("u"),
                             CHAT_LIT("t"), 1, CHAT_STR_NULL};
        /* one of id, user, name at its limit (+ over) at a time */
        m.id = chat_str(id, sizeof(id) - 1 + (size_t)over);
        chat_buf_reset(&b);
        chat_env_build_chat(&b, &m);
        assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, "r", 10), want);
        chat_buf_reset(&b);
        chat_env_build_typing(&b, CHAT_LIT("r"), chat_str(user, sizeof(user) - 1 + (size_t)over),
                              CHAT_STR_NULL);
        assert_int_equal(relayed_buf(&b, CHAT_WIRE_TYPING, "r", 10), want);
        chat_buf_reset(&b);
        chat_env_build_system(&b, CHAT_LIT("r"), "join", CHAT_LIT("u"),
                              chat_str(name, sizeof(name) - 1 + (size_t)over), 5);
        assert_int_equal(relayed_buf(&b, CHAT_WIRE_SYSTEM, "r", 10), want);
    }
    chat_buf_free(&b);
}

/* An escaped backslash then u0000 is text, as for client messages. */
static void test_relayed_escaped_backslash_u0000_is_text(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_env_chat_t m = {CHAT_LIT("r"), CHAT_LIT("i"), CHAT_LIT("u"), CHAT_LIT("a\\u0000b"), 1,
                         CHAT_STR_NULL};

    chat_env_build_chat(&b, &m);
    assert_non_null(memmem(b.p, b.len, "a\\\\u0000b", 9));
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, "r", 100), OK_RELAYED);
    /* a raw NUL in the text is written as \u0000 by the builder: refused */
    chat_buf_reset(&b);
    m.text = chat_str("a\0b", 3);
    chat_env_build_chat(&b, &m);
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, "r", 100), CHAT_WIRE_R_FIELDS);
    chat_buf_free(&b);
}

/* ---- relayed chats from the history: seq and epoch ---------------------------------------- */

/* Builds open + seq + MID + epoch + END for room "r" (the three parts of a broker_append). */
static void build_stored(chat_buf_t *b, const char *seq, const char *epoch)
{
    chat_env_chat_t m = {CHAT_LIT("r"),  CHAT_LIT("n1-k-1"), CHAT_LIT("u"),
                         CHAT_LIT("hi"), 1700000000000,      CHAT_LIT("U")};
    chat_buf_reset(b);
    chat_env_build_chat_open(b, &m);
    chat_buf_appendf(b, "%s" CHAT_ENV_SEQ_MID "%s" CHAT_ENV_SEQ_END, seq, epoch);
}

/* A stored chat passes, and the check hands its seq and epoch over. */
static void test_relayed_stored_chat_fills_seq_and_epoch(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_wire_reason_t why = OK_RELAYED;
    chat_wire_hdr_t h;

    build_stored(&b, "41", "Ep0ch");
    memset(&h, 0x5a, sizeof(h));
    h.origin_conn = 77;
    assert_int_equal(
        chat_env_check_relayed(chat_buf_str(&b), CHAT_WIRE_CHAT, CHAT_LIT("r"), 100, &h, &why), 0);
    assert_true(h.seq == 41);
    assert_int_equal(h.epoch_len, 5);
    assert_string_equal(h.epoch, "Ep0ch");
    assert_true(h.origin_conn == 77); /* the rest of the header is not touched */
    assert_int_equal(why, OK_RELAYED);

    /* the largest seq, the longest epoch */
    build_stored(&b, "9007199254740992", EPOCH32);
    assert_int_equal(
        chat_env_check_relayed(chat_buf_str(&b), CHAT_WIRE_CHAT, CHAT_LIT("r"), 100, &h, &why), 0);
    assert_true(h.seq == ((uint64_t)1 << 53));
    assert_int_equal(h.epoch_len, CHAT_EPOCH_MAX);
    assert_string_equal(h.epoch, EPOCH32);

    /* a chat without them: 0 and "", whatever h held */
    chat_env_chat_t m = {CHAT_LIT("r"), CHAT_LIT("i"), CHAT_LIT("u"), CHAT_LIT("t"), 1,
                         CHAT_STR_NULL};
    chat_buf_reset(&b);
    chat_env_build_chat(&b, &m);
    memset(&h, 0x5a, sizeof(h));
    assert_int_equal(
        chat_env_check_relayed(chat_buf_str(&b), CHAT_WIRE_CHAT, CHAT_LIT("r"), 100, &h, &why), 0);
    assert_true(h.seq == 0);
    assert_int_equal(h.epoch_len, 0);
    assert_string_equal(h.epoch, "");
    /* typing and system too */
    chat_buf_reset(&b);
    chat_env_build_typing(&b, CHAT_LIT("r"), CHAT_LIT("u"), CHAT_STR_NULL);
    memset(&h, 0x5a, sizeof(h));
    assert_int_equal(
        chat_env_check_relayed(chat_buf_str(&b), CHAT_WIRE_TYPING, CHAT_LIT("r"), 100, &h, &why),
        0);
    assert_true(h.seq == 0 && h.epoch_len == 0 && h.epoch[0] == '\0');
    /* h may be NULL */
    build_stored(&b, "3", "e");
    assert_int_equal(
        chat_env_check_relayed(chat_buf_str(&b), CHAT_WIRE_CHAT, CHAT_LIT("r"), 100, NULL, &why),
        0);
    /* a refusal leaves h alone */
    build_stored(&b, "0", "e");
    memset(&h, 0x5a, sizeof(h));
    assert_int_equal(
        chat_env_check_relayed(chat_buf_str(&b), CHAT_WIRE_CHAT, CHAT_LIT("r"), 100, &h, &why),
        CHAT_EMALFORMED);
    assert_int_equal(why, CHAT_WIRE_R_FIELDS);
    assert_true(h.epoch_len == 0x5a5a5a5a5a5a5a5aULL && h.seq == 0x5a5a5a5a5a5a5a5aULL);
    chat_buf_free(&b);
}

static void test_relayed_seq_and_epoch_refused(void **state)
{
#define CHAT_OK                                                                                    \
    "{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\",\"user\":\"u\",\"text\":\"t\",\"ts\":1"
    static const char *const bad[] = {
        CHAT_OK ",\"seq\":41}",                /* seq without epoch */
        CHAT_OK ",\"epoch\":\"e\"}",           /* epoch without seq */
        CHAT_OK ",\"seq\":0,\"epoch\":\"e\"}", /* seq starts at 1 */
        CHAT_OK ",\"seq\":-1,\"epoch\":\"e\"}",
        CHAT_OK ",\"seq\":1.5,\"epoch\":\"e\"}",
        CHAT_OK ",\"seq\":\"1\",\"epoch\":\"e\"}",
        CHAT_OK ",\"seq\":null,\"epoch\":\"e\"}",
        CHAT_OK ",\"seq\":9007199254740993,\"epoch\":\"e\"}", /* 2^53 + 1 */
        CHAT_OK ",\"seq\":1e400,\"epoch\":\"e\"}",
        CHAT_OK ",\"seq\":1,\"epoch\":\"\"}", /* a bad epoch */
        CHAT_OK ",\"seq\":1,\"epoch\":\"a.b\"}",
        CHAT_OK ",\"seq\":1,\"epoch\":\"a b\"}",
        CHAT_OK ",\"seq\":1,\"epoch\":\"" EPOCH32 "x\"}", /* 33 bytes */
        CHAT_OK ",\"seq\":1,\"epoch\":5}",
        CHAT_OK ",\"seq\":1,\"epoch\":[\"e\"]}",
        CHAT_OK ",\"seq\":1,\"epoch\":\"e\\u0000x\"}",
        CHAT_OK ",\"seq\":1,\"seq\":2,\"epoch\":\"e\"}", /* twice */
        CHAT_OK ",\"seq\":1,\"epoch\":\"e\",\"epoch\":\"e\"}",
        CHAT_OK ",\"Seq\":1,\"epoch\":\"e\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_relayed(bad[i], CHAT_WIRE_CHAT, CHAT_WIRE_R_FIELDS);
    /* both, in any order and place, in any JSON spelling of a whole number */
    assert_relayed(CHAT_OK ",\"seq\":1,\"epoch\":\"e\"}", CHAT_WIRE_CHAT, OK_RELAYED);
    assert_relayed("{\"epoch\":\"e\",\"seq\":1e1,\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\","
                   "\"user\":\"u\",\"text\":\"t\",\"ts\":1}",
                   CHAT_WIRE_CHAT, OK_RELAYED);
#undef CHAT_OK
    /* typing and system never carry them */
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\",\"seq\":1,\"epoch\":\"e\"}",
                   CHAT_WIRE_TYPING, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\",\"seq\":1}",
                   CHAT_WIRE_TYPING, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"system\",\"room\":\"r\",\"event\":\"join\",\"user\":\"u\",\"ts\":1,"
                   "\"seq\":1,\"epoch\":\"e\"}",
                   CHAT_WIRE_SYSTEM, CHAT_WIRE_R_FIELDS);
    assert_relayed("{\"type\":\"system\",\"room\":\"r\",\"event\":\"join\",\"user\":\"u\",\"ts\":1,"
                   "\"epoch\":\"e\"}",
                   CHAT_WIRE_SYSTEM, CHAT_WIRE_R_FIELDS);
}

/* The longest stored chat a node builds is within chat_env_relayed_max_bytes(). */
static void test_relayed_worst_case_stored_chat_fits(void **state)
{
    enum { MAX_TEXT = 1000 };
    static char text[MAX_TEXT], user[CHAT_JWT_MAX_SUB], name[CHAT_JWT_MAX_NAME];
    static char room[CHAT_ROOM_NAME_MAX + 1], id[CHAT_ENV_RELAYED_MAX_ID];
    chat_buf_t b = CHAT_BUF_INIT;

    memset(text, 0x01, sizeof(text));
    memset(user, 0x1f, sizeof(user));
    memset(name, 0x02, sizeof(name));
    memset(room, 'r', CHAT_ROOM_NAME_MAX);
    memset(id, 'i', sizeof(id));
    chat_env_chat_t m = {
        chat_str(room, CHAT_ROOM_NAME_MAX), chat_str(id, sizeof(id)), chat_str(user, sizeof(user)),
        chat_str(text, sizeof(text)),       9007199254740992,         chat_str(name, sizeof(name))};
    chat_env_build_chat_open(&b, &m);
    chat_buf_appendf(&b, "9007199254740992" CHAT_ENV_SEQ_MID EPOCH32 CHAT_ENV_SEQ_END);
    assert_true(b.len <= chat_env_relayed_max_bytes(MAX_TEXT));
    assert_int_equal(relayed_buf(&b, CHAT_WIRE_CHAT, room, MAX_TEXT), OK_RELAYED);
    chat_buf_free(&b);
}

/* ---- JWT halves: a raw NUL byte is refused like the \u0000 escape ------------------------- */
/* (test_auth.c covers the JWT parsers; this is the raw-byte case of the NUL refusal.) */
static void test_jwt_raw_nul_byte_is_badreq(void **state)
{
    static const char claims[] = "{\"sub\":\"admin\0x\"}";
    static const char header[] = "{\"alg\":\"HS256\",\"kid\":\"k\0\"}";
    chat_jwt_claims_t c;
    chat_jwt_header_t h;
    char *copy = chat_xcalloc(sizeof(claims) - 1, 1);

    memcpy(copy, claims, sizeof(claims) - 1);
    assert_int_equal(chat_env_parse_jwt_claims(copy, sizeof(claims) - 1, &c), CHAT_EBADREQ);
    assert_null(c.sub); /* never "admin" */
    assert_non_null(c.error);
    chat_env_jwt_claims_dispose(&c);
    free(copy);
    copy = chat_xcalloc(sizeof(header) - 1, 1);
    memcpy(copy, header, sizeof(header) - 1);
    assert_int_equal(chat_env_parse_jwt_header(copy, sizeof(header) - 1, &h), CHAT_EBADREQ);
    free(copy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_empty_is_badjson),
        cmocka_unit_test(test_parse_null_pointer_is_badjson),
        cmocka_unit_test(test_parse_whitespace_only_is_badjson),
        cmocka_unit_test(test_parse_invalid_json_is_badjson),
        cmocka_unit_test(test_parse_truncated_string_is_badjson),
        cmocka_unit_test(test_parse_trailing_garbage_is_badjson),
        cmocka_unit_test(test_parse_trailing_whitespace_is_ok),
        cmocka_unit_test(test_parse_array_is_badjson),
        cmocka_unit_test(test_parse_string_is_badjson),
        cmocka_unit_test(test_parse_number_is_badjson),
        cmocka_unit_test(test_parse_null_literal_is_badjson),
        cmocka_unit_test(test_parse_deep_nesting_is_badreq),
        cmocka_unit_test(test_build_identity_with_name),
        cmocka_unit_test(test_build_token_messages),
        cmocka_unit_test(test_parse_refresh),
        cmocka_unit_test(test_parse_join_since_ok),
        cmocka_unit_test(test_parse_join_since_found_among_other_members),
        cmocka_unit_test(test_parse_join_without_since),
        cmocka_unit_test(test_parse_join_since_refused),
        cmocka_unit_test(test_parse_join_since_bad_epoch),
        cmocka_unit_test(test_parse_since_cid_and_other_types),
        cmocka_unit_test(test_parse_history_ok),
        cmocka_unit_test(test_parse_history_limit_clamped),
        cmocka_unit_test(test_parse_history_refused),
        cmocka_unit_test(test_parse_presence),
        cmocka_unit_test(test_build_joined_with_seq_and_recovered),
        cmocka_unit_test(test_build_ack_with_seq),
        cmocka_unit_test(test_build_chat_open),
        cmocka_unit_test(test_build_history),
        cmocka_unit_test(test_build_presence),
        cmocka_unit_test(test_parse_depth_16_passes_17_refused),
        cmocka_unit_test(test_parse_64_keys_pass_65_refused),
        cmocka_unit_test(test_parse_64_items_pass_65_refused),
        cmocka_unit_test(test_parse_values_bounded),
        cmocka_unit_test(test_peek),
        cmocka_unit_test(test_peek_new_types),
        cmocka_unit_test(test_parse_type_missing_is_badreq),
        cmocka_unit_test(test_parse_empty_object_is_badreq),
        cmocka_unit_test(test_parse_type_number_is_badreq),
        cmocka_unit_test(test_parse_type_null_is_badreq),
        cmocka_unit_test(test_parse_type_key_is_case_sensitive),
        cmocka_unit_test(test_parse_unknown_type),
        cmocka_unit_test(test_parse_type_value_is_case_sensitive),
        cmocka_unit_test(test_parse_type_prefix_is_unknown),
        cmocka_unit_test(test_parse_join_ok),
        cmocka_unit_test(test_parse_join_missing_room_is_badreq),
        cmocka_unit_test(test_parse_join_numeric_room_is_badreq),
        cmocka_unit_test(test_parse_join_ignores_text),
        cmocka_unit_test(test_parse_leave_ok),
        cmocka_unit_test(test_parse_leave_missing_room_is_badreq),
        cmocka_unit_test(test_parse_leave_null_room_is_badreq),
        cmocka_unit_test(test_parse_chat_ok),
        cmocka_unit_test(test_parse_chat_room_is_optional),
        cmocka_unit_test(test_parse_chat_empty_text_is_ok),
        cmocka_unit_test(test_parse_chat_missing_text_is_badreq),
        cmocka_unit_test(test_parse_chat_null_text_is_badreq),
        cmocka_unit_test(test_parse_chat_numeric_text_is_badreq),
        cmocka_unit_test(test_parse_chat_array_room_is_badreq),
        cmocka_unit_test(test_parse_chat_unicode_escape_is_decoded),
        cmocka_unit_test(test_parse_nul_in_text_is_badreq),
        cmocka_unit_test(test_parse_nul_in_room_is_badreq),
        cmocka_unit_test(test_parse_nul_in_cid_is_badreq_and_not_echoed),
        cmocka_unit_test(test_parse_nul_in_token_is_badreq),
        cmocka_unit_test(test_parse_nul_in_type_is_badreq),
        cmocka_unit_test(test_parse_nul_in_unknown_field_is_badreq),
        cmocka_unit_test(test_parse_nul_in_key_is_badreq),
        cmocka_unit_test(test_parse_raw_nul_byte_in_string_is_badreq),
        cmocka_unit_test(test_parse_escaped_backslash_u0000_is_text),
        cmocka_unit_test(test_parse_cid_length_is_decoded),
        cmocka_unit_test(test_parse_typing_without_room),
        cmocka_unit_test(test_parse_typing_with_room),
        cmocka_unit_test(test_parse_typing_object_room_is_badreq),
        cmocka_unit_test(test_parse_ping_ok),
        cmocka_unit_test(test_parse_ping_does_not_fill_room),
        cmocka_unit_test(test_parse_ping_wrongly_typed_room_is_badreq),
        cmocka_unit_test(test_parse_cid_filled),
        cmocka_unit_test(test_parse_cid_empty_is_present),
        cmocka_unit_test(test_parse_cid_wrong_type_is_badreq),
        cmocka_unit_test(test_parse_cid_at_max_is_ok),
        cmocka_unit_test(test_parse_cid_too_long_is_badreq),
        cmocka_unit_test(test_parse_cid_echoed_on_missing_type),
        cmocka_unit_test(test_parse_cid_echoed_on_unknown_type),
        cmocka_unit_test(test_parse_cid_echoed_on_missing_field),
        cmocka_unit_test(test_parse_cid_echoed_on_wrong_field_type),
        cmocka_unit_test(test_parse_ignores_client_user_id_ts),
        cmocka_unit_test(test_parse_duplicate_key_first_wins),
        cmocka_unit_test(test_parse_slice_of_larger_buffer),
        cmocka_unit_test(test_parse_slice_cut_mid_object_is_badjson),
        cmocka_unit_test(test_parse_resets_out),
        cmocka_unit_test(test_free_null_is_noop),
        cmocka_unit_test(test_build_welcome),
        cmocka_unit_test(test_build_joined),
        cmocka_unit_test(test_build_left),
        cmocka_unit_test(test_build_pong),
        cmocka_unit_test(test_build_chat),
        cmocka_unit_test(test_build_chat_extreme_ts),
        cmocka_unit_test(test_build_ack),
        cmocka_unit_test(test_build_typing),
        cmocka_unit_test(test_build_system),
        cmocka_unit_test(test_build_error_minimal),
        cmocka_unit_test(test_build_error_with_cid),
        cmocka_unit_test(test_build_error_with_room),
        cmocka_unit_test(test_build_error_with_cid_and_room),
        cmocka_unit_test(test_build_error_empty_cid_is_kept),
        cmocka_unit_test(test_build_refusal),
        cmocka_unit_test(test_build_appends),
        cmocka_unit_test(test_build_null_required_string_is_empty),
        cmocka_unit_test(test_escape_quote_and_backslash),
        cmocka_unit_test(test_escape_short_control_chars),
        cmocka_unit_test(test_escape_other_control_chars),
        cmocka_unit_test(test_escape_del_passes_through),
        cmocka_unit_test(test_escape_utf8_passes_through),
        cmocka_unit_test(test_escape_line_and_paragraph_separators),
        cmocka_unit_test(test_escape_truncated_utf8_at_end),
        cmocka_unit_test(test_escape_in_error_and_refusal_strings),
        cmocka_unit_test(test_roundtrip_chat_through_cjson),
        cmocka_unit_test(test_roundtrip_error_through_cjson),
        cmocka_unit_test(test_roundtrip_each_builder_is_valid_json),
        cmocka_unit_test(test_roundtrip_chat_through_own_parser),
        cmocka_unit_test(test_relayed_builder_outputs_accepted),
        cmocka_unit_test(test_relayed_worst_case_builder_output_fits),
        cmocka_unit_test(test_relayed_max_bytes),
        cmocka_unit_test(test_relayed_unknown_kind),
        cmocka_unit_test(test_relayed_size),
        cmocka_unit_test(test_relayed_utf8),
        cmocka_unit_test(test_relayed_json),
        cmocka_unit_test(test_relayed_type),
        cmocka_unit_test(test_relayed_room),
        cmocka_unit_test(test_relayed_fields),
        cmocka_unit_test(test_relayed_text_limit_is_decoded),
        cmocka_unit_test(test_relayed_string_limits),
        cmocka_unit_test(test_relayed_escaped_backslash_u0000_is_text),
        cmocka_unit_test(test_relayed_stored_chat_fills_seq_and_epoch),
        cmocka_unit_test(test_relayed_seq_and_epoch_refused),
        cmocka_unit_test(test_relayed_worst_case_stored_chat_fits),
        cmocka_unit_test(test_jwt_raw_nul_byte_is_badreq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
