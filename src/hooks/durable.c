/* SPDX-License-Identifier: MIT */
/*
 * durable.c: pending deliveries and dead letters in Redis, when the redis directive is set
 * (src/hooks/hooks.lua has the keys and functions). delivery.c decides what becomes of an
 * event; this file keeps it where every node sees it:
 *
 *   event for an endpoint --herald_hk_add--> P hk:q:NAME (stream, group "herald")
 *                                            (past webhook_queue_size: a dead letter at once)
 *   endpoint with room --herald_hk_take--> due retries back into the stream; entries another
 *        node left pending past webhook_claim_after claimed (XAUTOCLAIM); new ones read
 *        (XREADGROUP): at most webhook_concurrency minus the requests in flight
 *   attempt answered 2xx        --herald_hk_done-->  XACK + XDEL
 *   attempt failed, retry later --herald_hk_retry--> out of the stream into P hk:w:NAME (zset
 *        by due time) with its attempts and first attempt: the schedule lives with the entry
 *   dead letter                 --herald_hk_bury-->  into P hk:dl (every node's admin sees it)
 *
 * Nothing is lost when a node dies: what it read and did not finish stays pending in the group
 * and another node's take claims it once idle for webhook_claim_after (its attempt is then made
 * again: at least once). Nothing is delivered forever: finishing removes the entry, and an entry
 * another node finished is "not pending" for the late one, which then does nothing.
 *
 * Adds, dones, retries and burials are kept in an outbox while Redis is away (or when the
 * connection drops before their answer) and sent again when it is back; the outbox counts
 * against webhook_max_memory. Takes are not kept: what a lost take read is claimed later.
 */
#include "herald/log.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX  (72 + 8 + HD_WEBHOOK_NAME_MAX + 1)
#define ARGS_MAX 14

enum { OB_ADD = 1, OB_DONE, OB_RETRY, OB_BURY };
#define PEV_TAKE 64 /* presence events read at once */

/* A command that must reach Redis: in the outbox, or sent and not answered yet. */
typedef struct ob_s {
    hd_list_t link; /* in d->outbox while waiting */
    hk_durable_t *d;
    int kind;
    int argc;
    const char *argv[ARGS_MAX];
    size_t lens[ARGS_MAX];
    size_t bytes;
    char buf[];
} ob_t;

/* An endpoint's keys (hk_dslot_t): freed with its endpoint, or, when a take is under way then,
 * once its answer came (what it read is left pending: the endpoint is gone). */
typedef struct hk_dslot_s {
    hd_list_t link; /* in d->slots */
    hk_durable_t *d;
    void *owner; /* the endpoint, for the ops */
    char name[HD_WEBHOOK_NAME_MAX + 1];
    char q[KEY_MAX], w[KEY_MAX];
    unsigned events; /* the endpoint's events= */
    unsigned is_taking : 1;
    unsigned is_gone : 1;
    uint64_t claim_ms; /* loop time of the last claim */
    uint64_t dead;     /* its dead letters in P hk:dl, at the last count (count_dead) */
} slot_t;

/* An admin request answered from Redis. */
typedef struct adm_s {
    hk_durable_t *d;
    hd_hooks_admin_t *a;
    size_t outstanding, replayed, skipped, found;
} adm_t;

struct hk_durable_s {
    uv_loop_t *loop;
    const hd_conf_t *conf;
    hd_hooks_stats_t *st;
    const hk_durable_ops_t *ops;
    void *data;
    hk_redis_t *rc;
    hd_list_t slots;
    size_t n_members, n_channels; /* slots wanting member.* / channel.* events */
    char dl[KEY_MAX];
    char pev[KEY_MAX], members[KEY_MAX];
    unsigned is_taking_members : 1;
    unsigned is_counting : 1; /* a herald_hk_dcount is under way */
    uint64_t slots_gen;       /* changes with d->slots (a count answers for the slots it asked) */
    uint64_t count_gen;       /* slots_gen when the count under way was sent */
    uint64_t members_claim_ms;
    char consumer[64];
    hd_list_t outbox;
    size_t bytes; /* of every ob_t alive */
    uint64_t error_ms;
    unsigned is_closing : 1;
};

static void key(char *out, const char *prefix, const char *kind, const char *name)
{
    snprintf(out, KEY_MAX, "%s%s%s", prefix, kind, name);
}

