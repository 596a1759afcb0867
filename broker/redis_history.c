/* broker/redis_history.c - the Redis broker's history: appends and reads as EVALSHA of the scripts
 * in redis_scripts.c on the publisher link (see redis.c for the FIFO that matches replies to
 * them), SCRIPT LOAD on every connection and after a NOSCRIPT, and the strict check of every
 * reply: what comes from Redis is a trust boundary, so a reply of any other shape, a seq that is
 * not a plain decimal within 2^53, an epoch outside chat_epoch_valid, entry ids that are not
 * <seq>-0, strictly ordered and within the query, a dedupe value not of the form
 * <seq>:<epoch>:<receipt> or a receipt too long answer CHAT_EBROKER (and a WARN, at most one per
 * second). Message bytes are opaque here. A NOSCRIPT (someone ran SCRIPT FLUSH) fails an append
 * in order (sending it again would reorder completions and messages) and sends SCRIPT LOAD again
 * (once while one is in flight); a read is sent again once as EVAL with the script's body. The
 * keys and the arguments of a command are built in one scratch buffer: no allocation per append
 * here (redis_link.c formats and queues each command). */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "names.h"
#include "redis_impl.h"

enum { SCRIPT_APPEND = 0, SCRIPT_READ = 1 };

static const char *const script_body[2] = {broker_redis_append_lua, broker_redis_read_lua};

int broker__redis_history_open(redis_broker_t *b, const char **why)
{
    for (int i = 0; i < 2; i++)
        if (broker_redis_script_sha(chat_cstr(script_body[i]), b->sha[i]) != 0) {
            *why = "cannot compute the SHA1 of a Lua script (libcrypto)";
            return CHAT_EINVAL;
        }
    snprintf(b->size_arg, sizeof(b->size_arg), "%zu", b->base.history_size);
    snprintf(b->ttl_arg, sizeof(b->ttl_arg), "%" PRIu64, b->base.history_ttl_ms);
    snprintf(b->dedupe_arg, sizeof(b->dedupe_arg), "%" PRIu64, b->base.dedupe_window_ms);
    b->entries = chat_xcalloc(b->base.history_size, sizeof(*b->entries));
    return 0;
}

typedef struct held_read {
    chat_list_t link;
    uint64_t tag, barrier; /* the canary that releases it */
    broker_history_result_t res;
    broker_history_entry_t entries[]; /* res.n, then the bytes of the epoch and the entries */
} held_read_t;

static void free_held(redis_broker_t *b)
{
    while (!chat_list_is_empty(&b->held_reads)) {
        held_read_t *h = chat_container_of(b->held_reads.next, held_read_t, link);
        chat_list_unlink(&h->link);
        free(h);
    }
}

void broker__redis_history_release(redis_broker_t *b, int all)
{
    while (!chat_list_is_empty(&b->held_reads) && !b->closed) {
        held_read_t *h = chat_container_of(b->held_reads.next, held_read_t, link);
        if (!all && h->barrier > b->canary_seen)
            return;
        chat_list_unlink(&h->link);
        broker__history_answered(&b->base, h->tag, &h->res);
        free(h);
    }
}

/* Answers a successful read after its barrier (see redis_impl.h): res is copied and a canary
 * published; when no canary can be published, answers at once. */
