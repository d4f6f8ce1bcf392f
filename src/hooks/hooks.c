/* SPDX-License-Identifier: MIT */
/*
 * hooks.c: the webhook sender's thread, its loop and its mailbox, and the entry points other
 * threads call (hooks.h). A worker that accepted a publish checks the endpoints' channel
 * patterns (the conf snapshot is immutable, so reading it needs no lock); only when one matches
 * does it push a message holding references to the published messages; the loop's wake-up
 * (wake.h) is rung once per worker loop pass, after the pass's answers are written
 * (hd_worker_wake_later), so the events of every publish a pass took go with one wake-up, and
 * the thread drains all its mail each time it wakes. Everything else (bodies, signatures,
 * connections, retries) happens on this thread, in the sender's files (sender.h) and client.c.
 *
 * How the thread waits (run()):
 *
 *   idle        blocked in the loop (epoll): a wake-up, an answer or a timer wakes it
 *   mail        drained; the wake-up held for HOLD_MS (workers skip the eventfd), the loop
 *               still woken by answers; at the hold's end the mailbox is drained again:
 *     nothing   -> idle
 *     mail      -> ticking (the mail is sustained: 500 a second or more)
 *   ticking     the thread sleeps HOLD_MS, then runs the loop once without waiting (every
 *               answer, timer and wake-up that came meanwhile, in one epoll_wait) and drains
 *               the mailbox; a tick that finds no mail -> idle
 *
 * Ticking is what makes the per-event cost fall with the rate: at 2,000 events a second the
 * thread wakes 500 times, not once per answer (which the loop alone would do: each answer of a
 * receiver is its own wake-up, two context switches), and the answers of a tick are read
 * together. An answer waits at most HOLD_MS more to be read; a lone event is sent at once and
 * its answer read when it comes. While an endpoint has events waiting for room under
 * webhook_concurrency (a backlog), the thread does not tick: answers make that room, and are
 * read as they come.
 *
 * Without Redis the thread runs under SCHED_IDLE (Linux), with Redis at nice 10: it gets a core
 * only when no worker wants it, so a backlog draining after a receiver's outage does not take
 * the cores from the workers (yield_to_workers()).
 *
 * The mailbox is bounded by a count (INBOX_MAX messages not yet taken by the loop) and by the
 * bytes of the published messages they hold (webhook_max_memory, plus one mail, as one batch
 * publish may hold more; a count alone would let 64k mails hold 64k batches of messages of
 * max_message_size): past either an event is dropped and
 * counted (dropped{reason="memory"}), so a loop that cannot keep up never makes the workers
 * hold memory without limit.
 */
#define _GNU_SOURCE /* SCHED_IDLE */
#include "herald/log.h"
#include "herald/wake.h"
#include "internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define INBOX_MAX 65536
/* Once woken with mail, the thread holds its wake-up for this long and drains the mailbox when
 * it ends; while each drain finds mail, it ticks at this period (the top of the file): under
 * load a tick's events come in one batch (one wake-up, their requests written together, their
 * answers read together) instead of a wake-up per publish and per answer. An event waits at
 * most this long more; a lone one none. */
#define HOLD_MS 2

struct hd_hooks_s {
    hd_conf_t *conf;
    uv_loop_t loop;
    hd_wake_t wakeup; /* workers ring it once per loop pass (hd_worker_wake_later) */
    uv_timer_t hold;  /* after mail: the wake-up held, the mailbox drained when it ends */
    unsigned is_holding : 1;
    unsigned is_ticking : 1;  /* the mail is sustained: run() sleeps and polls (top of file) */
    unsigned is_stopping : 1; /* the stop was taken: no more holds or ticks */
    hd_mpsc_t mailbox;
    uv_thread_t thread;
    SSL_CTX *tls;
    hk_sender_t *sender;
    hk_authz_t *authz;      /* NULL without authorize_hook */
    hk_notify_t *notify;    /* NULL without notify_hook */
    unsigned notify_events; /* HD_NOTIFY_* the notify hook wants (0: none) */
    hk_filter_t *filter;    /* which events the endpoints want (conf and admin API) */
    uint32_t inbox;         /* atomic: messages pushed and not yet taken */
    size_t inbox_bytes;     /* atomic: what those hold (msg_cost), at most webhook_max_memory */
    unsigned is_started : 1;
    unsigned is_stop_sent : 1; /* the stop is in the mailbox (main thread) */
    unsigned is_joined : 1;    /* the thread has ended (main thread) */
    hd_hooks_stats_t stats;
    /* every endpoint's figures, published by the hooks thread every HD_HOOKS_EP_STATS_MS for
     * /metrics (a timer, not the delivery path: no lock there) */
    uv_timer_t ep_timer;
    uv_mutex_t ep_mu;
    hd_hooks_ep_stats_t *ep_stats; /* under ep_mu */
    size_t n_ep_stats;             /* under ep_mu */
};