static void log_error(hk_durable_t *d, const char *what, const redisReply *rep)
{
    uint64_t now = uv_now(d->loop);
    if (d->error_ms && now - d->error_ms < 1000)
        return;
    d->error_ms = now;
    hd_log_warn("webhooks: redis %s: %s: %.200s", hk_redis_where(d->rc), what,
                rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected answer");
}

static void want_members(hk_durable_t *d);

/* ---- the outbox ---- */

/* A command of argc strings (copied). */
static ob_t *ob_new(hk_durable_t *d, int kind, int argc, const char *const *argv,
                    const size_t *lens)
{
    size_t total = 0;
    HD_ASSERT(argc <= ARGS_MAX);
    for (int i = 0; i < argc; i++)
        total += lens[i];
    ob_t *ob = hd_malloc(sizeof(*ob) + total);
    ob->d = d;
    ob->kind = kind;
    ob->argc = argc;
    ob->bytes = sizeof(*ob) + total;
    char *p = ob->buf;
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], lens[i]);
        ob->argv[i] = p;
        ob->lens[i] = lens[i];
        p += lens[i];
    }
    hd_list_init(&ob->link);
    d->bytes += ob->bytes;
    return ob;
}

static void ob_free(ob_t *ob)
{
    ob->d->bytes -= ob->bytes;
    free(ob);
}

static void on_ob_reply(void *data, const redisReply *rep);

static void submit(hk_durable_t *d, ob_t *ob)
{
    if (hk_redis_send(d->rc, ob->argc, ob->argv, ob->lens, on_ob_reply, ob) < 0)
        hd_list_insert_tail(&d->outbox, &ob->link);
}

static void on_ob_reply(void *data, const redisReply *rep)
{
    ob_t *ob = data;
    hk_durable_t *d = ob->d;
    if (!rep) {
        if (d->is_closing) {
            ob_free(ob);
            return;
        }
        hd_list_insert_tail(&d->outbox, &ob->link); /* sent again when Redis is back */
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        log_error(d, ob->kind == OB_ADD ? "an event could not be queued" : "herald_hk_*", rep);
        if (ob->kind == OB_ADD)
            HK_ADD(d->st->dropped[HD_HOOKS_DROP_MEMORY], 1);
    } else if (ob->kind == OB_ADD && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0) {
        HK_ADD(d->st->dead_lettered, 1); /* queue full: a dead letter at once */
    }
    ob_free(ob);
}

static void on_up(void *data)
{
    hk_durable_t *d = data;
    hd_list_t pending = d->outbox;
    if (hd_list_empty(&d->outbox))
        goto out;
    /* take the whole list: what fails to send goes back on d->outbox */
    pending.next->prev = &pending;
    pending.prev->next = &pending;
    hd_list_init(&d->outbox);
    while (!hd_list_empty(&pending)) {
        ob_t *ob = hd_container_of(pending.next, ob_t, link);
        hd_list_remove(&ob->link);
        submit(d, ob);
    }
out:;
    /* the lost connection's takes were answered NULL (on_take) before this: none is under way,
     * and a slot whose endpoint went meanwhile was freed there */
    hd_list_t *pos;
    for (pos = d->slots.next; pos != &d->slots; pos = pos->next)
        hd_container_of(pos, slot_t, link)->is_taking = 0;
    d->is_taking_members = 0;
    if (d->n_members)
        want_members(d);
    d->ops->on_up(d->data);
}

/* herald.lua's presence functions write P hk:pev while P hk:members exists. */
static void want_members(hk_durable_t *d)
{
    const char *argv[] = {"SET", d->members, "1"};
    size_t lens[] = {3, strlen(d->members), 1};
    hk_redis_send(d->rc, 3, argv, lens, NULL, NULL);
}

static const unsigned EV_MEMBERS = HD_WEBHOOK_EV_MEMBER_ADDED | HD_WEBHOOK_EV_MEMBER_REMOVED;
static const unsigned EV_CHANNELS = HD_WEBHOOK_EV_OCCUPIED | HD_WEBHOOK_EV_VACATED;

