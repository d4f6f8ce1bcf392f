/* SPDX-License-Identifier: MIT */
/*
 * notify_rec.c: with Redis, what makes the notify hook's disconnects outlive a node's crash
 * (docs/webhooks.md, "Backend hooks"). The node keeps a record of every stream the backend was
 * told of (its connect) and not yet told the end of (a disconnect answered 2xx): its transport,
 * sub, client and channels, in a table here and mirrored into Redis under the node's presence
 * lease (herald.lua's P pnodes, renewed by the broker's bridge: one lease per node, for
 * presence, occupancy and this). A node that dies leaves its records behind; once its lease ran
 * out, a surviving node's herald_hk_ntake claims them in one atomic call (exactly one survivor
 * gets each) onto the stream P hk:nev, read through the group "herald" as the webhooks' queues
 * are, and each becomes a `disconnect` (reason "node_lost") on the claimer's notify queue. Its
 * entry is acknowledged (herald_hk_pdone) only once the backend answered 2xx to the batch that
 * held it, so a claimer that dies too leaves it pending for another (webhook_claim_after):
 *
 *   connect queued        -> record (table) -> herald_hk_nset P nc:<node> conn record
 *   subscribe/unsubscribe -> the record's channels -> herald_hk_nset
 *   disconnect queued     -> the record stays until its batch is answered 2xx (hk_nrec_closed)
 *                            -> herald_hk_ndel; a disconnect dropped (queue_size): at once
 *   every second          -> herald_hk_ntake: dead nodes' records claimed onto P hk:nev, then
 *                            up to the queue's room read, or claimed from a dead claimer
 *   Redis (back) up       -> herald_hk_nsync: Redis holds exactly the table; when the node's
 *                            records had been claimed meanwhile (it was taken for dead while
 *                            cut off), its live streams are reported connected again (a
 *                            connect, reason "node_back")
 *   every second, with records -> SISMEMBER P ncn <node>: still listed? A node frozen past its
 *                            lease with its connection kept learns here (or at its next
 *                            herald_hk_nset) that its records were claimed: synced again and
 *                            reported connected again, the same way
 *
 * Bounded: the table and P nc:<node> hold one record per notified stream of the node
 * (max_connections), plus closed ones whose disconnect waits in the queue (queue_size); a
 * record names at most max_subscriptions_per_connection channels (the transports' bound).
 * Writes are not kept while Redis is away: the sync at its return says everything again.
 */
#include "herald/hmap.h"
#include "herald/log.h"
#include "internal.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define KEY_MAX    (72 + 8 + 24)
#define TAKE_MAX   1000 /* claimed records read at once */
#define SYNC_CHUNK 256  /* records per herald_hk_nsync */
#define CONN_MAX   63   /* bytes of a connection id */

typedef struct rec_s {
    hd_hnode_t node;        /* in r->recs; key: the connection id (in this allocation) */
    json_t *o;              /* {"transport","sub","client_ip","channels":[..]} */
    unsigned is_closed : 1; /* its disconnect is queued, not yet answered 2xx */
    char conn[];
} rec_t;

struct hk_nrec_s {
    uv_loop_t *loop;
    const hd_conf_t *conf;
    const hk_nrec_ops_t *ops;
    void *data;
    hk_redis_t *rc;
    hd_hmap_t recs;
    uv_timer_t timer;
    char nc[KEY_MAX], ncn[KEY_MAX], pnodes[KEY_MAX], nev[KEY_MAX];
    char lease[24];             /* presence_lease, ms */
    size_t lost_pending;        /* claimed disconnects in the queue, not yet answered 2xx */
    uint64_t claim_ms;          /* loop time of the last claim of a dead claimer's entries */
    uint64_t error_ms;          /* last error logged */
    unsigned is_synced : 1;     /* the sync went since Redis came up: writes may go */
    unsigned has_synced : 1;    /* Redis held this node's records once */
    unsigned is_resyncing : 1;  /* a sync for a claimed node is on its way */
    unsigned is_back_due : 1;   /* its records were found claimed: report them back at the sync */
    void (*settled)(void *arg); /* hk_nrec_settle's callback, once its PING is answered */
    void *settled_arg;
    unsigned is_taking : 1;
    unsigned is_closing : 1;
};

