/* SPDX-License-Identifier: MIT */
/*
 * sub.c: subscribers, and the client processes ("kids") that hold them.
 *
 * One sub_t per subscription, in one array per process (no allocation per connection but the
 * bitmap of sequences seen). Per transport:
 *   ws        GET upgrade; after 101 every text/binary frame is one payload; pings answered
 *   sse       GET with Accept: text/event-stream; every "data:" line is one payload
 *   longpoll  herald: GET /poll/CH for the current position, then GET /lp/CH?since=ID&timeout=S
 *             in a loop, `next` of each answer feeding the following request;
 *             nchan: GET /sub?id=CH in a loop, echoing Last-Modified and Etag back as
 *             If-Modified-Since and If-None-Match; a closed keep-alive connection reconnects
 *   poll      herald: GET /poll/CH?since=ID every --poll-interval
 *   raw       the floor: newline-terminated payloads on plain TCP
 *   chat      (ws, the chat scenario) herald: GET /ws, {"op":"subscribe"} to the member's room,
 *             subscribed once {"type":"subscribed"} comes back, messages in {"type":"message"}
 *             envelopes, its publishes {"op":"publish"} acknowledged by {"type":"published"};
 *             nchan: GET /chat?id=ROOM on an nchan_pubsub location, where a data frame the
 *             client sends is published to the room (no acknowledgement) and every message of
 *             the room, the member's own included, comes back as one frame; with --typing
 *             members also publish ephemeral messages, with --presence they subscribe asking
 *             join and leave events, with --churn they leave (unsubscribe) and join again
 * Subscriber i connects to node i % N (several --url).
 * Every payload is checked against the subscriber's bitmap: new, duplicate or out of order, and
 * its latency (receipt - intended send time) goes into the process's histogram in shared memory.
 */
#define _GNU_SOURCE /* memmem */
#include "sub.h"

#include <jansson.h>
#include <llhttp.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define ACC_MAX   (16u << 20)
#define SEQ_LIMIT (1ull << 27)
#define WS_KEY    "dGhlIHNhbXBsZSBub25jZQ=="

typedef struct kid_s {
    const opts_t *o;
    shared_t *sh;
    kid_stats_t *st;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_timer_t chat_timer; /* chat: publishes what fell due, every millisecond */
    uint64_t chat_next;    /* chat: the next message of the global schedule */
    uint64_t typing_next;  /* chat --typing: the next ephemeral publish of the schedule */
    uint64_t churn_next;   /* chat --churn: the next member to leave and join again */
    sub_t *subs;
    uint32_t first, count, next, inflight;
    uint64_t last_expected_ns;
    double tokens;
    uint64_t last_token_ns;
    char chan_buf[HD_CHANNEL_MAX + 1];
} kid_t;

static kid_t kid;
static llhttp_settings_t http_settings;
static const bconn_ops_t sub_ops;

static void launch(void);
static void start_sub(sub_t *s);

/* ---- receiving payloads ---- */

/*
 * Counts the payload p[0..n): new, duplicate (by its sequence), and out of order when `order`
 * is below the highest seen: the payload's sequence, or in chat herald's id (members publish in
 * turn from different processes, so a room's sequence reaches herald in its order only while
 * messages are further apart than a process can lag; herald's order is its ids').
 */
static void record(sub_t *s, const char *p, size_t n, uint64_t order, uint64_t now)
{
    kid_stats_t *st = kid.st;
    uint32_t ch;
    uint64_t seq, ns;
    st->bytes += n;
    if (payload_parse(p, n, &ch, &seq, &ns) != 0 || seq == 0 || seq >= SEQ_LIMIT) {
        st->bad++;
        return;
    }
    st->delivered++;
    uint32_t w = (uint32_t)(seq / 64);
    if (w >= s->seen_words) {
        uint32_t nw = s->seen_words ? s->seen_words : 4;
        while (nw <= w)
            nw *= 2;
        s->seen = realloc(s->seen, nw * sizeof(uint64_t));
        memset(s->seen + s->seen_words, 0, (nw - s->seen_words) * sizeof(uint64_t));
        s->seen_words = nw;
    }
    uint64_t bit = 1ull << (seq % 64);
    if (s->seen[w] & bit) {
        st->dup++;
        return;
    }
    s->seen[w] |= bit;
    s->unique++;
    st->unique++;
    if (!order)
        order = seq;
    if (order < s->max_order)
        st->ooo++;
    else
        s->max_order = order;
    hist_record(&st->lat, now > ns ? now - ns : 0);
}

static int acc_append(sub_t *s, const char *p, size_t n)
{
    if (s->acc_len + n > ACC_MAX)
        return -1;
    if (s->acc_len + n > s->acc_cap) {
        uint32_t cap = s->acc_cap ? s->acc_cap : 256;
        while (cap < s->acc_len + n)
            cap *= 2;
        s->acc = realloc(s->acc, cap);
        s->acc_cap = cap;
    }
    memcpy(s->acc + s->acc_len, p, n);
    s->acc_len += (uint32_t)n;
    return 0;
}

/* Releases the accumulator once it is empty and large, so idle subscribers stay small. */
static void acc_trim(sub_t *s)
{
    if (s->acc_len == 0 && s->acc_cap > 4096) {
        free(s->acc);
        s->acc = NULL;
        s->acc_cap = 0;
    }
}

