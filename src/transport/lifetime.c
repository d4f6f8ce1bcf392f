/* SPDX-License-Identifier: MIT */
/*
 * lifetime.c: how long a stream stays authorized (docs/auth.md, "Staying authorized"). A
 * connection that proved an identity with an exp lives until exp + auth_clock_skew (when
 * auth_expire_connections is on), and a transport that can talk to its client tells it to
 * refresh auth_refresh_before ahead. The transports keep an hd_tp_life_t in their stream state
 * and fold its next event into the one timer their connection already has (the worker's
 * deadline heap, net/conn_timeout.c): nothing is checked per delivered message, nothing is armed
 * per connection beyond that timer, and a connection without exp costs nothing.
 *
 * Times are wall-clock (exp is unix seconds): when the connection's timer fires, the wall clock
 * is read again, so a clock stepped meanwhile moves the event, never skips it.
 */
#include "herald/transport.h"

#include <time.h>

/* The clock time(NULL) reads (the coarse one on Linux), which token verification uses: once an
 * event is due here, every later verification sees the token as expired too. */
static int64_t wall_ms(void)
{
    struct timespec ts;
#ifdef CLOCK_REALTIME_COARSE
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
#else
    clock_gettime(CLOCK_REALTIME, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hd_tp_life_set(hd_tp_life_t *life, const hd_conf_t *conf, const hd_identity_t *id,
                    int can_notify)
{
    int64_t exp = hd_identity_exp(id);
    life->refresh_at_ms = life->expire_at_ms = 0;
    if (!id || exp <= 0 || !conf->auth_expire_connections)
        return;
    life->expire_at_ms = exp * 1000 + (int64_t)conf->auth_clock_skew_ms;
    if (can_notify && conf->auth_refresh_before_ms) {
        int64_t at = exp * 1000 - (int64_t)conf->auth_refresh_before_ms;
        life->refresh_at_ms = at > 0 ? at : 1;
    }
}

uint64_t hd_tp_life_wait_ms(const hd_tp_life_t *life)
{
    int64_t at = life->refresh_at_ms;
    if (life->expire_at_ms && (!at || life->expire_at_ms < at))
        at = life->expire_at_ms;
    if (!at)
        return UINT64_MAX;
    int64_t now = wall_ms();
    return at > now ? (uint64_t)(at - now) : 0;
}

int hd_tp_life_due(hd_tp_life_t *life)
{
    if (!life->expire_at_ms && !life->refresh_at_ms)
        return HD_TP_LIFE_NONE;
    int64_t now = wall_ms();
    if (life->expire_at_ms && now >= life->expire_at_ms)
        return HD_TP_LIFE_EXPIRED;
    if (life->refresh_at_ms && now >= life->refresh_at_ms) {
        life->refresh_at_ms = 0; /* told once per token */
        return HD_TP_LIFE_REFRESH;
    }
    return HD_TP_LIFE_NONE;
}
