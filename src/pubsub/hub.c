/* SPDX-License-Identifier: MIT */
/*
 * hub.c: a worker's subscribers, by channel, and the fan-out of delivered messages.
 *
 * A delivered message is encoded at most once per wire format on this worker, and the same
 * buffer is queued on every subscriber's connection. A subscriber that goes away during a
 * fan-out (its connection closed because it fell behind, say) is only marked dead; the fan-out
 * skips it and frees it when the pass is over, so the loop never walks freed memory.
 *
 * With the embedded broker a worker's subscriptions on a channel count once in the broker's
 * interest: the first one asks it (SUBSCRIBE, 0 -> 1), the last one to leave tells it
 * (UNSUBSCRIBE, 1 -> 0); in between, live-only subscribers and those resuming from where the
 * worker's stream of the channel is (a long poll's next poll) join, and anyone leaves, on this
 * worker alone, moving the count the broker handed over (lchan->interest). With the Redis
 * bridge every subscription asks the broker.
 */
#include "herald/chantab.h"
#include "herald/log.h"
#include "herald/mpsc.h"
#include "herald/pubsub.h"

#include <string.h>

typedef struct hd_lchan_s {
    hd_chan_t ch; /* in hub->chans, keyed by name */
    hd_list_t subs;
    uint32_t n_live;    /* linked subscribers */
    uint32_t n_pending; /* subscriptions waiting for the broker */
    uint32_t n_dead;    /* linked but unsubscribed during a fan-out */
    uint32_t n_asking;  /* this worker's SUBSCRIBEs on it the broker has not answered yet */
    /* Subscriptions made while one of those was on its way (s->link): they join when its reply
     * makes the worker carry the channel, instead of asking the broker again (wait_for_ask). */
    hd_list_t waiting;
    /* The embedded broker's count of this worker's subscribers here (NULL: unknown, or another
     * broker): held while above 0, moved by this worker between 1 and more (see join_locally). */
    uint32_t *interest;
    /* Where this worker's stream of the channel is: the last delivery or reply it ran. */
    uint64_t epoch, last_seq;
    /* Presence events waiting for the hub's flush (batch_event): references, in order. */
    hd_message_t **evs;
    uint32_t n_evs, cap_evs;
    /* Loop time its last presence frame went out (has_pres_sent: one did). is_due: its events
     * go out in this pass (hub->due_chans), not at the window's end (hub->held_chans). */
    uint64_t pres_sent_ms;
    unsigned has_pres_sent : 1;
    unsigned is_due : 1;
    char name[]; /* its name and a NUL (the table allocates the entry) */
} hd_lchan_t;

/*
 * A built answer shared while in use (hd_hub_shared_get/put): the body of a poll several
 * clients asked for is built once and queued by reference on each connection.
 */
#define SHARED_MAX     16
#define SHARED_KEY_MAX 192
typedef struct shared_s {
    hd_buf_t *body; /* NULL: a free slot */
    uint64_t stamp; /* put order: the oldest goes first when every slot is in use */
    uint16_t key_len;
    char key[SHARED_KEY_MAX];
} shared_t;

typedef struct hub_s {
    hd_worker_t *w;
    hd_chantab_t chans; /* hd_lchan_t */
    shared_t shared[SHARED_MAX];
    uint64_t shared_stamp;
    hd_lchan_t *delivering; /* channel of the fan-out in progress */
    /* Channels with presence events: due in this pass (leading edge), held to the window's end */
    hd_lchan_t **due_chans, **held_chans;
    size_t n_due_chans, cap_due_chans, n_held_chans, cap_held_chans;
    /* Joins and leaves of this pass for the broker, in order (a chain by next_op, send_presence),
     * and the mail to itself that sends them (flush_ops; in the mailbox while ops_flush_queued) */
    hd_breq_t *pres_ops, **pres_tail;
    hd_msg_t ops_flush;
    hd_msg_t ev_flush; /* the mail to itself that sends due_chans (flush_events) */
    uint64_t n_subs;
    unsigned broker_counts : 1;    /* the broker hands out interest counts (the embedded one) */
    unsigned ev_flush_queued : 1;  /* the flush of due_chans is in the mailbox */
    unsigned ops_flush_queued : 1; /* the flush of pres_ops is in the mailbox */
    uv_timer_t *hold;              /* presence_hold: the window open now (NULL: none) */
    /* Read by brokers on other threads (hd_hub_push_delivery_lazy): 1 while hold is open; the
     * joins and leaves pushed without a wake-up (every LAZY_WAKE_EVERY-th wakes). */
    uint32_t hold_open, lazy_pushes;
    hd_hub_stats_t stats;
    uint64_t refused_log_ms;                         /* when a refusal was last logged */
    uint64_t refused_since_log[HD_SUBS_LIMIT_COUNT]; /* refused since then, not logged */
} hub_t;

/* Subscriptions on the node: every worker adds and subtracts here, once per subscription. */
static uint64_t node_subs;

