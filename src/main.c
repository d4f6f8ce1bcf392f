/* SPDX-License-Identifier: MIT */
/*
 * main.c: command line, configuration, signals, pidfile, service-manager readiness, and the
 * node's start and stop. Nothing else lives here.
 */
#include "herald/api.h"
#include "herald/common.h"
#include "herald/conf.h"
#include "herald/hooks.h"
#include "herald/http.h"
#include "herald/log.h"
#include "herald/server.h"
#include "herald/pubsub.h"
#include "herald/tls.h"
#include "herald/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_START = 1, EXIT_USAGE = 2, EXIT_CONF = 78 /* EX_CONFIG */ };

typedef struct app_s {
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
    const char *conf_path;
    const char **overrides;
    size_t n_overrides;
    hd_conf_t *conf;
    hd_server_t *server;
    hd_router_t *router;
    char *pidfile; /* as started: these need a restart to change */
    char *log_file;
    uint64_t stop_deadline_ms; /* the main loop's clock: SIGTERM + shutdown_timeout */
    hd_hooks_t *hooks_left;    /* the stop gave up waiting for its thread (stop_hooks) */
    uint64_t hooks_wait_ms;    /* how long it waited */
    int exit_code;
} app_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: herald [-c FILE] [-o 'DIRECTIVE VALUE']... [-t]\n"
                 "       herald --version | --help | --reference\n"
                 "\n"
                 "  -c, --conf FILE      configuration file (default conf/herald.conf)\n"
                 "  -o, --set 'D VALUE'  set a directive, overriding the file (repeatable)\n"
                 "  -t, --test           check the configuration (and TLS files) and exit\n"
                 "      --reference      print every directive with its default and exit\n"
                 "  -v, --version        print the version and exit\n"
                 "  -h, --help           this text\n"
                 "\n"
                 "Signals: TERM/INT graceful shutdown, HUP reload, USR1 reopen log files.\n"
                 "Exit status: 0 clean stop, 1 start failure (port, certificate, pidfile),\n"
                 "             2 usage, 78 configuration error.\n");
}

/* ---- service manager readiness (sd_notify's datagram protocol, no libsystemd) ---- */

static void notify_systemd(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@') ||
        strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "%s\nMAINPID=%ld", state, (long)getpid());
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        hd_log_warn("NOTIFY_SOCKET %s: %s", path, strerror(errno));
    close(fd);
}

/* ---- handlers that belong to no transport ---- */

static void on_healthz(hd_req_t *req, void *arg)
{
    (void)arg;
    static const char body[] = "{\"status\":\"ok\"}";
    hd_broker_t *b = hd_broker_get();
    if (b && strcmp(b->ops->name, "redis") == 0) {
        /* A node cut from Redis can neither publish nor deliver: degraded, 503. */
        hd_broker_stats_t st;
        b->ops->get_stats(b, &st);
        int up = st.state == HD_BROKER_UP;
        const char *text = up ? "{\"status\":\"ok\",\"redis\":\"connected\"}"
                              : "{\"status\":\"degraded\",\"redis\":\"disconnected\"}";
        hd_http_respond(req, up ? 200 : 503, "Cache-Control: no-store\r\n", "application/json",
                        text, strlen(text));
        return;
    }
    hd_http_respond(req, 200, "Cache-Control: no-store\r\n", "application/json", body,
                    sizeof(body) - 1);
}

static void register_routes(hd_router_t *r)
{
    hd_router_add(r, HD_M_GET, "/healthz", 0, on_healthz, NULL);
    hd_publish_register(r);
    hd_ticket_register(r);
    hd_admin_register(r);
    hd_clientjs_register(r);
    hd_webhooks_register(r);
    hd_poll_register(r);
    hd_sse_register(r);
    hd_ws_register(r);
}

/* ---- process ---- */

static void raise_nofile(const hd_conf_t *conf)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    hd_log_info("open files limit: %llu", (unsigned long long)rl.rlim_cur);
    if ((unsigned long long)conf->max_connections + 64 > (unsigned long long)rl.rlim_cur)
        hd_log_warn("max_connections %u is above what the open files limit (%llu) allows; "
                    "connections beyond it will fail to be accepted",
                    conf->max_connections, (unsigned long long)rl.rlim_cur);
}

static int write_pidfile(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "herald: pidfile %s: %s\n", path, strerror(errno));
        return -1;
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    int ok = write(fd, buf, (size_t)n) == n;
    close(fd);
    return ok ? 0 : -1;
}

static app_t app; /* one node per process */

static void no_work(uv_work_t *req)
{
    (void)req;
}

