/* SPDX-License-Identifier: MIT */
/*
 * delivery.c: what becomes of a webhook event, on the hooks thread (hooks.h draws the whole).
 *
 *   event -> each endpoint that wants it (events=, channels=):
 *     disabled endpoint           -> dropped, counted (disabled)
 *     webhook_max_memory reached  -> the oldest dead letters go first; still no room: dropped
 *     webhook_queue_size reached  -> a dead letter at once ("queue full"), replayable
 *     else                        -> the endpoint's queue (FIFO)
 *   queue -> at most webhook_concurrency requests in flight per endpoint (client.c)
 *     2xx       -> delivered, forgotten
 *     410 Gone  -> the endpoint is disabled; its queue becomes dead letters (the same when
 *                  it has failed without a 2xx for webhook_disable_after, when set)
 *     else      -> retry k (k = 1, 2, ...) after a random delay in
 *                  [0, min(webhook_backoff_max, webhook_backoff_base * 2^(k-1))] (full jitter);
 *                  a retry that would start after webhook_retry_window from the first attempt
 *                  makes the event a dead letter instead
 *   dead letters: one list for the node, oldest first, at most webhook_dead_letters (the
 *   oldest dropped past it), inspected, replayed and purged by the admin API.
 *
 * With Redis (the redis directive), the queue, the retries' waits and the dead letters live in
 * Redis instead (durable.c): an endpoint's jobs here are only the entries this node took from
 * Redis and is attempting (at most webhook_concurrency), each finished there as delivered,
 * waiting for a retry (with its attempts and first attempt) or dead; the same decisions, made
 * by whichever node took the entry. Disabling (410, webhook_disable_after) is stored there too
 * (registry.c), so every node disables the endpoint until the admin API enables it.
 *
 * Endpoints: the conf's, fixed, then those the admin API registers and deletes (REGISTER,
 * DELETE; with Redis, those any node registered, read back by registry.c). A deleted endpoint
 * takes with it what it holds here: its connections (requests in flight are cut, without
 * their callbacks), its pending events and its dead letters; the publishing threads' filter
 * (filter.c) is told after every change.
 *
 * A receiver's Retry-After (seconds or a date) lengthens the retry's wait to it, at most
 * webhook_backoff_max; it never shortens the backoff.
 *
 * An event keeps its id (webhook-id) on every attempt and replay; webhook-timestamp is the
 * attempt's time and the signature covers both. Memory: each queued event and dead letter is
 * charged its body and its struct against webhook_max_memory. Nothing here blocks and nothing
 * is shared with another thread but the counters (relaxed atomics).
 */
#include "herald/log.h"
#include "internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct endpoint_s endpoint_t;

typedef struct job_s {
    hd_heap_node_t due; /* in the sender's retry heap while waiting (key: loop ms) */
    hd_list_t link;     /* endpoint's ready list, while ready */
    hd_list_t all;      /* endpoint's pending list, oldest first */
    endpoint_t *ep;
    hd_buf_t *body;
    char id[40];
    char type[24];
    uint64_t created_ms;       /* wall clock, when the event was made */
    uint64_t first_attempt_ms; /* loop time of the first attempt (0: none yet) */
    uint64_t first_wall_ms;    /* wall clock of the first attempt (0: none yet; Redis keeps it) */
    uint32_t attempts;
    char sid[HK_SID_MAX]; /* with Redis: its stream entry, "" otherwise */
    char last_error[160];
    hk_request_t req;
} job_t;

typedef struct letter_s {
    hd_list_t link; /* the sender's dead letters, oldest first */
    endpoint_t *ep;
    hd_buf_t *body;
    char id[40];
    char type[24];
    uint32_t attempts;
    uint64_t created_ms, dead_ms; /* wall clock */
    char reason[160];
} letter_t;

struct endpoint_s {
    hk_sender_t *s;
    const hd_webhook_def_t *def; /* the conf's, or own_def */
    hd_webhook_def_t *own_def;   /* registered through the admin API (is_api): owned */
    char *record;                /* is_api: its registration as stored (JSON), owned */
    unsigned is_api : 1;
    unsigned is_state_unstored : 1; /* with Redis: its state is not in Redis yet */
    unsigned is_deleting : 1;       /* with Redis: its delete is on its way (no more takes) */
    uint64_t state_seq;             /* with Redis: the number of its last state sent */
    hk_dslot_t *slot;               /* with Redis: its keys there */
    hk_pool_t *pool;
    hk_signer_t *signer; /* its secrets keyed, its head's fixed part (sign.c) */
    hd_list_t ready, all;
    size_t n_pending, in_flight, n_letters;
    int is_disabled;
    char disabled_reason[160];
    uint64_t disabled_ms;
    uint64_t attempts, delivered, failures[HD_HOOKS_FAIL_COUNT];
    int last_status;
    char last_error[160];
    uint64_t failing_since_ms; /* wall clock of the first failure since the last 2xx; 0: none */
    uint64_t redis_pending;    /* with Redis: its pending events there, at the last take */
};

struct hk_sender_s {
    uv_loop_t *loop;
    hd_conf_t *conf;
    hk_client_conf_t cc;
    endpoint_t **eps; /* the conf's first, in conf order, then the admin API's */
    size_t n_eps, n_api, cap_eps;
    hk_filter_t *filter; /* told of the admin API's endpoints */
    hd_heap_t retry;
    uv_timer_t timer;
    hd_list_t dlq;
    size_t n_dlq;
    size_t mem;
    uint64_t rng;
    uint64_t warned_ms;
    hd_hooks_stats_t *st;
    hk_durable_t *dur;   /* with Redis: where jobs come from and go (NULL: in memory) */
    hk_registry_t *reg;  /* with Redis: the admin API's endpoints and the disabled ones */
    uv_timer_t poll;     /* with Redis: takes for every endpoint with room, each POLL_MS */
    uint64_t redis_dlq;  /* with Redis: the cluster's dead letters, at the last take */
    unsigned n_closing;  /* its timers not closed yet, once closing */
    hd_list_t resolving; /* registrations whose host is being resolved (resolve_t) */
};

/* With Redis, how often an endpoint with room asks for entries other nodes queued or retries
 * that came due (its own events are taken as soon as they are queued). */
#define POLL_MS 200

const char *const hd_hooks_fail_names[HD_HOOKS_FAIL_COUNT] = {"status", "timeout", "connect",
                                                              "tls",    "refused", "protocol"};
const char *const hd_hooks_drop_names[HD_HOOKS_DROP_COUNT] = {"memory", "disabled", "dead_letters"};

static void pump(hk_sender_t *s, endpoint_t *ep);

/* Copies s into out[size], cut to fit (no printf on the per-event path). */
static void copy_str(char *out, size_t size, const char *s)
{
    size_t n = strnlen(s, size - 1);
    memcpy(out, s, n);
    out[n] = '\0';
}

/* ---- accounting ---- */

static size_t charge_of(const hd_buf_t *body)
{
    return body->len + sizeof(job_t) + sizeof(hd_buf_t);
}

