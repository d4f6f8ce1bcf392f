/* SPDX-License-Identifier: MIT */
/*
 * response.c: a webhook receiver's answer, read with llhttp (HTTP_RESPONSE). Pure: the client
 * (client.c) feeds it what the socket gave. Only the status and whether the connection may be
 * kept matter; the body is counted and discarded, and refused past HK_RESPONSE_BODY_MAX, so a
 * receiver cannot make herald buffer anything. Interim 1xx answers are skipped. Fuzzed by
 * tests/fuzz/fuzz_webhook_response.c.
 */
#include "internal.h"

#include <string.h>

static int on_headers_complete(llhttp_t *p)
{
    hk_response_t *r = p->data;
    int status = (int)p->status_code;
    if (status < 100 || status > 999)
        return -1; /* "HTTP/1.1 \r\n": no status is no answer */
    if (status < 200)
        return 0; /* interim: the final answer follows */
    r->status = status;
    r->has_head = 1;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    hk_response_t *r = p->data;
    (void)at;
    r->body_bytes += len;
    return r->body_bytes > HK_RESPONSE_BODY_MAX ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    hk_response_t *r = p->data;
    if (!r->has_head)
        return 0; /* the end of a 1xx */
    r->is_done = 1;
    r->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    return HPE_PAUSED; /* nothing may follow an answer we did not ask for */
}

void hk_response_init(hk_response_t *r)
{
    memset(r, 0, sizeof(*r));
    llhttp_settings_init(&r->settings);
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_body = on_body;
    r->settings.on_message_complete = on_message_complete;
    llhttp_init(&r->parser, HTTP_RESPONSE, &r->settings);
    r->parser.data = r;
}

static int failed(hk_response_t *r)
{
    r->is_failed = 1;
    return HK_RESP_ERROR;
}

int hk_response_feed(hk_response_t *r, const char *data, size_t len)
{
    if (r->is_failed)
        return HK_RESP_ERROR;
    if (r->is_done)
        return len ? failed(r) : HK_RESP_DONE;
    if (len == 0)
        return HK_RESP_MORE;
    r->has_bytes = 1;
    llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
    if (e == HPE_PAUSED && r->is_done) {
        size_t used = (size_t)(llhttp_get_error_pos(&r->parser) - data);
        /* bytes after the answer: a receiver talking out of turn; keep nothing of it */
        if (used < len)
            return failed(r);
        return HK_RESP_DONE;
    }
    if (e != HPE_OK)
        return failed(r);
    return HK_RESP_MORE;
}

int hk_response_eof(hk_response_t *r)
{
    if (r->is_failed)
        return HK_RESP_ERROR;
    if (r->is_done)
        return HK_RESP_DONE;
    if (!r->has_bytes)
        return failed(r);
    llhttp_errno_t e = llhttp_finish(&r->parser);
    if ((e == HPE_OK || e == HPE_PAUSED) && r->is_done) {
        r->keep_alive = 0;
        return HK_RESP_DONE;
    }
    return failed(r);
}
