/* gateway/http_upgrade.c - the HTTP/1.1 half of the WebSocket handshake (see http_upgrade.h).
 * The parser is a byte-at-a-time state machine: each byte is copied into r->_head (grown
 * geometrically, never past r->_max bytes) and examined once, so any split of the input costs
 * O(n) in total. While parsing, results hold lengths and the private fields hold offsets; the
 * chat_str_t views are resolved against the final buffer when the head completes, so a realloc
 * never leaves them dangling. Then the framing checks (Host, no body), routing + RFC 6455
 * checks, the accept key (OpenSSL EVP) and the response builders. No I/O here, and no JSON: refusal
 * bodies come from envelope.c. */
#include "http_upgrade.h"

#include <limits.h>

#include <openssl/evp.h>

#include "alloc.h"
#include "base64.h"
#include "envelope.h"
#include "err.h"
#include "names.h"

#define WS_GUID     "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN  24 /* base64 of 16 bytes, with "==" padding */
#define WS_VERSION  "13"
#define SUBPROTOCOL "chat.v1"

/* Request-line states come first: step() dispatches on ST_REQLINE_LF. */
enum parse_state {
    ST_METHOD = 0, /* in the method token */
    ST_TARGET,     /* in the request-target */
    ST_VERSION,    /* in "HTTP/1.x" */
    ST_REQLINE_LF, /* after the CR that ends the request line */
    ST_LINE_START, /* at the start of a header line or of the final empty line */
    ST_NAME,       /* in a header name */
    ST_VALUE_OWS,  /* after the colon, skipping whitespace */
    ST_VALUE,      /* in a header value */
    ST_VALUE_LF,   /* after the CR that ends a header line */
    ST_END_LF,     /* after the CR of the final empty line */
    ST_DONE,       /* complete; results resolved */
    ST_FAILED,     /* an error was returned */
};

/* RFC 7230 tchar: "!#$%&'*+-.^_`|~" DIGIT ALPHA */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* field-vchar: VCHAR or obs-text (HTAB and SP are handled by the callers) */
static int is_field_vchar(unsigned char c)
{
    return c > 0x20 && c != 0x7f;
}

void gw_http_req_init(gw_http_req_t *r, size_t max_head_bytes)
{
    memset(r, 0, sizeof(*r));
    chat_buf_init(&r->_head);
    /* the completion value is an int; a head beyond INT_MAX bytes is never sensible anyway */
    r->_max = max_head_bytes > INT_MAX ? INT_MAX : max_head_bytes;
    r->_state = ST_METHOD;
}

void gw_http_req_dispose(gw_http_req_t *r)
{
    chat_buf_free(&r->_head);
    memset(r, 0, sizeof(*r));
    r->_state = ST_FAILED;
}

static void end_header(gw_http_req_t *r)
{
    unsigned k = r->nheaders++;
    r->_name_off[k] = r->_mark;
    r->headers[k].name = chat_str(NULL, r->_name_end - r->_mark);
    r->_value_off[k] = r->_value_start;
    r->headers[k].value = chat_str(NULL, r->_value_end - r->_value_start);
}

