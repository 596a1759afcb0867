/* common/log.c - structured log records on stdout (see log.h). JSON strings are escaped by the
 * envelope module, the project's only JSON writer; the text format's quoting and escaping (so
 * that no value can end a record, forge another or reach a terminal as a control sequence) is
 * done here. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "envelope.h"
#include "utf8.h"

/* Written by main() once (and by SIGHUP for the level): the only process-wide settings. */
static chat_log_format_t log_format = CHAT_LOG_TEXT;
static chat_log_level_t log_level = CHAT_LOG_INFO;
static char log_node[128] = "";
static FILE *log_stream = NULL; /* NULL: stdout */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void chat_log_setup(chat_log_format_t format, chat_log_level_t level, const char *node)
{
    log_format = format;
    log_level = level;
    snprintf(log_node, sizeof(log_node), "%s", node ? node : "");
}

void chat_log_setup_stream(FILE *stream)
{
    log_stream = stream;
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
        chat_buf_append(b, ",", 1);
        chat_env_put_string(b, chat_cstr(kv[i].key)); /* our static keys need no escape */
        chat_buf_append(b, ":", 1);
        if (kv[i].is_num)
            chat_buf_appendf(b, "%lld", (long long)kv[i].num);
        else
            chat_env_put_string(b, kv[i].str.p ? kv[i].str : CHAT_LIT(""));
    }
    chat_buf_append(b, "}\n", 2);
}

/* ---- the text format ---------------------------------------------------------------------- */

/* The length of the byte sequence at s[i] that a text value may hold as is: 1 for printable ASCII
 * (0x20-0x7e), 2 to 4 for a well-formed UTF-8 sequence of a code point from U+00A0 on other than
 * U+2028 and U+2029 (line and paragraph separators); 0 for anything else (C0 controls, DEL, C1
 * controls U+0080-U+009F, bytes that are not well-formed UTF-8), which is written \xNN. */
static size_t text_plain_len(const unsigned char *s, size_t n, size_t i)
{
    uint32_t cp;
    size_t len = chat_utf8_seq(s, n, i, &cp);
    if (len == 0 || (len == 1 && (cp < 0x20 || cp == 0x7f)) || (len > 1 && cp < 0xa0) ||
        cp == 0x2028 || cp == 0x2029)
        return 0; /* C0 controls, DEL, C1 controls, line/paragraph separators, bad UTF-8 */
    return len;
}

/* Appends \xNN for byte c. */
static void put_hex_escape(chat_buf_t *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 0xf]};

    chat_buf_append(b, esc, sizeof(esc));
}

/* 1 when v must be written quoted: empty, or holding a space, '=', '"', '\\' or a byte
 * text_plain_len() refuses. */
static int text_needs_quotes(chat_str_t v)
{
    const unsigned char *u = (const unsigned char *)v.p;
    size_t i = 0;

    if (v.len == 0)
        return 1;
    while (i < v.len) {
        size_t k = text_plain_len(u, v.len, i);
        if (k == 0 || u[i] == ' ' || u[i] == '=' || u[i] == '"' || u[i] == '\\')
            return 1;
        i += k;
    }
    return 0;
}

/* Appends v as a text value: as is when it needs no quotes, else between double quotes with
 * \n \t \r \" \\ and \xNN for every other byte text_plain_len() refuses. */
static void put_text_value(chat_buf_t *b, chat_str_t v)
{
    const unsigned char *u = (const unsigned char *)v.p;
    size_t i = 0, start = 0;

    if (!text_needs_quotes(v)) {
        chat_buf_append(b, v.p, v.len);
        return;
    }
    chat_buf_append(b, "\"", 1);
    while (i < v.len) {
        size_t k = text_plain_len(u, v.len, i);
        unsigned char c = u[i];
        char esc = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : 0;

        if (k > 0 && c != '"' && c != '\\') {
            i += k;
            continue;
        }
        chat_buf_append(b, v.p + start, i - start);
        if (c == '"' || c == '\\')
            esc = (char)c;
        if (esc != 0) {
            char two[2] = {'\\', esc};
            chat_buf_append(b, two, 2);
        } else {
            put_hex_escape(b, c);
        }
        start = ++i;
    }
    chat_buf_append(b, v.p + start, v.len - start);
    chat_buf_append(b, "\"", 1);
}

/* Appends a key: our keys are static identifiers, but any byte outside A-Z a-z 0-9 _ . - (which
 * could fake a value or another field) is written '_', and an empty key is "_". */
static void put_text_key(chat_buf_t *b, const char *key)
{
    size_t n = strlen(key);

    if (n == 0)
        chat_buf_append(b, "_", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        chat_buf_append(b, ok ? key + i : "_", 1);
    }
}

/* Appends msg, a constant with spaces, unquoted; a byte text_plain_len() refuses (there should be
 * none) is written \xNN so that it cannot end the record either. */
static void put_text_msg(chat_buf_t *b, const char *msg)
{
    const unsigned char *u = (const unsigned char *)msg;
    size_t n = strlen(msg), i = 0, start = 0;

    while (i < n) {
        size_t k = text_plain_len(u, n, i);
        if (k > 0) {
            i += k;
            continue;
        }
        chat_buf_append(b, msg + start, i - start);
        put_hex_escape(b, u[i]);
        start = ++i;
    }
    chat_buf_append(b, msg + start, n - start);
}

static void write_text(chat_buf_t *b, chat_log_level_t level, const char *msg,
                       const chat_log_kv_t *kv, size_t n)
{
    put_time(b);
    chat_buf_appendf(b, " %-5s ", level_names[level]);
    put_text_msg(b, msg ? msg : "");
    for (size_t i = 0; i < n; i++) {
        if (kv[i].key == NULL)
            continue;
        chat_buf_append(b, " ", 1);
        put_text_key(b, kv[i].key);
        if (kv[i].is_num) {
            chat_buf_appendf(b, "=%lld", (long long)kv[i].num);
        } else {
            chat_buf_append(b, "=", 1);
            put_text_value(b, kv[i].str.p ? kv[i].str : CHAT_LIT(""));
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
    {
        FILE *out = log_stream ? log_stream : stdout;
        fwrite(b.p, 1, b.len, out);
        fflush(out);
    }
    chat_buf_free(&b);
}