typedef struct delivery_s {
    hd_msg_t base;
    hd_message_t *m;
} delivery_t;

static hub_t *hub_of(hd_worker_t *w)
{
    return w->modules[HD_MODULE_HUB];
}

static hd_lchan_t *find_chan(hub_t *hub, const char *name, size_t len)
{
    hd_chan_t *c = hd_chantab_find(&hub->chans, name, len);
    return c ? hd_container_of(c, hd_lchan_t, ch) : NULL;
}

/* A message's channel here, with its hash when it carries one (channel_hash). */
static hd_lchan_t *find_msg_chan(hub_t *hub, const hd_message_t *m)
{
    hd_chan_t *c = hd_chantab_find_hashed(&hub->chans, m->channel, m->channel_len, m->channel_hash);
    return c ? hd_container_of(c, hd_lchan_t, ch) : NULL;
}

static hd_lchan_t *get_chan(hub_t *hub, const char *name, size_t len)
{
    int made;
    hd_lchan_t *c = hd_container_of(hd_chantab_get(&hub->chans, name, len, &made), hd_lchan_t, ch);
    if (made) {
        hd_list_init(&c->subs);
        hd_list_init(&c->waiting);
    }
    return c;
}

static void maybe_free_chan(hub_t *hub, hd_lchan_t *c)
{
    if (c->n_live || c->n_pending || c->n_dead || c->n_evs || hub->delivering == c)
        return;
    free(c->evs);
    hd_chantab_free(&hub->chans, &c->ch);
}

void hd_hub_init(hd_worker_t *w)
{
    hub_t *hub = hd_calloc(1, sizeof(*hub));
    hub->w = w;
    hub->pres_tail = &hub->pres_ops;
    HD_CHANTAB_INIT(&hub->chans, hd_lchan_t, 64);
    w->modules[HD_MODULE_HUB] = hub;
}

static void free_sub(hd_sub_t *s);
static void on_hold_closed(uv_handle_t *h);
static void on_hold_end(uv_timer_t *t);

static void free_chan_cb(hd_chan_t *ch, void *arg)
{
    hd_lchan_t *c = hd_container_of(ch, hd_lchan_t, ch);
    while (!hd_list_empty(&c->waiting)) { /* waiting behind a request that will not be answered */
        hd_sub_t *s = hd_container_of(c->waiting.next, hd_sub_t, link);
        hd_list_remove(&s->link);
        free_sub(s);
    }
    for (uint32_t i = 0; i < c->n_evs; i++)
        hd_message_unref(c->evs[i]);
    free(c->evs);
    hd_chantab_free(arg, ch);
}

void hd_hub_dispose(hd_worker_t *w)
{
    hub_t *hub = hub_of(w);
    if (!hub)
        return;
    /* Transports unsubscribed everything when their connections closed; what is left is
     * pending requests whose replies will never come (the broker is gone). */
    hd_chantab_foreach(&hub->chans, free_chan_cb, &hub->chans);
    hd_chantab_dispose(&hub->chans);
    free(hub->due_chans);
    free(hub->held_chans);
    if (hub->hold) /* an embedded node's loop, never run to its end: hd_worker_free runs it */
        uv_close((uv_handle_t *)hub->hold, on_hold_closed);
    if (hub->pres_ops)
        hd_breq_free(hub->pres_ops); /* the chain: nobody is left to be told */
    for (size_t i = 0; i < SHARED_MAX; i++) {
        if (hub->shared[i].body)
            hd_buf_unref(hub->shared[i].body);
    }
    free(hub);
    w->modules[HD_MODULE_HUB] = NULL;
}

/* ---- shared answers ---- */

/* Drops the bodies nobody but the cache holds any more: the cache keeps nothing alive. */
static void shared_sweep(hub_t *hub)
{
    for (size_t i = 0; i < SHARED_MAX; i++) {
        shared_t *e = &hub->shared[i];
        if (e->body && e->body->refs == 1) {
            hd_buf_unref(e->body);
            e->body = NULL;
        }
    }
}

