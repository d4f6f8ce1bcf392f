/* SPDX-License-Identifier: MIT */
/*
 * ws_json.c: the /ws JSON protocol (docs/protocol-websocket.md): one JSON object per text
 * message, {"op": subscribe | unsubscribe | publish | ack | presence | ping, "ref": echoed, ...},
 * answered with subscribed / unsubscribed / published / acked / presence / pong / error objects;
 * messages arrive as herald.v1 envelopes, receipts of a publish with "receipt" as receipt objects.
 * Speaks to the connection only through websocket.h.
 */
#include "websocket.h"

#include "herald/jflat.h"

#include <string.h>

#define PRESENCE_OFF "presence is not tracked on this channel (its channel_rule needs presence=on)"
/* Presence snapshots a connection may have on their way at once. */
#define WS_MAX_ASKS 4

/* {"type":type} and "channel" (when not NULL); send it with emit_reply. */
static json_t *reply_new(const char *type, const char *channel)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(type));
    if (channel)
        json_object_set_new(o, "channel", json_string(channel));
    return o;
}

/* Adds the request's "ref" (when it had one) as the last member, then queues the reply. */
static void emit_reply(ws_t *ws, json_t *o, json_t *ref)
{
    if (ref)
        json_object_set(o, "ref", ref);
    hd_ws_emit_json(ws, o);
}

/*
 * The replies every subscribe, unsubscribe and publish gets, written without a JSON tree:
 * head is the object's text without its closing brace (its strings are channel names and ids,
 * whose alphabets need no escaping); the request's "ref" (when it had one) goes last, as
 * emit_reply puts it.
 */
static void emit_plain(ws_t *ws, const char *head, int n, json_t *ref)
{
    char *rt = ref ? json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t rn = rt ? strlen(rt) : 0, need = (size_t)n + (rt ? 7 + rn : 0) + 1, len = (size_t)n;
    char stack[512]; /* a reply without a long ref: no allocation besides the frame's */
    char *out = need <= sizeof(stack) ? stack : hd_malloc(need);
    memcpy(out, head, (size_t)n);
    if (rt) {
        memcpy(out + len, ",\"ref\":", 7);
        memcpy(out + len + 7, rt, rn);
        len += 7 + rn;
    }
    out[len++] = '}';
    free(rt);
    hd_ws_emit_text(ws, out, len);
    if (out != stack)
        free(out);
}

/* Appends s[0..n) at out + at (the caller sized out for everything it appends); returns the
 * new length. Replies of every subscribe and unsubscribe are built with it, not snprintf (about
 * 400 instructions a reply). */
static size_t cat(char *out, size_t at, const char *s, size_t n)
{
    memcpy(out + at, s, n);
    return at + n;
}
#define CAT_LIT(out, at, lit) cat(out, at, lit, sizeof(lit) - 1)

static void reply_error(ws_t *ws, json_t *ref, const char *channel, const char *code,
                        const char *text)
{
    json_t *o = reply_new("error", channel);
    json_object_set_new(o, "code", json_string(code));
    json_object_set_new(o, "error", json_string(text));
    emit_reply(ws, o, ref);
}

/* The code of a broker's refusal: a spent node budget, or the broker unable to serve. */
static const char *refusal_code(int err)
{
    if (err == HD_ESUBSCRIPTIONS)
        return "too_many_subscriptions";
    return err == HD_ECHANNELS || err == HD_EMEMORY ? "limit_reached" : "unavailable";
}

/* /ws: a subscribe op has gone live: gap notice, history, then "subscribed". */
static void json_on_ready(hd_sub_t *s, hd_message_t *const *msgs, size_t n, int gap, int err)
{
    ws_sub_t *e = s->data;
    ws_t *ws = e->ws;
    hd_ws_enter(ws);
    json_t *ref = e->ref;
    e->ref = NULL;
    if (err) {
        e->sub = NULL; /* the hub frees it */
        char channel[HD_CHANNEL_MAX + 1];
        memcpy(channel, e->channel, e->len + 1u); /* e holds len + 1 bytes */
        hd_ws_sub_remove(ws, e);
        reply_error(ws, ref, channel, refusal_code(err), hd_strerror(err));
    } else {
        if (gap)
            hd_ws_emit_gap(ws, e);
        if (hd_ws_hold_history(ws, e, msgs, n) < 0) {
            json_decref(ref);
            hd_ws_leave(ws);
            return; /* let go as a slow consumer */
        }
        char id[HD_ID_MAX], head[64 + HD_CHANNEL_MAX + HD_ID_MAX];
        size_t idn = hd_id_format(id, sizeof(id), s->epoch, s->last_seq);
        size_t hn = CAT_LIT(head, 0, "{\"type\":\"subscribed\",\"channel\":\"");
        hn = cat(head, hn, e->channel, e->len);
        hn = CAT_LIT(head, hn, "\",\"last_id\":\"");
        hn = cat(head, hn, id, idn);
        hn = CAT_LIT(head, hn, "\"");
        emit_plain(ws, head, (int)hn, ref);
        if (hd_ws_pub(ws)->conn)
            hd_tp_notify_channel(hd_ws_pub(ws)->conn, 1, e->channel, e->len);
        hd_ws_pump(ws);
    }
    json_decref(ref);
    hd_ws_leave(ws);
}

