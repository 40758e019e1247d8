/* SPDX-License-Identifier: Apache-2.0
 * cluster: a worker's runtime view of one configured upstream: its endpoints (address, idle
 * upconn pool, counters) and the balancing policy (round robin or least request). Owned by the
 * worker; built from the config generation. Endpoints come from numeric addresses in the config
 * and from names kept resolved by dns.c: when a name's answer changes, new endpoints are added
 * and removed ones drain (refcounted: freed once no upconn or stream refers to them). Requests
 * for an upstream whose names never resolved wait (up to queue_timeout) for the first answer. */
#ifndef REM_CLUSTER_H
#define REM_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "admit.h"
#include "config.h"
#include "wait.h"

struct rem_worker;
struct rem_upconn;
struct rem_loop;
struct rem_transport;
struct rem_transport_cbs;
struct rem_endpoint;
struct ssl_session_st;

/* How upconns reach an endpoint: sets t up and starts connecting (REM_TE_READY or
 * REM_TE_ERROR follow from the loop). Returns 0 or a negative -REM_E_* (t closed). NULL in the
 * cluster means TCP to ep->addr (io_tcp); TLS and in-memory peers (tests) plug in here. */
typedef int (*rem_cluster_connect_fn)(struct rem_transport *t, struct rem_loop *loop,
                                      struct rem_endpoint *ep, const struct rem_transport_cbs *cbs,
                                      void *arg, size_t read_high, size_t write_high,
                                      void *connect_arg);
struct rem_upstream_metrics;
struct rem_metrics_layout;
struct rem_hist_layout;
struct rem_dns_name;
struct rem_up_ops;

TAILQ_HEAD(rem_upconn_list, rem_upconn);

struct rem_endpoint {
    struct rem_cluster *cluster; /* borrowed: the owner */
    unsigned refs;               /* the cluster's (while in its set), each upconn's, each
                                    stream's that picked it */
    bool removed;                /* no longer in the set: draining, never picked */
    unsigned n_streams;          /* streams that picked it and are not done (least_request) */
    struct rem_sockaddr addr;
    char name[128];              /* "127.0.0.1:8080" or "unix:/run/app.sock", for logs */
    const char *authority;       /* Host / :authority when the client sent none: name, or
                                    "localhost" for a Unix socket (static or name) */
    struct rem_upconn_list idle; /* idle upconns, most recently used first */
    struct rem_upconn_list busy; /* connecting or active upconns */
    uint32_t h2_max_streams;     /* the app's last SETTINGS_MAX_CONCURRENT_STREAMS (0: unknown),
                                    assumed for upconns whose SETTINGS have not arrived yet */
    char *host; /* owned: the host as configured (a name, or a numeric address without
                   brackets) that reached this address, for TLS (SNI, verification); NULL for
                   a Unix socket */
    struct ssl_session_st *tls_session; /* owned: the last TLS session the app gave an upconn
                                           to it (resumed by the next), NULL: none */
    uint64_t tls_session_id;            /* the client context (tls_client.c) that session is from */
};

struct rem_cluster {
    unsigned refs;                        /* each worker generation's that has it */
    struct rem_worker *worker;            /* borrowed */
    struct rem_config *config;            /* a reference: the generation cfg points into */
    const struct rem_cfg_upstream *cfg;   /* in config: the newest definition */
    struct rem_metrics_layout *ml;        /* a reference: hl points into it */
    const struct rem_hist_layout *hl;     /* buckets of the histograms in metrics */
    struct rem_upstream_metrics *metrics; /* owned: this upstream's metrics on the worker */
    struct rem_endpoint **endpoints;      /* the set in effect (each holds a ref) */
    size_t n_endpoints, cap_endpoints;
    struct rem_dns_source *sources; /* owned: one per configured endpoint name */
    size_t n_sources;
    bool resolved;                 /* every name has had an answer at least once, or
                                      there is no name */
    int last_dns_result;           /* enum rem_dns_result of the latest failing lookup */
    struct rem_wait_list dns_wait; /* waiting for a first answer (borrowed handles) */
    struct event *dns_timer;       /* owned: queue_timeout of the oldest waiter */
    size_t rr;                     /* round-robin cursor */
    unsigned max_connections;      /* this worker's share of cfg->max_connections */
    struct rem_admit admit;        /* owned: admission of requests to this upstream */
    unsigned n_conns;              /* idle + active over all endpoints */
    /* The pool (upool.c): the upstream codec, and the acquires waiting for a slot, every
     * upconn being full and max_connections reached (FIFO, borrowed handles). */
    const struct rem_up_ops *up_ops; /* borrowed (static): chosen by the upstream's protocol */
    void (*close_upconns)(struct rem_endpoint *ep, bool busy_too); /* the pool's */
    rem_cluster_connect_fn connect;                                /* NULL: TCP */
    void *connect_arg;                  /* owned through connect_release, when set */
    void (*connect_release)(void *arg); /* drops connect_arg (NULL: borrowed) */
    struct rem_wait_list pool_wait;
    bool pool_waking;
    bool pool_draining; /* remora is draining: upconns close instead of idling */
    bool gates_ready;   /* /readyz waits for its names' first answer (first generation's) */
};

