/* SPDX-License-Identifier: MIT */
/*
 * soak_sub.c: the soak's client processes. Each holds its share of the subscribers, every
 * one always connected with a resume point (the primer's id at first, then the last id it
 * saw), over its own transport:
 *   ws        GET /ws/CH?since=ID, subprotocol herald.v1: {"type":"message","id":..} envelopes,
 *             {"type":"gap"} notices
 *   sse       GET /sse/CH with Last-Event-ID: `id:` and `data:` lines, `event: herald-gap`
 *   longpoll  GET /lp/CH?since=ID&timeout=S on a keep-alive connection, `next` feeding the next
 *   poll      GET /poll/CH?since=ID every --poll-interval
 * Every second, in the publishing phase, --churn / kids subscribers close their connection
 * and come back 0.1-1 s later from their last id. Slow consumers (hot channel, ws and sse)
 * have a 4 KiB receive buffer and read 512 bytes every 500 ms until herald cuts them, then resume
 * the same way; what they lose is counted apart (herald may cut them, and their resume point may be
 * out of history). soak.h says how a received sequence is checked.
 */
#define _GNU_SOURCE
#include "soak.h"

#include <jansson.h>
#include <llhttp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define ACC_MAX     (4u << 20)
#define SLOW_READS  5000000000ull  /* a slow consumer reads for 5 s ... */
#define SLOW_STALLS 30000000000ull /* ... then reads nothing for 30 s */
#define SLOW_RCVBUF 4096
#define CONC        128
#define TICK_MS     50
#define CONNECT_TMO 10000000000ull
#define WS_KEY      "dGhlIHNhbXBsZSBub25jZQ=="

enum { S_IDLE = 0, S_CONNECTING, S_LIVE, S_DEAD };

typedef struct ssub_s {
    bconn_t bc; /* first: a bconn_t * is an ssub_t * */
    llhttp_t http;
    uint32_t idx, ch;
    uint8_t tp, state;
    unsigned is_slow : 1;
    unsigned is_upgraded : 1;
    unsigned is_gap_event : 1;
    unsigned by_us : 1;  /* we closed it (churn, keep-alive end): not a server close */
    unsigned paused : 1; /* slow: reading stopped until when_ns */
    uint16_t status;
    uint64_t t_start, ready_ns, when_ns; /* when_ns: reconnect, next poll or read resume */
    uint64_t last_seq;
    uint32_t *skipped; /* sequences jumped over whose answer was not known yet */
    uint32_t n_skipped, cap_skipped;
    char *acc;
    uint32_t acc_len, acc_cap;
    char last_id[SOAK_ID_MAX];
    char ev_id[SOAK_ID_MAX]; /* sse: the id of the event being read */
} ssub_t;

static struct {
    const opts_t *o;
    soak_shm_t *sh;
    soak_kid_t *st;
    uv_loop_t loop;
    uv_timer_t tick;
    ssub_t *subs;
    uint32_t count, inflight;
    uint64_t last_sec_ns;
    unsigned rng;
    char chan[HD_CHANNEL_MAX + 1];
} K;

static llhttp_settings_t settings;
static const bconn_ops_t ops;

/* The hot channel's subscribers are the ws and sse ones among the first 2 x --hot-subs
 * (pollers could not keep up with it, and cannot be cut as slow); half of them are slow. */
int soak_is_hot(const opts_t *o, uint32_t i)
{
    uint32_t tp = i % 4;
    return i / 2 < o->soak.hot_subs && (tp == TP_WS || tp == TP_SSE);
}

int soak_is_slow(const opts_t *o, uint32_t i)
{
    return soak_is_hot(o, i) && (i / 4) % 2 == 0;
}

static uint8_t ack_of(uint32_t ch, uint64_t seq)
{
    return K.sh->ack[(uint64_t)ch * K.sh->seq_cap + seq];
}

/* ---- checking what arrives ---- */

