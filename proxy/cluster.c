/* SPDX-License-Identifier: Apache-2.0
 * cluster: per-worker endpoints of one upstream, kept in step with DNS answers, and the
 * balancing policy (round robin, or least request by power of two choices). */
#include <arpa/inet.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "cluster.h"
#include "dns.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "wait.h"
#include "worker.h"

void rem_endpoint_ref(struct rem_endpoint *ep)
{
    ep->refs++;
}

void rem_endpoint_unref(struct rem_endpoint *ep)
{
    REM_BUG_ON(ep->refs == 0);
    if (--ep->refs > 0)
        return;
    SSL_SESSION_free(ep->tls_session);
    free(ep->host);
    free(ep);
}

void rem_endpoint_set_tls_session(struct rem_endpoint *ep, SSL_SESSION *session, uint64_t id)
{
    SSL_SESSION_free(ep->tls_session);
    ep->tls_session = session;
    ep->tls_session_id = id;
}

void *rem_cluster_connector_arg(const struct rem_cluster *c)
{
    return c->connect ? c->connect_arg : NULL;
}

void rem_cluster_retrust(struct rem_cluster *c)
{
    for (size_t i = 0; c->close_upconns && i < c->n_endpoints; i++)
        c->close_upconns(c->endpoints[i], false);
}

void rem_cluster_set_connector(struct rem_cluster *c, rem_cluster_connect_fn fn, void *arg,
                               void (*release)(void *arg))
{
    if (c->connect_release)
        c->connect_release(c->connect_arg);
    c->connect = fn;
    c->connect_arg = arg;
    c->connect_release = release;
}

static struct rem_endpoint *endpoint_new(struct rem_cluster *c, const struct rem_sockaddr *a,
                                         const char *host)
{
    struct rem_endpoint *ep = rem_xcalloc(1, sizeof(*ep));
    ep->cluster = c;
    ep->addr = *a;
    ep->host = host && a->ss.ss_family != AF_UNIX ? rem_xstrdup(host) : NULL;
    ep->refs = 1; /* the cluster's, while it is in the set */
    rem_sockaddr_str(&ep->addr, ep->name, sizeof(ep->name));
    ep->authority = a->ss.ss_family == AF_UNIX ? "localhost" : ep->name;
    TAILQ_INIT(&ep->idle);
    TAILQ_INIT(&ep->busy);
    return ep;
}

/* ep leaves the set: no new stream picks it; idle upconns close now, busy ones finish their
 * exchanges and close (upool checks `removed`). */
static void endpoint_remove(struct rem_endpoint *ep)
{
    ep->removed = true;
    /* Closed upconns keep their reference until the reaper frees them. */
    if (ep->cluster->close_upconns)
        ep->cluster->close_upconns(ep, false);
    rem_endpoint_unref(ep); /* the cluster's */
}

static void add_endpoint(struct rem_cluster *c, const struct rem_sockaddr *a, const char *host)
{
    if (c->n_endpoints == c->cap_endpoints) {
        size_t cap = c->cap_endpoints ? c->cap_endpoints * 2 : 4;
        struct rem_endpoint **n = realloc(c->endpoints, cap * sizeof(*n));
        if (!n)
            abort(); /* control object */
        c->endpoints = n;
        c->cap_endpoints = cap;
    }
    c->endpoints[c->n_endpoints++] = endpoint_new(c, a, host);
}

