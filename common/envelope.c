/* common/envelope.c - THE JSON envelope (see envelope.h): one typed parse of client messages
 * (cJSON_ParseWithLengthOpts, since WebSocket payloads are not NUL-terminated) and one
 * hand-written builder per outbound type (compact JSON, fixed key order, RFC 8259 escaping),
 * plus the typed parse of a JWT's header and claims for gateway/auth.c, and the check of
 * envelopes relayed by the broker (chat_env_check_relayed(), for chat_wire_check()).
 * The only file that includes cJSON.h. Holds no state: parse results borrow the caller's tree,
 * builders only append to the caller's buffer, JWT claims are copies the caller disposes. */
#include "envelope.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "alloc.h"
#include "buf.h"
#include "err.h"
#include "names.h"
#include "str.h"
#include "utf8.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* Appends a string literal (no escaping: only for our own JSON syntax and keys). */
#define PUT_LIT(b, s) chat_buf_append((b), (s), sizeof(s) - 1)

/* ---- parse ------------------------------------------------------------------------------- */

enum { F_ROOM = 1u << 0, F_TEXT = 1u << 1, F_TOKEN = 1u << 2 };

/* A client field other than type and cid. Its type is checked whenever it is present (on any
 * message type); it is copied into chat_env_in_t only for the message types that use it. */
typedef struct field_spec {
    unsigned bit;
    const char *key;
    size_t offset; /* of its chat_str_t in chat_env_in_t */
    const char *wrong_type;
    const char *missing;
} field_spec_t;

static const field_spec_t fields[] = {
    {F_ROOM, "room", offsetof(chat_env_in_t, room), "field 'room' must be a string",
     "field 'room' is required"},
    {F_TEXT, "text", offsetof(chat_env_in_t, text), "field 'text' must be a string",
     "field 'text' is required"},
    {F_TOKEN, "token", offsetof(chat_env_in_t, token), "field 'token' must be a string",
     "field 'token' is required"},
};

typedef struct type_spec {
    const char *name;
    chat_env_type_t type;
    unsigned required; /* F_* that must be present */
    unsigned used;     /* F_* copied into chat_env_in_t (required ones included) */
} type_spec_t;

static const type_spec_t types[] = {
    {"join", CHAT_ENV_JOIN, F_ROOM, F_ROOM},
    {"leave", CHAT_ENV_LEAVE, F_ROOM, F_ROOM},
    {"chat", CHAT_ENV_CHAT, F_TEXT, F_ROOM | F_TEXT},
    {"typing", CHAT_ENV_TYPING, 0, F_ROOM},
    {"refresh", CHAT_ENV_REFRESH, F_TOKEN, F_TOKEN},
    {"ping", CHAT_ENV_PING, 0, 0},
    {"history", CHAT_ENV_HISTORY, F_ROOM, F_ROOM},
    {"presence", CHAT_ENV_PRESENCE, F_ROOM, F_ROOM},
};
_Static_assert(sizeof(types) / sizeof(types[0]) == CHAT_ENV_NTYPES - 1,
               "one entry per chat_env_type_t");

static int fail(chat_env_in_t *out, int rc, const char *why)
{
    out->error = why;
    return rc;
}

static int is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Refuses, before any tree is built, JSON nested deeper than CHAT_ENV_MAX_DEPTH (the top-level
 * object is level 1), an object with more than CHAT_ENV_MAX_KEYS keys, an array with more than
 * CHAT_ENV_MAX_ITEMS elements or a message with more than CHAT_ENV_MAX_VALUES values: one pass
 * over the bytes, strings skipped. Malformed JSON is left to the parser. */
typedef struct shape_limits {
    unsigned items;  /* elements of one array */
    unsigned values; /* values of the whole document */
    const char *items_why, *values_why;
} shape_limits_t;

/* Client messages and relayed envelopes (no field of ours is an array). */
static const shape_limits_t client_shape = {CHAT_ENV_MAX_ITEMS, CHAT_ENV_MAX_VALUES,
                                            "an array with more than 64 elements",
                                            "a message with more than 1024 values"};
/* JWT headers and claims: `rooms` may hold CHAT_JWT_MAX_ROOMS entries. */
static const shape_limits_t jwt_shape = {CHAT_JWT_MAX_ROOMS, 4 * CHAT_JWT_MAX_ROOMS,
                                         "an array with more than 256 elements",
                                         "more than 1024 values"};

static int check_shape(const char *p, size_t n, const shape_limits_t *lim, chat_env_in_t *out)
{
    unsigned depth = 0, items[CHAT_ENV_MAX_DEPTH + 1], values = 0;
    unsigned char is_obj[CHAT_ENV_MAX_DEPTH + 1];
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > CHAT_ENV_MAX_DEPTH)
                return fail(out, CHAT_EBADREQ, "message nested deeper than 16 levels");
            items[depth] = 0;
            is_obj[depth] = c == '{';
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        } else if (c == ':' && depth > 0 && is_obj[depth] &&
                   ++items[depth] > CHAT_ENV_MAX_KEYS) {
            return fail(out, CHAT_EBADREQ, "an object with more than 64 keys");
        } else if (c == ',' && depth > 0 && !is_obj[depth] &&
                   ++items[depth] >= lim->items) { /* n commas: n + 1 elements */
            return fail(out, CHAT_EBADREQ, lim->items_why);
        }
        /* Every value but the first follows a ',' or is a container: the tree has at most
         * commas + containers + 1 nodes. */
        if ((c == ',' || c == '{' || c == '[') && ++values >= lim->values)
            return fail(out, CHAT_EBADREQ, lim->values_why);
    }
    return 0;
}

/* peek: a plain string at p[*i] (which is '"'): its bytes in *out, *i past the closing quote.
 * 0 when it holds an escape (or is cut), which the peek leaves to the parser. */
static int peek_string(const char *p, size_t n, size_t *i, chat_str_t *out)
{
    size_t start = ++*i;
    while (*i < n && p[*i] != '"' && p[*i] != '\\')
        ++*i;
    if (*i >= n || p[*i] != '"')
        return 0;
    *out = chat_str(p + start, *i - start);
    ++*i;
    return 1;
}

/* peek: skips one value starting at p[i]; returns the index of the ',' or '}' that ends it at the
 * top level, or n. */
static size_t peek_skip_value(const char *p, size_t n, size_t i)
{
    unsigned depth = 0;
    int in_str = 0;
    for (; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return i;
            depth--;
        } else if (c == ',' && depth == 0) {
            return i;
        }
    }
    return n;
}

