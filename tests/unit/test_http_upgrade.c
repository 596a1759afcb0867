/* tests/unit/test_http_upgrade.c - gateway/http_upgrade.c: the incremental head parser (any
 * chunking, limits, malformed input), header lookups, query parameters (gw_http_query_param,
 * the upgrade's query, the token carriers), the RFC 6455 checks in their documented order, the
 * accept key and the exact bytes of every response builder. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "http_upgrade.h"

#define MAX_HEAD 8192

#define UPGRADE_WS                                                                                 \
    "GET /ws?token=abc HTTP/1.1\r\n"                                                               \
    "Host: example.com\r\n"                                                                        \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n"                                                                      \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Version: 13\r\n"                                                                \
    "Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n"                                                 \
    "Origin:   http://example.com  \t\r\n"                                                         \
    "\r\n"

#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Headers of a valid upgrade, without the request line and the final empty line. */
#define GOOD_HEADERS                                                                               \
    "Host: x\r\n"                                                                                  \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n"                                                                      \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Version: 13\r\n"

/* ---- helpers ---------------------------------------------------------------------------- */

static void assert_str(chat_str_t s, const char *want)
{
    assert_non_null(s.p);
    if (s.len != strlen(want) || memcmp(s.p, want, s.len) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)s.len, s.p, want);
}

/* snprintf into an array, which must be large enough. */
#define FMT(buf, ...) assert_in_range(snprintf((buf), sizeof(buf), __VA_ARGS__), 1, sizeof(buf) - 1)

/* Feeds `text` in chunks of the given sizes (cycled; 0 = all the rest) and returns the first
 * non-zero feed result plus the offset in `text` of the chunk that produced it. */
static int feed_chunks(gw_http_req_t *r, const char *text, size_t len, const size_t *sizes,
                       size_t nsizes, size_t *chunk_start)
{
    size_t off = 0, k = 0;
    while (off < len) {
        size_t n = sizes[k++ % nsizes];
        if (n == 0 || n > len - off)
            n = len - off;
        int rc = gw_http_req_feed(r, text + off, n);
        if (rc != 0) {
            if (chunk_start)
                *chunk_start = off;
            return rc;
        }
        off += n;
    }
    return 0;
}

static int parse_whole(gw_http_req_t *r, const char *text, size_t max)
{
    gw_http_req_init(r, max);
    return gw_http_req_feed(r, text, strlen(text));
}

static int parse_bytewise(gw_http_req_t *r, const char *text, size_t len, size_t max)
{
    static const size_t one = 1;
    gw_http_req_init(r, max);
    return feed_chunks(r, text, len, &one, 1, NULL);
}

static void assert_same_request(const gw_http_req_t *a, const gw_http_req_t *b)
{
    assert_true(chat_str_eq(a->method, b->method));
    assert_true(chat_str_eq(a->target, b->target));
    assert_true(chat_str_eq(a->path, b->path));
    assert_int_equal(a->query.p == NULL, b->query.p == NULL);
    if (a->query.p != NULL && b->query.p != NULL)
        assert_true(chat_str_eq(a->query, b->query));
    assert_int_equal(a->version_major, b->version_major);
    assert_int_equal(a->version_minor, b->version_minor);
    assert_int_equal(a->nheaders, b->nheaders);
    for (unsigned i = 0; i < a->nheaders; i++) {
        assert_true(chat_str_eq(a->headers[i].name, b->headers[i].name));
        assert_true(chat_str_eq(a->headers[i].value, b->headers[i].value));
    }
}

static void assert_upgrade_ws_parsed(const gw_http_req_t *r)
{
    assert_str(r->method, "GET");
    assert_str(r->target, "/ws?token=abc");
    assert_str(r->path, "/ws");
    assert_str(r->query, "token=abc");
    assert_int_equal(r->version_major, 1);
    assert_int_equal(r->version_minor, 1);
    assert_int_equal(r->nheaders, 7);
    assert_str(r->headers[0].name, "Host");
    assert_str(r->headers[0].value, "example.com");
    assert_str(r->headers[6].name, "Origin");
    assert_str(r->headers[6].value, "http://example.com");
    assert_str(gw_http_req_header(r, CHAT_LIT("sec-websocket-key")), "dGhlIHNhbXBsZSBub25jZQ==");
    assert_null(gw_http_req_header(r, CHAT_LIT("Cookie")).p);
}

/* Parses `text` (one whole feed) and runs gw_upgrade_check. */
static int check_text(const char *text, gw_upgrade_t *u)
{
    gw_http_req_t r;
    assert_true(parse_whole(&r, text, MAX_HEAD) == (int)strlen(text));
    int rc = gw_upgrade_check(&r, u);
    /* views into the request die with it; keep only what the tests compare */
    u->room = CHAT_STR_NULL;
    u->query = CHAT_STR_NULL;
    gw_http_req_dispose(&r);
    return rc;
}

static void assert_refusal(const char *text, int status, const char *error, const char *message)
{
    gw_upgrade_t u;
    assert_int_equal(check_text(text, &u), CHAT_EINVAL);
    assert_int_equal(u.status, status);
    assert_string_equal(u.error, error);
    if (message)
        assert_string_equal(u.message, message);
    assert_true(strlen(u.message) > 0 && strlen(u.message) < 80);
}

/* ---- parser ----------------------------------------------------------------------------- */

static void test_parse_whole(void **state)
{
    gw_http_req_t r;
    assert_int_equal(parse_whole(&r, UPGRADE_WS, MAX_HEAD), (int)strlen(UPGRADE_WS));
    assert_upgrade_ws_parsed(&r);
    gw_http_req_dispose(&r);
}

static void test_parse_byte_at_a_time(void **state)
{
    gw_http_req_t whole, bytes;
    size_t len = strlen(UPGRADE_WS);
    assert_int_equal(parse_whole(&whole, UPGRADE_WS, MAX_HEAD), (int)len);
    /* the last byte completes the head: 1 byte of that feed belonged to it */
    assert_int_equal(parse_bytewise(&bytes, UPGRADE_WS, len, MAX_HEAD), 1);
    assert_upgrade_ws_parsed(&bytes);
    assert_same_request(&whole, &bytes);
    gw_http_req_dispose(&whole);
    gw_http_req_dispose(&bytes);
}

