/* common/wire.c - broker message header (see wire.h), and the check a receiving node runs on
 * every broker message before relaying it (the JSON half is chat_env_check_relayed(), since JSON
 * lives only in envelope.c). */
#include "wire.h"

#include <inttypes.h>
#include <string.h>

#include "envelope.h"
#include "err.h"

void chat_wire_put_header(chat_buf_t *out, const chat_wire_hdr_t *h)
{
    chat_buf_appendf(out, "CGW1 %c %c %.*s %" PRIu64 " %" PRId64 "\n", (char)h->kind,
                     h->exclude_origin ? 'x' : '-', (int)h->origin_node.len, h->origin_node.p,
                     h->origin_conn, h->publish_ms);
}

/* Reads the next space- or newline-terminated field starting at *pos. */
static int next_field(chat_str_t data, size_t *pos, char term, chat_str_t *out)
{
    size_t start = *pos;
    while (*pos < data.len && data.p[*pos] != term && data.p[*pos] != '\n' && data.p[*pos] != ' ')
        (*pos)++;
    if (*pos >= data.len || data.p[*pos] != term || *pos == start)
        return CHAT_EMALFORMED;
    *out = chat_str(data.p + start, *pos - start);
    (*pos)++;
    return 0;
}

static int parse_u64(chat_str_t s, uint64_t *out)
{
    uint64_t v = 0;
    if (s.len == 0 || s.len > 20)
        return CHAT_EMALFORMED;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return CHAT_EMALFORMED;
        uint64_t d = (uint64_t)(s.p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return CHAT_EMALFORMED;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Splits data; on CHAT_EMALFORMED *why says whether only the kind was wrong. */
static int parse_header(chat_str_t data, chat_wire_hdr_t *h, chat_str_t *json,
                        chat_wire_reason_t *why)
{
    chat_str_t magic, kind, flags, node, conn, ms;
    size_t pos = 0;
    uint64_t ms_u;

    *why = CHAT_WIRE_R_HEADER;
    if (next_field(data, &pos, ' ', &magic) || !chat_str_eq(magic, CHAT_LIT("CGW1")) ||
        next_field(data, &pos, ' ', &kind) || next_field(data, &pos, ' ', &flags) ||
        flags.len != 1 || next_field(data, &pos, ' ', &node) ||
        next_field(data, &pos, ' ', &conn) || next_field(data, &pos, '\n', &ms) ||
        parse_u64(conn, &h->origin_conn) || parse_u64(ms, &ms_u) || ms_u > INT64_MAX)
        return CHAT_EMALFORMED;
    if (flags.p[0] != 'x' && flags.p[0] != '-')
        return CHAT_EMALFORMED;
    if (kind.len != 1 || (kind.p[0] != CHAT_WIRE_CHAT && kind.p[0] != CHAT_WIRE_TYPING &&
                          kind.p[0] != CHAT_WIRE_SYSTEM)) {
        *why = CHAT_WIRE_R_KIND;
        return CHAT_EMALFORMED;
    }
    h->kind = (chat_wire_kind_t)kind.p[0];
    h->exclude_origin = flags.p[0] == 'x';
    h->origin_node = node;
    h->publish_ms = (int64_t)ms_u;
    h->seq = 0; /* from the JSON part: chat_wire_check() reads them */
    h->epoch_len = 0;
    h->epoch[0] = '\0';
    *json = chat_str(data.p + pos, data.len - pos);
    return 0;
}

int chat_wire_parse(chat_str_t data, chat_wire_hdr_t *h, chat_str_t *json)
{
    chat_wire_reason_t why;
    return parse_header(data, h, json, &why);
}

/* ---- what a receiving node relays ------------------------------------------------------ */

const char *chat_wire_reason_name(chat_wire_reason_t r)
{
    static const char *const names[CHAT_WIRE_NREASONS] = {
        [CHAT_WIRE_R_HEADER] = "header", [CHAT_WIRE_R_KIND] = "kind",
        [CHAT_WIRE_R_SIZE] = "size",     [CHAT_WIRE_R_UTF8] = "utf8",
        [CHAT_WIRE_R_JSON] = "json",     [CHAT_WIRE_R_TYPE] = "type",
        [CHAT_WIRE_R_FIELDS] = "fields", [CHAT_WIRE_R_ROOM] = "room",
    };
    return (unsigned)r < CHAT_WIRE_NREASONS ? names[r] : NULL;
}

/* A node id as gateway/config.c accepts it: 1..CHAT_WIRE_NODE_MAX of A-Z a-z 0-9 . _ - */
static int node_valid(chat_str_t s)
{
    if (s.len == 0 || s.len > CHAT_WIRE_NODE_MAX)
        return 0;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* publish_ms within [now - max_age, now + CHAT_WIRE_MAX_AHEAD_MS], without overflow for any
 * now_ms. */
static int publish_time_sane(int64_t ms, int64_t now, uint64_t max_age)
{
    if (ms > now && (uint64_t)ms - (uint64_t)now > (uint64_t)CHAT_WIRE_MAX_AHEAD_MS)
        return 0;
    if (ms < now && (uint64_t)now - (uint64_t)ms > max_age)
        return 0;
    return 1;
}

static int reject(chat_wire_reason_t *reason, chat_wire_reason_t r)
{
    *reason = r;
    return CHAT_EMALFORMED;
}

int chat_wire_check(chat_str_t topic, chat_str_t data, const chat_wire_limits_t *lim,
                    chat_wire_hdr_t *h, chat_str_t *json, chat_wire_reason_t *reason)
{
    size_t max_json = chat_env_relayed_max_bytes(lim->max_text_bytes);
    chat_wire_reason_t why;

    if (max_json <= SIZE_MAX - CHAT_WIRE_HDR_MAX && data.len > CHAT_WIRE_HDR_MAX + max_json)
        return reject(reason, CHAT_WIRE_R_SIZE);
    if (parse_header(data, h, json, &why) != 0)
        return reject(reason, why);
    if (!node_valid(h->origin_node) || h->origin_conn > CHAT_WIRE_CONN_MAX ||
        !publish_time_sane(h->publish_ms, lim->now_ms,
                          lim->max_age_ms ? lim->max_age_ms : (uint64_t)CHAT_WIRE_MAX_AGE_MS))
        return reject(reason, CHAT_WIRE_R_HEADER);
    return chat_env_check_relayed(*json, h->kind, topic, lim->max_text_bytes, h, reason);
}
