/* SPDX-License-Identifier: MIT */
/*
 * receipt.c: delivery receipts (docs/chat.md): the box a publishing connection shares with the
 * messages it asked receipts for, and the receipts carried to it, as mails on its worker's
 * mailbox, from whichever worker wrote or had acked such a message; under Redis, from whichever
 * node did, as text through the broker (an address instead of the box). pubsub.h draws the
 * path. Nothing here runs for a message without a box: the fan-out pays one NULL test.
 *
 * A worker finds its boxes by connection id (receipts from Redis name the connection, never a
 * pointer): a table made with the worker's first box and freed with its last, touched when a
 * connection first asks a receipt, when it goes, and once per receipt from an address.
 */
#include "herald/hmap.h"
#include "herald/pubsub.h"
#include "herald/worker.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A worker's boxes by connection id. */
typedef struct box_entry_s {
    hd_hnode_t node; /* key: the connection id's 8 bytes */
    uint64_t conn_id;
    hd_rcpt_t *box; /* no reference: hd_rcpt_close removes it while the box lives */
} box_entry_t;

/* A receipt on its way to the publisher's worker: to a box, or to a connection id there. */
typedef struct rcpt_mail_s {
    hd_msg_t base;
    hd_rcpt_t *to; /* a reference; NULL: the box of conn_id on this worker, if any */
    uint64_t conn_id;
    int status;
    uint64_t epoch, seq;
    char *member; /* ACKED: the acker's identity ({"sub":..}), owned; NULL: anonymous */
    char channel[HD_CHANNEL_MAX + 1];
    char id[HD_ID_MAX];
    char conn[48]; /* ACKED: the acker's connection, "<node>-<id>" */
} rcpt_mail_t;

static hd_hmap_t *table_of(hd_worker_t *w)
{
    return w->modules[HD_MODULE_RCPT];
}

hd_rcpt_t *hd_rcpt_new(hd_worker_t *w, uint64_t conn_id, hd_rcpt_cb cb, void *owner)
{
    hd_rcpt_t *r = hd_calloc(1, sizeof(*r));
    r->refs = 1;
    r->worker = w;
    r->owner = owner;
    r->cb = cb;
    r->conn_id = conn_id;
    r->is_here = 1;
    hd_hmap_t *t = table_of(w);
    if (!t) {
        t = hd_calloc(1, sizeof(*t));
        hd_hmap_init(t, 8);
        w->modules[HD_MODULE_RCPT] = t;
    }
    box_entry_t *e = hd_calloc(1, sizeof(*e));
    e->conn_id = conn_id;
    e->box = r;
    e->node.key = (const char *)&e->conn_id;
    e->node.key_len = sizeof(e->conn_id);
    HD_ASSERT(!hd_hmap_find(t, e->node.key, e->node.key_len)); /* one box per connection */
    hd_hmap_insert(t, &e->node);
    return r;
}

static hd_rcpt_t *find_box(hd_worker_t *w, uint64_t conn_id)
{
    hd_hmap_t *t = table_of(w);
    hd_hnode_t *n = t ? hd_hmap_find(t, (const char *)&conn_id, sizeof(conn_id)) : NULL;
    return n ? hd_container_of(n, box_entry_t, node)->box : NULL;
}

void hd_rcpt_close(hd_rcpt_t *box)
{
    box->owner = NULL;
    hd_hmap_t *t = table_of(box->worker);
    hd_hnode_t *n = t ? hd_hmap_find(t, (const char *)&box->conn_id, sizeof(box->conn_id)) : NULL;
    if (!n)
        return;
    hd_hmap_remove(t, n);
    free(hd_container_of(n, box_entry_t, node));
    if (t->n == 0) { /* the worker's last box: nothing kept for a worker without any */
        hd_hmap_dispose(t);
        free(t);
        box->worker->modules[HD_MODULE_RCPT] = NULL;
    }
}

size_t hd_rcpt_tag(const hd_rcpt_t *r, char *out)
{
    int n = snprintf(out, HD_RCPT_TAG_MAX, "%s-%llx", r->worker ? hd_presence_node() : r->node,
                     (unsigned long long)r->conn_id);
    return n > 0 && n < HD_RCPT_TAG_MAX ? (size_t)n : 0;
}

