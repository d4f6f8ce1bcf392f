/* SPDX-License-Identifier: MIT */
/*
 * redis_presence.c: presence and ephemeral messages through Redis (docs/chat.md), for the whole
 * cluster. The bridge keeps this node's member connections (b->pres, by channel and connection)
 * and mirrors them into Redis with herald.lua's presence functions:
 *
 *   JOIN  (a member's subscription went live)   local table + FCALL herald_pjoin
 *   LEAVE (it ended)                            local table - FCALL herald_pleave
 *   every presence_lease / 4                    FCALL herald_plive: this node's lease renewed
 *                                               (3/4 of presence_lease ahead), and the members
 *                                               of nodes whose lease ran out dropped, with their
 *                                               leaves published, once (one atomic call)
 *   Redis back after a loss                     FCALL herald_pdrop (what Redis still holds of
 *                                               this node), then herald_pjoin for each local one
 *   PRESENCE (a snapshot page)                  FCALL herald_pget (a page of members, each
 *                                               with HD_PRESENCE_MEMBER_CONNS ids at most), or
 *                                               herald_pconns (a page of one member's ids)
 *   INFO (after its herald_read)                HLEN P pk:<channel>: the members of the cluster
 *   an ephemeral publish                        PUBLISH P msg:<channel> "~e\n<time>\n<type>\n
 *                                               <stamp>\n<payload>", no id, nothing stored
 *
 * Join and leave events come back over pub/sub like messages ("~j" / "~l" for an id) to every
 * node with subscribers on the channel, and go to its workers at once (they have no sequence to
 * wait for). A node killed (SIGKILL) stops renewing its lease: the next herald_plive of another
 * node after it ran out (at most presence_lease after the last renewal) publishes its members'
 * leaves; a member with connections on other nodes stays, as its key's count says.
 */
#include "herald/hooks.h"
#include "redis_bridge.h"

#include <stdio.h>

/* A channel with member connections of this node: presence_max_channels counts these. */
typedef struct pchan_s {
    hd_hnode_t node; /* in b->pres_chans; key: the name (in this allocation) */
    uint64_t conns;  /* this node's member connections on it */
} pchan_t;

#define REFUSAL_LOG_MS 10000 /* refused joins are logged at most this often */

/* One member connection of this node on one channel. */
typedef struct pconn_s {
    hd_hnode_t node; /* in b->pres; key: "<channel>\n<conn>" (in this allocation) */
    size_t chan_len; /* the channel is the key's first chan_len bytes */
    hd_member_t *m;  /* owned */
} pconn_t;

static void send_cmd(redis_broker_t *b, int kind, hd_breq_t *r, int argc, const char **argv)
{
    size_t lens[10];
    HD_ASSERT(argc <= 10);
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    op_t *op = hd_redis_op_new(b, kind);
    op->r = r;
    hd_redis_send(b, op, argc, argv, lens);
}

static void send_join(redis_broker_t *b, const pconn_t *pc)
{
    char lease[24], chan[HD_CHANNEL_MAX + 1];
    snprintf(lease, sizeof(lease), "%llu", (unsigned long long)(b->pres_lease_ms * 3 / 4));
    memcpy(chan, pc->node.key, pc->chan_len);
    chan[pc->chan_len] = '\0';
    const char *argv[] = {"FCALL", "herald_pjoin", "0",         b->prefix,  hd_presence_node(),
                          lease,   chan,           pc->m->conn, pc->m->key, pc->m->json};
    send_cmd(b, OP_PRES_CMD, NULL, 10, argv);
}

static void on_lease(uv_timer_t *t)
{
    redis_broker_t *b = t->data;
    if (b->state != ST_UP)
        return;
    char lease[24];
    snprintf(lease, sizeof(lease), "%llu", (unsigned long long)(b->pres_lease_ms * 3 / 4));
    const char *argv[] = {"FCALL", "herald_plive", "0", b->prefix, hd_presence_node(), lease};
    send_cmd(b, OP_PRES_CMD, NULL, 6, argv);
}

void hd_redis_presence_init(redis_broker_t *b, uint64_t lease_ms, uint64_t max_channels)
{
    hd_hmap_init(&b->pres, 64);
    hd_hmap_init(&b->pres_chans, 64);
    b->pres_max_channels = max_channels;
    b->pres_lease_ms = lease_ms;
    uv_timer_init(&b->loop, &b->pres_timer);
    b->pres_timer.data = b;
    uint64_t every = lease_ms / 4 ? lease_ms / 4 : 1;
    uv_timer_start(&b->pres_timer, on_lease, every, every);
}