/*
 * Makes libuv's thread pool (the log sinks' writes, the hooks' name resolution) on this thread.
 * libuv makes it on its first use, and its threads take the scheduling of the thread that made
 * them: made by the hooks thread (its first uv_getaddrinfo) they ran under SCHED_IDLE (hooks.c)
 * or nice 10, so the workers' log writes waited for a core nothing else wanted, and the stop of a
 * busy machine waited for five idle threads to be given a core to die on instead of one.
 */
static void start_thread_pool(void)
{
    static uv_work_t req;
    uv_queue_work(&app.loop, &req, no_work, NULL);
}

static void close_signals(void)
{
    uv_close((uv_handle_t *)&app.sig_term, NULL);
    uv_close((uv_handle_t *)&app.sig_int, NULL);
    uv_close((uv_handle_t *)&app.sig_hup, NULL);
    uv_close((uv_handle_t *)&app.sig_usr1, NULL);
}

static void on_barrier(hd_worker_t *w, hd_breq_t *r)
{
    hd_breq_free(r);
    hd_server_quiet_ack(w); /* nothing from the broker can follow this reply */
}

/* The least a stop gives the hooks thread, when the drain took all of shutdown_timeout. */
#define HOOKS_STOP_MIN_MS 1000

/*
 * Stops the webhook sender within the stop's deadline: what is left of shutdown_timeout (at least
 * HOOKS_STOP_MIN_MS), plus the notify hook's timeout for its last batch. 0, or -1: its thread
 * still runs. It runs at the lowest priority (SCHED_IDLE without Redis or an authorize_hook,
 * hooks.c), which a machine whose cores are all busy may not run for seconds (7-18 s to take the
 * stop at a load of 12-16 under ASan); nothing it may still use (the workers it answers, the
 * conf, OpenSSL) can be freed then: unless it ends during the broker's barrier, the stop ends the
 * process without it (on_quiet).
 */
static int stop_hooks(hd_hooks_t *hooks)
{
    uv_update_time(&app.loop);
    uint64_t now = uv_now(&app.loop);
    uint64_t wait_ms = app.stop_deadline_ms > now ? app.stop_deadline_ms - now : 0;
    if (wait_ms < HOOKS_STOP_MIN_MS)
        wait_ms = HOOKS_STOP_MIN_MS;
    if (app.conf->notify_hook)
        wait_ms += app.conf->notify_hook->timeout_ms;
    if (hd_hooks_stop(hooks, wait_ms) < 0) {
        app.hooks_wait_ms = wait_ms;
        return -1;
    }
    hd_hooks_free(hooks);
    return 0;
}

/* Shutdown: once no connection is left, flush the broker's replies, then stop it. */
static void on_quiet(hd_server_t *s, int all_acked)
{
    hd_hooks_t *hooks = hd_hooks_get();
    if (hooks && !all_acked) {
        /* no connection is left, so nothing publishes or subscribes: the webhook sender goes
         * first (its admin answers still reach the workers, which run until the barrier) */
        hd_hooks_set(NULL);
        if (stop_hooks(hooks) < 0)
            app.hooks_left = hooks;
    }
    if (all_acked && app.hooks_left && hd_hooks_stop(app.hooks_left, 0) == 0) {
        hd_hooks_free(app.hooks_left); /* it ended during the barrier */
        app.hooks_left = NULL;
    }
    if (all_acked && app.hooks_left) {
        /* the broker has sent what the workers asked of it; the rest is memory, and the workers
         * (which the hooks thread may still answer) must outlive it: the process ends here */
        hd_log_warn("webhooks: the hooks thread did not stop within %llu ms (it runs at the "
                    "lowest CPU priority and every core is busy): herald exits without it, its "
                    "pending events are lost",
                    (unsigned long long)app.hooks_wait_ms);
        if (app.pidfile)
            unlink(app.pidfile);
        hd_log_info("stopped");
        _exit(EXIT_OK);
    }
    if (all_acked) {
        hd_broker_t *b = hd_broker_get();
        b->ops->free(b);
        hd_broker_set(NULL);
        return;
    }
    for (unsigned k = 0; k < hd_server_worker_count(s); k++) {
        hd_breq_t *r = hd_breq_new(HD_BREQ_BARRIER, hd_server_worker(s, k), NULL, 0);
        r->reply_cb = on_barrier;
        hd_broker_submit(r);
    }
}

static void on_server_done(hd_server_t *s)
{
    for (unsigned k = 0; k < hd_server_worker_count(s); k++)
        hd_hub_dispose(hd_server_worker(s, k));
    hd_server_free(s);
    app.server = NULL;
    close_signals();
    hd_log_info("stopped");
}