static void update_gauges(hk_sender_t *s)
{
    uint64_t pending = 0, oldest = 0;
    for (size_t i = 0; i < s->n_eps; i++) {
        endpoint_t *ep = s->eps[i];
        pending += s->dur ? ep->redis_pending : ep->n_pending;
        if (!hd_list_empty(&ep->all)) {
            job_t *j = hd_container_of(ep->all.next, job_t, all);
            if (oldest == 0 || j->created_ms < oldest)
                oldest = j->created_ms;
        }
    }
    HK_SET(s->st->pending, pending);
    HK_SET(s->st->oldest_pending_ms, oldest); /* a time; hd_hooks_get_stats makes it an age */
    HK_SET(s->st->dead_letters, s->dur ? s->redis_dlq : (uint64_t)s->n_dlq);
    HK_SET(s->st->memory_bytes, (uint64_t)(s->mem + (s->dur ? hk_durable_bytes(s->dur) : 0)));
}

/* Rate-limited warnings: at most one a second (the counters say how many). */
static int may_warn(hk_sender_t *s)
{
    uint64_t now = uv_now(s->loop);
    if (s->warned_ms && now - s->warned_ms < 1000)
        return 0;
    s->warned_ms = now;
    return 1;
}

/* ---- dead letters ---- */

static void letter_free(hk_sender_t *s, letter_t *l)
{
    hd_list_remove(&l->link);
    s->n_dlq--;
    l->ep->n_letters--;
    s->mem -= charge_of(l->body);
    hd_buf_unref(l->body);
    free(l);
}

static void drop_oldest_letter(hk_sender_t *s)
{
    letter_t *l = hd_container_of(s->dlq.next, letter_t, link);
    letter_free(s, l);
    HK_ADD(s->st->dropped[HD_HOOKS_DROP_DEAD_LETTERS], 1);
}

/* Makes a dead letter of an event (the body reference and its charge pass to it). */
static void bury(hk_sender_t *s, endpoint_t *ep, hd_buf_t *body, const char *id, const char *type,
                 uint64_t created_ms, uint32_t attempts, const char *reason)
{
    HK_ADD(s->st->dead_lettered, 1);
    if (may_warn(s))
        hd_log_warn("webhook %s: event %s is a dead letter after %u attempts: %s", ep->def->name,
                    id, attempts, reason);
    if (s->conf->webhook_dead_letters == 0) {
        s->mem -= charge_of(body);
        hd_buf_unref(body);
        HK_ADD(s->st->dropped[HD_HOOKS_DROP_DEAD_LETTERS], 1);
        return;
    }
    letter_t *l = hd_calloc(1, sizeof(*l));
    l->ep = ep;
    l->body = body;
    snprintf(l->id, sizeof(l->id), "%s", id);
    snprintf(l->type, sizeof(l->type), "%s", type);
    l->attempts = attempts;
    l->created_ms = created_ms;
    l->dead_ms = hk_wall_ms();
    snprintf(l->reason, sizeof(l->reason), "%s", reason);
    hd_list_insert_tail(&s->dlq, &l->link);
    s->n_dlq++;
    ep->n_letters++;
    while (s->n_dlq > s->conf->webhook_dead_letters)
        drop_oldest_letter(s);
}

/* ---- jobs ---- */

static void job_forget(hk_sender_t *s, job_t *j)
{
    endpoint_t *ep = j->ep;
    if (hd_list_linked(&j->link))
        hd_list_remove(&j->link);
    if (hd_heap_contains(&j->due))
        hd_heap_remove(&s->retry, &j->due);
    hd_list_remove(&j->all);
    ep->n_pending--;
}

static void job_free(hk_sender_t *s, job_t *j)
{
    job_forget(s, j);
    s->mem -= charge_of(j->body);
    hd_buf_unref(j->body);
    free(j);
}

static void job_bury(hk_sender_t *s, job_t *j, const char *reason)
{
    if (s->dur) {
        HK_ADD(s->st->dead_lettered, 1);
        if (may_warn(s))
            hd_log_warn("webhook %s: event %s is a dead letter after %u attempts: %s",
                        j->ep->def->name, j->id, j->attempts, reason);
        hk_durable_bury(s->dur, j->ep->slot, j->sid, reason, j->attempts);
        job_free(s, j);
        return;
    }
    job_forget(s, j);
    bury(s, j->ep, j->body, j->id, j->type, j->created_ms, j->attempts, reason);
    free(j);
}

/* Room for charge bytes: dead letters give way first. 0, or -1 when there is none. */
static int make_room(hk_sender_t *s, size_t charge)
{
    while (s->mem + charge > s->conf->webhook_max_memory_bytes && s->n_dlq > 0)
        drop_oldest_letter(s);
    return s->mem + charge > s->conf->webhook_max_memory_bytes ? -1 : 0;
}

/* Queues an event for ep (takes a new reference to body). */
static void enqueue(hk_sender_t *s, endpoint_t *ep, hd_buf_t *body, const char *id,
                    const char *type, uint64_t created_ms)
{
    if (ep->is_disabled) {
        HK_ADD(s->st->dropped[HD_HOOKS_DROP_DISABLED], 1);
        return;
    }
    if (ep->is_deleting) /* deleted once Redis answers: adding would make its queue again */
        return;
    if (s->dur) {
        if (hk_durable_add(s->dur, ep->slot, body, id, type, created_ms) < 0) {
            HK_ADD(s->st->dropped[HD_HOOKS_DROP_MEMORY], 1);
            if (may_warn(s))
                hd_log_warn("webhook %s: event %s dropped: webhook_max_memory is full of "
                            "events waiting for Redis",
                            ep->def->name, id);
            return;
        }
        HK_ADD(s->st->events, 1);
        ep->redis_pending++;
        return;
    }
    size_t charge = charge_of(body);
    if (make_room(s, charge) < 0) {
        HK_ADD(s->st->dropped[HD_HOOKS_DROP_MEMORY], 1);
        if (may_warn(s))
            hd_log_warn("webhook %s: event %s dropped: webhook_max_memory (%zu bytes) is full",
                        ep->def->name, id, s->conf->webhook_max_memory_bytes);
        return;
    }
    s->mem += charge;
    HK_ADD(s->st->events, 1);
    if (ep->n_pending >= s->conf->webhook_queue_size) {
        bury(s, ep, hd_buf_ref(body), id, type, created_ms, 0,
             "queue full (webhook_queue_size): not attempted");
        return;
    }
    job_t *j = hd_calloc(1, sizeof(*j));
    j->ep = ep;
    j->body = hd_buf_ref(body);
    copy_str(j->id, sizeof(j->id), id);
    copy_str(j->type, sizeof(j->type), type);
    j->created_ms = created_ms;
    hd_list_insert_tail(&ep->all, &j->all);
    hd_list_insert_tail(&ep->ready, &j->link);
    ep->n_pending++;
}

/* ---- attempts ---- */

