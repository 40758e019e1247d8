/* SPDX-License-Identifier: Apache-2.0
 * upool: upconn lifecycle (connect, lend, idle, close) and the per-endpoint keep-alive pool.
 * Timeouts are checked lazily: the timer is armed once for the full period and, when it
 * fires early relative to the last activity, re-armed for the remainder, so busy upconns do
 * not churn the timer heap on every read. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cluster.h"
#include "config.h"
#include "error.h"
#include "h1_up.h"
#include "h2_up.h"
#include "io_tcp.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "transport.h"
#include "upool.h"
#include "worker.h"

static void h2_wake(struct rem_cluster *cl);

#define UPCONN_OF(r) ((struct rem_upconn *)((char *)(r)-offsetof(struct rem_upconn, reap)))

static void upconn_free(struct rem_reap *r)
{
    struct rem_upconn *uc = UPCONN_OF(r);
    if (uc->timer)
        event_free(uc->timer);
    if (uc->kick)
        event_free(uc->kick);
    rem_h2_up_free(uc);
    rem_transport_free(&uc->t);
    rem_endpoint_unref(uc->ep);
    free(uc);
}

static void set_state(struct rem_upconn *uc, enum rem_upconn_state st)
{
    struct rem_endpoint *ep = uc->ep;
    if (uc->state == st)
        return;
    rem_log_debug("upconn %p %s: state %d -> %d", (void *)uc, ep->name, uc->state, st);
    struct rem_upstream_metrics *m = ep->cluster->metrics;
    /* Leave the old list. */
    if (uc->state == REM_UPCONN_IDLE) {
        TAILQ_REMOVE(&ep->idle, uc, link);
        ep->n_idle--;
        REM_M_ADD(m->idle, -1);
    } else if (uc->state != REM_UPCONN_CLOSED) {
        TAILQ_REMOVE(&ep->busy, uc, link);
        ep->n_active--;
        REM_M_ADD(m->active, -1);
    }
    /* Join the new one. */
    if (st == REM_UPCONN_IDLE) {
        TAILQ_INSERT_HEAD(&ep->idle, uc, link);
        ep->n_idle++;
        REM_M_ADD(m->idle, 1);
    } else if (st != REM_UPCONN_CLOSED) {
        TAILQ_INSERT_TAIL(&ep->busy, uc, link);
        ep->n_active++;
        REM_M_ADD(m->active, 1);
    }
    uc->state = st;
}

void rem_upconn_close(struct rem_upconn *uc)
{
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    struct rem_cluster *cl = uc->ep->cluster;
    set_state(uc, REM_UPCONN_CLOSED);
    cl->n_conns--;
    if (uc->stream) {
        uc->stream->upconn = NULL;
        uc->stream = NULL;
    }
    rem_h2_up_detach_all(uc);
    rem_transport_close(&uc->t); /* the socket closes now; the memory goes with the reaper */
    event_del(uc->timer);
    event_del(uc->kick);
    rem_loop_defer_free(&uc->worker->loop, &uc->reap, upconn_free);
    if (uc->h2 && !TAILQ_EMPTY(&cl->h2_wait))
        h2_wake(cl); /* a connection may be opened in its place */
}

/* Called when the upconn fails while a stream is attached: detach, close, tell the stream. */
static void fail_stream(struct rem_upconn *uc, enum rem_err e)
{
    if (uc->h2) {
        rem_h2_up_fail_all(uc, e);
        return;
    }
    struct rem_stream *s = uc->stream;
    rem_upconn_close(uc);
    if (s)
        rem_stream_on_upconn_error(s, e);
}

