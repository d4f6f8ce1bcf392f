/* SPDX-License-Identifier: MIT */
/* test_router.c: unit tests of src/http/router.c: exact and prefix routes, longest match,
 * 404 vs 405, the Allow mask and its string, GET implying HEAD. */
#include "herald/http.h"

#include "test.h"

/* Handlers are compared by address; they are never called here. */
static void h_a(hd_req_t *req, void *arg)
{
    (void)req;
    (void)arg;
}
static void h_b(hd_req_t *req, void *arg)
{
    (void)req;
    (void)arg;
}
static void h_c(hd_req_t *req, void *arg)
{
    (void)req;
    (void)arg;
}

static int tag_a, tag_b, tag_c, tag_d;

/* Matches `path`; returns the result code and fills cb/arg/allow. */
static int match(const hd_router_t *r, unsigned method, const char *path, hd_handler_cb *cb,
                 void **arg, unsigned *allow)
{
    *cb = NULL;
    *arg = NULL;
    *allow = 0;
    return hd_router_match(r, method, path, strlen(path), cb, arg, allow);
}

static void test_empty(void)
{
    hd_router_t *r = hd_router_new();
    hd_handler_cb cb;
    void *arg;
    unsigned allow;
    T_EQ_INT(match(r, HD_M_GET, "/", &cb, &arg, &allow), HD_ENOTFOUND);
    T_EQ_INT(match(r, HD_M_GET, "", &cb, &arg, &allow), HD_ENOTFOUND);
    hd_router_free(r);
    hd_router_free(NULL);
}

static void test_exact_and_prefix(void)
{
    hd_router_t *r = hd_router_new();
    hd_handler_cb cb;
    void *arg;
    unsigned allow;
    hd_router_add(r, HD_M_GET, "/healthz", 0, h_a, &tag_a);
    hd_router_add(r, HD_M_GET | HD_M_POST, "/sub/", 1, h_b, &tag_b);

    T_EQ_INT(match(r, HD_M_GET, "/healthz", &cb, &arg, &allow), 0);
    T_TRUE(cb == h_a && arg == &tag_a);
    /* An exact route matches only its path. */
    T_EQ_INT(match(r, HD_M_GET, "/healthz/", &cb, &arg, &allow), HD_ENOTFOUND);
    T_EQ_INT(match(r, HD_M_GET, "/health", &cb, &arg, &allow), HD_ENOTFOUND);
    T_EQ_INT(match(r, HD_M_GET, "/healthzz", &cb, &arg, &allow), HD_ENOTFOUND);
    /* A prefix route matches itself and everything below. */
    T_EQ_INT(match(r, HD_M_GET, "/sub/", &cb, &arg, &allow), 0);
    T_TRUE(cb == h_b && arg == &tag_b);
    T_EQ_INT(match(r, HD_M_POST, "/sub/a/b/c", &cb, &arg, &allow), 0);
    T_TRUE(cb == h_b);
    T_EQ_INT(match(r, HD_M_GET, "/sub", &cb, &arg, &allow), HD_ENOTFOUND);
    T_EQ_INT(match(r, HD_M_GET, "/su", &cb, &arg, &allow), HD_ENOTFOUND);
    T_EQ_INT(match(r, HD_M_GET, "", &cb, &arg, &allow), HD_ENOTFOUND);

    /* Only `len` bytes of the path count: the rest of a URL (the query) is not looked at. */
    const char *url = "/healthz?x=1";
    T_EQ_INT(hd_router_match(r, HD_M_GET, url, 8, &cb, &arg, &allow), 0);
    T_TRUE(cb == h_a);
    T_EQ_INT(hd_router_match(r, HD_M_GET, url, strlen(url), &cb, &arg, &allow), HD_ENOTFOUND);
    hd_router_free(r);
}