static void answer_after_barrier(redis_broker_t *b, uint64_t tag, const broker_history_result_t *res)
{
    char seq[24];
    if (!redis_link_ready(b->sub) || !redis_link_ready(b->pub)) {
        broker__history_answered(&b->base, tag, res);
        return;
    }
    size_t bytes = res->epoch.len;
    for (size_t i = 0; i < res->n; i++)
        bytes += res->entries[i].data.len;
    held_read_t *h = chat_xmalloc(sizeof(*h) + res->n * sizeof(h->entries[0]) + bytes);
    char *p = (char *)(h->entries + res->n);
    h->tag = tag;
    h->res = *res;
    memcpy(p, res->epoch.p, res->epoch.len);
    h->res.epoch = chat_str(p, res->epoch.len);
    p += res->epoch.len;
    for (size_t i = 0; i < res->n; i++) {
        chat_str_t d = res->entries[i].data;
        if (d.len)
            memcpy(p, d.p, d.len);
        h->entries[i] = (broker_history_entry_t){res->entries[i].seq, chat_str(p, d.len)};
        p += d.len;
    }
    h->res.entries = h->entries;
    snprintf(seq, sizeof(seq), "%" PRIu64, b->canary_sent + 1);
    const char *argv[3] = {"PUBLISH", b->canary, seq};
    size_t lens[3] = {7, strlen(b->canary), strlen(seq)};
    if (broker__redis_command(b, OP_PUBLISH, 0, NULL, 3, argv, lens) != 0) {
        broker__history_answered(&b->base, tag, &h->res);
        free(h);
        return;
    }
    b->canary_sent++;
    if (b->canary_waiting_since == 0) /* a canary that does not come back resets the link */
        b->canary_waiting_since = uv_now(b->loop);
    h->barrier = b->canary_sent;
    chat_list_insert_tail(&b->held_reads, &h->link);
}

void broker__redis_history_free(redis_broker_t *b)
{
    free_held(b);
    chat_buf_free(&b->keys);
    free(b->entries);
    b->entries = NULL;
}

void broker__redis_history_load_scripts(redis_broker_t *b)
{
    for (uint64_t i = 0; i < 2; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", script_body[i]};
        size_t lens[3] = {6, 4, strlen(script_body[i])};
        if (broker__redis_command(b, OP_LOAD, i, NULL, 3, argv, lens) != 0)
            return; /* the link fails on the next turn and loads them again once it is back */
        b->loads_in_flight++;
        b->base.stats.script_loads++;
    }
}

void broker__redis_history_load_reply(redis_broker_t *b, uint64_t which, redisReply *r)
{
    b->loads_in_flight--;
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR)
        broker__redis_warn(b, "SCRIPT LOAD refused", chat_str(r->str, r->len));
    else if (r->type != REDIS_REPLY_STRING || r->len != BROKER_SHA1_HEX ||
             memcmp(r->str, b->sha[which], BROKER_SHA1_HEX) != 0)
        broker__redis_warn(b, "SCRIPT LOAD answered another SHA1", CHAT_STR_NULL);
}

