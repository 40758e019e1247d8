/* SPDX-License-Identifier: Apache-2.0
 * transport: buffered, optimistic I/O over an io implementation (rem_io_ops). */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <linux/sockios.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "error.h"
#include "loop.h"
#include "transport.h"

#define REM_READ_CHUNK 16384
#define REM_WRITE_VECS 16

static void on_writable(evutil_socket_t fd, short what, void *arg);

#define TRANSPORT_OF(f)                                                                            \
    ((struct rem_transport *)((char *)(f)-offsetof(struct rem_transport, flush)))

/* The buffers exist only while they hold bytes (an idle conn holds none): NULL is empty. */
static size_t in_len(const struct rem_transport *t)
{
    return t->in ? evbuffer_get_length(t->in) : 0;
}

size_t rem_transport_output_len(const struct rem_transport *t)
{
    return t->out ? evbuffer_get_length(t->out) : 0;
}

struct evbuffer *rem_transport_take_output(struct rem_transport *t)
{
    if (!t->out)
        t->out = rem_loop_buffer_get(t->loop);
    return t->out;
}

/* Give a buffer back to the loop's spares once it is empty, where no owner's frame can hold
 * it: the input after the read callback (nothing else reads it), the output at the end of a
 * flush (a synchronous flush, rem_upconn_flush_now, runs inside a codec's frame that may still
 * hold the input, never the output: it appends and then flushes). */
static void release_input(struct rem_transport *t)
{
    if (t->in && evbuffer_get_length(t->in) == 0) {
        rem_loop_buffer_put(t->loop, t->in);
        t->in = NULL;
    }
}

static void release_output(struct rem_transport *t)
{
    if (t->out && evbuffer_get_length(t->out) == 0) {
        rem_loop_buffer_put(t->loop, t->out);
        t->out = NULL;
    }
}

/* ev_write is created the first time a write comes up short (or a handshake waits for
 * writability): most conns never need it. Aborts on OOM, like any control object. */
static struct event *write_ev(struct rem_transport *t)
{
    if (!t->ev_write) {
        short wr = t->fd >= 0 ? EV_WRITE | EV_PERSIST : 0;
        t->ev_write = event_new(t->loop->base, t->fd, wr, on_writable, t);
        if (!t->ev_write)
            rem_oom();
    }
    return t->ev_write;
}

/* Reading is wanted unless the owner turned it off or the input is full. */
static bool want_read(const struct rem_transport *t)
{
    return !t->read_off && (t->read_high == 0 || in_len(t) < t->read_high);
}

static void set_reading(struct rem_transport *t, bool on)
{
    if (t->closed || t->connecting || t->reading == on)
        return;
    t->reading = on;
    if (t->fd < 0) {
        /* No fd to watch: the io wakes us (rem_transport_io_wake). */
        if (on && t->io->pending && t->io->pending(t))
            event_active(t->ev_read, EV_READ, 1);
        return;
    }
    if (on) {
        event_add(t->ev_read, NULL);
        /* Bytes the io holds already (TLS records) are not reported by the fd. */
        if (t->io->pending && t->io->pending(t))
            event_active(t->ev_read, EV_READ, 1);
    } else {
        event_del(t->ev_read);
    }
}

static void set_writing(struct rem_transport *t, bool on)
{
    if (t->closed || t->writing == on)
        return;
    t->writing = on;
    if (on)
        write_ev(t); /* io_wake activates it when there is no fd */
    if (t->fd < 0)
        return;
    if (on)
        event_add(t->ev_write, NULL);
    else
        event_del(t->ev_write);
}

void rem_transport_rearm(struct rem_transport *t)
{
    set_reading(t, want_read(t));
}

void rem_transport_read(struct rem_transport *t, bool on)
{
    t->read_off = !on;
    rem_transport_rearm(t);
}

void rem_transport_unlimit_read(struct rem_transport *t)
{
    t->read_high = 0;
    rem_transport_rearm(t);
}

