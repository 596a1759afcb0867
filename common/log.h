/* common/log.h - structured log records, one per line on stdout: JSON objects (the default when
 * stdout is not a terminal) or readable text. Every record has ts (RFC 3339 UTC, ms), level, msg
 * (a constant per call site: what happened) and node; fields add the rest (conn, user, room,
 * remote, code, reason, duration_ms, bytes_in, bytes_out...). The settings are written once by
 * main() (the only process-wide state, C13); SIGHUP may change the level. Never log message text
 * (unless the operator asked for it) or credentials.
 *
 * JSON: one object per line, strings escaped by common/envelope.c (C0 control bytes as \n, \t,
 * \r, \b, \f or \u00NN; U+2028 and U+2029 as \u2028 and \u2029; DEL and the rest as is).
 * Text: `<ts> <level padded to 5> <msg> key=value key=value...`, one record per line whatever the
 * values hold (they may come from clients: a token's sub, a close reason). A string value is
 * written as is when it holds only printable ASCII other than space, '=', '"' and '\\', and
 * well-formed UTF-8 of U+00A0 and above other than U+2028/U+2029. Any other value is written
 * between double quotes, with \n, \t, \r, \" and \\ for those bytes and \xNN (two lowercase
 * hex digits) for every other byte that is not kept as is: the other C0 controls (ESC...), DEL,
 * the UTF-8 bytes of C1 controls (U+0080-U+009F) and of U+2028/U+2029, and bytes that are not
 * well-formed UTF-8. An empty value is "". Reading a quoted value back (those six escapes)
 * gives its exact bytes. Keys are written with any byte outside A-Z a-z 0-9 _ . - as '_'; msg,
 * a constant, is written unquoted with any such byte as \xNN. Numbers are plain integers. */
#ifndef CHAT_COMMON_LOG_H
#define CHAT_COMMON_LOG_H

#include <stdint.h>
#include <stdio.h>

#include "str.h"

typedef enum chat_log_level {
    CHAT_LOG_ERROR = 0,
    CHAT_LOG_WARN,
    CHAT_LOG_INFO,
    CHAT_LOG_DEBUG,
} chat_log_level_t;

typedef enum chat_log_format {
    CHAT_LOG_JSON = 0,
    CHAT_LOG_TEXT,
} chat_log_format_t;

/* One field: a string or a number. */
typedef struct chat_log_kv {
    const char *key; /* NULL: skipped */
    chat_str_t str;
    int64_t num;
    int is_num;
} chat_log_kv_t;

#define CHAT_KV_S(k, s) ((chat_log_kv_t){(k), (s), 0, 0})
#define CHAT_KV_C(k, cs) ((chat_log_kv_t){(k), chat_cstr(cs), 0, 0})
#define CHAT_KV_N(k, n) ((chat_log_kv_t){(k), CHAT_STR_NULL, (int64_t)(n), 1})

/* Sets the format, level and the node id every record carries (copied). */
void chat_log_setup(chat_log_format_t format, chat_log_level_t level, const char *node);
/* Sends records to stream instead of stdout (borrowed: it must stay open while records may be
 * written); NULL restores stdout. Each record is written whole, then the stream is flushed.
 * For tests: main() does not call it. */
void chat_log_setup_stream(FILE *stream);
void chat_log_set_level(chat_log_level_t level);
chat_log_level_t chat_log_get_level(void);
int chat_log_enabled(chat_log_level_t level);
/* Parses "error", "warn", "info", "debug". Returns 0 or -1. */
int chat_log_parse_level(const char *s, chat_log_level_t *out);
const char *chat_log_level_name(chat_log_level_t level);
/* Writes one record (if level is enabled). kv may be NULL when n == 0. */
void chat_log_write(chat_log_level_t level, const char *msg, const chat_log_kv_t *kv, size_t n);

/* CHAT_LOG(level, "constant message", CHAT_KV_S("conn", id), CHAT_KV_N("code", 1000));
 * CHAT_LOG0(level, "constant message") for a record without fields. */
#define CHAT_LOG0(level, msg) chat_log_write((level), (msg), NULL, 0)
#define CHAT_LOG(level, msg, ...)                                                                  \
    do {                                                                                           \
        if (chat_log_enabled(level)) {                                                             \
            const chat_log_kv_t kv_[] = {{NULL, {NULL, 0}, 0, 0}, __VA_ARGS__};                    \
            chat_log_write((level), (msg), kv_ + 1, sizeof(kv_) / sizeof(kv_[0]) - 1);             \
        }                                                                                          \
    } while (0)

#endif