void hd_redis_presence_close(redis_broker_t *b)
{
    uv_close((uv_handle_t *)&b->pres_timer, NULL);
}

static void free_cb(hd_hnode_t *node, void *arg)
{
    redis_broker_t *b = arg;
    pconn_t *pc = hd_container_of(node, pconn_t, node);
    hd_hmap_remove(&b->pres, node);
    hd_member_unref(pc->m);
    free(pc);
}

static void free_chan_cb(hd_hnode_t *node, void *arg)
{
    hd_hmap_remove(arg, node);
    free(hd_container_of(node, pchan_t, node));
}

void hd_redis_presence_dispose(redis_broker_t *b)
{
    hd_hmap_foreach(&b->pres, free_cb, b);
    hd_hmap_dispose(&b->pres);
    hd_hmap_foreach(&b->pres_chans, free_chan_cb, &b->pres_chans);
    hd_hmap_dispose(&b->pres_chans);
}

/*
 * The channel of a joining connection, counted: the node tracks at most presence_max_channels
 * channels at once, as the embedded broker does (Redis holds the members, but every channel a
 * node tracks costs it a table entry and Redis a hash). NULL past the budget: the connection is
 * subscribed but not listed (counted, logged at most every 10 s).
 */
static pchan_t *count_in(redis_broker_t *b, const char *channel, size_t len)
{
    hd_hnode_t *node = hd_hmap_find(&b->pres_chans, channel, len);
    pchan_t *c = node ? hd_container_of(node, pchan_t, node) : NULL;
    if (!c) {
        if (b->pres_chans.n >= b->pres_max_channels) {
            STAT_SET(b, presence_refused, ++b->pres_refused);
            uint64_t now = uv_now(&b->loop);
            if (!b->pres_refused_log_ms || now - b->pres_refused_log_ms >= REFUSAL_LOG_MS) {
                hd_log_warn("%llu presence joins refused: presence_max_channels (%llu) reached; "
                            "those connections are subscribed but not listed as present",
                            (unsigned long long)(b->pres_refused - b->pres_refused_logged),
                            (unsigned long long)b->pres_max_channels);
                b->pres_refused_logged = b->pres_refused;
                b->pres_refused_log_ms = now;
            }
            return NULL;
        }
        c = hd_calloc(1, sizeof(*c) + len + 1);
        char *k = (char *)(c + 1);
        memcpy(k, channel, len);
        c->node.key = k;
        c->node.key_len = len;
        hd_hmap_insert(&b->pres_chans, &c->node);
        STAT_SET(b, presence_channels, b->pres_chans.n);
    }
    c->conns++;
    return c;
}

static void count_out(redis_broker_t *b, const char *channel, size_t len)
{
    hd_hnode_t *node = hd_hmap_find(&b->pres_chans, channel, len);
    pchan_t *c = node ? hd_container_of(node, pchan_t, node) : NULL;
    if (c && --c->conns == 0) {
        hd_hmap_remove(&b->pres_chans, node);
        free(c);
        STAT_SET(b, presence_channels, b->pres_chans.n);
    }
}

static void rejoin_cb(hd_hnode_t *node, void *arg)
{
    send_join(arg, hd_container_of(node, pconn_t, node));
}

/* ---- channel occupancy, for webhooks' channel.occupied / channel.vacated ---- */

void hd_redis_occupancy(redis_broker_t *b, const char *channel, int occupied)
{
    if (!hd_hooks_want_channel_events() || b->state != ST_UP)
        return; /* after a reconnect, occ_sync says what changed meanwhile */
    const char *argv[] = {"FCALL", "herald_occ",        "0", b->prefix, hd_presence_node(),
                          channel, occupied ? "1" : "0"};
    send_cmd(b, OP_PRES_CMD, NULL, 7, argv);
}

/* The arguments of herald_osync, growing. */
typedef struct occ_list_s {
    const char **argv;
    size_t *lens;
    size_t n, cap_argv, cap_lens;
} occ_list_t;

static void occ_push(occ_list_t *l, const char *s, size_t len)
{
    l->argv = hd_grow_array(l->argv, &l->cap_argv, l->n + 1, sizeof(*l->argv), 64);
    l->lens = hd_grow_array(l->lens, &l->cap_lens, l->n + 1, sizeof(*l->lens), 64);
    l->argv[l->n] = s;
    l->lens[l->n++] = len;
}