static uint64_t next_random(hk_sender_t *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

/* The wait before retry k (k >= 1): uniform in [0, min(max, base * 2^(k-1))]. */
static uint64_t backoff_ms(hk_sender_t *s, uint32_t k)
{
    const hd_conf_t *c = s->conf;
    uint64_t cap = c->webhook_backoff_max_ms;
    if (k - 1 < 40 && (c->webhook_backoff_base_ms << (k - 1)) < cap)
        cap = c->webhook_backoff_base_ms << (k - 1);
    return next_random(s) % (cap + 1);
}

static void arm_timer(hk_sender_t *s);

static void on_timer(uv_timer_t *t)
{
    hk_sender_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    hd_heap_node_t *n;
    while ((n = hd_heap_min(&s->retry)) != NULL && n->key <= now) {
        job_t *j = hd_container_of(n, job_t, due);
        hd_heap_remove(&s->retry, n);
        hd_list_insert_tail(&j->ep->ready, &j->link);
    }
    for (size_t i = 0; i < s->n_eps; i++)
        pump(s, s->eps[i]);
    arm_timer(s);
}

static void arm_timer(hk_sender_t *s)
{
    hd_heap_node_t *n = hd_heap_min(&s->retry);
    if (!n) {
        uv_timer_stop(&s->timer);
        return;
    }
    uint64_t now = uv_now(s->loop);
    uv_timer_start(&s->timer, on_timer, n->key > now ? n->key - now : 0, 0);
}

/* Tells Redis ep's state (with Redis), for every node; kept to send again while it is away. */
static void store_state(hk_sender_t *s, endpoint_t *ep)
{
    if (s->reg) {
        ep->state_seq =
            hk_registry_state(s->reg, ep->def->name, ep->is_disabled ? ep->disabled_reason : NULL);
        ep->is_state_unstored = ep->state_seq == 0;
    }
}

static void enable(hk_sender_t *s, endpoint_t *ep)
{
    if (!ep->is_disabled)
        return;
    ep->is_disabled = 0;
    ep->failing_since_ms = 0;
    HK_ADD(s->st->endpoints_disabled, (uint64_t)-1);
    pump(s, ep);
}

/* Disables ep (store: and tells Redis, when the decision is this node's). */
static void disable(hk_sender_t *s, endpoint_t *ep, const char *reason, int store)
{
    ep->is_disabled = 1;
    ep->disabled_ms = hk_wall_ms();
    snprintf(ep->disabled_reason, sizeof(ep->disabled_reason), "%s", reason);
    HK_ADD(s->st->endpoints_disabled, 1);
    hd_log_warn("webhook %s (%s) disabled%s: %s; its %zu queued events are dead letters "
                "(POST /admin/webhooks/%s/enable, then replay them)",
                ep->def->name, ep->def->url, store ? "" : " (by another node)", reason,
                ep->n_pending - ep->in_flight, ep->def->name);
    /* what waits becomes dead letters; what is in flight ends on its own */
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &ep->all)
    {
        job_t *j = hd_container_of(pos, job_t, all);
        if (j->req.cb == NULL)
            job_bury(s, j, reason);
    }
    if (store)
        store_state(s, ep);
}

static void on_answer(hk_request_t *req, int status, int fail, const char *why)
{
    job_t *j = req->data;
    endpoint_t *ep = j->ep;
    hk_sender_t *s = ep->s;
    hd_buf_unref(req->head);
    req->head = NULL;
    req->cb = NULL;
    ep->in_flight--;
    ep->last_status = status;
    if (status >= 200 && status <= 299) {
        ep->delivered++;
        ep->last_error[0] = '\0';
        ep->failing_since_ms = 0;
        HK_ADD(s->st->delivered, 1);
        if (s->dur)
            hk_durable_done(s->dur, ep->slot, j->sid);
        job_free(s, j);
        goto out;
    }
    if (status > 0) {
        fail = HD_HOOKS_FAIL_STATUS;
        snprintf(j->last_error, sizeof(j->last_error), "HTTP %d", status);
    } else {
        snprintf(j->last_error, sizeof(j->last_error), "%s", why ? why : "failed");
    }
    snprintf(ep->last_error, sizeof(ep->last_error), "%s", j->last_error);
    ep->failures[fail]++;
    HK_ADD(s->st->failures[fail], 1);
    hd_log_debug("webhook %s: event %s attempt %u failed: %s", ep->def->name, j->id, j->attempts,
                 j->last_error);
    if (status == 410) {
        job_bury(s, j, "410 Gone: the receiver asked to stop");
        if (!ep->is_disabled)
            disable(s, ep, "410 Gone: the receiver asked to stop", 1);
        goto out;
    }
    uint64_t wall = hk_wall_ms();
    if (ep->failing_since_ms == 0)
        ep->failing_since_ms = wall;
    uint64_t limit = s->conf->webhook_disable_after_ms;
    if (limit && !ep->is_disabled && wall - ep->failing_since_ms >= limit) {
        char reason[400];
        snprintf(reason, sizeof(reason),
                 "failing for %llu s without a 2xx (webhook_disable_after); last: %s",
                 (unsigned long long)((wall - ep->failing_since_ms) / 1000), j->last_error);
        job_bury(s, j, reason);
        disable(s, ep, reason, 1);
        goto out;
    }
    if (ep->is_disabled) {
        job_bury(s, j, j->last_error);
        goto out;
    }
    uint64_t now = uv_now(s->loop);
    uint64_t wait = backoff_ms(s, j->attempts), asked;
    if (req->retry_after[0] &&
        hk_retry_after_parse(req->retry_after, strlen(req->retry_after), wall, &asked) == 0) {
        if (asked > s->conf->webhook_backoff_max_ms)
            asked = s->conf->webhook_backoff_max_ms;
        if (asked > wait)
            wait = asked;
    }
    if (s->dur ? wall + wait - j->first_wall_ms > s->conf->webhook_retry_window_ms
               : now + wait - j->first_attempt_ms > s->conf->webhook_retry_window_ms) {
        char reason[400];
        snprintf(reason, sizeof(reason), "retry window passed; last: %s", j->last_error);
        job_bury(s, j, reason);
        goto out;
    }
    HK_ADD(s->st->retries, 1);
    if (s->dur) {
        /* the wait and the schedule go to Redis with the entry; any node attempts it next */
        hk_durable_retry(s->dur, ep->slot, j->sid, wall + wait, j->attempts, j->first_wall_ms);
        job_free(s, j);
        goto out;
    }
    j->due.key = now + wait;
    hd_heap_push(&s->retry, &j->due);
    arm_timer(s);
out:
    pump(s, ep);
    update_gauges(s);
}

static void attempt(hk_sender_t *s, job_t *j)
{
    endpoint_t *ep = j->ep;
    uint64_t wall = hk_wall_ms();
    j->req.head = hk_signed_head(ep->signer, j->id, wall / 1000, j->body);
    j->req.body = j->body;
    j->req.cb = on_answer;
    j->req.data = j;
    uv_update_time(s->loop); /* the client's timers start from now, not the pass's start */
    if (j->attempts++ == 0)
        j->first_attempt_ms = uv_now(s->loop);
    if (j->first_wall_ms == 0)
        j->first_wall_ms = wall;
    ep->attempts++;
    ep->in_flight++;
    HK_ADD(s->st->attempts, 1);
    hk_pool_send(ep->pool, &j->req);
}

static void pump(hk_sender_t *s, endpoint_t *ep)
{
    if (s->dur) {
        /* room for more: ask Redis (the entries come to on_entry, then are attempted) */
        size_t conc = s->conf->webhook_concurrency;
        if (!ep->is_disabled && !ep->is_deleting && ep->in_flight < conc &&
            s->mem + 64 * 1024 <= s->conf->webhook_max_memory_bytes)
            hk_durable_take(s->dur, ep->slot, (unsigned)(conc - ep->in_flight));
        return;
    }
    while (!ep->is_disabled && ep->in_flight < s->conf->webhook_concurrency &&
           !hd_list_empty(&ep->ready)) {
        job_t *j = hd_container_of(ep->ready.next, job_t, link);
        hd_list_remove(&j->link);
        attempt(s, j);
    }
}

