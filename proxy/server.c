/* SPDX-License-Identifier: Apache-2.0
 * server: what runs on each worker, built from a config generation: the c-ares channel, the
 * worker generation (clusters with their admission and pools, route states and admits,
 * histograms) and the listening sockets; their swap on a reload, and their teardown. The top
 * of the stack: it may include every module; nothing includes it but main.c. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "dns.h"
#include "error.h"
#include "gen.h"
#include "h1_up.h"
#include "h2_up.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "admit.h"
#include "server.h"
#include "stream.h"
#include "tls.h"
#include "tls_client.h"
#include "upool.h"
#include "worker.h"

static void stop_listeners(struct rem_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i])
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
    for (size_t i = 0; i < w->gen->cfg->n_upstreams; i++)
        rem_upool_drain(w->gen->clusters[i]);
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

/* ---- plans (main thread) ------------------------------------------------------------------ */

static bool same_addr(const struct rem_sockaddr *a, const struct rem_sockaddr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

struct rem_server_plan *rem_server_plan_new(struct rem_config *cfg, struct rem_metrics_layout *ml,
                                            const struct rem_server_plan *prev, unsigned n_workers,
                                            uint64_t id)
{
    struct rem_server_plan *p = rem_xcalloc(1, sizeof(*p));
    size_t nl = cfg->n_listeners;
    p->refs = 1;
    p->id = id;
    p->cfg = rem_config_ref(cfg);
    p->ml = rem_metrics_layout_ref(ml);
    p->n_workers = n_workers;
    p->keep = rem_xcalloc(nl ? nl : 1, sizeof(*p->keep));
    p->fds = rem_xcalloc(nl * n_workers + 1, sizeof(*p->fds));
    p->ports = rem_xcalloc(nl ? nl : 1, sizeof(*p->ports));
    p->tls = rem_xcalloc(nl ? nl : 1, sizeof(*p->tls));
    p->uptls = rem_xcalloc(cfg->n_upstreams + 1, sizeof(*p->uptls));
    for (size_t i = 0; i < nl * n_workers; i++)
        p->fds[i] = -1;
    /* Contexts first: a bad certificate fails the plan before any address is bound. */
    for (size_t i = 0; i < nl; i++) {
        char err[512];
        if (cfg->listeners[i].tls &&
            !(p->tls[i] = rem_tls_server_ctx_new(&cfg->listeners[i], err, sizeof(err)))) {
            rem_log_error("%s", err);
            rem_server_plan_unref(p);
            return NULL;
        }
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        char err[512];
        if (cfg->upstreams[i].tls &&
            !(p->uptls[i] = rem_tls_client_new(&cfg->upstreams[i], err, sizeof(err)))) {
            rem_log_error("%s", err);
            rem_server_plan_unref(p);
            return NULL;
        }
    }
    for (size_t i = 0; i < nl; i++) {
        p->keep[i] = -1;
        for (size_t j = 0; prev && j < prev->cfg->n_listeners; j++)
            if (same_addr(&cfg->listeners[i].addr, &prev->cfg->listeners[j].addr)) {
                p->keep[i] = (ssize_t)j;
                p->ports[i] = prev->ports[j];
            }
        if (p->keep[i] >= 0)
            continue;
        for (unsigned k = 0; k < n_workers; k++) {
            /* Worker 0's socket fixes the port (port 0: the kernel picks it) for the others.
             * AF_UNIX has no SO_REUSEPORT: the others accept on dups of worker 0's socket. */
            int fd = k > 0 && cfg->listeners[i].addr.ss.ss_family == AF_UNIX
                         ? rem_listener_dup(&cfg->listeners[i], p->fds[i * n_workers])
                         : rem_listener_bind(&cfg->listeners[i], &p->ports[i]);
            if (fd < 0) {
                rem_server_plan_unref(p);
                return NULL;
            }
            p->fds[i * n_workers + k] = fd;
        }
    }
    return p;
}

void rem_server_plan_unref(struct rem_server_plan *p)
{
    if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < p->cfg->n_listeners * p->n_workers; i++)
        if (p->fds[i] >= 0)
            close(p->fds[i]);
    for (size_t i = 0; i < p->cfg->n_listeners; i++)
        if (p->n_workers && p->fds[i * p->n_workers] >= 0) /* bound, never served */
            rem_listener_unbind(&p->cfg->listeners[i]);
    for (size_t i = 0; i < p->cfg->n_listeners; i++)
        SSL_CTX_free(p->tls[i]);
    for (size_t i = 0; i < p->cfg->n_upstreams; i++)
        rem_tls_client_unref(p->uptls[i]);
    free(p->uptls);
    free(p->keep);
    free(p->fds);
    free(p->ports);
    free(p->tls);
    rem_metrics_layout_unref(p->ml);
    rem_config_unref(p->cfg);
    free(p);
}

