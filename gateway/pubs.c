/* gateway/pubs.c - a session's chat publications waiting for the broker's verdict (chat app).
 * The sender's `ack` is sent when the broker reports the publication accepted: with history on it
 * carries the message's seq, and a retry the broker recognised by its cid (a duplicate) gets the
 * original's id and seq. Completions arrive in publish order (broker.h), so each session keeps a
 * FIFO and finds itself by id (relay.c: a late completion for a closed session is ignored). */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "chat.h"

typedef struct gw_pending_pub {
    chat_list_t link;
    size_t room_len, cid_len, id_len;
    int has_cid;
    char room[CHAT_ROOM_NAME_MAX];
    char id[GW_ID_MAX + 32];
    char cid[]; /* cid_len bytes */
} gw_pending_pub_t;

void gw__pubs_on_published(gw_session_t *s, int status, const broker_append_result_t *r)
{
    gw_chat_session_t *cs = gw__chat_session(s);
    if (cs == NULL || chat_list_is_empty(&cs->pending_pubs))
        return;
    gw_pending_pub_t *p = chat_container_of(cs->pending_pubs.next, gw_pending_pub_t, link);
    chat_list_unlink(&p->link);
    chat_str_t cid = p->has_cid ? chat_str(p->cid, p->cid_len) : CHAT_STR_NULL;
    chat_str_t room = chat_str(p->room, p->room_len);
    if (status == 0 && p->has_cid) {
        chat_str_t id = chat_str(p->id, p->id_len);
        if (r != NULL && r->duplicate && r->receipt.p != NULL)
            id = r->receipt;
        chat_buf_t *b = &gw__chat(s->srv)->json;
        chat_buf_reset(b);
        chat_env_build_ack(b, cid, room, id, r != NULL, r != NULL ? r->seq : 0);
        gw__session_send_json(s, chat_buf_str(b));
    } else if (status != 0) {
        gw__dispatch_error(s, "unavailable", "the message could not be published", cid, room);
    }
    free(p);
}

void gw__pubs_expect(gw_session_t *s, chat_str_t room, chat_str_t cid, chat_str_t id)
{
    gw_pending_pub_t *p = chat_xcalloc(1, sizeof(*p) + cid.len);
    memcpy(p->room, room.p, room.len);
    p->room_len = room.len;
    p->id_len = id.len < sizeof(p->id) ? id.len : sizeof(p->id);
    memcpy(p->id, id.p, p->id_len);
    if (cid.p != NULL) {
        p->has_cid = 1;
        memcpy(p->cid, cid.p, cid.len);
        p->cid_len = cid.len;
    }
    chat_list_insert_tail(&gw__chat_session(s)->pending_pubs, &p->link);
}

void gw__pubs_drop(gw_session_t *s)
{
    gw_chat_session_t *cs = gw__chat_session(s);
    while (!chat_list_is_empty(&cs->pending_pubs)) {
        gw_pending_pub_t *p = chat_container_of(cs->pending_pubs.next, gw_pending_pub_t, link);
        chat_list_unlink(&p->link);
        free(p);
    }
}
