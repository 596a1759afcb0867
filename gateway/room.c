/* gateway/room.c - the room registry of ONE node (chat app): room name -> local members. Owns
 * gw_room_t and gw_member_t. Subscribes the room's broker topic when the first local member joins
 * and unsubscribes when the last one leaves, so the node receives only the rooms it needs.
 * Fan-out queues one shared frame to every local member; a send that overflows a member's queue
 * only requests its close (core.h), so a room is never freed while it is being walked. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "chat.h"
#include "log.h"

/* dm:<a>:<b> -> the two ids; 0 or CHAT_EBADREQ */
static int split_dm(chat_str_t name, chat_str_t *a, chat_str_t *b)
{
    chat_str_t rest = chat_str(name.p + 3, name.len - 3);
    const char *colon = memchr(rest.p, ':', rest.len);
    if (colon == NULL)
        return CHAT_EBADREQ;
    *a = chat_str(rest.p, (size_t)(colon - rest.p));
    *b = chat_str(colon + 1, rest.len - a->len - 1);
    if (a->len == 0 || b->len == 0 || memchr(b->p, ':', b->len) != NULL)
        return CHAT_EBADREQ;
    return 0;
}

static int str_less(chat_str_t x, chat_str_t y)
{
    size_t n = x.len < y.len ? x.len : y.len;
    int c = memcmp(x.p, y.p, n);
    return c < 0 || (c == 0 && x.len < y.len);
}

int gw__room_resolve(gw_session_t *s, chat_str_t name, int for_join, char *buf, chat_str_t *out)
{
    if (!chat_room_name_valid(name))
        return CHAT_EBADREQ;
    *out = name;
    if (name.len >= 3 && memcmp(name.p, "dm:", 3) == 0) {
        chat_str_t a, b;
        if (split_dm(name, &a, &b) != 0)
            return CHAT_EBADREQ;
        if (str_less(b, a)) { /* canonical: the two ids in byte order */
            chat_str_t t = a;
            a = b;
            b = t;
        }
        memcpy(buf, "dm:", 3);
        memcpy(buf + 3, a.p, a.len);
        buf[3 + a.len] = ':';
        memcpy(buf + 4 + a.len, b.p, b.len);
        *out = chat_str(buf, name.len);
        chat_str_t me = chat_str(s->user, s->user_len);
        if (for_join && (s->ident.sub == NULL || (!chat_str_eq(me, a) && !chat_str_eq(me, b))))
            return CHAT_EFORBIDDEN;
        return 0;
    }
    if (for_join && name.len >= 8 && memcmp(name.p, "private:", 8) == 0 &&
        (s->ident.sub == NULL || !gw_identity_may_join_private(&s->ident, name)))
        return CHAT_EFORBIDDEN;
    return 0;
}

gw_member_t *gw__room_membership(gw_session_t *s, chat_str_t name)
{
    chat_list_t *pos, *tmp;
    chat_list_foreach_safe(pos, tmp, &gw__chat_session(s)->rooms)
    {
        gw_member_t *m = chat_container_of(pos, gw_member_t, session_link);
        if (chat_str_eq(chat_str(m->room->name, m->room->name_len), name))
            return m;
    }
    return NULL;
}

gw_room_t *gw__room_find(gw_chat_t *chat, chat_str_t name)
{
    return chat_map_get(&chat->rooms, name);
}

static chat_str_t id_key(const uint64_t *id)
{
    return chat_str((const char *)id, sizeof(*id));
}

gw_room_t *gw__room_by_id(gw_chat_t *chat, uint64_t id)
{
    return chat_map_get(&chat->room_ids, id_key(&id));
}

int gw__room_join(gw_session_t *s, chat_str_t name, gw_member_t **out)
{
    gw_server_t *srv = s->srv;
    gw_chat_t *chat = gw__chat(srv);
    gw_chat_session_t *cs = gw__chat_session(s);
    gw_room_t *room = chat_map_get(&chat->rooms, name);
    if (room == NULL) {
        int rc = broker_subscribe(srv->broker, name);
        if (rc != 0)
            return rc;
        room = chat_xcalloc(1, sizeof(*room));
        chat_list_init(&room->members);
        memcpy(room->name, name.p, name.len);
        room->name_len = name.len;
        room->id = ++chat->next_room_id;
        chat_list_init(&room->linger_link);
        chat_list_init(&room->held);
        chat_map_put(&chat->rooms, name, room);
        chat_map_put(&chat->room_ids, id_key(&room->id), room);
    }
    if (room->nmembers == 0) { /* new, or back from lingering */
        room->empty_since = 0;
        if (chat_list_is_linked(&room->linger_link))
            chat_list_unlink(&room->linger_link);
        chat->active_rooms++;
    }
    gw_member_t *m = chat_xcalloc(1, sizeof(*m));
    m->room = room;
    m->session = s;
    chat_list_insert_tail(&room->members, &m->room_link);
    chat_list_insert_tail(&cs->rooms, &m->session_link);
    room->nmembers++;
    cs->nrooms++;
    *out = m;
    return 0;
}

static void room_free(gw_chat_t *chat, gw_room_t *room, int unsubscribe)
{
    chat_str_t name = chat_str(room->name, room->name_len);
    if (unsubscribe)
        broker_unsubscribe(chat->srv->broker, name);
    if (chat_list_is_linked(&room->linger_link))
        chat_list_unlink(&room->linger_link);
    chat_map_del(&chat->room_ids, id_key(&room->id));
    chat_map_del(&chat->rooms, name);
    gw__history_room_gone(room);
    free(room);
}

void gw__room_leave(gw_member_t *m)
{
    gw_room_t *room = m->room;
    gw_server_t *srv = m->session->srv;
    gw_chat_t *chat = gw__chat(srv);
    chat_list_unlink(&m->room_link);
    chat_list_unlink(&m->session_link);
    gw__chat_session(m->session)->nrooms--;
    room->nmembers--;
    gw__history_member_gone(m);
    free(m);
    if (room->nmembers > 0)
        return;
    chat->active_rooms--;
    if (srv->cfg->room_linger_ms == 0) {
        room_free(chat, room, 1);
        return;
    }
    room->empty_since = uv_now(srv->loop);
    chat_list_insert_tail(&chat->lingering, &room->linger_link);
}

void gw__room_sweep(gw_chat_t *chat, uint64_t now, int force)
{
    uint64_t linger = chat->srv->cfg->room_linger_ms;
    while (!chat_list_is_empty(&chat->lingering)) {
        gw_room_t *room = chat_container_of(chat->lingering.next, gw_room_t, linger_link);
        if (!force && now - room->empty_since < linger)
            break;                     /* the others emptied later */
        room_free(chat, room, !force); /* forced: the broker is closing anyway */
    }
}

size_t gw__room_fanout(gw_room_t *room, chat_rcbuf_t *frame, gw_out_kind_t kind, uint64_t skip)
{
    size_t n = 0;
    chat_list_t *pos;
    /* No member leaves during the walk: a send that fails only requests the close. */
    chat_list_foreach(pos, &room->members)
    {
        gw_member_t *m = chat_container_of(pos, gw_member_t, room_link);
        if (m->state == GW_MEMBER_LIVE && m->session->id != skip &&
            gw__session_send(m->session, frame, kind))
            n++;
    }
    return n;
}
