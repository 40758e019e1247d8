/* SPDX-License-Identifier: Apache-2.0
 * admin: a small HTTP/1.1 server for /healthz, /readyz and /metrics on the main thread. It is
 * its own (evconnlistener + bufferevent + llhttp) rather than evhttp so that memory stays
 * bounded whatever scrapers do: at most REM_ADMIN_MAX_CONNS connections (a new one evicts the
 * least recently active, so a fresh scraper is never starved by stuck ones), requests capped at
 * REM_ADMIN_MAX_REQUEST bytes, read and write timeouts, one response buffered per connection. */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <llhttp.h>

#include "rem_build.h"
#include "rem_commit.h"
#include "admin.h"
#include "dns.h"
#include "config.h"
#include "config_dump.h"
#include "error.h"
#include "gen.h"
#include "cluster.h"
#include "healthcheck.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define REM_HEARTBEAT_MAX_AGE_MS 2000
#define REM_ADMIN_MAX_CONNS 64
#define REM_ADMIN_MAX_REQUEST 8192
#define REM_ADMIN_TIMEOUT_S 10

struct admin_conn {
    TAILQ_ENTRY(admin_conn) link; /* in a->conns, least recently active first */
    struct rem_admin *a;          /* borrowed: the owner */
    struct bufferevent *bev;      /* owned */
    llhttp_t parser;
    char path[128]; /* request path without query, truncated */
    size_t path_len;
    bool path_done;
    char accept[256]; /* Accept header, truncated */
    size_t accept_len;
    bool hdr_is_accept; /* the header being parsed is Accept */
    size_t head_bytes;
    bool ready;   /* a complete request awaits its answer */
    bool closing; /* flush, then free */
    bool linger;  /* after an error: flush, SHUT_WR, drain until EOF */
    bool draining;
};

TAILQ_HEAD(admin_conn_list, admin_conn);

struct rem_admin {
    struct event_base *base;    /* borrowed */
    struct evconnlistener *lev; /* owned */
    struct rem_worker *workers; /* borrowed */
    size_t n_workers;
    struct rem_config *cfg;            /* a reference: the active generation */
    struct rem_metrics_layout *layout; /* a reference: cfg's layout */
    struct rem_admin_reloads reloads;
    char **tls_names;      /* owned [n_tls]: the TLS listeners, for the expiry gauge */
    double *tls_not_after; /* owned [n_tls] */
    size_t n_tls;
    struct rem_healthcheck *hc; /* borrowed, may be NULL */
    struct admin_conn_list conns;
    size_t n_conns;
    bool ready;
    const char *reason;
    bool draining;            /* remora_draining */
    char config_hash[24];     /* of the active generation, for remora_config_info */
    void (*drain)(void *arg); /* POST /drain; NULL: not offered */
    void *drain_arg;
};

static llhttp_settings_t admin_settings;

static void conn_free(struct admin_conn *c)
{
    TAILQ_REMOVE(&c->a->conns, c, link);
    c->a->n_conns--;
    bufferevent_free(c->bev);
    free(c);
}

static void touch(struct admin_conn *c)
{
    TAILQ_REMOVE(&c->a->conns, c, link);
    TAILQ_INSERT_TAIL(&c->a->conns, c, link);
}

static void respond(struct admin_conn *c, int code, const char *reason, const char *ctype,
                    struct evbuffer *body, bool head_only)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool keep = llhttp_should_keep_alive(&c->parser);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Cache-Control: no-store\r\n%s\r\n",
                        code, reason, ctype, body ? evbuffer_get_length(body) : 0,
                        keep ? "" : "Connection: close\r\n");
    if (body && !head_only)
        evbuffer_add_buffer(out, body);
    if (!keep)
        c->closing = true;
}

