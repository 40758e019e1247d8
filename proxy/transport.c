/* SPDX-License-Identifier: Apache-2.0
 * transport: non-blocking socket I/O over two evbuffers with optimistic writes. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "error.h"
#include "transport.h"
#include "worker.h"

#define REM_READ_CHUNK 16384
#define REM_WRITE_VECS 16

static void set_reading(struct rem_transport *t, bool on)
{
    if (t->closed || t->connecting || t->reading == on)
        return;
    if (on)
        event_add(t->ev_read, NULL);
    else
        event_del(t->ev_read);
    t->reading = on;
}

static void set_writing(struct rem_transport *t, bool on)
{
    if (t->closed || t->writing == on)
        return;
    if (on)
        event_add(t->ev_write, NULL);
    else
        event_del(t->ev_write);
    t->writing = on;
}

/* Reading is wanted unless the owner turned it off, the input is full, or EOF was seen. */
static bool want_read(const struct rem_transport *t)
{
    return !t->read_off && (t->read_high == 0 || evbuffer_get_length(t->in) < t->read_high);
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

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct rem_transport *t = arg;
    /* One contiguous reservation read with recv(2): cheaper in the kernel than readv(2)
     * (no iovec import, no file-position lock), and one chain is all a read fills. */
    struct evbuffer_iovec vec[1];
    int nvec = evbuffer_reserve_space(t->in, REM_READ_CHUNK, vec, 1);
    if (nvec < 0) {
        t->error = ENOMEM;
        t->cbs->on_event(t, REM_TE_ERROR, t->arg);
        return;
    }
    ssize_t n = recv(fd, vec[0].iov_base, vec[0].iov_len, 0);
    if (n < 0) {
        evbuffer_commit_space(t->in, vec, 0);
        if (errno == EAGAIN || errno == EINTR)
            return;
        t->error = errno;
        t->cbs->on_event(t, REM_TE_ERROR, t->arg);
        return;
    }
    if (n == 0) {
        evbuffer_commit_space(t->in, vec, 0);
        set_reading(t, false);
        t->read_off = true;
        t->cbs->on_event(t, REM_TE_EOF, t->arg);
        return;
    }
    size_t left = (size_t)n;
    for (int i = 0; i < nvec; i++) {
        size_t take = left < vec[i].iov_len ? left : vec[i].iov_len;
        vec[i].iov_len = take;
        left -= take;
    }
    evbuffer_commit_space(t->in, vec, nvec);
    if (!want_read(t))
        set_reading(t, false);
    t->cbs->on_read(t, t->arg);
}

/* One send(2) of what t->out holds: send() when it is one chain (the common case: a head
 * and a small body share a chain), sendmsg() over up to REM_WRITE_VECS chains otherwise.
 * Both skip writev(2)'s file-position lock, and MSG_NOSIGNAL makes EPIPE an error return. */