static bool same_addr(const struct rem_sockaddr *a, const struct rem_sockaddr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Whether a is wanted: a static endpoint of the config or in some source's latest set. */
static bool wanted(const struct rem_cluster *c, const struct rem_sockaddr *a)
{
    for (size_t i = 0; i < c->cfg->n_endpoints; i++) {
        const struct rem_cfg_endpoint *e = &c->cfg->endpoints[i];
        struct rem_sockaddr s;
        char spec[300];
        if (e->is_name)
            continue;
        if (rem_cfg_endpoint_str(e, spec, sizeof(spec)) == 0 && rem_parse_sockaddr(spec, &s) == 0 &&
            same_addr(&s, a))
            return true;
    }
    for (size_t i = 0; i < c->n_sources; i++)
        for (size_t k = 0; k < c->sources[i].n_addrs; k++)
            if (same_addr(&c->sources[i].addrs[k], a))
                return true;
    return false;
}

static bool present(const struct rem_cluster *c, const struct rem_sockaddr *a)
{
    for (size_t i = 0; i < c->n_endpoints; i++)
        if (same_addr(&c->endpoints[i]->addr, a))
            return true;
    return false;
}

static void wake_dns_waiters(struct rem_cluster *c);

/* Brings the set in line with the sources: removed endpoints drain, new ones are added. */
static void reconcile(struct rem_cluster *c)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n_endpoints; i++) {
        struct rem_endpoint *ep = c->endpoints[i];
        if (wanted(c, &ep->addr)) {
            c->endpoints[k++] = ep;
            continue;
        }
        rem_log_info("upstream %s: endpoint %s removed, draining", c->cfg->name, ep->name);
        endpoint_remove(ep);
    }
    c->n_endpoints = k;
    for (size_t i = 0; i < c->n_sources; i++)
        for (size_t j = 0; j < c->sources[i].n_addrs; j++)
            if (!present(c, &c->sources[i].addrs[j])) {
                add_endpoint(c, &c->sources[i].addrs[j], c->sources[i].host);
                rem_log_info("upstream %s: endpoint %s added", c->cfg->name,
                             c->endpoints[c->n_endpoints - 1]->name);
            }
    REM_M_ADD(c->metrics->endpoints, (int64_t)c->n_endpoints - c->metrics->endpoints);
    if (c->n_endpoints > 0)
        wake_dns_waiters(c);
}

_Static_assert(REM_DNS__N == REM_DNS_RESULTS,
               "metrics.h's REM_DNS_RESULTS counts enum rem_dns_result");

/* Readiness (main thread) reads this: 0 resolved, else 1 + the latest failing result (or
 * 1 + REM_DNS__N before any answer). */
static void publish_dns_state(struct rem_cluster *c)
{
    int64_t st = c->resolved ? 0 : 1 + (int64_t)c->last_dns_result;
    __atomic_store_n(&c->metrics->dns_state, st, __ATOMIC_RELAXED);
}

static void on_dns_update(void *arg, const struct rem_sockaddr *addrs, size_t n)
{
    struct rem_dns_source *src = arg;
    struct rem_cluster *c = src->cluster;
    free(src->addrs);
    src->addrs = NULL;
    src->n_addrs = 0;
    if (n) {
        src->addrs = malloc(n * sizeof(*addrs));
        if (!src->addrs)
            abort();
        memcpy(src->addrs, addrs, n * sizeof(*addrs));
        src->n_addrs = n;
        src->answered = true;
    } else {
        src->answered = false; /* stale_ttl ran out: back to waiting for an answer */
    }
    bool all = true;
    for (size_t i = 0; i < c->n_sources; i++)
        all = all && c->sources[i].answered;
    c->resolved = all;
    publish_dns_state(c);
    reconcile(c);
}

static void on_dns_lookup(void *arg, enum rem_dns_result r, uint64_t ns)
{
    struct rem_dns_source *src = arg;
    struct rem_cluster *c = src->cluster;
    REM_M_ADD(c->metrics->dns_lookups[r], 1);
    rem_hist_record(&c->metrics->dns_duration, c->hl, ns);
    if (r != REM_DNS_SUCCESS) {
        c->last_dns_result = (int)r;
        publish_dns_state(c);
    }
}

static const struct rem_dns_cbs dns_cbs = {.on_update = on_dns_update, .on_lookup = on_dns_lookup};

/* ---- waiting for a first answer --------------------------------------------------------- */

static void arm_dns_timer(struct rem_cluster *c)
{
    struct rem_wait *w = TAILQ_FIRST(&c->dns_wait);
    if (!w) {
        event_del(c->dns_timer);
        return;
    }
    uint64_t limit = c->cfg->queue_timeout_ms, now = rem_now_ms();
    uint64_t waited = now - w->since_ms;
    uint64_t ms = waited >= limit ? 0 : limit - waited;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(c->dns_timer, &tv);
}

static void on_dns_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_cluster *c = arg;
    struct rem_wait *w;
    uint64_t now = rem_now_ms();
    while ((w = TAILQ_FIRST(&c->dns_wait)) != NULL &&
           now - w->since_ms >= c->cfg->queue_timeout_ms) {
        rem_cluster_unwait_dns(c, w);
        w->done(w, -REM_E_DNS);
    }
    arm_dns_timer(c);
}