/* The request line; same contract as step(). */
static int step_request_line(gw_http_req_t *r, size_t i, unsigned char c)
{
    static const char version[] = "HTTP/1."; /* then '0' or '1' */
    size_t k;

    switch (r->_state) {
    case ST_METHOD:
        if (is_tchar(c)) {
            r->method.len++;
            return 0;
        }
        if (c != ' ' || r->method.len == 0)
            return CHAT_EMALFORMED;
        r->_state = ST_TARGET;
        return 0;
    case ST_TARGET:
        if (r->target.len == 0 && c != '/')
            return CHAT_EMALFORMED; /* origin-form only */
        if (c == ' ') {
            r->_mark = i + 1;
            r->_state = ST_VERSION;
            return 0;
        }
        if (c <= 0x20 || c >= 0x7f)
            return CHAT_EMALFORMED; /* controls, and raw non-ASCII, which no URI contains */
        if (c == '?' && r->_qmark == 0)
            r->_qmark = r->target.len + 1;
        r->target.len++;
        return 0;
    case ST_VERSION:
        k = i - r->_mark;
        if (k < sizeof(version) - 1)
            return c == (unsigned char)version[k] ? 0 : CHAT_EMALFORMED;
        if (k == sizeof(version) - 1) {
            if (c != '0' && c != '1')
                return CHAT_EMALFORMED;
            r->version_major = 1;
            r->version_minor = c - '0';
            return 0;
        }
        if (c != '\r' && c != '\n')
            return CHAT_EMALFORMED;
        r->_state = c == '\r' ? ST_REQLINE_LF : ST_LINE_START;
        return 0;
    case ST_REQLINE_LF:
        if (c != '\n')
            return CHAT_EMALFORMED;
        r->_state = ST_LINE_START;
        return 0;
    default:
        return CHAT_EINVAL;
    }
}

/* Header lines and the final empty line; same contract as step(). */
static int step_header(gw_http_req_t *r, size_t i, unsigned char c)
{
    switch (r->_state) {
    case ST_LINE_START:
        if (c == '\n')
            return 1;
        if (c == '\r') {
            r->_state = ST_END_LF;
            return 0;
        }
        if (!is_tchar(c))
            return CHAT_EMALFORMED; /* includes obs-fold (SP/HTAB) and an empty name */
        if (r->nheaders == GW_HTTP_MAX_HEADERS)
            return CHAT_ETOOLARGE;
        r->_mark = i;
        r->_state = ST_NAME;
        return 0;
    case ST_NAME:
        if (is_tchar(c))
            return 0;
        if (c != ':')
            return CHAT_EMALFORMED; /* includes whitespace before the colon */
        r->_name_end = i;
        r->_state = ST_VALUE_OWS;
        return 0;
    case ST_VALUE_OWS:
    case ST_VALUE:
        if (is_ows(c))
            return 0;
        if (c == '\r' || c == '\n') {
            if (r->_state == ST_VALUE_OWS)
                r->_value_start = r->_value_end = i; /* empty value */
            end_header(r);
            r->_state = c == '\r' ? ST_VALUE_LF : ST_LINE_START;
            return 0;
        }
        if (!is_field_vchar(c))
            return CHAT_EMALFORMED;
        if (r->_state == ST_VALUE_OWS) {
            r->_value_start = i;
            r->_state = ST_VALUE;
        }
        r->_value_end = i + 1;
        return 0;
    case ST_VALUE_LF:
        if (c != '\n')
            return CHAT_EMALFORMED;
        r->_state = ST_LINE_START;
        return 0;
    case ST_END_LF:
        return c == '\n' ? 1 : CHAT_EMALFORMED;
    default:
        return CHAT_EINVAL;
    }
}

/* Examines byte c, stored at offset i of the head. Returns 0 (continue), 1 (head complete) or
 * a negative CHAT_E* code. */
static int step(gw_http_req_t *r, size_t i, unsigned char c)
{
    if (r->_state <= ST_REQLINE_LF)
        return step_request_line(r, i, c);
    return step_header(r, i, c);
}

/* Turns the recorded lengths and offsets into views of the final head buffer. */
static void resolve(gw_http_req_t *r)
{
    const char *base = r->_head.p;
    r->method.p = base;
    r->target.p = base + r->method.len + 1;
    if (r->_qmark != 0) {
        r->path = chat_str(r->target.p, r->_qmark - 1);
        r->query = chat_str(r->target.p + r->_qmark, r->target.len - r->_qmark);
    } else {
        r->path = r->target;
        r->query = CHAT_STR_NULL;
    }
    for (unsigned k = 0; k < r->nheaders; k++) {
        r->headers[k].name.p = base + r->_name_off[k];
        r->headers[k].value.p = base + r->_value_off[k];
    }
}