static int is_noscript(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= 8 &&
           memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* ---- keys and arguments --------------------------------------------------------------- */

/* Appends <prefix>{<topic>}<suffix>[<extra>] to b->keys and returns its offset. */
static size_t add_key(redis_broker_t *b, chat_str_t topic, const char *suffix, chat_str_t extra)
{
    size_t off = b->keys.len;
    chat_buf_append(&b->keys, b->prefix, b->prefix_len);
    chat_buf_append(&b->keys, "{", 1);
    chat_buf_append_str(&b->keys, topic);
    chat_buf_append(&b->keys, "}", 1);
    chat_buf_append(&b->keys, suffix, strlen(suffix));
    chat_buf_append_str(&b->keys, extra);
    return off;
}

/* argv[n] = p, lens[n] = len; returns n + 1. */
static int push(const char **argv, size_t *lens, int n, const char *p, size_t len)
{
    argv[n] = p;
    lens[n] = len;
    return n + 1;
}

static const char *arg_of(chat_str_t s) /* hiredis copies len bytes: never a NULL pointer */
{
    return s.p != NULL ? s.p : "";
}

/* ---- append ----------------------------------------------------------------------------- */

int broker__redis_history_append(broker_t *base, chat_str_t topic, const broker_append_t *m,
                                 uint64_t tag)
{
    redis_broker_t *b = (redis_broker_t *)base;
    char epoch[BROKER_EPOCH_NEW_LEN];
    const char *argv[15];
    size_t lens[15], off[4], end[4];
    int dedupe = broker__dedupes(base, m), n = 0;
    /* as publish(): without the subscriber link this node's own members would miss it */
    if (b->closed || !redis_link_ready(b->sub))
        return CHAT_EBROKER;
    chat_buf_reset(&b->keys);
    off[0] = add_key(b, topic, ":meta", CHAT_STR_NULL);
    end[0] = b->keys.len;
    off[1] = add_key(b, topic, ":history", CHAT_STR_NULL);
    end[1] = b->keys.len;
    off[2] = dedupe ? add_key(b, topic, ":dedupe:", m->dedupe_key) : b->keys.len;
    end[2] = b->keys.len;
    off[3] = b->keys.len; /* the channel */
    chat_buf_append(&b->keys, b->prefix, b->prefix_len);
    chat_buf_append(&b->keys, "room:", 5);
    chat_buf_append_str(&b->keys, topic);
    end[3] = b->keys.len;
    broker__new_epoch(base, epoch);
    n = push(argv, lens, n, "EVALSHA", 7);
    n = push(argv, lens, n, b->sha[SCRIPT_APPEND], BROKER_SHA1_HEX);
    n = push(argv, lens, n, dedupe ? "3" : "2", 1);
    for (int k = 0; k < 4; k++) {
        if (k == 2 && !dedupe)
            continue;
        n = push(argv, lens, n, b->keys.p + off[k], end[k] - off[k]);
    }
    n = push(argv, lens, n, epoch, sizeof(epoch));
    n = push(argv, lens, n, b->size_arg, strlen(b->size_arg));
    n = push(argv, lens, n, b->ttl_arg, strlen(b->ttl_arg));
    n = push(argv, lens, n, b->dedupe_arg, strlen(b->dedupe_arg));
    n = push(argv, lens, n, arg_of(m->receipt), m->receipt.len);
    for (int i = 0; i < 3; i++)
        n = push(argv, lens, n, arg_of(m->parts[i]), m->parts[i].len);
    return broker__redis_command(b, OP_APPEND, tag, NULL, n, argv, lens);
}

/* A seq as Redis holds it: 1 to 16 decimal digits, no leading zero (but "0"), at most 2^53. */
static int parse_seq(const char *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 16 || (p[0] == '0' && len > 1))
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > BROKER_SEQ_MAX)
        return 0;
    *out = v;
    return 1;
}

static int is_string(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING;
}

/* {0, seq, epoch, receivers} or {1, "<seq>:<epoch>:<receipt>"}. Returns a reason, NULL if ok. */
static const char *parse_append(const redisReply *r, broker_append_result_t *out)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        return "append reply of another shape";
    const redisReply *const *e = (const redisReply *const *)r->element;
    if (e[0]->integer == 0) {
        if (r->elements != 4 || e[1]->type != REDIS_REPLY_INTEGER || !is_string(e[2]) ||
            e[3]->type != REDIS_REPLY_INTEGER)
            return "append reply of another shape";
        if (e[1]->integer < 1 || (uint64_t)e[1]->integer > BROKER_SEQ_MAX)
            return "append seq out of range";
        if (!chat_epoch_valid(chat_str(e[2]->str, e[2]->len)))
            return "append epoch invalid";
        if (e[3]->integer < 0)
            return "append receivers negative";
        out->seq = (uint64_t)e[1]->integer;
        out->epoch = chat_str(e[2]->str, e[2]->len);
        out->receivers = (uint64_t)e[3]->integer;
        return NULL;
    }
    if (e[0]->integer != 1 || r->elements != 2 || !is_string(e[1]))
        return "append reply of another shape";
    const char *p = e[1]->str, *stop = p + e[1]->len;
    const char *c1 = memchr(p, ':', e[1]->len);
    const char *c2 = c1 != NULL ? memchr(c1 + 1, ':', (size_t)(stop - c1 - 1)) : NULL;
    if (c2 == NULL || !parse_seq(p, (size_t)(c1 - p), &out->seq) || out->seq == 0)
        return "dedupe value invalid";
    out->epoch = chat_str(c1 + 1, (size_t)(c2 - c1 - 1));
    if (!chat_epoch_valid(out->epoch))
        return "dedupe value invalid";
    out->receipt = chat_str(c2 + 1, (size_t)(stop - c2 - 1));
    if (out->receipt.len > BROKER_RECEIPT_MAX)
        return "dedupe receipt too long";
    out->duplicate = 1;
    return NULL;
}

