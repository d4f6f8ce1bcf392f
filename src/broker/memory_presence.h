/* SPDX-License-Identifier: MIT */
/*
 * memory_presence.h (private to src/broker): the embedded broker's presence members, by
 * channel (docs/chat.md). memory.c owns one table and calls it only under its mutex, as it does
 * the store; nothing here locks, sends or wakes: a join or leave returns the event to hand to
 * the workers carrying the channel, or NULL when nobody's presence changed.
 *
 *   channel "room:1"  (hd_pchan_t, in pres->chans)
 *     member "alice"  {"sub":"alice","info":{..}}   conns: [n1-3, n1-9]   (two tabs)
 *     member "bob"    {"sub":"bob"}                 conns: [n1-4]
 *     member "n1-7"   {"conn":"n1-7"}               conns: [n1-7]        (anonymous)
 *
 * A member joins with its first connection and leaves after its last: a join of a member
 * already there, or a leave of a connection that is not its last, changes nothing anyone sees.
 * A leave of a connection the table does not hold (its join was refused by the budget) is
 * ignored, so no leave is ever emitted twice.
 *
 * Bounds: every connection of a member is one subscription (max_subscriptions bounds them
 * all; nothing bounds one member's: a page lists HD_PRESENCE_MEMBER_CONNS of them), and at most
 * max_channels channels are tracked at once (presence_max_channels): a join that would track one
 * more is refused (HD_ECHANNELS) and counted.
 */
#ifndef HERALD_BROKER_MEMORY_PRESENCE_H
#define HERALD_BROKER_MEMORY_PRESENCE_H

#include "herald/chantab.h"
#include "herald/pubsub.h"

typedef struct hd_mpres_s {
    hd_chantab_t chans; /* hd_pchan_t (memory_presence.c) */
    uint64_t max_channels;
    uint64_t members; /* members of every channel */
    uint64_t conns;   /* their connections */
    uint64_t refused; /* joins refused at max_channels */
    uint64_t events;  /* join and leave events made */
    uint64_t refused_logged, refused_log_ms;
} hd_mpres_t;

void hd_mpres_init(hd_mpres_t *p, uint64_t max_channels);
/* Frees every channel and member. */
void hd_mpres_dispose(hd_mpres_t *p);
/*
 * One more connection of *member on channel: the table takes the caller's reference to the
 * member (*member NULL) and keeps it while the connection is listed (the member is shared,
 * never copied). Returns the join event (one reference) when the member is new there, else
 * NULL; *err is 0, or HD_ECHANNELS when the channel is not tracked and the budget is spent
 * (nothing changed, *member kept). hash: hd_hash(channel, len), or 0 (computed here); the event
 * carries it (channel_hash).
 */
hd_message_t *hd_mpres_join(hd_mpres_t *p, const char *channel, size_t len, uint64_t hash,
                            hd_member_t **member, int *err);
/* That connection of member is gone. Returns the leave event (one reference) when it was the
 * member's last, else NULL (also when the table does not hold it). hash: as for a join. */
hd_message_t *hd_mpres_leave(hd_mpres_t *p, const char *channel, size_t len, uint64_t hash,
                             const hd_member_t *member);
/* Members on channel (0: none, or not tracked). */
uint64_t hd_mpres_count(const hd_mpres_t *p, const char *channel, size_t len);
/*
 * Fills r (PRESENCE): r->members, and r->page, the text
 *   "members":[{<member's json>,"conns":[..],"conn_count":N},..],"next":"<key>"|null
 * of at most r->limit members (1..HD_PRESENCE_PAGE_MAX) whose keys sort after r->cursor (NULL:
 * from the first), in byte order of their keys, each with its first HD_PRESENCE_MEMBER_CONNS
 * connection ids at most and their count; next is the key to ask after, null on the last page.
 * Costs a binary search and the page's copy: the members are kept sorted by key, in blocks (a
 * join or leave moves pointers inside one block).
 * With r->member_key, that member's connections instead: r->members their count (0: not a
 * member) and r->page "member":<json>|null,"conns":[..],"next":"<conn>"|null, at most r->limit
 * ids after the id r->cursor (NULL: from the first), in byte order (a binary search).
 */
void hd_mpres_page(const hd_mpres_t *p, hd_breq_t *r);
/* Logs refused joins at most once per 10 s of now_ms (monotonic), with the count since. */
void hd_mpres_log_limits(hd_mpres_t *p, uint64_t now_ms);

#endif