static void log_error(hk_nrec_t *r, const char *what, const redisReply *rep)
{
    uint64_t now = uv_now(r->loop);
    if (r->error_ms && now - r->error_ms < 1000)
        return;
    r->error_ms = now;
    hd_log_warn("notify_hook: redis %s: %s: %.200s", hk_redis_where(r->rc), what,
                rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected answer");
}

static void rsend(hk_nrec_t *r, int argc, const char **argv, const size_t *lens, hk_redis_cb cb)
{
    hk_redis_send(r->rc, argc, argv, lens, cb, r); /* down: the sync at its return says it */
}

static void sync_all(hk_nrec_t *r);

/* herald_hk_nset, herald_hk_nsync and the tick's SISMEMBER answer 0 when Redis no longer
 * listed this node: its records were claimed as a dead node's while it was cut off or frozen
 * (its lease ran out). The nset that says so has listed the node again, so the sync that
 * follows answers 1: the claim is remembered until that sync reports the streams back. */
static void on_set(void *data, const redisReply *rep)
{
    hk_nrec_t *r = data;
    if (!rep || r->is_closing)
        return;
    if (rep->type != REDIS_REPLY_INTEGER) {
        log_error(r, "herald_hk_nset", rep);
        return;
    }
    if (rep->integer == 0 && r->is_synced && !r->is_resyncing) {
        r->is_resyncing = 1; /* the writes sent before the sync answer 0 too */
        r->is_back_due = 1;
        hd_log_warn("notify_hook: this node's streams were reported lost by another node (its "
                    "presence lease ran out); reporting them connected again");
        sync_all(r);
    }
}

static void mirror(hk_nrec_t *r, const rec_t *rec)
{
    if (!r->is_synced)
        return;
    char *s = json_dumps(rec->o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s)
        return;
    const char *argv[] = {"FCALL",   "herald_hk_nset",   "3",      r->nc,     r->ncn,
                          r->pnodes, hd_presence_node(), r->lease, rec->conn, s};
    size_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    rsend(r, 10, argv, lens, on_set);
    free(s);
}

static void forget(hk_nrec_t *r, rec_t *rec)
{
    hd_hmap_remove(&r->recs, &rec->node);
    if (r->is_synced) {
        const char *argv[] = {"FCALL", "herald_hk_ndel", "1", r->nc, rec->conn};
        size_t lens[5];
        for (int i = 0; i < 5; i++)
            lens[i] = strlen(argv[i]);
        rsend(r, 5, argv, lens, NULL);
    }
    json_decref(rec->o);
    free(rec);
}

static rec_t *find(hk_nrec_t *r, const char *conn)
{
    hd_hnode_t *n = hd_hmap_find(&r->recs, conn, strlen(conn));
    return n ? hd_container_of(n, rec_t, node) : NULL;
}

/* The index of channel in a, or -1. */
static int channel_at(json_t *a, const char *channel)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), channel) == 0)
            return (int)i;
    }
    return -1;
}