static void test_longest_match(void)
{
    hd_router_t *r = hd_router_new();
    hd_handler_cb cb;
    void *arg;
    unsigned allow;
    hd_router_add(r, HD_M_GET, "/", 1, h_a, &tag_a);
    hd_router_add(r, HD_M_GET, "/a/b/", 1, h_c, &tag_c); /* added before the shorter one */
    hd_router_add(r, HD_M_GET, "/a/", 1, h_b, &tag_b);
    hd_router_add(r, HD_M_GET, "/a/", 0, h_c, &tag_d);

    T_EQ_INT(match(r, HD_M_GET, "/", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_a);
    T_EQ_INT(match(r, HD_M_GET, "/zzz", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_a);
    T_EQ_INT(match(r, HD_M_GET, "/a", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_a);
    /* An exact route beats a prefix route of the same path. */
    T_EQ_INT(match(r, HD_M_GET, "/a/", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_d);
    T_EQ_INT(match(r, HD_M_GET, "/a/x", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_b);
    T_EQ_INT(match(r, HD_M_GET, "/a/b", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_b);
    T_EQ_INT(match(r, HD_M_GET, "/a/b/", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_c);
    T_EQ_INT(match(r, HD_M_GET, "/a/b/c/d", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_c);
    hd_router_free(r);
}

static void test_method_not_allowed(void)
{
    hd_router_t *r = hd_router_new();
    hd_handler_cb cb;
    void *arg;
    unsigned allow;
    hd_router_add(r, HD_M_GET, "/healthz", 0, h_a, &tag_a);
    hd_router_add(r, HD_M_POST, "/pub/", 1, h_b, &tag_b);
    hd_router_add(r, HD_M_DELETE, "/pub/", 1, h_c, &tag_c); /* same path, other methods */
    hd_router_add(r, HD_M_GET | HD_M_POST | HD_M_PUT | HD_M_DELETE | HD_M_OPTIONS | HD_M_PATCH,
                  "/all", 0, h_a, &tag_d);

    T_EQ_INT(match(r, HD_M_POST, "/healthz", &cb, &arg, &allow), HD_EMETHOD);
    T_EQ_INT(allow, HD_M_GET | HD_M_HEAD);
    T_TRUE(cb == NULL); /* nothing set on failure */

    /* Several routes on one path: their methods are merged, each still dispatches to its own. */
    T_EQ_INT(match(r, HD_M_POST, "/pub/x", &cb, &arg, &allow), 0);
    T_TRUE(cb == h_b && arg == &tag_b);
    T_EQ_INT(match(r, HD_M_DELETE, "/pub/x", &cb, &arg, &allow), 0);
    T_TRUE(cb == h_c && arg == &tag_c);
    T_EQ_INT(match(r, HD_M_GET, "/pub/x", &cb, &arg, &allow), HD_EMETHOD);
    T_EQ_INT(allow, HD_M_POST | HD_M_DELETE);
    T_EQ_INT(match(r, HD_M_OTHER, "/all", &cb, &arg, &allow), HD_EMETHOD);
    T_EQ_INT(allow,
             HD_M_GET | HD_M_HEAD | HD_M_POST | HD_M_PUT | HD_M_DELETE | HD_M_OPTIONS | HD_M_PATCH);
    /* Unknown path: 404, not 405. */
    T_EQ_INT(match(r, HD_M_POST, "/nothing", &cb, &arg, &allow), HD_ENOTFOUND);
    T_EQ_INT(allow, 0);

    /* The longest matching path decides the method, even when a shorter route would accept it. */
    hd_router_add(r, HD_M_GET, "/", 1, h_a, &tag_a);
    T_EQ_INT(match(r, HD_M_GET, "/pub/x", &cb, &arg, &allow), HD_EMETHOD);
    T_EQ_INT(allow, HD_M_POST | HD_M_DELETE);
    T_EQ_INT(match(r, HD_M_GET, "/nothing", &cb, &arg, &allow), 0);
    T_TRUE(arg == &tag_a);
    hd_router_free(r);
}

static void test_get_implies_head(void)
{
    hd_router_t *r = hd_router_new();
    hd_handler_cb cb;
    void *arg;
    unsigned allow;
    hd_router_add(r, HD_M_GET, "/g", 0, h_a, &tag_a);
    hd_router_add(r, HD_M_POST, "/p", 0, h_b, &tag_b);
    hd_router_add(r, HD_M_HEAD, "/h", 0, h_c, &tag_c);
    T_EQ_INT(match(r, HD_M_HEAD, "/g", &cb, &arg, &allow), 0);
    T_TRUE(cb == h_a);
    T_EQ_INT(match(r, HD_M_HEAD, "/p", &cb, &arg, &allow), HD_EMETHOD);
    T_EQ_INT(allow, HD_M_POST);
    /* HEAD does not imply GET. */
    T_EQ_INT(match(r, HD_M_HEAD, "/h", &cb, &arg, &allow), 0);
    T_EQ_INT(match(r, HD_M_GET, "/h", &cb, &arg, &allow), HD_EMETHOD);
    T_EQ_INT(allow, HD_M_HEAD);
    hd_router_free(r);
}

static void test_allow_string(void)
{
    char out[100];
    hd_http_allow_string(HD_M_GET | HD_M_HEAD, out, sizeof(out));
    T_EQ_STR(out, "GET, HEAD");
    hd_http_allow_string(HD_M_POST, out, sizeof(out));
    T_EQ_STR(out, "POST");
    hd_http_allow_string(0, out, sizeof(out));
    T_EQ_STR(out, "");
    hd_http_allow_string(HD_M_PATCH | HD_M_GET | HD_M_DELETE, out, sizeof(out));
    T_EQ_STR(out, "GET, DELETE, PATCH");
    hd_http_allow_string(HD_M_GET | HD_M_HEAD | HD_M_POST | HD_M_PUT | HD_M_DELETE | HD_M_OPTIONS |
                             HD_M_PATCH | HD_M_OTHER,
                         out, sizeof(out));
    T_EQ_STR(out, "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH");
    /* A short buffer holds whole names only, always NUL-terminated. */
    char small[12];
    hd_http_allow_string(HD_M_GET | HD_M_HEAD | HD_M_POST, small, sizeof(small));
    T_EQ_STR(small, "GET, HEAD");
    char tiny[3];
    hd_http_allow_string(HD_M_GET, tiny, sizeof(tiny));
    T_EQ_STR(tiny, "");
}

int main(void)
{
    T_RUN(test_empty);
    T_RUN(test_exact_and_prefix);
    T_RUN(test_longest_match);
    T_RUN(test_method_not_allowed);
    T_RUN(test_get_implies_head);
    T_RUN(test_allow_string);
    T_DONE();
}