hk_dslot_t *hk_durable_slot_new(hk_durable_t *d, const hd_webhook_def_t *def, void *owner)
{
    slot_t *sl = hd_calloc(1, sizeof(*sl));
    sl->d = d;
    sl->owner = owner;
    snprintf(sl->name, sizeof(sl->name), "%s", def->name);
    key(sl->q, d->conf->redis_prefix, "hk:q:", sl->name);
    key(sl->w, d->conf->redis_prefix, "hk:w:", sl->name);
    sl->events = def->events;
    hd_list_insert_tail(&d->slots, &sl->link);
    d->slots_gen++;
    if ((sl->events & EV_MEMBERS) && d->n_members++ == 0 && hk_redis_is_up(d->rc))
        want_members(d);
    if (sl->events & EV_CHANNELS)
        d->n_channels++;
    return sl;
}

void hk_durable_slot_free(hk_dslot_t *sl)
{
    hk_durable_t *d = sl->d;
    if (sl->events & EV_MEMBERS)
        d->n_members--;
    if (sl->events & EV_CHANNELS)
        d->n_channels--;
    sl->events = 0;
    sl->owner = NULL;
    d->slots_gen++;
    if (sl->is_taking) {
        sl->is_gone = 1; /* freed when the take's answer comes */
        return;
    }
    hd_list_remove(&sl->link);
    free(sl);
}

/* ---- what the sender asks (delivery.c, admin.c) ---- */

int hk_durable_add(hk_durable_t *d, hk_dslot_t *sl, const hd_buf_t *body, const char *id,
                   const char *type, uint64_t created_ms)
{
    if (d->bytes + body->len + 1024 > d->conf->webhook_max_memory_bytes)
        return -1;
    char maxq[24], maxd[24], created[24];
    snprintf(maxq, sizeof(maxq), "%u", d->conf->webhook_queue_size);
    snprintf(maxd, sizeof(maxd), "%u", d->conf->webhook_dead_letters);
    snprintf(created, sizeof(created), "%llu", (unsigned long long)created_ms);
    const char *argv[] = {"FCALL", "herald_hk_add", "3", sl->q, sl->w,   d->dl,     maxq,
                          maxd,    sl->name,        id,  type,  created, body->data};
    size_t lens[ARGS_MAX];
    for (int i = 0; i < 12; i++)
        lens[i] = strlen(argv[i]);
    lens[12] = body->len;
    submit(d, ob_new(d, OB_ADD, 13, argv, lens));
    return 0;
}

void hk_durable_done(hk_durable_t *d, hk_dslot_t *sl, const char *sid)
{
    const char *argv[] = {"FCALL", "herald_hk_done", "1", sl->q, sid};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    submit(d, ob_new(d, OB_DONE, 5, argv, lens));
}

void hk_durable_retry(hk_durable_t *d, hk_dslot_t *sl, const char *sid, uint64_t due_ms,
                      uint32_t attempts, uint64_t first_ms)
{
    char due[24], att[16], first[24];
    snprintf(due, sizeof(due), "%llu", (unsigned long long)due_ms);
    snprintf(att, sizeof(att), "%u", attempts);
    snprintf(first, sizeof(first), "%llu", (unsigned long long)first_ms);
    const char *argv[] = {"FCALL", "herald_hk_retry", "2", sl->q, sl->w, sid, due, att, first};
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = strlen(argv[i]);
    submit(d, ob_new(d, OB_RETRY, 9, argv, lens));
}

void hk_durable_bury(hk_durable_t *d, hk_dslot_t *sl, const char *sid, const char *reason,
                     uint32_t attempts)
{
    char att[16], now[24], maxd[24];
    snprintf(att, sizeof(att), "%u", attempts);
    snprintf(now, sizeof(now), "%llu", (unsigned long long)hk_wall_ms());
    snprintf(maxd, sizeof(maxd), "%u", d->conf->webhook_dead_letters);
    const char *argv[] = {"FCALL",  "herald_hk_bury", "2", sl->q, d->dl, sid,
                          sl->name, reason,           att, now,   maxd};
    size_t lens[11];
    for (int i = 0; i < 11; i++)
        lens[i] = strlen(argv[i]);
    submit(d, ob_new(d, OB_BURY, 11, argv, lens));
}

/* ---- taking entries ---- */

static int str_of(const redisReply *e, const char **s, size_t *len)
{
    if (!e || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS))
        return -1;
    *s = e->str;
    *len = e->len;
    return 0;
}