/* ---- events ---- */

void hk_sender_message(hk_sender_t *s, hd_message_t *m)
{
    hd_buf_t *body = NULL;
    char id[40];
    uint64_t now = hk_wall_ms();
    for (size_t i = 0; i < s->n_eps; i++) {
        endpoint_t *ep = s->eps[i];
        if (!(ep->def->events & HD_WEBHOOK_EV_MESSAGE) ||
            !hd_webhook_def_matches(ep->def, m->channel, m->channel_len))
            continue;
        if (!body) {
            body = hk_event_message(m, now);
            hk_event_id(id);
        }
        enqueue(s, ep, body, id, "message.published", now);
        pump(s, ep);
    }
    if (body)
        hd_buf_unref(body);
    update_gauges(s);
}

void hk_sender_channel(hk_sender_t *s, const char *channel, size_t len, int occupied,
                       const char *given_id)
{
    hd_buf_t *body = NULL;
    char id[40];
    uint64_t now = hk_wall_ms();
    unsigned want = occupied ? HD_WEBHOOK_EV_OCCUPIED : HD_WEBHOOK_EV_VACATED;
    for (size_t i = 0; i < s->n_eps; i++) {
        endpoint_t *ep = s->eps[i];
        if (!(ep->def->events & want) || !hd_webhook_def_matches(ep->def, channel, len))
            continue;
        if (!body) {
            body = hk_event_channel(channel, len, occupied, now);
            if (given_id)
                snprintf(id, sizeof(id), "%s", given_id);
            else
                hk_event_id(id);
        }
        enqueue(s, ep, body, id, occupied ? "channel.occupied" : "channel.vacated", now);
        pump(s, ep);
    }
    if (body)
        hd_buf_unref(body);
    update_gauges(s);
}

void hk_sender_member(hk_sender_t *s, const char *channel, size_t len, int added, const char *data,
                      size_t data_len, const char *given_id)
{
    hd_buf_t *body = NULL;
    char id[40];
    uint64_t now = hk_wall_ms();
    unsigned want = added ? HD_WEBHOOK_EV_MEMBER_ADDED : HD_WEBHOOK_EV_MEMBER_REMOVED;
    for (size_t i = 0; i < s->n_eps; i++) {
        endpoint_t *ep = s->eps[i];
        if (!(ep->def->events & want) || !hd_webhook_def_matches(ep->def, channel, len))
            continue;
        if (!body) {
            body = hk_event_member(channel, len, added, data, data_len, now);
            if (!body)
                return;
            if (given_id)
                snprintf(id, sizeof(id), "%s", given_id);
            else
                hk_event_id(id);
        }
        enqueue(s, ep, body, id, added ? "member.added" : "member.removed", now);
        pump(s, ep);
    }
    if (body)
        hd_buf_unref(body);
    update_gauges(s);
}

/* ---- endpoints ---- */

/* The admin API's endpoints changed: the publishing threads' filter learns of it. */
static void filter_update(hk_sender_t *s)
{
    const hd_webhook_def_t **defs = hd_calloc(s->n_api ? s->n_api : 1, sizeof(*defs));
    size_t n = 0;
    for (size_t i = 0; i < s->n_eps; i++) {
        if (s->eps[i]->is_api)
            defs[n++] = s->eps[i]->def;
    }
    hk_filter_set(s->filter, defs, n);
    free(defs);
}

/* A new endpoint, last: def is the conf's, or own (then record too) one the admin API
 * registered, both taken. The caller checked there is room (s->n_eps < s->cap_eps). */
static endpoint_t *endpoint_add(hk_sender_t *s, const hd_webhook_def_t *def, hd_webhook_def_t *own,
                                char *record)
{
    HD_ASSERT(s->n_eps < s->cap_eps);
    endpoint_t *ep = hd_calloc(1, sizeof(*ep));
    ep->s = s;
    ep->def = own ? own : def;
    ep->own_def = own;
    ep->record = record;
    ep->is_api = own != NULL;
    ep->pool = hk_pool_new(ep->def, &s->cc);
    ep->signer = hk_signer_new(ep->def);
    hd_list_init(&ep->ready);
    hd_list_init(&ep->all);
    if (s->dur)
        ep->slot = hk_durable_slot_new(s->dur, ep->def, ep);
    s->eps[s->n_eps++] = ep;
    s->n_api += ep->is_api;
    HK_SET(s->st->endpoints, (uint64_t)s->n_eps);
    return ep;
}

/* Frees ep with what it holds: its connections (requests in flight are cut), its pending events
 * and its dead letters (in memory). Returns the events that were pending here. */
static size_t endpoint_free(hk_sender_t *s, endpoint_t *ep)
{
    size_t n = 0;
    hk_pool_close(ep->pool); /* requests in flight end without their callback */
    while (!hd_list_empty(&ep->all)) {
        job_t *j = hd_container_of(ep->all.next, job_t, all);
        if (j->req.head)
            hd_buf_unref(j->req.head);
        job_free(s, j);
        n++;
    }
    hd_list_t *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &s->dlq)
    {
        letter_t *l = hd_container_of(pos, letter_t, link);
        if (l->ep == ep)
            letter_free(s, l);
    }
    if (ep->slot)
        hk_durable_slot_free(ep->slot);
    hk_signer_free(ep->signer);
    free(ep->own_def);
    free(ep->record);
    free(ep);
    return n;
}

