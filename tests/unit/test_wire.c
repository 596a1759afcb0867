/* tests/unit/test_wire.c - common/wire.c: the exact header bytes, header round trips (every kind,
 * both flags, extreme numbers), the JSON part returned exactly (empty, with spaces, newlines and
 * NULs), and CHAT_EMALFORMED for every malformed variant of the header line. Every parse input is
 * copied into a heap block of exactly its length, so ASan catches any read past the message.
 * chat_wire_check(): what nodes publish (header + real builder output) is accepted; each header
 * reason (grammar, flags, node id, conn, the publish-time window, kind, size) with real inputs;
 * the JSON reasons reach the caller (their cases are in test_envelope.c); a chat from the
 * history (chat_env_build_chat_open + seq + epoch) hands its seq and epoch over in the header
 * struct, and chat_wire_parse() leaves them 0 and "". */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "envelope.h"
#include "err.h"
#include "str.h"
#include "wire.h"

/* ---- helpers ----------------------------------------------------------------------------- */

typedef struct parsed {
    char *copy; /* exact-size heap copy of the input; h.origin_node and json borrow it */
    chat_wire_hdr_t h;
    chat_str_t json;
    int rc;
} parsed_t;

static void parse_n(parsed_t *r, const char *p, size_t n)
{
    r->copy = malloc(n ? n : 1);
    assert_non_null(r->copy);
    if (n)
        memcpy(r->copy, p, n);
    memset(&r->h, 0, sizeof(r->h));
    r->json = CHAT_STR_NULL;
    r->rc = chat_wire_parse(chat_str(r->copy, n), &r->h, &r->json);
}

static void parsed_free(parsed_t *r)
{
    free(r->copy);
    r->copy = NULL;
}

static void expect_malformed_n(const char *p, size_t n)
{
    parsed_t r;

    parse_n(&r, p, n);
    if (r.rc != CHAT_EMALFORMED)
        fail_msg("\"%.*s\": got %d, want CHAT_EMALFORMED", (int)n, p, r.rc);
    parsed_free(&r);
}

static void expect_malformed(const char *s)
{
    expect_malformed_n(s, strlen(s));
}

static void assert_str_eq(chat_str_t s, const char *want, size_t want_len)
{
    assert_non_null(s.p);
    assert_int_equal(s.len, want_len);
    if (want_len)
        assert_memory_equal(s.p, want, want_len);
}

/* Builds header + json, parses it back and checks every field and the JSON part. */
static void round_trip(const chat_wire_hdr_t *h, const char *json, size_t json_len)
{
    chat_buf_t b = CHAT_BUF_INIT;
    parsed_t r;

    chat_wire_put_header(&b, h);
    size_t hlen = b.len;
    chat_buf_append(&b, json, json_len);
    parse_n(&r, b.p, b.len);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.h.kind, h->kind);
    assert_int_equal(r.h.exclude_origin, h->exclude_origin ? 1 : 0);
    assert_str_eq(r.h.origin_node, h->origin_node.p, h->origin_node.len);
    assert_true(r.h.origin_conn == h->origin_conn);
    assert_true(r.h.publish_ms == h->publish_ms);
    assert_true(r.json.p == r.copy + hlen);
    assert_int_equal(r.json.len, json_len);
    if (json_len)
        assert_memory_equal(r.json.p, json, json_len);
    parsed_free(&r);
    chat_buf_free(&b);
}

static chat_wire_hdr_t hdr(chat_wire_kind_t kind, int excl, const char *node, uint64_t conn,
                           int64_t ms)
{
    chat_wire_hdr_t h = {.kind = kind, .exclude_origin = excl, .origin_node = chat_cstr(node),
                         .origin_conn = conn, .publish_ms = ms};
    return h;
}

/* ---- put_header -------------------------------------------------------------------------- */

static void test_put_header_exact_bytes(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, "node-a", 42, 1700000000123);

    chat_wire_put_header(&b, &h);
    assert_int_equal(b.len, strlen("CGW1 c - node-a 42 1700000000123\n"));
    assert_memory_equal(b.p, "CGW1 c - node-a 42 1700000000123\n", b.len);
    chat_buf_free(&b);
}