/* What authorization does with this configuration (docs/auth.md), a warning when it closes
 * everything. */
static void log_auth(const hd_conf_t *conf)
{
    char desc[256];
    if (hd_auth_describe(conf->auth, desc, sizeof(desc)))
        hd_log_warn("authorization %s", desc);
    else
        hd_log_info("authorization %s", desc);
}

static void reload(void)
{
    char err[1024];
    hd_conf_t *conf = NULL;
    notify_systemd("RELOADING=1");
    hd_log_info("reloading %s", app.conf_path);
    int rc = hd_conf_load(&conf, app.conf_path, app.overrides, app.n_overrides, err, sizeof(err));
    if (rc < 0) {
        hd_log_error("reload failed, keeping the current configuration: %s", err);
        notify_systemd("READY=1");
        return;
    }
    char changed[512];
    if (hd_conf_restart_needed(app.conf, conf, changed, sizeof(changed)) > 0)
        hd_log_warn("reload: %s changed; that takes effect only after a restart", changed);
    if ((rc = hd_server_reload(app.server, conf, err, sizeof(err))) < 0) {
        hd_log_error("reload failed, keeping the current configuration: %s", err);
        hd_conf_unref(conf);
        notify_systemd("READY=1");
        return;
    }
    hd_log_set_level(conf->log_level);
    if (hd_log_open(NULL, conf->access_log, err, sizeof(err)) < 0)
        hd_log_error("reload: %s", err);
    hd_conf_unref(app.conf);
    app.conf = conf;
    hd_log_info("reloaded");
    log_auth(conf);
    notify_systemd("READY=1");
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (signum == SIGHUP) {
        if (app.server)
            reload();
    } else if (signum == SIGUSR1) {
        char err[512];
        if (hd_log_open(app.log_file, app.conf->access_log, err, sizeof(err)) < 0)
            hd_log_error("reopening logs: %s", err);
        else
            hd_log_info("log files reopened");
    } else if (app.server) {
        hd_log_info("%s received", signum == SIGTERM ? "SIGTERM" : "SIGINT");
        notify_systemd("STOPPING=1");
        if (!app.stop_deadline_ms)
            app.stop_deadline_ms = uv_now(&app.loop) + app.conf->shutdown_timeout_ms;
        hd_server_shutdown(app.server, on_server_done);
    }
}