static void on_line(sub_t *s, const char *p, size_t n, uint64_t now)
{
    if (n && p[n - 1] == '\r')
        n--;
    if (kid.o->transport == TP_RAW) {
        if (n)
            record(s, p, n, 0, now);
        return;
    }
    if (n >= 5 && memcmp(p, "data:", 5) == 0) {
        p += 5;
        n -= 5;
        if (n && *p == ' ') {
            p++;
            n--;
        }
        record(s, p, n, 0, now);
    }
}

/* Splits a byte stream into lines; a partial line waits in the accumulator. */
static void lines_feed(sub_t *s, const char *p, size_t n, uint64_t now)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        if (!nl) {
            if (acc_append(s, p, n) != 0)
                bconn_close(&s->bc, CE_OTHER);
            return;
        }
        size_t len = (size_t)(nl - p);
        if (s->acc_len) {
            if (acc_append(s, p, len) != 0) {
                bconn_close(&s->bc, CE_OTHER);
                return;
            }
            on_line(s, s->acc, s->acc_len, now);
            s->acc_len = 0;
        } else {
            on_line(s, p, len, now);
        }
        p = nl + 1;
        n -= len + 1;
    }
    acc_trim(s);
}

/* Sends one masked frame (a client must mask; a fixed mask: the bench is not a browser). */
static void ws_send(sub_t *s, int opcode, const char *p, size_t n)
{
    char stack[4096], *f = stack;
    size_t hl = n < 126 ? 6 : n < 65536 ? 8 : 14;
    if (hl + n > sizeof(stack))
        f = malloc(hl + n);
    f[0] = (char)(0x80 | opcode);
    if (n < 126) {
        f[1] = (char)(0x80 | n);
    } else if (n < 65536) {
        f[1] = (char)(0x80 | 126);
        f[2] = (char)(n >> 8);
        f[3] = (char)n;
    } else {
        f[1] = (char)(0x80 | 127);
        for (int i = 0; i < 8; i++)
            f[2 + i] = (char)((uint64_t)n >> (56 - 8 * i));
    }
    memset(f + hl - 4, 0x5a, 4);
    for (size_t i = 0; i < n; i++)
        f[hl + i] = (char)(p[i] ^ 0x5a);
    bconn_write(&s->bc, f, hl + n);
    if (f != stack)
        free(f);
}

static int is_chat(void)
{
    return kid.o->sc == SC_CHAT;
}

static void mark_ready(sub_t *s);
static void chat_subscribe(sub_t *s);

/* 1 if p[0..n) holds needle. */
static int has(const char *p, size_t n, const char *needle)
{
    return memmem(p, n, needle, strlen(needle)) != NULL;
}

/* The sequence of herald's id ("id":"EPOCH-SEQ") in a /ws message envelope, 0 without one. */
static uint64_t id_seq(const char *p, size_t n)
{
    const char *q = memmem(p, n, "\"id\":\"", 6), *end = p + n, *dash = NULL;
    if (!q)
        return 0;
    for (q += 6; q < end && *q != '"'; q++)
        if (*q == '-')
            dash = q;
    if (!dash || q >= end || dash + 1 == q)
        return 0;
    uint64_t v = 0;
    for (const char *d = dash + 1; d < q; d++) {
        if (*d < '0' || *d > '9')
            return 0;
        v = v * 10 + (uint64_t)(*d - '0');
    }
    return v;
}

/* A text frame of herald's /ws JSON protocol: the type is the first member. */
static void chat_frame(sub_t *s, const char *p, size_t n, uint64_t now)
{
    static const char tm[] = "{\"type\":\"";
    if (n < sizeof(tm) || memcmp(p, tm, sizeof(tm) - 1) != 0) {
        kid.st->bad++;
        return;
    }
    const char *t = p + sizeof(tm) - 1;
    size_t tn = n - (sizeof(tm) - 1);
    if (tn >= 8 && memcmp(t, "message\"", 8) == 0) {
        record(s, p, n, id_seq(p, n), now);
    } else if (tn >= 10 && memcmp(t, "published\"", 10) == 0) {
        if (has(p, n, "\"ephemeral\":true")) {
            kid.st->typing_ok++;
        } else {
            kid.st->published++;
            __atomic_fetch_add(&kid.sh->published[s->ch], 1, __ATOMIC_RELAXED);
        }
    } else if ((tn >= 10 && memcmp(t, "ephemeral\"", 10) == 0) ||
               (tn >= 5 && memcmp(t, "join\"", 5) == 0) ||
               (tn >= 6 && memcmp(t, "leave\"", 6) == 0)) {
        kid.st->events++;
    } else if (tn >= 16 && memcmp(t, "presence_events\"", 16) == 0) {
        /* joins and leaves of one pass in one frame: each counts (its "type" after the first) */
        for (const char *q = t; (q = memmem(q, n - (size_t)(q - p), "\"type\":", 7)) != NULL;
             q += 7)
            kid.st->events++;
    } else if (tn >= 11 && memcmp(t, "subscribed\"", 11) == 0) {
        if (s->is_churning) {
            s->is_churning = 0;
            kid.st->churns++;
        }
        mark_ready(s);
    } else if (tn >= 13 && memcmp(t, "unsubscribed\"", 13) == 0) {
        if (s->is_churning)
            chat_subscribe(s); /* joins again at once: one leave, one join */
    } else if (tn >= 6 && memcmp(t, "error\"", 6) == 0) {
        kid.st->pub_errors++;
        if (!s->bc.is_ready) {
            kid.st->last_http_status = 0;
            bconn_close(&s->bc, CE_HANDSHAKE);
        }
    } else if (!(tn >= 4 && memcmp(t, "gap\"", 4) == 0) &&
               !(tn >= 5 && memcmp(t, "pong\"", 5) == 0)) {
        kid.st->bad++;
    }
}