bool rem_cluster_wait_dns(struct rem_cluster *c, struct rem_wait *w)
{
    if (c->n_sources == 0 || c->resolved || !c->cfg->queue_timeout_ms)
        return false;
    rem_wait_enqueue(&c->dns_wait, w, rem_now_ms());
    if (!evtimer_pending(c->dns_timer, NULL))
        arm_dns_timer(c);
    return true;
}

void rem_cluster_unwait_dns(struct rem_cluster *c, struct rem_wait *w)
{
    rem_wait_dequeue(&c->dns_wait, w);
}

static void wake_dns_waiters(struct rem_cluster *c)
{
    struct rem_wait *w;
    while ((w = TAILQ_FIRST(&c->dns_wait)) != NULL) {
        rem_cluster_unwait_dns(c, w);
        w->done(w, 0);
    }
    event_del(c->dns_timer);
}

void rem_cluster_set_pool(struct rem_cluster *c, const struct rem_up_ops *ops,
                          void (*close_upconns)(struct rem_endpoint *ep, bool busy_too))
{
    c->up_ops = ops;
    c->close_upconns = close_upconns;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

/* This worker's shares of the upstream's limits. For HTTP/1 a request in flight holds a
 * connection, so the effective request limit is min(max_requests, max_connections). */
static void shares(const struct rem_cfg_upstream *cfg, unsigned n_workers, unsigned *conns,
                   uint32_t *lim_share, uint32_t *pend_share)
{
    *conns = rem_worker_share(cfg->max_connections, n_workers);
    uint32_t lim = cfg->max_requests;
    if (cfg->protocol == REM_PROTO_HTTP1 && cfg->max_connections < lim)
        lim = cfg->max_connections;
    *lim_share = rem_worker_share(lim, n_workers);
    *pend_share = cfg->max_pending ? rem_worker_share(cfg->max_pending, n_workers) : 0;
}

struct rem_cluster *rem_cluster_new(struct rem_worker *w, struct rem_config *config,
                                    const struct rem_cfg_upstream *cfg,
                                    struct rem_metrics_layout *ml, unsigned n_workers)
{
    struct rem_cluster *c = rem_xcalloc(1, sizeof(*c));
    c->refs = 1;
    c->worker = w;
    c->config = rem_config_ref(config);
    c->cfg = cfg;
    c->ml = rem_metrics_layout_ref(ml);
    c->hl = &ml->upstream_hist;
    c->metrics = rem_xcalloc(1, sizeof(*c->metrics));
    TAILQ_INIT(&c->pool_wait);
    TAILQ_INIT(&c->dns_wait);
    /* Each worker gets an equal share of the connection budget (no shared counter on the
     * request path); at least one. */
    uint32_t lim_share, pend_share;
    shares(cfg, n_workers, &c->max_connections, &lim_share, &pend_share);
    c->dns_timer = evtimer_new(w->loop.base, on_dns_timer, c);
    if (!c->dns_timer ||
        rem_admit_init(&c->admit, w, c->metrics, c->hl, lim_share, pend_share,
                       cfg->queue_timeout_ms) < 0 ||
        (cfg->adaptive && rem_admit_adaptive(&c->admit) < 0)) {
        rem_cluster_unref(c);
        return NULL;
    }
    size_t n_names = 0;
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        const struct rem_cfg_endpoint *e = &cfg->endpoints[i];
        if (e->is_name) {
            n_names++;
            continue;
        }
        struct rem_sockaddr a;
        char spec[300];
        if (rem_cfg_endpoint_str(e, spec, sizeof(spec)) < 0 || rem_parse_sockaddr(spec, &a) < 0) {
            rem_log_error("upstream %s: endpoint %s is not a numeric address", cfg->name, spec);
            rem_cluster_unref(c);
            return NULL;
        }
        if (!present(c, &a))
            add_endpoint(c, &a, e->host);
    }
    if (n_names) {
        if (!w->dns) {
            rem_log_error("upstream %s: endpoint names need the dns resolver", cfg->name);
            rem_cluster_unref(c);
            return NULL;
        }
        c->sources = rem_xcalloc(n_names, sizeof(*c->sources));
        for (size_t i = 0; i < cfg->n_endpoints; i++) {
            const struct rem_cfg_endpoint *e = &cfg->endpoints[i];
            if (!e->is_name)
                continue;
            struct rem_dns_source *src = &c->sources[c->n_sources++];
            src->cluster = c;
            src->host = rem_xstrdup(e->host);
            src->watch = rem_dns_watch(w->dns, e->host, e->port, &dns_cbs, src);
        }
        c->last_dns_result = REM_DNS__N; /* "no answer yet" */
        publish_dns_state(c);
    } else {
        c->resolved = true;
    }
    REM_M_ADD(c->metrics->endpoints, (int64_t)c->n_endpoints);
    return c;
}