static int fail(gw_http_req_t *r, int rc)
{
    r->_state = ST_FAILED;
    return rc;
}

int gw_http_req_feed(gw_http_req_t *r, const char *p, size_t n)
{
    if (r->_state == ST_DONE || r->_state == ST_FAILED)
        return CHAT_EINVAL;
    chat_buf_t *h = &r->_head;
    for (size_t i = 0; i < n; i++) {
        if (h->len == r->_max)
            return fail(r, CHAT_ETOOLARGE);
        /* grow with the head itself (doubling), not with the size of the read */
        if (h->len == h->cap && chat_buf_try_reserve(h, 1) != 0)
            return fail(r, CHAT_ENOMEM);
        h->p[h->len] = p[i];
        int rc = step(r, h->len, (unsigned char)p[i]);
        h->len++;
        if (rc < 0)
            return fail(r, rc);
        if (rc > 0) {
            resolve(r);
            r->_state = ST_DONE;
            return (int)(i + 1);
        }
    }
    return 0;
}

chat_str_t gw_http_req_header(const gw_http_req_t *r, chat_str_t name)
{
    if (r->_state != ST_DONE)
        return CHAT_STR_NULL;
    for (unsigned k = 0; k < r->nheaders; k++)
        if (chat_str_caseeq(r->headers[k].name, name))
            return r->headers[k].value;
    return CHAT_STR_NULL;
}

/* 1 when the comma-separated list in `value` holds `token` (items trimmed of SP/HTAB). */
static int list_has(chat_str_t value, chat_str_t token, int caseless)
{
    const char *s = value.p, *end = value.p + value.len;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *e = comma ? comma : end;
        while (s < e && is_ows((unsigned char)*s))
            s++;
        while (e > s && is_ows((unsigned char)e[-1]))
            e--;
        chat_str_t item = chat_str(s, (size_t)(e - s));
        if (caseless ? chat_str_caseeq(item, token) : chat_str_eq(item, token))
            return 1;
        if (comma == NULL)
            return 0;
        s = comma + 1;
    }
}

static int headers_have(const gw_http_req_t *r, chat_str_t name, chat_str_t token, int caseless)
{
    if (r->_state != ST_DONE)
        return 0;
    for (unsigned k = 0; k < r->nheaders; k++)
        if (chat_str_caseeq(r->headers[k].name, name) &&
            list_has(r->headers[k].value, token, caseless))
            return 1;
    return 0;
}

int gw_http_req_has_token(const gw_http_req_t *r, chat_str_t name, chat_str_t token)
{
    return headers_have(r, name, token, 1);
}

static chat_str_t trim_ows(const char *p, size_t n)
{
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return chat_str(p, n);
}

/* ---- framing (RFC 9110 7.2 and 8.6, RFC 9112 3.2 and 6) ---- */

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 unreserved / sub-delims: what a reg-name holds besides pct-encoded */
static int is_reg_name_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("-._~!$&'()*+,;=", c) != NULL;
}

/* Host = uri-host [ ":" port ]: a reg-name (pct-encoding allowed), an IPv4 address (a reg-name
 * by its characters) or an IPv6 literal in brackets; port = *DIGIT. An http URI has a host, so
 * the empty value is refused as well. */
static int host_valid(chat_str_t h)
{
    size_t i = 0, n = h.len;
    if (n == 0)
        return 0;
    if (h.p[0] == '[') {
        for (i = 1; i < n && h.p[i] != ']'; i++)
            if (!is_hex((unsigned char)h.p[i]) && h.p[i] != ':' && h.p[i] != '.')
                return 0;
        if (i == n || i == 1)
            return 0;
        i++; /* the ']' */
    } else {
        for (; i < n && h.p[i] != ':'; i++) {
            unsigned char c = (unsigned char)h.p[i];
            if (c == '%') {
                if (n - i < 3 || !is_hex((unsigned char)h.p[i + 1]) ||
                    !is_hex((unsigned char)h.p[i + 2]))
                    return 0;
                i += 2;
            } else if (!is_reg_name_char(c)) {
                return 0;
            }
        }
        if (i == 0)
            return 0;
    }
    if (i == n)
        return 1;
    if (h.p[i] != ':')
        return 0;
    for (i++; i < n; i++)
        if (h.p[i] < '0' || h.p[i] > '9')
            return 0;
    return 1;
}

