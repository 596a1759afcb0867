/* gateway/history.c - history and recovery (chat app), with --history-size > 0. The broker keeps
 * each room's last chats with a per-room seq and epoch (broker.h); this file keeps what a node
 * delivered in that one order:
 *
 *  - A room's position: when its subscription takes effect (on_subscribed, so nothing published
 *    after the read can slip past the subscription) the node reads the room's seq and epoch, then
 *    delivers chats strictly in seq order. A chat that arrives with a gap, another epoch, or while
 *    a read is in flight is held, and a read of the history fills what is missing first. After
 *    every subscriber reconnect the broker calls on_subscribed again, and the same read fills what
 *    the node missed meanwhile (quiet rooms too). Duplicates (seq already delivered) are dropped.
 *  - A join: `joined` carries the room's seq and epoch, so the member waits until they are known
 *    (WAITING). A join with `since` reads the history after since while the room's chats for the
 *    member are buffered (RECOVERING); then `joined` ("recovered":true), the missed chats, the
 *    buffered ones past them: no gap and no duplicate. When the history cannot cover everything
 *    (other epoch, trimmed, too much, the broker failed), "recovered":false and no replay; the
 *    member then gets every chat after the seq its `joined` names.
 *  - `history` requests.
 * Everything read from the broker passes chat_wire_check and must carry the seq and epoch the
 * broker filed it under, or it is dropped and counted like a bad live message. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "chat.h"
#include "clock.h"
#include "err.h"
#include "log.h"

#define HOLD_EXTRA         64   /* held chats beyond 2 x history_size + this: dropped, re-read */
#define REQUEST_LIMIT_DEF  50   /* `history` without limit */
#define JOIN_WAIT_MS       3000 /* a join waits this long at most for the room's position */

typedef struct gw_held {
    chat_list_t link;
    uint64_t seq;
    size_t epoch_len;
    char epoch[CHAT_EPOCH_MAX + 1];
    chat_rcbuf_t *frame; /* the chat's WebSocket frame, shared */
} gw_held_t;

struct gw_recovery {
    uint64_t since;
    size_t epoch_len;
    char epoch[CHAT_EPOCH_MAX + 1];
    uint64_t read_id;     /* RECOVERING: the read in flight */
    uint64_t start_seq;   /* the room's seq when buffering began */
    chat_list_t buffered; /* gw_held_t: the room's chats delivered since */
    size_t nbuffered, buffered_bytes;
};

typedef enum read_kind {
    READ_ROOM,    /* a room's position, or a gap */
    READ_RECOVER, /* a member's since */
    READ_REQUEST, /* a client's `history` */
} read_kind_t;

typedef struct gw_read {
    uint64_t id;
    read_kind_t kind;
    uint64_t room_id; /* READ_ROOM */
    uint64_t session; /* READ_RECOVER, READ_REQUEST */
    size_t room_len, cid_len;
    char room[CHAT_ROOM_NAME_MAX];
    char cid[CHAT_ENV_MAX_CID]; /* READ_REQUEST: echoed on an error */
    int has_cid;
} gw_read_t;

static chat_str_t id_key(const uint64_t *id)
{
    return chat_str((const char *)id, sizeof(*id));
}

static chat_str_t room_name(const gw_room_t *room)
{
    return chat_str(room->name, room->name_len);
}

static chat_str_t room_epoch(const gw_room_t *room)
{
    return chat_str(room->epoch, room->epoch_len);
}

static size_t history_size(const gw_chat_t *chat)
{
    return (size_t)chat->srv->cfg->history_size;
}

/* The most a replay or a history answer may queue to one connection: half its send queue. */
static size_t reply_bytes_max(const gw_chat_t *chat)
{
    return (size_t)(chat->srv->cfg->send_queue_bytes / 2);
}

static gw_read_t *read_new(gw_chat_t *chat, read_kind_t kind, chat_str_t room)
{
    gw_read_t *rd = chat_xcalloc(1, sizeof(*rd));
    rd->id = ++chat->next_read_id;
    rd->kind = kind;
    memcpy(rd->room, room.p, room.len);
    rd->room_len = room.len;
    return rd;
}