chat_env_type_t chat_env_peek(const char *p, size_t n, chat_str_t *cid)
{
    chat_env_type_t type = 0;
    int seen_type = 0, seen_cid = 0;
    size_t i = 0;
    *cid = CHAT_STR_NULL;
    while (i < n && is_json_space(p[i]))
        i++;
    if (i >= n || p[i] != '{')
        return 0;
    i++;
    while (i < n && !(seen_type && seen_cid)) { /* one member per turn: "key" : value [,] */
        chat_str_t key, val;
        while (i < n && (is_json_space(p[i]) || p[i] == ','))
            i++;
        if (i >= n || p[i] != '"' || !peek_string(p, n, &i, &key))
            break; /* the end of the object, an escaped key, or malformed */
        while (i < n && is_json_space(p[i]))
            i++;
        if (i >= n || p[i] != ':')
            break;
        i++;
        while (i < n && is_json_space(p[i]))
            i++;
        int is_type = chat_str_eq(key, CHAT_LIT("type")) && !seen_type;
        int is_cid = chat_str_eq(key, CHAT_LIT("cid")) && !seen_cid;
        seen_type |= is_type;
        seen_cid |= is_cid;
        if ((is_type || is_cid) && i < n && p[i] == '"') {
            size_t start = i;
            if (!peek_string(p, n, &i, &val)) { /* an escaped value: not ours to decode */
                i = peek_skip_value(p, n, start);
                continue;
            }
            if (is_type)
                for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++)
                    if (chat_str_eq(val, chat_cstr(types[t].name)))
                        type = types[t].type;
            if (is_cid && val.len <= CHAT_ENV_MAX_CID && memchr(val.p, '\0', val.len) == NULL)
                *cid = val;
            continue;
        }
        i = peek_skip_value(p, n, i);
        if (i < n && p[i] == '}')
            break;
    }
    return type;
}

/* Parses p[0..n) into one JSON object. cJSON accepts trailing bytes after the value, so we
 * check that only whitespace follows. On failure the tree (if any) is freed here. */
static int parse_object(const char *p, size_t n, const shape_limits_t *lim, chat_env_in_t *out,
                        cJSON **doc)
{
    const char *end = NULL;
    if (p != NULL && check_shape(p, n, lim, out) != 0)
        return CHAT_EBADREQ;
    cJSON *root = p != NULL && n > 0 ? cJSON_ParseWithLengthOpts(p, n, &end, 0) : NULL;

    if (root == NULL)
        return fail(out, CHAT_EBADJSON, "message is not valid JSON");
    while (end != NULL && end < p + n && is_json_space(*end))
        end++;
    if (end != p + n) {
        cJSON_Delete(root);
        return fail(out, CHAT_EBADJSON, "message is not valid JSON");
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(out, CHAT_EBADJSON, "message must be a JSON object");
    }
    *doc = root;
    return 0;
}

/* What scan_strings() found in the strings of a JSON text. A NUL is the escape \u0000 or a raw
 * 0x00 byte (cJSON takes both): cJSON strings end at the first NUL, so "ab\u0000cd" would read as
 * "ab", and "a\u0000b" as the room "a". */
typedef struct str_scan {
    uint64_t nul_members; /* bit i: the value of top-level member i (in order) holds a NUL */
    int nul_key;          /* a key, at any depth, holds a NUL */
} str_scan_t;
_Static_assert(CHAT_ENV_MAX_KEYS <= 64, "str_scan_t has one bit per top-level member");

/* Scans p[0..n), a JSON object that check_shape() and cJSON accepted (so at most
 * CHAT_ENV_MAX_DEPTH levels and CHAT_ENV_MAX_KEYS keys per object), string by string, keeping
 * the string and escape state: "\\u0000" (an escaped backslash, then the text u0000) is no NUL.
 * Top-level member i is the i-th child of cJSON's tree: both keep the input order. */
static void scan_strings(const char *p, size_t n, str_scan_t *r)
{
    unsigned depth = 0;
    unsigned char is_obj[CHAT_ENV_MAX_DEPTH + 1], want_key[CHAT_ENV_MAX_DEPTH + 1];
    int member = -1; /* the top-level member being read */

    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '"') {
            int is_key =
                depth > 0 && depth <= CHAT_ENV_MAX_DEPTH && is_obj[depth] && want_key[depth];
            int nul = 0;
            if (is_key) {
                want_key[depth] = 0;
                if (depth == 1)
                    member++;
            }
            for (i++; i < n && p[i] != '"'; i++) {
                unsigned char u = (unsigned char)p[i];
                if (u == '\\') {
                    if (n - i > 5 && p[i + 1] == 'u' && memcmp(p + i + 2, "0000", 4) == 0)
                        nul = 1;
                    i++; /* the escaped character (a second backslash included) */
                } else if (u == 0) {
                    nul = 1;
                }
            }
            if (nul && is_key)
                r->nul_key = 1;
            else if (nul && member >= 0 && member < 64)
                r->nul_members |= (uint64_t)1 << member;
        } else if (c == '{' || c == '[') {
            if (++depth <= CHAT_ENV_MAX_DEPTH) {
                is_obj[depth] = c == '{';
                want_key[depth] = c == '{';
            }
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        } else if (c == ',' && depth > 0 && depth <= CHAT_ENV_MAX_DEPTH && is_obj[depth]) {
            want_key[depth] = 1;
        }
    }
}

/* 1 when the first member named `key` (the one cJSON's lookup finds) holds a NUL. */
static int member_has_nul(const cJSON *obj, const str_scan_t *scan, const char *key)
{
    unsigned i = 0;
    for (const cJSON *c = obj->child; c != NULL && i < 64; c = c->next, i++)
        if (c->string != NULL && strcmp(c->string, key) == 0)
            return (scan->nul_members >> i) & 1;
    return 0;
}

/* Looks up `key` (case-sensitive; the first of duplicate keys wins). Returns 0 with *dst absent
 * or set, or CHAT_EBADREQ when the value is not a string. cJSON keeps no length: a string that
 * held a NUL would end there, so callers refuse those first (scan_strings()). */
static int get_string(const cJSON *obj, const char *key, chat_str_t *dst)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    *dst = CHAT_STR_NULL;
    if (item == NULL)
        return 0;
    if (!cJSON_IsString(item) || item->valuestring == NULL)
        return CHAT_EBADREQ;
    *dst = chat_cstr(item->valuestring);
    return 0;
}

/* A cid that is the wrong type, holds a NUL or is too long is not filled in (not echoable). */
static int parse_cid(const cJSON *root, const str_scan_t *scan, chat_env_in_t *out)
{
    chat_str_t cid;

    if (get_string(root, "cid", &cid) != 0)
        return fail(out, CHAT_EBADREQ, "field 'cid' must be a string");
    if (member_has_nul(root, scan, "cid"))
        return fail(out, CHAT_EBADREQ, "field 'cid' contains a NUL character");
    if (cid.p != NULL && cid.len > CHAT_ENV_MAX_CID)
        return fail(out, CHAT_EBADREQ,
                    "field 'cid' must be at most " STRINGIFY(CHAT_ENV_MAX_CID) " bytes");
    out->cid = cid;
    return 0;
}

