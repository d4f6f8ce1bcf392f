/* SPDX-License-Identifier: MIT */
/*
 * test_hub.c: a worker's hub (src/pubsub/hub.c, included so the test can hand it deliveries
 * directly) against a fake broker that records requests and answers when the test says:
 * ordering and de-duplication across the history reply and live messages, subscribers leaving
 * or joining during a fan-out, epoch gaps, subscriptions ended or refused while pending, one
 * encoded buffer per wire format shared by its subscribers, and presence_hold's leading edge
 * (a quiet channel's events at once, a busy one's at the window's end, bounded, in order).
 */
#define _GNU_SOURCE /* memmem */
#include "pubsub/hub.c"

#include "herald/conf.h"
#include "net/internal.h"
#include "test.h"

#include <jansson.h>
#include <time.h>

#define E1 1000u
#define E2 2000u

/* ---- a broker that answers when told ---- */

typedef struct fake_broker_s {
    hd_broker_t base;
    hd_breq_t *reqs[64];
    int n;
} fake_broker_t;

static void fake_submit(hd_broker_t *b, hd_breq_t *r)
{
    fake_broker_t *f = (fake_broker_t *)b;
    T_TRUE(f->n < 64);
    f->reqs[f->n++] = r;
}

static const hd_broker_ops_t fake_ops = {.name = "fake", .submit = fake_submit};
static fake_broker_t broker = {.base = {.ops = &fake_ops}};

/* The oldest request of type on channel (NULL: any), taken from the queue. */
static hd_breq_t *take(int type, const char *channel)
{
    for (int i = 0; i < broker.n; i++) {
        hd_breq_t *r = broker.reqs[i];
        if (r->type == type && (!channel || strcmp(r->channel, channel) == 0)) {
            memmove(&broker.reqs[i], &broker.reqs[i + 1],
                    (size_t)(broker.n - i - 1) * sizeof(*broker.reqs));
            broker.n--;
            return r;
        }
    }
    return NULL;
}

/* Unsubscribes sent for channel (taken and freed). */
static int count_unsubscribes(const char *channel)
{
    int n = 0;
    hd_breq_t *r;
    while ((r = take(HD_BREQ_UNSUBSCRIBE, channel)) != NULL) {
        hd_breq_free(r);
        n++;
    }
    return n;
}

static hd_message_t *mk(const char *channel, uint64_t epoch, uint64_t seq)
{
    char data[32];
    int n = snprintf(data, sizeof(data), "m%llu", (unsigned long long)seq);
    hd_message_t *m = hd_message_new(channel, strlen(channel), "text/plain", data, (size_t)n);
    hd_message_set_id(m, epoch, seq);
    m->publish_ns = uv_hrtime();
    return m;
}

/* Answers the pending SUBSCRIBE on channel as the broker would (history: refs taken here). */
static void answer(hd_worker_t *w, const char *channel, uint64_t epoch, uint64_t last_seq,
                   hd_message_t **hist, size_t n, int gap, int err)
{
    hd_breq_t *r = take(HD_BREQ_SUBSCRIBE, channel);
    T_TRUE(r != NULL);
    r->epoch = epoch;
    r->last_seq = last_seq;
    r->gap = (uint8_t)gap;
    r->err = err;
    if (n) {
        r->msgs = hd_malloc(n * sizeof(*r->msgs));
        for (size_t i = 0; i < n; i++)
            r->msgs[i] = hd_message_ref(hist[i]);
        r->n_msgs = n;
    }
    r->reply_cb(w, r);
}

/* Hands m to the hub as a broker delivery does. */
static void deliver(hd_worker_t *w, hd_message_t *m)
{
    delivery_t *d = hd_malloc(sizeof(*d));
    d->base.cb = on_delivery;
    d->m = hd_message_ref(m);
    on_delivery(w, &d->base);
}

/* ---- subscribers that record what they see ---- */

typedef struct rec_s rec_t;
struct rec_s {
    hd_sub_t *s;
    int ready, ready_err, ready_gap;
    size_t ready_n;
    uint64_t seen[32]; /* sequences delivered; 0 marks a gap notice */
    int n;
    void (*hook)(rec_t *r, hd_message_t *m); /* runs inside on_message */
    void *hook_arg;
};