/* A configured endpoint name being resolved for this cluster (dns.c). */
struct rem_dns_source {
    struct rem_cluster *cluster; /* borrowed: the owner */
    struct rem_dns_name *watch;  /* owned */
    char *host;                  /* owned: the name, for its endpoints' host */
    struct rem_sockaddr *addrs;  /* owned: its latest set */
    size_t n_addrs;
    bool answered; /* had a usable answer at least once */
};

/* Builds the cluster of upstream cfg (inside config, referenced), with histograms in the
 * buckets of ml (referenced): numeric endpoints at once, names through the worker's dns
 * channel. refs 1. Returns NULL with the reason logged. */
struct rem_cluster *rem_cluster_new(struct rem_worker *w, struct rem_config *config,
                                    const struct rem_cfg_upstream *cfg,
                                    struct rem_metrics_layout *ml, unsigned n_workers);
/* cfg defines the same cluster as c: same name, protocol and endpoints (so its pool, DNS
 * watches and admission queue can carry over a reload). */
bool rem_cluster_same(const struct rem_cluster *c, const struct rem_cfg_upstream *cfg);
/* A reload kept c (rem_cluster_same): c takes the new definition cfg (inside config) and its
 * limits, timeouts, balancing and admission shares; in-flight requests keep their slots and
 * the pool its upconns. When ml's upstream buckets differ, the histograms restart in them
 * (counters and gauges carry over). Call with the worker's gen_lock held (the scrape reads
 * the metrics). Cannot fail. */
void rem_cluster_update(struct rem_cluster *c, struct rem_config *config,
                        const struct rem_cfg_upstream *cfg, struct rem_metrics_layout *ml,
                        unsigned n_workers);
static inline struct rem_cluster *rem_cluster_ref(struct rem_cluster *c)
{
    c->refs++;
    return c;
}
/* Drops a reference; the last one closes every upconn of the cluster through the pool (their
 * streams must be gone) and frees it. Call with the worker's gen_lock held. NULL-safe. */
void rem_cluster_unref(struct rem_cluster *c);

/* The next endpoint by the upstream's policy, or NULL when the cluster has none. */
struct rem_endpoint *rem_cluster_pick(struct rem_cluster *c);

/* No endpoint yet because no name resolved so far: w waits for the first answer (w->done(w, 0))
 * or queue_timeout (w->done(w, -REM_E_DNS)), never before this returns. Returns false when
 * waiting makes no sense (the names did answer; the set is just empty). */
bool rem_cluster_wait_dns(struct rem_cluster *c, struct rem_wait *w);
/* w leaves the DNS wait; its done never runs. Idempotent. */
void rem_cluster_unwait_dns(struct rem_cluster *c, struct rem_wait *w);

/* The pool that serves c: the upstream codec for its upconns and how to close an endpoint's
 * upconns (idle ones, or all) when the endpoint leaves the set or the cluster is freed. */
void rem_cluster_set_pool(struct rem_cluster *c, const struct rem_up_ops *ops,
                          void (*close_upconns)(struct rem_endpoint *ep, bool busy_too));

/* Upconns of c connect through fn (NULL: TCP) with arg, from the next connect on; release
 * (NULL: arg is borrowed and outlives c) drops arg when c is freed or connects otherwise.
 * Endpoints keep TLS sessions only for the connector that made them (rem_endpoint_tls_session). */
/* The connector's argument (rem_cluster_set_connector), NULL without one. */
void *rem_cluster_connector_arg(const struct rem_cluster *c);
/* What new upconns of c are trusted with changed (upstream TLS: another CA, client certificate,
 * sni or verify): its idle upconns close now, so no request is sent again over a connection
 * the new settings would not have made (sessions of the old client are never offered again:
 * they are kept per client id). Busy upconns finish their exchange. Worker thread. */
void rem_cluster_retrust(struct rem_cluster *c);
void rem_cluster_set_connector(struct rem_cluster *c, rem_cluster_connect_fn fn, void *arg,
                               void (*release)(void *arg));

/* Whether /readyz waits for c's names to answer once (the first generation's clusters do; a
 * cluster a reload adds does not take a serving pod out of its Service). */
static inline void rem_cluster_set_gates_ready(struct rem_cluster *c, bool gates)
{
    c->gates_ready = gates;
}

/* The app's SETTINGS_MAX_CONCURRENT_STREAMS, assumed for its next upconns. */
static inline void rem_endpoint_set_h2_max_streams(struct rem_endpoint *ep, uint32_t n)
{
    ep->h2_max_streams = n;
}

/* ep keeps session (taken over; NULL: none), a session of the client context id, to offer on
 * its next TLS connect; the one it kept is freed. */
void rem_endpoint_set_tls_session(struct rem_endpoint *ep, struct ssl_session_st *session,
                                  uint64_t id);
/* The session ep keeps for client context id (borrowed), NULL when it has none of that one. */
static inline struct ssl_session_st *rem_endpoint_tls_session(const struct rem_endpoint *ep,
                                                              uint64_t id)
{
    return ep->tls_session_id == id ? ep->tls_session : NULL;
}

/* References on endpoints: a removed endpoint is freed with its last reference. */
void rem_endpoint_ref(struct rem_endpoint *ep);
void rem_endpoint_unref(struct rem_endpoint *ep);

#endif
