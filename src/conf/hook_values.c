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

/* ---- webhooks ------------------------------------------------------------------------------ */

int hd_conf_set_webhook(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_webhook_def_t w;
    char why[256];

    if (argc == 1 && strcmp(argv[0], "off") == 0) {
        free(c->webhooks);
        c->webhooks = NULL;
        c->n_webhooks = 0;
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
    return a->n_webhooks == b->n_webhooks &&
           (a->n_webhooks == 0 ||
            memcmp(a->webhooks, b->webhooks, a->n_webhooks * sizeof(*a->webhooks)) == 0);
}

/* ---- authorize_hook ------------------------------------------------------------------------ */

int hd_conf_set_hook(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_hook_def_t h;
    char why[256];

    if (argc == 1 && strcmp(argv[0], "off") == 0) {
        free(c->authorize_hook);
        c->authorize_hook = NULL;
        return 0;
    }
    if (hd_hook_def_parse(&h, argc, argv, why, sizeof(why)) < 0)
        return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
    if (!c->authorize_hook)
        c->authorize_hook = hd_malloc(sizeof(*c->authorize_hook));
    *c->authorize_hook = h;
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
    if (!a->authorize_hook || !b->authorize_hook)
        return a->authorize_hook == b->authorize_hook;
    return memcmp(a->authorize_hook, b->authorize_hook, sizeof(*a->authorize_hook)) == 0;
}

/* ---- notify_hook --------------------------------------------------------------------------- */

int hd_conf_set_notify(loader_t *ld, const directive_t *d, int argc, const char *const *argv)
{
    hd_conf_t *c = ld->conf;
    hd_notify_def_t n;
    char why[256];

    if (argc == 1 && strcmp(argv[0], "off") == 0) {
        free(c->notify_hook);
        c->notify_hook = NULL;
        return 0;
    }
    if (hd_notify_def_parse(&n, argc, argv, why, sizeof(why)) < 0)
        return hd_conf_fail(ld, ld->origin, d->name, "%s", why);
    if (!c->notify_hook)
        c->notify_hook = hd_malloc(sizeof(*c->notify_hook));
    *c->notify_hook = n;
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
    if (!a->notify_hook || !b->notify_hook)
        return a->notify_hook == b->notify_hook;
    return memcmp(a->notify_hook, b->notify_hook, sizeof(*a->notify_hook)) == 0;
}