static void rec_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    (void)msgs;
    rec_t *r = s->data;
    r->ready++;
    r->ready_err = err;
    r->ready_gap = gap;
    r->ready_n = n;
    if (err)
        r->s = NULL; /* the hub frees it */
}

static void rec_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    rec_t *r = s->data;
    T_TRUE(encoded != NULL && encoded->len > 0);
    T_TRUE(r->n < 32);
    r->seen[r->n++] = m->seq;
    if (r->hook)
        r->hook(r, m);
}

static void rec_on_gap(hd_sub_t *s)
{
    rec_t *r = s->data;
    r->seen[r->n++] = 0;
}

static const hd_sub_ops_t rec_ops = {.format = HD_FMT_JSON,
                                     .on_ready = rec_on_ready,
                                     .on_message = rec_on_message,
                                     .on_gap = rec_on_gap};

static void sub(hd_worker_t *w, rec_t *r, const char *channel)
{
    r->s = hd_hub_subscribe(w, channel, strlen(channel), NULL, NULL, &rec_ops, r);
}

static void unsub(rec_t *r)
{
    hd_hub_unsubscribe(r->s);
    r->s = NULL;
}

static void expect_seen(const rec_t *r, const uint64_t *want, int n)
{
    T_EQ_INT(r->n, n);
    for (int i = 0; i < n; i++)
        T_EQ_INT(r->seen[i], want[i]);
}

/* ---- the tests ---- */

static hd_worker_t *worker_new(void)
{
    hd_worker_t *w = hd_calloc(1, sizeof(*w));
    w->conf = hd_calloc(1, sizeof(*w->conf));
    w->conf->poll_max_messages = 100;
    w->conf->max_subscriptions = 1000000;
    hd_hub_init(w);
    return w;
}

static void worker_free(hd_worker_t *w)
{
    T_EQ_INT(hd_hub_local_subscribers(w), 0);
    T_EQ_INT(hd_chantab_count(&hub_of(w)->chans),
             0); /* every channel freed with its last subscriber */
    hd_hub_dispose(w);
    free(w->conf);
    free(w);
    T_EQ_INT(broker.n, 0);
}

static void test_ordering_and_history(void)
{
    hd_worker_t *w = worker_new();
    rec_t r = {0};
    uint64_t since_e = E1, since_s = 2;
    r.s = hd_hub_subscribe(w, "c", 1, &since_e, &since_s, &rec_ops, &r);
    hd_breq_t *q = broker.reqs[0];
    T_EQ_INT(q->type, HD_BREQ_SUBSCRIBE);
    T_EQ_INT(q->has_since, 1);
    T_EQ_INT(q->since_seq, 2);
    T_EQ_INT(q->limit, 100);
    hd_message_t *m[8];
    for (int i = 1; i < 8; i++)
        m[i] = mk("c", E1, (uint64_t)i);
    deliver(w, m[3]); /* before the reply: not live yet */
    T_EQ_INT(r.n, 0);
    answer(w, "c", E1, 4, &m[3], 2, 0, 0); /* history 3, 4 */
    T_EQ_INT(r.ready, 1);
    T_EQ_INT(r.ready_n, 2);
    deliver(w, m[4]); /* in the history already */
    deliver(w, m[5]);
    deliver(w, m[6]);
    deliver(w, m[6]); /* twice */
    deliver(w, m[7]);
    expect_seen(&r, (uint64_t[]){5, 6, 7}, 3);
    T_EQ_INT(hd_hub_stats(w)->deliveries, 3);
    /* another channel's messages never reach it */
    hd_message_t *other = mk("d", E1, 8);
    deliver(w, other);
    T_EQ_INT(r.n, 3);
    unsub(&r);
    T_EQ_INT(count_unsubscribes("c"), 1);
    for (int i = 1; i < 8; i++)
        hd_message_unref(m[i]);
    hd_message_unref(other);
    worker_free(w);
}

static void leave_and_kill(rec_t *r, hd_message_t *m)
{
    (void)m;
    rec_t *others = r->hook_arg; /* [0] before this one, [2] after it */
    unsub(&others[0]);
    unsub(r);
    unsub(&others[2]);
    r->hook = NULL;
}

static void join_during(rec_t *r, hd_message_t *m)
{
    (void)m;
    sub(r->s->worker, r->hook_arg, "x");
    r->hook = NULL;
}

