/* SPDX-License-Identifier: MIT */
/*
 * response.c: a webhook receiver's answer, read with llhttp (HTTP_RESPONSE). Pure: the client
 * (client.c) feeds it what the socket gave. For a webhook only the status, whether the
 * connection may be kept and Retry-After (kept for the retry's wait) matter: the body is counted
 * and discarded; an authorize hook's answer keeps it (keep_body). Either way it is refused past
 * HK_RESPONSE_BODY_MAX, so a receiver cannot make herald buffer more than that. Interim 1xx
 * answers are skipped. Fuzzed by tests/fuzz/fuzz_webhook_response.c.
 */
#include "internal.h"

#include <string.h>
#include <strings.h>

/* Header names are matched for Retry-After only: kept up to 15 bytes, in as many pieces as
 * llhttp gives them. Trailers (after a chunked body) are not the answer's head: ignored. */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    hk_response_t *r = p->data;
    if (r->has_head)
        return 0;
    if (r->name_len + len < sizeof(r->name)) {
        memcpy(r->name + r->name_len, at, len);
        r->name_len = (uint8_t)(r->name_len + len);
    } else {
        r->name_len = sizeof(r->name); /* too long to be it */
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    hk_response_t *r = p->data;
    if (r->has_head)
        return 0;
    r->is_retry_after = r->name_len == 11 && strncasecmp(r->name, "retry-after", 11) == 0;
    r->name_len = 0;
    if (r->is_retry_after)
        r->retry_after_len = 0; /* the last one counts */
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    hk_response_t *r = p->data;
    if (!r->is_retry_after || r->has_head)
        return 0;
    if (r->retry_after_len + len < sizeof(r->retry_after)) {
        memcpy(r->retry_after + r->retry_after_len, at, len);
        r->retry_after_len = (uint8_t)(r->retry_after_len + len);
    } else {
        r->retry_after_len = sizeof(r->retry_after);
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    hk_response_t *r = p->data;
    int status = (int)p->status_code;
    r->is_retry_after = 0;
    if (r->retry_after_len < sizeof(r->retry_after))
        r->retry_after[r->retry_after_len] = '\0';
    else
        r->retry_after[0] = '\0';
    if (status < 100 || status > 999)
        return -1; /* "HTTP/1.1 \r\n": no status is no answer */
    if (status < 200) {
        r->retry_after[0] = '\0'; /* an interim answer's headers are not the answer's */
        r->retry_after_len = 0;
        return 0; /* interim: the final answer follows */
    }
    r->status = status;
    r->has_head = 1;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    hk_response_t *r = p->data;
    if (r->body_bytes + len > HK_RESPONSE_BODY_MAX) {
        r->body_bytes += len;
        return -1;
    }
    if (r->keep_body) {
        r->body = hd_realloc(r->body, r->body_bytes + len + 1);
        memcpy(r->body + r->body_bytes, at, len);
        r->body[r->body_bytes + len] = '\0';
    }
    r->body_bytes += len;
    return 0;
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
    r->settings.on_header_field = on_header_field;
    r->settings.on_header_field_complete = on_header_field_complete;
    r->settings.on_header_value = on_header_value;
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_body = on_body;
    r->settings.on_message_complete = on_message_complete;
    llhttp_init(&r->parser, HTTP_RESPONSE, &r->settings);
    r->parser.data = r;
}

void hk_response_dispose(hk_response_t *r)
{
    free(r->body);
    r->body = NULL;
}

char *hk_response_take_body(hk_response_t *r, size_t *len)
{
    char *b = r->body;
    *len = b ? r->body_bytes : 0;
    r->body = NULL;
    return b;
}

static int failed(hk_response_t *r)
{
    r->is_failed = 1;
    return HK_RESP_ERROR;
}

int hk_response_feed_some(hk_response_t *r, const char *data, size_t len, size_t *used)
{
    *used = 0;
    if (r->is_failed)
        return HK_RESP_ERROR;
    if (r->is_done)
        return HK_RESP_DONE;
    if (len == 0)
        return HK_RESP_MORE;
    r->has_bytes = 1;
    llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
    if (e == HPE_PAUSED && r->is_done) {
        /* the answer ends here (on_message_complete paused the parser): what follows is the
         * caller's (the next answer on a pipelined connection) */
        *used = (size_t)(llhttp_get_error_pos(&r->parser) - data);
        return HK_RESP_DONE;
    }
    if (e != HPE_OK)
        return failed(r);
    *used = len;
    return HK_RESP_MORE;
}

int hk_response_feed(hk_response_t *r, const char *data, size_t len)
{
    if (r->is_done && !r->is_failed)
        return len ? failed(r) : HK_RESP_DONE;
    size_t used;
    int rc = hk_response_feed_some(r, data, len, &used);
    /* bytes after the answer: a receiver talking out of turn; keep nothing of it */
    if (rc == HK_RESP_DONE && used < len)
        return failed(r);
    return rc;
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

/* ---- Retry-After ---- */

static int digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT": seconds since the epoch, or -1. */
static int64_t imf_fixdate(const char *s, size_t n)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    static const char *const wdays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned day, year, hh, mm, ss, mon = 0;
    if (n != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
        s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
        return -1;
    int wd_ok = 0;
    for (int i = 0; i < 7; i++)
        wd_ok |= memcmp(s, wdays[i], 3) == 0;
    for (unsigned i = 0; i < 12; i++) {
        if (memcmp(s + 8, months + 3 * i, 3) == 0)
            mon = i + 1;
    }
    if (!wd_ok || mon == 0 || digits(s + 5, 2, &day) < 0 || digits(s + 12, 4, &year) < 0 ||
        digits(s + 17, 2, &hh) < 0 || digits(s + 20, 2, &mm) < 0 || digits(s + 23, 2, &ss) < 0 ||
        day < 1 || day > mdays[mon - 1] || hh > 23 || mm > 59 || ss > 60 || year < 1970)
        return -1;
    return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
}

int hk_retry_after_parse(const char *v, size_t len, uint64_t now_ms, uint64_t *out_ms)
{
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len == 0)
        return -1;
    if (v[0] >= '0' && v[0] <= '9') {
        uint64_t sec = 0;
        for (size_t i = 0; i < len; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -1;
            if (sec < UINT32_MAX)
                sec = sec * 10 + (uint64_t)(v[i] - '0');
        }
        if (sec > UINT32_MAX)
            sec = UINT32_MAX;
        *out_ms = sec * 1000;
        return 0;
    }
    int64_t t = imf_fixdate(v, len);
    if (t < 0)
        return -1;
    uint64_t at_ms = (uint64_t)t * 1000;
    *out_ms = at_ms > now_ms ? at_ms - now_ms : 0;
    if (*out_ms > (uint64_t)UINT32_MAX * 1000) /* a date centuries ahead: clamped likewise */
        *out_ms = (uint64_t)UINT32_MAX * 1000;
    return 0;
}
