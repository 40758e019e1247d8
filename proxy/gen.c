/* SPDX-License-Identifier: Apache-2.0
 * gen: a worker's generation and the objects generations share (gen.h). */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"
#include "cluster.h"
#include "config.h"
#include "error.h"
#include "gen.h"
#include "worker.h"

struct rem_gen *rem_gen_new(struct rem_worker *w, struct rem_config *cfg,
                            struct rem_metrics_layout *ml, uint64_t id)
{
    struct rem_gen *g = rem_xcalloc(1, sizeof(*g));
    g->refs = 1;
    g->id = id;
    g->worker = w;
    g->cfg = rem_config_ref(cfg);
    g->ml = rem_metrics_layout_ref(ml);
    g->clusters = rem_xcalloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*g->clusters));
    g->routes = rem_xcalloc(cfg->n_routes + 1, sizeof(*g->routes));
    g->route_admits = rem_xcalloc(cfg->n_routes + 1, sizeof(*g->route_admits));
    g->hists = rem_xcalloc(cfg->n_routes + 1, sizeof(*g->hists));
    return g;
}

struct rem_route_state *rem_route_state_new(const char *name)
{
    struct rem_route_state *r = rem_xcalloc(1, sizeof(*r));
    r->refs = 1;
    r->name = name ? rem_xstrdup(name) : NULL;
    return r;
}

static void route_state_unref(struct rem_route_state *r)
{
    if (!r || --r->refs > 0)
        return;
    if (r->admit) {
        rem_admit_dispose(r->admit); /* no ticket is left: every stream that held one is gone */
        free(r->admit);
    }
    free(r->name);
    free(r);
}

struct rem_gen_hist *rem_gen_hist_new(void)
{
    struct rem_gen_hist *h = rem_xcalloc(1, sizeof(*h));
    h->refs = 1;
    return h;
}

static void gen_free(struct rem_reap *r)
{
    struct rem_gen *g = (struct rem_gen *)((char *)r - offsetof(struct rem_gen, reap));
    struct rem_worker *w = g->worker;
    size_t n = g->cfg->n_routes + 1;
    pthread_mutex_lock(&w->gen_lock);
    for (size_t i = 0; i < n; i++) {
        route_state_unref(g->routes[i]);
        if (g->hists[i] && --g->hists[i]->refs == 0)
            free(g->hists[i]);
    }
    for (size_t i = 0; i < g->cfg->n_upstreams; i++)
        rem_cluster_unref(g->clusters[i]);
    pthread_mutex_unlock(&w->gen_lock);
    free(g->routes);
    free(g->route_admits);
    free(g->hists);
    free(g->clusters);
    rem_metrics_layout_unref(g->ml);
    rem_config_unref(g->cfg);
    free(g);
    rem_alloc_release(false); /* main purges the arenas after a reload */
}

void rem_gen_unref(struct rem_gen *g)
{
    if (!g || --g->refs > 0)
        return;
    rem_loop_defer_free(&g->worker->loop, &g->reap, gen_free);
}

ssize_t rem_gen_route_index(const struct rem_gen *g, const char *name)
{
    if (!name)
        return (ssize_t)g->cfg->n_routes;
    for (size_t i = 0; i < g->cfg->n_routes; i++)
        if (strcmp(g->cfg->routes[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

ssize_t rem_gen_upstream_index(const struct rem_gen *g, const char *name)
{
    for (size_t i = 0; i < g->cfg->n_upstreams; i++)
        if (strcmp(g->cfg->upstreams[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

void rem_gen_view(const struct rem_gen *g, const struct rem_config *cfg,
                  const struct rem_metrics_layout *l, struct rem_metrics_view *v)
{
    bool same = g->cfg == cfg;
    for (size_t r = 0; r < l->n_routes; r++) {
        const char *name = r < cfg->n_routes ? cfg->routes[r].name : NULL;
        ssize_t i = same ? (ssize_t)r : rem_gen_route_index(g, name);
        v->routes[r] = &rem_metrics_zero_route;
        v->route_hists[r] = &rem_metrics_zero_route_hist;
        if (i < 0)
            continue;
        v->routes[r] = &g->routes[i]->m;
        if (same || rem_hist_layout_same(&g->ml->route_hist[i], &l->route_hist[r]))
            v->route_hists[r] = &g->hists[i]->h;
    }
    for (size_t u = 0; u < l->n_upstreams; u++) {
        ssize_t i = same ? (ssize_t)u : rem_gen_upstream_index(g, cfg->upstreams[u].name);
        v->upstreams[u] = v->up_hists[u] = &rem_metrics_zero_upstream;
        if (i < 0)
            continue;
        const struct rem_cluster *c = g->clusters[i];
        v->upstreams[u] = c->metrics;
        if (rem_hist_layout_same(c->hl, &l->upstream_hist))
            v->up_hists[u] = c->metrics;
    }
}
