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
    c->endpoints = rem_xcalloc(cfg->n_endpoints, sizeof(*c->endpoints));
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
