/* SPDX-License-Identifier: MIT */
/*
 * fuzz_redis.c: libFuzzer harness for the Redis bridge's reply parsing (broker/redis_reply.c).
 * The input is RESP bytes as Redis would send them: hiredis's reader turns them into reply
 * trees, and every tree goes through each parser of the bridge, as the answer to herald_read,
 * to herald_publish_batch (as many messages as the array says) and, for a string, as a pub/sub
 * payload and as a delivery receipt heard on P rc:<node> (hd_rcpt_parse). Checked: what a parser
 * accepts is whole and clean (every message has a valid id, a content type hd_content_type_valid
 * accepts and the channel asked for; every text wire form of it is valid UTF-8, and its SSE JSON
 * form one event whose data is a JSON object, the message object with its id for a message:
 * wire_check.h), what it refuses leaves nothing allocated (ASan/LSan) and no message changed.
 */
#include "broker/redis_reply.h"
#include "herald/utf8.h"
#include "wire_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "resp_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_message(const hd_message_t *m, const char *channel)
{
    uint64_t epoch, seq;
    CHECK(strcmp(m->channel, channel) == 0);
    if (m->kind != HD_MSG_NORMAL) /* a live-only event ("~e", "~j", "~l"): no id */
        CHECK(m->id_len == 0 && m->seq == 0 && m->kind <= HD_MSG_LEAVE);
    else
        CHECK(hd_id_parse(m->id, m->id_len, &epoch, &seq) == 0 && epoch == m->epoch &&
              seq == m->seq);
    CHECK(hd_content_type_valid(m->content_type, strlen(m->content_type)));
    if (m->rcpt) { /* a receipt tag: an address whose tag reads back the same */
        char tag[HD_RCPT_TAG_MAX];
        size_t n = hd_rcpt_tag(m->rcpt, tag);
        hd_rcpt_t *again = hd_rcpt_address(tag, n);
        CHECK(m->rcpt->worker == NULL && again && again->conn_id == m->rcpt->conn_id &&
              strcmp(again->node, m->rcpt->node) == 0);
        hd_rcpt_unref(again);
    }
    /* Every text form herald sends of it (SSE events, poll JSON) is valid UTF-8. */
    static const int text_fmts[] = {HD_FMT_SSE, HD_FMT_SSE_NAMED, HD_FMT_JSON, HD_FMT_SSE_JSON};
    for (size_t i = 0; i < sizeof(text_fmts) / sizeof(text_fmts[0]); i++) {
        hd_buf_t *b = hd_message_encode(m, text_fmts[i]);
        CHECK(hd_utf8_valid(b->data, b->len));
        hd_buf_unref(b);
    }
    wire_check_t w;
    wire_check_init(&w, WIRE_SSE_JSON, "fuzz_redis: SSE JSON form");
    w.state = WIRE_BODY; /* the event alone, without a response head */
    hd_buf_t *b = hd_message_encode(m, HD_FMT_SSE_JSON);
    wire_check_feed(&w, b->data, b->len);
    CHECK(w.events == 1);
    hd_buf_unref(b);
    wire_check_dispose(&w);
}

static void try_reply(const redisReply *rep)
{
    static const char channel[] = "fz";
    hd_redis_read_t res;
    if (hd_redis_parse_read(channel, 2, rep, &res) == 0) {
        for (size_t i = 0; i < res.n; i++)
            check_message(res.msgs[i], channel);
        CHECK(strlen(res.last_id) < HD_ID_MAX);
        hd_redis_read_dispose(&res);
    } else {
        CHECK(res.n == 0 && res.msgs == NULL);
    }
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 && rep->elements <= 64) {
        size_t n = rep->elements - 1;
        hd_message_t *msgs[64];
        for (size_t i = 0; i < n; i++)
            msgs[i] = hd_message_new(channel, 2, "", "x", 1);
        if (hd_redis_parse_publish(rep, msgs, n) == 0) {
            for (size_t i = 0; i < n; i++)
                check_message(msgs[i], channel);
        } else {
            for (size_t i = 0; i < n; i++)
                CHECK(msgs[i]->id_len == 0 && msgs[i]->seq == 0);
        }
        for (size_t i = 0; i < n; i++)
            hd_message_unref(msgs[i]);
    }
    if (rep->type == REDIS_REPLY_STRING) {
        hd_message_t *m = hd_redis_parse_pubsub(channel, 2, rep->str, rep->len);
        if (m) {
            check_message(m, channel);
            hd_message_unref(m);
        }
        hd_rcpt_text_t t;
        if (hd_rcpt_parse(rep->str, rep->len, &t) == 0) {
            /* every part inside the text, the channel valid, a member one JSON object */
            const char *end = rep->str + rep->len;
            CHECK(t.status == HD_RCPT_DELIVERED || t.status == HD_RCPT_ACKED);
            CHECK(hd_channel_name_valid(t.channel, t.channel_len) &&
                  t.channel + t.channel_len <= end);
            CHECK((t.status == HD_RCPT_ACKED) == (t.acker != NULL));
            CHECK(!t.acker || (t.acker_len < 48 && t.acker + t.acker_len <= end));
            CHECK(!t.member || (t.member[0] == '{' && t.member + t.member_len == end));
        } else {
            CHECK(t.channel == NULL && t.acker == NULL && t.member == NULL);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    resp_each_reply(data, size, try_reply);
    return 0;
}
