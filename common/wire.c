/* common/wire.c - broker message header (see wire.h). */
#include "wire.h"

#include <inttypes.h>
#include <string.h>

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

int chat_wire_parse(chat_str_t data, chat_wire_hdr_t *h, chat_str_t *json)
{
    chat_str_t magic, kind, flags, node, conn, ms;
    size_t pos = 0;
    uint64_t ms_u;
    if (next_field(data, &pos, ' ', &magic) || !chat_str_eq(magic, CHAT_LIT("CGW1")) ||
        next_field(data, &pos, ' ', &kind) || kind.len != 1 ||
        next_field(data, &pos, ' ', &flags) || flags.len != 1 ||
        next_field(data, &pos, ' ', &node) || next_field(data, &pos, ' ', &conn) ||
        next_field(data, &pos, '\n', &ms) || parse_u64(conn, &h->origin_conn) ||
        parse_u64(ms, &ms_u) || ms_u > INT64_MAX)
        return CHAT_EMALFORMED;
    if (kind.p[0] != CHAT_WIRE_CHAT && kind.p[0] != CHAT_WIRE_TYPING &&
        kind.p[0] != CHAT_WIRE_SYSTEM)
        return CHAT_EMALFORMED;
    if (flags.p[0] != 'x' && flags.p[0] != '-')
        return CHAT_EMALFORMED;
    h->kind = (chat_wire_kind_t)kind.p[0];
    h->exclude_origin = flags.p[0] == 'x';
    h->origin_node = node;
    h->publish_ms = (int64_t)ms_u;
    *json = chat_str(data.p + pos, data.len - pos);
    return 0;
}