static const hd_sub_ops_t json_sub_ops = {.format = HD_FMT_WS_ENVELOPE,
                                          .on_ready = json_on_ready,
                                          .on_message = hd_ws_sub_on_message,
                                          .on_gap = hd_ws_sub_on_gap};

/* The "channel" member when it is a valid name, else NULL after an error reply. */
static const char *json_channel(ws_t *ws, json_t *root, json_t *ref, size_t *len)
{
    json_t *ch = json_object_get(root, "channel");
    const char *name = json_string_value(ch);
    *len = json_string_length(ch);
    if (!name || !hd_channel_name_valid(name, *len)) {
        reply_error(ws, ref, NULL, "bad_channel", "\"channel\" must be " WS_CHANNEL_RULE);
        return NULL;
    }
    return name;
}

/*
 * A subscribe or unsubscribe op as read by either parser: jansson's tree (root), or the scan of
 * a simple object (flat, jflat.h), most of them, which makes no tree unless a path needs one
 * (req_root: the authorize hook keeps the request).
 */
typedef struct req_s {
    json_t *root;           /* the tree; on the flat path NULL until req_root makes it */
    const hd_jflat_t *flat; /* the scan, or NULL */
    const char *text;       /* the message, for req_root */
    size_t text_len;
} req_t;

enum { V_ABSENT, V_NULL, V_TRUE, V_FALSE, V_STRING, V_OTHER };

/* What member key (key_len bytes, NUL-terminated) is (V_*); a string's value in *s, *n
 * (NUL-terminated on jansson's path only). REQ_GET passes a literal key's length. */
static int req_get(const req_t *r, const char *key, size_t key_len, const char **s, size_t *n)
{
    if (r->flat) {
        const hd_jflat_member_t *m = hd_jflat_getn(r->flat, key, key_len);
        if (!m)
            return V_ABSENT;
        *s = m->val;
        *n = m->val_len;
        return m->type == HD_JFLAT_STRING  ? V_STRING
               : m->type == HD_JFLAT_NULL  ? V_NULL
               : m->type == HD_JFLAT_TRUE  ? V_TRUE
               : m->type == HD_JFLAT_FALSE ? V_FALSE
                                           : V_OTHER;
    }
    json_t *v = json_object_get(r->root, key);
    if (!v)
        return V_ABSENT;
    *s = json_string_value(v);
    *n = json_string_length(v);
    return json_is_string(v)  ? V_STRING
           : json_is_null(v)  ? V_NULL
           : json_is_true(v)  ? V_TRUE
           : json_is_false(v) ? V_FALSE
                              : V_OTHER;
}
#define REQ_GET(r, key, s, n) req_get(r, key, sizeof(key) - 1, s, n)

/* The request's tree, made from its text on the flat path (which jansson accepts: jflat.h). */
static json_t *req_root(req_t *r)
{
    if (!r->root)
        r->root = json_loadb(r->text, r->text_len, 0, NULL);
    return r->root;
}

/* The "channel" member when it is a valid name (NUL-terminated, in buf on the flat path), else
 * NULL after an error reply. */
static const char *req_channel(ws_t *ws, const req_t *r, json_t *ref, char *buf, size_t *len)
{
    const char *name = NULL;
    if (REQ_GET(r, "channel", &name, len) != V_STRING || !hd_channel_name_valid(name, *len)) {
        reply_error(ws, ref, NULL, "bad_channel", "\"channel\" must be " WS_CHANNEL_RULE);
        return NULL;
    }
    if (!r->flat)
        return name;
    memcpy(buf, name, *len); /* a valid name is at most HD_CHANNEL_MAX */
    buf[*len] = '\0';
    return buf;
}

/* A member that must be true, false or null when present: 1, 0, or -1 when it is not one. */
static int req_bool(const req_t *r, const char *key, size_t key_len)
{
    const char *s;
    size_t n;
    int k = req_get(r, key, key_len, &s, &n);
    return k == V_TRUE ? 1 : k == V_ABSENT || k == V_NULL || k == V_FALSE ? 0 : -1;
}
#define REQ_BOOL(r, key) req_bool(r, key, sizeof(key) - 1)

static void op_subscribe(ws_t *ws, req_t *req, json_t *ref, int hook_allowed);

