/* common/wire.h - the bytes a gateway node publishes through the broker for one room message:
 * a one-line header, then the client-facing JSON envelope exactly as members receive it.
 *
 *   CGW1 <kind> <flags> <origin node> <origin conn> <publish ms>\n<envelope JSON>
 *
 * kind: 'c' chat, 't' typing, 's' system. flags: 'x' when the origin connection must not get its
 * own copy (typing, join/leave notices), '-' otherwise. The publishing node builds this once; every
 * receiving node forwards the JSON part as it is (no re-encoding). Pure functions. */
#ifndef CHAT_COMMON_WIRE_H
#define CHAT_COMMON_WIRE_H

#include <stdint.h>

#include "buf.h"
#include "str.h"

typedef enum chat_wire_kind {
    CHAT_WIRE_CHAT = 'c',
    CHAT_WIRE_TYPING = 't',
    CHAT_WIRE_SYSTEM = 's',
} chat_wire_kind_t;

typedef struct chat_wire_hdr {
    chat_wire_kind_t kind;
    int exclude_origin; /* 1: do not deliver to origin_conn on origin_node */
    chat_str_t origin_node;
    uint64_t origin_conn;
    int64_t publish_ms;
} chat_wire_hdr_t;

/* Appends the header line; the caller appends the JSON envelope after it. */
void chat_wire_put_header(chat_buf_t *out, const chat_wire_hdr_t *h);
/* Splits a broker message. Returns 0 and fills *h (origin_node borrows data) and *json, or
 * CHAT_EMALFORMED. */
int chat_wire_parse(chat_str_t data, chat_wire_hdr_t *h, chat_str_t *json);

#endif