static void last_leaves(rec_t *r, hd_message_t *m)
{
    (void)m;
    unsub(r);
}

static void test_leave_and_join_during_fanout(void)
{
    hd_worker_t *w = worker_new();
    rec_t r[4] = {{0}}, late = {0};
    for (int i = 0; i < 4; i++) {
        sub(w, &r[i], "x");
        answer(w, "x", E1, 0, NULL, 0, 0, 0);
    }
    T_EQ_INT(hd_hub_local_subscribers(w), 4);
    /* r[1], during the fan-out, ends r[0] (served), itself and r[2] (not yet served) */
    r[1].hook = leave_and_kill;
    r[1].hook_arg = &r[0];
    /* r[3] subscribes `late` during the same pass */
    r[3].hook = join_during;
    r[3].hook_arg = &late;
    hd_message_t *m1 = mk("x", E1, 1), *m2 = mk("x", E1, 2), *m3 = mk("x", E1, 3);
    deliver(w, m1);
    expect_seen(&r[0], (uint64_t[]){1}, 1);
    expect_seen(&r[1], (uint64_t[]){1}, 1);
    expect_seen(&r[2], NULL, 0); /* dead before its turn */
    expect_seen(&r[3], (uint64_t[]){1}, 1);
    expect_seen(&late, NULL, 0); /* pending: not part of this pass */
    T_EQ_INT(count_unsubscribes("x"), 3);
    T_EQ_INT(hd_hub_local_subscribers(w), 1);
    /* the broker answers the late one after m1 (last_seq 1), then m2 comes */
    answer(w, "x", E1, 1, NULL, 0, 0, 0);
    deliver(w, m2);
    expect_seen(&r[3], (uint64_t[]){1, 2}, 2);
    expect_seen(&late, (uint64_t[]){2}, 1);
    /* both leave during the next pass: the channel goes after it */
    r[3].hook = last_leaves;
    late.hook = last_leaves;
    deliver(w, m3);
    expect_seen(&r[3], (uint64_t[]){1, 2, 3}, 3);
    expect_seen(&late, (uint64_t[]){2, 3}, 2);
    T_EQ_INT(count_unsubscribes("x"), 2);
    T_TRUE(find_chan(hub_of(w), "x", 1) == NULL);
    hd_message_unref(m1);
    hd_message_unref(m2);
    hd_message_unref(m3);
    worker_free(w);
}

static void test_epoch_gap(void)
{
    hd_worker_t *w = worker_new();
    rec_t r = {0};
    sub(w, &r, "g");
    answer(w, "g", E1, 10, NULL, 0, 0, 0);
    hd_message_t *a = mk("g", E1, 11), *b = mk("g", E2, 1), *c = mk("g", E2, 2);
    deliver(w, a);
    deliver(w, b); /* a new epoch: its sequence starts over, after a gap notice */
    deliver(w, c);
    expect_seen(&r, (uint64_t[]){11, 0, 1, 2}, 4);
    /* a subscription whose reply says history was lost reports it in on_ready */
    rec_t g2 = {0};
    uint64_t e = E1, s = 3;
    g2.s = hd_hub_subscribe(w, "g", 1, &e, &s, &rec_ops, &g2);
    answer(w, "g", E2, 2, &c, 1, 1, 0);
    T_EQ_INT(g2.ready_gap, 1);
    T_EQ_INT(g2.ready_n, 1);
    unsub(&r);
    unsub(&g2);
    T_EQ_INT(count_unsubscribes("g"), 2);
    hd_message_unref(a);
    hd_message_unref(b);
    hd_message_unref(c);
    worker_free(w);
}