/* The authorize hook's answer to a subscribe op (ws_hook.c): subscribe now, or refuse. */
static void on_hook_verdict(ws_t *ws, int verdict, const char *code, const char *reason,
                            json_t *root, json_t *ref)
{
    if (verdict == HD_HOOKS_ALLOW) {
        req_t req = {.root = root};
        op_subscribe(ws, &req, ref, 1);
        return;
    }
    reply_error(ws, ref, json_string_value(json_object_get(root, "channel")), code, reason);
}

static void op_subscribe(ws_t *ws, req_t *req, json_t *ref, int hook_allowed)
{
    size_t len;
    char buf[HD_CHANNEL_MAX + 1];
    const char *name = req_channel(ws, req, ref, buf, &len);
    if (!name)
        return;
    const char *since = NULL;
    size_t since_len = 0;
    int since_kind = REQ_GET(req, "since", &since, &since_len);
    uint64_t epoch = 0, seq = 0;
    int has_since = since_kind != V_ABSENT && since_kind != V_NULL;
    if (has_since && (since_kind != V_STRING || hd_id_parse(since, since_len, &epoch, &seq) != 0)) {
        reply_error(ws, ref, name, "bad_since",
                    "\"since\" must be a message id such as \"mh3k2x1a-42\"");
        return;
    }
    /* The channel's rule, for this connection's identity: refused here, the connection stays. */
    const char *reason = NULL;
    hd_auth_result_t ar =
        hd_ws_pub(ws)->is_backend
            ? HD_AUTH_OK
            : hd_auth_check(hd_ws_conf(ws)->auth, hd_ws_identity(ws), name, len,
                            has_since ? HD_AUTH_HISTORY : HD_AUTH_SUBSCRIBE, &reason);
    /* subscribe=hook: the backend decides, once the op's other checks passed */
    int ask_hook = ar == HD_AUTH_ASK_HOOK && !hook_allowed;
    if (ar == HD_AUTH_ASK_HOOK)
        ar = HD_AUTH_OK;
    if (ar != HD_AUTH_OK) {
        reply_error(ws, ref, name, ar == HD_AUTH_FORBIDDEN ? "forbidden" : "unauthenticated",
                    reason);
        return;
    }
    if (hd_ws_sub_find(ws, name, len)) {
        reply_error(ws, ref, name, "already_subscribed", "already subscribed to this channel");
        return;
    }
    uint32_t max = hd_ws_conf(ws)->max_subscriptions_per_connection;
    if (hd_ws_pub(ws)->n_subs >= max) {
        char text[128];
        snprintf(text, sizeof(text),
                 "at most %u subscriptions per connection (max_subscriptions_per_connection)",
                 (unsigned)max);
        hd_hub_note_refused(hd_ws_pub(ws)->w, HD_SUBS_LIMIT_CONNECTION);
        reply_error(ws, ref, name, "too_many_subscriptions", text);
        return;
    }
    /* "presence":true: join and leave events of the channel, which must track presence. */
    int events = REQ_BOOL(req, "presence");
    if (events < 0) {
        reply_error(ws, ref, name, "bad_presence", "\"presence\" must be true or false");
        return;
    }
    if (events && !hd_auth_presence(hd_ws_conf(ws)->auth, name, len)) {
        reply_error(ws, ref, name, "presence_off", PRESENCE_OFF);
        return;
    }
    /* "ack":true: the client acks what it processed; "acked" receipts come from its acks. */
    int ack = REQ_BOOL(req, "ack");
    if (ack < 0) {
        reply_error(ws, ref, name, "bad_ack", "\"ack\" must be true or false");
        return;
    }
    if (ask_hook) {
        hd_ws_ask_hook(ws, name, len, has_since ? HD_AUTH_HISTORY : HD_AUTH_SUBSCRIBE,
                       on_hook_verdict, req_root(req), ref);
        return;
    }
    ws_sub_t *e = hd_ws_sub_add(ws, name, len);
    if (ack)
        hd_ws_ack_enable(e);
    e->ref = ref ? json_incref(ref) : NULL;
    e->sub = hd_hub_subscribe(hd_ws_pub(ws)->w, name, len, has_since ? &epoch : NULL,
                              has_since ? &seq : NULL, &json_sub_ops, e);
    hd_hub_presence(
        e->sub, events,
        hd_tp_member(hd_ws_conf(ws), hd_ws_pub(ws)->conn, hd_ws_pub(ws)->is_backend, name, len));
}

/* A presence snapshot on its way to the broker: the connection stays allocated meanwhile. */
typedef struct ask_s {
    ws_t *ws;
    json_t *ref;
} ask_t;

/* The broker's page of members: {"type":"presence","channel","count","members","next"}; of one
 * member's connections: {"type":"presence","channel","member","conn_count","conns","next"}. */
