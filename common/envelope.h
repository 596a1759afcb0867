/* common/envelope.h - THE JSON envelope module: the only file that includes cJSON.h.
 * One typed parse for client messages (validating each field's type once) and one builder per
 * outbound message type. Builders append compact JSON to a chat_buf_t and never fail (they
 * abort on OOM, sizes are ours). Protocol reference: docs/protocol.md. */
#ifndef CHAT_COMMON_ENVELOPE_H
#define CHAT_COMMON_ENVELOPE_H

#include <stdint.h>

#include "buf.h"
#include "str.h"

struct cJSON;

/* The longest `cid` a client may send; longer is CHAT_EBADREQ. */
#define CHAT_ENV_MAX_CID 128
/* Deepest nesting (the top-level object is level 1) and most keys in one object; beyond either,
 * chat_env_parse() answers CHAT_EBADREQ without building a tree. */
#define CHAT_ENV_MAX_DEPTH 16
#define CHAT_ENV_MAX_KEYS  64

typedef enum chat_env_type {
    CHAT_ENV_JOIN = 1,
    CHAT_ENV_LEAVE,
    CHAT_ENV_CHAT,
    CHAT_ENV_TYPING,
    CHAT_ENV_PING,
} chat_env_type_t;

/* A parsed client message. Every chat_str_t borrows the parse tree (`doc`) and has p == NULL
 * when the field was absent. */
typedef struct chat_env_in {
    chat_env_type_t type;
    chat_str_t room; /* join/leave: required; chat/typing: optional */
    chat_str_t text; /* chat: required */
    chat_str_t cid;  /* optional on any type; filled even when parsing fails later */
    const char *error; /* on CHAT_EBADREQ / CHAT_EUNKNOWN_TYPE: static human-readable reason */
} chat_env_in_t;

/* Parses one client message of n bytes (not NUL-terminated). Fields other than type, room,
 * text and cid are ignored (a client-sent `user`, `id`, `ts` never matter).
 * Returns 0, or:
 *   CHAT_EBADJSON       not valid JSON, or valid JSON that is not an object;
 *   CHAT_EBADREQ        deeper than CHAT_ENV_MAX_DEPTH or an object with more than
 *                       CHAT_ENV_MAX_KEYS keys (no tree, no cid);
 *                       `type` missing or not a string; a known field of the wrong type (e.g. a
 *                       numeric room); a required field missing; a cid longer than
 *                       CHAT_ENV_MAX_CID;
 *   CHAT_EUNKNOWN_TYPE  `type` is a string we do not know.
 * Room validity and the text length limit are the caller's checks (they depend on config).
 * *doc receives the parse tree whenever one was built (also on CHAT_EBADREQ and
 * CHAT_EUNKNOWN_TYPE, so out->cid can be echoed); the caller frees it with chat_env_free(). */
int chat_env_parse(const char *p, size_t n, chat_env_in_t *out, struct cJSON **doc);
void chat_env_free(struct cJSON *doc);

/* Outbound builders: each appends one compact JSON object (no trailing newline) to out.
 * Strings are escaped as JSON requires; a chat_str_t with p == NULL is left out where the
 * comment says "optional". */
void chat_env_build_welcome(chat_buf_t *out, chat_str_t user, chat_str_t node, chat_str_t conn);
void chat_env_build_joined(chat_buf_t *out, chat_str_t room);
void chat_env_build_left(chat_buf_t *out, chat_str_t room);
void chat_env_build_pong(chat_buf_t *out);

typedef struct chat_env_chat {
    chat_str_t room, id, user, text;
    int64_t ts; /* ms since the epoch */
} chat_env_chat_t;
/* {"type":"chat","room":..,"id":..,"user":..,"text":..,"ts":..} */
void chat_env_build_chat(chat_buf_t *out, const chat_env_chat_t *m);
/* {"type":"ack","cid":..,"room":..,"id":..} */
void chat_env_build_ack(chat_buf_t *out, chat_str_t cid, chat_str_t room, chat_str_t id);
/* {"type":"typing","room":..,"user":..} */
void chat_env_build_typing(chat_buf_t *out, chat_str_t room, chat_str_t user);
/* {"type":"system","room":..,"event":..,"user":..,"ts":..}; event is "join" or "leave" */
void chat_env_build_system(chat_buf_t *out, chat_str_t room, const char *event, chat_str_t user,
                           int64_t ts);
/* {"type":"error","code":..,"message":..[,"cid":..][,"room":..]}; cid and room optional */
void chat_env_build_error(chat_buf_t *out, const char *code, const char *message, chat_str_t cid,
                          chat_str_t room);
/* {"type":"error","code":"rate_limited","message":..,"retry_after_ms":N[,"cid":..]} */
void chat_env_build_rate_limited(chat_buf_t *out, uint64_t retry_after_ms, chat_str_t cid);
/* The body of an HTTP refusal: {"error":"<code>","message":"..."} */
void chat_env_build_refusal(chat_buf_t *out, const char *code, const char *message);

#endif