static void test_pending_end_and_refusal(void)
{
    hd_worker_t *w = worker_new();
    rec_t p = {0}, q = {0}, o = {0};
    /* ended before the reply: the broker counted it, so the hub takes it back; no on_ready */
    sub(w, &p, "p");
    unsub(&p);
    T_EQ_INT(count_unsubscribes("p"), 0);
    answer(w, "p", E1, 0, NULL, 0, 0, 0);
    T_EQ_INT(p.ready, 0);
    T_EQ_INT(count_unsubscribes("p"), 1);
    T_TRUE(find_chan(hub_of(w), "p", 1) == NULL);
    /* refused (the channel budget is spent): told once, nothing to take back */
    sub(w, &q, "q");
    answer(w, "q", E1, 0, NULL, 0, 0, HD_ECHANNELS);
    T_EQ_INT(q.ready, 1);
    T_EQ_INT(q.ready_err, HD_ECHANNELS);
    T_TRUE(q.s == NULL);
    T_EQ_INT(count_unsubscribes("q"), 0);
    T_TRUE(find_chan(hub_of(w), "q", 1) == NULL);
    /* ended, then refused: nobody to tell, nothing to take back */
    sub(w, &o, "o");
    unsub(&o);
    answer(w, "o", E1, 0, NULL, 0, 0, HD_ECHANNELS);
    T_EQ_INT(o.ready, 0);
    T_EQ_INT(count_unsubscribes("o"), 0);
    worker_free(w);
}

/* ---- one encoding per wire format per fan-out ---- */

typedef struct enc_rec_s {
    hd_sub_t *s;
    hd_buf_t *got[4]; /* the buffers handed over, a reference each */
    int n;
} enc_rec_t;

static void enc_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    (void)s, (void)msgs, (void)n, (void)gap, (void)err;
}

static void enc_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    (void)m;
    enc_rec_t *r = s->data;
    T_TRUE(r->n < 4);
    r->got[r->n++] = hd_buf_ref(encoded);
}

static const hd_sub_ops_t enc_json_ops = {
    .format = HD_FMT_SSE_JSON, .on_ready = enc_on_ready, .on_message = enc_on_message};
static const hd_sub_ops_t enc_plain_ops = {
    .format = HD_FMT_SSE, .on_ready = enc_on_ready, .on_message = enc_on_message};

/* Two SSE streams of the JSON form share one buffer per message, the plain form has its own:
 * a message and an ephemeral event (live-only events reach the JSON form too). */
static void test_one_buffer_per_format(void)
{
    hd_worker_t *w = worker_new();
    enc_rec_t r[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        r[i].s =
            hd_hub_subscribe(w, "f", 1, NULL, NULL, i < 2 ? &enc_json_ops : &enc_plain_ops, &r[i]);
        answer(w, "f", E1, 0, NULL, 0, 0, 0);
    }
    hd_message_t *m = mk("f", E1, 1);
    hd_message_set_publisher(m, "{\"sub\":\"ann\"}");
    deliver(w, m);
    hd_message_t *e = hd_message_new("f", 1, "application/json", "{}", 2);
    e->kind = HD_MSG_EPHEMERAL;
    deliver(w, e);
    for (int k = 0; k < 2; k++) {
        T_EQ_INT(r[0].n, 2);
        T_EQ_INT(r[2].n, 2);
        T_TRUE(r[0].got[k] == r[1].got[k]); /* the same buffer, not a copy */
        T_TRUE(r[0].got[k] != r[2].got[k]);
    }
    T_TRUE(memmem(r[0].got[0]->data, r[0].got[0]->len, "\"publisher\":{\"sub\":\"ann\"}", 25));
    T_TRUE(!memmem(r[2].got[0]->data, r[2].got[0]->len, "publisher", 9));
    T_TRUE(memmem(r[0].got[1]->data, r[0].got[1]->len, "\"ephemeral\":true", 16));
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < r[i].n; k++)
            hd_buf_unref(r[i].got[k]);
        hd_hub_unsubscribe(r[i].s);
    }
    T_EQ_INT(count_unsubscribes("f"), 3);
    hd_message_unref(m);
    hd_message_unref(e);
    worker_free(w);
}