static void on_presence_page(hd_worker_t *w, hd_breq_t *r)
{
    (void)w;
    ask_t *a = r->cookie;
    ws_t *ws = a->ws;
    hd_ws_pub(ws)->n_asks--;
    if (hd_ws_is_open(ws) && r->err) {
        reply_error(ws, a->ref, r->channel, refusal_code(r->err), hd_strerror(r->err));
    } else if (hd_ws_is_open(ws)) {
        hd_sbuf_t sb;
        hd_sbuf_init(&sb, 96 + (r->page ? strlen(r->page) : 0));
        if (r->member_key)
            hd_sbuf_appendf(&sb,
                            "{\"type\":\"presence\",\"channel\":\"%s\",\"conn_count\":%llu,%s}",
                            r->channel, (unsigned long long)r->members,
                            r->page ? r->page : "\"member\":null,\"conns\":[],\"next\":null");
        else
            hd_sbuf_appendf(&sb, "{\"type\":\"presence\",\"channel\":\"%s\",\"count\":%llu,%s}",
                            r->channel, (unsigned long long)r->members,
                            r->page ? r->page : "\"members\":[],\"next\":null");
        hd_buf_t *b = hd_sbuf_finish(&sb);
        json_t *o = json_loadb(b->data, b->len, 0, NULL);
        hd_buf_unref(b);
        if (o)
            emit_reply(ws, o, a->ref);
    }
    json_decref(a->ref);
    free(a);
    hd_breq_free(r);
    hd_ws_leave(ws);
}

/*
 * {"op":"presence","channel":c,"cursor":..?,"limit":N?}: a page of c's members (who may
 * subscribe to c may ask), in key order, answered {"type":"presence",...,"next":cursor|null},
 * each member with HD_PRESENCE_MEMBER_CONNS connection ids at most and their "conn_count".
 * With "member":KEY, a page of that member's connection ids after the id "cursor" instead.
 * At most WS_MAX_ASKS are on their way per connection.
 */
static void op_presence(ws_t *ws, json_t *root, json_t *ref)
{
    size_t len;
    const char *name = json_channel(ws, root, ref, &len);
    if (!name)
        return;
    ws_public_t *pub = hd_ws_pub(ws);
    const char *reason = NULL;
    hd_auth_result_t ar = pub->is_backend ? HD_AUTH_OK
                                          : hd_auth_check(hd_ws_conf(ws)->auth, hd_ws_identity(ws),
                                                          name, len, HD_AUTH_SUBSCRIBE, &reason);
    if (ar == HD_AUTH_ASK_HOOK) { /* the backend let this connection subscribe, or not yet */
        ar = hd_ws_sub_find(ws, name, len) ? HD_AUTH_OK : HD_AUTH_FORBIDDEN;
        reason = "subscribe first: the application's backend decides this channel";
    }
    if (ar != HD_AUTH_OK) {
        reply_error(ws, ref, name, ar == HD_AUTH_FORBIDDEN ? "forbidden" : "unauthenticated",
                    reason);
        return;
    }
    if (!hd_auth_presence(hd_ws_conf(ws)->auth, name, len)) {
        reply_error(ws, ref, name, "presence_off", PRESENCE_OFF);
        return;
    }
    json_t *cursor = json_object_get(root, "cursor"), *limit = json_object_get(root, "limit");
    json_t *member = json_object_get(root, "member");
    if ((cursor && !json_is_null(cursor) && !json_is_string(cursor)) ||
        (limit && (!json_is_integer(limit) || json_integer_value(limit) < 1 ||
                   json_integer_value(limit) > HD_PRESENCE_PAGE_MAX))) {
        reply_error(ws, ref, name, "bad_request",
                    "\"cursor\" must be a string (the \"next\" of a page) and \"limit\" 1-1000");
        return;
    }
    if (member && !json_is_null(member) &&
        (!json_is_string(member) || json_string_length(member) < 1 ||
         json_string_length(member) > HD_AUTH_MAX_SUB ||
         strlen(json_string_value(member)) != json_string_length(member))) {
        reply_error(ws, ref, name, "bad_request",
                    "\"member\" must be a member's key (its sub, or an anonymous member's conn), "
                    "1-255 bytes");
        return;
    }
    if (pub->n_asks >= WS_MAX_ASKS) {
        reply_error(ws, ref, name, "rate_limited",
                    "too many presence requests unanswered on this connection");
        return;
    }
    hd_breq_t *r = hd_breq_new(HD_BREQ_PRESENCE, pub->w, name, len);
    if (json_is_string(cursor))
        r->cursor = hd_strndup(json_string_value(cursor), json_string_length(cursor));
    if (json_is_string(member))
        r->member_key = hd_strndup(json_string_value(member), json_string_length(member));
    r->limit = limit ? (size_t)json_integer_value(limit) : HD_PRESENCE_PAGE_DEFAULT;
    ask_t *a = hd_malloc(sizeof(*a));
    a->ws = ws;
    a->ref = ref ? json_incref(ref) : NULL;
    r->cookie = a;
    r->reply_cb = on_presence_page;
    pub->n_asks++;
    hd_ws_enter(ws); /* ws stays allocated until the answer comes, open or not */
    hd_broker_submit(r);
}