/* ---- generations (worker thread) ---------------------------------------------------------- */

static bool needs_dns(const struct rem_config *cfg)
{
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        for (size_t j = 0; j < cfg->upstreams[i].n_endpoints; j++)
            if (cfg->upstreams[i].endpoints[j].is_name)
                return true;
    return false;
}

/* g's route i, phase one: the state of the same name in prev (its admit and counters carry
 * over) or a new one; histograms kept while the buckets are the same; an admit created when
 * this generation limits a route that had none. Shared objects are not changed (phase two
 * configures kept admits). Returns 0 or -REM_E_NOMEM. */
static int build_route(struct rem_gen *g, size_t i, const struct rem_gen *prev, unsigned nw)
{
    const struct rem_config *cfg = g->cfg;
    const struct rem_cfg_route *r = i < cfg->n_routes ? &cfg->routes[i] : NULL;
    ssize_t j = prev ? rem_gen_route_index(prev, r ? r->name : NULL) : -1;
    struct rem_route_state *rs =
        j >= 0 ? rem_route_state_ref(prev->routes[j]) : rem_route_state_new(r ? r->name : NULL);
    g->routes[i] = rs;
    if (j >= 0 && rem_hist_layout_same(&prev->ml->route_hist[j], &g->ml->route_hist[i]))
        g->hists[i] = rem_gen_hist_ref(prev->hists[j]);
    else
        g->hists[i] = rem_gen_hist_new();
    if (!r || !r->max_requests || rs->admit)
        return 0; /* an admit from an older generation stays for the tickets it holds */
    uint32_t lim = rem_worker_share(r->max_requests, nw);
    uint32_t pend = r->max_pending ? rem_worker_share(r->max_pending, nw) : 0;
    rs->admit = rem_xcalloc(1, sizeof(*rs->admit));
    if (rem_admit_init(rs->admit, g->worker, NULL, NULL, lim, pend,
                       cfg->upstreams[r->upstream_idx].queue_timeout_ms) < 0) {
        rem_admit_dispose(rs->admit);
        free(rs->admit);
        rs->admit = NULL;
        return -REM_E_NOMEM;
    }
    return 0;
}

/* Phase two of route i (cannot fail): its admit takes this generation's limits. */
static void configure_route(struct rem_gen *g, size_t i, unsigned nw)
{
    const struct rem_cfg_route *r = i < g->cfg->n_routes ? &g->cfg->routes[i] : NULL;
    if (!r || !r->max_requests)
        return;
    struct rem_admit *a = g->routes[i]->admit;
    rem_admit_configure(a, rem_worker_share(r->max_requests, nw),
                        r->max_pending ? rem_worker_share(r->max_pending, nw) : 0,
                        g->cfg->upstreams[r->upstream_idx].queue_timeout_ms, false);
    g->route_admits[i] = a;
}

/* Upconns of c (upstream i of p) connect over TLS with p's client of it, or over TCP; the
 * client of an older plan is released (its upconns keep its context). When what the new client
 * trusts differs from the old one's (a CA removed, verify turned on, another sni or client
 * certificate), the idle upconns made under the old close (rem_cluster_retrust). */
