/* common/log.c - structured log records on stdout (see log.h). JSON strings are escaped by the
 * envelope module, the project's only JSON writer. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "envelope.h"

/* Written by main() once (and by SIGHUP for the level): the only process-wide settings. */
static chat_log_format_t log_format = CHAT_LOG_TEXT;
static chat_log_level_t log_level = CHAT_LOG_INFO;
static char log_node[128] = "";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void chat_log_setup(chat_log_format_t format, chat_log_level_t level, const char *node)
{
    log_format = format;
    log_level = level;
    snprintf(log_node, sizeof(log_node), "%s", node ? node : "");
}

void chat_log_set_level(chat_log_level_t level)
{
    log_level = level;
}

chat_log_level_t chat_log_get_level(void)
{
    return log_level;
}

int chat_log_enabled(chat_log_level_t level)
{
    return level <= log_level;
}

const char *chat_log_level_name(chat_log_level_t level)
{
    return level <= CHAT_LOG_DEBUG ? level_names[level] : "?";
}

int chat_log_parse_level(const char *s, chat_log_level_t *out)
{
    for (int i = 0; i <= CHAT_LOG_DEBUG; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (chat_log_level_t)i;
            return 0;
        }
    return -1;
}

static void put_time(chat_buf_t *b)
{
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    chat_buf_appendf(b, "%s.%03ldZ", when, ts.tv_nsec / 1000000);
}

static void write_json(chat_buf_t *b, chat_log_level_t level, const char *msg,
                       const chat_log_kv_t *kv, size_t n)
{
    chat_buf_append(b, "{\"ts\":\"", 7);
    put_time(b);
    chat_buf_appendf(b, "\",\"level\":\"%s\",\"msg\":", level_names[level]);
    chat_env_put_string(b, chat_cstr(msg));
    chat_buf_append(b, ",\"node\":", 8);
    chat_env_put_string(b, chat_cstr(log_node));
    for (size_t i = 0; i < n; i++) {
        if (kv[i].key == NULL)
            continue;
        chat_buf_appendf(b, ",\"%s\":", kv[i].key);
        if (kv[i].is_num)
            chat_buf_appendf(b, "%lld", (long long)kv[i].num);
        else
            chat_env_put_string(b, kv[i].str.p ? kv[i].str : CHAT_LIT(""));
    }
    chat_buf_append(b, "}\n", 2);
}

static void write_text(chat_buf_t *b, chat_log_level_t level, const char *msg,
                       const chat_log_kv_t *kv, size_t n)
{
    put_time(b);
    chat_buf_appendf(b, " %-5s %s", level_names[level], msg);
    for (size_t i = 0; i < n; i++) {
        if (kv[i].key == NULL)
            continue;
        if (kv[i].is_num) {
            chat_buf_appendf(b, " %s=%lld", kv[i].key, (long long)kv[i].num);
        } else {
            chat_str_t v = kv[i].str.p ? kv[i].str : CHAT_LIT("");
            int quote = v.len == 0 || memchr(v.p, ' ', v.len) != NULL;
            chat_buf_appendf(b, " %s=", kv[i].key);
            if (quote)
                chat_env_put_string(b, v);
            else
                chat_buf_append(b, v.p, v.len);
        }
    }
    chat_buf_append(b, "\n", 1);
}

void chat_log_write(chat_log_level_t level, const char *msg, const chat_log_kv_t *kv, size_t n)
{
    chat_buf_t b = CHAT_BUF_INIT;
    if (!chat_log_enabled(level))
        return;
    if (log_format == CHAT_LOG_JSON)
        write_json(&b, level, msg, kv, n);
    else
        write_text(&b, level, msg, kv, n);
    fwrite(b.p, 1, b.len, stdout);
    fflush(stdout);
    chat_buf_free(&b);
}
