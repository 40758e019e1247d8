/* SPDX-License-Identifier: Apache-2.0
 * conn: downstream connection lifecycle: accept, transport callbacks passed to the codec,
 * timers, the pause mask, close-after-write with a lingering close (so a client still sending
 * a body we will not read gets our response instead of a reset), and deferred free through the
 * reaper. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h"
#include "conn.h"
#include "error.h"
#include "gen.h"
#include "identity.h"
#include "io_tcp.h"
#include "io_tls.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "transport.h"
#include "worker.h"

#define REM_LINGER_MS 2000
#define CONN_OF(r) ((struct rem_conn *)((char *)(r)-offsetof(struct rem_conn, reap)))
#define CONN_OF_KICK(p) ((struct rem_conn *)((char *)(p)-offsetof(struct rem_conn, kick)))

/* c starts or ends a handshake: the worker's count of conns in HANDSHAKE (the cap
 * limits.max_tls_handshakes reads) and its gauge. */
static void count_handshake(struct rem_conn *c, bool in)
{
    if (c->in_handshake == in)
        return;
    c->in_handshake = in;
    if (in)
        TAILQ_INSERT_TAIL(&c->worker->handshakes, c, hs->link);
    else
        TAILQ_REMOVE(&c->worker->handshakes, c, hs->link);
    rem_worker_count_handshake(c->worker, in ? 1 : -1);
    REM_M_ADD(c->worker->metrics->tls_handshakes_in_progress, in ? 1 : -1);
}

/* The one writer of c->state. Every way out of HANDSHAKE (ready, failure, timeout, a close
 * from a drain, a stop or a reload) comes through here, so the handshake count stays exact. */
static void set_state(struct rem_conn *c, enum rem_conn_state st)
{
    if (c->state != st)
        rem_log_debug("conn %p %s: state %d -> %d", (void *)c, c->peer, c->state, st);
    c->state = st;
    count_handshake(c, st == REM_CONN_HANDSHAKE);
}

static void conn_free(struct rem_reap *r)
{
    struct rem_conn *c = CONN_OF(r);
    if (c->timer)
        event_free(c->timer);
    rem_loop_post_cancel(&c->worker->loop, &c->kick);
    if (c->down)
        c->down->free(c);
    rem_transport_free(&c->t);
    if (c->hs)
        rem_identity_free(c->hs->identity);
    free(c->hs);
    rem_config_unref(c->cfg);
    free(c);
}

static void arm(struct rem_conn *c, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    if (ms == 0)
        event_del(c->timer);
    else
        event_add(c->timer, &tv);
}

void rem_conn_arm_timer(struct rem_conn *c)
{
    const struct rem_cfg_limits *lim = &c->cfg->limits;
    switch (c->state) {
    case REM_CONN_HANDSHAKE:
        arm(c, lim->tls_handshake_timeout_ms);
        break;
    case REM_CONN_IDLE:
        arm(c, lim->client_idle_timeout_ms);
        break;
    case REM_CONN_HEAD:
        arm(c, lim->request_header_timeout_ms);
        break;
    case REM_CONN_CLOSING:
        /* Flushing the last bytes: the write-stall guard; then the linger. */
        arm(c, c->lingering ? REM_LINGER_MS : lim->client_idle_timeout_ms);
        break;
    case REM_CONN_ACTIVE:
        /* Write-stall guard: a client that stops reading is dropped (see on_timer). */
        arm(c, lim->client_idle_timeout_ms);
        break;
    default:
        event_del(c->timer);
        break;
    }
}

void rem_conn_abort(struct rem_conn *c, enum rem_err e)
{
    c->abort_err = e;
    rem_conn_close(c);
}

void rem_conn_drain(struct rem_conn *c)
{
    if (c->draining || c->state >= REM_CONN_CLOSING)
        return;
    c->draining = true;
    if (c->down)
        (void)c->down->drain(c);
    else
        rem_conn_close_if_silent(c);
}

void rem_conn_close_if_silent(struct rem_conn *c)
{
    /* A TLS handshake in progress is not silence: the codec it leads to gets the drain. */
    if (!c->down && c->state == REM_CONN_IDLE && !rem_transport_input_waiting(&c->t))
        rem_conn_close_after_write(c); /* silent since its accept: as idle as a conn gets */
}

void rem_conn_close(struct rem_conn *c)
{
    if (c->state == REM_CONN_CLOSED)
        return;
    set_state(c, REM_CONN_CLOSED);
    if (c->down)
        c->down->abort_all(c); /* aborts, logs and frees every stream */
    rem_transport_close(&c->t);
    event_del(c->timer);
    rem_loop_post_cancel(&c->worker->loop, &c->kick);
    TAILQ_REMOVE(&c->worker->conns, c, link);
    if (!c->lingering)
        rem_worker_count_conn(c->worker, -1);
    c->owner->closed(c->owner_arg);
    REM_M_ADD(c->worker->metrics->downstream_connections, -1);
    rem_loop_defer_free(&c->worker->loop, &c->reap, conn_free);
}