static int parse_type(const cJSON *root, chat_env_in_t *out, const type_spec_t **spec)
{
    chat_str_t name;

    if (get_string(root, "type", &name) != 0)
        return fail(out, CHAT_EBADREQ, "field 'type' must be a string");
    if (name.p == NULL)
        return fail(out, CHAT_EBADREQ, "field 'type' is required");
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (chat_str_eq(name, chat_cstr(types[i].name))) {
            *spec = &types[i];
            out->type = types[i].type;
            return 0;
        }
    }
    return fail(out, CHAT_EUNKNOWN_TYPE, "unknown message type");
}

static chat_str_t *field_slot(chat_env_in_t *out, const field_spec_t *f)
{
    return (chat_str_t *)(void *)((char *)out + f->offset);
}

static int parse_fields(const cJSON *root, const type_spec_t *t, chat_env_in_t *out)
{
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const field_spec_t *f = &fields[i];
        chat_str_t v;

        if (get_string(root, f->key, &v) != 0)
            return fail(out, CHAT_EBADREQ, f->wrong_type);
        if (v.p == NULL && (t->required & f->bit))
            return fail(out, CHAT_EBADREQ, f->missing);
        if (t->used & f->bit)
            *field_slot(out, f) = v;
    }
    return 0;
}

/* Refuses a NUL in any string: a key (then no cid is echoed either), or the value of any member,
 * named when it is one we read. Runs before any field is read, so no check ever sees a string
 * cut short, and every length checked is the decoded length. */
static int refuse_nul(const cJSON *root, const str_scan_t *scan, chat_env_in_t *out)
{
    static const struct {
        const char *key, *why;
    } named[] = {
        {"type", "field 'type' contains a NUL character"},
        {"room", "field 'room' contains a NUL character"},
        {"text", "field 'text' contains a NUL character"},
        {"token", "field 'token' contains a NUL character"},
        {"cid", "field 'cid' contains a NUL character"},
        {"since", "field 'since' contains a NUL character"},
    };
    unsigned i = 0;

    if (scan->nul_members == 0)
        return 0;
    for (const cJSON *c = root->child; c != NULL && i < 64; c = c->next, i++) {
        if (!((scan->nul_members >> i) & 1))
            continue;
        for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++)
            if (c->string != NULL && strcmp(c->string, named[k].key) == 0)
                return fail(out, CHAT_EBADREQ, named[k].why);
        break;
    }
    return fail(out, CHAT_EBADREQ, "a string in the message contains a NUL character");
}

/* ---- whole numbers, read from the text ------------------------------------------------- */

/* 2^53: the largest integer that a double, and so a JavaScript number, holds exactly */
#define INT_2_53 ((uint64_t)1 << 53)

/* cJSON skips every byte up to 0x20 between tokens (NUL and other control bytes included). */
static size_t skip_cjson_space(const char *p, size_t n, size_t i)
{
    while (i < n && (unsigned char)p[i] <= 0x20)
        i++;
    return i;
}

/* The offset in p[0..n) of the value of `item`, a member of `obj` whose '{' is at p[at]: cJSON
 * keeps the members in input order, duplicates included, so its k-th child is the k-th member
 * of the text. n when the text does not read so (never, for the text cJSON built obj from). */
static size_t member_value_at(const char *p, size_t n, size_t at, const cJSON *obj,
                              const cJSON *item)
{
    size_t k = 0, i;
    const cJSON *c = obj->child;

    while (c != NULL && c != item) {
        c = c->next;
        k++;
    }
    if (c == NULL || at >= n || p[at] != '{')
        return n;
    for (i = at + 1;; i++) { /* one member per turn: "key" : value , */
        i = skip_cjson_space(p, n, i);
        if (i >= n || p[i] != '"')
            return n;
        for (i++; i < n && p[i] != '"'; i++)
            if (p[i] == '\\')
                i++;
        if (i >= n)
            return n;
        i = skip_cjson_space(p, n, i + 1);
        if (i >= n || p[i] != ':')
            return n;
        i = skip_cjson_space(p, n, i + 1);
        if (k-- == 0)
            return i;
        i = peek_skip_value(p, n, i);
        if (i >= n || p[i] != ',')
            return n;
    }
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads the JSON number written at p[i..n) (RFC 8259: -? int frac? exp?) exactly, from its
 * digits rather than through cJSON's double (which reads 9007199254740993 as 2^53, and
 * 4503599627370496.5 as a whole number). 1 with *v when it is a whole number from min to max
 * (max <= 2^53): "100", "1e2", "100.0" and "1000e-1" are 100; "41.5", "-1", "1." are not.
 * Else 0. i == n (no number found) is 0 too. */
static int exact_uint(const char *p, size_t n, size_t i, uint64_t min, uint64_t max, uint64_t *v)
{
    size_t int_at, int_len, frac_at = 0, frac_len = 0, len, first = 0, last;
    int64_t exp = 0, scale;
    uint64_t val = 0;
    int neg = 0;

    if (i < n && p[i] == '-') {
        neg = 1;
        i++;
    }
    for (int_at = i; i < n && is_digit(p[i]); i++)
        ;
    if ((int_len = i - int_at) == 0)
        return 0;
    if (i < n && p[i] == '.') {
        for (frac_at = ++i; i < n && is_digit(p[i]); i++)
            ;
        if ((frac_len = i - frac_at) == 0)
            return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        int exp_neg = 0;
        size_t exp_at;
        if (++i < n && (p[i] == '+' || p[i] == '-'))
            exp_neg = p[i++] == '-';
        for (exp_at = i; i < n && is_digit(p[i]); i++)
            if (exp < 1000000) /* saturates: far beyond any digit count we keep */
                exp = exp * 10 + (p[i] - '0');
        if (i == exp_at)
            return 0;
        if (exp_neg)
            exp = -exp;
    }
    if (i < n &&
        (is_digit(p[i]) || p[i] == '.' || p[i] == 'e' || p[i] == 'E' || p[i] == '+' || p[i] == '-'))
        return 0; /* more number-like bytes than the grammar allows ("1.2.3", "1e5e5") */
    /* value = digits d[first..last) * 10^scale, d being the integer digits then the fraction's */
    len = int_len + frac_len;
#define DIGIT_AT(k) ((k) < int_len ? p[int_at + (k)] : p[frac_at + (k)-int_len])
    while (first < len && DIGIT_AT(first) == '0')
        first++;
    last = len;
    while (last > first && DIGIT_AT(last - 1) == '0')
        last--;
    scale = exp - (int64_t)frac_len + (int64_t)(len - last);
    if (first < last) {
        if (scale < 0)
            return 0; /* a fraction is left */
        if (last - first > 20 || (uint64_t)scale > 20 - (last - first))
            return 0; /* at least 10^20: above any max */
        for (size_t k = first; k < last + (size_t)scale; k++) {
            uint64_t d = k < last ? (uint64_t)(DIGIT_AT(k) - '0') : 0;
            if (val > max / 10 || val * 10 + d > max)
                return 0;
            val = val * 10 + d;
        }
    }
#undef DIGIT_AT
    if ((neg && val != 0) || val < min || val > max)
        return 0;
    *v = val;
    return 1;
}