/* Parses whole frames from p[0..n); returns how many bytes were consumed. */
static size_t ws_frames(sub_t *s, const char *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (n - off >= 2 && !s->bc.is_closing) {
        const unsigned char *h = (const unsigned char *)p + off;
        int fin = h[0] & 0x80, op = h[0] & 0x0f, masked = h[1] & 0x80;
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (n - off < 4)
                break;
            len = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | h[2 + i];
            hl = 10;
        }
        if (masked)
            hl += 4;
        if (len > ACC_MAX) {
            bconn_close(&s->bc, CE_OTHER);
            return n;
        }
        if (n - off < hl + len)
            break;
        const char *pl = p + off + hl;
        switch (op) {
        case 1:
        case 2:
            if (!fin || masked)
                kid.st->bad++;
            else if (is_chat() && kid.o->tg.kind == TG_HERALD)
                chat_frame(s, pl, (size_t)len, now);
            else
                record(s, pl, (size_t)len, 0, now);
            break;
        case 9:
            ws_send(s, 10, pl, (size_t)len);
            break;
        case 8:
            ws_send(s, 8, pl, len >= 2 ? 2 : 0);
            bconn_close(&s->bc, CE_CLOSED);
            break;
        case 10:
            break;
        default:
            kid.st->bad++;
            break;
        }
        off += hl + (size_t)len;
    }
    return off;
}

static void ws_feed(sub_t *s, const char *p, size_t n, uint64_t now)
{
    if (s->acc_len == 0) {
        size_t used = ws_frames(s, p, n, now);
        if (used < n && acc_append(s, p + used, n - used) != 0)
            bconn_close(&s->bc, CE_OTHER);
        return;
    }
    if (acc_append(s, p, n) != 0) {
        bconn_close(&s->bc, CE_OTHER);
        return;
    }
    size_t used = ws_frames(s, s->acc, s->acc_len, now);
    memmove(s->acc, s->acc + used, s->acc_len - used);
    s->acc_len -= (uint32_t)used;
    acc_trim(s);
}

/* ---- requests ---- */

static const char *chan(const sub_t *s)
{
    chan_name(kid.o, s->ch, kid.chan_buf, sizeof(kid.chan_buf));
    return kid.chan_buf;
}

/* The Authorization line subscriber s sends: its own token of --tokens, else --token's. */
static const char *sub_auth(const sub_t *s, char *buf, size_t len)
{
    const opts_t *o = kid.o;
    if (!o->n_tokens)
        return o->sub_auth;
    snprintf(buf, len, "Authorization: Bearer %s\r\n", o->tokens[s->idx % o->n_tokens]);
    return buf;
}

static void send_request(sub_t *s)
{
    const opts_t *o = kid.o;
    const target_t *tg = target_of(o, s->idx);
    char req[1024 + sizeof(o->sub_auth)], auth_buf[sizeof(o->sub_auth)];
    const char *auth = sub_auth(s, auth_buf, sizeof(auth_buf));
    int n = 0;
    int nchan = tg->kind == TG_NCHAN;
    switch (o->transport) {
    case TP_WS:
        n = snprintf(req, sizeof(req),
                     "GET %s%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     is_chat() ? (nchan ? "/chat?id=" : "/ws")
                     : nchan   ? "/sub?id="
                               : "/ws/",
                     is_chat() && !nchan ? "" : chan(s), tg->host,
                     is_chat() && !nchan ? o->auth : auth);
        break;
    case TP_SSE:
        n = snprintf(req, sizeof(req),
                     "GET %s%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n",
                     nchan ? "/sub?id=" : "/sse/", chan(s), tg->host, auth);
        break;
    case TP_LONGPOLL:
        if (nchan) {
            char cond[160] = "";
            if (s->lastmod[0])
                snprintf(cond, sizeof(cond), "If-Modified-Since: %s\r\nIf-None-Match: %s\r\n",
                         s->lastmod, s->since);
            n = snprintf(req, sizeof(req), "GET /sub?id=%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", chan(s),
                         tg->host, cond);
        } else if (!s->since[0]) {
            s->is_first_poll = 1;
            n = snprintf(req, sizeof(req), "GET /poll/%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", chan(s),
                         tg->host, auth);
        } else {
            n = snprintf(req, sizeof(req),
                         "GET /lp/%s?since=%s&timeout=%u HTTP/1.1\r\nHost: %s\r\n%s\r\n", chan(s),
                         s->since, o->lp_timeout_s, tg->host, auth);
        }
        break;
    case TP_POLL:
        s->is_first_poll = !s->since[0];
        n = snprintf(req, sizeof(req), "GET /poll/%s%s%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", chan(s),
                     s->since[0] ? "?since=" : "", s->since, tg->host, auth);
        break;
    default:
        return;
    }
    bconn_write(&s->bc, req, (size_t)n);
}

