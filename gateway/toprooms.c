/* gateway/toprooms.c - Space-Saving over decaying counts for the busiest rooms (see toprooms.h).
 *
 * Invariants (c: a room's true decayed count: +1 per message, floor-halved by each decay):
 *   - a monitored room: score - error <= c <= score;
 *   - a room outside the set: c <= evicted_max <= the smallest monitored score (it was
 *     monitored at its last message, and evicted with a score >= its c);
 *   - heap[0] has the smallest score; entries are only ever replaced, never removed, so slots
 *     are free only while nothing was evicted.
 * Halving keeps all of them: floor(x/2) is monotonic, so the heap order survives, and the error
 * is rounded up (floor(s/2) - ceil(e/2) <= floor((s-e)/2)), capped at the score. */
#include "toprooms.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "names.h"

struct gw_toprooms_entry {
    uint64_t score, error;
    uint64_t value; /* the series: messages since the room got it */
    size_t idx;     /* position in t->heap */
    int exported;
    size_t len;
    char name[CHAT_ROOM_NAME_MAX]; /* inline: an eviction reuses the entry */
};

static int starts_with(chat_str_t s, const char *prefix, size_t n)
{
    return s.len >= n && memcmp(s.p, prefix, n) == 0;
}

int gw_toprooms_is_private(chat_str_t room)
{
    return starts_with(room, "dm:", 3) || starts_with(room, "private:", 8);
}

void gw_toprooms_init(gw_toprooms_t *t, size_t k)
{
    memset(t, 0, sizeof(*t));
    t->k = k;
    t->heap = k ? chat_xcalloc(k, sizeof(*t->heap)) : NULL;
    chat_map_init(&t->by_name);
}

void gw_toprooms_dispose(gw_toprooms_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->heap[i]);
    free(t->heap);
    chat_map_dispose(&t->by_name);
    memset(t, 0, sizeof(*t));
}

static void place(gw_toprooms_t *t, size_t i, gw_toprooms_entry_t *e)
{
    t->heap[i] = e;
    e->idx = i;
}

static void sift_up(gw_toprooms_t *t, size_t i)
{
    gw_toprooms_entry_t *e = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (t->heap[parent]->score <= e->score)
            break;
        place(t, i, t->heap[parent]);
        i = parent;
    }
    place(t, i, e);
}

static void sift_down(gw_toprooms_t *t, size_t i)
{
    gw_toprooms_entry_t *e = t->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= t->n)
            break;
        if (child + 1 < t->n && t->heap[child + 1]->score < t->heap[child]->score)
            child++;
        if (t->heap[child]->score >= e->score)
            break;
        place(t, i, t->heap[child]);
        i = child;
    }
    place(t, i, e);
}

/* One message to the monitored room e (its score not yet raised); the caller restores the heap. */
static void one_message(gw_toprooms_t *t, gw_toprooms_entry_t *e)
{
    e->score++;
    if (e->exported) {
        e->value++;
    } else if (e->score - e->error >= t->evicted_max) {
        e->exported = 1; /* certainly as busy as any room outside the set */
        e->value = 1;
    } else {
        t->other++;
    }
}

static void set_name(gw_toprooms_t *t, gw_toprooms_entry_t *e, chat_str_t room)
{
    memcpy(e->name, room.p, room.len);
    e->len = room.len;
    chat_map_put(&t->by_name, chat_str(e->name, e->len), e);
}

void gw_toprooms_count(gw_toprooms_t *t, chat_str_t room)
{
    if (gw_toprooms_is_private(room)) {
        t->private_msgs++;
        return;
    }
    if (t->k == 0 || room.len == 0 || room.len > CHAT_ROOM_NAME_MAX ||
        chat_str_eq(room, CHAT_LIT(GW_TOPROOMS_OTHER)) ||
        chat_str_eq(room, CHAT_LIT(GW_TOPROOMS_PRIVATE))) {
        t->other++;
        return;
    }
    gw_toprooms_entry_t *e = chat_map_get(&t->by_name, room);
    if (e != NULL) {
        one_message(t, e);
        sift_down(t, e->idx);
        return;
    }
    if (t->n < t->k) { /* a free slot: nothing was evicted yet, evicted_max is 0 */
        e = chat_xcalloc(1, sizeof(*e));
        set_name(t, e, room);
        place(t, t->n++, e);
        one_message(t, e);
        sift_up(t, e->idx);
        return;
    }
    /* Space-Saving: the room takes the place of the least busy one and inherits its score as
     * its error. The evicted room's series ends; its value moves to `other`. */
    e = t->heap[0];
    if (e->exported)
        t->other += e->value;
    if (e->score > t->evicted_max)
        t->evicted_max = e->score;
    chat_map_del(&t->by_name, chat_str(e->name, e->len));
    set_name(t, e, room);
    e->error = e->score;
    e->exported = 0;
    e->value = 0;
    one_message(t, e);
    sift_down(t, 0);
}

void gw_toprooms_decay(gw_toprooms_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        gw_toprooms_entry_t *e = t->heap[i];
        e->score /= 2;
        e->error = (e->error + 1) / 2;
        if (e->error > e->score)
            e->error = e->score;
    }
    t->evicted_max /= 2;
}

int gw_toprooms_next(const gw_toprooms_t *t, size_t *pos, gw_toprooms_stat_t *out)
{
    if (*pos >= t->n)
        return 0;
    const gw_toprooms_entry_t *e = t->heap[(*pos)++];
    out->room = chat_str(e->name, e->len);
    out->score = e->score;
    out->error = e->error;
    out->value = e->value;
    out->exported = e->exported;
    return 1;
}