/* ---- fields of join (since) and history (before, limit) -------------------------------- */

#define SINCE_WHY "field 'since' must be {\"seq\":<integer 0..2^53>,\"epoch\":<string>}"

/* An optional whole-number member `key` of root, in min..2^53. */
static int parse_count(const char *p, size_t n, size_t top, const cJSON *root, const char *key,
                       uint64_t min, const char *why, chat_env_in_t *out, uint64_t *dst, int *has)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);

    if (item == NULL)
        return 0;
    if (!cJSON_IsNumber(item) ||
        !exact_uint(p, n, member_value_at(p, n, top, root, item), min, INT_2_53, dst))
        return fail(out, CHAT_EBADREQ, why);
    *has = 1;
    return 0;
}

/* join: "since":{"seq":<0..2^53>,"epoch":<chat_epoch_valid>}, exactly these two members. */
static int parse_since(const char *p, size_t n, size_t top, const cJSON *root, chat_env_in_t *out)
{
    const cJSON *since = cJSON_GetObjectItemCaseSensitive(root, "since");
    const cJSON *seq, *epoch;
    uint64_t seq_value;
    chat_str_t e;

    if (since == NULL)
        return 0;
    if (!cJSON_IsObject(since))
        return fail(out, CHAT_EBADREQ, SINCE_WHY);
    seq = cJSON_GetObjectItemCaseSensitive(since, "seq");
    epoch = cJSON_GetObjectItemCaseSensitive(since, "epoch");
    /* both found and two members in all: no other member, no duplicate */
    if (seq == NULL || epoch == NULL || cJSON_GetArraySize(since) != 2 || !cJSON_IsNumber(seq) ||
        !exact_uint(p, n,
                    member_value_at(p, n, member_value_at(p, n, top, root, since), since, seq), 0,
                    INT_2_53, &seq_value) ||
        !cJSON_IsString(epoch) || epoch->valuestring == NULL)
        return fail(out, CHAT_EBADREQ, SINCE_WHY);
    e = chat_cstr(epoch->valuestring); /* NULs were refused before: the decoded length */
    if (!chat_epoch_valid(e))
        return fail(out, CHAT_EBADREQ,
                    "field 'since' has an invalid epoch (1 to 32 of A-Z a-z 0-9 _ -)");
    out->has_since = 1;
    out->since_seq = seq_value;
    out->since_epoch = e;
    return 0;
}

/* The fields only some types read (and check): since for join, before and limit for history. */
static int parse_extras(const char *p, size_t n, const cJSON *root, chat_env_in_t *out)
{
    const char *brace = memchr(p, '{', n); /* the object's: only a BOM and spaces precede it */
    size_t top = brace != NULL ? (size_t)(brace - p) : n;
    int has_limit = 0;
    int rc;

    switch (out->type) {
    case CHAT_ENV_JOIN:
        return parse_since(p, n, top, root, out);
    case CHAT_ENV_HISTORY:
        if ((rc = parse_count(p, n, top, root, "before", 1,
                              "field 'before' must be an integer from 1 to 2^53", out, &out->before,
                              &out->has_before)) != 0 ||
            (rc = parse_count(p, n, top, root, "limit", 1,
                              "field 'limit' must be an integer from 1 to 2^53", out, &out->limit,
                              &has_limit)) != 0)
            return rc;
        if (out->limit > CHAT_ENV_HISTORY_MAX)
            out->limit = CHAT_ENV_HISTORY_MAX;
        return 0;
    case CHAT_ENV_LEAVE:
    case CHAT_ENV_CHAT:
    case CHAT_ENV_TYPING:
    case CHAT_ENV_PING:
    case CHAT_ENV_REFRESH:
    case CHAT_ENV_PRESENCE:
    case CHAT_ENV_NTYPES:
        break;
    }
    return 0;
}

/* On CHAT_EBADJSON *doc stays NULL (any tree built was freed here); on every other return
 * *doc holds the tree. chat_env_free(NULL) is a no-op, so callers may always free. */
int chat_env_parse(const char *p, size_t n, chat_env_in_t *out, struct cJSON **doc)
{
    const type_spec_t *spec = NULL;
    str_scan_t scan;
    int rc;

    memset(out, 0, sizeof(*out));
    *doc = NULL;
    if ((rc = parse_object(p, n, &client_shape, out, doc)) != 0)
        return rc;
    scan_strings(p, n, &scan);
    if (scan.nul_key)
        return fail(out, CHAT_EBADREQ, "a key in the message contains a NUL character");
    if ((rc = parse_cid(*doc, &scan, out)) != 0 || (rc = refuse_nul(*doc, &scan, out)) != 0 ||
        (rc = parse_type(*doc, out, &spec)) != 0 || (rc = parse_fields(*doc, spec, out)) != 0 ||
        (rc = parse_extras(p, n, *doc, out)) != 0)
        return rc;
    return 0;
}

void chat_env_free(struct cJSON *doc)
{
    cJSON_Delete(doc);
}

/* ---- build ------------------------------------------------------------------------------- */

/* Writes the escape for the byte(s) at s[i] into esc (6 bytes max) and returns how many input
 * bytes it replaces, or 0 when s[i] passes through unchanged. U+2028/U+2029 are escaped too,
 * so the output is also safe inside JavaScript source. */