/*
 * {"op":"ack","channel":c,"id":ID}: everything up to ID on c is processed (cumulative; the
 * subscription was made with "ack":true). Silent, unless it carries a "ref": then answered
 * {"type":"acked","channel":c,"id":ID,"ref":..}. Errors: bad_channel, not_subscribed, bad_id,
 * ack_off, ack_ahead (ws_ack.c).
 */
static void op_ack(ws_t *ws, json_t *root, json_t *ref)
{
    size_t len;
    const char *name = json_channel(ws, root, ref, &len);
    if (!name)
        return;
    ws_sub_t *e = hd_ws_sub_find(ws, name, len);
    if (!e) {
        reply_error(ws, ref, name, "not_subscribed", "not subscribed to this channel");
        return;
    }
    json_t *id = json_object_get(root, "id");
    uint64_t epoch, seq;
    if (!json_is_string(id) ||
        hd_id_parse(json_string_value(id), json_string_length(id), &epoch, &seq) != 0) {
        reply_error(ws, ref, name, "bad_id",
                    "\"id\" must be the id of a message received, such as \"mh3k2x1a-42\"");
        return;
    }
    const char *code, *why;
    if (hd_ws_ack(ws, e, epoch, seq, &code, &why) < 0) {
        reply_error(ws, ref, name, code, why);
        return;
    }
    if (ref) {
        json_t *o = reply_new("acked", name);
        json_object_set(o, "id", id);
        emit_reply(ws, o, ref);
    }
}

static void op_unsubscribe(ws_t *ws, const req_t *req, json_t *ref)
{
    size_t len;
    char buf[HD_CHANNEL_MAX + 1];
    const char *name = req_channel(ws, req, ref, buf, &len);
    if (!name)
        return;
    ws_sub_t *e = hd_ws_sub_find(ws, name, len);
    if (!e) {
        reply_error(ws, ref, name, "not_subscribed", "not subscribed to this channel");
        return;
    }
    if (e->sub && hd_ws_pub(ws)->conn) /* it was live */
        hd_tp_notify_channel(hd_ws_pub(ws)->conn, 0, name, len);
    char head[64 + HD_CHANNEL_MAX];
    size_t n = CAT_LIT(head, 0, "{\"type\":\"unsubscribed\",\"channel\":\"");
    n = cat(head, n, name, len);
    n = CAT_LIT(head, n, "\"");
    hd_ws_sub_remove(ws, e); /* name is the request's: still valid */
    emit_plain(ws, head, (int)n, ref);
}

/* ephemeral_rate: 1 when the client may publish an ephemeral message now, else 0 with
 * *retry_ms until it may (counted in ephemeral_refused). */
static int ephemeral_allowed(ws_t *ws, uint64_t *retry_ms)
{
    ws_public_t *pub = hd_ws_pub(ws);
    uint32_t rate = hd_ws_conf(ws)->ephemeral_rate;
    *retry_ms = 0;
    if (rate == 0 || hd_bucket_take(&pub->eph_bucket, uv_now(&pub->w->loop), rate, rate, retry_ms))
        return 1;
    HD_STAT_INC(pub->w, ephemeral_refused);
    return 0;
}