static void test_put_header_exclude_flag_and_kinds(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_wire_hdr_t t = hdr(CHAT_WIRE_TYPING, 1, "n", 0, 0);
    chat_wire_hdr_t s = hdr(CHAT_WIRE_SYSTEM, 1, "n", 7, 8);

    chat_wire_put_header(&b, &t);
    chat_wire_put_header(&b, &s);
    assert_int_equal(b.len, strlen("CGW1 t x n 0 0\nCGW1 s x n 7 8\n"));
    assert_memory_equal(b.p, "CGW1 t x n 0 0\nCGW1 s x n 7 8\n", b.len);
    chat_buf_free(&b);
}

static void test_put_header_appends_after_existing_bytes(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, "n", 1, 2);

    chat_buf_append(&b, "prefix|", 7);
    chat_wire_put_header(&b, &h);
    assert_int_equal(b.len, strlen("prefix|CGW1 c - n 1 2\n"));
    assert_memory_equal(b.p, "prefix|CGW1 c - n 1 2\n", b.len);
    chat_buf_free(&b);
}

/* ---- round trips ------------------------------------------------------------------------- */

static void test_round_trip_chat(void **state)
{
    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, "gw-1", 12345, 1700000000000);
    const char *json = "{\"type\":\"chat\",\"room\":\"r\",\"text\":\"hi\"}";
    round_trip(&h, json, strlen(json));
}

static void test_round_trip_typing_excluded(void **state)
{
    chat_wire_hdr_t h = hdr(CHAT_WIRE_TYPING, 1, "node.b_c", 9, 1);
    round_trip(&h, "{\"type\":\"typing\"}", 17);
}

static void test_round_trip_system_excluded(void **state)
{
    chat_wire_hdr_t h = hdr(CHAT_WIRE_SYSTEM, 1, "n", 1, 2);
    round_trip(&h, "{\"type\":\"system\",\"event\":\"join\"}", 33);
}

static void test_round_trip_extreme_numbers(void **state)
{
    chat_wire_hdr_t zero = hdr(CHAT_WIRE_CHAT, 0, "n", 0, 0);
    chat_wire_hdr_t max = hdr(CHAT_WIRE_CHAT, 1, "n", UINT64_MAX, INT64_MAX);

    round_trip(&zero, "{}", 2);
    round_trip(&max, "{}", 2);
}

static void test_round_trip_long_node(void **state)
{
    char node[65];

    memset(node, 'N', 64);
    node[64] = '\0';
    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, node, 3, 4);
    round_trip(&h, "{}", 2);
}

static void test_parse_known_text(void **state)
{
    static const char msg[] = "CGW1 s x n2 18446744073709551615 9223372036854775807\n{\"a\":1}";
    parsed_t r;

    parse_n(&r, msg, sizeof(msg) - 1);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.h.kind, CHAT_WIRE_SYSTEM);
    assert_int_equal(r.h.exclude_origin, 1);
    assert_str_eq(r.h.origin_node, "n2", 2);
    assert_true(r.h.origin_conn == UINT64_MAX);
    assert_true(r.h.publish_ms == INT64_MAX);
    assert_str_eq(r.json, "{\"a\":1}", 7);
    parsed_free(&r);
}

static void test_node_borrows_input(void **state)
{
    static const char msg[] = "CGW1 c - abc 1 2\n{}";
    parsed_t r;

    parse_n(&r, msg, sizeof(msg) - 1);
    assert_int_equal(r.rc, 0);
    assert_true(r.h.origin_node.p == r.copy + 9);
    parsed_free(&r);
}

/* ---- the JSON part ----------------------------------------------------------------------- */

static void test_json_empty(void **state)
{
    static const char msg[] = "CGW1 c - n 1 2\n";
    parsed_t r;

    parse_n(&r, msg, sizeof(msg) - 1);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.json.len, 0);
    assert_true(r.json.p == r.copy + sizeof(msg) - 1);
    parsed_free(&r);

    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, "n", 1, 2);
    round_trip(&h, "", 0);
}

static void test_json_with_spaces_and_newlines_returned_exactly(void **state)
{
    static const char json[] = " { \"text\" : \"a b\\nc\" }\n\n CGW1 c - n 1 2\n ";
    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, "n", 1, 2);
    round_trip(&h, json, sizeof(json) - 1);
}