typedef struct pub_msg_s {
    hd_msg_t base;
    hd_hooks_t *h;
    size_t bytes; /* counted in inbox_bytes */
    size_t n;
    hd_message_t *msgs[];
} pub_msg_t;

typedef struct chan_msg_s {
    hd_msg_t base;
    hd_hooks_t *h;
    int occupied;
    size_t len;
    char channel[HD_CHANNEL_MAX + 1];
} chan_msg_t;

typedef struct member_msg_s {
    hd_msg_t base;
    hd_hooks_t *h;
    size_t bytes; /* counted in inbox_bytes */
    hd_message_t *ev;
} member_msg_t;

typedef struct stop_msg_s {
    hd_msg_t base;
    hd_hooks_t *h;
} stop_msg_t;

/* Set by the main thread (hd_hooks_set) while other threads may read it already: the Redis
 * bridge's thread connects before the hooks exist (hd_hooks_want_channel_events), and workers
 * publish until the stop. Release and acquire: a reader sees the hooks whole. */
static hd_hooks_t *the_hooks;

static inline hd_hooks_t *hooks_now(void)
{
    return __atomic_load_n(&the_hooks, __ATOMIC_ACQUIRE);
}

void hd_hooks_set(hd_hooks_t *h)
{
    __atomic_store_n(&the_hooks, h, __ATOMIC_RELEASE);
}

hd_hooks_t *hd_hooks_get(void)
{
    return hooks_now();
}

/* ---- producers (any thread) ---- */

/* What a message held in the inbox costs: shared with its subscribers, but it may outlive them. */
static size_t msg_cost(const hd_message_t *m)
{
    return sizeof(*m) + m->len;
}

/* Mail m holding bytes (msg_cost) for the loop; -1 (dropped, counted) past a bound. */
static int post(hd_hooks_t *h, hd_msg_t *m, size_t bytes)
{
    uint32_t n = __atomic_add_fetch(&h->inbox, 1, __ATOMIC_RELAXED);
    size_t held = __atomic_add_fetch(&h->inbox_bytes, bytes, __ATOMIC_RELAXED);
    /* A mail alone in the inbox always passes (one batch publish, at most max_body_size, may
     * hold more than webhook_max_memory): the queue's own bounds then decide per event. */
    if (n > INBOX_MAX || (held > h->conf->webhook_max_memory_bytes && held != bytes)) {
        __atomic_sub_fetch(&h->inbox, 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&h->inbox_bytes, bytes, __ATOMIC_RELAXED);
        HK_ADD(h->stats.dropped[HD_HOOKS_DROP_MEMORY], 1);
        return -1;
    }
    hd_mpsc_push(&h->mailbox, m);
    hd_worker_wake_later(&h->wakeup);
    return 0;
}

static void on_pub(hd_worker_t *w, hd_msg_t *msg)
{
    pub_msg_t *p = (pub_msg_t *)msg;
    (void)w;
    __atomic_sub_fetch(&p->h->inbox, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&p->h->inbox_bytes, p->bytes, __ATOMIC_RELAXED);
    for (size_t i = 0; i < p->n; i++) {
        if (p->h->sender)
            hk_sender_message(p->h->sender, p->msgs[i]);
        hd_message_unref(p->msgs[i]);
    }
    free(p);
}

static int wanted(const hd_hooks_t *h, unsigned ev, const char *channel, size_t len)
{
    return hk_filter_wanted(h->filter, ev, channel, len);
}