static void op_publish(ws_t *ws, json_t *root, json_t *ref)
{
    const hd_conf_t *conf = hd_ws_conf(ws);
    if (!conf->ws_client_publish) {
        reply_error(ws, ref, NULL, "publish_disabled",
                    "client publishing is disabled on this server (ws_client_publish off)");
        return;
    }
    json_t *key = json_object_get(root, "key");
    int key_ok =
        json_is_string(key) && conf->publish_keys.n &&
        hd_tp_key_match(&conf->publish_keys, json_string_value(key), json_string_length(key)) == 0;
    if (hd_auth_enabled(conf->auth)) {
        /* The backend key (handshake or "key") passes; otherwise the channel's rule decides. */
        size_t clen;
        const char *ch = json_string_value(json_object_get(root, "channel")), *reason = NULL;
        clen = json_string_length(json_object_get(root, "channel"));
        int err = key_ok || !ch ? 0 : hd_ws_may_publish(ws, ch, clen, &reason);
        if (err) {
            reply_error(ws, ref, ch, err == HD_EFORBIDDEN ? "forbidden" : "unauthenticated",
                        reason);
            return;
        }
    } else if (!hd_ws_bearer_ok(ws)) {
        if (conf->publish_keys.n == 0) {
            reply_error(ws, ref, NULL, "forbidden",
                        "no publish_key is configured, so only a local client (loopback, not "
                        "through a proxy or a browser) may publish");
            return;
        }
        if (!json_is_string(key) || hd_tp_key_match(&conf->publish_keys, json_string_value(key),
                                                    json_string_length(key)) != 0) {
            reply_error(ws, ref, NULL, "forbidden",
                        "publishing needs a publish key (publish_key: \"key\", or Authorization: "
                        "Bearer on the handshake)");
            return;
        }
    }
    /* "ephemeral":true: live only (typing, cursors): no id, no history, its own rate. */
    json_t *eph = json_object_get(root, "ephemeral");
    if (eph && !json_is_boolean(eph) && !json_is_null(eph)) {
        reply_error(ws, ref, NULL, "bad_data", "\"ephemeral\" must be true or false");
        return;
    }
    int is_ephemeral = json_is_true(eph);
    /* "receipt":true: "delivered" and "acked" receipts of this message come back here. */
    json_t *rcpt = json_object_get(root, "receipt");
    if (rcpt && !json_is_boolean(rcpt) && !json_is_null(rcpt)) {
        reply_error(ws, ref, NULL, "bad_data", "\"receipt\" must be true or false");
        return;
    }
    int wants_receipts = json_is_true(rcpt);
    if (wants_receipts && is_ephemeral) {
        reply_error(ws, ref, NULL, "bad_data",
                    "an ephemeral message has no id: it cannot have receipts");
        return;
    }
    uint64_t retry_ms;
    if (is_ephemeral ? !ephemeral_allowed(ws, &retry_ms) : !hd_ws_publish_allowed(ws, &retry_ms)) {
        char why[128];
        snprintf(why, sizeof(why), "publishing too often (%s %u/s): retry in %llu ms",
                 is_ephemeral ? "ephemeral_rate" : "client_publish_rate",
                 is_ephemeral ? conf->ephemeral_rate : conf->client_publish_rate,
                 (unsigned long long)retry_ms);
        json_t *o = reply_new("error", NULL);
        json_object_set_new(o, "code", json_string("rate_limited"));
        json_object_set_new(o, "error", json_string(why));
        json_object_set_new(o, "retry_after_ms", json_integer((json_int_t)retry_ms));
        emit_reply(ws, o, ref);
        return;
    }
    size_t len;
    const char *name = json_channel(ws, root, ref, &len);
    if (!name)
        return;
    hd_message_t *m;
    const char *why;
    int rc = hd_message_from_json(name, len, json_object_get(root, "data"),
                                  json_object_get(root, "type"), conf->max_message_bytes, &m, &why);
    if (rc != 0) {
        reply_error(ws, ref, NULL, rc == HD_EBODYTOOBIG ? "too_large" : "bad_data", why);
        return;
    }
    /* A retry with the same key within idempotency_window gets the first publish's id. */
    json_t *ik = json_object_get(root, "idempotency_key");
    if (ik && (!json_is_string(ik) ||
               !hd_idem_key_valid(json_string_value(ik), json_string_length(ik)))) {
        hd_message_unref(m);
        reply_error(ws, ref, NULL, "bad_idempotency_key",
                    "\"idempotency_key\" must be 1-128 printable ASCII characters, no spaces");
        return;
    }
    if (ik && !is_ephemeral) /* an ephemeral message is never retried: it has no id to give */
        hd_message_set_idem_key(m, json_string_value(ik), json_string_length(ik));
    if (is_ephemeral)
        m->kind = HD_MSG_EPHEMERAL;
    if (!key_ok)
        hd_ws_stamp(ws, m); /* who published it, from the identity: not the client's to say */
    if (wants_receipts)
        hd_ws_want_receipts(ws, m);
    hd_ws_publish(ws, m, ref);
}

/* The connection's identity is settled (a token, a ticket, or anonymous): answer the auth. */
static void authenticated(ws_t *ws, const hd_identity_t *id, json_t *ref)
{
    hd_ws_pub(ws)->needs_auth = 0;
    hd_ws_life_reset(ws); /* the token's expiry and refresh notice, the auth deadline gone */
    json_t *o = reply_new("authenticated", NULL);
    if (id && hd_identity_sub(id))
        json_object_set_new(o, "sub", json_string(hd_identity_sub(id)));
    if (id && hd_identity_exp(id))
        json_object_set_new(o, "exp", json_integer((json_int_t)hd_identity_exp(id)));
    emit_reply(ws, o, ref);
}

/* The broker's answer to the auth message's ticket (hd_ws_take_ticket). */
static void on_ticket(ws_t *ws, int err, hd_identity_t *id, json_t *ref)
{
    if (err) {
        const char *why = err == HD_ENOTFOUND   ? "ticket unknown, already used or expired"
                          : err == HD_EOVERLOAD ? "the ticket could not be checked; retry"
                                                : "ticket claims unusable";
        hd_conn_log(HD_LOG_INFO, hd_ws_pub(ws)->conn, "ticket refused: %s", why);
        hd_ws_close(ws, err == HD_EOVERLOAD ? 1013 : 4401, why);
        return;
    }
    if (hd_auth_revoked(hd_identity_sub(id), hd_identity_jti(id))) {
        /* A ticket vouches for a user like a token: a revoked sub or jti is refused. */
        hd_conn_log(HD_LOG_INFO, hd_ws_pub(ws)->conn, "ticket refused: token revoked");
        hd_ws_close(ws, hd_err_ws_close(HD_ETOKENREVOKED), "token revoked");
        return;
    }
    hd_conn_set_identity(hd_ws_pub(ws)->conn, id);
    authenticated(ws, id, ref);
}