static void set_tls(struct rem_cluster *c, struct rem_server_plan *p, size_t i)
{
    const struct rem_tls_client *old = rem_cluster_connector_arg(c);
    if (old && p->uptls[i] && old->trust != p->uptls[i]->trust)
        rem_cluster_retrust(c);
    if (p->uptls[i])
        rem_cluster_set_connector(c, rem_tls_client_connect, rem_tls_client_ref(p->uptls[i]),
                                  rem_tls_client_release);
    else
        rem_cluster_set_connector(c, NULL, NULL, NULL);
}

/* Phase one of the worker generation of plan p after prev (NULL at start): everything that can
 * fail is made here (the DNS channel, new clusters, new admits) and no object shared with prev
 * is changed, so a failure leaves prev exactly as it was. Clusters whose definition did not
 * change (rem_cluster_same) are referenced as they are (phase two updates them); routes carry
 * their state by name. Returns NULL with the reason logged. */
static struct rem_gen *build_gen(struct rem_worker *w, struct rem_server_plan *p,
                                 const struct rem_gen *prev)
{
    struct rem_config *cfg = p->cfg;
    unsigned nw = p->n_workers ? p->n_workers : 1;
    if (needs_dns(cfg) && !w->dns && !(w->dns = rem_dns_new(&w->loop, &cfg->dns)))
        return NULL;
    struct rem_gen *g = rem_gen_new(w, cfg, p->ml, p->id);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct rem_cfg_upstream *u = &cfg->upstreams[i];
        ssize_t j = prev ? rem_gen_upstream_index(prev, u->name) : -1;
        if (j >= 0 && rem_cluster_same(prev->clusters[j], u)) {
            g->clusters[i] = rem_cluster_ref(prev->clusters[j]);
            continue;
        }
        struct rem_cluster *c = g->clusters[i] = rem_cluster_new(w, cfg, u, p->ml, nw);
        if (!c)
            goto fail;
        /* The upstream codec comes from the configured protocol, once. */
        rem_upool_bind(c, u->protocol == REM_PROTO_HTTP1 ? &rem_h1_up_ops : &rem_h2_up_ops);
        set_tls(c, p, i);
        /* Only a cluster of the first generation holds readiness back until its names
         * resolve: one a reload adds must not take a serving pod out of its Service. */
        rem_cluster_set_gates_ready(c, prev == NULL);
    }
    for (size_t i = 0; i <= cfg->n_routes; i++)
        if (build_route(g, i, prev, nw) < 0)
            goto fail;
    return g;

fail:
    rem_log_error("worker %u: could not build generation %llu (see above)", w->id,
                  (unsigned long long)p->id);
    rem_gen_unref(g); /* the reaper releases what was built */
    return NULL;
}

/* Phase two (cannot fail): kept clusters take their new definition, route admits their limits. */
static void configure_gen(struct rem_gen *g, struct rem_server_plan *p)
{
    unsigned nw = p->n_workers ? p->n_workers : 1;
    for (size_t i = 0; i < g->cfg->n_upstreams; i++)
        if (g->clusters[i]->cfg != &g->cfg->upstreams[i]) {
            rem_cluster_update(g->clusters[i], g->cfg, &g->cfg->upstreams[i], p->ml, nw);
            set_tls(g->clusters[i], p, i);
        }
    for (size_t i = 0; i <= g->cfg->n_routes; i++)
        configure_route(g, i, nw);
}

/* Frees the retired listeners whose conns have all closed. */
static void reap_retired(struct rem_worker *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n_retired; i++) {
        if (rem_listener_conns(w->retired[i]) == 0)
            rem_listener_free(w->retired[i]);
        else
            w->retired[n++] = w->retired[i];
    }
    w->n_retired = n;
}