static void serve_healthz(struct rem_admin *a, struct evbuffer *b, int *code)
{
    uint64_t now = rem_now_ms();
    *code = 200;
    for (size_t i = 0; i < a->n_workers; i++) {
        uint64_t hb = __atomic_load_n(&a->workers[i].heartbeat_ms, __ATOMIC_RELAXED);
        if (now - hb > REM_HEARTBEAT_MAX_AGE_MS) {
            evbuffer_add_printf(b, "worker %zu stalled for %" PRIu64 " ms\n", i, now - hb);
            *code = 503;
        }
    }
    if (*code == 200)
        evbuffer_add(b, "ok\n", 3);
}

/* Locks every worker's generation (rem_gen_view's rule); the scrape is short and a worker
 * takes its lock only to swap or free a generation. */
static void lock_workers(struct rem_admin *a, bool lock)
{
    for (size_t i = 0; i < a->n_workers; i++) {
        if (lock)
            pthread_mutex_lock(&a->workers[i].gen_lock);
        else
            pthread_mutex_unlock(&a->workers[i].gen_lock);
    }
}

static void serve_readyz(struct rem_admin *a, struct evbuffer *b, int *code)
{
    char why[256];
    bool ready = a->ready && rem_healthcheck_ready(a->hc, why, sizeof(why));
    /* Upstreams whose endpoint names never resolved (in any worker) keep remora unready. */
    lock_workers(a, true);
    for (size_t i = 0; ready && i < a->n_workers; i++) {
        const struct rem_gen *g = a->workers[i].gen;
        for (size_t u = 0; g && u < g->cfg->n_upstreams; u++) {
            int64_t st = __atomic_load_n(&g->clusters[u]->metrics->dns_state, __ATOMIC_RELAXED);
            if (st == 0 || !g->clusters[u]->gates_ready)
                continue; /* an upstream a reload added does not take the pod out of service */
            snprintf(why, sizeof(why), "upstream %s: dns unresolved (%s)",
                     g->cfg->upstreams[u].name,
                     st - 1 < REM_DNS__N ? rem_dns_result_label((enum rem_dns_result)(st - 1))
                                         : "no answer yet");
            ready = false;
            break;
        }
    }
    lock_workers(a, false);
    *code = ready ? 200 : 503;
    if (ready)
        evbuffer_add(b, "ok\n", 3);
    else
        evbuffer_add_printf(b, "%s\n", !a->ready ? (a->reason ? a->reason : "not ready") : why);
}

static int serve_metrics(struct rem_admin *a, struct evbuffer *b, const char *accept,
                         enum rem_expo_format *fmt)
{
    const struct rem_metrics_layout *l = a->layout;
    size_t nw = a->n_workers ? a->n_workers : 1, nr = l->n_routes,
           nu = l->n_upstreams ? l->n_upstreams : 1;
    struct rem_metrics_view *v = calloc(nw, sizeof(*v));
    const void **ptrs = calloc(nw * 2 * (nr + nu), sizeof(*ptrs));
    if (!v || !ptrs) {
        free(v);
        free(ptrs);
        return -REM_E_NOMEM;
    }
    struct rem_metrics_process proc = {
        .version = PACKAGE_VERSION,
        .commit = REM_COMMIT,
        .upstream_healthy = rem_healthcheck_states(a->hc),
        .draining = a->draining,
        .config_hash = a->config_hash[0] ? a->config_hash : NULL,
        .config_generation = a->reloads.generation,
        .reloads_ok = a->reloads.ok,
        .reloads_failed = a->reloads.failed,
        .last_reload_success = a->reloads.last_success,
        .tls_cert_reloads_ok = a->reloads.cert_ok,
        .tls_cert_reloads_failed = a->reloads.cert_failed,
        .tls_listeners = (const char *const *)a->tls_names,
        .tls_not_after = a->tls_not_after,
        .n_tls = a->n_tls,
    };
    rem_metrics_process_read(&proc);
    *fmt = rem_metrics_format_for(accept);
    lock_workers(a, true);
    for (size_t i = 0; i < a->n_workers; i++) {
        const void **p = ptrs + i * 2 * (nr + nu);
        v[i].shard = a->workers[i].metrics;
        v[i].routes = (const struct rem_route_metrics **)p;
        v[i].route_hists = (const struct rem_route_hist **)(p + nr);
        v[i].upstreams = (const struct rem_upstream_metrics **)(p + 2 * nr);
        v[i].up_hists = (const struct rem_upstream_metrics **)(p + 2 * nr + nu);
        rem_gen_view(a->workers[i].gen, a->cfg, l, &v[i]);
    }
    int rc = rem_metrics_render(b, l, v, a->n_workers, &proc, *fmt);
    lock_workers(a, false);
    free(v);
    free(ptrs);
    return rc;
}

