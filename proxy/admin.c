/* SPDX-License-Identifier: Apache-2.0
 * admin: health, readiness and a first set of Prometheus metrics over evhttp. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
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
#include "log.h"
#include "worker.h"

#define REM_HEARTBEAT_MAX_AGE_MS 2000

struct rem_admin {
    struct evhttp *http;        /* owned */
    struct rem_worker *workers; /* borrowed */
    size_t n_workers;
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
    if (a->ready)
        evbuffer_add(b, "ok\n", 3);
    else
        evbuffer_add_printf(b, "%s\n", a->reason ? a->reason : "not ready");
    reply(req, a->ready ? 200 : 503, "text/plain", b);
    evbuffer_free(b);
}

#define SUM(field)                                                                                 \
    ({                                                                                             \
        int64_t t_ = 0;                                                                            \
        for (size_t i_ = 0; i_ < a->n_workers; i_++)                                               \
            t_ += (int64_t)REM_STAT_GET(&a->workers[i_], field);                                   \
        t_;                                                                                        \
    })

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct rem_admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b,
                        "# HELP remora_build_info remora build.\n"
                        "# TYPE remora_build_info gauge\n"
                        "remora_build_info{version=\"%s\",commit=\"%s\"} 1\n",
                        PACKAGE_VERSION, REM_COMMIT);
    evbuffer_add_printf(b,
                        "# HELP remora_requests_total Requests completed.\n"
                        "# TYPE remora_requests_total counter\n"
                        "remora_requests_total %" PRId64 "\n",
                        SUM(requests_total));
    evbuffer_add_printf(b,
                        "# HELP remora_downstream_connections Open downstream connections.\n"
                        "# TYPE remora_downstream_connections gauge\n"
                        "remora_downstream_connections %" PRId64 "\n"
                        "# HELP remora_downstream_connections_total Accepted downstream "
                        "connections.\n"
                        "# TYPE remora_downstream_connections_total counter\n"
                        "remora_downstream_connections_total %" PRId64 "\n",
                        SUM(downstream_connections), SUM(downstream_connections_total));
    evbuffer_add_printf(b,
                        "# HELP remora_upstream_connections Open upstream connections.\n"
                        "# TYPE remora_upstream_connections gauge\n"
                        "remora_upstream_connections %" PRId64 "\n",
                        SUM(upstream_connections));
    reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b);
    evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
    evhttp_send_error(req, 404, "Not Found");
}

struct rem_admin *rem_admin_new(struct event_base *base, const struct rem_cfg_listener *cfg,
                                struct rem_worker *workers, size_t n_workers)
{
    struct rem_admin *a = rem_xcalloc(1, sizeof(*a));
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
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
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