/* Every Content-Length value (each header line may be a comma list) must be 1*DIGIT and all of
 * them the same number. Returns 0 with *value (the digits without leading zeros; len 0: the value
 * 0), and *seen = whether there was one; or -1 (invalid) / -2 (two different values). */
static int content_length(const gw_http_req_t *r, chat_str_t *value, int *seen)
{
    const chat_str_t name = CHAT_LIT("content-length");
    *seen = 0;
    *value = CHAT_STR_NULL;
    for (unsigned k = 0; k < r->nheaders; k++) {
        if (!chat_str_caseeq(r->headers[k].name, name))
            continue;
        chat_str_t v = r->headers[k].value;
        size_t start = 0;
        for (size_t j = 0; j <= v.len; j++) {
            if (j < v.len && v.p[j] != ',')
                continue;
            chat_str_t item = trim_ows(v.p + start, j - start);
            start = j + 1;
            if (item.len == 0)
                return -1;
            for (size_t d = 0; d < item.len; d++)
                if (item.p[d] < '0' || item.p[d] > '9')
                    return -1;
            while (item.len > 0 && item.p[0] == '0') { /* compare numbers, not spellings */
                item.p++;
                item.len--;
            }
            if (*seen && !chat_str_eq(item, *value))
                return -2;
            *value = item;
            *seen = 1;
        }
    }
    return 0;
}

int gw_http_req_check_framing(const gw_http_req_t *r, const char **message)
{
    const chat_str_t host = CHAT_LIT("host");
    unsigned nhost = 0;
    chat_str_t host_value = CHAT_STR_NULL, cl;
    int has_cl;
    *message = NULL;
    if (r->_state != ST_DONE) {
        *message = "incomplete request";
        return CHAT_EMALFORMED;
    }
    for (unsigned k = 0; k < r->nheaders; k++)
        if (chat_str_caseeq(r->headers[k].name, host) && nhost++ == 0)
            host_value = r->headers[k].value;
    if (nhost == 0 && r->version_minor >= 1)
        *message = "missing Host header";
    else if (nhost > 1)
        *message = "more than one Host header";
    else if (nhost == 1 && !host_valid(host_value))
        *message = "invalid Host header";
    if (*message != NULL)
        return CHAT_EMALFORMED;

    int rc = content_length(r, &cl, &has_cl);
    if (gw_http_req_header(r, CHAT_LIT("transfer-encoding")).p != NULL)
        *message = has_cl || rc != 0 ? "Content-Length together with Transfer-Encoding"
                                     : "Transfer-Encoding is not accepted: requests here have "
                                       "no body";
    else if (rc == -1)
        *message = "invalid Content-Length";
    else if (rc == -2)
        *message = "conflicting Content-Length values";
    else if (has_cl && cl.len != 0)
        *message = "a request body is not accepted (Content-Length must be 0)";
    return *message != NULL ? CHAT_EMALFORMED : 0;
}

/* A "bearer.<token>" item of any Sec-WebSocket-Protocol header. */
static int token_from_subprotocol(const gw_http_req_t *r, chat_str_t *token)
{
    const chat_str_t name = CHAT_LIT("sec-websocket-protocol");
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (!chat_str_caseeq(r->headers[i].name, name))
            continue;
        chat_str_t v = r->headers[i].value;
        size_t start = 0;
        for (size_t j = 0; j <= v.len; j++) {
            if (j < v.len && v.p[j] != ',')
                continue;
            chat_str_t item = trim_ows(v.p + start, j - start);
            if (item.len >= 7 && memcmp(item.p, "bearer.", 7) == 0) {
                *token = chat_str(item.p + 7, item.len - 7);
                return 1;
            }
            start = j + 1;
        }
    }
    return 0;
}