int hk_nrec_event(hk_nrec_t *r, const char *json, size_t len, int queued, char conn_out[64])
{
    json_t *ev = json_loadb(json, len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *conn = json_string_value(json_object_get(ev, "conn"));
    int waits = 0;
    if (!type || !conn || strlen(conn) > CONN_MAX)
        goto out;
    rec_t *rec = find(r, conn);
    if (strcmp(type, "connect") == 0) {
        if (rec)
            goto out; /* not reached: connection ids are unique */
        size_t cl = strlen(conn);
        rec = hd_calloc(1, sizeof(*rec) + cl + 1);
        memcpy(rec->conn, conn, cl + 1);
        rec->node.key = rec->conn;
        rec->node.key_len = cl;
        rec->o = json_object();
        static const char *const keep[] = {"transport", "sub", "client_ip", "channels"};
        for (size_t i = 0; i < HD_ARRAY_SIZE(keep); i++) {
            json_t *v = json_object_get(ev, keep[i]);
            if (v)
                json_object_set_new(rec->o, keep[i], json_deep_copy(v));
        }
        if (!json_is_array(json_object_get(rec->o, "channels")))
            json_object_set_new(rec->o, "channels", json_array());
        hd_hmap_insert(&r->recs, &rec->node);
        mirror(r, rec);
    } else if (!rec || rec->is_closed) {
        goto out; /* its connect was not reported (events=), or it is closing */
    } else if (strcmp(type, "disconnect") == 0) {
        if (!queued) {
            forget(r, rec); /* the disconnect is lost (queue_size): so is the record */
            goto out;
        }
        rec->is_closed = 1;
        snprintf(conn_out, 64, "%s", conn);
        waits = 1;
    } else {
        const char *ch = json_string_value(json_object_get(ev, "channel"));
        json_t *a = json_object_get(rec->o, "channels");
        int at = ch ? channel_at(a, ch) : -1;
        if (!ch)
            goto out;
        if (strcmp(type, "subscribe") == 0 && at < 0)
            json_array_append_new(a, json_string(ch));
        else if (strcmp(type, "unsubscribe") == 0 && at >= 0)
            json_array_remove(a, (size_t)at);
        else
            goto out;
        mirror(r, rec);
    }
out:
    json_decref(ev);
    return waits;
}

void hk_nrec_closed(hk_nrec_t *r, const char *conn)
{
    rec_t *rec = find(r, conn);
    if (rec)
        forget(r, rec);
}

void hk_nrec_reported(hk_nrec_t *r, const char *sid)
{
    if (r->lost_pending)
        r->lost_pending--;
    const char *argv[] = {"FCALL", "herald_hk_pdone", "1", r->nev, sid};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    rsend(r, 5, argv, lens, NULL); /* lost: claimed again after webhook_claim_after */
}

/* ---- the sync ---- */

/* An event for a record (type, reason; at: wall ms) as the transports write them. */
static char *record_event(const char *type, const char *conn, uint64_t at, const char *reason,
                          json_t *o)
{
    json_t *ev = json_object();
    json_object_set_new(ev, "type", json_string(type));
    json_object_set_new(ev, "conn", json_string(conn));
    json_object_set_new(ev, "at", json_integer((json_int_t)at));
    json_object_set_new(ev, "reason", json_string(reason));
    static const char *const keep[] = {"transport", "sub", "client_ip", "channels"};
    for (size_t i = 0; o && i < HD_ARRAY_SIZE(keep); i++) {
        json_t *v = json_object_get(o, keep[i]);
        if (v)
            json_object_set(ev, keep[i], v);
    }
    char *s = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ev);
    return s;
}

static void report_back(hd_hnode_t *node, void *arg)
{
    hk_nrec_t *r = arg;
    rec_t *rec = hd_container_of(node, rec_t, node);
    if (rec->is_closed || r->ops->room(r->data) == 0)
        return;
    char *s = record_event("connect", rec->conn, hk_wall_ms(), "node_back", rec->o);
    if (s) {
        r->ops->push(r->data, s, strlen(s), NULL, NULL);
        free(s);
    }
}

static void on_sync(void *data, const redisReply *rep)
{
    hk_nrec_t *r = data;
    if (!rep || r->is_closing)
        return;
    if (rep->type != REDIS_REPLY_INTEGER) {
        log_error(r, "herald_hk_nsync", rep);
        r->is_resyncing = 0;
        return;
    }
    if ((rep->integer == 0 || r->is_back_due) && r->has_synced) {
        if (!r->is_back_due)
            hd_log_warn("notify_hook: this node's streams were reported lost by another node "
                        "while it was cut off from Redis; reporting them connected again");
        hd_hmap_foreach(&r->recs, report_back, r);
    }
    r->has_synced = 1;
    r->is_resyncing = 0;
    r->is_back_due = 0;
}

typedef struct sync_s {
    hk_nrec_t *r;
    const char **argv;
    size_t *lens;
    char **owned;
    size_t n, cap_argv, cap_lens, cap_owned, n_owned, n_recs;
    int first;
} sync_t;

static void sync_push(sync_t *s, const char *v, size_t len)
{
    s->argv = hd_grow_array(s->argv, &s->cap_argv, s->n + 1, sizeof(*s->argv), 64);
    s->lens = hd_grow_array(s->lens, &s->cap_lens, s->n + 1, sizeof(*s->lens), 64);
    s->argv[s->n] = v;
    s->lens[s->n++] = len;
}

static void sync_start(sync_t *s)
{
    hk_nrec_t *r = s->r;
    s->n = s->n_recs = 0;
    const char *head[] = {
        "FCALL",  "herald_hk_nsync",   "3", r->nc, r->ncn, r->pnodes, hd_presence_node(),
        r->lease, s->first ? "1" : "0"};
    for (size_t i = 0; i < HD_ARRAY_SIZE(head); i++)
        sync_push(s, head[i], strlen(head[i]));
}

static void sync_flush(sync_t *s)
{
    /* the first chunk's answer says whether Redis still knew the node */
    hk_redis_send(s->r->rc, (int)s->n, s->argv, s->lens, s->first ? on_sync : NULL, s->r);
    for (size_t i = 0; i < s->n_owned; i++)
        free(s->owned[i]);
    s->n_owned = 0;
    s->first = 0;
}

