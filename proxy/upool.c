/* SPDX-License-Identifier: Apache-2.0
 * upool: lending, opening, idling and waiting for upconns, per endpoint and cluster. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cluster.h"
#include "config.h"
#include "error.h"
#include "log.h"
#include "loop.h"
#include "upconn.h"
#include "upool.h"
#include "wait.h"

#define REQ(wp) REM_WAIT_OWNER(wp, struct rem_pool_req, w)

static void wake(struct rem_cluster *cl);

static void on_upconn_closed(struct rem_upconn *uc)
{
    struct rem_cluster *cl = uc->ep->cluster;
    if (!TAILQ_EMPTY(&cl->pool_wait))
        wake(cl); /* a connection may be opened in its place */
}

/* uc leaves for good with no stream on it: the app is told first when the codec has a way.
 * A GOAWAY the codec could only queue (inside its own callbacks) closes uc once it is out,
 * unless now is set: a caller walking a list must see uc go at once. */
static void retire(struct rem_upconn *uc, bool now)
{
    bool sent = true;
    if (uc->up->goaway && uc->ep->cluster->pool_draining)
        sent = uc->up->goaway(uc);
    if (sent || now)
        rem_upconn_close(uc);
}

static void close_upconns(struct rem_endpoint *ep, bool busy_too)
{
    struct rem_upconn *uc;
    while ((uc = TAILQ_FIRST(&ep->idle)) != NULL)
        retire(uc, true);
    while (busy_too && (uc = TAILQ_FIRST(&ep->busy)) != NULL)
        rem_upconn_close(uc);
}

void rem_upool_bind(struct rem_cluster *cl, const struct rem_up_ops *ops)
{
    rem_cluster_set_pool(cl, ops, close_upconns);
}

/* A new upconn of ep for r->s. Returns 0 (connecting) or an error. */
static int connect_new(struct rem_pool_req *r)
{
    struct rem_endpoint *ep = r->ep;
    struct rem_cluster *cl = ep->cluster;
    if (cl->n_conns >= cl->max_connections) {
        /* Make room by closing an idle upconn of another endpoint, if any. */
        struct rem_upconn *victim = NULL;
        for (size_t i = 0; i < cl->n_endpoints && !victim; i++)
            victim = TAILQ_LAST(&cl->endpoints[i]->idle, rem_upconn_list);
        if (!victim)
            return -REM_E_UPSTREAM_OVERFLOW;
        rem_upconn_close(victim);
    }
    struct rem_upconn *uc = rem_upconn_new(ep, on_upconn_closed);
    if (!uc)
        return -REM_E_NOMEM;
    uc->up->attach(uc, r->s);
    int rc = rem_upconn_connect(uc);
    if (rc < 0)
        return rc;
    r->uc = uc;
    r->reused = false;
    r->connecting = true;
    return 0;
}

/* A slot on an upconn of ep with room (busy ones first for a multiplexed codec: they are warm;
 * then idle ones, most recently used first), or a new upconn. Returns as rem_upool_acquire,
 * or -REM_E_UPSTREAM_OVERFLOW when every upconn is full and no other may be opened. */
static int try_acquire(struct rem_pool_req *r, bool use_pool)
{
    struct rem_endpoint *ep = r->ep;
    const struct rem_up_ops *ops = ep->cluster->up_ops;
    struct rem_upconn_list *lists[] = {&ep->busy, &ep->idle};
    struct rem_upconn *uc;
    r->uc = NULL;
    r->reused = r->connecting = false;
    for (size_t i = ops->multiplexed ? 0 : 1; use_pool && i < 2; i++)
        TAILQ_FOREACH(uc, lists[i], link)
        {
            if (!ops->has_room(uc))
                continue;
            ops->attach(uc, r->s);
            r->uc = uc;
            if (uc->state == REM_UPCONN_CONNECTING) {
                r->connecting = true;
                return 1;
            }
            event_del(uc->timer);
            r->reused = true;
            return 0;
        }
    int rc = connect_new(r);
    return rc < 0 ? rc : 1;
}