/* An endpoint of the admin API deleted (here, or on another node: with Redis). */
static void endpoint_remove(hk_sender_t *s, endpoint_t *ep)
{
    size_t i = 0;
    while (s->eps[i] != ep)
        i++;
    memmove(&s->eps[i], &s->eps[i + 1], (s->n_eps - i - 1) * sizeof(s->eps[0]));
    s->n_eps--;
    s->n_api--;
    if (ep->is_disabled)
        HK_ADD(s->st->endpoints_disabled, (uint64_t)-1);
    HK_SET(s->st->endpoints, (uint64_t)s->n_eps);
    char name[HD_WEBHOOK_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s", ep->def->name);
    size_t n = endpoint_free(s, ep);
    if (n && !s->dur)
        hd_log_info("webhook %s deleted: its %zu pending events are dropped", name, n);
    else
        hd_log_info("webhook %s deleted", name);
    filter_update(s);
    update_gauges(s);
}

/* ---- admin ---- */

static void json_str(hd_sbuf_t *sb, const char *v)
{
    hk_json_str(sb, v, strlen(v));
}

static void endpoint_json(hd_sbuf_t *sb, endpoint_t *ep)
{
    const hd_webhook_def_t *d = ep->def;
    hd_sbuf_appends(sb, "{\"name\":");
    json_str(sb, d->name);
    hd_sbuf_appends(sb, ",\"url\":");
    json_str(sb, d->url);
    hd_sbuf_appends(sb, ",\"channels\":[");
    for (size_t k = 0; k < d->n_patterns; k++) {
        if (k)
            hd_sbuf_appends(sb, ",");
        json_str(sb, d->patterns[k]);
    }
    hd_sbuf_appends(sb, "],\"events\":[");
    const char *names[] = {"message.published", "channel.occupied", "channel.vacated",
                           "member.added", "member.removed"};
    int first = 1;
    for (unsigned k = 0; k < 5; k++) {
        if (d->events & (1u << k)) {
            hd_sbuf_appendf(sb, "%s\"%s\"", first ? "" : ",", names[k]);
            first = 0;
        }
    }
    hd_sbuf_appendf(sb, "],\"secrets\":%zu,\"source\":\"%s\",\"state\":\"%s\"", d->n_keys,
                    ep->is_api ? "api" : "conf", ep->is_disabled ? "disabled" : "enabled");
    if (ep->is_disabled) {
        hd_sbuf_appends(sb, ",\"disabled_reason\":");
        json_str(sb, ep->disabled_reason);
        hd_sbuf_appendf(sb, ",\"disabled_at_ms\":%llu", (unsigned long long)ep->disabled_ms);
    }
    uint64_t oldest_age = 0;
    if (!hd_list_empty(&ep->all)) {
        job_t *j = hd_container_of(ep->all.next, job_t, all);
        uint64_t now = hk_wall_ms();
        oldest_age = now > j->created_ms ? now - j->created_ms : 0;
    }
    hd_sbuf_appendf(sb, ",\"pending\":%llu,\"in_flight\":%zu,\"oldest_pending_age_ms\":%llu,",
                    (unsigned long long)(ep->s->dur ? ep->redis_pending : ep->n_pending),
                    ep->in_flight, (unsigned long long)oldest_age);
    if (ep->s->dur) /* in Redis, with every endpoint's: GET .../dead-letters?endpoint= counts */
        hd_sbuf_appends(sb, "\"dead_letters\":null");
    else
        hd_sbuf_appendf(sb, "\"dead_letters\":%zu", ep->n_letters);
    hd_sbuf_appendf(sb, ",\"connections\":%zu,\"attempts\":%llu,\"delivered\":%llu,\"failures\":{",
                    hk_pool_conns(ep->pool), (unsigned long long)ep->attempts,
                    (unsigned long long)ep->delivered);
    for (int k = 0; k < HD_HOOKS_FAIL_COUNT; k++)
        hd_sbuf_appendf(sb, "%s\"%s\":%llu", k ? "," : "", hd_hooks_fail_names[k],
                        (unsigned long long)ep->failures[k]);
    hd_sbuf_appendf(sb, "},\"failing_since_ms\":%llu,\"last_error\":",
                    (unsigned long long)ep->failing_since_ms);
    json_str(sb, ep->last_error);
    hd_sbuf_appends(sb, "}");
}

static void letter_json(hd_sbuf_t *sb, const letter_t *l, int with_payload)
{
    hd_sbuf_appends(sb, "{\"event_id\":");
    json_str(sb, l->id);
    hd_sbuf_appends(sb, ",\"endpoint\":");
    json_str(sb, l->ep->def->name);
    hd_sbuf_appendf(sb,
                    ",\"type\":\"%s\",\"attempts\":%u,\"created_ms\":%llu,\"dead_ms\":%llu,"
                    "\"bytes\":%zu,\"reason\":",
                    l->type, l->attempts, (unsigned long long)l->created_ms,
                    (unsigned long long)l->dead_ms, l->body->len);
    json_str(sb, l->reason);
    if (with_payload) {
        hd_sbuf_appends(sb, ",\"payload\":"); /* the event body: JSON made by event.c */
        hd_sbuf_append(sb, l->body->data, l->body->len);
    }
    hd_sbuf_appends(sb, "}");
}

static endpoint_t *find_endpoint(hk_sender_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_eps; i++) {
        if (strcmp(s->eps[i]->def->name, name) == 0)
            return s->eps[i];
    }
    return NULL;
}

static void answer(hd_hooks_admin_t *a, int status, hd_sbuf_t *sb)
{
    hd_buf_t *b = hd_sbuf_finish(sb);
    a->status = status;
    a->body = hd_strndup(b->data, b->len);
    a->body_len = b->len;
    hd_buf_unref(b);
}

static void answer_error(hd_hooks_admin_t *a, int status, const char *what, const char *name)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 128);
    hd_sbuf_appends(&sb, "{\"error\":");
    char msg[200];
    snprintf(msg, sizeof(msg), "%s%s", what, name);
    json_str(&sb, msg);
    hd_sbuf_appendf(&sb, ",\"status\":%d}", status);
    answer(a, status, &sb);
}

/* Queues a dead letter again as a new event with the same id; 0, or -1 when its endpoint is
 * disabled or its queue is full (the letter stays). */
static int replay(hk_sender_t *s, letter_t *l)
{
    endpoint_t *ep = l->ep;
    if (ep->is_disabled || ep->n_pending >= s->conf->webhook_queue_size)
        return -1;
    job_t *j = hd_calloc(1, sizeof(*j));
    j->ep = ep;
    j->body = hd_buf_ref(l->body);
    memcpy(j->id, l->id, sizeof(j->id));
    memcpy(j->type, l->type, sizeof(j->type));
    j->created_ms = l->created_ms;
    s->mem += charge_of(j->body);
    letter_free(s, l);
    hd_list_insert_tail(&ep->all, &j->all);
    hd_list_insert_tail(&ep->ready, &j->link);
    ep->n_pending++;
    HK_ADD(s->st->replayed, 1);
    return 0;
}

/* 1 if def's host is an address webhook_allow_private refuses (loopback, private, link-local,
 * unspecified, multicast; IPv4 in any form inet_aton reads, as the resolver would), or a name
 * that always is (localhost); *is_name set when it is another name (resolved then: resolve). */
static int host_is_private(const hd_webhook_def_t *d, int *is_name)
{
    *is_name = 0;
    union { /* one object read as a struct sockaddr: no aliasing across types (client.c) */
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    memset(&u, 0, sizeof(u));
    if (inet_aton(d->host, &u.in.sin_addr)) {
        u.in.sin_family = AF_INET;
        return hk_addr_is_private(&u.sa);
    }
    memset(&u, 0, sizeof(u));
    if (inet_pton(AF_INET6, d->host, &u.in6.sin6_addr) == 1) {
        u.in6.sin6_family = AF_INET6;
        return hk_addr_is_private(&u.sa);
    }
    size_t n = strlen(d->host);
    if (n > 0 && d->host[n - 1] == '.') /* the root: "localhost." */
        n--;
    if ((n == 9 && strncasecmp(d->host, "localhost", 9) == 0) ||
        (n > 10 && strncasecmp(d->host + n - 10, ".localhost", 10) == 0))
        return 1;
    *is_name = 1;
    return 0;
}

/* The endpoint registered (here or, with Redis, by any node): {"endpoint":{...}}, 201. */
static void answer_endpoint(hd_hooks_admin_t *a, int status, endpoint_t *ep)
{
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 1024);
    hd_sbuf_appends(&sb, "{\"endpoint\":");
    endpoint_json(&sb, ep);
    hd_sbuf_appends(&sb, "}");
    answer(a, status, &sb);
}

/* An admin request waiting for Redis. */
typedef struct pending_s {
    hk_sender_t *s;
    hd_hooks_admin_t *a;
} pending_t;

/* REGISTER accepted: a->def and a->record become the new endpoint's. */
static void added(hk_sender_t *s, hd_hooks_admin_t *a)
{
    endpoint_t *ep = find_endpoint(s, a->def->name); /* with Redis, a sync may have been first */
    if (!ep && s->n_eps >= s->cap_eps) {
        answer_error(a, 507, "no room for another webhook on this node (webhook_max_endpoints)",
                     "");
        return;
    }
    if (!ep) {
        ep = endpoint_add(s, NULL, a->def, a->record);
        a->def = NULL;
        a->record = NULL;
        a->record_len = 0;
        filter_update(s);
        update_gauges(s);
        hd_log_info("webhook %s (%s) registered through the admin API", ep->def->name,
                    ep->def->url);
    }
    answer_endpoint(a, 201, ep);
}