/* chat on herald: {"op":"subscribe"} to the member's room (with presence events if asked). */
static void chat_subscribe(sub_t *s)
{
    char req[96 + HD_CHANNEL_MAX];
    int n = snprintf(req, sizeof(req), "{\"op\":\"subscribe\",\"channel\":\"%s\"%s}", chan(s),
                     kid.o->presence ? ",\"presence\":true" : "");
    ws_send(s, 1, req, (size_t)n);
}

static void mark_ready(sub_t *s)
{
    if (s->bc.is_ready)
        return;
    uint64_t now = now_ns();
    s->bc.is_ready = 1;
    s->state = S_LIVE;
    kid.st->ready++;
    kid.st->last_ready_ns = now;
    hist_record(&kid.st->conn, now - s->t_start);
    uint64_t go = kid.sh->go_ns;
    if (kid.sh->phase >= PH_GO && go && now > go) {
        s->is_late = 1;
        kid.st->late++;
    }
    kid.inflight--;
    launch();
}

/* ---- HTTP responses ---- */

static sub_t *sub_of(llhttp_t *p)
{
    return hd_container_of(p, sub_t, http);
}

static int on_message_begin(llhttp_t *p)
{
    sub_t *s = sub_of(p);
    s->acc_len = 0;
    s->hname_len = s->hval_len = 0;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    sub_t *s = sub_of(p);
    size_t room = sizeof(s->hname) - 1 - s->hname_len;
    if (n > room)
        n = room;
    memcpy(s->hname + s->hname_len, at, n);
    s->hname_len += (uint8_t)n;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    sub_t *s = sub_of(p);
    size_t room = sizeof(s->hval) - 1 - s->hval_len;
    if (n > room)
        n = room;
    memcpy(s->hval + s->hval_len, at, n);
    s->hval_len += (uint8_t)n;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    sub_t *s = sub_of(p);
    s->hname[s->hname_len] = s->hval[s->hval_len] = '\0';
    if (s->status == 200 || p->status_code == 200) {
        if (strcasecmp(s->hname, "last-modified") == 0)
            snprintf(s->lastmod, sizeof(s->lastmod), "%s", s->hval);
        else if (strcasecmp(s->hname, "etag") == 0)
            snprintf(s->since, sizeof(s->since), "%s", s->hval);
    }
    s->hname_len = s->hval_len = 0;
    return 0;
}

static int fail_http(sub_t *s)
{
    kid.st->last_http_status = s->status;
    bconn_close(&s->bc, CE_HTTP);
    return -1;
}

static int on_headers_complete(llhttp_t *p)
{
    sub_t *s = sub_of(p);
    s->status = (uint16_t)p->status_code;
    switch (kid.o->transport) {
    case TP_WS:
        if (s->status != 101) {
            kid.st->last_http_status = s->status;
            bconn_close(&s->bc, s->status >= 200 && s->status < 300 ? CE_HANDSHAKE : CE_HTTP);
            return -1;
        }
        if (is_chat() && kid.o->tg.kind == TG_HERALD) {
            /* herald's /ws answers at once: the member is ready when its room is subscribed */
            chat_subscribe(s);
            return 0;
        }
        mark_ready(s);
        return 0;
    case TP_SSE:
        if (s->status != 200)
            return fail_http(s);
        mark_ready(s);
        return 0;
    default:
        if (s->status != 200 && s->status != 304 && s->status != 408)
            return fail_http(s);
        return 0;
    }
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    sub_t *s = sub_of(p);
    if (kid.o->transport == TP_SSE) {
        lines_feed(s, at, n, now_ns());
        return s->bc.is_closing ? -1 : 0;
    }
    if (acc_append(s, at, n) != 0) {
        bconn_close(&s->bc, CE_OTHER);
        return -1;
    }
    return 0;
}

static void on_poll_timer(uv_timer_t *t)
{
    sub_t *s = t->data;
    if (s->state == S_LIVE && !s->bc.is_closing)
        send_request(s);
}

/* A herald poll answer: {"messages":[{"data":..},..],"next":ID}. */
static void herald_poll_answer(sub_t *s, uint64_t now)
{
    json_error_t jerr;
    json_t *root = json_loadb(s->acc, s->acc_len, 0, &jerr);
    if (!root) {
        kid.st->bad++;
        return;
    }
    if (!s->is_first_poll) {
        json_t *msgs = json_object_get(root, "messages");
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m)
        {
            json_t *d = json_object_get(m, "data");
            if (json_is_string(d))
                record(s, json_string_value(d), json_string_length(d), 0, now);
            else
                kid.st->bad++;
        }
    }
    const char *next = json_string_value(json_object_get(root, "next"));
    if (next)
        snprintf(s->since, sizeof(s->since), "%s", next);
    json_decref(root);
}