static size_t escape_at(const unsigned char *s, size_t n, size_t i, char *esc, size_t *esc_len)
{
    static const char hex[] = "0123456789abcdef";
    static const char short_esc[0x20] = {
        ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
    unsigned char c = s[i];

    if (c == '"' || c == '\\' || (c < 0x20 && short_esc[c] != 0)) {
        esc[0] = '\\';
        esc[1] = c < 0x20 ? short_esc[c] : (char)c;
        *esc_len = 2;
        return 1;
    }
    if (c < 0x20) {
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 0xf];
        *esc_len = 6;
        return 1;
    }
    if (c == 0xe2 && i + 2 < n && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
        memcpy(esc, s[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
        *esc_len = 6;
        return 3;
    }
    return 0;
}

/* Appends s as a JSON string literal; p == NULL is written as "". */
static void put_str(chat_buf_t *b, chat_str_t s);

void chat_env_put_string(chat_buf_t *b, chat_str_t s)
{
    put_str(b, s);
}

static void put_str(chat_buf_t *b, chat_str_t s)
{
    const unsigned char *u;
    size_t start = 0, i = 0, esc_len;
    char esc[6];

    if (s.p == NULL)
        s = CHAT_LIT("");
    u = (const unsigned char *)s.p;
    chat_buf_reserve(b, s.len + 2);
    PUT_LIT(b, "\"");
    while (i < s.len) {
        size_t used = escape_at(u, s.len, i, esc, &esc_len);
        if (used == 0) {
            i++;
            continue;
        }
        chat_buf_append(b, s.p + start, i - start);
        chat_buf_append(b, esc, esc_len);
        i += used;
        start = i;
    }
    chat_buf_append(b, s.p + start, s.len - start);
    PUT_LIT(b, "\"");
}

static void put_cstr(chat_buf_t *b, const char *s)
{
    put_str(b, chat_cstr(s));
}

static void put_int(chat_buf_t *b, int64_t v)
{
    chat_buf_appendf(b, "%" PRId64, v);
}

static void put_u64(chat_buf_t *b, uint64_t v)
{
    chat_buf_appendf(b, "%" PRIu64, v);
}

/* ,"user":..[,"name":..] */
static void put_identity(chat_buf_t *b, chat_str_t user, chat_str_t name)
{
    PUT_LIT(b, ",\"user\":");
    put_str(b, user);
    if (name.p != NULL) {
        PUT_LIT(b, ",\"name\":");
        put_str(b, name);
    }
}

void chat_env_build_welcome(chat_buf_t *out, chat_str_t user, chat_str_t name, chat_str_t node,
                            chat_str_t conn)
{
    PUT_LIT(out, "{\"type\":\"welcome\"");
    put_identity(out, user, name);
    PUT_LIT(out, ",\"node\":");
    put_str(out, node);
    PUT_LIT(out, ",\"conn\":");
    put_str(out, conn);
    PUT_LIT(out, "}");
}

void chat_env_build_joined(chat_buf_t *out, chat_str_t room, const chat_env_joined_t *j)
{
    PUT_LIT(out, "{\"type\":\"joined\",\"room\":");
    put_str(out, room);
    if (j != NULL && j->has_seq) {
        PUT_LIT(out, ",\"seq\":");
        put_u64(out, j->seq);
        PUT_LIT(out, ",\"epoch\":");
        put_str(out, j->epoch);
    }
    if (j != NULL && j->has_recovered) {
        if (j->recovered)
            PUT_LIT(out, ",\"recovered\":true");
        else
            PUT_LIT(out, ",\"recovered\":false");
    }
    PUT_LIT(out, "}");
}

void chat_env_build_left(chat_buf_t *out, chat_str_t room)
{
    PUT_LIT(out, "{\"type\":\"left\",\"room\":");
    put_str(out, room);
    PUT_LIT(out, "}");
}

void chat_env_build_pong(chat_buf_t *out)
{
    PUT_LIT(out, "{\"type\":\"pong\"}");
}

/* The chat envelope up to its closing brace (excluded). */
static void put_chat_body(chat_buf_t *out, const chat_env_chat_t *m)
{
    PUT_LIT(out, "{\"type\":\"chat\",\"room\":");
    put_str(out, m->room);
    PUT_LIT(out, ",\"id\":");
    put_str(out, m->id);
    put_identity(out, m->user, m->name);
    PUT_LIT(out, ",\"text\":");
    put_str(out, m->text);
    PUT_LIT(out, ",\"ts\":");
    put_int(out, m->ts);
}

void chat_env_build_chat(chat_buf_t *out, const chat_env_chat_t *m)
{
    put_chat_body(out, m);
    PUT_LIT(out, "}");
}

void chat_env_build_chat_open(chat_buf_t *out, const chat_env_chat_t *m)
{
    put_chat_body(out, m);
    PUT_LIT(out, ",\"seq\":");
}

void chat_env_build_ack(chat_buf_t *out, chat_str_t cid, chat_str_t room, chat_str_t id,
                        int has_seq, uint64_t seq)
{
    PUT_LIT(out, "{\"type\":\"ack\",\"cid\":");
    put_str(out, cid);
    PUT_LIT(out, ",\"room\":");
    put_str(out, room);
    PUT_LIT(out, ",\"id\":");
    put_str(out, id);
    if (has_seq) {
        PUT_LIT(out, ",\"seq\":");
        put_u64(out, seq);
    }
    PUT_LIT(out, "}");
}

void chat_env_build_history(chat_buf_t *out, chat_str_t room, chat_str_t epoch, uint64_t seq,
                            const chat_str_t *msgs, size_t n)
{
    size_t total = 0;

    for (size_t i = 0; i < n; i++)
        total += msgs[i].len + 1;
    chat_buf_reserve(out, total + 64 + 6 * (room.len + epoch.len));
    PUT_LIT(out, "{\"type\":\"history\",\"room\":");
    put_str(out, room);
    PUT_LIT(out, ",\"epoch\":");
    put_str(out, epoch);
    PUT_LIT(out, ",\"seq\":");
    put_u64(out, seq);
    PUT_LIT(out, ",\"messages\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            PUT_LIT(out, ",");
        chat_buf_append(out, msgs[i].p, msgs[i].len);
    }
    PUT_LIT(out, "]}");
}

void chat_env_build_presence(chat_buf_t *out, chat_str_t room, uint64_t count,
                             const chat_env_presence_user_t *users, size_t n, int listed)
{
    PUT_LIT(out, "{\"type\":\"presence\",\"room\":");
    put_str(out, room);
    PUT_LIT(out, ",\"count\":");
    put_u64(out, count);
    if (listed) {
        PUT_LIT(out, ",\"users\":[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                PUT_LIT(out, ",");
            PUT_LIT(out, "{\"user\":");
            put_str(out, users[i].user);
            PUT_LIT(out, ",\"connections\":");
            put_u64(out, users[i].connections);
            PUT_LIT(out, "}");
        }
        PUT_LIT(out, "]");
    }
    PUT_LIT(out, "}");
}

void chat_env_build_typing(chat_buf_t *out, chat_str_t room, chat_str_t user, chat_str_t name)
{
    PUT_LIT(out, "{\"type\":\"typing\",\"room\":");
    put_str(out, room);
    put_identity(out, user, name);
    PUT_LIT(out, "}");
}

void chat_env_build_token_expiring(chat_buf_t *out, int64_t ttl_ms)
{
    PUT_LIT(out, "{\"type\":\"system\",\"event\":\"token_expiring\",\"ttl_ms\":");
    put_int(out, ttl_ms);
    PUT_LIT(out, "}");
}

void chat_env_build_refreshed(chat_buf_t *out, int64_t exp)
{
    PUT_LIT(out, "{\"type\":\"refreshed\",\"exp\":");
    put_int(out, exp);
    PUT_LIT(out, "}");
}

void chat_env_build_system(chat_buf_t *out, chat_str_t room, const char *event, chat_str_t user,
                           chat_str_t name, int64_t ts)
{
    PUT_LIT(out, "{\"type\":\"system\",\"room\":");
    put_str(out, room);
    PUT_LIT(out, ",\"event\":");
    put_cstr(out, event);
    put_identity(out, user, name);
    PUT_LIT(out, ",\"ts\":");
    put_int(out, ts);
    PUT_LIT(out, "}");
}

void chat_env_build_error(chat_buf_t *out, const char *code, const char *message, chat_str_t cid,
                          chat_str_t room)
{
    PUT_LIT(out, "{\"type\":\"error\",\"code\":");
    put_cstr(out, code);
    PUT_LIT(out, ",\"message\":");
    put_cstr(out, message);
    if (cid.p != NULL) {
        PUT_LIT(out, ",\"cid\":");
        put_str(out, cid);
    }
    if (room.p != NULL) {
        PUT_LIT(out, ",\"room\":");
        put_str(out, room);
    }
    PUT_LIT(out, "}");
}

void chat_env_build_rate_limited(chat_buf_t *out, uint64_t retry_after_ms, chat_str_t cid)
{
    PUT_LIT(out, "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":"
                 "\"too many messages: wait retry_after_ms before sending again\","
                 "\"retry_after_ms\":");
    put_int(out, (int64_t)retry_after_ms);
    if (cid.p != NULL) {
        PUT_LIT(out, ",\"cid\":");
        put_str(out, cid);
    }
    PUT_LIT(out, "}");
}

void chat_env_build_readiness(chat_buf_t *out, int ready, const char *const *failed, size_t n)
{
    if (ready) {
        PUT_LIT(out, "{\"ready\":true}");
        return;
    }
    PUT_LIT(out, "{\"ready\":false,\"failed\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            PUT_LIT(out, ",");
        put_cstr(out, failed[i]);
    }
    PUT_LIT(out, "]}");
}

void chat_env_build_health(chat_buf_t *out)
{
    PUT_LIT(out, "{\"status\":\"ok\"}");
}

void chat_env_build_refusal(chat_buf_t *out, const char *code, const char *message)
{
    PUT_LIT(out, "{\"error\":");
    put_cstr(out, code);
    PUT_LIT(out, ",\"message\":");
    put_cstr(out, message);
    PUT_LIT(out, "}");
}

/* ---- JWT header and claims ------------------------------------------------------------- */

/* 2^53: the largest magnitude a double holds exactly; NumericDates beyond it are refused. */
#define JWT_DATE_LIMIT 9007199254740992.0


/* 1 when a string in p[0..n) holds the escape \u0000. Escapes exist only inside
 * strings, so a plain scan that skips escaped characters is exact. */
static int has_nul_escape(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] != '\\')
            continue;
        if (p[i + 1] == 'u' && n - i >= 6 && memcmp(p + i + 2, "0000", 4) == 0)
            return 1;
        i++; /* skip the escaped character (a second backslash included) */
    }
    return 0;
}

