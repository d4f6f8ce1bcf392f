/* SPDX-License-Identifier: MIT */
/*
 * revoked.c: the revocation check's call point (auth.h, hd_auth_revoked). The transports ask it
 * when a connection refreshes its token in place (src/transport/lifetime.c's callers); the
 * revoked set itself (POST /admin/revoke, by sub or jti, shared over Redis) is built behind this
 * one function. Until then nothing is revoked.
 */
#include "internal.h"

int hd_auth_revoked(const char *sub, const char *jti)
{
    (void)sub;
    (void)jti;
    return 0;
}