static void handle(struct admin_conn *c)
{
    struct rem_admin *a = c->a;
    struct evbuffer *b = evbuffer_new();
    bool head = c->parser.method == HTTP_HEAD;
    int code = 200;
    if (!b) {
        respond(c, 500, "Internal Server Error", "text/plain", NULL, head);
        c->closing = true;
        return;
    }
    bool is_drain = c->path_len == 6 && memcmp(c->path, "/drain", 6) == 0;
    if (is_drain && c->parser.method == HTTP_POST && a->drain) {
        /* Starts the drain without exiting (preStop hooks, manual use); idempotent. */
        a->drain(a->drain_arg);
        evbuffer_add(b, "draining\n", 9);
        respond(c, 202, "Accepted", "text/plain", b, false);
    } else if (is_drain || (c->parser.method != HTTP_GET && !head)) {
        evbuffer_add(b, "method not allowed\n", 19);
        respond(c, 405, "Method Not Allowed", "text/plain", b, false);
    } else if (c->path_len == 8 && memcmp(c->path, "/healthz", 8) == 0) {
        serve_healthz(a, b, &code);
        respond(c, code, code == 200 ? "OK" : "Service Unavailable", "text/plain", b, head);
    } else if (c->path_len == 7 && memcmp(c->path, "/config", 7) == 0) {
        /* The active generation (Envoy's config_dump). */
        if (rem_config_dump_json(a->cfg, b) < 0)
            respond(c, 500, "Internal Server Error", "text/plain", NULL, head);
        else
            respond(c, 200, "OK", "application/json", b, head);
    } else if (c->path_len == 7 && memcmp(c->path, "/readyz", 7) == 0) {
        serve_readyz(a, b, &code);
        respond(c, code, code == 200 ? "OK" : "Service Unavailable", "text/plain", b, head);
    } else if (c->path_len == 8 && memcmp(c->path, "/metrics", 8) == 0) {
        enum rem_expo_format fmt;
        c->accept[c->accept_len] = '\0';
        if (serve_metrics(a, b, c->accept_len ? c->accept : NULL, &fmt) < 0) {
            evbuffer_drain(b, evbuffer_get_length(b));
            respond(c, 500, "Internal Server Error", "text/plain", NULL, head);
        } else {
            respond(c, 200, "OK", rem_metrics_content_type(fmt), b, head);
        }
    } else {
        evbuffer_add(b, "not found\n", 10);
        respond(c, 404, "Not Found", "text/plain", b, head);
    }
    evbuffer_free(b);
}

#define ACONN(p) ((struct admin_conn *)(p)->data)