static int on_message_complete(llhttp_t *p)
{
    sub_t *s = sub_of(p);
    const opts_t *o = kid.o;
    if (o->transport != TP_LONGPOLL && o->transport != TP_POLL)
        return 0;
    uint64_t now = now_ns();
    int was_first = s->is_first_poll;
    if (o->tg.kind == TG_NCHAN) {
        if (s->status == 200)
            record(s, s->acc, s->acc_len, 0, now);
    } else if (s->status == 200) {
        herald_poll_answer(s, now);
    }
    s->acc_len = 0;
    acc_trim(s);
    s->is_first_poll = 0;
    if (was_first || (o->tg.kind == TG_NCHAN && !s->bc.is_ready))
        mark_ready(s);
    if (!llhttp_should_keep_alive(p)) {
        s->want_reconnect = 1;
        bconn_close(&s->bc, -1);
        return -1;
    }
    if (o->transport == TP_POLL && !was_first) {
        if (!s->timer) {
            s->timer = malloc(sizeof(*s->timer));
            uv_timer_init(&kid.loop, s->timer);
            s->timer->data = s;
        }
        uv_timer_start(s->timer, on_poll_timer, o->poll_interval_ms, 0);
    } else {
        send_request(s);
    }
    return 0;
}

/* ---- connection events ---- */

static void on_sub_connect(bconn_t *c)
{
    sub_t *s = (sub_t *)c;
    if (kid.o->transport == TP_RAW) {
        char line[16];
        int n = snprintf(line, sizeof(line), "%u\n", s->ch);
        bconn_write(c, line, (size_t)n);
        mark_ready(s);
        return;
    }
    llhttp_init(&s->http, HTTP_RESPONSE, &http_settings);
    s->is_upgraded = 0;
    s->acc_len = 0;
    send_request(s);
    /* nchan's first long poll has nothing to wait for: it is subscribed once it is sent */
    if (kid.o->transport == TP_LONGPOLL && kid.o->tg.kind == TG_NCHAN && !s->lastmod[0])
        mark_ready(s);
}

static void on_sub_data(bconn_t *c, const char *p, size_t n)
{
    sub_t *s = (sub_t *)c;
    uint64_t now = now_ns();
    if (kid.o->transport == TP_RAW) {
        lines_feed(s, p, n, now);
        return;
    }
    if (s->is_upgraded) {
        ws_feed(s, p, n, now);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&s->http, p, n);
    if (e == HPE_OK || c->is_closing)
        return;
    if (e == HPE_PAUSED_UPGRADE && s->status == 101) {
        s->is_upgraded = 1;
        const char *rest = llhttp_get_error_pos(&s->http);
        if (rest && rest >= p && rest < p + n)
            ws_feed(s, rest, (size_t)(p + n - rest), now);
        return;
    }
    bconn_close(c, CE_HTTP);
}

static void on_sub_closed(bconn_t *c, int cause, int after_ready)
{
    sub_t *s = (sub_t *)c;
    kid_stats_t *st = kid.st;
    s->acc_len = 0;
    acc_trim(s);
    if (kid.sh->phase == PH_STOP) {
        s->state = S_DEAD;
        return;
    }
    if (!after_ready) {
        st->failed++;
        st->err[cause >= 0 ? cause : CE_CLOSED]++;
        s->state = S_DEAD;
        kid.inflight--;
        launch();
        return;
    }
    int is_poll = kid.o->transport == TP_LONGPOLL || kid.o->transport == TP_POLL;
    if (is_poll && (s->want_reconnect || cause == CE_CLOSED || cause == CE_RESET)) {
        /* a keep-alive connection ended: a poller simply asks again on a new one */
        s->want_reconnect = 0;
        st->reconnects++;
        int r = bconn_connect(&s->bc, &kid.loop, target_of(kid.o, s->idx),
                              s->idx % kid.o->src_addrs, &sub_ops);
        s->bc.is_ready = 1;
        if (r == 0)
            return;
        cause = r;
    }
    st->disconnects++;
    st->err[cause >= 0 ? cause : CE_CLOSED]++;
    s->state = S_DEAD;
    if (kid.o->sc == SC_KICK && kid.sh->phase == PH_GO) {
        /* kick: how long after the order each connection ended */
        uint64_t now = now_ns();
        hist_record(&st->lat, now - kid.sh->go_ns);
        st->last_close_ns = now;
    }
}

static const bconn_ops_t sub_ops = {on_sub_connect, on_sub_data, on_sub_closed};

/* ---- subscribers carried by HTTP/2 streams (h2sub.c) ---- */

void sub_stream_ready(sub_t *s)
{
    mark_ready(s);
}

void sub_stream_data(sub_t *s, const char *p, size_t n)
{
    lines_feed(s, p, n, now_ns());
}

void sub_stream_closed(sub_t *s, int cause, int status)
{
    if (s->state == S_DEAD)
        return;
    if (status)
        kid.st->last_http_status = (uint64_t)status;
    s->acc_len = 0;
    on_sub_closed(&s->bc, cause, s->bc.is_ready);
}