static void test_json_with_nul_bytes_returned_exactly(void **state)
{
    static const char json[] = "{\"a\":\"\0\"}\0tail";
    chat_wire_hdr_t h = hdr(CHAT_WIRE_TYPING, 1, "n", 5, 6);
    round_trip(&h, json, sizeof(json) - 1);
}

static void test_json_not_validated(void **state)
{
    static const char json[] = "not json at all \xFF";
    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, "n", 1, 2);
    round_trip(&h, json, sizeof(json) - 1);
}

/* ---- malformed: magic, kind, flags ------------------------------------------------------- */

static void test_empty_is_malformed(void **state)
{
    chat_wire_hdr_t h;
    chat_str_t json;

    expect_malformed_n("", 0);
    assert_int_equal(chat_wire_parse(CHAT_STR_NULL, &h, &json), CHAT_EMALFORMED);
}

static void test_bad_magic_is_malformed(void **state)
{
    expect_malformed("CGW2 c - n 1 2\n{}");
    expect_malformed("cgw1 c - n 1 2\n{}");
    expect_malformed("CGW c - n 1 2\n{}");
    expect_malformed("CGW11 c - n 1 2\n{}");
    expect_malformed("XCGW1 c - n 1 2\n{}");
    expect_malformed("{\"type\":\"chat\"}");
}

static void test_bad_kind_is_malformed(void **state)
{
    expect_malformed("CGW1 x - n 1 2\n{}");
    expect_malformed("CGW1 C - n 1 2\n{}");
    expect_malformed("CGW1 - - n 1 2\n{}");
    expect_malformed("CGW1 cc - n 1 2\n{}");
    expect_malformed("CGW1 chat - n 1 2\n{}");
    expect_malformed_n("CGW1 \0 - n 1 2\n{}", 17);
}

static void test_bad_flags_is_malformed(void **state)
{
    expect_malformed("CGW1 c X n 1 2\n{}");
    expect_malformed("CGW1 c + n 1 2\n{}");
    expect_malformed("CGW1 c y n 1 2\n{}");
    expect_malformed("CGW1 c xx n 1 2\n{}");
    expect_malformed("CGW1 c -- n 1 2\n{}");
}

/* ---- malformed: missing or empty fields -------------------------------------------------- */

static void test_missing_fields_are_malformed(void **state)
{
    expect_malformed("CGW1\n{}");
    expect_malformed("CGW1 c\n{}");
    expect_malformed("CGW1 c -\n{}");
    expect_malformed("CGW1 c - n\n{}");
    expect_malformed("CGW1 c - n 1\n{}");
    expect_malformed("CGW1 c - 1 2\n{}"); /* node missing: the numbers shift left */
    expect_malformed("CGW1 - n 1 2\n{}"); /* kind missing */
}

static void test_empty_fields_are_malformed(void **state)
{
    expect_malformed(" CGW1 c - n 1 2\n{}");
    expect_malformed("CGW1  c - n 1 2\n{}");
    expect_malformed("CGW1 c  - n 1 2\n{}");
    expect_malformed("CGW1 c -  n 1 2\n{}");
    expect_malformed("CGW1 c - n  1 2\n{}");
    expect_malformed("CGW1 c - n 1  2\n{}");
    expect_malformed("CGW1 c - n 1 \n{}");
}

static void test_extra_field_is_malformed(void **state)
{
    expect_malformed("CGW1 c - n 1 2 3\n{}");
    expect_malformed("CGW1 c - n 1 2 \n{}");
    expect_malformed("CGW1 c - two words 1 2\n{}");
}

/* ---- malformed: numbers ------------------------------------------------------------------ */

static void test_non_numeric_conn_is_malformed(void **state)
{
    expect_malformed("CGW1 c - n abc 2\n{}");
    expect_malformed("CGW1 c - n 1a 2\n{}");
    expect_malformed("CGW1 c - n -1 2\n{}");
    expect_malformed("CGW1 c - n +1 2\n{}");
    expect_malformed("CGW1 c - n 1.0 2\n{}");
    expect_malformed("CGW1 c - n 0x10 2\n{}");
}

static void test_non_numeric_ms_is_malformed(void **state)
{
    expect_malformed("CGW1 c - n 1 abc\n{}");
    expect_malformed("CGW1 c - n 1 2x\n{}");
    expect_malformed("CGW1 c - n 1 -2\n{}");
    expect_malformed("CGW1 c - n 1 1e3\n{}");
    expect_malformed("CGW1 c - n 1 2\r\n{}");
}

