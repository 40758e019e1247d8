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
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "conn.h"
#include "error.h"
#include "h1_down.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
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
    if (c->stream)
        rem_h1_down_eof(c); /* aborts, logs and frees the stream */
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    event_del(c->timer);
    event_del(c->kick);
    TAILQ_REMOVE(&c->worker->conns, c, link);
    REM_M_ADD(c->worker->metrics->downstream_connections, -1);
    rem_worker_defer_free(c->worker, &c->reap, conn_free);
}

static void start_linger(struct rem_conn *c)
{
    if (c->reset_on_close) {
        struct linger lg = {1, 0};
        (void)setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        rem_conn_close(c);
        return;
    }
    /* RFC 9112 9.6: half-close, then drain what the client still sends until it closes. */
    c->lingering = true;
    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) < 0) {
        rem_conn_close(c);
        return;
    }
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    bufferevent_enable(c->bev, EV_READ);
    evbuffer_drain(bufferevent_get_input(c->bev),
                   evbuffer_get_length(bufferevent_get_input(c->bev)));
    rem_conn_arm_timer(c);
}

void rem_conn_close_after_write(struct rem_conn *c)
{
    if (c->state >= REM_CONN_CLOSING)
        return;
    set_state(c, REM_CONN_CLOSING);
    event_del(c->kick);
    event_del(c->timer);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        start_linger(c);
        return;
    }
    /* Be told when the output is empty, not merely below the watermark. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
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
    if (c->state < REM_CONN_CLOSING)
        rem_h1_down_process(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_conn *c = arg;
    switch (c->state) {
    case REM_CONN_HEAD:
        rem_h1_down_timeout(c);
        break;
    case REM_CONN_ACTIVE:
        break;
    default:
        rem_conn_close(c); /* idle keep-alive over, or linger over */
        break;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct rem_conn *c = arg;
    if (c->state < REM_CONN_CLOSING) {
        rem_h1_down_process(c);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct rem_conn *c = arg;
    if (c->state == REM_CONN_CLOSING) {
        if (!c->lingering && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            start_linger(c);
        return;
    }
    if (c->stream)
        rem_stream_on_down_writable(c->stream);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct rem_conn *c = arg;
    if (what & BEV_EVENT_EOF && !(what & BEV_EVENT_ERROR) && c->state == REM_CONN_ACTIVE &&
        c->stream && c->stream->req_done) {
        /* Half-close after a complete request: answer it, then close. */
        c->eof = true;
        c->stream->down_close = true;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT)
        rem_log_debug("conn %s: write timeout", c->peer);
    rem_conn_close(c);
}

void rem_conn_accept(struct rem_worker *w, const struct rem_cfg_listener *lcfg, int fd,
                     const struct sockaddr *sa, socklen_t salen)
{
    struct rem_conn *c = calloc(1, sizeof(*c));
    int one = 1;
    if (!c) {
        close(fd);
        return;
    }
    c->worker = w;
    c->lcfg = lcfg;
    c->cfg = rem_config_ref(w->cfg);
    if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->peer,
                  sizeof(c->peer));
    else if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof(c->peer));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(w->base, on_timer, c);
    c->kick = event_new(w->base, -1, 0, on_kick, c);
    if (!c->bev || !c->timer || !c->kick) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        conn_free(&c->reap);
        rem_log_error("conn: out of memory accepting a connection");
        return;
    }
    const struct rem_cfg_limits *lim = &c->cfg->limits;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, lim->buffer_bytes);
    bufferevent_setwatermark(c->bev, EV_WRITE, lim->buffer_bytes / 2, 0);
    /* A client that stops reading is dropped after client_idle_timeout. */
    struct timeval wt = {(time_t)(lim->client_idle_timeout_ms / 1000),
                         (suseconds_t)((lim->client_idle_timeout_ms % 1000) * 1000)};
    bufferevent_set_timeouts(c->bev, NULL, lim->client_idle_timeout_ms ? &wt : NULL);
    rem_h1_down_init(c);
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    REM_M_ADD(w->metrics->downstream_connections, 1);
    REM_M_ADD(w->metrics->downstream_connections_total, 1);
    set_state(c, REM_CONN_IDLE);
    rem_conn_arm_timer(c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

struct evbuffer *rem_conn_output(struct rem_conn *c)
{
    return bufferevent_get_output(c->bev);
}

size_t rem_conn_output_len(struct rem_conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

size_t rem_conn_high_watermark(const struct rem_conn *c)
{
    return c->cfg->limits.buffer_bytes;
}
