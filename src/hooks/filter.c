/* SPDX-License-Identifier: MIT */
/*
 * filter.c: which events the webhook endpoints want, as the threads that publish see it
 * (hooks.c asks before it pushes anything on the hooks mailbox). The conf's endpoints never
 * change and are read straight from the immutable conf. The endpoints registered through the
 * admin API change on the hooks thread, the one writer: each change makes a new immutable view
 * (their events and channel patterns), and every reading thread keeps its own reference to the
 * view it last saw.
 *
 *   hooks thread: hk_filter_set --(lock)--> cur = new view, gen++
 *   any thread:   gen == my gen ? read my view : (lock) my view = cur, my gen = gen
 *
 * The lock is taken by a reader only the first time it reads after a change, never per publish:
 * a publish costs one acquire load of gen when an API endpoint exists, nothing more when none
 * does. A view's reference count is only touched under the lock, so it needs no atomics. The
 * readers are kept in a list the filter frees with itself (a thread that stops reading keeps
 * its view until then: one view per thread that ever published, at most).
 */
#include "internal.h"

#include <string.h>

typedef struct view_ep_s {
    unsigned events;
    size_t n_patterns;
    char patterns[HD_WEBHOOK_MAX_PATTERNS][HD_WEBHOOK_PATTERN_SIZE];
} view_ep_t;

typedef struct view_s {
    unsigned refs; /* under the filter's lock */
    size_t n;
    view_ep_t eps[];
} view_t;

typedef struct reader_s {
    hd_list_t link; /* in the filter's readers, under its lock */
    uint64_t gen;
    view_t *v;
} reader_t;

struct hk_filter_s {
    const hd_conf_t *conf;
    unsigned conf_events; /* the conf's endpoints' events, or-ed */
    unsigned events;      /* atomic: conf_events and the view's */
    size_t n_api;         /* atomic: endpoints in cur */
    uint64_t gen;         /* atomic: cur's generation */
    uint64_t serial;      /* this filter among those the process made */
    uv_mutex_t lock;
    view_t *cur;       /* under lock */
    hd_list_t readers; /* under lock */
};

/* The calling thread's reader, valid while tl_serial is its filter's serial (a reader is freed
 * with its filter, so its pointer is not followed before the serial says it is still there). */
static __thread reader_t *tl_reader;
static __thread uint64_t tl_serial;
static uint64_t next_serial;

static void view_unref(view_t *v)
{
    if (v && --v->refs == 0)
        free(v);
}

hk_filter_t *hk_filter_new(const hd_conf_t *conf)
{
    hk_filter_t *f = hd_calloc(1, sizeof(*f));
    f->conf = conf;
    for (size_t i = 0; i < conf->n_webhooks; i++)
        f->conf_events |= conf->webhooks[i].events;
    f->events = f->conf_events;
    f->serial = __atomic_add_fetch(&next_serial, 1, __ATOMIC_RELAXED);
    uv_mutex_init(&f->lock);
    hd_list_init(&f->readers);
    return f;
}

void hk_filter_free(hk_filter_t *f)
{
    if (!f)
        return;
    while (!hd_list_empty(&f->readers)) {
        reader_t *r = hd_container_of(f->readers.next, reader_t, link);
        hd_list_remove(&r->link);
        view_unref(r->v);
        free(r);
    }
    view_unref(f->cur);
    uv_mutex_destroy(&f->lock);
    free(f);
}

void hk_filter_set(hk_filter_t *f, const hd_webhook_def_t *const *defs, size_t n)
{
    view_t *v = NULL;
    unsigned events = f->conf_events;
    if (n > 0) {
        v = hd_calloc(1, sizeof(*v) + n * sizeof(v->eps[0]));
        v->refs = 1;
        v->n = n;
        for (size_t i = 0; i < n; i++) {
            v->eps[i].events = defs[i]->events;
            v->eps[i].n_patterns = defs[i]->n_patterns;
            memcpy(v->eps[i].patterns, defs[i]->patterns, sizeof(v->eps[i].patterns));
            events |= defs[i]->events;
        }
    }
    uv_mutex_lock(&f->lock);
    view_t *old = f->cur;
    f->cur = v;
    __atomic_store_n(&f->events, events, __ATOMIC_RELAXED);
    __atomic_store_n(&f->n_api, n, __ATOMIC_RELAXED);
    __atomic_add_fetch(&f->gen, 1, __ATOMIC_RELEASE);
    view_unref(old);
    uv_mutex_unlock(&f->lock);
}

unsigned hk_filter_events(const hk_filter_t *f)
{
    return __atomic_load_n(&f->events, __ATOMIC_RELAXED);
}

/* The calling thread's view, brought up to date (the lock only after a change). */
static const view_t *my_view(hk_filter_t *f)
{
    reader_t *r = tl_serial == f->serial ? tl_reader : NULL;
    uint64_t gen = __atomic_load_n(&f->gen, __ATOMIC_ACQUIRE);
    if (r && r->gen == gen)
        return r->v;
    uv_mutex_lock(&f->lock);
    if (!r) {
        r = hd_calloc(1, sizeof(*r));
        hd_list_insert_tail(&f->readers, &r->link);
        tl_reader = r;
        tl_serial = f->serial;
    }
    view_unref(r->v);
    r->v = f->cur;
    if (r->v)
        r->v->refs++;
    r->gen = __atomic_load_n(&f->gen, __ATOMIC_RELAXED);
    uv_mutex_unlock(&f->lock);
    return r->v;
}

int hk_filter_wanted(hk_filter_t *f, unsigned ev, const char *channel, size_t len)
{
    const hd_conf_t *c = f->conf;
    if (!(hk_filter_events(f) & ev))
        return 0;
    for (size_t i = 0; i < c->n_webhooks; i++) {
        const hd_webhook_def_t *d = &c->webhooks[i];
        if ((d->events & ev) && hd_webhook_def_matches(d, channel, len))
            return 1;
    }
    if (__atomic_load_n(&f->n_api, __ATOMIC_RELAXED) == 0)
        return 0;
    const view_t *v = my_view(f);
    for (size_t i = 0; v && i < v->n; i++) {
        if ((v->eps[i].events & ev) &&
            hd_webhook_patterns_match(v->eps[i].patterns, v->eps[i].n_patterns, channel, len))
            return 1;
    }
    return 0;
}
