/* SPDX-License-Identifier: Apache-2.0
 * cluster: a worker's runtime view of one configured upstream: its endpoints (address, idle
 * upconn pool, counters) and the balancing policy (round robin). Owned by the worker; built
 * from the config generation; frees its endpoints' idle upconns when freed. */
#ifndef REM_CLUSTER_H
#define REM_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "config.h"
#include "queue.h"

struct rem_worker;
struct rem_upconn;
struct rem_upstream_metrics;

TAILQ_HEAD(rem_upconn_list, rem_upconn);

struct rem_endpoint {
    struct rem_cluster *cluster; /* borrowed: the owner */
    struct rem_sockaddr addr;
    char name[64];               /* "127.0.0.1:8080", for logs and metrics */
    struct rem_upconn_list idle; /* idle upconns, most recently used first */
    struct rem_upconn_list busy; /* connecting or active upconns */
    unsigned n_idle;
    unsigned n_active;       /* connecting or carrying a stream */
    uint32_t h2_max_streams; /* the app's last SETTINGS_MAX_CONCURRENT_STREAMS (0: unknown),
                                assumed for upconns whose SETTINGS have not arrived yet */
};

struct rem_cluster {
    struct rem_worker *worker;            /* borrowed */
    const struct rem_cfg_upstream *cfg;   /* borrowed from the worker's generation */
    size_t idx;                           /* index of cfg in the generation's upstreams */
    struct rem_upstream_metrics *metrics; /* borrowed: this upstream in the worker's shard */
    struct rem_endpoint *endpoints;       /* owned */
    size_t n_endpoints;
    size_t rr;                /* round-robin cursor */
    unsigned max_connections; /* this worker's share of cfg->max_connections */
    struct rem_admit admit;   /* owned: admission of requests to this upstream */
    unsigned n_conns;         /* idle + active over all endpoints */
    /* HTTP/2 (protocol h2c): streams admitted but waiting for a stream slot, every upconn
     * being full and max_connections reached (FIFO, borrowed; upool.c). */
    TAILQ_HEAD(, rem_stream) h2_wait;
    bool h2_waking;
};

/* Builds the cluster; endpoint hosts must already be numeric (see rem_cluster_resolve_static).
 * Returns NULL with the reason logged. */
struct rem_cluster *rem_cluster_new(struct rem_worker *w, const struct rem_cfg_upstream *cfg,
                                    size_t idx, unsigned n_workers);
/* Closes every upconn of the cluster (their streams must be gone) and frees it. NULL-safe. */
void rem_cluster_free(struct rem_cluster *c);

/* The next endpoint by round robin, or NULL when the cluster has none. */
struct rem_endpoint *rem_cluster_pick(struct rem_cluster *c);

#endif