static void answer_redis_down(hd_hooks_admin_t *a)
{
    answer_error(a, 503, "redis is unavailable: ",
                 "webhook registrations live in Redis; try again once it is back");
}

static void on_put(void *arg, int result)
{
    pending_t *p = arg;
    hk_sender_t *s = p->s;
    hd_hooks_admin_t *a = p->a;
    char msg[200];
    free(p);
    if (result == HK_REG_DONE && s->dur) {
        added(s, a);
    } else if (result == HK_REG_NONE) {
        answer_error(a, 409,
                     "a webhook is already registered (by a node of the cluster) with the id ",
                     a->def->name);
    } else if (result == HK_REG_FULL) {
        snprintf(msg, sizeof(msg),
                 "too many webhooks registered through the admin API: at most %u for the cluster "
                 "(webhook_max_endpoints); delete one first",
                 s->conf->webhook_max_endpoints);
        answer_error(a, 507, msg, "");
    } else {
        answer_redis_down(a);
    }
    hk_admin_answered(a);
}

static void on_del(void *arg, int result)
{
    pending_t *p = arg;
    hk_sender_t *s = p->s;
    hd_hooks_admin_t *a = p->a;
    free(p);
    endpoint_t *ep = find_endpoint(s, a->endpoint);
    if (ep && result != HK_REG_DONE)
        ep->is_deleting = 0;
    if (result == HK_REG_DOWN || !s->dur) {
        answer_redis_down(a);
    } else if (result == HK_REG_NONE) {
        answer_error(a, 404, "no webhook named ", a->endpoint);
    } else {
        if (ep && ep->is_api)
            endpoint_remove(s, ep);
        hd_sbuf_t sb;
        hd_sbuf_init(&sb, 128);
        hd_sbuf_appends(&sb, "{\"deleted\":");
        json_str(&sb, a->endpoint);
        hd_sbuf_appends(&sb, "}");
        answer(a, 200, &sb);
    }
    hk_admin_answered(a);
}

static void answer_private(hd_hooks_admin_t *a)
{
    char msg[200];
    snprintf(msg, sizeof(msg),
             "%.60s is a loopback, private or link-local address: refused "
             "(webhook_allow_private is off)",
             a->def->host);
    answer_error(a, 400, msg, "");
}

/* A registration checked: stored (with Redis: answered later), or added here. 1 when a is
 * answered now, 0 when later. */
static int store(hk_sender_t *s, hd_hooks_admin_t *a)
{
    if (s->reg) { /* stored first; every node (this one too) adds it once Redis took it */
        pending_t *p = hd_malloc(sizeof(*p));
        p->s = s;
        p->a = a;
        hk_registry_put(s->reg, a->def->name, a->record, a->record_len, on_put, p);
        return 0;
    }
    added(s, a);
    return 1;
}

/* A registration whose host is a name, resolved before it is accepted (off the loop). */
typedef struct resolve_s {
    uv_getaddrinfo_t gai;
    hd_list_t link; /* in s->resolving */
    hk_sender_t *s; /* NULL once the sender closed */
    hd_hooks_admin_t *a;
} resolve_t;

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    resolve_t *rs = g->data;
    hk_sender_t *s = rs->s;
    hd_hooks_admin_t *a = rs->a;
    char msg[200];
    int is_private = 0;
    for (struct addrinfo *ai = res; ai && status == 0; ai = ai->ai_next)
        is_private |= hk_addr_is_private(ai->ai_addr);
    uv_freeaddrinfo(res);
    if (s)
        hd_list_remove(&rs->link);
    free(rs);
    if (!s) {
        answer_error(a, 503, "webhooks are stopping", "");
    } else if (status < 0) {
        snprintf(msg, sizeof(msg), "cannot resolve %.60s: %s", a->def->host, uv_strerror(status));
        answer_error(a, 400, msg, "");
    } else if (is_private) {
        answer_private(a);
    } else if (!store(s, a)) {
        return; /* answered once Redis took it */
    }
    hk_admin_answered(a);
}

/* Resolves a's host (uv_getaddrinfo: the resolver's thread pool): any of its addresses that
 * webhook_allow_private forbids refuses the registration, as a name that does not resolve.
 * The connections check again (client.c): the name may change. */
