/* SPDX-License-Identifier: Apache-2.0
 * upconn: upstream connection lifecycle: connect, the state and its lists, timers, transport
 * callbacks passed to the codec, close and deferred free. Timeouts are checked lazily: the
 * timer is armed once for the full period and, when it fires early relative to the last
 * activity, re-armed for the remainder (the codecs do), so busy upconns do not churn the timer
 * heap on every read. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cluster.h"
#include "config.h"
#include "error.h"
#include "io_tcp.h"
#include "io_tls.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "transport.h"
#include "upconn.h"
#include "worker.h"

#define UPCONN_OF(r) ((struct rem_upconn *)((char *)(r)-offsetof(struct rem_upconn, reap)))
#define UPCONN_OF_KICK(p) ((struct rem_upconn *)((char *)(p)-offsetof(struct rem_upconn, kick)))

static void upconn_free(struct rem_reap *r)
{
    struct rem_upconn *uc = UPCONN_OF(r);
    if (uc->timer)
        event_free(uc->timer);
    rem_loop_post_cancel(&uc->worker->loop, &uc->kick);
    if (uc->codec)
        uc->up->free(uc);
    rem_transport_free(&uc->t);
    rem_endpoint_unref(uc->ep);
    free(uc);
}

void rem_upconn_set_state(struct rem_upconn *uc, enum rem_upconn_state st)
{
    struct rem_endpoint *ep = uc->ep;
    if (uc->state == st)
        return;
    rem_log_debug("upconn %p %s: state %d -> %d", (void *)uc, ep->name, uc->state, st);
    struct rem_upstream_metrics *m = ep->cluster->metrics;
    /* Leave the old list. */
    if (uc->state == REM_UPCONN_IDLE) {
        TAILQ_REMOVE(&ep->idle, uc, link);
        REM_M_ADD(m->idle, -1);
    } else if (uc->state != REM_UPCONN_CLOSED) {
        TAILQ_REMOVE(&ep->busy, uc, link);
        REM_M_ADD(m->active, -1);
    }
    /* Join the new one. */
    if (st == REM_UPCONN_IDLE) {
        TAILQ_INSERT_HEAD(&ep->idle, uc, link);
        REM_M_ADD(m->idle, 1);
    } else if (st != REM_UPCONN_CLOSED) {
        TAILQ_INSERT_TAIL(&ep->busy, uc, link);
        REM_M_ADD(m->active, 1);
    }
    uc->state = st;
}