/*
 * {"op":"auth","token":JWT} or {"op":"auth","ticket":T}: the identity of a connection that
 * came without one, as its first message (within auth_timeout); {"op":"auth"} with neither (or
 * null) stays anonymous. A bad token closes the connection (4401, or 4001 when expired); a
 * ticket is taken from the broker first (input waits meanwhile), and a malformed, unknown, used
 * or expired one closes it with 4401. A second auth is refused with an error reply
 * (in-connection refresh is not this message). A ticket is also taken from an anonymous
 * connection that needed no auth (no JWT key configured: tickets are then the only identity).
 */
static void op_auth(ws_t *ws, json_t *root, json_t *ref)
{
    ws_public_t *pub = hd_ws_pub(ws);
    const hd_conf_t *conf = hd_ws_conf(ws);
    json_t *tok = json_object_get(root, "token"), *ticket = json_object_get(root, "ticket");
    hd_identity_t *id = NULL;
    char why[160];
    int has_ticket = ticket && !json_is_null(ticket);
    if (!pub->needs_auth &&
        !(has_ticket && !hd_ws_identity(ws) && !pub->is_backend && hd_auth_enabled(conf->auth))) {
        reply_error(ws, ref, NULL, "already_authenticated",
                    "auth is the first message of a connection opened without a token");
        return;
    }
    if (has_ticket) {
        if (tok && !json_is_null(tok)) {
            hd_ws_close(ws, 4401, "give one credential: a ticket or a token, not both");
            return;
        }
        if (!json_is_string(ticket) ||
            !hd_ticket_valid(json_string_value(ticket), json_string_length(ticket))) {
            HD_STAT_INC(pub->w, tickets_refused_invalid);
            hd_ws_close(ws, 4401, "malformed ticket (32 base64url characters expected)");
            return;
        }
        hd_ws_take_ticket(ws, json_string_value(ticket), on_ticket, ref);
        return;
    }
    if (tok && !json_is_null(tok)) {
        if (!json_is_string(tok)) {
            hd_ws_close(ws, 4401, "\"token\" must be a string");
            return;
        }
        int err = hd_tp_verify_token(pub->w, conf, json_string_value(tok), json_string_length(tok),
                                     &id, why, sizeof(why));
        if (err) {
            hd_conn_log(HD_LOG_INFO, pub->conn, "token refused: %s", why);
            hd_ws_close(ws, hd_err_ws_close(err), why);
            return;
        }
        hd_conn_set_identity(pub->conn, id);
    }
    authenticated(ws, id, ref);
    hd_identity_unref(id);
}

/*
 * {"op":"refresh","token":JWT} (or "type"): a fresh token for this connection, answered
 * {"type":"refreshed","exp":N}; refused with an error reply (the connection still ends at the
 * old exp), or closed with 4003 when the token is another user's (ws_refresh.c).
 */
static void op_refresh(ws_t *ws, json_t *root, json_t *ref)
{
    json_t *tok = json_object_get(root, "token");
    const char *code = NULL;
    char why[160];
    if (!json_is_string(tok)) {
        reply_error(ws, ref, NULL, "bad_token", "\"token\" must be a string (a JWT)");
        return;
    }
    int rc =
        hd_ws_refresh(ws, json_string_value(tok), json_string_length(tok), &code, why, sizeof(why));
    if (rc == WS_REFRESH_REFUSED)
        reply_error(ws, ref, NULL, code, why);
    else if (rc == WS_REFRESHED)
        hd_ws_emit_refreshed(ws, ref);
}