static void count_lost(ssub_t *s)
{
    if (s->is_slow) {
        K.st->slow_lost++;
    } else {
        K.st->lost++;
        K.st->lost_tp[s->tp]++;
    }
}

static void skip(ssub_t *s, uint64_t q)
{
    uint8_t a = ack_of(s->ch, q);
    if (a == ACK_OK) {
        count_lost(s);
    } else if (a == ACK_PENDING) {
        if (s->n_skipped == s->cap_skipped) {
            s->cap_skipped = s->cap_skipped ? s->cap_skipped * 2 : 8;
            s->skipped = realloc(s->skipped, s->cap_skipped * sizeof(uint32_t));
        }
        s->skipped[s->n_skipped++] = (uint32_t)q;
    }
}

static int unskip(ssub_t *s, uint64_t q)
{
    for (uint32_t i = 0; i < s->n_skipped; i++)
        if (s->skipped[i] == q) {
            s->skipped[i] = s->skipped[--s->n_skipped];
            return 1;
        }
    return 0;
}

/* Looks again at the skipped sequences; at the end a sequence never answered counts as refused. */
static void recheck(ssub_t *s)
{
    for (uint32_t i = 0; i < s->n_skipped;) {
        uint8_t a = ack_of(s->ch, s->skipped[i]);
        if (a == ACK_PENDING && K.sh->phase < SP_FINAL) {
            i++;
            continue;
        }
        if (a == ACK_OK)
            count_lost(s);
        s->skipped[i] = s->skipped[--s->n_skipped];
    }
}

static void record(ssub_t *s, const char *p, size_t n, const char *id, size_t idn, uint64_t now)
{
    soak_kid_t *st = K.st;
    uint32_t ch;
    uint64_t seq, ns;
    if (payload_parse(p, n, &ch, &seq, &ns) != 0 || ch != s->ch || seq == 0 ||
        seq >= K.sh->seq_cap) {
        st->bad++;
        return;
    }
    if (ack_of(ch, seq) == ACK_FAILED)
        st->refused_seen++;
    if (seq <= s->last_seq) {
        if (unskip(s, seq))
            st->ooo++;
        else
            st->dup++;
        return;
    }
    for (uint64_t q = s->last_seq + 1; q < seq; q++)
        skip(s, q);
    s->last_seq = seq;
    if (id && idn && idn < SOAK_ID_MAX) {
        memcpy(s->last_id, id, idn);
        s->last_id[idn] = '\0';
    }
    if (s->is_slow)
        st->slow_delivered++;
    else
        st->delivered++;
    if (ns >= s->ready_ns && !s->is_slow)
        hist_record(&st->lat[s->tp == TP_POLL ? LAT_POLL : LAT_PUSH], now - ns);
}

static void gap(ssub_t *s)
{
    if (s->is_slow)
        K.st->slow_gaps++;
    else
        K.st->gaps++;
}

static int acc_append(ssub_t *s, const char *p, size_t n)
{
    if (s->acc_len + n > ACC_MAX)
        return -1;
    if (s->acc_len + n > s->acc_cap) {
        uint32_t cap = s->acc_cap ? s->acc_cap : 512;
        while (cap < s->acc_len + n)
            cap *= 2;
        s->acc = realloc(s->acc, cap);
        s->acc_cap = cap;
    }
    memcpy(s->acc + s->acc_len, p, n);
    s->acc_len += (uint32_t)n;
    return 0;
}

static void acc_reset(ssub_t *s)
{
    s->acc_len = 0;
    if (s->acc_cap > 8192) {
        free(s->acc);
        s->acc = NULL;
        s->acc_cap = 0;
    }
}

/* ---- SSE ---- */

