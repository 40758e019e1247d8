/* SPDX-License-Identifier: Apache-2.0
 * conn: downstream connection lifecycle: accept, transport callbacks, timers, the pause mask,
 * close-after-write with a lingering close (so a client still sending a body we will not
 * read gets our response instead of a reset), and deferred free through the reaper. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "conn.h"
#include "error.h"
#include "h1_down.h"
#include "h2_down.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "transport.h"
#include "worker.h"

#define REM_LINGER_MS 2000
#define CONN_OF(r) ((struct rem_conn *)((char *)(r)-offsetof(struct rem_conn, reap)))

static void set_state(struct rem_conn *c, enum rem_conn_state st)
{
    if (c->state != st)
        rem_log_debug("conn %p %s: state %d -> %d", (void *)c, c->peer, c->state, st);
    c->state = st;
}

static void conn_free(struct rem_reap *r)
{
    struct rem_conn *c = CONN_OF(r);
    if (c->timer)
        event_free(c->timer);
    if (c->kick)
        event_free(c->kick);
    rem_h2_down_free(c);
    rem_transport_free(&c->t);
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
    case REM_CONN_IDLE:
        arm(c, lim->client_idle_timeout_ms);
        break;
    case REM_CONN_HEAD:
        arm(c, lim->request_header_timeout_ms);
        break;
    case REM_CONN_CLOSING:
        arm(c, REM_LINGER_MS);
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

void rem_conn_close(struct rem_conn *c)
{
    if (c->state == REM_CONN_CLOSED)
        return;
    set_state(c, REM_CONN_CLOSED);
    if (c->h2)
        rem_h2_down_abort_all(c); /* aborts, logs and frees every stream */
    else if (c->stream)
        rem_h1_down_eof(c); /* aborts, logs and frees the stream */
    rem_transport_close(&c->t);
    event_del(c->timer);
    event_del(c->kick);
    TAILQ_REMOVE(&c->worker->conns, c, link);
    rem_listener_conn_closed(c->listener);
    REM_M_ADD(c->worker->metrics->downstream_connections, -1);
    rem_worker_defer_free(c->worker, &c->reap, conn_free);
}

static void start_linger(struct rem_conn *c)
{
    if (c->reset_on_close) {
        rem_transport_set_reset(&c->t);
        rem_conn_close(c);
        return;
    }
    /* RFC 9112 9.6: half-close, then drain what the client still sends until it closes. */
    c->lingering = true;
    rem_transport_shutdown_write(&c->t);
    evbuffer_drain(c->t.in, evbuffer_get_length(c->t.in));
    c->t.read_high = 0;
    rem_transport_read(&c->t, true);
    rem_conn_arm_timer(c);
}

