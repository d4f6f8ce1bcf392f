/* SPDX-License-Identifier: MIT */
/*
 * ws_hook.c: a /ws subscribe op on a channel under channel_rule subscribe=hook asks the
 * application's backend (the authorize hook, docs/webhooks.md "Backend hooks") through the
 * hooks thread. The answer comes later, so the connection's input waits meanwhile (what the
 * client sends after the op is read once the answer came, in order: ops are never reordered),
 * and the connection's memory stays until the answer (hd_ws_enter/leave) even if the peer
 * leaves. The hooks thread answers every question within about twice the hook's timeout (its
 * client's timers), so input never waits longer.
 */
#include "ws_internal.h"

#include "herald/hooks.h"

#include <string.h>

typedef struct ws_ask_s {
    ws_t *ws;
    ws_hook_cb done;
    json_t *root, *ref;
} ws_ask_t;

static void resume(ws_t *ws)
{
    if (hd_ws_is_open(ws) && !ws->is_throttled) {
        hd_conn_read_start(ws->pub.conn);
        hd_ws_read_input(ws); /* what came after the subscribe op */
    }
}

static void on_answer(hd_hooks_authz_t *a)
{
    ws_ask_t *k = a->data;
    ws_t *ws = k->ws;
    hd_worker_t *w = a->worker;
    const hd_hook_def_t *def = hd_worker_conf(w)->authorize_hook;
    HD_STAT_DEC(w, authz_pending);
    ws->is_authing = 0;
    if (hd_ws_is_open(ws)) {
        int verdict = a->verdict;
        if (verdict == HD_HOOKS_ERROR && def && def->allow_on_error)
            verdict = HD_HOOKS_ALLOW;
        if (verdict == HD_HOOKS_DENY)
            HD_STAT_INC(w, authz_denied);
        else if (verdict == HD_HOOKS_ERROR)
            HD_STAT_INC(w, authz_refused_error);
        if (verdict != HD_HOOKS_ALLOW)
            hd_conn_log(HD_LOG_INFO, ws->pub.conn, "authorize_hook: subscribe refused: %s",
                        a->reason);
        k->done(ws, verdict, verdict == HD_HOOKS_DENY ? "forbidden" : "backend_unavailable",
                verdict == HD_HOOKS_DENY ? a->reason
                                         : "the authorization backend failed; retry later",
                k->root, k->ref);
        resume(ws);
    }
    hd_ws_leave(ws);
    json_decref(k->root);
    json_decref(k->ref);
    free(k);
    hd_hooks_authz_free(a);
}

void hd_ws_ask_hook(ws_t *ws, const char *channel, size_t len, hd_auth_action_t action,
                    ws_hook_cb done, json_t *root, json_t *ref)
{
    hd_worker_t *w = ws->pub.w;
    const hd_hook_def_t *def = hd_worker_conf(w)->authorize_hook;
    if (!def || !hd_tp_hook_ask_room(w, def)) {
        done(ws, HD_HOOKS_ERROR, def ? "backend_busy" : "backend_unavailable",
             def ? "too many subscribes waiting for the authorization backend; retry later"
                 : "no authorize_hook is configured",
             root, ref);
        return;
    }
    json_t *ctx = ws->hook_ctx ? json_incref(ws->hook_ctx) : json_object();
    hd_hooks_authz_t *a = hd_hooks_authz_new();
    a->body = hd_tp_hook_question(action, "websocket", &channel, &len, 1, hd_ws_identity(ws), ctx,
                                  &a->body_len);
    json_decref(ctx);
    if (!a->body) {
        hd_hooks_authz_free(a);
        done(ws, HD_HOOKS_ERROR, "backend_unavailable",
             "the question to the authorization backend failed", root, ref);
        return;
    }
    ws_ask_t *k = hd_calloc(1, sizeof(*k));
    k->ws = ws;
    k->done = done;
    k->root = json_incref(root);
    k->ref = ref ? json_incref(ref) : NULL;
    hd_ws_enter(ws); /* left in on_answer */
    ws->is_authing = 1;
    a->worker = w;
    a->cb = on_answer;
    a->data = k;
    HD_STAT_INC(w, authz_pending);
    hd_hooks_authorize(a);
}
