/* SPDX-License-Identifier: Apache-2.0
 * cluster: per-worker endpoints of one upstream and round-robin balancing. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "upool.h"
#include "worker.h"

struct rem_cluster *rem_cluster_new(struct rem_worker *w, const struct rem_cfg_upstream *cfg,
                                    size_t idx, unsigned n_workers)
{
    struct rem_cluster *c = rem_xcalloc(1, sizeof(*c));
    c->worker = w;
    c->cfg = cfg;
    c->idx = idx;
    c->metrics = &w->metrics->upstreams[idx];
    /* Each worker gets an equal share of the connection budget (no shared counter on the
     * request path); at least one. */
    c->max_connections = cfg->max_connections / (n_workers ? n_workers : 1);
    if (c->max_connections == 0)
        c->max_connections = 1;
    /* Admission shares: for HTTP/1 a request in flight holds a connection, so the effective
     * limit is min(max_requests, max_connections). */
    unsigned nw = n_workers ? n_workers : 1;
    uint32_t lim = cfg->max_requests;
    if (cfg->protocol == REM_PROTO_HTTP1 && cfg->max_connections < lim)
        lim = cfg->max_connections;
    uint32_t lim_share = lim / nw ? lim / nw : 1;
    uint32_t pend_share =
        cfg->max_pending ? (cfg->max_pending / nw ? cfg->max_pending / nw : 1) : 0;
    if (rem_admit_init(&c->admit, w, c->metrics, lim_share, pend_share, cfg->queue_timeout_ms) <
            0 ||
        (cfg->adaptive && rem_admit_adaptive(&c->admit) < 0)) {
        rem_cluster_free(c);
        return NULL;
    }
    c->endpoints = rem_xcalloc(cfg->n_endpoints, sizeof(*c->endpoints));
    TAILQ_INIT(&c->h2_wait);
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        struct rem_endpoint *ep = &c->endpoints[c->n_endpoints];
        char spec[300];
        const char *host = cfg->endpoints[i].host;
        snprintf(spec, sizeof(spec), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
                 (unsigned)cfg->endpoints[i].port);
        if (rem_parse_sockaddr(spec, &ep->addr) < 0) {
            /* Names are resolved by main before workers start (dns issue: c-ares). */
            rem_log_error("upstream %s: endpoint %s is not a numeric address", cfg->name, spec);
            rem_cluster_free(c);
            return NULL;
        }
        ep->cluster = c;
        rem_sockaddr_str(&ep->addr, ep->name, sizeof(ep->name));
        TAILQ_INIT(&ep->idle);
        TAILQ_INIT(&ep->busy);
        c->n_endpoints++;
    }
    return c;
}

void rem_cluster_free(struct rem_cluster *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_endpoints; i++) {
        struct rem_endpoint *ep = &c->endpoints[i];
        struct rem_upconn *uc;
        while ((uc = TAILQ_FIRST(&ep->idle)) != NULL)
            rem_upconn_close(uc);
        while ((uc = TAILQ_FIRST(&ep->busy)) != NULL)
            rem_upconn_close(uc);
    }
    rem_admit_dispose(&c->admit);
    free(c->endpoints);
    free(c);
}

struct rem_endpoint *rem_cluster_pick(struct rem_cluster *c)
{
    if (c->n_endpoints == 0)
        return NULL;
    struct rem_endpoint *ep = &c->endpoints[c->rr % c->n_endpoints];
    c->rr++;
    return ep;
}
