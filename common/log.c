/* common/log.c - leveled text logging to stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static chat_log_level_t log_level = CHAT_LOG_INFO; /* written once by main() */

void chat_log_set_level(chat_log_level_t level)
{
    log_level = level;
}

int chat_log_enabled(chat_log_level_t level)
{
    return level <= log_level;
}

void chat_log(chat_log_level_t level, const char *tag, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (!chat_log_enabled(level))
        return;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s %s: %s\n", when, ts.tv_nsec / 1000000, names[level], tag, line);
}