hd_buf_t *hd_hub_shared_get(hd_worker_t *w, const void *key, size_t key_len)
{
    hub_t *hub = hub_of(w);
    shared_sweep(hub);
    for (size_t i = 0; i < SHARED_MAX; i++) {
        shared_t *e = &hub->shared[i];
        if (e->body && e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
            return hd_buf_ref(e->body);
    }
    return NULL;
}

void hd_hub_shared_put(hd_worker_t *w, const void *key, size_t key_len, hd_buf_t *body)
{
    hub_t *hub = hub_of(w);
    if (key_len > SHARED_KEY_MAX)
        return;
    shared_sweep(hub);
    shared_t *slot = &hub->shared[0];
    for (size_t i = 0; i < SHARED_MAX; i++) {
        shared_t *e = &hub->shared[i];
        if (!e->body) {
            slot = e;
            break;
        }
        if (e->stamp < slot->stamp)
            slot = e;
    }
    if (slot->body)
        hd_buf_unref(slot->body); /* every slot in use: the oldest leaves the cache only */
    slot->body = hd_buf_ref(body);
    slot->stamp = ++hub->shared_stamp;
    slot->key_len = (uint16_t)key_len;
    memcpy(slot->key, key, key_len);
}

/* Frees a subscription and gives its unit of the node budget back. */
static void free_sub(hd_sub_t *s)
{
    if (s->is_counted)
        __atomic_sub_fetch(&node_subs, 1, __ATOMIC_RELAXED);
    hd_member_unref(s->member);
    free(s);
}

/* The joins and leaves of this pass go to the broker, as one chain. */
static void flush_ops(hd_worker_t *w, hd_msg_t *msg)
{
    hub_t *hub = hub_of(w);
    (void)msg; /* hub->ops_flush */
    hub->ops_flush_queued = 0;
    hd_breq_t *r = hub->pres_ops;
    hub->pres_ops = NULL;
    hub->pres_tail = &hub->pres_ops;
    if (r)
        hd_broker_submit(r);
}

/*
 * Tells the broker a member's connection joins (HD_BREQ_JOIN) or leaves the channel. The
 * requests of a pass go together (flush_ops, a mail to this worker itself: it runs after
 * everything already in the mailbox, before the pass writes its output), so a burst of joins
 * costs the embedded broker one critical section and the other workers one wake-up. They stay
 * in order, so a LEAVE never passes its JOIN. A JOIN carries a reference to the subscription's
 * member (no copy); a LEAVE ends the membership: the subscription's reference goes with it.
 */
static void send_presence(hd_sub_t *s, int type)
{
    hub_t *hub = hub_of(s->worker);
    hd_lchan_t *c = s->chan;
    hd_breq_t *r = hd_breq_new(type, s->worker, c->name, hd_chan_name_len(&c->ch));
    r->channel_hash = c->ch.node.hash; /* the broker's tables look the name up without hashing */
    if (type == HD_BREQ_LEAVE) {
        r->member = s->member;
        s->member = NULL;
    } else {
        r->member = hd_member_ref(s->member);
    }
    *hub->pres_tail = r;
    hub->pres_tail = &r->next_op;
    if (!hub->ops_flush_queued) {
        hub->ops_flush_queued = 1;
        hub->ops_flush.cb = flush_ops;
        hd_worker_post(s->worker, &hub->ops_flush); /* this worker: no wake-up, this pass */
    }
}

void hd_hub_presence(hd_sub_t *s, int events, hd_member_t *member)
{
    s->wants_presence = events ? 1 : 0;
    hd_member_unref(s->member);
    s->member = member;
}

void hd_hub_ephemeral(hd_sub_t *s, int on)
{
    s->wants_ephemeral = on ? 1 : 0;
}

uint64_t hd_hub_subscriptions(void)
{
    return __atomic_load_n(&node_subs, __ATOMIC_RELAXED);
}

void hd_hub_note_refused(hd_worker_t *w, int limit)
{
    hub_t *hub = hub_of(w);
    HD_HUB_STAT_ADD(w, subscriptions_refused[limit], 1);
    hub->refused_since_log[limit]++;
    uint64_t now = uv_now(&w->loop);
    if (hub->refused_log_ms && now - hub->refused_log_ms < 10000)
        return;
    hub->refused_log_ms = now;
    hd_log_warn("subscriptions refused in the last 10 s: %llu at max_subscriptions (%llu on the "
                "node), %llu at max_subscriptions_per_connection",
                (unsigned long long)hub->refused_since_log[HD_SUBS_LIMIT_NODE],
                (unsigned long long)hd_hub_subscriptions(),
                (unsigned long long)hub->refused_since_log[HD_SUBS_LIMIT_CONNECTION]);
    memset(hub->refused_since_log, 0, sizeof(hub->refused_since_log));
}

static void send_unsubscribe(hd_worker_t *w, const char *name, size_t len)
{
    hd_breq_t *r = hd_breq_new(HD_BREQ_UNSUBSCRIBE, w, name, len);
    hd_broker_submit(r);
}

/*
 * One subscription of this worker on c ends. The broker hears of it only when it was the
 * worker's last (1 -> 0: the worker's interest goes, under the broker's lock); otherwise, when
 * the broker gave the worker its count, the worker takes one off by itself.
 */
static void leave(hd_worker_t *w, hd_lchan_t *c)
{
    if (c->interest && __atomic_load_n(c->interest, __ATOMIC_RELAXED) > 1) {
        __atomic_sub_fetch(c->interest, 1, __ATOMIC_RELAXED);
        return;
    }
    c->interest = NULL; /* the count reaches 0: the broker may free it */
    send_unsubscribe(w, c->name, hd_chan_name_len(&c->ch));
}

static void note_stream(hd_lchan_t *c, uint64_t epoch, uint64_t seq)
{
    if (epoch != c->epoch || seq > c->last_seq) {
        c->epoch = epoch;
        c->last_seq = seq;
    }
}

/* The answer to subscription s: from the broker (on_subscribe_reply: r), or a local join's
 * (on_join_mail: no r, no error, no history). */
static void subscribed(hd_worker_t *w, hd_sub_t *s, const hd_breq_t *r, uint64_t epoch,
                       uint64_t last_seq)
{
    hub_t *hub = hub_of(w);
    hd_lchan_t *c = s->chan;
    int err = r ? r->err : 0;
    s->is_pending = 0;
    c->n_pending--;
    if (!err) {
        if (r && r->interest) {
            c->interest = r->interest;
            hub->broker_counts = 1;
        }
        note_stream(c, epoch, last_seq);
    }
    if (s->is_orphan || err) {
        if (s->is_orphan && !err)
            leave(w, c);
        if (!s->is_orphan)
            s->ops->on_ready(s, NULL, 0, 0, err);
        free_sub(s);
        maybe_free_chan(hub, c);
        return;
    }
    s->epoch = epoch;
    s->last_seq = last_seq;
    hd_list_insert_tail(&c->subs, &s->link);
    c->n_live++;
    hub->n_subs++;
    if (s->member) { /* a member from now on: its LEAVE follows when it ends, even in on_ready */
        s->is_joined = 1;
        send_presence(s, HD_BREQ_JOIN);
    }
    if (r)
        s->ops->on_ready(s, r->msgs, r->n_msgs, r->gap, 0);
    else
        s->ops->on_ready(s, NULL, 0, 0, 0);
}

static void on_subscribe_reply(hd_worker_t *w, hd_breq_t *r)
{
    subscribed(w, r->cookie, r, r->epoch, r->last_seq);
    hd_breq_free(r);
}

/*
 * A subscription on a channel this worker carries for the embedded broker, live only or
 * resuming from where the worker's stream of the channel is: the worker already receives every
 * message of the channel published after the interest it holds was counted, so it joins without
 * asking the broker (no lock). The reply is a mail to itself (no wake-up) that runs after
 * everything already in its mailbox, so the stream may have moved by then:
 *   - live only: the subscription starts where the stream is;
 *   - since: any message of the channel up to `since` was published before the client could
 *     name it, so it reached this mailbox before the mail and the stream is at or past it.
 *     While the stream is still at or before `since`, every message after `since` is yet to
 *     come: the subscription starts at the stream, with no history. Once the stream is past
 *     `since` (a message came meanwhile), what it missed is read from history as a subscribe
 *     reads it (HD_BREQ_HISTORY under the broker's lock; the interest unit is already held, so
 *     what comes after the read is queued behind its reply).
 */
static void on_local_history(hd_worker_t *w, hd_breq_t *r)
{
    if (r->err) /* refused: the unit the join took goes back, as a refused subscribe has none */
        leave(w, ((hd_sub_t *)r->cookie)->chan);
    on_subscribe_reply(w, r);
}

static void on_local_join(hd_worker_t *w, hd_breq_t *r)
{
    hd_lchan_t *c = ((hd_sub_t *)r->cookie)->chan;
    if (r->has_since && (r->since_epoch != c->epoch || r->since_seq < c->last_seq)) {
        r->type = HD_BREQ_HISTORY;
        r->limit = 0; /* all of it, as a subscribe */
        r->reply_cb = on_local_history;
        hd_broker_submit(r);
        return;
    }
    r->epoch = c->epoch;
    r->last_seq = c->last_seq;
    on_subscribe_reply(w, r);
}

/* on_local_join's live-only case, the mail being the subscription's own (join_mail) instead
 * of a broker request: none is made, filled and freed for the most common subscribe. */
static void on_join_mail(hd_worker_t *w, hd_msg_t *msg)
{
    hd_sub_t *s = hd_container_of(msg, hd_sub_t, join_mail);
    subscribed(w, s, NULL, s->chan->epoch, s->chan->last_seq);
}

static int join_locally(hd_lchan_t *c, hd_breq_t *r)
{
    if (!c->interest ||
        (r->has_since && (r->since_epoch != c->epoch || r->since_seq < c->last_seq)))
        return 0;
    __atomic_add_fetch(c->interest, 1, __ATOMIC_RELAXED); /* 1 or more: the worker moves it */
    r->reply_cb = on_local_join;
    hd_breq_reply(r);
    return 1;
}

static void drain_waiting(hd_worker_t *w, hd_lchan_t *c);

static void on_asked(hd_worker_t *w, hd_breq_t *r)
{
    hd_lchan_t *c = ((hd_sub_t *)r->cookie)->chan;
    int has_waiting = !hd_list_empty(&c->waiting); /* then c outlives the reply (n_pending) */
    c->n_asking--;
    on_subscribe_reply(w, r);
    if (has_waiting)
        drain_waiting(w, c);
}

/* Sends r (a SUBSCRIBE) to the broker. */
static void ask(hd_lchan_t *c, hd_breq_t *r)
{
    c->n_asking++;
    r->reply_cb = on_asked;
    hd_broker_submit(r);
}

/*
 * A subscription on a channel this worker does not carry yet while a SUBSCRIBE of its on the
 * channel is on the way (long pollers answered together come back together): it waits for that
 * reply, which makes the worker carry the channel, and then joins as join_locally does, so a
 * burst of subscriptions asks the broker once. Its since is kept in the subscription meanwhile
 * (s->epoch and s->last_seq are unused until it is live). Only with a broker that hands out
 * counts (hub->broker_counts); the Redis bridge is asked every time, as before.
 */
static int wait_for_ask(hub_t *hub, hd_lchan_t *c, hd_breq_t *r)
{
    if (!hub->broker_counts || c->interest || !c->n_asking)
        return 0;
    hd_sub_t *s = r->cookie;
    s->is_waiting = 1;
    s->wants_since = r->has_since;
    s->epoch = r->since_epoch;
    s->last_seq = r->since_seq;
    hd_list_insert_tail(&c->waiting, &s->link);
    hd_breq_free(r);
    return 1;
}

/* The channel's SUBSCRIBE was answered: the subscriptions waiting for it join, or ask. */
static void drain_waiting(hd_worker_t *w, hd_lchan_t *c)
{
    if (!c->interest && c->n_asking)
        return; /* refused, but another is on its way: its reply drains them */
    while (!hd_list_empty(&c->waiting)) {
        hd_sub_t *s = hd_container_of(c->waiting.next, hd_sub_t, link);
        hd_list_remove(&s->link);
        hd_list_init(&s->link);
        s->is_waiting = 0;
        if (s->is_orphan) { /* ended while it waited: it took nothing yet */
            c->n_pending--;
            free_sub(s);
            continue;
        }
        hd_breq_t *r = hd_breq_new(HD_BREQ_SUBSCRIBE, w, c->name, hd_chan_name_len(&c->ch));
        r->cookie = s;
        r->has_since = s->wants_since;
        r->since_epoch = s->epoch;
        r->since_seq = s->last_seq;
        s->epoch = s->last_seq = 0;
        r->limit = hd_worker_conf(w)->poll_max_messages;
        if (!join_locally(c, r))
            ask(c, r);
    }
    maybe_free_chan(hub_of(w), c);
}

hd_sub_t *hd_hub_subscribe(hd_worker_t *w, const char *channel, size_t channel_len,
                           const uint64_t *since_epoch, const uint64_t *since_seq,
                           const hd_sub_ops_t *ops, void *data)
{
    hub_t *hub = hub_of(w);
    hd_sub_t *s = hd_calloc(1, sizeof(*s));
    s->ops = ops;
    s->data = data;
    s->worker = w;
    s->chan = get_chan(hub, channel, channel_len);
    s->chan->n_pending++;
    s->is_pending = 1;
    hd_list_init(&s->link);
    uint64_t max = hd_worker_conf(w)->max_subscriptions;
    int refused = __atomic_add_fetch(&node_subs, 1, __ATOMIC_RELAXED) > max;
    if (!refused) {
        s->is_counted = 1;
        if (!(since_epoch && since_seq) && s->chan->interest) { /* join_locally, live only */
            __atomic_add_fetch(s->chan->interest, 1, __ATOMIC_RELAXED);
            s->join_mail.cb = on_join_mail;
            hd_worker_post(w, &s->join_mail);
            return s;
        }
    }
    hd_breq_t *r = hd_breq_new(HD_BREQ_SUBSCRIBE, w, channel, channel_len);
    r->cookie = s;
    r->reply_cb = on_subscribe_reply;
    if (refused) {
        /* Refused as a broker refuses: the answer comes through this worker's mailbox. */
        __atomic_sub_fetch(&node_subs, 1, __ATOMIC_RELAXED);
        hd_hub_note_refused(w, HD_SUBS_LIMIT_NODE);
        r->err = HD_ESUBSCRIPTIONS;
        hd_breq_reply(r);
        return s;
    }
    if (since_epoch && since_seq) {
        r->has_since = 1;
        r->since_epoch = *since_epoch;
        r->since_seq = *since_seq;
    }
    r->limit = hd_worker_conf(w)->poll_max_messages;
    if (!join_locally(s->chan, r) && !wait_for_ask(hub, s->chan, r))
        ask(s->chan, r);
    return s;
}

void hd_hub_unsubscribe(hd_sub_t *s)
{
    if (s->is_pending) {
        s->is_orphan = 1; /* freed when the broker's reply comes */
        return;
    }
    if (s->is_dead)
        return;
    hub_t *hub = hub_of(s->worker);
    hd_lchan_t *c = s->chan;
    if (s->is_joined) {
        s->is_joined = 0;
        send_presence(s, HD_BREQ_LEAVE);
    }
    leave(s->worker, c);
    c->n_live--;
    hub->n_subs--;
    if (!hub->n_subs && hub->hold) /* nobody left to hold for (the node stops, say) */
        uv_timer_start(hub->hold, on_hold_end, 0, 0);
    if (hub->delivering == c) {
        s->is_dead = 1; /* the fan-out walking this list frees it */
        c->n_dead++;
        return;
    }
    hd_list_remove(&s->link);
    free_sub(s);
    maybe_free_chan(hub, c);
}

const char *hd_sub_channel(const hd_sub_t *s)
{
    return s->chan->name;
}

uint64_t hd_hub_local_subscribers(hd_worker_t *w)
{
    return hub_of(w)->n_subs;
}

hd_hub_stats_t *hd_hub_stats(hd_worker_t *w)
{
    return &hub_of(w)->stats;
}

static void fan_out(hub_t *hub, hd_lchan_t *c, hd_message_t *m)
{
    hd_buf_t *enc[HD_FMT_COUNT] = {0};
    uint64_t n = 0;
    hub->delivering = c;
    hd_list_t *pos;
    for (pos = c->subs.next; pos != &c->subs; pos = pos->next) {
        hd_sub_t *s = hd_container_of(pos, hd_sub_t, link);
        if (s->is_dead)
            continue;
        if (m->epoch != s->epoch) {
            s->epoch = m->epoch; /* a new epoch: its sequence starts over */
            if (s->ops->on_gap) {
                s->ops->on_gap(s);
                if (s->is_dead)
                    continue;
            }
        } else if (m->seq <= s->last_seq) {
            continue; /* already delivered (history on resume) */
        } else if (m->is_after_gap && s->ops->on_gap) {
            s->ops->on_gap(s); /* the broker lost messages just before this one */
            if (s->is_dead)
                continue;
        }
        s->last_seq = m->seq;
        int fmt = s->ops->format;
        if (!enc[fmt])
            enc[fmt] = hd_message_encode(m, fmt);
        s->ops->on_message(s, m, enc[fmt]);
        n++;
    }
    hub->delivering = NULL;
    for (int i = 0; i < HD_FMT_COUNT; i++)
        if (enc[i])
            hd_buf_unref(enc[i]);
    if (c->n_dead) {
        hd_list_t *tmp;
        hd_list_foreach_safe(pos, tmp, &c->subs)
        {
            hd_sub_t *s = hd_container_of(pos, hd_sub_t, link);
            if (s->is_dead) {
                hd_list_remove(&s->link);
                free_sub(s);
            }
        }
        c->n_dead = 0;
    }
    HD_HUB_STAT_ADD(hub->w, deliveries, n);
    maybe_free_chan(hub, c);
}

/*
 * A live-only event (ephemeral message, presence join or leave): to every live subscriber on a
 * stream, presence events only to those that asked; to a held long poll only what it asked for
 * (hd_hub_presence, hd_hub_ephemeral: each answers the poll); no sequence, no history, nothing
 * remembered.
 */
static void fan_out_event(hub_t *hub, hd_lchan_t *c, hd_message_t *m)
{
    hd_buf_t *enc[HD_FMT_COUNT] = {0};
    uint64_t n = 0;
    int is_presence = m->kind != HD_MSG_EPHEMERAL;
    hub->delivering = c;
    hd_list_t *pos;
    for (pos = c->subs.next; pos != &c->subs; pos = pos->next) {
        hd_sub_t *s = hd_container_of(pos, hd_sub_t, link);
        int fmt = s->ops->format;
        if (s->is_dead || fmt == HD_FMT_JSON)
            continue;
        if (is_presence ? !s->wants_presence || fmt == HD_FMT_WS_RAW
                        : fmt == HD_FMT_POLL_ANSWER && !s->wants_ephemeral)
            continue;
        if (!enc[fmt])
            enc[fmt] = hd_message_encode(m, fmt);
        s->ops->on_message(s, m, enc[fmt]);
        n++;
    }
    hub->delivering = NULL;
    for (int i = 0; i < HD_FMT_COUNT; i++)
        if (enc[i])
            hd_buf_unref(enc[i]);
    if (c->n_dead) {
        hd_list_t *tmp;
        hd_list_foreach_safe(pos, tmp, &c->subs)
        {
            hd_sub_t *s = hd_container_of(pos, hd_sub_t, link);
            if (s->is_dead) {
                hd_list_remove(&s->link);
                free_sub(s);
            }
        }
        c->n_dead = 0;
    }
    HD_HUB_STAT_ADD(hub->w, deliveries, n);
    maybe_free_chan(hub, c);
}

const uint64_t hd_latency_bounds_us[HD_LATENCY_BUCKETS - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000};

static void record_latency(hd_worker_t *w, const hd_message_t *m)
{
    uint64_t us = (uv_hrtime() - m->publish_ns) / 1000u;
    int i = 0;
    while (i < HD_LATENCY_BUCKETS - 1 && us > hd_latency_bounds_us[i])
        i++;
    HD_HUB_STAT_ADD(w, latency_buckets[i], 1);
    HD_HUB_STAT_ADD(w, latency_sum_us, us);
    HD_HUB_STAT_ADD(w, latency_count, 1);
}

/*
 * Presence events are batched: the joins and leaves of a channel that reach this worker
 * together go out as one event (HD_MSG_PRESENCE), in the order they came, so a burst of joins
 * on a channel of many members costs each subscriber one frame, not one per join. One event
 * alone goes out as it came (join or leave).
 *
 * With presence_hold the hold has a leading edge, per channel. An event on a channel that holds
 * no events and sent no presence frame within the last presence_hold (a quiet channel) is due:
 * it goes out in this loop pass, with whatever else reaches the channel in the pass (a mail to
 * this worker itself: it runs after everything already in the mailbox). Any other event is
 * held: it waits for the end of the worker's window, which its first held event opens, and
 * then each channel's held events go out as one frame. So a quiet room's join is not delayed,
 * and a busy room's member gets about one presence frame per hold (a window may end soon after
 * a channel's leading edge: at most two within a hold). The window is a timer of the hub's own
 * (made for it, closed after it: an idle worker holds no handle). It ends in the next loop pass
 * when the worker's last subscription ends, so a stopping node does not wait for it once its
 * connections are closed. A held channel reaching HOLD_MAX_EVENTS events becomes due, so what
 * a window holds is bounded by its channels, not by its length. With presence_hold 0 every
 * event is due.
 *
 *   event --batch_event--> c->evs (references) --flush_chans--> one message --> fan_out_event
 *           quiet c: hub->due_chans, flushed in this pass (flush_events)
 *           other c: hub->held_chans, flushed at the window's end (on_hold_end)
 *   (each in the order its channels got their first event; a channel is in one list at most,
 *   and only while it holds events)
 */
#define HOLD_MAX_EVENTS 1024

static void list_chan(hd_lchan_t ***list, size_t *n, size_t *cap, hd_lchan_t *c)
{
    *list = hd_grow_array(*list, cap, *n + 1, sizeof(**list), 8);
    (*list)[(*n)++] = c;
}

/* Sends each channel's events of list (n of them; the caller empties the list first). */
static void flush_chans(hub_t *hub, hd_lchan_t **list, size_t n_chans)
{
    uint64_t now = uv_now(&hub->w->loop);
    for (size_t k = 0; k < n_chans; k++) {
        hd_lchan_t *c = list[k];
        uint32_t n = c->n_evs;
        hd_message_t *m = n == 1 ? hd_message_ref(c->evs[0]) : hd_presence_batch(c->evs, n);
        for (uint32_t i = 0; i < n; i++)
            hd_message_unref(c->evs[i]);
        c->n_evs = 0;
        c->is_due = 0;
        c->pres_sent_ms = now;
        c->has_pres_sent = 1;
        if (c->n_live)
            fan_out_event(hub, c, m); /* frees c when it has nothing left */
        else
            maybe_free_chan(hub, c);
        hd_message_unref(m);
    }
}

static void flush_events(hd_worker_t *w, hd_msg_t *msg)
{
    hub_t *hub = hub_of(w);
    (void)msg; /* hub->ev_flush */
    hub->ev_flush_queued = 0;
    size_t n = hub->n_due_chans;
    hub->n_due_chans = 0;
    flush_chans(hub, hub->due_chans, n);
}

static void on_hold_closed(uv_handle_t *h)
{
    free(h);
}

/*
 * The window ends: first the mailbox is drained, so the joins and leaves brokers pushed without
 * a wake-up while it was open (hd_hub_push_delivery_lazy) join this window's batches, in their
 * order, behind what was drained before (an event of a quiet channel among them is due and goes
 * out in the drain: it waited for this window, up to the hold, unless something woke the worker
 * before). hold_open goes to 0 before the drain (both sides have a full fence between their
 * store and their load): a broker that still reads 1 pushed before this drain, one that reads 0
 * wakes the worker, whose next drain opens a new window if it holds anything.
 */
static void on_hold_end(uv_timer_t *t)
{
    hub_t *hub = t->data;
    __atomic_store_n(&hub->hold_open, 0, __ATOMIC_SEQ_CST);
    hd_fence_full();
    hd_worker_wake(hub->w); /* this worker: drained right here */
    hd_worker_run_local(hub->w);
    hub->hold = NULL;
    uv_close((uv_handle_t *)t, on_hold_closed);
    size_t n = hub->n_held_chans;
    hub->n_held_chans = 0;
    flush_chans(hub, hub->held_chans, n);
}

static void queue_flush(hub_t *hub)
{
    hub->ev_flush_queued = 1;
    hub->ev_flush.cb = flush_events;
    hd_worker_post(hub->w, &hub->ev_flush); /* this worker: no wake-up, drained in this pass */
}

/* c, held, reached HOLD_MAX_EVENTS: it leaves the window for this pass, its order kept. */
static void make_due(hub_t *hub, hd_lchan_t *c)
{
    size_t i = hub->n_held_chans;
    while (i > 0 && hub->held_chans[i - 1] != c)
        i--;
    HD_ASSERT(i > 0);
    memmove(&hub->held_chans[i - 1], &hub->held_chans[i],
            (hub->n_held_chans - i) * sizeof(*hub->held_chans));
    hub->n_held_chans--;
    c->is_due = 1;
    list_chan(&hub->due_chans, &hub->n_due_chans, &hub->cap_due_chans, c);
}

static void batch_event(hub_t *hub, hd_lchan_t *c, hd_message_t *m)
{
    uint64_t hold_ms = hd_worker_conf(hub->w)->presence_hold_ms;
    if (c->n_evs == 0) {
        uint64_t now = uv_now(&hub->w->loop);
        c->is_due = !hold_ms || !c->has_pres_sent || now - c->pres_sent_ms >= hold_ms;
        if (c->is_due)
            list_chan(&hub->due_chans, &hub->n_due_chans, &hub->cap_due_chans, c);
        else
            list_chan(&hub->held_chans, &hub->n_held_chans, &hub->cap_held_chans, c);
    }
    size_t cap = c->cap_evs;
    c->evs = hd_grow_array(c->evs, &cap, c->n_evs + 1u, sizeof(*c->evs), 4);
    c->cap_evs = (uint32_t)cap;
    c->evs[c->n_evs++] = m; /* the reference passes */
    if (!c->is_due && c->n_evs >= HOLD_MAX_EVENTS)
        make_due(hub, c);
    if (c->is_due) {
        if (!hub->ev_flush_queued)
            queue_flush(hub);
    } else if (!hub->hold) {
        hub->hold = hd_malloc(sizeof(*hub->hold));
        uv_timer_init(&hub->w->loop, hub->hold);
        hub->hold->data = hub;
        uv_timer_start(hub->hold, on_hold_end, hold_ms, 0);
        __atomic_store_n(&hub->hold_open, 1, __ATOMIC_RELEASE);
    }
}

static void on_delivery(hd_worker_t *w, hd_msg_t *msg)
{
    delivery_t *d = (delivery_t *)msg;
    hub_t *hub = hub_of(w);
    hd_message_t *m = d->m;
    free(d);
    if (m->kind != HD_MSG_NORMAL) {
        HD_HUB_STAT_ADD(w, events_in, 1);
        hd_lchan_t *c = find_msg_chan(hub, m);
        if (c && c->n_live && (m->kind == HD_MSG_JOIN || m->kind == HD_MSG_LEAVE)) {
            batch_event(hub, c, m);
            return;
        }
        if (c && c->n_live)
            fan_out_event(hub, c, m);
        hd_message_unref(m);
        return;
    }
    HD_HUB_STAT_ADD(w, messages_in, 1);
    record_latency(w, m);
    hd_lchan_t *c = find_chan(hub, m->channel, m->channel_len);
    if (c)
        note_stream(c, m->epoch, m->seq);
    if (c && c->n_live)
        fan_out(hub, c, m);
    hd_message_unref(m);
}

void hd_hub_push_delivery(hd_worker_t *w, hd_message_t *m)
{
    delivery_t *d = hd_malloc(sizeof(*d));
    d->base.cb = on_delivery;
    d->m = m; /* the caller's reference travels with the message */
    hd_worker_push(w, &d->base);
}

/*
 * A join or leave for a worker whose presence_hold window is open waits in its mailbox: the
 * window's end drains it (on_hold_end), and so does any wake-up before (a message, a reply),
 * so the mailbox's order is kept and the event still goes out with its window. Saves the
 * wake-up (an eventfd write, the worker's read and loop pass) per event per worker carrying
 * the channel. The broker cannot tell a quiet channel from a held one (that is the worker's),
 * so the event of a quiet channel on a worker holding others waits too: up to the hold when
 * nothing else wakes the worker, instead of going out in the pass it would have. Every
 * LAZY_WAKE_EVERY-th such push wakes the worker anyway, so a window's batches still reach
 * HOLD_MAX_EVENTS and go out before the window ends, and what waits undrained in a mailbox is
 * bounded.
 */
#define LAZY_WAKE_EVERY 256

int hd_hub_push_delivery_lazy(hd_worker_t *w, hd_message_t *m)
{
    hub_t *hub = hub_of(w);
    int is_held = m->kind == HD_MSG_JOIN || m->kind == HD_MSG_LEAVE;
    hd_hub_push_delivery(w, m); /* a full fence after the link (hd_mpsc_push) */
    if (!is_held || !hub || !__atomic_load_n(&hub->hold_open, __ATOMIC_SEQ_CST))
        return 1;
    return __atomic_add_fetch(&hub->lazy_pushes, 1, __ATOMIC_RELAXED) % LAZY_WAKE_EVERY == 0;
}

void hd_hub_post_delivery(hd_worker_t *w, hd_message_t *m)
{
    hd_hub_push_delivery(w, m);
    hd_worker_wake(w);
}