static int resolve(hk_sender_t *s, hd_hooks_admin_t *a)
{
    resolve_t *rs = hd_calloc(1, sizeof(*rs));
    struct addrinfo hints;
    char port[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", (unsigned)a->def->port);
    rs->s = s;
    rs->a = a;
    rs->gai.data = rs;
    int rc = uv_getaddrinfo(s->loop, &rs->gai, on_resolved, a->def->host, port, &hints);
    if (rc < 0) {
        free(rs);
        char msg[200];
        snprintf(msg, sizeof(msg), "cannot resolve %.60s: %s", a->def->host, uv_strerror(rc));
        answer_error(a, 400, msg, "");
        return 1;
    }
    hd_list_insert_tail(&s->resolving, &rs->link);
    return 0;
}

/* REGISTER: a->def and a->record become the new endpoint's (taken from a on success). */
static int admin_register(hk_sender_t *s, hd_hooks_admin_t *a)
{
    endpoint_t *ep = find_endpoint(s, a->def->name);
    char msg[300];
    if (ep) {
        answer_error(a, 409,
                     ep->is_api ? "a webhook is already registered with the id "
                                : "a webhook of the conf (webhook directive) is named ",
                     a->def->name);
        return 1;
    }
    int is_name = 0;
    if (!s->conf->webhook_allow_private && host_is_private(a->def, &is_name)) {
        answer_private(a);
        return 1;
    }
    if (s->n_api >= s->conf->webhook_max_endpoints) {
        snprintf(msg, sizeof(msg),
                 "too many webhooks registered through the admin API: at most %u "
                 "(webhook_max_endpoints); delete one first",
                 s->conf->webhook_max_endpoints);
        answer_error(a, 507, msg, "");
        return 1;
    }
    if (!s->conf->webhook_allow_private && is_name)
        return resolve(s, a);
    return store(s, a);
}

/* DELETE: an endpoint of the admin API, with what it holds. */
static int admin_delete(hk_sender_t *s, hd_hooks_admin_t *a)
{
    endpoint_t *ep = find_endpoint(s, a->endpoint);
    if (!ep) {
        answer_error(a, 404, "no webhook named ", a->endpoint);
        return 1;
    }
    if (!ep->is_api) {
        answer_error(a, 409, ep->def->name,
                     " is defined in the conf (webhook directive): remove it there and restart; "
                     "the admin API deletes only what it registered");
        return 1;
    }
    if (s->reg) { /* deleted in Redis first; the other nodes follow at their next read */
        /* no take after the delete: it would make its queue again in Redis */
        ep->is_deleting = 1;
        pending_t *p = hd_malloc(sizeof(*p));
        p->s = s;
        p->a = a;
        hk_registry_del(s->reg, ep->def->name, on_del, p);
        return 0;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 128);
    hd_sbuf_appends(&sb, "{\"deleted\":");
    json_str(&sb, ep->def->name);
    hd_sbuf_appends(&sb, "}");
    endpoint_remove(s, ep);
    answer(a, 200, &sb);
    return 1;
}

int hk_sender_admin(hk_sender_t *s, hd_hooks_admin_t *a)
{
    hd_sbuf_t sb;
    endpoint_t *only = NULL;
    if (a->op == HD_HOOKS_REGISTER)
        return admin_register(s, a);
    if (a->op == HD_HOOKS_DELETE)
        return admin_delete(s, a);
    if (a->endpoint[0] && !(only = find_endpoint(s, a->endpoint))) {
        answer_error(a, 404, "no webhook named ", a->endpoint);
        return 1;
    }
    if (s->dur && a->op >= HD_HOOKS_DEAD_LIST && a->op <= HD_HOOKS_DEAD_PURGE) {
        hk_durable_admin(s->dur, a);
        return 0;
    }
    hd_sbuf_init(&sb, 1024);
    switch (a->op) {
    case HD_HOOKS_LIST:
        hd_sbuf_appends(&sb, "{\"endpoints\":[");
        for (size_t i = 0, n = 0; i < s->n_eps; i++) {
            if (only && s->eps[i] != only)
                continue;
            if (n++)
                hd_sbuf_appends(&sb, ",");
            endpoint_json(&sb, s->eps[i]);
        }
        hd_sbuf_appendf(&sb, "],\"dead_letters\":%llu,\"memory_bytes\":%zu,\"store\":\"%s\"}",
                        (unsigned long long)(s->dur ? s->redis_dlq : s->n_dlq),
                        s->mem + (s->dur ? hk_durable_bytes(s->dur) : 0),
                        s->dur ? "redis" : "memory");
        answer(a, 200, &sb);
        return 1;
    case HD_HOOKS_ENABLE:
        if (!only) {
            hd_sbuf_dispose(&sb);
            answer_error(a, 404, "no webhook named ", "");
            return 1;
        }
        if (only->is_disabled) {
            enable(s, only);
            hd_log_info("webhook %s enabled again by the admin API", only->def->name);
        }
        store_state(s, only); /* with Redis: for every node, whatever this one thought */
        hd_sbuf_appends(&sb, "{\"endpoint\":");
        endpoint_json(&sb, only);
        hd_sbuf_appends(&sb, "}");
        pump(s, only);
        answer(a, 200, &sb);
        break;
    case HD_HOOKS_DEAD_LIST:
    case HD_HOOKS_DEAD_GET: {
        int get = a->op == HD_HOOKS_DEAD_GET;
        size_t n = 0, limit = a->limit ? a->limit : 100;
        hd_list_t *pos;
        hd_sbuf_appends(&sb, "{\"dead_letters\":[");
        for (pos = s->dlq.next; pos != &s->dlq && n < limit; pos = pos->next) {
            letter_t *l = hd_container_of(pos, letter_t, link);
            if ((only && l->ep != only) || (get && strcmp(l->id, a->event_id) != 0))
                continue;
            if (n++)
                hd_sbuf_appends(&sb, ",");
            letter_json(&sb, l, get);
        }
        hd_sbuf_appendf(&sb, "],\"total\":%zu}", only ? only->n_letters : s->n_dlq);
        if (get && n == 0) {
            hd_sbuf_dispose(&sb);
            answer_error(a, 404, "no dead letter with event id ", a->event_id);
            return 1;
        }
        answer(a, 200, &sb);
        return 1;
    }
    case HD_HOOKS_DEAD_REPLAY:
    case HD_HOOKS_DEAD_PURGE: {
        size_t done = 0, skipped = 0;
        hd_list_t *pos, *tmp;
        hd_list_foreach_safe(pos, tmp, &s->dlq)
        {
            letter_t *l = hd_container_of(pos, letter_t, link);
            if ((only && l->ep != only) || (a->event_id[0] && strcmp(l->id, a->event_id) != 0))
                continue;
            if (a->op == HD_HOOKS_DEAD_PURGE) {
                letter_free(s, l);
                done++;
            } else if (replay(s, l) == 0) {
                done++;
            } else {
                skipped++;
            }
        }
        if (a->op == HD_HOOKS_DEAD_REPLAY) {
            for (size_t i = 0; i < s->n_eps; i++)
                pump(s, s->eps[i]);
        }
        if (a->event_id[0] && done + skipped == 0) {
            hd_sbuf_dispose(&sb);
            answer_error(a, 404, "no dead letter with event id ", a->event_id);
            break;
        }
        if (a->op == HD_HOOKS_DEAD_PURGE) {
            hd_sbuf_appendf(&sb, "{\"purged\":%zu}", done);
            answer(a, 200, &sb);
        } else {
            hd_sbuf_appendf(&sb, "{\"replayed\":%zu,\"skipped\":%zu}", done, skipped);
            answer(a, done == 0 && skipped > 0 ? 409 : 200, &sb);
        }
        break;
    }
    default:
        hd_sbuf_dispose(&sb);
        answer_error(a, 400, "unknown admin request", "");
        return 1;
    }
    update_gauges(s);
    return 1;
}

/* ---- with Redis: what durable.c tells ---- */

static void on_entry(void *owner, const hk_entry_t *e)
{
    endpoint_t *ep = owner;
    hk_sender_t *s = ep->s;
    job_t *j = hd_calloc(1, sizeof(*j));
    j->ep = ep;
    j->body = hd_buf_new_copy(e->body, e->body_len);
    memcpy(j->sid, e->sid, e->sid_len);
    memcpy(j->id, e->id, e->id_len);
    memcpy(j->type, e->type, e->type_len);
    j->created_ms = e->created_ms;
    j->attempts = e->attempts;
    j->first_wall_ms = e->first_ms;
    s->mem += charge_of(j->body);
    hd_list_insert_tail(&ep->all, &j->all);
    ep->n_pending++;
    if (ep->is_disabled) {
        job_bury(s, j, ep->disabled_reason);
        return;
    }
    attempt(s, j);
}

static void on_taken(void *owner, uint64_t pending, uint64_t dead_letters)
{
    endpoint_t *ep = owner;
    hk_sender_t *s = ep->s;
    ep->redis_pending = pending;
    s->redis_dlq = dead_letters;
    update_gauges(s);
}

static void on_redis_up(void *data)
{
    hk_sender_t *s = data;
    for (size_t i = 0; i < s->n_eps; i++)
        pump(s, s->eps[i]);
}

static int replayable(void *data, const char *name, size_t len, hk_dslot_t **out)
{
    hk_sender_t *s = data;
    for (size_t i = 0; i < s->n_eps; i++) {
        const char *n = s->eps[i]->def->name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) {
            *out = s->eps[i]->slot;
            return s->eps[i]->is_disabled ? 0 : 1;
        }
    }
    return -1;
}

static void on_pev(void *data, const hk_pev_t *ev, const char *id)
{
    if (ev->is_channel)
        hk_sender_channel(data, ev->channel, ev->channel_len, ev->added, id);
    else
        hk_sender_member(data, ev->channel, ev->channel_len, ev->added, ev->data, ev->data_len, id);
}

static const hk_durable_ops_t durable_ops = {on_entry, on_taken, on_redis_up, replayable, on_pev};

/* ---- with Redis: what registry.c tells ---- */