/* Shared answers: found while someone holds them, dropped when only the cache does, 16 kept. */
static void test_shared_answers(void)
{
    hd_worker_t *w = worker_new();
    T_TRUE(hd_hub_shared_get(w, "k", 1) == NULL);
    hd_buf_t *a = hd_buf_new_copy("answer", 6);
    hd_hub_shared_put(w, "k", 1, a);
    T_EQ_INT(a->refs, 2);
    hd_buf_t *got = hd_hub_shared_get(w, "k", 1);
    T_TRUE(got == a);
    T_EQ_INT(a->refs, 3);
    T_TRUE(hd_hub_shared_get(w, "kk", 2) == NULL);
    T_TRUE(hd_hub_shared_get(w, "K", 1) == NULL);
    hd_buf_unref(got);
    hd_buf_unref(a); /* only the cache holds it now: the next lookup drops it */
    T_TRUE(hd_hub_shared_get(w, "k", 1) == NULL);

    /* All 16 slots held by clients: a 17th replaces the oldest, which its holder keeps. */
    hd_buf_t *held[17];
    char key[8];
    for (int i = 0; i < 17; i++) {
        held[i] = hd_buf_new_copy("x", 1);
        snprintf(key, sizeof(key), "k%d", i);
        hd_hub_shared_put(w, key, strlen(key), held[i]);
    }
    T_EQ_INT(held[0]->refs, 1);
    T_TRUE(hd_hub_shared_get(w, "k0", 2) == NULL);
    for (int i = 1; i < 17; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        got = hd_hub_shared_get(w, key, strlen(key));
        T_TRUE(got == held[i]);
        hd_buf_unref(got);
    }
    /* A key too long is not stored. */
    char big[300];
    memset(big, 'b', sizeof(big));
    hd_hub_shared_put(w, big, sizeof(big), held[0]);
    T_TRUE(hd_hub_shared_get(w, big, sizeof(big)) == NULL);
    for (int i = 0; i < 17; i++)
        hd_buf_unref(held[i]);
    worker_free(w); /* the cache's own references go with the hub (LSan checks) */
}

/* ---- presence_hold: the leading edge ---- */

/* A worker whose hub has a loop and a mailbox, run by this thread (its posts need no wake-up):
 * hd_worker_run_local is the rest of a loop pass, and the loop's time moves only when the test
 * runs the loop or updates it. */
static hd_worker_t *worker_new_looped(uint64_t hold_ms)
{
    hd_worker_t *w = worker_new();
    w->conf->presence_hold_ms = hold_ms;
    T_EQ_INT(uv_loop_init(&w->loop), 0);
    hd_mpsc_init(&w->mailbox);
    hd_worker_adopt_thread(w);
    return w;
}

static void worker_free_looped(hd_worker_t *w)
{
    T_TRUE(hub_of(w)->hold == NULL);
    hd_worker_adopt_thread(NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT); /* the closed windows' timers */
    T_EQ_INT(uv_loop_close(&w->loop), 0);
    worker_free(w);
}

/* A subscriber asking presence events: each frame's events ("+ann -bob"), frames by "|", and
 * the form of the last frame (a single join or leave, or a batch). */
typedef struct pres_rec_s {
    hd_sub_t *s;
    int frames, events, last_kind;
    char log[256]; /* cut at its end: last has the last event */
    char last[32];
} pres_rec_t;

static void pres_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    (void)s, (void)msgs, (void)n, (void)gap;
    T_EQ_INT(err, 0);
}

static void pres_log(pres_rec_t *p, int kind, json_t *ev)
{
    const char *who = json_string_value(json_object_get(json_object_get(ev, "member"), "sub"));
    snprintf(p->last, sizeof(p->last), "%c%s", kind == HD_MSG_JOIN ? '+' : '-', who ? who : "?");
    size_t n = strlen(p->log);
    snprintf(p->log + n, sizeof(p->log) - n, "%s%s", n ? " " : "", p->last);
}

static void pres_on_message(hd_sub_t *s, hd_message_t *m, hd_buf_t *encoded)
{
    (void)encoded;
    pres_rec_t *p = s->data;
    if (p->frames++) {
        size_t n = strlen(p->log);
        snprintf(p->log + n, sizeof(p->log) - n, " |");
    }
    p->last_kind = m->kind;
    p->events += m->kind == HD_MSG_PRESENCE ? 0 : 1;
    json_t *j = json_loadb(m->data, m->len, 0, NULL);
    T_TRUE(j != NULL);
    if (m->kind == HD_MSG_PRESENCE) {
        size_t i;
        json_t *ev;
        json_array_foreach(j, i, ev)
        {
            const char *type = json_string_value(json_object_get(ev, "type"));
            p->events++;
            pres_log(p, strcmp(type, "join") == 0 ? HD_MSG_JOIN : HD_MSG_LEAVE, ev);
        }
    } else {
        pres_log(p, m->kind, j);
    }
    json_decref(j);
}

static const hd_sub_ops_t pres_ops = {
    .format = HD_FMT_SSE, .on_ready = pres_on_ready, .on_message = pres_on_message};