/* Opens the HTTP/2 connection of subscribers [first, first + n) of this process. */
static void start_h2(uint32_t first, uint32_t n)
{
    kid_stats_t *st = kid.st;
    uint64_t now = now_ns();
    if (!st->first_start_ns)
        st->first_start_ns = now;
    for (uint32_t i = 0; i < n; i++) {
        sub_t *s = &kid.subs[first + i];
        s->t_start = now;
        s->state = S_CONNECTING;
        st->attempted++;
    }
    sub_t *s0 = &kid.subs[first];
    int r =
        h2_connect(&kid.loop, kid.o, target_of(kid.o, s0->idx), s0->idx % kid.o->src_addrs, s0, n);
    if (r != 0) {
        for (uint32_t i = 0; i < n; i++) {
            kid.subs[first + i].state = S_DEAD;
            st->failed++;
            st->err[r]++;
        }
        return;
    }
    kid.inflight += n;
}

/* ---- the client process ---- */

static void start_sub(sub_t *s)
{
    kid_stats_t *st = kid.st;
    s->t_start = now_ns();
    if (!st->first_start_ns)
        st->first_start_ns = s->t_start;
    st->attempted++;
    int r = bconn_connect(&s->bc, &kid.loop, target_of(kid.o, s->idx), s->idx % kid.o->src_addrs,
                          &sub_ops);
    if (r != 0) {
        st->failed++;
        st->err[r]++;
        s->state = S_DEAD;
        return;
    }
    s->state = S_CONNECTING;
    kid.inflight++;
}

/* Starts connections while fewer than --concurrency are in progress (and the rate allows). */
static void launch(void)
{
    const opts_t *o = kid.o;
    if (kid.sh->phase == PH_STOP)
        return;
    if (o->connect_rate > 0) {
        uint64_t now = now_ns();
        kid.tokens += (double)(now - kid.last_token_ns) / 1e9 * o->connect_rate / kid.sh->n_kids;
        kid.last_token_ns = now;
        if (kid.tokens > 64)
            kid.tokens = 64;
    }
    while (kid.next < kid.count && kid.inflight < o->concurrency) {
        if (o->connect_rate > 0) {
            if (kid.tokens < 1)
                break;
            kid.tokens -= 1;
        }
        if (o->h2_streams) {
            uint32_t n =
                kid.count - kid.next < o->h2_streams ? kid.count - kid.next : o->h2_streams;
            start_h2(kid.next, n);
            kid.next += n;
            continue;
        }
        start_sub(&kid.subs[kid.next++]);
    }
}

static void finish(void)
{
    kid_stats_t *st = kid.st;
    uint64_t expected = 0, lost = 0, extra = 0;
    for (uint32_t i = 0; i < kid.count; i++) {
        sub_t *s = &kid.subs[i];
        if (!s->bc.is_ready || s->is_late)
            continue;
        uint64_t exp = kid.sh->published[s->ch];
        expected += exp;
        if (s->unique < exp)
            lost += exp - s->unique;
        else
            extra += s->unique - exp;
    }
    st->expected = expected;
    st->lost = lost;
    st->extra = extra;
    __atomic_store_n(&st->done, 1, __ATOMIC_RELEASE);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = now_ns();
    uint64_t tmo = (uint64_t)(kid.o->connect_timeout_s * 1e9);
    for (uint32_t i = 0; i < kid.next; i++) {
        sub_t *s = &kid.subs[i];
        if (s->state == S_CONNECTING && !s->bc.is_ready && now - s->t_start > tmo)
            bconn_close(&s->bc, CE_TIMEOUT);
    }
    launch();
    if (kid.sh->phase == PH_GO && now - kid.last_expected_ns > 200000000ull) {
        /* live expectation, so the parent can end the drain as soon as all has arrived */
        uint64_t expected = 0;
        for (uint32_t i = 0; i < kid.count; i++) {
            sub_t *s = &kid.subs[i];
            if (s->bc.is_ready && !s->is_late)
                expected += kid.sh->published[s->ch];
        }
        kid.st->expected = expected;
        kid.last_expected_ns = now;
    }
    if (kid.sh->phase == PH_STOP) {
        finish();
        _exit(0); /* the kernel closes every socket at once */
    }
}

/* Chat: message g of the whole run (g = 0, 1, ...) is due at go + g / rate; it is message
 * g / C + 1 of room g % C, sent by that room's member (g / C) % members, i.e. subscriber
 * room + member * C. Every kid walks the same schedule and sends the messages of its own
 * members, so the rooms' messages leave in turn from each member without any coordination. */
static void chat_publish(sub_t *s, uint32_t room, uint64_t seq, uint64_t ns)
{
    const opts_t *o = kid.o;
    char body[1024];
    char *payload = o->size < sizeof(body) ? body : malloc(o->size + 1);
    payload_format(payload, o->size, room, seq, ns);
    if (o->tg.kind == TG_NCHAN) {
        /* nchan answers nothing to a WebSocket publish: a sent message counts as published */
        ws_send(s, 1, payload, o->size);
        kid.st->published++;
        __atomic_fetch_add(&kid.sh->published[room], 1, __ATOMIC_RELAXED);
    } else {
        size_t cap = o->size + HD_CHANNEL_MAX + 64;
        char *req = malloc(cap);
        int n = snprintf(req, cap, "{\"op\":\"publish\",\"channel\":\"%s\",\"data\":\"%s\"}",
                         chan(s), payload);
        ws_send(s, 1, req, (size_t)n);
        free(req);
    }
    if (payload != body)
        free(payload);
}