/* Copies src into out as printable ASCII (a parser's message may quote the input). */
static void ascii_copy(char *out, size_t outlen, const char *src)
{
    size_t n = 0;
    for (; *src && n + 1 < outlen; src++)
        out[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    out[n] = '\0';
}

/* The value of a flat member as a JSON value of its own (a new reference). */
static json_t *flat_value(const hd_jflat_member_t *m)
{
    switch (m->type) {
    case HD_JFLAT_STRING:
        return json_stringn(m->val, m->val_len);
    case HD_JFLAT_INTEGER:
        return json_integer((json_int_t)m->integer);
    case HD_JFLAT_TRUE:
        return json_true();
    case HD_JFLAT_FALSE:
        return json_false();
    default:
        return json_null();
    }
}

/*
 * The ops most messages are (subscribe, unsubscribe, ping) when the message is a simple object
 * (jflat.h): read from the scan, without a JSON tree, which costs jansson about 9,000
 * instructions for {"op":"subscribe","channel":"room-1"} (callgrind), more than the rest of
 * the op. Returns 1 when it answered the message, 0 (having done nothing) when the message is
 * for json_message's full parse: another op, or an auth still due.
 */
static int flat_message(ws_t *ws, const char *data, size_t len, const hd_jflat_t *f)
{
    const hd_jflat_member_t *opm = hd_jflat_get(f, "op");
    if (!opm || opm->type != HD_JFLAT_STRING)
        opm = hd_jflat_get(f, "type");
    int op = hd_jflat_is(opm, "subscribe")     ? 1
             : hd_jflat_is(opm, "unsubscribe") ? 2
             : hd_jflat_is(opm, "ping")        ? 3
                                               : 0;
    if (!op || hd_ws_pub(ws)->needs_auth)
        return 0;
    const hd_jflat_member_t *refm = hd_jflat_get(f, "ref");
    json_t *ref = refm ? flat_value(refm) : NULL;
    req_t req = {.flat = f, .text = data, .text_len = len};
    if (op == 1)
        op_subscribe(ws, &req, ref, 0);
    else if (op == 2)
        op_unsubscribe(ws, &req, ref);
    else
        emit_reply(ws, reply_new("pong", NULL), ref);
    json_decref(req.root);
    json_decref(ref);
    return 1;
}

static void json_message(ws_t *ws, uint8_t opcode, const char *data, size_t len)
{
    if (opcode == WSLAY_BINARY_FRAME) {
        hd_ws_close(ws, 1003, "the /ws JSON protocol takes text messages only");
        return;
    }
    hd_jflat_t flat;
    if (hd_jflat_scan(data, len, &flat) == 0 && flat_message(ws, data, len, &flat))
        return;
    json_error_t jerr;
    json_t *root = json_loadb(data, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        char why[160], text[256];
        ascii_copy(why, sizeof(why), root ? "not an object" : jerr.text);
        snprintf(text, sizeof(text), "expected one JSON object per message: %s", why);
        reply_error(ws, NULL, NULL, "bad_json", text);
        json_decref(root);
        return;
    }
    json_t *ref = json_object_get(root, "ref");
    const char *op = json_string_value(json_object_get(root, "op"));
    if (!op) /* {"type":"auth"} is accepted too, as Discord-style clients write it */
        op = json_string_value(json_object_get(root, "type"));
    if (op && strcmp(op, "auth") == 0) {
        op_auth(ws, root, ref);
        json_decref(root);
        return;
    }
    if (hd_ws_pub(ws)->needs_auth) {
        json_decref(root);
        hd_ws_close(ws, 4401,
                    "authenticate first: {\"op\":\"auth\",\"token\":..} or \"ticket\":..");
        return;
    }
    if (!op)
        reply_error(ws, ref, NULL, "bad_op",
                    "missing \"op\": subscribe, unsubscribe, publish, ack, presence, ping or "
                    "refresh");
    else if (strcmp(op, "subscribe") == 0)
        op_subscribe(ws, &(req_t){.root = root}, ref, 0);
    else if (strcmp(op, "unsubscribe") == 0)
        op_unsubscribe(ws, &(req_t){.root = root}, ref);
    else if (strcmp(op, "publish") == 0)
        op_publish(ws, root, ref);
    else if (strcmp(op, "presence") == 0)
        op_presence(ws, root, ref);
    else if (strcmp(op, "ack") == 0)
        op_ack(ws, root, ref);
    else if (strcmp(op, "ping") == 0)
        emit_reply(ws, reply_new("pong", NULL), ref);
    else if (strcmp(op, "refresh") == 0)
        op_refresh(ws, root, ref);
    else
        reply_error(ws, ref, NULL, "unknown_op",
                    "unknown \"op\": expected subscribe, unsubscribe, publish, ack, presence, "
                    "ping or refresh");
    json_decref(root);
}

static void json_on_published(ws_t *ws, int err, const hd_message_t *m, json_t *ref)
{
    if (err || !m) {
        reply_error(ws, ref, NULL, refusal_code(err), hd_strerror(err));
    } else {
        char head[64 + HD_CHANNEL_MAX + HD_ID_MAX];
        int n = m->kind == HD_MSG_EPHEMERAL /* delivered live, no id */
                    ? snprintf(head, sizeof(head),
                               "{\"type\":\"published\",\"channel\":\"%s\",\"ephemeral\":true",
                               m->channel)
                    : snprintf(head, sizeof(head),
                               "{\"type\":\"published\",\"channel\":\"%s\",\"id\":\"%s\"",
                               m->channel, m->id);
        emit_plain(ws, head, n, ref);
    }
}

const ws_proto_t hd_ws_json_proto = {
    .on_message = json_message,
    .on_published = json_on_published,
};