static int u64_of(const redisReply *e, uint64_t *v)
{
    const char *s;
    size_t len;
    if (e && e->type == REDIS_REPLY_INTEGER) {
        if (e->integer < 0)
            return -1;
        *v = (uint64_t)e->integer;
        return 0;
    }
    if (str_of(e, &s, &len) < 0 || len == 0 || len > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *v = x;
    return 0;
}

int hk_entry_parse(const redisReply *const *el, hk_entry_t *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t attempts;
    if (str_of(el[0], &out->sid, &out->sid_len) < 0 || out->sid_len == 0 ||
        out->sid_len >= HK_SID_MAX)
        return -1;
    for (size_t i = 0; i < out->sid_len; i++) {
        char c = out->sid[i];
        if (!((c >= '0' && c <= '9') || c == '-'))
            return -1;
    }
    if (str_of(el[1], &out->id, &out->id_len) < 0 || out->id_len == 0 || out->id_len >= 40 ||
        memchr(out->id, '\0', out->id_len) || memchr(out->id, '\r', out->id_len) ||
        memchr(out->id, '\n', out->id_len))
        return -1;
    if (str_of(el[2], &out->type, &out->type_len) < 0 || out->type_len == 0 || out->type_len >= 24)
        return -1;
    for (size_t i = 0; i < out->type_len; i++) {
        char c = out->type[i];
        if (!((c >= 'a' && c <= 'z') || c == '.' || c == '_'))
            return -1;
    }
    if (u64_of(el[3], &out->created_ms) < 0 || u64_of(el[4], &attempts) < 0 ||
        attempts > UINT32_MAX || u64_of(el[5], &out->first_ms) < 0 ||
        str_of(el[6], &out->body, &out->body_len) < 0)
        return -1;
    out->attempts = (uint32_t)attempts;
    return 0;
}

int hk_take_parse(const redisReply *rep, uint64_t *pending, uint64_t *dead, size_t *n)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
        u64_of(rep->element[0], pending) < 0 || u64_of(rep->element[1], dead) < 0 ||
        (rep->elements - 2) % HK_ENTRY_FIELDS != 0)
        return -1;
    *n = (rep->elements - 2) / HK_ENTRY_FIELDS;
    return 0;
}

static void on_take(void *data, const redisReply *rep)
{
    slot_t *sl = data;
    hk_durable_t *d = sl->d;
    uint64_t pending, dead;
    size_t n;
    sl->is_taking = 0;
    if (sl->is_gone && !d->is_closing) { /* its endpoint was deleted meanwhile */
        hd_list_remove(&sl->link);
        free(sl);
        return;
    }
    if (!rep || d->is_closing)
        return; /* what it read is claimed after webhook_claim_after */
    if (hk_take_parse(rep, &pending, &dead, &n) < 0) {
        log_error(d, "herald_hk_take", rep);
        return;
    }
    for (size_t i = 2; i < rep->elements; i += HK_ENTRY_FIELDS) {
        hk_entry_t e;
        if (hk_entry_parse((const redisReply *const *)&rep->element[i], &e) < 0) {
            const char *sid;
            size_t len;
            char id[HK_SID_MAX];
            if (str_of(rep->element[i], &sid, &len) == 0 && len < sizeof(id)) {
                memcpy(id, sid, len);
                id[len] = '\0';
                hk_durable_bury(d, sl, id, "malformed entry in Redis", 0);
            }
            continue;
        }
        d->ops->on_entry(sl->owner, &e);
    }
    d->ops->on_taken(sl->owner, pending, dead);
}

int hk_durable_take(hk_durable_t *d, hk_dslot_t *sl, unsigned count)
{
    if (sl->is_gone || sl->is_taking || !hk_redis_is_up(d->rc))
        return -1;
    char n[16], idle[24], now[24];
    uint64_t t = uv_now(d->loop), claim = d->conf->webhook_claim_after_ms;
    const char *claim_arg = "0";
    if (count > 0 && (sl->claim_ms == 0 || t - sl->claim_ms >= claim / 4)) {
        sl->claim_ms = t;
        snprintf(idle, sizeof(idle), "%llu", (unsigned long long)claim);
        claim_arg = idle;
    }
    snprintf(n, sizeof(n), "%u", count);
    snprintf(now, sizeof(now), "%llu", (unsigned long long)hk_wall_ms());
    const char *argv[] = {"FCALL", "herald_hk_take", "3", sl->q,     sl->w,
                          d->dl,   d->consumer,      n,   claim_arg, now};
    size_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    if (hk_redis_send(d->rc, 10, argv, lens, on_take, sl) < 0)
        return -1;
    sl->is_taking = 1;
    return 0;
}

/* ---- presence events ---- */