/* Sends the read; on success it is filed under its id and 0 is returned (on_history follows).
 * Otherwise rd is freed and the broker's error returned. */
static int read_send(gw_chat_t *chat, gw_read_t *rd, const broker_history_query_t *q)
{
    int rc = broker_history(chat->srv->broker, chat_str(rd->room, rd->room_len), q, rd->id);
    if (rc != 0) {
        free(rd);
        return rc;
    }
    chat_map_put(&chat->reads, id_key(&rd->id), rd);
    return 0;
}

static void held_free(gw_held_t *h)
{
    chat_rcbuf_release(h->frame);
    free(h);
}

static gw_held_t *held_new(uint64_t seq, chat_str_t epoch, chat_rcbuf_t *frame)
{
    gw_held_t *h = chat_xmalloc(sizeof(*h));
    h->seq = seq;
    h->epoch_len = epoch.len;
    memcpy(h->epoch, epoch.p, epoch.len);
    h->epoch[epoch.len] = '\0';
    h->frame = chat_rcbuf_ref(frame);
    return h;
}

static void held_list_free(chat_list_t *l)
{
    while (!chat_list_is_empty(l)) {
        gw_held_t *h = chat_container_of(l->next, gw_held_t, link);
        chat_list_unlink(&h->link);
        held_free(h);
    }
}

/* ---- joined, and a member's recovery ------------------------------------------------------ */

static void send_joined(gw_member_t *m, uint64_t seq, int has_recovered, int recovered)
{
    gw_session_t *s = m->session;
    gw_room_t *room = m->room;
    chat_env_joined_t j = {
        .has_seq = 1,
        .seq = seq,
        .epoch = room_epoch(room),
        .has_recovered = has_recovered,
        .recovered = recovered,
    };
    chat_buf_t *b = &gw__chat(s->srv)->json;
    chat_buf_reset(b);
    chat_env_build_joined(b, room_name(room), &j);
    gw__session_send_json(s, chat_buf_str(b));
}

static void recovery_free(gw_member_t *m)
{
    gw_recovery_t *rec = m->recovery;
    if (rec == NULL)
        return;
    held_list_free(&rec->buffered);
    free(rec);
    m->recovery = NULL;
}

/* Ends m's recovery: `joined` (recovered or not), then what was buffered past `after` (the last
 * seq the member has: the replay's end, or the seq `joined` names), and m is LIVE. */
static void recovery_end(gw_member_t *m, int recovered, uint64_t joined_seq, uint64_t after)
{
    gw_chat_t *chat = gw__chat(m->session->srv);
    gw_recovery_t *rec = m->recovery;
    chat->recoveries[recovered ? 1 : 0]++;
    m->state = GW_MEMBER_LIVE;
    if (!recovered) {
        send_joined(m, joined_seq, 1, 0);
        after = joined_seq;
    }
    m->seen = after;
    chat_list_t *pos;
    chat_list_foreach(pos, &rec->buffered)
    {
        gw_held_t *h = chat_container_of(pos, gw_held_t, link);
        if (h->seq <= m->seen)
            continue;
        m->seen = h->seq;
        if (gw__session_send(m->session, h->frame, GW_OUT_MUST))
            chat->delivered[0]++;
    }
    recovery_free(m);
}