static void test_parse_chunk_splits(void **state)
{
    const char *text = UPGRADE_WS;
    size_t len = strlen(text);
    gw_http_req_t ref;
    assert_int_equal(parse_whole(&ref, text, MAX_HEAD), (int)len);

    /* every split into two chunks */
    for (size_t cut = 1; cut < len; cut++) {
        gw_http_req_t r;
        gw_http_req_init(&r, MAX_HEAD);
        assert_int_equal(gw_http_req_feed(&r, text, cut), 0);
        assert_int_equal(gw_http_req_feed(&r, text + cut, len - cut), (int)(len - cut));
        assert_same_request(&ref, &r);
        gw_http_req_dispose(&r);
    }
    /* pseudo-random chunk sequences (fixed seed: reproducible) */
    uint32_t seed = 12345;
    for (int round = 0; round < 200; round++) {
        size_t sizes[16];
        for (size_t i = 0; i < 16; i++) {
            seed = seed * 1103515245u + 12345u;
            sizes[i] = 1 + (seed >> 16) % 23;
        }
        gw_http_req_t r;
        size_t start = 0;
        gw_http_req_init(&r, MAX_HEAD);
        int rc = feed_chunks(&r, text, len, sizes, 16, &start);
        assert_int_equal(rc, (int)(len - start));
        assert_upgrade_ws_parsed(&r);
        assert_same_request(&ref, &r);
        gw_http_req_dispose(&r);
    }
    gw_http_req_dispose(&ref);
}

/* Single-byte mutations of a valid head: whole and byte-at-a-time feeds always agree. */
static void test_mutations_agree_across_splits(void **state)
{
    size_t len = strlen(UPGRADE_WS);
    char *text = malloc(len + 1);
    assert_non_null(text);
    uint32_t seed = 777;
    for (int round = 0; round < 2000; round++) {
        memcpy(text, UPGRADE_WS, len + 1);
        seed = seed * 1103515245u + 12345u;
        size_t at = (seed >> 8) % len;
        seed = seed * 1103515245u + 12345u;
        text[at] = (char)(seed >> 16);

        gw_http_req_t whole, bytes;
        gw_http_req_init(&whole, 300);
        int rc_whole = gw_http_req_feed(&whole, text, len);
        int rc_bytes = parse_bytewise(&bytes, text, len, 300);
        if (rc_whole > 0) {
            assert_int_equal(rc_bytes, 1);
            assert_same_request(&whole, &bytes);
        } else {
            assert_true(rc_whole < 0 || rc_bytes == 0);
            if (rc_whole < 0)
                assert_int_equal(rc_bytes, rc_whole);
        }
        gw_http_req_dispose(&whole);
        gw_http_req_dispose(&bytes);
    }
    free(text);
}

static void test_trailing_websocket_bytes(void **state)
{
    static const char frame[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    size_t hlen = strlen(UPGRADE_WS), flen = sizeof(frame) - 1;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_append(&b, UPGRADE_WS, hlen);
    chat_buf_append(&b, frame, flen);
    const char *all = b.p;

    gw_http_req_t r;
    gw_http_req_init(&r, MAX_HEAD);
    assert_int_equal(gw_http_req_feed(&r, all, hlen + flen), (int)hlen);
    assert_upgrade_ws_parsed(&r);
    assert_int_equal(r._head.len, hlen); /* the frame bytes were not kept */
    gw_http_req_dispose(&r);

    /* the head ends 3 bytes into the second feed */
    gw_http_req_init(&r, MAX_HEAD);
    assert_int_equal(gw_http_req_feed(&r, all, hlen - 3), 0);
    assert_int_equal(gw_http_req_feed(&r, all + hlen - 3, 3 + flen), 3);
    assert_upgrade_ws_parsed(&r);
    /* fed again after completion: refused, nothing changes */
    assert_int_equal(gw_http_req_feed(&r, frame, flen), CHAT_EINVAL);
    assert_upgrade_ws_parsed(&r);
    gw_http_req_dispose(&r);
    chat_buf_free(&b);
}

static void test_lf_only_line_endings(void **state)
{
    static const char text[] = "GET /chat/lobby HTTP/1.1\n"
                               "Host: x\n"
                               "Upgrade: websocket\n"
                               "Connection: Upgrade\r\n" /* mixed is fine too */
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
                               "Sec-WebSocket-Version: 13\n"
                               "Empty:\n"
                               "\nREST";
    size_t len = sizeof(text) - 1, head = len - 4;
    gw_http_req_t r, b;
    gw_http_req_init(&r, MAX_HEAD);
    assert_int_equal(gw_http_req_feed(&r, text, len), (int)head);
    assert_str(r.path, "/chat/lobby");
    assert_null(r.query.p);
    assert_int_equal(r.nheaders, 6);
    assert_str(r.headers[5].name, "Empty");
    assert_str(r.headers[5].value, "");
    assert_int_equal(parse_bytewise(&b, text, head, MAX_HEAD), 1);
    assert_same_request(&r, &b);

    gw_upgrade_t u;
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    assert_int_equal(u.route, GW_ROUTE_CHAT);
    assert_str(u.room, "lobby");
    assert_string_equal(u.accept, RFC_ACCEPT);
    gw_http_req_dispose(&r);
    gw_http_req_dispose(&b);
}

static void test_minimal_and_http10(void **state)
{
    gw_http_req_t r;
    assert_int_equal(parse_whole(&r, "GET / HTTP/1.0\r\n\r\n", MAX_HEAD), 18);
    assert_str(r.method, "GET");
    assert_str(r.path, "/");
    assert_int_equal(r.version_minor, 0);
    assert_int_equal(r.nheaders, 0);
    gw_http_req_dispose(&r);
    /* the parser accepts any token method; routing decides */
    assert_int_equal(parse_whole(&r, "M-SEARCH /x HTTP/1.1\r\n\r\n", MAX_HEAD), 24);
    assert_str(r.method, "M-SEARCH");
    gw_http_req_dispose(&r);
}

static void test_value_whitespace_and_obs_text(void **state)
{
    static const char text[] = "GET / HTTP/1.1\r\n"
                               "A:  \t one two \t \r\n"
                               "B:\r\n"
                               "C: \t \r\n"
                               "D: caf\xc3\xa9\r\n"
                               "E:x\ty\r\n"
                               "\r\n";
    gw_http_req_t r;
    assert_int_equal(parse_whole(&r, text, MAX_HEAD), (int)strlen(text));
    assert_int_equal(r.nheaders, 5);
    assert_str(r.headers[0].value, "one two");
    assert_str(r.headers[1].value, "");
    assert_str(r.headers[2].value, "");
    assert_str(r.headers[3].value, "caf\xc3\xa9");
    assert_str(r.headers[4].value, "x\ty");
    gw_http_req_dispose(&r);
}

static char *make_head(size_t len)
{
    /* "GET / HTTP/1.1\r\nX: aaa...\r\n\r\n" of exactly len bytes */
    static const char start[] = "GET / HTTP/1.1\r\nX: ";
    size_t fixed = sizeof(start) - 1 + 4;
    assert_true(len > fixed);
    char *p = malloc(len + 1);
    assert_non_null(p);
    memcpy(p, start, sizeof(start) - 1);
    memset(p + sizeof(start) - 1, 'a', len - fixed);
    memcpy(p + len - 4, "\r\n\r\n", 5);
    return p;
}

static void test_head_limit(void **state)
{
    static const size_t maxes[] = {64, 200, 1000, 8192};
    for (size_t m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
        size_t max = maxes[m];
        char *exact = make_head(max), *over = make_head(max + 1);
        gw_http_req_t r;

        assert_int_equal(parse_whole(&r, exact, max), (int)max);
        assert_int_equal(r._head.len, max);
        gw_http_req_dispose(&r);
        assert_int_equal(parse_bytewise(&r, exact, max, max), 1);
        gw_http_req_dispose(&r);

        assert_int_equal(parse_whole(&r, over, max), CHAT_ETOOLARGE);
        assert_true(r._head.len <= max);
        gw_http_req_dispose(&r);
        assert_int_equal(parse_bytewise(&r, over, max + 1, max), CHAT_ETOOLARGE);
        assert_true(r._head.len <= max);
        gw_http_req_dispose(&r);

        /* a never-ending header line stops at the limit too */
        chat_buf_t junk = CHAT_BUF_INIT;
        chat_buf_append_str(&junk, CHAT_LIT("GET / HTTP/1.1\r\nX: "));
        while (junk.len < 4 * max)
            chat_buf_append(&junk, "b", 1);
        gw_http_req_init(&r, max);
        assert_int_equal(gw_http_req_feed(&r, junk.p, junk.len), CHAT_ETOOLARGE);
        assert_true(r._head.len <= max);
        gw_http_req_dispose(&r);

        chat_buf_free(&junk);
        free(exact);
        free(over);
    }
}

static void test_refusal_for_too_large_is_431(void **state)
{
    chat_buf_t out = CHAT_BUF_INIT;
    gw_http_build_refusal(&out, 431, "too_large", "request head too large");
    assert_true(out.len > 48);
    assert_memory_equal(out.p, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46);
    chat_buf_free(&out);
}

static char *make_headers(unsigned count)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_appendf(&b, "GET / HTTP/1.1\r\n");
    for (unsigned i = 0; i < count; i++)
        chat_buf_appendf(&b, "X-%u: %u\r\n", i, i);
    chat_buf_appendf(&b, "\r\n");
    chat_buf_append(&b, "", 1);
    return b.p;
}