int gw_http_query_param(chat_str_t query, const char *name, chat_str_t *value)
{
    size_t start = 0, nlen = strlen(name);
    *value = CHAT_STR_NULL;
    for (size_t j = 0; query.p != NULL && j <= query.len; j++) {
        if (j < query.len && query.p[j] != '&')
            continue;
        if (j - start > nlen && memcmp(query.p + start, name, nlen) == 0 &&
            query.p[start + nlen] == '=') {
            *value = chat_str(query.p + start + nlen + 1, j - start - nlen - 1);
            return 1;
        }
        start = j + 1;
    }
    return 0;
}

gw_token_carrier_t gw_http_req_token(const gw_http_req_t *r, chat_str_t *token)
{
    *token = CHAT_STR_NULL;
    if (token_from_subprotocol(r, token))
        return GW_TOKEN_SUBPROTOCOL;
    chat_str_t auth = gw_http_req_header(r, CHAT_LIT("authorization"));
    if (auth.p != NULL && auth.len >= 7 && strncasecmp(auth.p, "bearer ", 7) == 0) {
        *token = trim_ows(auth.p + 7, auth.len - 7);
        return GW_TOKEN_HEADER;
    }
    /* the `token` query parameter is taken as it is: a JWT needs no escaping */
    if (gw_http_query_param(r->query, "token", token))
        return GW_TOKEN_QUERY;
    return GW_TOKEN_NONE;
}

static int b64_value(unsigned char c)
{
    return chat_base64_value(c, 0);
}

/* Strict: 22 base64 characters + "==", and the 4 unused bits of the last character are zero
 * (the only encoding of 16 bytes any conforming encoder produces). */