/* Starts reading the history after since for m (the room's position is known). */
static void recovery_start(gw_member_t *m)
{
    gw_chat_t *chat = gw__chat(m->session->srv);
    gw_room_t *room = m->room;
    gw_recovery_t *rec = m->recovery;
    rec->start_seq = room->seq;
    chat_list_init(&rec->buffered);
    rec->nbuffered = rec->buffered_bytes = 0;
    /* Decided here without a read: nothing missed, or further behind than a replay may go. */
    if (room->hstate == GW_HIST_LIVE && rec->since == room->seq &&
        chat_str_eq(chat_str(rec->epoch, rec->epoch_len), room_epoch(room))) {
        send_joined(m, room->seq, 1, 1);
        chat->recoveries[1]++;
        m->state = GW_MEMBER_LIVE;
        m->seen = room->seq;
        recovery_free(m);
        return;
    }
    if (rec->since + history_size(chat) < room->seq) {
        recovery_end(m, 0, room->seq, room->seq);
        return;
    }
    gw_read_t *rd = read_new(chat, READ_RECOVER, room_name(room));
    rd->session = m->session->id;
    rec->read_id = rd->id;
    broker_history_query_t q = {.has_after = 1, .after = rec->since, .limit = history_size(chat)};
    m->state = GW_MEMBER_RECOVERING;
    if (read_send(chat, rd, &q) != 0)
        recovery_end(m, 0, room->seq, room->seq);
}

/* The room's position became known (or was already): m's `joined`. */
static void member_ready(gw_member_t *m)
{
    if (m->recovery != NULL) {
        recovery_start(m);
        return;
    }
    m->state = GW_MEMBER_LIVE;
    m->seen = m->room->seq;
    send_joined(m, m->room->seq, 0, 0);
}

/* The room's position cannot be read now (the broker is down, or slow): `joined` without seq and
 * epoch (and "recovered":false after a since), and m gets the room's chats from now on. */
static void member_unpositioned(gw_member_t *m)
{
    gw_chat_t *chat = gw__chat(m->session->srv);
    chat_env_joined_t j = {.has_recovered = m->recovery != NULL, .recovered = 0};
    if (m->recovery != NULL)
        chat->recoveries[0]++;
    recovery_free(m);
    m->state = GW_MEMBER_LIVE;
    m->seen = 0;
    chat_buf_t *b = &chat->json;
    chat_buf_reset(b);
    chat_env_build_joined(b, room_name(m->room), &j);
    gw__session_send_json(m->session, chat_buf_str(b));
}

void gw__history_join(gw_member_t *m, int fresh, const gw_since_t *since)
{
    gw_room_t *room = m->room;
    if (m->state != GW_MEMBER_LIVE)
        return; /* a join already waiting or recovering: its `joined` is coming */
    if (since != NULL) {
        gw_recovery_t *rec = chat_xcalloc(1, sizeof(*rec));
        rec->since = since->seq;
        rec->epoch_len = since->epoch.len <= CHAT_EPOCH_MAX ? since->epoch.len : 0;
        memcpy(rec->epoch, since->epoch.p, rec->epoch_len);
        chat_list_init(&rec->buffered);
        m->recovery = rec;
    }
    if (room->hstate == GW_HIST_NEW || room->hstate == GW_HIST_SYNCING) {
        /* the broker may be down, or still connecting (a node that just started): the tick
         * answers without a position after JOIN_WAIT_MS */
        m->state = GW_MEMBER_WAITING;
        if (room->wait_since == 0)
            room->wait_since = uv_now(m->session->srv->loop);
        return;
    }
    member_ready(m);
}

void gw__history_member_gone(gw_member_t *m)
{
    recovery_free(m);
}

/* ---- a room's order ------------------------------------------------------------------------ */

static void room_read(gw_chat_t *chat, gw_room_t *room);

/* Delivers the chat with this seq (the next one) to the room's members. */
static void deliver(gw_chat_t *chat, gw_room_t *room, uint64_t seq, chat_rcbuf_t *frame)
{
    chat_list_t *pos, *tmp;
    room->seq = seq;
    chat_list_foreach_safe(pos, tmp, &room->members)
    {
        gw_member_t *m = chat_container_of(pos, gw_member_t, room_link);
        if (m->state == GW_MEMBER_LIVE) {
            if (seq <= m->seen)
                continue; /* a replay gave it already */
            m->seen = seq;
            if (gw__session_send(m->session, frame, GW_OUT_MUST))
                chat->delivered[0]++;
        } else if (m->state == GW_MEMBER_RECOVERING) {
            gw_recovery_t *rec = m->recovery;
            if (rec->nbuffered < history_size(chat) &&
                rec->buffered_bytes + frame->len <= reply_bytes_max(chat)) {
                gw_held_t *h = held_new(seq, room_epoch(room), frame);
                chat_list_insert_tail(&rec->buffered, &h->link);
                rec->nbuffered++;
                rec->buffered_bytes += frame->len;
                continue;
            }
            /* too much arrived meanwhile: no replay, the live ones from the start on */
            recovery_end(m, 0, rec->start_seq, rec->start_seq);
            m->seen = seq;
            if (gw__session_send(m->session, frame, GW_OUT_MUST))
                chat->delivered[0]++;
        }
    }
}