void hd_hooks_on_published(hd_message_t *const *msgs, size_t n)
{
    hd_hooks_t *h = hooks_now();
    if (!h || !(hk_filter_events(h->filter) & HD_WEBHOOK_EV_MESSAGE))
        return;
    pub_msg_t *p = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!wanted(h, HD_WEBHOOK_EV_MESSAGE, msgs[i]->channel, msgs[i]->channel_len))
            continue;
        if (!p) {
            p = hd_malloc(sizeof(*p) + (n - i) * sizeof(p->msgs[0]));
            p->base.cb = on_pub;
            p->h = h;
            p->bytes = 0;
            p->n = 0;
        }
        p->msgs[p->n++] = hd_message_ref(msgs[i]);
        p->bytes += msg_cost(msgs[i]);
    }
    if (p && post(h, &p->base, p->bytes) < 0) {
        for (size_t i = 0; i < p->n; i++)
            hd_message_unref(p->msgs[i]);
        free(p);
    }
}

static void on_chan(hd_worker_t *w, hd_msg_t *msg)
{
    chan_msg_t *c = (chan_msg_t *)msg;
    (void)w;
    __atomic_sub_fetch(&c->h->inbox, 1, __ATOMIC_RELAXED);
    if (c->h->sender)
        hk_sender_channel(c->h->sender, c->channel, c->len, c->occupied, NULL);
    free(c);
}

int hd_hooks_want_channel_events(void)
{
    hd_hooks_t *h = hooks_now();
    return h && (hk_filter_events(h->filter) & (HD_WEBHOOK_EV_OCCUPIED | HD_WEBHOOK_EV_VACATED));
}

void hd_hooks_on_channel(const char *channel, size_t len, int occupied)
{
    hd_hooks_t *h = hooks_now();
    if (!h || len > HD_CHANNEL_MAX ||
        !wanted(h, occupied ? HD_WEBHOOK_EV_OCCUPIED : HD_WEBHOOK_EV_VACATED, channel, len))
        return;
    chan_msg_t *c = hd_malloc(sizeof(*c));
    c->base.cb = on_chan;
    c->h = h;
    c->occupied = occupied;
    c->len = len;
    memcpy(c->channel, channel, len);
    c->channel[len] = '\0';
    if (post(h, &c->base, 0) < 0)
        free(c);
}

static void on_member(hd_worker_t *w, hd_msg_t *msg)
{
    member_msg_t *mm = (member_msg_t *)msg;
    hd_message_t *ev = mm->ev;
    (void)w;
    __atomic_sub_fetch(&mm->h->inbox, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&mm->h->inbox_bytes, mm->bytes, __ATOMIC_RELAXED);
    if (mm->h->sender)
        hk_sender_member(mm->h->sender, ev->channel, ev->channel_len, ev->kind == HD_MSG_JOIN,
                         ev->data, ev->len, NULL);
    hd_message_unref(ev);
    free(mm);
}

void hd_hooks_on_member(hd_message_t *ev)
{
    hd_hooks_t *h = hooks_now();
    unsigned want =
        ev->kind == HD_MSG_JOIN ? HD_WEBHOOK_EV_MEMBER_ADDED : HD_WEBHOOK_EV_MEMBER_REMOVED;
    if (!h || !wanted(h, want, ev->channel, ev->channel_len))
        return;
    member_msg_t *mm = hd_malloc(sizeof(*mm));
    mm->base.cb = on_member;
    mm->h = h;
    mm->ev = hd_message_ref(ev);
    mm->bytes = msg_cost(ev);
    if (post(h, &mm->base, mm->bytes) < 0) {
        hd_message_unref(ev);
        free(mm);
    }
}

/* ---- admin ---- */

static void on_admin_answer(hd_worker_t *w, hd_msg_t *msg)
{
    hd_hooks_admin_t *a = hd_container_of(msg, hd_hooks_admin_t, base_);
    (void)w;
    a->cb(a);
}