static void add_occupied(hd_chan_t *ch, void *arg)
{
    rchan_t *c = hd_container_of(ch, rchan_t, ch);
    if (c->in.n_workers > 0)
        occ_push(arg, c->name, hd_chan_name_len(ch));
}

/* Redis is back: the node's occupied channels, as they are now (herald_osync reports the
 * channels that came or went while it was cut off). */
static void occ_sync(redis_broker_t *b)
{
    if (!hd_hooks_want_channel_events())
        return;
    occ_list_t l = {0};
    const char *head[] = {"FCALL", "herald_osync", "0", b->prefix, hd_presence_node()};
    for (size_t i = 0; i < HD_ARRAY_SIZE(head); i++)
        occ_push(&l, head[i], strlen(head[i]));
    hd_chantab_foreach(&b->chans, add_occupied, &l);
    hd_redis_send(b, hd_redis_op_new(b, OP_PRES_CMD), (int)l.n, l.argv, l.lens);
    free(l.argv);
    free(l.lens);
}

void hd_redis_presence_on_up(redis_broker_t *b)
{
    /* What Redis may still hold of this node (connections that left while it was cut off) goes
     * first, then every member connection of now joins again: members of this node alone see a
     * leave and a join, nobody stays listed for a connection that is gone. */
    const char *argv[] = {"FCALL", "herald_pdrop", "0", b->prefix, hd_presence_node()};
    send_cmd(b, OP_PRES_CMD, NULL, 5, argv);
    hd_hmap_foreach(&b->pres, rejoin_cb, b);
    on_lease(&b->pres_timer);
    occ_sync(b);
}

/* "<channel>\n<conn>" into key (HD_CHANNEL_MAX + 64 bytes). Returns its length. */
static size_t make_key(char *key, const hd_breq_t *r)
{
    size_t cl = strlen(r->channel);
    memcpy(key, r->channel, cl);
    key[cl] = '\n';
    memcpy(key + cl + 1, r->member->conn, r->member->conn_len + 1);
    return cl + 1 + r->member->conn_len;
}

void hd_redis_presence_join(redis_broker_t *b, hd_breq_t *r)
{
    char key[HD_CHANNEL_MAX + 64];
    size_t kl = make_key(key, r);
    if (r->member->conn_len > 40 || hd_hmap_find(&b->pres, key, kl) ||
        !count_in(b, r->channel, strlen(r->channel))) {
        hd_breq_free(r);
        return;
    }
    pconn_t *pc = hd_calloc(1, sizeof(*pc) + kl + 1);
    char *k = (char *)(pc + 1);
    memcpy(k, key, kl + 1);
    pc->node.key = k;
    pc->node.key_len = kl;
    pc->chan_len = strlen(r->channel);
    pc->m = r->member; /* the request's member is the table's now */
    r->member = NULL;
    hd_hmap_insert(&b->pres, &pc->node);
    if (b->state == ST_UP)
        send_join(b, pc); /* else the reconnect joins it */
    hd_breq_free(r);
}

void hd_redis_presence_leave(redis_broker_t *b, hd_breq_t *r)
{
    char key[HD_CHANNEL_MAX + 64];
    size_t kl = r->member->conn_len > 40 ? 0 : make_key(key, r);
    hd_hnode_t *node = kl ? hd_hmap_find(&b->pres, key, kl) : NULL;
    if (node) {
        pconn_t *pc = hd_container_of(node, pconn_t, node);
        hd_hmap_remove(&b->pres, node);
        hd_member_unref(pc->m);
        free(pc);
        count_out(b, r->channel, strlen(r->channel));
        if (b->state == ST_UP) { /* else the reconnect's herald_pdrop drops it */
            const char *argv[] = {"FCALL",   "herald_pleave", "0",
                                  b->prefix, r->channel,      r->member->conn};
            send_cmd(b, OP_PRES_CMD, NULL, 6, argv);
        }
    }
    hd_breq_free(r);
}