static void test_too_many_headers(void **state)
{
    char *ok = make_headers(GW_HTTP_MAX_HEADERS), *bad = make_headers(GW_HTTP_MAX_HEADERS + 1);
    gw_http_req_t r;
    assert_int_equal(parse_whole(&r, ok, MAX_HEAD), (int)strlen(ok));
    assert_int_equal(r.nheaders, GW_HTTP_MAX_HEADERS);
    assert_str(r.headers[GW_HTTP_MAX_HEADERS - 1].name, "X-63");
    assert_str(r.headers[GW_HTTP_MAX_HEADERS - 1].value, "63");
    gw_http_req_dispose(&r);
    assert_int_equal(parse_whole(&r, bad, MAX_HEAD), CHAT_ETOOLARGE);
    gw_http_req_dispose(&r);
    assert_int_equal(parse_bytewise(&r, bad, strlen(bad), MAX_HEAD), CHAT_ETOOLARGE);
    gw_http_req_dispose(&r);
    free(ok);
    free(bad);
}

typedef struct bad_case {
    const char *text;
    size_t len; /* 0: strlen(text) */
} bad_case_t;

static void assert_all_malformed(const bad_case_t *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
        gw_http_req_t r;
        gw_http_req_init(&r, MAX_HEAD);
        int rc = gw_http_req_feed(&r, cases[i].text, len);
        if (rc != CHAT_EMALFORMED)
            fail_msg("case %zu: got %d, want CHAT_EMALFORMED", i, rc);
        gw_http_req_dispose(&r);
        rc = parse_bytewise(&r, cases[i].text, len, MAX_HEAD);
        if (rc != CHAT_EMALFORMED)
            fail_msg("case %zu bytewise: got %d, want CHAT_EMALFORMED", i, rc);
        gw_http_req_dispose(&r);
    }
}

