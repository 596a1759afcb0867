/* gateway/http_upgrade.h - the HTTP/1.1 side of the WebSocket handshake, pure (no I/O):
 *  - an incremental request-head parser (feed any split of bytes, one at a time included),
 *  - RFC 9112 framing checks for requests without a body (gw_http_req_check_framing),
 *  - routing and RFC 6455 checks of a parsed request (gw_upgrade_check),
 *  - the Sec-WebSocket-Accept computation (SHA-1 + base64 from OpenSSL),
 *  - builders for the 101 answer and for refusals.
 * Owns the copy of the request head (bounded by max_head_bytes). */
#ifndef CHAT_GATEWAY_HTTP_UPGRADE_H
#define CHAT_GATEWAY_HTTP_UPGRADE_H

#include <stddef.h>

#include "buf.h"
#include "str.h"

#define GW_HTTP_MAX_HEADERS 64

typedef struct gw_http_header {
    chat_str_t name, value; /* value without surrounding whitespace */
} gw_http_header_t;

typedef struct gw_http_req {
    /* private parser state; while parsing, the results below hold lengths only (p == NULL) and
     * offsets live here, so growing _head never leaves a dangling pointer */
    chat_buf_t _head; /* the head bytes seen so far, never more than _max */
    size_t _max;
    int _state;
    size_t _mark;         /* start of the current version or header name in _head */
    size_t _name_end;     /* end of the current header name */
    size_t _value_start;  /* start of the current header value, leading whitespace skipped */
    size_t _value_end;    /* end of the current header value, trailing whitespace dropped */
    size_t _qmark;        /* 1 + offset of the first '?' in the target; 0 when none */
    size_t _name_off[GW_HTTP_MAX_HEADERS];
    size_t _value_off[GW_HTTP_MAX_HEADERS];
    /* results, valid once gw_http_req_feed() returned > 0; they point into _head */
    chat_str_t method; /* e.g. "GET" */
    chat_str_t target; /* request-target as sent, e.g. "/chat/room?token=x" */
    chat_str_t path;   /* target up to '?' */
    chat_str_t query;  /* after '?', p == NULL when there is none */
    int version_major, version_minor;
    unsigned nheaders;
    gw_http_header_t headers[GW_HTTP_MAX_HEADERS];
} gw_http_req_t;

void gw_http_req_init(gw_http_req_t *r, size_t max_head_bytes);
/* Frees the head copy; r can be re-initialised. */
void gw_http_req_dispose(gw_http_req_t *r);

/* Feeds n bytes. Returns:
 *  > 0              the head is complete; the value is how many bytes of p belonged to it (the
 *                   rest is the start of the WebSocket stream),
 *  0                all n bytes consumed, the head is not complete yet,
 *  CHAT_ETOOLARGE   the head exceeds max_head_bytes or GW_HTTP_MAX_HEADERS headers (431),
 *  CHAT_EMALFORMED  not an HTTP/1.x request head (400),
 *  CHAT_ENOMEM      the head copy could not grow (close the connection).
 * After a value != 0 the request must not be fed again (doing so returns CHAT_EINVAL). */
int gw_http_req_feed(gw_http_req_t *r, const char *p, size_t n);

/* The value of the first header called `name` (case-insensitive); p == NULL when absent. */
chat_str_t gw_http_req_header(const gw_http_req_t *r, chat_str_t name);
/* 1 when any header called `name` holds `token` in its comma-separated list
 * (case-insensitive, optional whitespace around items), else 0. */
int gw_http_req_has_token(const gw_http_req_t *r, chat_str_t name, chat_str_t token);

/* The framing of a complete request (RFC 9110 7.2, 8.6; RFC 9112 3.2, 6.1-6.3). No request this
 * gateway serves has a body (an upgrade's bytes after the head are WebSocket frames), so the
 * checks refuse, in this order: a missing Host in HTTP/1.1, more than one Host, a Host that is not
 * uri-host [":" port]; any Transfer-Encoding (with a Content-Length too: request smuggling); a
 * Content-Length that is not digits (a comma list of equal values counts as one), two different
 * Content-Length values, or one other than 0. Returns 0, or CHAT_EMALFORMED with *message (a
 * static sentence for the 400 answer). Used by gw_upgrade_check() and by the admin listener. */