int rem_upool_acquire(struct rem_pool_req *r, bool use_pool)
{
    struct rem_cluster *cl = r->ep->cluster;
    int rc = TAILQ_EMPTY(&cl->pool_wait) ? try_acquire(r, use_pool)
                                         : -REM_E_UPSTREAM_OVERFLOW; /* FIFO */
    /* HTTP/1.1 never waits here: admission already holds requests to min(max_requests,
     * max_connections), so an overflow is a real 503 (upstream_overflow), as before. */
    if (rc != -REM_E_UPSTREAM_OVERFLOW || !cl->up_ops->multiplexed)
        return rc;
    /* Every multiplexed upconn full at max_connections: wait for a stream slot (admission
     * bounds how many wait; the stream's own timers bound how long). */
    rem_wait_enqueue(&cl->pool_wait, &r->w, rem_now_ms());
    return 2;
}

void rem_upool_cancel(struct rem_pool_req *r)
{
    if (r->w.queued)
        rem_wait_dequeue(&r->ep->cluster->pool_wait, &r->w);
}

/* A slot or a connection freed up: the waiting acquires go, in order, while they can. */
static void wake(struct rem_cluster *cl)
{
    struct rem_wait *w;
    if (cl->pool_waking)
        return;
    cl->pool_waking = true;
    while ((w = TAILQ_FIRST(&cl->pool_wait)) != NULL) {
        struct rem_pool_req *r = REQ(w);
        rem_upool_cancel(r);
        int rc = try_acquire(r, true);
        if (rc == -REM_E_UPSTREAM_OVERFLOW) {
            rem_wait_requeue_head(&cl->pool_wait, &r->w);
            break;
        }
        w->done(w, rc < 0 ? rc : 0);
    }
    cl->pool_waking = false;
}

void rem_upool_drain(struct rem_cluster *cl)
{
    cl->pool_draining = true;
    for (size_t i = 0; i < cl->n_endpoints; i++)
        close_upconns(cl->endpoints[i], false);
}

void rem_upool_release(struct rem_upconn *uc, bool reusable)
{
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    if (!reusable || uc->state != REM_UPCONN_ACTIVE ||
        evbuffer_get_length(rem_upconn_input(uc)) > 0 || uc->ep->removed ||
        uc->ep->cluster->pool_draining) {
        rem_upconn_close(uc);
        return;
    }
    uc->timeout_ms = 0;
    rem_upconn_kick_cancel(uc);
    rem_upconn_set_state(uc, REM_UPCONN_IDLE);
    /* Keep reading so that a close by the app is seen while idle, not on the next request. */
    rem_transport_read(&uc->t, true);
    rem_upconn_arm_timer(uc, uc->ep->cluster->cfg->idle_timeout_ms);
    if (!TAILQ_EMPTY(&uc->ep->cluster->pool_wait))
        wake(uc->ep->cluster);
}

void rem_upool_streams_changed(struct rem_upconn *uc, unsigned n_streams, bool draining,
                               uint64_t idle_ms)
{
    if (uc->state == REM_UPCONN_CLOSED || uc->state == REM_UPCONN_CONNECTING)
        return;
    struct rem_cluster *cl = uc->ep->cluster;
    if (!TAILQ_EMPTY(&cl->pool_wait) && uc->up->has_room(uc)) {
        wake(cl);
        n_streams = uc->up->n_streams(uc);
        if (uc->state == REM_UPCONN_CLOSED)
            return;
    }
    if (n_streams > 0) {
        rem_upconn_set_state(uc, REM_UPCONN_ACTIVE);
        return;
    }
    if (draining || cl->pool_draining) {
        retire(uc, false);
        return;
    }
    if (uc->state != REM_UPCONN_IDLE) {
        rem_upconn_set_state(uc, REM_UPCONN_IDLE);
        rem_upconn_touch(uc);
        rem_upconn_arm_timer(uc, idle_ms);
    }
}
