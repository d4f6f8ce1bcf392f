/* SPDX-License-Identifier: MIT */
/*
 * broker.c: the process's broker, whichever it is (embedded or the Redis bridge). Set once by
 * main before the workers run and cleared after they are gone, so readers need no atomics. It
 * lives in pubsub, beside the interface it names, so that the hub and the transports reach a
 * broker without depending on any one of them (calls run broker -> pubsub, never back).
 */
#include "herald/pubsub.h"

static hd_broker_t *the_broker;

void hd_broker_set(hd_broker_t *b)
{
    the_broker = b;
}

hd_broker_t *hd_broker_get(void)
{
    return the_broker;
}
