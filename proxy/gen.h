/* SPDX-License-Identifier: Apache-2.0
 * gen: a worker's generation: what one config generation becomes on one worker. It holds the
 * config, the metric layout, and the objects indexed by route or upstream number in that
 * config: the clusters, the route states (admission and counters) and the route histograms.
 * A stream takes a reference on the worker's current generation when it starts and uses only
 * that generation's arrays with that generation's indices (DESIGN.md, "Generations and
 * indices"); a reload gives the worker a new generation and the old one is freed with its last
 * stream. Objects whose identity did not change (a cluster with the same name, endpoints and
 * protocol; a route with the same name; a histogram with the same buckets) are shared by the
 * generations (reference counted), so pools, queues and counters carry over.
 * server.c builds generations; this module owns their lifetime and the scrape's view of them.
 * Everything here runs on the worker's thread except rem_gen_view (the scrape, under the
 * worker's gen_lock). */
#ifndef REM_GEN_H
#define REM_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "loop.h"
#include "metrics.h"

struct rem_worker;
struct rem_config;
struct rem_cluster;
struct rem_admit;

/* One route's state on one worker, by route name, across generations. */
struct rem_route_state {
    unsigned refs;           /* each generation's that has the route */
    char *name;              /* owned; NULL: the unmatched "route" */
    struct rem_admit *admit; /* owned; NULL until a generation sets max_requests */
    struct rem_route_metrics m;
};

/* One route's histograms for one bucket layout, across generations. */
struct rem_gen_hist {
    unsigned refs;
    struct rem_route_hist h;
};

struct rem_gen {
    unsigned refs; /* the worker's while it is current, and each stream's started on it */
    uint64_t id;   /* 1 at start, +1 per reload */
    struct rem_worker *worker;       /* borrowed */
    struct rem_config *cfg;          /* a reference */
    struct rem_metrics_layout *ml;   /* a reference */
    struct rem_cluster **clusters;   /* [cfg->n_upstreams], each a reference */
    struct rem_route_state **routes; /* [cfg->n_routes + 1] (the last: unmatched), references */
    struct rem_admit **route_admits; /* [cfg->n_routes + 1]: routes[i]->admit when this
                                        generation limits route i, else NULL (borrowed) */
    struct rem_gen_hist **hists;     /* [cfg->n_routes + 1], each a reference */
    struct rem_reap reap;            /* the last unref frees it from the loop's reaper */
};

/* An empty generation of cfg and ml (references taken) with refs 1 and zeroed arrays sized for
 * cfg; the builder (server.c) fills every entry of clusters, routes and hists. Aborts on OOM. */
struct rem_gen *rem_gen_new(struct rem_worker *w, struct rem_config *cfg,
                            struct rem_metrics_layout *ml, uint64_t id);

static inline struct rem_gen *rem_gen_ref(struct rem_gen *g)
{
    g->refs++;
    return g;
}
/* Drops a reference; the last one hands g to the worker's reaper, which frees it and unrefs
 * what it holds (clusters, route states, histograms) under the worker's gen_lock, since the
 * scrape reads them. Deferred because the last stream of a generation ends deep in an upconn's
 * callback, and freeing a cluster closes that upconn's siblings and frees the cluster it
 * still uses. NULL-safe. */
void rem_gen_unref(struct rem_gen *g);

/* A new route state (refs 1) for the route named name (NULL: unmatched). */
struct rem_route_state *rem_route_state_new(const char *name);
static inline struct rem_route_state *rem_route_state_ref(struct rem_route_state *r)
{
    r->refs++;
    return r;
}
/* A new zeroed histogram set (refs 1). */
struct rem_gen_hist *rem_gen_hist_new(void);
static inline struct rem_gen_hist *rem_gen_hist_ref(struct rem_gen_hist *h)
{
    h->refs++;
    return h;
}

/* Index of the route named name in g's config (n_routes for NULL: unmatched), or -1. */
ssize_t rem_gen_route_index(const struct rem_gen *g, const char *name);
/* Index of the upstream named name in g's config, or -1. */
ssize_t rem_gen_upstream_index(const struct rem_gen *g, const char *name);

/* Fills v (arrays allocated by the caller, sized for l) with g's objects lined up with the
 * layout l of config cfg, matching by route and upstream name when g is another generation;
 * missing entries and histograms with other buckets point at the zero objects. The caller
 * holds the worker's gen_lock and keeps it while v is used. */
void rem_gen_view(const struct rem_gen *g, const struct rem_config *cfg,
                  const struct rem_metrics_layout *l, struct rem_metrics_view *v);

#endif
