/* tests/fuzz/fuzz_envelope.c - libFuzzer target for common/envelope.h. The input is one JSON
 * text, exactly as a WebSocket payload (or a decoded JWT half) arrives: not NUL-terminated, and
 * libFuzzer's buffer is exactly `size` bytes, so ASan sees any read past it.
 * chat_env_parse(): a documented return code; no tree on CHAT_EBADJSON, a tree on success and on
 * type errors (none only for a shape refusal); an error string exactly on failure; the fields
 * each type promises and no others; a cid of at most CHAT_ENV_MAX_CID bytes; strings without NUL
 * bytes; since, before and limit only on the types that take them, in range (an epoch that is
 * chat_epoch_valid(), a limit clamped to CHAT_ENV_HISTORY_MAX). Trailing JSON whitespace never
 * changes the verdict. Then every builder runs on the parsed strings and its output must parse
 * again: chat and typing back into the same room and text, and a chat_open + seq + epoch one
 * too, which chat_env_check_relayed() accepts with that seq and epoch (when its strings are
 * UTF-8 and its text is not empty); error, ack and rate_limited (types a client may not send)
 * into CHAT_EUNKNOWN_TYPE with the same cid; the others (history and presence included) into
 * valid objects. chat_env_free() always.
 * The same bytes also go to chat_env_check_relayed() as each kind (on the parsed room, else
 * "r"): a documented verdict, and on success a seq and epoch that go together, only on a chat.
 * The same bytes also go to the JWT header and claims parsers: documented codes, every bound of
 * envelope.h respected, nothing left allocated on failure, dispose always. */
#include <string.h>

#include "buf.h"
#include "envelope.h"
#include "err.h"
#include "names.h"
#include "str.h"
#include "utf8.h"
#include "wire.h"

#include "fuzz.h"

static void check_str(chat_str_t s)
{
    if (s.p != NULL)
        FUZZ_CHECK(memchr(s.p, '\0', s.len) == NULL && s.p[s.len] == '\0');
}

/* p == NULL (absent) reads back as "" where a builder writes every field */
static int same_or_empty(chat_str_t got, chat_str_t sent)
{
    return got.p != NULL && chat_str_eq(got, sent.p != NULL ? sent : CHAT_LIT(""));
}

static int absent(chat_str_t s)
{
    return s.p == NULL;
}

static void check_parse(int rc, const chat_env_in_t *in, const struct cJSON *doc)
{
    FUZZ_CHECK(rc == 0 || rc == CHAT_EBADJSON || rc == CHAT_EBADREQ || rc == CHAT_EUNKNOWN_TYPE);
    /* no tree: not JSON, or refused by shape (depth, keys) before one was built */
    FUZZ_CHECK(rc != CHAT_EBADJSON || doc == NULL);
    FUZZ_CHECK((rc != 0 && rc != CHAT_EUNKNOWN_TYPE) || doc != NULL);
    if (doc == NULL) {
        FUZZ_CHECK(rc == CHAT_EBADJSON || rc == CHAT_EBADREQ);
        FUZZ_CHECK(absent(in->room) && absent(in->text) && absent(in->cid) && absent(in->token));
    }
    FUZZ_CHECK((in->error != NULL) == (rc != 0));
    check_str(in->room);
    check_str(in->text);
    check_str(in->cid);
    check_str(in->token);
    check_str(in->since_epoch);
    if (in->cid.p != NULL)
        FUZZ_CHECK(in->cid.len <= CHAT_ENV_MAX_CID);
    /* since: join only, whole; before and limit: history only, in range */
    FUZZ_CHECK(in->has_since ? in->type == CHAT_ENV_JOIN && in->since_seq <= ((uint64_t)1 << 53) &&
                                   chat_epoch_valid(in->since_epoch)
                             : in->since_seq == 0 && absent(in->since_epoch));
    FUZZ_CHECK(in->has_before ? in->type == CHAT_ENV_HISTORY && in->before >= 1 &&
                                    in->before <= ((uint64_t)1 << 53)
                              : in->before == 0);
    FUZZ_CHECK(in->limit <= CHAT_ENV_HISTORY_MAX &&
               (in->limit == 0 || in->type == CHAT_ENV_HISTORY));
    if (rc != 0)
        return;
    switch (in->type) {
    case CHAT_ENV_JOIN:
    case CHAT_ENV_LEAVE:
        FUZZ_CHECK(!absent(in->room) && absent(in->text) && absent(in->token));
        break;
    case CHAT_ENV_CHAT:
        FUZZ_CHECK(!absent(in->text) && absent(in->token));
        break;
    case CHAT_ENV_TYPING:
        FUZZ_CHECK(absent(in->text) && absent(in->token));
        break;
    case CHAT_ENV_PING:
        FUZZ_CHECK(absent(in->room) && absent(in->text) && absent(in->token));
        break;
    case CHAT_ENV_REFRESH:
        FUZZ_CHECK(!absent(in->token) && absent(in->room) && absent(in->text));
        break;
    case CHAT_ENV_HISTORY:
    case CHAT_ENV_PRESENCE:
        FUZZ_CHECK(!absent(in->room) && absent(in->text) && absent(in->token));
        FUZZ_CHECK(in->type == CHAT_ENV_HISTORY || (!in->has_before && in->limit == 0));
        break;
    case CHAT_ENV_NTYPES:
    default:
        FUZZ_CHECK(!"a type this target does not know returned as success: update it");
    }
}