static void on_admin(hd_worker_t *w, hd_msg_t *msg)
{
    hd_hooks_admin_t *a = hd_container_of(msg, hd_hooks_admin_t, base_);
    hd_hooks_t *h = hooks_now();
    (void)w;
    __atomic_sub_fetch(&h->inbox, 1, __ATOMIC_RELAXED);
    a->base_.cb = on_admin_answer; /* where hk_admin_answered sends it */
    if (h->sender) {
        if (!hk_sender_admin(h->sender, a))
            return; /* answered later, from Redis */
    } else {
        static const char gone[] = "{\"error\":\"webhooks are stopping\",\"status\":503}";
        a->status = 503;
        a->body = hd_strdup(gone);
        a->body_len = sizeof(gone) - 1;
    }
    hk_admin_answered(a);
}

hd_hooks_admin_t *hd_hooks_admin_new(int op)
{
    hd_hooks_admin_t *a = hd_calloc(1, sizeof(*a));
    a->op = op;
    return a;
}

void hd_hooks_admin_submit(hd_hooks_admin_t *a)
{
    hd_hooks_t *h = hooks_now();
    HD_ASSERT(h != NULL);
    a->base_.cb = on_admin;
    /* never dropped: an admin's question is answered even when the inbox is full */
    __atomic_add_fetch(&h->inbox, 1, __ATOMIC_RELAXED);
    hd_mpsc_push(&h->mailbox, &a->base_);
    hd_worker_wake_later(&h->wakeup);
}

void hd_hooks_admin_free(hd_hooks_admin_t *a)
{
    if (a) {
        free(a->body);
        free(a->def);
        free(a->record);
        free(a);
    }
}

/* ---- the authorize hook ---- */

static void on_authz_answer(hd_worker_t *w, hd_msg_t *msg)
{
    hd_hooks_authz_t *a = hd_container_of(msg, hd_hooks_authz_t, base_);
    (void)w;
    a->cb(a);
}

/* Sends a's answer back to its worker (from the hooks loop, or at the end from any thread). */
static void authz_send_back(hd_hooks_authz_t *a)
{
    a->base_.cb = on_authz_answer;
    hd_worker_post(a->worker, &a->base_);
}

static void authz_fail(hd_hooks_authz_t *a, const char *why)
{
    a->verdict = HD_HOOKS_ERROR;
    snprintf(a->reason, sizeof(a->reason), "%s", why);
    authz_send_back(a);
}

static void on_authz(hd_worker_t *w, hd_msg_t *msg)
{
    hd_hooks_authz_t *a = hd_container_of(msg, hd_hooks_authz_t, base_);
    hd_hooks_t *h = a->hooks_; /* the_hooks is NULL once the stop is on its way */
    (void)w;
    __atomic_sub_fetch(&h->inbox, 1, __ATOMIC_RELAXED);
    if (h->authz)
        hk_authz_ask(h->authz, a, authz_send_back);
    else
        authz_fail(a, "no authorize_hook is running");
}

hd_hooks_authz_t *hd_hooks_authz_new(void)
{
    return hd_calloc(1, sizeof(hd_hooks_authz_t));
}

void hd_hooks_authorize(hd_hooks_authz_t *a)
{
    hd_hooks_t *h = hooks_now();
    if (!h || !h->authz) {
        authz_fail(a, "no authorize_hook is running (it needs a restart after being added)");
        return;
    }
    a->base_.cb = on_authz;
    a->hooks_ = h;
    /* never dropped: each worker bounds what it has waiting (the hook's max_pending) */
    __atomic_add_fetch(&h->inbox, 1, __ATOMIC_RELAXED);
    hd_mpsc_push(&h->mailbox, &a->base_);
    hd_worker_wake_later(&h->wakeup);
}

void hd_hooks_authz_free(hd_hooks_authz_t *a)
{
    if (a) {
        free(a->body);
        hd_identity_unref(a->id);
        free(a);
    }
}

/* ---- the notify hook ---- */

typedef struct notify_msg_s {
    hd_msg_t base;
    hd_hooks_t *h;
    size_t len;
    char json[];
} notify_msg_t;

static char node_id[24];

const char *hd_hooks_node_id(void)
{
    return node_id;
}

int hd_hooks_notify_wants(unsigned kind)
{
    hd_hooks_t *h = hooks_now();
    return h && (h->notify_events & kind);
}

