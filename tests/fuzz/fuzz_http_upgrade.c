/* tests/fuzz/fuzz_http_upgrade.c - libFuzzer target for gateway/http_upgrade.h.
 * Input: 1 byte head limit (0 = 8192, the gateway's; b = b * 32 bytes otherwise), FUZZ_NCHUNK
 * bytes of chunk sizes (fuzz.h), then the bytes a client sends. The stream is parsed twice, whole
 * and in chunks, and both parses must agree (same verdict, same completion offset, same
 * results). Every return of gw_http_req_feed() must be 0..n or one of its documented errors,
 * every result must point inside the stored head, and a request must not be fed after its
 * verdict. Complete requests go through gw_http_req_token() (the credential lies inside its
 * carrier), gw_http_query_param() (a value is the rest of the first "name=" item, inside the
 * query), gw_upgrade_check() (its query is the request's) and the response builders, whose output
 * is checked for shape (status line, Content-Length = body, accept key). */
#include <string.h>

#include "buf.h"
#include "err.h"
#include "http_upgrade.h"
#include "str.h"

#include "fuzz.h"

#define PREFIX (1 + FUZZ_NCHUNK)

static size_t head_limit(uint8_t b)
{
    return b == 0 ? 8192 : (size_t)b * 32;
}

static int inside(const gw_http_req_t *r, chat_str_t s)
{
    const char *lo = r->_head.p, *hi = r->_head.p + r->_head.len;
    return s.p != NULL && s.p >= lo && s.len <= (size_t)(hi - s.p);
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int has_ctl_line_end(chat_str_t s)
{
    return memchr(s.p, '\r', s.len) != NULL || memchr(s.p, '\n', s.len) != NULL;
}

static void check_rc(int rc, size_t n)
{
    FUZZ_CHECK(rc == CHAT_ETOOLARGE || rc == CHAT_EMALFORMED || rc == CHAT_ENOMEM ||
               (rc >= 0 && (size_t)rc <= n));
}

/* A request that completed after `used` bytes of in[]. */
static void check_complete(const gw_http_req_t *r, const uint8_t *in, size_t used, size_t max)
{
    FUZZ_CHECK(used >= 1 && used <= max);
    FUZZ_CHECK(r->_head.len == used && memcmp(r->_head.p, in, used) == 0);
    FUZZ_CHECK(r->_head.p[used - 1] == '\n');

    FUZZ_CHECK(inside(r, r->method) && r->method.p == r->_head.p && r->method.len > 0);
    FUZZ_CHECK(r->method.p[r->method.len] == ' ');
    FUZZ_CHECK(inside(r, r->target) && r->target.len > 0 && r->target.p[0] == '/');
    FUZZ_CHECK(r->target.p == r->method.p + r->method.len + 1);
    FUZZ_CHECK(inside(r, r->path) && r->path.p == r->target.p);
    FUZZ_CHECK(memchr(r->path.p, '?', r->path.len) == NULL);
    if (r->query.p != NULL) {
        FUZZ_CHECK(inside(r, r->query));
        FUZZ_CHECK(r->target.p[r->path.len] == '?' && r->query.p == r->path.p + r->path.len + 1);
        FUZZ_CHECK(r->path.len + 1 + r->query.len == r->target.len);
    } else {
        FUZZ_CHECK(r->path.len == r->target.len);
    }
    FUZZ_CHECK(r->version_major == 1 && (r->version_minor == 0 || r->version_minor == 1));

    FUZZ_CHECK(r->nheaders <= GW_HTTP_MAX_HEADERS);
    for (unsigned k = 0; k < r->nheaders; k++) {
        chat_str_t name = r->headers[k].name, value = r->headers[k].value;
        FUZZ_CHECK(inside(r, name) && name.len > 0 && name.p > r->target.p);
        FUZZ_CHECK(memchr(name.p, ':', name.len) == NULL && !has_ctl_line_end(name));
        FUZZ_CHECK(name.p[name.len] == ':');
        FUZZ_CHECK(inside(r, value) && value.p > name.p + name.len);
        FUZZ_CHECK(!has_ctl_line_end(value));
        if (value.len > 0)
            FUZZ_CHECK(!is_ows(value.p[0]) && !is_ows(value.p[value.len - 1]));
        /* lookups see every header: the first of its name, and a comma-free value as a token */
        FUZZ_CHECK(gw_http_req_header(r, name).p != NULL);
        if (memchr(value.p, ',', value.len) == NULL)
            FUZZ_CHECK(gw_http_req_has_token(r, name, value) == 1);
    }
}

/* Both parses of one stream hold the same results (as offsets into their own heads). */
static void check_same(const gw_http_req_t *a, const gw_http_req_t *b)
{
#define OFF(r, s)   ((s).p == NULL ? (size_t)-1 : (size_t)((s).p - (r)->_head.p))
#define SAME(field) FUZZ_CHECK(a->field.len == b->field.len && OFF(a, a->field) == OFF(b, b->field))
    FUZZ_CHECK(a->_head.len == b->_head.len && memcmp(a->_head.p, b->_head.p, a->_head.len) == 0);
    SAME(method);
    SAME(target);
    SAME(path);
    SAME(query);
    FUZZ_CHECK(a->version_minor == b->version_minor && a->nheaders == b->nheaders);
    for (unsigned k = 0; k < a->nheaders; k++) {
        SAME(headers[k].name);
        SAME(headers[k].value);
    }
#undef SAME
#undef OFF
}

/* "HTTP/1.1 <status> ...\r\n...\r\n\r\n<body>" with Content-Length = body length. */
static void check_response(const chat_buf_t *out, int status, int has_body)
{
    char line[32];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
    FUZZ_CHECK(out->len > (size_t)n && memcmp(out->p, line, (size_t)n) == 0);
    const char *end = memmem(out->p, out->len, "\r\n\r\n", 4);
    FUZZ_CHECK(end != NULL);
    size_t head_len = (size_t)(end - out->p) + 4, body_len = out->len - head_len;
    if (!has_body) {
        FUZZ_CHECK(body_len == 0);
        return;
    }
    const char *cl = memmem(out->p, head_len, "\r\nContent-Length: ", 18);
    FUZZ_CHECK(cl != NULL);
    FUZZ_CHECK(strtoull(cl + 18, NULL, 10) == body_len);
}

/* The credential, when a carrier holds one, lies inside that carrier. */
static void check_token(const gw_http_req_t *r)
{
    chat_str_t tok = CHAT_LIT("unset"), within = CHAT_STR_NULL;
    gw_token_carrier_t c = gw_http_req_token(r, &tok);

    switch (c) {
    case GW_TOKEN_NONE:
        FUZZ_CHECK(tok.p == NULL);
        return;
    case GW_TOKEN_SUBPROTOCOL:
        /* the token follows "bearer." in one item of the list, and has no comma */
        FUZZ_CHECK(tok.p != NULL && memchr(tok.p, ',', tok.len) == NULL);
        FUZZ_CHECK(memcmp(tok.p - 7, "bearer.", 7) == 0);
        for (unsigned k = 0; k < r->nheaders && within.p == NULL; k++) {
            chat_str_t v = r->headers[k].value;
            if (chat_str_caseeq(r->headers[k].name, CHAT_LIT("Sec-WebSocket-Protocol")) &&
                tok.p >= v.p && tok.p + tok.len <= v.p + v.len)
                within = v;
        }
        break;
    case GW_TOKEN_HEADER:
        within = gw_http_req_header(r, CHAT_LIT("Authorization"));
        break;
    case GW_TOKEN_QUERY:
        within = r->query;
        FUZZ_CHECK(tok.p != NULL && memcmp(tok.p - 6, "token=", 6) == 0);
        FUZZ_CHECK(memchr(tok.p, '&', tok.len) == NULL);
        break;
    default:
        FUZZ_CHECK(!"unknown token carrier");
    }
    FUZZ_CHECK(within.p != NULL && inside(r, tok));
    FUZZ_CHECK(tok.p >= within.p && tok.p + tok.len <= within.p + within.len);
}

/* gw_http_query_param(): a found value is the rest of the first '&'-separated item that starts
 * with "name=", inside the query; when none is found no item starts so. */
static void check_query_param(const gw_http_req_t *r, const char *name)
{
    chat_str_t q = r->query, v = CHAT_LIT("unset");
    size_t nlen = strlen(name), first = SIZE_MAX, start = 0;
    int found = gw_http_query_param(q, name, &v);

    for (size_t j = 0; q.p != NULL && j <= q.len && first == SIZE_MAX; j++) {
        if (j < q.len && q.p[j] != '&')
            continue;
        if (j - start > nlen && memcmp(q.p + start, name, nlen) == 0 && q.p[start + nlen] == '=')
            first = start;
        start = j + 1;
    }
    FUZZ_CHECK(found == 0 || found == 1);
    if (!found) {
        FUZZ_CHECK(v.p == NULL && first == SIZE_MAX);
        return;
    }
    FUZZ_CHECK(first != SIZE_MAX && v.p == q.p + first + nlen + 1);
    FUZZ_CHECK(v.p + v.len <= q.p + q.len && memchr(v.p, '&', v.len) == NULL);
    FUZZ_CHECK(v.p + v.len == q.p + q.len || v.p[v.len] == '&');
}

static void check_upgrade(const gw_http_req_t *r)
{
    gw_upgrade_t u;
    chat_buf_t out = CHAT_BUF_INIT;
    int rc = gw_upgrade_check(r, &u);

    FUZZ_CHECK(rc == 0 || rc == CHAT_EINVAL);
    if (rc != 0) {
        FUZZ_CHECK(u.status == 400 || u.status == 404 || u.status == 405 || u.status == 426 ||
                   u.status == 503);
        FUZZ_CHECK(u.error != NULL && u.message != NULL);
        gw_http_build_refusal(&out, u.status, u.error, u.message);
        check_response(&out, u.status, 1);
        FUZZ_CHECK(memmem(out.p, out.len, "{\"error\":", 9) != NULL);
        chat_buf_free(&out);
        return;
    }
    FUZZ_CHECK(chat_str_eq(r->method, CHAT_LIT("GET")));
    if (u.route == GW_ROUTE_DEMO) {
        FUZZ_CHECK(chat_str_eq(r->path, CHAT_LIT("/")));
        gw_http_build_ok(&out, "text/html; charset=utf-8", r->target);
        check_response(&out, 200, 1);
        chat_buf_free(&out);
        return;
    }
    FUZZ_CHECK(u.route == GW_ROUTE_WS || u.route == GW_ROUTE_CHAT);
    FUZZ_CHECK(r->version_minor == 1);
    FUZZ_CHECK(u.query.p == r->query.p && u.query.len == r->query.len);
    if (u.route == GW_ROUTE_CHAT) {
        FUZZ_CHECK(inside(r, u.room) && u.room.len > 0);
        FUZZ_CHECK(u.room.p + u.room.len == r->path.p + r->path.len);
    }
    chat_str_t key = gw_http_req_header(r, CHAT_LIT("Sec-WebSocket-Key"));
    char accept[29];
    FUZZ_CHECK(key.p != NULL && key.len == 24);
    gw_ws_accept_key(key, accept);
    FUZZ_CHECK(strlen(u.accept) == 28 && strcmp(u.accept, accept) == 0);

    gw_http_build_101(&out, &u);
    check_response(&out, 101, 0);
    char line[64];
    snprintf(line, sizeof(line), "\r\nSec-WebSocket-Accept: %s\r\n", u.accept);
    FUZZ_CHECK(memmem(out.p, out.len, line, strlen(line)) != NULL);
    FUZZ_CHECK((memmem(out.p, out.len, "\r\nSec-WebSocket-Protocol: chat.v1\r\n", 35) != NULL) ==
               (u.offers_chat_v1 != 0));
    chat_buf_free(&out);
}

/* What the session does with a failed head: answer it. */
static void check_failure_answer(int rc)
{
    chat_buf_t out = CHAT_BUF_INIT;
    int status = rc == CHAT_ETOOLARGE ? 431 : rc == CHAT_ENOMEM ? 503 : 400;
    gw_http_build_refusal(&out, status, "bad_request", "malformed HTTP request");
    check_response(&out, status, 1);
    chat_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX)
        return 0;
    const size_t max = head_limit(data[0]);
    fuzz_chunker_t ch = {.sizes = data + 1, .next = 0};
    const uint8_t *in = data + PREFIX;
    const size_t n = size - PREFIX;
    gw_http_req_t whole, chunked;

    /* whole */
    gw_http_req_init(&whole, max);
    int rc_whole = gw_http_req_feed(&whole, (const char *)in, n);
    check_rc(rc_whole, n);

    /* chunked */
    gw_http_req_init(&chunked, max);
    size_t off = 0;
    int rc = 0;
    while (off < n) {
        int empty_first;
        size_t len = fuzz_next_chunk(&ch, n - off, &empty_first);
        if (empty_first)
            FUZZ_CHECK(gw_http_req_feed(&chunked, (const char *)in + off, 0) == 0);
        rc = gw_http_req_feed(&chunked, (const char *)in + off, len);
        check_rc(rc, len);
        if (rc != 0)
            break;
        off += len;
    }

    /* same verdict */
    if (rc_whole > 0) {
        FUZZ_CHECK(rc > 0 && off + (size_t)rc == (size_t)rc_whole);
        check_complete(&whole, in, (size_t)rc_whole, max);
        check_complete(&chunked, in, (size_t)rc_whole, max);
        check_same(&whole, &chunked);
    } else {
        FUZZ_CHECK(rc == rc_whole);
    }

    /* after a verdict the request takes no more input */
    if (rc_whole != 0) {
        FUZZ_CHECK(gw_http_req_feed(&whole, "x", 1) == CHAT_EINVAL);
        FUZZ_CHECK(gw_http_req_feed(&chunked, "x", 1) == CHAT_EINVAL);
    }

    if (rc_whole > 0) {
        check_token(&whole);
        check_query_param(&whole, "since");
        check_query_param(&whole, "epoch");
        check_query_param(&whole, "token");
        check_upgrade(&whole);
    } else if (rc_whole == 0) {
        gw_upgrade_t u;
        FUZZ_CHECK(whole._head.len == n && n <= max);
        FUZZ_CHECK(gw_upgrade_check(&whole, &u) == CHAT_EINVAL && u.status == 400);
    } else {
        check_failure_answer(rc_whole);
    }

    gw_http_req_dispose(&whole);
    gw_http_req_dispose(&chunked);
    return 0;
}
