/* SPDX-License-Identifier: Apache-2.0
 * io_mem: in-memory ends for tests and fuzzing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "error.h"
#include "io_mem.h"
#include "transport.h"

struct mem_end {
    struct evbuffer *inbox;     /* owned: bytes for this end to receive */
    struct evbuffer *sent;      /* owned: what this end sent, when the test is the peer */
    struct rem_transport *t;    /* borrowed: the owner */
    struct rem_transport *peer; /* borrowed: the other end, or NULL (the test) */
    size_t window;
    bool inbox_eof; /* the peer shut its sending side */
    bool shut, closed, reset;
};

static struct mem_end *end_of(const struct rem_transport *t)
{
    return t->io_ctx;
}

/* Bytes sent by e and not yet taken by its peer. */
static size_t in_flight(const struct mem_end *e)
{
    if (e->peer)
        return end_of(e->peer) ? evbuffer_get_length(end_of(e->peer)->inbox) : 0;
    return evbuffer_get_length(e->sent);
}

static ssize_t mem_recv(struct rem_transport *t, void *buf, size_t n)
{
    struct mem_end *e = end_of(t);
    size_t have = evbuffer_get_length(e->inbox);
    if (have == 0) {
        if (e->inbox_eof)
            return 0;
        errno = EAGAIN;
        return -1;
    }
    int got = evbuffer_remove(e->inbox, buf, n);
    if (got < 0) {
        errno = ENOMEM;
        return -1;
    }
    if (e->peer)
        rem_transport_io_wake(e->peer, EV_WRITE); /* its window opened */
    return got;
}

static ssize_t mem_send(struct rem_transport *t, const struct iovec *iov, int iovcnt)
{
    struct mem_end *e = end_of(t);
    struct mem_end *pe = e->peer ? end_of(e->peer) : NULL;
    if (e->shut || (e->peer && (!pe || pe->closed))) {
        errno = EPIPE;
        return -1;
    }
    size_t room = SIZE_MAX;
    if (e->window) {
        size_t f = in_flight(e);
        room = f >= e->window ? 0 : e->window - f;
    }
    if (room == 0) {
        errno = EAGAIN;
        return -1;
    }
    struct evbuffer *dst = pe ? pe->inbox : e->sent;
    size_t done = 0;
    for (int i = 0; i < iovcnt && room > 0; i++) {
        size_t n = iov[i].iov_len < room ? iov[i].iov_len : room;
        if (evbuffer_add(dst, iov[i].iov_base, n) < 0) {
            errno = ENOMEM;
            return done ? (ssize_t)done : -1;
        }
        done += n;
        room -= n;
    }
    if (pe && done)
        rem_transport_io_wake(e->peer, EV_READ);
    return (ssize_t)done;
}

static bool mem_pending(const struct rem_transport *t)
{
    const struct mem_end *e = end_of(t);
    return evbuffer_get_length(e->inbox) > 0 || e->inbox_eof;
}

static void mem_shutdown(struct rem_transport *t)
{
    struct mem_end *e = end_of(t);
    if (e->shut)
        return;
    e->shut = true;
    if (e->peer && end_of(e->peer)) {
        end_of(e->peer)->inbox_eof = true;
        rem_transport_io_wake(e->peer, EV_READ);
    }
}

static void mem_reset(struct rem_transport *t)
{
    end_of(t)->reset = true;
}

static void mem_close(struct rem_transport *t)
{
    struct mem_end *e = end_of(t);
    e->closed = true;
    if (e->peer && end_of(e->peer)) {
        struct mem_end *pe = end_of(e->peer);
        pe->inbox_eof = true;
        pe->peer = NULL; /* writes toward us now land in its own `sent` */
        rem_transport_io_wake(e->peer, EV_READ);
        e->peer = NULL;
    }
}

static void mem_free(struct rem_transport *t)
{
    struct mem_end *e = end_of(t);
    if (!e)
        return;
    evbuffer_free(e->inbox);
    evbuffer_free(e->sent);
    free(e);
}

static const struct rem_io_ops mem_ops = {
    .name = "mem",
    .recv = mem_recv,
    .send = mem_send,
    .shutdown = mem_shutdown,
    .pending = mem_pending,
    .reset = mem_reset,
    .close = mem_close,
    .free = mem_free,
};

static int mem_setup(struct rem_transport *t, struct rem_loop *loop,
                     const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                     size_t write_high, size_t window, bool connecting)
{
    struct mem_end *e = calloc(1, sizeof(*e));
    if (!e)
        return -REM_E_NOMEM;
    e->inbox = evbuffer_new();
    e->sent = evbuffer_new();
    e->window = window;
    e->t = t;
    if (!e->inbox || !e->sent) {
        if (e->inbox)
            evbuffer_free(e->inbox);
        if (e->sent)
            evbuffer_free(e->sent);
        free(e);
        return -REM_E_NOMEM;
    }
    int rc = rem_transport_setup(t, loop, &mem_ops, -1, e, cbs, arg, read_high, write_high,
                                 connecting ? REM_IO_WANT_WRITE : 0);
    /* on failure the transport released e through mem_free already */
    return rc;
}

int rem_io_mem_init(struct rem_transport *t, struct rem_loop *loop,
                    const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                    size_t write_high, size_t window)
{
    return mem_setup(t, loop, cbs, arg, read_high, write_high, window, false);
}

int rem_io_mem_connect(struct rem_transport *t, struct rem_loop *loop,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high, size_t window)
{
    int rc = mem_setup(t, loop, cbs, arg, read_high, write_high, window, true);
    if (rc < 0)
        return rc;
    /* No handshake: the connect completes on the first writability, as a socket's would. */
    rem_transport_io_wake(t, EV_WRITE);
    return 0;
}

void rem_io_mem_pair(struct rem_transport *a, struct rem_transport *b)
{
    end_of(a)->peer = b;
    end_of(b)->peer = a;
}

int rem_io_mem_feed(struct rem_transport *t, const void *p, size_t n)
{
    struct mem_end *e = end_of(t);
    if (evbuffer_add(e->inbox, p, n) < 0)
        return -REM_E_NOMEM;
    rem_transport_io_wake(t, EV_READ);
    return 0;
}

void rem_io_mem_feed_eof(struct rem_transport *t)
{
    end_of(t)->inbox_eof = true;
    rem_transport_io_wake(t, EV_READ);
}

size_t rem_io_mem_take(struct rem_transport *t, struct evbuffer *dst)
{
    struct mem_end *e = end_of(t);
    size_t n = evbuffer_get_length(e->sent);
    evbuffer_add_buffer(dst, e->sent);
    if (n)
        rem_transport_io_wake(t, EV_WRITE);
    return n;
}

bool rem_io_mem_shut(const struct rem_transport *t)
{
    return end_of(t)->shut;
}

bool rem_io_mem_closed(const struct rem_transport *t)
{
    return end_of(t)->closed;
}

bool rem_io_mem_was_reset(const struct rem_transport *t)
{
    return end_of(t)->reset;
}