/* 1 when two members of obj share a name. Bounded by CHAT_ENV_MAX_KEYS (checked before). */
static int has_duplicate_keys(const cJSON *obj)
{
    for (const cJSON *a = obj->child; a != NULL; a = a->next)
        for (const cJSON *b = a->next; b != NULL; b = b->next)
            if (a->string != NULL && b->string != NULL && strcmp(a->string, b->string) == 0)
                return 1;
    return 0;
}

/* Checks the bytes, parses them into one object and refuses duplicate keys. On success *root
 * is the tree (the caller deletes it); on failure *why is set and no tree is kept. */
static int jwt_parse_object(const char *p, size_t n, cJSON **root, const char **why)
{
    chat_env_in_t scratch;
    int rc;

    *root = NULL;
    memset(&scratch, 0, sizeof(scratch));
    if (p != NULL && !chat_utf8_valid((const unsigned char *)p, n)) {
        *why = "not valid UTF-8";
        return CHAT_EBADJSON;
    }
    /* a raw 0x00 byte is JSON nowhere: cJSON skips it as whitespace between tokens and cuts a
     * string at it */
    if (p != NULL && (has_nul_escape(p, n) || memchr(p, '\0', n) != NULL)) {
        *why = "a string holds \\u0000 or a NUL byte";
        return CHAT_EBADREQ;
    }
    if ((rc = parse_object(p, n, &jwt_shape, &scratch, root)) != 0) {
        *why = scratch.error;
        return rc;
    }
    if (has_duplicate_keys(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        *why = "duplicate member names";
        return CHAT_EBADREQ;
    }
    return 0;
}

int chat_env_parse_jwt_header(const char *p, size_t n, chat_jwt_header_t *out)
{
    cJSON *root;
    chat_str_t alg, kid;
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = jwt_parse_object(p, n, &root, &out->error)) != 0)
        return rc;
    rc = CHAT_EBADREQ;
    if (get_string(root, "alg", &alg) != 0 || alg.p == NULL) {
        out->error = "header 'alg' must be a string";
        goto done;
    }
    if (alg.len == 0 || alg.len > CHAT_JWT_MAX_ALG) {
        out->error = "header 'alg' is empty or too long";
        goto done;
    }
    if (get_string(root, "kid", &kid) != 0) {
        out->error = "header 'kid' must be a string";
        goto done;
    }
    if (kid.p != NULL && kid.len > CHAT_JWT_MAX_KID) {
        out->error = "header 'kid' is too long";
        goto done;
    }
    memcpy(out->alg, alg.p, alg.len);
    if (kid.p != NULL) {
        memcpy(out->kid, kid.p, kid.len);
        out->has_kid = 1;
    }
    out->has_crit = cJSON_GetObjectItemCaseSensitive(root, "crit") != NULL;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

/* Copies the string claim `key` (absent: *dst stays NULL). max == 0: no length limit. */
static int claim_string(const cJSON *root, const char *key, size_t max, char **dst,
                        const char **why, const char *bad)
{
    chat_str_t v;

    if (get_string(root, key, &v) != 0 || (v.p != NULL && max > 0 && v.len > max)) {
        *why = bad;
        return CHAT_EBADREQ;
    }
    if (v.p != NULL)
        *dst = chat_xstrndup(v.p, v.len);
    return 0;
}

/* Copies the strings of array `arr` (at most max_n entries, each non-empty when nonempty is set
 * and at most max_len bytes) into a new *dst of *n entries. */
static int claim_string_array(const cJSON *arr, size_t max_n, size_t max_len, int nonempty,
                              char ***dst, size_t *n)
{
    int count = cJSON_GetArraySize(arr);
    const cJSON *item;
    size_t i = 0;

    if (count < 0 || (size_t)count > max_n)
        return CHAT_EBADREQ;
    cJSON_ArrayForEach(item, arr)
    {
        size_t len;
        if (!cJSON_IsString(item) || item->valuestring == NULL)
            return CHAT_EBADREQ;
        len = strlen(item->valuestring);
        if (len > max_len || (nonempty && len == 0))
            return CHAT_EBADREQ;
    }
    *dst = chat_xcalloc((size_t)count, sizeof(char *));
    cJSON_ArrayForEach(item, arr)
    {
        (*dst)[i++] = chat_xstrndup(item->valuestring, strlen(item->valuestring));
    }
    *n = i;
    return 0;
}

