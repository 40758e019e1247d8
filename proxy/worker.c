/* SPDX-License-Identifier: Apache-2.0
 * worker: thread + event_base + the objects it owns; the reaper; CPU count detection. */

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "cluster.h"
#include "dns.h"
#include "conn.h"
#include "config.h"
#include "error.h"
#include "listener.h"
#include "log.h"
#include "queue.h"
#include "metrics.h"
#include "stream.h"
#include "transport.h"
#include "worker.h"

#define REM_TICK_MS 500

uint64_t rem_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t rem_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* cgroup v2 cpu.max: "max 100000" or "200000 100000" (quota period). 0: no limit. */
static unsigned cgroup_cpu_limit(void)
{
    char path[512] = "/sys/fs/cgroup/cpu.max";
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f) {
        char line[400];
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = '\0';
                if (strcmp(line + 3, "/") != 0)
                    snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max", line + 3);
            }
        }
        fclose(f);
    }
    unsigned limit = 0;
    f = fopen(path, "re");
    if (!f)
        f = fopen("/sys/fs/cgroup/cpu.max", "re");
    if (f) {
        char quota[32] = "";
        unsigned long long period = 0;
        if (fscanf(f, "%31s %llu", quota, &period) == 2 && strcmp(quota, "max") != 0 &&
            period > 0) {
            char *end;
            unsigned long long q = strtoull(quota, &end, 10);
            if (*end == '\0' && q > 0)
                limit = (unsigned)((q + period - 1) / period);
        }
        fclose(f);
    }
    return limit;
}

unsigned rem_workers_auto(void)
{
    cpu_set_t set;
    unsigned n = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int c = CPU_COUNT(&set);
        if (c > 0)
            n = (unsigned)c;
    }
    unsigned lim = cgroup_cpu_limit();
    if (lim > 0 && lim < n)
        n = lim;
    return n ? n : 1;
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct rem_worker *w = arg;
    /* Objects queued while reaping are taken on the next round. */
    while (w->reap_head) {
        struct rem_reap *r = w->reap_head;
        w->reap_head = r->next;
        r->queued = false;
        r->fn(r);
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct rem_worker *w = arg;
    rem_transport_flush_all(&w->flushq);
}

void rem_worker_flush_later(struct rem_worker *w, struct rem_transport *t)
{
    if (TAILQ_EMPTY(&w->flushq))
        event_active(w->flush_ev, EV_TIMEOUT, 1);
    TAILQ_INSERT_TAIL(&w->flushq, t, flush_link);
}

void rem_worker_flush_cancel(struct rem_worker *w, struct rem_transport *t)
{
    TAILQ_REMOVE(&w->flushq, t, flush_link);
}

void rem_worker_defer_free(struct rem_worker *w, struct rem_reap *r, void (*fn)(struct rem_reap *))
{
    if (r->queued)
        return;
    r->queued = true;
    r->fn = fn;
    r->next = w->reap_head;
    w->reap_head = r;
    event_active(w->reap_ev, EV_TIMEOUT, 1);
}

/* The worker's mailbox: other threads write the eventfd after setting a request flag. */
static void on_mail(evutil_socket_t fd, short what, void *arg)
{
    struct rem_worker *w = arg;
    uint64_t v;
    while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        ;
    if (__atomic_load_n(&w->stop_requested, __ATOMIC_ACQUIRE))
        event_base_loopbreak(w->base);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct rem_worker *w = arg;
    __atomic_store_n(&w->heartbeat_ms, rem_now_ms(), __ATOMIC_RELAXED);
}

int rem_worker_init(struct rem_worker *w, unsigned id, struct rem_config *cfg,
                    const struct rem_metrics_layout *ml, uint16_t *ports)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->cfg = rem_config_ref(cfg);
    w->mlayout = ml;
    w->metrics = rem_metrics_shard_new(ml);
    TAILQ_INIT(&w->conns);
    TAILQ_INIT(&w->flushq);
    if (getrandom(&w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng) || w->rng == 0)
        w->rng = (uint64_t)time(NULL) * 2654435761u + id + 1;

    struct event_config *ec = event_config_new();
    if (!ec)
        goto fail;
    /* One thread per base: no locking inside libevent on the request path. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base)
        goto fail;
    w->reap_ev = event_new(w->base, -1, 0, on_reap, w);
    w->flush_ev = event_new(w->base, -1, 0, on_flush, w);
    w->mail_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->mail_fd < 0)
        goto fail;
    w->stop_ev = event_new(w->base, w->mail_fd, EV_READ | EV_PERSIST, on_mail, w);
    w->tick_ev = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    if (!w->reap_ev || !w->flush_ev || !w->stop_ev || !w->tick_ev)
        goto fail;
    struct timeval tv = {0, REM_TICK_MS * 1000};
    event_add(w->tick_ev, &tv);
    event_add(w->stop_ev, NULL);
    w->heartbeat_ms = rem_now_ms();

    unsigned n_workers = cfg->workers ? cfg->workers : 1;
    bool names = false;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        for (size_t j = 0; j < cfg->upstreams[i].n_endpoints; j++)
            names = names || cfg->upstreams[i].endpoints[j].is_name;
    if (names && !(w->dns = rem_dns_new(w, &cfg->dns)))
        goto fail;
    w->n_clusters = cfg->n_upstreams;
    w->clusters = rem_xcalloc(cfg->n_upstreams, sizeof(*w->clusters));
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        w->clusters[i] = rem_cluster_new(w, &cfg->upstreams[i], i, n_workers);
        if (!w->clusters[i])
            goto fail;
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
    return -REM_E_SYS;
}

static void *worker_main(void *arg)
{
    struct rem_worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "remora-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    event_base_dispatch(w->base);
    return NULL;
}

int rem_worker_start(struct rem_worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        rem_log_error("worker %u: pthread_create: %s", w->id, strerror(rc));
        return -REM_E_SYS;
    }
    w->started = true;
    return 0;
}

void rem_worker_stop(struct rem_worker *w)
{
    if (!w->started)
        return;
    /* The base has no locks, so other threads never touch it: they post through the eventfd. */
    uint64_t one = 1;
    __atomic_store_n(&w->stop_requested, true, __ATOMIC_RELEASE);
    if (write(w->mail_fd, &one, sizeof(one)) < 0)
        rem_log_error("worker %u: cannot wake: %s", w->id, strerror(errno));
    pthread_join(w->thread, NULL);
    w->started = false;
}

void rem_worker_dispose(struct rem_worker *w)
{
    if (!w)
        return;
    /* Conns first: closing one tells its listener. */
    struct rem_conn *c;
    while (w->base && (c = TAILQ_FIRST(&w->conns)) != NULL)
        rem_conn_close(c);
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
    while (w->free_streams) {
        struct rem_stream *s = w->free_streams;
        w->free_streams = s->next_free;
        rem_head_dispose(&s->req);
        rem_head_dispose(&s->resp);
        rem_head_dispose(&s->req_trl);
        rem_head_dispose(&s->resp_trl);
        free(s);
    }
    if (w->reap_ev)
        on_reap(-1, 0, w);
    if (w->reap_ev)
        event_free(w->reap_ev);
    if (w->flush_ev)
        event_free(w->flush_ev);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->tick_ev)
        event_free(w->tick_ev);
    if (w->base)
        event_base_free(w->base);
    if (w->mail_fd > 0)
        close(w->mail_fd);
    rem_config_unref(w->cfg);
    rem_metrics_shard_free(w->metrics);
    memset(w, 0, sizeof(*w));
}