static void sync_one(hd_hnode_t *node, void *arg)
{
    sync_t *s = arg;
    rec_t *rec = hd_container_of(node, rec_t, node);
    char *v = json_dumps(rec->o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!v)
        return;
    s->owned = hd_grow_array(s->owned, &s->cap_owned, s->n_owned + 1, sizeof(*s->owned), 64);
    s->owned[s->n_owned++] = v;
    sync_push(s, rec->conn, strlen(rec->conn));
    sync_push(s, v, strlen(v));
    if (++s->n_recs == SYNC_CHUNK) {
        sync_flush(s);
        sync_start(s);
    }
}

/* Redis holds exactly the table afterwards (in chunks: the first replaces what was there). */
static void sync_all(hk_nrec_t *r)
{
    sync_t s = {.r = r, .first = 1};
    sync_start(&s);
    hd_hmap_foreach(&r->recs, sync_one, &s);
    if (s.first || s.n_recs)
        sync_flush(&s);
    free(s.argv);
    free(s.lens);
    free(s.owned);
    r->is_synced = 1;
}

static void on_up(void *data)
{
    hk_nrec_t *r = data;
    r->is_taking = 0;
    r->is_synced = 0;
    r->is_resyncing = 0;
    sync_all(r);
}

/* ---- claiming a dead node's records ---- */

static int str_of(const redisReply *e, const char **s, size_t *len)
{
    if (!e || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS))
        return -1;
    *s = e->str;
    *len = e->len;
    return 0;
}

/* A string of 1..max bytes, each in set (or a digit), copied into out. */
static int word_of(const redisReply *e, size_t max, const char *set, char *out)
{
    const char *s;
    size_t len;
    if (str_of(e, &s, &len) < 0 || len == 0 || len > max)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!(s[i] >= '0' && s[i] <= '9') && (s[i] == '\0' || !strchr(set, s[i])))
            return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

int hk_nev_parse(const redisReply *const *el, char sid[HK_SID_MAX], char **json)
{
    char conn[CONN_MAX + 1], at[21];
    const char *d;
    size_t dlen;
    uint64_t x = 0;
    *json = NULL;
    if (word_of(el[0], HK_SID_MAX - 1, "-", sid) < 0)
        return -1;
    json_t *o = NULL;
    if (word_of(el[2], CONN_MAX, "abcdef-", conn) < 0 || str_of(el[3], &d, &dlen) < 0 ||
        word_of(el[4], 19, "", at) < 0 || !(o = json_loadb(d, dlen, 0, NULL)) ||
        !json_is_object(o)) {
        json_decref(o);
        return 1;
    }
    for (const char *p = at; *p; p++)
        x = x * 10 + (uint64_t)(*p - '0');
    *json = record_event("disconnect", conn, x, "node_lost", o);
    json_decref(o);
    return *json ? 0 : 1;
}

static void take_one(hk_nrec_t *r, const redisReply *const *el)
{
    char sid[HK_SID_MAX], id[HK_SID_MAX + 8], *s;
    int rc = hk_nev_parse(el, sid, &s);
    if (rc < 0)
        return; /* not an entry id: nothing to finish */
    r->lost_pending++;
    if (rc > 0) {
        hk_nrec_reported(r, sid); /* not one of ours: finished and dropped */
        return;
    }
    snprintf(id, sizeof(id), "ntf_%s", sid);
    r->ops->push(r->data, s, strlen(s), id, sid);
    free(s);
}

static void on_take(void *data, const redisReply *rep)
{
    hk_nrec_t *r = data;
    r->is_taking = 0;
    if (!rep || r->is_closing)
        return; /* what it read is claimed after webhook_claim_after */
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % HK_NEV_FIELDS != 0) {
        log_error(r, "herald_hk_ntake", rep);
        return;
    }
    size_t n = rep->elements / HK_NEV_FIELDS;
    if (n)
        hd_log_info("notify_hook: %zu streams of dead nodes claimed: their disconnects go to "
                    "the backend",
                    n);
    for (size_t i = 0; i < rep->elements; i += HK_NEV_FIELDS)
        take_one(r, (const redisReply *const *)&rep->element[i]);
}

/* Is this node still listed? A node with records that was frozen past its lease (and kept
 * its connection) has them claimed without writing anything that would tell it (on_set). */