static void sse_line(ssub_t *s, const char *p, size_t n, uint64_t now)
{
    if (n && p[n - 1] == '\r')
        n--;
    if (n == 0) {
        s->is_gap_event = 0;
        s->ev_id[0] = '\0';
    } else if (n > 4 && memcmp(p, "id: ", 4) == 0 && n - 4 < SOAK_ID_MAX) {
        memcpy(s->ev_id, p + 4, n - 4);
        s->ev_id[n - 4] = '\0';
    } else if (n >= 17 && memcmp(p, "event: herald-gap", 17) == 0) {
        s->is_gap_event = 1;
        gap(s);
    } else if (n >= 5 && memcmp(p, "data:", 5) == 0 && !s->is_gap_event) {
        size_t skip_n = n > 5 && p[5] == ' ' ? 6 : 5;
        record(s, p + skip_n, n - skip_n, s->ev_id, strlen(s->ev_id), now);
    }
}

static void sse_feed(ssub_t *s, const char *p, size_t n, uint64_t now)
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
            sse_line(s, s->acc, s->acc_len, now);
            s->acc_len = 0;
        } else {
            sse_line(s, p, len, now);
        }
        p = nl + 1;
        n -= len + 1;
    }
}

/* ---- WebSocket (herald.v1) ---- */

static void ws_send(ssub_t *s, int opcode, const char *p, size_t n)
{
    char f[256];
    if (n > 125)
        n = 125;
    f[0] = (char)(0x80 | opcode);
    f[1] = (char)(0x80 | n);
    memset(f + 2, 0x5a, 4);
    for (size_t i = 0; i < n; i++)
        f[6 + i] = (char)(p[i] ^ 0x5a);
    bconn_write(&s->bc, f, 6 + n);
}

static void ws_message(ssub_t *s, const char *p, size_t n, uint64_t now)
{
    static const char msg[] = "{\"type\":\"message\"", gp[] = "{\"type\":\"gap\"";
    if (n >= sizeof(msg) - 1 && memcmp(p, msg, sizeof(msg) - 1) == 0) {
        const char *id = memmem(p, n, "\"id\":\"", 6), *end = NULL;
        if (id) {
            id += 6;
            end = memchr(id, '"', (size_t)(p + n - id));
        }
        record(s, p, n, id, end ? (size_t)(end - id) : 0, now);
    } else if (n >= sizeof(gp) - 1 && memcmp(p, gp, sizeof(gp) - 1) == 0) {
        gap(s);
    } else {
        K.st->bad++;
    }
}

static size_t ws_frames(ssub_t *s, const char *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (n - off >= 2 && !s->bc.is_closing) {
        const unsigned char *h = (const unsigned char *)p + off;
        int op = h[0] & 0x0f;
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
        if (len > ACC_MAX) {
            bconn_close(&s->bc, CE_OTHER);
            return n;
        }
        if (n - off < hl + len)
            break;
        const char *pl = p + off + hl;
        if (op == 1 || op == 2)
            ws_message(s, pl, (size_t)len, now);
        else if (op == 9)
            ws_send(s, 10, pl, (size_t)len);
        else if (op == 8) {
            ws_send(s, 8, pl, len >= 2 ? 2 : 0);
            bconn_close(&s->bc, CE_CLOSED);
        }
        off += hl + (size_t)len;
    }
    return off;
}

static void ws_feed(ssub_t *s, const char *p, size_t n, uint64_t now)
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
}

/* ---- requests and answers ---- */

