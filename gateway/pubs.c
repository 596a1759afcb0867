/* gateway/pubs.c - a session's chat publications waiting for the broker's verdict (chat app).
 * The sender's `ack` is built when it publishes and sent when the broker reports the publication
 * accepted; completions arrive in publish order (broker.h), so each session keeps a FIFO and
 * finds itself by id (relay.c: a late completion for a closed session is ignored). */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "chat.h"

typedef struct gw_pending_pub {
    chat_list_t link;
    chat_rcbuf_t *ack; /* the ack frame, NULL when the client sent no cid */
    size_t room_len, cid_len;
    char room[CHAT_ROOM_NAME_MAX];
    char cid[]; /* cid_len bytes; cid_len == 0 and ack == NULL: no cid */
} gw_pending_pub_t;

void gw__pubs_on_published(gw_session_t *s, int status)
{
    gw_chat_session_t *cs = gw__chat_session(s);
    if (cs == NULL || chat_list_is_empty(&cs->pending_pubs))
        return;
    gw_pending_pub_t *p = chat_container_of(cs->pending_pubs.next, gw_pending_pub_t, link);
    chat_list_unlink(&p->link);
    if (status == 0 && p->ack != NULL)
        gw__session_send(s, p->ack, GW_OUT_MUST);
    else if (status != 0)
        gw__dispatch_error(s, "unavailable", "the message could not be published",
                           p->ack ? chat_str(p->cid, p->cid_len) : CHAT_STR_NULL,
                           chat_str(p->room, p->room_len));
    chat_rcbuf_release(p->ack);
    free(p);
}

void gw__pubs_expect(gw_session_t *s, chat_str_t room, chat_str_t cid, chat_str_t id)
{
    gw_pending_pub_t *p = chat_xcalloc(1, sizeof(*p) + cid.len);
    memcpy(p->room, room.p, room.len);
    p->room_len = room.len;
    if (cid.p != NULL) {
        chat_buf_t ack = CHAT_BUF_INIT;
        chat_env_build_ack(&ack, cid, room, id, 0, 0);
        p->ack = gw_ws_encode(0, ack.p, ack.len);
        chat_buf_free(&ack);
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
        chat_rcbuf_release(p->ack);
        free(p);
    }
}
