/* common/wire.h - the bytes a gateway node publishes through the broker for one room message:
 * a one-line header, then the client-facing JSON envelope exactly as members receive it.
 *
 *   CGW1 <kind> <flags> <origin node> <origin conn> <publish ms>\n<envelope JSON>
 *
 * kind: 'c' chat, 't' typing, 's' system. flags: 'x' when the origin connection must not get its
 * own copy (typing, join/leave notices), '-' otherwise. The publishing node builds this once; every
 * receiving node forwards the JSON part as it is (no re-encoding). With history on, a chat's JSON
 * ends with the "seq" and "epoch" the broker assigned (broker_append, chat_env_build_chat_open()).
 * Pure functions. */
#ifndef CHAT_COMMON_WIRE_H
#define CHAT_COMMON_WIRE_H

#include <stdint.h>

#include "buf.h"
#include "names.h"
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
    /* From the JSON part, read by chat_wire_check() only (chat_wire_parse() sets 0 and "",
     * chat_wire_put_header() ignores them): a chat stored in the room's history carries its
     * seq (>= 1) and the history's epoch (NUL-terminated); 0 and "" otherwise. */
    uint64_t seq;
    size_t epoch_len;
    char epoch[CHAT_EPOCH_MAX + 1];
} chat_wire_hdr_t;

/* Appends the header line; the caller appends the JSON envelope after it. */
void chat_wire_put_header(chat_buf_t *out, const chat_wire_hdr_t *h);
/* Splits a broker message. Returns 0 and fills *h (origin_node borrows data) and *json, or
 * CHAT_EMALFORMED. Checks the grammar only: see chat_wire_check() for what a receiver relays. */
int chat_wire_parse(chat_str_t data, chat_wire_hdr_t *h, chat_str_t *json);

/* ---- what a receiving node relays --------------------------------------------------------
 * The broker is a trust boundary: whatever can PUBLISH to <prefix>room:<room> would reach the
 * room's members verbatim. chat_wire_check() accepts exactly what a node builds (a header from
 * chat_wire_put_header(), then the output of chat_env_build_chat / _typing / _system) and refuses
 * anything else with one reason from a fixed set, meant as the label of
 * chat_broker_rejected_total{reason}:
 *   "header"  not `CGW1 <kind> <flags> <node> <conn> <ms>\n`; a node id that is not 1 to
 *             CHAT_WIRE_NODE_MAX of A-Z a-z 0-9 . _ -; flags other than 'x' / '-'; an origin conn
 *             above CHAT_WIRE_CONN_MAX; a publish time more than CHAT_WIRE_MAX_AHEAD_MS ahead of
 *             or CHAT_WIRE_MAX_AGE_MS (lim->max_age_ms) behind the receiver's clock (so 2^63 cannot reach the
 *             latency histogram)
 *   "kind"    a kind other than 'c', 't', 's'
 *   "size"    a message longer than a node publishes for the receiver's max_text_bytes
 *             (chat_env_relayed_max_bytes(), plus CHAT_WIRE_HDR_MAX for the header; a chat's
 *             seq and epoch included)
 *   "utf8"    the JSON part is not strict UTF-8 (overlong forms, surrogates, > U+10FFFF, cut)
 *   "json"    not exactly one JSON object from '{' to '}': bad JSON, trailing bytes, any raw
 *             byte below 0x20 (in a string or between tokens, where cJSON takes it for
 *             whitespace), deeper than CHAT_ENV_MAX_DEPTH or more than CHAT_ENV_MAX_KEYS keys
 *   "type"    `type` missing, not a string, or not the kind's ("chat", "typing", "system")
 *   "fields"  a NUL (\u0000) in any string; a duplicate or unknown key; a required field missing
 *             or of the wrong type or size (chat: id, user, text of 1..max_text_bytes bytes, ts;
 *             typing: user; system: event "join"/"leave", user, ts; name optional everywhere;
 *             chat: seq (an integer 1..2^53) and epoch (chat_epoch_valid) both or neither;
 *             typing and system: never seq or epoch)
 *   "room"    `room` missing, not a string, or not the topic the message came on
 * Validation cannot detect a well-formed message with a forged identity (a chat "from" admin, a
 * fake join notice): keeping PUBLISH away from clients is Redis's job (ACLs, AUTH, a private
 * network), not this function's. Strictness has a cost too: a node that adds a field to these
 * envelopes is refused by older receivers, so such a change needs the receivers upgraded first.
 * The receiver's max_text_bytes should be at least every sender's (a larger sender's long chats
 * are refused as "size" or "fields"). */

#define CHAT_WIRE_NODE_MAX     64                    /* longest node id (gateway --node-id) */
#define CHAT_WIRE_CONN_MAX     ((uint64_t)1 << 53)   /* largest origin conn (a counter) */
#define CHAT_WIRE_MAX_AHEAD_MS (5 * 60 * 1000)       /* publish time ahead of the receiver */
#define CHAT_WIRE_MAX_AGE_MS   (24 * 60 * 60 * 1000) /* publish time behind the receiver */
#define CHAT_WIRE_HDR_MAX      (5 + 2 + 2 + CHAT_WIRE_NODE_MAX + 1 + 20 + 1 + 19 + 1)

/* The reasons, in the order of the list above; CHAT_WIRE_NREASONS counts them (an index for an
 * array of counters). chat_wire_reason_name() gives the label; anything else gives NULL. */
typedef enum chat_wire_reason {
    CHAT_WIRE_R_HEADER,
    CHAT_WIRE_R_KIND,
    CHAT_WIRE_R_SIZE,
    CHAT_WIRE_R_UTF8,
    CHAT_WIRE_R_JSON,
    CHAT_WIRE_R_TYPE,
    CHAT_WIRE_R_FIELDS,
    CHAT_WIRE_R_ROOM,
    CHAT_WIRE_NREASONS
} chat_wire_reason_t;

const char *chat_wire_reason_name(chat_wire_reason_t r);

typedef struct chat_wire_limits {
    int64_t now_ms;        /* the receiver's wall clock, ms since the epoch (chat_wall_ms()) */
    uint64_t max_age_ms;   /* how far behind now_ms a publish time may be; 0: the live bound
                            * CHAT_WIRE_MAX_AGE_MS (a message read from a history may be as old
                            * as the history keeps them) */
    size_t max_text_bytes; /* the receiver's --max-text-bytes */
} chat_wire_limits_t;

/* Checks one broker message `data` that arrived on `topic` (the room name, without the broker
 * prefix) against what a node publishes. Returns 0 with *h (origin_node borrows data; seq and
 * epoch those of a chat from the history, else 0 and "") and *json filled: relay *json as it
 * is. Otherwise CHAT_EMALFORMED with *reason set (*h and *json are then
 * unspecified). Pure: reads only its arguments; linear in data.len, and a size refusal comes
 * before any parse. */
int chat_wire_check(chat_str_t topic, chat_str_t data, const chat_wire_limits_t *lim,
                    chat_wire_hdr_t *h, chat_str_t *json, chat_wire_reason_t *reason);

#endif