static int parse_args(int argc, char **argv, int *test_only)
{
    static const struct option longopts[] = {{"conf", required_argument, NULL, 'c'},
                                             {"set", required_argument, NULL, 'o'},
                                             {"test", no_argument, NULL, 't'},
                                             {"version", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"reference", no_argument, NULL, 'R'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    app.conf_path = "conf/herald.conf";
    app.overrides = hd_calloc((size_t)argc, sizeof(char *));
    while ((ch = getopt_long(argc, argv, "c:o:tvh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            app.conf_path = optarg;
            break;
        case 'o':
            app.overrides[app.n_overrides++] = optarg;
            break;
        case 't':
            *test_only = 1;
            break;
        case 'v':
            printf("herald %s\n", HERALD_VERSION);
            exit(EXIT_OK);
        case 'h':
            usage(stdout);
            exit(EXIT_OK);
        case 'R':
            hd_conf_print_reference(stdout);
            exit(EXIT_OK);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "herald: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

static int check_tls(const hd_conf_t *conf, char *err, size_t errlen)
{
    for (size_t i = 0; i < conf->n_listens; i++) {
        if (conf->listens[i].is_tls) {
            SSL_CTX *ctx;
            int rc = hd_tls_ctx_new(&ctx, conf, err, errlen);
            if (rc < 0)
                return rc;
            hd_tls_ctx_unref(ctx);
            return 0;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int test_only = 0;
    char err[1024];
    if (parse_args(argc, argv, &test_only) < 0)
        return EXIT_USAGE;
    int rc =
        hd_conf_load(&app.conf, app.conf_path, app.overrides, app.n_overrides, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "herald: %s\n", err);
        return EXIT_CONF;
    }
    if (test_only) {
        if (check_tls(app.conf, err, sizeof(err)) < 0) {
            fprintf(stderr, "herald: %s\n", err);
            hd_conf_unref(app.conf);
            return EXIT_CONF;
        }
        printf("herald: configuration %s is valid\n", app.conf_path);
        hd_conf_unref(app.conf);
        free(app.overrides);
        return EXIT_OK;
    }

    signal(SIGPIPE, SIG_IGN);
    app.pidfile = app.conf->pidfile ? hd_strdup(app.conf->pidfile) : NULL;
    app.log_file = app.conf->log_file ? hd_strdup(app.conf->log_file) : NULL;
    hd_log_set_level(app.conf->log_level);
    if (hd_log_open(app.conf->log_file, app.conf->access_log, err, sizeof(err)) < 0) {
        fprintf(stderr, "herald: %s\n", err);
        return EXIT_START;
    }
    hd_log_info("herald %s starting, configuration %s", HERALD_VERSION, app.conf_path);
    log_auth(app.conf);
    raise_nofile(app.conf);

    uv_loop_init(&app.loop);
    start_thread_pool();
    app.router = hd_router_new();
    register_routes(app.router);
    hd_http_set_router(app.router);
    hd_access_install();

    rc = hd_server_new(&app.server, app.conf, hd_http_accept, &app.loop, err, sizeof(err));
    if (rc < 0) {
        hd_log_error("cannot start: %s", err);
        app.exit_code = EXIT_START;
        goto out;
    }
    /* Before the hubs and the broker exist: failing here has only the server to undo. */
    if (app.conf->pidfile && write_pidfile(app.conf->pidfile) < 0) {
        hd_log_error("cannot start: cannot write pidfile %s", app.conf->pidfile);
        hd_server_free(app.server);
        app.server = NULL;
        app.exit_code = EXIT_START;
        goto out;
    }
    for (unsigned k = 0; k < hd_server_worker_count(app.server); k++)
        hd_hub_init(hd_server_worker(app.server, k));
    /* The revoked set, before the broker: the Redis bridge loads it when it connects. */
    hd_auth_revocations_set(hd_revset_new());
    hd_broker_t *broker;
    if (app.conf->redis) {
        /* Connects (or fails) before returning: a node that cannot reach Redis does not start. */
        if ((rc = hd_broker_redis_new(&broker, app.server, app.conf, err, sizeof(err))) < 0) {
            hd_log_error("cannot start: %s", err);
            for (unsigned k = 0; k < hd_server_worker_count(app.server); k++)
                hd_hub_dispose(hd_server_worker(app.server, k));
            hd_server_free(app.server);
            app.server = NULL;
            if (app.pidfile)
                unlink(app.pidfile);
            app.exit_code = EXIT_START;
            goto out;
        }
    } else if ((rc = hd_broker_memory_new(&broker, app.server, app.conf)) < 0) {
        hd_log_error("cannot start the broker: %s", uv_strerror(rc));
        if (app.pidfile)
            unlink(app.pidfile);
        exit(EXIT_START);
    }
    hd_broker_set(broker);
    hd_server_on_quiet(app.server, on_quiet);
    hd_introspect_register(app.router, app.server); /* routes are fixed before workers start */
    uv_signal_t *sigs[] = {&app.sig_term, &app.sig_int, &app.sig_hup, &app.sig_usr1};
    int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < HD_ARRAY_SIZE(sigs); i++) {
        uv_signal_init(&app.loop, sigs[i]);
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    if (app.conf->n_webhooks || app.conf->webhook_max_endpoints || app.conf->authorize_hook ||
        app.conf->notify_hook) {
        hd_hooks_t *hooks;
        if (hd_hooks_new(&hooks, app.conf, err, sizeof(err)) < 0) {
            hd_log_error("cannot start: %s", err);
            exit(EXIT_START);
        }
        hd_hooks_set(hooks);
        if ((rc = hd_hooks_start(hooks)) < 0) {
            hd_log_error("cannot start the webhook thread: %s", uv_strerror(rc));
            exit(EXIT_START);
        }
        hd_log_info("webhooks: %zu endpoints in the conf, up to %u through the admin API%s%s "
                    "(docs/webhooks.md)",
                    app.conf->n_webhooks, app.conf->webhook_max_endpoints,
                    app.conf->authorize_hook ? ", an authorize_hook" : "",
                    app.conf->notify_hook ? ", a notify_hook" : "");
    }
    if ((rc = hd_server_start(app.server)) < 0) {
        hd_log_error("cannot start worker threads: %s", uv_strerror(rc));
        exit(EXIT_START);
    }
    notify_systemd("READY=1\nSTATUS=serving");
    hd_log_info("ready");
    uv_run(&app.loop, UV_RUN_DEFAULT);
    if (app.pidfile)
        unlink(app.pidfile);

out:
    uv_run(&app.loop, UV_RUN_DEFAULT); /* let closing handles finish */
    uv_loop_close(&app.loop);
    hd_router_free(app.router);
    hd_revset_free(hd_auth_revocations()); /* the broker and the workers are gone */
    hd_auth_revocations_set(NULL);
    hd_conf_unref(app.conf);
    free(app.overrides);
    free(app.pidfile);
    free(app.log_file);
    return app.exit_code;
}