/* The member of this kid that sends event g of a room-by-room schedule, if it may (live). */
static sub_t *chat_sender(uint64_t g, int count_error)
{
    uint32_t C = kid.o->channels, S = kid.o->subscribers;
    uint32_t room = (uint32_t)(g % C);
    uint64_t seq = g / C + 1;
    uint32_t members = S / C + (room < S % C ? 1 : 0);
    uint32_t idx = room + (uint32_t)((seq - 1) % members) * C;
    if (idx < kid.first || idx >= kid.first + kid.count)
        return NULL;
    sub_t *s = &kid.subs[idx - kid.first];
    if (s->state != S_LIVE || !s->bc.is_ready || s->bc.is_closing || s->is_late || s->is_churning) {
        if (count_error)
            kid.st->pub_errors++;
        return NULL;
    }
    return s;
}

/* Events due by now on a schedule of rate a second from t0, at most total. */
static uint64_t due_by(uint64_t t0, uint64_t now, double rate, uint64_t total)
{
    uint64_t due = (uint64_t)((double)(now - t0) * rate / 1e9) + 1;
    return due > total ? total : due;
}

/* chat --typing: ephemeral publishes, room by room, each room's by its members in turn. */
static void chat_typing(uint64_t t0, uint64_t now)
{
    const opts_t *o = kid.o;
    double rate = o->typing * o->channels;
    uint64_t due = due_by(t0, now, rate, (uint64_t)(rate * o->duration_s + 0.5));
    for (; kid.typing_next < due; kid.typing_next++) {
        sub_t *s = chat_sender(kid.typing_next, 0);
        if (!s)
            continue;
        char req[96 + HD_CHANNEL_MAX];
        int n = snprintf(req, sizeof(req),
                         "{\"op\":\"publish\",\"channel\":\"%s\",\"ephemeral\":true,"
                         "\"data\":{\"typing\":true}}",
                         chan(s));
        ws_send(s, 1, req, (size_t)n);
        kid.st->typing_sent++;
    }
}

/* chat --churn: member g % S leaves its room and joins again (unsubscribe, then subscribe). */
static void chat_churn(uint64_t t0, uint64_t now)
{
    const opts_t *o = kid.o;
    uint64_t due = due_by(t0, now, o->soak.churn, (uint64_t)(o->soak.churn * o->duration_s + 0.5));
    for (; kid.churn_next < due; kid.churn_next++) {
        uint32_t idx = (uint32_t)(kid.churn_next % o->subscribers);
        if (idx < kid.first || idx >= kid.first + kid.count)
            continue;
        sub_t *s = &kid.subs[idx - kid.first];
        if (s->state != S_LIVE || !s->bc.is_ready || s->bc.is_closing || s->is_churning)
            continue;
        char req[64 + HD_CHANNEL_MAX];
        int n = snprintf(req, sizeof(req), "{\"op\":\"unsubscribe\",\"channel\":\"%s\"}", chan(s));
        s->is_churning = 1;
        ws_send(s, 1, req, (size_t)n);
    }
}

static void on_chat_timer(uv_timer_t *t)
{
    (void)t;
    const opts_t *o = kid.o;
    if (kid.sh->phase != PH_GO || !kid.sh->go_ns)
        return;
    uint64_t t0 = kid.sh->go_ns, now = now_ns();
    if (now < t0)
        return;
    if (o->typing > 0)
        chat_typing(t0, now);
    if (o->soak.churn)
        chat_churn(t0, now);
    uint64_t total = (uint64_t)(o->rate * o->duration_s + 0.5);
    uint64_t due = total ? due_by(t0, now, o->rate, total) : 0;
    uint32_t C = o->channels;
    for (; kid.chat_next < due; kid.chat_next++) {
        uint64_t g = kid.chat_next;
        sub_t *s = chat_sender(g, 1);
        if (s)
            chat_publish(s, (uint32_t)(g % C), g / C + 1,
                         t0 + (uint64_t)((double)g * 1e9 / o->rate));
    }
}

static void kid_main(const opts_t *o, shared_t *sh, uint32_t k, uint32_t first, uint32_t count)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(1);
    signal(SIGINT, SIG_IGN); /* the parent decides when to stop */
    kid.o = o;
    kid.sh = sh;
    kid.st = &sh->kids[k];
    kid.first = first;
    kid.count = count;
    kid.st->planned = count;
    kid.subs = calloc(count ? count : 1, sizeof(sub_t));
    for (uint32_t i = 0; i < count; i++) {
        kid.subs[i].idx = first + i;
        kid.subs[i].ch = (first + i) % o->channels;
    }
    llhttp_settings_init(&http_settings);
    http_settings.on_message_begin = on_message_begin;
    http_settings.on_headers_complete = on_headers_complete;
    http_settings.on_body = on_body;
    http_settings.on_message_complete = on_message_complete;
    if (o->tg.kind == TG_NCHAN && o->transport == TP_LONGPOLL) {
        http_settings.on_header_field = on_header_field;
        http_settings.on_header_value = on_header_value;
        http_settings.on_header_value_complete = on_header_value_complete;
    }
    uv_loop_init(&kid.loop);
    uv_timer_init(&kid.loop, &kid.tick);
    uv_timer_start(&kid.tick, on_tick, 20, 20);
    if (o->sc == SC_CHAT) {
        uv_timer_init(&kid.loop, &kid.chat_timer);
        uv_timer_start(&kid.chat_timer, on_chat_timer, 1, 1);
    }
    kid.last_token_ns = now_ns();
    launch();
    uv_run(&kid.loop, UV_RUN_DEFAULT);
    _exit(0);
}