static void send_request(ssub_t *s)
{
    const opts_t *o = K.o;
    const target_t *tg = target_of(o, s->idx);
    chan_name(o, s->ch, K.chan, sizeof(K.chan));
    char req[1024];
    int n = 0;
    switch (s->tp) {
    case TP_WS:
        n = snprintf(req, sizeof(req),
                     "GET /ws/%s?since=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n",
                     K.chan, s->last_id, tg->host);
        break;
    case TP_SSE:
        n = snprintf(req, sizeof(req),
                     "GET /sse/%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                     "Last-Event-ID: %s\r\n\r\n",
                     K.chan, tg->host, s->last_id);
        break;
    case TP_LONGPOLL:
        n = snprintf(req, sizeof(req),
                     "GET /lp/%s?since=%s&timeout=%u HTTP/1.1\r\nHost: %s\r\n\r\n", K.chan,
                     s->last_id, o->lp_timeout_s, tg->host);
        break;
    default:
        n = snprintf(req, sizeof(req), "GET /poll/%s?since=%s HTTP/1.1\r\nHost: %s\r\n\r\n", K.chan,
                     s->last_id, tg->host);
        break;
    }
    bconn_write(&s->bc, req, (size_t)n);
}

static void mark_live(ssub_t *s, uint64_t now)
{
    if (s->state != S_CONNECTING)
        return;
    s->state = S_LIVE;
    s->bc.is_ready = 1;
    s->ready_ns = now;
    if (s->is_slow)
        s->when_ns = now + SLOW_READS;
    K.st->connects++;
    K.inflight--;
}

/* A poll answer: {"messages":[{"id":..,"data":..},..],"next":ID,"gap":bool}. */
static void poll_answer(ssub_t *s, uint64_t now)
{
    json_error_t jerr;
    json_t *root = json_loadb(s->acc, s->acc_len, 0, &jerr);
    if (!root) {
        K.st->bad++;
        return;
    }
    if (json_is_true(json_object_get(root, "gap")))
        gap(s);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(root, "messages"), i, m)
    {
        json_t *d = json_object_get(m, "data");
        if (json_is_string(d))
            record(s, json_string_value(d), json_string_length(d), NULL, 0, now);
        else
            K.st->bad++;
    }
    const char *next = json_string_value(json_object_get(root, "next"));
    if (next && strlen(next) < SOAK_ID_MAX)
        snprintf(s->last_id, sizeof(s->last_id), "%s", next);
    json_decref(root);
}

static ssub_t *sub_of(llhttp_t *p)
{
    return hd_container_of(p, ssub_t, http);
}

