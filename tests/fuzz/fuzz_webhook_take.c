/* SPDX-License-Identifier: MIT */
/*
 * fuzz_webhook_take.c: libFuzzer harness for what the webhook sender reads from Redis
 * (src/hooks/durable.c): herald_hk_take's answer, {pending, dead letters, then per entry its
 * stream id, event id, type, created, attempts, first attempt, body}. The input is RESP bytes as
 * Redis would send them, turned into reply trees by hiredis's reader. Checked on every tree the
 * parsers accept: the entry is one delivery.c can copy into its fixed fields without overflow
 * (stream id of digits and '-' under HK_SID_MAX, event id under 40 bytes without CR, LF or NUL,
 * a type of [a-z._] under 24), its body the element's bytes exactly; and that a tree refused is
 * refused whole (no count, no entry). The same tree, when an array of groups of four, as
 * herald_hk_ptake's presence and occupancy events: one accepted makes an event id ("evt_" +
 * its stream id) that fits 40 bytes, a valid channel and a body that is a JSON object. And,
 * when an array of groups of five, as herald_hk_ntake's claimed records of dead nodes
 * (notify_rec.c): one accepted has an entry id of digits and '-' under HK_SID_MAX and makes a
 * disconnect event that is a JSON object naming that connection, with reason node_lost.
 */
#include "hooks/internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "resp_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_entry(const redisReply *const *el)
{
    hk_entry_t e;
    if (hk_entry_parse(el, &e) < 0)
        return;
    CHECK(e.sid_len > 0 && e.sid_len < HK_SID_MAX);
    for (size_t i = 0; i < e.sid_len; i++)
        CHECK((e.sid[i] >= '0' && e.sid[i] <= '9') || e.sid[i] == '-');
    CHECK(e.id_len > 0 && e.id_len < 40);
    CHECK(!memchr(e.id, '\r', e.id_len) && !memchr(e.id, '\n', e.id_len) &&
          !memchr(e.id, '\0', e.id_len));
    CHECK(e.type_len > 0 && e.type_len < 24);
    for (size_t i = 0; i < e.type_len; i++)
        CHECK((e.type[i] >= 'a' && e.type[i] <= 'z') || e.type[i] == '.' || e.type[i] == '_');
    CHECK(el[6]->type == REDIS_REPLY_STRING || el[6]->type == REDIS_REPLY_STATUS);
    CHECK(e.body == el[6]->str && e.body_len == el[6]->len);
}

static void try_pev(const redisReply *rep)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % HK_PEV_FIELDS != 0)
        return;
    for (size_t i = 0; i < rep->elements; i += HK_PEV_FIELDS) {
        hk_pev_t ev;
        if (hk_pev_parse((const redisReply *const *)&rep->element[i], &ev) < 0)
            continue;
        CHECK(ev.sid_len > 0 && 4 + ev.sid_len < 40);
        CHECK(hd_channel_name_valid(ev.channel, ev.channel_len));
        hd_buf_t *b = ev.is_channel ? hk_event_channel(ev.channel, ev.channel_len, ev.added, 5)
                                    : hk_event_member(ev.channel, ev.channel_len, ev.added, ev.data,
                                                      ev.data_len, 1796253028175ull);
        CHECK(b != NULL && b->data[0] == '{' && b->data[b->len - 1] == '}');
        hd_buf_unref(b);
    }
}

static void try_nev(const redisReply *rep)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % HK_NEV_FIELDS != 0)
        return;
    for (size_t i = 0; i < rep->elements; i += HK_NEV_FIELDS) {
        const redisReply *const *el = (const redisReply *const *)&rep->element[i];
        char sid[HK_SID_MAX];
        char *json = (char *)"untouched";
        int rc = hk_nev_parse(el, sid, &json);
        if (rc < 0) {
            CHECK(json == NULL);
            continue;
        }
        size_t n = strlen(sid);
        CHECK(n > 0 && n < HK_SID_MAX);
        for (size_t k = 0; k < n; k++)
            CHECK((sid[k] >= '0' && sid[k] <= '9') || sid[k] == '-');
        if (rc > 0) {
            CHECK(json == NULL);
            continue;
        }
        json_t *o = json_loads(json, 0, NULL);
        CHECK(json_is_object(o));
        CHECK(strcmp(json_string_value(json_object_get(o, "type")), "disconnect") == 0);
        CHECK(strcmp(json_string_value(json_object_get(o, "reason")), "node_lost") == 0);
        const char *conn = json_string_value(json_object_get(o, "conn"));
        CHECK(conn && strlen(conn) == el[2]->len && memcmp(conn, el[2]->str, el[2]->len) == 0);
        json_decref(o);
        free(json);
    }
}

static void try_reply(const redisReply *rep)
{
    try_pev(rep);
    try_nev(rep);
    uint64_t pending = 7, dead = 7;
    size_t n = 7;
    if (hk_take_parse(rep, &pending, &dead, &n) < 0) {
        CHECK(n == 7);
        return;
    }
    CHECK(rep->elements == 2 + n * HK_ENTRY_FIELDS);
    for (size_t i = 0; i < n; i++)
        check_entry((const redisReply *const *)&rep->element[2 + i * HK_ENTRY_FIELDS]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    resp_each_reply(data, size, try_reply);
    return 0;
}