static void on_notify(hd_worker_t *w, hd_msg_t *msg)
{
    notify_msg_t *m = (notify_msg_t *)msg;
    (void)w;
    __atomic_sub_fetch(&m->h->inbox, 1, __ATOMIC_RELAXED);
    if (m->h->notify)
        hk_notify_push(m->h->notify, m->json, m->len); /* the charge goes with it */
    else
        HK_ADD(m->h->stats.notify_memory_bytes, -(uint64_t)HK_NOTIFY_CHARGE(m->len));
    free(m);
}

void hd_hooks_notify(const char *json, size_t len)
{
    hd_hooks_t *h = hooks_now();
    if (!h || !h->notify_events)
        return;
    /* The mail and then the queue's entry hold the event: one charge, against max_memory,
     * taken here and given back when the backend acknowledged it (or it was dropped). */
    uint64_t charge = HK_NOTIFY_CHARGE(len);
    uint64_t held = HK_ADD(h->stats.notify_memory_bytes, charge) + charge;
    if (held > h->conf->notify_hook->max_memory_bytes) {
        HK_ADD(h->stats.notify_memory_bytes, -charge);
        HK_ADD(h->stats.notify_dropped, 1);
        return;
    }
    if (__atomic_add_fetch(&h->inbox, 1, __ATOMIC_RELAXED) > INBOX_MAX) {
        __atomic_sub_fetch(&h->inbox, 1, __ATOMIC_RELAXED);
        HK_ADD(h->stats.notify_memory_bytes, -charge);
        HK_ADD(h->stats.notify_dropped, 1);
        return;
    }
    notify_msg_t *m = hd_malloc(sizeof(*m) + len);
    m->base.cb = on_notify;
    m->h = h;
    m->len = len;
    memcpy(m->json, json, len);
    hd_mpsc_push(&h->mailbox, &m->base);
    hd_worker_wake_later(&h->wakeup);
}

/* ---- the thread ---- */

/* Runs every mail waiting; returns how many. */
static size_t drain(hd_hooks_t *h)
{
    size_t n = 0;
    hd_msg_t *m;
    while ((m = hd_mpsc_pop(&h->mailbox)) != NULL) {
        m->cb(NULL, m);
        n++;
    }
    return n;
}

static void on_hold_end(uv_timer_t *t);

/* Holds the wake-up (again: a waker may have written before the hold began, and being woken
 * clears it) and makes sure the timer that ends the hold runs. */
static void hold(hd_hooks_t *h)
{
    hd_wake_hold(&h->wakeup);
    if (!h->is_holding) {
        h->is_holding = 1;
        uv_timer_start(&h->hold, on_hold_end, HOLD_MS, 0);
    }
}

/* Mail came again after a drain: the thread ticks while it keeps up, else it holds again and
 * reads answers as they come (a backlog: they make the room it waits for). */
static void keep_holding(hd_hooks_t *h)
{
    if (h->sender && !hk_sender_is_behind(h->sender)) {
        hd_wake_hold(&h->wakeup);
        h->is_ticking = 1;
    } else {
        hold(h);
    }
}

static void on_hold_end(uv_timer_t *t)
{
    hd_hooks_t *h = t->data;
    h->is_holding = 0;
    hd_wake_release(&h->wakeup);
    if (drain(h) > 0 && !h->is_stopping)
        keep_holding(h);
}

static void on_wakeup(void *data)
{
    hd_hooks_t *h = data;
    size_t n = drain(h);
    if (h->is_stopping)
        return;
    if (h->is_ticking)
        hd_wake_hold(&h->wakeup); /* being woken released it: the next tick drains */
    else if (n > 0 || h->is_holding)
        hold(h);
}

/* Publishes every endpoint's figures for hd_hooks_get_ep_stats (the old copy freed). */
static void on_ep_timer(uv_timer_t *t)
{
    hd_hooks_t *h = t->data;
    hd_hooks_ep_stats_t *v, *old;
    size_t n = h->sender ? hk_sender_ep_stats(h->sender, &v) : 0;
    if (n == 0)
        v = NULL;
    uv_mutex_lock(&h->ep_mu);
    old = h->ep_stats;
    h->ep_stats = v;
    h->n_ep_stats = n;
    uv_mutex_unlock(&h->ep_mu);
    free(old);
}