int hk_pev_parse(const redisReply *const *el, hk_pev_t *out)
{
    const char *k;
    size_t klen;
    memset(out, 0, sizeof(*out));
    if (str_of(el[0], &out->sid, &out->sid_len) < 0 || out->sid_len == 0 || out->sid_len > 35)
        return -1;
    for (size_t i = 0; i < out->sid_len; i++) {
        char c = out->sid[i];
        if (!((c >= '0' && c <= '9') || c == '-'))
            return -1;
    }
    if (str_of(el[1], &k, &klen) < 0 || klen != 2 || k[0] != '~' || !strchr("jlov", k[1]) ||
        k[1] == '\0')
        return -1;
    out->is_channel = k[1] == 'o' || k[1] == 'v';
    out->added = k[1] == 'j' || k[1] == 'o';
    if (str_of(el[2], &out->channel, &out->channel_len) < 0 ||
        !hd_channel_name_valid(out->channel, out->channel_len))
        return -1;
    if (str_of(el[3], &out->data, &out->data_len) < 0 || out->data_len < 2 ||
        out->data_len > HK_PEV_DATA_MAX || out->data[0] != '{' ||
        out->data[out->data_len - 1] != '}')
        return -1;
    return 0;
}

static void pev_done(hk_durable_t *d, const char *sid, size_t len)
{
    const char *argv[] = {"FCALL", "herald_hk_pdone", "1", d->pev, sid};
    size_t lens[] = {5, 15, 1, strlen(d->pev), len};
    submit(d, ob_new(d, OB_DONE, 5, argv, lens));
}

static void on_ptake(void *data, const redisReply *rep)
{
    hk_durable_t *d = data;
    d->is_taking_members = 0;
    if (!rep || d->is_closing)
        return; /* what it read is claimed after webhook_claim_after */
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % HK_PEV_FIELDS != 0) {
        log_error(d, "herald_hk_ptake", rep);
        return;
    }
    for (size_t i = 0; i < rep->elements; i += HK_PEV_FIELDS) {
        hk_pev_t ev;
        const char *sid;
        size_t len;
        if (hk_pev_parse((const redisReply *const *)&rep->element[i], &ev) == 0) {
            char id[40];
            snprintf(id, sizeof(id), "evt_%.*s", (int)ev.sid_len, ev.sid);
            d->ops->on_pev(d->data, &ev, id); /* its events queued before it is done */
            pev_done(d, ev.sid, ev.sid_len);
        } else if (str_of(rep->element[i], &sid, &len) == 0 && len < HK_SID_MAX) {
            pev_done(d, sid, len); /* not one of ours: dropped */
        }
    }
}

void hk_durable_take_members(hk_durable_t *d)
{
    if (!(d->n_members || d->n_channels) || d->is_taking_members || !hk_redis_is_up(d->rc))
        return;
    char n[16], idle[24];
    uint64_t t = uv_now(d->loop), claim = d->conf->webhook_claim_after_ms;
    const char *claim_arg = "0";
    if (d->members_claim_ms == 0 || t - d->members_claim_ms >= claim / 4) {
        d->members_claim_ms = t;
        snprintf(idle, sizeof(idle), "%llu", (unsigned long long)claim);
        claim_arg = idle;
    }
    snprintf(n, sizeof(n), "%d", PEV_TAKE);
    const char *argv[] = {"FCALL", "herald_hk_ptake", "1", d->pev, d->consumer, n, claim_arg};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (hk_redis_send(d->rc, 7, argv, lens, on_ptake, d) == 0)
        d->is_taking_members = 1;
}

/* ---- the admin's dead letters ---- */

static void adm_answer(adm_t *m, int status, hd_sbuf_t *sb)
{
    hd_hooks_admin_t *a = m->a;
    hd_buf_t *b = hd_sbuf_finish(sb);
    a->status = status;
    a->body = hd_strndup(b->data, b->len);
    a->body_len = b->len;
    hd_buf_unref(b);
    free(m);
    hk_admin_answered(a);
}

static void adm_error(adm_t *m, int status, const char *what, const char *name)
{
    hd_sbuf_t sb;
    char msg[200];
    hd_sbuf_init(&sb, 128);
    snprintf(msg, sizeof(msg), "%s%s", what, name);
    hd_sbuf_appends(&sb, "{\"error\":");
    hk_json_str(&sb, msg, strlen(msg));
    hd_sbuf_appendf(&sb, ",\"status\":%d}", status);
    adm_answer(m, status, &sb);
}

