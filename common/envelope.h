/* common/envelope.h - THE JSON envelope module: the only file that includes cJSON.h.
 * One typed parse for client messages (validating each field's type once) and one builder per
 * outbound message type. Builders append compact JSON to a chat_buf_t and never fail (they
 * abort on OOM, sizes are ours). Also the typed parse of a JWT's header and claims (the JSON
 * halves only; gateway/auth.c does the rest), and the check that an envelope relayed by the
 * broker is one a node built (the JSON half of chat_wire_check()). Protocol reference:
 * docs/protocol.md. */
#ifndef CHAT_COMMON_ENVELOPE_H
#define CHAT_COMMON_ENVELOPE_H

#include <stdint.h>

#include "buf.h"
#include "str.h"
#include "wire.h"

struct cJSON;

/* The longest `cid` a client may send; longer is CHAT_EBADREQ. */
#define CHAT_ENV_MAX_CID 128
/* Deepest nesting (the top-level object is level 1), most keys in one object, most elements in
 * one array, and most values in the whole message (every key, element and container counts):
 * beyond any of them chat_env_parse() answers CHAT_EBADREQ without building a tree, so the parse
 * work of one message is bounded whatever its size (a 64 KiB array of 32,000 numbers costs
 * milliseconds to build). */
#define CHAT_ENV_MAX_DEPTH  16
#define CHAT_ENV_MAX_KEYS   64
#define CHAT_ENV_MAX_ITEMS  64
#define CHAT_ENV_MAX_VALUES 1024

typedef enum chat_env_type {
    CHAT_ENV_JOIN = 1,
    CHAT_ENV_LEAVE,
    CHAT_ENV_CHAT,
    CHAT_ENV_TYPING,
    CHAT_ENV_PING,
    CHAT_ENV_REFRESH,
    CHAT_ENV_HISTORY,
    CHAT_ENV_PRESENCE,
    CHAT_ENV_NTYPES /* not a type: one past the last */
} chat_env_type_t;

/* Largest `limit` of a history request; above it the request is served with this many. */
#define CHAT_ENV_HISTORY_MAX 100

/* A parsed client message. Every chat_str_t borrows the parse tree (`doc`) and has p == NULL
 * when the field was absent. */
typedef struct chat_env_in {
    chat_env_type_t type;
    chat_str_t room; /* join/leave/history/presence: required; chat/typing: optional */
    chat_str_t text; /* chat: required */
    chat_str_t cid;  /* optional on any type; filled even when parsing fails later */
    chat_str_t token; /* refresh: required */
    /* join: optional "since":{"seq":<0..2^53>,"epoch":<chat_epoch_valid>}, exactly these two
     * members; since_epoch borrows the tree like the strings above. 0 / 0 / CHAT_STR_NULL when
     * absent. */
    int has_since;
    uint64_t since_seq;
    chat_str_t since_epoch;
    /* history (room required): optional "before":<1..2^53> (exclusive) and "limit":<1..2^53>
     * (clamped to CHAT_ENV_HISTORY_MAX; 0 here when absent: the caller's default applies) */
    int has_before;
    uint64_t before;
    uint64_t limit;
    /* presence: room required, nothing else */
    const char *error; /* on CHAT_EBADREQ / CHAT_EUNKNOWN_TYPE: static human-readable reason */
} chat_env_in_t;

/* Parses one client message of n bytes (not NUL-terminated). Fields other than type, room,
 * text, cid, token, since, before and limit are ignored (a client-sent `user`, `id`, `ts` never
 * matter). room, text, token and cid are type-checked on every message type; since only on
 * join, before and limit only on history (other types ignore them, as before they existed).
 * Integers (since.seq, before, limit) are JSON numbers whose written value is whole and in
 * range, read from the text, not through a double: 100, 1e2 and 100.0 are 100; 41.5, -1, 1. and
 * 9007199254740993 (2^53 + 1, which a double reads as 2^53) are refused.
 * Returns 0, or:
 *   CHAT_EBADJSON       not valid JSON, or valid JSON that is not an object;
 *   CHAT_EBADREQ        deeper than CHAT_ENV_MAX_DEPTH or an object with more than
 *                       CHAT_ENV_MAX_KEYS keys (no tree, no cid);
 *                       `type` missing or not a string; a known field of the wrong type (e.g. a
 *                       numeric room); a required field missing; a cid longer than
 *                       CHAT_ENV_MAX_CID; a NUL (the escape \u0000, or a raw 0x00 byte) in any
 *                       string, keys and unknown fields included ("field 'text' contains a NUL
 *                       character"): cJSON would cut the string there, so "ab\u0000secret" is
 *                       refused, never read as "ab" (the cid is still echoed when it is clean,
 *                       not when the NUL is in the cid or in a key); a join's since that is
 *                       not exactly {"seq":<integer 0..2^53>,"epoch":<chat_epoch_valid>}
 *                       (another member, a member twice, a NUL: "field 'since' ..."); a
 *                       history's before or limit that is not an integer of 1..2^53;
 *   CHAT_EUNKNOWN_TYPE  `type` is a string we do not know.
 * Room validity and the text length limit are the caller's checks (they depend on config); the
 * lengths they see are those of the decoded strings. An escaped backslash followed by the text
 * u0000 ("\\u0000" in the JSON) is six ordinary characters, not a NUL.
 * *doc receives the parse tree whenever one was built (also on CHAT_EBADREQ and
 * CHAT_EUNKNOWN_TYPE, so out->cid can be echoed); the caller frees it with chat_env_free(). */