static void test_overflowing_conn_is_malformed(void **state)
{
    expect_malformed("CGW1 c - n 18446744073709551616 2\n{}");  /* UINT64_MAX + 1 */
    expect_malformed("CGW1 c - n 99999999999999999999 2\n{}");  /* 20 digits */
    expect_malformed("CGW1 c - n 184467440737095516150 2\n{}"); /* 21 digits */
}

static void test_overflowing_ms_is_malformed(void **state)
{
    expect_malformed("CGW1 c - n 1 9223372036854775808\n{}"); /* INT64_MAX + 1 */
    expect_malformed("CGW1 c - n 1 18446744073709551615\n{}");
    expect_malformed("CGW1 c - n 1 18446744073709551616\n{}");
}

/* ---- malformed: the newline -------------------------------------------------------------- */

static void test_missing_newline_is_malformed(void **state)
{
    expect_malformed("CGW1 c - n 1 2");
    expect_malformed("CGW1 c - n 1 2 {}");
    expect_malformed("CGW1 c - n 1 2{}");
    expect_malformed("CGW1 c - n 1 2\r{}");
}

static void test_newline_inside_header_is_malformed(void **state)
{
    expect_malformed("CGW1\nc - n 1 2\n{}");
    expect_malformed("CGW1 c\n- n 1 2\n{}");
    expect_malformed("CGW1 c - n\n1 2\n{}");
    expect_malformed("CGW1 c - n 1\n2\n{}");
}

static void test_truncated_at_every_length_is_malformed(void **state)
{
    static const char msg[] = "CGW1 c - node 123 456\n";
    /* Every strict prefix lacks the newline; only the full header parses. */
    for (size_t n = 0; n < sizeof(msg) - 1; n++)
        expect_malformed_n(msg, n);
    parsed_t r;
    parse_n(&r, msg, sizeof(msg) - 1);
    assert_int_equal(r.rc, 0);
    parsed_free(&r);
}

/* ---- chat_wire_check: what a receiving node relays --------------------------------------- */

#define NOW_MS     1700000000000LL
#define MAX_TEXT   100
#define OK_CHECKED CHAT_WIRE_NREASONS

/* Checks n bytes of data (exact-size heap copy) as if received on topic at now_ms; returns the
 * reason, or OK_CHECKED. On success also checks that json is the part after the header. */
static chat_wire_reason_t check_at(const char *topic, const char *p, size_t n, int64_t now_ms)
{
    chat_wire_limits_t lim = {.now_ms = now_ms, .max_text_bytes = MAX_TEXT};
    chat_wire_reason_t why = OK_CHECKED;
    chat_wire_hdr_t h;
    chat_str_t json;
    char *copy = malloc(n ? n : 1);
    int rc;

    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    rc = chat_wire_check(chat_cstr(topic), chat_str(copy, n), &lim, &h, &json, &why);
    assert_true(rc == 0 || rc == CHAT_EMALFORMED);
    assert_true((rc == 0) == (why == OK_CHECKED));
    if (rc == 0) {
        const char *nl = memchr(copy, '\n', n);
        assert_non_null(nl);
        assert_true(json.p == nl + 1 && json.len == n - (size_t)(nl + 1 - copy));
    }
    free(copy);
    return why;
}

static chat_wire_reason_t check_str(const char *topic, const char *msg)
{
    return check_at(topic, msg, strlen(msg), NOW_MS);
}

#define TYPING_R "{\"type\":\"typing\",\"room\":\"r\",\"user\":\"u\"}"

#define assert_checked(msg, want)                                                                  \
    do {                                                                                           \
        chat_wire_reason_t got_ = check_str("r", (msg));                                           \
        if (got_ != (want))                                                                        \
            fail_msg("%s: got reason %d, want %d", (msg), (int)got_, (int)(want));                \
    } while (0)