bool rem_transport_input_waiting(const struct rem_transport *t)
{
    if (t->closed)
        return false;
    if (in_len(t) > 0 || (t->io->pending && t->io->pending(t)))
        return true;
    char b;
    return t->fd >= 0 && recv(t->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void rem_transport_set_error(struct rem_transport *t, int err)
{
    t->error = err;
}

void rem_transport_io_wake(struct rem_transport *t, short what)
{
    if (t->closed)
        return;
    if ((what & EV_READ) && (t->reading || t->connecting))
        event_active(t->ev_read, EV_READ, 1);
    if ((what & EV_WRITE) && t->writing)
        event_active(t->ev_write, EV_WRITE, 1);
}

static void fail(struct rem_transport *t, int err)
{
    t->error = err;
    t->cbs->on_event(t, REM_TE_ERROR, t->arg);
}

/* While connecting: registers the one event the handshake waits for (want: REM_IO_WANT_*). */
static void handshake_wait(struct rem_transport *t, int want)
{
    bool rd = want == REM_IO_WANT_READ;
    if (t->reading != rd) {
        t->reading = rd;
        if (t->fd >= 0)
            (void)(rd ? event_add(t->ev_read, NULL) : event_del(t->ev_read));
    }
    if (t->writing == rd) {
        t->writing = !rd;
        if (!rd)
            write_ev(t);
        if (t->fd >= 0)
            (void)(rd ? event_del(t->ev_write) : event_add(t->ev_write, NULL));
    }
}

/* Runs the io's handshake; on completion reading starts and the owner hears REM_TE_READY. */
static void handshake(struct rem_transport *t)
{
    int rc = t->io->handshake ? t->io->handshake(t) : 0;
    if (rc == REM_IO_WANT_READ || rc == REM_IO_WANT_WRITE) {
        handshake_wait(t, rc); /* again, on that readiness */
        return;
    }
    t->connecting = false;
    set_writing(t, false);
    if (rc < 0) {
        fail(t, -rc);
        return;
    }
    rem_transport_rearm(t);
    /* A handshake that waited for input left ev_read registered (rearm kept it): bytes the io
     * decrypted already are not reported by the fd. */
    if (t->reading && t->io->pending && t->io->pending(t))
        event_active(t->ev_read, EV_READ, 1);
    t->cbs->on_event(t, REM_TE_READY, t->arg);
    if (!t->closed && (rem_transport_output_len(t) || t->shut_wr))
        rem_transport_flush(t);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct rem_transport *t = arg;
    if (t->connecting) {
        handshake(t);
        return;
    }
    if (!t->in)
        t->in = rem_loop_buffer_get(t->loop);
    /* One contiguous reservation read: one chain is all a read fills. */
    struct evbuffer_iovec vec[1];
    int nvec = evbuffer_reserve_space(t->in, REM_READ_CHUNK, vec, 1);
    if (nvec < 0) {
        fail(t, ENOMEM);
        return;
    }
    ssize_t n = t->io->recv(t, vec[0].iov_base, vec[0].iov_len);
    if (n < 0) {
        evbuffer_commit_space(t->in, vec, 0);
        if (errno == EAGAIN || errno == EINTR) {
            release_input(t);
            return;
        }
        fail(t, errno);
        return;
    }
    if (n == 0) {
        evbuffer_commit_space(t->in, vec, 0);
        set_reading(t, false);
        t->read_off = true;
        t->cbs->on_event(t, REM_TE_EOF, t->arg);
        return;
    }
    vec[0].iov_len = (size_t)n;
    evbuffer_commit_space(t->in, vec, nvec);
    if (!want_read(t))
        set_reading(t, false);
    else if (t->io->pending && t->io->pending(t))
        event_active(t->ev_read, EV_READ, 1); /* held by the io: the fd does not say so */
    t->cbs->on_read(t, t->arg);
    release_input(t); /* the owner consumed it all: an idle conn keeps no buffer */
}

/* One io->send of what t->out holds, over up to REM_WRITE_VECS chains. */
static ssize_t send_out(struct rem_transport *t)
{
    struct evbuffer_iovec vec[REM_WRITE_VECS];
    int n = evbuffer_peek(t->out, -1, NULL, vec, REM_WRITE_VECS);
    if (n > REM_WRITE_VECS)
        n = REM_WRITE_VECS;
    ssize_t w = t->io->send(t, (const struct iovec *)vec, n);
    if (w > 0)
        evbuffer_drain(t->out, (size_t)w);
    return w;
}

/* The fd's send queue now (SIOCOUTQ: bytes the peer has not acknowledged yet), or -1. */
static int unsent(const struct rem_transport *t)
{
    int n;
    return t->fd >= 0 && ioctl(t->fd, SIOCOUTQ, &n) == 0 ? n : -1;
}

size_t rem_transport_flush(struct rem_transport *t)
{
    if (t->closed || t->connecting)
        return t->closed ? 0 : rem_transport_output_len(t);
    size_t before = rem_transport_output_len(t);
    while (rem_transport_output_len(t) > 0) {
        ssize_t n = send_out(t);
        if (n > 0) {
            t->last_write_ms = rem_now_ms();
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            t->unsent_seen = unsent(t); /* where a stall would start: the baseline of progress */
            break;
        }
        set_writing(t, false);
        fail(t, n < 0 ? errno : EPIPE);
        return 0;
    }
    size_t left = rem_transport_output_len(t);
    set_writing(t, left > 0);
    if (left == 0 && t->shut_wr)
        t->io->shutdown(t);
    if (left < before && left <= t->write_high / 2 && t->cbs->on_drained)
        t->cbs->on_drained(t, t->arg);
    release_output(t);
    return left;
}

uint64_t rem_transport_last_progress_ms(struct rem_transport *t)
{
    int n = t->closed ? -1 : unsent(t);
    if (n >= 0) {
        /* A write since the last look may have grown the queue: last_write_ms covers that. */
        if (t->unsent_seen >= 0 && n < t->unsent_seen)
            t->last_took_ms = rem_now_ms();
        t->unsent_seen = n;
    }
    return t->last_took_ms > t->last_write_ms ? t->last_took_ms : t->last_write_ms;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct rem_transport *t = arg;
    if (t->connecting)
        handshake(t);
    else
        rem_transport_flush(t);
}

void rem_transport_clear(struct rem_transport *t)
{
    memset(t, 0, sizeof(*t));
    t->fd = -1;
    t->closed = true;
}

int rem_transport_setup(struct rem_transport *t, struct rem_loop *loop, const struct rem_io_ops *io,
                        int fd, void *ctx, const struct rem_transport_cbs *cbs, void *arg,
                        size_t read_high, size_t write_high, int handshake)
{
    memset(t, 0, sizeof(*t));
    t->fd = fd;
    t->io = io;
    t->io_ctx = ctx;
    t->loop = loop;
    t->cbs = cbs;
    t->arg = arg;
    t->read_high = read_high;
    t->write_high = write_high;
    t->last_write_ms = rem_now_ms();
    t->unsent_seen = -1;
    short rd = fd >= 0 ? EV_READ | EV_PERSIST : 0;
    t->ev_read = event_new(loop->base, fd, rd, on_readable, t);
    if (!t->ev_read) {
        /* The handle and the io's state are released here, once (the contract); what the
         * transport allocated goes with rem_transport_free. */
        io->close(t);
        if (io->free)
            io->free(t);
        t->io_ctx = NULL;
        t->io = NULL;
        t->closed = true;
        t->fd = -1;
        return -REM_E_NOMEM;
    }
    if (handshake) {
        t->connecting = true;
        handshake_wait(t, handshake);
    } else {
        rem_transport_rearm(t);
    }
    return 0;
}

static void on_flush(struct rem_flush *f)
{
    struct rem_transport *t = TRANSPORT_OF(f);
    if (!t->closed)
        rem_transport_flush(t);
}

void rem_transport_flush_later(struct rem_transport *t)
{
    if (!t->closed)
        rem_loop_flush_later(t->loop, &t->flush, on_flush);
}

void rem_transport_shutdown_write(struct rem_transport *t)
{
    t->shut_wr = true;
    if (!t->closed && !t->connecting && rem_transport_output_len(t) == 0)
        t->io->shutdown(t);
}

void rem_transport_set_reset(struct rem_transport *t)
{
    if (!t->closed && t->io->reset)
        t->io->reset(t);
}

const char *rem_transport_alpn(const struct rem_transport *t, size_t *len)
{
    *len = 0;
    return t->io && t->io->alpn && !t->closed ? t->io->alpn(t, len) : NULL;
}

const char *rem_transport_session(const struct rem_transport *t, bool *resumed)
{
    *resumed = false;
    return t->io && t->io->session && !t->closed ? t->io->session(t, resumed) : NULL;
}

bool rem_transport_awaiting_hello(const struct rem_transport *t)
{
    return t->io && t->io->awaiting_hello && !t->closed && t->io->awaiting_hello(t);
}

struct rem_identity *rem_transport_peer_identity(const struct rem_transport *t)
{
    return t->io && t->io->peer_identity && !t->closed ? t->io->peer_identity(t) : NULL;
}

void rem_transport_close(struct rem_transport *t)
{
    if (t->closed)
        return;
    rem_loop_flush_cancel(t->loop, &t->flush);
    if (t->ev_read)
        event_del(t->ev_read);
    if (t->ev_write)
        event_del(t->ev_write);
    t->reading = t->writing = false;
    t->closed = true;
    t->io->close(t);
    t->fd = -1;
}

void rem_transport_free(struct rem_transport *t)
{
    if (!t)
        return;
    rem_transport_close(t);
    if (t->io && t->io->free)
        t->io->free(t);
    t->io_ctx = NULL;
    if (t->ev_read)
        event_free(t->ev_read);
    if (t->ev_write)
        event_free(t->ev_write);
    if (t->in)
        evbuffer_free(t->in);
    if (t->out)
        evbuffer_free(t->out);
    t->ev_read = t->ev_write = NULL;
    t->in = t->out = NULL;
}
