/* SPDX-License-Identifier: MIT */
/* router.c: method + path -> handler; exact and prefix routes, longest match wins. */
#include "herald/http.h"

#include <string.h>

typedef struct route_s {
    char *path;
    size_t len;
    unsigned methods;
    int is_prefix;
    hd_handler_cb cb;
    void *arg;
} route_t;

struct hd_router_s {
    route_t *routes;
    size_t n;
};

hd_router_t *hd_router_new(void)
{
    return hd_calloc(1, sizeof(hd_router_t));
}

void hd_router_free(hd_router_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->routes[i].path);
    free(r->routes);
    free(r);
}

void hd_router_add(hd_router_t *r, unsigned methods, const char *path, int is_prefix,
                   hd_handler_cb cb, void *arg)
{
    if (methods & HD_M_GET)
        methods |= HD_M_HEAD;
    r->routes = hd_realloc(r->routes, (r->n + 1) * sizeof(route_t));
    r->routes[r->n++] = (route_t){hd_strdup(path), strlen(path), methods, is_prefix, cb, arg};
}

int hd_router_match(const hd_router_t *r, unsigned method, const char *path, size_t len,
                    hd_handler_cb *cb, void **arg, unsigned *allow)
{
    const route_t *best = NULL;
    unsigned allowed = 0;
    size_t best_len = 0;
    int path_found = 0;
    /* Pick the longest matching path first, then check the method on that path only. */
    for (size_t i = 0; i < r->n; i++) {
        const route_t *rt = &r->routes[i];
        int hit = rt->is_prefix ? (len >= rt->len && memcmp(path, rt->path, rt->len) == 0)
                                : (len == rt->len && memcmp(path, rt->path, len) == 0);
        if (!hit)
            continue;
        size_t weight = rt->len * 2 + (rt->is_prefix ? 0 : 1);
        if (!path_found || weight > best_len) {
            best_len = weight;
            allowed = 0;
            best = NULL;
            path_found = 1;
        }
        if (weight == best_len) {
            allowed |= rt->methods;
            if (rt->methods & method)
                best = rt;
        }
    }
    if (!path_found)
        return HD_ENOTFOUND;
    if (!best) {
        *allow = allowed;
        return HD_EMETHOD;
    }
    *cb = best->cb;
    *arg = best->arg;
    return 0;
}

void hd_http_allow_string(unsigned mask, char *out, size_t len)
{
    static const char *names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    size_t n = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < HD_ARRAY_SIZE(names); i++) {
        if (!(mask & (1u << i)))
            continue;
        int k = snprintf(out + n, len - n, "%s%s", n ? ", " : "", names[i]);
        if (k < 0 || (size_t)k >= len - n) {
            out[n] = '\0'; /* drop the partial name snprintf wrote */
            break;
        }
        n += (size_t)k;
    }
}