static int ws_key_valid(chat_str_t key)
{
    if (key.p == NULL || key.len != WS_KEY_LEN || key.p[22] != '=' || key.p[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (b64_value((unsigned char)key.p[i]) < 0)
            return 0;
    return (b64_value((unsigned char)key.p[21]) & 0x0f) == 0;
}

static int refuse(gw_upgrade_t *out, int status, const char *error, const char *message)
{
    out->status = status;
    out->error = error;
    out->message = message;
    return CHAT_EINVAL;
}

int gw_upgrade_check(const gw_http_req_t *r, gw_upgrade_t *out)
{
    const chat_str_t chat_prefix = CHAT_LIT("/chat/");
    const char *framing;
    memset(out, 0, sizeof(*out));
    if (gw_http_req_check_framing(r, &framing) != 0)
        return refuse(out, 400, "bad_request", framing);

    int is_get = chat_str_eq(r->method, CHAT_LIT("GET"));
    if (chat_str_eq(r->path, CHAT_LIT("/"))) {
        if (gw_http_req_header(r, CHAT_LIT("Upgrade")).p != NULL)
            return refuse(out, 404, "not_found", "no WebSocket endpoint at this path");
        if (!is_get)
            return refuse(out, 405, "method_not_allowed", "only GET is allowed");
        out->route = GW_ROUTE_DEMO;
        return 0;
    }
    if (chat_str_eq(r->path, CHAT_LIT("/ws"))) {
        out->route = GW_ROUTE_WS;
    } else if (r->path.len >= chat_prefix.len &&
               memcmp(r->path.p, chat_prefix.p, chat_prefix.len) == 0) {
        /* the rest must be one room name, checked after the method; no percent-decoding */
        out->route = GW_ROUTE_CHAT;
        out->room = chat_str(r->path.p + chat_prefix.len, r->path.len - chat_prefix.len);
    } else {
        return refuse(out, 404, "not_found", "unknown path");
    }

    if (!is_get)
        return refuse(out, 405, "method_not_allowed", "only GET is allowed");
    if (out->route == GW_ROUTE_CHAT && !chat_room_name_valid(out->room))
        return refuse(out, 400, "bad_request", "invalid room name");
    if (!gw_http_req_has_token(r, CHAT_LIT("Upgrade"), CHAT_LIT("websocket")) ||
        !gw_http_req_has_token(r, CHAT_LIT("Connection"), CHAT_LIT("upgrade")))
        return refuse(out, 400, "bad_request",
                      "expected Upgrade: websocket and Connection: Upgrade");
    if (r->version_major != 1 || r->version_minor != 1)
        return refuse(out, 400, "bad_request", "WebSocket upgrades need HTTP/1.1");
    if (!chat_str_eq(gw_http_req_header(r, CHAT_LIT("Sec-WebSocket-Version")),
                     CHAT_LIT(WS_VERSION)))
        return refuse(out, 426, "upgrade_required", "Sec-WebSocket-Version must be 13");
    chat_str_t key = gw_http_req_header(r, CHAT_LIT("Sec-WebSocket-Key"));
    if (!ws_key_valid(key))
        return refuse(out, 400, "bad_request", "missing or invalid Sec-WebSocket-Key");

    gw_ws_accept_key(key, out->accept);
    if (out->accept[0] == '\0')
        return refuse(out, 503, "service_unavailable", "cannot compute the handshake");
    out->offers_chat_v1 =
        headers_have(r, CHAT_LIT("Sec-WebSocket-Protocol"), CHAT_LIT(SUBPROTOCOL), 0);
    out->query = r->query;
    return 0;
}

void gw_ws_accept_key(chat_str_t key, char out[29])
{
    char local[WS_KEY_LEN + sizeof(WS_GUID)];
    size_t n = key.len + sizeof(WS_GUID) - 1;
    char *msg = n <= sizeof(local) ? local : chat_xmalloc(n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (key.len != 0)
        memcpy(msg, key.p, key.len);
    memcpy(msg + key.len, WS_GUID, sizeof(WS_GUID) - 1);
    out[0] = '\0';
    /* SHA-1 gives 20 bytes, whose base64 is exactly 28 characters + NUL */
    if (EVP_Digest(msg, n, md, &mdlen, EVP_sha1(), NULL) == 1 && mdlen == 20)
        EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    if (msg != local)
        free(msg);
}

void gw_http_build_101(chat_buf_t *out, const gw_upgrade_t *u)
{
    chat_buf_appendf(out,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s"
                     "\r\n",
                     u->accept,
                     u->offers_chat_v1 ? "Sec-WebSocket-Protocol: " SUBPROTOCOL "\r\n" : "");
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

void gw_http_build_refusal(chat_buf_t *out, int status, const char *error, const char *message)
{
    chat_buf_t body = CHAT_BUF_INIT;
    chat_env_build_refusal(&body, error, message);
    chat_buf_appendf(out,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-store\r\n"
                     "%s"
                     "\r\n",
                     status, reason_phrase(status), body.len,
                     status == 426   ? "Sec-WebSocket-Version: " WS_VERSION "\r\n"
                     : status == 405 ? "Allow: GET\r\n"
                     : status == 503 ? "Retry-After: " GW_HTTP_RETRY_AFTER_S "\r\n"
                     : status == 429 ? "Retry-After: 1\r\n"
                                     : "");
    chat_buf_append(out, body.p, body.len);
    chat_buf_free(&body);
}

void gw_http_build_ok(chat_buf_t *out, const char *content_type, chat_str_t body)
{
    chat_buf_appendf(out,
                     "HTTP/1.1 200 OK\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "\r\n",
                     content_type, body.len);
    chat_buf_append(out, body.p, body.len);
}