static void check_listed(hk_nrec_t *r)
{
    if (!r->is_synced || r->is_resyncing || r->recs.n == 0)
        return;
    const char *argv[] = {"SISMEMBER", r->ncn, hd_presence_node()};
    size_t lens[3];
    for (int i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    rsend(r, 3, argv, lens, on_set);
}

static void on_tick(uv_timer_t *t)
{
    hk_nrec_t *r = t->data;
    if (hk_redis_is_up(r->rc))
        check_listed(r);
    /* one round of claimed disconnects at a time: entries of this node's own that wait for the
     * backend are never claimed again by this node */
    if (!r->is_synced || r->is_taking || r->lost_pending || !hk_redis_is_up(r->rc))
        return;
    size_t room = r->ops->room(r->data);
    if (room == 0)
        return;
    char n[24], idle[24];
    snprintf(n, sizeof(n), "%zu", room < TAKE_MAX ? room : (size_t)TAKE_MAX);
    uint64_t now = uv_now(r->loop), claim = r->conf->webhook_claim_after_ms;
    const char *claim_arg = "0";
    if (r->claim_ms == 0 || now - r->claim_ms >= claim / 4) {
        r->claim_ms = now;
        snprintf(idle, sizeof(idle), "%llu", (unsigned long long)claim);
        claim_arg = idle;
    }
    const char *argv[] = {"FCALL",
                          "herald_hk_ntake",
                          "3",
                          r->ncn,
                          r->pnodes,
                          r->nev,
                          hd_presence_node(),
                          r->conf->redis_prefix,
                          n,
                          claim_arg};
    size_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    if (hk_redis_send(r->rc, 10, argv, lens, on_take, r) == 0)
        r->is_taking = 1;
}

/* ---- a graceful stop ---- */

static void on_settle_timer(uv_timer_t *t)
{
    hk_nrec_t *r = t->data;
    void (*cb)(void *) = r->settled;
    r->settled = NULL;
    cb(r->settled_arg);
}

static void on_settled(void *data, const redisReply *rep)
{
    hk_nrec_t *r = data;
    (void)rep; /* answered or lost: either way nothing sent before it is still waiting */
    if (r->is_closing || !r->settled)
        return;
    /* on the next loop pass: the callback closes this connection, never inside its own reply */
    uv_timer_stop(&r->timer);
    uv_timer_start(&r->timer, on_settle_timer, 0, 0);
}

int hk_nrec_settle(hk_nrec_t *r, void (*done)(void *arg), void *arg)
{
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    if (!hk_redis_is_up(r->rc) || hk_redis_send(r->rc, 1, argv, lens, on_settled, r) < 0)
        return 0;
    r->settled = done;
    r->settled_arg = arg;
    uv_timer_stop(&r->timer); /* no more claims: the node is stopping */
    return 1;
}

/* ---- life ---- */

hk_nrec_t *hk_nrec_new(uv_loop_t *loop, const hd_conf_t *conf, const hk_nrec_ops_t *ops, void *data)
{
    hk_nrec_t *r = hd_calloc(1, sizeof(*r));
    r->loop = loop;
    r->conf = conf;
    r->ops = ops;
    r->data = data;
    snprintf(r->nc, sizeof(r->nc), "%snc:%s", conf->redis_prefix, hd_presence_node());
    snprintf(r->ncn, sizeof(r->ncn), "%sncn", conf->redis_prefix);
    snprintf(r->pnodes, sizeof(r->pnodes), "%spnodes", conf->redis_prefix);
    snprintf(r->nev, sizeof(r->nev), "%shk:nev", conf->redis_prefix);
    snprintf(r->lease, sizeof(r->lease), "%llu", (unsigned long long)conf->presence_lease_ms);
    hd_hmap_init(&r->recs, 64);
    r->rc = hk_redis_new(loop, conf, "notify", on_up, r);
    if (!r->rc) {
        hd_hmap_dispose(&r->recs);
        free(r);
        return NULL;
    }
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uint64_t every = conf->presence_lease_ms / 4 < 1000 ? conf->presence_lease_ms / 4 : 1000;
    uv_timer_start(&r->timer, on_tick, every, every);
    return r;
}

static void free_rec(hd_hnode_t *node, void *arg)
{
    rec_t *rec = hd_container_of(node, rec_t, node);
    hd_hmap_remove(arg, node);
    json_decref(rec->o);
    free(rec);
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void hk_nrec_close(hk_nrec_t *r)
{
    r->is_closing = 1;
    hk_redis_close(r->rc); /* the answers still owed come back NULL, now */
    hd_hmap_foreach(&r->recs, free_rec, &r->recs);
    hd_hmap_dispose(&r->recs);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}
