/* SPDX-License-Identifier: MIT */
/*
 * hist.c: a log-linear histogram in the style of HdrHistogram. Values below 256 have a bucket
 * each; above, every power of two is cut into 128 linear sub-buckets, so a reported value is
 * within 0.4% of the true one at any magnitude, with a fixed 58 KiB of counters. Histograms of
 * several client processes merge by adding counters.
 */
#include "bench.h"

#include <string.h>

static uint32_t index_of(uint64_t v)
{
    if (v < HIST_SUB)
        return (uint32_t)v;
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(v);
    uint32_t shift = msb - (HIST_SUB_BITS - 1);
    uint32_t top = (uint32_t)(v >> shift); /* in [HALF, SUB) */
    return HIST_SUB + (shift - 1) * HIST_HALF + (top - HIST_HALF);
}

/* The middle of bucket i. */
static uint64_t value_of(uint32_t i)
{
    if (i < HIST_SUB)
        return i;
    uint32_t j = i - HIST_SUB;
    uint32_t shift = j / HIST_HALF + 1;
    uint64_t top = j % HIST_HALF + HIST_HALF;
    uint64_t lo = top << shift, hi = ((top + 1) << shift) - 1;
    return lo + (hi - lo) / 2;
}

void hist_record(hist_t *h, uint64_t v)
{
    h->counts[index_of(v)]++;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
}

void hist_merge(hist_t *into, const hist_t *from)
{
    if (from->count == 0)
        return;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    if (into->count == 0 || from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
    into->count += from->count;
}

uint64_t hist_percentile(const hist_t *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    uint64_t want = (uint64_t)((p / 100.0) * (double)h->count + 0.5);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t v = value_of(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

void hist_foreach(const hist_t *h, void (*cb)(uint64_t v, double frac, void *arg), void *arg)
{
    uint64_t seen = 0;
    for (uint32_t i = 0; i < HIST_BUCKETS && seen < h->count; i++) {
        if (h->counts[i] == 0)
            continue;
        seen += h->counts[i];
        uint64_t v = value_of(i);
        if (v > h->max)
            v = h->max;
        cb(v, (double)seen / (double)h->count, arg);
    }
}