/* A tick (run(), while ticking): the mail of the last HOLD_MS. */
static void tick(hd_hooks_t *h)
{
    hd_wake_release(&h->wakeup);
    h->is_ticking = 0;
    if (drain(h) > 0 && !h->is_stopping)
        keep_holding(h);
}

/* The end of the thread's work: everything closed, then the loop ends. */
static void finish_stop(void *arg)
{
    hd_hooks_t *h = arg;
    if (h->authz) {
        hk_authz_close(h->authz);
        h->authz = NULL;
    }
    if (h->notify) {
        size_t n = hk_notify_close(h->notify);
        h->notify = NULL;
        if (n)
            hd_log_warn("notify_hook: %zu events not acknowledged by the backend are lost", n);
    }
    size_t lost = hk_sender_close(h->sender);
    h->sender = NULL;
    if (lost && h->conf->redis)
        hd_log_warn("webhooks: %zu events that never reached Redis are lost", lost);
    else if (lost)
        hd_log_warn("webhooks: %zu events still pending are lost (pending deliveries are kept in "
                    "memory only)",
                    lost);
    hd_wake_close(&h->wakeup);
    uv_close((uv_handle_t *)&h->hold, NULL);
    uv_close((uv_handle_t *)&h->ep_timer, NULL);
}

static void on_stop(hd_worker_t *w, hd_msg_t *msg)
{
    stop_msg_t *sm = (stop_msg_t *)msg;
    hd_hooks_t *h = sm->h;
    (void)w;
    free(sm);
    h->is_stopping = 1;
    /* the disconnects of the last connections are worth a last batch (within its timeout) */
    if (h->notify && hk_notify_drain(h->notify, finish_stop, h))
        return;
    finish_stop(h);
}

/*
 * The hooks thread yields to the workers: a backlog draining after a receiver's outage (120,000
 * webhooks in 3 s) would otherwise take a whole core from the subscribers' loops (subscriber
 * p99 34 -> 93 ms on 2 cores; +7.2 ms still at nice 10). Without Redis it runs under
 * SCHED_IDLE: the scheduler runs it only on a core no other thread wants, and a worker waking
 * up preempts it at once (a nice 10 thread keeps the core for its slice); it needs no
 * privilege. Should the machine keep both cores busy, webhooks wait (their queue and memory
 * bounds apply) rather than subscribers. With Redis a thread starved for seconds would hold the
 * entries it took past webhook_claim_after, and another node would deliver them again (seen in
 * it.test_webhooks_redis at a load of 15): there, and where SCHED_IDLE is refused, nice 10 (per
 * thread on Linux). Nice 10 too when an authorize_hook is configured at start: the connects it
 * decides wait on this thread, and a SCHED_IDLE thread gets about 0.3% of a core (weight 3
 * against 1024) while the workers keep both cores busy, so a load spike would turn into
 * authorize timeouts (on_error) with a healthy backend.
 *
 * Set once, when the thread starts, and it could not be otherwise: Linux lets a thread leave
 * SCHED_IDLE only with CAP_SYS_NICE or an RLIMIT_NICE that would let it lower its nice
 * (SCHED_IDLE counts as nice 20), and herald.service's DynamicUser has neither (RLIMIT_NICE 0:
 * sched_setscheduler(SCHED_OTHER) is EPERM), so a thread made SCHED_IDLE stays so. Nothing
 * needs it: the inputs, redis and authorize_hook, are restart directives, and a reload never
 * hands this thread a new conf (an authorize_hook added by a reload is warned about and asks
 * nothing: workers get "needs a restart" at once, never a decision waiting here;
 * it.test_authorize_hook TestSchedule). The same rules out SCHED_IDLE only while a backlog
 * drains (hk_sender_is_behind), which would be no better anyway: the policy matters only while
 * the workers keep every core busy, and then a steady flow that nice 10 keeps up with would
 * take its share from subscribers, while one it cannot keep up with turns into a backlog within
 * webhook_concurrency events and would be SCHED_IDLE anyway; on a free core both run alike.
 */
#define HOOKS_NICE 10

static void yield_to_workers(const hd_conf_t *conf)
{
    struct sched_param sp = {.sched_priority = 0};
    if (!conf->redis && !conf->authorize_hook && sched_setscheduler(0, SCHED_IDLE, &sp) == 0)
        return;
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), HOOKS_NICE) != 0)
        hd_log_debug("hooks: setpriority: %s", strerror(errno));
}