static void pres_sub(hd_worker_t *w, pres_rec_t *p, const char *channel)
{
    p->s = hd_hub_subscribe(w, channel, strlen(channel), NULL, NULL, &pres_ops, p);
    hd_hub_presence(p->s, 1, NULL); /* events, not a member */
    answer(w, channel, E1, 0, NULL, 0, 0, 0);
}

/* The broker's join (or leave) of who on channel, handed to the hub. */
static void deliver_event(hd_worker_t *w, int kind, const char *channel, const char *who)
{
    hd_member_t *mb = hd_member_new(who, NULL, 7);
    hd_message_t *m = hd_presence_event(kind, channel, strlen(channel), mb);
    hd_member_unref(mb);
    deliver(w, m);
    hd_message_unref(m);
}

/* The window ends now, as its timer would end it. */
static void end_window(hd_worker_t *w)
{
    T_TRUE(hub_of(w)->hold != NULL);
    on_hold_end(hub_of(w)->hold);
    T_TRUE(hub_of(w)->hold == NULL);
}

/*
 * A quiet channel's event goes out in the pass it arrives in, with no window opened; the next
 * events within the hold wait for the window's end and go out as one batch, in order, with the
 * other held channels'; a quiet channel still goes out at once while a window is open; after a
 * hold without a frame a channel has its leading edge again.
 */
static void test_hold_leading_edge(void)
{
    hd_worker_t *w = worker_new_looped(10000);
    pres_rec_t q = {0}, r = {0}, t = {0};
    pres_sub(w, &q, "q");
    pres_sub(w, &r, "r");
    pres_sub(w, &t, "t");
    deliver_event(w, HD_MSG_JOIN, "q", "ann");
    deliver_event(w, HD_MSG_JOIN, "q", "bob"); /* the same pass: the same frame */
    T_EQ_INT(q.frames, 0);                     /* never inside the delivery */
    hd_worker_run_local(w);
    T_EQ_STR(q.log, "+ann +bob");
    T_EQ_INT(q.last_kind, HD_MSG_PRESENCE);
    T_TRUE(hub_of(w)->hold == NULL); /* nothing held, no timer */
    /* within the hold: held, in order, behind a window the first of them opens */
    deliver_event(w, HD_MSG_LEAVE, "q", "ann");
    T_TRUE(hub_of(w)->hold != NULL);
    deliver_event(w, HD_MSG_JOIN, "q", "cat");
    deliver_event(w, HD_MSG_JOIN, "t", "tom"); /* quiet: out in this pass, window or not */
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 1);
    T_EQ_STR(t.log, "+tom");
    T_EQ_INT(t.last_kind, HD_MSG_JOIN);         /* one event alone keeps its form */
    deliver_event(w, HD_MSG_JOIN, "r", "rob");  /* quiet too */
    deliver_event(w, HD_MSG_LEAVE, "t", "tom"); /* t sent within the hold: held now */
    hd_worker_run_local(w);
    T_EQ_STR(r.log, "+rob");
    T_EQ_INT(t.frames, 1);
    deliver_event(w, HD_MSG_LEAVE, "q", "bob");
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 1);
    end_window(w);
    T_EQ_STR(q.log, "+ann +bob | -ann +cat -bob");
    T_EQ_INT(q.last_kind, HD_MSG_PRESENCE);
    T_EQ_STR(t.log, "+tom | -tom");
    T_EQ_INT(t.last_kind, HD_MSG_LEAVE);
    T_EQ_INT(r.frames, 1);
    /* sent at the window's end: the next event within the hold waits for a new window */
    deliver_event(w, HD_MSG_LEAVE, "q", "cat");
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 2);
    end_window(w);
    T_EQ_STR(q.log, "+ann +bob | -ann +cat -bob | -cat");
    /* a hold without a frame: the leading edge again (the loop's clock, moved back) */
    find_chan(hub_of(w), "q", 1)->pres_sent_ms -= 10000;
    deliver_event(w, HD_MSG_JOIN, "q", "dan");
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 4);
    T_EQ_INT(q.last_kind, HD_MSG_JOIN);
    T_TRUE(hub_of(w)->hold == NULL);
    hd_hub_unsubscribe(q.s);
    hd_hub_unsubscribe(r.s);
    hd_hub_unsubscribe(t.s);
    T_EQ_INT(count_unsubscribes(NULL), 3);
    worker_free_looped(w);
}