static void start_linger(struct rem_conn *c)
{
    if (c->reset_on_close) {
        rem_transport_set_reset(&c->t);
        rem_conn_close(c);
        return;
    }
    if (c->eof) {
        /* The client ended its side: nothing left to drain. A plain close (FIN after what the
         * kernel still holds for the client), never a reset, which would drop that tail. */
        rem_conn_close(c);
        return;
    }
    /* RFC 9112 9.6: half-close, then drain what the client still sends until it closes. Nothing
     * is in flight any more: a drain does not wait for it (the worker's count drops now). */
    c->lingering = true;
    rem_worker_count_conn(c->worker, -1);
    rem_transport_shutdown_write(&c->t);
    evbuffer_drain(rem_conn_input(c), evbuffer_get_length(rem_conn_input(c)));
    rem_transport_unlimit_read(&c->t);
    rem_transport_read(&c->t, true);
    rem_conn_arm_timer(c);
}

void rem_conn_shutdown_write(struct rem_conn *c)
{
    if (c->state < REM_CONN_CLOSING)
        rem_transport_shutdown_write(&c->t);
}

void rem_conn_close_after_write(struct rem_conn *c)
{
    if (c->state >= REM_CONN_CLOSING)
        return;
    set_state(c, REM_CONN_CLOSING);
    rem_loop_post_cancel(&c->worker->loop, &c->kick);
    event_del(c->timer);
    if (rem_conn_output_len(c) == 0)
        start_linger(c);
    else
        rem_conn_arm_timer(c); /* a client that stops reading cannot hold the conn forever */
    /* on_drained starts the linger once the output is empty */
}

void rem_conn_stream_done(struct rem_conn *c, bool close)
{
    if (c->state >= REM_CONN_CLOSING)
        return;
    if (close || c->eof) {
        rem_conn_close_after_write(c);
        return;
    }
    set_state(c, REM_CONN_IDLE);
    rem_conn_arm_timer(c);
    c->pause = REM_PAUSE_PIPELINE;
    rem_conn_resume(c, REM_PAUSE_PIPELINE);
}

void rem_conn_set_state(struct rem_conn *c, enum rem_conn_state st)
{
    REM_BUG_ON(st >= REM_CONN_CLOSING);
    if (c->state >= REM_CONN_CLOSING)
        return;
    set_state(c, st);
    rem_conn_arm_timer(c);
}

void rem_conn_pause(struct rem_conn *c, unsigned reasons)
{
    c->pause |= reasons;
}

static void on_kick(struct rem_post *p)
{
    struct rem_conn *c = CONN_OF_KICK(p);
    if (c->down)
        c->down->on_kick(c);
}

void rem_conn_resume(struct rem_conn *c, unsigned reasons)
{
    c->pause &= ~reasons;
    if (c->pause == 0 && c->state < REM_CONN_CLOSING)
        rem_loop_post(&c->worker->loop, &c->kick, on_kick);
}

void rem_conn_kick(struct rem_conn *c)
{
    rem_loop_post(&c->worker->loop, &c->kick, on_kick);
}

void rem_conn_reset_on_close(struct rem_conn *c)
{
    c->reset_on_close = true;
}

/* The TLS handshake of c ended with r (once per conn: it leaves HANDSHAKE right after). An ok
 * one's duration counts from the accept, with the buckets of the worker's current generation;
 * switching the histogram to them takes the lock the scrape reads it under, once per
 * generation. */
static void handshake_end(struct rem_conn *c, enum rem_tls_result r)
{
    struct rem_worker *w = c->worker;
    struct rem_metrics_shard *m = w->metrics;
    bool resumed = false;
    if (r == REM_TLS_OK) {
        c->hs->tls_version = rem_transport_session(&c->t, &resumed);
        c->hs->identity = rem_transport_peer_identity(&c->t);
        if (w->gen && m->tls_ml != w->gen->ml) {
            pthread_mutex_lock(&w->gen_lock);
            rem_metrics_shard_tls_layout(m, w->gen->ml);
            pthread_mutex_unlock(&w->gen_lock);
        }
    }
    rem_metrics_record_tls_handshake(m, r, rem_now_ns() - c->hs->accept_ns, resumed);
}