int chat_env_parse(const char *p, size_t n, chat_env_in_t *out, struct cJSON **doc);
void chat_env_free(struct cJSON *doc);
/* What a client message says it is, without parsing it: the value of the first top-level "type"
 * member when it is a plain string (no escapes) naming a known type, else 0; and in *cid the
 * first top-level "cid" when it is a plain string of at most CHAT_ENV_MAX_CID bytes without NUL
 * (borrowing p), else CHAT_STR_NULL. One pass over the bytes, no allocation: for the rate limit,
 * which answers before any parse work (chat_env_parse() decides what the message is). */
chat_env_type_t chat_env_peek(const char *p, size_t n, chat_str_t *cid);

/* Outbound builders: each appends one compact JSON object (no trailing newline) to out.
 * Strings are escaped as JSON requires; a chat_str_t with p == NULL is left out where the
 * comment says "optional" (and written as "" elsewhere). Integers are plain decimals. */
/* Identity: `user` always, `name` (optional, p == NULL: left out) right after it, in welcome,
 * chat, typing and system envelopes. */
void chat_env_build_welcome(chat_buf_t *out, chat_str_t user, chat_str_t name, chat_str_t node,
                            chat_str_t conn);
/* What `joined` says beyond the room (NULL: nothing, as with history off and no since).
 * seq and epoch come first, then recovered. */
typedef struct chat_env_joined {
    int has_seq; /* history on: the room's current seq and epoch */
    uint64_t seq;
    chat_str_t epoch;
    int has_recovered; /* the join asked for recovery (since) */
    int recovered;
} chat_env_joined_t;
/* {"type":"joined","room":..[,"seq":N,"epoch":".."][,"recovered":true|false]} */
void chat_env_build_joined(chat_buf_t *out, chat_str_t room, const chat_env_joined_t *j);
void chat_env_build_left(chat_buf_t *out, chat_str_t room);
void chat_env_build_pong(chat_buf_t *out);

typedef struct chat_env_chat {
    chat_str_t room, id, user, text;
    int64_t ts;      /* ms since the epoch */
    chat_str_t name; /* optional display name (p == NULL: left out) */
} chat_env_chat_t;
/* {"type":"chat","room":..,"id":..,"user":..[,"name":..],"text":..,"ts":..} */
void chat_env_build_chat(chat_buf_t *out, const chat_env_chat_t *m);
/* The chat envelope as chat_env_build_chat() builds it, without its closing brace and followed by
 * ,"seq": : so out + <seq> + CHAT_ENV_SEQ_MID + <epoch> + CHAT_ENV_SEQ_END is the envelope of a
 * chat stored in a room's history (the three parts of a broker_append). */
#define CHAT_ENV_SEQ_MID ",\"epoch\":\""
#define CHAT_ENV_SEQ_END "\"}"
void chat_env_build_chat_open(chat_buf_t *out, const chat_env_chat_t *m);
/* {"type":"ack","cid":..,"room":..,"id":..[,"seq":N]}; seq when has_seq */
void chat_env_build_ack(chat_buf_t *out, chat_str_t cid, chat_str_t room, chat_str_t id,
                        int has_seq, uint64_t seq);
/* {"type":"history","room":..,"epoch":..,"seq":N,"messages":[m0,m1,...]}: each msgs[i] is one
 * JSON object (a relayed chat that passed chat_wire_check), inserted as it is (not checked
 * here: the caller's promise); n == 0 gives "messages":[]. seq is the room's current seq. */
void chat_env_build_history(chat_buf_t *out, chat_str_t room, chat_str_t epoch, uint64_t seq,
                            const chat_str_t *msgs, size_t n);
