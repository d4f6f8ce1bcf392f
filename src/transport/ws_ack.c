/* SPDX-License-Identifier: MIT */
/*
 * ws_ack.c: acknowledged delivery on a WebSocket subscription (docs/chat.md): the position the
 * client acked, cumulatively, checked against what was sent, and the "acked" receipts of
 * messages whose publisher asked for them, due when the client's ack passes their id; and the
 * "delivered" receipt of a message queued on a subscriber (receipt.c carries both to the
 * publisher's worker). A subscription made without "ack" holds nothing here.
 *
 * Where a client resumes after a reconnect is the client's to say: it subscribes again with
 * "since" its last acked id (not the last id received), and history replays what it had not
 * processed. docs/chat.md says why the server keeps no acked position across connections.
 */
#include "ws_internal.h"

#include <string.h>

/* A message with receipts, queued on the subscription, whose ack is awaited. */
typedef struct ws_due_s {
    uint64_t epoch, seq;
    hd_rcpt_t *to; /* a reference */
} ws_due_t;

/*
 * The receipts due, oldest first, in a ring: a note appends at the tail, an ack (or the
 * connection's budget, WS_MAX_DUE) drops from the head, each O(1); the ring doubles when full,
 * so it holds at most the next power of two of WS_MAX_DUE, and is freed when an ack empties it.
 */
typedef struct ws_ack_s {
    uint64_t epoch, seq; /* the last ack (0, 0: none) */
    ws_due_t *due;       /* the ring: cap_due entries (0 or a power of two) */
    size_t head, n_due, cap_due;
} ws_ack_t;

/* The i-th oldest receipt due (i < a->n_due). */
static ws_due_t *due_at(const ws_ack_t *a, size_t i)
{
    return &a->due[(a->head + i) & (a->cap_due - 1)];
}

void hd_ws_ack_enable(ws_sub_t *e)
{
    if (!e->ack)
        e->ack = hd_calloc(1, sizeof(*e->ack));
}

/* Drops the n oldest receipts due of e's acks (their references). */
static void drop_due(ws_t *ws, ws_ack_t *a, size_t n)
{
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        hd_rcpt_unref(due_at(a, i)->to);
    a->head = (a->head + n) & (a->cap_due - 1);
    a->n_due -= n;
    ws->n_due -= n;
    if (a->n_due == 0 && a->cap_due > 4) { /* a burst acked: its ring goes */
        free(a->due);
        a->due = NULL;
        a->cap_due = 0;
    }
    if (a->n_due == 0)
        a->head = 0;
}

/* One more receipt due, at the tail. */
static void push_due(ws_t *ws, ws_ack_t *a, ws_due_t d)
{
    if (a->n_due == a->cap_due) { /* full (or none yet): a ring twice the size, unwrapped */
        size_t cap = a->cap_due ? 2 * a->cap_due : 4;
        ws_due_t *ring = hd_malloc(cap * sizeof(*ring));
        for (size_t i = 0; i < a->n_due; i++)
            ring[i] = *due_at(a, i);
        free(a->due);
        a->due = ring;
        a->cap_due = cap;
        a->head = 0;
    }
    *due_at(a, a->n_due++) = d;
    ws->n_due++;
}

void hd_ws_ack_free(ws_t *ws, ws_sub_t *e)
{
    ws_ack_t *a = e->ack;
    if (!a)
        return;
    drop_due(ws, a, a->n_due);
    free(a->due);
    free(a);
    e->ack = NULL;
}

void hd_ws_ack_note(ws_t *ws, ws_sub_t *e, hd_message_t *m)
{
    if (!m->rcpt || m->kind != HD_MSG_NORMAL || !ws->pub.conn)
        return;
    hd_rcpt_delivered(m, ws->pub.conn->id);
    ws_ack_t *a = e->ack;
    if (!a || hd_rcpt_is_publisher(m->rcpt, ws->pub.conn->id))
        return; /* no acks asked here; or the publisher's own copy */
    if (ws->n_due >= WS_MAX_DUE) {
        HD_STAT_INC(ws->pub.w, receipts_dropped);
        if (a->n_due == 0)
            return;         /* the other subscriptions hold the budget: this one is not kept */
        drop_due(ws, a, 1); /* the oldest of this subscription makes room */
    }
    push_due(ws, a, (ws_due_t){m->epoch, m->seq, hd_rcpt_ref(m->rcpt)});
}

int hd_ws_ack(ws_t *ws, ws_sub_t *e, uint64_t epoch, uint64_t seq, const char **code,
              const char **why)
{
    ws_ack_t *a = e->ack;
    if (!a) {
        *code = "ack_off";
        *why = "this subscription was made without \"ack\":true";
        return -1;
    }
    hd_sub_t *s = e->sub;
    if (!s || s->is_pending || s->is_waiting) {
        *code = "ack_ahead";
        *why = "nothing was sent on this subscription yet (wait for \"subscribed\")";
        return -1;
    }
    if (epoch != s->epoch) {
        *code = "bad_id";
        *why = "the id is of another epoch than this subscription's messages";
        return -1;
    }
    if (seq > s->last_seq) {
        *code = "ack_ahead";
        *why = "the id is ahead of the last message sent on this subscription";
        return -1;
    }
    if (a->epoch == epoch && seq <= a->seq)
        return 0; /* cumulative: already acked */
    a->epoch = epoch;
    a->seq = seq;
    size_t n = 0;
    while (n < a->n_due && (due_at(a, n)->epoch != epoch || due_at(a, n)->seq <= seq))
        n++; /* due in order: up to the ack (and any of an older epoch: never to be acked) */
    if (n == 0 || !ws->pub.conn)
        return 0;
    char *member = hd_tp_publisher_json(hd_ws_identity(ws)); /* NULL: anonymous */
    for (size_t i = 0; i < n; i++) {
        const ws_due_t *d = due_at(a, i);
        if (d->epoch == epoch)
            hd_rcpt_acked(d->to, e->channel, epoch, d->seq, member, ws->pub.conn->id);
    }
    free(member);
    drop_due(ws, a, n);
    return 0;
}