/* Header + builder output, exactly as gw__publish() makes them: accepted, fields returned. */
static void test_check_accepts_what_nodes_publish(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_wire_limits_t lim = {.now_ms = NOW_MS, .max_text_bytes = MAX_TEXT};
    chat_wire_reason_t why = OK_CHECKED;
    chat_wire_hdr_t got;
    chat_str_t json;
    char text[MAX_TEXT];

    memset(text, 'x', sizeof(text));
    for (int k = 0; k < 3; k++) {
        chat_wire_hdr_t h = hdr(k == 0 ? CHAT_WIRE_CHAT : k == 1 ? CHAT_WIRE_TYPING : CHAT_WIRE_SYSTEM,
                                k != 0, "gw-1.a_B", 12345, NOW_MS - 20);
        chat_buf_reset(&b);
        chat_wire_put_header(&b, &h);
        size_t hlen = b.len;
        if (k == 0) {
            chat_env_chat_t m = {CHAT_LIT("lobby"), CHAT_LIT("gw-1.a_B-k3x9-1"),
                                 CHAT_LIT("guest-gw-1.a_B-12345"), chat_str(text, sizeof(text)),
                                 NOW_MS - 21, CHAT_LIT("Guest")};
            chat_env_build_chat(&b, &m);
        } else if (k == 1) {
            chat_env_build_typing(&b, CHAT_LIT("lobby"), CHAT_LIT("alice"), CHAT_STR_NULL);
        } else {
            chat_env_build_system(&b, CHAT_LIT("lobby"), "leave", CHAT_LIT("alice"),
                                  CHAT_LIT("A"), NOW_MS);
        }
        assert_int_equal(chat_wire_check(CHAT_LIT("lobby"), chat_buf_str(&b), &lim, &got, &json,
                                         &why),
                         0);
        assert_int_equal(got.kind, h.kind);
        assert_int_equal(got.exclude_origin, h.exclude_origin);
        assert_str_eq(got.origin_node, "gw-1.a_B", 8);
        assert_true(got.origin_conn == 12345 && got.publish_ms == NOW_MS - 20);
        assert_true(json.p == b.p + hlen && json.len == b.len - hlen);
        assert_int_equal(why, OK_CHECKED); /* untouched on success */
        /* the same bytes on another topic: "room" */
        assert_int_equal(check_at("lobby2", b.p, b.len, NOW_MS), CHAT_WIRE_R_ROOM);
    }
    chat_buf_free(&b);
}

/* A chat as broker_append stores and publishes it: accepted, seq and epoch in *h. */
static void test_check_stored_chat_gives_seq_and_epoch(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_wire_limits_t lim = {.now_ms = NOW_MS, .max_text_bytes = MAX_TEXT};
    chat_wire_reason_t why = OK_CHECKED;
    chat_wire_hdr_t h = hdr(CHAT_WIRE_CHAT, 0, "n1", 5, NOW_MS), got;
    chat_env_chat_t m = {
        CHAT_LIT("lobby"), CHAT_LIT("n1-k3x9-1"), CHAT_LIT("alice"), CHAT_LIT("hello"), NOW_MS,
        CHAT_STR_NULL};
    chat_str_t json;

    chat_wire_put_header(&b, &h);
    size_t hlen = b.len;
    chat_env_build_chat_open(&b, &m);
    chat_buf_appendf(&b, "41" CHAT_ENV_SEQ_MID "Ep0ch" CHAT_ENV_SEQ_END);
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(chat_wire_check(CHAT_LIT("lobby"), chat_buf_str(&b), &lim, &got, &json, &why),
                     0);
    assert_true(got.seq == 41);
    assert_int_equal(got.epoch_len, 5);
    assert_string_equal(got.epoch, "Ep0ch");
    assert_true(got.origin_conn == 5 && got.kind == CHAT_WIRE_CHAT);
    assert_true(json.p == b.p + hlen && json.len == b.len - hlen);
    /* the JSON relayed as it is ends with the seq and epoch */
    const char *tail = ",\"ts\":1700000000000,\"seq\":41,\"epoch\":\"Ep0ch\"}";
    assert_true(json.len > strlen(tail));
    assert_memory_equal(json.p + json.len - strlen(tail), tail, strlen(tail));

    /* chat_wire_parse() does not read the JSON: 0 and "" */
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(chat_wire_parse(chat_buf_str(&b), &got, &json), 0);
    assert_true(got.seq == 0 && got.epoch_len == 0 && got.epoch[0] == '\0');

    /* a plain chat after a stored one: 0 and "" again */
    chat_buf_reset(&b);
    chat_wire_put_header(&b, &h);
    chat_env_build_chat(&b, &m);
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(chat_wire_check(CHAT_LIT("lobby"), chat_buf_str(&b), &lim, &got, &json, &why),
                     0);
    assert_true(got.seq == 0 && got.epoch_len == 0 && got.epoch[0] == '\0');
    chat_buf_free(&b);

    /* one of the two alone, a seq of 0, a bad epoch, and either on typing: "fields" */
    assert_checked("CGW1 c - n 1 1700000000000\n{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\","
                   "\"user\":\"u\",\"text\":\"t\",\"ts\":1,\"seq\":3}",
                   CHAT_WIRE_R_FIELDS);
    assert_checked("CGW1 c - n 1 1700000000000\n{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\","
                   "\"user\":\"u\",\"text\":\"t\",\"ts\":1,\"epoch\":\"e\"}",
                   CHAT_WIRE_R_FIELDS);
    assert_checked("CGW1 c - n 1 1700000000000\n{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\","
                   "\"user\":\"u\",\"text\":\"t\",\"ts\":1,\"seq\":0,\"epoch\":\"e\"}",
                   CHAT_WIRE_R_FIELDS);
    assert_checked("CGW1 c - n 1 1700000000000\n{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\","
                   "\"user\":\"u\",\"text\":\"t\",\"ts\":1,\"seq\":3,\"epoch\":\"e!\"}",
                   CHAT_WIRE_R_FIELDS);
    assert_checked("CGW1 t x n 1 1700000000000\n{\"type\":\"typing\",\"room\":\"r\",\"user\":"
                   "\"u\",\"seq\":3,\"epoch\":\"e\"}",
                   CHAT_WIRE_R_FIELDS);
    assert_checked("CGW1 c - n 1 1700000000000\n{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\","
                   "\"user\":\"u\",\"text\":\"t\",\"ts\":1,\"seq\":3,\"epoch\":\"e\"}",
                   OK_CHECKED);
}