int gw_http_req_check_framing(const gw_http_req_t *r, const char **message);

typedef enum gw_token_carrier {
    GW_TOKEN_NONE = 0,
    GW_TOKEN_SUBPROTOCOL, /* a "bearer.<token>" item in Sec-WebSocket-Protocol */
    GW_TOKEN_HEADER,      /* Authorization: Bearer <token> (another scheme is not a carrier) */
    GW_TOKEN_QUERY,       /* the query parameter token=<token> */
} gw_token_carrier_t;

/* Finds the credential in the first carrier present, in the order above (no fall-through: a
 * present carrier decides even when its token is empty or invalid). *token points into r. */
gw_token_carrier_t gw_http_req_token(const gw_http_req_t *r, chat_str_t *token);

/* The raw value of the first parameter `name` of a query string (the part after '?', as in
 * gw_http_req_t.query): the parameters are separated by '&', and the first one that starts with
 * name followed by '=' gives the bytes up to the next '&' or the end, taken as they are (no
 * percent-decoding, no '+' for space; "name" without '=' is not that parameter). Returns 1 with
 * *value pointing into query (possibly empty: "since=&"), or 0 with *value = CHAT_STR_NULL when
 * there is none (query.p == NULL included). name is NUL-terminated and compared
 * case-sensitively. */
int gw_http_query_param(chat_str_t query, const char *name, chat_str_t *value);

typedef enum gw_route {
    GW_ROUTE_DEMO = 1, /* plain GET / : serve the demo page */
    GW_ROUTE_WS,       /* upgrade on /ws */
    GW_ROUTE_CHAT,     /* upgrade on /chat/{room} */
} gw_route_t;

typedef struct gw_upgrade {
    gw_route_t route;
    chat_str_t room;    /* GW_ROUTE_CHAT: the room name (points into the request) */
    chat_str_t query;   /* upgrades: the raw query string (points into the request; p == NULL
                         * when there is none), e.g. for gw_http_query_param(u->query, "since") */
    char accept[29];    /* upgrades: Sec-WebSocket-Accept, NUL-terminated */
    int offers_chat_v1; /* upgrades: the client offered subprotocol "chat.v1" */
    /* refusal, when gw_upgrade_check() returned < 0 */
    int status;          /* 400, 404, 405 or 426 (503 only if OpenSSL cannot do SHA-1) */
    const char *error;   /* static: "bad_request", "not_found", "method_not_allowed",
                            "upgrade_required" */
    const char *message; /* static, human-readable */
} gw_upgrade_t;

/* Routes a complete request and runs the RFC 6455 checks, in this order (the first failure
 * answers): the framing (gw_http_req_check_framing) 400, unknown path 404 (an upgrade to "/"
 * included), method 405, room name 400,
 * Upgrade/Connection pair and HTTP/1.1 400, Sec-WebSocket-Version 13 426, Sec-WebSocket-Key
 * (base64 of 16 bytes) 400. Returns 0 (out->route says what to do) or CHAT_EINVAL (out->status,
 * out->error, out->message say how to refuse). */
int gw_upgrade_check(const gw_http_req_t *r, gw_upgrade_t *out);

/* Computes base64(SHA-1(key + RFC 6455 GUID)) into out (28 chars + NUL). */
void gw_ws_accept_key(chat_str_t key, char out[29]);

/* Appends "HTTP/1.1 101 Switching Protocols" with Upgrade, Connection, Sec-WebSocket-Accept and,
 * when offered, "Sec-WebSocket-Protocol: chat.v1". */
void gw_http_build_101(chat_buf_t *out, const gw_upgrade_t *u);
/* Seconds a 503 asks the client to wait (Retry-After). */
#define GW_HTTP_RETRY_AFTER_S "5"

/* Appends a refusal: status line, Content-Type: application/json, Content-Length,
 * Connection: close, the body {"error":..,"message":..} (built by chat_env_build_refusal);
 * 426 adds "Sec-WebSocket-Version: 13", 405 adds "Allow: GET", 503 adds "Retry-After". */
void gw_http_build_refusal(chat_buf_t *out, int status, const char *error, const char *message);
/* Appends a complete 200 response with the given content type and body and Connection: close. */
void gw_http_build_ok(chat_buf_t *out, const char *content_type, chat_str_t body);

#endif