static void run(void *arg)
{
    hd_hooks_t *h = arg;
    hd_log_thread_name("hooks");
    yield_to_workers(h->conf);
    hd_log_thread_attach(&h->loop);
    for (;;) {
        if (!h->is_ticking) {
            if (!uv_run(&h->loop, UV_RUN_ONCE))
                break;
            continue;
        }
        /* asleep, not in epoll: answers wait for the tick instead of waking the thread */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = HOLD_MS * 1000000L};
        clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL); /* EINTR: an early tick, harmless */
        tick(h);
        if (!uv_run(&h->loop, UV_RUN_NOWAIT)) /* what came while asleep, all of it */
            break;
    }
    hd_log_thread_detach();
}

int hd_hooks_new(hd_hooks_t **out, hd_conf_t *conf, char *err, size_t errlen)
{
    hd_hooks_t *h = hd_calloc(1, sizeof(*h));
    h->tls = SSL_CTX_new(TLS_client_method());
    if (!h->tls)
        goto tls_fail;
    SSL_CTX_set_min_proto_version(h->tls, TLS1_2_VERSION);
    SSL_CTX_set_verify(h->tls, SSL_VERIFY_PEER, NULL);
    if (conf->webhook_tls_ca
            ? SSL_CTX_load_verify_locations(h->tls, conf->webhook_tls_ca, NULL) != 1
            : SSL_CTX_set_default_verify_paths(h->tls) != 1)
        goto tls_fail;
    h->conf = hd_conf_ref(conf);
    h->filter = hk_filter_new(h->conf);
    uv_loop_init(&h->loop);
    int rc = hd_wake_init(&h->wakeup, &h->loop, on_wakeup, h);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the webhook thread's wake-up: %s", uv_strerror(rc));
        uv_loop_close(&h->loop);
        hk_filter_free(h->filter);
        hd_conf_unref(h->conf);
        SSL_CTX_free(h->tls);
        free(h);
        return rc;
    }
    uv_timer_init(&h->loop, &h->hold);
    h->hold.data = h;
    uv_mutex_init(&h->ep_mu);
    uv_timer_init(&h->loop, &h->ep_timer);
    h->ep_timer.data = h;
    if (conf->n_webhooks || conf->webhook_max_endpoints)
        uv_timer_start(&h->ep_timer, on_ep_timer, HD_HOOKS_EP_STATS_MS, HD_HOOKS_EP_STATS_MS);
    hd_mpsc_init(&h->mailbox);
    h->sender = hk_sender_new(&h->loop, h->conf, h->tls, &h->stats, h->filter);
    if (conf->authorize_hook)
        h->authz = hk_authz_new(&h->loop, h->conf, h->tls, &h->stats);
    if (!node_id[0]) {
        uint8_t r[8];
        RAND_bytes(r, sizeof(r));
        for (int i = 0; i < 8; i++)
            snprintf(node_id + 2 * i, 3, "%02x", r[i]);
    }
    if (conf->notify_hook) {
        h->notify = hk_notify_new(&h->loop, h->conf, h->tls, &h->stats, node_id);
        h->notify_events = conf->notify_hook->events;
    }
    *out = h;
    return 0;
tls_fail:
    snprintf(err, errlen, "webhook_tls_ca %s: cannot load the CA certificates: %s",
             conf->webhook_tls_ca ? conf->webhook_tls_ca : "(system store)",
             ERR_reason_error_string(ERR_get_error()));
    ERR_clear_error();
    if (h->tls)
        SSL_CTX_free(h->tls);
    free(h);
    return HD_ETLS;
}

int hd_hooks_start(hd_hooks_t *h)
{
    int rc = uv_thread_create(&h->thread, run, h);
    if (rc == 0)
        h->is_started = 1;
    return rc;
}

/* Puts the stop in the thread's mailbox, once. */
static void send_stop(hd_hooks_t *h)
{
    if (h->is_stop_sent)
        return;
    h->is_stop_sent = 1;
    stop_msg_t *sm = hd_malloc(sizeof(*sm));
    sm->base.cb = on_stop;
    sm->h = h;
    hd_mpsc_push(&h->mailbox, &sm->base);
    hd_wake_send(&h->wakeup); /* now: the join follows */
}