typedef struct chat_env_presence_user {
    chat_str_t user;
    uint64_t connections;
} chat_env_presence_user_t;
/* {"type":"presence","room":..,"count":N[,"users":[{"user":..,"connections":N},...]]}: users
 * (the n entries, in the order given, possibly none) when listed != 0; count as given. */
void chat_env_build_presence(chat_buf_t *out, chat_str_t room, uint64_t count,
                             const chat_env_presence_user_t *users, size_t n, int listed);
/* {"type":"typing","room":..,"user":..[,"name":..]} */
void chat_env_build_typing(chat_buf_t *out, chat_str_t room, chat_str_t user, chat_str_t name);
/* {"type":"system","room":..,"event":..,"user":..[,"name":..],"ts":..}; event "join" or "leave" */
void chat_env_build_system(chat_buf_t *out, chat_str_t room, const char *event, chat_str_t user,
                           chat_str_t name, int64_t ts);
/* {"type":"system","event":"token_expiring","ttl_ms":..} */
void chat_env_build_token_expiring(chat_buf_t *out, int64_t ttl_ms);
/* {"type":"refreshed","exp":..} (exp in seconds since the epoch) */
void chat_env_build_refreshed(chat_buf_t *out, int64_t exp);
/* {"type":"error","code":..,"message":..[,"cid":..][,"room":..]}; cid and room optional */
void chat_env_build_error(chat_buf_t *out, const char *code, const char *message, chat_str_t cid,
                          chat_str_t room);
/* {"type":"error","code":"rate_limited","message":..,"retry_after_ms":N[,"cid":..]} */
void chat_env_build_rate_limited(chat_buf_t *out, uint64_t retry_after_ms, chat_str_t cid);
/* {"ready":true} or {"ready":false,"failed":["broker","draining",...]} (names are static) */
void chat_env_build_readiness(chat_buf_t *out, int ready, const char *const *failed, size_t n);
/* {"status":"ok"} */
void chat_env_build_health(chat_buf_t *out);
/* Appends s as one JSON string literal (quotes included, escaped as RFC 8259 requires): for the
 * log module, whose records are JSON too. */
void chat_env_put_string(chat_buf_t *out, chat_str_t s);
/* The body of an HTTP refusal: {"error":"<code>","message":"..."} */
void chat_env_build_refusal(chat_buf_t *out, const char *code, const char *message);

/* ---- relayed envelopes: what a node accepts from the broker ------------------------------ */
/* The JSON half of chat_wire_check() (see wire.h for the reasons and what they cover): whether
 * json is exactly what chat_env_build_chat (kind CHAT_WIRE_CHAT), chat_env_build_typing
 * (CHAT_WIRE_TYPING) or chat_env_build_system (CHAT_WIRE_SYSTEM) builds for `room`, on a node
 * whose text limit is max_text_bytes, or, for a chat, what chat_env_build_chat_open() + seq +
 * CHAT_ENV_SEQ_MID + epoch + CHAT_ENV_SEQ_END builds: the same keys (name optional; a chat's
 * seq and epoch both or neither; no other key, none twice), each of its JSON type; id
 * 1..CHAT_ENV_RELAYED_MAX_ID bytes, user 1..CHAT_JWT_MAX_SUB, name 0..CHAT_JWT_MAX_NAME, text
 * 1..max_text_bytes (decoded), ts an integer in 0..2^53, seq an integer in 1..2^53 (read from
 * the text, like chat_env_parse()'s integers), epoch chat_epoch_valid(), event "join" or
 * "leave"; no NUL in any string. Key order is free. Typing and system envelopes never carry seq
 * or epoch ("fields"). Returns 0, or CHAT_EMALFORMED with *reason set. Pure; builds and frees one
 * cJSON tree, after the size, UTF-8 and shape checks (no tree for those). */
#define CHAT_ENV_RELAYED_MAX_ID 128 /* a message id: "<node>-<boot>-<seq>" (gateway/dispatch.c) */

/* On success a chat's seq and epoch (when it has them) are written to h->seq, h->epoch
 * (NUL-terminated) and h->epoch_len (0 and "" when it has none, and always for typing and
 * system); nothing else of *h is touched, and nothing on failure. h may be NULL. */
int chat_env_check_relayed(chat_str_t json, chat_wire_kind_t kind, chat_str_t room,
                           size_t max_text_bytes, chat_wire_hdr_t *h, chat_wire_reason_t *reason);

/* The longest JSON part chat_env_check_relayed() takes for max_text_bytes: every string (the
 * epoch included) at its longest and fully escaped (6 bytes per byte), plus the keys,
 * punctuation, a 20-digit ts and a 20-digit seq. Longer is "size". */
size_t chat_env_relayed_max_bytes(size_t max_text_bytes);