/* The fields of one dead letter in herald_hk_dlist's answer. */
enum {
    DL_ID,
    DL_NAME,
    DL_EID,
    DL_TYPE,
    DL_CREATED,
    DL_ATTEMPTS,
    DL_DEAD,
    DL_REASON,
    DL_BODY,
    DL_N
};

static int dl_field(const redisReply *rep, size_t i, int f, const char **s, size_t *len)
{
    return str_of(rep->element[1 + i * DL_N + f], s, len);
}

/* A number field of one dead letter (0 when it is not one). */
static uint64_t dl_u64(const redisReply *rep, size_t i, int f)
{
    uint64_t v;
    return u64_of(rep->element[1 + i * DL_N + f], &v) == 0 ? v : 0;
}

static void on_dlist(void *data, const redisReply *rep)
{
    adm_t *m = data;
    hd_hooks_admin_t *a = m->a;
    uint64_t total;
    if (!rep) {
        adm_error(m, 503, "redis is unavailable: ", "dead letters cannot be read now");
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        u64_of(rep->element[0], &total) < 0 || (rep->elements - 1) % DL_N != 0) {
        log_error(m->d, "herald_hk_dlist", rep);
        adm_error(m, 502, "unexpected answer from redis", "");
        return;
    }
    size_t n = (rep->elements - 1) / DL_N;
    int get = a->op == HD_HOOKS_DEAD_GET;
    if (get && n == 0) {
        adm_error(m, 404, "no dead letter with event id ", a->event_id);
        return;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256 + n * 256);
    hd_sbuf_appends(&sb, "{\"dead_letters\":[");
    for (size_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (i)
            hd_sbuf_appends(&sb, ",");
        static const char *const names[] = {"dead_letter_id", "endpoint", "event_id", "type"};
        hd_sbuf_appends(&sb, "{");
        for (int f = 0; f < 4; f++) {
            if (dl_field(rep, i, f, &s, &len) < 0) {
                s = "";
                len = 0;
            }
            hd_sbuf_appendf(&sb, "%s\"%s\":", f ? "," : "", names[f]);
            hk_json_str(&sb, s, len);
        }
        hd_sbuf_appendf(&sb, ",\"attempts\":%llu,\"created_ms\":%llu,\"dead_ms\":%llu",
                        (unsigned long long)dl_u64(rep, i, DL_ATTEMPTS),
                        (unsigned long long)dl_u64(rep, i, DL_CREATED),
                        (unsigned long long)dl_u64(rep, i, DL_DEAD));
        if (get) {
            if (dl_field(rep, i, DL_BODY, &s, &len) < 0)
                len = 0;
            hd_sbuf_appendf(&sb, ",\"bytes\":%zu", len);
        } else {
            hd_sbuf_appendf(&sb, ",\"bytes\":%llu", (unsigned long long)dl_u64(rep, i, DL_BODY));
        }
        if (dl_field(rep, i, DL_REASON, &s, &len) < 0) {
            s = "";
            len = 0;
        }
        hd_sbuf_appends(&sb, ",\"reason\":");
        hk_json_str(&sb, s, len);
        if (get && dl_field(rep, i, DL_BODY, &s, &len) == 0) {
            /* the event body: JSON made by event.c, stored as is; anything else is quoted */
            hd_sbuf_appends(&sb, ",\"payload\":");
            if (len > 0 && s[0] == '{' && s[len - 1] == '}')
                hd_sbuf_append(&sb, s, len);
            else
                hk_json_str(&sb, s, len);
        }
        hd_sbuf_appends(&sb, "}");
    }
    hd_sbuf_appendf(&sb, "],\"total\":%llu}", (unsigned long long)total);
    adm_answer(m, 200, &sb);
}

static void replay_done(adm_t *m)
{
    hd_hooks_admin_t *a = m->a;
    if (a->event_id[0] && m->found == 0) {
        adm_error(m, 404, "no dead letter with event id ", a->event_id);
        return;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 64);
    hd_sbuf_appendf(&sb, "{\"replayed\":%zu,\"skipped\":%zu}", m->replayed, m->skipped);
    HK_ADD(m->d->st->replayed, m->replayed);
    adm_answer(m, m->replayed == 0 && m->skipped > 0 ? 409 : 200, &sb);
}