bool rem_conn_evict_handshake(struct rem_worker *w)
{
    struct rem_conn *c;
    TAILQ_FOREACH(c, &w->handshakes, hs->link)
    {
        if (!rem_transport_awaiting_hello(&c->t))
            continue;
        rem_log_debug("conn %s: reset while still waiting for its ClientHello, for a newer "
                      "conn (limits.max_tls_handshakes)",
                      c->peer);
        handshake_end(c, REM_TLS_REFUSED);
        rem_transport_set_reset(&c->t); /* an RST, like a conn refused at accept */
        rem_conn_close(c);              /* leaves HANDSHAKE, and the list: stop walking it */
        return true;
    }
    return false;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_conn *c = arg;
    switch (c->state) {
    case REM_CONN_HANDSHAKE:
        rem_log_debug("conn %s: tls handshake timed out", c->peer);
        handshake_end(c, REM_TLS_TIMEOUT);
        rem_conn_close(c);
        break;
    case REM_CONN_HEAD:
    case REM_CONN_IDLE:
        if (c->down)
            c->down->on_timer(c);
        else
            rem_conn_close(c); /* nothing came before the idle timeout */
        break;
    case REM_CONN_CLOSING:
        if (c->lingering) {
            rem_conn_close(c); /* linger over */
            break;
        }
        /* the last bytes are still being written: the write-stall guard below */
        __attribute__((fallthrough));
    case REM_CONN_ACTIVE: {
        uint64_t limit = c->cfg->limits.client_idle_timeout_ms;
        uint64_t stalled = rem_now_ms() - rem_transport_last_progress_ms(&c->t);
        if (rem_conn_output_len(c) == 0) {
            rem_conn_arm_timer(c);
        } else if (stalled >= limit) {
            rem_log_debug("conn %s: write stalled for %llu ms", c->peer,
                          (unsigned long long)stalled);
            rem_conn_abort(c, REM_E_CLIENT_TIMEOUT); /* cD in the streams' log, not CD */
        } else {
            /* Output waits but moved stalled ms ago: the next look is when the limit is
             * reached since that progress, not a whole limit later (which let a client that
             * stopped reading hold the conn for up to twice the limit, and a timer firing a
             * millisecond early for a third). */
            arm(c, limit - stalled);
        }
        break;
    }
    default:
        rem_conn_close(c);
        break;
    }
}

/* Chooses the codec once (the owner's choose: the preface on cleartext, ALPN after a TLS
 * handshake) and lets it process what came. */
static void start_codec(struct rem_conn *c)
{
    bool need_more = false;
    const struct rem_down_ops *ops = c->owner->choose(c, &need_more);
    if (!ops) {
        if (!need_more)
            rem_conn_close(c);
        return;
    }
    void *state = ops->init(c);
    if (!state) {
        rem_conn_close(c);
        return;
    }
    c->codec = state;
    c->down = ops;
    c->down->process(c);
    if (c->draining && c->state < REM_CONN_CLOSING)
        (void)c->down->drain(c); /* a conn accepted while draining: its first request */
}

static void on_read(struct rem_transport *t, void *arg)
{
    struct rem_conn *c = arg;
    if (c->state >= REM_CONN_CLOSING) {
        evbuffer_drain(rem_conn_input(c), evbuffer_get_length(rem_conn_input(c))); /* lingering */
        return;
    }
    if (!c->down)
        start_codec(c);
    else
        c->down->process(c);
}

static void on_drained(struct rem_transport *t, void *arg)
{
    struct rem_conn *c = arg;
    if (c->state == REM_CONN_CLOSING) {
        if (!c->lingering && rem_conn_output_len(c) == 0)
            start_linger(c);
        return;
    }
    if (c->down)
        c->down->on_drained(c);
}

static void on_event(struct rem_transport *t, int what, void *arg)
{
    struct rem_conn *c = arg;
    if (what == REM_TE_READY && c->state == REM_CONN_HANDSHAKE) {
        /* The codec is known now (ALPN) and an h2 one speaks first (SETTINGS). */
        handshake_end(c, REM_TLS_OK);
        set_state(c, REM_CONN_IDLE);
        rem_conn_arm_timer(c);
        start_codec(c);
        return;
    }
    if (what & REM_TE_EOF) {
        c->eof = true;
        /* Lingering, the client's FIN is what we waited for: no codec has a say any more. */
        if (!c->lingering && c->down && c->down->on_eof(c))
            return;
    }
    if (c->state == REM_CONN_HANDSHAKE)
        handshake_end(c, REM_TLS_FAILED); /* a bad handshake, or the client went away */
    rem_conn_close(c);
}

static const struct rem_transport_cbs conn_cbs = {
    .on_read = on_read,
    .on_drained = on_drained,
    .on_event = on_event,
};