/* The window's end by its own timer (a real one, 50 ms), and a real quiet period after it. */
static void test_hold_timer(void)
{
    hd_worker_t *w = worker_new_looped(50);
    pres_rec_t q = {0};
    pres_sub(w, &q, "q");
    deliver_event(w, HD_MSG_JOIN, "q", "ann");
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 1);
    deliver_event(w, HD_MSG_JOIN, "q", "bob");
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 1);
    uv_run(&w->loop, UV_RUN_DEFAULT); /* until the window's timer ran and closed */
    T_EQ_STR(q.log, "+ann | +bob");
    uint64_t sent = find_chan(hub_of(w), "q", 1)->pres_sent_ms;
    for (int i = 0; i < 1000 && uv_now(&w->loop) - sent < 50; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        uv_update_time(&w->loop);
    }
    deliver_event(w, HD_MSG_JOIN, "q", "cat");
    hd_worker_run_local(w);
    T_EQ_STR(q.log, "+ann | +bob | +cat");
    T_TRUE(hub_of(w)->hold == NULL);
    deliver_event(w, HD_MSG_LEAVE, "q", "cat"); /* the loop's time has not moved: held */
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 3);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    T_EQ_STR(q.log, "+ann | +bob | +cat | -cat");
    hd_hub_unsubscribe(q.s);
    T_EQ_INT(count_unsubscribes("q"), 1);
    worker_free_looped(w);
}

/* A held channel reaching HOLD_MAX_EVENTS goes out in that pass, alone: the others stay held,
 * and it holds no more than that many events at any time. */
static void test_hold_bounded(void)
{
    hd_worker_t *w = worker_new_looped(10000);
    pres_rec_t q = {0}, p = {0};
    pres_sub(w, &q, "q");
    pres_sub(w, &p, "p");
    deliver_event(w, HD_MSG_JOIN, "q", "q0");
    deliver_event(w, HD_MSG_JOIN, "p", "p0");
    hd_worker_run_local(w);
    deliver_event(w, HD_MSG_JOIN, "p", "p1"); /* held */
    for (int i = 0; i < HOLD_MAX_EVENTS - 1; i++)
        deliver_event(w, HD_MSG_JOIN, "q", "qn");
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 1);
    deliver_event(w, HD_MSG_LEAVE, "q", "q0"); /* the 1,024th */
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 2);
    T_EQ_INT(q.events, 1 + HOLD_MAX_EVENTS);
    T_EQ_STR(q.last, "-q0"); /* the last of the batch, in order */
    T_EQ_INT(p.frames, 1);   /* still held */
    hd_lchan_t *c = find_chan(hub_of(w), "q", 1);
    T_EQ_INT(c->n_evs, 0);
    T_TRUE(c->cap_evs <= HOLD_MAX_EVENTS);
    deliver_event(w, HD_MSG_JOIN, "q", "q9"); /* just sent: held again */
    hd_worker_run_local(w);
    T_EQ_INT(q.frames, 2);
    end_window(w);
    T_EQ_INT(q.frames, 3);
    T_EQ_INT(q.last_kind, HD_MSG_JOIN);
    T_EQ_STR(p.log, "+p0 | +p1");
    hd_hub_unsubscribe(q.s);
    hd_hub_unsubscribe(p.s);
    T_EQ_INT(count_unsubscribes(NULL), 2);
    worker_free_looped(w);
}

/*
 * A join a broker pushes without a wake-up while the window is open waits in the mailbox, even
 * for a quiet channel (the broker cannot tell): the window's end drains it and sends it then.
 */
static void test_hold_lazy_push(void)
{
    hd_worker_t *w = worker_new_looped(10000);
    pres_rec_t q = {0}, r = {0};
    pres_sub(w, &q, "q");
    pres_sub(w, &r, "r");
    deliver_event(w, HD_MSG_JOIN, "q", "ann");
    hd_worker_run_local(w);
    deliver_event(w, HD_MSG_JOIN, "q", "bob"); /* opens the window */
    T_EQ_INT(hub_of(w)->hold_open, 1);
    hd_member_t *mb = hd_member_new("rob", NULL, 7);
    T_EQ_INT(hd_hub_push_delivery_lazy(w, hd_presence_event(HD_MSG_JOIN, "r", 1, mb)), 0);
    hd_member_unref(mb);
    hd_worker_run_local(w); /* nothing woke the worker: the mailbox is not drained */
    T_EQ_INT(r.frames, 0);
    end_window(w);
    T_EQ_STR(r.log, "+rob");
    T_EQ_STR(q.log, "+ann | +bob");
    T_EQ_INT(hub_of(w)->hold_open, 0);
    hd_hub_unsubscribe(q.s);
    hd_hub_unsubscribe(r.s);
    T_EQ_INT(count_unsubscribes(NULL), 2);
    worker_free_looped(w);
}