static void hold(gw_chat_t *chat, gw_room_t *room, uint64_t seq, chat_str_t epoch,
                 chat_rcbuf_t *frame)
{
    if (room->nheld >= 2 * history_size(chat) + HOLD_EXTRA) {
        /* they are all in the history: read them from there once the read in flight is done */
        chat->hist_held_dropped += room->nheld;
        held_list_free(&room->held);
        room->nheld = 0;
        room->refill = 1;
    }
    gw_held_t *h = held_new(seq, epoch, frame);
    chat_list_insert_tail(&room->held, &h->link);
    room->nheld++;
}

/* One chat for the room, in arrival order. */
static void on_chat(gw_chat_t *chat, gw_room_t *room, uint64_t seq, chat_str_t epoch,
                    chat_rcbuf_t *frame)
{
    if (room->hstate != GW_HIST_LIVE) {
        hold(chat, room, seq, epoch, frame);
        return;
    }
    int same_epoch = chat_str_eq(epoch, room_epoch(room));
    if (same_epoch && seq <= room->seq) {
        chat->hist_dups++;
        return;
    }
    if (same_epoch && seq == room->seq + 1) {
        deliver(chat, room, seq, frame);
        return;
    }
    /* a gap, or the history was lost and began again: fill from the history first */
    chat->hist_gaps++;
    hold(chat, room, seq, epoch, frame);
    room->hstate = GW_HIST_FILLING;
    room_read(chat, room);
}

/* Feeds the held chats through on_chat again (in arrival order); a new gap holds the rest. */
static void flush_held(gw_chat_t *chat, gw_room_t *room)
{
    chat_list_t batch;
    chat_list_init(&batch);
    if (chat_list_is_empty(&room->held))
        return;
    batch.next = room->held.next;
    batch.prev = room->held.prev;
    batch.next->prev = &batch;
    batch.prev->next = &batch;
    chat_list_init(&room->held);
    room->nheld = 0;
    while (!chat_list_is_empty(&batch)) {
        gw_held_t *h = chat_container_of(batch.next, gw_held_t, link);
        chat_list_unlink(&h->link);
        on_chat(chat, room, h->seq, chat_str(h->epoch, h->epoch_len), h->frame);
        held_free(h);
    }
}

/* Reads the room's position (first read: seq and epoch only) or what follows room->seq. */
static void room_read(gw_chat_t *chat, gw_room_t *room)
{
    if (room->read_started != 0) {
        room->refill = 1; /* once the read in flight is answered */
        return;
    }
    gw_read_t *rd = read_new(chat, READ_ROOM, room_name(room));
    rd->room_id = room->id;
    broker_history_query_t q = {0};
    if (room->hstate != GW_HIST_SYNCING) {
        q.has_after = 1;
        q.after = room->seq;
        q.limit = history_size(chat);
    }
    room->refill = 0;
    room->read_started = uv_now(chat->srv->loop);
    if (read_send(chat, rd, &q) != 0) {
        room->read_started = 0;
        room->refill = 1; /* the tick retries */
    }
}

void gw__history_on_subscribed(gw_chat_t *chat, gw_room_t *room)
{
    if (history_size(chat) == 0)
        return;
    if (room->hstate == GW_HIST_NEW)
        room->hstate = GW_HIST_SYNCING;
    else if (room->hstate == GW_HIST_LIVE)
        room->hstate = GW_HIST_FILLING; /* resubscribed: what was published meanwhile */
    room_read(chat, room);
}