/* Parses what a builder wrote and empties b; returns the verdict with *out filled, its room,
 * text and cid copied into keep (NUL-separated), and the tree freed. */
static int reparse(chat_buf_t *b, chat_env_in_t *out, chat_buf_t *keep)
{
    struct cJSON *doc = NULL;
    int rc = chat_env_parse(b->p, b->len, out, &doc);
    check_parse(rc, out, doc);
    FUZZ_CHECK(rc != CHAT_EBADJSON); /* builders write valid JSON objects */
    chat_buf_reset(keep);
    chat_str_t *fields[3] = {&out->room, &out->text, &out->cid};
    size_t offs[3];
    for (int i = 0; i < 3; i++) {
        offs[i] = keep->len;
        if (fields[i]->p != NULL)
            chat_buf_append(keep, fields[i]->p, fields[i]->len);
        chat_buf_append(keep, "", 1);
    }
    for (int i = 0; i < 3; i++)
        if (fields[i]->p != NULL)
            fields[i]->p = keep->p + offs[i];
    out->token = CHAT_STR_NULL;
    out->since_epoch = CHAT_STR_NULL;
    chat_env_free(doc);
    chat_buf_reset(b);
    return rc;
}

/* A chat as the history stores it: chat_open + seq + MID + epoch + END parses as a chat with
 * the same room and text, passes the relayed check with that seq and epoch, and goes into a
 * history envelope that parses as a JSON object too. */