void hd_redis_presence_page(redis_broker_t *b, hd_breq_t *r)
{
    if (b->state != ST_UP) {
        hd_redis_fail_now(r, HD_EOVERLOAD);
        return;
    }
    char limit[24], max_conns[24];
    snprintf(limit, sizeof(limit), "%zu", r->limit ? r->limit : (size_t)HD_PRESENCE_PAGE_DEFAULT);
    snprintf(max_conns, sizeof(max_conns), "%d", HD_PRESENCE_MEMBER_CONNS);
    const char *cursor = r->cursor ? r->cursor : "";
    hd_redis_hold(b);
    if (r->member_key) { /* one member's connections */
        const char *argv[] = {"FCALL",    "herald_pconns", "0",    b->prefix,
                              r->channel, r->member_key,   cursor, limit};
        send_cmd(b, OP_PRES_PAGE, r, 8, argv);
        return;
    }
    const char *argv[] = {"FCALL",    "herald_pget", "0",   b->prefix,
                          r->channel, cursor,        limit, max_conns};
    send_cmd(b, OP_PRES_PAGE, r, 8, argv);
}

void hd_redis_presence_count(redis_broker_t *b, hd_breq_t *r)
{
    char key[KEY_MAX];
    hd_redis_key(b, key, "pk:", r->channel, strlen(r->channel));
    const char *argv[] = {"HLEN", key};
    send_cmd(b, OP_PRES_COUNT, r, 2, argv); /* r is held already (its INFO read) */
}

void hd_redis_send_ephemeral(redis_broker_t *b, hd_breq_t *r)
{
    if (b->state != ST_UP) {
        hd_redis_fail_now(r, HD_EOVERLOAD);
        return;
    }
    const hd_message_t *m = r->msgs[0];
    char key[KEY_MAX], head[64];
    size_t kl = hd_redis_key(b, key, "msg:", m->channel, m->channel_len);
    int hl = snprintf(head, sizeof(head), "~e\n%llu\n",
                      (unsigned long long)(uv_hrtime() / 1000000u)); /* a time: not compared */
    size_t ct = strlen(m->content_type), pl = m->publisher ? strlen(m->publisher) : 0;
    size_t len = (size_t)hl + ct + 1 + pl + 1 + m->len;
    char *payload = hd_malloc(len);
    char *p = payload;
    memcpy(p, head, (size_t)hl);
    p += hl;
    memcpy(p, m->content_type, ct);
    p += ct;
    *p++ = '\n';
    if (pl)
        memcpy(p, m->publisher, pl);
    p += pl;
    *p++ = '\n';
    memcpy(p, m->data, m->len);
    const char *argv[] = {"PUBLISH", key, payload};
    size_t lens[] = {7, kl, len};
    hd_redis_hold(b);
    op_t *op = hd_redis_op_new(b, OP_EPHEMERAL);
    op->r = r;
    hd_redis_send(b, op, 3, argv, lens);
    free(payload);
}

/* Error replies of the presence functions: logged at most once a second. */
static void note_error(redis_broker_t *b, const redisReply *rep)
{
    uint64_t now = hd_redis_now_ms(b);
    if (now - b->pres_error_ms < 1000)
        return;
    b->pres_error_ms = now;
    hd_log_warn("redis %s: presence: %.*s", b->where, (int)rep->len, rep->str);
}

void hd_redis_presence_reply(redis_broker_t *b, op_t *op, const redisReply *rep)
{
    hd_breq_t *r = op->r;
    if (rep && rep->type == REDIS_REPLY_ERROR)
        note_error(b, rep);
    switch (op->kind) {
    case OP_PRES_CMD:
        break; /* fire and forget: a lost one is made good by the reconnect */
    case OP_EPHEMERAL:
        if (!rep || rep->type == REDIS_REPLY_ERROR)
            hd_redis_release_err(b, r, HD_EOVERLOAD);
        else
            hd_redis_release(b, r);
        break;
    case OP_PRES_COUNT:
        if (rep && rep->type == REDIS_REPLY_INTEGER)
            r->members = (uint64_t)rep->integer;
        if (!rep || rep->type != REDIS_REPLY_INTEGER)
            hd_redis_release_err(b, r, HD_EOVERLOAD);
        else
            hd_redis_release(b, r);
        break;
    case OP_PRES_PAGE: {
        const char *s;
        size_t len;
        uint64_t n;
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            hd_redis_reply_u64(rep->element[0], &n) < 0 ||
            hd_redis_reply_str(rep->element[1], &s, &len) < 0) {
            hd_redis_release_err(b, r, HD_EOVERLOAD);
            break;
        }
        r->members = n;
        free(r->page);
        r->page = hd_strndup(s, len);
        hd_redis_release(b, r);
        break;
    }
    default:
        break;
    }
}