static void test_check_reason_names(void **state)
{
    static const char *const want[] = {"header", "kind", "size", "utf8",
                                       "json",   "type", "fields", "room"};
    assert_int_equal(CHAT_WIRE_NREASONS, 8);
    for (int r = 0; r < CHAT_WIRE_NREASONS; r++)
        assert_string_equal(chat_wire_reason_name((chat_wire_reason_t)r), want[r]);
    assert_null(chat_wire_reason_name(CHAT_WIRE_NREASONS));
    assert_null(chat_wire_reason_name((chat_wire_reason_t)-1));
}

static void test_check_header(void **state)
{
    char node[CHAT_WIRE_NODE_MAX + 2], msg[256];

    assert_checked("CGW1 t x n 1 1700000000000\n" TYPING_R, OK_CHECKED);
    /* grammar */
    assert_checked("", CHAT_WIRE_R_HEADER);
    assert_checked(TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW2 t x n 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t x n 1 1700000000000" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t x n 1 1700000000000 \n" TYPING_R, CHAT_WIRE_R_HEADER);
    /* flags */
    assert_checked("CGW1 t + n 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t xx n 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    /* node id: the characters of --node-id, 1..64 of them */
    assert_checked("CGW1 t x n/1 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t x n\x1b[2J 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t x \xc3\xa9 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t x n\"x 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    memset(node, 'N', sizeof(node));
    node[CHAT_WIRE_NODE_MAX] = '\0';
    snprintf(msg, sizeof(msg), "CGW1 t x %s 1 1700000000000\n" TYPING_R, node);
    assert_checked(msg, OK_CHECKED);
    node[CHAT_WIRE_NODE_MAX] = 'N';
    node[CHAT_WIRE_NODE_MAX + 1] = '\0';
    snprintf(msg, sizeof(msg), "CGW1 t x %s 1 1700000000000\n" TYPING_R, node);
    assert_checked(msg, CHAT_WIRE_R_HEADER);
    /* origin conn: up to 2^53 */
    assert_checked("CGW1 t x n 0 1700000000000\n" TYPING_R, OK_CHECKED);
    assert_checked("CGW1 t x n 9007199254740992 1700000000000\n" TYPING_R, OK_CHECKED);
    assert_checked("CGW1 t x n 9007199254740993 1700000000000\n" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t x n 18446744073709551615 1700000000000\n" TYPING_R,
                   CHAT_WIRE_R_HEADER);
}

/* publish_ms within [now - 1 day, now + 5 min]: 2^63 and INT64_MAX never reach the histogram. */
static void test_check_publish_time_window(void **state)
{
    static const struct {
        int64_t ms;
        chat_wire_reason_t want;
    } cases[] = {
        {NOW_MS, OK_CHECKED},
        {NOW_MS + CHAT_WIRE_MAX_AHEAD_MS, OK_CHECKED},
        {NOW_MS + CHAT_WIRE_MAX_AHEAD_MS + 1, CHAT_WIRE_R_HEADER},
        {NOW_MS - CHAT_WIRE_MAX_AGE_MS, OK_CHECKED},
        {NOW_MS - CHAT_WIRE_MAX_AGE_MS - 1, CHAT_WIRE_R_HEADER},
        {0, CHAT_WIRE_R_HEADER},
        {INT64_MAX, CHAT_WIRE_R_HEADER},
    };
    char msg[256];

    assert_int_equal(CHAT_WIRE_MAX_AHEAD_MS, 5 * 60 * 1000);
    assert_int_equal(CHAT_WIRE_MAX_AGE_MS, 24 * 60 * 60 * 1000);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(msg, sizeof(msg), "CGW1 t x n 1 %" PRId64 "\n" TYPING_R, cases[i].ms);
        if (check_str("r", msg) != cases[i].want)
            fail_msg("publish_ms %" PRId64 ": wrong verdict", cases[i].ms);
    }
    /* 2^63 and beyond do not even parse */
    assert_checked("CGW1 t x n 1 9223372036854775808\n" TYPING_R, CHAT_WIRE_R_HEADER);
    assert_checked("CGW1 t x n 1 18446744073709551615\n" TYPING_R, CHAT_WIRE_R_HEADER);
    /* extreme receiver clocks: no overflow, the window still holds */
    snprintf(msg, sizeof(msg), "CGW1 t x n 1 %" PRId64 "\n" TYPING_R, INT64_MAX);
    assert_int_equal(check_at("r", msg, strlen(msg), INT64_MAX), OK_CHECKED);
    assert_int_equal(check_at("r", msg, strlen(msg), INT64_MIN), CHAT_WIRE_R_HEADER);
    snprintf(msg, sizeof(msg), "CGW1 t x n 1 0\n" TYPING_R);
    assert_int_equal(check_at("r", msg, strlen(msg), INT64_MIN), CHAT_WIRE_R_HEADER);
    assert_int_equal(check_at("r", msg, strlen(msg), INT64_MAX), CHAT_WIRE_R_HEADER);
    assert_int_equal(check_at("r", msg, strlen(msg), -CHAT_WIRE_MAX_AHEAD_MS), OK_CHECKED);
}

static void test_check_kind(void **state)
{
    assert_checked("CGW1 x x n 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_KIND);
    assert_checked("CGW1 T x n 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_KIND);
    assert_checked("CGW1 typing x n 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_KIND);
    /* a known kind whose envelope is another type */
    assert_checked("CGW1 c - n 1 1700000000000\n" TYPING_R, CHAT_WIRE_R_TYPE);
}

static void test_check_size(void **state)
{
    size_t max = CHAT_WIRE_HDR_MAX + chat_env_relayed_max_bytes(MAX_TEXT);
    char *big = malloc(max + 1);

    /* a longest header really fits in CHAT_WIRE_HDR_MAX */
    chat_buf_t b = CHAT_BUF_INIT;
    char node[CHAT_WIRE_NODE_MAX + 1];
    memset(node, 'n', CHAT_WIRE_NODE_MAX);
    node[CHAT_WIRE_NODE_MAX] = '\0';
    chat_wire_hdr_t h = hdr(CHAT_WIRE_SYSTEM, 1, node, UINT64_MAX, INT64_MAX);
    chat_wire_put_header(&b, &h);
    assert_true(b.len <= CHAT_WIRE_HDR_MAX);
    chat_buf_free(&b);

    /* over the bound: refused before the header is even read */
    assert_non_null(big);
    memset(big, 'z', max + 1);
    assert_int_equal(check_at("r", big, max + 1, NOW_MS), CHAT_WIRE_R_SIZE);
    assert_int_equal(check_at("r", big, max, NOW_MS), CHAT_WIRE_R_HEADER);
    /* a valid header, then a JSON part one byte over chat_env_relayed_max_bytes() */
    size_t hl = (size_t)snprintf(big, max, "CGW1 t x n 1 1700000000000\n");
    size_t json_max = chat_env_relayed_max_bytes(MAX_TEXT);
    assert_int_equal(check_at("r", big, hl + json_max + 1, NOW_MS), CHAT_WIRE_R_SIZE);
    assert_int_equal(check_at("r", big, hl + json_max, NOW_MS), CHAT_WIRE_R_JSON);
    free(big);
}

/* The JSON reasons reach the caller of chat_wire_check() (the cases are in test_envelope.c). */
static void test_check_json_part_reasons(void **state)
{
    assert_checked("CGW1 t x n 1 1700000000000\n{\"type\":\"typing\",\"room\":\"r\",\"user\":"
                   "\"\xed\xa0\x80\"}",
                   CHAT_WIRE_R_UTF8);
    assert_checked("CGW1 t x n 1 1700000000000\n", CHAT_WIRE_R_JSON);
    assert_checked("CGW1 t x n 1 1700000000000\n" TYPING_R "\n", CHAT_WIRE_R_JSON);
    assert_checked("CGW1 t x n 1 1700000000000\n{\"type\":\"chat\",\"room\":\"r\",\"user\":\"u\"}",
                   CHAT_WIRE_R_TYPE);
    assert_checked("CGW1 t x n 1 1700000000000\n{\"type\":\"typing\",\"room\":\"r\",\"user\":"
                   "\"admin\\u0000x\"}",
                   CHAT_WIRE_R_FIELDS);
    assert_checked("CGW1 c - n 1 1700000000000\n{\"type\":\"chat\",\"room\":\"r\",\"id\":\"i\","
                   "\"user\":\"u\",\"text\":\"<script>\",\"ts\":1,\"html\":true}",
                   CHAT_WIRE_R_FIELDS);
    assert_int_equal(check_str("other", "CGW1 t x n 1 1700000000000\n" TYPING_R),
                     CHAT_WIRE_R_ROOM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_header_exact_bytes),
        cmocka_unit_test(test_put_header_exclude_flag_and_kinds),
        cmocka_unit_test(test_put_header_appends_after_existing_bytes),
        cmocka_unit_test(test_round_trip_chat),
        cmocka_unit_test(test_round_trip_typing_excluded),
        cmocka_unit_test(test_round_trip_system_excluded),
        cmocka_unit_test(test_round_trip_extreme_numbers),
        cmocka_unit_test(test_round_trip_long_node),
        cmocka_unit_test(test_parse_known_text),
        cmocka_unit_test(test_node_borrows_input),
        cmocka_unit_test(test_json_empty),
        cmocka_unit_test(test_json_with_spaces_and_newlines_returned_exactly),
        cmocka_unit_test(test_json_with_nul_bytes_returned_exactly),
        cmocka_unit_test(test_json_not_validated),
        cmocka_unit_test(test_empty_is_malformed),
        cmocka_unit_test(test_bad_magic_is_malformed),
        cmocka_unit_test(test_bad_kind_is_malformed),
        cmocka_unit_test(test_bad_flags_is_malformed),
        cmocka_unit_test(test_missing_fields_are_malformed),
        cmocka_unit_test(test_empty_fields_are_malformed),
        cmocka_unit_test(test_extra_field_is_malformed),
        cmocka_unit_test(test_non_numeric_conn_is_malformed),
        cmocka_unit_test(test_non_numeric_ms_is_malformed),
        cmocka_unit_test(test_overflowing_conn_is_malformed),
        cmocka_unit_test(test_overflowing_ms_is_malformed),
        cmocka_unit_test(test_missing_newline_is_malformed),
        cmocka_unit_test(test_newline_inside_header_is_malformed),
        cmocka_unit_test(test_truncated_at_every_length_is_malformed),
        cmocka_unit_test(test_check_accepts_what_nodes_publish),
        cmocka_unit_test(test_check_stored_chat_gives_seq_and_epoch),
        cmocka_unit_test(test_check_reason_names),
        cmocka_unit_test(test_check_header),
        cmocka_unit_test(test_check_publish_time_window),
        cmocka_unit_test(test_check_kind),
        cmocka_unit_test(test_check_size),
        cmocka_unit_test(test_check_json_part_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