static void on_requeue(void *data, const redisReply *rep)
{
    adm_t *m = data;
    if (rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1)
        m->replayed++;
    else if (!rep || rep->type != REDIS_REPLY_INTEGER || rep->integer == 0)
        m->skipped++;
    else
        m->found--; /* gone meanwhile (replayed or purged by another node) */
    if (--m->outstanding == 0)
        replay_done(m);
}

static void on_replay_list(void *data, const redisReply *rep)
{
    adm_t *m = data;
    hk_durable_t *d = m->d;
    uint64_t total;
    if (!rep) {
        adm_error(m, 503, "redis is unavailable: ", "dead letters cannot be replayed now");
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        u64_of(rep->element[0], &total) < 0 || (rep->elements - 1) % DL_N != 0) {
        log_error(d, "herald_hk_dlist", rep);
        adm_error(m, 502, "unexpected answer from redis", "");
        return;
    }
    size_t n = (rep->elements - 1) / DL_N;
    m->outstanding = 1; /* this pass's own: the answer waits for every requeue */
    for (size_t i = 0; i < n; i++) {
        const char *sid, *name;
        size_t sid_len, name_len;
        hk_dslot_t *sl;
        if (dl_field(rep, i, DL_ID, &sid, &sid_len) < 0 ||
            dl_field(rep, i, DL_NAME, &name, &name_len) < 0)
            continue;
        m->found++;
        if (d->ops->replayable(d->data, name, name_len, &sl) != 1) {
            m->skipped++; /* its endpoint is disabled, or unknown to this node */
            continue;
        }
        char maxq[24];
        snprintf(maxq, sizeof(maxq), "%u", d->conf->webhook_queue_size);
        const char *argv[] = {"FCALL", "herald_hk_requeue", "3", d->dl, sl->q, sl->w, sid, maxq};
        size_t lens[8];
        for (int k = 0; k < 8; k++)
            lens[k] = k == 6 ? sid_len : strlen(argv[k]);
        if (hk_redis_send(d->rc, 8, argv, lens, on_requeue, m) == 0)
            m->outstanding++;
        else
            m->skipped++;
    }
    if (--m->outstanding == 0)
        replay_done(m);
}

static void on_purge(void *data, const redisReply *rep)
{
    adm_t *m = data;
    uint64_t n;
    if (!rep) {
        adm_error(m, 503, "redis is unavailable: ", "dead letters cannot be purged now");
        return;
    }
    if (u64_of(rep, &n) < 0) {
        log_error(m->d, "herald_hk_purge", rep);
        adm_error(m, 502, "unexpected answer from redis", "");
        return;
    }
    if (m->a->event_id[0] && n == 0) {
        adm_error(m, 404, "no dead letter with event id ", m->a->event_id);
        return;
    }
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 32);
    hd_sbuf_appendf(&sb, "{\"purged\":%llu}", (unsigned long long)n);
    adm_answer(m, 200, &sb);
}

void hk_durable_admin(hk_durable_t *d, hd_hooks_admin_t *a)
{
    adm_t *m = hd_calloc(1, sizeof(*m));
    m->d = d;
    m->a = a;
    if (!hk_redis_is_up(d->rc)) {
        adm_error(m, 503, "redis is unavailable: ", "dead letters live in Redis");
        return;
    }
    char limit[24];
    int rc;
    if (a->op == HD_HOOKS_DEAD_PURGE) {
        const char *argv[] = {"FCALL", "herald_hk_purge", "1", d->dl, a->endpoint, a->event_id};
        size_t lens[6];
        for (int i = 0; i < 6; i++)
            lens[i] = strlen(argv[i]);
        rc = hk_redis_send(d->rc, 6, argv, lens, on_purge, m);
    } else {
        int replay = a->op == HD_HOOKS_DEAD_REPLAY;
        uint32_t n = replay ? d->conf->webhook_dead_letters : a->limit ? a->limit : 100;
        snprintf(limit, sizeof(limit), "%u", n);
        const char *argv[] = {
            "FCALL",     "herald_hk_dlist", "1",   d->dl,
            a->endpoint, a->event_id,       limit, a->op == HD_HOOKS_DEAD_GET ? "1" : "0"};
        size_t lens[8];
        for (int i = 0; i < 8; i++)
            lens[i] = strlen(argv[i]);
        rc = hk_redis_send(d->rc, 8, argv, lens, replay ? on_replay_list : on_dlist, m);
    }
    if (rc < 0)
        adm_error(m, 503, "redis is unavailable: ", "dead letters live in Redis");
}