/* Reads "<node>-<hex>" (node: 1-15 hex digits, conn: 1-16). Returns 0, or -1. */
static int parse_tag(const char *s, size_t len, char node[16], uint64_t *conn_id)
{
    const char *dash = memchr(s, '-', len);
    if (!dash || dash == s || dash - s > 15 || len - (size_t)(dash - s) - 1 == 0 ||
        len - (size_t)(dash - s) - 1 > 16)
        return -1;
    uint64_t id = 0;
    for (const char *p = s; p < s + len; p++) {
        int is_hex = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
        if (p == dash)
            continue;
        if (!is_hex)
            return -1;
        if (p > dash)
            id = id << 4 | (uint64_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
    }
    memcpy(node, s, (size_t)(dash - s));
    node[dash - s] = '\0';
    *conn_id = id;
    return 0;
}

hd_rcpt_t *hd_rcpt_address(const char *tag, size_t len)
{
    char node[16];
    uint64_t conn_id;
    if (parse_tag(tag, len, node, &conn_id) < 0)
        return NULL;
    hd_rcpt_t *r = hd_calloc(1, sizeof(*r));
    r->refs = 1;
    r->conn_id = conn_id;
    memcpy(r->node, node, sizeof(node));
    r->is_here = strcmp(node, hd_presence_node()) == 0;
    return r;
}

/* A DELIVERED receipt this box passed on lately (each node that delivers sends one). */
static int seen_before(hd_rcpt_t *box, uint64_t epoch, uint64_t seq)
{
    for (size_t i = 0; i < HD_RCPT_SEEN; i++)
        if (box->seen[i][0] == epoch && box->seen[i][1] == seq)
            return 1;
    box->seen[box->seen_next][0] = epoch;
    box->seen[box->seen_next][1] = seq;
    box->seen_next = (uint8_t)((box->seen_next + 1) % HD_RCPT_SEEN);
    return 0;
}

/* On the publisher's worker: to the connection if it is still there, else nowhere. */
static void on_mail(hd_worker_t *w, hd_msg_t *msg)
{
    rcpt_mail_t *mail = (rcpt_mail_t *)msg;
    hd_rcpt_t *box = mail->to ? mail->to : find_box(w, mail->conn_id);
    if (box && box->owner &&
        (mail->status != HD_RCPT_DELIVERED || !seen_before(box, mail->epoch, mail->seq)))
        box->cb(box->owner, mail->status, mail->channel, mail->id, mail->member,
                mail->status == HD_RCPT_ACKED ? mail->conn : NULL);
    hd_rcpt_unref(mail->to);
    free(mail->member);
    free(mail);
}

static rcpt_mail_t *mail_new(int status, const char *channel, size_t channel_len, uint64_t epoch,
                             uint64_t seq)
{
    rcpt_mail_t *mail = hd_calloc(1, sizeof(*mail));
    mail->base.cb = on_mail;
    mail->status = status;
    mail->epoch = epoch;
    mail->seq = seq;
    memcpy(mail->channel, channel, channel_len);
    mail->channel[channel_len] = '\0';
    hd_id_format(mail->id, sizeof(mail->id), epoch, seq);
    return mail;
}

/*
 * A receipt to an address: its text to the broker, which sends it to the publisher's node
 * (the Redis bridge; only it makes addresses). Members past HD_RCPT_TEXT_MAX go without their
 * identity: a receipt never waits for memory.
 */
static void send_text(const hd_rcpt_t *to, int status, const char *channel, uint64_t epoch,
                      uint64_t seq, const char *member_json, const char *conn)
{
    char tag[HD_RCPT_TAG_MAX], id[HD_ID_MAX];
    hd_rcpt_tag(to, tag);
    hd_id_format(id, sizeof(id), epoch, seq);
    size_t mlen = member_json ? strlen(member_json) : 0;
    if (mlen > HD_RCPT_TEXT_MAX - 256)
        member_json = NULL, mlen = 0;
    hd_sbuf_t sb;
    hd_sbuf_init(&sb, 256 + mlen);
    if (status == HD_RCPT_DELIVERED)
        hd_sbuf_appendf(&sb, "%s d %s %s", tag, channel, id);
    else
        hd_sbuf_appendf(&sb, "%s a %s %s %s%s%s", tag, channel, id, conn, member_json ? " " : "",
                        member_json ? member_json : "");
    hd_breq_t *r = hd_breq_new(HD_BREQ_RECEIPT, NULL, NULL, 0);
    r->data_len = sb.buf->len;
    r->data = hd_strndup((const char *)sb.buf->data, sb.buf->len);
    hd_sbuf_dispose(&sb);
    hd_broker_submit(r);
}

void hd_rcpt_delivered_(hd_message_t *m, uint64_t conn_id)
{
    if (hd_rcpt_is_publisher(m->rcpt, conn_id))
        return; /* the publisher's own copy says nothing about the others */
    if (__atomic_exchange_n(&m->rcpt_done, 1, __ATOMIC_RELAXED))
        return; /* another subscriber (another worker) was first */
    if (!m->rcpt->worker) {
        send_text(m->rcpt, HD_RCPT_DELIVERED, m->channel, m->epoch, m->seq, NULL, NULL);
        return;
    }
    rcpt_mail_t *mail = mail_new(HD_RCPT_DELIVERED, m->channel, m->channel_len, m->epoch, m->seq);
    mail->to = hd_rcpt_ref(m->rcpt);
    hd_worker_post(m->rcpt->worker, &mail->base);
}

void hd_rcpt_acked(hd_rcpt_t *to, const char *channel, uint64_t epoch, uint64_t seq,
                   const char *member_json, uint64_t conn_id)
{
    char conn[48];
    snprintf(conn, sizeof(conn), "%s-%llx", hd_presence_node(), (unsigned long long)conn_id);
    if (!to->worker) {
        send_text(to, HD_RCPT_ACKED, channel, epoch, seq, member_json, conn);
        return;
    }
    rcpt_mail_t *mail = mail_new(HD_RCPT_ACKED, channel, strlen(channel), epoch, seq);
    mail->to = hd_rcpt_ref(to);
    mail->member = member_json ? hd_strndup(member_json, strlen(member_json)) : NULL;
    memcpy(mail->conn, conn, sizeof(conn));
    hd_worker_post(to->worker, &mail->base);
}

/* The next space-separated word of [*p, end): its start and length; -1 when there is none. */
static int next_word(const char **p, const char *end, const char **w, size_t *len)
{
    const char *s = *p, *sp = memchr(s, ' ', (size_t)(end - s));
    const char *e = sp ? sp : end;
    if (e == s)
        return -1;
    *w = s;
    *len = (size_t)(e - s);
    *p = sp ? sp + 1 : end;
    return 0;
}

int hd_rcpt_parse(const char *text, size_t len, hd_rcpt_text_t *out)
{
    const char *p = text, *end = text + len, *tag, *kind, *id;
    size_t tag_len, kind_len, id_len;
    memset(out, 0, sizeof(*out));
    if (len > HD_RCPT_TEXT_MAX || next_word(&p, end, &tag, &tag_len) < 0 ||
        parse_tag(tag, tag_len, out->node, &out->conn_id) < 0 ||
        next_word(&p, end, &kind, &kind_len) < 0 || kind_len != 1 ||
        (kind[0] != 'd' && kind[0] != 'a') ||
        next_word(&p, end, &out->channel, &out->channel_len) < 0 ||
        !hd_channel_name_valid(out->channel, out->channel_len) ||
        next_word(&p, end, &id, &id_len) < 0 || hd_id_parse(id, id_len, &out->epoch, &out->seq) < 0)
        goto bad;
    out->status = kind[0] == 'd' ? HD_RCPT_DELIVERED : HD_RCPT_ACKED;
    if (out->status == HD_RCPT_DELIVERED) {
        if (p < end || end[-1] == ' ')
            goto bad;
        return 0;
    }
    /* the acker "<node>-<hex>", then its identity: a JSON object (the server's), or none */
    char an[16];
    uint64_t aid;
    if (next_word(&p, end, &out->acker, &out->acker_len) < 0 || out->acker_len >= 48 ||
        parse_tag(out->acker, out->acker_len, an, &aid) < 0)
        goto bad;
    if (p < end) { /* written into the publisher's frame as is: one JSON object, checked */
        json_t *j = json_loadb(p, (size_t)(end - p), JSON_REJECT_DUPLICATES, NULL);
        int ok = *p == '{' && json_is_object(j) && !memchr(p, '\0', (size_t)(end - p));
        json_decref(j);
        if (!ok)
            goto bad;
        out->member = p;
        out->member_len = (size_t)(end - p);
    } else if (end[-1] == ' ') {
        goto bad;
    }
    return 0;
bad:
    memset(out, 0, sizeof(*out));
    return HD_EBADREQ;
}

int hd_rcpt_post(hd_server_t *s, const char *text, size_t len)
{
    hd_rcpt_text_t t;
    if (hd_rcpt_parse(text, len, &t) < 0 || strcmp(t.node, hd_presence_node()) != 0 ||
        (t.conn_id >> 48) >= hd_server_worker_count(s))
        return HD_EBADREQ;
    rcpt_mail_t *mail = mail_new(t.status, t.channel, t.channel_len, t.epoch, t.seq);
    mail->conn_id = t.conn_id;
    if (t.acker) {
        memcpy(mail->conn, t.acker, t.acker_len);
        mail->conn[t.acker_len] = '\0';
        mail->member = t.member ? hd_strndup(t.member, t.member_len) : NULL;
    }
    hd_worker_post(hd_server_worker(s, (unsigned)(t.conn_id >> 48)), &mail->base);
    return 0;
}