/*
 * A join bounded by a deadline (glibc's pthread_timedjoin_np; uv_thread_t is a pthread_t): the
 * thread may be starved of CPU (SCHED_IDLE on a machine whose cores are busy: 7-18 s to take the
 * stop at a load of 12-16 under ASan), and a stop must end within its bound whatever the load.
 */
int hd_hooks_stop(hd_hooks_t *h, uint64_t timeout_ms)
{
    if (!h->is_started || h->is_joined)
        return 0;
    send_stop(h);
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at); /* the clock pthread_timedjoin_np reads */
    at.tv_sec += (time_t)(timeout_ms / 1000);
    at.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000L;
    }
    int rc;
    while ((rc = pthread_timedjoin_np(h->thread, NULL, &at)) == EINTR) {
    }
    if (rc == ETIMEDOUT)
        return UV_ETIMEDOUT;
    HD_ASSERT(rc == 0);
    h->is_joined = 1;
    return 0;
}

void hd_hooks_free(hd_hooks_t *h)
{
    if (!h)
        return;
    if (h->is_started) {
        if (!h->is_joined) {
            send_stop(h);
            uv_thread_join(&h->thread);
            h->is_joined = 1;
        }
    } else {
        if (h->authz)
            hk_authz_close(h->authz);
        h->authz = NULL;
        if (h->notify)
            hk_notify_close(h->notify);
        h->notify = NULL;
        hk_sender_close(h->sender);
        hd_wake_close(&h->wakeup);
        uv_close((uv_handle_t *)&h->hold, NULL);
        uv_close((uv_handle_t *)&h->ep_timer, NULL);
        uv_run(&h->loop, UV_RUN_DEFAULT);
    }
    /* what was pushed after the stop: events nobody will send */
    hd_msg_t *m;
    while ((m = hd_mpsc_pop(&h->mailbox)) != NULL) {
        if (m->cb == on_authz) { /* its worker still runs: it gets an answer */
            authz_fail(hd_container_of(m, hd_hooks_authz_t, base_), "herald is stopping");
            continue;
        }
        if (m->cb == on_pub) {
            pub_msg_t *p = (pub_msg_t *)m;
            for (size_t i = 0; i < p->n; i++)
                hd_message_unref(p->msgs[i]);
        } else if (m->cb == on_member) {
            hd_message_unref(((member_msg_t *)m)->ev);
        } else if (m->cb == on_admin) { /* with what a registration holds */
            hd_hooks_admin_free(hd_container_of(m, hd_hooks_admin_t, base_));
            continue;
        }
        free(m);
    }
    uv_loop_close(&h->loop);
    hk_filter_free(h->filter);
    free(h->ep_stats);
    uv_mutex_destroy(&h->ep_mu);
    hd_wake_dispose(&h->wakeup);
    SSL_CTX_free(h->tls);
    hd_conf_unref(h->conf);
    free(h);
}

void hd_hooks_get_stats(hd_hooks_t *h, hd_hooks_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!h)
        return;
    const uint64_t *src = (const uint64_t *)&h->stats;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    uint64_t now = hk_wall_ms();
    out->oldest_pending_ms =
        out->oldest_pending_ms && now > out->oldest_pending_ms ? now - out->oldest_pending_ms : 0;
}

size_t hd_hooks_get_ep_stats(hd_hooks_t *h, hd_hooks_ep_stats_t **out)
{
    *out = NULL;
    if (!h)
        return 0;
    uv_mutex_lock(&h->ep_mu);
    size_t n = h->n_ep_stats;
    if (n) {
        *out = hd_malloc(n * sizeof(**out));
        memcpy(*out, h->ep_stats, n * sizeof(**out));
    }
    uv_mutex_unlock(&h->ep_mu);
    uint64_t now = hk_wall_ms();
    for (size_t i = 0; i < n; i++) {
        uint64_t t = (*out)[i].oldest_pending_ms;
        (*out)[i].oldest_pending_ms = t && now > t ? now - t : 0;
    }
    return n;
}