/* ---- life ---- */

/* ---- dead letters per endpoint: herald_hk_dcount ---- */

/* The counts of the slots asked, in their order (the slots are the same: count_gen). */
static void on_dcount(void *data, const redisReply *rep)
{
    hk_durable_t *d = data;
    d->is_counting = 0;
    if (!rep || d->is_closing)
        return;
    if (rep->type != REDIS_REPLY_ARRAY) {
        log_error(d, "herald_hk_dcount", rep);
        return;
    }
    if (d->count_gen != d->slots_gen)
        return; /* an endpoint came or went meanwhile: the next count */
    size_t i = 0;
    hd_list_t *pos;
    for (pos = d->slots.next; pos != &d->slots && i < rep->elements; pos = pos->next, i++) {
        const redisReply *e = rep->element[i];
        if (e->type == REDIS_REPLY_INTEGER && e->integer >= 0)
            hd_container_of(pos, slot_t, link)->dead = (uint64_t)e->integer;
    }
}

void hk_durable_count_dead(hk_durable_t *d)
{
    size_t n = 0;
    hd_list_t *pos;
    if (d->is_counting || d->is_closing || !hk_redis_is_up(d->rc))
        return;
    for (pos = d->slots.next; pos != &d->slots; pos = pos->next)
        n++;
    if (n == 0)
        return;
    const char **argv = hd_malloc((n + 4) * sizeof(*argv));
    size_t *lens = hd_malloc((n + 4) * sizeof(*lens));
    argv[0] = "FCALL";
    argv[1] = "herald_hk_dcount";
    argv[2] = "1";
    argv[3] = d->dl;
    size_t i = 4;
    for (pos = d->slots.next; pos != &d->slots; pos = pos->next)
        argv[i++] = hd_container_of(pos, slot_t, link)->name;
    for (i = 0; i < n + 4; i++)
        lens[i] = strlen(argv[i]);
    /* the command is formatted here: argv may go */
    if (hk_redis_send(d->rc, (int)(n + 4), argv, lens, on_dcount, d) == 0) {
        d->is_counting = 1;
        d->count_gen = d->slots_gen;
    }
    free(argv);
    free(lens);
}

uint64_t hk_durable_slot_dead(const hk_dslot_t *sl)
{
    return sl->dead;
}

hk_durable_t *hk_durable_new(uv_loop_t *loop, const hd_conf_t *conf, hd_hooks_stats_t *st,
                             const hk_durable_ops_t *ops, void *data)
{
    hk_durable_t *d = hd_calloc(1, sizeof(*d));
    d->loop = loop;
    d->conf = conf;
    d->st = st;
    d->ops = ops;
    d->data = data;
    hd_list_init(&d->outbox);
    key(d->dl, conf->redis_prefix, "hk:dl", "");
    key(d->pev, conf->redis_prefix, "hk:pev", "");
    key(d->members, conf->redis_prefix, "hk:members", "");
    uint64_t id = uv_hrtime();
    uv_random(NULL, NULL, &id, sizeof(id), 0, NULL);
    snprintf(d->consumer, sizeof(d->consumer), "%ld-%016llx", (long)uv_os_getpid(),
             (unsigned long long)id);
    hd_list_init(&d->slots);
    d->rc = hk_redis_new(loop, conf, "hooks", on_up, d);
    if (!d->rc) {
        free(d);
        return NULL;
    }
    return d;
}

hk_redis_t *hk_durable_conn(hk_durable_t *d)
{
    return d->rc;
}

int hk_durable_is_up(const hk_durable_t *d)
{
    return hk_redis_is_up(d->rc);
}

size_t hk_durable_bytes(const hk_durable_t *d)
{
    return d->bytes;
}

size_t hk_durable_close(hk_durable_t *d)
{
    size_t unsent = 0;
    d->is_closing = 1;
    while (!hd_list_empty(&d->outbox)) {
        ob_t *ob = hd_container_of(d->outbox.next, ob_t, link);
        hd_list_remove(&ob->link);
        unsent += ob->kind == OB_ADD;
        ob_free(ob);
    }
    hk_redis_close(d->rc); /* the answers still owed come back NULL: freed there */
    while (!hd_list_empty(&d->slots)) {
        slot_t *sl = hd_container_of(d->slots.next, slot_t, link);
        hd_list_remove(&sl->link);
        free(sl);
    }
    free(d);
    return unsent;
}