/* ---- the parent's side ---- */

shared_t *shared_new(uint32_t n_kids, uint32_t n_channels)
{
    size_t sz = sizeof(shared_t) + 64 + n_channels * sizeof(uint64_t) + 64 +
                (size_t)n_kids * sizeof(kid_stats_t);
    void *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("herald-bench: mmap");
        exit(3);
    }
    memset(m, 0, sz);
    shared_t *sh = m;
    sh->n_kids = n_kids;
    sh->n_channels = n_channels;
    sh->published = (volatile uint64_t *)(((uintptr_t)(sh + 1) + 63) & ~(uintptr_t)63);
    sh->kids = (kid_stats_t *)(((uintptr_t)(sh->published + n_channels) + 63) & ~(uintptr_t)63);
    return sh;
}

void shared_sum(const shared_t *sh, kid_stats_t *out)
{
    memset(out, 0, offsetof(kid_stats_t, lat));
    for (uint32_t k = 0; k < sh->n_kids; k++) {
        const kid_stats_t *s = &sh->kids[k];
        const uint64_t *src = (const uint64_t *)s;
        uint64_t *dst = (uint64_t *)out;
        /* every field before `done` is a uint64_t counter */
        for (size_t i = 0; i < offsetof(kid_stats_t, first_start_ns) / sizeof(uint64_t); i++)
            dst[i] += src[i];
        if (s->last_http_status)
            out->last_http_status = s->last_http_status;
        if (s->first_start_ns && (!out->first_start_ns || s->first_start_ns < out->first_start_ns))
            out->first_start_ns = s->first_start_ns;
        if (s->last_ready_ns > out->last_ready_ns)
            out->last_ready_ns = s->last_ready_ns;
        if (s->last_close_ns > out->last_close_ns)
            out->last_close_ns = s->last_close_ns;
        out->done += s->done;
    }
}

uint32_t kids_needed(const opts_t *o, uint64_t sockets)
{
    uint64_t lim = nofile_limit();
    uint64_t per = o->per_proc;
    if (per + 64 > lim)
        per = lim > 128 ? lim - 64 : 64;
    uint32_t n = (uint32_t)((sockets + per - 1) / per);
    if (n < 1)
        n = 1;
    if (o->procs > n)
        n = o->procs;
    return n;
}

uint32_t kids_spawn(const opts_t *o, shared_t *sh, int mode, pid_t *pids)
{
    (void)mode;
    uint32_t n = sh->n_kids;
    fflush(stdout);
    fflush(stderr);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t first = (uint32_t)((uint64_t)o->subscribers * k / n);
        uint32_t last = (uint32_t)((uint64_t)o->subscribers * (k + 1) / n);
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "herald-bench: fork: %s (started %u of %u client processes)\n",
                    strerror(errno), k, n);
            return k;
        }
        if (pid == 0)
            kid_main(o, sh, k, first, last - first);
        pids[k] = pid;
    }
    return n;
}

int kids_wait_connected(const opts_t *o, shared_t *sh, double timeout_s)
{
    uint64_t start = now_ns();
    for (;;) {
        kid_stats_t t;
        shared_sum(sh, &t);
        progress(o, "connecting: %llu/%llu subscribed, %llu failed", (unsigned long long)t.ready,
                 (unsigned long long)o->subscribers, (unsigned long long)t.failed);
        if (t.ready + t.failed >= o->subscribers)
            return 0;
        if ((double)(now_ns() - start) / 1e9 > timeout_s)
            return -1;
        sleep_ms(50);
    }
}

void kids_stop(const opts_t *o, shared_t *sh, pid_t *pids, uint32_t n, kid_stats_t *tot,
               hist_t *lat, hist_t *conn)
{
    (void)o;
    sh->phase = PH_STOP;
    uint64_t start = now_ns();
    for (uint32_t k = 0; k < n; k++) {
        while (!__atomic_load_n(&sh->kids[k].done, __ATOMIC_ACQUIRE)) {
            int status;
            if (waitpid(pids[k], &status, WNOHANG) == pids[k]) {
                pids[k] = 0;
                break;
            }
            if (now_ns() - start > 30000000000ull) {
                kill(pids[k], SIGKILL);
                break;
            }
            sleep_ms(10);
        }
        if (pids[k] > 0)
            waitpid(pids[k], NULL, 0);
    }
    shared_sum(sh, tot);
    for (uint32_t k = 0; k < n; k++) {
        if (lat)
            hist_merge(lat, &sh->kids[k].lat);
        if (conn)
            hist_merge(conn, &sh->kids[k].conn);
    }
}