static int on_message_begin(llhttp_t *p)
{
    sub_of(p)->acc_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    ssub_t *s = sub_of(p);
    s->status = (uint16_t)p->status_code;
    int want = s->tp == TP_WS ? 101 : 200;
    if (s->status != want) {
        K.st->last_status = s->status;
        bconn_close(&s->bc, CE_HTTP);
        return -1;
    }
    if (s->tp == TP_WS || s->tp == TP_SSE)
        mark_live(s, now_ns());
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    ssub_t *s = sub_of(p);
    if (s->tp == TP_SSE) {
        sse_feed(s, at, n, now_ns());
        return s->bc.is_closing ? -1 : 0;
    }
    if (acc_append(s, at, n) != 0) {
        bconn_close(&s->bc, CE_OTHER);
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    ssub_t *s = sub_of(p);
    if (s->tp != TP_LONGPOLL && s->tp != TP_POLL)
        return 0;
    uint64_t now = now_ns();
    poll_answer(s, now);
    acc_reset(s);
    mark_live(s, now);
    if (!llhttp_should_keep_alive(p)) {
        s->by_us = 1;
        bconn_close(&s->bc, -1);
        return -1;
    }
    if (s->tp == TP_POLL)
        s->when_ns = now + (uint64_t)K.o->poll_interval_ms * 1000000ull;
    else
        send_request(s);
    return 0;
}

/* ---- connection events ---- */

static void on_sub_connect(bconn_t *c)
{
    ssub_t *s = (ssub_t *)c;
    llhttp_init(&s->http, HTTP_RESPONSE, &settings);
    s->is_upgraded = s->is_gap_event = 0;
    s->acc_len = 0;
    send_request(s);
    /* a long poll is held until something is published: it is subscribed once it is asked */
    if (s->tp == TP_LONGPOLL)
        mark_live(s, now_ns());
}

static void on_sub_data(bconn_t *c, const char *p, size_t n)
{
    ssub_t *s = (ssub_t *)c;
    uint64_t now = now_ns();
    if (s->is_upgraded) {
        ws_feed(s, p, n, now);
    } else {
        llhttp_errno_t e = llhttp_execute(&s->http, p, n);
        if (e == HPE_PAUSED_UPGRADE && s->status == 101) {
            s->is_upgraded = 1;
            s->acc_len = 0;
            const char *rest = llhttp_get_error_pos(&s->http);
            if (rest && rest >= p && rest < p + n)
                ws_feed(s, rest, (size_t)(p + n - rest), now);
        } else if (e != HPE_OK && !c->is_closing) {
            bconn_close(c, CE_HTTP);
        }
    }
}

static void on_sub_closed(bconn_t *c, int cause, int after_ready)
{
    ssub_t *s = (ssub_t *)c;
    soak_kid_t *st = K.st;
    uint64_t now = now_ns();
    (void)after_ready;
    acc_reset(s);
    s->paused = 0;
    if (s->state == S_CONNECTING) {
        K.inflight--;
        st->connect_fail++;
        st->err[cause >= 0 ? cause : CE_CLOSED]++;
        s->when_ns = now + 1000000000ull;
    } else if (s->by_us) {
        s->when_ns = now + 100000000ull + (uint64_t)(rand_r(&K.rng) % 900) * 1000000ull;
    } else {
        if (s->is_slow)
            st->cuts++;
        else {
            st->server_closes++;
            st->closes_tp[s->tp]++;
        }
        s->when_ns = now + 200000000ull;
    }
    s->by_us = 0;
    s->state = K.sh->phase >= SP_FINAL ? S_DEAD : S_IDLE;
}

static const bconn_ops_t ops = {on_sub_connect, on_sub_data, on_sub_closed};

static void start_sub(ssub_t *s, uint64_t now)
{
    if (s->t_start)
        K.st->resumes++; /* not its first connection: from the last id it saw */
    s->t_start = now;
    s->state = S_CONNECTING;
    s->bc.is_ready = 0;
    K.inflight++;
    int r = bconn_connect_rcvbuf(&s->bc, &K.loop, target_of(K.o, s->idx), s->idx % K.o->src_addrs,
                                 &ops, s->is_slow ? SLOW_RCVBUF : 0);
    if (r != 0) {
        K.inflight--;
        K.st->connect_fail++;
        K.st->err[r]++;
        s->state = S_IDLE;
        s->when_ns = now + 1000000000ull;
        return;
    }
}

/* ---- the client process ---- */

static void churn(void)
{
    const opts_t *o = K.o;
    uint32_t n = o->soak.churn / K.sh->n_kids;
    if (K.st == &K.sh->kids[0])
        n += o->soak.churn % K.sh->n_kids;
    for (uint32_t tries = 0; n && tries < 4 * n + 16 && K.count; tries++) {
        ssub_t *s = &K.subs[(uint32_t)rand_r(&K.rng) % K.count];
        if (s->state != S_LIVE || s->is_slow || s->bc.is_closing)
            continue;
        s->by_us = 1;
        K.st->churned++;
        bconn_close(&s->bc, -1);
        n--;
    }
}

static void finish(void)
{
    for (uint32_t i = 0; i < K.count; i++) {
        ssub_t *s = &K.subs[i];
        recheck(s);
        uint64_t top = K.sh->maxseq[s->ch];
        for (uint64_t q = s->last_seq + 1; q <= top; q++)
            if (ack_of(s->ch, q) == ACK_OK)
                count_lost(s);
    }
    __atomic_store_n(&K.st->done, 1, __ATOMIC_RELEASE);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = now_ns();
    int phase = K.sh->phase;
    if (phase >= SP_FINAL) {
        finish();
        _exit(0); /* the kernel closes every socket at once */
    }
    int each_second = now - K.last_sec_ns >= 1000000000ull;
    uint64_t live = 0, slow_live = 0, open = 0;
    for (uint32_t i = 0; i < K.count; i++) {
        ssub_t *s = &K.subs[i];
        switch (s->state) {
        case S_IDLE:
            if (now >= s->when_ns && K.inflight < CONC)
                start_sub(s, now);
            break;
        case S_CONNECTING:
            open++;
            if (now - s->t_start > CONNECT_TMO)
                bconn_close(&s->bc, CE_TIMEOUT);
            break;
        case S_LIVE:
            live++;
            open++;
            slow_live += s->is_slow;
            if (s->is_slow && s->paused && (now >= s->when_ns || phase >= SP_DRAIN)) {
                s->paused = 0;
                s->when_ns = now + SLOW_READS;
                bconn_read_resume(&s->bc);
            } else if (s->is_slow && !s->paused && now >= s->when_ns && phase < SP_DRAIN) {
                s->paused = 1;
                s->when_ns = now + SLOW_STALLS;
                bconn_read_pause(&s->bc);
            } else if (s->tp == TP_POLL && s->when_ns && now >= s->when_ns) {
                s->when_ns = 0;
                send_request(s);
            }
            break;
        default:
            break;
        }
        if (each_second && s->n_skipped)
            recheck(s);
    }
    K.st->live = live;
    K.st->slow_live = slow_live;
    K.st->open = open;
    if (each_second) {
        K.last_sec_ns = now;
        if (phase == SP_GO)
            churn();
    }
}

static void kid_main(const opts_t *o, soak_shm_t *sh, uint32_t k, uint32_t first, uint32_t count)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(1);
    signal(SIGINT, SIG_IGN);
    K.o = o;
    K.sh = sh;
    K.st = &sh->kids[k];
    K.count = count;
    K.rng = 0x50a4u + k;
    K.subs = calloc(count ? count : 1, sizeof(ssub_t));
    for (uint32_t i = 0; i < count; i++) {
        ssub_t *s = &K.subs[i];
        s->idx = first + i;
        s->tp = (uint8_t)(s->idx % 4);
        s->ch = soak_is_hot(o, s->idx) ? o->channels : s->idx % o->channels;
        s->is_slow = (unsigned)soak_is_slow(o, s->idx);
        /* spread the first connections (and the polls) over the first second */
        s->when_ns = (uint64_t)(rand_r(&K.rng) % 1000) * 1000000ull;
    }
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    /* the primers' ids are known once the parent says so */
    uint64_t until = now_ns() + 600000000000ull;
    while (sh->phase < SP_CONNECT && now_ns() < until)
        sleep_ms(20);
    uint64_t now = now_ns();
    for (uint32_t i = 0; i < count; i++) {
        ssub_t *s = &K.subs[i];
        snprintf(s->last_id, sizeof(s->last_id), "%s", sh->primer[s->ch]);
        s->when_ns += now;
    }
    uv_loop_init(&K.loop);
    uv_timer_init(&K.loop, &K.tick);
    uv_timer_start(&K.tick, on_tick, TICK_MS, TICK_MS);
    K.last_sec_ns = now;
    uv_run(&K.loop, UV_RUN_DEFAULT);
    _exit(0);
}

uint32_t soak_kids_spawn(const opts_t *o, soak_shm_t *sh, pid_t *pids)
{
    uint32_t n = sh->n_kids;
    fflush(stdout);
    fflush(stderr);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t first = (uint32_t)((uint64_t)o->subscribers * k / n);
        uint32_t last = (uint32_t)((uint64_t)o->subscribers * (k + 1) / n);
        pid_t pid = fork();
        if (pid < 0) {
            perror("herald-bench: fork");
            return k;
        }
        if (pid == 0)
            kid_main(o, sh, k, first, last - first);
        pids[k] = pid;
    }
    return n;
}