/* The listeners of p's config for w, phase one: kept addresses keep their listener (and
 * socket), new ones take the sockets the main thread bound for this worker. Returns the new
 * array (n = p->cfg->n_listeners), or NULL when a listener could not be set up (logged; the
 * new ones made so far are freed, the plan's sockets of this worker closed). */
static struct rem_listener **new_listeners(struct rem_worker *w, struct rem_server_plan *p)
{
    size_t n = p->cfg->n_listeners;
    struct rem_listener **nl = rem_xcalloc(n ? n : 1, sizeof(*nl));
    for (size_t i = 0; i < n; i++) {
        ssize_t k = p->keep[i];
        if (k >= 0 && (size_t)k < w->n_listeners && w->listeners[k]) {
            nl[i] = w->listeners[k];
            continue;
        }
        int *fd = &p->fds[i * p->n_workers + w->id];
        nl[i] = *fd >= 0 ? rem_listener_new(w, &p->cfg->listeners[i], *fd, p->n_workers, p->tls[i])
                         : NULL;
        *fd = -1; /* taken (rem_listener_new closes it on failure) */
        if (!nl[i]) {
            rem_log_error("worker %u: listener %s could not be set up", w->id,
                          p->cfg->listeners[i].name);
            for (size_t j = 0; j < i; j++)
                if (p->keep[j] < 0)
                    rem_listener_free(nl[j]);
            free(nl);
            return NULL;
        }
        if (w->id == 0 && w->gen) /* a reload added it (main logs the first ones) */
            rem_log_info("listener %s: listening on %s (port %u)", p->cfg->listeners[i].name,
                         p->cfg->listeners[i].address, p->ports[i]);
    }
    return nl;
}

/* Phase two of the listeners: the old ones no address kept stop (their conns go on) and
 * retire. Runs before the swap, so a stopping listener accepts its backlog into the config
 * its conns were promised. */
static void retire_listeners(struct rem_worker *w, struct rem_server_plan *p)
{
    for (size_t j = 0; j < w->n_listeners; j++) {
        bool kept = false;
        for (size_t i = 0; i < p->cfg->n_listeners && !kept; i++)
            kept = p->keep[i] == (ssize_t)j;
        if (kept || !w->listeners[j])
            continue;
        rem_listener_stop(w->listeners[j]);
        w->retired = realloc(w->retired, (w->n_retired + 1) * sizeof(*w->retired));
        if (!w->retired)
            abort();
        w->retired[w->n_retired++] = w->listeners[j];
    }
}

/* Swaps w to the generation of p (on w's thread). New conns and streams use it at once;
 * streams in flight keep theirs; the clusters the new generation dropped drain. When anything
 * cannot be built, w keeps its generation untouched and reports the failure (the main thread
 * then drains and exits: workers must not run different configurations). Either way w
 * acknowledges p through gen_id. */
static void apply(struct rem_worker *w, struct rem_server_plan *p)
{
    struct rem_gen *old = w->gen;
    pthread_mutex_lock(&w->gen_lock);
    struct rem_gen *g = build_gen(w, p, old);
    struct rem_listener **nl = g ? new_listeners(w, p) : NULL;
    if (!nl) {
        pthread_mutex_unlock(&w->gen_lock);
        rem_gen_unref(g);
        for (size_t i = 0; i < p->cfg->n_listeners; i++) { /* this worker's new sockets */
            int *fd = &p->fds[i * p->n_workers + w->id];
            if (*fd >= 0)
                close(*fd);
            *fd = -1;
        }
        rem_log_error("worker %u: keeps generation %llu", w->id, (unsigned long long)old->id);
        __atomic_store_n(&w->reload_failed, p->id, __ATOMIC_RELEASE);
        __atomic_store_n(&w->gen_id, p->id, __ATOMIC_RELEASE);
        return;
    }
    configure_gen(g, p);
    retire_listeners(w, p);
    for (size_t i = 0; i < p->cfg->n_listeners; i++)
        rem_listener_update(nl[i], &p->cfg->listeners[i], p->n_workers, p->tls[i]);
    free(w->listeners);
    w->listeners = nl;
    w->n_listeners = p->cfg->n_listeners;
    w->gen = g;
    w->cfg = g->cfg;
    pthread_mutex_unlock(&w->gen_lock);
    for (size_t i = 0; i < old->cfg->n_upstreams; i++) {
        bool kept = false;
        for (size_t j = 0; j < g->cfg->n_upstreams && !kept; j++)
            kept = g->clusters[j] == old->clusters[i];
        if (!kept) /* idle upconns close now, busy ones when their exchange ends */
            rem_upool_drain(old->clusters[i]);
    }
    rem_gen_unref(old);
    reap_retired(w);
    __atomic_store_n(&w->gen_id, g->id, __ATOMIC_RELEASE);
}

