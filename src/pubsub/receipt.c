/* SPDX-License-Identifier: MIT */
/*
 * receipt.c: delivery receipts (docs/chat.md): the box a publishing connection shares with the
 * messages it asked receipts for, and the receipts carried to it, as mails on its worker's
 * mailbox, from whichever worker wrote or had acked such a message. pubsub.h draws the path.
 * Nothing here runs for a message without a box: the fan-out pays one NULL test.
 */
#include "herald/pubsub.h"
#include "herald/worker.h"

#include <stdio.h>
#include <string.h>

/* A receipt on its way to the publisher's worker. */
typedef struct rcpt_mail_s {
    hd_msg_t base;
    hd_rcpt_t *to; /* a reference */
    int status;
    char *member; /* ACKED: the acker's identity ({"sub":..}), owned; NULL: anonymous */
    char channel[HD_CHANNEL_MAX + 1];
    char id[HD_ID_MAX];
    char conn[48]; /* ACKED: the acker's connection, "<node>-<id>" */
} rcpt_mail_t;

hd_rcpt_t *hd_rcpt_new(hd_worker_t *w, uint64_t conn_id, hd_rcpt_cb cb, void *owner)
{
    hd_rcpt_t *r = hd_calloc(1, sizeof(*r));
    r->refs = 1;
    r->worker = w;
    r->owner = owner;
    r->cb = cb;
    r->conn_id = conn_id;
    return r;
}

/* On the publisher's worker: to the connection if it is still there, else nowhere. */
static void on_mail(hd_worker_t *w, hd_msg_t *msg)
{
    (void)w;
    rcpt_mail_t *mail = (rcpt_mail_t *)msg;
    hd_rcpt_t *to = mail->to;
    if (to->owner)
        to->cb(to->owner, mail->status, mail->channel, mail->id, mail->member,
               mail->status == HD_RCPT_ACKED ? mail->conn : NULL);
    hd_rcpt_unref(to);
    free(mail->member);
    free(mail);
}

static rcpt_mail_t *mail_new(hd_rcpt_t *to, int status, const char *channel, uint64_t epoch,
                             uint64_t seq)
{
    rcpt_mail_t *mail = hd_calloc(1, sizeof(*mail));
    mail->base.cb = on_mail;
    mail->to = hd_rcpt_ref(to);
    mail->status = status;
    snprintf(mail->channel, sizeof(mail->channel), "%s", channel);
    hd_id_format(mail->id, sizeof(mail->id), epoch, seq);
    return mail;
}

void hd_rcpt_delivered_(hd_message_t *m, uint64_t conn_id)
{
    if (conn_id == m->rcpt->conn_id)
        return; /* the publisher's own copy says nothing about the others */
    if (__atomic_exchange_n(&m->rcpt_done, 1, __ATOMIC_RELAXED))
        return; /* another subscriber (another worker) was first */
    rcpt_mail_t *mail = mail_new(m->rcpt, HD_RCPT_DELIVERED, m->channel, m->epoch, m->seq);
    hd_worker_post(m->rcpt->worker, &mail->base);
}

void hd_rcpt_acked(hd_rcpt_t *to, const char *channel, uint64_t epoch, uint64_t seq,
                   const char *member_json, uint64_t conn_id)
{
    rcpt_mail_t *mail = mail_new(to, HD_RCPT_ACKED, channel, epoch, seq);
    mail->member = member_json ? hd_strndup(member_json, strlen(member_json)) : NULL;
    snprintf(mail->conn, sizeof(mail->conn), "%s-%llx", hd_presence_node(),
             (unsigned long long)conn_id);
    hd_worker_post(to->worker, &mail->base);
}