void broker__redis_history_append_reply(redis_broker_t *b, uint64_t tag, redisReply *r)
{
    broker_append_result_t res;
    const char *why = NULL;
    memset(&res, 0, sizeof(res));
    if (r == NULL) {
        why = ""; /* the link failed (logged by it) */
    } else if (r->type == REDIS_REPLY_ERROR) {
        why = "append refused";
        broker__redis_warn(b, is_noscript(r) ? "append script missing" : why,
                           chat_str(r->str, r->len));
        if (is_noscript(r) && b->loads_in_flight == 0)
            broker__redis_history_load_scripts(b);
    } else if ((why = parse_append(r, &res)) != NULL) {
        broker__redis_warn(b, why, CHAT_STR_NULL);
    }
    if (why != NULL) {
        memset(&res, 0, sizeof(res));
        res.status = CHAT_EBROKER;
    }
    broker__appended(&b->base, tag, &res);
}

/* ---- read ------------------------------------------------------------------------------- */

/* Sends rd (EVALSHA, or EVAL with the body once it was refused with NOSCRIPT). */
static int send_read(redis_broker_t *b, broker__redis_read_t *rd, uint64_t tag)
{
    char epoch[BROKER_EPOCH_NEW_LEN], bound[24], limit[24];
    const char *argv[10], *mode;
    size_t lens[10], off[2], end[2];
    chat_str_t topic = chat_str(rd->topic, rd->topic_len);
    uint64_t v = 0;
    if (rd->q.has_after) {
        mode = "a";
        v = rd->q.after > BROKER_SEQ_MAX ? BROKER_SEQ_MAX : rd->q.after;
    } else if (rd->q.before != 0 && rd->q.before <= BROKER_SEQ_MAX) {
        mode = "b";
        v = rd->q.before;
    } else {
        mode = "n"; /* no bound, or one above every seq */
    }
    snprintf(bound, sizeof(bound), "%" PRIu64, v);
    snprintf(limit, sizeof(limit), "%zu", rd->q.limit);
    chat_buf_reset(&b->keys);
    off[0] = add_key(b, topic, ":meta", CHAT_STR_NULL);
    end[0] = b->keys.len;
    off[1] = add_key(b, topic, ":history", CHAT_STR_NULL);
    end[1] = b->keys.len;
    broker__new_epoch(&b->base, epoch);
    argv[0] = rd->resent ? "EVAL" : "EVALSHA";
    lens[0] = strlen(argv[0]);
    argv[1] = rd->resent ? script_body[SCRIPT_READ] : b->sha[SCRIPT_READ];
    lens[1] = strlen(argv[1]);
    argv[2] = "2";
    lens[2] = 1;
    argv[3] = b->keys.p + off[0];
    lens[3] = end[0] - off[0];
    argv[4] = b->keys.p + off[1];
    lens[4] = end[1] - off[1];
    argv[5] = epoch;
    lens[5] = sizeof(epoch);
    argv[6] = b->ttl_arg;
    lens[6] = strlen(b->ttl_arg);
    argv[7] = mode;
    lens[7] = 1;
    argv[8] = bound;
    lens[8] = strlen(bound);
    argv[9] = limit;
    lens[9] = strlen(limit);
    return broker__redis_command(b, OP_READ, tag, rd, 10, argv, lens);
}

int broker__redis_history_read(broker_t *base, chat_str_t topic, const broker_history_query_t *q,
                               uint64_t tag)
{
    redis_broker_t *b = (redis_broker_t *)base;
    if (b->closed)
        return CHAT_EBROKER;
    broker__redis_read_t *rd = chat_xmalloc(sizeof(*rd) + topic.len);
    rd->q = *q;
    rd->resent = 0;
    rd->topic_len = topic.len;
    if (topic.len)
        memcpy(rd->topic, topic.p, topic.len);
    return send_read(b, rd, tag); /* rd is the op's now, or freed */
}