static const hk_reg_entry_t *entry_of(const hk_reg_entry_t *e, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (e[i].name_len == len && memcmp(e[i].name, name, len) == 0)
            return &e[i];
    }
    return NULL;
}

/* A registration read from Redis becomes an endpoint here (what it says is checked again: it
 * is data from outside). */
static void sync_add(hk_sender_t *s, const hk_reg_entry_t *e)
{
    char why[300];
    if (s->n_eps >= s->cap_eps) {
        if (may_warn(s))
            hd_log_warn("webhook %.*s (registered in Redis) not served here: this node has room "
                        "for %u (webhook_max_endpoints)",
                        (int)e->name_len, e->name, s->conf->webhook_max_endpoints);
        return;
    }
    hd_webhook_def_t *def = hd_malloc(sizeof(*def));
    int rc = hd_webhook_def_from_json(def, e->record, e->record_len, why, sizeof(why));
    if (rc < 0 || strlen(def->name) != e->name_len ||
        memcmp(def->name, e->name, e->name_len) != 0) {
        if (may_warn(s))
            hd_log_warn("webhook %.*s: its registration in Redis is not one (%s): ignored",
                        (int)(e->name_len > 64 ? 64 : e->name_len), e->name,
                        rc < 0 ? why : "its id is not its key");
        free(def);
        return;
    }
    endpoint_add(s, NULL, def, hd_strndup(e->record, e->record_len));
    hd_log_info("webhook %s (%s) registered (read from Redis)", def->name, def->url);
}

static void on_sync(void *data, const hk_reg_entry_t *e, size_t n, uint64_t seen)
{
    hk_sender_t *s = data;
    int changed = 0;
    /* deleted, or registered again differently (deleted and added between two reads) */
    for (size_t i = s->n_eps; i-- > 0;) {
        endpoint_t *ep = s->eps[i];
        const hk_reg_entry_t *x = ep->is_api ? entry_of(e, n, ep->def->name) : NULL;
        if (ep->is_api && (!x || !x->record || x->record_len != strlen(ep->record) ||
                           memcmp(x->record, ep->record, x->record_len) != 0)) {
            char name[HD_WEBHOOK_NAME_MAX + 1];
            snprintf(name, sizeof(name), "%s", ep->def->name);
            endpoint_remove(s, ep);
            if (!x || !x->record)
                hk_registry_forget(s->reg, name);
            changed = 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        char name[HD_WEBHOOK_NAME_MAX + 1];
        if (!e[i].record || e[i].name_len > HD_WEBHOOK_NAME_MAX)
            continue;
        memcpy(name, e[i].name, e[i].name_len);
        name[e[i].name_len] = '\0';
        if (find_endpoint(s, name))
            continue; /* known, or a conf endpoint's name (the admin API refuses those) */
        sync_add(s, &e[i]);
        changed = 1;
    }
    /* the cluster's disabled endpoints */
    for (size_t i = 0; i < s->n_eps; i++) {
        endpoint_t *ep = s->eps[i];
        const hk_reg_entry_t *x = entry_of(e, n, ep->def->name);
        if (ep->is_state_unstored) {
            store_state(s, ep); /* this node's decision, not in Redis yet */
        } else if (ep->state_seq > seen) {
            continue; /* read before this node's last decision reached Redis */
        } else if (x && x->off && !ep->is_disabled) {
            char reason[160];
            snprintf(reason, sizeof(reason), "%.*s", (int)x->off_len, x->off);
            disable(s, ep, reason, 0);
        } else if ((!x || !x->off) && ep->is_disabled) {
            hd_log_info("webhook %s enabled again (by another node)", ep->def->name);
            enable(s, ep);
        }
    }
    if (changed)
        filter_update(s);
    update_gauges(s);
}

static const hk_registry_ops_t registry_ops = {on_sync};

static void on_poll(uv_timer_t *t)
{
    hk_sender_t *s = t->data;
    for (size_t i = 0; i < s->n_eps; i++)
        pump(s, s->eps[i]);
    hk_durable_take_members(s->dur);
    hk_registry_poll(s->reg);
}

/* ---- life ---- */

hk_sender_t *hk_sender_new(uv_loop_t *loop, hd_conf_t *conf, SSL_CTX *tls, hd_hooks_stats_t *st,
                           hk_filter_t *filter)
{
    hk_sender_t *s = hd_calloc(1, sizeof(*s));
    s->loop = loop;
    s->conf = conf;
    s->st = st;
    s->filter = filter;
    s->cc.loop = loop;
    s->cc.tls = tls;
    s->cc.connect_timeout_ms = conf->webhook_connect_timeout_ms;
    s->cc.timeout_ms = conf->webhook_timeout_ms;
    s->cc.allow_private = conf->webhook_allow_private;
    if (RAND_bytes((unsigned char *)&s->rng, sizeof(s->rng)) != 1)
        s->rng = uv_hrtime();
    s->rng |= 1;
    hd_heap_init(&s->retry, 0);
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    hd_list_init(&s->dlq);
    hd_list_init(&s->resolving);
    uv_timer_init(loop, &s->poll);
    s->poll.data = s;
    if (conf->redis && (conf->n_webhooks || conf->webhook_max_endpoints)) {
        s->dur = hk_durable_new(loop, conf, st, &durable_ops, s);
        if (s->dur)
            uv_timer_start(&s->poll, on_poll, POLL_MS, POLL_MS);
        if (s->dur)
            s->reg = hk_registry_new(loop, conf, hk_durable_conn(s->dur), &registry_ops, s);
    }
    s->cap_eps = conf->n_webhooks + conf->webhook_max_endpoints;
    s->eps = hd_calloc(s->cap_eps ? s->cap_eps : 1, sizeof(*s->eps));
    for (size_t i = 0; i < conf->n_webhooks; i++)
        endpoint_add(s, &conf->webhooks[i], NULL, NULL);
    return s;
}

static void on_timer_closed(uv_handle_t *h)
{
    hk_sender_t *s = h->data;
    if (--s->n_closing == 0) /* the last of its two timers */
        free(s);
}

size_t hk_sender_close(hk_sender_t *s)
{
    size_t lost = 0;
    int is_durable = s->dur != NULL;
    if (s->dur) {
        /* what this node took and did not finish stays pending in Redis: another node (or
         * this one restarted) claims it after webhook_claim_after; only what never reached
         * Redis is lost */
        lost = hk_durable_close(s->dur); /* frees the endpoints' slots */
        s->dur = NULL;
        hk_registry_close(s->reg); /* after: its answers owed came back (NULL) meanwhile */
        s->reg = NULL;
    }
    for (size_t i = 0; i < s->n_eps; i++) {
        s->eps[i]->slot = NULL;
        size_t n = endpoint_free(s, s->eps[i]);
        lost += is_durable ? 0 : n;
    }
    while (!hd_list_empty(&s->dlq))
        letter_free(s, hd_container_of(s->dlq.next, letter_t, link));
    while (!hd_list_empty(&s->resolving)) { /* answered 503 when the resolver is done */
        resolve_t *rs = hd_container_of(s->resolving.next, resolve_t, link);
        hd_list_remove(&rs->link);
        rs->s = NULL;
        uv_cancel((uv_req_t *)&rs->gai);
    }
    hd_heap_dispose(&s->retry);
    free(s->eps);
    s->n_closing = 2;
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    uv_close((uv_handle_t *)&s->poll, on_timer_closed);
    return lost;
}