static void rebuild_stored(const chat_env_in_t *in)
{
    chat_buf_t b = CHAT_BUF_INIT, keep = CHAT_BUF_INIT, hist = CHAT_BUF_INIT;
    chat_env_in_t again;
    chat_wire_hdr_t h;
    chat_wire_reason_t why = CHAT_WIRE_NREASONS;
    uint64_t seq = in->since_seq != 0 ? in->since_seq : 1;
    chat_str_t epoch = in->has_since ? in->since_epoch : CHAT_LIT("Ep0ch_-");
    chat_str_t room = in->room.p != NULL ? in->room : CHAT_LIT("");

    chat_env_build_chat_open(&b, &(chat_env_chat_t){.room = in->room,
                                                    .id = CHAT_LIT("n1-42"),
                                                    .user = CHAT_LIT("u"),
                                                    .text = in->text,
                                                    .ts = 1700000000000});
    chat_buf_appendf(&b, "%llu", (unsigned long long)seq);
    chat_buf_append(&b, CHAT_ENV_SEQ_MID, sizeof(CHAT_ENV_SEQ_MID) - 1);
    chat_buf_append(&b, epoch.p, epoch.len);
    chat_buf_append(&b, CHAT_ENV_SEQ_END, sizeof(CHAT_ENV_SEQ_END) - 1);

    memset(&h, 0, sizeof(h));
    int rc = chat_env_check_relayed(chat_buf_str(&b), CHAT_WIRE_CHAT, room, 1u << 20, &h, &why);
    int utf8 = room.len == 0 || chat_utf8_valid((const unsigned char *)room.p, room.len);
    utf8 = utf8 &&
           (in->text.len == 0 || chat_utf8_valid((const unsigned char *)in->text.p, in->text.len));
    if (utf8 && in->text.len > 0)
        FUZZ_CHECK(rc == 0);
    if (rc == 0) {
        FUZZ_CHECK(h.seq == seq && h.epoch_len == epoch.len &&
                   memcmp(h.epoch, epoch.p, epoch.len) == 0 && h.epoch[h.epoch_len] == '\0');
        chat_env_build_history(&hist, room, epoch, seq,
                               (chat_str_t[]){chat_buf_str(&b), chat_buf_str(&b)}, 2);
        /* the answer reads back as a history request for its room (seq, epoch and messages
         * are not fields of a request) */
        FUZZ_CHECK(reparse(&hist, &again, &keep) == 0 && again.type == CHAT_ENV_HISTORY);
        FUZZ_CHECK(same_or_empty(again.room, room) && !again.has_before && again.limit == 0);
    } else {
        FUZZ_CHECK(rc == CHAT_EMALFORMED);
        FUZZ_CHECK(why == CHAT_WIRE_R_UTF8 || why == CHAT_WIRE_R_FIELDS);
    }
    FUZZ_CHECK(reparse(&b, &again, &keep) == 0 && again.type == CHAT_ENV_CHAT);
    FUZZ_CHECK(same_or_empty(again.room, in->room) && same_or_empty(again.text, in->text));
    chat_buf_free(&b);
    chat_buf_free(&keep);
    chat_buf_free(&hist);
}

static void rebuild(const chat_env_in_t *in)
{
    chat_buf_t b = CHAT_BUF_INIT, keep = CHAT_BUF_INIT;
    chat_env_in_t again;
    const chat_str_t id = CHAT_LIT("n1-42"), user = CHAT_LIT("u\"ser\\\n");
    const char *message = in->error ? in->error : "ok";

    /* chat: room and text come back (absent ones as "") */
    chat_env_build_chat(&b, &(chat_env_chat_t){.room = in->room,
                                               .id = id,
                                               .user = in->cid,
                                               .name = in->token,
                                               .text = in->text,
                                               .ts = INT64_MIN});
    FUZZ_CHECK(reparse(&b, &again, &keep) == 0 && again.type == CHAT_ENV_CHAT);
    FUZZ_CHECK(same_or_empty(again.room, in->room) && same_or_empty(again.text, in->text));
    FUZZ_CHECK(again.cid.p == NULL);

    /* typing: the room comes back */
    chat_env_build_typing(&b, in->room, user, in->text);
    FUZZ_CHECK(reparse(&b, &again, &keep) == 0 && again.type == CHAT_ENV_TYPING);
    FUZZ_CHECK(same_or_empty(again.room, in->room));

    /* error, ack, rate_limited: not client types, but the cid is echoed intact */
    chat_env_build_error(&b, "bad_request", message, in->cid, in->room);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    FUZZ_CHECK(in->cid.p == NULL ? again.cid.p == NULL : chat_str_eq(again.cid, in->cid));
    chat_env_build_ack(&b, in->cid, in->room, id, 1, UINT64_MAX);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    FUZZ_CHECK(same_or_empty(again.cid, in->cid));
    chat_env_build_rate_limited(&b, UINT64_MAX / 2, in->cid);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    FUZZ_CHECK(in->cid.p == NULL ? again.cid.p == NULL : chat_str_eq(again.cid, in->cid));

    /* the rest must at least be JSON objects with a string type (the refusal has none) */
    chat_env_build_joined(&b, in->room,
                          &(chat_env_joined_t){.has_seq = 1,
                                               .seq = in->since_seq,
                                               .epoch = in->text,
                                               .has_recovered = in->has_since,
                                               .recovered = in->has_before});
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    chat_env_presence_user_t users[2] = {{in->room, in->limit}, {in->cid, UINT64_MAX}};
    chat_env_build_presence(&b, in->text, in->before, users, 2, in->has_since);
    FUZZ_CHECK(reparse(&b, &again, &keep) == 0 && again.type == CHAT_ENV_PRESENCE);
    FUZZ_CHECK(same_or_empty(again.room, in->text));
    chat_env_build_left(&b, in->text);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    chat_env_build_welcome(&b, in->cid, in->token, in->room, in->text);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    chat_env_build_system(&b, in->room, "join", in->text, in->cid, INT64_MAX);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    chat_env_build_token_expiring(&b, INT64_MIN);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    chat_env_build_refreshed(&b, INT64_MAX);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    chat_env_build_pong(&b);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EUNKNOWN_TYPE);
    chat_env_build_refusal(&b, "bad_request", message);
    FUZZ_CHECK(reparse(&b, &again, &keep) == CHAT_EBADREQ);

    rebuild_stored(in);

    chat_buf_free(&b);
    chat_buf_free(&keep);
}