/* Reads the NumericDate `key` (absent: *has stays 0). round_up picks ceil over floor. */
static int claim_date(const cJSON *root, const char *key, int round_up, int64_t *dst, int *has)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    double d;
    int64_t t;

    if (item == NULL)
        return 0;
    if (!cJSON_IsNumber(item))
        return CHAT_EBADREQ;
    d = item->valuedouble;
    if (!(d >= -JWT_DATE_LIMIT && d <= JWT_DATE_LIMIT)) /* also false for NaN */
        return CHAT_EBADREQ;
    t = (int64_t)d; /* truncates toward zero */
    if (round_up && (double)t < d)
        t++;
    else if (!round_up && (double)t > d)
        t--;
    *dst = t;
    *has = 1;
    return 0;
}

static int claims_fail(chat_jwt_claims_t *out, const char *why)
{
    chat_env_jwt_claims_dispose(out);
    out->error = why;
    return CHAT_EBADREQ;
}

int chat_env_parse_jwt_claims(const char *p, size_t n, chat_jwt_claims_t *out)
{
    const cJSON *aud, *rooms;
    const char *why = NULL;
    cJSON *root;
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = jwt_parse_object(p, n, &root, &out->error)) != 0)
        return rc;
    if (claim_string(root, "sub", CHAT_JWT_MAX_SUB, &out->sub, &why,
                     "claim 'sub' must be a string of at most 256 bytes") != 0 ||
        claim_string(root, "name", CHAT_JWT_MAX_NAME, &out->name, &why,
                     "claim 'name' must be a string of at most 256 bytes") != 0 ||
        claim_string(root, "iss", 0, &out->iss, &why, "claim 'iss' must be a string") != 0)
        goto fail;

    aud = cJSON_GetObjectItemCaseSensitive(root, "aud");
    if (aud != NULL) {
        out->has_aud = 1;
        why = "claim 'aud' must be a string or an array of at most 64 strings";
        if (cJSON_IsString(aud) && aud->valuestring != NULL) {
            out->aud = chat_xcalloc(1, sizeof(char *));
            out->aud[0] = chat_xstrndup(aud->valuestring, strlen(aud->valuestring));
            out->naud = 1;
        } else if (!cJSON_IsArray(aud) || claim_string_array(aud, CHAT_JWT_MAX_AUD, SIZE_MAX, 0,
                                                             &out->aud, &out->naud) != 0) {
            goto fail;
        }
    }

    rooms = cJSON_GetObjectItemCaseSensitive(root, "rooms");
    if (rooms != NULL) {
        out->has_rooms = 1;
        why = "claim 'rooms' must be an array of at most 256 non-empty strings of at most 256 "
              "bytes";
        if (!cJSON_IsArray(rooms) ||
            claim_string_array(rooms, CHAT_JWT_MAX_ROOMS, CHAT_JWT_MAX_ROOM, 1, &out->rooms,
                               &out->nrooms) != 0)
            goto fail;
    }

    why = "claims 'exp', 'nbf' and 'iat' must be numbers within +-2^53";
    if (claim_date(root, "exp", 0, &out->exp, &out->has_exp) != 0 ||
        claim_date(root, "nbf", 1, &out->nbf, &out->has_nbf) != 0 ||
        claim_date(root, "iat", 1, &out->iat, &out->has_iat) != 0)
        goto fail;
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    return claims_fail(out, why);
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void chat_env_jwt_claims_dispose(chat_jwt_claims_t *c)
{
    if (c == NULL)
        return;
    free(c->sub);
    free(c->name);
    free(c->iss);
    free_strings(c->aud, c->naud);
    free_strings(c->rooms, c->nrooms);
    memset(c, 0, sizeof(*c));
}

/* ---- relayed envelopes ------------------------------------------------------------------ */

/* The longest fixed part of a relayed envelope: {"type":"chat","room":"","id":"","user":"",
 * "name":"","text":"","ts":} (the system one with "leave" is as long) is 69 bytes, and
 * ,"seq":,"epoch":"" 18 more: 87, plus 20 digits for ts and 20 for seq. */
#define RELAYED_OVERHEAD 128
#define RELAYED_TS_MAX   9007199254740992.0 /* 2^53 */

enum { RK_CHAT = 1u << 0, RK_TYPING = 1u << 1, RK_SYSTEM = 1u << 2, RK_ALL = 7u };

/* What a field check may look at: the text (for numbers read exactly) and the node's limit. */
typedef struct relayed_ctx {
    const char *p;
    size_t n;
    const cJSON *root; /* its '{' is p[0] */
    size_t max_text;
    uint64_t seq; /* set by valid_seq() */
} relayed_ctx_t;

static int str_len_in(const cJSON *v, size_t min, size_t max)
{
    size_t len;
    if (!cJSON_IsString(v) || v->valuestring == NULL)
        return 0;
    len = strlen(v->valuestring); /* the decoded length: NULs were refused before */
    return len >= min && len <= max;
}

static int valid_id(const cJSON *v, relayed_ctx_t *cx)
{
    return str_len_in(v, 1, CHAT_ENV_RELAYED_MAX_ID);
}

static int valid_user(const cJSON *v, relayed_ctx_t *cx)
{
    return str_len_in(v, 1, CHAT_JWT_MAX_SUB);
}

static int valid_name(const cJSON *v, relayed_ctx_t *cx)
{
    return str_len_in(v, 0, CHAT_JWT_MAX_NAME);
}

static int valid_text(const cJSON *v, relayed_ctx_t *cx)
{
    return str_len_in(v, 1, cx->max_text);
}

static int valid_event(const cJSON *v, relayed_ctx_t *cx)
{
    return cJSON_IsString(v) && v->valuestring != NULL &&
           (strcmp(v->valuestring, "join") == 0 || strcmp(v->valuestring, "leave") == 0);
}

/* An integer in 0..2^53 (chat_wall_ms(), written with %PRId64 by put_int()). */
static int valid_ts(const cJSON *v, relayed_ctx_t *cx)
{
    double d;
    if (!cJSON_IsNumber(v))
        return 0;
    d = v->valuedouble;
    return d >= 0 && d <= RELAYED_TS_MAX && (double)(int64_t)d == d; /* false for NaN */
}

/* A history seq, 1..2^53, read from the text: a double would take 2^53 + 1 for 2^53. */
static int valid_seq(const cJSON *v, relayed_ctx_t *cx)
{
    return cJSON_IsNumber(v) &&
           exact_uint(cx->p, cx->n, member_value_at(cx->p, cx->n, 0, cx->root, v), 1, INT_2_53,
                      &cx->seq);
}

static int valid_epoch(const cJSON *v, relayed_ctx_t *cx)
{
    return cJSON_IsString(v) && v->valuestring != NULL &&
           chat_epoch_valid(chat_cstr(v->valuestring));
}