/*
 * A channel whose last subscriber left with events held stays until the window's end, which
 * frees it (worker_free checks no channel is left); a reload to 0 sends what comes next at
 * once, behind what the channel already holds.
 */
static void test_hold_free_and_reload(void)
{
    hd_worker_t *w = worker_new_looped(10000);
    pres_rec_t q = {0}, r = {0};
    pres_sub(w, &q, "q");
    pres_sub(w, &r, "r");
    deliver_event(w, HD_MSG_JOIN, "q", "ann");
    deliver_event(w, HD_MSG_JOIN, "r", "rob");
    hd_worker_run_local(w);
    deliver_event(w, HD_MSG_JOIN, "q", "bob");
    deliver_event(w, HD_MSG_JOIN, "r", "ray");
    hd_hub_unsubscribe(q.s); /* q's event stays held, and q with it */
    T_EQ_INT(count_unsubscribes("q"), 1);
    T_TRUE(find_chan(hub_of(w), "q", 1) != NULL);
    w->conf->presence_hold_ms = 0;              /* a reload */
    deliver_event(w, HD_MSG_LEAVE, "r", "rob"); /* behind ray, still held */
    hd_worker_run_local(w);
    T_EQ_STR(r.log, "+rob");
    end_window(w);
    T_TRUE(find_chan(hub_of(w), "q", 1) == NULL);
    T_EQ_STR(r.log, "+rob | +ray -rob");
    deliver_event(w, HD_MSG_LEAVE, "r", "ray"); /* no hold: this pass */
    hd_worker_run_local(w);
    T_EQ_STR(r.log, "+rob | +ray -rob | -ray");
    T_TRUE(hub_of(w)->hold == NULL);
    hd_hub_unsubscribe(r.s);
    T_EQ_INT(count_unsubscribes("r"), 1);
    worker_free_looped(w);
}

/* The worker's last subscription ends with a window open (the node stops, say): the window ends
 * in the next loop pass, not a hold later, and takes the channels it kept with it. */
static void test_hold_ends_without_subscribers(void)
{
    hd_worker_t *w = worker_new_looped(10000);
    pres_rec_t q = {0}, r = {0};
    pres_sub(w, &q, "q");
    pres_sub(w, &r, "r");
    deliver_event(w, HD_MSG_JOIN, "q", "ann");
    hd_worker_run_local(w);
    deliver_event(w, HD_MSG_JOIN, "q", "bob"); /* held */
    hd_hub_unsubscribe(q.s);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    T_TRUE(hub_of(w)->hold != NULL); /* r is still there: the window goes on */
    T_TRUE(find_chan(hub_of(w), "q", 1) != NULL);
    hd_hub_unsubscribe(r.s);
    T_EQ_INT(count_unsubscribes(NULL), 2);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    T_TRUE(hub_of(w)->hold == NULL);
    T_TRUE(find_chan(hub_of(w), "q", 1) == NULL);
    T_EQ_INT(q.frames, 1);
    worker_free_looped(w);
}

int main(void)
{
    hd_broker_set(&broker.base);
    T_RUN(test_shared_answers);
    T_RUN(test_one_buffer_per_format);
    T_RUN(test_ordering_and_history);
    T_RUN(test_leave_and_join_during_fanout);
    T_RUN(test_epoch_gap);
    T_RUN(test_pending_end_and_refusal);
    T_RUN(test_hold_leading_edge);
    T_RUN(test_hold_timer);
    T_RUN(test_hold_bounded);
    T_RUN(test_hold_lazy_push);
    T_RUN(test_hold_free_and_reload);
    T_RUN(test_hold_ends_without_subscribers);
    T_DONE();
}