static void on_mail(struct rem_worker *w, unsigned what)
{
    if (what & REM_MAIL_RELOAD) {
        struct rem_server_plan *p =
            __atomic_exchange_n((struct rem_server_plan **)&w->reload, NULL, __ATOMIC_ACQ_REL);
        if (p && !w->draining)
            apply(w, p);
        rem_server_plan_unref(p);
    }
    if (what & REM_MAIL_DRAIN)
        drain(w);
    if (what & REM_MAIL_CUT)
        cut(w);
}

void rem_server_worker_reload(struct rem_worker *w, struct rem_server_plan *p)
{
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
    struct rem_server_plan *older =
        __atomic_exchange_n((struct rem_server_plan **)&w->reload, p, __ATOMIC_ACQ_REL);
    rem_server_plan_unref(older); /* never applied: superseded */
    rem_worker_post(w, REM_MAIL_RELOAD);
}

uint64_t rem_server_worker_gen_id(const struct rem_worker *w)
{
    return __atomic_load_n(&w->gen_id, __ATOMIC_ACQUIRE);
}

int rem_server_worker_init(struct rem_worker *w, unsigned id, struct rem_server_plan *p)
{
    if (rem_worker_init(w, id) < 0)
        return -REM_E_SYS;
    w->on_mail = on_mail;
    pthread_mutex_lock(&w->gen_lock);
    struct rem_gen *g = build_gen(w, p, NULL);
    struct rem_listener **nl = g ? new_listeners(w, p) : NULL;
    if (nl) {
        configure_gen(g, p);
        for (size_t i = 0; i < p->cfg->n_listeners; i++)
            rem_listener_update(nl[i], &p->cfg->listeners[i], p->n_workers, p->tls[i]);
        w->gen = g;
        w->cfg = g->cfg;
        w->listeners = nl;
        w->n_listeners = p->cfg->n_listeners;
        w->gen_id = p->id;
    }
    pthread_mutex_unlock(&w->gen_lock);
    if (nl)
        return 0;
    rem_gen_unref(g);
    rem_log_error("worker %u: could not build its clusters and listeners (see above)", id);
    return -REM_E_SYS;
}

uint64_t rem_server_worker_failed_id(const struct rem_worker *w)
{
    return __atomic_load_n(&w->reload_failed, __ATOMIC_ACQUIRE);
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
    for (size_t i = 0; i < w->n_retired; i++)
        rem_listener_free(w->retired[i]);
    free(w->retired);
    w->retired = NULL;
    rem_server_plan_unref(
        __atomic_exchange_n((struct rem_server_plan **)&w->reload, NULL, __ATOMIC_ACQ_REL));
    /* Streams are gone (with their conns): the current generation holds the last references. */
    rem_stream_freelist_dispose(w);
    rem_gen_unref(w->gen);
    w->gen = NULL;
    w->cfg = NULL;
    rem_loop_reap(&w->loop); /* frees the generations (their clusters use the DNS channel) */
    rem_dns_free(w->dns);
    w->dns = NULL;
    rem_worker_dispose(w);
}