/* Checks one stored message: what a node publishes, for this room, filed under its seq and the
 * epoch. Returns 1 with *json, or 0 (counted as rejected). */
static int entry_ok(gw_chat_t *chat, chat_str_t room, const broker_history_entry_t *e,
                    chat_str_t epoch, chat_str_t *json)
{
    chat_wire_hdr_t h;
    chat_wire_reason_t why;
    /* a stored chat is as old as its room's history goes back (the TTL counts from the last one) */
    chat_wire_limits_t lim = {.now_ms = chat_wall_ms(),
                              .max_text_bytes = chat->srv->cfg->max_text_bytes,
                              .max_age_ms = (uint64_t)chat_wall_ms()};
    if (chat_wire_check(room, e->data, &lim, &h, json, &why) != 0) {
        gw__relay_reject(chat, room, e->data.len, why);
        return 0;
    }
    if (h.kind != CHAT_WIRE_CHAT || h.seq != e->seq ||
        !chat_str_eq(chat_str(h.epoch, h.epoch_len), epoch)) {
        gw__relay_reject(chat, room, e->data.len, CHAT_WIRE_R_FIELDS);
        return 0;
    }
    return 1;
}

static void on_room_read(gw_chat_t *chat, gw_read_t *rd, const broker_history_result_t *r)
{
    gw_room_t *room = gw__room_by_id(chat, rd->room_id);
    if (room == NULL)
        return;
    room->read_started = 0;
    if (r->status != 0) {
        room->refill = 1; /* the tick retries */
        return;
    }
    if (room->hstate == GW_HIST_SYNCING) { /* the first read: the room's position */
        room->seq = r->seq;
        /* Chats held meanwhile arrived after the subscription took effect, that is after
         * everybody waiting joined: the position is just before the first of them. */
        if (!chat_list_is_empty(&room->held)) {
            gw_held_t *first = chat_container_of(room->held.next, gw_held_t, link);
            if (chat_str_eq(chat_str(first->epoch, first->epoch_len), r->epoch) &&
                first->seq >= 1 && first->seq <= r->seq)
                room->seq = first->seq - 1;
        }
        room->epoch_len = r->epoch.len;
        memcpy(room->epoch, r->epoch.p, r->epoch.len);
        room->epoch[r->epoch.len] = '\0';
        room->hstate = GW_HIST_LIVE;
        room->wait_since = 0;
        chat_list_t *pos, *tmp;
        chat_list_foreach_safe(pos, tmp, &room->members)
        {
            gw_member_t *m = chat_container_of(pos, gw_member_t, room_link);
            if (m->state == GW_MEMBER_WAITING)
                member_ready(m);
        }
    } else if (!chat_str_eq(r->epoch, room_epoch(room))) {
        /* the history was lost: deliver the new epoch's chats from its start */
        chat->hist_epochs++;
        room->epoch_len = r->epoch.len;
        memcpy(room->epoch, r->epoch.p, r->epoch.len);
        room->epoch[r->epoch.len] = '\0';
        room->seq = 0;
        room->hstate = GW_HIST_FILLING;
        room->refill = 1;
        chat_list_t *pos;
        chat_list_foreach(pos, &room->members)
        {
            gw_member_t *m = chat_container_of(pos, gw_member_t, room_link);
            m->seen = 0; /* positions of the old epoch mean nothing in the new one */
        }
    } else {
        for (size_t i = 0; i < r->n; i++) {
            const broker_history_entry_t *e = &r->entries[i];
            chat_str_t json;
            if (e->seq <= room->seq)
                continue;
            if (!entry_ok(chat, room_name(room), e, r->epoch, &json))
                continue; /* counted; a gap that stays */
            if (e->seq > room->seq + 1)
                chat->hist_lost += e->seq - room->seq - 1; /* trimmed before we read them */
            chat->hist_filled++;
            chat_rcbuf_t *frame = gw_ws_encode(0, json.p, json.len);
            deliver(chat, room, e->seq, frame);
            chat_rcbuf_release(frame);
        }
        if (r->n == 0 && r->seq > room->seq) { /* nothing left of them */
            chat->hist_lost += r->seq - room->seq;
            room->seq = r->seq;
        } else if (r->n > 0 && r->entries[r->n - 1].seq < r->seq) {
            room->refill = 1; /* more than one read's worth */
        } else if (r->seq > room->seq) {
            chat->hist_lost += r->seq - room->seq; /* the last ones were refused */
            room->seq = r->seq;
        }
        room->hstate = GW_HIST_LIVE;
    }
    if (room->refill) {
        room->hstate = GW_HIST_FILLING;
        room_read(chat, room);
        return;
    }
    room->hstate = GW_HIST_LIVE;
    flush_held(chat, room);
}