static void check_cstr(const char *s, size_t max)
{
    FUZZ_CHECK(s != NULL && strlen(s) <= max);
}

static void fuzz_jwt(const char *p, size_t n)
{
    chat_jwt_header_t h;
    int rc = chat_env_parse_jwt_header(p, n, &h);
    FUZZ_CHECK(rc == 0 || rc == CHAT_EBADJSON || rc == CHAT_EBADREQ);
    FUZZ_CHECK((rc != 0) == (h.error != NULL));
    if (rc == 0) {
        FUZZ_CHECK(h.alg[0] != '\0' && memchr(h.alg, '\0', sizeof(h.alg)) != NULL);
        FUZZ_CHECK(memchr(h.kid, '\0', sizeof(h.kid)) != NULL);
        FUZZ_CHECK(h.has_kid || h.kid[0] == '\0');
    }

    chat_jwt_claims_t c;
    rc = chat_env_parse_jwt_claims(p, n, &c);
    FUZZ_CHECK(rc == 0 || rc == CHAT_EBADJSON || rc == CHAT_EBADREQ);
    FUZZ_CHECK((rc != 0) == (c.error != NULL));
    if (rc != 0) { /* nothing stays allocated */
        FUZZ_CHECK(c.sub == NULL && c.name == NULL && c.iss == NULL);
        FUZZ_CHECK(c.aud == NULL && c.rooms == NULL);
    } else {
        if (c.sub)
            check_cstr(c.sub, CHAT_JWT_MAX_SUB);
        if (c.name)
            check_cstr(c.name, CHAT_JWT_MAX_NAME);
        if (c.iss)
            check_cstr(c.iss, n);
        FUZZ_CHECK(c.has_aud ? c.naud <= CHAT_JWT_MAX_AUD : c.aud == NULL && c.naud == 0);
        FUZZ_CHECK(c.naud == 0 || c.aud != NULL);
        for (size_t i = 0; i < c.naud; i++)
            check_cstr(c.aud[i], n);
        FUZZ_CHECK(c.has_rooms ? c.nrooms <= CHAT_JWT_MAX_ROOMS : c.rooms == NULL && c.nrooms == 0);
        FUZZ_CHECK(c.nrooms == 0 || c.rooms != NULL);
        for (size_t i = 0; i < c.nrooms; i++) {
            check_cstr(c.rooms[i], CHAT_JWT_MAX_ROOM);
            FUZZ_CHECK(c.rooms[i][0] != '\0');
        }
        /* NumericDates beyond +-2^53 are refused */
        const int64_t lim = (int64_t)1 << 53;
        FUZZ_CHECK(!c.has_exp || (c.exp >= -lim && c.exp <= lim));
        FUZZ_CHECK(!c.has_nbf || (c.nbf >= -lim && c.nbf <= lim));
        FUZZ_CHECK(!c.has_iat || (c.iat >= -lim && c.iat <= lim));
    }
    chat_env_jwt_claims_dispose(&c);
    FUZZ_CHECK(c.sub == NULL && c.aud == NULL && c.rooms == NULL);
    chat_env_jwt_claims_dispose(&c); /* twice is fine: the struct was zeroed */
}