/* ---- JWT (JWS compact serialization) header and claims --------------------------------- */
/* The JSON halves of a JWT, for gateway/auth.c (which does base64url, signatures and policy).
 * Both parsers take the DECODED bytes (not NUL-terminated) and, before building a tree, refuse
 * input that is not valid UTF-8 or that contains a \u0000 escape or a raw 0x00 byte (a string
 * that cJSON would cut short, so "admin\u0000x" can never read as "admin"). The top-level value must be an object
 * with no duplicate keys (RFC 7515 section 5.2 allows refusing them; other parsers take the
 * last, cJSON the first); depth and key counts are bounded as for chat_env_parse(). */

#define CHAT_JWT_MAX_ALG   15  /* longest `alg` accepted ("HS256", "ES384", ...) */
#define CHAT_JWT_MAX_KID   255 /* longest `kid` accepted */
#define CHAT_JWT_MAX_SUB   256 /* longest `sub` (the user id), in bytes */
#define CHAT_JWT_MAX_NAME  256 /* longest `name` (display name), in bytes */
#define CHAT_JWT_MAX_ROOMS 256 /* most entries in `rooms` */
#define CHAT_JWT_MAX_ROOM  256 /* longest entry of `rooms`, in bytes */
#define CHAT_JWT_MAX_AUD   64  /* most entries in an `aud` array */

typedef struct chat_jwt_header {
    char alg[CHAT_JWT_MAX_ALG + 1]; /* NUL-terminated; never empty after a successful parse */
    char kid[CHAT_JWT_MAX_KID + 1]; /* NUL-terminated; "" when has_kid == 0 */
    int has_kid;
    int has_crit;      /* a `crit` member is present (we understand no extension: refuse) */
    const char *error; /* on failure: static human-readable reason (no input bytes in it) */
} chat_jwt_header_t;

/* Parses a JOSE header of n bytes. `alg` must be a non-empty string of at most
 * CHAT_JWT_MAX_ALG bytes; `kid`, when present, a string of at most CHAT_JWT_MAX_KID bytes
 * (it may be empty). Other members (typ, cty, ...) are ignored, except that `crit` sets
 * has_crit. Holds no allocation: nothing to dispose.
 * Returns 0, CHAT_EBADJSON (not valid JSON or UTF-8, not an object) or CHAT_EBADREQ (alg missing
 * or not a string or too long, kid not a string or too long, duplicate keys, \u0000, depth or
 * key count over the limits). */
int chat_env_parse_jwt_header(const char *p, size_t n, chat_jwt_header_t *out);

/* Typed claims of a JWT payload. Every pointer is owned by the struct (freed by
 * chat_env_jwt_claims_dispose()) and is NULL when the claim was absent. */
typedef struct chat_jwt_claims {
    char *sub;  /* string, at most CHAT_JWT_MAX_SUB bytes (may be empty: policy is the caller's) */
    char *name; /* string, at most CHAT_JWT_MAX_NAME bytes */
    char *iss;  /* string */
    char **aud; /* `aud` as a string (naud 1) or an array of at most CHAT_JWT_MAX_AUD strings */
    size_t naud;
    int has_aud;
    char **rooms; /* array of at most CHAT_JWT_MAX_ROOMS non-empty strings, each at most
                   * CHAT_JWT_MAX_ROOM bytes (room names or prefixes ending in '*') */
    size_t nrooms;
    int has_rooms;
    /* NumericDates in seconds. A fractional exp is rounded down and a fractional nbf/iat up, so
     * integer comparisons against a whole "now" give the exact answer. Values beyond +-2^53
     * are refused. */
    int64_t exp, nbf, iat;
    int has_exp, has_nbf, has_iat;
    const char *error; /* on failure: static human-readable reason (no input bytes in it) */
} chat_jwt_claims_t;

/* Parses a JWT claims set of n bytes into *out (zeroed first). Checks the type and size of each
 * claim above that is present; requires none of them (presence is policy, see gateway/auth.c).
 * Other claims are ignored. Allocations are bounded by n.
 * Returns 0, CHAT_EBADJSON (not valid JSON or UTF-8, not an object) or CHAT_EBADREQ (a claim of
 * the wrong type, too long, too many entries, a date out of range, duplicate keys, \u0000,
 * depth or key count over the limits). On failure nothing stays allocated (disposing is still
 * allowed); on success the caller disposes. */
int chat_env_parse_jwt_claims(const char *p, size_t n, chat_jwt_claims_t *out);

/* Frees what chat_env_parse_jwt_claims() allocated and zeroes *c. NULL is a no-op. */
void chat_env_jwt_claims_dispose(chat_jwt_claims_t *c);

#endif