static void test_malformed_request_lines(void **state)
{
    static const bad_case_t cases[] = {
        {"GET / HTTP/2.0\r\n\r\n", 0},
        {"GET / HTTP/1.2\r\n\r\n", 0},
        {"GET / HTTP/1.10\r\n\r\n", 0},
        {"GET / HTTP/1\r\n\r\n", 0},
        {"GET / http/1.1\r\n\r\n", 0},
        {"GET / HTTP/1.1 \r\n\r\n", 0},
        {"GET /\r\n\r\n", 0}, /* HTTP/0.9 */
        {"GET  / HTTP/1.1\r\n\r\n", 0},
        {"GET /  HTTP/1.1\r\n\r\n", 0},
        {" GET / HTTP/1.1\r\n\r\n", 0},
        {"\r\nGET / HTTP/1.1\r\n\r\n", 0},
        {"G(T / HTTP/1.1\r\n\r\n", 0},
        {"GET http://example.com/ HTTP/1.1\r\n\r\n", 0},
        {"GET * HTTP/1.1\r\n\r\n", 0},
        {"GET /a\tb HTTP/1.1\r\n\r\n", 0},
        {"GET /a\x01 HTTP/1.1\r\n\r\n", 0},
        {"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 0},
        {"GET /\x7f HTTP/1.1\r\n\r\n", 0},
        {"GET / HTTP/1.1\rX\n\r\n", 0}, /* bare CR */
        {"GET /\0 HTTP/1.1\r\n\r\n", 20},
        {"GE\0T / HTTP/1.1\r\n\r\n", 20},
    };
    assert_all_malformed(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_malformed_headers(void **state)
{
    static const bad_case_t cases[] = {
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 0},  /* whitespace before the colon */
        {"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 0}, /* same, HTAB */
        {"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\n: x\r\n\r\n", 0},  /* empty name */
        {"GET / HTTP/1.1\r\nHost\r\n\r\n", 0}, /* no colon */
        {"GET / HTTP/1.1\r\nH(st: x\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 0},  /* obs-fold */
        {"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n", 0}, /* obs-fold, HTAB */
        {"GET / HTTP/1.1\r\n x: y\r\n\r\n", 0},       /* leading whitespace on the first line */
        {"GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA: b\x1b[0m\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 0}, /* bare CR in a value */
        {"GET / HTTP/1.1\r\nA: b\r\n\rX", 0},     /* bare CR as the final line */
        {"GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 26},
        {"GET / HTTP/1.1\r\nA\0: bc\r\n\r\n", 26},
        {"GET / HTTP/1.1\r\n\0A: bc\r\n\r\n", 26},
    };
    assert_all_malformed(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_dispose_and_reinit(void **state)
{
    gw_http_req_t r;
    gw_http_req_init(&r, MAX_HEAD);
    assert_int_equal(gw_http_req_feed(&r, "GET /ws HT", 10), 0);
    assert_int_equal(gw_http_req_feed(&r, "", 0), 0);
    gw_http_req_dispose(&r);
    gw_http_req_dispose(&r); /* harmless twice */
    assert_int_equal(parse_whole(&r, UPGRADE_WS, MAX_HEAD), (int)strlen(UPGRADE_WS));
    gw_http_req_dispose(&r);
}

/* ---- header lookups ------------------------------------------------------------------------ */

static void test_header_tokens(void **state)
{
    static const char text[] = "GET / HTTP/1.1\r\n"
                               "Connection: keep-alive\r\n"
                               "X-List: a, ,b ,\t C\t,, \r\n"
                               "connection: Upgrade2, x-upgrade\r\n"
                               "CONNECTION: close,UPGRADE\r\n"
                               "Empty:\r\n"
                               "\r\n";
    gw_http_req_t r;
    assert_int_equal(parse_whole(&r, text, MAX_HEAD), (int)strlen(text));
    assert_str(gw_http_req_header(&r, CHAT_LIT("connection")), "keep-alive"); /* the first */
    assert_true(gw_http_req_has_token(&r, CHAT_LIT("Connection"), CHAT_LIT("upgrade")));
    assert_true(gw_http_req_has_token(&r, CHAT_LIT("Connection"), CHAT_LIT("Keep-Alive")));
    assert_false(gw_http_req_has_token(&r, CHAT_LIT("Connection"), CHAT_LIT("upgrade2 ")));
    assert_false(gw_http_req_has_token(&r, CHAT_LIT("Connection"), CHAT_LIT("upgra")));
    assert_true(gw_http_req_has_token(&r, CHAT_LIT("x-list"), CHAT_LIT("a")));
    assert_true(gw_http_req_has_token(&r, CHAT_LIT("x-list"), CHAT_LIT("b")));
    assert_true(gw_http_req_has_token(&r, CHAT_LIT("x-list"), CHAT_LIT("c")));
    assert_false(gw_http_req_has_token(&r, CHAT_LIT("x-list"), CHAT_LIT("a, b")));
    assert_false(gw_http_req_has_token(&r, CHAT_LIT("Missing"), CHAT_LIT("a")));
    assert_false(gw_http_req_has_token(&r, CHAT_LIT("Empty"), CHAT_LIT("a")));
    assert_str(gw_http_req_header(&r, CHAT_LIT("empty")), "");
    gw_http_req_dispose(&r);
}

/* ---- accept key -------------------------------------------------------------------------- */

static void test_accept_key_rfc6455(void **state)
{
    char out[29];
    memset(out, 'x', sizeof(out));
    gw_ws_accept_key(CHAT_LIT("dGhlIHNhbXBsZSBub25jZQ=="), out);
    assert_string_equal(out, RFC_ACCEPT);
    /* a long key takes the allocation path and still yields 28 characters */
    char longkey[200];
    memset(longkey, 'k', sizeof(longkey));
    gw_ws_accept_key(chat_str(longkey, sizeof(longkey)), out);
    assert_int_equal(strlen(out), 28);
}

/* ---- gw_upgrade_check: routes ------------------------------------------------------------ */

static void test_check_upgrade_ws(void **state)
{
    gw_http_req_t r;
    gw_upgrade_t u;
    assert_int_equal(parse_whole(&r, UPGRADE_WS, MAX_HEAD), (int)strlen(UPGRADE_WS));
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    assert_int_equal(u.route, GW_ROUTE_WS);
    assert_string_equal(u.accept, RFC_ACCEPT);
    assert_int_equal(u.offers_chat_v1, 1);
    gw_http_req_dispose(&r);
}

static void test_check_chat_room(void **state)
{
    static const char text[] =
        "GET /chat/Room_1.a-b:c@d?token=xyz HTTP/1.1\r\n" GOOD_HEADERS "\r\n";
    gw_http_req_t r;
    gw_upgrade_t u;
    assert_int_equal(parse_whole(&r, text, MAX_HEAD), (int)strlen(text));
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    assert_int_equal(u.route, GW_ROUTE_CHAT);
    assert_str(u.room, "Room_1.a-b:c@d");
    assert_int_equal(u.offers_chat_v1, 0);
    gw_http_req_dispose(&r);

    /* a 64-byte room is the longest accepted */
    char buf[256];
    FMT(buf, "GET /chat/%064d HTTP/1.1\r\n" GOOD_HEADERS "\r\n", 7);
    assert_int_equal(check_text(buf, &u), 0);
    assert_int_equal(u.route, GW_ROUTE_CHAT);
}

static void test_check_demo_route(void **state)
{
    gw_upgrade_t u;
    assert_int_equal(check_text("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &u), 0);
    assert_int_equal(u.route, GW_ROUTE_DEMO);
    assert_int_equal(check_text("GET /?x=1 HTTP/1.0\r\n\r\n", &u), 0);
    assert_int_equal(u.route, GW_ROUTE_DEMO);
    /* Connection: upgrade alone is not an Upgrade header */
    assert_int_equal(check_text("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n", &u), 0);
    assert_int_equal(u.route, GW_ROUTE_DEMO);
}

static void test_check_query_split(void **state)
{
    gw_http_req_t r;
    gw_upgrade_t u;
    static const char text[] = "GET /ws?token=abc?d=e HTTP/1.1\r\n" GOOD_HEADERS "\r\n";
    assert_int_equal(parse_whole(&r, text, MAX_HEAD), (int)strlen(text));
    assert_str(r.path, "/ws");
    assert_str(r.query, "token=abc?d=e");
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    assert_int_equal(u.route, GW_ROUTE_WS);
    gw_http_req_dispose(&r);

    assert_int_equal(parse_whole(&r, "GET /ws? HTTP/1.1\r\n\r\n", MAX_HEAD), 21);
    assert_str(r.path, "/ws");
    assert_str(r.query, ""); /* present but empty */
    gw_http_req_dispose(&r);

    assert_int_equal(parse_whole(&r, "GET /ws HTTP/1.1\r\n\r\n", MAX_HEAD), 20);
    assert_str(r.path, "/ws");
    assert_null(r.query.p);
    gw_http_req_dispose(&r);
}

/* Looks `name` up in `query` and checks the answer: want == NULL means absent. */
static void expect_param(const char *query, const char *name, const char *want)
{
    chat_str_t q = query != NULL ? chat_str(query, strlen(query)) : CHAT_STR_NULL;
    chat_str_t v = CHAT_LIT("unset");
    int found = gw_http_query_param(q, name, &v);
    if (want == NULL) {
        if (found != 0 || v.p != NULL)
            fail_msg("%s in \"%s\": found \"%.*s\"", name, query ? query : "(null)", (int)v.len,
                     v.p ? v.p : "");
        return;
    }
    if (found != 1)
        fail_msg("%s in \"%s\": not found", name, query);
    assert_str(v, want);
    assert_true(v.p >= q.p && v.p + v.len <= q.p + q.len); /* borrowed from the query */
}

static void test_query_param(void **state)
{
    expect_param(NULL, "since", NULL);
    expect_param("", "since", NULL);
    expect_param("since=41&epoch=e", "since", "41");
    expect_param("since=41&epoch=e", "epoch", "e");
    expect_param("epoch=e&since=41", "since", "41");
    expect_param("since=", "since", ""); /* present, empty */
    expect_param("since=&epoch=e", "since", "");
    expect_param("since", "since", NULL); /* no '=': not the parameter */
    expect_param("since&since=5", "since", "5");
    expect_param("xsince=1&since=2", "since", "2"); /* the whole name only */
    expect_param("sincex=1", "since", NULL);
    expect_param("Since=1", "since", NULL);        /* case-sensitive */
    expect_param("since=1&since=2", "since", "1"); /* the first one */
    expect_param("since=4%31", "since", "4%31");   /* raw: no percent-decoding */
    expect_param("epoch=a+b", "epoch", "a+b");     /* nor '+' for space */
    expect_param("a=1&&since=3&", "since", "3");
    expect_param("since=a=b", "since", "a=b");
    expect_param("since=1;epoch=2", "since", "1;epoch=2"); /* only '&' separates */
    expect_param("since=1;epoch=2", "epoch", NULL);
    expect_param("token=abc?d=e", "token", "abc?d=e");
    expect_param("&", "since", NULL);
    /* an empty value points at the end of its parameter, inside the query */
    static const char q[] = "since=&x=1";
    chat_str_t v;
    assert_int_equal(gw_http_query_param(chat_str(q, sizeof(q) - 1), "since", &v), 1);
    assert_true(v.p == q + 6 && v.len == 0);
    /* the length bounds the query, not a NUL */
    assert_int_equal(gw_http_query_param(chat_str("since=41", 5), "since", &v), 0);
    assert_int_equal(gw_http_query_param(chat_str("since=41&x", 8), "since", &v), 1);
    assert_str(v, "41");
}

/* gw_upgrade_check() hands the raw query over (for ?since=41&epoch=e at the handshake). */
static void test_check_upgrade_query(void **state)
{
    static const char text[] =
        "GET /chat/lobby?since=41&epoch=Ep0ch&token=t HTTP/1.1\r\n" GOOD_HEADERS "\r\n";
    gw_http_req_t r;
    gw_upgrade_t u;
    chat_str_t v;

    assert_int_equal(parse_whole(&r, text, MAX_HEAD), (int)strlen(text));
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    assert_int_equal(u.route, GW_ROUTE_CHAT);
    assert_str(u.query, "since=41&epoch=Ep0ch&token=t");
    assert_true(u.query.p == r.query.p);
    assert_int_equal(gw_http_query_param(u.query, "since", &v), 1);
    assert_str(v, "41");
    assert_int_equal(gw_http_query_param(u.query, "epoch", &v), 1);
    assert_str(v, "Ep0ch");
    gw_http_req_dispose(&r);

    static const char none[] = "GET /ws HTTP/1.1\r\n" GOOD_HEADERS "\r\n";
    assert_int_equal(parse_whole(&r, none, MAX_HEAD), (int)strlen(none));
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    assert_null(u.query.p);
    gw_http_req_dispose(&r);

    static const char empty[] = "GET /ws? HTTP/1.1\r\n" GOOD_HEADERS "\r\n";
    assert_int_equal(parse_whole(&r, empty, MAX_HEAD), (int)strlen(empty));
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    assert_non_null(u.query.p);
    assert_int_equal(u.query.len, 0);
    gw_http_req_dispose(&r);
}

/* Parses `text` and returns gw_http_req_token()'s carrier, the token in *tok (copied). */
static gw_token_carrier_t token_of(const char *text, char *tok, size_t cap)
{
    gw_http_req_t r;
    chat_str_t t;
    assert_int_equal(parse_whole(&r, text, MAX_HEAD), (int)strlen(text));
    gw_token_carrier_t c = gw_http_req_token(&r, &t);
    if (t.p != NULL) {
        assert_true(t.len < cap);
        memcpy(tok, t.p, t.len);
        tok[t.len] = '\0';
    } else {
        snprintf(tok, cap, "(null)");
    }
    gw_http_req_dispose(&r);
    return c;
}

/* The token query parameter (found with gw_http_query_param), and the carriers' order. */
static void test_token_carriers(void **state)
{
    char tok[64];

    assert_int_equal(token_of("GET /ws?token=abc HTTP/1.1\r\n" GOOD_HEADERS "\r\n", tok, 64),
                     GW_TOKEN_QUERY);
    assert_string_equal(tok, "abc");
    assert_int_equal(
        token_of("GET /ws?room=a&token=t1&token=t2 HTTP/1.1\r\n" GOOD_HEADERS "\r\n", tok, 64),
        GW_TOKEN_QUERY);
    assert_string_equal(tok, "t1");
    assert_int_equal(token_of("GET /ws?xtoken=a&token=b HTTP/1.1\r\n" GOOD_HEADERS "\r\n", tok, 64),
                     GW_TOKEN_QUERY);
    assert_string_equal(tok, "b");
    assert_int_equal(token_of("GET /ws?token= HTTP/1.1\r\n" GOOD_HEADERS "\r\n", tok, 64),
                     GW_TOKEN_QUERY);
    assert_string_equal(tok, ""); /* present but empty: it decides */
    assert_int_equal(token_of("GET /ws?token HTTP/1.1\r\n" GOOD_HEADERS "\r\n", tok, 64),
                     GW_TOKEN_NONE);
    assert_string_equal(tok, "(null)");
    assert_int_equal(token_of("GET /ws HTTP/1.1\r\n" GOOD_HEADERS "\r\n", tok, 64), GW_TOKEN_NONE);
    /* a header beats the query, a subprotocol beats both */
    assert_int_equal(token_of("GET /ws?token=q HTTP/1.1\r\n" GOOD_HEADERS
                              "Authorization: Bearer h\r\n\r\n",
                              tok, 64),
                     GW_TOKEN_HEADER);
    assert_string_equal(tok, "h");
    assert_int_equal(token_of("GET /ws?token=q HTTP/1.1\r\n" GOOD_HEADERS
                              "Authorization: Bearer h\r\n"
                              "Sec-WebSocket-Protocol: chat.v1, bearer.s\r\n\r\n",
                              tok, 64),
                     GW_TOKEN_SUBPROTOCOL);
    assert_string_equal(tok, "s");
}

static void test_check_subprotocol(void **state)
{
    gw_upgrade_t u;
    assert_int_equal(check_text("GET /ws HTTP/1.1\r\n" GOOD_HEADERS
                                "Sec-WebSocket-Protocol: chat.v1\r\n\r\n",
                                &u),
                     0);
    assert_int_equal(u.offers_chat_v1, 1);
    assert_int_equal(check_text("GET /ws HTTP/1.1\r\n" GOOD_HEADERS
                                "Sec-WebSocket-Protocol: other\r\n"
                                "Sec-WebSocket-Protocol: x, chat.v1 \r\n\r\n",
                                &u),
                     0);
    assert_int_equal(u.offers_chat_v1, 1);
    /* case-sensitive, and no partial matches */
    assert_int_equal(check_text("GET /ws HTTP/1.1\r\n" GOOD_HEADERS
                                "Sec-WebSocket-Protocol: Chat.V1, chat.v10, chat\r\n\r\n",
                                &u),
                     0);
    assert_int_equal(u.offers_chat_v1, 0);
    assert_int_equal(check_text("GET /ws HTTP/1.1\r\n" GOOD_HEADERS "\r\n", &u), 0);
    assert_int_equal(u.offers_chat_v1, 0);
}

static void test_check_header_variants_accepted(void **state)
{
    gw_upgrade_t u;
    assert_int_equal(check_text("GET /ws HTTP/1.1\r\nHost: x\r\n"
                                "upgrade: WebSocket\r\n"
                                "connection: keep-alive, Upgrade\r\n"
                                "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "sec-websocket-version:13\r\n\r\n",
                                &u),
                     0);
    assert_int_equal(u.route, GW_ROUTE_WS);
    assert_string_equal(u.accept, RFC_ACCEPT);
    /* the tokens may come in separate header lines */
    assert_int_equal(check_text("GET /ws HTTP/1.1\r\nHost: x\r\n"
                                "Upgrade: h2c\r\nUpgrade: websocket\r\n"
                                "Connection: keep-alive\r\nConnection: upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n",
                                &u),
                     0);
}

/* ---- gw_upgrade_check: refusals, in the documented order ------------------------------------ */

static void test_refuse_unknown_path_404(void **state)
{
    static const char *const paths[] = {"/favicon.ico", "/chat", "/ws/",   "/WS", "/wss",
                                        "/chatroom",    "/x/ws", "/ws%20", "//ws"};
    char buf[512];
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        FMT(buf, "GET %s HTTP/1.1\r\n" GOOD_HEADERS "\r\n", paths[i]);
        assert_refusal(buf, 404, "not_found", NULL);
    }
    /* "/" is the demo page, never an upgrade endpoint */
    assert_refusal("GET / HTTP/1.1\r\n" GOOD_HEADERS "\r\n", 404, "not_found", NULL);
    assert_refusal("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n", 404, "not_found", NULL);
}

static void test_refuse_unknown_path_before_method(void **state)
{
    assert_refusal("POST /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found", NULL);
    assert_refusal("DELETE /chat HTTP/1.1\r\n" GOOD_HEADERS "\r\n", 404, "not_found", NULL);
    assert_refusal("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", 404, "not_found",
                   NULL);
}

static void test_refuse_method_405(void **state)
{
    assert_refusal("POST /ws HTTP/1.1\r\n" GOOD_HEADERS "\r\n", 405, "method_not_allowed", NULL);
    assert_refusal("get /ws HTTP/1.1\r\n" GOOD_HEADERS "\r\n", 405, "method_not_allowed", NULL);
    assert_refusal("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed", NULL);
    assert_refusal("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405,
                   "method_not_allowed", NULL);
    /* method before room name and before the upgrade headers */
    assert_refusal("PUT /chat/bad%room HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed",
                   NULL);
}

static void test_refuse_room_name_400(void **state)
{
    static const char *const paths[] = {"/chat/",    "/chat/a/b",  "/chat/%41", "/chat/a%2Fb",
                                        "/chat/a+b", "/chat/?x=1", "/chat//"};
    char buf[512];
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        FMT(buf, "GET %s HTTP/1.1\r\n" GOOD_HEADERS "\r\n", paths[i]);
        assert_refusal(buf, 400, "bad_request", "invalid room name");
    }
    /* 65 bytes: one too many */
    FMT(buf, "GET /chat/%065d HTTP/1.1\r\n" GOOD_HEADERS "\r\n", 7);
    assert_refusal(buf, 400, "bad_request", "invalid room name");
    /* the room is checked before the upgrade headers */
    assert_refusal("GET /chat/a/b HTTP/1.0\r\n\r\n", 400, "bad_request", "invalid room name");
}

static void test_refuse_upgrade_pair_400(void **state)
{
    static const char *const bad[] = {
        /* no Upgrade */
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        /* Upgrade without websocket */
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        /* no Connection */
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        /* Connection without upgrade */
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        /* the tokens swapped between the headers */
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: upgrade\r\nConnection: websocket\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        /* HTTP/1.0 */
        "GET /ws HTTP/1.0\r\n" GOOD_HEADERS "\r\n",
        /* before the version (426) and the key checks */
        "GET /chat/lobby HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refusal(bad[i], 400, "bad_request", NULL);
}

static void test_refuse_version_426(void **state)
{
    static const char *const versions[] = {"8", "12", "013", "13, 8", "14", ""};
    char buf[512];
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        FMT(buf,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: %s\r\n\r\n",
            versions[i]);
        assert_refusal(buf, 426, "upgrade_required", NULL);
    }
    /* missing, and before the key check */
    assert_refusal(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 426,
        "upgrade_required", NULL);
}

static void test_refuse_key_400(void **state)
{
    static const char *const keys[] = {
        "dGhlIHNhbXBsZSBub25jZQ",           /* no padding */
        "dGhlIHNhbXBsZSBub25jZQ=",          /* short padding */
        "dGhlIHNhbXBsZSBub25jZQ===",        /* 25 */
        "dGhlIHNhbXBsZSBub25jZQ==AA",       /* trailing data */
        "dGhlIHNhbXBsZSBub25jZR==",         /* non-zero unused bits */
        "dGhlIHNhbXBsZSBub25j*Q==",         /* not base64 */
        "dGhlIHNhbXBsZSBub25jZ-==",         /* base64url */
        "dGhlIHNhbXBsZSBub25jZQ=A",         /* bad padding */
        "dGhlIHNhbXBsZSBub25jZWVl",         /* 18 bytes */
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHM=", /* 16 + more */
        "",
    };
    char buf[512];
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        FMT(buf,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
            keys[i]);
        assert_refusal(buf, 400, "bad_request", NULL);
    }
    assert_refusal("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   400, "bad_request", NULL);
    /* other valid 16-byte keys pass */
    gw_upgrade_t u;
    assert_int_equal(
        check_text("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   &u),
        0);
    assert_int_equal(
        check_text("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: +/+/+/+/+/+/+/+/+/+/+w==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   &u),
        0);
}

static void test_refusal_messages(void **state)
{
    /* the exact texts clients and logs see for the room and upgrade-pair rules */
    assert_refusal("GET /chat/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request",
                   "invalid room name");
    assert_refusal("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request",
                   "expected Upgrade: websocket and Connection: Upgrade");
    assert_refusal("GET /ws HTTP/1.0\r\n" GOOD_HEADERS "\r\n", 400, "bad_request",
                   "WebSocket upgrades need HTTP/1.1");
    assert_refusal("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found", "unknown path");
    assert_refusal("POST /ws HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed",
                   "only GET is allowed");
}

/* ---- framing (RFC 9110 / 9112): Host, and no body on any request ------------------------- */

/* The framing verdict of `text` as gw_http_req_check_framing and gw_upgrade_check see it. */
static void assert_framing(const char *text, const char *message)
{
    gw_http_req_t r;
    const char *why = "unset";
    assert_true(parse_whole(&r, text, MAX_HEAD) == (int)strlen(text));
    int rc = gw_http_req_check_framing(&r, &why);
    gw_http_req_dispose(&r);
    if (message == NULL) {
        if (rc != 0)
            fail_msg("refused (%s): %s", why, text);
        assert_null(why);
        return;
    }
    if (rc != CHAT_EMALFORMED)
        fail_msg("accepted: %s", text);
    assert_string_equal(why, message);
    assert_refusal(text, 400, "bad_request", message);
}

#define NO_HOST                                                                                    \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n"                                                                      \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Version: 13\r\n"

static void test_framing_accepted(void **state)
{
    static const char *const hosts[] = {
        "x",          "chat.example.com", "chat.example.com:8080", "127.0.0.1:1", "[::1]",
        "[::1]:8080", "[::ffff:1.2.3.4]", "xn--bcher-kva.example", "a%41b",       "host:",
        "a_b~c-d.e",  "!$&'()*+,;=",
    };
    char buf[512];
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        FMT(buf, "GET /ws HTTP/1.1\r\nHost: %s\r\n" NO_HOST "\r\n", hosts[i]);
        assert_framing(buf, NULL);
        gw_upgrade_t u;
        assert_int_equal(check_text(buf, &u), 0);
    }
    /* HTTP/1.0 needs no Host (the demo page) */
    assert_framing("GET / HTTP/1.0\r\n\r\n", NULL);
    /* Content-Length 0, however spelled, declares no body */
    assert_framing("GET /ws HTTP/1.1\r\n" GOOD_HEADERS "Content-Length: 0\r\n\r\n", NULL);
    assert_framing("GET /ws HTTP/1.1\r\n" GOOD_HEADERS "content-length: 00\r\n"
                   "Content-Length: 0, 0\r\n\r\n",
                   NULL);
    gw_upgrade_t u;
    assert_int_equal(
        check_text("GET /ws HTTP/1.1\r\n" GOOD_HEADERS "Content-Length: 0\r\n\r\n", &u), 0);
    assert_int_equal(u.route, GW_ROUTE_WS);
}

static void test_refuse_host_400(void **state)
{
    static const char *const bad[] = {
        "",     "a b",     "a/b", "a@b", "a?b",     "a#b", "[::1",  "[]",   "[::1]x", "[::g]",
        "h:8a", "h:80:80", "%zz", "%4",  "caf\xe9", ":80", "\"x\"", "a\tb", "[v1.x]", "h\\x",
    };
    char buf[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FMT(buf, "GET /ws HTTP/1.1\r\nHost: %s\r\n" NO_HOST "\r\n", bad[i]);
        assert_framing(buf, "invalid Host header");
    }
    assert_framing("GET /ws HTTP/1.1\r\n" NO_HOST "\r\n", "missing Host header");
    /* every route, and before the path and method checks */
    assert_framing("GET / HTTP/1.1\r\n\r\n", "missing Host header");
    assert_framing("GET /nope HTTP/1.1\r\n\r\n", "missing Host header");
    assert_framing("POST /ws HTTP/1.1\r\n\r\n", "missing Host header");
    /* two Host lines, even equal ones, and in HTTP/1.0 too */
    assert_framing("GET /ws HTTP/1.1\r\nHost: x\r\n" NO_HOST "host: x\r\n\r\n",
                   "more than one Host header");
    assert_framing("GET /ws HTTP/1.1\r\nHost: a\r\nHost: b\r\n" NO_HOST "\r\n",
                   "more than one Host header");
    assert_framing("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", "more than one Host header");
    assert_framing("GET / HTTP/1.0\r\nHost: a b\r\n\r\n", "invalid Host header");
}

static void test_refuse_body_400(void **state)
{
    static const char *const te = "Transfer-Encoding is not accepted: requests here have no body";
    static const char *const both = "Content-Length together with Transfer-Encoding";
    static const char *const body = "a request body is not accepted (Content-Length must be 0)";
    static const char *const invalid = "invalid Content-Length";
    static const char *const conflict = "conflicting Content-Length values";
    static const struct {
        const char *headers, *message;
    } cases[] = {
        {"Transfer-Encoding: chunked\r\n", te},
        {"Transfer-Encoding: identity\r\n", te},
        {"transfer-encoding: gzip, chunked\r\n", te},
        {"Transfer-Encoding:\r\n", te},
        {"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", both},
        {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", both},
        {"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", both},
        {"Content-Length: x\r\nTransfer-Encoding: chunked\r\n", both},
        {"Content-Length: 5\r\n", body},
        {"Content-Length: 1, 1\r\n", body},
        {"Content-Length: 18446744073709551616\r\n", body},
        {"Content-Length: 5\r\nContent-Length: 6\r\n", conflict},
        {"Content-Length: 5, 6\r\n", conflict},
        {"Content-Length: 0\r\nContent-Length: 1\r\n", conflict},
        {"Content-Length: 0, 00, 1\r\n", conflict},
        {"Content-Length: abc\r\n", invalid},
        {"Content-Length:\r\n", invalid},
        {"Content-Length: -1\r\n", invalid},
        {"Content-Length: +5\r\n", invalid},
        {"Content-Length: 0x10\r\n", invalid},
        {"Content-Length: 5 5\r\n", invalid},
        {"Content-Length: 5,\r\n", invalid},
        {"Content-Length: 5\r\nContent-Length: x\r\n", invalid},
    };
    char buf[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        FMT(buf, "GET /ws HTTP/1.1\r\n" GOOD_HEADERS "%s\r\n", cases[i].headers);
        assert_framing(buf, cases[i].message);
        /* any route, method or version: the framing is checked first */
        FMT(buf, "POST /nope HTTP/1.0\r\n%s\r\n", cases[i].headers);
        assert_framing(buf, cases[i].message);
    }
}

/* ---- builders ---------------------------------------------------------------------------- */

static void assert_buf(const chat_buf_t *b, const char *want)
{
    if (b->len != strlen(want) || memcmp(b->p, want, b->len) != 0)
        fail_msg("got:\n%.*s\nwant:\n%s", (int)b->len, b->p, want);
}

static void test_build_101(void **state)
{
    gw_upgrade_t u;
    memset(&u, 0, sizeof(u));
    u.route = GW_ROUTE_WS;
    strcpy(u.accept, RFC_ACCEPT);
    chat_buf_t out = CHAT_BUF_INIT;
    gw_http_build_101(&out, &u);
    assert_buf(&out, "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                     "\r\n");
    chat_buf_reset(&out);
    u.offers_chat_v1 = 1;
    gw_http_build_101(&out, &u);
    assert_buf(&out, "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                     "Sec-WebSocket-Protocol: chat.v1\r\n"
                     "\r\n");
    chat_buf_free(&out);
}

static void test_build_refusals(void **state)
{
    chat_buf_t out = CHAT_BUF_INIT;
    chat_buf_append(&out, "kept", 4); /* builders append */
    gw_http_build_refusal(&out, 400, "bad_request", "invalid room name");
    assert_buf(&out, "kept"
                     "HTTP/1.1 400 Bad Request\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: 53\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-store\r\n"
                     "\r\n"
                     "{\"error\":\"bad_request\",\"message\":\"invalid room name\"}");
    chat_buf_reset(&out);
    gw_http_build_refusal(&out, 426, "upgrade_required", "Sec-WebSocket-Version must be 13");
    assert_buf(&out, "HTTP/1.1 426 Upgrade Required\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: 73\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-store\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n"
                     "{\"error\":\"upgrade_required\",\"message\":"
                     "\"Sec-WebSocket-Version must be 13\"}");
    chat_buf_reset(&out);
    gw_http_build_refusal(&out, 405, "method_not_allowed", "only GET is allowed");
    assert_buf(&out, "HTTP/1.1 405 Method Not Allowed\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: 62\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-store\r\n"
                     "Allow: GET\r\n"
                     "\r\n"
                     "{\"error\":\"method_not_allowed\",\"message\":\"only GET is allowed\"}");
    chat_buf_reset(&out);
    /* escaping is envelope.c's job; Content-Length counts the escaped bytes */
    gw_http_build_refusal(&out, 404, "not_found", "no \"such\" path");
    assert_buf(&out, "HTTP/1.1 404 Not Found\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: 50\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-store\r\n"
                     "\r\n"
                     "{\"error\":\"not_found\",\"message\":\"no \\\"such\\\" path\"}");
    chat_buf_free(&out);
}

static void test_build_refusal_status_lines(void **state)
{
    static const struct {
        int status;
        const char *line;
    } cases[] = {
        {400, "HTTP/1.1 400 Bad Request\r\n"},
        {401, "HTTP/1.1 401 Unauthorized\r\n"},
        {403, "HTTP/1.1 403 Forbidden\r\n"},
        {404, "HTTP/1.1 404 Not Found\r\n"},
        {405, "HTTP/1.1 405 Method Not Allowed\r\n"},
        {426, "HTTP/1.1 426 Upgrade Required\r\n"},
        {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
        {503, "HTTP/1.1 503 Service Unavailable\r\n"},
        {418, "HTTP/1.1 418 Error\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        chat_buf_t out = CHAT_BUF_INIT;
        gw_http_build_refusal(&out, cases[i].status, "e", "m");
        size_t n = strlen(cases[i].line);
        assert_true(out.len > n);
        if (memcmp(out.p, cases[i].line, n) != 0)
            fail_msg("status %d: got %.*s", cases[i].status, (int)n, out.p);
        /* the body is last and Content-Length matches it */
        static const char body[] = "{\"error\":\"e\",\"message\":\"m\"}";
        assert_true(out.len > sizeof(body));
        assert_memory_equal(out.p + out.len - (sizeof(body) - 1), body, sizeof(body) - 1);
        char cl[64];
        FMT(cl, "\r\nContent-Length: %zu\r\n", sizeof(body) - 1);
        assert_non_null(memmem(out.p, out.len, cl, strlen(cl)));
        assert_non_null(memmem(out.p, out.len, "\r\nConnection: close\r\n", 21));
        chat_buf_free(&out);
    }
}

static void test_build_ok(void **state)
{
    chat_buf_t out = CHAT_BUF_INIT;
    gw_http_build_ok(&out, "text/html; charset=utf-8", CHAT_LIT("<p>hi</p>"));
    assert_buf(&out, "HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/html; charset=utf-8\r\n"
                     "Content-Length: 9\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "\r\n"
                     "<p>hi</p>");
    chat_buf_reset(&out);
    gw_http_build_ok(&out, "text/plain", CHAT_LIT(""));
    assert_buf(&out, "HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: 0\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "\r\n");
    chat_buf_free(&out);
}

/* A full handshake: parse, check, answer. */
static void test_handshake_end_to_end(void **state)
{
    gw_http_req_t r;
    gw_upgrade_t u;
    chat_buf_t out = CHAT_BUF_INIT;
    assert_int_equal(parse_bytewise(&r, UPGRADE_WS, strlen(UPGRADE_WS), 512), 1);
    assert_int_equal(gw_upgrade_check(&r, &u), 0);
    gw_http_build_101(&out, &u);
    assert_non_null(memmem(out.p, out.len, "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n", 52));
    assert_non_null(memmem(out.p, out.len, "Sec-WebSocket-Protocol: chat.v1\r\n", 33));
    chat_buf_free(&out);
    gw_http_req_dispose(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_whole),
        cmocka_unit_test(test_parse_byte_at_a_time),
        cmocka_unit_test(test_parse_chunk_splits),
        cmocka_unit_test(test_mutations_agree_across_splits),
        cmocka_unit_test(test_trailing_websocket_bytes),
        cmocka_unit_test(test_lf_only_line_endings),
        cmocka_unit_test(test_minimal_and_http10),
        cmocka_unit_test(test_value_whitespace_and_obs_text),
        cmocka_unit_test(test_head_limit),
        cmocka_unit_test(test_refusal_for_too_large_is_431),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_malformed_request_lines),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_dispose_and_reinit),
        cmocka_unit_test(test_header_tokens),
        cmocka_unit_test(test_accept_key_rfc6455),
        cmocka_unit_test(test_check_upgrade_ws),
        cmocka_unit_test(test_check_chat_room),
        cmocka_unit_test(test_check_demo_route),
        cmocka_unit_test(test_check_query_split),
        cmocka_unit_test(test_query_param),
        cmocka_unit_test(test_check_upgrade_query),
        cmocka_unit_test(test_token_carriers),
        cmocka_unit_test(test_check_subprotocol),
        cmocka_unit_test(test_check_header_variants_accepted),
        cmocka_unit_test(test_refuse_unknown_path_404),
        cmocka_unit_test(test_refuse_unknown_path_before_method),
        cmocka_unit_test(test_refuse_method_405),
        cmocka_unit_test(test_refuse_room_name_400),
        cmocka_unit_test(test_refuse_upgrade_pair_400),
        cmocka_unit_test(test_refuse_version_426),
        cmocka_unit_test(test_refuse_key_400),
        cmocka_unit_test(test_refusal_messages),
        cmocka_unit_test(test_framing_accepted),
        cmocka_unit_test(test_refuse_host_400),
        cmocka_unit_test(test_refuse_body_400),
        cmocka_unit_test(test_build_101),
        cmocka_unit_test(test_build_refusals),
        cmocka_unit_test(test_build_refusal_status_lines),
        cmocka_unit_test(test_build_ok),
        cmocka_unit_test(test_handshake_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