void rem_upconn_close(struct rem_upconn *uc)
{
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    rem_upconn_set_state(uc, REM_UPCONN_CLOSED);
    uc->ep->cluster->n_conns--;
    uc->up->detach_all(uc);
    rem_transport_close(&uc->t); /* the socket closes now; the memory goes with the reaper */
    event_del(uc->timer);
    rem_upconn_kick_cancel(uc);
    rem_loop_defer_free(&uc->worker->loop, &uc->reap, upconn_free);
    uc->closed(uc); /* a connection may be opened in its place */
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

void rem_upconn_arm_response_timer(struct rem_upconn *uc)
{
    uc->last_activity_ms = rem_now_ms();
    if (uc->timeout_ms && !evtimer_pending(uc->timer, NULL))
        rem_upconn_arm_timer(uc, uc->timeout_ms);
}

void rem_upconn_start_response_timer(struct rem_upconn *uc, uint64_t ms)
{
    /* A shorter timeout (a tunnel's idle timeout after the request's) must not wait for the
     * pending, longer one to fire first. */
    bool shorter = ms && ms < uc->timeout_ms;
    uc->timeout_ms = ms;
    if (shorter) {
        uc->last_activity_ms = rem_now_ms();
        rem_upconn_arm_timer(uc, ms);
        return;
    }
    rem_upconn_arm_response_timer(uc);
}

void rem_upconn_touch(struct rem_upconn *uc)
{
    uc->last_activity_ms = rem_now_ms();
}

static void on_kick(struct rem_post *p)
{
    struct rem_upconn *uc = UPCONN_OF_KICK(p);
    uc->up->on_kick(uc);
}

void rem_upconn_kick(struct rem_upconn *uc)
{
    rem_loop_post(&uc->worker->loop, &uc->kick, on_kick);
}

void rem_upconn_kick_cancel(struct rem_upconn *uc)
{
    rem_loop_post_cancel(&uc->worker->loop, &uc->kick);
}

void rem_upconn_flush_later(struct rem_upconn *uc)
{
    rem_transport_flush_later(&uc->t);
}

void rem_upconn_shutdown_write(struct rem_upconn *uc)
{
    if (uc->state != REM_UPCONN_CLOSED)
        rem_transport_shutdown_write(&uc->t);
}

void rem_upconn_flush_now(struct rem_upconn *uc)
{
    (void)rem_transport_flush(&uc->t);
}

void rem_upconn_rearm(struct rem_upconn *uc)
{
    if (uc->state != REM_UPCONN_CLOSED)
        rem_transport_rearm(&uc->t);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_upconn *uc = arg;
    switch (uc->state) {
    case REM_UPCONN_CONNECTING:
        /* connect_timeout covers the TLS handshake too: a timeout either way. */
        if (rem_io_tls_handshaking(&uc->t))
            REM_M_ADD(uc->ep->cluster->metrics->tls_handshakes[REM_TLS_TIMEOUT], 1);
        REM_M_ADD(uc->ep->cluster->metrics->connect_failures[REM_CONNFAIL_TIMEOUT], 1);
        uc->up->fail_all(uc, REM_E_CONNECT_TIMEOUT);
        break;
    case REM_UPCONN_ACTIVE:
    case REM_UPCONN_IDLE:
        uc->up->on_timer(uc);
        break;
    default:
        break;
    }
}

static void on_read(struct rem_transport *t, void *arg)
{
    struct rem_upconn *uc = arg;
    uc->up->process(uc);
}

static void on_drained(struct rem_transport *t, void *arg)
{
    struct rem_upconn *uc = arg;
    uc->up->on_drained(uc);
}

/* The TLS handshake after the TCP connect failed (io_tls.c: EPROTO): logged once, here, where
 * the upstream and the endpoint are known, with OpenSSL's reason. */
static enum rem_err tls_error(struct rem_upconn *uc, const char *why)
{
    struct rem_upstream_metrics *m = uc->ep->cluster->metrics;
    rem_log_warn("upstream %s: endpoint %s: TLS handshake failed: %s", uc->ep->cluster->cfg->name,
                 uc->ep->name, why);
    REM_M_ADD(m->tls_handshakes[REM_TLS_FAILED], 1);
    REM_M_ADD(m->connect_failures[REM_CONNFAIL_TLS], 1);
    return REM_E_UPSTREAM_TLS;
}

static enum rem_err connect_error(struct rem_upconn *uc)
{
    int err = rem_transport_error(&uc->t);
    char why[256];
    if (err == EPROTO && rem_io_tls_failure(&uc->t, why, sizeof(why)))
        return tls_error(uc, why);
    rem_log_debug("upconn %s: connect failed: %s", uc->ep->name, strerror(err));
    /* A Unix socket whose file is missing (the app is not up yet) is refused like a closed
     * port; EAGAIN there is a full backlog: connect_failed. */
    bool refused = err == ECONNREFUSED || err == ENOENT;
    REM_M_ADD(uc->ep->cluster->metrics
                  ->connect_failures[refused ? REM_CONNFAIL_REFUSED : REM_CONNFAIL_ERROR],
              1);
    return refused ? REM_E_CONNECT_REFUSED : REM_E_CONNECT_FAILED;
}

static void on_event(struct rem_transport *t, int what, void *arg)
{
    struct rem_upconn *uc = arg;
    if (what & REM_TE_READY) {
        struct rem_upstream_metrics *m = uc->ep->cluster->metrics;
        uint64_t ns = rem_now_ns() - uc->connect_start_ns;
        bool resumed = false;
        event_del(uc->timer);
        rem_hist_record(&m->connect_duration, uc->ep->cluster->hl, ns);
        if (rem_transport_session(&uc->t, &resumed)) {
            REM_M_ADD(m->tls_handshakes[REM_TLS_OK], 1);
            if (resumed)
                REM_M_ADD(m->tls_resumed, 1);
            rem_hist_record(&m->tls_handshake_duration, uc->ep->cluster->hl, ns);
        }
        uc->up->ready(uc);
        return;
    }
    switch (uc->state) {
    case REM_UPCONN_CONNECTING:
        uc->up->fail_all(uc, connect_error(uc));
        break;
    case REM_UPCONN_ACTIVE:
    case REM_UPCONN_IDLE:
        uc->up->on_close(uc, what);
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

struct rem_upconn *rem_upconn_new(struct rem_endpoint *ep, void (*closed)(struct rem_upconn *))
{
    struct rem_worker *w = ep->cluster->worker;
    struct rem_upconn *uc = calloc(1, sizeof(*uc));
    if (!uc)
        return NULL;
    uc->worker = w;
    uc->ep = ep;
    rem_endpoint_ref(ep);
    uc->up = ep->cluster->up_ops;
    uc->closed = closed;
    uc->state = REM_UPCONN_CLOSED;
    uc->timer = evtimer_new(w->loop.base, on_timer, uc);
    rem_transport_clear(&uc->t); /* until rem_upconn_connect */
    if (!uc->timer || !(uc->codec = uc->up->init(uc))) {
        upconn_free(&uc->reap);
        return NULL;
    }
    return uc;
}

int rem_upconn_connect(struct rem_upconn *uc)
{
    struct rem_endpoint *ep = uc->ep;
    struct rem_cluster *cl = ep->cluster;
    cl->n_conns++;
    rem_upconn_set_state(uc, REM_UPCONN_CONNECTING);
    uc->connect_start_ns = rem_now_ns();
    uint64_t wm = uc->worker->cfg->limits.buffer_bytes;
    int rc =
        cl->connect
            ? cl->connect(&uc->t, &uc->worker->loop, ep, &upconn_cbs, uc, wm, wm, cl->connect_arg)
            : rem_io_tcp_connect(&uc->t, &uc->worker->loop, (struct sockaddr *)&ep->addr.ss,
                                 ep->addr.len, &upconn_cbs, uc, wm, wm);
    if (rc < 0) {
        REM_M_ADD(cl->metrics->connect_failures[REM_CONNFAIL_ERROR], 1);
        uc->up->detach_all(uc);
        rem_upconn_close(uc);
        return -REM_E_CONNECT_FAILED;
    }
    rem_upconn_arm_timer(uc, cl->cfg->connect_timeout_ms);
    return 0;
}