static int on_message_begin(llhttp_t *p)
{
    struct admin_conn *c = ACONN(p);
    c->path_len = c->accept_len = c->head_bytes = 0;
    c->hdr_is_accept = c->path_done = false;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct admin_conn *c = ACONN(p);
    if (c->path_done)
        return 0;
    const char *q = memchr(at, '?', n);
    size_t keep = q ? (size_t)(q - at) : n, room = sizeof(c->path) - c->path_len;
    if (keep > room)
        keep = room;
    memcpy(c->path + c->path_len, at, keep);
    c->path_len += keep;
    c->path_done = q != NULL; /* the query ends the path */
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct admin_conn *c = ACONN(p);
    c->hdr_is_accept = n == 6 && strncasecmp(at, "accept", 6) == 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct admin_conn *c = ACONN(p);
    if (!c->hdr_is_accept)
        return 0;
    size_t room = sizeof(c->accept) - 1 - c->accept_len;
    if (c->accept_len && room) {
        c->accept[c->accept_len++] = ',';
        room--;
    }
    if (n > room)
        n = room;
    memcpy(c->accept + c->accept_len, at, n);
    c->accept_len += n;
    c->hdr_is_accept = false;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    ACONN(p)->ready = true;
    return HPE_PAUSED;
}

static void on_write(struct bufferevent *bev, void *arg);

static void process(struct admin_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closing) {
        size_t n = evbuffer_get_contiguous_space(in);
        if (n == 0)
            break;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        llhttp_errno_t err = llhttp_execute(&c->parser, p, n);
        size_t used = err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&c->parser) - p);
        evbuffer_drain(in, used);
        c->head_bytes += used;
        if (err == HPE_PAUSED) {
            llhttp_resume(&c->parser);
            c->ready = false;
            handle(c);
            continue;
        }
        if (err != HPE_OK) {
            respond(c, 400, "Bad Request", "text/plain", NULL, false);
            c->closing = c->linger = true;
            break;
        }
        if (c->head_bytes > REM_ADMIN_MAX_REQUEST) {
            respond(c, 431, "Request Header Fields Too Large", "text/plain", NULL, false);
            c->closing = c->linger = true;
            break;
        }
    }
    if (c->closing) {
        if (!c->linger)
            bufferevent_disable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            on_write(c->bev, c);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct admin_conn *c = arg;
    if (!c->closing || c->draining)
        return;
    if (!c->linger) {
        conn_free(c);
        return;
    }
    /* The client may still be sending the request we refused: half-close and read until it
     * closes (or the read timeout), so it gets our answer rather than a reset. */
    c->draining = true;
    if (shutdown(bufferevent_getfd(bev), SHUT_WR) < 0) {
        conn_free(c);
        return;
    }
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_enable(bev, EV_READ);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct admin_conn *c = arg;
    if (c->draining) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    touch(c);
    process(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg);
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct rem_admin *a = arg;
    if (a->n_conns >= REM_ADMIN_MAX_CONNS)
        conn_free(TAILQ_FIRST(&a->conns)); /* evict the least recently active */
    struct admin_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev =
        c ? bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(c);
        close(fd);
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->a = a;
    c->bev = bev;
    llhttp_init(&c->parser, HTTP_REQUEST, &admin_settings);
    c->parser.data = c;
    struct timeval to = {REM_ADMIN_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, &to, &to);
    bufferevent_setwatermark(bev, EV_READ, 0, REM_ADMIN_MAX_REQUEST);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    TAILQ_INSERT_TAIL(&a->conns, c, link);
    a->n_conns++;
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    rem_log_warn("admin: accept failed: %s", strerror(EVUTIL_SOCKET_ERROR()));
}