bool rem_cluster_same(const struct rem_cluster *c, const struct rem_cfg_upstream *cfg)
{
    const struct rem_cfg_upstream *o = c->cfg;
    if (strcmp(o->name, cfg->name) != 0 || o->protocol != cfg->protocol ||
        (o->tls != NULL) != (cfg->tls != NULL) || o->n_endpoints != cfg->n_endpoints)
        return false;
    for (size_t i = 0; i < o->n_endpoints; i++)
        if (strcmp(o->endpoints[i].host, cfg->endpoints[i].host) != 0 ||
            o->endpoints[i].port != cfg->endpoints[i].port)
            return false;
    return true;
}

void rem_cluster_update(struct rem_cluster *c, struct rem_config *config,
                        const struct rem_cfg_upstream *cfg, struct rem_metrics_layout *ml,
                        unsigned n_workers)
{
    rem_config_ref(config);
    rem_config_unref(c->config);
    c->config = config;
    c->cfg = cfg;
    if (!rem_hist_layout_same(c->hl, &ml->upstream_hist)) {
        /* New buckets: the histograms restart; counters and gauges carry over. */
        struct rem_upstream_metrics *m = rem_xcalloc(1, sizeof(*m));
        rem_upstream_metrics_carry(m, c->metrics);
        free(c->metrics);
        c->metrics = m;
    }
    rem_metrics_layout_ref(ml);
    rem_metrics_layout_unref(c->ml);
    c->ml = ml;
    c->hl = &ml->upstream_hist;
    rem_admit_set_metrics(&c->admit, c->metrics, c->hl);
    uint32_t lim_share, pend_share;
    shares(cfg, n_workers, &c->max_connections, &lim_share, &pend_share);
    rem_admit_configure(&c->admit, lim_share, pend_share, cfg->queue_timeout_ms, cfg->adaptive);
}

void rem_cluster_unref(struct rem_cluster *c)
{
    if (!c || --c->refs > 0)
        return;
    for (size_t i = 0; i < c->n_sources; i++) {
        rem_dns_unwatch(c->sources[i].watch);
        free(c->sources[i].addrs);
        free(c->sources[i].host);
    }
    free(c->sources);
    for (size_t i = 0; i < c->n_endpoints; i++) {
        struct rem_endpoint *ep = c->endpoints[i];
        if (c->close_upconns)
            c->close_upconns(ep, true);
        ep->removed = true;
        rem_endpoint_unref(ep);
    }
    if (c->dns_timer)
        event_free(c->dns_timer);
    rem_cluster_set_connector(c, NULL, NULL, NULL);
    rem_admit_dispose(&c->admit);
    free(c->endpoints);
    free(c->metrics);
    rem_metrics_layout_unref(c->ml);
    rem_config_unref(c->config);
    free(c);
}

struct rem_endpoint *rem_cluster_pick(struct rem_cluster *c)
{
    size_t n = c->n_endpoints;
    if (n == 0)
        return NULL;
    if (c->cfg->lb == REM_LB_LEAST_REQUEST && n > 1) {
        /* Power of two choices: two distinct random endpoints, the less loaded wins. */
        uint64_t *r = &c->worker->rng;
        *r ^= *r << 13;
        *r ^= *r >> 7;
        *r ^= *r << 17;
        size_t a = (size_t)(*r % n), b = (size_t)((*r >> 32) % (n - 1));
        if (b >= a)
            b++;
        struct rem_endpoint *x = c->endpoints[a], *y = c->endpoints[b];
        return y->n_streams < x->n_streams ? y : x;
    }
    struct rem_endpoint *ep = c->endpoints[c->rr % n];
    c->rr++;
    return ep;
}