int rem_conn_open(struct rem_worker *w, const struct rem_conn_owner *owner, void *owner_arg,
                  const struct rem_cfg_listener *lcfg, const char *peer, rem_conn_setup_fn setup,
                  void *setup_arg, struct rem_conn **out)
{
    if (out)
        *out = NULL;
    uint64_t accept_ns = rem_now_ns();
    struct rem_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -REM_E_NOMEM;
    c->owner = owner;
    c->owner_arg = owner_arg;
    c->worker = w;
    c->lcfg = lcfg;
    c->cfg = rem_config_ref(w->cfg);
    c->abort_err = REM_E_CLIENT_ABORT;
    c->draining = w->draining;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    rem_transport_clear(&c->t); /* until setup */
    const struct rem_cfg_limits *lim = &c->cfg->limits;
    int rc = setup(&c->t, &w->loop, &conn_cbs, c, lim->buffer_bytes, lim->buffer_bytes, setup_arg);
    c->timer = evtimer_new(w->loop.base, on_timer, c);
    if (rc == 0 && rem_transport_handshaking(&c->t)) {
        c->hs = calloc(1, sizeof(*c->hs));
        if (c->hs)
            c->hs->accept_ns = accept_ns;
    }
    if (rc < 0 || !c->timer || (rem_transport_handshaking(&c->t) && !c->hs)) {
        conn_free(&c->reap); /* the transport releases its handle */
        owner->closed(owner_arg);
        rem_log_error("conn: out of memory accepting a connection");
        return -REM_E_SYS;
    }
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    rem_worker_count_conn(w, 1);
    REM_M_ADD(w->metrics->downstream_connections, 1);
    REM_M_ADD(w->metrics->downstream_connections_total, 1);
    set_state(c, rem_transport_handshaking(&c->t) ? REM_CONN_HANDSHAKE : REM_CONN_IDLE);
    rem_conn_arm_timer(c);
    if (out)
        *out = c;
    return 0;
}

static int tcp_setup(struct rem_transport *t, struct rem_loop *loop,
                     const struct rem_transport_cbs *cbs, void *cb_arg, size_t read_high,
                     size_t write_high, void *arg)
{
    return rem_io_tcp_accept(t, loop, *(int *)arg, cbs, cb_arg, read_high, write_high);
}

/* What tls_setup is given: the accepted fd and the listener's context. */
struct tls_accept {
    int fd;
    SSL_CTX *ctx;
};

static int tls_setup(struct rem_transport *t, struct rem_loop *loop,
                     const struct rem_transport_cbs *cbs, void *cb_arg, size_t read_high,
                     size_t write_high, void *arg)
{
    const struct tls_accept *a = arg;
    return rem_io_tls_accept(t, loop, a->fd, a->ctx, cbs, cb_arg, read_high, write_high);
}

static int unix_setup(struct rem_transport *t, struct rem_loop *loop,
                      const struct rem_transport_cbs *cbs, void *cb_arg, size_t read_high,
                      size_t write_high, void *arg)
{
    return rem_io_unix_accept(t, loop, *(int *)arg, cbs, cb_arg, read_high, write_high);
}

void rem_conn_accept(struct rem_worker *w, const struct rem_conn_owner *owner, void *owner_arg,
                     const struct rem_cfg_listener *lcfg, int fd, const struct sockaddr *sa,
                     socklen_t salen, SSL_CTX *tls)
{
    /* A client on a Unix socket has no address: peer stays empty (no X-Forwarded-For entry,
     * empty `client` in the access log). */
    char peer[48] = "";
    if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, peer, sizeof(peer));
    else if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, peer, sizeof(peer));
    struct tls_accept ta = {.fd = fd, .ctx = tls};
    struct rem_conn *c = NULL;
    int rc;
    if (tls)
        rc = rem_conn_open(w, owner, owner_arg, lcfg, peer, tls_setup, &ta, &c);
    else
        rc = rem_conn_open(w, owner, owner_arg, lcfg, peer,
                           sa->sa_family == AF_UNIX ? unix_setup : tcp_setup, &fd, NULL);
    if (c)
        c->tls = tls != NULL;
    if (rc == -REM_E_NOMEM) {
        close(fd);
        owner->closed(owner_arg);
        rem_log_error("conn: out of memory accepting a connection");
    }
}

size_t rem_conn_output_len(const struct rem_conn *c)
{
    return rem_transport_output_len(&c->t);
}

void rem_conn_flush_later(struct rem_conn *c)
{
    rem_transport_flush_later(&c->t);
}

void rem_conn_rearm(struct rem_conn *c)
{
    if (c->state < REM_CONN_CLOSED)
        rem_transport_rearm(&c->t);
}

size_t rem_conn_high_watermark(const struct rem_conn *c)
{
    return c->cfg->limits.buffer_bytes;
}
