/* SPDX-License-Identifier: Apache-2.0
 * server: what runs on each worker, built from a config generation: the c-ares channel, the
 * clusters (one per upstream, with their admission and pools), the per-route admits and the
 * listening sockets; and its teardown. The top of the stack: it may include every module;
 * nothing includes it but main.c. */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "dns.h"
#include "error.h"
#include "h1_up.h"
#include "h2_up.h"
#include "listener.h"
#include "log.h"
#include "admit.h"
#include "server.h"
#include "stream.h"
#include "upool.h"
#include "worker.h"

static void stop_listeners(struct rem_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        rem_listener_stop(w->listeners[i]);
    /* Conns accepted while the listeners were open (and from their backlog) that have not
     * sent a byte are as idle as a conn gets: they close now, like idle keep-alive ones. */
    struct rem_conn *c, *next;
    for (c = TAILQ_FIRST(&w->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        rem_conn_close_if_silent(c);
    }
    rem_worker_set_listeners_closed(w);
}

static void on_drain_delay(evutil_socket_t fd, short what, void *arg)
{
    stop_listeners(arg);
}

/* Graceful shutdown of one worker (REM_MAIL_DRAIN): pools stop idling upconns, every conn is
 * drained by its codec, and the listeners close after drain.delay. What is in flight goes on
 * (admission queues and DNS waits included) until it ends or the main thread cuts it. */
static void drain(struct rem_worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    for (size_t i = 0; i < w->n_clusters; i++)
        rem_upool_drain(w->clusters[i]);
    struct rem_conn *c, *next;
    for (c = TAILQ_FIRST(&w->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        rem_conn_drain(c); /* may close c (an idle one), never another conn */
    }
    uint64_t ms = w->cfg->drain.delay_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    if (ms && (w->drain_ev = evtimer_new(w->loop.base, on_drain_delay, w)) != NULL)
        event_add(w->drain_ev, &tv);
    else
        stop_listeners(w);
}

/* The drain timed out (REM_MAIL_CUT): every conn closes, its streams cut with drain_timeout. */
static void cut(struct rem_worker *w)
{
    struct rem_conn *c;
    stop_listeners(w);
    while ((c = TAILQ_FIRST(&w->conns)) != NULL)
        rem_conn_abort(c, REM_E_DRAIN_TIMEOUT);
}

static void on_mail(struct rem_worker *w, unsigned what)
{
    if (what & REM_MAIL_DRAIN)
        drain(w);
    if (what & REM_MAIL_CUT)
        cut(w);
}

int rem_server_worker_init(struct rem_worker *w, unsigned id, struct rem_config *cfg,
                           const struct rem_metrics_layout *ml, uint16_t *ports)
{
    if (rem_worker_init(w, id, cfg, ml) < 0)
        return -REM_E_SYS;
    w->on_mail = on_mail;
    unsigned n_workers = cfg->workers ? cfg->workers : 1;
    bool names = false;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        for (size_t j = 0; j < cfg->upstreams[i].n_endpoints; j++)
            names = names || cfg->upstreams[i].endpoints[j].is_name;
    if (names && !(w->dns = rem_dns_new(&w->loop, &cfg->dns)))
        goto fail;
    w->n_clusters = cfg->n_upstreams;
    w->clusters = rem_xcalloc(cfg->n_upstreams, sizeof(*w->clusters));
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        w->clusters[i] = rem_cluster_new(w, &cfg->upstreams[i], i, n_workers);
        if (!w->clusters[i])
            goto fail;
        /* The upstream codec comes from the configured protocol, once. */
        rem_upool_bind(w->clusters[i], cfg->upstreams[i].protocol == REM_PROTO_H2C
                                           ? &rem_h2_up_ops
                                           : &rem_h1_up_ops);
    }
    w->route_admits = rem_xcalloc(cfg->n_routes + 1, sizeof(*w->route_admits));
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct rem_cfg_route *r = &cfg->routes[i];
        if (!r->max_requests)
            continue;
        uint32_t lim = r->max_requests / n_workers ? r->max_requests / n_workers : 1;
        uint32_t pend =
            r->max_pending ? (r->max_pending / n_workers ? r->max_pending / n_workers : 1) : 0;
        w->route_admits[i] = rem_xcalloc(1, sizeof(struct rem_admit));
        if (rem_admit_init(w->route_admits[i], w, NULL, lim, pend,
                           cfg->upstreams[r->upstream_idx].queue_timeout_ms) < 0)
            goto fail;
    }
    w->listeners = rem_xcalloc(cfg->n_listeners, sizeof(*w->listeners));
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        w->listeners[i] = rem_listener_new(w, &cfg->listeners[i], &ports[i]);
        if (!w->listeners[i])
            goto fail;
        w->n_listeners++;
    }
    return 0;

fail:
    rem_log_error("worker %u: could not build its clusters and listeners (see above)", id);
    return -REM_E_SYS;
}

void rem_server_worker_dispose(struct rem_worker *w)
{
    if (!w)
        return;
    /* Conns first: closing one tells its listener. */
    struct rem_conn *c;
    while (w->loop.base && (c = TAILQ_FIRST(&w->conns)) != NULL)
        rem_conn_close(c);
    if (w->drain_ev)
        event_free(w->drain_ev);
    w->drain_ev = NULL;
    for (size_t i = 0; i < w->n_listeners; i++)
        rem_listener_free(w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    for (size_t i = 0; w->route_admits && i <= w->cfg->n_routes; i++) {
        if (w->route_admits[i]) {
            rem_admit_dispose(w->route_admits[i]);
            free(w->route_admits[i]);
        }
    }
    free(w->route_admits);
    w->route_admits = NULL;
    for (size_t i = 0; i < w->n_clusters; i++)
        rem_cluster_free(w->clusters[i]);
    free(w->clusters);
    w->clusters = NULL;
    rem_dns_free(w->dns);
    w->dns = NULL;
    rem_stream_freelist_dispose(w);
    rem_worker_dispose(w);
}