static ssize_t send_out(struct rem_transport *t)
{
    struct evbuffer_iovec vec[REM_WRITE_VECS];
    int n = evbuffer_peek(t->out, -1, NULL, vec, REM_WRITE_VECS);
    if (n > REM_WRITE_VECS)
        n = REM_WRITE_VECS;
    ssize_t w;
    if (n == 1) {
        w = send(t->fd, vec[0].iov_base, vec[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct msghdr m = {.msg_iov = (struct iovec *)vec, .msg_iovlen = (size_t)n};
        w = sendmsg(t->fd, &m, MSG_NOSIGNAL);
    }
    if (w > 0)
        evbuffer_drain(t->out, (size_t)w);
    return w;
}

size_t rem_transport_flush(struct rem_transport *t)
{
    if (t->closed || t->connecting)
        return t->closed ? 0 : evbuffer_get_length(t->out);
    size_t before = evbuffer_get_length(t->out);
    while (evbuffer_get_length(t->out) > 0) {
        ssize_t n = send_out(t);
        if (n > 0) {
            t->last_write_ms = rem_now_ms();
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        t->error = n < 0 ? errno : EPIPE;
        set_writing(t, false);
        t->cbs->on_event(t, REM_TE_ERROR, t->arg);
        return 0;
    }
    size_t left = evbuffer_get_length(t->out);
    set_writing(t, left > 0);
    if (left == 0 && t->shut_wr)
        (void)shutdown(t->fd, SHUT_WR);
    if (left < before && left <= t->write_high / 2 && t->cbs->on_drained)
        t->cbs->on_drained(t, t->arg);
    return left;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct rem_transport *t = arg;
    if (t->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == EINPROGRESS)
            return;
        t->connecting = false;
        set_writing(t, false);
        if (err) {
            t->error = err;
            t->cbs->on_event(t, REM_TE_ERROR, t->arg);
            return;
        }
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        rem_transport_rearm(t);
        t->cbs->on_event(t, REM_TE_CONNECTED, t->arg);
        if (!t->closed && evbuffer_get_length(t->out))
            rem_transport_flush(t);
        return;
    }
    rem_transport_flush(t);
}

static int setup(struct rem_transport *t, struct rem_worker *w, int fd,
                 const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                 size_t write_high)
{
    memset(t, 0, sizeof(*t));
    t->fd = fd;
    t->worker = w;
    t->cbs = cbs;
    t->arg = arg;
    t->read_high = read_high;
    t->write_high = write_high;
    t->in = evbuffer_new();
    t->out = evbuffer_new();
    t->ev_read = event_new(w->base, fd, EV_READ | EV_PERSIST, on_readable, t);
    t->ev_write = event_new(w->base, fd, EV_WRITE | EV_PERSIST, on_writable, t);
    if (!t->in || !t->out || !t->ev_read || !t->ev_write) {
        t->closed = true;
        close(fd);
        t->fd = -1;
        return -REM_E_NOMEM;
    }
    return 0;
}

int rem_transport_init(struct rem_transport *t, struct rem_worker *w, int fd,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high)
{
    int rc = setup(t, w, fd, cbs, arg, read_high, write_high);
    if (rc == 0)
        rem_transport_rearm(t);
    return rc;
}

int rem_transport_connect(struct rem_transport *t, struct rem_worker *w, const struct sockaddr *sa,
                          socklen_t salen, const struct rem_transport_cbs *cbs, void *arg,
                          size_t read_high, size_t write_high)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        memset(t, 0, sizeof(*t));
        t->closed = true;
        t->fd = -1;
        t->error = errno;
        return -REM_E_SYS;
    }
    int rc = setup(t, w, fd, cbs, arg, read_high, write_high);
    if (rc < 0)
        return rc;
    t->connecting = true;
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        /* Reported from the loop like any other outcome (e.g. ECONNREFUSED on loopback):
         * the caller is never called back before this returns. */
        t->error = errno;
    }
    t->writing = true;
    event_add(t->ev_write, NULL);
    if (t->error)
        event_active(t->ev_write, EV_WRITE, 1);
    return 0;
}

void rem_transport_flush_later(struct rem_transport *t)
{
    if (t->dirty || t->closed)
        return;
    t->dirty = true;
    rem_worker_flush_later(t->worker, t);
}

void rem_transport_flush_all(struct rem_transport_list *list)
{
    struct rem_transport *t;
    while ((t = TAILQ_FIRST(list)) != NULL) {
        TAILQ_REMOVE(list, t, flush_link);
        t->dirty = false;
        if (!t->closed)
            rem_transport_flush(t);
    }
}

void rem_transport_shutdown_write(struct rem_transport *t)
{
    t->shut_wr = true;
    if (!t->closed && !t->connecting && evbuffer_get_length(t->out) == 0)
        (void)shutdown(t->fd, SHUT_WR);
}

void rem_transport_set_reset(struct rem_transport *t)
{
    struct linger lg = {1, 0};
    if (!t->closed)
        (void)setsockopt(t->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

void rem_transport_close(struct rem_transport *t)
{
    if (t->closed)
        return;
    if (t->dirty) {
        rem_worker_flush_cancel(t->worker, t);
        t->dirty = false;
    }
    if (t->ev_read)
        event_del(t->ev_read);
    if (t->ev_write)
        event_del(t->ev_write);
    t->reading = t->writing = false;
    t->closed = true;
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

void rem_transport_free(struct rem_transport *t)
{
    if (!t)
        return;
    rem_transport_close(t);
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