/* Every key a relayed envelope may have, the envelopes that carry it and those that require it
 * (as the builders write them). type and room are checked before, with reasons of their own.
 * seq and epoch (a chat stored in the history) come together or not at all. */
static const struct relayed_field {
    const char *key;
    unsigned carried, required; /* RK_* */
    int (*valid)(const cJSON *v, relayed_ctx_t *cx);
} relayed_fields[] = {
    {"type", RK_ALL, RK_ALL, NULL},
    {"room", RK_ALL, RK_ALL, NULL},
    {"id", RK_CHAT, RK_CHAT, valid_id},
    {"event", RK_SYSTEM, RK_SYSTEM, valid_event},
    {"user", RK_ALL, RK_ALL, valid_user},
    {"name", RK_ALL, 0, valid_name},
    {"text", RK_CHAT, RK_CHAT, valid_text},
    {"ts", RK_CHAT | RK_SYSTEM, RK_CHAT | RK_SYSTEM, valid_ts},
    {"seq", RK_CHAT, 0, valid_seq},
    {"epoch", RK_CHAT, 0, valid_epoch},
};

#define NRELAYED_FIELDS (sizeof(relayed_fields) / sizeof(relayed_fields[0]))
enum { RF_SEQ = 1u << 8, RF_EPOCH = 1u << 9 }; /* their bits in relayed_fields_ok()'s `seen` */
_Static_assert(NRELAYED_FIELDS == 10, "RF_SEQ and RF_EPOCH are the indexes of seq and epoch");

/* 1 when every member of root is a key of kind rk, at most once, of a valid value, every key rk
 * requires is there, and seq and epoch are both there or both absent. *epoch: the epoch member
 * (or NULL). */
static int relayed_fields_ok(const cJSON *root, unsigned rk, relayed_ctx_t *cx, const cJSON **epoch)
{
    unsigned seen = 0;
    *epoch = NULL;
    for (const cJSON *c = root->child; c != NULL; c = c->next) {
        size_t k = 0;
        if (c->string == NULL)
            return 0;
        while (k < NRELAYED_FIELDS && strcmp(c->string, relayed_fields[k].key) != 0)
            k++;
        if (k == NRELAYED_FIELDS || !(relayed_fields[k].carried & rk) || (seen & (1u << k)))
            return 0;
        if (relayed_fields[k].valid != NULL && !relayed_fields[k].valid(c, cx))
            return 0;
        if ((1u << k) == RF_EPOCH)
            *epoch = c;
        seen |= 1u << k;
    }
    for (size_t k = 0; k < NRELAYED_FIELDS; k++)
        if ((relayed_fields[k].required & rk) && !(seen & (1u << k)))
            return 0;
    return !(seen & RF_SEQ) == !(seen & RF_EPOCH);
}

/* 1 when the first member `key` of root is a string equal to want. */
static int string_member_is(const cJSON *root, const char *key, chat_str_t want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsString(v) && v->valuestring != NULL &&
           chat_str_eq(chat_cstr(v->valuestring), want);
}

size_t chat_env_relayed_max_bytes(size_t max_text_bytes)
{
    const size_t strings = CHAT_ROOM_NAME_MAX + CHAT_ENV_RELAYED_MAX_ID + CHAT_JWT_MAX_SUB +
                           CHAT_JWT_MAX_NAME + CHAT_EPOCH_MAX;
    if (max_text_bytes > (SIZE_MAX - RELAYED_OVERHEAD) / 6 - strings)
        return SIZE_MAX;
    return 6 * (max_text_bytes + strings) + RELAYED_OVERHEAD;
}

/* 1 when p[0..n) holds a byte below 0x20. Builders write none: they escape every control
 * character inside strings and put no whitespace between tokens, where cJSON would take any such
 * byte (NUL included) as whitespace. */
static int has_control_byte(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20)
            return 1;
    return 0;
}

static int relayed_fail(chat_wire_reason_t *reason, chat_wire_reason_t r)
{
    *reason = r;
    return CHAT_EMALFORMED;
}

int chat_env_check_relayed(chat_str_t json, chat_wire_kind_t kind, chat_str_t room,
                           size_t max_text_bytes, chat_wire_hdr_t *h, chat_wire_reason_t *reason)
{
    relayed_ctx_t cx = {json.p, json.len, NULL, max_text_bytes, 0};
    const cJSON *epoch = NULL;
    const char *type;
    unsigned rk;
    chat_env_in_t scratch;
    str_scan_t scan;
    cJSON *root = NULL;
    chat_wire_reason_t r;

    switch (kind) {
    case CHAT_WIRE_CHAT:
        rk = RK_CHAT;
        type = "chat";
        break;
    case CHAT_WIRE_TYPING:
        rk = RK_TYPING;
        type = "typing";
        break;
    case CHAT_WIRE_SYSTEM:
        rk = RK_SYSTEM;
        type = "system";
        break;
    default:
        return relayed_fail(reason, CHAT_WIRE_R_KIND);
    }
    if (json.len > chat_env_relayed_max_bytes(max_text_bytes))
        return relayed_fail(reason, CHAT_WIRE_R_SIZE);
    if (json.len > 0 && !chat_utf8_valid((const unsigned char *)json.p, json.len))
        return relayed_fail(reason, CHAT_WIRE_R_UTF8);
    /* exactly one object, '{' first and '}' last: builders write no whitespace around it */
    memset(&scratch, 0, sizeof(scratch));
    if (json.len < 2 || json.p[0] != '{' || json.p[json.len - 1] != '}' ||
        parse_object(json.p, json.len, &client_shape, &scratch, &root) != 0)
        return relayed_fail(reason, CHAT_WIRE_R_JSON);
    cx.root = root;
    scan_strings(json.p, json.len, &scan);
    if (has_control_byte(json.p, json.len))
        r = CHAT_WIRE_R_JSON;
    else if (scan.nul_key || scan.nul_members != 0)
        r = CHAT_WIRE_R_FIELDS; /* before type and room: cJSON would read "chat\u0000x" as "chat" */
    else if (!string_member_is(root, "type", chat_cstr(type)))
        r = CHAT_WIRE_R_TYPE;
    else if (room.p == NULL || !string_member_is(root, "room", room))
        r = CHAT_WIRE_R_ROOM;
    else if (!relayed_fields_ok(root, rk, &cx, &epoch))
        r = CHAT_WIRE_R_FIELDS;
    else
        r = CHAT_WIRE_NREASONS;
    if (r == CHAT_WIRE_NREASONS && h != NULL) {
        size_t len = epoch != NULL ? strlen(epoch->valuestring) : 0; /* <= CHAT_EPOCH_MAX */
        h->seq = epoch != NULL ? cx.seq : 0;
        h->epoch_len = len;
        if (len > 0)
            memcpy(h->epoch, epoch->valuestring, len);
        h->epoch[len] = '\0';
    }
    cJSON_Delete(root);
    return r == CHAT_WIRE_NREASONS ? 0 : relayed_fail(reason, r);
}