void gw__history_on_chat(gw_chat_t *chat, gw_room_t *room, const chat_wire_hdr_t *h,
                         chat_str_t json)
{
    chat_rcbuf_t *frame = gw_ws_encode(0, json.p, json.len); /* once for every member */
    on_chat(chat, room, h->seq, chat_str(h->epoch, h->epoch_len), frame);
    chat_rcbuf_release(frame);
}

/* ---- recovery reads ------------------------------------------------------------------------ */

static void on_recover_read(gw_chat_t *chat, gw_read_t *rd, const broker_history_result_t *r)
{
    gw_session_t *s = gw__session_find(chat->srv, rd->session);
    if (s == NULL || s->app_data == NULL)
        return;
    gw_member_t *m = gw__room_membership(s, chat_str(rd->room, rd->room_len));
    if (m == NULL || m->state != GW_MEMBER_RECOVERING || m->recovery->read_id != rd->id)
        return;
    gw_recovery_t *rec = m->recovery;
    gw_room_t *room = m->room;
    if (r->status != 0 || !chat_str_eq(r->epoch, chat_str(rec->epoch, rec->epoch_len)) ||
        rec->since > r->seq || r->seq - rec->since > history_size(chat) ||
        r->n != r->seq - rec->since) {
        recovery_end(m, 0, rec->start_seq, rec->start_seq);
        return;
    }
    size_t bytes = 0;
    chat_str_t *jsons = r->n ? chat_xmalloc(r->n * sizeof(*jsons)) : NULL;
    int ok = 1;
    for (size_t i = 0; i < r->n && ok; i++) {
        ok = r->entries[i].seq == rec->since + 1 + i &&
             entry_ok(chat, room_name(room), &r->entries[i], r->epoch, &jsons[i]);
        bytes += ok ? jsons[i].len + 16 : 0;
    }
    if (!ok || bytes > reply_bytes_max(chat)) {
        free(jsons);
        recovery_end(m, 0, rec->start_seq, rec->start_seq);
        return;
    }
    send_joined(m, r->seq, 1, 1);
    for (size_t i = 0; i < r->n; i++) {
        chat_rcbuf_t *frame = gw_ws_encode(0, jsons[i].p, jsons[i].len);
        if (gw__session_send(s, frame, GW_OUT_MUST))
            chat->delivered[0]++;
        chat_rcbuf_release(frame);
    }
    free(jsons);
    recovery_end(m, 1, r->seq, r->seq);
}

/* ---- history requests ---------------------------------------------------------------------- */

void gw__history_request(gw_session_t *s, chat_str_t room, const chat_env_in_t *in)
{
    gw_chat_t *chat = gw__chat(s->srv);
    size_t limit = in->limit ? (size_t)in->limit : REQUEST_LIMIT_DEF;
    if (limit > CHAT_ENV_HISTORY_MAX)
        limit = CHAT_ENV_HISTORY_MAX;
    if (limit > history_size(chat))
        limit = history_size(chat);
    gw_read_t *rd = read_new(chat, READ_REQUEST, room);
    rd->session = s->id;
    if (in->cid.p != NULL && in->cid.len <= sizeof(rd->cid)) {
        memcpy(rd->cid, in->cid.p, in->cid.len);
        rd->cid_len = in->cid.len;
        rd->has_cid = 1;
    }
    chat->history_requests++;
    broker_history_query_t q = {.before = in->has_before ? in->before : 0, .limit = limit};
    if (read_send(chat, rd, &q) != 0)
        gw__dispatch_error(s, "unavailable", "the history cannot be read now", in->cid, room);
}

