/* gateway/toprooms.h - the busiest rooms of chat_room_messages_total (pure: no loop, no I/O).
 *
 * Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient computation of frequent and top-k
 * elements in data streams", ICDT 2005) over a decaying count. k rooms are monitored, each with
 * a score (its estimated decayed message count) and an error (how much of the score may come
 * from before it was monitored: score - error <= true count <= score). A message to a room that
 * is not monitored takes the place of the monitored room with the smallest score, and inherits
 * that score as its error. gw_toprooms_decay() halves every score (metrics.c calls it once a
 * minute), so a room that went quiet sinks and a room that is busy now can take its place.
 *
 * Series: a monitored room gets its own series ("exported") once it is certainly at least as
 * busy as every room outside the set: score - error >= the largest (decayed) score a room had
 * when it was evicted. While slots are free nothing was evicted, so every room gets its series
 * at its first message. A room keeps its series until it is evicted. A series counts the
 * messages of its room from the one that gave it the series on; everything else goes to
 * `other`: public rooms never exported, messages a room sent before it got its series, and, at
 * eviction, the whole value of the evicted room's series (its series disappears and `other`
 * grows by as much, so every series only grows while it exists and the sum over all series is
 * exactly the number of messages counted). dm: and private: rooms (their names carry user ids
 * or would show who is in them) are never monitored: they count into `private_msgs`. Rooms
 * whose names are the aggregate labels themselves ("_other", "_private") count into `other`.
 *
 * Cost: O(log k) per message (a binary min-heap by score plus a name map), O(k) per decay. */
#ifndef CHAT_GATEWAY_TOPROOMS_H
#define CHAT_GATEWAY_TOPROOMS_H

#include <stddef.h>
#include <stdint.h>

#include "map.h"
#include "str.h"

#define GW_TOPROOMS_OTHER   "_other"   /* label value of the public rooms without a series */
#define GW_TOPROOMS_PRIVATE "_private" /* label value of the dm: and private: rooms */

typedef struct gw_toprooms_entry gw_toprooms_entry_t;

/* Fields are read-only outside toprooms.c. */
typedef struct gw_toprooms {
    size_t k;                   /* monitored rooms at most (0: every public room is `other`) */
    size_t n;                   /* monitored rooms now */
    gw_toprooms_entry_t **heap; /* owned; n entries, min-heap by score */
    chat_map_t by_name;         /* room -> entry in heap */
    uint64_t evicted_max;       /* largest decayed score of an evicted room (0: none yet) */
    uint64_t other;             /* series room="_other" */
    uint64_t private_msgs;      /* series room="_private" */
} gw_toprooms_t;

/* What gw_toprooms_next() tells about one monitored room. */
typedef struct gw_toprooms_stat {
    chat_str_t room; /* borrowed: valid until the next gw_toprooms_count/dispose */
    uint64_t score;  /* estimated decayed count */
    uint64_t error;  /* score - error <= the room's true decayed count <= score */
    uint64_t value;  /* the series' value (0 when not exported) */
    int exported;    /* 1: the room has its own series */
} gw_toprooms_stat_t;

/* k: how many rooms are monitored (--metrics-top-rooms). */
void gw_toprooms_init(gw_toprooms_t *t, size_t k);
/* Frees everything t owns. */
void gw_toprooms_dispose(gw_toprooms_t *t);
/* One chat message published to `room` (its canonical name). O(log k). */
void gw_toprooms_count(gw_toprooms_t *t, chat_str_t room);
/* Halves every score, error and evicted_max (values are untouched). O(k). */
void gw_toprooms_decay(gw_toprooms_t *t);
/* Iteration over the monitored rooms in no particular order: *pos starts at 0; fills *out and
 * returns 1, or returns 0 after the last one. t must not change during the iteration. */
int gw_toprooms_next(const gw_toprooms_t *t, size_t *pos, gw_toprooms_stat_t *out);
/* 1 when messages to `room` count into private_msgs (dm: and private: rooms), else 0. */
int gw_toprooms_is_private(chat_str_t room);

#endif