/* A listening socket on addr, or -1 (errno set). */
static int admin_listen(const struct rem_cfg_listener *cfg)
{
    int one = 1;
    int fd = socket(cfg->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&cfg->addr.ss, cfg->addr.len) < 0 ||
        listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

struct rem_admin *rem_admin_new(struct event_base *base, const struct rem_cfg_listener *cfg,
                                struct rem_worker *workers, size_t n_workers,
                                struct rem_config *config, struct rem_metrics_layout *layout,
                                struct rem_healthcheck *hc)
{
    struct rem_admin *a = rem_xcalloc(1, sizeof(*a));
    a->base = base;
    a->workers = workers;
    a->n_workers = n_workers;
    a->reason = "starting";
    rem_admin_set_config(a, config, layout, hc);
    TAILQ_INIT(&a->conns);
    llhttp_settings_init(&admin_settings);
    admin_settings.on_message_begin = on_message_begin;
    admin_settings.on_url = on_url;
    admin_settings.on_header_field = on_header_field;
    admin_settings.on_header_value = on_header_value;
    admin_settings.on_message_complete = on_message_complete;
    if (rem_admin_rebind(a, cfg) < 0) {
        rem_admin_free(a);
        return NULL;
    }
    return a;
}

int rem_admin_rebind(struct rem_admin *a, const struct rem_cfg_listener *cfg)
{
    int fd = admin_listen(cfg);
    struct evconnlistener *lev = NULL;
    if (fd >= 0 &&
        !(lev = evconnlistener_new(a->base, on_accept, a, LEV_OPT_CLOSE_ON_FREE, -1, fd))) {
        close(fd);
        errno = ENOMEM;
    }
    if (!lev) {
        rem_log_error("admin: cannot listen on %s: %s", cfg->address, strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(lev, on_accept_error);
    if (a->lev) /* the old port closes; its open conns finish what they asked */
        evconnlistener_free(a->lev);
    a->lev = lev;
    return 0;
}

void rem_admin_set_config(struct rem_admin *a, struct rem_config *cfg,
                          struct rem_metrics_layout *layout, struct rem_healthcheck *hc)
{
    rem_config_ref(cfg);
    rem_config_unref(a->cfg);
    a->cfg = cfg;
    rem_metrics_layout_ref(layout);
    rem_metrics_layout_unref(a->layout);
    a->layout = layout;
    a->hc = hc;
    snprintf(a->config_hash, sizeof(a->config_hash), "%016" PRIx64, rem_config_hash(cfg));
}

void rem_admin_set_reloads(struct rem_admin *a, const struct rem_admin_reloads *r)
{
    a->reloads = *r;
}

static void free_tls_expiry(struct rem_admin *a)
{
    for (size_t i = 0; i < a->n_tls; i++)
        free(a->tls_names[i]);
    free(a->tls_names);
    free(a->tls_not_after);
    a->tls_names = NULL;
    a->tls_not_after = NULL;
    a->n_tls = 0;
}

void rem_admin_set_tls_expiry(struct rem_admin *a, const char *const *names,
                              const double *not_after, size_t n)
{
    free_tls_expiry(a);
    a->tls_names = rem_xcalloc(n + 1, sizeof(*a->tls_names));
    a->tls_not_after = rem_xcalloc(n + 1, sizeof(*a->tls_not_after));
    for (size_t i = 0; i < n; i++) {
        if (!(a->tls_names[i] = strdup(names[i])))
            abort();
        a->tls_not_after[i] = not_after[i];
    }
    a->n_tls = n;
}

void rem_admin_set_ready(struct rem_admin *a, bool ready, const char *reason)
{
    a->ready = ready;
    a->reason = reason;
}

void rem_admin_set_drain(struct rem_admin *a, void (*drain)(void *arg), void *arg)
{
    a->drain = drain;
    a->drain_arg = arg;
}

void rem_admin_set_draining(struct rem_admin *a)
{
    a->draining = true;
    rem_admin_set_ready(a, false, "draining");
}

void rem_admin_free(struct rem_admin *a)
{
    if (!a)
        return;
    /* The next pointer is taken first: clang-tidy does not follow TAILQ_REMOVE's write of the
     * head through tqe_prev, and would see the freed conn as still first. */
    struct admin_conn *c, *next;
    for (c = TAILQ_FIRST(&a->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        conn_free(c);
    }
    if (a->lev)
        evconnlistener_free(a->lev);
    rem_config_unref(a->cfg);
    rem_metrics_layout_unref(a->layout);
    free_tls_expiry(a);
    free(a);
}
