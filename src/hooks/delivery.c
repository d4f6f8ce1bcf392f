/* SPDX-License-Identifier: MIT */
/*
 * delivery.c: what becomes of a webhook event, on the hooks thread (hooks.h draws the whole;
 * sender.h, the sender's files).
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
 * A receiver's Retry-After (seconds or a date) lengthens the retry's wait to it, at most
 * webhook_backoff_max; it never shortens the backoff.
 *
 * An event keeps its id (webhook-id) on every attempt and replay; webhook-timestamp is the
 * attempt's time and the signature covers both. Memory: each queued event and dead letter is
 * charged its body and its struct against webhook_max_memory. Nothing here blocks and nothing
 * is shared with another thread but the counters (relaxed atomics).
 */
#include "herald/log.h"
#include "sender.h"

#include <stdio.h>
#include <string.h>

const char *const hd_hooks_fail_names[HD_HOOKS_FAIL_COUNT] = {"status", "timeout", "connect",
                                                              "tls",    "refused", "protocol"};
const char *const hd_hooks_drop_names[HD_HOOKS_DROP_COUNT] = {"memory", "disabled", "dead_letters"};

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
    return body->len + sizeof(hk_job_t) + sizeof(hd_buf_t);
}

void hk_sender_gauges(hk_sender_t *s)
{
    uint64_t pending = 0, oldest = 0;
    for (size_t i = 0; i < s->n_eps; i++) {
        hk_endpoint_t *ep = s->eps[i];
        pending += s->dur ? ep->redis_pending : ep->n_pending;
        if (!hd_list_empty(&ep->all)) {
            hk_job_t *j = hd_container_of(ep->all.next, hk_job_t, all);
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
int hk_sender_may_warn(hk_sender_t *s)
{
    uint64_t now = uv_now(s->loop);
    if (s->warned_ms && now - s->warned_ms < 1000)
        return 0;
    s->warned_ms = now;
    return 1;
}

/* ---- dead letters ---- */

void hk_letter_free(hk_sender_t *s, hk_letter_t *l)
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
    hk_letter_t *l = hd_container_of(s->dlq.next, hk_letter_t, link);
    hk_letter_free(s, l);
    HK_ADD(s->st->dropped[HD_HOOKS_DROP_DEAD_LETTERS], 1);
}

/* Makes a dead letter of an event (the body reference and its charge pass to it). */
static void bury(hk_sender_t *s, hk_endpoint_t *ep, hd_buf_t *body, const char *id,
                 const char *type, uint64_t created_ms, uint32_t attempts, const char *reason)
{
    HK_ADD(s->st->dead_lettered, 1);
    if (hk_sender_may_warn(s))
        hd_log_warn("webhook %s: event %s is a dead letter after %u attempts: %s", ep->def->name,
                    id, attempts, reason);
    if (s->conf->webhook_dead_letters == 0) {
        s->mem -= charge_of(body);
        hd_buf_unref(body);
        HK_ADD(s->st->dropped[HD_HOOKS_DROP_DEAD_LETTERS], 1);
        return;
    }
    hk_letter_t *l = hd_calloc(1, sizeof(*l));
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

static void job_forget(hk_sender_t *s, hk_job_t *j)
{
    hk_endpoint_t *ep = j->ep;
    if (hd_list_linked(&j->link))
        hd_list_remove(&j->link);
    if (hd_heap_contains(&j->due))
        hd_heap_remove(&s->retry, &j->due);
    hd_list_remove(&j->all);
    ep->n_pending--;
}

void hk_job_free(hk_sender_t *s, hk_job_t *j)
{
    job_forget(s, j);
    s->mem -= charge_of(j->body);
    hd_buf_unref(j->body);
    free(j);
}

static void job_bury(hk_sender_t *s, hk_job_t *j, const char *reason)
{
    if (s->dur) {
        HK_ADD(s->st->dead_lettered, 1);
        if (hk_sender_may_warn(s))
            hd_log_warn("webhook %s: event %s is a dead letter after %u attempts: %s",
                        j->ep->def->name, j->id, j->attempts, reason);
        hk_durable_bury(s->dur, j->ep->slot, j->sid, reason, j->attempts);
        hk_job_free(s, j);
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
static void enqueue(hk_sender_t *s, hk_endpoint_t *ep, hd_buf_t *body, const char *id,
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
            if (hk_sender_may_warn(s))
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
        if (hk_sender_may_warn(s))
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
    hk_job_t *j = hd_calloc(1, sizeof(*j));
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
        hk_job_t *j = hd_container_of(n, hk_job_t, due);
        hd_heap_remove(&s->retry, n);
        hd_list_insert_tail(&j->ep->ready, &j->link);
    }
    for (size_t i = 0; i < s->n_eps; i++)
        hk_sender_pump(s, s->eps[i]);
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
void hk_sender_store_state(hk_sender_t *s, hk_endpoint_t *ep)
{
    if (s->reg) {
        ep->state_seq =
            hk_registry_state(s->reg, ep->def->name, ep->is_disabled ? ep->disabled_reason : NULL);
        ep->is_state_unstored = ep->state_seq == 0;
    }
}

void hk_sender_enable(hk_sender_t *s, hk_endpoint_t *ep)
{
    if (!ep->is_disabled)
        return;
    ep->is_disabled = 0;
    ep->failing_since_ms = 0;
    HK_ADD(s->st->endpoints_disabled, (uint64_t)-1);
    hk_sender_pump(s, ep);
}

/* Disables ep (store: and tells Redis, when the decision is this node's). */
void hk_sender_disable(hk_sender_t *s, hk_endpoint_t *ep, const char *reason, int store)
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
        hk_job_t *j = hd_container_of(pos, hk_job_t, all);
        if (j->req.cb == NULL)
            job_bury(s, j, reason);
    }
    if (store)
        hk_sender_store_state(s, ep);
}

static void on_answer(hk_request_t *req, int status, int fail, const char *why)
{
    hk_job_t *j = req->data;
    hk_endpoint_t *ep = j->ep;
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
        hk_job_free(s, j);
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
            hk_sender_disable(s, ep, "410 Gone: the receiver asked to stop", 1);
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
        hk_sender_disable(s, ep, reason, 1);
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
    /* the wait drawn, as scheduled: tests check the schedule by it, not by arrival times a
     * thread starved of CPU stretches (it-test_webhooks test_backoff_schedule_full_jitter) */
    hd_log_debug("webhook %s: event %s retry %u in %llu ms", ep->def->name, j->id, j->attempts,
                 (unsigned long long)wait);
    if (s->dur) {
        /* the wait and the schedule go to Redis with the entry; any node attempts it next */
        hk_durable_retry(s->dur, ep->slot, j->sid, wall + wait, j->attempts, j->first_wall_ms);
        hk_job_free(s, j);
        goto out;
    }
    j->due.key = now + wait;
    hd_heap_push(&s->retry, &j->due);
    arm_timer(s);
out:
    hk_sender_pump(s, ep);
    hk_sender_gauges(s);
}

static void attempt(hk_sender_t *s, hk_job_t *j)
{
    hk_endpoint_t *ep = j->ep;
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

void hk_sender_pump(hk_sender_t *s, hk_endpoint_t *ep)
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
        hk_job_t *j = hd_container_of(ep->ready.next, hk_job_t, link);
        hd_list_remove(&j->link);
        attempt(s, j);
    }
}

int hk_sender_is_behind(const hk_sender_t *s)
{
    for (size_t i = 0; i < s->n_eps; i++) {
        const hk_endpoint_t *ep = s->eps[i];
        if (ep->is_disabled || ep->in_flight < s->conf->webhook_concurrency)
            continue;
        if (s->dur ? ep->redis_pending > ep->in_flight : !hd_list_empty(&ep->ready))
            return 1;
    }
    return 0;
}

/* ---- events ---- */

void hk_sender_message(hk_sender_t *s, hd_message_t *m)
{
    hd_buf_t *body = NULL;
    char id[40];
    uint64_t now = hk_wall_ms();
    for (size_t i = 0; i < s->n_eps; i++) {
        hk_endpoint_t *ep = s->eps[i];
        if (!(ep->def->events & HD_WEBHOOK_EV_MESSAGE) ||
            !hd_webhook_def_matches(ep->def, m->channel, m->channel_len))
            continue;
        if (!body) {
            body = hk_event_message(m, now);
            hk_event_id(id);
        }
        enqueue(s, ep, body, id, "message.published", now);
        hk_sender_pump(s, ep);
    }
    if (body)
        hd_buf_unref(body);
    hk_sender_gauges(s);
}

void hk_sender_channel(hk_sender_t *s, const char *channel, size_t len, int occupied,
                       const char *given_id)
{
    hd_buf_t *body = NULL;
    char id[40];
    uint64_t now = hk_wall_ms();
    unsigned want = occupied ? HD_WEBHOOK_EV_OCCUPIED : HD_WEBHOOK_EV_VACATED;
    for (size_t i = 0; i < s->n_eps; i++) {
        hk_endpoint_t *ep = s->eps[i];
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
        hk_sender_pump(s, ep);
    }
    if (body)
        hd_buf_unref(body);
    hk_sender_gauges(s);
}

void hk_sender_member(hk_sender_t *s, const char *channel, size_t len, int added, const char *data,
                      size_t data_len, const char *given_id)
{
    hd_buf_t *body = NULL;
    char id[40];
    uint64_t now = hk_wall_ms();
    unsigned want = added ? HD_WEBHOOK_EV_MEMBER_ADDED : HD_WEBHOOK_EV_MEMBER_REMOVED;
    for (size_t i = 0; i < s->n_eps; i++) {
        hk_endpoint_t *ep = s->eps[i];
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
        hk_sender_pump(s, ep);
    }
    if (body)
        hd_buf_unref(body);
    hk_sender_gauges(s);
}

/* ---- dead letters replayed (admin.c) ---- */
/* Queues a dead letter again as a new event with the same id; 0, or -1 when its endpoint is
 * disabled or its queue is full (the letter stays). */
int hk_letter_replay(hk_sender_t *s, hk_letter_t *l)
{
    hk_endpoint_t *ep = l->ep;
    if (ep->is_disabled || ep->n_pending >= s->conf->webhook_queue_size)
        return -1;
    hk_job_t *j = hd_calloc(1, sizeof(*j));
    j->ep = ep;
    j->body = hd_buf_ref(l->body);
    memcpy(j->id, l->id, sizeof(j->id));
    memcpy(j->type, l->type, sizeof(j->type));
    j->created_ms = l->created_ms;
    s->mem += charge_of(j->body);
    hk_letter_free(s, l);
    hd_list_insert_tail(&ep->all, &j->all);
    hd_list_insert_tail(&ep->ready, &j->link);
    ep->n_pending++;
    HK_ADD(s->st->replayed, 1);
    return 0;
}

/* ---- with Redis: what durable.c tells ---- */

static void on_entry(void *owner, const hk_entry_t *e)
{
    hk_endpoint_t *ep = owner;
    hk_sender_t *s = ep->s;
    hk_job_t *j = hd_calloc(1, sizeof(*j));
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
    hk_endpoint_t *ep = owner;
    hk_sender_t *s = ep->s;
    ep->redis_pending = pending;
    s->redis_dlq = dead_letters;
    hk_sender_gauges(s);
}

static void on_redis_up(void *data)
{
    hk_sender_t *s = data;
    for (size_t i = 0; i < s->n_eps; i++)
        hk_sender_pump(s, s->eps[i]);
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

const hk_durable_ops_t hk_sender_durable_ops = {on_entry, on_taken, on_redis_up, replayable,
                                                on_pev};