/* One stream entry [id, ["m", data]] with id <seq>-0; *seq and *data. */
static int parse_entry(const redisReply *e, uint64_t *seq, chat_str_t *data)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !is_string(e->element[0]) ||
        e->element[1]->type != REDIS_REPLY_ARRAY || e->element[1]->elements != 2)
        return 0;
    const redisReply *id = e->element[0], *f = e->element[1]->element[0],
                     *v = e->element[1]->element[1];
    if (id->len < 3 || memcmp(id->str + id->len - 2, "-0", 2) != 0 ||
        !parse_seq(id->str, id->len - 2, seq) || *seq == 0)
        return 0;
    if (!is_string(f) || f->len != 1 || f->str[0] != 'm' || !is_string(v))
        return 0;
    *data = chat_str(v->str, v->len);
    return 1;
}

/* {epoch, seq, entries}: entries oldest first for "a", newest first otherwise. */
static const char *parse_read(redis_broker_t *b, const broker__redis_read_t *rd,
                              const redisReply *r, broker_history_result_t *out)
{
    const broker_history_query_t *q = &rd->q;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !is_string(r->element[0]) ||
        !is_string(r->element[1]) || r->element[2]->type != REDIS_REPLY_ARRAY)
        return "read reply of another shape";
    out->epoch = chat_str(r->element[0]->str, r->element[0]->len);
    if (!chat_epoch_valid(out->epoch))
        return "read epoch invalid";
    if (!parse_seq(r->element[1]->str, r->element[1]->len, &out->seq))
        return "read seq invalid";
    const redisReply *list = r->element[2];
    if (list->elements > q->limit)
        return "read returned more entries than asked";
    int oldest_first = q->has_after != 0;
    uint64_t prev = 0;
    for (size_t i = 0; i < list->elements; i++) {
        uint64_t seq;
        chat_str_t data;
        if (!parse_entry(list->element[i], &seq, &data))
            return "read entry invalid";
        if (seq > out->seq || (q->has_after && seq <= q->after) ||
            (!q->has_after && q->before != 0 && seq >= q->before))
            return "read entry outside the query";
        if (i > 0 && (oldest_first ? seq <= prev : seq >= prev))
            return "read entries out of order";
        prev = seq;
        b->entries[oldest_first ? i : list->elements - 1 - i] = (broker_history_entry_t){seq, data};
    }
    out->entries = b->entries;
    out->n = list->elements;
    return NULL;
}

void broker__redis_history_read_reply(redis_broker_t *b, broker__redis_read_t *rd, uint64_t tag,
                                      redisReply *r)
{
    broker_history_result_t res;
    const char *why = NULL;
    memset(&res, 0, sizeof(res));
    if (is_noscript(r) && !rd->resent) {
        broker__redis_warn(b, "read script missing", chat_str(r->str, r->len));
        if (b->loads_in_flight == 0)
            broker__redis_history_load_scripts(b);
        rd->resent = 1;
        if (send_read(b, rd, tag) == 0)
            return; /* rd belongs to the new op */
        rd = NULL;  /* freed */
        why = "";
    } else if (r == NULL) {
        why = "";
    } else if (r->type == REDIS_REPLY_ERROR) {
        why = "read refused";
        broker__redis_warn(b, why, chat_str(r->str, r->len));
    } else if ((why = parse_read(b, rd, r, &res)) != NULL) {
        broker__redis_warn(b, why, CHAT_STR_NULL);
    }
    free(rd);
    if (why != NULL) {
        memset(&res, 0, sizeof(res));
        res.status = CHAT_EBROKER;
        broker__history_answered(&b->base, tag, &res);
        return;
    }
    answer_after_barrier(b, tag, &res);
}