static void on_request_read(gw_chat_t *chat, gw_read_t *rd, const broker_history_result_t *r)
{
    gw_session_t *s = gw__session_find(chat->srv, rd->session);
    chat_str_t room = chat_str(rd->room, rd->room_len);
    chat_str_t cid = rd->has_cid ? chat_str(rd->cid, rd->cid_len) : CHAT_STR_NULL;
    if (s == NULL || s->app_data == NULL)
        return;
    if (r->status != 0) {
        gw__dispatch_error(s, "unavailable", "the history cannot be read now", cid, room);
        return;
    }
    chat_str_t *jsons = r->n ? chat_xmalloc(r->n * sizeof(*jsons)) : NULL;
    size_t n = 0, bytes = 0;
    for (size_t i = 0; i < r->n; i++)
        if (entry_ok(chat, room, &r->entries[i], r->epoch, &jsons[n]))
            n++;
    /* within half the send queue: the newest ones (the client pages back with before) */
    size_t first = n;
    while (first > 0 && bytes + jsons[first - 1].len + 1 <= reply_bytes_max(chat))
        bytes += jsons[--first].len + 1;
    chat_buf_t *b = &chat->json;
    chat_buf_reset(b);
    chat_env_build_history(b, room, r->epoch, r->seq, jsons + first, n - first);
    gw__session_send_json(s, chat_buf_str(b));
    free(jsons);
}

void gw__history_on_read(gw_server_t *srv, uint64_t tag, const broker_history_result_t *in)
{
    gw_chat_t *chat = gw__chat(srv);
    gw_read_t *rd = chat_map_del(&chat->reads, id_key(&tag));
    broker_history_result_t failed = {.status = CHAT_EBROKER};
    const broker_history_result_t *r = in;
    if (rd == NULL)
        return;
    if (r->status == 0 && !chat_epoch_valid(r->epoch)) /* the broker checks it; so do we */
        r = &failed;
    if (rd->kind == READ_ROOM)
        on_room_read(chat, rd, r);
    else if (rd->kind == READ_RECOVER)
        on_recover_read(chat, rd, r);
    else
        on_request_read(chat, rd, r);
    free(rd);
}

/* ---- life ---------------------------------------------------------------------------------- */

void gw__history_room_gone(gw_room_t *room)
{
    held_list_free(&room->held);
    room->nheld = 0;
}

void gw__history_tick(gw_chat_t *chat, uint64_t now)
{
    chat_map_iter_t it = {0, NULL};
    chat_str_t key;
    gw_room_t *room;
    if (history_size(chat) == 0)
        return;
    while ((room = chat_map_next(&chat->rooms, &it, &key)) != NULL) {
        if (room->wait_since != 0 && now - room->wait_since >= JOIN_WAIT_MS) {
            chat_list_t *pos;
            room->wait_since = 0; /* joined without a position for those who waited */
            chat_list_foreach(pos, &room->members)
            {
                gw_member_t *m = chat_container_of(pos, gw_member_t, room_link);
                if (m->state == GW_MEMBER_WAITING)
                    member_unpositioned(m);
            }
        }
        if (room->refill && room->read_started == 0 && room->hstate != GW_HIST_NEW)
            room_read(chat, room);
    }
}

void gw__history_init(gw_chat_t *chat)
{
    chat_map_init(&chat->reads);
}

void gw__history_dispose(gw_chat_t *chat)
{
    chat_map_iter_t it = {0, NULL};
    chat_str_t key;
    gw_read_t *rd;
    while ((rd = chat_map_next(&chat->reads, &it, &key)) != NULL)
        free(rd);
    chat_map_dispose(&chat->reads);
}