/* 0 means no timeout (conf/README.md). */
void rem_upconn_arm_timer(struct rem_upconn *uc, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    if (ms == 0)
        event_del(uc->timer);
    else
        event_add(uc->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_upconn *uc = arg;
    const struct rem_cfg_upstream *cfg = uc->ep->cluster->cfg;
    switch (uc->state) {
    case REM_UPCONN_CONNECTING:
        REM_M_ADD(uc->ep->cluster->metrics->connect_failures[REM_CONNFAIL_TIMEOUT], 1);
        fail_stream(uc, REM_E_CONNECT_TIMEOUT);
        break;
    case REM_UPCONN_ACTIVE: {
        if (uc->h2) {
            rem_h2_up_on_timer(uc);
            break;
        }
        uint64_t idle = rem_now_ms() - uc->last_activity_ms;
        if (uc->paused) {
            /* The downstream is the slow side; its write timeout governs. */
            uc->last_activity_ms = rem_now_ms();
            idle = 0;
        }
        if (uc->timeout_ms && idle < uc->timeout_ms) {
            rem_upconn_arm_timer(uc, uc->timeout_ms - idle);
            break;
        }
        if (uc->timeout_ms)
            fail_stream(uc, REM_E_UPSTREAM_TIMEOUT);
        break;
    }
    case REM_UPCONN_IDLE:
        if (uc->h2) {
            rem_h2_up_idle_tick(uc);
            break;
        }
        rem_log_debug("upconn %s: idle for %llu ms, closing", uc->ep->name,
                      (unsigned long long)cfg->idle_timeout_ms);
        rem_upconn_close(uc);
        break;
    default:
        break;
    }
}

void rem_upconn_arm_response_timer(struct rem_upconn *uc)
{
    uc->last_activity_ms = rem_now_ms();
    if (uc->timeout_ms && !evtimer_pending(uc->timer, NULL))
        rem_upconn_arm_timer(uc, uc->timeout_ms);
}

static void on_read(struct rem_transport *t, void *arg)
{
    struct rem_upconn *uc = arg;
    if (uc->h2) {
        rem_h2_up_process(uc); /* idle HTTP/2 upconns get SETTINGS, PING, GOAWAY */
        return;
    }
    if (uc->state == REM_UPCONN_ACTIVE) {
        uc->last_activity_ms = rem_now_ms();
        rem_h1_up_process(uc);
        return;
    }
    /* RFC 9112 9.3.1: nothing may arrive on an idle connection; it cannot be reused. */
    rem_log_debug("upconn %s: unexpected bytes while idle, closing", uc->ep->name);
    rem_upconn_close(uc);
}

static void on_drained(struct rem_transport *t, void *arg)
{
    struct rem_upconn *uc = arg;
    if (uc->h2)
        rem_h2_up_on_drained(uc);
    else if (uc->state == REM_UPCONN_ACTIVE && uc->stream)
        rem_stream_on_upconn_writable(uc->stream);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct rem_upconn *uc = arg;
    if (uc->h2)
        rem_h2_up_on_drained(uc); /* a deferred send (h2_up.c schedule_send) */
    else if (uc->state == REM_UPCONN_ACTIVE && !uc->paused)
        rem_h1_up_process(uc);
}

static enum rem_err connect_error(struct rem_upconn *uc)
{
    int err = rem_transport_error(&uc->t);
    rem_log_debug("upconn %s: connect failed: %s", uc->ep->name, strerror(err));
    REM_M_ADD(uc->ep->cluster->metrics->connect_failures[err == ECONNREFUSED ? REM_CONNFAIL_REFUSED
                                                                             : REM_CONNFAIL_ERROR],
              1);
    return err == ECONNREFUSED ? REM_E_CONNECT_REFUSED : REM_E_CONNECT_FAILED;
}

static void on_event(struct rem_transport *t, int what, void *arg)
{
    struct rem_upconn *uc = arg;
    if (what & REM_TE_READY) {
        event_del(uc->timer);
        rem_hist_record(&uc->ep->cluster->metrics->connect_duration,
                        &uc->worker->mlayout->upstream_hist, rem_now_ns() - uc->connect_start_ns);
        if (uc->h2) {
            bool any = rem_h2_up_n_streams(uc) > 0;
            set_state(uc, any ? REM_UPCONN_ACTIVE : REM_UPCONN_IDLE);
            if (!any) {
                uc->last_activity_ms = rem_now_ms();
                rem_upconn_arm_timer(uc, REM_H2_PING_TIMEOUT_MS);
            }
            rem_h2_up_connected(uc);
            return;
        }
        set_state(uc, REM_UPCONN_ACTIVE);
        if (uc->stream)
            rem_stream_on_upconn_ready(uc->stream, uc);
        else
            rem_upool_release(uc, true);
        return;
    }
    switch (uc->state) {
    case REM_UPCONN_CONNECTING:
        fail_stream(uc, connect_error(uc));
        break;
    case REM_UPCONN_ACTIVE:
    case REM_UPCONN_IDLE:
        if (uc->h2) {
            rem_h2_up_process(uc); /* a GOAWAY may precede the close */
            if (uc->state != REM_UPCONN_CLOSED)
                rem_h2_up_fail_all(uc, REM_E_UPSTREAM_RESET);
            break;
        }
        if (uc->state == REM_UPCONN_IDLE) {
            rem_upconn_close(uc);
            break;
        }
        if (what & REM_TE_EOF) {
            /* Parse what is left first: a close-delimited body ends here. */
            rem_h1_up_process(uc);
            if (uc->state == REM_UPCONN_ACTIVE)
                rem_h1_up_on_eof(uc);
        } else {
            fail_stream(uc, REM_E_UPSTREAM_RESET);
        }
        break;
    default:
        rem_upconn_close(uc);
        break;
    }
}

static const struct rem_transport_cbs upconn_cbs = {
    .on_read = on_read,
    .on_drained = on_drained,
    .on_event = on_event,
};

static struct rem_upconn *upconn_new(struct rem_endpoint *ep)
{
    struct rem_worker *w = ep->cluster->worker;
    struct rem_upconn *uc = calloc(1, sizeof(*uc));
    if (!uc)
        return NULL;
    uc->worker = w;
    uc->ep = ep;
    rem_endpoint_ref(ep);
    uc->state = REM_UPCONN_CLOSED;
    uc->timer = evtimer_new(w->loop.base, on_timer, uc);
    uc->kick = event_new(w->loop.base, -1, 0, on_kick, uc);
    rem_transport_clear(&uc->t); /* until rem_io_tcp_connect */
    if (!uc->timer || !uc->kick) {
        upconn_free(&uc->reap);
        return NULL;
    }
    rem_h1_up_init(uc);
    if (ep->cluster->cfg->protocol == REM_PROTO_H2C && rem_h2_up_init(uc) < 0) {
        upconn_free(&uc->reap);
        return NULL;
    }
    return uc;
}

int rem_upool_connect(struct rem_endpoint *ep, struct rem_stream *s, struct rem_upconn **out)
{
    struct rem_cluster *cl = ep->cluster;
    *out = NULL;
    if (cl->n_conns >= cl->max_connections) {
        /* Make room by closing an idle upconn of another endpoint, if any. */
        struct rem_upconn *victim = NULL;
        for (size_t i = 0; i < cl->n_endpoints && !victim; i++)
            victim = TAILQ_LAST(&cl->endpoints[i]->idle, rem_upconn_list);
        if (!victim)
            return -REM_E_UPSTREAM_OVERFLOW;
        rem_upconn_close(victim);
    }
    struct rem_upconn *uc = upconn_new(ep);
    if (!uc)
        return -REM_E_NOMEM;
    cl->n_conns++;
    set_state(uc, REM_UPCONN_CONNECTING);
    if (uc->h2)
        rem_h2_up_attach(uc, s);
    else
        uc->stream = s;
    uc->connect_start_ns = rem_now_ns();
    uint64_t wm = uc->worker->cfg->limits.buffer_bytes;
    if (rem_io_tcp_connect(&uc->t, &uc->worker->loop, (struct sockaddr *)&ep->addr.ss, ep->addr.len,
                           &upconn_cbs, uc, wm, wm) < 0) {
        uc->stream = NULL;
        rem_h2_up_detach_all(uc);
        REM_M_ADD(cl->metrics->connect_failures[REM_CONNFAIL_ERROR], 1);
        rem_upconn_close(uc);
        return -REM_E_CONNECT_FAILED;
    }
    rem_upconn_arm_timer(uc, cl->cfg->connect_timeout_ms);
    *out = uc;
    return 0;
}

struct rem_upconn *rem_upool_take(struct rem_endpoint *ep, struct rem_stream *s)
{
    struct rem_upconn *uc = TAILQ_FIRST(&ep->idle);
    if (!uc)
        return NULL;
    event_del(uc->timer);
    set_state(uc, REM_UPCONN_ACTIVE);
    uc->stream = s;
    rem_h1_up_reset(uc);
    return uc;
}

void rem_upool_release(struct rem_upconn *uc, bool reusable)
{
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    if (uc->stream) {
        uc->stream->upconn = NULL;
        uc->stream = NULL;
    }
    if (!reusable || uc->state != REM_UPCONN_ACTIVE ||
        evbuffer_get_length(rem_transport_input(&uc->t)) > 0 || uc->ep->removed) {
        rem_upconn_close(uc);
        return;
    }
    uc->paused = false;
    uc->timeout_ms = 0;
    event_del(uc->kick);
    set_state(uc, REM_UPCONN_IDLE);
    /* Keep reading so that a close by the app is seen while idle, not on the next request. */
    rem_transport_read(&uc->t, true);
    rem_upconn_arm_timer(uc, uc->ep->cluster->cfg->idle_timeout_ms);
}

void rem_upconn_pause(struct rem_upconn *uc)
{
    uc->paused = true;
}

void rem_upconn_resume(struct rem_upconn *uc)
{
    if (!uc->paused)
        return;
    uc->paused = false;
    event_active(uc->kick, EV_TIMEOUT, 1);
}

struct evbuffer *rem_upconn_output(struct rem_upconn *uc)
{
    return rem_transport_output(&uc->t);
}

/* HTTP/2: a stream slot on an upconn of ep (busy ones first: they are warm), or a new upconn.
 * Returns as rem_upool_acquire, or -REM_E_UPSTREAM_OVERFLOW when every upconn is full and no
 * other may be opened. */
static int h2_acquire(struct rem_endpoint *ep, struct rem_stream *s, bool use_pool,
                      struct rem_upconn **out)
{
    struct rem_upconn *uc;
    struct rem_upconn_list *lists[] = {&ep->busy, &ep->idle};
    for (size_t i = 0; use_pool && i < 2; i++)
        TAILQ_FOREACH(uc, lists[i], link)
        {
            if (!rem_h2_up_has_room(uc))
                continue;
            rem_h2_up_attach(uc, s);
            *out = uc;
            if (uc->state == REM_UPCONN_CONNECTING) {
                s->on_reused = false;
                return 1;
            }
            event_del(uc->timer);
            s->on_reused = true;
            return 0;
        }
    s->on_reused = false;
    int rc = rem_upool_connect(ep, s, out);
    return rc < 0 ? rc : 1;
}

int rem_upool_acquire(struct rem_endpoint *ep, struct rem_stream *s, bool use_pool,
                      struct rem_upconn **out)
{
    struct rem_upconn *uc;
    struct rem_cluster *cl = ep->cluster;
    *out = NULL;
    if (cl->cfg->protocol == REM_PROTO_H2C) {
        int rc = TAILQ_EMPTY(&cl->h2_wait) ? h2_acquire(ep, s, use_pool, out)
                                           : -REM_E_UPSTREAM_OVERFLOW; /* FIFO */
        if (rc != -REM_E_UPSTREAM_OVERFLOW)
            return rc;
        /* Every upconn full at max_connections: wait for a slot (admission bounds how many
         * wait; the stream's own timers bound how long). */
        s->u_waiting = true;
        TAILQ_INSERT_TAIL(&cl->h2_wait, s, u_link);
        return 1;
    }
    if (use_pool && (uc = rem_upool_take(ep, s)) != NULL) {
        s->on_reused = true;
        *out = uc;
        return 0;
    }
    s->on_reused = false;
    int rc = rem_upool_connect(ep, s, out);
    return rc < 0 ? rc : 1;
}

void rem_upool_h2_unwait(struct rem_stream *s)
{
    if (!s->u_waiting)
        return;
    TAILQ_REMOVE(&s->cluster->h2_wait, s, u_link);
    s->u_waiting = false;
}

/* A stream slot or a connection freed up: the waiting streams go, in order, while they can. */
static void h2_wake(struct rem_cluster *cl)
{
    struct rem_stream *s;
    if (cl->h2_waking)
        return;
    cl->h2_waking = true;
    while ((s = TAILQ_FIRST(&cl->h2_wait)) != NULL) {
        struct rem_upconn *uc = NULL;
        rem_upool_h2_unwait(s); /* u_link is free again for the upconn's list */
        int rc = h2_acquire(s->endpoint, s, true, &uc);
        if (rc == -REM_E_UPSTREAM_OVERFLOW) {
            s->u_waiting = true;
            TAILQ_INSERT_HEAD(&cl->h2_wait, s, u_link);
            break;
        }
        if (rc < 0)
            rem_stream_fail(s, rem_err_from_rc(rc));
        else if (rc == 0)
            rem_stream_on_upconn_ready(s, uc);
        else
            s->upconn = uc;
    }
    cl->h2_waking = false;
}

void rem_upool_h2_streams_changed(struct rem_upconn *uc, unsigned n_streams, bool draining)
{
    if (uc->state == REM_UPCONN_CLOSED || uc->state == REM_UPCONN_CONNECTING)
        return;
    struct rem_cluster *cl = uc->ep->cluster;
    if (!TAILQ_EMPTY(&cl->h2_wait) && rem_h2_up_has_room(uc)) {
        h2_wake(cl);
        n_streams = rem_h2_up_n_streams(uc);
        if (uc->state == REM_UPCONN_CLOSED)
            return;
    }
    if (n_streams > 0) {
        set_state(uc, REM_UPCONN_ACTIVE);
        return;
    }
    if (draining) {
        rem_upconn_close(uc);
        return;
    }
    if (uc->state != REM_UPCONN_IDLE) {
        uint64_t idle = uc->ep->cluster->cfg->idle_timeout_ms;
        set_state(uc, REM_UPCONN_IDLE);
        uc->last_activity_ms = rem_now_ms();
        rem_upconn_arm_timer(uc,
                             idle && idle < REM_H2_PING_TIMEOUT_MS ? idle : REM_H2_PING_TIMEOUT_MS);
    }
}