/* The input as the JSON part of a broker message of each kind, on the room it names. */
static void fuzz_relayed(const char *p, size_t n)
{
    static const chat_wire_kind_t kinds[] = {CHAT_WIRE_CHAT, CHAT_WIRE_TYPING, CHAT_WIRE_SYSTEM};
    chat_buf_t room = CHAT_BUF_INIT;
    chat_env_in_t in;
    struct cJSON *doc = NULL;

    if (chat_env_parse(p, n, &in, &doc) == 0 && in.room.p != NULL)
        chat_buf_append(&room, in.room.p, in.room.len);
    else
        chat_buf_append(&room, "r", 1);
    chat_env_free(doc);
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        chat_wire_hdr_t h;
        chat_wire_reason_t why = CHAT_WIRE_NREASONS;
        memset(&h, 0x5a, sizeof(h)); /* what success must overwrite */
        int rc =
            chat_env_check_relayed(chat_str(p, n), kinds[k], chat_buf_str(&room), 4096, &h, &why);
        FUZZ_CHECK(rc == 0 || rc == CHAT_EMALFORMED);
        FUZZ_CHECK((rc == 0) == (why == CHAT_WIRE_NREASONS));
        if (rc != 0) {
            FUZZ_CHECK(chat_wire_reason_name(why) != NULL);
            continue;
        }
        FUZZ_CHECK(n <= chat_env_relayed_max_bytes(4096));
        FUZZ_CHECK(h.epoch_len <= CHAT_EPOCH_MAX && h.epoch[h.epoch_len] == '\0');
        FUZZ_CHECK(strlen(h.epoch) == h.epoch_len);
        FUZZ_CHECK((h.seq == 0) == (h.epoch_len == 0));
        FUZZ_CHECK(h.seq <= ((uint64_t)1 << 53));
        FUZZ_CHECK(h.epoch_len == 0 || chat_epoch_valid(chat_str(h.epoch, h.epoch_len)));
        FUZZ_CHECK(kinds[k] == CHAT_WIRE_CHAT || h.seq == 0);
        /* h may be NULL: the same verdict */
        FUZZ_CHECK(chat_env_check_relayed(chat_str(p, n), kinds[k], chat_buf_str(&room), 4096, NULL,
                                          &why) == 0);
    }
    chat_buf_free(&room);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    chat_env_in_t in, in2;
    struct cJSON *doc = NULL, *doc2 = NULL;
    int rc = chat_env_parse((const char *)data, size, &in, &doc);
    check_parse(rc, &in, doc);

    /* JSON whitespace after the value changes nothing */
    char *padded = malloc(size + 2);
    FUZZ_CHECK(padded != NULL);
    if (size)
        memcpy(padded, data, size);
    memcpy(padded + size, " \n", 2);
    int rc2 = chat_env_parse(padded, size + 2, &in2, &doc2);
    check_parse(rc2, &in2, doc2);
    FUZZ_CHECK(rc2 == rc || (size == 0 && rc2 == CHAT_EBADJSON));
    if (rc == 0)
        FUZZ_CHECK(in2.type == in.type && chat_str_eq(in2.room, in.room) &&
                   chat_str_eq(in2.text, in.text) && chat_str_eq(in2.cid, in.cid) &&
                   chat_str_eq(in2.token, in.token) && in2.has_since == in.has_since &&
                   in2.since_seq == in.since_seq && chat_str_eq(in2.since_epoch, in.since_epoch) &&
                   in2.has_before == in.has_before && in2.before == in.before &&
                   in2.limit == in.limit);
    chat_env_free(doc2);
    free(padded);

    if (doc != NULL)
        rebuild(&in);
    chat_env_free(doc);

    fuzz_jwt((const char *)data, size);
    fuzz_relayed((const char *)data, size);
    return 0;
}
