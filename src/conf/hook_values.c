/* SPDX-License-Identifier: MIT */
/*
 * hook_values.c: the value types of the hooks' directives (conf_internal.h): webhook (each line
 * adds an endpoint), authorize_hook and notify_hook (one backend each). Their words are parsed by
 * webhook_def.c and hook_def.c; here a parsed definition is stored in hd_conf_t, disposed of and
 * compared. values.c's table of operations names these functions.
 */
#include "conf_internal.h"

#include <stdlib.h>
#include <string.h>

/* "off" alone: no webhooks, no hook (what the type's dispose leaves). */
static int is_off(int argc, const char *const *argv)
{
    return argc == 1 && strcmp(argv[0], "off") == 0;
}

/* A backend's definition (size bytes at def) stored in field: allocated by its first line,
 * overwritten by the next (the last line wins). Returns the field's new value. */
static void *store_def(void *field, const void *def, size_t size)
{
    if (field == NULL)
        field = hd_malloc(size);
    memcpy(field, def, size);
    return field;
}

/* Two snapshots' definitions of size bytes: both absent, or both there with the same bytes. */
static int same_def(const void *x, const void *y, size_t size)
{
    if (x == NULL || y == NULL)
        return x == y;
    return memcmp(x, y, size) == 0;
}

/* ---- webhooks ------------------------------------------------------------------------------ */

int hd_conf_set_webhook(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_webhook_def_t w;
    char why[256];

    if (is_off(argc, argv)) {
        hd_conf_dispose_webhook(c, d);
        return 0;
    }
    if (c->n_webhooks >= 256)
        return hd_conf_fail(ld, ld->origin, d->name, "more than 256 webhooks");
    if (hd_webhook_def_parse(&w, (unsigned)c->n_webhooks + 1, argc, argv, why, sizeof(why)) < 0)
        return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
    for (size_t i = 0; i < c->n_webhooks; i++) {
        if (strcmp(c->webhooks[i].name, w.name) == 0)
            return hd_conf_fail(ld, ld->origin, d->name, "name \"%s\" given twice", w.name);
    }
    c->webhooks = hd_realloc(c->webhooks, (c->n_webhooks + 1) * sizeof(*c->webhooks));
    c->webhooks[c->n_webhooks++] = w;
    return 0;
}

void hd_conf_dispose_webhook(hd_conf_t *c, const directive_t *d)
{
    (void)d;
    free(c->webhooks);
    c->webhooks = NULL;
    c->n_webhooks = 0;
}

int hd_conf_equal_webhook(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    (void)d;
    return hd_conf_same_items(a->webhooks, a->n_webhooks, b->webhooks, b->n_webhooks,
                              sizeof(*a->webhooks));
}

/* ---- authorize_hook ------------------------------------------------------------------------ */

int hd_conf_set_hook(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_hook_def_t h;
    char why[256];

    if (is_off(argc, argv)) {
        hd_conf_dispose_hook(c, d);
        return 0;
    }
    if (hd_hook_def_parse(&h, argc, argv, why, sizeof(why)) < 0)
        return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
    c->authorize_hook = store_def(c->authorize_hook, &h, sizeof(h));
    return 0;
}

void hd_conf_dispose_hook(hd_conf_t *c, const directive_t *d)
{
    (void)d;
    free(c->authorize_hook);
    c->authorize_hook = NULL;
}

int hd_conf_equal_hook(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    (void)d;
    return same_def(a->authorize_hook, b->authorize_hook, sizeof(*a->authorize_hook));
}

/* ---- notify_hook --------------------------------------------------------------------------- */

int hd_conf_set_notify(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_notify_def_t n;
    char why[256];

    if (is_off(argc, argv)) {
        hd_conf_dispose_notify(c, d);
        return 0;
    }
    if (hd_notify_def_parse(&n, argc, argv, why, sizeof(why)) < 0)
        return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
    c->notify_hook = store_def(c->notify_hook, &n, sizeof(n));
    return 0;
}

void hd_conf_dispose_notify(hd_conf_t *c, const directive_t *d)
{
    (void)d;
    free(c->notify_hook);
    c->notify_hook = NULL;
}

int hd_conf_equal_notify(const hd_conf_t *a, const hd_conf_t *b, const directive_t *d)
{
    (void)d;
    return same_def(a->notify_hook, b->notify_hook, sizeof(*a->notify_hook));
}
