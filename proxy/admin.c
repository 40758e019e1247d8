/* SPDX-License-Identifier: Apache-2.0
 * admin: health, readiness (with upstream health checks) and /metrics over evhttp. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "rem_build.h"
#include "admin.h"
#include "config.h"
#include "error.h"
#include "healthcheck.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define REM_HEARTBEAT_MAX_AGE_MS 2000

struct rem_admin {
    struct evhttp *http;        /* owned */
    struct rem_worker *workers; /* borrowed */
    size_t n_workers;
    const struct rem_metrics_layout *layout; /* borrowed */
    struct rem_healthcheck *hc;         /* borrowed, may be NULL */
    bool ready;
    const char *reason;
};

static void reply(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Service Unavailable", body);
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
    struct rem_admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    uint64_t now = rem_now_ms();
    int code = 200;
    for (size_t i = 0; i < a->n_workers; i++) {
        uint64_t hb = __atomic_load_n(&a->workers[i].heartbeat_ms, __ATOMIC_RELAXED);
        if (now - hb > REM_HEARTBEAT_MAX_AGE_MS) {
            evbuffer_add_printf(b, "worker %zu stalled for %" PRIu64 " ms\n", i, now - hb);
            code = 503;
        }
    }
    if (code == 200)
        evbuffer_add(b, "ok\n", 3);
    reply(req, code, "text/plain", b);
    evbuffer_free(b);
}

static void on_readyz(struct evhttp_request *req, void *arg)
{
    struct rem_admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    char why[256];
    bool ready = a->ready && rem_healthcheck_ready(a->hc, why, sizeof(why));
    if (ready)
        evbuffer_add(b, "ok\n", 3);
    else
        evbuffer_add_printf(b, "%s\n", !a->ready ? (a->reason ? a->reason : "not ready") : why);
    reply(req, ready ? 200 : 503, "text/plain", b);
    evbuffer_free(b);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct rem_admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    struct rem_metrics_shard **shards = calloc(a->n_workers ? a->n_workers : 1, sizeof(*shards));
    if (!b || !shards) {
        evbuffer_free(b);
        free(shards);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    for (size_t i = 0; i < a->n_workers; i++)
        shards[i] = a->workers[i].metrics;
    struct rem_metrics_process proc = {
        .version = PACKAGE_VERSION,
        .commit = REM_COMMIT,
        .upstream_healthy = rem_healthcheck_states(a->hc),
    };
    rem_metrics_process_read(&proc);
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
    enum rem_expo_format fmt = rem_metrics_format_for(accept);
    if (rem_metrics_render(b, a->layout, shards, a->n_workers, &proc, fmt) < 0) {
        evbuffer_free(b);
        free(shards);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    free(shards);
    reply(req, 200, rem_metrics_content_type(fmt), b);
    evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
    evhttp_send_error(req, 404, "Not Found");
}

struct rem_admin *rem_admin_new(struct event_base *base, const struct rem_cfg_listener *cfg,
                                struct rem_worker *workers, size_t n_workers,
                                const struct rem_metrics_layout *layout,
                                struct rem_healthcheck *hc)
{
    struct rem_admin *a = rem_xcalloc(1, sizeof(*a));
    a->layout = layout;
    a->hc = hc;
    int fd = -1, one = 1;
    a->workers = workers;
    a->n_workers = n_workers;
    a->reason = "starting";
    a->http = evhttp_new(base);
    if (!a->http)
        goto fail;
    evhttp_set_max_headers_size(a->http, 8192);
    evhttp_set_max_body_size(a->http, 4096);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_cb(a->http, "/healthz", on_healthz, a);
    evhttp_set_cb(a->http, "/readyz", on_readyz, a);
    evhttp_set_cb(a->http, "/metrics", on_metrics, a);
    evhttp_set_gencb(a->http, on_other, a);

    fd = socket(cfg->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* TCP_NODELAY is inherited by accepted sockets: evhttp writes head and body apart, and
     * Nagle with delayed ACKs would add ~40 ms to every keep-alive scrape. */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&cfg->addr.ss, cfg->addr.len) < 0 || listen(fd, 128) < 0)
        goto fail;
    if (!evhttp_accept_socket_with_handle(a->http, fd))
        goto fail;
    return a;

fail:
    rem_log_error("admin: cannot listen on %s: %s", cfg->address, strerror(errno));
    if (fd >= 0)
        close(fd);
    rem_admin_free(a);
    return NULL;
}

void rem_admin_set_ready(struct rem_admin *a, bool ready, const char *reason)
{
    a->ready = ready;
    a->reason = reason;
}

void rem_admin_free(struct rem_admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