void rem_conn_close_after_write(struct rem_conn *c)
{
    if (c->state >= REM_CONN_CLOSING)
        return;
    set_state(c, REM_CONN_CLOSING);
    event_del(c->kick);
    event_del(c->timer);
    if (evbuffer_get_length(c->t.out) == 0)
        start_linger(c);
    /* else on_drained starts it once the output is empty */
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

void rem_conn_resume(struct rem_conn *c, unsigned reasons)
{
    c->pause &= ~reasons;
    if (c->pause == 0 && c->state < REM_CONN_CLOSING)
        event_active(c->kick, EV_TIMEOUT, 1);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct rem_conn *c = arg;
    if (c->h2)
        rem_h2_down_on_drained(c); /* a deferred send (h2_down.c schedule_send) */
    else if (c->state < REM_CONN_CLOSING)
        rem_h1_down_process(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_conn *c = arg;
    switch (c->state) {
    case REM_CONN_HEAD:
        rem_h1_down_timeout(c);
        break;
    case REM_CONN_ACTIVE: {
        uint64_t limit = c->cfg->limits.client_idle_timeout_ms;
        uint64_t stalled = rem_now_ms() - c->t.last_write_ms;
        if (evbuffer_get_length(c->t.out) > 0 && stalled >= limit) {
            rem_log_debug("conn %s: write stalled for %llu ms", c->peer,
                          (unsigned long long)stalled);
            rem_conn_close(c);
        } else {
            rem_conn_arm_timer(c);
        }
        break;
    }
    case REM_CONN_IDLE:
        if (c->h2) {
            rem_h2_down_idle(c); /* GOAWAY first: the client learns nothing was lost */
            break;
        }
        rem_conn_close(c);
        break;
    default:
        rem_conn_close(c); /* idle keep-alive over, or linger over */
        break;
    }
}

static void on_read(struct rem_transport *t, void *arg)
{
    struct rem_conn *c = arg;
    if (c->state < REM_CONN_CLOSING && !c->proto_known) {
        /* h2c prior knowledge (RFC 9113 3.3) shares the listener with HTTP/1.1. */
        bool need_more;
        if (rem_h2_down_detect(t->in, &need_more)) {
            if (rem_h2_down_init(c) < 0) {
                rem_conn_close(c);
                return;
            }
        } else if (need_more) {
            return;
        }
        c->proto_known = true;
    }
    if (c->state < REM_CONN_CLOSING) {
        if (c->h2)
            rem_h2_down_process(c);
        else
            rem_h1_down_process(c);
        return;
    }
    evbuffer_drain(t->in, evbuffer_get_length(t->in)); /* lingering */
}

static void on_drained(struct rem_transport *t, void *arg)
{
    struct rem_conn *c = arg;
    if (c->state == REM_CONN_CLOSING) {
        if (!c->lingering && evbuffer_get_length(t->out) == 0)
            start_linger(c);
        return;
    }
    if (c->h2)
        rem_h2_down_on_drained(c);
    else if (c->stream)
        rem_stream_on_down_writable(c->stream);
}

static void on_event(struct rem_transport *t, int what, void *arg)
{
    struct rem_conn *c = arg;
    if (c->h2 && (what & REM_TE_EOF) && rem_h2_down_n_streams(c) == 0) {
        rem_conn_close_after_write(c); /* the client is done; GOAWAY or not, so are we */
        return;
    }
    /* A complete request whose client half-closes is still answered; one that is only waiting
     * in the admission queue is dropped at once (a client that leaves leaves no entry). */
    if ((what & REM_TE_EOF) && c->state == REM_CONN_ACTIVE && c->stream && c->stream->req_done &&
        c->stream->state != REM_STREAM_QUEUED) {
        /* Half-close after a complete request: answer it, then close. */
        c->eof = true;
        c->stream->down_close = true;
        return;
    }
    rem_conn_close(c);
}

static const struct rem_transport_cbs conn_cbs = {
    .on_read = on_read,
    .on_drained = on_drained,
    .on_event = on_event,
};

void rem_conn_accept(struct rem_worker *w, struct rem_listener *l,
                     const struct rem_cfg_listener *lcfg, int fd, const struct sockaddr *sa,
                     socklen_t salen)
{
    struct rem_conn *c = calloc(1, sizeof(*c));
    int one = 1;
    if (!c) {
        close(fd);
        rem_listener_conn_closed(l);
        return;
    }
    c->listener = l;
    c->t.fd = -1;
    c->t.closed = true; /* until rem_transport_init */
    c->worker = w;
    c->lcfg = lcfg;
    c->cfg = rem_config_ref(w->cfg);
    if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->peer,
                  sizeof(c->peer));
    else if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof(c->peer));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const struct rem_cfg_limits *lim = &c->cfg->limits;
    c->timer = evtimer_new(w->base, on_timer, c);
    c->kick = event_new(w->base, -1, 0, on_kick, c);
    if (!c->timer || !c->kick ||
        rem_transport_init(&c->t, w, fd, &conn_cbs, c, lim->buffer_bytes, lim->buffer_bytes) < 0) {
        if (!c->t.in && !c->t.closed)
            close(fd);
        conn_free(&c->reap);
        rem_listener_conn_closed(l);
        rem_log_error("conn: out of memory accepting a connection");
        return;
    }
    c->t.last_write_ms = rem_now_ms();
    rem_h1_down_init(c);
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    REM_M_ADD(w->metrics->downstream_connections, 1);
    REM_M_ADD(w->metrics->downstream_connections_total, 1);
    set_state(c, REM_CONN_IDLE);
    rem_conn_arm_timer(c);
}

struct evbuffer *rem_conn_output(struct rem_conn *c)
{
    return c->t.out;
}

size_t rem_conn_output_len(struct rem_conn *c)
{
    return evbuffer_get_length(c->t.out);
}

size_t rem_conn_high_watermark(const struct rem_conn *c)
{
    return c->cfg->limits.buffer_bytes;
}
