/* common/log.h - leveled log lines on stderr: "<RFC 3339 time> <level> <tag>: <message>".
 * The level is set once in main() (the only process-wide setting, C13). Hot paths log at
 * DEBUG only. Never log message text or credentials. */
#ifndef CHAT_COMMON_LOG_H
#define CHAT_COMMON_LOG_H

typedef enum chat_log_level {
    CHAT_LOG_ERROR = 0,
    CHAT_LOG_WARN,
    CHAT_LOG_INFO,
    CHAT_LOG_DEBUG,
} chat_log_level_t;

void chat_log_set_level(chat_log_level_t level);
int chat_log_enabled(chat_log_level_t level);
__attribute__((format(printf, 3, 4))) void chat_log(chat_log_level_t level, const char *tag,
                                                    const char *fmt, ...);

#endif
